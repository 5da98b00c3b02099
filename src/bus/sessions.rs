//! DM sessions on D-Bus: starting them for callers ([`start`]), and announcing what the
//! [`Scheduler`] reports — `SessionStarted`, `SessionFinished`, `Show`, and the `State` and
//! `Sessions` properties' changes ([`announce`]). The scheduler runs sessions whether or not
//! the bus is up; this module only subscribes to its events. (`State` is `offline` when the
//! network is, see [`super::network`].)

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use zbus::Variant;

use super::error::Error;
use super::{INTERFACE, PATH};
use crate::network::NetworkState;
use crate::session::{Event, Origin, Scheduler, Start, StartError, Tasks};

/// `State`: `session` while one runs, else `offline` when the network is, else `idle`.
pub fn state(sessions: &[(String, String)], offline: bool) -> &'static str {
    if !sessions.is_empty() {
        "session"
    } else if offline {
        "offline"
    } else {
        "idle"
    }
}

/// The sessions in progress, as (server id, session id), by server id.
pub fn running(scheduler: &Scheduler) -> Vec<(String, String)> {
    scheduler
        .running()
        .into_iter()
        .map(|r| (r.srv_id, r.session_id))
        .collect()
}

/// Starts a session for a D-Bus caller: (server id, session id). `Busy` while a session
/// with that server runs.
pub async fn start(
    scheduler: &Arc<Scheduler>,
    srv_id: &str,
    reason: &str,
) -> Result<(String, String), Error> {
    match scheduler.start(srv_id, reason, Origin::Bus).await {
        Ok(Start::Now { srv_id, session_id }) => Ok((srv_id, session_id)),
        // A bus start is never queued; should it be, the caller waits for that session.
        Ok(Start::Queued { srv_id, behind }) => Err(Error::Busy(format!(
            "session {behind} with {srv_id} is still running"
        ))),
        Err(e @ StartError::Reason(_)) => Err(Error::InvalidValue(e.to_string())),
        Err(e @ (StartError::NoAccounts | StartError::NoAccount(_))) => {
            Err(Error::NotFound(e.to_string()))
        }
        Err(e @ (StartError::Busy { .. } | StartError::Paused)) => Err(Error::Busy(e.to_string())),
        Err(e @ (StartError::Accounts(_) | StartError::Stopping)) => {
            Err(Error::Failed(e.to_string()))
        }
    }
}

/// Turns the scheduler's events into signals. Events missed by falling behind (more than
/// the scheduler keeps) are logged, and the current `State`/`Sessions` are announced in
/// their place. Once `tasks` stops, it goes on until the last running session's
/// `SessionFinished` is sent — drained or aborted, sessions end while the daemon keeps its
/// bus name.
pub async fn announce(
    conn: zbus::Connection,
    scheduler: Arc<Scheduler>,
    mut events: broadcast::Receiver<Event>,
    network: watch::Receiver<NetworkState>,
    tasks: Tasks,
) {
    let offline = || network.borrow().offline();
    let mut stopping = false;
    loop {
        // `running` first: a session gone from it has its `Finished` in `events` already.
        if stopping && scheduler.running().is_empty() && events.is_empty() {
            return;
        }
        let received = tokio::select! {
            received = events.recv() => received,
            () = tasks.stopped(), if !stopping => {
                stopping = true;
                continue;
            }
        };
        match received {
            Ok(Event::Started { session, sessions }) => {
                let body = (
                    session.srv_id.as_str(),
                    session.session_id.as_str(),
                    session.reason,
                );
                emit(&conn, "SessionStarted", &body).await;
                properties_changed(&conn, &sessions, offline()).await;
            }
            Ok(Event::Finished {
                session,
                status,
                sessions,
                ..
            }) => {
                let body = (session.srv_id.as_str(), session.session_id.as_str(), status);
                emit(&conn, "SessionFinished", &body).await;
                properties_changed(&conn, &sessions, offline()).await;
            }
            Ok(Event::Show { srv_id, url }) => {
                emit(&conn, "Show", &(srv_id.as_str(), url.as_str())).await;
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("{n} session event(s) were not announced on D-Bus");
                properties_changed(&conn, &running(&scheduler), offline()).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn emit<B: serde::Serialize + zbus::DynamicType>(
    conn: &zbus::Connection,
    signal: &str,
    body: &B,
) {
    if let Err(e) = conn
        .emit_signal(None::<&str>, PATH, INTERFACE, signal, body)
        .await
    {
        tracing::warn!("cannot emit {signal}: {e}");
    }
}

/// `PropertiesChanged` for `State` and `Sessions`, with the values as of the event (not as
/// of sending: a short session may be over by then).
async fn properties_changed(conn: &zbus::Connection, sessions: &[(String, String)], offline: bool) {
    let changed: HashMap<&str, Variant<'_>> = HashMap::from([
        ("State", Variant::from(state(sessions, offline))),
        ("Sessions", Variant::from(sessions.to_vec())),
    ]);
    super::properties_changed(conn, PATH, INTERFACE, changed).await;
}
