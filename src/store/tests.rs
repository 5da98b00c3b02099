//! Unit tests of the store: transactions, journal, validators, errors, concurrency.

use std::collections::BTreeMap;

use super::*;
use crate::tree::node::Node;
use crate::tree::resolve::{TreeRead, resolve};
use crate::tree::uri::{ClientUri, NodeAddr};
use crate::tree::value::Value;

const MOID: &str = "urn:oma:mo:test:1.0";

fn leaf(s: &str) -> Node {
    Node::Leaf(Value::Chr(s.into()))
}

fn tree(pairs: &[(&str, Node)]) -> Node {
    Node::Interior(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn sample() -> Node {
    tree(&[
        ("ID", leaf("GPS")),
        (
            "Data",
            tree(&[
                ("1", tree(&[("Date", leaf("12.1"))])),
                ("2", tree(&[("Date", leaf("12.2"))])),
            ]),
        ),
    ])
}

fn create(store: &mut Store, miid: &str) -> NodeAddr {
    store
        .write(|tx| tx.create_instance(MOID, Some(miid), "Test", &sample(), "local"))
        .unwrap()
        .0
}

#[test]
fn instances_round_trip_with_journal_and_owner() {
    let mut store = Store::open_in_memory().unwrap();
    let (root, changes) = store
        .write(|tx| tx.create_instance(MOID, None, "Test", &sample(), "app:demo"))
        .unwrap();
    assert_eq!(root.miid, "1");
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].seq, changes[0].kind), (1, ChangeKind::Added));
    assert_eq!(store.subtree(&root).unwrap(), sample());
    assert_eq!(
        store.subtree(&root.child("Data")).unwrap(),
        sample().get("Data").unwrap().clone()
    );
    assert_eq!(store.subtree(&root.child("ID")).unwrap(), leaf("GPS"));
    let info = store.instance(MOID, "1").unwrap().unwrap();
    assert_eq!(
        (info.owner.as_str(), info.root_name.as_str()),
        ("app:demo", "Test")
    );
    assert_eq!(
        store.leaf(&root.child("ID")).unwrap(),
        Some((Value::Chr("GPS".into()), "app:demo".into()))
    );
    assert_eq!(
        store.stats().unwrap(),
        Stats {
            schema_version: schema::VERSION,
            instances: 1,
            nodes: 6,
            last_seq: 1
        }
    );
}

#[test]
fn put_adds_replaces_and_delete_removes_subtrees() {
    let mut store = Store::open_in_memory().unwrap();
    let root = create(&mut store, "a");
    let id = root.child("ID");
    let (kind, _) = store
        .write(|tx| tx.put(&id, &Node::Leaf(Value::Int(7)), "srv:x"))
        .unwrap();
    assert_eq!(kind, ChangeKind::Replaced);
    assert_eq!(
        store.leaf(&id).unwrap(),
        Some((Value::Int(7), "srv:x".into()))
    );
    let data3 = root.child("Data").child("3");
    let (kind, _) = store
        .write(|tx| tx.put(&data3, &tree(&[("Date", leaf("12.3"))]), "srv:x"))
        .unwrap();
    assert_eq!(kind, ChangeKind::Added);
    store
        .write(|tx| tx.put(&root.child("Data"), &leaf("flat"), "srv:x"))
        .unwrap();
    assert_eq!(
        store.children(MOID, "a", "Data").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.stats().unwrap().nodes, 2);
    store
        .write(|tx| tx.delete(&root.child("Data"), "srv:x"))
        .unwrap();
    assert_eq!(store.children(MOID, "a", "").unwrap(), ["ID"]);
    store.write(|tx| tx.delete(&root, "srv:x")).unwrap();
    assert_eq!(store.stats().unwrap().nodes, 0);
    assert!(store.instance(MOID, "a").unwrap().is_none());
    let kinds: Vec<_> = store
        .changes_since(0, 100)
        .unwrap()
        .iter()
        .map(|c| c.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "added", "replaced", "added", "replaced", "deleted", "deleted"
        ]
    );
    assert_eq!(store.changes_since(4, 1).unwrap()[0].seq, 5);
}

