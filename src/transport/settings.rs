//! [`ClientSettings`]: what one [`HttpClient`](super::HttpClient) trusts, how it
//! authenticates, and its limits (timeouts, body size, retries).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How an [`HttpClient`](super::HttpClient) connects. Build one per DM server account: the
/// trust anchor and credentials come from that account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// Whom to trust as the server.
    pub trust: Trust,
    /// How the client proves who it is.
    pub client_auth: ClientAuth,
    /// Limit for name resolution, TCP connect and the TLS handshake together, per attempt.
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// Limit for one whole exchange on a connection: sending the request and receiving the
    /// complete response. Default 60 s.
    pub read_timeout: Duration,
    /// Responses whose body is larger than this are refused with
    /// [`TooLarge`](super::TransportError::TooLarge). Default 8 MiB.
    pub max_body_bytes: usize,
    /// Retries of connection failures only (see [`HttpClient::send`](super::HttpClient::send)).
    pub retry: RetryPolicy,
    /// Allow plain `http://` URLs whose host is a loopback address (`127.0.0.0/8`, `::1` or
    /// `localhost`, connecting only to loopback addresses). For tests and local
    /// development servers (e.g. the notification tests); off by default, since DM sessions
    /// and data-repository transfers need TLS.
    pub allow_plain_loopback: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            trust: Trust::Roots {
                extra_ca_files: Vec::new(),
            },
            client_auth: ClientAuth::None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_body_bytes: 8 * 1024 * 1024,
            retry: RetryPolicy::default(),
            allow_plain_loopback: false,
        }
    }
}

impl ClientSettings {
    /// The defaults with the given trust.
    pub fn with_trust(trust: Trust) -> Self {
        ClientSettings {
            trust,
            ..ClientSettings::default()
        }
    }
}

/// Whom the client trusts as the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's trust store (read with `rustls-native-certs`: on Debian-like
    /// systems `/etc/ssl/certs`, honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`) plus the CA
    /// certificates in these PEM files (`[tls] extra_ca_files`). The server's certificate
    /// must chain to one of them and name the URL's host.
    Roots { extra_ca_files: Vec<PathBuf> },
    /// PEM from the account's `Ext/CACert`. If it holds CA certificates (basicConstraints
    /// `cA` true), they are the only trust anchors (the server's chain and host name are
    /// checked against them). If it holds end-entity certificates, they are pinned: the
    /// server must present exactly one of them as its certificate (and prove it holds the
    /// key); host name and validity dates are then not checked — the pin is the identity.
    /// Mixing both kinds in one PEM is refused.
    Pem(String),
}

/// How the client authenticates itself to the server.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client authentication at the transport level.
    None,
    /// HTTP Basic: every request carries `Authorization: Basic base64(user:password)`
    /// (unless the request already has an `Authorization` header).
    Basic { user: String, password: String },
    /// A TLS client certificate: `chain_pem` is the client's certificate first, then any
    /// intermediates; `key_pem` its private key (PKCS#8, PKCS#1 or SEC1 PEM).
    Certificate { chain_pem: String, key_pem: String },
}

impl fmt::Debug for ClientAuth {
    /// Secrets (the password, the private key) are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::None => f.write_str("None"),
            ClientAuth::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            ClientAuth::Certificate { chain_pem, .. } => f
                .debug_struct("Certificate")
                .field("chain_pem", &format_args!("<{} bytes>", chain_pem.len()))
                .field("key_pem", &"<redacted>")
                .finish(),
        }
    }
}

/// Retries of connection failures: exponential backoff with jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, including the first (0 counts as 1).
    pub attempts: u32,
    /// The delay ceiling before the first retry; it doubles for each further retry.
    pub base: Duration,
    /// The largest delay ceiling.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 3 tries, waiting up to 2 s and then up to 4 s.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_secs(2),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One try, no retry.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 1,
            base: Duration::ZERO,
            max: Duration::ZERO,
        }
    }
}
