//! Large objects in the repository: files served from disk and uploads streamed to disk,
//! never whole in memory, with the faults a client's suspend-and-resume tests need.
//!
//! - `--object NAME=PATH` serves the file at `/repo/objects/NAME` as
//!   `application/octet-stream`, streamed ([`body`]), with `Content-Length`,
//!   `Accept-Ranges: bytes`, a strong `ETag` and `Last-Modified` of the file's version (inode,
//!   size, modification time: [`file`]) and `Repr-Digest: sha-256=:…:` (RFC 9530) of the whole
//!   file, computed once per version. `Range` and `If-Range` follow the in-memory entries'
//!   rules ([`repository`](super::repository)): `206` with `Content-Range`, `416` past the
//!   end, the whole object (`200`) when `If-Range` names another version. A file replaced on
//!   disk is a new version.
//! - A `PUT`/`POST` of `application/octet-stream` to `/repo/PATH` is streamed to a file in
//!   the data directory ([`upload`]), checked against `Repr-Digest` (`400`) and
//!   `--max-upload-bytes` (`413`), recorded as an [`Upload`] with its file, size and SHA-256,
//!   and then served at `/repo/PATH` like an `--object`. `DELETE` removes an object.
//! - Faults ([`ObjectFaults`]): `--cut-object-after` aborts the connection mid-body,
//!   `--object-5xx-after` answers one `GET` `503`.
//! - [`stats`]: bytes sent per object, in-process and as `GET /admin/stats`.
//!
//! Requests reach this module before the rest of the HTTP layer ([`Objects::route`]);
//! everything else goes on as before. Objects are never content-coded.

mod body;
mod file;
pub mod stats;
mod upload;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;

pub(crate) use body::ObjectBody;
pub use stats::{ObjectCounters, ObjectStats};

use super::error::DevServerError;
use super::http::{SERVER, Shared};
use super::repository::{Upload, UploadedFile, accepts, if_range_allows, media_type, parse_range};
use super::scenario::repo_key;
use super::transcript::{Direction, Record, lock};
use crate::protocol::ACCEPT_HEADER;
use crate::tree::value::hex;
use body::Ending;
use file::{Digests, Opened, repr_digest};
use stats::Counters;
use upload::UploadError;

/// The media type of large objects.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// The repository folder of `--object` files: `--object NAME=PATH` is `/repo/objects/NAME`.
pub const OBJECTS_FOLDER: &str = "objects";
/// Where the counters are served as JSON.
pub const STATS_PATH: &str = "/admin/stats";
/// The default of `--max-upload-bytes`: 4 GiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 4 << 30;

/// `NAME=PATH`: serve the file at PATH as `/repo/objects/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectSpec {
    pub name: String,
    pub path: PathBuf,
}

impl FromStr for ObjectSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<ObjectSpec, String> {
        match s.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => {
                repo_key(&format!("{OBJECTS_FOLDER}/{name}"))?;
                Ok(ObjectSpec {
                    name: name.to_owned(),
                    path: path.into(),
                })
            }
            _ => Err("expected NAME=PATH".into()),
        }
    }
}

/// Faults injected into object `GET`s, for clients' resume tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectFaults {
    /// Abort the connection (no clean end) after this many body bytes of a response that
    /// is longer.
    pub cut_after: Option<u64>,
    /// How many responses to cut: the first N (`0`: every one).
    pub cut_times: u64,
    /// Once this many body bytes of objects have been sent in total, answer the next
    /// object `GET` `503` (once).
    pub unavailable_after: Option<u64>,
}

impl Default for ObjectFaults {
    fn default() -> ObjectFaults {
        ObjectFaults {
            cut_after: None,
            cut_times: 1,
            unavailable_after: None,
        }
    }
}

/// A file-backed repository entry.
#[derive(Clone, Debug)]
struct Entry {
    path: PathBuf,
    /// A streamed upload's file in the data directory (removed with the entry).
    uploaded: bool,
}

