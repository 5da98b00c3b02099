//! The network follower's mapping of Wi-Fi and cellular devices, and NetworkManager coming
//! and going while omadmd runs. Wi-Fi and cellular devices cannot exist on the test
//! machine (no radios, no modem, no mac80211_hwsim), so NetworkManager here is a **mock**:
//! python-dbusmock's `networkmanager` template (Debian `python3-dbusmock`) on the private
//! system bus, given devices, active connections and IP configurations as NetworkManager
//! 1.42 shows them (a Wi-Fi device implements `Device.Wireless`, a modem `Device.Modem`).
//! Everything else is real: omadmd, the bus, polkitd. tests/network_manager.rs does the same
//! against a real NetworkManager with a veth.

use std::time::Duration;

use crate::support::daemon::Daemon;
use crate::support::network::{MockNm, network_mo, property};
use crate::support::sysbus::{SysBus, wait_until};

const DEVICES: &str = "/org/freedesktop/NetworkManager/Devices";
const ACTIVE: &str = "/org/freedesktop/NetworkManager/ActiveConnection";
const IP4: &str = "/org/freedesktop/NetworkManager/IP4Config";
const NOT_FOLLOWED: &str = "NetworkManager is not on the system bus";

/// Waits (at most 20 s) until `what` holds, else fails with the daemon's log.
#[track_caller]
fn eventually(daemon: &Daemon, what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(20), &mut f),
        "{what} did not happen\n--- omadmd log ---\n{}",
        daemon.log()
    );
}

/// Adds an IPv4 configuration `name` with `address`/24.
fn ip4(nm: &MockNm<'_>, name: &str, address: &str) -> String {
    let path = format!("{IP4}/{name}");
    nm.call(
        "/org/freedesktop",
        "AddObject",
        &[
            &path,
            "org.freedesktop.NetworkManager.IP4Config",
            &format!("{{'AddressData': <[{{'address': <'{address}'>, 'prefix': <uint32 24>}}]>}}"),
            "[]",
        ],
    );
    path
}

/// Adds the active connection number `n`, named `name` (`Id`), on `device` with the IPv4
/// configuration `ip4`.
fn active(nm: &MockNm<'_>, n: u32, name: &str, device: &str, ip4: &str) -> String {
    let path = format!("{ACTIVE}/{n}");
    nm.call(
        "/org/freedesktop",
        "AddObject",
        &[
            &path,
            "org.freedesktop.NetworkManager.Connection.Active",
            &format!(
                "{{'Id': <'{name}'>, 'Uuid': <'uuid-{name}'>, 'Devices': <[objectpath '{device}']>, \
                 'Ip4Config': <objectpath '{ip4}'>, 'State': <uint32 2>}}"
            ),
            "[]",
        ],
    );
    path
}

