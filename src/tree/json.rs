//! The DM 2.0 MO serialization (PROTOCOL.md §7): a JSON array of items, each naming a
//! ClientURI and carrying the subtree there as nested objects keyed by node name.
//!
//! Leaf values are JSON strings, numbers, booleans or null by format; `b64`/`bin` are base64
//! strings; the constructed `json` format is any JSON value. Reading needs the node's
//! definition to tell a `json` leaf holding an object from an interior node; without a
//! definition, objects are interior nodes and other values get the format their JSON type
//! suggests (string → chr, integer → int, other number → float, boolean → bool, null →
//! null, array → json).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as J};

use super::format::Format;
use super::mo_type::NodeDef;
use super::node::{Node, check_name};
use super::value::Value;

/// One item of an MO serialization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoItem {
    #[serde(rename = "DDF", default, skip_serializing_if = "Option::is_none")]
    pub ddf: Option<String>,
    #[serde(rename = "ClientURI")]
    pub client_uri: String,
    #[serde(rename = "CV", default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<String>,
    /// Exactly one key: the name of the addressed node, holding its subtree or value.
    #[serde(rename = "MOData")]
    pub mo_data: Map<String, J>,
}

/// Why an MO serialization could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("not an MO serialization: {0}")]
    Syntax(String),
    #[error("MOData of {uri} must hold exactly one node, found {count}")]
    MoDataKeys { uri: String, count: usize },
    #[error("{path}: {reason}")]
    Node { path: String, reason: String },
}

impl MoItem {
    /// The item for the node `name` (its subtree or value) at `client_uri`.
    pub fn new(client_uri: String, name: &str, node: &Node) -> MoItem {
        let mut mo_data = Map::new();
        mo_data.insert(name.to_owned(), node_to_json(node));
        MoItem {
            ddf: None,
            client_uri,
            cv: None,
            mo_data,
        }
    }

    /// The one node of `MOData`: its name and its JSON.
    pub fn single(&self) -> Result<(&str, &J), JsonError> {
        let mut it = self.mo_data.iter();
        match (it.next(), it.next()) {
            (Some((name, json)), None) => Ok((name, json)),
            _ => Err(JsonError::MoDataKeys {
                uri: self.client_uri.clone(),
                count: self.mo_data.len(),
            }),
        }
    }
}

/// Parses an MO serialization (a JSON array of items).
pub fn parse_items(text: &str) -> Result<Vec<MoItem>, JsonError> {
    serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))
}

/// The JSON form of a subtree or leaf.
pub fn node_to_json(node: &Node) -> J {
    match node {
        Node::Leaf(v) => v.to_json(),
        Node::Interior(children) => J::Object(
            children
                .iter()
                .map(|(name, child)| (name.clone(), node_to_json(child)))
                .collect(),
        ),
    }
}

/// Reads a subtree or leaf; `def` (the node's DDF definition) decides formats where given.
/// `path` names the node in error messages.
pub fn node_from_json(json: &J, def: Option<&NodeDef>, path: &str) -> Result<Node, JsonError> {
    let fail = |reason: String| JsonError::Node {
        path: path.to_owned(),
        reason,
    };
    let format = match def {
        Some(d) => d.format,
        None => infer_format(json),
    };
    if format != Format::Node {
        return Value::from_json(format, json)
            .map(Node::Leaf)
            .map_err(|e| fail(e.to_string()));
    }
    let J::Object(map) = json else {
        return Err(fail("is an interior node and must be a JSON object".into()));
    };
    let mut children = BTreeMap::new();
    for (name, child) in map {
        let child_path = format!("{path}/{name}");
        check_name(name).map_err(|e| JsonError::Node {
            path: child_path.clone(),
            reason: e.to_string(),
        })?;
        let child_def = match def {
            Some(d) => Some(d.child(name).ok_or_else(|| JsonError::Node {
                path: child_path.clone(),
                reason: "is not a node of this MO type".into(),
            })?),
            None => None,
        };
        children.insert(name.clone(), node_from_json(child, child_def, &child_path)?);
    }
    Ok(Node::Interior(children))
}

