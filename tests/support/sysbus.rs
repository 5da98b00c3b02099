//! A private, real D-Bus **system** bus with a real `polkitd`, for integration tests that
//! need omadmd's bus policy and polkit actions in force.
//!
//! [`SysBus::start`] runs `tests/support/sysbus-harness.sh start` with `HARNESS_NM=0` in a
//! fresh `HARNESS_DIR` under `/tmp`: a `dbus-daemon` configured like Debian's system bus
//! (plus `dbus/org.omadm.Client1.conf`) and `polkitd` (with private copies of the polkit
//! action and rules directories, plus `dbus/org.omadm.client1.policy`), both inside a
//! private mount + network namespace so the host is not changed. Dropping the [`SysBus`]
//! stops everything, including processes left inside the namespace, and removes the
//! directory. If the test binary dies without unwinding (SIGKILL, abort), the harness's
//! watchdog does the same within about a second, and processes made with
//! [`SysBus::command`] die with it (parent-death signal).
//!
//! ```ignore
//! let bus = SysBus::start();
//! let alice = test_user("omadmd-t-alice");
//! bus.add_polkit_rules("60-test", r#"polkit.addRule(function(action, subject) { ... });"#);
//! let daemon = KillOnDrop::spawn(bus.command(None, env!("CARGO_BIN_EXE_omadmd")).args([...]));
//! assert!(bus.wait_for_name("org.omadm.Client1", Duration::from_secs(10)), "{}", bus.logs());
//! let out = bus.command(Some(&alice), "busctl").args(["call", "org.omadm.Client1", ...]).output();
//! ```
//!
//! # Where the daemon and its clients run
//!
//! On the **host**, with [`SysBus::command`]: that sets `DBUS_SYSTEM_BUS_ADDRESS` to the
//! private bus's socket (`unix:path=/tmp/omadmd-sysbus-*/run-dbus/system_bus_socket`), which
//! zbus (`Builder::system()`), sd-bus (`busctl`), GDBus (`gdbus`, `pkcheck`) and libdbus all
//! honour. The harness shares the host's PID namespace, `/proc` and users, so `polkitd`
//! resolves a `system-bus-name` subject (sender → PID, start time, uid via the bus) exactly
//! as on a real system; `tests/harness.rs` checks this for clients on the host and in the
//! namespace alike, with a zbus service on the host doing the check. On the host the
//! process is a plain child of the test (its PID is the program's own: `setpriv` execs), it
//! keeps the working directory, and a `--state-dir` under a temp dir needs no bind mount.
//! Inside the test process itself, connect with `zbus::connection::Builder::address(
//! bus.address())`; never set `DBUS_SYSTEM_BUS_ADDRESS` in the (multi-threaded) test process.
//!
//! Use [`SysBus::command_in_namespace`] only for a process that must see the namespace:
//! the standard path `/run/dbus/system_bus_socket` (software that ignores
//! `DBUS_SYSTEM_BUS_ADDRESS`) or the namespace's network (NetworkManager's `nm0`, with
//! [`SysBus::start_with_network_manager`]). `nsenter` resets the working
//! directory, so the command runs in the test's current directory (not one set later with
//! `Command::current_dir`).
//!
//! # Parallel tests
//!
//! Each [`SysBus`] has its own directory, bus and `polkitd`, so tests running in parallel
//! threads (or test binaries running at once) do not see each other. Package installation
//! (first run on a fresh machine) is serialized by the harness with a lock file; test users
//! are created under a lock and idempotently.
//!
//! # Prerequisites
//!
//! Root (the harness makes namespaces and mounts, `setpriv` changes uid, `useradd` creates
//! users). Missing Debian packages (`dbus-daemon`, `polkitd`, `libglib2.0-bin`, ...) are
//! installed with apt by the harness. Any missing prerequisite fails the test with a message
//! saying what is missing; nothing is skipped.
//!
//! polkit here has no logind: every subject is neither local nor active, so the actions'
//! `allow_any` defaults apply, and there is no authentication agent (`auth_admin*` gives a
//! challenge, never a yes). uid 0 is always authorized.
//!
//! Set `OMADMD_KEEP_HARNESS=1` to keep the harness directory (logs) after the test.

use std::ffi::OsStr;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The harness script (part of this repository).
pub fn harness_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/sysbus-harness.sh")
}

/// A file of this repository, e.g. `dbus/org.omadm.Client1.conf`.
fn repo_file(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(p.is_file(), "{} is missing from the checkout", p.display());
    p
}

