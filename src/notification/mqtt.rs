//! The MQTT notification channel (ARCHITECTURE.md §5): an outbound subscription to a broker,
//! the way a server reaches a device behind NAT or a firewall. For every DM account with an
//! MQTT push entry — `Push/<x>/{Type: mqtt, Addr: mqtts://host:port/<topic>}` (`mqtt://` for
//! a plain broker), with the broker's credentials in `Push/<x>/{User, Secret}` — the daemon
//! keeps a subscription to that topic; every message on it is one Package#0, handed to the
//! verifier as an [`Inbound`] with [`Via::Mqtt`].
//!
//! - **Connections**: one per (broker, user), however many accounts share it; it subscribes
//!   to all of their topics. [`Mqtt::run`] keeps the set in step with the DM accounts: a
//!   connection whose accounts' settings changed is made anew, one nobody names any more is
//!   closed.
//! - **TLS** (`mqtts://`, the project's rustls with `ring`): the broker is verified with the
//!   CA certificates in the account's `Ext/CACert`. A pinned certificate there is the DM
//!   server's own and cannot verify a broker, so then (and without `Ext/CACert`) the system
//!   roots plus `[tls] extra_ca_files` apply, as for a DM server without `Ext/CACert`.
//! - **MQTT 3.1.1**, clean session, QoS 1 subscriptions, keepalive `[notification.mqtt]
//!   keepalive_s` (60 s): a broker that stops answering is noticed within about two
//!   keepalives. A message published while the device is not connected is not kept for it.
//! - **Reconnecting**: a refused or lost connection is tried again after a wait that starts
//!   at 1–2 s and doubles up to `reconnect_max_s`, each wait with jitter (many devices that
//!   lost one broker do not all come back at once). [`Mqtt::reconnect_all`] (the device moved
//!   to another network) drops every connection and connects again at once.
//! - **State** ([`Mqtt::status`]): per SrvID with an MQTT push entry, `mqtt:connecting` until
//!   the broker granted one of the account's topics, then `mqtt:connected`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use percent_encoding::percent_decode_str;
use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, SubscribeFilterInput,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Inbound, Via};
use crate::authority::{AccessError, Authority};
use crate::session::Tasks;
use crate::store::{self, Lane};
use crate::transport::{self, ClientSettings, RetryPolicy, TransportError, Trust};
use crate::tree::builtin;
use crate::tree::node::Node;
use crate::tree::uri::NodeAddr;

/// The broker port of `mqtt://` without one.
pub const PLAIN_PORT: u16 = 1883;
/// The broker port of `mqtts://` without one.
pub const TLS_PORT: u16 = 8883;

/// Largest MQTT packet taken from a broker: a Package#0 is a few dozen bytes plus its
/// SERVER-ID; anything much larger is not one (the connection is dropped and made anew).
const MAX_PACKET_BYTES: usize = 16 * 1024;

/// Why an MQTT push entry or connection cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// `Push/<x>/Addr` is not `mqtt[s]://host[:port]/<topic>`.
    #[error("Addr {addr:?}: {reason}")]
    Addr { addr: String, reason: &'static str },
    /// The TLS settings for a broker cannot be built.
    #[error("TLS settings for {broker}: {source}")]
    Tls {
        broker: Broker,
        #[source]
        source: TransportError,
    },
    /// The connection options were refused by the MQTT client.
    #[error("connection options for {broker}: {reason}")]
    Options { broker: Broker, reason: String },
}

