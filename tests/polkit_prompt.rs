//! polkit prompts, with the real parts: omadmd on the private system bus with the real
//! `polkitd` (tests/support/sysbus.rs), the real `pkttyagent` on a pseudo-terminal, and the
//! real `polkit-agent-helper-1` checking a test user's password with PAM (`pam_unix`,
//! `/etc/shadow`). The callers run as that user inside the harness namespace
//! ([`SysBus::command_in_namespace`]): polkit-agent-helper-1 is setuid root and clears its
//! environment, so it reaches polkitd only on the standard socket path
//! `/run/dbus/system_bus_socket`, which is the private bus there and nothing on the host.
//!
//! The harness has no logind, so no caller is in a session: polkit applies the actions'
//! `allow_any` defaults (`auth_admin_keep` for write), and an agent registered for the
//! caller's process is the only one polkit can use. The test user is made the one
//! administrator identity (a polkit admin rule), with a random password for the run; it is
//! locked again afterwards.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::daemon::{Daemon, call};
use crate::support::sysbus::{KillOnDrop, SysBus, TestUser, test_user, wait_until};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");
const MOID: &str = "urn:oma:mo:ext-example-pin:1.0";
const MODATA: &str = r#"{"PIN": {"Code": "4711"}}"#;
/// How long a step may take before the test gives up on it (a bound, not a measurement).
const PATIENCE: Duration = Duration::from_secs(60);

/// A test user who is polkit's administrator identity on `bus`, with a random password
/// (locked again when dropped).
struct Admin {
    user: TestUser,
    password: String,
}

impl Admin {
    fn new(bus: &SysBus, name: &str) -> Admin {
        let user = test_user(name);
        let mut random = [0u8; 12];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .expect("/dev/urandom");
        let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd (package passwd)");
        let mut stdin = chpasswd.stdin.take().expect("stdin");
        writeln!(stdin, "{}:{password}", user.name).expect("chpasswd input");
        drop(stdin);
        assert!(chpasswd.wait().expect("chpasswd").success(), "chpasswd");
        bus.add_polkit_rules(
            "10-omadmd-test-admin",
            &format!(
                "polkit.addAdminRule(function(action, subject) {{\n\
                 if (subject.user == {name:?}) return [\"unix-user:{name}\"]; }});",
                name = user.name
            ),
        );
        Admin { user, password }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = Command::new("usermod")
            .args(["--lock", &self.user.name])
            .status();
    }
}

/// A program on a pseudo-terminal that is its controlling terminal (it leads a session of
/// its own, as a login shell does): the test reads what appears on the terminal and types.
struct Terminal {
    master: std::fs::File,
    child: KillOnDrop,
    screen: Vec<u8>,
}

