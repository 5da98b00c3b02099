//! Writing MO serialization items (PROTOCOL.md §7) into the store, as HGET and factory
//! bootstrap files do: an item naming an instance root creates the instance (with that
//! MIID, or a fresh one for an empty `mo-inst`) or replaces its content; an item naming a
//! node below a root puts the subtree there.
//!
//! [`Placement::of`] is the one place an item is read: its ClientURI parsed once, checked to
//! name one place (names only, no x-names or `*`), its root name checked against the MO
//! type, its data turned into a node with the type's formats. [`Txn::place`] writes it.

use super::{StoreError, Txn};
use crate::tree::json::{MoItem, node_from_json};
use crate::tree::mo_type::MoType;
use crate::tree::node::Node;
use crate::tree::uri::{ClientUri, InstanceSel, Moid, NodeAddr};

/// Where an item goes and what it holds, read from the item once.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub moid: Moid,
    /// The named MIID; `None` for an empty `mo-inst` (a new instance with a fresh MIID).
    pub miid: Option<String>,
    /// The path below the instance root (empty: the root itself).
    pub path: String,
    /// The node name the data is rooted at (the MO's root name at an instance root).
    pub name: String,
    pub node: Node,
}

impl Placement {
    /// Reads `item`; `types` give formats and the expected root name for known MOIDs.
    pub fn of(item: &MoItem, types: &[MoType]) -> Result<Placement, StoreError> {
        let bad = |reason: String| StoreError::BadItem {
            uri: item.client_uri.clone(),
            reason,
        };
        let uri = ClientUri::parse(&item.client_uri).map_err(|e| bad(e.reason))?;
        let nowhere = || bad("x-names and * cannot name a place to write".into());
        let path = uri.names_path().ok_or_else(nowhere)?;
        let miid = match uri.instance {
            InstanceSel::Miid(m) => Some(m),
            InstanceSel::Only => None,
            _ => return Err(nowhere()),
        };
        let (name, json) = item.single().map_err(|e| bad(e.to_string()))?;
        let ty = types.iter().find(|t| t.moid == uri.moid);
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
        } else if miid.is_none() {
            return Err(bad("a node below the root needs the instance's MIID".into()));
        }
        let node = node_from_json(json, def, name).map_err(|e| bad(e.to_string()))?;
        Ok(Placement {
            moid: uri.moid,
            miid,
            path,
            name: name.to_owned(),
            node,
        })
    }
}

impl Txn<'_> {
    /// Writes one item as [`Placement::of`] reads it. Returns the address written.
    pub fn import_item(
        &mut self,
        item: &MoItem,
        types: &[MoType],
        writer: &str,
    ) -> Result<NodeAddr, StoreError> {
        let placement = Placement::of(item, types)?;
        self.place(&placement, writer)
    }

    /// Writes `placement`: below a root, the subtree replaces what is there; at a root, the
    /// instance's content is replaced, or the instance created (a fresh MIID for `None`).
    pub fn place(&mut self, placement: &Placement, writer: &str) -> Result<NodeAddr, StoreError> {
        let Placement {
            moid,
            miid,
            path,
            name,
            node,
        } = placement;
        let existing = match miid {
            Some(m) => self.has_instance(moid, m)?,
            None => false,
        };
        if existing || !path.is_empty() {
            let addr = NodeAddr {
                moid: moid.as_str().to_owned(),
                miid: miid.clone().unwrap_or_default(),
                path: path.clone(),
            };
            self.put(&addr, node, writer)?;
            Ok(addr)
        } else {
            self.create_instance(moid, miid.as_deref(), name, node, writer)
        }
    }
}
