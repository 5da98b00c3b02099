//! Who is calling: the caller's uid as the bus reports it and, only where the platform
//! vouches for it, the app behind the caller — read by the daemon from what the kernel
//! shows of the caller's process in `/proc`, never from anything the caller says. The
//! functions here take the `/proc` root as a parameter, so the tests run them on a fake
//! tree.
//!
//! # What names an app
//!
//! A local caller is an app only where the caller cannot choose the name itself:
//!
//! - **A systemd system service**, for the callers that run as its user: the unit from the
//!   cgroup v2 line of `/proc/<pid>/cgroup`, `0::/system.slice/<name>.service[/…]`, when the
//!   caller's uid is the (effective) uid of the unit's main process. Only root creates
//!   cgroups below `system.slice` and moves processes into them; an unprivileged process
//!   cannot enter one, and one started there cannot leave its unit's subtree. User units
//!   (`/user.slice/…/user@<uid>.service/…`) are named by their user and do not count, nor do
//!   scopes.
//!
//!   The uid rule is there because a unit runs code for other users too: where `pam_systemd`
//!   does not move their work into a session scope of its own, user cron and at jobs stay in
//!   `cron.service` or `atd.service`, `.forward` pipes in the mail service, and sessions of an
//!   sshd without `UsePAM` in `ssh.service`. Those run as their users, the unit's main
//!   process does not; so they are their users here, not the unit.
//!
//!   With no systemd to ask, the main process is taken to be the process in the unit's
//!   cgroup subtree (`cgroup.procs` of the unit's cgroup and of every cgroup below it, under
//!   the cgroup v2 mount of `/proc/self/mountinfo`) that started first; processes started at
//!   that same tick must all run as one uid. Limits of the rule: a service whose main
//!   process runs as root and that runs code as other users (a root daemon with per-user
//!   workers) is no app for any caller — root is the admin anyway, the others their users;
//!   a service whose processes are not all visible in the daemon's pid namespace, whose
//!   cgroup tree is larger than this module reads (`MAX_CGROUPS`, `MAX_READ` per file), or
//!   that runs in no cgroup v2 hierarchy the daemon sees names no app either. And where a
//!   unit is restarted without its remaining processes being killed (`KillMode=process` or
//!   `none`, as `cron.service` has), a process left behind whose parents in the unit have all
//!   exited is older than the new main process: if it runs as another user, that user is
//!   taken for the unit until the process ends.
//! - **A Flatpak app**: `name=` of the `[Application]` group in `/.flatpak-info` of the
//!   process's root, but only when the process is in the daemon's own user namespace and in
//!   a mount namespace of its own. Flatpak (xdg-desktop-portal, xdg-dbus-proxy) trusts that
//!   file because the *sandboxed app* cannot change it: bubblewrap bind-mounts it read-only
//!   and the sandbox forbids new user namespaces and mounts. Nothing stops a process outside
//!   any sandbox from building one of its own, though: any user may create a user namespace
//!   (`unshare -Urm`), mount a tmpfs holding a `.flatpak-info` that names any app, and make
//!   it its root. The portal accepts that (on the session bus such a process could act as
//!   its user anyway); a system service must not, since an app principal is shared between
//!   users. Choosing one's root takes privilege in one's user namespace, which an
//!   unprivileged process only has in a user namespace it created; so a process that shares
//!   the daemon's user namespace and has a root of its own had it built by someone
//!   privileged. The price: Flatpak apps sandboxed by an unprivileged bubblewrap (the default
//!   wherever unprivileged user namespaces are allowed) are their user here. What this rule
//!   cannot see: a setuid-root sandbox tool that lets users choose a sandbox's files
//!   (setuid bubblewrap, firejail) builds such a root for anyone; where one is installed,
//!   Flatpak app ids are only as trustworthy as that tool.
//!
//! Every other caller is its user, whatever binary it runs.
//!
//! # A pid that changed hands
//!
//! The bus reports the pid of the process that opened the connection. That process may
//! have handed the connection to another (fork) and exited, and its pid may then belong to
//! someone else. Where the bus also hands over a pidfd (`ProcessFD`), the pidfd pins the
//! connecting process: its pid is read from the pidfd before and after reading `/proc`, and
//! a pidfd whose process has gone no longer shows one. Otherwise (dbus-daemon 1.14) the
//! process start time (`/proc/<pid>/stat`) is read before and after, must not change, and
//! must not be later than the moment the daemon first saw the connection's unique name: a
//! process that started after its connection existed did not open it (the daemon notes that
//! moment as it handles the bus's `NameOwnerChanged`, or the first call if that comes
//! first; a daemon kept busy notes it late, which widens what passes). Both are clock ticks
//! since boot (usually 1/100 s), so "later" is judged to the tick: a process that took over
//! the pid within the very tick in which the name was first seen would pass. Getting there
//! takes the pid to come round (pids are handed out in turn, not reused at once) and the new
//! process to start within those few milliseconds.

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

