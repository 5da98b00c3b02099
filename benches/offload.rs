//! Offload benchmark: how async code should run the synchronous SQLite store off the
//! runtime's worker threads (issue 8, item 2: "one async boundary in front of the store").
//!
//! Run it with `cargo bench --bench offload` (release build; under a minute). With
//! `OMADMD_BENCH_QUICK=1` it runs one short round: it checks that both ways work, and its
//! figures are then not meaningful.
//!
//! Two ways are compared, on one real store file (WAL) in a temporary directory, driven by a
//! tokio multi-thread runtime with 2 workers:
//!
//! - A (`base` column): [`tokio::task::spawn_blocking`] per call; the call takes a free
//!   connection from a pool of 3 readers, each a `Mutex<Store>` (or waits on the next one in
//!   turn when all are busy), or the one `Mutex<Store>` writer — what the daemon did before;
//! - B (`ours` column), what the daemon does: [`omadmd::store::offload`] — the process's
//!   store threads fed by bounded queues, reads on the interactive lane (3 threads), writes
//!   on the background lane (2 threads at nice 5) — over an [`omadmd::store::Pool`] of 3
//!   readers and one writer.
//!
//! The store holds 4 instances of 1,000 nodes (50 groups of a node and its 19 leaves) and a
//! 10,100-node instance (100 groups of 100 leaves). Workloads:
//!
//! 1. quiet: one async reader alone (the cost of the boundary itself), then 8 async readers,
//!    each one call at a time, alternating a leaf by path ([`Store::leaf`]) and a group, a
//!    20-node subtree ([`Store::subtree`]), picked at random (fixed seeds); also the CPU time
//!    the process spends per read (from `/proc/self/stat`, all threads);
//! 2. writing: the same readers while one async writer writes back to back: 20 small
//!    transactions (one leaf replaced), then the 10,100-node instance imported again in one
//!    transaction ([`Txn::place`], as an HGET does) followed by [`Store::sync`] (a WAL
//!    checkpoint with fsync, as a session does before it acknowledges), and so on.
//!
//! Every phase runs for a fixed time; A and B take turns ([`SLICES`] rounds, the order
//! swapped every round) so that both see the same machine. Reported per workload: the
//! readers' median and p99 per call and their throughput, and under writing the writer's
//! call times and throughput; `ratio` is B/A (for times below 1 means B is faster, for
//! rates above 1 does). Speed is reported, never asserted; a wrong read or any error exits
//! non-zero.
//!
//! # Conclusion
//!
//! Store threads with queues (B) are the better boundary, and the daemon uses them. A first
//! round of measurements (four full runs, a bench-local B with one thread per connection)
//! gave B 1.35–1.75× the quiet reads per second at 0.6–0.75× the CPU per read, p99 0.25–0.6×
//! quiet and 0.5–0.75× while writing, and 1.25–1.7× the writer's throughput. Against the
//! daemon's `store::offload` itself, the last full run on the development machine (2 cores,
//! release build, SQLite 3.54.1): 8 readers quiet 32,800 against 25,300 reads/s (1.30×),
//! 55.6 against 69.5 µs CPU per read, p99 0.5 against 1.3 ms (leaf) and 1.2 against 1.7 ms
//! (subtree); while writing 24,800 against 18,900 reads/s, p99 2.0 against 3.0 ms (leaf) and
//! 3.1 against 4.0 ms (subtree), the writer 1.14× the imports per second. One reader alone
//! pays a few microseconds for the queue and the reply channel (1.2×: 27 against 23 µs).
//!
//! Why: with A, 8 concurrent calls are 8 blocking-pool threads contending for 3
//! connections; one that finds none free parks on the mutex next in turn, not on the first
//! connection to come free, so latencies spread, and the hand-offs between threads cost CPU
//! that readers and writer then lack on 2 cores. With B a fixed set of threads takes jobs
//! from one queue in arrival order; its price is that a short read may wait behind longer
//! ones queued before it. The bounded queues give back-pressure.

