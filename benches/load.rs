//! Load benchmark: do D-Bus readers stay fast while the daemon imports large MOs and tells
//! many watchers about it? (issue 8, "Show it").
//!
//! Run it with `cargo bench --bench load` (release build, as root). With
//! `OMADMD_BENCH_QUICK=1` it runs one short round and only checks that the load runs
//! without a timeout or an error (for CI); its figures are then not meaningful.
//!
//! It starts a private system bus with a real `polkitd` and omadmd's bus policy
//! (`tests/support/sysbus.rs`), the release `omadmd` on it as root
//! (`tests/support/daemon.rs`), and `omadm-devserver` in-process on loopback (TLS included).
//! A DM account (`bench-dm`, trusting the devserver's CA) may manage the devserver's weather
//! MO; the devserver's repository holds a 10,100-node instance of it (100 groups of 100
//! leaves), and every session it runs HGETs that instance: the daemon replaces the
//! instance's content each time (a 10k-node import in one store transaction).
//!
//! - Readers: 8 connections, each calling `Get` of one leaf (`DevInfo/DevID`) one call at a
//!   time, 300 calls each per phase.
//! - Load: sessions with the devserver back to back (`StartSession`, then waiting for its
//!   `SessionFinished`, which must say 200), while 1,000 watcher connections each `Watch` the
//!   imported instance and drain their `Changed` signals.
//! - Quiet and load phases alternate ([`SLICES`] times) so that both see the same machine;
//!   the watchers stay registered throughout (idle while quiet).
//!
//! Reported: the readers' median and p99 quiet and under load, the ratio of the p99s against
//! the goal (under load within 3× quiet), the imports done, and the signals the watchers got.
//! A missed goal is reported (NOT MET), not a failure; any error or timeout exits non-zero.
//! Everything started is stopped on every exit path.
//!
//! Like the D-Bus bench, it raises dbus-daemon's per-user connection limit through the
//! private bus's `bus.d` and this process's open-file limit with `prlimit`, using fewer
//! watchers (and saying so) if it cannot.

use std::error::Error;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use omadmd::devserver::{DevServer, DevServerConfig, RunningServer, Scenario};
use serde_json::json;
use tokio::task::{JoinHandle, JoinSet};
use zbus::message::Type as MsgType;
use zbus::{Connection, MatchRule, MessageStream, OwnedVariant};

/// The integration tests' helpers, by path (`daemon` refers to `super::sysbus`).
#[allow(dead_code)]
#[path = "../tests/support"]
mod support {
    pub mod daemon;
    pub mod sysbus;
}

use support::daemon::Daemon;
use support::sysbus::SysBus;

mod common;
#[path = "common/watchers.rs"]
mod watchers;

use watchers::WATCHERS;

use common::{SLICES, Samples, build, cores, group, num, print_table, print_targets_met};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const DEST: &str = "org.omadm.Client1";
const PATH: &str = "/org/omadm/Client1";
const IFACE: &str = "org.omadm.Client1";

/// What the readers read (provided by the daemon, readable by every app).
const LEAF: &str = "urn:oma:mo:oma-dm-devinfo:1.0//DevID";
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const WEATHER: &str = "urn:oma:mo:ext-devserver-weather:1.0";
const SRV_ID: &str = "bench-dm";
/// The imported instance (HGET without a ClientURI: the item names its MIID).
const BIG: &str = "urn:oma:mo:ext-devserver-weather:1.0/big/";
const GROUPS: usize = 100;
const LEAVES: usize = 100;

/// Selects the quick mode.
const QUICK_ENV: &str = "OMADMD_BENCH_QUICK";

const READERS: usize = 8;
/// Connections opened at once (dbus-daemon allows 64 unauthenticated ones by default).
const CONNECT_BATCH: usize = 32;
/// The goal: readers' p99 under load at most this many times their quiet p99.
const GOAL: f64 = 3.0;

/// No call may take longer (a hung daemon fails the bench instead of stalling it).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// No import session may take longer.
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

