//! Callers that run as a systemd system service, without systemd: a cgroup v2 directory
//! `system.slice/<name>.service` made for the test (below the cgroup2 mount found in
//! `/proc/self/mountinfo`), which processes enter before they exec — as systemd puts a
//! service's processes in its unit's cgroup. omadmd names such a caller `app:<name>`.
//!
//! The move is done as root, in the child between fork and exec: moving a process takes
//! write access to the cgroup it leaves too, so a process of a test user could not enter
//! the unit by itself (which is the point). Dropping the [`SystemUnit`] kills what is still
//! in it and removes the directory.
//!
//! omadmd takes a unit's process for the app only when it runs as the unit's main process
//! (the one that started first in the unit); [`SystemUnit::start_main`] starts one as a
//! given user, as systemd starts a service's `ExecStart=` as its `User=`. In a unit without
//! one, the first process to enter is its main process.
//!
//! ```ignore
//! let unit = SystemUnit::new("omadmd-t-weather");
//! let _main = unit.start_main(&bus, Some(&alice));
//! let mut cmd = bus.command(Some(&alice), "gdbus");
//! unit.contain(&mut cmd); // alice's gdbus is app:<unit.name()>; bob's would be uid:<bob>
//! ```

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::sysbus::{KillOnDrop, SysBus, TestUser, wait_until};

/// A system service's cgroup, made for a test; removed on drop.
pub struct SystemUnit {
    name: String,
    dir: PathBuf,
}

impl SystemUnit {
    /// A new unit named `<stem>-<test pid>-<n>.service`, so that tests running at once never
    /// share one.
    pub fn new(stem: &str) -> SystemUnit {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{stem}-{}-{}.service",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = cgroup2_mount().join("system.slice").join(&name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create the cgroup {}: {e}", dir.display()));
        SystemUnit { name, dir }
    }

    /// The unit name, `….service`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The principal omadmd gives its processes: `app:<name>`.
    pub fn principal(&self) -> String {
        format!("app:{}", self.name)
    }

    /// Makes `cmd`'s process start in this unit: it moves into the cgroup before exec.
    pub fn contain<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        let procs_path = self.dir.join("cgroup.procs");
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs_path)
            .unwrap_or_else(|e| panic!("{}: {e}", procs_path.display()));
        // SAFETY: between fork and exec the closure makes one write(2) on a file opened
        // before the fork ("0": move the writing process); it allocates nothing and takes
        // no locks, so it is safe in the child of a multi-threaded process.
        unsafe { cmd.pre_exec(move || (&procs).write_all(b"0")) }
    }
}

impl SystemUnit {
    /// Starts the unit's main process, a `sleep` running as `user` (None: root) until the
    /// returned handle is dropped. Start it before any other process enters the unit.
    pub fn start_main(&self, bus: &SysBus, user: Option<&TestUser>) -> KillOnDrop {
        let mut sleep = bus.command(user, "sleep");
        sleep.arg("infinity");
        self.contain(&mut sleep);
        // In the unit once spawned (it moved before exec); running as `user` once `setpriv`
        // has exec'd `sleep`.
        let main = KillOnDrop::spawn(&mut sleep);
        let exe = PathBuf::from(format!("/proc/{}/exe", main.id()));
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::read_link(&exe)
                .is_ok_and(|p| p.ends_with("sleep"))),
            "the main process of {} did not start",
            self.name
        );
        main
    }
}

impl Drop for SystemUnit {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        let empty = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(self.dir.join("cgroup.events"))
                .is_ok_and(|e| e.lines().any(|l| l == "populated 0"))
        });
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!(
                "cannot remove the test cgroup {} (emptied: {empty}): {e}",
                self.dir.display()
            );
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid system), from `/proc/self/mountinfo`.
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo");
    info.lines()
        .find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            (fs.split_whitespace().next()? == "cgroup2")
                .then(|| mount.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .unwrap_or_else(|| panic!("no cgroup2 file system is mounted:\n{info}"))
}
