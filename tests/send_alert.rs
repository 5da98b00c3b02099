//! `SendAlert` and `omadmctl alert` end to end, and the client's choice of server falling
//! over (DM-HLF-018): the real `omadmd` on a private session bus (callers are root, the
//! administrator) with in-process `omadm-devserver`s over real TLS, whose transcripts show
//! each Package#1 as it arrived; and on the private system bus with polkitd, a local user
//! who may not read a node cannot name it as an alert's source.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value as J;

use crate::omadmctl_cli::TestServer;
use crate::support::daemon::Daemon;
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{SysBus, TestUser, show, test_user, wait_until};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");
const DEVINFO: &str = "urn:oma:mo:oma-dm-devinfo:1.0";
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
/// The MO the devserver's built-in scenario installs with HGET, as `station1`.
const WEATHER: &str = "urn:oma:mo:ext-devserver-weather:1.0";
/// A scenario whose every session only ENDs.
const END_ONLY: &str = r#"{"name": "end", "sessions": [{"packages": [{"commands": [["END"]]}]}]}"#;
/// The alert types of these tests.
const AT: &str = "urn:oma:at:ext-omadmd-test:1.0:";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_status(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", show(out));
}

/// Waits (at most 60 s) until `srv` got the alert of type `alert_type`, and returns it;
/// it must have come once.
#[track_caller]
fn delivered(srv: &TestServer, alert_type: &str, dir: &Path) -> J {
    let arrived = wait_until(Duration::from_secs(60), || {
        !srv.alerts(alert_type).is_empty()
    });
    assert!(
        arrived,
        "{alert_type} did not reach {}: {:#?}\n{}",
        srv.server.url(),
        srv.server.summary(),
        daemon_log(dir)
    );
    let got = srv.alerts(alert_type);
    assert_eq!(got.len(), 1, "{got:?}");
    got[0].clone()
}

/// Adds the DM account `id` for the server at `url`, trusting `ca` (a PEM file), with
/// `priority`, permitted to manage the weather MO; `extra` options follow.
fn add_account(bus: &SessionBus, id: &str, url: &str, ca: &Path, priority: i64, extra: &[&str]) {
    let priority = priority.to_string();
    let ca = ca.to_str().unwrap();
    let mut args = vec![
        "account",
        "add",
        "--id",
        id,
        "--url",
        url,
        "--ca",
        ca,
        "--moid",
        WEATHER,
        "--priority",
        &priority,
    ];
    args.extend_from_slice(extra);
    assert_status(&bus.run(&args), 0);
}

/// Writes `srv`'s CA certificate to `dir/<name>.pem`.
fn ca_file(srv: &TestServer, dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, srv.server.ca_pem()).unwrap();
    path
}

/// Runs a session with `srv_id` to its end (waiting while another session with it runs:
/// a new account's first session may be under way).
fn session_with(bus: &SessionBus, srv_id: &str) {
    let mut last = None;
    let done = wait_until(Duration::from_secs(60), || {
        let out = bus.run(&["session", "start", srv_id]);
        let busy = out.status.code() == Some(8);
        last = Some(out);
        !busy
    });
    let out = last.expect("ran");
    assert!(done, "{}", show(&out));
    assert_status(&out, 0);
}

/// `gdbus call` of `SendAlert` straight on the bus (past omadmctl's own checks).
fn send_alert_call(bus: &SessionBus, args: [&str; 6]) -> Output {
    Command::new("gdbus")
        .args(["call", "--address", bus.address()])
        .args([
            "--dest",
            "org.omadm.Client1",
            "--object-path",
            "/org/omadm/Client1",
        ])
        .args(["--method", "org.omadm.Client1.SendAlert"])
        .args(args.map(|a| format!("'{}'", a.replace('\'', "\\'"))))
        .stdin(Stdio::null())
        .output()
        .expect("gdbus runs")
}

#[track_caller]
fn assert_dbus_error(out: &Output, name: &str) {
    assert!(!out.status.success(), "{}", show(out));
    assert!(
        stderr(out).contains(&format!("org.omadm.Client1.Error.{name}")),
        "expected {name}: {}",
        show(out)
    );
}

