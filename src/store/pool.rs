//! The connections to one store file, shared by everyone in the process: one writer — every
//! change, to MO nodes and to session state alike, goes through it, so writers never compete
//! under SQLite's busy timeout — and a few readers, which in WAL mode never wait for it.
//!
//! [`offload`] is the one way async code runs work on these connections (and other blocking
//! file work): off the runtime's worker threads, on the process's store threads — a lane for
//! callers who wait, and a lower-priority lane for background work. [`Pool::durable`] is the
//! one way to wait until what was committed is on disk before acknowledging it. The pool
//! also hands the WAL's checkpoints to a thread of their own, out of the writer's commits
//! ([`checkpoint`](super::checkpoint)).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, TryLockError};

use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpoints;
use super::durable::{self, GroupCommit};
use super::{Bounds, Objects, Store, StoreError};

/// One writer connection and the read connections to the same store.
pub struct Pool {
    writer: Mutex<Store>,
    readers: Vec<Mutex<Store>>,
    next_reader: AtomicUsize,
    /// Makes commits durable before they are acknowledged; none for a store in memory.
    group: Option<GroupCommit>,
    /// Large objects' files beside the database; none for a store in memory.
    objects: Option<Objects>,
    /// Checkpoints the WAL off the writer's commits ([`checkpoint`](super::checkpoint));
    /// none for a store in memory. Held for what it does by itself, and declared last:
    /// dropped after every other connection closed, it checkpoints a last time.
    _checkpoints: Option<Checkpoints>,
}

/// Why work handed to [`offload`] gave no result.
#[derive(Debug, thiserror::Error)]
pub enum Offload {
    /// The work panicked; the payload, for whoever contains panics.
    #[error("the store work panicked")]
    Panicked(Box<dyn std::any::Any + Send>),
    /// The store threads are gone (the process is exiting) and did not run it.
    #[error("the store work did not run: the store threads are stopping")]
    Stopped,
}

impl Pool {
    /// Opens `readers` read connections (at least one) and the writer on the store at `path`,
    /// each held to `bounds`.
    pub fn open(path: &Path, bounds: Bounds, readers: usize) -> Result<Pool, StoreError> {
        let open = || Store::open(path).map(|s| s.with_bounds(bounds));
        let writer = open()?;
        let readers = (0..readers.max(1))
            .map(|_| open())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pool::new(writer, readers))
    }

    /// A pool of connections already open to the same store; with no `readers`, the writer
    /// also serves reads (an in-memory store, whose connections cannot share a database).
    /// The pool takes over the writer's WAL checkpoints: they run on a thread of their own,
    /// not inside the writer's commits ([`checkpoint`](super::checkpoint)).
    pub fn new(mut writer: Store, readers: Vec<Store>) -> Pool {
        let group = durable::wal_of(writer.conn.path()).map(GroupCommit::for_wal);
        let db = writer
            .conn
            .path()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let objects = db.as_deref().map(Objects::beside);
        let checkpoints = db.and_then(|db| {
            Checkpoints::start(&db, &mut writer.conn)
                .inspect_err(|e| {
                    tracing::warn!(
                        "{}: {e}; the writer checkpoints the WAL inside its commits",
                        db.display()
                    );
                })
                .ok()
        });
        Pool {
            writer: Mutex::new(writer),
            readers: readers.into_iter().map(Mutex::new).collect(),
            next_reader: AtomicUsize::new(0),
            group,
            objects,
            _checkpoints: checkpoints,
        }
    }

    /// The large objects' files of this store; none for a store in memory, which keeps no
    /// large objects.
    pub fn objects(&self) -> Option<&Objects> {
        self.objects.as_ref()
    }

    /// What the checkpoint thread did so far; none for a store in memory.
    #[cfg(test)]
    pub(super) fn checkpoints_done(&self) -> Option<super::checkpoint::Done> {
        self._checkpoints.as_ref().map(Checkpoints::done)
    }

    /// Waits until every change committed before this call is durable on disk: call it
    /// after a write and before acknowledging it (a D-Bus reply, a server's Package#3).
    /// Commits run without a sync of their own; one sync of the WAL then covers every commit
    /// made before it started, so concurrent writers share syncs (group commit,
    /// [`durable`](super::durable)). The wait blocks no thread; the syncs run on the store's
    /// sync thread.
    pub fn durable(&self) -> impl Future<Output = Result<(), StoreError>> + Send + 'static + use<> {
        let waiting = self.group.as_ref().map(GroupCommit::durable);
        async move {
            match waiting {
                Some(waiting) => waiting.await,
                None => Ok(()),
            }
        }
    }

    /// The writer connection, for [`Store::write`].
    pub fn writer(&self) -> MutexGuard<'_, Store> {
        // Invariant: a store transaction commits or rolls back as a whole, so a guard
        // poisoned by a panic elsewhere still guards a consistent connection.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free read connection, or the next one in turn when all are busy.
    pub fn reader(&self) -> MutexGuard<'_, Store> {
        if self.readers.is_empty() {
            return self.writer();
        }
        for m in &self.readers {
            match m.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[turn].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which store threads run a piece of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// A local caller waiting for an answer (D-Bus reads, identifying a caller):
    /// [`INTERACTIVE_THREADS`] threads at normal priority.
    Interactive,
    /// A local caller's write (D-Bus Set, Delete, CreateInstance, grants, bootstrap): one
    /// thread at normal priority. Writes take turns on the one writer connection anyway;
    /// on their own lane, a caller's write waiting for a session's import never holds up
    /// the readers' threads. The caller then waits for [`Pool::durable`] before it answers:
    /// this thread goes on to the next write meanwhile.
    Write,
    /// Sessions, SUB deliveries, change fan-out, scheduling: [`BACKGROUND_THREADS`] threads
    /// at nice [`BACKGROUND_NICE`], so that a 10k-node import or a fan-out to a thousand
    /// watchers yields the CPU to callers who wait.
    Background,
}

