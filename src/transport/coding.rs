//! Content codings of message bodies (RFC 9110 §8.4): gzip both ways, negotiated.
//!
//! - **Responses** — a request with [`Coding::Negotiated`] says `Accept-Encoding: gzip`, and a
//!   gzip-coded response body is decoded as it arrives ([`Decoder`]): the body limit applies
//!   to the decoded bytes, so a small body that inflates past it (a "gzip bomb") is refused
//!   without inflating further than the limit (and one 32 KiB step of the inflater); a
//!   corrupt or truncated stream is an error naming the problem, never a short body.
//! - **Requests** — a body is gzip-coded only once the origin has said that it reads
//!   gzip-coded requests, by listing gzip in an `Accept-Encoding` field of its responses
//!   (RFC 7694 §3), which [`AcceptingOrigins`] remembers per origin; only bodies of at least
//!   [`MIN_CODED_BYTES`] are coded, and only when coding makes them smaller. A `415` to a
//!   coded body that does not list gzip as accepted is a refusal of the coding
//!   ([`refuses_coding`]): the caller sends the body again identity-coded, and the origin is
//!   not sent coded bodies again by this client, whatever it advertises later (a server
//!   that advertises gzip but refuses it would otherwise cost two exchanges a request).
//! - [`Coding::Identity`] keeps a request identity-coded both ways (large objects: their
//!   ranges and digests address the object's own bytes).
//!
//! The codec is flate2 with its pure-Rust backend (miniz_oxide).

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::{Mutex, PoisonError};

use flate2::Compression;
use flate2::write::{GzEncoder, MultiGzDecoder};

/// The deflate level bodies are coded at: on the B.1 customer-care results (284 kB of
/// JSON) level 4 codes 1.5% larger than the default level 6 in about a third of the time
/// (miniz_oxide; 33.7 against 33.2 kB, ~4.5 against ~14 ms here); level 1 is 37% larger.
pub const GZIP_LEVEL: u32 = 4;

/// Bodies shorter than this are never gzip-coded: on a few hundred bytes, gzip's 18 bytes
/// of framing and the `Content-Encoding` field cost about what deflate saves.
pub(crate) const MIN_CODED_BYTES: usize = 256;

/// How a [`Request`](super::Request)'s body, and its response's, may be content-coded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Coding {
    /// gzip where negotiated (the default): the request asks for gzip-coded responses
    /// (`Accept-Encoding: gzip`, unless the request names its own), and its body is
    /// gzip-coded when its origin has said that it reads gzip-coded requests and the body
    /// is large enough for coding to pay.
    #[default]
    Negotiated,
    /// Identity both ways: the body is sent as it is and the request says
    /// `Accept-Encoding: identity`. For large objects, whose ranges and digests address the
    /// object's own bytes.
    Identity,
}

/// The content coding of a received body, from its `Content-Encoding` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContentCoding {
    Identity,
    Gzip,
}

impl ContentCoding {
    /// The coding a `Content-Encoding` field value names (all values of the field, joined
    /// with `,`; `None` when there is none). `identity` entries are ignored; a coding other
    /// than one gzip (`deflate`, `br`, gzip applied twice) is `Err` with the field's value.
    pub(crate) fn parse(value: Option<&str>) -> Result<ContentCoding, String> {
        let Some(value) = value else {
            return Ok(ContentCoding::Identity);
        };
        let mut codings = value
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
        match (codings.next(), codings.next()) {
            (None, _) => Ok(ContentCoding::Identity),
            (Some(c), None) if is_gzip(c) => Ok(ContentCoding::Gzip),
            _ => Err(value.to_owned()),
        }
    }
}

fn is_gzip(coding: &str) -> bool {
    coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip")
}

/// Whether an `Accept-Encoding` field value (all values joined with `,`) admits gzip:
/// `gzip`, `x-gzip` or `*` with a weight above zero, where a `gzip` entry overrides `*`.
pub(crate) fn accepts_gzip(value: &str) -> bool {
    let mut star = None;
    for entry in value.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let weight = parts
            .find_map(|p| {
                let (name, v) = p.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| v.trim().parse::<f32>().unwrap_or(0.0))
            })
            .unwrap_or(1.0);
        if is_gzip(coding) {
            return weight > 0.0;
        }
        if coding == "*" {
            star = Some(weight > 0.0);
        }
    }
    star.unwrap_or(false)
}