#[test]
fn wifi_and_cellular_map_from_device_interfaces_and_networkmanager_is_followed_when_it_comes() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    // No NetworkManager: said once, and omadmd works on, showing nothing it cannot know.
    eventually(&daemon, "the log of no NetworkManager", || {
        daemon.log().contains(NOT_FOLLOWED)
    });
    eventually(&daemon, "the network MO", || {
        network_mo(&bus)["State"] == "unknown"
    });
    let mo = network_mo(&bus);
    assert_eq!(mo["AccessTechnology"], "none");
    assert_eq!(mo["Primary"], "");
    assert_eq!(mo["Interfaces"], serde_json::json!({}));
    assert_eq!(property(&bus, "AccessTechnology"), "none");
    assert_eq!(property(&bus, "State"), "idle", "unknown is not offline");

    // NetworkManager comes: a Wi-Fi device (the template's), and a modem (Device.Modem,
    // DeviceType 8, the control interface as its name) that carries the primary connection.
    let nm = MockNm::start(&bus);
    nm.call(
        "/org/freedesktop",
        "AddWiFiDevice",
        &["wlan0dev", "wlan0", "100"],
    );
    let modem = format!("{DEVICES}/wwan0");
    let wifi = format!("{DEVICES}/wlan0dev");
    nm.call(
        "/org/freedesktop",
        "AddObject",
        &[
            &modem,
            "org.freedesktop.NetworkManager.Device.Modem",
            "{'ModemCapabilities': <uint32 8>, 'CurrentCapabilities': <uint32 8>}",
            "[]",
        ],
    );
    let cell_ip = ip4(&nm, "cell", "192.0.2.10");
    nm.call(
        &modem,
        "AddProperties",
        &[
            "org.freedesktop.NetworkManager.Device",
            &format!(
                "{{'DeviceType': <uint32 8>, 'Interface': <'cdc-wdm0'>, 'IpInterface': <'wwan0'>, \
                 'State': <uint32 100>, 'Ip4Config': <objectpath '{cell_ip}'>}}"
            ),
        ],
    );
    let wifi_ip = ip4(&nm, "wifi", "198.51.100.7");
    nm.call(
        &wifi,
        "AddProperty",
        &[
            "org.freedesktop.NetworkManager.Device",
            "Ip4Config",
            &format!("<objectpath '{wifi_ip}'>"),
        ],
    );
    let mobile = active(&nm, 1, "mobile", &modem, &cell_ip);
    let home = active(&nm, 2, "home-wifi", &wifi, &wifi_ip);
    // The template has no PrimaryConnection (it is from NetworkManager 0.9).
    nm.call(
        "/org/freedesktop/NetworkManager",
        "AddProperty",
        &[
            "org.freedesktop.NetworkManager",
            "PrimaryConnection",
            "<objectpath '/'>",
        ],
    );
    nm.set("Devices", &format!("<[objectpath '{wifi}', '{modem}']>"));
    nm.set("PrimaryConnection", &format!("<objectpath '{mobile}'>"));

    eventually(&daemon, "cellular as the access technology", || {
        property(&bus, "AccessTechnology") == "cellular"
    });
    let mo = network_mo(&bus);
    assert_eq!(mo["State"], "connected", "{mo}");
    assert_eq!(mo["Connectivity"], "full", "{mo}");
    assert_eq!(mo["Primary"], "mobile", "{mo}");
    assert_eq!(mo["AccessTechnology"], "cellular", "{mo}");
    let cell = &mo["Interfaces"]["cdc-wdm0"];
    assert_eq!(cell["Name"], "cdc-wdm0", "{mo}");
    assert_eq!(cell["Type"], "cellular", "{mo}");
    assert_eq!(cell["State"], "activated", "{mo}");
    assert_eq!(cell["Addresses"], "192.0.2.10/24", "{mo}");
    let wlan = &mo["Interfaces"]["wlan0"];
    assert_eq!(wlan["Type"], "wifi", "{mo}");
    assert_eq!(wlan["Addresses"], "198.51.100.7/24", "{mo}");

    // The primary connection moves to the Wi-Fi.
    nm.set("PrimaryConnection", &format!("<objectpath '{home}'>"));
    eventually(&daemon, "wifi as the access technology", || {
        property(&bus, "AccessTechnology") == "wifi"
    });
    assert_eq!(network_mo(&bus)["Primary"], "home-wifi");
    eventually(&daemon, "the move logged", || {
        daemon.log().contains(
            "network move: primary connection \"home-wifi\" (wifi), addresses 198.51.100.7/24",
        )
    });

    // NetworkManager says it is offline.
    nm.set("PrimaryConnection", "<objectpath '/'>");
    nm.call("/org/freedesktop", "SetGlobalConnectionState", &["20"]);
    eventually(&daemon, "State offline", || {
        property(&bus, "State") == "offline"
    });
    assert_eq!(property(&bus, "AccessTechnology"), "none");
    assert_eq!(network_mo(&bus)["State"], "offline");

    // NetworkManager goes: unknown again, not offline.
    nm.stop();
    eventually(&daemon, "State idle", || property(&bus, "State") == "idle");
    eventually(&daemon, "the network MO unknown", || {
        network_mo(&bus)["State"] == "unknown"
    });
    let log = daemon.log();
    assert!(log.contains("NetworkManager left the system bus"), "{log}");
    assert_eq!(log.matches(NOT_FOLLOWED).count(), 1, "{log}");
}
