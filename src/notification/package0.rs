//! The Package#0 codec (PROTOCOL.md §5, ARCHITECTURE.md §7), both ways: [`Package0::parse`]
//! turns at most [`MAX_BYTES`] received bytes into a typed [`Notification`] or a
//! [`Package0Error`] naming what is wrong; [`build`] writes one, signed when given the
//! account's `Auth/Noti` credentials. Pure: no I/O, only `std`, `sha2` and `thiserror` (the
//! fuzz build compiles this file on its own).
//!
//! The wire: a 2-byte header — `VER` (4 bits, [`VERSION`]), `OC` (5 bits, the option count),
//! 7 reserved bits (sent as 0, ignored when read) — then `OC` options in increasing number,
//! each once: a byte holding the option delta (number minus the previous number) and the
//! value length, 4 bits each, extended as in CoAP (RFC 7252 §3.1: nibble 13 adds a byte,
//! value − 13; 14 adds two, value − 269; 15 is reserved), then the value. Nothing may follow
//! the last option.
//!
//! | no | option | value |
//! |---|---|---|
//! | 1 | SERVER-ID | UTF-8, not empty (required) |
//! | 2 | PREFERRED-CON-TYPE | 1 byte: 0 any, 1 cellular, 2 WLAN, 3 wireline (absent: any) |
//! | 3 | NOTIFICATION-ID | 2 bytes, unsigned |
//! | 4 | SHA256-DIGEST | 32 bytes |
//! | 5 | TIMESTAMP | POSIX seconds, unsigned, 4 or 8 bytes (written as 4 while it fits) |
//! | 6 | REQ-MOS | empty |
//!
//! The digest is `SHA256(secret || notification || auth data)`, the notification taken with
//! 32 zero bytes in place of the digest value ([`digest`]); [`Package0::digest_matches`]
//! checks one in constant time.

use sha2::{Digest as _, Sha256};

/// The notification format version this codec reads and writes.
pub const VERSION: u8 = 1;

/// The largest Package#0 read or written, in bytes. A datagram may carry 64 KiB; a
/// notification needs a few dozen bytes plus its SERVER-ID.
pub const MAX_BYTES: usize = 1024;

/// Length of the SHA256-DIGEST value.
pub const DIGEST_BYTES: usize = 32;

const SERVER_ID: u32 = 1;
const PREFERRED_CON_TYPE: u32 = 2;
const NOTIFICATION_ID: u32 = 3;
const SHA256_DIGEST: u32 = 4;
const TIMESTAMP: u32 = 5;
const REQ_MOS: u32 = 6;

/// The bearer a server prefers the session on (PREFERRED-CON-TYPE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConType {
    /// Any bearer (also when the option is absent).
    #[default]
    Any,
    Cellular,
    Wlan,
    Wireline,
}

impl ConType {
    /// The type for an option byte; `None` for a value the protocol does not define.
    pub fn from_byte(byte: u8) -> Option<ConType> {
        match byte {
            0 => Some(ConType::Any),
            1 => Some(ConType::Cellular),
            2 => Some(ConType::Wlan),
            3 => Some(ConType::Wireline),
            _ => None,
        }
    }

    /// The option byte.
    pub fn byte(self) -> u8 {
        match self {
            ConType::Any => 0,
            ConType::Cellular => 1,
            ConType::Wlan => 2,
            ConType::Wireline => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConType::Any => "any",
            ConType::Cellular => "cellular",
            ConType::Wlan => "wlan",
            ConType::Wireline => "wireline",
        }
    }
}

impl std::str::FromStr for ConType {
    type Err = String;

    fn from_str(s: &str) -> Result<ConType, String> {
        [
            ConType::Any,
            ConType::Cellular,
            ConType::Wlan,
            ConType::Wireline,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(s) || c.byte().to_string() == s)
        .ok_or_else(|| format!("unknown connection type {s:?} (any, cellular, wlan, wireline)"))
    }
}

/// What a Package#0 says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// SERVER-ID: the DM account's `SrvID`.
    pub server_id: String,
    /// PREFERRED-CON-TYPE.
    pub con_type: ConType,
    /// NOTIFICATION-ID.
    pub notification_id: Option<u16>,
    /// SHA256-DIGEST.
    pub digest: Option<[u8; DIGEST_BYTES]>,
    /// TIMESTAMP, POSIX seconds.
    pub timestamp: Option<u64>,
    /// REQ-MOS: send the MO list in Package#1.
    pub req_mos: bool,
}

