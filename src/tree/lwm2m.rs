//! LwM2M object definitions (the OMA registry's object XML) read into [`Object`]s, each
//! object's MO type (docs/gateway.md §2): MOID the `ObjectURN`, root named by the
//! `ObjectID`, one node per resource named by its decimal id; and the [`Catalog`] of the
//! objects loaded from the configured directories, with §2.2's version rule.
//!
//! One file holds one object, as the registry publishes them. A file of reusable resources
//! (`Common.xml`), a schema, or anything else is refused with the reason, never half-read.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use super::format::Format;
use super::mo_type::{AccessTypes, DefName, MoType, NodeDef, Occurrence, Scope};
use super::uri::Moid;
use super::xml::{self, Element};

/// Largest object or resource id (65535 is reserved by LwM2M).
pub const MAX_ID: u16 = 65534;
/// Most resources one object may define.
pub const MAX_RESOURCES: usize = 1024;
/// Longest object or resource `Name`.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest `Description1` or resource `Description`.
pub const MAX_DESCRIPTION_BYTES: usize = 16 * 1024;
/// Longest `Units` or `RangeEnumeration`.
pub const MAX_DETAIL_BYTES: usize = 1024;
/// Largest object file read.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// An LwM2M resource's data type (the registry's `Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    String,
    Integer,
    Unsigned,
    Float,
    Boolean,
    Opaque,
    Time,
    Objlnk,
    Corelnk,
    /// No type: an executable resource.
    None,
}

/// One resource of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub id: u16,
    pub name: String,
    pub kind: Kind,
    /// `MultipleInstances` is `Multiple`.
    pub multiple: bool,
    pub read: bool,
    pub write: bool,
    pub execute: bool,
    /// `Mandatory` is `Mandatory`.
    pub mandatory: bool,
    /// `RangeEnumeration`, trimmed (empty when none).
    pub range: String,
    /// `Units`, trimmed (empty when none).
    pub units: String,
    /// `Description`, trimmed.
    pub description: String,
}

/// One object definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub id: u16,
    /// The `ObjectURN`: the MOID of its MO type.
    pub urn: String,
    /// `ObjectVersion` (`1.0` when absent).
    pub version: String,
    pub name: String,
    /// `Description1`, trimmed.
    pub description: String,
    /// `MultipleInstances` is `Multiple`: a client may hold several instances.
    pub multiple: bool,
    /// `Mandatory` is `Mandatory`.
    pub mandatory: bool,
    /// In file order.
    pub resources: Vec<Resource>,
}

/// The objects loaded from the object directories, one per `ObjectURN`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// In the order they were last loaded.
    objects: Vec<Object>,
}

/// Why an object file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{problem}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default(), Line(*line))]
pub struct Lwm2mError {
    pub file: Option<PathBuf>,
    /// 1-based line of the offending element; 0 when the problem is the file as a whole.
    pub line: usize,
    pub problem: Problem,
}

/// What is wrong with an object file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Io(String),
    #[error("file is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("not UTF-8 ({0})")]
    NotUtf8(String),
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("not an LwM2M object definition: {0}")]
    NotAnObject(String),
    #[error("<{parent}> has no <{child}>")]
    Missing {
        parent: &'static str,
        child: &'static str,
    },
    #[error("{field} {text:?} is not {expected}")]
    Invalid {
        field: &'static str,
        text: String,
        expected: &'static str,
    },
    #[error("<Item> has no ID attribute")]
    MissingId,
    #[error("ObjectURN is not a MOID: {0}")]
    Urn(String),
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("more than {MAX_RESOURCES} resources")]
    TooManyResources,
    #[error("resource {0} is defined twice")]
    DuplicateResource(u16),
}

/// Shows `line N: ` for a known line, nothing for 0.
struct Line(usize);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, "line {n}: "),
        }
    }
}

impl Lwm2mError {
    fn at(line: usize, problem: Problem) -> Lwm2mError {
        Lwm2mError {
            file: None,
            line,
            problem,
        }
    }
}

