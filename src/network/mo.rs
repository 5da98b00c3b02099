//! The network MO (`urn:oma:mo:ext-omadmd-network:1.0`, DDF `src/tree/builtin/network.ddf`)
//! kept current from the follower's pictures, and the Generic Alert
//! [`NETWORK_CHANGED`] on a move.
//!
//! The one instance ([`MIID`]) is provided like DevInfo: owned by the admin, written only
//! when it differs, with Read granted to every app and every server — which a server uses
//! only when the MOID is in its account's `Perm` list (or in `[access] public_moids`): its
//! reach caps the rest to nothing. A change of the MO goes the way of every change
//! (watchers, `SUB` deliveries). On a move the alert is queued for every server whose
//! account has the MOID in `Perm`, after the MO shows the move, and a session is asked for
//! to deliver it (persisted: it waits for a later session if this one fails).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;

use super::state::NetworkState;
use crate::authority::{AccessError, Authority, Rights};
use crate::protocol::Alert;
use crate::protocol::alert::Mark;
use crate::session::{Engine, Tasks, account};
use crate::store::{self, Lane};
use crate::tree::builtin::NETWORK;
use crate::tree::node::{Node, check_name};
use crate::tree::uri::NodeAddr;
use crate::tree::value::Value;

/// MIID of the one network MO instance.
pub const MIID: &str = "0";

/// The Generic Alert a move queues for the servers that have the network MOID.
pub const NETWORK_CHANGED: &str = "urn:oma:at:ext-omadmd:1.0:NetworkChanged";

/// Keeps the network MO current from `network` until `tasks` stop or the follower is gone
/// (then what it left is written once more). On each move: the MO first, then
/// [`NETWORK_CHANGED`] kept for the servers that have the network MOID, then `on_move`
/// (what else a move calls for: channels made anew, connections the old address held
/// closed), then one session for each server with alerts waiting — the new ones and any
/// that could not go out meanwhile — and the owed SUB deliveries
/// ([`Engine::deliver_pending`]). The channel's first value is not written: the
/// follower's first picture replaces it at once.
pub async fn keep(
    auth: Arc<Authority>,
    engine: Arc<Engine>,
    mut network: watch::Receiver<NetworkState>,
    tasks: Tasks,
    mut on_move: impl AsyncFnMut(),
) {
    let mut moves = network.borrow().moves;
    loop {
        let changed = tokio::select! {
            biased;
            () = tasks.stopped() => return,
            changed = network.changed() => changed,
        };
        let state = network.borrow_and_update().clone();
        let moved = state.moves > moves;
        moves = state.moves;
        let (auth, kept_by) = (auth.clone(), engine.clone());
        match store::offload(Lane::Background, move || {
            update(&auth, &kept_by, &state, moved)
        })
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot keep the network MO: {e}"),
            Err(e) => tracing::error!("cannot keep the network MO: {e}"),
        }
        if moved {
            on_move().await;
            engine.network_moved();
            let pending = engine.clone();
            match store::offload(Lane::Background, move || pending.deliver_pending()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("after a network move: {e}"),
                Err(e) => tracing::error!("after a network move: {e}"),
            }
        }
        if changed.is_err() {
            return;
        }
    }
}

/// Writes the MO for `state`; on a move, keeps the alert for the servers that have the MO
/// (their sessions are asked for after). Blocking.
fn update(
    auth: &Authority,
    engine: &Engine,
    state: &NetworkState,
    moved: bool,
) -> Result<(), AccessError> {
    auth.provide(NETWORK, MIID, "Network", &node(state), Rights::READ)?;
    if !moved {
        return Ok(());
    }
    let alert = alert(state);
    let json = serde_json::to_string(&alert)
        .map_err(|e| AccessError::InvalidValue(format!("{NETWORK_CHANGED}: {e}")))?;
    let mut told = Vec::new();
    for account in account::load_all(auth)? {
        if account.may_manage(NETWORK) {
            match engine.keep_alert(&account.srv_id, &json) {
                Ok(()) => told.push(account.srv_id),
                Err(e) => tracing::error!(
                    srv_id = %account.srv_id,
                    "cannot keep {NETWORK_CHANGED}: {e}"
                ),
            }
        }
    }
    if !told.is_empty() {
        tracing::info!("{NETWORK_CHANGED} queued for {}", told.join(", "));
    }
    Ok(())
}

