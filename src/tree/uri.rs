//! ClientURI: how DM 2.0 addresses nodes (PROTOCOL.md §8).
//!
//! `MOID "/" mo-inst "/" path-from-moroot ["?" query]`, where `mo-inst` is a MIID, empty
//! (the MOID's only instance), an x-name `(x)` or `*`; path segments are node names,
//! x-names or `*`; the query holds `nv=(x)/rel/path:value` and `cv=<validator>` fields.
//! Parsing turns the text into a [`ClientUri`] once; [`super::resolve`] works on that.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::node::check_name;

/// A parsed ClientURI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientUri {
    pub moid: String,
    pub instance: InstanceSel,
    pub path: Vec<Segment>,
    pub nv: Vec<NvField>,
    pub cv: Option<String>,
}

/// Which instances of the MOID a ClientURI selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceSel {
    /// Empty `mo-inst`: the MOID's only instance (an error when there are several).
    Only,
    Miid(String),
    /// `(x)`: the instances whose `nv=(x)/...` fields hold.
    XName(String),
    /// `*`: every instance.
    All,
}

/// One element of the path below the MO root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Name(String),
    /// `(x)`: the children whose `nv=(x)/...` fields hold.
    XName(String),
    /// `*`: every child.
    Any,
}

/// `nv=(x)/rel/path:value`: the node matched by `(x)` has a leaf at `rel/path` whose value
/// (as text) is `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvField {
    pub xname: String,
    pub path: Vec<String>,
    pub value: String,
}

/// The address of one node: MO instance and path below its root (empty for the root).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub moid: String,
    pub miid: String,
    pub path: String,
}

/// Why a string is not a ClientURI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ClientURI {uri:?}: {reason}")]
pub struct UriError {
    pub uri: String,
    pub reason: String,
}

/// Characters escaped when writing node names and MIIDs into a ClientURI.
const NAME_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'&')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b':')
    .add(b'=')
    .add(b'#');

impl ClientUri {
    /// Parses ClientURI text.
    pub fn parse(text: &str) -> Result<ClientUri, UriError> {
        parse(text).map_err(|reason| UriError {
            uri: text.to_owned(),
            reason,
        })
    }

    /// True when the URI names exactly one node without searching: a MIID and real names
    /// only.
    pub fn is_concrete(&self) -> bool {
        matches!(self.instance, InstanceSel::Miid(_))
            && self.path.iter().all(|s| matches!(s, Segment::Name(_)))
    }
}

impl ClientUri {
    /// Whether a change at `addr` concerns what this URI addresses: `addr` is one of the
    /// nodes it could address, lies below one, or is an ancestor of one (deleting or
    /// replacing a parent changes its children). x-names match any node here; `nv=`
    /// values are not consulted, so watchers may see changes to nodes whose values no
    /// longer satisfy a condition.
    pub fn covers(&self, addr: &NodeAddr) -> bool {
        if addr.moid != self.moid {
            return false;
        }
        if let InstanceSel::Miid(m) = &self.instance
            && *m != addr.miid
        {
            return false;
        }
        addr.path
            .split('/')
            .filter(|s| !s.is_empty())
            .zip(&self.path)
            .all(|(name, seg)| match seg {
                Segment::Name(n) => n == name,
                Segment::XName(_) | Segment::Any => true,
            })
    }
}

impl fmt::Display for ClientUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.moid)?;
        match &self.instance {
            InstanceSel::Only => {}
            InstanceSel::Miid(m) => f.write_str(&escape(m))?,
            InstanceSel::XName(x) => write!(f, "({x})")?,
            InstanceSel::All => f.write_str("*")?,
        }
        f.write_str("/")?;
        let segments: Vec<String> = self
            .path
            .iter()
            .map(|s| match s {
                Segment::Name(n) => escape(n),
                Segment::XName(x) => format!("({x})"),
                Segment::Any => "*".to_owned(),
            })
            .collect();
        f.write_str(&segments.join("/"))?;
        let mut fields: Vec<String> = self
            .nv
            .iter()
            .map(|nv| {
                let path: Vec<String> = nv.path.iter().map(|p| escape(p)).collect();
                format!("nv=({})/{}:{}", nv.xname, path.join("/"), escape(&nv.value))
            })
            .collect();
        if let Some(cv) = &self.cv {
            fields.push(format!("cv={}", escape(cv)));
        }
        if !fields.is_empty() {
            write!(f, "?{}", fields.join("&"))?;
        }
        Ok(())
    }
}

impl NodeAddr {
    /// The address of an instance root.
    pub fn root(moid: &str, miid: &str) -> NodeAddr {
        NodeAddr {
            moid: moid.to_owned(),
            miid: miid.to_owned(),
            path: String::new(),
        }
    }

