//! DM sessions over real TLS on loopback: the session engine (with a real store) against
//! `omadm-devserver`, run in-process. Every command's success and error paths, all ten
//! ClientURI forms through GET, certificate refusal, HTTP errors without retry storms,
//! malformed packages, persisted alerts.

use std::collections::BTreeMap;
use std::sync::Arc;

use omadmd::authority::{Authority, Principal, Rights};
use omadmd::devserver::{DevServer, DevServerConfig, RunningServer, Scenario};
use omadmd::protocol::alert;
use omadmd::session::engine::FollowUp;
use omadmd::session::exec::ExecHandlers;
use omadmd::session::{Account, Engine, Limits, account};
use omadmd::store::{Bounds, Pool};
use omadmd::tree::builtin;
use omadmd::tree::node::Node;
use omadmd::tree::registry::Registry;
use omadmd::tree::value::Value;
use tokio::sync::mpsc;

pub(crate) const WEATHER: &str = "urn:oma:mo:ext-devserver-weather:1.0";

pub(crate) struct Client {
    pub(crate) auth: Arc<Authority>,
    pub(crate) store: Arc<Pool>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) followups: mpsc::Receiver<FollowUp>,
    _dir: tempfile::TempDir,
}

pub(crate) fn client(exec: BTreeMap<String, Vec<String>>, limits: Limits) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let store = Arc::new(Pool::open(&db, Bounds::default(), 1).unwrap());
    let auth = Arc::new(Authority::new(
        store.clone(),
        Registry::with_builtin(),
        Box::new(|_| {}),
    ));
    let devinfo = Node::Interior(BTreeMap::from([
        (
            "DevID".to_owned(),
            Node::Leaf(Value::Chr("urn:uuid:test-device".into())),
        ),
        ("Man".to_owned(), Node::Leaf(Value::Chr("ACME".into()))),
    ]));
    auth.provide(builtin::DEVINFO, "0", "DevInfo", &devinfo, Rights::READ)
        .unwrap();
    let (tx, followups) = omadmd::session::engine::follow_up_queue();
    let engine = Arc::new(Engine::new(
        auth.clone(),
        store.clone(),
        "urn:uuid:test-device".into(),
        limits,
        ExecHandlers::from_config(&exec).unwrap(),
        vec![],
        tx,
    ));
    Client {
        auth,
        store,
        engine,
        followups,
        _dir: dir,
    }
}

pub(crate) async fn server(scenario: &str, certs: &std::path::Path) -> RunningServer {
    let mut config = DevServerConfig::new(certs);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.scenario = Scenario::parse(scenario, "test").unwrap();
    DevServer::start(config).await.unwrap()
}

/// A DM account for `server` trusting `ca_pem`, permitted to manage `moids`.
pub(crate) fn account(c: &Client, server: &RunningServer, ca_pem: &str, moids: &[&str]) -> Account {
    account_as(c, "devserver", server, ca_pem, moids)
}

/// Like [`account`], with the server id `srv_id`.
pub(crate) fn account_as(
    c: &Client,
    srv_id: &str,
    server: &RunningServer,
    ca_pem: &str,
    moids: &[&str],
) -> Account {
    let perm: serde_json::Map<String, serde_json::Value> = moids
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("p{i}"), serde_json::json!({ "MOID": m })))
        .collect();
    let modata = serde_json::json!({"DMAcc": {
        "SrvID": srv_id, "SrvURI": server.url(), "Perm": perm, "Ext": {"CACert": ca_pem}}});
    c.auth
        .create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())
        .unwrap();
    account::load_all(&c.auth)
        .unwrap()
        .into_iter()
        .find(|a| a.srv_id == srv_id)
        .unwrap()
}

