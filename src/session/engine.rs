//! The package loop of one DM session (PROTOCOL.md §1): Package#1 to the server's URI,
//! then for each Package#2 run its commands in order and post Package#3 — unless it held
//! `END` — until the session ends. HTTP 4xx/5xx, a malformed package, a wrong content type
//! or an oversized package abort the session; there is no retry inside a session.
//!
//! Bounds (`[limits]`, see [`Limits`]), so that no server can keep a session, or the daemon,
//! busy without end:
//! - `session_packages`: a session runs at most that many Package#2; the next one ends the
//!   session with `508` (loop detected), none of its commands run;
//! - `session_seconds`: the whole session, from Package#1 to the last answer, HTTP waits
//!   included, must end within that time; past it the session is ended with `504`. The
//!   deadline is also checked before every command (and between the ClientURIs of an
//!   HPUT/HPOST), and the commands' reads and writes run on store threads while the
//!   session awaits them, so a Package#2 of many costly commands is cut off at the deadline
//!   too — not only a slow server;
//! - `package3_bytes`: no Package#3 is larger (see [`super::package3`]): GET results that do
//!   not fit are answered `413` in their status instead of their data, and once no result
//!   fits any more the remaining GETs of the package are answered `413` without being run; a
//!   Package#2 with more commands than even bare statuses fit for ends the session with
//!   `413`, unrun;
//! - `max_package_bytes` bounds Package#1 as well: alerts waiting for the server go in
//!   oldest first while they fit, the rest wait for a later session;
//! - what a server leaves behind is bounded per server (see [`super::commands`]):
//!   `subscriptions_per_server`, `exec_concurrent` asynchronous EXECs, and
//!   `pending_alerts_per_server` (beyond it the oldest alerts are dropped, with a log line).
//!
//! A session that ends early — by one of these, an error, or a panic (see [`contain`]) —
//! leaves nothing half done: each command is its own transaction, and alerts are dropped only
//! once Package#1 was answered.
//!
//! Durability: every command is its own store transaction, and the store is synced once
//! before each Package#3, so every change a Package#3 acknowledges is on disk.
//!
//! Background work: asynchronous EXEC handlers run as tasks of the engine's [`Tasks`]; an
//! asynchronous EXEC is recorded before its handler starts, so that its result alert is
//! queued whatever happens — the handler's result, or "interrupted" when the daemon gives up
//! on it at shutdown or finds it recorded at start ([`Engine::resume`]; see
//! [`super::exec`]). A session cut off at shutdown ends with status `500`.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::account::Account;
use super::commands::{self, Context};
use super::error::SessionError;
use super::exec::{self, ExecHandlers};
use super::notice::Notice;
use super::package3::{Fit, Package3Body};
use super::tasks::Tasks;
use crate::authority::{Authority, Principal};
use crate::config::Config;
use crate::protocol::{self, Alert, MoEntry, Package1, Package2, Status};
use crate::store::{self, AsyncExec, Lane, Offload, Pool, Store};
use crate::transport::{HttpClient, Request, Response};
use crate::tree::uri::NodeAddr;

/// Configured limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest Package#2 accepted (`[session] max_package_bytes`, default 8 MiB).
    pub max_package_bytes: usize,
    /// Most Package#2 in one session (`[limits] session_packages`, default 200).
    pub session_packages: u32,
    /// Longest session, in seconds (`[limits] session_seconds`, default 900).
    pub session_seconds: u64,
    /// Largest Package#3 sent (`[limits] package3_bytes`, default 8 MiB).
    pub package3_bytes: usize,
    /// Largest body one HPUT/HPOST sends, all its ClientURIs together (`[limits]
    /// reply_bytes`, default 16 MiB).
    pub reply_bytes: usize,
    /// Most SUB subscriptions per server (`[limits] subscriptions_per_server`, default 64).
    pub subscriptions_per_server: usize,
    /// Most asynchronous EXECs running per server (`[limits] exec_concurrent`, default 4).
    pub exec_concurrent: usize,
    /// Most alerts waiting per server (`[limits] pending_alerts_per_server`, default 64).
    pub pending_alerts_per_server: usize,
    /// Longest ServerURI in a command (`[limits] server_uri_bytes`, default 2048).
    pub server_uri_bytes: usize,
    /// Largest large object (`[limits] object_bytes`, default 4 GiB).
    pub object_bytes: u64,
    /// How long a large-object command holds the session before `202`
    /// (`[limits] transfer_wait_seconds`, default 30).
    pub transfer_wait_seconds: u64,
}

