//! Instances omadmd itself keeps: owned by the admin, readable by the principals they are
//! for — DevInfo by every app and server, the SessionInfo MO of a running session by its
//! server only — and removed by omadmd when what they describe ends, never by a server or
//! an app (their DDF makes them Get-only and Permanent).

use super::{ANY_APP, ANY_SERVER, AccessError, Authority, Principal, Rights};
use crate::tree::node::Node;
use crate::tree::resolve::TreeRead as _;
use crate::tree::uri::NodeAddr;

impl Authority {
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
        let readers = [(ANY_APP, reader_rights), (ANY_SERVER, reader_rights)];
        self.keep(moid, miid, root_name, content, &readers)
    }

    /// As [`Authority::provide`], readable by `reader` with `rights` and nobody else.
    pub fn provide_to(
        &self,
        moid: &str,
        miid: &str,
        root_name: &str,
        content: &Node,
        reader: &Principal,
        rights: Rights,
    ) -> Result<(), AccessError> {
        let reader = reader.to_string();
        self.keep(moid, miid, root_name, content, &[(&reader, rights)])
    }

    /// The instance `moid`/`miid` as an admin-owned copy of `content` (written only when it
    /// differs) whose grants are exactly `readers`.
    fn keep(
        &self,
        moid: &str,
        miid: &str,
        root_name: &str,
        content: &Node,
        readers: &[(&str, Rights)],
    ) -> Result<(), AccessError> {
        let root = NodeAddr::root(moid, miid);
        let owner = Principal::Admin.to_string();
        let mut store = self.writer();
        let (current, stale) = match store.instance(moid, miid)? {
            Some(_) => (Some(store.subtree(&root)?), store.grants(&root)?),
            None => (None, Vec::new()),
        };
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
            for (principal, _) in &stale {
                if !readers.iter().any(|(p, _)| p == principal) {
                    tx.set_grant(&root, principal, Rights::NONE, &owner)?;
                }
            }
            for (principal, rights) in readers {
                tx.set_grant(&root, principal, *rights, &owner)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(())
    }

    /// Keeps the instance `moid`/`miid` as a device reports it (docs/gateway.md §3): created
    /// when missing — owned by the admin, holding `content`, with `grants` — else every
    /// leaf of `content` written where it differs, each keeping its holder, and interior
    /// nodes `content` adds created; nodes `content` leaves out are kept (a report may
    /// cover part of an instance). Returns whether the instance was created.
    pub fn mirror(
        &self,
        moid: &str,
        miid: &str,
        root_name: &str,
        content: &Node,
        grants: &[(String, Rights)],
    ) -> Result<bool, AccessError> {
        self.mirror_as(moid, miid, root_name, content, grants, false)
    }

    /// [`Authority::mirror`] of a whole instance (a guest's snapshot, docs/gateway.md
    /// §6.2): nodes of the instance that `content` leaves out are removed as well.
    pub fn mirror_whole(
        &self,
        moid: &str,
        miid: &str,
        root_name: &str,
        content: &Node,
        grants: &[(String, Rights)],
    ) -> Result<bool, AccessError> {
        self.mirror_as(moid, miid, root_name, content, grants, true)
    }

    fn mirror_as(
        &self,
        moid: &str,
        miid: &str,
        root_name: &str,
        content: &Node,
        grants: &[(String, Rights)],
        whole: bool,
    ) -> Result<bool, AccessError> {
        let root = NodeAddr::root(moid, miid);
        let owner = Principal::Admin.to_string();
        let mut store = self.writer();
        let exists = store.instance(moid, miid)?.is_some();
        // The topmost nodes the mirror has and a whole `content` lacks.
        let mut gone = Vec::new();
        if exists && whole {
            let current = store.subtree(&root)?;
            current.walk(&mut |path, _| {
                let parent_gone = gone.iter().any(|g: &String| {
                    path.strip_prefix(g.as_str())
                        .is_some_and(|r| r.starts_with('/'))
                });
                if !parent_gone && content.get(path).is_none() {
                    gone.push(path.to_owned());
                }
            });
        }
        let (_, changes) = store.write(|tx| {
            for path in &gone {
                tx.delete(&root.child(path), &owner)?;
            }
            if !exists {
                tx.create_instance(moid, Some(miid), root_name, content, &owner)?;
                for (principal, rights) in grants {
                    tx.set_grant(&root, principal, *rights, &owner)?;
                }
                return Ok::<_, crate::store::StoreError>(());
            }
            let mut steps = Vec::new();
            content.walk(&mut |path, node| steps.push((path.to_owned(), node)));
            for (path, node) in steps {
                let at = root.child(&path);
                match node {
                    Node::Leaf(value) => {
                        tx.report(&at, value, &owner)?;
                    }
                    Node::Interior(_) if !tx.exists(&at)? => {
                        tx.put(&at, &Node::empty(), &owner)?;
                    }
                    Node::Interior(_) => {}
                }
            }
            Ok(())
        })?;
        drop(store);
        (self.observer)(&changes);
        Ok(!exists)
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
