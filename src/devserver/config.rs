//! What a [`DevServer`](super::DevServer) is started with.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use super::objects::{DEFAULT_MAX_UPLOAD, ObjectFaults, ObjectSpec};
use super::scenario::Scenario;
use super::transcript::SummarySink;

/// The default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// The default certificate directory.
pub const DEFAULT_CERT_DIR: &str = "./devserver-certs";

/// The server's configuration. [`DevServerConfig::new`] gives the defaults.
#[derive(Clone)]
pub struct DevServerConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The host name in the server's URLs (and added to the certificate's names). Default:
    /// the listening IP address, or `localhost` when listening on all addresses.
    pub public_host: Option<String>,
    /// Where `ca.pem`, `ca.key`, `server.pem` and `server.key` are kept.
    pub cert_dir: PathBuf,
    /// Names the server certificate must cover besides `localhost`, `127.0.0.1`, `::1`.
    pub extra_sans: Vec<String>,
    /// Require a client certificate signed by the test CA.
    pub require_client_cert: bool,
    /// Require HTTP Basic with these credentials on every request (`401` otherwise).
    pub basic: Option<BasicAuth>,
    /// What to say in sessions and serve from the repository.
    pub scenario: Scenario,
    /// Write the transcript to this file as JSON lines.
    pub transcript: Option<PathBuf>,
    /// Receives the human-readable summary lines as they happen.
    pub summary: Option<SummarySink>,
    /// Bootstrap-server mode: serve these bytes as an MO serialization at `/bootstrap`
    /// ([`super::bootstrap`]).
    pub bootstrap: Option<Vec<u8>>,
    /// gzip content coding both ways: decode gzip-coded requests, gzip responses the client
    /// accepts coded, advertise `Accept-Encoding: gzip` (default on; `--no-gzip` turns it
    /// off).
    pub gzip: bool,
    /// Files served as `/repo/objects/NAME`, streamed ([`super::objects`]).
    pub objects: Vec<ObjectSpec>,
    /// Where streamed (`application/octet-stream`) uploads are written. Default: a
    /// directory of its own under `cert_dir`, removed when the server stops.
    pub data_dir: Option<PathBuf>,
    /// The largest streamed upload (`413` beyond).
    pub max_upload_bytes: u64,
    /// Faults injected into object `GET`s.
    pub object_faults: ObjectFaults,
}

impl DevServerConfig {
    /// Defaults: [`DEFAULT_LISTEN`], the built-in scenario, no client authentication, no
    /// transcript file, no summary sink.
    pub fn new(cert_dir: impl Into<PathBuf>) -> DevServerConfig {
        DevServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            public_host: None,
            cert_dir: cert_dir.into(),
            extra_sans: Vec::new(),
            require_client_cert: false,
            basic: None,
            scenario: Scenario::builtin(),
            transcript: None,
            summary: None,
            bootstrap: None,
            gzip: true,
            objects: Vec::new(),
            data_dir: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD,
            object_faults: ObjectFaults::default(),
        }
    }
}

impl fmt::Debug for DevServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevServerConfig")
            .field("listen", &self.listen)
            .field("public_host", &self.public_host)
            .field("cert_dir", &self.cert_dir)
            .field("extra_sans", &self.extra_sans)
            .field("require_client_cert", &self.require_client_cert)
            .field("basic", &self.basic)
            .field("scenario", &self.scenario.name)
            .field("transcript", &self.transcript)
            .field("summary", &self.summary.is_some())
            .field("bootstrap", &self.bootstrap.as_ref().map(Vec::len))
            .field("gzip", &self.gzip)
            .field("objects", &self.objects)
            .field("data_dir", &self.data_dir)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("object_faults", &self.object_faults)
            .finish()
    }
}

/// HTTP Basic credentials, parsed from `USER:PASSWORD`.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BasicAuth({:?}, ***)", self.user)
    }
}

impl FromStr for BasicAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<BasicAuth, String> {
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(BasicAuth {
                user: user.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err("expected USER:PASSWORD with a non-empty user".into()),
        }
    }
}

impl BasicAuth {
    /// Whether an `Authorization` header value carries these credentials.
    pub(crate) fn admits(&self, header: Option<&str>) -> bool {
        use base64::Engine as _;
        let Some((scheme, b64)) = header.and_then(|h| h.trim().split_once(' ')) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        decoded == format!("{}:{}", self.user, self.password).as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse_and_check() {
        let b: BasicAuth = "alice:s3:cret".parse().unwrap();
        assert_eq!(b.password, "s3:cret");
        assert!(b.admits(Some("Basic YWxpY2U6czM6Y3JldA==")));
        assert!(!b.admits(Some("Basic YWxpY2U6d3Jvbmc=")));
        assert!(!b.admits(Some("Bearer x")));
        assert!(!b.admits(None));
        assert!(":x".parse::<BasicAuth>().is_err());
        assert!(!format!("{b:?}").contains("s3"));
    }
}
