//! omadm-devserver's large objects end to end, driven by `curl` over real TLS: the built
//! binary serving a generated 64 MiB `--object` (whole, ranges under `If-Range` with an
//! ETag and a date, `Repr-Digest`, a resume after `--cut-object-after` and the `503` of
//! `--object-5xx-after`, a file replaced on disk), taking 64 MiB streamed uploads (a right
//! and a wrong `Repr-Digest`, over `--max-upload-bytes` by `Content-Length` and chunked), and
//! its peak RSS far below the object's size; and an in-process server recording a streamed
//! upload as a file.

use std::collections::HashMap;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use omadmd::devserver::certs::CA_CERT;
use omadmd::devserver::{DevServer, DevServerConfig, ObjectSpec};
use omadmd::tree::value::hex;
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1 << 20;
/// The object's size: the issue asks for 128–256 MiB in the client's tests; the server's
/// own need less to show it streams.
const SIZE: u64 = 64 * MIB;

/// Writes `size` pseudo-random bytes (seeded) to `path` a MiB at a time; their SHA-256.
fn generate(path: &Path, size: u64, seed: u64) -> [u8; 32] {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hash = Sha256::new();
    let mut x = seed | 1;
    let mut left = size;
    let mut buf = vec![0u8; MIB as usize];
    while left > 0 {
        let n = left.min(MIB) as usize;
        for b in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        out.write_all(&buf[..n]).unwrap();
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    out.flush().unwrap();
    hash.finalize().into()
}

fn sha256_file(path: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(path).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return hash.finalize().into();
        }
        hash.update(&buf[..n]);
    }
}

fn repr_digest(sha: &[u8; 32]) -> String {
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha)
    )
}

/// The built omadm-devserver, killed when dropped.
struct Server {
    child: Child,
    /// `https://127.0.0.1:PORT`
    base: String,
    ca: PathBuf,
    /// The server's standard output, drained for as long as it runs: were its pipe closed,
    /// the server's next line would fail to print (EPIPE) and end it.
    _stdout: mpsc::Receiver<String>,
}

