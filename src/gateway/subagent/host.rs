//! The host end of the guest wire (docs/gateway.md §6): one Unix socket per configured
//! guest (`[gateway.guests.<name>]`), a connection accepted only from the configured uid
//! (`SO_PEERCRED`) with the guest's token (compared in constant time) in its hello; the
//! guest's syncs mirrored as its instances (`<key>.<miid>`, written keeping each node's
//! holder, nodes and instances the guest no longer has removed); DM writes and EXECs on them
//! sent to the guest as calls, answered with its status, bounded by `[gateway]
//! command_timeout_s`. A connection that closes, or leaves two pings unanswered, makes the
//! child `unreachable`; reads go on answering from the mirror.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Frame, Op, TOKEN_BYTES, WireError};
use crate::authority::{AccessError, Rights};
use crate::config::{GatewayConfig, NEVER_EXPORTED};
use crate::gateway::inventory::{self, Child, Inventory, Protocol, Reason, State};
use crate::gateway::{lock, offload};
use crate::session::Tasks;
use crate::session::children::ChildFailure;
use crate::tree::json::{MoItem, node_from_json};
use crate::tree::node::Node;
use crate::tree::uri::{ClientUri, InstanceSel, NodeAddr};

/// How long a new connection has to say hello.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// How often each side pings; two unanswered pings close the connection.
pub const PING: Duration = Duration::from_secs(30);

