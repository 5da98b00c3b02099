//! Reading the store: instances, nodes, subtrees, the journal, and ClientURI resolution
//! through [`TreeRead`].

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::codec;
use super::{Rights, Store, StoreError, run};
use crate::tree::node::Node;
use crate::tree::resolve::{NodeKind, TreeRead};
use crate::tree::uri::NodeAddr;
use crate::tree::value::Value;

/// One MO instance as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    pub moid: String,
    pub miid: String,
    pub root_name: String,
    /// The principal that created it (`srv:<SrvID>`, `app:<id>`, `local`).
    pub owner: String,
    /// Its cache validator.
    pub cv: String,
}

/// An instance's row: what the queries of one read share about it (names shared, so a
/// copy from the snapshot's memo allocates nothing).
#[derive(Clone, Debug)]
pub(super) struct InstanceRow {
    pub id: i64,
    pub root_name: Arc<str>,
    pub owner: Arc<str>,
    pub cv_seq: i64,
}

/// What one snapshot has read already.
#[derive(Default)]
pub(super) struct Seen {
    /// The instances looked up (absent ones too), by MOID then MIID: each is read once per
    /// snapshot however many queries name it.
    instances: HashMap<String, HashMap<String, Option<InstanceRow>>>,
    /// The last node whose kind was asked ([`TreeRead::kind`]), with its format and a small
    /// value: resolving a ClientURI asks for the node a GET then serializes, so the GET
    /// reads its row once.
    node: Option<SeenNode>,
}

/// A node row kept by [`Seen`].
struct SeenNode {
    inst: i64,
    path: String,
    format: String,
    value: rusqlite::types::Value,
}

/// Largest text or blob value [`Seen`] keeps (a larger one is read again when serialized).
const SEEN_VALUE_BYTES: usize = 4096;

/// What one owner holds: instances and their size in bytes (each node row's parent path,
/// name, value and writer, plus [`super::ROW_OVERHEAD`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub instances: u64,
    pub bytes: u64,
}

/// A journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub addr: NodeAddr,
    pub kind: ChangeKind,
    pub writer: String,
    /// POSIX seconds.
    pub at: i64,
    /// For an instance's deletion, the principals that held Read on it then (its owner, and
    /// the grantees with Read, `app:*` and `srv:*` included); empty otherwise.
    pub readers: Vec<String>,
}

/// What happened to the node of a [`Change`] (and everything under it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Replaced,
    Deleted,
}

/// Counts for status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    pub schema_version: i64,
    pub instances: u64,
    pub nodes: u64,
    pub last_seq: u64,
}

impl ChangeKind {
    /// `added`, `replaced` or `deleted`, as in the journal and on D-Bus.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Replaced => "replaced",
            ChangeKind::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Result<ChangeKind, StoreError> {
        Ok(match s {
            "added" => ChangeKind::Added,
            "replaced" => ChangeKind::Replaced,
            "deleted" => ChangeKind::Deleted,
            other => return Err(StoreError::Corrupt(format!("journal change {other:?}"))),
        })
    }
}

/// The deepest subtree [`Store::subtree`] builds: everything that walks a tree recursively
/// (serialization, comparison) stays far from the end of the stack. Writes are held to
/// `[limits] tree_depth`, which may not exceed it.
pub const MAX_DEPTH: usize = 256;

/// Splits a path below the root into (parent, name). Empty path: the root.
pub(super) fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Upper bound (exclusive) of the `parent` values of a subtree: `p/` ≤ parent < `p0`.
pub(super) fn subtree_bounds(path: &str) -> (String, String) {
    (format!("{path}/"), format!("{path}0"))
}

impl Store {
    /// Runs `f` inside one read transaction: every query it makes sees the same snapshot,
    /// and the WAL locks are taken once instead of once per query.
    /// Instances are looked up once per snapshot.
    pub fn snapshot<T>(&self, f: impl FnOnce(&Store) -> T) -> Result<T, StoreError> {
        run(&self.conn, "BEGIN DEFERRED", "starting a read transaction")?;
        *self.seen.borrow_mut() = Some(Seen::default());
        let out = f(self);
        *self.seen.borrow_mut() = None;
        run(&self.conn, "COMMIT", "ending a read transaction")?;
        Ok(out)
    }

