//! Why a DM session ended early: [`SessionError`], with the status each cause is reported
//! as (`SessionFinished`, `omadmctl session`, the logs).

use crate::transport::TransportError;

/// Why a session ended before the server ended it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The server answered with an HTTP error status.
    #[error("{url} answered HTTP {status}")]
    Http { url: String, status: u16 },
    /// A Package#2 that is not a package.
    #[error("malformed package: {0}")]
    Malformed(String),
    /// A package too large: a Package#2 above `max_package_bytes`, or one whose statuses
    /// cannot fit in `package3_bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// The server answered with another content type than a DM request.
    #[error("{url} answered with Content-Type {found:?}, not {expected}")]
    ContentType {
        url: String,
        found: String,
        expected: &'static str,
    },
    /// The server's certificate was refused.
    #[error("{0}")]
    Certificate(String),
    /// No connection to the server could be made (refused, reset, DNS, connect timeout).
    #[error("{0}")]
    Unreachable(String),
    /// The server took a request but sent no complete answer within the read timeout.
    #[error("{0}")]
    NoAnswer(String),
    /// The session ran past `session_seconds`.
    #[error("the session took longer than session_seconds = {seconds}; ended")]
    Overtime { seconds: u64 },
    /// The server sent more than `session_packages` Package#2.
    #[error("the server sent more than session_packages = {packages} Package#2; ended")]
    Loop { packages: u32 },
    /// A local failure (the store, the transport set-up, a panic).
    #[error("{0}")]
    Local(String),
}

impl SessionError {
    /// The status a session ending this way is reported with: the server's HTTP status,
    /// `400`, `413`, `415`, `495`, `503`, `504`, `508` or `500`.
    pub fn status(&self) -> i32 {
        match self {
            SessionError::Http { status, .. } => i32::from(*status),
            SessionError::Malformed(_) => 400,
            SessionError::TooLarge(_) => 413,
            SessionError::ContentType { .. } => 415,
            SessionError::Certificate(_) => 495,
            SessionError::Unreachable(_) | SessionError::NoAnswer(_) => 503,
            SessionError::Overtime { .. } => 504,
            SessionError::Loop { .. } => 508,
            SessionError::Local(_) => 500,
        }
    }
}

impl From<&TransportError> for SessionError {
    fn from(e: &TransportError) -> Self {
        let text = e.to_string();
        match e {
            TransportError::Tls(_) => SessionError::Certificate(text),
            TransportError::TooLarge { .. } => SessionError::TooLarge(text),
            TransportError::Connect { .. } => SessionError::Unreachable(text),
            TransportError::Timeout(_) => SessionError::NoAnswer(text),
            _ => SessionError::Local(text),
        }
    }
}

impl From<crate::store::StoreError> for SessionError {
    fn from(e: crate::store::StoreError) -> Self {
        SessionError::Local(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_status() {
        let all = [
            (
                SessionError::Http {
                    url: "u".into(),
                    status: 404,
                },
                404,
            ),
            (SessionError::Malformed("x".into()), 400),
            (SessionError::TooLarge("x".into()), 413),
            (
                SessionError::ContentType {
                    url: "u".into(),
                    found: "text/html".into(),
                    expected: "application/x",
                },
                415,
            ),
            (SessionError::Certificate("x".into()), 495),
            (SessionError::Unreachable("x".into()), 503),
            (SessionError::NoAnswer("x".into()), 503),
            (SessionError::Overtime { seconds: 1 }, 504),
            (SessionError::Loop { packages: 2 }, 508),
            (SessionError::Local("x".into()), 500),
        ];
        for (e, status) in all {
            assert_eq!(e.status(), status, "{e}");
        }
    }
}
