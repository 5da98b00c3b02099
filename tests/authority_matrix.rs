//! The Management Authority rules as a table (issue 9, "Show it"): three DM servers, each a
//! real `omadm-devserver` over TLS with its own account — `op` (priority 20, weather MO),
//! `ent` (priority 10, weather and VPN MOs, sharing the weather MO with `op`) and `iso`
//! (priority 5, VPN MO only) — and local apps, against one client (the daemon's authority
//! and session engine in process). Each server's Package#2 carries many commands, each with
//! the status the rules give it; the devserver checks every one.
//!
//! Instances: `weather/appw` (created by app A, which grants `op` and `ent` Read and Write),
//! `weather/opw` (created by `op`), `vpn/entv` (created by `ent`). Rules shown: MOIDs first
//! (`403` for an MOID not given, whatever is there), invisibility (`404` alike for "not
//! there" and "not yours"), scope (`405` for a permanent DevInfo node), priority (`409` for a
//! node, or a subtree holding one, a higher-priority server wrote; none over an app's
//! node), secrets (a No-Get node is not there, even for its own account's server), and
//! revocation taking effect at the next session.

use std::collections::BTreeMap;

use omadmd::authority::{AccessError, Input, Principal, Rights};
use omadmd::session::{Account, Limits, account};
use omadmd::tree::builtin;
use serde_json::json;

use crate::session_tls::{Client, client, server};

const W: &str = "urn:oma:mo:ext-matrix-weather:1.0";
const V: &str = "urn:oma:mo:ext-matrix-vpn:1.0";
const DEVINFO: &str = "urn:oma:mo:oma-dm-devinfo:1.0";

/// One server's account: `moids` it may manage, at `priority`.
fn account_for(
    c: &Client,
    srv_id: &str,
    srv: &omadmd::devserver::RunningServer,
    moids: &[&str],
    priority: i64,
) -> Account {
    let perm: serde_json::Map<String, serde_json::Value> = moids
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("p{i}"), json!({ "MOID": m })))
        .collect();
    let modata = json!({"DMAcc": {"SrvID": srv_id, "SrvURI": srv.url(), "Perm": perm,
        "Auth": {"Trsp": {"Data": srv_id, "Secret": "not-for-anyone"}},
        "Ext": {"CACert": srv.ca_pem(), "Priority": priority}}});
    let root = c
        .auth
        .create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())
        .unwrap();
    // Each server may read its own account (its secrets stay out of reach all the same).
    c.auth
        .grant(
            &Principal::Admin,
            &root.to_string(),
            &format!("srv:{srv_id}"),
            Rights::READ,
        )
        .unwrap();
    account::load_all(&c.auth)
        .unwrap()
        .into_iter()
        .find(|a| a.srv_id == srv_id)
        .unwrap()
}

/// A scenario: one session per entry of `sessions`, each a list of (command, status).
fn scenario(repository: serde_json::Value, sessions: &[Vec<(serde_json::Value, u16)>]) -> String {
    let sessions: Vec<serde_json::Value> = sessions
        .iter()
        .map(|rows| {
            let (commands, expect): (Vec<_>, Vec<_>) = rows.iter().cloned().unzip();
            json!({"packages": [{"commands": commands, "expect": expect}]})
        })
        .collect();
    json!({"name": "matrix", "repository": repository, "sessions": sessions}).to_string()
}

