//! Watches: which caller wants to hear about which ClientURI, and the delivery of
//! `Changed` signals — unicast to the watcher only, and only of changes the watcher could
//! read. A connection holds at most `[limits] watches_per_caller` watches; each keeps only
//! what matching needs, in about the size of its ClientURI, and all of them go when the
//! connection leaves the bus.
//!
//! # Who hears of a change
//!
//! A change is delivered when the watcher may read its instance and the node is not
//! No-Get, as found when the change is delivered. A deleted instance has no rights left to
//! check, so for each principal holding watches this module remembers which of the
//! instances its watches cover it was last found able to read — when it made a watch, and
//! at every change of the instance — and an instance's end is told to those that could
//! read it then (the admin always). So a watch on an instance its caller may not read hears
//! nothing, its end included, exactly like a watch on an instance that does not exist; and
//! the Watch call accepts both alike.
//!
//! What that memory cannot see: rights changed by a grant or revocation (not journaled,
//! so not a change here) count only from the next change of the instance or the next watch
//! its principal makes on it. Until then a principal granted Read after its last check does
//! not hear of the instance's end, and one whose Read was revoked does. The memory holds at
//! most one entry per instance per watching principal, and a principal's goes with its last
//! watch.
//!
//! # When
//!
//! A change is announced only once it is durable: a watcher never hears of a change that a
//! power loss undoes. [`dispatch`] takes the batches queued so far, waits once for them all
//! with [`Pool::durable`] (group commit: the sync that answers covers every batch committed
//! before the wait began, so no change costs a sync of its own), then signals. The store's
//! writer does not wait for any of it: it only queues the batch.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::error::Error;
use super::servers::Servers;
use super::{INTERFACE, PATH};
use crate::authority::{AccessError, Authority, Principal};
use crate::store::{self, Change, ChangeKind, Lane, Pool, StoreError};
use crate::tree::builtin::{self, DACL};
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
    /// For each principal holding watches (every one has an entry), the units its watches
    /// cover ([`unit_of`]: instances, DACL entries) that it was last found able to read;
    /// nothing for the admin, who reads everything.
    readable: HashMap<Principal, HashSet<NodeAddr>>,
}

