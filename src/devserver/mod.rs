//! `omadm-devserver`: a real, scriptable OMA DM 2.0 server over HTTPS, for development,
//! tests, benchmarks and demos.
//!
//! It answers the DM 2.0 package loop (PROTOCOL.md §1–§4) on `https://HOST:PORT/dm`, serves
//! and records a data repository on `https://HOST:PORT/repo/<path>`, checks what the client
//! sends against the protocol and the scenario's expectations, and keeps a transcript of
//! every exchange. The wire format is the project's own ([`crate::protocol`],
//! [`crate::tree::json`]); nothing here redefines it.
//!
//! - [`scenario`] — what the server says in each session and what its repository holds;
//!   the scenario file format and the built-in default;
//! - [`dm`] — the session engine: Package#1/#2/#3, sessions keyed by `OMADM-DevID`, the
//!   checks, [`SessionOutcome`];
//! - [`repository`] — `/repo/<path>`: GET with ranges, PUT/POST recorded, `Accept`,
//!   `415` + `OMADM-Accept` rules, [`Upload`];
//! - [`objects`] — large objects: `--object` files streamed from disk with ranges,
//!   validators and `Repr-Digest`, `application/octet-stream` uploads streamed to disk,
//!   fault injection, and the bytes sent per object (`/admin/stats`);
//! - [`bootstrap`] — the bootstrap-server mode: `/bootstrap` serves an MO serialization
//!   to omadmd's client-initiated bootstrap;
//! - [`certs`] — the test CA and server certificate, client certificates, rustls config;
//! - [`mqtt_publish`] — publishing a Package#0 on an MQTT broker topic (omadmd's MQTT
//!   channel);
//! - [`notify`] — `omadm-devserver notify`: a Package#0 built from account-ish parameters
//!   (with the client's own codec, [`crate::notification::package0`]) and sent over UDP;
//! - [`relay`] — [`Relay`]: a TCP relay counting the bytes on the wire each way (benches,
//!   tests);
//! - [`transcript`] — transcript [`Record`]s (JSON lines) and summary lines;
//! - [`config`] — [`DevServerConfig`], [`BasicAuth`];
//! - `http` — TLS accept loop, HTTP/1.1, HTTP Basic, routing;
//! - [`server`] — [`DevServer::start`] and the [`RunningServer`] handle;
//! - [`cli`] — the command line of the `omadm-devserver` binary (its man page is rendered
//!   from the same texts by [`crate::manpage`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), omadmd::devserver::DevServerError> {
//! use omadmd::devserver::{DevServer, DevServerConfig, Scenario};
//! let mut config = DevServerConfig::new("/tmp/devserver-certs");
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! config.scenario = Scenario::from_file("tests/fixtures/scenarios/basic.json".as_ref())?;
//! let server = DevServer::start(config).await?;
//! // SrvURI = server.url(), Ext/CACert = server.ca_pem(); run a client session, then:
//! server.wait_for_sessions(1).await;
//! assert!(server.failures().is_empty(), "{:?}", server.failures());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod bootstrap;
pub mod certs;
pub mod cli;
pub mod config;
pub mod dm;
pub mod error;
mod http;
pub mod mqtt_publish;
pub mod notify;
pub mod objects;
pub mod relay;
pub mod repository;
pub mod scenario;
pub mod server;
pub mod transcript;

pub use certs::{Certificates, ClientIdentity, issue_client_certificate};
pub use config::{BasicAuth, DevServerConfig};
pub use dm::SessionOutcome;
pub use error::DevServerError;
pub use http::Handshakes;
pub use objects::{ObjectCounters, ObjectFaults, ObjectSpec, ObjectStats};
pub use relay::{Relay, Wire};
pub use repository::{Upload, UploadedFile};
pub use scenario::Scenario;
pub use server::{DevServer, RunningServer};
pub use transcript::{Direction, Record, SummarySink};
