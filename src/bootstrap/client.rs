//! Client-initiated bootstrap (PROTOCOL.md §10, §13): a DM account naming a bootstrap server
//! in `Auth/Bootstrap/ServerURI` makes omadmd fetch its DM account(s) — and any other MOs the
//! bootstrap carries — from that server, and apply them as the admin, only when they come
//! from that server, authenticated.
//!
//! - **The exchange**: `GET <ServerURI>` over HTTPS with `Accept:
//!   application/vnd.oma.dm.mo+json` and `OMADM-DevID: <DevID>`. The server is trusted as
//!   the account's own server is: `Auth/Bootstrap/ServerPubKey` when set (the DER X.509
//!   certificate of the bootstrap server, or of its CA: pinned or anchoring, as `Ext/CACert`
//!   is), else the account's `Ext/CACert`, else the system trust store plus `[tls]
//!   extra_ca_files`. The client authenticates as it does to the account's server: the
//!   TLS client certificate of `Ext/ClientCert`/`Ext/ClientKey`, else HTTP Basic with
//!   `Auth/Trsp/Data`/`Auth/Trsp/Secret`. `Auth/Bootstrap/SecMode` is absent or `TLS`
//!   (anything else is refused: no other mode is implemented); `ClientPubKey` and
//!   `ClientSecretKey` are kept but not used.
//! - **The answer**: `200` with an MO serialization array (PROTOCOL.md §7) of at most
//!   [`MAX_RESPONSE_BYTES`] (1 MiB), as `application/vnd.oma.dm.mo+json` or
//!   `application/json` (or no Content-Type). Its items follow the rules of bootstrap files
//!   (each names its instance's MIID, instance roots are checked against their DDF, DevInfo
//!   and SessionInfo are omadmd's own) plus one: an item may create an instance, or rewrite
//!   the bootstrap account itself, but never touch another existing instance (another
//!   server's account, an app's MO). Anything else — another status, another type, a body
//!   that is not such an array, one bad item, an empty array — refuses the answer whole:
//!   each problem is logged as `ServerURI:line: reason`, and nothing of it is applied.
//! - **Applying**: through [`Authority::import_items`] as [`Principal::Admin`], in one
//!   transaction, so every access rule and limit holds; then the bootstrap is recorded with
//!   the factory files' records (key `<DMAcc MOID>/<MIID>/`, digest: the SHA-256 of the
//!   `ServerURI` the account holds afterwards), so it is done once per account and
//!   `ServerURI`. A factory reset forgets the records: the bootstrap runs again.
//! - **When**: at start, and whenever a DM account changes (the daemon wakes
//!   [`ServerBootstrap::run`]); accounts are handled one after the other. A failure to
//!   reach the server (no connection, no answer in time, HTTP 5xx, 408 or 429) or of the
//!   store is retried with backoff: 1 minute, doubling up to an hour, ±10%. Any other
//!   failure (TLS, credentials refused, a refused answer) is logged and not retried until
//!   the account's bootstrap settings change or omadmd restarts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{FileError, parse};
use crate::authority::{AccessError, Authority, Principal};
use crate::protocol::{DEVID_HEADER, MO_JSON};
use crate::session::account::Account;
use crate::session::tasks::Tasks;
use crate::store::{self, Lane, Pool, StoreError};
use crate::transport::{ClientSettings, HttpClient, Request, Response, TransportError, Trust};
use crate::tree::builtin::DMACC;
use crate::tree::json::MoItem;
use crate::tree::mo_type::MoType;
use crate::tree::node::Node;
use crate::tree::uri::NodeAddr;
use crate::tree::value::Value;

/// Largest bootstrap answer read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The first delay before a failed bootstrap is tried again; it doubles with each failure.
const BACKOFF_FIRST: Duration = Duration::from_secs(60);

/// The longest delay between tries.
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// The longest the loop sleeps with nothing to do before it looks at the accounts again.
const RECHECK: Duration = Duration::from_secs(3600);

/// Fetches and applies the bootstraps of the DM accounts that name a bootstrap server; see
/// the module documentation.
pub struct ServerBootstrap {
    auth: Arc<Authority>,
    store: Arc<Pool>,
    dev_id: String,
    extra_ca_files: Vec<PathBuf>,
}

/// A DM account whose bootstrap is not done yet, with what the exchange needs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    miid: String,
    server_uri: String,
    settings: ClientSettings,
}

/// Why one bootstrap did not happen.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The account's bootstrap settings cannot be used.
    #[error("{0}")]
    Settings(String),
    /// No answer, or none usable (TLS, size, malformed HTTP).
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// An HTTP status other than 200.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// The answer is refused whole; one line per problem.
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
    /// The store failed (not the server's fault).
    #[error("the store: {0}")]
    Store(String),
}