#[test]
fn deleting_a_subtree_leaves_siblings_with_similar_names() {
    let mut store = Store::open_in_memory().unwrap();
    let content = tree(&[
        ("A", tree(&[("x", leaf("1"))])),
        ("A-b", tree(&[("x", leaf("2"))])),
        ("A0", leaf("3")),
        ("AB", tree(&[("x", leaf("4"))])),
    ]);
    let root = store
        .write(|tx| tx.create_instance(MOID, Some("m"), "T", &content, "local"))
        .unwrap()
        .0;
    store
        .write(|tx| tx.delete(&root.child("A"), "local"))
        .unwrap();
    let left = store.subtree(&root).unwrap();
    assert_eq!(left.count(), 1 + 2 + 1 + 2);
    assert!(left.get("A").is_none() && left.get("A-b/x").is_some() && left.get("AB/x").is_some());
}

#[test]
fn errors_leave_nothing_behind() {
    let mut store = Store::open_in_memory().unwrap();
    let root = create(&mut store, "a");
    let err = store
        .write(|tx| tx.create_instance(MOID, Some("a"), "Test", &sample(), "local"))
        .unwrap_err();
    assert!(matches!(err, StoreError::InstanceExists { .. }), "{err}");
    let err = store
        .write(|tx| tx.put(&root.child("Nope").child("x"), &leaf("v"), "l"))
        .unwrap_err();
    assert!(matches!(err, StoreError::NoParent(_)), "{err}");
    let err = store
        .write(|tx| tx.put(&root.child("ID").child("x"), &leaf("v"), "l"))
        .unwrap_err();
    assert!(matches!(err, StoreError::NoParent(_)), "{err}");
    let err = store
        .write(|tx| tx.put(&root, &leaf("v"), "l"))
        .unwrap_err();
    assert!(matches!(err, StoreError::RootIsLeaf(_)), "{err}");
    let err = store
        .write(|tx| tx.delete(&root.child("Nope"), "l"))
        .unwrap_err();
    assert_eq!(err.to_string(), "urn:oma:mo:test:1.0/a/Nope: no such node");
    let cv = store.instance(MOID, "a").unwrap().unwrap().cv;
    let err = store
        .write(|tx| {
            tx.put(&root.child("ID"), &leaf("half"), "l")?;
            tx.delete(&root.child("Nope"), "l")
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchNode(_)));
    assert_eq!(
        store.subtree(&root).unwrap(),
        sample(),
        "the first put was rolled back"
    );
    assert_eq!(store.instance(MOID, "a").unwrap().unwrap().cv, cv);
    assert_eq!(store.last_seq().unwrap(), 1);
}

#[test]
fn cache_validator_moves_on_change_only_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = Store::open(&path).unwrap();
    let a = create(&mut store, "a");
    create(&mut store, "b");
    let cv_a = store.instance(MOID, "a").unwrap().unwrap().cv;
    let cv_b = store.instance(MOID, "b").unwrap().unwrap().cv;
    assert_ne!(cv_a, cv_b);
    store.subtree(&a).unwrap();
    assert_eq!(
        store.instance(MOID, "a").unwrap().unwrap().cv,
        cv_a,
        "reads do not move it"
    );
    store
        .write(|tx| tx.put(&a.child("Data").child("1").child("Date"), &leaf("x"), "l"))
        .unwrap();
    let cv_a2 = store.instance(MOID, "a").unwrap().unwrap().cv;
    assert_ne!(cv_a2, cv_a, "a deep change moves it");
    assert_eq!(
        store.instance(MOID, "b").unwrap().unwrap().cv,
        cv_b,
        "other instances keep theirs"
    );
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.instance(MOID, "a").unwrap().unwrap().cv, cv_a2);
    assert_eq!(
        json::tests::item(&store, &a).cv.as_deref(),
        Some(cv_a2.as_str())
    );
    assert_eq!(json::tests::item(&store, &a.child("ID")).cv, None);

    let other = tempfile::tempdir().unwrap();
    let mut fresh = Store::open(&other.path().join("store.db")).unwrap();
    create(&mut fresh, "a");
    assert_ne!(
        fresh.instance(MOID, "a").unwrap().unwrap().cv,
        cv_a,
        "a new store has a new epoch"
    );
}

