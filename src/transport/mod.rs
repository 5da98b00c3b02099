//! The HTTPS client of DM sessions and data-repository transfers (PROTOCOL.md §1, §3, §10).
//!
//! It knows bytes and URLs, not MOs: callers hand it a [`Request`] and get a [`Response`]
//! or a [`TransportError`]. One [`HttpClient`] per DM server account, built from that
//! account's [`ClientSettings`] and kept in a [`ClientCache`] (a new client when the
//! settings or the trust store change):
//!
//! - **TLS only** — `https://` URLs; plain `http://` only to a loopback host and only with
//!   [`ClientSettings::allow_plain_loopback`] (tests, local development servers).
//!   TLS 1.2 and 1.3 with rustls and its `ring` provider, held by the client (no
//!   process-wide state). TLS-PSK, the specification's alternative to certificates, is not
//!   offered: rustls has no TLS-PSK.
//! - **Trust** ([`Trust`]) — the system trust store plus `[tls] extra_ca_files` (loaded once
//!   per process and reloaded when they change: [`TrustStore`]), or the
//!   account's `Ext/CACert` PEM: CA certificates become the only anchors, an end-entity
//!   certificate is pinned.
//! - **Client authentication** ([`ClientAuth`]) — an X.509 client certificate, or HTTP
//!   Basic.
//! - **Limits** — connect timeout (resolution + TCP + TLS), read timeout (the whole
//!   exchange), a maximum body size.
//! - **Retries** ([`RetryPolicy`]) — connection failures only, with exponential backoff and
//!   jitter; TLS failures and HTTP statuses are never retried (a 4xx/5xx is the caller's
//!   to handle: PROTOCOL.md §1 says the session then ends).
//!
//! - **Content coding** ([`Coding`]) — gzip both ways, negotiated (`coding.rs`): requests
//!   ask for gzip-coded responses (`Accept-Encoding: gzip`), which are decoded as they
//!   arrive, the body limit applying to the decoded size (a gzip bomb is
//!   [`TransportError::TooLarge`] without being inflated past the limit; a corrupt stream
//!   is [`TransportError::Coding`]). A request body is gzip-coded once its origin has
//!   listed gzip in an `Accept-Encoding` response field (RFC 7694), remembered per origin,
//!   and only from 256 bytes on; a `415` refusing the coding is answered by sending the
//!   body once more identity-coded, and the origin gets no coded body again.
//!   [`Coding::Identity`] opts a request out (large objects).
//!
//! HTTP/1.1 with keep-alive: idle connections are reused for the next request to the same
//! origin. A new connection to an origin resumes the client's last TLS session with it
//! when it can (no certificate chain, no signatures); `resume.rs` says within which bounds.

mod cache;
mod certs;
pub(crate) mod coding;
mod conn;
mod error;
mod pin;
mod resume;
mod retry;
mod roots;
mod settings;
mod stream;
mod target;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use rustls::{ClientConfig, RootCertStore};

pub use cache::ClientCache;
pub use coding::{Coding, GZIP_LEVEL};
pub use error::TransportError;
pub use roots::TrustStore;
pub use settings::{ClientAuth, ClientSettings, RetryPolicy, Trust};
pub use stream::{FileBody, Streaming};

use coding::{AcceptingOrigins, ContentCoding, Decoder};
use conn::{Failure, Pool, Sender};
use resume::Sessions;
use target::Target;

/// An HTTP method the DM client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Put,
    Post,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
        }
    }

    fn to_http(self) -> http::Method {
        match self {
            Method::Get => http::Method::GET,
            Method::Put => http::Method::PUT,
            Method::Post => http::Method::POST,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One HTTP request. `Host`, `Content-Length`, `Transfer-Encoding` and
/// `Content-Encoding` are set by the transport (given ones are ignored); `User-Agent`
/// defaults to `omadmd/<version>`; `Authorization` is added for [`ClientAuth::Basic`]
/// unless given; `Accept-Encoding` follows [`Request::coding`] unless given.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How the body and the response's body may be content-coded (default: gzip where
    /// negotiated).
    pub coding: Coding,
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            coding: Coding::default(),
        }
    }

    /// A `GET`.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new(Method::Get, url)
    }

    /// A `POST` of `body`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Request::new(Method::Post, url).with_body(body)
    }

    /// A `PUT` of `body`.
    pub fn put(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Request::new(Method::Put, url).with_body(body)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets how the body and the response's body may be content-coded.
    pub fn with_coding(mut self, coding: Coding) -> Self {
        self.coding = coding;
        self
    }
}

