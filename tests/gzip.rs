//! gzip content coding end to end (PROTOCOL.md §1, issue 13 "Bandwidth"): DM sessions and
//! repository transfers between omadmd's session engine and a real omadm-devserver over TLS
//! — packages gzip-coded both ways once the server has advertised `Accept-Encoding: gzip`,
//! MO data served and uploaded coded, `--no-gzip` (the binary) keeping everything identity
//! — and the transport against a small HTTP server written here, which controls what is
//! advertised and answered: a `415` refusing the coding, a gzip bomb, a corrupt stream.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use omadmd::devserver::{Direction, Record, RunningServer};
use omadmd::protocol::alert;
use omadmd::session::{Account, Limits};
use omadmd::transport::{ClientSettings, Coding, HttpClient, Request, TransportError, Trust};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;

use crate::session_tls::{Client, WEATHER, account, client, get, server};

/// The note the devserver puts on a record whose body was gzip-coded on the wire.
const CODED: &str = "gzip-coded body: ";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The coded size the devserver noted on `r`, if its body was gzip-coded.
fn coded_size(r: &Record) -> Option<usize> {
    let note = r.note.as_deref()?.strip_prefix(CODED)?;
    note.split(' ').next()?.parse().ok()
}

/// A weather station whose description makes its MO data a few hundred bytes.
fn station(n: usize) -> serde_json::Value {
    serde_json::json!({
        "ClientURI": format!("{WEATHER}/station{n}/"),
        "MOData": {"Weather": {"City": format!("City {n}"), "Unit": "C",
            "IntervalSeconds": 3600, "Alerts": true,
            "Description": format!("station {n}: ").repeat(40)}}
    })
}

async fn run_ok(c: &Client, acc: &Account) {
    let outcome = c.engine.run(acc, alert::CLIENT_INITIATED, None).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
}

fn records(srv: &RunningServer, session: u64, direction: Direction, kind: &str) -> Vec<Record> {
    srv.transcript()
        .into_iter()
        .filter(|r| r.session == session && r.direction == direction && r.kind == kind)
        .collect()
}

#[tokio::test]
async fn packages_go_gzip_both_ways_after_the_first() {
    let certs = tempfile::tempdir().unwrap();
    // Two Package#2s of 10 GETs each: every package both ways is well over 256 bytes.
    let scenario = r#"{"name": "gzip", "packages": [
        {"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"]], "repeat_commands": 10},
        {"commands": [["GET", "urn:oma:mo:oma-dm-devinfo:1.0//"]], "repeat_commands": 10},
        {"commands": [["END"]]}]}"#;
    let srv = server(scenario, certs.path()).await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[]);
    run_ok(&c, &acc).await;
    run_ok(&c, &acc).await;
    srv.wait_for_sessions(2).await;
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());

    // Session 1: Package#1 identity (the client has not heard from the server yet); its
    // answer advertised gzip, so every Package#3 went coded; every Package#2 came coded.
    let p1 = records(&srv, 1, Direction::In, "package#1");
    assert_eq!(p1.len(), 1);
    assert_eq!(coded_size(&p1[0]), None, "{:?}", p1[0]);
    let mut wire = 0;
    let mut plain = 0;
    // Two Package#3 (END gets none) and three Package#2 (the last only END, too small).
    for (direction, kind, n) in [
        (Direction::In, "package#3", 2),
        (Direction::Out, "package#2", 3),
    ] {
        let rs = records(&srv, 1, direction, kind);
        assert_eq!(rs.len(), n, "{kind}");
        for r in rs.iter().filter(|r| r.bytes >= 256) {
            let n = coded_size(r).unwrap_or_else(|| panic!("{kind} not coded: {r:?}"));
            assert!(n < r.bytes, "{kind}: {n} coded bytes for {}", r.bytes);
            wire += n;
            plain += r.bytes;
        }
        // The records keep the decoded body: the devserver checked the packages.
        assert!(rs.iter().all(|r| r.body.is_some()), "{kind}");
    }
    assert!(wire * 3 < plain, "{wire} bytes coded for {plain}");
    // Session 2: the client remembers the server, so Package#1 goes coded too (when it is
    // large enough to be worth it).
    let p1 = records(&srv, 2, Direction::In, "package#1").remove(0);
    assert_eq!(coded_size(&p1).is_some(), p1.bytes >= 256, "{p1:?}");
    assert!(
        records(&srv, 2, Direction::In, "package#3")
            .iter()
            .filter(|r| r.bytes >= 256)
            .all(|r| coded_size(r).is_some())
    );
    srv.shutdown().await;
}