/// Where streamed uploads are written; a directory of its own under the certificate
/// directory unless `--data-dir` names one, and then removed when the server is dropped.
struct DataDir {
    path: PathBuf,
    temporary: bool,
}

impl Drop for DataDir {
    fn drop(&mut self) {
        // Once, as the server goes away: blocking here is acceptable.
        if self.temporary
            && let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// The file-backed objects, their digests and counters, the faults and the data directory.
pub(crate) struct Objects {
    entries: Mutex<HashMap<String, Entry>>,
    digests: Digests,
    counters: Mutex<BTreeMap<String, Arc<Counters>>>,
    faults: ObjectFaults,
    cuts: AtomicU64,
    unavailable_sent: AtomicBool,
    data: DataDir,
    uploads: AtomicU64,
    max_upload: u64,
}

/// What [`Objects::route`] takes over.
pub(crate) enum ObjectRoute {
    /// `GET`, `HEAD` or `DELETE` of a file-backed entry.
    Object(String),
    /// An `application/octet-stream` `PUT` or `POST`.
    Upload(String),
    Stats,
}

impl Objects {
    /// Opens every `--object` file and computes its digest (on blocking threads), so the
    /// first `GET` is answered at once.
    pub async fn start(
        specs: &[ObjectSpec],
        cert_dir: &Path,
        data_dir: Option<&Path>,
        max_upload: u64,
        faults: ObjectFaults,
    ) -> Result<Objects, DevServerError> {
        static SERVERS: AtomicU64 = AtomicU64::new(0);
        let data = match data_dir {
            Some(dir) => DataDir {
                path: dir.to_owned(),
                temporary: false,
            },
            None => DataDir {
                path: cert_dir.join(format!(
                    "uploads-{}-{}",
                    std::process::id(),
                    SERVERS.fetch_add(1, Ordering::Relaxed)
                )),
                temporary: true,
            },
        };
        let objects = Objects {
            entries: Mutex::default(),
            digests: Digests::default(),
            counters: Mutex::default(),
            faults,
            cuts: AtomicU64::new(0),
            unavailable_sent: AtomicBool::new(false),
            data,
            uploads: AtomicU64::new(0),
            max_upload,
        };
        for spec in specs {
            let key = repo_key(&format!("{OBJECTS_FOLDER}/{}", spec.name))
                .map_err(|e| DevServerError::Config(format!("--object {}: {e}", spec.name)))?;
            let path = spec.path.clone();
            let opened = tokio::task::spawn_blocking(move || file::open(&path))
                .await
                .map_err(|e| DevServerError::io(&spec.path, std::io::Error::other(e)))?
                .map_err(|e| DevServerError::io(&spec.path, e))?;
            objects
                .digests
                .of(&opened)
                .await
                .map_err(|e| DevServerError::io(&spec.path, e))?;
            objects.counters_of(&key).size(opened.version.size);
            lock(&objects.entries).insert(
                key,
                Entry {
                    path: spec.path.clone(),
                    uploaded: false,
                },
            );
        }
        Ok(objects)
    }

    /// Whether this module answers the request, and how.
    pub fn route<B>(&self, req: &Request<B>) -> Option<ObjectRoute> {
        let path = req.uri().path();
        if path == STATS_PATH {
            return Some(ObjectRoute::Stats);
        }
        let key = repo_key(path.strip_prefix("/repo/")?).ok()?;
        match req.method().as_str() {
            "GET" | "HEAD" | "DELETE" if lock(&self.entries).contains_key(&key) => {
                Some(ObjectRoute::Object(key))
            }
            "PUT" | "POST"
                if req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| media_type(ct) == OCTET_STREAM) =>
            {
                Some(ObjectRoute::Upload(key))
            }
            _ => None,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ObjectStats {
        let objects: BTreeMap<String, ObjectCounters> = lock(&self.counters)
            .iter()
            .map(|(k, c)| (k.clone(), c.snapshot()))
            .collect();
        ObjectStats {
            bytes_sent: objects.values().map(|c| c.bytes_sent).sum(),
            objects,
        }
    }

    /// Where streamed uploads are written.
    pub fn data_dir(&self) -> &Path {
        &self.data.path
    }

    fn counters_of(&self, key: &str) -> Arc<Counters> {
        lock(&self.counters)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    fn bytes_sent(&self) -> u64 {
        lock(&self.counters).values().map(|c| c.bytes_sent()).sum()
    }

    /// Whether this `GET` is the one `--object-5xx-after` answers `503`.
    fn take_unavailable(&self) -> bool {
        self.faults
            .unavailable_after
            .is_some_and(|after| self.bytes_sent() >= after)
            && !self.unavailable_sent.swap(true, Ordering::Relaxed)
    }

    /// Where `--cut-object-after` cuts a response of `len` bytes, if it does.
    fn take_cut(&self, len: u64) -> Option<u64> {
        let after = self.faults.cut_after.filter(|after| *after < len)?;
        if self.faults.cut_times == 0 {
            return Some(after);
        }
        self.cuts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.faults.cut_times).then_some(n + 1)
            })
            .ok()
            .map(|_| after)
    }
}

/// A request as this module sees it once its body is set aside.
struct Exchange<'a> {
    shared: &'a Arc<Shared>,
    peer: &'a str,
    method: String,
    /// The request path with its query.
    path: String,
    headers: HeaderMap,
    session: u64,
}