impl Failure {
    /// Whether trying again later may succeed without anything changing here.
    fn retried(&self) -> bool {
        match self {
            Failure::Transport(e) => {
                matches!(
                    e,
                    TransportError::Connect { .. } | TransportError::Timeout(_)
                )
            }
            Failure::Status(status) => matches!(status, 408 | 429 | 500..=599),
            Failure::Store(_) => true,
            Failure::Settings(_) | Failure::Refused(_) => false,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e.to_string())
    }
}

/// A DM account naming a bootstrap server, by MIID: what its bootstrap needs, or why its
/// settings cannot be used.
type Found = (String, Result<Pending, String>);

/// What the loop remembers of an account's failed tries.
struct Tries {
    /// The settings they were made with (or why there were none): changed settings start
    /// afresh.
    seen: Result<Pending, String>,
    failures: u32,
    /// When to try again; `None`: not until the settings change.
    next: Option<Instant>,
}

impl ServerBootstrap {
    /// Bootstraps written through `auth`, recorded in `store` (the pool behind `auth`);
    /// `dev_id` goes to the servers, `extra_ca_files` is `[tls] extra_ca_files`.
    pub fn new(
        auth: Arc<Authority>,
        store: Arc<Pool>,
        dev_id: String,
        extra_ca_files: Vec<PathBuf>,
    ) -> ServerBootstrap {
        ServerBootstrap {
            auth,
            store,
            dev_id,
            extra_ca_files,
        }
    }

    /// Runs the bootstraps that are due now, then whenever `accounts_changed` is notified or
    /// a retry is due, until `tasks` stops; an exchange in flight is dropped when `tasks`
    /// aborts.
    pub async fn run(self: Arc<Self>, accounts_changed: Arc<Notify>, tasks: Tasks) {
        let mut tries = HashMap::new();
        while !tasks.stopping() {
            let wait = tokio::select! {
                wait = self.pass(&mut tries) => wait,
                () = tasks.aborted() => break,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = accounts_changed.notified() => {}
                () = tasks.stopped() => {}
            }
        }
    }