    /// The address of `name` below this node.
    pub fn child(&self, name: &str) -> NodeAddr {
        NodeAddr {
            moid: self.moid.clone(),
            miid: self.miid.clone(),
            path: join(&self.path, name),
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/", self.moid, escape(&self.miid))?;
        let names: Vec<String> = self
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(escape)
            .collect();
        f.write_str(&names.join("/"))
    }
}

/// `parent/name`, or `name` when `parent` is empty.
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

fn escape(s: &str) -> String {
    utf8_percent_encode(s, NAME_ESCAPES).to_string()
}

fn parse(text: &str) -> Result<ClientUri, String> {
    let (main, query) = match text.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (text, None),
    };
    let (moid, rest) = main.split_once('/').ok_or("missing '/' after the MOID")?;
    if !moid.starts_with("urn:") || moid.len() <= 4 {
        return Err(format!("MOID {moid:?} is not a URN (urn:...)"));
    }
    if moid
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '%')
    {
        return Err(format!(
            "MOID {moid:?} contains a character that is not allowed"
        ));
    }
    let (inst, path_text) = rest.split_once('/').unwrap_or((rest, ""));
    let instance = match inst {
        "" => InstanceSel::Only,
        "*" => InstanceSel::All,
        x if x.starts_with('(') || x.ends_with(')') => InstanceSel::XName(xname(x)?),
        m => InstanceSel::Miid(name(m)?),
    };
    let mut path = Vec::new();
    let trimmed = path_text.strip_suffix('/').unwrap_or(path_text);
    if !trimmed.is_empty() {
        for seg in trimmed.split('/') {
            path.push(match seg {
                "" => return Err("empty node name in the path ('//')".into()),
                "*" => Segment::Any,
                x if x.starts_with('(') || x.ends_with(')') => Segment::XName(xname(x)?),
                n => Segment::Name(name(n)?),
            });
        }
    }

    let mut used: Vec<&str> = Vec::new();
    if let InstanceSel::XName(x) = &instance {
        used.push(x);
    }
    for s in &path {
        if let Segment::XName(x) = s {
            if used.contains(&x.as_str()) {
                return Err(format!("x-name ({x}) is used twice"));
            }
            used.push(x);
        }
    }

    let mut nv = Vec::new();
    let mut cv = None;
    for field in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("query field {field:?} has no '='"))?;
        match key {
            "nv" => {
                let f = nv_field(value)?;
                if !used.contains(&f.xname.as_str()) {
                    return Err(format!(
                        "nv= names ({}), which the URI does not use",
                        f.xname
                    ));
                }
                nv.push(f);
            }
            "cv" if cv.is_some() => return Err("cv= given twice".into()),
            "cv" if value.is_empty() => return Err("cv= is empty".into()),
            "cv" => cv = Some(decode(value)?),
            other => return Err(format!("unknown query field {other:?} (expected nv or cv)")),
        }
    }
    if let Some(x) = used
        .iter()
        .find(|x| !nv.iter().any(|f: &NvField| f.xname == **x))
    {
        return Err(format!("x-name ({x}) has no nv= field to resolve it"));
    }
    Ok(ClientUri {
        moid: moid.to_owned(),
        instance,
        path,
        nv,
        cv,
    })
}

fn nv_field(text: &str) -> Result<NvField, String> {
    let body = text
        .strip_prefix('(')
        .ok_or_else(|| format!("nv={text:?} must start with an x-name like (x)"))?;
    let (x, rest) = body
        .split_once(')')
        .ok_or_else(|| format!("unbalanced x-name in nv={text:?}"))?;
    let x = xname(&format!("({x})"))?;
    let rest = rest
        .strip_prefix('/')
        .ok_or_else(|| format!("nv={text:?} needs a path after ({x})/"))?;
    let (path_text, value) = rest
        .split_once(':')
        .ok_or_else(|| format!("nv={text:?} needs ':' before the value"))?;
    let path = path_text
        .split('/')
        .map(name)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("nv={text:?}: {e}"))?;
    Ok(NvField {
        xname: x,
        path,
        value: decode(value)?,
    })
}

fn xname(text: &str) -> Result<String, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("unbalanced x-name {text:?}"))?;
    if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "x-name {text:?} must be letters, digits or '_' in parentheses"
        ));
    }
    Ok(inner.to_owned())
}

fn name(text: &str) -> Result<String, String> {
    let n = decode(text)?;
    check_name(&n).map_err(|e| e.to_string())?;
    Ok(n)
}

fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3);
        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            return Err(format!(
                "bad percent-encoding at {:?}",
                &text[i..text.len().min(i + 3)]
            ));
        }
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("percent-encoding of {text:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let u = ClientUri::parse(
            "urn:oma:mo:moid:1.0/(x)/Data/(y)/Value?nv=(x)/ID:GPS&nv=(y)/Date:12.2&cv=abc",
        )
        .unwrap();
        assert_eq!(u.moid, "urn:oma:mo:moid:1.0");
        assert_eq!(u.instance, InstanceSel::XName("x".into()));
        assert_eq!(
            u.path,
            [
                Segment::Name("Data".into()),
                Segment::XName("y".into()),
                Segment::Name("Value".into())
            ]
        );
        assert_eq!(
            u.nv[1],
            NvField {
                xname: "y".into(),
                path: vec!["Date".into()],
                value: "12.2".into()
            }
        );
        assert_eq!(u.cv.as_deref(), Some("abc"));
        assert_eq!(
            ClientUri::parse("urn:a:1.0//").unwrap().instance,
            InstanceSel::Only
        );
        assert_eq!(
            ClientUri::parse("urn:a:1.0/*/Setting").unwrap().instance,
            InstanceSel::All
        );
        let left = ClientUri::parse("urn:a:1.0/left").unwrap();
        assert_eq!(left.instance, InstanceSel::Miid("left".into()));
        assert!(left.path.is_empty() && left.is_concrete());
    }

    #[test]
    fn display_round_trips_including_escapes() {
        for text in [
            "urn:oma:mo:moid:1.0/(x)/Data/(y)/Value?nv=(x)/ID:GPS&nv=(y)/Date:12.2&cv=abc",
            "urn:a:1.0/m%3A1/a%20b/%3F/*",
            "urn:a:1.0//",
            "urn:a:1.0/*/x?nv=(z)/a:b",
        ] {
            let u = ClientUri::parse(text);
            if text.contains("(z)") {
                assert!(u.is_err());
                continue;
            }
            let u = u.unwrap();
            assert_eq!(ClientUri::parse(&u.to_string()).unwrap(), u, "{text}");
        }
        let addr = NodeAddr::root("urn:a:1.0", "m:1").child("a b").child("c");
        assert_eq!(addr.to_string(), "urn:a:1.0/m%3A1/a%20b/c");
        let back = ClientUri::parse(&addr.to_string()).unwrap();
        assert_eq!(back.instance, InstanceSel::Miid("m:1".into()));
        assert_eq!(
            back.path,
            [Segment::Name("a b".into()), Segment::Name("c".into())]
        );
    }

    #[test]
    fn covers_nodes_below_above_and_through_wildcards() {
        let uri = ClientUri::parse("urn:a:1.0/*/Data/(x)/Value?nv=(x)/Date:1").unwrap();
        let at = |miid: &str, path: &str| NodeAddr {
            moid: "urn:a:1.0".into(),
            miid: miid.into(),
            path: path.into(),
        };
        assert!(uri.covers(&at("l", "Data/1/Value")));
        assert!(uri.covers(&at("r", "Data/2/Value/deeper")));
        assert!(
            uri.covers(&at("r", "Data")),
            "a parent's change reaches the watched nodes"
        );
        assert!(uri.covers(&at("r", "")), "so does an instance's");
        assert!(!uri.covers(&at("r", "ID")));
        assert!(!uri.covers(&at("r", "Data/1/Date")));
        let one = ClientUri::parse("urn:a:1.0/l/ID").unwrap();
        assert!(one.covers(&at("l", "ID")));
        assert!(!one.covers(&at("r", "ID")));
        assert!(!one.covers(&NodeAddr {
            moid: "urn:b:1.0".into(),
            miid: "l".into(),
            path: "ID".into()
        }));
    }

    #[test]
    fn malformed_uris_say_what_is_wrong() {
        let cases = [
            ("urn:a:1.0", "missing '/'"),
            ("foo:a/x/", "not a URN"),
            ("urn:a:1.0/x/a%zz", "bad percent-encoding"),
            ("urn:a:1.0/x/a%", "bad percent-encoding"),
            ("urn:a:1.0/x/a%ff", "not UTF-8"),
            ("urn:a:1.0/(x/", "unbalanced x-name"),
            ("urn:a:1.0/x/Data)/", "unbalanced x-name"),
            ("urn:a:1.0/(x)/?nv=(x/ID:1", "unbalanced x-name"),
            ("urn:a:1.0/(x)/?nv=(y)/ID:1", "does not use"),
            ("urn:a:1.0/(x)/", "no nv= field"),
            ("urn:a:1.0/x/a?foo=1", "unknown query field"),
            ("urn:a:1.0/x/a?nv", "no '='"),
            ("urn:a:1.0/x/a//b", "empty node name"),
            ("urn:a:1.0/(x)/(x)?nv=(x)/a:1", "used twice"),
            ("urn:a:1.0/x/a?cv=1&cv=2", "twice"),
            ("urn:a:1.0/(x)/?nv=(x)ID:1", "needs a path"),
            ("urn:a:1.0/(x)/?nv=(x)/ID", "needs ':'"),
            ("urn:a:1.0/x/..", "reserved"),
        ];
        for (text, reason) in cases {
            let err = ClientUri::parse(text).unwrap_err();
            assert!(err.reason.contains(reason), "{text}: {err}");
            assert!(err.to_string().contains(text));
        }
    }
}