impl fmt::Debug for Request {
    /// Header values (credentials) and the body are not printed, only their names and size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .field("coding", &self.coding)
            .finish()
    }
}

/// One HTTP response, whatever its status. Header names are lower case. A content-coded
/// body is given decoded, without its `Content-Encoding` and `Content-Length` fields.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The HTTPS client of one DM server account. Cheap to share (`&self` everywhere); keeps
/// idle keep-alive connections for reuse, and per origin the TLS sessions a new connection
/// resumes (see `resume.rs`).
pub struct HttpClient {
    settings: ClientSettings,
    /// The TLS configuration, one per origin with its resumable sessions.
    tls: Sessions,
    /// No trust anchor at all: TLS errors say so.
    roots_empty: bool,
    /// With [`Trust::Roots`], the trust store's anchors this client was built with.
    roots: Option<Arc<RootCertStore>>,
    basic: Option<HeaderValue>,
    pool: Pool,
    /// The origins that read gzip-coded request bodies.
    gzip_origins: AcceptingOrigins,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A request checked and converted once, sent on each attempt.
#[derive(Clone)]
struct Prepared {
    method: http::Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Prepared {
    fn build(&self) -> http::Request<conn::Body> {
        let body = Full::new(self.body.clone()).map_err(|never| match never {});
        let mut request = http::Request::new(BodyExt::boxed(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

impl HttpClient {
    /// Closes the idle kept-alive connections (see [`ClientCache::forget_connections`]).
    pub fn forget_connections(&self) {
        self.pool.clear();
    }

    /// Checks the settings and builds the TLS configuration: bad PEM, an unreadable CA file,
    /// a key that does not fit its certificate, ... are [`TransportError::Settings`] naming
    /// the problem. With [`Trust::Roots`] the anchors come from the process-wide system
    /// [`TrustStore`] (read on first use, and again when it changed). Sessions get their
    /// clients from a [`ClientCache`] instead of building one each time.
    pub fn new(settings: ClientSettings) -> Result<HttpClient, TransportError> {
        HttpClient::with_trust_store(settings, roots::system())
    }

    /// Like [`HttpClient::new`], with the [`Trust::Roots`] anchors taken from `trust`.
    pub fn with_trust_store(
        settings: ClientSettings,
        trust: &TrustStore,
    ) -> Result<HttpClient, TransportError> {
        let built = tls::client_config(&settings, trust)?;
        let basic = match &settings.client_auth {
            ClientAuth::Basic { user, password } => {
                if user.contains(':') {
                    return Err(TransportError::Settings(
                        "HTTP Basic: the user name must not contain ':'".into(),
                    ));
                }
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let mut value = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                    TransportError::Settings("HTTP Basic: unusable credentials".into())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            ClientAuth::None | ClientAuth::Certificate { .. } => None,
        };
        Ok(HttpClient {
            settings,
            tls: Sessions::new(built.config),
            roots_empty: built.roots_empty,
            roots: built.roots,
            basic,
            pool: Pool::default(),
            gzip_origins: AcceptingOrigins::default(),
        })
    }

    /// The settings this client was built with.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Sends `req` and returns the response, whatever its HTTP status.
    ///
    /// Connection failures (refused, reset before a response, DNS, connect timeout) are
    /// retried per [`ClientSettings::retry`] with exponential backoff and jitter, then
    /// reported as [`TransportError::Connect`]. TLS and certificate failures are not retried
    /// ([`TransportError::Tls`]). An HTTP status — any, including 4xx/5xx — is returned as a
    /// [`Response`] and never retried. A response not complete within the read timeout is
    /// [`TransportError::Timeout`]; one larger than `max_body_bytes` (decoded) is
    /// [`TransportError::TooLarge`].
    ///
    /// With [`Coding::Negotiated`] the body goes gzip-coded when the origin has said that it
    /// reads gzip-coded requests; a `415` refusing the coding is followed by the same
    /// request identity-coded, whose response is returned.
    pub async fn send(&self, req: Request) -> Result<Response, TransportError> {
        let target = Target::parse(&req.url, self.settings.allow_plain_loopback)?;
        let prepared = self.prepare(&req, &target)?;
        let origin = target.origin();
        if req.coding == Coding::Negotiated
            && self.gzip_origins.accepts(&origin)
            && let Some(coded) = gzip_body(&prepared.body).await
        {
            let mut gzipped = prepared.clone();
            gzipped.body = coded;
            gzipped
                .headers
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            let response = self.attempts(&target, &gzipped).await?;
            let accepted = response_accept_encoding(&response);
            if !coding::refuses_coding(response.status, accepted.as_deref()) {
                self.gzip_origins.learn(&origin, accepted.as_deref());
                return Ok(response);
            }
            tracing::info!(
                "{}: a gzip-coded request body was refused (HTTP 415); sending it again \
                 identity-coded, and no coded body to this server again",
                req.url
            );
            self.gzip_origins.refused(&origin);
        }
        let response = self.attempts(&target, &prepared).await?;
        self.gzip_origins
            .learn(&origin, response_accept_encoding(&response).as_deref());
        Ok(response)
    }

    /// The exchange with its retries of connection failures.
    async fn attempts(
        &self,
        target: &Target,
        prepared: &Prepared,
    ) -> Result<Response, TransportError> {
        self.retrying(|| self.exchange(target, prepared)).await
    }

    /// Runs `once` until it succeeds or fails for good: connection failures are tried
    /// again per [`ClientSettings::retry`] (exponential backoff with jitter), then
    /// reported as [`TransportError::Connect`].
    async fn retrying<T, F>(&self, mut once: impl FnMut() -> F) -> Result<T, TransportError>
    where
        F: Future<Output = Result<T, Failure>>,
    {
        let attempts = self.settings.retry.total_attempts();
        let mut attempt = 1;
        loop {
            match once().await {
                Ok(done) => return Ok(done),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(reason)) if attempt >= attempts => {
                    return Err(TransportError::Connect {
                        attempts: attempt,
                        reason,
                    });
                }
                Err(Failure::Retry(reason)) => {
                    let delay = self.settings.retry.delay(attempt, retry::random_unit());
                    tracing::info!(
                        "attempt {attempt}/{attempts} failed: {reason}; retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    fn prepare(&self, req: &Request, target: &Target) -> Result<Prepared, TransportError> {
        let invalid = |what: String| TransportError::InvalidRequest(format!("{}: {what}", req.url));
        let mut headers = HeaderMap::new();
        for (name, value) in &req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("{name:?} is not a valid header name")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("header {name}: value is not valid in HTTP")))?;
            if [
                header::HOST,
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
                header::CONTENT_ENCODING,
            ]
            .contains(&name)
            {
                continue;
            }
            headers.append(name, value);
        }
        let host = HeaderValue::from_str(&target.authority)
            .map_err(|_| invalid("host is not valid in a Host header".into()))?;
        headers.insert(header::HOST, host);
        if !headers.contains_key(header::USER_AGENT) {
            headers.insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("omadmd/", env!("CARGO_PKG_VERSION"))),
            );
        }
        if let Some(basic) = &self.basic
            && !headers.contains_key(header::AUTHORIZATION)
        {
            headers.insert(header::AUTHORIZATION, basic.clone());
        }
        if !headers.contains_key(header::ACCEPT_ENCODING) {
            let accepted = match req.coding {
                Coding::Negotiated => "gzip",
                Coding::Identity => "identity",
            };
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(accepted));
        }
        let uri = target
            .path_and_query
            .parse()
            .map_err(|e| TransportError::InvalidUrl(format!("{}: {e}", req.url)))?;
        Ok(Prepared {
            method: req.method.to_http(),
            uri,
            headers,
            body: Bytes::from(req.body.clone()),
        })
    }

    /// One attempt: on an idle kept-alive connection if there is one (falling back to a new
    /// connection if that one turns out to be closed), else on a new connection.
    async fn exchange(&self, target: &Target, prepared: &Prepared) -> Result<Response, Failure> {
        if let Some(sender) = self.pool.take(&target.origin()) {
            match self.roundtrip(sender, target, prepared).await {
                Err(Failure::Retry(reason)) => {
                    tracing::debug!("kept-alive connection failed ({reason}); opening a new one");
                }
                done => return done,
            }
        }
        let sender = conn::connect(
            target,
            &self.tls.config(target, SystemTime::now()),
            self.settings.connect_timeout,
            self.roots_empty,
        )
        .await?;
        self.roundtrip(sender, target, prepared).await
    }

    /// Sends the request on `sender` and reads the whole response within the read timeout.
    async fn roundtrip(
        &self,
        mut sender: Sender,
        target: &Target,
        prepared: &Prepared,
    ) -> Result<Response, Failure> {
        let limit = self.settings.max_body_bytes;
        let url = target.url.as_str();
        let roots_empty = self.roots_empty;
        let exchange = async {
            sender
                .send
                .ready()
                .await
                .map_err(|e| conn::classify(&e, url, "before the request was sent", roots_empty))?;
            let response = sender
                .send
                .send_request(prepared.build())
                .await
                .map_err(|e| before_response(&e, url, roots_empty))?;
            let (mut parts, mut body) = response.into_parts();
            let coding =
                ContentCoding::parse(joined(&parts.headers, header::CONTENT_ENCODING).as_deref())
                    .map_err(|coding| {
                    Failure::Fatal(TransportError::Coding(format!(
                        "{url}: the response body is coded {coding:?}, which was not asked \
                         for (only gzip is decoded)"
                    )))
                })?;
            let mut decoder = Decoder::new(coding, limit);
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|len| len > decoder.coded_limit() as u64) {
                return Err(Failure::Fatal(TransportError::TooLarge { limit }));
            }
            let undecodable = |e| match e {
                coding::DecodeError::TooLarge { limit } => {
                    Failure::Fatal(TransportError::TooLarge { limit })
                }
                coding::DecodeError::Corrupt(why) => Failure::Fatal(TransportError::Coding(
                    format!("{url}: the gzip-coded response body cannot be decoded: {why}"),
                )),
            };
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| match conn::find_rustls(&e) {
                    Some(_) => conn::classify(&e, url, "", roots_empty),
                    None => Failure::Fatal(TransportError::Io(format!(
                        "{url}: the connection failed while reading the response body: {}",
                        conn::chain(&e)
                    ))),
                })?;
                if let Ok(chunk) = frame.into_data() {
                    decoder.push(&chunk).map_err(undecodable)?;
                }
            }
            let data = decoder.finish().map_err(undecodable)?;
            if coding == ContentCoding::Gzip {
                parts.headers.remove(header::CONTENT_ENCODING);
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            Ok((parts, data))
        };
        let (parts, body) = match tokio::time::timeout(self.settings.read_timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Failure::Fatal(TransportError::Timeout(format!(
                    "{url}: no complete response within the read timeout of {}",
                    conn::seconds(self.settings.read_timeout)
                ))));
            }
        };
        self.pool.put(target.origin(), sender);
        Ok(Response {
            status: parts.status.as_u16(),
            headers: header_pairs(&parts.headers),
            body,
        })
    }
}

