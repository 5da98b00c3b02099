//! The bounds the authority holds every caller to (`[limits]` of the configuration): how
//! many nodes one read may return, how large its reply may be, and how much one owner (an
//! app, a user or a server) may keep in the store. Exceeding one is an
//! [`AccessError::Limit`] that names the limit and says what to do; nothing is cut short
//! silently.

use super::error::AccessError;
use super::principal::ADMIN;
use crate::store::{Change, ItemSink, LeafRef, ROW_OVERHEAD, Usage};
use crate::tree::uri::{ClientUri, NodeAddr};
use crate::tree::value::Value;

/// The authority's share of `[limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Most nodes one read returns (`result_rows`), counting every node of a subtree.
    pub result_rows: usize,
    /// Largest reply to one read in bytes, as serialized (`reply_bytes`).
    pub reply_bytes: usize,
    /// Most bytes (node names and values) one owner's instances hold (`owner_bytes`).
    pub owner_bytes: u64,
    /// Most instances one owner holds (`owner_instances`).
    pub owner_instances: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            result_rows: 100_000,
            reply_bytes: 16 * 1024 * 1024,
            owner_bytes: 64 * 1024 * 1024,
            owner_instances: 10_000,
        }
    }
}

/// What is left of one read's allowance as its reply is built.
pub struct Budget<'a> {
    uri: &'a ClientUri,
    bounds: Bounds,
    rows: usize,
    bytes: usize,
}

/// Bytes a `Get` reply spends per node beyond its ClientURI and value (format name,
/// D-Bus framing).
const PER_NODE_OVERHEAD: usize = 24;

impl Bounds {
    /// A fresh allowance for one read of `uri`.
    pub fn reply<'a>(&self, uri: &'a ClientUri) -> Budget<'a> {
        Budget {
            uri,
            bounds: *self,
            rows: 0,
            bytes: 0,
        }
    }

    /// Refuses, before anything is written, a write that would take `owner` above its
    /// quota: `usage` (what it holds now) plus `new_instances` and `bytes` (the write's
    /// footprint, see [`footprint`]). The write is checked again exactly when it commits.
    pub fn precheck(
        &self,
        owner: &str,
        usage: Usage,
        new_instances: u64,
        bytes: u64,
    ) -> Result<(), AccessError> {
        self.check_usage(
            owner,
            Usage {
                instances: usage.instances + new_instances,
                bytes: usage.bytes.saturating_add(bytes),
            },
        )
    }

    /// How many more bytes `owner`, holding `usage`, may keep; unbounded for the admin.
    pub fn room(&self, owner: &str, usage: Usage) -> u64 {
        if exempt(owner) {
            return u64::MAX;
        }
        self.owner_bytes.saturating_sub(usage.bytes)
    }

    /// Refuses a write that leaves `owner` above its quota. The admin has none.
    pub fn check_usage(&self, owner: &str, usage: Usage) -> Result<(), AccessError> {
        if exempt(owner) {
            return Ok(());
        }
        if usage.instances > self.owner_instances {
            return Err(AccessError::Limit(format!(
                "{owner} would own {} instances, more than its quota of {} ([limits] owner_instances); delete some first",
                usage.instances, self.owner_instances
            )));
        }
        if usage.bytes > self.owner_bytes {
            return Err(AccessError::Limit(format!(
                "{owner}'s instances would hold {} bytes, more than its quota of {} ([limits] owner_bytes); delete some first",
                usage.bytes, self.owner_bytes
            )));
        }
        Ok(())
    }
}

