//! The bounds on what a DM server can make a session do (`[limits] session_packages`,
//! `session_seconds`, `package3_bytes`, `tree_depth`), each against a real `omadm-devserver`
//! over real TLS playing the attacker: an endless `CONT` loop, a server that stalls or
//! drips packages slowly, one asking for more results than a Package#3 may hold, one serving
//! an MO nested deeper than the tree may go. Each is refused at its limit and the next
//! session with the same server works. First against the session engine in-process (as in
//! `session_tls`), then against the real `omadmd` on the private system bus, started with a
//! configuration setting the limits, driven by `omadmctl session start`: a failed session
//! releases its server (the next start is not `Busy`) and the daemon lives on.

use std::collections::BTreeMap;

use omadmd::protocol::alert;
use omadmd::session::Limits;
use omadmd::tree::builtin;
use omadmd::tree::value::Value;
use serde_json::json;

use crate::omadmctl_cli::TestServer;
use crate::session_tls::{WEATHER, account, client, get, package_bodies, server};
use crate::support::daemon::{Daemon, call_ok};
use crate::support::sysbus::{SysBus, show};

const DEVINFO_MAN: &str = "urn:oma:mo:oma-dm-devinfo:1.0//Man";

/// A working session: one GET, expected to succeed.
fn good_session() -> serde_json::Value {
    json!({"packages": [{"commands": [["GET", DEVINFO_MAN]], "expect": [200]}]})
}