    /// One look at the accounts: runs each pending bootstrap not waiting for a retry.
    /// Returns how long until the next retry is due.
    async fn pass(&self, tries: &mut HashMap<String, Tries>) -> Duration {
        let (auth, store, extra) = (
            self.auth.clone(),
            self.store.clone(),
            self.extra_ca_files.clone(),
        );
        let found =
            match store::offload(Lane::Background, move || pending(&auth, &store, &extra)).await {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    tracing::error!("bootstrap: cannot read the DM accounts: {e}");
                    return BACKOFF_FIRST;
                }
                Err(e) => {
                    tracing::error!("bootstrap: cannot read the DM accounts: {e}");
                    return BACKOFF_FIRST;
                }
            };
        tries.retain(|miid, _| found.iter().any(|(m, _)| m == miid));
        let mut wait = RECHECK;
        for (miid, seen) in found {
            let known = tries.get(&miid).filter(|t| t.seen == seen);
            let pending = match seen {
                Ok(p) => p,
                Err(reason) => {
                    if known.is_none() {
                        tracing::warn!("bootstrap of DM account {DMACC}/{miid}/: {reason}");
                        tries.insert(
                            miid,
                            Tries {
                                seen: Err(reason),
                                failures: 1,
                                next: None,
                            },
                        );
                    }
                    continue;
                }
            };
            let now = Instant::now();
            match known {
                Some(t) => match t.next {
                    None => continue,
                    Some(at) if at > now => {
                        wait = wait.min(at - now);
                        continue;
                    }
                    Some(_) => {}
                },
                None => {
                    tries.remove(&miid);
                }
            }
            let source = format!(
                "bootstrap from {} (DM account {DMACC}/{miid}/)",
                pending.server_uri
            );
            match self.bootstrap(&pending).await {
                Ok(written) => {
                    tries.remove(&miid);
                    tracing::info!(
                        "{source} applied: {}",
                        written
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                Err(e) => {
                    let failures = tries.get(&miid).map_or(0, |t| t.failures) + 1;
                    let next = e.retried().then(|| backoff(failures, random_unit()));
                    log_failure(&source, &e, next);
                    if let Some(delay) = next {
                        wait = wait.min(delay);
                    }
                    tries.insert(
                        miid,
                        Tries {
                            seen: Ok(pending),
                            failures,
                            next: next.map(|d| Instant::now() + d),
                        },
                    );
                }
            }
        }
        wait
    }

    /// One bootstrap: the exchange, then the answer applied and recorded.
    async fn bootstrap(&self, pending: &Pending) -> Result<Vec<NodeAddr>, Failure> {
        let settings = pending.settings.clone();
        // Building the client may read the system trust store's files.
        let client = store::offload(Lane::Background, move || HttpClient::new(settings))
            .await
            .map_err(|e| Failure::Settings(format!("building the HTTPS client: {e}")))??;
        let request = Request::get(&pending.server_uri)
            .with_header("Accept", MO_JSON)
            .with_header(DEVID_HEADER, &self.dev_id);
        let response = client.send(request).await?;
        let (auth, store, pending) = (self.auth.clone(), self.store.clone(), pending.clone());
        store::offload(Lane::Background, move || {
            apply(&auth, &store, &pending, &response)
        })
        .await
        .map_err(|e| Failure::Store(e.to_string()))?
    }

    /// A server-initiated bootstrap: a verified notification named the bootstrap-only
    /// account `miid` (see [`crate::notification::verify`]). Fetches and applies its
    /// bootstrap now, as [`ServerBootstrap::run`] does, whether or not it was done before,
    /// and logs the outcome; a failure is not retried (the server may notify again).
    pub async fn notified(&self, miid: &str) {
        let (auth, extra, at) = (
            self.auth.clone(),
            self.extra_ca_files.clone(),
            miid.to_owned(),
        );
        let found = store::offload(Lane::Background, move || {
            let node = auth.read_internal(&NodeAddr::root(DMACC, &at))?;
            let Some(server_uri) = text(&node, "Auth/Bootstrap/ServerURI") else {
                return Ok(Err("it names no Auth/Bootstrap/ServerURI".to_owned()));
            };
            Ok::<_, AccessError>(settings(&at, &node, &extra).map(|settings| Pending {
                miid: at.clone(),
                server_uri,
                settings,
            }))
        })
        .await;
        let source = format!("server-initiated bootstrap of DM account {DMACC}/{miid}/");
        let pending = match found {
            Ok(Ok(Ok(pending))) => pending,
            Ok(Ok(Err(reason))) => return tracing::warn!("{source}: {reason}"),
            Ok(Err(e)) => return tracing::error!("{source}: cannot read the account: {e}"),
            Err(e) => return tracing::error!("{source}: cannot read the account: {e}"),
        };
        let source = format!("{source} from {}", pending.server_uri);
        match self.bootstrap(&pending).await {
            Ok(written) => tracing::info!(
                "{source} applied: {}",
                written
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(Failure::Refused(problems)) => {
                for p in problems {
                    tracing::warn!("{p}");
                }
                tracing::warn!("{source} refused: nothing of it applied");
            }
            Err(e) => tracing::warn!("{source} failed: {e}"),
        }
    }
}

/// Every DM account naming a bootstrap server whose bootstrap is not recorded as done.
fn pending(
    auth: &Authority,
    store: &Pool,
    extra_ca_files: &[PathBuf],
) -> Result<Vec<Found>, AccessError> {
    let mut out = Vec::new();
    for miid in auth.instances_of(DMACC)? {
        let node = auth.read_internal(&NodeAddr::root(DMACC, &miid))?;
        let Some(server_uri) = text(&node, "Auth/Bootstrap/ServerURI") else {
            continue;
        };
        let done = store.reader().bootstrap_digest(&record_key(&miid))?;
        if done.as_deref() == Some(digest(&server_uri).as_str()) {
            continue;
        }
        let account = settings(&miid, &node, extra_ca_files).map(|settings| Pending {
            miid: miid.clone(),
            server_uri,
            settings,
        });
        out.push((miid, account));
    }
    Ok(out)
}

/// The transport settings of the bootstrap exchange of the account `miid` holding `node`
/// (see the module documentation).
fn settings(miid: &str, node: &Node, extra_ca_files: &[PathBuf]) -> Result<ClientSettings, String> {
    if let Some(mode) = text(node, "Auth/Bootstrap/SecMode")
        && !mode.eq_ignore_ascii_case("TLS")
    {
        return Err(format!(
            "Auth/Bootstrap/SecMode {mode:?} is not supported (omadmd secures the bootstrap \
             with TLS: leave SecMode out or set it to TLS); not bootstrapped"
        ));
    }
    let account = Account::from_node(miid, node)?;
    let mut settings = account.client_settings(extra_ca_files, MAX_RESPONSE_BYTES);
    if let Some(Node::Leaf(Value::B64(der))) = node.get("Auth/Bootstrap/ServerPubKey") {
        settings.trust = Trust::Pem(certificate_pem(der));
    }
    Ok(settings)
}

/// Checks the answer and applies it (see the module documentation); records the bootstrap.
fn apply(
    auth: &Authority,
    store: &Pool,
    pending: &Pending,
    response: &Response,
) -> Result<Vec<NodeAddr>, Failure> {
    let types = auth.types();
    let types = types.types();
    let items = read_answer(&pending.server_uri, response, types)?;
    let own = NodeAddr::root(DMACC, &pending.miid);
    let written = auth
        .import_new(&Principal::Admin, &items, &own)
        .map_err(|e| match e {
            AccessError::Store(e) => Failure::from(e),
            refused => Failure::Refused(vec![format!(
                "{}: {refused} (a bootstrap server creates instances and rewrites only its \
                 own DM account, {own})",
                pending.server_uri
            )]),
        })?;
    // The ServerURI the account holds now: an answer that moves the account to another
    // bootstrap server does not start another bootstrap.
    let node = auth
        .read_internal(&NodeAddr::root(DMACC, &pending.miid))
        .ok();
    let server_uri = node
        .as_ref()
        .and_then(|n| text(n, "Auth/Bootstrap/ServerURI"))
        .unwrap_or_else(|| pending.server_uri.clone());
    store
        .writer()
        .write(|tx| tx.record_bootstrap(&record_key(&pending.miid), &digest(&server_uri)))?;
    Ok(written)
}

/// The items of an answer, checked as bootstrap files' are; refused whole otherwise.
fn read_answer(
    server_uri: &str,
    response: &Response,
    types: &[MoType],
) -> Result<Vec<MoItem>, Failure> {
    if response.status != 200 {
        return Err(Failure::Status(response.status));
    }
    let refused = |reason: &str| Failure::Refused(vec![format!("{server_uri}: {reason}")]);
    if let Some(kind) = response.header("Content-Type") {
        let media = kind.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case(MO_JSON) && !media.eq_ignore_ascii_case("application/json") {
            return Err(refused(&format!(
                "Content-Type {kind:?} is not an MO serialization ({MO_JSON})"
            )));
        }
    }
    let body = String::from_utf8_lossy(&response.body);
    let start = body.trim_start_matches('\u{feff}').trim_start();
    if !start.starts_with('[') {
        return Err(refused(
            "not an MO serialization (a JSON array of items, PROTOCOL.md §7)",
        ));
    }
    let parsed = parse(Path::new(server_uri), &response.body, types).map_err(|e| match e {
        FileError::Refused { problems, .. } => Failure::Refused(
            problems
                .iter()
                .map(|p| format!("{server_uri}:{}: {}", p.line, p.reason))
                .collect(),
        ),
        other => refused(&other.to_string()),
    })?;
    if parsed.items.is_empty() {
        return Err(refused("an empty MO serialization: nothing to bootstrap"));
    }
    Ok(parsed.items)
}

/// The text of the leaf at `path` of `node`, if set and not empty.
fn text(node: &Node, path: &str) -> Option<String> {
    match node.get(path) {
        Some(Node::Leaf(v)) => Some(v.to_text()).filter(|t| !t.is_empty()),
        _ => None,
    }
}

/// The record of the account `miid`'s bootstrap, next to the factory files' records (which
/// are absolute paths: no key collides).
fn record_key(miid: &str) -> String {
    format!("{DMACC}/{miid}/")
}

fn digest(server_uri: &str) -> String {
    crate::tree::value::hex(&Sha256::digest(server_uri.as_bytes()))
}

/// A DER certificate as PEM.
fn certificate_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The delay before try `failures + 1`: [`BACKOFF_FIRST`] doubling per failure up to
/// [`BACKOFF_MAX`], scaled by 0.9 to 1.1 with `unit` in `[0, 1)`.
fn backoff(failures: u32, unit: f64) -> Duration {
    let doubled = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(BACKOFF_MAX).mul_f64(0.9 + 0.2 * unit)
}

/// A number in `[0, 1)` from the OS generator (0.5 when it is unavailable: the jitter only
/// keeps devices from retrying in step).
fn random_unit() -> f64 {
    match getrandom::u64() {
        Ok(v) => (v >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// Logs why a bootstrap did not happen, each problem on its own line, and what follows.
fn log_failure(source: &str, e: &Failure, next: Option<Duration>) {
    let then = match next {
        Some(d) => format!("trying again in {} s", d.as_secs()),
        None => "not tried again until its bootstrap settings change or omadmd restarts".into(),
    };
    match e {
        Failure::Refused(problems) => {
            for p in problems {
                tracing::warn!("{p}");
            }
            tracing::warn!("{source} refused: nothing of it applied; {then}");
        }
        other => tracing::warn!("{source} failed: {other}; {then}"),
    }
}

#[cfg(test)]
mod tests;