/// Threads serving [`Lane::Interactive`]: as many as the daemon opens read connections.
pub const INTERACTIVE_THREADS: usize = 3;

/// Threads serving [`Lane::Write`].
pub const WRITE_THREADS: usize = 1;

/// Threads serving [`Lane::Background`].
pub const BACKGROUND_THREADS: usize = 2;

/// The niceness of background threads (higher is lower priority; raising it needs no
/// privilege).
pub const BACKGROUND_NICE: i32 = 5;

/// Work waiting per lane; beyond it, whoever offloads waits for room (back-pressure on
/// the caller, never an unbounded queue).
const QUEUED: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

/// The store threads of the process, started on first use; each lane's threads share one
/// bounded queue.
struct Lanes {
    interactive: mpsc::Sender<Job>,
    write: mpsc::Sender<Job>,
    background: mpsc::Sender<Job>,
}

static LANES: LazyLock<Lanes> = LazyLock::new(|| Lanes {
    interactive: start_lane("omadmd-store", INTERACTIVE_THREADS, 0),
    write: start_lane("omadmd-write", WRITE_THREADS, 0),
    background: start_lane("omadmd-bg", BACKGROUND_THREADS, BACKGROUND_NICE),
});

/// Runs synchronous store work (SQLite, files) on one of `lane`'s store threads, so that it
/// never holds up the runtime's worker threads, and waits for its result. A fixed set of
/// threads fed by queues serves more reads per second with less CPU and a lower p99 than a
/// blocking-pool thread per call; `benches/offload.rs` measures both.
pub async fn offload<T: Send + 'static>(
    lane: Lane,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Offload> {
    let (reply, answer) = oneshot::channel();
    let job: Job = Box::new(move || {
        // The receiver may be gone (its caller was cancelled); the work is done anyway.
        let _ = reply.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
    });
    let queue = match lane {
        Lane::Interactive => &LANES.interactive,
        Lane::Write => &LANES.write,
        Lane::Background => &LANES.background,
    };
    queue.send(job).await.map_err(|_| Offload::Stopped)?;
    match answer.await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(payload)) => Err(Offload::Panicked(payload)),
        Err(_) => Err(Offload::Stopped),
    }
}

/// `threads` threads named `name-<n>`, at `nice`, taking jobs from one queue.
fn start_lane(name: &str, threads: usize, nice: i32) -> mpsc::Sender<Job> {
    let (queue, jobs) = mpsc::channel::<Job>(QUEUED);
    let jobs = Arc::new(Mutex::new(jobs));
    for n in 0..threads {
        let jobs = Arc::clone(&jobs);
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{n}"))
            .spawn(move || {
                if nice != 0 {
                    lower_priority(nice);
                }
                loop {
                    // Invariant: a job never panics out (it catches), so the lock is never
                    // poisoned while held; recover it anyway.
                    let job = jobs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .blocking_recv();
                    match job {
                        Some(job) => job(),
                        None => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start store thread {name}-{n}: {e}");
        }
    }
    queue
}

/// Sets the calling thread's niceness (Linux: per thread). A failure only costs priority.
fn lower_priority(nice: i32) {
    // SAFETY: gettid and setpriority take no pointers; PRIO_PROCESS with a thread id
    // changes only that thread on Linux.
    let done = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if done != 0 {
        tracing::warn!(
            "cannot lower a background store thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_what_the_writer_committed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(&dir.path().join("s.db"), Bounds::default(), 2).unwrap();
        pool.writer()
            .write(|tx| tx.record_session("srv"))
            .map(|(t, _)| t)
            .unwrap();
        let held = pool.reader();
        // The first reader is busy: the second answers, and sees the same commit.
        assert!(pool.reader().last_session("srv").unwrap().is_some());
        assert!(held.last_session("srv").unwrap().is_some());
    }

    #[test]
    fn an_in_memory_pool_reads_through_its_writer() {
        let pool = Pool::new(Store::open_in_memory().unwrap(), vec![]);
        pool.writer()
            .write(|tx| tx.record_session("srv"))
            .map(|(t, _)| t)
            .unwrap();
        assert!(pool.reader().last_session("srv").unwrap().is_some());
    }

    #[tokio::test]
    async fn offloaded_work_returns_its_result_or_its_panic() {
        for lane in [Lane::Interactive, Lane::Write, Lane::Background] {
            assert_eq!(offload(lane, || 6 * 7).await.unwrap(), 42);
            let panicked = offload(lane, || -> u8 { panic!("boom") }).await;
            assert!(matches!(panicked, Err(Offload::Panicked(_))));
            // The thread that ran the panicking job still serves.
            let names =
                (0..8).map(|_| offload(lane, || std::thread::current().name().map(str::to_owned)));
            for name in futures_util::future::join_all(names).await {
                assert!(name.unwrap().unwrap().starts_with("omadmd-"));
            }
        }
    }

    #[tokio::test]
    async fn background_threads_run_at_lower_priority() {
        let nice = |lane| {
            offload(lane, || {
                // SAFETY: gettid and getpriority take no pointers.
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
            })
        };
        let interactive = nice(Lane::Interactive).await.unwrap();
        assert_eq!(
            nice(Lane::Background).await.unwrap(),
            interactive + BACKGROUND_NICE
        );
    }
}