use std::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use omadmd::store::{Lane, Placement, Store, Txn, offload};
use omadmd::tree::uri::{Moid, NodeAddr};
use omadmd::tree::{Node, Value};
use tokio::task::JoinSet;

/// The benches' shared harness; this bench sets no targets, so some of it goes unused.
#[allow(dead_code)]
mod common;

use common::{SLICES, Samples, build, cores, group, print_table};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Selects the quick mode.
const QUICK_ENV: &str = "OMADMD_BENCH_QUICK";

/// The instances the readers read and the small writes change.
const MOID: &str = "urn:oma:mo:ext-bench-offload:1.0";
const ROOT_NAME: &str = "Offload";
const INSTANCES: usize = 4;
const GROUPS: usize = 50;
/// Leaves per group: a group is a 20-node subtree.
const LEAVES: usize = 19;

/// The instance the writer imports again and again.
const BIG_MOID: &str = "urn:oma:mo:ext-bench-offload-big:1.0";
const BIG_MIID: &str = "big";
const BIG_ROOT: &str = "Big";
const BIG_GROUPS: usize = 100;
const BIG_LEAVES: usize = 100;

const OWNER: &str = "srv:bench";

/// Worker threads of the async runtime.
const WORKERS: usize = 2;
/// Concurrent async readers.
const READERS: usize = 8;
/// Read connections, in both ways.
const READ_CONNECTIONS: usize = 3;
/// Small write transactions between two imports.
const SMALL_PER_IMPORT: usize = 20;

/// How much to measure.
#[derive(Clone, Copy)]
struct Plan {
    quick: bool,
    rounds: usize,
    warmup: Duration,
    /// One reader alone, per way and round.
    solo: Duration,
    quiet: Duration,
    writing: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        if std::env::var(QUICK_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
            Plan {
                quick: true,
                rounds: 1,
                warmup: Duration::from_millis(100),
                solo: Duration::from_millis(100),
                quiet: Duration::from_millis(200),
                writing: Duration::from_millis(500),
            }
        } else {
            Plan {
                quick: false,
                rounds: SLICES,
                warmup: Duration::from_millis(300),
                solo: Duration::from_millis(200),
                quiet: Duration::from_millis(500),
                writing: Duration::from_millis(1_500),
            }
        }
    }
}

