//! The benchmarks' shared harness: one way to time, report and check, for `store`, `session`
//! and `dbus` alike (each declares it with `mod common;`).
//!
//! What every bench uses:
//!
//! - [`Samples`]: sorted per-call durations, their median and nearest-rank p99;
//! - [`SLICES`]: how many times ours and the baseline take turns in one measurement;
//! - [`Row`] and [`Target`]: one line of the result table, checked against its target (each
//!   bench names its own kinds of target);
//! - [`print_table`] and [`print_targets_met`]: the table with its ours / base / ratio /
//!   target / PASS-MISS columns, and the closing "N of M targets met" line;
//! - [`num`] and [`group`]: how figures are written;
//! - [`cores`] and [`build`]: the machine and the build named in each header.
//!
//! What only the benches of the SQLite store (`store`, `session`) use, against raw rusqlite:
//! the 1,000-instance device data set, the synchronous ours-against-baseline timing
//! (`Bench::compare`), a seeded PRNG and the raw connection and leaf read. It is the macro
//! [`sqlite_harness!`](crate::sqlite_harness), expanded by those two benches into a module of
//! their own, so that the D-Bus bench does not compile it.

use std::ops::Deref;
use std::time::Duration;

/// Alternations between ours and the baseline per measurement.
pub const SLICES: usize = 10;

/// Sorted per-call durations.
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Sorts `durations`; there must be at least one.
    pub fn new(mut durations: Vec<Duration>) -> Samples {
        assert!(!durations.is_empty(), "no samples");
        durations.sort_unstable();
        Samples(durations)
    }

    pub fn median(&self) -> Duration {
        let n = self.0.len();
        if n % 2 == 1 {
            self.0[n / 2]
        } else {
            (self.0[n / 2 - 1] + self.0[n / 2]) / 2
        }
    }

    /// Nearest-rank 99th percentile.
    pub fn p99(&self) -> Duration {
        let rank = (self.0.len() * 99).div_ceil(100).max(1);
        self.0[rank - 1]
    }
}

/// The durations, fastest first.
impl Deref for Samples {
    type Target = [Duration];

    fn deref(&self) -> &[Duration] {
        &self.0
    }
}

/// A bench's kind of target for a row's figures; the table shows it and whether ours met it.
pub trait Target {
    /// Whether a row whose figures are `ours` and `base` (medians) meets the target.
    fn met(&self, ours: f64, base: Option<f64>) -> bool;

    /// The target column, e.g. `>= 100,000`.
    fn label(&self) -> String;
}

/// One line of the result table: ours and the baseline, median and p99, in `unit`.
pub struct Row<T> {
    pub name: String,
    pub unit: &'static str,
    pub ours: f64,
    pub ours_p99: Option<f64>,
    pub base: Option<f64>,
    pub base_p99: Option<f64>,
    pub target: Option<T>,
}

impl<T: Target> Row<T> {
    /// A timed operation, in units of `unit_secs` seconds (1e-6 for µs).
    pub fn timed(
        name: &str,
        unit: &'static str,
        unit_secs: f64,
        ours: &Samples,
        base: Option<&Samples>,
        target: Option<T>,
    ) -> Row<T> {
        let f = |d: Duration| d.as_secs_f64() / unit_secs;
        Row {
            name: name.to_owned(),
            unit,
            ours: f(ours.median()),
            ours_p99: Some(f(ours.p99())),
            base: base.map(|b| f(b.median())),
            base_p99: base.map(|b| f(b.p99())),
            target,
        }
    }

    fn passed(&self) -> Option<bool> {
        self.target.as_ref().map(|t| t.met(self.ours, self.base))
    }
}

