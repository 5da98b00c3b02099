//! D-Bus service benchmark: how fast the real `omadmd` answers on a real system bus, next
//! to the transport floor (`org.freedesktop.DBus.Peer.Ping` on the same daemon).
//!
//! Run it with `cargo bench --bench dbus` (release build, as root; well under a minute of
//! work after the build).
//!
//! It starts a private system bus with a real `polkitd` and omadmd's bus policy and polkit
//! actions (`tests/support/sysbus.rs`), runs the release `omadmd` on it as root
//! (`tests/support/daemon.rs`), and measures against that one daemon:
//!
//! 1. `Get` of one leaf (`DevInfo/DevID`) as root, one client: latency beside `Ping`;
//! 2. the same with 8 connections driven concurrently: latency and total calls/s;
//! 3. change delivery: 1,000 watcher connections `Watch` one leaf and subscribe to the
//!    (unicast) `Changed` signal; one `Set` of that leaf; time from just before the `Set`
//!    until the last watcher has its signal, over 5 rounds;
//! 4. the polkit read cache: a client running as a non-root test user (this binary,
//!    re-executed under `setpriv` in a client mode, printing its figures) times `Get` of one
//!    ClientURI (polkit asked once, then cached for the connection) against `Get` of a fresh
//!    ClientURI each time (the same node through a new x-name: the cache key holds the
//!    ClientURI, so each is a polkit round trip; a bus monitor counts the
//!    `CheckAuthorization` calls to prove it).
//!
//! Calls of ours and of the baseline alternate in slices so that machine load affects both
//! equally. The bench client runs on the same machine as the daemon, `dbus-daemon` and
//! `polkitd`: on few cores they all compete. A missed target is reported, not a failure;
//! any error exits non-zero. Everything started (bus, polkitd, daemon, clients) is stopped
//! on every exit path.
//!
//! Limits: 1,000 watcher connections of one uid exceed dbus-daemon's default
//! `max_connections_per_user` (256), so the bench drops a `<limit>` file into the private
//! bus's `bus.d` and reloads it (the harness itself is unchanged). The process's open-file
//! limit is checked in `/proc/self/limits` and, if too low, raised up to the hard limit
//! with `prlimit`; failing that, fewer watchers are used and the table says how many.

use std::error::Error;
use std::io::Read as _;
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use zbus::message::Type as MsgType;
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedVariant, Variant};

/// The integration tests' helpers, by path (`daemon` refers to `super::sysbus`).
#[allow(dead_code)]
#[path = "../tests/support"]
mod support {
    pub mod daemon;
    pub mod sysbus;
}

use support::daemon::Daemon;
use support::sysbus::{self, KillOnDrop, SysBus, TestUser};

mod common;

use common::{SLICES, Samples, build, cores, group, num, print_table, print_targets_met};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const DEST: &str = "org.omadm.Client1";
const PATH: &str = "/org/omadm/Client1";
const IFACE: &str = "org.omadm.Client1";
const PEER_IFACE: &str = "org.freedesktop.DBus.Peer";

/// The leaf read by Get (DevInfo is provided by the daemon, readable by every app).
const LEAF: &str = "urn:oma:mo:oma-dm-devinfo:1.0//DevID";
/// The test instance whose leaf the watchers watch.
const BENCH_MOID: &str = "urn:oma:mo:ext-omadmd-bench:1.0";
const BENCH_MODATA: &str = r#"{"Bench": {"Value": "0"}}"#;

/// Test user of the non-root client (house convention: `omadmd-t-` prefix).
const TEST_USER: &str = "omadmd-t-bench";
/// Selects the client mode of this binary (re-executed as the test user).
const CLIENT_ENV: &str = "OMADMD_BENCH_DBUS_CLIENT";
const CLIENT_URI_ENV: &str = "OMADMD_BENCH_DBUS_URI";
const CLIENT_ITERS_ENV: &str = "OMADMD_BENCH_DBUS_ITERS";

