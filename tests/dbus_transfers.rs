//! The D-Bus face of large-object transfers and `OpenValue`, on a real system bus with a
//! real polkitd: `org.omadm.Client1.Transfer` objects following the transfer board,
//! `SuspendTransfer`/`ResumeTransfer` (action manage) flipping its switch, `OpenValue` of
//! inline values and of a large object's file under `Get`'s rights, and `omadmctl
//! transfers`.
//!
//! The transfers come from a board the test drives: the D-Bus face (`bus::serve`, with the
//! store, authority and scheduler the daemon gives it) runs in a process of its own — this
//! test binary again, as the ignored test [`board_daemon`], on the private system bus —
//! reading board commands from its stdin (see [`BoardDaemon`]). Callers are root (the
//! administrator), in-process or through `omadmctl`, and a plain test user through
//! `gdbus`, `busctl` and `omadmctl`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use zbus::{OwnedObjectPath, OwnedVariant};

use omadmd::authority::{Authority, Rights};
use omadmd::bootstrap::Bootstrap;
use omadmd::bus::exec_handlers::ExecApps;
use omadmd::bus::{self, Bus, Inward};
use omadmd::network::NetworkState;
use omadmd::session::exec::ExecHandlers;
use omadmd::session::{Engine, Limits, Scheduler, Tasks};
use omadmd::store::{Bounds, Pool};
use omadmd::transfer::{Board, Direction, Progress, State};
use omadmd::tree::node::Node;
use omadmd::tree::registry::Registry;
use omadmd::tree::value::{ObjectRef, Value};

use crate::support::daemon::{call, call_err, failed};
use crate::support::sysbus::{KillOnDrop, SysBus, TestUser, show, test_user, wait_until};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");
const TRANSFER: &str = "org.omadm.Client1.Transfer";
const MOID: &str = "urn:oma:mo:ext-omadmd-test-files:1.0";
/// The large object instance 1's `Data` holds.
const LARGE: &[u8] = b"a large object, kept in a file beside the store\n";
/// A data repository URL with credentials in it.
const SECRET_URL: &str = "https://dev:pw@repo.example:8443/fw.bin?sig=hunter2#x";
const PUBLIC_URL: &str = "https://repo.example:8443/fw.bin";

/// Makes the ignored test [`board_daemon`] serve, on the state dir it names.
const BOARD_STATE: &str = "OMADMD_TEST_BOARD_STATE";

/// The MO type of the test: a bin leaf for a large object, inline leaves, a No-Get one.
const DDF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MgmtTree>
  <VerDTD>1.2</VerDTD>
  <Node>
    <NodeName>Files</NodeName>
    <DFProperties>
      <AccessType><Get/></AccessType>
      <DFFormat><node/></DFFormat>
      <Occurrence><ZeroOrMore/></Occurrence>
      <Scope><Dynamic/></Scope>
      <DFType><DDFName>urn:oma:mo:ext-omadmd-test-files:1.0</DDFName></DFType>
    </DFProperties>
    <Node>
      <NodeName>Data</NodeName>
      <DFProperties>
        <AccessType><Get/></AccessType>
        <DFFormat><bin/></DFFormat>
        <Occurrence><ZeroOrOne/></Occurrence>
        <Scope><Dynamic/></Scope>
        <DFType><MIME>application/octet-stream</MIME></DFType>
      </DFProperties>
    </Node>
    <Node>
      <NodeName>Blob</NodeName>
      <DFProperties>
        <AccessType><Get/></AccessType>
        <DFFormat><bin/></DFFormat>
        <Occurrence><ZeroOrOne/></Occurrence>
        <Scope><Dynamic/></Scope>
        <DFType><MIME>application/octet-stream</MIME></DFType>
      </DFProperties>
    </Node>
    <Node>
      <NodeName>Name</NodeName>
      <DFProperties>
        <AccessType><Get/></AccessType>
        <DFFormat><chr/></DFFormat>
        <Occurrence><ZeroOrOne/></Occurrence>
        <Scope><Dynamic/></Scope>
        <DFType><MIME>text/plain</MIME></DFType>
      </DFProperties>
    </Node>
    <Node>
      <NodeName>Secret</NodeName>
      <DFProperties>
        <AccessType><Replace/></AccessType>
        <DFFormat><chr/></DFFormat>
        <Occurrence><ZeroOrOne/></Occurrence>
        <Scope><Dynamic/></Scope>
        <DFType><MIME>text/plain</MIME></DFType>
      </DFProperties>
    </Node>
  </Node>