/// A repository of MO data: `big` (eight stations) to HGET, and an upload target.
fn repository_scenario() -> String {
    let big: Vec<_> = (1..=8).map(station).collect();
    format!(
        r#"{{"name": "gzip-repo",
        "repository": {{"settings/big": {big}}},
        "packages": [
            {{"commands": [["HGET", "{{repo}}/settings/big"]], "expect": [200]}},
            {{"commands": [["HPUT", "{{repo}}/up", "{WEATHER}/station3/"]], "expect": [200]}},
            {{"commands": [["END"]]}}]}}"#,
        big = serde_json::Value::from(big)
    )
}

#[tokio::test]
async fn mo_data_is_served_and_uploaded_gzip_coded() {
    let certs = tempfile::tempdir().unwrap();
    let srv = server(&repository_scenario(), certs.path()).await;
    let c = client(BTreeMap::new(), Limits::default());
    let acc = account(&c, &srv, srv.ca_pem(), &[WEATHER]);
    run_ok(&c, &acc).await;
    srv.wait_for_sessions(1).await;
    assert!(srv.failures().is_empty(), "{:?}", srv.failures());

    // The HGET's answer went coded and arrived whole.
    let served = records(&srv, 1, Direction::Out, "repository");
    let hget = served.iter().find(|r| r.method == "GET").unwrap();
    assert_eq!(hget.status, Some(200));
    let n = coded_size(hget).unwrap_or_else(|| panic!("not coded: {hget:?}"));
    assert!(n * 3 < hget.bytes, "{n} coded bytes for {}", hget.bytes);
    assert_eq!(
        get(&c, &format!("{WEATHER}/station8/City")),
        Some(omadmd::tree::value::Value::Chr("City 8".into()))
    );
    // The HPUT went coded (the server had advertised gzip), and the repository got the
    // MO data itself.
    let put = records(&srv, 1, Direction::In, "repository")
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert!(coded_size(&put).is_some(), "{put:?}");
    let up = srv.received("up");
    assert_eq!(up.len(), 1);
    let items: serde_json::Value = serde_json::from_slice(&up[0].body).unwrap();
    assert_eq!(items[0]["MOData"]["Weather"]["City"], "City 3");
    srv.shutdown().await;

    // A plain GET through omadmd's transport: the answer is decoded, and its weak ETag
    // says that it names the identity bytes.
    let srv = server(&repository_scenario(), certs.path()).await;
    let http =
        HttpClient::new(ClientSettings::with_trust(Trust::Pem(srv.ca_pem().into()))).unwrap();
    let url = format!("{}/settings/big", srv.repo_url());
    let resp = http.send(Request::get(&url)).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), None);
    assert!(resp.header("etag").unwrap().starts_with("W/\""), "{resp:?}");
    assert_eq!(resp.header("accept-encoding"), Some("gzip"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&resp.body).unwrap()[7]["MOData"]["Weather"]["City"],
        "City 8"
    );
    // Identity asked for: identity served, strong ETag.
    let resp = http
        .send(Request::get(&url).with_coding(Coding::Identity))
        .await
        .unwrap();
    assert!(resp.header("etag").unwrap().starts_with('"'), "{resp:?}");
    let out = srv.transcript();
    let gets: Vec<_> = out
        .iter()
        .filter(|r| r.direction == Direction::Out && r.method == "GET")
        .collect();
    assert!(coded_size(gets[0]).is_some() && coded_size(gets[1]).is_none());
    // A range is never coded.
    let resp = http
        .send(Request::get(&url).with_header("Range", "bytes=0-599"))
        .await
        .unwrap();
    assert_eq!((resp.status, resp.body.len()), (206, 600));
    assert_eq!(coded_size(srv.transcript().last().unwrap()), None);
    srv.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// --no-gzip (the binary)

