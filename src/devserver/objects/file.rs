//! One version of a file-backed object: the open file and its validators. A version is what
//! `fstat` says of the open file (inode, size, modification time in nanoseconds), so a file
//! replaced on disk (a new file renamed over it) or rewritten is a new version with a new
//! strong `ETag`, and the bytes served are those of the version the validators name. The
//! SHA-256 of a version (its `Repr-Digest`, RFC 9530) is computed once, on a blocking
//! thread, and cached.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use crate::devserver::transcript::lock;

/// Bytes read at a time when hashing a file.
const HASH_CHUNK: usize = 1 << 20;

/// What identifies one version of a file: its ETag is made of these, not of its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Version {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl Version {
    pub fn of(meta: &std::fs::Metadata) -> Version {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }

    /// The strong entity tag: `"<inode>-<size>-<mtime ns>"` in hex.
    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}-{:x}\"", self.ino, self.size, self.mtime_ns)
    }

    /// `Last-Modified`: the modification time as an HTTP-date (whole seconds).
    pub fn last_modified(&self) -> String {
        let secs = i64::try_from(self.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0);
        http_date(secs)
    }
}

/// An object's file, opened, and the version it is.
pub(crate) struct Opened {
    pub file: Arc<File>,
    pub version: Version,
}

/// Opens `path` and reads its version from the open file (blocking).
pub(crate) fn open(path: &Path) -> io::Result<Opened> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(Opened {
        version: Version::of(&meta),
        file: Arc::new(file),
    })
}

/// The SHA-256 of each version seen, computed at most once per version.
#[derive(Default)]
pub(crate) struct Digests {
    known: Mutex<HashMap<Version, Arc<OnceCell<[u8; 32]>>>>,
}

impl Digests {
    /// The SHA-256 of `opened`'s content: cached, or read on a blocking thread (requests
    /// for the same version meanwhile wait for that one computation).
    pub async fn of(&self, opened: &Opened) -> io::Result<[u8; 32]> {
        let cell = lock(&self.known).entry(opened.version).or_default().clone();
        let file = opened.file.clone();
        let size = opened.version.size;
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || hash_file(&file, size))
                .await
                .map_err(io::Error::other)?
        })
        .await
        .copied()
    }

    /// Records the digest of a version whose bytes were hashed as they were written.
    pub fn insert(&self, version: Version, sha256: [u8; 32]) {
        lock(&self.known).insert(version, Arc::new(OnceCell::new_with(Some(sha256))));
    }
}

/// The SHA-256 of the first `size` bytes of `file` (blocking), read with `pread` so the
/// file's offset is nobody's concern.
fn hash_file(file: &File, size: u64) -> io::Result<[u8; 32]> {
    let mut hash = Sha256::new();
    let mut buf = vec![0; HASH_CHUNK];
    let mut at = 0;
    while at < size {
        let n = usize::try_from(size - at).map_or(HASH_CHUNK, |left| left.min(HASH_CHUNK));
        file.read_exact_at(&mut buf[..n], at)?;
        hash.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hash.finalize().into())
}

/// A `Repr-Digest` field value: `sha-256=:<base64>:`.
pub(crate) fn repr_digest(sha256: &[u8; 32]) -> String {
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha256)
    )
}

/// Why a request's `Repr-Digest` cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("Repr-Digest {value:?}: {reason}")]
pub(crate) struct BadDigest {
    value: String,
    reason: &'static str,
}

/// The SHA-256 a `Repr-Digest` field gives (RFC 9530: a dictionary of algorithm =
/// `:base64:`); `Ok(None)` when it names only other algorithms.
pub(crate) fn sha256_of_field(value: &str) -> Result<Option<[u8; 32]>, BadDigest> {
    let bad = |reason| BadDigest {
        value: value.to_owned(),
        reason,
    };
    for member in value.split(',') {
        let Some((algorithm, bytes)) = member.split_once('=') else {
            return Err(bad("a member is not algorithm=:base64:"));
        };
        let bytes = bytes.split(';').next().unwrap_or_default().trim();
        let Some(b64) = bytes.strip_prefix(':').and_then(|b| b.strip_suffix(':')) else {
            return Err(bad("a digest is not a byte sequence (:base64:)"));
        };
        if !algorithm.trim().eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("the sha-256 digest is not base64"))?;
        return <[u8; 32]>::try_from(raw)
            .map(Some)
            .map_err(|_| bad("the sha-256 digest is not 32 bytes"));
    }
    Ok(None)
}

/// An HTTP-date (IMF-fixdate, RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[usize::from(t.weekday().number_days_from_monday())],
        t.day(),
        MONTHS[usize::from(u8::from(t.month()) - 1)],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdate() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn a_version_is_named_by_inode_size_and_mtime() {
        let v = Version {
            dev: 1,
            ino: 0x2a,
            size: 16,
            mtime_ns: 784_111_777_000_000_123,
        };
        assert_eq!(v.etag(), "\"2a-10-ae1b981bc490a7b\"");
        assert_eq!(v.last_modified(), "Sun, 06 Nov 1994 08:49:37 GMT");
        let w = Version {
            mtime_ns: v.mtime_ns + 1,
            ..v
        };
        assert_ne!(v.etag(), w.etag());
        assert_eq!(v.last_modified(), w.last_modified());
    }

    #[test]
    fn repr_digest_round_trips_and_bad_fields_are_named() {
        let sha: [u8; 32] = Sha256::digest(b"hello").into();
        let field = repr_digest(&sha);
        assert_eq!(
            field,
            "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:"
        );
        assert_eq!(sha256_of_field(&field), Ok(Some(sha)));
        let both = format!("sha-512=:AAAA:, {field}");
        assert_eq!(sha256_of_field(&both), Ok(Some(sha)));
        assert_eq!(sha256_of_field("sha-512=:AAAA:"), Ok(None));
        assert!(sha256_of_field("sha-256=AAAA").is_err());
        assert!(sha256_of_field("sha-256=:AAAA:").is_err());
        assert!(sha256_of_field("nonsense").is_err());
    }

    #[tokio::test]
    async fn digests_are_computed_once_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let digests = Digests::default();
        let opened = open(&path).unwrap();
        let sha = digests.of(&opened).await.unwrap();
        assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(b"hello")));
        // The cache answers for the version, not the content: no second read.
        digests.insert(opened.version, [7; 32]);
        assert_eq!(digests.of(&opened).await.unwrap(), [7; 32]);
        let tmp = dir.path().join("g");
        std::fs::write(&tmp, b"world").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let replaced = open(&path).unwrap();
        assert_ne!(replaced.version.etag(), opened.version.etag());
        assert_eq!(
            digests.of(&replaced).await.unwrap(),
            <[u8; 32]>::from(Sha256::digest(b"world"))
        );
        assert!(open(dir.path()).is_err());
    }
}