impl Notification {
    /// A notification from `server_id` with no other option.
    pub fn new(server_id: &str) -> Notification {
        Notification {
            server_id: server_id.to_owned(),
            con_type: ConType::Any,
            notification_id: None,
            digest: None,
            timestamp: None,
            req_mos: false,
        }
    }
}

/// The `Auth/Noti` credentials a digest is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// `Auth/Noti/Secret`.
    pub secret: &'a [u8],
    /// `Auth/Noti/Data` (empty when unset).
    pub data: &'a [u8],
}

/// A received Package#0: what it says, and the bytes its digest covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package0 {
    pub notification: Notification,
    /// The message with its digest value zeroed (the message itself when it has none).
    signed: Vec<u8>,
}

/// Why bytes are not a Package#0, or a notification cannot be written as one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Package0Error {
    #[error("{len} bytes: a Package#0 is at most {max}")]
    TooLong { len: usize, max: usize },
    #[error("{len} byte(s): shorter than the 2-byte header")]
    NoHeader { len: usize },
    #[error("version {0}: only version {VERSION} is understood")]
    Version(u8),
    #[error("option {index} of {count}: the message ends inside it (byte {at})")]
    Truncated {
        index: usize,
        count: usize,
        at: usize,
    },
    #[error("option {index}: {field} nibble 15 is reserved (byte {at})")]
    Reserved {
        index: usize,
        field: &'static str,
        at: usize,
    },
    #[error(
        "option {index}: number {number} after {previous} (options come once each, in \
         increasing order)"
    )]
    Order {
        index: usize,
        number: u32,
        previous: u32,
    },
    #[error("option {number} is not a Package#0 option (1 to 6)")]
    Unknown { number: u32 },
    #[error("{option}: {len} byte(s), expected {expected}")]
    Length {
        option: &'static str,
        len: usize,
        expected: &'static str,
    },
    #[error("SERVER-ID is not UTF-8")]
    ServerIdNotUtf8,
    #[error("SERVER-ID of {len} bytes: a Package#0 is at most {max}")]
    ServerIdTooLong { len: usize, max: usize },
    #[error("no SERVER-ID option")]
    NoServerId,
    #[error("PREFERRED-CON-TYPE {0}: expected 0 (any), 1 (cellular), 2 (WLAN) or 3 (wireline)")]
    ConType(u8),
    #[error("{extra} byte(s) after the {count} option(s) the header announces")]
    Trailing { extra: usize, count: usize },
}