impl Budget<'_> {
    /// Spends the allowance on one node of a `Get` reply.
    pub fn take_found(
        &mut self,
        addr: &NodeAddr,
        value: Option<&Value>,
    ) -> Result<(), AccessError> {
        let value_bytes = match value {
            None => 0,
            Some(Value::B64(b) | Value::Bin(b)) => b.len(),
            Some(v) => v.to_text().len(),
        };
        self.spend(1, displayed_len(addr) + value_bytes + PER_NODE_OVERHEAD)
    }

    /// [`Budget::take_found`] for a value borrowed from the store's rows: the same charge
    /// (a value's bytes, or the length of its text), without building the text.
    pub fn take_leaf(
        &mut self,
        addr: &NodeAddr,
        leaf: Option<LeafRef<'_>>,
    ) -> Result<(), AccessError> {
        let value_bytes = match leaf {
            None | Some(LeafRef::Null) => 0,
            Some(LeafRef::Bytes(_, b)) => b.len(),
            Some(LeafRef::Text(_, t)) => t.len(),
            Some(LeafRef::Bool(b)) => displayed_len(&b),
            Some(LeafRef::Int(i)) => displayed_len(&i),
            Some(LeafRef::Float(f)) => displayed_len(&f),
        };
        self.spend(1, displayed_len(addr) + value_bytes + PER_NODE_OVERHEAD)
    }

    /// Spends the allowance on `bytes` more of the last node taken: what its value takes in
    /// the reply beyond its text (a `json` value written as D-Bus containers).
    pub fn take_extra(&mut self, bytes: usize) -> Result<(), AccessError> {
        self.spend(0, bytes)
    }

    /// Spends the allowance on one journal entry of a `ChangesSince` reply; `false` when it
    /// does not fit (the reply ends before it, and the caller asks again from there).
    pub fn fits_change(&mut self, change: &Change) -> bool {
        let bytes = displayed_len(&change.addr) + PER_NODE_OVERHEAD;
        if self.rows + 1 > self.bounds.result_rows || self.bytes + bytes > self.bounds.reply_bytes {
            return false;
        }
        self.rows += 1;
        self.bytes += bytes;
        true
    }

    fn spend(&mut self, rows: usize, bytes: usize) -> Result<(), AccessError> {
        self.rows += rows;
        self.bytes += bytes;
        if self.rows > self.bounds.result_rows {
            return Err(too_many_rows(self.uri, self.bounds.result_rows));
        }
        if self.bytes > self.bounds.reply_bytes {
            return Err(too_large(self.uri, self.bounds.reply_bytes));
        }
        Ok(())
    }
}

/// The deepest nesting of objects and arrays in a `json` value that an app sets, or reads
/// as a D-Bus variant: what a variant in `Get`'s answer can carry, each object level taking
/// three of the 64 containers a D-Bus value may be in (`bus::variant` tests both ends).
/// Deeper values written by servers are read with `GetJson`.
pub const JSON_DEPTH: usize = 20;

/// Refuses a `json` value an app sets that D-Bus could not give back: one holding a null
/// anywhere (D-Bus has none), or objects and arrays nested deeper than [`JSON_DEPTH`]. Walks
/// without recursion.
pub fn check_app_json(json: &serde_json::Value) -> Result<(), String> {
    let mut stack = vec![(json, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
            serde_json::Value::Null => {
                return Err(
                    "a JSON null cannot be set: D-Bus variants carry none (leave an \
                            object member out instead)"
                        .into(),
                );
            }
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(members) => Box::new(members.values()),
            _ => continue,
        };
        if depth == JSON_DEPTH {
            return Err(format!(
                "JSON objects and arrays nested deeper than {JSON_DEPTH} cannot be set"
            ));
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    Ok(())
}

/// A JSON array of MO serialization items as it is written: every item straight from the
/// store's rows into it, and the whole (closing bracket included) at most `max` bytes. An
/// item that would not fit is refused as soon as its bytes pass the bound, and leaves the
/// array as it was.
#[derive(Debug)]
pub struct ItemsJson {
    out: Vec<u8>,
    max: usize,
}

impl ItemsJson {
    /// An empty array that may grow to `max` bytes, with room for a small item from the
    /// start (most reads are one leaf: no reallocation on the way).
    pub fn new(max: usize) -> ItemsJson {
        let mut out = Vec::with_capacity(max.min(FIRST_ROOM));
        out.push(b'[');
        ItemsJson { out, max }
    }

    /// The array, closed.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b']');
        self.out
    }

    /// Appends the items `write` writes for one read, spending `budget` on their nodes.
    /// On an error, the array is left as it was before.
    pub fn append<T>(
        &mut self,
        budget: Budget<'_>,
        write: impl FnOnce(&mut Reply<'_, '_>) -> Result<T, AccessError>,
    ) -> Result<T, AccessError> {
        let before = self.out.len();
        let mut reply = Reply { json: self, budget };
        let out = write(&mut reply);
        if out.is_err() {
            self.out.truncate(before);
        }
        out
    }
}

/// Bytes an [`ItemsJson`] holds room for before it grows.
const FIRST_ROOM: usize = 512;

/// One read's items going into an [`ItemsJson`]: the store writes into it, node by node.
pub struct Reply<'j, 'u> {
    json: &'j mut ItemsJson,
    budget: Budget<'u>,
}

impl ItemSink for Reply<'_, '_> {
    type Error = AccessError;

    fn begin(&mut self) -> &mut Vec<u8> {
        let out = &mut self.json.out;
        if out.len() > 1 {
            out.push(b',');
        }
        out
    }

    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.json.out
    }

    fn node(&mut self) -> Result<(), AccessError> {
        self.budget.spend(1, 0)?;
        // Room for the closing bracket.
        // What was written of the read is taken back by [`ItemsJson::append`].
        if self.json.out.len() + 1 > self.json.max {
            return Err(too_large(self.budget.uri, self.json.max));
        }
        Ok(())
    }

    fn end(&mut self) {}
}