/// `body` gzip-coded, or `None` when it is shorter than [`MIN_CODED_BYTES`] or coding
/// would not make it smaller.
pub(crate) fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < MIN_CODED_BYTES {
        return None;
    }
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        Compression::new(GZIP_LEVEL),
    );
    // Invariant: the encoder writes only into its Vec, and writing into a Vec cannot fail.
    encoder.write_all(body).expect("gzip into memory");
    let coded = encoder.finish().expect("gzip into memory");
    (coded.len() < body.len()).then_some(coded)
}

/// Why a received body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The body is, or decodes to, more than `limit` bytes.
    #[error("it is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The gzip stream is corrupt or cut short.
    #[error("the gzip stream is corrupt: {0}")]
    Corrupt(String),
}

/// Decodes a body chunk by chunk, as it arrives, into at most `limit` bytes.
pub(crate) struct Decoder {
    state: State,
    limit: usize,
    /// Coded bytes received so far.
    coded: usize,
}

enum State {
    Identity(Bounded),
    Gzip(Box<MultiGzDecoder<Bounded>>),
}

impl Decoder {
    pub(crate) fn new(coding: ContentCoding, limit: usize) -> Decoder {
        let out = Bounded {
            data: Vec::new(),
            limit,
            over: false,
        };
        let state = match coding {
            ContentCoding::Identity => State::Identity(out),
            ContentCoding::Gzip => State::Gzip(Box::new(MultiGzDecoder::new(out))),
        };
        Decoder {
            state,
            limit,
            coded: 0,
        }
    }

    /// The most coded bytes a body within the limit can take: the limit itself for an
    /// identity body; for gzip, deflate's worst case (stored blocks: 5 bytes per 64 KiB)
    /// with room for the gzip header's optional fields. Beyond it the body is refused
    /// without decoding it: a stream of empty blocks or an endless header would otherwise
    /// be read until the timeout.
    pub(crate) fn coded_limit(&self) -> usize {
        match self.state {
            State::Identity(_) => self.limit,
            State::Gzip(_) => self
                .limit
                .saturating_add(self.limit / 64)
                .saturating_add(4096),
        }
    }

    /// Decodes the next chunk of the body.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        self.coded = self.coded.saturating_add(chunk.len());
        if self.coded > self.coded_limit() {
            return Err(DecodeError::TooLarge { limit: self.limit });
        }
        let limit = self.limit;
        let written = match &mut self.state {
            State::Identity(out) => out.write_all(chunk),
            State::Gzip(decoder) => decoder.write_all(chunk),
        };
        written.map_err(|e| self.failure(e, limit))
    }

    /// The whole decoded body, once every chunk was pushed.
    pub(crate) fn finish(self) -> Result<Vec<u8>, DecodeError> {
        let limit = self.limit;
        match self.state {
            State::Identity(out) => Ok(out.data),
            // A response that has no body (HEAD, 304) may still name its coding.
            State::Gzip(_) if self.coded == 0 => Ok(Vec::new()),
            State::Gzip(mut decoder) => match decoder.try_finish() {
                Ok(()) => {
                    let out = decoder
                        .finish()
                        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
                    Ok(out.data)
                }
                Err(_) if decoder.get_ref().over => Err(DecodeError::TooLarge { limit }),
                Err(e) => Err(DecodeError::Corrupt(truncated(&e))),
            },
        }
    }

    fn failure(&self, err: io::Error, limit: usize) -> DecodeError {
        let over = match &self.state {
            State::Identity(out) => out.over,
            State::Gzip(decoder) => decoder.get_ref().over,
        };
        if over {
            DecodeError::TooLarge { limit }
        } else {
            DecodeError::Corrupt(err.to_string())
        }
    }
}

