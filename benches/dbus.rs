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
//!    `CheckAuthorization` calls to prove it);
//! 5. abuse: `Get` of one leaf by an innocent caller (root, in this process), alone and while
//!    attacking connections of another Unix user (this binary, re-executed under `setpriv`
//!    in an attack mode; polkit lets that user read, write and watch) loop as fast as they
//!    can over the abusive calls of the security review: a ClientURI one byte over
//!    `uri_bytes`; ClientURIs of exactly `uri_bytes` full of path segments, x-names or `nv=`
//!    fields; a wildcard matching more than `result_rows` nodes (the attacker's own);
//!    `nv=` guesses at a DM account's No-Get secret; `CreateInstance` one level past
//!    `tree_depth`; `Watch` after holding `watches_per_caller` watches. Every ClientURI but
//!    the wildcard is new on each call, as a guessing attacker's are (each is a polkit
//!    check). The daemon runs with the default `[limits]`. The attackers check that every
//!    call gets its refusal (error name and the limit named in its message) and count them;
//!    the bench reports the innocent caller's latency under attack against alone, the
//!    refusals per second, each kind's time to its refusal when made one at a time (before
//!    the attack), the CPU that omadmd, dbus-daemon and polkitd used meanwhile, and checks
//!    that the daemon is alive and answering at the end;
//! 6. the obuspa-shaped read ([`bulk_read`]): 1,000 instances x 11 leaves read whole with one
//!    `GetJson`, beside raw rusqlite reading the same rows from the same store file into the
//!    same JSON, and `Peer.Ping` / `Peer.GetMachineId` (the transport floor); obuspa's dump
//!    as a labelled constant;
//! 7. memory ([`memory`], a daemon of its own, measured first): idle RSS of the fresh
//!    daemon, with 10,000 such instances, right after one `GetJson` of them all and 5 s
//!    later; obuspa's idle RSS as a labelled constant.
//!
//! Calls of ours and of the baseline (in 5: under attack and alone) alternate in slices so
//! that machine load affects both equally. The bench client runs on the same machine as the
//! daemon, `dbus-daemon` and `polkitd`: on few cores they all compete. A missed target is
//! reported, not a failure; any error exits non-zero. Everything started (bus, polkitd,
//! daemon, clients) is stopped on every exit path.
//!
//! Limits: 1,000 watcher connections of one uid exceed dbus-daemon's default
//! `max_connections_per_user` (256), so the bench drops a `<limit>` file into the private
//! bus's `bus.d` and reloads it (the harness itself is unchanged). The process's open-file
//! limit is checked in `/proc/self/limits` and, if too low, raised up to the hard limit
//! with `prlimit`; failing that, fewer watchers are used and the table says how many.

