//! The one verifier every notification channel feeds (PROTOCOL.md §5, ARCHITECTURE.md §5).
//! A notification passes only if, in this order:
//!
//! 1. it is a Package#0 ([`Package0::parse`]);
//! 2. a DM account has its SERVER-ID as `SrvID`;
//! 3. its digest agrees with the account's `Auth/Noti` credentials — `Secret` (No-Get, read
//!    as the session engine reads secrets) and `Data` (empty when unset), `Type` absent or
//!    `SHA256`: a wrong digest, a digest when the account has no `Secret`, or none when it
//!    has one are all refused;
//! 4. its TIMESTAMP, if any, is within `[notification] timestamp_window_s` of the device's
//!    clock, either way;
//! 5. its server has had fewer than `rate_per_minute` notifications pass in the last minute
//!    (only authenticated ones count: forgeries cannot use up a server's rate);
//! 6. its NOTIFICATION-ID, if any, was not seen from that server while it was kept: ids are
//!    recorded in the store (surviving restarts) until the window has passed since the later
//!    of their arrival and their TIMESTAMP — by then the TIMESTAMP check refuses a replay —
//!    and the 2-byte ids may wrap after that.
//!
//! One that fails is ignored: logged with the reason, and counted for its server
//! ([`IgnoredCounts`]) when it named an account. One that passes starts a session through the
//! [`Scheduler`] with `ServerInitiatedMgmt` carrying its [`Notice`]; when it names a
//! bootstrap-only account, that account's bootstrap is fetched again
//! ([`ServerBootstrap::notified`], a server-initiated bootstrap).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use super::bearer::{self, Bearer};
use super::package0::{ConType, Credentials, Notification, Package0, Package0Error};
use super::{IgnoredCounts, Inbound, Via};
use crate::authority::{AccessError, Authority};
use crate::bootstrap::ServerBootstrap;
use crate::config::NotificationConfig;
use crate::network::NetworkState;
use crate::session::account::{self, Account};
use crate::session::{Notice, Scheduler, Start, Tasks};
use crate::store::{self, Lane, Pool, StoreError};
use crate::tree::builtin::DMACC;
use crate::tree::node::Node;
use crate::tree::uri::NodeAddr;
use crate::tree::value::Value;

/// The span the rate limit counts over.
const RATE_SPAN: Duration = Duration::from_secs(60);

/// Most ignored notifications logged one by one per [`RATE_SPAN`]; beyond, they are counted
/// and the count logged once the span is over, so that anyone able to send datagrams cannot
/// flood the journal (every one is still counted per server).
const LOGGED_PER_SPAN: u32 = 20;

/// The verifier's settings, from `[notification]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `timestamp_window_s`.
    pub timestamp_window_s: u64,
    /// `rate_per_minute`.
    pub rate_per_minute: u32,
}

impl From<&NotificationConfig> for Settings {
    fn from(config: &NotificationConfig) -> Settings {
        Settings {
            timestamp_window_s: config.timestamp_window_s,
            rate_per_minute: config.rate_per_minute,
        }
    }
}

/// Why a notification was ignored.
#[derive(Debug, thiserror::Error)]
pub enum Ignored {
    #[error("not a Package#0: {0}")]
    Malformed(#[from] Package0Error),
    #[error("no DM account has SrvID {0:?}")]
    UnknownServer(String),
    #[error("its DM account cannot be used: {0}")]
    Account(String),
    #[error("Auth/Noti/Type {0:?} is not supported (SHA256 is)")]
    AuthType(String),
    #[error("the digest is wrong")]
    WrongDigest,
    #[error("it carries a digest, but the DM account has no Auth/Noti/Secret")]
    UnexpectedDigest,
    #[error("it carries no digest, but the DM account has Auth/Noti credentials")]
    MissingDigest,
    #[error(
        "its TIMESTAMP {timestamp} is {skew} s from the device's clock ({now}); \
         [notification] timestamp_window_s is {window}"
    )]
    Stale {
        timestamp: u64,
        now: u64,
        skew: u64,
        window: u64,
    },
    #[error(
        "NOTIFICATION-ID {0} was seen already (ids are kept for [notification] \
         timestamp_window_s)"
    )]
    Duplicate(u16),
    #[error("more than {0} notifications in a minute ([notification] rate_per_minute)")]
    Rate(u32),
    #[error("the store: {0}")]
    Store(String),
}

