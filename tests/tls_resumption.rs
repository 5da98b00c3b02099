//! TLS session resumption end to end: DM sessions of the session engine against
//! `omadm-devserver` over real TLS, the devserver counting full and resumed handshakes.
//! Before each session the server closes its connections (as its keep-alive timeout would
//! in the hours between two sessions), so every session connects anew.
//!
//! Each test has SrvIDs of its own: the engine's HTTPS clients are kept per SrvID for the
//! whole process, and tests run in parallel.

use std::collections::BTreeMap;

use omadmd::devserver::{
    DevServer, DevServerConfig, Handshakes, Relay, RunningServer, Scenario,
    issue_client_certificate,
};
use omadmd::protocol::alert;
use omadmd::session::{Account, Limits};
use omadmd::transport::ClientAuth;

use crate::session_tls::{Client, account_as, client, server};

/// One GET per session.
const SCENARIO: &str = r#"{"name": "resume", "packages": [{"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//Man"]]}]}"#;

fn handshakes(full: usize, resumed: usize) -> Handshakes {
    Handshakes { full, resumed }
}

/// A session to `url` (the account's SrvURI when `None`) on a new connection; its status.
async fn session(c: &Client, srv: &RunningServer, acc: &Account, url: Option<&str>) -> i32 {
    srv.close_connections().await;
    c.engine.run(acc, alert::CLIENT_INITIATED, url).await.status
}

#[tokio::test]
async fn a_repeat_session_resumes_the_tls_session() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(SCENARIO, certs.path()).await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account_as(&c, "resume-repeat", &srv, srv.ca_pem(), &[]);
    assert_eq!(session(&c, &srv, &acc, None).await, 200);
    assert_eq!(srv.handshakes(), handshakes(1, 0));
    for n in 1..=3 {
        assert_eq!(session(&c, &srv, &acc, None).await, 200);
        assert_eq!(srv.handshakes(), handshakes(1, n), "session {}", n + 1);
    }
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());
}

#[tokio::test]
async fn a_changed_ca_drops_the_sessions_and_a_ca_that_no_longer_verifies_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(SCENARIO, certs.path()).await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account_as(&c, "resume-ca", &srv, srv.ca_pem(), &[]);
    assert_eq!(session(&c, &srv, &acc, None).await, 200);
    assert_eq!(session(&c, &srv, &acc, None).await, 200);
    assert_eq!(srv.handshakes(), handshakes(1, 1));

    // Another CA that does not sign the server: refused (495), no resumption around it.
    let other = tempfile::tempdir().unwrap();
    let impostor_ca = omadmd::devserver::Certificates::ensure(other.path(), &[]).unwrap();
    let refused = Account {
        ca_pem: Some(impostor_ca.ca_pem.clone()),
        ..acc.clone()
    };
    assert_eq!(session(&c, &srv, &refused, None).await, 495);
    assert_eq!(srv.handshakes(), handshakes(1, 1), "no handshake completed");

    // The server's CA among others: trusted, but the settings changed, so a full handshake
    // checks the certificate again.
    let widened = Account {
        ca_pem: Some(format!("{}{}", impostor_ca.ca_pem, srv.ca_pem())),
        ..acc.clone()
    };
    assert_eq!(session(&c, &srv, &widened, None).await, 200);
    assert_eq!(srv.handshakes(), handshakes(2, 1));
    assert_eq!(session(&c, &srv, &widened, None).await, 200);
    assert_eq!(srv.handshakes(), handshakes(2, 2));

    // Back to the first CA: settings changed again, a full handshake again.
    assert_eq!(session(&c, &srv, &acc, None).await, 200);
    assert_eq!(srv.handshakes(), handshakes(3, 2));
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());
}

#[tokio::test]
async fn a_changed_client_certificate_drops_the_sessions() {
    let certs = tempfile::tempdir().unwrap();
    let mut config = DevServerConfig::new(certs.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.scenario = Scenario::parse(SCENARIO, "test").unwrap();
    config.require_client_cert = true;
    let srv = DevServer::start(config).await.unwrap();
    let c = client(BTreeMap::new(), Limits::default());
    let with = |name: &str| {
        let id = issue_client_certificate(certs.path(), name).unwrap();
        ClientAuth::Certificate {
            chain_pem: id.cert_pem,
            key_pem: id.key_pem,
        }
    };
    let one = Account {
        auth: with("device-1"),
        ..account_as(&c, "resume-cert", &srv, srv.ca_pem(), &[])
    };
    let two = Account {
        auth: with("device-2"),
        ..one.clone()
    };
    let subjects = || {
        srv.transcript()
            .into_iter()
            .filter(|r| r.kind == "package#1")
            .map(|r| r.client_cert.unwrap_or_default())
            .collect::<Vec<_>>()
    };

    assert_eq!(session(&c, &srv, &one, None).await, 200);
    assert_eq!(session(&c, &srv, &one, None).await, 200);
    assert_eq!(srv.handshakes(), handshakes(1, 1));
    assert_eq!(session(&c, &srv, &two, None).await, 200);
    assert_eq!(srv.handshakes(), handshakes(2, 1), "a new identity: full");
    assert_eq!(session(&c, &srv, &two, None).await, 200);
    assert_eq!(srv.handshakes(), handshakes(2, 2));
    assert_eq!(
        subjects(),
        ["CN=device-1", "CN=device-1", "CN=device-2", "CN=device-2"],
        "a resumed session keeps the identity it was established with"
    );
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());
}

#[tokio::test]
async fn sessions_never_cross_servers_or_accounts() {
    let certs = tempfile::tempdir().unwrap();
    let first = server(SCENARIO, certs.path()).await;
    let second = server(SCENARIO, certs.path()).await;
    // The first server again, behind another port: a server that would accept the first
    // one's tickets if they were offered to it.
    let relay = Relay::start(first.addr()).await.unwrap();
    let relayed = format!("https://127.0.0.1:{}/dm", relay.addr().port());
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account_as(&c, "resume-cross", &first, first.ca_pem(), &[]);
    assert_eq!(session(&c, &first, &acc, None).await, 200);
    assert_eq!(session(&c, &first, &acc, None).await, 200);
    assert_eq!(first.handshakes(), handshakes(1, 1));

    // Same host, same CA, same account, another port: never offered, not even to the
    // server that issued it.
    assert_eq!(session(&c, &first, &acc, Some(&relayed)).await, 200);
    assert_eq!(
        first.handshakes(),
        handshakes(2, 1),
        "the first server's session was not offered on another port"
    );
    assert_eq!(session(&c, &first, &acc, Some(&relayed)).await, 200);
    assert_eq!(first.handshakes(), handshakes(2, 2), "its own session is");
    assert_eq!(session(&c, &second, &acc, Some(second.url())).await, 200);
    assert_eq!(second.handshakes(), handshakes(1, 0));

    // Another account with the same settings on the same server: its own full handshake.
    let other = account_as(&c, "resume-cross-2", &first, first.ca_pem(), &[]);
    assert_eq!(session(&c, &first, &other, None).await, 200);
    assert_eq!(first.handshakes(), handshakes(3, 2));
    assert_eq!(session(&c, &first, &acc, None).await, 200);
    assert_eq!(first.handshakes(), handshakes(3, 3));
    for srv in [&first, &second] {
        assert!(srv.failures().is_empty(), "{:?}", srv.failures());
    }
}
