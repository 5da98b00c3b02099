//! Acting on moves: whatever must happen when the device gets a new primary connection or
//! address (or a connection again after none) — notification channels made anew, what
//! failed meanwhile sent — runs from [`each`], once per change of [`NetworkState::moves`]
//! (several moves in a burst make one run).

use tokio::sync::watch;

use super::NetworkState;
use crate::session::Tasks;

/// Runs `react` after every move the follower publishes on `network`, one run at a time,
/// until the daemon stops or the follower ends.
pub async fn each(
    mut network: watch::Receiver<NetworkState>,
    tasks: Tasks,
    mut react: impl AsyncFnMut(),
) {
    let mut seen = network.borrow_and_update().moves;
    loop {
        tokio::select! {
            biased;
            () = tasks.stopped() => break,
            changed = network.changed() => if changed.is_err() {
                break;
            },
        }
        let moves = network.borrow_and_update().moves;
        if moves > seen {
            seen = moves;
            react().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn each_move_runs_the_reaction_and_nothing_else_does() {
        let (tx, rx) = watch::channel(NetworkState::default());
        let tasks = Tasks::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let reactor = tokio::spawn(each(rx, tasks.clone(), async move || {
            counted.fetch_add(1, Ordering::SeqCst);
            done_tx.send(()).unwrap();
        }));
        // The reactor takes the count it starts with as seen (one runtime thread: it runs
        // up to its first wait before the test goes on).
        tokio::task::yield_now().await;
        // A change that is not a move (offline, say) runs nothing; a move runs once.
        tx.send_modify(|s| s.moves = 0);
        tx.send_modify(|s| s.moves = 1);
        done.recv().await.unwrap();
        tx.send_modify(|s| s.moves = 2);
        done.recv().await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        drop(tx);
        reactor.await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the follower ended: so does the reactor"
        );
    }
}
