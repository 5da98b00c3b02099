//! The LwM2M gateway end to end (DM-HLF-020, -021, -023): the real `omadmd` with
//! `[gateway.lwm2m] listen` on loopback, LwM2M clients played by `aiocoap` (a CoAP stack
//! that is not ours, `tests/support/lwm2m_client.py`), and a DM server played by
//! `omadm-devserver` over TLS. A sensor registers; the server is told (`ChildAttached`),
//! reads its temperature with a plain GET and the inventory, writes its time zone with
//! HGET (a resource, then a partial update of the instance), reboots it with EXEC; an Observe notification reaches the mirror; a sensor that
//! vanishes mid-command gives `504` and then `503`, never a hang, and the server hears it
//! became unreachable; SUB deliveries follow the sensor's notifications and the inventory; a De-register removes the child and its instances.

use std::time::Duration;

use serde_json::{Value as J, json};

use crate::omadmctl_cli::TestServer;
use crate::support::lwm2m::{ClientOpts, Format, Lwm2mClient};
use crate::support::session_bus::{SessionBus, daemon_log};
use crate::support::sysbus::{show, wait_until};

const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
const GATEWAY: &str = "urn:oma:mo:ext-omadmd-gateway:1.0";
const DEVICE: &str = "urn:oma:lwm2m:oma:3:1.2";
const TEMPERATURE: &str = "urn:oma:lwm2m:ext:3303";
const WAIT: Duration = Duration::from_secs(30);

/// Session 1 is the one the attach asks for (it delivers `ChildAttached`); session 2 is
/// the server's work on the sensor; session 3 runs an EXEC on a sensor that has vanished,
/// twice; the rest deliver what the vanishing queued.
fn scenario() -> String {
    let temp = format!("{TEMPERATURE}/thermo-42.0/5700");
    let tz = format!("{DEVICE}/thermo-42.0/15");
    let reboot = format!("{DEVICE}/thermo-42.0/4");
    let end = json!({"packages": [{"commands": [["END"]]}]});
    json!({"name": "lwm2m-gateway",
    "repository": {"tz": [{"ClientURI": tz, "MOData": {"15": "Europe/Berlin"}}],
                   "offset": [{"ClientURI": format!("{DEVICE}/thermo-42.0/"),
                               "MOData": {"3": {"14": "+02:00"}}}]},
    "sessions": [
        end,
        {"packages": [
            {"commands": [["GET", temp],
                          ["GET", format!("{GATEWAY}/0/Children")],
                          ["HGET", "{repo}/tz", tz],
                          ["EXEC", reboot],
                          ["GET", format!("{DEVICE}/thermo-42.0/15")],
                          ["EXEC", format!("{TEMPERATURE}/thermo-42.0/5700")],
                          ["HGET", "{repo}/offset", format!("{DEVICE}/thermo-42.0/")],
                          ["GET", format!("{DEVICE}/thermo-42.0/")],
                          ["SUB", temp, "{repo}/sub/temp"],
                          ["SUB", format!("{GATEWAY}/0/Children"), "{repo}/sub/children"]]},
            {"commands": [["END"]]}]},
        {"packages": [
            {"commands": [["EXEC", reboot], ["EXEC", reboot]]},
            {"commands": [["END"]]}]},
        end, end, end
    ]})
    .to_string()
}

/// A UDP port free on loopback now.
pub(crate) fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The LwM2M object XML of the shared corpus.
pub(crate) fn corpus() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/lwm2m")
}

/// The test's own LwM2M object XML (IPSO Temperature).
pub(crate) fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lwm2m")
}

