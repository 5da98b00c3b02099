//! MO serialization items (PROTOCOL.md §7) written straight from the store's rows into the
//! caller's output: no node tree and no JSON tree in between, one copy of each value. The
//! rows of many instances of one MOID come from one query.
//!
//! An item is `{"ClientURI":…,"CV":…,"MOData":{<name>:<subtree or value>}}` (`CV` on
//! instance roots only), the same bytes [`crate::tree::json::MoItem`] serializes to. What
//! the reader may not see is left out as it is written ([`Pruning`]); the output's bounds
//! are the [`ItemSink`]'s, checked after every node, so an oversized reply stops early.

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rusqlite::params;
use rusqlite::types::ValueRef;

use super::read::{split, subtree_bounds};
use super::{MAX_DEPTH, Store, StoreError};
use crate::tree::format::Format;
use crate::tree::mo_type::NodeDef;
use crate::tree::uri::NodeAddr;
use crate::tree::value::ObjectRef;

/// Where items go, and the bounds they are held to.
pub trait ItemSink {
    type Error: From<StoreError>;

    /// Starts an item; returns the buffer it is appended to (a separator from the previous
    /// item goes in here).
    fn begin(&mut self) -> &mut Vec<u8>;

    /// The buffer of the item being written.
    fn buf(&mut self) -> &mut Vec<u8>;

    /// One more node of the current item is written; an error ends the read.
    fn node(&mut self) -> Result<(), Self::Error>;

    /// The current item is whole.
    fn end(&mut self);
}

/// Whether a child of an item's node, by name, is shown.
pub type ShowsChild<'a> = &'a dyn Fn(&str) -> Result<bool, StoreError>;

/// What of a node's subtree its item leaves out.
pub struct Pruning<'a> {
    /// The DDF definition of the item's node: the nodes below it the DDF gives no `Get`
    /// are left out, with everything under them.
    pub def: Option<&'a NodeDef>,
    /// Whether a child of the item's node, by name, is shown (the DACL entries a reader
    /// may see); `None` shows all.
    pub shows_child: Option<ShowsChild<'a>>,
}

/// Shows every node: for readers not held to a DDF or a view (the store's own tests, the
/// benches).
pub const SHOW_ALL: Pruning<'static> = Pruning {
    def: None,
    shows_child: None,
};

/// A JSON array of items without bounds, counting the nodes written.
#[derive(Debug, Default)]
pub struct ItemsArray {
    out: Vec<u8>,
    nodes: usize,
}

impl ItemSink for ItemsArray {
    type Error = StoreError;

    fn begin(&mut self) -> &mut Vec<u8> {
        self.out.push(if self.out.is_empty() { b'[' } else { b',' });
        &mut self.out
    }

    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    fn node(&mut self) -> Result<(), StoreError> {
        self.nodes += 1;
        Ok(())
    }

    fn end(&mut self) {}
}

impl ItemsArray {
    /// Nodes written so far.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The array, closed.
    pub fn finish(mut self) -> Vec<u8> {
        if self.out.is_empty() {
            self.out.push(b'[');
        }
        self.out.push(b']');
        self.out
    }
}

impl Store {
    /// Writes the item of the node at `addr` (the whole instance for an empty path).
    pub fn write_item<S: ItemSink>(
        &self,
        addr: &NodeAddr,
        pruning: &Pruning<'_>,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        let missing = || StoreError::NoSuchNode(addr.clone());
        let inst = self
            .instance_row(&addr.moid, &addr.miid)?
            .ok_or_else(missing)?;
        if addr.path.is_empty() {
            let mut rows = Rows::default();
            rows.read_instance(self, inst.id)?;
            let cv = self.validator(inst.cv_seq);
            return write_root(sink, addr, &inst.root_name, &cv, &rows, pruning);
        }
        let (parent, name) = split(&addr.path);
        let mut rows = Rows::default();
        let node = rows
            .read_node(self, inst.id, parent, name)?
            .ok_or_else(missing)?;
        write_head(sink.begin(), addr, None, name);
        if node.format == Format::Node {
            rows.read_below(self, inst.id, &addr.path)?;
            let mut path = addr.path.clone();
            rows.write_children(sink, &mut path, pruning.def, pruning.shows_child, 1)?;
        } else {
            rows.write_value(sink.buf(), &node)?;
        }
        sink.node()?;
        sink.buf().extend_from_slice(b"}}");
        sink.end();
        Ok(())
    }

