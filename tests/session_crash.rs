//! `kill -9` in the middle of DM sessions: a client process (this test binary re-run on the
//! `session_client_child` test with `OMADMD_SESSION_CRASH` set) runs sessions against an
//! in-process `omadm-devserver` that installs and deletes a 600-node MO instance over and
//! over; the parent kills the client at random moments. Every time, the store must pass
//! SQLite's integrity check and hold the instance whole or not at all. An asynchronous EXEC
//! result that was queued before the kill still goes out in the next session, and so does an
//! "interrupted" result for an EXEC whose handler the kill cut short.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use omadmd::authority::{Authority, Principal, Rights};
use omadmd::devserver::{DevServer, DevServerConfig, RunningServer, Scenario};
use omadmd::protocol::alert;
use omadmd::session::exec::ExecHandlers;
use omadmd::session::{Engine, Limits, account};
use omadmd::store::{Bounds, Pool, Store};
use omadmd::tree::builtin;
use omadmd::tree::node::Node;
use omadmd::tree::registry::Registry;
use omadmd::tree::uri::NodeAddr;
use omadmd::tree::value::Value;

const ENV: &str = "OMADMD_SESSION_CRASH";
const BIG: &str = "urn:oma:mo:ext-omadmd-crash:1.0";
const GROUPS: usize = 30;
const LEAVES: usize = 19;

/// The repository item: one instance `big` of GROUPS interior nodes with LEAVES leaves each.
fn big_item() -> serde_json::Value {
    let groups: serde_json::Map<String, serde_json::Value> = (0..GROUPS)
        .map(|g| {
            let leaves: serde_json::Map<String, serde_json::Value> = (0..LEAVES)
                .map(|l| (format!("L{l}"), serde_json::json!(g * 100 + l)))
                .collect();
            (format!("G{g}"), serde_json::Value::Object(leaves))
        })
        .collect();
    serde_json::json!([{"ClientURI": format!("{BIG}/big/"), "MOData": {"Big": groups}}])
}

async fn server(certs: &Path) -> RunningServer {
    let scenario = serde_json::json!({"name": "crash",
    "repository": {"big": big_item()},
    "packages": [
        {"commands": [["HGET", "{repo}/big"], ["EXEC", "urn:oma:mo:ext-omadmd-crash:1.0/big/G0/L0", "{dm}/results"]]},
        {"commands": [["DELETE", "urn:oma:mo:ext-omadmd-crash:1.0/big/"]]},
        {"commands": [["HGET", "{repo}/big"]]},
        {"commands": [["DELETE", "urn:oma:mo:ext-omadmd-crash:1.0/big/G3"], ["HGET", "{repo}/big"]]}
    ]});
    let mut config = DevServerConfig::new(certs);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.scenario = Scenario::parse(&scenario.to_string(), "crash").unwrap();
    DevServer::start(config).await.unwrap()
}

/// The client: a store at `db`, an account for the server at `url` trusting `ca_pem`.
fn engine(db: &Path, url: &str, ca_pem: &str) -> Arc<Engine> {
    let store = Arc::new(Pool::open(db, Bounds::default(), 1).unwrap());
    let auth = Arc::new(Authority::new(
        store.clone(),
        Registry::with_builtin(),
        Box::new(|_| {}),
    ));
    if account::load_all(&auth).unwrap().is_empty() {
        let devinfo = Node::Interior(BTreeMap::from([(
            "DevID".to_owned(),
            Node::Leaf(Value::Chr("urn:uuid:crash".into())),
        )]));
        auth.provide(builtin::DEVINFO, "0", "DevInfo", &devinfo, Rights::READ)
            .unwrap();
        let modata = serde_json::json!({"DMAcc": {"SrvID": "crash", "SrvURI": url,
            "Perm": {"p": {"MOID": BIG}}, "Ext": {"CACert": ca_pem}}});
        auth.create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())
            .unwrap();
    }
    let exec = BTreeMap::from([(
        format!("{BIG}/*/G0/L0"),
        vec!["sleep".to_owned(), "0.05".to_owned()],
    )]);
    let (tx, _rx) = omadmd::session::engine::follow_up_queue();
    // The receiver is dropped: follow-ups are not run here; their alerts stay queued.
    Arc::new(Engine::new(
        auth,
        store,
        "urn:uuid:crash".into(),
        Limits::default(),
        ExecHandlers::from_config(&exec).unwrap(),
        vec![],
        tx,
    ))
}

