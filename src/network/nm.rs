//! NetworkManager on D-Bus: its names, reading everything it shows in one call
//! (`org.freedesktop.DBus.ObjectManager.GetManagedObjects` on `/org/freedesktop`, which NM
//! has had since 1.6: every object with its interfaces and properties, consistent at one
//! instant), and which of its signals can change what omadmd shows.
//!
//! What is read, by interface (`org.freedesktop.NetworkManager` + ...):
//! - `` (the manager, `/org/freedesktop/NetworkManager`): `State`, `Connectivity`,
//!   `PrimaryConnection`, `Devices`;
//! - `.Device`: `Interface`, `DeviceType`, `State`, `Ip4Config`, `Ip6Config`, and which
//!   `.Device.*` interfaces the object implements (the technology);
//! - `.Connection.Active` (the primary connection): `Id`, `Uuid`, `Devices`, `Ip4Config`,
//!   `Ip6Config`;
//! - `.IP4Config`, `.IP6Config`: `AddressData` (`address`, `prefix`).
//!
//! A property that is missing or of another type reads as absent (unknown, none, empty).

use std::collections::HashMap;
use std::net::IpAddr;

use zbus::fdo::{ManagedObjects, ObjectManagerProxy};
use zbus::message::{Message, Type as MessageType};
use zbus::names::OwnedInterfaceName;
use zbus::proxy::CacheProperties;
use zbus::{OwnedVariant, Variant};

use super::state::{Address, Connectivity, DeviceState, Interface, NetworkState, NmState, Primary};
use super::technology::Technology;

/// NetworkManager's bus name.
pub const BUS_NAME: &str = "org.freedesktop.NetworkManager";
/// Where its ObjectManager is; every object of it is below.
pub const ROOT_PATH: &str = "/org/freedesktop";
const MANAGER_PATH: &str = "/org/freedesktop/NetworkManager";

const MANAGER: &str = "org.freedesktop.NetworkManager";
const DEVICE: &str = "org.freedesktop.NetworkManager.Device";
const ACTIVE: &str = "org.freedesktop.NetworkManager.Connection.Active";
const IP4: &str = "org.freedesktop.NetworkManager.IP4Config";
const IP6: &str = "org.freedesktop.NetworkManager.IP6Config";
/// The interfaces whose properties omadmd reads.
const READ: [&str; 5] = [MANAGER, DEVICE, ACTIVE, IP4, IP6];

const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";

/// Reads NetworkManager's picture (with `moves` 0).
pub async fn read(conn: &zbus::Connection) -> zbus::Result<NetworkState> {
    let objects = ObjectManagerProxy::builder(conn)
        .destination(BUS_NAME)
        .path(ROOT_PATH)
        .cache_properties(CacheProperties::No)
        .build()
        .await?
        .get_managed_objects()
        .await?;
    Ok(parse(&objects))
}

/// Whether `msg`, a signal from NetworkManager, may change what [`read`] finds: a change
/// of a property omadmd reads (`PropertiesChanged`, also NM's older per-interface one), a
/// state change, a device or an object of those interfaces coming or going.
pub fn is_relevant(msg: &Message) -> bool {
    let header = msg.header();
    if header.message_type() != MessageType::Signal {
        return false;
    }
    let (Some(interface), Some(member)) = (header.interface(), header.member()) else {
        return false;
    };
    match (interface.as_str(), member.as_str()) {
        (PROPERTIES, "PropertiesChanged") => msg
            .body()
            .deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
            .is_ok_and(|(changed, _, _)| READ.contains(&changed.as_str())),
        (OBJECT_MANAGER, "InterfacesAdded") => msg
            .body()
            .deserialize::<(
                zbus::OwnedObjectPath,
                HashMap<OwnedInterfaceName, HashMap<String, OwnedVariant>>,
            )>()
            .is_ok_and(|(_, added)| added.keys().any(|i| READ.contains(&i.as_str()))),
        (OBJECT_MANAGER, "InterfacesRemoved") => msg
            .body()
            .deserialize::<(zbus::OwnedObjectPath, Vec<String>)>()
            .is_ok_and(|(_, removed)| removed.iter().any(|i| READ.contains(&i.as_str()))),
        (i, "PropertiesChanged" | "StateChanged" | "DeviceAdded" | "DeviceRemoved") => {
            READ.contains(&i)
        }
        _ => false,
    }
}