fn infer_format(json: &J) -> Format {
    match json {
        J::Null => Format::Null,
        J::Bool(_) => Format::Bool,
        J::Number(n) if n.is_i64() => Format::Int,
        J::Number(_) => Format::Float,
        J::String(_) => Format::Chr,
        J::Array(_) => Format::Json,
        J::Object(_) => Format::Node,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tree::mo_type::{AccessTypes, DefName, Occurrence, Scope};
    use crate::tree::value::{Date, Time};

    /// A definition that describes `node` exactly (fixed names, its formats).
    fn def_of(name: &str, node: &Node) -> NodeDef {
        let (format, children) = match node {
            Node::Leaf(v) => (v.format(), vec![]),
            Node::Interior(c) => (Format::Node, c.iter().map(|(n, c)| def_of(n, c)).collect()),
        };
        NodeDef {
            name: DefName::Fixed(name.into()),
            format,
            access: AccessTypes::ALL,
            occurrence: Occurrence::ZeroOrOne,
            scope: Scope::Dynamic,
            default: None,
            description: None,
            title: None,
            case_sensitive: true,
            mime: None,
            type_name: None,
            children,
        }
    }

    fn leaf() -> impl Strategy<Value = Value> {
        let json = prop_oneof![
            any::<i64>().prop_map(J::from),
            "[a-z ]{0,6}".prop_map(J::from),
            any::<bool>().prop_map(J::from),
        ];
        prop_oneof![
            Just(Value::Null),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::B64),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bin),
            any::<bool>().prop_map(Value::Bool),
            ".{0,12}".prop_map(Value::Chr),
            any::<i64>().prop_map(Value::Int),
            "<a>[a-z]{0,4}</a>".prop_map(Value::Xml),
            (1000u32..9999, 1u32..13, 1u32..29).prop_map(|(y, m, d)| Value::Date(
                Date::parse(&format!("{y:04}-{m:02}-{d:02}")).unwrap()
            )),
            (0u32..24, 0u32..60, 0u32..60).prop_map(|(h, m, s)| Value::Time(
                Time::parse(&format!("{h:02}:{m:02}:{s:02}Z")).unwrap()
            )),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            proptest::collection::vec(json, 0..4).prop_map(|v| Value::Json(J::Array(v))),
        ]
    }

    fn tree() -> impl Strategy<Value = Node> {
        leaf()
            .prop_map(Node::Leaf)
            .prop_recursive(4, 48, 6, |inner| {
                let name =
                    "[A-Za-z0-9 _.-]{1,8}".prop_filter("valid name", |n| check_name(n).is_ok());
                proptest::collection::btree_map(name, inner, 0..6).prop_map(Node::Interior)
            })
    }

    proptest! {
        #[test]
        fn round_trips_through_json_text_with_its_definition(node in tree()) {
            let item = MoItem::new("urn:x:1.0/m/".into(), "Root", &node);
            let text = serde_json::to_string(&vec![item]).unwrap();
            let items = parse_items(&text).unwrap();
            let (name, json) = items[0].single().unwrap();
            prop_assert_eq!(name, "Root");
            let def = def_of("Root", &node);
            prop_assert_eq!(node_from_json(json, Some(&def), "Root").unwrap(), node);
        }
    }

    #[test]
    fn inference_without_a_definition() {
        let json = serde_json::json!({"a": "x", "b": 3, "c": 1.5, "d": true, "e": null, "f": [1], "g": {}});
        let node = node_from_json(&json, None, "R").unwrap();
        let formats: Vec<_> = match &node {
            Node::Interior(c) => c
                .values()
                .map(|n| match n {
                    Node::Leaf(v) => v.format(),
                    Node::Interior(_) => Format::Node,
                })
                .collect(),
            Node::Leaf(_) => unreachable!(),
        };
        let want = [
            Format::Chr,
            Format::Int,
            Format::Float,
            Format::Bool,
            Format::Null,
            Format::Json,
            Format::Node,
        ];
        assert_eq!(formats, want);
        assert_eq!(node_to_json(&node), json);
    }

    #[test]
    fn errors_name_the_node() {
        let root = def_of(
            "R",
            &Node::Interior(BTreeMap::from([(
                "n".to_owned(),
                Node::Leaf(Value::Int(1)),
            )])),
        );
        let err = node_from_json(&serde_json::json!({"n": "one"}), Some(&root), "R").unwrap_err();
        assert_eq!(
            err.to_string(),
            "R/n: int value must be given as JSON integer, got a string"
        );
        let err = node_from_json(&serde_json::json!({"m": 1}), Some(&root), "R").unwrap_err();
        assert_eq!(err.to_string(), "R/m: is not a node of this MO type");
        let err = node_from_json(&serde_json::json!({"a/b": 1}), None, "R").unwrap_err();
        assert!(err.to_string().starts_with("R/a/b: "), "{err}");
        let err = node_from_json(&serde_json::json!(3), Some(&root), "R").unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"));
        let err = parse_items(r#"[{"ClientURI":"u","MOData":{},"X":1}]"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let items = parse_items(r#"[{"ClientURI":"u","MOData":{"a":1,"b":2}}]"#).unwrap();
        assert!(
            items[0]
                .single()
                .unwrap_err()
                .to_string()
                .contains("found 2")
        );
    }
}