fn item(uri: &str, name: &str, value: &str) -> serde_json::Value {
    json!([{"ClientURI": uri, "MOData": {name: value}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_and_apps_each_get_what_the_rules_give_them() {
    let certs = tempfile::tempdir().unwrap();
    let c = client(BTreeMap::new(), Limits::default());
    let (appw, opw, entv) = (
        format!("{W}/appw/"),
        format!("{W}/opw/"),
        format!("{V}/entv/"),
    );
    let get = |uri: &str| json!(["GET", uri]);
    let hget = |repo: &str, target: &str| json!(["HGET", format!("{{repo}}/{repo}"), target]);
    let delete = |uri: &str| json!(["DELETE", uri]);

    // op shares its instance with ent through the Delegation Access Control MO.
    let share = format!("{}/{}/opshare", builtin::DACL, builtin::DACL_MIID);
    let share_item = json!([{"ClientURI": share, "MOData": {"opshare": {
        "Target": opw, "Principal": "srv:ent", "Rights": "Read"}}}]);
    let op_srv = server(
        &scenario(
            json!({"unit": item(&format!("{appw}Unit"), "Unit", "K"), "share": share_item}),
            &[
                vec![
                    (get(&format!("{appw}Unit")), 200),
                    // Over app A's node: servers outrank apps.
                    (hget("unit", &format!("{appw}Unit")), 200),
                    (get(&opw), 200),
                    (get(&format!("{W}/*/City")), 200),
                    (get(&format!("{W}/nope/")), 404),
                    // Another server's MOID: 403, whether or not anything is there.
                    (get(&entv), 403),
                    (get(&format!("{V}/nope/")), 403),
                    // DevInfo is public: read by all, its permanent nodes not deleted.
                    (get(&format!("{DEVINFO}//DevID")), 200),
                    (delete(&format!("{DEVINFO}//DevID")), 405),
                    // Its own account, but not its secret.
                    (get(&format!("{}//SrvID", builtin::DMACC)), 200),
                    (get(&format!("{}//Auth/Trsp/Secret", builtin::DMACC)), 404),
                ],
                // After app A revoked it: the instance is gone for it. It delegates its own
                // instance: an HGET into the DACL MO is a grant.
                vec![
                    (get(&appw), 404),
                    (get(&opw), 200),
                    (hget("share", &share), 200),
                    (get(&format!("{share}/Rights")), 200),
                ],
                // Deleting the entry revokes.
                vec![(delete(&share), 200)],
            ],
        ),
        certs.path(),
    )
    .await;
    let ent_srv = server(
        &scenario(
            json!({"unit": item(&format!("{appw}Unit"), "Unit", "F"),
                   "city": item(&format!("{appw}City"), "City", "Espoo"),
                   "raise": item(&format!("{share}/Rights"), "Rights", "Read,Write")}),
            &[
                vec![
                    // op (20) wrote Unit: 409 for ent (10); City is app A's: 200.
                    (hget("unit", &format!("{appw}Unit")), 409),
                    (hget("city", &format!("{appw}City")), 200),
                    // Deleting the subtree would take op's node along: 409.
                    (delete(&appw), 409),
                    (get(&appw), 200),
                    // op's own instance is not there for ent, whatever the command.
                    (get(&opw), 404),
                    (delete(&opw), 404),
                    (get(&entv), 200),
                ],
                // op granted it Read through the DACL MO: it reads op's instance and sees
                // the entry naming it, but cannot change the entry (no Delegate).
                vec![
                    (get(&opw), 200),
                    (delete(&opw), 403),
                    (get(&format!("{share}/Principal")), 200),
                    (hget("raise", &format!("{share}/Rights")), 403),
                    (delete(&share), 403),
                ],
                // Revoked: gone again, the entry too.
                vec![(get(&opw), 404), (get(&share), 404)],
            ],
        ),
        certs.path(),
    )
    .await;
    let iso_srv = server(
        &scenario(
            json!({"v": [{"ClientURI": format!("{V}/isov/"), "MOData": {"Vpn": {"Gw": "x"}}}],
                   "unit": item(&format!("{appw}Unit"), "Unit", "R")}),
            &[vec![
                (get(&appw), 403),
                (hget("unit", &format!("{appw}Unit")), 403),
                // ent's VPN instance: not granted, so not there.
                (get(&entv), 404),
                (get(&format!("{V}/*/")), 404),
                (json!(["HGET", "{repo}/v"]), 200),
                (get(&format!("{V}/isov/")), 200),
            ]],
        ),
        certs.path(),
    )
    .await;

    let op = account_for(&c, "op", &op_srv, &[W], 20);
    let ent = account_for(&c, "ent", &ent_srv, &[W, V], 10);
    let iso = account_for(&c, "iso", &iso_srv, &[V], 5);
    let a = Principal::App("A".into());
    let items =
        |text: serde_json::Value| omadmd::tree::json::parse_items(&text.to_string()).unwrap();
    c.auth
        .import_items(
            &a,
            &items(
                json!([{"ClientURI": appw, "MOData": {"Weather": {"Unit": "C", "City": "Oulu"}}}]),
            ),
            None,
            &|_| true,
        )
        .unwrap();
    for srv in ["op", "ent"] {
        c.auth
            .grant(
                &a,
                &appw,
                &format!("srv:{srv}"),
                Rights::parse(["Read", "Write"]).unwrap(),
            )
            .unwrap();
    }
    c.auth
        .import_items(
            &Principal::Server("op".into()),
            &items(json!([{"ClientURI": opw, "MOData": {"Weather": {"City": "Turku"}}}])),
            None,
            &|_| true,
        )
        .unwrap();
    c.auth
        .import_items(
            &Principal::Server("ent".into()),
            &items(json!([{"ClientURI": entv, "MOData": {"Vpn": {"Gw": "gw.example"}}}])),
            None,
            &|_| true,
        )
        .unwrap();

    for (acc, srv) in [(&op, &op_srv), (&ent, &ent_srv), (&iso, &iso_srv)] {
        let outcome = c
            .engine
            .run(acc, omadmd::protocol::alert::CLIENT_INITIATED, None)
            .await;
        assert_eq!(outcome.status, 200, "{}: {outcome:?}", acc.srv_id);
        assert!(
            srv.failures().is_empty(),
            "{}: {:?}",
            acc.srv_id,
            srv.failures()
        );
    }

    // Local apps: the owner ranks below every server, so op's Unit is not its to change;
    // another app finds nothing; the admin is outside the ordering.
    let unit = format!("{appw}Unit");
    let err = c
        .auth
        .set(&a, &unit, None, Input::Text("C".into()))
        .unwrap_err();
    assert!(
        matches!(&err, AccessError::Conflict(m) if m.contains("srv:op")),
        "{err}"
    );
    assert_eq!(c.auth.holder(&a, &unit).unwrap(), "srv:op");
    let err = c.auth.get(&Principal::App("B".into()), &unit).unwrap_err();
    assert!(matches!(err, AccessError::NotFound(_)), "{err}");
    c.auth
        .set(&Principal::Admin, &unit, None, Input::Text("C".into()))
        .unwrap();

    // Revocation counts from the next session; then op's delegation to ent through the
    // DACL MO, seen by ent, and revoked by op.
    c.auth.grant(&a, &appw, "srv:op", Rights::NONE).unwrap();
    for (acc, srv) in [
        (&op, &op_srv),
        (&ent, &ent_srv),
        (&op, &op_srv),
        (&ent, &ent_srv),
    ] {
        let outcome = c
            .engine
            .run(acc, omadmd::protocol::alert::CLIENT_INITIATED, None)
            .await;
        assert_eq!(outcome.status, 200, "{}: {outcome:?}", acc.srv_id);
        assert!(
            srv.failures().is_empty(),
            "{}: {:?}",
            acc.srv_id,
            srv.failures()
        );
    }
}
