//! omadmd's D-Bus service on a real system bus (our bus policy), with a real polkitd (our
//! actions), callers running as separate Unix users and as separate apps (system services:
//! processes in a `system.slice/<app>.service` cgroup, see `support::unit`).

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::daemon::{Daemon, call, call_err, call_ok, call_with};
use crate::support::sysbus::{SysBus, TestUser, test_user};
use crate::support::unit::SystemUnit;

const SETTINGS: &str = "urn:oma:mo:ext-example-weather:1.0";

fn quoted(s: &str) -> String {
    format!("'{s}'")
}

#[test]
fn introspection_matches_the_contract() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let out = bus
        .command(None, "gdbus")
        .args([
            "introspect",
            "--system",
            "--xml",
            "--dest",
            "org.omadm.Client1",
            "--object-path",
            "/org/omadm/Client1",
        ])
        .output()
        .expect("gdbus introspect");
    assert!(
        out.status.success(),
        "{}",
        crate::support::sysbus::show(&out)
    );
    let live = String::from_utf8_lossy(&out.stdout).into_owned();
    let contract = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.omadm.Client1.xml"),
    )
    .unwrap();
    let interface = |doc: &str| -> BTreeSet<String> {
        let start = doc
            .find("<interface name=\"org.omadm.Client1\"")
            .expect("interface present");
        let end = start + doc[start..].find("</interface>").expect("interface closed");
        signature_lines(&doc[start..end])
    };
    let (live, expected) = (interface(&live), interface(&contract));
    assert!(
        expected.len() > 30,
        "the contract parsed into too few members: {expected:?}"
    );
    assert!(
        expected.contains("method name=ChangesSince / arg direction=out name=current_seq type=t"),
        "{expected:?}"
    );
    assert_eq!(live, expected);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("<interface name=\"org.freedesktop.DBus.ObjectManager\">"));
}

