//! Values of the `json` format (the constructed format, DM-HLF-024) as D-Bus variants, both
//! ways: what `Get` writes for a json node ([`AsVariant`], checked first by [`carriable`])
//! and what `Set` reads from one ([`to_json`]).
//!
//! | JSON | variant |
//! |---|---|
//! | object | `a{sv}`; members whose value is null are left out |
//! | array | `av` |
//! | string | `s` |
//! | true, false | `b` |
//! | integer | `x`; one above the range of `x` (up to 2⁶⁴−1) as `t` |
//! | other number | `d` |
//!
//! D-Bus has no null: a null anywhere but as an object member cannot be carried (such a
//! value is read with `GetJson`), and no variant reads as one. Nor can a D-Bus string hold
//! U+0000. Nesting is held to [`JSON_DEPTH`] objects and arrays both ways: the deepest that
//! a `Get` answer can carry (each object takes three of the 64 containers a D-Bus value may
//! be in: its array, dict entry and the member's variant).
//!
//! Read back, `a{s…}` dictionaries are objects; arrays of any type (`av`, `as`, `ax`, `ay`,
//! `aa{sv}`, …) are arrays; `s`, `b`, `d` and every integer type (`y`, `n`, `q`, `i`, `u`,
//! `x`, `t`) are scalars; a variant holding a variant is what it holds. Structs, object
//! paths, signatures and file descriptors have no JSON form.
//!
//! Both ways are bounded: [`carriable`] walks without recursion, and [`to_json`] recurses
//! at most [`MAX_LEVELS`] deep (the containers a D-Bus value may be in).

use serde::ser::SerializeStruct as _;
use serde::ser::{Error as _, Serialize, SerializeMap as _, SerializeSeq as _, Serializer};
use serde_json::Value as J;
use zbus::{Signature, Type, Variant};

pub use crate::authority::JSON_DEPTH;

/// Most containers and variants [`to_json`] descends through: the D-Bus limit on the
/// containers one value may be in.
pub const MAX_LEVELS: usize = 64;

/// Why a JSON value cannot travel as a variant, or a variant cannot be read as JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VariantError {
    #[error("holds a null {0}, which a D-Bus variant cannot carry")]
    Null(&'static str),
    #[error("nests objects and arrays deeper than {JSON_DEPTH}")]
    TooDeep,
    #[error("holds a string with U+0000, which a D-Bus string cannot carry")]
    Nul,
    #[error("holds a D-Bus value of type {0}, which has no JSON form")]
    NoJsonForm(String),
    #[error("holds a dictionary keyed by {0}: JSON objects are keyed by strings (a{{s…}})")]
    Key(String),
    #[error("holds the double {0}, which is not a finite number")]
    NotFinite(f64),
}

/// Whether `json` can be carried as a variant: no null but as an object member, no
/// U+0000, at most [`JSON_DEPTH`] deep. Answers the most bytes its variant takes in a
/// message (signatures, lengths, alignment padding). Walks without recursion.
pub fn carriable(json: &J) -> Result<usize, VariantError> {
    let mut bytes = 0usize;
    // (value, objects and arrays around it, whether it is an object member's value)
    let mut stack = vec![(json, 0usize, false)];
    while let Some((value, depth, member)) = stack.pop() {
        // The variant's signature: its length byte, the signature and its NUL.
        bytes += 2 + signature(value).map_or(0, |s| s.string_len());
        bytes += match value {
            J::Null if member => 0,
            J::Null if depth == 0 => return Err(VariantError::Null("as the whole value")),
            J::Null => return Err(VariantError::Null("in an array")),
            // Padding to 4, then the value.
            J::Bool(_) => 3 + 4,
            // Padding to 8, then the value.
            J::Number(_) => 7 + 8,
            J::String(s) => text_len(s)?,
            J::Array(items) => {
                if depth == JSON_DEPTH {
                    return Err(VariantError::TooDeep);
                }
                stack.extend(items.iter().map(|i| (i, depth + 1, false)));
                // Padding to 4, the length; variants need no alignment.
                3 + 4
            }
            J::Object(members) => {
                if depth == JSON_DEPTH {
                    return Err(VariantError::TooDeep);
                }
                let mut entries = 0usize;
                for (key, v) in members.iter().filter(|(_, v)| !v.is_null()) {
                    // Each dict entry is aligned to 8 and starts with its key.
                    entries += 7 + text_len(key)?;
                    stack.push((v, depth + 1, true));
                }
                // Padding to 4, the length, padding to 8 for the first entry.
                3 + 4 + 7 + entries
            }
        };
    }
    Ok(bytes)
}