/// 1. timed calls of each kind with one client (after `WARMUP`).
const SINGLE_ITERS: usize = 10_000;
const WARMUP: usize = 500;
/// 2. concurrent connections and timed calls of each kind per connection.
const CLIENTS: usize = 8;
const CALLS_PER_CLIENT: usize = 2_500;
/// 3. watcher connections, Set rounds, and connections opened at once (dbus-daemon allows
///    64 unauthenticated connections by default).
const WATCHERS: usize = 1_000;
const ROUNDS: usize = 5;
const CONNECT_BATCH: usize = 32;
/// 4. timed Gets of each kind by the non-root client.
const POLKIT_ITERS: usize = 2_000;

/// No call may take longer (a hung daemon fails the bench instead of stalling it).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// fds this process needs besides the watchers' sockets.
const SPARE_FDS: u64 = 128;

fn main() -> ExitCode {
    if let Ok(mode) = std::env::var(CLIENT_ENV) {
        return client_main(&mode);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dbus bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cores = cores();
    println!("omadmd D-Bus bench: {cores} cores, {} build", build());
    println!(
        "columns: ours = omadmd's org.omadm.Client1 call, base = Peer.Ping on the same daemon \
         (transport floor; in the polkit row: ours = cached ClientURI, base = fresh ClientURI); \
         median and p99 (delivery: median and max of {ROUNDS} rounds); ratio = ours/base; \
         targets apply to ours (median)"
    );
    let watchers = watcher_budget()?;

    // Locals drop in reverse order of declaration: the runtime (with every client
    // connection), then the daemon, then the bus go away, also on errors and panics.
    let user = sysbus::test_user(TEST_USER);
    let bus = SysBus::start();
    raise_bus_limits(&bus)?;
    let daemon = Daemon::start(&bus);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    rt.block_on(async {
        let admin = connect(bus.address()).await?;
        reload_bus_config(&admin).await?;
        check_get(&admin, LEAF).await?;
        let procs = Procs::find(&admin, &bus).await?;

        let (get, ping) = single_client(&admin).await?;
        rows.push(Row::timed(
            "Get DevID, 1 client",
            "µs",
            1e-6,
            &get,
            Some(&ping),
            Some(Target::RatioAtMost(2.0)),
        ));

        let mut conns = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            conns.push(connect(bus.address()).await?);
        }
        let c = concurrent(&conns, &procs).await?;
        rows.push(Row::timed(
            "Get DevID, 8 clients: latency",
            "µs",
            1e-6,
            &c.get,
            Some(&c.ping),
            None,
        ));
        rows.push(Row {
            name: "Get DevID, 8 clients: throughput".into(),
            unit: "calls/s",
            ours: c.get_rate,
            ours_p99: None,
            base: Some(c.ping_rate),
            base_p99: None,
            target: Some(Target::AtLeast(10_000.0)),
        });
        drop(conns);
        notes.push(format!(
            "CPU per call, {CLIENTS} clients (µs; omadmd / dbus-daemon / bench clients): Get {}, Ping {}",
            c.get_cpu.per(c.calls, 1e-6),
            c.ping_cpu.per(c.calls, 1e-6)
        ));

        let d = change_delivery(&admin, bus.address(), watchers, &procs).await?;
        rows.push(Row {
            name: format!("Changed to {} watchers", group(&watchers.to_string())),
            unit: "ms",
            ours: d.last.median().as_secs_f64() * 1e3,
            ours_p99: Some(d.last.max().as_secs_f64() * 1e3),
            base: None,
            base_p99: None,
            target: Some(Target::AtMost(100.0)),
        });
        notes.push(format!(
            "delivery per round (ms, from just before Set): Set reply {}, first watcher {}, last watcher {}",
            list_ms(&d.set_reply),
            list_ms(&d.first),
            list_ms(&d.last)
        ));
        notes.push(format!(
            "CPU per Set round, Set to last signal (ms; omadmd / dbus-daemon / bench watchers): {}",
            d.cpu.per(ROUNDS, 1e-3)
        ));
        Ok::<_, Box<dyn Error + Send + Sync>>(())
    })?;

    let p = polkit_cache(&bus, &rt, &user)?;
    rows.push(Row {
        name: "Get DevID as non-root: cached/fresh".into(),
        unit: "µs",
        ours: p.cached_p50 * 1e6,
        ours_p99: Some(p.cached_p99 * 1e6),
        base: Some(p.fresh_p50 * 1e6),
        base_p99: Some(p.fresh_p99 * 1e6),
        target: None,
    });
    notes.push(format!(
        "polkit CheckAuthorization calls seen during the non-root run: {} for {} Gets of one \
         ClientURI and {} Gets of fresh ClientURIs (expected 1 + {})",
        p.checks, p.cached_calls, p.fresh_calls, p.fresh_calls
    ));

    // Orderly stop: clients first (their departures reach the daemon), then the daemon.
    drop(rt);
    let (clean, _state) = daemon.stop();
    if !clean {
        return Err("omadmd did not exit cleanly on SIGTERM".into());
    }
    drop(bus);

    print_table(&rows, 36, 8);
    for n in &notes {
        println!("{n}");
    }
    print_targets_met("dbus", &rows);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rows and targets

impl Samples {
    /// The slowest.
    fn max(&self) -> Duration {
        self[self.len() - 1]
    }
}

type Row = common::Row<Target>;

enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// ours/base at most this.
    RatioAtMost(f64),
}