/// Reads and parses the object file at `path`; errors name the file.
pub fn load(path: &Path) -> Result<Object, Lwm2mError> {
    let with_file = |mut e: Lwm2mError| {
        e.file = Some(path.to_owned());
        e
    };
    let io = |e: std::io::Error| with_file(Lwm2mError::at(0, Problem::Io(e.to_string())));
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(with_file(Lwm2mError::at(0, Problem::TooLarge)));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| with_file(Lwm2mError::at(0, Problem::NotUtf8(e.to_string()))))?;
    parse(&text).map_err(with_file)
}

/// Parses one object definition in the OMA registry format.
pub fn parse(text: &str) -> Result<Object, Lwm2mError> {
    let root = xml::parse(text).map_err(|e| Lwm2mError::at(e.line, Problem::Xml(e.reason)))?;
    let not_object = |el: &Element, why: String| Lwm2mError::at(el.line, Problem::NotAnObject(why));
    if root.name != "LWM2M" {
        return Err(not_object(
            &root,
            format!("the root element is <{}>, not <LWM2M>", root.name),
        ));
    }
    let mut objects = root.children_named("Object");
    let Some(object) = objects.next() else {
        return Err(not_object(&root, "<LWM2M> holds no <Object>".into()));
    };
    if let Some(extra) = objects.next() {
        return Err(not_object(
            extra,
            "<LWM2M> holds more than one <Object> (one object per file)".into(),
        ));
    }
    if let Some(kind) = object.attribute("ObjectType")
        && kind != "MODefinition"
    {
        return Err(not_object(
            object,
            format!("<Object ObjectType=\"{kind}\"> is not an object definition (MODefinition)"),
        ));
    }
    let field = |name: &'static str| required(object, "Object", name);
    let id = id_of(field("ObjectID")?, "ObjectID")?;
    let urn_el = field("ObjectURN")?;
    let urn = urn_el.text.trim();
    Moid::parse(urn).map_err(|e| Lwm2mError::at(urn_el.line, Problem::Urn(e.reason)))?;
    let version = match object.child("ObjectVersion") {
        Some(v) if !v.text.trim().is_empty() => {
            let text = v.text.trim();
            version_of(text).ok_or_else(|| {
                Lwm2mError::at(
                    v.line,
                    Problem::Invalid {
                        field: "ObjectVersion",
                        text: text.to_owned(),
                        expected: "a version such as 1.2",
                    },
                )
            })?;
            text.to_owned()
        }
        _ => urn_version(urn).unwrap_or("1.0").to_owned(),
    };
    let resources_el = field("Resources")?;
    let mut resources = Vec::new();
    let mut seen = BTreeSet::new();
    for item in resources_el.children_named("Item") {
        if resources.len() == MAX_RESOURCES {
            return Err(Lwm2mError::at(item.line, Problem::TooManyResources));
        }
        let resource = resource(item)?;
        if !seen.insert(resource.id) {
            return Err(Lwm2mError::at(
                item.line,
                Problem::DuplicateResource(resource.id),
            ));
        }
        resources.push(resource);
    }
    Ok(Object {
        id,
        urn: urn.to_owned(),
        version,
        name: bounded(field("Name")?, "Name", MAX_NAME_BYTES)?,
        description: match object.child("Description1") {
            Some(d) => bounded(d, "Description1", MAX_DESCRIPTION_BYTES)?,
            None => String::new(),
        },
        multiple: multiple_of(field("MultipleInstances")?)?,
        mandatory: mandatory_of(field("Mandatory")?)?,
        resources,
    })
}

fn resource(item: &Element) -> Result<Resource, Lwm2mError> {
    let id_text = item
        .attribute("ID")
        .ok_or_else(|| Lwm2mError::at(item.line, Problem::MissingId))?;
    let id = id_value(id_text, "Item ID", item.line)?;
    let field = |name: &'static str| required(item, "Item", name);
    let ops_el = field("Operations")?;
    let (read, write, execute) = match ops_el.text.trim() {
        "" => (false, false, false),
        "R" => (true, false, false),
        "W" => (false, true, false),
        "RW" => (true, true, false),
        "E" => (false, false, true),
        other => return Err(invalid(ops_el, "Operations", other, "R, W, RW, E or empty")),
    };
    let optional = |name: &'static str, max: usize| match item.child(name) {
        Some(el) => bounded(el, name, max),
        None => Ok(String::new()),
    };
    Ok(Resource {
        id,
        name: bounded(field("Name")?, "Name", MAX_NAME_BYTES)?,
        kind: kind_of(field("Type")?)?,
        multiple: multiple_of(field("MultipleInstances")?)?,
        read,
        write,
        execute,
        mandatory: mandatory_of(field("Mandatory")?)?,
        range: optional("RangeEnumeration", MAX_DETAIL_BYTES)?,
        units: optional("Units", MAX_DETAIL_BYTES)?,
        description: optional("Description", MAX_DESCRIPTION_BYTES)?,
    })
}

