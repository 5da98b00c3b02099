//! A device behind NAT that moves between two networks, for end-to-end tests: the Rust side
//! of `tests/support/nat-harness.sh` (the topology is drawn there).
//!
//! [`Nat::start`] starts a private system bus with a real NetworkManager
//! ([`SysBus::start_with_network_manager`]; its namespace is the *device*) and builds on it
//! two router namespaces, [`Site::Home`] and [`Site::Office`], each a real NAT (nftables
//! masquerade, forwarding only from its LAN out and replies back) towards a third, the
//! *internet* ([`Ns::Internet`], where servers listen on [`SERVER`]); the internet has no
//! route to either LAN. NetworkManager manages the device's end of each LAN link (the
//! connections `nat-home` and `nat-office`); [`Nat::move_to`] unplugs the device at one site
//! and plugs it in at the other (carrier down on one router's LAN end, then up on the
//! other's), and returns once NetworkManager's primary connection, the device's default route
//! and its connectivity (checked through the NAT) follow.
//!
//! Processes go into a namespace with [`Nat::command`]; sockets are made there with
//! [`Nat::in_namespace`]. [`DeviceDaemon`], [`Broker`] and [`DmServer`] are `omadmd` on the
//! device, `mosquitto` and `omadm-devserver` in the internet.
//!
//! Dropping the [`Nat`] stops everything: the namespaces, their links and processes, then the
//! bus harness (see [`SysBus`] for what happens when the test binary dies instead: the same,
//! by the harness's watchdog). Nothing is made on the host but files under the harness's
//! directory in `/tmp`.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use omadmd::devserver::{Certificates, Record};

use super::daemon::test_config;
use super::sysbus::{KillOnDrop, SysBus, show, wait_until};

/// The servers' address in the internet namespace.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// How long a wait for something the topology or a daemon does may take before the test
/// fails (the waits end as soon as it is done).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A network the device can be plugged into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    Home,
    Office,
}

impl Site {
    /// `home` or `office`, as the harness names it.
    pub fn name(self) -> &'static str {
        match self {
            Site::Home => "home",
            Site::Office => "office",
        }
    }

    /// NetworkManager's connection for this site.
    pub fn connection(self) -> String {
        format!("nat-{}", self.name())
    }

    /// The device's interface towards this site's router.
    pub fn interface(self) -> String {
        format!("{}0", self.name())
    }

    /// The device's address on this site's LAN (a /24).
    pub fn device_address(self) -> Ipv4Addr {
        match self {
            Site::Home => Ipv4Addr::new(192, 168, 10, 2),
            Site::Office => Ipv4Addr::new(10, 20, 30, 2),
        }
    }

    /// The router's address on this site's LAN: the device's gateway there.
    pub fn gateway(self) -> Ipv4Addr {
        let [a, b, c, _] = self.device_address().octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The router's public address: what servers see of the device at this site.
    pub fn public_address(self) -> Ipv4Addr {
        match self {
            Site::Home => Ipv4Addr::new(198, 51, 100, 2),
            Site::Office => Ipv4Addr::new(203, 0, 113, 2),
        }
    }
}

/// A network namespace of the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ns {
    /// The device: the bus harness's namespace, where NetworkManager runs.
    Device,
    /// A site's router.
    Router(Site),
    /// Where the servers are.
    Internet,
}

impl Ns {
    fn name(self) -> &'static str {
        match self {
            Ns::Device => "device",
            Ns::Router(site) => site.name(),
            Ns::Internet => "internet",
        }
    }
}

/// The running topology. Stopped on drop.
pub struct Nat {
    /// `None` only while dropping.
    bus: Option<SysBus>,
    /// A process in each namespace: device, home, office, internet.
    pids: [u32; 4],
    site: Site,
    running: bool,
}

impl Nat {
    /// Starts the bus harness with NetworkManager and the topology; the device is at home
    /// (primary connection `nat-home`, connectivity full) when this returns. Panics with the
    /// harness logs on failure.
    pub fn start() -> Nat {
        let mut nat = Nat {
            bus: Some(SysBus::start_with_network_manager()),
            pids: [0; 4],
            site: Site::Home,
            running: true,
        };
        nat.script(&["start"]);
        for (i, ns) in [
            Ns::Device,
            Ns::Router(Site::Home),
            Ns::Router(Site::Office),
            Ns::Internet,
        ]
        .into_iter()
        .enumerate()
        {
            let out = nat.script_command().args(["pid", ns.name()]).output();
            let out = out.expect("nat-harness.sh pid");
            assert!(out.status.success(), "pid {}: {}", ns.name(), show(&out));
            nat.pids[i] = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("a PID");
        }
        nat
    }

