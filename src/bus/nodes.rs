//! The answer of `Get`, `a(ssv)`: (ClientURI, format, value) per node, gathered from the
//! store's rows into one buffer ([`Nodes`]) and serialized once, by zbus, into the reply —
//! no string, variant or [`Value`](crate::tree::value::Value) per node in between.
//!
//! A value's variant is `x` for `int`, `b` for `bool`, `d` for `float`, `ay` for `b64` and
//! `bin`, the value itself for `json` (`a{sv}`, `av`, `s`, `b`, `x`, `t` or `d`, see
//! [`super::variant`]; parsed here, once, from the row's text), and the text of every other
//! format (`s`; empty for `null` and interior nodes, whose format is `node`).
//!
//! A value D-Bus cannot carry ends the read with `InvalidValue` naming the node, before
//! anything is sent: a `json` value holding a null that cannot be left out, or nested
//! deeper than [`JSON_DEPTH`](super::variant::JSON_DEPTH), and text holding U+0000. Such a
//! value is read with `GetJson`. What a `json` value's variant takes in the reply beyond
//! its text is spent from the read's `[limits] reply_bytes` allowance.

use std::fmt::Write as _;
use std::ops::Range;

use serde::ser::{Serialize, SerializeSeq as _, Serializer};
use zbus::{OwnedVariant, Signature, Type, as_variant};

use super::variant::{self, AsVariant, VariantError};
use crate::authority::AccessError;
use crate::store::{LeafRef, StoreError};
use crate::tree::format::Format;
use crate::tree::uri::NodeAddr;

/// Nodes of a `Get` answer, in order: their addresses and text in one string, their
/// bytes in one buffer, their `json` values parsed.
#[derive(Debug, Default)]
pub struct Nodes {
    text: String,
    bytes: Vec<u8>,
    json: Vec<serde_json::Value>,
    nodes: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    addr: Range<usize>,
    format: Format,
    value: Held,
}

/// A node's value in [`Nodes`]: text and bytes as ranges of its buffers, a `json` value
/// as its index in [`Nodes::json`].
#[derive(Debug)]
enum Held {
    Text(Range<usize>),
    Bytes(Range<usize>),
    Int(i64),
    Bool(bool),
    Float(f64),
    Json(usize),
}

impl Nodes {
    /// Appends the node at `addr` with its value (`None`: interior). Answers the bytes its
    /// value takes in the reply beyond its text (a `json` value's D-Bus containers), or why
    /// D-Bus cannot carry the value.
    pub fn push(
        &mut self,
        addr: &NodeAddr,
        leaf: Option<LeafRef<'_>>,
    ) -> Result<usize, AccessError> {
        let uncarried = |e: VariantError| {
            AccessError::InvalidValue(format!("{addr}: its value {e}; read it with GetJson"))
        };
        let start = self.text.len();
        // Invariant: writing into a String cannot fail.
        let _ = write!(self.text, "{addr}");
        let at = start..self.text.len();
        let mut extra = 0;
        let (format, value) = match leaf {
            None => (Format::Node, Held::Text(at.end..at.end)),
            Some(LeafRef::Null) => (Format::Null, Held::Text(at.end..at.end)),
            Some(LeafRef::Int(i)) => (Format::Int, Held::Int(i)),
            Some(LeafRef::Bool(b)) => (Format::Bool, Held::Bool(b)),
            Some(LeafRef::Float(f)) => (Format::Float, Held::Float(f)),
            Some(LeafRef::Bytes(f, b)) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(b);
                (f, Held::Bytes(start..self.bytes.len()))
            }
            Some(LeafRef::Text(Format::Json, t)) => {
                // The store checked the text when it read the row.
                let json: serde_json::Value = serde_json::from_str(t).map_err(|e| {
                    AccessError::Store(StoreError::Corrupt(format!("{addr}: json value: {e}")))
                })?;
                extra = variant::carriable(&json)
                    .map_err(uncarried)?
                    .saturating_sub(t.len());
                self.json.push(json);
                (Format::Json, Held::Json(self.json.len() - 1))
            }
            Some(LeafRef::Text(_, t)) if t.contains('\0') => {
                return Err(uncarried(VariantError::Nul));
            }
            Some(LeafRef::Text(f, t)) => {
                self.text.push_str(t);
                (f, Held::Text(at.end..self.text.len()))
            }
        };
        self.nodes.push(Entry {
            addr: at,
            format,
            value,
        });
        Ok(extra)
    }
}

impl Type for Nodes {
    const SIGNATURE: &'static Signature = <Vec<(String, String, OwnedVariant)> as Type>::SIGNATURE;
}

