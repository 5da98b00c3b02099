//! Sub-agents end to end (DM-HLF-006, docs/gateway.md §6): a host omadmd with
//! `[gateway.guests.web1]` and a guest omadmd with `[subagent]`, each with its own state dir
//! and private session bus, the guest in a network namespace of its own (`unshare -n`; the
//! Unix socket crosses it). One DM session from `omadm-devserver` over TLS to the host reads
//! the host's DevID and the guest's, writes a setting into the guest (its own store has it)
//! and runs an EXEC the guest answers. Connections with a wrong token, from a wrong uid, or
//! with a frame over the bound are closed unanswered; the guest's No-Get nodes never reach
//! the host; deletions on the guest reach the mirror; a killed guest is `unreachable`, read
//! from the mirror, and a write to it is `503`.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use omadmd::gateway::subagent::wire::{Frame, encode};
use serde_json::json;

use crate::lwm2m_gateway::statuses;
use crate::omadmctl_cli::TestServer;
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{KillOnDrop, show, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const DEVINFO: &str = "urn:oma:mo:oma-dm-devinfo:1.0";
const GATEWAY: &str = "urn:oma:mo:ext-omadmd-gateway:1.0";
const APP: &str = "urn:oma:mo:ext-omadmd-test-app:1.0";
const SECRET: &str = "s3cret-that-stays-on-the-guest";
const WAIT: Duration = Duration::from_secs(30);
const FRAME_BYTES: usize = 65_536;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/subagent")
}

/// `omadmctl get --value URI` as the local admin.
fn value(bus: &SessionBus, uri: &str) -> Option<String> {
    let out = bus.run(&["get", "--value", uri]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Starts omadmd on `bus` as [`SessionBus::daemon`] does, but in a network namespace of its
/// own.
fn guest_daemon(bus: &SessionBus, dir: &Path) -> KillOnDrop {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("omadmd.log"))
        .unwrap();
    let given = std::fs::read_to_string(dir.join("omadmd.toml")).unwrap();
    let config = dir.join("omadmd.effective.toml");
    std::fs::write(&config, crate::support::daemon::test_config(&given)).unwrap();
    let mut daemon = KillOnDrop::spawn(
        Command::new("unshare")
            .arg("-n")
            .arg(env!("CARGO_BIN_EXE_omadmd"))
            .arg("--session")
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
            .env("RUST_LOG", "omadmd=debug")
            .stdout(Stdio::null())
            .stderr(log),
    );
    let up = wait_until(WAIT, || {
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("the guest omadmd exited with {status}: {}", daemon_log(dir));
        }
        bus.run(&["status"]).status.success()
    });
    assert!(up, "the guest omadmd did not come up: {}", daemon_log(dir));
    daemon
}

/// Connects to `socket`, sends `bytes` and reads until the host closes the connection;
/// what it answered.
fn answer_to(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the host closes the connection");
    answer
}

fn hello(token: &str) -> Vec<u8> {
    let frame = Frame::Hello {
        v: 1,
        token: token.to_owned(),
        devid: "test".into(),
        seq: 0,
    };
    encode(&frame, FRAME_BYTES).unwrap()
}

/// The MIID in a ClientURI `omadmctl create` printed.
fn miid_of(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", show(out));
    let uri = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    uri.split('/').nth(1).expect("moid/miid/").to_owned()
}

/// Whether `needle` is in any of the store files under `state`.
fn in_store_files(state: &Path, needle: &str) -> bool {
    std::fs::read_dir(state)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("store.db"))
        .any(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
}

