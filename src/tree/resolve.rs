//! Resolving a [`ClientUri`] to the nodes it addresses (PROTOCOL.md §8), over any tree that
//! implements [`TreeRead`] (the SQLite store, or an in-memory tree).
//!
//! Rules beyond the plain path walk:
//! - an empty `mo-inst` needs exactly one instance of the MOID;
//! - an x-name matches the nodes at its position for which every `nv=` field naming it
//!   holds (the leaf at the field's relative path has the field's value as text);
//! - when an x-name is the last element of the URI (`.../(x)/`), the URI addresses the
//!   nodes its `nv=` fields name below each match (the worked example
//!   `urn:oma:mo:moid:1.0/(x)/?nv=(x)/ID:Temperature` resolves to `right/ID`);
//! - a URI that resolves to nothing is an error, never an empty success;
//! - no step may hold more than `limit` nodes (the caller's `[limits] result_rows`), so a
//!   wildcard over a huge tree fails early instead of growing without bound.

use super::uri::{ClientUri, InstanceSel, NodeAddr, NvField, Segment, join};

/// Read access to MO instances, as much as resolution needs.
pub trait TreeRead {
    type Error;

    /// MIIDs of the instances of `moid`, sorted.
    fn instances(&self, moid: &str) -> Result<Vec<String>, Self::Error>;
    /// What the node at `path` of an instance is (`path` empty: the instance root).
    fn kind(&self, moid: &str, miid: &str, path: &str) -> Result<Option<NodeKind>, Self::Error>;
    /// Names of the children of an interior node, sorted; empty for leaves or missing nodes.
    fn children(&self, moid: &str, miid: &str, path: &str) -> Result<Vec<String>, Self::Error>;
    /// The value of a leaf as text; `None` for interior or missing nodes.
    fn leaf_text(&self, moid: &str, miid: &str, path: &str) -> Result<Option<String>, Self::Error>;
}

/// Interior or leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Interior,
    Leaf,
}

/// Why a ClientURI does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError<E> {
    #[error("{uri}: no instance of {moid}")]
    NoInstance { uri: String, moid: String },
    #[error("{uri}: {moid} has {count} instances; name one (MIID, x-name or *)")]
    Ambiguous {
        uri: String,
        moid: String,
        count: usize,
    },
    #[error("{uri}: no such node")]
    NotFound { uri: String },
    #[error("{uri}: no node matches the nv= conditions")]
    NoMatch { uri: String },
    #[error(
        "{uri}: more than {limit} nodes match ([limits] result_rows); narrow the query \
         (a MIID, a deeper path, nv= conditions)"
    )]
    TooMany { uri: String, limit: usize },
    #[error(transparent)]
    Tree(E),
}

/// Whether `miid` names an instance of a device behind the gateway: `<key>.<instance>`
/// (docs/gateway.md §1.2). The device's own instances never have a dot in their MIID.
pub fn is_child_miid(miid: &str) -> bool {
    miid.contains('.')
}

/// Resolves `uri` against `tree`: every addressed node, in instance and name order; more
/// than `limit` nodes at any step is [`ResolveError::TooMany`].
pub fn resolve<T: TreeRead>(
    uri: &ClientUri,
    tree: &T,
    limit: usize,
) -> Result<Vec<NodeAddr>, ResolveError<T::Error>> {
    let too_many = || ResolveError::TooMany {
        uri: uri.to_string(),
        limit,
    };
    let moid = uri.moid.as_str();
    let not_found = || ResolveError::NotFound {
        uri: uri.to_string(),
    };
    let no_match = || ResolveError::NoMatch {
        uri: uri.to_string(),
    };

    if let (InstanceSel::Miid(miid), Some(path)) = (&uri.instance, uri.names_path()) {
        return match tree.kind(moid, miid, &path).map_err(ResolveError::Tree)? {
            Some(_) => Ok(vec![NodeAddr {
                moid: moid.to_owned(),
                miid: miid.clone(),
                path,
            }]),
            None => Err(not_found()),
        };
    }

    let mut current: Vec<NodeAddr> = match &uri.instance {
        InstanceSel::Miid(miid) => match tree.kind(moid, miid, "").map_err(ResolveError::Tree)? {
            Some(_) => vec![NodeAddr::root(moid, miid)],
            None => return Err(not_found()),
        },
        InstanceSel::Only => {
            // The device's own instances only: a child's (behind the gateway) is named by
            // MIID, x-name or `*` (docs/gateway.md §1.4).
            let mut all = tree.instances(moid).map_err(ResolveError::Tree)?;
            all.retain(|miid| !is_child_miid(miid));
            match all.len() {
                0 => {
                    return Err(ResolveError::NoInstance {
                        uri: uri.to_string(),
                        moid: moid.to_owned(),
                    });
                }
                1 => vec![NodeAddr::root(moid, &all[0])],
                count => {
                    return Err(ResolveError::Ambiguous {
                        uri: uri.to_string(),
                        moid: moid.to_owned(),
                        count,
                    });
                }
            }
        }
        InstanceSel::All | InstanceSel::XName(_) => {
            let all = tree.instances(moid).map_err(ResolveError::Tree)?;
            if all.is_empty() {
                return Err(ResolveError::NoInstance {
                    uri: uri.to_string(),
                    moid: moid.to_owned(),
                });
            }
            let roots = all.iter().map(|m| NodeAddr::root(moid, m)).collect();
            match &uri.instance {
                InstanceSel::XName(x) => filter_nv(tree, roots, fields(uri, x))?,
                _ => roots,
            }
        }
    };
    if current.len() > limit {
        return Err(too_many());
    }
    let mut last_xname = match &uri.instance {
        InstanceSel::XName(x) => Some(x.as_str()),
        _ => None,
    };

    for segment in &uri.path {
        let mut next = Vec::new();
        last_xname = None;
        for node in &current {
            match segment {
                Segment::Name(name) => {
                    let child = node.child(name);
                    if tree
                        .kind(moid, &child.miid, &child.path)
                        .map_err(ResolveError::Tree)?
                        .is_some()
                    {
                        next.push(child);
                    }
                }
                Segment::Any | Segment::XName(_) => {
                    let children: Vec<NodeAddr> = tree
                        .children(moid, &node.miid, &node.path)
                        .map_err(ResolveError::Tree)?
                        .iter()
                        .map(|name| node.child(name))
                        .collect();
                    match segment {
                        Segment::XName(x) => {
                            next.extend(filter_nv(tree, children, fields(uri, x))?);
                        }
                        _ => next.extend(children),
                    }
                }
            }
            if next.len() > limit {
                return Err(too_many());
            }
        }
        if let Segment::XName(x) = segment {
            last_xname = Some(x);
        }
        current = next;
    }

    if let Some(x) = last_xname {
        current = current
            .iter()
            .flat_map(|n| fields(uri, x).map(move |f| n.child(&f.path.join("/"))))
            .collect();
    }
    if current.len() > limit {
        return Err(too_many());
    }
    if current.is_empty() {
        let uses_nv = !uri.nv.is_empty();
        return Err(if uses_nv { no_match() } else { not_found() });
    }
    Ok(current)
}

