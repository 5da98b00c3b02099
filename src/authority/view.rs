//! What one principal can see of the tree: the store as a [`TreeRead`] from which every
//! instance the principal may not use, and (for reads) every No-Get node, is absent.
//!
//! Resolving a ClientURI over a [`View`] instead of the store is what makes invisible nodes
//! answer exactly like nodes that do not exist, on every path at once: wildcards and x-names
//! skip them, an empty `mo-inst` counts only visible instances, `nv=` conditions never test
//! them, and a concrete URI into them is "no such node".

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use super::error::AccessError;
use super::principal::{ANY_APP, ANY_SERVER, Principal, Rights};
use crate::store::{Store, StoreError};
use crate::tree::builtin::{DACL, DMACC, SESSIONINFO};
use crate::tree::registry::Registry;
use crate::tree::resolve::{NodeKind, TreeRead};

/// What a view is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Reading: instances with the Read right; No-Get nodes are hidden.
    Read,
    /// Writing, executing, granting: instances on which the principal holds any right
    /// (the command's own right is checked afterwards, so a visible instance without it
    /// answers "denied"); No-Get nodes stay writable.
    Act,
}

/// Which MOIDs a principal may use at all (PROTOCOL.md §11, DM-HLF-009): every MOID for
/// the admin and local callers; for a server, the MOIDs of its account's `Perm` list and
/// omadmd's per-server MOs (its DM account, its sessions' SessionInfo: instances it holds
/// rights on by ownership or grant; the DACL MO: the entries it may see), plus the public
/// MOIDs (`[access] public_moids`) for reading only. Rights on instances come on top: this is a ceiling, never a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    All,
    Server {
        permitted: Vec<String>,
        public: Arc<[String]>,
    },
}

impl Reach {
    /// The most a principal of this reach may hold on an instance of `moid`.
    pub fn cap(&self, moid: &str) -> Rights {
        match self {
            Reach::All => Rights::ALL,
            Reach::Server { permitted, public } => {
                if [DMACC, SESSIONINFO, DACL].contains(&moid) || permitted.iter().any(|m| m == moid)
                {
                    Rights::ALL
                } else if public.iter().any(|m| m == moid) {
                    Rights::READ
                } else {
                    Rights::NONE
                }
            }
        }
    }
}

/// The store as `who` may see it for `purpose`.
pub struct View<'a> {
    store: &'a Store,
    types: Arc<Registry>,
    who: &'a Principal,
    purpose: Purpose,
    reach: Reach,
    /// Rights per instance, looked up once per view: by MOID, then MIID, with borrowed names,
    /// so a hit allocates nothing.
    rights: RefCell<HashMap<String, HashMap<String, Rights>>>,
    /// Whether each DACL entry looked at is one the principal may see, by entry name.
    entries: RefCell<HashMap<String, bool>>,
}

impl<'a> View<'a> {
    pub fn new(
        store: &'a Store,
        types: Arc<Registry>,
        who: &'a Principal,
        purpose: Purpose,
        reach: Reach,
    ) -> View<'a> {
        View {
            store,
            types,
            who,
            purpose,
            reach,
            rights: RefCell::new(HashMap::new()),
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// The rights the principal holds on the instance `moid`/`miid` (none if missing).
    pub fn rights(&self, moid: &str, miid: &str) -> Result<Rights, StoreError> {
        if let Some(r) = self.rights.borrow().get(moid).and_then(|m| m.get(miid)) {
            return Ok(*r);
        }
        let r = rights(self.store, self.who, moid, miid)?.intersection(self.reach.cap(moid));
        self.rights
            .borrow_mut()
            .entry(moid.to_owned())
            .or_default()
            .insert(miid.to_owned(), r);
        Ok(r)
    }

    /// Refuses a command naming `moid` that the principal may not use at all: a server
    /// naming an MOID it was not given gets `Denied` (`403`) before anything is looked up
    /// (PROTOCOL.md §4: it knows its own list, so this tells it nothing about the tree).
    pub fn may_use(&self, moid: &str) -> Result<(), AccessError> {
        if self.reach.cap(moid) == Rights::NONE {
            return Err(AccessError::Denied(format!(
                "{} may not manage {moid}: it is not among the MOIDs its DM account permits \
                 (Perm), nor public",
                self.who
            )));
        }
        Ok(())
    }

    /// The most the principal may hold on any instance of `moid` (see [`Reach`]).
    pub fn cap(&self, moid: &str) -> Rights {
        self.reach.cap(moid)
    }

    /// Whether the instance `moid`/`miid` exists for this view.
    pub fn sees_instance(&self, moid: &str, miid: &str) -> Result<bool, StoreError> {
        let r = self.rights(moid, miid)?;
        Ok(match self.purpose {
            Purpose::Read => r.contains(Rights::READ),
            Purpose::Act => r != Rights::NONE,
        })
    }

    /// Whether the node at `addr` exists for this view as far as rights and access types go
    /// (it may still be absent from the tree).
    pub fn sees(&self, addr: &crate::tree::uri::NodeAddr) -> Result<bool, StoreError> {
        Ok(!self.hides(&addr.moid, &addr.path)
            && self.sees_instance(&addr.moid, &addr.miid)?
            && self.sees_entry_at(&addr.moid, &addr.path)?)
    }

    /// Whether the principal may see the DACL entry `name` (DM-HLF-013): the admin sees
    /// every entry; anyone else those naming it (or everyone of its kind) and those on
    /// instances it holds Delegate on (owners hold every right).
    pub fn sees_entry(&self, name: &str) -> Result<bool, StoreError> {
        if *self.who == Principal::Admin {
            return Ok(true);
        }
        if let Some(seen) = self.entries.borrow().get(name) {
            return Ok(*seen);
        }
        let seen = match self.store.dacl_entry_named(name)? {
            None => false,
            Some(entry) => {
                names(self.who, &entry.principal)
                    || match entry.target_root() {
                        Some(t) => self.rights(&t.moid, &t.miid)?.contains(Rights::DELEGATE),
                        None => false,
                    }
            }
        };
        self.entries.borrow_mut().insert(name.to_owned(), seen);
        Ok(seen)
    }

    /// Whether the node at `path` of an instance of `moid` lies in a DACL entry the
    /// principal may see (true outside the DACL MO and at its root).
    fn sees_entry_at(&self, moid: &str, path: &str) -> Result<bool, StoreError> {
        match path.split('/').find(|n| !n.is_empty()) {
            Some(name) if moid == DACL => self.sees_entry(name),
            _ => Ok(true),
        }
    }

    /// Whether the node at `path` is hidden by its DDF access type (No-Get, for reads).
    fn hides(&self, moid: &str, path: &str) -> bool {
        self.purpose == Purpose::Read && self.no_get(moid, path)
    }

    /// Whether the node at `path`, or one of its ancestors, is No-Get in the DDF.
    pub fn no_get(&self, moid: &str, path: &str) -> bool {
        let Some(mut def) = self.types.get(moid).map(|t| &t.root) else {
            return false;
        };
        for name in path.split('/').filter(|n| !n.is_empty()) {
            match def.child(name) {
                Some(d) if d.access.is_no_get() => return true,
                Some(d) => def = d,
                None => return false,
            }
        }
        false
    }
}

impl TreeRead for View<'_> {
    type Error = StoreError;

