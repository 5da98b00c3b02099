//! A download that survives anything short of the object changing: the bytes go into a
//! [`Part`] file, synced and recorded (with the hash state) every `checkpoint_bytes`; a
//! broken connection, a timeout or a `5xx` waits (exponential backoff, cut short when the
//! network moves; a move also ends the current connection, which may be bound to an
//! address the device no longer has) and goes on with `Range: bytes=<done>-` and `If-Range: <validator>`; a
//! `200` to that (the object changed) or a `416` starts over; suspension saves where it is
//! and waits. The result is a complete, synced file with its size and SHA-256, checked
//! against the server's digest when it gave one; it is never published here.

use std::path::PathBuf;
use std::time::Instant;

use futures_util::future::BoxFuture;

use super::board::State;
use super::header;
use super::part::Part;
use super::steer::{FIRST_WAIT, Steer};
use crate::transport::{HttpClient, Request, Streaming, TransportError};

/// Checkpoints over an object of known size, at most (see [`Download::checkpoint_bytes`]).
const CHECKPOINTS: u64 = 40;

/// Bytes handed to the blocking pool at a time (written and hashed while the next ones
/// are read).
const BATCH: usize = 1024 * 1024;

/// Where a download stands: what it resumes from and what it saves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub validator: Option<String>,
    pub total: Option<u64>,
    pub done: u64,
    pub digest: Option<Vec<u8>>,
    pub expected: Option<[u8; 32]>,
}

/// What a download is told.
pub struct Download<'a> {
    pub steer: Steer<'a>,
    pub client: &'a HttpClient,
    pub url: &'a str,
    pub part: PathBuf,
    /// The most bytes the object may have (`[limits] object_bytes`, or less when its owner's
    /// `owner_bytes` leave less room).
    pub max_bytes: u64,
    /// Bytes between checkpoints at least; for a large object of known size, a fortieth
    /// of it (what a crash may cost to fetch again stays within 2.5 %, with far fewer
    /// syncs on a fast link).
    pub checkpoint_bytes: u64,
    /// Persists a checkpoint (and whether the download is suspended).
    pub save: &'a (dyn Fn(Saved, bool) -> BoxFuture<'static, Result<(), String>> + Sync),
}

/// A complete download.
#[derive(Debug, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Why a download ended without an object; its status code for the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub status: u16,
    pub reason: String,
}

fn refused(status: u16, reason: impl Into<String>) -> Refused {
    Refused {
        status,
        reason: reason.into(),
    }
}

/// Why one attempt stopped.
enum Stop {
    /// Try again after a wait.
    Again(String),
    /// Start over from the first byte at once (the object changed).
    Changed,
    /// Suspended: wait for the switch.
    Suspended,
    /// The network moved: try again at once, on a new connection.
    Moved,
    Refused(Refused),
}