impl common::Target for Target {
    fn met(&self, ours: f64, base: Option<f64>) -> bool {
        match *self {
            Target::AtLeast(min) => ours >= min,
            Target::AtMost(max) => ours <= max,
            Target::RatioAtMost(max) => base.is_some_and(|b| ours <= max * b),
        }
    }

    fn label(&self) -> String {
        match *self {
            Target::AtLeast(v) => format!(">= {}", num(v)),
            Target::AtMost(v) => format!("<= {}", num(v)),
            Target::RatioAtMost(v) => format!("<= {v:.2}x"),
        }
    }
}

fn list_ms(v: &[Duration]) -> String {
    let ms: Vec<String> = v
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
        .collect();
    ms.join(" ")
}

// ---------------------------------------------------------------------------------------
// Setup

/// How many watchers this process can hold open: `WATCHERS`, after raising the soft
/// open-file limit up to the hard one if needed (`prlimit`, no libc needed), else fewer.
fn watcher_budget() -> Result<usize> {
    let need = WATCHERS as u64 + SPARE_FDS;
    let (soft, hard) = nofile_limits()?;
    if soft >= need {
        return Ok(WATCHERS);
    }
    let want = need.min(hard);
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={want}:{hard}"))
        .status();
    let (soft, _) = nofile_limits()?;
    if soft >= need {
        return Ok(WATCHERS);
    }
    let fit = soft.saturating_sub(SPARE_FDS) as usize;
    eprintln!(
        "dbus bench: open-file limit {soft} (hard {hard}; prlimit: {status:?}): using {fit} watchers, not {WATCHERS}"
    );
    if fit == 0 {
        return Err(format!("open-file limit {soft} leaves no room for watchers").into());
    }
    Ok(fit)
}

/// (soft, hard) `Max open files` of this process.
fn nofile_limits() -> Result<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or("no 'Max open files' in /proc/self/limits")?;
    let mut cols = line["Max open files".len()..].split_whitespace();
    let mut next = || -> Result<u64> {
        match cols.next() {
            Some("unlimited") => Ok(u64::MAX),
            Some(v) => Ok(v.parse()?),
            None => Err(format!("cannot parse {line:?}").into()),
        }
    };
    Ok((next()?, next()?))
}