/// A running private system bus + polkitd. Stopped on drop.
pub struct SysBus {
    /// `HARNESS_DIR`; `None` only while dropping.
    dir: Option<tempfile::TempDir>,
    /// `unix:path=<dir>/run-dbus/system_bus_socket`.
    address: String,
    /// The namespace holder's PID (`nsenter --target`).
    ns_pid: u32,
}

impl SysBus {
    /// Starts a private system bus + real polkitd (no NetworkManager) with omadmd's bus
    /// policy (`dbus/org.omadm.Client1.conf`) in the bus config dir and its polkit actions
    /// (`dbus/org.omadm.client1.policy`) installed; panics with the harness logs on failure.
    pub fn start() -> SysBus {
        SysBus::start_with(false)
    }

    /// Like [`SysBus::start`], plus a real NetworkManager in the namespace managing the veth
    /// `nm0` (10.77.0.2/24, connection `harness-nm0`, autoconnect) whose peer `peer0`
    /// (10.77.0.1/24) lives in a second namespace; NetworkManager is connected (State 70,
    /// connectivity full) when this returns. [`SysBus::carrier`] unplugs and plugs the veth.
    pub fn start_with_network_manager() -> SysBus {
        SysBus::start_with(true)
    }

    fn start_with(network_manager: bool) -> SysBus {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("omadmd-sysbus-")
            .tempdir_in("/tmp")
            .expect("cannot create a harness dir in /tmp");
        // Test users must reach the socket below it; polkitd (user polkitd) its files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod harness dir");
        let status = harness(dir.path())
            .arg("start")
            .arg("--bus-conf")
            .arg(repo_file("dbus/org.omadm.Client1.conf"))
            .arg("--polkit-policy")
            .arg(repo_file("dbus/org.omadm.client1.policy"))
            .env("HARNESS_NM", if network_manager { "1" } else { "0" })
            .env("HARNESS_OWNER_PID", std::process::id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", harness_script().display()));
        if !status.success() {
            panic!(
                "sysbus harness failed to start ({status})\n--- harness logs ---\n{}",
                read_logs(dir.path())
            );
        }
        let env_file = dir.path().join("env");
        let env = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("{}: {e}", env_file.display()));
        let var = |name: &str| {
            env.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("export {name}='"))?
                        .strip_suffix('\'')
                })
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("harness wrote no {name} to {}", env_file.display()))
        };
        let address = var("DBUS_SYSTEM_BUS_ADDRESS");
        let ns_pid = var("HARNESS_NS_PID").parse().expect("HARNESS_NS_PID");
        SysBus {
            dir: Some(dir),
            address,
            ns_pid,
        }
    }

    /// The bus address for processes on the host: `unix:path=...`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `HARNESS_DIR`: `bus.d/`, `polkit-actions/`, `polkit-rules/`, `log/`, `run-dbus/`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("harness dir").path()
    }

    /// Drops a polkit `.rules` file (JavaScript) named `name` (`.rules` is appended if
    /// missing) and waits until polkitd has loaded it; panics with polkitd's log if it does
    /// not within 10 s (e.g. on a syntax error, which the log names).
    ///
    /// The file is written atomically, with a `polkit.log()` marker appended; the wait ends
    /// once polkitd has logged that marker and then finished the reload, so the rule is in
    /// force for every check that follows.
    pub fn add_polkit_rules(&self, name: &str, js: &str) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        assert!(
            !name.is_empty() && !name.contains('/') && !name.starts_with('.'),
            "bad rules file name {name:?}"
        );
        let name = if name.ends_with(".rules") {
            name.to_owned()
        } else {
            format!("{name}.rules")
        };
        let marker = format!(
            "omadmd-sysbus: loaded {name} #{}",
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let rules_dir = self.dir().join("polkit-rules");
        let tmp = rules_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, format!("{js}\n;polkit.log({marker:?});\n"))
            .unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::rename(&tmp, rules_dir.join(&name)).expect("rename rules file");

        let log = self.dir().join("log/polkitd.log");
        let loaded = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.rfind(&marker)
                .is_some_and(|at| text[at..].contains("Finished loading"))
        };
        if !wait_until(Duration::from_secs(10), loaded) {
            panic!(
                "polkitd did not load {name} within 10 s\n--- polkitd.log ---\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// Lets `users` use omadmd's polkit `actions` (short names: read, write, watch, manage,
    /// send-alert, ...), through a rules file named `name`.
    pub fn allow(&self, name: &str, users: &[&TestUser], actions: &[&str]) {
        let users: Vec<String> = users.iter().map(|u| format!("{:?}", u.name)).collect();
        let actions: Vec<String> = actions
            .iter()
            .map(|a| format!("\"org.omadm.client1.{a}\""))
            .collect();
        self.add_polkit_rules(
            name,
            &format!(
                "polkit.addRule(function(action, subject) {{\n\
                 if ([{}].indexOf(action.id) >= 0 && [{}].indexOf(subject.user) >= 0) {{\n\
                 return polkit.Result.YES; }}\n\
                 return polkit.Result.NOT_HANDLED; }});\n",
                actions.join(", "),
                users.join(", ")
            ),
        );
    }

    /// A command that runs `program` on the host as `user` (`None`: root) with
    /// `DBUS_SYSTEM_BUS_ADDRESS` pointing at the private bus. It is
    /// `setpriv --pdeathsig=KILL [--reuid=U --regid=G --init-groups] program ...`, which
    /// execs: the child's PID is the program's own, a real process of that uid (a valid
    /// polkit subject).
    ///
    /// The process is killed when the *thread* that spawned it ends (parent-death signal),
    /// so a test binary that is killed leaves no clients or daemons behind. Spawn
    /// long-lived processes from the test's own thread, not from a short-lived helper
    /// thread.
    pub fn command(&self, user: Option<&TestUser>, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("setpriv");
        setpriv_args(&mut cmd, user);
        cmd.arg(program)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        cmd
    }

    /// Like [`SysBus::command`], but `program` runs inside the harness's mount + network
    /// namespace (`nsenter`), where the bus is at the standard
    /// `/run/dbus/system_bus_socket`, in the test's current directory. (`nsenter` and
    /// `setpriv` exec: the child's PID is still the program's own.)
    pub fn command_in_namespace(
        &self,
        user: Option<&TestUser>,
        program: impl AsRef<OsStr>,
    ) -> Command {
        let cwd = std::env::current_dir().expect("current dir");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.ns_pid))
            .args(["--mount", "--net"])
            .arg(format!("--wd={}", cwd.display()));
        cmd.arg("setpriv");
        setpriv_args(&mut cmd, user);
        cmd.arg(program)
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/run/dbus/system_bus_socket",
            )
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        cmd
    }

    /// The unique bus name (`:1.N`) of the connection that process `pid` holds, waiting up
    /// to 10 s for it to connect. Panics if it does not.
    pub fn unique_name_of(&self, pid: u32) -> String {
        let mut name = None;
        let found = wait_until(Duration::from_secs(10), || {
            let out = self
                .command(None, "busctl")
                .args(["list", "--unique", "--no-legend", "--no-pager"])
                .output()
                .expect("busctl");
            name = String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
                let mut cols = l.split_whitespace();
                let n = cols.next()?;
                (cols.next()? == pid.to_string()).then(|| n.to_owned())
            });
            name.is_some()
        });
        assert!(found, "process {pid} has no connection on the private bus");
        name.expect("found")
    }

    /// Whether `name` gets an owner on the bus within `timeout` (e.g. a daemon that was just
    /// started).
    pub fn wait_for_name(&self, name: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let out = self
                .command(None, "busctl")
                .args(["call", "org.freedesktop.DBus", "/org/freedesktop/DBus"])
                .args(["org.freedesktop.DBus", "NameHasOwner", "s", name])
                .output()
                .expect("busctl");
            String::from_utf8_lossy(&out.stdout).trim() == "b true"
        })
    }

    /// Takes the carrier of NetworkManager's veth `nm0` down or up (its peer end), as
    /// unplugging and plugging a cable does; needs [`SysBus::start_with_network_manager`].
    /// NetworkManager notices at once, and gives the connection up about 5 s after a loss.
    pub fn carrier(&self, up: bool) {
        let status = harness(self.dir())
            .args(["carrier", if up { "up" } else { "down" }])
            .status()
            .expect("harness carrier");
        assert!(status.success(), "carrier {up}: {}", self.logs());
    }

    /// The harness's logs (dbus-daemon, polkitd, ...), for failure messages.
    pub fn logs(&self) -> String {
        read_logs(self.dir())
    }
}

