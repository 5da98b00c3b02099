//! MO types: what a DDF says about each node of a Management Object, and checking an
//! instance against it.

use std::fmt;

use super::format::Format;
use super::node::Node;

/// The description of one node (and, through `children`, of its subtree).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeDef {
    pub name: DefName,
    pub format: Format,
    pub access: AccessTypes,
    pub occurrence: Occurrence,
    pub scope: Scope,
    pub default: Option<String>,
    pub description: Option<String>,
    pub title: Option<String>,
    pub case_sensitive: bool,
    /// `DFType/MIME`, when given.
    pub mime: Option<String>,
    /// `DFType/DDFName`: on an MO root this is the MOID.
    pub type_name: Option<String>,
    pub children: Vec<NodeDef>,
}

/// A node's name in a DDF: fixed, or a placeholder for names chosen at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefName {
    Fixed(String),
    /// Written as `<x>`, `*`, or left empty in the DDF; the text is kept for display.
    Placeholder(String),
}

/// The DDF `AccessType` set. A node without `Get` is "No-Get": its value is never
/// returned to anyone (secrets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AccessTypes(u8);

/// The DDF `Occurrence` of a node among its siblings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occurrence {
    One,
    ZeroOrOne,
    ZeroOrMore,
    OneOrMore,
    ZeroOrN(u32),
    OneOrN(u32),
}

/// The DDF `Scope`: permanent nodes cannot be created, deleted or renamed by a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Permanent,
    Dynamic,
}

/// An MO type: a MOID and the definition of its root node.
#[derive(Clone, Debug, PartialEq)]
pub struct MoType {
    pub moid: String,
    pub root: NodeDef,
}

/// One way an instance does not fit its MO type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Path of the offending node below the root (empty for the root).
    pub path: String,
    pub reason: String,
}

impl AccessTypes {
    pub const ADD: AccessTypes = AccessTypes(1);
    pub const DELETE: AccessTypes = AccessTypes(2);
    pub const EXEC: AccessTypes = AccessTypes(4);
    pub const GET: AccessTypes = AccessTypes(8);
    pub const REPLACE: AccessTypes = AccessTypes(16);
    /// Every access type.
    pub const ALL: AccessTypes = AccessTypes(31);

    const NAMES: [(AccessTypes, &'static str); 5] = [
        (Self::ADD, "Add"),
        (Self::DELETE, "Delete"),
        (Self::EXEC, "Exec"),
        (Self::GET, "Get"),
        (Self::REPLACE, "Replace"),
    ];

    /// The set with no access type.
    pub fn empty() -> AccessTypes {
        AccessTypes(0)
    }

    /// The access type named as in a DDF (`Add`, `Delete`, `Exec`, `Get`, `Replace`).
    pub fn from_name(name: &str) -> Option<AccessTypes> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(a, _)| *a)
    }

    pub fn contains(self, other: AccessTypes) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: AccessTypes) {
        self.0 |= other.0;
    }

    /// True when the node's value must never be returned (no `Get`).
    pub fn is_no_get(self) -> bool {
        !self.contains(Self::GET)
    }
}

impl fmt::Display for AccessTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = Self::NAMES
            .iter()
            .filter(|(a, _)| self.contains(*a))
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&names.join(","))
    }
}

impl Occurrence {
    /// Fewest siblings of this definition an instance must have.
    pub fn min(self) -> u32 {
        match self {
            Occurrence::One | Occurrence::OneOrMore | Occurrence::OneOrN(_) => 1,
            _ => 0,
        }
    }

    /// Most siblings of this definition an instance may have (`None`: unbounded).
    pub fn max(self) -> Option<u32> {
        match self {
            Occurrence::One | Occurrence::ZeroOrOne => Some(1),
            Occurrence::ZeroOrMore | Occurrence::OneOrMore => None,
            Occurrence::ZeroOrN(n) | Occurrence::OneOrN(n) => Some(n),
        }
    }
}

impl DefName {
    /// True for a placeholder name.
    pub fn is_placeholder(&self) -> bool {
        matches!(self, DefName::Placeholder(_))
    }
}

impl fmt::Display for DefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefName::Fixed(n) => f.write_str(n),
            DefName::Placeholder(p) if p.is_empty() => f.write_str("<x>"),
            DefName::Placeholder(p) => f.write_str(p),
        }
    }
}

impl NodeDef {
    /// The definition that covers a child named `name`: a fixed name first (respecting
    /// case sensitivity), else the placeholder, if any.
    pub fn child(&self, name: &str) -> Option<&NodeDef> {
        self.children
            .iter()
            .find(|c| match &c.name {
                DefName::Fixed(n) if c.case_sensitive => n == name,
                DefName::Fixed(n) => n.eq_ignore_ascii_case(name),
                DefName::Placeholder(_) => false,
            })
            .or_else(|| self.children.iter().find(|c| c.name.is_placeholder()))
    }