/// Prints the result table, its operation and unit columns `name_width` and `unit_width`
/// characters wide.
pub fn print_table<T: Target>(rows: &[Row<T>], name_width: usize, unit_width: usize) {
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), num);
    println!();
    println!(
        "{:<name_width$} {:>unit_width$} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10}  result",
        "operation", "unit", "ours", "ours p99", "base", "base p99", "ratio", "target"
    );
    for r in rows {
        let ratio = r
            .base
            .map_or_else(|| "-".to_owned(), |b| format!("{:.2}x", r.ours / b));
        let target = r.target.as_ref().map_or_else(|| "-".to_owned(), T::label);
        let result = match r.passed() {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "-",
        };
        println!(
            "{:<name_width$} {:>unit_width$} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10}  {result}",
            r.name,
            r.unit,
            num(r.ours),
            opt(r.ours_p99),
            opt(r.base),
            opt(r.base_p99),
            ratio,
            target
        );
    }
    println!();
}

/// Prints `<bench> bench: N of M targets met` for `rows`.
pub fn print_targets_met<T: Target>(bench: &str, rows: &[Row<T>]) {
    let targets = rows.iter().filter(|r| r.target.is_some()).count();
    let met = rows.iter().filter(|r| r.passed() == Some(true)).count();
    println!("{bench} bench: {met} of {targets} targets met");
}

/// A figure with sensible precision; thousands separated.
pub fn num(v: f64) -> String {
    if v >= 10_000.0 {
        group(&format!("{v:.0}"))
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Digits with thousands separated: `1000` as `1,000`.
pub fn group(digits: &str) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// CPU cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The build, as the header names it.
pub fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "DEBUG (numbers meaningless)"
    } else {
        "release"
    }
}

