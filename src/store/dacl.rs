//! The Delegation Access Control MO (`urn:oma:mo:ext-omadmd-dacl:1.0`, DM-HLF-013): the
//! grants table as MO data, so that servers read and change grants with DM commands and
//! watchers hear of them like of any other change. One instance ([`DACL_MIID`], rooted at
//! `DACL`, owned by the admin) holds an entry `DACL/<x>/{Target, Principal, Rights}` per
//! grant: `Target` the granted instance as `MOID/MIID/`, `Principal` as grants name it,
//! `Rights` as [`Rights::to_text`].
//!
//! The grants table is the truth; every change to it ([`Txn::set_grant`], an instance
//! going, the factory reset) rewrites the entries it touches in the same transaction,
//! journaled with the writer of the grant. Who may see or change which entry is the
//! authority's business.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension as _, params};

use super::read::{instance_id, split};
use super::{ADMIN, Rights, Store, StoreError, Txn};
use crate::tree::builtin::{DACL, DACL_MIID};
use crate::tree::node::Node;
use crate::tree::uri::NodeAddr;
use crate::tree::value::Value;

/// An entry's place and content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaclEntry {
    /// The entry's node name (`<x>`).
    pub name: String,
    /// The instance granted on, as `MOID/MIID/`.
    pub target: String,
    pub principal: String,
}

impl DaclEntry {
    /// The root of the instance the entry is on (`None` if its `Target` names none).
    pub fn target_root(&self) -> Option<NodeAddr> {
        target_root(&self.target)
    }
}

/// The instance root a `Target` text names, if it names one.
fn target_root(target: &str) -> Option<NodeAddr> {
    let uri = crate::tree::uri::ClientUri::parse(target).ok()?;
    match &uri.instance {
        crate::tree::uri::InstanceSel::Miid(miid) if uri.path.is_empty() => {
            Some(NodeAddr::root(&uri.moid, miid))
        }
        _ => None,
    }
}

/// The DACL instance's root.
pub fn dacl_root() -> NodeAddr {
    NodeAddr::root(DACL, DACL_MIID)
}

impl Store {
    /// The entry for (`target`, `principal`), if there is one.
    pub fn dacl_entry(
        &self,
        target: &NodeAddr,
        principal: &str,
    ) -> Result<Option<String>, StoreError> {
        entry_of(&self.conn, target, principal)
    }

    /// The entry named `name`, if there is one.
    pub fn dacl_entry_named(&self, name: &str) -> Result<Option<DaclEntry>, StoreError> {
        let entry = dacl_root().child(name);
        match (
            leaf_text(&self.conn, &entry.child("Target"))?,
            leaf_text(&self.conn, &entry.child("Principal"))?,
        ) {
            (Some(target), Some(principal)) => Ok(Some(DaclEntry {
                name: name.to_owned(),
                target,
                principal,
            })),
            _ => Ok(None),
        }
    }
}

