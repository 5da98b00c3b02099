//! Streamed exchanges for large objects: a response whose body is read as it arrives
//! ([`HttpClient::open`]), and a request whose body is read from a file as it is sent
//! ([`HttpClient::send_file`]). Neither ever holds a whole body. Both go identity-coded
//! (ranges and digests address the object's own bytes) on a connection of their own, and
//! the read timeout bounds each wait for the next bytes, not the whole transfer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{self, HeaderValue};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::conn::{self, Failure, Sender};
use super::target::Target;
use super::{HttpClient, Method, Request, Response, TransportError, before_response, header_pairs};

/// A response whose body is still to be read.
pub struct Streaming {
    pub status: u16,
    /// Header names are lower case.
    pub headers: Vec<(String, String)>,
    body: Incoming,
    idle: Duration,
    url: String,
    roots_empty: bool,
    /// Keeps the connection: dropped before the body ends, it closes the connection.
    _sender: Sender,
}

impl Streaming {
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

    /// The next bytes of the body; `None` at its end. Waiting longer than the read
    /// timeout for them is [`TransportError::Timeout`]; a connection that breaks is
    /// [`TransportError::Io`].
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => {
                    return Err(TransportError::Timeout(format!(
                        "{}: no data for {}",
                        self.url,
                        conn::seconds(self.idle)
                    )));
                }
                Ok(None) => return Ok(None),
                Ok(Some(frame)) => frame.map_err(|e| match conn::find_rustls(&e) {
                    Some(_) => fatal_failure(conn::classify(&e, &self.url, "", self.roots_empty)),
                    None => TransportError::Io(format!(
                        "{}: the connection failed while reading the body: {}",
                        self.url,
                        conn::chain(&e)
                    )),
                })?,
            };
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                return Ok(Some(data));
            }
        }
    }
}

/// A file's bytes as a request body, counting what has been sent.
pub struct FileBody {
    pub file: tokio::fs::File,
    /// Its length: sent as `Content-Length`.
    pub len: u64,
    /// Advanced as the body is read for sending.
    pub sent: Arc<AtomicU64>,
}

impl HttpClient {
    /// Sends `req` (without a body) and returns once the response's head has arrived;
    /// the body is read with [`Streaming::chunk`]. Connection failures are retried as
    /// [`HttpClient::send`] retries them.
    pub async fn open(&self, req: Request) -> Result<Streaming, TransportError> {
        let req = req.with_coding(super::Coding::Identity);
        let target = Target::parse(&req.url, self.settings.allow_plain_loopback)?;
        let prepared = self.prepare(&req, &target)?;
        let (sender, response) = self
            .retrying(|| async {
                let sender = self.connect(&target).await?;
                self.head(sender, &target, prepared.build()).await
            })
            .await?;
        let (parts, body) = response.into_parts();
        Ok(Streaming {
            status: parts.status.as_u16(),
            headers: header_pairs(&parts.headers),
            body,
            idle: self.settings.read_timeout,
            url: target.url.clone(),
            roots_empty: self.roots_empty,
            _sender: sender,
        })
    }

    /// Sends `method` to `url` with `body` streamed from its file (`Content-Length` set,
    /// identity-coded) and `headers`; returns the response (its body read whole, within
    /// `max_body_bytes`). The read timeout bounds every wait for the server to take more
    /// bytes, and the wait for its answer after the last. Not retried: the caller decides.
    pub async fn send_file(
        &self,
        method: Method,
        url: &str,
        headers: Vec<(String, String)>,
        body: FileBody,
    ) -> Result<Response, TransportError> {
        let mut req = Request::new(method, url).with_coding(super::Coding::Identity);
        req.headers = headers;
        let target = Target::parse(&req.url, self.settings.allow_plain_loopback)?;
        let prepared = self.prepare(&req, &target)?;
        let mut request = prepared.build();
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len));
        let sent = Arc::clone(&body.sent);
        let stream =
            tokio_util::io::ReaderStream::with_capacity(body.file, 256 * 1024).map(move |chunk| {
                chunk.map(|bytes| {
                    sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    Frame::data(bytes)
                })
            });
        *request.body_mut() = BodyExt::boxed(StreamBody::new(stream));
        let sender = self.connect(&target).await.map_err(fatal_failure)?;
        let idle = self.settings.read_timeout;
        let exchange = self.head(sender, &target, request);
        tokio::pin!(exchange);
        let mut seen = 0;
        let (_sender, response) = loop {
            tokio::select! {
                done = &mut exchange => break done.map_err(fatal_failure)?,
                () = tokio::time::sleep(idle) => {
                    let now = body.sent.load(Ordering::Relaxed);
                    if now == seen {
                        return Err(TransportError::Timeout(format!(
                            "{url}: the server took no data and gave no answer for {}",
                            conn::seconds(idle)
                        )));
                    }
                    seen = now;
                }
            }
        };
        let (parts, mut incoming) = response.into_parts();
        let limit = self.settings.max_body_bytes;
        let mut data = Vec::new();
        let read = async {
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| {
                    TransportError::Io(format!("{url}: reading the answer: {}", conn::chain(&e)))
                })?;
                if let Ok(chunk) = frame.into_data() {
                    if data.len() + chunk.len() > limit {
                        return Err(TransportError::TooLarge { limit });
                    }
                    data.extend_from_slice(&chunk);
                }
            }
            Ok(())
        };
        tokio::time::timeout(idle, read).await.map_err(|_| {
            TransportError::Timeout(format!("{url}: the answer did not end in time"))
        })??;
        Ok(Response {
            status: parts.status.as_u16(),
            headers: header_pairs(&parts.headers),
            body: data,
        })
    }

    /// A new connection of its own to `target`.
    async fn connect(&self, target: &Target) -> Result<Sender, Failure> {
        conn::connect(
            target,
            &self.tls.config(target, SystemTime::now()),
            self.settings.connect_timeout,
            self.roots_empty,
        )
        .await
    }

    /// Sends `request` on `sender` and waits, within the read timeout, for the head of the
    /// response.
    async fn head(
        &self,
        mut sender: Sender,
        target: &Target,
        request: http::Request<conn::Body>,
    ) -> Result<(Sender, http::Response<Incoming>), Failure> {
        let url = target.url.as_str();
        let roots_empty = self.roots_empty;
        sender
            .send
            .ready()
            .await
            .map_err(|e| conn::classify(&e, url, "before the request was sent", roots_empty))?;
        let response = sender
            .send
            .send_request(request)
            .await
            .map_err(|e| before_response(&e, url, roots_empty))?;
        Ok((sender, response))
    }
}

/// A failure inside a started exchange is final.
fn fatal_failure(failure: Failure) -> TransportError {
    match failure {
        Failure::Fatal(e) => e,
        Failure::Retry(reason) => TransportError::Connect {
            attempts: 1,
            reason,
        },
    }
}