/// The statuses of every Package#3 the server received, in order.
fn package3_codes(srv: &omadmd::devserver::RunningServer) -> Vec<Vec<u64>> {
    package_bodies(srv, "package#3")
        .iter()
        .map(|b| {
            b["Status"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["sc"].as_u64().unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn an_endless_cont_loop_ends_at_session_packages() {
    let certs = tempfile::tempdir().unwrap();
    let scenario = json!({"name": "loop", "sessions": [
        {"packages": [{"commands": [["CONT", "{dm}"]], "repeat": "forever"}]},
        good_session()]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let limits = Limits {
        session_packages: 5,
        ..Limits::default()
    };
    let c = client(BTreeMap::new(), limits);
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 508, "{outcome:?}");
    assert!(
        outcome.detail.contains("session_packages = 5"),
        "{outcome:?}"
    );
    assert_eq!(outcome.packages, 5, "{outcome:?}");
    let sent = srv.results()[0].packages_sent;
    assert_eq!(sent, 6, "the sixth Package#2 was received, not run");
    assert_eq!(
        package3_codes(&srv).len(),
        5,
        "one Package#3 per package run"
    );

    // The same server, the same client: the next session works.
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert_eq!(srv.results()[1].failures, Vec::<String>::new());
}

#[tokio::test]
async fn a_stalled_or_slowly_dripping_server_is_ended_at_session_seconds() {
    let certs = tempfile::tempdir().unwrap();
    let scenario = json!({"name": "slow", "sessions": [
        // Package#1 is answered after a minute (under the transport's read timeout).
        {"packages": [{"commands": [["GET", DEVINFO_MAN]], "delay_ms": 59_000}]},
        // Each Package#3 is answered after 100 ms, forever.
        {"packages": [{"commands": [["CONT", "{dm}"]], "repeat": "forever", "delay_ms": 100}]},
        good_session()]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let limits = Limits {
        session_seconds: 1,
        session_packages: 100_000,
        ..Limits::default()
    };
    let c = client(BTreeMap::new(), limits);
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    for what in ["a stalled Package#2", "a slow endless loop"] {
        let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
        assert_eq!(outcome.status, 504, "{what}: {outcome:?}");
        assert!(
            outcome.detail.contains("session_seconds = 1"),
            "{what}: {outcome:?}"
        );
    }
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert_eq!(srv.results()[2].failures, Vec::<String>::new());
}

#[tokio::test]
async fn results_beyond_package3_bytes_are_answered_413_and_the_package_stays_bounded() {
    let certs = tempfile::tempdir().unwrap();
    let scenario = json!({"name": "many-gets", "sessions": [
        {"packages": [{"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"]],
                       "repeat_commands": 40, "expect": [[200, 413]]}]},
        // More commands than even bare statuses fit for: refused whole.
        {"packages": [{"commands": [["DELETE", DEVINFO_MAN]], "repeat_commands": 400,
                       "expect": [null]}]},
        good_session()]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let limits = Limits {
        package3_bytes: 2048,
        ..Limits::default()
    };
    let c = client(BTreeMap::new(), limits);
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    srv.wait_for_sessions(1).await;
    assert_eq!(srv.results()[0].failures, Vec::<String>::new());

    let p3 = srv
        .transcript()
        .into_iter()
        .find(|r| r.kind == "package#3" && r.direction == omadmd::devserver::Direction::In)
        .expect("a Package#3");
    assert!(p3.bytes <= 2048, "Package#3 of {} bytes", p3.bytes);
    let statuses = p3.body.unwrap()["Status"].as_array().unwrap().clone();
    assert_eq!(statuses.len(), 40, "one status per command");
    assert_eq!(statuses[0]["sc"], 200);
    assert!(
        statuses[0]["Data"].to_string().contains("ACME"),
        "the first results fit: {}",
        statuses[0]
    );
    let cut: Vec<&serde_json::Value> = statuses.iter().filter(|s| s["sc"] == 413).collect();
    assert!(!cut.is_empty(), "{statuses:?}");
    assert!(
        cut.iter().all(|s| s.get("Data").is_none()),
        "413 carries no data"
    );

    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 413, "{outcome:?}");
    assert!(
        outcome.detail.contains("package3_bytes = 2048"),
        "{outcome:?}"
    );
    assert_eq!(outcome.commands, 0, "none of its commands ran");
    assert_eq!(package3_codes(&srv).len(), 1, "no Package#3 for it");
    assert_eq!(
        get(&c, &format!("{}//Man", builtin::DEVINFO)),
        Some(Value::Chr("ACME".into()))
    );

    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
}

/// `depth` segments `N` below `base`.
fn nested_path(base: &str, depth: usize) -> String {
    format!("{base}{}", vec!["N"; depth].join("/"))
}

#[tokio::test]
async fn an_mo_nested_deeper_than_tree_depth_is_refused_and_the_tree_stays_whole() {
    let certs = tempfile::tempdir().unwrap();
    let nested = |uri: &str, depth: usize| json!({"nested": {"client_uri": uri, "node": "Weather", "depth": depth}});
    let ok_leaf = nested_path(&format!("{WEATHER}/ok/"), 10);
    let scenario = json!({"name": "deep",
        "repository": {
            "ok": nested(&format!("{WEATHER}/ok/"), 10),
            "deep": nested(&format!("{WEATHER}/deep/"), 60),
            "deeper-than-json": nested(&format!("{WEATHER}/deeper/"), 5000),
            "graft": nested(&format!("{WEATHER}/ok/"), 30)},
        "sessions": [
            {"packages": [{"commands": [
                ["HGET", "{repo}/ok"],
                ["HGET", "{repo}/deep"],
                ["HGET", "{repo}/deeper-than-json"],
                // 30 more levels below the leaf at depth 10 of the instance just made.
                ["HGET", "{repo}/graft", ok_leaf]],
              // Past tree_depth: 413 (a limit); past the JSON parser's nesting: 400.
              "expect": [200, 413, 400, 413]}]},
            good_session()]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    srv.wait_for_sessions(1).await;
    assert_eq!(
        srv.results()[0].failures,
        Vec::<String>::new(),
        "{:#?}",
        srv.summary()
    );
    assert_eq!(get(&c, &ok_leaf), Some(Value::Chr("deep".into())));
    for refused in ["deep", "deeper"] {
        assert!(
            c.auth
                .get(
                    &omadmd::authority::Principal::Admin,
                    &format!("{WEATHER}/{refused}/")
                )
                .is_err(),
            "{refused} was not written"
        );
    }
    // The whole tree still reads (no stack overflow), and the server's next session works.
    let all = c
        .auth
        .get_items(
            &omadmd::authority::Principal::Admin,
            &format!("{WEATHER}/*/"),
        )
        .unwrap();
    assert_eq!(all.len(), 1);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
}

/// `omadmctl --json session start devserver` as root: (exit status, SessionFinished status).
fn start_session(bus: &SysBus) -> (i32, i64) {
    let out = bus
        .command(None, env!("CARGO_BIN_EXE_omadmctl"))
        .args(["--json", "session", "start", "devserver"])
        .output()
        .expect("omadmctl");
    let finished: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    (
        out.status.code().unwrap_or(-1),
        finished["status"].as_i64().unwrap_or(-1),
    )
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[test]
fn omadmd_ends_each_abusive_session_at_its_limit_and_serves_the_next() {
    let bus = SysBus::start();
    let daemon = Daemon::start_with_config(
        &bus,
        "[limits]\nsession_packages = 10\nsession_seconds = 5\npackage3_bytes = 4096\n",
    );
    let scenario = json!({"name": "abuse",
        "repository": {
            "deep": {"nested": {"client_uri": format!("{WEATHER}/deep/"), "node": "Weather", "depth": 60}},
            "settings": [{"ClientURI": format!("{WEATHER}/station1/"),
                          "MOData": {"Weather": {"City": "Oulu"}}}]},
        "sessions": [
            {"packages": [{"commands": [["CONT", "{dm}"]], "repeat": "forever"}]},
            good_session(),
            {"packages": [{"commands": [["GET", DEVINFO_MAN]], "delay_ms": 59_000}]},
            good_session(),
            {"packages": [{"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"]],
                           "repeat_commands": 60, "expect": [[200, 413]]}]},
            {"packages": [{"commands": [["HGET", "{repo}/deep"], ["HGET", "{repo}/settings"]],
                           "expect": [413, 200]}]},
            // A ClientURI that once panicked the session task (and left the server Busy).
            {"packages": [{"raw": "{\"CMD\": [[\"GET\", \"urn:a:1.0/x/%€\"]]}", "expect": [400]}]},
            good_session()]});
    let srv = TestServer::start(Some(&scenario.to_string()));
    call_ok(
        &bus,
        None,
        "CreateInstance",
        &[
            &quoted("urn:oma:mo:oma-dm-dmacc:1.2"),
            &quoted(&srv.account("devserver", srv.server.ca_pem(), 1)),
        ],
    );

    // (what, exit status of omadmctl, session status)
    for (what, exit, status) in [
        ("an endless CONT loop", 9, 508),
        ("a good session after it", 0, 200),
        ("a stalled server", 9, 504),
        ("a good session after it", 0, 200),
        ("60 GETs, more than package3_bytes", 0, 200),
        ("an MO deeper than tree_depth", 0, 200),
        ("a bad percent-encoding in a ClientURI", 0, 200),
        ("a good session after it", 0, 200),
    ] {
        assert_eq!(
            start_session(&bus),
            (exit, status),
            "{what}:\n{:#?}\n{}",
            srv.server.summary(),
            daemon.log()
        );
    }
    srv.wait_for_sessions(8);
    let results = srv.server.results();
    for (i, o) in results.iter().enumerate() {
        // The loop and the stall were broken off by the client; the next Package#1
        // abandoned them on the server's side. Every other session met its expectations.
        if i != 0 && i != 2 {
            assert_eq!(o.failures, Vec::<String>::new(), "session {}", i + 1);
        }
    }
    assert_eq!(results[0].packages_sent, 11);
    let p3 = srv
        .server
        .transcript()
        .into_iter()
        .filter(|r| r.kind == "package#3" && r.direction == omadmd::devserver::Direction::In)
        .find(|r| r.session == 5)
        .expect("the Package#3 of the 60 GETs");
    assert!(p3.bytes <= 4096, "Package#3 of {} bytes", p3.bytes);
    assert!(
        p3.body.unwrap().to_string().contains("413"),
        "results that do not fit are 413"
    );

    // The daemon lives and serves: the deep MO is not there, the rest is.
    let city = call_ok(&bus, None, "Get", &[&quoted(&format!("{WEATHER}/*/City"))]);
    assert!(city.contains("Oulu"), "{city}");
    let log = daemon.log();
    for wanted in [
        "session_packages = 10",
        "session_seconds = 5",
        "did not fit in Package#3",
    ] {
        assert!(log.contains(wanted), "{wanted:?} not in the log:\n{log}");
    }
}
