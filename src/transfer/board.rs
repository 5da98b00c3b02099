//! The board: what every transfer is doing now, for whoever shows it (the D-Bus
//! `org.omadm.Client1.Transfer` objects, `omadmctl transfers`), and the switch that
//! suspends and resumes one. The runner of a transfer writes its line; readers take
//! snapshots or follow [`Event`]s.
//!
//! Progress events are thinned to one per [`PROGRESS_EVERY`] per transfer; state changes
//! go out at once. Finished transfers (done or failed) stay on the board, the most recent
//! [`KEEP_FINISHED`] of them, so that a late reader still sees how they ended.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

/// How often a transfer's progress is announced at most.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How many finished transfers stay on the board.
pub const KEEP_FINISHED: usize = 16;

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// HGET: from a data repository into a node.
    Download,
    /// HPUT, HPOST or a SUB delivery: from a node to a data repository.
    Upload,
}

impl Direction {
    /// The name on D-Bus and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Download => "download",
            Direction::Upload => "upload",
        }
    }
}

/// Where a transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Bytes are moving.
    Running,
    /// Waiting to try again: the server or the network failed; resumes by itself.
    Waiting,
    /// Suspended by an administrator; resumes when resumed.
    Suspended,
    /// Complete and checked; the node holds the object (download) or the server has it.
    Done,
    /// Given up; nothing half-written became visible.
    Failed,
}

impl State {
    /// The name on D-Bus and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Waiting => "waiting",
            State::Suspended => "suspended",
            State::Done => "done",
            State::Failed => "failed",
        }
    }

    /// Whether the transfer has ended.
    pub fn finished(self) -> bool {
        matches!(self, State::Done | State::Failed)
    }
}

/// One transfer's line on the board.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub id: u64,
    /// The DM server it is for.
    pub srv_id: String,
    pub direction: Direction,
    /// The data repository URL.
    pub server_uri: String,
    /// The node it fills or reads.
    pub client_uri: String,
    pub state: State,
    /// Bytes transferred so far (for a resumed download, including those of earlier runs).
    pub done: u64,
    /// The object's size, when known.
    pub total: Option<u64>,
    /// Bytes per second over the last seconds; 0 when not running.
    pub rate: u64,
    /// Why it waits or failed; empty otherwise.
    pub error: String,
}

/// What changed on the board.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Added(Progress),
    Changed(Progress),
    Removed(u64),
}

/// Why a suspend or resume was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no transfer {0}")]
    NoSuchTransfer(u64),
    #[error("transfer {0} has finished")]
    Finished(u64),
}

/// Every transfer's line, and each running one's suspend switch.
pub struct Board {
    lines: Mutex<BTreeMap<u64, Line>>,
    events: broadcast::Sender<Event>,
}

struct Line {
    progress: Progress,
    /// `true` while suspended; the runner watches it.
    suspended: watch::Sender<bool>,
    announced: Instant,
    /// For the rate: bytes done and when, at the start of the current window.
    window: (u64, Instant),
}

impl Default for Board {
    fn default() -> Self {
        Board {
            lines: Mutex::new(BTreeMap::new()),
            events: broadcast::channel(256).0,
        }
    }
}

impl Board {
    /// Every transfer on the board, by id.
    pub fn list(&self) -> Vec<Progress> {
        self.lock().values().map(|l| l.progress.clone()).collect()
    }

    /// One transfer's line.
    pub fn get(&self, id: u64) -> Option<Progress> {
        self.lock().get(&id).map(|l| l.progress.clone())
    }

    /// Follows the board from now on. A reader that falls behind by more than 256 events
    /// is told so (`Lagged`) and should take a fresh [`Board::list`].
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Suspends transfer `id`: its runner stops at the next chunk, after saving where it
    /// is. Suspending a suspended transfer is no error.
    pub fn suspend(&self, id: u64) -> Result<(), ControlError> {
        self.switch(id, true)
    }

    /// Resumes a suspended transfer `id`. Resuming one that is not suspended is no error.
    pub fn resume(&self, id: u64) -> Result<(), ControlError> {
        self.switch(id, false)
    }

    fn switch(&self, id: u64, suspend: bool) -> Result<(), ControlError> {
        let lines = self.lock();
        let line = lines.get(&id).ok_or(ControlError::NoSuchTransfer(id))?;
        if line.progress.state.finished() {
            return Err(ControlError::Finished(id));
        }
        line.suspended.send_replace(suspend);
        Ok(())
    }

