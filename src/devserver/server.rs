//! Starting the server and the handle of a running one.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::bootstrap::{self, BootstrapDoc};
use super::certs::Certificates;
use super::config::DevServerConfig;
use super::dm::{Engine, SessionOutcome};
use super::error::DevServerError;
use super::http::{HandshakeCounter, Handshakes, Shared, accept_loop};
use super::objects::{ObjectStats, Objects};
use super::repository::{Repository, Upload};
use super::scenario::{Urls, repo_key};
use super::transcript::{Record, Transcript, lock};

/// The development DM server. See the [module documentation](super).
pub struct DevServer;

/// A started server: its URLs, what it has seen so far, and how to stop it. Dropping it
/// stops the server too (without waiting).
pub struct RunningServer {
    addr: SocketAddr,
    urls: Urls,
    certs: Certificates,
    scenario: String,
    shared: Arc<Shared>,
    finished: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl DevServer {
    /// Prepares the certificates, binds the listening socket, compiles the scenario for the
    /// server's own URLs and starts serving on the current tokio runtime.
    pub async fn start(config: DevServerConfig) -> Result<RunningServer, DevServerError> {
        let mut sans = config.extra_sans.clone();
        if let Some(host) = &config.public_host {
            sans.push(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            );
        }
        let certs = Certificates::ensure(&config.cert_dir, &sans)?;
        let tls = certs.server_config(config.require_client_cert)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| DevServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DevServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let host = match &config.public_host {
            Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            Some(h) => h.clone(),
            None => match addr.ip() {
                ip if ip.is_unspecified() => "localhost".to_owned(),
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            },
        };
        let urls = Urls::new(&format!("https://{host}:{}", addr.port()));
        let scripts = config
            .scenario
            .scripts(&urls)
            .map_err(DevServerError::Scenario)?;
        let transcript = Transcript::open(config.transcript.as_deref(), config.summary.clone())?;
        let (finished_tx, finished) = watch::channel(0);
        let objects = Objects::start(
            &config.objects,
            &config.cert_dir,
            config.data_dir.as_deref(),
            config.max_upload_bytes,
            config.object_faults,
        )
        .await?;
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine::new(scripts)),
            repo: Mutex::new(Repository::new(
                config.scenario.repository.clone(),
                config.scenario.uploads.clone(),
            )),
            transcript,
            basic: config.basic.clone(),
            bootstrap: config.bootstrap.clone().map(BootstrapDoc::new),
            finished: finished_tx,
            handshakes: HandshakeCounter::default(),
            close: watch::channel(0).0,
            open: watch::channel(0).0,
            gzip: config.gzip,
            objects,
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(tls),
            shared.clone(),
            stop_rx,
        ));
        Ok(RunningServer {
            addr,
            urls,
            certs,
            scenario: config.scenario.name.clone(),
            shared,
            finished,
            stop,
            task: Some(task),
        })
    }
}

impl RunningServer {
    /// The address the server listens on (with the port picked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The DM URL (`https://host:port/dm`): the DM account's `SrvURI`.
    pub fn url(&self) -> &str {
        &self.urls.dm
    }

    /// The repository base URL (`https://host:port/repo`), what `{repo}` stands for.
    pub fn repo_url(&self) -> &str {
        &self.urls.repo
    }

    /// In bootstrap-server mode, the bootstrap document's URL
    /// (`https://host:port/bootstrap`): a DM account's `Auth/Bootstrap/ServerURI`.
    pub fn bootstrap_url(&self) -> Option<String> {
        self.shared
            .bootstrap
            .as_ref()
            .map(|_| format!("{}{}", self.urls.base, bootstrap::PATH))
    }

    /// How many times the bootstrap document was fetched (`GET`, answered `200`).
    pub fn bootstrap_fetches(&self) -> usize {
        self.shared
            .bootstrap
            .as_ref()
            .map_or(0, BootstrapDoc::fetched)
    }

    /// The test CA certificate (PEM): the DM account's `Ext/CACert`.
    pub fn ca_pem(&self) -> &str {
        &self.certs.ca_pem
    }

    /// The certificates in use and which files were generated.
    pub fn certificates(&self) -> &Certificates {
        &self.certs
    }

    /// The scenario's name.
    pub fn scenario_name(&self) -> &str {
        &self.scenario
    }

    /// Every transcript record so far.
    pub fn transcript(&self) -> Vec<Record> {
        self.shared.transcript.records()
    }

    /// Every summary line so far.
    pub fn summary(&self) -> Vec<String> {
        self.shared.transcript.summary()
    }

    /// The uploads (PUT/POST) the repository received at `path` (`sub/x`, `/repo/sub/x` or
    /// the full URL), oldest first, whatever they were answered.
    pub fn received(&self, path: &str) -> Vec<Upload> {
        let path = path.strip_prefix(self.urls.repo.as_str()).unwrap_or(path);
        match repo_key(path) {
            Ok(key) => lock(&self.shared.repo).received(&key),
            Err(_) => Vec::new(),
        }
    }

    /// What the server sent of each file-backed object so far (body bytes, responses and
    /// how they ended, faults injected); the same as `GET /admin/stats` gives.
    pub fn object_stats(&self) -> ObjectStats {
        self.shared.objects.stats()
    }

    /// The directory streamed (`application/octet-stream`) uploads are written to.
    pub fn data_dir(&self) -> &std::path::Path {
        self.shared.objects.data_dir()
    }

    /// One outcome per session so far, in order.
    pub fn results(&self) -> Vec<SessionOutcome> {
        lock(&self.shared.engine).outcomes()
    }

    /// Broken rules that belong to no session (e.g. a Package#3 from a device that never
    /// sent Package#1, a request without `OMADM-DevID`).
    pub fn problems(&self) -> Vec<String> {
        lock(&self.shared.engine).stray()
    }

    /// Every failure so far, as `session N: ...` lines, including sessions not finished.
    /// Empty when every expectation held.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .results()
            .iter()
            .flat_map(|o| {
                let mut lines: Vec<String> = o
                    .failures
                    .iter()
                    .map(|f| format!("session {}: {f}", o.number))
                    .collect();
                if !o.finished {
                    lines.push(format!("session {}: not finished", o.number));
                }
                lines
            })
            .collect();
        out.extend(
            self.problems()
                .into_iter()
                .map(|p| format!("no session: {p}")),
        );
        out
    }

    /// The TLS handshakes completed so far: how many were full and how many resumed an
    /// earlier session.
    pub fn handshakes(&self) -> Handshakes {
        self.shared.handshakes.get()
    }

    /// Closes every open connection (an exchange in flight is answered first), as a
    /// server's keep-alive timeout would between two sessions, and waits until they are
    /// closed: the client's next request opens a new connection.
    pub async fn close_connections(&self) {
        self.shared.close.send_modify(|n| *n += 1);
        let mut open = self.shared.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// How many sessions have finished.
    pub fn finished_sessions(&self) -> usize {
        *self.finished.borrow()
    }

    /// Waits until at least `n` sessions have finished.
    pub async fn wait_for_sessions(&self, n: usize) {
        let mut rx = self.finished.clone();
        let _ = rx.wait_for(|count| *count >= n).await;
    }

    /// Stops accepting, lets connections finish the exchange in flight, and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