/// The method, signal, property and arg elements of an interface as normalized lines
/// (attributes sorted, `direction="in"` made explicit on method args).
pub(crate) fn signature_lines(xml: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut member = String::new();
    for tag in xml.split('<').skip(1) {
        let tag = tag
            .split('>')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .trim();
        let mut parts = tag.splitn(2, char::is_whitespace);
        let kind = parts.next().unwrap_or_default();
        let mut attrs: Vec<String> = parts
            .next()
            .unwrap_or_default()
            .split('"')
            .collect::<Vec<_>>()
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| format!("{}{}", c[0].trim(), c[1]))
            .collect();
        match kind {
            "method" | "signal" | "property" => {
                attrs.sort();
                member = format!("{kind} {}", attrs.join(" "));
                out.insert(member.clone());
            }
            "arg" => {
                if member.starts_with("method")
                    && !attrs.iter().any(|a| a.starts_with("direction="))
                {
                    attrs.push("direction=in".into());
                }
                attrs.sort();
                out.insert(format!("{member} / arg {}", attrs.join(" ")));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn polkit_and_the_mo_access_model_decide_together() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let (alice, bob) = (test_user("omadm-t-alice"), test_user("omadm-t-bob"));
    let app_a = SystemUnit::new("omadmd-t-app-a");
    let app_b = SystemUnit::new("omadmd-t-app-b");
    // App A runs as alice, app B as bob.
    let _main_a = app_a.start_main(&bus, Some(&alice));
    let _main_b = app_b.start_main(&bus, Some(&bob));
    let as_app = |user: &TestUser, app: &SystemUnit, method: &str, args: &[&str]| {
        let mut gdbus = bus.command(Some(user), "gdbus");
        app.contain(&mut gdbus);
        call_with(gdbus, method, args)
    };
    let err_name = |out: &std::process::Output| {
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "unexpected success: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        e
    };
    let modata = quoted(r#"{"Weather": {"Server": "https://weather.example", "Units": "metric"}}"#);

    // Write is not for everyone: polkit says no to an app without a rule.
    let e = err_name(&as_app(
        &alice,
        &app_a,
        "CreateInstance",
        &[&quoted(SETTINGS), &modata],
    ));
    assert!(
        e.contains("Error.AccessDenied") && e.contains("org.omadm.client1.write"),
        "{e}"
    );

    // A rule for app A's id opens write (and only for app A).
    let rule = format!(
        "polkit.addRule(function(action, subject) {{\n  if (action.id == \"org.omadm.client1.write\" && action.lookup(\"app_id\") == \"{}\") return polkit.Result.YES;\n}});\n",
        app_a.name()
    );
    bus.add_polkit_rules("60-omadmd-test.rules", &rule);
    let out = as_app(
        &alice,
        &app_a,
        "CreateInstance",
        &[&quoted(SETTINGS), &modata],
    );
    assert!(
        out.status.success(),
        "{}",
        crate::support::sysbus::show(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let root = stdout.split('\'').nth(1).expect("a ClientURI").to_owned();
    let server = format!("{root}Server");
    assert!(
        daemon.log().contains(&format!("created {root}")),
        "{}",
        daemon.log()
    );

    // The creator owns it: reads and writes.
    let out = as_app(
        &alice,
        &app_a,
        "Set",
        &[&quoted(&server), "''", "<'https://new.example'>"],
    );
    assert!(
        out.status.success(),
        "{}",
        crate::support::sysbus::show(&out)
    );
    let out = as_app(&alice, &app_a, "Get", &[&quoted(&server)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("https://new.example"));

    // App B: polkit lets it read, the MO access model does not (no grant), so to B the
    // node does not exist.
    let e = err_name(&as_app(&bob, &app_b, "Get", &[&quoted(&server)]));
    assert!(e.contains("Error.NotFound"), "{e}");
    // Bob's process in app A's unit is not app A, which runs as alice: it is bob.
    let e = err_name(&as_app(&bob, &app_a, "Get", &[&quoted(&server)]));
    assert!(e.contains("Error.NotFound"), "{e}");

    // Granting is write plus Delegate on the instance: the owner (whom polkit lets write)
    // may; B, which neither owns it nor may write, may not; root may on any instance.
    let grant_args = [
        quoted(&root),
        quoted(&app_b.principal()),
        "['Read']".to_owned(),
    ];
    let grant_args: Vec<&str> = grant_args.iter().map(String::as_str).collect();
    let e = err_name(&as_app(&bob, &app_b, "Grant", &grant_args));
    assert!(e.contains("Error.AccessDenied"), "{e}");
    let out = as_app(&alice, &app_a, "Grant", &grant_args);
    assert!(
        out.status.success(),
        "{}",
        crate::support::sysbus::show(&out)
    );
    call_ok(&bus, None, "Grant", &grant_args);
    let out = as_app(&alice, &app_a, "ListGrants", &[&quoted(&root)]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&format!(
            "('{}', ['Read', 'Write', 'Exec', 'Delegate'])",
            app_a.principal()
        )) && listed.contains(&format!("('{}', ['Read'])", app_b.principal())),
        "{}",
        crate::support::sysbus::show(&out)
    );
    let out = as_app(&bob, &app_b, "Get", &[&quoted(&server)]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("https://new.example"),
        "{}",
        crate::support::sysbus::show(&out)
    );
    // Read was granted, not Write; and polkit does not let B write anyway.
    let e = err_name(&as_app(
        &bob,
        &app_b,
        "Set",
        &[&quoted(&server), "''", "<'x'>"],
    ));
    assert!(e.contains("Error.AccessDenied"), "{e}");

    // Revoking takes effect at once, although polkit's read answer for B is cached.
    call_ok(
        &bus,
        None,
        "Revoke",
        &[&quoted(&root), &quoted(&app_b.principal())],
    );
    let e = err_name(&as_app(&bob, &app_b, "Get", &[&quoted(&server)]));
    assert!(e.contains("Error.NotFound"), "{e}");

    // Polkit does not let bob write, so no Grant; once it lets him write and manage, he
    // grants on an instance he holds no right on (not even sees), as the administrator.
    let e = err_name(&as_app(&bob, &app_b, "Grant", &grant_args));
    assert!(e.contains("Error.AccessDenied"), "{e}");
    bus.allow("61-omadmd-test-manage", &[&bob], &["write", "manage"]);
    let out = as_app(&bob, &app_b, "Grant", &grant_args);
    assert!(
        out.status.success(),
        "{}",
        crate::support::sysbus::show(&out)
    );
    assert!(
        daemon.log().contains("managing grants as an administrator"),
        "{}",
        daemon.log()
    );
    let out = as_app(&bob, &app_b, "Get", &[&quoted(&server)]);
    assert!(
        out.status.success(),
        "{}",
        crate::support::sysbus::show(&out)
    );
}

#[test]
fn errors_carry_our_names() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    call_err(
        &bus,
        None,
        "Get",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//Nope'"],
        "NotFound",
    );
    call_err(
        &bus,
        None,
        "Get",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//%zz'"],
        "InvalidUri",
    );
    call_err(&bus, None, "Get", &["'not-a-uri'"], "InvalidUri");
    call_err(
        &bus,
        None,
        "Set",
        &["'urn:x:1.0/*/A'", "''", "<'v'>"],
        "InvalidUri",
    );
    call_err(
        &bus,
        None,
        "Set",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//DevID'", "'int'", "<'x'>"],
        "InvalidValue",
    );
    call_err(
        &bus,
        None,
        "Delete",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//'"],
        "NotAllowed",
    );
    call_err(
        &bus,
        None,
        "CreateInstance",
        &["'urn:x:1.0'", "'[1]'"],
        "InvalidValue",
    );
    call_err(&bus, None, "Unwatch", &["uint64 77"], "NotFound");
    call_err(
        &bus,
        None,
        "Grant",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//'", "'root'", "['Read']"],
        "InvalidValue",
    );
}

#[test]
fn devinfo_is_readable_by_every_app_and_secrets_by_nobody() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let carol = test_user("omadm-t-carol");
    let out = call(
        &bus,
        Some(&carol),
        "Get",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//DevID'"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("urn:uuid:"),
        "{}",
        crate::support::sysbus::show(&out)
    );
    let props = bus
        .command(Some(&carol), "busctl")
        .args([
            "get-property",
            "org.omadm.Client1",
            "/org/omadm/Client1",
            "org.omadm.Client1",
            "DevId",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&props.stdout).contains(text.split('\'').nth(5).unwrap_or("?"))
    );

    let account = r#"{"DMAcc": {"SrvID": "dev", "SrvURI": "https://localhost/dm", "Perm": {}, "Auth": {"Trsp": {"Data": "u", "Secret": "hunter2"}}}}"#;
    let root = call_ok(
        &bus,
        None,
        "CreateInstance",
        &["'urn:oma:mo:oma-dm-dmacc:1.2'", &quoted(account)],
    );
    let root = root.split('\'').nth(1).unwrap().to_owned();
    let json = call_ok(&bus, None, "GetJson", &[&quoted(&root)]);
    assert!(
        json.contains("\"u\"") && !json.contains("hunter2") && !json.contains("Secret"),
        "{json}"
    );
    call_err(
        &bus,
        None,
        "Get",
        &[&quoted(&format!("{root}Auth/Trsp/Secret"))],
        "NotFound",
    );
    call_err(&bus, Some(&carol), "GetJson", &[&quoted(&root)], "NotFound");
}

#[test]
fn without_polkit_only_root_gets_through() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let dave = test_user("omadm-t-dave");
    call_ok(
        &bus,
        Some(&dave),
        "Get",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//Man'"],
    );
    let polkitd = harness_pid(&bus, "polkitd");
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &polkitd])
            .status()
            .unwrap()
            .success()
    );
    let e = call_err(
        &bus,
        Some(&dave),
        "Get",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//Mod'"],
        "AccessDenied",
    );
    assert!(e.contains("polkit unreachable"), "{e}");
    call_ok(&bus, None, "Get", &["'urn:oma:mo:oma-dm-devinfo:1.0//Mod'"]);
}