impl Txn<'_> {
    /// Sets the rights `principal` holds on the instance of `root` (none removes them), as
    /// `by` grants them, and its DACL entry with them; a new entry is named `entry` when
    /// given and free, else the next free number.
    pub fn set_grant_as(
        &mut self,
        root: &NodeAddr,
        principal: &str,
        rights: Rights,
        by: &str,
        entry: Option<&str>,
    ) -> Result<(), StoreError> {
        let inst = self.inst(root)?;
        if rights == Rights::NONE {
            self.execute(
                "DELETE FROM grants WHERE inst = ?1 AND principal = ?2",
                params![inst, principal],
                "writing a grant",
            )?;
        } else {
            self.execute(
                "INSERT INTO grants (inst, principal, rights) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (inst, principal) DO UPDATE SET rights = excluded.rights",
                params![inst, principal, rights.bits()],
                "writing a grant",
            )?;
        }
        if root.moid != DACL {
            self.mirror(root, principal, rights, by, entry)?;
        }
        Ok(())
    }

    /// [`Txn::set_grant_as`] with a numbered entry.
    pub fn set_grant(
        &mut self,
        root: &NodeAddr,
        principal: &str,
        rights: Rights,
        by: &str,
    ) -> Result<(), StoreError> {
        self.set_grant_as(root, principal, rights, by, None)
    }

    /// Brings the whole DACL MO in line with the grants table, writing only what differs
    /// (entries written as `by`): for a store that has grants from before the MO, and after
    /// grants went in bulk.
    pub fn mirror_all(&mut self, by: &str) -> Result<(), StoreError> {
        let grants: Vec<(NodeAddr, String, Rights)> = {
            let mut stmt = self
                .tx()
                .prepare_cached(
                    "SELECT i.moid, i.miid, g.principal, g.rights FROM grants g \
                     JOIN instances i ON g.inst = i.id WHERE i.moid != ?1 ORDER BY g.inst, g.principal",
                )
                .map_err(StoreError::db("listing grants"))?;
            let rows = stmt
                .query_map([DACL], |r| {
                    Ok((
                        NodeAddr::root(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?),
                        r.get(2)?,
                        Rights::from_bits(r.get(3)?),
                    ))
                })
                .map_err(StoreError::db("listing grants"))?;
            rows.collect::<Result<_, _>>()
                .map_err(StoreError::db("listing grants"))?
        };
        let mut wanted = Vec::with_capacity(grants.len());
        for (root, principal, rights) in &grants {
            wanted.push(self.mirror(root, principal, *rights, by, None)?);
        }
        for name in self.entry_names()? {
            if !wanted.iter().any(|w| w.as_deref() == Some(name.as_str())) {
                self.delete_entry(&name, by)?;
            }
        }
        Ok(())
    }

    /// Removes the entries on the instance `root` (which is going, with its grants).
    pub(super) fn unmirror_instance(
        &mut self,
        root: &NodeAddr,
        by: &str,
    ) -> Result<(), StoreError> {
        let Some(inst) = instance_id(self.tx(), DACL, DACL_MIID)? else {
            return Ok(());
        };
        let names: Vec<String> = {
            let mut stmt = self
                .tx()
                .prepare_cached(
                    "SELECT parent FROM nodes WHERE inst = ?1 AND name = 'Target' AND value = ?2",
                )
                .map_err(StoreError::db("finding DACL entries"))?;
            let rows = stmt
                .query_map(params![inst, root.to_string()], |r| r.get(0))
                .map_err(StoreError::db("finding DACL entries"))?;
            rows.collect::<Result<_, _>>()
                .map_err(StoreError::db("finding DACL entries"))?
        };
        for name in names {
            self.delete_entry(&name, by)?;
        }
        Ok(())
    }

    /// Deletes the entry `name`, journaled as news to those who could see it: the principal
    /// it named and the owner and holders of Delegate of the instance it was on.
    fn delete_entry(&mut self, name: &str, by: &str) -> Result<(), StoreError> {
        let at = dacl_root().child(name);
        let mut readers: Vec<String> = leaf_text(self.tx(), &at.child("Principal"))?
            .into_iter()
            .collect();
        let target = leaf_text(self.tx(), &at.child("Target"))?;
        if let Some(root) = target.as_deref().and_then(target_root)
            && let Some(inst) = instance_id(self.tx(), &root.moid, &root.miid)?
        {
            readers.extend(self.holders(inst, Rights::DELEGATE)?);
        }
        self.delete_seen_by(&at, by, readers)
    }

    /// Makes the entry of (`root`, `principal`) say `rights`, or removes it for none;
    /// returns its name while it stands.
    fn mirror(
        &mut self,
        root: &NodeAddr,
        principal: &str,
        rights: Rights,
        by: &str,
        entry: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let dacl = dacl_root();
        let existing = entry_of(self.tx(), root, principal)?;
        match existing {
            Some(name) if rights == Rights::NONE => {
                self.delete_entry(&name, by)?;
                Ok(None)
            }
            None if rights == Rights::NONE => Ok(None),
            Some(name) => {
                let at = dacl.child(&name).child("Rights");
                let text = rights.to_text();
                if leaf_text(self.tx(), &at)?.as_deref() != Some(text.as_str()) {
                    self.put(&at, &chr(text), by)?;
                }
                Ok(Some(name))
            }
            None => {
                if !self.has_instance(DACL, DACL_MIID)? {
                    self.create_instance(DACL, Some(DACL_MIID), "DACL", &Node::empty(), ADMIN)?;
                }
                let names = self.entry_names()?;
                let name = match entry {
                    Some(n) if !names.iter().any(|e| e == n) => n.to_owned(),
                    _ => next_number(&names),
                };
                let node = Node::Interior(BTreeMap::from([
                    ("Target".to_owned(), chr(root.to_string())),
                    ("Principal".to_owned(), chr(principal.to_owned())),
                    ("Rights".to_owned(), chr(rights.to_text())),
                ]));
                self.put(&dacl.child(&name), &node, by)?;
                Ok(Some(name))
            }
        }
    }

    /// The names of every entry.
    fn entry_names(&self) -> Result<Vec<String>, StoreError> {
        let Some(inst) = instance_id(self.tx(), DACL, DACL_MIID)? else {
            return Ok(Vec::new());
        };
        let mut stmt = self
            .tx()
            .prepare_cached("SELECT name FROM nodes WHERE inst = ?1 AND parent = ''")
            .map_err(StoreError::db("listing DACL entries"))?;
        let rows = stmt
            .query_map([inst], |r| r.get(0))
            .map_err(StoreError::db("listing DACL entries"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("listing DACL entries"))
    }
}

