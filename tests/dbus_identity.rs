//! Who omadmd takes a caller for, on a real system bus with a real polkitd and test users:
//! an app only where the platform names it — a process in a system service's cgroup
//! (`support::unit`) running as the service's main process does, a Flatpak sandbox the
//! caller could not have built itself — and every other caller its user, whatever binary it
//! runs, whichever unit runs it and whichever process its connection came from. Also the bounds a caller meets on the bus side: watches per connection, and the
//! servers' `PermittedMoids` for administrators only.
//!
//! A polkit rule logs, for every omadmd action, the subject's user and the `principal` and
//! `app_id` details omadmd passed, so the tests see exactly whom omadmd took a caller for.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::client::{self, Step};
use crate::support::daemon::{Daemon, call_ok, call_with, failed, ok};
use crate::support::sysbus::{KillOnDrop, SysBus, TestUser, show, test_user, wait_until};
use crate::support::unit::SystemUnit;

const SETTINGS: &str = "urn:oma:mo:ext-example-weather:1.0";
const DEVINFO_MAN: &str = "urn:oma:mo:oma-dm-devinfo:1.0//Man";

/// Logs who asked polkit about an omadmd action, and as whom omadmd took them.
const LOG_PRINCIPALS: &str = r#"polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.omadm.client1.") == 0)
        polkit.log("omadmd-id: user=" + subject.user + " principal=" + action.lookup("principal")
            + " app_id=[" + action.lookup("app_id") + "] action=" + action.id);
});"#;

/// Run by the other tests as a bus client of its own (see `support::client`).
#[test]
#[ignore = "a bus client process for the identity tests, which run it"]
fn client_process() {
    client::run();
}

fn quoted(s: &str) -> String {
    format!("'{s}'")
}