fn required<'a>(
    parent: &'a Element,
    parent_name: &'static str,
    child: &'static str,
) -> Result<&'a Element, Lwm2mError> {
    parent.child(child).ok_or_else(|| {
        Lwm2mError::at(
            parent.line,
            Problem::Missing {
                parent: parent_name,
                child,
            },
        )
    })
}

fn bounded(el: &Element, field: &'static str, max: usize) -> Result<String, Lwm2mError> {
    let text = el.text.trim();
    if text.len() > max {
        return Err(Lwm2mError::at(el.line, Problem::TooLong { field, max }));
    }
    Ok(text.to_owned())
}

fn id_of(el: &Element, field: &'static str) -> Result<u16, Lwm2mError> {
    id_value(el.text.trim(), field, el.line)
}

fn id_value(text: &str, field: &'static str, line: usize) -> Result<u16, Lwm2mError> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|id| *id <= MAX_ID)
        .ok_or_else(|| {
            Lwm2mError::at(
                line,
                Problem::Invalid {
                    field,
                    text: text.to_owned(),
                    expected: "an id from 0 to 65534",
                },
            )
        })
}

fn kind_of(el: &Element) -> Result<Kind, Lwm2mError> {
    let text = el.text.trim();
    Ok(match text.to_ascii_lowercase().as_str() {
        "" => Kind::None,
        "string" => Kind::String,
        "integer" => Kind::Integer,
        "unsigned integer" => Kind::Unsigned,
        "float" => Kind::Float,
        "boolean" => Kind::Boolean,
        "opaque" => Kind::Opaque,
        "time" => Kind::Time,
        "objlnk" => Kind::Objlnk,
        "corelnk" => Kind::Corelnk,
        _ => return Err(invalid(el, "Type", text, "an LwM2M data type")),
    })
}

fn multiple_of(el: &Element) -> Result<bool, Lwm2mError> {
    match el.text.trim() {
        "Multiple" => Ok(true),
        "Single" => Ok(false),
        other => Err(invalid(
            el,
            "MultipleInstances",
            other,
            "Multiple or Single",
        )),
    }
}

fn mandatory_of(el: &Element) -> Result<bool, Lwm2mError> {
    match el.text.trim() {
        "Mandatory" => Ok(true),
        "Optional" => Ok(false),
        other => Err(invalid(el, "Mandatory", other, "Mandatory or Optional")),
    }
}

fn invalid(el: &Element, field: &'static str, text: &str, expected: &'static str) -> Lwm2mError {
    Lwm2mError::at(
        el.line,
        Problem::Invalid {
            field,
            text: text.to_owned(),
            expected,
        },
    )
}

/// `major.minor`, both decimal.
fn version_of(text: &str) -> Option<(u16, u16)> {
    let (major, minor) = text.split_once('.')?;
    let number = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    Some((number(major)?, number(minor)?))
}

/// The version an `ObjectURN` ends in (`urn:oma:lwm2m:oma:3:1.2` → `1.2`), if any.
fn urn_version(urn: &str) -> Option<&str> {
    urn.rsplit_once(':')
        .map(|(_, last)| last)
        .filter(|v| version_of(v).is_some())
}

impl Kind {
    /// The DM format of a resource of this type (docs/gateway.md §2.4).
    pub fn format(self) -> Format {
        match self {
            Kind::String | Kind::Objlnk | Kind::Corelnk => Format::Chr,
            Kind::Integer | Kind::Unsigned | Kind::Time => Format::Int,
            Kind::Float => Format::Float,
            Kind::Boolean => Format::Bool,
            Kind::Opaque => Format::Bin,
            Kind::None => Format::Null,
        }
    }
}

