//! Large objects (DM-HLF-022) end to end against an in-process `omadm-devserver` that
//! serves a file with ranges, validators and `Repr-Digest`, and cuts or refuses on cue:
//! - an HGET into a `bin` leaf lands whole through a cut connection and a `503` (bytes
//!   fetched in total at most 1.05 × the size); a GET of the leaf is `413`; an HPUT and a SUB
//!   delivery send the object itself;
//! - a `kill -9` of the client mid-transfer resumes from its last checkpoint, the client's
//!   peak RSS far below the object's size;
//! - a suspended transfer stays suspended across a restart and reports in an alert when
//!   resumed;
//! - a changed object starts over; a digest mismatch, or an object beyond its owner's
//!   quota, is refused and leaves nothing behind.
//!
//! The object's size in MiB is `OMADMD_TEST_OBJECT_MIB` (default 256).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use omadmd::authority::{AccessError, Authority, Principal, Rights};
use omadmd::devserver::{DevServer, DevServerConfig, RunningServer, Scenario};
use omadmd::protocol::alert;
use omadmd::session::exec::ExecHandlers;
use omadmd::session::{Engine, Limits, Tasks, account, subscribe};
use omadmd::store::{Bounds, Change, ChangeKind, Objects, Pool, Store};
use omadmd::transfer::{Board, State};
use omadmd::tree::builtin;
use omadmd::tree::node::Node;
use omadmd::tree::registry::Registry;
use omadmd::tree::uri::NodeAddr;
use omadmd::tree::value::{ObjectRef, Value, hex};
use sha2::{Digest as _, Sha256};

use crate::support::object;

const ENV: &str = "OMADMD_LARGE_OBJECT_CHILD";
const FW: &str = "urn:oma:mo:ext-omadmd-fw:1.0";

fn scenario(commands: serde_json::Value, expect: serde_json::Value) -> Scenario {
    let item = serde_json::json!([{"ClientURI": format!("{FW}/fw/"),
        "MOData": {"Firmware": {"Version": "1"}}}]);
    let scenario = serde_json::json!({"name": "large",
        "repository": {"fwmo": item},
        "sessions": [{"packages": [{"commands": commands, "expect": expect}]}]});
    Scenario::parse(&scenario.to_string(), "large").unwrap()
}

async fn server(
    certs: &Path,
    object: &Path,
    expect: serde_json::Value,
    configure: impl FnOnce(&mut DevServerConfig),
) -> RunningServer {
    let mut config = DevServerConfig::new(certs);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.objects = vec![format!("fw={}", object.display()).parse().unwrap()];
    config.scenario = scenario(
        serde_json::json!([
            ["HGET", "{repo}/fwmo"],
            ["HGET", "{repo}/objects/fw", format!("{FW}/fw/PkgData")]
        ]),
        expect,
    );
    configure(&mut config);
    DevServer::start(config).await.unwrap()
}

fn registry() -> Registry {
    let mut types = Registry::with_builtin();
    types
        .add_file(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/firmware.ddf"))
        .unwrap();
    types
}

/// The client: a store at `db`, an account for the server at `url` trusting `ca_pem`.
fn engine(db: &Path, url: &str, ca_pem: &str, limits: Limits) -> Arc<Engine> {
    engine_with(
        db,
        url,
        ca_pem,
        limits,
        Arc::default(),
        Tasks::new(),
        8 << 30,
    )
}

/// [`engine`] showing its transfers on `board`, its background work owned by `tasks`.
fn engine_with(
    db: &Path,
    url: &str,
    ca_pem: &str,
    limits: Limits,
    board: Arc<Board>,
    tasks: Tasks,
    owner_bytes: u64,
) -> Arc<Engine> {
    let store = Arc::new(Pool::open(db, Bounds::default(), 1).unwrap());
    let auth = Arc::new(
        Authority::new(store.clone(), registry(), Box::new(|_| {})).with_bounds(
            omadmd::authority::Bounds {
                owner_bytes,
                ..omadmd::authority::Bounds::default()
            },
        ),
    );
    if account::load_all(&auth).unwrap().is_empty() {
        let devinfo = Node::Interior(BTreeMap::from([(
            "DevID".to_owned(),
            Node::Leaf(Value::Chr("urn:uuid:large".into())),
        )]));
        auth.provide(builtin::DEVINFO, "0", "DevInfo", &devinfo, Rights::READ)
            .unwrap();
        let modata = serde_json::json!({"DMAcc": {"SrvID": "large", "SrvURI": url,
            "Perm": {"p": {"MOID": FW}}, "Ext": {"CACert": ca_pem}}});
        auth.create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())
            .unwrap();
    }
    let (tx, _rx) = omadmd::session::engine::follow_up_queue();
    Arc::new(
        Engine::new(
            auth,
            store,
            "urn:uuid:large".into(),
            limits,
            ExecHandlers::from_config(&BTreeMap::new()).unwrap(),
            vec![],
            tx,
        )
        .with_board(board)
        .with_tasks(tasks),
    )
}

