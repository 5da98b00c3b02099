//! `omadmctl account add|list|remove` and the servers in `omadmctl status`, as an
//! administrator uses them: the built binary against the real `omadmd` on a private session
//! bus, with DM sessions to in-process `omadm-devserver`s over real TLS (one requiring HTTP
//! Basic); bad options and files refused before any bus is touched; and on the private system
//! bus with polkitd, the permitted MOIDs shown to root only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use omadmd::devserver::{DevServer, DevServerConfig, RunningServer};
use serde_json::Value as J;

use crate::omadmctl_cli::TestServer;
use crate::support::daemon::Daemon;
use crate::support::session_bus::SessionBus;
use crate::support::sysbus::{SysBus, show, test_user};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
/// The MO the devserver's built-in scenario installs with HGET.
const WEATHER: &str = "urn:oma:mo:ext-devserver-weather:1.0";
/// A scenario whose every session only ENDs.
const END_ONLY: &str = r#"{"name": "end", "sessions": [{"packages": [{"commands": [["END"]]}]}]}"#;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_status(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", show(out));
}

/// An in-process devserver (built-in scenario) that requires HTTP Basic `device:s3cret`.
struct BasicServer {
    // Dropped in this order: the server stops, then its runtime goes.
    server: RunningServer,
    _certs: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl BasicServer {
    fn start() -> BasicServer {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let certs = tempfile::tempdir().unwrap();
        let mut config = DevServerConfig::new(certs.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.basic = Some("device:s3cret".parse().unwrap());
        let server = runtime
            .block_on(DevServer::start(config))
            .expect("devserver starts");
        BasicServer {
            server,
            _certs: certs,
            _runtime: runtime,
        }
    }
}

/// Writes `text` to `dir/name` and returns the path as a string.
fn file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

#[test]
fn account_add_and_session_start_on_a_fresh_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    let srv = BasicServer::start();
    let ca = path_str(&srv.server.certificates().ca_path);
    let password = file(dir.path(), "password", "s3cret\n");

    let out = bus.run(&["status"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("\nServers:   none (omadmctl account add adds one)\n"),
        "{}",
        show(&out)
    );
    let out = bus.run(&["account", "list"]);
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out),
        "No DM accounts (omadmctl account add adds one).\n"
    );