impl Serialize for Nodes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.nodes.len()))?;
        for e in &self.nodes {
            let value = match &e.value {
                Held::Text(r) => Variant::Str(&self.text[r.clone()]),
                Held::Bytes(r) => Variant::Bytes(&self.bytes[r.clone()]),
                Held::Int(i) => Variant::Int(*i),
                Held::Bool(b) => Variant::Bool(*b),
                Held::Float(f) => Variant::Float(*f),
                // Invariant: push stored the value at the index it held.
                Held::Json(i) => Variant::Json(&self.json[*i]),
            };
            seq.serialize_element(&(&self.text[e.addr.clone()], e.format.as_str(), value))?;
        }
        seq.end()
    }
}

/// One value, serialized as a D-Bus variant of its type.
enum Variant<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
    Int(i64),
    Bool(bool),
    Float(f64),
    Json(&'a serde_json::Value),
}

impl Type for Variant<'_> {
    const SIGNATURE: &'static Signature = &Signature::Variant;
}

impl Serialize for Variant<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Variant::Str(s) => as_variant::serialize(s, serializer),
            Variant::Bytes(b) => as_variant::serialize(b, serializer),
            Variant::Int(i) => as_variant::serialize(i, serializer),
            Variant::Bool(b) => as_variant::serialize(b, serializer),
            Variant::Float(f) => as_variant::serialize(f, serializer),
            Variant::Json(j) => AsVariant(j).serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;
    use zbus::wire::serialized::Context;
    use zbus::wire::{LE, to_bytes};

    use super::*;
    use crate::authority::{Authority, Bounds, Principal};
    use crate::store::{self, Pool, Rights};
    use crate::tree::builtin;
    use crate::tree::node::Node;
    use crate::tree::registry::Registry;
    use crate::tree::value::Value;

    type Answer = Vec<(String, String, OwnedVariant)>;

    const MOID: &str = "urn:oma:mo:ext-omadmd-test-get:1.0";

    /// `Get`'s answer as it was made before it was streamed: [`Authority::get`]'s nodes,
    /// each turned into owned strings and a variant (int as x, bool as b, float as d,
    /// b64/bin as ay, json as [`json_variant`] builds it, everything else as its text).
    fn old_get(auth: &Authority, who: &Principal, uri: &str) -> Result<Answer, String> {
        let found = auth.get(who, uri).map_err(|e| e.to_string())?;
        found
            .into_iter()
            .map(|f| {
                let (format, value) = match f.value {
                    None => (Format::Node, OwnedVariant::from(zbus::Str::from(""))),
                    Some(v) => (
                        v.format(),
                        match v {
                            Value::Int(i) => OwnedVariant::from(i),
                            Value::Bool(b) => OwnedVariant::from(b),
                            Value::Float(f) => OwnedVariant::from(f),
                            Value::B64(bytes) | Value::Bin(bytes) => {
                                OwnedVariant::try_from(zbus::Variant::from(bytes)).unwrap()
                            }
                            Value::Json(j) => {
                                variant::carriable(&j).map_err(|e| {
                                    format!("{}: its value {e}; read it with GetJson", f.addr)
                                })?;
                                OwnedVariant::try_from(json_variant(&j)).unwrap()
                            }
                            other => OwnedVariant::from(zbus::Str::from(other.to_text())),
                        },
                    ),
                };
                Ok((f.addr.to_string(), format.as_str().to_owned(), value))
            })
            .collect()
    }

    /// A JSON value as a variant built with zbus's own types (null members left out).
    fn json_variant(json: &serde_json::Value) -> zbus::Variant<'static> {
        use serde_json::Value as J;
        let boxed = |j| zbus::Variant::Variant(Box::new(json_variant(j)));
        match json {
            J::Bool(b) => zbus::Variant::from(*b),
            J::Number(n) if n.is_i64() => zbus::Variant::from(n.as_i64().unwrap()),
            J::Number(n) if n.is_u64() => zbus::Variant::from(n.as_u64().unwrap()),
            J::Number(n) => zbus::Variant::from(n.as_f64().unwrap()),
            J::String(s) => zbus::Variant::from(s.clone()),
            J::Array(items) => {
                let mut array = zbus::Array::new(&Signature::Variant);
                for item in items {
                    array.append(boxed(item)).unwrap();
                }
                zbus::Variant::Array(array)
            }
            J::Object(members) => {
                let mut dict = zbus::Dict::new(&Signature::Str, &Signature::Variant);
                for (k, v) in members.iter().filter(|(_, v)| !v.is_null()) {
                    dict.append(zbus::Variant::from(k.clone()), boxed(v))
                        .unwrap();
                }
                zbus::Variant::Dict(dict)
            }
            J::Null => unreachable!("checked by carriable"),
        }
    }

    /// `Get`'s answer now: [`Nodes`] from [`Authority::get_each`], serialized as zbus
    /// serializes a reply's body, and read back.
    fn new_get(auth: &Authority, who: &Principal, uri: &str) -> Result<Answer, String> {
        let mut nodes = Nodes::default();
        auth.get_each(who, uri, |addr, leaf| nodes.push(addr, leaf))
            .map_err(|e| e.to_string())?;
        let body = to_bytes(Context::new(LE, 0), &nodes).unwrap();
        Ok(body.deserialize::<Answer>().unwrap().0)
    }

    fn value() -> impl Strategy<Value = Value> {
        let parsed = |f: Format, t: &str| Value::parse(f, t).unwrap();
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-1e12f64..1e12).prop_map(Value::Float),
            "[ -~\u{e9}\u{2603}\"\\\\\n]{0,12}".prop_map(Value::Chr),
            "[ -~]{0,12}".prop_map(Value::Xml),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::B64),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bin),
            Just(parsed(Format::Date, "2016-01-31")),
            Just(parsed(Format::Time, "10:00:00.5+01:00")),
            Just(Value::Json(
                serde_json::json!({"a": [1, "b", {"e": null}], "c": {"d": 1.5}, "f": null})
            )),
            Just(Value::Json(serde_json::json!([
                u64::MAX,
                -1,
                "x",
                true,
                []
            ]))),
            Just(Value::Json(serde_json::json!("text"))),
        ]
    }

    /// An instance's content: interior nodes and leaves of every format, a few levels deep.
    fn tree() -> impl Strategy<Value = Node> {
        let leaf = value().prop_map(Node::Leaf);
        leaf.prop_recursive(3, 30, 5, |inner| {
            proptest::collection::btree_map("[-.0A-Za-z]{1,3}", inner, 0..5)
                .prop_map(Node::Interior)
        })
        .prop_map(|n| match n {
            Node::Leaf(v) => Node::Interior(BTreeMap::from([("v".to_owned(), Node::Leaf(v))])),
            interior => interior,
        })
    }

    /// Who may read an instance of the test MOID: the reader owns it, holds Read on it by
    /// grant, or holds a right other than Read.
    #[derive(Clone, Copy, Debug)]
    enum Held {
        Owner,
        Read,
        WriteOnly,
    }

    struct Fixture {
        auth: Authority,
        pool: Arc<Pool>,
        _dir: tempfile::TempDir,
    }

    fn fixture(bounds: Bounds) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(
            Pool::open(&dir.path().join("store.db"), store::Bounds::default(), 1).unwrap(),
        );
        let auth = Authority::new(pool.clone(), Registry::with_builtin(), Box::new(|_| {}))
            .with_bounds(bounds);
        Fixture {
            auth,
            pool,
            _dir: dir,
        }
    }

    const READER: &str = "app:reader";

    /// The test MOID's instances, and a DM account (whose `Secret` is No-Get).
    fn fill(f: &Fixture, instances: &[(Node, Held)]) {
        f.pool
            .writer()
            .write(|tx| {
                for (i, (content, held)) in instances.iter().enumerate() {
                    let owner = match held {
                        Held::Owner => READER,
                        Held::Read | Held::WriteOnly => "app:other",
                    };
                    let root =
                        tx.create_instance(MOID, Some(&i.to_string()), "Root", content, owner)?;
                    match held {
                        Held::Owner => {}
                        Held::Read => tx.set_grant(&root, READER, Rights::READ, "admin")?,
                        Held::WriteOnly => tx.set_grant(&root, READER, Rights::WRITE, "admin")?,
                    }
                }
                Ok::<_, store::StoreError>(())
            })
            .unwrap();
        f.auth
            .create_instance(
                &Principal::Admin,
                builtin::DMACC,
                r#"{"DMAcc": {"SrvID": "s", "SrvURI": "https://x/", "Perm": {}, "Auth": {"Trsp": {"Data": "user", "Secret": "pw"}}}}"#,
            )
            .unwrap();
    }

    fn held() -> impl Strategy<Value = Held> {
        prop_oneof![Just(Held::Owner), Just(Held::Read), Just(Held::WriteOnly)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn get_answers_as_it_did_before_it_was_streamed(
            instances in proptest::collection::vec((tree(), held()), 1..5),
        ) {
            let f = fixture(Bounds::default());
            fill(&f, &instances);
            let reader = Principal::App("reader".into());
            let uris = [
                format!("{MOID}/*"),
                format!("{MOID}/*/*"),
                format!("{MOID}/*/*/*"),
                format!("{MOID}/*/*/*/*"),
                format!("{MOID}/0/"),
                format!("{MOID}/0/v"),
                format!("{}/*/*", builtin::DMACC),
                format!("{}/*/Auth/Trsp/*", builtin::DMACC),
                format!("{}/*/Auth/Trsp/Secret", builtin::DMACC),
            ];
            for who in [&Principal::Admin, &reader] {
                for uri in &uris {
                    prop_assert_eq!(
                        new_get(&f.auth, who, uri),
                        old_get(&f.auth, who, uri),
                        "{} as {}", uri, who
                    );
                }
            }
        }
    }

    #[test]
    fn an_oversized_answer_ends_with_the_same_error() {
        let content = Node::Interior(
            (0..50)
                .map(|i| (format!("L{i:02}"), Node::Leaf(Value::Chr("x".repeat(100)))))
                .collect(),
        );
        for bounds in [
            Bounds {
                reply_bytes: 2_000,
                ..Bounds::default()
            },
            Bounds {
                result_rows: 30,
                ..Bounds::default()
            },
        ] {
            let f = fixture(bounds);
            fill(&f, &[(content.clone(), Held::Owner)]);
            let uri = format!("{MOID}/*/*");
            let old = old_get(&f.auth, &Principal::Admin, &uri).unwrap_err();
            assert!(old.contains("[limits]"), "{old}");
            assert_eq!(new_get(&f.auth, &Principal::Admin, &uri).unwrap_err(), old);
        }
    }

    #[test]
    fn a_value_d_bus_cannot_carry_ends_the_read_naming_it() {
        let deep = (0..=variant::JSON_DEPTH)
            .fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]));
        let cases = [
            (
                Value::Json(serde_json::json!([1, null])),
                "null in an array",
            ),
            (
                Value::Json(serde_json::Value::Null),
                "null as the whole value",
            ),
            (Value::Json(deep), "deeper than"),
            (Value::Json(serde_json::json!({"k": "a\u{0}b"})), "U+0000"),
            (Value::Chr("a\u{0}b".into()), "U+0000"),
        ];
        for (value, reason) in cases {
            let f = fixture(Bounds::default());
            let content = Node::Interior(BTreeMap::from([
                ("A".to_owned(), Node::Leaf(Value::Int(1))),
                ("V".to_owned(), Node::Leaf(value.clone())),
            ]));
            fill(&f, &[(content, Held::Owner)]);
            let err = new_get(&f.auth, &Principal::Admin, &format!("{MOID}/*/*")).unwrap_err();
            assert!(
                err.contains(&format!("{MOID}/0/V: its value"))
                    && err.contains(reason)
                    && err.ends_with("read it with GetJson"),
                "{value:?}: {err}"
            );
            let json = f
                .auth
                .get_json(&Principal::Admin, &*format!("{MOID}/0/V"))
                .unwrap();
            let items: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(items[0]["MOData"]["V"], value.to_json(), "{value:?}");
        }
    }

    #[test]
    fn a_json_values_containers_count_against_the_reply_bound() {
        // 300 small numbers: 600 bytes of text, near 16 bytes each as variants in an `av`.
        let numbers = serde_json::Value::Array(vec![serde_json::json!(7); 300]);
        let content = Node::Interior(BTreeMap::from([(
            "V".to_owned(),
            Node::Leaf(Value::Json(numbers.clone())),
        )]));
        let uri = format!("{MOID}/0/V");
        let f = fixture(Bounds {
            reply_bytes: 2_000,
            ..Bounds::default()
        });
        fill(&f, &[(content.clone(), Held::Owner)]);
        assert!(f.auth.get_json(&Principal::Admin, &*uri).is_ok());
        let err = new_get(&f.auth, &Principal::Admin, &uri).unwrap_err();
        assert!(err.contains("[limits] reply_bytes"), "{err}");
        let f = fixture(Bounds {
            reply_bytes: 8_000,
            ..Bounds::default()
        });
        fill(&f, &[(content, Held::Owner)]);
        let answer = new_get(&f.auth, &Principal::Admin, &uri).unwrap();
        assert_eq!(variant::to_json(&answer[0].2).unwrap(), numbers);
    }

    #[test]
    fn the_signature_is_the_interfaces() {
        assert_eq!(Nodes::SIGNATURE.to_string(), "a(ssv)");
    }
}