/// dbus-daemon's default limits allow 256 connections per uid; the watchers (all root,
/// like the other bench clients) need more. The harness's documented extension point is
/// its `bus.d` directory; the limit takes effect once the bus reloads its config
/// ([`reload_bus_config`]).
fn raise_bus_limits(bus: &SysBus) -> Result<()> {
    let conf = bus.dir().join("bus.d/omadmd-bench-limits.conf");
    std::fs::write(
        &conf,
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- omadmd D-Bus bench: room for 1,000 watcher connections of one uid -->
<busconfig>
  <limit name="max_connections_per_user">4096</limit>
  <limit name="max_completed_connections">4096</limit>
</busconfig>
"#,
    )?;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

async fn reload_bus_config(conn: &Connection) -> Result<()> {
    zbus::fdo::DBusProxy::new(conn)
        .await?
        .reload_config()
        .await?;
    Ok(())
}

async fn connect(address: &str) -> Result<Connection> {
    Ok(zbus::connection::Builder::address(address)
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await?)
}

/// The processes that do the work, for CPU accounting: omadmd, dbus-daemon, this bench.
struct Procs {
    omadmd: u32,
    bus: u32,
}

/// CPU time (all threads) of omadmd, dbus-daemon and this bench.
#[derive(Clone, Copy, Default)]
struct Cpu {
    omadmd: Duration,
    bus: Duration,
    bench: Duration,
}

impl Procs {
    /// omadmd by its bus name; dbus-daemon from the harness's PID record (`pids`).
    async fn find(conn: &Connection, bus: &SysBus) -> Result<Procs> {
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let omadmd = dbus
            .get_connection_unix_process_id(DEST.try_into()?)
            .await?;
        let pids = std::fs::read_to_string(bus.dir().join("pids"))?;
        let bus = pids
            .lines()
            .find_map(|l| {
                l.strip_prefix("dbus ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or("the harness recorded no dbus-daemon PID")?;
        Ok(Procs { omadmd, bus })
    }

    fn cpu(&self) -> Cpu {
        Cpu {
            omadmd: cpu_time(self.omadmd),
            bus: cpu_time(self.bus),
            bench: cpu_time(std::process::id()),
        }
    }
}

/// Time on CPU of every live thread of `pid` (`/proc/<pid>/task/*/schedstat`, ns).
fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(ns)
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, rhs: Cpu) -> Cpu {
        Cpu {
            omadmd: self.omadmd.saturating_sub(rhs.omadmd),
            bus: self.bus.saturating_sub(rhs.bus),
            bench: self.bench.saturating_sub(rhs.bench),
        }
    }
}

impl std::ops::AddAssign for Cpu {
    fn add_assign(&mut self, rhs: Cpu) {
        self.omadmd += rhs.omadmd;
        self.bus += rhs.bus;
        self.bench += rhs.bench;
    }
}

impl Cpu {
    /// `a / b / c` per one of `n`, in units of `unit_secs` seconds.
    fn per(&self, n: usize, unit_secs: f64) -> String {
        let f = |d: Duration| num(d.as_secs_f64() / n as f64 / unit_secs);
        format!("{} / {} / {}", f(self.omadmd), f(self.bus), f(self.bench))
    }
}

// ---------------------------------------------------------------------------------------
// Calls

#[derive(Clone, Copy)]
enum Kind {
    Get,
    Ping,
}

async fn get(conn: &Connection, uri: &str) -> Result<Message> {
    Ok(conn
        .call_method(Some(DEST), PATH, Some(IFACE), "Get", &(uri,))
        .await?)
}

async fn ping(conn: &Connection) -> Result<()> {
    conn.call_method(Some(DEST), PATH, Some(PEER_IFACE), "Ping", &())
        .await?;
    Ok(())
}

async fn call(conn: &Connection, kind: Kind) -> Result<()> {
    match kind {
        Kind::Get => get(conn, LEAF).await.map(drop),
        Kind::Ping => ping(conn).await,
    }
}

/// Get of `uri` must return exactly one leaf; returns its value.
async fn check_get(conn: &Connection, uri: &str) -> Result<OwnedVariant> {
    let reply = get(conn, uri).await?;
    let mut nodes: Vec<(String, String, OwnedVariant)> = reply.body().deserialize()?;
    match nodes.pop() {
        Some((_, format, value)) if nodes.is_empty() && format != "node" => Ok(value),
        other => Err(format!(
            "Get {uri} returned {} nodes, expected one leaf (last: {other:?})",
            nodes.len() + usize::from(other.is_some())
        )
        .into()),
    }
}

// ---------------------------------------------------------------------------------------
// Measurements

/// 1. One client: Get and Ping alternate in slices, one call at a time.
async fn single_client(conn: &Connection) -> Result<(Samples, Samples)> {
    for _ in 0..WARMUP {
        call(conn, Kind::Get).await?;
        call(conn, Kind::Ping).await?;
    }
    let (mut g, mut p) = (
        Vec::with_capacity(SINGLE_ITERS),
        Vec::with_capacity(SINGLE_ITERS),
    );
    for _ in 0..SLICES {
        for (kind, samples) in [(Kind::Get, &mut g), (Kind::Ping, &mut p)] {
            for _ in 0..SINGLE_ITERS / SLICES {
                let start = Instant::now();
                call(conn, kind).await?;
                samples.push(start.elapsed());
            }
        }
    }
    Ok((Samples::new(g), Samples::new(p)))
}

struct Concurrent {
    get: Samples,
    ping: Samples,
    get_rate: f64,
    ping_rate: f64,
    /// Timed calls of each kind, and the CPU they took.
    calls: usize,
    get_cpu: Cpu,
    ping_cpu: Cpu,
}

/// 2. `conns` driven at once, each one call at a time; Get and Ping phases alternate.
///    Throughput: calls of a kind over the wall time of that kind's phases.
async fn concurrent(conns: &[Connection], procs: &Procs) -> Result<Concurrent> {
    let per_slice = CALLS_PER_CLIENT / SLICES;
    run_phase(conns, Kind::Get, WARMUP / 5).await?;
    run_phase(conns, Kind::Ping, WARMUP / 5).await?;
    let (mut g, mut p) = (Vec::new(), Vec::new());
    let (mut g_wall, mut p_wall) = (Duration::ZERO, Duration::ZERO);
    let (mut g_cpu, mut p_cpu) = (Cpu::default(), Cpu::default());
    for _ in 0..SLICES {
        let (start, cpu) = (Instant::now(), procs.cpu());
        g.extend(run_phase(conns, Kind::Get, per_slice).await?);
        g_wall += start.elapsed();
        g_cpu += procs.cpu() - cpu;
        let (start, cpu) = (Instant::now(), procs.cpu());
        p.extend(run_phase(conns, Kind::Ping, per_slice).await?);
        p_wall += start.elapsed();
        p_cpu += procs.cpu() - cpu;
    }
    let calls = conns.len() * per_slice * SLICES;
    Ok(Concurrent {
        get: Samples::new(g),
        ping: Samples::new(p),
        get_rate: calls as f64 / g_wall.as_secs_f64(),
        ping_rate: calls as f64 / p_wall.as_secs_f64(),
        calls,
        get_cpu: g_cpu,
        ping_cpu: p_cpu,
    })
}

/// `calls` calls of `kind` on each connection, all connections at once; per-call times.
async fn run_phase(conns: &[Connection], kind: Kind, calls: usize) -> Result<Vec<Duration>> {
    let mut set = JoinSet::new();
    for c in conns {
        let c = c.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                call(&c, kind).await?;
                lat.push(start.elapsed());
            }
            Ok::<_, Box<dyn Error + Send + Sync>>(lat)
        });
    }
    let mut all = Vec::with_capacity(conns.len() * calls);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