impl Exchange<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn record(&self, direction: Direction, kind: &str) -> Record {
        let mut rec = Record::new(direction, kind, self.peer, &self.method, &self.path);
        rec.session = self.session;
        rec
    }

    /// Records the response and builds it.
    fn respond(
        &self,
        kind: &str,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: ObjectBody,
        bytes: usize,
    ) -> Response<ObjectBody> {
        let mut rec = self.record(Direction::Out, kind);
        rec.status = Some(status);
        rec.bytes = bytes;
        for (name, value) in &headers {
            rec.header(name, value);
        }
        self.shared.transcript.push(rec);
        response(status, headers, body)
    }

    /// A text answer, with `extra` headers.
    fn text(
        &self,
        kind: &str,
        status: u16,
        text: &'static str,
        extra: Vec<(&'static str, String)>,
    ) -> Response<ObjectBody> {
        let mut headers = vec![("content-type", "text/plain; charset=utf-8".to_owned())];
        headers.extend(extra);
        self.respond(kind, status, headers, ObjectBody::fixed(text), text.len())
    }

    fn say(&self, line: String) {
        self.shared.transcript.say(line);
    }
}

fn response(
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: ObjectBody,
) -> Response<ObjectBody> {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            map.append(n, v);
        }
    }
    map.insert(http::header::SERVER, http::HeaderValue::from_static(SERVER));
    response
}

/// Answers a request [`Objects::route`] took over.
pub(crate) async fn serve(
    route: ObjectRoute,
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    peer: &str,
    subject: Option<&str>,
) -> Response<ObjectBody> {
    let (parts, body) = req.into_parts();
    let ex = Exchange {
        shared,
        peer,
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        session: lock(&shared.engine).latest(),
        headers: parts.headers,
    };
    let kind = match route {
        ObjectRoute::Stats => "admin",
        ObjectRoute::Object(_) | ObjectRoute::Upload(_) => "repository",
    };
    let mut rec = ex.record(Direction::In, kind);
    for (name, value) in &ex.headers {
        rec.header(name.as_str(), value.to_str().unwrap_or("(not text)"));
    }
    rec.client_cert = subject.map(str::to_owned);
    if let Some(basic) = &shared.basic
        && !basic.admits(ex.header("authorization"))
    {
        rec.kind = "auth".into();
        rec.note = Some("refused: no valid HTTP Basic credentials".into());
        shared.transcript.push(rec);
        ex.say(format!(
            "{} {} → 401: no valid HTTP Basic credentials",
            ex.method, ex.path
        ));
        let challenge = "Basic realm=\"omadm-devserver\", charset=\"UTF-8\"";
        return ex.text(
            "auth",
            401,
            "authentication required\n",
            vec![("www-authenticate", challenge.to_owned())],
        );
    }
    match route {
        ObjectRoute::Stats => {
            shared.transcript.push(rec);
            stats_reply(&ex)
        }
        ObjectRoute::Object(key) => {
            shared.transcript.push(rec);
            match ex.method.as_str() {
                "DELETE" => delete(&ex, &key).await,
                _ => get(&ex, &key).await,
            }
        }
        ObjectRoute::Upload(key) => receive(&ex, rec, &key, body).await,
    }
}