fn fields<'a>(
    uri: &'a ClientUri,
    xname: &'a str,
) -> impl Iterator<Item = &'a NvField> + Clone + 'a {
    uri.nv.iter().filter(move |f| f.xname == xname)
}

fn filter_nv<'a, T: TreeRead>(
    tree: &T,
    candidates: Vec<NodeAddr>,
    fields: impl Iterator<Item = &'a NvField> + Clone,
) -> Result<Vec<NodeAddr>, ResolveError<T::Error>> {
    let mut out = Vec::new();
    'candidate: for c in candidates {
        for f in fields.clone() {
            let path = join(&c.path, &f.path.join("/"));
            let text = tree
                .leaf_text(&c.moid, &c.miid, &path)
                .map_err(ResolveError::Tree)?;
            if text.as_deref() != Some(f.value.as_str()) {
                continue 'candidate;
            }
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    use super::*;
    use crate::tree::node::Node;
    use crate::tree::value::Value;

    /// The fixture of PROTOCOL.md §8: instances `left` and `right` of `urn:oma:mo:moid:1.0`.
    struct Fixture(BTreeMap<String, Node>);

    const MOID: &str = "urn:oma:mo:moid:1.0";

    fn instance(id: &str, setting: &str, dates: [&str; 2]) -> Node {
        let chr = |s: &str| Node::Leaf(Value::Chr(s.into()));
        let entry = |date: &str| {
            Node::Interior(BTreeMap::from([
                ("Date".to_owned(), chr(date)),
                ("Value".to_owned(), chr("")),
            ]))
        };
        Node::Interior(BTreeMap::from([
            ("ID".to_owned(), chr(id)),
            ("Setting".to_owned(), chr(setting)),
            (
                "Data".to_owned(),
                Node::Interior(BTreeMap::from([
                    ("1".to_owned(), entry(dates[0])),
                    ("2".to_owned(), entry(dates[1])),
                ])),
            ),
        ]))
    }

    fn fixture() -> Fixture {
        Fixture(BTreeMap::from([
            ("left".to_owned(), instance("GPS", "0xA1", ["12.1", "12.2"])),
            (
                "right".to_owned(),
                instance("Temperature", "0xB2", ["12.1", "12.3"]),
            ),
        ]))
    }

    impl Fixture {
        fn node(&self, moid: &str, miid: &str, path: &str) -> Option<&Node> {
            (moid == MOID)
                .then(|| self.0.get(miid)?.get(path))
                .flatten()
        }
    }

    impl TreeRead for Fixture {
        type Error = Infallible;
        fn instances(&self, moid: &str) -> Result<Vec<String>, Infallible> {
            Ok(if moid == MOID {
                self.0.keys().cloned().collect()
            } else {
                vec![]
            })
        }
        fn kind(&self, moid: &str, miid: &str, path: &str) -> Result<Option<NodeKind>, Infallible> {
            Ok(self.node(moid, miid, path).map(|n| match n {
                Node::Interior(_) => NodeKind::Interior,
                Node::Leaf(_) => NodeKind::Leaf,
            }))
        }
        fn children(&self, moid: &str, miid: &str, path: &str) -> Result<Vec<String>, Infallible> {
            Ok(match self.node(moid, miid, path) {
                Some(Node::Interior(c)) => c.keys().cloned().collect(),
                _ => vec![],
            })
        }
        fn leaf_text(
            &self,
            moid: &str,
            miid: &str,
            path: &str,
        ) -> Result<Option<String>, Infallible> {
            Ok(match self.node(moid, miid, path) {
                Some(Node::Leaf(v)) => Some(v.to_text()),
                _ => None,
            })
        }
    }

    fn run(uri: &str) -> Result<Vec<String>, String> {
        let parsed = ClientUri::parse(uri).map_err(|e| e.to_string())?;
        resolve(&parsed, &fixture(), usize::MAX)
            .map(|v| {
                v.into_iter()
                    .map(|a| {
                        format!("{}/{}", a.miid, a.path)
                            .trim_end_matches('/')
                            .to_owned()
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_ten_worked_examples_of_protocol_section_8() {
        let ok = |uri: &str, want: &[&str]| assert_eq!(run(uri).unwrap(), want, "{uri}");
        ok("urn:oma:mo:moid:1.0/left/", &["left"]);
        let err = run("urn:oma:mo:moid:1.0//").unwrap_err();
        assert!(err.contains("2 instances"), "{err}");
        ok(
            "urn:oma:mo:moid:1.0/(x)/?nv=(x)/ID:Temperature",
            &["right/ID"],
        );
        ok(
            "urn:oma:mo:moid:1.0/(x)/Data/1/Value?nv=(x)/ID:GPS",
            &["left/Data/1/Value"],
        );
        ok(
            "urn:oma:mo:moid:1.0/right/Data/(x)/Value?nv=(x)/Date:12.1",
            &["right/Data/1/Value"],
        );
        ok(
            "urn:oma:mo:moid:1.0/(x)/Data/(y)/Value?nv=(x)/ID:GPS&nv=(y)/Date:12.2",
            &["left/Data/2/Value"],
        );
        ok(
            "urn:oma:mo:moid:1.0/*/Setting",
            &["left/Setting", "right/Setting"],
        );
        ok(
            "urn:oma:mo:moid:1.0/(x)/Data/*/Value?nv=(x)/ID:GPS",
            &["left/Data/1/Value", "left/Data/2/Value"],
        );
        let err = run("urn:oma:mo:moid:1.0/(x)/Data/*/Value?nv=(x)/ID:GPS&nv=(x)/Setting:0xB2")
            .unwrap_err();
        assert!(err.contains("no node matches"), "{err}");
        ok(
            "urn:oma:mo:moid:1.0/*/Data/*/Value",
            &[
                "left/Data/1/Value",
                "left/Data/2/Value",
                "right/Data/1/Value",
                "right/Data/2/Value",
            ],
        );
    }

    #[test]
    fn the_empty_mo_inst_names_the_devices_own_instance_never_a_childs() {
        let mut tree = fixture();
        tree.0.remove("right");
        let left = tree.0["left"].clone();
        tree.0.insert("thermo-42.0".into(), left);
        let only = ClientUri::parse("urn:oma:mo:moid:1.0//ID").unwrap();
        let found = resolve(&only, &tree, usize::MAX).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].miid, "left");
        let all = ClientUri::parse("urn:oma:mo:moid:1.0/*/ID").unwrap();
        assert_eq!(resolve(&all, &tree, usize::MAX).unwrap().len(), 2);
        tree.0.remove("left");
        assert!(matches!(
            resolve(&only, &tree, usize::MAX),
            Err(ResolveError::NoInstance { .. })
        ));
    }

    #[test]
    fn missing_nodes_and_instances_are_errors() {
        assert!(
            run("urn:oma:mo:moid:1.0/left/Nope")
                .unwrap_err()
                .contains("no such node")
        );
        assert!(
            run("urn:oma:mo:moid:1.0/middle/")
                .unwrap_err()
                .contains("no such node")
        );
        assert!(
            run("urn:oma:mo:other:1.0//")
                .unwrap_err()
                .contains("no instance")
        );
        assert!(
            run("urn:oma:mo:moid:1.0/*/Nope")
                .unwrap_err()
                .contains("no such node")
        );
        assert!(
            run("urn:oma:mo:moid:1.0/left/ID/deeper")
                .unwrap_err()
                .contains("no such node")
        );
    }

    #[test]
    fn no_step_holds_more_than_the_limit() {
        let tree = fixture();
        let all = ClientUri::parse("urn:oma:mo:moid:1.0/*/*").unwrap();
        let n = resolve(&all, &tree, usize::MAX).unwrap().len();
        assert!(n > 2);
        assert!(matches!(
            resolve(&all, &tree, n - 1),
            Err(ResolveError::TooMany { .. })
        ));
        assert_eq!(resolve(&all, &tree, n).unwrap().len(), n);
        let instances = ClientUri::parse("urn:oma:mo:moid:1.0/*/").unwrap();
        assert!(matches!(
            resolve(&instances, &tree, 1),
            Err(ResolveError::TooMany { .. })
        ));
    }
}