    // Two commands: the account, then a session with it.
    let out = bus.run(&[
        "account",
        "add",
        "--id",
        "devserver",
        "--url",
        srv.server.url(),
        "--name",
        "Dev server",
        "--ca",
        &ca,
        "--user",
        "device",
        "--password-file",
        &password,
        "--moid",
        WEATHER,
        "--priority",
        "10",
    ]);
    assert_status(&out, 0);
    let inst = stdout(&out).trim_end().to_owned();
    assert!(
        inst.starts_with(&format!("{DMACC}/")) && inst.ends_with('/'),
        "{}",
        show(&out)
    );
    let out = bus.run(&["session", "start"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains(" with devserver finished: 200 OK"),
        "{}",
        show(&out)
    );
    // The server installed its MO, and the account holds what was given.
    assert_status(&bus.run(&["tree", &format!("{WEATHER}/*/")]), 0);
    let out = bus.run(&["--json", "tree", &inst]);
    assert_status(&out, 0);
    let tree: J = serde_json::from_slice(&out.stdout).unwrap();
    let acc = &tree[0]["MOData"]["DMAcc"];
    assert_eq!(acc["SrvURI"], J::from(srv.server.url()));
    assert_eq!(acc["Name"], "Dev server");
    assert_eq!(acc["Auth"]["Trsp"]["Data"], "device");
    assert!(acc["Auth"]["Trsp"].get("Secret").is_none(), "{acc}");
    assert_eq!(acc["Ext"]["Priority"], 10);
    assert!(
        acc["Ext"]["CACert"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----\n"),
        "{acc}"
    );

    // A second server, its own certificate pinned, without HTTP Basic.
    let pinned = TestServer::start(Some(END_ONLY));
    let pin = path_str(&pinned.server.certificates().server_cert_path);
    let out = bus.run(&[
        "account",
        "add",
        "--id",
        "pinned",
        "--url",
        pinned.server.url(),
        "--pin",
        &pin,
    ]);
    assert_status(&out, 0);
    let out = bus.run(&["session", "start", "pinned"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains(" with pinned finished: 200 OK"),
        "{}",
        show(&out)
    );

    // list: the highest priority first; root sees the permitted MOIDs.
    let out = bus.run(&["account", "list"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0],
        [
            "SRVID",
            "URL",
            "PRIORITY",
            "PERMITTED MOIDS",
            "LAST SESSION"
        ],
        "{text}"
    );
    assert_eq!(
        lines[1][..4],
        ["devserver", srv.server.url(), "10", WEATHER],
        "{text}"
    );
    assert_eq!(
        lines[2][..4],
        ["pinned", pinned.server.url(), "0", "-"],
        "{text}"
    );
    for line in &lines[1..] {
        assert!(line[4].ends_with(" UTC"), "{text}");
    }
    let out = bus.run(&["--json", "account", "list"]);
    assert_status(&out, 0);
    let list: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["server_id"], "devserver");
    assert_eq!(list[0]["name"], "Dev server");
    assert_eq!(list[0]["url"], J::from(srv.server.url()));
    assert_eq!(list[0]["priority"], 10);
    assert_eq!(list[0]["permitted_moids"], serde_json::json!([WEATHER]));
    assert!(list[0]["last_session"].as_u64().unwrap() > 0, "{list}");
    assert_eq!(list[1]["server_id"], "pinned");
    assert_eq!(list[1]["permitted_moids"], serde_json::json!([]));

    // status shows the servers too (without what they may manage).
    let out = bus.run(&["status"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "Server:    devserver {} (priority 10, last session ",
            srv.server.url()
        )),
        "{text}"
    );
    assert!(text.contains("Server:    pinned "), "{text}");
    let out = bus.run(&["--json", "status"]);
    let status: J = serde_json::from_slice(&out.stdout).unwrap();
    let servers = status["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{status}");
    assert_eq!(servers[0]["server_id"], "devserver");
    assert!(servers[0].get("permitted_moids").is_none(), "{status}");

    // A SrvID is unique: Conflict, status 7.
    let out = bus.run(&[
        "account",
        "add",
        "--id",
        "pinned",
        "--url",
        "https://x.example/dm",
    ]);
    assert_status(&out, 7);
    assert!(stderr(&out).contains("SrvID"), "{}", show(&out));

    // remove: the account goes, and with it sessions with that server.
    assert_status(&bus.run(&["account", "remove", "pinned"]), 0);
    let out = bus.run(&["--json", "account", "list"]);
    let list: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_status(&bus.run(&["session", "start", "pinned"]), 4);
    let out = bus.run(&["account", "remove", "pinned"]);
    assert_status(&out, 4);
    assert_eq!(
        stderr(&out),
        "omadmctl: no DM account with SrvID \"pinned\" (omadmctl account list shows them)\n"
    );
    assert_status(&bus.run(&["account", "remove", "devserver"]), 0);
    assert_status(&bus.run(&["tree", &inst]), 4);
    let out = bus.run(&["account", "remove", "devserver"]);
    assert_status(&out, 4);
}

/// Runs omadmctl without any bus: what fails here failed before connecting.
fn ctl_without_bus(args: &[&str]) -> Output {
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
}

#[test]
fn bad_options_and_files_are_refused_before_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(Some(END_ONLY));
    let certs = srv.server.certificates();
    let ca = path_str(&certs.ca_path);
    let server_cert = path_str(&certs.server_cert_path);
    let empty = file(dir.path(), "empty", "\n");
    let two_lines = file(dir.path(), "two", "a\nb\n");
    let key = path_str(&certs.server_key_path);
    let url = "https://dm.example.com/dm";
    let add = |more: &[&str]| {
        let mut args = vec!["account", "add", "--id", "ma1"];
        args.extend_from_slice(more);
        ctl_without_bus(&args)
    };
    let missing: PathBuf = dir.path().join("missing-ca.pem");
    let missing = path_str(&missing);

    for (args, message) in [
        (
            vec!["--url", url, "--ca", missing.as_str()],
            format!("omadmctl: --ca {missing}: No such file or directory (os error 2)\n"),
        ),
        (
            vec!["--url", "http://dm.example.com/dm"],
            "omadmctl: --url \"http://dm.example.com/dm\": the scheme is http, but omadmd \
             reaches DM servers over https only\n"
                .to_owned(),
        ),
        (
            vec!["--url", url, "--ca", server_cert.as_str()],
            "is not a CA certificate; to trust exactly this server certificate, give it with \
             --pin\n"
                .to_owned(),
        ),
        (
            vec!["--url", url, "--pin", ca.as_str()],
            "is a CA certificate; give it with --ca".to_owned(),
        ),
        (
            vec!["--url", url, "--pin", key.as_str()],
            "holds a private key; give a file with the certificate only\n".to_owned(),
        ),
        (
            vec![
                "--url",
                url,
                "--user",
                "u",
                "--password-file",
                empty.as_str(),
            ],
            format!(
                "omadmctl: --password-file {empty}: empty; it must hold the password on one line\n"
            ),
        ),
        (
            vec![
                "--url",
                url,
                "--user",
                "u",
                "--password-file",
                two_lines.as_str(),
            ],
            "holds more than one line".to_owned(),
        ),
        (
            vec!["--url", url, "--moid", "not a moid"],
            "omadmctl: --moid \"not a moid\": ".to_owned(),
        ),
    ] {
        let out = add(&args);
        assert_status(&out, 2);
        let err = stderr(&out);
        assert!(
            err.starts_with("omadmctl: ") && err.contains(&message),
            "{args:?}: {}",
            show(&out)
        );
    }