/// How much to measure.
#[derive(Clone, Copy)]
struct Plan {
    quick: bool,
    /// Calls per reader per phase.
    calls: usize,
    /// Quiet/load phase pairs.
    rounds: usize,
    warmup: usize,
}

impl Plan {
    fn from_env() -> Plan {
        if std::env::var(QUICK_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
            Plan {
                quick: true,
                calls: 50,
                rounds: 1,
                warmup: 10,
            }
        } else {
            Plan {
                quick: false,
                calls: 300,
                rounds: SLICES,
                warmup: 200,
            }
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let plan = Plan::from_env();
    println!(
        "omadmd load bench: {} cores, {} build{}",
        cores(),
        build(),
        if plan.quick {
            "; QUICK mode (checks that the load runs; figures not meaningful)"
        } else {
            ""
        }
    );
    println!(
        "{READERS} readers Get one leaf, quiet and while a {}-node instance is imported by \
         back-to-back DM sessions and {WATCHERS} watchers hear of it; {} round(s) of {} calls \
         per reader per phase; columns: ours = under load, base = quiet",
        group(&(GROUPS * (LEAVES + 1)).to_string()),
        plan.rounds,
        group(&plan.calls.to_string())
    );
    let watchers = watchers::watcher_budget("load")?;

    // Locals drop in reverse order of declaration: the client runtime (with every
    // connection), the devserver and its runtime, the daemon, then the bus.
    let bus = SysBus::start();
    watchers::raise_bus_limits(&bus)?;
    let daemon = Daemon::start(&bus);
    let dev_rt = tokio::runtime::Runtime::new()?;
    let certs = tempfile::tempdir()?;
    let server = dev_rt.block_on(devserver(certs.path()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let result = rt.block_on(measure(&bus, &server, watchers, plan));
    let server_failures = server.failures();
    drop(rt);
    let m =
        result.map_err(|e| format!("{e}\n--- omadmd log (tail) ---\n{}", tail(&daemon.log())))?;
    if !server_failures.is_empty() {
        return Err(format!("the devserver saw failures: {server_failures:#?}").into());
    }
    drop(server);
    drop(dev_rt);
    let (clean, _state) = daemon.stop();
    if !clean {
        return Err("omadmd did not exit cleanly on SIGTERM".into());
    }
    drop(bus);
    m.report(plan, watchers);
    Ok(())
}

/// The devserver: one repository entry, the big instance, HGET in every session.
async fn devserver(certs: &std::path::Path) -> Result<RunningServer> {
    let groups: serde_json::Map<String, serde_json::Value> = (0..GROUPS)
        .map(|g| {
            let leaves: serde_json::Map<String, serde_json::Value> = (0..LEAVES)
                .map(|l| (format!("L{l}"), json!(format!("value {g}.{l}"))))
                .collect();
            (format!("G{g}"), serde_json::Value::Object(leaves))
        })
        .collect();
    let scenario = json!({"name": "load",
        "repository": {"big": [{"ClientURI": BIG, "MOData": {"Weather": groups}}]},
        "packages": [{"commands": [["HGET", "{repo}/big"]], "expect": [200]}]});
    let mut config = DevServerConfig::new(certs);
    config.listen = "127.0.0.1:0".parse()?;
    config.scenario = Scenario::parse(&scenario.to_string(), "load")?;
    Ok(DevServer::start(config).await?)
}

/// What was measured.
struct Measured {
    quiet: Samples,
    load: Samples,
    imports: Vec<Duration>,
    signals: u64,
    silent_watchers: usize,
}

async fn measure(
    bus: &SysBus,
    server: &RunningServer,
    watchers: usize,
    plan: Plan,
) -> Result<Measured> {
    let admin = connect(bus.address()).await?;
    zbus::fdo::DBusProxy::new(&admin)
        .await?
        .reload_config()
        .await?;
    check_get(&admin, LEAF).await?;
    let account = json!({"DMAcc": {
        "SrvID": SRV_ID, "SrvURI": server.url(), "Perm": {"p0": {"MOID": WEATHER}},
        "Ext": {"CACert": server.ca_pem()}}});
    admin
        .call_method(
            Some(DEST),
            PATH,
            Some(IFACE),
            "CreateInstance",
            &(DMACC, account.to_string()),
        )
        .await?;
    // The first import creates the instance the watchers watch.
    let mut imports = vec![import(&admin).await?];
    check_get(&admin, &format!("{BIG}G0/L0")).await?;

    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..watchers).map(|_| AtomicU64::new(0)).collect());
    let tasks = start_watchers(bus.address(), watchers, counts.clone()).await?;
    let mut readers = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        readers.push(connect(bus.address()).await?);
    }
    read_phase(&readers, plan.warmup).await?;

    let result = async {
        let (mut quiet, mut load) = (Vec::new(), Vec::new());
        for _ in 0..plan.rounds {
            quiet.extend(read_phase(&readers, plan.calls).await?);
            let stop = Arc::new(AtomicBool::new(false));
            let importer = tokio::spawn(import_loop(admin.clone(), stop.clone()));
            // Let the first import get going before the readers start.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let timed = read_phase(&readers, plan.calls).await;
            stop.store(true, Ordering::Relaxed);
            imports.extend(importer.await??);
            load.extend(timed?);
        }
        Ok::<_, Box<dyn Error + Send + Sync>>((quiet, load))
    }
    .await;
    // Let the last signals arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let (quiet, load) = result?;
    let signals = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    let silent_watchers = counts
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) == 0)
        .count();
    if silent_watchers > 0 {
        return Err(format!("{silent_watchers} of {watchers} watchers heard of no import").into());
    }
    Ok(Measured {
        quiet: Samples::new(quiet),
        load: Samples::new(load),
        imports,
        signals,
        silent_watchers,
    })
}

