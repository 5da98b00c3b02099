//! Notification benchmark (issue 10, "Show it"): how fast a server's notification becomes a
//! DM session, what keeping an MQTT channel up costs an idle device, and how fast the
//! channel is back after the device moves to another network.
//!
//! Run it with `cargo bench --bench notification` (release build, as root; under three
//! minutes of work after the build: part 2's idle minute and part 3's network moves take
//! most of it). With `OMADMD_BENCH_QUICK=1` it takes few samples of each part (about 15 s)
//! and only checks that everything runs without a timeout or an error (CI runs it); its
//! figures are then not meaningful and no target is judged.
//!
//! Everything is real: the `omadmd` binary of this build, Debian's `mosquitto`, and
//! `omadm-devserver` (in-process for part 1; a DM server publishes with a persistent MQTT
//! connection of its own, as a server keeps one to its broker).
//!
//! 1. **Notification → Package#1.** `omadmd --session` on a private session bus
//!    (`tests/support/session_bus.rs`), `[notification] rate_per_minute` raised so that the
//!    samples are not rate-limited; a DM account for an in-process devserver on loopback
//!    (TLS) whose `Push/m` subscribes to a topic on a mosquitto on free loopback ports (TLS;
//!    `tests/support/mosquitto.rs`). A sample is a signed Package#0 (new NOTIFICATION-ID,
//!    stamped now) published on the topic: the clock starts just before the publish and stops
//!    when the devserver has read the session's Package#1 (its summary line, as it happens).
//!    Baseline, in the same run, alternating with it in [`SLICES`] slices: the same session
//!    started by D-Bus `StartSession`, the clock from just before the call. Each session
//!    runs to its end (one `GET` of `DevInfo/DevID`) and the next sample waits 100 ms after
//!    its `SessionFinished`. Reported: p50, p95, p99 of both, the ratio; target p50 ≤ 20 ms.
//! 2. **Idle wake-ups.** Two fresh daemons, each on its own session bus, each with the same
//!    DM account — one with the `Push/m` MQTT entry (channel `mqtt:connected`, the default
//!    60 s keepalive), the baseline without it — sit idle side by side for 65 s (a whole
//!    keepalive period, so that its PINGREQ/PINGRESP is counted). Wake-ups are context
//!    switches (voluntary + non-voluntary) summed over every thread of the process
//!    (`/proc/<pid>/task/*/status`, read every 200 ms so that a thread that ends keeps what
//!    it did); target ≤ 1 per second with the channel up.
//! 3. **Network move → MQTT back.** The NAT topology of the integration tests
//!    (`tests/support/nat.rs`: a real NetworkManager on the *device* namespace, behind a
//!    *home* and an *office* router namespace doing nftables masquerade, the broker in an
//!    *internet* namespace). `omadmd` runs on the device (private system bus) with an
//!    account whose `Push/m` is on that broker. The device is moved between home and office
//!    (carrier down at one site, up at the other; its address, default route and public
//!    address all change). A sample runs from NetworkManager's `PrimaryConnection` property
//!    change to the new connection, to omadmd's `NotificationChannel` property change to
//!    `mqtt:connected` (announced once the broker has acknowledged the new subscription),
//!    both signals heard by this process on the bus; the broker's log must show the new
//!    connection from the new site's public address. Baseline: the floor of the same
//!    work — a fresh MQTT connection from the device namespace through the new NAT (TCP,
//!    a whole TLS handshake with a TLS configuration of its own as omadmd makes one per
//!    connection, CONNECT, SUBSCRIBE, SUBACK), made by this process right after each move.
//!    Target ≤ 1 s.
//!
//! A missed target is reported, not a failure; any error or timeout exits non-zero.
//! Everything started is stopped on every exit path (part 3 without root: skipped, said so).

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::num::NonZeroUsize;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use omadmd::devserver::{DevServer, DevServerConfig, RunningServer, Scenario};
use omadmd::notification::package0::{self, Credentials, Notification};
use rumqttc::{
    AsyncClient, Event, MqttOptions, Packet, PublishOptions, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zbus::message::Type as MsgType;
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant};

/// The integration tests' helpers, by path (`session_bus` and `nat` refer to `super::daemon`
/// and `super::sysbus`).
#[allow(dead_code)]
#[path = "../tests/support"]
mod support {
    pub mod daemon;
    pub mod mosquitto;
    pub mod nat;
    pub mod session_bus;
    pub mod sysbus;
}

use support::mosquitto::Mosquitto;
use support::nat::{Broker, DeviceDaemon, MQTT_PORT, Nat, Ns, Pki, SERVER, Site};
use support::session_bus::SessionBus;
use support::sysbus::KillOnDrop;

