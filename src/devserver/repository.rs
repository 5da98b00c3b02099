//! The data repository under `/repo/<path>`: what HGET fetches and HPUT, HPOST and SUB
//! upload. In memory, preloaded from the scenario, and recording every upload.
//!
//! - `GET`/`HEAD`: the entry with its Content-Type, an `ETag` and `Accept-Ranges: bytes`.
//!   `Range: bytes=a-b` (also `a-` and `-n`) gives `206` with `Content-Range`; a range
//!   starting past the end gives `416` with `Content-Range: bytes */<length>`; a malformed
//!   or multi-part range, or an `If-Range` that does not match the ETag, gives the whole
//!   entry (`200`), as RFC 9110 asks. An `Accept` header that does not allow the entry's
//!   type gives `406` with `OMADM-Accept: <type>`, unless the scenario marks the entry
//!   `ignore_accept`.
//! - `PUT` stores the body (`201` new, `200` replaced), `POST` stores it (`200`), `DELETE`
//!   removes the entry (`204`). Upload rules from the scenario may answer `415` with
//!   `OMADM-Accept` instead (see [`scenario`](super::scenario)).
//! - Every PUT and POST is kept as an [`Upload`], whatever it was answered.
//!
//! Large objects (files given with `--object`, and `application/octet-stream` uploads,
//! which are streamed to files) are served and stored by [`objects`](super::objects), with
//! the range and validator rules kept here ([`parse_range`], [`if_range_allows`]) and the
//! upload rules checked here ([`Repository::admit`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::protocol::{ACCEPT_HEADER, MO_JSON};

/// A stored repository entry.
#[derive(Clone, Debug)]
pub(crate) struct RepoEntry {
    pub content_type: String,
    pub body: Vec<u8>,
    /// Serve it even when the request's `Accept` does not allow its type.
    pub ignore_accept: bool,
}

/// What the scenario says about uploads to one path.
#[derive(Clone, Debug, Default)]
pub(crate) struct UploadRule {
    /// Content types accepted (empty: any).
    pub accept: Vec<String>,
    /// Answer the first upload `415` whatever its type.
    pub refuse_first: bool,
}

/// One PUT or POST the repository received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// `PUT` or `POST`.
    pub method: String,
    /// The repository path (without `/repo/`).
    pub path: String,
    /// The request's `Content-Type`, if it had one.
    pub content_type: Option<String>,
    /// The body as received (empty when it was streamed to [`file`](Upload::file)).
    pub body: Vec<u8>,
    /// Where an `application/octet-stream` body was streamed to, instead of `body`.
    pub file: Option<UploadedFile>,
    /// The HTTP status the server answered (`200`, `201`, `415`, ...).
    pub status: u16,
    /// The session it is attributed to (the device's latest; `0`: none yet).
    pub session: u64,
}

/// An upload body the server streamed to a file (`application/octet-stream`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedFile {
    /// The file under the server's data directory (removed when the upload was refused).
    pub path: PathBuf,
    /// The body's length in bytes (as far as it was received).
    pub size: u64,
    /// The body's SHA-256 (as far as it was received).
    pub sha256: [u8; 32],
}

impl Upload {
    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// True when the upload was stored (a 2xx answer).
    pub fn stored(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One request to the repository, as the HTTP layer hands it over.
pub(crate) struct RepoRequest<'a> {
    pub method: &'a str,
    pub key: &'a str,
    pub content_type: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub body: &'a [u8],
    pub session: u64,
}

/// The answer, and a failure to record if the client broke a rule.
pub(crate) struct RepoReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub problem: Option<String>,
}

/// The repository's content and its upload log.
#[derive(Debug, Default)]
pub(crate) struct Repository {
    entries: HashMap<String, RepoEntry>,
    rules: HashMap<String, UploadRule>,
    refused_once: HashSet<String>,
    uploads: Vec<Upload>,
}

impl Repository {
    pub fn new(
        entries: impl IntoIterator<Item = (String, RepoEntry)>,
        rules: impl IntoIterator<Item = (String, UploadRule)>,
    ) -> Repository {
        Repository {
            entries: entries.into_iter().collect(),
            rules: rules.into_iter().collect(),
            ..Repository::default()
        }
    }

    /// Keeps an upload the HTTP layer handled itself (a streamed one).
    pub fn record(&mut self, upload: Upload) {
        self.uploads.push(upload);
    }

    /// Removes the in-memory entry at `key` (a file-backed object takes its place); whether
    /// there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Every upload, oldest first.
    pub fn uploads(&self) -> &[Upload] {
        &self.uploads
    }

    /// The uploads to `key`, oldest first.
    pub fn received(&self, key: &str) -> Vec<Upload> {
        self.uploads
            .iter()
            .filter(|u| u.path == key)
            .cloned()
            .collect()
    }

