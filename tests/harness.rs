//! The test harness itself, and omadmd's bus policy and polkit actions in it: a private
//! system bus and a real polkitd (`support::sysbus`), real clients (busctl, gdbus, pkcheck,
//! pkaction) running as real test users, and a zbus service standing in for omadmd. No
//! mocks.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use crate::support::sysbus::{KillOnDrop, SysBus, TestUser, show, test_user};

const ACTIONS: [&str; 6] = [
    "org.omadm.client1.read",
    "org.omadm.client1.write",
    "org.omadm.client1.watch",
    "org.omadm.client1.send-alert",
    "org.omadm.client1.start-session",
    "org.omadm.client1.manage",
];

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `RequestName(name, 0)` as `user`, on the host with busctl or in the namespace with gdbus.
fn request_name(bus: &SysBus, user: Option<&TestUser>, name: &str, in_ns: bool) -> Output {
    if in_ns {
        run(bus
            .command_in_namespace(user, "gdbus")
            .args(["call", "--system", "--dest", "org.freedesktop.DBus"])
            .args(["--object-path", "/org/freedesktop/DBus"])
            .args(["--method", "org.freedesktop.DBus.RequestName", name, "0"]))
    } else {
        run(bus
            .command(user, "busctl")
            .args(["call", "org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args(["org.freedesktop.DBus", "RequestName", "su", name, "0"]))
    }
}

/// `pkcheck` for process `pid` (as root, on the host): 0 authorized, 1 not authorized,
/// 2 needs authentication (challenge).
fn pkcheck(bus: &SysBus, action: &str, pid: u32, details: &[(&str, &str)]) -> i32 {
    let mut cmd = bus.command(None, "pkcheck");
    cmd.args(["--action-id", action, "--process", &pid.to_string()]);
    for (k, v) in details {
        cmd.args(["--detail", k, v]);
    }
    let out = run(&mut cmd);
    let code = out.status.code().unwrap_or(-1);
    assert!((0..=2).contains(&code), "pkcheck failed: {}", show(&out));
    code
}

/// A process of `user` that just lives (a polkit unix-process subject).
fn idle_process(bus: &SysBus, user: &TestUser) -> KillOnDrop {
    KillOnDrop::spawn(bus.command(Some(user), "sleep").arg("120"))
}

#[test]
fn bus_runs_with_our_policy_and_only_root_owns_the_name() {
    let bus = SysBus::start();
    let user = test_user("omadmd-t-harness");

    // Our policy file is in the bus's config dir, and the bus answers.
    let installed = std::fs::read(bus.dir().join("bus.d/org.omadm.Client1.conf")).unwrap();
    assert_eq!(
        installed,
        std::fs::read("dbus/org.omadm.Client1.conf").unwrap()
    );
    let out = run(bus
        .command(None, "busctl")
        .args(["call", "org.freedesktop.DBus", "/org/freedesktop/DBus"])
        .args(["org.freedesktop.DBus", "GetId"]));
    assert!(out.status.success(), "bus does not answer: {}", show(&out));

    for in_ns in [false, true] {
        let out = request_name(&bus, Some(&user), "org.omadm.Client1", in_ns);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && (err.contains("Access denied") || err.contains("AccessDenied")),
            "non-root could own org.omadm.Client1 (namespace: {in_ns}): {}",
            show(&out)
        );
        // root: 1 = DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER (released when the client exits)
        let out = request_name(&bus, None, "org.omadm.Client1", in_ns);
        let reply = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && (reply.trim() == "u 1" || reply.trim() == "(uint32 1,)"),
            "root could not own org.omadm.Client1 (namespace: {in_ns}): {}",
            show(&out)
        );
    }
    // The policy is specific: a non-root user still may not own other names.
    let out = request_name(&bus, Some(&user), "org.omadm.Client1.Other", false);
    assert!(!out.status.success(), "{}", show(&out));
}

#[test]
fn bus_policy_lets_root_call_exec_handlers_only() {
    let bus = SysBus::start();
    let user = test_user("omadmd-t-harness");
    // A client of the test user that holds a connection (and answers unknown methods).
    let client = KillOnDrop::spawn(
        bus.command(Some(&user), "gdbus")
            .args(["monitor", "--system", "--dest", "org.freedesktop.DBus"])
            .stdout(Stdio::null()),
    );
    let name = bus.unique_name_of(client.id());
    // gdbus prints the D-Bus error name.
    let call = |iface: &str| {
        run(bus
            .command(None, "gdbus")
            .args(["call", "--system", "--timeout=5", "--dest", &name])
            .args(["--object-path", "/org/omadm/Test", "--method"])
            .arg(format!("{iface}.Execute"))
            .args(["urn:oma:mo:moid:1.0/x/Node", ""]))
    };
    // Delivered: the client answers itself that it has no such object (UnknownMethod) ...
    let out = call("org.omadm.Client1.ExecHandler");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org.freedesktop.DBus.Error.UnknownMethod: Object does not exist"),
        "root's ExecHandler call was not delivered: {}",
        show(&out)
    );
    // ... while any other method call to a plain client is refused by the system bus.
    let out = call("org.omadm.Client1.Other");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        show(&out)
    );
}

