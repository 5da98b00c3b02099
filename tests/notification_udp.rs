//! Server notifications over UDP (issue 10, PROTOCOL.md §5): the real `omadmd` on a private
//! session bus listening on `[notification.udp] listen`, an in-process `omadm-devserver`
//! over TLS as the DM server, and `omadm-devserver notify` sending Package#0 datagrams. A
//! good notification starts a session whose Package#1 carries `ServerInitiatedMgmt` with
//! the NOTIFICATION-ID and, for REQ-MOS, the MO list; a forged digest, a replayed id (also
//! after the daemon was killed and started again), a stale TIMESTAMP and one over the rate
//! start none, are logged with their reason and counted in `IgnoredNotifications`. A
//! notification naming a bootstrap-only account makes omadmd fetch its bootstrap again (a
//! server-initiated bootstrap).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use omadmd::devserver::{DevServer, DevServerConfig, Direction};
use omadmd::protocol::alert;

use crate::omadmctl_cli::TestServer;
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{show, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const DEVSERVER: &str = env!("CARGO_BIN_EXE_omadm-devserver");

/// Every session ends at once.
const ENDS: &str = r#"{"name": "notified", "packages": [{"commands": [["END"]]}]}"#;

const LISTENING: &str = "notification channel udp: listening on ";

/// Where the daemon (the last one started in `dir`) listens for notifications.
fn udp_addr(dir: &Path) -> String {
    let log = daemon_log(dir);
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(LISTENING))
        .unwrap_or_else(|| panic!("omadmd does not listen on UDP: {log}"));
    line.split(LISTENING)
        .nth(1)
        .expect("an address")
        .trim()
        .to_owned()
}

/// `omadm-devserver notify --udp TO ARGS`.
fn notify(to: &str, args: &[&str]) {
    let out: Output = Command::new(DEVSERVER)
        .args(["notify", "--udp", to])
        .args(args)
        .output()
        .expect("omadm-devserver runs");
    assert!(out.status.success(), "{}", show(&out));
}

/// Waits until the daemon in `dir` has logged `needle` `n` times in all.
fn logged(dir: &Path, needle: &str, n: usize) {
    assert!(
        wait_until(Duration::from_secs(20), || daemon_log(dir)
            .matches(needle)
            .count()
            >= n),
        "omadmd did not log {needle:?} {n} time(s): {}",
        daemon_log(dir)
    );
}