#[test]
fn readers_do_not_wait_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut writer = Store::open(&path).unwrap();
    let reader = Store::open(&path).unwrap();
    reader.conn.busy_timeout(std::time::Duration::ZERO).unwrap();
    let root = create(&mut writer, "a");
    let id = root.child("ID");
    writer
        .write(|tx| {
            tx.put(&id, &leaf("new"), "l")?;
            let seen = reader
                .leaf(&id)
                .expect("a reader is never blocked")
                .map(|(v, _)| v);
            assert_eq!(
                seen,
                Some(Value::Chr("GPS".into())),
                "uncommitted data is invisible"
            );
            Ok::<_, StoreError>(())
        })
        .unwrap();
    assert_eq!(
        reader.leaf(&id).unwrap().map(|(v, _)| v),
        Some(Value::Chr("new".into()))
    );
}

#[test]
fn resolves_client_uris_against_the_store() {
    let mut store = Store::open_in_memory().unwrap();
    create(&mut store, "left");
    create(&mut store, "right");
    let uri = ClientUri::parse("urn:oma:mo:test:1.0/*/Data/(x)/Date?nv=(x)/Date:12.2").unwrap();
    let found: Vec<String> = resolve(&uri, &store, usize::MAX)
        .unwrap()
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        found,
        [
            "urn:oma:mo:test:1.0/left/Data/2/Date",
            "urn:oma:mo:test:1.0/right/Data/2/Date"
        ]
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(&path).err().unwrap();
    assert!(err.to_string().contains("version 99 is newer"), "{err}");
    assert_eq!(schema::VERSION, 11);
}

#[test]
fn grants_are_kept_per_instance_and_go_with_it() {
    let mut store = Store::open_in_memory().unwrap();
    let root = create(&mut store, "a");
    store
        .write(|tx| tx.set_grant(&root, "app:x", Rights::READ, "admin"))
        .unwrap();
    store
        .write(|tx| tx.set_grant(&root, "app:y", Rights::READ.union(Rights::WRITE), "admin"))
        .unwrap();
    store
        .write(|tx| tx.set_grant(&root, "app:y", Rights::WRITE, "admin"))
        .unwrap();
    assert_eq!(store.grant(&root, "app:x").unwrap(), Rights::READ);
    assert_eq!(
        store.grants(&root).unwrap(),
        [
            ("app:x".to_owned(), Rights::READ),
            ("app:y".to_owned(), Rights::WRITE)
        ]
    );
    store
        .write(|tx| tx.set_grant(&root, "app:x", Rights::NONE, "admin"))
        .unwrap();
    assert_eq!(store.grant(&root, "app:x").unwrap(), Rights::NONE);
    let err = store
        .write(|tx| tx.set_grant(&NodeAddr::root(MOID, "zz"), "app:x", Rights::READ, "admin"))
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchNode(_)));
    store.write(|tx| tx.delete(&root, "l")).unwrap();
    create(&mut store, "a");
    assert_eq!(
        store.grants(&root).unwrap(),
        [],
        "a recreated instance starts without grants"
    );
}

/// An instance's size as the quota sees it, recomputed from its rows.
fn recount(store: &Store, moid: &str, miid: &str) -> (u64, u64) {
    store
        .conn
        .query_row(
            "SELECT i.bytes, (SELECT total(32 + length(CAST(parent AS BLOB)) + length(CAST(name AS BLOB)) \
             + ifnull(length(CAST(value AS BLOB)), 0) + length(CAST(writer AS BLOB))) \
             FROM nodes WHERE inst = i.id) FROM instances i WHERE moid = ?1 AND miid = ?2",
            [moid, miid],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, f64>(1)? as u64)),
        )
        .unwrap()
}

