//! WAL checkpoints off the writer's commit path: a thread of the store's own, with a
//! connection of its own, copies committed pages from the WAL (`<db>-wal`) into the database
//! file, so that no write ever waits for a checkpoint's page copies and syncs.
//!
//! SQLite's default (`wal_autocheckpoint=1000`) runs a checkpoint inside the commit that
//! takes the WAL past 1,000 pages, on the connection that committed: here the one writer,
//! so every write queued behind it waited for the copy and two syncs (the WAL's before it,
//! the database's after). [`Checkpoints::start`] replaces that on the writer with a WAL hook
//! (which turns SQLite's autocheckpoint off): after each commit the hook notes how many
//! frames the WAL holds, and wakes the checkpoint thread once [`PASSIVE_FRAMES`] frames were
//! committed since the last checkpoint. The thread then runs:
//!
//! - a `PASSIVE` checkpoint: it copies every frame no reader still needs, without taking
//!   the write lock or waiting for anyone; writers go on committing and readers reading
//!   while it runs;
//! - a `RESTART` attempt, when the WAL holds [`RESTART_FRAMES`] frames or more (as set,
//!   after every checkpoint). The writer starts the WAL over from its beginning by itself
//!   only when a transaction begins with every frame already copied, which under a steady
//!   write load a checkpoint running beside it rarely achieves (frames committed while it
//!   copied remain): the WAL would grow on. `RESTART` takes the write lock, copies the frames
//!   committed since the `PASSIVE` one (a few), waits for readers still reading old frames,
//!   and starts the WAL over; a writer finding the lock taken waits in SQLite's busy handler
//!   (sleeps of 1, 2, 5… ms), at most [`RESTART_WAIT`] (the checkpoint connection's busy
//!   timeout) plus that short copy. A WAL file grown past [`TRUNCATE_BYTES`] (readers held
//!   old snapshots for long) is truncated to nothing instead (`TRUNCATE`), so that its disk
//!   space returns; otherwise the file is reused in place, where a WAL sync costs least
//!   (should it have grown past that size between the check and the restart, the writer's
//!   first commit after cuts it back: SQLite's `journal_size_limit`). A reader holding a
//!   snapshot keeps every frame after it in the WAL, and no checkpoint can change that short
//!   of making writers wait for the reader: the attempt gives up after [`RESTART_WAIT`] and
//!   is made again after the next [`PASSIVE_FRAMES`] frames; past [`WARN_FRAMES`] a warning
//!   says so, and the WAL shrinks once the reader is done;
//! - at close ([`Checkpoints`] dropped, after the pool's other connections), a `TRUNCATE`
//!   checkpoint: the database file holds everything and the WAL is empty; closing the last
//!   connection then removes it.
//!
//! Crash safety is SQLite's own: every checkpoint, in whatever mode, syncs the WAL before it
//! copies frames into the database and the database before the WAL may be reused
//! (`synchronous=NORMAL`, as every store connection; never `OFF`), so a crash during one
//! leaves the frames it copied in the WAL to be copied again, and committed data in one of
//! the two files. What the checkpoints change is only which thread waits for those syncs.
//! The durable acknowledgements ([`durable`](super::durable)) do not depend on checkpoints
//! at all: they sync the WAL, where every commit is first written.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Frames committed since the last checkpoint that start the next one: SQLite's own
/// autocheckpoint threshold (about 4 MiB of WAL at the default 4 KiB pages).
const PASSIVE_FRAMES: u32 = 1000;

/// WAL frames from which each checkpoint is followed by an attempt to start the WAL over
/// (`RESTART`): as many as start a checkpoint, so every checkpoint makes one, and the WAL
/// file stays about the size SQLite's own checkpoints keep it (4 MiB), reused in place.
/// Larger, writers would wait for an attempt less often (each wait is short), but the WAL
/// would grow longer before its blocks are reused; tried at 4× (16 MiB), durable creates
/// were no faster in `benches/write.rs`.
const RESTART_FRAMES: u32 = PASSIVE_FRAMES;

/// WAL frames past which a failed attempt to start the WAL over is logged as a warning
/// (about 64 MiB at 4 KiB pages): readers have held old snapshots through many attempts.
const WARN_FRAMES: u32 = 16 * PASSIVE_FRAMES;

/// A WAL file larger than this is truncated (`TRUNCATE`) rather than reused (`RESTART`).
const TRUNCATE_BYTES: u64 = 32 << 20;