impl Limits {
    /// The session limits of a configuration.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_package_bytes: config.session.max_package_bytes,
            session_packages: config.limits.session_packages,
            session_seconds: config.limits.session_seconds,
            package3_bytes: config.limits.package3_bytes,
            reply_bytes: config.limits.reply_bytes,
            subscriptions_per_server: config.limits.subscriptions_per_server,
            exec_concurrent: config.limits.exec_concurrent,
            pending_alerts_per_server: config.limits.pending_alerts_per_server,
            server_uri_bytes: config.limits.server_uri_bytes,
            object_bytes: config.limits.object_bytes,
            transfer_wait_seconds: config.limits.transfer_wait_seconds,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&Config::default())
    }
}

/// How a session ended. `status` is `200` on success, otherwise `error`'s
/// [`SessionError::status`]; `detail` says it in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: i32,
    pub packages: u32,
    pub commands: u32,
    pub detail: String,
    /// Why the session ended early; `None` when the server ended it.
    pub error: Option<SessionError>,
}

impl Outcome {
    /// A session that ended with `error` before it ran anything.
    pub fn failed(error: SessionError) -> Outcome {
        Outcome {
            status: error.status(),
            packages: 0,
            commands: 0,
            detail: error.to_string(),
            error: Some(error),
        }
    }
}

/// How many follow-up requests wait for the scheduler at most. When the queue is full a
/// request is dropped, with a log line: a `SHOW` goes unannounced, and a session request
/// costs nothing, since its alert is persisted and goes with the next session with that
/// server (requests for one server coalesce into one session anyway).
pub const FOLLOW_UP_QUEUE: usize = 64;

/// The bounded queue the engine hands follow-up requests to the scheduler through.
pub fn follow_up_queue() -> (mpsc::Sender<FollowUp>, mpsc::Receiver<FollowUp>) {
    mpsc::channel(FOLLOW_UP_QUEUE)
}

/// What the engine asks of the daemon after a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowUp {
    /// Run a session with `srv_id` later, at `url` when given (to deliver queued alerts).
    Session { srv_id: String, url: Option<String> },
    /// `SHOW`: offer `url` to the user (the daemon announces it on D-Bus for desktop
    /// agents); the session does not wait.
    Show { srv_id: String, url: String },
}

/// Runs sessions.
pub struct Engine {
    pub(super) auth: Arc<Authority>,
    /// The store's connections, for session state (the authority's writer).
    pub(super) store: Arc<Pool>,
    pub(super) dev_id: String,
    pub(super) limits: Limits,
    pub(super) exec: ExecHandlers,
    pub(super) extra_ca_files: Vec<PathBuf>,
    pub(super) followups: mpsc::Sender<FollowUp>,
    /// Asynchronous EXECs running, per server.
    async_execs: Mutex<HashMap<String, usize>>,
    /// The owner of asynchronous EXEC handlers and the sessions [`contain`]ed.
    pub(super) tasks: Tasks,
    /// Told when owed SUB deliveries may now go out (see [`super::subscribe`]).
    subs_owed: Notify,
    /// What the large-object transfers are doing (see [`super::large`]).
    pub(super) board: Arc<crate::transfer::Board>,
    /// Counts network moves: transfers go on at once on a new connection (see
    /// [`super::large`]).
    pub(super) network_moves: tokio::sync::watch::Sender<u64>,
    /// The devices behind the gateway, once it runs.
    children: std::sync::OnceLock<Arc<dyn super::children::Children>>,
}

/// A running asynchronous EXEC's place in its server's `exec_concurrent`, given back when
/// dropped.
pub(super) struct ExecSlot {
    engine: Arc<Engine>,
    srv_id: String,
}

impl Drop for ExecSlot {
    fn drop(&mut self) {
        let mut running = self.engine.running_execs();
        if let Some(n) = running.get_mut(&self.srv_id) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.srv_id);
            }
        }
    }
}

impl Engine {
    /// `store` is the pool `auth` works on: session state (pending alerts, subscriptions,
    /// asynchronous EXECs) is written through the same writer;
    /// `followups` (see [`follow_up_queue`]) receives sessions the engine wants run later
    /// (async EXEC results) and `SHOW` URLs.
    pub fn new(
        auth: Arc<Authority>,
        store: Arc<Pool>,
        dev_id: String,
        limits: Limits,
        exec: ExecHandlers,
        extra_ca_files: Vec<PathBuf>,
        followups: mpsc::Sender<FollowUp>,
    ) -> Engine {
        Engine {
            auth,
            store,
            dev_id,
            limits,
            exec,
            extra_ca_files,
            followups,
            async_execs: Mutex::new(HashMap::new()),
            tasks: Tasks::new(),
            subs_owed: Notify::new(),
            board: Arc::default(),
            network_moves: tokio::sync::watch::Sender::new(0),
            children: std::sync::OnceLock::new(),
        }
    }