/// The harness of the SQLite store's benches (`store`, `session`): expand it into a module of
/// the bench (`mod sqlite { crate::sqlite_harness!(); }`). A macro, so that only the benches
/// that use it compile it.
#[macro_export]
macro_rules! sqlite_harness {
    () => {
        use std::error::Error;
        use std::ops::Range;
        use std::path::Path;
        use std::time::{Duration, Instant};

        use omadmd::store::{Store, StoreError};
        use omadmd::tree::{Node, Value};
        use rusqlite::types::Value as Sql;
        use rusqlite::{Connection, OpenFlags, Statement, params};

        use $crate::common::{SLICES, Samples};

        type Result<T> = std::result::Result<T, Box<dyn Error>>;

        /// MOID of the 1,000 small instances.
        pub const MOID: &str = "urn:oma:mo:ext-bench-device:1.0";
        pub const ROOT_NAME: &str = "Device";
        pub const INSTANCES: usize = 1_000;
        pub const GROUPS: usize = 10;
        pub const LEAVES: usize = 9;
        /// Nodes per small instance (the root is the instance row, not a node).
        pub const NODES_PER_INSTANCE: usize = GROUPS * (1 + LEAVES);
        /// Instances per store transaction while creating them.
        pub const BATCH: usize = 100;

        pub fn miid(i: usize) -> String {
            format!("m{i:04}")
        }

        /// Leaf `L<l>` of group `G<g>` of instance `i`: chr for L0..L4, int for L5..L8.
        pub fn leaf_value(i: usize, g: usize, l: usize) -> Value {
            if l < 5 {
                Value::Chr(format!("value {i}.{g}.{l}"))
            } else {
                Value::Int((i * 1_000 + g * 10 + l) as i64)
            }
        }

        /// The content of small instance `i` as a tree: groups `G0`..`G9` of leaves
        /// `L0`..`L8`.
        pub fn device_node(i: usize) -> Node {
            let groups = (0..GROUPS).map(|g| {
                let leaves =
                    (0..LEAVES).map(|l| (format!("L{l}"), Node::Leaf(leaf_value(i, g, l))));
                (format!("G{g}"), Node::Interior(leaves.collect()))
            });
            Node::Interior(groups.collect())
        }

        /// The `BATCH` small instances from `first` on: MIID and content.
        pub fn device_batch(first: usize) -> Vec<(String, Node)> {
            (first..first + BATCH)
                .map(|i| (miid(i), device_node(i)))
                .collect()
        }

        /// Creates the instances of `batch` in one store transaction.
        pub fn create_batch(
            store: &mut Store,
            batch: &[(String, Node)],
            owner: &str,
        ) -> std::result::Result<(), StoreError> {
            store.write(|tx| {
                for (m, node) in batch {
                    tx.create_instance(MOID, Some(m), ROOT_NAME, node, owner)?;
                }
                Ok(())
            })?;
            Ok(())
        }

        /// A leaf of a small instance: MIID, group and leaf name.
        pub type Pick = (String, String, String);

        /// `n` leaves picked at random (seeded) across the small instances, among the first
        /// `leaves` of their group.
        pub fn leaf_picks(seed: u64, n: usize, leaves: usize) -> Vec<Pick> {
            let mut rng = Rng(seed);
            (0..n)
                .map(|_| {
                    (
                        miid(rng.below(INSTANCES)),
                        format!("G{}", rng.below(GROUPS)),
                        format!("L{}", rng.below(leaves)),
                    )
                })
                .collect()
        }

        /// A small deterministic PRNG (SplitMix64), so every run picks the same "random"
        /// nodes.
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

        /// A raw connection with the store's pragmas.
        pub fn open_raw(path: &Path) -> rusqlite::Result<Connection> {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            Ok(conn)
        }

        /// The baseline's read of one leaf of a small instance: a prepared SELECT of its
        /// format, value and writer.
        pub struct LeafSelect<'c>(Statement<'c>);

        impl<'c> LeafSelect<'c> {
            pub fn prepare(conn: &'c Connection) -> rusqlite::Result<LeafSelect<'c>> {
                conn.prepare(
                    "SELECT n.format, n.value, n.writer FROM instances i JOIN nodes n ON n.inst = i.id \
                     WHERE i.moid = ?1 AND i.miid = ?2 AND n.parent = ?3 AND n.name = ?4",
                )
                .map(LeafSelect)
            }

            pub fn read(&mut self, (m, g, l): &Pick) -> rusqlite::Result<(String, Sql, String)> {
                self.0.query_row(params![MOID, m, g, l], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Sql>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
            }
        }

        /// Times an operation of ours against its baseline: `warmup` untimed calls of each,
        /// then `iters` timed calls of each, alternating in `SLICES` slices so that both see
        /// the same machine (other processes, CPU frequency, WAL checkpoints).
        pub struct Bench {
            pub warmup: usize,
            pub iters: usize,
        }

        impl Bench {
            /// Each closure gets a call index (warm-up calls included) to pick its input; the
            /// two see the same indices.
            pub fn compare(
                &self,
                mut ours: impl FnMut(usize) -> Result<()>,
                mut base: impl FnMut(usize) -> Result<()>,
            ) -> Result<(Samples, Samples)> {
                for i in 0..self.warmup {
                    ours(i)?;
                    base(i)?;
                }
                let (mut a, mut b) = (
                    Vec::with_capacity(self.iters),
                    Vec::with_capacity(self.iters),
                );
                let slice = self.iters.div_ceil(SLICES);
                let mut next = self.warmup;
                while a.len() < self.iters {
                    let calls = next..next + slice.min(self.iters - a.len());
                    time(&mut ours, calls.clone(), &mut a)?;
                    time(&mut base, calls.clone(), &mut b)?;
                    next = calls.end;
                }
                Ok((Samples::new(a), Samples::new(b)))
            }
        }

        /// Calls `op` for each index of `calls`, recording how long each call took.
        fn time(
            op: &mut impl FnMut(usize) -> Result<()>,
            calls: Range<usize>,
            samples: &mut Vec<Duration>,
        ) -> Result<()> {
            for i in calls {
                let start = Instant::now();
                op(i)?;
                samples.push(start.elapsed());
            }
            Ok(())
        }
    };
}
