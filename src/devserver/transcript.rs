//! The transcript: one [`Record`] per request received and per response sent, kept in
//! memory and, with `--transcript FILE`, written to FILE as JSON lines (the file is
//! truncated at start and flushed line by line). Next to it, the human-readable summary:
//! one line per package and per repository request, handed to the summary sink (stdout in
//! the binary) and kept in memory.
//!
//! A line of the file looks like:
//!
//! ```json
//! {"time":"2026-11-01T12:00:00.123Z","session":1,"direction":"in","kind":"package#3",
//!  "peer":"127.0.0.1:50312","method":"POST","path":"/dm","headers":{"content-type":
//!  "application/vnd.oma.dm.response+json","omadm-devid":"IMEI:1"},"bytes":31,
//!  "body":{"Status":[{"sc":200},{"sc":404}]},"problems":["..."]}
//! ```
//!
//! `body` is the JSON value when the body is JSON, else its text; a body that is not UTF-8
//! is in `body_base64`. `session` is `0` for exchanges that belong to no session.
//! Passwords are never recorded: `authorization` shows the scheme and user name only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{LineWriter, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::DevServerError;

/// Receives each summary line as it happens (the binary prints them to stdout).
pub type SummarySink = Arc<dyn Fn(&str) + Send + Sync>;

/// Which way a record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A request the server received (or a failed TLS handshake).
    In,
    /// The response the server sent.
    Out,
}

/// One transcript record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    /// The session number (from 1); `0` when the exchange belongs to no session.
    pub session: u64,
    pub direction: Direction,
    /// `package#1`, `package#2`, `package#3`, `dm` (a request to the DM URL that is no
    /// package), `repository`, `bootstrap` (the bootstrap document), `auth` (refused for missing credentials), `tls` (a failed
    /// handshake) or `other`.
    pub kind: String,
    /// The client's address.
    pub peer: String,
    /// The request method (of the request answered, for `out`).
    pub method: String,
    /// The request path (with query).
    pub path: String,
    /// The HTTP status (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The headers of interest, names in lower case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The subject of the client's certificate, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// Body length in bytes.
    #[serde(default)]
    pub bytes: usize,
    /// The body: JSON where it is JSON, else text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The body in base64 when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// Rules the client broke with this request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Anything else worth knowing (e.g. why a TLS handshake failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Headers recorded in the transcript.
pub(crate) const HEADERS_OF_INTEREST: [&str; 13] = [
    "content-type",
    "accept",
    "omadm-devid",
    "omadm-accept",
    "range",
    "if-range",
    "content-range",
    "etag",
    "www-authenticate",
    "authorization",
    "allow",
    "user-agent",
    "host",
];

impl Record {
    /// A record stamped now, without body.
    pub(crate) fn new(
        direction: Direction,
        kind: &str,
        peer: &str,
        method: &str,
        path: &str,
    ) -> Record {
        Record {
            time: now_rfc3339(),
            session: 0,
            direction,
            kind: kind.to_owned(),
            peer: peer.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            status: None,
            headers: BTreeMap::new(),
            client_cert: None,
            bytes: 0,
            body: None,
            body_base64: None,
            problems: Vec::new(),
            note: None,
        }
    }

    /// Sets `bytes`, `body` / `body_base64` from raw bytes.
    pub(crate) fn with_body(mut self, body: &[u8]) -> Record {
        self.bytes = body.len();
        if body.is_empty() {
            return self;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            self.body = Some(v);
        } else if let Ok(text) = std::str::from_utf8(body) {
            self.body = Some(Value::String(text.to_owned()));
        } else {
            self.body_base64 = Some(base64::engine::general_purpose::STANDARD.encode(body));
        }
        self
    }

    /// Adds a header of interest (`authorization` reduced to scheme and user).
    pub(crate) fn header(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        if !HEADERS_OF_INTEREST.contains(&name.as_str()) {
            return;
        }
        let value = if name == "authorization" {
            redact_authorization(value)
        } else {
            value.to_owned()
        };
        self.headers.insert(name, value);
    }
}

/// `Basic <b64>` becomes `Basic user=<name>`; other schemes keep only their name.
fn redact_authorization(value: &str) -> String {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let user = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|s| s.split(':').next().unwrap_or_default().to_owned());
        match user {
            Some(u) => format!("Basic user={u}"),
            None => "Basic (undecodable)".into(),
        }
    } else {
        format!("{scheme} (redacted)")
    }
}

/// The in-memory transcript, the optional JSON-lines file and the summary lines.
pub(crate) struct Transcript {
    records: Mutex<Vec<Record>>,
    file: Option<Mutex<LineWriter<File>>>,
    summary: Mutex<Vec<String>>,
    sink: Option<SummarySink>,
}

impl Transcript {
    pub fn open(
        path: Option<&Path>,
        sink: Option<SummarySink>,
    ) -> Result<Transcript, DevServerError> {
        let file = match path {
            Some(p) => Some(Mutex::new(LineWriter::new(
                File::create(p).map_err(|e| DevServerError::io(p, e))?,
            ))),
            None => None,
        };
        Ok(Transcript {
            records: Mutex::new(Vec::new()),
            file,
            summary: Mutex::new(Vec::new()),
            sink,
        })
    }

    pub fn push(&self, record: Record) {
        if let Some(file) = &self.file {
            match serde_json::to_string(&record) {
                Ok(line) => {
                    let mut f = lock(file);
                    if let Err(e) = writeln!(f, "{line}") {
                        tracing::warn!("cannot write the transcript: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot encode a transcript record: {e}"),
            }
        }
        lock(&self.records).push(record);
    }

    /// A summary line.
    pub fn say(&self, line: String) {
        if let Some(sink) = &self.sink {
            sink(&line);
        }
        lock(&self.summary).push(line);
    }

    pub fn records(&self) -> Vec<Record> {
        lock(&self.records).clone()
    }

    pub fn summary(&self) -> Vec<String> {
        lock(&self.summary).clone()
    }
}

/// Locks, going on with the data if another thread panicked while holding the lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

fn rfc3339(secs: i64, millis: u32) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400 + 3661, 5), "2000-02-29T01:01:01.005Z");
        assert_eq!(rfc3339(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
    }

    #[test]
    fn bodies_are_json_text_or_base64_and_passwords_stay_out() {
        let r = Record::new(Direction::In, "x", "p", "POST", "/").with_body(br#"{"a":1}"#);
        assert_eq!(r.body, Some(serde_json::json!({"a": 1})));
        let r = Record::new(Direction::In, "x", "p", "POST", "/").with_body(b"hello");
        assert_eq!(r.body, Some(Value::String("hello".into())));
        let r = Record::new(Direction::In, "x", "p", "POST", "/").with_body(&[0xff, 0]);
        assert_eq!(r.body_base64.as_deref(), Some("/wA="));
        let mut r = Record::new(Direction::In, "x", "p", "POST", "/");
        r.header("Authorization", "Basic YWxpY2U6c2VjcmV0");
        r.header("X-Other", "dropped");
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some("Basic user=alice")
        );
        assert_eq!(r.headers.len(), 1);
    }
}