use std::error::Error;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::num::NonZeroUsize;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{ChildStdin, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use omadmd::config::Limits;
use tempfile::TempDir;
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
#[path = "common/cpu.rs"]
mod cpu;
use cpu::{Cpu, Procs};
#[path = "common/watchers.rs"]
mod watchers;

#[path = "dbus/bulk_read.rs"]
mod bulk_read;
#[path = "dbus/memory.rs"]
mod memory;

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
const ROUNDS: usize = 5;
const CONNECT_BATCH: usize = 32;
/// 4. timed Gets of each kind by the non-root client.
const POLKIT_ITERS: usize = 2_000;

/// 5. timed Gets of the innocent caller, alone and under attack (each); attacking
///    connections; the attacker's test user; the MO of its instances, their number of
///    leaves each; the DM account whose secret it guesses at.
const ATTACK_ITERS: usize = 5_000;
const ATTACKERS: usize = 2;
const ATTACK_USER: &str = "omadmd-t-bench-attack";
const ATTACK_MOID: &str = "urn:oma:mo:ext-omadmd-bench-attack:1.0";
const ATTACK_LEAVES: usize = 10_000;
/// Calls of each kind the attacker times one at a time before the attack.
const PROBE_CALLS: usize = 20;
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const SECRET_ACCOUNT: &str = concat!(
    r#"{"DMAcc": {"SrvID": "bench", "SrvURI": "https://dm.example/", "Perm": {}, "#,
    r#""Auth": {"Trsp": {"Data": "dev", "Secret": "hunter2"}}}}"#
);
/// How long the attacker may take to make its instances and watches.
const ATTACK_SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// No call may take longer (a hung daemon fails the bench instead of stalling it).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Names another omadmd binary for every daemon the bench starts, e.g. the packaged build:
/// `cargo build --profile dist --bin omadmd` then `OMADMD_BENCH_DAEMON=target/dist/omadmd`.
const DAEMON_ENV: &str = "OMADMD_BENCH_DAEMON";

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
         (transport floor; in the polkit row: ours = cached ClientURI, base = fresh ClientURI; \
         in the attack row: ours = during the attack, base = alone; in the GetJson row: base \
         = raw rusqlite reading the same rows into the same JSON; in the Peer row: ours = \
         GetMachineId; in the RSS rows: base = the figure named after the slash, b in the \
         target); median and p99 (delivery: median and max of {ROUNDS} rounds); ratio = \
         ours/base; targets apply to ours (median)"
    );
    let watchers = watchers::watcher_budget("dbus")?;
    match std::env::var_os(DAEMON_ENV) {
        Some(program) => println!("daemon: {} ({DAEMON_ENV})", program.to_string_lossy()),
        None => println!(
            "daemon: this build's omadmd ({} profile; {DAEMON_ENV}=<binary> to measure another, \
             e.g. target/dist/omadmd, the packaged build)",
            if cfg!(debug_assertions) {
                "test"
            } else {
                "bench = release"
            }
        ),
    }
    println!(
        "peers' figures are constants measured on this machine kind (they cannot be built \
         here): obuspa 11.0.4's 11,154-parameter dump 64.5 ms, its idle RSS 13,984 KiB"
    );

    // Locals drop in reverse order of declaration: the runtime (with every client
    // connection), then the daemon, then the bus go away, also on errors and panics.
    let user = sysbus::test_user(TEST_USER);
    let bus = SysBus::start();
    watchers::raise_bus_limits(&bus)?;
    // 7. first: its daemon must be fresh, and hold the bus name alone.
    let memory = memory::measure(&bus)?;
    let mut daemon = start_daemon(&bus, "")?;
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

        bulk_read::measure(&admin, &procs)
            .await?
            .report(&mut rows, &mut notes);

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

    let a = under_attack(&bus, &rt, &mut daemon)?;
    a.report(&mut rows, &mut notes);
    memory.report(&mut rows, &mut notes);

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
    /// ours at most this much above base.
    AboveBaseAtMost(f64),
}

impl common::Target for Target {
    fn met(&self, ours: f64, base: Option<f64>) -> bool {
        match *self {
            Target::AtLeast(min) => ours >= min,
            Target::AtMost(max) => ours <= max,
            Target::RatioAtMost(max) => base.is_some_and(|b| ours <= max * b),
            Target::AboveBaseAtMost(max) => base.is_some_and(|b| ours <= b + max),
        }
    }