impl Download<'_> {
    /// Runs the download from `saved` (and the already opened `first` response, if the
    /// caller had one) to the end.
    pub async fn run(
        mut self,
        mut saved: Saved,
        mut first: Option<Streaming>,
    ) -> Result<Fetched, Refused> {
        let mut wait = FIRST_WAIT;
        let mut progress_at = Instant::now();
        loop {
            if self.steer.suspended_now() {
                first = None;
                self.suspend(&saved).await?;
            }
            let part = self.reopen(&mut saved).await?;
            let before = saved.done;
            let attempt = self.attempt(part, &mut saved, first.take()).await;
            if saved.done > before {
                progress_at = Instant::now();
                wait = FIRST_WAIT;
            }
            match attempt {
                Ok(fetched) => return self.check(fetched, &saved),
                Err(Stop::Refused(r)) => return Err(r),
                Err(Stop::Suspended) => {}
                Err(Stop::Moved) => {
                    tracing::info!(
                        "transfer {}: the network moved; going on at once",
                        self.steer.id
                    );
                    wait = FIRST_WAIT;
                }
                Err(Stop::Changed) => saved = Saved::default(),
                Err(Stop::Again(reason)) => {
                    if progress_at.elapsed() >= self.steer.give_up {
                        return Err(refused(
                            500,
                            format!(
                                "no progress for {} s: {reason}",
                                self.steer.give_up.as_secs()
                            ),
                        ));
                    }
                    self.steer.pause(&mut wait, reason).await;
                }
            }
        }
    }

    /// The part file as `saved` says it stands; when it cannot be trusted that far, from
    /// nothing (and `saved` with it).
    async fn reopen(&self, saved: &mut Saved) -> Result<Part, Refused> {
        let path = self.part.clone();
        let (done, state) = (saved.done, saved.digest.clone());
        let part = blocking(move || Part::open(&path, done, state.as_deref()))
            .await
            .map_err(|e| refused(500, format!("part file: {e}")))?;
        if part.done() != saved.done {
            *saved = Saved::default();
        }
        Ok(part)
    }

    /// Saves where it stands as suspended and waits until resumed.
    async fn suspend(&mut self, saved: &Saved) -> Result<(), Refused> {
        (self.save)(saved.clone(), true)
            .await
            .map_err(|e| refused(500, e))?;
        tracing::info!(
            "transfer {} suspended at {} bytes",
            self.steer.id,
            saved.done
        );
        self.steer.hold().await;
        (self.save)(saved.clone(), false)
            .await
            .map_err(|e| refused(500, e))?;
        tracing::info!("transfer {} resumed at {} bytes", self.steer.id, saved.done);
        Ok(())
    }

    /// One request and as much of its body as comes.
    async fn attempt(
        &mut self,
        mut part: Part,
        saved: &mut Saved,
        first: Option<Streaming>,
    ) -> Result<Fetched, Stop> {
        let mut response = match first {
            Some(r) => r,
            None => {
                let mut req = Request::get(self.url);
                if saved.done > 0
                    && let Some(v) = &saved.validator
                {
                    req = req
                        .with_header("Range", format!("bytes={}-", saved.done))
                        .with_header("If-Range", v.as_str());
                } else if saved.done > 0 {
                    return Err(Stop::Changed);
                }
                self.client.open(req).await.map_err(transient)?
            }
        };
        self.steer
            .board
            .set_state(self.steer.id, State::Running, "");
        match response.status {
            200 => {
                if saved.done > 0 {
                    tracing::info!(
                        "transfer {}: the object changed; fetching it from the start",
                        self.steer.id
                    );
                    part = blocking(move || part.restart().map(|()| part))
                        .await
                        .map_err(|e| Stop::Refused(refused(500, format!("part file: {e}"))))?;
                    *saved = Saved::default();
                }
                saved.total = response
                    .header("content-length")
                    .and_then(|v| v.trim().parse().ok());
                saved.validator =
                    header::validator(response.header("etag"), response.header("last-modified"));
            }
            206 => {
                let range = response
                    .header("content-range")
                    .and_then(header::content_range);
                match range {
                    Some(r) if r.first == saved.done => {
                        saved.total = r.complete.or(saved.total);
                    }
                    _ => return Err(Stop::Changed),
                }
            }
            416 => return Err(Stop::Changed),
            s if s >= 500 || s == 408 || s == 429 => {
                return Err(Stop::Again(format!("{} answered HTTP {s}", self.url)));
            }
            s => {
                let sc = if s == 404 || s == 410 { 404 } else { 500 };
                return Err(Stop::Refused(refused(
                    sc,
                    format!("{} answered HTTP {s}", self.url),
                )));
            }
        }
        if let Some(expected) =
            header::sha256(response.header("repr-digest"), response.header("digest"))
                .map_err(|e| Stop::Refused(refused(400, e)))?
        {
            saved.expected = Some(expected);
        }
        if let Some(total) = saved.total
            && total > self.max_bytes
        {
            return Err(Stop::Refused(refused(
                413,
                format!(
                    "the object has {total} bytes, more than the {} allowed",
                    self.max_bytes
                ),
            )));
        }
        self.steer
            .board
            .advance(self.steer.id, saved.done, saved.total);
        let part = self.stream(part, saved, &mut response).await?;
        let (path, size, sha256) = blocking(move || part.finish())
            .await
            .map_err(|e| Stop::Refused(refused(500, format!("part file: {e}"))))?;
        Ok(Fetched { path, size, sha256 })
    }

    /// Reads the body into `part`, writing each batch on the blocking pool while the next
    /// is read, with a checkpoint every `checkpoint_bytes`. On a stop, what arrived is
    /// synced and recorded first.
    async fn stream(
        &mut self,
        part: Part,
        saved: &mut Saved,
        response: &mut Streaming,
    ) -> Result<Part, Stop> {
        let mut received = saved.done;
        let mut slot = Slot::Idle(part, None);
        let mut failed = None;
        let mut batch = Vec::with_capacity(BATCH);
        let every = self
            .checkpoint_bytes
            .max(saved.total.unwrap_or(0) / CHECKPOINTS);
        loop {
            let read = tokio::select! {
                read = read_batch(response, &mut batch, &mut failed) => read,
                Ok(()) = self.steer.suspended.changed() => Err(Stop::Suspended),
                // The connection may be bound to an address the device no longer has.
                Ok(()) = self.steer.network.changed() => Err(Stop::Moved),
            };
            let (mut part, spare) = slot.settle().await?;
            if !batch.is_empty() {
                received += batch.len() as u64;
                if received > self.max_bytes {
                    return Err(Stop::Refused(refused(
                        413,
                        format!(
                            "the object is larger than the {} bytes it may have ([limits] \
                             object_bytes, or what its owner's owner_bytes leave)",
                            self.max_bytes
                        ),
                    )));
                }
                if part.done() - saved.done >= every {
                    part = self.checkpoint(part, saved).await?;
                }
                self.steer
                    .board
                    .advance(self.steer.id, received, saved.total);
                let next = spare.unwrap_or_else(|| Vec::with_capacity(BATCH));
                let mut bytes = std::mem::replace(&mut batch, next);
                let write = move || {
                    part.write(&bytes)?;
                    bytes.clear();
                    Ok((part, bytes))
                };
                if matches!(read, Ok(false)) {
                    // More to come: written while the next batch is read; the buffer
                    // comes back for the one after.
                    slot = Slot::Writing(tokio::task::spawn_blocking(write));
                    continue;
                }
                part = blocking(write)
                    .await
                    .map_err(|e| Stop::Refused(refused(500, format!("part file: {e}"))))?
                    .0;
            }
            let stop = match read {
                Ok(false) => {
                    slot = Slot::Idle(part, None);
                    continue;
                }
                Ok(true) if saved.total.is_some_and(|t| part.done() < t) => {
                    Stop::Again("the body ended early".into())
                }
                Ok(true) => return Ok(part),
                Err(Stop::Refused(r)) => return Err(Stop::Refused(r)),
                Err(stop) => stop,
            };
            // Keep what arrived: sync and record it before stopping.
            self.checkpoint(part, saved).await?;
            return Err(stop);
        }
    }

    /// Syncs the part file and saves where the download stands.
    async fn checkpoint(&mut self, mut part: Part, saved: &mut Saved) -> Result<Part, Stop> {
        let (p, state) = blocking(move || part.sync().map(|s| (part, s)))
            .await
            .map_err(|e| Stop::Refused(refused(500, format!("part file: {e}"))))?;
        saved.done = p.done();
        saved.digest = Some(state);
        (self.save)(saved.clone(), false)
            .await
            .map_err(|e| Stop::Refused(refused(500, e)))?;
        Ok(p)
    }

    /// The size and digest checks of a complete download.
    fn check(&self, fetched: Fetched, saved: &Saved) -> Result<Fetched, Refused> {
        if let Some(total) = saved.total
            && fetched.size != total
        {
            return Err(refused(
                400,
                format!(
                    "{} bytes arrived, the server announced {total}",
                    fetched.size
                ),
            ));
        }
        if let Some(expected) = saved.expected
            && expected != fetched.sha256
        {
            return Err(refused(
                400,
                format!(
                    "the object's SHA-256 is {}, the server's digest says {}",
                    crate::tree::value::hex(&fetched.sha256),
                    crate::tree::value::hex(&expected)
                ),
            ));
        }
        Ok(fetched)
    }
}

