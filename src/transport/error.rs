//! [`TransportError`]: why a request got no HTTP response. An HTTP status, even 4xx/5xx, is
//! not an error here; it comes back as a [`Response`](super::Response).

/// Why a request produced no HTTP response. Every message names the URL where one was
/// involved, and says what was wrong in words an administrator can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The URL is malformed, or uses a scheme/host the transport refuses (plain `http://`).
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The [`ClientSettings`](super::ClientSettings) cannot be used: bad PEM, unreadable CA
    /// file, a key that does not fit its certificate, ...
    #[error("transport settings: {0}")]
    Settings(String),
    /// The request itself cannot be sent as given (a header name or value HTTP forbids).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The TLS handshake or session failed: an untrusted or mismatched server certificate, a
    /// wrong host name, a client certificate the server refused, ... Never retried.
    #[error("TLS: {0}")]
    Tls(String),
    /// No connection could be made (refused, reset before a response, DNS, connect timeout),
    /// even after `attempts` tries.
    #[error("could not connect after {attempts} attempt(s): {reason}")]
    Connect { attempts: u32, reason: String },
    /// The server did not send its complete response within the read timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The response body is larger than `max_body_bytes`; it was not read.
    #[error("response refused: it is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The connection failed after the response had begun, or the server sent malformed HTTP.
    #[error("I/O: {0}")]
    Io(String),
    /// The response body's content coding cannot be decoded: a corrupt or truncated gzip
    /// stream, or a coding that was not asked for.
    #[error("content coding: {0}")]
    Coding(String),
}