#[test]
fn sigterm_stops_cleanly_and_data_survives() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let root = call_ok(
        &bus,
        None,
        "CreateInstance",
        &[
            &quoted(SETTINGS),
            "'{\"Weather\": {\"Units\": \"metric\"}}'",
        ],
    );
    let root = root.split('\'').nth(1).unwrap().to_owned();
    let before = call_ok(
        &bus,
        None,
        "GetJson",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//'"],
    );
    let log = daemon.log();
    let (clean, state) = daemon.stop();
    assert!(clean, "omadmd exited with failure:\n{log}");
    let restarted = bus
        .command(None, env!("CARGO_BIN_EXE_omadmd"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--config", "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut restarted = crate::support::sysbus::KillOnDrop(restarted);
    assert!(bus.wait_for_name("org.omadm.Client1", std::time::Duration::from_secs(20)));
    let out = call_ok(&bus, None, "Get", &[&quoted(&format!("{root}Units"))]);
    assert!(out.contains("metric"), "{out}");
    let after = call_ok(
        &bus,
        None,
        "GetJson",
        &["'urn:oma:mo:oma-dm-devinfo:1.0//'"],
    );
    assert_eq!(
        after, before,
        "DevInfo and its cache validator are stable across restarts"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &restarted.id().to_string()])
        .status()
        .unwrap();
    assert!(restarted.wait().unwrap().success());
}