impl Measured {
    fn report(&self, plan: Plan, watchers: usize) {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let rows = [
            Row::timed(
                &format!("Get DevID, {READERS} readers"),
                "µs",
                1e-6,
                &self.load,
                Some(&self.quiet),
                None,
            ),
            Row {
                name: "Get DevID p99: load/quiet".into(),
                unit: "µs",
                ours: us(self.load.p99()),
                ours_p99: None,
                base: Some(us(self.quiet.p99())),
                base_p99: None,
                target: (!plan.quick).then_some(Goal),
            },
        ];
        print_table(&rows, 28, 4);
        let ratio = us(self.load.p99()) / us(self.quiet.p99());
        let imports = Samples::new(self.imports.clone());
        println!(
            "imports: {} sessions of one 10k-node HGET, median {} ms, max {} ms; {} Changed \
             signals to {} watchers ({} silent)",
            self.imports.len(),
            num(imports.median().as_secs_f64() * 1e3),
            num(imports[imports.len() - 1].as_secs_f64() * 1e3),
            group(&self.signals.to_string()),
            group(&watchers.to_string()),
            self.silent_watchers
        );
        println!(
            "readers p50: quiet {} µs, under load {} µs ({:.2}x)",
            num(us(self.quiet.median())),
            num(us(self.load.median())),
            us(self.load.median()) / us(self.quiet.median())
        );
        let verdict = if plan.quick {
            "not judged in quick mode"
        } else if ratio <= GOAL {
            "PASS"
        } else {
            "NOT MET"
        };
        println!(
            "readers p99: quiet {} µs, under load {} µs, ratio {ratio:.2}x (goal <= {GOAL}x): {verdict}",
            num(us(self.quiet.p99())),
            num(us(self.load.p99())),
        );
        println!("load bench: the load ran without a timeout or an error");
        if !plan.quick {
            print_targets_met("load", &rows);
        }
    }
}

type Row = common::Row<Goal>;

/// The goal of the p99 row: under load (ours) at most [`GOAL`] times quiet (base).
struct Goal;

impl common::Target for Goal {
    fn met(&self, ours: f64, base: Option<f64>) -> bool {
        base.is_some_and(|b| ours / b <= GOAL)
    }

    fn label(&self) -> String {
        format!("<= {GOAL}x")
    }
}

// ---------------------------------------------------------------------------------------
// The load

