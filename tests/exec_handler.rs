//! EXEC handlers from local apps (`RegisterExecHandler`, `org.omadm.Client1.ExecHandler`):
//! the real `omadmd` on a private session bus, a DM session with an in-process
//! `omadm-devserver` over TLS, and an app played by a zbus connection of the test process.
//! The server's EXECs reach the app; its status and result reach the server in Package#3
//! (and in the result alert of an asynchronous EXEC); a configured command goes first; a
//! second registration is `Busy`; once the app has left the bus its EXECs are `501`. On the
//! private system bus with polkitd, only callers allowed `manage` may register.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omadmd::protocol::alert;
use serde_json::{Value as J, json};

use crate::omadmctl_cli::TestServer;
use crate::support::daemon::{Daemon, call_err, call_ok};
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{SysBus, show, test_user, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const MOID: &str = "urn:oma:mo:ext-omadmd-exechandler:1.0";
/// Where an app serves `org.omadm.Client1.ExecHandler`.
const HANDLER: &str = "/org/omadm/Client1/ExecHandler";

/// Session 1 installs `w` and EXECs its nodes: `Run` within the session, `Odd` (the app
/// answers a status an EXEC cannot have), `Cfg` (a configured command too), then `Run`
/// with its result to `{dm}/results`. Session 2 is the follow-up delivering that result;
/// sessions 3 and 4 EXEC `Run` again.
fn scenario() -> String {
    json!({"name": "exec-handler",
    "repository": {"w": [{"ClientURI": format!("{MOID}/w/"),
        "MOData": {"Job": {"Run": "go", "Odd": "", "Cfg": ""}}}]},
    "sessions": [
        {"packages": [
            {"commands": [["HGET", "{repo}/w"],
                          ["EXEC", format!("{MOID}/w/Run")],
                          ["EXEC", format!("{MOID}/w/Odd")],
                          ["EXEC", format!("{MOID}/w/Cfg")],
                          ["EXEC", format!("{MOID}/w/Run"), "{dm}/results"]]},
            {"commands": [["END"]]}]},
        {"packages": [{"commands": [["END"]]}]},
        {"packages": [
            {"commands": [["EXEC", format!("{MOID}/w/Run")]]},
            {"commands": [["END"]]}]},
        {"packages": [
            {"commands": [["EXEC", format!("{MOID}/w/Run")]]},
            {"commands": [["END"]]}]}
    ]})
    .to_string()
}

/// The app: answers every `Execute`, recording what it was called with.
#[derive(Default)]
struct App {
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

#[zbus::interface(name = "org.omadm.Client1.ExecHandler")]
impl App {
    #[zbus(out_args("status", "result"))]
    async fn execute(&self, client_uri: String, data: String) -> (i32, String) {
        self.calls
            .lock()
            .unwrap()
            .push((client_uri.clone(), data.clone()));
        if client_uri.ends_with("/Odd") {
            (418, "teapot".into())
        } else {
            (200, format!("ran {client_uri} with {data}"))
        }
    }
}

/// A connection of the test process to `bus`, serving `app` at `path` (omadmd calls
/// [`HANDLER`]).
async fn connect(bus: &SessionBus, path: &str, app: App) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address())
        .serve_at(path, app)
        .build()
        .await
        .unwrap()
}

/// Calls `method(moid)` on omadmd over `conn`; the error name if it fails.
async fn call(conn: &zbus::Connection, method: &str, moid: &str) -> Result<(), String> {
    conn.call_method(
        Some("org.omadm.Client1"),
        "/org/omadm/Client1",
        Some("org.omadm.Client1"),
        method,
        &(moid,),
    )
    .await
    .map(drop)
    .map_err(|e| match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => other.to_string(),
    })
}

/// Creates the account for `srv` that may manage [`MOID`].
fn create_account(bus: &SessionBus, srv: &TestServer) {
    let modata = json!({"DMAcc": {"SrvID": "devserver",
        "SrvURI": srv.server.url(), "Perm": {"p0": {"MOID": MOID}},
        "Ext": {"CACert": srv.server.ca_pem()}}});
    let out = bus.run(&["create", DMACC, &modata.to_string()]);
    assert!(out.status.success(), "{}", show(&out));
}

/// Runs a session with the devserver, waiting for its end.
fn session(bus: &SessionBus, dir: &Path) {
    let out = bus.run(&["session", "start", "devserver"]);
    assert!(out.status.success(), "{}\n{}", show(&out), daemon_log(dir));
}

/// The Package#3 bodies the server received, in order.
fn package3s(srv: &TestServer) -> Vec<J> {
    srv.server
        .transcript()
        .into_iter()
        .filter(|r| r.kind == "package#3" && r.direction == omadmd::devserver::Direction::In)
        .filter_map(|r| r.body)
        .collect()
}

