//! TNDS XML (the OMA DM Tree and Description Serialization: `<MgmtTree>` documents of
//! `<Node>`s with `<NodeName>`, `<RTProperties>` and `<Value>`): reading documents into
//! [`TndsTree`]s, checked against known MO types, and writing trees back.
//!
//! Decisions the reader and writer share (both sides keep them, so `import(export(x)) == x`):
//!
//! - `NodeName` text is taken verbatim, never trimmed, and must pass [`check_name`].
//! - `chr` and `xml` values are taken verbatim (surrounding spaces and newlines included);
//!   for every other format surrounding whitespace is ignored.
//! - A node's format is its `RTProperties/Format`, else its DDF node's format when an MO type
//!   applies, else `chr`.
//! - A node with neither `<Value>` nor child `<Node>`s is an empty interior node, unless its
//!   format is a leaf format: then its value is missing, which is a problem — except for
//!   `null`, whose nodes carry no data anyway.
//! - Only `RTProperties/Format` and, on top-level nodes, `RTProperties/Type/DDFName` (the
//!   MOID, trimmed) are read; other run-time properties and `Path` are ignored. Top-level nodes
//!   are independent trees: two may share a name.
//! - Documents are XML 1.0, so a name, MOID or value can only hold characters of its `Char`
//!   production ([`xml::is_xml_char`]): NUL, the other C0 controls but tab, LF and CR, U+FFFE
//!   and U+FFFF cannot be carried, neither raw nor as character references. The reader refuses
//!   a document holding one (with its line); the writer refuses a tree holding one
//!   ([`ExportError`]) instead of writing what the reader would refuse. `b64` and `bin` values
//!   are written in base64, so any bytes travel; a `json` value writes U+FFFE and U+FFFF as
//!   JSON escapes, so any JSON value travels too.
//! - The writer escapes `&`, `<`, `>` and every control character but tab and newline (as
//!   character references: XML would turn a raw CR into LF). Trees beyond the XML reader's
//!   bounds ([`xml::MAX_DEPTH`] nesting, [`xml::MAX_ELEMENTS`], [`xml::MAX_BYTES`]) are
//!   written but cannot be read back.
//!
//! Every problem is collected, with its line and node path, instead of stopping at the first.
//! Of two sibling nodes with the same name the first is kept and the second reported. When an
//! MO type applies, its mismatches are added too, except at a node whose own content (value,
//! or value versus children) was already refused: the mismatch would only repeat that problem
//! (a missing value is not also reported as "has no value").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::format::Format;
use super::mo_type::{DefName, MoType, NodeDef};
use super::node::{Node, check_name};
use super::value::Value;
use super::xml::{self, Element};

/// One top-level MO instance (or subtree) in a TNDS document.
#[derive(Clone, Debug, PartialEq)]
pub struct TndsTree {
    /// The top-level node's name.
    pub name: String,
    /// `RTProperties/Type/DDFName` of the top-level node: the MOID, when given.
    pub moid: Option<String>,
    /// The top-level node and everything under it.
    pub node: Node,
}

/// Why a TNDS document was refused: every problem found, in line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TndsError {
    pub problems: Vec<TndsProblem>,
}

/// One problem in a TNDS document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TndsProblem {
    /// 1-based line of the offending element.
    pub line: usize,
    /// Path of the node concerned, from the top-level node's name
    /// (`PerProviderSubscription/i001/HomeSP`); empty for problems outside any node.
    pub path: String,
    pub reason: String,
}

/// Reads a TNDS document. `types` are known MO types: a tree whose moid
/// (`RTProperties/Type/DDFName`) matches one is parsed with the DDF's formats and checked
/// against it ([`NodeDef::check`]), and its root name must match the type's root name.
pub fn import(input: &str, types: &[MoType]) -> Result<Vec<TndsTree>, TndsError> {
    let root = xml::parse(input).map_err(|e| TndsError {
        problems: vec![TndsProblem {
            line: e.line,
            path: String::new(),
            reason: e.reason,
        }],
    })?;
    let mut reader = Reader::default();
    let trees = reader.document(&root, types);
    if reader.problems.is_empty() {
        Ok(trees)
    } else {
        reader.problems.sort_by_key(|p| p.line);
        Err(TndsError {
            problems: reader.problems,
        })
    }
}

/// Writes trees as a TNDS document that [`import`] reads back identically (no types
/// needed). Children are written in name order, so equal trees give equal documents. A tree
/// holding a character XML 1.0 cannot carry is refused, naming the first such node.
pub fn export(trees: &[TndsTree]) -> Result<String, ExportError> {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MgmtTree xmlns=\"syncml:dmddf1.2\">\n  <VerDTD>1.2</VerDTD>\n",
    );
    for tree in trees {
        let at = At {
            path: &tree.name,
            moid: tree.moid.as_deref(),
        };
        write_node(&mut out, 1, &tree.name, at, &tree.node)?;
    }
    out.push_str("</MgmtTree>\n");
    Ok(out)
}

/// Why a tree cannot be written as TNDS: a name, MOID or value holds a character that XML
/// 1.0 cannot carry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {what} holds U+{code:04X}, which a TNDS (XML 1.0) document cannot carry", code = u32::from(*.ch))]
pub struct ExportError {
    /// Path of the node concerned, from the top-level node's name.
    pub path: String,
    /// What holds the character: `name`, `MOID` or `value`.
    pub what: &'static str,
    pub ch: char,
}

