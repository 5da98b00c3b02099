//! The Features MO (`urn:oma:mo:ext-omadmd-features:1.0`, DM-HLF-019) as a DM server sees it:
//! the real `omadmd` on a private session bus, sessions with an in-process `omadm-devserver`
//! over TLS. A server whose account's `Perm` names only another MO reads the instance (its
//! MOID is one of the default `[access] public_moids`) and finds one `bool` leaf per entry of
//! `omadmd::features::FEATURES`, the names the D-Bus `Features` property lists; the gateway's
//! features are off without `[gateway.lwm2m] listen` and on when omadmd starts with one.

use std::collections::BTreeMap;

use omadmd::features::{FEATURES, GATEWAY, GATEWAY_LWM2M, GATEWAY_SUBAGENT};
use omadmd::tree::builtin;
use serde_json::Value as J;

use crate::omadmctl_cli::TestServer;
use crate::support::session_bus::SessionBus;
use crate::support::sysbus::show;

/// Each session reads the Features instance, and the network MO, which is neither public
/// nor in the account's `Perm`: the server's reach is what the account says plus the
/// public MOIDs.
fn scenario() -> String {
    let features = format!("{}/0/", builtin::FEATURES_MO);
    let network = format!("{}//", builtin::NETWORK);
    serde_json::json!({"name": "features", "packages": [
        {"commands": [["GET", features], ["GET", network]], "expect": [200, 403]}]})
    .to_string()
}

/// Runs a session with `srv_id` and returns the Features leaves the server received in the
/// `session`-th (1-based) Package#3.
fn session_reads_features(
    bus: &SessionBus,
    srv: &TestServer,
    srv_id: &str,
    session: usize,
) -> BTreeMap<String, bool> {
    let out = bus.run(&["session", "start", srv_id]);
    assert!(out.status.success(), "{}", show(&out));
    srv.wait_for_sessions(session);
    assert!(
        srv.server.failures().is_empty(),
        "{:?}",
        srv.server.failures()
    );
    let package3 = srv
        .server
        .transcript()
        .into_iter()
        .filter(|r| r.kind == "package#3" && r.direction == omadmd::devserver::Direction::In)
        .filter_map(|r| r.body)
        .nth(session - 1)
        .expect("a Package#3 for the session");
    let status = &package3["Status"][0];
    assert_eq!(status["sc"], 200, "{status}");
    let items = status["Data"].as_array().expect("an MO serialization");
    assert_eq!(items.len(), 1, "{status}");
    assert_eq!(
        items[0]["ClientURI"],
        format!("{}/0/", builtin::FEATURES_MO),
        "{status}"
    );
    let leaves = items[0]["MOData"]["Features"]
        .as_object()
        .unwrap_or_else(|| panic!("a Features root: {status}"));
    leaves
        .iter()
        .map(|(name, value)| {
            let on = value
                .as_bool()
                .unwrap_or_else(|| panic!("{name} is a bool: {value}"));
            (name.clone(), on)
        })
        .collect()
}

/// The `Features` D-Bus property, as `omadmctl status --json` shows it.
fn features_property(bus: &SessionBus) -> Vec<String> {
    let out = bus.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let status: J = serde_json::from_slice(&out.stdout).expect("JSON status");
    serde_json::from_value(status["features"].clone()).expect("a list of names")
}

#[test]
fn every_server_reads_the_features_the_bus_lists_and_the_gateway_is_on_with_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let bus = SessionBus::start();
    let daemon = bus.daemon(dir.path());
    let srv = TestServer::start(Some(&scenario()));
    // Its Perm names the devserver's weather MO only.
    let account = srv.account("reader", srv.server.ca_pem(), 0);
    assert!(!account.contains(builtin::FEATURES_MO), "{account}");
    let out = bus.run(&["create", builtin::DMACC, &account]);
    assert!(out.status.success(), "{}", show(&out));

    let listed = features_property(&bus);
    assert_eq!(listed, FEATURES, "the D-Bus property lists the one list");
    let read = session_reads_features(&bus, &srv, "reader", 1);
    assert_eq!(
        read.keys().collect::<Vec<_>>(),
        {
            let mut names: Vec<_> = listed.iter().collect();
            names.sort();
            names
        },
        "one leaf per listed feature, and no other"
    );
    for (name, on) in &read {
        let gateway = [GATEWAY, GATEWAY_LWM2M, GATEWAY_SUBAGENT].contains(&name.as_str());
        assert_eq!(
            *on, !gateway,
            "{name} without [gateway.lwm2m] listen or guests"
        );
    }

    // Started again with an address to listen on for LwM2M and a guest: the MO shows the
    // gateway on.
    drop(daemon);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    std::fs::write(
        dir.path().join("omadmd.toml"),
        format!(
            "[gateway.lwm2m]\nlisten = [\"127.0.0.1:{port}\"]\n[gateway.guests.g]\n\
             socket = {:?}\ntoken_file = {:?}\n",
            dir.path().join("g/host.sock"),
            dir.path().join("g.token")
        ),
    )
    .unwrap();
    let _daemon = bus.daemon(dir.path());
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
        "the LwM2M adapter holds its address"
    );
    let read = session_reads_features(&bus, &srv, "reader", 2);
    assert_eq!(read.len(), FEATURES.len(), "{read:?}");
    assert!(read.values().all(|on| *on), "{read:?}");
    assert_eq!(features_property(&bus), FEATURES, "the names stay the same");
}