    /// The private system bus (NetworkManager, polkitd, and omadmd once started).
    pub fn bus(&self) -> &SysBus {
        self.bus.as_ref().expect("the bus runs")
    }

    /// Where the device is plugged in.
    pub fn site(&self) -> Site {
        self.site
    }

    /// Unplugs the device where it is and plugs it in at `site` (nothing when it is there),
    /// and waits (at most a minute per step) until NetworkManager has given the old
    /// connection up and made `site`'s primary, with the default route through `site`'s
    /// router and full connectivity. Takes about 6 s: NetworkManager gives a connection up
    /// 5 s after its carrier went.
    pub fn move_to(&mut self, site: Site) {
        if self.site != site {
            self.script(&["move", site.name()]);
            self.site = site;
        }
    }

    /// A command that runs `program` as root in `ns` (in the test's current directory). It
    /// dies with the thread that spawns it (`setpriv --pdeathsig=KILL`), and its PID is the
    /// program's own (nsenter and setpriv exec). In the device namespace the system bus is
    /// at its standard path.
    pub fn command(&self, ns: Ns, program: impl AsRef<OsStr>) -> Command {
        if ns == Ns::Device {
            return self.bus().command_in_namespace(None, program);
        }
        let cwd = std::env::current_dir().expect("current dir");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.pid(ns)))
            .args(["--mount", "--net"])
            .arg(format!("--wd={}", cwd.display()))
            .args(["setpriv", "--pdeathsig=KILL"])
            .arg(program);
        cmd
    }

    /// Runs `f` on a thread of this process that has entered `ns`'s network namespace, and
    /// returns what it returns: sockets it makes belong to `ns` for good (use them from any
    /// thread).
    pub fn in_namespace<T: Send>(&self, ns: Ns, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/proc/{}/ns/net", self.pid(ns));
        let netns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::thread::scope(|s| {
            let thread = s.spawn(move || {
                // SAFETY: setns on a file descriptor that `netns` keeps open; it changes
                // only this thread's network namespace, and the thread ends with `f`.
                let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `ip ARGS` in `ns`; its output.
    pub fn ip(&self, ns: Ns, args: &[&str]) -> String {
        let out = self.command(ns, "ip").args(args).output().expect("ip");
        assert!(out.status.success(), "ip {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The device's IPv4 default routes, as `(gateway, interface)`.
    pub fn default_routes(&self) -> Vec<(String, String)> {
        self.ip(Ns::Device, &["-4", "-o", "route", "show", "default"])
            .lines()
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let after = |w: &str| {
                    let at = words.iter().position(|x| *x == w);
                    at.and_then(|i| words.get(i + 1)).unwrap_or(&"").to_string()
                };
                (after("via"), after("dev"))
            })
            .collect()
    }

    /// The `Id` of NetworkManager's primary connection, `None` without one (as root
    /// reads it on the bus, with busctl).
    pub fn primary_connection(&self) -> Option<String> {
        let path = self.nm_property(
            "/org/freedesktop/NetworkManager",
            "org.freedesktop.NetworkManager",
            "PrimaryConnection",
        );
        (path != "/").then(|| {
            self.nm_property(
                &path,
                "org.freedesktop.NetworkManager.Connection.Active",
                "Id",
            )
        })
    }

    /// A NetworkManager property that busctl prints as a string or object path.
    fn nm_property(&self, object: &str, interface: &str, name: &str) -> String {
        let out = self
            .bus()
            .command(None, "busctl")
            .args(["get-property", "org.freedesktop.NetworkManager"])
            .args([object, interface, name])
            .output()
            .expect("busctl");
        assert!(out.status.success(), "{name}: {}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let value = text.trim().split_once(' ').map_or("", |(_, v)| v);
        value.trim_matches('"').to_owned()
    }

    /// The PID whose network namespace is `ns`.
    pub fn pid(&self, ns: Ns) -> u32 {
        self.pids[match ns {
            Ns::Device => 0,
            Ns::Router(Site::Home) => 1,
            Ns::Router(Site::Office) => 2,
            Ns::Internet => 3,
        }]
    }

    /// Takes the topology down (its namespaces, links and every process in them); the bus
    /// harness runs on until the drop, NetworkManager back on its own connection on `nm0`.
    /// Doing it again does nothing.
    pub fn stop(&mut self) {
        if self.running {
            self.script(&["stop"]);
            self.running = false;
        }
    }

    /// The harness's logs (the bus's, NetworkManager's and the topology's).
    pub fn logs(&self) -> String {
        self.bus().logs()
    }

    /// Runs the script with `args`; it must succeed.
    fn script(&self, args: &[&str]) {
        let status = self.script_logged(args);
        assert!(
            status.success(),
            "nat-harness.sh {args:?} failed ({status})\n--- harness logs ---\n{}",
            self.logs()
        );
    }

    /// Runs the script with `args`, its output appended to the harness's log directory (a
    /// file, not a pipe: a test binary that dies must not end a start or stop with SIGPIPE).
    fn script_logged(&self, args: &[&str]) -> ExitStatus {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.bus().dir().join("log/nat-harness.log"))
            .expect("nat-harness.log");
        let log2 = log.try_clone().expect("nat-harness.log");
        self.script_command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .expect("bash runs")
    }

    fn script_command(&self) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/nat-harness.sh"))
            .env("HARNESS_DIR", self.bus().dir());
        cmd
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        if self.running {
            let status = self.script_logged(&["stop"]);
            if !status.success() {
                eprintln!("nat-harness.sh stop failed ({status}):\n{}", self.logs());
            }
        }
        drop(self.bus.take());
    }
}

/// Whether a TCP connection to `addr` from `ns` is accepted within `timeout`.
pub fn reachable(nat: &Nat, ns: Ns, addr: SocketAddr, timeout: Duration) -> bool {
    wait_until(timeout, || {
        nat.in_namespace(ns, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        })
    })
}

/// `omadmd` running as root in the device namespace, on the harness's system bus, with its
/// own state directory; stopped (SIGKILL) on drop.
pub struct DeviceDaemon {
    child: KillOnDrop,
    state: tempfile::TempDir,
    log: PathBuf,
}

impl DeviceDaemon {
    /// Starts `omadmd` with `config` (TOML; new accounts get no session by themselves, see
    /// [`test_config`]) and waits until it owns `org.omadm.Client1`.
    pub fn start(nat: &Nat, config: &str) -> DeviceDaemon {
        let state = tempfile::tempdir().expect("state dir");
        let log = state.path().join("omadmd.log");
        let config_file = state.path().join("omadmd.toml");
        std::fs::write(&config_file, test_config(config)).expect("config file");
        let child = KillOnDrop::spawn(
            nat.command(Ns::Device, env!("CARGO_BIN_EXE_omadmd"))
                .arg("--state-dir")
                .arg(state.path())
                .arg("--config")
                .arg(&config_file)
                .env("RUST_LOG", "omadmd=debug")
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("log file")),
        );
        let daemon = DeviceDaemon { child, state, log };
        assert!(
            nat.bus()
                .wait_for_name("org.omadm.Client1", Duration::from_secs(20)),
            "omadmd did not take its name:\n{}",
            daemon.log()
        );
        daemon
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's state directory (`store.db`, `objects/`).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }
}

impl Drop for DeviceDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- omadmd log ---\n{}", self.log());
        }
    }
}