mod common;

use common::{SLICES, Samples, build, cores, num, print_table, print_targets_met};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const DEST: &str = "org.omadm.Client1";
const PATH: &str = "/org/omadm/Client1";
const IFACE: &str = "org.omadm.Client1";
const SERVER_IFACE: &str = "org.omadm.Client1.Server";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
/// What the DM server reads in each session (its account may: `Perm`).
const DEVINFO: &str = "urn:oma:mo:oma-dm-devinfo:1.0";
/// The DM account's SrvID (the notifications' SERVER-ID) and its server object.
const SRV: &str = "bench";
const SRV_PATH: &str = "/org/omadm/Client1/server/bench";
/// Its `Auth/Noti/Secret`; the account holds the base64, `czNjcmV0`.
const NOTI_SECRET: &[u8] = b"s3cret";
const NOTI_SECRET_B64: &str = "czNjcmV0";
/// The device's topic, and the broker users of the device and of the DM server.
const TOPIC: &str = "omadm/bench-device";
const DEVICE_USER: (&str, &str) = ("dev", "dev-pw");
const SERVER_USER: (&str, &str) = ("server", "server-pw");

/// Selects the quick mode.
const QUICK_ENV: &str = "OMADMD_BENCH_QUICK";

/// Part 1's target: notification → Package#1, p50, in ms.
const LATENCY_TARGET_MS: f64 = 20.0;
/// Part 2's target: wake-ups per second with the MQTT channel up.
const WAKEUPS_TARGET: f64 = 1.0;
/// Part 3's target: new primary connection → MQTT back, in ms.
const MOVE_TARGET_MS: f64 = 1_000.0;

/// Untimed samples of each kind first (the account's first session carries
/// BootstrapComplete whatever starts it).
const WARMUP: usize = 3;
/// Pause after each session's end before the next sample.
const GAP: Duration = Duration::from_millis(100);
/// How often part 2 reads the threads' counters.
const WAKE_POLL: Duration = Duration::from_millis(200);
/// Quiet time before part 2 starts counting.
const SETTLE: Duration = Duration::from_secs(2);

/// No single wait may take longer (a hung part fails the bench instead of stalling it).
const PATIENCE: Duration = Duration::from_secs(30);

/// How much to measure.
#[derive(Clone, Copy)]
struct Plan {
    quick: bool,
    /// Part 1: timed samples of each kind.
    samples: usize,
    /// Part 2: the idle window.
    idle: Duration,
    /// Part 3: moves.
    moves: usize,
}

impl Plan {
    fn from_env() -> Plan {
        if std::env::var(QUICK_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
            Plan {
                quick: true,
                samples: 3,
                idle: Duration::from_secs(2),
                moves: 1,
            }
        } else {
            Plan {
                quick: false,
                samples: 100,
                // One keepalive period (60 s) and some: its PINGREQ/PINGRESP is counted.
                idle: Duration::from_secs(65),
                moves: 6,
            }
        }
    }