impl Server {
    fn start(certs: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_omadm-devserver"))
            .args(["--listen", "127.0.0.1:0", "--quiet", "--cert-dir"])
            .arg(certs)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the server printed its DM URL");
            if let Some(url) = line.strip_prefix("DM URL (SrvURI): ") {
                break url.strip_suffix("/dm").unwrap().to_owned();
            }
        };
        Server {
            child,
            base,
            ca: certs.join(CA_CERT),
            _stdout: rx,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs curl against the server (`-sS`, the test CA, the response headers on stdout).
    fn curl(&self, args: &[&str]) -> Curl {
        let out = Command::new("curl")
            .args(["-sS", "-D", "-", "--cacert"])
            .arg(&self.ca)
            .args(args)
            .output()
            .expect("curl runs");
        Curl::of(out)
    }

    fn stats(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.ca)
            .arg(self.url("/admin/stats"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The server's peak resident set so far (`VmHWM`), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A curl run: its exit code, and the status and headers of the last response.
#[derive(Debug)]
struct Curl {
    code: Option<i32>,
    status: u16,
    headers: HashMap<String, String>,
    stderr: String,
}

impl Curl {
    fn of(out: Output) -> Curl {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut status = 0;
        let mut headers = HashMap::new();
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix("HTTP/") {
                status = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
                headers.clear();
            } else if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        Curl {
            code: out.status.code(),
            status,
            headers,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
    }

    #[track_caller]
    fn ok(&self, status: u16) -> &Curl {
        assert_eq!(
            (self.code, self.status),
            (Some(0), status),
            "{}: {self:?}",
            self.stderr
        );
        self
    }
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn append(to: &Path, from: &Path) {
    let mut out = std::fs::OpenOptions::new().append(true).open(to).unwrap();
    std::io::copy(&mut std::fs::File::open(from).unwrap(), &mut out).unwrap();
}

#[test]
fn an_object_is_served_in_ranges_resumed_after_a_cut_and_a_503_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("fw.img");
    let sha = generate(&object, SIZE, 1);
    let object_arg = format!("fw={}", object.display());
    let server = Server::start(
        &dir.path().join("certs"),
        &[
            "--object",
            &object_arg,
            "--cut-object-after",
            "16M",
            "--object-5xx-after",
            "16M",
        ],
    );
    let url = server.url("/repo/objects/fw");
    let part1 = dir.path().join("part1");
    let part2 = dir.path().join("part2");
    let part1_arg = part1.to_str().unwrap();
    let part2_arg = part2.to_str().unwrap();

    // The first GET is cut after 16 MiB: the connection ends before Content-Length.
    let first = server.curl(&["-o", part1_arg, &url]);
    assert_eq!(first.status, 200, "{first:?}");
    assert!(matches!(first.code, Some(18 | 56)), "{first:?}");
    assert_eq!(first.header("content-length"), SIZE.to_string());
    assert_eq!(first.header("content-type"), "application/octet-stream");
    assert_eq!(first.header("accept-ranges"), "bytes");
    assert_eq!(first.header("repr-digest"), repr_digest(&sha));
    assert!(!first.headers.contains_key("content-encoding"));
    let etag = first.header("etag").to_owned();
    let last_modified = first.header("last-modified").to_owned();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    let got = len(&part1);
    assert!(got > 0 && got <= 16 * MIB, "{got}");

    // The first resume meets the 503; the next resumes with 206 from where it stopped.
    let range = format!("{got}-");
    let if_range = format!("If-Range: {etag}");
    let resume = ["-o", part2_arg, "-r", &range, "-H", &if_range, &url];
    let unavailable = server.curl(&resume);
    unavailable.ok(503);
    assert_eq!(unavailable.header("retry-after"), "1");
    let rest = server.curl(&resume);
    rest.ok(206);
    assert_eq!(
        rest.header("content-range"),
        format!("bytes {got}-{}/{SIZE}", SIZE - 1)
    );
    assert_eq!(rest.header("repr-digest"), repr_digest(&sha));
    assert_eq!(rest.header("etag"), etag);
    append(&part1, &part2);
    assert_eq!(sha256_file(&part1), sha, "the pieces make the object");

    // What the server counted: the object once, in a cut response and a complete one.
    let stats = server.stats();
    let fw = &stats["objects"]["objects/fw"];
    assert_eq!(fw["size"], SIZE);
    assert_eq!(
        (fw["gets"].as_u64(), fw["cut"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        (fw["complete"].as_u64(), fw["unavailable"].as_u64()),
        (Some(1), Some(1))
    );
    let sent = fw["bytes_sent"].as_u64().unwrap();
    assert!(
        sent >= SIZE && sent * 100 <= SIZE * 105,
        "{sent} bytes sent"
    );
    assert_eq!(stats["bytes_sent"].as_u64(), Some(sent));

    // Whole, and its digest is the header's.
    let whole = dir.path().join("whole");
    server.curl(&["-o", whole.to_str().unwrap(), &url]).ok(200);
    assert_eq!(sha256_file(&whole), sha);

    // If-Range: a strong match, or the exact Last-Modified, honours the range; another tag,
    // a weak one or another date sends the whole object.
    let size_of = |extra: &[&str]| {
        let mut args = vec!["-o", "/dev/null", "-r", "100-"];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = server.curl(&args);
        (out.status, out.headers.get("content-length").cloned())
    };
    let partial = (206, Some((SIZE - 100).to_string()));
    let full = (200, Some(SIZE.to_string()));
    assert_eq!(size_of(&["-H", &if_range]), partial);
    assert_eq!(
        size_of(&["-H", &format!("If-Range: {last_modified}")]),
        partial
    );
    assert_eq!(size_of(&["-H", "If-Range: \"nope\""]), full);
    assert_eq!(size_of(&["-H", &format!("If-Range: W/{etag}")]), full);
    assert_eq!(
        size_of(&["-H", "If-Range: Thu, 01 Jan 1970 00:00:00 GMT"]),
        full
    );

    // A small range is the object's bytes; past the end is 416; HEAD has the headers.
    let ten = dir.path().join("ten");
    server
        .curl(&["-o", ten.to_str().unwrap(), "-r", "1000-1009", &url])
        .ok(206);
    let mut expect = vec![0u8; 10];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&object).unwrap(),
        &mut expect,
        1000,
    )
    .unwrap();
    assert_eq!(std::fs::read(&ten).unwrap(), expect);
    let past = server.curl(&["-o", "/dev/null", "-r", &format!("{SIZE}-"), &url]);
    past.ok(416);
    assert_eq!(past.header("content-range"), format!("bytes */{SIZE}"));
    let head = server.curl(&["-I", &url]);
    head.ok(200);
    assert_eq!(head.header("content-length"), SIZE.to_string());
    assert_eq!(head.header("repr-digest"), repr_digest(&sha));

    // A new file renamed over the old one is a new version: resuming with the old ETag gets
    // 200 and the whole new object.
    let staged = dir.path().join("fw.img.new");
    let new_size = SIZE / 2 + 7;
    let new_sha = generate(&staged, new_size, 2);
    std::fs::rename(&staged, &object).unwrap();
    let renewed = dir.path().join("renewed");
    let changed = server.curl(&[
        "-o",
        renewed.to_str().unwrap(),
        "-r",
        "1000-",
        "-H",
        &if_range,
        &url,
    ]);
    changed.ok(200);
    assert_ne!(changed.header("etag"), etag);
    assert_eq!(changed.header("repr-digest"), repr_digest(&new_sha));
    assert_eq!(sha256_file(&renewed), new_sha);

    // Four whole objects and more went through; the server never held one.
    let peak = server.peak_rss();
    assert!(peak < SIZE / 2, "peak RSS {} KiB", peak / 1024);
}

#[test]
fn uploads_are_streamed_to_files_checked_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let body = dir.path().join("log.tar");
    let sha = generate(&body, SIZE, 3);
    let server = Server::start(
        &dir.path().join("certs"),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--max-upload-bytes",
            "64M",
        ],
    );
    let body_arg = body.to_str().unwrap();
    let octet = "Content-Type: application/octet-stream";
    let digest = format!("Repr-Digest: {}", repr_digest(&sha));

    // With its digest: stored (201), then served with the same digest.
    let url = server.url("/repo/logs/1");
    server
        .curl(&[
            "-o",
            "/dev/null",
            "-T",
            body_arg,
            "-H",
            octet,
            "-H",
            &digest,
            &url,
        ])
        .ok(201);
    let stats = server.stats();
    let upload = &stats["uploads"][0];
    assert_eq!(upload["path"], "logs/1");
    assert_eq!(upload["status"], 201);
    assert_eq!(upload["size"], SIZE);
    assert_eq!(upload["sha256"], hex(&sha));
    let stored = PathBuf::from(upload["file"].as_str().unwrap());
    assert!(stored.starts_with(&data), "{}", stored.display());
    assert_eq!(sha256_file(&stored), sha);
    let head = server.curl(&["-I", &url]);
    head.ok(200);
    assert_eq!(head.header("repr-digest"), repr_digest(&sha));
    assert_eq!(head.header("content-length"), SIZE.to_string());

    // Without a digest it is stored too; a wrong one is 400 and leaves no file.
    server
        .curl(&[
            "-o",
            "/dev/null",
            "-T",
            body_arg,
            "-H",
            octet,
            &server.url("/repo/logs/2"),
        ])
        .ok(201);
    let wrong = format!("Repr-Digest: {}", repr_digest(&[0; 32]));
    let url3 = server.url("/repo/logs/3");
    server
        .curl(&[
            "-o",
            "/dev/null",
            "-T",
            body_arg,
            "-H",
            octet,
            "-H",
            &wrong,
            &url3,
        ])
        .ok(400);
    let stats = server.stats();
    let refused = &stats["uploads"][2];
    assert_eq!(
        (refused["path"].as_str(), refused["status"].as_u64()),
        (Some("logs/3"), Some(400))
    );
    assert!(!Path::new(refused["file"].as_str().unwrap()).exists());
    assert_eq!(server.curl(&["-o", "/dev/null", &url3]).status, 404);

    // Over --max-upload-bytes: 413 at once by Content-Length, or mid-stream when chunked.
    let over = dir.path().join("over");
    generate(&over, SIZE + 1, 4);
    let over_arg = over.to_str().unwrap();
    let url4 = server.url("/repo/logs/4");
    let by_length = server.curl(&["-o", "/dev/null", "-T", over_arg, "-H", octet, &url4]);
    assert_eq!(by_length.status, 413, "{by_length:?}");
    let chunked = server.curl(&[
        "-o",
        "/dev/null",
        "-T",
        over_arg,
        "-H",
        octet,
        "-H",
        "Transfer-Encoding: chunked",
        &url4,
    ]);
    assert_eq!(chunked.status, 413, "{chunked:?}");
    let mut files: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["0001-logs_1", "0002-logs_2"],
        "refused bodies leave nothing"
    );

    let peak = server.peak_rss();
    assert!(peak < SIZE / 2, "peak RSS {} KiB", peak / 1024);
}

#[tokio::test]
async fn an_in_process_server_records_a_streamed_upload_as_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("small.bin");
    let sha = generate(&object, MIB, 5);
    let mut config = DevServerConfig::new(dir.path().join("certs"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.objects = vec![ObjectSpec {
        name: "small".into(),
        path: object.clone(),
    }];
    let server = DevServer::start(config).await.unwrap();
    let ca = dir.path().join("certs").join(CA_CERT);
    let put = server.repo_url().to_owned() + "/logs/x";
    let get = server.repo_url().to_owned() + "/objects/small";
    let curl = move |args: Vec<String>| {
        let ca = ca.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("curl")
                .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
                .arg(ca)
                .args(args)
                .output()
                .unwrap();
            Curl::of(out)
        })
    };
    let object_arg = object.to_str().unwrap().to_owned();
    let put_args = [
        "-T",
        &object_arg,
        "-H",
        "Content-Type: application/octet-stream",
        &put,
    ];
    let out = curl(put_args.iter().map(|s| s.to_string()).collect())
        .await
        .unwrap();
    out.ok(201);
    let got = server.received("logs/x");
    assert_eq!(got.len(), 1);
    let file = got[0].file.as_ref().expect("streamed to a file");
    assert_eq!((file.size, file.sha256), (MIB, sha));
    assert!(got[0].body.is_empty());
    assert!(file.path.starts_with(server.data_dir()));
    assert_eq!(sha256_file(&file.path), sha);

    curl(vec![get]).await.unwrap().ok(200);
    let stats = server.object_stats();
    assert_eq!(stats.objects["objects/small"].bytes_sent, MIB);
    assert_eq!(stats.objects["objects/small"].complete, 1);
    let data = server.data_dir().to_owned();
    server.shutdown().await;
    assert!(
        !data.exists(),
        "the temporary data directory goes with the server"
    );
}
