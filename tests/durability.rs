//! Durable acknowledgements: what a D-Bus caller was told is done survives the daemon being
//! killed right after the answer.
//!
//! This proves crash safety only: a SIGKILLed process loses nothing the kernel already has,
//! durable or not. Power loss, where only what was synced survives, cannot be simulated
//! here; that every acknowledgement waits for the sync covering its commit is shown by the
//! store's group-commit unit tests (`store::durable`), which count the syncs and check each
//! acknowledgement against them.

use std::thread;

use crate::support::daemon::{Daemon, call_err, call_ok};
use crate::support::sysbus::SysBus;

const SETTINGS: &str = "urn:oma:mo:ext-example-weather:1.0";

/// Writers calling at once, and the instances each creates.
const WRITERS: usize = 4;
const EACH: usize = 5;

/// The ClientURI in a `gdbus` reply such as `('urn:…/1/',)`.
fn uri_in(reply: &str) -> String {
    reply
        .split('\'')
        .nth(1)
        .expect("a quoted ClientURI")
        .to_owned()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);

    // Concurrent creates (they share syncs), then a Set and a Delete, each acknowledged.
    let created: Vec<(String, String)> = thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let bus = &bus;
                s.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let units = format!("u{w}-{i}");
                            let modata = format!("'{{\"Weather\": {{\"Units\": \"{units}\"}}}}'");
                            let reply = call_ok(
                                bus,
                                None,
                                "CreateInstance",
                                &[&format!("'{SETTINGS}'"), &modata],
                            );
                            (uri_in(&reply), units)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect()
    });
    let (set_root, _) = &created[0];
    call_ok(
        &bus,
        None,
        "Set",
        &[&format!("'{set_root}Units'"), "''", "<'imperial'>"],
    );
    let (gone_root, _) = &created[1];
    call_ok(&bus, None, "Delete", &[&format!("'{gone_root}'")]);

    // Killed at once: no orderly stop, no chance to sync anything more.
    let state = daemon.kill();
    let _daemon = Daemon::start_in(&bus, state, "");

    for (root, units) in &created[2..] {
        let out = call_ok(&bus, None, "Get", &[&format!("'{root}Units'")]);
        assert!(out.contains(units.as_str()), "{root}Units: {out}");
    }
    let out = call_ok(&bus, None, "Get", &[&format!("'{set_root}Units'")]);
    assert!(out.contains("imperial"), "the Set was lost: {out}");
    // The Delete stays done.
    call_err(
        &bus,
        None,
        "Get",
        &[&format!("'{gone_root}Units'")],
        "NotFound",
    );
}
