//! Grants as principals change them (DM-HLF-013): locally through [`Authority::grant`]
//! (D-Bus `Grant`/`Revoke`), and by a server (or anyone) writing the Delegation Access
//! Control MO — adding an entry `DACL/<x>` grants, replacing its `Rights` changes the grant,
//! deleting the entry revokes. Both go through one check ([`Authority::grant_in`]): the
//! writer holds Delegate on the instance (within its reach), passes on only what it holds
//! ([`Authority::may_delegate`]'s rules), does not override an entry a higher-priority server
//! wrote (`409`), and stays under [`MAX_GRANTS`] per instance. An entry the writer may not
//! see is not there for it; a new entry under a name an invisible one has gets a fresh name,
//! as a named MIID that is taken does.

use super::view::Purpose;
use super::{AccessError, Authority, MAX_GRANTS, Principal, Rights};
use crate::store::{Change, DaclEntry, Store, dacl_root};
use crate::tree::node::Node;
use crate::tree::uri::{ClientUri, NodeAddr};

/// What a write to the DACL MO asks.
pub(super) enum DaclWrite {
    /// New text for an entry's `Rights` leaf.
    Rights(String),
    /// A whole entry (`Target`, `Principal`, `Rights`).
    Entry(Node),
    /// The entry goes.
    Remove,
}

impl Authority {
    /// Gives `principal` `rights` on the instance at `instance_uri` (replacing earlier ones;
    /// none removes them). `who` must be the admin or hold Delegate on the instance.
    pub fn grant(
        &self,
        who: &Principal,
        instance_uri: impl super::Address,
        principal: &str,
        rights: Rights,
    ) -> Result<(), AccessError> {
        let uri = instance_uri.parsed()?;
        let mut store = self.writer();
        let addr = self.grant_target(who, &store, &uri)?;
        let changes = self.grant_in(who, &mut store, &addr, principal, rights, None)?;
        drop(store);
        (self.observer)(&changes);
        Ok(())
    }

    /// Brings the DACL MO in line with the grants table (for a store from before it).
    pub fn mirror_grants(&self) -> Result<(), AccessError> {
        let admin = Principal::Admin.to_string();
        let (_, changes) = self.writer().write(|tx| tx.mirror_all(&admin))?;
        (self.observer)(&changes);
        Ok(())
    }

    /// The names of the DACL entries `who` may see.
    pub fn dacl_entries_seen(&self, who: &Principal) -> Result<Vec<String>, AccessError> {
        use crate::tree::resolve::TreeRead as _;
        let store = self.reader();
        let root = dacl_root();
        Ok(self
            .view(&store, who, Purpose::Read)?
            .children(&root.moid, &root.miid, "")?)
    }

    /// The write `write` at `addr`, a node of the DACL MO, by `who` (see the module
    /// documentation). Returns the journal entries; the caller tells the observer.
    pub(super) fn write_dacl(
        &self,
        who: &Principal,
        store: &mut Store,
        addr: &NodeAddr,
        write: DaclWrite,
    ) -> Result<Vec<Change>, AccessError> {
        let names: Vec<&str> = addr.path.split('/').filter(|n| !n.is_empty()).collect();
        let fixed = |what: &str| {
            Err(AccessError::NotAllowed(format!(
                "{addr}: {what}; delete the entry and add another"
            )))
        };
        match (names.as_slice(), write) {
            ([], DaclWrite::Remove) => Err(AccessError::NotAllowed(format!(
                "{addr}: permanent nodes cannot be deleted"
            ))),
            ([], _) => Err(AccessError::NotAllowed(format!(
                "{addr}: omadmd keeps this node; write its entries (DACL/<x>)"
            ))),
            ([name], DaclWrite::Remove) => {
                let entry = self.visible_entry(who, store, addr, name)?;
                let target = entry_target(addr, &entry)?;
                self.grant_in(who, store, &target, &entry.principal, Rights::NONE, None)
            }
            ([name], DaclWrite::Entry(node)) => {
                let field = |leaf: &str| match node.get(leaf) {
                    Some(Node::Leaf(v)) => Ok(v.to_text()),
                    _ => Err(AccessError::InvalidValue(format!(
                        "{addr}: an entry needs Target, Principal and Rights leaves"
                    ))),
                };
                let (target, principal, rights) =
                    (field("Target")?, field("Principal")?, field("Rights")?);
                let rights = parse_rights(addr, &rights)?;
                let principal = canonical(&principal)?;
                if let Some(entry) = self.existing_entry(who, store, name)?
                    && (entry.target != target || entry.principal != principal)
                {
                    return fixed("an entry's Target and Principal are fixed");
                }
                let uri = ClientUri::parse(&target).map_err(|e| {
                    AccessError::InvalidValue(format!("{addr}: Target {target:?}: {e}"))
                })?;
                let target = self.grant_target(who, store, &uri)?;
                self.grant_in(who, store, &target, &principal, rights, Some(name))
            }
            ([name, "Rights"], DaclWrite::Rights(text)) => {
                let entry = self.visible_entry(who, store, addr, name)?;
                let rights = parse_rights(addr, &text)?;
                let target = entry_target(addr, &entry)?;
                self.grant_in(who, store, &target, &entry.principal, rights, None)
            }
            ([name, "Target" | "Principal"], _) => {
                self.visible_entry(who, store, addr, name)?;
                fixed("an entry's Target and Principal are fixed")
            }
            ([name, "Rights"], _) => {
                self.visible_entry(who, store, addr, name)?;
                Err(AccessError::NotAllowed(format!(
                    "{addr}: the DDF allows only Add, Get, Replace"
                )))
            }
            _ => Err(AccessError::NotFound(format!("{addr}: no such node"))),
        }
    }

