//! The SQLite store: MO instances and their nodes, the change journal, cache validators.
//!
//! - [`schema`]: tables and migrations (`PRAGMA user_version`);
//! - [`codec`]: typed values to and from SQLite cells;
//! - [`read`]: queries, and [`crate::tree::resolve::TreeRead`] over the store;
//! - [`write`]: [`Txn`], the only way to change anything — one SQLite transaction per
//!   [`Store::write`], so a crash leaves the old state or the new one, never a mix;
//! - [`session_state`] — pending alerts, `DEFAULT` sources, `SUB` subscriptions, poll due times,
//!   asynchronous EXECs running;
//! - [`import`]: writing MO serialization items (HGET, bootstrap files);
//! - [`json`]: reading them: items written straight from the rows into a reply;
//! - [`leaves`]: the values of many nodes for a `Get`, borrowed from the rows;
//! - [`bootstrap_state`] — which factory bootstrap files were applied, and the factory reset;
//! - [`notification_state`] — the NOTIFICATION-IDs seen lately, per server;
//! - [`objects`] — large objects' files beside the database, published whole and swept
//!   when no node refers to them;
//! - [`transfers`] — large-object transfers in progress: URL, validator, bytes done and
//!   digest state, so that a transfer resumes after a restart;
//! - [`rights`]: [`Rights`], what a grant gives;
//! - [`dacl`]: the Delegation Access Control MO, kept in step with the grants in the same
//!   transaction;
//! - [`pool`]: [`Pool`], the process's connections (one writer for everything, a few
//!   readers), and [`offload`], the one way async code runs store work;
//! - [`checkpoint`]: WAL checkpoints on a thread of their own, never inside the writer's
//!   commits;
//! - [`durable`]: group commit — [`Pool::durable`] waits until earlier commits are on disk,
//!   one WAL sync for all the writes committed meanwhile;
//! - [`error`] — [`StoreError`].
//!
//! The database runs in WAL mode: readers on other connections see the last committed
//! state and never wait for a writer. Every change appends to the journal with a
//! monotonic sequence number and moves the cache validator of the instance it touched.

mod bootstrap_state;
mod checkpoint;
mod codec;
mod dacl;
mod durable;
mod error;
mod import;
mod json;
mod leaves;
mod notification_state;
mod objects;
mod pool;
mod read;
mod rights;
mod schema;
mod session_state;
mod transfers;
mod write;

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

pub use dacl::{DaclEntry, dacl_root};
pub use error::StoreError;
pub use import::Placement;
pub use json::{ItemSink, ItemsArray, Pruning, SHOW_ALL};
pub use leaves::LeafRef;
pub use objects::Objects;
pub use pool::{Lane, Offload, Pool, offload};
pub use read::{Change, ChangeKind, InstanceInfo, MAX_DEPTH, Stats, Usage};
pub use rights::{Rights, UnknownRight};
pub use session_state::{AsyncExec, PendingAlert, PollDue, Subscription};
pub use transfers::{Checkpoint, TransferRow};
pub use write::Txn;

/// A connection to the store. Open one per thread; any number may read while one writes.
pub struct Store {
    conn: Connection,
    /// Random per-database value mixed into cache validators so that a recreated store
    /// never repeats a validator a server may have cached.
    epoch: u32,
    bounds: Bounds,
    /// Set while a [`Store::snapshot`] runs: the instances it looked up.
    seen: RefCell<Option<read::Seen>>,
}

/// The admin as owners and writers are stored.
pub const ADMIN: &str = "admin";

/// Bytes every node row costs against its owner's quota beyond its parent path, name, value
/// and writer (the schema's triggers count the same).
pub const ROW_OVERHEAD: u64 = 32;

/// Statements each connection keeps prepared: more than the store has (about 70; rusqlite
/// keeps 16 by default), so that none is evicted and compiled again when a session mixes
/// reads, writes and session state. A statement costs a few KB, and only once it has run.
const STATEMENTS_KEPT: usize = 128;