    /// An engine on a fresh store file in `dir`, with the built-in MO types, default limits
    /// and no EXEC handlers, and its authority (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &std::path::Path) -> (Arc<Authority>, Engine) {
        let pool =
            Arc::new(Pool::open(&dir.join("store.db"), store::Bounds::default(), 1).unwrap());
        let auth = Arc::new(Authority::new(
            pool.clone(),
            crate::tree::registry::Registry::with_builtin(),
            Box::new(|_| {}),
        ));
        let engine = Engine::new(
            auth.clone(),
            pool,
            "dev".into(),
            Limits::from_config(&Config::default()),
            ExecHandlers::default(),
            Vec::new(),
            follow_up_queue().0,
        );
        (auth, engine)
    }

    /// The engine with its large-object transfers shown on `board`.
    pub fn with_board(self, board: Arc<crate::transfer::Board>) -> Engine {
        Engine { board, ..self }
    }

    /// Hands writes and EXECs on children's instances to `children` from now on (set once;
    /// a second call is ignored).
    pub fn set_children(&self, children: Arc<dyn super::children::Children>) {
        if self.children.set(children).is_err() {
            tracing::warn!("the gateway was plugged in twice; keeping the first");
        }
    }

    /// Whether a gateway is plugged in.
    pub(super) fn has_children(&self) -> bool {
        self.children.get().is_some()
    }

    /// The gateway when `addr` is in one of its children's instances.
    pub(super) fn child_of(&self, addr: &NodeAddr) -> Option<&Arc<dyn super::children::Children>> {
        self.children.get().filter(|c| c.owns(addr))
    }

    /// The engine with its background work (asynchronous EXEC handlers) owned by `tasks`.
    pub fn with_tasks(self, tasks: Tasks) -> Engine {
        Engine { tasks, ..self }
    }

    /// After a restart, before any session: queues the "interrupted" result of every
    /// asynchronous EXEC a stopped daemon left recorded, then asks for a follow-up session
    /// for every server with alerts waiting (per TargetURI), so that they reach their server
    /// without waiting for another trigger. Returns how many EXECs were interrupted.
    pub fn resume(&self) -> Result<usize, SessionError> {
        let left = self.with_state(|s| s.async_execs())?;
        for exec in &left {
            tracing::warn!(
                srv_id = %exec.srv_id,
                "asynchronous EXEC of {} was running when omadmd stopped: reporting it interrupted",
                exec.client_uri
            );
            self.finish_exec(exec, &exec::interrupted())?;
        }
        self.deliver_pending()?;
        Ok(left.len())
    }

    /// Asks for a follow-up session for every server with alerts waiting (per TargetURI),
    /// and for the owed SUB deliveries to go out: after a restart, and when the network is
    /// back or moved (what failed meanwhile was kept). Blocking.
    pub fn deliver_pending(&self) -> Result<(), SessionError> {
        for (srv_id, url) in self.with_state(|s| s.pending_alert_targets())? {
            self.follow_up(FollowUp::Session { srv_id, url });
        }
        self.subs_owed.notify_one();
        Ok(())
    }

    /// Told when owed SUB deliveries may now go out: by [`Engine::deliver_pending`], and
    /// after each session that worked (its server is reachable).
    pub fn subs_owed(&self) -> &Notify {
        &self.subs_owed
    }

    /// The authority sessions act through.
    pub fn authority(&self) -> &Arc<Authority> {
        &self.auth
    }

    /// Runs one session with `account`; `reason` is the session-reason alert type; `url`
    /// overrides the account's SrvURI (a follow-up session to an EXEC's ServerURI).
    pub async fn run(
        self: &Arc<Self>,
        account: &Account,
        reason: &str,
        url: Option<&str>,
    ) -> Outcome {
        self.run_notified(account, reason, None, url).await
    }

    /// As [`Engine::run`], for a session a server notification asked for (`notice`): its
    /// reason alert carries the NOTIFICATION-ID, and REQ-MOS sends the MO list.
    pub async fn run_notified(
        self: &Arc<Self>,
        account: &Account,
        reason: &str,
        notice: Option<&Notice>,
        url: Option<&str>,
    ) -> Outcome {
        let mut outcome = Outcome {
            status: 200,
            packages: 0,
            commands: 0,
            detail: String::new(),
            error: None,
        };
        let seconds = self.limits.session_seconds;
        let now = Instant::now();
        // As tokio does for a timeout too long to represent: about 30 years.
        let deadline = now
            .checked_add(Duration::from_secs(seconds))
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        let result = tokio::time::timeout_at(
            deadline,
            self.package_loop(account, reason, notice, url, deadline, &mut outcome),
        )
        .await
        .unwrap_or(Err(SessionError::Overtime { seconds }));
        if let Err(error) = result {
            let status = error.status();
            tracing::warn!(srv_id = %account.srv_id, status, "session aborted: {error}");
            outcome.status = status;
            outcome.detail = error.to_string();
            outcome.error = Some(error);
        } else {
            tracing::info!(srv_id = %account.srv_id, packages = outcome.packages, commands = outcome.commands, "session finished");
            outcome.detail = "completed".into();
            self.subs_owed.notify_one();
        }
        outcome
    }

    async fn package_loop(
        self: &Arc<Self>,
        account: &Account,
        reason: &str,
        notice: Option<&Notice>,
        url: Option<&str>,
        deadline: Instant,
        outcome: &mut Outcome,
    ) -> Result<(), SessionError> {
        let on_time = || {
            if Instant::now() >= deadline {
                Err(SessionError::Overtime {
                    seconds: self.limits.session_seconds,
                })
            } else {
                Ok(())
            }
        };
        let client = account
            .client(&self.extra_ca_files, self.limits.max_package_bytes)
            .await
            .map_err(|e| {
                SessionError::Local(format!(
                    "cannot set up the transport for {}: {e}",
                    account.srv_id
                ))
            })?;
        let principal = Principal::Server(account.srv_id.clone());
        let mut url = url.unwrap_or(&account.srv_uri).to_owned();

        let (package1, done) = {
            let (account, principal, reason, notice, url) = (
                account.clone(),
                principal.clone(),
                reason.to_owned(),
                notice.cloned(),
                url.clone(),
            );
            self.blocking(move |e| e.package1(&account, &principal, &reason, notice.as_ref(), &url))
                .await?
        };
        let body = serde_json::to_vec(&package1).map_err(|e| SessionError::Local(e.to_string()))?;
        let mut response = self.post(&client, &url, protocol::INITIATION, body).await?;
        let srv_id = account.srv_id.clone();
        self.blocking(move |e| {
            e.state(|tx| {
                tx.drop_alerts(&done)?;
                tx.record_session(&srv_id)
            })
        })
        .await?;

        let mut ctx = Context {
            engine: self,
            client: &client,
            account,
            principal: &principal,
            deadline,
            shown: false,
        };
        loop {
            if outcome.packages >= self.limits.session_packages {
                return Err(SessionError::Loop {
                    packages: self.limits.session_packages,
                });
            }
            outcome.packages += 1;
            let package2 = Package2::parse(&response.body)
                .map_err(|e| SessionError::Malformed(e.to_string()))?;
            // A Package#2 with END gets no Package#3: nothing to bound or keep.
            let mut package3 = if package2
                .commands
                .iter()
                .any(|c| matches!(c, Ok(protocol::Command::End)))
            {
                None
            } else {
                Some(
                    Package3Body::new(self.limits.package3_bytes, package2.commands.len())
                        .map_err(|e| {
                            SessionError::TooLarge(format!("Package#2 refused unrun: {e}"))
                        })?,
                )
            };
            let mut cut = 0usize;
            ctx.shown = false;
            let mut commands = package2.commands.into_iter().peekable();
            while let Some(command) = commands.next() {
                on_time()?;
                // Commands may be cheap and many: let the runtime's other tasks in.
                tokio::task::yield_now().await;
                outcome.commands += 1;
                let status = match command {
                    Err(e) => {
                        tracing::info!(srv_id = %account.srv_id, "refused command: {e}");
                        Status::code(e.status)
                    }
                    Ok(protocol::Command::End) => Status::code(200),
                    Ok(protocol::Command::Cont { server_uri }) => {
                        match commands::server_uri_fits(&self.limits, &server_uri) {
                            Ok(()) => {
                                url = server_uri;
                                Status::code(200)
                            }
                            Err(e) => {
                                tracing::info!(srv_id = %account.srv_id, "CONT: {e}");
                                Status::code(400)
                            }
                        }
                    }
                    // No result would fit: the GET is not run.
                    Ok(protocol::Command::Get { .. })
                        if package3.as_ref().is_some_and(|p| !p.has_room_for_data()) =>
                    {
                        cut += 1;
                        Status::code(413)
                    }
                    // The GETs that follow run with it, in one store job.
                    Ok(protocol::Command::Get { client_uri }) => {
                        let mut uris = vec![client_uri];
                        while uris.len() < commands::GET_RUN
                            && let Some(Ok(protocol::Command::Get { .. })) = commands.peek()
                        {
                            if let Some(Ok(protocol::Command::Get { client_uri })) = commands.next()
                            {
                                uris.push(client_uri);
                            }
                        }
                        let asked = uris.len();
                        let mut statuses = commands::get_run(&ctx, uris).await;
                        if statuses.len() < asked {
                            // The run stopped at the deadline.
                            on_time()?;
                        }
                        // At most GET_RUN: no truncation.
                        outcome.commands += statuses.len().saturating_sub(1) as u32;
                        let Some(last) = statuses.pop() else {
                            return Err(SessionError::Local("a run of GETs gave no status".into()));
                        };
                        if let Some(package3) = &mut package3 {
                            for status in &statuses {
                                let fit = package3
                                    .push(status)
                                    .map_err(|e| SessionError::Local(e.to_string()))?;
                                cut += usize::from(fit == Fit::Cut);
                            }
                        }
                        last
                    }
                    // The handler ran: a result that does not fit is left out, its sc kept.
                    Ok(command @ protocol::Command::Exec { .. }) => {
                        let mut status = commands::execute(&mut ctx, command).await;
                        if let Some(package3) = &package3
                            && status.data.is_some()
                            && !package3
                                .fits(&status)
                                .map_err(|e| SessionError::Local(e.to_string()))?
                        {
                            status.data = None;
                            cut += 1;
                        }
                        status
                    }
                    Ok(command) => commands::execute(&mut ctx, command).await,
                };
                if let Some(package3) = &mut package3 {
                    let fit = package3
                        .push(&status)
                        .map_err(|e| SessionError::Local(e.to_string()))?;
                    cut += usize::from(fit == Fit::Cut);
                }
            }
            let Some(package3) = package3 else {
                return Ok(());
            };
            if cut > 0 {
                tracing::info!(
                    srv_id = %account.srv_id,
                    "{cut} status(es) did not fit in Package#3 (package3_bytes = {}): \
                     sent without their data, GET results as 413",
                    self.limits.package3_bytes
                );
            }
            on_time()?;
            // The statuses acknowledge the commands: what they changed is on disk first.
            self.store.durable().await.map_err(|err| {
                SessionError::Local(format!("cannot make the changes durable: {err}"))
            })?;
            response = self
                .post(&client, &url, protocol::RESPONSE, package3.finish())
                .await?;
        }
    }

    /// Package#1: the MO list (in a server's first session, or when a notification asked
    /// for it) and the session reason (with a notification's NOTIFICATION-ID), plus alerts
    /// waiting for this server
    /// (those addressed to `url`, or to no particular URI), oldest first while the package
    /// stays within `max_package_bytes`; the others wait for a later session. Returns the
    /// ids of the alerts done with — included, or never deliverable (unreadable, or too
    /// large for any Package#1) — to drop once Package#1 was answered.
    fn package1(
        &self,
        account: &Account,
        principal: &Principal,
        reason: &str,
        notice: Option<&Notice>,
        url: &str,
    ) -> Result<(Package1, Vec<i64>), SessionError> {
        let local = SessionError::Local;
        let first_session = self
            .with_state(|s| s.last_session(&account.srv_id))?
            .is_none();
        let mos = if first_session || notice.is_some_and(|n| n.req_mos) {
            self.auth
                .readable_instances(principal)
                .map_err(|e| local(e.to_string()))?
                .into_iter()
                .map(|(moid, miid)| MoEntry {
                    ddf: None,
                    moid,
                    miid,
                })
                .collect()
        } else {
            vec![]
        };
        let max = self.limits.max_package_bytes;
        let mut package = Package1 {
            mos,
            alert: vec![match notice {
                Some(n) => n.reason_alert(reason),
                None => Alert::of_type(reason),
            }],
        };
        let mut size = json_len(&package)?;
        // The smallest Package#1 an alert could ever go in: the session reason alone.
        let smallest = json_len(&Package1 {
            mos: vec![],
            alert: package.alert.clone(),
        })?;
        let mut done = Vec::new();
        let mut waiting = 0usize;
        for pending in self.with_state(|s| s.pending_alerts(&account.srv_id))? {
            let alert = match serde_json::from_str::<Alert>(&pending.alert_json) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!("dropping unreadable pending alert {}: {e}", pending.id);
                    done.push(pending.id);
                    continue;
                }
            };
            if alert.target_uri.as_deref().is_some_and(|t| t != url) {
                continue;
            }
            // With its comma in the Alert array.
            let bytes = json_len(&alert)? + 1;
            if smallest + bytes > max {
                tracing::error!(
                    srv_id = %account.srv_id,
                    "dropping pending alert {}: its {bytes} bytes never fit in a Package#1 \
                     (max_package_bytes = {max})",
                    pending.id
                );
                done.push(pending.id);
            } else if waiting > 0 || size + bytes > max {
                // Oldest first: once one waits, the later ones wait too.
                waiting += 1;
            } else {
                size += bytes;
                package.alert.push(alert);
                done.push(pending.id);
            }
        }
        if waiting > 0 {
            tracing::info!(
                srv_id = %account.srv_id,
                "{waiting} alert(s) wait for a later session: Package#1 is kept within \
                 max_package_bytes = {max}"
            );
        }
        Ok((package, done))
    }

    async fn post(
        &self,
        client: &HttpClient,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Response, SessionError> {
        let request = Request::post(url, body)
            .with_header("Content-Type", content_type)
            .with_header("Accept", protocol::REQUEST)
            .with_header(protocol::DEVID_HEADER, &self.dev_id);
        let response = client
            .send(request)
            .await
            .map_err(|e| SessionError::from(&e))?;
        if !response.is_success() {
            return Err(SessionError::Http {
                url: url.to_owned(),
                status: response.status,
            });
        }
        let content_type = response.header("Content-Type").unwrap_or_default();
        if media_type(content_type) != protocol::REQUEST {
            return Err(SessionError::ContentType {
                url: url.to_owned(),
                found: content_type.to_owned(),
                expected: protocol::REQUEST,
            });
        }
        Ok(response)
    }

    /// Runs `f` with the engine on a background store thread ([`store::offload`]), so that store
    /// work never holds up the runtime's workers. A panic in `f` goes on in the caller (a
    /// session's containment turns it into a 500).
    pub(super) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Engine) -> Result<T, SessionError> + Send + 'static,
    ) -> Result<T, SessionError> {
        let engine = Arc::clone(self);
        match store::offload(Lane::Background, move || f(&engine)).await {
            Ok(result) => result,
            Err(Offload::Panicked(payload)) => std::panic::resume_unwind(payload),
            Err(e @ Offload::Stopped) => Err(SessionError::Local(e.to_string())),
        }
    }

    /// Runs `f` in a session-state transaction on the store's one writer. Blocking: call it
    /// in [`Engine::blocking`].
    pub(super) fn state<T>(
        &self,
        f: impl FnOnce(&mut crate::store::Txn<'_>) -> Result<T, crate::store::StoreError>,
    ) -> Result<T, SessionError> {
        Ok(self.store.writer().write(f).map(|(t, _)| t)?)
    }

    /// Reads session state. Blocking: call it in [`Engine::blocking`].
    pub(super) fn with_state<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError>,
    ) -> Result<T, SessionError> {
        Ok(f(&self.store.reader())?)
    }

    /// A place among `srv_id`'s `exec_concurrent` asynchronous EXECs, if one is free.
    pub(super) fn exec_slot(self: &Arc<Self>, srv_id: &str) -> Option<ExecSlot> {
        let mut running = self.running_execs();
        let n = running.get(srv_id).copied().unwrap_or(0);
        if n >= self.limits.exec_concurrent {
            return None;
        }
        running.insert(srv_id.to_owned(), n + 1);
        Some(ExecSlot {
            engine: Arc::clone(self),
            srv_id: srv_id.to_owned(),
        })
    }

    fn running_execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.async_execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an asynchronous EXEC: records it, then runs its handler as a task of the
    /// engine's [`Tasks`] holding `slot`; when the handler ends — or is given up at shutdown,
    /// as interrupted — its result alert is queued and the EXEC forgotten in one transaction.
    /// Not started (an error) when it cannot be recorded.
    /// `handler` is called with `data` (see [`exec::Handler::run`]).
    pub(super) async fn start_async_exec(
        self: &Arc<Self>,
        slot: ExecSlot,
        handler: exec::Handler,
        data: String,
        addr: NodeAddr,
        target: String,
    ) -> Result<(), String> {
        let (srv_id, client_uri) = (slot.srv_id.clone(), addr.to_string());
        let record = self
            .blocking(move |e| {
                e.state(|tx| tx.begin_exec(&srv_id, &client_uri, &target))
                    .map(|id| AsyncExec {
                        id,
                        srv_id,
                        client_uri,
                        target_uri: target,
                    })
            })
            .await
            .map_err(|e| format!("cannot record the asynchronous EXEC: {e}"))?;
        let (engine, tasks) = (Arc::clone(self), self.tasks.clone());
        self.tasks.spawn(async move {
            let result = tokio::select! {
                result = handler.run(&addr, &record.srv_id, &data, exec::async_until()) => result,
                // A command is killed as its future is dropped (kill_on_drop); an app's
                // call is dropped, its answer ignored.
                () = tasks.aborted() => exec::interrupted(),
            };
            // Free before the result is queued: whoever hears of it may EXEC again.
            drop(slot);
            let queued = engine
                .blocking(move |e| e.finish_exec(&record, &result))
                .await;
            if let Err(e) = queued {
                tracing::error!(
                    "an asynchronous EXEC's result is not queued; the next start reports it \
                     interrupted: {e}"
                );
            }
        });
        Ok(())
    }

    /// Queues `result` of the recorded asynchronous EXEC `exec` and forgets the EXEC, in one
    /// transaction; then asks for a follow-up session to deliver it.
    fn finish_exec(&self, exec: &AsyncExec, result: &exec::ExecResult) -> Result<(), SessionError> {
        let alert = exec::result_alert(&exec.client_uri, &exec.target_uri, result);
        let json = serde_json::to_string(&alert).map_err(|e| SessionError::Local(e.to_string()))?;
        let keep = self.limits.pending_alerts_per_server;
        let dropped = self.state(|tx| tx.finish_exec(exec.id, &exec.srv_id, &json, keep))?;
        self.log_dropped(&exec.srv_id, dropped);
        self.follow_up(FollowUp::Session {
            srv_id: exec.srv_id.clone(),
            url: Some(exec.target_uri.clone()),
        });
        Ok(())
    }

    pub(super) fn log_dropped(&self, srv_id: &str, dropped: usize) {
        if dropped > 0 {
            tracing::warn!(
                srv_id = %srv_id,
                "dropped the {dropped} oldest undelivered alert(s): more than \
                 pending_alerts_per_server = {} were waiting",
                self.limits.pending_alerts_per_server
            );
        }
    }

    /// Hands a `SHOW` URL on; whether anyone took it is not the session's concern.
    pub(super) fn show(&self, srv_id: &str, url: &str) {
        self.follow_up(FollowUp::Show {
            srv_id: srv_id.to_owned(),
            url: url.to_owned(),
        });
    }

    /// Queues a follow-up request for the scheduler; when the queue is full (see
    /// [`FOLLOW_UP_QUEUE`]) or nobody listens, the request is dropped with a log line.
    fn follow_up(&self, request: FollowUp) {
        if let Err(e) = self.followups.try_send(request) {
            let (why, request) = match e {
                mpsc::error::TrySendError::Full(r) => ("the follow-up queue is full", r),
                mpsc::error::TrySendError::Closed(r) => ("nobody takes follow-ups", r),
            };
            match request {
                FollowUp::Session { srv_id, .. } => tracing::warn!(
                    srv_id = %srv_id,
                    "no follow-up session: {why}; the alert waits for the next session"
                ),
                FollowUp::Show { srv_id, url } => {
                    tracing::warn!(srv_id = %srv_id, "SHOW {url} not announced: {why}")
                }
            }
        }
    }

    /// `DEFAULT`: when a local app asks for an MO of `moid` that is not in the tree, fetch
    /// it from the source a server named (an HGET on that server's behalf, reported to no
    /// server). Returns whether anything was fetched.
    pub async fn fetch_default(self: &Arc<Self>, moid: &str) -> Result<bool, String> {
        let wanted = moid.to_owned();
        let (source, accounts) = self
            .blocking(move |e| {
                let source = e.with_state(|s| s.default_source(&wanted))?;
                let accounts = super::account::load_all(&e.auth)
                    .map_err(|err| SessionError::Local(err.to_string()))?;
                Ok((source, accounts))
            })
            .await
            .map_err(|e| e.to_string())?;
        let Some((srv_id, server_uri)) = source else {
            return Ok(false);
        };
        let account = accounts
            .iter()
            .find(|a| a.srv_id == srv_id)
            .ok_or_else(|| {
                format!(
                    "DEFAULT source of {moid} belongs to {srv_id}, which has no account any more"
                )
            })?;
        if !account.may_manage(moid) {
            tracing::warn!(srv_id = %srv_id, "not fetching {moid} from its DEFAULT source: the server may no longer manage it");
            return Ok(false);
        }
        let client = account
            .client(&self.extra_ca_files, self.limits.max_package_bytes)
            .await
            .map_err(|e| e.to_string())?;
        let until = Instant::now() + Duration::from_secs(self.limits.session_seconds);
        let written =
            super::commands::fetch_into_tree(self, &client, account, &server_uri, None, until)
                .await
                .map_err(|e| e.to_string())?;
        tracing::info!(srv_id = %srv_id, "fetched {moid} from its DEFAULT source {server_uri}: {} item(s)", written.len());
        Ok(!written.is_empty())
    }

    /// Keeps an alert for `srv_id` and asks for a follow-up session to deliver it. Beyond
    /// `pending_alerts_per_server` waiting alerts, the oldest are dropped (and logged).
    /// Blocking: async code runs it off the runtime's workers.
    pub fn queue_alert(&self, srv_id: &str, alert: &Alert) {
        let json = match serde_json::to_string(alert) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("cannot serialize an alert: {e}");
                return;
            }
        };
        if let Err(e) = self.keep_alert(srv_id, &json) {
            tracing::error!("cannot persist an alert for {srv_id}: {e}");
            return;
        }
        self.follow_up(FollowUp::Session {
            srv_id: srv_id.to_owned(),
            url: alert.target_uri.clone(),
        });
    }
}

