//! The DDF reader: OMA DM Device Description Framework files (DM 1.2/1.3 DDF XML, which
//! DM 2.0 keeps) into [`NodeDef`] trees and [`MoType`]s.
//!
//! Real files vary: vendor namespaces (`MSFT:` elements are skipped), `DFProperties`
//! children in any order, placeholders written as empty, whitespace, `*` or `<x>` names,
//! `Path` as `.`, `./Vendor/MSFT/` or absent, several top-level `Node`s per file. A file
//! that is genuinely broken is refused with the line and the reason.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::format::Format;
use super::mo_type::{AccessTypes, DefName, MoType, NodeDef, Occurrence, Scope};
use super::xml::{self, Element};

/// A parsed DDF file.
#[derive(Debug, Clone, PartialEq)]
pub struct DdfFile {
    pub ver_dtd: Option<String>,
    pub man: Option<String>,
    pub model: Option<String>,
    pub nodes: Vec<TopNode>,
}

/// A top-level `Node` of a DDF and the `Path` it hangs from in a DM 1.x tree, if given.
#[derive(Debug, Clone, PartialEq)]
pub struct TopNode {
    pub path: Option<String>,
    pub def: NodeDef,
}

/// Why a DDF file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}line {line}: {reason}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
pub struct DdfError {
    pub file: Option<PathBuf>,
    pub line: usize,
    pub reason: String,
}

impl DdfFile {
    /// Every node in the file that carries a MOID (`DFType/DDFName` holding a URN), as an
    /// MO type rooted there. Nested MOs are found too.
    pub fn mo_types(&self) -> Vec<MoType> {
        fn collect(def: &NodeDef, out: &mut Vec<MoType>) {
            if let Some(moid) = def.type_name.as_deref().filter(|t| t.starts_with("urn:")) {
                out.push(MoType {
                    moid: moid.to_owned(),
                    root: def.clone(),
                });
            }
            for c in &def.children {
                collect(c, out);
            }
        }
        let mut out = Vec::new();
        for top in &self.nodes {
            collect(&top.def, &mut out);
        }
        out
    }

    /// Number of nodes described in the file.
    pub fn node_count(&self) -> usize {
        self.nodes.iter().map(|n| n.def.count()).sum()
    }
}

/// Reads and parses a DDF file; errors name the file.
pub fn load(path: &Path) -> Result<DdfFile, DdfError> {
    let with_file = |mut e: DdfError| {
        e.file = Some(path.to_owned());
        e
    };
    let meta = std::fs::metadata(path).map_err(|e| with_file(io_error(e)))?;
    if meta.len() > xml::MAX_BYTES as u64 {
        return Err(with_file(DdfError {
            file: None,
            line: 1,
            reason: format!("file is larger than {} bytes", xml::MAX_BYTES),
        }));
    }
    let bytes = std::fs::read(path).map_err(|e| with_file(io_error(e)))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        with_file(DdfError {
            file: None,
            line: 1,
            reason: format!("not UTF-8 ({e})"),
        })
    })?;
    parse(&text).map_err(with_file)
}

/// Parses DDF XML text.
pub fn parse(input: &str) -> Result<DdfFile, DdfError> {
    let root = xml::parse(input).map_err(|e| DdfError {
        file: None,
        line: e.line,
        reason: e.reason,
    })?;
    if root.name != "MgmtTree" {
        return Err(at(
            &root,
            format!("root element is <{}>, expected <MgmtTree>", root.name),
        ));
    }
    let mut nodes = Vec::new();
    for n in root.children_named("Node") {
        nodes.push(TopNode {
            path: n.child_text("Path").map(str::to_owned),
            def: node_def(n)?,
        });
    }
    if nodes.is_empty() {
        return Err(at(&root, "<MgmtTree> has no <Node>".into()));
    }
    Ok(DdfFile {
        ver_dtd: root.child_text("VerDTD").map(str::to_owned),
        man: root.child_text("Man").map(str::to_owned),
        model: root.child_text("Mod").map(str::to_owned),
        nodes,
    })
}