fn main() -> Result<()> {
    let plan = Plan::from_env();
    println!(
        "omadmd offload bench: {} cores, SQLite {}, {} build{}",
        cores(),
        rusqlite::version(),
        build(),
        if plan.quick {
            "; QUICK mode (checks that both ways work; figures not meaningful)"
        } else {
            ""
        }
    );
    println!(
        "{READERS} async readers on a {WORKERS}-worker runtime, {READ_CONNECTIONS} read \
         connections and one writer; {} round(s) of {} ms with one reader, {} ms quiet and \
         {} ms writing per way; columns: ours = omadmd's store::offload (store threads \
         with queues), base = A (spawn_blocking per call over Mutex<Store> connections), \
         ratio = ours/A",
        plan.rounds,
        plan.solo.as_millis(),
        plan.quiet.as_millis(),
        plan.writing.as_millis()
    );

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.db");
    let big = Arc::new(big_placement()?);
    fill(&path, &big)?;

    let ways = [
        Boundary::Blocking(Arc::new(Pool::open(&path)?)),
        Boundary::Daemon(Arc::new(omadmd::store::Pool::open(
            &path,
            omadmd::store::Bounds::default(),
            READ_CONNECTIONS,
        )?)),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()?;
    let tallies = rt.block_on(measure(&ways, &big, plan));
    drop(ways);
    drop(rt);
    let [a, b] = tallies?;
    report(&a, &b);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The store's content

fn group_name(g: usize) -> String {
    format!("G{g:02}")
}

fn leaf_name(l: usize) -> String {
    format!("L{l:02}")
}

fn instance_node(i: usize) -> Node {
    Node::Interior(
        (0..GROUPS)
            .map(|g| {
                let leaves = (0..LEAVES).map(|l| {
                    let v = Value::Chr(format!("value {i}.{g}.{l}"));
                    (leaf_name(l), Node::Leaf(v))
                });
                (group_name(g), Node::Interior(leaves.collect()))
            })
            .collect(),
    )
}

/// The 10,100-node instance as an HGET would place it.
fn big_placement() -> Result<Placement> {
    let node = Node::Interior(
        (0..BIG_GROUPS)
            .map(|g| {
                let leaves = (0..BIG_LEAVES).map(|l| {
                    (
                        format!("L{l}"),
                        Node::Leaf(Value::Int((g * 1_000 + l) as i64)),
                    )
                });
                (format!("G{g}"), Node::Interior(leaves.collect()))
            })
            .collect(),
    );
    Ok(Placement {
        moid: Moid::parse(BIG_MOID)?,
        miid: Some(BIG_MIID.to_owned()),
        path: String::new(),
        name: BIG_ROOT.to_owned(),
        node,
    })
}

/// Creates the instances the readers read and the big one, and checks the node count.
fn fill(path: &Path, big: &Placement) -> Result<()> {
    let mut store = Store::open(path)?;
    store.write(|tx: &mut Txn<'_>| {
        for i in 0..INSTANCES {
            tx.create_instance(MOID, Some(&miid(i)), ROOT_NAME, &instance_node(i), OWNER)?;
        }
        tx.place(big, OWNER)
    })?;
    store.sync()?;
    let nodes = store.stats()?.nodes;
    let want = INSTANCES * GROUPS * (1 + LEAVES) + BIG_GROUPS * (1 + BIG_LEAVES);
    if nodes != want as u64 {
        return Err(format!("the store holds {nodes} nodes, expected {want}").into());
    }
    Ok(())
}

fn miid(i: usize) -> String {
    format!("m{i}")
}

// ---------------------------------------------------------------------------------------
// The two ways

/// How async code reaches the store: one of the two ways compared.
#[derive(Clone)]
enum Boundary {
    /// A: `spawn_blocking` per call, on a connection taken from the pool.
    Blocking(Arc<Pool>),
    /// The daemon's boundary: `omadmd::store::offload` on its store threads (reads on the
    /// interactive lane, writes on the lower-priority background lane), connections from
    /// an `omadmd::store::Pool`.
    Daemon(Arc<omadmd::store::Pool>),
}

impl Boundary {
    fn name(&self) -> &'static str {
        match self {
            Boundary::Blocking(_) => "A (spawn_blocking)",
            Boundary::Daemon(_) => "omadmd (store::offload)",
        }
    }

    /// Runs `f` on a read connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T> {
        match self {
            Boundary::Blocking(pool) => {
                let pool = Arc::clone(pool);
                Ok(tokio::task::spawn_blocking(move || f(&pool.reader())).await?)
            }
            Boundary::Daemon(pool) => {
                let pool = Arc::clone(pool);
                offload(Lane::Interactive, move || f(&pool.reader()))
                    .await
                    .map_err(|e| e.to_string().into())
            }
        }
    }

    /// Runs `f` on the writer connection.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T> {
        match self {
            Boundary::Blocking(pool) => {
                let pool = Arc::clone(pool);
                Ok(tokio::task::spawn_blocking(move || f(&mut pool.writer())).await?)
            }
            Boundary::Daemon(pool) => {
                let pool = Arc::clone(pool);
                offload(Lane::Background, move || f(&mut pool.writer()))
                    .await
                    .map_err(|e| e.to_string().into())
            }
        }
    }
}

/// A: the connections behind mutexes, as `Authority` holds them (its `reader()`).
struct Pool {
    writer: Mutex<Store>,
    readers: Vec<Mutex<Store>>,
    next_reader: AtomicUsize,
}

