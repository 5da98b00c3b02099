//! An upload of a large object (HPUT, HPOST, a SUB delivery): the object's file streamed
//! as the body, with `Content-Length` and `Repr-Digest`, progress on the board. A broken
//! connection, a timeout or a `5xx` waits and sends it again from the start (HTTP has no
//! standard way to resume an upload); suspension stops it and waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::future::BoxFuture;

use super::board::State;
use super::fetch::Refused;
use super::header;
use super::steer::{FIRST_WAIT, Steer};
use crate::store::Objects;
use crate::transport::{FileBody, HttpClient, Method, Response};
use crate::tree::value::ObjectRef;

/// What an upload is told.
pub struct Upload<'a> {
    pub steer: Steer<'a>,
    pub client: &'a HttpClient,
    pub method: Method,
    pub url: &'a str,
    pub objects: &'a Objects,
    pub object: ObjectRef,
    /// Persists whether the upload is suspended.
    pub save: &'a (dyn Fn(bool) -> BoxFuture<'static, Result<(), String>> + Sync),
}

impl Upload<'_> {
    /// Sends the object until the server takes it (`2xx`: `Ok`), refuses it (`4xx`) or
    /// `give_up` passes.
    pub async fn run(mut self) -> Result<(), Refused> {
        let started = Instant::now();
        let mut wait = FIRST_WAIT;
        loop {
            if self.steer.suspended_now() {
                let refused = |reason| Refused {
                    status: 500,
                    reason,
                };
                (self.save)(true).await.map_err(refused)?;
                self.steer.hold().await;
                (self.save)(false).await.map_err(refused)?;
            }
            self.steer
                .board
                .set_state(self.steer.id, State::Running, "");
            let reason = match self.attempt().await {
                Ok(status) if (200..300).contains(&status) => return Ok(()),
                Ok(status) if status >= 500 || status == 408 || status == 429 => {
                    format!("{} answered HTTP {status}", self.url)
                }
                Ok(status) => {
                    return Err(Refused {
                        status: if status == 413 { 413 } else { 500 },
                        reason: format!("{} answered HTTP {status}", self.url),
                    });
                }
                Err(Some(e)) => e,
                // Suspended mid-way: the loop waits for the switch.
                Err(None) => continue,
            };
            if started.elapsed() >= self.steer.give_up {
                return Err(Refused {
                    status: 500,
                    reason: format!(
                        "given up after {} s: {reason}",
                        self.steer.give_up.as_secs()
                    ),
                });
            }
            self.steer.pause(&mut wait, reason).await;
        }
    }

    /// One attempt: the HTTP status, or why there was none (`None`: suspended).
    async fn attempt(&mut self) -> Result<u16, Option<String>> {
        let sent = Arc::new(AtomicU64::new(0));
        let sending = send_object(
            self.client,
            self.method,
            self.url,
            self.objects,
            &self.object,
            Arc::clone(&sent),
        );
        tokio::pin!(sending);
        let mut ticks = tokio::time::interval(super::board::PROGRESS_EVERY);
        loop {
            tokio::select! {
                answer = &mut sending => {
                    self.steer.board.advance(self.steer.id, sent.load(Ordering::Relaxed), Some(self.object.size));
                    return answer.map(|r| r.status).map_err(Some);
                }
                _ = ticks.tick() => {
                    self.steer.board.advance(self.steer.id, sent.load(Ordering::Relaxed), Some(self.object.size));
                }
                Ok(()) = self.steer.suspended.changed() => {
                    if *self.steer.suspended.borrow() {
                        return Err(None);
                    }
                }
                // The connection may be bound to an address the device no longer has.
                Ok(()) = self.steer.network.changed() => {
                    return Err(Some("the network moved".into()));
                }
            }
        }
    }
}

/// Sends `object`'s file once as `method` to `url` (`application/octet-stream`,
/// `Content-Length`, `Repr-Digest`); `sent` counts the bytes as they go.
pub async fn send_object(
    client: &HttpClient,
    method: Method,
    url: &str,
    objects: &Objects,
    object: &ObjectRef,
    sent: Arc<AtomicU64>,
) -> Result<Response, String> {
    let file = objects
        .open(object)
        .map_err(|e| format!("{}: {e}", objects.path(object).display()))?;
    let headers = vec![
        (
            "Content-Type".to_owned(),
            "application/octet-stream".to_owned(),
        ),
        (
            "Repr-Digest".to_owned(),
            header::repr_digest(&object.sha256),
        ),
    ];
    let body = FileBody {
        file: tokio::fs::File::from_std(file),
        len: object.size,
        sent,
    };
    client
        .send_file(method, url, headers, body)
        .await
        .map_err(|e| e.to_string())
}