#[test]
fn alerts_reach_the_named_server_the_owner_or_the_highest_priority_in_package1() {
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    // owner installs the weather MO (its built-in scenario); top only ENDs.
    let owner = TestServer::start(None);
    let top = TestServer::start(Some(END_ONLY));
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    add_account(
        &bus,
        "owner",
        owner.server.url(),
        &ca_file(&owner, dir.path(), "owner"),
        1,
        &[],
    );
    add_account(
        &bus,
        "top",
        top.server.url(),
        &ca_file(&top, dir.path(), "top"),
        10,
        &[
            "--user",
            "device",
            "--password-file",
            password.to_str().unwrap(),
        ],
    );
    session_with(&bus, "owner");
    let city = format!("{WEATHER}/station1/City");
    assert_status(&bus.run(&["get", &city]), 0);

    // A named server that may not read the source is refused (top has no right on it).
    let named = format!("{AT}Named");
    let out = bus.run(&[
        "alert", "--server", "top", "--type", &named, "--source", &city,
    ]);
    assert_status(&out, 6);
    // Even when it has a higher priority and may read it, the owner gets the alert.
    assert_status(
        &bus.run(&["grant", &format!("{WEATHER}/station1/"), "srv:top", "Read"]),
        0,
    );
    let owned = format!("{AT}Owned");
    let out = bus.run(&[
        "alert",
        "--type",
        &owned,
        "--source",
        &format!("{WEATHER}//City"),
        "--mark",
        "warning",
        "--data-type",
        "json",
        "--data",
        r#"{"temp": -3, "ok": true}"#,
    ]);
    assert_status(&out, 0);
    assert!(out.stdout.is_empty(), "{}", show(&out));
    let alert = delivered(&owner, &owned, dir.path());
    assert_eq!(
        alert["SourceURI"],
        city.as_str(),
        "the node's full ClientURI"
    );
    assert_eq!(alert["Mark"], "warning");
    assert_eq!(alert["DataType"], "json");
    assert_eq!(alert["Data"], serde_json::json!({"temp": -3, "ok": true}));
    assert!(top.alerts(&owned).is_empty());

    // No source: the highest priority. Data from a file, text by default.
    let chosen = format!("{AT}Chosen");
    let data = dir.path().join("data.txt");
    std::fs::write(&data, "line 1\nline 2\n").unwrap();
    let out = bus.run(&[
        "alert",
        "--type",
        &chosen,
        "--data-file",
        data.to_str().unwrap(),
    ]);
    assert_status(&out, 0);
    let alert = delivered(&top, &chosen, dir.path());
    assert_eq!(alert["DataType"], "chr");
    assert_eq!(alert["Data"], "line 1\nline 2\n");
    assert!(
        alert.get("SourceURI").is_none() && alert.get("Mark").is_none(),
        "{alert}"
    );

    // Named: that server, whatever the priorities; binary data base64-encoded.
    let out = bus.run(&["alert", "--server", "owner", "--type", &named]);
    assert_status(&out, 0);
    let alert = delivered(&owner, &named, dir.path());
    assert!(
        alert.get("Data").is_none() && alert.get("DataType").is_none(),
        "{alert}"
    );
    let binary = dir.path().join("blob");
    std::fs::write(&binary, [0u8, 159, 146, 150]).unwrap();
    let blob = format!("{AT}Blob");
    let out = bus.run(&[
        "alert",
        "--server",
        "owner",
        "--type",
        &blob,
        "--data-type",
        "b64",
        "--data-file",
        binary.to_str().unwrap(),
    ]);
    assert_status(&out, 0);
    assert_eq!(delivered(&owner, &blob, dir.path())["Data"], "AJ+Slg==");

    // A source the caller may not read — a secret, hidden even from the administrator —
    // is refused exactly like one that does not exist.
    let accounts = bus.run(&["--json", "get", &format!("{DMACC}/*/SrvID")]);
    assert_status(&accounts, 0);
    let rows: J = serde_json::from_slice(&accounts.stdout).unwrap();
    let top_root = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["value"] == "top")
        .map(|r| {
            r["client_uri"]
                .as_str()
                .unwrap()
                .trim_end_matches("SrvID")
                .to_owned()
        })
        .expect("top's account");
    let secret = format!("{top_root}Auth/Trsp/Secret");
    let absent = format!("{top_root}Auth/Trsp/Nothing");
    let refused = |source: &str| {
        let out = bus.run(&[
            "alert",
            "--type",
            &format!("{AT}Refused"),
            "--source",
            source,
        ]);
        assert_status(&out, 4);
        stderr(&out).replace(source, "<source>")
    };
    assert_eq!(refused(&secret), refused(&absent));
    assert_status(
        &bus.run(&["alert", "--server", "nosuch", "--type", &named]),
        4,
    );

    // Over-long and malformed fields, straight on the bus (omadmctl checks some itself).
    let long_type = format!("urn:x:{}", "a".repeat(300));
    let long_data = "x".repeat(16 * 1024 + 1);
    let fits = "x".repeat(16 * 1024);
    let long_server = "s".repeat(300);
    for (args, error) in [
        (["", long_type.as_str(), "", "", "", ""], "InvalidValue"),
        (["", "NotAUrn", "", "", "", ""], "InvalidValue"),
        (
            ["", "urn:oma:at:dm:2.0:ClientInitiatedMgmt", "", "", "", ""],
            "InvalidValue",
        ),
        (
            ["", "urn:oma:at:ext-omadmd:1.0:ExecResult", "", "", "", ""],
            "InvalidValue",
        ),
        (["", &named, "", "", "", long_data.as_str()], "InvalidValue"),
        (["", &named, "", "", "xml", "<a/>"], "InvalidValue"),
        (["", &named, "", "", "int", "12x"], "InvalidValue"),
        (["", &named, "", "loud", "", ""], "InvalidValue"),
        (
            [long_server.as_str(), &named, "", "", "", ""],
            "InvalidValue",
        ),
        (["", &named, "not a uri", "", "", ""], "InvalidUri"),
        (
            ["", &named, &format!("{WEATHER}/station1/*"), "", "", ""],
            "InvalidUri",
        ),
    ] {
        assert_dbus_error(&send_alert_call(&bus, args), error);
    }
    let bound = format!("{AT}AtTheBound");
    let out = send_alert_call(&bus, ["owner", &bound, "", "", "chr", &fits]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        delivered(&owner, &bound, dir.path())["Data"]
            .as_str()
            .map(str::len),
        Some(16 * 1024)
    );
    // omadmctl refuses what it can before the bus: data too long, files too large.
    let big = dir.path().join("big");
    std::fs::write(&big, &long_data).unwrap();
    let out = bus.run(&[
        "alert",
        "--type",
        &named,
        "--data-file",
        big.to_str().unwrap(),
    ]);
    assert_status(&out, 2);
    assert!(stderr(&out).contains("16384"), "{}", show(&out));
    let out = bus.run(&["alert", "--type", &named, "--data", &long_data]);
    assert_status(&out, 2);
}

