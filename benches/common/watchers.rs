//! Room for 1,000 watcher connections, shared by the benches that register them (`dbus`,
//! `load`): the open-file limit of the bench process and the private bus's per-uid
//! connection limit. Included with `#[path]` by those benches only, so the others do not
//! compile the bus harness.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use crate::support::sysbus::SysBus;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Watcher connections the benches register.
pub const WATCHERS: usize = 1_000;
/// File descriptors kept free beside the watchers (the bench's own connections and files).
const SPARE_FDS: u64 = 128;

/// How many watchers this process can hold open: `WATCHERS`, after raising the soft
/// open-file limit up to the hard one if needed (`prlimit`, no libc needed), else fewer.
pub fn watcher_budget(bench: &str) -> Result<usize> {
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
        "{bench} bench: open-file limit {soft} (hard {hard}; prlimit: {status:?}): using {fit} watchers, not {WATCHERS}"
    );
    if fit == 0 {
        return Err(format!("open-file limit {soft} leaves no room for watchers").into());
    }
    Ok(fit)
}

/// (soft, hard) `Max open files` of this process.
pub fn nofile_limits() -> Result<(u64, u64)> {
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
/// its `bus.d` directory; the limit takes effect once the bus reloads its configuration.
pub fn raise_bus_limits(bus: &SysBus) -> Result<()> {
    let conf = bus.dir().join("bus.d/omadmd-bench-limits.conf");
    std::fs::write(
        &conf,
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- omadmd benches: room for 1,000 watcher connections of one uid -->
<busconfig>
  <limit name="max_connections_per_user">4096</limit>
  <limit name="max_completed_connections">4096</limit>
</busconfig>
"#,
    )?;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}