/// The object the leaf holds, if it holds one.
fn held(engine: &Engine) -> Option<ObjectRef> {
    let found = engine
        .authority()
        .get(&Principal::Admin, format!("{FW}/fw/PkgData").as_str())
        .ok()?;
    match found.into_iter().next()?.value {
        Some(Value::Object(o)) => Some(o),
        _ => None,
    }
}

/// The store's object files and part files.
fn files(db: &Path) -> (Vec<String>, Vec<String>) {
    let dir = db.parent().unwrap().join("objects");
    let names = |d: PathBuf| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().unwrap().is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    (names(dir.clone()), names(dir.join("part")))
}

async fn session(engine: &Arc<Engine>) -> omadmd::session::engine::Outcome {
    let acc = account::load_all(engine.authority()).unwrap().remove(0);
    engine.run(&acc, alert::CLIENT_INITIATED, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_lands_whole_through_a_cut_and_a_503_and_goes_back_by_hput() {
    let size = object::size(256);
    let (certs, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let object = dir.path().join("fw.img");
    let digest = object::make(&object, size, 7);
    let cut = size * 2 / 5;
    let srv = server(certs.path(), &object, serde_json::json!([200, 200]), |c| {
        c.object_faults.cut_after = Some(cut);
        c.object_faults.cut_times = 1;
        c.object_faults.unavailable_after = Some(cut);
    })
    .await;
    let db = dir.path().join("state/store.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let engine = engine(&db, srv.url(), srv.ca_pem(), Limits::default());
    engine.resume_transfers().await.unwrap();
    let outcome = session(&engine).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());
    let held = held(&engine).expect("PkgData holds a large object");
    assert_eq!((held.size, held.sha256), (size, digest));
    let objects = Objects::beside(&db);
    let stored = std::fs::read(objects.path(&held)).unwrap();
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&stored)), digest);
    drop(stored);
    let stats = srv.object_stats();
    let sent = stats.objects.values().map(|o| o.bytes_sent).sum::<u64>();
    assert!(
        sent as f64 <= 1.05 * size as f64,
        "fetched {sent} bytes in total for an object of {size}"
    );
    let counters = stats.objects.values().next().unwrap();
    assert_eq!((counters.cut, counters.unavailable), (1, 1), "{stats:?}");
    assert_eq!(files(&db).1, Vec::<String>::new(), "no part file is left");
    // A GET of it stays within the reply limits: 413, the server HPUTs it instead.
    let err = engine
        .authority()
        .get_json(
            &Principal::Server("large".into()),
            format!("{FW}/fw/PkgData").as_str(),
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::Limit(_)), "{err}");
    drop(srv);

    // HPUT of the leaf sends the object itself, streamed, with its digest.
    let srv2 = {
        let mut config = DevServerConfig::new(certs.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.scenario = scenario(
            serde_json::json!([
                ["HPUT", "{repo}/up/fw", format!("{FW}/fw/PkgData")],
                ["SUB", format!("{FW}/fw/PkgData"), "{repo}/sub/fw"]
            ]),
            serde_json::json!([200, 200]),
        );
        DevServer::start(config).await.unwrap()
    };
    let acc = account::load_all(engine.authority()).unwrap().remove(0);
    let outcome = engine
        .run(&acc, alert::CLIENT_INITIATED, Some(srv2.url()))
        .await;
    assert_eq!(outcome.status, 200, "{outcome:?}\n{:?}", srv2.failures());
    let received = srv2.received(&format!("{}/up/fw", srv2.repo_url()));
    assert_eq!(received.len(), 1, "{received:?}");
    let file = received[0].file.as_ref().expect("streamed to a file");
    assert_eq!((file.size, hex(&file.sha256)), (size, hex(&digest)));
    assert_eq!(
        received[0].content_type.as_deref(),
        Some("application/octet-stream")
    );
    // A SUB delivery of the leaf sends the object itself too.
    let change = Change {
        seq: 0,
        addr: NodeAddr::root(FW, "fw").child("PkgData"),
        kind: ChangeKind::Replaced,
        writer: "srv:large".into(),
        at: 0,
        readers: vec![],
    };
    subscribe::deliver(engine.clone(), vec![change]).await;
    let delivered = srv2.received(&format!("{}/sub/fw", srv2.repo_url()));
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let file = delivered[0].file.as_ref().expect("streamed to a file");
    assert_eq!((file.size, hex(&file.sha256)), (size, hex(&digest)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_is_refused_and_leaves_nothing_behind() {
    let size = 8 << 20;
    let (certs, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let object = dir.path().join("fw.img");
    object::make(&object, size, 9);
    let srv = server(certs.path(), &object, serde_json::json!([200, 400]), |_| {}).await;
    // The server computed its digest at start; the bytes change under it, with the same
    // size and modification time (so the same ETag): its Repr-Digest is now wrong.
    let mtime = std::fs::metadata(&object).unwrap().modified().unwrap();
    {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&object)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"tampered", 4096).unwrap();
        file.set_modified(mtime).unwrap();
    }
    let db = dir.path().join("state/store.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let engine = engine(&db, srv.url(), srv.ca_pem(), Limits::default());
    engine.resume_transfers().await.unwrap();
    let outcome = session(&engine).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert!(
        srv.failures().is_empty(),
        "the HGET is refused with 400: {:?}",
        srv.failures()
    );
    assert_eq!(held(&engine), None, "the leaf holds no object");
    assert_eq!(
        files(&db),
        (vec![], vec![]),
        "no object or part file is left"
    );
    assert!(Store::open(&db).unwrap().transfers().unwrap().is_empty());
}

/// The client of the kill test: runs a session, then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the client process of kill_9_mid_transfer_resumes_from_the_last_checkpoint, which runs it"]
async fn large_object_client_child() {
    let spec =
        std::env::var(ENV).expect("run by the kill test, which sets OMADMD_LARGE_OBJECT_CHILD");
    let mut parts = spec.splitn(3, '\n');
    let (db, url, ca) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let ca_pem = std::fs::read_to_string(ca).unwrap();
    let engine = engine(Path::new(db), url, &ca_pem, Limits::default());
    engine.resume_transfers().await.unwrap();
    session(&engine).await;
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_transfer_resumes_from_the_last_checkpoint() {
    let size = object::size(256);
    let (certs, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let object = dir.path().join("fw.img");
    let first = object::make(&object, size, 11);
    let srv = server(
        certs.path(),
        &object,
        serde_json::json!([200, null]),
        |_| {},
    )
    .await;
    let db = dir.path().join("state/store.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let ca = certs.path().join("ca.pem");
    let child = |db: &Path| {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "large_objects::large_object_client_child",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env(
                ENV,
                format!("{}\n{}\n{}", db.display(), srv.url(), ca.display()),
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Read-only, without the store's set-up: the client may be migrating it.
    let done = |db: &Path| -> u64 {
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT done FROM transfers", [], |r| r.get::<_, i64>(0)))
            .map(|d| d as u64)
            .unwrap_or(0)
    };
    // Killed once a third has been checkpointed.
    let mut client = child(&db);
    let mut waited = 0;
    while done(&db) < size / 3 {
        assert!(waited < 1200, "the transfer never got a third of the way");
        if let Some(status) = client.try_wait().unwrap() {
            panic!("the client ended early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    // The client's memory stays bounded however large the object: it never holds it.
    let status = std::fs::read_to_string(format!("/proc/{}/status", client.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < 96 * 1024,
        "the client's peak RSS was {peak_kib} KiB while fetching {size} bytes"
    );
    client.kill().unwrap();
    client.wait().unwrap();
    let kept = done(&db);
    let before = srv.object_stats().bytes_sent;

    // A restarted client goes on from its checkpoint: the rest is all it fetches.
    let engine = engine(&db, srv.url(), srv.ca_pem(), Limits::default());
    engine.resume_transfers().await.unwrap();
    let mut waited = 0;
    while held(&engine).is_none() {
        assert!(waited < 2400, "the resumed transfer never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let object_ref = held(&engine).unwrap();
    assert_eq!((object_ref.size, object_ref.sha256), (size, first));
    let after = srv.object_stats().bytes_sent - before;
    assert!(
        after <= size - kept + (size / 20),
        "resumed at {kept}: fetched {after} more bytes of {size}"
    );
    let total = srv.object_stats().bytes_sent;
    assert!(
        total as f64 <= 1.05 * size as f64 + (8 << 20) as f64,
        "fetched {total} bytes in total for {size}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_object_starts_over_and_ends_as_the_new_one() {
    let size = 16 << 20;
    let (certs, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let object = dir.path().join("fw.img");
    object::make(&object, size, 13);
    let srv = server(certs.path(), &object, serde_json::json!([200, 200]), |c| {
        c.object_faults.cut_after = Some(size / 3);
        c.object_faults.cut_times = 1;
        // The first resume gets a 503: the next comes after two more seconds.
        c.object_faults.unavailable_after = Some(size / 3);
    })
    .await;
    let db = dir.path().join("state/store.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let engine = engine(&db, srv.url(), srv.ca_pem(), Limits::default());
    engine.resume_transfers().await.unwrap();
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { session(&engine).await }
    });
    // Between the cut and the resume (the first, a second later, is answered 503; the
    // second comes two seconds after it), a new version replaces the file.
    let mut waited = 0;
    while srv.object_stats().objects.values().all(|o| o.cut == 0) {
        assert!(waited < 1200, "the first response was never cut");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let next = dir.path().join("fw.next");
    let second = object::make(&next, size, 17);
    std::fs::rename(&next, &object).unwrap();
    let outcome = running.await.unwrap();
    assert_eq!(outcome.status, 200, "{outcome:?}");
    let held = held(&engine).expect("PkgData holds the new object");
    assert_eq!((held.size, held.sha256), (size, second));
    let sent = srv.object_stats().bytes_sent;
    assert!(sent <= size / 3 + size + (1 << 20), "{sent}");
}

/// Waits until `check` holds, for at most a minute.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_transfer_stays_suspended_across_a_restart_and_reports_when_resumed() {
    let size = object::size(256);
    let (certs, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let object = dir.path().join("fw.img");
    let digest = object::make(&object, size, 19);
    let srv = server(certs.path(), &object, serde_json::json!([200, 202]), |_| {}).await;
    let db = dir.path().join("state/store.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    // The command waits a second for its transfer, then answers 202.
    let limits = Limits {
        transfer_wait_seconds: 1,
        ..Limits::default()
    };
    let (board, tasks) = (Arc::new(Board::default()), Tasks::new());
    let engine = engine_with(
        &db,
        srv.url(),
        srv.ca_pem(),
        limits,
        board.clone(),
        tasks.clone(),
        8 << 30,
    );
    engine.resume_transfers().await.unwrap();
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { session(&engine).await }
    });
    until("progress", || board.get(1).is_some_and(|p| p.done > 0)).await;
    board.suspend(1).unwrap();
    until("suspension", || {
        board.get(1).is_some_and(|p| p.state == State::Suspended)
    })
    .await;
    let outcome = running.await.unwrap();
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert!(
        srv.failures().is_empty(),
        "the HGET answers 202: {:?}",
        srv.failures()
    );
    let sent = srv.object_stats().bytes_sent;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        srv.object_stats().bytes_sent,
        sent,
        "nothing moves while suspended"
    );
    assert!(sent < size, "suspended before the end");

    // omadmd stops and starts again: the transfer is still suspended.
    tasks
        .shutdown(Duration::from_secs(5), Duration::from_secs(1))
        .await;
    drop(engine);
    let board = Arc::new(Board::default());
    let engine = engine_with(
        &db,
        srv.url(),
        srv.ca_pem(),
        limits,
        board.clone(),
        Tasks::new(),
        8 << 30,
    );
    assert_eq!(engine.resume_transfers().await.unwrap(), 1);
    until("the board line", || board.get(1).is_some()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(board.get(1).unwrap().state, State::Suspended);
    assert_eq!(srv.object_stats().bytes_sent, sent, "still nothing moves");

    // Resumed, it ends where it would have, and its result waits for the server.
    board.resume(1).unwrap();
    until("the object", || held(&engine).is_some()).await;
    let object_ref = held(&engine).unwrap();
    assert_eq!((object_ref.size, object_ref.sha256), (size, digest));
    let total = srv.object_stats().bytes_sent;
    assert!(
        total as f64 <= 1.05 * size as f64,
        "fetched {total} for {size}"
    );
    let alerts = Store::open(&db).unwrap().pending_alerts("large").unwrap();
    let result = alerts
        .iter()
        .find(|a| a.alert_json.contains("TransferResult"))
        .expect("a TransferResult alert waits");
    let alert: serde_json::Value = serde_json::from_str(&result.alert_json).unwrap();
    assert_eq!(alert["Data"]["sc"], 200, "{alert}");
    assert_eq!(alert["Data"]["sha256"], hex(&digest), "{alert}");
    assert_eq!(alert["SourceURI"], format!("{FW}/fw/PkgData"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_beyond_its_owners_quota_is_refused_with_413_before_it_is_fetched() {
    let size = object::size(256);
    let (certs, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let object = dir.path().join("fw.img");
    object::make(&object, size, 23);
    let srv = server(certs.path(), &object, serde_json::json!([200, 413]), |_| {}).await;
    let db = dir.path().join("state/store.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    // The instance is the server's, which may keep 16 MiB.
    let engine = engine_with(
        &db,
        srv.url(),
        srv.ca_pem(),
        Limits::default(),
        Arc::default(),
        Tasks::new(),
        16 << 20,
    );
    engine.resume_transfers().await.unwrap();
    let outcome = session(&engine).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert!(
        srv.failures().is_empty(),
        "the HGET is 413: {:?}",
        srv.failures()
    );
    assert_eq!(held(&engine), None);
    assert_eq!(files(&db), (vec![], vec![]), "nothing is left behind");
    let sent = srv.object_stats().bytes_sent;
    assert!(
        sent < size / 4,
        "refused on its Content-Length, not after {sent} bytes"
    );
}
