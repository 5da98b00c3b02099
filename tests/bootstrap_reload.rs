//! Reload (SIGHUP, as `systemctl reload omadmd` sends it) against the real daemon on a
//! private session bus: the bootstrap dirs' new files applied — a bad one refused whole with
//! `file:line: reason` in the log — while the daemon keeps running; the account a reload adds
//! gets its first session (to an in-process `omadm-devserver` over TLS) carrying
//! `BootstrapComplete`; a reload with nothing new applies nothing again; the configuration
//! file re-read (its `[ddf]` dirs' types in effect at once, a `[limits]` change named as
//! waiting for the next start, a file that does not parse refused while the daemon runs on).

use std::path::Path;
use std::time::Duration;

use omadmd::protocol::alert;
use omadmd::tree::builtin::DDF_FILES;

use crate::omadmctl_cli::TestServer;
use crate::support::daemon::NO_FIRST_SESSION_AT_ONCE;
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{KillOnDrop, show, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";

/// Sends SIGHUP to `daemon` and waits for the `reloads`-th `reload: configuration...` line
/// of the log; returns it from `configuration` on.
fn reload(daemon: &KillOnDrop, dir: &Path, reloads: usize) -> String {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &daemon.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -HUP failed");
    let nth = || {
        daemon_log(dir)
            .lines()
            .filter_map(|l| l.rsplit_once("reload: ").map(|(_, rest)| rest.to_owned()))
            .filter(|rest| rest.starts_with("configuration") && rest.contains(" MO types ("))
            .nth(reloads - 1)
    };
    assert!(
        wait_until(Duration::from_secs(20), || nth().is_some()),
        "no reload line #{reloads}: {}",
        daemon_log(dir)
    );
    nth().unwrap_or_default()
}

#[test]
fn sighup_applies_new_bootstrap_files_once_and_greets_their_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot.d");
    std::fs::create_dir(&boot).unwrap();
    // An account that arrives gets its session at once: the default, which the other tests'
    // daemons turn off.
    std::fs::write(
        dir.path().join("omadmd.toml"),
        format!(
            "[bootstrap]\ndirs = [{:?}]\n[session]\nfirst_session_at_once = true\n\
             [ddf]\ndirs = []\n",
            boot.display().to_string()
        ),
    )
    .unwrap();
    let bus = SessionBus::start();
    let mut daemon = bus.daemon(dir.path());
    let srv = TestServer::start(None);

    // Dropped in while the daemon runs: a good account file and a bad one (its second item,
    // line 3, lacks the SrvURI the DDF requires).
    let account = srv.account("reloaded", srv.server.ca_pem(), 0);
    std::fs::write(
        boot.join("10-reloaded.json"),
        format!("[\n  {{\"ClientURI\": \"{DMACC}/reloaded/\", \"MOData\": {account}}}\n]\n"),
    )
    .unwrap();
    let bad = boot.join("20-bad.json");
    std::fs::write(
        &bad,
        format!(
            "[\n  {{\"ClientURI\": \"{DMACC}/ok/\", \"MOData\": {}}},\n  \
             {{\"ClientURI\": \"{DMACC}/bad/\", \"MOData\": {{\"DMAcc\": {{\"SrvID\": \"bad\", \"Perm\": {{}}}}}}}}\n]\n",
            srv.account("ok", srv.server.ca_pem(), 0)
        ),
    )
    .unwrap();

    let types = DDF_FILES.len();
    assert_eq!(
        reload(&daemon, dir.path(), 1),
        format!(
            "configuration unchanged; {types} MO types (0 DDF files refused); 1 bootstrap file \
             applied, 1 refused, 0 unchanged"
        )
    );
    let log = daemon_log(dir.path());
    assert!(
        log.contains(&format!(
            "{}:3: {DMACC}/bad/: DMAcc: has 0 child(ren) named SrvURI",
            bad.display()
        )),
        "{log}"
    );
    assert_eq!(daemon.try_wait().unwrap(), None, "omadmd exited: {log}");
    let out = bus.run(&["get", "--value", &format!("{DMACC}/*/SrvID")]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "reloaded",
        "the bad file's good item is not applied either"
    );

    // The reloaded account's first session, started by nobody, says BootstrapComplete.
    srv.wait_for_sessions(1);
    let results = srv.server.results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(
        results[0].reason.as_deref(),
        Some(alert::BOOTSTRAP_COMPLETE)
    );

    // Nothing changed: the applied file is left alone, the refused one tried again.
    assert_eq!(
        reload(&daemon, dir.path(), 2),
        format!(
            "configuration unchanged; {types} MO types (0 DDF files refused); 0 bootstrap files \
             applied, 1 refused, 1 unchanged"
        )
    );
    let applied = format!(
        "bootstrap file {} applied: ",
        boot.join("10-reloaded.json").display()
    );
    assert_eq!(
        daemon_log(dir.path()).matches(&applied).count(),
        1,
        "{}",
        daemon_log(dir.path())
    );
    assert_eq!(
        daemon.try_wait().unwrap(),
        None,
        "{}",
        daemon_log(dir.path())
    );
}

#[test]
fn sighup_rereads_the_configuration_and_keeps_the_running_one_when_it_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let ddf = dir.path().join("ddf");
    std::fs::create_dir(&ddf).unwrap();
    std::fs::write(
        dir.path().join("omadmd.toml"),
        "[ddf]\ndirs = []\n[bootstrap]\ndirs = []\n",
    )
    .unwrap();
    let bus = SessionBus::start();
    let mut daemon = bus.daemon(dir.path());
    // The file the daemon was started with (the test's own plus the test daemons' settings).
    let config = dir.path().join("omadmd.effective.toml");
    let types = DDF_FILES.len();

    // A DDF dir with one more MO type, and a limit that only a start sets.
    std::fs::write(
        ddf.join("10-test.ddf"),
        DDF_FILES[0]
            .1
            .replace("urn:oma:mo:oma-dm-devinfo:1.0", "urn:x-test:mo:1.0"),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[ddf]\ndirs = [{:?}]\n[bootstrap]\ndirs = []\n[limits]\nresult_rows = 500\n{}",
            ddf.display().to_string(),
            NO_FIRST_SESSION_AT_ONCE
        ),
    )
    .unwrap();
    assert_eq!(
        reload(&daemon, dir.path(), 1),
        format!(
            "configuration: [ddf] applied; [limits] changed, in effect at the next start; {} \
             MO types (0 DDF files refused); 0 bootstrap files applied, 0 refused, 0 unchanged",
            types + 1
        )
    );

    // A file that does not parse: refused, the daemon runs on with the running one.
    std::fs::write(&config, "[ddf]\ndirs = 7\n").unwrap();
    assert_eq!(
        reload(&daemon, dir.path(), 2),
        format!(
            "configuration refused, the running one stays; {} MO types (0 DDF files \
             refused); 0 bootstrap files applied, 0 refused, 0 unchanged",
            types + 1
        )
    );
    let log = daemon_log(dir.path());
    assert!(
        log.contains(&format!(
            "reload: configuration refused: {}: TOML parse error",
            config.display()
        )),
        "{log}"
    );
    assert_eq!(
        daemon.try_wait().unwrap(),
        None,
        "{}",
        daemon_log(dir.path())
    );
}