/// Where a broker is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Broker {
    /// `mqtts://`: TLS.
    pub tls: bool,
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Splits a push `Addr` into the broker and the topic (percent-decoded). The topic names one
/// topic: wildcards (`+`, `#`) are refused.
pub fn parse_addr(addr: &str) -> Result<(Broker, String), MqttError> {
    let err = |reason| MqttError::Addr {
        addr: addr.to_owned(),
        reason,
    };
    let scheme_end = addr
        .find("://")
        .ok_or(err("not an mqtt:// or mqtts:// URL"))?;
    let tls = match addr[..scheme_end].to_ascii_lowercase().as_str() {
        "mqtts" => true,
        "mqtt" => false,
        _ => return Err(err("not an mqtt:// or mqtts:// URL")),
    };
    let rest = &addr[scheme_end + 3..];
    let (authority, path) = rest
        .split_once('/')
        .ok_or(err("no topic: mqtts://host:port/<topic> expected"))?;
    if authority.contains('@') {
        return Err(err(
            "credentials belong in Push/<x>/User and Push/<x>/Secret, not in Addr",
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or(err("no ] after an IPv6 host"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or(err("junk after the host"))?),
                ),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(err("no broker host"));
    }
    let port = match port {
        None => {
            if tls {
                TLS_PORT
            } else {
                PLAIN_PORT
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(err("the port is not a number from 1 to 65535"))?,
    };
    let topic = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| err("the topic is not UTF-8"))?
        .into_owned();
    if topic.is_empty() {
        return Err(err("no topic: mqtts://host:port/<topic> expected"));
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(err(
            "the topic holds a wildcard (+ or #) or NUL: name one topic",
        ));
    }
    Ok((
        Broker {
            tls,
            host: host.to_owned(),
            port,
        },
        topic,
    ))
}

/// One account's MQTT push entry, with what connecting needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub srv_id: String,
    pub broker: Broker,
    pub topic: String,
    /// `Push/<x>/User`.
    pub user: Option<String>,
    /// `Push/<x>/Secret`.
    pub secret: Option<String>,
    /// The account's `Ext/CACert`.
    pub ca_pem: Option<String>,
}

/// The MQTT push entries of one DM account's content; a bad entry is logged and skipped.
pub fn subscriptions_of(node: &Node) -> Vec<Subscription> {
    let text = |node: &Node, path: &str| match node.get(path) {
        Some(Node::Leaf(v)) => Some(v.to_text()).filter(|t| !t.is_empty()),
        _ => None,
    };
    let (Some(srv_id), Some(Node::Interior(entries))) = (text(node, "SrvID"), node.get("Push"))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, entry) in entries {
        let is_mqtt = text(entry, "Type").is_some_and(|t| t.eq_ignore_ascii_case("mqtt"));
        if !is_mqtt {
            continue;
        }
        let Some(addr) = text(entry, "Addr") else {
            tracing::warn!("DM account {srv_id}: Push/{name} has no Addr; no MQTT notifications");
            continue;
        };
        match parse_addr(&addr) {
            Ok((broker, topic)) => out.push(Subscription {
                srv_id: srv_id.clone(),
                broker,
                topic,
                user: text(entry, "User"),
                secret: text(entry, "Secret"),
                ca_pem: text(node, "Ext/CACert"),
            }),
            Err(e) => {
                tracing::warn!("DM account {srv_id}: Push/{name}: {e}; no MQTT notifications")
            }
        }
    }
    out
}

/// The MQTT push entries of every DM account.
pub fn load(auth: &Authority) -> Result<Vec<Subscription>, AccessError> {
    let mut out = Vec::new();
    for miid in auth.instances_of(builtin::DMACC)? {
        let node = auth.read_internal(&NodeAddr::root(builtin::DMACC, &miid))?;
        out.extend(subscriptions_of(&node));
    }
    Ok(out)
}

/// The channel's state for one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not (yet) subscribed: connecting, refused, or waiting to try again.
    Connecting,
    /// The broker granted a topic of the account.
    Connected,
}

impl State {
    /// As the server object's `NotificationChannel` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "mqtt:connecting",
            State::Connected => "mqtt:connected",
        }
    }
}

/// The state of every server with an MQTT push entry, by SrvID.
pub type Status = BTreeMap<String, State>;