#[test]
fn instance_sizes_follow_every_change() {
    let mut store = Store::open_in_memory().unwrap();
    let tree = |v: &str| {
        Node::Interior(BTreeMap::from([
            ("ID".to_owned(), Node::Leaf(Value::Chr(v.into()))),
            (
                "Sub".to_owned(),
                Node::Interior(BTreeMap::from([(
                    "Blob".to_owned(),
                    Node::Leaf(Value::Bin(vec![0; 100])),
                )])),
            ),
        ]))
    };
    let (root, _) = store
        .write(|tx| tx.create_instance(MOID, Some("1"), "Test", &tree("a"), "app:x"))
        .unwrap();
    let check = |store: &Store| {
        let (kept, counted) = recount(store, MOID, "1");
        assert_eq!(kept, counted);
        kept
    };
    let first = check(&store);
    let row = |parent: u64, name: u64, value: u64| ROW_OVERHEAD + parent + name + value + 5;
    assert_eq!(
        first,
        row(0, 2, 1) + row(0, 3, 0) + row(3, 4, 100),
        "paths, names, values and writers, in bytes"
    );
    store
        .write(|tx| {
            tx.put(
                &root.child("ID"),
                &Node::Leaf(Value::Chr("é".repeat(10))),
                "app:x",
            )
        })
        .unwrap();
    assert_eq!(check(&store), first - 1 + 20);
    store
        .write(|tx| tx.delete(&root.child("Sub"), "app:x"))
        .unwrap();
    assert_eq!(check(&store), row(0, 2, 20));
    store
        .write(|tx| tx.put(&root, &tree("b"), "app:x"))
        .unwrap();
    assert_eq!(check(&store), first);
    let usage = store.write(|tx| tx.usage("app:x")).unwrap().0;
    assert_eq!(
        usage,
        Usage {
            instances: 1,
            bytes: first
        }
    );
}

#[test]
fn writes_stop_at_the_tree_depth_and_the_journal_is_pruned() {
    let mut store = Store::open_in_memory().unwrap().with_bounds(Bounds {
        journal_entries: 2,
        tree_depth: 2,
    });
    let (root, _) = store
        .write(|tx| tx.create_instance(MOID, Some("1"), "Test", &Node::empty(), "app:x"))
        .unwrap();
    let deep = Node::Interior(BTreeMap::from([(
        "b".to_owned(),
        Node::Interior(BTreeMap::from([(
            "c".to_owned(),
            Node::Leaf(Value::Int(1)),
        )])),
    )]));
    let err = store
        .write(|tx| tx.put(&root.child("a"), &deep, "app:x"))
        .unwrap_err();
    assert!(matches!(err, StoreError::TooDeep { max: 2, .. }), "{err}");
    assert_eq!(store.kind(MOID, "1", "a").unwrap(), None, "rolled back");
    for i in 0..4 {
        store
            .write(|tx| tx.put(&root.child("v"), &Node::Leaf(Value::Int(i)), "app:x"))
            .unwrap();
    }
    assert_eq!(store.last_seq().unwrap(), 5);
    assert!(matches!(
        store.changes_since(0, 10),
        Err(StoreError::JournalPruned {
            since: 0,
            oldest: 4
        })
    ));
    assert_eq!(store.changes_since(3, 10).unwrap().len(), 2);
}

/// Every statement `store`'s connection holds prepared (its statement cache), with one of
/// its counters (`SQLITE_STMTSTATUS_*`), reset to 0 with `reset`.
fn statement_status(store: &Store, counter: i32, reset: bool) -> Vec<(String, i32)> {
    use rusqlite::ffi;
    let mut held = Vec::new();
    // SAFETY: the handle belongs to `store`, which outlives the walk; nothing else uses the
    // connection meanwhile, so no statement is finalized while it is visited, and
    // sqlite3_sql's text lives as long as its statement.
    unsafe {
        let db = store.conn.handle();
        let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            let count = ffi::sqlite3_stmt_status(stmt, counter, i32::from(reset));
            let sql = std::ffi::CStr::from_ptr(ffi::sqlite3_sql(stmt))
                .to_string_lossy()
                .into_owned();
            held.push((sql, count));
            stmt = ffi::sqlite3_next_stmt(db, stmt);
        }
    }
    held
}