/// The longest `/proc` or cgroup file or `.flatpak-info` read, in bytes.
const MAX_READ: u64 = 64 * 1024;
/// The most cgroups of one unit examined to find its main process.
const MAX_CGROUPS: usize = 1024;
/// `AT_CLKTCK` in the auxiliary vector: the unit of process start times.
const AT_CLKTCK: usize = 17;

/// A caller's identity, fixed for its bus connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: u32,
    /// The app the platform names (a Flatpak app id or a system unit), if any.
    pub app_id: Option<String>,
}

/// What the bus reports about a connection, with when the daemon first saw it.
#[derive(Debug)]
pub struct Credentials {
    pub uid: u32,
    pub pid: u32,
    /// The pidfd of the connecting process, where the bus offers `ProcessFD`.
    pub pidfd: Option<OwnedFd>,
    /// When the daemon first saw the connection's unique name, in clock ticks since boot;
    /// `None` when the clock could not be read.
    pub first_seen: Option<u64>,
}

/// Why the app behind a connection cannot be established: the caller is then its user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error(
        "process {pid} started after its bus connection was first seen, so the pid changed hands"
    )]
    StartedLater { pid: u32 },
    #[error("process {pid} changed while it was examined")]
    Changed { pid: u32 },
    #[error("the boot clock ({0}) cannot be read")]
    NoClock(PathBuf),
    #[error("process {pid} runs as uid {uid} in {unit}, whose main process runs as uid {main_uid}")]
    NotTheUnitsUser {
        pid: u32,
        uid: u32,
        unit: String,
        main_uid: u32,
    },
    #[error("the main process of {unit} (process {pid}'s unit) cannot be told")]
    NoMainProcess { pid: u32, unit: String },
}

/// `/proc` (or a fake tree in tests), the unit of its process start times and the cgroup
/// v2 hierarchy its processes are in.
#[derive(Clone, Debug)]
pub struct Procfs {
    root: PathBuf,
    ticks_per_second: Option<u64>,
    /// Where the cgroup v2 hierarchy is mounted; `None`: nowhere the daemon sees.
    cgroup2: Option<PathBuf>,
}

impl Procfs {
    /// The tree at `root`; reads the clock tick rate from `root/self/auxv` and the cgroup v2
    /// mount from `root/self/mountinfo`.
    pub fn new(root: impl Into<PathBuf>) -> Procfs {
        let root = root.into();
        let ticks_per_second = read_bytes(&root.join("self/auxv"))
            .ok()
            .and_then(|auxv| clock_ticks(&auxv));
        let cgroup2 = read_text(&root.join("self/mountinfo"))
            .ok()
            .and_then(|info| cgroup2_mount(&info));
        Procfs {
            root,
            ticks_per_second,
            cgroup2,
        }
    }

    /// Clock ticks since boot, now (`uptime`, in the unit of process start times).
    pub fn now_ticks(&self) -> Option<u64> {
        let hz = self.ticks_per_second?;
        let uptime = read_text(&self.root.join("uptime")).ok()?;
        uptime_ticks(&uptime, hz)
    }

    /// The app the platform names for the process behind `creds`, if any; refused when that
    /// process cannot be shown to be the one that opened the connection.
    pub fn app_id(&self, creds: &Credentials) -> Result<Option<String>, Refused> {
        match &creds.pidfd {
            Some(fd) => {
                let pid = self.pidfd_pid(fd, creds.pid)?;
                let app = self.platform_app(pid, creds.uid);
                if self.pidfd_pid(fd, pid)? != pid {
                    return Err(Refused::Changed { pid });
                }
                app
            }
            None => {
                let pid = creds.pid;
                let first_seen = creds
                    .first_seen
                    .ok_or_else(|| Refused::NoClock(self.root.join("uptime")))?;
                let before = self.start_time(pid)?;
                let app = self.platform_app(pid, creds.uid);
                let after = self.start_time(pid)?;
                same_process(pid, before, after, first_seen)?;
                app
            }
        }
    }

