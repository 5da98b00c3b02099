//! A device behind NAT, for real (tests/support/nat.rs): two router namespaces, "home" and
//! "office", each masquerading (nftables) towards an "internet" namespace that has no route
//! back to either LAN; NetworkManager on the device manages one veth to each router.
//!
//! First the topology itself, with plain sockets: a TCP connection from the device reaches a
//! server in the internet, which sees the public address of the router the device is behind —
//! home's, then office's once the device has been unplugged at home and plugged in at the
//! office and NetworkManager's primary connection and default route have followed; a datagram
//! from the internet never reaches the device. Then omadmd on that device, its DM server
//! (`omadm-devserver`) and MQTT broker (`mosquitto`) in the internet: a UDP Package#0 from
//! the internet cannot start a session (the same datagram from the LAN side can) while an
//! MQTT one does; and use case B.3 — moved from home to the office with nobody touching it,
//! the device reconnects to the broker, tells its server of the move (the NetworkChanged
//! alert, the network MO's new address) and answers the next notification.
//!
//! One topology (one NetworkManager) serves the tests of this file, one test at a time: a
//! move takes about 6 s. Each test first moves the device where it needs it. The topology
//! goes when the test binary ends (the harness's watchdog); `nat_teardown_...` checks, on a
//! topology of its own, that stopping it leaves nothing behind.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::ops::{Deref, DerefMut};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};

use omadmd::devserver::{Direction, Record};
use omadmd::protocol::alert;
use serde_json::{Value as J, json};

use crate::support::nat::{
    Broker, DeviceDaemon, DmServer, Nat, Ns, PATIENCE, Pki, SERVER, Site, notify,
};
use crate::support::network::{NETWORK, network_mo};
use crate::support::sysbus::{show, wait_until};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const NETWORK_CHANGED: &str = "urn:oma:at:ext-omadmd:1.0:NetworkChanged";
/// The DM account's SrvID (the notifications' SERVER-ID).
const SRV: &str = "natsrv";
/// Its `Auth/Noti/Secret`; the account holds the base64, `czNjcmV0`.
const NOTI_SECRET: &str = "s3cret";
/// Its MQTT topic.
const TOPIC: &str = "omadm/nat-device";
/// Where omadmd listens for UDP notifications, when it does.
const UDP_PORT: u16 = 4000;

/// The topology the tests of this file share, theirs one at a time.
struct Shared(MutexGuard<'static, Option<Nat>>);

impl Deref for Shared {
    type Target = Nat;
    fn deref(&self) -> &Nat {
        self.0.as_ref().expect("started")
    }
}

impl DerefMut for Shared {
    fn deref_mut(&mut self) -> &mut Nat {
        self.0.as_mut().expect("started")
    }
}

fn shared() -> Shared {
    static NAT: Mutex<Option<Nat>> = Mutex::new(None);
    // A test that failed holding it leaves it usable: each test moves the device itself.
    let mut guard = NAT.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = Some(Nat::start());
    }
    Shared(guard)
}

/// NetworkManager's primary connection is `site`'s, the only default route goes through its
/// router, and the device has its address there and none at the other site.
#[track_caller]
fn assert_attached(nat: &Nat, site: Site) {
    assert_eq!(
        nat.primary_connection(),
        Some(site.connection()),
        "{}",
        nat.logs()
    );
    assert_eq!(
        nat.default_routes(),
        [(site.gateway().to_string(), site.interface())],
        "the device's default routes"
    );
    let other = match site {
        Site::Home => Site::Office,
        Site::Office => Site::Home,
    };
    let addresses = |s: Site| {
        nat.ip(
            Ns::Device,
            &["-4", "-o", "addr", "show", "dev", &s.interface()],
        )
    };
    assert!(
        addresses(site).contains(&format!(" {}/24 ", site.device_address())),
        "{}",
        addresses(site)
    );
    assert!(!addresses(other).contains(" inet "), "{}", addresses(other));
}