    fn target(&self, max: f64) -> Option<Target> {
        (!self.quick).then_some(Target::AtMost(max))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("notification bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let plan = Plan::from_env();
    println!(
        "omadmd notification bench: {} cores, {} build, mosquitto and omadm-devserver on \
         loopback (parts 1, 2), NetworkManager + NAT namespaces (part 3){}",
        cores(),
        build(),
        if plan.quick {
            "; QUICK mode (checks that every part runs; figures not meaningful)"
        } else {
            ""
        }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let broker = Mosquitto::start(&[DEVICE_USER, SERVER_USER]);
    let mut dm = DmServer::start()?;

    let mut rows = vec![latency(&rt, plan, &broker, &mut dm)?];
    rows.push(wakeups(&rt, plan, &broker, &dm)?);
    let failures = dm.server.failures();
    if !failures.is_empty() {
        return Err(format!("the devserver saw failures: {failures:#?}").into());
    }
    drop(dm);
    drop(broker);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        rows.push(network_move(&rt, plan)?);
    } else {
        println!("part 3 skipped: it needs root (a private system bus and network namespaces)");
    }

    print_table(&rows, 44, 3);
    println!("legend:");
    println!(
        "  1 ours: signed Package#0 published on the device's topic (TLS broker) -> the \
         devserver reads Package#1; base: D-Bus StartSession -> the same"
    );
    println!(
        "  2 ours: context switches/s of an idle omadmd with its MQTT channel up; base: the \
         same daemon and account without Push (no MQTT)"
    );
    println!(
        "  3 ours: NetworkManager's PrimaryConnection change -> omadmd's NotificationChannel \
         back at mqtt:connected; base: a fresh MQTT connect + subscribe from the device then"
    );
    println!();
    if plan.quick {
        println!("notification bench: every part ran without a timeout or an error");
    } else {
        print_targets_met("notification", &rows);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rows and targets

type Row = common::Row<Target>;

enum Target {
    AtMost(f64),
}

impl common::Target for Target {
    fn met(&self, ours: f64, _base: Option<f64>) -> bool {
        let Target::AtMost(max) = *self;
        ours <= max
    }

    fn label(&self) -> String {
        let Target::AtMost(v) = *self;
        format!("<= {}", num(v))
    }
}

/// The nearest-rank `p`th percentile.
fn percentile(samples: &Samples, p: usize) -> Duration {
    let rank = (samples.len() * p).div_ceil(100).max(1);
    samples[rank - 1]
}

fn ms(d: Duration) -> String {
    num(d.as_secs_f64() * 1e3)
}

/// `p50 / p95 / p99` in ms.
fn spread(samples: &Samples) -> String {
    format!(
        "p50 {} / p95 {} / p99 {} ms",
        ms(samples.median()),
        ms(percentile(samples, 95)),
        ms(percentile(samples, 99))
    )
}

// ---------------------------------------------------------------------------------------
// The parts' shared pieces

/// The in-process DM server: a devserver on loopback whose summary lines "package#1 ←" are
/// stamped as they happen.
struct DmServer {
    server: RunningServer,
    package1: mpsc::UnboundedReceiver<(Instant, String)>,
    _certs: tempfile::TempDir,
    _runtime: Runtime,
}

impl DmServer {
    fn start() -> Result<DmServer> {
        let runtime = Runtime::new()?;
        let certs = tempfile::tempdir()?;
        let (tx, package1) = mpsc::unbounded_channel();
        let mut config = DevServerConfig::new(certs.path());
        config.listen = "127.0.0.1:0".parse()?;
        let scenario = json!({"name": "notification-bench", "packages": [
            {"commands": [["GET", format!("{DEVINFO}//DevID")]], "expect": [200]}]});
        config.scenario = Scenario::parse(&scenario.to_string(), "bench")?;
        config.summary = Some(Arc::new(move |line: &str| {
            if line.contains(" package#1 ← ") {
                let _ = tx.send((Instant::now(), line.to_owned()));
            }
        }));
        let server = runtime.block_on(DevServer::start(config))?;
        Ok(DmServer {
            server,
            package1,
            _certs: certs,
            _runtime: runtime,
        })
    }

    /// The MOData of the DM account for this server, notified on `push` (an MQTT topic URL)
    /// when given; `Ext/CACert` holds this server's CA and `broker_ca`.
    fn account(&self, push: Option<&str>, broker_ca: &str) -> String {
        let mut acc = json!({"DMAcc": {
            "SrvID": SRV,
            "SrvURI": self.server.url(),
            "Perm": {"p0": {"MOID": DEVINFO}},
            "Ext": {"CACert": format!("{}{broker_ca}", self.server.ca_pem())},
            "Auth": {"Noti": {"Secret": NOTI_SECRET_B64}}}});
        if let Some(url) = push {
            acc["DMAcc"]["Push"] = push_entry(url);
        }
        acc.to_string()
    }
}

/// The account's `Push` node: `m`, MQTT at `url`, as the device's broker user.
fn push_entry(url: &str) -> serde_json::Value {
    json!({"m": {"Type": "mqtt", "Addr": url, "User": DEVICE_USER.0, "Secret": DEVICE_USER.1}})
}

/// A signed Package#0 from [`SRV`] with NOTIFICATION-ID `id`, stamped now.
fn package0(id: u16) -> Result<Vec<u8>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let notification = Notification {
        notification_id: Some(id),
        timestamp: Some(now),
        ..Notification::new(SRV)
    };
    let credentials = Credentials {
        secret: NOTI_SECRET,
        data: b"",
    };
    Ok(package0::build(&notification, Some(credentials))?)
}

/// `omadmd --session` (this build's) on a private session bus of its own, with its state
/// in a temporary directory and its log at info level, as a packaged daemon logs; killed on
/// drop, before its bus goes.
struct SessionDaemon {
    conn: Connection,
    child: KillOnDrop,
    _bus: SessionBus,
    dir: tempfile::TempDir,
}

impl SessionDaemon {
    /// Starts it with `config` (TOML, `[session] first_session_at_once = false` added) and
    /// waits until it owns its name.
    fn start(rt: &Runtime, config: &str) -> Result<SessionDaemon> {
        let bus = SessionBus::start();
        let dir = tempfile::tempdir()?;
        let config_file = dir.path().join("omadmd.toml");
        std::fs::write(&config_file, support::daemon::test_config(config))?;
        let log = std::fs::File::create(dir.path().join("omadmd.log"))?;
        let mut child = KillOnDrop::spawn(
            Command::new(env!("CARGO_BIN_EXE_omadmd"))
                .arg("--session")
                .arg("--config")
                .arg(&config_file)
                .arg("--state-dir")
                .arg(dir.path().join("state"))
                .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
                .env("RUST_LOG", "omadmd=info")
                .stdout(Stdio::null())
                .stderr(log),
        );
        let conn = rt.block_on(connect(bus.address()))?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(format!("omadmd exited with {status}: {}", log_of(dir.path())).into());
            }
            let dbus = rt.block_on(zbus::fdo::DBusProxy::new(&conn))?;
            if rt.block_on(dbus.name_has_owner(DEST.try_into()?))? {
                break;
            }
            if started.elapsed() > PATIENCE {
                return Err(format!("omadmd did not take its name: {}", log_of(dir.path())).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(SessionDaemon {
            conn,
            child,
            _bus: bus,
            dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        log_of(self.dir.path())
    }
}

fn log_of(dir: &Path) -> String {
    tail(&std::fs::read_to_string(dir.join("omadmd.log")).unwrap_or_default())
}

/// The last 40 lines of `log`.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn connect(address: &str) -> Result<Connection> {
    Ok(zbus::connection::Builder::address(address)
        .method_timeout(PATIENCE)
        .build()
        .await?)
}

/// Creates the DM account `modata` through omadmd's D-Bus API.
async fn create_account(conn: &Connection, modata: &str) -> Result<()> {
    conn.call_method(
        Some(DEST),
        PATH,
        Some(IFACE),
        "CreateInstance",
        &(DMACC, modata),
    )
    .await?;
    Ok(())
}

/// The server object's `NotificationChannel`.
async fn channel(conn: &Connection) -> Result<String> {
    let reply = conn
        .call_method(
            Some(DEST),
            SRV_PATH,
            Some(PROPERTIES),
            "Get",
            &(SERVER_IFACE, "NotificationChannel"),
        )
        .await?;
    Ok(String::try_from(
        reply.body().deserialize::<OwnedVariant>()?,
    )?)
}

/// Waits until the server object's `NotificationChannel` is `want`.
async fn wait_channel(conn: &Connection, want: &str, log: impl Fn() -> String) -> Result<()> {
    let end = Instant::now() + PATIENCE;
    loop {
        // The server object appears once the account is read.
        if let Ok(now) = channel(conn).await
            && now == want
        {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!(
                "NotificationChannel is not {want:?} after {PATIENCE:?}: {}",
                log()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// TLS 1.2/1.3 with `ring`, trusting `ca_pem`'s certificates.
fn broker_tls(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// MQTT options for a TLS connection to `host:port` as `user` with client id `id`.
fn mqtt_options(
    id: &str,
    host: &str,
    port: u16,
    user: (&str, &str),
    tls: Arc<rustls::ClientConfig>,
) -> MqttOptions {
    let mut options = MqttOptions::new(id, (host.to_owned(), port));
    options
        .set_keep_alive(60)
        .set_clean_session(true)
        .set_credentials(user.0, user.1.as_bytes().to_vec());
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    options
}

// ---------------------------------------------------------------------------------------
// 1. Notification → Package#1

/// The DM server's own connection to the broker, kept open: its event loop runs on a task
/// (a failure ends it, and the next sample then times out and says so).
struct Publisher {
    client: AsyncClient,
    events: JoinHandle<Result<()>>,
}

impl Publisher {
    async fn connect(broker: &Mosquitto) -> Result<Publisher> {
        let options = mqtt_options(
            "bench-dm-server",
            "127.0.0.1",
            broker.tls_port,
            SERVER_USER,
            broker_tls(&broker.ca_pem)?,
        );
        let (client, mut events) = AsyncClient::builder(options).try_build()?;
        let (up_tx, up) = tokio::sync::oneshot::channel();
        let events = tokio::spawn(async move {
            let mut up_tx = Some(up_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = up_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("the DM server's broker connection: {e}").into()),
                }
            }
        });
        tokio::time::timeout(PATIENCE, up)
            .await
            .map_err(|_| "the DM server did not connect to the broker")?
            .map_err(|_| "the DM server's broker connection ended")?;
        Ok(Publisher { client, events })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.events.abort();
    }
}

/// Part 1's client side: the daemon, the publisher, and `SessionFinished` as it comes.
struct Trigger<'a> {
    daemon: &'a SessionDaemon,
    dm: &'a mut DmServer,
    publisher: Publisher,
    finished: MessageStream,
    next_id: u16,
}

/// What started a sample's session.
#[derive(Clone, Copy)]
enum Via {
    Notification,
    StartSession,
}

impl Trigger<'_> {
    /// One session started `via`: the time from the trigger to the devserver reading its
    /// Package#1. The session runs to its end (status 200) before this returns. `warmup`:
    /// any session reason will do.
    async fn sample(&mut self, via: Via, warmup: bool) -> Result<Duration> {
        while self.dm.package1.try_recv().is_ok() {}
        let (start, session_id, reason) = match via {
            Via::Notification => {
                let payload = package0(self.next_id)?;
                self.next_id += 1;
                let start = Instant::now();
                self.publisher
                    .client
                    .publish(TOPIC, payload, PublishOptions::new(QoS::AtLeastOnce))
                    .await?;
                (start, None, "ServerInitiatedMgmt")
            }
            Via::StartSession => {
                let start = Instant::now();
                let id: String = self
                    .daemon
                    .conn
                    .call_method(Some(DEST), PATH, Some(IFACE), "StartSession", &(SRV, ""))
                    .await?
                    .body()
                    .deserialize()?;
                (start, Some(id), "ClientInitiatedMgmt")
            }
        };
        let (at, line) = tokio::time::timeout(PATIENCE, self.dm.package1.recv())
            .await
            .map_err(|_| {
                format!(
                    "no Package#1 within {PATIENCE:?} (publisher: {}): {}",
                    if self.publisher.events.is_finished() {
                        "gone"
                    } else {
                        "connected"
                    },
                    self.daemon.log()
                )
            })?
            .ok_or("the devserver is gone")?;
        if !warmup && !line.contains(reason) {
            return Err(format!("expected a {reason} session, the devserver saw: {line}").into());
        }
        self.wait_finished(session_id.as_deref()).await?;
        tokio::time::sleep(GAP).await;
        Ok(at.duration_since(start))
    }

    /// Waits for the `SessionFinished` of [`SRV`]'s session `id` (any of its sessions:
    /// `None`); it must say 200.
    async fn wait_finished(&mut self, id: Option<&str>) -> Result<()> {
        let end = tokio::time::Instant::now() + PATIENCE;
        loop {
            let msg = tokio::time::timeout_at(end, self.finished.next())
                .await
                .map_err(|_| format!("no SessionFinished within {PATIENCE:?}"))?
                .ok_or("the bus connection ended")??;
            let (srv, sid, status): (String, String, i32) = msg.body().deserialize()?;
            if srv == SRV && id.is_none_or(|id| id == sid) {
                if status != 200 {
                    return Err(format!("session {sid} ended with status {status}").into());
                }
                return Ok(());
            }
        }
    }
}

fn latency(rt: &Runtime, plan: Plan, broker: &Mosquitto, dm: &mut DmServer) -> Result<Row> {
    let daemon = SessionDaemon::start(rt, "[notification]\nrate_per_minute = 100000\n")?;
    let result = rt.block_on(async {
        let topic = broker.url(true, TOPIC);
        create_account(&daemon.conn, &dm.account(Some(&topic), &broker.ca_pem)).await?;
        wait_channel(&daemon.conn, "mqtt:connected", || daemon.log()).await?;
        let rule = MatchRule::builder()
            .msg_type(MsgType::Signal)
            .interface(IFACE)
            .member("SessionFinished")
            .path(PATH)
            .build()?;
        let finished =
            MessageStream::for_match_rule(rule, &daemon.conn, NonZeroUsize::new(64)).await?;
        let publisher = Publisher::connect(broker).await?;
        let mut trigger = Trigger {
            daemon: &daemon,
            dm,
            publisher,
            finished,
            next_id: 1,
        };
        for _ in 0..WARMUP {
            trigger.sample(Via::Notification, true).await?;
            trigger.sample(Via::StartSession, true).await?;
        }
        let (mut notified, mut started) = (Vec::new(), Vec::new());
        let slice = plan.samples.div_ceil(SLICES);
        while notified.len() < plan.samples {
            let n = slice.min(plan.samples - notified.len());
            for _ in 0..n {
                notified.push(trigger.sample(Via::Notification, false).await?);
            }
            for _ in 0..n {
                started.push(trigger.sample(Via::StartSession, false).await?);
            }
        }
        Ok::<_, Box<dyn Error + Send + Sync>>((Samples::new(notified), Samples::new(started)))
    });
    let (notified, started) = result?;
    println!(
        "part 1: notification -> Package#1 over MQTT: {} ({} samples)",
        spread(&notified),
        notified.len()
    );
    println!(
        "part 1: StartSession -> Package#1 (baseline): {}",
        spread(&started)
    );
    let ratio = notified.median().as_secs_f64() / started.median().as_secs_f64();
    let p50 = notified.median().as_secs_f64() * 1e3;
    println!(
        "part 1: p50 notification/StartSession {ratio:.2}x; target p50 <= \
         {LATENCY_TARGET_MS} ms: {}",
        verdict(plan, p50 <= LATENCY_TARGET_MS)
    );
    Ok(Row::timed(
        "1. notification -> Package#1 (MQTT)",
        "ms",
        1e-3,
        &notified,
        Some(&started),
        plan.target(LATENCY_TARGET_MS),
    ))
}

fn verdict(plan: Plan, met: bool) -> &'static str {
    match (plan.quick, met) {
        (true, _) => "not judged in quick mode",
        (false, true) => "PASS",
        (false, false) => "FAIL",
    }
}

// ---------------------------------------------------------------------------------------
// 2. Idle wake-ups

/// Each thread of `pid`: its name and its context switches (voluntary + non-voluntary).
fn switches(pid: u32) -> Result<BTreeMap<u32, (String, u64)>> {
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let (mut name, mut n) = (String::new(), 0);
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("Name:") {
                v.trim().clone_into(&mut name);
            } else if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>()?;
            }
        }
        threads.insert(tid, (name, n));
    }
    Ok(threads)
}

/// A process's wake-ups over a window: every thread's switches since the window began (a
/// thread that started meanwhile counts from zero; one that ended keeps its last reading).
struct Wakeups {
    pid: u32,
    first: BTreeMap<u32, u64>,
    last: BTreeMap<u32, (String, u64)>,
}

impl Wakeups {
    fn start(pid: u32) -> Result<Wakeups> {
        let last = switches(pid)?;
        let first = last.iter().map(|(t, (_, n))| (*t, *n)).collect();
        Ok(Wakeups { pid, first, last })
    }

    fn read(&mut self) -> Result<()> {
        for (tid, now) in switches(self.pid)? {
            self.first.entry(tid).or_insert(0);
            self.last.insert(tid, now);
        }
        Ok(())
    }

    /// Wake-ups per thread name, most first.
    fn by_thread(&self) -> Vec<(String, u64)> {
        let mut by: BTreeMap<&str, u64> = BTreeMap::new();
        for (tid, (name, n)) in &self.last {
            *by.entry(name).or_default() += n - self.first[tid];
        }
        let mut by: Vec<(String, u64)> = by.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        by
    }

    fn total(&self) -> u64 {
        self.by_thread().iter().map(|(_, n)| n).sum()
    }
}

fn wakeups(rt: &Runtime, plan: Plan, broker: &Mosquitto, dm: &DmServer) -> Result<Row> {
    let with = SessionDaemon::start(rt, "")?;
    let without = SessionDaemon::start(rt, "")?;
    rt.block_on(async {
        let topic = broker.url(true, TOPIC);
        create_account(&with.conn, &dm.account(Some(&topic), &broker.ca_pem)).await?;
        create_account(&without.conn, &dm.account(None, &broker.ca_pem)).await?;
        wait_channel(&with.conn, "mqtt:connected", || with.log()).await?;
        wait_channel(&without.conn, "", || without.log()).await
    })?;
    std::thread::sleep(SETTLE);
    let (mut ours, mut base) = (Wakeups::start(with.pid())?, Wakeups::start(without.pid())?);
    let start = Instant::now();
    while start.elapsed() < plan.idle {
        std::thread::sleep(WAKE_POLL);
        ours.read()?;
        base.read()?;
    }
    let secs = start.elapsed().as_secs_f64();
    // Still up at the end: the window measured a live channel.
    let still = rt.block_on(channel(&with.conn))?;
    if still != "mqtt:connected" {
        return Err(format!("the MQTT channel went {still:?} while idle: {}", with.log()).into());
    }
    let (ours_rate, base_rate) = (ours.total() as f64 / secs, base.total() as f64 / secs);
    let threads = |w: &Wakeups| {
        let by = w.by_thread();
        let busy: Vec<String> = by
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        format!(
            "{} thread(s), woken: {}",
            w.last.len(),
            if busy.is_empty() {
                "none".to_owned()
            } else {
                busy.join(", ")
            }
        )
    };
    println!(
        "part 2: {} wake-ups in {secs:.1} s idle with the MQTT channel up ({})",
        ours.total(),
        threads(&ours)
    );
    println!(
        "part 2: {} wake-ups in {secs:.1} s idle without MQTT (baseline; {})",
        base.total(),
        threads(&base)
    );
    println!(
        "part 2: MQTT keepalive 60 s (one PINGREQ/PINGRESP a minute); target <= \
         {WAKEUPS_TARGET}/s: {}",
        verdict(plan, ours_rate <= WAKEUPS_TARGET)
    );
    Ok(Row {
        name: "2. idle wake-ups, MQTT channel up".into(),
        unit: "/s",
        ours: ours_rate,
        ours_p99: None,
        // A baseline of no wake-ups at all has no ratio: the line above gives it.
        base: (base_rate > 0.0).then_some(base_rate),
        base_p99: None,
        target: plan.target(WAKEUPS_TARGET),
    })
}

// ---------------------------------------------------------------------------------------
// 3. Network move → MQTT back

/// What this process hears on the device's system bus, stamped as it arrives.
#[derive(Debug)]
enum Heard {
    /// NetworkManager's `PrimaryConnection` (`/` for none).
    Primary(String),
    /// omadmd's `NotificationChannel` of [`SRV`].
    Channel(String),
}

/// Listens for `PropertiesChanged` from `path` with the changed property `name`, sending
/// what `heard` makes of its value with the time it arrived. NetworkManager also sends its
/// own older `org.freedesktop.NetworkManager.PropertiesChanged` (`a{sv}`): both count.
async fn listen(
    conn: &Connection,
    path: &'static str,
    name: &'static str,
    heard: fn(OwnedVariant) -> Option<Heard>,
    tx: mpsc::UnboundedSender<(Instant, Heard)>,
) -> Result<JoinHandle<()>> {
    let rule = MatchRule::builder()
        .msg_type(MsgType::Signal)
        .member("PropertiesChanged")
        .path(path)
        .build()?;
    let mut stream = MessageStream::for_match_rule(rule, conn, NonZeroUsize::new(256)).await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let at = Instant::now();
            if let Some(value) = changed(&msg, name)
                && let Some(h) = heard(value)
                && tx.send((at, h)).is_err()
            {
                return;
            }
        }
    }))
}

