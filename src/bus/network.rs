//! The network on the main object: `AccessTechnology` (the primary connection's technology,
//! `none` without one) and `State` (`offline` when NetworkManager says the device has no
//! connection), following the network follower's channel, with `PropertiesChanged` for
//! those of them that changed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use zbus::Variant;

use super::sessions;
use super::{INTERFACE, PATH};
use crate::network::NetworkState;
use crate::session::Scheduler;

/// `AccessTechnology` and `State` as of now.
pub fn properties(scheduler: &Scheduler, network: &NetworkState) -> (&'static str, &'static str) {
    (
        network.access_technology(),
        sessions::state(&sessions::running(scheduler), network.offline()),
    )
}

/// Announces `AccessTechnology` and `State` whenever the network changes them, until the
/// follower is gone.
pub async fn announce(
    conn: zbus::Connection,
    scheduler: Arc<Scheduler>,
    mut network: watch::Receiver<NetworkState>,
) {
    let mut shown = properties(&scheduler, &network.borrow_and_update());
    while network.changed().await.is_ok() {
        let now = properties(&scheduler, &network.borrow_and_update());
        let mut changed: HashMap<&str, Variant<'_>> = HashMap::new();
        if now.0 != shown.0 {
            changed.insert("AccessTechnology", Variant::from(now.0));
        }
        if now.1 != shown.1 {
            changed.insert("State", Variant::from(now.1));
        }
        shown = now;
        if changed.is_empty() {
            continue;
        }
        super::properties_changed(&conn, PATH, INTERFACE, changed).await;
    }
}