impl Resource {
    /// The DDF access types of its operations (docs/gateway.md §2.5): R → Get, W → Replace,
    /// E → Exec.
    pub fn access(&self) -> AccessTypes {
        let mut access = AccessTypes::empty();
        for (on, bit) in [
            (self.read, AccessTypes::GET),
            (self.write, AccessTypes::REPLACE),
            (self.execute, AccessTypes::EXEC),
        ] {
            if on {
                access.insert(bit);
            }
        }
        access
    }

    /// The node definition of this resource, named by its id; a multiple resource is an
    /// interior node whose `<x>` children are the resource instances.
    fn node_def(&self) -> NodeDef {
        let format = if self.execute && !self.read && !self.write {
            Format::Null
        } else {
            self.kind.format()
        };
        let value = NodeDef {
            name: DefName::Fixed(self.id.to_string()),
            format,
            access: self.access(),
            occurrence: Occurrence::ZeroOrOne,
            scope: Scope::Permanent,
            default: None,
            description: Some(self.describe()),
            title: Some(self.name.clone()),
            case_sensitive: true,
            mime: None,
            type_name: None,
            children: Vec::new(),
        };
        if !self.multiple {
            return value;
        }
        let instance = NodeDef {
            name: DefName::Placeholder("<x>".into()),
            occurrence: Occurrence::ZeroOrMore,
            description: None,
            ..value.clone()
        };
        NodeDef {
            format: Format::Node,
            access: AccessTypes::GET,
            children: vec![instance],
            ..value
        }
    }

    /// `Description`, then units, range and whether the resource is mandatory, one a line.
    fn describe(&self) -> String {
        let mut lines = Vec::new();
        if !self.description.is_empty() {
            lines.push(self.description.clone());
        }
        if !self.units.is_empty() {
            lines.push(format!("Units: {}", self.units));
        }
        if !self.range.is_empty() {
            lines.push(format!("Range: {}", self.range));
        }
        lines.push(
            if self.mandatory {
                "Mandatory"
            } else {
                "Optional"
            }
            .to_owned(),
        );
        lines.join("\n")
    }
}

impl Object {
    /// The object's MO type (docs/gateway.md §2.2–2.5): MOID the `ObjectURN`, a Get-only
    /// permanent root named by the `ObjectID`, one node per resource that has operations.
    pub fn mo_type(&self) -> MoType {
        let root = NodeDef {
            name: DefName::Fixed(self.id.to_string()),
            format: Format::Node,
            access: AccessTypes::GET,
            occurrence: Occurrence::One,
            scope: Scope::Permanent,
            default: None,
            description: Some(self.description.clone()).filter(|d| !d.is_empty()),
            title: Some(self.name.clone()),
            case_sensitive: true,
            mime: None,
            type_name: Some(self.urn.clone()),
            children: self
                .resources
                .iter()
                .filter(|r| r.read || r.write || r.execute)
                .map(Resource::node_def)
                .collect(),
        };
        MoType {
            moid: self.urn.clone(),
            root,
        }
    }

    /// The resource with id `id`, if defined.
    pub fn resource(&self, id: u16) -> Option<&Resource> {
        self.resources.iter().find(|r| r.id == id)
    }

    /// The version as (major, minor). An `Object` from [`parse`] always holds a valid
    /// version; one built otherwise with an unreadable version reads as 1.0.
    pub fn major_minor(&self) -> (u16, u16) {
        version_of(&self.version).unwrap_or((1, 0))
    }
}