</MgmtTree>
"#;

/// The D-Bus face on a board driven from stdin, one command a line, each answered with a
/// line: `add ID STATE DONE TOTAL|- URL`, `advance ID DONE TOTAL|-`, `state ID STATE
/// [ERROR...]` (answered `ok`), `switch ID` (answered `true` or `false`: whether the runner
/// is told to suspend). Writes `ready` once it owns `org.omadm.Client1`. Does nothing unless
/// [`BOARD_STATE`] names its state dir.
#[test]
#[ignore = "the D-Bus face the transfer tests drive, run by them in a process of its own"]
fn board_daemon() {
    let Some(state) = std::env::var_os(BOARD_STATE) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let board = Arc::new(Board::default());
    let tasks = Tasks::new();
    let (_changes, changes_rx) = tokio::sync::mpsc::channel(1);
    let (_network, network) = tokio::sync::watch::channel(NetworkState::default());
    let inward = runtime.block_on(inward(Path::new(&state), board.clone(), network));
    let _service = runtime
        .block_on(bus::serve(
            Bus::System,
            inward,
            changes_rx,
            "urn:uuid:test-device".into(),
            &omadmd::config::Limits::default(),
            &tasks,
        ))
        .unwrap();
    println!("ready");
    let mut switches = BTreeMap::new();
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        let id: u64 = words[1].parse().unwrap();
        let total = |w: &str| (w != "-").then(|| w.parse::<u64>().unwrap());
        match words[0] {
            "add" => {
                let progress = Progress {
                    id,
                    srv_id: "ma1".into(),
                    direction: Direction::Download,
                    server_uri: words[5].into(),
                    client_uri: format!("{MOID}/1/Data"),
                    state: state_named(words[2]),
                    done: words[3].parse().unwrap(),
                    total: total(words[4]),
                    rate: 0,
                    error: String::new(),
                };
                switches.insert(id, board.add(progress, false));
            }
            "advance" => board.advance(id, words[2].parse().unwrap(), total(words[3])),
            "state" => board.set_state(id, state_named(words[2]), words[3..].join(" ")),
            "switch" => {
                println!("{}", *switches[&id].borrow());
                continue;
            }
            other => panic!("unknown board command {other}"),
        }
        println!("ok");
    }
}

fn state_named(name: &str) -> State {
    match name {
        "running" => State::Running,
        "waiting" => State::Waiting,
        "suspended" => State::Suspended,
        "done" => State::Done,
        "failed" => State::Failed,
        other => panic!("no state {other}"),
    }
}