    /// Writes the items of the instances `miids` of `moid` (in ascending order, as
    /// [`crate::tree::resolve::TreeRead::instances`] lists them). When they are at least
    /// half of the MOID's instances, every row is read with one query over all of them;
    /// fewer (a reader who sees a few of many) are read one by one, so that nobody pays
    /// for reading rows it is not shown. MIIDs without an instance are skipped.
    pub fn write_instances<S: ItemSink>(
        &self,
        moid: &str,
        miids: &[&str],
        pruning: &Pruning<'_>,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        let all: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM instances WHERE moid = ?1")
            .and_then(|mut s| s.query_row([moid], |r| r.get(0)))
            .map_err(StoreError::db("counting instances"))?;
        if (miids.len() as i64).saturating_mul(2) < all {
            for miid in miids {
                if self.instance_row(moid, miid)?.is_some() {
                    self.write_item(&NodeAddr::root(moid, miid), pruning, sink)?;
                }
            }
            return Ok(());
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT i.miid, i.root_name, i.cv_seq, n.parent, n.name, n.format, n.value \
                 FROM instances i JOIN nodes n ON n.inst = i.id WHERE i.moid = ?1 \
                 ORDER BY i.miid, n.parent, n.name",
            )
            .map_err(StoreError::db("preparing an instances query"))?;
        let mut found = stmt
            .query([moid])
            .map_err(StoreError::db("reading instances"))?;
        let read = StoreError::db("reading instances");
        let mut wanted = miids.iter().copied().peekable();
        let mut rows = Rows::default();
        // The instance whose rows are being gathered: its MIID, root name and validator.
        let mut current: Option<(String, String, String)> = None;
        loop {
            let row = found.next().map_err(read)?;
            let miid = match row {
                Some(r) => Some(text(r.get_ref(0).map_err(read)?)?),
                None => None,
            };
            if current.as_ref().map(|(m, ..)| m.as_str()) != miid {
                if let Some((done, root_name, cv)) = current.take() {
                    let addr = NodeAddr::root(moid, &done);
                    write_root(sink, &addr, &root_name, &cv, &rows, pruning)?;
                }
                // Wanted instances before this one have no rows: no node below the root.
                while let Some(empty) = wanted.next_if(|w| miid.is_none_or(|m| *w < m)) {
                    self.write_empty(moid, empty, pruning, sink)?;
                }
                let (Some(miid), Some(r)) = (miid, row) else {
                    break;
                };
                if wanted.next_if_eq(&miid).is_some() {
                    let seq: i64 = r.get(2).map_err(read)?;
                    current = Some((
                        miid.to_owned(),
                        r.get(1).map_err(read)?,
                        self.validator(seq),
                    ));
                    rows.clear();
                }
            }
            if let (Some(_), Some(r)) = (&current, row) {
                rows.push(r, 3)?;
            }
        }
        Ok(())
    }

    /// The item of the instance `moid`/`miid` if it exists, which has no node below its
    /// root.
    fn write_empty<S: ItemSink>(
        &self,
        moid: &str,
        miid: &str,
        pruning: &Pruning<'_>,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        if let Some(inst) = self.instance_row(moid, miid)? {
            let cv = self.validator(inst.cv_seq);
            let addr = NodeAddr::root(moid, miid);
            write_root(sink, &addr, &inst.root_name, &cv, &Rows::default(), pruning)?;
        }
        Ok(())
    }
}

/// The item of an instance root named `root_name` with validator `cv`, whose rows are
/// `rows`.
fn write_root<S: ItemSink>(
    sink: &mut S,
    addr: &NodeAddr,
    root_name: &str,
    cv: &str,
    rows: &Rows,
    pruning: &Pruning<'_>,
) -> Result<(), S::Error> {
    write_head(sink.begin(), addr, Some(cv), root_name);
    rows.write_children(
        sink,
        &mut String::new(),
        pruning.def,
        pruning.shows_child,
        1,
    )?;
    sink.node()?;
    sink.buf().extend_from_slice(b"}}");
    sink.end();
    Ok(())
}

