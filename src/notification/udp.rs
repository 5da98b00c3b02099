//! The UDP channel (`[notification.udp] listen = "host:port"`; no socket when unset): one
//! task reads datagrams and hands each, as it came, to the verifier's queue as an
//! [`Inbound`]. A datagram is read whole (up to the 64 KiB UDP carries) so that the verifier
//! can name the size of one too large to be a Package#0. When the verifier's queue is full
//! the task waits, and the kernel drops what does not fit in the socket's buffer meanwhile.
//!
//! UDP reaches a device only where nothing between the server and it drops or translates
//! unsolicited datagrams: a LAN. Behind NAT, servers notify over MQTT instead.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{Inbound, Via};
use crate::session::Tasks;

/// The largest UDP payload (IPv4: 65,535 − 8 − 20; IPv6 jumbograms aside).
const MAX_DATAGRAM: usize = 65_507;

/// How long the task pauses after a failed read before reading again.
const READ_RETRY: Duration = Duration::from_millis(100);

/// Why the channel cannot listen.
#[derive(Debug, thiserror::Error)]
#[error("[notification.udp] listen = {listen:?}: {source}")]
pub struct UdpError {
    listen: String,
    #[source]
    source: std::io::Error,
}

/// A bound UDP socket, not reading yet.
pub struct Udp {
    socket: UdpSocket,
}

impl Udp {
    /// Binds `listen` (`host:port`; a host name resolves to its first address).
    pub async fn bind(listen: &str) -> Result<Udp, UdpError> {
        let error = |source| UdpError {
            listen: listen.to_owned(),
            source,
        };
        let socket = UdpSocket::bind(listen).await.map_err(error)?;
        Ok(Udp { socket })
    }

    /// Where the socket listens (the port chosen when `listen` named port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Reads datagrams into `inbound` until `tasks` stops or the queue is closed.
    pub async fn run(self, inbound: mpsc::Sender<Inbound>, tasks: Tasks) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let received = tokio::select! {
                biased;
                () = tasks.stopped() => return,
                received = self.socket.recv_from(&mut buf) => received,
            };
            let (len, peer) = match received {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("notification channel udp: reading a datagram: {e}");
                    tokio::select! {
                        () = tasks.stopped() => return,
                        () = tokio::time::sleep(READ_RETRY) => continue,
                    }
                }
            };
            tracing::debug!("notification channel udp: {len} byte(s) from {peer}");
            let message = Inbound {
                payload: buf[..len].to_vec(),
                via: Via::Udp,
            };
            tokio::select! {
                () = tasks.stopped() => return,
                sent = inbound.send(message) => if sent.is_err() {
                    return;
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_reach_the_queue_whole_until_the_tasks_stop() {
        let udp = Udp::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let tasks = Tasks::new();
        let reader = tokio::spawn(udp.run(tx, tasks.clone()));
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let big = vec![7u8; 5000];
        for payload in [&b"one"[..], &big] {
            sender.send_to(payload, addr).await.unwrap();
            let got = rx.recv().await.unwrap();
            assert_eq!(got.payload, payload);
            assert_eq!(got.via, Via::Udp);
        }
        tasks
            .shutdown(Duration::from_secs(5), Duration::from_secs(1))
            .await;
        reader.await.unwrap();
        let err = Udp::bind("not an address").await.err().unwrap();
        assert!(
            err.to_string()
                .starts_with("[notification.udp] listen = \"not an address\": ")
        );
    }
}
