//! The device inventory MO (`urn:oma:mo:ext-omadmd-gateway:1.0`, docs/gateway.md §1.1, §5):
//! the children attached, their keys, states and instances, kept in the store, and the
//! Generic Alerts `ChildAttached`, `ChildState` and `ChildDetached` queued for every server
//! whose account has the inventory MOID.
//!
//! Every method writes the store and is blocking: adapters call them through
//! [`crate::store::offload`]. The children are also held here in memory (one lock, never
//! held across a store write's wait for another lock), so that routing a command to a
//! child needs no store read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::authority::{AccessError, Authority, Rights};
use crate::protocol::Alert;
use crate::protocol::alert::Mark;
use crate::session::{Engine, account};
use crate::tree::builtin::GATEWAY;
use crate::tree::node::Node;
use crate::tree::uri::NodeAddr;
use crate::tree::value::Value;

/// MIID of the one inventory instance.
pub const MIID: &str = "0";
/// The alert a new child queues.
pub const CHILD_ATTACHED: &str = "urn:oma:at:ext-omadmd:1.0:ChildAttached";
/// The alert a child's change of state queues.
pub const CHILD_STATE: &str = "urn:oma:at:ext-omadmd:1.0:ChildState";
/// The alert a child's detach queues.
pub const CHILD_DETACHED: &str = "urn:oma:at:ext-omadmd:1.0:ChildDetached";
/// Most children attached at once; a device beyond is refused.
pub const MAX_CHILDREN: usize = 1024;
/// Most MO instances one child may have in the gateway's store (an LwM2M registration lists
/// at most 1024 links anyway; a guest could otherwise add instances without end).
pub const MAX_MOS: usize = 1024;
/// Longest child key.
pub const MAX_KEY: usize = 64;

/// How the gateway reaches a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Lwm2m,
    /// A guest omadmd over its socket (docs/gateway.md §6).
    Omadmd,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Lwm2m => "lwm2m",
            Protocol::Omadmd => "omadmd",
        }
    }

    fn parse(text: &str) -> Option<Protocol> {
        [Protocol::Lwm2m, Protocol::Omadmd]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

/// Whether a child can be asked now (docs/gateway.md §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Online,
    Sleeping,
    Unreachable,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Sleeping => "sleeping",
            State::Unreachable => "unreachable",
        }
    }

    fn parse(text: &str) -> Option<State> {
        [State::Online, State::Sleeping, State::Unreachable]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// Why a child left the inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// It said goodbye (LwM2M De-register).
    Deregistered,
    /// It stayed unreachable for `[gateway] forget_after_s`.
    Expired,
    /// An administrator detached it (D-Bus `DetachChild`, `omadmctl children detach`).
    Removed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Deregistered => "deregistered",
            Reason::Expired => "expired",
            Reason::Removed => "removed",
        }
    }
}

/// One child as the inventory shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub key: String,
    /// The child's own name (the LwM2M endpoint name).
    pub id: String,
    pub protocol: Protocol,
    /// Where the gateway reaches it (`coap://192.0.2.7:56830`).
    pub address: String,
    pub state: State,
    /// POSIX seconds of the last message from it (written at most every
    /// `last_seen_granularity_s`).
    pub last_seen: i64,
    /// The ClientURIs of its instance roots, in order of first appearance.
    pub mos: Vec<String>,
    /// POSIX seconds since which it has been unreachable.
    pub unreachable_since: Option<i64>,
}

/// The children, in the store and in memory.
pub struct Inventory {
    auth: Arc<Authority>,
    engine: Arc<Engine>,
    children: Mutex<BTreeMap<String, Child>>,
    granularity: i64,
    /// Counts the saves: bumped after each, so that the D-Bus face can follow the list.
    saves: watch::Sender<u64>,
}