/// Checks the store after a kill; returns (instance present, pending alerts).
fn check(db: &Path) -> (bool, usize) {
    let store = Store::open(db).expect("the store opens after any crash");
    let conn = rusqlite::Connection::open(db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let pending: i64 = conn
        .query_row("SELECT count(*) FROM pending_alerts", [], |r| r.get(0))
        .unwrap();
    let Some(_) = store.instance(BIG, "big").unwrap() else {
        return (false, pending as usize);
    };
    let content = store.subtree(&NodeAddr::root(BIG, "big")).unwrap();
    let Node::Interior(groups) = &content else {
        panic!("root is interior")
    };
    // Whole (all groups) or whole minus G3 (the DELETE of one group was its own command).
    let expected_groups = if groups.contains_key("G3") {
        GROUPS
    } else {
        GROUPS - 1
    };
    assert_eq!(groups.len(), expected_groups, "an HGET was applied in part");
    for (name, group) in groups {
        let Node::Interior(leaves) = group else {
            panic!("{name} is interior")
        };
        assert_eq!(leaves.len(), LEAVES, "{name} lost leaves");
        let g: i64 = name[1..].parse().unwrap();
        for (l, leaf) in leaves {
            let l: i64 = l[1..].parse().unwrap();
            assert_eq!(leaf, &Node::Leaf(Value::Int(g * 100 + l)));
        }
    }
    (true, pending as usize)
}

/// Waits up to 5 s for exactly `n` pending alerts.
async fn wait_for_pending(db: &Path, n: usize) -> bool {
    for _ in 0..100 {
        if check(db).1 == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_client_child() {
    match std::env::var(ENV) {
        Ok(spec) => {
            let mut parts = spec.splitn(3, '\n');
            let (db, url, ca) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let ca_pem = std::fs::read_to_string(ca).unwrap();
            let engine = engine(Path::new(db), url, &ca_pem);
            let acc = account::load_all(engine.authority()).unwrap().remove(0);
            loop {
                engine.run(&acc, alert::CLIENT_INITIATED, None).await;
            }
        }
        Err(_) => {
            let certs = tempfile::tempdir().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("store.db");
            let srv = server(certs.path()).await;
            let engine = engine(&db, srv.url(), srv.ca_pem());
            let acc = account::load_all(engine.authority()).unwrap().remove(0);
            for _ in 0..3 {
                assert_eq!(
                    engine.run(&acc, alert::CLIENT_INITIATED, None).await.status,
                    200
                );
            }
            assert!(srv.failures().is_empty(), "{:?}", srv.failures());
            // The results are addressed to {dm}/results, not to the SrvURI these sessions
            // used: all three wait.
            assert!(wait_for_pending(&db, 3).await, "{:?}", check(&db));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_session_never_leaves_a_half_applied_command() {
    let certs = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let srv = server(certs.path()).await;
    let ca = certs.path().join("ca.pem");
    let exe = std::env::current_exe().unwrap();
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).unwrap();
    let mut rng = u64::from_le_bytes(seed) | 1;
    println!("seed {rng:#x}");
    let mut seen_present = 0;
    for _ in 0..15 {
        let mut child = Command::new(&exe)
            .args([
                "session_crash::session_client_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                ENV,
                format!("{}\n{}\n{}", db.display(), srv.url(), ca.display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(150 + rng % 400)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let (present, _) = check(&db);
        seen_present += usize::from(present);
    }
    assert!(
        srv.finished_sessions() >= 5,
        "the client made progress: {} sessions",
        srv.finished_sessions()
    );
    assert!(
        seen_present > 0,
        "the kills never found the instance installed"
    );

    // After the crashes, a restarted client reports the EXECs a kill interrupted (recorded
    // before their handler started, never finished) and delivers every EXEC result queued
    // before the kills with them (in a session to the results' ServerURI, as the follow-up
    // session would).
    let (_, queued) = check(&db);
    let engine = engine(&db, srv.url(), &std::fs::read_to_string(&ca).unwrap());
    let interrupted = engine.resume().unwrap();
    let (_, pending) = check(&db);
    // Within pending_alerts_per_server: beyond it the oldest go.
    let keep = Limits::default().pending_alerts_per_server;
    assert_eq!(pending, (queued + interrupted).min(keep));
    assert!(pending > 0, "EXEC results were queued before the kills");
    assert!(
        Store::open(&db).unwrap().async_execs().unwrap().is_empty(),
        "every recorded EXEC has its result queued"
    );
    let acc = account::load_all(engine.authority()).unwrap().remove(0);
    let before = srv.transcript().len();
    let target = format!("{}/results", srv.url());
    assert_eq!(
        engine
            .run(&acc, alert::CLIENT_INITIATED, Some(&target))
            .await
            .status,
        200
    );
    let p1 = srv.transcript()[before..]
        .iter()
        .find(|r| r.kind == "package#1")
        .and_then(|r| r.body.clone())
        .expect("a Package#1");
    let results = p1["Alert"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["AlertType"] == alert::EXEC_RESULT)
        .count();
    assert_eq!(results, pending, "every queued result went out: {p1}");
    assert!(
        wait_for_pending(&db, 1).await,
        "delivered results are dropped; only this session's own result waits: {:?}",
        check(&db)
    );
}