impl Drop for SysBus {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if std::thread::panicking() {
            // Shown with the failed test's output.
            eprintln!(
                "--- sysbus harness logs ({}) ---\n{}",
                dir.path().display(),
                read_logs(dir.path())
            );
        }
        // `--clean`: the harness removes the dir itself, so that it goes even if this
        // process is killed while stop runs (then the TempDir finds nothing to remove).
        let keep = std::env::var_os("OMADMD_KEEP_HARNESS").is_some();
        let mut stop = harness(dir.path());
        stop.arg("stop");
        if !keep {
            stop.arg("--clean");
        }
        match stop.status() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!(
                "sysbus harness stop failed ({status}):\n{}",
                read_logs(dir.path())
            ),
            Err(e) => eprintln!("sysbus harness stop: {e}"),
        }
        if keep {
            eprintln!("sysbus harness dir kept: {}", dir.keep().display());
        }
    }
}

/// A system user for tests (no home, no login shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// `setpriv`'s options: die with the spawning thread; become `user`, if any.
fn setpriv_args(cmd: &mut Command, user: Option<&TestUser>) {
    cmd.arg("--pdeathsig=KILL");
    if let Some(u) = user {
        cmd.arg(format!("--reuid={}", u.uid))
            .arg(format!("--regid={}", u.gid))
            .arg("--init-groups")
            .env("USER", &u.name)
            .env("LOGNAME", &u.name)
            .env("HOME", "/nonexistent");
    }
}

