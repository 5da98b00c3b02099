//! PREFERRED-CON-TYPE against a real NetworkManager (issue 10, PROTOCOL.md §5): omadmd on
//! the harness's system bus follows NetworkManager managing the veth `nm0` — ethernet, a
//! wireline bearer — and listens for Package#0 on UDP with `[notification]
//! bearer_timeout_s = 2`. A notification asking for wireline starts its session at once; one
//! asking for WLAN (a bearer the machine cannot have) starts its session only after omadmd
//! logged that no WLAN bearer came up in time; one asking for cellular, sent while the cable
//! is out and followed by the cable going back in (a wireline bearer coming up, not a
//! cellular one), does the same. Then, with a wait long enough (a second omadmd, 120 s), a
//! notification asking for wireline while the cable is out is held — a later one asking for
//! any bearer runs past it — and its session runs once the cable is back, without giving
//! up. Each session's Package#1 carries `ServerInitiatedMgmt` with the notification's
//! NOTIFICATION-ID. One NetworkManager setup for the whole sequence (one test).

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use omadmd::devserver::Direction;
use omadmd::protocol::alert;
use serde_json::Value as J;

use crate::omadmctl_cli::TestServer;
use crate::support::daemon::Daemon;
use crate::support::network::{network_mo, property};
use crate::support::sysbus::{SysBus, show, wait_until};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");
const DEVSERVER: &str = env!("CARGO_BIN_EXE_omadm-devserver");
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";

/// Every session ends at once.
const ENDS: &str = r#"{"name": "notified", "packages": [{"commands": [["END"]]}]}"#;

/// omadmd's configuration: UDP notifications, waits for a bearer of at most `timeout_s`,
/// and room for every notification of the test in the rate.
fn config(timeout_s: u64) -> String {
    format!(
        "[notification]\nbearer_timeout_s = {timeout_s}\nrate_per_minute = 30\n\
         [notification.udp]\nlisten = \"127.0.0.1:0\"\n"
    )
}

const LISTENING: &str = "notification channel udp: listening on ";

/// The account's `Auth/Noti` secret and data (the notifications are signed).
const SECRET: &str = "s3cret";
const DATA: &str = "auth-data";

/// `omadmctl ARGS` on the harness's bus as root; must succeed.
fn ctl(bus: &SysBus, args: &[&str]) {
    let out = bus
        .command(None, CTL)
        .args(args)
        .output()
        .expect("omadmctl");
    assert!(out.status.success(), "omadmctl {args:?}: {}", show(&out));
}

/// Where `daemon` listens for notifications.
fn udp_addr(daemon: &Daemon) -> String {
    let log = daemon.log();
    log.lines()
        .find_map(|l| l.split(LISTENING).nth(1))
        .unwrap_or_else(|| panic!("omadmd does not listen on UDP: {log}"))
        .trim()
        .to_owned()
}

/// `omadm-devserver notify`: notification `id` for `notified`, signed, asking for `con`.
fn notify(to: &str, id: u16, con: &str) {
    let id = id.to_string();
    let out = Command::new(DEVSERVER)
        .args([
            "notify",
            "--udp",
            to,
            "--server-id",
            "notified",
            "--id",
            &id,
        ])
        .args(["--secret", SECRET, "--data", DATA, "--con-type", con])
        .output()
        .expect("omadm-devserver runs");
    assert!(out.status.success(), "{}", show(&out));
}

/// The Package#1 that answers notification `id`, once the devserver has it.
fn package1(srv: &TestServer, id: u16) -> Option<J> {
    srv.server
        .transcript()
        .into_iter()
        .filter(|r| r.kind == "package#1" && r.direction == Direction::In)
        .filter_map(|r| r.body)
        .find(|b| {
            b["Alert"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|a| a["Data"]["NotificationID"] == u64::from(id))
            })
        })
}

/// Checks that the Package#1 answering notification `id` opens with `ServerInitiatedMgmt`
/// carrying that id.
#[track_caller]
fn server_initiated(srv: &TestServer, id: u16) {
    let body = package1(srv, id).unwrap_or_else(|| panic!("no Package#1 for notification {id}"));
    assert_eq!(
        body["Alert"][0],
        serde_json::json!({"AlertType": alert::SERVER_INITIATED, "Data": {"NotificationID": id}}),
        "{body}"
    );
}

#[track_caller]
fn eventually(daemon: &Daemon, timeout_s: u64, what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(timeout_s), &mut f),
        "{what} did not happen\n--- omadmd log ---\n{}",
        daemon.log()
    );
}