    /// The row of the instance `moid`/`miid`; inside a [`Store::snapshot`], read once.
    pub(super) fn instance_row(
        &self,
        moid: &str,
        miid: &str,
    ) -> Result<Option<InstanceRow>, StoreError> {
        if let Some(seen) = self.seen.borrow().as_ref()
            && let Some(row) = seen.instances.get(moid).and_then(|m| m.get(miid))
        {
            return Ok(row.clone());
        }
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, root_name, owner, cv_seq FROM instances WHERE moid = ?1 AND miid = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![moid, miid], |r| {
                    Ok(InstanceRow {
                        id: r.get(0)?,
                        root_name: r.get::<_, String>(1)?.into(),
                        owner: r.get::<_, String>(2)?.into(),
                        cv_seq: r.get(3)?,
                    })
                })
                .optional()
            })
            .map_err(StoreError::db("reading an instance"))?;
        if let Some(seen) = self.seen.borrow_mut().as_mut() {
            seen.instances
                .entry(moid.to_owned())
                .or_default()
                .insert(miid.to_owned(), row.clone());
        }
        Ok(row)
    }

    /// The kind of the node `path` (not the root) of instance `inst`, inside a
    /// [`Store::snapshot`]: its row is read whole and kept, with a small value, for
    /// [`Store::with_seen_node`].
    fn kind_seen(&self, inst: i64, path: &str) -> Result<Option<NodeKind>, StoreError> {
        let (parent, name) = split(path);
        let row = self
            .conn
            .prepare_cached(
                "SELECT format, value FROM nodes WHERE inst = ?1 AND parent = ?2 AND name = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![inst, parent, name], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, rusqlite::types::Value>(1)?,
                    ))
                })
                .optional()
            })
            .map_err(StoreError::db("reading a node"))?;
        let Some((format, value)) = row else {
            return Ok(None);
        };
        let kind = if format == "node" {
            NodeKind::Interior
        } else {
            NodeKind::Leaf
        };
        let small = match &value {
            rusqlite::types::Value::Text(t) => t.len() <= SEEN_VALUE_BYTES,
            rusqlite::types::Value::Blob(b) => b.len() <= SEEN_VALUE_BYTES,
            _ => true,
        };
        if let Some(seen) = self.seen.borrow_mut().as_mut() {
            seen.node = small.then(|| SeenNode {
                inst,
                path: path.to_owned(),
                format,
                value,
            });
        }
        Ok(Some(kind))
    }

    /// Runs `f` on the format and value of the node `parent`/`name` of instance `inst` if
    /// this snapshot kept its row ([`Seen`]); `None` otherwise.
    pub(super) fn with_seen_node<T>(
        &self,
        inst: i64,
        parent: &str,
        name: &str,
        f: impl FnOnce(&str, rusqlite::types::ValueRef<'_>) -> T,
    ) -> Option<T> {
        let seen = self.seen.borrow();
        let node = seen.as_ref()?.node.as_ref()?;
        (node.inst == inst && split(&node.path) == (parent, name))
            .then(|| f(&node.format, rusqlite::types::ValueRef::from(&node.value)))
    }

    /// Counts for status output.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(StoreError::db("counting"))
        };
        Ok(Stats {
            schema_version: self
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(StoreError::db("reading the schema version"))?,
            instances: count("SELECT count(*) FROM instances")?,
            nodes: count("SELECT count(*) FROM nodes")?,
            last_seq: self.last_seq()?,
        })
    }

    /// How many instances `owner` owns and their size in bytes.
    pub fn usage(&self, owner: &str) -> Result<Usage, StoreError> {
        usage_in(&self.conn, owner)
    }

    /// The sequence number of the newest journal entry (0 when empty).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT coalesce(max(seq), 0) FROM journal", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(StoreError::db("reading the journal"))
    }

    /// The instance `moid`/`miid`, if it exists.
    pub fn instance(&self, moid: &str, miid: &str) -> Result<Option<InstanceInfo>, StoreError> {
        Ok(self.instance_row(moid, miid)?.map(|row| InstanceInfo {
            moid: moid.to_owned(),
            miid: miid.to_owned(),
            cv: self.validator(row.cv_seq),
            root_name: row.root_name.to_string(),
            owner: row.owner.to_string(),
        }))
    }

    /// The owner of the instance `moid`/`miid`, if it exists (cheaper than
    /// [`Store::instance`]: nothing is copied out of a snapshot's lookups).
    pub fn owner_of(&self, moid: &str, miid: &str) -> Result<Option<Arc<str>>, StoreError> {
        Ok(self.instance_row(moid, miid)?.map(|row| row.owner))
    }

    /// Every instance, by MOID then MIID.
    pub fn list_instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT moid, miid, root_name, owner, cv_seq FROM instances ORDER BY moid, miid",
            )
            .map_err(StoreError::db("preparing the instance list"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(StoreError::db("listing instances"))?;
        rows.map(|row| {
            let (moid, miid, root_name, owner, seq) =
                row.map_err(StoreError::db("listing instances"))?;
            Ok(InstanceInfo {
                moid,
                miid,
                root_name,
                owner,
                cv: self.validator(seq),
            })
        })
        .collect()
    }

    /// The value of the leaf at `addr` and who wrote it last; `None` for interior or missing
    /// nodes.
    pub fn leaf(&self, addr: &NodeAddr) -> Result<Option<(Value, String)>, StoreError> {
        if addr.path.is_empty() {
            return Ok(None);
        }
        let Some(inst) = self.instance_id(&addr.moid, &addr.miid)? else {
            return Ok(None);
        };
        let (parent, name) = split(&addr.path);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT format, value, writer FROM nodes WHERE inst = ?1 AND parent = ?2 AND name = ?3",
            )
            .map_err(StoreError::db("preparing a node query"))?;
        let mut rows = stmt
            .query(params![inst, parent, name])
            .map_err(StoreError::db("reading a node"))?;
        let Some(row) = rows.next().map_err(StoreError::db("reading a node"))? else {
            return Ok(None);
        };
        let format: String = row.get(0).map_err(StoreError::db("reading a node"))?;
        let cell = row.get_ref(1).map_err(StoreError::db("reading a node"))?;
        let writer: String = row.get(2).map_err(StoreError::db("reading a node"))?;
        Ok(codec::from_sql(&format, cell)?.map(|v| (v, writer)))
    }

    /// The first instance of `moid` (by MIID) whose leaf at `path` holds `text`, with one
    /// query (an account by its `SrvID`).
    pub fn instance_where(
        &self,
        moid: &str,
        path: &str,
        text: &str,
    ) -> Result<Option<String>, StoreError> {
        let (parent, name) = split(path);
        self.conn
            .prepare_cached(
                "SELECT i.miid FROM instances i JOIN nodes n ON n.inst = i.id \
                 WHERE i.moid = ?1 AND n.parent = ?2 AND n.name = ?3 AND n.value = ?4 \
                 ORDER BY i.miid LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![moid, parent, name, text], |r| r.get(0))
                    .optional()
            })
            .map_err(StoreError::db("finding an instance by a leaf"))
    }

    /// The text of the leaf `name` in each child of the node at `addr` (in the children's
    /// order) that has one, with one query (an account's `Perm/<x>/MOID`).
    pub fn grandchild_texts(&self, addr: &NodeAddr, name: &str) -> Result<Vec<String>, StoreError> {
        let (lo, hi, prefix) = if addr.path.is_empty() {
            (String::new(), "\u{10ffff}".to_owned(), 0)
        } else {
            let (lo, hi) = subtree_bounds(&addr.path);
            let prefix = lo.len();
            (lo, hi, prefix)
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT n.parent, n.format, n.value FROM instances i JOIN nodes n ON n.inst = i.id \
                 WHERE i.moid = ?1 AND i.miid = ?2 AND n.parent >= ?3 AND n.parent < ?4 AND n.name = ?5 \
                 ORDER BY n.parent",
            )
            .map_err(StoreError::db("preparing a leaf query"))?;
        let mut rows = stmt
            .query(params![addr.moid, addr.miid, lo, hi, name])
            .map_err(StoreError::db("reading leaves"))?;
        let mut texts = Vec::new();
        while let Some(row) = rows.next().map_err(StoreError::db("reading leaves"))? {
            let parent: String = row.get(0).map_err(StoreError::db("reading leaves"))?;
            let child = parent.get(prefix..).unwrap_or_default();
            if child.is_empty() || child.contains('/') {
                continue;
            }
            let format: String = row.get(1).map_err(StoreError::db("reading leaves"))?;
            let cell = row.get_ref(2).map_err(StoreError::db("reading leaves"))?;
            if let Some(v) = codec::from_sql(&format, cell)? {
                texts.push(v.to_text());
            }
        }
        Ok(texts)
    }

    /// Who last wrote the node at `addr` and, with `below`, every node under it (the whole
    /// instance for its root), each principal once.
    pub fn writers(&self, addr: &NodeAddr, below: bool) -> Result<Vec<String>, StoreError> {
        let Some(inst) = self.instance_id(&addr.moid, &addr.miid)? else {
            return Ok(Vec::new());
        };
        let (parent, name) = split(&addr.path);
        let (lo, hi) = subtree_bounds(&addr.path);
        let (sql, args) = match (addr.path.is_empty(), below) {
            (true, true) => (
                "SELECT DISTINCT writer FROM nodes WHERE inst = ?1",
                params![inst].to_vec(),
            ),
            (true, false) => return Ok(Vec::new()),
            (false, false) => (
                "SELECT DISTINCT writer FROM nodes WHERE inst = ?1 AND parent = ?2 AND name = ?3",
                params![inst, parent, name].to_vec(),
            ),
            (false, true) => (
                "SELECT DISTINCT writer FROM nodes WHERE inst = ?1 AND ((parent = ?2 AND name = ?3) \
                 OR parent = ?4 OR (parent >= ?5 AND parent < ?6))",
                params![inst, parent, name, addr.path, lo, hi].to_vec(),
            ),
        };
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(StoreError::db("preparing a writers query"))?;
        let rows = stmt
            .query_map(args.as_slice(), |r| r.get::<_, String>(0))
            .map_err(StoreError::db("reading writers"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("reading writers"))
    }

    /// The subtree at `addr` (the whole instance when the path is empty).
    pub fn subtree(&self, addr: &NodeAddr) -> Result<Node, StoreError> {
        let missing = || StoreError::NoSuchNode(addr.clone());
        let inst = self
            .instance_id(&addr.moid, &addr.miid)?
            .ok_or_else(missing)?;
        let mut root = if addr.path.is_empty() {
            Node::empty()
        } else {
            match self.kind_in(inst, &addr.path)?.ok_or_else(missing)? {
                NodeKind::Interior => Node::empty(),
                NodeKind::Leaf => return Ok(Node::Leaf(self.leaf(addr)?.ok_or_else(missing)?.0)),
            }
        };
        let (lo, hi) = subtree_bounds(&addr.path);
        let (sql, args) = if addr.path.is_empty() {
            (
                "SELECT parent, name, format, value FROM nodes WHERE inst = ?1 ORDER BY parent, name",
                params![inst].to_vec(),
            )
        } else {
            (
                "SELECT parent, name, format, value FROM nodes WHERE inst = ?1 AND parent = ?2 \
                 UNION ALL SELECT parent, name, format, value FROM nodes \
                 WHERE inst = ?1 AND parent >= ?3 AND parent < ?4 ORDER BY 1, 2",
                params![inst, addr.path, lo, hi].to_vec(),
            )
        };
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(StoreError::db("preparing a subtree query"))?;
        let mut rows = stmt
            .query(args.as_slice())
            .map_err(StoreError::db("reading a subtree"))?;
        let prefix_len = if addr.path.is_empty() {
            0
        } else {
            addr.path.len() + 1
        };
        while let Some(row) = rows.next().map_err(StoreError::db("reading a subtree"))? {
            let parent: String = row.get(0).map_err(StoreError::db("reading a subtree"))?;
            let name: String = row.get(1).map_err(StoreError::db("reading a subtree"))?;
            let format: String = row.get(2).map_err(StoreError::db("reading a subtree"))?;
            let node = match codec::from_sql(
                &format,
                row.get_ref(3)
                    .map_err(StoreError::db("reading a subtree"))?,
            )? {
                Some(v) => Node::Leaf(v),
                None => Node::empty(),
            };
            let rel = parent.get(prefix_len..).unwrap_or("");
            if rel.split('/').count() > MAX_DEPTH {
                return Err(StoreError::TooDeep {
                    at: addr.to_string(),
                    max: MAX_DEPTH,
                });
            }
            insert(&mut root, rel, name, node)?;
        }
        Ok(root)
    }

    /// The rights `principal` was granted on the instance of `addr` (none when it was not).
    pub fn grant(&self, addr: &NodeAddr, principal: &str) -> Result<Rights, StoreError> {
        let Some(inst) = self.instance_id(&addr.moid, &addr.miid)? else {
            return Ok(Rights::NONE);
        };
        let bits: Option<u8> = self
            .conn
            .prepare_cached("SELECT rights FROM grants WHERE inst = ?1 AND principal = ?2")
            .and_then(|mut s| {
                s.query_row(params![inst, principal], |r| r.get(0))
                    .optional()
            })
            .map_err(StoreError::db("reading a grant"))?;
        Ok(Rights::from_bits(bits.unwrap_or(0)))
    }

    /// Every grant on the instance of `addr`, by principal.
    pub fn grants(&self, addr: &NodeAddr) -> Result<Vec<(String, Rights)>, StoreError> {
        let Some(inst) = self.instance_id(&addr.moid, &addr.miid)? else {
            return Ok(Vec::new());
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT principal, rights FROM grants WHERE inst = ?1 ORDER BY principal",
            )
            .map_err(StoreError::db("preparing a grants query"))?;
        let rows = stmt
            .query_map([inst], |r| Ok((r.get(0)?, Rights::from_bits(r.get(1)?))))
            .map_err(StoreError::db("reading grants"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("reading grants"))
    }

    /// Journal entries after `seq`, oldest first, at most `limit`. When entries after `seq`
    /// were already pruned, [`StoreError::JournalPruned`]: the caller must re-read.
    pub fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let oldest: Option<i64> = self
            .conn
            .prepare_cached("SELECT min(seq) FROM journal")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(StoreError::db("reading the journal"))?;
        if let Some(oldest) = oldest
            && seq.saturating_add(1) < oldest as u64
        {
            return Err(StoreError::JournalPruned {
                since: seq,
                oldest: oldest as u64,
            });
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, moid, miid, path, change, writer, at, readers FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(StoreError::db("preparing a journal query"))?;
        let rows = stmt
            .query_map(params![seq as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    NodeAddr {
                        moid: r.get(1)?,
                        miid: r.get(2)?,
                        path: r.get(3)?,
                    },
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(StoreError::db("reading the journal"))?;
        rows.map(|row| {
            let (seq, addr, kind, writer, at, readers) =
                row.map_err(StoreError::db("reading the journal"))?;
            Ok(Change {
                seq: seq as u64,
                addr,
                kind: ChangeKind::parse(&kind)?,
                writer,
                at,
                readers: readers
                    .map(|r| r.lines().map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
    }

    pub(super) fn instance_id(&self, moid: &str, miid: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.instance_row(moid, miid)?.map(|r| r.id))
    }

    fn kind_in(&self, inst: i64, path: &str) -> Result<Option<NodeKind>, StoreError> {
        kind_in(&self.conn, inst, path)
    }
}

/// How many instances `owner` owns and their size in bytes, as of `conn`'s view.
pub(super) fn usage_in(conn: &rusqlite::Connection, owner: &str) -> Result<Usage, StoreError> {
    conn.prepare_cached("SELECT count(*), total(bytes) FROM instances WHERE owner = ?1")
        .and_then(|mut s| {
            s.query_row([owner], |r| {
                Ok(Usage {
                    instances: r.get::<_, i64>(0)?.max(0) as u64,
                    bytes: r.get::<_, f64>(1)?.max(0.0) as u64,
                })
            })
        })
        .map_err(StoreError::db("measuring an owner's instances"))
}

pub(super) fn instance_id(
    conn: &rusqlite::Connection,
    moid: &str,
    miid: &str,
) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT id FROM instances WHERE moid = ?1 AND miid = ?2")
        .and_then(|mut s| s.query_row(params![moid, miid], |r| r.get(0)).optional())
        .map_err(StoreError::db("finding an instance"))
}

pub(super) fn kind_in(
    conn: &rusqlite::Connection,
    inst: i64,
    path: &str,
) -> Result<Option<NodeKind>, StoreError> {
    if path.is_empty() {
        return Ok(Some(NodeKind::Interior));
    }
    let (parent, name) = split(path);
    conn.prepare_cached(
        "SELECT format = 'node' FROM nodes WHERE inst = ?1 AND parent = ?2 AND name = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![inst, parent, name], |r| r.get::<_, bool>(0))
            .optional()
    })
    .map(|interior| {
        interior.map(|i| {
            if i {
                NodeKind::Interior
            } else {
                NodeKind::Leaf
            }
        })
    })
    .map_err(StoreError::db("reading a node"))
}

fn insert(root: &mut Node, rel_parent: &str, name: String, node: Node) -> Result<(), StoreError> {
    let mut at = root;
    for seg in rel_parent.split('/').filter(|s| !s.is_empty()) {
        at = match at {
            Node::Interior(children) => children.get_mut(seg).ok_or_else(|| {
                StoreError::Corrupt(format!("node below missing parent {rel_parent}"))
            })?,
            Node::Leaf(_) => {
                return Err(StoreError::Corrupt(format!("node below leaf {rel_parent}")));
            }
        };
    }
    match at {
        Node::Interior(children) => {
            children.insert(name, node);
            Ok(())
        }
        Node::Leaf(_) => Err(StoreError::Corrupt(format!("node below leaf {rel_parent}"))),
    }
}

impl TreeRead for Store {
    type Error = StoreError;

    /// Inside a [`Store::snapshot`], every instance listed is looked up with it.
    fn instances(&self, moid: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT miid, id, root_name, owner, cv_seq FROM instances WHERE moid = ?1 ORDER BY miid",
            )
            .map_err(StoreError::db("preparing an instance query"))?;
        let rows = stmt
            .query_map([moid], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    InstanceRow {
                        id: r.get(1)?,
                        root_name: r.get::<_, String>(2)?.into(),
                        owner: r.get::<_, String>(3)?.into(),
                        cv_seq: r.get(4)?,
                    },
                ))
            })
            .map_err(StoreError::db("listing instances"))?;
        let mut seen = self.seen.borrow_mut();
        let mut of_moid = seen
            .as_mut()
            .map(|s| s.instances.entry(moid.to_owned()).or_default());
        rows.map(|row| {
            let (miid, row) = row.map_err(StoreError::db("listing instances"))?;
            if let Some(m) = of_moid.as_mut() {
                m.insert(miid.clone(), Some(row));
            }
            Ok(miid)
        })
        .collect()
    }

    fn kind(&self, moid: &str, miid: &str, path: &str) -> Result<Option<NodeKind>, StoreError> {
        if path.is_empty() {
            return Ok(self.instance_id(moid, miid)?.map(|_| NodeKind::Interior));
        }
        match self.instance_id(moid, miid)? {
            Some(inst) if self.seen.borrow().is_some() => self.kind_seen(inst, path),
            Some(inst) => self.kind_in(inst, path),
            None => Ok(None),
        }
    }

    fn children(&self, moid: &str, miid: &str, path: &str) -> Result<Vec<String>, StoreError> {
        let Some(inst) = self.instance_id(moid, miid)? else {
            return Ok(Vec::new());
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM nodes WHERE inst = ?1 AND parent = ?2 ORDER BY name")
            .map_err(StoreError::db("preparing a children query"))?;
        let rows = stmt
            .query_map(params![inst, path], |r| r.get(0))
            .map_err(StoreError::db("listing children"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("listing children"))
    }

    fn leaf_text(&self, moid: &str, miid: &str, path: &str) -> Result<Option<String>, StoreError> {
        let addr = NodeAddr {
            moid: moid.to_owned(),
            miid: miid.to_owned(),
            path: path.to_owned(),
        };
        Ok(self.leaf(&addr)?.map(|(v, _)| v.to_text()))
    }
}