/// The pid the harness recorded for one of its processes (`dbus`, `polkitd`).
fn harness_pid(bus: &SysBus, name: &str) -> String {
    let pids = std::fs::read_to_string(bus.dir().join("pids")).unwrap();
    pids.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no {name} in the harness pids:\n{pids}"))
}

#[test]
fn the_daemon_exits_with_failure_when_the_bus_goes_away() {
    let bus = SysBus::start();
    let mut daemon = Daemon::start(&bus);
    let dbus_daemon = harness_pid(&bus, "dbus");
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &dbus_daemon])
            .status()
            .unwrap()
            .success()
    );
    let status = daemon
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("omadmd exits when its bus is gone");
    assert!(
        !status.success(),
        "exit status {status} should ask systemd to restart it"
    );
    assert!(
        daemon.log().contains("lost the connection to the bus"),
        "{}",
        daemon.log()
    );
}

/// Use case B.2: an installed app reads the settings a Management Authority provisioned for
/// it, is told when they change, and is refused what it was not granted; another app never
/// sees those notifications, even with a broad match rule or by trying to eavesdrop.
#[test]
fn use_case_b2_an_app_reads_and_watches_its_settings() {
    use crate::support::sysbus::{KillOnDrop, wait_until};
    use std::process::Stdio;
    use std::time::Duration;

    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let (alice, bob) = (test_user("omadm-t-alice"), test_user("omadm-t-bob"));
    let app_a = SystemUnit::new("omadmd-t-weather");
    let ctl = |user| {
        let mut cmd = bus.command(Some(user), env!("CARGO_BIN_EXE_omadmctl"));
        app_a.contain(&mut cmd);
        cmd
    };

    // The MA provisions settings for app A (here: the admin does, as a session would).
    let created = call_ok(
        &bus,
        None,
        "CreateInstance",
        &[
            &quoted(SETTINGS),
            "'{\"Weather\": {\"Server\": \"https://weather.example\"}}'",
        ],
    );
    let root = created.split('\'').nth(1).unwrap().to_owned();
    let other = call_ok(
        &bus,
        None,
        "CreateInstance",
        &[
            &quoted(SETTINGS),
            "'{\"Weather\": {\"Server\": \"https://private.example\"}}'",
        ],
    );
    let other = other.split('\'').nth(1).unwrap().to_owned();
    call_ok(
        &bus,
        None,
        "Grant",
        &[&quoted(&root), &quoted(&app_a.principal()), "['Read']"],
    );
    let server = format!("{root}Server");

    // App A reads its settings.
    let out = ctl(&alice)
        .args(["get", "--value", &server])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        crate::support::sysbus::show(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "https://weather.example"
    );

    // ... and does not see the instance it has no grant for (exit 4: NotFound).
    let out = ctl(&alice)
        .args(["get", &format!("{other}Server")])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        crate::support::sysbus::show(&out)
    );

    // App A watches; app B listens as broadly as the bus lets it.
    let logs = tempfile::tempdir().unwrap();
    let file = |name: &str| std::fs::File::create(logs.path().join(name)).unwrap();
    let read = |name: &str| std::fs::read_to_string(logs.path().join(name)).unwrap_or_default();
    let mut watch = KillOnDrop::spawn(
        ctl(&alice)
            .args(["watch", &root])
            .stdin(Stdio::null())
            .stdout(file("a.out"))
            .stderr(file("a.err")),
    );
    let _monitor = KillOnDrop::spawn(
        bus.command(Some(&bob), "gdbus")
            .args(["monitor", "--system", "--dest", "org.omadm.Client1"])
            .stdin(Stdio::null())
            .stdout(file("b-monitor.out"))
            .stderr(file("b-monitor.err")),
    );
    let _eavesdrop = KillOnDrop::spawn(
        bus.command(Some(&bob), "dbus-monitor")
            .args(["--system", "type='signal',interface='org.omadm.Client1'"])
            .stdin(Stdio::null())
            .stdout(file("b-eavesdrop.out"))
            .stderr(file("b-eavesdrop.err")),
    );
    assert!(
        wait_until(Duration::from_secs(10), || read("a.err")
            .contains("Watching")),
        "A's watch did not start ({:?}): {} / {}",
        watch.try_wait(),
        read("a.out"),
        read("a.err")
    );
    assert!(
        wait_until(Duration::from_secs(10), || read("b-monitor.out")
            .contains("is owned by")),
        "B's monitor is subscribed to omadmd's signals: {}",
        read("b-monitor.out")
    );

    // The MA replaces the value: A is told (no value in the signal), B sees nothing.
    call_ok(
        &bus,
        None,
        "Set",
        &[&quoted(&server), "''", "<'https://new.example'>"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || read("a.out")
            .contains("replaced")),
        "A got no Changed: {} / {}",
        read("a.out"),
        read("a.err")
    );
    let line = read("a.out");
    assert!(
        line.contains(&server) && !line.contains("new.example"),
        "{line}"
    );
    // Changes to an instance A may not read are not announced to A either.
    call_ok(
        &bus,
        None,
        "Set",
        &[&quoted(&format!("{other}Server")), "''", "<'x'>"],
    );
    call_ok(
        &bus,
        None,
        "Set",
        &[&quoted(&server), "''", "<'https://newer.example'>"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || read("a.out").lines().count()
            == 2),
        "{}",
        read("a.out")
    );
    assert!(!read("a.out").contains(&other), "{}", read("a.out"));
    std::thread::sleep(Duration::from_millis(300));
    for log in ["b-monitor.out", "b-eavesdrop.out"] {
        assert!(
            !read(log).contains("Changed"),
            "{log} saw A's signal:\n{}",
            read(log)
        );
    }

    // A reads the new value.
    let out = ctl(&alice)
        .args(["get", "--value", &server])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "https://newer.example"
    );
}

