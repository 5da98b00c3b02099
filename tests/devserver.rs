//! `omadm-devserver` over real TLS on loopback. The omadmd client side is driven by a small
//! hand-written client here (tokio-rustls + hyper's HTTP/1.1 client, trusting the server's
//! generated CA), so each test controls exactly what the "device" sends. The last tests run
//! the built binary.

use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use omadmd::devserver::certs::{CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY};
use omadmd::devserver::{
    BasicAuth, DevServer, DevServerConfig, Direction, Record, RunningServer, Scenario,
    issue_client_certificate,
};
use omadmd::protocol::alert::{BOOTSTRAP_COMPLETE, CLIENT_INITIATED};
use omadmd::protocol::{
    ACCEPT_HEADER, Alert, Command, DEVID_HEADER, INITIATION, MO_JSON, Package1, Package2, Package3,
    REQUEST, RESPONSE, Status,
};
use omadmd::tree::json::MoItem;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

// ---------------------------------------------------------------------------------------
// A minimal HTTPS client

struct Client {
    tls: Arc<rustls::ClientConfig>,
    /// SNI / certificate name to use instead of the URL's host.
    server_name: Option<String>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn package2(&self) -> Vec<Command> {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.header("content-type"), Some(REQUEST));
        Package2::parse(&self.body)
            .unwrap()
            .commands
            .into_iter()
            .map(|c| c.unwrap())
            .collect()
    }
}