/// The new value of property `name` in a `PropertiesChanged` signal, if it has one.
fn changed(msg: &Message, name: &str) -> Option<OwnedVariant> {
    let body = msg.body();
    let mut props: HashMap<String, OwnedVariant> =
        match msg.header().interface().map(|i| i.as_str()) {
            Some(PROPERTIES) => {
                body.deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
                    .ok()?
                    .1
            }
            _ => {
                body.deserialize::<(HashMap<String, OwnedVariant>,)>()
                    .ok()?
                    .0
            }
        };
    props.remove(name)
}

/// The floor of "MQTT back": a fresh connection from the device namespace to the broker
/// (TCP, TLS, CONNECT/CONNACK, SUBSCRIBE/SUBACK), closed again; its time.
fn floor(nat: &Nat, k: usize, tls: Arc<rustls::ClientConfig>) -> Result<Duration> {
    nat.in_namespace(Ns::Device, move || {
        // A runtime on this thread, so that its socket is made in the device namespace.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let host = SERVER.to_string();
            let options = mqtt_options(
                &format!("benchfloor{k}"),
                &host,
                MQTT_PORT,
                DEVICE_USER,
                tls,
            );
            let (client, mut events) = AsyncClient::builder(options).try_build()?;
            let start = Instant::now();
            let subscribed = async {
                loop {
                    match events.poll().await? {
                        Event::Incoming(Packet::ConnAck(_)) => {
                            client.try_subscribe("omadm/bench-floor", QoS::AtLeastOnce)?;
                        }
                        Event::Incoming(Packet::SubAck(_)) => return Ok(start.elapsed()),
                        _ => {}
                    }
                }
            };
            let took: Result<Duration> = tokio::time::timeout(PATIENCE, subscribed)
                .await
                .map_err(|_| "the floor connection did not subscribe")?;
            let took = took?;
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
            Ok(took)
        })
    })
}