/// NetworkManager's picture from its managed objects.
pub fn parse(objects: &ManagedObjects) -> NetworkState {
    let objects = Objects(objects);
    let manager = |name: &str| objects.prop(MANAGER_PATH, MANAGER, name);
    let devices: Vec<(String, Interface)> = manager("Devices")
        .map(paths)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|path| Some((path.clone(), objects.device(&path)?)))
        .collect();
    let primary = manager("PrimaryConnection")
        .and_then(path_of)
        .and_then(|p| objects.primary(&p, &devices));
    NetworkState {
        state: NmState::from_nm(manager("State").and_then(u32_of).unwrap_or(0)),
        connectivity: Connectivity::from_nm(manager("Connectivity").and_then(u32_of).unwrap_or(0)),
        primary,
        interfaces: devices.into_iter().map(|(_, d)| d).collect(),
        moves: 0,
    }
}

struct Objects<'a>(&'a ManagedObjects);

impl Objects<'_> {
    /// The interfaces of the object at `path` (none if it is not there).
    fn interfaces(&self, path: &str) -> Vec<&str> {
        self.0
            .iter()
            .find(|(p, _)| p.as_str() == path)
            .map(|(_, ifaces)| ifaces.keys().map(|i| i.as_str()).collect())
            .unwrap_or_default()
    }

    fn prop(&self, path: &str, interface: &str, name: &str) -> Option<&Variant<'static>> {
        let (_, ifaces) = self.0.iter().find(|(p, _)| p.as_str() == path)?;
        let (_, props) = ifaces.iter().find(|(i, _)| i.as_str() == interface)?;
        props.get(name).map(|v| unwrap(v))
    }

    /// The device at `path`, when the object is there and is a device with a name.
    fn device(&self, path: &str) -> Option<Interface> {
        let prop = |name: &str| self.prop(path, DEVICE, name);
        let name = prop("Interface").and_then(str_of)?.to_owned();
        let device_type = prop("DeviceType").and_then(u32_of).unwrap_or(0);
        Some(Interface {
            name,
            technology: Technology::of_device(self.interfaces(path), device_type),
            state: DeviceState::from_nm(prop("State").and_then(u32_of).unwrap_or(0)),
            addresses: self.addresses(path, DEVICE),
        })
    }

    /// The active connection at `path` as the primary connection; its technology is that
    /// of its first device among `devices`.
    fn primary(&self, path: &str, devices: &[(String, Interface)]) -> Option<Primary> {
        let prop = |name: &str| self.prop(path, ACTIVE, name);
        let uuid = prop("Uuid").and_then(str_of)?.to_owned();
        let device = prop("Devices")
            .map(paths)
            .unwrap_or_default()
            .into_iter()
            .find_map(|p| devices.iter().find(|(d, _)| *d == p).map(|(_, d)| d));
        let own = self.addresses(path, ACTIVE);
        Some(Primary {
            name: prop("Id").and_then(str_of).unwrap_or_default().to_owned(),
            uuid,
            technology: device.map_or(Technology::Other, |d| d.technology),
            addresses: match (own.is_empty(), device) {
                (true, Some(d)) => d.addresses.clone(),
                _ => own,
            },
        })
    }

    /// The IPv4 then IPv6 addresses of the configurations `Ip4Config` and `Ip6Config` of
    /// the object at `path` name (through `interface`).
    fn addresses(&self, path: &str, interface: &str) -> Vec<Address> {
        let mut out = Vec::new();
        for (config, kind) in [("Ip4Config", IP4), ("Ip6Config", IP6)] {
            let Some(at) = self.prop(path, interface, config).and_then(path_of) else {
                continue;
            };
            if let Some(Variant::Array(data)) = self.prop(&at, kind, "AddressData") {
                out.extend(data.inner().iter().filter_map(address));
            }
        }
        out
    }
}

