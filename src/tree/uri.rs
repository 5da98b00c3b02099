//! ClientURI: how DM 2.0 addresses nodes (PROTOCOL.md §8).
//!
//! `MOID "/" mo-inst "/" path-from-moroot ["?" query]`, where `mo-inst` is a MIID, empty
//! (the MOID's only instance), an x-name `(x)` or `*`; path segments are node names,
//! x-names or `*`; the query holds `nv=(x)/rel/path:value` and `cv=<validator>` fields.
//! Parsing turns the text into a [`ClientUri`] once; [`super::resolve`] works on that.
//!
//! Parsing is bounded and linear in the length of the text: every ClientURI, whoever sends
//! it (a local app over D-Bus, a DM server in a package), is held to the process-wide
//! [`UriLimits`] (`[limits]` of the configuration, set once at start by [`set_limits`]).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::node::check_name;

/// A parsed ClientURI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientUri {
    pub moid: Moid,
    pub instance: InstanceSel,
    pub path: Vec<Segment>,
    pub nv: Vec<NvField>,
    pub cv: Option<String>,
}

/// A MOID, checked: a URN (`urn:...`) without whitespace, control characters, `%` or `/`,
/// within `[limits] uri_bytes`. Made by [`Moid::parse`] or as part of a [`ClientUri`], and
/// carried checked from there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Moid(String);

impl TryFrom<String> for Moid {
    type Error = UriError;

    fn try_from(text: String) -> Result<Moid, UriError> {
        Moid::parse(&text)
    }
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

/// Bounds on a ClientURI (`[limits] uri_bytes`, `uri_segments`, `uri_xnames`, `nv_fields`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UriLimits {
    pub bytes: usize,
    pub segments: usize,
    pub xnames: usize,
    pub nv_fields: usize,
}

impl Default for UriLimits {
    fn default() -> Self {
        UriLimits {
            bytes: 4096,
            segments: 64,
            xnames: 8,
            nv_fields: 16,
        }
    }
}

static LIMITS: OnceLock<UriLimits> = OnceLock::new();

/// Sets the limits every later [`ClientUri::parse`] applies. Only the first call takes
/// effect (the daemon calls it once, from its configuration, before serving anyone);
/// returns whether this one did.
pub fn set_limits(limits: UriLimits) -> bool {
    LIMITS.set(limits).is_ok()
}

/// The limits in force.
pub fn limits() -> UriLimits {
    LIMITS.get().copied().unwrap_or_default()
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
    /// Parses ClientURI text, within the [`limits`] in force.
    pub fn parse(text: &str) -> Result<ClientUri, UriError> {
        ClientUri::parse_within(text, &limits())
    }

    /// Parses ClientURI text within `limits`.
    pub fn parse_within(text: &str, limits: &UriLimits) -> Result<ClientUri, UriError> {
        parse(text, limits).map_err(|reason| UriError {
            uri: shorten(text),
            reason,
        })
    }

    /// The path below the instance root when it is made of names only (no x-name, no `*`),
    /// joined with `/` (empty for the root).
    pub fn names_path(&self) -> Option<String> {
        let mut path = String::new();
        for segment in &self.path {
            let Segment::Name(name) = segment else {
                return None;
            };
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(name);
        }
        Some(path)
    }

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
        write!(
            f,
            "{}/{}/",
            self.moid,
            utf8_percent_encode(&self.miid, NAME_ESCAPES)
        )?;
        for (i, name) in self.path.split('/').filter(|s| !s.is_empty()).enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{}", utf8_percent_encode(name, NAME_ESCAPES))?;
        }
        Ok(())
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