fn node_def(n: &Element) -> Result<NodeDef, DdfError> {
    let name_el = n
        .child("NodeName")
        .ok_or_else(|| at(n, "<Node> has no <NodeName>".into()))?;
    let name = def_name(name_el.text.trim());
    let props = n
        .child("DFProperties")
        .ok_or_else(|| at(n, format!("node {name} has no <DFProperties>")))?;

    let mut access = AccessTypes::empty();
    if let Some(a) = props.child("AccessType") {
        for t in a.children.iter().filter(|t| t.prefix.is_none()) {
            match AccessTypes::from_name(&t.name) {
                Some(bit) => access.insert(bit),
                None if t.name == "Copy" => {}
                None => {
                    return Err(at(
                        t,
                        format!("node {name}: unknown access type <{}>", t.name),
                    ));
                }
            }
        }
    }
    let format_el = props
        .child("DFFormat")
        .ok_or_else(|| at(props, format!("node {name} has no <DFFormat>")))?;
    let format = match only_child(format_el) {
        Some(f) => f
            .name
            .parse::<Format>()
            .map_err(|e| at(f, format!("node {name}: {e}")))?,
        None => {
            return Err(at(
                format_el,
                format!("node {name}: <DFFormat> must hold one format element"),
            ));
        }
    };
    let occurrence = match props.child("Occurrence") {
        None => Occurrence::One,
        Some(o) => occurrence(o).map_err(|reason| at(o, format!("node {name}: {reason}")))?,
    };
    let scope = match props
        .child("Scope")
        .and_then(only_child)
        .map(|s| s.name.as_str())
    {
        None | Some("Dynamic") => Scope::Dynamic,
        Some("Permanent") => Scope::Permanent,
        Some(other) => return Err(at(props, format!("node {name}: unknown scope <{other}>"))),
    };
    let case_sensitive = !matches!(
        props
            .child("CaseSense")
            .and_then(only_child)
            .map(|c| c.name.as_str()),
        Some("CIS")
    );
    let df_type = props.child("DFType");
    let text_of = |el: Option<&Element>, child: &str| {
        el.and_then(|e| e.child_text(child))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };

    let mut children = Vec::new();
    let mut seen = HashSet::new();
    for c in n.children_named("Node") {
        let child = node_def(c)?;
        if let DefName::Fixed(fixed) = &child.name
            && !seen.insert(fixed.clone())
        {
            return Err(at(c, format!("node {name} has two children named {fixed}")));
        }
        children.push(child);
    }
    if format != Format::Node && !children.is_empty() {
        return Err(at(
            n,
            format!("node {name} has format {format} but has child nodes"),
        ));
    }
    Ok(NodeDef {
        name,
        format,
        access,
        occurrence,
        scope,
        default: props.child("DefaultValue").map(|d| d.text.clone()),
        description: text_of(Some(props), "Description"),
        title: text_of(Some(props), "DFTitle"),
        case_sensitive,
        mime: text_of(df_type, "MIME"),
        type_name: text_of(df_type, "DDFName"),
        children,
    })
}

fn def_name(text: &str) -> DefName {
    if text.is_empty() || text == "*" || (text.starts_with('<') && text.ends_with('>')) {
        DefName::Placeholder(text.to_owned())
    } else {
        DefName::Fixed(text.to_owned())
    }
}

fn occurrence(o: &Element) -> Result<Occurrence, String> {
    let el = only_child(o).ok_or("<Occurrence> must hold one element")?;
    let n = || -> Result<u32, String> {
        el.text
            .trim()
            .parse()
            .map_err(|_| format!("<{}> needs a count, got {:?}", el.name, el.text.trim()))
    };
    Ok(match el.name.as_str() {
        "One" => Occurrence::One,
        "ZeroOrOne" => Occurrence::ZeroOrOne,
        "ZeroOrMore" => Occurrence::ZeroOrMore,
        "OneOrMore" => Occurrence::OneOrMore,
        "ZeroOrN" => Occurrence::ZeroOrN(n()?),
        "OneOrN" => Occurrence::OneOrN(n()?),
        other => return Err(format!("unknown occurrence <{other}>")),
    })
}

