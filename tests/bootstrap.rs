//! Factory bootstrap against the real daemon: `[bootstrap] dirs` applied at start (a bad file
//! refused whole, logged with its line, the others applied), `omadmctl bootstrap FILE`, and
//! `omadmctl factory-reset` back to the bootstrap state — on a private session bus as root;
//! and on the private system bus with polkitd, callers without `manage` refused.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::daemon::{Daemon, call, call_err, call_ok};
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{SysBus, show, test_user};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const DEVINFO: &str = "urn:oma:mo:oma-dm-devinfo:1.0";
const SETTINGS: &str = "urn:oma:mo:ext-omadmd-test-bootstrap:1.0";

/// One JSON item (two lines): the DM account `miid` for server `srv`.
fn account(miid: &str, srv: &str, url: &str) -> String {
    format!(
        r#"  {{"ClientURI": "{DMACC}/{miid}/",
    "MOData": {{"DMAcc": {{"SrvID": "{srv}", "SrvURI": "{url}", "Perm": {{"p": {{"MOID": "{SETTINGS}"}}}}}}}}}}"#
    )
}

/// A bootstrap file whose second item (line 4) lacks the SrvURI the DDF requires.
fn bad_file(miid: &str) -> String {
    format!(
        "[\n{},\n  {{\"ClientURI\": \"{DMACC}/{miid}-2/\", \"MOData\": {{\"DMAcc\": {{\"SrvID\": \"{miid}-2\", \"Perm\": {{}}}}}}}}\n]\n",
        account(miid, miid, "https://bad.example/dm")
    )
}

/// `dir` with `boot.d/` holding a good account file and a bad file, and `omadmd.toml`
/// pointing `[bootstrap] dirs` at it.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot.d");
    std::fs::create_dir(&boot).unwrap();
    std::fs::write(
        boot.join("10-acme.json"),
        format!(
            "[\n{}\n]\n",
            account("acme", "acme", "https://acme.example/dm")
        ),
    )
    .unwrap();
    std::fs::write(boot.join("20-bad.json"), bad_file("bad")).unwrap();
    std::fs::write(
        dir.path().join("omadmd.toml"),
        format!("[bootstrap]\ndirs = [{:?}]\n", boot.display().to_string()),
    )
    .unwrap();
    (dir, boot)
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

/// Grants on instances other than DevInfo, the network MO and the Features MO (which omadmd
/// grants itself), read from the store the daemon is running on (WAL: readers do not disturb
/// it).
fn foreign_grants(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("state/store.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT count(*) FROM grants g JOIN instances i ON g.inst = i.id \
         WHERE i.moid NOT IN (?1, ?2, ?3)",
        [
            DEVINFO,
            "urn:oma:mo:ext-omadmd-network:1.0",
            "urn:oma:mo:ext-omadmd-features:1.0",
        ],
        |r| r.get(0),
    )
    .unwrap()
}