impl Moid {
    /// `text` as a MOID on its own (as `CreateInstance` takes it): the rules of the MOID part
    /// of a ClientURI, and no `/`.
    pub fn parse(text: &str) -> Result<Moid, UriError> {
        let rules = if text.contains('/') {
            Err(format!("MOID {:?} contains '/'", shorten(text)))
        } else if text.len() > limits().bytes {
            Err(format!(
                "MOID of {} bytes is longer than the limit of {} ([limits] uri_bytes)",
                text.len(),
                limits().bytes
            ))
        } else {
            moid_rules(text)
        };
        match rules {
            Ok(()) => Ok(Moid(text.to_owned())),
            Err(reason) => Err(UriError {
                uri: shorten(text),
                reason,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Moid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Moid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Moid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Moid {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Moid {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Moid {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Moid> for String {
    fn eq(&self, other: &Moid) -> bool {
        *self == other.0
    }
}

impl PartialEq<Moid> for str {
    fn eq(&self, other: &Moid) -> bool {
        *self == other.0
    }
}

impl fmt::Display for Moid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A MOID is a URN (`urn:...`) without whitespace, control characters or `%`.
fn moid_rules(moid: &str) -> Result<(), String> {
    if !moid.starts_with("urn:") || moid.len() <= 4 {
        return Err(format!("MOID {:?} is not a URN (urn:...)", shorten(moid)));
    }
    if moid
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '%')
    {
        return Err(format!(
            "MOID {:?} contains a character that is not allowed",
            shorten(moid)
        ));
    }
    Ok(())
}

/// `text`, cut to a length fit for an error message (on a character boundary).
fn shorten(text: &str) -> String {
    const SHOWN: usize = 200;
    match text.char_indices().nth(SHOWN) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
    }
}

fn parse(text: &str, limits: &UriLimits) -> Result<ClientUri, String> {
    if text.len() > limits.bytes {
        return Err(format!(
            "{} bytes is longer than the limit of {} ([limits] uri_bytes)",
            text.len(),
            limits.bytes
        ));
    }
    let (main, query) = match text.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (text, None),
    };
    let (moid, rest) = main.split_once('/').ok_or("missing '/' after the MOID")?;
    moid_rules(moid)?;
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
            if path.len() == limits.segments {
                return Err(format!(
                    "more than {} path segments ([limits] uri_segments)",
                    limits.segments
                ));
            }
            path.push(match seg {
                "" => return Err("empty node name in the path ('//')".into()),
                "*" => Segment::Any,
                x if x.starts_with('(') || x.ends_with(')') => Segment::XName(xname(x)?),
                n => Segment::Name(name(n)?),
            });
        }
    }

    let mut used: BTreeSet<&str> = BTreeSet::new();
    let instance_xname = match &instance {
        InstanceSel::XName(x) => Some(x.as_str()),
        _ => None,
    };
    let path_xnames = path.iter().filter_map(|s| match s {
        Segment::XName(x) => Some(x.as_str()),
        _ => None,
    });
    for x in instance_xname.into_iter().chain(path_xnames) {
        if used.len() == limits.xnames {
            return Err(format!(
                "more than {} x-names ([limits] uri_xnames)",
                limits.xnames
            ));
        }
        if !used.insert(x) {
            return Err(format!("x-name ({x}) is used twice"));
        }
    }

    let mut nv: Vec<NvField> = Vec::new();
    let mut cv = None;
    for field in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("query field {:?} has no '='", shorten(field)))?;
        match key {
            "nv" => {
                if nv.len() == limits.nv_fields {
                    return Err(format!(
                        "more than {} nv= fields ([limits] nv_fields)",
                        limits.nv_fields
                    ));
                }
                let f = nv_field(value)?;
                if nv.contains(&f) {
                    return Err(format!("nv={} is given twice", shorten(value)));
                }
                if !used.contains(f.xname.as_str()) {
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
            other => {
                return Err(format!(
                    "unknown query field {:?} (expected nv or cv)",
                    shorten(other)
                ));
            }
        }
    }
    let resolved: BTreeSet<&str> = nv.iter().map(|f| f.xname.as_str()).collect();
    if let Some(x) = used.difference(&resolved).next() {
        return Err(format!("x-name ({x}) has no nv= field to resolve it"));
    }
    Ok(ClientUri {
        moid: Moid(moid.to_owned()),
        instance,
        path,
        nv,
        cv,
    })
}

fn nv_field(text: &str) -> Result<NvField, String> {
    let shown = shorten(text);
    let body = text
        .strip_prefix('(')
        .ok_or_else(|| format!("nv={shown:?} must start with an x-name like (x)"))?;
    let (x, rest) = body
        .split_once(')')
        .ok_or_else(|| format!("unbalanced x-name in nv={shown:?}"))?;
    let x = xname_inner(x).ok_or_else(|| format!("x-name in nv={shown:?} {XNAME_RULE}"))?;
    let rest = rest
        .strip_prefix('/')
        .ok_or_else(|| format!("nv={shown:?} needs a path after ({x})/"))?;
    let (path_text, value) = rest
        .split_once(':')
        .ok_or_else(|| format!("nv={shown:?} needs ':' before the value"))?;
    let path = path_text
        .split('/')
        .map(name)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("nv={shown:?}: {e}"))?;
    Ok(NvField {
        xname: x,
        path,
        value: decode(value)?,
    })
}

const XNAME_RULE: &str = "must be letters, digits or '_' in parentheses";

fn xname(text: &str) -> Result<String, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("unbalanced x-name {:?}", shorten(text)))?;
    xname_inner(inner).ok_or_else(|| format!("x-name {:?} {XNAME_RULE}", shorten(text)))
}

