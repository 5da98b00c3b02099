//! Access technologies: what kind of link a NetworkManager device is, from the D-Bus
//! interfaces its object implements (a veth implements `Device.Wired` and `Device.Veth`:
//! ethernet), else from its `DeviceType`.

use std::fmt;

/// The kind of link a device gives (the network MO's `Type` and `AccessTechnology`, the
/// `AccessTechnology` property).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Technology {
    Ethernet,
    Wifi,
    Cellular,
    Bluetooth,
    Wimax,
    Infiniband,
    Adsl,
    /// IEEE 802.15.4 and 6LoWPAN.
    Wpan,
    WifiP2p,
    Loopback,
    Bridge,
    Bond,
    Team,
    Vlan,
    /// TUN/TAP, IP tunnels, WireGuard.
    Tunnel,
    Ppp,
    /// Other software devices: MACVLAN, VXLAN, MACsec, dummy, VRF, Open vSwitch, HSR, IPVLAN.
    Virtual,
    Other,
}

/// The prefix of every NetworkManager device interface.
const DEVICE: &str = "org.freedesktop.NetworkManager.Device.";

/// Device interfaces (after [`DEVICE`]) and what they say, most specific first: a device
/// takes the first one its object implements. `Wired` comes after the kinds that are built
/// on it but are not ethernet to the device's user.
const BY_INTERFACE: [(&str, Technology); 31] = [
    ("Wireless", Technology::Wifi),
    ("Modem", Technology::Cellular),
    ("Bluetooth", Technology::Bluetooth),
    ("WiMax", Technology::Wimax),
    ("Adsl", Technology::Adsl),
    ("Infiniband", Technology::Infiniband),
    ("OlpcMesh", Technology::Wifi),
    ("WifiP2P", Technology::WifiP2p),
    ("Wpan", Technology::Wpan),
    ("Lowpan", Technology::Wpan),
    ("Loopback", Technology::Loopback),
    ("Bridge", Technology::Bridge),
    ("Bond", Technology::Bond),
    ("Team", Technology::Team),
    ("Vlan", Technology::Vlan),
    ("Tun", Technology::Tunnel),
    ("IPTunnel", Technology::Tunnel),
    ("WireGuard", Technology::Tunnel),
    ("Ppp", Technology::Ppp),
    ("Wired", Technology::Ethernet),
    ("Veth", Technology::Ethernet),
    ("Macvlan", Technology::Virtual),
    ("Ipvlan", Technology::Virtual),
    ("Vxlan", Technology::Virtual),
    ("Macsec", Technology::Virtual),
    ("Dummy", Technology::Virtual),
    ("Vrf", Technology::Virtual),
    ("OvsBridge", Technology::Virtual),
    ("OvsPort", Technology::Virtual),
    ("OvsInterface", Technology::Virtual),
    ("Hsr", Technology::Virtual),
];

impl Technology {
    /// The name omadmd shows: `ethernet`, `wifi`, `cellular`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Technology::Ethernet => "ethernet",
            Technology::Wifi => "wifi",
            Technology::Cellular => "cellular",
            Technology::Bluetooth => "bluetooth",
            Technology::Wimax => "wimax",
            Technology::Infiniband => "infiniband",
            Technology::Adsl => "adsl",
            Technology::Wpan => "wpan",
            Technology::WifiP2p => "wifi-p2p",
            Technology::Loopback => "loopback",
            Technology::Bridge => "bridge",
            Technology::Bond => "bond",
            Technology::Team => "team",
            Technology::Vlan => "vlan",
            Technology::Tunnel => "tunnel",
            Technology::Ppp => "ppp",
            Technology::Virtual => "virtual",
            Technology::Other => "other",
        }
    }

    /// The technology of a device whose object implements `interfaces` (full D-Bus names)
    /// and whose `DeviceType` is `device_type`: the interfaces decide when one of them is
    /// known, the type otherwise.
    pub fn of_device<'a>(
        interfaces: impl IntoIterator<Item = &'a str>,
        device_type: u32,
    ) -> Technology {
        let kinds: Vec<&str> = interfaces
            .into_iter()
            .filter_map(|i| i.strip_prefix(DEVICE))
            .collect();
        BY_INTERFACE
            .iter()
            .find(|(kind, _)| kinds.contains(kind))
            .map_or_else(|| Technology::of_type(device_type), |(_, t)| *t)
    }

    /// The technology of NetworkManager's `NMDeviceType` value.
    pub fn of_type(device_type: u32) -> Technology {
        match device_type {
            1 | 20 => Technology::Ethernet,
            2 | 6 => Technology::Wifi,
            5 => Technology::Bluetooth,
            7 => Technology::Wimax,
            8 => Technology::Cellular,
            9 => Technology::Infiniband,
            10 => Technology::Bond,
            11 => Technology::Vlan,
            12 => Technology::Adsl,
            13 => Technology::Bridge,
            15 => Technology::Team,
            16 | 17 | 29 => Technology::Tunnel,
            18 | 19 | 21 | 22 | 24 | 25 | 26 | 31 | 33 => Technology::Virtual,
            23 => Technology::Ppp,
            27 | 28 => Technology::Wpan,
            30 => Technology::WifiP2p,
            32 => Technology::Loopback,
            _ => Technology::Other,
        }
    }
}

impl fmt::Display for Technology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(interfaces: &[&str], device_type: u32) -> Technology {
        let full: Vec<String> = interfaces.iter().map(|i| format!("{DEVICE}{i}")).collect();
        let mut all = vec![
            "org.freedesktop.NetworkManager.Device",
            "org.freedesktop.DBus.Properties",
        ];
        all.extend(full.iter().map(String::as_str));
        Technology::of_device(all, device_type)
    }

    #[test]
    fn interfaces_decide_before_the_device_type() {
        // What NetworkManager 1.42 shows for a veth (DeviceType 20 = VETH).
        assert_eq!(
            of(&["Statistics", "Wired", "Veth"], 20),
            Technology::Ethernet
        );
        assert_eq!(of(&["Statistics", "Wireless"], 2), Technology::Wifi);
        assert_eq!(of(&["Modem"], 8), Technology::Cellular);
        assert_eq!(of(&["Loopback"], 32), Technology::Loopback);
        assert_eq!(of(&["Bridge"], 13), Technology::Bridge);
        assert_eq!(of(&["WireGuard"], 29), Technology::Tunnel);
        // An interface wins over a type that says otherwise.
        assert_eq!(of(&["Wireless"], 1), Technology::Wifi);
    }

    #[test]
    fn without_a_known_interface_the_device_type_decides() {
        assert_eq!(of(&["Statistics"], 20), Technology::Ethernet);
        assert_eq!(of(&[], 1), Technology::Ethernet);
        assert_eq!(of(&[], 2), Technology::Wifi);
        assert_eq!(of(&[], 8), Technology::Cellular);
        assert_eq!(of(&[], 5), Technology::Bluetooth);
        assert_eq!(of(&[], 14), Technology::Other);
        assert_eq!(of(&[], 0), Technology::Other);
        assert_eq!(of(&[], 999), Technology::Other);
    }

    #[test]
    fn every_interface_kind_is_listed_once() {
        for (i, (kind, _)) in BY_INTERFACE.iter().enumerate() {
            assert!(
                !BY_INTERFACE[i + 1..].iter().any(|(k, _)| k == kind),
                "{kind} twice"
            );
        }
        assert_eq!(Technology::WifiP2p.to_string(), "wifi-p2p");
    }
}