impl Inventory {
    /// The inventory as the store holds it: children a stopped daemon left are kept,
    /// `unreachable` until they speak again (their instances stay readable meanwhile).
    pub fn load(
        auth: Arc<Authority>,
        engine: Arc<Engine>,
        last_seen_granularity_s: u64,
    ) -> Result<Inventory, AccessError> {
        let root = NodeAddr::root(GATEWAY, MIID);
        let now = now();
        let children = if auth.exists(&root)? {
            from_node(&auth.read_internal(&root)?, now)
        } else {
            BTreeMap::new()
        };
        let inventory = Inventory {
            auth,
            engine,
            children: Mutex::new(children),
            granularity: i64::try_from(last_seen_granularity_s).unwrap_or(i64::MAX),
            saves: watch::Sender::new(0),
        };
        inventory.save()?;
        Ok(inventory)
    }

    /// The authority the inventory and the mirrors are written through.
    pub fn authority(&self) -> Arc<Authority> {
        self.auth.clone()
    }

    /// Told of every change of the children from now on: the count of saves, bumped after
    /// each attach, state change, `LastSeen`, new instance and detach.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.saves.subscribe()
    }

    /// The children, in key order.
    pub fn list(&self) -> Vec<Child> {
        self.lock().values().cloned().collect()
    }

    /// The child with `key`.
    pub fn get(&self, key: &str) -> Option<Child> {
        self.lock().get(key).cloned()
    }

    /// The key of the child `id` speaking `protocol`: the one it has, else a new one
    /// (docs/gateway.md §1.3): the id itself when it is a fit name and free, else `c` and
    /// 16 hex digits of SHA-256 of `<protocol>:<id>`.
    pub fn key_for(&self, protocol: Protocol, id: &str) -> String {
        let children = self.lock();
        if let Some(c) = children
            .values()
            .find(|c| c.protocol == protocol && c.id == id)
        {
            return c.key.clone();
        }
        let fits = !id.is_empty()
            && id.len() <= MAX_KEY
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if fits && !children.contains_key(id) {
            return id.to_owned();
        }
        let digest = Sha256::digest(format!("{}:{id}", protocol.as_str()).as_bytes());
        format!("c{}", &crate::tree::value::hex(&digest)[..16])
    }

    /// Adds `child` (or brings back one already there, whose state changes) and queues the
    /// alert that says so. Refused beyond [`MAX_CHILDREN`].
    pub fn attach(&self, child: Child) -> Result<(), AccessError> {
        let before = {
            let mut children = self.lock();
            if !children.contains_key(&child.key) && children.len() >= MAX_CHILDREN {
                return Err(AccessError::Limit(format!(
                    "{}: the gateway holds {MAX_CHILDREN} children already",
                    child.id
                )));
            }
            children.insert(child.key.clone(), child.clone())
        };
        self.save()?;
        match before {
            None => self.tell(&attached(&child)),
            Some(old) if old.state != child.state => self.tell(&state(&child, old.state)),
            Some(_) => Ok(()),
        }
    }

    /// Sets the state of `key`'s child, queueing [`CHILD_STATE`] when it changes.
    pub fn set_state(&self, key: &str, new: State) -> Result<(), AccessError> {
        let changed = {
            let mut children = self.lock();
            let Some(child) = children.get_mut(key) else {
                return Ok(());
            };
            if child.state == new {
                return Ok(());
            }
            let was = child.state;
            child.state = new;
            child.unreachable_since = (new == State::Unreachable).then(now);
            if new == State::Online {
                child.last_seen = now();
            }
            (child.clone(), was)
        };
        self.save()?;
        self.tell(&state(&changed.0, changed.1))
    }

    /// Notes a message from `key`'s child now; the MO shows it once `LastSeen` is a
    /// granularity old.
    pub fn seen(&self, key: &str) -> Result<(), AccessError> {
        let now = now();
        let stale = {
            let mut children = self.lock();
            match children.get_mut(key) {
                Some(c) if now - c.last_seen >= self.granularity => {
                    c.last_seen = now;
                    true
                }
                _ => false,
            }
        };
        if stale { self.save() } else { Ok(()) }
    }

    /// Whether `key`'s child may have the instance whose root is `uri`: one it has, or a
    /// new one while it has fewer than [`MAX_MOS`]; refused ([`AccessError::Limit`]) beyond.
    pub fn room_for(&self, key: &str, uri: &str) -> Result<(), AccessError> {
        let children = self.lock();
        match children.get(key) {
            Some(c) if c.mos.len() >= MAX_MOS && !c.mos.iter().any(|m| m == uri) => {
                Err(AccessError::Limit(format!(
                    "child {key} has {MAX_MOS} instances already: {uri} is not mirrored"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Records that `key`'s child has the instance whose root is `uri`.
    pub fn add_mo(&self, key: &str, uri: &str) -> Result<(), AccessError> {
        let added = {
            let mut children = self.lock();
            match children.get_mut(key) {
                Some(c) if !c.mos.iter().any(|m| m == uri) => {
                    c.mos.push(uri.to_owned());
                    true
                }
                _ => false,
            }
        };
        if added { self.save() } else { Ok(()) }
    }

    /// Records that `key`'s child no longer has the instance whose root is `uri` (the
    /// instance itself is the caller's to remove).
    pub fn remove_mo(&self, key: &str, uri: &str) -> Result<(), AccessError> {
        let removed = {
            let mut children = self.lock();
            match children.get_mut(key) {
                Some(c) if c.mos.iter().any(|m| m == uri) => {
                    c.mos.retain(|m| m != uri);
                    true
                }
                _ => false,
            }
        };
        if removed { self.save() } else { Ok(()) }
    }

    /// Removes `key`'s child: its instances and its node in one go, then [`CHILD_DETACHED`].
    pub fn detach(&self, key: &str, reason: Reason) -> Result<(), AccessError> {
        let Some(child) = self.lock().remove(key) else {
            return Ok(());
        };
        let prefix = format!("{key}.");
        for uri in &child.mos {
            if let Some((moid, _)) = uri.split_once('/') {
                self.auth
                    .withdraw(moid, |miid| !miid.starts_with(&prefix))?;
            }
        }
        self.save()?;
        self.tell(&detached(&child, reason))
    }

    /// The children a tick finds unreachable for longer than `forget_after_s`.
    pub fn expired(&self, forget_after_s: u64) -> Vec<String> {
        let limit = now() - i64::try_from(forget_after_s).unwrap_or(i64::MAX);
        self.lock()
            .values()
            .filter(|c| c.unreachable_since.is_some_and(|t| t <= limit))
            .map(|c| c.key.clone())
            .collect()
    }

    fn save(&self) -> Result<(), AccessError> {
        let node = node(&self.list());
        let saved = self
            .auth
            .provide(GATEWAY, MIID, "Gateway", &node, Rights::READ);
        // The list in memory changed whether or not the store took it: its readers are told.
        self.saves.send_modify(|n| *n = n.wrapping_add(1));
        saved
    }

    /// Keeps `alert` for every server whose account has the inventory MOID and asks for
    /// the sessions that deliver it (kept for a later one if they fail).
    fn tell(&self, alert: &Alert) -> Result<(), AccessError> {
        let json = serde_json::to_string(alert)
            .map_err(|e| AccessError::InvalidValue(format!("{}: {e}", alert.alert_type)))?;
        let mut told = 0;
        // At most one ChildState per child waits for a server: the newest.
        let source = alert.source_uri.clone();
        let older_state = |waiting: &str| {
            alert.alert_type == CHILD_STATE
                && serde_json::from_str::<Alert>(waiting)
                    .is_ok_and(|w| w.alert_type == CHILD_STATE && w.source_uri == source)
        };
        for account in account::load_all(&self.auth)? {
            if account.may_manage(GATEWAY) {
                match self
                    .engine
                    .keep_alert_replacing(&account.srv_id, &json, &older_state)
                {
                    Ok(()) => told += 1,
                    Err(e) => tracing::error!(
                        srv_id = %account.srv_id,
                        "cannot keep {}: {e}", alert.alert_type
                    ),
                }
            }
        }
        if told > 0 {
            tracing::info!("{} queued for {told} server(s)", alert.alert_type);
            if let Err(e) = self.engine.deliver_pending() {
                tracing::error!("asking for sessions to deliver {}: {e}", alert.alert_type);
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Child>> {
        // Each change of the map is one insert, remove or field write: a panic elsewhere
        // never leaves it half-changed.
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The inventory MO's content for `children`.
pub fn node(children: &[Child]) -> Node {
    let chr = |s: &str| Node::Leaf(Value::Chr(s.to_owned()));
    let entries = children
        .iter()
        .map(|c| {
            let mos = c
                .mos
                .iter()
                .enumerate()
                .map(|(i, uri)| ((i + 1).to_string(), chr(uri)))
                .collect();
            let node = Node::Interior(BTreeMap::from([
                ("Id".to_owned(), chr(&c.id)),
                ("Protocol".to_owned(), chr(c.protocol.as_str())),
                ("Address".to_owned(), chr(&c.address)),
                ("State".to_owned(), chr(c.state.as_str())),
                ("LastSeen".to_owned(), Node::Leaf(Value::Int(c.last_seen))),
                ("MOs".to_owned(), Node::Interior(mos)),
            ]));
            (c.key.clone(), node)
        })
        .collect();
    Node::Interior(BTreeMap::from([(
        "Children".to_owned(),
        Node::Interior(entries),
    )]))
}

/// The children a stored inventory names, each `unreachable` since `now` unless it was
/// already.
fn from_node(node: &Node, now: i64) -> BTreeMap<String, Child> {
    let text = |n: &Node, p: &str| match n.get(p) {
        Some(Node::Leaf(v)) => v.to_text(),
        _ => String::new(),
    };
    let Some(Node::Interior(entries)) = node.get("Children") else {
        return BTreeMap::new();
    };
    entries
        .iter()
        .filter_map(|(key, n)| Some((key, n, Protocol::parse(&text(n, "Protocol"))?)))
        .map(|(key, n, protocol)| {
            let mos = match n.get("MOs") {
                Some(Node::Interior(m)) => {
                    let mut m: Vec<(u64, String)> = m
                        .iter()
                        .filter_map(|(i, v)| match v {
                            Node::Leaf(v) => Some((i.parse().unwrap_or(u64::MAX), v.to_text())),
                            Node::Interior(_) => None,
                        })
                        .collect();
                    m.sort();
                    m.into_iter().map(|(_, uri)| uri).collect()
                }
                _ => Vec::new(),
            };
            let was = State::parse(&text(n, "State")).unwrap_or(State::Unreachable);
            let child = Child {
                key: key.clone(),
                id: text(n, "Id"),
                protocol,
                address: text(n, "Address"),
                state: State::Unreachable,
                last_seen: text(n, "LastSeen").parse().unwrap_or(0),
                mos,
                unreachable_since: Some(if was == State::Unreachable {
                    text(n, "LastSeen").parse().unwrap_or(now)
                } else {
                    now
                }),
            };
            (key.clone(), child)
        })
        .collect()
}

/// [`CHILD_ATTACHED`] for `child`.
pub fn attached(child: &Child) -> Alert {
    Alert {
        source_uri: Some(source(child)),
        mark: Some(Mark::Informational),
        data_type: Some("json".to_owned()),
        data: Some(json!({
            "Id": child.id,
            "Protocol": child.protocol.as_str(),
            "Address": child.address,
            "State": child.state.as_str(),
            "MOs": child.mos,
        })),
        ..Alert::of_type(CHILD_ATTACHED)
    }
}

/// [`CHILD_STATE`] for `child`, which was `was`.
pub fn state(child: &Child, was: State) -> Alert {
    Alert {
        source_uri: Some(source(child)),
        mark: Some(if child.state == State::Unreachable {
            Mark::Warning
        } else {
            Mark::Informational
        }),
        data_type: Some("json".to_owned()),
        data: Some(json!({
            "Id": child.id,
            "State": child.state.as_str(),
            "Was": was.as_str(),
            "LastSeen": child.last_seen,
        })),
        ..Alert::of_type(CHILD_STATE)
    }
}

/// [`CHILD_DETACHED`] for `child`, gone for `reason`.
pub fn detached(child: &Child, reason: Reason) -> Alert {
    Alert {
        source_uri: Some(source(child)),
        mark: Some(if reason == Reason::Expired {
            Mark::Warning
        } else {
            Mark::Informational
        }),
        data_type: Some("json".to_owned()),
        data: Some(json!({
            "Id": child.id,
            "Protocol": child.protocol.as_str(),
            "Reason": reason.as_str(),
        })),
        ..Alert::of_type(CHILD_DETACHED)
    }
}

fn source(child: &Child) -> String {
    format!("{}Children/{}", NodeAddr::root(GATEWAY, MIID), child.key)
}

/// POSIX seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(key: &str, state: State) -> Child {
        Child {
            key: key.into(),
            id: key.into(),
            protocol: Protocol::Lwm2m,
            address: "coap://192.0.2.7:5683".into(),
            state,
            last_seen: 1_767_225_600,
            mos: vec![
                "urn:oma:lwm2m:oma:3:1.2/thermo-42.0/".into(),
                "urn:oma:lwm2m:ext:3303/thermo-42.0/".into(),
            ],
            unreachable_since: None,
        }
    }

    #[test]
    fn the_mo_lists_children_and_reads_back_as_unreachable() {
        let node = node(&[child("thermo-42", State::Online)]);
        let leaf = |p: &str| match node.get(p) {
            Some(Node::Leaf(v)) => v.to_text(),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(leaf("Children/thermo-42/Protocol"), "lwm2m");
        assert_eq!(leaf("Children/thermo-42/State"), "online");
        assert_eq!(leaf("Children/thermo-42/LastSeen"), "1767225600");
        assert_eq!(
            leaf("Children/thermo-42/MOs/2"),
            "urn:oma:lwm2m:ext:3303/thermo-42.0/"
        );
        let back = from_node(&node, 1_767_300_000);
        let c = &back["thermo-42"];
        assert_eq!(c.state, State::Unreachable);
        assert_eq!(c.unreachable_since, Some(1_767_300_000));
        assert_eq!(c.mos, child("thermo-42", State::Online).mos);
    }

    #[test]
    fn alerts_name_the_child_and_say_what_changed() {
        let c = child("thermo-42", State::Unreachable);
        let a = state(&c, State::Online);
        assert_eq!(a.alert_type, CHILD_STATE);
        assert_eq!(
            a.source_uri.as_deref(),
            Some("urn:oma:mo:ext-omadmd-gateway:1.0/0/Children/thermo-42")
        );
        assert_eq!(a.mark, Some(Mark::Warning));
        let data = a.data.unwrap();
        assert_eq!(data["Was"], "online");
        assert_eq!(data["State"], "unreachable");
        let d = detached(&c, Reason::Deregistered).data.unwrap();
        assert_eq!(d["Reason"], "deregistered");
        let at = attached(&c).data.unwrap();
        assert_eq!(at["MOs"][0], "urn:oma:lwm2m:oma:3:1.2/thermo-42.0/");
    }

    #[test]
    fn an_administrators_detach_says_removed_and_is_no_warning() {
        let a = detached(&child("thermo-42", State::Online), Reason::Removed);
        assert_eq!(a.mark, Some(Mark::Informational));
        assert_eq!(a.data.unwrap()["Reason"], "removed");
    }

    #[test]
    fn a_child_holds_at_most_max_mos_instances() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, engine) = Engine::for_tests(dir.path());
        let engine = Arc::new(engine);
        let inventory = Inventory::load(auth, engine, 300).unwrap();
        let uri = |i: usize| format!("urn:oma:mo:ext-test:1.0/web1.{i}/");
        let mut full = child("web1", State::Online);
        full.mos = (0..MAX_MOS).map(uri).collect();
        inventory.attach(full).unwrap();
        assert!(inventory.room_for("web1", &uri(0)).is_ok(), "one it has");
        assert!(matches!(
            inventory.room_for("web1", &uri(MAX_MOS)),
            Err(AccessError::Limit(_))
        ));
        assert!(inventory.room_for("other", &uri(MAX_MOS)).is_ok());
    }
}