/// The `omadmd-id:` lines polkitd logged so far.
fn principals_seen(bus: &SysBus) -> String {
    std::fs::read_to_string(bus.dir().join("log/polkitd.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("omadmd-id: ").map(|(_, rest)| rest))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What polkit is told about `user` acting as `principal` (app id `app_id`) for `action`.
fn seen_as(user: &TestUser, principal: &str, app_id: &str, action: &str) -> String {
    format!(
        "user={} principal={principal} app_id=[{app_id}] action=org.omadm.client1.{action}",
        user.name
    )
}

/// The settings instance the admin provisions: (its root ClientURI, its `Server` leaf).
fn provision(bus: &SysBus) -> (String, String) {
    let created = call_ok(
        bus,
        None,
        "CreateInstance",
        &[
            &quoted(SETTINGS),
            "'{\"Weather\": {\"Server\": \"https://weather.example\"}}'",
        ],
    );
    let root = created.split('\'').nth(1).expect("a ClientURI").to_owned();
    let server = format!("{root}Server");
    (root, server)
}

/// The `Get` of `uri` answered exactly as for a node that does not exist: nodes a caller
/// may not read do not exist for it.
fn assert_not_found(out: &Output, uri: &str) {
    failed(out, "Get", &[uri], "NotFound");
}

/// A scratch directory every test user may write to.
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn an_app_is_its_unit_for_its_user_not_its_binary_nor_another_user() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let (alice, bob) = (test_user("omadm-t-alice"), test_user("omadm-t-bob"));
    let app = SystemUnit::new("omadmd-t-weather");
    // The service runs as alice (its `User=`).
    let _main = app.start_main(&bus, Some(&alice));
    let in_app = |user| {
        let mut gdbus = bus.command(Some(user), "gdbus");
        app.contain(&mut gdbus);
        gdbus
    };
    let outside = |user| bus.command(Some(user), "gdbus");
    bus.add_polkit_rules("60-omadmd-log", LOG_PRINCIPALS);
    // A rule keyed on app_id lets the app write; a user running the same binary is not it.
    bus.add_polkit_rules(
        "61-omadmd-app",
        &format!(
            r#"polkit.addRule(function(action, subject) {{
                if (action.id == "org.omadm.client1.write" && action.lookup("app_id") == "{}")
                    return polkit.Result.YES;
            }});"#,
            app.name()
        ),
    );
    let (settings, modata) = (
        quoted(SETTINGS),
        quoted(r#"{"Weather": {"Server": "https://weather.example"}}"#),
    );
    let create = [settings.as_str(), modata.as_str()];

    let created = ok(
        &call_with(in_app(&alice), "CreateInstance", &create),
        "CreateInstance",
        &create,
    );
    let server = format!("{}Server", created.split('\'').nth(1).expect("a ClientURI"));
    let get = [quoted(&server)];
    let get: Vec<&str> = get.iter().map(String::as_str).collect();

    let e = failed(
        &call_with(outside(&alice), "CreateInstance", &create),
        "CreateInstance",
        &create,
        "AccessDenied",
    );
    assert!(
        e.contains(&format!("uid:{} is not authorized", alice.uid)),
        "{e}"
    );
    // Neither alice nor bob outside the unit reads the app's instance, with the same binary.
    assert_not_found(&call_with(outside(&alice), "Get", &get), &server);
    assert_not_found(&call_with(outside(&bob), "Get", &get), &server);
    // Alice's process in the app's unit is the app.
    let out = ok(&call_with(in_app(&alice), "Get", &get), "Get", &get);
    assert!(out.contains("https://weather.example"), "{out}");
    // Bob's process in the app's unit runs the app's code for bob (as a user's cron job
    // runs in cron.service): it is bob, not the app.
    assert_not_found(&call_with(in_app(&bob), "Get", &get), &server);
    let why = format!(
        "runs as uid {} in {}, whose main process runs as uid {}",
        bob.uid,
        app.name(),
        alice.uid
    );
    assert!(daemon.log().contains(&why), "{}", daemon.log());

    let seen = principals_seen(&bus);
    for expected in [
        seen_as(&alice, &app.principal(), app.name(), "write"),
        seen_as(&alice, &format!("uid:{}", alice.uid), "", "write"),
        seen_as(&alice, &format!("uid:{}", alice.uid), "", "read"),
        seen_as(&alice, &app.principal(), app.name(), "read"),
        seen_as(&bob, &format!("uid:{}", bob.uid), "", "read"),
    ] {
        assert!(seen.contains(&expected), "no {expected:?} in:\n{seen}");
    }
    let bob_as_app = format!("user={} principal={}", bob.name, app.principal());
    assert!(!seen.contains(&bob_as_app), "{seen}");

    // uid:<n> is one user: a grant to alice's user is not bob's, nor the app's.
    let (root, own) = provision(&bus);
    let own = [quoted(&own)];
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    call_ok(
        &bus,
        None,
        "Grant",
        &[
            &quoted(&root),
            &quoted(&format!("uid:{}", alice.uid)),
            "['Read']",
        ],
    );
    ok(&call_with(outside(&alice), "Get", &own), "Get", &own);
    assert_not_found(&call_with(outside(&bob), "Get", &own), own[0]);
    assert_not_found(&call_with(in_app(&alice), "Get", &own), own[0]);
}

#[test]
fn a_users_job_in_a_service_running_as_root_is_its_user() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let alice = test_user("omadm-t-alice");
    // Like cron.service: its main process is root; a user's job runs in the unit as the user.
    let cron = SystemUnit::new("omadmd-t-cron");
    let _main = cron.start_main(&bus, None);
    bus.add_polkit_rules("60-omadmd-log", LOG_PRINCIPALS);
    let (root, server) = provision(&bus);
    call_ok(
        &bus,
        None,
        "Grant",
        &[&quoted(&root), &quoted(&cron.principal()), "['Read']"],
    );
    let get = [quoted(&server)];
    let get: Vec<&str> = get.iter().map(String::as_str).collect();

    let mut job = bus.command(Some(&alice), "gdbus");
    cron.contain(&mut job);
    assert_not_found(&call_with(job, "Get", &get), get[0]);
    let why = format!(
        "runs as uid {} in {}, whose main process runs as uid 0",
        alice.uid,
        cron.name()
    );
    assert!(daemon.log().contains(&why), "{}", daemon.log());
    let seen = principals_seen(&bus);
    let as_alice = seen_as(&alice, &format!("uid:{}", alice.uid), "", "read");
    assert!(seen.contains(&as_alice), "{seen}");
    assert!(!seen.contains(&cron.principal()), "{seen}");

    // The service itself (root) is the admin anyway.
    let mut service = bus.command(None, "gdbus");
    cron.contain(&mut service);
    ok(&call_with(service, "Get", &get), "Get", &get);
}

