//! [`Relay`]: a TCP relay on loopback in front of a server, counting what it carries each
//! way — the bytes a client and the server exchange on the wire (TCP payload: TLS records,
//! HTTP and all) — and the connections, for benches and tests. A client connects to
//! [`Relay::addr`] instead of the server; the relay opens a connection to the server for
//! each one it accepts and copies bytes both ways until both sides have closed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::error::DevServerError;

/// What a relay has carried so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wire {
    /// Bytes from the clients to the server.
    pub up: u64,
    /// Bytes from the server to the clients.
    pub down: u64,
    /// Connections accepted.
    pub connections: u64,
}

impl Wire {
    /// Bytes both ways.
    pub fn total(&self) -> u64 {
        self.up + self.down
    }

    /// What was carried after `earlier` (a reading of the same relay).
    pub fn since(&self, earlier: Wire) -> Wire {
        Wire {
            up: self.up - earlier.up,
            down: self.down - earlier.down,
            connections: self.connections - earlier.connections,
        }
    }
}

/// A running relay; dropping it closes the listening socket and every connection.
pub struct Relay {
    addr: SocketAddr,
    counts: Arc<Counts>,
    open: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
}

impl Relay {
    /// Listens on a free port of the loopback address of `server`'s family and relays each
    /// connection to `server`. Runs on the current tokio runtime.
    pub async fn start(server: SocketAddr) -> Result<Relay, DevServerError> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
        };
        let listen_err = |source| DevServerError::Listen {
            addr: local,
            source,
        };
        let listener = TcpListener::bind(local).await.map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;
        let counts = Arc::new(Counts::default());
        let (open_tx, open) = watch::channel(0);
        let task = tokio::spawn(accept_loop(listener, server, counts.clone(), open_tx));
        Ok(Relay {
            addr,
            counts,
            open,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What was carried so far.
    pub fn wire(&self) -> Wire {
        Wire {
            up: self.counts.up.load(Ordering::SeqCst),
            down: self.counts.down.load(Ordering::SeqCst),
            connections: self.counts.connections.load(Ordering::SeqCst),
        }
    }

    /// Waits until no connection is open any more (both sides of each have closed), so that
    /// [`Relay::wire`] holds everything they carried, closing messages included.
    pub async fn closed(&self) {
        let mut open = self.open.clone();
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    server: SocketAddr,
    counts: Arc<Counts>,
    open: watch::Sender<u64>,
) {
    let open = Arc::new(open);
    // Owned here: aborting this task drops the set, which aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    counts.connections.fetch_add(1, Ordering::SeqCst);
                    open.send_modify(|n| *n += 1);
                    let (counts, open) = (counts.clone(), open.clone());
                    conns.spawn(async move {
                        if let Err(e) = relay(client, server, &counts).await {
                            tracing::debug!("relay to {server}: {e}");
                        }
                        open.send_modify(|n| *n -= 1);
                    });
                }
                Err(e) => {
                    tracing::warn!("relay: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Copies both ways until both directions have ended.
async fn relay(client: TcpStream, server: SocketAddr, counts: &Counts) -> std::io::Result<()> {
    let upstream = TcpStream::connect(server).await?;
    for s in [&client, &upstream] {
        s.set_nodelay(true)?;
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = upstream.into_split();
    let (up, down) = tokio::join!(
        copy(client_read, server_write, &counts.up),
        copy(server_read, client_write, &counts.down),
    );
    up.and(down)
}

/// Copies until end of stream, then shuts the writing side down. Each chunk is counted
/// before it is passed on: whoever received it sees it counted.
async fn copy(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        counter.fetch_add(n as u64, Ordering::SeqCst);
        to.write_all(&buf[..n]).await?;
    }
}