fn network_move(rt: &Runtime, plan: Plan) -> Result<Row> {
    let started = Instant::now();
    let mut nat = Nat::start();
    let pki = Pki::generate();
    let broker = Broker::start(&nat, &pki, &[DEVICE_USER]);
    let daemon = DeviceDaemon::start(&nat, "");
    println!(
        "part 3: NetworkManager, NAT topology, broker and omadmd up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let conn = rt.block_on(connect(nat.bus().address()))?;
    // No DM server: the account only needs its broker (no session runs; the network MO is
    // not in its Perm, so no NetworkChanged alert either).
    let mut account = json!({"DMAcc": {
        "SrvID": SRV,
        "SrvURI": format!("https://{SERVER}:8443/dm"),
        "Perm": {"p0": {"MOID": DEVINFO}},
        "Ext": {"CACert": pki.ca_pem},
        "Auth": {"Noti": {"Secret": NOTI_SECRET_B64}}}});
    account["DMAcc"]["Push"] = push_entry(&broker.url(TOPIC));
    let (tx, mut heard) = mpsc::unbounded_channel();
    let listeners = rt.block_on(async {
        create_account(&conn, &account.to_string()).await?;
        wait_channel(&conn, "mqtt:connected", || tail(&daemon.log())).await?;
        let primary = listen(
            &conn,
            NM_PATH,
            "PrimaryConnection",
            |v| {
                OwnedObjectPath::try_from(v)
                    .ok()
                    .map(|p| Heard::Primary(p.to_string()))
            },
            tx.clone(),
        )
        .await?;
        let channel = listen(
            &conn,
            SRV_PATH,
            "NotificationChannel",
            |v| String::try_from(v).ok().map(Heard::Channel),
            tx,
        )
        .await?;
        Ok::<_, Box<dyn Error + Send + Sync>>([primary, channel])
    })?;

    let result = (|| {
        let (mut back, mut floors) = (Vec::new(), Vec::new());
        let mut site = nat.site();
        for k in 0..plan.moves {
            site = match site {
                Site::Home => Site::Office,
                Site::Office => Site::Home,
            };
            let seen_before = broker.clients_from(site.public_address(), "omadmd").len();
            while heard.try_recv().is_ok() {}
            nat.move_to(site);
            let (primary_at, back_at) = rt.block_on(async {
                let (mut primary_at, mut trace) = (None, Vec::new());
                let end = tokio::time::Instant::now() + PATIENCE;
                loop {
                    let (at, h) = tokio::time::timeout_at(end, heard.recv())
                        .await
                        .map_err(|_| {
                            format!(
                                "after the move to {}: no primary connection and MQTT back \
                                 within {PATIENCE:?} (heard: {trace:?}): {}",
                                site.name(),
                                tail(&daemon.log())
                            )
                        })?
                        .ok_or("the bus listeners ended")?;
                    match &h {
                        // The first one: NetworkManager may say it twice (its own
                        // older PropertiesChanged too).
                        Heard::Primary(p) if p != "/" => {
                            primary_at.get_or_insert(at);
                        }
                        Heard::Channel(c) if c == "mqtt:connected" => {
                            if let Some(p) = primary_at {
                                return Ok::<_, Box<dyn Error + Send + Sync>>((p, at));
                            }
                        }
                        _ => {}
                    }
                    trace.push(h);
                }
            })?;
            let took = back_at.duration_since(primary_at);
            let now_seen = broker.clients_from(site.public_address(), "omadmd").len();
            if now_seen <= seen_before {
                return Err(format!(
                    "omadmd's channel says connected, but the broker saw no new connection from \
                     {}'s public address: {}",
                    site.name(),
                    broker.log()
                )
                .into());
            }
            // A TLS configuration of its own, as omadmd makes for each connection: no
            // session to resume, a whole handshake.
            let f = floor(&nat, k, broker_tls(&pki.ca_pem)?)?;
            println!(
                "part 3: move {} to {}: MQTT back {} ms after the new primary connection \
                 (floor: fresh connect + subscribe {} ms)",
                k + 1,
                site.name(),
                ms(took),
                ms(f)
            );
            back.push(took);
            floors.push(f);
        }
        Ok::<_, Box<dyn Error + Send + Sync>>((Samples::new(back), Samples::new(floors)))
    })();
    for l in &listeners {
        l.abort();
    }
    let (back, floors) = result?;
    println!(
        "part 3: new primary connection -> MQTT back: {} ({} moves); floor: {}",
        spread(&back),
        back.len(),
        spread(&floors)
    );
    println!(
        "part 3: target p50 <= {MOVE_TARGET_MS} ms: {}",
        verdict(plan, back.median().as_secs_f64() * 1e3 <= MOVE_TARGET_MS)
    );
    drop(conn);
    drop(daemon);
    drop(broker);
    nat.stop();
    Ok(Row::timed(
        "3. new primary connection -> MQTT back",
        "ms",
        1e-3,
        &back,
        Some(&floors),
        plan.target(MOVE_TARGET_MS),
    ))
}