fn stats_reply(ex: &Exchange<'_>) -> Response<ObjectBody> {
    if !matches!(ex.method.as_str(), "GET" | "HEAD") {
        let allow = vec![("allow", "GET, HEAD".to_owned())];
        return ex.text("admin", 405, "method not allowed\n", allow);
    }
    let stats = ex.shared.objects.stats();
    let uploads: Vec<serde_json::Value> = lock(&ex.shared.repo)
        .uploads()
        .iter()
        .filter_map(|u| {
            let f = u.file.as_ref()?;
            Some(serde_json::json!({
                "method": u.method,
                "path": u.path,
                "status": u.status,
                "size": f.size,
                "sha256": hex(&f.sha256),
                "file": f.path,
            }))
        })
        .collect();
    let mut json = serde_json::json!(stats);
    json["uploads"] = uploads.into();
    let mut text = json.to_string();
    text.push('\n');
    let len = text.len();
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("cache-control", "no-store".to_owned()),
    ];
    let body = if ex.method == "HEAD" {
        ObjectBody::empty()
    } else {
        ObjectBody::fixed(text)
    };
    ex.respond("admin", 200, headers, body, len)
}

async fn delete(ex: &Exchange<'_>, key: &str) -> Response<ObjectBody> {
    let removed = lock(&ex.shared.objects.entries).remove(key);
    if let Some(Entry {
        path,
        uploaded: true,
    }) = removed
    {
        let shown = path.display().to_string();
        let gone = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        if let Err(e) = gone.map_err(std::io::Error::other).and_then(|r| r) {
            tracing::warn!("cannot remove {shown}: {e}");
        }
    }
    ex.say(format!(
        "session {} repository DELETE /repo/{key} → 204",
        ex.session
    ));
    ex.respond("repository", 204, Vec::new(), ObjectBody::empty(), 0)
}

async fn get(ex: &Exchange<'_>, key: &str) -> Response<ObjectBody> {
    let objects = &ex.shared.objects;
    let line = |status: u16, extra: &str| {
        format!(
            "session {} repository {} /repo/{key} → {status}{extra}",
            ex.session, ex.method
        )
    };
    let Some(entry) = lock(&objects.entries).get(key).cloned() else {
        ex.say(line(404, ""));
        return ex.text("repository", 404, "no such repository entry\n", Vec::new());
    };
    let opened = match tokio::task::spawn_blocking(move || file::open(&entry.path)).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            ex.say(line(404, &format!(" (the file: {e})")));
            return ex.text("repository", 404, "the object's file is gone\n", Vec::new());
        }
        Err(e) => {
            ex.say(line(500, &format!(" ({e})")));
            return ex.text("repository", 500, "internal error\n", Vec::new());
        }
    };
    let counters = objects.counters_of(key);
    counters.size(opened.version.size);
    if !accepts(ex.header("accept"), OCTET_STREAM) {
        ex.say(line(406, &format!(" (OMADM-Accept: {OCTET_STREAM})")));
        let text = "this entry is available as application/octet-stream only\n";
        let listed = vec![(ACCEPT_HEADER, OCTET_STREAM.to_owned())];
        return ex.text("repository", 406, text, listed);
    }
    let sha256 = match objects.digests.of(&opened).await {
        Ok(sha) => sha,
        Err(e) => {
            ex.say(line(500, &format!(" (digest: {e})")));
            return ex.text(
                "repository",
                500,
                "the object could not be read\n",
                Vec::new(),
            );
        }
    };
    if ex.method == "GET" && objects.take_unavailable() {
        counters.unavailable();
        ex.say(line(503, " (--object-5xx-after)"));
        let retry = vec![("retry-after", "1".to_owned())];
        return ex.text(
            "repository",
            503,
            "unavailable (--object-5xx-after)\n",
            retry,
        );
    }
    answer(ex, key, &opened, &sha256, counters, line)
}