    pub fn handle(&mut self, req: &RepoRequest<'_>) -> RepoReply {
        match req.method {
            "GET" | "HEAD" => self.get(req),
            "PUT" | "POST" => self.upload(req),
            "DELETE" => match self.entries.remove(req.key) {
                Some(_) => reply(204, Vec::new()),
                None => reply(404, b"no such repository entry\n".to_vec()),
            },
            _ => RepoReply {
                headers: vec![("allow", "GET, HEAD, PUT, POST, DELETE".into())],
                ..reply(405, b"method not allowed\n".to_vec())
            },
        }
    }

    fn get(&self, req: &RepoRequest<'_>) -> RepoReply {
        let Some(entry) = self.entries.get(req.key) else {
            return reply(404, b"no such repository entry\n".to_vec());
        };
        if !entry.ignore_accept && !accepts(req.accept, &entry.content_type) {
            return RepoReply {
                headers: vec![(ACCEPT_HEADER, entry.content_type.clone())],
                ..reply(
                    406,
                    format!("this entry is available as {} only\n", entry.content_type)
                        .into_bytes(),
                )
            };
        }
        let len = entry.body.len() as u64;
        let etag = etag(&entry.body);
        let mut headers = vec![
            ("content-type", entry.content_type.clone()),
            ("etag", etag.clone()),
            ("accept-ranges", "bytes".into()),
        ];
        let range = req
            .range
            .filter(|_| if_range_allows(req.if_range, &etag, None))
            .and_then(|r| parse_range(r, len));
        let (status, body) = match range {
            Some(Ok((first, last))) => {
                headers.push(("content-range", format!("bytes {first}-{last}/{len}")));
                (206, entry.body[first as usize..=last as usize].to_vec())
            }
            Some(Err(())) => {
                headers.retain(|(n, _)| *n != "content-type");
                headers.push(("content-range", format!("bytes */{len}")));
                (416, Vec::new())
            }
            None => (200, entry.body.clone()),
        };
        if req.method == "HEAD" {
            headers.push(("content-length", body.len().to_string()));
            return RepoReply {
                status,
                headers,
                body: Vec::new(),
                problem: None,
            };
        }
        RepoReply {
            status,
            headers,
            body,
            problem: None,
        }
    }

    fn upload(&mut self, req: &RepoRequest<'_>) -> RepoReply {
        let out = match self.admit(req.method, req.key, req.content_type) {
            Err(refusal) => refusal,
            Ok(()) => {
                let content_type = req
                    .content_type
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let old = self.entries.insert(
                    req.key.to_owned(),
                    RepoEntry {
                        content_type,
                        body: req.body.to_vec(),
                        ignore_accept: false,
                    },
                );
                let status = if req.method == "PUT" && old.is_none() {
                    201
                } else {
                    200
                };
                reply(status, Vec::new())
            }
        };
        self.uploads.push(Upload {
            method: req.method.to_owned(),
            path: req.key.to_owned(),
            content_type: req.content_type.map(str::to_owned),
            body: req.body.to_vec(),
            file: None,
            status: out.status,
            session: req.session,
        });
        out
    }

    /// Checks an upload against the scenario's rules for `key`: `Err` is the `415` answer
    /// (with `OMADM-Accept`, and a problem when the client retried with a type still not
    /// listed).
    pub fn admit(
        &mut self,
        method: &str,
        key: &str,
        content_type: Option<&str>,
    ) -> Result<(), RepoReply> {
        let rule = self.rules.get(key).cloned().unwrap_or_default();
        let listed = if rule.accept.is_empty() {
            vec![MO_JSON.to_owned()]
        } else {
            rule.accept.clone()
        };
        let type_ok = rule.accept.is_empty()
            || content_type
                .is_some_and(|ct| rule.accept.iter().any(|a| media_type(a) == media_type(ct)));
        let mut problem = None;
        if !(rule.refuse_first && self.refused_once.insert(key.to_owned())) {
            if type_ok {
                return Ok(());
            }
            if self.refused_once.contains(key) {
                problem = Some(format!(
                    "{method} /repo/{key}: retried with Content-Type {} after 415, which is not one of {}",
                    content_type.unwrap_or("(none)"),
                    listed.join(", ")
                ));
            }
            self.refused_once.insert(key.to_owned());
        }
        Err(RepoReply {
            headers: vec![(ACCEPT_HEADER, listed.join(", "))],
            problem,
            ..reply(415, b"unsupported media type; see OMADM-Accept\n".to_vec())
        })
    }
}

fn reply(status: u16, body: Vec<u8>) -> RepoReply {
    let headers = if body.is_empty() {
        Vec::new()
    } else {
        vec![("content-type", "text/plain; charset=utf-8".to_owned())]
    };
    RepoReply {
        status,
        headers,
        body,
        problem: None,
    }
}

