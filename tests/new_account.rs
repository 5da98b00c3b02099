//! A DM account that arrives gets its first session at once, carrying `BootstrapComplete`
//! (issue 9, PROTOCOL.md §13), with the real `omadmd` on a private session bus and an
//! in-process `omadm-devserver` over TLS: a caller asking for a session meanwhile joins
//! that one instead of being told `Busy`, and a restart does not greet an account again.

use std::time::Duration;

use omadmd::protocol::alert;

use crate::omadmctl_cli::TestServer;
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{show, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";

/// Sessions that take about two seconds (the END package is late).
const SLOW: &str = r#"{"name": "slow", "packages": [
    {"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"]], "expect": [200]},
    {"commands": [["END"]], "delay_ms": 2000}]}"#;

#[test]
fn a_new_account_gets_its_first_session_at_once_and_a_caller_joins_it() {
    let dir = tempfile::tempdir().unwrap();
    // The default, which the other tests' daemons turn off.
    std::fs::write(
        dir.path().join("omadmd.toml"),
        "[session]\nfirst_session_at_once = true\n",
    )
    .unwrap();
    let bus = SessionBus::start();
    let daemon = bus.daemon(dir.path());
    let srv = TestServer::start(Some(SLOW));
    let account = srv.account("fresh", srv.server.ca_pem(), 0);
    let out = bus.run(&["create", DMACC, &account]);
    assert!(out.status.success(), "{}", show(&out));

    // Nobody asked: the account's session starts by itself.
    let greeting = |log: &str| {
        log.lines()
            .find_map(|l| l.split("new account: session ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    assert!(
        wait_until(Duration::from_secs(20), || greeting(&daemon_log(
            dir.path()
        ))
        .is_some()),
        "no session for the new account: {}",
        daemon_log(dir.path())
    );
    let id = greeting(&daemon_log(dir.path())).unwrap();
    // Asked for while it runs: the caller is given that session, not Busy.
    let out = bus.run(&["session", "start", "--no-wait", "fresh"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);

    srv.wait_for_sessions(1);
    let results = srv.server.results();
    assert_eq!(results.len(), 1, "one session, joined: {results:?}");
    assert!(results[0].passed(), "{:?}", results[0]);
    assert_eq!(
        results[0].reason.as_deref(),
        Some(alert::BOOTSTRAP_COMPLETE)
    );

    // A restart greets no account that had a session; a later session is an ordinary one.
    drop(daemon);
    let _daemon = bus.daemon(dir.path());
    let out = bus.run(&["session", "start", "fresh"]);
    assert!(out.status.success(), "{}", show(&out));
    let results = srv.server.results();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[1].reason.as_deref(), Some(alert::CLIENT_INITIATED));
    let greetings = daemon_log(dir.path())
        .matches("new account: session ")
        .count();
    assert_eq!(greetings, 1, "{}", daemon_log(dir.path()));
}
