//! The LwM2M TLV content format (11542; TS Core §7.4.3): reading a child's Read or
//! Observe answer into mirror values, and writing the payload of a Write.
//!
//! A TLV is a type byte (bits 7-6: what the id names; bit 5: id of 8 or 16 bits;
//! bits 4-3: length field of 0, 8, 16 or 24 bits; bits 2-0: the length itself when there
//! is no length field), the id, the length and the value. Object instances hold resources
//! and multiple resources, multiple resources hold resource instances; nothing else
//! nests. Values are typed by the resource's [`Kind`] (docs/gateway.md §2.4).

use std::collections::{HashMap, HashSet};

use crate::tree::Value;
use crate::tree::lwm2m::Kind;

use super::codec::{self, CodecError, Decoded, MAX_ENTRIES, Objlnk, Outcome, Scalar};
use super::path::LwPath;

/// The CoAP Content-Format number of LwM2M TLV.
pub const CONTENT_FORMAT: u16 = 11542;

/// The longest value a TLV can carry: its length field has 24 bits.
const MAX_LENGTH: usize = 0xFF_FFFF;

/// Reads a TLV payload answering a request on `base`: object instances for an object
/// (`/oid`); resources for an object instance (`/oid/iid`), bare or inside that one
/// instance's TLV; the resource, or bare resource instances, for a resource; the resource
/// instance for a resource instance. `kind_of(rid)` types the resources of the object; a
/// resource it does not know is skipped whole.
pub fn decode(
    bytes: &[u8],
    base: LwPath,
    kind_of: &dyn Fn(u16) -> Option<Kind>,
) -> Result<Decoded, CodecError> {
    let mut decoder = Decoder {
        kind_of,
        out: Decoded::default(),
        seen: HashSet::new(),
        entries: 0,
    };
    let first = bytes.first().map(|&byte| Tag::of(byte));
    match (base.parent(), base.rid(), base.riid()) {
        (None, _, _) => decoder.children(bytes, 0, base, None)?,
        (Some(object), None, _) if first == Some(Tag::ObjectInstance) => {
            decoder.children(bytes, 0, object, Some(base))?
        }
        (Some(_), None, _) => decoder.children(bytes, 0, base, None)?,
        (Some(_), Some(_), None) if first == Some(Tag::ResourceInstance) => {
            decoder.children(bytes, 0, base, None)?
        }
        (Some(parent), _, _) => decoder.children(bytes, 0, parent, Some(base))?,
    }
    Ok(decoder.out)
}

/// One entry of a write: where, what, and the resource's type.
type Entry = (LwPath, Value, Kind);

/// Writes the TLV payload of a Write on one object instance: a resource TLV per resource
/// given with a value (`/oid/iid/rid`), a multiple-resource TLV per resource given by its
/// instances (`/oid/iid/rid/riid`), in order of first appearance. Integers take their
/// smallest width; a float takes 4 bytes when `f32` holds it exactly, else 8 **(project
/// choice: the child reads back the same number either way, and 4-byte floats are what
/// constrained clients are sure to read)**; an Objlnk is written from its `oid:iid` text.
pub fn encode(entries: &[(LwPath, Value, Kind)]) -> Result<Vec<u8>, CodecError> {
    codec::write_target(entries)?;
    let mut resources: Vec<(u16, Vec<&Entry>)> = Vec::new();
    let mut index = HashMap::new();
    for entry in entries {
        // write_target checked that every entry names a resource.
        let rid = entry.0.rid().unwrap_or_default();
        let at = *index.entry(rid).or_insert_with(|| {
            resources.push((rid, Vec::new()));
            resources.len() - 1
        });
        resources[at].1.push(entry);
    }
    let mut out = Vec::new();
    for (rid, given) in resources {
        match given.as_slice() {
            [(path, value, kind)] if path.riid().is_none() => {
                let bytes = value_bytes(Scalar::of(*path, value, *kind)?);
                put(&mut out, Tag::Resource, rid, &bytes, *path)?;
            }
            instances => {
                let mut inner = Vec::new();
                for (path, value, kind) in instances {
                    let bytes = value_bytes(Scalar::of(*path, value, *kind)?);
                    put(
                        &mut inner,
                        Tag::ResourceInstance,
                        path.riid().unwrap_or_default(),
                        &bytes,
                        *path,
                    )?;
                }
                let path = instances[0].0.parent().unwrap_or(instances[0].0);
                put(&mut out, Tag::MultipleResource, rid, &inner, path)?;
            }
        }
    }
    Ok(out)
}

/// What a TLV's id names (bits 7-6 of its type byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    ObjectInstance,
    ResourceInstance,
    MultipleResource,
    Resource,
}