/// `{"ClientURI":…,["CV":…,]"MOData":{"<name>":` — the item up to its node's content.
fn write_head(out: &mut Vec<u8>, addr: &NodeAddr, cv: Option<&str>, name: &str) {
    out.extend_from_slice(b"{\"ClientURI\":");
    write_str(out, &addr.to_string());
    if let Some(cv) = cv {
        out.extend_from_slice(b",\"CV\":");
        write_str(out, cv);
    }
    out.extend_from_slice(b",\"MOData\":{");
    write_str(out, name);
    out.push(b':');
}

/// A JSON string.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Invariant: serializing a str into a Vec cannot fail (no I/O error, no non-string key).
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A text cell the store wrote (paths, names, formats, MIIDs).
fn text(cell: ValueRef<'_>) -> Result<&str, StoreError> {
    cell.as_str()
        .map_err(|e| StoreError::Corrupt(format!("a text column holds {e}")))
}

/// Rows of one instance (or one subtree) in `(parent, name)` order, their text kept in one
/// buffer that is reused from instance to instance.
#[derive(Default)]
pub(super) struct Rows {
    pub(super) text: Vec<u8>,
    pub(super) rows: Vec<Row>,
}

/// One node row; text and blobs are ranges of [`Rows::text`].
pub(super) struct Row {
    pub(super) parent: Range<usize>,
    pub(super) name: Range<usize>,
    pub(super) format: Format,
    pub(super) cell: Cell,
}

pub(super) enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(Range<usize>),
    Blob(Range<usize>),
}