#[test]
fn a_connection_is_not_the_app_its_pid_later_belongs_to() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let alice = test_user("omadm-t-alice");
    let app = SystemUnit::new("omadmd-t-weather");
    bus.add_polkit_rules("60-omadmd-log", LOG_PRINCIPALS);
    let (root, server) = provision(&bus);
    call_ok(
        &bus,
        None,
        "Grant",
        &[&quoted(&root), &quoted(&app.principal()), "['Read']"],
    );
    let scratch = shared_dir();
    let file = |name: &str| scratch.path().join(name);
    let steps = |name: &str| {
        vec![
            Step::Touch(file(&format!("{name}.handed"))),
            Step::WaitFor(file(&format!("{name}.go"))),
            Step::Get(server.clone()),
        ]
    };

    // A process connects, leaves the connection to its child and execs the binary the app
    // runs: its child is still alice.
    let mut exec = client::handed_over(
        &bus,
        Some(&alice),
        &steps("exec"),
        &file("exec.out"),
        &file("exec.handed"),
        &[
            "/usr/bin/gdbus",
            "monitor",
            "--system",
            "--dest",
            "org.omadm.Client1",
        ],
    );
    let launcher = KillOnDrop::spawn(&mut exec);
    let exe = PathBuf::from(format!("/proc/{}/exe", launcher.id()));
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_link(&exe)
            .is_ok_and(|p| p.ends_with("gdbus"))),
        "the launcher did not exec gdbus"
    );
    std::fs::write(file("exec.go"), "").unwrap();
    let outcome = client::outcomes(&file("exec.out"));
    assert!(outcome[0].starts_with("err "), "{outcome:?}");

    // A process connects, leaves the connection to its child and exits; its pid goes to a
    // new process of the app. The connection is still not the app.
    let mut launcher = KillOnDrop::spawn(&mut client::handed_over(
        &bus,
        Some(&alice),
        &steps("reuse"),
        &file("reuse.out"),
        &file("reuse.handed"),
        &[],
    ));
    let pid = launcher.id();
    let status = launcher.wait().unwrap();
    assert!(status.success(), "launcher: {status}");
    // Once the daemon has seen the connection, let the boot clock move on, so that the new
    // process provably started later (start times count in ticks of 10 ms).
    let name = bus.unique_name_of(pid);
    assert!(
        wait_until(Duration::from_secs(10), || daemon
            .log()
            .contains(&format!("{name} first seen"))),
        "{}",
        daemon.log()
    );
    let then = uptime();
    assert!(wait_until(Duration::from_secs(5), || uptime() > then + 0.05));
    let mut sleep = bus.command(Some(&alice), "sleep");
    sleep.arg("60");
    app.contain(&mut sleep);
    let _app_process = spawn_with_pid(&mut sleep, pid);
    std::fs::write(file("reuse.go"), "").unwrap();
    let outcome = client::outcomes(&file("reuse.out"));
    assert!(
        outcome[0].starts_with("err ") && !outcome[0].contains("weather.example"),
        "{outcome:?}"
    );
    assert!(
        daemon.log().contains(&format!(
            "process {pid} started after its bus connection was first seen"
        )),
        "{}",
        daemon.log()
    );

    let seen = principals_seen(&bus);
    assert!(
        !seen.contains(&format!("principal={}", app.principal())),
        "{seen}"
    );
    let as_alice = seen_as(&alice, &format!("uid:{}", alice.uid), "", "read");
    assert!(seen.contains(&as_alice), "{seen}");
}

/// Boot time in seconds (`/proc/uptime`).
fn uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// Spawns `cmd` so that its process gets `pid` (free, just reaped), by setting the next pid
/// of the pid namespace (`ns_last_pid`); retries while other processes take it first.
fn spawn_with_pid(cmd: &mut Command, pid: u32) -> KillOnDrop {
    for _ in 0..100 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("ns_last_pid");
        let child = KillOnDrop::spawn(cmd);
        if child.id() == pid {
            return child;
        }
    }
    panic!("could not start a process with pid {pid}");
}