/// A response's header fields as (lower-case name, value) pairs.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// `body` gzip-coded, or `None` when coding does not pay (see [`coding::gzip`]). Large
/// bodies are coded on a blocking thread, off the runtime's workers.
async fn gzip_body(body: &Bytes) -> Option<Bytes> {
    const INLINE: usize = 64 * 1024;
    if body.len() <= INLINE {
        return coding::gzip(body).map(Bytes::from);
    }
    let body = body.clone();
    match tokio::task::spawn_blocking(move || coding::gzip(&body)).await {
        Ok(coded) => coded.map(Bytes::from),
        Err(e) => {
            tracing::warn!("gzip-coding a request body failed ({e}); sending it identity-coded");
            None
        }
    }
}

/// Every value of field `name`, joined with `,` (`None` when there is none).
fn joined(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or_default())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The response's `Accept-Encoding` values, joined with `,`.
fn response_accept_encoding(response: &Response) -> Option<String> {
    let values: Vec<&str> = response
        .headers
        .iter()
        .filter(|(n, _)| n == "accept-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The rustls configuration for a TLS connection that is not HTTPS (the MQTT notification
/// channel's broker): the same provider, protocol versions, trust ([`Trust`]) and client
/// certificate as an [`HttpClient`]'s, without ALPN. Reads the trust store's files: call it
/// where blocking is allowed.
pub fn tls_client_config(settings: &ClientSettings) -> Result<Arc<ClientConfig>, TransportError> {
    let built = tls::client_config(settings, roots::system())?;
    let mut config = Arc::unwrap_or_clone(built.config);
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

/// Whether an account's `Ext/CACert` PEM holds CA certificates (trust anchors that can verify
/// any host they issued for), not end-entity certificates to pin.
pub fn holds_cas(pem: &str) -> Result<bool, TransportError> {
    Ok(matches!(certs::classify(pem)?, certs::Anchors::Cas(_)))
}

/// Sorts a failure before the response head arrived: TLS is final, malformed HTTP is final,
/// anything else (closed, reset) is a connection failure.
fn before_response(err: &hyper::Error, url: &str, roots_empty: bool) -> Failure {
    if conn::find_rustls(err).is_some() {
        return conn::classify(err, url, "", roots_empty);
    }
    if err.is_parse() || err.is_parse_status() {
        return Failure::Fatal(TransportError::Io(format!(
            "{url}: the server's response is not valid HTTP/1.1: {}",
            conn::chain(err)
        )));
    }
    if err.is_user() {
        return Failure::Fatal(TransportError::InvalidRequest(format!(
            "{url}: {}",
            conn::chain(err)
        )));
    }
    conn::classify(err, url, "before a response arrived", roots_empty)
}
