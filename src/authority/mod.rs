//! The MO access model (ARCHITECTURE.md §4): every read and write of MOs by a principal —
//! a local app, a DM server, or the local admin — goes through [`Authority`], which
//! resolves ClientURIs, checks the principal's rights on each instance (owner, grants,
//! `app:*` grants), applies the DDF's access types and scope, and never returns No-Get
//! nodes. Changes are reported to an observer (the daemon routes them to watchers).
//!
//! - [`principal`]: [`Principal`] and [`Rights`];
//! - [`error`] — [`AccessError`].

mod error;
mod principal;

use std::sync::{Mutex, MutexGuard};

use serde_json::Value as J;

pub use error::AccessError;
pub use principal::{ANY_APP, ANY_SERVER, BadPrincipal, Principal, Rights, UnknownRight};

use crate::store::{Change, Store};
use crate::tree::format::Format;
use crate::tree::json::{MoItem, node_from_json};
use crate::tree::mo_type::{AccessTypes, NodeDef, Scope};
use crate::tree::node::Node;
use crate::tree::registry::Registry;
use crate::tree::resolve::{TreeRead as _, resolve};
use crate::tree::uri::{ClientUri, InstanceSel, NodeAddr, Segment};
use crate::tree::value::Value;

/// Called with the journal entries of every committed write.
pub type Observer = Box<dyn Fn(&[Change]) + Send + Sync>;

/// Rules over the store; see the module documentation.
pub struct Authority {
    writer: Mutex<Store>,
    /// Read connections; a call takes whichever is free.
    readers: Vec<Mutex<Store>>,
    types: Registry,
    observer: Observer,
    next_reader: std::sync::atomic::AtomicUsize,
}

/// A value handed in for a leaf, before the node's format is known.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Text(String),
    Int(i64),
    Bool(bool),
    Float(f64),
    Bytes(Vec<u8>),
}

/// A node returned by [`Authority::get`]: its address and its value (`None`: interior).
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub addr: NodeAddr,
    pub value: Option<Value>,
}

/// Most journal entries one `changes_since` call returns.
pub const MAX_CHANGES: usize = 10_000;