impl Terminal {
    fn spawn(mut cmd: Command) -> Terminal {
        // SAFETY: plain libc calls on a descriptor this function owns; both ends are
        // close-on-exec from the start, so no child spawned meanwhile by another test thread
        // holds them.
        let (master, slave) = unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(
                master >= 0,
                "posix_openpt: {}",
                std::io::Error::last_os_error()
            );
            let master = OwnedFd::from_raw_fd(master);
            assert_eq!(libc::grantpt(master.as_raw_fd()), 0, "grantpt");
            assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(
                libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
                0,
                "ptsname_r"
            );
            let slave = libc::open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            assert!(slave >= 0, "open pty: {}", std::io::Error::last_os_error());
            (master, OwnedFd::from_raw_fd(slave))
        };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty"));
        cmd.stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = KillOnDrop(cmd.spawn().expect("spawn on the pty"));
        drop(slave);
        Terminal {
            master: std::fs::File::from(master),
            child,
            screen: Vec::new(),
        }
    }

    /// Reads what the terminal shows within `wait`; false once nothing can appear any more
    /// (every process on the terminal is gone).
    fn pump(&mut self, wait: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, ms) } <= 0 {
            return true;
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) | Err(_) => false, // EIO: the far side is closed
            Ok(n) => {
                self.screen.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen).into_owned()
    }

    /// Waits until the terminal shows `text`; panics with the screen if it does not.
    fn expect(&mut self, text: &str) {
        let end = Instant::now() + PATIENCE;
        while !self.screen().contains(text) {
            assert!(
                Instant::now() < end && self.pump(Duration::from_millis(100)),
                "the terminal never showed {text:?}:\n{}",
                self.screen()
            );
        }
    }

    /// Types `password` at a password prompt: once the reader has turned echo off, as
    /// pkttyagent does after printing "Password:" (it flushes input typed before that).
    fn type_password(&mut self, password: &str) {
        let end = Instant::now() + PATIENCE;
        while self.echoes() {
            assert!(
                Instant::now() < end && self.pump(Duration::from_millis(20)),
                "echo stayed on:\n{}",
                self.screen()
            );
        }
        self.master
            .write_all(format!("{password}\n").as_bytes())
            .expect("type on the pty");
    }

    /// Whether the terminal echoes what is typed (the master shows the terminal's modes).
    fn echoes(&self) -> bool {
        // SAFETY: tcgetattr fills the zeroed termios it is given.
        let mut modes: libc::termios = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut modes) };
        assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
        modes.c_lflag & libc::ECHO != 0
    }

    /// Waits for the program to exit and for the terminal to close; its status and all
    /// the terminal showed.
    fn finish(mut self) -> (ExitStatus, String) {
        let end = Instant::now() + PATIENCE;
        while self.pump(Duration::from_millis(100)) {
            assert!(
                Instant::now() < end,
                "the terminal stayed open:\n{}",
                self.screen()
            );
        }
        let status = self.child.wait().expect("wait");
        (status, self.screen())
    }
}

/// `omadmctl args…` as `user` on a terminal of its own.
fn omadmctl(bus: &SysBus, user: &TestUser, args: &[&str]) -> Terminal {
    let mut cmd = bus.command_in_namespace(Some(user), CTL);
    cmd.args(args);
    Terminal::spawn(cmd)
}

/// The polkitd log, for what polkit did with agents and authentications.
fn polkitd_log(bus: &SysBus) -> String {
    std::fs::read_to_string(bus.dir().join("log/polkitd.log")).unwrap_or_default()
}

/// The `MOID` instances there are (as root sees them).
fn instances(bus: &SysBus) -> String {
    let out = call(bus, None, "Get", &[&format!("'{MOID}/*/Code'")]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn omadmctl_on_a_terminal_asks_for_the_password_and_only_the_right_one_passes() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let admin = Admin::new(&bus, "omadmd-t-pkctl");

    // A wrong password: pkttyagent asks, PAM refuses, and so does omadmd; nothing is made.
    let mut term = omadmctl(&bus, &admin.user, &["create", MOID, MODATA]);
    term.expect("AUTHENTICATING FOR org.omadm.client1.write");
    term.expect(&format!("Authenticating as: {}", admin.user.name));
    term.expect("Password:");
    term.type_password("not-the-password");
    let (status, screen) = term.finish();
    assert_eq!(status.code(), Some(5), "{screen}");
    assert!(screen.contains("AUTHENTICATION FAILED"), "{screen}");
    assert!(
        screen.contains("authentication failed or was dismissed"),
        "{screen}"
    );
    assert!(!instances(&bus).contains("4711"), "{}", instances(&bus));

    // The right one: the call goes through.
    let mut term = omadmctl(&bus, &admin.user, &["create", MOID, MODATA]);
    term.expect("Password:");
    term.type_password(&admin.password);
    let (status, screen) = term.finish();
    assert_eq!(status.code(), Some(0), "{screen}\n{}", daemon.log());
    assert!(screen.contains("AUTHENTICATION COMPLETE"), "{screen}");
    assert!(screen.contains(&format!("{MOID}/")), "{screen}");
    assert!(instances(&bus).contains("4711"), "{}", instances(&bus));
    assert!(
        polkitd_log(&bus).contains(&format!(
            "successfully authenticated as unix-user:{}",
            admin.user.name
        )),
        "{}",
        polkitd_log(&bus)
    );
    // Each omadmctl stopped its agent when it was done.
    let log = polkitd_log(&bus);
    assert_eq!(
        log.matches("Registered Authentication Agent").count(),
        log.matches("Unregistered Authentication Agent").count(),
        "{log}"
    );
}

#[test]
fn omadmctl_with_no_ask_password_never_prompts() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let admin = Admin::new(&bus, "omadmd-t-pknoask");

    let term = omadmctl(
        &bus,
        &admin.user,
        &["--no-ask-password", "create", MOID, MODATA],
    );
    let (status, screen) = term.finish();
    assert_eq!(status.code(), Some(5), "{screen}");
    assert!(!screen.contains("Password"), "{screen}");
    assert!(!screen.contains("AUTHENTICATING"), "{screen}");
    assert!(
        screen.contains("the call did not allow interactive authorization"),
        "{screen}"
    );
    assert!(screen.contains("without --no-ask-password"), "{screen}");
    let log = polkitd_log(&bus);
    assert!(!log.contains("Registered Authentication Agent"), "{log}");
    assert!(!log.contains("Operator of"), "{log}");
}

