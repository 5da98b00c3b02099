//! `omadmctl` as users run it: the built binary, its help texts, man pages, completions and
//! exit statuses, and every D-Bus command against the real `omadmd` on a private session bus
//! (`dbus-run-session`, a real `dbus-daemon`). These run as root, which omadmd treats as the
//! administrator without asking polkit; the polkit and multi-user paths are tested on the
//! private system bus elsewhere. DM sessions run against an in-process `omadm-devserver`
//! ([`TestServer`]) over real TLS on loopback.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use omadmd::devserver::{Certificates, DevServer, DevServerConfig, RunningServer, Scenario};
use serde_json::Value as J;

use crate::support::session_bus::SessionBus;
use crate::support::sysbus::{KillOnDrop, show, wait_until};

const CTL: &str = env!("CARGO_BIN_EXE_omadmctl");

const DEVINFO: &str = "urn:oma:mo:oma-dm-devinfo:1.0";
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
/// The MO the devserver's built-in scenario installs with HGET.
const WEATHER: &str = "urn:oma:mo:ext-devserver-weather:1.0";

/// Every command, as its path below omadmctl.
const COMMANDS: [&str; 21] = [
    "status",
    "get",
    "tree",
    "set",
    "delete",
    "create",
    "watch",
    "changes",
    "grant",
    "revoke",
    "grants",
    "alert",
    "session",
    "session start",
    "session status",
    "ddf",
    "ddf check",
    "tnds",
    "tnds check",
    "completions",
    "man",
];

/// The commands that talk to omadmd.
const DBUS_COMMANDS: [&str; 14] = [
    "status",
    "get",
    "tree",
    "set",
    "delete",
    "create",
    "watch",
    "changes",
    "grant",
    "revoke",
    "grants",
    "alert",
    "session start",
    "session status",
];

/// The exit statuses omadmctl documents.
const EXIT_CODES: [u8; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130];

/// Runs omadmctl without a bus (no session bus address, no system bus reachable).
fn ctl(args: &[&str]) -> Output {
    Command::new(CTL)
        .args(args)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/omadmctl-test-bus",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run omadmctl: {e}"))
}

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

#[test]
fn every_command_has_help_with_examples() {
    for path in COMMANDS {
        let mut args: Vec<&str> = path.split(' ').collect();
        args.push("--help");
        let out = ctl(&args);
        assert_status(&out, 0);
        let text = stdout(&out);
        assert!(
            text.contains(&format!("Usage: omadmctl {path}")),
            "{path}: {text}"
        );
        if DBUS_COMMANDS.contains(&path) {
            assert!(text.contains("EXAMPLES:"), "{path} has no examples: {text}");
            assert!(text.contains("--session"), "{path}: {text}");
            assert!(text.contains("--json"), "{path}: {text}");
        }
    }
}

