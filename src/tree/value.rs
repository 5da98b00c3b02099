//! Typed leaf values. A value is parsed once, at the edge (DDF default, TNDS text, JSON,
//! D-Bus argument, store row), into a [`Value`] whose variant is its format; nothing
//! downstream re-checks it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::format::Format;

/// The value of a leaf node.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    B64(Vec<u8>),
    Bin(Vec<u8>),
    Bool(bool),
    Chr(String),
    Int(i64),
    Xml(String),
    Date(Date),
    Time(Time),
    /// Always finite: NaN and infinities are refused when parsing.
    Float(f64),
    /// The constructed format (DM-HLF-024): a structured JSON value.
    Json(serde_json::Value),
    /// A `bin` value kept in a file beside the store (a large object, DM-HLF-022). Its
    /// bytes are never held here: readers open the file (`store::objects`).
    Object(ObjectRef),
}

/// A large object: the size and SHA-256 of a `bin` value kept in a file, which is named by
/// the digest. In the store's `value` cell it is the text `<hex digest> <size>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub size: u64,
    pub sha256: [u8; 32],
}

impl ObjectRef {
    /// The digest in lower-case hex: the object file's name.
    pub fn hex(&self) -> String {
        hex(&self.sha256)
    }

    /// The store cell's text, `<hex digest> <size>`.
    pub fn to_cell(&self) -> String {
        format!("{} {}", self.hex(), self.size)
    }

    /// Reads [`ObjectRef::to_cell`]'s text.
    pub fn from_cell(text: &str) -> Option<ObjectRef> {
        let (digest, size) = text.split_once(' ')?;
        Some(ObjectRef {
            size: size.parse().ok()?,
            sha256: unhex(digest)?,
        })
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "large object of {} bytes, sha-256 {}",
            self.size,
            self.hex()
        )
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A 32-byte digest from its 64 hex digits.
pub fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// An ISO 8601 calendar date, `YYYY-MM-DD` or `YYYYMMDD`, kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Date(String);

/// An ISO 8601 time of day, `hh:mm:ss` or `hhmmss` with optional fraction and zone
/// (`Z`, `±hh:mm`, `±hhmm`), kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Time(String);

/// Why a text or JSON value does not fit a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("interior nodes have no value")]
    Interior,
    #[error("{format} value {text:?} is not valid: {reason}")]
    Invalid {
        format: Format,
        text: String,
        reason: &'static str,
    },
    #[error("{format} value must be given as JSON {expected}, got {got}")]
    JsonType {
        format: Format,
        expected: &'static str,
        got: &'static str,
    },
}

impl Value {
    /// The format this value belongs to.
    pub fn format(&self) -> Format {
        match self {
            Value::Null => Format::Null,
            Value::B64(_) => Format::B64,
            Value::Bin(_) | Value::Object(_) => Format::Bin,
            Value::Bool(_) => Format::Bool,
            Value::Chr(_) => Format::Chr,
            Value::Int(_) => Format::Int,
            Value::Xml(_) => Format::Xml,
            Value::Date(_) => Format::Date,
            Value::Time(_) => Format::Time,
            Value::Float(_) => Format::Float,
            Value::Json(_) => Format::Json,
        }
    }