/// The ExecResult alerts the server received in Package#1s.
fn exec_results(srv: &TestServer) -> Vec<J> {
    srv.server
        .transcript()
        .into_iter()
        .filter(|r| r.kind == "package#1")
        .filter_map(|r| r.body)
        .flat_map(|b| b["Alert"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["AlertType"] == alert::EXEC_RESULT)
        .collect()
}

/// The status of an EXEC of `node` whose handler gave `sc` and `result`.
fn exec_status(node: &str, sc: u16, result: &str) -> J {
    json!({"sc": sc, "Data": [{"ClientURI": format!("{MOID}/w/{node}"),
                               "MOData": {node: result}}]})
}

#[test]
fn a_registered_app_runs_the_servers_execs_until_it_leaves_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("omadmd.toml"),
        format!("[exec.\"{MOID}/*/Cfg\"]\ncommand = [\"echo\", \"from config\"]\n"),
    )
    .unwrap();
    let bus = SessionBus::start();
    let srv = TestServer::start(Some(&scenario()));
    let _daemon = bus.daemon(dir.path());
    create_account(&bus, &srv);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let app = App::default();
    let calls = app.calls.clone();
    let (app, rival) = rt.block_on(async {
        let app = connect(&bus, HANDLER, app).await;
        // Serving objects, but no EXEC handler where omadmd looks for one.
        let rival = connect(&bus, "/org/example/Elsewhere", App::default()).await;
        assert_eq!(call(&app, "RegisterExecHandler", MOID).await, Ok(()));
        assert_eq!(
            call(&app, "RegisterExecHandler", MOID).await,
            Ok(()),
            "registering again is no change"
        );
        assert_eq!(
            call(&rival, "RegisterExecHandler", MOID).await,
            Err("org.omadm.Client1.Error.Busy".to_owned())
        );
        assert_eq!(
            call(&rival, "UnregisterExecHandler", MOID).await,
            Err("org.omadm.Client1.Error.NotFound".to_owned())
        );
        let other = "urn:oma:mo:ext-omadmd-other:1.0";
        assert_eq!(call(&rival, "RegisterExecHandler", other).await, Ok(()));
        assert_eq!(call(&rival, "UnregisterExecHandler", other).await, Ok(()));
        assert_eq!(
            call(&rival, "UnregisterExecHandler", other).await,
            Err("org.omadm.Client1.Error.NotFound".to_owned())
        );
        assert_eq!(
            call(&rival, "RegisterExecHandler", "not a moid").await,
            Err("org.omadm.Client1.Error.InvalidUri".to_owned())
        );
        (app, rival)
    });

    session(&bus, dir.path());
    let hget_and_execs = &package3s(&srv)[0]["Status"];
    assert_eq!(hget_and_execs[0]["sc"], 200, "{hget_and_execs}");
    assert_eq!(
        hget_and_execs.as_array().unwrap()[1..],
        [
            exec_status("Run", 200, &format!("ran {MOID}/w/Run with go")),
            // 418 is no EXEC status: 500, the result kept.
            exec_status("Odd", 500, "teapot"),
            // The configured command goes first.
            exec_status("Cfg", 200, "from config\n"),
            json!({"sc": 202}),
        ],
        "{}",
        daemon_log(dir.path())
    );
    // The asynchronous EXEC's result arrives in a follow-up session.
    assert!(
        wait_until(Duration::from_secs(30), || !exec_results(&srv).is_empty()),
        "no ExecResult reached the server: {}",
        daemon_log(dir.path())
    );
    let results = exec_results(&srv);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["SourceURI"], format!("{MOID}/w/Run"));
    assert_eq!(
        results[0]["Data"],
        json!({"sc": 200, "output": format!("ran {MOID}/w/Run with go")})
    );
    let run = (format!("{MOID}/w/Run"), "go".to_owned());
    assert_eq!(
        *calls.lock().unwrap(),
        [run.clone(), (format!("{MOID}/w/Odd"), String::new()), run],
        "the app was called for its MOID's EXECs but the configured one"
    );
    srv.wait_for_sessions(2);

    // The app leaves the bus: its EXECs are 501, and the MOID is free again.
    rt.block_on(app.close()).unwrap();
    session(&bus, dir.path());
    let after = package3s(&srv);
    assert_eq!(
        after.last().unwrap()["Status"],
        json!([{"sc": 501}]),
        "{}",
        daemon_log(dir.path())
    );
    assert_eq!(calls.lock().unwrap().len(), 3, "not called once gone");
    let free = wait_until(Duration::from_secs(10), || {
        rt.block_on(call(&rival, "RegisterExecHandler", MOID))
            .is_ok()
    });
    assert!(free, "the registration outlived its connection");

    // The rival serves no ExecHandler: the call finds no one (UnknownObject), 501, and its
    // registration ends.
    session(&bus, dir.path());
    assert_eq!(
        package3s(&srv).last().unwrap()["Status"],
        json!([{"sc": 501}]),
        "{}",
        daemon_log(dir.path())
    );
    assert_eq!(
        rt.block_on(call(&rival, "UnregisterExecHandler", MOID)),
        Err("org.omadm.Client1.Error.NotFound".to_owned())
    );
    assert!(
        srv.server.failures().is_empty(),
        "{:?}",
        srv.server.failures()
    );
}

#[test]
fn only_callers_allowed_manage_register_exec_handlers() {
    let bus = SysBus::start();
    let _daemon = Daemon::start(&bus);
    let (alice, bob) = (test_user("omadm-t-alice"), test_user("omadm-t-bob"));
    bus.allow("60-exec-rw", &[&alice], &["read", "write", "watch"]);
    bus.allow("61-exec-manage", &[&bob], &["manage"]);
    let moid = format!("'{MOID}'");
    for method in ["RegisterExecHandler", "UnregisterExecHandler"] {
        call_err(&bus, Some(&alice), method, &[&moid], "AccessDenied");
    }
    // bob may; his registration ends as his gdbus leaves the bus.
    call_ok(&bus, Some(&bob), "RegisterExecHandler", &[&moid]);
    call_err(
        &bus,
        Some(&bob),
        "UnregisterExecHandler",
        &[&moid],
        "NotFound",
    );
    call_ok(&bus, None, "RegisterExecHandler", &[&moid]);
    call_err(
        &bus,
        None,
        "RegisterExecHandler",
        &["'no moid'"],
        "InvalidUri",
    );
}