#[test]
fn top_level_help_lists_commands_and_exit_statuses() {
    let out = ctl(&["--help"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    for path in COMMANDS.iter().filter(|p| !p.contains(' ')) {
        assert!(
            text.contains(&format!("\n  {path} ")),
            "{path} missing: {text}"
        );
    }
    let exit = text
        .split("EXIT STATUS:")
        .nth(1)
        .expect("an EXIT STATUS section");
    for code in EXIT_CODES {
        assert!(
            exit.contains(&format!("\n  {code}  ")),
            "status {code} missing: {exit}"
        );
    }
    for name in [
        "NotFound",
        "AccessDenied",
        "InvalidUri",
        "NotAllowed",
        "Conflict",
        "Busy",
        "Session failed",
        "Ctrl-C",
    ] {
        assert!(exit.contains(name), "{name} missing: {exit}");
    }
    // The short help stays short.
    let short = stdout(&ctl(&["-h"]));
    assert!(!short.contains("EXIT STATUS"), "{short}");
}

#[test]
fn man_pages_are_roff_with_exit_status() {
    let out = ctl(&["man"]);
    assert_status(&out, 0);
    let page = stdout(&out);
    assert!(page.contains(".TH OMADMCTL 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS"] {
        assert!(page.contains(section), "{section} missing: {page}");
    }
    assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
    for code in EXIT_CODES {
        assert!(
            page.contains(&format!("\\fB{code}\\fR")),
            "status {code} missing"
        );
    }
    assert!(page.contains("omadmctl\\-watch(1)"), "{page}");
    assert!(page.contains("omadmctl\\-session(1)"), "{page}");

    let out = ctl(&["man", "get"]);
    assert_status(&out, 0);
    let page = stdout(&out);
    assert!(
        page.contains(".TH OMADMCTL\\-GET 1") || page.contains(".TH OMADMCTL-GET 1"),
        "{page}"
    );
    assert!(page.contains(".SH EXAMPLES"), "{page}");
    assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");

    let out = ctl(&["man", "ddf", "check"]);
    assert_status(&out, 0);
    assert!(stdout(&out).contains("DDF\\-CHECK") || stdout(&out).contains("DDF-CHECK"));

    let out = ctl(&["man", "nope"]);
    assert_status(&out, 2);
    assert!(stderr(&out).starts_with("omadmctl: "), "{}", show(&out));
}

#[test]
fn completions_cover_every_command() {
    let out = ctl(&["completions", "bash"]);
    assert_status(&out, 0);
    let script = stdout(&out);
    assert!(script.contains("omadmctl"), "{script}");
    for path in COMMANDS {
        for word in path.split(' ') {
            assert!(
                script.contains(word),
                "{word} missing from the bash completions"
            );
        }
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = ctl(&["completions", shell]);
        assert_status(&out, 0);
        assert!(stdout(&out).contains("omadmctl"), "{shell}");
    }
    assert_status(&ctl(&["completions", "no-such-shell"]), 2);
}

#[test]
fn offline_checks_exit_1_for_invalid_files() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hotspot2-pps.ddf");
    let fixture = fixture.to_str().unwrap();
    let out = ctl(&["ddf", "check", fixture]);
    assert_status(&out, 0);
    assert!(stdout(&out).contains(": ok,"), "{}", show(&out));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.ddf");
    std::fs::write(&bad, "<MgmtTree><Node></MgmtTree>").unwrap();
    let bad = bad.to_str().unwrap();
    let out = ctl(&["ddf", "check", fixture, bad]);
    assert_status(&out, 1);
    let out = ctl(&["--json", "ddf", "check", bad]);
    assert_status(&out, 1);
    let json: J = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(json[0]["valid"], J::Bool(false));

    let tnds = dir.path().join("bad.xml");
    std::fs::write(&tnds, "not xml").unwrap();
    assert_status(&ctl(&["tnds", "check", tnds.to_str().unwrap()]), 1);
    assert_status(&ctl(&["tnds", "check", "/nonexistent/tree.xml"]), 1);
}

#[test]
fn usage_errors_exit_2_before_any_bus() {
    assert_status(&ctl(&["ddf", "check"]), 2);
    assert_status(&ctl(&["get"]), 2);
    assert_status(&ctl(&["set", &format!("{DMACC}/1/Name")]), 2);
    assert_status(
        &ctl(&["grant", &format!("{DMACC}/1/"), "app:x", "Bogus"]),
        2,
    );
    assert_status(
        &ctl(&["changes", "--since", "-1", &format!("{DMACC}/*/")]),
        2,
    );
    assert_status(&ctl(&["no-such-command"]), 2);
    assert_status(
        &ctl(&["--json", "get", "--value", &format!("{DEVINFO}//DevID")]),
        2,
    );
    assert_status(
        &ctl(&["get", "--value", "--json", &format!("{DEVINFO}//DevID")]),
        2,
    );
    // A file that cannot be read is reported before connecting.
    let out = ctl(&["create", DMACC, "@/nonexistent/modata.json"]);
    assert_status(&out, 2);
    assert!(
        stderr(&out).contains("/nonexistent/modata.json"),
        "{}",
        show(&out)
    );
}

#[test]
fn an_unreachable_bus_is_status_3() {
    let out = ctl(&["status"]);
    assert_status(&out, 3);
    let err = stderr(&out);
    assert!(
        err.starts_with("omadmctl: cannot connect to the system bus"),
        "{err}"
    );
    assert!(err.contains("omadmctl-test-bus"), "{err}");
}

#[test]
fn no_daemon_on_the_bus_is_status_3() {
    let bus = SessionBus::start();
    for args in [
        &["status"][..],
        &["get", "urn:oma:mo:oma-dm-devinfo:1.0//DevID"][..],
    ] {
        let out = bus.run(args);
        assert_status(&out, 3);
        assert_eq!(
            stderr(&out),
            "omadmctl: omadmd is not running (no org.omadm.Client1 on the session bus)\n"
        );
    }
    let out = bus.run(&["watch", &format!("{DMACC}/*/")]);
    assert_status(&out, 3);
}

const MODATA: &str = r#"{"DMAcc": {"SrvID": "ma1", "SrvURI": "https://dm.example.com/dm",
    "Name": "Example MA", "Perm": {"1": {"MOID": "urn:oma:mo:oma-dm-devinfo:1.0"}},
    "Ext": {"Priority": 5}, "Auth": {"Bootstrap": {"ServerPubKey": "AAEC"}}}}"#;

