//! SenML JSON (content-format 110; RFC 8428 as LwM2M 1.1 uses it, TS Core §7.4.5):
//! reading a child's Read, Observe or Send payload into mirror values, and writing the
//! payload of a Write.
//!
//! A payload is an array of records. A record's name is its base name (`bn`, which holds
//! for the records after it until another `bn`) followed by its `n`; in LwM2M the name is
//! the path of a resource or resource instance (`/3/0/` + `6/1`). The value is in `v`
//! (numbers: Integer, Unsigned Integer, Float, Time), `vs` (String, Corelnk), `vb`
//! (Boolean), `vd` (Opaque, base64url) or `vlo` (Objlnk, `oid:iid`). Times (`bt`, `t`) are
//! accepted and not used: the mirror holds current values. Labels ending in `_` must be
//! understood (RFC 8428 §4.4) and are refused, as are base values and sums (`bv`, `bs`,
//! `s`), which would change what `v` means; other labels are ignored.

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE_NO_PAD, URL_SAFE_NO_PAD_INDIFFERENT};
use serde_json::{Map, Number, Value as Json};

use crate::tree::Value;
use crate::tree::lwm2m::Kind;

use super::codec::{self, CodecError, Decoded, MAX_ENTRIES, Objlnk, Outcome, Problem, Scalar};
use super::path::LwPath;

/// The CoAP Content-Format number of SenML JSON.
pub const CONTENT_FORMAT: u16 = 110;

/// The labels that carry a value.
const VALUE_LABELS: [&str; 5] = ["v", "vs", "vb", "vd", "vlo"];

/// Reads a SenML JSON payload answering a request on `base`: every record must name a
/// resource or resource instance at or below `base`. `kind_of(rid)` types the resources of
/// the object; a resource it does not know is skipped. A path named by more than one
/// record is reported once per record, in payload order.
pub fn decode(
    bytes: &[u8],
    base: LwPath,
    kind_of: &dyn Fn(u16) -> Option<Kind>,
) -> Result<Decoded, CodecError> {
    read(bytes, Some(base), &|path: &LwPath| {
        path.rid().and_then(kind_of)
    })
}

/// Reads the payload of an LwM2M Send (`/dp`), whose records may name resources of any
/// object: `kind_of(oid, rid)` types them.
pub fn decode_send(
    bytes: &[u8],
    kind_of: &dyn Fn(u16, u16) -> Option<Kind>,
) -> Result<Decoded, CodecError> {
    read(bytes, None, &|path: &LwPath| {
        path.rid().and_then(|rid| kind_of(path.oid(), rid))
    })
}

/// Writes the SenML JSON payload of a Write on one object instance: one record per entry,
/// in the order given; the first carries the instance as base name (`/3/0/`), each names
/// its resource (`15`) or resource instance (`6/1`) relative to it. An executable resource
/// has no value to write and is refused.
pub fn encode(entries: &[(LwPath, Value, Kind)]) -> Result<Vec<u8>, CodecError> {
    let Some(instance) = codec::write_target(entries)? else {
        return Ok(b"[]".to_vec());
    };
    let mut records = Vec::with_capacity(entries.len());
    for (i, (path, value, kind)) in entries.iter().enumerate() {
        let mut record = Map::new();
        if i == 0 {
            record.insert("bn".to_owned(), Json::from(format!("{instance}/")));
        }
        let name = path
            .ids()
            .skip(2)
            .map(|id| id.to_string())
            .collect::<Vec<_>>();
        record.insert("n".to_owned(), Json::from(name.join("/")));
        let (label, json) = match Scalar::of(*path, value, *kind)? {
            Scalar::Text(s) => ("vs", Json::from(s)),
            Scalar::Integer(n) => ("v", Json::from(n)),
            Scalar::Unsigned(n) => ("v", Json::from(n)),
            Scalar::Float(f) => ("v", Json::from(f)),
            Scalar::Boolean(b) => ("vb", Json::from(b)),
            Scalar::Opaque(b) => ("vd", Json::from(URL_SAFE_NO_PAD.encode(b))),
            Scalar::Objlnk(link) => ("vlo", Json::from(link.to_string())),
            Scalar::None => {
                return Err(CodecError::Unwritable {
                    path: *path,
                    problem: "an executable resource has no value to write".to_owned(),
                });
            }
        };
        record.insert(label.to_owned(), json);
        records.push(Json::Object(record));
    }
    serde_json::to_vec(&records).map_err(|e| CodecError::Json(e.to_string()))
}