/// Runs `session` (a future yielding its [`Outcome`]) as a task of `tasks`, so that a panic
/// inside it ends that session only: it becomes an outcome with status `500`, logged, and
/// the caller goes on to release what the session held. When `tasks` aborts (shutdown past
/// its drain time) the session is cut off where it is, with status `500`.
pub async fn contain(
    tasks: &Tasks,
    session: impl Future<Output = Outcome> + Send + 'static,
) -> Outcome {
    let mut handle = tasks.spawn(session);
    let joined = tokio::select! {
        joined = &mut handle => joined,
        () = tasks.aborted() => {
            handle.abort();
            match handle.await {
                Err(e) if e.is_cancelled() => {
                    tracing::warn!("omadmd is stopping: a session was cut off");
                    return Outcome::failed(SessionError::Local(
                        "omadmd stopped: the session was cut off".to_owned(),
                    ));
                }
                other => other,
            }
        }
    };
    match joined {
        Ok(outcome) => outcome,
        Err(e) => {
            let why = if e.is_panic() {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                format!("the session panicked: {message}")
            } else {
                "the session task was cancelled".to_owned()
            };
            tracing::error!("{why}");
            Outcome::failed(SessionError::Local(why))
        }
    }
}

/// The length of `value` serialized.
fn json_len(value: &impl serde::Serialize) -> Result<usize, SessionError> {
    serde_json::to_vec(value)
        .map(|v| v.len())
        .map_err(|e| SessionError::Local(e.to_string()))
}