/// SQLite's own page cache per connection, KiB. The kernel's page cache holds the store
/// file; SQLite's saves a `pread` and a copy per page hit. On the store bench (100,000
/// nodes) 1 MiB, 2 MiB (SQLite's default) and 16 MiB read and write alike, and 16 MiB did
/// not make the session bench's random leaf GETs cheaper either, so each of the four
/// connections keeps 1 MiB: what a large read leaves behind in the process stays small.
/// Memory-mapped reads stay off (`mmap_size = 0`): they made those GETs about 12% cheaper,
/// but every store page a read touches would then count in the daemon's RSS until the
/// kernel reclaims it, and a full read would leave the whole store file there.
const PAGE_CACHE_KIB: i64 = 1024;

/// What the store holds itself to, from `[limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Journal entries kept behind the newest (`journal_entries`, at least 1); older ones are
    /// pruned as writes go on.
    pub journal_entries: u64,
    /// Deepest node below an instance root a write may create (`tree_depth`, at most
    /// [`MAX_DEPTH`]).
    pub tree_depth: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            journal_entries: 100_000,
            tree_depth: 32,
        }
    }
}

impl Store {
    /// Opens the store at `path`, creating or migrating it as needed.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(StoreError::db("opening the database"))?;
        Store::setup(conn)
    }

    /// A private store in memory (tests, dry runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(StoreError::db("opening the database"))?;
        Store::setup(conn)
    }

    fn setup(conn: Connection) -> Result<Store, StoreError> {
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(StoreError::db("setting the busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(StoreError::db("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(StoreError::db("setting synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(StoreError::db("enabling foreign keys"))?;
        // Plans that never depend on bound values, so that a cached statement stays prepared.
        // Without this guarantee SQLite lets the values bound at prepare time shape the plan
        // (a `LIMIT ?`, an `= ?` the planner weighs as possibly 0 or 1 when it considers a
        // scan in `ORDER BY` order) and marks such a statement to be prepared again when
        // they are rebound, or when its bindings are cleared, which rusqlite's cache does
        // whenever a statement goes back to it: most cached queries were compiled afresh
        // on every run.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(StoreError::db("fixing query plans"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
        conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
            .map_err(StoreError::db("sizing the page cache"))?;
        conn.pragma_update(None, "mmap_size", 0)
            .map_err(StoreError::db("turning memory-mapped reads off"))?;
        let mut store = Store {
            conn,
            epoch: 0,
            bounds: Bounds::default(),
            seen: RefCell::new(None),
        };
        store.epoch = schema::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// Holds this connection's writes to `bounds` (clamped to what the store can serve).
    pub fn with_bounds(mut self, bounds: Bounds) -> Store {
        self.bounds = Bounds {
            journal_entries: bounds.journal_entries.max(1),
            tree_depth: bounds.tree_depth.clamp(1, MAX_DEPTH),
        };
        self
    }

    /// Makes every change committed so far durable on disk, now (syncs the WAL file and its
    /// directory, [`durable`]). Blocking, one sync per call: to acknowledge writes, wait for
    /// [`Pool::durable`] instead, which shares one sync among concurrent writers.
    pub fn sync(&self) -> Result<(), StoreError> {
        let Some(wal) = durable::wal_of(self.conn.path()) else {
            return Ok(());
        };
        durable::sync_wal(&wal, true).map_err(|e| StoreError::NotDurable {
            file: wal,
            source: std::sync::Arc::new(e),
        })
    }

    /// The cache validator of an instance whose last change had sequence `seq`.
    fn validator(&self, seq: i64) -> String {
        format!("{:08x}{seq:x}", self.epoch)
    }
}

/// Runs a transaction-control statement (`BEGIN`, `COMMIT`, `ROLLBACK`), prepared once per
/// connection rather than parsed on every use.
fn run(conn: &Connection, sql: &str, doing: &'static str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.raw_execute())
        .map(|_| ())
        .map_err(StoreError::db(doing))
}

#[cfg(test)]
mod tests;