/// How long a `RESTART` or `TRUNCATE` attempt waits for the writer's transaction and for
/// readers of old frames, holding up writers meanwhile.
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// How long the checkpoint at close waits for readers (another process may hold one).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why the checkpoints stay with the writer.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    #[error("cannot open a checkpoint connection: {0}")]
    Open(#[source] rusqlite::Error),
    #[error("cannot start the checkpoint thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot hook the writer's commits or limit its WAL: {0}")]
    Hook(#[source] rusqlite::Error),
}

/// The checkpoint thread of one store file (ended, after a last checkpoint, when this is
/// dropped).
pub(super) struct Checkpoints {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the checkpoint thread: enough frames were committed, or the store is closing.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Frames in the WAL after the last commit (the writer's WAL hook).
    frames: u32,
    /// Frames in the WAL when the last checkpoint ended (0 once the WAL started over): the
    /// next one is due [`PASSIVE_FRAMES`] frames later.
    checkpointed: u32,
    closing: bool,
    /// A warning said that readers keep the WAL long; not repeated until it starts over.
    warned: bool,
    /// What the thread did so far.
    done: Done,
}

/// What a checkpoint thread did (logged at close).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Done {
    /// `PASSIVE` checkpoints run.
    pub(super) passive: u64,
    /// Times the WAL was started over (`RESTART` or `TRUNCATE` succeeded).
    pub(super) restarts: u64,
    /// Attempts to start it over that gave up on readers or the writer.
    pub(super) busy: u64,
}

impl State {
    /// Whether enough frames were committed since the last checkpoint to run one.
    fn due(&self) -> bool {
        // A WAL that started over holds fewer frames than were checkpointed: all are new.
        let base = if self.frames >= self.checkpointed {
            self.checkpointed
        } else {
            0
        };
        self.frames - base >= PASSIVE_FRAMES
    }
}

impl Checkpoints {
    /// Takes over checkpointing of the store file at `db` from `writer`, its one writing
    /// connection: installs the WAL hook (which ends SQLite's autocheckpoint on `writer`)
    /// and starts the checkpoint thread with a connection of its own. If either fails,
    /// `writer` keeps checkpointing as SQLite does by default.
    pub(super) fn start(db: &Path, writer: &mut Connection) -> Result<Checkpoints, StartError> {
        let conn = open(db).map_err(StartError::Open)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            let db = db.to_owned();
            std::thread::Builder::new()
                .name("omadmd-ckpt".into())
                .spawn(move || shared.run(&db, conn))
                .map_err(StartError::Thread)?
        };
        let checkpoints = Checkpoints {
            shared: Arc::clone(&shared),
            thread: Some(thread),
        };
        writer
            .pragma_update(None, "journal_size_limit", TRUNCATE_BYTES as i64)
            .map_err(StartError::Hook)?;
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames| {
                shared.committed(u32::try_from(frames).unwrap_or(0));
                Ok(())
            }))
            .map_err(StartError::Hook)?;
        Ok(checkpoints)
    }

    /// What the checkpoint thread did so far.
    #[cfg(test)]
    pub(super) fn done(&self) -> Done {
        self.shared.lock().done
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic of the thread was reported as it happened; there is nothing left to end.
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Invariant: the state is plain numbers, consistent whenever the lock is released.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer committed; the WAL now holds `frames` frames. Runs inside the commit: a
    /// lock nobody holds for long, and a wake-up once per [`PASSIVE_FRAMES`] frames.
    fn committed(&self, frames: u32) {
        let mut state = self.lock();
        let was_due = state.due();
        state.frames = frames;
        if !was_due && state.due() {
            self.wake.notify_one();
        }
    }

    /// The checkpoint thread: a checkpoint whenever one is due, a last one at close.
    fn run(&self, db: &Path, conn: Connection) {
        loop {
            {
                let mut state = self.lock();
                while !state.due() && !state.closing {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.closing {
                    break;
                }
            }
            self.checkpoint(db, &conn);
        }
        let done = self.lock().done;
        tracing::debug!(
            "{}: {} checkpoints, the WAL started over {} times, {} attempts held up",
            db.display(),
            done.passive,
            done.restarts,
            done.busy
        );
        let last = conn
            .busy_timeout(CLOSE_WAIT)
            .and_then(|()| checkpoint(&conn, Mode::Truncate));
        let failed = match last {
            Ok(outcome) if !outcome.busy => return,
            Ok(_) => "readers still read old snapshots".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            "cannot checkpoint {} at close: {failed}; what the WAL holds is copied at the next \
             checkpoint",
            db.display()
        );
    }

    /// One `PASSIVE` checkpoint, and when the WAL is long, an attempt to start it over.
    fn checkpoint(&self, db: &Path, conn: &Connection) {
        let passive = match checkpoint(conn, Mode::Passive) {
            Ok(outcome) => outcome,
            Err(e) => {
                // Nothing is lost: the frames stay in the WAL, and the next commits bring
                // the next attempt.
                tracing::warn!("cannot checkpoint {}: {e}", db.display());
                let frames = self.lock().frames;
                self.checkpointed(Ran::Failed, frames);
                return;
            }
        };
        if passive.frames < RESTART_FRAMES {
            self.checkpointed(Ran::Passive, passive.frames);
            return;
        }
        let wal_bytes = super::durable::wal_of(db.to_str())
            .and_then(|wal| std::fs::metadata(wal).ok())
            .map_or(0, |m| m.len());
        let mode = if wal_bytes > TRUNCATE_BYTES {
            Mode::Truncate
        } else {
            Mode::Restart
        };
        match checkpoint(conn, mode) {
            Ok(again) if !again.busy => self.checkpointed(Ran::Restarted, 0),
            Ok(again) => {
                // Once per WAL that grew long: every later attempt would say the same.
                if again.frames >= WARN_FRAMES && !std::mem::replace(&mut self.lock().warned, true)
                {
                    tracing::warn!(
                        "the WAL of {} holds {} frames ({wal_bytes} bytes): readers still read \
                         old snapshots; it is started over once they are done",
                        db.display(),
                        again.frames
                    );
                }
                self.checkpointed(Ran::HeldUp, again.frames);
            }
            Err(e) => {
                tracing::warn!("cannot start the WAL of {} over: {e}", db.display());
                self.checkpointed(Ran::HeldUp, passive.frames);
            }
        }
    }

    /// Records a checkpoint (`ran`) that left the WAL at `frames` frames.
    fn checkpointed(&self, ran: Ran, frames: u32) {
        let mut state = self.lock();
        let done = &mut state.done;
        if !matches!(ran, Ran::Failed) {
            done.passive += 1;
        }
        match ran {
            Ran::Restarted => {
                done.restarts += 1;
                // The frames the hook last counted are gone with the old WAL (the next
                // commit counts afresh).
                state.frames = 0;
                state.warned = false;
            }
            Ran::HeldUp => done.busy += 1,
            Ran::Failed | Ran::Passive => {}
        }
        // Frames committed meanwhile are counted from here on: the next checkpoint is due
        // [`PASSIVE_FRAMES`] frames after these.
        state.checkpointed = frames.min(state.frames);
    }
}

/// The checkpoint thread's own connection to the store file at `db`.
fn open(db: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // As every store connection: checkpoints sync the WAL before copying and the database
    // after.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(RESTART_WAIT)?;
    Ok(conn)
}

/// How a round of the checkpoint thread went.
#[derive(Clone, Copy)]
enum Ran {
    /// The `PASSIVE` checkpoint failed.
    Failed,
    /// A `PASSIVE` checkpoint ran; the WAL was short enough to go on.
    Passive,
    /// It ran, and the WAL was started over.
    Restarted,
    /// It ran; starting the WAL over was held up by readers or the writer, or failed.
    HeldUp,
}

#[derive(Clone, Copy)]
enum Mode {
    Passive,
    Restart,
    Truncate,
}

/// What `PRAGMA wal_checkpoint` answered.
struct Outcome {
    /// It could not finish (readers of old frames, or the writer, held it up).
    busy: bool,
    /// Frames in the WAL.
    frames: u32,
}

fn checkpoint(conn: &Connection, mode: Mode) -> rusqlite::Result<Outcome> {
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
        Mode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    conn.query_row(sql, [], |row| {
        Ok(Outcome {
            busy: row.get::<_, i64>(0)? != 0,
            frames: u32::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
        })
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Instant;

    use super::super::{Bounds, Pool, Store, durable};
    use super::*;

    /// Bytes of blob each filler commit writes: 16 pages and their index entries.
    const BLOB: i64 = 64 << 10;

    fn open(dir: &Path) -> (Pool, PathBuf) {
        let db = dir.join("s.db");
        let pool = Pool::open(&db, Bounds::default(), 1).unwrap();
        pool.writer()
            .conn
            .execute_batch("CREATE TABLE filler (b BLOB)")
            .unwrap();
        let wal = durable::wal_of(db.to_str()).unwrap();
        (pool, wal)
    }

    /// One commit of about 17 WAL frames through the pool's writer.
    fn fill(pool: &Pool) {
        pool.writer()
            .conn
            .execute("INSERT INTO filler VALUES (zeroblob(?1))", [BLOB])
            .unwrap();
    }

    fn done(pool: &Pool) -> Done {
        pool.checkpoints_done().unwrap()
    }

    fn len(file: &Path) -> u64 {
        std::fs::metadata(file).map_or(0, |m| m.len())
    }

    /// Waits until `cond` holds, committing filler meanwhile when `writing`; a checkpoint
    /// thread that never gets there fails the test instead of hanging it.
    fn until(pool: &Pool, writing: bool, what: &str, cond: impl Fn(&Pool) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond(pool) {
            assert!(
                Instant::now() < deadline,
                "never: {what} ({:?})",
                done(pool)
            );
            if writing {
                fill(pool);
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn the_checkpoint_thread_checkpoints_and_the_writer_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, wal) = open(dir.path());
        // SQLite's autocheckpoint is off on the writer (the hook replaced it).
        let auto: i64 = pool
            .writer()
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0);
        let db = dir.path().join("s.db");
        let db_before = len(&db);
        // Fewer frames than a checkpoint waits for: nothing is copied.
        for _ in 0..(PASSIVE_FRAMES as usize / 17 / 2) {
            fill(&pool);
        }
        assert_eq!(done(&pool), Done::default());
        assert_eq!(len(&db), db_before);
        until(&pool, true, "a checkpoint", |p| done(p).passive >= 1);
        // The database file holds what the checkpoint thread copied; the WAL still has room
        // for the frames committed since.
        until(&pool, false, "pages copied", |_| len(&db) > db_before);
        assert!(len(&wal) > 0);
    }

    #[test]
    fn the_wal_starts_over_under_load_and_shrinks_once_a_reader_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, wal) = open(dir.path());
        // A reader holding a snapshot of the first frames.
        let reader = Store::open(&dir.path().join("s.db")).unwrap();
        reader.conn.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .conn
            .query_row("SELECT count(*) FROM filler", [], |r| r.get(0))
            .unwrap();
        // The WAL grows past the cap while the reader needs its frames: attempts to start
        // it over give up rather than keep the writer waiting.
        until(&pool, true, "a WAL past the cap", |_| {
            len(&wal) > TRUNCATE_BYTES
        });
        until(&pool, true, "an attempt held up by the reader", |p| {
            done(p).busy >= 1
        });
        assert_eq!(done(&pool).restarts, 0);
        reader.conn.execute_batch("ROLLBACK").unwrap();
        drop(reader);
        // Let go, the WAL is truncated and started over at the next attempt.
        until(&pool, true, "the WAL started over", |p| {
            done(p).restarts >= 1
        });
        fill(&pool);
        assert!(len(&wal) <= TRUNCATE_BYTES, "{} bytes", len(&wal));
        // A steady load of durable writes (each synced, as the daemon's are) keeps starting
        // it over: it does not grow past the cap again.
        let mut largest = 0;
        let restarts = done(&pool).restarts;
        let mut written = 0;
        while done(&pool).restarts < restarts + 3 {
            fill(&pool);
            pool.writer().sync().unwrap();
            written += BLOB as u64;
            largest = largest.max(len(&wal));
            assert!(written < 64 * TRUNCATE_BYTES, "{:?}", done(&pool));
        }
        assert!(
            largest <= TRUNCATE_BYTES,
            "the WAL grew to {largest} bytes under a steady load"
        );
    }

    #[test]
    fn a_closing_pool_checkpoints_everything_and_leaves_no_wal() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, wal) = open(dir.path());
        for _ in 0..10 {
            fill(&pool);
        }
        assert_eq!(done(&pool).passive, 0);
        assert!(len(&wal) > 10 * BLOB as u64);
        drop(pool);
        assert_eq!(len(&wal), 0, "the WAL after close");
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let rows: i64 = store
            .conn
            .query_row("SELECT count(*) FROM filler", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 10);
    }
}
