//! The bounds on what a DM server can make a session do (`[limits] session_packages`,
//! `session_seconds`, `package3_bytes`, `tree_depth`, `reply_bytes` for uploads,
//! `subscriptions_per_server`, `exec_concurrent`, `pending_alerts_per_server`,
//! `server_uri_bytes`, `[session] max_package_bytes` for Package#1), each against a real
//! `omadm-devserver` over real TLS playing the attacker: an endless `CONT` loop, a server
//! that stalls or drips packages slowly, one sending a Package#2 of costly GETs, one asking
//! for more results than a Package#3 may hold, one serving an MO nested deeper than the tree
//! may go, one uploading a subtree again and again, piling up subscriptions, DEFAULT
//! sources, asynchronous EXECs, alerts and SHOWs. Each is refused at its limit and the next
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

use omadmd::authority::{Input, Principal};
use omadmd::session::engine::FollowUp;

use crate::omadmctl_cli::TestServer;
use crate::session_tls::{
    Client, WEATHER, account, account_as, client, get, package_bodies, server,
};
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

#[tokio::test]
async fn a_package2_of_costly_gets_is_ended_at_session_seconds() {
    let certs = tempfile::tempdir().unwrap();
    // Each GET looks at 2,000 nodes and matches none: costly to answer (milliseconds),
    // nothing to send, so package3_bytes never cuts it short. 2,000 of them keep a session
    // busy far longer than 3 s unless the deadline ends it between commands.
    let gets = 2_000;
    let scenario = json!({"name": "costly", "sessions": [
        {"packages": [{"commands": [["GET", format!("{WEATHER}/wide/(x)/V?nv=(x)/V:none")]],
                       "repeat_commands": gets, "expect": [null]}]},
        good_session()]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let limits = Limits {
        session_seconds: 3,
        ..Limits::default()
    };
    let c = client(BTreeMap::new(), limits);
    let children: serde_json::Map<String, serde_json::Value> = (0..2000)
        .map(|i| (format!("c{i}"), json!({"V": i.to_string()})))
        .collect();
    let wide = json!([{"ClientURI": format!("{WEATHER}/wide/"), "MOData": {"Weather": children}}]);
    // The server's account first: it writes only MOIDs its account permits.
    let acc = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    c.auth
        .import_items(
            &Principal::Server("devserver".into()),
            &omadmd::tree::json::parse_items(&wide.to_string()).unwrap(),
            None,
            &|_| true,
        )
        .unwrap();
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 504, "{outcome:?}");
    assert!(
        outcome.detail.contains("session_seconds = 3"),
        "{outcome:?}"
    );
    assert!(
        outcome.commands < gets as u32,
        "ended before its {gets} GETs ran: {outcome:?}"
    );
    assert!(package3_codes(&srv).is_empty(), "no Package#3 for it");

    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert_eq!(srv.results()[1].failures, Vec::<String>::new());
}

/// `[name, server_uri, client_uri × times]`.
fn upload(name: &str, server_uri: &str, client_uri: &str, times: usize) -> serde_json::Value {
    let mut command = vec![json!(name), json!(server_uri)];
    command.extend(std::iter::repeat_n(json!(client_uri), times));
    serde_json::Value::Array(command)
}

#[tokio::test]
async fn an_upload_is_bounded_as_a_whole_by_reply_bytes() {
    let certs = tempfile::tempdir().unwrap();
    let devinfo = "urn:oma:mo:oma-dm-devinfo:1.0//";
    // About 130 bytes of data per ClientURI: 10 fit in 4096 bytes, 100 do not.
    let scenario = json!({"name": "uploads", "packages": [{"commands": [
        upload("HPUT", "{repo}/fits", devinfo, 10),
        upload("HPUT", "{repo}/big", devinfo, 100),
        upload("HPOST", "{repo}/big", devinfo, 100),
        ["GET", DEVINFO_MAN]],
        "expect": [200, 413, 413, 200]}]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let limits = Limits {
        reply_bytes: 4096,
        ..Limits::default()
    };
    let c = client(BTreeMap::new(), limits);
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    srv.wait_for_sessions(1).await;
    assert_eq!(
        srv.results()[0].failures,
        Vec::<String>::new(),
        "{:#?}",
        srv.summary()
    );
    let fits = srv.received("fits");
    assert_eq!(fits.len(), 1);
    assert!(fits[0].body.len() <= 4096, "{} bytes", fits[0].body.len());
    let items: Vec<serde_json::Value> = serde_json::from_slice(&fits[0].body).unwrap();
    assert_eq!(items.len(), 10);
    assert!(srv.received("big").is_empty(), "nothing of a 413 is sent");
}

/// A local change as the admin, then the SUB deliveries it causes.
async fn set_and_deliver(c: &Client, uri: &str, value: &str) {
    let changes = c
        .auth
        .set(&Principal::Admin, uri, None, Input::Text(value.into()))
        .unwrap();
    omadmd::session::subscribe::deliver(c.engine.clone(), changes).await;
}

#[tokio::test]
async fn subscriptions_are_kept_without_cv_and_bounded_per_server() {
    let certs = tempfile::tempdir().unwrap();
    let dev = "urn:oma:mo:oma-dm-devinfo:1.0//";
    let long = format!("https://portal.example/{}", "a".repeat(3000));
    let scenario = json!({"name": "subs", "sessions": [
        {"packages": [{"commands": [
            ["SUB", format!("{dev}Man?cv=a"), "{repo}/s1"],
            // The same subtree with another validator: the same subscription.
            ["SUB", format!("{dev}Man?cv=b"), "{repo}/s1"],
            ["SUB", format!("{dev}DevID"), "{repo}/s2"],
            ["SUB", dev, "{repo}/s3"],
            // Replacing one is not a new one.
            ["SUB", format!("{dev}Man"), "{repo}/s4"],
            ["SUB", dev, long]],
          "expect": [200, 200, 200, 413, 200, 400]}]},
        {"packages": [{"commands": [
            ["UNSUB", format!("{dev}Man?cv=zz")],
            ["UNSUB", format!("{dev}Man")],
            ["SUB", dev, "{repo}/s3"]],
          "expect": [200, 404, 200]}]}]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let limits = Limits {
        subscriptions_per_server: 2,
        ..Limits::default()
    };
    let c = client(BTreeMap::new(), limits);
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    set_and_deliver(&c, &format!("{dev}Man"), "Initech").await;
    let puts = |path: &str| srv.received(path).len();
    assert_eq!(
        [puts("s1"), puts("s2"), puts("s3"), puts("s4")],
        [0, 0, 0, 1],
        "one subscription for Man, at its latest ServerURI"
    );

    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    set_and_deliver(&c, &format!("{dev}Man"), "Globex").await;
    assert_eq!([puts("s3"), puts("s4")], [1, 1]);
    srv.wait_for_sessions(2).await;
    assert_eq!(srv.failures(), Vec::<String>::new(), "{:#?}", srv.summary());
}

#[tokio::test]
async fn default_sources_only_for_permitted_moids_and_never_over_another_servers() {
    let certs = tempfile::tempdir().unwrap();
    let item = |miid: &str, city: &str| json!([{"ClientURI": format!("{WEATHER}/{miid}/"), "MOData": {"Weather": {"City": city}}}]);
    let scenario = json!({"name": "defaults",
        "repository": {"w1": item("s1", "Oulu"), "w2": item("s2", "Vaasa"), "w3": item("s3", "Espoo")},
        "sessions": [
            // devserver
            {"packages": [{"commands": [
                ["DEFAULT", WEATHER, "{repo}/w1"],
                ["DEFAULT", "urn:oma:mo:ext-other:1.0", "{repo}/w1"],
                ["DEFAULT", WEATHER, format!("https://long.example/{}", "a".repeat(3000))]],
              "expect": [200, 403, 400]}]},
            // other
            {"packages": [{"commands": [["DEFAULT", WEATHER, "{repo}/w2"]], "expect": [409]}]},
            // devserver replaces its own
            {"packages": [{"commands": [["DEFAULT", WEATHER, "{repo}/w3"]], "expect": [200]}]},
            // other, once devserver's account is gone
            {"packages": [{"commands": [["DEFAULT", WEATHER, "{repo}/w2"]], "expect": [200]}]}]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let c = client(BTreeMap::new(), Limits::default());
    let first = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    let second = account_as(&c, "other", &srv, srv.ca_pem(), &[WEATHER]);
    for acc in [&first, &second, &first] {
        let outcome = c.engine.run(acc, alert::CLIENT_INITIATED, None).await;
        assert_eq!(outcome.status, 200, "{}: {outcome:?}", acc.srv_id);
    }
    assert!(c.engine.fetch_default(WEATHER).await.unwrap());
    assert_eq!(
        get(&c, &format!("{WEATHER}/s3/City")),
        Some(Value::Chr("Espoo".into())),
        "the first server's latest source"
    );

    c.auth
        .delete(
            &Principal::Admin,
            &format!("{}/{}/", builtin::DMACC, first.miid),
        )
        .unwrap();
    let outcome = c.engine.run(&second, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert!(c.engine.fetch_default(WEATHER).await.unwrap());
    assert_eq!(
        get(&c, &format!("{WEATHER}/s2/City")),
        Some(Value::Chr("Vaasa".into()))
    );
    srv.wait_for_sessions(4).await;
    assert_eq!(srv.failures(), Vec::<String>::new(), "{:#?}", srv.summary());
}

/// The next follow-up session the engine asks for (SHOWs are skipped).
async fn next_followup_session(c: &mut Client) -> (String, Option<String>) {
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(60), c.followups.recv())
            .await
            .expect("a follow-up in time")
            .expect("the engine lives");
        if let FollowUp::Session { srv_id, url } = next {
            return (srv_id, url);
        }
    }
}

/// The alerts of every Package#1 the server received, after the session reason.
fn package1_alerts(srv: &omadmd::devserver::RunningServer) -> Vec<Vec<serde_json::Value>> {
    package_bodies(srv, "package#1")
        .iter()
        .map(|b| b["Alert"].as_array().unwrap()[1..].to_vec())
        .collect()
}

#[tokio::test]
async fn async_execs_and_their_alerts_are_bounded_per_server() {
    let certs = tempfile::tempdir().unwrap();
    let go = certs.path().join("go");
    let scenario = json!({"name": "execs",
        "repository": {"w": [{"ClientURI": format!("{WEATHER}/s1/"),
                              "MOData": {"Weather": {"Wait": "", "Quick": ""}}}]},
        "sessions": [
            {"packages": [{"commands": [
                ["HGET", "{repo}/w"],
                ["EXEC", format!("{WEATHER}/s1/Wait"), "{dm}"],
                ["EXEC", format!("{WEATHER}/s1/Wait"), "{dm}"],
                ["EXEC", format!("{WEATHER}/s1/Wait"), "{dm}"],
                // Run within the session: not one of the asynchronous ones.
                ["EXEC", format!("{WEATHER}/s1/Quick")],
                ["EXEC", format!("{WEATHER}/s1/Quick"), format!("https://long.example/{}", "a".repeat(3000))]],
              "expect": [200, 202, 202, 429, 200, 400]}]},
            {"packages": [{"commands": [["EXEC", format!("{WEATHER}/s1/Quick"), "{dm}"]],
                           "expect": [202]}]}]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let exec = BTreeMap::from([
        (
            format!("{WEATHER}/*/Wait"),
            vec![
                "sh".to_owned(),
                "-c".to_owned(),
                format!(
                    "while [ ! -e '{}' ]; do sleep 0.05; done; echo waited",
                    go.display()
                ),
            ],
        ),
        (
            format!("{WEATHER}/*/Quick"),
            vec!["echo".to_owned(), "quick".to_owned()],
        ),
    ]);
    let limits = Limits {
        exec_concurrent: 2,
        pending_alerts_per_server: 3,
        ..Limits::default()
    };
    let mut c = client(exec, limits);
    let acc = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");

    // Both handlers finish; their results wait, with two more alerts after them: one
    // more than pending_alerts_per_server, so the oldest result goes.
    std::fs::write(&go, "").unwrap();
    for _ in 0..2 {
        assert_eq!(
            next_followup_session(&mut c).await,
            ("devserver".to_owned(), Some(srv.url().to_owned()))
        );
    }
    for n in 0..2 {
        let mut marker = omadmd::protocol::Alert::of_type(alert::EXEC_RESULT);
        marker.data = Some(json!({"marker": n}));
        c.engine.queue_alert(&acc.srv_id, &marker);
    }
    // A slot is free again: the next asynchronous EXEC runs.
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    srv.wait_for_sessions(2).await;
    assert_eq!(srv.failures(), Vec::<String>::new(), "{:#?}", srv.summary());
    let delivered = package1_alerts(&srv).remove(1);
    let text: Vec<String> = delivered.iter().map(|a| a["Data"].to_string()).collect();
    assert_eq!(text.len(), 3, "{text:?}");
    assert!(text[0].contains("waited"), "{text:?}");
    assert!(
        text[1].contains("\"marker\":0") && text[2].contains("\"marker\":1"),
        "{text:?}"
    );
}

#[tokio::test]
async fn package1_carries_the_waiting_alerts_that_fit_in_max_package_bytes() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(
        r#"{"name": "alerts", "packages": [{"commands": [["END"]]}]}"#,
        certs.path(),
    )
    .await;
    let limits = Limits {
        max_package_bytes: 4096,
        ..Limits::default()
    };
    let c = client(BTreeMap::new(), limits);
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    let alert_of = |n: usize, pad: usize| {
        let mut a = omadmd::protocol::Alert::of_type(alert::EXEC_RESULT);
        a.data = Some(json!({"n": n, "pad": "x".repeat(pad)}));
        a
    };
    for n in 0..10 {
        c.engine.queue_alert(&acc.srv_id, &alert_of(n, 1000));
        if n == 4 {
            // Larger than any Package#1 may be: never deliverable.
            c.engine.queue_alert(&acc.srv_id, &alert_of(99, 5000));
        }
    }
    let mut delivered = Vec::new();
    for session in 1..=6 {
        let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
        assert_eq!(outcome.status, 200, "{outcome:?}");
        let alerts = package1_alerts(&srv).remove(session - 1);
        if alerts.is_empty() {
            break;
        }
        delivered.push(
            alerts
                .iter()
                .map(|a| a["Data"]["n"].as_u64().unwrap())
                .collect::<Vec<_>>(),
        );
    }
    assert!(delivered.len() > 1, "over several sessions: {delivered:?}");
    assert_eq!(
        delivered.concat(),
        (0..10).collect::<Vec<u64>>(),
        "oldest first, each once: {delivered:?}"
    );
    for p1 in srv
        .transcript()
        .into_iter()
        .filter(|r| r.kind == "package#1" && r.direction == omadmd::devserver::Direction::In)
    {
        assert!(p1.bytes <= 4096, "a Package#1 of {} bytes", p1.bytes);
    }
}

#[tokio::test]
async fn one_show_per_package_and_server_uris_of_bounded_length() {
    let certs = tempfile::tempdir().unwrap();
    let long = format!("https://portal.example/{}", "a".repeat(3000));
    let scenario = json!({"name": "shows", "packages": [
        {"commands": [
            ["SHOW", "https://portal.example/1"],
            ["SHOW", "https://portal.example/2"],
            ["SHOW", long],
            // A CONT that is refused leaves the session where it was.
            ["CONT", format!("{{dm}}?{}", "a".repeat(3000))]],
         "expect": [200, 429, 400, 400]},
        {"commands": [["SHOW", "https://portal.example/3"]], "expect": [200]}]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let mut c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    srv.wait_for_sessions(1).await;
    assert_eq!(srv.failures(), Vec::<String>::new(), "{:#?}", srv.summary());
    let mut shown = Vec::new();
    while let Ok(f) = c.followups.try_recv() {
        if let FollowUp::Show { url, .. } = f {
            shown.push(url);
        }
    }
    assert_eq!(
        shown,
        ["https://portal.example/1", "https://portal.example/3"]
    );
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
        "[limits]\nsession_packages = 10\nsession_seconds = 5\npackage3_bytes = 4096\n\
         subscriptions_per_server = 1\n",
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
            {"packages": [{"commands": [["SUB", "urn:oma:mo:oma-dm-devinfo:1.0//", "{repo}/s"],
                                        ["SUB", DEVINFO_MAN, "{repo}/s"]],
                           "expect": [200, 413]}]},
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
        ("a SUB beyond subscriptions_per_server", 0, 200),
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
    srv.wait_for_sessions(9);
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