impl Catalog {
    /// Every `*.xml` file in `dirs` (dirs in order, files in name order within each; a
    /// missing dir is skipped). A file that cannot be used is left out and returned with
    /// why; a later object with the same `ObjectURN` replaces an earlier one.
    pub fn load_dirs(dirs: &[PathBuf]) -> (Catalog, Vec<Lwm2mError>) {
        let mut catalog = Catalog::default();
        let mut refused = Vec::new();
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    refused.push(Lwm2mError {
                        file: Some(dir.clone()),
                        line: 0,
                        problem: Problem::Io(e.to_string()),
                    });
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "xml") && p.is_file())
                .collect();
            files.sort();
            for file in files {
                match load(&file) {
                    Ok(object) => catalog.insert(object),
                    Err(e) => refused.push(e),
                }
            }
        }
        (catalog, refused)
    }

    /// Adds `object`, replacing the one with the same `ObjectURN`, if any.
    pub fn insert(&mut self, object: Object) {
        self.objects.retain(|o| o.urn != object.urn);
        self.objects.push(object);
    }

    /// Every object, in the order they were last loaded.
    pub fn objects(&self) -> &[Object] {
        &self.objects
    }

    /// The MO type of every object.
    pub fn mo_types(&self) -> Vec<MoType> {
        self.objects.iter().map(Object::mo_type).collect()
    }

    /// The definition for object `oid` at `version` as a registration gives it (`ver`;
    /// `None` means 1.0), by docs/gateway.md §2.2: that version if loaded, else the highest
    /// loaded minor version of the same major; `None` when neither is loaded or `version`
    /// is not `major.minor`. Of two loaded with the same id and version (different URNs),
    /// the one loaded last.
    pub fn find(&self, oid: u16, version: Option<&str>) -> Option<&Object> {
        let (major, minor) = version_of(version.unwrap_or("1.0"))?;
        let same_major = self
            .objects
            .iter()
            .filter(|o| o.id == oid && o.major_minor().0 == major);
        same_major
            .clone()
            .rfind(|o| o.major_minor().1 == minor)
            .or_else(|| same_major.max_by_key(|o| o.major_minor().1))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::tree::json::node_from_json;
    use crate::tree::node::Node;
    use crate::tree::value::Value;

    fn corpus() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/lwm2m")
    }

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lwm2m/3303.xml")
    }

    fn item(id: &str, ops: &str, ty: &str, multiple: &str) -> String {
        format!(
            "<Item ID=\"{id}\"><Name>R{id}</Name><Operations>{ops}</Operations>\
             <MultipleInstances>{multiple}</MultipleInstances><Mandatory>Optional</Mandatory>\
             <Type>{ty}</Type><RangeEnumeration/><Units/><Description>d</Description></Item>"
        )
    }

    fn object_xml(id: &str, urn: &str, version: &str, items: &str) -> String {
        format!(
            "<LWM2M>\n<Object ObjectType=\"MODefinition\"><Name>Test</Name>\
             <Description1>t</Description1><ObjectID>{id}</ObjectID>\n<ObjectURN>{urn}</ObjectURN>\
             <ObjectVersion>{version}</ObjectVersion><MultipleInstances>Multiple</MultipleInstances>\
             <Mandatory>Optional</Mandatory>\n<Resources>{items}</Resources></Object></LWM2M>"
        )
    }

    fn simple(id: &str, urn: &str, version: &str) -> Object {
        parse(&object_xml(
            id,
            urn,
            version,
            &item("1", "R", "Integer", "Single"),
        ))
        .unwrap()
    }

    /// Every node name below `def`, the root's own excluded.
    fn names(def: &NodeDef, out: &mut Vec<String>) {
        for c in &def.children {
            out.push(c.name.to_string());
            names(c, out);
        }
    }

    #[test]
    fn every_corpus_object_parses_and_others_are_refused() {
        let mut objects = 0;
        for entry in std::fs::read_dir(corpus()).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let Ok(id) = stem.parse::<u16>() else {
                let err = load(&path).unwrap_err();
                assert!(
                    matches!(err.problem, Problem::NotAnObject(_)),
                    "{}: {err}",
                    path.display()
                );
                assert_eq!(err.file.as_deref(), Some(path.as_path()));
                continue;
            };
            let object = load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(object.id, id, "{}", path.display());
            let ty = object.mo_type();
            assert_eq!(ty.moid, object.urn);
            assert_eq!(ty.root_name(), stem);
            assert_eq!(ty.root.check(&Node::empty()), vec![], "{stem}");
            let mut node_names = Vec::new();
            names(&ty.root, &mut node_names);
            for name in node_names {
                assert!(
                    name == "<x>" || name.bytes().all(|b| b.is_ascii_digit()),
                    "{stem}: node {name}"
                );
            }
            objects += 1;
        }
        assert_eq!(objects, 27);
        let common = load(&corpus().join("Common.xml")).unwrap_err();
        assert!(common.to_string().contains("CommonResources"), "{common}");
        let xsd = load(&corpus().join("LWM2M-v1_1.xsd")).unwrap_err();
        assert!(
            xsd.to_string().contains("root element is <schema>"),
            "{xsd}"
        );
    }

    #[test]
    fn device_object_maps_to_its_type() {
        let device = load(&corpus().join("3.xml")).unwrap();
        assert_eq!(device.urn, "urn:oma:lwm2m:oma:3:1.2");
        assert_eq!(device.major_minor(), (1, 2));
        assert_eq!(device.name, "Device");
        let ty = device.mo_type();
        assert_eq!(ty.moid, "urn:oma:lwm2m:oma:3:1.2");
        assert_eq!(ty.root.title.as_deref(), Some("Device"));
        assert_eq!(ty.root.type_name.as_deref(), Some(ty.moid.as_str()));
        assert!(
            ty.root
                .description
                .as_deref()
                .unwrap()
                .starts_with("This LwM2M Object")
        );
        assert_eq!(ty.root.access, AccessTypes::GET);
        assert_eq!(ty.root.scope, Scope::Permanent);

        let reboot = ty.def_at("4").unwrap();
        assert_eq!(
            (reboot.format, reboot.access),
            (Format::Null, AccessTypes::EXEC)
        );
        assert_eq!(reboot.title.as_deref(), Some("Reboot"));
        let tz = ty.def_at("15").unwrap();
        assert_eq!(tz.format, Format::Chr);
        assert_eq!(tz.access.to_string(), "Get,Replace");
        assert_eq!(device.resource(15).unwrap().name, "Timezone");

        let power = ty.def_at("6").unwrap();
        assert_eq!(
            (power.format, power.access),
            (Format::Node, AccessTypes::GET)
        );
        assert_eq!(power.children.len(), 1);
        let instance = ty.def_at("6/0").unwrap();
        assert!(instance.name.is_placeholder());
        assert_eq!(instance.occurrence, Occurrence::ZeroOrMore);
        assert_eq!(
            (instance.format, instance.access),
            (Format::Int, AccessTypes::GET)
        );
        assert!(ty.def_at("6/0/1").is_none());

        for def in &ty.root.children {
            assert_eq!(def.occurrence, Occurrence::ZeroOrOne, "{}", def.name);
            assert_eq!(def.scope, Scope::Permanent);
            assert!(!def.access.contains(AccessTypes::ADD));
            assert!(!def.access.contains(AccessTypes::DELETE));
        }
        let manufacturer = ty.def_at("0").unwrap().description.as_deref().unwrap();
        assert_eq!(manufacturer, "Human readable manufacturer name\nOptional");
        assert_eq!(ty.root.children.len(), device.resources.len());
    }

    #[test]
    fn names_stay_titles_and_resources_without_operations_are_left_out() {
        let security = load(&corpus().join("0.xml")).unwrap();
        let ty = security.mo_type();
        let ciphers = security.resource(16).unwrap();
        assert_eq!(ciphers.name, "DTLS/TLS Ciphersuite");
        assert!(!(ciphers.read || ciphers.write || ciphers.execute));
        assert!(ty.def_at("16").is_none());
        let generated = security
            .resources
            .iter()
            .filter(|r| r.read || r.write || r.execute)
            .count();
        assert_eq!(ty.root.children.len(), generated);
        assert!(generated < security.resources.len());

        let connectivity = load(&corpus().join("11.xml")).unwrap();
        let validity = connectivity.mo_type();
        let def = validity.def_at("8").unwrap();
        assert_eq!(def.name.to_string(), "8");
        assert_eq!(def.title.as_deref(), Some("Validity (MCC, MNC)"));
    }

    #[test]
    fn temperature_fixture_fits_instances_of_the_right_shape() {
        let temp = load(&fixture()).unwrap();
        assert_eq!(
            (temp.id, temp.urn.as_str()),
            (3303, "urn:oma:lwm2m:ext:3303")
        );
        assert_eq!(temp.major_minor(), (1, 1));
        assert_eq!(temp.resources.len(), 12);
        assert!(temp.resource(5700).unwrap().mandatory);
        let ty = temp.mo_type();
        assert_eq!(ty.root_name(), "3303");
        let unit_line = ty.def_at("6050").unwrap().description.clone().unwrap();
        assert!(
            unit_line.ends_with("\nUnits: s\nRange: 0..1\nOptional"),
            "{unit_line}"
        );
        assert_eq!(ty.def_at("5518").unwrap().format, Format::Int);
        assert_eq!(ty.def_at("5605").unwrap().format, Format::Null);

        let good = serde_json::json!({"5700": 21.5, "5701": "Cel", "5750": "boiler"});
        let node = node_from_json(&good, Some(&ty.root), "3303").unwrap();
        assert_eq!(ty.root.check(&node), vec![]);

        let wrong = serde_json::json!({"5700": "warm"});
        assert!(node_from_json(&wrong, Some(&ty.root), "3303").is_err());
        let unknown = serde_json::json!({"9999": 1});
        assert!(node_from_json(&unknown, Some(&ty.root), "3303").is_err());
        let mismatched = Node::Interior(BTreeMap::from([
            ("5700".to_owned(), Node::Leaf(Value::Chr("warm".into()))),
            ("5701".to_owned(), Node::Leaf(Value::Chr("Cel".into()))),
        ]));
        let reasons: Vec<_> = ty
            .root
            .check(&mismatched)
            .into_iter()
            .map(|m| format!("{}: {}", m.path, m.reason))
            .collect();
        assert_eq!(reasons, ["5700: is chr, the DDF says float"]);
    }

    #[test]
    fn catalog_finds_the_version_by_the_gateway_rule() {
        let mut catalog = Catalog::default();
        catalog.insert(simple("3303", "urn:oma:lwm2m:ext:3303", "1.0"));
        catalog.insert(simple("3303", "urn:oma:lwm2m:ext:3303:1.2", "1.2"));
        catalog.insert(simple("3303", "urn:oma:lwm2m:ext:3303:1.1", "1.1"));
        catalog.insert(simple("3303", "urn:oma:lwm2m:ext:3303:2.0", "2.0"));
        catalog.insert(simple("3", "urn:oma:lwm2m:oma:3:1.1", "1.1"));
        let urn = |oid, version| catalog.find(oid, version).map(|o| o.urn.as_str());
        assert_eq!(urn(3303, None), Some("urn:oma:lwm2m:ext:3303"));
        assert_eq!(urn(3303, Some("1.1")), Some("urn:oma:lwm2m:ext:3303:1.1"));
        assert_eq!(urn(3303, Some("1.3")), Some("urn:oma:lwm2m:ext:3303:1.2"));
        assert_eq!(urn(3303, Some("2.4")), Some("urn:oma:lwm2m:ext:3303:2.0"));
        assert_eq!(urn(3303, Some("3.0")), None);
        assert_eq!(urn(3303, Some("one")), None);
        assert_eq!(urn(3, None), Some("urn:oma:lwm2m:oma:3:1.1"));
        assert_eq!(urn(4, None), None);
        assert_eq!(catalog.mo_types().len(), 5);

        let mut renamed = simple("3303", "urn:oma:lwm2m:ext:3303:1.1", "1.1");
        renamed.name = "Replaced".into();
        catalog.insert(renamed);
        assert_eq!(catalog.objects().len(), 5);
        assert_eq!(catalog.find(3303, Some("1.1")).unwrap().name, "Replaced");
    }

    #[test]
    fn version_defaults_to_the_urn_then_1_0() {
        let no_version = |urn: &str| {
            let text = object_xml("7", urn, "", "").replace("<ObjectVersion></ObjectVersion>", "");
            parse(&text).unwrap().version
        };
        assert_eq!(no_version("urn:oma:lwm2m:oma:7:1.3"), "1.3");
        assert_eq!(no_version("urn:oma:lwm2m:oma:7"), "1.0");
    }

    #[test]
    fn broken_definitions_name_line_and_reason() {
        let one = item("1", "R", "Integer", "Single");
        let good = object_xml("9", "urn:oma:lwm2m:oma:9", "1.0", &one);
        let cases = [
            ("<LWM2M><Object>".to_owned(), 1, "never closed"),
            (
                good.replace("<ObjectID>9</ObjectID>", ""),
                2,
                "<Object> has no <ObjectID>",
            ),
            (good.replace(">9<", ">65535<"), 2, "\"65535\" is not an id"),
            (good.replace(">9<", ">-1<"), 2, "is not an id"),
            (
                good.replace("urn:oma:lwm2m:oma:9", "urn:oma:lwm2m/9"),
                3,
                "ObjectURN is not a MOID",
            ),
            (
                good.replace("urn:oma:lwm2m:oma:9", "lwm2m:9"),
                3,
                "ObjectURN is not a MOID",
            ),
            (good.replace(">1.0<", ">1<"), 3, "ObjectVersion \"1\""),
            (
                object_xml("9", "urn:x:9", "1.0", &format!("{one}{one}")),
                4,
                "resource 1 is defined twice",
            ),
            (
                good.replace("ID=\"1\"", ""),
                4,
                "<Item> has no ID attribute",
            ),
            (good.replace("ID=\"1\"", "ID=\"x\""), 4, "Item ID \"x\""),
            (good.replace(">R<", ">RWE<"), 4, "Operations \"RWE\""),
            (
                good.replace(">Integer<", ">Decimal<"),
                4,
                "Type \"Decimal\"",
            ),
            (
                good.replace("<Type>Integer</Type>", ""),
                4,
                "<Item> has no <Type>",
            ),
            (
                good.replace(">Single<", ">Many<"),
                4,
                "MultipleInstances \"Many\"",
            ),
            (
                good.replace("<Name>Test", &format!("<Name>{}", "n".repeat(300))),
                2,
                "Name is longer",
            ),
            (
                good.replace("<LWM2M>", "<Objects>")
                    .replace("</LWM2M>", "</Objects>"),
                1,
                "<Objects>, not <LWM2M>",
            ),
            (
                good.replace("</Object>", "</Object><Object/>"),
                4,
                "more than one <Object>",
            ),
            (
                good.replace("MODefinition", "CommonResources"),
                2,
                "CommonResources",
            ),
        ];
        for (doc, line, reason) in cases {
            let err = parse(&doc).unwrap_err();
            assert_eq!(err.line, line, "{err}");
            assert!(err.to_string().contains(reason), "{err}");
        }
        let many: String = (0..=MAX_RESOURCES)
            .map(|i| item(&i.to_string(), "R", "", "Single"))
            .collect();
        let err = parse(&object_xml("9", "urn:x:9", "1.0", &many)).unwrap_err();
        assert_eq!(err.problem, Problem::TooManyResources);
        let err = load(Path::new("/nonexistent/9.xml")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/9.xml: "), "{err}");
    }

    #[test]
    fn later_dirs_override_and_bad_files_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
        std::fs::create_dir(&first).unwrap();
        std::fs::create_dir(&second).unwrap();
        let text = std::fs::read_to_string(fixture()).unwrap();
        std::fs::write(first.join("3303.xml"), &text).unwrap();
        std::fs::write(first.join("bad.xml"), "<LWM2M>").unwrap();
        std::fs::write(first.join("notes.txt"), "<not xml").unwrap();
        std::fs::write(
            second.join("3303.xml"),
            text.replace("<Name>Temperature</Name>", "<Name>Overridden</Name>"),
        )
        .unwrap();
        std::fs::write(
            second.join("3.xml"),
            std::fs::read(corpus().join("3.xml")).unwrap(),
        )
        .unwrap();
        let dirs = [first.clone(), tmp.path().join("missing"), second];
        let (catalog, refused) = Catalog::load_dirs(&dirs);
        let names: Vec<_> = catalog.objects().iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["Device", "Overridden"], "files in name order");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(
            refused[0].file.as_deref(),
            Some(first.join("bad.xml").as_path())
        );
        let types = catalog.mo_types();
        assert_eq!(types[1].root.title.as_deref(), Some("Overridden"));
    }
}