/// The part file, idle or being written on the blocking pool (with the batch buffer,
/// given back emptied for the next batch).
enum Slot {
    Idle(Part, Option<Vec<u8>>),
    Writing(tokio::task::JoinHandle<std::io::Result<(Part, Vec<u8>)>>),
}

impl Slot {
    /// The part file once its write is done, and a spare buffer if one came back.
    async fn settle(self) -> Result<(Part, Option<Vec<u8>>), Stop> {
        match self {
            Slot::Idle(part, spare) => Ok((part, spare)),
            Slot::Writing(handle) => handle
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map(|(part, spare)| (part, Some(spare)))
                .map_err(|e| Stop::Refused(refused(500, format!("part file: {e}")))),
        }
    }
}

/// Reads into `batch` until it holds [`BATCH`] bytes or the body ends (`true`). A
/// failure after some bytes leaves those in `batch` and is kept in `failed` for the next
/// call (the body ends with it). Cancel-safe: what was read stays in `batch`.
async fn read_batch(
    response: &mut Streaming,
    batch: &mut Vec<u8>,
    failed: &mut Option<Stop>,
) -> Result<bool, Stop> {
    if let Some(stop) = failed.take() {
        return Err(stop);
    }
    while batch.len() < BATCH {
        match response.chunk().await {
            Ok(Some(chunk)) => batch.extend_from_slice(&chunk),
            Ok(None) => return Ok(true),
            Err(e) if batch.is_empty() => return Err(transient(e)),
            Err(e) => {
                *failed = Some(transient(e));
                break;
            }
        }
    }
    Ok(false)
}

fn transient(e: TransportError) -> Stop {
    match e {
        TransportError::Tls(_) | TransportError::InvalidUrl(_) | TransportError::Settings(_) => {
            Stop::Refused(refused(500, e.to_string()))
        }
        other => Stop::Again(other.to_string()),
    }
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}
