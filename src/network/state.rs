//! What omadmd knows of the device's network ([`NetworkState`]): NetworkManager's picture in
//! typed form, and the *attachment* whose change is a move.

use std::fmt;
use std::net::IpAddr;

use super::technology::Technology;

/// The device's network as NetworkManager last reported it. Without NetworkManager (not on
/// the bus, or no system bus at all) it is the default: state unknown, no primary
/// connection, no interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkState {
    pub state: NmState,
    pub connectivity: Connectivity,
    /// The primary connection: the one holding the default route.
    pub primary: Option<Primary>,
    /// Every device NetworkManager knows, in its order.
    pub interfaces: Vec<Interface>,
    /// How many moves the follower has seen since omadmd started: a move is when this
    /// grows (see [`super::follow`] for what counts as one).
    pub moves: u64,
}

/// NetworkManager's primary connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Primary {
    /// The connection's name (`Id`).
    pub name: String,
    pub uuid: String,
    /// The technology of its (first) device.
    pub technology: Technology,
    /// Its IPv4 then IPv6 addresses.
    pub addresses: Vec<Address>,
}

/// One network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The interface name (`eth0`).
    pub name: String,
    pub technology: Technology,
    pub state: DeviceState,
    /// Its IPv4 then IPv6 addresses.
    pub addresses: Vec<Address>,
}

/// An address with its prefix length, shown `address/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub ip: IpAddr,
    pub prefix: u8,
}

/// Where the device is attached: the primary connection and its routable addresses. Two
/// attachments that differ are a move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub uuid: String,
    /// Sorted; link-local addresses left out (every link has them).
    pub addresses: Vec<Address>,
}

impl NetworkState {
    /// Whether NetworkManager says the device has no connection (asleep, disconnected, or
    /// on the way in or out of a connection). Unknown is not offline: without
    /// NetworkManager omadmd cannot tell, and works on.
    pub fn offline(&self) -> bool {
        self.state.is_offline()
    }

    /// The access technology of the primary connection; `none` without one.
    pub fn access_technology(&self) -> &'static str {
        self.primary
            .as_ref()
            .map_or("none", |p| p.technology.as_str())
    }

    /// The attachment: the primary connection, when it has a routable address.
    pub fn attachment(&self) -> Option<Attachment> {
        let primary = self.primary.as_ref()?;
        let mut addresses: Vec<Address> = primary
            .addresses
            .iter()
            .filter(|a| !a.is_link_local())
            .copied()
            .collect();
        addresses.sort();
        addresses.dedup();
        (!addresses.is_empty()).then(|| Attachment {
            uuid: primary.uuid.clone(),
            addresses,
        })
    }
}

impl Address {
    /// IPv4 169.254.0.0/16 or IPv6 fe80::/10.
    pub fn is_link_local(&self) -> bool {
        match self.ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// NetworkManager's overall state (`NMState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NmState {
    #[default]
    Unknown,
    Asleep,
    /// NetworkManager's "disconnected".
    Offline,
    Disconnecting,
    Connecting,
    ConnectedLocal,
    ConnectedSite,
    /// NetworkManager's "connected (global)".
    Connected,
}

impl NmState {
    /// From NetworkManager's number (anything it may add later is unknown).
    pub fn from_nm(value: u32) -> NmState {
        match value {
            10 => NmState::Asleep,
            20 => NmState::Offline,
            30 => NmState::Disconnecting,
            40 => NmState::Connecting,
            50 => NmState::ConnectedLocal,
            60 => NmState::ConnectedSite,
            70 => NmState::Connected,
            _ => NmState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NmState::Unknown => "unknown",
            NmState::Asleep => "asleep",
            NmState::Offline => "offline",
            NmState::Disconnecting => "disconnecting",
            NmState::Connecting => "connecting",
            NmState::ConnectedLocal => "connected-local",
            NmState::ConnectedSite => "connected-site",
            NmState::Connected => "connected",
        }
    }

    /// No connection at all (see [`NetworkState::offline`]).
    pub fn is_offline(self) -> bool {
        matches!(
            self,
            NmState::Asleep | NmState::Offline | NmState::Disconnecting | NmState::Connecting
        )
    }
}

/// NetworkManager's connectivity check (`NMConnectivityState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Connectivity {
    #[default]
    Unknown,
    None,
    /// Behind a captive portal.
    Portal,
    /// Connected, but the check's host is not reachable.
    Limited,
    Full,
}

