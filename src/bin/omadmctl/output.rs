//! Output: node values as text and as JSON, aligned columns, and writing to standard output
//! (a reader that goes away, as `head` does, ends the command quietly).

use std::io::{self, IsTerminal, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use omadmd::bus::variant;
use serde_json::Value as J;
use zbus::{OwnedVariant, Variant};

use crate::failure::Failure;

/// A node's value as Get delivers it (int as x, bool as b, float as d, b64/bin as ay, json
/// as the JSON value's variant, everything else as s; interior nodes have the format
/// "node").
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    Interior,
    Int(i64),
    Bool(bool),
    Float(f64),
    Bytes(Vec<u8>),
    Text(String),
    Json(J),
}

impl NodeValue {
    /// Decodes a Get result's value; a signature the contract does not use is shown as
    /// text.
    pub fn from_dbus(format: &str, value: OwnedVariant) -> NodeValue {
        match format {
            "node" => return NodeValue::Interior,
            "json" => {
                if let Ok(json) = variant::to_json(&value) {
                    return NodeValue::Json(json);
                }
            }
            _ => {}
        }
        match &*value {
            Variant::I64(i) => return NodeValue::Int(*i),
            Variant::I32(i) => return NodeValue::Int((*i).into()),
            Variant::U32(i) => return NodeValue::Int((*i).into()),
            Variant::Bool(b) => return NodeValue::Bool(*b),
            Variant::F64(f) => return NodeValue::Float(*f),
            Variant::Str(s) => return NodeValue::Text(s.to_string()),
            _ => {}
        }
        let shown = format!("{:?}", *value);
        match Vec::<u8>::try_from(value) {
            Ok(bytes) => NodeValue::Bytes(bytes),
            Err(_) => NodeValue::Text(shown),
        }
    }

    /// The exact text form: numbers in decimal, booleans as true/false, bytes in base64,
    /// json values as compact JSON.
    pub fn text(&self) -> String {
        match self {
            NodeValue::Json(j) => j.to_string(),
            NodeValue::Interior => String::new(),
            NodeValue::Int(i) => i.to_string(),
            NodeValue::Bool(b) => b.to_string(),
            NodeValue::Float(f) => f.to_string(),
            NodeValue::Bytes(b) => BASE64.encode(b),
            NodeValue::Text(s) => s.clone(),
        }
    }

    /// The JSON form: numbers, booleans, base64 strings for bytes, the JSON value itself for
    /// the json format, null for the null format and for interior nodes.
    pub fn json(&self, format: &str) -> J {
        match self {
            NodeValue::Interior => J::Null,
            NodeValue::Int(i) => J::from(*i),
            NodeValue::Bool(b) => J::from(*b),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            NodeValue::Bytes(b) => J::from(BASE64.encode(b)),
            NodeValue::Json(j) => j.clone(),
            NodeValue::Text(s) => match format {
                "null" => J::Null,
                _ => J::from(s.as_str()),
            },
        }
    }
}

/// `text` with control characters escaped (`\n`, `\t`, `\u{1b}`, ...), for one-line
/// display.
pub fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Rows as aligned columns, two spaces apart; the last column is not padded and trailing
/// empty cells leave no trailing spaces.
pub fn columns(rows: &[Vec<String>]) -> String {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// POSIX seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_time(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    let t = time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Pretty JSON text with a final newline.
pub fn pretty(json: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(json).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes `text` to standard output and flushes. A closed pipe ends the command quietly.
pub fn emit(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(Failure::quiet()),
        Err(e) => Err(Failure::new(1, format!("cannot write the output: {e}"))),
    }
}

/// Whether to dim parts of the text output: on a terminal, unless NO_COLOR is set.
pub fn use_color() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_do_not_pad_the_last() {
        let rows = vec![
            vec!["a".to_owned(), "node".to_owned(), String::new()],
            vec!["abc".to_owned(), "chr".to_owned(), "x y".to_owned()],
        ];
        assert_eq!(columns(&rows), "a    node\nabc  chr   x y\n");
    }

    #[test]
    fn values_have_json_types() {
        assert_eq!(NodeValue::Int(5).json("int"), J::from(5));
        assert_eq!(NodeValue::Bytes(vec![0, 1, 2]).json("b64"), J::from("AAEC"));
        assert_eq!(NodeValue::Text("x".into()).json("null"), J::Null);
        assert_eq!(NodeValue::Interior.json("node"), J::Null);
        assert_eq!(one_line("a\nb"), "a\\nb");
    }

    #[test]
    fn json_values_are_read_from_their_variants_and_printed_as_json() {
        let mut members = std::collections::HashMap::new();
        members.insert("tags", Variant::from(vec!["a", "b\n"]));
        members.insert("lat", Variant::from(1.5));
        let cases = [
            (
                Variant::from(members),
                serde_json::json!({"lat": 1.5, "tags": ["a", "b\n"]}),
                r#"{"lat":1.5,"tags":["a","b\n"]}"#,
            ),
            (Variant::from("x"), serde_json::json!("x"), r#""x""#),
            (
                Variant::from(u64::MAX),
                serde_json::json!(u64::MAX),
                "18446744073709551615",
            ),
            (Variant::from(true), serde_json::json!(true), "true"),
        ];
        for (variant, json, text) in cases {
            let value = NodeValue::from_dbus("json", OwnedVariant::try_from(variant).unwrap());
            assert_eq!(value, NodeValue::Json(json.clone()));
            assert_eq!(value.json("json"), json);
            assert_eq!(value.text(), text);
        }
        // The same variant for another format keeps its usual reading.
        let text = NodeValue::from_dbus("chr", OwnedVariant::from(zbus::Str::from("x")));
        assert_eq!(text, NodeValue::Text("x".into()));
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400 + 3661), "2000-02-29 01:01:01 UTC");
        assert_eq!(utc_time(1_798_761_599), "2026-12-31 23:59:59 UTC");
    }
}