/// Runs a client-initiated session that must succeed.
async fn run_ok(c: &Client, acc: &Account) {
    let outcome = c.engine.run(acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
}

/// A local change as the admin, then the SUB deliveries it causes.
async fn set_and_deliver(c: &Client, uri: &str, value: omadmd::authority::Input) {
    let changes = c.auth.set(&Principal::Admin, uri, None, value).unwrap();
    omadmd::session::subscribe::deliver(c.engine.clone(), changes).await;
}

/// The bodies of the requests of one kind (`package#1`, `package#3`) the server received.
pub(crate) fn package_bodies(srv: &RunningServer, kind: &str) -> Vec<serde_json::Value> {
    srv.transcript()
        .into_iter()
        .filter(|r| r.kind == kind && r.direction == omadmd::devserver::Direction::In)
        .filter_map(|r| r.body)
        .collect()
}

pub(crate) fn get(c: &Client, uri: &str) -> Option<Value> {
    c.auth.get(&Principal::Admin, uri).ok()?.remove(0).value
}

#[tokio::test]
async fn a_session_runs_the_package_loop_and_changes_the_tree() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(
        r#"{"name": "loop",
            "repository": {"settings/weather": [{"ClientURI": "urn:oma:mo:ext-devserver-weather:1.0/station1/",
                           "MOData": {"Weather": {"City": "Oulu", "IntervalSeconds": 900}}}],
                           "settings/city": [{"ClientURI": "urn:oma:mo:ext-devserver-weather:1.0/station1/City",
                           "MOData": {"City": "Turku"}}]},
            "uploads": {"devices/devinfo": {"accept": ["application/vnd.oma.dm.mo+json"], "refuse_first": true}},
            "packages": [
              {"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"], ["HGET", "{repo}/settings/weather"],
                            ["GET", "urn:oma:mo:oma-dm-devinfo:1.0//Nope"], ["DELETE", "urn:oma:mo:oma-dm-devinfo:1.0//"]],
               "expect": [200, 200, 404, 405]},
              {"commands": [["HGET", "{repo}/settings/city", "urn:oma:mo:ext-devserver-weather:1.0/station1/City"],
                            ["HPUT", "{repo}/devices/devinfo", "urn:oma:mo:oma-dm-devinfo:1.0//"],
                            ["HPOST", "{repo}/devices/weather", "urn:oma:mo:ext-devserver-weather:1.0/station1/"],
                            ["HGET", "{repo}/missing"],
                            ["SHOW", "https://portal.example/"],
                            ["DEFAULT", "urn:oma:mo:ext-devserver-weather:1.0", "{repo}/settings/weather"]],
               "expect": [200, 200, 200, 404, 200, 200]},
              {"commands": [["DELETE", "urn:oma:mo:ext-devserver-weather:1.0/station1/IntervalSeconds"],
                            ["UNSUB", "urn:oma:mo:ext-devserver-weather:1.0/station1/"],
                            ["SUB", "urn:oma:mo:ext-devserver-weather:1.0/station1/", "{repo}/sub/weather"],
                            ["UNSUB", "urn:oma:mo:ext-devserver-weather:1.0/station1/"],
                            ["EXEC", "urn:oma:mo:ext-devserver-weather:1.0/station1/City"]],
               "expect": [200, 404, 200, 200, 501]}
            ]}"#,
        certs.path(),
    )
    .await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert_eq!(
        outcome.packages, 4,
        "three scripted Package#2 and the appended END"
    );
    srv.wait_for_sessions(1).await;
    assert!(
        srv.failures().is_empty(),
        "{:?}\n{:#?}",
        srv.failures(),
        srv.summary()
    );

    // HGET created the instance with the MIID the item named, owned by the server; the
    // second HGET replaced one leaf; DELETE removed another.
    assert_eq!(
        get(&c, &format!("{WEATHER}/station1/City")),
        Some(Value::Chr("Turku".into()))
    );
    assert!(get(&c, &format!("{WEATHER}/station1/IntervalSeconds")).is_none());
    let owner = c.auth.get_items(
        &Principal::Server("devserver".into()),
        &format!("{WEATHER}/station1/"),
    );
    assert!(
        owner.is_ok(),
        "the creating server owns the instance: {owner:?}"
    );
    // HPUT retried after 415 + OMADM-Accept and delivered DevInfo; HPOST delivered too.
    let uploads = srv.received("devices/devinfo");
    assert_eq!(
        uploads.iter().map(|u| u.status).collect::<Vec<_>>(),
        [415, 201]
    );
    let body: serde_json::Value = serde_json::from_slice(&uploads[1].body).unwrap();
    assert_eq!(body[0]["MOData"]["DevInfo"]["Man"], "ACME");
    assert_eq!(srv.received("devices/weather").len(), 1);
    // DevInfo is permanent: deleting it is 405 (PROTOCOL.md §4: before the rights check); it is still there.
    assert_eq!(
        get(&c, &format!("{}//Man", builtin::DEVINFO)),
        Some(Value::Chr("ACME".into()))
    );
}

