//! Watches: which caller wants to hear about which ClientURI, and the delivery of
//! `Changed` signals — unicast to the watcher only, and only for nodes the watcher may
//! read at the time of the change.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::servers::Servers;
use super::{INTERFACE, PATH};
use crate::authority::{Authority, Principal};
use crate::store::{Change, ChangeKind};
use crate::tree::builtin;
use crate::tree::uri::{ClientUri, InstanceSel};

/// Every active watch, by id.
#[derive(Default)]
pub struct Watches {
    next: AtomicU64,
    active: Mutex<HashMap<u64, Watch>>,
}

struct Watch {
    owner: String,
    principal: Principal,
    uri: ClientUri,
}

impl Watches {
    /// Registers a watch and returns its id (never 0).
    pub fn add(&self, owner: &str, principal: Principal, uri: ClientUri) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(
            id,
            Watch {
                owner: owner.to_owned(),
                principal,
                uri,
            },
        );
        id
    }

    /// Removes watch `id` if `owner` made it; whether it did.
    pub fn remove(&self, owner: &str, id: u64) -> bool {
        let mut active = self.lock();
        match active.get(&id) {
            Some(w) if w.owner == owner => active.remove(&id).is_some(),
            _ => false,
        }
    }

    /// Removes every watch of a connection that left the bus.
    pub fn forget(&self, owner: &str) {
        self.lock().retain(|_, w| w.owner != owner);
    }

    /// (watch id, owner) of every watch that should hear of `change`.
    fn recipients(&self, auth: &Authority, change: &Change) -> Vec<(u64, String)> {
        let instance_gone = change.kind == ChangeKind::Deleted && change.addr.path.is_empty();
        let mut named = Vec::new();
        let candidates: Vec<(u64, String, Principal)> = self
            .lock()
            .iter()
            .filter(|(_, w)| w.uri.covers(&change.addr))
            .filter_map(|(id, w)| {
                // A deleted instance has no rights left to check. Watches that name it by
                // MIID were checked for Read when they were made; they hear of its end.
                if instance_gone
                    && matches!(&w.uri.instance, InstanceSel::Miid(m) if *m == change.addr.miid)
                {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watch>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
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
