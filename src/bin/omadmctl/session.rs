//! `omadmctl session start` and `session status`: start a DM session with a server and
//! follow it through the broadcast `SessionStarted` / `SessionFinished` signals, or show
//! omadmd's `State` and the sessions in progress.
//!
//! The subscription to the signals is in place before `StartSession` is called: omadmd may
//! announce the session (and, for a quick one, its end) before its reply arrives, and the
//! subscription queues those signals until the session id is known.

use futures_util::StreamExt;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::SessionStartArgs;
use crate::client::{Client, SessionFinished, SessionStarted};
use crate::failure::{Failure, INTERRUPTED, SESSION_FAILED};
use crate::output::{columns, emit, pretty};
use crate::progress::Spinner;

/// The status of a successful session.
const OK: i32 = 200;

#[derive(Serialize)]
struct Started<'a> {
    session_id: &'a str,
}

#[derive(Serialize)]
struct Finished<'a> {
    server_id: &'a str,
    session_id: &'a str,
    status: i32,
    result: &'a str,
}

/// Starts the session and, unless `--no-wait`, waits for its end: status 0 when it
/// succeeded, [`SESSION_FAILED`] when it did not.
pub async fn start(client: &Client, args: &SessionStartArgs, as_json: bool) -> Result<(), Failure> {
    let server_id = args.server_id.as_deref().unwrap_or("");
    let reason = args.reason.as_deref().unwrap_or("");
    if args.no_wait {
        let session_id = client
            .proxy
            .start_session(server_id, reason)
            .await
            .map_err(|e| client.fail(e))?;
        return if as_json {
            emit(&pretty(&Started {
                session_id: &session_id,
            }))
        } else {
            emit(&format!("{session_id}\n"))
        };
    }

    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| Failure::new(1, format!("cannot handle signals: {e}")))?;
    // One stream for both signals keeps them in the order omadmd sent them.
    let mut signals = client
        .proxy
        .inner()
        .receive_all_signals()
        .await
        .map_err(|e| client.fail(e))?;
    let mut owner = client
        .proxy
        .inner()
        .receive_owner_changed()
        .await
        .map_err(|e| client.fail(e))?;
    let session_id = client
        .proxy
        .start_session(server_id, reason)
        .await
        .map_err(|e| client.fail(e))?;

    let mut spinner = Spinner::new(format!("session {session_id} running"));
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Spinner::INTERVAL,
        Spinner::INTERVAL,
    );
    let (server_id, status) = loop {
        tokio::select! {
            // Signals before the owner change: a stopping daemon sends `SessionFinished`
            // before it leaves the bus.
            biased;
            _ = interrupt.recv() => {
                spinner.clear();
                return Err(Failure::new(
                    INTERRUPTED,
                    format!(
                        "stopped waiting; session {session_id} goes on in omadmd \
                         (omadmctl session status shows whether it still runs)"
                    ),
                ));
            }
            message = signals.next() => {
                let Some(message) = message else {
                    spinner.clear();
                    return Err(Failure::new(
                        3,
                        format!("lost the connection to the {} bus", client.bus),
                    ));
                };
                if let Some(started) = SessionStarted::from_message(message.clone()) {
                    let args = started.args().map_err(|e| malformed("SessionStarted", &e))?;
                    if args.session_id == session_id && !as_json {
                        spinner.clear();
                        emit(&format!(
                            "Session {} with {} started (reason {})\n",
                            args.session_id, args.server_id, args.reason
                        ))?;
                    }
                } else if let Some(finished) = SessionFinished::from_message(message) {
                    let args = finished.args().map_err(|e| malformed("SessionFinished", &e))?;
                    if args.session_id == session_id {
                        spinner.clear();
                        break (args.server_id, args.status);
                    }
                }
            }
            new_owner = owner.next() => {
                spinner.clear();
                let why = match new_owner {
                    Some(Some(_)) => "omadmd restarted",
                    _ => "omadmd left the bus",
                };
                return Err(Failure::new(
                    3,
                    format!("{why} before session {session_id} ended"),
                ));
            }
            _ = ticker.tick(), if spinner.enabled() => spinner.tick(),
        }
    };
    drop(spinner);

    let result = describe(status);
    if as_json {
        emit(&pretty(&Finished {
            server_id: &server_id,
            session_id: &session_id,
            status,
            result: &result,
        }))?;
    } else {
        let ended = if status == OK { "finished" } else { "failed" };
        emit(&format!(
            "Session {session_id} with {server_id} {ended}: {status} {result}\n"
        ))?;
    }
    if status == OK {
        Ok(())
    } else {
        // The outcome is on stdout already; nothing to add on stderr.
        Err(Failure::new(SESSION_FAILED, ""))
    }
}

fn malformed(signal: &str, e: &zbus::Error) -> Failure {
    Failure::new(1, format!("omadmd sent a malformed {signal} signal: {e}"))
}

#[derive(Serialize)]
struct Status {
    state: String,
    sessions: Vec<Running>,
}

#[derive(Serialize)]
struct Running {
    server_id: String,
    session_id: String,
}

/// Prints omadmd's `State` and the sessions in progress.
pub async fn status(client: &Client, as_json: bool) -> Result<(), Failure> {
    let state = client.proxy.state().await.map_err(|e| client.fail(e))?;
    let running = client.proxy.sessions().await.map_err(|e| client.fail(e))?;
    if as_json {
        let sessions = running
            .into_iter()
            .map(|(server_id, session_id)| Running {
                server_id,
                session_id,
            })
            .collect();
        return emit(&pretty(&Status { state, sessions }));
    }
    let mut rows = vec![vec!["State:".to_owned(), state]];
    for (server_id, session_id) in running {
        rows.push(vec![
            "Session:".to_owned(),
            format!("{session_id} with {server_id}"),
        ]);
    }
    emit(&columns(&rows))
}

/// What a session's status means: the statuses omadmd documents for `SessionFinished`, and
/// otherwise the server's HTTP status.
pub fn describe(status: i32) -> String {
    match status {
        OK => "OK".to_owned(),
        400 => "malformed package".to_owned(),
        413 => "package too large".to_owned(),
        415 => "wrong content type".to_owned(),
        495 => "server certificate refused".to_owned(),
        500 => "local failure".to_owned(),
        503 => "server unreachable".to_owned(),
        504 => "session took longer than [limits] session_seconds, or the server answered Gateway Timeout".to_owned(),
        508 => "server sent more packages than [limits] session_packages".to_owned(),
        other => {
            let reason = u16::try_from(other)
                .ok()
                .and_then(|s| http::StatusCode::from_u16(s).ok())
                .and_then(|s| s.canonical_reason());
            match reason {
                Some(reason) => format!("server answered {reason}"),
                None => "server's HTTP status".to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_described_in_words() {
        assert_eq!(describe(200), "OK");
        assert_eq!(describe(495), "server certificate refused");
        assert_eq!(describe(503), "server unreachable");
        assert!(describe(508).contains("session_packages"));
        assert_eq!(describe(404), "server answered Not Found");
        assert_eq!(describe(599), "server's HTTP status");
        assert_eq!(describe(-1), "server's HTTP status");
    }
}
