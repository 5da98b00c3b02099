//! The LwM2M server side of the gateway (docs/gateway.md §2.6, §4, §5): registrations on
//! `/rd` (Register, Update, De-register), each registered object instance read, mirrored as
//! an MO instance (`<key>.<iid>`) and observed; notifications written into the mirror; a
//! DM write or EXEC on a child's instance sent to it as an LwM2M Write or Execute, one
//! request at a time per child, bounded by `[gateway] command_timeout_s`.
//!
//! Payloads: reads ask for TLV and fall back to SenML JSON when the child answers 4.06;
//! writes go in the format the child answered reads in. Objects 0, 1, 2, 21, 23 and 25 are
//! never mirrored ([`NOT_MIRRORED`]). Store work runs on the blocking pool
//! ([`crate::store::offload`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::coap::{CoapError, Endpoint, Incoming};
use super::codec::Decoded;
use super::path::LwPath;
use super::{link, senml, tlv};
use crate::authority::Rights;
use crate::config::GatewayConfig;
use crate::gateway::inventory::{self, Child, Inventory, Protocol, Reason, State};
use crate::gateway::{lock, offload};
use crate::session::Tasks;
use crate::session::children::ChildFailure;
use crate::tree::lwm2m::{Catalog, Kind, Object};
use crate::tree::node::Node;
use crate::tree::uri::NodeAddr;
use crate::tree::value::Value;

/// Objects the gateway never mirrors: the child's security, servers, access control, OSCORE
/// and COSE keys are its own business, and a child that is a gateway is one device.
pub const NOT_MIRRORED: [u16; 6] = [0, 1, 2, 21, 23, 25];
/// Longest endpoint name accepted.
const MAX_ENDPOINT: usize = 256;
/// Longest registration lifetime accepted, in seconds (LwM2M's `lt` is at most 2^32 − 1,
/// but a child that says nothing for a year is gone).
const MAX_LIFETIME: u64 = 365 * 24 * 3600;
/// How often lifetimes and expiries are checked.
const TICK: Duration = Duration::from_secs(5);

/// The adapter: the CoAP endpoint, the object definitions and the registrations.
pub struct Adapter {
    endpoints: Vec<Arc<Endpoint>>,
    catalog: Catalog,
    inventory: Arc<Inventory>,
    config: GatewayConfig,
    grants: Vec<(String, Rights)>,
    /// Registrations by their location (`/rd/<id>`).
    regs: Mutex<HashMap<String, Arc<Reg>>>,
}