/// A notification that was ignored, and the server it named when that has an account.
#[derive(Debug)]
pub struct Rejected {
    pub srv_id: Option<String>,
    pub reason: Ignored,
}

/// What a notification that passed asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub notification: Notification,
    pub target: Target,
}

/// What a verified notification starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A DM session with its server.
    Session,
    /// The bootstrap of the bootstrap-only account `miid`.
    Bootstrap { miid: String },
}

/// When a notification is checked.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// POSIX seconds, for TIMESTAMP and the seen ids.
    pub posix: u64,
    /// For the rate limit.
    pub instant: Instant,
}

impl Now {
    pub fn current() -> Now {
        Now {
            posix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            instant: Instant::now(),
        }
    }
}

/// An account's `Auth/Noti` credentials.
enum Noti {
    None,
    Sha256 { secret: Vec<u8>, data: Vec<u8> },
    Unsupported(String),
}

/// The DM account a notification names, as the verifier needs it.
struct Named {
    miid: String,
    bootstrap_only: bool,
    noti: Noti,
}

/// Checks notifications and starts what passes; see the module documentation.
pub struct Verifier {
    auth: Arc<Authority>,
    store: Arc<Pool>,
    settings: Settings,
    ignored: Arc<IgnoredCounts>,
    /// Ignored notifications logged one by one in this span.
    logged: LogBudget,
    /// When each server's notifications passed, within the last [`RATE_SPAN`].
    passed: HashMap<String, VecDeque<Instant>>,
}

/// Where verified notifications go.
pub struct Dispatch {
    pub scheduler: Arc<Scheduler>,
    pub bootstrap: Arc<ServerBootstrap>,
    /// Owns the server-initiated bootstraps and the sessions waiting for a bearer.
    pub tasks: Tasks,
    /// The device's network, for PREFERRED-CON-TYPE (`None`: not followed).
    pub network: Option<watch::Receiver<NetworkState>>,
    /// `[notification] bearer_timeout_s`.
    pub bearer_timeout: Duration,
}

impl Verifier {
    /// A verifier reading accounts through `auth`, keeping seen ids in `store` (the pool
    /// behind `auth`), counting what it ignores in `ignored`.
    pub fn new(
        auth: Arc<Authority>,
        store: Arc<Pool>,
        settings: Settings,
        ignored: Arc<IgnoredCounts>,
    ) -> Verifier {
        Verifier {
            auth,
            store,
            settings,
            ignored,
            passed: HashMap::new(),
            logged: LogBudget::default(),
        }
    }

