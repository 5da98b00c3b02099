//! The guest end of the guest wire (docs/gateway.md §6): this omadmd, with `[subagent]
//! host_socket` set, connects to its host, says hello with its token, and shows the host
//! the instances of `[subagent] export_moids` — whole instances as `app:omadmd-host` reads
//! them (so No-Get nodes never leave), sent again whenever a change touches an exported
//! MOID, with the instances gone named. The host's calls (a write, a delete, an EXEC) run
//! through this omadmd's own authority as `app:omadmd-host`, which the export grants Read,
//! Write and Exec on the exported instances; the guest's status goes back. A lost
//! connection is made again, waiting longer each time up to [`RETRY_MAX`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::host::PING;
use super::wire::{self, Frame, Op, WireError};
use crate::authority::{AccessError, Authority, Principal, Rights};
use crate::config::{NEVER_EXPORTED, SubagentConfig};
use crate::session::Tasks;
use crate::session::exec::ExecHandlers;
use crate::store::{self, Change, Lane};
use crate::tree::json::MoItem;
use crate::tree::uri::{ClientUri, NodeAddr};

/// The principal the host's calls run as on the guest.
pub const HOST_PRINCIPAL: &str = "app:omadmd-host";
/// Longest wait between two attempts to reach the host.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long the host has to welcome a hello.
const WELCOME_WAIT: Duration = Duration::from_secs(10);
/// Longest a host's EXEC may run on the guest.
const EXEC_SECONDS: u64 = 120;

/// Tells the guest end that exported MOs changed; fed by the daemon's change observer.
#[derive(Debug)]
pub struct Changes {
    moids: Vec<String>,
    changed: Notify,
}

impl Changes {
    /// Changes of the instances of `config`'s exported MOIDs.
    pub fn new(config: &SubagentConfig) -> Arc<Changes> {
        Arc::new(Changes {
            moids: exported(config),
            changed: Notify::new(),
        })
    }

    /// Notes `changes` (committed); the guest end syncs once for any number of them.
    pub fn offer(&self, changes: &[Change]) {
        if changes.iter().any(|c| self.moids.contains(&c.addr.moid)) {
            self.changed.notify_one();
        }
    }
}

/// What the guest end works with.
pub struct Guest {
    config: SubagentConfig,
    frame_bytes: usize,
    auth: Arc<Authority>,
    exec: ExecHandlers,
    dev_id: String,
    changes: Arc<Changes>,
}

/// Why a connection to the host ended.
#[derive(Debug, thiserror::Error)]
enum GuestError {
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("reading the token file: {0}")]
    Token(std::io::Error),
    #[error("the host did not welcome the hello (a wrong token or uid?): {0}")]
    NotWelcomed(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("reading the exported instances: {0}")]
    Read(String),
    #[error("two pings went unanswered")]
    Silent,
}

impl Guest {
    /// The guest end for `config` (whose `host_socket` is set), running calls through `auth`
    /// and `exec`, told of changes by `changes`.
    pub fn new(
        config: SubagentConfig,
        frame_bytes: usize,
        auth: Arc<Authority>,
        exec: ExecHandlers,
        dev_id: String,
        changes: Arc<Changes>,
    ) -> Arc<Guest> {
        Arc::new(Guest {
            config,
            frame_bytes,
            auth,
            exec,
            dev_id,
            changes,
        })
    }