impl Authority {
    /// `writer` and `reader` are two connections to the same store; reads never wait for
    /// writes. `observer` is called with the journal entries of every committed write.
    pub fn new(writer: Store, reader: Store, types: Registry, observer: Observer) -> Authority {
        Authority {
            writer: Mutex::new(writer),
            readers: vec![Mutex::new(reader)],
            types,
            observer,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Adds read connections (to the same store), so that concurrent readers do not queue
    /// on one.
    pub fn with_readers(mut self, extra: Vec<Store>) -> Authority {
        self.readers.extend(extra.into_iter().map(Mutex::new));
        self
    }

    /// The known MO types.
    pub fn types(&self) -> &Registry {
        &self.types
    }

    /// Every node `uri` resolves to that `who` may read. No-Get nodes and nodes of instances
    /// `who` has no Read right on are left out; if that leaves nothing, the call is denied.
    pub fn get(&self, who: &Principal, uri: &str) -> Result<Vec<Found>, AccessError> {
        let uri = ClientUri::parse(uri)?;
        let store = self.reader();
        store.snapshot(|store| {
            let addrs = self.readable(who, store, &uri)?;
            addrs
                .into_iter()
                .map(|addr| {
                    let value = store.leaf(&addr)?.map(|(v, _)| v);
                    Ok(Found { addr, value })
                })
                .collect()
        })?
    }

    /// The MO serialization of every node `uri` resolves to that `who` may read, with
    /// No-Get nodes removed from the subtrees.
    pub fn get_items(&self, who: &Principal, uri: &str) -> Result<Vec<MoItem>, AccessError> {
        let uri = ClientUri::parse(uri)?;
        let store = self.reader();
        store.snapshot(|store| {
            let addrs = self.readable(who, store, &uri)?;
            addrs
                .into_iter()
                .map(|addr| {
                    let mut item = store.mo_item(&addr)?;
                    if let Some(def) = self.def(&addr) {
                        for json in item.mo_data.values_mut() {
                            prune_no_get(json, def);
                        }
                    }
                    Ok(item)
                })
                .collect()
        })?
    }

    /// Replaces or adds the leaf at `uri`. `format: None` takes the DDF's format, or infers
    /// one from the input.
    pub fn set(
        &self,
        who: &Principal,
        uri: &str,
        format: Option<Format>,
        input: Input,
    ) -> Result<Vec<Change>, AccessError> {
        let uri = ClientUri::parse(uri)?;
        let mut store = self.writer();
        let addr = single_target(&uri, &store)?;
        if addr.path.is_empty() {
            return Err(AccessError::InvalidUri(format!(
                "{addr}: Set needs a leaf, not an instance root"
            )));
        }
        self.require(who, &store, &addr, Rights::WRITE)?;
        let exists = store.kind(&addr.moid, &addr.miid, &addr.path)?.is_some();
        let def = self.def_checked(&addr)?;
        // Without a format or a DDF, an existing leaf keeps its format.
        let current = match (format, def) {
            (None, None) => store.leaf(&addr)?.map(|(v, _)| v.format()),
            _ => None,
        };
        let format = match (format, def) {
            (Some(f), Some(d)) if f != d.format => {
                return Err(AccessError::InvalidValue(format!(
                    "{addr}: the DDF says {}, not {f}",
                    d.format
                )));
            }
            (Some(f), _) => f,
            (None, Some(d)) => d.format,
            (None, None) => current.unwrap_or_else(|| infer(&input)),
        };
        if format == Format::Node {
            return Err(AccessError::InvalidValue(format!(
                "{addr}: Set writes leaves; this is an interior node"
            )));
        }
        if let Some(d) = def {
            let needed = if exists {
                AccessTypes::REPLACE
            } else {
                AccessTypes::ADD
            };
            if *who != Principal::Admin && !d.access.contains(needed) {
                return Err(AccessError::NotAllowed(format!(
                    "{addr}: the DDF allows only {}",
                    d.access
                )));
            }
        }
        let value = convert(format, input)
            .map_err(|e| AccessError::InvalidValue(format!("{addr}: {e}")))?;
        let who_s = who.to_string();
        let (_, changes) = store.write(|tx| tx.put(&addr, &Node::Leaf(value), &who_s))?;
        drop(store);
        (self.observer)(&changes);
        Ok(changes)
    }

    /// Deletes the node at `uri` (an instance root deletes the instance).
    pub fn delete(&self, who: &Principal, uri: &str) -> Result<Vec<Change>, AccessError> {
        let uri = ClientUri::parse(uri)?;
        let mut store = self.writer();
        let addr = single_target(&uri, &store)?;
        self.require(who, &store, &addr, Rights::WRITE)?;
        if let Some(d) = self.def(&addr) {
            if d.scope == Scope::Permanent {
                return Err(AccessError::NotAllowed(format!(
                    "{addr}: permanent nodes cannot be deleted"
                )));
            }
            if *who != Principal::Admin && !d.access.contains(AccessTypes::DELETE) {
                return Err(AccessError::NotAllowed(format!(
                    "{addr}: the DDF allows only {}",
                    d.access
                )));
            }
        }
        let who_s = who.to_string();
        let (_, changes) = store.write(|tx| tx.delete(&addr, &who_s))?;
        drop(store);
        (self.observer)(&changes);
        Ok(changes)
    }

    /// Creates an instance of `moid` from `modata` (`{"RootName": {...}}`), owned by `who`.
    pub fn create_instance(
        &self,
        who: &Principal,
        moid: &str,
        modata: &str,
    ) -> Result<NodeAddr, AccessError> {
        ClientUri::parse(&format!("{moid}//"))?;
        let json: J = serde_json::from_str(modata)
            .map_err(|e| AccessError::InvalidValue(format!("MOData is not JSON: {e}")))?;
        let object = json.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
            AccessError::InvalidValue(
                "MOData must be an object with one key, the MO's root node name".into(),
            )
        })?;
        let Some((name, content)) = object.iter().next() else {
            unreachable!("checked to have one key")
        };
        let ty = self.types.get(moid);
        if let Some(t) = ty
            && *name != t.root_name()
        {
            return Err(AccessError::InvalidValue(format!(
                "{moid} instances are rooted at {}, not {name}",
                t.root_name()
            )));
        }
        let node = node_from_json(content, ty.map(|t| &t.root), name)
            .map_err(|e| AccessError::InvalidValue(e.to_string()))?;
        if !matches!(node, Node::Interior(_)) {
            return Err(AccessError::InvalidValue(format!(
                "{name}: an instance root must be a JSON object"
            )));
        }
        if let Some(t) = ty {
            let problems: Vec<String> = t
                .root
                .check(&node)
                .into_iter()
                .map(|m| format!("{name}/{}: {}", m.path, m.reason))
                .collect();
            if !problems.is_empty() {
                return Err(AccessError::InvalidValue(problems.join("; ")));
            }
        }
        let owner = who.to_string();
        let (addr, changes) = self
            .writer()
            .write(|tx| tx.create_instance(moid, None, name, &node, &owner))?;
        (self.observer)(&changes);
        Ok(addr)
    }

