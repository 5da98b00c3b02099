//! Session benchmark: how fast the DM session engine runs the commands of a Package#2, and
//! what a customer-care query of a whole device costs with and without cache validators.
//!
//! Run it with `cargo bench --bench session` (release build; well under two minutes). With
//! `OMADMD_BENCH_QUICK=1` every part runs once (CI checks that they run; figures mean
//! nothing then).
//!
//! Everything is real: the engine ([`Engine`]) with a SQLite store file in a temporary
//! directory, and `omadm-devserver` started in-process on loopback, TLS included. The DM
//! account trusts the devserver's test CA (`Ext/CACert`).
//!
//! 1. Command throughput. A store of 1,000 instances of 100 nodes (a root with 10 groups
//!    `G0`..`G9` of 9 leaves `L0`..`L8`, chr and int), 100,000 nodes, owned by the server.
//!    One Package#2 holds 10,000 GETs of single leaves picked at random (fixed seed) across
//!    the 1,000 instances; GET is the command a DM server sends most and needs no network.
//!    - (a) the GETs exactly as the package loop runs them: [`commands::get_run`] on runs
//!      of [`commands::GET_RUN`], with a [`Context`] built here; the Package#2 is parsed
//!      before the clock starts. Reported per GET: wall time, and the whole process's CPU
//!      time (goal ≤ 3 µs; libdmclient's ~19 µs, measured on this machine kind, is printed
//!      beside it as a labelled constant);
//!    - (b) the loop's whole local work per package: [`Package2::parse`], the 10,000
//!      executions, [`Pool::durable`] and serializing Package#3;
//!    - (c) a whole session whose Package#2 is those 10,000 GETs, and (d) the same session
//!      shape with one GET (Package#1, Package#2, Package#3, `END`): its fixed cost. (e) is
//!      10,000 / (c − d): throughput with the network and the devserver's own work on
//!      the extra bytes subtracted as well as they can be. (c) and (d) include the
//!      in-process devserver's CPU time (encoding Package#2, parsing and checking
//!      Package#3, keeping its transcript).
//!
//!    The baseline of (a) and (b) is the same 10,000 reads as one prepared raw-rusqlite
//!    SELECT per leaf on the same file (format, value, writer), without URI parsing,
//!    access checks or MO serialization.
//! 2. Use case B.1, customer-care query of a ~10,000-node device: DevInfo plus three large
//!    instances (5,000, 3,000 and 2,000 nodes). Package#2 GETs each instance root; a
//!    second scenario sends the same GETs with `?cv=<validator>` taken from the first
//!    session's Package#3 (`Data[*].CV`), so every GET answers `304`. Reported: session
//!    wall time (median of 5, alternating the two) and the DM body bytes of one session
//!    (requests + responses, from the devserver transcript's `bytes`; TLS records and HTTP
//!    headers excluded). On the wire: each kind of session again through a TCP relay that
//!    counts the bytes both ways (TLS records, HTTP, DM bodies), on a connection of its own
//!    (the server closes its connections before, as its keep-alive timeout would between
//!    two sessions): the first through the relay (a new origin: full TLS handshake) and
//!    repeats (resumed TLS session; goal <= 1 KB for the ?cv= one), beside `curl` sending
//!    the same requests through the same relay (identity-coded: curl is not asked to
//!    `--compressed`).
//!
//!    Bandwidth (gzip, issue 13): omadmd and the devserver gzip packages and MO data both
//!    ways by default (negotiated with `Accept-Encoding`); both kinds of session are also
//!    run against devservers started with `--no-gzip` (`DevServerConfig::gzip = false`),
//!    and the rows compare the bytes on the wire with and without, and the data session's
//!    wall time (timed with the other two, in turn). And the same results as
//!    OMA DM 1.2 would carry them: the data session's Package#3 rendered here as the SyncML
//!    1.2 message a DM 1.2 client answers `Get ./X?list=StructData` with (SyncHdr; SyncBody
//!    of a Status per command and a Results with one Item per node: Source/LocURI,
//!    Meta/Format and Type, Data; element names of OMA-TS-DM_RepPro-V1_2 and the SyncML
//!    MetInf DTD), counted as a body (not on the wire), plain and gzip-coded, as XML and as
//!    WBXML (an estimate: the same elements with the SyncML and MetInf code-page tokens,
//!    inline strings, the usual header with the public identifier in the string table; DM
//!    1.2 clients commonly send WBXML).
//!
//! A missed target is reported, not a failure; any error exits non-zero.

use std::collections::BTreeMap;
use std::error::Error;
use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use omadmd::authority::{Authority, Principal, Rights};
use omadmd::devserver::{
    DevServer, DevServerConfig, Direction, Relay, RunningServer, Scenario, Wire,
};
use omadmd::protocol::{Command, CommandError, Package2, Package3, Status, alert};
use omadmd::session::commands::{self, Context};
use omadmd::session::exec::ExecHandlers;
use omadmd::session::{Account, Engine, Limits, account};
use omadmd::store::{Bounds, Pool, Store, StoreError};
use omadmd::transport::{GZIP_LEVEL, HttpClient};
use omadmd::tree::builtin;
use omadmd::tree::registry::Registry;
use omadmd::tree::{Node, Value};
use serde_json::{Value as J, json};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

mod common;

/// The device data set, timing and raw-rusqlite baseline shared with the store bench.
mod sqlite {
    crate::sqlite_harness!();
}

