//! The gateway's children on the main object (docs/gateway.md §5): the `Children` property
//! as the device inventory holds it, announced with `PropertiesChanged` whenever the
//! inventory changes (at most once per [`ANNOUNCE_EVERY`]: the changes in between are one
//! announcement of the list as it is then), and the work of `DetachChild`, an
//! administrator's detach.
//!
//! **(project choice)** Reading `Children` needs no authorization, like `State`: it says
//! which devices hang off this one, DevInfo-like facts every app may know. What the
//! children hold is in their MO instances, under the MO access model as any instance.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use zbus::Variant;

use super::error::Error;
use super::{INTERFACE, PATH};
use crate::gateway::inventory::{Child, Inventory, MAX_KEY, Reason};
use crate::store::{self, Lane};

/// One child as `Children` carries it (`(sssssxas)`): key, Id, Protocol, Address, State,
/// LastSeen (POSIX seconds), the ClientURIs of its instance roots.
pub type Entry = (String, String, String, String, String, i64, Vec<String>);

/// The shortest time between two announcements of `Children`.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(250);

/// `Children` as of now: the inventory's children in key order; none when the gateway is
/// off.
pub fn entries(gateway: Option<&Inventory>) -> Vec<Entry> {
    gateway.map_or_else(Vec::new, |inventory| {
        inventory.list().into_iter().map(entry).collect()
    })
}

fn entry(child: Child) -> Entry {
    (
        child.key,
        child.id,
        child.protocol.as_str().to_owned(),
        child.address,
        child.state.as_str().to_owned(),
        child.last_seen,
        child.mos,
    )
}

/// Announces `Children` after each change `saves` reports, until the daemon's tasks end it
/// (it holds the inventory, so `saves` never closes by itself). Take `saves`
/// ([`Inventory::subscribe`]) before the bus name, so that no change a caller could see is
/// left unannounced.
pub async fn announce(
    conn: zbus::Connection,
    inventory: Arc<Inventory>,
    mut saves: watch::Receiver<u64>,
) {
    // `changed` marks what it saw as seen: a change while announcing wakes it again.
    while saves.changed().await.is_ok() {
        let changed = HashMap::from([("Children", Variant::from(entries(Some(&inventory))))]);
        super::properties_changed(&conn, PATH, INTERFACE, changed).await;
        // Changes meanwhile mark `saves` changed: the next round announces them together.
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

/// The inventory holding the child `key`: `NotFound` when the gateway is off or has no such
/// child. Looks at no more than the public `Children` shows.
pub fn holding<'a>(
    gateway: Option<&'a Arc<Inventory>>,
    key: &str,
) -> Result<&'a Arc<Inventory>, Error> {
    if key.len() > MAX_KEY {
        return Err(Error::NotFound(format!(
            "no child has a key of {} bytes (at most {MAX_KEY})",
            key.len()
        )));
    }
    let Some(inventory) = gateway else {
        return Err(Error::NotFound(format!(
            "no child {key:?}: the gateway is off (omadmd.toml configures no [gateway])"
        )));
    };
    if inventory.get(key).is_none() {
        return Err(Error::NotFound(format!(
            "no child {key:?} in the gateway's inventory"
        )));
    }
    Ok(inventory)
}

/// Detaches `key`'s child as an administrator's removal: its instances and inventory node
/// go in one go, and servers holding the inventory get `ChildDetached` with Reason
/// `removed`. The store work runs on the write lane.
pub async fn detach(inventory: Arc<Inventory>, key: String) -> Result<(), Error> {
    Ok(store::offload(Lane::Write, move || inventory.detach(&key, Reason::Removed)).await??)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::inventory::{Protocol, State};

    fn child() -> Child {
        Child {
            key: "thermo-42".into(),
            id: "urn:imei:490154203237518".into(),
            protocol: Protocol::Lwm2m,
            address: "coap://192.0.2.7:5683".into(),
            state: State::Sleeping,
            last_seen: 1_767_225_600,
            mos: vec!["urn:oma:lwm2m:ext:3303/thermo-42.0/".into()],
            unreachable_since: Some(1_767_225_000),
        }
    }

    #[test]
    fn a_child_is_one_entry_in_the_contracts_order_and_type() {
        let entry = entry(child());
        assert_eq!(
            entry,
            (
                "thermo-42".to_owned(),
                "urn:imei:490154203237518".to_owned(),
                "lwm2m".to_owned(),
                "coap://192.0.2.7:5683".to_owned(),
                "sleeping".to_owned(),
                1_767_225_600,
                vec!["urn:oma:lwm2m:ext:3303/thermo-42.0/".to_owned()],
            )
        );
        let property = Variant::from(vec![entry]);
        assert_eq!(property.value_signature().to_string(), "a(sssssxas)");
    }

    #[test]
    fn without_a_gateway_there_are_no_children_to_list_or_detach() {
        assert!(entries(None).is_empty());
        assert!(matches!(
            holding(None, "thermo-42"),
            Err(Error::NotFound(_))
        ));
        // An overlong key is not echoed back.
        match holding(None, &"x".repeat(MAX_KEY + 1)) {
            Err(Error::NotFound(m)) => assert!(m.contains("65 bytes") && !m.contains("xx"), "{m}"),
            other => panic!("not NotFound: {:?}", other.err()),
        }
    }
}
