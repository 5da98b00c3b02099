//! In-memory MO subtrees: what the serializations read and write and what the store
//! imports and exports in one piece.

use std::collections::BTreeMap;

use super::value::Value;

/// A node and everything under it. Children are kept sorted by name.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Interior(BTreeMap<String, Node>),
    Leaf(Value),
}

/// Longest node name accepted anywhere.
pub const MAX_NAME_LEN: usize = 255;

/// Why a string cannot be a node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("node names cannot be empty")]
    Empty,
    #[error("node name {0:?} contains '/'")]
    Slash(String),
    #[error("node name {0:?} contains a control character")]
    Control(String),
    #[error("node name {0:?} is reserved")]
    Reserved(String),
    #[error("node name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
}

/// Checks that `name` can name a node: non-empty, at most [`MAX_NAME_LEN`] bytes, no `/`,
/// no control characters, not `.` or `..`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        Err(NameError::Empty)
    } else if name.len() > MAX_NAME_LEN {
        Err(NameError::TooLong)
    } else if name.contains('/') {
        Err(NameError::Slash(name.to_owned()))
    } else if name.chars().any(char::is_control) {
        Err(NameError::Control(name.to_owned()))
    } else if name == "." || name == ".." {
        Err(NameError::Reserved(name.to_owned()))
    } else {
        Ok(())
    }
}

impl Node {
    /// An interior node without children.
    pub fn empty() -> Node {
        Node::Interior(BTreeMap::new())
    }

    /// Number of nodes in this subtree, this one included.
    pub fn count(&self) -> usize {
        match self {
            Node::Leaf(_) => 1,
            Node::Interior(children) => 1 + children.values().map(Node::count).sum::<usize>(),
        }
    }

    /// The node at `path` (names joined by `/`, empty for this node).
    pub fn get(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self, |node, name| match node {
                Node::Interior(children) => children.get(name),
                Node::Leaf(_) => None,
            })
    }

    /// Calls `f(path, node)` for every node below this one, parents before children,
    /// siblings in name order. Paths are relative to this node.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&str, &'a Node)) {
        fn go<'a>(prefix: &mut String, node: &'a Node, f: &mut impl FnMut(&str, &'a Node)) {
            if let Node::Interior(children) = node {
                for (name, child) in children {
                    let len = prefix.len();
                    if len > 0 {
                        prefix.push('/');
                    }
                    prefix.push_str(name);
                    f(prefix, child);
                    go(prefix, child, f);
                    prefix.truncate(len);
                }
            }
        }
        go(&mut String::new(), self, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Node {
        let mut data = BTreeMap::new();
        data.insert("Date".to_owned(), Node::Leaf(Value::Chr("12.1".into())));
        let mut root = BTreeMap::new();
        root.insert("Data".to_owned(), Node::Interior(data));
        root.insert("ID".to_owned(), Node::Leaf(Value::Chr("GPS".into())));
        Node::Interior(root)
    }

    #[test]
    fn get_walk_and_count() {
        let n = sample();
        assert_eq!(n.count(), 4);
        assert_eq!(
            n.get("Data/Date"),
            Some(&Node::Leaf(Value::Chr("12.1".into())))
        );
        assert_eq!(n.get(""), Some(&n));
        assert_eq!(n.get("ID/x"), None);
        let mut seen = Vec::new();
        n.walk(&mut |p, _| seen.push(p.to_owned()));
        assert_eq!(seen, ["Data", "Data/Date", "ID"]);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("Data").is_ok());
        assert!(check_name("a b?&").is_ok());
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert!(matches!(check_name("a/b"), Err(NameError::Slash(_))));
        assert!(matches!(check_name("a\nb"), Err(NameError::Control(_))));
        assert!(matches!(check_name(".."), Err(NameError::Reserved(_))));
        assert_eq!(check_name(&"x".repeat(256)), Err(NameError::TooLong));
    }
}
