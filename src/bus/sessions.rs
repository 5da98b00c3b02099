//! Running DM sessions for the D-Bus face: one at a time per server, announced with the
//! `SessionStarted` and `SessionFinished` signals, reflected in the `State` property;
//! follow-up sessions the engine asks for (async EXEC results) are started here too.
//!
//! A session that fails for any reason releases its server: it runs as a task of its own
//! ([`engine::contain`]), so an error, a limit or a panic inside it all end in an outcome,
//! announced with `SessionFinished`; the server's place in the map is a `Claim` that gives
//! it back when dropped, whatever way the task that holds it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::client1::Client1;
use super::error::Error;
use super::{INTERFACE, PATH};
use crate::protocol::alert;
use crate::session::engine::{self, FollowUp, REASONS};
use crate::session::{Engine, account};

/// The sessions in progress.
pub struct Sessions {
    engine: Arc<Engine>,
    conn: zbus::Connection,
    running: Mutex<HashMap<String, String>>,
    next: AtomicU64,
}

impl Sessions {
    pub fn new(engine: Arc<Engine>, conn: zbus::Connection) -> Sessions {
        Sessions {
            engine,
            conn,
            running: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// The session engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// When `srv_id` last completed a session, POSIX seconds (0: never or unknown).
    pub fn last_session(&self, srv_id: &str) -> u64 {
        self.engine
            .last_session(srv_id)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0)
    }

    /// The sessions in progress, as (server id, session id), by server id.
    pub fn running(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .lock()
            .iter()
            .map(|(s, id)| (s.clone(), id.clone()))
            .collect();
        out.sort();
        out
    }

    /// `idle` or `session`.
    pub fn state(&self) -> &'static str {
        if self.lock().is_empty() {
            "idle"
        } else {
            "session"
        }
    }

    /// Starts a session with `srv_id` ("" lets the client choose) for `reason` (a
    /// session-reason alert type, "" for client-initiated). Returns (server id, session id)
    /// at once; the session runs in the background.
    pub fn start(
        self: &Arc<Self>,
        srv_id: &str,
        reason: &str,
        url: Option<String>,
    ) -> Result<(String, String), Error> {
        let reason = match reason {
            "" => alert::CLIENT_INITIATED,
            r => REASONS
                .into_iter()
                .find(|known| *known == r)
                .ok_or_else(|| {
                    Error::InvalidValue(format!(
                        "unknown session reason {r:?}; use one of {}",
                        REASONS.join(", ")
                    ))
                })?,
        };
        let accounts = account::load_all(self.engine.authority())?;
        let account = account::choose(&accounts, srv_id)
            .ok_or_else(|| match srv_id {
                "" => Error::NotFound("no DM server account is configured".into()),
                id => Error::NotFound(format!("no DM server account with SrvID {id:?}")),
            })?
            .clone();
        let session_id = format!(
            "{}-{}",
            account.srv_id,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        {
            let mut running = self.lock();
            if let Some(current) = running.get(&account.srv_id) {
                return Err(Error::Busy(format!(
                    "session {current} with {} is still running",
                    account.srv_id
                )));
            }
            running.insert(account.srv_id.clone(), session_id.clone());
        }
        let claim = Claim {
            sessions: Arc::clone(self),
            srv_id: account.srv_id.clone(),
        };
        let this = Arc::clone(self);
        let (srv, sid) = (account.srv_id.clone(), session_id.clone());
        let chosen = account.srv_id.clone();
        tokio::spawn(async move {
            this.announce("SessionStarted", &(srv.as_str(), sid.as_str(), reason))
                .await;
            this.state_changed().await;
            let engine = Arc::clone(&this.engine);
            let outcome =
                engine::contain(async move { engine.run(&account, reason, url.as_deref()).await })
                    .await;
            drop(claim);
            this.announce(
                "SessionFinished",
                &(srv.as_str(), sid.as_str(), outcome.status),
            )
            .await;
            this.state_changed().await;
        });
        Ok((chosen, session_id))
    }

    /// Acts on what the engine asks for after commands: announces `SHOW` URLs with the `Show`
    /// signal, and starts follow-up sessions, waiting while one with the same server runs.
    pub async fn follow_ups(self: Arc<Self>, mut requests: mpsc::UnboundedReceiver<FollowUp>) {
        while let Some(request) = requests.recv().await {
            let (srv_id, url) = match request {
                FollowUp::Show { srv_id, url } => {
                    self.announce("Show", &(srv_id.as_str(), url.as_str()))
                        .await;
                    continue;
                }
                FollowUp::Session { srv_id, url } => (srv_id, url),
            };
            let mut attempt = 0;
            loop {
                match self.start(&srv_id, "", url.clone()) {
                    Ok((_, sid)) => {
                        tracing::info!("follow-up session {sid} to deliver alerts");
                        break;
                    }
                    Err(Error::Busy(_)) if attempt < 120 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "follow-up session with {srv_id} not started: {e}; its alerts wait for the next session"
                        );
                        break;
                    }
                }
            }
        }
    }

    async fn announce<B: serde::Serialize + zbus::DynamicType>(&self, signal: &str, body: &B) {
        if let Err(e) = self
            .conn
            .emit_signal(None::<&str>, PATH, INTERFACE, signal, body)
            .await
        {
            tracing::warn!("cannot emit {signal}: {e}");
        }
    }

    async fn state_changed(&self) {
        let iface = match self
            .conn
            .object_server()
            .interface::<_, Client1>(PATH)
            .await
        {
            Ok(i) => i,
            Err(e) => return tracing::warn!("cannot announce State: {e}"),
        };
        let emitter = iface.signal_emitter().clone();
        let client = iface.get().await;
        if let Err(e) = client.state_changed(&emitter).await {
            tracing::warn!("cannot announce State: {e}");
        }
        if let Err(e) = client.sessions_changed(&emitter).await {
            tracing::warn!("cannot announce Sessions: {e}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A server's place in the map of running sessions, given back when dropped.
struct Claim {
    sessions: Arc<Sessions>,
    srv_id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.srv_id);
    }
}