#[tokio::test]
async fn get_with_a_matching_cache_validator_sends_no_data() {
    let certs = tempfile::tempdir().unwrap();
    let c = client(BTreeMap::new(), Limits::default());
    let cv = c
        .auth
        .get_items(&Principal::Admin, &format!("{}//", builtin::DEVINFO))
        .unwrap()[0]
        .cv
        .clone()
        .unwrap();
    let scenario = format!(
        r#"{{"name": "cv", "packages": [{{"commands": [
            ["GET", "urn:oma:mo:oma-dm-devinfo:1.0//?cv={cv}"],
            ["GET", "urn:oma:mo:oma-dm-devinfo:1.0//?cv=stale"],
            ["HPUT", "{{repo}}/up", "urn:oma:mo:oma-dm-devinfo:1.0//?cv={cv}"]],
            "expect": [304, 200, 304]}}]}}"#
    );
    let srv = server(&scenario, certs.path()).await;
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    run_ok(&c, &acc).await;
    srv.wait_for_sessions(1).await;
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());
    assert!(srv.received("up").is_empty(), "a 304 uploads nothing");
    let p3 = package_bodies(&srv, "package#3").remove(0);
    assert!(
        p3["Status"][0].get("Data").is_none(),
        "304 carries no data: {p3}"
    );
    assert!(
        p3["Status"][1]["Data"]
            .to_string()
            .contains("urn:uuid:test-device"),
        "{p3}"
    );
}