impl Client {
    fn builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
    }

    fn roots(ca_pem: &str) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(der.unwrap()).unwrap();
        }
        roots
    }

    fn new(ca_pem: &str) -> Client {
        let config = Client::builder()
            .with_root_certificates(Client::roots(ca_pem))
            .with_no_client_auth();
        Client {
            tls: Arc::new(config),
            server_name: None,
        }
    }

    fn with_identity(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Client {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = Client::builder()
            .with_root_certificates(Client::roots(ca_pem))
            .with_client_auth_cert(chain, key)
            .unwrap();
        Client {
            tls: Arc::new(config),
            server_name: None,
        }
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Resp, String> {
        tokio::time::timeout(
            Duration::from_secs(20),
            self.send_inner(method, url, headers, body),
        )
        .await
        .map_err(|_| format!("{method} {url} timed out"))?
    }

    async fn send_inner(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Resp, String> {
        let rest = url.strip_prefix("https://").ok_or("not https")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = authority.rsplit_once(':').ok_or("no port")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((host, port.parse::<u16>().unwrap()))
            .await
            .map_err(|e| e.to_string())?;
        let name = self.server_name.clone().unwrap_or_else(|| host.to_owned());
        let name = ServerName::try_from(name).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(if path.is_empty() { "/" } else { path })
            .header("host", authority);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", url, headers, b"").await.unwrap()
    }

    /// Package#1 with a ClientInitiatedMgmt alert.
    async fn package1(&self, server: &RunningServer, dev: &str) -> Resp {
        let p1 = Package1 {
            mos: vec![],
            alert: vec![Alert::of_type(CLIENT_INITIATED)],
        };
        self.post_package1(server, dev, &serde_json::to_vec(&p1).unwrap(), &[])
            .await
    }

    async fn post_package1(
        &self,
        server: &RunningServer,
        dev: &str,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut headers = vec![
            ("content-type", INITIATION),
            ("accept", REQUEST),
            (DEVID_HEADER, dev),
        ];
        headers.extend_from_slice(extra);
        self.send("POST", server.url(), &headers, body)
            .await
            .unwrap()
    }

    /// Package#3 with these status codes.
    async fn package3(&self, server: &RunningServer, dev: &str, codes: &[u16]) -> Resp {
        let p3 = Package3 {
            status: codes.iter().map(|c| Status::code(*c)).collect(),
            alert: vec![],
        };
        let headers = [
            ("content-type", RESPONSE),
            ("accept", REQUEST),
            (DEVID_HEADER, dev),
        ];
        self.send(
            "POST",
            server.url(),
            &headers,
            &serde_json::to_vec(&p3).unwrap(),
        )
        .await
        .unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn config(dir: &Path, scenario: Option<&str>) -> DevServerConfig {
    let mut config = DevServerConfig::new(dir.join("certs"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    if let Some(text) = scenario {
        config.scenario = Scenario::parse(text, "test").unwrap();
    }
    config
}

async fn start(dir: &Path, scenario: Option<&str>) -> RunningServer {
    DevServer::start(config(dir, scenario)).await.unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scenarios")
        .join(name)
}

// ---------------------------------------------------------------------------------------
// Certificates

#[tokio::test]
async fn certificates_are_generated_once_then_reused_and_extended() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");

    let server = start(dir.path(), None).await;
    let c = server.certificates().clone();
    assert_eq!(c.written, [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY]);
    assert!(c.ca_generated());
    assert_eq!(mode(&certs.join(CA_KEY)), 0o600);
    assert_eq!(mode(&certs.join(SERVER_KEY)), 0o600);
    for name in ["localhost", "127.0.0.1", "::1"] {
        assert!(
            c.server_names.iter().any(|n| n == name),
            "{:?}",
            c.server_names
        );
    }
    assert_eq!(
        std::fs::read_to_string(certs.join(CA_CERT)).unwrap(),
        server.ca_pem()
    );
    assert!(server.url().starts_with("https://127.0.0.1:") && server.url().ends_with("/dm"));

    // The built-in scenario: GET DevInfo + HGET from the repository, whose URL works, then END.
    let client = Client::new(server.ca_pem());
    let cmds = client.package1(&server, "IMEI:1").await.package2();
    assert_eq!(cmds.len(), 2);
    assert_eq!(
        cmds[0].to_wire(),
        ["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"]
    );
    let Command::Hget { server_uri, .. } = &cmds[1] else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        server_uri,
        &format!("{}/settings/weather", server.repo_url())
    );
    let got = client.get(server_uri, &[("accept", MO_JSON)]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some(MO_JSON));
    let items: Vec<MoItem> = serde_json::from_slice(&got.body).unwrap();
    assert!(
        items[0]
            .client_uri
            .starts_with("urn:oma:mo:ext-devserver-weather:1.0/")
    );
    assert_eq!(
        client
            .package3(&server, "IMEI:1", &[200, 200])
            .await
            .package2(),
        [Command::End]
    );
    server.wait_for_sessions(1).await;
    assert!(server.failures().is_empty(), "{:?}", server.failures());
    // SNI "localhost" is covered as well as the IP address.
    let by_name = Client {
        server_name: Some("localhost".into()),
        ..Client::new(server.ca_pem())
    };
    assert_eq!(
        by_name
            .get(&format!("{}/settings/weather", server.repo_url()), &[])
            .await
            .status,
        200
    );
    let ca_before = server.ca_pem().to_owned();
    server.shutdown().await;

    // Second start: everything reused.
    let server = start(dir.path(), None).await;
    assert!(server.certificates().written.is_empty());
    assert_eq!(server.ca_pem(), ca_before);
    server.shutdown().await;

    // A new --san: the server certificate is reissued by the same CA, which stays.
    let mut cfg = config(dir.path(), None);
    cfg.extra_sans = vec!["devserver.test".into()];
    let server = DevServer::start(cfg).await.unwrap();
    assert_eq!(server.certificates().written, [SERVER_CERT, SERVER_KEY]);
    assert_eq!(server.ca_pem(), ca_before);
    let by_san = Client {
        server_name: Some("devserver.test".into()),
        ..Client::new(server.ca_pem())
    };
    assert_eq!(
        by_san
            .get(&format!("{}/settings/weather", server.repo_url()), &[])
            .await
            .status,
        200
    );
    // A client trusting another CA refuses the server.
    let other_dir = tempfile::tempdir().unwrap();
    let other = omadmd::devserver::Certificates::ensure(other_dir.path(), &[]).unwrap();
    let stranger = Client::new(&other.ca_pem);
    let err = stranger
        .send("GET", server.repo_url(), &[], b"")
        .await
        .unwrap_err();
    assert!(err.contains("TLS"), "{err}");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The package loop

const TWO_PACKAGES: &str = r#"{
  "name": "two",
  "repository": {"settings/weather": [{"ClientURI": "urn:oma:mo:ext-devserver-weather:1.0/s/",
                                        "MOData": {"Weather": {"City": "Oulu"}}}]},
  "packages": [
    {"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"], ["HGET", "{repo}/settings/weather"]],
     "expect": [200, 200]},
    {"commands": [["DELETE", "urn:oma:mo:ext-devserver-weather:1.0/s/"]]}
  ]}"#;

#[tokio::test]
async fn two_package_session_appends_end_and_reports_expectation_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TWO_PACKAGES)).await;
    let client = Client::new(server.ca_pem());

    let cmds = client.package1(&server, "dev-A").await.package2();
    assert_eq!(cmds.len(), 2);
    assert_eq!(
        cmds[1].to_wire(),
        ["HGET", &format!("{}/settings/weather", server.repo_url())]
    );
    let cmds = client
        .package3(&server, "dev-A", &[200, 404])
        .await
        .package2();
    assert_eq!(
        cmds.iter().map(Command::name).collect::<Vec<_>>(),
        ["DELETE", "END"],
        "END is appended to the last package"
    );
    server.wait_for_sessions(1).await;

    let results = server.results();
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert!(r.finished && !r.passed());
    assert_eq!(r.dev_id, "dev-A");
    assert_eq!(r.reason.as_deref(), Some(CLIENT_INITIATED));
    assert_eq!(r.statuses, [vec![200, 404]]);
    assert_eq!(r.packages_sent, 2);
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert!(
        r.failures[0].contains("command 2 (HGET https://")
            && r.failures[0].contains("expected 200, got 404"),
        "{:?}",
        r.failures
    );
    let summary = server.summary();
    for want in [
        "session 1 package#2 → 2 commands (GET, HGET)",
        "session 1 package#3 ← [200, 404] ✗ expected [200, 200]",
        "session 1 package#2 → 2 commands (DELETE, END)",
        "session 1 finished: 1 failure(s) ✗",
    ] {
        assert!(
            summary.iter().any(|l| l == want),
            "{want:?} not in {summary:#?}"
        );
    }

    // A Package#3 after END is refused and recorded against the session.
    let late = client.package3(&server, "dev-A", &[200]).await;
    assert_eq!(late.status, 400);
    assert!(server.results()[0].failures[1].contains("after session 1 ended"));

    // The second session from the same device passes.
    client.package1(&server, "dev-A").await.package2();
    client
        .package3(&server, "dev-A", &[200, 200])
        .await
        .package2();
    let results = server.results();
    assert!(results[1].passed(), "{:?}", results[1]);
    assert_eq!(server.failures().len(), 2, "{:?}", server.failures());
    server.shutdown().await;
}