impl Package0 {
    /// Reads a Package#0 (see the module documentation for what is refused).
    pub fn parse(bytes: &[u8]) -> Result<Package0, Package0Error> {
        if bytes.len() > MAX_BYTES {
            return Err(Package0Error::TooLong {
                len: bytes.len(),
                max: MAX_BYTES,
            });
        }
        let [first, second, ..] = *bytes else {
            return Err(Package0Error::NoHeader { len: bytes.len() });
        };
        let version = first >> 4;
        if version != VERSION {
            return Err(Package0Error::Version(version));
        }
        let count = usize::from(((first & 0x0f) << 1) | (second >> 7));
        let mut reader = Reader {
            bytes,
            at: 2,
            count,
            index: 0,
        };
        let mut notification = Notification::new("");
        let mut server_id = None;
        let mut digest_at = None;
        let mut number = 0u32;
        for index in 1..=count {
            reader.index = index;
            let head = reader.take(1)?[0];
            let delta = reader.extended(head >> 4, "delta")?;
            let len = reader.extended(head & 0x0f, "length")?;
            let previous = number;
            number = number.saturating_add(delta);
            if delta == 0 {
                return Err(Package0Error::Order {
                    index,
                    number,
                    previous,
                });
            }
            let at = reader.at;
            let value = reader.take(len as usize)?;
            match number {
                SERVER_ID => {
                    if value.is_empty() {
                        return Err(length("SERVER-ID", 0, "at least 1"));
                    }
                    let text =
                        std::str::from_utf8(value).map_err(|_| Package0Error::ServerIdNotUtf8)?;
                    server_id = Some(text.to_owned());
                }
                PREFERRED_CON_TYPE => {
                    let [byte] = *value else {
                        return Err(length("PREFERRED-CON-TYPE", value.len(), "1"));
                    };
                    notification.con_type =
                        ConType::from_byte(byte).ok_or(Package0Error::ConType(byte))?;
                }
                NOTIFICATION_ID => {
                    let [high, low] = *value else {
                        return Err(length("NOTIFICATION-ID", value.len(), "2"));
                    };
                    notification.notification_id = Some(u16::from_be_bytes([high, low]));
                }
                SHA256_DIGEST => {
                    let digest: [u8; DIGEST_BYTES] = value
                        .try_into()
                        .map_err(|_| length("SHA256-DIGEST", value.len(), "32"))?;
                    notification.digest = Some(digest);
                    digest_at = Some(at);
                }
                TIMESTAMP => {
                    notification.timestamp = Some(match *value {
                        [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
                        [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
                        _ => return Err(length("TIMESTAMP", value.len(), "4 or 8")),
                    });
                }
                REQ_MOS => {
                    if !value.is_empty() {
                        return Err(length("REQ-MOS", value.len(), "0"));
                    }
                    notification.req_mos = true;
                }
                number => return Err(Package0Error::Unknown { number }),
            }
        }
        let extra = bytes.len() - reader.at;
        if extra > 0 {
            return Err(Package0Error::Trailing { extra, count });
        }
        notification.server_id = server_id.ok_or(Package0Error::NoServerId)?;
        let mut signed = bytes.to_vec();
        if let Some(at) = digest_at {
            signed[at..at + DIGEST_BYTES].fill(0);
        }
        Ok(Package0 {
            notification,
            signed,
        })
    }

    /// Whether the notification carries a digest and it is the one `credentials` make
    /// (compared in constant time).
    pub fn digest_matches(&self, credentials: Credentials<'_>) -> bool {
        match &self.notification.digest {
            Some(sent) => same(&digest(credentials, &self.signed), sent),
            None => false,
        }
    }
}

/// Writes `notification` as a Package#0. With `credentials` its digest is computed and
/// written (whatever `notification.digest` holds); without, `notification.digest` is
/// written as it is (none, or one made elsewhere).
pub fn build(
    notification: &Notification,
    credentials: Option<Credentials<'_>>,
) -> Result<Vec<u8>, Package0Error> {
    let id_len = notification.server_id.len();
    if id_len == 0 {
        return Err(length("SERVER-ID", 0, "at least 1"));
    }
    if id_len > MAX_BYTES {
        return Err(Package0Error::ServerIdTooLong {
            len: id_len,
            max: MAX_BYTES,
        });
    }
    let digest_value = match credentials {
        Some(_) => Some([0; DIGEST_BYTES]),
        None => notification.digest,
    };
    let timestamp = notification.timestamp.map(|t| match u32::try_from(t) {
        Ok(short) => short.to_be_bytes().to_vec(),
        Err(_) => t.to_be_bytes().to_vec(),
    });
    let con_type = [notification.con_type.byte()];
    let id = notification.notification_id.map(u16::to_be_bytes);
    let options: Vec<(u32, &[u8])> = [
        Some((SERVER_ID, notification.server_id.as_bytes())),
        (notification.con_type != ConType::Any).then_some((PREFERRED_CON_TYPE, &con_type[..])),
        id.as_ref().map(|id| (NOTIFICATION_ID, &id[..])),
        digest_value
            .as_ref()
            .map(|digest| (SHA256_DIGEST, &digest[..])),
        timestamp.as_deref().map(|t| (TIMESTAMP, t)),
        notification.req_mos.then_some((REQ_MOS, &[][..])),
    ]
    .into_iter()
    .flatten()
    .collect();
    // Invariant: six options at most, well under the 31 `OC` (5 bits) counts.
    let count = options.len() as u8;
    let mut out = vec![(VERSION << 4) | (count >> 1), (count & 1) << 7];
    let mut digest_at = None;
    let mut previous = 0;
    for (number, value) in options {
        let (delta_nibble, delta_ext) = nibble(number - previous);
        let (len_nibble, len_ext) = nibble(value.len() as u32);
        out.push((delta_nibble << 4) | len_nibble);
        out.extend_from_slice(&delta_ext);
        out.extend_from_slice(&len_ext);
        if number == SHA256_DIGEST {
            digest_at = Some(out.len());
        }
        out.extend_from_slice(value);
        previous = number;
    }
    if out.len() > MAX_BYTES {
        return Err(Package0Error::TooLong {
            len: out.len(),
            max: MAX_BYTES,
        });
    }
    if let (Some(credentials), Some(at)) = (credentials, digest_at) {
        let made = digest(credentials, &out);
        out[at..at + DIGEST_BYTES].copy_from_slice(&made);
    }
    Ok(out)
}

/// `SHA256(secret || signed || data)`: the digest of a notification whose digest value is
/// zeroed in `signed`.
pub fn digest(credentials: Credentials<'_>, signed: &[u8]) -> [u8; DIGEST_BYTES] {
    let mut hash = Sha256::new();
    hash.update(credentials.secret);
    hash.update(signed);
    hash.update(credentials.data);
    hash.finalize().into()
}

/// Compares two digests in time independent of where they differ.
fn same(a: &[u8; DIGEST_BYTES], b: &[u8; DIGEST_BYTES]) -> bool {
    let differ = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(differ) == 0
}

fn length(option: &'static str, len: usize, expected: &'static str) -> Package0Error {
    Package0Error::Length {
        option,
        len,
        expected,
    }
}

/// The nibble and extension bytes of an option delta or length (RFC 7252 §3.1).
fn nibble(value: u32) -> (u8, Vec<u8>) {
    match value {
        0..=12 => (value as u8, vec![]),
        13..=268 => (13, vec![(value - 13) as u8]),
        // Invariant: a value is at most MAX_BYTES (checked before writing), far below
        // 269 + 65535.
        _ => (14, ((value - 269) as u16).to_be_bytes().to_vec()),
    }
}

/// Reads options front to back, naming the option a problem is in.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    count: usize,
    index: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Package0Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(Package0Error::Truncated {
                index: self.index,
                count: self.count,
                at: self.bytes.len(),
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// A delta or length from its nibble and extension bytes.
    fn extended(&mut self, nibble: u8, field: &'static str) -> Result<u32, Package0Error> {
        match nibble {
            0..=12 => Ok(u32::from(nibble)),
            13 => Ok(13 + u32::from(self.take(1)?[0])),
            14 => {
                let ext = self.take(2)?;
                Ok(269 + u32::from(u16::from_be_bytes([ext[0], ext[1]])))
            }
            _ => Err(Package0Error::Reserved {
                index: self.index,
                field,
                at: self.at - 1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: Credentials<'static> = Credentials {
        secret: b"s3cret",
        data: b"auth-data",
    };

    fn full() -> Notification {
        Notification {
            server_id: "srv".into(),
            con_type: ConType::Wlan,
            notification_id: Some(0x1234),
            digest: None,
            timestamp: Some(1_700_000_000),
            req_mos: true,
        }
    }

    #[test]
    fn writes_the_documented_bytes() {
        let mut n = full();
        n.digest = Some([0xab; 32]);
        let bytes = build(&n, None).unwrap();
        let mut want = vec![0x13, 0x00]; // VER 1, OC 6
        want.extend([0x13, b's', b'r', b'v']); // SERVER-ID, delta 1, length 3
        want.extend([0x11, 2]); // PREFERRED-CON-TYPE: WLAN
        want.extend([0x12, 0x12, 0x34]); // NOTIFICATION-ID
        want.extend([0x1d, 32 - 13]); // SHA256-DIGEST: length 32, extended by one byte
        want.extend([0xab; 32]);
        want.extend([0x14]); // TIMESTAMP, 4 bytes
        want.extend(1_700_000_000u32.to_be_bytes());
        want.extend([0x10]); // REQ-MOS, empty
        assert_eq!(bytes, want);
        assert_eq!(Package0::parse(&bytes).unwrap().notification, n);
        // Only SERVER-ID: one option, the OC bit in the second byte clear.
        assert_eq!(
            build(&Notification::new("a"), None).unwrap(),
            [0x10, 0x80, 0x11, b'a']
        );
    }

    #[test]
    fn extended_lengths_and_deltas_follow_coap() {
        for (len, nibble) in [(12, 12), (13, 13), (268, 13), (269, 14), (900, 14)] {
            let n = Notification::new(&"x".repeat(len));
            let bytes = build(&n, None).unwrap();
            assert_eq!(bytes[2] & 0x0f, nibble, "{len}");
            assert_eq!(Package0::parse(&bytes).unwrap().notification, n, "{len}");
        }
        // Deltas extend the same way: nibble 13 and a zero byte is option 13; nibble 14 and
        // two zero bytes option 269.
        assert_eq!(
            Package0::parse(&[0x10, 0x80, 0xd0, 0x00]),
            Err(Package0Error::Unknown { number: 13 })
        );
        assert_eq!(
            Package0::parse(&[0x10, 0x80, 0xe0, 0x00, 0x00]),
            Err(Package0Error::Unknown { number: 269 })
        );
    }

    #[test]
    fn accepts_an_eight_byte_timestamp_and_writes_four_while_it_fits() {
        let mut bytes = vec![0x11, 0x00, 0x11, b'a', 0x48];
        bytes.extend(1_700_000_000u64.to_be_bytes());
        let n = Package0::parse(&bytes).unwrap().notification;
        assert_eq!(n.timestamp, Some(1_700_000_000));
        assert_eq!(build(&n, None).unwrap().len(), bytes.len() - 4);
        let far = Notification {
            timestamp: Some(u64::from(u32::MAX) + 1),
            ..Notification::new("a")
        };
        let written = build(&far, None).unwrap();
        assert_eq!(written[4], 0x48);
        assert_eq!(Package0::parse(&written).unwrap().notification, far);
    }

    #[test]
    fn reserved_header_bits_are_ignored() {
        let bytes = [0x10, 0x80 | 0x7f, 0x11, b'a'];
        assert_eq!(
            Package0::parse(&bytes).unwrap().notification,
            Notification::new("a")
        );
    }

    #[test]
    fn refuses_what_is_wrong_and_names_it() {
        use Package0Error as E;
        let cases: Vec<(Vec<u8>, E)> = vec![
            (vec![], E::NoHeader { len: 0 }),
            (vec![0x10], E::NoHeader { len: 1 }),
            (vec![0x20, 0x80, 0x11, b'a'], E::Version(2)),
            (vec![0x10, 0x00], E::NoServerId),
            (
                vec![0x10, 0x80, 0x13, b'a'],
                E::Truncated {
                    index: 1,
                    count: 1,
                    at: 4,
                },
            ),
            (
                vec![0x11, 0x00, 0x11, b'a'],
                E::Truncated {
                    index: 2,
                    count: 2,
                    at: 4,
                },
            ),
            (
                vec![0x10, 0x80, 0xf1, b'a'],
                E::Reserved {
                    index: 1,
                    field: "delta",
                    at: 2,
                },
            ),
            (
                vec![0x10, 0x80, 0x1f, b'a'],
                E::Reserved {
                    index: 1,
                    field: "length",
                    at: 2,
                },
            ),
            (
                vec![0x11, 0x00, 0x11, b'a', 0x01, b'b'],
                E::Order {
                    index: 2,
                    number: 1,
                    previous: 1,
                },
            ),
            (vec![0x10, 0x80, 0x70], E::Unknown { number: 7 }),
            (vec![0x10, 0x80, 0x10], length("SERVER-ID", 0, "at least 1")),
            (vec![0x10, 0x80, 0x12, 0xc3, 0x28], E::ServerIdNotUtf8),
            (
                vec![0x11, 0x00, 0x11, b'a', 0x12, 0, 1],
                length("PREFERRED-CON-TYPE", 2, "1"),
            ),
            (vec![0x11, 0x00, 0x11, b'a', 0x11, 4], E::ConType(4)),
            (
                vec![0x11, 0x00, 0x11, b'a', 0x21, 1],
                length("NOTIFICATION-ID", 1, "2"),
            ),
            (
                vec![0x11, 0x00, 0x11, b'a', 0x31, 1],
                length("SHA256-DIGEST", 1, "32"),
            ),
            (
                vec![0x11, 0x00, 0x11, b'a', 0x42, 1, 2],
                length("TIMESTAMP", 2, "4 or 8"),
            ),
            (
                vec![0x11, 0x00, 0x11, b'a', 0x51, 0],
                length("REQ-MOS", 1, "0"),
            ),
            (
                vec![0x10, 0x80, 0x11, b'a', 0, 0],
                E::Trailing { extra: 2, count: 1 },
            ),
            (
                vec![0x10; MAX_BYTES + 1],
                E::TooLong {
                    len: MAX_BYTES + 1,
                    max: MAX_BYTES,
                },
            ),
        ];
        for (bytes, want) in cases {
            let got = Package0::parse(&bytes);
            assert_eq!(got, Err(want.clone()), "{bytes:02x?}");
            assert!(!want.to_string().is_empty());
        }
        // An option whose length runs past the end, through a two-byte extension.
        assert!(matches!(
            Package0::parse(&[0x10, 0x80, 0x1e, 0xff, 0xff, b'a']),
            Err(E::Truncated { .. })
        ));
        assert_eq!(
            build(&Notification::new(""), None),
            Err(length("SERVER-ID", 0, "at least 1"))
        );
        assert!(matches!(
            build(&Notification::new(&"x".repeat(MAX_BYTES)), None),
            Err(E::TooLong { .. })
        ));
        assert_eq!(
            build(&Notification::new(&"x".repeat(70_000)), None),
            Err(E::ServerIdTooLong {
                len: 70_000,
                max: MAX_BYTES
            })
        );
    }

    #[test]
    fn the_digest_covers_the_message_with_zeros_secret_and_data() {
        let n = full();
        let bytes = build(&n, Some(KEY)).unwrap();
        let parsed = Package0::parse(&bytes).unwrap();
        let sent = parsed.notification.digest.unwrap();
        // By hand: the same message with 32 zero bytes as its digest.
        let zeroed = build(
            &Notification {
                digest: Some([0; 32]),
                ..n.clone()
            },
            None,
        )
        .unwrap();
        let mut hash = Sha256::new();
        hash.update(b"s3cret");
        hash.update(&zeroed);
        hash.update(b"auth-data");
        assert_eq!(sent, <[u8; 32]>::from(hash.finalize()));
        assert!(parsed.digest_matches(KEY));
        for wrong in [
            Credentials {
                secret: b"other",
                data: KEY.data,
            },
            Credentials {
                secret: KEY.secret,
                data: b"",
            },
        ] {
            assert!(!parsed.digest_matches(wrong));
        }
        // A changed bit anywhere breaks it.
        let mut tampered = bytes.clone();
        let at = bytes.len() - 5;
        tampered[at] ^= 1;
        assert!(!Package0::parse(&tampered).unwrap().digest_matches(KEY));
        // No digest never matches.
        let unsigned = Package0::parse(&build(&Notification::new("a"), None).unwrap()).unwrap();
        assert!(!unsigned.digest_matches(KEY));
    }

    #[test]
    fn con_types_read_by_name_or_number() {
        assert_eq!("WLAN".parse::<ConType>(), Ok(ConType::Wlan));
        assert_eq!("3".parse::<ConType>(), Ok(ConType::Wireline));
        assert!("wifi".parse::<ConType>().unwrap_err().contains("wifi"));
        for b in 0..4 {
            assert_eq!(ConType::from_byte(b).unwrap().byte(), b);
        }
        assert_eq!(ConType::from_byte(4), None);
    }

    fn notification() -> impl Strategy<Value = Notification> {
        (
            "\\PC{1,40}",
            0u8..4,
            proptest::option::of(any::<u16>()),
            proptest::option::of(proptest::array::uniform32(any::<u8>())),
            proptest::option::of(any::<u64>()),
            any::<bool>(),
        )
            .prop_map(
                |(server_id, con, id, digest, timestamp, req_mos)| Notification {
                    server_id,
                    con_type: ConType::from_byte(con).unwrap(),
                    notification_id: id,
                    digest,
                    timestamp,
                    req_mos,
                },
            )
    }

    proptest! {
        #[test]
        fn what_is_built_parses_back(n in notification()) {
            let bytes = build(&n, None).unwrap();
            prop_assert_eq!(&Package0::parse(&bytes).unwrap().notification, &n);
            let signed = Package0::parse(&build(&n, Some(KEY)).unwrap()).unwrap();
            prop_assert!(signed.digest_matches(KEY));
            prop_assert_eq!(
                Notification { digest: None, ..signed.notification },
                Notification { digest: None, ..n }
            );
        }

        #[test]
        fn any_bytes_parse_or_are_refused_and_what_parses_rebuilds(
            bytes in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            if let Ok(p) = Package0::parse(&bytes) {
                let again = build(&p.notification, None).unwrap();
                prop_assert_eq!(Package0::parse(&again).unwrap().notification, p.notification);
            }
        }
    }
}
