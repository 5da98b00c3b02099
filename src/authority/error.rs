//! What an operation on MOs can fail with, in terms every face (D-Bus, sessions) maps to
//! its own codes.

use crate::store::StoreError;
use crate::tree::resolve::ResolveError;
use crate::tree::uri::UriError;

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    InvalidUri(String),
    #[error("{0}")]
    InvalidValue(String),
    /// The DDF does not allow the operation on that node (access type, scope).
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// A configured bound (`[limits]`) was reached: result or reply size, tree depth, quota.
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Store(StoreError),
}

impl AccessError {
    /// The DM status a server (or a host omadmd, for a guest) gets for this error
    /// (PROTOCOL.md §4).
    pub fn status(&self) -> u16 {
        match self {
            AccessError::NotFound(_) => 404,
            AccessError::Denied(_) => 403,
            AccessError::InvalidUri(_) | AccessError::InvalidValue(_) => 400,
            AccessError::NotAllowed(_) => 405,
            AccessError::Conflict(_) => 409,
            AccessError::Limit(_) => 413,
            AccessError::Store(_) => 500,
        }
    }
}

impl From<UriError> for AccessError {
    fn from(e: UriError) -> Self {
        AccessError::InvalidUri(e.to_string())
    }
}

impl From<ResolveError<StoreError>> for AccessError {
    fn from(e: ResolveError<StoreError>) -> Self {
        match e {
            ResolveError::Tree(s) => AccessError::from(s),
            ResolveError::Ambiguous { .. } => AccessError::InvalidUri(e.to_string()),
            ResolveError::TooMany { .. } => AccessError::Limit(e.to_string()),
            other => AccessError::NotFound(other.to_string()),
        }
    }
}

impl From<StoreError> for AccessError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchNode(_) => AccessError::NotFound(e.to_string()),
            StoreError::NoParent(_) => AccessError::NotFound(e.to_string()),
            StoreError::InstanceExists { .. } => AccessError::Conflict(e.to_string()),
            StoreError::RootIsLeaf(_)
            | StoreError::BadItem { .. }
            | StoreError::JournalPruned { .. } => AccessError::InvalidValue(e.to_string()),
            StoreError::TooDeep { .. } | StoreError::LargeObject { .. } => {
                AccessError::Limit(e.to_string())
            }
            other => AccessError::Store(other),
        }
    }
}