struct Watch {
    owner: String,
    principal: Principal,
    filter: Filter,
    /// The journal's newest entry when the watch was made: only later changes are news to
    /// it (one committed before, still on its way to the watchers, is not).
    after: u64,
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

/// What was found of a watcher's right to read an instance, as a change is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Readable,
    Unreadable,
    /// The instance is gone: what was last found stands.
    Gone,
    /// The check failed: not delivered, and what was last found stands.
    Failed,
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
        self.covers_instance(&addr.moid, &addr.miid)
            && addr
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .zip(self.path.split_terminator('/'))
                .all(|(name, segment)| segment.is_empty() || segment == name)
    }

    /// Whether this watch covers nodes of the instance `moid`/`miid`.
    fn covers_instance(&self, moid: &str, miid: &str) -> bool {
        *self.moid == *moid && self.miid.as_deref().is_none_or(|m| m == miid)
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
    /// as it may. Notes which of the instances `uri` covers `principal` may read now.
    pub fn add(
        &self,
        auth: &Authority,
        owner: &str,
        principal: Principal,
        uri: &ClientUri,
    ) -> Result<u64, Error> {
        self.has_room(&self.lock(), owner)?;
        let after = auth.last_seq()?;
        let filter = Filter::new(uri);
        let readable = readable_now(auth, &principal, &filter);
        let mut state = self.lock();
        self.has_room(&state, owner)?;
        state.last_id += 1;
        let id = state.last_id;
        *state.counts.entry(owner.to_owned()).or_default() += 1;
        state
            .readable
            .entry(principal.clone())
            .or_default()
            .extend(readable);
        state.active.insert(
            id,
            Watch {
                owner: owner.to_owned(),
                principal,
                filter,
                after,
            },
        );
        Ok(id)
    }

    /// Refused when `owner` holds as many watches as it may.
    fn has_room(&self, state: &State, owner: &str) -> Result<(), Error> {
        let held = state.counts.get(owner).copied().unwrap_or(0);
        if held >= self.per_caller {
            return Err(Error::NotAllowed(format!(
                "{owner} holds {held} watches, the most one connection may hold ([limits] \
                 watches_per_caller = {}); unwatch some first",
                self.per_caller
            )));
        }
        Ok(())
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
        state.forget_unwatching();
        true
    }

    /// Removes every watch of a connection that left the bus.
    pub fn forget(&self, owner: &str) {
        let mut state = self.lock();
        if state.counts.remove(owner).is_some() {
            state.active.retain(|_, w| w.owner != owner);
            state.forget_unwatching();
        }
    }

    /// (watch id, owner) of every watch that should hear of `change`.
    fn recipients(&self, auth: &Authority, change: &Change) -> Vec<(u64, String)> {
        let addr = &change.addr;
        let unit = unit_of(addr);
        let mut watchers = HashSet::new();
        let mut candidates = Vec::new();
        for (id, w) in &self.lock().active {
            if w.filter.covers_instance(&addr.moid, &addr.miid) {
                watchers.insert(w.principal.clone());
                if w.filter.covers(addr) && change.seq > w.after {
                    candidates.push((*id, w.owner.clone(), w.principal.clone()));
                }
            }
        }
        let found = found_now(auth, &unit, watchers);
        let hidden = no_get(auth, addr);
        let mut state = self.lock();
        let mut verdicts: HashMap<Principal, bool> = HashMap::new();
        for (who, found) in found {
            if who == Principal::Admin {
                verdicts.insert(who, true);
                continue;
            }
            // None: its last watch went meanwhile.
            let Some(known) = state.readable.get_mut(&who) else {
                continue;
            };
            let verdict = match found {
                Found::Readable => {
                    known.insert(unit.clone());
                    true
                }
                Found::Unreadable => {
                    known.remove(&unit);
                    false
                }
                Found::Gone => known.contains(&unit),
                Found::Failed => false,
            };
            verdicts.insert(who, verdict);
        }
        if change.kind == ChangeKind::Deleted && *addr == unit {
            for known in state.readable.values_mut() {
                known.remove(&unit);
            }
        }
        drop(state);
        if hidden {
            return Vec::new();
        }
        candidates
            .into_iter()
            .filter(|(_, _, who)| verdicts.get(who).copied().unwrap_or(false))
            .map(|(id, owner, _)| (id, owner))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Drops what was noted for principals that no longer hold any watch.
    fn forget_unwatching(&mut self) {
        let watching: HashSet<&Principal> = self.active.values().map(|w| &w.principal).collect();
        self.readable.retain(|who, _| watching.contains(who));
    }
}

/// The node whose readability decides whether a change at `addr` is news to a watcher: its
/// instance's root, or in the DACL MO the entry it is in (each entry is seen by its own
/// principals, [`Authority::dacl_entries_seen`]).
fn unit_of(addr: &NodeAddr) -> NodeAddr {
    let root = NodeAddr::root(&addr.moid, &addr.miid);
    match addr.path.split('/').find(|n| !n.is_empty()) {
        Some(entry) if addr.moid == DACL => root.child(entry),
        _ => root,
    }
}

/// The units ([`unit_of`]) `filter` covers that `who` may read now (none noted for the
/// admin, who reads everything).
fn readable_now(auth: &Authority, who: &Principal, filter: &Filter) -> Vec<NodeAddr> {
    if *who == Principal::Admin {
        return Vec::new();
    }
    let miids = match &filter.miid {
        Some(miid) => Ok(vec![miid.to_string()]),
        None => auth.instances_of(&filter.moid),
    };
    let readable = miids.and_then(|miids| {
        let mut out = Vec::new();
        for miid in miids {
            let root = NodeAddr::root(&filter.moid, &miid);
            if auth.may_read(who, &root)? {
                if *filter.moid == *DACL {
                    for entry in auth.dacl_entries_seen(who)? {
                        out.push(root.child(&entry));
                    }
                }
                out.push(root);
            }
        }
        Ok::<_, AccessError>(out)
    });
    readable.unwrap_or_else(|e| {
        tracing::warn!("cannot check which instances a watcher may read: {e}");
        Vec::new()
    })
}

/// What each of `watchers` may do with `unit` (see [`unit_of`]) now.
fn found_now(
    auth: &Authority,
    unit: &NodeAddr,
    watchers: HashSet<Principal>,
) -> Vec<(Principal, Found)> {
    let failed = |e: AccessError| {
        tracing::warn!("cannot check read access for a watcher of {unit}: {e}");
        Found::Failed
    };
    // Whether a refusal means "unreadable" or "gone", asked once, and only after a refusal.
    let mut refused: Option<Found> = None;
    watchers
        .into_iter()
        .map(|who| {
            let found = match auth.may_read(&who, unit) {
                Ok(true) => Found::Readable,
                Ok(false) => *refused.get_or_insert_with(|| match auth.exists(unit) {
                    Ok(true) => Found::Unreadable,
                    Ok(false) => Found::Gone,
                    Err(e) => failed(e),
                }),
                Err(e) => failed(e),
            };
            (who, found)
        })
        .collect()
}

/// Whether the node at `addr` is No-Get: read by no one, so never announced.
fn no_get(auth: &Authority, addr: &NodeAddr) -> bool {
    !addr.path.is_empty()
        && auth
            .types()
            .get(&addr.moid)
            .and_then(|t| t.def_at(&addr.path))
            .is_some_and(|d| d.access.is_no_get())
}

/// Delivers changes as they come, each once it is durable in `store` (see "When" above),
/// until the channel closes; keeps the server objects in step with the DM accounts. When
/// the store cannot make them durable, they are never announced.
pub async fn dispatch(
    conn: zbus::Connection,
    auth: Arc<Authority>,
    watches: Arc<Watches>,
    servers: Arc<Servers>,
    store: Arc<Pool>,
    mut changes: mpsc::Receiver<Vec<Change>>,
) {
    let mut failed = false;
    while let Some(batches) = durable_batches(&mut changes, || store.durable()).await {
        let batches = match batches {
            Ok(b) => b,
            Err(e) => {
                // Every later wait fails too (see `Pool::durable`): said once.
                if !failed {
                    tracing::error!("changes are not announced to watchers: {e}");
                    failed = true;
                }
                continue;
            }
        };
        for batch in batches {
            announce(&conn, &auth, &watches, &servers, batch).await;
        }
    }
}

/// The batches of changes queued on `changes`, handed on once they are durable: waits for
/// one, takes every other one already queued, then awaits `durable()` once for them all.
/// That wait begins after they were committed, so what answers it covers them
/// ([`Pool::durable`]). `None` once the queue is closed; an error when the store cannot
/// make them durable.
async fn durable_batches<F>(
    changes: &mut mpsc::Receiver<Vec<Change>>,
    durable: impl FnOnce() -> F,
) -> Option<Result<Vec<Vec<Change>>, StoreError>>
where
    F: Future<Output = Result<(), StoreError>>,
{
    let mut batches = vec![changes.recv().await?];
    while let Ok(more) = changes.try_recv() {
        batches.push(more);
    }
    Some(durable().await.map(|()| batches))
}

/// Signals one batch of changes (durable already) to the watchers that may hear of them.
async fn announce(
    conn: &zbus::Connection,
    auth: &Arc<Authority>,
    watches: &Arc<Watches>,
    servers: &Servers,
    batch: Vec<Change>,
) {
    if batch.iter().any(|c| c.addr.moid == builtin::DMACC) {
        servers.sync().await;
    }
    // Who may hear of what is decided against the store: off the async workers.
    let (auth, watches) = (auth.clone(), watches.clone());
    let signals = store::offload(Lane::Background, move || {
        let mut signals = Vec::new();
        for change in &batch {
            let uri = change.addr.to_string();
            for (id, owner) in watches.recipients(&auth, change) {
                signals.push((owner, id, uri.clone(), change.kind.as_str(), change.seq));
            }
        }
        signals
    })
    .await;
    let signals = match signals {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("deciding who hears of a change failed: {e}");
            return;
        }
    };
    for (owner, id, uri, kind, seq) in signals {
        let body = (id, uri.as_str(), kind, seq);
        if let Err(e) = conn
            .emit_signal(Some(owner.as_str()), PATH, INTERFACE, "Changed", &body)
            .await
        {
            tracing::debug!("Changed for watch {id} not delivered to {owner}: {e}");
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

    /// An authority over a fresh store, and the changes it has reported so far.
    struct Fixture {
        auth: Authority,
        seen: Arc<Mutex<Vec<Change>>>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        use crate::store::{Bounds, Pool};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let auth = Authority::new(
            Arc::new(Pool::open(&path, Bounds::default(), 1).unwrap()),
            crate::tree::registry::Registry::with_builtin(),
            Box::new(move |c| sink.lock().unwrap().extend_from_slice(c)),
        );
        Fixture {
            auth,
            seen,
            _dir: dir,
        }
    }

    impl Fixture {
        /// Each change reported since the last call, with the watches told of it (sorted);
        /// changes to the DACL MO (grants) only with `dacl`.
        fn told_with(
            &self,
            watches: &Watches,
            dacl: bool,
        ) -> Vec<(String, &'static str, Vec<u64>)> {
            let changes: Vec<Change> = self.seen.lock().unwrap().drain(..).collect();
            changes
                .iter()
                .filter(|c| dacl || c.addr.moid != crate::tree::builtin::DACL)
                .map(|c| {
                    let mut ids: Vec<u64> = watches
                        .recipients(&self.auth, c)
                        .into_iter()
                        .map(|(id, _)| id)
                        .collect();
                    ids.sort_unstable();
                    (c.addr.to_string(), c.kind.as_str(), ids)
                })
                .collect()
        }

        /// [`Fixture::told_with`] without the grants.
        fn told(&self, watches: &Watches) -> Vec<(String, &'static str, Vec<u64>)> {
            self.told_with(watches, false)
        }
    }

    #[test]
    fn a_grant_is_news_to_watchers_of_the_dacl_mo_who_may_see_its_entry() {
        let f = fixture();
        let owner = Principal::App("org.example.Owner".into());
        let grantee = Principal::App("org.example.Grantee".into());
        let bob = Principal::User(1001);
        let root = f
            .auth
            .create_instance(&owner, SECRET, r#"{"Secret": {"Pin": "1234"}}"#)
            .unwrap();
        f.auth
            .grant(
                &owner,
                &root.to_string(),
                "app:org.example.Other",
                crate::authority::Rights::READ,
            )
            .unwrap();
        let watches = Watches::new(16);
        let dacl = ClientUri::parse(&format!("{}/*/", crate::tree::builtin::DACL)).unwrap();
        let owner_w = watches.add(&f.auth, ":1.1", owner.clone(), &dacl).unwrap();
        let grantee_w = watches
            .add(&f.auth, ":1.2", grantee.clone(), &dacl)
            .unwrap();
        watches.add(&f.auth, ":1.3", bob, &dacl).unwrap();
        f.seen.lock().unwrap().clear();

        f.auth
            .grant(
                &owner,
                &root.to_string(),
                &grantee.to_string(),
                crate::authority::Rights::READ,
            )
            .unwrap();
        let told = f.told_with(&watches, true);
        let [(entry, "added", heard)] = told.as_slice() else {
            panic!("one entry added: {told:?}")
        };
        assert!(entry.starts_with(crate::tree::builtin::DACL), "{entry}");
        assert_eq!(
            *heard,
            [owner_w, grantee_w],
            "bob is neither owner nor named"
        );

        // Revoked: the entry's end is news to those who could see it, as an instance's is.
        f.auth
            .grant(
                &owner,
                &root.to_string(),
                &grantee.to_string(),
                crate::authority::Rights::NONE,
            )
            .unwrap();
        let told = f.told_with(&watches, true);
        let [(gone, "deleted", heard)] = told.as_slice() else {
            panic!("one entry deleted: {told:?}")
        };
        assert_eq!(gone, entry);
        assert_eq!(*heard, [owner_w, grantee_w], "never bob");
    }

    const SECRET: &str = "urn:x:secret:1.0";

    #[test]
    fn a_watch_hears_only_of_changes_after_it_was_made() {
        use crate::authority::Input;
        let f = fixture();
        let root = f
            .auth
            .create_instance(&Principal::Admin, SECRET, r#"{"Secret": {"Pin": "1"}}"#)
            .unwrap();
        let pin = format!("{root}Pin");
        // Committed, but not yet delivered when the watch is made.
        f.auth
            .set(&Principal::Admin, &pin, None, Input::Text("2".into()))
            .unwrap();
        let watches = Watches::new(16);
        let uri = ClientUri::parse(&root.to_string()).unwrap();
        let id = watches
            .add(&f.auth, ":1.1", Principal::Admin, &uri)
            .unwrap();
        f.auth
            .set(&Principal::Admin, &pin, None, Input::Text("3".into()))
            .unwrap();
        let told = f.told(&watches);
        let heard: Vec<&Vec<u64>> = told.iter().map(|(_, _, ids)| ids).collect();
        assert_eq!(heard.last().copied(), Some(&vec![id]), "{told:?}");
        assert!(
            told[..told.len() - 1]
                .iter()
                .all(|(_, _, ids)| ids.is_empty()),
            "{told:?}"
        );
    }

    #[test]
    fn only_watchers_that_could_read_an_instance_hear_of_it_and_its_end() {
        use crate::authority::{Input, Rights};
        let f = fixture();
        let (owner, grantee, late, bob) = (
            Principal::App("org.example.Owner".into()),
            Principal::App("org.example.Grantee".into()),
            Principal::App("org.example.Late".into()),
            Principal::User(1001),
        );
        let root = f
            .auth
            .create_instance(&owner, SECRET, r#"{"Secret": {"Pin": "1234"}}"#)
            .unwrap();
        let shared = f
            .auth
            .create_instance(&Principal::Admin, SECRET, r#"{"Secret": {"Pin": "0"}}"#)
            .unwrap();
        f.auth
            .grant(
                &owner,
                &root.to_string(),
                &grantee.to_string(),
                Rights::READ,
            )
            .unwrap();
        f.auth
            .grant(
                &Principal::Admin,
                &shared.to_string(),
                "app:*",
                Rights::READ,
            )
            .unwrap();
        f.seen.lock().unwrap().clear();
        let watches = Watches::new(16);
        let watch = |who: &Principal, owner: &str, uri: &str| {
            let uri = ClientUri::parse(uri).unwrap();
            watches.add(&f.auth, owner, who.clone(), &uri).unwrap()
        };
        let (r, s, all) = (root.to_string(), shared.to_string(), format!("{SECRET}/*/"));
        let owner_named = watch(&owner, ":1.1", &r);
        let owner_all = watch(&owner, ":1.1", &all);
        let grantee_named = watch(&grantee, ":1.2", &r);
        let admin_named = watch(&Principal::Admin, ":1.3", &r);
        let late_named = watch(&late, ":1.4", &r);
        // Bob may read the shared instance only; his watches on the owner's instance and on
        // one that does not exist are accepted alike.
        let bob_named = watch(&bob, ":1.5", &r);
        let bob_missing = watch(&bob, ":1.5", &format!("{SECRET}/999/"));
        let bob_all = watch(&bob, ":1.5", &all);
        let bob_shared = watch(&bob, ":1.5", &s);
        assert!(bob_named > 0 && bob_missing > 0);

        let pin = format!("{r}Pin");
        f.auth
            .set(&owner, &pin, None, Input::Text("4321".into()))
            .unwrap();
        let readers = vec![owner_named, owner_all, grantee_named, admin_named];
        assert_eq!(
            f.told(&watches),
            [(pin.clone(), "replaced", readers.clone())]
        );

        // Read granted after the watch counts from the next change on.
        f.auth
            .grant(&owner, &r, &late.to_string(), Rights::READ)
            .unwrap();
        f.auth
            .set(&owner, &pin, None, Input::Text("5555".into()))
            .unwrap();
        let mut with_late = readers.clone();
        with_late.push(late_named);
        assert_eq!(
            f.told(&watches),
            [(pin.clone(), "replaced", with_late.clone())]
        );

        // Its end: for those that could read it, never for bob.
        f.auth.delete(&owner, &r).unwrap();
        assert_eq!(f.told(&watches), [(r.clone(), "deleted", with_late)]);

        // An instance bob may read (as every local caller may): bob hears of its end.
        f.auth.delete(&Principal::Admin, &s).unwrap();
        assert_eq!(
            f.told(&watches),
            [(s.clone(), "deleted", vec![owner_all, bob_all, bob_shared])]
        );
        // Nothing is remembered of gone instances.
        assert!(watches.lock().readable.values().all(HashSet::is_empty));
    }

    #[test]
    fn a_change_read_after_its_instance_went_is_judged_as_before() {
        use crate::authority::Input;
        let f = fixture();
        let owner = Principal::App("org.example.Owner".into());
        let bob = Principal::User(1001);
        let root = f
            .auth
            .create_instance(&owner, SECRET, r#"{"Secret": {"Pin": "1234"}}"#)
            .unwrap();
        f.seen.lock().unwrap().clear();
        let watches = Watches::new(16);
        let r = ClientUri::parse(&root.to_string()).unwrap();
        let owner_named = watches.add(&f.auth, ":1.1", owner.clone(), &r).unwrap();
        watches.add(&f.auth, ":1.2", bob.clone(), &r).unwrap();
        // Changed, then deleted, before the changes are delivered.
        let pin = format!("{root}Pin");
        f.auth
            .set(&owner, &pin, None, Input::Text("4321".into()))
            .unwrap();
        f.auth.delete(&owner, &root.to_string()).unwrap();
        assert_eq!(
            f.told(&watches),
            [
                (pin, "replaced", vec![owner_named]),
                (root.to_string(), "deleted", vec![owner_named]),
            ]
        );
    }

    #[test]
    fn each_caller_holds_at_most_its_share_of_watches() {
        let f = fixture();
        let auth = &f.auth;
        let watches = Watches::new(2);
        let uri = ClientUri::parse("urn:a:1.0/*/").unwrap();
        let a = watches.add(auth, ":1.1", Principal::User(1), &uri).unwrap();
        watches.add(auth, ":1.1", Principal::User(1), &uri).unwrap();
        let err = watches
            .add(auth, ":1.1", Principal::User(1), &uri)
            .unwrap_err();
        assert!(
            matches!(&err, Error::NotAllowed(m) if m.contains("[limits] watches_per_caller = 2")),
            "{err:?}"
        );
        // Others are not limited by it; unwatching or leaving frees the share.
        watches.add(auth, ":1.2", Principal::User(2), &uri).unwrap();
        assert!(!watches.remove(":1.2", a));
        assert!(watches.remove(":1.1", a));
        watches.add(auth, ":1.1", Principal::User(1), &uri).unwrap();
        watches.forget(":1.1");
        assert_eq!(watches.lock().counts.get(":1.1"), None);
        assert_eq!(watches.lock().active.len(), 1);
        // What was noted for a principal goes with its last watch.
        assert!(!watches.lock().readable.contains_key(&Principal::User(1)));
        watches.add(auth, ":1.1", Principal::User(1), &uri).unwrap();
    }

    fn change(seq: u64) -> Change {
        Change {
            seq,
            addr: addr("urn:a:1.0", "1", "X"),
            kind: ChangeKind::Replaced,
            writer: "admin".into(),
            at: 0,
            readers: Vec::new(),
        }
    }

    fn seqs(batches: &[Vec<Change>]) -> Vec<Vec<u64>> {
        batches
            .iter()
            .map(|b| b.iter().map(|c| c.seq).collect())
            .collect()
    }

    /// The durable point is the test's: nothing is handed on before it, every batch queued
    /// before the wait began is handed on after it with one wait, and a batch committed
    /// while the wait ran waits for the next one.
    #[tokio::test]
    async fn changes_are_handed_on_only_once_durable_one_wait_for_all_queued() {
        use futures_util::FutureExt as _;

        let (tx, mut rx) = mpsc::channel(8);
        let (synced, gate) = tokio::sync::watch::channel(false);
        let waits = std::cell::Cell::new(0);
        tx.send(vec![change(1)]).await.unwrap();
        tx.send(vec![change(2), change(3)]).await.unwrap();
        {
            let mut next = std::pin::pin!(durable_batches(&mut rx, || {
                waits.set(waits.get() + 1);
                let mut gate = gate.clone();
                async move {
                    gate.wait_for(|durable| *durable).await.unwrap();
                    Ok(())
                }
            }));
            assert!(
                next.as_mut().now_or_never().is_none(),
                "handed on before they were durable"
            );
            tx.send(vec![change(4)]).await.unwrap();
            synced.send(true).unwrap();
            let batches = next.await.unwrap().unwrap();
            assert_eq!(seqs(&batches), [vec![1], vec![2, 3]]);
        }
        assert_eq!(waits.get(), 1, "one wait for every batch queued before it");

        let batches = durable_batches(&mut rx, || async { Ok(()) }).await;
        assert_eq!(seqs(&batches.unwrap().unwrap()), [vec![4]]);

        // A sync that failed: the batch is never handed on.
        tx.send(vec![change(5)]).await.unwrap();
        let failed = durable_batches(&mut rx, || async {
            Err(StoreError::Corrupt("disk on fire".into()))
        })
        .await;
        assert!(failed.unwrap().is_err());
        drop(tx);
        assert!(
            durable_batches(&mut rx, || async { Ok(()) })
                .await
                .is_none()
        );
    }
}