    /// Keeps a connection to the host until `tasks` stop.
    pub async fn run(self: Arc<Self>, tasks: Tasks) {
        let Some(socket) = self.config.host_socket.clone() else {
            return;
        };
        let mut wait = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            tokio::select! {
                () = tasks.stopped() => return,
                ended = self.clone().connection(&socket, &tasks) => match ended {
                    Ok(()) => return,
                    Err(e) => tracing::warn!("sub-agent: host {}: {e}", socket.display()),
                },
            }
            if started.elapsed() > RETRY_MAX {
                wait = Duration::from_secs(1);
            }
            tokio::select! {
                () = tasks.stopped() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// One connection: hello, welcome, a full sync, then syncs on changes and the host's
    /// calls. `Ok` only when the daemon stops.
    async fn connection(
        self: Arc<Self>,
        socket: &std::path::Path,
        tasks: &Tasks,
    ) -> Result<(), GuestError> {
        let token = read_token(&self.config.token_file)
            .await
            .map_err(GuestError::Token)?;
        let stream = UnixStream::connect(socket)
            .await
            .map_err(GuestError::Connect)?;
        let (mut reader, writer) = stream.into_split();
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let auth = self.auth.clone();
        let seq = store::offload(Lane::Background, move || auth.last_seq())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let hello = Frame::Hello {
            v: wire::VERSION,
            token: token.trim().to_owned(),
            devid: self.dev_id.clone(),
            seq,
        };
        self.send(&writer, &hello).await?;
        match tokio::time::timeout(WELCOME_WAIT, wire::read(&mut reader, self.frame_bytes)).await {
            Ok(Ok(Frame::Welcome { .. })) => {}
            Ok(Ok(other)) => return Err(GuestError::NotWelcomed(format!("{other:?}"))),
            Ok(Err(e)) => return Err(GuestError::NotWelcomed(e.to_string())),
            Err(_) => return Err(GuestError::NotWelcomed("no answer in time".into())),
        }
        tracing::info!("sub-agent: connected to the host at {}", socket.display());
        let mut sent = BTreeMap::new();
        self.sync(&writer, &mut sent, true).await?;
        let (reading, mut frames) = wire::frames(reader, self.frame_bytes);
        let mut ping = tokio::time::interval_at(Instant::now() + PING, PING);
        let mut unanswered = 0u32;
        let ended = loop {
            tokio::select! {
                () = tasks.stopped() => break Ok(()),
                () = self.changes.changed.notified() => {
                    if let Err(e) = self.sync(&writer, &mut sent, false).await {
                        break Err(e);
                    }
                }
                _ = ping.tick() => {
                    if unanswered >= 2 {
                        break Err(GuestError::Silent);
                    }
                    unanswered += 1;
                    if let Err(e) = self.send(&writer, &Frame::Ping).await {
                        break Err(e);
                    }
                }
                got = frames.recv() => {
                    let frame = match got {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => break Err(e.into()),
                        None => break Err(WireError::Closed.into()),
                    };
                    unanswered = 0;
                    match frame {
                        Frame::Call { id, op, uri, items } => {
                            let (guest, writer) = (self.clone(), writer.clone());
                            tasks.spawn(async move {
                                let (sc, result) = guest.call(op, &uri, items).await;
                                let reply = Frame::Reply { id, sc, result };
                                if let Err(e) = guest.send(&writer, &reply).await {
                                    tracing::warn!("sub-agent: answering call {id}: {e}");
                                }
                            });
                        }
                        Frame::Ping => {
                            if let Err(e) = self.send(&writer, &Frame::Pong).await {
                                break Err(e);
                            }
                        }
                        Frame::Pong | Frame::Welcome { .. } => {}
                        other => tracing::warn!("sub-agent: the host sent {other:?}, which only a guest sends: ignored"),
                    }
                }
            }
        };
        reading.abort();
        ended
    }

    async fn send(
        &self,
        writer: &tokio::sync::Mutex<OwnedWriteHalf>,
        frame: &Frame,
    ) -> Result<(), GuestError> {
        let mut writer = writer.lock().await;
        Ok(wire::write(&mut *writer, frame, self.frame_bytes).await?)
    }

    /// Sends the exported instances that differ from what `sent` says the host has (all
    /// of them, `full`), and those gone; `sent` follows.
    async fn sync(
        &self,
        writer: &tokio::sync::Mutex<OwnedWriteHalf>,
        sent: &mut BTreeMap<String, MoItem>,
        full: bool,
    ) -> Result<(), GuestError> {
        let (auth, moids) = (self.auth.clone(), exported(&self.config));
        let read = store::offload(Lane::Background, move || {
            let seq = auth.last_seq()?;
            Ok::<_, AccessError>((seq, snapshot(&auth, &moids)?))
        })
        .await;
        let (seq, now) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(GuestError::Read(e.to_string())),
            Err(e) => return Err(GuestError::Read(e.to_string())),
        };
        let items: Vec<MoItem> = now
            .iter()
            .filter(|(uri, item)| full || sent.get(*uri) != Some(*item))
            .map(|(_, item)| item.clone())
            .collect();
        let deleted: Vec<String> = sent
            .keys()
            .filter(|uri| !now.contains_key(*uri))
            .cloned()
            .collect();
        if !full && items.is_empty() && deleted.is_empty() {
            return Ok(());
        }
        let frame = Frame::Sync {
            seq,
            full,
            items,
            deleted,
        };
        self.send(writer, &frame).await?;
        *sent = now;
        Ok(())
    }

    /// Runs one call of the host's as [`HOST_PRINCIPAL`]: the DM status and an EXEC's
    /// result.
    async fn call(&self, op: Op, uri: &str, items: Vec<MoItem>) -> (u16, String) {
        let exported = ClientUri::parse(uri)
            .is_ok_and(|u| exported(&self.config).iter().any(|m| m == u.moid.as_str()));
        if !exported {
            return (404, format!("{uri}: not exported"));
        }
        let (auth, text) = (self.auth.clone(), uri.to_owned());
        let who = host_principal();
        let done = store::offload(Lane::Background, move || {
            let target = ClientUri::parse(&text)?;
            match op {
                Op::Put => auth
                    .import_items(&who, &items, Some(&target), &|_| false)
                    .map(|_| None),
                Op::Delete => auth.delete(&who, &target).map(|_| None),
                Op::Exec => auth.exec_target(&who, &target).map(Some),
            }
        })
        .await;
        let exec_at: Option<NodeAddr> = match done {
            Ok(Ok(at)) => at,
            Ok(Err(e)) => return (e.status(), e.to_string()),
            Err(e) => return (500, e.to_string()),
        };
        let Some(addr) = exec_at else {
            return (200, String::new());
        };
        let Some(handler) = self.exec.handler(&addr) else {
            return (501, format!("{addr}: no EXEC handler"));
        };
        let until = Instant::now() + Duration::from_secs(EXEC_SECONDS);
        let result = handler.run(&addr, "omadmd-host", "", until).await;
        (result.status, result.output)
    }
}

/// The exported MOIDs of `config`, never those a guest keeps to itself.
fn exported(config: &SubagentConfig) -> Vec<String> {
    config
        .export_moids
        .iter()
        .map(|m| m.as_str().to_owned())
        .filter(|m| !NEVER_EXPORTED.contains(&m.as_str()))
        .collect()
}

/// The rights the export grants [`HOST_PRINCIPAL`] on each exported instance.
fn host_rights() -> Rights {
    Rights::READ.union(Rights::WRITE).union(Rights::EXEC)
}

fn host_principal() -> Principal {
    Principal::App(HOST_PRINCIPAL["app:".len()..].to_owned())
}

/// Every instance of `moids` as [`HOST_PRINCIPAL`] reads it, by its root's ClientURI, each
/// granted Read, Write and Exec first where it lacks them (blocking).
fn snapshot(auth: &Authority, moids: &[String]) -> Result<BTreeMap<String, MoItem>, AccessError> {
    let who = host_principal();
    let mut out = BTreeMap::new();
    for moid in moids {
        for miid in auth.instances_of(moid)? {
            let root = NodeAddr::root(moid, &miid).to_string();
            let granted = auth
                .list_grants(&Principal::Admin, &root)?
                .iter()
                .any(|(p, r)| p == HOST_PRINCIPAL && *r == host_rights());
            if !granted {
                auth.grant(&Principal::Admin, &root, HOST_PRINCIPAL, host_rights())?;
            }
            let json = match auth.get_json(&who, &root) {
                Ok(json) => json,
                Err(AccessError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let items: Vec<MoItem> = serde_json::from_slice(&json)
                .map_err(|e| AccessError::InvalidValue(format!("{root}: {e}")))?;
            for item in items {
                out.insert(item.client_uri.clone(), item);
            }
        }
    }
    Ok(out)
}

/// The host's token from `path` (one line; a file longer than a few of them is read no
/// further, and the hello it makes is refused).
async fn read_token(path: &std::path::Path) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt as _;
    let mut text = String::new();
    tokio::fs::File::open(path)
        .await?
        .take(8 * wire::TOKEN_BYTES as u64)
        .read_to_string(&mut text)
        .await?;
    Ok(text)
}
