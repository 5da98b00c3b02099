//! Changing the store. All changes go through a [`Txn`] inside [`Store::write`]: one SQLite
//! transaction, committed whole or not at all. Each change target gets one journal entry,
//! and the cache validator of its instance moves to that entry's sequence number.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension as _, params};

use super::read::{
    Change, ChangeKind, Usage, instance_id, kind_in, split, subtree_bounds, usage_in,
};
use super::{Rights, Store, StoreError, codec, run};
use crate::tree::node::Node;
use crate::tree::resolve::NodeKind;
use crate::tree::uri::{NodeAddr, join};
use crate::tree::value::Value;

/// An open write transaction. Dropped without commit (an error in the closure), it rolls
/// back.
pub struct Txn<'a> {
    tx: Open<'a>,
    now: i64,
    tree_depth: usize,
    changes: Vec<Change>,
}

impl Store {
    /// Runs `f` in one transaction and commits it if `f` succeeds. Returns `f`'s result and
    /// the journal entries written, in order. A node deeper than the store's `tree_depth`
    /// fails the write with [`StoreError::TooDeep`].
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>,
    ) -> Result<(T, Vec<Change>), E> {
        let tx = Open::begin(&self.conn)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut txn = Txn {
            tx,
            now,
            tree_depth: self.bounds.tree_depth,
            changes: Vec::new(),
        };
        let out = f(&mut txn)?;
        if let Some(last) = txn.changes.last() {
            txn.prune_journal(last.seq, self.bounds.journal_entries)?;
        }
        let Txn { tx, changes, .. } = txn;
        tx.commit()?;
        Ok((out, changes))
    }
}

/// A write transaction on a connection, begun and ended with statements prepared once per
/// connection; dropped without [`Open::commit`] (an error on the way), it rolls back.
struct Open<'a> {
    conn: &'a Connection,
    committed: bool,
}

impl<'a> Open<'a> {
    /// `BEGIN IMMEDIATE`: the write lock is taken now, so the transaction never has to
    /// upgrade a read lock later (which could fail with `SQLITE_BUSY` halfway).
    fn begin(conn: &'a Connection) -> Result<Open<'a>, StoreError> {
        run(conn, "BEGIN IMMEDIATE", "starting a write")?;
        Ok(Open {
            conn,
            committed: false,
        })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        run(self.conn, "COMMIT", "committing a write")?;
        self.committed = true;
        Ok(())
    }
}

impl std::ops::Deref for Open<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = run(self.conn, "ROLLBACK", "rolling back a write")
        {
            tracing::error!("{e}");
        }
    }
}

