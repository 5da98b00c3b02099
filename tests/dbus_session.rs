//! DM sessions started over D-Bus on a real system bus (our bus policy) with a real polkitd
//! (our actions): `StartSession`, the broadcast `SessionStarted` / `SessionFinished`
//! signals, the `State` property and its `PropertiesChanged`, and polkit refusing the
//! start-session action to an ordinary user. The DM server is an in-process
//! `omadm-devserver` over real TLS on loopback.

use std::time::Duration;

use futures_util::StreamExt;
use zbus::MessageStream;
use zbus::OwnedVariant;
use zbus::message::Type;

use crate::omadmctl_cli::TestServer;
use crate::support::daemon::{Daemon, call, call_err, call_ok};
use crate::support::sysbus::{SysBus, show, test_user};

const NAME: &str = "org.omadm.Client1";
const PATH: &str = "/org/omadm/Client1";
const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const BOOTSTRAP_COMPLETE: &str = "urn:oma:at:dm:2.0:BootstrapComplete";

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// What a listener on the bus saw of omadmd's sessions, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Started {
        server_id: String,
        session_id: String,
        reason: String,
    },
    Finished {
        server_id: String,
        session_id: String,
        status: i32,
    },
    State(String),
}

/// A zbus connection of the test process to the private system bus that receives every
/// signal omadmd sends from its object (subscribed before anything is started).
struct Listener {
    stream: MessageStream,
    _conn: zbus::Connection,
}

impl Listener {
    async fn new(bus: &SysBus) -> Listener {
        let conn = zbus::connection::Builder::address(bus.address())
            .build()
            .await
            .expect("connect to the private system bus");
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
        let owner = dbus
            .get_name_owner(NAME.try_into().unwrap())
            .await
            .expect("omadmd owns its name");
        let rule = zbus::MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(owner.to_string())
            .path(PATH)
            .build()
            .expect("a match rule");
        let stream = MessageStream::for_match_rule(rule, &conn, None)
            .await
            .expect("subscribe to omadmd's signals");
        Listener {
            stream,
            _conn: conn,
        }
    }

    /// The next session event (other signals are skipped); panics after `timeout`.
    async fn next(&mut self, timeout: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a session signal in time")
                .expect("the stream goes on")
                .expect("a message");
            let header = msg.header();
            let member = header.member().map(|m| m.to_string()).unwrap_or_default();
            let interface = header
                .interface()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let body = msg.body();
            match (interface.as_str(), member.as_str()) {
                ("org.omadm.Client1", "SessionStarted") => {
                    let (server_id, session_id, reason): (String, String, String) =
                        body.deserialize().expect("SessionStarted (sss)");
                    return Event::Started {
                        server_id,
                        session_id,
                        reason,
                    };
                }
                ("org.omadm.Client1", "SessionFinished") => {
                    let (server_id, session_id, status): (String, String, i32) =
                        body.deserialize().expect("SessionFinished (ssi)");
                    return Event::Finished {
                        server_id,
                        session_id,
                        status,
                    };
                }
                ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
                    let (iface, changed, invalidated): (
                        String,
                        std::collections::HashMap<String, OwnedVariant>,
                        Vec<String>,
                    ) = body.deserialize().expect("PropertiesChanged (sa{sv}as)");
                    assert_eq!(iface, NAME);
                    assert!(
                        !invalidated.contains(&"State".to_owned()),
                        "State is sent with its value"
                    );
                    if let Some(state) = changed.get("State") {
                        let state = String::try_from(state.try_clone().unwrap())
                            .expect("State is a string");
                        return Event::State(state);
                    }
                }
                _ => {}
            }
        }
    }
}