impl fmt::Display for TndsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "line {}: {}", self.line, self.reason)
        } else {
            write!(f, "line {}: {}: {}", self.line, self.path, self.reason)
        }
    }
}

impl fmt::Display for TndsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TndsError {}

/// Path shown for a `<Node>` that has no usable name.
const UNNAMED: &str = "<unnamed>";

/// Elements a `<Node>` may hold (vendor-prefixed ones are ignored).
const NODE_ELEMENTS: [&str; 5] = ["NodeName", "Path", "RTProperties", "Value", "Node"];

/// The import state: problems found so far and, for the tree being read, the line of each
/// node by path (to place [`NodeDef::check`] mismatches) and the paths of nodes that stand
/// in empty or without their children because of a problem of their own.
#[derive(Default)]
struct Reader {
    problems: Vec<TndsProblem>,
    lines: HashMap<String, usize>,
    broken: HashSet<String>,
}

impl Reader {
    fn problem(&mut self, line: usize, path: &str, reason: impl Into<String>) {
        self.problems.push(TndsProblem {
            line,
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    /// Records a problem with the node's own content (its value, or value versus children).
    fn content_problem(&mut self, line: usize, path: &str, reason: impl Into<String>) {
        self.broken.insert(path.to_owned());
        self.problem(line, path, reason);
    }

    fn document(&mut self, root: &Element, types: &[MoType]) -> Vec<TndsTree> {
        if root.name != "MgmtTree" {
            self.problem(
                root.line,
                "",
                format!("root element is <{}>, expected <MgmtTree>", root.name),
            );
        }
        let mut trees = Vec::new();
        for child in root.children.iter().filter(|c| c.prefix.is_none()) {
            match child.name.as_str() {
                "Node" => trees.extend(self.tree(child, types)),
                "VerDTD" | "Man" | "Mod" => {}
                other => self.problem(
                    child.line,
                    "",
                    format!("unknown element <{other}> in <MgmtTree>"),
                ),
            }
        }
        trees
    }

    /// Reads one top-level node; `None` when it has no usable name (the problem is recorded).
    fn tree(&mut self, el: &Element, types: &[MoType]) -> Option<TndsTree> {
        self.lines.clear();
        self.broken.clear();
        let name = self.name(el, "");
        let path = name.clone().unwrap_or_else(|| UNNAMED.to_owned());
        self.lines.insert(path.clone(), el.line);
        let moid = el
            .child("RTProperties")
            .and_then(|r| r.child("Type"))
            .and_then(|t| t.child_text("DDFName"))
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        let mo_type = moid
            .as_deref()
            .and_then(|m| types.iter().find(|t| t.moid == m));
        match (&name, mo_type) {
            (Some(name), Some(t)) if !root_name_matches(&t.root, name) => {
                let reason = format!(
                    "MO type {} has root node {}, not {name}",
                    t.moid, t.root.name
                );
                self.problem(el.line, &path, reason);
            }
            _ => {}
        }
        let node = self.body(el, &path, mo_type.map(|t| &t.root));
        if let Some(t) = mo_type {
            self.type_mismatches(&t.root, &node, &path, el.line);
        }
        Some(TndsTree {
            name: name?,
            moid,
            node,
        })
    }

    /// Adds every mismatch between `node` and `def`, except at nodes whose content was
    /// already refused (the mismatch would only repeat that problem).
    fn type_mismatches(&mut self, def: &NodeDef, node: &Node, root_path: &str, root_line: usize) {
        for m in def.check(node) {
            let path = if m.path.is_empty() {
                root_path.to_owned()
            } else {
                format!("{root_path}/{}", m.path)
            };
            if self.broken.contains(&path) {
                continue;
            }
            let line = self.lines.get(&path).copied().unwrap_or(root_line);
            self.problem(line, &path, m.reason);
        }
    }

    /// Reads a child `<Node>` of the node at `parent`; `None` when it has no usable name.
    fn child(
        &mut self,
        el: &Element,
        parent: &str,
        parent_def: Option<&NodeDef>,
    ) -> Option<(String, Node)> {
        let name = self.name(el, parent);
        let path = join(parent, name.as_deref().unwrap_or(UNNAMED));
        let def = name
            .as_deref()
            .and_then(|n| parent_def.and_then(|d| d.child(n)));
        self.lines.entry(path.clone()).or_insert(el.line);
        let node = self.body(el, &path, def);
        Some((name?, node))
    }

    /// The node's name, checked; `None` (with the problem recorded) when missing or invalid.
    fn name(&mut self, el: &Element, parent: &str) -> Option<String> {
        let mut names = el.children_named("NodeName");
        let Some(first) = names.next() else {
            self.problem(el.line, &join(parent, UNNAMED), "<Node> has no <NodeName>");
            return None;
        };
        let name = first.text.clone();
        let path = join(parent, if name.is_empty() { UNNAMED } else { &name });
        if let Some(second) = names.next() {
            self.problem(second.line, &path, "<Node> has more than one <NodeName>");
        }
        match check_name(&name) {
            Ok(()) => Some(name),
            Err(e) => {
                self.problem(first.line, &path, format!("invalid <NodeName>: {e}"));
                None
            }
        }
    }

    /// Reads what a `<Node>` holds: its value or its children.
    fn body(&mut self, el: &Element, path: &str, def: Option<&NodeDef>) -> Node {
        for c in el.children.iter().filter(|c| c.prefix.is_none()) {
            if !NODE_ELEMENTS.contains(&c.name.as_str()) {
                self.problem(
                    c.line,
                    path,
                    format!("unknown element <{}> in <Node>", c.name),
                );
            }
        }
        let rt_format = self.rt_format(el, path);
        let mut values = el.children_named("Value");
        let value = values.next();
        if let Some(second) = values.next() {
            self.problem(second.line, path, "has more than one <Value>");
        }
        let children = self.children(el, path, def);
        match (value, children.is_empty()) {
            (Some(v), false) => {
                self.content_problem(v.line, path, "has both a <Value> and child <Node>s");
                self.leaf(v, path, leaf_format(rt_format, def))
                    .unwrap_or_else(Node::empty)
            }
            (Some(v), true) if rt_format == Some(Format::Node) => {
                self.content_problem(v.line, path, "has a <Value>, but its format is node");
                Node::empty()
            }
            (Some(v), true) => self
                .leaf(v, path, leaf_format(rt_format, def))
                .unwrap_or_else(Node::empty),
            (None, false) => {
                if let Some(f) = rt_format.filter(|f| !f.is_interior()) {
                    self.content_problem(
                        el.line,
                        path,
                        format!("has child <Node>s, but its format is {f}"),
                    );
                }
                Node::Interior(children)
            }
            (None, true) => match rt_format.or(def.map(|d| d.format)) {
                Some(Format::Null) => Node::Leaf(Value::Null),
                Some(f) if !f.is_interior() => {
                    self.content_problem(
                        el.line,
                        path,
                        format!("missing value: no <Value>, but its format is {f}"),
                    );
                    Node::empty()
                }
                _ => Node::empty(),
            },
        }
    }

    /// Reads the child `<Node>`s; a second sibling of the same name is a problem and left out.
    fn children(
        &mut self,
        el: &Element,
        path: &str,
        def: Option<&NodeDef>,
    ) -> BTreeMap<String, Node> {
        let mut children = BTreeMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for c in el.children_named("Node") {
            let Some((name, node)) = self.child(c, path, def) else {
                continue;
            };
            if let Some(line) = first_line.get(&name) {
                let reason =
                    format!("duplicate node {name}: a sibling of the same name is on line {line}");
                self.problem(c.line, &join(path, &name), reason);
                continue;
            }
            first_line.insert(name.clone(), c.line);
            children.insert(name, node);
        }
        children
    }

    /// `RTProperties/Format`, if present and valid (else the problem is recorded).
    fn rt_format(&mut self, el: &Element, path: &str) -> Option<Format> {
        let format_el = el.child("RTProperties")?.child("Format")?;
        let mut inner = format_el.children.iter().filter(|c| c.prefix.is_none());
        match (inner.next(), inner.next()) {
            (Some(f), None) => match f.name.parse::<Format>() {
                Ok(format) => Some(format),
                Err(e) => {
                    self.problem(f.line, path, e.to_string());
                    None
                }
            },
            _ => {
                self.problem(
                    format_el.line,
                    path,
                    "<Format> must hold exactly one format element",
                );
                None
            }
        }
    }

    /// Parses a `<Value>` in `format`; `None` (with the problem recorded) when it does not fit.
    fn leaf(&mut self, v: &Element, path: &str, format: Format) -> Option<Node> {
        if let Some(inner) = v.children.first() {
            let reason = format!(
                "<Value> holds element <{}>: markup in a value must be escaped or in CDATA",
                inner.name
            );
            self.content_problem(inner.line, path, reason);
            return None;
        }
        let text = match format {
            Format::Chr | Format::Xml => v.text.as_str(),
            _ => v.text.trim(),
        };
        match Value::parse(format, text) {
            Ok(value) => Some(Node::Leaf(value)),
            Err(e) => {
                self.content_problem(v.line, path, e.to_string());
                None
            }
        }
    }
}

/// The format a `<Value>` is parsed in: `RTProperties` first, then the DDF's leaf format,
/// else `chr` (a DDF saying `node` is reported by the type check, not here).
fn leaf_format(rt_format: Option<Format>, def: Option<&NodeDef>) -> Format {
    rt_format
        .or(def.map(|d| d.format))
        .filter(|f| !f.is_interior())
        .unwrap_or(Format::Chr)
}

fn root_name_matches(root: &NodeDef, name: &str) -> bool {
    match &root.name {
        DefName::Placeholder(_) => true,
        DefName::Fixed(n) if root.case_sensitive => n == name,
        DefName::Fixed(n) => n.eq_ignore_ascii_case(name),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// Where [`write_node`] writes: the node's path, and the MOID of a top-level node.
#[derive(Clone, Copy)]
struct At<'a> {
    path: &'a str,
    moid: Option<&'a str>,
}

fn write_node(
    out: &mut String,
    depth: usize,
    name: &str,
    at: At<'_>,
    node: &Node,
) -> Result<(), ExportError> {
    let refuse = |what| {
        move |ch| ExportError {
            path: at.path.to_owned(),
            what,
            ch,
        }
    };
    let pad = "  ".repeat(depth);
    out.push_str(&format!(
        "{pad}<Node>\n{pad}  <NodeName>{}</NodeName>\n",
        escape(name).map_err(refuse("name"))?
    ));
    let format = match node {
        Node::Leaf(v) if v.format() != Format::Chr => Some(v.format()),
        Node::Interior(children) if children.is_empty() => Some(Format::Node),
        _ => None,
    };
    if format.is_some() || at.moid.is_some() {
        out.push_str(&format!("{pad}  <RTProperties>\n"));
        if let Some(f) = format {
            out.push_str(&format!("{pad}    <Format><{f}/></Format>\n"));
        }
        if let Some(m) = at.moid {
            out.push_str(&format!(
                "{pad}    <Type><DDFName>{}</DDFName></Type>\n",
                escape(m).map_err(refuse("MOID"))?
            ));
        }
        out.push_str(&format!("{pad}  </RTProperties>\n"));
    }
    match node {
        Node::Leaf(Value::Null) => {}
        Node::Leaf(v) => out.push_str(&format!(
            "{pad}  <Value>{}</Value>\n",
            escape(&value_text(v)).map_err(refuse("value"))?
        )),
        Node::Interior(children) => {
            for (child_name, child) in children {
                let path = join(at.path, child_name);
                let child_at = At {
                    path: &path,
                    moid: None,
                };
                write_node(out, depth + 1, child_name, child_at, child)?;
            }
        }
    }
    out.push_str(&format!("{pad}</Node>\n"));
    Ok(())
}

/// A value's text as written: [`Value::to_text`], except that a `json` value's U+FFFE and
/// U+FFFF (which JSON text only holds inside strings) become JSON escapes, which XML 1.0
/// can carry.
fn value_text(v: &Value) -> String {
    let text = v.to_text();
    match v {
        Value::Json(_) => text
            .replace('\u{fffe}', "\\ufffe")
            .replace('\u{ffff}', "\\uffff"),
        _ => text,
    }
}

/// Escapes text content: markup characters as entities, control characters (CR included,
/// which XML would otherwise read as LF) as character references; tab and LF stay as they
/// are. The first character XML 1.0 cannot carry at all is the error.
fn escape(text: &str) -> Result<String, char> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if !xml::is_xml_char(c) => return Err(c),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push_str(&format!("&#{};", u32::from(c))),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::ddf;

    const TYPE_DDF: &str = r#"<MgmtTree><VerDTD>1.2</VerDTD>
<Node><NodeName>Net</NodeName><DFProperties><DFFormat><node/></DFFormat>
  <DFType><DDFName>urn:test:net:1.0</DDFName></DFType></DFProperties>
  <Node><NodeName>Prio</NodeName><DFProperties><DFFormat><int/></DFFormat>
    <Occurrence><ZeroOrOne/></Occurrence></DFProperties></Node>
  <Node><NodeName>Name</NodeName><DFProperties><DFFormat><chr/></DFFormat>
    <Occurrence><ZeroOrOne/></Occurrence></DFProperties></Node>
  <Node><NodeName>Reset</NodeName><DFProperties><DFFormat><null/></DFFormat>
    <Occurrence><ZeroOrOne/></Occurrence></DFProperties></Node>
  <Node><NodeName>&lt;x&gt;</NodeName><DFProperties><DFFormat><node/></DFFormat>
    <Occurrence><ZeroOrMore/></Occurrence></DFProperties>
    <Node><NodeName>On</NodeName><DFProperties><DFFormat><bool/></DFFormat></DFProperties></Node>
  </Node>
</Node></MgmtTree>"#;

    fn types() -> Vec<MoType> {
        ddf::parse(TYPE_DDF).unwrap().mo_types()
    }

    /// A document with one top-level node (typed as the test MO) holding `body`, which
    /// starts on line 2.
    fn doc(body: &str) -> String {
        format!(
            "<MgmtTree xmlns=\"syncml:dmddf1.2\"><VerDTD>1.2</VerDTD>\n<Node><NodeName>Net</NodeName>\
             <RTProperties><Type><DDFName>urn:test:net:1.0</DDFName></Type></RTProperties>{body}</Node></MgmtTree>"
        )
    }

    fn problems(input: &str, types: &[MoType]) -> Vec<String> {
        match import(input, types) {
            Ok(trees) => panic!("accepted: {trees:?}"),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    fn leaf(node: &Node, path: &str) -> Value {
        match node.get(path) {
            Some(Node::Leaf(v)) => v.clone(),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn reads_names_moid_formats_and_values() {
        let input = doc("<Node><NodeName>Prio</NodeName><Value> 7 </Value></Node>\n\
             <Node><NodeName>Name</NodeName><Value>  two  words </Value></Node>\n\
             <Node><NodeName>Reset</NodeName></Node>\n\
             <Node><NodeName>a1</NodeName><Node><NodeName>On</NodeName><Value>true</Value></Node></Node>\n");
        let trees = import(&input, &types()).unwrap();
        assert_eq!(trees.len(), 1);
        let t = &trees[0];
        assert_eq!(
            (t.name.as_str(), t.moid.as_deref()),
            ("Net", Some("urn:test:net:1.0"))
        );
        assert_eq!(leaf(&t.node, "Prio"), Value::Int(7));
        assert_eq!(
            leaf(&t.node, "Name"),
            Value::Chr("  two  words ".into()),
            "chr is verbatim"
        );
        assert_eq!(
            leaf(&t.node, "Reset"),
            Value::Null,
            "null nodes need no <Value>"
        );
        assert_eq!(leaf(&t.node, "a1/On"), Value::Bool(true));
        assert_eq!(t.node.count(), 6);
    }

    #[test]
    fn without_types_everything_is_chr() {
        let input = doc(
            "<Node><NodeName>Prio</NodeName><Value>7</Value></Node><Node><NodeName>E</NodeName></Node>",
        );
        let trees = import(&input, &[]).unwrap();
        assert_eq!(leaf(&trees[0].node, "Prio"), Value::Chr("7".into()));
        assert_eq!(
            trees[0].node.get("E"),
            Some(&Node::empty()),
            "no value, no children: empty interior"
        );
    }

    #[test]
    fn rt_properties_format_wins_over_ddf_and_default() {
        let input = doc(
            "<Node><NodeName>x</NodeName><RTProperties><Format><float/></Format></RTProperties><Value>1.5</Value></Node>\
             <Node><NodeName>d</NodeName><RTProperties><Format><date/></Format></RTProperties><Value>2016-01-01</Value></Node>\
             <Node><NodeName>b</NodeName><RTProperties><Format><b64/></Format></RTProperties><Value>\n aGk=\n</Value></Node>",
        );
        let trees = import(&input, &[]).unwrap();
        assert_eq!(leaf(&trees[0].node, "x"), Value::Float(1.5));
        assert_eq!(leaf(&trees[0].node, "d").to_text(), "2016-01-01");
        assert_eq!(leaf(&trees[0].node, "b"), Value::B64(b"hi".to_vec()));
        // With the type, RTProperties still decides: Prio declared chr holds any text.
        let input = doc(
            "<Node><NodeName>Prio</NodeName><RTProperties><Format><chr/></Format></RTProperties><Value>x</Value></Node>",
        );
        let err = problems(&input, &types());
        assert_eq!(err, ["line 2: Net/Prio: is chr, the DDF says int"]);
    }

    #[test]
    fn entities_cdata_and_comments_in_values() {
        let input = doc(
            "<Node><NodeName>a &amp; &lt;b&gt;</NodeName><Value>x &amp; y &#65;<![CDATA[<raw> & ]]><!-- c -->&#13;z</Value></Node>",
        );
        let trees = import(&input, &[]).unwrap();
        assert_eq!(
            leaf(&trees[0].node, "a & <b>"),
            Value::Chr("x & y A<raw> & \rz".into())
        );
    }

    #[test]
    fn root_must_be_mgmt_tree() {
        let err = problems(
            "<Tree>\n<Node><NodeName>a</NodeName><Value>1</Value></Node></Tree>",
            &[],
        );
        assert_eq!(err, ["line 1: root element is <Tree>, expected <MgmtTree>"]);
    }

    #[test]
    fn broken_xml_is_one_problem_with_its_line() {
        let err = problems("<MgmtTree>\n<Node>\n</MgmtTree>", &[]);
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("line 3: "), "{err:?}");
    }

    #[test]
    fn missing_and_invalid_names() {
        let input = doc("<Node><Value>1</Value></Node>\n\
             <Node><NodeName></NodeName><Value>1</Value></Node>\n\
             <Node><NodeName>a/b</NodeName><Value>1</Value></Node>\n\
             <Node><NodeName>..</NodeName><Value>1</Value></Node>\n\
             <Node><NodeName>n</NodeName><NodeName>m</NodeName><Value>1</Value></Node>\n");
        let err = problems(&input, &[]);
        assert_eq!(
            err,
            [
                "line 2: Net/<unnamed>: <Node> has no <NodeName>",
                "line 3: Net/<unnamed>: invalid <NodeName>: node names cannot be empty",
                "line 4: Net/a/b: invalid <NodeName>: node name \"a/b\" contains '/'",
                "line 5: Net/..: invalid <NodeName>: node name \"..\" is reserved",
                "line 6: Net/n: <Node> has more than one <NodeName>",
            ]
        );
        let err = problems("<MgmtTree>\n<Node><Value>1</Value></Node></MgmtTree>", &[]);
        assert_eq!(err, ["line 2: <unnamed>: <Node> has no <NodeName>"]);
    }

    #[test]
    fn two_values_and_value_with_children() {
        let input = doc(
            "<Node><NodeName>Name</NodeName><Value>a</Value>\n<Value>b</Value></Node>\n\
             <Node><NodeName>Prio</NodeName>\n<Value>1</Value><Node><NodeName>c</NodeName><Value>x</Value></Node></Node>\n",
        );
        let err = problems(&input, &types());
        assert_eq!(
            err,
            [
                "line 3: Net/Name: has more than one <Value>",
                "line 5: Net/Prio: has both a <Value> and child <Node>s",
            ]
        );
    }

    #[test]
    fn duplicate_siblings_name_both_lines() {
        let input = doc(
            "<Node><NodeName>a</NodeName></Node>\n<Node><NodeName>a</NodeName><Value>x</Value></Node>",
        );
        let err = problems(&input, &[]);
        assert_eq!(
            err,
            ["line 3: Net/a: duplicate node a: a sibling of the same name is on line 2"]
        );
    }

    #[test]
    fn values_that_do_not_fit_their_format() {
        let input = doc(
            "<Node><NodeName>Prio</NodeName><Value>seven</Value></Node>\n\
             <Node><NodeName>a1</NodeName><Node><NodeName>On</NodeName>\n<Value>yes</Value></Node></Node>\n\
             <Node><NodeName>t</NodeName><RTProperties><Format><time/></Format></RTProperties><Value>25:00:00</Value></Node>\n",
        );
        let err = problems(&input, &types());
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(
            err[0].starts_with("line 2: Net/Prio: int value \"seven\""),
            "{err:?}"
        );
        assert!(
            err[1].starts_with("line 4: Net/a1/On: bool value \"yes\""),
            "{err:?}"
        );
        assert!(
            err[2].starts_with("line 5: Net/t: time value \"25:00:00\""),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_and_malformed_format_elements() {
        let input = doc(
            "<Node><NodeName>a</NodeName><RTProperties><Format>\n<string/></Format></RTProperties><Value>x</Value></Node>\n\
             <Node><NodeName>b</NodeName><RTProperties><Format></Format></RTProperties><Value>x</Value></Node>\n",
        );
        let err = problems(&input, &[]);
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].starts_with("line 3: Net/a: unknown node format \"string\""),
            "{err:?}"
        );
        assert_eq!(
            err[1],
            "line 4: Net/b: <Format> must hold exactly one format element"
        );
    }

    #[test]
    fn missing_value_comes_from_the_format() {
        let rt = doc(
            "<Node><NodeName>a</NodeName><RTProperties><Format><int/></Format></RTProperties></Node>",
        );
        assert_eq!(
            problems(&rt, &[]),
            ["line 2: Net/a: missing value: no <Value>, but its format is int"]
        );
        // From the DDF; the type check's "has no value" for the same node is not repeated.
        let ddf = doc("<Node><NodeName>Name</NodeName></Node>");
        assert_eq!(
            problems(&ddf, &types()),
            ["line 2: Net/Name: missing value: no <Value>, but its format is chr"]
        );
        assert!(
            import(&ddf, &[]).is_ok(),
            "without the DDF it is an empty interior node"
        );
    }

    #[test]
    fn format_and_content_disagree() {
        let input = doc(
            "<Node><NodeName>a</NodeName><RTProperties><Format><node/></Format></RTProperties><Value>x</Value></Node>\n\
             <Node><NodeName>b</NodeName><RTProperties><Format><chr/></Format></RTProperties><Node><NodeName>c</NodeName></Node></Node>\n\
             <Node><NodeName>d</NodeName><Value>x<b/></Value></Node>\n<Node><NodeName>e</NodeName><Valeu>x</Valeu></Node>\n",
        );
        assert_eq!(
            problems(&input, &[]),
            [
                "line 2: Net/a: has a <Value>, but its format is node",
                "line 3: Net/b: has child <Node>s, but its format is chr",
                "line 4: Net/d: <Value> holds element <b>: markup in a value must be escaped or in CDATA",
                "line 5: Net/e: unknown element <Valeu> in <Node>",
            ]
        );
    }

    #[test]
    fn type_check_mismatches_carry_line_and_path() {
        let input = doc("<Node><NodeName>Bogus</NodeName><Value>1</Value></Node>\n\
             <Node><NodeName>a1</NodeName>\n<Node><NodeName>Off</NodeName><Value>1</Value></Node></Node>\n");
        assert_eq!(
            problems(&input, &types()),
            [
                "line 2: Net/Bogus: is a leaf, the DDF says interior",
                "line 3: Net/a1: has 0 child(ren) named On, the DDF allows One",
                "line 4: Net/a1/Off: is not a node of this MO type",
            ]
        );
    }

    #[test]
    fn root_name_must_match_the_type() {
        let input = "<MgmtTree>\n<Node><NodeName>Other</NodeName>\
             <RTProperties><Type><DDFName> urn:test:net:1.0 </DDFName></Type></RTProperties></Node></MgmtTree>";
        assert_eq!(
            problems(input, &types()),
            ["line 2: Other: MO type urn:test:net:1.0 has root node Net, not Other"]
        );
        let trees = import(input, &[]).unwrap();
        assert_eq!(
            trees[0].moid.as_deref(),
            Some("urn:test:net:1.0"),
            "the MOID is trimmed"
        );
    }

    #[test]
    fn problems_are_all_collected_in_line_order() {
        let input = doc(
            "<Node><NodeName>Prio</NodeName><Value>x</Value></Node>\n<Node><NodeName>Bogus</NodeName></Node>\n\
             <Node><NodeName>Name</NodeName><Value>a</Value><Value>b</Value></Node>\n",
        );
        let err = import(&input, &types()).unwrap_err();
        let lines: Vec<_> = err.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert_eq!(err.to_string().lines().count(), 3);
    }

    #[test]
    fn export_is_deterministic_and_escaped() {
        let mut children = BTreeMap::new();
        children.insert("z".to_owned(), Node::Leaf(Value::Int(1)));
        children.insert("a <&>".to_owned(), Node::Leaf(Value::Chr("x\r\n&<".into())));
        children.insert("e".to_owned(), Node::empty());
        let tree = TndsTree {
            name: "R".into(),
            moid: Some("urn:x".into()),
            node: Node::Interior(children),
        };
        let out = export(std::slice::from_ref(&tree)).unwrap();
        assert!(
            out.contains("<NodeName>a &lt;&amp;&gt;</NodeName>"),
            "{out}"
        );
        assert!(out.contains("<Value>x&#13;\n&amp;&lt;</Value>"), "{out}");
        assert!(out.contains("<Format><int/></Format>"), "{out}");
        assert!(out.contains("<Format><node/></Format>"), "{out}");
        assert!(
            out.contains("<Type><DDFName>urn:x</DDFName></Type>"),
            "{out}"
        );
        assert!(
            !out.contains("<chr/>"),
            "chr is the default and is not written: {out}"
        );
        let (a, e, z) = (
            out.find("a &lt;").unwrap(),
            out.find(">e<").unwrap(),
            out.find(">z<").unwrap(),
        );
        assert!(a < e && e < z, "children in name order: {out}");
        assert_eq!(import(&out, &[]).unwrap(), vec![tree]);
    }

    #[test]
    fn characters_xml_1_0_cannot_carry_are_refused_both_ways() {
        // Import: raw or as a reference, with the line it is on.
        for (value, problem) in [
            (
                "a\0b",
                "line 3: character U+0000 is not allowed in an XML 1.0 document",
            ),
            (
                "a&#0;b",
                "line 3: character reference &#0; stands for U+0000, which XML 1.0 does not allow",
            ),
            (
                "&#x1;",
                "line 3: character reference &#x1; stands for U+0001, which XML 1.0 does not allow",
            ),
            (
                "\u{ffff}",
                "line 3: character U+FFFF is not allowed in an XML 1.0 document",
            ),
        ] {
            let input = doc(&format!(
                "<Node><NodeName>Name</NodeName>\n<Value>{value}</Value></Node>"
            ));
            assert_eq!(problems(&input, &[]), [problem], "{value:?}");
        }

        // Export: refused, naming the node, instead of writing what import refuses.
        let tree = |name: &str, moid: Option<&str>, value: Value| TndsTree {
            name: "R".into(),
            moid: moid.map(str::to_owned),
            node: Node::Interior(BTreeMap::from([(name.to_owned(), Node::Leaf(value))])),
        };
        let refusal = |t: TndsTree| export(&[t]).unwrap_err();
        let err = refusal(tree("n", None, Value::Chr("a\0b".into())));
        assert_eq!(
            err.to_string(),
            "R/n: value holds U+0000, which a TNDS (XML 1.0) document cannot carry"
        );
        for (t, path, what, ch) in [
            (
                tree("n", None, Value::Chr("\u{1}".into())),
                "R/n",
                "value",
                '\u{1}',
            ),
            (
                tree("n", None, Value::Xml("<a>\u{fffe}</a>".into())),
                "R/n",
                "value",
                '\u{fffe}',
            ),
            (
                tree("n\u{ffff}", None, Value::Null),
                "R/n\u{ffff}",
                "name",
                '\u{ffff}',
            ),
            (
                tree("n", Some("urn:\u{b}"), Value::Null),
                "R",
                "MOID",
                '\u{b}',
            ),
        ] {
            let want = ExportError {
                path: path.into(),
                what,
                ch,
            };
            assert_eq!(refusal(t), want);
        }

        // What XML 1.0 can carry travels: any bytes in base64, any JSON (U+FFFE and U+FFFF
        // as JSON escapes), CR and other controls as references.
        let mut children = BTreeMap::new();
        let leaves = [
            ("b64", Value::B64(vec![0, 1, 0xff])),
            ("bin", Value::Bin(vec![0])),
            ("chr", Value::Chr("\r\u{7f}\u{85}\t".into())),
            (
                "json",
                Value::Json(serde_json::json!({"k\u{ffff}": "\u{0}\u{fffe}\u{1}"})),
            ),
        ];
        for (name, value) in leaves {
            children.insert(name.to_owned(), Node::Leaf(value));
        }
        let t = TndsTree {
            name: "R".into(),
            moid: None,
            node: Node::Interior(children),
        };
        let out = export(std::slice::from_ref(&t)).unwrap();
        assert!(out.contains("<Value>AAH/</Value>"), "{out}");
        assert!(out.contains("<Value>&#13;&#127;&#133;\t</Value>"), "{out}");
        assert!(out.contains(r"\uffff"), "{out}");
        assert_eq!(import(&out, &[]).unwrap(), vec![t]);
    }

    mod round_trip {
        use proptest::prelude::*;

        use super::super::*;
        use crate::tree::value::{Date, Time};

        fn name() -> impl Strategy<Value = String> {
            "[aB1 &<>.-]{1,6}".prop_filter("valid node name", |n| check_name(n).is_ok())
        }

        /// Text of any characters, those XML 1.0 cannot carry included (rarely enough that
        /// most trees can still be exported).
        fn text() -> impl Strategy<Value = String> {
            let ch = prop_oneof![
                8 => proptest::char::range('a', 'e'),
                2 => Just(' '),
                2 => Just('&'),
                2 => Just('<'),
                2 => Just('>'),
                2 => Just(']'),
                2 => Just('\r'),
                2 => Just('\n'),
                2 => Just('\t'),
                2 => Just('\u{7f}'),
                2 => Just('\u{85}'),
                4 => any::<char>(),
                1 => prop_oneof![
                    Just('\0'),
                    Just('\u{1}'),
                    Just('\u{b}'),
                    Just('\u{1f}'),
                    Just('\u{fffe}'),
                    Just('\u{ffff}'),
                ],
            ];
            proptest::collection::vec(ch, 0..12).prop_map(String::from_iter)
        }

        fn date() -> impl Strategy<Value = Date> {
            (0..10000u32, 1..=12u32, 1..=31u32, any::<bool>()).prop_map(|(y, m, d, dashed)| {
                let s = if dashed {
                    format!("{y:04}-{m:02}-{d:02}")
                } else {
                    format!("{y:04}{m:02}{d:02}")
                };
                Date::parse(&s).unwrap_or_else(|| panic!("generated date {s}"))
            })
        }

        fn time() -> impl Strategy<Value = Time> {
            let zone = prop_oneof![
                Just(String::new()),
                Just("Z".to_owned()),
                (0..24u32, 0..60u32, any::<bool>(), any::<bool>()).prop_map(
                    |(h, m, neg, colon)| {
                        let sign = if neg { '-' } else { '+' };
                        if colon {
                            format!("{sign}{h:02}:{m:02}")
                        } else {
                            format!("{sign}{h:02}{m:02}")
                        }
                    }
                ),
            ];
            let frac = proptest::option::of("[0-9]{1,3}");
            (0..24u32, 0..60u32, 0..=60u32, any::<bool>(), frac, zone).prop_map(
                |(h, m, s, colon, frac, zone)| {
                    let clock = if colon {
                        format!("{h:02}:{m:02}:{s:02}")
                    } else {
                        format!("{h:02}{m:02}{s:02}")
                    };
                    let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
                    let t = format!("{clock}{frac}{zone}");
                    Time::parse(&t).unwrap_or_else(|| panic!("generated time {t}"))
                },
            )
        }

        fn json() -> impl Strategy<Value = serde_json::Value> {
            use serde_json::Value as J;
            let scalar = prop_oneof![
                Just(J::Null),
                any::<i64>().prop_map(J::from),
                any::<bool>().prop_map(J::Bool),
                text().prop_map(J::String),
            ];
            scalar.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(J::Array),
                    proptest::collection::btree_map(text(), inner, 0..4)
                        .prop_map(|m| J::Object(m.into_iter().collect())),
                ]
            })
        }

        fn value() -> impl Strategy<Value = Value> {
            let bytes = || proptest::collection::vec(any::<u8>(), 0..10);
            prop_oneof![
                1 => Just(Value::Null),
                1 => bytes().prop_map(Value::B64),
                1 => bytes().prop_map(Value::Bin),
                1 => any::<bool>().prop_map(Value::Bool),
                3 => text().prop_map(Value::Chr),
                1 => any::<i64>().prop_map(Value::Int),
                1 => text().prop_map(Value::Xml),
                1 => date().prop_map(Value::Date),
                1 => time().prop_map(Value::Time),
                1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::Float),
                1 => json().prop_map(Value::Json),
            ]
        }

        fn node() -> impl Strategy<Value = Node> {
            value()
                .prop_map(Node::Leaf)
                .prop_recursive(4, 40, 5, |inner| {
                    proptest::collection::btree_map(name(), inner, 0..5).prop_map(Node::Interior)
                })
        }

        fn tree() -> impl Strategy<Value = TndsTree> {
            (
                name(),
                proptest::option::of("urn:[a-z0-9:.-]{1,12}"),
                node(),
            )
                .prop_map(|(name, moid, node)| TndsTree { name, moid, node })
        }

        /// Whether every name and text value under `node` is XML 1.0 text (`json` values
        /// always are once written; `b64` and `bin` are base64).
        fn carriable(name: &str, node: &Node) -> bool {
            let text_ok = |t: &str| t.chars().all(xml::is_xml_char);
            text_ok(name)
                && match node {
                    Node::Leaf(Value::Chr(t) | Value::Xml(t)) => text_ok(t),
                    Node::Leaf(_) => true,
                    Node::Interior(children) => children.iter().all(|(n, c)| carriable(n, c)),
                }
        }

        proptest! {
            #[test]
            fn import_reads_back_what_export_wrote(trees in proptest::collection::vec(tree(), 0..3)) {
                let carried = trees.iter().all(|t| {
                    carriable(&t.name, &t.node) && t.moid.iter().all(|m| m.chars().all(xml::is_xml_char))
                });
                match export(&trees) {
                    Ok(doc) => {
                        prop_assert!(carried, "wrote what XML 1.0 cannot carry:\n{}", doc);
                        let back = import(&doc, &[]).map_err(|e| TestCaseError::fail(format!("{e}\n{doc}")))?;
                        prop_assert_eq!(back, trees);
                    }
                    Err(e) => {
                        prop_assert!(!carried, "refused a tree XML 1.0 can carry: {}", e);
                        prop_assert!(!xml::is_xml_char(e.ch), "{}", e);
                    }
                }
            }
        }
    }
}