/// The `IgnoredNotifications` of `srv_id`, as `omadmctl status` shows it.
fn ignored(bus: &SessionBus, srv_id: &str) -> u64 {
    let out = bus.run(&["--json", "status"]);
    assert!(out.status.success(), "{}", show(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server_id"] == srv_id)
        .unwrap_or_else(|| panic!("{srv_id} in {status}"))["ignored_notifications"]
        .as_u64()
        .unwrap()
}

#[test]
fn notifications_over_udp_start_sessions_and_bad_ones_are_ignored_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("omadmd.toml"),
        "[notification]\nrate_per_minute = 2\n[notification.udp]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let bus = SessionBus::start();
    let daemon = bus.daemon(dir.path());
    let srv = TestServer::start(Some(ENDS));
    let mut account: serde_json::Value =
        serde_json::from_str(&srv.account("notified", srv.server.ca_pem(), 0)).unwrap();
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    account["DMAcc"]["Auth"] =
        serde_json::json!({"Noti": {"Secret": b64("s3cret"), "Data": b64("auth-data")}});
    let out = bus.run(&["create", DMACC, &account.to_string()]);
    assert!(out.status.success(), "{}", show(&out));
    // The first session carries BootstrapComplete whatever started it: have it first.
    let out = bus.run(&["session", "start", "notified"]);
    assert!(out.status.success(), "{}", show(&out));
    srv.wait_for_sessions(1);

    let to = udp_addr(dir.path());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stamp = now.to_string();
    let signed = ["--secret", "s3cret", "--data", "auth-data"];
    let first: Vec<&str> = [
        "--server-id",
        "notified",
        "--id",
        "1",
        "--timestamp",
        &stamp,
        "--req-mos",
    ]
    .into_iter()
    .chain(signed)
    .collect();

    // A good one: a session answering it.
    notify(&to, &first);
    srv.wait_for_sessions(2);
    let package1 = srv
        .server
        .transcript()
        .into_iter()
        .rfind(|r| r.kind == "package#1" && r.direction == Direction::In)
        .and_then(|r| r.body)
        .expect("a Package#1");
    assert_eq!(
        package1["Alert"][0],
        serde_json::json!({"AlertType": alert::SERVER_INITIATED, "Data": {"NotificationID": 1}}),
        "{package1}"
    );
    let mos = package1["MOS"].as_array().expect("REQ-MOS: the MO list");
    assert!(
        mos.iter()
            .any(|m| m["MOID"] == "urn:oma:mo:oma-dm-devinfo:1.0"),
        "{package1}"
    );
    logged(dir.path(), "notification 1 accepted: session ", 1);

    // Bad ones, each ignored with its reason.
    let ignored_because = "notification ignored: ";
    notify(&to, &first);
    logged(
        dir.path(),
        "notification ignored: NOTIFICATION-ID 1 was seen already",
        1,
    );
    notify(
        &to,
        &[
            "--server-id",
            "notified",
            "--id",
            "2",
            "--secret",
            "guessed",
            "--data",
            "auth-data",
        ],
    );
    logged(dir.path(), "notification ignored: the digest is wrong", 1);
    let stale = (now - 1000).to_string();
    notify(
        &to,
        &[
            "--server-id",
            "notified",
            "--id",
            "3",
            "--timestamp",
            &stale,
            "--secret",
            "s3cret",
            "--data",
            "auth-data",
        ],
    );
    logged(
        dir.path(),
        &format!("notification ignored: its TIMESTAMP {stale} is "),
        1,
    );
    notify(&to, &["--server-id", "notified", "--id", "4"]);
    logged(
        dir.path(),
        "notification ignored: it carries no digest, but the DM account has Auth/Noti credentials",
        1,
    );
    notify(&to, &["--server-id", "nosuch", "--id", "5"]);
    logged(
        dir.path(),
        "notification ignored: no DM account has SrvID \"nosuch\"",
        1,
    );
    // The rate: the second good one this minute passes, the third does not.
    notify(
        &to,
        &["--server-id", "notified", "--id", "10"]
            .into_iter()
            .chain(signed)
            .collect::<Vec<_>>(),
    );
    srv.wait_for_sessions(3);
    notify(
        &to,
        &["--server-id", "notified", "--id", "11"]
            .into_iter()
            .chain(signed)
            .collect::<Vec<_>>(),
    );
    logged(
        dir.path(),
        "notification ignored: more than 2 notifications in a minute ([notification] rate_per_minute)",
        1,
    );
    assert_eq!(daemon_log(dir.path()).matches(ignored_because).count(), 6);
    // Every ignored one was decided before the next was read: none started a session.
    assert_eq!(srv.server.results().len(), 3, "{:?}", srv.server.results());
    assert!(
        srv.server.failures().is_empty(),
        "{:?}",
        srv.server.failures()
    );
    // Counted for the server they named (the one naming no account is only logged).
    assert_eq!(ignored(&bus, "notified"), 5);

    // Killed and started again: the replay is still refused.
    drop(daemon);
    let _daemon = bus.daemon(dir.path());
    let to = udp_addr(dir.path());
    notify(&to, &first);
    logged(
        dir.path(),
        "notification ignored: NOTIFICATION-ID 1 was seen already",
        2,
    );
    assert_eq!(srv.server.results().len(), 3);
    assert_eq!(ignored(&bus, "notified"), 1);
}

#[test]
fn a_notification_naming_a_bootstrap_only_account_fetches_its_bootstrap_again() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let certs = tempfile::tempdir().unwrap();
    let mut config = DevServerConfig::new(certs.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.basic = Some("device:s3cret".parse().unwrap());
    // The bootstrap server renames the account naming it (it may rewrite that account).
    config.bootstrap = Some(
        serde_json::json!([{"ClientURI": format!("{DMACC}/boot/Name"),
                            "MOData": {"Name": "renamed"}}])
        .to_string()
        .into_bytes(),
    );
    let server = runtime
        .block_on(DevServer::start(config))
        .expect("devserver starts");
    let url = server.bootstrap_url().expect("a bootstrap server");
    let boot = dir.path().join("boot.d");
    std::fs::create_dir(&boot).unwrap();
    let account = serde_json::json!([{"ClientURI": format!("{DMACC}/boot/"), "MOData": {"DMAcc": {
        "SrvID": "boot", "SrvURI": url, "Name": "factory", "Perm": {},
        "Auth": {"Bootstrap": {"ServerURI": url},
                 "Trsp": {"Data": "device", "Secret": "s3cret"}},
        "Ext": {"CACert": server.ca_pem()}}}}]);
    std::fs::write(boot.join("10-bootstrap.json"), account.to_string()).unwrap();
    std::fs::write(
        dir.path().join("omadmd.toml"),
        format!(
            "[bootstrap]\ndirs = [{:?}]\n[notification.udp]\nlisten = \"127.0.0.1:0\"\n",
            boot.display().to_string()
        ),
    )
    .unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    let name = || {
        let out = bus.run(&["get", "--value", &format!("{DMACC}/boot/Name")]);
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The client-initiated bootstrap, once.
    logged(
        dir.path(),
        &format!("bootstrap from {url} (DM account {DMACC}/boot/) applied"),
        1,
    );
    assert_eq!(server.bootstrap_fetches(), 1);
    assert_eq!(name(), "renamed");
    let out = bus.run(&["set", &format!("{DMACC}/boot/Name"), "factory"]);
    assert!(out.status.success(), "{}", show(&out));

    // The bootstrap server notifies: the bootstrap is fetched and applied again.
    notify(&udp_addr(dir.path()), &["--server-id", "boot", "--id", "1"]);
    logged(
        dir.path(),
        &format!("server-initiated bootstrap of DM account {DMACC}/boot/ from {url} applied"),
        1,
    );
    assert_eq!(server.bootstrap_fetches(), 2);
    assert_eq!(name(), "renamed");
    runtime.block_on(server.shutdown());
}
