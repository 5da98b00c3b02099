//! The values of many nodes at once, for a `Get`: the nodes of one parent in one instance
//! are read with one query, and each value is handed on borrowed from its row
//! ([`LeafRef`]), so no [`Value`](crate::tree::value::Value) is built and nothing is copied
//! before it reaches the caller's output.

use std::ops::Range;

use rusqlite::params;

use super::json::{Cell, Rows};
use super::read::split;
use super::{Store, StoreError};
use crate::tree::format::Format;
use crate::tree::uri::NodeAddr;
use crate::tree::value::{Date, ObjectRef, Time};

/// A leaf's value as its row holds it: what [`Value`](crate::tree::value::Value) of the
/// same format would be read, without owning it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LeafRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// `b64` or `bin`: the bytes.
    Bytes(Format, &'a [u8]),
    /// `chr`, `xml`, `date`, `time` or `json`: the text, as
    /// [`Value::to_text`](crate::tree::value::Value::to_text) gives it.
    Text(Format, &'a str),
}

impl LeafRef<'_> {
    pub fn format(&self) -> Format {
        match self {
            LeafRef::Null => Format::Null,
            LeafRef::Bool(_) => Format::Bool,
            LeafRef::Int(_) => Format::Int,
            LeafRef::Float(_) => Format::Float,
            LeafRef::Bytes(f, _) | LeafRef::Text(f, _) => *f,
        }
    }
}

impl Store {
    /// Hands `each` every node of `addrs`, in order, with its value: `None` for an interior
    /// node, an instance root or a node that is not there (what [`Store::leaf`] says of
    /// them). A run of nodes of one parent in one instance (the leaves `*` matched) is read
    /// with one query. An error of `each` ends the read.
    pub fn each_leaf<E: From<StoreError>>(
        &self,
        addrs: &[NodeAddr],
        mut each: impl FnMut(&NodeAddr, Option<LeafRef<'_>>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut siblings = Rows::default();
        let mut rest = addrs;
        while let Some(first) = rest.first() {
            let (parent, _) = split(&first.path);
            let run = if first.path.is_empty() {
                1
            } else {
                1 + rest[1..]
                    .iter()
                    .take_while(|a| {
                        a.moid == first.moid
                            && a.miid == first.miid
                            && !a.path.is_empty()
                            && split(&a.path).0 == parent
                    })
                    .count()
            };
            let (now, later) = rest.split_at(run);
            rest = later;
            let inst = if first.path.is_empty() {
                None
            } else {
                self.instance_row(&first.moid, &first.miid)?
            };
            let Some(inst) = inst else {
                for addr in now {
                    each(addr, None)?;
                }
                continue;
            };
            siblings.clear();
            match now {
                [one] => siblings.read(
                    self,
                    "SELECT parent, name, format, value FROM nodes \
                     WHERE inst = ?1 AND parent = ?2 AND name = ?3",
                    params![inst.id, parent, split(&one.path).1],
                )?,
                _ => siblings.read(
                    self,
                    "SELECT parent, name, format, value FROM nodes WHERE inst = ?1 \
                     AND parent = ?2 ORDER BY name",
                    params![inst.id, parent],
                )?,
            }
            for addr in now {
                each(addr, siblings.leaf(split(&addr.path).1)?)?;
            }
        }
        Ok(())
    }
}

impl Rows {
    /// The value of the child `name`: `None` when it is interior or not there. A cell that
    /// does not fit its format is [`StoreError::Corrupt`], as [`Store::leaf`] has it.
    fn leaf(&self, name: &str) -> Result<Option<LeafRef<'_>>, StoreError> {
        let Ok(at) = self
            .rows
            .binary_search_by(|r| self.text[r.name.clone()].cmp(name.as_bytes()))
        else {
            return Ok(None);
        };
        let row = &self.rows[at];
        let bad = || StoreError::Corrupt(format!("a {} node holds a mismatched cell", row.format));
        let text = |r: &Range<usize>| std::str::from_utf8(&self.text[r.clone()]).map_err(|_| bad());
        Ok(Some(match (row.format, &row.cell) {
            (Format::Node, _) => return Ok(None),
            (Format::Null, Cell::Null) => LeafRef::Null,
            (f @ (Format::B64 | Format::Bin), Cell::Blob(b)) => {
                LeafRef::Bytes(f, &self.text[b.clone()])
            }
            (Format::Bool, Cell::Int(i)) => LeafRef::Bool(*i != 0),
            (Format::Int, Cell::Int(i)) => LeafRef::Int(*i),
            (Format::Float, Cell::Real(f)) => LeafRef::Float(*f),
            (f @ (Format::Chr | Format::Xml), Cell::Text(t)) => LeafRef::Text(f, text(t)?),
            (Format::Date, Cell::Text(t)) => {
                let t = text(t)?;
                Date::parse(t).ok_or_else(bad)?;
                LeafRef::Text(Format::Date, t)
            }
            (Format::Time, Cell::Text(t)) => {
                let t = text(t)?;
                Time::parse(t).ok_or_else(bad)?;
                LeafRef::Text(Format::Time, t)
            }
            (Format::Json, Cell::Text(t)) => {
                let t = text(t)?;
                serde_json::from_str::<serde::de::IgnoredAny>(t).map_err(|_| bad())?;
                LeafRef::Text(Format::Json, t)
            }
            (Format::Bin, Cell::Text(t)) => {
                let object = ObjectRef::from_cell(text(t)?).ok_or_else(bad)?;
                return Err(StoreError::LargeObject {
                    name: name.to_owned(),
                    object,
                });
            }
            _ => return Err(bad()),
        }))
    }
}