    /// Verifies every payload `inbound` brings, one at a time, and starts what passes,
    /// until the channels are gone or `to.tasks` stops.
    pub async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>, to: Dispatch) {
        loop {
            let next = tokio::select! {
                biased;
                () = to.tasks.stopped() => break,
                next = inbound.recv() => next,
            };
            let Some(Inbound { payload, via }) = next else {
                break;
            };
            match self.check(&payload, Now::current()).await {
                Ok(verified) => dispatch(&to, verified, via).await,
                Err(rejected) => self.ignore(rejected, via),
            }
        }
    }

    /// Checks one payload at `now`; see the module documentation for the order.
    pub async fn check(&mut self, payload: &[u8], now: Now) -> Result<Verified, Rejected> {
        let anonymous = |reason| Rejected {
            srv_id: None,
            reason,
        };
        let package = Package0::parse(payload).map_err(|e| anonymous(e.into()))?;
        let srv_id = package.notification.server_id.clone();
        let named = {
            let (auth, srv_id) = (Arc::clone(&self.auth), srv_id.clone());
            let unread =
                |e: String| anonymous(Ignored::Store(format!("reading the DM accounts: {e}")));
            store::offload(Lane::Background, move || find(&auth, &srv_id))
                .await
                .map_err(|e| unread(e.to_string()))?
                .map_err(|e| unread(e.to_string()))?
        };
        let named = match named {
            Some(Ok(named)) => named,
            Some(Err(reason)) => return Err(anonymous(Ignored::Account(reason))),
            None => return Err(anonymous(Ignored::UnknownServer(srv_id))),
        };
        let refuse = |reason| Rejected {
            srv_id: Some(srv_id.clone()),
            reason,
        };
        match (&named.noti, &package.notification.digest) {
            (Noti::Unsupported(kind), _) => return Err(refuse(Ignored::AuthType(kind.clone()))),
            (Noti::None, Some(_)) => return Err(refuse(Ignored::UnexpectedDigest)),
            (Noti::None, None) => {}
            (Noti::Sha256 { .. }, None) => return Err(refuse(Ignored::MissingDigest)),
            (Noti::Sha256 { secret, data }, Some(_)) => {
                if !package.digest_matches(Credentials { secret, data }) {
                    return Err(refuse(Ignored::WrongDigest));
                }
            }
        }
        let window = self.settings.timestamp_window_s;
        if let Some(timestamp) = package.notification.timestamp {
            let skew = timestamp.abs_diff(now.posix);
            if skew > window {
                return Err(refuse(Ignored::Stale {
                    timestamp,
                    now: now.posix,
                    skew,
                    window,
                }));
            }
        }
        let rate = self.settings.rate_per_minute;
        if !self.room(&srv_id, now.instant) {
            return Err(refuse(Ignored::Rate(rate)));
        }
        if let Some(id) = package.notification.notification_id {
            let seen_at = package.notification.timestamp.unwrap_or(0).max(now.posix);
            let expires = seen_at.saturating_add(window);
            let (store, srv) = (Arc::clone(&self.store), srv_id.clone());
            let noted = store::offload(Lane::Background, move || {
                store
                    .writer()
                    .write(|tx| tx.note_notification_id(&srv, id, posix(now.posix), posix(expires)))
            })
            .await
            .map_err(|e| refuse(Ignored::Store(format!("checking the seen ids: {e}"))))?
            .map_err(|e: StoreError| {
                refuse(Ignored::Store(format!("checking the seen ids: {e}")))
            })?;
            if !noted.0 {
                return Err(refuse(Ignored::Duplicate(id)));
            }
        }
        self.passed
            .entry(srv_id.clone())
            .or_default()
            .push_back(now.instant);
        Ok(Verified {
            notification: package.notification,
            target: if named.bootstrap_only {
                Target::Bootstrap { miid: named.miid }
            } else {
                Target::Session
            },
        })
    }

    /// Whether `srv_id` may have another notification pass at `now`; forgets passes older
    /// than [`RATE_SPAN`].
    fn room(&mut self, srv_id: &str, now: Instant) -> bool {
        let Some(passed) = self.passed.get_mut(srv_id) else {
            return true;
        };
        while passed
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_SPAN)
        {
            passed.pop_front();
        }
        if passed.is_empty() {
            self.passed.remove(srv_id);
            return true;
        }
        passed.len() < self.settings.rate_per_minute as usize
    }

    /// Logs an ignored notification with its reason, and counts it on its server.
    fn ignore(&mut self, rejected: Rejected, via: Via) {
        let Rejected { srv_id, reason } = rejected;
        if let Some(srv_id) = &srv_id {
            self.ignored.count(srv_id);
        }
        let (log, unlogged) = self.logged.admit(Instant::now());
        if unlogged > 0 {
            tracing::warn!(
                "{unlogged} more notification(s) ignored in the last minute, not logged one by one"
            );
        }
        if !log {
            return;
        }
        match &srv_id {
            Some(srv_id) => tracing::warn!(
                srv_id = %srv_id,
                via = via.as_str(),
                "notification ignored: {reason}"
            ),
            None => tracing::warn!(via = via.as_str(), "notification ignored: {reason}"),
        }
    }
}

/// How many ignored notifications were logged in the current span, and how many not.
#[derive(Debug, Default)]
struct LogBudget {
    since: Option<Instant>,
    logged: u32,
    unlogged: u64,
}

impl LogBudget {
    /// Whether an ignored notification at `now` is logged, and how many of the span that
    /// just ended were not (to log once, now).
    fn admit(&mut self, now: Instant) -> (bool, u64) {
        let mut ended = 0;
        if self
            .since
            .is_none_or(|s| now.duration_since(s) >= RATE_SPAN)
        {
            ended = std::mem::take(&mut self.unlogged);
            self.since = Some(now);
            self.logged = 0;
        }
        if self.logged < LOGGED_PER_SPAN {
            self.logged += 1;
            (true, ended)
        } else {
            self.unlogged += 1;
            (false, ended)
        }
    }
}