/// The `200`, `206`, `416` or `HEAD` answer for one version of an object.
fn answer(
    ex: &Exchange<'_>,
    key: &str,
    opened: &Opened,
    sha256: &[u8; 32],
    counters: Arc<Counters>,
    line: impl Fn(u16, &str) -> String,
) -> Response<ObjectBody> {
    let size = opened.version.size;
    let etag = opened.version.etag();
    let last_modified = opened.version.last_modified();
    let range = ex
        .header("range")
        .filter(|_| if_range_allows(ex.header("if-range"), &etag, Some(&last_modified)))
        .and_then(|r| parse_range(r, size));
    let mut headers = vec![
        ("content-type", OCTET_STREAM.to_owned()),
        ("etag", etag),
        ("last-modified", last_modified),
        ("accept-ranges", "bytes".to_owned()),
    ];
    let (status, first, len) = match range {
        Some(Ok((first, last))) => {
            headers.push(("content-range", format!("bytes {first}-{last}/{size}")));
            (206, first, last - first + 1)
        }
        Some(Err(())) => {
            headers.retain(|(n, _)| *n != "content-type");
            headers.push(("content-range", format!("bytes */{size}")));
            ex.say(line(416, &format!(" (bytes */{size})")));
            return ex.respond("repository", 416, headers, ObjectBody::empty(), 0);
        }
        None => (200, 0, size),
    };
    headers.push(("repr-digest", repr_digest(sha256)));
    headers.push(("content-length", len.to_string()));
    let range_note = headers
        .iter()
        .find(|(n, _)| *n == "content-range")
        .map(|(_, r)| format!(" ({r})"))
        .unwrap_or_default();
    if ex.method == "HEAD" {
        ex.say(line(status, &range_note));
        return ex.respond("repository", status, headers, ObjectBody::empty(), 0);
    }
    let cut_at = ex.shared.objects.take_cut(len);
    let cut_note = cut_at.map_or_else(String::new, |c| {
        format!(" (to be cut after {c} bytes: --cut-object-after)")
    });
    ex.say(line(status, &format!("{range_note}{cut_note}")));
    counters.started();
    let mut rec = ex.record(Direction::Out, "repository");
    rec.status = Some(status);
    for (name, value) in &headers {
        rec.header(name, value);
    }
    let shared = ex.shared.clone();
    let summary = format!("session {} object /repo/{key}: ", ex.session);
    let on_end = Box::new(move |sent: u64, ending: Ending| {
        rec.bytes = usize::try_from(sent).unwrap_or(usize::MAX);
        rec.note = Some(format!(
            "body {}: {sent} of {len} bytes sent",
            ending.describe()
        ));
        shared.transcript.push(rec);
        shared.transcript.say(format!(
            "{summary}{sent} of {len} bytes sent, {}",
            ending.describe()
        ));
    });
    let body = ObjectBody::stream(opened.file.clone(), first, len, cut_at, counters, on_end);
    response(status, headers, body)
}