/// Why the host end cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("[gateway.guests.{name}] socket {path}: {source}")]
    Socket {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[gateway.guests.{name}] token_file {path}: {source}")]
    Token {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The configured guests and their connections.
pub struct Guests {
    inventory: Arc<Inventory>,
    frame_bytes: usize,
    command_timeout: Duration,
    grants: Vec<(String, Rights)>,
    /// By child key.
    guests: BTreeMap<String, Arc<Guest>>,
}

/// One configured guest.
struct Guest {
    name: String,
    key: String,
    uid: u32,
    token: String,
    socket: PathBuf,
    /// The accepted connection, if any.
    conn: Mutex<Option<Arc<Conn>>>,
}

/// One accepted connection.
struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Calls waiting for their reply, by id.
    pending: Mutex<HashMap<u64, oneshot::Sender<(u16, String)>>>,
    next_id: AtomicU64,
    /// Cancelled when a newer connection of the guest replaces this one.
    replaced: CancellationToken,
}

impl std::fmt::Debug for Guests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guests")
            .field("guests", &self.guests.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Guests {
    /// Reads or writes each guest's token, binds its socket and serves it until `tasks`
    /// stop. Children of protocol `omadmd` that no configured guest names are detached
    /// (`removed`).
    pub async fn start(
        config: &GatewayConfig,
        inventory: Arc<Inventory>,
        tasks: &Tasks,
    ) -> Result<Arc<Guests>, HostError> {
        // Checked when the configuration was read: never an error here.
        let grants = config.grant_rights().unwrap_or_default();
        let gone: Vec<String> = inventory
            .list()
            .into_iter()
            .filter(|c| c.protocol == Protocol::Omadmd && !config.guests.contains_key(&c.id))
            .map(|c| c.key)
            .collect();
        for key in gone {
            let inv = inventory.clone();
            let k = key.clone();
            match offload(move || inv.detach(&k, Reason::Removed)).await {
                Ok(()) => tracing::info!("guest child {key} is no longer configured: detached"),
                Err(e) => tracing::error!("detaching guest child {key}: {e}"),
            }
        }
        let mut guests = BTreeMap::new();
        let mut listeners = Vec::new();
        for (name, g) in &config.guests {
            let token_path = g.token_path(name);
            let read = token_path.clone();
            let token = tokio::task::spawn_blocking(move || token(&read))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                .map_err(|source| HostError::Token {
                    name: name.clone(),
                    path: token_path,
                    source,
                })?;
            let socket = g.socket_path(name);
            let listener = listen(&socket).map_err(|source| HostError::Socket {
                name: name.clone(),
                path: socket.clone(),
                source,
            })?;
            tracing::info!(
                "guest {name}: listening on {} for uid {}",
                socket.display(),
                g.uid
            );
            let key = inventory.key_for(Protocol::Omadmd, name);
            let guest = Arc::new(Guest {
                name: name.clone(),
                key: key.clone(),
                uid: g.uid,
                token,
                socket,
                conn: Mutex::default(),
            });
            listeners.push((guest.clone(), listener));
            guests.insert(key, guest);
        }
        let host = Arc::new(Guests {
            inventory,
            frame_bytes: config.guest_frame_bytes,
            command_timeout: Duration::from_secs(config.command_timeout_s),
            grants,
            guests,
        });
        for (guest, listener) in listeners {
            let (host, stop) = (host.clone(), tasks.clone());
            tasks.spawn(async move { host.accept(guest, listener, stop).await });
        }
        Ok(host)
    }

    async fn accept(self: Arc<Self>, guest: Arc<Guest>, listener: UnixListener, tasks: Tasks) {
        loop {
            let stream = tokio::select! {
                () = tasks.stopped() => return,
                got = listener.accept() => match got {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("guest {}: accepting a connection: {e}", guest.name);
                        continue;
                    }
                },
            };
            let (host, guest, stop) = (self.clone(), guest.clone(), tasks.clone());
            tasks.spawn(async move { host.serve(guest, stream, stop).await });
        }
    }

    /// One connection: checked (uid, hello, token), then served until it closes, is
    /// replaced, misses two pings or the daemon stops.
    async fn serve(self: Arc<Self>, guest: Arc<Guest>, stream: UnixStream, tasks: Tasks) {
        let name = &guest.name;
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == guest.uid => {}
            Ok(cred) => {
                tracing::warn!(
                    "guest {name}: refused a connection from uid {} (configured uid {})",
                    cred.uid(),
                    guest.uid
                );
                return;
            }
            Err(e) => {
                tracing::warn!("guest {name}: refused a connection whose peer is unknown: {e}");
                return;
            }
        }
        let (mut reader, writer) = stream.into_split();
        let hello = tokio::time::timeout(HELLO_WAIT, wire::read(&mut reader, self.frame_bytes));
        let devid = match hello.await {
            Ok(Ok(Frame::Hello {
                v, token, devid, ..
            })) if v == wire::VERSION && wire::same_token(&token, &guest.token) => devid,
            Ok(Ok(Frame::Hello { v, .. })) if v != wire::VERSION => {
                tracing::warn!("guest {name}: refused a hello of version {v}");
                return;
            }
            Ok(Ok(Frame::Hello { .. })) => {
                tracing::warn!("guest {name}: refused a connection with a wrong token");
                return;
            }
            Ok(Ok(_)) => {
                tracing::warn!("guest {name}: refused a connection that did not begin with hello");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!("guest {name}: refused a connection: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!("guest {name}: refused a connection that said no hello in time");
                return;
            }
        };
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(writer),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            replaced: CancellationToken::new(),
        });
        if let Some(old) = lock(&guest.conn).replace(conn.clone()) {
            old.replaced.cancel();
        }
        tracing::info!(
            "guest {name} connected (DevID {devid:?}) as child {}",
            guest.key
        );
        let previous = self.inventory.get(&guest.key);
        let child = Child {
            key: guest.key.clone(),
            id: guest.name.clone(),
            protocol: Protocol::Omadmd,
            address: format!("unix:{}", guest.socket.display()),
            state: State::Online,
            last_seen: inventory::now(),
            mos: previous.map(|p| p.mos).unwrap_or_default(),
            unreachable_since: None,
        };
        let inv = self.inventory.clone();
        if let Err(e) = offload(move || inv.attach(child)).await {
            tracing::error!("guest {name}: cannot attach: {e}");
            lock(&guest.conn).take();
            return;
        }
        let why = match self.send(&conn, &Frame::Welcome { since: 0 }).await {
            Ok(()) => self.run(&guest, &conn, reader, &tasks).await,
            Err(e) => e.to_string(),
        };
        let current = {
            let mut slot = lock(&guest.conn);
            let current = slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn));
            if current {
                slot.take();
            }
            current
        };
        // Calls waiting on this connection get 503 (their senders drop).
        lock(&conn.pending).clear();
        if current {
            tracing::warn!("guest {name}: connection closed: {why}");
            let (inv, key) = (self.inventory.clone(), guest.key.clone());
            if let Err(e) = offload(move || inv.set_state(&key, State::Unreachable)).await {
                tracing::error!("guest {name}: {e}");
            }
        } else {
            tracing::info!("guest {name}: an older connection ended ({why})");
        }
    }

    /// Serves an accepted connection; returns why it ended.
    async fn run(
        &self,
        guest: &Guest,
        conn: &Conn,
        reader: tokio::net::unix::OwnedReadHalf,
        tasks: &Tasks,
    ) -> String {
        let (reading, mut frames) = wire::frames(reader, self.frame_bytes);
        let mut ping = tokio::time::interval_at(Instant::now() + PING, PING);
        let mut unanswered = 0u32;
        let why = loop {
            tokio::select! {
                () = tasks.stopped() => break "the daemon stops".to_owned(),
                () = conn.replaced.cancelled() => break "a newer connection replaced it".to_owned(),
                _ = ping.tick() => {
                    if unanswered >= 2 {
                        break "two pings went unanswered".to_owned();
                    }
                    unanswered += 1;
                    if let Err(e) = self.send(conn, &Frame::Ping).await {
                        break e.to_string();
                    }
                }
                got = frames.recv() => {
                    let frame = match got {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => break e.to_string(),
                        None => break WireError::Closed.to_string(),
                    };
                    unanswered = 0;
                    self.touch(guest).await;
                    match frame {
                        Frame::Sync { full, items, deleted, .. } => self.sync(guest, full, items, deleted).await,
                        Frame::Reply { id, sc, result } => {
                            if let Some(waiting) = lock(&conn.pending).remove(&id) {
                                let _ = waiting.send((sc, result));
                            }
                        }
                        Frame::Ping => {
                            if let Err(e) = self.send(conn, &Frame::Pong).await {
                                break e.to_string();
                            }
                        }
                        Frame::Pong => {}
                        other => break format!("the guest sent {other:?}, which only a host sends"),
                    }
                }
            }
        };
        reading.abort();
        why
    }

    async fn send(&self, conn: &Conn, frame: &Frame) -> Result<(), WireError> {
        let mut writer = conn.writer.lock().await;
        wire::write(&mut *writer, frame, self.frame_bytes).await
    }

    /// A frame from `guest`: it is online and was seen now.
    async fn touch(&self, guest: &Guest) {
        let (inv, key) = (self.inventory.clone(), guest.key.clone());
        let done = offload(move || {
            inv.set_state(&key, State::Online)?;
            inv.seen(&key)
        })
        .await;
        if let Err(e) = done {
            tracing::error!("guest {}: {e}", guest.name);
        }
    }

    /// Writes a sync into the mirror: each item a whole instance, `deleted` instance roots
    /// gone, and with `full` every mirrored instance `items` leaves out gone too.
    async fn sync(&self, guest: &Guest, full: bool, items: Vec<MoItem>, deleted: Vec<String>) {
        let (inv, key, grants) = (
            self.inventory.clone(),
            guest.key.clone(),
            self.grants.clone(),
        );
        let done = offload(move || mirror(&inv, &key, &grants, full, &items, &deleted)).await;
        if let Err(e) = done {
            tracing::error!("guest {}: mirroring its sync: {e}", guest.name);
        }
    }

    /// The guest whose instance `addr` is in, and its connection when it is online.
    fn conn(&self, addr: &NodeAddr) -> Result<(Arc<Guest>, Arc<Conn>), ChildFailure> {
        let key = crate::gateway::route::key_of(addr);
        let guest = self.guests.get(key).cloned().ok_or_else(|| ChildFailure {
            status: 404,
            message: format!("{addr}: no such guest"),
        })?;
        let conn = lock(&guest.conn).clone();
        match conn {
            Some(conn)
                if self
                    .inventory
                    .get(key)
                    .is_some_and(|c| c.state == State::Online) =>
            {
                Ok((guest, conn))
            }
            _ => Err(ChildFailure {
                status: 503,
                message: format!("guest {} is not connected now", guest.name),
            }),
        }
    }

    /// Asks the guest to write `node` at `addr` (a leaf or interior node below its instance
    /// root), as the guest's own principal `app:omadmd-host`.
    pub async fn write(
        &self,
        addr: NodeAddr,
        node: Node,
        until: Instant,
    ) -> Result<(), ChildFailure> {
        let Some(name) = addr.path.rsplit('/').next().filter(|n| !n.is_empty()) else {
            return Err(ChildFailure {
                status: 405,
                message: format!(
                    "{addr}: a guest's instance is written below its root (name a node in the ClientURI)"
                ),
            });
        };
        let uri = guest_uri(&addr);
        let item = MoItem::new(uri.clone(), name, &node);
        self.call(&addr, Op::Put, uri, vec![item], until)
            .await
            .map(|_| ())
    }

    /// Asks the guest to execute the node at `addr`.
    pub async fn exec(&self, addr: NodeAddr, until: Instant) -> Result<(), ChildFailure> {
        let uri = guest_uri(&addr);
        self.call(&addr, Op::Exec, uri, Vec::new(), until)
            .await
            .map(|_| ())
    }

    /// Asks the guest to delete the node at `addr`.
    pub async fn delete(&self, addr: NodeAddr, until: Instant) -> Result<(), ChildFailure> {
        let uri = guest_uri(&addr);
        self.call(&addr, Op::Delete, uri, Vec::new(), until)
            .await
            .map(|_| ())
    }

    async fn call(
        &self,
        addr: &NodeAddr,
        op: Op,
        uri: String,
        items: Vec<MoItem>,
        until: Instant,
    ) -> Result<String, ChildFailure> {
        let (guest, conn) = self.conn(addr)?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(id, tx);
        let frame = Frame::Call { id, op, uri, items };
        if let Err(e) = self.send(&conn, &frame).await {
            lock(&conn.pending).remove(&id);
            let status = if matches!(e, WireError::TooLarge { .. }) {
                413
            } else {
                503
            };
            return Err(ChildFailure {
                status,
                message: format!("guest {}: {e}", guest.name),
            });
        }
        let until = until.min(Instant::now() + self.command_timeout);
        match tokio::time::timeout_at(until, rx).await {
            Ok(Ok((200, result))) => Ok(result),
            Ok(Ok((sc, result))) => Err(ChildFailure {
                status: sc,
                message: format!("guest {} answered {sc}: {result}", guest.name),
            }),
            Ok(Err(_)) => Err(ChildFailure {
                status: 503,
                message: format!("guest {}: the connection closed mid-command", guest.name),
            }),
            Err(_) => {
                lock(&conn.pending).remove(&id);
                let (inv, key) = (self.inventory.clone(), guest.key.clone());
                if let Err(e) = offload(move || inv.set_state(&key, State::Unreachable)).await {
                    tracing::error!("guest {}: {e}", guest.name);
                }
                Err(ChildFailure {
                    status: 504,
                    message: format!("guest {} did not answer in time", guest.name),
                })
            }
        }
    }
}

