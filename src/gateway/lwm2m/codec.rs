//! What the payload codecs share: the decoded form of a payload ([`Decoded`]), the rules
//! that turn an LwM2M resource value into an MO leaf value and back (docs/gateway.md
//! §2.4), the checks on the entries of a write, and the codecs' error ([`CodecError`]).

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::tree::lwm2m::Kind;
use crate::tree::{Format, Value};

use super::path::{LwPath, PathError};

/// The most entries a payload may hold: TLVs (at every level), SenML records, or the
/// entries given to an encoder.
pub const MAX_ENTRIES: usize = 4096;

/// The values a payload reports, in payload order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    /// One per resource (`/oid/iid/rid`) or resource instance (`/oid/iid/rid/riid`).
    pub values: Vec<(LwPath, Value)>,
    /// What the payload reports but the mirror cannot hold, and why: a resource that
    /// `kind_of` does not know (the whole resource), an unsigned value above 2^63−1, a
    /// float that is not finite.
    pub skipped: Vec<(LwPath, String)>,
}

/// Why a payload cannot be read, or entries cannot be written. Each says where: the byte
/// offset of a TLV or link, the index (from 0) of a SenML record, or the LwM2M path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("{path} is given twice")]
    Duplicate { path: LwPath },

    // TLV structure.
    #[error("TLV at byte {at}: needs {need} bytes, {left} left")]
    Truncated { at: usize, need: usize, left: usize },
    #[error("TLV at byte {at}: id 65535 is reserved")]
    ReservedId { at: usize },
    #[error("TLV at byte {at}: a {found} does not belong {place}")]
    Misplaced {
        at: usize,
        found: &'static str,
        place: String,
    },
    #[error("TLV at byte {at}: {found} {id} where {requested} was requested")]
    Unrequested {
        at: usize,
        found: &'static str,
        id: u16,
        requested: LwPath,
    },

    // Values read from TLV.
    #[error("{path}: {kind:?} value of {len} bytes (expected {expected})")]
    Width {
        path: LwPath,
        kind: Kind,
        len: usize,
        expected: &'static str,
    },
    #[error("{path}: boolean byte {byte:#04x} is neither 0 nor 1")]
    Boolean { path: LwPath, byte: u8 },
    #[error("{path}: string is not UTF-8")]
    Utf8 { path: LwPath },

    // SenML JSON.
    #[error("SenML JSON: {0}")]
    Json(String),
    #[error("SenML record {record}: {problem}")]
    Record {
        record: usize,
        problem: &'static str,
    },
    #[error("SenML record {record}: name {name:?}: {source}")]
    Name {
        record: usize,
        name: String,
        source: PathError,
    },
    #[error("SenML record {record}: {path} is {problem}")]
    Placement {
        record: usize,
        path: LwPath,
        problem: &'static str,
    },
    #[error("SenML record {record}: label {label:?} is not supported")]
    Label { record: usize, label: String },
    #[error("SenML record {record}: {path}: {problem}")]
    SenmlValue {
        record: usize,
        path: LwPath,
        problem: Problem,
    },

    // CoRE link format.
    #[error("registration payload of {len} bytes is over the limit of {limit}")]
    LinksTooLong { len: usize, limit: usize },
    #[error("registration payload has more than {limit} links")]
    TooManyLinks { limit: usize },
    #[error("link format at byte {at}: {problem}")]
    LinkSyntax { at: usize, problem: &'static str },
    #[error("link <{target}> at byte {at}: {problem}")]
    LinkTarget {
        at: usize,
        target: String,
        problem: String,
    },

    // Entries to write.
    #[error("{path}: {problem}")]
    Layout { path: LwPath, problem: &'static str },
    #[error("{path}: a resource of type {kind:?} cannot hold a {got} value")]
    Mismatch {
        path: LwPath,
        kind: Kind,
        got: Format,
    },
    #[error("{path}: {problem}")]
    Unwritable { path: LwPath, problem: String },
}

/// What is wrong with a SenML record's value for its resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No value; the resource's kind takes one under `expected`.
    NoValue { kind: Kind, expected: &'static str },
    /// A value under `found` where the resource's kind takes `expected`.
    Label {
        kind: Kind,
        expected: &'static str,
        found: &'static str,
    },
    /// A value (under `found`) for an executable resource, which has none.
    Executable { found: &'static str },
    /// More than one of `v`, `vs`, `vb`, `vd`, `vlo`.
    TwoValues,
    /// The value does not fit the resource's kind (why).
    Invalid(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoValue { kind, expected } => {
                write!(f, "no value (type {kind:?} takes \"{expected}\")")
            }
            Problem::Label {
                kind,
                expected,
                found,
            } => write!(
                f,
                "a value in \"{found}\" (type {kind:?} takes \"{expected}\")"
            ),
            Problem::Executable { found } => {
                write!(f, "a value in \"{found}\" for an executable resource")
            }
            Problem::TwoValues => f.write_str("more than one value"),
            Problem::Invalid(why) => f.write_str(why),
        }
    }
}

/// What reading one value gave: a value for the mirror, or the reason it cannot hold it.
pub(super) enum Outcome {
    Value(Value),
    Skip(String),
}

impl Decoded {
    pub(super) fn add(&mut self, path: LwPath, outcome: Outcome) {
        match outcome {
            Outcome::Value(value) => self.values.push((path, value)),
            Outcome::Skip(why) => self.skipped.push((path, why)),
        }
    }

    pub(super) fn unknown(&mut self, path: LwPath) {
        self.skipped
            .push((path, "resource not in the object definition".to_owned()));
    }
}

/// An Unsigned Integer: the mirror's `int` holds it up to 2^63−1 (docs/gateway.md §2.4).
pub(super) fn unsigned(n: u64) -> Outcome {
    match i64::try_from(n) {
        Ok(n) => Outcome::Value(Value::Int(n)),
        Err(_) => Outcome::Skip(format!("unsigned value {n} is above 2^63-1")),
    }
}

/// A Float: the mirror holds finite values only.
pub(super) fn float(f: f64) -> Outcome {
    if f.is_finite() {
        Outcome::Value(Value::Float(f))
    } else {
        Outcome::Skip(format!("float value {f} is not finite"))
    }
}

/// An Objlnk value: an object id and an instance id, each the full 16 bits (`65535:65535`
/// is LwM2M's "no link"). In the mirror it is the text `oid:iid`, SenML's `vlo` form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Objlnk {
    pub(super) oid: u16,
    pub(super) iid: u16,
}

