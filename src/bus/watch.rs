//! Watches: which caller wants to hear about which ClientURI, and the delivery of
//! `Changed` signals — unicast to the watcher only, and only for nodes the watcher may
//! read at the time of the change. A connection holds at most `[limits]
//! watches_per_caller` watches; each keeps only what matching needs, in about the size of
//! its ClientURI, and all of them go when the connection leaves the bus.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::error::Error;
use super::servers::Servers;
use super::{INTERFACE, PATH};
use crate::authority::{Authority, Principal};
use crate::store::{Change, ChangeKind};
use crate::tree::builtin;
use crate::tree::uri::{ClientUri, InstanceSel, NodeAddr, Segment};

/// Every active watch.
pub struct Watches {
    /// Most watches per connection.
    per_caller: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last_id: u64,
    active: HashMap<u64, Watch>,
    /// Watches per owner (unique bus name).
    counts: HashMap<String, usize>,
}

struct Watch {
    owner: String,
    principal: Principal,
    filter: Filter,
}

/// The part of a ClientURI a change is matched against ([`ClientUri::covers`]), compactly:
/// the path as one string, each segment followed by `/`, a wildcard or x-name as an empty
/// segment (node names are never empty and hold no `/`).
#[derive(Debug, PartialEq, Eq)]
struct Filter {
    moid: Box<str>,
    miid: Option<Box<str>>,
    path: Box<str>,
}

impl Filter {
    fn new(uri: &ClientUri) -> Filter {
        let mut path = String::new();
        for segment in &uri.path {
            if let Segment::Name(name) = segment {
                path.push_str(name);
            }
            path.push('/');
        }
        Filter {
            moid: uri.moid.as_str().into(),
            miid: match &uri.instance {
                InstanceSel::Miid(m) => Some(m.as_str().into()),
                _ => None,
            },
            path: path.into(),
        }
    }

    /// As [`ClientUri::covers`].
    fn covers(&self, addr: &NodeAddr) -> bool {
        addr.moid == *self.moid
            && self.miid.as_deref().is_none_or(|m| m == addr.miid)
            && addr
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .zip(self.path.split_terminator('/'))
                .all(|(name, segment)| segment.is_empty() || segment == name)
    }

    /// Whether this watch names the instance `miid` by its MIID.
    fn names(&self, miid: &str) -> bool {
        self.miid.as_deref() == Some(miid)
    }
}

impl Watches {
    /// No watches yet; at most `per_caller` for each connection.
    pub fn new(per_caller: usize) -> Watches {
        Watches {
            per_caller,
            state: Mutex::new(State::default()),
        }
    }

    /// Registers a watch and returns its id (never 0); refused when `owner` holds as many
    /// as it may.
    pub fn add(&self, owner: &str, principal: Principal, uri: &ClientUri) -> Result<u64, Error> {
        let mut state = self.lock();
        let held = state.counts.get(owner).copied().unwrap_or(0);
        if held >= self.per_caller {
            return Err(Error::NotAllowed(format!(
                "{owner} holds {held} watches, the most one connection may hold ([limits] \
                 watches_per_caller = {}); unwatch some first",
                self.per_caller
            )));
        }
        state.last_id += 1;
        let id = state.last_id;
        *state.counts.entry(owner.to_owned()).or_default() += 1;
        state.active.insert(
            id,
            Watch {
                owner: owner.to_owned(),
                principal,
                filter: Filter::new(uri),
            },
        );
        Ok(id)
    }