/// One registered child.
struct Reg {
    key: String,
    /// The socket it registered on: every request to it goes from there.
    endpoint: Arc<Endpoint>,
    peer: Mutex<SocketAddr>,
    /// Seconds of lifetime and when it last began.
    lifetime: Mutex<(u64, Instant)>,
    /// Mirrored instances: (object, instance id).
    instances: Vec<(Object, u16)>,
    /// Whether the child answered reads in SenML JSON (else TLV).
    senml: Mutex<bool>,
    /// One request at a time (RFC 7252's NSTART = 1).
    turn: tokio::sync::Mutex<()>,
    /// Observation tokens, by object instance.
    observed: Mutex<Vec<(Vec<u8>, u16, u16)>>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Adapter {
    /// The adapter serving on `endpoints`. Grants in `config` were checked when it was read.
    pub fn new(
        endpoints: Vec<Arc<Endpoint>>,
        catalog: Catalog,
        inventory: Arc<Inventory>,
        config: GatewayConfig,
    ) -> Arc<Adapter> {
        // Checked when the configuration was read: never an error here.
        let grants = config.grant_rights().unwrap_or_default();
        Arc::new(Adapter {
            endpoints,
            catalog,
            inventory,
            config,
            grants,
            regs: Mutex::default(),
        })
    }

    /// Serves until `tasks` stop: the socket read, requests from children, notifications,
    /// and the tick that marks lapsed registrations unreachable and forgets children
    /// unreachable for `forget_after_s`.
    pub async fn run(self: Arc<Self>, tasks: Tasks) {
        let (tx, mut rx) = mpsc::channel::<(Arc<Endpoint>, Incoming)>(256);
        for endpoint in &self.endpoints {
            let (one_tx, mut one_rx) = mpsc::channel(64);
            let (endpoint, stop) = (endpoint.clone(), tasks.clone());
            let reader = endpoint.clone();
            tasks.spawn(async move { reader.run(one_tx, stop.stopped()).await });
            let tx = tx.clone();
            tasks.spawn(async move {
                while let Some(incoming) = one_rx.recv().await {
                    if tx.send((endpoint.clone(), incoming)).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut tick = tokio::time::interval(TICK);
        let mut saves = self.inventory.subscribe();
        loop {
            tokio::select! {
                () = tasks.stopped() => return,
                _ = tick.tick() => self.clone().tick().await,
                // An administrator's detach (`DetachChild`) ends the child's registration.
                Ok(()) = saves.changed() => self.forget_detached(),
                got = rx.recv() => match got {
                    Some((endpoint, Incoming::Request { peer, packet })) => {
                        self.clone().request(&endpoint, peer, packet, &tasks).await;
                    }
                    Some((_, Incoming::Notification { peer, packet })) => {
                        self.clone().notification(peer, packet).await;
                    }
                    None => return,
                },
            }
        }
    }

    async fn request(
        self: Arc<Self>,
        endpoint: &Arc<Endpoint>,
        peer: SocketAddr,
        packet: Packet,
        tasks: &Tasks,
    ) {
        let path = uri_path(&packet);
        let method = match packet.header.code {
            MessageClass::Request(m) => m,
            _ => return,
        };
        let (code, location) = match (method, path.as_slice()) {
            (RequestType::Post, [rd]) if rd == "rd" => {
                match self.clone().register(endpoint, peer, &packet, tasks).await {
                    Ok(location) => (ResponseType::Created, Some(location)),
                    Err(code) => (code, None),
                }
            }
            (RequestType::Post, [rd, id]) if rd == "rd" => {
                (self.update(peer, id, &packet).await, None)
            }
            (RequestType::Delete, [rd, id]) if rd == "rd" => (self.deregister(id).await, None),
            _ => (ResponseType::NotFound, None),
        };
        let mut response = Packet::new();
        response.header.code = MessageClass::Response(code);
        if let Some(location) = location {
            for seg in location.split('/').filter(|s| !s.is_empty()) {
                response.add_option(CoapOption::LocationPath, seg.as_bytes().to_vec());
            }
        }
        endpoint.respond(peer, &packet, response).await;
    }

    /// Register: a child (new or known by its endpoint name) with the objects its payload
    /// lists. The answer goes out at once; reading and observing follow.
    async fn register(
        self: Arc<Self>,
        endpoint: &Arc<Endpoint>,
        peer: SocketAddr,
        packet: &Packet,
        tasks: &Tasks,
    ) -> Result<String, ResponseType> {
        let query = uri_query(packet);
        let Some(ep) = query
            .get("ep")
            .filter(|e| !e.is_empty() && e.len() <= MAX_ENDPOINT)
        else {
            return Err(ResponseType::BadRequest);
        };
        if let Some(allowed) = &self.config.lwm2m.endpoints
            && !allowed.iter().any(|a| a == ep)
        {
            tracing::warn!(
                "LwM2M: {peer} registered as {ep:?}, which [gateway.lwm2m] endpoints does not list: refused"
            );
            return Err(ResponseType::Forbidden);
        }
        let lifetime = lifetime(&query)?;
        let text = std::str::from_utf8(&packet.payload).map_err(|_| ResponseType::BadRequest)?;
        let registered = link::parse_registration(text).map_err(|e| {
            tracing::warn!("LwM2M: registration of {ep:?} from {peer}: {e}");
            ResponseType::BadRequest
        })?;
        let mut instances = Vec::new();
        for o in &registered.objects {
            if NOT_MIRRORED.contains(&o.oid) {
                continue;
            }
            match self.catalog.find(o.oid, o.version.as_deref()) {
                Some(def) => instances.extend(o.instances.iter().map(|&i| (def.clone(), i))),
                None => tracing::warn!(
                    "LwM2M: {ep:?} has object {} (version {}), which no loaded definition covers: not mirrored",
                    o.oid,
                    o.version.as_deref().unwrap_or("1.0")
                ),
            }
        }
        let key = self.inventory.key_for(Protocol::Lwm2m, ep);
        // A child registering again replaces its old registration.
        let old: Vec<Arc<Reg>> = {
            let mut regs = lock(&self.regs);
            let gone: Vec<String> = regs
                .iter()
                .filter(|(_, r)| r.key == key)
                .map(|(l, _)| l.clone())
                .collect();
            gone.iter().filter_map(|l| regs.remove(l)).collect()
        };
        for reg in old {
            self.unobserve(&reg);
        }
        let location = format!("/rd/{}", hex_id());
        let reg = Arc::new(Reg {
            key: key.clone(),
            endpoint: endpoint.clone(),
            peer: Mutex::new(peer),
            lifetime: Mutex::new((lifetime, Instant::now())),
            instances,
            senml: Mutex::new(false),
            turn: tokio::sync::Mutex::new(()),
            observed: Mutex::default(),
        });
        let previous = self.inventory.get(&key);
        let child = Child {
            key: key.clone(),
            id: ep.clone(),
            protocol: Protocol::Lwm2m,
            address: address(peer),
            state: State::Online,
            last_seen: inventory::now(),
            mos: previous.map(|p| p.mos).unwrap_or_default(),
            unreachable_since: None,
        };
        let inv = self.inventory.clone();
        offload(move || inv.attach(child)).await.map_err(|e| {
            tracing::error!("LwM2M: cannot attach {ep:?}: {e}");
            ResponseType::ServiceUnavailable
        })?;
        lock(&self.regs).insert(location.clone(), reg.clone());
        tracing::info!("LwM2M: {ep:?} registered from {peer} as child {key} ({location})");
        let adapter = self.clone();
        tasks.spawn(async move { adapter.mirror_all(&reg).await });
        Ok(location)
    }

    async fn update(&self, peer: SocketAddr, id: &str, packet: &Packet) -> ResponseType {
        let Some(reg) = lock(&self.regs).get(&format!("/rd/{id}")).cloned() else {
            return ResponseType::NotFound;
        };
        if self.inventory.get(&reg.key).is_none() {
            self.forget_detached();
            return ResponseType::NotFound;
        }
        let query = uri_query(packet);
        let seconds = match query.contains_key("lt").then(|| lifetime(&query)) {
            Some(Ok(s)) => Some(s),
            Some(Err(code)) => return code,
            None => None,
        };
        {
            let mut lt = lock(&reg.lifetime);
            lt.0 = seconds.unwrap_or(lt.0);
            lt.1 = Instant::now();
        }
        *lock(&reg.peer) = peer;
        self.touch(&reg.key).await;
        ResponseType::Changed
    }

    async fn deregister(&self, id: &str) -> ResponseType {
        let Some(reg) = lock(&self.regs).remove(&format!("/rd/{id}")) else {
            return ResponseType::NotFound;
        };
        self.unobserve(&reg);
        let (inv, key) = (self.inventory.clone(), reg.key.clone());
        match offload(move || inv.detach(&key, Reason::Deregistered)).await {
            Ok(()) => tracing::info!("LwM2M: child {} de-registered", reg.key),
            Err(e) => tracing::error!("LwM2M: detaching child {}: {e}", reg.key),
        }
        ResponseType::Deleted
    }

    /// Reads, mirrors and observes every instance of `reg`.
    async fn mirror_all(&self, reg: &Reg) {
        for (object, iid) in &reg.instances {
            let path = LwPath::instance(object.id, *iid);
            let Ok(path) = path else { continue };
            let until = self.deadline();
            let read = {
                let _turn = reg.turn.lock().await;
                self.read(reg, object, path, until).await
            };
            match read {
                Ok(decoded) => self.write_mirror(reg, object, *iid, decoded, true).await,
                Err(e) => {
                    tracing::warn!("LwM2M: reading {path} of child {}: {}", reg.key, e.message);
                    continue;
                }
            }
            let observed = {
                let _turn = reg.turn.lock().await;
                self.observe(reg, object, *iid).await
            };
            if let Err(e) = observed {
                tracing::info!(
                    "LwM2M: child {} does not let {path} be observed: {}",
                    reg.key,
                    e.message
                );
            }
        }
    }

    /// Reads `path` of `object`: TLV asked first, SenML JSON after a 4.06.
    async fn read(
        &self,
        reg: &Reg,
        object: &Object,
        path: LwPath,
        until: Instant,
    ) -> Result<Decoded, ChildFailure> {
        let prefer_senml = *lock(&reg.senml);
        let formats = if prefer_senml {
            [senml::CONTENT_FORMAT, tlv::CONTENT_FORMAT]
        } else {
            [tlv::CONTENT_FORMAT, senml::CONTENT_FORMAT]
        };
        for format in formats {
            let mut get = request(RequestType::Get, path);
            set_uint(&mut get, CoapOption::Accept, format);
            let answer = self.send(reg, get, until).await?;
            match answer.header.code {
                MessageClass::Response(ResponseType::NotAcceptable) => continue,
                MessageClass::Response(ResponseType::Content) => {
                    return self.decode(reg, object, path, &answer);
                }
                other => return Err(failure_of(&reg.key, other)),
            }
        }
        Err(ChildFailure {
            status: 406,
            message: format!(
                "child {} reads {path} in neither TLV nor SenML JSON",
                reg.key
            ),
        })
    }

    fn decode(
        &self,
        reg: &Reg,
        object: &Object,
        path: LwPath,
        answer: &Packet,
    ) -> Result<Decoded, ChildFailure> {
        let kind_of = |rid: u16| object.resource(rid).map(|r| r.kind);
        let format = get_uint(answer, CoapOption::ContentFormat);
        let decoded = match format {
            Some(f) if f == u32::from(senml::CONTENT_FORMAT) => {
                *lock(&reg.senml) = true;
                senml::decode(&answer.payload, path, &kind_of)
            }
            Some(f) if f == u32::from(tlv::CONTENT_FORMAT) => {
                *lock(&reg.senml) = false;
                tlv::decode(&answer.payload, path, &kind_of)
            }
            other => {
                return Err(ChildFailure {
                    status: 415,
                    message: format!("child {} sent {path} as content format {other:?}", reg.key),
                });
            }
        };
        let decoded = decoded.map_err(|e| ChildFailure {
            status: 500,
            message: format!("child {} sent {path} that cannot be read: {e}", reg.key),
        })?;
        for (p, why) in &decoded.skipped {
            tracing::info!("LwM2M: child {}: {p} not mirrored: {why}", reg.key);
        }
        Ok(decoded)
    }

    async fn observe(&self, reg: &Reg, object: &Object, iid: u16) -> Result<(), ChildFailure> {
        let path = LwPath::instance(object.id, iid).map_err(|e| ChildFailure {
            status: 400,
            message: e.to_string(),
        })?;
        let until = self.deadline();
        // Write-Attributes first: how often the child may and must tell.
        let mut attrs = request(RequestType::Put, path);
        for q in [
            format!("pmin={}", self.config.lwm2m.pmin_s),
            format!("pmax={}", self.config.lwm2m.pmax_s),
        ] {
            attrs.add_option(CoapOption::UriQuery, q.into_bytes());
        }
        if let Err(e) = self.send(reg, attrs, until).await {
            tracing::debug!(
                "LwM2M: child {} refused attributes on {path}: {}",
                reg.key,
                e.message
            );
        }
        let mut get = request(RequestType::Get, path);
        let format = if *lock(&reg.senml) {
            senml::CONTENT_FORMAT
        } else {
            tlv::CONTENT_FORMAT
        };
        set_uint(&mut get, CoapOption::Accept, format);
        let peer = *lock(&reg.peer);
        let (token, answer) = match reg.endpoint.observe(peer, get, until).await {
            Ok(got) => got,
            Err(e) => return Err(self.unanswered(reg, &e).await),
        };
        if answer.get_observe_value().is_none() {
            return Err(failure_of(&reg.key, answer.header.code));
        }
        lock(&reg.observed).push((token, object.id, iid));
        Ok(())
    }

    fn unobserve(&self, reg: &Reg) {
        let peer = *lock(&reg.peer);
        for (token, _, _) in lock(&reg.observed).drain(..) {
            reg.endpoint.forget(peer, &token);
        }
    }

    /// Forgets the registrations of children an administrator detached (no longer in the
    /// inventory): their notifications are not mirrored any more, and their next Update gets
    /// `4.04`, so a device that is still there registers, and attaches, anew.
    fn forget_detached(&self) {
        let held: Vec<(String, String)> = lock(&self.regs)
            .iter()
            .map(|(location, r)| (location.clone(), r.key.clone()))
            .collect();
        for (location, key) in held {
            if self.inventory.get(&key).is_some() {
                continue;
            }
            if let Some(reg) = lock(&self.regs).remove(&location) {
                self.unobserve(&reg);
                tracing::info!("LwM2M: child {key} was detached: registration {location} ended");
            }
        }
    }

    async fn notification(self: Arc<Self>, peer: SocketAddr, packet: Packet) {
        let token = packet.get_token().to_vec();
        let found = lock(&self.regs).values().find_map(|r| {
            let observed = lock(&r.observed);
            observed
                .iter()
                .find(|(t, _, _)| *t == token)
                .map(|(_, oid, iid)| (r.clone(), *oid, *iid))
        });
        let Some((reg, oid, iid)) = found else { return };
        if *lock(&reg.peer) != peer {
            return;
        }
        let Some(object) = reg
            .instances
            .iter()
            .find(|(o, i)| o.id == oid && *i == iid)
            .map(|(o, _)| o.clone())
        else {
            return;
        };
        let Ok(path) = LwPath::instance(oid, iid) else {
            return;
        };
        match self.decode(&reg, &object, path, &packet) {
            Ok(decoded) => {
                self.write_mirror(&reg, &object, iid, decoded, false).await;
                self.touch(&reg.key).await;
            }
            Err(e) => tracing::warn!("LwM2M: notification of {path}: {}", e.message),
        }
    }

    /// Writes what the child reported into its instance `<key>.<iid>` (created, with every
    /// executable and write-only resource in place, on the first read).
    async fn write_mirror(
        &self,
        reg: &Reg,
        object: &Object,
        iid: u16,
        decoded: Decoded,
        first: bool,
    ) {
        let mut content = if first {
            placeholders(object)
        } else {
            BTreeMap::new()
        };
        for (path, value) in decoded.values {
            let Some(rid) = path.rid() else { continue };
            match path.riid() {
                Some(riid) => {
                    let entry = content.entry(rid.to_string()).or_insert_with(Node::empty);
                    if let Node::Interior(m) = entry {
                        m.insert(riid.to_string(), Node::Leaf(value));
                    }
                }
                None => {
                    content.insert(rid.to_string(), Node::Leaf(value));
                }
            }
        }
        let moid = object.urn.clone();
        let miid = format!("{}.{iid}", reg.key);
        let root = object.id.to_string();
        let uri = NodeAddr::root(&moid, &miid).to_string();
        let (inv, key, grants) = (self.inventory.clone(), reg.key.clone(), self.grants.clone());
        let auth = inv.authority();
        let done = offload(move || {
            // A child detached meanwhile is not brought back by its last report.
            if inv.get(&key).is_none() {
                return Ok(());
            }
            inv.room_for(&key, &uri)?;
            auth.mirror(&moid, &miid, &root, &Node::Interior(content), &grants)?;
            inv.add_mo(&key, &uri)
        })
        .await;
        if let Err(e) = done {
            tracing::error!("LwM2M: mirroring child {}: {e}", reg.key);
        }
    }

    /// Sends `packet` to `reg`'s child; a timeout makes it unreachable.
    async fn send(
        &self,
        reg: &Reg,
        packet: Packet,
        until: Instant,
    ) -> Result<Packet, ChildFailure> {
        let peer = *lock(&reg.peer);
        match reg.endpoint.request(peer, packet, until).await {
            Ok(answer) => {
                self.touch(&reg.key).await;
                Ok(answer)
            }
            Err(e) => Err(self.unanswered(reg, &e).await),
        }
    }

    /// What an unanswered request means: `504` after a timeout, which makes the child
    /// unreachable; `503` otherwise.
    async fn unanswered(&self, reg: &Reg, e: &CoapError) -> ChildFailure {
        let status = match e {
            CoapError::Timeout => 504,
            _ => 503,
        };
        if status == 504 {
            let (inv, key) = (self.inventory.clone(), reg.key.clone());
            if let Err(e) = offload(move || inv.set_state(&key, State::Unreachable)).await {
                tracing::error!("LwM2M: {e}");
            }
        }
        ChildFailure {
            status,
            message: format!("child {}: {e}", reg.key),
        }
    }

    /// A message from `key`'s child: it is online and was seen now.
    async fn touch(&self, key: &str) {
        let (inv, key) = (self.inventory.clone(), key.to_owned());
        let done = offload(move || {
            inv.set_state(&key, State::Online)?;
            inv.seen(&key)
        })
        .await;
        if let Err(e) = done {
            tracing::error!("LwM2M: {e}");
        }
    }

    async fn tick(self: Arc<Self>) {
        let grace = self.config.grace_s;
        let lapsed: Vec<Arc<Reg>> = lock(&self.regs)
            .values()
            .filter(|r| {
                let (lt, since) = *lock(&r.lifetime);
                since.elapsed() > Duration::from_secs(lt.saturating_add(grace))
            })
            .cloned()
            .collect();
        for reg in lapsed {
            let (inv, key) = (self.inventory.clone(), reg.key.clone());
            if let Err(e) = offload(move || inv.set_state(&key, State::Unreachable)).await {
                tracing::error!("LwM2M: {e}");
            }
        }
        let forget = self.config.forget_after_s;
        let inv = self.inventory.clone();
        for key in inv.expired(forget) {
            let gone: Vec<Arc<Reg>> = {
                let mut regs = lock(&self.regs);
                let ls: Vec<String> = regs
                    .iter()
                    .filter(|(_, r)| r.key == key)
                    .map(|(l, _)| l.clone())
                    .collect();
                ls.iter().filter_map(|l| regs.remove(l)).collect()
            };
            for reg in &gone {
                self.unobserve(reg);
            }
            let inv = inv.clone();
            let k = key.clone();
            match offload(move || inv.detach(&k, Reason::Expired)).await {
                Ok(()) => tracing::info!("LwM2M: child {key} forgotten after being unreachable"),
                Err(e) => tracing::error!("LwM2M: forgetting child {key}: {e}"),
            }
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.config.command_timeout_s)
    }

    /// The registration and object instance `addr` is in, and the LwM2M path it names.
    fn target(&self, addr: &NodeAddr) -> Result<(Arc<Reg>, Object, LwPath), ChildFailure> {
        let (key, iid) = addr.miid.split_once('.').unwrap_or((&addr.miid, ""));
        let not_found = || ChildFailure {
            status: 404,
            message: format!("{addr}: no such child instance"),
        };
        let reg = lock(&self.regs).values().find(|r| r.key == key).cloned();
        let Some(reg) = reg else {
            return Err(match self.inventory.get(key) {
                Some(_) => ChildFailure {
                    status: 503,
                    message: format!("child {key} is not registered now"),
                },
                None => not_found(),
            });
        };
        if self
            .inventory
            .get(key)
            .is_some_and(|c| c.state != State::Online)
        {
            return Err(ChildFailure {
                status: 503,
                message: format!("child {key} is not reachable now"),
            });
        }
        let iid: u16 = iid.parse().map_err(|_| not_found())?;
        let object = reg
            .instances
            .iter()
            .find(|(o, i)| o.urn == addr.moid && *i == iid)
            .map(|(o, _)| o.clone())
            .ok_or_else(not_found)?;
        let mut path = LwPath::instance(object.id, iid).map_err(|_| not_found())?;
        for seg in addr.path.split('/').filter(|s| !s.is_empty()) {
            let id: u16 = seg.parse().map_err(|_| not_found())?;
            path = path.child(id).map_err(|_| not_found())?;
        }
        Ok((reg, object, path))
    }

    /// Writes `node` at `addr` on its child, in the format the child reads in: LwM2M
    /// Write-Replace of the resource (or resource instance) the address names, or
    /// Write-Partial-Update of an instance root with the resources `node` names; the answer
    /// due by `until` and at most `command_timeout_s` from now.
    pub async fn write(
        &self,
        addr: NodeAddr,
        node: Node,
        until: Instant,
    ) -> Result<(), ChildFailure> {
        let (reg, object, path) = self.target(&addr)?;
        let kind_of = |rid: u16| object.resource(rid).map_or(Kind::String, |r| r.kind);
        let mut entries = Vec::new();
        let method = match (path.rid(), node) {
            // An instance root: Write-Partial-Update of the resources the data names.
            (None, Node::Interior(resources)) => {
                for (name, node) in resources {
                    let at = name
                        .parse::<u16>()
                        .ok()
                        .and_then(|rid| path.child(rid).ok())
                        .ok_or_else(|| ChildFailure {
                            status: 404,
                            message: format!("{addr}: {name} is no resource id"),
                        })?;
                    entries_of(
                        at,
                        node,
                        kind_of(at.rid().unwrap_or_default()),
                        &mut entries,
                    );
                }
                RequestType::Post
            }
            (Some(rid), node) => {
                entries_of(path, node, kind_of(rid), &mut entries);
                RequestType::Put
            }
            (None, Node::Leaf(_)) => {
                return Err(ChildFailure {
                    status: 400,
                    message: format!("{addr}: an instance root takes resources, not a value"),
                });
            }
        };
        let senml = *lock(&reg.senml);
        let payload = if senml {
            senml::encode(&entries)
        } else {
            tlv::encode(&entries)
        }
        .map_err(|e| ChildFailure {
            status: 400,
            message: format!("{addr}: {e}"),
        })?;
        let mut put = request(method, path);
        set_uint(
            &mut put,
            CoapOption::ContentFormat,
            if senml {
                senml::CONTENT_FORMAT
            } else {
                tlv::CONTENT_FORMAT
            },
        );
        put.payload = payload;
        let _turn = reg.turn.lock().await;
        let answer = self.send(&reg, put, until.min(self.deadline())).await?;
        match answer.header.code {
            MessageClass::Response(ResponseType::Changed | ResponseType::Created) => Ok(()),
            other => Err(failure_of(&reg.key, other)),
        }
    }

    /// Executes the resource at `addr` on its child (LwM2M Execute, no arguments).
    pub async fn exec(&self, addr: NodeAddr, until: Instant) -> Result<(), ChildFailure> {
        let (reg, _, path) = self.target(&addr)?;
        let post = request(RequestType::Post, path);
        let _turn = reg.turn.lock().await;
        let answer = self.send(&reg, post, until.min(self.deadline())).await?;
        match answer.header.code {
            MessageClass::Response(ResponseType::Changed | ResponseType::Content) => Ok(()),
            other => Err(failure_of(&reg.key, other)),
        }
    }
}

/// The write entries for `node` at `at` (a resource, or a multiple resource's instances)
/// of type `kind`.
fn entries_of(at: LwPath, node: Node, kind: Kind, out: &mut Vec<(LwPath, Value, Kind)>) {
    match node {
        Node::Leaf(value) => out.push((at, value, kind)),
        Node::Interior(instances) => {
            for (name, child) in instances {
                if let (Ok(riid), Node::Leaf(value)) = (name.parse::<u16>(), child)
                    && let Ok(p) = at.child(riid)
                {
                    out.push((p, value, kind));
                }
            }
        }
    }
}

/// A DM status for a child's CoAP answer (docs/gateway.md §4.3).
fn failure_of(key: &str, code: MessageClass) -> ChildFailure {
    let status = match code {
        MessageClass::Response(ResponseType::BadRequest) => 400,
        MessageClass::Response(ResponseType::Unauthorized | ResponseType::Forbidden) => 403,
        MessageClass::Response(ResponseType::NotFound) => 404,
        MessageClass::Response(ResponseType::MethodNotAllowed) => 405,
        MessageClass::Response(ResponseType::NotAcceptable) => 406,
        MessageClass::Response(ResponseType::RequestEntityTooLarge) => 413,
        MessageClass::Response(ResponseType::UnsupportedContentFormat) => 415,
        _ => 500,
    };
    ChildFailure {
        status,
        message: format!("child {key} answered {code}"),
    }
}

/// The leaves a first read does not report but the mirror needs: executable resources
/// (format null, so that EXEC finds them) and write-only ones (their format's zero, so that
/// a write can address them; No-Get, never returned).
fn placeholders(object: &Object) -> BTreeMap<String, Node> {
    object
        .resources
        .iter()
        .filter(|r| !r.multiple && (r.execute || (r.write && !r.read)))
        .map(|r| {
            let value = match r.kind {
                Kind::None => Value::Null,
                Kind::String | Kind::Objlnk | Kind::Corelnk => Value::Chr(String::new()),
                Kind::Integer | Kind::Unsigned | Kind::Time => Value::Int(0),
                Kind::Float => Value::Float(0.0),
                Kind::Boolean => Value::Bool(false),
                Kind::Opaque => Value::Bin(Vec::new()),
            };
            (r.id.to_string(), Node::Leaf(value))
        })
        .collect()
}

fn request(method: RequestType, path: LwPath) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    for id in path.ids() {
        p.add_option(CoapOption::UriPath, id.to_string().into_bytes());
    }
    p
}

fn set_uint(packet: &mut Packet, option: CoapOption, value: u16) {
    let bytes = value.to_be_bytes();
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(2);
    packet.clear_option(option);
    packet.add_option(option, bytes[start..].to_vec());
}

fn get_uint(packet: &Packet, option: CoapOption) -> Option<u32> {
    let bytes = packet.get_first_option(option)?;
    if bytes.len() > 4 {
        return None;
    }
    Some(bytes.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)))
}

fn uri_path(packet: &Packet) -> Vec<String> {
    packet
        .get_option(CoapOption::UriPath)
        .map(|segs| {
            segs.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn uri_query(packet: &Packet) -> HashMap<String, String> {
    packet
        .get_option(CoapOption::UriQuery)
        .map(|qs| {
            qs.iter()
                .filter_map(|q| {
                    let q = std::str::from_utf8(q).ok()?;
                    let (k, v) = q.split_once('=').unwrap_or((q, ""));
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `lt` of a Register or Update in seconds (LwM2M's default 86400), at most
/// [`MAX_LIFETIME`].
fn lifetime(query: &HashMap<String, String>) -> Result<u64, ResponseType> {
    match query.get("lt") {
        None => Ok(86_400),
        Some(lt) => lt
            .parse::<u64>()
            .ok()
            .filter(|&s| (1..=MAX_LIFETIME).contains(&s))
            .ok_or(ResponseType::BadRequest),
    }
}

fn address(peer: SocketAddr) -> String {
    format!("coap://{peer}")
}

fn hex_id() -> String {
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        let n = inventory::now().to_be_bytes();
        b.copy_from_slice(&n[2..]);
    }
    crate::tree::value::hex(&b)
}