    /// Parses the textual form (TNDS `<Value>`, D-Bus string arguments, DDF defaults).
    /// `b64` and `bin` are base64 text; `json` is JSON text.
    pub fn parse(format: Format, text: &str) -> Result<Value, ValueError> {
        let invalid = |reason| ValueError::Invalid {
            format,
            text: text.to_owned(),
            reason,
        };
        Ok(match format {
            Format::Node => return Err(ValueError::Interior),
            Format::Null => {
                if !text.is_empty() {
                    return Err(invalid("null nodes carry no data"));
                }
                Value::Null
            }
            Format::B64 => Value::B64(decode_base64(text).ok_or_else(|| invalid("not base64"))?),
            Format::Bin => Value::Bin(decode_base64(text).ok_or_else(|| invalid("not base64"))?),
            Format::Bool => match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(invalid("expected true or false")),
            },
            Format::Chr => Value::Chr(text.to_owned()),
            Format::Int => Value::Int(
                text.trim()
                    .parse()
                    .map_err(|_| invalid("not a 64-bit integer"))?,
            ),
            Format::Xml => Value::Xml(text.to_owned()),
            Format::Date => {
                Value::Date(Date::parse(text).ok_or_else(|| invalid("not YYYY-MM-DD"))?)
            }
            Format::Time => Value::Time(Time::parse(text).ok_or_else(|| invalid("not hh:mm:ss"))?),
            Format::Float => {
                let f: f64 = text.trim().parse().map_err(|_| invalid("not a number"))?;
                if !f.is_finite() {
                    return Err(invalid("not finite"));
                }
                Value::Float(f)
            }
            Format::Json => {
                Value::Json(serde_json::from_str(text).map_err(|_| invalid("not JSON"))?)
            }
        })
    }

    /// The textual form accepted by [`Value::parse`]; for a large object, which has none,
    /// a description of it (serializations refuse large objects before they get here).
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::B64(b) | Value::Bin(b) => BASE64.encode(b),
            Value::Bool(b) => b.to_string(),
            Value::Chr(s) | Value::Xml(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Date(d) => d.0.clone(),
            Value::Time(t) => t.0.clone(),
            Value::Float(f) => f.to_string(),
            Value::Json(j) => j.to_string(),
            Value::Object(o) => o.to_string(),
        }
    }

    /// Reads the value from an MO serialization (PROTOCOL.md §7): strings, numbers and
    /// booleans by format, `b64`/`bin` as base64 strings, `json` as any JSON value.
    pub fn from_json(format: Format, json: &serde_json::Value) -> Result<Value, ValueError> {
        use serde_json::Value as J;
        let wrong = |expected| ValueError::JsonType {
            format,
            expected,
            got: json_kind(json),
        };
        match (format, json) {
            (Format::Node, _) => Err(ValueError::Interior),
            (Format::Json, j) => Ok(Value::Json(j.clone())),
            (Format::Null, J::Null) => Ok(Value::Null),
            (Format::Null, _) => Err(wrong("null")),
            (Format::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
            (Format::Bool, _) => Err(wrong("boolean")),
            (Format::Int, J::Number(n)) => n.as_i64().map(Value::Int).ok_or(ValueError::Invalid {
                format,
                text: n.to_string(),
                reason: "not a 64-bit integer",
            }),
            (Format::Int, _) => Err(wrong("integer")),
            (Format::Float, J::Number(n)) => n.as_f64().map(Value::Float).ok_or(wrong("number")),
            (Format::Float, _) => Err(wrong("number")),
            (_, J::String(s)) => Value::parse(format, s),
            _ => Err(wrong("string")),
        }
    }

    /// The value as it appears in an MO serialization; inverse of [`Value::from_json`].
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => J::from(*f),
            Value::Json(j) => j.clone(),
            other => J::String(other.to_text()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl Date {
    /// Accepts `YYYY-MM-DD` or `YYYYMMDD` with a plausible month and day.
    pub fn parse(text: &str) -> Option<Date> {
        let digits: String = match text.len() {
            10 if text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-' => {
                [&text[0..4], &text[5..7], &text[8..10]].concat()
            }
            8 => text.to_owned(),
            _ => return None,
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() != 8 {
            return None;
        }
        let month: u32 = digits[4..6].parse().ok()?;
        let day: u32 = digits[6..8].parse().ok()?;
        ((1..=12).contains(&month) && (1..=31).contains(&day)).then(|| Date(text.to_owned()))
    }

    /// The date as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Time {
    /// Accepts `hh:mm:ss[.fff][zone]` or `hhmmss[.fff][zone]`.
    pub fn parse(text: &str) -> Option<Time> {
        let (clock, rest) =
            if text.len() >= 8 && text.is_char_boundary(8) && text.as_bytes().get(2) == Some(&b':')
            {
                (text[..8].replace(':', ""), &text[8..])
            } else if text.len() >= 6 && text.is_char_boundary(6) {
                (text[..6].to_owned(), &text[6..])
            } else {
                return None;
            };
        if clock.len() != 6 || !clock.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (h, m, s): (u32, u32, u32) = (
            clock[0..2].parse().ok()?,
            clock[2..4].parse().ok()?,
            clock[4..6].parse().ok()?,
        );
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        let rest = match rest.strip_prefix('.') {
            Some(frac) => {
                let n = frac.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return None;
                }
                &frac[n..]
            }
            None => rest,
        };
        let zone_ok = match rest {
            "" | "Z" => true,
            z if z.starts_with(['+', '-']) => {
                let z = z[1..].replace(':', "");
                z.len() == 4 && z.bytes().all(|b| b.is_ascii_digit())
            }
            _ => false,
        };
        zone_ok.then(|| Time(text.to_owned()))
    }

    /// The time as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64.decode(compact).ok()
}

fn json_kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_for_every_leaf_format() {
        let samples = [
            (Format::Null, ""),
            (Format::B64, "aGVsbG8="),
            (Format::Bin, "AAEC"),
            (Format::Bool, "true"),
            (Format::Chr, "Century House"),
            (Format::Int, "-42"),
            (Format::Xml, "<a>b</a>"),
            (Format::Date, "2016-01-01"),
            (Format::Time, "10:00:00Z"),
            (Format::Float, "1.5"),
            (Format::Json, r#"{"lat":1.5,"tags":["a"]}"#),
        ];
        for (format, text) in samples {
            let v = Value::parse(format, text).unwrap();
            assert_eq!(v.format(), format);
            assert_eq!(Value::parse(format, &v.to_text()).unwrap(), v);
            assert_eq!(Value::from_json(format, &v.to_json()).unwrap(), v);
        }
    }

    #[test]
    fn bad_text_is_refused_with_the_reason() {
        let cases = [
            (Format::Bool, "yes", "true or false"),
            (Format::Int, "12a", "integer"),
            (Format::Float, "NaN", "finite"),
            (Format::Float, "inf", "finite"),
            (Format::Date, "2016-13-01", "YYYY-MM-DD"),
            (Format::Time, "25:00:00", "hh:mm:ss"),
            (Format::Time, "10:00:00+1", "hh:mm:ss"),
            (Format::B64, "!!", "base64"),
            (Format::Null, "x", "no data"),
            (Format::Json, "{", "JSON"),
        ];
        for (format, text, reason) in cases {
            let err = Value::parse(format, text).unwrap_err().to_string();
            assert!(err.contains(reason), "{format} {text:?}: {err}");
        }
        assert_eq!(Value::parse(Format::Node, ""), Err(ValueError::Interior));
    }

    #[test]
    fn json_types_are_checked_per_format() {
        let err = Value::from_json(Format::Int, &serde_json::json!("12")).unwrap_err();
        assert!(err.to_string().contains("integer"), "{err}");
        let err = Value::from_json(Format::Chr, &serde_json::json!(12)).unwrap_err();
        assert!(err.to_string().contains("string"), "{err}");
        assert_eq!(
            Value::from_json(Format::Date, &serde_json::json!("20160101")).unwrap(),
            Value::Date(Date::parse("20160101").unwrap())
        );
    }

    #[test]
    fn times_with_fractions_and_zones() {
        for ok in [
            "10:00:00",
            "100000",
            "10:00:00.250",
            "10:00:00+02:00",
            "100000-0500",
        ] {
            assert!(Time::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "10:00",
            "10:00:00.",
            "1000000",
            "10:00:00X",
            "00:00:0é",
            "0000é",
        ] {
            assert!(Time::parse(bad).is_none(), "{bad}");
        }
    }
}