/// Builds a sandbox like Flatpak's — a tmpfs root with the host's /usr, /etc, /tmp, /dev
/// and /proc bound in and a `/.flatpak-info` naming `$SANDBOX_APP` — at `$SANDBOX_ROOT`,
/// pivots into it and runs the arguments as `$SANDBOX_UID`: through a user namespace of
/// its own when `$SANDBOX_BUILDER` is `user` (the builder is that user in a namespace it
/// made), else with `setpriv` (the builder is root).
const SANDBOX: &str = r#"set -e
r="$SANDBOX_ROOT"
mount -t tmpfs sandbox "$r"
for d in usr etc tmp dev proc; do mkdir "$r/$d"; mount --rbind "/$d" "$r/$d"; done
for l in bin sbin lib lib32 lib64; do
  if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$r/$l"
  elif [ -d "/$l" ]; then mkdir "$r/$l"; mount --rbind "/$l" "$r/$l"; fi
done
printf '[Application]\nname=%s\n' "$SANDBOX_APP" > "$r/.flatpak-info"
mkdir "$r/.old"
cd "$r"
pivot_root . .old
cd /
umount -l /.old
rmdir /.old
case "$SANDBOX_BUILDER" in
  user) exec unshare --map-user="$SANDBOX_UID" --map-group="$SANDBOX_GID" "$@" ;;
  *) exec setpriv --reuid="$SANDBOX_UID" --regid="$SANDBOX_GID" --init-groups "$@" ;;
esac
"#;

/// `gdbus` as `user` in a Flatpak-like sandbox for `app`, built by `user` itself in a user
/// and mount namespace of its own (`by_user`) or by root in a mount namespace.
fn sandboxed_gdbus(bus: &SysBus, user: &TestUser, app: &str, at: &Path, by_user: bool) -> Command {
    let (builder, unshare) = if by_user {
        (Some(user), "-rm")
    } else {
        (None, "-m")
    };
    let mut cmd = bus.command(builder, "unshare");
    cmd.args([unshare, "sh", "-c", SANDBOX, "sandbox", "gdbus"])
        .env("SANDBOX_ROOT", at)
        .env("SANDBOX_APP", app)
        .env("SANDBOX_UID", user.uid.to_string())
        .env("SANDBOX_GID", user.gid.to_string())
        .env("SANDBOX_BUILDER", if by_user { "user" } else { "root" });
    cmd
}

#[test]
fn a_flatpak_info_names_an_app_only_in_a_sandbox_its_caller_did_not_build() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let alice = test_user("omadm-t-alice");
    let app = "org.example.Weather";
    bus.add_polkit_rules("60-omadmd-log", LOG_PRINCIPALS);
    let (root, server) = provision(&bus);
    call_ok(
        &bus,
        None,
        "Grant",
        &[&quoted(&root), &quoted(&format!("app:{app}")), "['Read']"],
    );
    let get = [quoted(&server)];
    let get: Vec<&str> = get.iter().map(String::as_str).collect();
    let at = shared_dir();

    // Built by root (as a privileged sandbox tool would): the app.
    let out = ok(
        &call_with(
            sandboxed_gdbus(&bus, &alice, app, at.path(), false),
            "Get",
            &get,
        ),
        "Get",
        &get,
    );
    assert!(out.contains("https://weather.example"), "{out}");
    // Built by alice in her own user namespace, the same file: alice.
    assert_not_found(
        &call_with(
            sandboxed_gdbus(&bus, &alice, app, at.path(), true),
            "Get",
            &get,
        ),
        &server,
    );

    let seen = principals_seen(&bus);
    for expected in [
        seen_as(&alice, &format!("app:{app}"), app, "read"),
        seen_as(&alice, &format!("uid:{}", alice.uid), "", "read"),
    ] {
        assert!(seen.contains(&expected), "no {expected:?} in:\n{seen}");
    }
}