impl Tag {
    fn of(type_byte: u8) -> Tag {
        match type_byte >> 6 {
            0 => Tag::ObjectInstance,
            1 => Tag::ResourceInstance,
            2 => Tag::MultipleResource,
            _ => Tag::Resource,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Tag::ObjectInstance => 0,
            Tag::ResourceInstance => 1,
            Tag::MultipleResource => 2,
            Tag::Resource => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tag::ObjectInstance => "object instance",
            Tag::ResourceInstance => "resource instance",
            Tag::MultipleResource => "multiple resource",
            Tag::Resource => "resource",
        }
    }
}

/// One TLV of a payload.
struct Tlv<'a> {
    tag: Tag,
    id: u16,
    value: &'a [u8],
    /// Payload offsets of the type byte and of the value.
    at: usize,
    value_at: usize,
}

/// Reads TLVs one after another from `bytes`, which start at payload offset `offset`.
struct Tlvs<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&type_byte, _) = self.bytes.split_first()?;
        let at = self.offset;
        let truncated = |need| CodecError::Truncated {
            at,
            need,
            left: self.bytes.len(),
        };
        let id_len = if type_byte & 0x20 == 0 { 1 } else { 2 };
        let length_len = usize::from((type_byte >> 3) & 0b11);
        let header = 1 + id_len + length_len;
        let Some(fields) = self.bytes.get(1..header) else {
            self.bytes = &[];
            return Some(Err(truncated(header)));
        };
        let (id, length) = fields.split_at(id_len);
        let id = be(id) as u16;
        let len = if length_len == 0 {
            usize::from(type_byte & 0b111)
        } else {
            be(length) as usize
        };
        let Some(value) = self.bytes.get(header..header + len) else {
            self.bytes = &[];
            return Some(Err(truncated(header + len)));
        };
        self.bytes = &self.bytes[header + len..];
        self.offset += header + len;
        Some(Ok(Tlv {
            tag: Tag::of(type_byte),
            id,
            value,
            at,
            value_at: at + header,
        }))
    }
}

/// A big-endian number of at most 8 bytes.
fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| n << 8 | u64::from(b))
}

struct Decoder<'k> {
    kind_of: &'k dyn Fn(u16) -> Option<Kind>,
    out: Decoded,
    seen: HashSet<LwPath>,
    entries: usize,
}

impl Decoder<'_> {
    /// Reads the TLVs of `bytes` (at payload offset `offset`) as the children of `parent`:
    /// object instances of an object, resources of an instance, instances of a multiple
    /// resource. `only`: the one child that was requested.
    fn children(
        &mut self,
        bytes: &[u8],
        offset: usize,
        parent: LwPath,
        only: Option<LwPath>,
    ) -> Result<(), CodecError> {
        let kind = match parent.rid() {
            Some(rid) => match (self.kind_of)(rid) {
                Some(kind) => Some(kind),
                None => {
                    self.out.unknown(parent);
                    return Ok(());
                }
            },
            None => None,
        };
        for tlv in (Tlvs { bytes, offset }) {
            let tlv = tlv?;
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(CodecError::TooManyEntries);
            }
            // `parent` is never a resource instance, so the id is the only thing child()
            // can refuse.
            let path = parent
                .child(tlv.id)
                .map_err(|_| CodecError::ReservedId { at: tlv.at })?;
            if let Some(requested) = only.filter(|&requested| requested != path) {
                return Err(CodecError::Unrequested {
                    at: tlv.at,
                    found: tlv.tag.name(),
                    id: tlv.id,
                    requested,
                });
            }
            if !self.seen.insert(path) {
                return Err(CodecError::Duplicate { path });
            }
            match (kind, parent.iid(), tlv.tag) {
                (None, None, Tag::ObjectInstance) | (None, Some(_), Tag::MultipleResource) => {
                    self.children(tlv.value, tlv.value_at, path, None)?
                }
                (None, Some(_), Tag::Resource) => match path.rid().and_then(self.kind_of) {
                    Some(kind) => self.out.add(path, value(path, kind, tlv.value)?),
                    None => self.out.unknown(path),
                },
                (Some(kind), _, Tag::ResourceInstance) => {
                    self.out.add(path, value(path, kind, tlv.value)?)
                }
                (_, _, tag) => {
                    return Err(CodecError::Misplaced {
                        at: tlv.at,
                        found: tag.name(),
                        place: match (kind, parent.iid()) {
                            (Some(_), _) => format!("in multiple resource {parent}"),
                            (None, None) => format!("directly in object {parent}"),
                            (None, Some(_)) => format!("directly in object instance {parent}"),
                        },
                    });
                }
            }
        }
        Ok(())
    }
}