/// flate2 says "corrupt" of a stream cut short too; say which it is.
fn truncated(err: &io::Error) -> String {
    format!("{err} (the stream ended before its end-of-stream marker and trailer)")
}

/// Collects decoded bytes, refusing to grow past `limit`.
struct Bounded {
    data: Vec<u8>,
    limit: usize,
    /// A write was refused for the limit.
    over: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.limit - self.data.len() {
            self.over = true;
            return Err(io::Error::other("the body limit is reached"));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether `status` and the response's `Accept-Encoding` (all values joined, `None` when
/// absent) refuse a gzip-coded request body (RFC 7694 §3): a `415` that does not list gzip
/// as accepted. A `415` that does list it refuses something else (the media type).
pub(crate) fn refuses_coding(status: u16, accept_encoding: Option<&str>) -> bool {
    status == 415 && !accept_encoding.is_some_and(accepts_gzip)
}

/// An origin: scheme (https: true), host, port.
type Origin = (bool, String, u16);

/// The origins (scheme, host, port) that said they read gzip-coded request bodies, and
/// those that refused one anyway.
#[derive(Default)]
pub(crate) struct AcceptingOrigins {
    origins: Mutex<Origins>,
}

#[derive(Default)]
struct Origins {
    accepting: HashSet<Origin>,
    refused: HashSet<Origin>,
}

impl AcceptingOrigins {
    pub(crate) fn accepts(&self, origin: &Origin) -> bool {
        self.lock().accepting.contains(origin)
    }

    /// Learns from a response's `Accept-Encoding` (all values joined; `None` when absent,
    /// which changes nothing): gzip listed adds the origin (unless it refused a coded body
    /// before), a list without it removes it.
    pub(crate) fn learn(&self, origin: &Origin, accept_encoding: Option<&str>) {
        let Some(value) = accept_encoding else {
            return;
        };
        let gzip = accepts_gzip(value);
        let mut origins = self.lock();
        if !gzip {
            origins.accepting.remove(origin);
        } else if !origins.accepting.contains(origin) && !origins.refused.contains(origin) {
            origins.accepting.insert(origin.clone());
        }
    }

    /// The origin refused a coded body: none is sent to it again.
    pub(crate) fn refused(&self, origin: &Origin) {
        let mut origins = self.lock();
        origins.accepting.remove(origin);
        origins.refused.insert(origin.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Origins> {
        self.origins.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compressible body: DM-package-like JSON text.
    fn text(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while out.len() < len {
            out.extend_from_slice(format!("{{\"sc\":200,\"uri\":\"./Node/{i}\"}},").as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn decode(coded: &[u8], limit: usize, chunk: usize) -> Result<Vec<u8>, DecodeError> {
        let mut d = Decoder::new(ContentCoding::Gzip, limit);
        for c in coded.chunks(chunk) {
            d.push(c)?;
        }
        d.finish()
    }

    #[test]
    fn a_body_round_trips_in_any_chunking() {
        let body = text(100_000);
        let coded = gzip(&body).unwrap();
        assert!(coded.len() < body.len() / 5, "{}", coded.len());
        for chunk in [1, 7, 1000, 16_384, coded.len()] {
            assert_eq!(decode(&coded, body.len(), chunk).unwrap(), body, "{chunk}");
        }
        // Two members (RFC 1952 §2.2) decode as one body.
        let mut two = coded.clone();
        two.extend(gzip(&text(300)).unwrap());
        let mut both = body.clone();
        both.extend(text(300));
        assert_eq!(decode(&two, both.len(), 4096).unwrap(), both);
    }

    #[test]
    fn tiny_and_incompressible_bodies_are_not_coded() {
        assert_eq!(gzip(&text(MIN_CODED_BYTES - 1)), None);
        assert!(gzip(&text(MIN_CODED_BYTES)).is_some());
        let mut noise = vec![0u8; 4096];
        getrandom::fill(&mut noise).unwrap();
        assert_eq!(gzip(&noise), None, "coding would make it larger");
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_limit_without_inflating_it() {
        // 64 MiB of zeros codes to about 64 KiB.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let limit = 1 << 20;
        let mut d = Decoder::new(ContentCoding::Gzip, limit);
        let mut refused = None;
        for c in bomb.chunks(16_384) {
            if let Err(e) = d.push(c) {
                refused = Some(e);
                break;
            }
            let State::Gzip(inner) = &d.state else {
                unreachable!()
            };
            // Never more than the limit is kept.
            assert!(inner.get_ref().data.len() <= limit);
        }
        assert_eq!(refused, Some(DecodeError::TooLarge { limit }));
        // At the limit exactly is fine.
        let exact = gzip(&text(limit)).unwrap();
        assert_eq!(decode(&exact, limit, 16_384).unwrap().len(), limit);
        // So is an empty body naming gzip (a HEAD or 304 response).
        assert_eq!(decode(&[], limit, 1).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn a_coded_body_far_larger_than_the_limit_is_refused_unread() {
        let mut d = Decoder::new(ContentCoding::Gzip, 1000);
        assert_eq!(d.coded_limit(), 1000 + 15 + 4096);
        assert_eq!(
            d.push(&vec![0u8; 6000]),
            Err(DecodeError::TooLarge { limit: 1000 })
        );
        let mut d = Decoder::new(ContentCoding::Identity, 1000);
        d.push(&[b'x'; 1000]).unwrap();
        assert_eq!(d.push(b"x"), Err(DecodeError::TooLarge { limit: 1000 }));
    }

    #[test]
    fn a_corrupt_or_truncated_stream_is_an_error() {
        let body = text(50_000);
        let coded = gzip(&body).unwrap();
        let mut flipped = coded.clone();
        flipped[coded.len() / 2] ^= 0x55;
        flipped[coded.len() / 2 + 1] ^= 0xaa;
        let err = decode(&flipped, 1 << 20, 1000).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err:?}");
        let mut bad_crc = coded.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        assert!(matches!(
            decode(&bad_crc, 1 << 20, 1000),
            Err(DecodeError::Corrupt(_))
        ));
        let err = decode(&coded[..coded.len() - 20], 1 << 20, 1000).unwrap_err();
        match err {
            DecodeError::Corrupt(m) => assert!(m.contains("ended before"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(b"not gzip at all", 1 << 20, 4),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn content_encoding_and_accept_encoding_are_read() {
        assert_eq!(ContentCoding::parse(None), Ok(ContentCoding::Identity));
        assert_eq!(
            ContentCoding::parse(Some("identity")),
            Ok(ContentCoding::Identity)
        );
        assert_eq!(ContentCoding::parse(Some("GZIP")), Ok(ContentCoding::Gzip));
        assert_eq!(
            ContentCoding::parse(Some("x-gzip")),
            Ok(ContentCoding::Gzip)
        );
        assert_eq!(ContentCoding::parse(Some("br")), Err("br".into()));
        assert_eq!(
            ContentCoding::parse(Some("gzip, gzip")),
            Err("gzip, gzip".into())
        );
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0, *"));
        assert!(!accepts_gzip("*;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip(""));
        assert!(refuses_coding(415, None));
        assert!(refuses_coding(415, Some("identity")));
        assert!(!refuses_coding(415, Some("gzip")), "a media-type refusal");
        assert!(!refuses_coding(400, None));
    }

    #[test]
    fn origins_are_learned_and_forgotten() {
        let origins = AcceptingOrigins::default();
        let a = (true, "dm.example".to_owned(), 443);
        let b = (true, "repo.example".to_owned(), 443);
        assert!(!origins.accepts(&a));
        origins.learn(&a, Some("gzip"));
        origins.learn(&b, None);
        assert!(origins.accepts(&a) && !origins.accepts(&b));
        origins.learn(&a, None);
        assert!(origins.accepts(&a), "silence changes nothing");
        origins.learn(&a, Some("identity"));
        assert!(!origins.accepts(&a));
        origins.learn(&a, Some("gzip"));
        origins.refused(&a);
        assert!(!origins.accepts(&a));
        origins.learn(&a, Some("gzip"));
        assert!(
            !origins.accepts(&a),
            "an origin that refused is not believed again"
        );
    }
}