/// The x-name inside parentheses, if it is well formed.
fn xname_inner(inner: &str) -> Option<String> {
    (!inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| inner.to_owned())
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
            let at: String = text[i..].chars().take(3).collect();
            return Err(format!("bad percent-encoding at {at:?}"));
        }
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("percent-encoding of {:?} is not UTF-8", shorten(text)))
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
        assert_eq!(left.names_path().as_deref(), Some(""));
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
    fn moids_stand_alone() {
        let moid = Moid::parse("urn:oma:mo:ext-x:1.0").unwrap();
        assert_eq!(moid, "urn:oma:mo:ext-x:1.0");
        let uri = ClientUri::parse("urn:oma:mo:ext-x:1.0/i/").unwrap();
        assert_eq!(
            uri.moid, moid,
            "the same MOID, standing alone or in a ClientURI"
        );
        for bad in ["", "urn:", "x:y", "urn:a b", "urn:a/b", "urn:a%20"] {
            assert!(Moid::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_bound_every_dimension() {
        let small = UriLimits {
            bytes: 64,
            segments: 3,
            xnames: 2,
            nv_fields: 2,
        };
        let ok = ClientUri::parse_within("urn:a:1.0/(x)/a/(y)?nv=(x)/I:1&nv=(y)/J:2", &small);
        assert!(ok.is_ok(), "{ok:?}");
        let cases = [
            (format!("urn:a:1.0/x/{}", "a".repeat(60)), "uri_bytes"),
            ("urn:a:1.0/x/a/b/c/d".to_owned(), "uri_segments"),
            (
                "urn:a:1.0/(x)/(y)/(z)?nv=(x)/I:1&nv=(y)/I:1&nv=(z)/I:1".to_owned(),
                "uri_xnames",
            ),
            (
                "urn:a:1.0/(x)/?nv=(x)/I:1&nv=(x)/J:1&nv=(x)/K:1".to_owned(),
                "nv_fields",
            ),
        ];
        for (text, limit) in cases {
            let err = ClientUri::parse_within(&text, &small).unwrap_err();
            assert!(err.reason.contains(limit), "{text}: {err}");
        }
    }

    #[test]
    fn error_messages_quote_long_input_shortened() {
        let long = format!("urn:a:1.0/x/{}%zz", "é".repeat(1000));
        let limits = UriLimits {
            bytes: 1 << 20,
            ..UriLimits::default()
        };
        let err = ClientUri::parse_within(&long, &limits).unwrap_err();
        assert!(err.to_string().len() < 600, "{err}");
        assert!(err.uri.ends_with("bytes)"), "{}", err.uri);
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
            ("urn:a:1.0/x/%€", "bad percent-encoding at \"%€\""),
            ("urn:a:1.0/x/a%€b", "bad percent-encoding"),
            ("urn:a:1.0/(x)/?nv=(x)/ID:1&nv=(x)/ID:1", "given twice"),
            ("urn:a:1.0/(x)/?nv=(x)/a:v&nv=(x)/%61:v", "given twice"),
            ("urn:a:1.0/(x)/?nv=(x€)/ID:1", "x-name in nv="),
        ];
        for (text, reason) in cases {
            let err = ClientUri::parse(text).unwrap_err();
            assert!(err.reason.contains(reason), "{text}: {err}");
            assert!(err.to_string().contains(&shorten(text)));
        }
    }
}