/// Connects from the device to a listener in the internet, exchanges a line each way, and
/// returns the peer address the listener saw, after checking that the device's end is its
/// address at `site`.
fn address_seen_by_a_server(nat: &Nat, site: Site) -> IpAddr {
    let listener = nat.in_namespace(Ns::Internet, || TcpListener::bind((SERVER, 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    let mut device = nat.in_namespace(Ns::Device, || {
        TcpStream::connect_timeout(&addr, PATIENCE)
            .unwrap_or_else(|e| panic!("connect to {addr} from the device: {e}"))
    });
    assert_eq!(device.local_addr().unwrap().ip(), site.device_address());
    let (mut server, peer) = listener.accept().unwrap();
    device.write_all(b"ping\n").unwrap();
    let mut buf = [0; 5];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    server.write_all(b"pong\n").unwrap();
    device.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong\n");
    peer.ip()
}

#[test]
fn nat_tcp_from_the_device_shows_its_sites_public_address_and_follows_a_move() {
    let mut nat = shared();
    nat.move_to(Site::Home);
    assert_attached(&nat, Site::Home);
    assert_eq!(
        address_seen_by_a_server(&nat, Site::Home),
        Site::Home.public_address(),
        "the server sees home's router, not the device"
    );

    // Unplugged at home, plugged in at the office: NetworkManager's primary connection, the
    // default route, the device's address and the address servers see all change.
    nat.move_to(Site::Office);
    assert_attached(&nat, Site::Office);
    assert_eq!(
        address_seen_by_a_server(&nat, Site::Office),
        Site::Office.public_address()
    );
}

#[test]
fn nat_a_datagram_from_the_internet_never_reaches_the_device() {
    let nat = shared();
    let site = nat.site();
    let device = nat.in_namespace(Ns::Device, || UdpSocket::bind(("0.0.0.0", 0)).unwrap());
    device.set_read_timeout(Some(PATIENCE)).unwrap();
    let port = device.local_addr().unwrap().port();
    let server = nat.in_namespace(Ns::Internet, || UdpSocket::bind((SERVER, 0)).unwrap());
    server.set_read_timeout(Some(PATIENCE)).unwrap();

    // The internet has no route to the device's network...
    let err = server
        .send_to(b"direct", (site.device_address(), port))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NetworkUnreachable, "{err}");
    // ... and at the router's public address the NAT holds no mapping for the device.
    server
        .send_to(b"unsolicited", (site.public_address(), port))
        .unwrap();

    // Once the device has sent a datagram out, the NAT maps the reply back to it. That reply
    // is the first datagram the device gets: the unsolicited one, sent earlier on the same
    // path, never came.
    device
        .send_to(b"hello", server.local_addr().unwrap())
        .unwrap();
    let mut buf = [0; 64];
    let (n, mapped) = server.recv_from(&mut buf).expect("the device's datagram");
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(mapped.ip(), IpAddr::V4(site.public_address()));
    server.send_to(b"reply", mapped).unwrap();
    let (n, from) = device.recv_from(&mut buf).expect("the reply");
    assert_eq!(
        std::str::from_utf8(&buf[..n]),
        Ok("reply"),
        "first datagram at the device"
    );
    assert_eq!(from, server.local_addr().unwrap());
}

/// The host's network links (names).
fn host_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let mut links: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some(l.split(": ").nth(1)?.to_owned()))
        .collect();
    links.sort();
    links
}

/// The fields of `/proc/PID/stat` from the third (state) on: index `n - 3` is field `n`.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_command) = stat.rsplit_once(')')?;
    Some(
        after_command
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// A process's start time (field 22), which tells it from a later one with its PID.
fn start_time(pid: u32) -> String {
    stat_fields(pid).expect("a running process")[19].clone()
}

/// Whether the process that was `pid` with start time `start` still runs (a zombie does not).
fn running(pid: u32, start: &str) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[19] == start)
}

