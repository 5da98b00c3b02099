//! The HTTPS face: the TLS accept loop, HTTP/1.1 connections (hyper), HTTP Basic, routing
//! to the DM endpoint (`/dm`, `/dm/...`), the repository (`/repo/<path>`) and, in
//! bootstrap-server mode, the bootstrap document (`/bootstrap`), the transcript records of
//! every exchange, and the count of TLS handshakes by kind (full or resumed). Shutting down
//! stops accepting, lets each connection finish the exchange in flight, and waits for them
//! (at most five seconds); connections can also be closed alone, as a server's idle
//! timeout would.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::HandshakeKind;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::bootstrap::{self, BootstrapDoc};
use super::certs::subject_of;
use super::config::BasicAuth;
use super::dm::{DmRequest, Engine};
use super::repository::{RepoRequest, Repository};
use super::scenario::repo_key;
use super::transcript::{Direction, Record, Transcript, lock};

/// Largest request body accepted (`413` beyond).
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const SERVER: &str = concat!("omadm-devserver/", env!("CARGO_PKG_VERSION"));

/// The state every connection shares.
pub(crate) struct Shared {
    pub engine: Mutex<Engine>,
    pub repo: Mutex<Repository>,
    pub transcript: Transcript,
    pub basic: Option<BasicAuth>,
    /// The bootstrap document, in bootstrap-server mode.
    pub bootstrap: Option<BootstrapDoc>,
    /// How many sessions have finished.
    pub finished: watch::Sender<usize>,
    /// The TLS handshakes completed so far, full and resumed.
    pub handshakes: HandshakeCounter,
    /// Bumped to close every open connection once its exchange in flight is answered.
    pub close: watch::Sender<u64>,
    /// Connections open.
    pub open: watch::Sender<usize>,
}

/// Counts completed TLS handshakes by kind.
#[derive(Default)]
pub(crate) struct HandshakeCounter {
    full: AtomicUsize,
    resumed: AtomicUsize,
}