struct Delivery {
    /// Per round, from just before Set: the last watcher's signal (sorted).
    last: Samples,
    /// Per round, in round order: the first watcher's signal and the Set reply.
    first: Vec<Duration>,
    set_reply: Vec<Duration>,
    /// CPU taken from just before each Set until the last signal, all rounds.
    cpu: Cpu,
}

/// A watcher's signal, as its task saw it.
struct Arrival {
    watcher: usize,
    at: Instant,
    seq: u64,
    ok: bool,
}

/// 3. `n` watcher connections on one leaf of a fresh instance; `ROUNDS` Sets of it.
async fn change_delivery(
    admin: &Connection,
    address: &str,
    n: usize,
    procs: &Procs,
) -> Result<Delivery> {
    let reply = admin
        .call_method(
            Some(DEST),
            PATH,
            Some(IFACE),
            "CreateInstance",
            &(BENCH_MOID, BENCH_MODATA),
        )
        .await?;
    let root: String = reply.body().deserialize()?;
    let leaf = if root.ends_with('/') {
        format!("{root}Value")
    } else {
        format!("{root}/Value")
    };
    check_get(admin, &leaf).await?;

    let rule = MatchRule::builder()
        .msg_type(MsgType::Signal)
        .interface(IFACE)
        .member("Changed")
        .path(PATH)
        .build()?
        .to_owned();
    let (tx, mut rx) = mpsc::unbounded_channel::<Arrival>();
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(n);
    let mut next = 0;
    while next < n {
        let mut set = JoinSet::new();
        for i in next..(next + CONNECT_BATCH).min(n) {
            let (address, leaf, rule) = (address.to_owned(), leaf.clone(), rule.clone());
            set.spawn(async move {
                let conn = connect(&address).await?;
                let stream =
                    MessageStream::for_match_rule(rule, &conn, NonZeroUsize::new(16)).await?;
                let id: u64 = conn
                    .call_method(Some(DEST), PATH, Some(IFACE), "Watch", &(leaf.as_str(),))
                    .await?
                    .body()
                    .deserialize()?;
                Ok::<_, Box<dyn Error + Send + Sync>>((i, conn, stream, id))
            });
        }
        while let Some(r) = set.join_next().await {
            let (i, conn, stream, id) = r?.map_err(|e| {
                format!(
                    "opening watcher {} of {n}: {e} (bus or fd limits?)",
                    tasks.len() + 1
                )
            })?;
            tasks.push(tokio::spawn(watcher(
                i,
                conn,
                stream,
                id,
                leaf.clone(),
                tx.clone(),
            )));
        }
        next = (next + CONNECT_BATCH).min(n);
    }
    drop(tx);

    let (mut last, mut first, mut set_reply) = (Vec::new(), Vec::new(), Vec::new());
    let mut used = Cpu::default();
    let result = async {
        for round in 1..=ROUNDS {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(a) = rx.try_recv() {
                return Err(format!("watcher {} got a signal before round {round}", a.watcher).into());
            }
            let value = format!("bench {round}");
            let cpu = procs.cpu();
            let start = Instant::now();
            admin
                .call_method(
                    Some(DEST),
                    PATH,
                    Some(IFACE),
                    "Set",
                    &(leaf.as_str(), "", Variant::from(value.as_str())),
                )
                .await?;
            set_reply.push(start.elapsed());
            let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
            let mut seen = vec![false; n];
            let (mut lo, mut hi, mut seq) = (None::<Instant>, None::<Instant>, None);
            for _ in 0..n {
                let a = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .map_err(|_| {
                        let got = seen.iter().filter(|s| **s).count();
                        format!("round {round}: only {got} of {n} watchers got Changed within {CALL_TIMEOUT:?}")
                    })?
                    .ok_or("the watcher tasks ended")?;
                if !a.ok || std::mem::replace(&mut seen[a.watcher], true) {
                    return Err(format!("round {round}: watcher {} got a wrong or second signal", a.watcher).into());
                }
                if *seq.get_or_insert(a.seq) != a.seq {
                    return Err(format!("round {round}: watchers disagree on the change's seq").into());
                }
                lo = Some(lo.map_or(a.at, |t: Instant| t.min(a.at)));
                hi = Some(hi.map_or(a.at, |t: Instant| t.max(a.at)));
            }
            used += procs.cpu() - cpu;
            let since = |t: Option<Instant>| t.map_or(Duration::ZERO, |t| t.duration_since(start));
            first.push(since(lo));
            last.push(since(hi));
        }
        Ok::<_, Box<dyn Error + Send + Sync>>(())
    }
    .await;
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    result?;
    // Let the daemon take note of the departures before the next measurement.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Delivery {
        last: Samples::new(last),
        first,
        set_reply,
        cpu: used,
    })
}