/// What the daemon hands the D-Bus face, on a store in `state` holding instance 1 of
/// [`MOID`] (readable by every app: `Data` a large object, `Blob` and `Name` inline,
/// `Secret` No-Get) and instance 2 (readable by nobody but the administrator).
async fn inward(
    state: &Path,
    board: Arc<Board>,
    network: tokio::sync::watch::Receiver<NetworkState>,
) -> Inward {
    let ddf = state.join("ddf");
    std::fs::create_dir_all(&ddf).unwrap();
    std::fs::write(ddf.join("files.ddf"), DDF).unwrap();
    let (registry, refused) = Registry::with_dirs(&[ddf]);
    assert!(refused.is_empty(), "{refused:?}");
    let store = Arc::new(Pool::open(&state.join("store.db"), Bounds::default(), 2).unwrap());
    let objects = store.objects().expect("a store on disk keeps objects");
    objects.create_dirs().unwrap();
    let object = ObjectRef {
        size: LARGE.len() as u64,
        sha256: Sha256::digest(LARGE).into(),
    };
    std::fs::write(objects.path(&object), LARGE).unwrap();
    let auth = Arc::new(Authority::new(store.clone(), registry, Box::new(|_| {})));
    let leaf = |name: &str, value: Value| (name.to_owned(), Node::Leaf(value));
    let public = Node::Interior(BTreeMap::from([
        leaf("Data", Value::Object(object)),
        leaf("Blob", Value::Bin(vec![0, 1, 2, 255])),
        leaf("Name", Value::Chr("hello".into())),
        leaf("Secret", Value::Chr("hunter2".into())),
    ]));
    auth.provide(MOID, "1", "Files", &public, Rights::READ)
        .unwrap();
    let private = Node::Interior(BTreeMap::from([leaf("Name", Value::Chr("mine".into()))]));
    auth.provide(MOID, "2", "Files", &private, Rights::NONE)
        .unwrap();
    let (followups, _) = omadmd::session::engine::follow_up_queue();
    let engine = Arc::new(Engine::new(
        auth.clone(),
        store.clone(),
        "urn:uuid:test-device".into(),
        Limits::default(),
        ExecHandlers::from_config(&BTreeMap::new()).unwrap(),
        vec![],
        followups,
    ));
    let scheduler = Scheduler::new(engine, auth.clone(), store.clone(), PathBuf::from("/"));
    Inward {
        bootstrap: Arc::new(Bootstrap::new(
            auth.clone(),
            store,
            Vec::new(),
            Arc::new(|_| {}),
        )),
        auth,
        scheduler,
        exec_apps: Arc::new(ExecApps::default()),
        notifications: bus::servers::Notifications::default(),
        network,
        transfers: board,
        gateway: None,
    }
}

/// [`board_daemon`] running on a private system bus, driven through its stdin.
struct BoardDaemon {
    child: KillOnDrop,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    state: tempfile::TempDir,
}

impl BoardDaemon {
    fn start(bus: &SysBus) -> BoardDaemon {
        let state = tempfile::tempdir().unwrap();
        let log = File::create(state.path().join("daemon.log")).unwrap();
        let mut child = bus
            .command(None, std::env::current_exe().unwrap())
            .args([
                "--exact",
                "dbus_transfers::board_daemon",
                "--include-ignored",
            ])
            .args(["--nocapture", "--test-threads=1", "--quiet"])
            .env(BOARD_STATE, state.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        let mut daemon = BoardDaemon {
            child: KillOnDrop(child),
            input,
            output,
            state,
        };
        // libtest's own lines ("running 1 test") come first.
        loop {
            let line = daemon.line();
            if line == "ready" {
                break;
            }
        }
        daemon
    }

    /// The next line of the daemon's answers; panics with its log when it has ended.
    fn line(&mut self) -> String {
        let mut line = String::new();
        let read = self.output.read_line(&mut line).unwrap();
        assert!(read > 0, "the board daemon ended:\n{}", self.log());
        line.trim_end().to_owned()
    }

    /// Sends one board command; its answer.
    fn send(&mut self, command: &str) -> String {
        writeln!(self.input, "{command}").unwrap();
        self.input.flush().unwrap();
        self.line()
    }

    fn ok(&mut self, command: &str) {
        assert_eq!(self.send(command), "ok", "{command}");
    }

    /// Whether the runner of transfer `id` is told to suspend.
    fn suspended(&mut self, id: u64) -> bool {
        self.send(&format!("switch {id}")) == "true"
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for BoardDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- board daemon log ---\n{}", self.log());
        }
        let _ = self.child.0.kill();
    }
}

fn transfer_path(id: u64) -> String {
    format!("/org/omadm/Client1/transfer/{id}")
}

/// A connection of the test process (root) to `bus`.
async fn connect(bus: &SysBus) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address())
        .build()
        .await
        .unwrap()
}