/// The name of the entry for (`target`, `principal`) on `conn`.
fn entry_of(
    conn: &rusqlite::Connection,
    target: &NodeAddr,
    principal: &str,
) -> Result<Option<String>, StoreError> {
    let Some(inst) = instance_id(conn, DACL, DACL_MIID)? else {
        return Ok(None);
    };
    conn.prepare_cached(
        "SELECT t.parent FROM nodes t JOIN nodes p ON p.inst = t.inst AND p.parent = t.parent \
         WHERE t.inst = ?1 AND t.name = 'Target' AND t.value = ?2 \
         AND p.name = 'Principal' AND p.value = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![inst, target.to_string(), principal], |r| r.get(0))
            .optional()
    })
    .map_err(StoreError::db("finding a DACL entry"))
}

/// The text of the chr leaf at `addr` of the DACL instance on `conn`.
fn leaf_text(conn: &rusqlite::Connection, addr: &NodeAddr) -> Result<Option<String>, StoreError> {
    let Some(inst) = instance_id(conn, DACL, DACL_MIID)? else {
        return Ok(None);
    };
    let (parent, name) = split(&addr.path);
    let cell: Option<Option<String>> = conn
        .prepare_cached("SELECT value FROM nodes WHERE inst = ?1 AND parent = ?2 AND name = ?3")
        .and_then(|mut s| {
            s.query_row(params![inst, parent, name], |r| r.get(0))
                .optional()
        })
        .map_err(StoreError::db("reading a DACL entry"))?;
    Ok(cell.flatten())
}

/// A chr leaf.
fn chr(text: String) -> Node {
    Node::Leaf(Value::Chr(text))
}

/// One more than the largest numeric name in `names` (`1` when there is none).
fn next_number(names: &[String]) -> String {
    let top = names
        .iter()
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    (top + 1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOID: &str = "urn:oma:mo:ext-omadmd-test:1.0";

    fn entries(store: &Store) -> Vec<(String, String, String)> {
        let Node::Interior(entries) = store.subtree(&dacl_root()).unwrap() else {
            panic!("the DACL root is interior")
        };
        entries
            .into_iter()
            .map(|(name, entry)| {
                let text = |leaf: &str| match entry.get(leaf) {
                    Some(Node::Leaf(v)) => v.to_text(),
                    other => panic!("{name}/{leaf}: {other:?}"),
                };
                let (principal, rights) = (text("Principal"), text("Rights"));
                (name, principal, rights)
            })
            .collect()
    }

    #[test]
    fn grants_are_mirrored_in_the_same_transaction_and_rebuilt_when_lost() {
        let mut store = Store::open_in_memory().unwrap();
        let (root, _) = store
            .write(|tx| tx.create_instance(MOID, Some("a"), "T", &Node::empty(), "app:o"))
            .unwrap();
        let (_, changes) = store
            .write(|tx| tx.set_grant_as(&root, "app:x", Rights::READ, "app:o", Some("mine")))
            .unwrap();
        assert_eq!(changes.last().unwrap().writer, "app:o");
        store
            .write(|tx| tx.set_grant(&root, "srv:s", Rights::ALL, "app:o"))
            .unwrap();
        store
            .write(|tx| tx.set_grant(&root, "app:x", Rights::READ.union(Rights::EXEC), "app:o"))
            .unwrap();
        let want = [
            (
                "1".to_owned(),
                "srv:s".to_owned(),
                "Read,Write,Exec,Delegate".to_owned(),
            ),
            (
                "mine".to_owned(),
                "app:x".to_owned(),
                "Read,Exec".to_owned(),
            ),
        ];
        assert_eq!(entries(&store), want);
        assert_eq!(
            store.dacl_entry(&root, "app:x").unwrap().as_deref(),
            Some("mine")
        );
        let mine = store.dacl_entry_named("mine").unwrap().unwrap();
        assert_eq!(mine.target_root(), Some(root.clone()));

        // Lost (a store from before the MO): rebuilt from the grants; then nothing to do.
        store
            .conn
            .execute(
                "DELETE FROM nodes WHERE inst = (SELECT id FROM instances WHERE moid = ?1)",
                [DACL],
            )
            .unwrap();
        store.write(|tx| tx.mirror_all(ADMIN)).unwrap();
        assert_eq!(entries(&store).len(), 2);
        let (_, again) = store.write(|tx| tx.mirror_all(ADMIN)).unwrap();
        assert!(again.is_empty(), "{again:?}");

        // The instance going takes its entries along.
        store.write(|tx| tx.delete(&root, "app:o")).unwrap();
        assert!(entries(&store).is_empty());
    }
}