#[tokio::test]
async fn the_ten_clienturi_forms_work_through_get() {
    let certs = tempfile::tempdir().unwrap();
    let c = client(BTreeMap::new(), Limits::default());
    let fixture = r#"[
      {"ClientURI": "urn:oma:mo:moid:1.0/left/", "MOData": {"S": {"ID": "GPS", "Setting": "0xA1",
        "Data": {"1": {"Date": "12.1", "Value": "a"}, "2": {"Date": "12.2", "Value": "b"}}}}},
      {"ClientURI": "urn:oma:mo:moid:1.0/right/", "MOData": {"S": {"ID": "Temperature", "Setting": "0xB2",
        "Data": {"1": {"Date": "12.1", "Value": "c"}, "2": {"Date": "12.3", "Value": "d"}}}}}]"#;
    let items = omadmd::tree::json::parse_items(fixture).unwrap();
    let forms = [
        ("urn:oma:mo:moid:1.0/left/", 200),
        ("urn:oma:mo:moid:1.0//", 400),
        ("urn:oma:mo:moid:1.0/(x)/?nv=(x)/ID:Temperature", 200),
        ("urn:oma:mo:moid:1.0/(x)/Data/1/Value?nv=(x)/ID:GPS", 200),
        (
            "urn:oma:mo:moid:1.0/right/Data/(x)/Value?nv=(x)/Date:12.1",
            200,
        ),
        (
            "urn:oma:mo:moid:1.0/(x)/Data/(y)/Value?nv=(x)/ID:GPS&nv=(y)/Date:12.2",
            200,
        ),
        ("urn:oma:mo:moid:1.0/*/Setting", 200),
        ("urn:oma:mo:moid:1.0/(x)/Data/*/Value?nv=(x)/ID:GPS", 200),
        (
            "urn:oma:mo:moid:1.0/(x)/Data/*/Value?nv=(x)/ID:GPS&nv=(x)/Setting:0xB2",
            404,
        ),
        ("urn:oma:mo:moid:1.0/*/Data/*/Value", 200),
    ];
    let commands: Vec<serde_json::Value> = forms
        .iter()
        .map(|(u, _)| serde_json::json!(["GET", u]))
        .collect();
    let expect: Vec<u16> = forms.iter().map(|(_, sc)| *sc).collect();
    let scenario =
        serde_json::json!({"name": "uris", "packages": [{"commands": commands, "expect": expect}]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let acc = account(&c, &srv, srv.ca_pem(), &["urn:oma:mo:moid:1.0"]);
    // The server's instances, written as it (its account permits the MOID).
    c.auth
        .import_items(
            &Principal::Server("devserver".into()),
            &items,
            None,
            &|_| true,
        )
        .unwrap();
    run_ok(&c, &acc).await;
    srv.wait_for_sessions(1).await;
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());
    let p3 = package_bodies(&srv, "package#3").remove(0)["Status"].clone();
    let data = |i: usize| p3[i]["Data"].to_string();
    assert!(
        data(2).contains("urn:oma:mo:moid:1.0/right/ID") && data(2).contains("Temperature"),
        "{}",
        data(2)
    );
    assert!(
        data(5).contains("left/Data/2/Value") && data(5).contains("\"b\""),
        "{}",
        data(5)
    );
    assert_eq!(p3[9]["Data"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_wrong_server_certificate_means_no_session_and_no_change() {
    let certs = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let srv = server(r#"{"name": "x", "packages": [{"commands": [["DELETE", "urn:oma:mo:oma-dm-devinfo:1.0//Man"]]}]}"#, certs.path()).await;
    let impostor_ca = omadmd::devserver::Certificates::ensure(other.path(), &[]).unwrap();
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, &impostor_ca.ca_pem, &[]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 495, "{outcome:?}");
    assert_eq!(outcome.packages, 0);
    assert!(
        package_bodies(&srv, "package#1").is_empty(),
        "nothing reached the DM endpoint"
    );
    assert_eq!(
        get(&c, &format!("{}//Man", builtin::DEVINFO)),
        Some(Value::Chr("ACME".into()))
    );
}

#[tokio::test]
async fn http_errors_and_malformed_packages_abort_without_retrying() {
    let certs = tempfile::tempdir().unwrap();
    for (scenario, status, packages_seen) in [
        (
            r#"{"name": "e", "packages": [{"http_status": 503}]}"#,
            503,
            1,
        ),
        (
            r#"{"name": "e", "packages": [{"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//Man"]]}, {"http_status": 404}]}"#,
            404,
            2,
        ),
        (
            r#"{"name": "e", "packages": [{"raw": "{\"CMD\": 5}"}]}"#,
            400,
            1,
        ),
        (
            r#"{"name": "e", "packages": [{"raw": "not json"}]}"#,
            400,
            1,
        ),
    ] {
        let srv = server(scenario, certs.path()).await;
        let c = client(BTreeMap::new(), Limits::default());
        let acc = account(&c, &srv, srv.ca_pem(), &[]);
        let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
        assert_eq!(outcome.status, status, "{scenario}: {outcome:?}");
        let posts =
            package_bodies(&srv, "package#1").len() + package_bodies(&srv, "package#3").len();
        assert_eq!(
            posts,
            packages_seen,
            "{scenario}: no retry after an HTTP error: {:#?}",
            srv.summary()
        );
        srv.shutdown().await;
    }
}

#[tokio::test]
async fn a_package_above_the_limit_ends_the_session_with_413() {
    let certs = tempfile::tempdir().unwrap();
    let big: Vec<serde_json::Value> = (0..400)
        .map(|i| serde_json::json!(["GET", format!("urn:oma:mo:oma-dm-devinfo:1.0//N{i}")]))
        .collect();
    let scenario = serde_json::json!({"name": "big", "packages": [{"commands": big}]});
    let srv = server(&scenario.to_string(), certs.path()).await;
    let c = client(
        BTreeMap::new(),
        Limits {
            max_package_bytes: 4096,
            ..Limits::default()
        },
    );
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 413, "{outcome:?}");
    assert_eq!(
        outcome.commands, 0,
        "no command of the oversized package ran"
    );
}

#[tokio::test]
async fn unknown_and_malformed_commands_get_their_own_status() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(
        r#"{"name": "bad", "packages": [{"raw": "{\"CMD\": [[\"FROB\"], [\"GET\"], [\"GET\", \"urn:oma:mo:oma-dm-devinfo:1.0//Man\"], 7]}"}]}"#,
        certs.path(),
    )
    .await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    run_ok(&c, &acc).await;
    let p3 = package_bodies(&srv, "package#3").remove(0);
    let codes: Vec<u64> = p3["Status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sc"].as_u64().unwrap())
        .collect();
    assert_eq!(
        codes,
        [501, 400, 200, 400],
        "the session went on past the bad commands: {p3}"
    );
}

