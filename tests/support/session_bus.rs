//! A private D-Bus session bus (`dbus-run-session`) with `omadmd --session` and `omadmctl
//! --session` on it, for tests that need the real daemon but not the system bus, polkit or
//! other users.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::sysbus::{KillOnDrop, wait_until};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");
const DAEMON: &str = env!("CARGO_BIN_EXE_omadmd");

/// A private session bus, for one test. Dropping it ends the bus.
pub struct SessionBus {
    runner: Child,
    /// The process dbus-run-session runs; when it ends, the bus ends.
    holder_pid: u32,
    address: String,
}

impl SessionBus {
    pub fn start() -> SessionBus {
        let mut runner = Command::new("dbus-run-session")
            .args([
                "--",
                "sh",
                "-c",
                "echo \"$$ $DBUS_SESSION_BUS_ADDRESS\"; exec sleep 600",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // dbus-daemon warns that it cannot raise its fd limit; nothing else comes here.
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dbus-run-session (package dbus-daemon): {e}"));
        let mut line = String::new();
        BufReader::new(runner.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("dbus-run-session prints the bus");
        let (pid, address) = line.trim().split_once(' ').expect("pid and bus address");
        SessionBus {
            runner,
            holder_pid: pid.parse().expect("a pid"),
            address: address.to_owned(),
        }
    }

    /// The bus's address, for a zbus connection of the test process
    /// (`zbus::connection::Builder::address`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `omadmctl --session` on this bus, to add arguments to.
    pub fn ctl(&self) -> Command {
        let mut cmd = Command::new(CTL);
        cmd.arg("--session")
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `omadmctl --session ARGS` on this bus.
    pub fn run(&self, args: &[&str]) -> Output {
        self.ctl().args(args).output().expect("omadmctl runs")
    }

    /// Starts omadmd on this bus with its state in `dir/state`, its configuration
    /// `dir/omadmd.toml` (none when absent; see [`super::daemon::test_config`]) and its log appended to `dir/omadmd.log`, and
    /// waits until it answers.
    pub fn daemon(&self, dir: &Path) -> KillOnDrop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("omadmd.log"))
            .expect("log file");
        let given = std::fs::read_to_string(dir.join("omadmd.toml")).unwrap_or_default();
        let config = dir.join("omadmd.effective.toml");
        std::fs::write(&config, super::daemon::test_config(&given)).expect("config file");
        let mut daemon = KillOnDrop::spawn(
            Command::new(DAEMON)
                .arg("--session")
                .arg("--config")
                .arg(config)
                .arg("--state-dir")
                .arg(dir.join("state"))
                .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
                .env("RUST_LOG", "omadmd=debug")
                .stdout(Stdio::null())
                .stderr(log),
        );
        let up = wait_until(Duration::from_secs(20), || {
            if let Ok(Some(status)) = daemon.try_wait() {
                panic!("omadmd exited with {status}: {}", daemon_log(dir));
            }
            self.run(&["status"]).status.success()
        });
        assert!(up, "omadmd did not come up: {}", daemon_log(dir));
        daemon
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.holder_pid.to_string())
            .status();
        let _ = self.runner.wait();
    }
}

/// What the daemon started by [`SessionBus::daemon`] in `dir` has logged.
pub fn daemon_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("omadmd.log")).unwrap_or_default()
}