/// A string's bytes in a message (padding to 4, length, text, NUL); refused if it holds
/// U+0000.
fn text_len(s: &str) -> Result<usize, VariantError> {
    if s.contains('\0') {
        return Err(VariantError::Nul);
    }
    Ok(3 + 4 + s.len() + 1)
}

/// The signature of `json`'s variant (`None` for null, which has none).
fn signature(json: &J) -> Option<&'static Signature> {
    Some(match json {
        J::Null => return None,
        J::Bool(_) => bool::SIGNATURE,
        J::Number(n) if n.is_i64() => i64::SIGNATURE,
        J::Number(n) if n.is_u64() => u64::SIGNATURE,
        J::Number(_) => f64::SIGNATURE,
        J::String(_) => <&str>::SIGNATURE,
        J::Array(_) => <Vec<Variant<'static>>>::SIGNATURE,
        J::Object(_) => <std::collections::HashMap<&str, Variant<'static>>>::SIGNATURE,
    })
}

/// A JSON value serialized as a D-Bus variant, as the table above says. [`carriable`]
/// must have accepted it: a null that cannot be left out, or a string with U+0000, fails
/// the serialization.
pub struct AsVariant<'a>(pub &'a J);

impl Type for AsVariant<'_> {
    const SIGNATURE: &'static Signature = &Signature::Variant;
}

impl Serialize for AsVariant<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let signature =
            signature(self.0).ok_or_else(|| S::Error::custom("a JSON null has no D-Bus form"))?;
        // A variant is serialized as a struct of its signature and its value, as zbus's own.
        let mut variant = serializer.serialize_struct("Variant", 2)?;
        variant.serialize_field("signature", signature)?;
        variant.serialize_field("value", &Body(self.0))?;
        variant.end()
    }
}

/// The value inside [`AsVariant`].
struct Body<'a>(&'a J);

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            J::Null => Err(S::Error::custom("a JSON null has no D-Bus form")),
            J::Bool(b) => serializer.serialize_bool(*b),
            J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => serializer.serialize_i64(i),
                (None, Some(u), _) => serializer.serialize_u64(u),
                (None, None, Some(f)) => serializer.serialize_f64(f),
                (None, None, None) => Err(S::Error::custom(format!("the number {n}"))),
            },
            J::String(s) if s.contains('\0') => Err(S::Error::custom(VariantError::Nul)),
            J::String(s) => serializer.serialize_str(s),
            J::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&AsVariant(item))?;
                }
                seq.end()
            }
            J::Object(members) => {
                let present = || members.iter().filter(|(_, v)| !v.is_null());
                let mut map = serializer.serialize_map(Some(present().count()))?;
                for (key, value) in present() {
                    if key.contains('\0') {
                        return Err(S::Error::custom(VariantError::Nul));
                    }
                    map.serialize_entry(key.as_str(), &AsVariant(value))?;
                }
                map.end()
            }
        }
    }
}

/// Reads a variant's value as JSON (the table above, read back): never a null, at most
/// [`JSON_DEPTH`] objects and arrays deep.
pub fn to_json(value: &Variant<'_>) -> Result<J, VariantError> {
    read(value, 0, 0)
}