/// An `https://127.0.0.1:<port>/dm` URL where nothing listens.
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("https://127.0.0.1:{port}/dm")
}

#[test]
fn a_client_chosen_session_and_its_alert_fall_over_to_the_next_server() {
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    let live = TestServer::start(Some(END_ONLY));
    let ca = ca_file(&live, dir.path(), "live");
    add_account(&bus, "live", live.server.url(), &ca, 1, &[]);
    session_with(&bus, "live");
    // The higher priority points where nothing listens.
    add_account(&bus, "dead", &closed_port_url(), &ca, 10, &[]);

    // StartSession(""): the session with dead finds no connection (503) ...
    let before = live.server.finished_sessions();
    let mut last = None;
    let started = wait_until(Duration::from_secs(120), || {
        let out = bus.run(&["--json", "session", "start"]);
        let busy = out.status.code() == Some(8);
        last = Some(out);
        !busy
    });
    let out = last.expect("ran");
    assert!(started, "{}", show(&out));
    assert_status(&out, 9);
    let result: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (result["server_id"].as_str(), result["status"].as_i64()),
        (Some("dead"), Some(503))
    );
    // ... and one with live follows.
    live.wait_for_sessions(before + 1);

    // An alert for the client's choice goes where the session goes.
    let failover = format!("{AT}FellOver");
    let out = bus.run(&["alert", "--type", &failover, "--mark", "critical"]);
    assert_status(&out, 0);
    let alert = delivered(&live, &failover, dir.path());
    assert_eq!(alert["Mark"], "critical");
    assert!(
        daemon_log(dir.path()).contains("falling over to live"),
        "{}",
        daemon_log(dir.path())
    );
}