/// How many times SQLite re-prepared each statement `store` holds.
fn reprepares(store: &Store) -> Vec<(String, i32)> {
    statement_status(store, rusqlite::ffi::SQLITE_STMTSTATUS_REPREPARE, false)
}

impl Store {
    /// The statements this connection ran since the last call (those run at least once),
    /// with how many times each ran.
    pub(crate) fn take_statement_runs(&self) -> Vec<(String, i32)> {
        let mut ran = statement_status(self, rusqlite::ffi::SQLITE_STMTSTATUS_RUN, true);
        ran.retain(|(_, n)| *n > 0);
        ran
    }
}

/// Inside a snapshot a node whose kind was asked is serialized from the row that answered:
/// one query for a small value; a value past the kept size is read again, whole; the row
/// of another node is never taken for it.
#[test]
fn a_resolved_node_is_serialized_from_its_kept_row() {
    let mut store = Store::open_in_memory().unwrap();
    let root = create(&mut store, "a");
    let big = "x".repeat(5000);
    store
        .write(|tx| tx.put(&root.child("Big"), &leaf(&big), "local"))
        .unwrap();
    let id = root.child("ID");
    let date = root.child("Data").child("1").child("Date");
    let node_reads = |store: &Store| -> i32 {
        store
            .take_statement_runs()
            .iter()
            .filter(|(sql, _)| sql.contains("FROM nodes"))
            .map(|(_, n)| n)
            .sum()
    };
    store.take_statement_runs();
    for (asked, shown, value, reads) in [
        (&id, &id, "GPS", 1),
        (&root.child("Big"), &root.child("Big"), big.as_str(), 2),
        (&id, &date, "12.1", 2),
    ] {
        let item = store
            .snapshot(|s| {
                s.kind(&asked.moid, &asked.miid, &asked.path).unwrap();
                json::tests::item(s, shown)
            })
            .unwrap();
        let name = shown.path.rsplit('/').next().unwrap();
        assert_eq!(item.mo_data[name], serde_json::json!(value), "{shown}");
        assert_eq!(node_reads(&store), reads, "{asked} then {shown}");
    }
}

/// A create with a fresh MIID, a grant, its revocation and a replacement of the whole
/// instance run only statements the connection keeps prepared: none is compiled per call.
#[test]
fn writes_run_from_cached_statements() {
    let mut store = Store::open_in_memory().unwrap();
    let root = create(&mut store, "first");
    store.take_statement_runs();
    for round in 0..3 {
        let (fresh, _) = store
            .write(|tx| tx.create_instance(MOID, None, "Test", &sample(), "app:x"))
            .unwrap();
        store
            .write(|tx| {
                tx.set_grant(&fresh, "app:y", Rights::READ, "admin")?;
                tx.set_grant(&fresh, "app:y", Rights::NONE, "admin")?;
                tx.put(&root, &sample(), "app:x")
            })
            .unwrap();
        let ran = store.take_statement_runs();
        for sql in [
            "INSERT INTO instances",
            "UPDATE meta SET value = value + 1",
            "INSERT INTO grants",
            "DELETE FROM grants",
            "DELETE FROM nodes WHERE inst = ?1",
        ] {
            assert!(
                ran.iter().any(|(held, _)| held.starts_with(sql)),
                "round {round}: {sql:?} did not run from the statement cache: {ran:#?}"
            );
        }
    }
}