#[test]
fn polkit_knows_our_six_actions() {
    let bus = SysBus::start();
    // The policy file declares exactly the six actions of ARCHITECTURE.md.
    let policy = std::fs::read_to_string("dbus/org.omadm.client1.policy").unwrap();
    let mut declared: Vec<&str> = policy
        .split("<action id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    declared.sort();
    let mut expected = ACTIONS.to_vec();
    expected.sort();
    assert_eq!(declared, expected);

    // (any, inactive, active)
    let open = ("yes", "yes", "yes");
    let admin = ("auth_admin_keep", "auth_admin_keep", "auth_admin_keep");
    let defaults = [open, admin, open, admin, admin, admin];
    for (action, (any, inactive, active)) in ACTIONS.iter().zip(defaults) {
        let out = run(bus
            .command(None, "pkaction")
            .args(["--verbose", "--action-id", action]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "polkit does not know {action}: {}",
            show(&out)
        );
        for (key, want) in [
            ("implicit any:", any),
            ("implicit inactive:", inactive),
            ("implicit active:", active),
        ] {
            let got = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(str::trim);
            assert_eq!(got, Some(want), "{action} {key}\n{text}");
        }
        let imply = text.lines().any(|l| l.contains("policykit.imply"));
        assert_eq!(imply, *action == "org.omadm.client1.manage", "{text}");
    }
    let out = run(bus
        .command(None, "pkaction")
        .args(["--action-id", "org.omadm.client1.nonesuch"]));
    assert!(!out.status.success(), "{}", show(&out));
}

#[test]
fn polkit_rules_take_effect_for_a_test_user() {
    let bus = SysBus::start();
    let alice = test_user("omadmd-t-alice");
    let bob = test_user("omadmd-t-bob");
    let a = idle_process(&bus, &alice);
    let b = idle_process(&bus, &bob);
    let (a, b) = (a.id(), b.id());
    let write = "org.omadm.client1.write";
    let read = "org.omadm.client1.read";

    // Defaults (no logind here, so allow_any): read yes, write after an administrator
    // authenticates (2: a challenge, and no agent to ask).
    assert_eq!(pkcheck(&bus, read, a, &[]), 0);
    assert_eq!(pkcheck(&bus, write, a, &[]), 2);
    assert_eq!(pkcheck(&bus, write, b, &[]), 2);

    let t = Instant::now();
    bus.add_polkit_rules(
        "60-omadmd-test-users",
        r#"polkit.addRule(function(action, subject) {
            if (action.id == "org.omadm.client1.write" && subject.user == "omadmd-t-alice")
                return polkit.Result.YES;
            if (action.id == "org.omadm.client1.read" && subject.user == "omadmd-t-bob")
                return polkit.Result.NO;
        });"#,
    );
    eprintln!("rules reload took {:?}", t.elapsed());
    assert_eq!(pkcheck(&bus, write, a, &[]), 0, "rule YES for alice");
    assert_eq!(pkcheck(&bus, write, b, &[]), 2);
    assert_eq!(pkcheck(&bus, read, a, &[]), 0);
    assert_eq!(pkcheck(&bus, read, b, &[]), 1, "rule NO for bob");

    // manage implies the others: a rule for manage lets bob start sessions (and read again,
    // although the read rule says no: imply is consulted when the action itself is denied).
    let start = "org.omadm.client1.start-session";
    assert_eq!(pkcheck(&bus, start, b, &[]), 2);
    bus.add_polkit_rules(
        "61-omadmd-test-manage.rules",
        r#"polkit.addRule(function(action, subject) {
            if (action.id == "org.omadm.client1.manage" && subject.user == "omadmd-t-bob")
                return polkit.Result.YES;
        });"#,
    );
    assert_eq!(
        pkcheck(&bus, start, b, &[]),
        0,
        "manage implies start-session"
    );
    assert_eq!(pkcheck(&bus, start, a, &[]), 2);
    assert_eq!(pkcheck(&bus, read, b, &[]), 0, "manage implies read");
}

#[test]
fn example_app_rule_admits_only_its_app() {
    let bus = SysBus::start();
    let user = test_user("omadmd-t-harness");
    let p = idle_process(&bus, &user);
    let pid = p.id();
    let rules = std::fs::read_to_string("dbus/rules.d/50-omadmd-example-app.rules").unwrap();
    bus.add_polkit_rules("50-omadmd-example-app.rules", &rules);

    let weather = [
        ("app_id", "org.example.Weather"),
        ("client_uri", "urn:oma:mo:ext-example-weather:1.0//City"),
        ("moid", "urn:oma:mo:ext-example-weather:1.0"),
    ];
    let other = [("app_id", "org.example.Other")];
    for action in ACTIONS {
        let open = matches!(action, "org.omadm.client1.read" | "org.omadm.client1.watch");
        let app_may = open || action == "org.omadm.client1.write";
        // Not let in by the rule: the default, an administrator's authentication (2).
        assert_eq!(
            pkcheck(&bus, action, pid, &weather),
            if app_may { 0 } else { 2 },
            "{action}"
        );
        assert_eq!(
            pkcheck(&bus, action, pid, &other),
            if open { 0 } else { 2 },
            "{action}"
        );
    }
}