#[tokio::test]
async fn what_the_client_sends_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(TWO_PACKAGES)).await;
    let client = Client::new(server.ca_pem());

    // Two session-reason alerts, and no Accept.
    let p1 = Package1 {
        mos: vec![],
        alert: vec![
            Alert::of_type(CLIENT_INITIATED),
            Alert::of_type(BOOTSTRAP_COMPLETE),
        ],
    };
    let headers = [("content-type", INITIATION), (DEVID_HEADER, "dev-B")];
    let resp = client
        .send(
            "POST",
            server.url(),
            &headers,
            &serde_json::to_vec(&p1).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.package2().len(), 2, "the session goes on");
    // Wrong number of statuses.
    client.package3(&server, "dev-B", &[200]).await.package2();
    let failures = &server.results()[0].failures;
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures[0].contains("without Accept"));
    assert!(failures[1].contains("2 session-reason alerts"));
    assert!(failures[2].contains("1 status(es) for the 2 command(s)"));
    // The transcript carries the problems on the request records.
    let with_problems: Vec<Record> = server
        .transcript()
        .into_iter()
        .filter(|r| !r.problems.is_empty())
        .collect();
    assert_eq!(with_problems.len(), 2);
    assert_eq!(with_problems[0].kind, "package#1");
    assert_eq!(with_problems[1].kind, "package#3");

    // No OMADM-DevID: 400, a problem of no session.
    let resp = client
        .send(
            "POST",
            server.url(),
            &[("content-type", INITIATION)],
            b"{\"Alert\": []}",
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(server.problems().len(), 1);
    // An invalid Package#1 ends its session at once.
    let resp = client
        .post_package1(&server, "dev-C", b"{\"Alert\": 5}", &[])
        .await;
    assert_eq!(resp.status, 400);
    let r = &server.results()[1];
    assert!(
        r.finished && r.failures[0].contains("Package#1 is not valid"),
        "{r:?}"
    );
    // GET on the DM URL.
    assert_eq!(client.get(server.url(), &[]).await.status, 405);
    server.shutdown().await;
}

