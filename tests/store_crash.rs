//! Crash safety: a writer process is killed with SIGKILL at random moments; every time, the
//! store must pass SQLite's integrity check and omadmd's own invariants — each transaction
//! is there whole or not at all.
//!
//! The writer is this test binary itself, re-run on the `writer_child` test with
//! `OMADMD_CRASH_STORE` set; without the variable that test runs a bounded number of writer
//! rounds in-process and checks the same invariants.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use omadmd::store::{Store, StoreError};
use omadmd::tree::node::Node;
use omadmd::tree::uri::NodeAddr;
use omadmd::tree::value::Value;

const MOID: &str = "urn:oma:mo:ext-omadmd-crashtest:1.0";
const ENV: &str = "OMADMD_CRASH_STORE";

/// The content of the `main` instance at generation `g`: 10 groups of 5 leaves, all `g`.
fn generation(g: i64) -> Node {
    let group = |_| {
        Node::Interior(
            (0..5)
                .map(|i| (format!("v{i}"), Node::Leaf(Value::Int(g))))
                .collect(),
        )
    };
    Node::Interior(
        (0..10)
            .map(|k| (format!("g{k}"), group(k)))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// One writer round: three kinds of multi-statement transactions.
fn write_round(store: &mut Store, g: i64) {
    let main = NodeAddr::root(MOID, "main");
    store
        .write(|tx| {
            if !tx.has_instance(MOID, "main")? {
                tx.create_instance(MOID, Some("main"), "Crash", &generation(0), "local")?;
            }
            match g % 3 {
                0 => {
                    tx.put(&main, &generation(g), "local")?;
                }
                1 => {
                    for k in 0..10 {
                        for i in 0..5 {
                            let leaf = main.child(&format!("g{k}")).child(&format!("v{i}"));
                            tx.put(&leaf, &Node::Leaf(Value::Int(g)), "local")?;
                        }
                    }
                }
                _ => {
                    tx.put(&main, &generation(g), "local")?;
                    tx.create_instance(
                        MOID,
                        Some(&format!("t{g}")),
                        "Crash",
                        &Node::empty(),
                        "local",
                    )?;
                    let old = format!("t{}", g - 3);
                    if tx.has_instance(MOID, &old)? {
                        tx.delete(&NodeAddr::root(MOID, &old), "local")?;
                    }
                }
            }
            Ok::<_, StoreError>(())
        })
        .expect("write round");
}

/// The generation found in the store, after checking every invariant.
fn check_invariants(path: &Path) -> i64 {
    let store = Store::open(path).expect("the store opens (and migrates) after any crash");
    let conn = rusqlite::Connection::open(path).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let stale: i64 = conn
        .query_row(
            "SELECT count(*) FROM instances i WHERE cv_seq != \
             (SELECT max(seq) FROM journal j WHERE j.moid = i.moid AND j.miid = i.miid)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        stale, 0,
        "every cache validator matches the instance's last journal entry"
    );
    drop(conn);

    let Some(_) = store.instance(MOID, "main").unwrap() else {
        assert_eq!(store.stats().unwrap().instances, 0);
        return -1;
    };
    let content = store.subtree(&NodeAddr::root(MOID, "main")).unwrap();
    let mut values = Vec::new();
    content.walk(&mut |_, n| {
        if let Node::Leaf(Value::Int(v)) = n {
            values.push(*v);
        }
    });
    assert_eq!(values.len(), 50, "no node of the instance is missing");
    let g = values[0];
    assert!(
        values.iter().all(|v| *v == g),
        "all leaves come from one transaction: {values:?}"
    );
    let temps: Vec<String> = store
        .list_instances()
        .unwrap()
        .into_iter()
        .map(|i| i.miid)
        .filter(|m| m.starts_with('t'))
        .collect();
    // Temporaries are made at generations 2, 5, 8, ... and each deletes the one before.
    let expected: Vec<String> = match g {
        ..2 => vec![],
        _ => vec![format!("t{}", g - (g - 2).rem_euclid(3))],
    };
    assert_eq!(
        temps, expected,
        "create and delete happened together (generation {g})"
    );
    g
}

#[test]
fn writer_child() {
    match std::env::var_os(ENV) {
        Some(path) => {
            let path = Path::new(&path);
            let mut g = check_invariants(path).max(0);
            let mut store = Store::open(path).unwrap();
            loop {
                g += 1;
                write_round(&mut store, g);
            }
        }
        None => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store.db");
            let mut store = Store::open(&path).unwrap();
            for g in 1..=30 {
                write_round(&mut store, g);
            }
            assert_eq!(check_invariants(&path), 30);
        }
    }
}

#[test]
fn store_survives_kill_9_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).unwrap();
    let mut rng = u64::from_le_bytes(seed) | 1;
    println!("seed {rng:#x}");
    let exe = std::env::current_exe().unwrap();
    let mut last = -1;
    let mut progressed = 0;
    for round in 0..25 {
        let mut child = Command::new(&exe)
            .args([
                "store_crash::writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(30 + rng % 150));
        child.kill().unwrap();
        child.wait().unwrap();
        let g = check_invariants(&path);
        assert!(
            g >= last,
            "round {round}: committed generation went back from {last} to {g}"
        );
        if g > last {
            progressed += 1;
        }
        last = g;
    }
    assert!(
        progressed >= 10,
        "the writer made progress in only {progressed} of 25 rounds"
    );
}