/// Creates a DM account and returns its ClientURI (`<MOID>/<MIID>/`).
fn create_account(bus: &SessionBus) -> String {
    let out = bus.run(&["create", DMACC, MODATA]);
    assert_status(&out, 0);
    let uri = stdout(&out).trim_end().to_owned();
    assert!(
        uri.starts_with(&format!("{DMACC}/")) && uri.ends_with('/'),
        "{uri}"
    );
    uri
}

#[test]
fn commands_against_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());

    // status, text and JSON.
    let out = bus.run(&["status"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    for label in ["Version:", "DevId:", "State:", "Features:"] {
        assert!(text.contains(label), "{text}");
    }
    let out = bus.run(&["--json", "status"]);
    assert_status(&out, 0);
    let status: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["state"], "idle");
    assert!(
        status["features"]
            .as_array()
            .unwrap()
            .contains(&J::from("watch"))
    );
    let dev_id = status["dev_id"].as_str().unwrap().to_owned();
    assert!(!dev_id.is_empty());

    // get: aligned text columns.
    let out = bus.run(&["get", &format!("{DEVINFO}//DevID")]);
    assert_status(&out, 0);
    let line = stdout(&out);
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert!(
        cells[0].starts_with(DEVINFO) && cells[0].ends_with("/DevID"),
        "{line}"
    );
    assert_eq!(cells[1..], ["chr", dev_id.as_str()], "{line}");
    let out = bus.run(&["get", &format!("{DEVINFO}//*")]);
    assert_status(&out, 0);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    let value_column = lines[0].find("chr").unwrap();
    assert!(
        lines
            .iter()
            .all(|l| l.find("  chr  ").is_none_or(|i| i + 2 == value_column))
    );
    // An interior node: its format "node" and no value.
    assert!(
        lines.iter().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() == 2 && cells[0].ends_with("/Ext") && cells[1] == "node"
        }),
        "{lines:?}"
    );

    // get --json: typed values.
    let out = bus.run(&["--json", "get", &format!("{DEVINFO}//*")]);
    assert_status(&out, 0);
    let nodes: J = serde_json::from_slice(&out.stdout).unwrap();
    let node = |json: &J, suffix: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|n| n["client_uri"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {json}"))
            .clone()
    };
    assert_eq!(node(&nodes, "/DevID")["value"], J::from(dev_id.as_str()));
    assert_eq!(node(&nodes, "/Ext")["format"], "node");
    assert_eq!(node(&nodes, "/Ext")["value"], J::Null);

    // create, then set + get round trips.
    let inst = create_account(&bus);
    let out = bus.run(&["--json", "get", &format!("{inst}*/*")]);
    assert_status(&out, 0);
    let nodes: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node(&nodes, "/Ext/Priority")["value"], J::from(5));
    assert_eq!(node(&nodes, "/Ext/Priority")["format"], "int");
    let out = bus.run(&[
        "--json",
        "get",
        &format!("{inst}Auth/Bootstrap/ServerPubKey"),
    ]);
    let nodes: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node(&nodes, "/ServerPubKey")["value"], "AAEC");
    assert_eq!(node(&nodes, "/ServerPubKey")["format"], "b64");

    assert_status(&bus.run(&["set", &format!("{inst}Name"), "hello world"]), 0);
    let out = bus.run(&["get", "--value", &format!("{inst}Name")]);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "hello world\n");
    assert_status(
        &bus.run(&[
            "set",
            "--format",
            "int",
            &format!("{inst}Ext/Priority"),
            "7",
        ]),
        0,
    );
    let out = bus.run(&["--json", "get", &format!("{inst}Ext/Priority")]);
    let nodes: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes[0]["value"], J::from(7));

    // tree: names, values, formats, the CV; --json is the MO serialization.
    let out = bus.run(&["tree", &inst]);
    assert_status(&out, 0);
    let tree = stdout(&out);
    assert!(tree.starts_with(&format!("{inst}  [CV ")), "{tree}");
    for expected in [
        "\nDMAcc/\n",
        "── Name: hello world\n",
        "── Priority: 7 [int]\n",
        "── ServerPubKey: AAEC [b64]\n",
        "── SrvID: ma1\n",
    ] {
        assert!(tree.contains(expected), "{expected:?} missing: {tree}");
    }
    let out = bus.run(&["--json", "tree", &inst]);
    assert_status(&out, 0);
    let items: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items[0]["ClientURI"], J::from(inst.as_str()));
    assert!(items[0]["CV"].is_string(), "{items}");
    assert_eq!(items[0]["MOData"]["DMAcc"]["Ext"]["Priority"], J::from(7));

    // changes --since.
    let out = bus.run(&["changes", "--since", "0", &format!("{DMACC}/*/")]);
    assert_status(&out, 0);
    let text = stdout(&out);
    let mut lines = text.lines();
    let current: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("current seq: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no current seq: {text}"));
    let changes: Vec<&str> = lines.collect();
    assert!(
        changes
            .iter()
            .any(|l| l.ends_with(&format!(" added {inst}"))),
        "{text}"
    );
    assert!(
        changes
            .iter()
            .any(|l| l.ends_with(&format!(" replaced {inst}Name"))),
        "{text}"
    );
    let out = bus.run(&[
        "--json",
        "changes",
        "--since",
        &current.to_string(),
        &format!("{DMACC}/*/"),
    ]);
    assert_status(&out, 0);
    let json: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"current_seq": current, "changes": []})
    );

    // grant and revoke (rights in any case).
    assert_status(
        &bus.run(&["grant", &inst, "app:test.service", "read", "Write"]),
        0,
    );
    assert_status(&bus.run(&["revoke", &inst, "app:test.service"]), 0);

    // Failures: the daemon's message and the status of its error name.
    let out = bus.run(&["get", &format!("{inst}Nope")]);
    assert_status(&out, 4);
    assert!(
        stderr(&out).starts_with("omadmctl: ") && stderr(&out).contains("Nope"),
        "{}",
        show(&out)
    );
    let out = bus.run(&["get", "not-a-client-uri"]);
    assert_status(&out, 2);
    assert!(stderr(&out).contains("not-a-client-uri"), "{}", show(&out));
    assert_status(&bus.run(&["set", &format!("{inst}Ext/Priority"), "abc"]), 2);
    assert_status(&bus.run(&["create", DMACC, "{not json"]), 2);

    // delete.
    assert_status(&bus.run(&["delete", &format!("{inst}Name")]), 0);
    assert_status(&bus.run(&["get", &format!("{inst}Name")]), 4);
    assert_status(&bus.run(&["delete", &inst]), 0);
    assert_status(&bus.run(&["tree", &inst]), 4);
}