#[tokio::test]
async fn exec_runs_handlers_and_reports_async_results_in_a_new_session() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(
        r#"{"name": "exec",
            "repository": {"w": [{"ClientURI": "urn:oma:mo:ext-devserver-weather:1.0/s1/",
                                  "MOData": {"Weather": {"City": "Oulu", "Reset": "", "Other": ""}}}]},
            "sessions": [
             {"packages": [{"commands": [
                ["HGET", "{repo}/w"],
                ["EXEC", "urn:oma:mo:ext-devserver-weather:1.0/s1/City"],
                ["EXEC", "urn:oma:mo:ext-devserver-weather:1.0/s1/Reset", "{dm}"],
                ["EXEC", "urn:oma:mo:ext-devserver-weather:1.0/s1/Nope"],
                ["EXEC", "urn:oma:mo:ext-devserver-weather:1.0/s1/Other"],
                ["EXEC", "urn:oma:mo:oma-dm-devinfo:1.0//Man"],
                ["CONT", "{dm}"]],
               "expect": [200, 200, 202, 404, 501, 405, 200]}]},
             {"packages": [{"commands": [["END"]]}]}]}"#,
        certs.path(),
    )
    .await;
    let exec = BTreeMap::from([
        (format!("{WEATHER}/*/City"), vec!["true".to_owned()]),
        (
            format!("{WEATHER}/*/Reset"),
            vec![
                "sh".to_owned(),
                "-c".to_owned(),
                "echo done for $OMADM_SERVER_ID".to_owned(),
            ],
        ),
    ]);
    let mut c = client(exec, Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    run_ok(&c, &acc).await;
    // The async result asks for a follow-up session to its ServerURI, carrying the alert.
    let follow = tokio::time::timeout(std::time::Duration::from_secs(10), c.followups.recv())
        .await
        .unwrap()
        .unwrap();
    let FollowUp::Session { srv_id, url } = follow else {
        panic!("expected a follow-up session, got {follow:?}")
    };
    assert_eq!(srv_id, "devserver");
    let target = url.unwrap();
    assert_eq!(target, srv.url());
    let outcome = c
        .engine
        .run(&acc, alert::CLIENT_INITIATED, Some(&target))
        .await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    srv.wait_for_sessions(2).await;
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());
    let p1s: Vec<String> = package_bodies(&srv, "package#1")
        .iter()
        .map(|b| b.to_string())
        .collect();
    assert!(
        p1s[1].contains("ExecResult") && p1s[1].contains("done for devserver"),
        "{}",
        p1s[1]
    );
    assert!(!p1s[0].contains("ExecResult"), "{}", p1s[0]);
}

#[tokio::test]
async fn undelivered_alerts_persist_for_a_later_session() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(r#"{"name": "a", "sessions": [{"packages": [{"http_status": 503}]}, {"packages": [{"commands": [["END"]]}]}]}"#, certs.path()).await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    // Queue an alert as an async EXEC would, then fail the first session before Package#1 is accepted.
    let mut pending = omadmd::protocol::Alert::of_type(alert::EXEC_RESULT);
    pending.data = Some(serde_json::json!({"sc": 200}));
    c.engine.queue_alert(&acc.srv_id, &pending);
    assert_eq!(
        c.engine
            .run(&acc, alert::CLIENT_INITIATED, None)
            .await
            .status,
        503
    );
    run_ok(&c, &acc).await;
    let p1s: Vec<String> = package_bodies(&srv, "package#1")
        .iter()
        .map(|b| b.to_string())
        .collect();
    assert_eq!(p1s.len(), 2);
    assert!(
        p1s[0].contains("ExecResult") && p1s[1].contains("ExecResult"),
        "{p1s:?}"
    );
    run_ok(&c, &acc).await;
    let p1s: Vec<String> = package_bodies(&srv, "package#1")
        .iter()
        .map(|b| b.to_string())
        .collect();
    assert!(
        !p1s[2].contains("ExecResult"),
        "delivered alerts are not sent twice: {}",
        p1s[2]
    );
}