/// How the channel behaves (from `[notification.mqtt]` and `[tls]`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub keepalive_s: u16,
    /// Longest wait between attempts.
    pub reconnect_max: Duration,
    /// `[tls] extra_ca_files`.
    pub extra_ca_files: Vec<PathBuf>,
    /// The device's DevID: the MQTT client identifiers derive from it.
    pub dev_id: String,
}

/// The MQTT channel: its connections, their state, and the reconnect trigger. Cheap to clone.
#[derive(Clone)]
pub struct Mqtt {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    inbound: mpsc::Sender<Inbound>,
    tasks: Tasks,
    status: watch::Sender<Status>,
    /// Bumped by [`Mqtt::reconnect_all`]; every connection watches it.
    reconnect: watch::Sender<u64>,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    next_id: u64,
    running: BTreeMap<Key, Running>,
    /// SrvIDs with an MQTT push entry.
    planned: BTreeSet<String>,
    /// Per running connection (by id), the SrvIDs whose topics the broker granted.
    live: BTreeMap<u64, BTreeSet<String>>,
}

struct Running {
    id: u64,
    spec: Spec,
    cancel: CancellationToken,
}

/// What a connection is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    broker: Broker,
    user: Option<String>,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(user) => write!(f, "{} (user {user:?})", self.broker),
            None => write!(f, "{}", self.broker),
        }
    }
}

/// How a connection is made, and the topics it subscribes to with the servers behind each.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    secret: Option<String>,
    ca_pem: Option<String>,
    /// The account whose `Ext/CACert` and `Secret` are used.
    first: String,
    topics: BTreeMap<String, BTreeSet<String>>,
}

/// The connections `subs` need. Accounts sharing a (broker, user) share its connection; the
/// first of them (by SrvID) gives the password and trust anchors, and a differing one is
/// logged.
fn plan(mut subs: Vec<Subscription>) -> BTreeMap<Key, Spec> {
    subs.sort_by(|a, b| (&a.srv_id, &a.topic).cmp(&(&b.srv_id, &b.topic)));
    let mut out: BTreeMap<Key, Spec> = BTreeMap::new();
    for sub in subs {
        let key = Key {
            broker: sub.broker,
            user: sub.user,
        };
        let spec = out.entry(key.clone()).or_insert_with(|| Spec {
            secret: sub.secret.clone(),
            ca_pem: sub.ca_pem.clone(),
            first: sub.srv_id.clone(),
            topics: BTreeMap::new(),
        });
        if spec.secret != sub.secret || (key.broker.tls && spec.ca_pem != sub.ca_pem) {
            tracing::warn!(
                "DM accounts {} and {} share the MQTT connection to {key} but differ in its \
                 Push/<x>/Secret or Ext/CACert: {}'s are used",
                spec.first,
                sub.srv_id,
                spec.first
            );
        }
        spec.topics.entry(sub.topic).or_default().insert(sub.srv_id);
    }
    out
}

/// Why one connection ended.
struct Lost {
    /// Whether the broker had accepted it (the next wait starts short again).
    accepted: bool,
    reason: String,
}

impl Mqtt {
    /// A channel without connections yet; payloads go to `inbound`, connections are tasks of
    /// `tasks` and end when it stops.
    pub fn new(settings: Settings, inbound: mpsc::Sender<Inbound>, tasks: Tasks) -> Mqtt {
        Mqtt {
            inner: Arc::new(Inner {
                settings,
                inbound,
                tasks,
                status: watch::Sender::new(Status::new()),
                reconnect: watch::Sender::new(0),
                book: Mutex::new(Book::default()),
            }),
        }
    }

