//! Session benchmark: how fast the DM session engine runs the commands of a Package#2, and
//! what a customer-care query of a whole device costs with and without cache validators.
//!
//! Run it with `cargo bench --bench session` (release build; well under two minutes).
//!
//! Everything is real: the engine ([`Engine`]) with a SQLite store file in a temporary
//! directory, and `omadm-devserver` started in-process on loopback, TLS included. The DM
//! account trusts the devserver's test CA (`Ext/CACert`).
//!
//! 1. Command throughput. A store of 1,000 instances of 100 nodes (a root with 10 groups
//!    `G0`..`G9` of 9 leaves `L0`..`L8`, chr and int), 100,000 nodes, owned by the server.
//!    One Package#2 holds 10,000 GETs of single leaves picked at random (fixed seed) across
//!    the 1,000 instances; GET is the command a DM server sends most and needs no network.
//!    - (a) [`commands::execute`] on each command, exactly as the package loop calls it,
//!      with a [`Context`] built here; the Package#2 is parsed before the clock starts;
//!    - (b) the loop's whole local work per package: [`Package2::parse`], the 10,000
//!      executions, [`Authority::sync`] and serializing Package#3;
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
//!    headers excluded).
//!
//! A missed target is reported, not a failure; any error exits non-zero.

use std::collections::BTreeMap;
use std::error::Error;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omadmd::authority::{Authority, Principal, Rights};
use omadmd::devserver::{DevServer, DevServerConfig, Direction, RunningServer, Scenario};
use omadmd::protocol::{Package2, Package3, alert};
use omadmd::session::commands::{self, Context};
use omadmd::session::exec::ExecHandlers;
use omadmd::session::{Account, Engine, Limits, account};
use omadmd::store::{Bounds, Pool, Store, StoreError};
use omadmd::transport::HttpClient;
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

/// Timed sessions per kind.
const SESSION_RUNS: usize = 5;

fn main() -> Result<()> {
    let cores = cores();
    println!(
        "omadmd session bench: {cores} cores, SQLite {}, {} build, TLS on loopback, devserver in-process",
        rusqlite::version(),
        build()
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
        "  1a: commands::execute only (Package#2 parsed beforehand); 1b: Package#2 parse + execute + \
         Authority::sync + Package#3 serialization"
    );
    println!(
        "  1c, 1d: Engine::run wall time of a session (Package#1, Package#2, Package#3, END) with \
         10,000 GETs and with 1 GET; 1e = 10,000 / (1c - 1d)"
    );
    println!(
        "  B.1 ours: GET of every instance root (data sent); base: the same GETs with ?cv= (all 304); \
         bytes = DM bodies of one session, requests + responses, TLS/HTTP overhead excluded"
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
}

impl common::Target for Target {
    fn met(&self, ours: f64, _base: Option<f64>) -> bool {
        let Target::AtLeast(min) = *self;
        ours >= min
    }

    fn label(&self) -> String {
        let Target::AtLeast(v) = *self;
        format!(">= {}", common::num(v))
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

    /// A DM account for the devserver (SrvID `devserver`) at `url`, trusting `ca_pem`.
    fn account(&self, url: &str, ca_pem: &str) -> Result<Account> {
        let modata = json!({"DMAcc": {"SrvID": SRV_ID, "SrvURI": url,
            "Perm": {"p0": {"MOID": MOID}}, "Ext": {"CACert": ca_pem}}});
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
    let mut config = DevServerConfig::new(certs);
    config.listen = "127.0.0.1:0".parse()?;
    config.scenario = Scenario::parse(&scenario.to_string(), "bench")?;
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
    let http = HttpClient::new(acc.client_settings(&[], Limits::default().max_package_bytes))?;
    let principal = Principal::Server(SRV_ID.into());
    let mut ctx = Context {
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
        iters: 7,
    };

    let mut parsed: Vec<Package2> = (0..bench.warmup + bench.iters)
        .map(|_| Package2::parse(&body))
        .collect::<std::result::Result<_, _>>()?;
    let (exec_ours, exec_base) = bench.compare(
        |i| {
            let cmds = std::mem::take(&mut parsed[i].commands);
            let statuses = rt.block_on(async {
                let mut statuses = Vec::with_capacity(cmds.len());
                for cmd in cmds {
                    statuses.push(commands::execute(&mut ctx, cmd?).await);
                }
                Ok::<_, Box<dyn Error>>(statuses)
            })?;
            all_ok(statuses.iter().map(|s| s.sc))?;
            black_box(statuses);
            Ok(())
        },
        &mut base,
    )?;

    let (pkg_ours, pkg_base) = bench.compare(
        |_| {
            let package3 = rt.block_on(async {
                let package2 = Package2::parse(&body)?;
                let mut statuses = Vec::with_capacity(package2.commands.len());
                for cmd in package2.commands {
                    statuses.push(commands::execute(&mut ctx, cmd?).await);
                }
                client.store.writer().sync()?;
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
    for run in 0..=SESSION_RUNS {
        let t_big = client.session(rt, &acc, big.url())?;
        let t_one = client.session(rt, &acc, one.url())?;
        if run > 0 {
            whole.push(t_big);
            fixed.push(t_one);
        }
    }
    check_server(rt, &big, SESSION_RUNS + 1)?;
    check_server(rt, &one, SESSION_RUNS + 1)?;
    let statuses: usize = big.results().iter().map(|o| o.statuses.len()).sum();
    if statuses != SESSION_RUNS + 1 {
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

    Ok(vec![
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

    let (mut with_data, mut with_cv) = (Vec::new(), Vec::new());
    for run in 0..=SESSION_RUNS {
        let t_data = client.session(rt, &acc, data.url())?;
        let t_cv = client.session(rt, &acc, cached.url())?;
        if run > 0 {
            with_data.push(t_data);
            with_cv.push(t_cv);
        }
    }
    check_server(rt, &data, SESSION_RUNS + 2)?;
    check_server(rt, &cached, SESSION_RUNS + 1)?;
    let bytes_data = session_bytes(&data, 2);
    let bytes_cv = session_bytes(&cached, 1);
    rt.block_on(data.shutdown());
    rt.block_on(cached.shutdown());

    Ok(vec![
        Row::ms(
            "B.1 session wall: GET all vs ?cv=",
            &Samples::new(with_data),
            Some(&Samples::new(with_cv)),
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
    ])
}
