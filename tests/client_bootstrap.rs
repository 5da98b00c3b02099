//! Client-initiated bootstrap against the real daemon on a private session bus: a factory
//! file holding only bootstrap accounts, each naming an in-process `omadm-devserver` in
//! bootstrap-server mode over real TLS (with HTTP Basic). The delivered DM account arrives,
//! its first session carries `BootstrapComplete`, and its server cannot change the account's
//! `Auth/Bootstrap`; a bootstrap server the account does not trust, and an answer that is
//! not a good MO serialization, change nothing and are logged.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use omadmd::devserver::{DevServer, DevServerConfig, RunningServer, Scenario};
use serde_json::json;

use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{show, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const WEATHER: &str = "urn:oma:mo:ext-devserver-weather:1.0";
const BOOTSTRAP_COMPLETE: &str = "urn:oma:at:dm:2.0:BootstrapComplete";

/// In-process devservers and the runtime they run on.
struct Servers {
    // Dropped in this order: the servers stop, then their runtime goes.
    list: Vec<RunningServer>,
    _certs: Vec<tempfile::TempDir>,
    runtime: tokio::runtime::Runtime,
}

impl Servers {
    fn new() -> Servers {
        Servers {
            list: Vec::new(),
            _certs: Vec::new(),
            runtime: tokio::runtime::Runtime::new().expect("tokio runtime"),
        }
    }

    /// Starts a devserver with its own CA; `bootstrap`: serve it at /bootstrap and require
    /// HTTP Basic `device:s3cret`. Returns its index.
    fn start(&mut self, scenario: Option<&str>, bootstrap: Option<String>) -> usize {
        let certs = tempfile::tempdir().unwrap();
        let mut config = DevServerConfig::new(certs.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        if let Some(text) = scenario {
            config.scenario = Scenario::parse(text, "test").unwrap();
        }
        if let Some(doc) = bootstrap {
            config.basic = Some("device:s3cret".parse().unwrap());
            config.bootstrap = Some(doc.into_bytes());
        }
        let server = self
            .runtime
            .block_on(DevServer::start(config))
            .expect("devserver starts");
        self.list.push(server);
        self._certs.push(certs);
        self.list.len() - 1
    }
}

/// A bootstrap-only DM account: its server is the bootstrap server `url`, trusted with
/// `ca_pem`, authenticated to with HTTP Basic.
fn bootstrap_account(miid: &str, url: &str, ca_pem: &str) -> serde_json::Value {
    json!({"ClientURI": format!("{DMACC}/{miid}/"), "MOData": {"DMAcc": {
        "SrvID": miid, "SrvURI": url, "Perm": {},
        "Auth": {"Bootstrap": {"ServerURI": url}, "Trsp": {"Data": "device", "Secret": "s3cret"}},
        "Ext": {"CACert": ca_pem}}}})
}

/// The DM account a bootstrap server delivers: server `srv` at `url`, trusted with `ca_pem`
/// (with bootstrap settings, but no bootstrap server of its own).
fn dm_account(srv: &str, url: &str, ca_pem: &str) -> serde_json::Value {
    json!({"ClientURI": format!("{DMACC}/{srv}/"), "MOData": {"DMAcc": {
        "SrvID": srv, "SrvURI": url, "Perm": {"1": {"MOID": WEATHER}},
        "Auth": {"Bootstrap": {"SecMode": "TLS"}},
        "Ext": {"CACert": ca_pem}}}})
}

/// `dir/boot.d/10-bootstrap.json` holding `items`, and `[bootstrap] dirs` naming it.
fn factory_file(dir: &Path, items: &[serde_json::Value]) {
    let boot = dir.join("boot.d");
    std::fs::create_dir(&boot).unwrap();
    std::fs::write(
        boot.join("10-bootstrap.json"),
        serde_json::to_string_pretty(items).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("omadmd.toml"),
        format!("[bootstrap]\ndirs = [{:?}]\n", boot.display().to_string()),
    )
    .unwrap();
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", show(out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The SrvIDs of every DM account, sorted.
fn srv_ids(bus: &SessionBus) -> Vec<String> {
    let out = bus.run(&["get", "--value", &format!("{DMACC}/*/SrvID")]);
    let mut ids: Vec<String> = ok(&out).lines().map(str::to_owned).collect();
    ids.sort();
    ids
}

/// Waits until the daemon in `dir` has logged `line`.
#[track_caller]
fn wait_for_log(dir: &Path, line: &str) {
    assert!(
        wait_until(Duration::from_secs(60), || daemon_log(dir).contains(line)),
        "no {line:?} in the log:\n{}",
        daemon_log(dir)
    );
}

#[test]
fn a_bootstrap_only_account_gets_its_dm_account_from_its_bootstrap_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Servers::new();
    // Every session of the DM server: try to change its own account's bootstrap settings,
    // and to rename the account.
    let scenario = json!({"name": "guard", "repository": {
        "bs": [{"ClientURI": format!("{DMACC}/acme/Auth/Bootstrap/SecMode"),
                "MOData": {"SecMode": "NONE"}}],
        "name": [{"ClientURI": format!("{DMACC}/acme/Name"), "MOData": {"Name": "renamed"}}]},
        "sessions": [{"packages": [
            {"commands": [
                ["HGET", "{repo}/bs", format!("{DMACC}/acme/Auth/Bootstrap/SecMode")],
                ["HGET", "{repo}/name", format!("{DMACC}/acme/Name")]],
             "expect": [null, null]},
            {"commands": [["END"]]}]}]})
    .to_string();
    let dm = servers.start(Some(&scenario), None);
    let (dm_url, dm_ca) = (
        servers.list[dm].url().to_owned(),
        servers.list[dm].ca_pem().to_owned(),
    );
    let doc = json!([dm_account("acme", &dm_url, &dm_ca)]).to_string();
    let bs = servers.start(None, Some(doc));
    let bs_url = servers.list[bs].bootstrap_url().unwrap();
    factory_file(
        dir.path(),
        &[bootstrap_account(
            "bootstrap",
            &bs_url,
            servers.list[bs].ca_pem(),
        )],
    );
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());

    // The bootstrap account's bootstrap server delivers the DM account.
    wait_for_log(
        dir.path(),
        &format!("bootstrap from {bs_url} (DM account {DMACC}/bootstrap/) applied: {DMACC}/acme/"),
    );
    assert_eq!(srv_ids(&bus), ["acme", "bootstrap"]);
    assert_eq!(servers.list[bs].bootstrap_fetches(), 1);
    let out = bus.run(&["get", "--value", &format!("{DMACC}/acme/SrvURI")]);
    assert_eq!(ok(&out), dm_url);

    // A session with it works, and the account's first session carried BootstrapComplete.
    let out = bus.run(&["session", "start", "acme"]);
    assert!(
        ok(&out).contains(" with acme finished: 200 OK"),
        "{}",
        show(&out)
    );
    let first = &servers.list[dm].results()[0];
    assert_eq!(first.reason.as_deref(), Some(BOOTSTRAP_COMPLETE));

    // Granted its own account, its server may rename it but not touch its Auth/Bootstrap
    // (only the account's bootstrap server and the admin may).
    ok(&bus.run(&[
        "grant",
        &format!("{DMACC}/acme/"),
        "srv:acme",
        "Read",
        "Write",
    ]));
    let out = bus.run(&["session", "start", "acme"]);
    assert!(
        ok(&out).contains(" with acme finished: 200 OK"),
        "{}",
        show(&out)
    );
    let last = servers.list[dm].results().pop().unwrap();
    assert_eq!(last.statuses, [vec![403, 200]], "{last:?}");
    let out = bus.run(&["get", "--value", &format!("{DMACC}/acme/Name")]);
    assert_eq!(ok(&out), "renamed");
    let out = bus.run(&[
        "get",
        "--value",
        &format!("{DMACC}/acme/Auth/Bootstrap/SecMode"),
    ]);
    assert_eq!(ok(&out), "TLS");
    assert!(
        servers.list[dm].failures().is_empty(),
        "{:?}",
        servers.list[dm].failures()
    );
}

#[test]
fn an_untrusted_bootstrap_server_or_a_bad_answer_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Servers::new();
    let good = json!([dm_account("acme", "https://acme.example/dm", "")]).to_string();
    let trusted_elsewhere = servers.start(None, Some(good));
    // A good item, then one without the SrvURI the DDF requires (line 3 of the answer):
    // nothing of it may be applied.
    let bad = format!(
        "[\n{},\n{}\n]\n",
        dm_account("other", "https://other.example/dm", ""),
        json!({"ClientURI": format!("{DMACC}/third/"), "MOData": {"DMAcc": {"SrvID": "third", "Perm": {}}}})
    );
    let bad_answer = servers.start(None, Some(bad));
    let (untrusted_url, bad_url) = (
        servers.list[trusted_elsewhere].bootstrap_url().unwrap(),
        servers.list[bad_answer].bootstrap_url().unwrap(),
    );
    // The first account trusts the other server's CA, not its own bootstrap server's.
    factory_file(
        dir.path(),
        &[
            bootstrap_account(
                "untrusted",
                &untrusted_url,
                servers.list[bad_answer].ca_pem(),
            ),
            bootstrap_account("bad-answer", &bad_url, servers.list[bad_answer].ca_pem()),
        ],
    );
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());

    wait_for_log(
        dir.path(),
        &format!("bootstrap from {untrusted_url} (DM account {DMACC}/untrusted/) failed: TLS: "),
    );
    wait_for_log(
        dir.path(),
        &format!(
            "bootstrap from {bad_url} (DM account {DMACC}/bad-answer/) refused: nothing of it \
             applied"
        ),
    );
    let log = daemon_log(dir.path());
    assert!(
        log.contains(&format!(
            "{bad_url}:3: {DMACC}/third/: DMAcc: has 0 child(ren) named SrvURI"
        )),
        "{log}"
    );
    assert_eq!(srv_ids(&bus), ["bad-answer", "untrusted"]);
    assert_eq!(servers.list[trusted_elsewhere].bootstrap_fetches(), 0);
    assert_eq!(servers.list[bad_answer].bootstrap_fetches(), 1);
}
