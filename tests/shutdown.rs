//! Stopping the real `omadmd` (on a private session bus, sessions with an in-process
//! `omadm-devserver` over TLS) while an asynchronous EXEC's handler runs and while a session
//! runs: SIGTERM exits 0 after the drain, a SIGKILL is a crash; either way the restarted
//! daemon delivers the EXEC's result — the handler's, or "interrupted" — to the EXEC's
//! ServerURI, and the store is whole. A session drained at SIGTERM still announces its end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use omadmd::protocol::alert;
use omadmd::session::exec::{INTERRUPTED_OUTPUT, INTERRUPTED_STATUS};
use omadmd::store::Store;
use omadmd::tree::node::Node;
use omadmd::tree::uri::NodeAddr;
use omadmd::tree::value::Value;
use serde_json::Value as J;

use crate::omadmctl_cli::TestServer;
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{KillOnDrop, show, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const MOID: &str = "urn:oma:mo:ext-omadmd-shutdown:1.0";

/// First session: install `w` (a few nodes), EXEC its `Run` with the result to
/// `{dm}/results`, then end after `delay_ms`. Every later session (the follow-up that
/// delivers the result) only ends.
fn scenario(delay_ms: u64) -> String {
    serde_json::json!({"name": "shutdown",
    "repository": {"w": [{"ClientURI": format!("{MOID}/w/"),
        "MOData": {"Job": {"Run": "x", "A": 1, "B": {"C": "c", "D": "d"}}}}]},
    "sessions": [
        {"packages": [
            {"commands": [["HGET", "{repo}/w"], ["EXEC", format!("{MOID}/w/Run"), "{dm}/results"]]},
            {"commands": [["END"]], "delay_ms": delay_ms}]},
        {"packages": [{"commands": [["END"]]}]}
    ]})
    .to_string()
}

/// A test's directory: the EXEC handler `script` (run by `sh -c`, `$MARK` a file it may
/// write) configured for `…/w/Run`.
fn setup(script: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("handler-started");
    let script = script.replace("$MARK", &mark.display().to_string());
    let config = format!(
        "[exec.\"{MOID}/*/Run\"]\ncommand = {}\n",
        serde_json::json!(["sh", "-c", script])
    );
    std::fs::write(dir.path().join("omadmd.toml"), config).unwrap();
    (dir, mark)
}

/// Creates the account for `srv` that may manage [`MOID`].
fn create_account(bus: &SessionBus, srv: &TestServer) {
    let modata = serde_json::json!({"DMAcc": {"SrvID": "devserver",
        "SrvURI": srv.server.url(), "Perm": {"p0": {"MOID": MOID}},
        "Ext": {"CACert": srv.server.ca_pem()}}});
    let out = bus.run(&["create", DMACC, &modata.to_string()]);
    assert!(out.status.success(), "{}", show(&out));
}

/// Sends `signal` to the daemon and waits (at most 60 s) for its exit.
fn signal(daemon: &mut KillOnDrop, signal: &str, dir: &Path) -> ExitStatus {
    daemon
        .signal(signal, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("omadmd did not exit on {signal}: {}", daemon_log(dir)))
}

/// The ExecResult alerts the server received in Package#1s, with the path they were
/// posted to.
fn exec_results(srv: &TestServer) -> Vec<(String, J)> {
    srv.server
        .transcript()
        .into_iter()
        .filter(|r| r.kind == "package#1")
        .flat_map(|r| {
            let alerts = r
                .body
                .as_ref()
                .and_then(|b| b["Alert"].as_array().cloned())
                .unwrap_or_default();
            alerts
                .into_iter()
                .filter(|a| a["AlertType"] == alert::EXEC_RESULT)
                .map(move |a| (r.path.clone(), a))
        })
        .collect()
}

/// Waits (at most 30 s) for the one ExecResult the server gets; returns its `Data`.
fn delivered_result(srv: &TestServer, dir: &Path) -> J {
    let arrived = wait_until(Duration::from_secs(30), || !exec_results(srv).is_empty());
    assert!(
        arrived,
        "no ExecResult reached the server: {}",
        daemon_log(dir)
    );
    let results = exec_results(srv);
    assert_eq!(results.len(), 1, "{results:?}");
    let (path, alert) = &results[0];
    assert!(
        path.ends_with("/results"),
        "posted to the EXEC's ServerURI: {path}"
    );
    assert_eq!(alert["SourceURI"], format!("{MOID}/w/Run"));
    alert["Data"].clone()
}

/// The store after the daemon exited: SQLite's integrity check passes, the installed
/// instance is whole, the journal's last entry is the store's newest change, and no
/// asynchronous EXEC is left recorded.
fn check_store(dir: &Path) {
    let db = dir.join("state/store.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let store = Store::open(&db).unwrap();
    let chr = |s: &str| Node::Leaf(Value::Chr(s.to_owned()));
    let whole = Node::Interior(BTreeMap::from([
        ("Run".to_owned(), chr("x")),
        ("A".to_owned(), Node::Leaf(Value::Int(1))),
        (
            "B".to_owned(),
            Node::Interior(BTreeMap::from([
                ("C".to_owned(), chr("c")),
                ("D".to_owned(), chr("d")),
            ])),
        ),
    ]));
    assert_eq!(
        store.subtree(&NodeAddr::root(MOID, "w")).unwrap(),
        whole,
        "the HGET is applied whole"
    );
    let last = store.last_seq().unwrap();
    let journal = store.changes_since(0, 1_000_000).unwrap();
    assert_eq!(journal.last().map(|c| c.seq), Some(last), "journal in step");
    assert!(
        store.async_execs().unwrap().is_empty(),
        "no EXEC left recorded"
    );
}

#[test]
fn sigterm_waits_for_an_async_exec_that_finishes_within_the_drain() {
    let (dir, mark) = setup("touch $MARK; sleep 2; echo finished");
    let bus = SessionBus::start();
    let srv = TestServer::start(Some(&scenario(0)));
    let mut daemon = bus.daemon(dir.path());
    create_account(&bus, &srv);
    let out = bus.run(&["session", "start", "devserver"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(wait_until(Duration::from_secs(10), || mark.exists()));

    let status = signal(&mut daemon, "-TERM", dir.path());
    assert!(status.success(), "{status}: {}", daemon_log(dir.path()));
    assert!(
        exec_results(&srv).is_empty(),
        "no session starts while stopping"
    );
    check_waiting(dir.path(), 1);

    let _daemon = bus.daemon(dir.path());
    let data = delivered_result(&srv, dir.path());
    assert_eq!(data, serde_json::json!({"sc": 200, "output": "finished\n"}));
}

#[test]
fn sigterm_during_a_session_and_a_long_exec_reports_it_interrupted_after_restart() {
    let (dir, mark) = setup("touch $MARK; exec sleep 600");
    let bus = SessionBus::start();
    // The session is still waiting for its last package when SIGTERM comes.
    let srv = TestServer::start(Some(&scenario(3000)));
    let mut daemon = bus.daemon(dir.path());
    create_account(&bus, &srv);
    // A caller waiting for the session, as `omadmctl session start` does.
    let waiting = bus
        .ctl()
        .args(["session", "start", "devserver"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || mark.exists()));

    let status = signal(&mut daemon, "-TERM", dir.path());
    assert!(status.success(), "{status}: {}", daemon_log(dir.path()));
    assert_eq!(
        srv.server.finished_sessions(),
        1,
        "the running session was let finish: {}",
        daemon_log(dir.path())
    );
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("finished: 200"),
        "the waiting caller heard SessionFinished before omadmd left the bus: {}",
        show(&out)
    );
    check_waiting(dir.path(), 1);

    let _daemon = bus.daemon(dir.path());
    let data = delivered_result(&srv, dir.path());
    assert_eq!(
        data,
        serde_json::json!({"sc": INTERRUPTED_STATUS, "output": INTERRUPTED_OUTPUT})
    );
}

#[test]
fn a_crash_during_an_async_exec_is_reported_interrupted_after_restart() {
    let (dir, mark) = setup("touch $MARK; exec sleep 600");
    let bus = SessionBus::start();
    let srv = TestServer::start(Some(&scenario(0)));
    let mut daemon = bus.daemon(dir.path());
    create_account(&bus, &srv);
    let out = bus.run(&["session", "start", "devserver"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(wait_until(Duration::from_secs(10), || mark.exists()));

    let status = signal(&mut daemon, "-KILL", dir.path());
    assert!(!status.success());
    let db = dir.path().join("state/store.db");
    assert_eq!(
        Store::open(&db).unwrap().async_execs().unwrap().len(),
        1,
        "the EXEC was recorded before its handler started"
    );

    let mut daemon = bus.daemon(dir.path());
    let data = delivered_result(&srv, dir.path());
    assert_eq!(
        data,
        serde_json::json!({"sc": INTERRUPTED_STATUS, "output": INTERRUPTED_OUTPUT})
    );
    let status = signal(&mut daemon, "-TERM", dir.path());
    assert!(status.success(), "{status}: {}", daemon_log(dir.path()));
    check_store(dir.path());
}

/// [`check_store`], and `pending` alerts wait for the server (a daemon stopped before the
/// EXEC's result was delivered: the result is among them).
fn check_waiting(dir: &Path, pending: usize) {
    check_store(dir);
    let store = Store::open(&dir.join("state/store.db")).unwrap();
    assert_eq!(store.pending_alerts("devserver").unwrap().len(), pending);
}