    // clap refuses these combinations (its own messages).
    for (args, message) in [
        (
            vec![
                "--url",
                url,
                "--ca",
                ca.as_str(),
                "--pin",
                server_cert.as_str(),
            ],
            "'--ca <FILE>' cannot be used with '--pin <FILE>'",
        ),
        (vec!["--url", url, "--user", "u"], "--password-file <FILE>"),
        (
            vec!["--url", url, "--password-file", empty.as_str()],
            "--user <USER>",
        ),
        (
            vec!["--url", url, "--priority", "high"],
            "invalid value 'high'",
        ),
    ] {
        let out = add(&args);
        assert_status(&out, 2);
        assert!(stderr(&out).contains(message), "{args:?}: {}", show(&out));
    }
    let out = ctl_without_bus(&["account", "add", "--url", url]);
    assert_status(&out, 2);
    assert!(stderr(&out).contains("--id <ID>"), "{}", show(&out));
    let out = ctl_without_bus(&["account", "add", "--id", "", "--url", url]);
    assert_status(&out, 2);
    assert!(
        stderr(&out).contains("a value is required"),
        "{}",
        show(&out)
    );

    // Every check passed: only now does omadmctl look for the bus.
    let out = add(&["--url", url, "--ca", &ca, "--priority", "-1"]);
    assert_status(&out, 3);
}

#[test]
fn account_help_and_man_pages() {
    for path in ["account", "account add", "account list", "account remove"] {
        let mut args: Vec<&str> = path.split(' ').collect();
        args.push("--help");
        let out = ctl_without_bus(&args);
        assert_status(&out, 0);
        let text = stdout(&out);
        assert!(text.contains(&format!("Usage: omadmctl {path}")), "{text}");
        if path != "account" {
            assert!(text.contains("EXAMPLES:"), "{path}: {text}");
        }
    }
    let out = ctl_without_bus(&["man", "account", "add"]);
    assert_status(&out, 0);
    let page = stdout(&out);
    for expected in [
        ".TH OMADMCTL-ACCOUNT-ADD 1",
        ".SH EXAMPLES",
        "\\-\\-password\\-file",
    ] {
        assert!(page.contains(expected), "{expected} missing: {page}");
    }
    let out = ctl_without_bus(&["completions", "bash"]);
    assert!(stdout(&out).contains("--password-file"), "{}", show(&out));
}

#[test]
fn permitted_moids_are_shown_to_administrators_only() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let frank = test_user("omadm-t-frank");
    let dir = tempfile::tempdir().unwrap();
    let ca = TestServer::start(Some(END_ONLY)).server.ca_pem().to_owned();
    let ca = file(dir.path(), "ca.pem", &ca);
    let ctl = |user, args: &[&str]| {
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
        "ma1",
        "--url",
        "https://127.0.0.1:9/dm",
        "--ca",
        &ca,
        "--moid",
        WEATHER,
    ];
    // Adding accounts is for administrators.
    let out = ctl(Some(&frank), &add[..6]);
    assert_status(&out, 5);
    assert_status(&ctl(None, &add), 0);

    let out = ctl(None, &["account", "list"]);
    assert_status(&out, 0);
    assert!(stdout(&out).contains(WEATHER), "{}", show(&out));

    let out = ctl(Some(&frank), &["account", "list"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("(hidden)") && !text.contains(WEATHER) && text.contains("ma1"),
        "{}",
        show(&out)
    );
    let out = ctl(Some(&frank), &["--json", "account", "list"]);
    assert_status(&out, 0);
    let list: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["server_id"], "ma1");
    assert_eq!(list[0]["permitted_moids"], J::Null);

    assert_status(&ctl(Some(&frank), &["account", "remove", "ma1"]), 5);

    // An administrator who is not root: polkit lets frank manage, and he sees and removes
    // the account.
    bus.allow("60-omadmd-frank", &[&frank], &["manage"]);
    let out = ctl(Some(&frank), &["account", "list"]);
    assert!(stdout(&out).contains(WEATHER), "{}", show(&out));
    assert_status(&ctl(Some(&frank), &["account", "remove", "ma1"]), 0);
    assert_status(&ctl(None, &["account", "remove", "ma1"]), 4);
}
