//! Reading the store: instances, nodes, subtrees, the journal, and ClientURI resolution
//! through [`TreeRead`].

use rusqlite::{OptionalExtension, params};

use super::codec;
use super::{Rights, Store, StoreError};
use crate::tree::json::MoItem;
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
    pub fn snapshot<T>(&self, f: impl FnOnce(&Store) -> T) -> Result<T, StoreError> {
        self.conn
            .execute_batch("BEGIN DEFERRED")
            .map_err(StoreError::db("starting a read transaction"))?;
        let out = f(self);
        self.conn
            .execute_batch("COMMIT")
            .map_err(StoreError::db("ending a read transaction"))?;
        Ok(out)
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
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT root_name, owner, cv_seq FROM instances WHERE moid = ?1 AND miid = ?2",
            )
            .map_err(StoreError::db("preparing an instance query"))?;
        stmt.query_row(params![moid, miid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()
        .map_err(StoreError::db("reading an instance"))
        .map(|row| {
            row.map(|(root_name, owner, seq)| InstanceInfo {
                moid: moid.to_owned(),
                miid: miid.to_owned(),
                root_name,
                owner,
                cv: self.validator(seq),
            })
        })
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
        let (parent, name) = split(&addr.path);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT format, value, writer FROM nodes \
                 WHERE inst = (SELECT id FROM instances WHERE moid = ?1 AND miid = ?2) AND parent = ?3 AND name = ?4",
            )
            .map_err(StoreError::db("preparing a node query"))?;
        let mut rows = stmt
            .query(params![addr.moid, addr.miid, parent, name])
            .map_err(StoreError::db("reading a node"))?;
        let Some(row) = rows.next().map_err(StoreError::db("reading a node"))? else {
            return Ok(None);
        };
        let format: String = row.get(0).map_err(StoreError::db("reading a node"))?;
        let cell = row.get_ref(1).map_err(StoreError::db("reading a node"))?;
        let writer: String = row.get(2).map_err(StoreError::db("reading a node"))?;
        Ok(codec::from_sql(&format, cell)?.map(|v| (v, writer)))
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

    /// The MO serialization item for the node at `addr`; carries the cache validator when
    /// `addr` is an instance root.
    pub fn mo_item(&self, addr: &NodeAddr) -> Result<MoItem, StoreError> {
        let info = self
            .instance(&addr.moid, &addr.miid)?
            .ok_or_else(|| StoreError::NoSuchNode(addr.clone()))?;
        let node = self.subtree(addr)?;
        let name = if addr.path.is_empty() {
            info.root_name.as_str()
        } else {
            split(&addr.path).1
        };
        let mut item = MoItem::new(addr.to_string(), name, &node);
        if addr.path.is_empty() {
            item.cv = Some(info.cv);
        }
        Ok(item)
    }

    /// The rights `principal` was granted on the instance of `addr` (none when it was not).
    pub fn grant(&self, addr: &NodeAddr, principal: &str) -> Result<Rights, StoreError> {
        let bits: Option<u8> = self
            .conn
            .prepare_cached(
                "SELECT rights FROM grants \
                 WHERE inst = (SELECT id FROM instances WHERE moid = ?1 AND miid = ?2) AND principal = ?3",
            )
            .and_then(|mut s| s.query_row(params![addr.moid, addr.miid, principal], |r| r.get(0)).optional())
            .map_err(StoreError::db("reading a grant"))?;
        Ok(Rights::from_bits(bits.unwrap_or(0)))
    }

    /// Every grant on the instance of `addr`, by principal.
    pub fn grants(&self, addr: &NodeAddr) -> Result<Vec<(String, Rights)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT principal, rights FROM grants \
                 WHERE inst = (SELECT id FROM instances WHERE moid = ?1 AND miid = ?2) ORDER BY principal",
            )
            .map_err(StoreError::db("preparing a grants query"))?;
        let rows = stmt
            .query_map(params![addr.moid, addr.miid], |r| {
                Ok((r.get(0)?, Rights::from_bits(r.get(1)?)))
            })
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
        instance_id(&self.conn, moid, miid)
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
    let format: Option<String> = conn
        .prepare_cached("SELECT format FROM nodes WHERE inst = ?1 AND parent = ?2 AND name = ?3")
        .and_then(|mut s| {
            s.query_row(params![inst, parent, name], |r| r.get(0))
                .optional()
        })
        .map_err(StoreError::db("reading a node"))?;
    Ok(format.map(|f| {
        if f == "node" {
            NodeKind::Interior
        } else {
            NodeKind::Leaf
        }
    }))
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

    fn instances(&self, moid: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT miid FROM instances WHERE moid = ?1 ORDER BY miid")
            .map_err(StoreError::db("preparing an instance query"))?;
        let rows = stmt
            .query_map([moid], |r| r.get(0))
            .map_err(StoreError::db("listing instances"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("listing instances"))
    }

    fn kind(&self, moid: &str, miid: &str, path: &str) -> Result<Option<NodeKind>, StoreError> {
        if path.is_empty() {
            return Ok(self.instance_id(moid, miid)?.map(|_| NodeKind::Interior));
        }
        let (parent, name) = split(path);
        let format: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT format FROM nodes \
                 WHERE inst = (SELECT id FROM instances WHERE moid = ?1 AND miid = ?2) AND parent = ?3 AND name = ?4",
            )
            .and_then(|mut s| s.query_row(params![moid, miid, parent, name], |r| r.get(0)).optional())
            .map_err(StoreError::db("reading a node"))?;
        Ok(format.map(|f| {
            if f == "node" {
                NodeKind::Interior
            } else {
                NodeKind::Leaf
            }
        }))
    }

    fn children(&self, moid: &str, miid: &str, path: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name FROM nodes \
                 WHERE inst = (SELECT id FROM instances WHERE moid = ?1 AND miid = ?2) AND parent = ?3 ORDER BY name",
            )
            .map_err(StoreError::db("preparing a children query"))?;
        let rows = stmt
            .query_map(params![moid, miid, path], |r| r.get(0))
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