#[tokio::test]
async fn sub_puts_the_subtree_on_every_change_until_unsub() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(
        r#"{"name": "sub",
            "uploads": {"sub/devinfo": {"accept": ["application/vnd.oma.dm.mo+json"], "refuse_first": true}},
            "sessions": [
              {"packages": [{"commands": [["SUB", "urn:oma:mo:oma-dm-devinfo:1.0//", "{repo}/sub/devinfo"],
                                          ["SUB", "urn:oma:mo:oma-dm-devinfo:1.0//Nope", "{repo}/sub/x"]],
                             "expect": [200, 404]}]},
              {"packages": [{"commands": [["UNSUB", "urn:oma:mo:oma-dm-devinfo:1.0//"]], "expect": [200]}]}]}"#,
        certs.path(),
    )
    .await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    run_ok(&c, &acc).await;
    // A local change under the subscribed URI: the subtree goes to the server (after one 415
    // with OMADM-Accept, retried in the format it names).
    set_and_deliver(
        &c,
        &format!("{}//Man", builtin::DEVINFO),
        omadmd::authority::Input::Text("Initech".into()),
    )
    .await;
    let uploads = srv.received("sub/devinfo");
    assert_eq!(
        uploads.iter().map(|u| u.status).collect::<Vec<_>>(),
        [415, 201],
        "{uploads:?}"
    );
    assert!(String::from_utf8_lossy(&uploads[1].body).contains("Initech"));
    // A change elsewhere is not sent.
    let other = c
        .auth
        .create_instance(
            &Principal::Admin,
            "urn:oma:mo:ext-other:1.0",
            r#"{"O": {"A": 1}}"#,
        )
        .unwrap();
    set_and_deliver(&c, &format!("{other}A"), omadmd::authority::Input::Int(2)).await;
    assert_eq!(srv.received("sub/devinfo").len(), 2);
    // After UNSUB nothing more is sent.
    run_ok(&c, &acc).await;
    set_and_deliver(
        &c,
        &format!("{}//Man", builtin::DEVINFO),
        omadmd::authority::Input::Text("Globex".into()),
    )
    .await;
    assert_eq!(srv.received("sub/devinfo").len(), 2);
    srv.wait_for_sessions(2).await;
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());
}

#[tokio::test]
async fn show_is_handed_on_and_default_sources_fill_missing_mos() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(
        r#"{"name": "default",
            "repository": {"w": [{"ClientURI": "urn:oma:mo:ext-devserver-weather:1.0/s1/",
                                  "MOData": {"Weather": {"City": "Tampere"}}}]},
            "packages": [{"commands": [["SHOW", "https://portal.example/help"],
                                       ["DEFAULT", "urn:oma:mo:ext-devserver-weather:1.0", "{repo}/w"]],
                          "expect": [200, 200]}]}"#,
        certs.path(),
    )
    .await;
    let mut c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    run_ok(&c, &acc).await;
    let show = c.followups.try_recv().expect("SHOW was handed on");
    assert_eq!(
        show,
        FollowUp::Show {
            srv_id: "devserver".into(),
            url: "https://portal.example/help".into()
        }
    );
    // Nothing of that MOID is in the tree; the DEFAULT source fills it, without a session.
    assert!(get(&c, &format!("{WEATHER}/*/City")).is_none());
    let sessions_before = srv.finished_sessions();
    assert!(c.engine.fetch_default(WEATHER).await.unwrap());
    assert_eq!(
        get(&c, &format!("{WEATHER}/s1/City")),
        Some(Value::Chr("Tampere".into()))
    );
    assert_eq!(
        srv.finished_sessions(),
        sessions_before,
        "reported to no server"
    );
    assert!(
        !c.engine
            .fetch_default("urn:oma:mo:ext-none:1.0")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn format_negotiation_gives_406_and_415() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(
        r#"{"name": "formats",
            "repository": {
              "tnds": {"content_type": "application/vnd.syncml.dmtnds+xml", "body": "<MgmtTree/>"},
              "forced": {"content_type": "application/vnd.syncml.dmtnds+xml", "body": "<MgmtTree/>", "ignore_accept": true}},
            "uploads": {"only-xml": {"accept": ["application/vnd.syncml.dmtnds+xml"]}},
            "packages": [{"commands": [["HGET", "{repo}/tnds"], ["HGET", "{repo}/forced"],
                                       ["HPUT", "{repo}/only-xml", "urn:oma:mo:oma-dm-devinfo:1.0//"]],
                          "expect": [406, 415, 406]}]}"#,
        certs.path(),
    )
    .await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    run_ok(&c, &acc).await;
    srv.wait_for_sessions(1).await;
    assert!(
        srv.failures().is_empty(),
        "{:?}\n{:#?}",
        srv.failures(),
        srv.summary()
    );
}