    /// The state per SrvID, as it changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    /// Drops every connection and connects again at once, without waiting out a backoff
    /// (the device moved to another network: the old connections may be dead without
    /// knowing it yet).
    pub fn reconnect_all(&self) {
        self.inner.reconnect.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Keeps the connections in step with the DM accounts: reads them now and whenever
    /// `accounts_changed` fires, until the daemon stops.
    pub async fn run(self, auth: Arc<Authority>, accounts_changed: Arc<Notify>) {
        while !self.inner.tasks.stopping() {
            let reader = auth.clone();
            match store::offload(Lane::Background, move || load(&reader)).await {
                Ok(Ok(subs)) => self.apply(subs),
                Ok(Err(e)) => tracing::error!("cannot read the DM accounts' Push entries: {e}"),
                Err(e) => tracing::error!("cannot read the DM accounts' Push entries: {e}"),
            }
            tokio::select! {
                () = accounts_changed.notified() => {}
                () = self.inner.tasks.stopped() => {}
            }
        }
    }

    /// Makes the connections those of `subs` ([`Mqtt::run`] reads them from the DM
    /// accounts): closes the ones no longer wanted or whose settings changed, and starts the
    /// missing ones.
    pub fn apply(&self, subs: Vec<Subscription>) {
        let planned: BTreeSet<String> = subs.iter().map(|s| s.srv_id.clone()).collect();
        let wanted = plan(subs);
        let mut book = self.inner.lock();
        book.planned = planned;
        let stale: Vec<Key> = book
            .running
            .iter()
            .filter(|(key, run)| wanted.get(*key) != Some(&run.spec))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(run) = book.running.remove(&key) {
                run.cancel.cancel();
                book.live.remove(&run.id);
                tracing::info!("MQTT broker {key}: connection closed (the DM accounts changed)");
            }
        }
        for (key, spec) in wanted {
            if book.running.contains_key(&key) || self.inner.tasks.stopping() {
                continue;
            }
            let id = book.next_id;
            book.next_id += 1;
            let cancel = CancellationToken::new();
            book.running.insert(
                key.clone(),
                Running {
                    id,
                    spec: spec.clone(),
                    cancel: cancel.clone(),
                },
            );
            let inner = self.inner.clone();
            self.inner
                .tasks
                .spawn(async move { inner.connection(id, key, spec, cancel).await });
        }
        self.inner.publish_status(&book);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock leaves a consistent book (every change is one
        // statement or rewritten by the next `apply`): keep using it.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Recomputes [`Status`] from the book; watchers hear of real changes only.
    fn publish_status(&self, book: &Book) {
        let status: Status = book
            .planned
            .iter()
            .map(|id| {
                let live = book.live.values().any(|s| s.contains(id));
                let state = if live {
                    State::Connected
                } else {
                    State::Connecting
                };
                (id.clone(), state)
            })
            .collect();
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    /// Records which servers connection `id` serves now (unless it was closed meanwhile).
    fn set_live(&self, id: u64, servers: BTreeSet<String>) {
        let mut book = self.lock();
        if !book.running.values().any(|r| r.id == id) {
            return;
        }
        if servers.is_empty() {
            book.live.remove(&id);
        } else {
            book.live.insert(id, servers);
        }
        self.publish_status(&book);
    }

    /// One connection's life: connect, subscribe, deliver; on loss wait (with backoff) and
    /// again, until it is cancelled or the daemon stops.
    async fn connection(&self, id: u64, key: Key, spec: Spec, cancel: CancellationToken) {
        let mut reconnect = self.reconnect.subscribe();
        let backoff = RetryPolicy {
            attempts: u32::MAX,
            base: Duration::from_secs(2),
            max: self.settings.reconnect_max.max(Duration::from_secs(1)),
        };
        let mut failures: u32 = 0;
        loop {
            let lost = tokio::select! {
                lost = self.session(id, &key, &spec) => Some(lost),
                _ = reconnect.changed() => None,
                () = cancel.cancelled() => return,
                () = self.tasks.stopped() => return,
            };
            self.set_live(id, BTreeSet::new());
            let Some(lost) = lost else {
                tracing::info!("MQTT broker {key}: reconnecting (network change)");
                failures = 0;
                continue;
            };
            failures = if lost.accepted {
                1
            } else {
                failures.saturating_add(1)
            };
            let unit = getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
            let wait = backoff.delay(failures, unit);
            tracing::warn!(
                "MQTT broker {key}: {}; trying again in {:.1} s",
                lost.reason,
                wait.as_secs_f64()
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = reconnect.changed() => {
                    tracing::info!("MQTT broker {key}: reconnecting (network change)");
                    failures = 0;
                }
                () = cancel.cancelled() => return,
                () = self.tasks.stopped() => return,
            }
        }
    }

    /// One connection to the broker, until it is lost.
    async fn session(&self, id: u64, key: &Key, spec: &Spec) -> Lost {
        let refused = |reason: String| Lost {
            accepted: false,
            reason,
        };
        let options = match self.options(key, spec).await {
            Ok(o) => o,
            Err(e) => return refused(e.to_string()),
        };
        let (client, mut events) = match AsyncClient::builder(options).try_build() {
            Ok(pair) => pair,
            Err(e) => return refused(format!("connection options: {e}")),
        };
        let mut accepted = false;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    accepted = true;
                    tracing::debug!("MQTT broker {key}: connected");
                    let filters = spec
                        .topics
                        .keys()
                        .map(|t| SubscribeFilterInput::new(t.as_str(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        return Lost {
                            accepted,
                            reason: format!("cannot subscribe: {e}"),
                        };
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let mut granted = BTreeSet::new();
                    for ((topic, servers), code) in spec.topics.iter().zip(&ack.return_codes) {
                        let names = servers.iter().cloned().collect::<Vec<_>>().join(", ");
                        match code {
                            SubscribeReasonCode::Success(_) => {
                                tracing::info!(
                                    "MQTT broker {key}: subscribed to {topic:?} for {names}"
                                );
                                granted.extend(servers.iter().cloned());
                            }
                            SubscribeReasonCode::Failure => tracing::warn!(
                                "MQTT broker {key} refused the subscription to {topic:?} (its \
                                 access rules?): no notifications for {names} through it"
                            ),
                        }
                    }
                    self.set_live(id, granted);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    self.deliver(key, publish.payload.to_vec());
                }
                Ok(_) => {}
                Err(e) => {
                    // Kept until here: dropping the client ends the event loop.
                    drop(client);
                    return Lost {
                        accepted,
                        reason: describe(&e),
                    };
                }
            }
        }
    }

    /// Hands one message to the verifier. A full queue drops it (the verifier is behind: a
    /// flood must not hold up the connection's keepalive).
    fn deliver(&self, key: &Key, payload: Vec<u8>) {
        tracing::debug!("MQTT broker {key}: a message of {} byte(s)", payload.len());
        match self.inbound.try_send(Inbound {
            payload,
            via: Via::Mqtt,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => tracing::warn!(
                "MQTT broker {key}: a notification is dropped: the verifier's queue is full"
            ),
            // The verifier is gone: the daemon is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The connection options: client identifier, keepalive, credentials, and for
    /// `mqtts://` the TLS configuration (built on a store thread: it reads the trust store).
    async fn options(&self, key: &Key, spec: &Spec) -> Result<MqttOptions, MqttError> {
        let broker = &key.broker;
        let mut options = MqttOptions::new(
            client_id(&self.settings.dev_id, key),
            (broker.host.clone(), broker.port),
        );
        options
            .set_keep_alive(self.settings.keepalive_s)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        match (&key.user, &spec.secret) {
            (Some(user), Some(secret)) => {
                options.set_credentials(user.clone(), secret.clone().into_bytes());
            }
            (Some(user), None) => {
                options.set_username(user.clone());
            }
            (None, _) => {}
        }
        if broker.tls {
            let ca_pem = spec.ca_pem.clone();
            let first = spec.first.clone();
            let extra = self.settings.extra_ca_files.clone();
            let config = store::offload(Lane::Background, move || {
                broker_tls(ca_pem.as_deref(), &first, &extra)
            })
            .await
            .map_err(|e| MqttError::Options {
                broker: broker.clone(),
                reason: format!("building the TLS settings: {e}"),
            })?
            .map_err(|source| MqttError::Tls {
                broker: broker.clone(),
                source,
            })?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        Ok(options)
    }
}

/// The TLS configuration for a broker: the CA certificates of `ca_pem` (account `srv_id`'s
/// `Ext/CACert`) when it holds CAs, else the system roots plus `extra_ca_files`.
fn broker_tls(
    ca_pem: Option<&str>,
    srv_id: &str,
    extra_ca_files: &[PathBuf],
) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let trust = match ca_pem {
        Some(pem) if transport::holds_cas(pem)? => Trust::Pem(pem.to_owned()),
        Some(_) => {
            tracing::debug!(
                "DM account {srv_id}: Ext/CACert pins the DM server's certificate, which \
                 cannot verify an MQTT broker; using the system roots and [tls] extra_ca_files"
            );
            Trust::Roots {
                extra_ca_files: extra_ca_files.to_vec(),
            }
        }
        None => Trust::Roots {
            extra_ca_files: extra_ca_files.to_vec(),
        },
    };
    transport::tls_client_config(&ClientSettings::with_trust(trust))
}

/// The MQTT client identifier of the connection for `key`: `omadmd` and 17 hex digits of a
/// digest of the DevID, broker and user — stable across restarts, distinct per device and
/// connection, and within the 23 letters and digits every broker must accept.
fn client_id(dev_id: &str, key: &Key) -> String {
    let mut hash = Sha256::new();
    for part in [
        dev_id,
        &key.broker.to_string(),
        key.user.as_deref().unwrap_or(""),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("omadmd{}", &hex[..17])
}

/// A connection failure in words, with its causes.
fn describe(e: &ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as Code;
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                Code::BadUserNamePassword => "bad user name or password (Push/<x>/User, Secret)",
                Code::NotAuthorized => "not authorized (Push/<x>/User, Secret)",
                Code::BadClientId => "client identifier refused",
                Code::ServiceUnavailable => "service unavailable",
                Code::RefusedProtocolVersion => "MQTT 3.1.1 not supported",
                Code::Success => "refused",
            };
            format!("the broker refused the connection: {why}")
        }
        e => {
            let mut text = format!("connection failed: {e}");
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let part = s.to_string();
                if !text.contains(&part) {
                    text.push_str(": ");
                    text.push_str(&part);
                }
                source = s.source();
            }
            if matches!(e, ConnectionError::Tls(_)) && text.contains("certificate") {
                text.push_str(
                    " (a broker is verified with the CA certificates in the account's \
                     Ext/CACert, else the system roots and [tls] extra_ca_files)",
                );
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::json::node_from_json;

    fn broker(tls: bool, host: &str, port: u16) -> Broker {
        Broker {
            tls,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn addresses_name_a_broker_and_one_topic() {
        let ok = |addr: &str| parse_addr(addr).unwrap();
        assert_eq!(
            ok("mqtts://broker.example:8884/omadm/dev-1"),
            (broker(true, "broker.example", 8884), "omadm/dev-1".into())
        );
        assert_eq!(ok("MQTT://h/t").0, broker(false, "h", PLAIN_PORT));
        assert_eq!(ok("mqtts://h/t").0, broker(true, "h", TLS_PORT));
        assert_eq!(ok("mqtts://[::1]:9/t").0, broker(true, "::1", 9));
        assert_eq!(ok("mqtts://[::1]/t").0.to_string(), "mqtts://[::1]:8883");
        assert_eq!(ok("mqtt://h:1/a%20b/c").1, "a b/c");
        for (bad, why) in [
            ("https://h/t", "not an mqtt"),
            ("mqtts:/h/t", "not an mqtt"),
            ("mqtts://h:8883", "no topic"),
            ("mqtts://h:8883/", "no topic"),
            ("mqtts://:8883/t", "no broker host"),
            ("mqtts://h:0/t", "port"),
            ("mqtts://h:x/t", "port"),
            ("mqtts://[::1/t", "no ]"),
            ("mqtts://[::1]x/t", "junk"),
            ("mqtts://u:p@h/t", "credentials belong"),
            ("mqtts://h/a/+/c", "wildcard"),
            ("mqtts://h/a/%23", "wildcard"),
            ("mqtts://h/%ff", "UTF-8"),
        ] {
            let e = parse_addr(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn push_entries_of_type_mqtt_are_read_with_their_credentials() {
        let node = node_from_json(
            &serde_json::json!({
                "SrvID": "s1", "SrvURI": "https://x/dm", "Ext": {"CACert": "PEM"},
                "Push": {
                    "a": {"Type": "MQTT", "Addr": "mqtts://b:1/t1", "User": "u", "Secret": "p"},
                    "b": {"Type": "udp", "Addr": "mqtts://b:1/ignored"},
                    "c": {"Type": "mqtt", "Addr": "mqtt://b/t2"},
                    "d": {"Type": "mqtt", "Addr": "mqtts://b/#"},
                    "e": {"Type": "mqtt"}}}),
            None,
            "DMAcc",
        )
        .unwrap();
        let subs = subscriptions_of(&node);
        assert_eq!(
            subs,
            [
                Subscription {
                    srv_id: "s1".into(),
                    broker: broker(true, "b", 1),
                    topic: "t1".into(),
                    user: Some("u".into()),
                    secret: Some("p".into()),
                    ca_pem: Some("PEM".into()),
                },
                Subscription {
                    srv_id: "s1".into(),
                    broker: broker(false, "b", PLAIN_PORT),
                    topic: "t2".into(),
                    user: None,
                    secret: None,
                    ca_pem: Some("PEM".into()),
                },
            ]
        );
    }

    fn sub(srv_id: &str, user: &str, topic: &str) -> Subscription {
        Subscription {
            srv_id: srv_id.into(),
            broker: broker(true, "b", 1),
            topic: topic.into(),
            user: Some(user.into()),
            secret: Some(format!("{user}-secret")),
            ca_pem: None,
        }
    }

    #[test]
    fn one_connection_per_broker_and_user() {
        let planned = plan(vec![
            sub("s2", "u", "t2"),
            sub("s1", "u", "t1"),
            sub("s3", "u", "t1"),
            sub("s4", "v", "t4"),
        ]);
        let keys: Vec<String> = planned.keys().map(Key::to_string).collect();
        assert_eq!(
            keys,
            [
                "mqtts://b:1 (user \"u\")".to_owned(),
                "mqtts://b:1 (user \"v\")".to_owned()
            ]
        );
        let shared = planned.values().next().unwrap();
        assert_eq!(shared.first, "s1");
        let topics: Vec<(&str, Vec<&str>)> = shared
            .topics
            .iter()
            .map(|(t, s)| (t.as_str(), s.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(topics, [("t1", vec!["s1", "s3"]), ("t2", vec!["s2"])]);
    }

    #[test]
    fn client_ids_are_stable_short_and_distinct() {
        let key = |user: &str| Key {
            broker: broker(true, "b", 1),
            user: Some(user.into()),
        };
        let id = client_id("IMEI:1", &key("u"));
        assert_eq!(id, client_id("IMEI:1", &key("u")));
        assert_eq!(id.len(), 23);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        assert_ne!(id, client_id("IMEI:2", &key("u")));
        assert_ne!(id, client_id("IMEI:1", &key("v")));
    }

    #[test]
    fn states_read_as_the_server_object_shows_them() {
        assert_eq!(State::Connecting.as_str(), "mqtt:connecting");
        assert_eq!(State::Connected.as_str(), "mqtt:connected");
    }
}