#[test]
fn each_dm_account_is_a_server_object() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let account = r#"{"DMAcc": {"SrvID": "ma.one", "SrvURI": "https://127.0.0.1:9/dm", "Name": "MA one",
        "Perm": {"p": {"MOID": "urn:oma:mo:ext-example-weather:1.0"}}, "Ext": {"Priority": 7},
        "Auth": {"Trsp": {"Data": "u", "Secret": "hunter2"}}}}"#;
    let root = call_ok(
        &bus,
        None,
        "CreateInstance",
        &["'urn:oma:mo:oma-dm-dmacc:1.2'", &quoted(account)],
    );
    let root = root.split('\'').nth(1).unwrap().to_owned();
    let path = "/org/omadm/Client1/server/ma_2eone";
    let prop = |name: &str| {
        let out = bus
            .command(None, "busctl")
            .args([
                "get-property",
                "org.omadm.Client1",
                path,
                "org.omadm.Client1.Server",
                name,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(crate::support::sysbus::wait_until(
        std::time::Duration::from_secs(5),
        || prop("ServerId") == "s \"ma.one\""
    ));
    assert_eq!(prop("Priority"), "x 7");
    assert_eq!(
        prop("PermittedMoids"),
        "as 1 \"urn:oma:mo:ext-example-weather:1.0\""
    );
    assert_eq!(prop("LastSession"), "t 0");
    let listed = bus
        .command(None, "busctl")
        .args([
            "get-property",
            "org.omadm.Client1",
            "/org/omadm/Client1",
            "org.omadm.Client1",
            "Servers",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(path));

    // The object's introspection is the contract; secrets appear nowhere.
    let out = bus
        .command(None, "gdbus")
        .args([
            "introspect",
            "--system",
            "--xml",
            "--dest",
            "org.omadm.Client1",
            "--object-path",
            path,
        ])
        .output()
        .unwrap();
    let live = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!live.contains("hunter2"));
    let contract = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.omadm.Client1.Server.xml"),
    )
    .unwrap();
    let iface = |doc: &str| {
        let start = doc
            .find("<interface name=\"org.omadm.Client1.Server\"")
            .expect("interface present");
        let end = start + doc[start..].find("</interface>").expect("interface closed");
        signature_lines(&doc[start..end])
    };
    assert_eq!(iface(&live), iface(&contract));

    // Starting a session there is the start-session action: not for a plain user.
    let frank = test_user("omadm-t-frank");
    let out = bus
        .command(Some(&frank), "gdbus")
        .args([
            "call",
            "--system",
            "--dest",
            "org.omadm.Client1",
            "--object-path",
            path,
        ])
        .args(["--method", "org.omadm.Client1.Server.StartSession", "''"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error.AccessDenied") && err.contains("start-session"),
        "{err}"
    );

    // Deleting the account removes the object.
    call_ok(&bus, None, "Delete", &[&quoted(&root)]);
    assert!(crate::support::sysbus::wait_until(
        std::time::Duration::from_secs(5),
        || prop("ServerId").is_empty()
    ));
}

#[test]
fn a_second_daemon_or_a_missing_bus_is_a_clear_failure() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let state = tempfile::tempdir().unwrap();
    // `timeout` guards the test: a daemon that queued for the name would never exit.
    let second = bus
        .command(None, "timeout")
        .args(["20", env!("CARGO_BIN_EXE_omadmd")])
        .arg("--state-dir")
        .arg(state.path())
        .args(["--config", "/dev/null"])
        .output()
        .unwrap();
    assert_ne!(
        second.status.code(),
        Some(124),
        "the second omadmd waited for the name"
    );
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("cannot own org.omadm.Client1"), "{err}");

    let nobus = std::process::Command::new(env!("CARGO_BIN_EXE_omadmd"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--config", "/dev/null"])
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}/no-such-socket", state.path().display()),
        )
        .output()
        .unwrap();
    assert!(!nobus.status.success());
    let err = String::from_utf8_lossy(&nobus.stderr);
    assert!(err.contains("cannot connect to the System bus"), "{err}");
}

