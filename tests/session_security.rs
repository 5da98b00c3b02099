//! What a configured DM server can learn in a session about what is not its own: over real
//! TLS against `omadm-devserver`, every probe of another principal's instance answers like
//! a node that does not exist, and `nv=` never tests a secret.

use std::collections::BTreeMap;

use omadmd::authority::{Input, Principal, Rights};
use omadmd::protocol::alert;
use omadmd::session::Limits;
use omadmd::tree::builtin;

use crate::session_tls::{WEATHER, account, client, server};

#[tokio::test]
async fn a_server_cannot_probe_what_is_not_its_own() {
    let c = client(BTreeMap::new(), Limits::default());
    // An app's instance with a PIN, and the server's own account with a secret.
    let theirs = c
        .auth
        .create_instance(
            &Principal::App("org.example.Pin".into()),
            WEATHER,
            r#"{"Weather": {"City": "Oulu", "PIN": "4711"}}"#,
        )
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let dmacc = builtin::DMACC;
    let scenario = format!(
        r#"{{"name": "probe", "packages": [{{"commands": [
            ["GET", "{WEATHER}/(x)/City?nv=(x)/PIN:4711"],
            ["GET", "{WEATHER}/(x)/City?nv=(x)/PIN:0000"],
            ["GET", "{theirs}PIN"],
            ["GET", "{WEATHER}/nope/PIN"],
            ["GET", "{WEATHER}/*/"],
            ["GET", "{WEATHER}//City"],
            ["DELETE", "{theirs}"],
            ["DELETE", "{WEATHER}/nope/"],
            ["EXEC", "{theirs}PIN"],
            ["SUB", "{theirs}", "{{repo}}/sub"],
            ["GET", "{dmacc}/(x)/SrvID?nv=(x)/Auth/Trsp/Secret:pw"],
            ["GET", "{dmacc}/(x)/SrvID?nv=(x)/Auth/Trsp/Secret:wrong"]],
          "expect": [404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 400, 400]}}]}}"#
    );
    let srv = server(&scenario, certs.path()).await;
    let acc = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    let auth_items = omadmd::tree::json::parse_items(&format!(
        r#"[{{"ClientURI": "{dmacc}/{}/Auth", "MOData": {{"Auth": {{"Trsp": {{"Data": "d", "Secret": "pw"}}}}}}}}]"#,
        acc.miid
    ))
    .unwrap();
    c.auth
        .import_items(&Principal::Admin, &auth_items, None, &|_| true)
        .unwrap();
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    srv.wait_for_sessions(1).await;
    assert!(
        srv.failures().is_empty(),
        "{:?}\n{:#?}",
        srv.failures(),
        srv.summary()
    );
    // The first session's MO list names no instance the server may not read.
    let package1 = crate::session_tls::package_bodies(&srv, "package#1");
    let text = serde_json::to_string(&package1).unwrap();
    assert!(!text.contains(WEATHER), "{text}");
}

#[tokio::test]
async fn sub_deliveries_carry_no_news_of_secrets() {
    let certs = tempfile::tempdir().unwrap();
    let dmacc = builtin::DMACC;
    let c = client(BTreeMap::new(), Limits::default());
    // The server's own account, readable by it, with a credential in it.
    let srv_placeholder = server(
        r#"{"name": "none", "packages": [{"commands": [["END"]]}]}"#,
        certs.path(),
    )
    .await;
    let acc = account(&c, &srv_placeholder, srv_placeholder.ca_pem(), &[]);
    drop(srv_placeholder);
    let root = format!("{dmacc}/{}/", acc.miid);
    let scenario = format!(
        r#"{{"name": "sub-account",
            "uploads": {{"sub/account": {{"accept": ["application/vnd.oma.dm.mo+json"]}}}},
            "packages": [{{"commands": [["SUB", "{root}", "{{repo}}/sub/account"]], "expect": [200]}}]}}"#
    );
    let srv = server(&scenario, certs.path()).await;
    let items = omadmd::tree::json::parse_items(&format!(
        r#"[{{"ClientURI": "{root}Auth", "MOData": {{"Auth": {{"Trsp": {{"Data": "d", "Secret": "old"}}}}}}}}]"#
    ))
    .unwrap();
    c.auth
        .import_items(&Principal::Admin, &items, None, &|_| true)
        .unwrap();
    c.auth
        .set(
            &Principal::Admin,
            &format!("{root}SrvURI"),
            None,
            Input::Text(srv.url().into()),
        )
        .unwrap();
    c.auth
        .grant(&Principal::Admin, &root, "srv:devserver", Rights::READ)
        .unwrap();
    let acc = omadmd::session::account::load_all(&c.auth)
        .unwrap()
        .remove(0);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    let deliver = |uri: String, value: &str| {
        let changes = c
            .auth
            .set(&Principal::Admin, &uri, None, Input::Text(value.into()))
            .unwrap();
        omadmd::session::subscribe::deliver(c.engine.clone(), changes)
    };
    // Rotating the secret is not news to the server; renaming the account is.
    deliver(format!("{root}Auth/Trsp/Secret"), "rotated-pw-7f3").await;
    assert!(srv.received("sub/account").is_empty());
    deliver(format!("{root}Name"), "Acme").await;
    let uploads = srv.received("sub/account");
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    let body = String::from_utf8_lossy(&uploads[0].body);
    assert!(
        body.contains("Acme") && !body.contains("rotated-pw-7f3") && !body.contains("Secret"),
        "{body}"
    );
}
