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
//!   included, must end within that time; past it the session is ended with `504`;
//! - `package3_bytes`: no Package#3 is larger (see [`super::package3`]): GET results that do
//!   not fit are answered `413` in their status instead of their data; a Package#2 with more
//!   commands than even bare statuses fit for ends the session with `413`, unrun.
//!
//! A session that ends early — by one of these, an error, or a panic (see [`contain`]) —
//! leaves nothing half done: each command is its own transaction, and alerts are dropped only
//! once Package#1 was answered.
//!
//! Durability: every command is its own store transaction, and the store is synced once
//! before each Package#3, so every change a Package#3 acknowledges is on disk.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::account::Account;
use super::commands::{self, Context};
use super::exec::ExecHandlers;
use super::package3::{Fit, Package3Body};
use crate::authority::{Authority, Principal};
use crate::config::Config;
use crate::protocol::{self, Alert, MoEntry, Package1, Package2, Status, alert};
use crate::store::Store;
use crate::transport::{HttpClient, Request, Response, TransportError};

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
}

impl Limits {
    /// The session limits of a configuration.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_package_bytes: config.session.max_package_bytes,
            session_packages: config.limits.session_packages,
            session_seconds: config.limits.session_seconds,
            package3_bytes: config.limits.package3_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&Config::default())
    }
}

/// How a session ended. `status` is `200` on success; otherwise the server's HTTP status,
/// `400` (malformed package), `413` (package too large: a Package#2 above
/// `max_package_bytes`, or one whose statuses cannot fit in `package3_bytes`), `415` (wrong
/// content type), `495` (the server's certificate was refused), `503` (the server could not
/// be reached), `504` (the session ran past `session_seconds`), `508` (the server sent more
/// than `session_packages` Package#2) or `500` (a local failure, a panic included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: i32,
    pub packages: u32,
    pub commands: u32,
    pub detail: String,
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
    pub(super) state: Mutex<Store>,
    pub(super) dev_id: String,
    pub(super) limits: Limits,
    pub(super) exec: ExecHandlers,
    pub(super) extra_ca_files: Vec<PathBuf>,
    pub(super) followups: mpsc::UnboundedSender<FollowUp>,
}

impl Engine {
    /// `state` is a store connection for session state (pending alerts, subscriptions);
    /// `followups` receives sessions the engine wants run later (async EXEC results).
    pub fn new(
        auth: Arc<Authority>,
        state: Store,
        dev_id: String,
        limits: Limits,
        exec: ExecHandlers,
        extra_ca_files: Vec<PathBuf>,
        followups: mpsc::UnboundedSender<FollowUp>,
    ) -> Engine {
        Engine {
            auth,
            state: Mutex::new(state),
            dev_id,
            limits,
            exec,
            extra_ca_files,
            followups,
        }
    }

    /// When `srv_id` last completed a session (POSIX seconds), if ever.
    pub fn last_session(&self, srv_id: &str) -> Result<Option<i64>, String> {
        self.with_state(|s| s.last_session(srv_id))
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
        let mut outcome = Outcome {
            status: 200,
            packages: 0,
            commands: 0,
            detail: String::new(),
        };
        let seconds = self.limits.session_seconds;
        let result = tokio::time::timeout(
            Duration::from_secs(seconds),
            self.package_loop(account, reason, url, &mut outcome),
        )
        .await
        .unwrap_or_else(|_| {
            Err((
                504,
                format!("the session took longer than session_seconds = {seconds}; ended"),
            ))
        });
        if let Err((status, detail)) = result {
            tracing::warn!(srv_id = %account.srv_id, status, "session aborted: {detail}");
            outcome.status = status;
            outcome.detail = detail;
        } else {
            tracing::info!(srv_id = %account.srv_id, packages = outcome.packages, commands = outcome.commands, "session finished");
            outcome.detail = "completed".into();
        }
        outcome
    }