impl Pool {
    fn open(path: &Path) -> Result<Pool> {
        Ok(Pool {
            writer: Mutex::new(Store::open(path)?),
            readers: (0..READ_CONNECTIONS)
                .map(|_| Store::open(path).map(Mutex::new))
                .collect::<std::result::Result<_, _>>()?,
            next_reader: AtomicUsize::new(0),
        })
    }

    // A poisoned lock still guards a consistent connection (a store transaction commits or
    // rolls back whole), so both take the guard back from the poison.

    fn writer(&self) -> MutexGuard<'_, Store> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A free read connection, or the next one in turn when all are busy.
    fn reader(&self) -> MutexGuard<'_, Store> {
        for m in &self.readers {
            match m.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[turn]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// ---------------------------------------------------------------------------------------
// The workloads

/// What one way did over all rounds.
#[derive(Default)]
struct Tally {
    solo: Reads,
    quiet: Reads,
    writing: Reads,
    small: Vec<Duration>,
    imports: Vec<Duration>,
    /// How long the writer wrote, in all.
    write_time: Duration,
}

/// The readers' calls in one workload.
#[derive(Default)]
struct Reads {
    leaf: Vec<Duration>,
    subtree: Vec<Duration>,
    /// How long the readers read, in all.
    time: Duration,
    /// CPU time the whole process used meanwhile.
    cpu: Duration,
}

impl Reads {
    fn add(&mut self, other: Reads) {
        self.leaf.extend(other.leaf);
        self.subtree.extend(other.subtree);
        self.time += other.time;
        self.cpu += other.cpu;
    }

    fn calls(&self) -> usize {
        self.leaf.len() + self.subtree.len()
    }

    fn per_sec(&self) -> f64 {
        self.calls() as f64 / self.time.as_secs_f64()
    }
}

/// Every round: both workloads on each way, the ways' order swapped every round.
async fn measure(ways: &[Boundary; 2], big: &Arc<Placement>, plan: Plan) -> Result<[Tally; 2]> {
    for way in ways {
        read_phase(way, READERS, 0, plan.warmup).await?;
    }
    let mut tallies = [Tally::default(), Tally::default()];
    for round in 0..plan.rounds {
        let seed = round as u64 + 1;
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for w in order {
            let solo = read_phase(&ways[w], 1, seed, plan.solo).await?;
            tallies[w].solo.add(solo);
            let quiet = read_phase(&ways[w], READERS, seed, plan.quiet).await?;
            tallies[w].quiet.add(quiet);
        }
        for w in order {
            let t = &mut tallies[w];
            let stop = Arc::new(AtomicBool::new(false));
            let writer = tokio::spawn(write_loop(
                ways[w].clone(),
                Arc::clone(big),
                Arc::clone(&stop),
            ));
            let reads = read_phase(&ways[w], READERS, seed, plan.writing).await;
            stop.store(true, Ordering::Relaxed);
            let (small, imports, time) = writer.await??;
            t.writing.add(reads?);
            t.small.extend(small);
            t.imports.extend(imports);
            t.write_time += time;
        }
    }
    Ok(tallies)
}

/// `readers` readers calling through `way` for `span`.
async fn read_phase(way: &Boundary, readers: usize, seed: u64, span: Duration) -> Result<Reads> {
    let cpu = process_cpu()?;
    let start = Instant::now();
    let deadline = start + span;
    let mut tasks = JoinSet::new();
    for r in 0..readers {
        tasks.spawn(read_loop(way.clone(), seed * 100 + r as u64, deadline));
    }
    let mut reads = Reads::default();
    while let Some(done) = tasks.join_next().await {
        let (leaf, subtree) = done??;
        reads.leaf.extend(leaf);
        reads.subtree.extend(subtree);
    }
    reads.time = start.elapsed();
    reads.cpu = process_cpu()?.saturating_sub(cpu);
    Ok(reads)
}

/// CPU time (user and system) this process has used so far, its threads gone included.
fn process_cpu() -> Result<Duration> {
    /// The unit of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux ABI).
    const TICK: Duration = Duration::from_millis(10);
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // After the command name (in parentheses, which may hold spaces) come field 3 (state)
    // on; utime and stime are fields 14 and 15.
    let fields = stat
        .rsplit_once(')')
        .ok_or("/proc/self/stat has no command name")?
        .1
        .split_whitespace()
        .collect::<Vec<_>>();
    let ticks = |n: usize| -> Result<u32> {
        Ok(fields
            .get(n - 3)
            .ok_or("/proc/self/stat is too short")?
            .parse()?)
    };
    Ok(TICK * (ticks(14)? + ticks(15)?))
}

/// One reader: one call at a time until `deadline`, alternating a leaf and a group; the
/// duration of each, leaves and groups apart.
async fn read_loop(
    way: Boundary,
    seed: u64,
    deadline: Instant,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut rng = Rng(seed);
    let (mut leaves, mut groups) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        let group =
            NodeAddr::root(MOID, &miid(rng.below(INSTANCES))).child(&group_name(rng.below(GROUPS)));
        let leaf = group.child(&leaf_name(rng.below(LEAVES)));
        let start = Instant::now();
        if leaves.len() <= groups.len() {
            let found = way
                .read(move |s| s.leaf(&leaf).map(|v| (leaf, v)))
                .await??;
            leaves.push(start.elapsed());
            if let (leaf, None) = found {
                return Err(format!("{} read no leaf at {leaf}", way.name()).into());
            }
        } else {
            let nodes = way
                .read(move |s| s.subtree(&group).map(|n| (group, n.count())))
                .await??;
            groups.push(start.elapsed());
            if nodes.1 != 1 + LEAVES {
                return Err(format!("{} read {} nodes at {}", way.name(), nodes.1, nodes.0).into());
            }
        }
    }
    Ok((leaves, groups))
}

/// The writer: [`SMALL_PER_IMPORT`] one-leaf transactions, then the big import and a sync,
/// again and again until `stop` (a started batch is finished, so each run imports at least
/// once). The duration of each small write, of each import, and in all.
async fn write_loop(
    way: Boundary,
    big: Arc<Placement>,
    stop: Arc<AtomicBool>,
) -> Result<(Vec<Duration>, Vec<Duration>, Duration)> {
    let begin = Instant::now();
    let mut rng = Rng(u64::MAX);
    let (mut small, mut imports) = (Vec::new(), Vec::new());
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..SMALL_PER_IMPORT {
            let addr = NodeAddr::root(MOID, &miid(rng.below(INSTANCES)))
                .child(&group_name(rng.below(GROUPS)))
                .child(&leaf_name(rng.below(LEAVES)));
            let leaf = Node::Leaf(Value::Int(n));
            n += 1;
            let start = Instant::now();
            way.write(move |s| s.write(|tx| tx.put(&addr, &leaf, OWNER)))
                .await??;
            small.push(start.elapsed());
        }
        let big = Arc::clone(&big);
        let start = Instant::now();
        way.write(move |s| {
            s.write(|tx| tx.place(&big, OWNER))?;
            s.sync()
        })
        .await??;
        imports.push(start.elapsed());
    }
    Ok((small, imports, begin.elapsed()))
}

