//! Which DM sessions run, and when: [`Scheduler`] takes every trigger — a D-Bus caller, a
//! local app's alert, a follow-up the engine asks for (an async EXEC's result alert), a
//! server's poll interval, a failover from a server that could not be reached, a verified
//! Package#0 notification, later network changes — checks the reason, chooses the
//! server, names the session, and runs at most one session per server at a time. It
//! announces what happens as [`Event`]s on a broadcast channel; the D-Bus face is one
//! subscriber among any, and sessions run whether or not anyone listens.
//!
//! Policies:
//! - **One session per server.** A D-Bus caller asking while that server's session runs is
//!   refused with [`StartError::Busy`] (it sees the running session and may wait for it);
//!   any other trigger is queued, and queued triggers coalesce: however many arrive while
//!   the session runs, one more session follows it (one per distinct follow-up URL, at most
//!   [`QUEUED_PER_SERVER`]; beyond that a trigger is dropped with a log line — the alerts it
//!   would carry are persisted and go with the next session).
//! - **Server choice** (DM-HLF-018): a start names its server, or leaves the choice to the
//!   client — the highest `Ext/Priority`. A session the client chose that finds no
//!   connection falls over to the next server by priority, with backoff, a bounded number
//!   of times ([`super::failover`] has the policy); one a caller, a notification, a poll or
//!   a follow-up named a server for never does.
//! - **Alerts from local apps** ([`Scheduler::send_alert`], [`super::send_alert`]): kept for
//!   the server they go to — the one named, the source's owner, or the client's choice, which
//!   the alert follows when it falls over — then a session with it starts, or queues behind
//!   the one running.
//! - **Notifications** ([`Scheduler::notified`]): a verified Package#0 starts a session with
//!   `ServerInitiatedMgmt` carrying its [`Notice`] (NOTIFICATION-ID, REQ-MOS), or queues
//!   one; a notice coalescing with a queued trigger turns it into the notified session (the
//!   later NOTIFICATION-ID answers both, REQ-MOS from either holds).
//! - **Follow-ups** arrive on the engine's bounded queue
//!   ([`super::engine::follow_up_queue`], policy there); `SHOW` URLs become [`Event::Show`].
//! - **Polling**: an account's `Ext/PollSeconds` (absent or 0: off) gets a client-initiated
//!   session every that many seconds, each due time jittered by ±10% so that devices do not
//!   call in step. The next due time is persisted before the session starts: a restart
//!   neither repeats a poll (the due time is in the future) nor loses one (a due time that
//!   passed while the daemon was down starts one session, not one per missed interval).
//! - **New accounts**: an account that never had a session gets one at once when it
//!   arrives (or at start), carrying `BootstrapComplete` — as every session does until one
//!   succeeds; a D-Bus caller asking for a session with that server meanwhile joins it
//!   (`[session] first_session_at_once`, on by default).
//! - **SessionInfo**: each running session has its instance (see [`super::info`]); stale
//!   ones, left by a crash, are removed by [`Scheduler::clear_stale`] at start.
//! - **Stopping** (see [`super::tasks`]): sessions and the loops run as tasks of the
//!   scheduler's [`Tasks`]; once it stops, no session starts ([`StartError::Stopping`]),
//!   queued triggers are dropped (their alerts are persisted), the follow-up and poll loops
//!   end, and running sessions get the drain time before they are cut off.
//! - **Events** go to a broadcast channel of [`EVENTS`] entries; a subscriber that falls
//!   further behind loses the oldest and is told so (`RecvError::Lagged`), and can read the
//!   current state from [`Scheduler::running`].

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, broadcast, mpsc};

use super::account::{self, Account};
use super::engine::{self, Engine, FollowUp, Outcome};
use super::error::SessionError;
use super::failover::{self, Failover};
use super::info::{self, SessionInfo};
use super::notice::Notice;
use super::send_alert::{self, AlertError, Checked, Recipient};
use super::tasks::Tasks;
use crate::authority::{Authority, Principal, Rights};
use crate::protocol::alert;
use crate::store::{self, Lane, PollDue, Pool, StoreError};
use crate::tree::builtin;

/// The session-reason alert types a session may be started with.
pub const REASONS: [&str; 3] = [
    alert::CLIENT_INITIATED,
    alert::SERVER_INITIATED,
    alert::BOOTSTRAP_COMPLETE,
];

/// Most triggers queued behind one server's running session.
pub const QUEUED_PER_SERVER: usize = 8;

/// Events kept for a subscriber that has not read them yet.
pub const EVENTS: usize = 256;

/// The longest the poller sleeps before it looks at the accounts again, even when nothing
/// told it they changed.
const POLL_RECHECK: Duration = Duration::from_secs(3600);

/// Who asked for a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A D-Bus caller (`StartSession`).
    Bus,
    /// The engine, to deliver an alert (an async EXEC's result).
    FollowUp,
    /// The account's poll interval.
    Poll,
    /// A local app's alert (`SendAlert`).
    Alert,
    /// The client's choice falling over from a server it could not reach.
    Failover,
    /// A DM account that never had a session arrived (a bootstrap file, `Bootstrap`,
    /// `CreateInstance` of a DM account): the session that carries `BootstrapComplete`.
    NewAccount,
    /// A verified server notification (Package#0).
    Notification,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Bus => "bus",
            Origin::FollowUp => "follow-up",
            Origin::Poll => "poll",
            Origin::Alert => "alert",
            Origin::Failover => "failover",
            Origin::NewAccount => "new account",
            Origin::Notification => "notification",
        }
    }
}

/// A session in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub srv_id: String,
    pub session_id: String,
    /// The session-reason alert type.
    pub reason: &'static str,
    pub origin: Origin,
}

/// What the scheduler announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A session started; `sessions` are those running now, as (server id, session id).
    Started {
        session: Running,
        sessions: Vec<(String, String)>,
    },
    /// A session ended with `status` (`200`, or its [`SessionError::status`]).
    Finished {
        session: Running,
        status: i32,
        detail: String,
        sessions: Vec<(String, String)>,
    },
    /// A server's `SHOW`: offer `url` to the user.
    Show { srv_id: String, url: String },
}

/// What a start did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The session runs now.
    Now { srv_id: String, session_id: String },
    /// Another session with the server runs; one follows it.
    Queued { srv_id: String, behind: String },
}

/// Why a session was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("unknown session reason {0:?}; use one of {reasons}", reasons = REASONS.join(", "))]
    Reason(String),
    #[error("no DM server account is configured")]
    NoAccounts,
    #[error("no DM server account with SrvID {0:?}")]
    NoAccount(String),
    #[error("session {session_id} with {srv_id} is still running")]
    Busy { srv_id: String, session_id: String },
    #[error("reading the DM accounts: {0}")]
    Accounts(String),
    #[error("omadmd is stopping: no new session starts")]
    Stopping,
    #[error("a factory reset is in progress: no session starts until it is done")]
    Paused,
}