#[test]
fn a_caller_holds_at_most_watches_per_caller_and_others_are_served() {
    let bus = SysBus::start();
    let _daemon = Daemon::start_with_config(&bus, "[limits]\nwatches_per_caller = 3\n");
    let (alice, bob) = (test_user("omadm-t-alice"), test_user("omadm-t-bob"));
    let scratch = shared_dir();
    let file = |name: &str| scratch.path().join(name);
    let watch = || Step::Watch(DEVINFO_MAN.to_owned());
    let steps = [
        watch(),
        watch(),
        watch(),
        watch(),
        Step::Touch(file("full")),
        Step::WaitFor(file("go")),
        Step::Unwatch,
        watch(),
    ];
    let _client = KillOnDrop::spawn(&mut client::command(
        &bus,
        Some(&alice),
        &steps,
        &file("out"),
    ));
    assert!(
        wait_until(Duration::from_secs(30), || file("full").exists()),
        "the client did not get to its fourth watch"
    );
    // While alice's connection is full: bob reads, and alice's other connection watches.
    let man = quoted(DEVINFO_MAN);
    let out = call_ok(&bus, Some(&bob), "Get", &[&man]);
    assert!(out.contains("Man"), "{out}");
    call_ok(&bus, Some(&alice), "Watch", &[&man]);
    std::fs::write(file("go"), "").unwrap();

    let outcome = client::outcomes(&file("out"));
    assert_eq!(outcome.len(), 6, "{outcome:?}");
    assert!(
        outcome[..3].iter().all(|o| o.starts_with("ok ")),
        "{outcome:?}"
    );
    assert!(
        outcome[3].starts_with("err org.omadm.Client1.Error.NotAllowed")
            && outcome[3].contains("[limits] watches_per_caller = 3"),
        "{outcome:?}"
    );
    assert_eq!(outcome[4], "ok ", "unwatch: {outcome:?}");
    assert!(
        outcome[5].starts_with("ok "),
        "a freed place is used: {outcome:?}"
    );
}

#[test]
fn permitted_moids_are_for_administrators_only() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let (frank, bob) = (test_user("omadm-t-frank"), test_user("omadm-t-bob"));
    let account = r#"{"DMAcc": {"SrvID": "ma.one", "SrvURI": "https://127.0.0.1:9/dm",
        "Perm": {"p": {"MOID": "urn:oma:mo:ext-example-weather:1.0"}},
        "Auth": {"Trsp": {"Data": "u", "Secret": "hunter2"}}}}"#;
    call_ok(
        &bus,
        None,
        "CreateInstance",
        &["'urn:oma:mo:oma-dm-dmacc:1.2'", &quoted(account)],
    );
    let path = "/org/omadm/Client1/server/ma_2eone";
    let iface = "'org.omadm.Client1.Server'";
    let gdbus = |user: Option<&TestUser>, object: &str, method: &str, args: &[&str]| {
        bus.command(user, "gdbus")
            .args(["call", "--system", "--dest", "org.omadm.Client1"])
            .args(["--object-path", object, "--method", method])
            .args(args)
            .output()
            .unwrap()
    };
    let get = |user| {
        gdbus(
            user,
            path,
            "org.freedesktop.DBus.Properties.Get",
            &[iface, "'PermittedMoids'"],
        )
    };
    assert!(
        wait_until(Duration::from_secs(5), || get(None).status.success()),
        "no server object"
    );
    let moids = String::from_utf8_lossy(&get(None).stdout).into_owned();
    assert!(
        moids.contains("urn:oma:mo:ext-example-weather:1.0"),
        "{moids}"
    );

    // Not for a user polkit does not allow manage: refused, and left out of every listing.
    let out = get(Some(&frank));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Error.AccessDenied") && err.contains("manage"),
        "{}",
        show(&out)
    );
    let all = gdbus(
        Some(&frank),
        path,
        "org.freedesktop.DBus.Properties.GetAll",
        &[iface],
    );
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(
        all.contains("'ServerId'") && !all.contains("PermittedMoids"),
        "{all}"
    );
    let managed = gdbus(
        Some(&frank),
        "/org/omadm/Client1",
        "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
        &[],
    );
    let managed = String::from_utf8_lossy(&managed.stdout);
    assert!(
        managed.contains("'ma.one'") && !managed.contains("ext-example-weather"),
        "{managed}"
    );

    // For a user polkit allows manage.
    bus.add_polkit_rules(
        "61-omadmd-manage",
        &format!(
            r#"polkit.addRule(function(action, subject) {{
                if (action.id == "org.omadm.client1.manage" && subject.user == "{}")
                    return polkit.Result.YES;
            }});"#,
            bob.name
        ),
    );
    let out = get(Some(&bob));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("urn:oma:mo:ext-example-weather:1.0"),
        "{}",
        show(&out)
    );
}