    async fn package_loop(
        self: &Arc<Self>,
        account: &Account,
        reason: &str,
        url: Option<&str>,
        outcome: &mut Outcome,
    ) -> Result<(), (i32, String)> {
        let client = HttpClient::new(
            account.client_settings(&self.extra_ca_files, self.limits.max_package_bytes),
        )
        .map_err(|e| {
            (
                500,
                format!("cannot set up the transport for {}: {e}", account.srv_id),
            )
        })?;
        let principal = Principal::Server(account.srv_id.clone());
        let mut url = url.unwrap_or(&account.srv_uri).to_owned();

        let (package1, delivered) = self.package1(account, &principal, reason, &url)?;
        let body = serde_json::to_vec(&package1).map_err(|e| (500, e.to_string()))?;
        let mut response = self.post(&client, &url, protocol::INITIATION, body).await?;
        self.state(|tx| {
            tx.drop_alerts(&delivered)?;
            tx.record_session(&account.srv_id)
        })?;

        let mut ctx = Context {
            engine: self,
            client: &client,
            account,
            principal: &principal,
        };
        loop {
            if outcome.packages >= self.limits.session_packages {
                return Err((
                    508,
                    format!(
                        "the server sent more than session_packages = {} Package#2; ended",
                        self.limits.session_packages
                    ),
                ));
            }
            outcome.packages += 1;
            let package2 = Package2::parse(&response.body).map_err(|e| (400, e.to_string()))?;
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
                        .map_err(|e| (413, format!("Package#2 refused unrun: {e}")))?,
                )
            };
            let mut cut = 0usize;
            for command in package2.commands {
                outcome.commands += 1;
                let status = match command {
                    Err(e) => {
                        tracing::info!(srv_id = %account.srv_id, "refused command: {e}");
                        Status::code(e.status)
                    }
                    Ok(protocol::Command::End) => Status::code(200),
                    Ok(protocol::Command::Cont { server_uri }) => {
                        url = server_uri;
                        Status::code(200)
                    }
                    Ok(command) => commands::execute(&mut ctx, command).await,
                };
                if let Some(package3) = &mut package3 {
                    let fit = package3.push(&status).map_err(|e| (500, e.to_string()))?;
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
            self.auth
                .sync()
                .map_err(|e| (500, format!("cannot make the changes durable: {e}")))?;
            response = self
                .post(&client, &url, protocol::RESPONSE, package3.finish())
                .await?;
        }
    }