/// A streamed upload to `key`.
async fn receive(
    ex: &Exchange<'_>,
    mut rec: Record,
    key: &str,
    body: Incoming,
) -> Response<ObjectBody> {
    let shared = ex.shared;
    let objects = &shared.objects;
    let content_type = ex.header("content-type").map(str::to_owned);
    let mut upload = Upload {
        method: ex.method.clone(),
        path: key.to_owned(),
        content_type: content_type.clone(),
        body: Vec::new(),
        file: None,
        status: 0,
        session: ex.session,
    };
    let admitted = lock(&shared.repo).admit(&ex.method, key, content_type.as_deref());
    let refusal = match admitted {
        Err(refusal) => Some((refusal.status, refusal.headers, refusal.problem)),
        Ok(()) => precheck(ex, objects.max_upload).map(|(status, headers)| (status, headers, None)),
    };
    let line = |status: u16, extra: &str| {
        format!(
            "session {} repository {} /repo/{key} ← {} ({OCTET_STREAM}, streamed) → {status}{extra}",
            ex.session,
            ex.method,
            ex.header("content-length")
                .map_or_else(|| "?".to_owned(), |n| format!("{n} bytes")),
        )
    };
    if let Some((status, headers, problem)) = refusal {
        if let Some(p) = &problem {
            lock(&shared.engine).fail(ex.session, p.clone());
            rec.problems.push(p.clone());
        }
        shared.transcript.push(rec);
        upload.status = status;
        lock(&shared.repo).record(upload);
        ex.say(line(status, ""));
        if let Some(p) = problem {
            ex.say(format!("  ✗ {p}"));
        }
        let text: &'static str = match status {
            413 => "request body too large (--max-upload-bytes)\n",
            415 => "unsupported media type or content coding\n",
            _ => "bad Repr-Digest\n",
        };
        return ex.text("repository", status, text, headers);
    }
    let expected = ex
        .header("repr-digest")
        .and_then(|v| file::sha256_of_field(v).ok().flatten());
    let n = objects.uploads.fetch_add(1, Ordering::Relaxed) + 1;
    let dest = objects
        .data_dir()
        .join(format!("{n:04}-{}", file_name(key)));
    let (written, outcome) =
        upload::receive(body, dest.clone(), objects.max_upload, expected).await;
    if let Some(w) = &written {
        upload.file = Some(UploadedFile {
            path: dest.clone(),
            size: w.size,
            sha256: w.sha256,
        });
        rec.bytes = usize::try_from(w.size).unwrap_or(usize::MAX);
    }
    let status = match &outcome {
        Ok(()) => {
            let replaced = lock(&objects.entries)
                .insert(
                    key.to_owned(),
                    Entry {
                        path: dest.clone(),
                        uploaded: true,
                    },
                )
                .is_some();
            let replaced = lock(&shared.repo).remove(key) || replaced;
            if let Some(w) = &written {
                objects.digests.insert(w.version, w.sha256);
                objects.counters_of(key).size(w.size);
            }
            if ex.method == "PUT" && !replaced {
                201
            } else {
                200
            }
        }
        Err(e) => e.status(),
    };
    rec.note = Some(match (&outcome, &written) {
        (Ok(()), Some(w)) => format!(
            "streamed to {} ({} bytes, sha-256 {})",
            dest.display(),
            w.size,
            hex(&w.sha256)
        ),
        (Err(e), _) => format!("refused: {e}"),
        (Ok(()), None) => "stored".to_owned(),
    });
    shared.transcript.push(rec);
    upload.status = status;
    lock(&shared.repo).record(upload);
    let extra = match &outcome {
        Ok(()) => format!(" (file {})", dest.display()),
        Err(e) => format!(" ({e})"),
    };
    ex.say(line(status, &extra));
    let text = match outcome {
        Ok(()) => return ex.respond("repository", status, Vec::new(), ObjectBody::empty(), 0),
        Err(UploadError::TooLarge { .. }) => "request body too large (--max-upload-bytes)\n",
        Err(UploadError::DigestMismatch { .. }) => "the body does not match its Repr-Digest\n",
        Err(UploadError::Body(_)) => "request body not read\n",
        Err(UploadError::Io { .. }) => "the upload could not be stored\n",
    };
    ex.text("repository", status, text, Vec::new())
}