/// The alerts of `kind` the server received in Package#1s.
fn alerts(srv: &TestServer, kind: &str) -> Vec<J> {
    srv.server
        .transcript()
        .into_iter()
        .filter(|r| r.kind == "package#1")
        .filter_map(|r| r.body)
        .flat_map(|b| b["Alert"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["AlertType"] == kind)
        .collect()
}

/// The statuses of the last Package#3 the server received.
pub(crate) fn statuses(srv: &TestServer) -> Vec<J> {
    let bodies: Vec<J> = srv
        .server
        .transcript()
        .into_iter()
        .filter(|r| r.kind == "package#3" && r.direction == omadmd::devserver::Direction::In)
        .filter_map(|r| r.body)
        .collect();
    bodies.last().expect("a Package#3")["Status"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `omadmctl get --value URI` as the local admin.
fn value(bus: &SessionBus, uri: &str) -> Option<String> {
    let out = bus.run(&["get", "--value", uri]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn a_dm_server_reads_writes_and_runs_an_lwm2m_sensor_through_the_gateway() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("omadmd.toml"),
        format!(
            "[gateway]\ncommand_timeout_s = 3\nlast_seen_granularity_s = 1\n\
             [gateway.lwm2m]\nlisten = [\"127.0.0.1:{port}\"]\nobject_dirs = [{:?}, {:?}]\n",
            corpus(),
            fixtures()
        ),
    )
    .unwrap();
    let bus = SessionBus::start();
    let srv = TestServer::start(Some(&scenario()));
    let _daemon = bus.daemon(dir.path());
    let account = json!({"DMAcc": {"SrvID": "devserver", "SrvURI": srv.server.url(),
        "Perm": {"g": {"MOID": GATEWAY}, "d": {"MOID": DEVICE}, "t": {"MOID": TEMPERATURE}},
        "Ext": {"CACert": srv.server.ca_pem()}}});
    let out = bus.run(&["create", DMACC, &account.to_string()]);
    assert!(out.status.success(), "{}", show(&out));

    let server = format!("coap://127.0.0.1:{port}");
    let mut sensor = Lwm2mClient::spawn(&ClientOpts::new(&server, "thermo-42"));
    sensor.wait_for("registered", WAIT);
    // The first read of each instance is followed by its observation.
    sensor.wait_for("observe", WAIT);
    sensor.wait_for("observe", WAIT);
    assert!(
        wait_until(WAIT, || !alerts(
            &srv,
            "urn:oma:at:ext-omadmd:1.0:ChildAttached"
        )
        .is_empty()),
        "no ChildAttached reached the server: {}",
        daemon_log(dir.path())
    );
    let attached = &alerts(&srv, "urn:oma:at:ext-omadmd:1.0:ChildAttached")[0];
    assert_eq!(
        attached["SourceURI"],
        format!("{GATEWAY}/0/Children/thermo-42")
    );
    assert_eq!(attached["Data"]["Id"], "thermo-42");
    assert_eq!(attached["Data"]["Protocol"], "lwm2m");

    let out = bus.run(&["session", "start", "devserver"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        show(&out),
        daemon_log(dir.path())
    );
    let st = statuses(&srv);
    assert_eq!(st[0]["sc"], 200, "{st:?}");
    assert_eq!(
        st[0]["Data"][0]["MOData"]["5700"], 21.5,
        "the temperature from the mirror: {st:?}"
    );
    assert_eq!(st[1]["sc"], 200, "{st:?}");
    let children = &st[1]["Data"][0]["MOData"]["Children"]["thermo-42"];
    assert_eq!(children["State"], "online", "{st:?}");
    assert_eq!(children["Protocol"], "lwm2m");
    let mos: Vec<&J> = children["MOs"].as_object().unwrap().values().collect();
    assert!(
        mos.contains(&&json!(format!("{TEMPERATURE}/thermo-42.0/"))),
        "{mos:?}"
    );
    assert_eq!(st[2]["sc"], 200, "HGET of the time zone: {st:?}");
    assert_eq!(st[3]["sc"], 200, "EXEC of the reboot: {st:?}");
    assert_eq!(st[4]["Data"][0]["MOData"]["15"], "Europe/Berlin", "{st:?}");
    // 5700 is R only: the DDF the object XML made refuses an EXEC before the sensor is asked.
    assert_eq!(st[5]["sc"], 405, "{st:?}");
    let write = sensor.wait_for("write", WAIT);
    assert_eq!(write["values"]["/3/0/15"], "Europe/Berlin", "{write}");
    let exec = sensor.wait_for("execute", WAIT);
    assert_eq!(exec["path"], "/3/0/4");
    // HGET onto the instance root: a partial update naming one resource; the others stay.
    assert_eq!(st[6]["sc"], 200, "HGET of the instance: {st:?}");
    let device = &st[7]["Data"][0]["MOData"]["3"];
    assert_eq!(device["14"], "+02:00", "{st:?}");
    assert_eq!(device["15"], "Europe/Berlin", "{st:?}");
    assert_eq!(device["0"], "Example Sensors", "{st:?}");
    let partial = sensor.wait_for("write", WAIT);
    assert_eq!(partial["path"], "/3/0", "{partial}");
    assert_eq!(partial["values"]["/3/0/14"], "+02:00", "{partial}");

    // An Observe notification reaches the mirror.
    sensor.send(json!({"cmd": "set", "path": "/3303/0/5700", "value": 23.25}));
    sensor.wait_for("notified", WAIT);
    let temp = format!("{TEMPERATURE}/thermo-42.0/5700");
    assert_eq!(st[8]["sc"], 200, "SUB on the temperature: {st:?}");
    assert_eq!(st[9]["sc"], 200, "SUB on the inventory: {st:?}");
    assert!(
        wait_until(WAIT, || value(&bus, &temp).as_deref() == Some("23.25")),
        "the notification did not reach the mirror: {:?}\n{}",
        value(&bus, &temp),
        daemon_log(dir.path())
    );

    // The notification went out to the server that subscribed to the temperature.
    let delivered = |key: &str, needle: &str| {
        srv.server
            .received(key)
            .iter()
            .any(|u| String::from_utf8_lossy(&u.body).contains(needle))
    };
    assert!(
        wait_until(WAIT, || delivered("sub/temp", "23.25")),
        "no SUB delivery of the new temperature: {}",
        daemon_log(dir.path())
    );

    // The sensor vanishes: the first EXEC waits command_timeout_s and is 504, the child is
    // then unreachable and the second is 503 at once; reads still answer from the mirror.
    sensor.send(json!({"cmd": "vanish"}));
    let out = bus.run(&["session", "start", "devserver"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        show(&out),
        daemon_log(dir.path())
    );
    let st = statuses(&srv);
    assert_eq!(st[0]["sc"], 504, "{st:?}");
    assert_eq!(st[1]["sc"], 503, "{st:?}");
    assert_eq!(value(&bus, &temp).as_deref(), Some("23.25"));
    assert_eq!(
        value(&bus, &format!("{GATEWAY}/0/Children/thermo-42/State")).as_deref(),
        Some("unreachable")
    );
    assert!(
        wait_until(WAIT, || delivered("sub/children", "unreachable")),
        "no SUB delivery of the inventory's change: {}",
        daemon_log(dir.path())
    );
    assert!(
        wait_until(WAIT, || {
            alerts(&srv, "urn:oma:at:ext-omadmd:1.0:ChildState")
                .iter()
                .any(|a| a["Data"]["State"] == "unreachable")
        }),
        "no ChildState reached the server: {}",
        daemon_log(dir.path())
    );
}

#[test]
fn a_sensor_speaking_senml_json_is_mirrored_and_a_deregistration_removes_it() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("omadmd.toml"),
        format!(
            "[gateway.lwm2m]\nlisten = [\"127.0.0.1:{port}\"]\nobject_dirs = [{:?}, {:?}]\n\
             endpoints = [\"thermo-43\"]\n",
            corpus(),
            fixtures()
        ),
    )
    .unwrap();
    let bus = SessionBus::start();
    let _daemon = bus.daemon(dir.path());
    let server = format!("coap://127.0.0.1:{port}");

    // Not among the endpoints allowed to register.
    let mut stranger = Lwm2mClient::spawn(&ClientOpts::new(&server, "intruder"));
    let refused = stranger.wait_for("register_failed", WAIT);
    assert_eq!(refused["code"], "4.03", "{refused}");

    let mut opts = ClientOpts::new(&server, "thermo-43");
    opts.refuse_tlv = true;
    opts.format = Format::Senml;
    let mut sensor = Lwm2mClient::spawn(&opts);
    sensor.wait_for("registered", WAIT);
    sensor.wait_for("observe", WAIT);
    sensor.wait_for("observe", WAIT);
    let temp = format!("{TEMPERATURE}/thermo-43.0/5700");
    assert_eq!(
        value(&bus, &temp).as_deref(),
        Some("21.5"),
        "{}",
        daemon_log(dir.path())
    );
    assert_eq!(
        value(&bus, &format!("{DEVICE}/thermo-43.0/0")).as_deref(),
        Some("Example Sensors")
    );
    assert_eq!(
        value(&bus, &format!("{GATEWAY}/0/Children/thermo-43/Address")),
        Some(format!("coap://127.0.0.1:{}", sensor.port))
    );

    sensor.send(json!({"cmd": "deregister"}));
    sensor.wait_for("deregistered", WAIT);
    assert!(
        wait_until(WAIT, || value(&bus, &temp).is_none()),
        "the instance outlived the de-registration"
    );
    let out = bus.run(&["get", &format!("{GATEWAY}/0/Children")]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("thermo-43"),
        "{}",
        show(&out)
    );
}