/// `changes --json --since SEQ` of `uri`: (current_seq, [(change, client_uri)]).
fn changes(bus: &SessionBus, uri: &str, since: u64) -> (u64, Vec<(String, String)>) {
    let out = bus.run(&["--json", "changes", "--since", &since.to_string(), uri]);
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let list = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_owned(),
                c["client_uri"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (json["current_seq"].as_u64().unwrap(), list)
}

#[test]
fn bootstrap_dirs_omadmctl_bootstrap_and_factory_reset() {
    let (dir, boot) = setup();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());

    // At start: the good file's account is there; the bad file is refused whole, with the
    // line of its bad item, and its good item is not applied either.
    assert_eq!(srv_ids(&bus), ["acme"]);
    let log = daemon_log(dir.path());
    let bad = boot.join("20-bad.json");
    assert!(
        log.contains(&format!(
            "{}:4: {DMACC}/bad-2/: DMAcc: has 0 child(ren) named SrvURI",
            bad.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "bootstrap file {} refused: nothing of it applied",
            bad.display()
        )),
        "{log}"
    );

    // omadmctl bootstrap FILE: a relative name, made absolute by omadmctl, read by omadmd.
    std::fs::write(
        dir.path().join("extra.json"),
        format!(
            "[{}]",
            account("extra", "extra", "https://extra.example/dm")
        ),
    )
    .unwrap();
    let out = bus
        .ctl()
        .current_dir(dir.path())
        .args(["bootstrap", "extra.json"])
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(srv_ids(&bus), ["acme", "extra"]);
    // A refused file: exit status 2 and each problem with its line.
    let out = bus.run(&["bootstrap", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4: {DMACC}/bad-2/: ", bad.display())),
        "{stderr}"
    );
    let out = bus.run(&["bootstrap", "/nonexistent/boot.json"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));

    // After bootstrap: an app's instance with a grant, a changed account, a grant on it.
    let created = ok(&bus.run(&["create", SETTINGS, r#"{"Settings": {"A": "x"}}"#]));
    ok(&bus.run(&["grant", &created, "app:org.example.B", "Read"]));
    ok(&bus.run(&[
        "grant",
        &format!("{DMACC}/acme/"),
        "app:org.example.B",
        "Read",
    ]));
    ok(&bus.run(&[
        "set",
        &format!("{DMACC}/acme/SrvURI"),
        "https://changed.example/dm",
    ]));
    assert_eq!(foreign_grants(dir.path()), 2);
    let (seq, _) = changes(&bus, &format!("{SETTINGS}/*/"), 0);

    // factory-reset needs --yes without a terminal.
    let out = bus.run(&["factory-reset"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        show(&out)
    );
    assert_eq!(srv_ids(&bus), ["acme", "extra"], "nothing reset");

    ok(&bus.run(&["factory-reset", "--yes"]));
    // Back to the bootstrap state: the app's instance and the account from `bootstrap FILE`
    // are gone, the bootstrap account is as its file says, no grant is left.
    assert_eq!(srv_ids(&bus), ["acme"]);
    let out = bus.run(&["get", "--value", &format!("{DMACC}/acme/SrvURI")]);
    assert_eq!(ok(&out), "https://acme.example/dm");
    let out = bus.run(&["get", &created]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert_eq!(foreign_grants(dir.path()), 0);
    let out = bus.run(&["get", "--value", &format!("{DEVINFO}//DevID")]);
    assert!(!ok(&out).is_empty(), "DevInfo stays");
    // The deletion is in the journal, after what was there: the sequence kept rising.
    let (current, after) = changes(&bus, &format!("{SETTINGS}/*/"), seq);
    assert!(current > seq);
    assert_eq!(after, [("deleted".to_owned(), created.clone())]);
    // The bad file was tried again, and refused again.
    let log = daemon_log(dir.path());
    assert_eq!(
        log.matches(&format!("bootstrap file {} refused", bad.display()))
            .count(),
        2,
        "{log}"
    );
}

#[test]
fn omadmctl_bootstrap_and_factory_reset_have_help_with_examples() {
    for command in ["bootstrap", "factory-reset"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_omadmctl"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let text = ok(&out);
        assert!(
            text.contains(&format!("Usage: omadmctl {command}")),
            "{text}"
        );
        assert!(text.contains("EXAMPLES:"), "{text}");
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains("the manage polkit action"), "{text}");
    }
}

fn quoted(s: &str) -> String {
    format!("'{s}'")
}

#[test]
fn only_manage_may_bootstrap_or_reset() {
    let (dir, boot) = setup();
    let bus = SysBus::start();
    let _daemon = Daemon::start_with_config(
        &bus,
        &format!("[bootstrap]\ndirs = [{:?}]\n", boot.display().to_string()),
    );
    let (alice, bob) = (test_user("omadm-t-alice"), test_user("omadm-t-bob"));
    bus.allow("60-boot-rw", &[&alice], &["read", "write"]);
    bus.allow("60-boot-manage", &[&bob], &["manage"]);
    let extra = dir.path().join("extra.json");
    std::fs::write(
        &extra,
        format!(
            "[{}]",
            account("extra", "extra", "https://extra.example/dm")
        ),
    )
    .unwrap();
    let created = call_ok(
        &bus,
        Some(&alice),
        "CreateInstance",
        &[&quoted(SETTINGS), r#"'{"Settings": {"A": "x"}}'"#],
    );
    let accounts = || call_ok(&bus, None, "Get", &[&quoted(&format!("{DMACC}/*/SrvID"))]);
    let before = accounts();
    assert!(before.contains("'acme'"), "{before}");

    // Without manage: refused, whatever the path names; nothing changes.
    for path in [
        extra.display().to_string(),
        "/nonexistent".into(),
        "relative.json".into(),
    ] {
        call_err(
            &bus,
            Some(&alice),
            "Bootstrap",
            &[&quoted(&path)],
            "AccessDenied",
        );
    }
    call_err(&bus, Some(&alice), "FactoryReset", &[], "AccessDenied");
    assert_eq!(accounts(), before);
    call_ok(
        &bus,
        Some(&alice),
        "Get",
        &[&quoted(&format!("{SETTINGS}/*/A"))],
    );

    // With manage: only an absolute path to a regular file.
    let msg = call_err(
        &bus,
        Some(&bob),
        "Bootstrap",
        &[&quoted("extra.json")],
        "InvalidValue",
    );
    assert!(msg.contains("absolute"), "{msg}");
    let msg = call_err(
        &bus,
        Some(&bob),
        "Bootstrap",
        &[&quoted(&dir.path().display().to_string())],
        "InvalidValue",
    );
    assert!(msg.contains("not a regular file"), "{msg}");
    call_ok(
        &bus,
        Some(&bob),
        "Bootstrap",
        &[&quoted(&extra.display().to_string())],
    );
    assert!(accounts().contains("'extra'"));
    call_ok(&bus, Some(&bob), "FactoryReset", &[]);
    let after = accounts();
    assert!(
        after.contains("'acme'") && !after.contains("'extra'"),
        "{after}"
    );
    let out = call(
        &bus,
        Some(&alice),
        "Get",
        &[&quoted(&format!("{SETTINGS}/*/A"))],
    );
    assert!(!out.status.success(), "{created} is gone: {}", show(&out));
}
