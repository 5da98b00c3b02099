//! Part 7 of the bench, memory: the resident set (`VmRSS` of `/proc/<pid>/status`: code,
//! libraries, heap and stacks the process has in RAM) of a daemon of its own, on the same
//! bus:
//!
//! - idle: started fresh, [`SETTLE`] after it took its bus name;
//! - loaded: after [`INSTANCES`] instances of the obuspa shape were created over D-Bus, and
//!   [`SETTLE`] of quiet;
//! - right after one `GetJson` reading all of them (the large read of the issue), and
//!   [`SETTLE`] later: memory should go back near the loaded idle — "near" is at most
//!   [`NEAR_KIB`] above it;
//! - then the same for one `Get` of every leaf of them all (`<MOID>/*/*`, 110,000 `(ssv)`
//!   nodes), right after and [`SETTLE`] later, against the figure just before it.
//!
//! obuspa's idle figure, measured on this machine kind, is a labelled constant. The daemon
//! runs with `[limits]` raised for the one read (its rows are over the default
//! `result_rows`).

use std::time::{Duration, Instant};

use super::{Procs, Result, Row, Target, bulk_read, connect, group, num, start_daemon};
use crate::support::sysbus::SysBus;

/// Instances of the large read; `[limits]` that let one `GetJson` return them all.
const INSTANCES: usize = 10_000;
const CONFIG: &str = "[limits]\nresult_rows = 200000\nowner_instances = 20000\n";
/// Quiet before each idle figure, and after the read.
const SETTLE: Duration = Duration::from_secs(5);

/// The goals: idle at most 8 MiB; 5 s after the read at most this far above the idle
/// figure before it.
const GOAL_IDLE_KIB: f64 = 8_192.0;
const NEAR_KIB: f64 = 2_048.0;
/// obuspa 11.0.4 idle, measured on this machine kind (not run here).
const OBUSPA_IDLE_KIB: f64 = 13_984.0;

/// A resident set, KiB: in all, and its anonymous (heap, stacks) and file-backed (code,
/// libraries) parts.
#[derive(Clone, Copy)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

impl Rss {
    fn of(pid: u32) -> Result<Rss> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |key: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse()
                        .ok()
                })
                .ok_or_else(|| format!("/proc/{pid}/status has no {key}").into())
        };
        Ok(Rss {
            total: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }

    fn kib(self) -> f64 {
        self.total as f64
    }

    /// `total (anon + file)` for the notes.
    fn parts(self) -> String {
        format!(
            "{} ({} anon + {} file)",
            group(&self.total.to_string()),
            group(&self.anon.to_string()),
            group(&self.file.to_string())
        )
    }
}

/// The figures of [`measure`].
pub struct Memory {
    idle: Rss,
    loaded: Rss,
    after: Rss,
    later: Rss,
    read: Duration,
    bytes: usize,
    /// Right after the `Get` of every leaf, and [`SETTLE`] later.
    get_after: Rss,
    get_later: Rss,
    get_read: Duration,
    get_nodes: usize,
}

