//! The security review's findings, replayed against the real daemon on a real system bus
//! with a real polkitd and callers running as separate Unix users: each attack must now
//! fail, and the daemon must keep serving everyone else.

use crate::support::daemon::{Daemon, call, call_err, call_ok};
use crate::support::sysbus::{SysBus, TestUser, test_user};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const DEVINFO_ID: &str = "'urn:oma:mo:oma-dm-devinfo:1.0//DevID'";
const SETTINGS: &str = "urn:oma:mo:ext-example-pin:1.0";

fn quoted(s: &str) -> String {
    format!("'{s}'")
}

/// A failed call's error name and message with `replace` (pairs) taken out of it.
fn refusal(out: &std::process::Output, replace: &[&str]) -> String {
    assert!(!out.status.success(), "the call succeeded");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    for r in replace {
        text = text.replace(r, "<x>");
    }
    text
}

/// The ClientURI a `CreateInstance` call printed (`('<uri>',)`).
fn created(out: &str) -> String {
    out.trim_matches(|c| "(',)".contains(c)).to_owned()
}

/// The daemon still answers another caller.
fn still_serves(bus: &SysBus, who: &TestUser) {
    let out = call_ok(bus, Some(who), "Get", &[DEVINFO_ID]);
    assert!(out.contains("DevID"), "{out}");
}

fn account_json(srv_id: &str, secret: &str) -> String {
    format!(
        r#"'{{"DMAcc": {{"SrvID": "{srv_id}", "SrvURI": "https://dm.example/", "Perm": {{}}, "Auth": {{"Trsp": {{"Data": "dev", "Secret": "{secret}"}}}}}}}}'"#
    )
}

#[test]
fn guessing_a_secret_or_another_apps_value_learns_nothing() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let (alice, bob) = (test_user("omadm-t-alice"), test_user("omadm-t-bob"));
    bus.allow("60-sec", &[&alice, &bob], &["read", "write"]);
    call_ok(
        &bus,
        None,
        "CreateInstance",
        &[&quoted(DMACC), &account_json("acme", "hunter2")],
    );
    // A DM account's secret, by nv= guesses: the right guess and a wrong one get the same
    // answer, for a user and for root alike.
    for who in [Some(&alice), None] {
        let guess = |g: &str| {
            let uri = format!("{DMACC}/(x)/SrvID?nv=(x)/Auth/Trsp/Secret:{g}");
            refusal(&call(&bus, who, "Get", &[&quoted(&uri)]), &[g])
        };
        let right = guess("hunter2");
        assert!(right.contains("Error.InvalidUri"), "{right}");
        assert!(right.contains("No-Get"), "{right}");
        assert_eq!(right, guess("wrong"));
    }
    // Another user's value: a match and a miss look alike, and so do a node that exists in
    // an instance bob may not read and one that does not exist at all.
    let root = created(&call_ok(
        &bus,
        Some(&alice),
        "CreateInstance",
        &[&quoted(SETTINGS), r#"'{"PIN": {"Code": "4711"}}'"#],
    ));
    let guess = |g: &str| {
        let uri = format!("{SETTINGS}/(x)/Code?nv=(x)/Code:{g}");
        refusal(&call(&bus, Some(&bob), "Get", &[&quoted(&uri)]), &[g])
    };
    let hit = guess("4711");
    assert!(hit.contains("Error.NotFound"), "{hit}");
    assert_eq!(hit, guess("0000"));
    let exists = refusal(
        &call(&bus, Some(&bob), "Get", &[&quoted(&format!("{root}Code"))]),
        &[&root],
    );
    let absent = format!("{SETTINGS}/999/");
    let missing = refusal(
        &call(
            &bus,
            Some(&bob),
            "Get",
            &[&quoted(&format!("{absent}Code"))],
        ),
        &[&absent],
    );
    assert!(exists.contains("Error.NotFound"), "{exists}");
    assert_eq!(exists, missing);
    // Writes into it and changes to it are not there for bob either.
    let set = refusal(
        &call(
            &bus,
            Some(&bob),
            "Set",
            &[&quoted(&format!("{root}Code")), "''", "<'1'>"],
        ),
        &[&root],
    );
    assert!(set.contains("Error.NotFound"), "{set}");
    let changes = call_ok(
        &bus,
        Some(&bob),
        "ChangesSince",
        &[&quoted(&format!("{SETTINGS}/*/")), "0"],
    );
    assert!(changes.ends_with("[])"), "bob sees no changes: {changes}");
    let changes = call_ok(
        &bus,
        Some(&alice),
        "ChangesSince",
        &[&quoted(&format!("{SETTINGS}/*/")), "0"],
    );
    assert!(changes.contains(&root), "alice sees hers: {changes}");
}