impl HandshakeCounter {
    fn count(&self, kind: Option<HandshakeKind>) {
        let counter = match kind {
            Some(HandshakeKind::Resumed) => &self.resumed,
            _ => &self.full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Handshakes {
        Handshakes {
            full: self.full.load(Ordering::Relaxed),
            resumed: self.resumed.load(Ordering::Relaxed),
        }
    }
}

/// How many TLS handshakes a server completed, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshakes {
    /// Full handshakes: the server's certificate was sent (and checked by the client).
    pub full: usize,
    /// Resumed handshakes: a session of an earlier handshake was resumed (TLS 1.3
    /// pre-shared key from a ticket, or a TLS 1.2 session ID).
    pub resumed: usize,
}

/// Accepts connections until `stop` turns true, then drains them.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Small request/response exchanges: no Nagle delay against delayed ACKs.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("TCP_NODELAY on {peer}: {e}");
                    }
                    conns.spawn(connection(tcp, peer, acceptor.clone(), shared.clone(), stop.clone()));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    shared.open.send_modify(|n| *n += 1);
    let _open = OpenGuard(&shared.open);
    let mut close = shared.close.subscribe();
    let peer = peer.to_string();
    let failed = |note: String| {
        let mut r = Record::new(Direction::In, "tls", &peer, "", "");
        r.note = Some(note);
        r
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            shared.handshakes.count(tls.get_ref().1.handshake_kind());
            tls
        }
        Ok(Err(e)) => {
            shared
                .transcript
                .push(failed(format!("TLS handshake failed: {e}")));
            return;
        }
        Err(_) => {
            shared
                .transcript
                .push(failed("TLS handshake timed out".into()));
            return;
        }
    };
    let subject: Option<Arc<str>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| subject_of(c))
        .map(Arc::from);
    let svc = {
        let shared = shared.clone();
        let peer: Arc<str> = Arc::from(peer.as_str());
        service_fn(move |req| {
            let shared = shared.clone();
            let peer = peer.clone();
            let subject = subject.clone();
            async move { Ok::<_, Infallible>(handle(req, &shared, &peer, subject.as_deref()).await) }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("connection from {peer}: {e}");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        Ok(()) = close.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Counts a connection as closed when its task ends, however it ends.
struct OpenGuard<'a>(&'a watch::Sender<usize>);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum Route<'a> {
    Dm,
    Repo(String),
    Bootstrap(&'a BootstrapDoc),
    Other,
}

async fn handle(
    req: Request<Incoming>,
    shared: &Shared,
    peer: &str,
    subject: Option<&str>,
) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let route = match req.uri().path() {
        "/dm" => Route::Dm,
        p if p.starts_with("/dm/") => Route::Dm,
        bootstrap::PATH => shared
            .bootstrap
            .as_ref()
            .map_or(Route::Other, Route::Bootstrap),
        p => match p.strip_prefix("/repo/").map(repo_key) {
            Some(Ok(key)) => Route::Repo(key),
            _ => Route::Other,
        },
    };
    let kind = match route {
        Route::Dm => "dm",
        Route::Repo(_) => "repository",
        Route::Bootstrap(_) => "bootstrap",
        Route::Other => "other",
    };
    let headers = req.headers().clone();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut rec = Record::new(Direction::In, kind, peer, &method, &path);
    for (name, value) in &headers {
        rec.header(name.as_str(), value.to_str().unwrap_or("(not text)"));
    }
    rec.client_cert = subject.map(str::to_owned);

    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            rec.note = Some(format!("request body not read: {e}"));
            shared.transcript.push(rec);
            let status = if e.is::<http_body_util::LengthLimitError>() {
                413
            } else {
                400
            };
            let out = Outgoing::text(status, "request body not read\n");
            return out.send(shared, kind, 0, peer, &method, &path);
        }
    };
    let rec = rec.with_body(&body);

    if let Some(basic) = &shared.basic
        && !basic.admits(header("authorization"))
    {
        let mut rec = rec;
        rec.kind = "auth".into();
        rec.note = Some("refused: no valid HTTP Basic credentials".into());
        shared.transcript.push(rec);
        shared.transcript.say(format!(
            "{method} {path} → 401: no valid HTTP Basic credentials"
        ));
        let mut out = Outgoing::text(401, "authentication required\n");
        out.headers.push((
            "www-authenticate",
            "Basic realm=\"omadm-devserver\", charset=\"UTF-8\"".into(),
        ));
        return out.send(shared, "auth", 0, peer, &method, &path);
    }

    match route {
        Route::Dm => {
            let (reply, finished) = {
                let mut engine = lock(&shared.engine);
                let reply = engine.handle(&DmRequest {
                    method: &method,
                    content_type: header("content-type"),
                    accept: header("accept"),
                    dev_id: header(crate::protocol::DEVID_HEADER),
                    body: &body,
                });
                (reply, engine.finished_count())
            };
            let mut rec = rec;
            rec.session = reply.session;
            rec.kind = reply.in_kind.into();
            rec.problems = reply.problems;
            shared.transcript.push(rec);
            for line in reply.summary {
                shared.transcript.say(line);
            }
            if let Some(delay) = reply.delay {
                tokio::time::sleep(delay).await;
            }
            let out = Outgoing {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
            };
            let response = out.send(shared, reply.out_kind, reply.session, peer, &method, &path);
            shared.finished.send_if_modified(|n| {
                let changed = *n != finished;
                *n = finished;
                changed
            });
            response
        }
        Route::Repo(key) => {
            let session = lock(&shared.engine).latest();
            let reply = lock(&shared.repo).handle(&RepoRequest {
                method: &method,
                key: &key,
                content_type: header("content-type"),
                accept: header("accept"),
                range: header("range"),
                if_range: header("if-range"),
                body: &body,
                session,
            });
            let mut rec = rec;
            rec.session = session;
            if let Some(p) = &reply.problem {
                lock(&shared.engine).fail(session, p.clone());
                rec.problems.push(p.clone());
            }
            shared.transcript.push(rec);
            let mut line = format!("session {session} repository {method} /repo/{key}");
            if body.is_empty() {
                line.push_str(&format!(" → {}", reply.status));
            } else {
                line.push_str(&format!(
                    " ← {} bytes ({}) → {}",
                    body.len(),
                    header("content-type").unwrap_or("no Content-Type"),
                    reply.status
                ));
            }
            if let Some((_, range)) = reply.headers.iter().find(|(n, _)| *n == "content-range") {
                line.push_str(&format!(" ({range})"));
            }
            if let Some((_, acc)) = reply
                .headers
                .iter()
                .find(|(n, _)| *n == crate::protocol::ACCEPT_HEADER)
            {
                line.push_str(&format!(" (OMADM-Accept: {acc})"));
            }
            shared.transcript.say(line);
            if let Some(p) = reply.problem {
                shared.transcript.say(format!("  ✗ {p}"));
            }
            let out = Outgoing {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
            };
            out.send(shared, "repository", session, peer, &method, &path)
        }
        Route::Bootstrap(doc) => {
            shared.transcript.push(rec);
            let reply = doc.handle(&method);
            shared.transcript.say(format!(
                "bootstrap {method} {path} → {} ({} bytes)",
                reply.status,
                reply.body.len()
            ));
            let out = Outgoing {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
            };
            out.send(shared, "bootstrap", 0, peer, &method, &path)
        }
        Route::Other => {
            shared.transcript.push(rec);
            Outgoing::text(
                404,
                "not found: the DM URL is /dm, the repository /repo/<path>\n",
            )
            .send(shared, "other", 0, peer, &method, &path)
        }
    }
}

/// A response about to be sent and recorded.
struct Outgoing {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Outgoing {
    fn text(status: u16, text: &str) -> Outgoing {
        Outgoing {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: text.as_bytes().to_vec(),
        }
    }

    /// Records the response and builds it.
    fn send(
        self,
        shared: &Shared,
        kind: &str,
        session: u64,
        peer: &str,
        method: &str,
        path: &str,
    ) -> Response<Full<Bytes>> {
        let mut rec = Record::new(Direction::Out, kind, peer, method, path).with_body(&self.body);
        rec.session = session;
        rec.status = Some(self.status);
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            rec.header(name, value);
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                map.append(n, v);
            }
        }
        map.insert(http::header::SERVER, http::HeaderValue::from_static(SERVER));
        shared.transcript.push(rec);
        let mut response = Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *response.headers_mut() = map;
        response
    }
}