use common::{Samples, build, cores, print_table, print_targets_met};
use sqlite::{
    BATCH, Bench, INSTANCES, LEAVES, LeafSelect, MOID, NODES_PER_INSTANCE, create_batch,
    device_batch, leaf_picks, open_raw,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The server's SrvID; it owns the bench instances.
const SRV_ID: &str = "devserver";
const DEV_ID: &str = "urn:uuid:bench-device";

/// GETs in the Package#2 of part 1.
const COMMANDS: usize = 10_000;

/// Part 2's large instances: (MOID, MIID, root name, entries, leaves per entry); each
/// entry is an interior node, so an instance has `entries * (1 + leaves)` nodes.
const CARE_INSTANCES: [(&str, &str, &str, usize, usize); 3] = [
    ("urn:oma:mo:ext-bench-log:1.0", "log", "Log", 250, 19),
    ("urn:oma:mo:ext-bench-apps:1.0", "apps", "Apps", 150, 19),
    ("urn:oma:mo:ext-bench-wifi:1.0", "wifi", "Wifi", 100, 19),
];

/// The goal for one leaf GET in a session (issue: "Performance"), µs.
const GET_GOAL_US: f64 = 3.0;

/// libdmclient's cost per Get, measured on this machine kind; it cannot be built in CI, so
/// it is a labelled constant (µs).
const LIBDMCLIENT_GET_US: f64 = 19.0;

/// Timed sessions per kind (one in the quick mode).
static SESSION_RUNS: LazyLock<usize> = LazyLock::new(|| if quick() { 1 } else { 5 });

/// `OMADMD_BENCH_QUICK=1`: one timed run of everything, to check that every part runs
/// (CI); the figures mean nothing then.
fn quick() -> bool {
    std::env::var("OMADMD_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn main() -> Result<()> {
    let cores = cores();
    println!(
        "omadmd session bench: {cores} cores, SQLite {}, {} build, TLS on loopback, devserver in-process{}",
        rusqlite::version(),
        build(),
        if quick() {
            "; QUICK mode (checks that every part runs; figures not meaningful)"
        } else {
            ""
        }
    );
    println!(
        "columns: ours = the session engine, base = the baseline named in the legend below; \
         median and p99 (nearest rank; with 5-7 runs that is the slowest run); \
         ratio = ours/base (cmds/s: < 1 is slower; ms and bytes: > 1 is more); \
         targets apply to ours (median)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let certs = tempfile::tempdir()?;

    let mut rows = throughput(&rt, certs.path())?;
    rows.extend(customer_care(&rt, certs.path())?);

    print_table(&rows, 40, 7);
    println!("legend:");
    println!(
        "  1a, 1b base: the same 10,000 leaf reads as raw rusqlite prepared SELECTs on the same file"
    );
    println!(
        "  1a: the GETs run as the package loop runs them (commands::get_run on runs of {}, \
         Package#2 parsed beforehand); 1b: Package#2 parse + those runs + the durable wait + Package#3 \
         serialization",
        commands::GET_RUN
    );
    println!(
        "  1a CPU: the whole process's CPU time (every thread) over every 1a run, per GET; base: \
         libdmclient's ~{LIBDMCLIENT_GET_US} µs per Get, measured on this machine kind (it \
         cannot be built in CI): a labelled constant, not run here"
    );
    println!(
        "  1c, 1d: Engine::run wall time of a session (Package#1, Package#2, Package#3, END) with \
         10,000 GETs and with 1 GET; 1e = 10,000 / (1c - 1d)"
    );
    println!(
        "  B.1 ours: GET of every instance root (data sent); base: the same GETs with ?cv= (all 304); \
         bytes = DM bodies of one session, requests + responses, TLS/HTTP overhead excluded"
    );
    println!(
        "  B.1 wire: TCP payload both ways of one session on a new connection (TLS + HTTP + DM \
         bodies); 1st = full TLS handshake, repeat = resumed (p99 column: largest of 3); \
         base: curl sending the same requests (a new process: full handshake; identity-coded)"
    );
    println!(
        "  B.1 session wall gzip vs --no-gzip: the GET all session against a devserver with \
         --no-gzip (loopback: the coding's CPU time shows, the bytes saved do not)"
    );
    println!(
        "  B.1 wire gzip/no-gzip: the same sessions (gzip both ways, negotiated) against a \
         devserver with --no-gzip (identity both ways); 1st and repeat as above"
    );
    println!(
        "  B.1 results: the data session's Package#3 body (DM 2.0 JSON) against the same \
         results as a DM 1.2 SyncML message (XML; WBXML estimated), plain and gzip-coded \
         (flate2 at level {GZIP_LEVEL}, as omadmd codes)"
    );
    println!();
    print_targets_met("session", &rows);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rows and targets

type Row = common::Row<Target>;

enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl common::Target for Target {
    fn met(&self, ours: f64, _base: Option<f64>) -> bool {
        match *self {
            Target::AtLeast(min) => ours >= min,
            Target::AtMost(max) => ours <= max,
        }
    }

    fn label(&self) -> String {
        match *self {
            Target::AtLeast(v) => format!(">= {}", common::num(v)),
            Target::AtMost(v) => format!("<= {}", common::num(v)),
        }
    }
}

impl Row {
    /// A timed operation, in milliseconds.
    fn ms(name: &str, ours: &Samples, base: Option<&Samples>) -> Row {
        Row::timed(name, "ms", 1e-3, ours, base, None)
    }

    /// A rate of `n` commands per call, from the median call (p99: the slowest-rank call).
    fn rate(name: &str, n: usize, ours: &Samples, base: &Samples) -> Row {
        let r = |d: Duration| n as f64 / d.as_secs_f64();
        Row {
            name: name.to_owned(),
            unit: "cmds/s",
            ours: r(ours.median()),
            ours_p99: Some(r(ours.p99())),
            base: Some(r(base.median())),
            base_p99: Some(r(base.p99())),
            target: Some(Target::AtLeast(20_000.0)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client and the server

/// The daemon's side, as `omadmd` wires it: an authority and an engine sharing one pool of
/// connections to the store file (one writer), DevInfo provided.
struct Client {
    auth: Arc<Authority>,
    store: Arc<Pool>,
    engine: Arc<Engine>,
    db: std::path::PathBuf,
    _followups: mpsc::Receiver<omadmd::session::engine::FollowUp>,
    _dir: tempfile::TempDir,
}

impl Client {
    /// `fill` writes the bench data into the store file before the authority opens it.
    fn new(fill: impl FnOnce(&mut Store) -> Result<()>) -> Result<Client> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("store.db");
        fill(&mut Store::open(&db)?)?;
        let store = Arc::new(Pool::open(&db, Bounds::default(), 1)?);
        let auth = Arc::new(Authority::new(
            store.clone(),
            Registry::with_builtin(),
            Box::new(|_| {}),
        ));
        let leaf = |s: &str| Node::Leaf(Value::Chr(s.to_owned()));
        let devinfo = Node::Interior(BTreeMap::from([
            ("DevID".to_owned(), leaf(DEV_ID)),
            ("Man".to_owned(), leaf("ACME")),
            ("Mod".to_owned(), leaf("Bench 3000")),
            ("DmV".to_owned(), leaf("2.0")),
            ("Lang".to_owned(), leaf("en-US")),
        ]));
        auth.provide(builtin::DEVINFO, "0", "DevInfo", &devinfo, Rights::READ)?;
        let (tx, followups) = omadmd::session::engine::follow_up_queue();
        let engine = Arc::new(Engine::new(
            auth.clone(),
            store.clone(),
            DEV_ID.into(),
            Limits::default(),
            ExecHandlers::from_config(&BTreeMap::new())?,
            vec![],
            tx,
        ));
        Ok(Client {
            auth,
            store,
            engine,
            db,
            _followups: followups,
            _dir: dir,
        })
    }

    /// A DM account for the devserver (SrvID `devserver`) at `url`, trusting `ca_pem`,
    /// permitted to manage the MOIDs of both parts (DevInfo is public).
    fn account(&self, url: &str, ca_pem: &str) -> Result<Account> {
        let perm: serde_json::Map<String, J> = std::iter::once(MOID)
            .chain(CARE_INSTANCES.iter().map(|(moid, ..)| *moid))
            .enumerate()
            .map(|(i, moid)| (format!("p{i}"), json!({ "MOID": moid })))
            .collect();
        let modata = json!({"DMAcc": {"SrvID": SRV_ID, "SrvURI": url,
            "Perm": perm, "Ext": {"CACert": ca_pem}}});
        self.auth
            .create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())?;
        account::load_all(&self.auth)?
            .into_iter()
            .find(|a| a.srv_id == SRV_ID)
            .ok_or_else(|| "the DM account did not load".into())
    }

    /// Runs one session to `url`; returns its wall time. Anything but `200` is an error.
    fn session(&self, rt: &Runtime, acc: &Account, url: &str) -> Result<Duration> {
        let start = Instant::now();
        let outcome = rt.block_on(self.engine.run(acc, alert::CLIENT_INITIATED, Some(url)));
        let took = start.elapsed();
        if outcome.status != 200 {
            return Err(format!("session to {url} failed: {outcome:?}").into());
        }
        Ok(took)
    }
}

/// Starts a devserver on a free loopback port with `scenario` (certificates kept in
/// `certs`, so every server has the same CA).
fn start_server(rt: &Runtime, certs: &Path, scenario: &J) -> Result<RunningServer> {
    start_server_coded(rt, certs, scenario, true)
}

/// [`start_server`], with gzip content coding on or off (`--no-gzip`).
fn start_server_coded(
    rt: &Runtime,
    certs: &Path,
    scenario: &J,
    gzip: bool,
) -> Result<RunningServer> {
    let mut config = DevServerConfig::new(certs);
    config.listen = "127.0.0.1:0".parse()?;
    config.scenario = Scenario::parse(&scenario.to_string(), "bench")?;
    config.gzip = gzip;
    Ok(rt.block_on(DevServer::start(config))?)
}

/// Waits until `srv` saw `n` sessions, then checks that it found nothing wrong.
fn check_server(rt: &Runtime, srv: &RunningServer, n: usize) -> Result<()> {
    rt.block_on(srv.wait_for_sessions(n));
    let failures = srv.failures();
    if !failures.is_empty() {
        return Err(format!("the devserver reports: {failures:?}").into());
    }
    Ok(())
}

/// A one-package scenario: `commands`, each expected to answer `sc` (the server then sends
/// `END` in a package of its own, so Package#3 comes back).
fn scenario(name: &str, commands: &[J], sc: u16) -> J {
    json!({"name": name, "packages": [{"commands": commands, "expect": vec![sc; commands.len()]}]})
}

// ---------------------------------------------------------------------------------------
// 1. Command throughput (on the small instances of [`sqlite::device_node`])

fn fill_devices(store: &mut Store) -> Result<()> {
    let owner = Principal::Server(SRV_ID.into()).to_string();
    for first in (0..INSTANCES).step_by(BATCH) {
        create_batch(store, &device_batch(first), &owner)?;
    }
    let stats = store.stats()?;
    if stats.nodes != (INSTANCES * NODES_PER_INSTANCE) as u64 {
        return Err(format!("the store holds {} nodes, expected 100,000", stats.nodes).into());
    }
    Ok(())
}

fn throughput(rt: &Runtime, certs: &Path) -> Result<Vec<Row>> {
    let start = Instant::now();
    let client = Client::new(fill_devices)?;
    println!(
        "part 1: store of {} nodes built in {:.1} s",
        INSTANCES * NODES_PER_INSTANCE,
        start.elapsed().as_secs_f64()
    );

    let picks = leaf_picks(7, COMMANDS, LEAVES);
    let gets: Vec<J> = picks
        .iter()
        .map(|(m, g, l)| json!(["GET", format!("{MOID}/{m}/{g}/{l}")]))
        .collect();
    let body = serde_json::to_vec(&json!({ "CMD": gets }))?;

    // Servers: the 10,000 GETs, and the same session shape with one GET.
    let big = start_server(rt, certs, &scenario("10k-gets", &gets, 200))?;
    let one = start_server(rt, certs, &scenario("1-get", &gets[..1], 200))?;
    let acc = client.account(big.url(), big.ca_pem())?;

    // (a), (b): the engine's code path, without the network.
    let http = Arc::new(HttpClient::new(
        acc.client_settings(&[], Limits::default().max_package_bytes),
    )?);
    let principal = Principal::Server(SRV_ID.into());
    let ctx = Context {
        engine: &client.engine,
        client: &http,
        account: &acc,
        principal: &principal,
        deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(3600),
        shown: false,
    };
    let raw = open_raw(&client.db)?;
    let mut leaves = LeafSelect::prepare(&raw)?;
    let mut base = |_| {
        for pick in &picks {
            let row = leaves.read(pick)?;
            black_box(row);
        }
        Ok(())
    };
    let bench = Bench {
        warmup: 1,
        iters: if quick() { 1 } else { 7 },
    };

    let mut parsed: Vec<Package2> = (0..bench.warmup + bench.iters)
        .map(|_| Package2::parse(&body))
        .collect::<std::result::Result<_, _>>()?;
    let ours_cpu = std::cell::Cell::new(Duration::ZERO);
    let (exec_ours, exec_base) = bench.compare(
        |i| {
            let cmds = std::mem::take(&mut parsed[i].commands);
            let before = cpu_time();
            let statuses = rt.block_on(run_gets(&ctx, cmds))?;
            ours_cpu.set(ours_cpu.get() + cpu_time().saturating_sub(before));
            all_ok(statuses.iter().map(|s| s.sc))?;
            black_box(statuses);
            Ok(())
        },
        &mut base,
    )?;
    let runs = (bench.warmup + bench.iters) as u32 * COMMANDS as u32;
    let get_cpu = ours_cpu.get() / runs;

    let (pkg_ours, pkg_base) = bench.compare(
        |_| {
            let package3 = rt.block_on(async {
                let package2 = Package2::parse(&body)?;
                let statuses = run_gets(&ctx, package2.commands).await?;
                client.store.durable().await?;
                let package3 = Package3 {
                    status: statuses,
                    alert: vec![],
                };
                let bytes = serde_json::to_vec(&package3)?;
                Ok::<_, Box<dyn Error>>((package3, bytes))
            })?;
            all_ok(package3.0.status.iter().map(|s| s.sc))?;
            black_box(package3);
            Ok(())
        },
        &mut base,
    )?;

    // (c), (d): whole sessions, alternating; one untimed session each first (the very
    // first session with a server also lists every readable instance in Package#1).
    let (mut whole, mut fixed) = (Vec::new(), Vec::new());
    for run in 0..=*SESSION_RUNS {
        let t_big = client.session(rt, &acc, big.url())?;
        let t_one = client.session(rt, &acc, one.url())?;
        if run > 0 {
            whole.push(t_big);
            fixed.push(t_one);
        }
    }
    check_server(rt, &big, *SESSION_RUNS + 1)?;
    check_server(rt, &one, *SESSION_RUNS + 1)?;
    let statuses: usize = big.results().iter().map(|o| o.statuses.len()).sum();
    if statuses != *SESSION_RUNS + 1 {
        return Err(
            format!("expected one Package#3 per session, the server saw {statuses}").into(),
        );
    }
    println!(
        "part 1: DM body bytes of one session: {} with 10,000 GETs, {} with 1 GET",
        session_bytes(&big, 2),
        session_bytes(&one, 2)
    );
    rt.block_on(big.shutdown());
    rt.block_on(one.shutdown());
    let (whole, fixed) = (Samples::new(whole), Samples::new(fixed));
    let net = whole.median().saturating_sub(fixed.median());

    let per_get = |d: Duration| d.as_secs_f64() * 1e6 / COMMANDS as f64;
    let floor = per_get(exec_base.median());
    println!(
        "part 1: the store's floor: raw rusqlite, one prepared SELECT per leaf (no URI, no \
         access check, no serialization), {floor:.2} µs per read on one thread; the \
         {GET_GOAL_US} µs goal for a whole GET is {} it in this run",
        if floor > GET_GOAL_US {
            "below"
        } else {
            "above"
        },
    );
    Ok(vec![
        Row {
            name: "1a. one leaf GET (wall, per command)".into(),
            unit: "µs",
            ours: per_get(exec_ours.median()),
            ours_p99: Some(per_get(exec_ours.p99())),
            base: Some(per_get(exec_base.median())),
            base_p99: Some(per_get(exec_base.p99())),
            target: Some(Target::AtMost(GET_GOAL_US)),
        },
        Row {
            name: "1a. one leaf GET (CPU, whole process)".into(),
            unit: "µs",
            ours: get_cpu.as_secs_f64() * 1e6,
            ours_p99: None,
            base: Some(LIBDMCLIENT_GET_US),
            base_p99: None,
            target: Some(Target::AtMost(GET_GOAL_US)),
        },
        Row::rate(
            "1a. 10k leaf GETs: execute",
            COMMANDS,
            &exec_ours,
            &exec_base,
        ),
        Row::rate(
            "1b. 10k GETs: parse+execute+sync+P#3",
            COMMANDS,
            &pkg_ours,
            &pkg_base,
        ),
        Row::ms("1c. session with 10k GETs (TLS)", &whole, None),
        Row::ms("1d. session with 1 GET (fixed cost)", &fixed, None),
        Row {
            name: "1e. 10k / (1c - 1d)".into(),
            unit: "cmds/s",
            ours: COMMANDS as f64 / net.as_secs_f64().max(1e-9),
            ours_p99: None,
            base: None,
            base_p99: None,
            target: None,
        },
    ])
}

/// Runs a Package#2 of GETs as the package loop does: runs of up to
/// [`commands::GET_RUN`] GETs, each run one store job.
async fn run_gets(
    ctx: &Context<'_>,
    cmds: Vec<std::result::Result<Command, CommandError>>,
) -> Result<Vec<Status>> {
    let mut uris = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        match cmd? {
            Command::Get { client_uri } => uris.push(client_uri),
            other => return Err(format!("part 1 sends only GETs, not {}", other.name()).into()),
        }
    }
    let mut statuses = Vec::with_capacity(uris.len());
    for run in uris.chunks(commands::GET_RUN) {
        statuses.extend(commands::get_run(ctx, run.to_vec()).await);
    }
    Ok(statuses)
}

/// CPU time used so far by the whole process (every thread), user and system.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes only into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn all_ok(codes: impl Iterator<Item = u16>) -> Result<()> {
    let mut n = 0;
    for sc in codes {
        if sc != 200 {
            return Err(format!("command {n} answered {sc}, expected 200").into());
        }
        n += 1;
    }
    if n != COMMANDS {
        return Err(format!("{n} statuses for {COMMANDS} commands").into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Use case B.1: customer-care query of a 10,000-node device

/// A large instance: `entries` interior nodes `E000`.. of `leaves` leaves `F00`..,
/// alternating realistic text and numbers.
fn care_node(root: &str, entries: usize, leaves: usize) -> Node {
    let entries = (0..entries).map(|e| {
        let fields = (0..leaves).map(|f| {
            let value = if f % 3 == 2 {
                Value::Int((e * 1_000 + f) as i64 * 7_919)
            } else {
                Value::Chr(format!("{root} entry {e:03} field {f:02}: ok"))
            };
            (format!("F{f:02}"), Node::Leaf(value))
        });
        (format!("E{e:03}"), Node::Interior(fields.collect()))
    });
    Node::Interior(entries.collect())
}

fn fill_care(store: &mut Store) -> Result<()> {
    let owner = Principal::Server(SRV_ID.into()).to_string();
    store.write(|tx| {
        for (moid, miid, root, entries, leaves) in CARE_INSTANCES {
            tx.create_instance(
                moid,
                Some(miid),
                root,
                &care_node(root, entries, leaves),
                &owner,
            )?;
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(())
}

/// The URIs the customer-care server reads: DevInfo and each large instance root.
fn care_uris() -> Vec<String> {
    let mut uris = vec![format!("{}//", builtin::DEVINFO)];
    uris.extend(
        CARE_INSTANCES
            .iter()
            .map(|(moid, miid, ..)| format!("{moid}/{miid}/")),
    );
    uris
}

/// The DM body bytes (requests and responses) of session `n` of `srv`.
fn session_bytes(srv: &RunningServer, n: u64) -> usize {
    srv.transcript()
        .iter()
        .filter(|r| r.session == n)
        .map(|r| r.bytes)
        .sum()
}

fn customer_care(rt: &Runtime, certs: &Path) -> Result<Vec<Row>> {
    let client = Client::new(fill_care)?;
    let nodes = client
        .auth
        .read_internal(&omadmd::tree::uri::NodeAddr::root(builtin::DEVINFO, "0"))?;
    let device_nodes = nodes.count() - 1
        + CARE_INSTANCES
            .iter()
            .map(|(.., e, l)| e * (1 + l))
            .sum::<usize>();
    println!("part 2: device state of {device_nodes} nodes (DevInfo + 3 instances)");

    let uris = care_uris();
    let gets: Vec<J> = uris.iter().map(|u| json!(["GET", u])).collect();
    let data = start_server(rt, certs, &scenario("care-data", &gets, 200))?;
    let acc = client.account(data.url(), data.ca_pem())?;

    // The first session (untimed: it also lists the instances in Package#1) gives the
    // validators.
    client.session(rt, &acc, data.url())?;
    check_server(rt, &data, 1)?;
    let package3 = data
        .transcript()
        .into_iter()
        .find(|r| r.session == 1 && r.direction == Direction::In && r.kind == "package#3")
        .and_then(|r| r.body)
        .ok_or("no Package#3 in the first session")?;
    let cvs: Vec<String> = (0..uris.len())
        .map(|i| {
            package3["Status"][i]["Data"][0]["CV"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no Data[0].CV in Package#3 status {i}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let cv_gets: Vec<J> = uris
        .iter()
        .zip(&cvs)
        .map(|(u, cv)| json!(["GET", format!("{u}?cv={cv}")]))
        .collect();
    let cached = start_server(rt, certs, &scenario("care-cv", &cv_gets, 304))?;
    let data_plain = start_server_coded(rt, certs, &scenario("care-data", &gets, 200), false)?;
    let cached_plain = start_server_coded(rt, certs, &scenario("care-cv", &cv_gets, 304), false)?;

    let (mut with_data, mut with_cv, mut identity) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=*SESSION_RUNS {
        let t_data = client.session(rt, &acc, data.url())?;
        let t_cv = client.session(rt, &acc, cached.url())?;
        let t_identity = client.session(rt, &acc, data_plain.url())?;
        if run > 0 {
            with_data.push(t_data);
            with_cv.push(t_cv);
            identity.push(t_identity);
        }
    }
    check_server(rt, &data, *SESSION_RUNS + 2)?;
    check_server(rt, &cached, *SESSION_RUNS + 1)?;
    check_server(rt, &data_plain, *SESSION_RUNS + 1)?;
    let bytes_data = session_bytes(&data, 2);
    let bytes_cv = session_bytes(&cached, 1);
    let (mut wire_rows, coded) =
        on_the_wire(rt, &client, &acc, &[(&data, "GET all"), (&cached, "?cv=")])?;
    // The same against --no-gzip servers: their figures go into the gzip/no-gzip rows only.
    let (_, plain) = on_the_wire(
        rt,
        &client,
        &acc,
        &[
            (&data_plain, "GET all --no-gzip"),
            (&cached_plain, "?cv= --no-gzip"),
        ],
    )?;
    for (label, coded, plain) in [
        ("GET all", &coded[0], &plain[0]),
        ("?cv=", &coded[1], &plain[1]),
    ] {
        for (what, ours, base) in [
            ("1st", coded.first, plain.first),
            ("repeat", coded.repeat, plain.repeat),
        ] {
            wire_rows.push(Row {
                name: format!("B.1 wire {label}: gzip/no-gzip, {what}"),
                unit: "bytes",
                ours: ours as f64,
                ours_p99: None,
                base: Some(base as f64),
                base_p99: None,
                target: None,
            });
        }
    }
    wire_rows.extend(dm12_comparison(&package3, data.url())?);
    for srv in [data, cached, data_plain, cached_plain] {
        rt.block_on(srv.shutdown());
    }

    let with_data = Samples::new(with_data);
    let mut rows = vec![
        Row::ms(
            "B.1 session wall: GET all vs ?cv=",
            &with_data,
            Some(&Samples::new(with_cv)),
        ),
        Row::ms(
            "B.1 session wall: gzip vs --no-gzip",
            &with_data,
            Some(&Samples::new(identity)),
        ),
        Row {
            name: "B.1 DM body bytes: GET all vs ?cv=".into(),
            unit: "bytes",
            ours: bytes_data as f64,
            ours_p99: None,
            base: Some(bytes_cv as f64),
            base_p99: None,
            target: None,
        },
    ];
    rows.append(&mut wire_rows);
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// 2, on the wire: TCP payload both ways (TLS records, HTTP, DM bodies)

/// Repeat sessions measured per kind (the row shows the median and the largest).
const WIRE_REPEATS: usize = 3;

/// The goal for a repeat cache-validated B.1 session on the wire.
const WIRE_GOAL: f64 = 1024.0;

/// One session measured on a relay: what it carried and how its TLS handshakes went.
struct WireSession {
    wire: Wire,
    full: usize,
    resumed: usize,
}

/// Runs one session through `relay` (in front of `srv`) on a connection of its own — the
/// server first closes its connections, as its keep-alive timeout would in the hours
/// between two sessions — and closes it afterwards, so that the count holds everything:
/// TCP payload both ways from the TLS handshake to the closing alerts.
fn wire_session(
    rt: &Runtime,
    client: &Client,
    acc: &Account,
    srv: &RunningServer,
    relay: &Relay,
) -> Result<WireSession> {
    rt.block_on(srv.close_connections());
    let (before, shook) = (relay.wire(), srv.handshakes());
    client.session(rt, acc, &format!("https://{}/dm", relay.addr()))?;
    rt.block_on(async {
        srv.close_connections().await;
        relay.closed().await;
    });
    let after = srv.handshakes();
    Ok(WireSession {
        wire: relay.wire().since(before),
        full: after.full - shook.full,
        resumed: after.resumed - shook.resumed,
    })
}

/// The TLS part of a resumed session on its own: a rustls client (ring, ALPN and RFC 9149
/// ticket request as omadmd's) connects to `srv` through `relay` twice with one configuration, the second time resuming
/// the first connection's session, and closes each at once (`close_notify`), sending no
/// data. The bytes both ways of the resumed connection.
fn resumed_handshake_bytes(rt: &Runtime, srv: &RunningServer, relay: &Relay) -> Result<u64> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::AsyncReadExt as _;
    use tokio::io::AsyncWriteExt as _;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(srv.ca_pem().as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What omadmd's client sends too (src/transport/tls.rs).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.send_ticket_request = Some(rustls::client::TicketRequest {
        new_session_count: 1,
        resumption_count: 1,
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(relay.addr().ip().into());
    rt.block_on(async {
        let mut resumed = 0;
        for round in 0..2 {
            srv.close_connections().await;
            let (before, shook) = (relay.wire(), srv.handshakes());
            let tcp = tokio::net::TcpStream::connect(relay.addr()).await?;
            let mut tls = connector.connect(name.clone(), tcp).await?;
            tls.shutdown().await?;
            // The server's session tickets and its close_notify: read to the end, so the
            // next connection can resume.
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await?;
            drop(tls);
            relay.closed().await;
            resumed = relay.wire().since(before).total();
            if round == 1 && srv.handshakes().resumed != shook.resumed + 1 {
                return Err("the second handshake-only connection did not resume".into());
            }
        }
        Ok::<_, Box<dyn Error>>(resumed)
    })
}

/// curl sending the requests of session `n` of `srv` (same bodies, same `Content-Type`,
/// `Accept` and `OMADM-DevID`) on one connection through `relay`, measured like
/// [`wire_session`]; a new curl process has no TLS session to resume, so its handshake is
/// full. `None` when curl is not installed.
fn curl_session(rt: &Runtime, srv: &RunningServer, relay: &Relay, n: u64) -> Result<Option<Wire>> {
    let url = format!("https://{}/dm", relay.addr());
    let bodies = tempfile::tempdir()?;
    let mut curl = std::process::Command::new("curl");
    let requests = srv
        .transcript()
        .into_iter()
        .filter(|r| r.session == n && r.direction == Direction::In);
    for (i, r) in requests.enumerate() {
        let body = match &r.body {
            Some(json) => serde_json::to_vec(json)?,
            None => Vec::new(),
        };
        if body.len() != r.bytes {
            return Err(format!("request {i} of session {n}: its body does not re-encode").into());
        }
        let file = bodies.path().join(format!("{i}.json"));
        std::fs::write(&file, &body)?;
        if i > 0 {
            curl.arg("--next");
        }
        curl.args(["--http1.1", "--silent", "--show-error", "--fail"])
            .args(["--output", "/dev/null", "--cacert"])
            .arg(&srv.certificates().ca_path)
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .args(["-H", "Expect:"]);
        for name in ["content-type", "accept", "omadm-devid"] {
            if let Some(value) = r.headers.get(name) {
                curl.arg("-H").arg(format!("{name}: {value}"));
            }
        }
        curl.arg(&url);
    }
    rt.block_on(srv.close_connections());
    let before = relay.wire();
    let status = match curl.status() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        status => status?,
    };
    if !status.success() {
        return Err(format!("curl replaying session {n}: {status}").into());
    }
    rt.block_on(relay.closed());
    Ok(Some(relay.wire().since(before)))
}

/// The bytes on the wire of one B.1 session kind: its first session and the median repeat.
struct WireTotals {
    first: u64,
    repeat: u64,
}

/// For each B.1 session kind (`servers`: its server and label), the bytes on the wire of
/// a first session (full TLS handshake) and of repeat sessions (resumed), beside curl
/// sending the first one's requests: the rows, and the totals in the order of `servers`.
/// The sessions go through a relay of their own, a new origin for the account's client:
/// its first session there has no TLS session to resume (nor knows whether the server
/// reads gzip-coded requests).
fn on_the_wire(
    rt: &Runtime,
    client: &Client,
    acc: &Account,
    servers: &[(&RunningServer, &str)],
) -> Result<(Vec<Row>, Vec<WireTotals>)> {
    let mut rows = Vec::new();
    let mut totals = Vec::new();
    println!(
        "part 2, on the wire (TCP payload both ways through a counting relay: TLS records, \
         HTTP, DM bodies; from the handshake to the closing alerts):"
    );
    for &(srv, label) in servers {
        let relay = rt.block_on(Relay::start(srv.addr()))?;
        let done = srv.finished_sessions();
        let first = wire_session(rt, client, acc, srv, &relay)?;
        let mut repeats = (0..WIRE_REPEATS)
            .map(|_| wire_session(rt, client, acc, srv, &relay))
            .collect::<Result<Vec<_>>>()?;
        check_server(rt, srv, done + 1 + WIRE_REPEATS)?;
        let curl = curl_session(rt, srv, &relay, (done + 1) as u64)?;
        if curl.is_some() {
            check_server(rt, srv, done + 2 + WIRE_REPEATS)?;
        }
        repeats.sort_by_key(|r| r.wire.total());
        let median = &repeats[WIRE_REPEATS / 2];
        let largest = &repeats[WIRE_REPEATS - 1];
        let resumed = repeats.iter().all(|r| r.full == 0 && r.resumed == 1);
        let dm = session_bytes(srv, (done + 1) as u64);
        let show = |w: &Wire| {
            format!(
                "{} B (up {}, down {}, {} connection(s))",
                common::group(&w.total().to_string()),
                common::group(&w.up.to_string()),
                common::group(&w.down.to_string()),
                w.connections
            )
        };
        println!(
            "  B.1 {label}: DM bodies {} B; first session {} with {} full / {} resumed \
             handshake(s); repeat (median of {WIRE_REPEATS}) {}{}",
            common::group(&dm.to_string()),
            show(&first.wire),
            first.full,
            first.resumed,
            show(&median.wire),
            if resumed {
                ", every repeat resumed".to_owned()
            } else {
                format!(
                    ", NOT every repeat resumed: {:?}",
                    repeats
                        .iter()
                        .map(|r| (r.full, r.resumed))
                        .collect::<Vec<_>>()
                )
            },
        );
        match &curl {
            Some(w) => println!("  B.1 {label}: curl, the same requests: {}", show(w)),
            None => println!("  B.1 {label}: curl is not installed: no baseline"),
        }
        let handshake = resumed_handshake_bytes(rt, srv, &relay)?;
        println!(
            "  B.1 {label}: of the repeat's {} B, {} B are DM bodies; the rest is TLS and \
             HTTP/1.1 headers. A resumed TLS handshake alone, nothing sent, closed at once \
             (rustls with ring, through the same relay): {} B; with the DM bodies {} B, \
             before any HTTP header or record framing",
            common::group(&median.wire.total().to_string()),
            common::group(&dm.to_string()),
            common::group(&handshake.to_string()),
            common::group(&(handshake + dm as u64).to_string()),
        );
        let base = curl.map(|w| w.total() as f64);
        let goal = (label == "?cv=").then_some(Target::AtMost(WIRE_GOAL));
        totals.push(WireTotals {
            first: first.wire.total(),
            repeat: median.wire.total(),
        });
        rows.push(Row {
            name: format!("B.1 wire {label}: 1st (full TLS) vs curl"),
            unit: "bytes",
            ours: first.wire.total() as f64,
            ours_p99: None,
            base,
            base_p99: None,
            target: None,
        });
        rows.push(Row {
            name: format!(
                "B.1 wire {label}: repeat ({}) vs curl",
                if resumed { "resumed" } else { "NOT resumed" }
            ),
            unit: "bytes",
            ours: median.wire.total() as f64,
            ours_p99: Some(largest.wire.total() as f64),
            base,
            base_p99: None,
            target: goal,
        });
    }
    Ok((rows, totals))
}

// ---------------------------------------------------------------------------------------
// 2, as OMA DM 1.2 would send it: the same results as a SyncML 1.2 message

/// `data` gzip-coded as omadmd codes bodies (flate2 at [`GZIP_LEVEL`]).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL));
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

/// The data session's Package#3 (`p3`, as the devserver received it) against the same
/// results in a DM 1.2 SyncML message: body sizes, plain and gzip-coded.
fn dm12_comparison(p3: &J, server_url: &str) -> Result<Vec<Row>> {
    let json = serde_json::to_vec(p3)?;
    let message = syncml_results(p3, server_url)?;
    let xml = message.xml().into_bytes();
    let wbxml = message.wbxml();
    let (json_gz, xml_gz, wbxml_gz) = (gzip(&json)?, gzip(&xml)?, gzip(&wbxml)?);
    let size = |b: &[u8]| common::group(&b.len().to_string());
    println!(
        "part 2, the data session's results as a body: DM 2.0 Package#3 (JSON) {} B, gzip {} B; \
         as OMA DM 1.2 would send them (SyncML 1.2, Results of Get ?list=StructData, {} Items): \
         XML {} B, gzip {} B; WBXML (estimate) {} B, gzip {} B",
        size(&json),
        size(&json_gz),
        message.count("Item"),
        size(&xml),
        size(&xml_gz),
        size(&wbxml),
        size(&wbxml_gz),
    );
    let row = |name: &str, ours: &[u8], base: &[u8]| Row {
        name: name.to_owned(),
        unit: "bytes",
        ours: ours.len() as f64,
        ours_p99: None,
        base: Some(base.len() as f64),
        base_p99: None,
        target: None,
    };
    Ok(vec![
        row("B.1 results: JSON vs DM 1.2 XML", &json, &xml),
        row("B.1 results, gzip: JSON vs DM 1.2 XML", &json_gz, &xml_gz),
        row("B.1 results: JSON vs DM 1.2 WBXML (est.)", &json, &wbxml),
        row(
            "B.1 results, gzip: JSON vs WBXML (est.)",
            &json_gz,
            &wbxml_gz,
        ),
        row("B.1 results: JSON gzip vs DM 1.2 WBXML", &json_gz, &wbxml),
    ])
}

/// One element of a SyncML message: its name, its code page (0: SyncML, 1: MetInf, whose
/// elements carry `xmlns="syncml:metinf"` in XML) and its content.
struct El {
    name: &'static str,
    page: u8,
    content: Content,
}

enum Content {
    Empty,
    Text(String),
    Children(Vec<El>),
}

fn el(name: &'static str, children: Vec<El>) -> El {
    El {
        name,
        page: 0,
        content: Content::Children(children),
    }
}

fn text(name: &'static str, value: impl Into<String>) -> El {
    El {
        name,
        page: 0,
        content: Content::Text(value.into()),
    }
}

fn metinf(name: &'static str, value: &str) -> El {
    El {
        page: 1,
        ..text(name, value)
    }
}

/// `<Target>`/`<Source>` with a `<LocURI>`.
fn located(name: &'static str, uri: &str) -> El {
    el(name, vec![text("LocURI", uri)])
}

/// The SyncML 1.2 message a DM 1.2 client sends back for `p3`'s results: the SyncHdr, a
/// Status for the server's SyncHdr, then per command a Status and (with data) a Results of
/// the Get `./<root>?list=StructData` with one Item per node, interior nodes included
/// (Format `node`), leaves with Format, Type and Data; Final.
fn syncml_results(p3: &J, server_url: &str) -> Result<El> {
    let statuses = p3["Status"]
        .as_array()
        .ok_or("Package#3 without a Status array")?;
    let mut body = vec![el(
        "Status",
        vec![
            text("CmdID", "1"),
            text("MsgRef", "1"),
            text("CmdRef", "0"),
            text("Cmd", "SyncHdr"),
            text("TargetRef", DEV_ID),
            text("SourceRef", server_url),
            text("Data", "212"),
        ],
    )];
    let mut cmd_id = 2;
    for (i, status) in statuses.iter().enumerate() {
        let cmd_ref = (i + 2).to_string();
        let mut items = Vec::new();
        let mut roots = Vec::new();
        for item in status["Data"].as_array().into_iter().flatten() {
            let data = item["MOData"]
                .as_object()
                .ok_or("a Data item without MOData")?;
            for (name, node) in data {
                roots.push(name.clone());
                node_items(&format!("./{name}"), node, &mut items);
            }
        }
        let target = format!("./{}?list=StructData", roots.join(","));
        body.push(el(
            "Status",
            vec![
                text("CmdID", cmd_id.to_string()),
                text("MsgRef", "1"),
                text("CmdRef", cmd_ref.clone()),
                text("Cmd", "Get"),
                text("TargetRef", target),
                text("Data", status["sc"].to_string()),
            ],
        ));
        cmd_id += 1;
        if !items.is_empty() {
            let mut results = vec![
                text("CmdID", cmd_id.to_string()),
                text("MsgRef", "1"),
                text("CmdRef", cmd_ref),
            ];
            results.extend(items);
            body.push(el("Results", results));
            cmd_id += 1;
        }
    }
    body.push(El {
        name: "Final",
        page: 0,
        content: Content::Empty,
    });
    Ok(El {
        name: "SyncML",
        page: 0,
        content: Content::Children(vec![
            el(
                "SyncHdr",
                vec![
                    text("VerDTD", "1.2"),
                    text("VerProto", "DM/1.2"),
                    text("SessionID", "1"),
                    text("MsgID", "2"),
                    located("Target", server_url),
                    located("Source", DEV_ID),
                ],
            ),
            el("SyncBody", body),
        ]),
    })
}

/// The Items of the node at `path` and every node below it.
fn node_items(path: &str, node: &J, out: &mut Vec<El>) {
    let (format, data) = match node {
        J::Object(children) => {
            out.push(el(
                "Item",
                vec![
                    located("Source", path),
                    el("Meta", vec![metinf("Format", "node")]),
                ],
            ));
            for (name, child) in children {
                node_items(&format!("{path}/{name}"), child, out);
            }
            return;
        }
        J::String(s) => ("chr", s.clone()),
        J::Bool(b) => ("bool", b.to_string()),
        J::Number(n) if n.is_i64() || n.is_u64() => ("int", n.to_string()),
        other => ("chr", other.to_string()),
    };
    out.push(el(
        "Item",
        vec![
            located("Source", path),
            el(
                "Meta",
                vec![metinf("Format", format), metinf("Type", "text/plain")],
            ),
            text("Data", data),
        ],
    ));
}

impl El {
    /// How many elements named `name` the message holds.
    fn count(&self, name: &str) -> usize {
        let own = usize::from(self.name == name);
        match &self.content {
            Content::Children(children) => {
                own + children.iter().map(|c| c.count(name)).sum::<usize>()
            }
            _ => own,
        }
    }

    /// The message as XML (UTF-8, no indentation, as clients send it).
    fn xml(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        self.write_xml(&mut out);
        out
    }

    fn write_xml(&self, out: &mut String) {
        let ns = match (self.name, self.page) {
            ("SyncML", _) => " xmlns=\"SYNCML:SYNCML1.2\"",
            (_, 1) => " xmlns=\"syncml:metinf\"",
            _ => "",
        };
        match &self.content {
            Content::Empty => out.push_str(&format!("<{}{ns}/>", self.name)),
            Content::Text(t) => {
                let escaped = t
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;");
                out.push_str(&format!("<{}{ns}>{escaped}</{}>", self.name, self.name));
            }
            Content::Children(children) => {
                out.push_str(&format!("<{}{ns}>", self.name));
                for c in children {
                    c.write_xml(out);
                }
                out.push_str(&format!("</{}>", self.name));
            }
        }
    }

    /// The message as WBXML 1.2 (an estimate of what a DM 1.2 client sends): the public
    /// identifier `-//SYNCML//DTD SyncML 1.2//EN` in the string table, UTF-8, a token per
    /// element from the SyncML (page 0) and MetInf (page 1) code pages, a page switch
    /// around MetInf elements, text as inline strings, an END per element with content.
    fn wbxml(&self) -> Vec<u8> {
        const PUBLIC_ID: &[u8] = b"-//SYNCML//DTD SyncML 1.2//EN";
        let mut out = vec![0x02, 0x00, 0x00, 0x6a, PUBLIC_ID.len() as u8];
        out.extend_from_slice(PUBLIC_ID);
        let mut page = 0;
        self.write_wbxml(&mut out, &mut page);
        out
    }

    fn write_wbxml(&self, out: &mut Vec<u8>, page: &mut u8) {
        const SWITCH_PAGE: u8 = 0x00;
        const END: u8 = 0x01;
        const STR_I: u8 = 0x03;
        const CONTENT: u8 = 0x40;
        if self.page != *page {
            out.extend_from_slice(&[SWITCH_PAGE, self.page]);
            *page = self.page;
        }
        let token = wbxml_token(self.name);
        match &self.content {
            Content::Empty => out.push(token),
            Content::Text(t) => {
                out.extend_from_slice(&[token | CONTENT, STR_I]);
                out.extend_from_slice(t.as_bytes());
                out.extend_from_slice(&[0x00, END]);
            }
            Content::Children(children) => {
                out.push(token | CONTENT);
                for c in children {
                    c.write_wbxml(out, page);
                }
                out.push(END);
            }
        }
    }
}

/// The WBXML token of a SyncML (code page 0) or MetInf (code page 1) element used here.
fn wbxml_token(name: &str) -> u8 {
    match name {
        "Cmd" => 0x0a,
        "CmdID" => 0x0b,
        "CmdRef" => 0x0c,
        "Data" => 0x0f,
        "Final" => 0x12,
        "Item" => 0x14,
        "LocURI" => 0x17,
        "Meta" => 0x1a,
        "MsgID" => 0x1b,
        "MsgRef" => 0x1c,
        "Results" => 0x22,
        "SessionID" => 0x25,
        "Source" => 0x27,
        "SourceRef" => 0x28,
        "Status" => 0x29,
        "SyncBody" => 0x2b,
        "SyncHdr" => 0x2c,
        "SyncML" => 0x2d,
        "Target" => 0x2e,
        "TargetRef" => 0x2f,
        "VerDTD" => 0x31,
        "VerProto" => 0x32,
        // MetInf
        "Format" => 0x07,
        "Type" => 0x13,
        _ => 0x05,
    }
}