/// omadmd's signals below `/org/omadm/Client1`, from now on.
async fn signals(conn: &zbus::Connection) -> zbus::MessageStream {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(bus::NAME)
        .path_namespace(bus::PATH)
        .build()
        .unwrap();
    zbus::MessageStream::for_match_rule(rule, conn, None)
        .await
        .unwrap()
}

/// The next of `stream`'s signals named `member`, with its object path; a failure bound,
/// not a measurement.
async fn next_signal(stream: &mut zbus::MessageStream, member: &str) -> (String, zbus::Message) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let message = stream.next().await.unwrap().unwrap();
            let header = message.header();
            if header.member().is_some_and(|m| m.as_str() == member) {
                let path = header.path().unwrap().to_string();
                return (path, message);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {member} signal"))
}

/// The changed properties of a `PropertiesChanged` of the transfer interface.
fn changed(message: &zbus::Message) -> HashMap<String, OwnedVariant> {
    let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
        message.body().deserialize().unwrap();
    assert_eq!(iface, TRANSFER);
    changed
}

async fn property(conn: &zbus::Connection, path: &str, name: &str) -> OwnedVariant {
    let reply = conn
        .call_method(
            Some(bus::NAME),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(TRANSFER, name),
        )
        .await
        .unwrap();
    reply.body().deserialize::<OwnedVariant>().unwrap()
}

fn text(v: &OwnedVariant) -> String {
    String::try_from(v.clone()).unwrap()
}

fn number(v: &OwnedVariant) -> u64 {
    u64::try_from(v.clone()).unwrap()
}

