//! Unit tests of client-initiated bootstrap: the settings read from an account, the checks
//! of an answer, applying and recording in a real store, and whole passes against an
//! in-process `omadm-devserver` in bootstrap-server mode over real TLS.

use crate::devserver::{Certificates, DevServer, DevServerConfig, RunningServer};
use crate::transport::ClientAuth;
use crate::tree::registry::Registry;

use super::*;

const SETTINGS: &str = "urn:oma:mo:ext-omadmd-test-settings:1.0";

struct Fixture {
    auth: Arc<Authority>,
    store: Arc<Pool>,
    _tmp: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Pool::open(
            &tmp.path().join("store.db"),
            crate::store::Bounds::default(),
            1,
        )
        .unwrap(),
    );
    let auth = Arc::new(Authority::new(
        store.clone(),
        Registry::with_builtin(),
        Box::new(|_| {}),
    ));
    Fixture {
        auth,
        store,
        _tmp: tmp,
    }
}

impl Fixture {
    /// Writes MO serialization `items` as the admin.
    fn admin_writes(&self, items: serde_json::Value) {
        let items: Vec<MoItem> = serde_json::from_value(items).unwrap();
        self.auth
            .import_items(&Principal::Admin, &items, None, &|_| true)
            .unwrap();
    }

    fn pending(&self) -> Vec<Found> {
        pending(&self.auth, &self.store, &[]).unwrap()
    }

    fn srv_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = crate::session::account::load_all(&self.auth)
            .unwrap()
            .into_iter()
            .map(|a| a.srv_id)
            .collect();
        ids.sort();
        ids
    }

    fn server_bootstrap(&self) -> ServerBootstrap {
        ServerBootstrap::new(
            self.auth.clone(),
            self.store.clone(),
            "IMEI:1".into(),
            Vec::new(),
        )
    }
}

/// The item of a DM account `miid` for server `srv` with `more` merged into its DMAcc node.
fn account(miid: &str, srv: &str, more: serde_json::Value) -> serde_json::Value {
    let mut acc = serde_json::json!({"SrvID": srv, "SrvURI": format!("https://{srv}.example/dm"), "Perm": {}});
    if let (Some(acc), serde_json::Value::Object(more)) = (acc.as_object_mut(), more) {
        acc.extend(more);
    }
    serde_json::json!({"ClientURI": format!("{DMACC}/{miid}/"), "MOData": {"DMAcc": acc}})
}

/// A bootstrap-only account `boot` naming `url`.
fn boot_account(url: &str, more: serde_json::Value) -> serde_json::Value {
    let mut auth = serde_json::json!({"Bootstrap": {"ServerURI": url}});
    if let (Some(a), serde_json::Value::Object(more)) = (auth.as_object_mut(), more) {
        for (k, v) in more {
            match (a.get_mut(&k), v) {
                (Some(serde_json::Value::Object(old)), serde_json::Value::Object(new)) => {
                    old.extend(new)
                }
                (_, v) => {
                    a.insert(k, v);
                }
            }
        }
    }
    account("boot", "bootstrap", serde_json::json!({"Auth": auth}))
}

fn response(status: u16, content_type: Option<&str>, body: &str) -> Response {
    Response {
        status,
        headers: content_type
            .map(|t| vec![("content-type".to_owned(), t.to_owned())])
            .unwrap_or_default(),
        body: body.as_bytes().to_vec(),
    }
}

fn the_pending(f: &Fixture) -> Pending {
    match f.pending().as_slice() {
        [(_, Ok(p))] => p.clone(),
        other => panic!("{other:?}"),
    }
}

