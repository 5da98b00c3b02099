//! A bus client in a process of its own, for the identity tests: this test binary run again
//! (as a test user, perhaps in a unit) to run a script of calls on **one** bus connection,
//! writing each outcome as a line to a file. `gdbus` and `busctl` open a new connection per
//! call; these tests need one connection that lives on, and one whose socket was opened by
//! another process.
//!
//! - [`command`]: a client that connects and runs its steps;
//! - [`handed_over`]: a launcher opens the bus socket (so the bus records the launcher's pid
//!   and uid for the connection), starts the client with that socket as its stdin, waits
//!   until the client has said Hello, and then exits or execs another program — a process
//!   that connects, forks and leaves its connection to its child.
//!
//! The test binary runs the client through the ignored test `dbus_identity::client_process`,
//! which calls [`run`]; run without the environment below it does nothing.

use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt as _;

use super::sysbus::{SysBus, TestUser, wait_until};

/// The test that runs [`run`].
const ENTRY: &str = "dbus_identity::client_process";
/// `client` or `launcher`.
const MODE: &str = "OMADMD_TEST_CLIENT";
/// The steps, one per line.
const STEPS: &str = "OMADMD_TEST_CLIENT_STEPS";
/// Where outcomes go.
const OUT: &str = "OMADMD_TEST_CLIENT_OUT";
/// Set for a client whose stdin is the bus socket.
const FD0: &str = "OMADMD_TEST_CLIENT_FD0";
/// The file whose appearance tells the launcher the client has connected.
const HANDED: &str = "OMADMD_TEST_CLIENT_HANDED";
/// What the launcher execs afterwards (one argument per line); unset: it exits.
const EXEC: &str = "OMADMD_TEST_CLIENT_EXEC";

/// How long a client waits for a file before giving up.
const WAIT: Duration = Duration::from_secs(60);

/// One thing the client does, in order.
#[derive(Clone, Debug)]
pub enum Step {
    /// `Get(uri)` on omadmd: `ok <nodes>` or `err <error name> <message>`.
    Get(String),
    /// `Watch(uri)`: `ok <id>` or `err …`; the id is kept for [`Step::Unwatch`].
    Watch(String),
    /// `Unwatch` of the last watch made: `ok` or `err …`.
    Unwatch,
    /// Waits for `count` `Changed` signals about `uri`, writing each `Changed` received
    /// until then, in order, as a line `changed <watch id> <ClientURI> <change>`. The client
    /// listens for them from the start, so none sent after its first step is missed.
    Changes { uri: String, count: usize },
    /// Creates the file (no outcome line).
    Touch(PathBuf),
    /// Waits for the file to appear (no outcome line).
    WaitFor(PathBuf),
}

/// A client, run as `user` (None: root), that connects to `bus` and runs `steps`,
/// writing outcomes to `out`; the directory of `out` must be writable by `user`.
pub fn command(bus: &SysBus, user: Option<&TestUser>, steps: &[Step], out: &Path) -> Command {
    let mut cmd = bus.command(user, std::env::current_exe().expect("the test binary"));
    cmd.args(["--exact", ENTRY, "--include-ignored", "--nocapture"])
        .args(["--test-threads=1", "--quiet"])
        .env(MODE, "client")
        .env(STEPS, encode(steps))
        .env(OUT, out)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// A launcher, run as `user`, that opens the bus socket and hands it to a client running
/// `steps`; the first step should touch `handed`, after which the launcher execs `then`
/// (or exits when it is empty).
pub fn handed_over(
    bus: &SysBus,
    user: Option<&TestUser>,
    steps: &[Step],
    out: &Path,
    handed: &Path,
    then: &[&str],
) -> Command {
    let mut cmd = command(bus, user, steps, out);
    cmd.env(MODE, "launcher").env(HANDED, handed);
    if !then.is_empty() {
        cmd.env(EXEC, then.join("\n"));
    }
    cmd
}

/// The outcome lines written to `out` once the client has finished (a last line `done`);
/// panics if it does not finish within a minute.
pub fn outcomes(out: &Path) -> Vec<String> {
    let read = || std::fs::read_to_string(out).unwrap_or_default();
    assert!(
        wait_until(WAIT, || read().lines().any(|l| l == "done")),
        "the client did not finish: {}",
        read()
    );
    read()
        .lines()
        .filter(|l| *l != "done")
        .map(str::to_owned)
        .collect()
}

/// The client or launcher this process was started as, if any (see the module docs).
pub fn run() {
    match std::env::var(MODE).as_deref() {
        Ok("client") => client(),
        Ok("launcher") => launcher(),
        _ => {}
    }
}

fn encode(steps: &[Step]) -> String {
    let line = |s: &Step| match s {
        Step::Get(uri) => format!("get {uri}"),
        Step::Watch(uri) => format!("watch {uri}"),
        Step::Unwatch => "unwatch".to_owned(),
        Step::Changes { uri, count } => format!("changes {count} {uri}"),
        Step::Touch(p) => format!("touch {}", p.display()),
        Step::WaitFor(p) => format!("wait {}", p.display()),
    };
    steps.iter().map(line).collect::<Vec<_>>().join("\n")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn launcher() {
    let address = env("DBUS_SYSTEM_BUS_ADDRESS");
    let socket = address
        .strip_prefix("unix:path=")
        .unwrap_or_else(|| panic!("not a unix:path= address: {address}"));
    let stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("{socket}: {e}"));
    let mut client = Command::new(std::env::current_exe().expect("the test binary"));
    client
        .args(std::env::args_os().skip(1))
        .env(MODE, "client")
        .env(FD0, "1")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(stream)));
    // The client outlives the launcher on purpose (the launcher exits or execs next); it is
    // reaped by whoever inherits it.
    #[allow(clippy::zombie_processes)]
    let _client = client.spawn().expect("cannot start the client");
    let handed = PathBuf::from(env(HANDED));
    assert!(
        wait_until(WAIT, || handed.exists()),
        "the client never connected"
    );
    if let Ok(then) = std::env::var(EXEC) {
        let argv: Vec<&str> = then.lines().collect();
        let e = Command::new(argv[0]).args(&argv[1..]).exec();
        panic!("cannot exec {argv:?}: {e}");
    }
}