    /// The definition covering `path` (names joined by `/`) below this node.
    pub fn descendant(&self, path: &str) -> Option<&NodeDef> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self, |def, name| def.child(name))
    }

    /// Number of nodes described, this one included.
    pub fn count(&self) -> usize {
        1 + self.children.iter().map(NodeDef::count).sum::<usize>()
    }

    /// Checks `node` (and its subtree) against this definition, collecting every mismatch.
    pub fn check(&self, node: &Node) -> Vec<Mismatch> {
        let mut out = Vec::new();
        self.check_into(node, &mut String::new(), &mut out);
        out
    }

    fn check_into(&self, node: &Node, path: &mut String, out: &mut Vec<Mismatch>) {
        let mut report = |path: &str, reason: String| {
            out.push(Mismatch {
                path: path.to_owned(),
                reason,
            })
        };
        match (node, self.format) {
            (Node::Leaf(_), Format::Node) => {
                report(path, "is a leaf, the DDF says interior".into())
            }
            (Node::Interior(_), f) if f != Format::Node => {
                report(path, format!("has no value, the DDF says a {f} leaf"))
            }
            (Node::Leaf(v), f) if v.format() != f => {
                report(path, format!("is {}, the DDF says {f}", v.format()))
            }
            _ => {}
        }
        let Node::Interior(children) = node else {
            return;
        };
        let mut counts = vec![0u32; self.children.len()];
        for (name, child) in children {
            let len = path.len();
            if len > 0 {
                path.push('/');
            }
            path.push_str(name);
            match self.child(name) {
                None => out.push(Mismatch {
                    path: path.clone(),
                    reason: "is not a node of this MO type".into(),
                }),
                Some(def) => {
                    let index = self.children.iter().position(|c| std::ptr::eq(c, def));
                    if let Some(i) = index {
                        counts[i] += 1;
                    }
                    def.check_into(child, path, out);
                }
            }
            path.truncate(len);
        }
        for (def, n) in self.children.iter().zip(counts) {
            let occ = def.occurrence;
            if n < occ.min() || occ.max().is_some_and(|max| n > max) {
                out.push(Mismatch {
                    path: path.clone(),
                    reason: format!(
                        "has {n} child(ren) named {}, the DDF allows {occ:?}",
                        def.name
                    ),
                });
            }
        }
    }
}

impl MoType {
    /// The definition covering `path` below the MO root.
    pub fn def_at(&self, path: &str) -> Option<&NodeDef> {
        self.root.descendant(path)
    }

    /// The root node name instances of this type carry (`DevInfo`, `DMAcc`, ...).
    pub fn root_name(&self) -> String {
        self.root.name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::tree::value::Value;

    fn leaf(name: &str, format: Format, occurrence: Occurrence) -> NodeDef {
        NodeDef {
            name: DefName::Fixed(name.into()),
            format,
            access: AccessTypes::GET,
            occurrence,
            scope: Scope::Dynamic,
            default: None,
            description: None,
            title: None,
            case_sensitive: true,
            mime: None,
            type_name: None,
            children: vec![],
        }
    }

    fn ty() -> NodeDef {
        let mut entry = leaf("", Format::Node, Occurrence::ZeroOrMore);
        entry.name = DefName::Placeholder("<x>".into());
        entry.children = vec![leaf("SSID", Format::Chr, Occurrence::One)];
        let mut root = leaf("Net", Format::Node, Occurrence::One);
        root.children = vec![leaf("Prio", Format::Int, Occurrence::ZeroOrOne), entry];
        root
    }

    fn interior(children: Vec<(&str, Node)>) -> Node {
        Node::Interior(
            children
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn placeholders_and_fixed_names_resolve() {
        let t = ty();
        assert_eq!(t.descendant("n1/SSID").map(|d| d.format), Some(Format::Chr));
        assert_eq!(t.descendant("Prio").map(|d| d.format), Some(Format::Int));
        assert!(t.descendant("Prio/x").is_none());
        assert_eq!(t.count(), 4);
    }

    #[test]
    fn check_reports_every_mismatch() {
        let t = ty();
        let good = interior(vec![
            ("Prio", Node::Leaf(Value::Int(3))),
            (
                "n1",
                interior(vec![("SSID", Node::Leaf(Value::Chr("a".into())))]),
            ),
        ]);
        assert_eq!(t.check(&good), vec![]);
        let bad = interior(vec![
            ("Prio", Node::Leaf(Value::Bool(true))),
            ("n1", interior(vec![("SSID", Node::empty())])),
            ("n2", Node::empty()),
        ]);
        let reasons: Vec<_> = t
            .check(&bad)
            .into_iter()
            .map(|m| format!("{}: {}", m.path, m.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                "Prio: is bool, the DDF says int",
                "n1/SSID: has no value, the DDF says a chr leaf",
                "n2: has 0 child(ren) named SSID, the DDF allows One",
            ]
        );
    }

    #[test]
    fn access_types() {
        let mut a = AccessTypes::empty();
        a.insert(AccessTypes::from_name("Get").unwrap());
        a.insert(AccessTypes::REPLACE);
        assert!(!a.is_no_get());
        assert_eq!(a.to_string(), "Get,Replace");
        assert!(AccessTypes::REPLACE.is_no_get());
        assert_eq!(AccessTypes::from_name("Copy"), None);
    }
}