    /// Package#1: the MO list and the session reason, plus alerts waiting for this server
    /// (those addressed to `url`, or to no particular URI). Returns the ids of the alerts
    /// included, to drop once delivered.
    fn package1(
        &self,
        account: &Account,
        principal: &Principal,
        reason: &str,
        url: &str,
    ) -> Result<(Package1, Vec<i64>), (i32, String)> {
        let local = |e: String| (500, e);
        let first_session = self
            .with_state(|s| s.last_session(&account.srv_id))
            .map_err(local)?
            .is_none();
        let mos = if first_session {
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
        let mut alerts = vec![Alert::of_type(reason)];
        let mut delivered = Vec::new();
        for pending in self
            .with_state(|s| s.pending_alerts(&account.srv_id))
            .map_err(local)?
        {
            match serde_json::from_str::<Alert>(&pending.alert_json) {
                Ok(a) if a.target_uri.as_deref().is_none_or(|t| t == url) => {
                    alerts.push(a);
                    delivered.push(pending.id);
                }
                Ok(_) => {}
                Err(e) => tracing::error!("dropping unreadable pending alert {}: {e}", pending.id),
            }
        }
        Ok((Package1 { mos, alert: alerts }, delivered))
    }

    async fn post(
        &self,
        client: &HttpClient,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Response, (i32, String)> {
        let request = Request::post(url, body)
            .with_header("Content-Type", content_type)
            .with_header("Accept", protocol::REQUEST)
            .with_header(protocol::DEVID_HEADER, &self.dev_id);
        let response = client
            .send(request)
            .await
            .map_err(|e| transport_status(&e))?;
        if !response.is_success() {
            return Err((
                i32::from(response.status),
                format!("{url} answered HTTP {}", response.status),
            ));
        }
        let content_type = response.header("Content-Type").unwrap_or_default();
        if media_type(content_type) != protocol::REQUEST {
            return Err((
                415,
                format!(
                    "{url} answered with Content-Type {content_type:?}, not {}",
                    protocol::REQUEST
                ),
            ));
        }
        Ok(response)
    }

    /// Runs `f` in a session-state transaction.
    pub(super) fn state<T>(
        &self,
        f: impl FnOnce(&mut crate::store::Txn<'_>) -> Result<T, crate::store::StoreError>,
    ) -> Result<T, (i32, String)> {
        let mut store = self.state.lock().unwrap_or_else(|p| p.into_inner());
        store
            .write(f)
            .map(|(t, _)| t)
            .map_err(|e| (500, e.to_string()))
    }

    /// Reads session state.
    pub(super) fn with_state<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError>,
    ) -> Result<T, String> {
        let store = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&store).map_err(|e| e.to_string())
    }

    /// Hands a `SHOW` URL on; whether anyone took it is not the session's concern.
    pub(super) fn show(&self, srv_id: &str, url: &str) {
        let _ = self.followups.send(FollowUp::Show {
            srv_id: srv_id.to_owned(),
            url: url.to_owned(),
        });
    }

    /// `DEFAULT`: when a local app asks for an MO of `moid` that is not in the tree, fetch
    /// it from the source a server named (an HGET on that server's behalf, reported to no
    /// server). Returns whether anything was fetched.
    pub async fn fetch_default(&self, moid: &str) -> Result<bool, String> {
        let Some((srv_id, server_uri)) = self.with_state(|s| s.default_source(moid))? else {
            return Ok(false);
        };
        let accounts = super::account::load_all(&self.auth).map_err(|e| e.to_string())?;
        let account = accounts
            .iter()
            .find(|a| a.srv_id == srv_id)
            .ok_or_else(|| {
                format!(
                    "DEFAULT source of {moid} belongs to {srv_id}, which has no account any more"
                )
            })?;
        let client = HttpClient::new(
            account.client_settings(&self.extra_ca_files, self.limits.max_package_bytes),
        )
        .map_err(|e| e.to_string())?;
        let written =
            super::commands::fetch_into_tree(&self.auth, &client, account, &server_uri, None)
                .await
                .map_err(|e| e.to_string())?;
        tracing::info!(srv_id = %srv_id, "fetched {moid} from its DEFAULT source {server_uri}: {} item(s)", written.len());
        Ok(!written.is_empty())
    }

    /// Keeps an alert for `srv_id` and asks for a follow-up session to deliver it.
    pub fn queue_alert(&self, srv_id: &str, alert: &Alert) {
        let json = match serde_json::to_string(alert) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("cannot serialize an alert: {e}");
                return;
            }
        };
        if let Err((_, e)) = self.state(|tx| tx.queue_alert(srv_id, &json)) {
            tracing::error!("cannot persist an alert for {srv_id}: {e}");
            return;
        }
        let _ = self.followups.send(FollowUp::Session {
            srv_id: srv_id.to_owned(),
            url: alert.target_uri.clone(),
        });
    }
}

/// Runs `session` (a future yielding its [`Outcome`]) as a task of its own, so that a panic
/// inside it ends that session only: it becomes an outcome with status `500`, logged, and
/// the caller goes on to release what the session held.
pub async fn contain(session: impl Future<Output = Outcome> + Send + 'static) -> Outcome {
    match tokio::spawn(session).await {
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
            Outcome {
                status: 500,
                packages: 0,
                commands: 0,
                detail: why,
            }
        }
    }
}

/// `application/x; charset=...` → `application/x`.
pub(super) fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

fn transport_status(e: &TransportError) -> (i32, String) {
    let status = match e {
        TransportError::Tls(_) => 495,
        TransportError::TooLarge { .. } => 413,
        TransportError::Connect { .. } | TransportError::Timeout(_) => 503,
        _ => 500,
    };
    (status, e.to_string())
}

/// The session-reason alert types a session may be started with.
pub const REASONS: [&str; 3] = [
    alert::CLIENT_INITIATED,
    alert::SERVER_INITIATED,
    alert::BOOTSTRAP_COMPLETE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_a_session_becomes_a_500_outcome() {
        let outcome = contain(async { panic!("boom in a command") }).await;
        assert_eq!(outcome.status, 500);
        assert!(outcome.detail.contains("boom in a command"), "{outcome:?}");
        let done = Outcome {
            status: 200,
            packages: 2,
            commands: 3,
            detail: "completed".into(),
        };
        let copy = done.clone();
        assert_eq!(contain(async move { copy }).await, done);
    }

    #[test]
    fn default_limits_are_the_configuration_defaults() {
        let l = Limits::default();
        assert_eq!(l.max_package_bytes, 8 * 1024 * 1024);
        assert_eq!(l.session_packages, 200);
        assert_eq!(l.session_seconds, 900);
        assert_eq!(l.package3_bytes, 8 * 1024 * 1024);
    }
}
