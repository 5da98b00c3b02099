//! The connections to one store file, shared by everyone in the process: one writer — every
//! change, to MO nodes and to session state alike, goes through it, so writers never compete
//! under SQLite's busy timeout — and a few readers, which in WAL mode never wait for it.
//!
//! [`offload`] is the one way async code runs work on these connections: off the runtime's
//! worker threads, on tokio's blocking pool.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use super::{Bounds, Store, StoreError};

/// One writer connection and the read connections to the same store.
pub struct Pool {
    writer: Mutex<Store>,
    readers: Vec<Mutex<Store>>,
    next_reader: AtomicUsize,
}

/// Why work handed to [`offload`] gave no result.
#[derive(Debug, thiserror::Error)]
pub enum Offload {
    /// The work panicked; the payload, for whoever contains panics.
    #[error("the store work panicked")]
    Panicked(Box<dyn std::any::Any + Send>),
    /// The runtime is shutting down and did not run it.
    #[error("the store work did not run: the runtime is stopping")]
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
    pub fn new(writer: Store, readers: Vec<Store>) -> Pool {
        Pool {
            writer: Mutex::new(writer),
            readers: readers.into_iter().map(Mutex::new).collect(),
            next_reader: AtomicUsize::new(0),
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

/// Runs synchronous store work (SQLite, files) on tokio's blocking pool, so that it never
/// holds up the runtime's worker threads. `benches/offload.rs` measures this against
/// dedicated store threads fed by queues.
pub async fn offload<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Offload> {
    match tokio::task::spawn_blocking(work).await {
        Ok(t) => Ok(t),
        Err(e) => match e.try_into_panic() {
            Ok(payload) => Err(Offload::Panicked(payload)),
            Err(_) => Err(Offload::Stopped),
        },
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
        assert_eq!(offload(|| 6 * 7).await.unwrap(), 42);
        let panicked = offload(|| -> u8 { panic!("boom") }).await;
        assert!(matches!(panicked, Err(Offload::Panicked(_))));
    }
}