impl Txn<'_> {
    /// Creates an instance of `moid` with root node `root_name` holding `content` (an
    /// interior node). `miid: None` lets the store assign a fresh MIID. Returns the root.
    pub fn create_instance(
        &mut self,
        moid: &str,
        miid: Option<&str>,
        root_name: &str,
        content: &Node,
        owner: &str,
    ) -> Result<NodeAddr, StoreError> {
        let miid = match miid {
            Some(m) => m.to_owned(),
            None => self.fresh_miid(moid)?,
        };
        let root = NodeAddr::root(moid, &miid);
        if !matches!(content, Node::Interior(_)) {
            return Err(StoreError::RootIsLeaf(root));
        }
        if instance_id(&self.tx, moid, &miid)?.is_some() {
            return Err(StoreError::InstanceExists {
                moid: moid.to_owned(),
                miid,
            });
        }
        self.execute(
            "INSERT INTO instances (moid, miid, root_name, owner, cv_seq) VALUES (?1, ?2, ?3, ?4, 0)",
            params![moid, miid, root_name, owner],
            "creating an instance",
        )?;
        let inst = self.tx.last_insert_rowid();
        self.insert_children(inst, "", content, owner)?;
        self.journal(inst, &root, ChangeKind::Added, owner)?;
        Ok(root)
    }

    /// Puts `node` (a leaf or a subtree) at `addr`, replacing whatever is there; the parent
    /// must exist and be interior. At an instance root it replaces the instance's content.
    pub fn put(
        &mut self,
        addr: &NodeAddr,
        node: &Node,
        writer: &str,
    ) -> Result<ChangeKind, StoreError> {
        let inst = self.inst(addr)?;
        if addr.path.is_empty() {
            if !matches!(node, Node::Interior(_)) {
                return Err(StoreError::RootIsLeaf(addr.clone()));
            }
            self.execute(
                "DELETE FROM nodes WHERE inst = ?1",
                params![inst],
                "clearing an instance",
            )?;
            self.insert_children(inst, "", node, writer)?;
            self.journal(inst, addr, ChangeKind::Replaced, writer)?;
            return Ok(ChangeKind::Replaced);
        }
        let (parent, name) = split(&addr.path);
        if kind_in(&self.tx, inst, parent)? != Some(NodeKind::Interior) {
            return Err(StoreError::NoParent(addr.clone()));
        }
        let existing = kind_in(&self.tx, inst, &addr.path)?;
        match (existing, node) {
            (Some(NodeKind::Leaf), Node::Leaf(v)) => {
                self.tx
                    .prepare_cached(
                        "UPDATE nodes SET format = ?4, value = ?5, writer = ?6 WHERE inst = ?1 AND parent = ?2 AND name = ?3",
                    )
                    .and_then(|mut s| s.execute(params![inst, parent, name, v.format().as_str(), codec::to_sql(v), writer]))
                    .map_err(StoreError::db("replacing a leaf"))?;
            }
            _ => {
                if existing.is_some() {
                    self.delete_rows(inst, &addr.path)?;
                }
                self.insert_node(inst, parent, name, node, writer)?;
                self.insert_children(inst, &addr.path, node, writer)?;
            }
        }
        let kind = if existing.is_some() {
            ChangeKind::Replaced
        } else {
            ChangeKind::Added
        };
        self.journal(inst, addr, kind, writer)?;
        Ok(kind)
    }

    /// Whether the node at `addr` exists.
    pub fn exists(&self, addr: &NodeAddr) -> Result<bool, StoreError> {
        let inst = self.inst(addr)?;
        Ok(kind_in(&self.tx, inst, &addr.path)?.is_some())
    }

    /// Writes `value` into the leaf at `addr` as a device reports it (docs/gateway.md §3):
    /// an existing leaf keeps the principal that last wrote it — its holder, for priorities —
    /// and a missing one (its parent must exist) is added, held by `writer`. The journal names
    /// `writer`. An unchanged leaf is not written: `None`.
    pub fn report(
        &mut self,
        addr: &NodeAddr,
        value: &Value,
        writer: &str,
    ) -> Result<Option<ChangeKind>, StoreError> {
        let inst = self.inst(addr)?;
        let (parent, name) = split(&addr.path);
        let current: Option<(String, rusqlite::types::Value)> = self
            .tx
            .prepare_cached(
                "SELECT format, value FROM nodes WHERE inst = ?1 AND parent = ?2 AND name = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![inst, parent, name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(StoreError::db("reading a reported leaf"))?;
        let (format, cell) = (value.format().as_str(), codec::to_sql(value));
        match current {
            Some((f, v)) if f == format && v == cell => Ok(None),
            Some((f, _)) if f == "node" => Err(StoreError::NoParent(addr.clone())),
            Some(_) => {
                self.tx
                    .prepare_cached(
                        "UPDATE nodes SET format = ?4, value = ?5 WHERE inst = ?1 AND parent = ?2 AND name = ?3",
                    )
                    .and_then(|mut s| s.execute(params![inst, parent, name, format, cell]))
                    .map_err(StoreError::db("writing a reported leaf"))?;
                self.journal(inst, addr, ChangeKind::Replaced, writer)?;
                Ok(Some(ChangeKind::Replaced))
            }
            None => self.put(addr, &Node::Leaf(value.clone()), writer).map(Some),
        }
    }

    /// Deletes the node at `addr` with everything under it; at an instance root, the
    /// instance.
    pub fn delete(&mut self, addr: &NodeAddr, writer: &str) -> Result<(), StoreError> {
        self.delete_seen_by(addr, writer, Vec::new())
    }

    /// [`Txn::delete`], journaled with the principals the deletion is news to beyond those
    /// who may still read the node (an instance's are its readers, found here).
    pub(super) fn delete_seen_by(
        &mut self,
        addr: &NodeAddr,
        writer: &str,
        readers: Vec<String>,
    ) -> Result<(), StoreError> {
        let inst = self.inst(addr)?;
        if addr.path.is_empty() {
            if addr.moid != crate::tree::builtin::DACL {
                self.unmirror_instance(addr, writer)?;
            }
            let readers = self.holders(inst, Rights::READ)?;
            self.journal_entry(inst, addr, ChangeKind::Deleted, writer, readers)?;
            self.tx
                .execute("DELETE FROM instances WHERE id = ?1", [inst])
                .map_err(StoreError::db("deleting an instance"))?;
            return Ok(());
        }
        if kind_in(&self.tx, inst, &addr.path)?.is_none() {
            return Err(StoreError::NoSuchNode(addr.clone()));
        }
        self.delete_rows(inst, &addr.path)?;
        self.journal_entry(inst, addr, ChangeKind::Deleted, writer, readers)
    }

    /// The journal entries this transaction has written so far.
    pub fn pending_changes(&self) -> &[Change] {
        &self.changes
    }

    /// How many instances `owner` owns and their size in bytes (node names and values).
    pub fn usage(&self, owner: &str) -> Result<Usage, StoreError> {
        usage_in(&self.tx, owner)
    }

    /// The owner of the instance `moid`/`miid`, if it exists.
    pub fn owner(&self, moid: &str, miid: &str) -> Result<Option<String>, StoreError> {
        self.tx
            .prepare_cached("SELECT owner FROM instances WHERE moid = ?1 AND miid = ?2")
            .and_then(|mut s| s.query_row([moid, miid], |r| r.get(0)).optional())
            .map_err(StoreError::db("reading an owner"))
    }

    /// (MIID, text) of the leaf at `path` in every instance of `moid` that has one.
    pub fn leaf_texts(&self, moid: &str, path: &str) -> Result<Vec<(String, String)>, StoreError> {
        let (parent, name) = split(path);
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT i.miid, n.format, n.value FROM nodes n JOIN instances i ON n.inst = i.id \
                 WHERE i.moid = ?1 AND n.parent = ?2 AND n.name = ?3",
            )
            .map_err(StoreError::db("preparing a leaf query"))?;
        let mut rows = stmt
            .query(params![moid, parent, name])
            .map_err(StoreError::db("reading leaves"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(StoreError::db("reading leaves"))? {
            let miid: String = row.get(0).map_err(StoreError::db("reading leaves"))?;
            let format: String = row.get(1).map_err(StoreError::db("reading leaves"))?;
            let cell = row.get_ref(2).map_err(StoreError::db("reading leaves"))?;
            if let Some(v) = codec::from_sql(&format, cell)? {
                out.push((miid, v.to_text()));
            }
        }
        Ok(out)
    }

    /// Whether the instance `moid`/`miid` exists.
    pub fn has_instance(&self, moid: &str, miid: &str) -> Result<bool, StoreError> {
        Ok(instance_id(&self.tx, moid, miid)?.is_some())
    }

    /// Runs one statement of the transaction.
    pub(super) fn execute(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
        context: &'static str,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(args))
            .map_err(StoreError::db(context))?;
        Ok(())
    }

    /// The transaction itself, for the store's other modules.
    pub(super) fn tx(&self) -> &Connection {
        &self.tx
    }

    /// The time of this transaction, POSIX seconds.
    pub(super) fn now(&self) -> i64 {
        self.now
    }

    pub(super) fn inst(&self, addr: &NodeAddr) -> Result<i64, StoreError> {
        instance_id(&self.tx, &addr.moid, &addr.miid)?
            .ok_or_else(|| StoreError::NoSuchNode(addr.clone()))
    }

    fn fresh_miid(&mut self, moid: &str) -> Result<String, StoreError> {
        loop {
            let n: i64 = self
                .tx
                .prepare_cached(
                    "UPDATE meta SET value = value + 1 WHERE key = 'next_miid' RETURNING value - 1",
                )
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(StoreError::db("assigning a MIID"))?;
            let miid = n.to_string();
            if instance_id(&self.tx, moid, &miid)?.is_none() {
                return Ok(miid);
            }
        }
    }

    fn insert_node(
        &self,
        inst: i64,
        parent: &str,
        name: &str,
        node: &Node,
        writer: &str,
    ) -> Result<(), StoreError> {
        let depth = if parent.is_empty() {
            1
        } else {
            parent.split('/').count() + 1
        };
        if depth > self.tree_depth {
            return Err(StoreError::TooDeep {
                at: join(parent, name),
                max: self.tree_depth,
            });
        }
        let (format, value) = match node {
            Node::Interior(_) => ("node", rusqlite::types::Value::Null),
            Node::Leaf(v) => (v.format().as_str(), codec::to_sql(v)),
        };
        self.tx
            .prepare_cached("INSERT INTO nodes (inst, parent, name, format, value, writer) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .and_then(|mut s| s.execute(params![inst, parent, name, format, value, writer]))
            .map_err(StoreError::db("inserting a node"))?;
        Ok(())
    }

    /// Inserts everything below `node`, which sits at `path`.
    fn insert_children(
        &self,
        inst: i64,
        path: &str,
        node: &Node,
        writer: &str,
    ) -> Result<(), StoreError> {
        let mut result = Ok(());
        node.walk(&mut |rel, child| {
            if result.is_ok() {
                let full = join(path, rel);
                let (parent, name) = split(&full);
                result = self.insert_node(inst, parent, name, child, writer);
            }
        });
        result
    }

    /// Deletes the node at `path` and its subtree: the node, its children, and every row
    /// whose parent lies in `[path/, path0)` — three statements so each uses the full key.
    fn delete_rows(&self, inst: i64, path: &str) -> Result<(), StoreError> {
        let (parent, name) = split(path);
        let (lo, hi) = subtree_bounds(path);
        let run = |sql: &str, args: &[&dyn rusqlite::ToSql]| {
            self.tx
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(args))
                .map_err(StoreError::db("deleting nodes"))
        };
        run(
            "DELETE FROM nodes WHERE inst = ?1 AND parent = ?2 AND name = ?3",
            params![inst, parent, name],
        )?;
        run(
            "DELETE FROM nodes WHERE inst = ?1 AND parent = ?2",
            params![inst, path],
        )?;
        run(
            "DELETE FROM nodes WHERE inst = ?1 AND parent >= ?2 AND parent < ?3",
            params![inst, lo, hi],
        )?;
        Ok(())
    }

    /// Drops journal entries more than `keep` behind `last`.
    fn prune_journal(&self, last: u64, keep: u64) -> Result<(), StoreError> {
        let Some(horizon) = last.checked_sub(keep) else {
            return Ok(());
        };
        self.tx
            .prepare_cached("DELETE FROM journal WHERE seq <= ?1")
            .and_then(|mut s| s.execute([horizon as i64]))
            .map_err(StoreError::db("pruning the journal"))?;
        Ok(())
    }

    fn journal(
        &mut self,
        inst: i64,
        addr: &NodeAddr,
        kind: ChangeKind,
        writer: &str,
    ) -> Result<(), StoreError> {
        self.journal_entry(inst, addr, kind, writer, Vec::new())
    }

    /// The principals that hold `right` on the instance `inst`: its owner, and the grantees
    /// with it.
    pub(super) fn holders(&self, inst: i64, right: Rights) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT owner FROM instances WHERE id = ?1 \
                 UNION ALL SELECT principal FROM grants WHERE inst = ?1 AND rights & ?2 != 0",
            )
            .map_err(StoreError::db("listing an instance's right holders"))?;
        let rows = stmt
            .query_map(params![inst, right.bits()], |r| r.get(0))
            .map_err(StoreError::db("listing an instance's right holders"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("listing an instance's right holders"))
    }

    fn journal_entry(
        &mut self,
        inst: i64,
        addr: &NodeAddr,
        kind: ChangeKind,
        writer: &str,
        readers: Vec<String>,
    ) -> Result<(), StoreError> {
        let listed = (!readers.is_empty()).then(|| readers.join("\n"));
        self.tx
            .prepare_cached("INSERT INTO journal (moid, miid, path, change, writer, at, readers) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .and_then(|mut s| s.execute(params![addr.moid, addr.miid, addr.path, kind.as_str(), writer, self.now, listed]))
            .map_err(StoreError::db("writing the journal"))?;
        let seq = self.tx.last_insert_rowid();
        self.tx
            .prepare_cached("UPDATE instances SET cv_seq = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![inst, seq]))
            .map_err(StoreError::db("moving the cache validator"))?;
        self.changes.push(Change {
            seq: seq as u64,
            addr: addr.clone(),
            kind,
            writer: writer.to_owned(),
            at: self.now,
            readers,
        });
        Ok(())
    }
}
