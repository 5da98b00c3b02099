//! Typed values to and from SQLite cells: integers and booleans as INTEGER, floats as REAL,
//! `b64`/`bin` as BLOB, `null` as NULL, everything else as TEXT. The `format` column says
//! how to read a cell back; a `bin` cell holding TEXT is a large object's reference
//! (`<hex digest> <size>`, see [`ObjectRef`]).

use rusqlite::types::{Value as Sql, ValueRef};

use super::StoreError;
use crate::tree::format::Format;
use crate::tree::value::{ObjectRef, Value};

/// The SQLite cell for a value.
pub fn to_sql(value: &Value) -> Sql {
    match value {
        Value::Null => Sql::Null,
        Value::B64(b) | Value::Bin(b) => Sql::Blob(b.clone()),
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Int(i) => Sql::Integer(*i),
        Value::Float(f) => Sql::Real(*f),
        Value::Object(o) => Sql::Text(o.to_cell()),
        other => Sql::Text(other.to_text()),
    }
}

/// Reads a cell stored with `format`; `None` for interior nodes.
pub fn from_sql(format: &str, cell: ValueRef<'_>) -> Result<Option<Value>, StoreError> {
    let format: Format = format
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{e}")))?;
    let bad = || StoreError::Corrupt(format!("a {format} node holds {:?}", cell.data_type()));
    Ok(Some(match (format, cell) {
        (Format::Node, _) => return Ok(None),
        (Format::Null, ValueRef::Null) => Value::Null,
        (Format::B64, ValueRef::Blob(b)) => Value::B64(b.to_vec()),
        (Format::Bin, ValueRef::Blob(b)) => Value::Bin(b.to_vec()),
        (Format::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (Format::Int, ValueRef::Integer(i)) => Value::Int(i),
        (Format::Float, ValueRef::Real(f)) => Value::Float(f),
        (Format::Bin, ValueRef::Text(t)) => std::str::from_utf8(t)
            .ok()
            .and_then(ObjectRef::from_cell)
            .map(Value::Object)
            .ok_or_else(bad)?,
        (f, ValueRef::Text(t)) => {
            let text = std::str::from_utf8(t).map_err(|_| bad())?;
            Value::parse(f, text).map_err(|e| StoreError::Corrupt(e.to_string()))?
        }
        _ => return Err(bad()),
    }))
}