fn etag(body: &[u8]) -> String {
    format!(
        "\"{}\"",
        crate::tree::value::hex(&Sha256::digest(body)[..8])
    )
}

/// The media type of a header value: before any `;`, trimmed, lower case.
pub(crate) fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether an `Accept` header allows `ty` (no header allows anything; `q=0` excludes).
pub(crate) fn accepts(accept: Option<&str>, ty: &str) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    let ty = media_type(ty);
    let (major, _) = ty.split_once('/').unwrap_or((&ty, ""));
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused && (media == "*/*" || media == ty || media == format!("{major}/*"))
    })
}

/// Whether a `Range` may be honoured under the request's `If-Range` (RFC 9110 §13.1.5): no
/// `If-Range`, an entity tag that is a strong match for `etag` (a weak tag never matches), or
/// an HTTP-date exactly equal to `last_modified`.
pub(crate) fn if_range_allows(
    if_range: Option<&str>,
    etag: &str,
    last_modified: Option<&str>,
) -> bool {
    let Some(v) = if_range.map(str::trim) else {
        return true;
    };
    if v.starts_with('"') {
        return v == etag && !etag.starts_with("W/");
    }
    !v.starts_with("W/") && last_modified.is_some_and(|lm| lm == v)
}

/// `Some(Ok((first, last)))` for a satisfiable single range, `Some(Err(()))` for an
/// unsatisfiable one, `None` for a header to ignore (malformed, or several ranges).
pub(crate) fn parse_range(header: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let (unit, spec) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    if a.is_empty() {
        let n = num(b)?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len - n.min(len), len - 1)));
    }
    let first = num(a)?;
    let last = if b.is_empty() { None } else { Some(num(b)?) };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    if first >= len {
        return Some(Err(()));
    }
    Some(Ok((first, last.map_or(len - 1, |l| l.min(len - 1)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-3", 10), Some(Ok((0, 3))));
        assert_eq!(parse_range("bytes=5-", 10), Some(Ok((5, 9))));
        assert_eq!(parse_range("bytes=5-100", 10), Some(Ok((5, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Some(Ok((7, 9))));
        assert_eq!(parse_range("bytes=-30", 10), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 10), Some(Err(())));
        assert_eq!(parse_range("bytes=3-1", 10), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
        assert_eq!(parse_range("bytes=x-1", 10), None);
    }

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert!(if_range_allows(None, "\"a\"", None));
        assert!(if_range_allows(Some(" \"a\" "), "\"a\"", Some(lm)));
        assert!(!if_range_allows(Some("\"b\""), "\"a\"", Some(lm)));
        assert!(!if_range_allows(Some("W/\"a\""), "\"a\"", Some(lm)));
        assert!(!if_range_allows(Some("W/\"a\""), "W/\"a\"", None));
        assert!(if_range_allows(Some(lm), "\"a\"", Some(lm)));
        assert!(!if_range_allows(
            Some("Sun, 06 Nov 1994 08:49:38 GMT"),
            "\"a\"",
            Some(lm)
        ));
        assert!(
            !if_range_allows(Some(lm), "\"a\"", None),
            "no date to match"
        );
    }

    #[test]
    fn accept_matching_knows_wildcards_and_q0() {
        assert!(accepts(None, MO_JSON));
        assert!(accepts(Some("*/*"), MO_JSON));
        assert!(accepts(Some("application/*"), MO_JSON));
        assert!(accepts(
            Some("text/plain, application/vnd.oma.dm.mo+json; q=0.5"),
            MO_JSON
        ));
        assert!(!accepts(Some("application/json"), MO_JSON));
        assert!(!accepts(
            Some("application/vnd.oma.dm.mo+json;q=0"),
            MO_JSON
        ));
    }

    #[test]
    fn refuse_first_answers_415_once_then_stores() {
        let mut repo = Repository::new(
            [],
            [(
                "sub/x".to_owned(),
                UploadRule {
                    accept: vec![MO_JSON.into()],
                    refuse_first: true,
                },
            )],
        );
        let req = |ct: &'static str| RepoRequest {
            method: "PUT",
            key: "sub/x",
            content_type: Some(ct),
            accept: None,
            range: None,
            if_range: None,
            body: b"[]",
            session: 1,
        };
        let r = repo.handle(&req(MO_JSON));
        assert_eq!(r.status, 415);
        assert_eq!(r.headers, [(ACCEPT_HEADER, MO_JSON.to_owned())]);
        let r = repo.handle(&req("application/json"));
        assert_eq!(r.status, 415);
        assert!(r.problem.unwrap().contains("not one of"));
        assert_eq!(repo.handle(&req(MO_JSON)).status, 201);
        assert_eq!(repo.handle(&req(MO_JSON)).status, 200);
        assert_eq!(repo.received("sub/x").len(), 4);
    }
}
