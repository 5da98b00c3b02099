//! `omadmctl watch`: register a watch, stream its `Changed` signals (unicast to us) as
//! lines until SIGINT/SIGTERM, then unregister it.
//!
//! The signal subscription and the signal handlers are in place before `Watch` is called,
//! so no change after the watch starts is missed and an early Ctrl-C still unwatches.

use std::io::IsTerminal;

use futures_util::StreamExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::client::Client;
use crate::commands::ChangeRow;
use crate::failure::Failure;
use crate::output::emit;

/// Runs the watch until interrupted (Ok) or until omadmd or the bus goes away (status 3).
pub async fn run(client: &Client, client_uri: &str, as_json: bool) -> Result<(), Failure> {
    let signal_failure = |e: std::io::Error| Failure::new(1, format!("cannot handle signals: {e}"));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_failure)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_failure)?;
    let mut changes = client
        .proxy
        .receive_changed()
        .await
        .map_err(|e| client.fail(e))?;
    let mut owner = client
        .proxy
        .inner()
        .receive_owner_changed()
        .await
        .map_err(|e| client.fail(e))?;
    let id = client
        .proxy
        .watch(client_uri)
        .await
        .map_err(|e| client.fail(e))?;
    // Always said (on stderr, so stdout stays one change per line): scripts wait for it.
    let hint = if std::io::stderr().is_terminal() {
        "; press Ctrl-C to stop"
    } else {
        ""
    };
    eprintln!("Watching {client_uri} (watch {id}){hint}.");

    let mut daemon_left = false;
    let result = loop {
        tokio::select! {
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            new_owner = owner.next() => {
                // A new owner is a restarted omadmd, which does not know this watch.
                daemon_left = true;
                let why = match new_owner {
                    Some(Some(_)) => "omadmd restarted; the watch ended (catch up with omadmctl changes --since)",
                    _ => "omadmd left the bus; the watch ended",
                };
                break Err(Failure::new(3, why));
            }
            signal = changes.next() => {
                let Some(signal) = signal else {
                    daemon_left = true;
                    break Err(Failure::new(3, format!("lost the connection to the {} bus", client.bus)));
                };
                let args = match signal.args() {
                    Ok(args) => args,
                    Err(e) => break Err(Failure::new(1, format!("omadmd sent a malformed Changed signal: {e}"))),
                };
                if args.watch_id != id {
                    continue;
                }
                let row = ChangeRow {
                    seq: args.seq,
                    change: args.change,
                    client_uri: args.client_uri,
                };
                if let Err(f) = emit(&row.line(as_json)) {
                    break Err(f);
                }
            }
        }
    };
    if !daemon_left {
        // Best effort: the daemon also drops the watch when we leave the bus.
        let _ = client.proxy.unwatch(id).await;
    }
    result
}