    /// A Flatpak app id where the sandbox is trustworthy, else the system unit of process
    /// `pid` if `uid` (the caller's) is its main process's.
    fn platform_app(&self, pid: u32, uid: u32) -> Result<Option<String>, Refused> {
        if let Some(app) = self.flatpak_app(pid) {
            return Ok(Some(app));
        }
        let Some(unit) = read_text(&self.pid_dir(pid).join("cgroup"))
            .ok()
            .and_then(|cgroup| system_unit(&cgroup))
        else {
            return Ok(None);
        };
        match self.main_uid(&unit) {
            Some(main_uid) if main_uid == uid => Ok(Some(unit)),
            Some(main_uid) => Err(Refused::NotTheUnitsUser {
                pid,
                uid,
                unit,
                main_uid,
            }),
            None => Err(Refused::NoMainProcess { pid, unit }),
        }
    }

    /// The effective uid of the main process of the system unit `unit`: of the process in
    /// the unit's cgroup subtree that started first (see the module documentation). `None`
    /// when it cannot be told: no cgroup v2 mount, a cgroup or process the daemon cannot
    /// see, more than [`MAX_CGROUPS`] cgroups, or first processes of different uids.
    fn main_uid(&self, unit: &str) -> Option<u32> {
        let top = self.cgroup2.as_ref()?.join("system.slice").join(unit);
        let mut pending = vec![top];
        let mut seen = 0;
        let mut first: Option<(u64, u32)> = None;
        let mut tied_uids_differ = false;
        while let Some(dir) = pending.pop() {
            seen += 1;
            if seen > MAX_CGROUPS {
                return None;
            }
            for pid in cgroup_procs(&read_text_whole(&dir.join("cgroup.procs")).ok()?)? {
                // Gone since it was listed: it is no main process.
                let Some((start, uid)) = self.start_and_uid(pid) else {
                    continue;
                };
                match first {
                    Some((s, _)) if s < start => {}
                    Some((s, u)) if s == start => tied_uids_differ |= u != uid,
                    _ => {
                        first = Some((start, uid));
                        tied_uids_differ = false;
                    }
                }
            }
            for entry in std::fs::read_dir(&dir).ok()? {
                let entry = entry.ok()?;
                if entry.file_type().ok()?.is_dir() {
                    pending.push(entry.path());
                }
            }
        }
        let (_, uid) = first?;
        (!tied_uids_differ).then_some(uid)
    }

    /// The start time and effective uid of process `pid`, read as one process: its start
    /// time is the same before and after its uid is read.
    fn start_and_uid(&self, pid: u32) -> Option<(u64, u32)> {
        let before = self.start_time(pid).ok()?;
        let uid = effective_uid(&read_text(&self.pid_dir(pid).join("status")).ok()?)?;
        let after = self.start_time(pid).ok()?;
        (before == after).then_some((before, uid))
    }

    fn flatpak_app(&self, pid: u32) -> Option<String> {
        let dir = self.pid_dir(pid);
        let link = |p: &Path| std::fs::read_link(p).ok();
        let own_user_ns = link(&dir.join("ns/user"))? == link(&self.root.join("self/ns/user"))?;
        let own_root = link(&dir.join("ns/mnt"))? != link(&self.root.join("self/ns/mnt"))?;
        if !own_user_ns || !own_root {
            return None;
        }
        let info = dir.join("root/.flatpak-info");
        // Not followed: a symbolic link would resolve in the daemon's root, not the caller's.
        let meta = std::fs::symlink_metadata(&info).ok()?;
        if !meta.is_file() || meta.len() > MAX_READ {
            return None;
        }
        flatpak_app(&read_text(&info).ok()?)
    }

    /// The pid a pidfd refers to, as `/proc/self/fdinfo` shows it; gone (the process the bus
    /// reported as `pid`) when it shows none.
    fn pidfd_pid(&self, fd: &OwnedFd, pid: u32) -> Result<u32, Refused> {
        let fdinfo = self.root.join(format!("self/fdinfo/{}", fd.as_raw_fd()));
        read_text(&fdinfo)
            .ok()
            .and_then(|text| fdinfo_pid(&text))
            .ok_or(Refused::Gone { pid })
    }