impl Connectivity {
    pub fn from_nm(value: u32) -> Connectivity {
        match value {
            1 => Connectivity::None,
            2 => Connectivity::Portal,
            3 => Connectivity::Limited,
            4 => Connectivity::Full,
            _ => Connectivity::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Connectivity::Unknown => "unknown",
            Connectivity::None => "none",
            Connectivity::Portal => "portal",
            Connectivity::Limited => "limited",
            Connectivity::Full => "full",
        }
    }
}

/// A device's state (`NMDeviceState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceState {
    #[default]
    Unknown,
    Unmanaged,
    Unavailable,
    Disconnected,
    Prepare,
    Config,
    NeedAuth,
    IpConfig,
    IpCheck,
    Secondaries,
    Activated,
    Deactivating,
    Failed,
}

impl DeviceState {
    pub fn from_nm(value: u32) -> DeviceState {
        match value {
            10 => DeviceState::Unmanaged,
            20 => DeviceState::Unavailable,
            30 => DeviceState::Disconnected,
            40 => DeviceState::Prepare,
            50 => DeviceState::Config,
            60 => DeviceState::NeedAuth,
            70 => DeviceState::IpConfig,
            80 => DeviceState::IpCheck,
            90 => DeviceState::Secondaries,
            100 => DeviceState::Activated,
            110 => DeviceState::Deactivating,
            120 => DeviceState::Failed,
            _ => DeviceState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Unknown => "unknown",
            DeviceState::Unmanaged => "unmanaged",
            DeviceState::Unavailable => "unavailable",
            DeviceState::Disconnected => "disconnected",
            DeviceState::Prepare => "prepare",
            DeviceState::Config => "config",
            DeviceState::NeedAuth => "need-auth",
            DeviceState::IpConfig => "ip-config",
            DeviceState::IpCheck => "ip-check",
            DeviceState::Secondaries => "secondaries",
            DeviceState::Activated => "activated",
            DeviceState::Deactivating => "deactivating",
            DeviceState::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        let (ip, prefix) = text.split_once('/').unwrap();
        Address {
            ip: ip.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
        }
    }

    fn primary(addresses: &[&str]) -> NetworkState {
        NetworkState {
            state: NmState::Connected,
            primary: Some(Primary {
                name: "home".into(),
                uuid: "u1".into(),
                technology: Technology::Wifi,
                addresses: addresses.iter().map(|a| addr(a)).collect(),
            }),
            ..NetworkState::default()
        }
    }

    #[test]
    fn states_map_from_networkmanager_numbers() {
        assert_eq!(NmState::from_nm(70).as_str(), "connected");
        assert_eq!(NmState::from_nm(20).as_str(), "offline");
        assert_eq!(NmState::from_nm(3).as_str(), "unknown");
        assert_eq!(Connectivity::from_nm(2).as_str(), "portal");
        assert_eq!(DeviceState::from_nm(100).as_str(), "activated");
        assert_eq!(DeviceState::from_nm(60).as_str(), "need-auth");
        for offline in [10, 20, 30, 40] {
            assert!(NmState::from_nm(offline).is_offline(), "{offline}");
        }
        for not in [0, 50, 60, 70] {
            assert!(!NmState::from_nm(not).is_offline(), "{not}");
        }
        assert!(!NetworkState::default().offline(), "unknown is not offline");
    }

    #[test]
    fn the_attachment_is_the_primary_with_its_routable_addresses() {
        assert_eq!(NetworkState::default().attachment(), None);
        assert_eq!(NetworkState::default().access_technology(), "none");
        let s = primary(&["fe80::1/64", "10.0.0.2/24", "2001:db8::2/64"]);
        assert_eq!(s.access_technology(), "wifi");
        let a = s.attachment().unwrap();
        assert_eq!(a.uuid, "u1");
        let shown: Vec<String> = a.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.2/24", "2001:db8::2/64"]);
        // Order does not matter; link-local addresses never make an attachment.
        assert_eq!(
            primary(&["2001:db8::2/64", "10.0.0.2/24"]).attachment(),
            Some(a)
        );
        assert_eq!(
            primary(&["fe80::1/64", "169.254.3.4/16"]).attachment(),
            None
        );
        assert_eq!(primary(&[]).attachment(), None);
    }
}
