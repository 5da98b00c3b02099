//! Running the real `omadmd` against a private system bus for a test.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::sysbus::{KillOnDrop, SysBus, TestUser, show};

/// An `omadmd` process with its own state directory, stopped (SIGTERM) on drop.
pub struct Daemon {
    child: Option<KillOnDrop>,
    state: Option<tempfile::TempDir>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `omadmd` as root on `bus` and waits until it owns `org.omadm.Client1`.
    pub fn start(bus: &SysBus) -> Daemon {
        Daemon::start_with_config(bus, "")
    }

    /// Like [`Daemon::start`], with `config` (TOML) as its configuration file.
    pub fn start_with_config(bus: &SysBus, config: &str) -> Daemon {
        Daemon::start_in(bus, tempfile::tempdir().expect("state dir"), config)
    }

    /// Like [`Daemon::start_with_config`], on the state directory `state` (of an earlier
    /// run, for a restart). The log starts afresh.
    pub fn start_in(bus: &SysBus, state: tempfile::TempDir, config: &str) -> Daemon {
        Daemon::start_program_in(bus, env!("CARGO_BIN_EXE_omadmd"), state, config)
    }

    /// Like [`Daemon::start_in`], running `program`: an omadmd binary of another build (a
    /// bench measuring `target/dist/omadmd`).
    pub fn start_program_in(
        bus: &SysBus,
        program: impl AsRef<std::ffi::OsStr>,
        state: tempfile::TempDir,
        config: &str,
    ) -> Daemon {
        let log = state.path().join("omadmd.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let config_file = state.path().join("omadmd.toml");
        std::fs::write(&config_file, test_config(config)).expect("config file");
        let mut cmd = bus.command(None, program);
        cmd.arg("--state-dir")
            .arg(state.path())
            .arg("--config")
            .arg(&config_file)
            .env("RUST_LOG", "omadmd=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = KillOnDrop::spawn(&mut cmd);
        let daemon = Daemon {
            child: Some(child),
            state: Some(state),
            log,
        };
        assert!(
            bus.wait_for_name("org.omadm.Client1", Duration::from_secs(20)),
            "omadmd did not take its name:\n{}",
            daemon.log()
        );
        daemon
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the daemon to exit by itself; its exit status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let mut status = None;
        super::sysbus::wait_until(timeout, || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        });
        status
    }

    /// Kills the daemon with SIGKILL (it gets no chance to sync or close anything) and waits
    /// for it to die; returns the state directory, which lives on for a restart.
    pub fn kill(mut self) -> tempfile::TempDir {
        let mut child = self.child.take().expect("running");
        child
            .signal("-KILL", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("omadmd did not die of SIGKILL:\n{}", self.log()));
        self.state.take().expect("state dir")
    }

    /// Sends SIGTERM and waits for the exit; returns whether it was clean, and the state
    /// directory, which lives on for a restart.
    pub fn stop(mut self) -> (bool, tempfile::TempDir) {
        let mut child = self.child.take().expect("running");
        let status = child
            .signal("-TERM", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("omadmd did not stop on SIGTERM:\n{}", self.log()));
        (status.success(), self.state.take().expect("state dir"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- omadmd log ---\n{}", self.log());
        }
    }
}

/// `gdbus call` on omadmd's main object as `user` (None: root); returns the output.
pub fn call(bus: &SysBus, user: Option<&TestUser>, method: &str, args: &[&str]) -> Output {
    call_with(bus.command(user, "gdbus"), method, args)
}

/// `gdbus call` on omadmd's main object, run by `gdbus` (a command for the `gdbus`
/// program made with [`SysBus::command`], perhaps placed in a unit); returns the output.
pub fn call_with(mut gdbus: Command, method: &str, args: &[&str]) -> Output {
    gdbus
        .args([
            "call",
            "--system",
            "--dest",
            "org.omadm.Client1",
            "--object-path",
            "/org/omadm/Client1",
        ])
        .arg("--method")
        .arg(format!("org.omadm.Client1.{method}"))
        .args(args)
        .output()
        .expect("gdbus")
}

/// Like [`call`], but the call must succeed; returns its stdout.
pub fn call_ok(bus: &SysBus, user: Option<&TestUser>, method: &str, args: &[&str]) -> String {
    ok(&call(bus, user, method, args), method, args)
}

/// The stdout of a `gdbus call` of `method` with `args` that must have succeeded.
pub fn ok(out: &Output, method: &str, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "{method} {args:?} failed: {}",
        show(out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Like [`call`], but the call must fail with `org.omadm.Client1.Error.<name>`; returns
/// the error message.
pub fn call_err(
    bus: &SysBus,
    user: Option<&TestUser>,
    method: &str,
    args: &[&str],
    name: &str,
) -> String {
    failed(&call(bus, user, method, args), method, args, name)
}

/// The stderr of a `gdbus call` of `method` with `args` that must have failed with
/// `org.omadm.Client1.Error.<name>`.
pub fn failed(out: &Output, method: &str, args: &[&str], name: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{method} {args:?} succeeded: {}",
        show(out)
    );
    let wanted = format!("org.omadm.Client1.Error.{name}");
    assert!(
        stderr.contains(&wanted),
        "{method} {args:?}: expected {wanted}, got: {stderr}"
    );
    stderr
}

/// What test daemons run with unless their configuration says otherwise: a new DM account
/// gets no session by itself, so that each test starts the sessions it looks at
/// (tests/new_account.rs tests the default, a session at once).
pub const NO_FIRST_SESSION_AT_ONCE: &str = "\n[session]\nfirst_session_at_once = false\n";

/// `config` as test daemons run it: [`NO_FIRST_SESSION_AT_ONCE`] added unless it sets
/// `first_session_at_once` itself.
pub fn test_config(config: &str) -> String {
    if config.contains("first_session_at_once") {
        config.to_owned()
    } else {
        format!("{config}{NO_FIRST_SESSION_AT_ONCE}")
    }
}