/// One `AddressData` entry: `{"address": s, "prefix": u}`.
fn address(entry: &Variant<'_>) -> Option<Address> {
    let Variant::Dict(d) = unwrap(entry) else {
        return None;
    };
    let field = |name: &str| {
        d.iter()
            .find(|(k, _)| str_of(k) == Some(name))
            .map(|(_, v)| unwrap(v))
    };
    let ip: IpAddr = field("address").and_then(str_of)?.parse().ok()?;
    let prefix = u8::try_from(field("prefix").and_then(u32_of)?).ok()?;
    Some(Address { ip, prefix })
}

/// The value inside any variant wrapping.
fn unwrap<'v, 'a>(v: &'v Variant<'a>) -> &'v Variant<'a> {
    match v {
        Variant::Variant(inner) => unwrap(inner),
        other => other,
    }
}

fn u32_of(v: &Variant<'_>) -> Option<u32> {
    match unwrap(v) {
        Variant::U32(n) => Some(*n),
        _ => None,
    }
}

fn str_of<'v>(v: &'v Variant<'_>) -> Option<&'v str> {
    match unwrap(v) {
        Variant::Str(s) => Some(s.as_str()),
        _ => None,
    }
}

/// An object path other than `/` (NetworkManager's "none").
fn path_of(v: &Variant<'_>) -> Option<String> {
    match unwrap(v) {
        Variant::ObjectPath(p) if p.as_str() != "/" => Some(p.as_str().to_owned()),
        _ => None,
    }
}

