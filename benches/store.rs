//! Store benchmark: how fast the SQLite store of Management Objects is on a realistic
//! 100,000-node tree, next to raw rusqlite doing the same work on the same data and schema.
//!
//! Run it with `cargo bench --bench store` (release build; a few seconds of work).
//!
//! It builds, in a temporary directory, a store of 1,000 instances of 100 nodes each (a
//! root with 10 interior groups `G0`..`G9` of 9 leaves `L0`..`L8`, chr and int) plus one
//! instance of 10,000 nodes, and measures:
//!
//! 1. bulk import rate: [`Store::write`] creating the 1,000 instances, 100 per transaction;
//! 2. leaf Get by ClientURI: parse + resolve + [`Store::leaf`] on random leaves, in one
//!    [`Store::snapshot`] as the daemon reads;
//! 3. wildcard resolve `*/G3/L4` across the 1,000 instances (in one snapshot);
//! 4. the 10,000-node instance as an MO serialization item (JSON text);
//! 5. all 1,000 small instances as one array of MO serialization items (a GetJson-shaped
//!    read of many instances: per-instance costs show here, not in 4);
//! 6. one-leaf replace, journal entry and cache validator included;
//! 7. peak RSS of the whole process (`VmHWM`).
//!
//! Each operation also runs as a raw-rusqlite baseline without the store's layers: plain
//! prepared statements on an identically shaped schema (imports and replaces go to a
//! second database file, reads go to the store's own file), with the store's pragmas (WAL,
//! `synchronous=NORMAL`, foreign keys on). The table reports both, their ratio and the
//! target. A missed target is reported, not a failure; any error exits non-zero.

use std::collections::BTreeMap;
use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use omadmd::store::{ItemsArray, SHOW_ALL, Store};
use omadmd::tree::json::MoItem;
use omadmd::tree::resolve::resolve;
use omadmd::tree::uri::{ClientUri, NodeAddr};
use omadmd::tree::{Node, Value};
use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Map, Value as J};

mod common;

/// The device data set, timing and raw-rusqlite baseline shared with the session bench.
mod sqlite {
    crate::sqlite_harness!();
}