/// Starts the daemon of this part on `bus`, measures, and stops it (cleanly, or an error).
pub fn measure(bus: &SysBus) -> Result<Memory> {
    let daemon = start_daemon(bus, CONFIG)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let memory = rt.block_on(async {
        let conn = connect(bus.address()).await?;
        let pid = Procs::find(&conn, bus).await?.omadmd;
        tokio::time::sleep(SETTLE).await;
        let idle = Rss::of(pid)?;
        bulk_read::create(&conn, INSTANCES).await?;
        tokio::time::sleep(SETTLE).await;
        let loaded = Rss::of(pid)?;
        let start = Instant::now();
        let (bytes, text) = bulk_read::get_json(&conn, true).await?;
        let read = start.elapsed();
        let after = Rss::of(pid)?;
        let items: Vec<serde::de::IgnoredAny> =
            serde_json::from_str(text.as_deref().unwrap_or_default())?;
        if items.len() != INSTANCES {
            return Err(format!(
                "GetJson returned {} instances, expected {INSTANCES}",
                items.len()
            )
            .into());
        }
        drop((text, items));
        tokio::time::sleep(SETTLE).await;
        let later = Rss::of(pid)?;
        let start = Instant::now();
        let get_nodes = bulk_read::get_leaves(&conn, Some(INSTANCES)).await?;
        let get_read = start.elapsed();
        let get_after = Rss::of(pid)?;
        tokio::time::sleep(SETTLE).await;
        let get_later = Rss::of(pid)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Memory {
            idle,
            loaded,
            after,
            later,
            read,
            bytes,
            get_after,
            get_later,
            get_read,
            get_nodes,
        })
    });
    drop(rt);
    let (clean, _state) = daemon.stop();
    let memory = memory?;
    if !clean {
        return Err("the memory part's omadmd did not exit cleanly on SIGTERM".into());
    }
    Ok(memory)
}

impl Memory {
    /// Its rows of the table and its notes.
    pub fn report(&self, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
        let n = group(&INSTANCES.to_string());
        let row = |name: String, ours: Rss, base: Option<Rss>, target| Row {
            name,
            unit: "KiB",
            ours: ours.kib(),
            ours_p99: None,
            base: base.map(Rss::kib),
            base_p99: None,
            target,
        };
        rows.push(row(
            "RSS idle, fresh daemon".into(),
            self.idle,
            None,
            Some(Target::AtMost(GOAL_IDLE_KIB)),
        ));
        rows.push(row(
            format!("RSS idle, {n} instances / fresh"),
            self.loaded,
            Some(self.idle),
            None,
        ));
        rows.push(row(
            format!("RSS after GetJson of {n} / before"),
            self.after,
            Some(self.loaded),
            None,
        ));
        rows.push(row(
            format!("RSS {} s after it / before", SETTLE.as_secs()),
            self.later,
            Some(self.loaded),
            Some(Target::AboveBaseAtMost(NEAR_KIB)),
        ));
        rows.push(row(
            format!("RSS after Get of {n} x {} / before", bulk_read::LEAVES),
            self.get_after,
            Some(self.later),
            None,
        ));
        rows.push(row(
            format!("RSS {} s after it / before", SETTLE.as_secs()),
            self.get_later,
            Some(self.later),
            Some(Target::AboveBaseAtMost(NEAR_KIB)),
        ));
        notes.push(format!(
            "memory around one Get of every leaf of the {n} instances ({} nodes, {} ms): \
             before {}, right after {}, {} s later {}",
            group(&self.get_nodes.to_string()),
            num(self.get_read.as_secs_f64() * 1e3),
            self.later.parts(),
            self.get_after.parts(),
            SETTLE.as_secs(),
            self.get_later.parts(),
        ));
        notes.push(format!(
            "memory (VmRSS, KiB: all (anonymous + file-backed)): fresh idle {}, {n} instances \
             created and {} s idle {}, right after one GetJson of them all ({} bytes of JSON, \
             {} ms) {}, {} s later {}; \"back near idle\" means at most {} KiB above the idle \
             figure before the read; obuspa 11.0.4 idle {} KiB (a constant measured on this \
             machine kind; ours {:.2}x of it; goal <= {} KiB)",
            self.idle.parts(),
            SETTLE.as_secs(),
            self.loaded.parts(),
            group(&self.bytes.to_string()),
            num(self.read.as_secs_f64() * 1e3),
            self.after.parts(),
            SETTLE.as_secs(),
            self.later.parts(),
            num(NEAR_KIB),
            group(&format!("{OBUSPA_IDLE_KIB:.0}")),
            self.idle.kib() / OBUSPA_IDLE_KIB,
            num(GOAL_IDLE_KIB),
        ));
    }
}