/// `busctl get-property` of a transfer's property as `user`: its output line.
fn busctl_property(bus: &SysBus, user: Option<&TestUser>, id: u64, name: &str) -> String {
    let out = bus
        .command(user, "busctl")
        .args([
            "get-property",
            bus::NAME,
            &transfer_path(id),
            TRANSFER,
            name,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Calls `method` on the main object as root, in-process; the error name if it fails.
async fn control(conn: &zbus::Connection, method: &str, path: &str) -> Result<(), String> {
    let path = OwnedObjectPath::try_from(path).unwrap();
    conn.call_method(
        Some(bus::NAME),
        bus::PATH,
        Some(bus::INTERFACE),
        method,
        &(path,),
    )
    .await
    .map(drop)
    .map_err(|e| match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => other.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_objects_follow_the_board_and_only_managers_switch_them() {
    let bus = SysBus::start();
    let mut daemon = BoardDaemon::start(&bus);
    let alice = test_user("omadmd-t-alice");
    let conn = connect(&bus).await;
    let mut stream = signals(&conn).await;

    // A transfer put on the board appears, announced with its properties; the URL's
    // credentials are for administrators only.
    daemon.ok(&format!("add 1 running 0 100 {SECRET_URL}"));
    let (manager, added) = next_signal(&mut stream, "InterfacesAdded").await;
    assert_eq!(manager, bus::PATH);
    let (object, interfaces): (
        OwnedObjectPath,
        HashMap<String, HashMap<String, OwnedVariant>>,
    ) = added.body().deserialize().unwrap();
    assert_eq!(object.as_str(), transfer_path(1));
    let props = &interfaces[TRANSFER];
    assert_eq!(text(&props["Direction"]), "download");
    assert_eq!(text(&props["State"]), "running");
    assert_eq!(text(&props["ServerId"]), "ma1");
    assert_eq!(text(&props["ClientUri"]), format!("{MOID}/1/Data"));
    assert_eq!(number(&props["BytesDone"]), 0);
    assert_eq!(number(&props["BytesTotal"]), 100);
    assert_eq!(number(&props["Rate"]), 0);
    assert_eq!(text(&props["Error"]), "");
    assert_eq!(text(&props["ServerUri"]), PUBLIC_URL);
    let path = transfer_path(1);
    assert_eq!(text(&property(&conn, &path, "ServerUri").await), SECRET_URL);
    assert_eq!(
        busctl_property(&bus, Some(&alice), 1, "ServerUri"),
        format!("s \"{PUBLIC_URL}\"")
    );
    assert_eq!(
        busctl_property(&bus, Some(&alice), 1, "BytesTotal"),
        "t 100"
    );

    // Changes are announced: a state change at once, with only what changed.
    daemon.ok("state 1 waiting HTTP 503 from the repository");
    let (at, message) = next_signal(&mut stream, "PropertiesChanged").await;
    assert_eq!(at, path);
    let c = changed(&message);
    let mut names: Vec<&str> = c.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["Error", "State"]);
    assert_eq!(text(&c["State"]), "waiting");
    assert_eq!(text(&c["Error"]), "HTTP 503 from the repository");
    assert_eq!(text(&property(&conn, &path, "State").await), "waiting");
    // Progress, once the board's thinning interval has passed since the last announcement.
    daemon.ok("state 1 running");
    let (_, message) = next_signal(&mut stream, "PropertiesChanged").await;
    assert_eq!(text(&changed(&message)["State"]), "running");
    tokio::time::sleep(omadmd::transfer::board::PROGRESS_EVERY + Duration::from_millis(50)).await;
    daemon.ok("advance 1 40 100");
    let (_, message) = next_signal(&mut stream, "PropertiesChanged").await;
    assert_eq!(number(&changed(&message)["BytesDone"]), 40);
    assert_eq!(number(&property(&conn, &path, "BytesDone").await), 40);

    // The object is the contract.
    let out = bus
        .command(None, "gdbus")
        .args(["introspect", "--system", "--xml", "--dest", bus::NAME])
        .args(["--object-path", &path])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let live = String::from_utf8_lossy(&out.stdout).into_owned();
    let contract = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.omadm.Client1.Transfer.xml"),
    )
    .unwrap();
    let iface = |doc: &str| {
        let start = doc
            .find(&format!("<interface name=\"{TRANSFER}\""))
            .expect("interface present");
        let end = start + doc[start..].find("</interface>").expect("interface closed");
        crate::dbus_service::signature_lines(&doc[start..end])
    };
    assert_eq!(iface(&live), iface(&contract));
    assert_eq!(iface(&contract).len(), 9);

    // Suspend and resume flip the runner's switch, for an administrator.
    assert_eq!(control(&conn, "SuspendTransfer", &path).await, Ok(()));
    assert!(daemon.suspended(1));
    assert_eq!(control(&conn, "SuspendTransfer", &path).await, Ok(()));
    assert!(daemon.suspended(1), "suspending twice is no error");
    assert_eq!(control(&conn, "ResumeTransfer", &path).await, Ok(()));
    assert!(!daemon.suspended(1));
    // Not for a plain user: manage needs an administrator to authenticate.
    let arg = format!("'{path}'");
    let denied = call_err(
        &bus,
        Some(&alice),
        "SuspendTransfer",
        &[&arg],
        "AccessDenied",
    );
    assert!(denied.contains("manage"), "{denied}");
    assert!(!daemon.suspended(1));
    // A user polkit lets manage may.
    bus.allow("60-transfers", &[&alice], &["manage"]);
    let out = call(&bus, Some(&alice), "SuspendTransfer", &[&arg]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(daemon.suspended(1));
    let out = call(&bus, Some(&alice), "ResumeTransfer", &[&arg]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!daemon.suspended(1));
    // Paths that are no transfer's.
    let not_found = "org.omadm.Client1.Error.NotFound";
    for other in [
        transfer_path(99).as_str(),
        bus::PATH,
        "/org/omadm/Client1/server/ma1",
    ] {
        assert_eq!(
            control(&conn, "SuspendTransfer", other).await,
            Err(not_found.to_owned()),
            "{other}"
        );
    }
    // A finished transfer is not switched any more.
    daemon.ok("state 1 done");
    let (_, message) = next_signal(&mut stream, "PropertiesChanged").await;
    assert_eq!(text(&changed(&message)["State"]), "done");
    assert_eq!(
        control(&conn, "ResumeTransfer", &path).await,
        Err("org.omadm.Client1.Error.NotAllowed".to_owned())
    );

    // Finished transfers leave the board, the oldest first, and their objects go with them.
    let kept = omadmd::transfer::board::KEEP_FINISHED as u64;
    for id in 2..=kept + 1 {
        daemon.ok(&format!("add {id} running 0 - {PUBLIC_URL}"));
        daemon.ok(&format!("state {id} failed digest mismatch"));
    }
    let (manager, removed) = next_signal(&mut stream, "InterfacesRemoved").await;
    assert_eq!(manager, bus::PATH);
    let (object, gone): (OwnedObjectPath, Vec<String>) = removed.body().deserialize().unwrap();
    assert_eq!(
        (object.as_str(), gone),
        (path.as_str(), vec![TRANSFER.to_owned()])
    );
    let objects = zbus::fdo::ObjectManagerProxy::builder(&conn)
        .destination(bus::NAME)
        .path(bus::PATH)
        .build()
        .await
        .unwrap()
        .get_managed_objects()
        .await
        .unwrap();
    let mut listed: Vec<u64> = objects
        .keys()
        .filter_map(|p| p.as_str().strip_prefix("/org/omadm/Client1/transfer/"))
        .map(|id| id.parse().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, (2..=kept + 1).collect::<Vec<u64>>());
}

/// `OpenValue` of `uri` as root, in-process: the descriptor as a file.
async fn open_value(conn: &zbus::Connection, uri: &str) -> Result<File, String> {
    let reply = conn
        .call_method(
            Some(bus::NAME),
            bus::PATH,
            Some(bus::INTERFACE),
            "OpenValue",
            &(uri,),
        )
        .await
        .map_err(|e| match e {
            zbus::Error::MethodError(name, _, _) => name.to_string(),
            other => other.to_string(),
        })?;
    let fd: zbus::OwnedFd = reply.body().deserialize().unwrap();
    Ok(File::from(std::os::fd::OwnedFd::from(fd)))
}

fn contents(mut file: &File) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_value_gives_what_get_may_read_as_a_read_only_descriptor() {
    let bus = SysBus::start();
    let _daemon = BoardDaemon::start(&bus);
    let conn = connect(&bus).await;

    // A large object: its own file, opened read-only.
    let file = open_value(&conn, &format!("{MOID}/1/Data")).await.unwrap();
    assert_eq!(contents(&file), LARGE);
    assert_eq!(file.metadata().unwrap().len(), LARGE.len() as u64);
    assert!((&file).write_all(b"x").is_err(), "read-only");
    // Get refuses it, and says what to use.
    let out = call(&bus, None, "Get", &[&format!("'{MOID}/1/Data'")]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && err.contains("OpenValue"),
        "{}",
        show(&out)
    );

    // Inline values: a sealed memfd with the raw bytes, or the text.
    let file = open_value(&conn, &format!("{MOID}/1/Blob")).await.unwrap();
    assert_eq!(contents(&file), [0, 1, 2, 255]);
    let file = open_value(&conn, &format!("{MOID}/1/Name")).await.unwrap();
    assert_eq!(contents(&file), b"hello");
    // SAFETY: fcntl on a descriptor this test owns.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    let all = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    assert_eq!(seals & all, all, "sealed");
    assert!((&file).write_all(b"x").is_err());

    // One leaf only; No-Get nodes are not there for anyone.
    assert_eq!(
        open_value(&conn, &format!("{MOID}/1/")).await.unwrap_err(),
        "org.omadm.Client1.Error.InvalidUri"
    );
    assert_eq!(
        open_value(&conn, &format!("{MOID}/1/*")).await.unwrap_err(),
        "org.omadm.Client1.Error.InvalidUri"
    );
    assert_eq!(
        open_value(&conn, &format!("{MOID}/1/Secret"))
            .await
            .unwrap_err(),
        "org.omadm.Client1.Error.NotFound"
    );
    assert_eq!(
        open_value(&conn, &format!("{MOID}/1/Nope"))
            .await
            .unwrap_err(),
        "org.omadm.Client1.Error.NotFound"
    );
    assert_eq!(
        open_value(&conn, "not a uri").await.unwrap_err(),
        "org.omadm.Client1.Error.InvalidUri"
    );

    // A plain user reads what the grants let it read, and nothing else: the private
    // instance is not there for it, as with Get.
    let alice = test_user("omadmd-t-alice");
    for uri in [format!("{MOID}/1/Data"), format!("{MOID}/1/Name")] {
        let out = call(&bus, Some(&alice), "OpenValue", &[&format!("'{uri}'")]);
        assert!(out.status.success(), "{uri}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("handle"),
            "{}",
            show(&out)
        );
    }
    let private = format!("'{MOID}/2/Name'");
    call_err(&bus, Some(&alice), "Get", &[&private], "NotFound");
    call_err(&bus, Some(&alice), "OpenValue", &[&private], "NotFound");
    call_err(
        &bus,
        Some(&alice),
        "OpenValue",
        &[&format!("'{MOID}/1/Secret'")],
        "NotFound",
    );
    // The administrator reads it.
    let file = open_value(&conn, &format!("{MOID}/2/Name")).await.unwrap();
    assert_eq!(contents(&file), b"mine");
    // Without polkit's read, nothing.
    bus.add_polkit_rules(
        "60-no-read",
        r#"polkit.addRule(function(action, subject) {
             if (action.id == "org.omadm.client1.read" && subject.user == "omadmd-t-alice") {
               return polkit.Result.NO; }
             return polkit.Result.NOT_HANDLED; });"#,
    );
    let out = call(
        &bus,
        Some(&alice),
        "OpenValue",
        &[&format!("'{MOID}/1/Name'")],
    );
    failed(&out, "OpenValue", &[], "AccessDenied");
}

/// `omadmctl` on `bus` as `user`, with `args`.
fn ctl(bus: &SysBus, user: Option<&TestUser>, args: &[&str]) -> Output {
    bus.command(user, CTL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[track_caller]
fn status(out: &Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", show(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `omadmctl transfers watch ARGS` as root, its stdout read line by line.
struct Watching {
    child: KillOnDrop,
    lines: BufReader<ChildStdout>,
}

impl Watching {
    fn start(bus: &SysBus, args: &[&str]) -> Watching {
        let mut child = bus
            .command(None, CTL)
            .args(["transfers", "watch"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        Watching {
            child: KillOnDrop(child),
            lines,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        line
    }

    /// The rest of its output and its exit status; a failure bound, not a measurement.
    fn finish(mut self) -> (String, Option<i32>) {
        let mut rest = String::new();
        self.lines.read_to_string(&mut rest).unwrap();
        let mut code = None;
        assert!(wait_until(Duration::from_secs(20), || {
            code = self.child.try_wait().unwrap().map(|s| s.code());
            code.is_some()
        }));
        (rest, code.flatten())
    }
}

#[test]
fn omadmctl_lists_follows_and_switches_transfers() {
    let bus = SysBus::start();
    let mut daemon = BoardDaemon::start(&bus);
    let alice = test_user("omadmd-t-alice");

    assert_eq!(
        status(&ctl(&bus, None, &["transfers"]), 0),
        "No transfers.\n"
    );
    let out = ctl(&bus, None, &["transfers", "watch"]);
    assert_eq!(status(&out, 0), "No transfers running.\n");

    daemon.ok(&format!("add 1 running 0 {} {SECRET_URL}", 256u64 << 20));
    daemon.ok("add 2 running 0 - https://repo.example/log");
    daemon.ok("state 2 waiting HTTP 503");
    let table = status(&ctl(&bus, Some(&alice), &["transfers"]), 0);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (row, words) in rows.iter().zip([
        &[
            "ID",
            "DIRECTION",
            "STATE",
            "DONE/TOTAL",
            "RATE",
            "CLIENT URI",
            "SERVER",
        ][..],
        &[
            "1",
            "download",
            "running",
            "0 B/256.00 MiB (0%)",
            "-",
            "/1/Data",
            "ma1",
        ],
        &["2", "download", "waiting (HTTP 503)", "0 B/?", "-", "ma1"],
    ]) {
        for word in words {
            assert!(row.contains(word), "{word:?} not in {row:?}\n{table}");
        }
    }
    assert!(!table.contains("hunter2"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&status(&ctl(&bus, None, &["--json", "transfers"]), 0)).unwrap();
    assert_eq!(json[0]["id"], 1);
    assert_eq!(json[0]["bytes_total"], 256u64 << 20);
    assert_eq!(json[1]["bytes_total"], serde_json::Value::Null);
    assert_eq!(json[1]["state"], "waiting");
    assert_eq!(json[1]["error"], "HTTP 503");
    assert_eq!(json[1]["client_uri"], format!("{MOID}/1/Data"));

    // Suspend and resume: for administrators.
    status(&ctl(&bus, None, &["transfers", "suspend", "1"]), 0);
    assert!(daemon.suspended(1));
    status(&ctl(&bus, None, &["transfers", "resume", "1"]), 0);
    assert!(!daemon.suspended(1));
    let out = ctl(
        &bus,
        Some(&alice),
        &["--no-ask-password", "transfers", "suspend", "1"],
    );
    status(&out, 5);
    assert!(!daemon.suspended(1));
    status(&ctl(&bus, None, &["transfers", "suspend", "9"]), 4);
    status(&ctl(&bus, None, &["transfers", "watch", "9"]), 4);

    // watch ID: a line per state change and per tenth, until it ends; 0 when done.
    let mut one = Watching::start(&bus, &["1"]);
    assert!(one.line().starts_with("1 download running 0 B/256.00 MiB"));
    std::thread::sleep(omadmd::transfer::board::PROGRESS_EVERY + Duration::from_millis(50));
    daemon.ok(&format!("advance 1 {} {}", 128u64 << 20, 256u64 << 20));
    assert!(one.line().contains("128.00 MiB/256.00 MiB (50%)"));
    daemon.ok(&format!("advance 1 {} {}", 256u64 << 20, 256u64 << 20));
    daemon.ok("state 1 done");
    let (rest, code) = one.finish();
    assert_eq!(code, Some(0), "{rest}");
    assert!(
        rest.lines()
            .last()
            .unwrap()
            .starts_with("1 download done 256.00 MiB/256.00 MiB (100%)"),
        "{rest}"
    );
    status(&ctl(&bus, None, &["transfers", "suspend", "1"]), 6);

    // watch: every unfinished one, and those that start meanwhile; 10 when one failed.
    let mut all = Watching::start(&bus, &[]);
    assert!(all.line().starts_with("2 download waiting (HTTP 503)"));
    daemon.ok(&format!("add 3 running 0 10 {PUBLIC_URL}"));
    assert!(all.line().starts_with("3 download running 0 B/10 B"));
    daemon.ok("state 2 failed digest mismatch");
    assert!(
        all.line()
            .starts_with("2 download failed (digest mismatch)")
    );
    daemon.ok("advance 3 10 10");
    daemon.ok("state 3 done");
    let (rest, code) = all.finish();
    assert_eq!(code, Some(10), "{rest}");
    assert!(
        rest.starts_with("3 download done 10 B/10 B (100%)"),
        "{rest}"
    );

    // --json: one object a line.
    let out = ctl(&bus, None, &["--json", "transfers", "watch", "3"]);
    let line: serde_json::Value = serde_json::from_str(status(&out, 0).trim()).unwrap();
    assert_eq!(
        (line["id"].as_u64(), line["state"].as_str()),
        (Some(3), Some("done"))
    );

    // Each command is documented, with examples.
    for command in [
        &["transfers"][..],
        &["transfers", "watch"],
        &["transfers", "suspend"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let help = status(&ctl(&bus, None, &args), 0);
        assert!(help.contains("EXAMPLES:"), "{help}");
    }
}