/// [`to_json`] of a value inside `depth` objects and arrays and `levels` containers and
/// variants.
fn read(value: &Variant<'_>, depth: usize, levels: usize) -> Result<J, VariantError> {
    if levels >= MAX_LEVELS {
        return Err(VariantError::TooDeep);
    }
    let container = || {
        if depth == JSON_DEPTH {
            Err(VariantError::TooDeep)
        } else {
            Ok(depth + 1)
        }
    };
    Ok(match value {
        Variant::Bool(b) => J::Bool(*b),
        Variant::U8(i) => J::from(*i),
        Variant::I16(i) => J::from(*i),
        Variant::U16(i) => J::from(*i),
        Variant::I32(i) => J::from(*i),
        Variant::U32(i) => J::from(*i),
        Variant::I64(i) => J::from(*i),
        Variant::U64(i) => J::from(*i),
        Variant::F64(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or(VariantError::NotFinite(*f))?,
        Variant::Str(s) if s.as_str().contains('\0') => return Err(VariantError::Nul),
        Variant::Str(s) => J::String(s.to_string()),
        Variant::Variant(inner) => read(inner, depth, levels + 1)?,
        Variant::Array(items) => {
            let depth = container()?;
            J::Array(
                items
                    .iter()
                    .map(|i| read(i, depth, levels + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        Variant::Dict(dict) => {
            let depth = container()?;
            let mut members = serde_json::Map::new();
            for (key, v) in dict.iter() {
                let Variant::Str(key) = key else {
                    return Err(VariantError::Key(key.value_signature().to_string()));
                };
                if key.as_str().contains('\0') {
                    return Err(VariantError::Nul);
                }
                members.insert(key.to_string(), read(v, depth, levels + 1)?);
            }
            J::Object(members)
        }
        other => {
            return Err(VariantError::NoJsonForm(
                other.value_signature().to_string(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;
    use zbus::OwnedVariant;
    use zbus::wire::serialized::Context;
    use zbus::wire::{LE, to_bytes};

    use super::*;

    /// `json` as `Get` sends it, in its reply's `a(ssv)`, read back as a variant.
    fn sent(json: &J) -> Result<OwnedVariant, zbus::Error> {
        let body = vec![("u", "json", AsVariant(json))];
        let bytes = to_bytes(Context::new(LE, 0), &body)?;
        let mut got: Vec<(String, String, OwnedVariant)> = bytes.deserialize()?.0;
        Ok(got.remove(0).2)
    }

    /// `json` through `Get` and back through `Set`'s reading.
    fn round_trip(json: &J) -> J {
        carriable(json).unwrap();
        to_json(&sent(json).unwrap()).unwrap()
    }

    /// JSON without nulls, objects and arrays a few levels deep.
    fn json_without_null() -> impl Strategy<Value = J> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(J::Bool),
            any::<i64>().prop_map(J::from),
            any::<u64>().prop_map(J::from),
            any::<f64>()
                .prop_filter_map("finite", serde_json::Number::from_f64)
                .prop_map(J::Number),
            "[ -~\u{e9}\u{2603}\n]{0,8}".prop_map(J::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(J::Array),
                proptest::collection::btree_map("[ -~]{0,6}", inner, 0..6)
                    .prop_map(|m: BTreeMap<String, J>| J::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn json_without_nulls_round_trips(json in json_without_null()) {
            prop_assert_eq!(round_trip(&json), json.clone());
        }

        #[test]
        fn the_size_bound_holds(json in json_without_null()) {
            let alone = to_bytes(Context::new(LE, 0), &AsVariant(&json)).unwrap();
            prop_assert!(alone.len() <= carriable(&json).unwrap());
        }
    }

    #[test]
    fn each_json_type_has_its_signature() {
        let cases = [
            (json!({"a": 1}), "a{sv}"),
            (json!([1, "b"]), "av"),
            (json!("s"), "s"),
            (json!(true), "b"),
            (json!(-3), "x"),
            (json!(u64::MAX), "t"),
            (json!(1.5), "d"),
            (json!(2.0), "d"),
        ];
        for (json, signature) in cases {
            let got = sent(&json).unwrap();
            assert_eq!(got.value_signature().to_string(), signature, "{json}");
            assert_eq!(to_json(&got).unwrap(), json);
        }
        let got = sent(&json!({"a": {"b": [1]}})).unwrap();
        let Variant::Dict(outer) = &*got else {
            panic!("{got:?}")
        };
        let (_, a) = outer.iter().next().unwrap();
        let Variant::Variant(a) = a else {
            panic!("{a:?}")
        };
        assert_eq!(a.value_signature().to_string(), "a{sv}");
    }

    #[test]
    fn null_members_are_left_out_and_other_nulls_refused() {
        let json = json!({"a": null, "b": {"c": null, "d": 1}, "e": [{"f": null}]});
        assert_eq!(round_trip(&json), json!({"b": {"d": 1}, "e": [{}]}));
        assert_eq!(
            carriable(&json!(null)),
            Err(VariantError::Null("as the whole value"))
        );
        assert_eq!(
            carriable(&json!({"a": [1, null]})),
            Err(VariantError::Null("in an array"))
        );
        assert!(sent(&json!([null])).is_err());
    }

    #[test]
    fn strings_with_nul_are_refused() {
        assert_eq!(carriable(&json!(["a\u{0}b"])), Err(VariantError::Nul));
        assert_eq!(carriable(&json!({"k\u{0}": 1})), Err(VariantError::Nul));
        // A member left out does not need its key carried.
        assert!(carriable(&json!({"k\u{0}": null})).is_ok());
        assert_eq!(to_json(&Variant::from("a\u{0}b")), Err(VariantError::Nul));
    }

    /// Objects `depth` deep around a string.
    fn nested(depth: usize) -> J {
        (0..depth).fold(json!("x"), |inner, _| json!({ "n": inner }))
    }

    #[test]
    fn the_depth_bound_is_what_a_get_answer_carries() {
        // As deep as the bound, objects (the deepest kind) fit in Get's answer...
        assert_eq!(round_trip(&nested(JSON_DEPTH)), nested(JSON_DEPTH));
        let arrays = (0..JSON_DEPTH).fold(json!(1), |inner, _| json!([inner]));
        assert_eq!(round_trip(&arrays), arrays);
        // ...one level more is refused, and D-Bus would not have carried it anyway.
        let deeper = nested(JSON_DEPTH + 1);
        assert_eq!(carriable(&deeper), Err(VariantError::TooDeep));
        assert!(matches!(
            sent(&deeper),
            Err(zbus::Error::MaxDepthExceeded(_))
        ));
        let empty_deeper = (0..JSON_DEPTH).fold(json!({}), |inner, _| json!({ "n": inner }));
        assert_eq!(carriable(&empty_deeper), Err(VariantError::TooDeep));
    }

    #[test]
    fn the_interface_states_the_bound() {
        let contract = include_str!("../../dbus/org.omadm.Client1.xml");
        let stated = format!("more than {JSON_DEPTH} deep");
        assert_eq!(contract.matches(&stated).count(), 2, "{stated}");
    }

    #[test]
    fn reading_refuses_values_too_deep_without_deep_recursion() {
        // One level beyond the bound, as a variant built in memory.
        let mut deep = Variant::from("x");
        for _ in 0..=JSON_DEPTH {
            deep = Variant::from(vec![deep]);
        }
        assert_eq!(to_json(&deep), Err(VariantError::TooDeep));
        // Variants in variants count towards the levels read.
        let mut wrapped = Variant::from(1i64);
        for _ in 0..MAX_LEVELS {
            wrapped = Variant::Variant(Box::new(wrapped));
        }
        assert_eq!(to_json(&wrapped), Err(VariantError::TooDeep));
    }

    #[test]
    fn variants_of_every_json_kind_are_read() {
        let mut dict = std::collections::HashMap::new();
        dict.insert("n", 7u32);
        let cases = [
            (Variant::from(dict), json!({"n": 7})),
            (Variant::from(vec!["a", "b"]), json!(["a", "b"])),
            (Variant::from(vec![1u8, 2]), json!([1, 2])),
            (Variant::from(-2i16), json!(-2)),
            (Variant::from(3u16), json!(3)),
            (Variant::from(-4i32), json!(-4)),
            (Variant::from(5u8), json!(5)),
            (Variant::from(u64::MAX), json!(u64::MAX)),
            (Variant::from(0.25), json!(0.25)),
            (Variant::Variant(Box::new(Variant::from("t"))), json!("t")),
        ];
        for (variant, json) in cases {
            assert_eq!(to_json(&variant).unwrap(), json, "{variant:?}");
        }
    }

    #[test]
    fn variants_without_a_json_form_are_refused() {
        let mut by_int = std::collections::HashMap::new();
        by_int.insert(1i32, "a");
        assert_eq!(
            to_json(&Variant::from(by_int)),
            Err(VariantError::Key("i".into()))
        );
        assert_eq!(
            to_json(&Variant::from((1i32, "a"))),
            Err(VariantError::NoJsonForm("(is)".into()))
        );
        let path = zbus::ObjectPath::try_from("/a").unwrap();
        assert_eq!(
            to_json(&Variant::from(path)),
            Err(VariantError::NoJsonForm("o".into()))
        );
        assert!(matches!(
            to_json(&Variant::from(f64::INFINITY)),
            Err(VariantError::NotFinite(f)) if f.is_infinite()
        ));
    }
}