/// Reads the records of `bytes`; `within`: the path every record must lie in.
fn read(
    bytes: &[u8],
    within: Option<LwPath>,
    kind_of: &dyn Fn(&LwPath) -> Option<Kind>,
) -> Result<Decoded, CodecError> {
    let records: Vec<Map<String, Json>> =
        serde_json::from_slice(bytes).map_err(|e| CodecError::Json(e.to_string()))?;
    if records.len() > MAX_ENTRIES {
        return Err(CodecError::TooManyEntries);
    }
    let mut out = Decoded::default();
    let mut base_name = "";
    for (record, fields) in records.iter().enumerate() {
        if let Some(label) = fields
            .keys()
            .find(|label| label.ends_with('_') || matches!(label.as_str(), "bv" | "bs" | "s"))
        {
            return Err(CodecError::Label {
                record,
                label: label.clone(),
            });
        }
        let text = |label, problem| match fields.get(label) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(CodecError::Record { record, problem }),
        };
        if let Some(bn) = text("bn", "\"bn\" is not a string")? {
            base_name = bn;
        }
        let name = text("n", "\"n\" is not a string")?;
        if name.is_none() && !VALUE_LABELS.iter().any(|l| fields.contains_key(*l)) {
            // Only base fields (or ignored labels): nothing to report.
            continue;
        }
        let full = format!("{base_name}{}", name.unwrap_or_default());
        let path: LwPath = full.parse().map_err(|source| CodecError::Name {
            record,
            name: full,
            source,
        })?;
        let placement = |problem| CodecError::Placement {
            record,
            path,
            problem,
        };
        if path.rid().is_none() {
            return Err(placement("not a resource or resource instance"));
        }
        if within.is_some_and(|within| !within.contains(&path)) {
            return Err(placement("not under the requested path"));
        }
        match kind_of(&path) {
            Some(kind) => {
                let outcome = value(fields, kind).map_err(|problem| CodecError::SenmlValue {
                    record,
                    path,
                    problem,
                })?;
                out.add(path, outcome);
            }
            None => out.unknown(path),
        }
    }
    Ok(out)
}

/// The mirror value of a record for a resource of `kind`.
fn value(fields: &Map<String, Json>, kind: Kind) -> Result<Outcome, Problem> {
    let mut given = VALUE_LABELS
        .into_iter()
        .filter_map(|label| Some((label, fields.get(label)?)));
    let found = given.next();
    if given.next().is_some() {
        return Err(Problem::TwoValues);
    }
    let expected = match kind {
        Kind::String | Kind::Corelnk => "vs",
        Kind::Integer | Kind::Unsigned | Kind::Float | Kind::Time => "v",
        Kind::Boolean => "vb",
        Kind::Opaque => "vd",
        Kind::Objlnk => "vlo",
        Kind::None => {
            return match found {
                None => Ok(Outcome::Value(Value::Null)),
                Some((found, _)) => Err(Problem::Executable { found }),
            };
        }
    };
    let json = match found {
        None => return Err(Problem::NoValue { kind, expected }),
        Some((found, _)) if found != expected => {
            return Err(Problem::Label {
                kind,
                expected,
                found,
            });
        }
        Some((_, json)) => json,
    };
    let string = |why| json.as_str().ok_or(Problem::Invalid(why));
    let number = || match json {
        Json::Number(n) => Ok(n),
        _ => Err(Problem::Invalid("\"v\" is not a number")),
    };
    Ok(match kind {
        Kind::String | Kind::Corelnk => {
            Outcome::Value(Value::Chr(string("\"vs\" is not a string")?.to_owned()))
        }
        Kind::Integer | Kind::Time => Outcome::Value(Value::Int(
            i64::try_from(integral(number()?)?)
                .map_err(|_| Problem::Invalid("\"v\" is out of the 64-bit range"))?,
        )),
        Kind::Unsigned => {
            let n = integral(number()?)?;
            if n < 0 {
                return Err(Problem::Invalid("\"v\" is negative"));
            }
            codec::unsigned(
                u64::try_from(n).map_err(|_| Problem::Invalid("\"v\" is above 2^64-1"))?,
            )
        }
        // Every JSON number serde_json reads is a finite f64.
        Kind::Float => codec::float(number()?.as_f64().unwrap_or(f64::NAN)),
        Kind::Boolean => Outcome::Value(Value::Bool(
            json.as_bool()
                .ok_or(Problem::Invalid("\"vb\" is not a boolean"))?,
        )),
        Kind::Opaque => Outcome::Value(Value::Bin(
            URL_SAFE_NO_PAD_INDIFFERENT
                .decode(string("\"vd\" is not a string")?)
                .map_err(|_| Problem::Invalid("\"vd\" is not base64url"))?,
        )),
        Kind::Objlnk => Outcome::Value(Value::Chr(
            Objlnk::parse(string("\"vlo\" is not a string")?)
                .ok_or(Problem::Invalid("\"vlo\" is not \"oid:iid\""))?
                .to_string(),
        )),
        Kind::None => Outcome::Value(Value::Null),
    })
}

/// A JSON number that is a whole number (`5`, `5.0`, `5e3`), widened so that both 64-bit
/// ranges fit; one beyond them saturates, and the caller's range check refuses it.
fn integral(n: &Number) -> Result<i128, Problem> {
    if let Some(n) = n.as_i64() {
        return Ok(i128::from(n));
    }
    if let Some(n) = n.as_u64() {
        return Ok(i128::from(n));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 => Ok(f as i128),
        _ => Err(Problem::Invalid("\"v\" is not a whole number")),
    }
}

// Named by path so that the fuzz crate, which compiles this file by path, finds it too.
#[cfg(test)]
#[path = "senml/tests.rs"]
mod tests;