/// The MO's content for `state`: `State`, `Connectivity`, `Primary`, `AccessTechnology`,
/// and `Interfaces/<x>/{Name, Type, State, Addresses}`, `<x>` the interface name (made
/// unique with `~2`, `~3`, ... should two devices share one, as Open vSwitch's do).
pub fn node(state: &NetworkState) -> Node {
    let chr = |s: &str| Node::Leaf(Value::Chr(s.to_owned()));
    let mut interfaces = BTreeMap::new();
    for (i, iface) in state.interfaces.iter().enumerate() {
        let base = match check_name(&iface.name) {
            Ok(()) => iface.name.clone(),
            Err(_) => format!("if{i}"),
        };
        let mut name = base.clone();
        let mut n = 1;
        while interfaces.contains_key(&name) {
            n += 1;
            name = format!("{base}~{n}");
        }
        let addresses: Vec<String> = iface.addresses.iter().map(ToString::to_string).collect();
        interfaces.insert(
            name,
            Node::Interior(BTreeMap::from([
                ("Name".to_owned(), chr(&iface.name)),
                ("Type".to_owned(), chr(iface.technology.as_str())),
                ("State".to_owned(), chr(iface.state.as_str())),
                ("Addresses".to_owned(), chr(&addresses.join(","))),
            ])),
        );
    }
    Node::Interior(BTreeMap::from([
        ("State".to_owned(), chr(state.state.as_str())),
        ("Connectivity".to_owned(), chr(state.connectivity.as_str())),
        (
            "Primary".to_owned(),
            chr(state.primary.as_ref().map_or("", |p| p.name.as_str())),
        ),
        (
            "AccessTechnology".to_owned(),
            chr(state.access_technology()),
        ),
        ("Interfaces".to_owned(), Node::Interior(interfaces)),
    ]))
}

/// [`NETWORK_CHANGED`] for `state`: its source the network MO, its data (JSON) the new
/// state, primary connection, access technology and the primary connection's addresses.
pub fn alert(state: &NetworkState) -> Alert {
    let addresses: Vec<String> = state
        .primary
        .iter()
        .flat_map(|p| p.addresses.iter().map(ToString::to_string))
        .collect();
    Alert {
        source_uri: Some(NodeAddr::root(NETWORK, MIID).to_string()),
        mark: Some(Mark::Informational),
        data_type: Some("json".to_owned()),
        data: Some(json!({
            "State": state.state.as_str(),
            "Connectivity": state.connectivity.as_str(),
            "Primary": state.primary.as_ref().map_or("", |p| p.name.as_str()),
            "AccessTechnology": state.access_technology(),
            "Addresses": addresses,
        })),
        ..Alert::of_type(NETWORK_CHANGED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::state::{Address, DeviceState, Interface, NmState, Primary};
    use crate::network::technology::Technology;

    fn iface(name: &str, technology: Technology, addresses: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            technology,
            state: DeviceState::Activated,
            addresses: addresses
                .iter()
                .map(|a| {
                    let (ip, p) = a.split_once('/').unwrap();
                    Address {
                        ip: ip.parse().unwrap(),
                        prefix: p.parse().unwrap(),
                    }
                })
                .collect(),
        }
    }

    fn text(node: &Node, path: &str) -> String {
        match node.get(path) {
            Some(Node::Leaf(v)) => v.to_text(),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn the_mo_shows_state_primary_and_interfaces() {
        let eth = iface(
            "eth0",
            Technology::Ethernet,
            &["10.0.0.2/24", "2001:db8::2/64"],
        );
        let state = NetworkState {
            state: NmState::Connected,
            primary: Some(Primary {
                name: "office".into(),
                uuid: "u".into(),
                technology: Technology::Ethernet,
                addresses: eth.addresses.clone(),
            }),
            interfaces: vec![
                eth,
                iface("wlan0", Technology::Wifi, &[]),
                iface("br0", Technology::Virtual, &[]),
                iface("br0", Technology::Virtual, &[]),
                iface("a/b", Technology::Other, &[]),
            ],
            ..NetworkState::default()
        };
        let node = node(&state);
        assert_eq!(text(&node, "State"), "connected");
        assert_eq!(text(&node, "Connectivity"), "unknown");
        assert_eq!(text(&node, "Primary"), "office");
        assert_eq!(text(&node, "AccessTechnology"), "ethernet");
        assert_eq!(
            text(&node, "Interfaces/eth0/Addresses"),
            "10.0.0.2/24,2001:db8::2/64"
        );
        assert_eq!(text(&node, "Interfaces/eth0/State"), "activated");
        assert_eq!(text(&node, "Interfaces/wlan0/Type"), "wifi");
        assert_eq!(text(&node, "Interfaces/wlan0/Addresses"), "");
        assert_eq!(text(&node, "Interfaces/br0~2/Name"), "br0");
        assert_eq!(text(&node, "Interfaces/if4/Name"), "a/b");

        let alert = alert(&state);
        assert_eq!(alert.alert_type, NETWORK_CHANGED);
        assert_eq!(
            alert.source_uri.as_deref(),
            Some("urn:oma:mo:ext-omadmd-network:1.0/0/")
        );
        let data = alert.data.unwrap();
        assert_eq!(data["AccessTechnology"], "ethernet");
        assert_eq!(data["Addresses"], json!(["10.0.0.2/24", "2001:db8::2/64"]));
    }

    #[test]
    fn without_networkmanager_the_mo_says_unknown() {
        let node = node(&NetworkState::default());
        assert_eq!(text(&node, "State"), "unknown");
        assert_eq!(text(&node, "Primary"), "");
        assert_eq!(text(&node, "AccessTechnology"), "none");
        assert_eq!(node.get("Interfaces"), Some(&Node::empty()));
    }
}