/// A caller with a real pkttyagent registered for its process (as omadmctl has), running
/// `busctl --allow-interactive-authorization=<$2>` with the arguments after `$3` (by
/// default a `CreateInstance` call); it writes its pid to `<$1>/caller.pid`. The caller
/// waits (fifo `go`) until the agent has registered (it closes its notify fd: fifo
/// `registered` reaches its end), so no call can beat the agent. The agent is not a
/// `--fallback` one: there is no logind session here. With `$3` `linger`, the agent
/// outlives the caller (until the terminal goes); else it is stopped when the caller is
/// done, and the script exits with the caller's status.
const CALLER_WITH_AGENT: &str = r#"#!/bin/sh
set -eu
dir=$1 interactive=$2 linger=$3
shift 3
mkfifo "$dir/go" "$dir/registered"
sh -c 'go=$1 interactive=$2; shift 2; read -r _ < "$go"; \
    exec busctl --allow-interactive-authorization="$interactive" "$@"' \
    sh "$dir/go" "$interactive" "$@" &
caller=$!
echo "$caller" > "$dir/caller.pid"
pkttyagent --process "$caller" --notify-fd 3 3>"$dir/registered" &
agent=$!
cat "$dir/registered" > /dev/null
echo go > "$dir/go"
status=0
wait "$caller" || status=$?
if [ "$linger" = linger ]; then wait "$agent"; fi
kill "$agent" 2>/dev/null || true
exit "$status"
"#;

/// Runs [`CALLER_WITH_AGENT`] as `user` on a terminal, creating an instance; the terminal
/// and the directory of its fifos and pid file.
fn caller_with_agent(
    bus: &SysBus,
    user: &TestUser,
    interactive: bool,
    linger: bool,
) -> (Terminal, tempfile::TempDir) {
    let call = [
        "call",
        "org.omadm.Client1",
        "/org/omadm/Client1",
        "org.omadm.Client1",
        "CreateInstance",
        "ss",
        MOID,
        MODATA,
    ];
    busctl_with_agent(bus, user, interactive, linger, &call)
}

/// Runs [`CALLER_WITH_AGENT`] as `user` on a terminal with the busctl arguments `args`.
fn busctl_with_agent(
    bus: &SysBus,
    user: &TestUser,
    interactive: bool,
    linger: bool,
    args: &[&str],
) -> (Terminal, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("omadmd-pk-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown");
    let script = dir.path().join("caller.sh");
    std::fs::write(&script, CALLER_WITH_AGENT).expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = bus.command_in_namespace(Some(user), &script);
    cmd.arg(dir.path())
        .arg(if interactive { "yes" } else { "no" })
        .arg(if linger { "linger" } else { "" })
        .args(args);
    (Terminal::spawn(cmd), dir)
}

