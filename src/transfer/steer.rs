//! What a running transfer answers to besides its bytes: its line on the board, the
//! suspend switch, network moves, and how long it waits between attempts and at most.

use std::time::Duration;

use tokio::sync::watch;

use super::board::{Board, State};

/// The first wait after a failure; doubled each time up to [`Steer::max_wait`].
pub const FIRST_WAIT: Duration = Duration::from_secs(1);

/// A transfer's handles on the world around it.
pub struct Steer<'a> {
    pub id: u64,
    /// The ServerURI: logged, but never shown on the board, which everyone may read (it
    /// may carry a token).
    pub url: &'a str,
    pub board: &'a Board,
    /// `true` while suspended (the board's switch).
    pub suspended: watch::Receiver<bool>,
    /// Changes when the network moved (a count of moves): a waiting transfer tries again at
    /// once, a running download ends its connection and goes on on a new one.
    pub network: watch::Receiver<u64>,
    /// The longest wait between attempts.
    pub max_wait: Duration,
    /// Give up after this long without progress.
    pub give_up: Duration,
}

impl Steer<'_> {
    /// Whether the switch says suspended (and the change is taken as seen).
    pub fn suspended_now(&mut self) -> bool {
        *self.suspended.borrow_and_update()
    }

    /// Shows the transfer suspended and waits until it is resumed.
    pub async fn hold(&mut self) {
        self.board.set_state(self.id, State::Suspended, "");
        while *self.suspended.borrow_and_update() {
            if self.suspended.changed().await.is_err() {
                // The board dropped the switch: nobody can resume it.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Shows the transfer waiting because of `reason` and waits `wait` (doubled for the
    /// next time, up to `max_wait`), or less when the network moves or the switch flips.
    pub async fn pause(&mut self, wait: &mut Duration, reason: String) {
        tracing::info!(
            "transfer {}: {reason}; trying again in {} s",
            self.id,
            wait.as_secs()
        );
        self.board
            .set_state(self.id, State::Waiting, public(&reason, self.url));
        tokio::select! {
            () = tokio::time::sleep(*wait) => {}
            Ok(()) = self.network.changed() => {}
            Ok(()) = self.suspended.changed() => {}
        }
        *wait = (*wait * 2).min(self.max_wait);
    }
}

/// `reason` without `url` in it, for the board.
pub fn public(reason: &str, url: &str) -> String {
    reason.replace(url, "the server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_uri_never_reaches_the_board() {
        let url = "https://repo.example/fw?token=secret";
        let reason = format!("I/O: {url}: the connection failed");
        assert_eq!(
            public(&reason, url),
            "I/O: the server: the connection failed"
        );
    }
}