/// `State`, read with busctl as root.
fn state(bus: &SysBus) -> String {
    let out = bus
        .command(None, "busctl")
        .args(["get-property", NAME, PATH, NAME, "State"])
        .output()
        .expect("busctl");
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn start_session_as_root_announces_the_session_and_its_end() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let srv = TestServer::start(None);
    call_ok(
        &bus,
        None,
        "CreateInstance",
        &[
            &quoted(DMACC),
            &quoted(&srv.account("devserver", srv.server.ca_pem(), 1)),
        ],
    );
    assert_eq!(state(&bus), "s \"idle\"");
    let mut listener = srv.runtime.block_on(Listener::new(&bus));

    let reply = call_ok(&bus, None, "StartSession", &["'devserver'", "''"]);
    let session_id = reply
        .split('\'')
        .nth(1)
        .unwrap_or_else(|| panic!("no session id in {reply}"))
        .to_owned();

    let mut events = Vec::new();
    srv.runtime.block_on(async {
        while !events.contains(&Event::State("idle".into())) {
            events.push(listener.next(Duration::from_secs(30)).await);
        }
    });
    assert_eq!(
        events,
        [
            Event::Started {
                server_id: "devserver".into(),
                session_id: session_id.clone(),
                // The account's first session: BootstrapComplete, whatever started it.
                reason: BOOTSTRAP_COMPLETE.into(),
            },
            Event::State("session".into()),
            Event::Finished {
                server_id: "devserver".into(),
                session_id: session_id.clone(),
                status: 200,
            },
            Event::State("idle".into()),
        ],
        "{}",
        daemon.log()
    );
    assert_eq!(state(&bus), "s \"idle\"");
    srv.wait_for_sessions(1);
    assert!(
        srv.server.failures().is_empty(),
        "{:?}",
        srv.server.failures()
    );
    // The session changed the tree: the devserver's settings are there.
    let city = call_ok(
        &bus,
        None,
        "Get",
        &["'urn:oma:mo:ext-devserver-weather:1.0/*/City'"],
    );
    assert!(city.contains("Helsinki"), "{city}");

    // omadmctl does the same on the system bus, as root.
    let out = bus
        .command(None, env!("CARGO_BIN_EXE_omadmctl"))
        .args(["session", "start", "devserver"])
        .output()
        .expect("omadmctl");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with(" with devserver finished: 200 OK\n"),
        "{}",
        show(&out)
    );
    srv.wait_for_sessions(2);

    // Unknown server and unknown reason: the daemon's error names.
    call_err(&bus, None, "StartSession", &["'nosuch'", "''"], "NotFound");
    call_err(
        &bus,
        None,
        "StartSession",
        &["'devserver'", "'urn:oma:at:dm:2.0:Bogus'"],
        "InvalidValue",
    );
}

#[test]
fn polkit_refuses_start_session_to_an_ordinary_user() {
    let bus = SysBus::start();
    let daemon = Daemon::start(&bus);
    let srv = TestServer::start(None);
    call_ok(
        &bus,
        None,
        "CreateInstance",
        &[
            &quoted(DMACC),
            &quoted(&srv.account("devserver", srv.server.ca_pem(), 1)),
        ],
    );
    let erin = test_user("omadm-t-erin");
    let message = call_err(
        &bus,
        Some(&erin),
        "StartSession",
        &["'devserver'", "''"],
        "AccessDenied",
    );
    assert!(
        message.contains("org.omadm.client1.start-session"),
        "{message}"
    );
    // omadmctl maps it to status 5, with the hint.
    let out = bus
        .command(Some(&erin), env!("CARGO_BIN_EXE_omadmctl"))
        .args(["session", "start"])
        .output()
        .expect("omadmctl");
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org.omadm.client1.start-session") && err.contains("hint:"),
        "{err}"
    );
    // Reading State needs no authorization.
    let out = bus
        .command(Some(&erin), env!("CARGO_BIN_EXE_omadmctl"))
        .args(["--json", "session", "status"])
        .output()
        .expect("omadmctl");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"idle\""),
        "{}",
        show(&out)
    );

    // Nothing was started.
    assert_eq!(state(&bus), "s \"idle\"");
    assert_eq!(srv.server.finished_sessions(), 0);
    assert!(
        srv.server.transcript().is_empty(),
        "the server was contacted"
    );
    assert!(
        !daemon.log().contains("session devserver-"),
        "{}",
        daemon.log()
    );
    let out = call(
        &bus,
        None,
        "Get",
        &["'urn:oma:mo:ext-devserver-weather:1.0/*/City'"],
    );
    assert!(!out.status.success(), "{}", show(&out));
}
