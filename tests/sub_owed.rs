//! A SUB delivery that cannot go out (the server or the network unreachable, as during a
//! network move) is owed, not lost: the subscription is marked in the store, and the
//! subtree's current state goes out once the server can be reached again. Real TLS server
//! (`omadm-devserver`), real store.

use std::collections::BTreeMap;

use omadmd::authority::{Input, Principal, Rights};
use omadmd::protocol::alert;
use omadmd::session::Limits;
use omadmd::session::subscribe::{deliver, redeliver};
use omadmd::tree::builtin;

use crate::session_tls::{account, client, server};

/// A URL where nothing listens (a port bound, then let go).
fn unreachable_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("https://127.0.0.1:{port}/sub")
}

#[tokio::test]
async fn a_failed_sub_delivery_is_owed_and_sent_when_the_server_is_back() {
    let certs = tempfile::tempdir().unwrap();
    let c = client(BTreeMap::new(), Limits::default());
    let placeholder = server(
        r#"{"name": "none", "packages": [{"commands": [["END"]]}]}"#,
        certs.path(),
    )
    .await;
    let acc = account(&c, &placeholder, placeholder.ca_pem(), &[]);
    drop(placeholder);
    let root = format!("{}/{}/", builtin::DMACC, acc.miid);
    let scenario = format!(
        r#"{{"name": "sub-owed",
            "uploads": {{"sub/account": {{"accept": ["application/vnd.oma.dm.mo+json"]}}}},
            "packages": [{{"commands": [["SUB", "{root}", "{{repo}}/sub/account"]], "expect": [200]}}]}}"#
    );
    let srv = server(&scenario, certs.path()).await;
    let set = |path: &str, value: &str| {
        c.auth
            .set(
                &Principal::Admin,
                &format!("{root}{path}"),
                None,
                Input::Text(value.into()),
            )
            .unwrap()
    };
    set("SrvURI", srv.url());
    c.auth
        .grant(&Principal::Admin, &root, "srv:devserver", Rights::READ)
        .unwrap();
    let acc = omadmd::session::account::load_all(&c.auth)
        .unwrap()
        .remove(0);
    let outcome = c.engine.run(&acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    let subscriptions = || c.store.reader().subscriptions().unwrap();
    let sub = subscriptions().remove(0);
    assert!(!sub.owed);

    // The server's upload address is unreachable for a while: the change is owed.
    let resubscribe = |url: &str| {
        c.store
            .writer()
            .write(|tx| tx.subscribe("devserver", &sub.client_uri, url, 16))
            .unwrap();
    };
    resubscribe(&unreachable_url());
    deliver(c.engine.clone(), set("Name", "while-away")).await;
    assert!(subscriptions()[0].owed, "the failed delivery is recorded");
    assert!(srv.received("sub/account").is_empty());
    // Nothing is sent for other servers, or while it is still unreachable.
    redeliver(c.engine.clone(), Some("another".into())).await;
    redeliver(c.engine.clone(), Some("devserver".into())).await;
    assert!(subscriptions()[0].owed);

    // Reachable again: the current state goes out once, and nothing is owed any more.
    resubscribe(&sub.server_uri);
    redeliver(c.engine.clone(), None).await;
    let uploads = srv.received("sub/account");
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert!(String::from_utf8_lossy(&uploads[0].body).contains("while-away"));
    assert!(!subscriptions()[0].owed);
    redeliver(c.engine.clone(), None).await;
    assert_eq!(srv.received("sub/account").len(), 1, "owed once, sent once");
}
