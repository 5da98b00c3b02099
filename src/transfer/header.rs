//! The HTTP fields a resumable transfer reads and writes (RFC 9110 ranges and validators,
//! RFC 9530 digests), parsed once into what they say.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// What a `Content-Range: bytes first-last/complete` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    /// The whole object's size; `None` for `*`.
    pub complete: Option<u64>,
}

/// Parses a `Content-Range` of a `206`.
pub fn content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, complete) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let complete = match complete.trim() {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    if last < first || complete.is_some_and(|c| last >= c) {
        return None;
    }
    Some(ContentRange {
        first,
        last,
        complete,
    })
}

/// The validator to resume with, from a response's `ETag` and `Last-Modified`: a strong
/// ETag (RFC 9110 §13.1.5: `If-Range` needs a strong one), else the date. `None`: the
/// object cannot be resumed safely, a later attempt starts over.
pub fn validator(etag: Option<&str>, last_modified: Option<&str>) -> Option<String> {
    match etag.map(str::trim) {
        Some(tag) if tag.starts_with('"') && tag.len() >= 2 && tag.ends_with('"') => {
            Some(tag.to_owned())
        }
        _ => last_modified
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty()),
    }
}

/// The SHA-256 a response gives for the whole object: `Repr-Digest: sha-256=:<base64>:`
/// (RFC 9530), or the older `Digest: SHA-256=<base64>` (RFC 3230). Other algorithms are
/// ignored; a sha-256 member that is not 32 bytes of base64 is `Err`.
pub fn sha256(repr_digest: Option<&str>, digest: Option<&str>) -> Result<Option<[u8; 32]>, String> {
    let member = |field: &str, wrapped: bool| -> Option<Result<[u8; 32], String>> {
        field.split(',').find_map(|member| {
            let (name, value) = member.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("sha-256") {
                return None;
            }
            let value = value.trim();
            let value = if wrapped {
                value.strip_prefix(':').and_then(|v| v.strip_suffix(':'))
            } else {
                Some(value)
            };
            Some(
                value
                    .and_then(|v| BASE64.decode(v).ok())
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .ok_or_else(|| {
                        format!("a sha-256 digest field that is not 32 bytes: {field:?}")
                    }),
            )
        })
    };
    match repr_digest
        .and_then(|f| member(f, true))
        .or_else(|| digest.and_then(|f| member(f, false)))
    {
        Some(found) => found.map(Some),
        None => Ok(None),
    }
}

/// The `Repr-Digest` field for an object of digest `sha256`.
pub fn repr_digest(sha256: &[u8; 32]) -> String {
    format!("sha-256=:{}:", BASE64.encode(sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_read_and_nonsense_refused() {
        assert_eq!(
            content_range("bytes 100-199/1000"),
            Some(ContentRange {
                first: 100,
                last: 199,
                complete: Some(1000)
            })
        );
        assert_eq!(content_range("bytes 0-9/*").unwrap().complete, None);
        for bad in [
            "bytes 9-0/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes */10",
            "bytes a-b/c",
        ] {
            assert_eq!(content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_strong_etag_is_preferred_and_a_weak_one_never_used() {
        let date = Some("Sun, 29 Nov 2026 10:00:00 GMT");
        assert_eq!(validator(Some("\"abc\""), date).as_deref(), Some("\"abc\""));
        assert_eq!(validator(Some("W/\"abc\""), date).as_deref(), date);
        assert_eq!(validator(Some("W/\"abc\""), None), None);
        assert_eq!(validator(None, None), None);
    }

    #[test]
    fn digests_come_from_repr_digest_then_digest() {
        let sum = [7u8; 32];
        let b64 = BASE64.encode(sum);
        let repr = format!("sha-512=:AAAA:, sha-256=:{b64}:");
        assert_eq!(sha256(Some(&repr), None), Ok(Some(sum)));
        assert_eq!(sha256(None, Some(&format!("SHA-256={b64}"))), Ok(Some(sum)));
        assert_eq!(sha256(Some("sha-512=:AAAA:"), None), Ok(None));
        assert!(sha256(Some("sha-256=:AAAA:"), None).is_err());
        assert_eq!(repr_digest(&sum), format!("sha-256=:{b64}:"));
        assert_eq!(sha256(Some(&repr_digest(&sum)), None), Ok(Some(sum)));
    }
}