impl Objlnk {
    /// Reads `oid:iid` (decimal ids).
    pub(super) fn parse(text: &str) -> Option<Objlnk> {
        let (oid, iid) = text.split_once(':')?;
        let id = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        Some(Objlnk {
            oid: id(oid)?,
            iid: id(iid)?,
        })
    }
}

impl fmt::Display for Objlnk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.oid, self.iid)
    }
}

/// A value to write, checked against its resource's kind: the LwM2M value the encoders
/// put on the wire.
pub(super) enum Scalar<'a> {
    Text(&'a str),
    Integer(i64),
    Unsigned(u64),
    Float(f64),
    Boolean(bool),
    Opaque(&'a [u8]),
    Objlnk(Objlnk),
    None,
}

impl<'a> Scalar<'a> {
    /// The LwM2M value of `value` for a resource of `kind`: the mirror's format for that
    /// kind (docs/gateway.md §2.4) and nothing else.
    pub(super) fn of(path: LwPath, value: &'a Value, kind: Kind) -> Result<Scalar<'a>, CodecError> {
        let unwritable = |problem: String| CodecError::Unwritable { path, problem };
        Ok(match (kind, value) {
            (Kind::String | Kind::Corelnk, Value::Chr(s)) => Scalar::Text(s),
            (Kind::Integer | Kind::Time, Value::Int(n)) => Scalar::Integer(*n),
            (Kind::Unsigned, Value::Int(n)) => Scalar::Unsigned(
                u64::try_from(*n)
                    .map_err(|_| unwritable(format!("unsigned resource cannot hold {n}")))?,
            ),
            (Kind::Float, Value::Float(f)) if f.is_finite() => Scalar::Float(*f),
            (Kind::Float, Value::Float(f)) => {
                return Err(unwritable(format!("float value {f} is not finite")));
            }
            (Kind::Boolean, Value::Bool(b)) => Scalar::Boolean(*b),
            (Kind::Opaque, Value::Bin(b)) => Scalar::Opaque(b),
            (Kind::Objlnk, Value::Chr(s)) => {
                Scalar::Objlnk(Objlnk::parse(s).ok_or_else(|| {
                    unwritable(format!("{s:?} is not an object link \"oid:iid\""))
                })?)
            }
            (Kind::None, Value::Null) => Scalar::None,
            (kind, value) => {
                return Err(CodecError::Mismatch {
                    path,
                    kind,
                    got: value.format(),
                });
            }
        })
    }
}

/// Checks the entries of a write: each names a resource or a resource instance of one
/// object instance, none twice, and a resource is given either with a value or by its
/// instances, not both. Returns that object instance (`None` for no entries).
pub(super) fn write_target(
    entries: &[(LwPath, Value, Kind)],
) -> Result<Option<LwPath>, CodecError> {
    if entries.len() > MAX_ENTRIES {
        return Err(CodecError::TooManyEntries);
    }
    let mut instance = None;
    let mut seen = HashSet::with_capacity(entries.len());
    let mut multiple = HashMap::new();
    for (path, _, _) in entries {
        let layout = |problem| CodecError::Layout {
            path: *path,
            problem,
        };
        let Some(rid) = path.rid() else {
            return Err(layout("not a resource or resource instance"));
        };
        let parent = path.object_instance();
        match instance {
            None => instance = parent,
            Some(first) if Some(first) != parent => {
                return Err(layout("not in the same object instance as the first entry"));
            }
            Some(_) => {}
        }
        if !seen.insert(*path) {
            return Err(CodecError::Duplicate { path: *path });
        }
        if *multiple.entry(rid).or_insert(path.riid().is_some()) != path.riid().is_some() {
            return Err(layout(
                "resource given both with a value and by its instances",
            ));
        }
    }
    Ok(instance)
}

#[cfg(test)]
pub(super) mod fixtures {
    //! What the codecs' tests share: the TS's Device object example and resource kinds.

    use super::*;

    pub fn p(text: &str) -> LwPath {
        text.parse().unwrap()
    }

    pub fn chr(s: &str) -> Value {
        Value::Chr(s.to_owned())
    }

    /// Object 3 (Device, TS Core Appendix E.3) as far as the examples use it.
    pub fn device(rid: u16) -> Option<Kind> {
        Some(match rid {
            0..=3 | 14..=19 => Kind::String,
            4 | 5 | 12 => Kind::None,
            6..=11 | 20 | 21 => Kind::Integer,
            13 => Kind::Time,
            22 => Kind::Objlnk,
            _ => return None,
        })
    }

    /// A resource of each kind, by id.
    pub fn every_kind(rid: u16) -> Option<Kind> {
        [
            Kind::String,
            Kind::Integer,
            Kind::Unsigned,
            Kind::Float,
            Kind::Boolean,
            Kind::Opaque,
            Kind::Time,
            Kind::Objlnk,
            Kind::Corelnk,
            Kind::None,
        ]
        .get(usize::from(rid))
        .copied()
    }

    /// The values of the TS's example of a Read on the Device object's instance
    /// (`GET /3/0`), which each codec's own example encodes.
    pub fn device_values() -> Vec<(LwPath, Value)> {
        vec![
            (p("/3/0/0"), chr("Open Mobile Alliance")),
            (p("/3/0/1"), chr("Lightweight M2M Client")),
            (p("/3/0/2"), chr("345000123")),
            (p("/3/0/3"), chr("1.0")),
            (p("/3/0/6/0"), Value::Int(1)),
            (p("/3/0/6/1"), Value::Int(5)),
            (p("/3/0/7/0"), Value::Int(3800)),
            (p("/3/0/7/1"), Value::Int(5000)),
            (p("/3/0/8/0"), Value::Int(125)),
            (p("/3/0/8/1"), Value::Int(900)),
            (p("/3/0/9"), Value::Int(100)),
            (p("/3/0/10"), Value::Int(15)),
            (p("/3/0/11/0"), Value::Int(0)),
            (p("/3/0/13"), Value::Int(1367491215)),
            (p("/3/0/14"), chr("+02:00")),
            (p("/3/0/16"), chr("U")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::p;
    use super::*;

    #[test]
    fn objlnk_text() {
        assert_eq!(Objlnk::parse("3:0"), Some(Objlnk { oid: 3, iid: 0 }));
        assert_eq!(
            Objlnk::parse("65535:65535").map(|l| l.to_string()),
            Some("65535:65535".to_owned())
        );
        for bad in [
            "", "3", "3:", ":0", "3:0:1", "-3:0", "3:+0", "65536:0", "3 :0", "a:b",
        ] {
            assert_eq!(Objlnk::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unsigned_and_float_rules() {
        assert!(matches!(
            unsigned(i64::MAX as u64),
            Outcome::Value(Value::Int(i64::MAX))
        ));
        assert!(
            matches!(unsigned(1 << 63), Outcome::Skip(why) if why.contains("9223372036854775808"))
        );
        assert!(matches!(float(21.5), Outcome::Value(Value::Float(f)) if f == 21.5));
        assert!(matches!(float(f64::NAN), Outcome::Skip(_)));
        assert!(matches!(float(f64::NEG_INFINITY), Outcome::Skip(_)));
    }

    #[test]
    fn scalars_take_the_mirror_format_of_their_kind() {
        let at = p("/3/0/1");
        let chr = Value::Chr("1:2".into());
        assert!(matches!(
            Scalar::of(at, &chr, Kind::String),
            Ok(Scalar::Text("1:2"))
        ));
        assert!(matches!(
            Scalar::of(at, &chr, Kind::Objlnk),
            Ok(Scalar::Objlnk(Objlnk { oid: 1, iid: 2 }))
        ));
        assert!(matches!(
            Scalar::of(at, &Value::Int(-1), Kind::Time),
            Ok(Scalar::Integer(-1))
        ));
        assert!(matches!(
            Scalar::of(at, &Value::Null, Kind::None),
            Ok(Scalar::None)
        ));
        assert_eq!(
            Scalar::of(at, &Value::Int(1), Kind::Float).err(),
            Some(CodecError::Mismatch {
                path: at,
                kind: Kind::Float,
                got: Format::Int
            })
        );
        assert_eq!(
            Scalar::of(at, &Value::B64(vec![1]), Kind::Opaque).err(),
            Some(CodecError::Mismatch {
                path: at,
                kind: Kind::Opaque,
                got: Format::B64
            })
        );
        for (value, kind) in [
            (Value::Int(-1), Kind::Unsigned),
            (Value::Float(f64::INFINITY), Kind::Float),
            (Value::Chr("3".into()), Kind::Objlnk),
        ] {
            assert!(
                matches!(Scalar::of(at, &value, kind), Err(CodecError::Unwritable { path, .. }) if path == at),
                "{value:?} as {kind:?}"
            );
        }
    }

    #[test]
    fn a_write_names_resources_of_one_instance() {
        let entry = |path: &str| (p(path), Value::Int(1), Kind::Integer);
        assert_eq!(write_target(&[]), Ok(None));
        assert_eq!(
            write_target(&[entry("/3/0/1"), entry("/3/0/6/0"), entry("/3/0/6/1")]),
            Ok(Some(p("/3/0")))
        );
        assert_eq!(
            write_target(&[entry("/3/0")]),
            Err(CodecError::Layout {
                path: p("/3/0"),
                problem: "not a resource or resource instance"
            })
        );
        assert!(matches!(
            write_target(&[entry("/3/0/1"), entry("/3/1/1")]),
            Err(CodecError::Layout { path, .. }) if path == p("/3/1/1")
        ));
        assert_eq!(
            write_target(&[entry("/3/0/1"), entry("/3/0/1")]),
            Err(CodecError::Duplicate { path: p("/3/0/1") })
        );
        assert!(matches!(
            write_target(&[entry("/3/0/6/0"), entry("/3/0/6")]),
            Err(CodecError::Layout { path, .. }) if path == p("/3/0/6")
        ));
        let many: Vec<_> = (0..=MAX_ENTRIES as u16)
            .map(|i| entry(&format!("/3/0/6/{i}")))
            .collect();
        assert_eq!(write_target(&many), Err(CodecError::TooManyEntries));
        assert!(write_target(&many[..MAX_ENTRIES]).is_ok());
    }
}