/// What runs sessions for the scheduler: the [`Engine`] in the daemon.
pub trait Runner: Send + Sync + 'static {
    /// Runs one session with `account` (at `url` instead of its SrvURI when given), for
    /// what a notification asked (`notice`) if one did.
    fn session(
        self: Arc<Self>,
        account: Account,
        reason: &'static str,
        notice: Option<Notice>,
        url: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

    /// `DEFAULT`: fetches a missing MO of `moid` from the source a server named; whether
    /// anything was fetched.
    fn fetch_default(
        self: Arc<Self>,
        moid: String,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>>;

    /// Keeps the alert `alert_json` for `srv_id`'s next session; asks for no session.
    fn keep_alert(
        self: Arc<Self>,
        srv_id: String,
        alert_json: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

    /// Moves one alert `alert_json` waiting for `from` to `to`; whether one was waiting.
    fn move_alert(
        self: Arc<Self>,
        from: String,
        to: String,
        alert_json: String,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>>;
}

impl Runner for Engine {
    fn session(
        self: Arc<Self>,
        account: Account,
        reason: &'static str,
        notice: Option<Notice>,
        url: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        Box::pin(async move {
            Engine::run_notified(&self, &account, reason, notice.as_ref(), url.as_deref()).await
        })
    }

    fn fetch_default(
        self: Arc<Self>,
        moid: String,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>> {
        Box::pin(async move { Engine::fetch_default(&self, &moid).await })
    }

    fn keep_alert(
        self: Arc<Self>,
        srv_id: String,
        alert_json: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        Box::pin(async move {
            self.blocking(move |e| e.keep_alert(&srv_id, &alert_json))
                .await
                .map_err(|e| e.to_string())?;
            // SendAlert answers that the alert is kept: it is, on disk.
            self.store.durable().await.map_err(|e| e.to_string())
        })
    }

    fn move_alert(
        self: Arc<Self>,
        from: String,
        to: String,
        alert_json: String,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>> {
        Box::pin(async move {
            self.blocking(move |e| e.move_alert(&from, &to, &alert_json))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// A trigger waiting for its server's running session to end.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Trigger {
    reason: &'static str,
    origin: Origin,
    url: Option<String>,
    /// The client chose the server: where to fall over to if it cannot be reached.
    failover: Option<Failover>,
    /// What a notification asked for.
    notice: Option<Notice>,
}

impl Trigger {
    /// A trigger for `reason` from `origin`, to the account's SrvURI, with no failover and
    /// no notice.
    fn new(reason: &'static str, origin: Origin) -> Trigger {
        Trigger {
            reason,
            origin,
            url: None,
            failover: None,
            notice: None,
        }
    }

    /// Coalesces `later` into this queued trigger: a notification's reason and notice win
    /// (see [`Notice::merge`]).
    fn absorb(&mut self, later: Trigger) {
        let Some(notice) = later.notice else {
            return;
        };
        match &mut self.notice {
            Some(queued) => queued.merge(notice),
            None => self.notice = Some(notice),
        }
        self.reason = later.reason;
        self.origin = later.origin;
    }
}

#[derive(Default)]
struct Table {
    running: BTreeMap<String, Running>,
    queued: BTreeMap<String, Vec<Trigger>>,
    /// No session may start ([`Scheduler::without_sessions`]).
    paused: bool,
}

/// Lets sessions start again when dropped.
struct Unpause<'a>(&'a Scheduler);

impl Drop for Unpause<'_> {
    fn drop(&mut self) {
        self.0.lock().paused = false;
    }
}

/// Runs and schedules sessions; see the module documentation.
pub struct Scheduler {
    runner: Arc<dyn Runner>,
    auth: Arc<Authority>,
    /// The store's connections: the poll due times.
    store: Arc<Pool>,
    events: broadcast::Sender<Event>,
    table: Mutex<Table>,
    next: AtomicU64,
    /// Where the bearer is read from (`/` on a live system).
    host_root: PathBuf,
    /// The owner of the sessions' tasks.
    tasks: Tasks,
    /// Whether a new account gets its first session at once (`[session]
    /// first_session_at_once`).
    greet: AtomicBool,
    /// The accounts greeted in this run, by server id.
    greeted: Mutex<HashSet<String>>,
}

impl Scheduler {
    /// `store` is the pool `auth` works on (for the poll due times); `host_root` is where the
    /// bearer for SessionInfo's `CBT` is read from (`/`).
    pub fn new(
        runner: Arc<dyn Runner>,
        auth: Arc<Authority>,
        store: Arc<Pool>,
        host_root: PathBuf,
    ) -> Arc<Scheduler> {
        Scheduler::with_tasks(runner, auth, store, host_root, Tasks::new())
    }

    /// As [`Scheduler::new`], its sessions owned by `tasks`: once `tasks` stops, no
    /// session starts (see the module documentation).
    pub fn with_tasks(
        runner: Arc<dyn Runner>,
        auth: Arc<Authority>,
        store: Arc<Pool>,
        host_root: PathBuf,
        tasks: Tasks,
    ) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            runner,
            auth,
            store,
            events: broadcast::channel(EVENTS).0,
            table: Mutex::new(Table::default()),
            next: AtomicU64::new(1),
            host_root,
            tasks,
            greet: AtomicBool::new(true),
            greeted: Mutex::new(HashSet::new()),
        })
    }

    /// Removes SessionInfo instances no running session owns: those a crash left behind.
    /// Call at start, before any session.
    pub async fn clear_stale(self: &Arc<Self>) -> Result<usize, String> {
        let this = Arc::clone(self);
        blocking(move || {
            let live: Vec<String> = this
                .lock()
                .running
                .values()
                .map(|r| info_miid(&r.session_id))
                .collect();
            this.auth
                .withdraw(builtin::SESSIONINFO, |miid| live.iter().any(|l| l == miid))
        })
        .await
    }

    /// The store the sessions, and the callers who start them, write to.
    pub fn store(&self) -> &Arc<Pool> {
        &self.store
    }

    /// The session events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The sessions in progress, by server id.
    pub fn running(&self) -> Vec<Running> {
        self.lock().running.values().cloned().collect()
    }

    /// When `srv_id` last completed a session, POSIX seconds (0: never or unknown).
    pub async fn last_session(&self, srv_id: &str) -> u64 {
        let (store, srv_id) = (Arc::clone(&self.store), srv_id.to_owned());
        blocking(move || store.reader().last_session(&srv_id))
            .await
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0)
    }

    /// The DM server accounts, read on a background store thread.
    pub async fn accounts(&self) -> Result<Vec<Account>, String> {
        let auth = Arc::clone(&self.auth);
        blocking(move || account::load_all(&auth)).await
    }

    /// `DEFAULT`: fetches a missing MO of `moid` from the source a server named; whether
    /// anything was fetched.
    pub async fn fetch_default(&self, moid: &str) -> Result<bool, String> {
        Arc::clone(&self.runner)
            .fetch_default(moid.to_owned())
            .await
    }

    /// Starts a session with `srv_id` ("" lets the client choose: the account with the
    /// highest priority) for `reason` (a session-reason alert type; "" for client-initiated).
    /// The session runs in the background; see the module documentation for what happens
    /// while that server's session runs.
    pub async fn start(
        self: &Arc<Self>,
        srv_id: &str,
        reason: &str,
        origin: Origin,
    ) -> Result<Start, StartError> {
        let reason = match reason {
            "" => alert::CLIENT_INITIATED,
            r => REASONS
                .into_iter()
                .find(|known| *known == r)
                .ok_or_else(|| StartError::Reason(r.to_owned()))?,
        };
        let accounts = self.accounts().await.map_err(StartError::Accounts)?;
        let account = account::choose(&accounts, srv_id)
            .ok_or_else(|| match srv_id {
                "" => StartError::NoAccounts,
                id => StartError::NoAccount(id.to_owned()),
            })?
            .clone();
        let failover = match srv_id {
            "" => Failover::new(
                failover::by_priority(&accounts)
                    .into_iter()
                    .map(|a| a.srv_id.clone())
                    .collect(),
                reason,
                None,
            ),
            _ => None,
        };
        self.launch(
            account,
            Trigger {
                failover,
                ..Trigger::new(reason, origin)
            },
        )
    }

    /// A verified server notification from `srv_id` (see [`crate::notification`]): starts a
    /// session with that server for `ServerInitiatedMgmt` carrying `notice`, or queues one
    /// behind its running session. Never falls over to another server.
    pub async fn notified(
        self: &Arc<Self>,
        srv_id: &str,
        notice: Notice,
    ) -> Result<Start, StartError> {
        let accounts = self.accounts().await.map_err(StartError::Accounts)?;
        let account = accounts
            .into_iter()
            .find(|a| a.srv_id == srv_id)
            .ok_or_else(|| StartError::NoAccount(srv_id.to_owned()))?;
        self.launch(
            account,
            Trigger {
                notice: Some(notice),
                ..Trigger::new(alert::SERVER_INITIATED, Origin::Notification)
            },
        )
    }

    /// `SendAlert`: finds the alert's source node as `who` may see it, chooses its server
    /// (see [`send_alert::recipient`]), keeps the alert for that server and starts a session
    /// with it (or queues one behind the server's running session). Returns the server's
    /// SrvID once the alert is kept; if no session can start now (omadmd is stopping) the
    /// alert waits for the server's next session.
    pub async fn send_alert(
        self: &Arc<Self>,
        who: Principal,
        checked: Checked,
    ) -> Result<String, AlertError> {
        let Checked {
            server_id,
            mut alert,
            source,
        } = checked;
        let auth = Arc::clone(&self.auth);
        let found = store::offload(Lane::Interactive, move || {
            let node = match &source {
                Some(uri) => Some(send_alert::source(&auth, &who, uri)?),
                None => None,
            };
            let recipient = send_alert::recipient(&auth, &who, &server_id, node.as_ref())?;
            Ok::<_, AlertError>((node, recipient))
        })
        .await;
        let (node, recipient) = found.map_err(|e| AlertError::Store(e.to_string()))??;
        alert.source_uri = node.map(|n| n.to_string());
        let json = serde_json::to_string(&alert).map_err(|e| AlertError::Store(e.to_string()))?;
        let (account, failover) = match recipient {
            Recipient::One(account) => (account, None),
            Recipient::Choice(order) => {
                let ids = order.iter().map(|a| a.srv_id.clone()).collect();
                let failover = Failover::new(ids, alert::CLIENT_INITIATED, Some(json.clone()));
                let first = order.into_iter().next().ok_or(AlertError::NoAccounts)?;
                (first, failover)
            }
        };
        let srv_id = account.srv_id.clone();
        Arc::clone(&self.runner)
            .keep_alert(srv_id.clone(), json)
            .await
            .map_err(AlertError::Store)?;
        tracing::info!(srv_id = %srv_id, "alert {} kept for delivery", alert.alert_type);
        let trigger = Trigger {
            failover,
            ..Trigger::new(alert::CLIENT_INITIATED, Origin::Alert)
        };
        match self.launch(account, trigger) {
            Ok(Start::Now { session_id, .. }) => {
                tracing::info!("session {session_id} to deliver an alert");
            }
            Ok(Start::Queued { behind, .. }) => {
                tracing::info!(srv_id = %srv_id, "alert session queued behind {behind}");
            }
            Err(e) => tracing::warn!(
                srv_id = %srv_id,
                "no session to deliver an alert now: {e}; it waits for the next one"
            ),
        }
        Ok(srv_id)
    }

    /// Runs what the engine asks for after commands until its queue closes or the
    /// scheduler stops: `SHOW` URLs become [`Event::Show`], session requests start (or
    /// queue) a follow-up session. Requests left in the queue at a stop are dropped: their
    /// alerts are persisted, and the next start asks for them again ([`Engine::resume`]).
    pub async fn follow_ups(self: Arc<Self>, mut requests: mpsc::Receiver<FollowUp>) {
        loop {
            let request = tokio::select! {
                biased;
                () = self.tasks.stopped() => break,
                request = requests.recv() => match request {
                    Some(r) => r,
                    None => break,
                },
            };
            let (srv_id, url) = match request {
                FollowUp::Show { srv_id, url } => {
                    // Nobody listening is fine: SHOW is an offer.
                    let _ = self.events.send(Event::Show { srv_id, url });
                    continue;
                }
                FollowUp::Session { srv_id, url } => (srv_id, url),
            };
            let account = match self.accounts().await {
                Ok(all) => all.into_iter().find(|a| a.srv_id == srv_id),
                Err(e) => {
                    tracing::warn!("no follow-up session with {srv_id}: {e}; its alerts wait");
                    continue;
                }
            };
            let Some(account) = account else {
                tracing::warn!("no follow-up session with {srv_id}: it has no account any more");
                continue;
            };
            let trigger = Trigger {
                url,
                ..Trigger::new(alert::CLIENT_INITIATED, Origin::FollowUp)
            };
            match self.launch(account, trigger) {
                Ok(Start::Now { session_id, .. }) => {
                    tracing::info!("follow-up session {session_id} to deliver alerts");
                }
                Ok(Start::Queued { behind, .. }) => {
                    tracing::info!("follow-up session with {srv_id} queued behind {behind}");
                }
                Err(e) => tracing::warn!("follow-up session with {srv_id} not started: {e}"),
            }
        }
    }

    /// Polls the accounts with `Ext/PollSeconds` until the scheduler stops: sessions when
    /// due, and a look at the accounts whenever `accounts_changed` is notified.
    pub async fn poll(self: Arc<Self>, accounts_changed: Arc<Notify>) {
        while !self.tasks.stopping() {
            self.greet_new_accounts().await;
            let wait = self.poll_pass(now()).await;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = accounts_changed.notified() => {}
                () = self.tasks.stopped() => {}
            }
        }
    }

    /// Runs `work` with no session running and none starting until it is done (a factory
    /// reset): [`StartError::Busy`] when a session runs; triggers arriving meanwhile get
    /// [`StartError::Paused`] (their alerts stay persisted for a later session).
    pub async fn without_sessions<T>(
        &self,
        work: impl Future<Output = T>,
    ) -> Result<T, StartError> {
        {
            let mut table = self.lock();
            if let Some(r) = table.running.values().next() {
                return Err(StartError::Busy {
                    srv_id: r.srv_id.clone(),
                    session_id: r.session_id.clone(),
                });
            }
            if table.paused {
                return Err(StartError::Paused);
            }
            table.paused = true;
        }
        let _unpause = Unpause(self);
        Ok(work.await)
    }

    /// Whether a DM account that never had a session gets one at once, when it arrives or
    /// at start (on by default; set before [`Scheduler::poll`] runs).
    pub fn set_first_session_at_once(&self, on: bool) {
        self.greet.store(on, Ordering::Relaxed);
    }

    /// Opens a session with every account that never had one (it carries
    /// `BootstrapComplete`), once per account and run: a failed one is not retried here —
    /// the next session of any kind carries `BootstrapComplete` until one succeeds.
    async fn greet_new_accounts(self: &Arc<Self>) {
        if !self.greet.load(Ordering::Relaxed) {
            return;
        }
        let accounts = match self.accounts().await {
            Ok(a) => a,
            Err(e) => return tracing::error!("cannot read the DM accounts: {e}"),
        };
        for account in accounts {
            if !self.greeted_once(&account.srv_id) {
                continue;
            }
            let (store, srv_id) = (Arc::clone(&self.store), account.srv_id.clone());
            match blocking(move || store.reader().last_session(&srv_id)).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(srv_id = %account.srv_id, "cannot tell whether it had a session: {e}");
                    continue;
                }
            }
            let srv_id = account.srv_id.clone();
            let trigger = Trigger::new(alert::BOOTSTRAP_COMPLETE, Origin::NewAccount);
            match self.launch(account, trigger) {
                Ok(Start::Now { session_id, .. }) => {
                    tracing::info!(srv_id = %srv_id, "new account: session {session_id}")
                }
                Ok(Start::Queued { behind, .. }) => {
                    tracing::info!(srv_id = %srv_id, "new account: session queued behind {behind}")
                }
                Err(e) => tracing::warn!(srv_id = %srv_id, "new account: no session: {e}"),
            }
        }
    }

    /// Marks `srv_id` greeted; whether it was not before.
    fn greeted_once(&self, srv_id: &str) -> bool {
        self.greeted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(srv_id.to_owned())
    }

    /// One look at the polled accounts at `now` (POSIX seconds): schedules new ones,
    /// reschedules changed intervals, forgets unpolled ones, starts the due ones (after
    /// persisting their next due time). Returns how long until the next is due.
    async fn poll_pass(self: &Arc<Self>, now: i64) -> Duration {
        let accounts = match self.accounts().await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("poll: cannot read the DM accounts: {e}");
                return POLL_RECHECK;
            }
        };
        let this = Arc::clone(self);
        let dues = match blocking(move || this.store.reader().poll_due()).await {
            Ok(d) => d.into_iter().collect::<BTreeMap<String, PollDue>>(),
            Err(e) => {
                tracing::error!("poll: cannot read the due times: {e}");
                return POLL_RECHECK;
            }
        };
        let mut next = now.saturating_add(POLL_RECHECK.as_secs() as i64);
        let mut changes: Vec<(String, Option<PollDue>)> = Vec::new();
        let mut due_now = Vec::new();
        for account in accounts.iter().filter(|a| a.poll_seconds > 0) {
            let every = i64::try_from(account.poll_seconds).unwrap_or(i64::MAX);
            let current = dues.get(&account.srv_id).filter(|d| d.every == every);
            let due = match current {
                Some(d) if d.due > now => d.due,
                found => {
                    if found.is_some() {
                        due_now.push(account.clone());
                    }
                    let due = jittered(now, every);
                    changes.push((account.srv_id.clone(), Some(PollDue { due, every })));
                    due
                }
            };
            next = next.min(due);
        }
        for srv_id in dues.keys() {
            if !accounts
                .iter()
                .any(|a| a.srv_id == *srv_id && a.poll_seconds > 0)
            {
                changes.push((srv_id.clone(), None));
            }
        }
        if !changes.is_empty() {
            let this = Arc::clone(self);
            let record = changes.clone();
            let saved = blocking(move || {
                this.store.writer().write(|tx| {
                    for (srv_id, due) in &record {
                        match due {
                            Some(d) => tx.set_poll_due(srv_id, *d)?,
                            None => tx.clear_poll_due(srv_id)?,
                        }
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .await;
            if let Err(e) = saved {
                // Not started unless recorded: a restart must not repeat it.
                tracing::error!("poll: cannot record the next due times; no poll now: {e}");
                return POLL_RECHECK;
            }
        }
        for (srv_id, due) in &changes {
            if let Some(d) = due {
                tracing::info!(srv_id = %srv_id, "poll: next session due at {} (every {} s)", d.due, d.every);
            }
        }
        for account in due_now {
            let srv_id = account.srv_id.clone();
            let trigger = Trigger::new(alert::CLIENT_INITIATED, Origin::Poll);
            match self.launch(account, trigger) {
                Ok(Start::Now { session_id, .. }) => {
                    tracing::info!("poll: session {session_id}")
                }
                Ok(Start::Queued { behind, .. }) => {
                    tracing::info!("poll: session with {srv_id} queued behind {behind}")
                }
                Err(e) => tracing::warn!("poll: no session with {srv_id}: {e}"),
            }
        }
        Duration::from_secs(u64::try_from(next.saturating_sub(now)).unwrap_or(0).max(1))
    }

    /// Runs `trigger` with `account` now, or queues it behind the server's running session.
    fn launch(self: &Arc<Self>, account: Account, trigger: Trigger) -> Result<Start, StartError> {
        if self.tasks.stopping() {
            return Err(StartError::Stopping);
        }
        let srv_id = account.srv_id.clone();
        let session = {
            let mut table = self.lock();
            if table.paused {
                return Err(StartError::Paused);
            }
            if let Some(current) = table.running.get(&srv_id) {
                let behind = current.session_id.clone();
                // A caller asking for the session a new account is getting joins it: it
                // is the one it would have started.
                if trigger.origin == Origin::Bus && current.origin == Origin::NewAccount {
                    return Ok(Start::Now {
                        srv_id,
                        session_id: behind,
                    });
                }
                if trigger.origin == Origin::Bus {
                    return Err(StartError::Busy {
                        srv_id,
                        session_id: behind,
                    });
                }
                let queue = table.queued.entry(srv_id.clone()).or_default();
                if let Some(queued) = queue.iter_mut().find(|t| t.url == trigger.url) {
                    queued.absorb(trigger);
                    tracing::debug!(srv_id = %srv_id, "trigger coalesced with a queued one");
                } else if queue.len() >= QUEUED_PER_SERVER {
                    tracing::warn!(
                        srv_id = %srv_id,
                        "trigger dropped: {QUEUED_PER_SERVER} are queued already; \
                         waiting alerts go with the next session"
                    );
                } else {
                    queue.push(trigger);
                }
                return Ok(Start::Queued { srv_id, behind });
            }
            let session = self.name(&srv_id, &trigger);
            table.running.insert(srv_id.clone(), session.clone());
            session
        };
        let start = Start::Now {
            srv_id: srv_id.clone(),
            session_id: session.session_id.clone(),
        };
        let guard = Claim {
            scheduler: Arc::clone(self),
            srv_id,
            armed: true,
        };
        self.tasks
            .spawn(Arc::clone(self).drive(guard, account, session, trigger));
        Ok(start)
    }

    /// A new session's name and facts.
    fn name(&self, srv_id: &str, trigger: &Trigger) -> Running {
        Running {
            srv_id: srv_id.to_owned(),
            session_id: format!("{srv_id}-{}", self.next.fetch_add(1, Ordering::Relaxed)),
            reason: trigger.reason,
            origin: trigger.origin,
        }
    }

    /// Runs `session` for `trigger`, then the server's queued triggers one after the other,
    /// until none is left; `claim` gives the server back however this task ends. A session
    /// the client chose (the trigger's `failover`) that found no connection falls over to
    /// the next server.
    async fn drive(
        self: Arc<Self>,
        mut claim: Claim,
        account: Account,
        session: Running,
        trigger: Trigger,
    ) {
        let mut current = Some((Some(account), session, trigger));
        while let Some((account, session, trigger)) = current.take() {
            let Trigger {
                url,
                failover,
                notice,
                ..
            } = trigger;
            let session = self.first_after_bootstrap(session).await;
            let outcome = match account {
                Some(account) => self.run_one(account, &session, notice, url).await,
                None => {
                    self.announce_started(&session);
                    Outcome::failed(SessionError::Local(format!(
                        "{} has no DM account any more",
                        session.srv_id
                    )))
                }
            };
            // Decided while the server is still claimed: no session of its own takes the
            // alert that moves on meanwhile.
            let fallback = match failover {
                Some(choice) if failover::falls_over(&outcome) => {
                    self.fall_over(&session.srv_id, choice).await
                }
                _ => None,
            };
            let next = {
                let mut table = self.lock();
                let srv_id = &session.srv_id;
                if self.tasks.stopping() {
                    // Their alerts are persisted; the next start asks for them again.
                    table.queued.remove(srv_id);
                }
                let trigger = match table.queued.get_mut(srv_id) {
                    Some(q) if !q.is_empty() => Some(q.remove(0)),
                    _ => None,
                };
                if table.queued.get(srv_id).is_some_and(Vec::is_empty) {
                    table.queued.remove(srv_id);
                }
                let next = match trigger {
                    Some(t) => {
                        let next = self.name(srv_id, &t);
                        table.running.insert(srv_id.clone(), next.clone());
                        Some((next, t))
                    }
                    None => {
                        table.running.remove(srv_id);
                        claim.armed = false;
                        None
                    }
                };
                // Sent under the lock: whoever finds the session gone from `running` has
                // been sent its `Finished`.
                let _ = self.events.send(Event::Finished {
                    session: session.clone(),
                    status: outcome.status,
                    detail: outcome.detail,
                    sessions: pairs(&table),
                });
                next
            };
            if let Some((account, choice)) = fallback {
                self.launch_later(account, choice);
            }
            if let Some((next, trigger)) = next {
                let account = match self.accounts().await {
                    Ok(all) => all.into_iter().find(|a| a.srv_id == next.srv_id),
                    Err(e) => {
                        tracing::warn!("reading the DM accounts: {e}");
                        None
                    }
                };
                current = Some((account, next, trigger));
            }
        }
    }

    /// The client's choice `choice` could not reach `from`: the next server of the choice
    /// that still has an account, with the alert the choice carries moved to it. When none
    /// is left, the alert goes back to the first choice and `None` is returned.
    async fn fall_over(&self, from: &str, choice: Failover) -> Option<(Account, Failover)> {
        let accounts = match self.accounts().await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!("no failover from {from}: reading the DM accounts: {e}");
                Vec::new()
            }
        };
        let mut at = choice.clone();
        let found = loop {
            let Some((next, state)) = at.next() else {
                break None;
            };
            match accounts.iter().find(|a| a.srv_id == next) {
                Some(account) => break Some((account.clone(), state)),
                None => at = state,
            }
        };
        let Some((account, mut state)) = found else {
            tracing::warn!(srv_id = %from, "no DM server of the client's choice could be reached");
            if choice.first() != from {
                self.move_carried(&choice, from, choice.first()).await;
            }
            return None;
        };
        if !self.move_carried(&state, from, &account.srv_id).await {
            state = state.without_alert();
        }
        tracing::info!(srv_id = %from, "unreachable: falling over to {}", account.srv_id);
        Some((account, state))
    }

    /// Moves the alert `choice` carries (if any) from `from` to `to`; whether it moved.
    async fn move_carried(&self, choice: &Failover, from: &str, to: &str) -> bool {
        let Some(json) = choice.alert() else {
            return false;
        };
        let moved = Arc::clone(&self.runner)
            .move_alert(from.to_owned(), to.to_owned(), json.to_owned())
            .await;
        match moved {
            Ok(moved) => moved,
            Err(e) => {
                tracing::warn!(srv_id = %from, "an alert stays for {from}, not moved to {to}: {e}");
                false
            }
        }
    }

    /// Starts the session of the client's choice `choice` with `account` after the choice's
    /// backoff delay, unless the scheduler stops first.
    fn launch_later(self: &Arc<Self>, account: Account, choice: Failover) {
        let unit = getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
        let delay = choice.delay(unit);
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = this.tasks.stopped() => return,
            }
            let srv_id = account.srv_id.clone();
            let reason = choice.reason();
            let trigger = Trigger {
                failover: Some(choice),
                ..Trigger::new(reason, Origin::Failover)
            };
            match this.launch(account, trigger) {
                Ok(Start::Now { session_id, .. }) => {
                    tracing::info!("failover: session {session_id}");
                }
                Ok(Start::Queued { behind, .. }) => {
                    tracing::info!("failover: session with {srv_id} queued behind {behind}");
                }
                Err(e) => tracing::warn!("failover: no session with {srv_id}: {e}"),
            }
        });
    }

    /// `session`, with `BootstrapComplete` as its reason when its server has never had a
    /// session (PROTOCOL.md §13: the first session after an account arrives carries it,
    /// whatever triggered it; one reason alert per Package#1).
    async fn first_after_bootstrap(&self, session: Running) -> Running {
        if session.reason == alert::BOOTSTRAP_COMPLETE
            || self.last_session(&session.srv_id).await != 0
        {
            return session;
        }
        let session = Running {
            reason: alert::BOOTSTRAP_COMPLETE,
            ..session
        };
        if let Some(entry) = self.lock().running.get_mut(&session.srv_id) {
            entry.reason = session.reason;
        }
        session
    }

    /// One session: its SessionInfo instance, [`Event::Started`], the run (contained: a
    /// panic is an outcome), and the instance removed.
    async fn run_one(
        &self,
        account: Account,
        session: &Running,
        notice: Option<Notice>,
        url: Option<String>,
    ) -> Outcome {
        let miid = info_miid(&session.session_id);
        let facts = SessionInfo {
            session_id: session.session_id.clone(),
            srv_id: session.srv_id.clone(),
            reason: session.reason.to_owned(),
            cbt: String::new(),
            start_time: now(),
        };
        let (auth, root, at) = (Arc::clone(&self.auth), self.host_root.clone(), miid.clone());
        let provided = blocking(move || {
            let facts = SessionInfo {
                cbt: info::bearer(&root),
                ..facts
            };
            auth.provide_to(
                builtin::SESSIONINFO,
                &at,
                info::ROOT,
                &facts.node(),
                &Principal::Server(facts.srv_id.clone()),
                Rights::READ,
            )
        })
        .await;
        if let Err(e) = provided {
            tracing::warn!(srv_id = %session.srv_id, "no SessionInfo for {}: {e}", session.session_id);
        }
        tracing::info!(
            srv_id = %session.srv_id,
            origin = session.origin.as_str(),
            "session {} started (reason {})",
            session.session_id,
            session.reason
        );
        self.announce_started(session);
        let (runner, reason) = (Arc::clone(&self.runner), session.reason);
        let outcome =
            engine::contain(&self.tasks, runner.session(account, reason, notice, url)).await;
        let auth = Arc::clone(&self.auth);
        let gone = blocking(move || auth.withdraw(builtin::SESSIONINFO, |m| m != miid)).await;
        if let Err(e) = gone {
            tracing::warn!(srv_id = %session.srv_id, "SessionInfo of {} stays until restart: {e}", session.session_id);
        }
        outcome
    }

    fn announce_started(&self, session: &Running) {
        let sessions = pairs(&self.lock());
        let _ = self.events.send(Event::Started {
            session: session.clone(),
            sessions,
        });
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A server's place among the running sessions, given back (with its queue) if the task
/// that runs its sessions ends without doing so — the runtime stopping.
struct Claim {
    scheduler: Arc<Scheduler>,
    srv_id: String,
    armed: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.armed {
            let mut table = self.scheduler.lock();
            table.running.remove(&self.srv_id);
            table.queued.remove(&self.srv_id);
        }
    }
}