/// Sends notification `id` asking for `con` (`cellular`, `wlan`: `named` in the log), a
/// bearer that never comes up, runs `then`, and checks that the session starts only after
/// omadmd said it gave up waiting.
fn deferred_until_the_timeout(
    daemon: &Daemon,
    srv: &TestServer,
    (id, con, named): (u16, &str, &str),
    then: impl FnOnce(),
) {
    let gave_up = format!(
        "notification {id}: no {named} bearer came up within 2s; the session runs on the \
         bearer that is up"
    );
    notify(&udp_addr(daemon), id, con);
    then();
    // Whenever the devserver first sees the session, the log already says why it runs.
    let mut log_then = String::new();
    eventually(daemon, 30, &format!("notification {id}'s session"), || {
        let started = package1(srv, id).is_some();
        log_then = daemon.log();
        started
    });
    assert!(
        log_then.contains(&gave_up),
        "notification {id}'s session started before omadmd gave up waiting for a {named} \
         bearer:\n{log_then}"
    );
    let log = daemon.log();
    let accepted = format!("notification {id} accepted: session ");
    let (gave_up_at, accepted_at) = (log.find(&gave_up), log.find(&accepted));
    assert!(
        gave_up_at.is_some() && accepted_at.is_some() && gave_up_at < accepted_at,
        "omadmd should log that no {named} bearer came up, then start the session:\n{log}"
    );
    server_initiated(srv, id);
}

/// omadmd with `config`, the DM account `notified` of `srv` with `Auth/Noti` credentials,
/// its first session (BootstrapComplete, whatever starts it) done, and NetworkManager's veth
/// — the device's one bearer, wireline — up with its address.
fn daemon_with_account(bus: &SysBus, srv: &TestServer, config: &str) -> Daemon {
    let daemon = Daemon::start_with_config(bus, config);
    let mut account: J =
        serde_json::from_str(&srv.account("notified", srv.server.ca_pem(), 0)).unwrap();
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    account["DMAcc"]["Auth"] =
        serde_json::json!({"Noti": {"Secret": b64(SECRET), "Data": b64(DATA)}});
    ctl(bus, &["create", DMACC, &account.to_string()]);
    let before = srv.server.finished_sessions();
    ctl(bus, &["session", "start", "notified"]);
    srv.wait_for_sessions(before + 1);
    eventually(&daemon, 20, "the network MO connected", || {
        let mo = network_mo(bus);
        mo["State"] == "connected" && mo["Interfaces"]["nm0"]["State"] == "activated"
    });
    let mo = network_mo(bus);
    assert_eq!(mo["Interfaces"]["nm0"]["Type"], "ethernet", "{mo}");
    assert_eq!(mo["Interfaces"]["nm0"]["Addresses"], "10.77.0.2/24", "{mo}");
    daemon
}

/// Takes the cable out and waits until omadmd shows the device offline.
fn unplug(bus: &SysBus, daemon: &Daemon) {
    bus.carrier(false);
    eventually(daemon, 30, "State offline", || {
        property(bus, "State") == "offline"
    });
}

#[test]
fn a_notified_session_waits_for_the_bearer_it_asks_for_then_runs_on_the_one_that_is_up() {
    let bus = SysBus::start_with_network_manager();
    let srv = TestServer::start(Some(ENDS));
    let daemon = daemon_with_account(&bus, &srv, &config(2));

    // Wireline: that bearer is up, the session runs without waiting.
    notify(&udp_addr(&daemon), 1, "wireline");
    srv.wait_for_sessions(2);
    server_initiated(&srv, 1);
    let log = daemon.log();
    assert!(log.contains("notification 1 accepted: session "), "{log}");
    assert!(
        !log.contains("notification 1: no "),
        "a wireline bearer is up: {log}"
    );

    // WLAN: none here; the session waits the 2 s, says so, and runs on the veth.
    deferred_until_the_timeout(&daemon, &srv, (2, "wlan", "Wlan"), || {});
    srv.wait_for_sessions(3);

    // Cellular, asked for while the cable is out; the cable going back in brings a wireline
    // bearer, not a cellular one: the session runs once the wait is over, and says so.
    unplug(&bus, &daemon);
    deferred_until_the_timeout(&daemon, &srv, (3, "cellular", "Cellular"), || {
        bus.carrier(true)
    });
    srv.wait_for_sessions(4);
    let log = daemon.log();
    assert!(!log.contains("notification ignored"), "{log}");
    let (clean, _state) = daemon.stop();
    assert!(clean, "omadmd did not stop cleanly");

    // Wireline asked for while the cable is out, with a wait long enough for it to come
    // back: the session is held — a later notification asking for any bearer runs past it
    // (notifications are verified one at a time, so the first was dispatched before the
    // second) — and runs once the veth is up again, without having given up.
    let daemon = daemon_with_account(&bus, &srv, &config(120));
    unplug(&bus, &daemon);
    let to = udp_addr(&daemon);
    notify(&to, 4, "wireline");
    notify(&to, 5, "any");
    eventually(&daemon, 30, "notification 5's session", || {
        package1(&srv, 5).is_some()
    });
    server_initiated(&srv, 5);
    assert!(
        package1(&srv, 4).is_none(),
        "notification 4's session ran with no wireline bearer up:\n{}",
        daemon.log()
    );
    bus.carrier(true);
    eventually(&daemon, 60, "notification 4's session", || {
        package1(&srv, 4).is_some()
    });
    server_initiated(&srv, 4);
    srv.wait_for_sessions(7);
    let log = daemon.log();
    assert!(!log.contains("notification 4: no "), "{log}");
    assert!(!log.contains("notification ignored"), "{log}");

    assert!(
        srv.server.failures().is_empty(),
        "{:?}",
        srv.server.failures()
    );
    assert_eq!(srv.server.results().len(), 7, "{:?}", srv.server.summary());
}
