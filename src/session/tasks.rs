//! Who owns background work: one [`Tasks`] handed to everything that spawns — the scheduler's
//! sessions, its follow-up and poll loops, SUB deliveries, asynchronous EXECs and the D-Bus
//! face's tasks — so that the daemon can stop them in order instead of dropping them.
//!
//! Stopping ([`Tasks::shutdown`]) has two steps:
//! 1. **stop**: no new work starts (the scheduler refuses sessions, loops end), and the
//!    tracked tasks get the drain time to finish what they do — a running session its
//!    packages, an asynchronous EXEC its handler;
//! 2. **abort**, once the drain time has passed: the tasks still running are told to give up
//!    at once — a session ends where it is (each command is its own transaction, so nothing
//!    is half applied), an asynchronous EXEC's handler is killed and its result alert is
//!    queued as interrupted — and get a short grace time to do so.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The owner of background tasks; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
    abort: CancellationToken,
}

/// How a shutdown went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every task finished within the drain time.
    Finished,
    /// Some were aborted at the drain time and then ended.
    Aborted,
    /// Some did not end even after being aborted; they are dropped with the runtime.
    Abandoned,
}

impl Tasks {
    /// Owners of nothing yet, not stopping.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` as a tracked task: [`Tasks::shutdown`] waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Whether the daemon is stopping: no new work should start.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves once the daemon is stopping.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    /// Resolves once running work must give up at once.
    pub async fn aborted(&self) {
        self.abort.cancelled().await;
    }

    /// Stops: no new work, `drain` for the running tasks to finish, then abort and `grace`
    /// for them to end.
    pub async fn shutdown(&self, drain: Duration, grace: Duration) -> Drained {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(drain, self.tracker.wait())
            .await
            .is_ok()
        {
            return Drained::Finished;
        }
        tracing::warn!(
            "{} task(s) still running after {} s: aborting them",
            self.tracker.len(),
            drain.as_secs()
        );
        self.abort.cancel();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => Drained::Aborted,
            Err(_) => Drained::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_finishing_tasks_and_aborts_the_rest() {
        let tasks = Tasks::new();
        let t = tasks.clone();
        let quick = tasks.spawn(async move {
            t.stopped().await;
            "drained"
        });
        assert_eq!(
            tasks
                .shutdown(Duration::from_secs(60), Duration::ZERO)
                .await,
            Drained::Finished
        );
        assert_eq!(quick.await.unwrap(), "drained");
        assert!(tasks.stopping());

        let tasks = Tasks::new();
        let t = tasks.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            t.aborted().await;
            tx.send("recorded").unwrap();
        });
        assert_eq!(
            tasks
                .shutdown(Duration::ZERO, Duration::from_secs(60))
                .await,
            Drained::Aborted
        );
        assert_eq!(rx.await.unwrap(), "recorded");

        let tasks = Tasks::new();
        tasks.spawn(std::future::pending::<()>());
        assert_eq!(
            tasks.shutdown(Duration::ZERO, Duration::ZERO).await,
            Drained::Abandoned
        );
    }
}