/// The hot queries run again and again with other bound values (instance ids from 1,
/// paths, principals, LIMITs) on one connection: SQLite never compiles a cached statement
/// again, and the cache holds them all (none was evicted).
#[test]
fn cached_statements_are_never_prepared_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("store.db")).unwrap();
    let miids = ["a", "b", "c", "d", "e"];
    let roots: Vec<NodeAddr> = miids.iter().map(|m| create(&mut store, m)).collect();
    for (round, root) in roots.iter().enumerate() {
        let principal = format!("app:{round}");
        let value = Node::Leaf(Value::Int(round as i64));
        store
            .write(|tx| {
                tx.set_grant(root, &principal, Rights::READ, "admin")?;
                tx.put(&root.child("ID"), &value, "app:x")
            })
            .unwrap();
        for addr in [
            root.clone(),
            root.child("Data"),
            root.child("ID"),
            root.child("Data").child("2"),
        ] {
            store.subtree(&addr).unwrap();
            json::tests::item(&store, &addr);
            store.leaf(&addr).unwrap();
            store.writers(&addr, true).unwrap();
            store.writers(&addr, false).unwrap();
            store.kind(&addr.moid, &addr.miid, &addr.path).unwrap();
            store.children(&addr.moid, &addr.miid, &addr.path).unwrap();
            store
                .each_leaf(std::slice::from_ref(&addr), |_, _| Ok::<_, StoreError>(()))
                .unwrap();
        }
        store
            .each_leaf(&[root.child("Data"), root.child("ID")], |_, _| {
                Ok::<_, StoreError>(())
            })
            .unwrap();
        store.grants(root).unwrap();
        store.grant(root, &principal).unwrap();
        store.changes_since(round as u64, round + 1).unwrap();
        store.instances(MOID).unwrap();
        store
            .instances(&format!("urn:oma:mo:other:{round}"))
            .unwrap();
        store.instance(MOID, &root.miid).unwrap();
        store.usage(&principal).unwrap();
        store.list_instances().unwrap();
        store
            .snapshot(|s| json::tests::instances(s, MOID, &miids))
            .unwrap();
    }
    let held = reprepares(&store);
    let again: Vec<&(String, i32)> = held.iter().filter(|(_, n)| *n > 0).collect();
    assert!(
        again.is_empty(),
        "{} of {} statements were prepared again: {again:#?}",
        again.len(),
        held.len()
    );
    assert!(
        held.len() > 20 && held.len() < STATEMENTS_KEPT,
        "{} statements held: the cache filled up, so some were evicted and compiled again",
        held.len()
    );
}

#[test]
fn instances_are_found_by_a_leaf_and_grandchildren_read_in_one_go() {
    let mut store = Store::open_in_memory().unwrap();
    let account = |id: &str, moids: &[&str]| {
        let perm = moids
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("p{i}"), tree(&[("MOID", leaf(m))])))
            .collect::<BTreeMap<_, _>>();
        tree(&[
            ("SrvID", leaf(id)),
            ("Perm", Node::Interior(perm)),
            ("Other", tree(&[("x", tree(&[("MOID", leaf("deeper"))]))])),
        ])
    };
    store
        .write(|tx| {
            tx.create_instance(
                MOID,
                Some("b"),
                "A",
                &account("one", &["m1", "m2"]),
                "admin",
            )?;
            tx.create_instance(MOID, Some("a"), "A", &account("two", &[]), "admin")?;
            tx.create_instance(MOID, Some("c"), "A", &account("one", &["m3"]), "admin")
        })
        .unwrap();
    assert_eq!(
        store
            .instance_where(MOID, "SrvID", "one")
            .unwrap()
            .as_deref(),
        Some("b"),
        "the first by MIID"
    );
    assert_eq!(store.instance_where(MOID, "SrvID", "three").unwrap(), None);
    let perm = |miid: &str| NodeAddr::root(MOID, miid).child("Perm");
    assert_eq!(
        store.grandchild_texts(&perm("b"), "MOID").unwrap(),
        ["m1", "m2"]
    );
    assert!(
        store
            .grandchild_texts(&perm("a"), "MOID")
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .grandchild_texts(&perm("z"), "MOID")
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .grandchild_texts(&NodeAddr::root(MOID, "c"), "MOID")
            .unwrap(),
        Vec::<String>::new(),
        "Perm/p0/MOID and Other/x/MOID are great-grandchildren of the root"
    );
}