/// A test CA and a server certificate for [`SERVER`] (and localhost), shared by the broker
/// and the DM server.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA certificate (PEM): the DM account's `Ext/CACert`.
    pub ca_pem: String,
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("certificate dir");
        let certs = Certificates::ensure(dir.path(), &[SERVER.to_string()]).expect("certificates");
        Pki {
            ca_pem: certs.ca_pem,
            dir,
        }
    }

    /// The certificate directory (`omadm-devserver --cert-dir`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `mosquitto` in the internet namespace on `mqtts://192.0.2.1:8883`, letting in the users
/// it was given (name, password) and nobody else, logging everything.
pub struct Broker {
    dir: tempfile::TempDir,
    _child: KillOnDrop,
}

/// The broker's TLS port.
pub const MQTT_PORT: u16 = 8883;

impl Broker {
    pub fn start(nat: &Nat, pki: &Pki, users: &[(&str, &str)]) -> Broker {
        const MOSQUITTO: &str = "/usr/sbin/mosquitto";
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: apt-get install mosquitto (.ci/run installs it)"
        );
        let dir = tempfile::tempdir().expect("broker dir");
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "").expect("passwd");
        for (user, password) in users {
            let out = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwd)
                .args([user, password])
                .output()
                .expect("mosquitto_passwd runs");
            assert!(out.status.success(), "mosquitto_passwd: {}", show(&out));
        }
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "per_listener_settings false\n\
                 allow_anonymous false\n\
                 password_file {passwd}\n\
                 persistence false\n\
                 user root\n\
                 log_dest file {log}\n\
                 log_type all\n\
                 listener {MQTT_PORT} {SERVER}\n\
                 certfile {cert}\n\
                 keyfile {key}\n",
                passwd = passwd.display(),
                log = dir.path().join("mosquitto.log").display(),
                cert = pki.dir().join("server.pem").display(),
                key = pki.dir().join("server.key").display(),
            ),
        )
        .expect("mosquitto.conf");
        let child = KillOnDrop::spawn(
            nat.command(Ns::Internet, MOSQUITTO)
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let broker = Broker { dir, _child: child };
        let addr = SocketAddr::from((SERVER, MQTT_PORT));
        assert!(
            reachable(nat, Ns::Internet, addr, PATIENCE),
            "mosquitto did not listen on {addr}: {}",
            broker.log()
        );
        broker
    }

    /// `mqtts://192.0.2.1:8883/<topic>`.
    pub fn url(&self, topic: &str) -> String {
        format!("mqtts://{SERVER}:{MQTT_PORT}/{topic}")
    }

    /// What the broker has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// The client ids of the connections the broker accepted from `from` (an address, in
    /// order), whose client id starts with `prefix`.
    pub fn clients_from(&self, from: Ipv4Addr, prefix: &str) -> Vec<String> {
        // "New client connected from 198.51.100.2:41234 as omadmd-... (p2, c1, k60, u'dev')."
        let marker = format!("New client connected from {from}:");
        self.log()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find(&marker)? + marker.len()..];
                let id = rest.split(" as ").nth(1)?.split_whitespace().next()?;
                id.starts_with(prefix).then(|| id.to_owned())
            })
            .collect()
    }

    /// Whether the broker has acknowledged a subscription of client `id`.
    pub fn subscribed(&self, id: &str) -> bool {
        self.log().contains(&format!("Sending SUBACK to {id}"))
    }
}