/// Writes a guest's sync into the mirror of child `key` (blocking).
fn mirror(
    inv: &Inventory,
    key: &str,
    grants: &[(String, Rights)],
    full: bool,
    items: &[MoItem],
    deleted: &[String],
) -> Result<(), AccessError> {
    let auth = inv.authority();
    let types = auth.types();
    let mut kept = Vec::new();
    for item in items {
        let (moid, miid) = instance_of(&item.client_uri)?;
        if NEVER_EXPORTED.contains(&moid.as_str()) {
            tracing::warn!("guest child {key} sent {moid}, which a guest never exports: ignored");
            continue;
        }
        let (name, json) = item
            .single()
            .map_err(|e| AccessError::InvalidValue(e.to_string()))?;
        let def = types.get(&moid).map(|t| &t.root);
        let node = node_from_json(json, def, name)
            .map_err(|e| AccessError::InvalidValue(e.to_string()))?;
        let miid = format!("{key}.{miid}");
        let root = NodeAddr::root(&moid, &miid).to_string();
        inv.room_for(key, &root)?;
        auth.mirror_whole(&moid, &miid, name, &node, grants)?;
        inv.add_mo(key, &root)?;
        kept.push(root);
    }
    let mut gone: Vec<(String, String)> = Vec::new();
    for uri in deleted {
        let (moid, miid) = instance_of(uri)?;
        gone.push((moid, format!("{key}.{miid}")));
    }
    if full && let Some(child) = inv.get(key) {
        for root in child.mos.iter().filter(|m| !kept.contains(m)) {
            let parsed = ClientUri::parse(root)?;
            if let InstanceSel::Miid(miid) = parsed.instance {
                gone.push((parsed.moid.as_str().to_owned(), miid));
            }
        }
    }
    for (moid, miid) in gone {
        auth.withdraw(&moid, |m| m != miid)?;
        inv.remove_mo(key, &NodeAddr::root(&moid, &miid).to_string())?;
    }
    Ok(())
}

