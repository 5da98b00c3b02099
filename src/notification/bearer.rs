//! PREFERRED-CON-TYPE (PROTOCOL.md §5): a notification may ask that its session run over a
//! kind of bearer — cellular, WLAN, wireline. [`wait_for`] holds such a session until a
//! device of that kind is up (activated, with an address), or until `[notification]
//! bearer_timeout_s` passes, after which the session runs on whatever bearer is up. Without
//! a picture of the network (no NetworkManager) there is nothing to wait for.

use std::time::Duration;

use tokio::sync::watch;

use super::package0::ConType;
use crate::network::state::DeviceState;
use crate::network::{NetworkState, Technology};

/// How a wait for a bearer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bearer {
    /// A bearer of the type asked for is up (or any will do).
    Up,
    /// None came up in time: run on what there is.
    TimedOut,
    /// NetworkManager is not followed: the device's bearers are unknown.
    Unknown,
}

/// Waits until `network` shows a bearer `con` accepts, at most `timeout`.
pub async fn wait_for(
    network: Option<watch::Receiver<NetworkState>>,
    con: ConType,
    timeout: Duration,
) -> Bearer {
    if con == ConType::Any {
        return Bearer::Up;
    }
    let Some(mut network) = network else {
        return Bearer::Unknown;
    };
    let found = tokio::time::timeout(
        timeout,
        network.wait_for(|state| state.interfaces.is_empty() || has_bearer(state, con)),
    )
    .await;
    match found {
        Err(_) => Bearer::TimedOut,
        // The follower ended: nobody will say more.
        Ok(Err(_)) => Bearer::Unknown,
        Ok(Ok(state)) if state.interfaces.is_empty() => Bearer::Unknown,
        Ok(Ok(_)) => Bearer::Up,
    }
}

/// Whether `state` has a device of the kind `con` asks for that is up.
fn has_bearer(state: &NetworkState, con: ConType) -> bool {
    state.interfaces.iter().any(|i| {
        i.state == DeviceState::Activated && !i.addresses.is_empty() && serves(i.technology, con)
    })
}

/// Whether a device of `technology` is a bearer of the type `con`.
fn serves(technology: Technology, con: ConType) -> bool {
    match con {
        ConType::Any => true,
        ConType::Cellular => technology == Technology::Cellular,
        ConType::Wlan => technology == Technology::Wifi,
        ConType::Wireline => matches!(technology, Technology::Ethernet | Technology::Adsl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::state::{Address, Interface};

    fn device(technology: Technology, state: DeviceState) -> Interface {
        Interface {
            name: technology.as_str().into(),
            technology,
            state,
            addresses: vec![Address {
                ip: "192.0.2.7".parse().unwrap(),
                prefix: 24,
            }],
        }
    }

    #[tokio::test]
    async fn a_session_waits_for_its_bearer_then_runs_on_any_after_the_timeout() {
        let wired = NetworkState {
            interfaces: vec![
                device(Technology::Ethernet, DeviceState::Activated),
                device(Technology::Wifi, DeviceState::Disconnected),
            ],
            ..NetworkState::default()
        };
        let (tx, rx) = watch::channel(wired.clone());
        let second = Duration::from_millis(50);
        assert_eq!(
            wait_for(Some(rx.clone()), ConType::Wireline, second).await,
            Bearer::Up
        );
        assert_eq!(
            wait_for(Some(rx.clone()), ConType::Any, second).await,
            Bearer::Up
        );
        assert_eq!(
            wait_for(Some(rx.clone()), ConType::Cellular, second).await,
            Bearer::TimedOut
        );
        assert_eq!(wait_for(None, ConType::Wlan, second).await, Bearer::Unknown);

        // The Wi-Fi comes up while a session waits for it.
        let waiting = tokio::spawn(wait_for(Some(rx), ConType::Wlan, Duration::from_secs(60)));
        tokio::task::yield_now().await;
        tx.send_modify(|s| s.interfaces[1].state = DeviceState::Activated);
        assert_eq!(waiting.await.unwrap(), Bearer::Up);
    }
}
