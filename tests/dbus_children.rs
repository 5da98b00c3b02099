//! The gateway's children on D-Bus and in `omadmctl` (DM-HLF-023, docs/gateway.md §5): the
//! `Children` property of `org.omadm.Client1` and its `PropertiesChanged`, `DetachChild`,
//! and `omadmctl children [detach KEY]`, against the real `omadmd` with LwM2M sensors played
//! by `aiocoap` (`tests/support/lwm2m_client.py`). On a private session bus with a DM server
//! (`omadm-devserver` over TLS) that hears `ChildDetached`; on the private system bus with a
//! real polkitd, where every user reads the list but only a manager detaches.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value as J, json};
use zbus::OwnedVariant;

use crate::lwm2m_gateway::{corpus, fixtures, free_port};
use crate::omadmctl_cli::TestServer;
use crate::support::daemon::{Daemon, call, call_err, call_ok};
use crate::support::lwm2m::{ClientOpts, Lwm2mClient};
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{SysBus, show, test_user, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const GATEWAY: &str = "urn:oma:mo:ext-omadmd-gateway:1.0";
const TEMPERATURE: &str = "urn:oma:lwm2m:ext:3303";
const DETACHED: &str = "urn:oma:at:ext-omadmd:1.0:ChildDetached";
const WAIT: Duration = Duration::from_secs(30);

/// `omadmd.toml` with the LwM2M adapter on `127.0.0.1:port`.
fn config(port: u16) -> String {
    format!(
        "[gateway.lwm2m]\nlisten = [\"127.0.0.1:{port}\"]\nobject_dirs = [{:?}, {:?}]\n",
        corpus(),
        fixtures()
    )
}

/// A sensor `endpoint` registered with the gateway at `port`, its two instances read and
/// observed.
fn sensor(port: u16, endpoint: &str) -> Lwm2mClient {
    let mut sensor = Lwm2mClient::spawn(&ClientOpts::new(
        &format!("coap://127.0.0.1:{port}"),
        endpoint,
    ));
    sensor.wait_for("registered", WAIT);
    sensor.wait_for("observe", WAIT);
    sensor.wait_for("observe", WAIT);
    sensor
}

/// `omadmctl children --json` as the local admin.
fn listed(bus: &SessionBus) -> Vec<J> {
    let out = bus.run(&["children", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    serde_json::from_slice::<J>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The keys a `Children` value lists.
fn keys(children: &OwnedVariant) -> Vec<String> {
    type Entry = (String, String, String, String, String, i64, Vec<String>);
    let entries = Vec::<Entry>::try_from(children.clone()).unwrap();
    entries.into_iter().map(|e| e.0).collect()
}

#[test]
fn omadmctl_lists_and_detaches_children_and_children_changes_are_announced() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("omadmd.toml"), config(port)).unwrap();
    let bus = SessionBus::start();
    let end = json!({"packages": [{"commands": [["END"]]}]});
    let srv = TestServer::start(Some(
        &json!({"name": "children", "sessions": [end]}).to_string(),
    ));
    let _daemon = bus.daemon(dir.path());
    let account = json!({"DMAcc": {"SrvID": "devserver", "SrvURI": srv.server.url(),
        "Perm": {"g": {"MOID": GATEWAY}}, "Ext": {"CACert": srv.server.ca_pem()}}});
    let out = bus.run(&["create", DMACC, &account.to_string()]);
    assert!(out.status.success(), "{}", show(&out));

    // No children yet.
    let out = bus.run(&["children"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "No children.\n");

    // PropertiesChanged of the main object, followed from before the sensors come.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_conn, mut signals) = runtime.block_on(async {
        let conn = zbus::connection::Builder::address(bus.address())
            .build()
            .await
            .unwrap();
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(omadmd::bus::NAME)
            .path(omadmd::bus::PATH)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .build()
            .unwrap();
        let signals = zbus::MessageStream::for_match_rule(rule, &conn, None)
            .await
            .unwrap();
        (conn, signals)
    });
    // The next `Children` announced for which `wanted` holds.
    let mut announced = |wanted: &dyn Fn(&[String]) -> bool| -> Vec<String> {
        runtime.block_on(async {
            tokio::time::timeout(WAIT, async {
                loop {
                    let message = signals.next().await.expect("the bus is up").unwrap();
                    let (interface, changed, _): (
                        String,
                        HashMap<String, OwnedVariant>,
                        Vec<String>,
                    ) = message.body().deserialize().unwrap();
                    if interface != omadmd::bus::INTERFACE {
                        continue;
                    }
                    if let Some(children) = changed.get("Children").map(keys)
                        && wanted(&children)
                    {
                        return children;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no such Children announced: {}", daemon_log(dir.path())))
        })
    };

    let mut leaving = sensor(port, "thermo-50");
    let mut staying = sensor(port, "thermo-51");
    assert_eq!(
        announced(&|keys| keys.len() == 2),
        ["thermo-50", "thermo-51"]
    );
    // Both are listed online with their instances (mirrored on registration).
    assert!(
        wait_until(WAIT, || listed(&bus)
            .iter()
            .all(|c| c["mos"].as_array().is_some_and(|m| m.len() == 2))),
        "{:?}",
        listed(&bus)
    );
    let children = listed(&bus);
    assert_eq!(children.len(), 2, "{children:?}");
    let c = &children[1];
    assert_eq!(c["key"], "thermo-51");
    assert_eq!(c["id"], "thermo-51");
    assert_eq!(c["protocol"], "lwm2m");
    assert_eq!(c["state"], "online");
    assert_eq!(c["address"], format!("coap://127.0.0.1:{}", staying.port));
    assert!(c["last_seen"].as_i64().unwrap() > 1_700_000_000, "{c}");
    let temperature = format!("{TEMPERATURE}/thermo-51.0/");
    assert!(
        c["mos"].as_array().unwrap().contains(&json!(temperature)),
        "{c}"
    );
    let out = bus.run(&["children"]);
    assert!(out.status.success(), "{}", show(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("KEY") && lines[0].ends_with("ADDRESS"),
        "{table}"
    );
    let row = lines
        .iter()
        .position(|l| l.starts_with("thermo-51 "))
        .expect("a row for thermo-51");
    assert!(lines[row].contains(" online "), "{table}");
    assert!(
        lines[row + 1..=row + 2].contains(&format!("    {temperature}").as_str()),
        "the instances are listed below their child: {table}"
    );

    // A de-registration is announced: the list without the sensor.
    leaving.send(json!({"cmd": "deregister"}));
    leaving.wait_for("deregistered", WAIT);
    assert_eq!(
        announced(&|keys| !keys.iter().any(|k| k == "thermo-50")),
        ["thermo-51"]
    );

    // The admin detaches the other: its instances go, the server hears it was removed.
    let reading = format!("{temperature}5700");
    assert!(bus.run(&["get", &reading]).status.success());
    let out = bus.run(&["children", "detach", "thermo-51"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = bus.run(&["get", &reading]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(listed(&bus).is_empty());
    assert_eq!(announced(&|keys| keys.is_empty()), Vec::<String>::new());
    let reasons = || -> HashMap<String, J> {
        srv.alerts(DETACHED)
            .into_iter()
            .map(|a| {
                (
                    a["Data"]["Id"].as_str().unwrap().to_owned(),
                    a["Data"]["Reason"].clone(),
                )
            })
            .collect()
    };
    assert!(
        wait_until(WAIT, || reasons().len() == 2),
        "no ChildDetached for each sensor reached the server: {:?}\n{}",
        srv.alerts(DETACHED),
        daemon_log(dir.path())
    );
    let reasons = reasons();
    assert_eq!(reasons["thermo-51"], "removed", "{reasons:?}");
    assert_eq!(reasons["thermo-50"], "deregistered", "{reasons:?}");

    // Its registration ended with it: its next Update is 4.04, and it registers anew.
    staying.send(json!({"cmd": "update"}));
    let refused = staying.wait_for("update_failed", WAIT);
    assert_eq!(refused["code"], "4.04", "{refused}");
    staying.wait_for("registered", WAIT);
    assert!(
        wait_until(WAIT, || listed(&bus)
            .iter()
            .any(|c| c["key"] == "thermo-51")),
        "thermo-51 did not attach again: {}",
        daemon_log(dir.path())
    );
    assert_eq!(announced(&|keys| !keys.is_empty()), ["thermo-51"]);

    // A key that is not there, now or ever: NotFound, status 4.
    for key in ["thermo-50", "nobody"] {
        let out = bus.run(&["children", "detach", key]);
        assert_eq!(out.status.code(), Some(4), "{key}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(key),
            "{}",
            show(&out)
        );
    }
}

#[test]
fn every_user_reads_the_children_and_only_a_manager_detaches_one() {
    let port = free_port();
    let bus = SysBus::start();
    let daemon = Daemon::start_with_config(&bus, &config(port));
    let alice = test_user("omadm-t-alice");
    let _sensor = sensor(port, "thermo-60");
    let children = |user| {
        let out = bus
            .command(user, "busctl")
            .args(["get-property", omadmd::bus::NAME, omadmd::bus::PATH])
            .args([omadmd::bus::INTERFACE, "Children"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let read = children(Some(&alice));
    assert!(
        read.starts_with("a(sssssxas) 1 \"thermo-60\" \"thermo-60\" \"lwm2m\""),
        "{read}"
    );
    assert!(read.contains("\"online\""), "{read}");

    // Detaching needs manage, which a plain user has not: refused, and the child stays.
    let denied = call_err(
        &bus,
        Some(&alice),
        "DetachChild",
        &["'thermo-60'"],
        "AccessDenied",
    );
    assert!(denied.contains("manage"), "{denied}");
    assert!(children(None).contains("\"thermo-60\""));
    let reading = format!("'{TEMPERATURE}/thermo-60.0/5700'");
    call_ok(&bus, None, "Get", &[&reading]);
    // A key the inventory lacks is NotFound before polkit is asked, as Children is public.
    call_err(&bus, Some(&alice), "DetachChild", &["'nobody'"], "NotFound");

    // A user polkit lets manage may.
    bus.allow("60-children", &[&alice], &["manage"]);
    let out = call(&bus, Some(&alice), "DetachChild", &["'thermo-60'"]);
    assert!(out.status.success(), "{}\n{}", show(&out), daemon.log());
    assert_eq!(children(None), "a(sssssxas) 0");
    call_err(&bus, None, "Get", &[&reading], "NotFound");
}