impl Rows {
    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.rows.clear();
    }

    /// Every node row of the instance `inst`.
    fn read_instance(&mut self, store: &Store, inst: i64) -> Result<(), StoreError> {
        self.read(
            store,
            "SELECT parent, name, format, value FROM nodes WHERE inst = ?1 ORDER BY parent, name",
            params![inst],
        )
    }

    /// The rows below the interior node at `path` (not itself).
    fn read_below(&mut self, store: &Store, inst: i64, path: &str) -> Result<(), StoreError> {
        let (lo, hi) = subtree_bounds(path);
        self.read(
            store,
            "SELECT parent, name, format, value FROM nodes WHERE inst = ?1 AND parent = ?2 \
             UNION ALL SELECT parent, name, format, value FROM nodes \
             WHERE inst = ?1 AND parent >= ?3 AND parent < ?4 ORDER BY 1, 2",
            params![inst, path, lo, hi],
        )
    }

    /// The one row of the node `parent`/`name`, taken out of the rows.
    fn read_node(
        &mut self,
        store: &Store,
        inst: i64,
        parent: &str,
        name: &str,
    ) -> Result<Option<Row>, StoreError> {
        let before = self.rows.len();
        match store.with_seen_node(inst, parent, name, |format, value| {
            self.push_cells(parent, name, format, value)
        }) {
            Some(kept) => kept?,
            None => self.read(
                store,
                "SELECT parent, name, format, value FROM nodes WHERE inst = ?1 AND parent = ?2 AND name = ?3",
                params![inst, parent, name],
            )?,
        }
        Ok(if self.rows.len() > before {
            self.rows.pop()
        } else {
            None
        })
    }

    /// Appends every row `sql` (selecting `parent, name, format, value`) finds.
    pub(super) fn read(
        &mut self,
        store: &Store,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<(), StoreError> {
        let mut stmt = store
            .conn
            .prepare_cached(sql)
            .map_err(StoreError::db("preparing a node query"))?;
        let mut found = stmt
            .query(params)
            .map_err(StoreError::db("reading nodes"))?;
        while let Some(r) = found.next().map_err(StoreError::db("reading nodes"))? {
            self.push(r, 0)?;
        }
        Ok(())
    }

    /// Appends the row whose `parent, name, format, value` columns start at `first`.
    fn push(&mut self, r: &rusqlite::Row<'_>, first: usize) -> Result<(), StoreError> {
        let read = StoreError::db("reading a node");
        let cell = |i: usize| r.get_ref(first + i).map_err(read);
        self.push_cells(text(cell(0)?)?, text(cell(1)?)?, text(cell(2)?)?, cell(3)?)
    }

    /// Appends the row of the node `parent`/`name` holding `value` in `format`.
    fn push_cells(
        &mut self,
        parent: &str,
        name: &str,
        format: &str,
        value: ValueRef<'_>,
    ) -> Result<(), StoreError> {
        let parent = self.keep(parent.as_bytes());
        let name = self.keep(name.as_bytes());
        let format: Format = format
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("{e}")))?;
        let cell = match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(t) => Cell::Text(self.keep(t)),
            ValueRef::Blob(b) => Cell::Blob(self.keep(b)),
        };
        self.rows.push(Row {
            parent,
            name,
            format,
            cell,
        });
        Ok(())
    }

    fn keep(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.text.len();
        self.text.extend_from_slice(bytes);
        start..self.text.len()
    }

    fn bytes(&self, r: &Range<usize>) -> &[u8] {
        &self.text[r.clone()]
    }

    /// Text the store wrote as UTF-8 (names and paths are checked when written).
    fn str(&self, r: &Range<usize>) -> Result<&str, StoreError> {
        std::str::from_utf8(self.bytes(r))
            .map_err(|_| StoreError::Corrupt("a node's text is not UTF-8".into()))
    }

    /// `{…}`: the children of the interior node at `path` with their subtrees; `depth` is
    /// the children's depth below the item's node.
    fn write_children<S: ItemSink>(
        &self,
        sink: &mut S,
        path: &mut String,
        def: Option<&NodeDef>,
        shows_child: Option<ShowsChild<'_>>,
        depth: usize,
    ) -> Result<(), S::Error> {
        if depth > MAX_DEPTH {
            return Err(StoreError::TooDeep {
                at: path.clone(),
                max: MAX_DEPTH,
            }
            .into());
        }
        sink.buf().push(b'{');
        let first = self
            .rows
            .partition_point(|r| self.bytes(&r.parent) < path.as_bytes());
        let count = self.rows[first..]
            .iter()
            .take_while(|r| self.bytes(&r.parent) == path.as_bytes())
            .count();
        let mut written = 0;
        for row in &self.rows[first..first + count] {
            let name = self.str(&row.name)?;
            let child_def = match def {
                Some(d) if d.format == Format::Node => d.child(name),
                _ => None,
            };
            if child_def.is_some_and(|d| d.access.is_no_get()) {
                continue;
            }
            if let Some(shows) = shows_child
                && !shows(name)?
            {
                continue;
            }
            let out = sink.buf();
            if written > 0 {
                out.push(b',');
            }
            written += 1;
            write_str(out, name);
            out.push(b':');
            if row.format == Format::Node {
                let len = path.len();
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(name);
                self.write_children(sink, path, child_def, None, depth + 1)?;
                path.truncate(len);
            } else {
                self.write_value(out, row)?;
            }
            sink.node()?;
        }
        sink.buf().push(b'}');
        Ok(())
    }

    /// A leaf's value as the MO serialization has it: numbers and booleans as JSON numbers
    /// and booleans, `json` as itself, `b64`/`bin` base64, the rest strings.
    fn write_value(&self, out: &mut Vec<u8>, row: &Row) -> Result<(), StoreError> {
        let bad = || StoreError::Corrupt(format!("a {} node holds a mismatched cell", row.format));
        match (row.format, &row.cell) {
            (Format::Null, Cell::Null) => out.extend_from_slice(b"null"),
            (Format::Bool, Cell::Int(i)) => {
                out.extend_from_slice(if *i != 0 { b"true" } else { b"false" })
            }
            // Invariant: numbers serialize into a Vec without error.
            (Format::Int, Cell::Int(i)) => {
                let _ = serde_json::to_writer(&mut *out, i);
            }
            (Format::Float, Cell::Real(f)) if f.is_finite() => {
                let _ = serde_json::to_writer(&mut *out, f);
            }
            (Format::B64 | Format::Bin, Cell::Blob(b)) => {
                let bytes = self.bytes(b);
                let start = out.len();
                let len = base64::encoded_len(bytes.len(), true).ok_or_else(bad)?;
                out.resize(start + len + 2, b'"');
                BASE64
                    .encode_slice(bytes, &mut out[start + 1..start + 1 + len])
                    .map_err(|_| bad())?;
            }
            (Format::Json, Cell::Text(t)) => {
                let text = self.bytes(t);
                serde_json::from_slice::<serde::de::IgnoredAny>(text).map_err(|_| bad())?;
                out.extend_from_slice(text);
            }
            (Format::Chr | Format::Xml | Format::Date | Format::Time, Cell::Text(t)) => {
                write_str(out, self.str(t)?)
            }
            (Format::Bin, Cell::Text(t)) => {
                let object = ObjectRef::from_cell(self.str(t)?).ok_or_else(bad)?;
                return Err(StoreError::LargeObject {
                    name: self.str(&row.name)?.to_owned(),
                    object,
                });
            }
            _ => return Err(bad()),
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::tree::json::MoItem;
    use crate::tree::node::Node;
    use crate::tree::value::Value;

    const MOID: &str = "urn:oma:mo:test-json:1.0";

    fn parsed(sink: ItemsArray) -> Vec<MoItem> {
        serde_json::from_slice(&sink.finish()).unwrap()
    }

    /// The item of the node at `addr`, unpruned.
    pub(in crate::store) fn item(store: &Store, addr: &NodeAddr) -> MoItem {
        let mut sink = ItemsArray::default();
        store.write_item(addr, &SHOW_ALL, &mut sink).unwrap();
        parsed(sink).remove(0)
    }

    /// The items of the instances `miids` of `moid`, read at once, unpruned.
    pub(in crate::store) fn instances(store: &Store, moid: &str, miids: &[&str]) -> Vec<MoItem> {
        let mut sink = ItemsArray::default();
        store
            .write_instances(moid, miids, &SHOW_ALL, &mut sink)
            .unwrap();
        parsed(sink)
    }

    /// The item [`MoItem::new`] makes of the subtree the store returns, with the root's CV.
    fn expected(store: &Store, addr: &NodeAddr) -> MoItem {
        let inst = store.instance(&addr.moid, &addr.miid).unwrap().unwrap();
        let name = if addr.path.is_empty() {
            inst.root_name.as_str()
        } else {
            split(&addr.path).1
        };
        let mut item = MoItem::new(addr.to_string(), name, &store.subtree(addr).unwrap());
        if addr.path.is_empty() {
            item.cv = Some(inst.cv);
        }
        item
    }

    fn nodes_of(node: &Node) -> usize {
        match node {
            Node::Leaf(_) => 1,
            Node::Interior(c) => 1 + c.values().map(nodes_of).sum::<usize>(),
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-1e12f64..1e12).prop_map(Value::Float),
            "[ -~\u{e9}\u{2603}\"\\\\\n]{0,12}".prop_map(Value::Chr),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::B64),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bin),
            Just(Value::Json(
                serde_json::json!({"a": [1, "b", null], "c": {"d": 1.5}})
            )),
        ]
    }

    /// Trees whose names include ones that sort around `/` (`-`, `.`, `0`), so that the
    /// rows' `(parent, name)` order differs from a walk of the tree.
    fn tree() -> impl Strategy<Value = Node> {
        let name = "[-.0A-Za-z]{1,3}";
        let leaf = value().prop_map(Node::Leaf);
        leaf.prop_recursive(4, 40, 5, move |inner| {
            proptest::collection::btree_map(name, inner, 0..5)
                .prop_map(|m: BTreeMap<String, Node>| Node::Interior(m))
        })
        .prop_map(|n| match n {
            Node::Leaf(v) => Node::Interior(BTreeMap::from([("v".to_owned(), Node::Leaf(v))])),
            interior => interior,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn items_are_the_serialized_subtrees(content in tree()) {
            let mut store = Store::open_in_memory().unwrap();
            store.write(|tx| tx.create_instance(MOID, Some("i"), "Root", &content, "admin")).unwrap();
            let root = NodeAddr::root(MOID, "i");
            let mut addrs = vec![root.clone()];
            let mut stack = vec![(String::new(), &content)];
            while let Some((path, node)) = stack.pop() {
                if let Node::Interior(children) = node {
                    for (name, child) in children {
                        let p = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
                        addrs.push(root.child(&p));
                        stack.push((p, child));
                    }
                }
            }
            for addr in &addrs {
                let mut sink = ItemsArray::default();
                store.write_item(addr, &SHOW_ALL, &mut sink).unwrap();
                let nodes = sink.nodes();
                prop_assert_eq!(parsed(sink), vec![expected(&store, addr)]);
                prop_assert_eq!(nodes, nodes_of(&store.subtree(addr).unwrap()));
            }
        }
    }

    #[test]
    fn many_instances_read_at_once_are_each_their_own_item() {
        let mut store = Store::open_in_memory().unwrap();
        let content = Node::Interior(BTreeMap::from([
            ("A".to_owned(), Node::Leaf(Value::Int(1))),
            (
                "G".to_owned(),
                Node::Interior(BTreeMap::from([(
                    "B".to_owned(),
                    Node::Leaf(Value::Chr("b".into())),
                )])),
            ),
        ]));
        let empty = Node::Interior(BTreeMap::new());
        store
            .write(|tx| {
                for miid in ["a", "c", "d"] {
                    tx.create_instance(MOID, Some(miid), "R", &content, "admin")?;
                }
                tx.create_instance(MOID, Some("b"), "R", &empty, "admin")?;
                tx.create_instance(MOID, Some("e"), "R", &empty, "admin")?;
                tx.create_instance("urn:oma:mo:other:1.0", Some("a"), "R", &content, "admin")
            })
            .unwrap();
        // "x" does not exist; "b" and "e" have no rows; "c" is not asked for.
        let got = instances(&store, MOID, &["a", "b", "d", "e", "x"]);
        let want: Vec<MoItem> = ["a", "b", "d", "e"]
            .iter()
            .map(|m| expected(&store, &NodeAddr::root(MOID, m)))
            .collect();
        assert_eq!(got, want);

        // Two of five: read one by one, without the query over all of them, alike.
        let join = "JOIN nodes n ON n.inst = i.id WHERE i.moid";
        let runs = |store: &Store| -> i32 {
            store
                .take_statement_runs()
                .iter()
                .filter(|(sql, _)| sql.contains(join))
                .map(|(_, n)| n)
                .sum()
        };
        runs(&store);
        let got = instances(&store, MOID, &["b", "d"]);
        assert_eq!(got, [want[1].clone(), want[2].clone()]);
        assert_eq!(runs(&store), 0, "the rows of all five were read");
        instances(&store, MOID, &["a", "c", "d"]);
        assert_eq!(runs(&store), 1, "three of five are read with one query");
    }

    #[test]
    fn pruning_leaves_out_hidden_children_and_their_subtrees() {
        let mut store = Store::open_in_memory().unwrap();
        let content = Node::Interior(BTreeMap::from([
            ("keep".to_owned(), Node::Leaf(Value::Int(1))),
            (
                "hide".to_owned(),
                Node::Interior(BTreeMap::from([(
                    "x".to_owned(),
                    Node::Leaf(Value::Int(2)),
                )])),
            ),
        ]));
        store
            .write(|tx| tx.create_instance(MOID, Some("i"), "R", &content, "admin"))
            .unwrap();
        let shows = |name: &str| Ok(name != "hide");
        let pruning = Pruning {
            def: None,
            shows_child: Some(&shows),
        };
        let mut sink = ItemsArray::default();
        store
            .write_item(&NodeAddr::root(MOID, "i"), &pruning, &mut sink)
            .unwrap();
        assert_eq!(sink.nodes(), 2, "the root and `keep`");
        let items = parsed(sink);
        assert_eq!(items[0].mo_data["R"], serde_json::json!({"keep": 1}));
    }

    #[test]
    fn a_corrupt_cell_is_an_error_not_bad_json() {
        let mut store = Store::open_in_memory().unwrap();
        let content = Node::Interior(BTreeMap::from([(
            "n".to_owned(),
            Node::Leaf(Value::Json(serde_json::json!([1]))),
        )]));
        store
            .write(|tx| tx.create_instance(MOID, Some("i"), "R", &content, "admin"))
            .unwrap();
        store
            .conn
            .execute("UPDATE nodes SET value = '[1,' WHERE name = 'n'", [])
            .unwrap();
        let mut sink = ItemsArray::default();
        let err = store
            .write_item(&NodeAddr::root(MOID, "i"), &SHOW_ALL, &mut sink)
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    }
}