/// A small deterministic PRNG (SplitMix64), so that both ways read the same nodes.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------
// Report

type Row = common::Row<NoTarget>;

/// This bench compares; it sets no targets.
enum NoTarget {}

impl common::Target for NoTarget {
    fn met(&self, _ours: f64, _base: Option<f64>) -> bool {
        match *self {}
    }

    fn label(&self) -> String {
        match *self {}
    }
}

/// A row of per-call times in `unit` (`unit_secs` seconds), B against A.
fn times(name: &str, unit: &'static str, unit_secs: f64, b: &[Duration], a: &[Duration]) -> Row {
    let (b, a) = (Samples::new(b.to_vec()), Samples::new(a.to_vec()));
    Row::timed(name, unit, unit_secs, &b, Some(&a), None)
}

/// A row of figures that have no p99 (rates, averages), B against A.
fn rate(name: &str, unit: &'static str, b: f64, a: f64) -> Row {
    Row {
        name: name.to_owned(),
        unit,
        ours: b,
        ours_p99: None,
        base: Some(a),
        base_p99: None,
        target: None,
    }
}

fn read_rows(b: &Reads, a: &Reads) -> Vec<Row> {
    vec![
        times(
            &format!("leaf by path, {READERS} readers"),
            "µs",
            1e-6,
            &b.leaf,
            &a.leaf,
        ),
        times(
            &format!("20-node subtree, {READERS} readers"),
            "µs",
            1e-6,
            &b.subtree,
            &a.subtree,
        ),
        rate(
            &format!("reads, {READERS} readers"),
            "/s",
            b.per_sec(),
            a.per_sec(),
        ),
    ]
}