/// The MOID and MIID of an instance root's ClientURI as a guest names it.
fn instance_of(uri: &str) -> Result<(String, String), AccessError> {
    let parsed = ClientUri::parse(uri)?;
    match (&parsed.instance, parsed.path.is_empty()) {
        (InstanceSel::Miid(miid), true) => Ok((parsed.moid.as_str().to_owned(), miid.clone())),
        _ => Err(AccessError::InvalidUri(format!(
            "{uri}: a guest names an instance root by its MIID"
        ))),
    }
}

/// `addr` as the guest names it: its MIID without `<key>.`.
fn guest_uri(addr: &NodeAddr) -> String {
    let miid = addr
        .miid
        .split_once('.')
        .map_or(addr.miid.as_str(), |(_, m)| m);
    NodeAddr {
        moid: addr.moid.clone(),
        miid: miid.to_owned(),
        path: addr.path.clone(),
    }
    .to_string()
}

/// The guest's token from `path` (64 hex digits); written there, `0600`, when missing.
fn token(path: &Path) -> std::io::Result<String> {
    // A token file holds one line; more than a few of its sizes is not one.
    let read = std::fs::File::open(path).and_then(|file| {
        let mut text = String::new();
        file.take(8 * TOKEN_BYTES as u64)
            .read_to_string(&mut text)?;
        Ok(text)
    });
    match read {
        Ok(text) => {
            let text = text.trim();
            if text.len() == 2 * TOKEN_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(text.to_ascii_lowercase())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not {} hex digits", 2 * TOKEN_BYTES),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; TOKEN_BYTES];
            getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
            let token = crate::tree::value::hex(&bytes);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            writeln!(file, "{token}")?;
            file.sync_all()?;
            tracing::info!("wrote a new guest token to {}", path.display());
            Ok(token)
        }
        Err(e) => Err(e),
    }
}