    /// The one instance root `uri` names, for a grant by `who`.
    fn grant_target(
        &self,
        who: &Principal,
        store: &Store,
        uri: &ClientUri,
    ) -> Result<NodeAddr, AccessError> {
        let addr = self.single_target(who, store, uri, Rights::DELEGATE)?;
        if !addr.path.is_empty() {
            return Err(AccessError::InvalidUri(format!(
                "{addr}: grants are per instance; name its root"
            )));
        }
        Ok(addr)
    }

    /// Gives `principal` `rights` on the instance `addr` as `who`, with every check (see the
    /// module documentation); a new DACL entry is named `entry` when that name is free.
    pub(super) fn grant_in(
        &self,
        who: &Principal,
        store: &mut Store,
        addr: &NodeAddr,
        principal: &str,
        rights: Rights,
        entry: Option<&str>,
    ) -> Result<Vec<Change>, AccessError> {
        let principal = canonical(principal)?;
        self.require(who, store, addr, Rights::DELEGATE)?;
        self.may_delegate(who, store, addr, &principal, rights)?;
        if let Some(name) = store.dacl_entry(addr, &principal)? {
            self.priority_guard(who, store, &dacl_root().child(&name), true)?;
        }
        if rights != Rights::NONE {
            let grants = store.grants(addr)?;
            if grants.len() >= MAX_GRANTS && !grants.iter().any(|(p, _)| *p == principal) {
                return Err(AccessError::Limit(format!(
                    "{addr}: already {} grants, the most one instance holds; revoke some first",
                    grants.len()
                )));
            }
        }
        let by = who.to_string();
        let (_, changes) =
            store.write(|tx| tx.set_grant_as(addr, &principal, rights, &by, entry))?;
        Ok(changes)
    }

    /// The entry `name` if `who` may see it; else "no such node", as for one that is not there.
    fn visible_entry(
        &self,
        who: &Principal,
        store: &Store,
        addr: &NodeAddr,
        name: &str,
    ) -> Result<DaclEntry, AccessError> {
        self.existing_entry(who, store, name)?
            .ok_or_else(|| AccessError::NotFound(format!("{addr}: no such node")))
    }

    /// The entry `name` if it exists and `who` may see it.
    fn existing_entry(
        &self,
        who: &Principal,
        store: &Store,
        name: &str,
    ) -> Result<Option<DaclEntry>, AccessError> {
        if !self.view(store, who, Purpose::Act)?.sees_entry(name)? {
            return Ok(None);
        }
        Ok(store.dacl_entry_named(name)?)
    }
}

/// A principal as grants store it.
fn canonical(principal: &str) -> Result<String, AccessError> {
    Principal::parse(principal)
        .map(|p| p.to_string())
        .map_err(|e| AccessError::InvalidValue(e.to_string()))
}

/// The `Rights` text of an entry at `addr`.
fn parse_rights(addr: &NodeAddr, text: &str) -> Result<Rights, AccessError> {
    Rights::parse_text(text).map_err(|e| AccessError::InvalidValue(format!("{addr}: {e}")))
}

/// The instance an existing entry is on.
fn entry_target(addr: &NodeAddr, entry: &DaclEntry) -> Result<NodeAddr, AccessError> {
    entry.target_root().ok_or_else(|| {
        AccessError::InvalidValue(format!("{addr}: Target {} names no instance", entry.target))
    })
}
