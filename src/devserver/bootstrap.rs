//! The bootstrap-server mode (`--bootstrap FILE`): `https://HOST:PORT/bootstrap` answers
//! `GET` (and `HEAD`) with the file's bytes as an MO serialization
//! (`application/vnd.oma.dm.mo+json`), behind the same TLS, client certificates and HTTP
//! Basic as the rest of the server — what omadmd's client-initiated bootstrap fetches from
//! a DM account's `Auth/Bootstrap/ServerURI` (see the README). The bytes are served as they
//! are, unchecked, so that tests can serve broken ones; other methods get `405`. Every
//! `GET` answered is counted.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::protocol::MO_JSON;

/// The path the bootstrap document is served at.
pub const PATH: &str = "/bootstrap";

/// The document served, and how often it was fetched.
#[derive(Debug)]
pub(crate) struct BootstrapDoc {
    body: Vec<u8>,
    fetched: AtomicUsize,
}

/// The answer to one request.
pub(crate) struct BootstrapReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl BootstrapDoc {
    pub fn new(body: Vec<u8>) -> BootstrapDoc {
        BootstrapDoc {
            body,
            fetched: AtomicUsize::new(0),
        }
    }

    /// How many `GET`s were answered with the document.
    pub fn fetched(&self) -> usize {
        self.fetched.load(Ordering::Relaxed)
    }

    pub fn handle(&self, method: &str) -> BootstrapReply {
        match method {
            "GET" | "HEAD" => {
                let mut headers = vec![("content-type", MO_JSON.to_owned())];
                let body = if method == "GET" {
                    self.fetched.fetch_add(1, Ordering::Relaxed);
                    self.body.clone()
                } else {
                    headers.push(("content-length", self.body.len().to_string()));
                    Vec::new()
                };
                BootstrapReply {
                    status: 200,
                    headers,
                    body,
                }
            }
            _ => BootstrapReply {
                status: 405,
                headers: vec![
                    ("allow", "GET, HEAD".into()),
                    ("content-type", "text/plain; charset=utf-8".into()),
                ],
                body: b"the bootstrap document is fetched with GET\n".to_vec(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_serves_the_bytes_as_they_are_and_counts_other_methods_are_refused() {
        let doc = BootstrapDoc::new(b"not even JSON".to_vec());
        let got = doc.handle("GET");
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, &b"not even JSON"[..])
        );
        assert_eq!(got.headers[0], ("content-type", MO_JSON.to_owned()));
        let head = doc.handle("HEAD");
        assert!(head.status == 200 && head.body.is_empty());
        assert_eq!(doc.fetched(), 1);
        let post = doc.handle("POST");
        assert_eq!(post.status, 405);
        assert_eq!(doc.fetched(), 1);
    }
}