#[test]
fn a_property_read_never_asks_for_a_password() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let admin = Admin::new(&bus, "omadmd-t-pkprop");
    let account = r#"{"DMAcc": {"SrvID": "ma.one", "SrvURI": "https://127.0.0.1:9/dm",
        "Perm": {"p": {"MOID": "urn:oma:mo:ext-example-weather:1.0"}}}}"#;
    let made = call(
        &bus,
        None,
        "CreateInstance",
        &["'urn:oma:mo:oma-dm-dmacc:1.2'", &format!("'{account}'")],
    );
    assert!(made.status.success(), "{made:?}\n{}", daemon.log());
    // An administrator who could authenticate (its agent stands ready, the call allows
    // interaction) reads PermittedMoids: refused at once, nobody asked.
    // (`busctl get-property` never sets the flag; a Properties.Get call does.)
    let read = [
        "call",
        "org.omadm.Client1",
        "/org/omadm/Client1/server/ma_2eone",
        "org.freedesktop.DBus.Properties",
        "Get",
        "ss",
        "org.omadm.Client1.Server",
        "PermittedMoids",
    ];
    let (term, _dir) = busctl_with_agent(&bus, &admin.user, true, false, &read);
    let (status, screen) = term.finish();
    assert!(!status.success(), "{screen}");
    assert!(
        screen.contains("the call did not allow interactive authorization"),
        "{screen}"
    );
    assert!(!screen.contains("AUTHENTICATING"), "{screen}");
    let log = polkitd_log(&bus);
    assert!(log.contains("Registered Authentication Agent"), "{log}");
    assert!(!log.contains("Operator of"), "{log}");
}

#[test]
fn omadmd_lets_polkit_ask_only_when_the_call_allows_it_and_stops_asking_for_a_caller_that_left() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let admin = Admin::new(&bus, "omadmd-t-pkbus");

    // Without the flag: refused at once, although an agent stands ready for the caller.
    let (term, _dir) = caller_with_agent(&bus, &admin.user, false, false);
    let (status, screen) = term.finish();
    assert!(!status.success(), "{screen}");
    assert!(
        screen.contains("the call did not allow interactive authorization"),
        "{screen}"
    );
    assert!(!screen.contains("AUTHENTICATING"), "{screen}");
    let log = polkitd_log(&bus);
    assert!(log.contains("Registered Authentication Agent"), "{log}");
    assert!(!log.contains("Operator of"), "{log}");

    // With it: the agent asks, and the right password lets the call through.
    let (mut term, _dir) = caller_with_agent(&bus, &admin.user, true, false);
    term.expect("AUTHENTICATING FOR org.omadm.client1.write");
    term.expect("Password:");
    term.type_password(&admin.password);
    let (status, screen) = term.finish();
    assert!(status.success(), "{screen}\n{}", daemon.log());
    assert!(screen.contains(&format!("{MOID}/")), "{screen}");

    // A caller that leaves the bus while its user is asked (its agent stays): omadmd cancels
    // the check, and polkit withdraws the prompt (the authentication ends unsuccessfully).
    let (mut term, dir) = caller_with_agent(&bus, &admin.user, true, true);
    term.expect("Password:");
    let pid = std::fs::read_to_string(dir.path().join("caller.pid")).expect("caller.pid");
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let left = "the caller left the bus while polkit asked its user";
    assert!(
        wait_until(PATIENCE, || daemon.log().contains(left)),
        "{}",
        daemon.log()
    );
    assert!(
        wait_until(PATIENCE, || polkitd_log(&bus).contains(
            "FAILED to authenticate to gain authorization for action org.omadm.client1.write"
        )),
        "{}",
        polkitd_log(&bus)
    );
    term.pump(Duration::from_millis(500));
    assert!(
        !term.screen().contains("AUTHENTICATION COMPLETE"),
        "{}",
        term.screen()
    );
    assert_eq!(
        instances(&bus).matches("4711").count(),
        1,
        "{}",
        instances(&bus)
    );
}