fn refusal(e: Failure) -> String {
    match e {
        Failure::Refused(lines) => lines.join("\n"),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn accounts_without_a_bootstrap_server_are_not_pending_and_settings_follow_the_account() {
    let f = fixture();
    f.admin_writes(serde_json::json!([account(
        "a",
        "a",
        serde_json::json!({})
    )]));
    assert!(f.pending().is_empty());

    f.admin_writes(serde_json::json!([boot_account(
        "https://bs.example/b",
        serde_json::json!({"Trsp": {"Data": "dev", "Secret": "pw"}})
    )]));
    let p = the_pending(&f);
    assert_eq!(
        (p.miid.as_str(), p.server_uri.as_str()),
        ("boot", "https://bs.example/b")
    );
    assert_eq!(
        p.settings.client_auth,
        ClientAuth::Basic {
            user: "dev".into(),
            password: "pw".into()
        }
    );
    assert!(matches!(p.settings.trust, Trust::Roots { .. }));
    assert_eq!(p.settings.max_body_bytes, MAX_RESPONSE_BYTES);

    // ServerPubKey (a DER certificate) is the trust, before Ext/CACert.
    f.admin_writes(serde_json::json!([
        {"ClientURI": format!("{DMACC}/boot/Ext"), "MOData": {"Ext": {"CACert": "CA PEM"}}}
    ]));
    assert_eq!(the_pending(&f).settings.trust, Trust::Pem("CA PEM".into()));
    f.admin_writes(
        serde_json::json!([{"ClientURI": format!("{DMACC}/boot/Auth/Bootstrap/ServerPubKey"),
        "MOData": {"ServerPubKey": "AAEC"}}]),
    );
    assert_eq!(
        the_pending(&f).settings.trust,
        Trust::Pem("-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n".into())
    );

    // SecMode TLS is the default; another mode is not implemented.
    for (mode, usable) in [("TLS", true), ("tls", true), ("PSK", false)] {
        f.admin_writes(
            serde_json::json!([{"ClientURI": format!("{DMACC}/boot/Auth/Bootstrap/SecMode"),
            "MOData": {"SecMode": mode}}]),
        );
        match f.pending().as_slice() {
            [(_, Ok(_))] => assert!(usable, "{mode}"),
            [(_, Err(e))] => {
                assert!(!usable, "{mode}: {e}");
                assert!(e.contains("SecMode \"PSK\" is not supported"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn answers_are_refused_whole_unless_a_good_mo_serialization() {
    let types = Registry::with_builtin();
    let types = types.types();
    let uri = "https://bs.example/b";
    let good = serde_json::json!([account("acme", "acme", serde_json::json!({}))]).to_string();

    let items = read_answer(uri, &response(200, Some(MO_JSON), &good), types).unwrap();
    assert_eq!(items.len(), 1);
    assert!(read_answer(uri, &response(200, None, &good), types).is_ok());
    assert!(
        read_answer(
            uri,
            &response(200, Some("application/json; charset=utf-8"), &good),
            types
        )
        .is_ok()
    );

    for status in [404, 401, 302] {
        let e = read_answer(uri, &response(status, Some(MO_JSON), &good), types).unwrap_err();
        assert!(matches!(e, Failure::Status(s) if s == status) && !e.retried());
    }
    for status in [503, 500, 429, 408] {
        let e = read_answer(uri, &response(status, None, ""), types).unwrap_err();
        assert!(e.retried(), "{status}");
    }

    let e = read_answer(uri, &response(200, Some("text/html"), &good), types).unwrap_err();
    assert!(refusal(e).contains("Content-Type \"text/html\" is not an MO serialization"));
    let e = read_answer(uri, &response(200, None, "<html/>"), types).unwrap_err();
    assert!(refusal(e).starts_with(&format!("{uri}: not an MO serialization")));
    let e = read_answer(uri, &response(200, None, "[]"), types).unwrap_err();
    assert!(refusal(e).contains("nothing to bootstrap"));
    let e = read_answer(uri, &response(200, None, "[{\"ClientURI\": 1}"), types).unwrap_err();
    assert!(refusal(e).starts_with(&format!("{uri}:1: ")));

    // Each bad item with its line: the second lacks the SrvURI the DDF requires, the third
    // writes DevInfo.
    let bad = format!(
        "[\n{},\n{},\n{}\n]",
        account("acme", "acme", serde_json::json!({})),
        serde_json::json!({"ClientURI": format!("{DMACC}/b2/"), "MOData": {"DMAcc": {"SrvID": "b2"}}}),
        serde_json::json!({"ClientURI": "urn:oma:mo:oma-dm-devinfo:1.0/0/", "MOData": {"DevInfo": {}}}),
    );
    let text = refusal(read_answer(uri, &response(200, None, &bad), types).unwrap_err());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!(
            "{uri}:3: {DMACC}/b2/: DMAcc: has 0 child(ren) named SrvURI"
        )),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!("{uri}:4: urn:oma:mo:oma-dm-devinfo:1.0/0/: ")),
        "{text}"
    );
}

#[test]
fn an_answer_is_applied_as_the_admin_once_and_recorded() {
    let f = fixture();
    f.admin_writes(serde_json::json!([boot_account(
        "https://bs.example/b",
        serde_json::json!({})
    )]));
    let p = the_pending(&f);
    let answer = serde_json::json!([
        account("acme", "acme", serde_json::json!({"Perm": {"1": {"MOID": SETTINGS}}})),
        {"ClientURI": format!("{SETTINGS}/s1/"), "MOData": {"Settings": {"A": "x"}}},
        // The bootstrap account itself may be rewritten by its own server.
        {"ClientURI": format!("{DMACC}/boot/Name"), "MOData": {"Name": "provisioned"}}
    ])
    .to_string();
    let written = apply(
        &f.auth,
        &f.store,
        &p,
        &response(200, Some(MO_JSON), &answer),
    )
    .unwrap();
    assert_eq!(written.len(), 3);
    assert_eq!(f.srv_ids(), ["acme", "bootstrap"]);
    let info = f.store.reader().instance(SETTINGS, "s1").unwrap().unwrap();
    assert_eq!(info.owner, Principal::Admin.to_string());
    // Done: not pending any more, until the account names another bootstrap server.
    assert!(f.pending().is_empty());
    f.admin_writes(
        serde_json::json!([{"ClientURI": format!("{DMACC}/boot/Auth/Bootstrap/ServerURI"),
        "MOData": {"ServerURI": "https://other.example/b"}}]),
    );
    assert_eq!(the_pending(&f).server_uri, "https://other.example/b");
}

#[test]
fn an_answer_moving_its_account_to_another_bootstrap_server_does_not_bootstrap_again() {
    let f = fixture();
    f.admin_writes(serde_json::json!([boot_account(
        "https://bs.example/b",
        serde_json::json!({})
    )]));
    let p = the_pending(&f);
    let answer = serde_json::json!([{"ClientURI": format!("{DMACC}/boot/Auth/Bootstrap/ServerURI"),
        "MOData": {"ServerURI": "https://next.example/b"}}])
    .to_string();
    apply(&f.auth, &f.store, &p, &response(200, None, &answer)).unwrap();
    assert!(f.pending().is_empty());
}

#[test]
fn nothing_is_applied_when_an_item_touches_another_instance_or_the_import_refuses() {
    let f = fixture();
    f.admin_writes(serde_json::json!([
        boot_account("https://bs.example/b", serde_json::json!({})),
        account("other", "other", serde_json::json!({}))
    ]));
    let p = the_pending(&f);
    let before = f.store.reader().last_seq().unwrap();

    // Another server's account: refused, though the first item alone would do.
    let answer = serde_json::json!([
        account("acme", "acme", serde_json::json!({})),
        account(
            "other",
            "hijacked",
            serde_json::json!({"Auth": {"Bootstrap": {"ServerURI": "https://evil.example/"}}})
        )
    ])
    .to_string();
    let e = refusal(apply(&f.auth, &f.store, &p, &response(200, None, &answer)).unwrap_err());
    assert!(
        e.contains(&format!("{DMACC}/other/ exists"))
            && e.contains(&format!(
                "a bootstrap server creates instances and rewrites only its own DM account, \
                 {DMACC}/boot/"
            )),
        "{e}"
    );

    // A SrvID taken: the import refuses it, in its one transaction.
    let answer = serde_json::json!([
        {"ClientURI": format!("{SETTINGS}/s1/"), "MOData": {"Settings": {"A": "x"}}},
        account("acme", "other", serde_json::json!({}))
    ])
    .to_string();
    let e = refusal(apply(&f.auth, &f.store, &p, &response(200, None, &answer)).unwrap_err());
    assert!(e.contains("SrvID \"other\" is already used"), "{e}");

    assert_eq!(
        f.store.reader().last_seq().unwrap(),
        before,
        "nothing written"
    );
    assert_eq!(f.srv_ids(), ["bootstrap", "other"]);
    assert_eq!(f.pending().len(), 1, "not recorded: still pending");
}

#[test]
fn backoff_doubles_from_a_minute_up_to_an_hour_with_jitter() {
    assert_eq!(backoff(1, 0.5), Duration::from_secs(60));
    assert_eq!(backoff(2, 0.5), Duration::from_secs(120));
    assert_eq!(backoff(7, 0.5), Duration::from_secs(3600));
    assert_eq!(backoff(u32::MAX, 0.5), Duration::from_secs(3600));
    assert_eq!(backoff(1, 0.0), Duration::from_secs(54));
    assert!(backoff(1, 0.999) < Duration::from_secs(66));
    for _ in 0..100 {
        assert!((0.0..1.0).contains(&random_unit()));
    }
}

/// A devserver in bootstrap-server mode serving `doc`, its certificates in `dir`.
async fn bootstrap_server(dir: &Path, doc: &str) -> RunningServer {
    let mut config = DevServerConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.basic = Some("dev:pw".parse().unwrap());
    config.bootstrap = Some(doc.as_bytes().to_vec());
    DevServer::start(config).await.unwrap()
}

#[tokio::test]
async fn passes_fetch_over_tls_apply_once_and_refuse_an_untrusted_server() {
    let f = fixture();
    let certs = tempfile::tempdir().unwrap();
    let doc = serde_json::json!([account("acme", "acme", serde_json::json!({}))]).to_string();
    let server = bootstrap_server(certs.path(), &doc).await;
    let url = server.bootstrap_url().unwrap();
    f.admin_writes(serde_json::json!([boot_account(
        &url,
        serde_json::json!({"Trsp": {"Data": "dev", "Secret": "pw"}})
    )]));
    f.admin_writes(
        serde_json::json!([{"ClientURI": format!("{DMACC}/boot/Ext"),
        "MOData": {"Ext": {"CACert": server.ca_pem()}}}]),
    );
    let sb = f.server_bootstrap();
    let mut tries = HashMap::new();
    sb.pass(&mut tries).await;
    assert_eq!(f.srv_ids(), ["acme", "bootstrap"]);
    assert_eq!(server.bootstrap_fetches(), 1);
    assert!(tries.is_empty());
    sb.pass(&mut tries).await;
    assert_eq!(server.bootstrap_fetches(), 1, "once");
    // The server saw who asks.
    let asked = server
        .transcript()
        .into_iter()
        .find(|r| r.kind == "bootstrap")
        .unwrap();
    assert_eq!(
        asked.headers.get("omadm-devid").map(String::as_str),
        Some("IMEI:1")
    );

    // An account trusting another CA: the TLS handshake fails, nothing is fetched, and the
    // failure is final until the settings change.
    let other = tempfile::tempdir().unwrap();
    let foreign = Certificates::ensure(other.path(), &[]).unwrap().ca_pem;
    f.admin_writes(serde_json::json!([boot_account(
        &url,
        serde_json::json!({})
    ),]));
    f.admin_writes(
        serde_json::json!([{"ClientURI": format!("{DMACC}/boot/Ext"),
        "MOData": {"Ext": {"CACert": foreign}}},
        {"ClientURI": format!("{DMACC}/boot/Auth/Bootstrap/ServerURI"),
        "MOData": {"ServerURI": format!("{url}?again")}}]),
    );
    sb.pass(&mut tries).await;
    assert_eq!(server.bootstrap_fetches(), 1);
    let t = &tries["boot"];
    assert!(t.next.is_none() && t.failures == 1);
    sb.pass(&mut tries).await;
    assert_eq!(tries["boot"].failures, 1, "not tried again");
    server.shutdown().await;
}
