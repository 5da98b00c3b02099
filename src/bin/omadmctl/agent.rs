//! The polkit authentication agent omadmctl starts for itself, as systemd's tools
//! (`hostnamectl`, `systemctl`) do: `pkttyagent --process <own pid> --notify-fd <fd>
//! [--fallback]`, registered with polkit for omadmctl's own process, so that when omadmd lets
//! polkit ask (the call allows interactive authorization) the user is asked for a password
//! on the terminal omadmctl runs on.
//!
//! `--fallback`, as systemd passes it, tells polkit to prefer the session's own agent (a
//! desktop's dialog) to this one; but polkit (122) looks for a fallback agent only in the
//! subject's logind session, and never uses one for a process outside any session (no
//! logind, as in a container, or a process started outside a login). So omadmctl passes
//! `--fallback` only when it runs in a logind session (a `session-<id>.scope` in its
//! cgroup path, which is what polkit asks logind about); elsewhere its agent is the only one
//! that can ask.
//!
//! Started only where it can help: not for root (omadmd always authorizes uid 0), only when
//! stdin is a terminal (someone is there to answer), and on the system bus (where polkit
//! is). omadmctl waits until the agent has registered (it closes the notify fd), and stops
//! it when done (SIGTERM, on which pkttyagent puts the terminal back as it found it); if
//! omadmctl dies first, the agent gets SIGTERM too (parent-death signal). Without
//! `pkttyagent` omadmctl carries on: a call that needs a password is then refused, and the
//! hint says how to get one asked for.

use std::io::IsTerminal as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};

use tokio::io::AsyncReadExt as _;

/// The agent program, found through `PATH` (polkit installs it as `/usr/bin/pkttyagent`).
const PKTTYAGENT: &str = "pkttyagent";

/// What became of the agent for this omadmctl.
#[derive(Debug)]
pub enum Agent {
    /// pkttyagent is registered for this process, until this is dropped.
    Running {
        /// Held for its drop, which stops the agent.
        _agent: TtyAgent,
    },
    /// None is needed: omadmctl runs as root, not on a terminal, or not on the system bus.
    NotNeeded,
    /// `--no-ask-password`: nobody is asked.
    Declined,
    /// `pkttyagent` is not installed.
    Missing,
    /// pkttyagent did not start or register (it said why on stderr).
    Failed,
}

impl Agent {
    /// The hint for a refused call, where it differs from the usual one: how the user could
    /// have been asked for a password.
    pub fn access_hint(&self) -> Option<&'static str> {
        match self {
            Agent::Running { .. } | Agent::NotNeeded => None,
            Agent::Declined => Some(
                "try without --no-ask-password to be asked for a password, as root, or ask the \
                 administrator for a polkit rule / grant (omadmctl grant)",
            ),
            Agent::Missing => Some(
                "try as root, install pkttyagent (part of polkit; Debian's package polkitd) to \
                 be asked for a password, or ask the administrator for a polkit rule / grant \
                 (omadmctl grant)",
            ),
            Agent::Failed => Some(
                "try as root (pkttyagent, which asks for passwords, did not start), or ask the \
                 administrator for a polkit rule / grant (omadmctl grant)",
            ),
        }
    }
}

/// pkttyagent, running for this process.
#[derive(Debug)]
pub struct TtyAgent {
    child: Child,
}

impl Drop for TtyAgent {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: pkttyagent then restores the terminal (echo) if it was
        // asking; SIGCONT in case it was stopped. Its pid stays its own until it is waited
        // for below, so the signals reach nobody else.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
                libc::kill(pid, libc::SIGCONT);
            }
        }
        let _ = self.child.wait();
    }
}

/// Starts pkttyagent for this process if it can help (see the module documentation) and
/// waits until it has registered with polkit.
pub async fn start() -> Agent {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 || !std::io::stdin().is_terminal() {
        return Agent::NotNeeded;
    }
    match spawn().await {
        Ok(agent) => agent,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Agent::Missing,
        Err(e) => {
            eprintln!("omadmctl: cannot start {PKTTYAGENT}: {e}");
            Agent::Failed
        }
    }
}

/// Spawns pkttyagent with the write end of a pipe as its notify fd, and waits for that end
/// to close: pkttyagent closes it once registered, and it closes when pkttyagent exits.
async fn spawn() -> std::io::Result<Agent> {
    let (reader, writer) = std::io::pipe()?;
    let notify_fd = writer.as_raw_fd();
    let parent = std::process::id();
    let mut cmd = Command::new(PKTTYAGENT);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if in_login_session(&cgroup) {
        cmd.arg("--fallback");
    }
    cmd.arg("--process")
        .arg(parent.to_string())
        .arg("--notify-fd")
        .arg(notify_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (fcntl, prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            // The pipe is close-on-exec for every other child; this one keeps its end.
            if libc::fcntl(notify_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The agent ends with omadmctl (the thread that spawns it is the main thread: the
            // runtime is current-thread), even when omadmctl is killed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("omadmctl exited"));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(writer);
    let mut registered = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    // pkttyagent writes nothing: this returns when the write end is closed.
    registered.read_to_end(&mut Vec::new()).await?;
    if child.try_wait()?.is_some() {
        return Ok(Agent::Failed);
    }
    Ok(Agent::Running {
        _agent: TtyAgent { child },
    })
}

/// Whether the process whose `/proc/<pid>/cgroup` reads `cgroup` is in a logind session:
/// a `session-<id>.scope` in one of its cgroup paths (logind puts a login's processes
/// there, and that is where it finds their session).
fn in_login_session(cgroup: &str) -> bool {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .any(|part| part.starts_with("session-") && part.ends_with(".scope"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_session_shows_in_the_cgroup_path() {
        // cgroup v2, and the v1 hierarchy of a hybrid setup
        assert!(in_login_session(
            "0::/user.slice/user-1000.slice/session-3.scope\n"
        ));
        assert!(in_login_session(
            "1:name=systemd:/user.slice/user-1000.slice/session-c2.scope\n0::/\n"
        ));
        // A user's service manager, a system service, a container without systemd.
        assert!(!in_login_session(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n"
        ));
        assert!(!in_login_session("0::/system.slice/cron.service\n"));
        assert!(!in_login_session("0::/\n"));
        assert!(!in_login_session(""));
    }
}