fn client() {
    let out_path = PathBuf::from(env(OUT));
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
    let steps = env(STEPS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let builder = if std::env::var_os(FD0).is_some() {
            let fd = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .expect("stdin");
            zbus::connection::Builder::unix_stream(UnixStream::from(fd))
        } else {
            zbus::connection::Builder::system()
        };
        let conn = builder.build().await.expect("cannot connect to the bus");
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.omadm.Client1")
            .member("Changed")
            .build()
            .expect("a match rule");
        let mut changed = zbus::MessageStream::for_match_rule(rule, &conn, None)
            .await
            .expect("cannot listen for Changed");
        let mut last_watch = 0u64;
        for step in steps.lines() {
            let (verb, arg) = step.split_once(' ').unwrap_or((step, ""));
            let outcome = match verb {
                "get" => Some(call(&conn, "Get", &(arg,)).await.map(|m| {
                    let nodes: Vec<(String, String, zbus::OwnedVariant)> =
                        m.body().deserialize().expect("Get reply");
                    format!("{nodes:?}")
                })),
                "watch" => Some(call(&conn, "Watch", &(arg,)).await.map(|m| {
                    last_watch = m.body().deserialize().expect("Watch reply");
                    last_watch.to_string()
                })),
                "unwatch" => Some(
                    call(&conn, "Unwatch", &(last_watch,))
                        .await
                        .map(|_| String::new()),
                ),
                "changes" => {
                    let (count, uri) = arg.split_once(' ').expect("changes <count> <uri>");
                    let count: usize = count.parse().expect("a count");
                    let mut seen = 0;
                    while seen < count {
                        let signal = tokio::time::timeout(WAIT, changed.next())
                            .await
                            .unwrap_or_else(|_| panic!("{seen} of {count} Changed for {uri}"))
                            .expect("the bus connection ended")
                            .expect("a message");
                        let (id, about, change, _seq): (u64, String, String, u64) =
                            signal.body().deserialize().expect("a Changed signal");
                        writeln!(out, "changed {id} {about} {change}").expect("outcome");
                        seen += usize::from(about == uri);
                    }
                    None
                }
                "touch" => {
                    std::fs::write(arg, "").unwrap_or_else(|e| panic!("{arg}: {e}"));
                    None
                }
                "wait" => {
                    assert!(
                        wait_until(WAIT, || Path::new(arg).exists()),
                        "{arg} never appeared"
                    );
                    None
                }
                other => panic!("unknown step {other:?}"),
            };
            if let Some(outcome) = outcome {
                let line = match outcome {
                    Ok(v) => format!("ok {v}"),
                    Err(e) => format!("err {e}"),
                };
                writeln!(out, "{}", line.replace('\n', " ")).expect("outcome");
            }
        }
    });
    writeln!(out, "done").expect("outcome");
}

/// Calls `method` on omadmd; an error as `<error name> <message>`.
async fn call<B>(conn: &zbus::Connection, method: &str, body: &B) -> Result<zbus::Message, String>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(
        Some("org.omadm.Client1"),
        "/org/omadm/Client1",
        Some("org.omadm.Client1"),
        method,
        body,
    )
    .await
    .map_err(|e| match e {
        zbus::Error::MethodError(name, message, _) => {
            format!("{name} {}", message.unwrap_or_default())
        }
        other => format!("? {other}"),
    })
}