/// A listening socket at `path` (a socket left there by an earlier run replaced), its
/// directory `0755` and itself `0666`: who may use it is decided by its placement, the
/// peer's uid and the token (docs/gateway.md §6.1).
fn listen(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "something that is not a socket is there",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_names_instances_by_its_own_miids() {
        let addr = NodeAddr {
            moid: "urn:oma:mo:oma-dm-devinfo:1.0".into(),
            miid: "web1.0".into(),
            path: "Ext/Name".into(),
        };
        assert_eq!(guest_uri(&addr), "urn:oma:mo:oma-dm-devinfo:1.0/0/Ext/Name");
        assert_eq!(
            instance_of("urn:oma:mo:oma-dm-devinfo:1.0/0/").unwrap(),
            ("urn:oma:mo:oma-dm-devinfo:1.0".to_owned(), "0".to_owned())
        );
        assert!(instance_of("urn:oma:mo:oma-dm-devinfo:1.0/0/DevId").is_err());
        assert!(instance_of("urn:oma:mo:oma-dm-devinfo:1.0/*/").is_err());
    }

    #[test]
    fn a_token_is_written_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guests/web1.token");
        let first = token(&path).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(token(&path).unwrap(), first);
        std::fs::write(&path, "short\n").unwrap();
        assert!(token(&path).is_err());
        std::fs::write(&path, format!("{first}\n").repeat(1000)).unwrap();
        assert!(
            token(&path).is_err(),
            "a file of many tokens is not a token"
        );
    }

    #[tokio::test]
    async fn a_socket_is_made_anew_and_never_over_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web1/host.sock");
        drop(listen(&path).unwrap());
        let again = listen(&path).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(again);
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(listen(&file).is_err());
    }
}