/// A child process killed and reaped when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args`; returns it and the DM URL it printed.
fn spawn_devserver(args: &[&str]) -> (Child, String) {
    let mut child = Child(
        Process::new(env!("CARGO_BIN_EXE_omadm-devserver"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut stdout = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    for line in stdout.by_ref() {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("DM URL (SrvURI): ") {
            // Whatever it prints later is read, so that it never writes to a closed pipe.
            std::thread::spawn(move || stdout.for_each(drop));
            return (child, url.to_owned());
        }
    }
    panic!("the devserver printed no DM URL");
}

/// One request on a TLS connection of its own, sent as given (a coded body included).
async fn raw_request(
    url: &str,
    ca_pem: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> http::Response<Bytes> {
    let rest = url.strip_prefix("https://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let host = authority.rsplit_once(':').unwrap().0.to_owned();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn no_gzip_keeps_everything_identity() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let scenario = dir.path().join("scenario.json");
    std::fs::write(&scenario, repository_scenario()).unwrap();
    let transcript = dir.path().join("t.jsonl");
    let (mut child, url) = spawn_devserver(&[
        "--listen",
        "127.0.0.1:0",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--scenario",
        scenario.to_str().unwrap(),
        "--transcript",
        transcript.to_str().unwrap(),
        "--sessions",
        "1",
        "--quiet",
        "--no-gzip",
    ]);
    let ca = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let repo = url.replace("/dm", "/repo");

    // A coded body is refused with 415, naming identity as what it reads.
    let items = serde_json::to_vec(&[station(1)]).unwrap();
    let coded = raw_request(
        &format!("{repo}/raw"),
        &ca,
        "PUT",
        &[
            ("content-type", "application/vnd.oma.dm.mo+json"),
            ("content-encoding", "gzip"),
        ],
        gzip(&items),
    )
    .await;
    assert_eq!(coded.status(), 415);
    assert_eq!(coded.headers()["accept-encoding"], "identity");
    // Asked for gzip, it answers identity and advertises nothing.
    let plain = raw_request(
        &format!("{repo}/settings/big"),
        &ca,
        "GET",
        &[("accept-encoding", "gzip")],
        Vec::new(),
    )
    .await;
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(plain.headers().get("accept-encoding").is_none());
    assert!(plain.headers()["etag"].to_str().unwrap().starts_with('"'));

    // A whole session: nothing coded either way.
    let c = client(BTreeMap::new(), Limits::default());
    let acc = {
        let perm = serde_json::json!({"p0": {"MOID": WEATHER}});
        let modata = serde_json::json!({"DMAcc": {"SrvID": "devserver", "SrvURI": url,
            "Perm": perm, "Ext": {"CACert": ca}}});
        c.auth
            .create_instance(
                &omadmd::authority::Principal::Admin,
                omadmd::tree::builtin::DMACC,
                &modata.to_string(),
            )
            .unwrap();
        omadmd::session::account::load_all(&c.auth)
            .unwrap()
            .into_iter()
            .find(|a| a.srv_id == "devserver")
            .unwrap()
    };
    run_ok(&c, &acc).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the devserver did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "every expectation held");
    let records: Vec<Record> = std::fs::read_to_string(&transcript)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r.kind == "package#3" && r.bytes >= 256)
    );
    assert!(records.iter().any(|r| r.method == "PUT" && r.bytes >= 256));
    let coded: Vec<_> = records.iter().filter(|r| coded_size(r).is_some()).collect();
    assert!(coded.is_empty(), "{coded:#?}");
    assert_eq!(
        get(&c, &format!("{WEATHER}/station8/City")),
        Some(omadmd::tree::value::Value::Chr("City 8".into()))
    );
}

// ---------------------------------------------------------------------------------------
// The transport against a server written here

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    content_encoding: Option<String>,
    accept_encoding: Option<String>,
    /// The body as it came, coded or not.
    body: Vec<u8>,
}

/// A plain-HTTP server on loopback answering request `n` with `answer(n, seen)`.
struct Canned {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Answer = dyn Fn(usize, &Seen) -> http::Response<Full<Bytes>> + Send + Sync;

impl Canned {
    async fn start(answer: Arc<Answer>) -> Canned {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (log, answer) = (log.clone(), answer.clone());
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (log, answer) = (log.clone(), answer.clone());
                    async move {
                        let header =
                            |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
                        let (content_encoding, accept_encoding) =
                            (header("content-encoding"), header("accept-encoding"));
                        let body = req.into_body().collect().await?.to_bytes().to_vec();
                        let seen = Seen {
                            content_encoding,
                            accept_encoding,
                            body,
                        };
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push(seen.clone());
                            log.len() - 1
                        };
                        Ok::<_, hyper::Error>(answer(n, &seen))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc),
                );
            }
        });
        Canned { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/x", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn respond(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> http::Response<Full<Bytes>> {
    let mut b = http::Response::builder().status(status);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

fn plain_client(max_body_bytes: usize) -> HttpClient {
    HttpClient::new(ClientSettings {
        allow_plain_loopback: true,
        max_body_bytes,
        ..ClientSettings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_refused_coding_is_sent_again_identity_and_not_tried_again() {
    // Advertises gzip on every answer, but refuses coded bodies (RFC 7694 §3: 415 without
    // gzip in Accept-Encoding).
    let server = Canned::start(Arc::new(|_, seen: &Seen| {
        if seen.content_encoding.is_some() {
            respond(415, &[("accept-encoding", "identity")], Vec::new())
        } else {
            respond(200, &[("accept-encoding", "gzip")], b"ok".to_vec())
        }
    }))
    .await;
    let http = plain_client(1 << 20);
    let body = serde_json::to_vec(&[station(1), station(2)]).unwrap();
    for _ in 0..3 {
        let resp = http
            .send(Request::post(server.url(), body.clone()))
            .await
            .unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok"[..]));
    }
    let seen = server.seen();
    let codings: Vec<_> = seen.iter().map(|s| s.content_encoding.as_deref()).collect();
    // identity (unknown origin); gzip, refused, identity again; identity from then on.
    assert_eq!(codings, [None, Some("gzip"), None, None]);
    assert!(
        seen.iter()
            .all(|s| s.accept_encoding.as_deref() == Some("gzip"))
    );
    assert_eq!(seen[2].body, body);
}

#[tokio::test]
async fn coded_request_bodies_follow_the_advertisement_and_the_opt_out() {
    let server = Canned::start(Arc::new(|_, _: &Seen| {
        respond(200, &[("accept-encoding", "gzip")], Vec::new())
    }))
    .await;
    let http = plain_client(1 << 20);
    let body = serde_json::to_vec(&[station(1)]).unwrap();
    http.send(Request::post(server.url(), body.clone()))
        .await
        .unwrap();
    http.send(Request::post(server.url(), body.clone()))
        .await
        .unwrap();
    http.send(Request::post(server.url(), b"{\"tiny\": true}".to_vec()))
        .await
        .unwrap();
    http.send(Request::put(server.url(), body.clone()).with_coding(Coding::Identity))
        .await
        .unwrap();
    let seen = server.seen();
    let codings: Vec<_> = seen.iter().map(|s| s.content_encoding.as_deref()).collect();
    assert_eq!(codings, [None, Some("gzip"), None, None]);
    assert_eq!(seen[3].accept_encoding.as_deref(), Some("identity"));
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(seen[1].body.as_slice()),
        &mut decoded,
    )
    .unwrap();
    assert_eq!(decoded, body);
}

#[tokio::test]
async fn a_gzip_bomb_a_corrupt_stream_and_an_unasked_coding_are_refused() {
    let text = serde_json::to_vec(&(1..=50).map(station).collect::<Vec<_>>()).unwrap();
    let good = gzip(&text);
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 8].copy_from_slice(b"garbage!");
    // 8 MiB of zeros, about 8 KiB coded.
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    for _ in 0..8 {
        e.write_all(&[0u8; 1 << 20]).unwrap();
    }
    let bomb = e.finish().unwrap();
    let answers = [good, corrupt, bomb.clone(), bomb, b"not br really".to_vec()];
    let server = Canned::start(Arc::new(move |n, _: &Seen| {
        let coding = if n == 4 { "br" } else { "gzip" };
        respond(200, &[("content-encoding", coding)], answers[n].clone())
    }))
    .await;
    let http = plain_client(1 << 20);
    let resp = http.send(Request::get(server.url())).await.unwrap();
    assert_eq!(resp.body, text, "decoded");
    assert_eq!(resp.header("content-encoding"), None);
    match http.send(Request::get(server.url())).await {
        Err(TransportError::Coding(m)) => {
            assert!(m.contains(&server.url()) && m.contains("corrupt"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        http.send(Request::get(server.url())).await.unwrap_err(),
        TransportError::TooLarge { limit: 1 << 20 }
    );
    // The same bomb under a limit it fits: 8 MiB decoded.
    let roomy = plain_client(8 << 20);
    assert_eq!(
        roomy
            .send(Request::get(server.url()))
            .await
            .unwrap()
            .body
            .len(),
        8 << 20
    );
    match http.send(Request::get(server.url())).await {
        Err(TransportError::Coding(m)) => assert!(m.contains("\"br\""), "{m}"),
        other => panic!("{other:?}"),
    }
}