/// Stands in for omadmd: checks polkit for the sender of each call, as the daemon does
/// (a `system-bus-name` subject that polkitd resolves through the bus).
struct Probe;

#[zbus::interface(name = "org.omadm.HarnessProbe")]
impl Probe {
    /// (authorized, challenge) for the caller and `action`, with `app_id` as a detail.
    async fn check(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        action: &str,
        app_id: &str,
    ) -> zbus::fdo::Result<(bool, bool)> {
        let subject = Subject::new_for_message_header(&header)
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        let authority = AuthorityProxy::new(conn).await?;
        let details = HashMap::from([("app_id", app_id)]);
        let flags = CheckAuthorizationFlags::empty();
        let r = authority
            .check_authorization(&subject, action, &details, flags, "")
            .await?;
        Ok((r.is_authorized, r.is_challenge))
    }
}

#[test]
fn polkit_resolves_bus_callers_on_the_host_and_in_the_namespace() {
    let bus = SysBus::start();
    let alice = test_user("omadmd-t-alice");
    let bob = test_user("omadmd-t-bob");
    bus.add_polkit_rules(
        "60-omadmd-test-alice",
        r#"polkit.addRule(function(action, subject) {
            if (action.id == "org.omadm.client1.write" && subject.user == "omadmd-t-alice")
                return polkit.Result.YES;
        });"#,
    );

    // The "daemon": this (root) test process on the host, connected by address.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let conn = rt
        .block_on(
            zbus::connection::Builder::address(bus.address())
                .name("org.omadm.Client1")
                .serve_at("/org/omadm/Client1", Probe)
                .build(),
        )
        .unwrap_or_else(|e| panic!("zbus service: {e}\n{}", bus.logs()));
    assert!(bus.wait_for_name("org.omadm.Client1", Duration::from_secs(5)));

    // Clients (busctl = sd-bus, gdbus = GDBus) as alice, bob and root, on the host and in the
    // namespace: everyone may call (bus policy), polkit decides per caller.
    let write = "org.omadm.client1.write";
    for in_ns in [false, true] {
        for tool in ["busctl", "gdbus"] {
            for (user, want) in [(Some(&alice), true), (Some(&bob), false), (None, true)] {
                let mut cmd = if in_ns {
                    bus.command_in_namespace(user, tool)
                } else {
                    bus.command(user, tool)
                };
                if tool == "busctl" {
                    cmd.args(["call", "org.omadm.Client1", "/org/omadm/Client1"])
                        .args(["org.omadm.HarnessProbe", "Check", "ss", write, "x"]);
                } else {
                    cmd.args(["call", "--system", "--dest", "org.omadm.Client1"])
                        .args(["--object-path", "/org/omadm/Client1"])
                        .args(["--method", "org.omadm.HarnessProbe.Check", write, "x"]);
                }
                let out = run(&mut cmd);
                let reply = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                let expect = match (tool, want) {
                    ("busctl", true) => "bb true false",
                    // bob: the default, a challenge (an administrator may authenticate)
                    ("busctl", false) => "bb false true",
                    (_, true) => "(true, false)",
                    (_, false) => "(false, true)",
                };
                let who = user.map_or("root", |u| u.name.as_str());
                assert_eq!(
                    reply,
                    expect,
                    "{tool} as {who} (namespace: {in_ns}): {}",
                    show(&out)
                );
            }
        }
    }
    rt.block_on(async { drop(conn) });
}

#[test]
fn stop_leaves_nothing_behind() {
    let bus = SysBus::start();
    let dir = bus.dir().to_owned();
    let pids: Vec<u32> = std::fs::read_to_string(dir.join("pids"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", pids[0])).unwrap();
    assert!(pids.len() >= 3, "holder, dbus, polkitd, watchdog: {pids:?}");
    // Something a test forgot inside the namespace.
    let user = test_user("omadmd-t-harness");
    let mut stray = KillOnDrop::spawn(bus.command_in_namespace(Some(&user), "sleep").arg("300"));
    let t = Instant::now();
    drop(bus);
    eprintln!("stop took {:?}", t.elapsed());
    let status = stray.try_wait().unwrap();
    assert!(
        status.is_some(),
        "a process left in the namespace survived stop"
    );

    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        })
    };
    for pid in pids.iter().copied() {
        assert!(!alive(pid), "process {pid} survived stop");
    }
    // No process left in the namespace (so it is gone with its mounts), the dir is
    // removed, and no mount on the host refers to it.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|l| l == ns) {
            assert!(!alive(pid), "process {pid} still in the harness namespace");
        }
    }
    if std::env::var_os("OMADMD_KEEP_HARNESS").is_none() {
        assert!(!dir.exists(), "{} not removed", dir.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "mounts left on the host:\n{mounts}"
    );
}