#[tokio::test]
async fn http_status_and_raw_packages_are_sent_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = std::fs::read_to_string(fixture("errors.json")).unwrap();
    let server = start(dir.path(), Some(&scenario)).await;
    let client = Client::new(server.ca_pem());

    // Session 1: 503, no body; the session is over.
    let resp = client.package1(&server, "dev").await;
    assert_eq!(resp.status, 503);
    assert!(resp.body.is_empty());
    assert_eq!(server.finished_sessions(), 1);

    // Session 2: the raw body verbatim; the client's statuses for it; then END from the server.
    let resp = client.package1(&server, "dev").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some(REQUEST));
    assert_eq!(
        String::from_utf8(resp.body).unwrap(),
        r#"{"CMD": [["FROB", "x"], ["GET"], ["GET", "urn:oma:mo:oma-dm-devinfo:1.0//DevID"]]}"#
    );
    assert_eq!(
        client
            .package3(&server, "dev", &[501, 400, 200])
            .await
            .package2(),
        [Command::End]
    );

    // Session 3: not JSON at all (after a 100 ms delay); the session ends with it.
    let t = Instant::now();
    let resp = client.package1(&server, "dev").await;
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(resp.body, b"<SyncML>not a DM 2.0 package</SyncML>");
    server.wait_for_sessions(3).await;
    assert!(server.failures().is_empty(), "{:?}", server.failures());
    let summary = server.summary().join("\n");
    assert!(
        summary.contains("session 1 package#2 → HTTP 503 (scripted, no body)"),
        "{summary}"
    );
    assert!(summary.contains("[END added by the server]"), "{summary}");
    assert!(
        summary.contains("3 command(s) (FROB (invalid), GET (invalid), GET)"),
        "{summary}"
    );
    assert!(summary.contains("not a valid Package#2"), "{summary}");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The repository

const REPO: &str = r#"{
  "repository": {
    "blob": {"content_type": "application/octet-stream", "body": "0123456789"},
    "tnds": {"content_type": "application/vnd.syncml.dmtnds+xml", "body": "<MgmtTree/>"},
    "liar": {"content_type": "text/plain", "body": "not MO", "ignore_accept": true}
  },
  "uploads": {
    "sub/weather": {"accept": ["application/vnd.oma.dm.mo+json"], "refuse_first": true},
    "strict": {"accept": ["application/vnd.oma.dm.mo+json"]}
  },
  "packages": [{"commands": [["END"]]}]}"#;