#[test]
fn nat_teardown_leaves_nothing_on_the_host() {
    let links = host_links();
    let netns_dir = std::path::Path::new("/run/netns").exists();
    let mut nat = Nat::start();
    let dir = nat.bus().dir().to_owned();
    let holders: Vec<(u32, String)> = [
        Ns::Router(Site::Home),
        Ns::Router(Site::Office),
        Ns::Internet,
    ]
    .into_iter()
    .map(|ns| (nat.pid(ns), start_time(nat.pid(ns))))
    .collect();
    let device = (nat.pid(Ns::Device), start_time(nat.pid(Ns::Device)));
    // A process a test left in the internet: stopped with the topology.
    let mut left = nat
        .command(Ns::Internet, "sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let left_start = start_time(left.id());
    assert_eq!(
        host_links(),
        links,
        "the topology's links are in its namespaces"
    );

    nat.stop();
    assert!(
        wait_until(PATIENCE, || !running(left.id(), &left_start)),
        "left behind in the internet namespace"
    );
    let _ = left.wait();
    for (pid, start) in &holders {
        assert!(
            wait_until(PATIENCE, || !running(*pid, start)),
            "namespace holder {pid}"
        );
    }
    nat.stop();
    assert!(
        running(device.0, &device.1),
        "the bus harness runs on until the drop"
    );
    drop(nat);
    assert!(wait_until(PATIENCE, || !running(device.0, &device.1)));
    assert!(!dir.exists(), "{} removed", dir.display());
    assert_eq!(host_links(), links);
    assert_eq!(std::path::Path::new("/run/netns").exists(), netns_dir);
}

// ---------------------------------------------------------------- omadmd behind the NAT

/// Each session GETs the network MO's `Primary` (the server can: its account has the MOID).
fn scenario() -> String {
    json!({"name": "nat", "packages": [
        {"commands": [["GET", format!("{NETWORK}//Primary")]], "expect": [200]},
        {"commands": [["END"]]}
    ]})
    .to_string()
}

/// omadmd on the device with a DM account for a server and broker in the internet, and one
/// session done (the first, which carries BootstrapComplete whatever starts it).
struct Managed {
    pki: Pki,
    broker: Broker,
    server: DmServer,
    daemon: DeviceDaemon,
}

impl Managed {
    fn start(nat: &Nat, config: &str) -> Managed {
        let pki = Pki::generate();
        let broker = Broker::start(nat, &pki, &[("dev", "dev-pw"), ("server", "server-pw")]);
        let server = DmServer::start(nat, &pki, &scenario());
        let daemon = DeviceDaemon::start(nat, config);
        let m = Managed {
            pki,
            broker,
            server,
            daemon,
        };
        let account = json!({"DMAcc": {
            "SrvID": SRV,
            "SrvURI": m.server.url(),
            "Perm": {"p0": {"MOID": NETWORK}},
            "Ext": {"CACert": m.pki.ca_pem},
            "Auth": {"Noti": {"Secret": "czNjcmV0"}},
            "Push": {"m": {"Type": "mqtt", "Addr": m.broker.url(TOPIC),
                           "User": "dev", "Secret": "dev-pw"}}}});
        ctl(nat, &["create", DMACC, &account.to_string()]);
        ctl(nat, &["session", "start", SRV]);
        m.wait(|| m.sessions().iter().any(|s| s.ended), "the first session");
        m.wait(|| channel(nat) == "mqtt:connected", "the MQTT channel up");
        m
    }

    /// Waits for `what` (failing with the logs of omadmd, the server and the broker).
    #[track_caller]
    fn wait(&self, mut f: impl FnMut() -> bool, what: &str) {
        assert!(
            wait_until(PATIENCE, &mut f),
            "{what} did not happen\n--- omadmd ---\n{}\n--- devserver ---\n{}\n--- mosquitto ---\n{}",
            self.daemon.log(),
            self.server.output(),
            self.broker.log()
        );
    }

    /// The server's sessions so far.
    fn sessions(&self) -> Vec<Session> {
        Session::all(&self.server.transcript())
    }

    /// The session that answered NOTIFICATION-ID `id`, once it has ended.
    fn answered(&self, id: u64) -> Option<Session> {
        self.sessions()
            .into_iter()
            .find(|s| s.ended && s.notification_id() == Some(id))
    }

    /// Publishes a signed notification with NOTIFICATION-ID `id` on the device's topic, as
    /// the DM server does from the internet.
    fn notify_mqtt(&self, nat: &Nat, id: u16) {
        let ca = self.pki.dir().join("ca.pem");
        let out = notify(
            nat,
            Ns::Internet,
            &[
                "--mqtt",
                &self.broker.url(TOPIC),
                "--mqtt-user",
                "server",
                "--mqtt-password",
                "server-pw",
                "--mqtt-ca",
                ca.to_str().unwrap(),
                "--server-id",
                SRV,
                "--id",
                &id.to_string(),
                "--secret",
                NOTI_SECRET,
            ],
        );
        assert!(out.status.success(), "notify --mqtt: {}", show(&out));
    }
}

/// `omadm-devserver notify` of a signed UDP notification with NOTIFICATION-ID `id` to `to`,
/// from `ns`.
fn notify_udp(nat: &Nat, ns: Ns, to: Ipv4Addr, id: u16) -> Output {
    notify(
        nat,
        ns,
        &[
            "--udp",
            &format!("{to}:{UDP_PORT}"),
            "--server-id",
            SRV,
            "--id",
            &id.to_string(),
            "--secret",
            NOTI_SECRET,
        ],
    )
}

/// One DM session as the server's transcript shows it.
#[derive(Debug)]
struct Session {
    /// Package#1's body.
    package1: J,
    /// Where Package#1 came from (the address the server sees of the device).
    peer: IpAddr,
    /// The Package#3 bodies.
    package3: Vec<J>,
    /// Whether the server has sent its END.
    ended: bool,
}

impl Session {
    fn all(transcript: &[Record]) -> Vec<Session> {
        let mut numbers: Vec<u64> = transcript
            .iter()
            .filter(|r| r.kind == "package#1")
            .map(|r| r.session)
            .collect();
        numbers.dedup();
        numbers
            .into_iter()
            .filter_map(|n| {
                let of = |kind: &'static str, dir: Direction| {
                    transcript
                        .iter()
                        .filter(move |r| r.session == n && r.kind == kind && r.direction == dir)
                };
                let p1 = of("package#1", Direction::In).next()?;
                Some(Session {
                    package1: p1.body.clone().unwrap_or_default(),
                    peer: p1.peer.parse::<std::net::SocketAddr>().ok()?.ip(),
                    package3: of("package#3", Direction::In)
                        .filter_map(|r| r.body.clone())
                        .collect(),
                    ended: of("package#2", Direction::Out).any(|r| {
                        r.body.as_ref().is_some_and(|b| {
                            b["CMD"]
                                .as_array()
                                .is_some_and(|cmds| cmds.iter().any(|c| c[0] == "END"))
                        })
                    }),
                })
            })
            .collect()
    }

    fn alerts(&self, alert_type: &str) -> Vec<J> {
        self.package1["Alert"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["AlertType"] == alert_type)
            .cloned()
            .collect()
    }

    /// The NOTIFICATION-ID its ServerInitiatedMgmt alert carries.
    fn notification_id(&self) -> Option<u64> {
        self.alerts(alert::SERVER_INITIATED)
            .first()?
            .pointer("/Data/NotificationID")?
            .as_u64()
    }

    /// The network MO's `Primary` as the session's GET returned it.
    fn primary_read(&self) -> String {
        let status = &self.package3.first().expect("a Package#3")["Status"][0];
        assert_eq!(status["sc"], 200, "{status}");
        status["Data"].to_string()
    }
}