/// Starts what `verified` asks for.
async fn dispatch(to: &Dispatch, verified: Verified, via: Via) {
    let Verified {
        notification,
        target,
    } = verified;
    let srv_id = notification.server_id;
    let id = notification
        .notification_id
        .map_or_else(|| "none".to_owned(), |id| id.to_string());
    match target {
        Target::Session => {
            let notice = Notice {
                notification_id: notification.notification_id,
                req_mos: notification.req_mos,
                con_type: notification.con_type,
            };
            if notice.con_type != ConType::Any {
                // Held until its bearer is up, without holding up other notifications.
                let (scheduler, network) = (to.scheduler.clone(), to.network.clone());
                let timeout = to.bearer_timeout;
                to.tasks.spawn(async move {
                    let con = notice.con_type;
                    match bearer::wait_for(network, con, timeout).await {
                        Bearer::Up | Bearer::Unknown => {}
                        Bearer::TimedOut => tracing::info!(
                            srv_id = %srv_id,
                            "notification {id}: no {con:?} bearer came up within {}s; the \
                             session runs on the bearer that is up",
                            timeout.as_secs()
                        ),
                    }
                    start(&scheduler, &srv_id, notice, &id, via).await;
                });
                return;
            }
            start(&to.scheduler, &srv_id, notice, &id, via).await;
        }
        Target::Bootstrap { miid } => {
            tracing::info!(
                srv_id = %srv_id,
                via = via.as_str(),
                "notification {id} accepted: server-initiated bootstrap of {DMACC}/{miid}/"
            );
            let bootstrap = Arc::clone(&to.bootstrap);
            to.tasks
                .spawn(async move { bootstrap.notified(&miid).await });
        }
    }
}

/// Starts (or queues) the session a verified notification asks for, and logs which.
async fn start(scheduler: &Arc<Scheduler>, srv_id: &str, notice: Notice, id: &str, via: Via) {
    match scheduler.notified(srv_id, notice).await {
        Ok(Start::Now { session_id, .. }) => tracing::info!(
            srv_id = %srv_id,
            via = via.as_str(),
            "notification {id} accepted: session {session_id}"
        ),
        Ok(Start::Queued { behind, .. }) => tracing::info!(
            srv_id = %srv_id,
            via = via.as_str(),
            "notification {id} accepted: session queued behind {behind}"
        ),
        Err(e) => tracing::warn!(
            srv_id = %srv_id,
            via = via.as_str(),
            "notification {id} accepted, but no session: {e}"
        ),
    }
}

/// The DM account whose `SrvID` is `srv_id`: `None` when there is none, an error text when
/// it cannot be used.
fn find(auth: &Authority, srv_id: &str) -> Result<Option<Result<Named, String>>, AccessError> {
    for miid in auth.instances_of(DMACC)? {
        let node = auth.read_internal(&NodeAddr::root(DMACC, &miid))?;
        if leaf(&node, "SrvID").map(|v| v.to_text()).as_deref() != Some(srv_id) {
            continue;
        }
        let account = match Account::from_node(&miid, &node) {
            Ok(a) => a,
            Err(e) => return Ok(Some(Err(format!("{DMACC}/{miid}/: {e}")))),
        };
        let noti = match (
            bytes(&node, "Auth/Noti/Secret"),
            text(&node, "Auth/Noti/Type"),
        ) {
            (None, _) => Noti::None,
            (Some(_), Some(kind))
                if !kind.eq_ignore_ascii_case("SHA256")
                    && !kind.eq_ignore_ascii_case("SHA-256") =>
            {
                Noti::Unsupported(kind)
            }
            (Some(secret), _) => Noti::Sha256 {
                secret,
                data: bytes(&node, "Auth/Noti/Data").unwrap_or_default(),
            },
        };
        return Ok(Some(Ok(Named {
            bootstrap_only: account::bootstrap_only(&node, &account),
            miid,
            noti,
        })));
    }
    Ok(None)
}

fn leaf<'a>(node: &'a Node, path: &str) -> Option<&'a Value> {
    match node.get(path) {
        Some(Node::Leaf(v)) => Some(v),
        _ => None,
    }
}

/// A leaf's text, when set and not empty.
fn text(node: &Node, path: &str) -> Option<String> {
    leaf(node, path)
        .map(Value::to_text)
        .filter(|t| !t.is_empty())
}

/// A leaf's bytes (binary formats as they are, others as their text), when not empty.
fn bytes(node: &Node, path: &str) -> Option<Vec<u8>> {
    let bytes = match leaf(node, path)? {
        Value::Bin(b) | Value::B64(b) => b.clone(),
        other => other.to_text().into_bytes(),
    };
    Some(bytes).filter(|b| !b.is_empty())
}

/// POSIX seconds as the store keeps them.
fn posix(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
