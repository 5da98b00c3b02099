//! The HTTPS face: the TLS accept loop, HTTP/1.1 connections (hyper), HTTP Basic, routing
//! to the DM endpoint (`/dm`, `/dm/...`), the repository (`/repo/<path>`) and, in
//! bootstrap-server mode, the bootstrap document (`/bootstrap`), the transcript records of
//! every exchange, and the count of TLS handshakes by kind (full or resumed). Shutting down
//! stops accepting, lets each connection finish the exchange in flight, and waits for them
//! (at most five seconds); connections can also be closed alone, as a server's idle
//! timeout would.
//!
//! Content coding (unless `--no-gzip`): gzip-coded request bodies are decoded within the
//! same limit as identity ones (decoded size), every response advertises
//! `Accept-Encoding: gzip` (RFC 7694: the client may gzip its requests), and a response
//! whose request accepts gzip is gzip-coded when it is JSON, XML or text of at least 256
//! bytes — DM packages and MO data, never `application/octet-stream` objects, a `206` or a
//! request with `Range`; its strong `ETag` is then made weak, as it names the identity
//! bytes. The transcript keeps the decoded bodies, with a note of the coded size.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Either, Full};
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
use crate::transport::coding::{self, ContentCoding, DecodeError, Decoder};

/// Largest request body accepted (`413` beyond).
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
pub(crate) const SERVER: &str = concat!("omadm-devserver/", env!("CARGO_PKG_VERSION"));

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
    /// gzip content coding both ways (off with `--no-gzip`).
    pub gzip: bool,
    /// File-backed large objects, streamed uploads and their faults ([`super::objects`]).
    pub objects: super::objects::Objects,
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
            // Large objects and streamed uploads first: they never pass through `handle`.
            let object = shared.objects.route(&req);
            async move {
                let response = match object {
                    Some(route) => {
                        super::objects::serve(route, req, &shared, &peer, subject.as_deref())
                            .await
                            .map(Either::Right)
                    }
                    None => handle(req, &shared, &peer, subject.as_deref())
                        .await
                        .map(Either::Left),
                };
                Ok::<_, Infallible>(response)
            }
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
    let gzip = shared.gzip
        && method != "HEAD"
        && header("range").is_none()
        && header("accept-encoding").is_some_and(coding::accepts_gzip);

    let coded = header("content-encoding").map(str::to_owned);
    let body = match read_body(req.into_body(), coded.as_deref(), shared.gzip).await {
        Ok(b) => b,
        Err(refusal) => {
            rec.note = Some(format!("request body not read: {}", refusal.why));
            shared.transcript.push(rec);
            let mut out = Outgoing::text(refusal.status, &format!("{}\n", refusal.why));
            if refusal.status == 415 {
                let accepted = if shared.gzip { "gzip" } else { "identity" };
                out.headers.push(("accept-encoding", accepted.into()));
            }
            return out.send(shared, kind, 0, peer, &method, &path);
        }
    };
    let mut rec = rec.with_body(&body.data);
    if let Some(n) = body.coded {
        rec.note = Some(format!("gzip-coded body: {n} bytes on the wire"));
    }
    let body = body.data;

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
                gzip,
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
            let mut out = Outgoing {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
                gzip,
            };
            if shared.gzip && out.status == 200 && out.codable() {
                out.headers.push(("vary", "accept-encoding".into()));
            }
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
                gzip,
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

/// A request body as read: decoded, and its coded length when it was gzip-coded.
struct ReadBody {
    data: Bytes,
    coded: Option<usize>,
}

/// Why a request body was not read: the status to answer and the reason.
struct Refusal {
    status: u16,
    why: String,
}

/// Reads a request body whose `Content-Encoding` is `coding`, decoding gzip (when `gzip`
/// is on) as it arrives, within [`MAX_BODY`] decoded bytes.
async fn read_body(
    mut body: Incoming,
    coding: Option<&str>,
    gzip: bool,
) -> Result<ReadBody, Refusal> {
    let refuse = |status, why: String| Refusal { status, why };
    let coding = match ContentCoding::parse(coding) {
        Ok(ContentCoding::Gzip) if !gzip => {
            return Err(refuse(
                415,
                "gzip-coded request bodies are not accepted (--no-gzip)".into(),
            ));
        }
        Ok(c) => c,
        Err(c) => {
            return Err(refuse(
                415,
                format!("content coding {c:?} is not accepted; gzip is"),
            ));
        }
    };
    let mut decoder = Decoder::new(coding, MAX_BODY);
    let mut coded = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| refuse(400, e.to_string()))?;
        if let Ok(chunk) = frame.into_data() {
            coded += chunk.len();
            decoder.push(&chunk).map_err(|e| match e {
                DecodeError::TooLarge { .. } => refuse(413, e.to_string()),
                DecodeError::Corrupt(_) => refuse(400, e.to_string()),
            })?;
        }
    }
    let data = decoder.finish().map_err(|e| match e {
        DecodeError::TooLarge { .. } => refuse(413, e.to_string()),
        DecodeError::Corrupt(_) => refuse(400, e.to_string()),
    })?;
    Ok(ReadBody {
        data: Bytes::from(data),
        coded: (coding == ContentCoding::Gzip).then_some(coded),
    })
}

/// A response about to be sent and recorded.
struct Outgoing {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The request accepts a gzip-coded response (and coding is on).
    gzip: bool,
}

impl Outgoing {
    fn text(status: u16, text: &str) -> Outgoing {
        Outgoing {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: text.as_bytes().to_vec(),
            gzip: false,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the body is of a kind worth gzip-coding (JSON, XML, text) and whole (not a
    /// range): never a large object (`application/octet-stream`).
    fn codable(&self) -> bool {
        let media = self
            .header("content-type")
            .and_then(|t| t.split(';').next())
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let textual =
            media.ends_with("json") || media.ends_with("xml") || media.starts_with("text/");
        textual && self.status != 206 && self.header("content-range").is_none()
    }

    /// The body gzip-coded, when the request accepts it and coding pays.
    fn coded(&self) -> Option<Vec<u8>> {
        if !self.gzip || !self.codable() {
            return None;
        }
        coding::gzip(&self.body)
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
        let coded = self.coded();
        let mut headers = self.headers;
        if let Some(c) = &coded {
            rec.note = Some(format!("gzip-coded body: {} bytes on the wire", c.len()));
            headers.retain(|(n, _)| *n != "content-length");
            headers.push(("content-encoding", "gzip".into()));
            for (name, value) in &mut headers {
                if *name == "etag" && !value.starts_with("W/") {
                    *value = format!("W/{value}");
                }
            }
        }
        if shared.gzip {
            headers.push(("accept-encoding", "gzip".into()));
        }
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
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
        let mut response = Response::new(Full::new(Bytes::from(coded.unwrap_or(self.body))));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *response.headers_mut() = map;
        response
    }
}