#[tokio::test]
async fn repository_serves_ranges_and_honours_accept() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(REPO)).await;
    let client = Client::new(server.ca_pem());
    let url = |p: &str| format!("{}/{p}", server.repo_url());

    let full = client.get(&url("blob"), &[]).await;
    assert_eq!(
        (full.status, full.body.as_slice()),
        (200, &b"0123456789"[..])
    );
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let etag = full.header("etag").unwrap().to_owned();

    let part = client.get(&url("blob"), &[("range", "bytes=2-5")]).await;
    assert_eq!((part.status, part.body.as_slice()), (206, &b"2345"[..]));
    assert_eq!(part.header("content-range"), Some("bytes 2-5/10"));
    let tail = client
        .get(&url("blob"), &[("range", "bytes=7-"), ("if-range", &etag)])
        .await;
    assert_eq!((tail.status, tail.body.as_slice()), (206, &b"789"[..]));
    let stale = client
        .get(
            &url("blob"),
            &[("range", "bytes=7-"), ("if-range", "\"old\"")],
        )
        .await;
    assert_eq!(
        stale.status, 200,
        "If-Range mismatch serves the whole entry"
    );
    let past = client.get(&url("blob"), &[("range", "bytes=10-20")]).await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */10"));

    let refused = client.get(&url("tnds"), &[("accept", MO_JSON)]).await;
    assert_eq!(refused.status, 406);
    assert_eq!(
        refused.header(ACCEPT_HEADER),
        Some("application/vnd.syncml.dmtnds+xml")
    );
    let ok = client
        .get(
            &url("tnds"),
            &[("accept", "application/vnd.syncml.dmtnds+xml")],
        )
        .await;
    assert_eq!(ok.status, 200);
    let liar = client.get(&url("liar"), &[("accept", MO_JSON)]).await;
    assert_eq!(liar.status, 200);
    assert_eq!(liar.header("content-type"), Some("text/plain"));
    assert_eq!(client.get(&url("missing"), &[]).await.status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn repository_records_puts_and_posts_and_refuses_once_with_415() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(REPO)).await;
    let client = Client::new(server.ca_pem());
    let url = |p: &str| format!("{}/{p}", server.repo_url());
    let mo = br#"[{"ClientURI": "urn:oma:mo:x:1.0//", "MOData": {"X": {"A": 1}}}]"#;

    // PUT new → 201, PUT again → 200, POST → 200; GET returns what was stored.
    let put = |body: &'static [u8], ct: &'static str| {
        let client = &client;
        let u = url("up/x");
        async move {
            client
                .send("PUT", &u, &[("content-type", ct)], body)
                .await
                .unwrap()
        }
    };
    assert_eq!(put(b"one", "text/plain").await.status, 201);
    assert_eq!(put(mo, MO_JSON).await.status, 200);
    let post = client
        .send("POST", &url("up/x"), &[("content-type", MO_JSON)], b"[]")
        .await
        .unwrap();
    assert_eq!(post.status, 200);
    let got = client.get(&url("up/x"), &[]).await;
    assert_eq!(
        (got.body.as_slice(), got.header("content-type")),
        (&b"[]"[..], Some(MO_JSON))
    );
    let ups = server.received("up/x");
    assert_eq!(ups.len(), 3);
    assert_eq!(
        ups.iter()
            .map(|u| (u.method.as_str(), u.status))
            .collect::<Vec<_>>(),
        [("PUT", 201), ("PUT", 200), ("POST", 200)]
    );
    assert_eq!(ups[0].content_type.as_deref(), Some("text/plain"));
    assert_eq!(ups[0].text(), Some("one"));
    assert_eq!(ups[1].json().unwrap()[0]["MOData"]["X"]["A"], 1);
    assert_eq!(server.received(&url("up/x")).len(), 3, "full URLs work too");

    // refuse_first: 415 + OMADM-Accept once, then stored.
    let first = client
        .send("PUT", &url("sub/weather"), &[("content-type", MO_JSON)], mo)
        .await
        .unwrap();
    assert_eq!(first.status, 415);
    assert_eq!(first.header(ACCEPT_HEADER), Some(MO_JSON));
    let retry = client
        .send("PUT", &url("sub/weather"), &[("content-type", MO_JSON)], mo)
        .await
        .unwrap();
    assert_eq!(retry.status, 201);
    let ups = server.received("sub/weather");
    assert_eq!(ups.iter().map(|u| u.status).collect::<Vec<_>>(), [415, 201]);
    assert!(!ups[0].stored() && ups[1].stored());

    // accept list: another type gets 415; retrying in a type still not listed is a failure.
    client.package1(&server, "dev").await.package2();
    let json = client
        .send(
            "PUT",
            &url("strict"),
            &[("content-type", "application/json")],
            b"{}",
        )
        .await
        .unwrap();
    assert_eq!(
        (json.status, json.header(ACCEPT_HEADER)),
        (415, Some(MO_JSON))
    );
    assert!(server.failures().is_empty(), "{:?}", server.failures());
    let again = client
        .send(
            "PUT",
            &url("strict"),
            &[("content-type", "application/json")],
            b"{}",
        )
        .await
        .unwrap();
    assert_eq!(again.status, 415);
    let failures = server.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0]
            .starts_with("session 1: PUT /repo/strict: retried with Content-Type application/json")
    );
    let summary = server.summary().join("\n");
    assert!(
        summary.contains("session 1 repository PUT /repo/strict ← 2 bytes (application/json) → 415 (OMADM-Accept: application/vnd.oma.dm.mo+json)"),
        "{summary}"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn basic_auth_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None);
    cfg.basic = Some("alice:s3cret".parse::<BasicAuth>().unwrap());
    let server = DevServer::start(cfg).await.unwrap();
    let client = Client::new(server.ca_pem());

    let none = client.package1(&server, "dev").await;
    assert_eq!(none.status, 401);
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Basic realm=")
    );
    let wrong = client
        .post_package1(
            &server,
            "dev",
            b"{}",
            &[("authorization", "Basic YWxpY2U6bm9wZQ==")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(
        server.results().is_empty(),
        "refused requests start no session"
    );
    let p1 = serde_json::to_vec(&Package1 {
        mos: vec![],
        alert: vec![Alert::of_type(CLIENT_INITIATED)],
    })
    .unwrap();
    let right = client
        .post_package1(
            &server,
            "dev",
            &p1,
            &[("authorization", "Basic YWxpY2U6czNjcmV0")],
        )
        .await;
    assert_eq!(right.package2().len(), 2);
    // The repository needs the credentials too.
    assert_eq!(
        client
            .get(&format!("{}/settings/weather", server.repo_url()), &[])
            .await
            .status,
        401
    );
    let transcript = serde_json::to_string(&server.transcript()).unwrap();
    assert!(transcript.contains("Basic user=alice"));
    assert!(!transcript.contains("s3cret") && !transcript.contains("YWxpY2U6czNjcmV0"));
    server.shutdown().await;
}

#[tokio::test]
async fn client_certificates_are_required_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None);
    cfg.require_client_cert = true;
    let server = DevServer::start(cfg).await.unwrap();

    // Without a certificate: the handshake is refused (recorded as a tls record).
    let anonymous = Client::new(server.ca_pem());
    assert!(
        anonymous
            .send("GET", server.repo_url(), &[], b"")
            .await
            .is_err()
    );
    // A certificate from another CA: refused too.
    let other_dir = tempfile::tempdir().unwrap();
    omadmd::devserver::Certificates::ensure(other_dir.path(), &[]).unwrap();
    let foreign = issue_client_certificate(other_dir.path(), "intruder").unwrap();
    let intruder = Client::with_identity(server.ca_pem(), &foreign.cert_pem, &foreign.key_pem);
    assert!(
        intruder
            .send("GET", server.repo_url(), &[], b"")
            .await
            .is_err()
    );

    // Issued by the server's CA: accepted, and its subject is in the transcript.
    let id = issue_client_certificate(&server.certificates().dir, "device-1").unwrap();
    assert_eq!(id.subject, "CN=device-1");
    let device = Client::with_identity(server.ca_pem(), &id.cert_pem, &id.key_pem);
    assert_eq!(device.package1(&server, "dev").await.package2().len(), 2);
    // The refused handshakes are recorded by their connection tasks; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server
        .transcript()
        .iter()
        .filter(|r| r.kind == "tls")
        .count()
        < 2
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let transcript = server.transcript();
    let p1 = transcript.iter().find(|r| r.kind == "package#1").unwrap();
    assert_eq!(p1.client_cert.as_deref(), Some("CN=device-1"));
    let tls: Vec<&Record> = transcript.iter().filter(|r| r.kind == "tls").collect();
    assert_eq!(tls.len(), 2, "{tls:#?}");
    assert!(
        tls.iter()
            .all(|r| r.note.as_deref().unwrap().contains("TLS handshake failed"))
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Transcript file

#[tokio::test]
async fn transcript_file_has_one_json_line_per_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let mut cfg = config(dir.path(), Some(TWO_PACKAGES));
    cfg.transcript = Some(path.clone());
    let server = DevServer::start(cfg).await.unwrap();
    let client = Client::new(server.ca_pem());
    client.package1(&server, "dev-T").await.package2();
    client
        .get(
            &format!("{}/settings/weather", server.repo_url()),
            &[("range", "bytes=0-9")],
        )
        .await;
    client
        .package3(&server, "dev-T", &[200, 206])
        .await
        .package2();
    server.wait_for_sessions(1).await;

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Record> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, server.transcript());
    assert_eq!(lines.len(), 6);
    let kinds: Vec<(&str, Direction)> = lines
        .iter()
        .map(|r| (r.kind.as_str(), r.direction))
        .collect();
    assert_eq!(
        kinds,
        [
            ("package#1", Direction::In),
            ("package#2", Direction::Out),
            ("repository", Direction::In),
            ("repository", Direction::Out),
            ("package#3", Direction::In),
            ("package#2", Direction::Out),
        ]
    );
    let p1 = &lines[0];
    assert_eq!(
        (p1.session, p1.method.as_str(), p1.path.as_str()),
        (1, "POST", "/dm")
    );
    assert_eq!(
        p1.headers.get("content-type").map(String::as_str),
        Some(INITIATION)
    );
    assert_eq!(
        p1.headers.get("omadm-devid").map(String::as_str),
        Some("dev-T")
    );
    assert_eq!(
        p1.body.as_ref().unwrap()["Alert"][0]["AlertType"],
        CLIENT_INITIATED
    );
    assert!(p1.time.ends_with('Z') && p1.time.len() == 24, "{}", p1.time);
    assert_eq!(lines[1].status, Some(200));
    assert!(lines[1].body.as_ref().unwrap()["CMD"].is_array());
    assert_eq!(lines[3].status, Some(206));
    assert_eq!(
        lines[3].body,
        Some(serde_json::Value::String("[{\"ClientU".into()))
    );
    assert!(lines[4].problems[0].contains("expected 200, got 206"));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The binary