    fn start_time(&self, pid: u32) -> Result<u64, Refused> {
        read_text(&self.pid_dir(pid).join("stat"))
            .ok()
            .and_then(|stat| start_time(&stat))
            .ok_or(Refused::Gone { pid })
    }

    fn pid_dir(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string())
    }
}

/// The process examined is the one that opened the connection: it did not change while it
/// was read and had started by the time the connection was first seen.
fn same_process(pid: u32, before: u64, after: u64, first_seen: u64) -> Result<(), Refused> {
    if before != after {
        Err(Refused::Changed { pid })
    } else if before > first_seen {
        Err(Refused::StartedLater { pid })
    } else {
        Ok(())
    }
}

fn read_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_READ)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_bytes(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Like [`read_text`], but a file longer than [`MAX_READ`] is an error instead of cut short
/// (a list cut short could leave out what matters).
fn read_text_whole(path: &Path) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_READ + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_READ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("{} is longer than {MAX_READ} bytes", path.display()),
        ));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`: the first
/// `cgroup2` mount of the hierarchy's root (`/`). Mount points are taken as they are
/// written; one that needed escaping (`\040` for a space) is not found later, which only
/// means no process is taken for a system unit.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut fields = mount.split_whitespace();
        let (root, point) = (fields.nth(3)?, fields.next()?);
        (fs.split_whitespace().next()? == "cgroup2" && root == "/").then(|| PathBuf::from(point))
    })
}

/// The pids of a `cgroup.procs` file; `None` if one is not a pid of the daemon's pid
/// namespace (0: a process outside it) or not a number.
fn cgroup_procs(procs: &str) -> Option<Vec<u32>> {
    procs
        .split_whitespace()
        .map(|p| p.parse().ok().filter(|&pid| pid != 0))
        .collect()
}

/// The effective uid of a `/proc/<pid>/status` (`Uid:` real, effective, saved, fs).
fn effective_uid(status: &str) -> Option<u32> {
    let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    ids.split_whitespace().nth(1)?.parse().ok()
}

/// The `name=` of the `[Application]` group of a `.flatpak-info` file, if it is a valid
/// Flatpak app id.
fn flatpak_app(info: &str) -> Option<String> {
    let mut in_app = false;
    for line in info.lines().map(str::trim) {
        if line.starts_with('[') {
            in_app = line == "[Application]";
        } else if in_app && let Some(name) = line.strip_prefix("name=") {
            let name = name.trim();
            return valid_flatpak_id(name).then(|| name.to_owned());
        }
    }
    None
}

/// Flatpak's rule for app ids: at most 255 bytes, three or more dot-separated elements of
/// `[A-Za-z0-9_-]` not starting with a digit, `-` only in the last one.
fn valid_flatpak_id(id: &str) -> bool {
    let elements: Vec<&str> = id.split('.').collect();
    let last = elements.len() - 1;
    id.len() <= 255
        && elements.len() >= 3
        && elements.iter().enumerate().all(|(i, e)| {
            let dash_ok = i == last;
            e.bytes().next().is_some_and(|b| !b.is_ascii_digit())
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dash_ok && b == b'-'))
        })
}

/// The system service a process runs in, from its cgroup v2 line
/// (`0::/system.slice/x.service[/…]`).
fn system_unit(cgroup: &str) -> Option<String> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rest = path.strip_prefix("/system.slice/")?;
    let unit = rest.split('/').next()?;
    let valid = unit.len() <= 255
        && unit.strip_suffix(".service").is_some_and(|n| !n.is_empty())
        && unit
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@\\".contains(&b));
    valid.then(|| unit.to_owned())
}

/// Field 22 of `/proc/<pid>/stat`, the start time in clock ticks since boot. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its `)`.
fn start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The `Pid:` of a pidfd's fdinfo; `None` once the process is gone (`-1`).
fn fdinfo_pid(fdinfo: &str) -> Option<u32> {
    let value = fdinfo.lines().find_map(|l| l.strip_prefix("Pid:"))?;
    value.trim().parse().ok()
}

/// `/proc/uptime` ("seconds.hundredths idle") in ticks of `hz` per second.
fn uptime_ticks(uptime: &str, hz: u64) -> Option<u64> {
    let up = uptime.split_whitespace().next()?;
    let (secs, frac) = up.split_once('.').unwrap_or((up, "0"));
    let secs: u64 = secs.parse().ok()?;
    let hundredths: u64 = format!("{frac:0<2}").get(..2)?.parse().ok()?;
    let centis = secs.checked_mul(100)?.checked_add(hundredths)?;
    Some(centis.checked_mul(hz)? / 100)
}

/// `AT_CLKTCK` from an auxiliary vector (native-endian machine words, type then value).
fn clock_ticks(auxv: &[u8]) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    auxv.chunks_exact(2 * WORD).find_map(|pair| {
        let (key, value) = pair.split_at(WORD);
        let key = usize::from_ne_bytes(key.try_into().ok()?);
        let value = usize::from_ne_bytes(value.try_into().ok()?);
        (key == AT_CLKTCK && value > 0).then_some(value as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake `/proc` with the daemon's own entries (`self/ns`, `uptime` at 10.00 s, a
    /// tick rate of 100, a `mountinfo` with a fake cgroup v2 tree at `cgroup/` next to it)
    /// and process 42 of uid 1000 started at tick 500, in cgroup `cgroup` (listed in that
    /// cgroup's `cgroup.procs` too).
    fn fake_proc(cgroup: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("self/ns")).unwrap();
        symlink("user:[1]", root.join("self/ns/user")).unwrap();
        symlink("mnt:[10]", root.join("self/ns/mnt")).unwrap();
        let auxv: Vec<u8> = [6usize, 4096, AT_CLKTCK, 100, 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        std::fs::write(root.join("self/auxv"), auxv).unwrap();
        std::fs::write(
            root.join("self/mountinfo"),
            format!(
                "24 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                 31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                 41 31 0:38 / {} rw,relatime - cgroup2 cgroup2 rw\n",
                root.join("cgroup").display()
            ),
        )
        .unwrap();
        std::fs::write(root.join("uptime"), "10.00 19.50\n").unwrap();
        process(root, 42, 500, 1000);
        std::fs::create_dir_all(root.join("42/ns")).unwrap();
        std::fs::create_dir_all(root.join("42/root")).unwrap();
        std::fs::write(root.join("42/cgroup"), cgroup).unwrap();
        if let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::/")) {
            in_cgroup(root, path, &[42]);
        }
        dir
    }

    /// Process `pid` of effective uid `uid` (its real uid is 4242), started at tick `start`.
    fn process(root: &Path, pid: u32, start: u64, uid: u32) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stat"), stat_with_start(start)).unwrap();
        std::fs::write(
            dir.join("status"),
            format!("Name:\tx\nPid:\t{pid}\nUid:\t4242\t{uid}\t{uid}\t{uid}\nGid:\t1\t1\t1\t1\n"),
        )
        .unwrap();
    }

    /// Adds `pids` to the fake cgroup `path` (below the cgroup v2 mount); every cgroup on
    /// the way has a `cgroup.procs`, as in the real tree.
    fn in_cgroup(root: &Path, path: &str, pids: &[u32]) {
        let dir = root.join("cgroup").join(path);
        std::fs::create_dir_all(&dir).unwrap();
        for cgroup in dir
            .ancestors()
            .take_while(|d| d.starts_with(root.join("cgroup")))
        {
            let procs = cgroup.join("cgroup.procs");
            if !procs.exists() {
                std::fs::write(procs, "").unwrap();
            }
        }
        let procs = dir.join("cgroup.procs");
        let mut listed = std::fs::read_to_string(&procs).unwrap_or_default();
        for pid in pids {
            listed.push_str(&format!("{pid}\n"));
        }
        std::fs::write(procs, listed).unwrap();
    }

    fn stat_with_start(start: u64) -> String {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[22 - 3] = start.to_string();
        format!("42 (we ird) name) {}\n", fields.join(" "))
    }

    /// Puts process 42 in user namespace `user` and mount namespace `mnt`, with a
    /// `.flatpak-info` naming `app`.
    fn sandbox(root: &Path, user: &str, mnt: &str, app: &str) {
        symlink(user, root.join("42/ns/user")).unwrap();
        symlink(mnt, root.join("42/ns/mnt")).unwrap();
        std::fs::write(
            root.join("42/root/.flatpak-info"),
            format!("[Application]\nname={app}\nruntime=x\n[Instance]\ninstance-id=1\n"),
        )
        .unwrap();
    }

    fn creds(first_seen: u64) -> Credentials {
        Credentials {
            uid: 1000,
            pid: 42,
            pidfd: None,
            first_seen: Some(first_seen),
        }
    }

    #[test]
    fn flatpak_ids_come_from_the_application_group() {
        let info = "[Instance]\nname=evil.x.y\n[Application]\nname=org.example.Weather\n";
        assert_eq!(flatpak_app(info).as_deref(), Some("org.example.Weather"));
        assert_eq!(flatpak_app("[Instance]\nname=a.b.c\n"), None);
        for bad in [
            "org.example",
            "org..Weather",
            "org.example.1Weather",
            "org.ex-ample.Weather",
            "/usr/bin/weather",
            "org.example.Weather app",
        ] {
            assert_eq!(
                flatpak_app(&format!("[Application]\nname={bad}\n")),
                None,
                "{bad}"
            );
        }
        assert!(valid_flatpak_id("org.example.Weather-beta"));
    }

    #[test]
    fn only_system_services_count() {
        assert_eq!(
            system_unit("0::/system.slice/weather.service\n").as_deref(),
            Some("weather.service")
        );
        assert_eq!(
            system_unit("1:name=systemd:/x\n0::/system.slice/a-b@1.service/sub\n").as_deref(),
            Some("a-b@1.service")
        );
        for other in [
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/weather.service\n",
            "0::/system.slice/cron.scope\n",
            "0::/system.slice/.service\n",
            "0::/system.slice/we ather.service\n",
            "0::/\n",
            "0::/../system.slice/weather.service\n",
            "1:name=systemd:/system.slice/weather.service\n",
        ] {
            assert_eq!(system_unit(other), None, "{other}");
        }
    }

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // A bind mount of a subtree does not show the whole hierarchy.
        let subtree = "50 1 0:38 /system.slice /mnt/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(subtree), None);
        assert_eq!(cgroup2_mount("24 1 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
    }

    #[test]
    fn procs_and_uids_are_read_strictly() {
        assert_eq!(cgroup_procs("7\n42\n"), Some(vec![7, 42]));
        assert_eq!(cgroup_procs(""), Some(vec![]));
        assert_eq!(cgroup_procs("7\n0\n"), None);
        assert_eq!(cgroup_procs("7\nx\n"), None);
        assert_eq!(
            effective_uid("Name:\tcron\nUid:\t0\t1000\t0\t1000\n"),
            Some(1000)
        );
        assert_eq!(effective_uid("Uid:\t0\n"), None);
    }

    /// A unit `x.service` whose processes are 42 (uid 1000, started at 500) and `others`
    /// (pid, start, uid) in the cgroups given; what process 42 is taken for.
    fn in_unit(others: &[(&str, u32, u64, u32)]) -> Result<Option<String>, Refused> {
        let dir = fake_proc("0::/system.slice/x.service/jobs\n");
        for &(cgroup, pid, start, uid) in others {
            process(dir.path(), pid, start, uid);
            in_cgroup(dir.path(), cgroup, &[pid]);
        }
        Procfs::new(dir.path()).app_id(&creds(900))
    }

    #[test]
    fn a_unit_is_the_app_of_its_main_processs_user_only() {
        let not_root = |main_uid| {
            Err(Refused::NotTheUnitsUser {
                pid: 42,
                uid: 1000,
                unit: "x.service".into(),
                main_uid,
            })
        };
        // Alone in its unit, 42 is its main process.
        assert_eq!(in_unit(&[]), Ok(Some("x.service".into())));
        // A service running as 42's user, with its main process at the unit's top.
        assert_eq!(
            in_unit(&[("system.slice/x.service", 7, 100, 1000)]),
            Ok(Some("x.service".into()))
        );
        // A user's job in a service running as root (cron), wherever in the unit its main
        // process is: the user.
        assert_eq!(
            in_unit(&[("system.slice/x.service", 7, 100, 0)]),
            not_root(0)
        );
        assert_eq!(
            in_unit(&[("system.slice/x.service/main", 7, 100, 0)]),
            not_root(0)
        );
        // Another user's process started earlier is the main one, even if later ones are
        // 42's user's.
        assert_eq!(
            in_unit(&[
                ("system.slice/x.service/jobs", 8, 300, 1000),
                ("system.slice/x.service/main", 7, 100, 2000),
            ]),
            not_root(2000)
        );
        // Processes of other units do not count.
        assert_eq!(
            in_unit(&[("system.slice/y.service", 7, 100, 0)]),
            Ok(Some("x.service".into()))
        );
    }

    #[test]
    fn a_unit_whose_main_process_is_unclear_names_no_app() {
        let unclear = Err(Refused::NoMainProcess {
            pid: 42,
            unit: "x.service".into(),
        });
        // Two first processes of different users.
        assert_eq!(
            in_unit(&[
                ("system.slice/x.service", 7, 100, 1000),
                ("system.slice/x.service", 8, 100, 0),
            ]),
            unclear
        );
        // A process from outside the daemon's pid namespace.
        let dir = fake_proc("0::/system.slice/x.service\n");
        in_cgroup(dir.path(), "system.slice/x.service", &[0]);
        assert_eq!(Procfs::new(dir.path()).app_id(&creds(900)), unclear);
        // More cgroups than are read.
        let dir = fake_proc("0::/system.slice/x.service\n");
        for n in 0..MAX_CGROUPS {
            in_cgroup(dir.path(), &format!("system.slice/x.service/c{n}"), &[]);
        }
        assert_eq!(Procfs::new(dir.path()).app_id(&creds(900)), unclear);
        // No cgroup v2 mount.
        let dir = fake_proc("0::/system.slice/x.service\n");
        std::fs::write(dir.path().join("self/mountinfo"), "").unwrap();
        assert_eq!(Procfs::new(dir.path()).app_id(&creds(900)), unclear);
        // Tied first processes of one user are fine; a process that left is no main one.
        assert_eq!(
            in_unit(&[
                ("system.slice/x.service", 7, 100, 1000),
                ("system.slice/x.service", 8, 100, 1000),
            ]),
            Ok(Some("x.service".into()))
        );
        let dir = fake_proc("0::/system.slice/x.service\n");
        in_cgroup(dir.path(), "system.slice/x.service", &[7]);
        assert_eq!(
            Procfs::new(dir.path()).app_id(&creds(900)),
            Ok(Some("x.service".into()))
        );
    }

    #[test]
    fn start_times_survive_odd_command_names() {
        assert_eq!(start_time(&stat_with_start(123_456)), Some(123_456));
        assert_eq!(start_time("42 (x) S 1"), None);
        assert_eq!(start_time(""), None);
    }

    #[test]
    fn clocks_are_read_in_ticks() {
        assert_eq!(uptime_ticks("443.68 347.61\n", 100), Some(44_368));
        assert_eq!(uptime_ticks("443.6 1", 100), Some(44_360));
        assert_eq!(uptime_ticks("2.50 1", 1000), Some(2_500));
        assert_eq!(uptime_ticks("x 1", 100), None);
        let auxv: Vec<u8> = [AT_CLKTCK, 250usize, 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(clock_ticks(&auxv), Some(250));
        assert_eq!(clock_ticks(&auxv[..8]), None);
        let dir = fake_proc("0::/\n");
        assert_eq!(Procfs::new(dir.path()).now_ticks(), Some(1_000));
    }

    #[test]
    fn a_system_service_is_named_when_it_opened_the_connection() {
        let dir = fake_proc("0::/system.slice/weather.service\n");
        let proc = Procfs::new(dir.path());
        assert_eq!(
            proc.app_id(&creds(500)).unwrap().as_deref(),
            Some("weather.service")
        );
        assert_eq!(
            proc.app_id(&creds(900)).unwrap().as_deref(),
            Some("weather.service")
        );
    }

    #[test]
    fn a_process_that_started_after_the_connection_is_refused() {
        let dir = fake_proc("0::/system.slice/weather.service\n");
        let proc = Procfs::new(dir.path());
        assert_eq!(
            proc.app_id(&creds(499)),
            Err(Refused::StartedLater { pid: 42 })
        );
        let mut no_clock = creds(0);
        no_clock.first_seen = None;
        assert!(matches!(proc.app_id(&no_clock), Err(Refused::NoClock(_))));
        let mut gone = creds(900);
        gone.pid = 43;
        assert_eq!(proc.app_id(&gone), Err(Refused::Gone { pid: 43 }));
    }

    #[test]
    fn a_process_that_changed_while_read_is_refused() {
        assert_eq!(same_process(7, 5, 5, 5), Ok(()));
        assert_eq!(same_process(7, 5, 6, 9), Err(Refused::Changed { pid: 7 }));
        assert_eq!(
            same_process(7, 6, 6, 5),
            Err(Refused::StartedLater { pid: 7 })
        );
    }

    #[test]
    fn anyone_else_is_their_user() {
        let dir = fake_proc("0::/user.slice/user-1000.slice/session-2.scope\n");
        symlink("user:[1]", dir.path().join("42/ns/user")).unwrap();
        symlink("mnt:[10]", dir.path().join("42/ns/mnt")).unwrap();
        assert_eq!(Procfs::new(dir.path()).app_id(&creds(900)), Ok(None));
    }

    #[test]
    fn a_flatpak_sandbox_built_by_its_own_user_namespace_is_not_trusted() {
        let dir = fake_proc("0::/user.slice/user-1000.slice/app-flatpak.scope\n");
        sandbox(dir.path(), "user:[2]", "mnt:[11]", "org.example.Weather");
        assert_eq!(Procfs::new(dir.path()).app_id(&creds(900)), Ok(None));
    }

    #[test]
    fn a_flatpak_sandbox_in_the_daemons_user_namespace_names_the_app() {
        let dir = fake_proc("0::/system.slice/weather.service\n");
        sandbox(dir.path(), "user:[1]", "mnt:[11]", "org.example.Weather");
        assert_eq!(
            Procfs::new(dir.path()).app_id(&creds(900)),
            Ok(Some("org.example.Weather".to_owned()))
        );
    }

    #[test]
    fn a_flatpak_info_outside_a_sandbox_or_behind_a_link_is_ignored() {
        // In the daemon's own mount namespace: not a sandbox at all.
        let dir = fake_proc("0::/\n");
        sandbox(dir.path(), "user:[1]", "mnt:[10]", "org.example.Weather");
        assert_eq!(Procfs::new(dir.path()).app_id(&creds(900)), Ok(None));

        let dir = fake_proc("0::/\n");
        symlink("user:[1]", dir.path().join("42/ns/user")).unwrap();
        symlink("mnt:[11]", dir.path().join("42/ns/mnt")).unwrap();
        let real = dir.path().join("info");
        std::fs::write(&real, "[Application]\nname=org.example.Weather\n").unwrap();
        symlink(&real, dir.path().join("42/root/.flatpak-info")).unwrap();
        assert_eq!(Procfs::new(dir.path()).app_id(&creds(900)), Ok(None));
    }

    #[test]
    fn the_real_proc_tells_this_process_apart() {
        let proc = Procfs::new("/proc");
        let now = proc.now_ticks().expect("the boot clock");
        let uid = effective_uid(&std::fs::read_to_string("/proc/self/status").unwrap());
        let me = Credentials {
            uid: uid.expect("an effective uid"),
            pid: std::process::id(),
            pidfd: None,
            first_seen: Some(now),
        };
        // Which app this process is depends on where the tests run (the fake trees cover
        // that); here only the timing of the real process is at stake.
        assert_eq!(proc.app_id(&me), proc.platform_app(me.pid, me.uid));
        let before_me = Credentials {
            first_seen: Some(proc.start_time(me.pid).unwrap() - 1),
            ..me
        };
        assert_eq!(
            proc.app_id(&before_me),
            Err(Refused::StartedLater { pid: before_me.pid })
        );
    }

    #[test]
    fn a_pidfd_pins_the_process() {
        let dir = fake_proc("0::/system.slice/weather.service\n");
        let pidfd = OwnedFd::from(std::fs::File::open(dir.path().join("uptime")).unwrap());
        let fdinfo = dir.path().join("self/fdinfo");
        std::fs::create_dir_all(&fdinfo).unwrap();
        let fdinfo = fdinfo.join(pidfd.as_raw_fd().to_string());
        let mut with_fd = creds(0);
        with_fd.pidfd = Some(pidfd);
        let proc = Procfs::new(dir.path());

        // Started "after" first sight by the clock, but the pidfd says it is the same process.
        std::fs::write(&fdinfo, "pos:\t0\nflags:\t02000002\nPid:\t42\nNSpid:\t42\n").unwrap();
        assert_eq!(
            proc.app_id(&with_fd).unwrap().as_deref(),
            Some("weather.service")
        );
        std::fs::write(&fdinfo, "pos:\t0\nPid:\t-1\nNSpid:\t-1\n").unwrap();
        assert!(matches!(proc.app_id(&with_fd), Err(Refused::Gone { .. })));
    }
}