fn too_large(uri: &ClientUri, max: usize) -> AccessError {
    AccessError::Limit(format!(
        "{uri}: the reply would exceed {max} bytes ([limits] reply_bytes); narrow the query \
         (a MIID, a deeper path, nv= conditions) or read the parts one by one"
    ))
}

/// What writing the MO serialization `json` (the content of the node at `path`) by `writer`
/// costs against its owner's quota, counted as the store counts rows: each node's parent
/// path, name, value and writer plus [`ROW_OVERHEAD`]. Walks without recursion.
pub fn footprint(json: &serde_json::Value, path: &str, writer: &str) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<(usize, &serde_json::Value)> = vec![(path.len(), json)];
    while let Some((path_len, node)) = stack.pop() {
        let serde_json::Value::Object(children) = node else {
            continue;
        };
        for (name, child) in children {
            let value = match child {
                serde_json::Value::Object(_) => 0,
                serde_json::Value::String(s) => s.len(),
                other => other.to_string().len(),
            };
            let row = ROW_OVERHEAD + (path_len + name.len() + value + writer.len()) as u64;
            total = total.saturating_add(row);
            let child_len = if path_len == 0 {
                name.len()
            } else {
                path_len + 1 + name.len()
            };
            stack.push((child_len, child));
        }
    }
    total
}

/// Whether `owner` (as stored) is outside the quotas: the admin.
pub fn exempt(owner: &str) -> bool {
    owner == ADMIN
}

fn too_many_rows(uri: &ClientUri, max: usize) -> AccessError {
    AccessError::Limit(format!(
        "{uri}: more than {max} nodes match ([limits] result_rows); narrow the query \
         (a MIID, a deeper path, nv= conditions)"
    ))
}

/// The length of `value` as displayed, without building the text.
fn displayed_len(value: &impl std::fmt::Display) -> usize {
    let mut counter = Counter(0);
    // Invariant: Counter's write_str never fails, so neither does the formatting.
    let _ = std::fmt::Write::write_fmt(&mut counter, format_args!("{value}"));
    counter.0
}

/// A text writer that only counts.
struct Counter(usize);

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_spare_the_admin_and_name_the_limit() {
        let b = Bounds {
            owner_instances: 2,
            owner_bytes: 100,
            ..Bounds::default()
        };
        let over = Usage {
            instances: 3,
            bytes: 10,
        };
        assert!(b.check_usage("admin", over).is_ok());
        let err = b.check_usage("uid:1000", over).unwrap_err().to_string();
        assert!(err.contains("owner_instances"), "{err}");
        let err = b
            .check_usage(
                "srv:x",
                Usage {
                    instances: 1,
                    bytes: 101,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("owner_bytes"), "{err}");
    }

    #[test]
    fn footprints_count_like_the_store() {
        let json = serde_json::json!({"a": {"bb": "xyz", "c": 5}});
        // a at "": 0 + 1 + 0; bb at "r/a": 3 + 2 + 3; c at "r/a": 3 + 1 + 1; writer 5 each
        let expected = 3 * (ROW_OVERHEAD + 5) + 1 + (3 + 2 + 3) + (3 + 1 + 1);
        assert_eq!(footprint(&json, "", "app:x"), expected - 2 * 2);
        assert_eq!(footprint(&json, "r", "app:x"), expected + 1);
    }

    #[test]
    fn a_budget_counts_rows_and_bytes() {
        let uri = ClientUri::parse("urn:a:1.0/*/").unwrap();
        let b = Bounds {
            result_rows: 2,
            reply_bytes: 1000,
            ..Bounds::default()
        };
        let addr = NodeAddr::root("urn:a:1.0", "1").child("X");
        let mut budget = b.reply(&uri);
        budget.take_found(&addr, None).unwrap();
        budget.take_found(&addr, None).unwrap();
        let err = budget.take_found(&addr, None).unwrap_err().to_string();
        assert!(err.contains("result_rows"), "{err}");
        let mut budget = b.reply(&uri);
        let big = Value::Chr("x".repeat(2000));
        let err = budget
            .take_found(&addr, Some(&big))
            .unwrap_err()
            .to_string();
        assert!(err.contains("reply_bytes"), "{err}");
    }
}