/// `application/x; charset=...` → `application/x`.
pub(super) fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_a_session_becomes_a_500_outcome() {
        let tasks = Tasks::new();
        let outcome = contain(&tasks, async { panic!("boom in a command") }).await;
        assert_eq!(outcome.status, 500);
        assert!(outcome.detail.contains("boom in a command"), "{outcome:?}");
        let done = Outcome {
            status: 200,
            packages: 2,
            commands: 3,
            detail: "completed".into(),
            error: None,
        };
        let copy = done.clone();
        assert_eq!(contain(&tasks, async move { copy }).await, done);

        // Polled in order: the session is running when the shutdown starts.
        let (outcome, drained) = tokio::join!(
            contain(&tasks, std::future::pending()),
            tasks.shutdown(Duration::ZERO, Duration::from_secs(60))
        );
        assert_eq!(drained, crate::session::tasks::Drained::Aborted);
        assert_eq!(outcome.status, 500);
        assert!(outcome.detail.contains("cut off"), "{outcome:?}");
    }

    #[test]
    fn default_limits_are_the_configuration_defaults() {
        let l = Limits::default();
        assert_eq!(l.max_package_bytes, 8 * 1024 * 1024);
        assert_eq!(l.session_packages, 200);
        assert_eq!(l.session_seconds, 900);
        assert_eq!(l.package3_bytes, 8 * 1024 * 1024);
        assert_eq!(l.reply_bytes, 16 * 1024 * 1024);
        assert_eq!(
            (
                l.subscriptions_per_server,
                l.exec_concurrent,
                l.pending_alerts_per_server,
                l.server_uri_bytes
            ),
            (64, 4, 64, 2048)
        );
    }
}