    /// Removes watch `id` if `owner` made it; whether it did.
    pub fn remove(&self, owner: &str, id: u64) -> bool {
        let mut state = self.lock();
        if state.active.get(&id).is_none_or(|w| w.owner != owner) {
            return false;
        }
        state.active.remove(&id);
        if let Some(n) = state.counts.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                state.counts.remove(owner);
            }
        }
        true
    }

    /// Removes every watch of a connection that left the bus.
    pub fn forget(&self, owner: &str) {
        let mut state = self.lock();
        if state.counts.remove(owner).is_some() {
            state.active.retain(|_, w| w.owner != owner);
        }
    }

    /// (watch id, owner) of every watch that should hear of `change`.
    fn recipients(&self, auth: &Authority, change: &Change) -> Vec<(u64, String)> {
        let instance_gone = change.kind == ChangeKind::Deleted && change.addr.path.is_empty();
        let mut named = Vec::new();
        let candidates: Vec<(u64, String, Principal)> = self
            .lock()
            .active
            .iter()
            .filter(|(_, w)| w.filter.covers(&change.addr))
            .filter_map(|(id, w)| {
                // A deleted instance has no rights left to check. Watches that name it by
                // MIID were checked for Read when they were made; they hear of its end.
                if instance_gone && w.filter.names(&change.addr.miid) {
                    named.push((*id, w.owner.clone()));
                    return None;
                }
                Some((*id, w.owner.clone(), w.principal.clone()))
            })
            .collect();
        let mut verdicts: HashMap<Principal, bool> = HashMap::new();
        candidates
            .into_iter()
            .filter(|(_, _, who)| {
                *verdicts.entry(who.clone()).or_insert_with(|| {
                    auth.may_read(who, &change.addr).unwrap_or_else(|e| {
                        tracing::warn!("cannot check read access for a watcher: {e}");
                        false
                    })
                })
            })
            .map(|(id, owner, _)| (id, owner))
            .chain(named)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Delivers changes as they come until the channel closes; keeps the server objects in step
/// with the DM accounts.
pub async fn dispatch(
    conn: zbus::Connection,
    auth: Arc<Authority>,
    watches: Arc<Watches>,
    servers: Arc<Servers>,
    mut changes: mpsc::UnboundedReceiver<Vec<Change>>,
) {
    while let Some(batch) = changes.recv().await {
        if batch.iter().any(|c| c.addr.moid == builtin::DMACC) {
            servers.sync().await;
        }
        for change in &batch {
            let uri = change.addr.to_string();
            for (id, owner) in watches.recipients(&auth, change) {
                let body = (id, uri.as_str(), change.kind.as_str(), change.seq);
                if let Err(e) = conn
                    .emit_signal(Some(owner.as_str()), PATH, INTERFACE, "Changed", &body)
                    .await
                {
                    tracing::debug!("Changed for watch {id} not delivered to {owner}: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(moid: &str, miid: &str, path: &str) -> NodeAddr {
        NodeAddr {
            moid: moid.into(),
            miid: miid.into(),
            path: path.into(),
        }
    }

    #[test]
    fn filters_cover_what_their_client_uri_covers() {
        let changes = [
            addr("urn:a:1.0", "1", ""),
            addr("urn:a:1.0", "1", "X"),
            addr("urn:a:1.0", "1", "X/Y"),
            addr("urn:a:1.0", "1", "X/Y/Z"),
            addr("urn:a:1.0", "1", "X/Q/Z"),
            addr("urn:a:1.0", "2", "X/Y"),
            addr("urn:a:1.0", "2", "W"),
            addr("urn:b:1.0", "1", "X/Y"),
        ];
        for uri in [
            "urn:a:1.0/1/",
            "urn:a:1.0/1/X/Y",
            "urn:a:1.0/*/X/*/Z",
            "urn:a:1.0/(x)/X/(y)/Z?nv=(x)/K:v&nv=(y)/K:w",
            "urn:a:1.0//X",
            "urn:a:1.0/2/W/*",
        ] {
            let uri = ClientUri::parse(uri).unwrap();
            let filter = Filter::new(&uri);
            for change in &changes {
                assert_eq!(
                    filter.covers(change),
                    uri.covers(change),
                    "{uri} / {change}"
                );
            }
        }
    }

    #[test]
    fn a_watch_keeps_about_the_size_of_its_uri() {
        let text = format!("urn:a:1.0/1/{}", vec!["a"; 60].join("/"));
        let filter = Filter::new(&ClientUri::parse(&text).unwrap());
        let kept =
            filter.moid.len() + filter.miid.as_deref().map_or(0, str::len) + filter.path.len();
        assert!(
            kept <= text.len(),
            "{kept} bytes kept for a {}-byte URI",
            text.len()
        );
    }

    #[test]
    fn each_caller_holds_at_most_its_share_of_watches() {
        let watches = Watches::new(2);
        let uri = ClientUri::parse("urn:a:1.0/*/").unwrap();
        let a = watches.add(":1.1", Principal::User(1), &uri).unwrap();
        watches.add(":1.1", Principal::User(1), &uri).unwrap();
        let err = watches.add(":1.1", Principal::User(1), &uri).unwrap_err();
        assert!(
            matches!(&err, Error::NotAllowed(m) if m.contains("[limits] watches_per_caller = 2")),
            "{err:?}"
        );
        // Others are not limited by it; unwatching or leaving frees the share.
        watches.add(":1.2", Principal::User(2), &uri).unwrap();
        assert!(!watches.remove(":1.2", a));
        assert!(watches.remove(":1.1", a));
        watches.add(":1.1", Principal::User(1), &uri).unwrap();
        watches.forget(":1.1");
        assert_eq!(watches.lock().counts.get(":1.1"), None);
        assert_eq!(watches.lock().active.len(), 1);
        watches.add(":1.1", Principal::User(1), &uri).unwrap();
    }
}
