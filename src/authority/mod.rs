//! The MO access model (ARCHITECTURE.md §4): every read and write of MOs by a principal —
//! a local app, a local user, a DM server, or the local admin — goes through [`Authority`],
//! which keeps a server to the MOIDs its account permits (and the public ones, for reading),
//! resolves ClientURIs over what the principal may see, checks its rights on each instance
//! (owner, grants, `app:*`/`srv:*` grants), applies the DDF's access types and scope, never
//! returns or tests No-Get nodes, keeps DM accounts to administrators, ranks writers by
//! priority, and holds every caller to the configured bounds. Changes are reported to an
//! observer (the daemon routes them to watchers).
//!
//! Order of answers (PROTOCOL.md §4): a malformed URI or command; then, for a server, an
//! MOID it was not given (`Denied`); then nothing visible matches — absent and invisible
//! nodes are the same "not found"; then what the DDF forbids (Permanent scope, access
//! types); then a missing right on a visible instance; then a node a higher-priority server
//! holds (`Conflict`). A node the principal may not read never answers differently from one
//! that does not exist.
//!
//! - [`principal`]: [`Principal`] and [`Rights`];
//! - [`view`]: the store as one principal may see it;
//! - [`accounts`]: who may change DM accounts;
//! - [`dacl`]: grants, locally and through the Delegation Access Control MO;
//! - [`provided`]: instances omadmd keeps itself (DevInfo for everyone, SessionInfo for one
//!   server);
//! - [`bounds`]: result size, reply size and per-owner quotas;
//! - [`error`] — [`AccessError`].

mod accounts;
mod bounds;
mod dacl;
mod error;
mod principal;
mod provided;
mod view;

use std::borrow::Cow;
use std::sync::{Arc, MutexGuard, RwLock};

use serde_json::Value as J;

pub use bounds::{Bounds, ItemsJson, JSON_DEPTH, Reply};
pub use error::AccessError;
pub use principal::{ANY_APP, ANY_SERVER, BadPrincipal, Principal, Rights, UnknownRight};

use crate::store::{Change, LeafRef, Placement, Pool, Pruning, Store, StoreError, Txn};
use crate::tree::builtin::DACL;
use crate::tree::format::Format;
use crate::tree::json::{MoItem, node_from_json};
use crate::tree::mo_type::{AccessTypes, NodeDef, Scope};
use crate::tree::node::Node;
use crate::tree::registry::Registry;
use crate::tree::resolve::{TreeRead as _, is_child_miid, resolve};
use crate::tree::uri::{ClientUri, InstanceSel, Moid, NodeAddr, NvField, Segment, UriError};
use crate::tree::value::{ObjectRef, Value};
use dacl::DaclWrite;
use view::{Purpose, Reach, View};

/// A ClientURI as the authority's methods take it: text (parsed once, there) or already
/// parsed. Parsing applies the `[limits]` of [`crate::tree::uri`].
pub trait Address {
    /// The parsed ClientURI, borrowed when it already was one.
    fn parsed<'a>(self) -> Result<Cow<'a, ClientUri>, UriError>
    where
        Self: 'a;
}

impl Address for &str {
    fn parsed<'a>(self) -> Result<Cow<'a, ClientUri>, UriError>
    where
        Self: 'a,
    {
        ClientUri::parse(self).map(Cow::Owned)
    }
}

impl Address for &String {
    fn parsed<'a>(self) -> Result<Cow<'a, ClientUri>, UriError>
    where
        Self: 'a,
    {
        self.as_str().parsed()
    }
}

impl Address for &ClientUri {
    fn parsed<'a>(self) -> Result<Cow<'a, ClientUri>, UriError>
    where
        Self: 'a,
    {
        Ok(Cow::Borrowed(self))
    }
}

/// A MOID as the authority's methods take it: text (checked once, there) or already a
/// [`Moid`].
pub trait AsMoid {
    /// The checked MOID, borrowed when it already was one.
    fn checked<'a>(self) -> Result<Cow<'a, Moid>, UriError>
    where
        Self: 'a;
}

impl AsMoid for &str {
    fn checked<'a>(self) -> Result<Cow<'a, Moid>, UriError>
    where
        Self: 'a,
    {
        Moid::parse(self).map(Cow::Owned)
    }
}

impl AsMoid for &Moid {
    fn checked<'a>(self) -> Result<Cow<'a, Moid>, UriError>
    where
        Self: 'a,
    {
        Ok(Cow::Borrowed(self))
    }
}

/// Called with the journal entries of every committed write.
pub type Observer = Box<dyn Fn(&[Change]) + Send + Sync>;

/// One GET's answer in a run ([`Authority::get_json_each`]): its items as a JSON array, or
/// `None` when its `cv=` is current.
pub type GetAnswer = Result<Option<Vec<u8>>, AccessError>;

/// Rules over the store; see the module documentation.
pub struct Authority {
    store: Arc<Pool>,
    /// The MO types; replaced whole on a reload ([`Authority::set_types`]). Each operation
    /// works with the one it took at its start.
    types: RwLock<Arc<Registry>>,
    observer: Observer,
    bounds: Bounds,
    /// MOIDs every server may read, whatever its `Perm` list (`[access] public_moids`);
    /// replaced whole on a reload.
    public_moids: RwLock<Arc<[String]>>,
}

/// A value handed in for a leaf, before the node's format is known.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Text(String),
    Int(i64),
    Bool(bool),
    Float(f64),
    Bytes(Vec<u8>),
    /// A structured value (D-Bus containers, or an integer beyond `i64`): for a `json`
    /// node the value itself; for another format read as the MO serialization reads it.
    Json(J),
    /// A large object already in the store's object files, for a `bin` node.
    Object(ObjectRef),
}

/// A node returned by [`Authority::get`]: its address and its value (`None`: interior).
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub addr: NodeAddr,
    pub value: Option<Value>,
}

/// Most grants one instance holds (each names a principal; `app:*` and `srv:*` cover
/// everyone, so more is never needed).
pub const MAX_GRANTS: usize = 256;

impl Authority {
    /// Rules over the store behind `store` (whose writer the session layer shares for its
    /// own state). `observer` is called with the journal entries of every committed write.
    pub fn new(store: Arc<Pool>, types: Registry, observer: Observer) -> Authority {
        Authority {
            store,
            types: RwLock::new(Arc::new(types)),
            observer,
            bounds: Bounds::default(),
            public_moids: RwLock::new(Arc::from([
                crate::tree::builtin::DEVINFO.to_owned(),
                crate::tree::builtin::FEATURES_MO.to_owned(),
            ])),
        }
    }

    /// Lets every server read instances of `moids` (their grants permitting), whatever its
    /// `Perm` list; DevInfo and the Features MO by default.
    pub fn with_public_moids(self, moids: Vec<Moid>) -> Authority {
        self.set_public_moids(moids);
        self
    }

    /// Replaces the MOIDs every server may read (a reload of `[access] public_moids`);
    /// operations already running finish with the list they started with.
    pub fn set_public_moids(&self, moids: Vec<Moid>) {
        let moids: Arc<[String]> = moids.into_iter().map(|m| m.as_str().to_owned()).collect();
        *self
            .public_moids
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = moids;
    }