/// The running binary; killed and reaped when dropped (also when a test fails).
struct Binary(std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Binary {
    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the binary did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs the binary; returns it, the DM URL it printed and its further stdout lines.
fn spawn_binary(args: &[&str]) -> (Binary, String, std::sync::mpsc::Receiver<String>) {
    let mut child = Binary(
        Process::new(env!("CARGO_BIN_EXE_omadm-devserver"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the binary printed its DM URL");
        if let Some(url) = line.strip_prefix("DM URL (SrvURI): ") {
            return (child, url.to_owned(), rx);
        }
    }
}

/// One session with the binary's built-in scenario, answering its first Package#2 with
/// `codes`.
async fn binary_session(url: &str, ca_pem: &str, codes: &[u16]) {
    let client = Client::new(ca_pem);
    let p1 = serde_json::to_vec(&Package1 {
        mos: vec![],
        alert: vec![Alert::of_type(CLIENT_INITIATED)],
    })
    .unwrap();
    let headers = [
        ("content-type", INITIATION),
        ("accept", REQUEST),
        (DEVID_HEADER, "bin"),
    ];
    let resp = client.send("POST", url, &headers, &p1).await.unwrap();
    assert_eq!(resp.package2().len(), 2);
    let p3 = serde_json::to_vec(&Package3 {
        status: codes.iter().map(|c| Status::code(*c)).collect(),
        alert: vec![],
    })
    .unwrap();
    let headers = [("content-type", RESPONSE), (DEVID_HEADER, "bin")];
    let resp = client.send("POST", url, &headers, &p3).await.unwrap();
    assert_eq!(resp.package2(), [Command::End]);
}

#[tokio::test]
async fn binary_exits_after_n_sessions_with_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let transcript = dir.path().join("t.jsonl");
    let args = |t: &Path| {
        vec![
            "--listen".to_owned(),
            "127.0.0.1:0".into(),
            "--cert-dir".into(),
            certs.to_string_lossy().into_owned(),
            "--sessions".into(),
            "1".into(),
            "--transcript".into(),
            t.to_string_lossy().into_owned(),
        ]
    };

    // Every expectation holds: exit 0.
    let a = args(&transcript);
    let (mut child, url, _lines) = spawn_binary(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let ca = std::fs::read_to_string(certs.join(CA_CERT)).unwrap();
    binary_session(&url, &ca, &[200, 200]).await;
    let status = child.wait_exit().await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&transcript)
            .unwrap()
            .lines()
            .count(),
        4
    );

    // A mismatch: exit 1, and the failure is named on stderr.
    let (mut child, url, lines) = spawn_binary(&a.iter().map(String::as_str).collect::<Vec<_>>());
    binary_session(&url, &ca, &[200, 404]).await;
    let status = child.wait_exit().await;
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("FAILED session 1: package#2 #1 command 2"),
        "{stderr}"
    );
    let stdout: Vec<String> = lines.try_iter().collect();
    assert!(
        stdout
            .iter()
            .any(|l| l == "session 1 package#3 ← [200, 404] ✗ expected [200, 200]"),
        "{stdout:#?}"
    );
}

#[test]
fn binary_help_is_a_manual_and_fixtures_check() {
    let out = Process::new(env!("CARGO_BIN_EXE_omadm-devserver"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "EXAMPLES",
        "EXIT STATUS",
        "Ext/CACert",
        "SrvURI",
        "--sessions",
        "{repo}",
        "OMADM-DevID",
    ] {
        assert!(help.contains(want), "--help lacks {want}");
    }
    let out = Process::new(env!("CARGO_BIN_EXE_omadm-devserver"))
        .arg("--man-page")
        .output()
        .unwrap();
    let man = String::from_utf8(out.stdout).unwrap();
    for want in [
        ".TH omadm-devserver 1",
        ".SH DESCRIPTION",
        ".SH EXAMPLES",
        ".SH \"EXIT STATUS\"",
        ".nf",
    ] {
        assert!(man.contains(want), "man page lacks {want}");
    }
    let fixtures = std::fs::read_dir(fixture("")).unwrap();
    let mut n = 0;
    for f in fixtures {
        let path = f.unwrap().path();
        Scenario::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let out = Process::new(env!("CARGO_BIN_EXE_omadm-devserver"))
            .args(["--check", "--scenario"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 3);
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), r#"{"packages": [{"commands": [["GET"]]}]}"#).unwrap();
    let out = Process::new(env!("CARGO_BIN_EXE_omadm-devserver"))
        .args(["--check", "--scenario"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("package 1: command 1"));
}
