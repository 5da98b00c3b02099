//! What can keep the development server from starting.

use std::path::PathBuf;

/// Why [`DevServer::start`](super::DevServer::start) (or loading a scenario, or issuing a
/// certificate) failed. Problems *during* sessions are not errors: they are recorded in the
/// session results and the transcript.
#[derive(Debug, thiserror::Error)]
pub enum DevServerError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be generated, loaded or used.
    #[error("certificates: {0}")]
    Certificate(String),
    /// The scenario is not valid; the message names the place.
    #[error("scenario: {0}")]
    Scenario(String),
    /// A configuration value is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// Publishing a notification on an MQTT broker failed (the message names the broker).
    #[error("MQTT publish to {0}")]
    Mqtt(String),
    /// Sending a notification over UDP failed.
    #[error("UDP send to {to}: {source}")]
    Udp {
        to: String,
        #[source]
        source: std::io::Error,
    },
}

impl DevServerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DevServerError {
        DevServerError::Io {
            path: path.into(),
            source,
        }
    }
}