/// Sessions back to back until `stop`; the duration of each.
async fn import_loop(admin: Connection, stop: Arc<AtomicBool>) -> Result<Vec<Duration>> {
    let mut done = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        done.push(import(&admin).await?);
    }
    Ok(done)
}

/// One session with the devserver (one import of the big instance); it must end with 200.
async fn import(admin: &Connection) -> Result<Duration> {
    let rule = MatchRule::builder()
        .msg_type(MsgType::Signal)
        .interface(IFACE)
        .member("SessionFinished")
        .path(PATH)
        .build()?
        .to_owned();
    let mut finished = MessageStream::for_match_rule(rule, admin, NonZeroUsize::new(64)).await?;
    let start = Instant::now();
    let id: String = admin
        .call_method(Some(DEST), PATH, Some(IFACE), "StartSession", &(SRV_ID, ""))
        .await?
        .body()
        .deserialize()?;
    let deadline = tokio::time::Instant::now() + SESSION_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, finished.next())
            .await
            .map_err(|_| format!("session {id} did not finish within {SESSION_TIMEOUT:?}"))?
            .ok_or("the bus connection ended")??;
        let (srv, sid, status): (String, String, i32) = msg.body().deserialize()?;
        if srv == SRV_ID && sid == id {
            if status != 200 {
                return Err(format!("import session {id} ended with status {status}").into());
            }
            return Ok(start.elapsed());
        }
    }
}

/// `n` watcher connections on the big instance, each counting its `Changed` signals.
async fn start_watchers(
    address: &str,
    n: usize,
    counts: Arc<Vec<AtomicU64>>,
) -> Result<Vec<JoinHandle<()>>> {
    let rule = MatchRule::builder()
        .msg_type(MsgType::Signal)
        .interface(IFACE)
        .member("Changed")
        .path(PATH)
        .build()?
        .to_owned();
    let mut tasks = Vec::with_capacity(n);
    let mut next = 0;
    while next < n {
        let mut set = JoinSet::new();
        for i in next..(next + CONNECT_BATCH).min(n) {
            let (address, rule) = (address.to_owned(), rule.clone());
            set.spawn(async move {
                let conn = connect(&address).await?;
                let stream =
                    MessageStream::for_match_rule(rule, &conn, NonZeroUsize::new(1024)).await?;
                conn.call_method(Some(DEST), PATH, Some(IFACE), "Watch", &(BIG,))
                    .await?;
                Ok::<_, Box<dyn Error + Send + Sync>>((i, conn, stream))
            });
        }
        while let Some(r) = set.join_next().await {
            let (i, conn, mut stream) = r?.map_err(|e| {
                format!(
                    "opening watcher {} of {n}: {e} (bus or fd limits?)",
                    tasks.len() + 1
                )
            })?;
            let counts = counts.clone();
            tasks.push(tokio::spawn(async move {
                let _conn = conn;
                while let Some(Ok(_)) = stream.next().await {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        next = (next + CONNECT_BATCH).min(n);
    }
    Ok(tasks)
}

// ---------------------------------------------------------------------------------------
// The readers

/// Every reader makes `calls` Gets, one at a time, all readers at once; every call's time.
async fn read_phase(readers: &[Connection], calls: usize) -> Result<Vec<Duration>> {
    let mut set = JoinSet::new();
    for conn in readers {
        let conn = conn.clone();
        set.spawn(async move {
            let mut times = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                conn.call_method(Some(DEST), PATH, Some(IFACE), "Get", &(LEAF,))
                    .await?;
                times.push(start.elapsed());
            }
            Ok::<_, Box<dyn Error + Send + Sync>>(times)
        });
    }
    let mut all = Vec::with_capacity(calls * readers.len());
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

/// Get of `uri` must return exactly one leaf; returns its value.
async fn check_get(conn: &Connection, uri: &str) -> Result<OwnedVariant> {
    let reply = conn
        .call_method(Some(DEST), PATH, Some(IFACE), "Get", &(uri,))
        .await?;
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

async fn connect(address: &str) -> Result<Connection> {
    Ok(zbus::connection::Builder::address(address)
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await?)
}

/// The last 40 lines of `log`.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Limits (as in the D-Bus bench)