#[test]
fn one_session_manages_the_host_and_a_guest_in_its_own_network_namespace() {
    let host_dir = tempfile::tempdir().unwrap();
    // A test client of another uid must reach the socket below it.
    std::fs::set_permissions(host_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = host_dir.path().join("guests/web1/host.sock");
    let token_file = host_dir.path().join("web1.token");
    std::fs::write(
        host_dir.path().join("omadmd.toml"),
        format!(
            "[ddf]\ndirs = [{:?}]\n[gateway]\ncommand_timeout_s = 5\nguest_frame_bytes = {FRAME_BYTES}\n\
             last_seen_granularity_s = 1\n\
             [gateway.guests.web1]\nsocket = {socket:?}\nuid = 0\ntoken_file = {token_file:?}\n",
            fixtures()
        ),
    )
    .unwrap();
    let host_bus = SessionBus::start();
    let _host = host_bus.daemon(host_dir.path());
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64, "{token:?}");
    let host_log = || daemon_log(host_dir.path());
    let web1_state = format!("{GATEWAY}/0/Children/web1/State");

    // A wrong token: closed unanswered, logged, no child.
    let last = if token.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &token[..63]);
    assert!(answer_to(&socket, &hello(&wrong)).is_empty());
    assert!(
        wait_until(WAIT, || host_log().contains("wrong token")),
        "{}",
        host_log()
    );
    // Another uid with the right token: refused by its peer credentials.
    let client = format!(
        "import socket, struct, json, sys\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.connect(sys.argv[1])\n\
         b = json.dumps({{'t': 'hello', 'v': 1, 'token': sys.argv[2], 'devid': 'x', 'seq': 0}}).encode()\n\
         s.settimeout({})\n\
         try:\n\
         \x20   s.sendall(struct.pack('>I', len(b)) + b)\n\
         \x20   print(len(s.recv(100)))\n\
         except (BrokenPipeError, ConnectionResetError):\n\
         \x20   print(0)\n",
        WAIT.as_secs()
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=4242",
            "--regid=4242",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(&client)
        .arg(&socket)
        .arg(token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(
        wait_until(WAIT, || host_log()
            .contains("refused a connection from uid 4242")),
        "{}",
        host_log()
    );
    assert_eq!(
        value(&host_bus, &web1_state),
        None,
        "no child after refusals"
    );

    // An accepted connection that sends a frame over the bound: welcomed, then closed.
    let mut bytes = hello(token);
    bytes.extend_from_slice(&u32::try_from(FRAME_BYTES + 1).unwrap().to_be_bytes());
    let answer = answer_to(&socket, &bytes);
    let welcome = encode(&Frame::Welcome { since: 0 }, FRAME_BYTES).unwrap();
    assert_eq!(answer, welcome, "{}", host_log());
    assert!(
        wait_until(WAIT, || value(&host_bus, &web1_state).as_deref()
            == Some("unreachable")),
        "{}",
        host_log()
    );
    assert!(host_log().contains("over the bound"), "{}", host_log());

    // The guest: its own bus, state dir and network namespace.
    let guest_dir = tempfile::tempdir().unwrap();
    let guest_token = guest_dir.path().join("subagent.token");
    std::fs::write(&guest_token, format!("{token}\n")).unwrap();
    let restarted = guest_dir.path().join("restarted");
    std::fs::write(
        guest_dir.path().join("omadmd.toml"),
        format!(
            "[ddf]\ndirs = [{:?}]\n[gateway]\nguest_frame_bytes = {FRAME_BYTES}\n\
             [subagent]\nhost_socket = {socket:?}\ntoken_file = {guest_token:?}\n\
             export_moids = [\"{DEVINFO}\", \"{APP}\"]\n\
             [exec.\"{APP}/*/Restart\"]\ncommand = [\"sh\", \"-c\", \"echo restarted > {}\"]\n",
            fixtures(),
            restarted.display()
        ),
    )
    .unwrap();
    let guest_bus = SessionBus::start();
    let mut guest = guest_daemon(&guest_bus, guest_dir.path());
    let guest_log = || daemon_log(guest_dir.path());
    let app = |setting: &str| {
        json!({"App": {"Setting": setting, "Note": "a note", "Secret": SECRET, "Restart": null}})
            .to_string()
    };
    let a = miid_of(&guest_bus.run(&["create", APP, &app("initial")]));
    let b = miid_of(&guest_bus.run(&["create", APP, &app("second")]));
    let mirrored = |miid: &str, path: &str| format!("{APP}/web1.{miid}/{path}");
    assert!(
        wait_until(WAIT, || value(&host_bus, &mirrored(&b, "Setting"))
            .as_deref()
            == Some("second")),
        "the guest's instances did not reach the host:\nhost: {}\nguest: {}",
        host_log(),
        guest_log()
    );
    assert_eq!(value(&host_bus, &web1_state).as_deref(), Some("online"));
    assert_eq!(
        value(&host_bus, &format!("{GATEWAY}/0/Children/web1/Protocol")).as_deref(),
        Some("omadmd")
    );

    // One session: the host's DevID and the guest's, a write into the guest, its EXEC.
    let setting = mirrored(&a, "Setting");
    let end = json!({"packages": [{"commands": [["END"]]}]});
    // The account does not have the inventory MOID: no ChildState alert asks for a session
    // of its own when the guest goes.
    let scenario = json!({"name": "subagent",
        "repository": {"setting": [{"ClientURI": setting, "MOData": {"Setting": "from-the-server"}}]},
        "sessions": [
            {"packages": [
                {"commands": [["GET", format!("{DEVINFO}/0/DevID")],
                              ["GET", format!("{DEVINFO}/web1.0/DevID")],
                              ["HGET", "{repo}/setting", setting],
                              ["EXEC", mirrored(&a, "Restart")],
                              ["DELETE", mirrored(&a, "Note")],
                              ["GET", format!("{DEVINFO}//DevID")]]},
                {"commands": [["END"]]}]},
            {"packages": [
                {"commands": [["GET", format!("{DEVINFO}/web1.0/DevID")],
                              ["HGET", "{repo}/setting", setting]]},
                {"commands": [["END"]]}]},
            end, end, end]})
    .to_string();
    let srv = TestServer::start(Some(&scenario));
    let account = json!({"DMAcc": {"SrvID": "devserver", "SrvURI": srv.server.url(),
        "Perm": {"d": {"MOID": DEVINFO}, "a": {"MOID": APP}},
        "Ext": {"CACert": srv.server.ca_pem()}}});
    let out = host_bus.run(&["create", DMACC, &account.to_string()]);
    assert!(out.status.success(), "{}", show(&out));
    let out = host_bus.run(&["session", "start", "devserver"]);
    assert!(out.status.success(), "{}\n{}", show(&out), host_log());
    let st = statuses(&srv);
    let dev_id = value(&host_bus, &format!("{DEVINFO}/0/DevID")).unwrap();
    assert_eq!(st[0]["sc"], 200, "{st:?}");
    assert_eq!(st[0]["Data"][0]["MOData"]["DevID"], dev_id, "{st:?}");
    assert_eq!(st[1]["sc"], 200, "{st:?}");
    assert_eq!(
        st[1]["Data"][0]["ClientURI"],
        format!("{DEVINFO}/web1.0/DevID"),
        "{st:?}"
    );
    assert_eq!(
        st[1]["Data"][0]["MOData"]["DevID"],
        value(&guest_bus, &format!("{DEVINFO}/0/DevID")).unwrap(),
        "{st:?}"
    );
    assert_eq!(
        st[2]["sc"],
        200,
        "HGET into the guest: {st:?}\n{}",
        guest_log()
    );
    assert_eq!(
        st[3]["sc"],
        200,
        "EXEC on the guest: {st:?}\n{}",
        guest_log()
    );
    assert_eq!(
        value(&guest_bus, &format!("{APP}/{a}/Setting")).as_deref(),
        Some("from-the-server"),
        "the guest's own store has the write"
    );
    assert_eq!(
        std::fs::read_to_string(&restarted).unwrap().trim(),
        "restarted"
    );
    // The DELETE reached the guest's own store; the empty mo-inst names the host's own
    // DevInfo, never the guest's (docs/gateway.md §1.4).
    assert_eq!(
        st[4]["sc"],
        200,
        "DELETE on the guest: {st:?}\n{}",
        guest_log()
    );
    assert_eq!(value(&guest_bus, &format!("{APP}/{a}/Note")), None);
    assert_eq!(st[5]["sc"], 200, "{st:?}");
    assert_eq!(st[5]["Data"][0]["MOData"]["DevID"], dev_id, "{st:?}");

    // No-Get nodes never leave the guest: its store has the secret, the host's never did.
    assert!(in_store_files(&guest_dir.path().join("state"), SECRET));
    assert!(!in_store_files(&host_dir.path().join("state"), SECRET));

    // Deletions on the guest reach the mirror: a node, then a whole instance.
    let out = guest_bus.run(&["delete", &format!("{APP}/{b}/Note")]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(WAIT, || value(&host_bus, &mirrored(&b, "Note")).is_none()),
        "{}",
        host_log()
    );
    let out = guest_bus.run(&["delete", &format!("{APP}/{b}/")]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(WAIT, || value(&host_bus, &mirrored(&b, "Setting"))
            .is_none()),
        "{}",
        host_log()
    );
    let mos = value(&host_bus, &format!("{GATEWAY}/0/Children/web1/MOs/*")).unwrap_or_default();
    assert!(mos.contains(&format!("web1.{a}/")), "{mos}");
    assert!(!mos.contains(&format!("web1.{b}/")), "{mos}");

    // The guest dies: the child is unreachable, reads answer from the mirror, a write is 503.
    guest.kill().unwrap();
    guest.wait().unwrap();
    assert!(
        wait_until(WAIT, || value(&host_bus, &web1_state).as_deref()
            == Some("unreachable")),
        "{}",
        host_log()
    );
    let out = host_bus.run(&["session", "start", "devserver"]);
    assert!(out.status.success(), "{}\n{}", show(&out), host_log());
    let st = statuses(&srv);
    assert_eq!(st[0]["sc"], 200, "read from the mirror: {st:?}");
    assert_eq!(st[1]["sc"], 503, "a write to an absent guest: {st:?}");
}
