//! Errors of the store.

use crate::tree::uri::NodeAddr;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store schema version {found} is newer than this omadmd supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("{0}: no such node")]
    NoSuchNode(NodeAddr),
    #[error("{moid}/{miid}/: the instance already exists")]
    InstanceExists { moid: String, miid: String },
    #[error("{0}: the parent is a leaf or does not exist")]
    NoParent(NodeAddr),
    #[error("{0}: an instance root is always an interior node")]
    RootIsLeaf(NodeAddr),
    #[error("{uri}: {reason}")]
    BadItem { uri: String, reason: String },
    #[error(
        "the change journal no longer reaches back to sequence {since} (oldest kept: {oldest}); \
         re-read the nodes and continue from the current sequence"
    )]
    JournalPruned { since: u64, oldest: u64 },
    #[error("{at}: deeper than {max} levels below the instance root ([limits] tree_depth)")]
    TooDeep { at: String, max: usize },
    #[error(
        "{name}: a large object ({object}) is not sent inline; HPUT it to a server, or read it \
         with OpenValue"
    )]
    LargeObject {
        name: String,
        object: crate::tree::value::ObjectRef,
    },
    #[error("store row is corrupt: {0}")]
    Corrupt(String),
    #[error("store: cannot make the changes durable (sync of {}): {source}", file.display())]
    NotDurable {
        file: std::path::PathBuf,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

impl StoreError {
    /// Wraps a SQLite error with what the store was doing.
    pub(super) fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + Copy {
        move |source| StoreError::Db { context, source }
    }
}
