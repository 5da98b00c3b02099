//! The D-Bus errors of `org.omadm.Client1` (ARCHITECTURE.md §1).

use crate::authority::AccessError;
use crate::store::Offload;
use crate::transfer::ControlError;

use super::value_fd::OpenError;

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

/// Offloaded work that gave no result: the caller learns that it failed, the log why (a
/// panic's message goes no further than the log).
impl From<Offload> for Error {
    fn from(e: Offload) -> Self {
        let detail = match &e {
            Offload::Panicked(payload) => payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default(),
            Offload::Stopped => String::new(),
        };
        tracing::error!("{e} {detail}");
        Error::Failed(e.to_string())
    }
}

/// A suspend or resume refused: no such transfer is `NotFound`, a finished one `NotAllowed`.
impl From<ControlError> for Error {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::NoSuchTransfer(_) => Error::NotFound(message),
            ControlError::Finished(_) => Error::NotAllowed(message),
        }
    }
}

/// A value `OpenValue` could not open: not one leaf is `InvalidUri`; a file or memfd that
/// failed is `Failed`, logged.
impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Access(e) => Error::from(e),
            OpenError::NotALeaf(message) => Error::InvalidUri(message),
            other => {
                let message = other.to_string();
                tracing::error!("OpenValue: {message}");
                Error::Failed(message)
            }
        }
    }
}