/// `omadmctl ARGS` as root on the harness's bus; must succeed.
fn ctl(nat: &Nat, args: &[&str]) -> String {
    let out = nat.bus().command(None, CTL).args(args).output().unwrap();
    assert!(out.status.success(), "omadmctl {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A property of the account's server object, as busctl prints its value.
fn server_property(nat: &Nat, name: &str) -> String {
    let out = nat
        .bus()
        .command(None, "busctl")
        .args(["get-property", "org.omadm.Client1"])
        .arg(format!("/org/omadm/Client1/server/{SRV}"))
        .args(["org.omadm.Client1.Server", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text.trim().split_once(' ').map_or("", |(_, v)| v);
    value.trim_matches('"').to_owned()
}

fn channel(nat: &Nat) -> String {
    server_property(nat, "NotificationChannel")
}

#[test]
fn nat_udp_notifications_from_the_internet_never_start_a_session_mqtt_ones_do() {
    let nat = shared();
    let site = nat.site();
    let m = Managed::start(
        &nat,
        &format!("[notification.udp]\nlisten = \"0.0.0.0:{UDP_PORT}\"\n"),
    );

    // From the internet, UDP cannot reach omadmd: no route to the device's address, and at
    // the router's public address nothing is mapped to it.
    let out = notify_udp(&nat, Ns::Internet, site.device_address(), 1);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unreachable"),
        "{}",
        show(&out)
    );
    let out = notify_udp(&nat, Ns::Internet, site.public_address(), 2);
    assert!(out.status.success(), "sent: {}", show(&out));
    // The same datagram from the LAN side of the router (no NAT in the way) does: the
    // channel listens. Sent after the one to the public address, it would be behind it.
    let out = notify_udp(&nat, Ns::Router(site), site.device_address(), 3);
    assert!(out.status.success(), "{}", show(&out));
    m.wait(
        || m.answered(3).is_some(),
        "the session for UDP notification 3",
    );
    assert_eq!(
        m.answered(3).unwrap().peer,
        IpAddr::V4(site.public_address())
    );

    // Over MQTT, which the device keeps open from behind the NAT, the internet reaches it.
    m.notify_mqtt(&nat, 4);
    m.wait(
        || m.answered(4).is_some(),
        "the session for MQTT notification 4",
    );
    let session = m.answered(4).unwrap();
    assert_eq!(session.peer, IpAddr::V4(site.public_address()));
    assert!(
        session.primary_read().contains(&site.connection()),
        "{session:?}"
    );

    let ids: Vec<Option<u64>> = m.sessions().iter().map(Session::notification_id).collect();
    assert_eq!(
        ids,
        [None, Some(3), Some(4)],
        "the first session, then 3 and 4"
    );
    let log = m.daemon.log();
    for id in [1, 2] {
        assert!(!log.contains(&format!("notification {id} ")), "{log}");
    }
    assert!(log.contains("notification 3 accepted"), "{log}");
    assert!(log.contains("notification 4 accepted"), "{log}");
    assert!(!log.contains("notification ignored"), "{log}");
    assert_eq!(server_property(&nat, "IgnoredNotifications"), "0");
}

/// Use case B.3: the device is managed at home, unplugged there and plugged in at the office,
/// and — with nobody touching it — stays managed from the same server in the internet.
#[test]
fn nat_b3_a_device_moved_from_home_to_the_office_stays_managed() {
    let mut nat = shared();
    nat.move_to(Site::Home);
    let m = Managed::start(&nat, "");
    let home = IpAddr::V4(Site::Home.public_address());
    let office = IpAddr::V4(Site::Office.public_address());
    assert_eq!(m.sessions()[0].peer, home);
    assert!(
        !m.broker
            .clients_from(Site::Home.public_address(), "omadmd")
            .is_empty(),
        "omadmd's broker connection comes from home's router: {}",
        m.broker.log()
    );

    // At home: a notification over MQTT starts a session.
    m.notify_mqtt(&nat, 1);
    m.wait(|| m.answered(1).is_some(), "the session for notification 1");
    let session = m.answered(1).unwrap();
    assert_eq!(session.peer, home);
    assert!(session.primary_read().contains("nat-home"), "{session:?}");

    // The move. Nothing is done to omadmd from here on.
    nat.move_to(Site::Office);

    // omadmd tells the server: the NetworkChanged alert arrives from the office's router,
    // with the new primary connection and address.
    m.wait(
        || {
            m.sessions()
                .iter()
                .any(|s| s.ended && !s.alerts(NETWORK_CHANGED).is_empty())
        },
        "the NetworkChanged alert at the server",
    );
    let sessions = m.sessions();
    let moved = sessions
        .iter()
        .find(|s| !s.alerts(NETWORK_CHANGED).is_empty())
        .unwrap();
    assert_eq!(moved.peer, office, "{moved:?}");
    let alerts = moved.alerts(NETWORK_CHANGED);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let data = &alerts[0]["Data"];
    assert_eq!(data["Primary"], "nat-office", "{data}");
    assert_eq!(data["Addresses"], json!(["10.20.30.2/24"]), "{data}");
    assert!(moved.primary_read().contains("nat-office"), "{moved:?}");

    // It is back on the broker, from the office ...
    m.wait(
        || {
            let clients = m
                .broker
                .clients_from(Site::Office.public_address(), "omadmd");
            clients.iter().any(|c| m.broker.subscribed(c))
        },
        "omadmd subscribed again, from the office",
    );
    m.wait(|| channel(&nat) == "mqtt:connected", "the MQTT channel up");
    // ... so the server's next notification starts a session there.
    m.notify_mqtt(&nat, 2);
    m.wait(|| m.answered(2).is_some(), "the session for notification 2");
    let session = m.answered(2).unwrap();
    assert_eq!(session.peer, office);
    assert!(session.primary_read().contains("nat-office"), "{session:?}");

    // The network MO shows the office connection and address, and none at home.
    let mo = network_mo(nat.bus());
    assert_eq!(mo["Primary"], "nat-office", "{mo}");
    assert_eq!(mo["State"], "connected", "{mo}");
    assert_eq!(mo["AccessTechnology"], "ethernet", "{mo}");
    assert_eq!(
        mo["Interfaces"]["office0"]["Addresses"], "10.20.30.2/24",
        "{mo}"
    );
    assert_eq!(mo["Interfaces"]["home0"]["Addresses"], "", "{mo}");
    let log = m.daemon.log();
    assert!(
        log.contains("network move: primary connection \"nat-office\""),
        "{log}"
    );
    assert!(!log.contains("notification ignored"), "{log}");
    // Every session after the move went through at once: none waited on a connection made
    // at home (its address is gone).
    assert!(!log.contains("session aborted"), "{log}");
    assert!(m.sessions().iter().all(|s| s.ended), "{:?}", m.sessions());
}