/// Creates (idempotently, `useradd -M -U -s /usr/sbin/nologin`) a system test user. Use
/// names starting with `omadmd-t-` (at most 32 characters); the users stay on the machine.
pub fn test_user(name: &str) -> TestUser {
    static LOCK: Mutex<()> = Mutex::new(());
    require_root();
    assert!(
        name.len() <= 32 && !name.is_empty(),
        "bad test user name {name:?}"
    );
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(u) = lookup_user(name) {
        return u;
    }
    let out = Command::new("useradd")
        .args(["-M", "-U", "-s", "/usr/sbin/nologin", name])
        .output()
        .expect("cannot run useradd (package passwd)");
    // 9: the user exists (another test binary made it meanwhile)
    if !out.status.success() && out.status.code() != Some(9) {
        panic!("useradd {name} failed: {}", show(&out));
    }
    lookup_user(name).unwrap_or_else(|| panic!("user {name} not found after useradd"))
}

fn lookup_user(name: &str) -> Option<TestUser> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields: Vec<&str> = line.trim().split(':').collect();
    if !out.status.success() || fields.len() < 4 || fields[0] != name {
        return None;
    }
    Some(TestUser {
        name: name.to_owned(),
        uid: fields[2].parse().ok()?,
        gid: fields[3].parse().ok()?,
    })
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves no clients or daemons behind. Derefs to the [`Child`].
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Spawns `cmd` with stdin from /dev/null.
    pub fn spawn(cmd: &mut Command) -> KillOnDrop {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        KillOnDrop(child)
    }

    /// Sends `signal` (as `kill` takes it, e.g. `-TERM`) and waits up to `timeout` for the
    /// exit; the exit status, if it came.
    pub fn signal(&mut self, signal: &str, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} {pid} failed");
        let mut status = None;
        wait_until(timeout, || {
            status = self.0.try_wait().expect("try_wait");
            status.is_some()
        });
        status
    }
}

impl Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 20 ms until it is true or `timeout` has passed.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Status, stdout and stderr of a finished command, for messages.
pub fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// The harness script for `dir`, its output appended to `dir/log/harness.log`. A file, not
/// a pipe: a test binary that dies must not kill a running start or stop with SIGPIPE.
fn harness(dir: &Path) -> Command {
    let log_dir = dir.join("log");
    std::fs::create_dir_all(&log_dir).expect("harness log dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join("harness.log"))
        .expect("harness.log");
    let log2 = log.try_clone().expect("harness.log");
    let mut cmd = Command::new("bash");
    cmd.arg(harness_script())
        .env("HARNESS_DIR", dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    cmd
}

fn read_logs(dir: &Path) -> String {
    let mut text = String::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let body = std::fs::read_to_string(&f).unwrap_or_default();
        text.push_str(&format!("== {} ==\n{}\n", f.display(), body.trim_end()));
    }
    text
}

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .expect("Uid line in /proc/self/status");
    assert!(
        euid == "0",
        "these tests need root (euid is {euid}): they start a private system bus and polkitd \
         in namespaces and create test users. Run them as root, as CI does."
    );
}
