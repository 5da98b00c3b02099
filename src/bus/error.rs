//! The D-Bus errors of `org.omadm.Client1` (ARCHITECTURE.md §1).

use crate::authority::AccessError;

/// `org.omadm.Client1.Error.*`, each with a message saying what went wrong.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.omadm.Client1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    NotFound(String),
    AccessDenied(String),
    InvalidUri(String),
    InvalidValue(String),
    NotAllowed(String),
    Conflict(String),
    Busy(String),
    Failed(String),
}

impl From<AccessError> for Error {
    fn from(e: AccessError) -> Self {
        let message = e.to_string();
        match e {
            AccessError::NotFound(_) => Error::NotFound(message),
            AccessError::Denied(_) => Error::AccessDenied(message),
            AccessError::InvalidUri(_) => Error::InvalidUri(message),
            AccessError::InvalidValue(_) => Error::InvalidValue(message),
            AccessError::NotAllowed(_) | AccessError::Limit(_) => Error::NotAllowed(message),
            AccessError::Conflict(_) => Error::Conflict(message),
            AccessError::Store(_) => {
                tracing::error!("store failure: {message}");
                Error::Failed(message)
            }
        }
    }
}