    /// Holds every caller to `bounds` (result size, reply size, per-owner quotas).
    pub fn with_bounds(mut self, bounds: Bounds) -> Authority {
        self.bounds = bounds;
        self
    }

    /// The known MO types, as they are now.
    pub fn types(&self) -> Arc<Registry> {
        self.types
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the known MO types (a reload of the DDF dirs); operations already running
    /// finish with the types they started with.
    pub fn set_types(&self, types: Registry) {
        *self
            .types
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(types);
    }

    /// The MOIDs every server may read, as they are now.
    fn public_moids(&self) -> Arc<[String]> {
        self.public_moids
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every node `uri` resolves to that `who` may read. Nodes it may not read (No-Get, or
    /// in instances without the Read right) do not exist for it.
    pub fn get(&self, who: &Principal, uri: impl Address) -> Result<Vec<Found>, AccessError> {
        let uri = self.query(uri)?;
        let store = self.reader();
        store.snapshot(|store| {
            let addrs = self.readable(who, store, &uri)?;
            let mut budget = self.bounds.reply(&uri);
            addrs
                .into_iter()
                .map(|addr| {
                    let value = store.leaf(&addr)?.map(|(v, _)| v);
                    budget.take_found(&addr, value.as_ref())?;
                    Ok(Found { addr, value })
                })
                .collect()
        })?
    }

    /// [`Authority::get`] without building its answer: hands `each` the same nodes in the
    /// same order, each value borrowed from the store's rows (`None`: interior), under the
    /// same rules and bounds, checked node by node, so an oversized answer ends at the node
    /// that passes a bound, with [`Authority::get`]'s error. `each` answers the bytes the
    /// node's value takes in its answer beyond its text (spent from the same allowance), or
    /// an error that ends the read.
    pub fn get_each(
        &self,
        who: &Principal,
        uri: impl Address,
        mut each: impl FnMut(&NodeAddr, Option<LeafRef<'_>>) -> Result<usize, AccessError>,
    ) -> Result<(), AccessError> {
        let uri = self.query(uri)?;
        let store = self.reader();
        store.snapshot(|store| {
            let addrs = self.readable(who, store, &uri)?;
            let mut budget = self.bounds.reply(&uri);
            store.each_leaf(&addrs, |addr, leaf| {
                budget.take_leaf(addr, leaf)?;
                let extra = each(addr, leaf)?;
                budget.take_extra(extra)
            })
        })?
    }

    /// The MO serialization of every node `uri` resolves to that `who` may read, with
    /// No-Get nodes removed from the subtrees: [`Authority::get_json`], read back.
    pub fn get_items(
        &self,
        who: &Principal,
        uri: impl Address,
    ) -> Result<Vec<MoItem>, AccessError> {
        let json = self.get_json(who, uri)?;
        serde_json::from_slice(&json)
            .map_err(|e| AccessError::Store(StoreError::Corrupt(e.to_string())))
    }

    /// The MO serialization of every node `uri` resolves to that `who` may read (No-Get
    /// nodes left out), written straight from the store into a JSON array of at most
    /// `reply_bytes`.
    pub fn get_json(&self, who: &Principal, uri: impl Address) -> Result<Vec<u8>, AccessError> {
        let mut json = ItemsJson::new(self.bounds.reply_bytes);
        self.write_items(who, uri, &mut json)?;
        Ok(json.finish())
    }

    /// Appends what [`Authority::get_json`] returns to `json` (several reads may fill one
    /// array, held to its bound as a whole).
    pub fn write_items(
        &self,
        who: &Principal,
        uri: impl Address,
        json: &mut ItemsJson,
    ) -> Result<(), AccessError> {
        self.write_fresh(who, &*self.query(uri)?, None, json)
            .map(|_| ())
    }

    /// [`Authority::write_items`] for a server's GET, HPUT or HPOST: when `uri` carries a
    /// `cv=` equal to the cache validator of the one instance it resolves into, nothing is
    /// written and the answer is `false` (the server's copy is current).
    pub fn write_items_if_changed(
        &self,
        who: &Principal,
        uri: &ClientUri,
        json: &mut ItemsJson,
    ) -> Result<bool, AccessError> {
        self.check_nv(uri)?;
        self.write_fresh(who, uri, uri.cv.as_deref(), json)
    }

    /// [`Authority::get_json`] for each GET of a run of a server's GETs, all in one snapshot:
    /// the principal's reach, the instances and the rights on them are looked up once for
    /// the run. Each answer is `None` when its `cv=` is current (see
    /// [`Authority::write_items_if_changed`]). Stops before a GET once `go_on` says no; the
    /// answers are those of the GETs that ran, in order.
    pub fn get_json_each(
        &self,
        who: &Principal,
        uris: &[ClientUri],
        go_on: impl Fn() -> bool,
    ) -> Result<Vec<GetAnswer>, AccessError> {
        let store = self.reader();
        store.snapshot(|store| {
            let view = self.view(store, who, Purpose::Read)?;
            Ok(uris
                .iter()
                .take_while(|_| go_on())
                .map(|uri| {
                    self.check_nv(uri)?;
                    let mut json = ItemsJson::new(self.bounds.reply_bytes);
                    let changed =
                        self.write_changed(store, &view, who, uri, uri.cv.as_deref(), &mut json)?;
                    Ok(changed.then(|| json.finish()))
                })
                .collect())
        })?
    }

    /// Resolves and writes `uri` in one snapshot, unless `cv` is the validator of the one
    /// instance it resolves into (`false`).
    fn write_fresh(
        &self,
        who: &Principal,
        uri: &ClientUri,
        cv: Option<&str>,
        json: &mut ItemsJson,
    ) -> Result<bool, AccessError> {
        let store = self.reader();
        store.snapshot(|store| {
            let view = self.view(store, who, Purpose::Read)?;
            self.write_changed(store, &view, who, uri, cv, json)
        })?
    }

    /// Writes what `uri` resolves to in `view` (of `who`, on `store` in a snapshot), unless
    /// `cv` is the validator of the one instance it resolves into (`false`).
    fn write_changed(
        &self,
        store: &Store,
        view: &View<'_>,
        who: &Principal,
        uri: &ClientUri,
        cv: Option<&str>,
        json: &mut ItemsJson,
    ) -> Result<bool, AccessError> {
        let addrs = self.readable_in(view, uri)?;
        if let Some(cv) = cv
            && let [first, ..] = addrs.as_slice()
            && addrs
                .iter()
                .all(|a| a.moid == first.moid && a.miid == first.miid)
            && store
                .instance(&first.moid, &first.miid)?
                .is_some_and(|i| i.cv == cv)
        {
            return Ok(false);
        }
        json.append(self.bounds.reply(uri), |reply| {
            self.write_addrs(store, who, &addrs, reply)
        })?;
        Ok(true)
    }

    /// Replaces or adds the leaf at `uri`. `format: None` takes the DDF's format, or infers
    /// one from the input.
    pub fn set(
        &self,
        who: &Principal,
        uri: impl Address,
        format: Option<Format>,
        input: Input,
    ) -> Result<Vec<Change>, AccessError> {
        let types = self.types();
        let uri = uri.parsed()?;
        let mut store = self.writer();
        let addr = self.single_target(who, &store, &uri, Rights::WRITE)?;
        if addr.path.is_empty() {
            return Err(AccessError::InvalidUri(format!(
                "{addr}: Set needs a leaf, not an instance root"
            )));
        }
        if addr.moid == DACL {
            let Input::Text(text) = input else {
                return Err(AccessError::InvalidValue(format!(
                    "{addr}: DACL leaves are text"
                )));
            };
            let changes = self.write_dacl(who, &mut store, &addr, DaclWrite::Rights(text))?;
            drop(store);
            (self.observer)(&changes);
            return Ok(changes);
        }
        let exists = store.kind(&addr.moid, &addr.miid, &addr.path)?.is_some();
        let def = def_checked(&types, &addr)?;
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
        let value = convert(format, input)
            .map_err(|e| AccessError::InvalidValue(format!("{addr}: {e}")))?;
        let parents = if exists {
            Vec::new()
        } else {
            self.missing_parents(who, &store, &addr)?
        };
        // What the command asks is well-formed and the DDF allows it: now rights, then
        // priority (PROTOCOL.md §4).
        self.require(who, &store, &addr, Rights::WRITE)?;
        self.account_guard(who, &store, &addr)?;
        self.priority_guard(who, &store, &addr, false)?;
        let who_s = who.to_string();
        let (_, changes) = self.guarded_write(&mut store, |tx| {
            for parent in &parents {
                tx.put(parent, &Node::empty(), &who_s)?;
            }
            tx.put(&addr, &Node::Leaf(value), &who_s)?;
            Ok(())
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(changes)
    }

    /// Deletes the node at `uri` (an instance root deletes the instance).
    pub fn delete(&self, who: &Principal, uri: impl Address) -> Result<Vec<Change>, AccessError> {
        let types = self.types();
        let uri = uri.parsed()?;
        let mut store = self.writer();
        let addr = self.single_target(who, &store, &uri, Rights::WRITE)?;
        if addr.moid == DACL {
            let changes = self.write_dacl(who, &mut store, &addr, DaclWrite::Remove)?;
            drop(store);
            (self.observer)(&changes);
            return Ok(changes);
        }
        self.check_delete(&types, &store, who, &addr)?;
        // A DM account going: its server's session history goes with it.
        let gone_server = if addr.moid == crate::tree::builtin::DMACC && addr.path.is_empty() {
            store.leaf(&addr.child("SrvID"))?.map(|(v, _)| v.to_text())
        } else {
            None
        };
        let who_s = who.to_string();
        let (_, changes) = self.guarded_write(&mut store, |tx| {
            tx.delete(&addr, &who_s)?;
            if let Some(srv_id) = &gone_server {
                tx.forget_sessions(srv_id)?;
            }
            Ok(())
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(changes)
    }

    /// The node a DELETE of `uri` by `who` would remove, once every check of PROTOCOL.md
    /// §4 passes; removes nothing (a node on a device behind the gateway is deleted there
    /// first, then through [`Authority::delete`], which checks again).
    pub fn plan_delete(&self, who: &Principal, uri: &ClientUri) -> Result<NodeAddr, AccessError> {
        let types = self.types();
        let store = self.reader();
        let addr = self.single_target(who, &store, uri, Rights::WRITE)?;
        self.check_delete(&types, &store, who, &addr)?;
        Ok(addr)
    }

    /// What a DELETE of `addr` by `who` must pass: the node exists, the DDF allows it, the
    /// right, DM accounts, priority.
    fn check_delete(
        &self,
        types: &Registry,
        store: &Store,
        who: &Principal,
        addr: &NodeAddr,
    ) -> Result<(), AccessError> {
        if store.kind(&addr.moid, &addr.miid, &addr.path)?.is_none() {
            return Err(AccessError::NotFound(format!("{addr}: no such node")));
        }
        if let Some(d) = def(types, addr) {
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
        self.require(who, store, addr, Rights::WRITE)?;
        self.account_guard(who, store, addr)?;
        self.priority_guard(who, store, addr, true)
    }

    /// Creates an instance of `moid` from `modata` (`{"RootName": {...}}`), owned by `who`.
    pub fn create_instance(
        &self,
        who: &Principal,
        moid: impl AsMoid,
        modata: &str,
    ) -> Result<NodeAddr, AccessError> {
        let types = self.types();
        let moid = moid.checked()?;
        let moid = moid.as_ref();
        accounts::may_create(who, moid)?;
        if **moid == *DACL {
            return Err(AccessError::NotAllowed(format!(
                "{moid}: omadmd keeps the one DACL instance; add entries to it"
            )));
        }
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
        let ty = types.get(moid);
        if let Some(t) = ty
            && *name != t.root_name()
        {
            return Err(AccessError::InvalidValue(format!(
                "{moid} instances are rooted at {}, not {name}",
                t.root_name()
            )));
        }
        let owner = who.to_string();
        if !bounds::exempt(&owner) {
            let usage = self.reader().usage(&owner)?;
            self.bounds
                .precheck(&owner, usage, 1, bounds::footprint(content, "", &owner))?;
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
        let mut store = self.writer();
        let (addr, changes) = self.guarded_write(&mut store, |tx| {
            Ok(tx.create_instance(moid, None, name, &node, &owner)?)
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(addr)
    }

    /// The changes after `seq` that `uri` covers and `who` may read, and the sequence they
    /// run to: the newest in the journal when every later entry was looked at, else the last
    /// change returned — ask again from it for more. A reply stops before it would exceed
    /// `result_rows` or `reply_bytes`. Changes to nodes `who` may not read are left out as
    /// if they never happened.
    pub fn changes_since(
        &self,
        who: &Principal,
        uri: impl Address,
        seq: u64,
    ) -> Result<(u64, Vec<Change>), AccessError> {
        /// Journal entries read per query while filtering.
        const BATCH: usize = 1_000;
        let uri = self.query(uri)?;
        let store = self.reader();
        store.snapshot(|store| {
            let view = self.view_of(store, who, &uri, Purpose::Read)?;
            let me = who.to_string();
            let everyone = view::everyone(who);
            let mut budget = self.bounds.reply(&uri);
            let mut out = Vec::new();
            let mut from = seq;
            loop {
                let batch = store.changes_since(from, BATCH)?;
                let done = batch.len() < BATCH;
                for c in batch {
                    from = c.seq;
                    // What is gone has no rights left to check: an instance's end is news
                    // to the admin (who sees everything), to whoever ended it, and — as a
                    // DACL entry's is — to those the journal says could see it then
                    // (within their reach).
                    let gone = c.kind == crate::store::ChangeKind::Deleted;
                    let gone_for_me = gone
                        && ((c.addr.path.is_empty() && c.writer == me)
                            || (view.cap(&c.addr.moid).contains(Rights::READ)
                                && c.readers.iter().any(|r| *r == me || r == everyone)));
                    if uri.covers(&c.addr) && (gone_for_me || view.sees(&c.addr)?) {
                        if !budget.fits_change(&c) {
                            let upto = out.last().map_or(seq, |l: &Change| l.seq);
                            return Ok((upto, out));
                        }
                        out.push(c);
                    }
                }
                if done {
                    return Ok((store.last_seq()?.max(from), out));
                }
            }
        })?
    }

    /// The interior nodes above `addr` that do not exist yet, top down, for a `Set` to create
    /// first (like `mkdir -p`): each must be an interior node of the DDF that (for anyone
    /// but the admin) allows Add; without a DDF any name will do.
    fn missing_parents(
        &self,
        who: &Principal,
        store: &Store,
        addr: &NodeAddr,
    ) -> Result<Vec<NodeAddr>, AccessError> {
        let types = self.types();
        let root = NodeAddr::root(&addr.moid, &addr.miid);
        let mut missing = Vec::new();
        let mut path = String::new();
        let names: Vec<&str> = addr.path.split('/').collect();
        for name in &names[..names.len().saturating_sub(1)] {
            path = crate::tree::uri::join(&path, name);
            if store.kind(&addr.moid, &addr.miid, &path)?.is_some() {
                continue;
            }
            let at = root.child(&path);
            if let Some(d) = def_checked(&types, &at)? {
                if d.format != Format::Node {
                    return Err(AccessError::InvalidUri(format!(
                        "{at}: the DDF makes this a leaf, not a parent"
                    )));
                }
                if *who != Principal::Admin && !d.access.contains(AccessTypes::ADD) {
                    return Err(AccessError::NotAllowed(format!(
                        "{at}: the DDF allows only {}",
                        d.access
                    )));
                }
            }
            missing.push(at);
        }
        Ok(missing)
    }

    /// Who last wrote the one node `uri` names (its instance's owner for a root), as
    /// `who` may read it: the principal a priority conflict names (DM-HLF-014).
    pub fn holder(&self, who: &Principal, uri: impl Address) -> Result<String, AccessError> {
        let uri = self.query(uri)?;
        let store = self.reader();
        let addrs = self.readable(who, &store, &uri)?;
        let [addr] = addrs.as_slice() else {
            return Err(AccessError::InvalidUri(format!(
                "{uri}: names {} nodes; Holder takes one",
                addrs.len()
            )));
        };
        if addr.path.is_empty() {
            let info = store.instance(&addr.moid, &addr.miid)?;
            return info
                .map(|i| i.owner)
                .ok_or_else(|| AccessError::NotFound(format!("{addr}: no such node")));
        }
        store
            .writers(addr, false)?
            .pop()
            .ok_or_else(|| AccessError::NotFound(format!("{addr}: no such node")))
    }

    /// The journal's newest sequence number: what a change committed from now on exceeds.
    pub fn last_seq(&self) -> Result<u64, AccessError> {
        Ok(self.reader().last_seq()?)
    }

    /// The large object in the one leaf `uri` names, when it holds one that `who` may
    /// read: one row read, so that an HPUT or a SUB delivery of a subtree is not read whole
    /// first to find out. `None` for anything else (several nodes, an interior node, an
    /// inline value, a node `who` may not read), which the caller reads as usual.
    pub fn object_at(
        &self,
        who: &Principal,
        uri: &ClientUri,
    ) -> Result<Option<(NodeAddr, ObjectRef)>, AccessError> {
        let store = self.reader();
        let Ok(addr) = self.single_target(who, &store, uri, Rights::READ) else {
            return Ok(None);
        };
        if !self.view(&store, who, Purpose::Read)?.sees(&addr)? {
            return Ok(None);
        }
        Ok(match store.leaf(&addr)? {
            Some((Value::Object(object), _)) => Some((addr, object)),
            _ => None,
        })
    }

    /// Whether `who` may read the node at `addr` (Read right on its instance, not No-Get).
    pub fn may_read(&self, who: &Principal, addr: &NodeAddr) -> Result<bool, AccessError> {
        let store = self.reader();
        Ok(self.view(&store, who, Purpose::Read)?.sees(addr)?)
    }

    /// A holder of Delegate passes on only what it holds itself, and only the owner (or the
    /// admin) grants to every app or every server at once (`app:*`, `srv:*`) or changes the
    /// rights of another holder of Delegate: no one raises its own rights, or anyone's above
    /// its own, by delegating.
    fn may_delegate(
        &self,
        who: &Principal,
        store: &Store,
        addr: &NodeAddr,
        to: &str,
        rights: Rights,
    ) -> Result<(), AccessError> {
        if *who == Principal::Admin {
            return Ok(());
        }
        let owner = store
            .instance(&addr.moid, &addr.miid)?
            .is_some_and(|i| i.owner == who.to_string());
        if owner {
            return Ok(());
        }
        let held = view::rights(store, who, &addr.moid, &addr.miid)?
            .intersection(self.reach(store, who)?.cap(&addr.moid));
        let theirs = store.grant(addr, to)?;
        let denied = |why: String| Err(AccessError::Denied(format!("{addr}: {who} {why}")));
        if !held.contains(rights) {
            return denied(format!(
                "may pass on only the rights it holds ({})",
                held.names().join(",")
            ));
        }
        if to == ANY_APP || to == ANY_SERVER {
            return denied(format!("may not grant to {to}: only the owner may"));
        }
        if to == who.to_string() || theirs.contains(Rights::DELEGATE) {
            return denied("may not change its own rights or another delegate's".into());
        }
        Ok(())
    }

    /// Who holds which rights on the instance at `instance_uri`: its owner (every right)
    /// first, then the grants, by principal. `who` must be the admin or hold Delegate on it.
    pub fn list_grants(
        &self,
        who: &Principal,
        instance_uri: impl Address,
    ) -> Result<Vec<(String, Rights)>, AccessError> {
        let uri = instance_uri.parsed()?;
        let store = self.reader();
        let addr = self.single_target(who, &store, &uri, Rights::DELEGATE)?;
        if !addr.path.is_empty() {
            return Err(AccessError::InvalidUri(format!(
                "{addr}: grants are per instance; name its root"
            )));
        }
        self.require(who, &store, &addr, Rights::DELEGATE)?;
        let owner = store
            .instance(&addr.moid, &addr.miid)?
            .ok_or_else(|| AccessError::NotFound(format!("{addr}: no such node")))?
            .owner;
        let mut out = vec![(owner, Rights::ALL)];
        out.extend(store.grants(&addr)?);
        Ok(out)
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
        let view = self.view(&store, who, Purpose::Read)?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for info in store.list_instances()? {
            if !view.sees_instance(&info.moid, &info.miid)? {
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
        let types = self.types();
        let store = self.reader();
        let addr = self.single_target(who, &store, uri, Rights::EXEC)?;
        if store.kind(&addr.moid, &addr.miid, &addr.path)?.is_none() {
            return Err(AccessError::NotFound(format!("{addr}: no such node")));
        }
        if let Some(d) = def(&types, &addr)
            && *who != Principal::Admin
            && !d.access.contains(AccessTypes::EXEC)
        {
            return Err(AccessError::NotAllowed(format!(
                "{addr}: the DDF allows only {}",
                d.access
            )));
        }
        self.require(who, &store, &addr, Rights::EXEC)?;
        Ok(addr)
    }

    /// Where `who` may put a large object: the one leaf `uri` names, of format `bin` (by
    /// its DDF, or as it is when no DDF knows it), that `who` may write; and how many bytes
    /// its instance's owner may still keep (`owner_bytes`). Checked again when the object is
    /// written ([`Authority::set`]); this only spares a transfer that could never land.
    pub fn object_target(
        &self,
        who: &Principal,
        uri: &ClientUri,
    ) -> Result<(NodeAddr, u64), AccessError> {
        let types = self.types();
        let store = self.reader();
        let addr = self.single_target(who, &store, uri, Rights::WRITE)?;
        let format = match def_checked(&types, &addr)? {
            Some(d) => Some(d.format),
            None => store.leaf(&addr)?.map(|(v, _)| v.format()),
        };
        if format != Some(Format::Bin) || addr.path.is_empty() {
            return Err(AccessError::InvalidValue(format!(
                "{addr}: a large object goes into a bin leaf"
            )));
        }
        self.require(who, &store, &addr, Rights::WRITE)?;
        let room = match store.owner_of(&addr.moid, &addr.miid)? {
            Some(owner) => self.bounds.room(&owner, store.usage(&owner)?),
            None => self
                .bounds
                .room(&who.to_string(), store.usage(&who.to_string())?),
        };
        Ok((addr, room))
    }

    /// What an administrator should look at in the DM accounts a store carries from before
    /// accounts became admin-only: accounts not owned by the admin, and `SrvID`s used twice.
    /// One line each; empty when all is well.
    pub fn audit_accounts(&self) -> Result<Vec<String>, AccessError> {
        let store = self.reader();
        let mut out = Vec::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        let admin = Principal::Admin.to_string();
        for info in store.list_instances()? {
            if info.moid != crate::tree::builtin::DMACC {
                continue;
            }
            let root = NodeAddr::root(&info.moid, &info.miid);
            if info.owner != admin {
                out.push(format!(
                    "DM account {root} was created by {}, not an administrator; review it",
                    info.owner
                ));
            }
            if let Some((v, _)) = store.leaf(&root.child("SrvID"))? {
                let id = v.to_text();
                if let Some((_, first)) = seen.iter().find(|(s, _)| *s == id) {
                    out.push(format!(
                        "DM accounts {first} and {root} share SrvID {id:?}; remove one"
                    ));
                }
                seen.push((id, root.to_string()));
            }
        }
        Ok(out)
    }

    /// MIIDs of the instances of `moid`.
    pub fn instances_of(&self, moid: &str) -> Result<Vec<String>, AccessError> {
        Ok(self.reader().instances(moid)?)
    }

    /// Whether the node at `addr` exists (whoever may see it).
    pub fn exists(&self, addr: &NodeAddr) -> Result<bool, AccessError> {
        Ok(self
            .reader()
            .kind(&addr.moid, &addr.miid, &addr.path)?
            .is_some())
    }

    /// Writes MO serialization items received from a server or a bootstrap source.
    /// With `target`, the one item's data replaces the node there (Write right needed).
    /// Without, each item names its place: an instance `who` can see is replaced (Write
    /// right needed); otherwise a new one is created — owned by `who` — if
    /// `may_create(moid)` allows, with the named MIID when it is free and a fresh one when
    /// not (an instance `who` cannot see is never touched, nor revealed). Returns the
    /// ClientURIs written. All items are one transaction.
    pub fn import_items(
        &self,
        who: &Principal,
        items: &[MoItem],
        target: Option<&ClientUri>,
        may_create: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<NodeAddr>, AccessError> {
        self.import(who, items, target, may_create, &|_| true, false)
    }

    /// [`Authority::import_items`] of one item at `target`, except that an instance root
    /// keeps the children the item does not name (each named one is replaced): a device's
    /// partial update, as a child behind the gateway takes it (docs/gateway.md §2.6).
    pub fn merge_items(
        &self,
        who: &Principal,
        items: &[MoItem],
        target: &ClientUri,
    ) -> Result<Vec<NodeAddr>, AccessError> {
        self.import(who, items, Some(target), &|_| false, &|_| true, true)
    }

    /// [`Authority::import_items`] without a target that creates instances and replaces
    /// no existing instance but `except` (a bootstrap server's answer: new accounts, and
    /// its own account rewritten). Whether an instance exists is judged in the write's
    /// transaction, so one created meanwhile is refused, not replaced.
    pub fn import_new(
        &self,
        who: &Principal,
        items: &[MoItem],
        except: &NodeAddr,
    ) -> Result<Vec<NodeAddr>, AccessError> {
        self.import(who, items, None, &|_| true, &|root| root == except, false)
    }

    fn import(
        &self,
        who: &Principal,
        items: &[MoItem],
        target: Option<&ClientUri>,
        may_create: &dyn Fn(&str) -> bool,
        may_replace: &dyn Fn(&NodeAddr) -> bool,
        merge_root: bool,
    ) -> Result<Vec<NodeAddr>, AccessError> {
        let types = self.types();
        let mut store = self.writer();
        let owner = who.to_string();
        let mut plan: Vec<Planned> = Vec::with_capacity(items.len());
        let mut charges = Charges::default();
        if let Some(target) = target {
            let (name, json) = one_item(items, target)?;
            let addr = self.single_target(who, &store, target, Rights::WRITE)?;
            if addr.moid == DACL {
                let node = node_from_json(json, def(&types, &addr), name)
                    .map_err(|e| AccessError::InvalidValue(e.to_string()))?;
                let write = match node {
                    Node::Leaf(v) => DaclWrite::Rights(v.to_text()),
                    entry => DaclWrite::Entry(entry),
                };
                let changes = self.write_dacl(who, &mut store, &addr, write)?;
                drop(store);
                (self.observer)(&changes);
                return Ok(vec![addr]);
            }
            let node = self.check_put(&types, &store, who, &addr, name, json)?;
            if let Some(info) = store.instance(&addr.moid, &addr.miid)? {
                charges.add(&info.owner, 0, bounds::footprint(json, &addr.path, &owner));
            }
            plan.push(match node {
                Node::Interior(children) if merge_root && addr.path.is_empty() => {
                    Planned::Merge(addr, children)
                }
                node => Planned::Put(addr, node),
            });
        } else {
            let view = self.view(&store, who, Purpose::Act)?;
            for item in items {
                let mut placement = Placement::of(item, types.types())?;
                if placement.moid == DACL {
                    return Err(AccessError::NotAllowed(format!(
                        "{}: DACL entries are written one at a time, each at its own node \
                         (DACL/<x>)",
                        item.client_uri
                    )));
                }
                if view.cap(&placement.moid) == Rights::NONE {
                    return Err(AccessError::Denied(format!(
                        "{}: {who} may not manage {}: it is not among the MOIDs its DM \
                         account permits (Perm)",
                        item.client_uri, placement.moid
                    )));
                }
                let visible = match &placement.miid {
                    Some(m) => view
                        .sees_instance(&placement.moid, m)?
                        .then(|| NodeAddr::root(&placement.moid, m)),
                    None if !placement.path.is_empty() => None,
                    None => match view.instances(&placement.moid)?.as_slice() {
                        [] => None,
                        [m] => Some(NodeAddr::root(&placement.moid, m)),
                        more => {
                            return Err(AccessError::InvalidUri(format!(
                                "{}: {} has {} instances; name one by MIID",
                                item.client_uri,
                                placement.moid,
                                more.len()
                            )));
                        }
                    },
                };
                let bytes = item
                    .mo_data
                    .values()
                    .map(|j| bounds::footprint(j, &placement.path, &owner))
                    .sum();
                let existing = match &visible {
                    Some(root) => store.instance(&root.moid, &root.miid)?.is_some(),
                    None => false,
                };
                match visible {
                    Some(root) if existing && !may_replace(&root) => {
                        return Err(AccessError::Denied(format!(
                            "{}: {root} exists; this import only creates instances",
                            item.client_uri
                        )));
                    }
                    Some(root) => {
                        let at = root.child(&placement.path);
                        self.require(who, &store, &at, Rights::WRITE)?;
                        self.account_guard(who, &store, &at)?;
                        self.priority_guard(who, &store, &at, true)?;
                        if let Some(info) = store.instance(&at.moid, &at.miid)? {
                            charges.add(&info.owner, 0, bytes);
                        }
                        placement.miid = Some(root.miid);
                    }
                    None if !placement.path.is_empty() => {
                        return Err(AccessError::NotFound(format!(
                            "{}: no such node",
                            item.client_uri
                        )));
                    }
                    None => {
                        accounts::may_create(who, &placement.moid)?;
                        if !may_create(&placement.moid) {
                            return Err(AccessError::Denied(format!(
                                "{}: {who} may not create instances of {}",
                                item.client_uri, placement.moid
                            )));
                        }
                        // A named MIID that is taken (by an instance `who` cannot see), or
                        // that has the form of a child's behind the gateway, gives way to a
                        // fresh one.
                        if let Some(m) = &placement.miid
                            && (is_child_miid(m) || store.instance(&placement.moid, m)?.is_some())
                        {
                            placement.miid = None;
                        }
                        charges.add(&owner, 1, bytes);
                    }
                }
                plan.push(Planned::Item(placement));
            }
        }
        for (charged, new_instances, bytes) in &charges.0 {
            if !bounds::exempt(charged) {
                self.bounds
                    .precheck(charged, store.usage(charged)?, *new_instances, *bytes)?;
            }
        }
        let (written, changes) = self.guarded_write(&mut store, |tx| {
            let mut written = Vec::with_capacity(plan.len());
            for step in &plan {
                match step {
                    Planned::Put(addr, node) => {
                        tx.put(addr, node, &owner)?;
                        written.push(addr.clone());
                    }
                    Planned::Merge(root, children) => {
                        for (name, child) in children {
                            tx.put(&root.child(name), child, &owner)?;
                        }
                        written.push(root.clone());
                    }
                    Planned::Item(placement) => written.push(tx.place(placement, &owner)?),
                }
            }
            Ok(written)
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(written)
    }

    /// What a write of the MO serialization `json` (named `name`) at `addr` puts there, once
    /// every check of PROTOCOL.md §4 passes for `who`: the DDF's access types and content,
    /// the right, DM accounts, priority. Writes nothing.
    fn check_put(
        &self,
        types: &Registry,
        store: &Store,
        who: &Principal,
        addr: &NodeAddr,
        name: &str,
        json: &J,
    ) -> Result<Node, AccessError> {
        let def = def_checked(types, addr)?;
        let node = node_from_json(json, def, name)
            .map_err(|e| AccessError::InvalidValue(e.to_string()))?;
        // What the DDF says of the node (PROTOCOL.md §4: before rights and priority):
        // its access types allow the write (an instance root takes the instance's
        // content whole), and the content fits its definition.
        if let Some(d) = def {
            let exists = store.kind(&addr.moid, &addr.miid, &addr.path)?.is_some();
            let needed = if exists {
                AccessTypes::REPLACE
            } else {
                AccessTypes::ADD
            };
            if *who != Principal::Admin && !addr.path.is_empty() && !d.access.contains(needed) {
                return Err(AccessError::NotAllowed(format!(
                    "{addr}: the DDF allows only {}",
                    d.access
                )));
            }
            let problems: Vec<String> = d
                .check(&node)
                .into_iter()
                .map(|m| format!("{addr}: {}: {}", m.path, m.reason))
                .collect();
            if !problems.is_empty() {
                return Err(AccessError::InvalidValue(problems.join("; ")));
            }
        }
        self.require(who, store, addr, Rights::WRITE)?;
        self.account_guard(who, store, addr)?;
        self.priority_guard(who, store, addr, true)?;
        Ok(node)
    }

    /// The write an HGET's data at `target` asks for (one item), checked as
    /// [`Authority::import_items`] checks it, but not made: the node and its address, for a
    /// write that must first be made elsewhere (on a device behind the gateway) and then
    /// through [`Authority::import_items`], which checks it again.
    pub fn plan_write(
        &self,
        who: &Principal,
        items: &[MoItem],
        target: &ClientUri,
    ) -> Result<(NodeAddr, Node), AccessError> {
        let types = self.types();
        let store = self.reader();
        let (name, json) = one_item(items, target)?;
        let addr = self.single_target(who, &store, target, Rights::WRITE)?;
        let node = self.check_put(&types, &store, who, &addr, name, json)?;
        Ok((addr, node))
    }

    /// A ClientURI fit for a read or a watch: parsed (if it is text), and refused when an
    /// `nv=` condition would test a No-Get node.
    pub fn query<'a>(&self, uri: impl Address + 'a) -> Result<Cow<'a, ClientUri>, AccessError> {
        let uri = uri.parsed()?;
        self.check_nv(&uri)?;
        Ok(uri)
    }

    /// `nv=` never tests a No-Get node: a field whose path can reach one (per the DDF) is
    /// an invalid URI, whatever the tree holds.
    fn check_nv(&self, uri: &ClientUri) -> Result<(), AccessError> {
        match self
            .types()
            .get(&uri.moid)
            .and_then(|t| tests_no_get(&t.root, uri))
        {
            None => Ok(()),
            Some(field) => Err(AccessError::InvalidUri(format!(
                "{uri}: nv=({})/{} tests a node whose value cannot be read (No-Get)",
                field.xname,
                field.path.join("/")
            ))),
        }
    }

    /// Writes the items of `addrs` (as [`Authority::readable`] found them) for `who`: a run
    /// of instance roots of one MOID in MIID order is read with one query.
    fn write_addrs(
        &self,
        store: &Store,
        who: &Principal,
        addrs: &[NodeAddr],
        reply: &mut Reply<'_, '_>,
    ) -> Result<(), AccessError> {
        let types = self.types();
        let mut rest = addrs;
        while let Some(first) = rest.first() {
            let run = if first.path.is_empty() && first.moid != DACL {
                1 + rest
                    .windows(2)
                    .take_while(|w| {
                        w[1].moid == first.moid && w[1].path.is_empty() && w[0].miid < w[1].miid
                    })
                    .count()
            } else {
                1
            };
            if run > 1 {
                let miids: Vec<&str> = rest[..run].iter().map(|a| a.miid.as_str()).collect();
                let pruning = Pruning {
                    def: def(&types, first),
                    shows_child: None,
                };
                store.write_instances(&first.moid, &miids, &pruning, reply)?;
            } else {
                self.write_item(store, who, first, reply)?;
            }
            rest = &rest[run..];
        }
        Ok(())
    }

    /// Writes the item of the node at `addr`, without the nodes below it `who` may not
    /// read: No-Get nodes, and at the DACL root the entries it may not see.
    fn write_item(
        &self,
        store: &Store,
        who: &Principal,
        addr: &NodeAddr,
        reply: &mut Reply<'_, '_>,
    ) -> Result<(), AccessError> {
        let types = self.types();
        let def = def(&types, addr);
        if addr.moid == DACL && addr.path.is_empty() {
            let view = self.view(store, who, Purpose::Read)?;
            let shows = |name: &str| view.sees_entry(name);
            let pruning = Pruning {
                def,
                shows_child: Some(&shows),
            };
            return store.write_item(addr, &pruning, reply);
        }
        let pruning = Pruning {
            def,
            shows_child: None,
        };
        store.write_item(addr, &pruning, reply)
    }

    /// Every node `uri` resolves to in what `who` may read; more than `result_rows` is an
    /// error that asks to narrow the query.
    fn readable(
        &self,
        who: &Principal,
        store: &Store,
        uri: &ClientUri,
    ) -> Result<Vec<NodeAddr>, AccessError> {
        let view = self.view(store, who, Purpose::Read)?;
        self.readable_in(&view, uri)
    }

    /// [`Authority::readable`] in a view already made (refused as [`View::may_use`] says).
    fn readable_in(&self, view: &View<'_>, uri: &ClientUri) -> Result<Vec<NodeAddr>, AccessError> {
        view.may_use(&uri.moid)?;
        Ok(resolve(uri, view, self.bounds.result_rows)?)
    }

    /// The one node a write (or EXEC, or grant) names, in an instance `who` can see: a
    /// MIID (or the only visible instance) and real names only. A No-Get node (or one below
    /// it) is not there for a principal without `needed` on its instance, so a reader cannot
    /// tell which secrets exist by trying to write them.
    fn single_target(
        &self,
        who: &Principal,
        store: &Store,
        uri: &ClientUri,
        needed: Rights,
    ) -> Result<NodeAddr, AccessError> {
        let path = uri
            .names_path()
            .filter(|_| matches!(uri.instance, InstanceSel::Miid(_) | InstanceSel::Only))
            .ok_or_else(|| {
                AccessError::InvalidUri(format!("{uri}: writes need one node: no x-names or *"))
            })?;
        let root_uri = ClientUri {
            path: vec![],
            nv: vec![],
            cv: None,
            ..uri.clone()
        };
        let view = self.view_of(store, who, &root_uri, Purpose::Act)?;
        let root = resolve(&root_uri, &view, self.bounds.result_rows)?.remove(0);
        let addr = root.child(&path);
        if view.no_get(&addr.moid, &addr.path)
            && !view.rights(&addr.moid, &addr.miid)?.contains(needed)
        {
            return Err(AccessError::NotFound(format!("{addr}: no such node")));
        }
        Ok(addr)
    }

    /// Runs `f` as one transaction, then, before it commits, holds it to the per-owner
    /// quotas of every instance it grew and to the DM-account rules; either failing rolls
    /// the whole change back.
    fn guarded_write<T>(
        &self,
        store: &mut Store,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, AccessError>,
    ) -> Result<(T, Vec<Change>), AccessError> {
        store.write(|tx| {
            let out = f(tx)?;
            let changes = tx.pending_changes();
            let mut owners: Vec<String> = Vec::new();
            let mut accounts_touched = false;
            for c in changes
                .iter()
                .filter(|c| c.kind != crate::store::ChangeKind::Deleted)
            {
                accounts_touched |= c.addr.moid == crate::tree::builtin::DMACC;
                if let Some(owner) = tx.owner(&c.addr.moid, &c.addr.miid)?
                    && !bounds::exempt(&owner)
                    && !owners.contains(&owner)
                {
                    owners.push(owner);
                }
            }
            for owner in owners {
                self.bounds.check_usage(&owner, tx.usage(&owner)?)?;
            }
            if accounts_touched {
                accounts::check_unique_srv_ids(tx)?;
            }
            Ok(out)
        })
    }

    /// DM-HLF-014: a write by `who` to the node at `addr` (and, with `below`, to any node
    /// under it) last written by a server of higher priority is a conflict naming that
    /// server. Local callers rank below every server, equal priorities do not conflict, and
    /// the admin is outside the ordering — as is a writer whose account is gone.
    fn priority_guard(
        &self,
        who: &Principal,
        store: &Store,
        addr: &NodeAddr,
        below: bool,
    ) -> Result<(), AccessError> {
        let mine = match who {
            Principal::Admin => return Ok(()),
            Principal::Server(id) => Some(accounts::priority(store, id)?.unwrap_or(0)),
            Principal::App(_) | Principal::User(_) => None,
        };
        for writer in store.writers(addr, below)? {
            let Ok(Principal::Server(holder)) = Principal::parse(&writer) else {
                continue;
            };
            if matches!(who, Principal::Server(id) if *id == holder) {
                continue;
            }
            let Some(theirs) = accounts::priority(store, &holder)? else {
                continue;
            };
            if mine.is_none_or(|p| theirs > p) {
                return Err(AccessError::Conflict(format!(
                    "{addr}: last written by {writer} (priority {theirs}), which outranks {who}; \
                     Holder names who holds a node"
                )));
            }
        }
        Ok(())
    }

    /// The DM-account rules for a write of `who` at `addr` (see [`accounts`]); a server's
    /// own account is the one whose `SrvID` is its id.
    fn account_guard(
        &self,
        who: &Principal,
        store: &Store,
        addr: &NodeAddr,
    ) -> Result<(), AccessError> {
        if addr.moid != crate::tree::builtin::DMACC {
            return Ok(());
        }
        let srv_id = store
            .leaf(&NodeAddr::root(&addr.moid, &addr.miid).child("SrvID"))?
            .map(|(v, _)| v.to_text());
        accounts::may_change(who, addr, srv_id.as_deref())
    }

    fn require(
        &self,
        who: &Principal,
        store: &Store,
        addr: &NodeAddr,
        needed: Rights,
    ) -> Result<(), AccessError> {
        let held = view::rights(store, who, &addr.moid, &addr.miid)?
            .intersection(self.reach(store, who)?.cap(&addr.moid));
        if held.contains(needed) {
            Ok(())
        } else {
            Err(AccessError::Denied(format!(
                "{addr}: {who} lacks {} on this instance",
                needed.names().join(",")
            )))
        }
    }

    /// Which MOIDs `who` may use at all (see [`Reach`]).
    fn reach(&self, store: &Store, who: &Principal) -> Result<Reach, StoreError> {
        Ok(match who {
            Principal::Server(id) => Reach::Server {
                permitted: accounts::permitted(store, id)?,
                public: self.public_moids(),
            },
            _ => Reach::All,
        })
    }

    /// The store as `who` sees it for `purpose`.
    fn view<'a>(
        &'a self,
        store: &'a Store,
        who: &'a Principal,
        purpose: Purpose,
    ) -> Result<View<'a>, AccessError> {
        let reach = self.reach(store, who)?;
        Ok(View::new(store, self.types(), who, purpose, reach))
    }

    /// The view for a command naming `uri`, refused as [`View::may_use`] says.
    fn view_of<'a>(
        &'a self,
        store: &'a Store,
        who: &'a Principal,
        uri: &ClientUri,
        purpose: Purpose,
    ) -> Result<View<'a>, AccessError> {
        let view = self.view(store, who, purpose)?;
        view.may_use(&uri.moid)?;
        Ok(view)
    }

    fn reader(&self) -> MutexGuard<'_, Store> {
        self.store.reader()
    }

    fn writer(&self) -> MutexGuard<'_, Store> {
        self.store.writer()
    }
}

/// The definition of `addr` in `types`, if its MO type is known.
fn def<'t>(types: &'t Registry, addr: &NodeAddr) -> Option<&'t NodeDef> {
    types.get(&addr.moid)?.def_at(&addr.path)
}

/// The definition of `addr` in `types`; an error when its MO type is known but has no such
/// node.
fn def_checked<'t>(
    types: &'t Registry,
    addr: &NodeAddr,
) -> Result<Option<&'t NodeDef>, AccessError> {
    match types.get(&addr.moid) {
        None => Ok(None),
        Some(t) => t
            .def_at(&addr.path)
            .map(Some)
            .ok_or_else(|| AccessError::InvalidUri(format!("{addr}: not a node of {}", t.moid))),
    }
}

/// What an import will add per owner: (owner, new instances, bytes), before it is written.
#[derive(Default)]
struct Charges(Vec<(String, u64, u64)>);

impl Charges {
    fn add(&mut self, owner: &str, new_instances: u64, bytes: u64) {
        match self.0.iter_mut().find(|(o, _, _)| o == owner) {
            Some((_, n, b)) => {
                *n += new_instances;
                *b = b.saturating_add(bytes);
            }
            None => self.0.push((owner.to_owned(), new_instances, bytes)),
        }
    }
}

/// One step of an import.
enum Planned {
    /// Replace the node at the address with this subtree.
    Put(NodeAddr, Node),
    /// Replace each of these children of the instance root at the address, keeping the
    /// others.
    Merge(NodeAddr, std::collections::BTreeMap<String, Node>),
    /// Write the item where its placement says.
    Item(Placement),
}

/// The one item an HGET's data at `target` must be, as its node name and value.
fn one_item<'a>(items: &'a [MoItem], target: &ClientUri) -> Result<(&'a str, &'a J), AccessError> {
    let [item] = items else {
        return Err(AccessError::InvalidValue(format!(
            "{target}: expected one MO serialization item, got {}",
            items.len()
        )));
    };
    item.single()
        .map_err(|e| AccessError::InvalidValue(e.to_string()))
}

/// The first `nv=` field of `uri` that can test a No-Get node of the MO type rooted at
/// `root`: walks the DDF along the URI (names to their definition, `*` and x-names to
/// every child definition) to each x-name's position, then along the field's path.
fn tests_no_get<'u>(root: &NodeDef, uri: &'u ClientUri) -> Option<&'u NvField> {
    let mut at: Vec<&NodeDef> = vec![root];
    let mut positions: Vec<(&str, Vec<&NodeDef>)> = Vec::new();
    if let InstanceSel::XName(x) = &uri.instance {
        positions.push((x, at.clone()));
    }
    for segment in &uri.path {
        at = match segment {
            Segment::Name(n) => at.iter().filter_map(|d| d.child(n)).collect(),
            Segment::Any | Segment::XName(_) => at.iter().flat_map(|d| d.children.iter()).collect(),
        };
        if let Segment::XName(x) = segment {
            positions.push((x, at.clone()));
        }
    }
    let reaches_no_get = |def: &NodeDef, path: &[String]| {
        let mut def = def;
        for name in path {
            match def.child(name) {
                Some(d) if d.access.is_no_get() => return true,
                Some(d) => def = d,
                None => return false,
            }
        }
        false
    };
    uri.nv.iter().find(|field| {
        positions
            .iter()
            .filter(|(x, _)| *x == field.xname)
            .any(|(_, defs)| defs.iter().any(|d| reaches_no_get(d, &field.path)))
    })
}

fn infer(input: &Input) -> Format {
    match input {
        Input::Text(_) => Format::Chr,
        Input::Int(_) => Format::Int,
        Input::Bool(_) => Format::Bool,
        Input::Float(_) => Format::Float,
        Input::Bytes(_) | Input::Object(_) => Format::Bin,
        Input::Json(_) => Format::Json,
    }
}

fn convert(format: Format, input: Input) -> Result<Value, String> {
    Ok(match (format, input) {
        (Format::Json, input) => {
            let json = app_json(input)?;
            bounds::check_app_json(&json)?;
            Value::Json(json)
        }
        (_, Input::Text(t)) => Value::parse(format, &t).map_err(|e| e.to_string())?,
        (_, Input::Json(j)) => Value::from_json(format, &j).map_err(|e| e.to_string())?,
        (Format::Int, Input::Int(i)) => Value::Int(i),
        (Format::Bool, Input::Bool(b)) => Value::Bool(b),
        (Format::Float, Input::Float(f)) if f.is_finite() => Value::Float(f),
        (Format::Float, Input::Int(i)) => Value::Float(i as f64),
        (Format::B64, Input::Bytes(b)) => Value::B64(b),
        (Format::Bin, Input::Bytes(b)) => Value::Bin(b),
        (Format::Bin, Input::Object(o)) => Value::Object(o),
        (f, other) => return Err(format!("a {f} node cannot take {other:?}")),
    })
}

/// The JSON value an input for a `json` node stands for: text is JSON text; numbers,
/// booleans and bytes (an array of numbers) are themselves.
fn app_json(input: Input) -> Result<J, String> {
    Ok(match input {
        Input::Text(t) => serde_json::from_str(&t).map_err(|_| {
            crate::tree::value::ValueError::Invalid {
                format: Format::Json,
                text: t,
                reason: "not JSON",
            }
            .to_string()
        })?,
        Input::Json(j) => j,
        Input::Int(i) => J::from(i),
        Input::Bool(b) => J::from(b),
        Input::Float(f) => serde_json::Number::from_f64(f)
            .map(J::Number)
            .ok_or_else(|| format!("{f} is not a finite number"))?,
        Input::Bytes(b) => J::from(b),
        Input::Object(o) => return Err(format!("a json node cannot hold a {o}")),
    })
}

#[cfg(test)]
mod tests;