/// The mirror value of a TLV value of a resource of `kind`.
fn value(path: LwPath, kind: Kind, bytes: &[u8]) -> Result<Outcome, CodecError> {
    let width = |expected| CodecError::Width {
        path,
        kind,
        len: bytes.len(),
        expected,
    };
    let integer = || match bytes.len() {
        1 | 2 | 4 | 8 => Ok(be(bytes)),
        _ => Err(width("1, 2, 4 or 8 bytes")),
    };
    Ok(match kind {
        Kind::String | Kind::Corelnk => Outcome::Value(Value::Chr(
            std::str::from_utf8(bytes)
                .map_err(|_| CodecError::Utf8 { path })?
                .to_owned(),
        )),
        Kind::Integer | Kind::Time => {
            let n = integer()?;
            // Sign-extend from the value's width (1 to 8 bytes: checked above).
            let shift = 64 - 8 * bytes.len() as u32;
            Outcome::Value(Value::Int(((n << shift) as i64) >> shift))
        }
        Kind::Unsigned => codec::unsigned(integer()?),
        Kind::Float => codec::float(match *bytes {
            [a, b, c, d] => f64::from(f32::from_be_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => f64::from_be_bytes([a, b, c, d, e, f, g, h]),
            _ => return Err(width("4 or 8 bytes")),
        }),
        Kind::Boolean => match *bytes {
            [0] => Outcome::Value(Value::Bool(false)),
            [1] => Outcome::Value(Value::Bool(true)),
            [byte] => return Err(CodecError::Boolean { path, byte }),
            _ => return Err(width("1 byte")),
        },
        Kind::Opaque => Outcome::Value(Value::Bin(bytes.to_vec())),
        Kind::Objlnk => match *bytes {
            [a, b, c, d] => Outcome::Value(Value::Chr(
                Objlnk {
                    oid: u16::from_be_bytes([a, b]),
                    iid: u16::from_be_bytes([c, d]),
                }
                .to_string(),
            )),
            _ => return Err(width("4 bytes")),
        },
        Kind::None if bytes.is_empty() => Outcome::Value(Value::Null),
        Kind::None => return Err(width("no value")),
    })
}

/// The TLV value bytes of a value to write.
fn value_bytes(scalar: Scalar<'_>) -> Vec<u8> {
    match scalar {
        Scalar::Text(s) => s.as_bytes().to_vec(),
        Scalar::Integer(n) => {
            if let Ok(n) = i8::try_from(n) {
                n.to_be_bytes().to_vec()
            } else if let Ok(n) = i16::try_from(n) {
                n.to_be_bytes().to_vec()
            } else if let Ok(n) = i32::try_from(n) {
                n.to_be_bytes().to_vec()
            } else {
                n.to_be_bytes().to_vec()
            }
        }
        Scalar::Unsigned(n) => {
            if let Ok(n) = u8::try_from(n) {
                vec![n]
            } else if let Ok(n) = u16::try_from(n) {
                n.to_be_bytes().to_vec()
            } else if let Ok(n) = u32::try_from(n) {
                n.to_be_bytes().to_vec()
            } else {
                n.to_be_bytes().to_vec()
            }
        }
        Scalar::Float(f) if f64::from(f as f32) == f => (f as f32).to_be_bytes().to_vec(),
        Scalar::Float(f) => f.to_be_bytes().to_vec(),
        Scalar::Boolean(b) => vec![u8::from(b)],
        Scalar::Opaque(b) => b.to_vec(),
        Scalar::Objlnk(link) => [link.oid.to_be_bytes(), link.iid.to_be_bytes()].concat(),
        Scalar::None => Vec::new(),
    }
}

/// Appends one TLV: the shortest header for `id` and the value's length, then `value`.
/// `path` names the entry in an error.
fn put(out: &mut Vec<u8>, tag: Tag, id: u16, value: &[u8], path: LwPath) -> Result<(), CodecError> {
    let len = value.len();
    if len > MAX_LENGTH {
        return Err(CodecError::Unwritable {
            path,
            problem: format!("{len} bytes are over TLV's limit of {MAX_LENGTH}"),
        });
    }
    let wide_id = id > 0xFF;
    let (length_type, length_bytes) = match len {
        0..=7 => (0, 0),
        8..=0xFF => (1, 1),
        0x100..=0xFFFF => (2, 2),
        _ => (3, 3),
    };
    let short_length = if length_type == 0 { len as u8 } else { 0 };
    out.push(tag.bits() << 6 | u8::from(wide_id) << 5 | length_type << 3 | short_length);
    if wide_id {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    out.extend_from_slice(&(len as u32).to_be_bytes()[4 - length_bytes..]);
    out.extend_from_slice(value);
    Ok(())
}

// Named by path so that the fuzz crate, which compiles this file by path, finds it too.
#[cfg(test)]
#[path = "tlv/tests.rs"]
mod tests;