/// The running sessions as (server id, session id).
fn pairs(table: &Table) -> Vec<(String, String)> {
    table
        .running
        .values()
        .map(|r| (r.srv_id.clone(), r.session_id.clone()))
        .collect()
}

/// The SessionInfo MIID of a session: its number (session ids are `<SrvID>-<n>`, and a
/// SrvID need not be a valid node name).
fn info_miid(session_id: &str) -> String {
    let n = session_id.rsplit('-').next().unwrap_or(session_id);
    format!("s{n}")
}

/// `now + every`, give or take 10% at random; never before `now + 1`.
fn jittered(now: i64, every: i64) -> i64 {
    let spread = every / 10;
    let offset = match (spread, getrandom::u64()) {
        (0, _) | (_, Err(_)) => 0,
        (s, Ok(r)) => {
            let width = u64::try_from(s).unwrap_or(0).saturating_mul(2) + 1;
            i64::try_from(r % width).unwrap_or(0) - s
        }
    };
    now.saturating_add(every)
        .saturating_add(offset)
        .max(now + 1)
}

/// POSIX seconds now.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// [`store::offload`]ed work; its error, whichever, as text for the log.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    store::offload(Lane::Background, work)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::registry::Registry;
    use tokio::sync::Semaphore;

    /// Runs no session: records it, checks its SessionInfo, and ends when `gate` lets it —
    /// or at once, with no connection, for a server in `unreachable`. Keeps alerts as
    /// (server, JSON).
    struct Fake {
        auth: Arc<Authority>,
        gate: Semaphore,
        ran: Mutex<Vec<(String, Option<String>, bool)>>,
        /// Each session's reason and notice, in order.
        notices: Mutex<Vec<(&'static str, Option<Notice>)>>,
        unreachable: Mutex<Vec<String>>,
        alerts: Mutex<Vec<(String, String)>>,
    }

    impl Runner for Fake {
        fn session(
            self: Arc<Self>,
            account: Account,
            reason: &'static str,
            notice: Option<Notice>,
            url: Option<String>,
        ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
            self.notices.lock().unwrap().push((reason, notice));
            Box::pin(async move {
                let me = Principal::Server(account.srv_id.clone());
                let cbt = self.auth.get(&me, "urn:oma:mo:oma-sessioninfomo:1.0//CBT");
                let srv = self
                    .auth
                    .get(&me, "urn:oma:mo:oma-sessioninfomo:1.0//SrvID");
                let own = cbt.is_ok()
                    && srv.is_ok_and(|f| {
                        f[0].value.as_ref().map(|v| v.to_text()) == Some(account.srv_id.clone())
                    });
                self.ran
                    .lock()
                    .unwrap()
                    .push((account.srv_id.clone(), url, own));
                if self.unreachable.lock().unwrap().contains(&account.srv_id) {
                    return Outcome::failed(SessionError::Unreachable(format!(
                        "could not connect to {}",
                        account.srv_uri
                    )));
                }
                self.gate.acquire().await.unwrap().forget();
                Outcome {
                    status: 200,
                    packages: 1,
                    commands: 0,
                    detail: "completed".into(),
                    error: None,
                }
            })
        }

        fn fetch_default(
            self: Arc<Self>,
            _moid: String,
        ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>> {
            Box::pin(async { Ok(false) })
        }

        fn keep_alert(
            self: Arc<Self>,
            srv_id: String,
            alert_json: String,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
            self.alerts.lock().unwrap().push((srv_id, alert_json));
            Box::pin(async { Ok(()) })
        }

        fn move_alert(
            self: Arc<Self>,
            from: String,
            to: String,
            alert_json: String,
        ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>> {
            let mut alerts = self.alerts.lock().unwrap();
            let found = alerts
                .iter_mut()
                .find(|(srv, json)| *srv == from && *json == alert_json);
            let moved = found.map(|(srv, _)| *srv = to).is_some();
            Box::pin(async move { Ok(moved) })
        }
    }

    struct Setup {
        auth: Arc<Authority>,
        fake: Arc<Fake>,
        store: Arc<Pool>,
        _dir: tempfile::TempDir,
    }

    fn setup(permits: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let store = Arc::new(Pool::open(&db, store::Bounds::default(), 1).unwrap());
        let auth = Arc::new(Authority::new(
            store.clone(),
            Registry::with_builtin(),
            Box::new(|_| {}),
        ));
        let fake = Arc::new(Fake {
            auth: auth.clone(),
            gate: Semaphore::new(permits),
            ran: Mutex::new(Vec::new()),
            notices: Mutex::new(Vec::new()),
            unreachable: Mutex::new(Vec::new()),
            alerts: Mutex::new(Vec::new()),
        });
        Setup {
            auth,
            fake,
            store,
            _dir: dir,
        }
    }

    impl Setup {
        fn scheduler(&self) -> Arc<Scheduler> {
            Scheduler::new(
                self.fake.clone(),
                self.auth.clone(),
                self.store.clone(),
                PathBuf::from("/nonexistent"),
            )
        }

        fn account(&self, srv_id: &str, ext: serde_json::Value) {
            let modata = serde_json::json!({"DMAcc": {
                "SrvID": srv_id, "SrvURI": format!("https://{srv_id}.invalid/"),
                "Perm": {"p0": {"MOID": "urn:x:1.0"}}, "Ext": ext}});
            self.auth
                .create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())
                .unwrap();
        }

        fn ran(&self) -> Vec<(String, Option<String>, bool)> {
            self.fake.ran.lock().unwrap().clone()
        }

        /// The servers the sessions went to, in order.
        fn servers(&self) -> Vec<String> {
            self.ran().into_iter().map(|r| r.0).collect()
        }

        fn unreachable(&self, srv_ids: &[&str]) {
            *self.fake.unreachable.lock().unwrap() =
                srv_ids.iter().map(|s| (*s).to_owned()).collect();
        }

        /// Where the alerts wait, as (server, AlertType).
        fn alerts(&self) -> Vec<(String, String)> {
            self.fake
                .alerts
                .lock()
                .unwrap()
                .iter()
                .map(|(srv, json)| {
                    let alert: crate::protocol::Alert = serde_json::from_str(json).unwrap();
                    (srv.clone(), alert.alert_type)
                })
                .collect()
        }
    }

    /// The next `Finished` event's server and status; other events are skipped.
    async fn finished_with(events: &mut broadcast::Receiver<Event>) -> (String, i32) {
        let wait = async {
            loop {
                if let Event::Finished {
                    session, status, ..
                } = events.recv().await.unwrap()
                {
                    return (session.srv_id, status);
                }
            }
        };
        // A failure bound, not a measurement.
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("a session finished")
    }

    /// A SendAlert request for `srv_id` of type `urn:x:<name>`.
    fn alert_for(srv_id: &str, name: &str) -> Checked {
        send_alert::AlertRequest {
            server_id: srv_id.into(),
            alert_type: format!("urn:x:{name}"),
            ..Default::default()
        }
        .check()
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_choice_falls_over_by_priority_and_a_named_server_does_not() {
        let s = setup(Semaphore::MAX_PERMITS);
        s.account("low", serde_json::json!({"Priority": 1}));
        s.account("top", serde_json::json!({"Priority": 9}));
        s.account("mid", serde_json::json!({"Priority": 5}));
        s.account("least", serde_json::json!({"Priority": 0}));
        s.unreachable(&["top", "mid"]);
        let scheduler = s.scheduler();
        let mut events = scheduler.subscribe();

        // The client chose: top, then mid (no connection either), then low answers.
        let Start::Now { srv_id, .. } = scheduler.start("", "", Origin::Bus).await.unwrap() else {
            panic!("runs now")
        };
        assert_eq!(srv_id, "top");
        assert_eq!(finished_with(&mut events).await, ("top".into(), 503));
        assert_eq!(finished_with(&mut events).await, ("mid".into(), 503));
        assert_eq!(finished_with(&mut events).await, ("low".into(), 200));
        assert_eq!(s.servers(), ["top", "mid", "low"]);

        // Named, polled: that server only.
        scheduler.start("top", "", Origin::Bus).await.unwrap();
        assert_eq!(finished_with(&mut events).await, ("top".into(), 503));
        scheduler.start("mid", "", Origin::Poll).await.unwrap();
        assert_eq!(finished_with(&mut events).await, ("mid".into(), 503));
        // An HTTP error is an answer: no failover.
        assert!(!failover::falls_over(&Outcome::failed(
            SessionError::Http {
                url: "u".into(),
                status: 503
            }
        )));

        // An alert for the client's choice follows it to the server that answers.
        assert_eq!(
            scheduler
                .send_alert(Principal::Admin, alert_for("", "Chosen"))
                .await
                .unwrap(),
            "top"
        );
        assert_eq!(finished_with(&mut events).await, ("top".into(), 503));
        assert_eq!(finished_with(&mut events).await, ("mid".into(), 503));
        assert_eq!(finished_with(&mut events).await, ("low".into(), 200));
        assert_eq!(s.alerts(), [("low".into(), "urn:x:Chosen".into())]);

        // One for a named server stays with it.
        s.fake.alerts.lock().unwrap().clear();
        scheduler
            .send_alert(Principal::Admin, alert_for("mid", "Named"))
            .await
            .unwrap();
        assert_eq!(finished_with(&mut events).await, ("mid".into(), 503));
        assert_eq!(s.alerts(), [("mid".into(), "urn:x:Named".into())]);

        // No server answers: each tried once, and the alert waits for the first choice.
        s.fake.alerts.lock().unwrap().clear();
        s.unreachable(&["top", "mid", "low", "least"]);
        let before = s.servers().len();
        scheduler
            .send_alert(Principal::Admin, alert_for("", "Nobody"))
            .await
            .unwrap();
        for srv in ["top", "mid", "low", "least"] {
            assert_eq!(finished_with(&mut events).await, (srv.into(), 503));
        }
        assert_eq!(s.servers()[before..], ["top", "mid", "low", "least"]);
        assert_eq!(s.alerts(), [("top".into(), "urn:x:Nobody".into())]);
        assert!(scheduler.running().is_empty());
    }

    /// The next `Finished` event's server; other events are skipped.
    async fn finished(events: &mut broadcast::Receiver<Event>) -> String {
        let wait = async {
            loop {
                if let Event::Finished { session, .. } = events.recv().await.unwrap() {
                    return session.srv_id;
                }
            }
        };
        // A failure bound, not a measurement.
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("a session finished")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_session_runs_or_starts_while_sessions_are_held_off() {
        let s = setup(0);
        s.account("a", serde_json::json!({}));
        let scheduler = s.scheduler();
        let mut events = scheduler.subscribe();
        scheduler.start("a", "", Origin::Bus).await.unwrap();
        // Not while one runs.
        let held = scheduler.without_sessions(async {}).await;
        assert!(matches!(held, Err(StartError::Busy { .. })), "{held:?}");
        s.fake.gate.add_permits(1);
        assert_eq!(finished(&mut events).await, "a");
        // Meanwhile, every trigger is refused; afterwards they run again.
        let during = scheduler
            .without_sessions(async {
                (
                    scheduler.start("a", "", Origin::Bus).await,
                    scheduler.start("a", "", Origin::Poll).await,
                )
            })
            .await
            .unwrap();
        assert!(
            matches!(during.0, Err(StartError::Paused)),
            "{:?}",
            during.0
        );
        assert!(
            matches!(during.1, Err(StartError::Paused)),
            "{:?}",
            during.1
        );
        s.fake.gate.add_permits(1);
        scheduler.start("a", "", Origin::Bus).await.unwrap();
        assert_eq!(finished(&mut events).await, "a");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_session_per_server_and_queued_triggers_coalesce() {
        let s = setup(0);
        s.account("a", serde_json::json!({}));
        s.account("b", serde_json::json!({}));
        let scheduler = s.scheduler();
        let mut events = scheduler.subscribe();

        let Start::Now { session_id, .. } = scheduler.start("a", "", Origin::Bus).await.unwrap()
        else {
            panic!("the first start runs")
        };
        match scheduler.start("a", "", Origin::Bus).await {
            Err(StartError::Busy {
                session_id: busy, ..
            }) => assert_eq!(busy, session_id),
            other => panic!("a second bus start is Busy: {other:?}"),
        }
        for _ in 0..5 {
            assert_eq!(
                scheduler.start("a", "", Origin::Poll).await.unwrap(),
                Start::Queued {
                    srv_id: "a".into(),
                    behind: session_id.clone()
                }
            );
        }
        assert!(matches!(
            scheduler.start("b", "", Origin::Bus).await.unwrap(),
            Start::Now { .. }
        ));
        assert_eq!(scheduler.running().len(), 2);
        assert!(matches!(
            scheduler.start("", "urn:x:Bogus", Origin::Bus).await,
            Err(StartError::Reason(_))
        ));
        assert!(matches!(
            scheduler.start("nosuch", "", Origin::Bus).await,
            Err(StartError::NoAccount(_))
        ));

        // Let every session end: a's first, a's one queued follower, b's.
        s.fake.gate.add_permits(3);
        let mut done = vec![
            finished(&mut events).await,
            finished(&mut events).await,
            finished(&mut events).await,
        ];
        done.sort();
        assert_eq!(done, ["a", "a", "b"]);
        assert!(scheduler.running().is_empty(), "nothing more queued");
        let ran = s.ran();
        assert_eq!(ran.len(), 3, "{ran:?}");
        assert!(
            ran.iter().all(|(_, _, own)| *own),
            "each saw its own SessionInfo: {ran:?}"
        );
        // Gone with the sessions.
        assert!(
            s.auth
                .instances_of(builtin::SESSIONINFO)
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follow_ups_run_after_the_running_session_and_show_is_announced() {
        let s = setup(0);
        s.account("a", serde_json::json!({}));
        let scheduler = s.scheduler();
        let mut events = scheduler.subscribe();
        let (tx, rx) = engine::follow_up_queue();
        tokio::spawn(scheduler.clone().follow_ups(rx));

        assert!(matches!(
            scheduler.start("a", "", Origin::Bus).await.unwrap(),
            Start::Now { .. }
        ));
        let url = Some("https://a.invalid/results".to_owned());
        for _ in 0..3 {
            tx.send(FollowUp::Session {
                srv_id: "a".into(),
                url: url.clone(),
            })
            .await
            .unwrap();
        }
        tx.send(FollowUp::Show {
            srv_id: "a".into(),
            url: "https://a.invalid/show".into(),
        })
        .await
        .unwrap();
        // The Show comes after the session requests: once it is out, they were all taken.
        let show = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Event::Show { url, .. } = events.recv().await.unwrap() {
                    return url;
                }
            }
        })
        .await
        .expect("SHOW announced");
        assert_eq!(show, "https://a.invalid/show");

        s.fake.gate.add_permits(2);
        assert_eq!(finished(&mut events).await, "a");
        assert_eq!(finished(&mut events).await, "a");
        assert!(scheduler.running().is_empty());
        let ran = s.ran();
        assert_eq!(
            ran.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            [None, url],
            "one follow-up session, at the requested URL"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polls_on_schedule_and_a_restart_neither_repeats_nor_loses_one() {
        let s = setup(Semaphore::MAX_PERMITS);
        s.account("p", serde_json::json!({"PollSeconds": 100}));
        s.account("quiet", serde_json::json!({}));
        let scheduler = s.scheduler();
        let mut events = scheduler.subscribe();
        let due = |scheduler: &Scheduler| scheduler.store.reader().poll_due().unwrap();

        // Scheduled, not run: the first poll is one interval away, jittered by 10%.
        scheduler.poll_pass(1000).await;
        let first = due(&scheduler);
        assert_eq!(first.len(), 1, "only the polled account: {first:?}");
        let first = first[0].1;
        assert!((1090..=1110).contains(&first.due), "{first:?}");
        assert_eq!(first.every, 100);
        scheduler.poll_pass(first.due - 1).await;
        assert!(s.ran().is_empty());

        scheduler.poll_pass(first.due).await;
        assert_eq!(finished(&mut events).await, "p");
        let second = due(&scheduler)[0].1;
        assert!(
            (first.due + 90..=first.due + 110).contains(&second.due),
            "{second:?}"
        );
        scheduler.poll_pass(first.due).await;
        assert_eq!(s.ran().len(), 1, "not twice for one due time");

        // A restart: the persisted due time holds.
        drop(scheduler);
        let scheduler = s.scheduler();
        let mut events = scheduler.subscribe();
        scheduler.poll_pass(first.due + 1).await;
        assert_eq!(s.ran().len(), 1, "no poll right after a restart");
        assert_eq!(due(&scheduler)[0].1, second);
        // Down over several due times: one session, not one per missed interval.
        scheduler.poll_pass(second.due + 1000).await;
        assert_eq!(finished(&mut events).await, "p");
        assert_eq!(s.ran().len(), 2);
        assert!(due(&scheduler)[0].1.due > second.due + 1000);

        // Polling off: the due time goes.
        let polled = account::load_all(&s.auth)
            .unwrap()
            .into_iter()
            .find(|a| a.srv_id == "p")
            .unwrap();
        let uri = format!("{}/{}/Ext/PollSeconds", builtin::DMACC, polled.miid);
        s.auth.delete(&Principal::Admin, &uri).unwrap();
        scheduler.poll_pass(second.due + 2000).await;
        assert!(due(&scheduler).is_empty());
        assert_eq!(s.ran().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_notification_starts_a_server_initiated_session_and_coalesces_when_queued() {
        use crate::notification::package0::ConType;
        let s = setup(0);
        s.account("a", serde_json::json!({}));
        // Not a first session: the reason stays ServerInitiatedMgmt.
        s.store
            .writer()
            .write(|tx| tx.record_session("a"))
            .map(|(t, _)| t)
            .unwrap();
        let scheduler = s.scheduler();
        let mut events = scheduler.subscribe();
        let notice = |id, req_mos| Notice {
            notification_id: Some(id),
            req_mos,
            con_type: ConType::Any,
        };

        let started = scheduler.notified("a", notice(1, false)).await.unwrap();
        let Start::Now { session_id, .. } = started else {
            panic!("runs now: {started:?}")
        };
        assert_eq!(scheduler.running()[0].origin, Origin::Notification);
        assert_eq!(scheduler.running()[0].reason, alert::SERVER_INITIATED);
        // While it runs: a poll queues, then two notifications coalesce into it.
        scheduler.start("a", "", Origin::Poll).await.unwrap();
        for n in [notice(2, true), notice(3, false)] {
            assert_eq!(
                scheduler.notified("a", n).await.unwrap(),
                Start::Queued {
                    srv_id: "a".into(),
                    behind: session_id.clone()
                }
            );
        }
        assert!(matches!(
            scheduler.notified("nosuch", notice(4, false)).await,
            Err(StartError::NoAccount(_))
        ));
        s.fake.gate.add_permits(2);
        assert_eq!(finished(&mut events).await, "a");
        assert_eq!(finished(&mut events).await, "a");
        assert_eq!(
            *s.fake.notices.lock().unwrap(),
            [
                (alert::SERVER_INITIATED, Some(notice(1, false))),
                (alert::SERVER_INITIATED, Some(notice(3, true))),
            ],
            "one more session, for the later id, with REQ-MOS from either"
        );
        assert!(scheduler.running().is_empty());
    }

    #[test]
    fn due_times_are_jittered_within_ten_percent() {
        for _ in 0..200 {
            let due = jittered(1000, 100);
            assert!((1090..=1110).contains(&due), "{due}");
        }
        assert_eq!(jittered(1000, 5), 1005, "too short to jitter");
        assert_eq!(info_miid("a-b-17"), "s17");
    }
}
