//! The indented tree view of an MO serialization (`omadmctl tree`): one tree per item,
//! headed by its ClientURI and cache validator, with each leaf's value and, unless it is chr,
//! its format.
//!
//! The serialization carries JSON types only, so the formats come from Get: one call per
//! depth level below each item (`<item>/*`, `<item>/*/*`, ...), see [`format_queries`].

use std::collections::HashMap;

use serde_json::Value as J;

use omadmd::tree::json::MoItem;
use omadmd::tree::uri::{ClientUri, InstanceSel, NodeAddr, Segment};

use crate::output::one_line;

/// Node formats by ClientURI, as Get reported them.
pub type Formats = HashMap<String, String>;

/// The Get queries that report the format of every node of `item`: the item itself, then
/// every level below it.
pub fn format_queries(item: &MoItem) -> Vec<String> {
    let depth = item.mo_data.values().map(depth).max().unwrap_or(0);
    let mut queries = vec![item.client_uri.clone()];
    let mut uri = item.client_uri.clone();
    for _ in 0..depth {
        if !uri.ends_with('/') {
            uri.push('/');
        }
        uri.push('*');
        queries.push(uri.clone());
    }
    queries
}

/// How many levels of interior nodes `json` has.
fn depth(json: &J) -> usize {
    match json {
        J::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Renders every item as a tree; `color` dims formats and cache validators with ANSI
/// escapes (else they are only bracketed).
pub fn render(items: &[MoItem], formats: &Formats, color: bool) -> String {
    let view = View { formats, color };
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&item.client_uri);
        if let Some(cv) = &item.cv {
            out.push_str("  ");
            out.push_str(&view.dim(&format!("[CV {cv}]")));
        }
        out.push('\n');
        let addr = node_addr(&item.client_uri);
        for (name, json) in &item.mo_data {
            view.node(&mut out, name, json, addr.as_ref(), "", None);
        }
    }
    out
}

/// The address of the node a concrete ClientURI names.
fn node_addr(client_uri: &str) -> Option<NodeAddr> {
    let uri = ClientUri::parse(client_uri).ok()?;
    let InstanceSel::Miid(miid) = &uri.instance else {
        return None;
    };
    let mut addr = NodeAddr::root(&uri.moid, miid);
    for segment in &uri.path {
        match segment {
            Segment::Name(name) => addr = addr.child(name),
            _ => return None,
        }
    }
    Some(addr)
}

struct View<'a> {
    formats: &'a Formats,
    color: bool,
}

impl View<'_> {
    /// Renders `name` and its subtree. `indent` is the prefix of its children's lines;
    /// `last` is None for an item's top node, else whether it is its parent's last child.
    fn node(
        &self,
        out: &mut String,
        name: &str,
        json: &J,
        addr: Option<&NodeAddr>,
        indent: &str,
        last: Option<bool>,
    ) {
        let (branch, child_indent) = match last {
            None => ("", indent.to_owned()),
            Some(true) => ("└── ", format!("{indent}    ")),
            Some(false) => ("├── ", format!("{indent}│   ")),
        };
        out.push_str(indent);
        out.push_str(branch);
        let format = addr.and_then(|a| self.formats.get(&a.to_string()).map(String::as_str));
        match (json, format) {
            (J::Object(children), None | Some("node")) => {
                out.push_str(name);
                out.push_str("/\n");
                let count = children.len();
                for (i, (child, child_json)) in children.iter().enumerate() {
                    let child_addr = addr.map(|a| a.child(child));
                    self.node(
                        out,
                        child,
                        child_json,
                        child_addr.as_ref(),
                        &child_indent,
                        Some(i + 1 == count),
                    );
                }
            }
            (leaf, format) => {
                let format = format.unwrap_or_else(|| inferred_format(leaf));
                out.push_str(name);
                out.push_str(": ");
                out.push_str(&leaf_text(leaf));
                if format != "chr" {
                    out.push(' ');
                    out.push_str(&self.dim(&format!("[{format}]")));
                }
                out.push('\n');
            }
        }
    }

    fn dim(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[2m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// A leaf's value on one line: strings as they are (empty as ""), anything else as JSON.
fn leaf_text(json: &J) -> String {
    match json {
        J::String(s) if s.is_empty() => "\"\"".to_owned(),
        J::String(s) => one_line(s),
        other => other.to_string(),
    }
}

/// The format a leaf's JSON type suggests, when Get did not tell.
fn inferred_format(json: &J) -> &'static str {
    match json {
        J::Null => "null",
        J::Bool(_) => "bool",
        J::Number(n) if n.is_i64() || n.is_u64() => "int",
        J::Number(_) => "float",
        J::String(_) => "chr",
        J::Array(_) | J::Object(_) => "json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> MoItem {
        omadmd::tree::json::parse_items(
            r#"[{"ClientURI":"urn:oma:mo:x:1.0/1/","CV":"abc","MOData":{"X":{"A":{"B":"AAEC"},"N":5,"S":"s"}}}]"#,
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn queries_cover_every_level() {
        assert_eq!(
            format_queries(&item()),
            [
                "urn:oma:mo:x:1.0/1/",
                "urn:oma:mo:x:1.0/1/*",
                "urn:oma:mo:x:1.0/1/*/*"
            ]
        );
    }

    #[test]
    fn renders_an_indented_tree_with_formats() {
        let formats: Formats = [("urn:oma:mo:x:1.0/1/A/B".to_owned(), "b64".to_owned())].into();
        let text = render(&[item()], &formats, false);
        assert_eq!(
            text,
            "urn:oma:mo:x:1.0/1/  [CV abc]\nX/\n├── A/\n│   └── B: AAEC [b64]\n├── N: 5 [int]\n└── S: s\n"
        );
    }
}
