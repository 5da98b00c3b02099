//! Instances omadmd itself keeps for one reader (the SessionInfo MO of a running session):
//! owned by the admin, readable by the principal they are for and nobody else, and removed
//! by omadmd when what they describe ends — never by a server or an app (their DDF makes
//! them Get-only and Permanent).

use super::{AccessError, Authority, Principal, Rights};
use crate::tree::node::Node;
use crate::tree::resolve::TreeRead as _;
use crate::tree::uri::NodeAddr;

impl Authority {
    /// Puts `content` as the instance `moid`/`miid` (replacing one there), owned by the
    /// admin, with `rights` for `reader` only.
    pub fn provide_to(
        &self,
        moid: &str,
        miid: &str,
        root_name: &str,
        content: &Node,
        reader: &Principal,
        rights: Rights,
    ) -> Result<(), AccessError> {
        let root = NodeAddr::root(moid, miid);
        let owner = Principal::Admin.to_string();
        let mut store = self.writer();
        let exists = store.instance(moid, miid)?.is_some();
        let (_, changes) = store.write(|tx| {
            if exists {
                tx.delete(&root, &owner)?;
            }
            tx.create_instance(moid, Some(miid), root_name, content, &owner)?;
            tx.set_grant(&root, &reader.to_string(), rights.bits())
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(())
    }

    /// Removes the instances of `moid` that `keep` does not want (all of them for
    /// `|_| false`); returns how many went.
    pub fn withdraw(&self, moid: &str, keep: impl Fn(&str) -> bool) -> Result<usize, AccessError> {
        let owner = Principal::Admin.to_string();
        let mut store = self.writer();
        let gone: Vec<String> = store
            .instances(moid)?
            .into_iter()
            .filter(|miid| !keep(miid))
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let (_, changes) = store.write(|tx| {
            for miid in &gone {
                tx.delete(&NodeAddr::root(moid, miid), &owner)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(gone.len())
    }
}
