//! sd_notify: the states the daemon reports to systemd, and the watchdog.
//!
//! - **States**: [`notify`] sends `READY=1`, `RELOADING=1`, `STOPPING=1` and `STATUS=`
//!   lines when systemd listens (`NOTIFY_SOCKET` set); a failure to send is logged, never
//!   fatal.
//! - **Watchdog** ([`watchdog`]): with `WatchdogSec=` in the unit, systemd expects
//!   `WATCHDOG=1` at least that often and restarts the daemon when it stops coming. The
//!   ping is sent every half period, and only after the store has answered a read on the
//!   interactive lane within that half period: a daemon whose async runtime or store
//!   threads are stuck stops pinging and is restarted, one that is merely busy is not.

use std::sync::Arc;
use std::time::Duration;

use crate::authority::Authority;
use crate::session::Tasks;
use crate::store::{self, Lane};

/// Sends `states` to systemd, if it listens (`sd_notify::notify` sends nothing without
/// `NOTIFY_SOCKET`).
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`, for this process), if any.
pub fn period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|p| !p.is_zero())
}

/// Pings the watchdog every half `period` while the store answers, until `tasks` stops.
pub async fn watchdog(period: Duration, auth: Arc<Authority>, tasks: Tasks) {
    let half = period / 2;
    let mut ticks = tokio::time::interval(half);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut silent = false;
    loop {
        tokio::select! {
            biased;
            () = tasks.stopped() => break,
            _ = ticks.tick() => {}
        }
        match alive(&auth, half).await {
            Ok(()) => {
                if silent {
                    tracing::info!("watchdog: the store answers again; pinging");
                    silent = false;
                }
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Err(why) => {
                if !silent {
                    tracing::error!(
                        "watchdog: {why}; not pinging (systemd restarts the daemon after \
                         {} s without a ping)",
                        period.as_secs()
                    );
                    silent = true;
                }
            }
        }
    }
}

/// Whether the store answers a read within `within`.
async fn alive(auth: &Arc<Authority>, within: Duration) -> Result<(), String> {
    let auth = auth.clone();
    let read = store::offload(Lane::Interactive, move || auth.last_seq());
    match tokio::time::timeout(within, read).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("the store fails: {e}")),
        Ok(Err(e)) => Err(format!("the store's threads fail: {e}")),
        Err(_) => Err(format!(
            "the store did not answer a read within {} ms",
            within.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Pool;
    use crate::tree::registry::Registry;

    #[tokio::test]
    async fn a_store_that_answers_is_alive() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = Arc::new(
            Pool::open(&tmp.path().join("store.db"), store::Bounds::default(), 1).unwrap(),
        );
        let auth = Arc::new(Authority::new(
            pool,
            Registry::with_builtin(),
            Box::new(|_| {}),
        ));
        assert_eq!(alive(&auth, Duration::from_secs(30)).await, Ok(()));
    }
}