/// One watcher: reports each `Changed` for its watch id, with its arrival time.
async fn watcher(
    i: usize,
    conn: Connection,
    mut stream: MessageStream,
    id: u64,
    leaf: String,
    tx: mpsc::UnboundedSender<Arrival>,
) {
    let _conn = conn;
    while let Some(Ok(msg)) = stream.next().await {
        let at = Instant::now();
        let Ok((watch_id, uri, change, seq)) =
            msg.body().deserialize::<(u64, String, String, u64)>()
        else {
            continue;
        };
        if watch_id != id {
            continue;
        }
        let ok = uri == leaf && change == "replaced";
        if tx
            .send(Arrival {
                watcher: i,
                at,
                seq,
                ok,
            })
            .is_err()
        {
            break;
        }
    }
}

struct Polkit {
    cached_p50: f64,
    cached_p99: f64,
    fresh_p50: f64,
    fresh_p99: f64,
    cached_calls: u64,
    fresh_calls: u64,
    checks: u64,
}

/// 4. Runs this binary in client mode as the test user (a copy readable by it, like an
///    installed app) while a bus monitor counts polkit checks.
fn polkit_cache(bus: &SysBus, rt: &Runtime, user: &TestUser) -> Result<Polkit> {
    let dir = tempfile::Builder::new()
        .prefix("omadmd-bench-client-")
        .tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let exe = std::env::current_exe()?;
    let bin = dir.path().join("bench-client");
    std::fs::copy(&exe, &bin)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;

    let checks = Arc::new(AtomicU64::new(0));
    let monitor = rt.block_on(count_polkit_checks(bus.address(), checks.clone()))?;
    // Spawned from the main thread: the client dies with it (setpriv --pdeathsig).
    let mut cmd = bus.command(Some(user), &bin);
    cmd.env(CLIENT_ENV, "polkit")
        .env(CLIENT_URI_ENV, LEAF)
        .env(CLIENT_ITERS_ENV, POLKIT_ITERS.to_string())
        .stdout(Stdio::piped());
    let mut child = KillOnDrop::spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            monitor.abort();
            return Err("the non-root client did not finish within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    if !status.success() {
        monitor.abort();
        return Err(format!("the non-root client failed ({status}); it printed: {out}").into());
    }
    let field = |key: &str, i: usize| -> Result<f64> {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|rest| rest.split_whitespace().nth(i)?.parse().ok())
            .ok_or_else(|| format!("the non-root client printed no {key} figures: {out:?}").into())
    };
    let r = Polkit {
        cached_p50: field("cached", 0)?,
        cached_p99: field("cached", 1)?,
        fresh_p50: field("fresh", 0)?,
        fresh_p99: field("fresh", 1)?,
        cached_calls: field("cached", 2)? as u64,
        fresh_calls: field("fresh", 2)? as u64,
        checks: 0,
    };
    // The monitor's copies may trail the client's exit a little.
    let expected = 1 + r.fresh_calls;
    sysbus::wait_until(Duration::from_secs(2), || {
        checks.load(Ordering::Relaxed) >= expected
    });
    std::thread::sleep(Duration::from_millis(100));
    monitor.abort();
    let seen = checks.load(Ordering::Relaxed);
    if seen < r.fresh_calls {
        return Err(format!(
            "only {seen} polkit checks for {} fresh ClientURIs: the fresh Gets were not polkit round trips",
            r.fresh_calls
        )
        .into());
    }
    Ok(Polkit { checks: seen, ..r })
}