    fn instances(&self, moid: &str) -> Result<Vec<String>, StoreError> {
        let mut out = self.store.instances(moid)?;
        let mut keep = Vec::with_capacity(out.len());
        for miid in &out {
            keep.push(self.sees_instance(moid, miid)?);
        }
        let mut flags = keep.into_iter();
        out.retain(|_| flags.next().unwrap_or(false));
        Ok(out)
    }

    fn kind(&self, moid: &str, miid: &str, path: &str) -> Result<Option<NodeKind>, StoreError> {
        if self.hides(moid, path)
            || !self.sees_instance(moid, miid)?
            || !self.sees_entry_at(moid, path)?
        {
            return Ok(None);
        }
        self.store.kind(moid, miid, path)
    }

    fn children(&self, moid: &str, miid: &str, path: &str) -> Result<Vec<String>, StoreError> {
        if !self.sees_instance(moid, miid)? {
            return Ok(Vec::new());
        }
        if !self.sees_entry_at(moid, path)? {
            return Ok(Vec::new());
        }
        let mut names = self.store.children(moid, miid, path)?;
        names.retain(|n| !self.hides(moid, &crate::tree::uri::join(path, n)));
        if moid == DACL && path.is_empty() {
            let mut keep = Vec::with_capacity(names.len());
            for name in &names {
                keep.push(self.sees_entry(name)?);
            }
            let mut flags = keep.into_iter();
            names.retain(|_| flags.next().unwrap_or(false));
        }
        Ok(names)
    }

    fn leaf_text(&self, moid: &str, miid: &str, path: &str) -> Result<Option<String>, StoreError> {
        if self.hides(moid, path)
            || !self.sees_instance(moid, miid)?
            || !self.sees_entry_at(moid, path)?
        {
            return Ok(None);
        }
        self.store.leaf_text(moid, miid, path)
    }
}

/// Whether a grant to `principal` is one to `who`: itself, or every principal of its kind.
fn names(who: &Principal, principal: &str) -> bool {
    principal == who.to_string() || principal == everyone(who)
}

/// The principal that stands for everyone of `who`'s kind in grants.
pub fn everyone(who: &Principal) -> &'static str {
    match who {
        Principal::Server(_) => ANY_SERVER,
        _ => ANY_APP,
    }
}

/// The rights `who` holds on the instance `moid`/`miid`: all for the admin and the owner,
/// else its own grants plus those to every principal of its kind (`app:*` for local
/// callers, `srv:*` for servers). The DACL instance everyone reads (which of its entries
/// each may see is [`View::sees_entry`]'s); its writes are grants, checked as such.
pub fn rights(
    store: &Store,
    who: &Principal,
    moid: &str,
    miid: &str,
) -> Result<Rights, StoreError> {
    if *who == Principal::Admin {
        return Ok(Rights::ALL);
    }
    let Some(owner) = store.owner_of(moid, miid)? else {
        return Ok(Rights::NONE);
    };
    if moid == DACL {
        return Ok(Rights::READ);
    }
    let everyone = everyone(who);
    let me = who.to_string();
    if *owner == *me {
        return Ok(Rights::ALL);
    }
    let root = crate::tree::uri::NodeAddr::root(moid, miid);
    Ok(store
        .grant(&root, &me)?
        .union(store.grant(&root, everyone)?))
}