/// A running `omadmctl watch` whose stdout lines arrive on a channel.
struct Watcher {
    child: KillOnDrop,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn spawn(bus: &SessionBus, args: &[&str]) -> Watcher {
        let mut child = KillOnDrop::spawn(
            bus.ctl()
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher { child, lines }
    }

    /// Sends `signal` and waits for the exit status.
    fn stop(mut self, signal: &str) -> Option<i32> {
        let status = self.child.signal(signal, Duration::from_secs(10));
        let done = status.is_some();
        let mut err = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(done, "watch did not stop on {signal}");
        assert!(
            err.lines().all(|l| l.starts_with("Watching ")),
            "watch complained: {err}"
        );
        status.and_then(|s| s.code())
    }
}

#[test]
fn watch_streams_changes_made_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    let inst = create_account(&bus);
    let name = format!("{inst}Name");

    let text = Watcher::spawn(&bus, &["watch", &format!("{DMACC}/*/")]);
    let json = Watcher::spawn(&bus, &["--json", "watch", &name]);

    // The watchers need a moment to register; change the node until both have reported.
    let mut text_line = None;
    let mut json_line = None;
    for i in 0..60 {
        let out = bus.run(&["set", &name, &format!("value {i}")]);
        assert_status(&out, 0);
        if text_line.is_none() {
            text_line = text.lines.recv_timeout(Duration::from_millis(250)).ok();
        }
        if json_line.is_none() {
            json_line = json.lines.recv_timeout(Duration::from_millis(250)).ok();
        }
        if text_line.is_some() && json_line.is_some() {
            break;
        }
    }
    let text_line = text_line.expect("watch printed no change");
    let cells: Vec<&str> = text_line.split(' ').collect();
    assert_eq!(cells.len(), 3, "{text_line}");
    assert!(cells[0].parse::<u64>().is_ok(), "{text_line}");
    assert_eq!(cells[1..], ["replaced", name.as_str()], "{text_line}");