/// A watch on an instance its caller may not read hears nothing of it — no change, and not
/// its deletion — exactly like a watch on an instance that does not exist; watchers that
/// could read it (its owner, a grantee) hear of both.
#[test]
fn a_watch_on_an_unreadable_instance_hears_nothing_not_even_its_end() {
    use crate::support::client::{self, Step};
    use crate::support::sysbus::{KillOnDrop, wait_until};
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    const SECRET: &str = "urn:x:secret:1.0";
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let (alice, bob, frank) = (
        test_user("omadm-t-alice"),
        test_user("omadm-t-bob"),
        test_user("omadm-t-frank"),
    );
    bus.add_polkit_rules(
        "60-omadmd-write",
        &format!(
            r#"polkit.addRule(function(action, subject) {{
                if (action.id == "org.omadm.client1.write" && subject.user == "{}")
                    return polkit.Result.YES;
            }});"#,
            alice.name
        ),
    );
    let created = |out: String| out.split('\'').nth(1).expect("a ClientURI").to_owned();
    // Alice's secret, which frank may read; bob's own instance (the admin's, granted to him).
    let secret = created(call_ok(
        &bus,
        Some(&alice),
        "CreateInstance",
        &[&quoted(SECRET), "'{\"Secret\": {\"Pin\": \"1234\"}}'"],
    ));
    let mine = created(call_ok(
        &bus,
        None,
        "CreateInstance",
        &[&quoted(SECRET), "'{\"Secret\": {\"Pin\": \"0\"}}'"],
    ));
    for (instance, user) in [(&secret, &frank), (&mine, &bob)] {
        call_ok(
            &bus,
            None,
            "Grant",
            &[
                &quoted(instance),
                &quoted(&format!("uid:{}", user.uid)),
                "['Read']",
            ],
        );
    }
    let (secret_pin, mine_pin) = (format!("{secret}Pin"), format!("{mine}Pin"));
    let missing = format!("{SECRET}/999/");
    let every = format!("{SECRET}/*/");

    // Each watcher: one connection, its watches, then every Changed until the last one due.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = |name: &str| scratch.path().join(name);
    let watch = |uri: &str| Step::Watch(uri.to_owned());
    let until = |uri: &str, count| Step::Changes {
        uri: uri.to_owned(),
        count,
    };
    let watchers = [
        (
            &alice,
            vec![watch(&secret), watch(&every), Step::Touch(file("alice"))],
            until(&secret, 2),
        ),
        (
            &frank,
            vec![watch(&secret), Step::Touch(file("frank"))],
            until(&secret, 1),
        ),
        (
            &bob,
            vec![
                watch(&secret),
                watch(&missing),
                watch(&every),
                watch(&mine),
                Step::Touch(file("bob")),
            ],
            until(&mine_pin, 2),
        ),
    ];
    let _clients: Vec<KillOnDrop> = watchers
        .iter()
        .map(|(user, steps, until)| {
            let mut steps = steps.clone();
            steps.push(until.clone());
            KillOnDrop::spawn(&mut client::command(
                &bus,
                Some(user),
                &steps,
                &file(&format!("{}.out", user.name)),
            ))
        })
        .collect();
    for (user, _, _) in &watchers {
        let ready = file(&user.name.replace("omadm-t-", ""));
        assert!(
            wait_until(Duration::from_secs(30), || ready.exists()),
            "{} did not get to watch",
            user.name
        );
    }

    // Alice changes her secret, the admin deletes it, and then bob's own instance changes:
    // bob hears of that last change only after anything about the secret sent to him.
    call_ok(
        &bus,
        Some(&alice),
        "Set",
        &[&quoted(&secret_pin), "''", "<'4321'>"],
    );
    call_ok(&bus, None, "Delete", &[&quoted(&secret)]);
    call_ok(&bus, None, "Set", &[&quoted(&mine_pin), "''", "<'1'>"]);

    // Watch ids and the Changed lines, sorted (one change reaches a caller's watches in no
    // set order).
    let heard = |user: &TestUser, watches: usize| {
        let outcome = client::outcomes(&file(&format!("{}.out", user.name)));
        let ids: Vec<String> = outcome[..watches]
            .iter()
            .map(|o| {
                o.strip_prefix("ok ")
                    .unwrap_or_else(|| panic!("{}: {outcome:?}", user.name))
                    .to_owned()
            })
            .collect();
        let mut changed = outcome[watches..].to_vec();
        changed.sort();
        (ids, changed)
    };
    let line = |id: &str, uri: &str, change: &str| format!("changed {id} {uri} {change}");
    let sorted = |mut lines: Vec<String>| {
        lines.sort();
        lines
    };

    let (ids, changed) = heard(&alice, 2);
    let mut expected = Vec::new();
    for id in &ids {
        expected.push(line(id, &secret_pin, "replaced"));
        expected.push(line(id, &secret, "deleted"));
    }
    assert_eq!(changed, sorted(expected), "alice");

    let (ids, changed) = heard(&frank, 1);
    let expected = vec![
        line(&ids[0], &secret_pin, "replaced"),
        line(&ids[0], &secret, "deleted"),
    ];
    assert_eq!(changed, sorted(expected), "frank");

    // Bob's watches on the secret and on a missing instance were accepted alike, and told
    // him nothing; his own instance's change reached his wildcard and his own watch.
    let (ids, changed) = heard(&bob, 4);
    let expected = vec![
        line(&ids[2], &mine_pin, "replaced"),
        line(&ids[3], &mine_pin, "replaced"),
    ];
    assert_eq!(changed, sorted(expected), "bob");
}