/// `omadm-devserver` in the internet namespace on `https://192.0.2.1:8443/dm`, running a
/// scenario, its transcript in a file.
pub struct DmServer {
    dir: tempfile::TempDir,
    _child: KillOnDrop,
}

/// The DM server's port.
pub const DM_PORT: u16 = 8443;

impl DmServer {
    /// Starts the server with `scenario` (JSON text) and the certificates of `pki`.
    pub fn start(nat: &Nat, pki: &Pki, scenario: &str) -> DmServer {
        DmServer::start_with(nat, pki, scenario, &[])
    }

    /// [`DmServer::start`] with more command-line arguments (e.g. `--object NAME=PATH`).
    pub fn start_with(nat: &Nat, pki: &Pki, scenario: &str, args: &[&OsStr]) -> DmServer {
        let dir = tempfile::tempdir().expect("server dir");
        let scenario_file = dir.path().join("scenario.json");
        std::fs::write(&scenario_file, scenario).expect("scenario");
        let child = KillOnDrop::spawn(
            nat.command(Ns::Internet, env!("CARGO_BIN_EXE_omadm-devserver"))
                .arg(format!("--listen={SERVER}:{DM_PORT}"))
                .arg(format!("--public-host={SERVER}"))
                .arg("--cert-dir")
                .arg(pki.dir())
                .arg("--scenario")
                .arg(&scenario_file)
                .arg("--transcript")
                .arg(dir.path().join("transcript.jsonl"))
                .args(args)
                .stdout(File::create(dir.path().join("stdout.log")).expect("stdout.log"))
                .stderr(File::create(dir.path().join("stderr.log")).expect("stderr.log")),
        );
        let server = DmServer { dir, _child: child };
        let addr = SocketAddr::from((SERVER, DM_PORT));
        assert!(
            reachable(nat, Ns::Internet, addr, PATIENCE),
            "omadm-devserver did not listen on {addr}: {}",
            server.output()
        );
        server
    }

    /// The DM URL (the account's `SrvURI`).
    pub fn url(&self) -> String {
        format!("https://{SERVER}:{DM_PORT}/dm")
    }

    /// The transcript so far (a line being written is left out).
    pub fn transcript(&self) -> Vec<Record> {
        std::fs::read_to_string(self.dir.path().join("transcript.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// What the server printed (summary lines, then errors).
    pub fn output(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }
}

/// `omadm-devserver notify ARGS` run in `ns` (the DM server's side of a notification).
pub fn notify(nat: &Nat, ns: Ns, args: &[&str]) -> std::process::Output {
    nat.command(ns, env!("CARGO_BIN_EXE_omadm-devserver"))
        .arg("notify")
        .args(args)
        .output()
        .expect("omadm-devserver notify runs")
}