#[test]
fn a_local_user_alerts_only_about_nodes_it_may_read_and_needs_send_alert() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let user = test_user("omadm-t-alerter");
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(Some(END_ONLY));
    let ca = ca_file(&srv, dir.path(), "srv");
    let ctl = |user: Option<&TestUser>, args: &[&str]| {
        bus.command(user, CTL)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("omadmctl runs")
    };
    let add = [
        "account",
        "add",
        "--id",
        "srv",
        "--url",
        srv.server.url(),
        "--ca",
        ca.to_str().unwrap(),
        "--moid",
        WEATHER,
    ];
    assert_status(&ctl(None, &add), 0);
    // The administrator's instance: the user may not read it.
    let out = ctl(
        None,
        &[
            "create",
            WEATHER,
            r#"{"Weather": {"City": "Oulu", "Unit": "C"}}"#,
        ],
    );
    assert_status(&out, 0);
    let root = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let dev_id = format!("{DEVINFO}//DevID");
    let sent = format!("{AT}FromAUser");
    let alert = |source: &str| ctl(Some(&user), &["alert", "--type", &sent, "--source", source]);
    // Without the send-alert action: denied.
    assert_status(&alert(&dev_id), 5);
    bus.allow("60-send-alert", &[&user], &["read", "send-alert"]);
    let hidden = alert(&format!("{root}City"));
    let absent = alert(&format!("{root}Nothing"));
    assert_status(&hidden, 4);
    assert_status(&absent, 4);
    assert_eq!(
        stderr(&hidden).replace("City", "<node>"),
        stderr(&absent).replace("Nothing", "<node>"),
        "the same answer for not there and not yours"
    );
    // DevInfo is every caller's to read, and every server's.
    assert_status(&alert(&dev_id), 0);
    let got = wait_until(Duration::from_secs(60), || !srv.alerts(&sent).is_empty());
    assert!(got, "{:#?}\n{}", srv.server.summary(), daemon.log());
    let delivered = srv.alerts(&sent);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let source = delivered[0]["SourceURI"].as_str().unwrap();
    assert!(
        source.starts_with(&format!("{DEVINFO}/")) && source.ends_with("/DevID"),
        "{source}"
    );
}

#[test]
fn alert_help_man_page_and_no_daemon() {
    let ctl = |args: &[&str]| {
        Command::new(CTL)
            .args(args)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/omadmctl-test-bus",
            )
            .stdin(Stdio::null())
            .output()
            .expect("omadmctl runs")
    };
    let out = ctl(&["alert", "--help"]);
    assert_status(&out, 0);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    for part in [
        "--data-type",
        "--source",
        "EXAMPLES:",
        "fall over",
        "16 KiB",
    ] {
        assert!(help.contains(part), "{part}: {help}");
    }
    let out = ctl(&["man", "alert"]);
    assert_status(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH OMADMCTL-ALERT 1"));
    // Checked before the bus: a bad mark, both kinds of data, no type.
    assert_status(&ctl(&["alert", "--type", "urn:x:y", "--mark", "loud"]), 2);
    assert_status(
        &ctl(&[
            "alert",
            "--type",
            "urn:x:y",
            "--data",
            "a",
            "--data-file",
            "/dev/null",
        ]),
        2,
    );
    assert_status(&ctl(&["alert"]), 2);
    assert_status(&ctl(&["alert", "--type", "urn:x:y"]), 3);
}
