//! Durable acknowledgements with group commit: a write is answered only once it is on disk,
//! and the writes committed while one fsync runs share the next.
//!
//! Commits run with `synchronous=NORMAL`: SQLite appends a transaction's frames to the WAL
//! (`<db>-wal`) with plain `write()` and syncs nothing, so a commit costs no fsync but could
//! roll back on power loss. What makes it durable is an fsync of the WAL file after it, which
//! is all `synchronous=FULL` adds in WAL mode ("an additional sync operation of the WAL file
//! happens after each transaction commit"; the SQLite developers name flushing the WAL file
//! as the cheaper way to make WAL-mode commits made under NORMAL durable). An fsync flushes
//! the file's pages whichever descriptor wrote them, so one fsync here, on a descriptor of its
//! own, covers every frame committed before it started. The rest is SQLite's own doing under
//! NORMAL: when the WAL is reused after a checkpoint, the new WAL header is written and synced
//! before any frame follows it, and a checkpoint syncs the WAL before copying it into the
//! database and the database after, so frames overwritten by a restart are already durable
//! in the database file; checkpoints run on a thread of their own
//! ([`checkpoint`](super::checkpoint)), so neither commits nor these syncs wait for one. The
//! directory entries of the database and of a newly created WAL are synced once per
//! [`GroupCommit`] (SQLite also syncs the directory on a WAL's first sync), so that the
//! files themselves survive.
//!
//! [`GroupCommit`]: whoever needs its commits durable takes a ticket after committing and
//! waits (asynchronously: no runtime worker blocks) until a sync covering the ticket has
//! finished. One thread per store does the syncs: it takes all the tickets issued so far,
//! syncs, and releases them; tickets issued while it synced wait for the next round. Under
//! concurrent writers one fsync thus covers many commits, and no acknowledgement can precede
//! the fsync of its commit: the ticket is issued after the commit, and a sync covers only the
//! tickets issued before it started.

use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use tokio::sync::watch;

use super::StoreError;

/// The syncs that make one store's commits durable, done in rounds by a thread of its own
/// (started on first use, ended when this is dropped).
pub(super) struct GroupCommit {
    shared: Arc<Shared>,
    /// The sync thread, once started; the error if it could not be.
    thread: OnceLock<Result<(), Arc<io::Error>>>,
}

/// What makes commits durable: syncing the WAL file (in production), or a stand-in (tests).
pub(super) type SyncFn = Box<dyn Fn() -> io::Result<()> + Send + Sync>;

struct Shared {
    /// The file whose sync makes commits durable, for messages.
    file: PathBuf,
    sync: SyncFn,
    tickets: Mutex<Tickets>,
    /// Wakes the sync thread: a ticket was issued, or the store is closing.
    wake: Condvar,
    /// How far the syncs got; waiters watch it.
    synced: watch::Sender<Synced>,
}

#[derive(Default)]
struct Tickets {
    /// Tickets issued so far (the last one's number).
    issued: u64,
    /// The store is closing: the sync thread ends once every issued ticket is covered.
    closing: bool,
}

#[derive(Clone, Default)]
struct Synced {
    /// Every ticket up to this one is durable.
    covered: u64,
    /// A sync failed: nothing committed since the last good sync may be on disk, and a later
    /// sync cannot prove otherwise (the kernel may have dropped the pages that failed), so
    /// every wait from then on fails.
    failed: Option<Arc<io::Error>>,
}

impl GroupCommit {
    /// The group commit of the store whose WAL is `wal`.
    pub(super) fn for_wal(wal: PathBuf) -> GroupCommit {
        let file = WalFile {
            wal: wal.clone(),
            directory_synced: AtomicBool::new(false),
        };
        GroupCommit::new(wal, Box::new(move || file.sync()))
    }

    /// A group commit whose syncs call `sync` (of `file`, as messages name it).
    pub(super) fn new(file: PathBuf, sync: SyncFn) -> GroupCommit {
        GroupCommit {
            shared: Arc::new(Shared {
                file,
                sync,
                tickets: Mutex::new(Tickets::default()),
                wake: Condvar::new(),
                synced: watch::Sender::new(Synced::default()),
            }),
            thread: OnceLock::new(),
        }
    }