fn report(a: &Tally, b: &Tally) {
    println!();
    println!("1. quiet: one reader alone, then {READERS} readers; nothing writing");
    let cpu_per_read = |r: &Reads| r.cpu.as_secs_f64() * 1e6 / r.calls() as f64;
    let mut rows = vec![
        times(
            "leaf by path, 1 reader",
            "µs",
            1e-6,
            &b.solo.leaf,
            &a.solo.leaf,
        ),
        times(
            "20-node subtree, 1 reader",
            "µs",
            1e-6,
            &b.solo.subtree,
            &a.solo.subtree,
        ),
        rate(
            "CPU per read, 1 reader",
            "µs",
            cpu_per_read(&b.solo),
            cpu_per_read(&a.solo),
        ),
    ];
    rows.extend(read_rows(&b.quiet, &a.quiet));
    rows.push(rate(
        &format!("CPU per read, {READERS} readers"),
        "µs",
        cpu_per_read(&b.quiet),
        cpu_per_read(&a.quiet),
    ));
    print_table(&rows, 28, 3);

    println!(
        "2. writing: the same readers while one writer does {SMALL_PER_IMPORT} one-leaf \
         transactions, then a {}-node import + sync, again and again",
        group(&(BIG_GROUPS * (1 + BIG_LEAVES)).to_string())
    );
    let per_sec = |n: usize, t: &Tally| n as f64 / t.write_time.as_secs_f64();
    let mut rows = read_rows(&b.writing, &a.writing);
    rows.extend([
        times("one-leaf write", "µs", 1e-6, &b.small, &a.small),
        times("10k-node import + sync", "ms", 1e-3, &b.imports, &a.imports),
        rate(
            "one-leaf writes",
            "/s",
            per_sec(b.small.len(), b),
            per_sec(a.small.len(), a),
        ),
        rate(
            "10k-node imports",
            "/s",
            per_sec(b.imports.len(), b),
            per_sec(a.imports.len(), a),
        ),
    ]);
    print_table(&rows, 28, 3);

    for (name, t) in [("A", a), ("B", b)] {
        let (quiet, writing) = (&t.quiet, &t.writing);
        println!(
            "{name}: {} reads quiet, {} reads and {} + {} writes while writing; readers' p99 \
             writing/quiet: leaf {:.2}x, subtree {:.2}x",
            group(&quiet.calls().to_string()),
            group(&writing.calls().to_string()),
            group(&t.small.len().to_string()),
            t.imports.len(),
            p99_ratio(&writing.leaf, &quiet.leaf),
            p99_ratio(&writing.subtree, &quiet.subtree),
        );
    }
    println!("offload bench: both ways ran without an error");
}

fn p99_ratio(load: &[Duration], quiet: &[Duration]) -> f64 {
    let p99 = |d: &[Duration]| Samples::new(d.to_vec()).p99().as_secs_f64();
    p99(load) / p99(quiet)
}
