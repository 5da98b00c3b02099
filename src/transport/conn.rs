//! Connections: name resolution, TCP connect, the TLS handshake and the HTTP/1.1
//! handshake, all within the connect timeout; how their failures are sorted (worth
//! another attempt, or final); and the small pool of idle keep-alive connections.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::{CertificateError, ClientConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::TransportError;
use super::target::Target;

/// A request body: whole in memory (DM packages, MO data) or streamed from a file (large
/// objects).
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// One HTTP/1.1 connection: the handle requests are sent on, and the task that drives the
/// connection. Dropped while a request is in flight (a timeout, a refused body), the task
/// is aborted so the socket is closed at once; dropped idle, hyper closes it gracefully.
pub(crate) struct Sender {
    pub(crate) send: http1::SendRequest<Body>,
    task: tokio::task::AbortHandle,
}

impl Sender {
    pub(crate) fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if !self.send.is_ready() {
            self.task.abort();
        }
    }
}

/// Why an attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A connection failure (refused, reset before a response, DNS, connect timeout):
    /// another attempt may succeed.
    Retry(String),
    /// Final: TLS, timeouts after connecting, limits, malformed HTTP.
    Fatal(TransportError),
}

/// Opens a connection to `target` within `timeout`.
pub(crate) async fn connect(
    target: &Target,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
    roots_empty: bool,
) -> Result<Sender, Failure> {
    match tokio::time::timeout(timeout, connect_inner(target, tls, roots_empty)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Retry(format!(
            "{}: no connection within the connect timeout of {}",
            target.url,
            seconds(timeout)
        ))),
    }
}

async fn connect_inner(
    target: &Target,
    tls: &Arc<ClientConfig>,
    roots_empty: bool,
) -> Result<Sender, Failure> {
    let url = &target.url;
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| Failure::Retry(format!("{url}: cannot resolve {:?}: {e}", target.host)))?
        .collect();
    if !target.tls {
        // Plain HTTP is only for loopback: never let a name lead elsewhere.
        addrs.retain(|a| a.ip().is_loopback());
    }
    let mut last_error = format!("{:?} resolves to no usable address", target.host);
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last_error = format!("{addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or_else(|| Failure::Retry(format!("{url}: {last_error}")))?;
    // Small request/response exchanges: do not wait to coalesce segments.
    let _ = tcp.set_nodelay(true);
    match &target.server_name {
        Some(name) => {
            let stream = TlsConnector::from(tls.clone())
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| classify(&e, url, "during the TLS handshake", roots_empty))?;
            let kind = stream.get_ref().1.handshake_kind();
            tracing::debug!("{url}: TLS handshake: {kind:?}");
            handshake(stream, url).await
        }
        None => handshake(tcp, url).await,
    }
}

async fn handshake<I>(io: I, url: &str) -> Result<Sender, Failure>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Retry(format!("{url}: HTTP handshake: {}", chain(&e))))?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("HTTP connection ended: {}", chain(&e));
        }
    });
    Ok(Sender {
        send,
        task: task.abort_handle(),
    })
}

/// Sorts an error from a connection: TLS errors (found anywhere in the error's sources)
/// are final; other I/O failures are connection failures, worth another attempt.
pub(crate) fn classify(
    err: &(dyn StdError + 'static),
    url: &str,
    when: &str,
    roots_empty: bool,
) -> Failure {
    if let Some(tls) = find_rustls(err) {
        return Failure::Fatal(TransportError::Tls(format!(
            "{url}: {}",
            describe_tls(tls, roots_empty)
        )));
    }
    Failure::Retry(format!("{url}: connection failed {when}: {}", chain(err)))
}

/// The rustls error behind `err`, if any. `io::Error` hides its payload from `source()`,
/// so it is opened explicitly.
pub(crate) fn find_rustls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = find_rustls(inner)
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

/// A TLS failure in words.
fn describe_tls(err: &rustls::Error, roots_empty: bool) -> String {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            let mut s = "server certificate refused: it is not issued by a trusted CA \
                         (unknown issuer)"
                .to_string();
            if roots_empty {
                s.push_str(
                    "; note: no trust anchors are configured (empty system store, no \
                     extra_ca_files)",
                );
            }
            s
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!("server certificate refused: {other}")
        }
        rustls::Error::InvalidCertificate(e) => format!("server certificate refused: {e}"),
        rustls::Error::AlertReceived(alert) => format!(
            "the server refused the TLS session (fatal alert {alert:?}; a certificate alert \
             here usually means it refused or required our client certificate)"
        ),
        other => other.to_string(),
    }
}

/// An error and its sources, joined with ": ".
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        current = e.source();
    }
    text
}

/// A duration as seconds, for messages.
pub(crate) fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Idle keep-alive connections, a few per origin (scheme, host, port). A DM session is a
/// sequence of POSTs to one server, so the handshake is paid once per session.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<(bool, String, u16), Vec<Sender>>>,
}

impl Pool {
    const MAX_IDLE_PER_ORIGIN: usize = 2;

    /// An idle connection to `origin` that is still open.
    pub(crate) fn take(&self, origin: &(bool, String, u16)) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.get_mut(origin)?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Closes every idle connection: after a network move they may be bound to an address
    /// the device no longer has, and a request on one would wait out its timeout.
    pub(crate) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Keeps a connection whose exchange completed for the next request.
    pub(crate) fn put(&self, origin: (bool, String, u16), sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let senders = idle.entry(origin).or_default();
        senders.retain(|s| !s.is_closed());
        if senders.len() < Self::MAX_IDLE_PER_ORIGIN {
            senders.push(sender);
        }
    }
}