    let json_line = json_line.expect("watch --json printed no change");
    let change: J = serde_json::from_str(&json_line).unwrap();
    assert_eq!(change["change"], "replaced");
    assert_eq!(change["client_uri"], J::from(name.as_str()));
    assert!(change["seq"].is_u64(), "{json_line}");

    // A deletion is streamed too, and nothing else changed in between.
    assert_status(&bus.run(&["delete", &name]), 0);
    let deleted = loop {
        let line = json
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("deletion");
        let change: J = serde_json::from_str(&line).unwrap();
        if change["change"] != "replaced" {
            break change;
        }
    };
    assert_eq!(deleted["change"], "deleted");
    assert_eq!(deleted["client_uri"], J::from(name.as_str()));

    // Ctrl-C and SIGTERM end the watch cleanly.
    assert_eq!(text.stop("-INT"), Some(0));
    assert_eq!(json.stop("-TERM"), Some(0));
}

/// An in-process `omadm-devserver` on 127.0.0.1 (a free port) with its own certificate
/// directory, served by its own tokio runtime for as long as the value lives.
pub(crate) struct TestServer {
    // Dropped in this order: the server stops, then its runtime goes.
    pub server: RunningServer,
    _certs: tempfile::TempDir,
    pub runtime: tokio::runtime::Runtime,
}

impl TestServer {
    /// The alerts of type `alert_type` that reached the server in a Package#1.
    pub fn alerts(&self, alert_type: &str) -> Vec<serde_json::Value> {
        self.server
            .transcript()
            .into_iter()
            .filter(|r| r.kind == "package#1")
            .flat_map(|r| {
                r.body
                    .as_ref()
                    .and_then(|b| b["Alert"].as_array().cloned())
                    .unwrap_or_default()
            })
            .filter(|a| a["AlertType"] == alert_type)
            .collect()
    }

    /// Starts a server with `scenario` (a scenario JSON text), or the built-in scenario.
    pub fn start(scenario: Option<&str>) -> TestServer {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let certs = tempfile::tempdir().unwrap();
        let mut config = DevServerConfig::new(certs.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        if let Some(text) = scenario {
            config.scenario = Scenario::parse(text, "test").expect("scenario");
        }
        let server = runtime
            .block_on(DevServer::start(config))
            .expect("devserver starts");
        TestServer {
            server,
            _certs: certs,
            runtime,
        }
    }

    /// The MOData of a DM account `srv_id` for this server that trusts `ca_pem` and may
    /// manage the weather MO.
    pub fn account(&self, srv_id: &str, ca_pem: &str, priority: i64) -> String {
        serde_json::json!({"DMAcc": {
            "SrvID": srv_id,
            "SrvURI": self.server.url(),
            "Perm": {"p0": {"MOID": WEATHER}},
            "Ext": {"CACert": ca_pem, "Priority": priority}}})
        .to_string()
    }

    /// Waits (up to 10 s) until the server has seen `n` sessions to their end.
    pub fn wait_for_sessions(&self, n: usize) {
        let waited = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), self.server.wait_for_sessions(n)).await
        });
        assert!(
            waited.is_ok(),
            "the devserver saw {} sessions end, not {n}: {:#?}",
            self.server.finished_sessions(),
            self.server.summary()
        );
    }
}

/// A CA certificate (PEM) other than any devserver's.
fn foreign_ca(dir: &Path) -> String {
    Certificates::ensure(&dir.join("foreign-ca"), &[])
        .expect("a second CA")
        .ca_pem
}