/// Refusals known before the body is read: a content coding other than identity (`415`),
/// a malformed `Repr-Digest` (`400`), a `Content-Length` over the limit (`413`).
fn precheck(ex: &Exchange<'_>, limit: u64) -> Option<(u16, Vec<(&'static str, String)>)> {
    if ex
        .header("content-encoding")
        .is_some_and(|c| !c.trim().eq_ignore_ascii_case("identity"))
    {
        return Some((415, vec![("accept-encoding", "identity".to_owned())]));
    }
    if ex
        .header("repr-digest")
        .is_some_and(|v| file::sha256_of_field(v).is_err())
    {
        return Some((400, Vec::new()));
    }
    if ex
        .header("content-length")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit)
    {
        return Some((413, Vec::new()));
    }
    None
}

/// A repository path as a file name: anything but letters, digits, `.`, `-` and `_`
/// becomes `_`.
fn file_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_specs_parse() {
        let spec: ObjectSpec = "fw=/tmp/fw.bin".parse().unwrap();
        assert_eq!(spec.name, "fw");
        assert_eq!(spec.path, Path::new("/tmp/fw.bin"));
        let spec: ObjectSpec = "a/b=x=y".parse().unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.path.as_path()),
            ("a/b", Path::new("x=y"))
        );
        assert!("fw".parse::<ObjectSpec>().is_err());
        assert!("=x".parse::<ObjectSpec>().is_err());
        assert!("a b=x".parse::<ObjectSpec>().is_err());
    }

    #[test]
    fn upload_file_names_keep_only_safe_characters() {
        assert_eq!(file_name("sub/fw v1.bin"), "sub_fw_v1.bin");
        assert_eq!(file_name("../x"), ".._x");
    }

    #[tokio::test]
    async fn cuts_are_counted_and_5xx_comes_once() {
        let dir = tempfile::tempdir().unwrap();
        let faults = ObjectFaults {
            cut_after: Some(10),
            cut_times: 2,
            unavailable_after: Some(5),
        };
        let objects = Objects::start(&[], dir.path(), None, 100, faults)
            .await
            .unwrap();
        assert_eq!(objects.take_cut(10), None, "not longer than the cut");
        assert_eq!(objects.take_cut(11), Some(10));
        assert_eq!(objects.take_cut(11), Some(10));
        assert_eq!(objects.take_cut(11), None, "only twice");
        assert!(!objects.take_unavailable(), "nothing sent yet");
        objects.counters_of("objects/a").sent(5);
        assert!(objects.take_unavailable());
        assert!(!objects.take_unavailable(), "once");
        let every = ObjectFaults {
            cut_times: 0,
            ..faults
        };
        let objects = Objects::start(&[], dir.path(), None, 100, every)
            .await
            .unwrap();
        for _ in 0..5 {
            assert_eq!(objects.take_cut(11), Some(10));
        }
        assert_eq!(objects.stats().bytes_sent, 0);
    }

    #[tokio::test]
    async fn objects_are_opened_and_the_temporary_data_dir_goes_with_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fw.bin");
        std::fs::write(&file, b"0123456789").unwrap();
        let specs = [ObjectSpec {
            name: "fw".into(),
            path: file.clone(),
        }];
        let objects = Objects::start(&specs, dir.path(), None, 100, ObjectFaults::default())
            .await
            .unwrap();
        assert_eq!(objects.stats().objects["objects/fw"].size, 10);
        let data = objects.data_dir().to_owned();
        assert!(data.starts_with(dir.path()));
        std::fs::create_dir_all(&data).unwrap();
        drop(objects);
        assert!(!data.exists());
        let missing = [ObjectSpec {
            name: "gone".into(),
            path: dir.path().join("nope"),
        }];
        let err = Objects::start(&missing, dir.path(), None, 100, ObjectFaults::default())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