    /// The current journal sequence and the changes after `seq` that `uri` covers and `who`
    /// may read (at most [`MAX_CHANGES`]; ask again from the last one for more).
    pub fn changes_since(
        &self,
        who: &Principal,
        uri: &str,
        seq: u64,
    ) -> Result<(u64, Vec<Change>), AccessError> {
        let uri = ClientUri::parse(uri)?;
        let store = self.reader();
        let current = store.last_seq()?;
        let mut out = Vec::new();
        for c in store.changes_since(seq, MAX_CHANGES)? {
            if uri.covers(&c.addr) && self.rights(who, &store, &c.addr)?.contains(Rights::READ) {
                out.push(c);
            }
        }
        Ok((current, out))
    }

    /// Whether `who` may read the node at `addr` (Read right on its instance, not No-Get).
    pub fn may_read(&self, who: &Principal, addr: &NodeAddr) -> Result<bool, AccessError> {
        let store = self.reader();
        let no_get = self.def(addr).is_some_and(|d| d.access.is_no_get());
        Ok(!no_get && self.rights(who, &store, addr)?.contains(Rights::READ))
    }

    /// Gives `principal` `rights` on the instance at `instance_uri` (replacing earlier ones;
    /// none removes them). `who` must be the admin or hold Delegate on the instance.
    pub fn grant(
        &self,
        who: &Principal,
        instance_uri: &str,
        principal: &str,
        rights: Rights,
    ) -> Result<(), AccessError> {
        let uri = ClientUri::parse(instance_uri)?;
        Principal::parse(principal).map_err(|e| AccessError::InvalidValue(e.to_string()))?;
        let mut store = self.writer();
        let addr = single_target(&uri, &store)?;
        if !addr.path.is_empty() {
            return Err(AccessError::InvalidUri(format!(
                "{addr}: grants are per instance; name its root"
            )));
        }
        self.require(who, &store, &addr, Rights::DELEGATE)?;
        store.write(|tx| tx.set_grant(&addr, principal, rights.bits()))?;
        Ok(())
    }