fn only_child(e: &Element) -> Option<&Element> {
    let mut it = e.children.iter().filter(|c| c.prefix.is_none());
    match (it.next(), it.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

fn at(e: &Element, reason: String) -> DdfError {
    DdfError {
        file: None,
        line: e.line,
        reason,
    }
}

fn io_error(e: std::io::Error) -> DdfError {
    DdfError {
        file: None,
        line: 0,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"<MgmtTree><VerDTD>1.2</VerDTD>
<Node><NodeName>Root</NodeName><DFProperties><AccessType><Get/></AccessType>
  <DFFormat><node/></DFFormat><Scope><Permanent/></Scope>
  <DFType><DDFName>urn:oma:mo:test:1.0</DDFName></DFType></DFProperties>
  <Node><NodeName></NodeName><DFProperties><DFFormat><node/></DFFormat>
    <Occurrence><ZeroOrN>4</ZeroOrN></Occurrence><CaseSense><CIS/></CaseSense></DFProperties>
    <Node><NodeName>Val</NodeName><DFProperties><AccessType><Get/><Replace/></AccessType>
      <DFFormat><int/></DFFormat><DefaultValue>7</DefaultValue><MSFT:Applicability/></DFProperties></Node>
  </Node>
</Node></MgmtTree>"#;

    #[test]
    fn reads_properties_and_placeholders() {
        let f = parse(SMALL).unwrap();
        let types = f.mo_types();
        assert_eq!(types.len(), 1);
        let t = &types[0];
        assert_eq!(t.moid, "urn:oma:mo:test:1.0");
        assert_eq!(t.root.scope, Scope::Permanent);
        let entry = &t.root.children[0];
        assert!(entry.name.is_placeholder());
        assert_eq!(entry.occurrence, Occurrence::ZeroOrN(4));
        assert!(!entry.case_sensitive);
        let val = t.def_at("anything/Val").unwrap();
        assert_eq!(val.format, Format::Int);
        assert_eq!(val.default.as_deref(), Some("7"));
        assert_eq!(val.access.to_string(), "Get,Replace");
        assert_eq!(f.node_count(), 3);
    }

    #[test]
    fn broken_files_name_line_and_reason() {
        let cases = [
            ("<Tree/>", 1, "expected <MgmtTree>"),
            (
                "<MgmtTree>\n<Node><DFProperties/></Node></MgmtTree>",
                2,
                "no <NodeName>",
            ),
            (
                "<MgmtTree>\n<Node><NodeName>a</NodeName><DFProperties>\n<DFFormat><string/></DFFormat></DFProperties></Node></MgmtTree>",
                3,
                "unknown node format",
            ),
            (
                "<MgmtTree><Node><NodeName>a</NodeName><DFProperties><DFFormat><chr/></DFFormat></DFProperties>\n<Node><NodeName>b</NodeName><DFProperties><DFFormat><chr/></DFFormat></DFProperties></Node></Node></MgmtTree>",
                1,
                "has format chr but has child nodes",
            ),
            (
                "<MgmtTree><Node><NodeName>a</NodeName><DFProperties><DFFormat><node/></DFFormat>\n<Occurrence><ZeroOrN>x</ZeroOrN></Occurrence></DFProperties></Node></MgmtTree>",
                2,
                "needs a count",
            ),
        ];
        for (doc, line, reason) in cases {
            let err = parse(doc).unwrap_err();
            assert_eq!(err.line, line, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn duplicate_fixed_siblings_are_refused() {
        let doc = "<MgmtTree><Node><NodeName>a</NodeName><DFProperties><DFFormat><node/></DFFormat></DFProperties>\
            <Node><NodeName>b</NodeName><DFProperties><DFFormat><chr/></DFFormat></DFProperties></Node>\
            <Node><NodeName>b</NodeName><DFProperties><DFFormat><chr/></DFFormat></DFProperties></Node></Node></MgmtTree>";
        assert!(
            parse(doc)
                .unwrap_err()
                .reason
                .contains("two children named b")
        );
    }

    #[test]
    fn load_names_the_file() {
        let err = load(Path::new("/nonexistent/x.ddf")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/x.ddf: "), "{err}");
    }
}