/// A monitor connection counting `CheckAuthorization` calls on the bus.
async fn count_polkit_checks(address: &str, count: Arc<AtomicU64>) -> Result<JoinHandle<()>> {
    let conn = connect(address).await?;
    let rule = MatchRule::builder()
        .msg_type(MsgType::MethodCall)
        .interface("org.freedesktop.PolicyKit1.Authority")
        .member("CheckAuthorization")
        .build()?;
    let mut stream = MessageStream::from(&conn);
    zbus::fdo::MonitoringProxy::new(&conn)
        .await?
        .become_monitor(&[rule], 0)
        .await?;
    Ok(tokio::spawn(async move {
        let _conn = conn;
        while let Some(Ok(msg)) = stream.next().await {
            let header = msg.header();
            if header.message_type() == MsgType::MethodCall
                && header
                    .member()
                    .is_some_and(|m| m.as_str() == "CheckAuthorization")
            {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }))
}

// ---------------------------------------------------------------------------------------
// Client mode (this binary re-executed as the non-root test user)

fn client_main(mode: &str) -> ExitCode {
    let result = match mode {
        "polkit" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Into::into)
            .and_then(|rt| rt.block_on(polkit_client())),
        other => Err(format!("unknown client mode {other:?}").into()),
    };
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dbus bench client: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The same DevInfo node as `uri` (`<MOID>//<path>`), addressed through a never-used x-name
/// (`<MOID>/(xN)/<path>?nv=(xN)/DmV:2.0`): a new ClientURI, so a new cache key. (`cv=`
/// fields do not count: the cache ignores them.)
fn fresh_uri(uri: &str, n: u64) -> String {
    let (moid, path) = uri.split_once("//").expect("a <MOID>//<path> ClientURI");
    format!("{moid}/(x{n})/{path}?nv=(x{n})/DmV:2.0")
}

/// Get of one ClientURI (cached after the first call) against Get of a fresh ClientURI
/// each time, alternating in slices. Prints `cached|fresh <p50 s> <p99 s> <calls made>`.
async fn polkit_client() -> Result<String> {
    let uri = std::env::var(CLIENT_URI_ENV)?;
    let iters: usize = std::env::var(CLIENT_ITERS_ENV)?.parse()?;
    let conn = zbus::connection::Builder::system()
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await?;
    let mut fresh_n = 0u64;
    let mut fresh = |conn: Connection| {
        fresh_n += 1;
        let uri = fresh_uri(&uri, fresh_n);
        async move { get(&conn, &uri).await }
    };
    // The first call identifies us and asks polkit once; check both kinds work.
    check_get(&conn, &uri).await?;
    check_get(&conn, &fresh_uri(&uri, 0)).await?;
    let mut cached_calls = 1u64;
    let warmup = (iters / 20).max(1);
    for _ in 0..warmup {
        get(&conn, &uri).await?;
        fresh(conn.clone()).await?;
    }
    cached_calls += warmup as u64;
    let (mut c, mut f) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for _ in 0..SLICES {
        for _ in 0..iters / SLICES {
            let start = Instant::now();
            get(&conn, &uri).await?;
            c.push(start.elapsed());
        }
        for _ in 0..iters / SLICES {
            let call = fresh(conn.clone());
            let start = Instant::now();
            call.await?;
            f.push(start.elapsed());
        }
    }
    cached_calls += c.len() as u64;
    let (c, f) = (Samples::new(c), Samples::new(f));
    let fresh_calls = fresh_n + 1;
    Ok(format!(
        "cached {} {} {cached_calls}\nfresh {} {} {fresh_calls}\n",
        c.median().as_secs_f64(),
        c.p99().as_secs_f64(),
        f.median().as_secs_f64(),
        f.p99().as_secs_f64(),
    ))
}