    /// Puts a transfer on the board (its runner calls this); returns the suspend switch
    /// the runner watches, set as `suspended` says.
    pub fn add(&self, progress: Progress, suspended: bool) -> watch::Receiver<bool> {
        let (switch, watched) = watch::channel(suspended);
        let now = Instant::now();
        let id = progress.id;
        let mut lines = self.lock();
        lines.insert(
            id,
            Line {
                window: (progress.done, now),
                progress: progress.clone(),
                suspended: switch,
                announced: now,
            },
        );
        self.announce(Event::Added(progress));
        self.prune(&mut lines);
        watched
    }

    /// Records `done` bytes (and the size, once known); announced at most every
    /// [`PROGRESS_EVERY`].
    pub fn advance(&self, id: u64, done: u64, total: Option<u64>) {
        let mut lines = self.lock();
        let Some(line) = lines.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        line.progress.done = done;
        line.progress.total = total.or(line.progress.total);
        let (from, since) = line.window;
        let elapsed = now.duration_since(since);
        if elapsed >= Duration::from_secs(1) {
            line.progress.rate = (done.saturating_sub(from) as f64 / elapsed.as_secs_f64()) as u64;
            line.window = (done, now);
        }
        if now.duration_since(line.announced) >= PROGRESS_EVERY {
            line.announced = now;
            self.announce(Event::Changed(line.progress.clone()));
        }
    }

    /// Sets the state (and why, for waiting and failed); announced at once.
    pub fn set_state(&self, id: u64, state: State, error: impl Into<String>) {
        let mut lines = self.lock();
        let Some(line) = lines.get_mut(&id) else {
            return;
        };
        line.progress.state = state;
        line.progress.error = error.into();
        if state != State::Running {
            line.progress.rate = 0;
        }
        line.window = (line.progress.done, Instant::now());
        line.announced = Instant::now();
        self.announce(Event::Changed(line.progress.clone()));
        if state.finished() {
            self.prune(&mut lines);
        }
    }

    /// Drops the oldest finished transfers beyond [`KEEP_FINISHED`].
    fn prune(&self, lines: &mut BTreeMap<u64, Line>) {
        let finished: Vec<u64> = lines
            .iter()
            .filter(|(_, l)| l.progress.state.finished())
            .map(|(id, _)| *id)
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(KEEP_FINISHED))
        {
            lines.remove(id);
            self.announce(Event::Removed(*id));
        }
    }

    fn announce(&self, event: Event) {
        // Nobody listening is fine: readers take a snapshot when they come.
        let _ = self.events.send(event);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Line>> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u64) -> Progress {
        Progress {
            id,
            srv_id: "srv".into(),
            direction: Direction::Download,
            server_uri: "https://repo.example/o".into(),
            client_uri: "urn:oma:mo:x:1.0/1/Data".into(),
            state: State::Running,
            done: 0,
            total: Some(100),
            rate: 0,
            error: String::new(),
        }
    }

    #[test]
    fn suspend_and_resume_flip_the_runners_switch_until_it_finishes() {
        let board = Board::default();
        let switch = board.add(line(1), false);
        board.suspend(1).unwrap();
        assert!(*switch.borrow());
        board.resume(1).unwrap();
        assert!(!*switch.borrow());
        assert_eq!(board.suspend(2), Err(ControlError::NoSuchTransfer(2)));
        board.set_state(1, State::Done, "");
        assert_eq!(board.suspend(1), Err(ControlError::Finished(1)));
    }

    #[test]
    fn state_changes_are_announced_and_progress_is_thinned() {
        let board = Board::default();
        let mut events = board.subscribe();
        let _switch = board.add(line(1), false);
        assert!(matches!(events.try_recv(), Ok(Event::Added(p)) if p.id == 1));
        board.advance(1, 10, None);
        board.advance(1, 20, None);
        assert!(
            events.try_recv().is_err(),
            "progress within 250 ms is not announced"
        );
        board.set_state(1, State::Waiting, "HTTP 503");
        match events.try_recv() {
            Ok(Event::Changed(p)) => {
                assert_eq!(
                    (p.state, p.done, p.error.as_str()),
                    (State::Waiting, 20, "HTTP 503")
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(board.get(1).unwrap().total, Some(100));
    }

    #[test]
    fn only_the_most_recent_finished_transfers_stay() {
        let board = Board::default();
        let mut switches = Vec::new();
        for id in 0..(KEEP_FINISHED as u64 + 3) {
            switches.push(board.add(line(id), false));
            board.set_state(id, State::Done, "");
        }
        let running = board.add(line(100), false);
        let ids: Vec<u64> = board.list().iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), KEEP_FINISHED + 1);
        assert_eq!(ids[0], 3, "the three oldest finished ones are gone");
        assert!(ids.contains(&100));
        drop((switches, running));
    }
}