#[test]
fn only_administrators_add_or_change_dm_accounts() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let (alice, admin) = (test_user("omadm-t-alice"), test_user("omadm-t-carol"));
    bus.allow("60-sec", &[&alice, &admin], &["read", "write"]);
    let err = call_err(
        &bus,
        Some(&alice),
        "CreateInstance",
        &[&quoted(DMACC), &account_json("evil", "x")],
        "AccessDenied",
    );
    assert!(err.contains("manage"), "{err}");
    // root's account, then a rogue one reusing its SrvID: refused even to root.
    call_ok(
        &bus,
        None,
        "CreateInstance",
        &[&quoted(DMACC), &account_json("acme", "pw")],
    );
    call_err(
        &bus,
        None,
        "CreateInstance",
        &[&quoted(DMACC), &account_json("acme", "pw")],
        "Conflict",
    );
    // alice cannot change root's account: refused before the account is looked at, so an
    // existing account and a missing one get the same answer.
    let change = |miid: &str| {
        let uri = format!("{DMACC}/{miid}/SrvURI");
        refusal(
            &call(
                &bus,
                Some(&alice),
                "Set",
                &[&quoted(&uri), "''", "<'https://evil/'>"],
            ),
            &[&uri],
        )
    };
    let existing = change("1");
    assert!(existing.contains("Error.AccessDenied"), "{existing}");
    assert_eq!(existing, change("999"));
    // A user polkit allows `manage` acts as the administrator for accounts.
    bus.allow("61-sec-admin", &[&admin], &["manage"]);
    let root = call_ok(
        &bus,
        Some(&admin),
        "CreateInstance",
        &[&quoted(DMACC), &account_json("second", "pw")],
    );
    assert!(root.contains(DMACC), "{root}");
    call_ok(
        &bus,
        Some(&admin),
        "Set",
        &[&quoted(&format!("{DMACC}/1/Name")), "''", "<'Acme'>"],
    );
}

#[test]
fn oversized_input_gets_its_error_and_others_are_still_served() {
    let bus = SysBus::start();
    let mut daemon = Daemon::start_with_config(
        &bus,
        "[limits]\nresult_rows = 20\nowner_instances = 3\ntree_depth = 8\njournal_entries = 5\n",
    );
    let (alice, bob) = (test_user("omadm-t-alice"), test_user("omadm-t-bob"));
    bus.allow("60-sec", &[&alice, &bob], &["read", "write", "watch"]);

    // A ClientURI of 100 kB with thousands of x-names (as long as one program argument can
    // be): refused before any work.
    let xnames: Vec<String> = (0..14_000).map(|i| format!("(x{i})")).collect();
    let huge = format!("{SETTINGS}/{}", xnames.join("/"));
    let err = call_err(&bus, Some(&alice), "Get", &[&quoted(&huge)], "InvalidUri");
    assert!(err.contains("uri_bytes"), "{}", &err[..err.len().min(300)]);
    still_serves(&bus, &bob);

    // One nv= field repeated to multiply the rows; too many fields.
    let repeated = format!("{SETTINGS}/(x)/?{}", ["nv=(x)/A:1"; 2].join("&"));
    call_err(
        &bus,
        Some(&alice),
        "Get",
        &[&quoted(&repeated)],
        "InvalidUri",
    );
    let many: Vec<String> = (0..40).map(|i| format!("nv=(x)/A{i}:1")).collect();
    let many = format!("{SETTINGS}/(x)/?{}", many.join("&"));
    let err = call_err(&bus, Some(&alice), "Get", &[&quoted(&many)], "InvalidUri");
    assert!(err.contains("nv_fields"), "{err}");

    // A percent sign before a multibyte character (a panic once): an error, no hang.
    call_err(
        &bus,
        Some(&alice),
        "Get",
        &["'urn:a:1.0/x/%€'"],
        "InvalidUri",
    );

    // Deeper than tree_depth: refused on create and on Set.
    let mut deep = String::from("1");
    for _ in 0..10 {
        deep = format!(r#"{{"n": {deep}}}"#);
    }
    let err = call_err(
        &bus,
        Some(&alice),
        "CreateInstance",
        &[&quoted(SETTINGS), &quoted(&format!(r#"{{"PIN": {deep}}}"#))],
        "NotAllowed",
    );
    assert!(err.contains("tree_depth"), "{err}");

    // Per-owner quota: the fourth instance is refused; bob is not charged for alice.
    let mut roots = Vec::new();
    for i in 0..3 {
        let modata = format!(r#"'{{"PIN": {{"A": "{i}", "B": "x", "C": "y"}}}}'"#);
        roots.push(created(&call_ok(
            &bus,
            Some(&alice),
            "CreateInstance",
            &[&quoted(SETTINGS), &modata],
        )));
    }
    let err = call_err(
        &bus,
        Some(&alice),
        "CreateInstance",
        &[&quoted(SETTINGS), r#"'{"PIN": {}}'"#],
        "NotAllowed",
    );
    assert!(err.contains("owner_instances"), "{err}");
    call_ok(
        &bus,
        Some(&bob),
        "CreateInstance",
        &[&quoted(SETTINGS), r#"'{"PIN": {}}'"#],
    );

    // More rows than result_rows: an error that says to narrow the query, and the daemon
    // keeps its bus connection.
    for i in 0..25 {
        call_ok(
            &bus,
            Some(&alice),
            "Set",
            &[&quoted(&format!("{}N{i}", roots[0])), "''", "<'v'>"],
        );
    }
    let err = call_err(
        &bus,
        Some(&alice),
        "Get",
        &[&quoted(&format!("{SETTINGS}/*/*"))],
        "NotAllowed",
    );
    assert!(
        err.contains("result_rows") && err.contains("narrow"),
        "{err}"
    );

    // Catching up from before the kept journal: told to re-read.
    let err = call_err(
        &bus,
        Some(&alice),
        "ChangesSince",
        &[&quoted(&format!("{SETTINGS}/*/")), "0"],
        "InvalidValue",
    );
    assert!(err.contains("re-read"), "{err}");

    still_serves(&bus, &bob);
    assert!(
        daemon
            .wait_exit(std::time::Duration::from_millis(100))
            .is_none(),
        "the daemon lives:\n{}",
        daemon.log()
    );
}

#[test]
fn a_tree_depth_beyond_what_the_store_serves_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("omadmd.toml");
    std::fs::write(&config, "[limits]\ntree_depth = 1000\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omadmd"))
        .args(["--session", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tree_depth = 1000"), "{err}");
}