#[test]
fn session_start_runs_a_session_and_reports_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    let srv = TestServer::start(None);

    // No DM account at all, then no such account: NotFound, status 4.
    let out = bus.run(&["session", "start"]);
    assert_status(&out, 4);
    assert!(stderr(&out).starts_with("omadmctl: "), "{}", show(&out));

    let good = srv.account("devserver", srv.server.ca_pem(), 10);
    assert_status(&bus.run(&["create", DMACC, &good]), 0);
    let bad = srv.account("badca", &foreign_ca(dir.path()), 1);
    assert_status(&bus.run(&["create", DMACC, &bad]), 0);

    // Without SERVER_ID the account with the highest priority is chosen.
    let out = bus.run(&["session", "start"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{}", show(&out));
    let session_id = lines[0]
        .strip_prefix("Session ")
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no session id: {text}"));
    assert!(session_id.starts_with("devserver"), "{text}");
    assert_eq!(
        lines[0],
        format!(
            "Session {session_id} with devserver started (reason \
             urn:oma:at:dm:2.0:BootstrapComplete)"
        ),
        "the account's first session carries BootstrapComplete, whatever started it"
    );
    assert_eq!(
        lines[1],
        format!("Session {session_id} with devserver finished: 200 OK")
    );
    // Not a terminal: no spinner, nothing on stderr.
    assert_eq!(stderr(&out), "", "{}", show(&out));
    srv.wait_for_sessions(1);
    assert!(
        srv.server.failures().is_empty(),
        "{:?}",
        srv.server.failures()
    );

    // The HGET installed the settings the devserver's repository holds.
    let city = format!("{WEATHER}/*/City");
    let out = bus.run(&["get", "--value", &city]);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "Helsinki\n");

    // Idle again.
    let out = bus.run(&["session", "status"]);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "State:  idle\n");
    let out = bus.run(&["--json", "session", "status"]);
    assert_status(&out, 0);
    let json: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!({"state": "idle", "sessions": []}));

    // No such server: status 4, the daemon's reason.
    let out = bus.run(&["session", "start", "nosuch"]);
    assert_status(&out, 4);
    assert!(stderr(&out).contains("nosuch"), "{}", show(&out));
    assert_eq!(stdout(&out), "");
    // A reason omadmd does not know: status 2.
    let out = bus.run(&["session", "start", "--reason", "Bogus", "devserver"]);
    assert_status(&out, 2);
    assert!(stderr(&out).contains("Bogus"), "{}", show(&out));

    // A server whose certificate the account's CA did not sign: refused, status 9, and the
    // tree is as it was (the local change the session would have undone stays).
    let out = bus.run(&["--json", "get", &city]);
    let nodes: J = serde_json::from_slice(&out.stdout).unwrap();
    let city_uri = nodes[0]["client_uri"].as_str().unwrap().to_owned();
    assert_status(&bus.run(&["set", &city_uri, "Espoo"]), 0);
    let weather = format!("{WEATHER}/*/");
    let before = stdout(&bus.run(&["--json", "tree", &weather]));
    let out = bus.run(&["session", "start", "badca"]);
    assert_status(&out, 9);
    let text = stdout(&out);
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("Session badca")
                && l.ends_with(" with badca failed: 495 server certificate refused")),
        "{}",
        show(&out)
    );
    assert!(text.contains("certificate"), "{}", show(&out));
    assert_eq!(stdout(&bus.run(&["--json", "tree", &weather])), before);
    let out = bus.run(&["get", "--value", &city]);
    assert_eq!(stdout(&out), "Espoo\n");
    assert_eq!(
        srv.server.finished_sessions(),
        1,
        "no session reached the server"
    );

    // --json: one object at the end; the session brings the server's settings back.
    let out = bus.run(&["--json", "session", "start", "devserver"]);
    assert_status(&out, 0);
    let json: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["server_id"], "devserver");
    assert_eq!(json["status"], 200);
    assert_eq!(json["result"], "OK");
    let id = json["session_id"].as_str().unwrap();
    assert!(id.starts_with("devserver") && id != session_id, "{json}");
    let out = bus.run(&["--json", "session", "start", "badca"]);
    assert_status(&out, 9);
    let json: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["server_id"], "badca");
    assert_eq!(json["status"], 495);
    assert_eq!(json["result"], "server certificate refused");
    srv.wait_for_sessions(2);
    assert!(
        srv.server.failures().is_empty(),
        "{:?}",
        srv.server.failures()
    );
}

/// A scenario whose sessions take about two seconds (the END package is late).
const SLOW_SCENARIO: &str = r#"{"name": "slow", "packages": [
    {"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"]], "expect": [200]},
    {"commands": [["END"]], "delay_ms": 2000}]}"#;