    fn label(&self) -> String {
        match *self {
            Target::AtLeast(v) => format!(">= {}", num(v)),
            Target::AtMost(v) => format!("<= {}", num(v)),
            Target::RatioAtMost(v) => format!("<= {v:.2}x"),
            Target::AboveBaseAtMost(v) => format!("<= b+{}", num(v)),
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

/// Starts omadmd on `bus` with `config`: this build's, or the one [`DAEMON_ENV`] names.
fn start_daemon(bus: &SysBus, config: &str) -> Result<Daemon> {
    let state = tempfile::tempdir()?;
    Ok(match std::env::var_os(DAEMON_ENV) {
        Some(program) => Daemon::start_program_in(bus, program, state, config),
        None => Daemon::start_in(bus, state, config),
    })
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
    let leaf = child_uri(&root, "Value");
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
    let (_dir, bin) = client_copy()?;
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

/// A copy of this binary that a test user can run (like an installed app), in a directory
/// that lives as long as the returned guard.
fn client_copy() -> Result<(TempDir, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("omadmd-bench-client-")
        .tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("bench-client");
    std::fs::copy(std::env::current_exe()?, &bin)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    Ok((dir, bin))
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
// 5. Abuse

struct Attack {
    alone: Samples,
    attacked: Samples,
    /// Refused calls of each kind of [`Abuse::ALL`] during the attack, and how long the
    /// attackers ran; each kind's median time to its refusal, one call at a time.
    refused: [u64; Abuse::COUNT],
    attack_time: Duration,
    probe: [Duration; Abuse::COUNT],
    /// The attacker's uid, the nodes its wildcard matched, the watches each connection held.
    uid: u32,
    rows: usize,
    watches: usize,
    /// Cores busy (omadmd / dbus-daemon / polkitd) while the innocent caller was timed.
    busy_alone: String,
    busy_attacked: String,
}

/// 5. The innocent caller's Gets alone and under attack, alternating in slices: the
///    attacker (a process of [`ATTACK_USER`], see [`attack_client`]) is told when to run and
///    when to pause, and reports the refusals of each phase.
fn under_attack(bus: &SysBus, rt: &Runtime, daemon: &mut Daemon) -> Result<Attack> {
    let user = sysbus::test_user(ATTACK_USER);
    bus.add_polkit_rules(
        "60-omadmd-bench-attack",
        &format!(
            "polkit.addRule(function(action, subject) {{\n\
             if ([\"org.omadm.client1.read\", \"org.omadm.client1.write\", \
             \"org.omadm.client1.watch\"].indexOf(action.id) >= 0 && subject.user == {:?}) {{\n\
             return polkit.Result.YES; }}\n\
             return polkit.Result.NOT_HANDLED; }});\n",
            user.name
        ),
    );
    let (conn, procs) = rt.block_on(async {
        let conn = connect(bus.address()).await?;
        conn.call_method(
            Some(DEST),
            PATH,
            Some(IFACE),
            "CreateInstance",
            &(DMACC, SECRET_ACCOUNT),
        )
        .await?;
        let procs = Procs::find(&conn, bus).await?;
        Ok::<_, Box<dyn Error + Send + Sync>>((conn, procs))
    })?;
    let pids = [procs.omadmd, procs.bus, cpu::harness_pid(bus, "polkitd")?];
    let cpu = || pids.map(cpu::cpu_time);

    let mut attacker = Attacker::spawn(bus, &user)?;
    let ready = attacker.expect("ready", ATTACK_SETUP_TIMEOUT)?;
    let mut ready = ready.split_whitespace().map(str::parse::<u64>);
    let mut figure = || match ready.next() {
        Some(Ok(v)) => Ok(v),
        _ => Err("the attacking client said ready without all its figures"),
    };
    let (rows, watches) = (figure()? as usize, figure()? as usize);
    let mut probe = [Duration::ZERO; Abuse::COUNT];
    for p in &mut probe {
        *p = Duration::from_nanos(figure()?);
    }
    rt.block_on(timed_gets(&conn, WARMUP))?;
    let per_slice = ATTACK_ITERS / SLICES;
    let (mut alone, mut attacked) = (Phase::default(), Phase::default());
    let mut refused = [0u64; Abuse::COUNT];
    let mut attack_time = Duration::ZERO;
    for _ in 0..SLICES {
        alone.time(rt, &conn, per_slice, &cpu)?;
        attacker.send("run")?;
        attacker.expect("running", CALL_TIMEOUT)?;
        attacked.time(rt, &conn, per_slice, &cpu)?;
        attacker.send("pause")?;
        let paused = attacker.expect("paused", 2 * CALL_TIMEOUT)?;
        let mut fields = paused.split_whitespace();
        let secs: f64 = fields.next().ok_or("paused without a time")?.parse()?;
        attack_time += Duration::from_secs_f64(secs);
        for r in &mut refused {
            *r += fields
                .next()
                .ok_or("paused without a count for each kind")?
                .parse::<u64>()?;
        }
    }
    attacker.finish()?;
    if let Some(status) = daemon.wait_exit(Duration::from_millis(100)) {
        return Err(format!("omadmd exited under attack ({status}):\n{}", daemon.log()).into());
    }
    rt.block_on(check_get(&conn, LEAF))?;
    Ok(Attack {
        busy_alone: alone.busy(),
        busy_attacked: attacked.busy(),
        alone: Samples::new(alone.samples),
        attacked: Samples::new(attacked.samples),
        refused,
        attack_time,
        probe,
        uid: user.uid,
        rows,
        watches,
    })
}

impl Attack {
    /// Its rows of the table and its notes.
    fn report(&self, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
        rows.push(Row::timed(
            &format!("Get DevID, {ATTACKERS} attackers: under/alone"),
            "µs",
            1e-6,
            &self.attacked,
            Some(&self.alone),
            None,
        ));
        let attack_secs = self.attack_time.as_secs_f64();
        rows.push(Row {
            name: "abusive calls refused".into(),
            unit: "calls/s",
            ours: self.refused.iter().sum::<u64>() as f64 / attack_secs,
            ours_p99: None,
            base: None,
            base_p99: None,
            target: None,
        });
        let per_kind: Vec<String> = Abuse::ALL
            .iter()
            .zip(&self.probe)
            .map(|(k, t)| format!("{} {}", k.label(), num(t.as_secs_f64() * 1e3)))
            .collect();
        notes.push(format!(
            "abuse: {} calls by {ATTACKERS} connections of uid:{} looping over all kinds in \
             {attack_secs:.1} s, each refused with its expected error; time to the refusal, one \
             call at a time (median of {PROBE_CALLS}, ms): {}",
            group(&self.refused.iter().sum::<u64>().to_string()),
            self.uid,
            per_kind.join(", ")
        ));
        notes.push(format!(
            "the innocent Get under attack/alone: median {:.2}x, p99 {:.2}x",
            self.attacked.median().as_secs_f64() / self.alone.median().as_secs_f64(),
            self.attacked.p99().as_secs_f64() / self.alone.p99().as_secs_f64()
        ));
        notes.push(format!(
            "abuse setup: the wildcard matched {} of the attacker's nodes (result_rows {}); each \
             attacking connection held {} watches (watches_per_caller); the daemon was alive and \
             answered Get after the attack",
            group(&self.rows.to_string()),
            group(&Limits::default().result_rows.to_string()),
            self.watches
        ));
        notes.push(format!(
            "CPU busy during the innocent Gets (cores; omadmd / dbus-daemon / polkitd): alone {}, \
             under attack {}",
            self.busy_alone, self.busy_attacked
        ));
    }
}

/// One condition of the innocent caller's Gets: per-call times, wall time, and CPU of
/// omadmd, dbus-daemon and polkitd meanwhile.
#[derive(Default)]
struct Phase {
    samples: Vec<Duration>,
    wall: Duration,
    cpu: [Duration; 3],
}

impl Phase {
    /// Times `calls` Gets on `conn`; `cpu` reads the three processes' CPU time.
    fn time(
        &mut self,
        rt: &Runtime,
        conn: &Connection,
        calls: usize,
        cpu: &impl Fn() -> [Duration; 3],
    ) -> Result<()> {
        let (start, before) = (Instant::now(), cpu());
        self.samples.extend(rt.block_on(timed_gets(conn, calls))?);
        self.wall += start.elapsed();
        for (total, (after, before)) in self.cpu.iter_mut().zip(cpu().into_iter().zip(before)) {
            *total += after.saturating_sub(before);
        }
        Ok(())
    }

    /// Cores busy, `a / b / c`.
    fn busy(&self) -> String {
        let wall = self.wall.as_secs_f64();
        let busy: Vec<String> = self
            .cpu
            .iter()
            .map(|c| format!("{:.2}", c.as_secs_f64() / wall))
            .collect();
        busy.join(" / ")
    }
}

/// `calls` Gets of [`LEAF`], one at a time; per-call times.
async fn timed_gets(conn: &Connection, calls: usize) -> Result<Vec<Duration>> {
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        call(conn, Kind::Get).await?;
        lat.push(start.elapsed());
    }
    Ok(lat)
}

/// The attacking process, driven line by line over its stdin and stdout.
struct Attacker {
    child: KillOnDrop,
    commands: Option<ChildStdin>,
    replies: std_mpsc::Receiver<String>,
    /// Holds the binary the child runs; dropped after it.
    _bin: TempDir,
}

impl Attacker {
    /// This binary in attack mode as `user`. Spawned from the main thread: the attacker dies
    /// with it (`setpriv --pdeathsig`).
    fn spawn(bus: &SysBus, user: &TestUser) -> Result<Attacker> {
        let (dir, bin) = client_copy()?;
        let mut cmd = bus.command(Some(user), &bin);
        cmd.env(CLIENT_ENV, "attack")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = KillOnDrop(cmd.spawn()?);
        let commands = child.stdin.take().ok_or("the attacker has no stdin")?;
        let stdout = child.stdout.take().ok_or("the attacker has no stdout")?;
        let (tx, replies) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Attacker {
            child,
            commands: Some(commands),
            replies,
            _bin: dir,
        })
    }

    fn send(&mut self, command: &str) -> Result<()> {
        let stdin = self
            .commands
            .as_mut()
            .ok_or("the attacker's stdin is closed")?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        Ok(())
    }

    /// The rest of the attacker's next line, which must start with `word`.
    fn expect(&mut self, word: &str, timeout: Duration) -> Result<String> {
        match self.replies.recv_timeout(timeout) {
            Ok(line) => match line.strip_prefix(word) {
                Some(rest) => Ok(rest.trim().to_owned()),
                None => Err(format!("the attacking client said {line:?}, not {word}").into()),
            },
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("the attacking client did not say {word} within {timeout:?}").into())
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(format!(
                "the attacking client exited ({}) instead of saying {word}; its error is above",
                self.child.wait()?
            )
            .into()),
        }
    }

    /// Tells the attacker to quit; it must exit successfully.
    fn finish(mut self) -> Result<()> {
        self.send("quit")?;
        drop(self.commands.take());
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return match status.success() {
                    true => Ok(()),
                    false => Err(format!("the attacking client failed ({status})").into()),
                };
            }
            if Instant::now() > deadline {
                return Err(
                    format!("the attacking client did not quit within {CALL_TIMEOUT:?}").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The abusive calls of the security review, each with the refusal it must get.
#[derive(Clone, Copy, Debug)]
enum Abuse {
    OverLong,
    Segments,
    XNames,
    NvFields,
    Rows,
    Secret,
    Deep,
    Watch,
}

impl Abuse {
    const COUNT: usize = 8;
    /// In declaration order (`kind as usize` indexes it).
    const ALL: [Abuse; Abuse::COUNT] = [
        Abuse::OverLong,
        Abuse::Segments,
        Abuse::XNames,
        Abuse::NvFields,
        Abuse::Rows,
        Abuse::Secret,
        Abuse::Deep,
        Abuse::Watch,
    ];

    /// How the notes name it.
    fn label(self) -> &'static str {
        match self {
            Abuse::OverLong => "ClientURI over uri_bytes",
            Abuse::Segments => "max-length ClientURI of segments",
            Abuse::XNames => "of x-names",
            Abuse::NvFields => "of nv= fields",
            Abuse::Rows => "wildcard over result_rows",
            Abuse::Secret => "nv= guess at a secret",
            Abuse::Deep => "CreateInstance past tree_depth",
            Abuse::Watch => "Watch past watches_per_caller",
        }
    }

    /// The error (`org.omadm.Client1.Error.<name>`) and a word its message must contain.
    fn refusal(self) -> (&'static str, &'static str) {
        match self {
            Abuse::OverLong => ("InvalidUri", "uri_bytes"),
            Abuse::Segments => ("InvalidUri", "uri_segments"),
            Abuse::XNames => ("InvalidUri", "uri_xnames"),
            Abuse::NvFields => ("InvalidUri", "nv_fields"),
            Abuse::Rows => ("NotAllowed", "result_rows"),
            Abuse::Secret => ("InvalidUri", "No-Get"),
            Abuse::Deep => ("NotAllowed", "tree_depth"),
            Abuse::Watch => ("NotAllowed", "watches_per_caller"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client mode (this binary re-executed as a non-root test user)

fn client_main(mode: &str) -> ExitCode {
    let result = match mode {
        "polkit" => client_runtime().and_then(|rt| rt.block_on(polkit_client())),
        "attack" => client_runtime().and_then(|rt| attack_client(&rt)),
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

fn client_runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
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

/// Attack mode: makes enough instances that a wildcard over them exceeds `result_rows` and
/// fills every connection's watches, times each kind of abusive call alone, and says `ready
/// <nodes> <watches per connection> <median ns to the refusal of each kind>`; then, on each
/// `run`, loops over the abusive calls on every connection (saying `running`) until `pause`,
/// and says `paused <seconds> <refusals of each kind>`.
/// `quit` or the end of its input ends it; a call that does not get its refusal is an
/// error.
fn attack_client(rt: &Runtime) -> Result<String> {
    let limits = Limits::default();
    let watches = limits.watches_per_caller;
    let seq = Arc::new(AtomicU64::new(0));
    let (conns, arsenal, nodes, probe) = rt.block_on(async {
        let mut conns = Vec::with_capacity(ATTACKERS);
        for _ in 0..ATTACKERS {
            conns.push(
                zbus::connection::Builder::system()
                    .method_timeout(CALL_TIMEOUT)
                    .build()
                    .await?,
            );
        }
        let (arsenal, nodes) = Arsenal::arm(&conns, limits).await?;
        let probe = arsenal.probe(&conns[0], &seq).await?;
        Ok::<_, Box<dyn Error + Send + Sync>>((conns, Arc::new(arsenal), nodes, probe))
    })?;
    println!("ready {nodes} {watches} {probe}");
    let tally = Arc::new(Tally::default());
    // Each connection starts at another kind, and goes on where it paused.
    let mut next: Vec<usize> = (0..ATTACKERS)
        .map(|i| i * Abuse::COUNT / ATTACKERS)
        .collect();
    let mut commands = std::io::stdin().lines();
    loop {
        match commands.next().transpose()?.as_deref() {
            Some("run") => {}
            Some("quit") | None => return Ok(String::new()),
            Some(other) => return Err(format!("unknown command {other:?}").into()),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let tasks: Vec<JoinHandle<Result<usize>>> = conns
            .iter()
            .zip(&next)
            .map(|(conn, &from)| {
                rt.spawn(attack_loop(
                    conn.clone(),
                    arsenal.clone(),
                    from,
                    seq.clone(),
                    stop.clone(),
                    tally.clone(),
                ))
            })
            .collect();
        println!("running");
        let command = commands.next().transpose()?;
        stop.store(true, Ordering::Relaxed);
        for (task, from) in tasks.into_iter().zip(&mut next) {
            *from = rt.block_on(task)??;
        }
        if command.as_deref() != Some("pause") {
            return Err(format!("expected pause, got {command:?}").into());
        }
        let counts: Vec<String> = tally
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed).to_string())
            .collect();
        println!(
            "paused {} {}",
            start.elapsed().as_secs_f64(),
            counts.join(" ")
        );
    }
}

/// One attacking connection: abusive calls of each kind in turn, from `next`, until `stop`;
/// returns where it stopped.
async fn attack_loop(
    conn: Connection,
    arsenal: Arc<Arsenal>,
    mut next: usize,
    seq: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Result<usize> {
    while !stop.load(Ordering::Relaxed) {
        let kind = Abuse::ALL[next % Abuse::COUNT];
        let n = seq.fetch_add(1, Ordering::Relaxed);
        refused_as_expected(kind, arsenal.call(&conn, kind, n).await)?;
        tally[kind as usize].fetch_add(1, Ordering::Relaxed);
        next += 1;
    }
    Ok(next)
}

/// Refusals of each kind of [`Abuse::ALL`] in one phase of the attack.
type Tally = [AtomicU64; Abuse::COUNT];

/// Whether `outcome` is the refusal `kind` must get.
fn refused_as_expected(kind: Abuse, outcome: zbus::Result<Message>) -> Result<()> {
    let (name, word) = kind.refusal();
    let wanted = format!("{IFACE}.Error.{name}");
    match outcome {
        Err(zbus::Error::MethodError(got, Some(message), _))
            if got.as_str() == wanted && message.contains(word) =>
        {
            Ok(())
        }
        Err(e) => {
            let e: String = e.to_string().chars().take(300).collect();
            Err(format!(
                "{}: expected {wanted} naming {word}, got: {e}",
                kind.label()
            )
            .into())
        }
        Ok(_) => Err(format!(
            "{}: expected {wanted}, but the call succeeded",
            kind.label()
        )
        .into()),
    }
}

/// What the attacker's calls are made of.
struct Arsenal {
    limits: Limits,
    /// One of its instances (whose leaves it watches).
    root: String,
}

impl Arsenal {
    /// Creates the attacker's instances (`ATTACK_LEAVES` leaves each, enough of them for a
    /// wildcard to match more than `result_rows`) and has every connection watch as many
    /// leaves as it may. Returns the arsenal and the number of leaves.
    async fn arm(conns: &[Connection], limits: Limits) -> Result<(Arsenal, usize)> {
        let leaves: Vec<String> = (0..ATTACK_LEAVES)
            .map(|i| format!(r#""L{i}": "v""#))
            .collect();
        let modata = format!(r#"{{"Bench": {{{}}}}}"#, leaves.join(", "));
        let instances = limits.result_rows / ATTACK_LEAVES + 1;
        let mut root = None;
        for _ in 0..instances {
            let created: String = conns[0]
                .call_method(
                    Some(DEST),
                    PATH,
                    Some(IFACE),
                    "CreateInstance",
                    &(ATTACK_MOID, modata.as_str()),
                )
                .await?
                .body()
                .deserialize()?;
            root.get_or_insert(created);
        }
        let root = root.ok_or("no instance was created")?;
        for conn in conns {
            for i in 0..limits.watches_per_caller {
                let leaf = child_uri(&root, &format!("L{i}"));
                conn.call_method(Some(DEST), PATH, Some(IFACE), "Watch", &(leaf.as_str(),))
                    .await?;
            }
        }
        Ok((Arsenal { limits, root }, instances * ATTACK_LEAVES))
    }

    /// The median time to the refusal of each kind of abusive call, `PROBE_CALLS` of each made
    /// one at a time on `conn` (numbered from `seq`), as `ns ns ...`.
    async fn probe(&self, conn: &Connection, seq: &AtomicU64) -> Result<String> {
        let mut medians = Vec::with_capacity(Abuse::COUNT);
        for kind in Abuse::ALL {
            let mut times = Vec::with_capacity(PROBE_CALLS);
            for _ in 0..PROBE_CALLS {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                let outcome = self.call(conn, kind, n).await;
                times.push(start.elapsed());
                refused_as_expected(kind, outcome)?;
            }
            medians.push(Samples::new(times).median().as_nanos().to_string());
        }
        Ok(medians.join(" "))
    }

    /// The `n`-th abusive call (`n` makes its ClientURI new), of `kind`, on `conn`.
    async fn call(&self, conn: &Connection, kind: Abuse, n: u64) -> zbus::Result<Message> {
        let bytes = self.limits.uri_bytes;
        let (method, uri) = match kind {
            Abuse::OverLong => ("Get", format!("{ATTACK_MOID}/m{n}/{}", "a".repeat(bytes))),
            Abuse::Segments => {
                let head = format!("{ATTACK_MOID}/m{n}");
                let parts = (bytes - head.len()) / 2;
                (
                    "Get",
                    padded(bytes, head, vec![("/".to_owned(), ""); parts]),
                )
            }
            Abuse::XNames => {
                let parts = (0..self.limits.uri_segments)
                    .map(|i| (format!("/(x{i}_"), ")"))
                    .collect();
                ("Get", padded(bytes, format!("{ATTACK_MOID}/m{n}"), parts))
            }
            Abuse::NvFields => {
                let parts = (0..2 * self.limits.nv_fields)
                    .map(|i| (format!("{}nv=(x)/F{i}:", if i == 0 { "" } else { "&" }), ""))
                    .collect();
                (
                    "Get",
                    padded(bytes, format!("{ATTACK_MOID}/(x)/m{n}?"), parts),
                )
            }
            Abuse::Rows => ("Get", format!("{ATTACK_MOID}/*/*")),
            Abuse::Secret => (
                "Get",
                format!("{DMACC}/(x)/SrvID?nv=(x)/Auth/Trsp/Secret:{n:06}"),
            ),
            Abuse::Watch => (
                "Watch",
                child_uri(&self.root, &format!("L{}", n % ATTACK_LEAVES as u64)),
            ),
            Abuse::Deep => {
                let levels = self.limits.tree_depth + 1;
                let modata = format!(
                    r#"{{"Bench": {}"v{n}"{}}}"#,
                    r#"{"n": "#.repeat(levels),
                    "}".repeat(levels)
                );
                return conn
                    .call_method(
                        Some(DEST),
                        PATH,
                        Some(IFACE),
                        "CreateInstance",
                        &(ATTACK_MOID, modata.as_str()),
                    )
                    .await;
            }
        };
        conn.call_method(Some(DEST), PATH, Some(IFACE), method, &(uri.as_str(),))
            .await
    }
}

/// `head`, then each part's opening, `a`s and closing, with as many `a`s as make the whole
/// exactly `bytes` long (spread over the parts; at least one each if there is room).
fn padded(bytes: usize, head: String, parts: Vec<(String, &str)>) -> String {
    let fixed: usize = head.len()
        + parts
            .iter()
            .map(|(open, close)| open.len() + close.len())
            .sum::<usize>();
    let pad = bytes.saturating_sub(fixed);
    let (each, extra) = (pad / parts.len().max(1), pad % parts.len().max(1));
    let mut uri = head;
    for (i, (open, close)) in parts.iter().enumerate() {
        uri.push_str(open);
        uri.push_str(&"a".repeat(each + usize::from(i < extra)));
        uri.push_str(close);
    }
    uri
}

/// The ClientURI of `name` below the node `uri` (with or without its trailing `/`).
fn child_uri(uri: &str, name: &str) -> String {
    if uri.ends_with('/') {
        format!("{uri}{name}")
    } else {
        format!("{uri}/{name}")
    }
}