    /// Puts `content` into the instance `moid`/`miid` (created, owned by the admin, if
    /// missing), only when it differs — so the cache validator stays put across restarts
    /// when nothing changed — and grants every app and every server `reader_rights` on it.
    pub fn provide(
        &self,
        moid: &str,
        miid: &str,
        root_name: &str,
        content: &Node,
        reader_rights: Rights,
    ) -> Result<(), AccessError> {
        let root = NodeAddr::root(moid, miid);
        let mut store = self.writer();
        let current = match store.instance(moid, miid)? {
            Some(_) => Some(store.subtree(&root)?),
            None => None,
        };
        let owner = Principal::Admin.to_string();
        let (_, changes) = store.write(|tx| {
            match &current {
                None => {
                    tx.create_instance(moid, Some(miid), root_name, content, &owner)?;
                }
                Some(old) if old != content => {
                    tx.put(&root, content, &owner)?;
                }
                Some(_) => {}
            }
            tx.set_grant(&root, ANY_APP, reader_rights.bits())?;
            tx.set_grant(&root, ANY_SERVER, reader_rights.bits())
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(())
    }

    /// The subtree at `addr` *including* No-Get nodes, for omadmd's own use (reading server
    /// accounts and their credentials). Never hand the result to a face.
    pub fn read_internal(&self, addr: &NodeAddr) -> Result<Node, AccessError> {
        Ok(self.reader().subtree(addr)?)
    }

    /// Every instance `who` may read, as (MOID, MIIDs), by MOID.
    pub fn readable_instances(
        &self,
        who: &Principal,
    ) -> Result<Vec<(String, Vec<String>)>, AccessError> {
        let store = self.reader();
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for info in store.list_instances()? {
            let root = NodeAddr::root(&info.moid, &info.miid);
            if !self.rights(who, &store, &root)?.contains(Rights::READ) {
                continue;
            }
            match out.last_mut() {
                Some((moid, miids)) if *moid == info.moid => miids.push(info.miid),
                _ => out.push((info.moid, vec![info.miid])),
            }
        }
        Ok(out)
    }

    /// Runs the node at `uri` for `who`: needs the Exec right and, for anyone but the admin,
    /// `Exec` in the DDF's access types. Returns the one node's address.
    pub fn exec_target(&self, who: &Principal, uri: &ClientUri) -> Result<NodeAddr, AccessError> {
        let store = self.reader();
        let addr = single_target(uri, &store)?;
        if store.kind(&addr.moid, &addr.miid, &addr.path)?.is_none() {
            return Err(AccessError::NotFound(format!("{addr}: no such node")));
        }
        self.require(who, &store, &addr, Rights::EXEC)?;
        if let Some(d) = self.def(&addr)
            && *who != Principal::Admin
            && !d.access.contains(AccessTypes::EXEC)
        {
            return Err(AccessError::NotAllowed(format!(
                "{addr}: the DDF allows only {}",
                d.access
            )));
        }
        Ok(addr)
    }

    /// MIIDs of the instances of `moid`.
    pub fn instances_of(&self, moid: &str) -> Result<Vec<String>, AccessError> {
        Ok(self.reader().instances(moid)?)
    }

    /// The cache validator of the one instance `uri` resolves into, if `who` may read it.
    pub fn cache_validator(
        &self,
        who: &Principal,
        uri: &ClientUri,
    ) -> Result<Option<String>, AccessError> {
        let store = self.reader();
        let addrs = self.readable(who, &store, uri)?;
        let first = &addrs[0];
        if addrs
            .iter()
            .any(|a| a.moid != first.moid || a.miid != first.miid)
        {
            return Ok(None);
        }
        Ok(store.instance(&first.moid, &first.miid)?.map(|i| i.cv))
    }

    /// Writes MO serialization items received from a server or a bootstrap source.
    /// With `target`, the one item's data replaces the node there (Write right needed).
    /// Without, each item names its place: an existing instance is replaced (Write right
    /// needed), a new one is created — owned by `who` — if `may_create(moid)` allows.
    /// Returns the ClientURIs written. All items are one transaction.
    pub fn import_items(
        &self,
        who: &Principal,
        items: &[MoItem],
        target: Option<&ClientUri>,
        may_create: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<NodeAddr>, AccessError> {
        let mut store = self.writer();
        let owner = who.to_string();
        let mut plan = Vec::with_capacity(items.len());
        if let Some(target) = target {
            let [item] = items else {
                return Err(AccessError::InvalidValue(format!(
                    "{target}: expected one MO serialization item, got {}",
                    items.len()
                )));
            };
            let addr = single_target(target, &store)?;
            self.require(who, &store, &addr, Rights::WRITE)?;
            let (name, json) = item
                .single()
                .map_err(|e| AccessError::InvalidValue(e.to_string()))?;
            let node = node_from_json(json, self.def(&addr), name)
                .map_err(|e| AccessError::InvalidValue(e.to_string()))?;
            plan.push((addr, Some(node)));
        } else {
            for item in items {
                let uri = ClientUri::parse(&item.client_uri)?;
                let existing = match &uri.instance {
                    InstanceSel::Miid(m) => store.instance(&uri.moid, m)?.is_some(),
                    InstanceSel::Only => !store.instances(&uri.moid)?.is_empty(),
                    _ => false,
                };
                if existing {
                    let addr = single_target(&uri, &store)?;
                    self.require(who, &store, &addr, Rights::WRITE)?;
                } else if !may_create(&uri.moid) {
                    return Err(AccessError::Denied(format!(
                        "{}: {who} may not create instances of {}",
                        item.client_uri, uri.moid
                    )));
                }
                plan.push((NodeAddr::root(&uri.moid, ""), None));
            }
        }
        let types = self.types.types();
        let (written, changes) = store.write(|tx| {
            let mut written = Vec::new();
            for (i, (addr, node)) in plan.iter().enumerate() {
                match node {
                    Some(node) => {
                        tx.put(addr, node, &owner)?;
                        written.push(addr.clone());
                    }
                    None => written.push(tx.import_item(&items[i], types, &owner)?),
                }
            }
            Ok(written)
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(written)
    }

    /// Waits for any write in progress, then makes everything committed durable on disk.
    /// Sessions call it before acknowledging changes; the daemon on shutdown.
    pub fn sync(&self) -> Result<(), AccessError> {
        Ok(self.writer().sync()?)
    }

    fn readable(
        &self,
        who: &Principal,
        store: &Store,
        uri: &ClientUri,
    ) -> Result<Vec<NodeAddr>, AccessError> {
        let addrs = resolve(uri, store)?;
        let found = addrs.len();
        let mut out = Vec::with_capacity(found);
        for addr in addrs {
            if self.def(&addr).is_some_and(|d| d.access.is_no_get()) {
                continue;
            }
            if self.rights(who, store, &addr)?.contains(Rights::READ) {
                out.push(addr);
            }
        }
        if out.is_empty() {
            return Err(AccessError::Denied(format!(
                "{uri}: {who} may not read {}",
                if found == 1 {
                    "this node"
                } else {
                    "these nodes"
                }
            )));
        }
        Ok(out)
    }

    fn require(
        &self,
        who: &Principal,
        store: &Store,
        addr: &NodeAddr,
        needed: Rights,
    ) -> Result<(), AccessError> {
        if self.rights(who, store, addr)?.contains(needed) {
            Ok(())
        } else {
            Err(AccessError::Denied(format!(
                "{addr}: {who} lacks {} on this instance",
                needed.names().join(",")
            )))
        }
    }

    /// The rights `who` holds on the instance of `addr`.
    fn rights(
        &self,
        who: &Principal,
        store: &Store,
        addr: &NodeAddr,
    ) -> Result<Rights, AccessError> {
        if *who == Principal::Admin {
            return Ok(Rights::ALL);
        }
        let Some(info) = store.instance(&addr.moid, &addr.miid)? else {
            return Ok(Rights::NONE);
        };
        let me = who.to_string();
        if info.owner == me {
            return Ok(Rights::ALL);
        }
        let root = NodeAddr::root(&addr.moid, &addr.miid);
        let everyone = match who {
            Principal::App(_) | Principal::User(_) => ANY_APP,
            Principal::Server(_) => ANY_SERVER,
            Principal::Admin => unreachable!("handled above"),
        };
        let mine = Rights::from_bits(store.grant(&root, &me)?.unwrap_or(0));
        Ok(mine.union(Rights::from_bits(
            store.grant(&root, everyone)?.unwrap_or(0),
        )))
    }

    fn def(&self, addr: &NodeAddr) -> Option<&NodeDef> {
        self.types.get(&addr.moid)?.def_at(&addr.path)
    }

    /// The definition of `addr`; an error when its MO type is known but has no such node.
    fn def_checked(&self, addr: &NodeAddr) -> Result<Option<&NodeDef>, AccessError> {
        match self.types.get(&addr.moid) {
            None => Ok(None),
            Some(t) => t.def_at(&addr.path).map(Some).ok_or_else(|| {
                AccessError::InvalidUri(format!("{addr}: not a node of {}", t.moid))
            }),
        }
    }

    /// A free read connection, or the next one in turn when all are busy.
    fn reader(&self) -> MutexGuard<'_, Store> {
        // Invariant: no code panics while holding a lock, so none is poisoned; if one were,
        // the store itself is still consistent (transactions), so recover the guard.
        for m in &self.readers {
            match m.try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let turn = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.readers.len();
        self.readers[turn].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Store> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The one node a write names: a MIID (or the only instance) and real names only.
fn single_target(uri: &ClientUri, store: &Store) -> Result<NodeAddr, AccessError> {
    let fixed = uri.path.iter().all(|s| matches!(s, Segment::Name(_)));
    if !fixed || !matches!(uri.instance, InstanceSel::Miid(_) | InstanceSel::Only) {
        return Err(AccessError::InvalidUri(format!(
            "{uri}: writes need one node: no x-names or *"
        )));
    }
    let root_uri = ClientUri {
        path: vec![],
        nv: vec![],
        cv: None,
        ..uri.clone()
    };
    let mut roots = resolve(&root_uri, store)?;
    let mut addr = roots.remove(0);
    for s in &uri.path {
        if let Segment::Name(n) = s {
            addr = addr.child(n);
        }
    }
    Ok(addr)
}

fn infer(input: &Input) -> Format {
    match input {
        Input::Text(_) => Format::Chr,
        Input::Int(_) => Format::Int,
        Input::Bool(_) => Format::Bool,
        Input::Float(_) => Format::Float,
        Input::Bytes(_) => Format::Bin,
    }
}

fn convert(format: Format, input: Input) -> Result<Value, String> {
    Ok(match (format, input) {
        (_, Input::Text(t)) => Value::parse(format, &t).map_err(|e| e.to_string())?,
        (Format::Int, Input::Int(i)) => Value::Int(i),
        (Format::Bool, Input::Bool(b)) => Value::Bool(b),
        (Format::Float, Input::Float(f)) if f.is_finite() => Value::Float(f),
        (Format::Float, Input::Int(i)) => Value::Float(i as f64),
        (Format::B64, Input::Bytes(b)) => Value::B64(b),
        (Format::Bin, Input::Bytes(b)) => Value::Bin(b),
        (f, other) => return Err(format!("a {f} node cannot take {other:?}")),
    })
}

/// Removes every No-Get node (per `def`) from an MO serialization subtree.
fn prune_no_get(json: &mut J, def: &NodeDef) {
    if let J::Object(children) = json {
        if def.format != Format::Node {
            return;
        }
        children.retain(|name, _| def.child(name).is_none_or(|d| !d.access.is_no_get()));
        for (name, child) in children.iter_mut() {
            if let Some(d) = def.child(name) {
                prune_no_get(child, d);
            }
        }
    }
}

#[cfg(test)]
mod tests;