use common::{Samples, build, cores, print_table, print_targets_met};
use sqlite::{
    BATCH, Bench, GROUPS, INSTANCES, LEAVES, LeafSelect, MOID, NODES_PER_INSTANCE, ROOT_NAME,
    create_batch, device_batch, leaf_picks, leaf_value, miid, open_raw,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// MOID, MIID and root name of the 10,000-node instance: 100 entries `E000`..`E099`, each
/// with 9 leaves `A0`..`A8` and 10 sub-groups `S0`..`S9` of 8 leaves `B0`..`B7`.
const BIG_MOID: &str = "urn:oma:mo:ext-bench-log:1.0";
const BIG_MIID: &str = "big";
const BIG_ROOT: &str = "Log";
const BIG_NODES: usize = 10_000;

const OWNER: &str = "srv:bench";
const WILDCARD: &str = "urn:oma:mo:ext-bench-device:1.0/*/G3/L4";

fn main() -> Result<()> {
    let cores = cores();
    println!(
        "omadmd store bench: {cores} cores, SQLite {}, {} build",
        rusqlite::version(),
        build()
    );
    println!(
        "columns: ours = the store's public API, base = raw rusqlite on the same data and schema; \
         median and p99 per op; ratio = ours/base (nodes/s: < 1 is slower; times: > 1 is slower); \
         targets apply to ours (median)"
    );

    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let mut store = Store::open(&dir.path().join("store.db"))?;
    // The baseline database gets the store's own schema (migrations included); after that
    // it is written with raw SQL only.
    let baseline = dir.path().join("baseline.db");
    drop(Store::open(&baseline)?);
    let mut base = open_raw(&baseline)?;
    let raw = open_raw(&dir.path().join("store.db"))?;

    let mut rows = vec![bulk_import(&mut store, &mut base)?];
    create_big_instance(&mut store)?;
    let stats = store.stats()?;
    let want = (INSTANCES * NODES_PER_INSTANCE + BIG_NODES) as u64;
    if stats.nodes != want || stats.instances != INSTANCES as u64 + 1 {
        return Err(format!(
            "store holds {} instances, {} nodes; expected {} and {want}",
            stats.instances,
            stats.nodes,
            INSTANCES + 1
        )
        .into());
    }
    rows.push(leaf_get(&store, &raw)?);
    rows.push(wildcard_resolve(&store, &raw)?);
    rows.push(instance_to_json(&store, &raw)?);
    rows.push(instances_to_json(&store, &raw)?);
    rows.push(leaf_replace(&mut store, &mut base)?);
    rows.push(peak_rss()?);

    print_table(&rows, 34, 8);
    print_targets_met("store", &rows);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Targets

type Row = common::Row<Target>;

enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl common::Target for Target {
    fn met(&self, ours: f64, _base: Option<f64>) -> bool {
        match *self {
            Target::AtLeast(min) => ours >= min,
            Target::AtMost(max) => ours <= max,
        }
    }

    fn label(&self) -> String {
        match *self {
            Target::AtLeast(v) => format!(">= {}", common::num(v)),
            Target::AtMost(v) => format!("<= {}", common::num(v)),
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

// ---------------------------------------------------------------------------------------
// Data (the small instances are [`sqlite::device_node`])

/// Small instance `i` as `(parent, name, format, value)` rows, for the baseline.
fn device_rows(i: usize) -> Vec<(String, String, &'static str, Sql)> {
    let mut rows = Vec::with_capacity(NODES_PER_INSTANCE);
    for g in 0..GROUPS {
        rows.push((String::new(), format!("G{g}"), "node", Sql::Null));
        for l in 0..LEAVES {
            let (format, cell) = match leaf_value(i, g, l) {
                Value::Chr(s) => ("chr", Sql::Text(s)),
                Value::Int(n) => ("int", Sql::Integer(n)),
                other => unreachable!("bench data holds only chr and int, not {other:?}"),
            };
            rows.push((format!("G{g}"), format!("L{l}"), format, cell));
        }
    }
    rows
}

fn big_node() -> Node {
    let leaf = |s: String| Node::Leaf(Value::Chr(s));
    let entries = (0..100).map(|e| {
        let mut children: BTreeMap<String, Node> = (0..9)
            .map(|a| (format!("A{a}"), leaf(format!("entry {e} field {a}"))))
            .collect();
        for s in 0..10 {
            let sub = (0..8).map(|b| {
                (
                    format!("B{b}"),
                    Node::Leaf(Value::Int((e * 100 + s * 10 + b) as i64)),
                )
            });
            children.insert(format!("S{s}"), Node::Interior(sub.collect()));
        }
        (format!("E{e:03}"), Node::Interior(children))
    });
    Node::Interior(entries.collect())
}

fn create_big_instance(store: &mut Store) -> Result<()> {
    let node = big_node();
    if node.count() != BIG_NODES + 1 {
        return Err(format!(
            "big instance has {} nodes, expected {BIG_NODES}",
            node.count() - 1
        )
        .into());
    }
    store.write(|tx| tx.create_instance(BIG_MOID, Some(BIG_MIID), BIG_ROOT, &node, OWNER))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Measurements

/// 1. Creating the 1,000 small instances, `BATCH` per transaction; batches of the store
///    and of the baseline alternate so that both see the same machine. Inputs are built
///    before the clock starts.
fn bulk_import(store: &mut Store, base: &mut Connection) -> Result<Row> {
    let (mut ours, mut raw) = (Duration::ZERO, Duration::ZERO);
    for first in (0..INSTANCES).step_by(BATCH) {
        let batch = device_batch(first);
        let start = Instant::now();
        create_batch(store, &batch, OWNER)?;
        ours += start.elapsed();
        drop(batch);

        let batch: Vec<(String, Vec<_>)> = (first..first + BATCH)
            .map(|i| (miid(i), device_rows(i)))
            .collect();
        let start = Instant::now();
        raw_import_batch(base, &batch)?;
        raw += start.elapsed();
    }
    let nodes = (INSTANCES * NODES_PER_INSTANCE) as f64;
    Ok(Row {
        name: "bulk import (1,000 x 100 nodes)".into(),
        unit: "nodes/s",
        ours: nodes / ours.as_secs_f64(),
        ours_p99: None,
        base: Some(nodes / raw.as_secs_f64()),
        base_p99: None,
        target: Some(Target::AtLeast(100_000.0)),
    })
}

type InstanceRows = (String, Vec<(String, String, &'static str, Sql)>);

fn raw_import_batch(conn: &mut Connection, batch: &[InstanceRows]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let at = now_secs();
    {
        let mut journal = tx.prepare_cached(
            "INSERT INTO journal (moid, miid, path, change, writer, at) VALUES (?1, ?2, '', 'added', ?3, ?4)",
        )?;
        let mut instance = tx.prepare_cached(
            "INSERT INTO instances (moid, miid, root_name, owner, cv_seq) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut node = tx.prepare_cached(
            "INSERT INTO nodes (inst, parent, name, format, value, writer) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (m, rows) in batch {
            let seq = journal.insert(params![MOID, m, OWNER, at])?;
            let inst = instance.insert(params![MOID, m, ROOT_NAME, OWNER, seq])?;
            for (parent, name, format, value) in rows {
                node.execute(params![inst, parent, name, format, value, OWNER])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// 2. Get one leaf by its ClientURI text: random leaves across the 1,000 instances.
fn leaf_get(store: &Store, raw: &Connection) -> Result<Row> {
    let picks = leaf_picks(1, 4_096, LEAVES);
    let uris: Vec<String> = picks
        .iter()
        .map(|(m, g, l)| format!("{MOID}/{m}/{g}/{l}"))
        .collect();
    let bench = Bench {
        warmup: 2_000,
        iters: 20_000,
    };

    let mut leaves = LeafSelect::prepare(raw)?;
    let ours = |i: usize| {
        let uri = ClientUri::parse(&uris[i % uris.len()])?;
        let leaf = store.snapshot(|store| -> Result<_> {
            let addrs = resolve(&uri, store, usize::MAX)?;
            Ok(store.leaf(&addrs[0])?.ok_or("a picked leaf is missing")?)
        })??;
        black_box(leaf);
        Ok(())
    };
    let base = |i: usize| {
        let row = leaves.read(&picks[i % picks.len()])?;
        black_box(row);
        Ok(())
    };
    let (ours, base) = bench.compare(ours, base)?;
    Ok(Row::timed(
        "leaf Get by ClientURI",
        "µs/op",
        1e-6,
        &ours,
        Some(&base),
        Some(Target::AtMost(20.0)),
    ))
}

/// 3. `<MOID>/*/G3/L4`: one leaf in each of the 1,000 instances.
fn wildcard_resolve(store: &Store, raw: &Connection) -> Result<Row> {
    let bench = Bench {
        warmup: 5,
        iters: 50,
    };
    let mut stmt = raw.prepare(
        "SELECT i.miid FROM instances i JOIN nodes n ON n.inst = i.id \
         WHERE i.moid = ?1 AND n.parent = ?2 AND n.name = ?3 ORDER BY i.miid",
    )?;
    let ours = |_| {
        let uri = ClientUri::parse(WILDCARD)?;
        let addrs = store.snapshot(|store| resolve(&uri, store, usize::MAX))??;
        if addrs.len() != INSTANCES {
            return Err(format!(
                "{WILDCARD} resolved to {} nodes, expected {INSTANCES}",
                addrs.len()
            )
            .into());
        }
        black_box(addrs);
        Ok(())
    };
    let base = |_| {
        let addrs = stmt
            .query_map(params![MOID, "G3", "L4"], |r| {
                Ok(NodeAddr {
                    moid: MOID.to_owned(),
                    miid: r.get(0)?,
                    path: "G3/L4".to_owned(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if addrs.len() != INSTANCES {
            return Err(format!(
                "the baseline wildcard found {} nodes, expected {INSTANCES}",
                addrs.len()
            )
            .into());
        }
        black_box(addrs);
        Ok(())
    };
    let (ours, base) = bench.compare(ours, base)?;
    Ok(Row::timed(
        "wildcard */G3/L4 (1,000 instances)",
        "ms/op",
        1e-3,
        &ours,
        Some(&base),
        None,
    ))
}

/// 4. The 10,000-node instance as MO serialization text. The baseline builds the same
///    nested JSON from one SELECT; both texts must be identical.
fn instance_to_json(store: &Store, raw: &Connection) -> Result<Row> {
    let root = NodeAddr::root(BIG_MOID, BIG_MIID);
    let epoch = store_epoch(raw)?;
    let (ours, base, ours_text) = same_text(
        || {
            let mut sink = ItemsArray::default();
            store.write_item(&root, &SHOW_ALL, &mut sink)?;
            let array = String::from_utf8(sink.finish())?;
            Ok(array[1..array.len() - 1].to_owned())
        },
        || raw_instance_json(raw, epoch, BIG_MOID, BIG_MIID),
    )?;
    if serde_json::from_str::<MoItem>(&ours_text)?.cv.is_none() {
        return Err("the store's item has no cache validator".into());
    }
    Ok(Row::timed(
        "10k-node instance to JSON",
        "ms/op",
        1e-3,
        &ours,
        Some(&base),
        Some(Target::AtMost(20.0)),
    ))
}

/// 5. Every small instance as one JSON array of MO serialization items, listed in MIID
///    order. The baseline lists the instances and builds each item as in 4; both texts must
///    be identical.
fn instances_to_json(store: &Store, raw: &Connection) -> Result<Row> {
    use omadmd::tree::resolve::TreeRead as _;
    let epoch = store_epoch(raw)?;
    let (ours, base, _) = same_text(
        || {
            let mut sink = ItemsArray::default();
            store.snapshot(|store| {
                let miids = store.instances(MOID)?;
                let miids: Vec<&str> = miids.iter().map(String::as_str).collect();
                store.write_instances(MOID, &miids, &SHOW_ALL, &mut sink)
            })??;
            Ok(String::from_utf8(sink.finish())?)
        },
        || {
            let miids: Vec<String> = raw
                .prepare_cached("SELECT miid FROM instances WHERE moid = ?1 ORDER BY miid")?
                .query_map([MOID], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?;
            let items = miids
                .iter()
                .map(|miid| raw_instance_json(raw, epoch, MOID, miid))
                .collect::<Result<Vec<String>>>()?;
            Ok(format!("[{}]", items.join(",")))
        },
    )?;
    Ok(Row::timed(
        "1,000 instances to JSON",
        "ms/op",
        1e-3,
        &ours,
        Some(&base),
        None,
    ))
}

/// Times two ways of making the same text (30 runs each after 3 untimed, taking turns) and
/// refuses them unless their last texts are identical; returns ours, the baseline's, and
/// our text.
fn same_text(
    mut ours: impl FnMut() -> Result<String>,
    mut base: impl FnMut() -> Result<String>,
) -> Result<(Samples, Samples, String)> {
    let bench = Bench {
        warmup: 3,
        iters: 30,
    };
    let (mut ours_text, mut base_text) = (String::new(), String::new());
    let (ours, base) = bench.compare(
        |_| {
            ours_text = ours()?;
            Ok(())
        },
        |_| {
            base_text = base()?;
            Ok(())
        },
    )?;
    same_json(&ours_text, &base_text)?;
    Ok((ours, base, ours_text))
}

/// The store's epoch (part of every cache validator), read from its `meta` table.
fn store_epoch(raw: &Connection) -> Result<i64> {
    Ok(
        raw.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get(0)
        })?,
    )
}

/// Refuses a baseline whose JSON text is not the store's, byte for byte.
fn same_json(ours: &str, base: &str) -> Result<()> {
    if ours == base {
        return Ok(());
    }
    Err(format!(
        "the baseline JSON ({} bytes) differs from the store's ({} bytes)",
        base.len(),
        ours.len()
    )
    .into())
}

/// An MO serialization item in the field order of [`MoItem`].
#[derive(Serialize)]
struct RawItem {
    #[serde(rename = "ClientURI")]
    client_uri: String,
    #[serde(rename = "CV")]
    cv: String,
    #[serde(rename = "MOData")]
    mo_data: Map<String, J>,
}

fn raw_instance_json(conn: &Connection, epoch: i64, moid: &str, miid: &str) -> Result<String> {
    let (inst, root_name, seq): (i64, String, i64) = conn
        .prepare_cached(
            "SELECT id, root_name, cv_seq FROM instances WHERE moid = ?1 AND miid = ?2",
        )?
        .query_row(params![moid, miid], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let mut tree = Map::new();
    let mut stmt = conn.prepare_cached(
        "SELECT parent, name, format, value FROM nodes WHERE inst = ?1 ORDER BY parent, name",
    )?;
    let mut rows = stmt.query([inst])?;
    // Parents sort before their children, so each row's parent object already exists.
    while let Some(row) = rows.next()? {
        let parent = row.get_ref(0)?.as_str()?;
        let name = row.get_ref(1)?.as_str()?.to_owned();
        let value = match (row.get_ref(2)?.as_str()?, row.get_ref(3)?) {
            ("node", _) => J::Object(Map::new()),
            (_, ValueRef::Integer(n)) => J::from(n),
            (_, ValueRef::Real(f)) => J::from(f),
            (_, ValueRef::Text(t)) => J::String(std::str::from_utf8(t)?.to_owned()),
            (_, ValueRef::Null) => J::Null,
            (format, ValueRef::Blob(_)) => {
                return Err(format!("bench data has no {format} blobs").into());
            }
        };
        let mut at = &mut tree;
        for seg in parent.split('/').filter(|s| !s.is_empty()) {
            at = match at.get_mut(seg) {
                Some(J::Object(children)) => children,
                _ => return Err(format!("row {parent}/{name} has no parent object").into()),
            };
        }
        at.insert(name, value);
    }
    let mut mo_data = Map::new();
    mo_data.insert(root_name, J::Object(tree));
    let item = RawItem {
        client_uri: format!("{moid}/{miid}/"),
        cv: format!("{epoch:08x}{seq:x}"),
        mo_data,
    };
    Ok(serde_json::to_string(&item)?)
}

/// 6. Replace one chr leaf of a random small instance: journal entry and cache validator
///    included. The baseline does the same three statements on the baseline database.
fn leaf_replace(store: &mut Store, base: &mut Connection) -> Result<Row> {
    let picks = leaf_picks(2, 4_096, 5);
    let addrs: Vec<NodeAddr> = picks
        .iter()
        .map(|(m, g, l)| NodeAddr::root(MOID, m).child(g).child(l))
        .collect();
    let bench = Bench {
        warmup: 300,
        iters: 3_000,
    };

    let ours = |i: usize| {
        let node = Node::Leaf(Value::Chr(format!("replaced {i}")));
        store.write(|tx| tx.put(&addrs[i % addrs.len()], &node, "bench"))?;
        Ok(())
    };
    let base = |i: usize| {
        let (m, g, l) = &picks[i % picks.len()];
        let value = format!("replaced {i}");
        let tx = base.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx
            .prepare_cached(
                "UPDATE nodes SET format = 'chr', value = ?1, writer = ?2 \
                 WHERE inst = (SELECT id FROM instances WHERE moid = ?3 AND miid = ?4) AND parent = ?5 AND name = ?6",
            )?
            .execute(params![value, "bench", MOID, m, g, l])?;
        if changed != 1 {
            return Err(format!("baseline replace of {m}/{g}/{l} changed {changed} rows").into());
        }
        let seq = tx
            .prepare_cached(
                "INSERT INTO journal (moid, miid, path, change, writer, at) VALUES (?1, ?2, ?3, 'replaced', ?4, ?5)",
            )?
            .insert(params![MOID, m, format!("{g}/{l}"), "bench", now_secs()])?;
        tx.prepare_cached("UPDATE instances SET cv_seq = ?1 WHERE moid = ?2 AND miid = ?3")?
            .execute(params![seq, MOID, m])?;
        tx.commit()?;
        Ok(())
    };
    let (ours, base) = bench.compare(ours, base)?;
    Ok(Row::timed(
        "one-leaf replace (+journal, cv)",
        "µs/op",
        1e-6,
        &ours,
        Some(&base),
        Some(Target::AtMost(200.0)),
    ))
}

/// 7. Peak resident set size of this process so far (store, baseline and bench data).
fn peak_rss() -> Result<Row> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(Row {
        name: "peak RSS (VmHWM, whole process)".into(),
        unit: "MB",
        ours: kb / 1024.0,
        ours_p99: None,
        base: None,
        base_p99: None,
        target: Some(Target::AtMost(40.0)),
    })
}