/// The object paths of an array of them.
fn paths(v: &Variant<'_>) -> Vec<String> {
    match unwrap(v) {
        Variant::Array(a) => a.inner().iter().filter_map(path_of).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::OwnedObjectPath;

    type Props = Vec<(&'static str, Variant<'static>)>;

    fn objects(list: Vec<(&str, Vec<(&str, Props)>)>) -> ManagedObjects {
        list.into_iter()
            .map(|(path, ifaces)| {
                let ifaces = ifaces
                    .into_iter()
                    .map(|(name, props)| {
                        let props = props
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), OwnedVariant::try_from(v).unwrap()))
                            .collect();
                        (OwnedInterfaceName::try_from(name).unwrap(), props)
                    })
                    .collect();
                (OwnedObjectPath::try_from(path).unwrap(), ifaces)
            })
            .collect()
    }

    fn opath(p: &str) -> Variant<'static> {
        Variant::from(zbus::ObjectPath::try_from(p.to_owned()).unwrap())
    }

    fn opaths(ps: &[&str]) -> Variant<'static> {
        let list: Vec<zbus::ObjectPath<'static>> = ps
            .iter()
            .map(|p| zbus::ObjectPath::try_from((*p).to_owned()).unwrap())
            .collect();
        Variant::from(list)
    }

    fn address_data(list: &[(&str, u32)]) -> Variant<'static> {
        let entries: Vec<HashMap<String, Variant<'static>>> = list
            .iter()
            .map(|(a, p)| {
                HashMap::from([
                    ("address".to_owned(), Variant::from((*a).to_owned())),
                    ("prefix".to_owned(), Variant::from(*p)),
                ])
            })
            .collect();
        Variant::from(entries)
    }

    const NM: &str = "/org/freedesktop/NetworkManager";

    /// What NetworkManager 1.42 showed for the test harness's veth (trimmed).
    fn harness() -> ManagedObjects {
        objects(vec![
            (
                NM,
                vec![(
                    MANAGER,
                    vec![
                        ("State", Variant::from(70u32)),
                        ("Connectivity", Variant::from(4u32)),
                        (
                            "PrimaryConnection",
                            opath("/org/freedesktop/NetworkManager/ActiveConnection/2"),
                        ),
                        (
                            "Devices",
                            opaths(&[
                                "/org/freedesktop/NetworkManager/Devices/1",
                                "/org/freedesktop/NetworkManager/Devices/2",
                            ]),
                        ),
                    ],
                )],
            ),
            (
                "/org/freedesktop/NetworkManager/Devices/1",
                vec![
                    (
                        DEVICE,
                        vec![
                            ("Interface", Variant::from("lo".to_owned())),
                            ("DeviceType", Variant::from(32u32)),
                            ("State", Variant::from(100u32)),
                            (
                                "Ip4Config",
                                opath("/org/freedesktop/NetworkManager/IP4Config/1"),
                            ),
                            ("Ip6Config", opath("/")),
                        ],
                    ),
                    ("org.freedesktop.NetworkManager.Device.Loopback", vec![]),
                ],
            ),
            (
                "/org/freedesktop/NetworkManager/Devices/2",
                vec![
                    (
                        DEVICE,
                        vec![
                            ("Interface", Variant::from("nm0".to_owned())),
                            ("DeviceType", Variant::from(20u32)),
                            ("State", Variant::from(100u32)),
                            (
                                "Ip4Config",
                                opath("/org/freedesktop/NetworkManager/IP4Config/2"),
                            ),
                            (
                                "Ip6Config",
                                opath("/org/freedesktop/NetworkManager/IP6Config/2"),
                            ),
                        ],
                    ),
                    ("org.freedesktop.NetworkManager.Device.Statistics", vec![]),
                    ("org.freedesktop.NetworkManager.Device.Wired", vec![]),
                    ("org.freedesktop.NetworkManager.Device.Veth", vec![]),
                ],
            ),
            (
                "/org/freedesktop/NetworkManager/ActiveConnection/2",
                vec![(
                    ACTIVE,
                    vec![
                        ("Id", Variant::from("harness-nm0".to_owned())),
                        ("Uuid", Variant::from("6c1c9f2e".to_owned())),
                        (
                            "Devices",
                            opaths(&["/org/freedesktop/NetworkManager/Devices/2"]),
                        ),
                        (
                            "Ip4Config",
                            opath("/org/freedesktop/NetworkManager/IP4Config/2"),
                        ),
                        (
                            "Ip6Config",
                            opath("/org/freedesktop/NetworkManager/IP6Config/2"),
                        ),
                    ],
                )],
            ),
            (
                "/org/freedesktop/NetworkManager/IP4Config/1",
                vec![(
                    IP4,
                    vec![("AddressData", address_data(&[("127.0.0.1", 8)]))],
                )],
            ),
            (
                "/org/freedesktop/NetworkManager/IP4Config/2",
                vec![(
                    IP4,
                    vec![("AddressData", address_data(&[("10.77.0.2", 24)]))],
                )],
            ),
            (
                "/org/freedesktop/NetworkManager/IP6Config/2",
                vec![(
                    IP6,
                    vec![(
                        "AddressData",
                        address_data(&[("fe80::1", 64), ("2001:db8::2", 64)]),
                    )],
                )],
            ),
        ])
    }

    #[test]
    fn parses_what_networkmanager_shows() {
        let s = parse(&harness());
        assert_eq!(s.state, NmState::Connected);
        assert_eq!(s.connectivity, Connectivity::Full);
        let names: Vec<(&str, &str, &str)> = s
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), i.technology.as_str(), i.state.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("lo", "loopback", "activated"),
                ("nm0", "ethernet", "activated")
            ]
        );
        let nm0: Vec<String> = s.interfaces[1]
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nm0, ["10.77.0.2/24", "fe80::1/64", "2001:db8::2/64"]);
        let p = s.primary.as_ref().unwrap();
        assert_eq!(
            (p.name.as_str(), p.uuid.as_str()),
            ("harness-nm0", "6c1c9f2e")
        );
        assert_eq!(s.access_technology(), "ethernet");
        assert_eq!(p.addresses, s.interfaces[1].addresses);
        assert_eq!(s.moves, 0);
    }

    fn signal<B: serde::Serialize + zbus::DynamicType>(
        path: &str,
        interface: &str,
        member: &str,
        body: &B,
    ) -> Message {
        Message::signal(path, interface, member)
            .build(body)
            .unwrap()
    }

    #[test]
    fn only_changes_of_what_is_read_are_relevant() {
        let props = |interface: &str| {
            let changed: HashMap<&str, Variant<'_>> =
                HashMap::from([("State", Variant::from(70u32))]);
            signal(
                NM,
                PROPERTIES,
                "PropertiesChanged",
                &(interface, changed, Vec::<&str>::new()),
            )
        };
        assert!(is_relevant(&props(MANAGER)));
        assert!(is_relevant(&props(DEVICE)));
        assert!(is_relevant(&props(IP6)));
        assert!(!is_relevant(&props(
            "org.freedesktop.NetworkManager.AccessPoint"
        )));
        assert!(!is_relevant(&props(
            "org.freedesktop.NetworkManager.Device.Statistics"
        )));
        assert!(is_relevant(&signal(NM, MANAGER, "StateChanged", &(70u32,))));
        assert!(is_relevant(&signal(
            "/org/freedesktop/NetworkManager/Devices/2",
            DEVICE,
            "StateChanged",
            &(100u32, 30u32, 0u32)
        )));
        let added = |interface: &str| {
            let ifaces: HashMap<&str, HashMap<&str, Variant<'_>>> =
                HashMap::from([(interface, HashMap::new())]);
            let path = zbus::ObjectPath::try_from("/org/freedesktop/NetworkManager/X/1").unwrap();
            signal(
                ROOT_PATH,
                OBJECT_MANAGER,
                "InterfacesAdded",
                &(path, ifaces),
            )
        };
        assert!(is_relevant(&added(ACTIVE)));
        assert!(!is_relevant(&added(
            "org.freedesktop.NetworkManager.AccessPoint"
        )));
        let path = zbus::ObjectPath::try_from("/org/freedesktop/NetworkManager/X/1").unwrap();
        assert!(is_relevant(&signal(
            ROOT_PATH,
            OBJECT_MANAGER,
            "InterfacesRemoved",
            &(path, vec![IP4])
        )));
        assert!(!is_relevant(&signal(
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameOwnerChanged",
            &(BUS_NAME, "", ":1.5")
        )));
    }

    #[test]
    fn missing_objects_and_properties_read_as_absent() {
        assert_eq!(parse(&ManagedObjects::new()), NetworkState::default());
        // No primary, a device path without an object, a device without addresses, a
        // property of the wrong type.
        let s = parse(&objects(vec![
            (
                NM,
                vec![(
                    MANAGER,
                    vec![
                        ("State", Variant::from("70".to_owned())),
                        ("PrimaryConnection", opath("/")),
                        (
                            "Devices",
                            opaths(&[
                                "/org/freedesktop/NetworkManager/Devices/7",
                                "/org/freedesktop/NetworkManager/Devices/8",
                            ]),
                        ),
                    ],
                )],
            ),
            (
                "/org/freedesktop/NetworkManager/Devices/8",
                vec![(
                    DEVICE,
                    vec![
                        ("Interface", Variant::from("wlan0".to_owned())),
                        ("DeviceType", Variant::from(2u32)),
                    ],
                )],
            ),
        ]));
        assert_eq!(s.state, NmState::Unknown);
        assert_eq!(s.primary, None);
        assert_eq!(s.interfaces.len(), 1);
        assert_eq!(s.interfaces[0].technology, Technology::Wifi);
        assert!(s.interfaces[0].addresses.is_empty());
        assert_eq!(s.interfaces[0].state, DeviceState::Unknown);
    }
}
