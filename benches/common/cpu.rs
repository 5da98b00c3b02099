//! CPU accounting for the benches that run the real daemon on a private bus (`dbus`,
//! `write`): CPU time of every thread of omadmd, dbus-daemon and the bench itself, read from
//! `/proc`. Included with `#[path]` by those benches only, so the others do not compile the
//! bus harness.

use std::time::Duration;

use crate::common::num;
use crate::support::sysbus::SysBus;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The processes that do the work: omadmd and dbus-daemon (and this bench).
pub struct Procs {
    pub omadmd: u32,
    pub bus: u32,
}

/// CPU time (all threads) of omadmd, dbus-daemon and this bench.
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub omadmd: Duration,
    pub bus: Duration,
    pub bench: Duration,
}

impl Procs {
    /// omadmd by its bus name (`org.omadm.Client1`); dbus-daemon from the harness's PID
    /// record.
    pub async fn find(conn: &zbus::Connection, bus: &SysBus) -> Result<Procs> {
        let omadmd = zbus::fdo::DBusProxy::new(conn)
            .await?
            .get_connection_unix_process_id("org.omadm.Client1".try_into()?)
            .await?;
        Ok(Procs {
            omadmd,
            bus: harness_pid(bus, "dbus")?,
        })
    }

    pub fn cpu(&self) -> Cpu {
        Cpu {
            omadmd: cpu_time(self.omadmd),
            bus: cpu_time(self.bus),
            bench: cpu_time(std::process::id()),
        }
    }
}

/// The PID of the harness's process `name` (`dbus`, `polkitd`), from its record (`pids`:
/// lines of name, PID and start time; the last one counts).
pub fn harness_pid(bus: &SysBus, name: &str) -> Result<u32> {
    let pids = std::fs::read_to_string(bus.dir().join("pids"))?;
    pids.lines()
        .rev()
        .find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next()? == name).then_some(())?;
            cols.next()?.parse().ok()
        })
        .ok_or_else(|| format!("the harness recorded no {name} PID").into())
}

/// Time on CPU of every live thread of `pid` (`/proc/<pid>/task/*/schedstat`, ns).
pub fn cpu_time(pid: u32) -> Duration {
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
    /// `omadmd / dbus-daemon / bench` per one of `n`, in units of `unit_secs` seconds.
    pub fn per(&self, n: usize, unit_secs: f64) -> String {
        let f = |d: Duration| num(d.as_secs_f64() / n as f64 / unit_secs);
        format!("{} / {} / {}", f(self.omadmd), f(self.bus), f(self.bench))
    }
}