#[test]
fn session_start_no_wait_returns_at_once_and_a_second_start_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    let srv = TestServer::start(Some(SLOW_SCENARIO));
    let account = srv.account("slow", srv.server.ca_pem(), 0);
    assert_status(&bus.run(&["create", DMACC, &account]), 0);

    let out = bus.run(&["session", "start", "--no-wait", "slow"]);
    assert_status(&out, 0);
    let id = stdout(&out).trim_end().to_owned();
    assert!(
        id.starts_with("slow") && !id.contains(char::is_whitespace),
        "{}",
        show(&out)
    );
    let out = bus.run(&["session", "status"]);
    assert_eq!(
        stdout(&out),
        format!("State:    session\nSession:  {id} with slow\n"),
        "{}",
        show(&out)
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&bus.run(&["--json", "session", "status"]))).unwrap();
    assert_eq!(json["sessions"][0]["session_id"], id.as_str());
    let out = bus.run(&["session", "start", "slow"]);
    assert_status(&out, 8);
    assert!(stderr(&out).contains(&id), "{}", show(&out));

    let idle = || stdout(&bus.run(&["session", "status"])) == "State:  idle\n";
    assert!(
        wait_until(Duration::from_secs(15), idle),
        "the session never ended"
    );

    // Ctrl-C stops waiting, not the session: status 130, and the session goes on.
    let mut waiting = KillOnDrop::spawn(
        bus.ctl()
            .args(["session", "start", "slow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut started = String::new();
    BufReader::new(waiting.stdout.take().unwrap())
        .read_line(&mut started)
        .unwrap();
    assert!(started.contains(" started (reason "), "{started}");
    let pid = waiting.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = waiting.wait().unwrap();
    let mut err = String::new();
    waiting
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.starts_with("omadmctl: stopped waiting; session slow") && err.contains("goes on"),
        "{err}"
    );
    let status = stdout(&bus.run(&["session", "status"]));
    assert!(
        status.starts_with("State:    session\nSession:  slow-")
            && status.ends_with(" with slow\n"),
        "{status}"
    );
    assert!(
        wait_until(Duration::from_secs(15), idle),
        "the session never ended"
    );

    // Waiting through a slow session: the reply comes first, the signals later.
    let out = bus.run(&["--json", "session", "start", "--no-wait", "slow"]);
    assert_status(&out, 0);
    let json: J = serde_json::from_slice(&out.stdout).unwrap();
    let second = json["session_id"].as_str().unwrap().to_owned();
    assert_ne!(second, id);
    assert!(
        wait_until(Duration::from_secs(15), idle),
        "the session never ended"
    );
    let out = bus.run(&["session", "start", "--reason", "ClientInitiatedMgmt"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(" started (reason urn:oma:at:dm:2.0:ClientInitiatedMgmt)\n"),
        "{text}"
    );
    assert!(text.ends_with(" finished: 200 OK\n"), "{text}");
    srv.wait_for_sessions(4);
    assert!(
        srv.server.failures().is_empty(),
        "{:?}",
        srv.server.failures()
    );
}

#[test]
fn a_default_source_fills_an_mo_an_app_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    let srv = TestServer::start(Some(
        r#"{"name": "default",
            "repository": {"w": [{"ClientURI": "urn:oma:mo:ext-devserver-weather:1.0/s1/",
                                  "MOData": {"Weather": {"City": "Vaasa"}}}]},
            "packages": [{"commands": [["DEFAULT", "urn:oma:mo:ext-devserver-weather:1.0", "{repo}/w"]],
                          "expect": [200]}]}"#,
    ));
    let account = srv.account("devserver", srv.server.ca_pem(), 1);
    assert_status(&bus.run(&["create", DMACC, &account]), 0);
    assert_status(&bus.run(&["session", "start"]), 0);
    // The MO is not in the tree; asking for it fetches it from the DEFAULT source.
    let out = bus.run(&[
        "get",
        "--value",
        "urn:oma:mo:ext-devserver-weather:1.0/*/City",
    ]);
    assert_status(&out, 0);
    assert_eq!(stdout(&out).trim(), "Vaasa", "{}", show(&out));
    let uploads_and_gets = srv
        .server
        .transcript()
        .iter()
        .filter(|r| r.path.starts_with("/repo/w"))
        .count();
    assert!(uploads_and_gets >= 1, "the repository was asked");
}
