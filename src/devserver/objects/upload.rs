//! Streamed uploads: an `application/octet-stream` PUT/POST body written to a file as it
//! arrives (a blocking thread writes and hashes; a small bounded channel between it and the
//! connection), never whole in memory, bounded in size, and checked against the request's
//! `Repr-Digest`. A refused body leaves no file behind.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::file::Version;
use crate::tree::value::hex;

/// Chunks queued between the connection and the writer.
const QUEUE: usize = 8;

/// What was written, as far as it was received.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written {
    pub size: u64,
    pub sha256: [u8; 32],
    /// The file's version once closed (for the digest cache).
    pub version: Version,
}

/// Why an upload was not stored; the file is gone.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("the body exceeds {limit} bytes (--max-upload-bytes)")]
    TooLarge { limit: u64 },
    #[error("Repr-Digest mismatch: the body's sha-256 is {got}, the request said {expected}")]
    DigestMismatch { expected: String, got: String },
    #[error("the request body could not be read: {0}")]
    Body(#[source] hyper::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl UploadError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> u16 {
        match self {
            UploadError::TooLarge { .. } => 413,
            UploadError::DigestMismatch { .. } | UploadError::Body(_) => 400,
            UploadError::Io { .. } => 500,
        }
    }
}

/// Writes `body` to `dest` (a new file; its directory is created), at most `limit` bytes,
/// and checks its SHA-256 against `expected`. On failure the file is removed, and what was
/// received so far comes with the error.
pub(crate) async fn receive(
    mut body: Incoming,
    dest: PathBuf,
    limit: u64,
    expected: Option<[u8; 32]>,
) -> (Option<Written>, Result<(), UploadError>) {
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let writer = {
        let dest = dest.clone();
        tokio::task::spawn_blocking(move || write_file(&dest, rx))
    };
    let mut size = 0u64;
    let read = loop {
        match body.frame().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(UploadError::Body(e)),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                size += data.len() as u64;
                if size > limit {
                    break Err(UploadError::TooLarge { limit });
                }
                // A closed channel means the writer failed: its error is reported below.
                if tx.send(data).await.is_err() {
                    break Ok(());
                }
            }
        }
    };
    drop(tx);
    let written = match writer.await {
        Ok(w) => w,
        Err(e) => Err(io::Error::other(e)),
    };
    let outcome = match (written, read) {
        (Ok(w), Err(e)) => (Some(w), Err(e)),
        (Err(_), Err(e)) => (None, Err(e)),
        (Err(source), Ok(())) => (
            None,
            Err(UploadError::Io {
                path: dest.clone(),
                source,
            }),
        ),
        (Ok(w), Ok(())) => match expected {
            Some(want) if want != w.sha256 => (
                Some(w),
                Err(UploadError::DigestMismatch {
                    expected: hex(&want),
                    got: hex(&w.sha256),
                }),
            ),
            _ => (Some(w), Ok(())),
        },
    };
    if outcome.1.is_err() {
        let doomed = dest.clone();
        let removed = tokio::task::spawn_blocking(move || remove_if_there(&doomed)).await;
        if let Err(e) = removed.map_err(io::Error::other).and_then(|r| r) {
            tracing::warn!("cannot remove the refused upload {}: {e}", dest.display());
        }
    }
    outcome
}

/// Writes what arrives on `rx` to a new file at `dest` and hashes it (blocking).
fn write_file(dest: &Path, mut rx: mpsc::Receiver<Bytes>) -> io::Result<Written> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = File::options().write(true).create_new(true).open(dest)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        file.write_all(&chunk)?;
        hash.update(&chunk);
        size += chunk.len() as u64;
    }
    let meta = file.metadata()?;
    Ok(Written {
        size,
        sha256: hash.finalize().into(),
        version: Version::of(&meta),
    })
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
