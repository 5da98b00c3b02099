//! Writing MO serialization items (PROTOCOL.md §7) into the store, as HGET and factory
//! bootstrap files do: an item naming an instance root creates the instance (with that
//! MIID, or a fresh one for an empty `mo-inst`) or replaces its content; an item naming a
//! node below a root puts the subtree there.

use super::{StoreError, Txn};
use crate::tree::json::{MoItem, node_from_json};
use crate::tree::mo_type::MoType;
use crate::tree::uri::{ClientUri, InstanceSel, NodeAddr, Segment};

impl Txn<'_> {
    /// Writes one item; `types` give formats and the expected root name for known MOIDs.
    /// Returns the address written.
    pub fn import_item(
        &mut self,
        item: &MoItem,
        types: &[MoType],
        writer: &str,
    ) -> Result<NodeAddr, StoreError> {
        let bad = |reason: String| StoreError::BadItem {
            uri: item.client_uri.clone(),
            reason,
        };
        let uri = ClientUri::parse(&item.client_uri).map_err(|e| bad(e.reason))?;
        let mut path = Vec::new();
        for s in &uri.path {
            match s {
                Segment::Name(n) => path.push(n.as_str()),
                _ => return Err(bad("x-names and * cannot name a place to write".into())),
            }
        }
        let miid = match &uri.instance {
            InstanceSel::Miid(m) => Some(m.clone()),
            InstanceSel::Only => None,
            _ => return Err(bad("x-names and * cannot name a place to write".into())),
        };
        let (name, json) = item.single().map_err(|e| bad(e.to_string()))?;
        let ty = types.iter().find(|t| t.moid == uri.moid);
        let path = path.join("/");
        let def = match ty {
            Some(t) => Some(
                t.def_at(&path)
                    .ok_or_else(|| bad(format!("{path} is not a node of {}", t.moid)))?,
            ),
            None => None,
        };
        if path.is_empty() {
            if let Some(t) = ty
                && name != t.root_name()
            {
                return Err(bad(format!(
                    "MOData holds {name}, but {} instances are rooted at {}",
                    t.moid,
                    t.root_name()
                )));
            }
        } else if path.rsplit('/').next() != Some(name) {
            return Err(bad(format!(
                "MOData holds {name}, but the ClientURI names {path}"
            )));
        }
        let node = node_from_json(json, def, name).map_err(|e| bad(e.to_string()))?;
        if !path.is_empty() {
            let miid =
                miid.ok_or_else(|| bad("a node below the root needs the instance's MIID".into()))?;
            let addr = NodeAddr {
                moid: uri.moid.clone(),
                miid,
                path,
            };
            self.put(&addr, &node, writer)?;
            return Ok(addr);
        }
        let existing = match &miid {
            Some(m) => self.has_instance(&uri.moid, m)?,
            None => false,
        };
        if existing {
            let addr = NodeAddr::root(&uri.moid, miid.as_deref().unwrap_or_default());
            self.put(&addr, &node, writer)?;
            Ok(addr)
        } else {
            self.create_instance(&uri.moid, miid.as_deref(), name, &node, writer)
        }
    }
}
