//! omadmd follows a real NetworkManager (Debian 12's 1.42) managing a veth, `nm0`, in the
//! harness's namespace: the network MO shows the veth as ethernet with its address, the
//! main object's `State` and `AccessTechnology` follow the carrier going down and up, and
//! the move back (a connection again after none) queues the Generic Alert
//! `urn:oma:at:ext-omadmd:1.0:NetworkChanged` for the DM server whose account has the
//! network MOID in its `Perm` list — delivered in a session to its `omadm-devserver` — and
//! not for the one without it, which also cannot read the MO. omadmd runs on the host, on
//! the harness's system bus; it only reads NetworkManager.
//!
//! One NetworkManager setup for the whole sequence (one test): a carrier loss takes
//! NetworkManager about 5 s to act on.

use std::path::Path;
use std::time::Duration;

use crate::omadmctl_cli::TestServer;
use crate::support::daemon::Daemon;
use crate::support::network::{NETWORK, network_mo, property};
use crate::support::sysbus::{SysBus, show, wait_until};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");
const NETWORK_CHANGED: &str = "urn:oma:at:ext-omadmd:1.0:NetworkChanged";

/// Every session GETs the network MO's `AccessTechnology`, expecting `status`.
fn reader(status: u16) -> String {
    serde_json::json!({"name": "network-reader", "packages": [
        {"commands": [["GET", format!("{NETWORK}//AccessTechnology")]], "expect": [status]},
        {"commands": [["END"]]}
    ]})
    .to_string()
}

/// `omadmctl ARGS` on the harness's bus as root; must succeed.
fn ctl(bus: &SysBus, args: &[&str]) -> String {
    let out = bus
        .command(None, CTL)
        .args(args)
        .output()
        .expect("omadmctl");
    assert!(out.status.success(), "omadmctl {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DM account `id` for `srv`, permitted `moids`.
fn add_account(bus: &SysBus, dir: &Path, id: &str, srv: &TestServer, moids: &[&str]) {
    let ca = dir.join(format!("{id}.pem"));
    std::fs::write(&ca, srv.server.ca_pem()).unwrap();
    let mut args = vec!["account", "add", "--id", id, "--url", srv.server.url()];
    args.extend(["--ca", ca.to_str().unwrap()]);
    for m in moids {
        args.extend(["--moid", m]);
    }
    ctl(bus, &args);
}

#[track_caller]
fn eventually(daemon: &Daemon, timeout_s: u64, what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(timeout_s), &mut f),
        "{what} did not happen\n--- omadmd log ---\n{}",
        daemon.log()
    );
}

#[test]
fn omadmd_follows_networkmanager_across_a_carrier_move() {
    let bus = SysBus::start_with_network_manager();
    let dir = tempfile::tempdir().unwrap();
    let with = TestServer::start(Some(&reader(200)));
    let without = TestServer::start(Some(&reader(403)));
    let daemon = Daemon::start(&bus);
    add_account(&bus, dir.path(), "net", &with, &[NETWORK]);
    add_account(
        &bus,
        dir.path(),
        "plain",
        &without,
        &["urn:oma:mo:ext-example-other:1.0"],
    );

    // The veth as NetworkManager shows it.
    eventually(&daemon, 20, "the network MO connected", || {
        let mo = network_mo(&bus);
        mo["State"] == "connected" && mo["Primary"] == "harness-nm0"
    });
    let mo = network_mo(&bus);
    assert_eq!(mo["AccessTechnology"], "ethernet", "{mo}");
    assert_eq!(mo["Connectivity"], "full", "{mo}");
    let nm0 = &mo["Interfaces"]["nm0"];
    assert_eq!(nm0["Name"], "nm0", "{mo}");
    assert_eq!(nm0["Type"], "ethernet", "a veth is wired: {mo}");
    assert_eq!(nm0["State"], "activated", "{mo}");
    assert_eq!(nm0["Addresses"], "10.77.0.2/24", "{mo}");
    assert_eq!(mo["Interfaces"]["lo"]["Type"], "loopback", "{mo}");
    assert_eq!(property(&bus, "AccessTechnology"), "ethernet");
    assert_eq!(property(&bus, "State"), "idle");
    let log = daemon.log();
    assert!(log.contains("following NetworkManager"), "{log}");
    assert!(!log.contains("network move"), "starting is no move: {log}");

    // Unplugged: offline (NetworkManager gives the connection up after ~5 s).
    bus.carrier(false);
    eventually(&daemon, 30, "State offline", || {
        property(&bus, "State") == "offline"
    });
    assert_eq!(property(&bus, "AccessTechnology"), "none");
    eventually(&daemon, 10, "the network MO offline", || {
        network_mo(&bus)["State"] == "offline"
    });
    let mo = network_mo(&bus);
    assert_eq!(mo["Primary"], "", "{mo}");
    assert_eq!(mo["AccessTechnology"], "none", "{mo}");
    assert_eq!(mo["Interfaces"]["nm0"]["Addresses"], "", "{mo}");
    assert!(
        with.server.transcript().is_empty(),
        "going offline is no move"
    );

    // Plugged in again: a move. The server with the network MOID hears of it in a session
    // (in which it can read the MO); the other does not.
    bus.carrier(true);
    eventually(&daemon, 30, "NetworkChanged delivered", || {
        !with.alerts(NETWORK_CHANGED).is_empty()
    });
    let alerts = with.alerts(NETWORK_CHANGED);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["SourceURI"], format!("{NETWORK}/0/"), "{alert}");
    assert_eq!(alert["Mark"], "informational", "{alert}");
    assert_eq!(alert["DataType"], "json", "{alert}");
    assert_eq!(alert["Data"]["Primary"], "harness-nm0", "{alert}");
    assert_eq!(alert["Data"]["AccessTechnology"], "ethernet", "{alert}");
    assert_eq!(
        alert["Data"]["Addresses"],
        serde_json::json!(["10.77.0.2/24"]),
        "{alert}"
    );
    eventually(&daemon, 20, "the alert's session to end", || {
        with.server.finished_sessions() == 1
    });
    assert!(
        with.server.failures().is_empty(),
        "{:?}",
        with.server.failures()
    );
    assert_eq!(property(&bus, "AccessTechnology"), "ethernet");
    eventually(&daemon, 10, "State idle", || {
        property(&bus, "State") == "idle"
    });
    let mo = network_mo(&bus);
    assert_eq!(mo["State"], "connected", "{mo}");
    assert_eq!(mo["Interfaces"]["nm0"]["Addresses"], "10.77.0.2/24", "{mo}");
    assert!(
        daemon
            .log()
            .contains("network move: primary connection \"harness-nm0\"")
    );

    // The server without the MOID got no alert, no session, and may not read the MO.
    assert!(
        without.server.transcript().is_empty(),
        "no session for plain"
    );
    ctl(&bus, &["session", "start", "plain"]);
    eventually(&daemon, 20, "plain's session to end", || {
        without.server.finished_sessions() == 1
    });
    assert!(
        without.server.failures().is_empty(),
        "GET of the network MO by a server without its MOID: {:?}",
        without.server.failures()
    );
    assert!(without.alerts(NETWORK_CHANGED).is_empty());
}