    /// Waits until every commit made before this call is durable. The ticket is taken now,
    /// not when the future is first polled.
    pub(super) fn durable(
        &self,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static + use<> {
        let started = self
            .thread
            .get_or_init(|| start(&self.shared).map_err(Arc::new))
            .clone();
        let ticket = started.map(|()| {
            let mut tickets = self.shared.lock();
            tickets.issued += 1;
            self.shared.wake.notify_one();
            (tickets.issued, self.shared.synced.subscribe())
        });
        let file = self.shared.file.clone();
        async move {
            let not_durable = |source| StoreError::NotDurable {
                file: file.clone(),
                source,
            };
            let (ticket, mut synced) = ticket.map_err(not_durable)?;
            let outcome = synced
                .wait_for(|s| s.failed.is_some() || s.covered >= ticket)
                .await
                .map(|s| s.failed.clone());
            match outcome {
                Ok(None) => Ok(()),
                Ok(Some(failed)) => Err(not_durable(failed)),
                Err(_) => Err(not_durable(Arc::new(io::Error::other(
                    "the store closed before the write was synced",
                )))),
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tickets> {
        // Invariant: the counters are plain numbers, consistent whenever the lock is
        // released; a panic elsewhere cannot leave them half-changed.
        self.tickets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sync thread: rounds of "take every ticket issued so far, sync, release them" until
    /// the store closes with no ticket left.
    fn run(&self) {
        let mut covered = 0;
        loop {
            let upto = {
                let mut tickets = self.lock();
                while tickets.issued == covered && !tickets.closing {
                    tickets = self.wake.wait(tickets).unwrap_or_else(|p| p.into_inner());
                }
                if tickets.issued == covered {
                    return;
                }
                tickets.issued
            };
            let outcome = (self.sync)();
            covered = upto;
            self.synced.send_modify(|s| {
                s.covered = upto;
                if let Err(e) = outcome
                    && s.failed.is_none()
                {
                    tracing::error!(
                        "cannot sync {}: {e}; no write is acknowledged from now on: each \
                         fails, though it may be stored (restart omadmd)",
                        self.file.display()
                    );
                    s.failed = Some(Arc::new(e));
                }
            });
        }
    }
}

/// Starts the sync thread of `shared`.
fn start(shared: &Arc<Shared>) -> io::Result<()> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("omadmd-sync".into())
        .spawn(move || shared.run())
        .map(drop)
}

/// The WAL file of a store, and whether its directory was synced yet.
struct WalFile {
    wal: PathBuf,
    directory_synced: AtomicBool,
}

impl WalFile {
    fn sync(&self) -> io::Result<()> {
        let first = !self.directory_synced.load(Ordering::Acquire);
        sync_wal(&self.wal, first)?;
        if first {
            self.directory_synced.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Syncs the WAL file `wal` (data, and the size it grew to), and its directory when
/// `directory` is set. A WAL that is not there holds nothing to sync: SQLite removes it only
/// after checkpointing it into the database and syncing that.
pub(super) fn sync_wal(wal: &Path, directory: bool) -> io::Result<()> {
    match File::open(wal) {
        Ok(file) => file.sync_data()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if directory && let Some(dir) = wal.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The WAL file of the database at `db` (SQLite's naming), none for a database in memory.
pub(super) fn wal_of(db: Option<&str>) -> Option<PathBuf> {
    db.filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(format!("{p}-wal")))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use super::super::{Bounds, Lane, Pool, Store, offload};
    use super::*;

    /// Counts the syncs begun and finished; each takes a few milliseconds, as a slow disk's
    /// would, so that writers pile up behind it.
    #[derive(Default)]
    struct Counted {
        begun: AtomicU64,
        finished: AtomicU64,
    }

    fn counted(fail_after: Option<u64>) -> (Arc<Counted>, GroupCommit) {
        let counts = Arc::new(Counted::default());
        let c = Arc::clone(&counts);
        let sync: SyncFn = Box::new(move || {
            let n = c.begun.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(Duration::from_millis(5));
            c.finished.fetch_add(1, Ordering::SeqCst);
            match fail_after {
                Some(good) if n > good => Err(io::Error::other("disk on fire")),
                _ => Ok(()),
            }
        });
        (counts, GroupCommit::new("test-wal".into(), sync))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_syncs_and_each_waits_for_one_begun_after_its_commit() {
        const WRITERS: usize = 16;
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(Pool::open(&dir.path().join("s.db"), Bounds::default(), 1).unwrap());
        let (counts, group) = counted(None);
        let group = Arc::new(group);
        let writers = (0..WRITERS).map(|i| {
            let (pool, group, counts) = (pool.clone(), group.clone(), counts.clone());
            tokio::spawn(async move {
                offload(Lane::Write, move || {
                    pool.writer()
                        .write(|tx| tx.record_session(&format!("srv{i}")))
                        .unwrap()
                })
                .await
                .unwrap();
                // Committed: every sync begun from now on covers this commit.
                let begun_before = counts.begun.load(Ordering::SeqCst);
                group.durable().await.unwrap();
                let finished = counts.finished.load(Ordering::SeqCst);
                assert!(
                    finished > begun_before,
                    "acknowledged after {finished} syncs, but only a sync after the first \
                     {begun_before} covers the commit"
                );
            })
        });
        for w in futures_util::future::join_all(writers).await {
            w.unwrap();
        }
        let syncs = counts.finished.load(Ordering::SeqCst);
        assert!(syncs >= 1);
        assert!(
            syncs < WRITERS as u64,
            "{WRITERS} concurrent writers took {syncs} syncs"
        );
        // No sync ran without a writer waiting for it.
        assert_eq!(counts.begun.load(Ordering::SeqCst), syncs);
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_writers_and_every_later_one() {
        let (counts, group) = counted(Some(1));
        group.durable().await.unwrap();
        let failed = group.durable().await.unwrap_err();
        assert!(matches!(failed, StoreError::NotDurable { .. }), "{failed}");
        assert!(failed.to_string().contains("disk on fire"), "{failed}");
        // The next write cannot be proven durable either, whatever a later sync says.
        assert!(group.durable().await.is_err());
        assert!(counts.begun.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn a_file_store_syncs_its_wal_and_one_in_memory_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let pool = Pool::open(&path, Bounds::default(), 1).unwrap();
        pool.writer().write(|tx| tx.record_session("srv")).unwrap();
        assert!(wal_of(path.to_str()).unwrap().exists());
        pool.durable().await.unwrap();
        pool.writer().sync().unwrap();
        let memory = Pool::new(Store::open_in_memory().unwrap(), vec![]);
        memory.durable().await.unwrap();
        memory.writer().sync().unwrap();
    }
}
