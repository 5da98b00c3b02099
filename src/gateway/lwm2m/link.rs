//! The CoRE link format (RFC 6690) of an LwM2M Register or Update payload (TS Core
//! §6.2.1, TS Transport §6.4): which objects, object versions and object instances a child
//! has, and the alternate path its objects live under.
//!
//! `</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>;ver=1.2,</3303>;ver=1.1,</3303/0>` says:
//! objects at the default root; object 1 instance 0; object 3 version 1.2 instance 0;
//! object 3303 version 1.1 instances 0. A link with `rt="oma.lwm2m"` names the root
//! (`</lwm2m>;rt="oma.lwm2m"` puts every object under `/lwm2m`); a `</>` link without it
//! names the default root. Every other link is an object or object instance under the
//! root; its `ver` is the object's version (LwM2M 1.1 also puts it on an instance link).
//! Other parameters are read (quoted values may hold `,` and `;`) and not used.

use std::borrow::Cow;

use super::codec::CodecError;
use super::path::LwPath;

/// The longest payload read.
pub const MAX_BYTES: usize = 64 * 1024;

/// The most links a payload may hold.
pub const MAX_LINKS: usize = 1024;

/// The longest object version (`65535.65535`).
const MAX_VERSION: usize = 11;

/// What a registration says the child has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registered {
    /// The alternate path the objects live under (`/lwm2m`, without a trailing `/`), from
    /// the link with `rt="oma.lwm2m"`; `None` for the default root.
    pub root: Option<String>,
    /// Each object once, in order of first appearance.
    pub objects: Vec<RegisteredObject>,
}

/// One object of a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredObject {
    pub oid: u16,
    /// `ver`, `major.minor`; `None` when no link gives it (the client has version 1.0
    /// of the object).
    pub version: Option<String>,
    /// Its instances, each once, in order of first appearance.
    pub instances: Vec<u16>,
}

/// Reads a Register or Update payload.
pub fn parse_registration(text: &str) -> Result<Registered, CodecError> {
    if text.len() > MAX_BYTES {
        return Err(CodecError::LinksTooLong {
            len: text.len(),
            limit: MAX_BYTES,
        });
    }
    let links = Parser { text, pos: 0 }.links()?;
    let mut registered = Registered::default();
    let mut root_link = None;
    for link in &links {
        let lwm2m_root = link
            .param("rt")
            .is_some_and(|rt| rt.split_ascii_whitespace().any(|t| t == "oma.lwm2m"));
        if !lwm2m_root {
            continue;
        }
        if root_link.replace(link.at).is_some() {
            return Err(link.error("a second link with rt=\"oma.lwm2m\"".to_owned()));
        }
        if !link.target.starts_with('/') {
            return Err(link.error("the root must be an absolute path".to_owned()));
        }
        let root = link.target.trim_end_matches('/');
        registered.root = (!root.is_empty()).then(|| root.to_owned());
    }
    let root = registered.root.as_deref().unwrap_or_default();
    for link in &links {
        if root_link == Some(link.at) || link.target == "/" {
            continue;
        }
        let path = link
            .target
            .strip_prefix(root)
            .filter(|rest| rest.starts_with('/'))
            .ok_or_else(|| link.error(format!("not under the root {root}/")))?;
        let path: LwPath = path.parse().map_err(|e| link.error(format!("{e}")))?;
        if path.rid().is_some() {
            return Err(link.error("not an object or object instance".to_owned()));
        }
        let at = match registered.objects.iter().position(|o| o.oid == path.oid()) {
            Some(at) => at,
            None => {
                registered.objects.push(RegisteredObject {
                    oid: path.oid(),
                    version: None,
                    instances: Vec::new(),
                });
                registered.objects.len() - 1
            }
        };
        let object = &mut registered.objects[at];
        if let Some(iid) = path.iid()
            && !object.instances.contains(&iid)
        {
            object.instances.push(iid);
        }
        if let Some(ver) = link.param("ver") {
            if !is_version(&ver) {
                return Err(link.error(format!("version {ver:?} is not major.minor")));
            }
            match &object.version {
                None => object.version = Some(ver.into_owned()),
                Some(earlier) if *earlier == ver => {}
                Some(earlier) => {
                    return Err(link.error(format!(
                        "version {ver} where an earlier link gave {earlier}"
                    )));
                }
            }
        }
    }
    Ok(registered)
}

/// `major.minor`, decimal.
fn is_version(text: &str) -> bool {
    let number = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    text.len() <= MAX_VERSION
        && text
            .split_once('.')
            .is_some_and(|(major, minor)| number(major) && number(minor))
}

/// One link: its target (between `<` and `>`) and its parameters.
struct Link<'a> {
    /// Byte offset of its `<`.
    at: usize,
    target: &'a str,
    params: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

impl Link<'_> {
    /// The value of the first parameter named `name` (a parameter without a value reads
    /// as empty).
    fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.clone().unwrap_or_default())
    }

    fn error(&self, problem: String) -> CodecError {
        CodecError::LinkTarget {
            at: self.at,
            target: self.target.to_owned(),
            problem,
        }
    }
}

/// Reads links: `<target>` then `;name` or `;name=value` parameters (values bare or
/// quoted, with `\` escaping in quotes), links separated by `,`. Whitespace around the
/// separators, which some clients write, is skipped.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn links(mut self) -> Result<Vec<Link<'a>>, CodecError> {
        let mut links = Vec::new();
        self.skip_space();
        if self.pos == self.text.len() {
            return Ok(links);
        }
        loop {
            if links.len() == MAX_LINKS {
                return Err(CodecError::TooManyLinks { limit: MAX_LINKS });
            }
            links.push(self.link()?);
            self.skip_space();
            match self.peek() {
                None => return Ok(links),
                Some(',') => {
                    self.pos += 1;
                    self.skip_space();
                }
                Some(_) => return Err(self.error("expected ',' or ';' after a link")),
            }
        }
    }

    fn link(&mut self) -> Result<Link<'a>, CodecError> {
        let at = self.pos;
        if self.peek() != Some('<') {
            return Err(self.error("expected '<'"));
        }
        self.pos += 1;
        let target = self.take_while(|c| c != '>' && c != '<');
        if self.peek() != Some('>') {
            return Err(self.error("expected '>'"));
        }
        self.pos += 1;
        let mut params = Vec::new();
        loop {
            self.skip_space();
            if self.peek() != Some(';') {
                return Ok(Link { at, target, params });
            }
            self.pos += 1;
            self.skip_space();
            let name = self.take_while(|c| {
                !matches!(c, '=' | ';' | ',' | '"' | '<' | '>') && !c.is_ascii_whitespace()
            });
            if name.is_empty() {
                return Err(self.error("expected a parameter name"));
            }
            self.skip_space();
            let value = if self.peek() == Some('=') {
                self.pos += 1;
                self.skip_space();
                Some(self.value()?)
            } else {
                None
            };
            params.push((name, value));
        }
    }

    /// A parameter's value: a quoted string or a bare token.
    fn value(&mut self) -> Result<Cow<'a, str>, CodecError> {
        if self.peek() != Some('"') {
            let token =
                self.take_while(|c| !matches!(c, ';' | ',' | '"') && !c.is_ascii_whitespace());
            if token.is_empty() {
                return Err(self.error("expected a parameter value"));
            }
            return Ok(Cow::Borrowed(token));
        }
        self.pos += 1;
        let start = self.pos;
        let mut unescaped: Option<String> = None;
        let mut chars = self.text[start..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = start + i + 1;
                    return Ok(match unescaped {
                        Some(s) => Cow::Owned(s),
                        None => Cow::Borrowed(&self.text[start..start + i]),
                    });
                }
                '\\' => {
                    let s = unescaped.get_or_insert_with(|| self.text[start..start + i].to_owned());
                    match chars.next() {
                        Some((_, escaped)) => s.push(escaped),
                        None => break,
                    }
                }
                c => {
                    if let Some(s) = &mut unescaped {
                        s.push(c);
                    }
                }
            }
        }
        self.pos = start - 1;
        Err(self.error("unterminated quoted string"))
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = &self.text[self.pos..];
        let len = rest.find(|c| !keep(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    fn skip_space(&mut self) {
        self.take_while(|c| c.is_ascii_whitespace());
    }

    fn error(&self, problem: &'static str) -> CodecError {
        CodecError::LinkSyntax {
            at: self.pos,
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(oid: u16, version: Option<&str>, instances: &[u16]) -> RegisteredObject {
        RegisteredObject {
            oid,
            version: version.map(str::to_owned),
            instances: instances.to_vec(),
        }
    }

    #[test]
    fn reads_a_registration() {
        let text = r#"</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>;ver=1.2,</3303>;ver=1.1,</3303/0>,</3303/1>"#;
        assert_eq!(
            parse_registration(text).unwrap(),
            Registered {
                root: None,
                objects: vec![
                    object(1, None, &[0]),
                    object(3, Some("1.2"), &[0]),
                    object(3303, Some("1.1"), &[0, 1]),
                ],
            }
        );
    }

    #[test]
    fn objects_live_under_an_alternate_root() {
        let text = r#"</lwm2m/3303/0>,</lwm2m>;rt="oma.lwm2m core";ct="60 110 11542",</lwm2m/3/0>;ver="1.1",</lwm2m/3303/1>"#;
        assert_eq!(
            parse_registration(text).unwrap(),
            Registered {
                root: Some("/lwm2m".to_owned()),
                objects: vec![object(3303, None, &[0, 1]), object(3, Some("1.1"), &[0])],
            }
        );
        let trailing = r#"</a/b/>;rt="oma.lwm2m",</a/b/5>"#;
        assert_eq!(
            parse_registration(trailing).unwrap().root.as_deref(),
            Some("/a/b")
        );
        assert!(matches!(
            parse_registration(r#"</lwm2m>;rt="oma.lwm2m",</3/0>"#),
            Err(CodecError::LinkTarget { at: 24, .. })
        ));
        assert!(matches!(
            parse_registration(r#"</lwm2m>;rt="oma.lwm2m",</lwm2m3/0>"#),
            Err(CodecError::LinkTarget { .. })
        ));
    }

    #[test]
    fn quoted_values_and_spacing_do_not_break_links() {
        let text =
            "</>;ct=11543;title=\"a, b; \\\"c\\\" ,<x>\";flag, </1/0>;ssid=101 ,\n </3/0>;ver=1.0";
        let registered = parse_registration(text).unwrap();
        assert_eq!(
            registered.objects,
            [object(1, None, &[0]), object(3, Some("1.0"), &[0])]
        );
        let links = Parser { text, pos: 0 }.links().unwrap();
        assert_eq!(links[0].param("title").as_deref(), Some("a, b; \"c\" ,<x>"));
        assert_eq!(links[0].param("flag").as_deref(), Some(""));
        assert_eq!(links[0].param("ct").as_deref(), Some("11543"));
        assert_eq!(Some(links[1].at), text.find("</1/0>"));
        // The same object and instance again, and a version on the instance link.
        let again = "</3>,</3/0>;ver=1.1,</3/0>,</3>;ver=1.1";
        assert_eq!(
            parse_registration(again).unwrap().objects,
            [object(3, Some("1.1"), &[0])]
        );
        assert_eq!(parse_registration("").unwrap(), Registered::default());
        assert_eq!(parse_registration("  ").unwrap(), Registered::default());
    }

    #[test]
    fn malformed_payloads_are_refused_saying_where() {
        for (text, at) in [
            ("</1/0>,", 7),
            ("</1/0", 5),
            ("1/0", 0),
            ("</1/0>;", 7),
            ("</1/0>;=3", 7),
            ("</1/0>;ver=", 11),
            ("</1/0>;ver=\"1.0", 11),
            ("</1/0>;ver=\"1.0\\", 11),
            ("</1/0> </2/0>", 7),
            ("</1/0>;a=\"x\"y", 12),
            ("</1<0>", 3),
        ] {
            match parse_registration(text) {
                Err(CodecError::LinkSyntax { at: got, .. }) => assert_eq!(got, at, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        for text in [
            "</3/0/1>",
            "</65535>",
            "</03>",
            "<3/0>",
            "<coap://h/3/0>",
            "</3>;ver=1",
            "</3>;ver=1.x",
            "</3>;ver=123456.123456",
            "</3>;ver=1.0,</3/0>;ver=1.1",
            "</>;rt=\"oma.lwm2m\",</a>;rt=\"oma.lwm2m\"",
            "<a>;rt=\"oma.lwm2m\"",
        ] {
            assert!(
                matches!(parse_registration(text), Err(CodecError::LinkTarget { .. })),
                "{text}: {:?}",
                parse_registration(text)
            );
        }
        assert_eq!(
            parse_registration("</3>;ver=1.0,</3/0>;ver=1.1")
                .unwrap_err()
                .to_string(),
            "link </3/0> at byte 13: version 1.1 where an earlier link gave 1.0"
        );
    }

    #[test]
    fn payloads_are_bounded() {
        let links = |n: usize| {
            (0..n)
                .map(|i| format!("</{i}>"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            parse_registration(&links(MAX_LINKS)).unwrap().objects.len(),
            MAX_LINKS
        );
        assert_eq!(
            parse_registration(&links(MAX_LINKS + 1)),
            Err(CodecError::TooManyLinks { limit: MAX_LINKS })
        );
        let long = format!("</3/0>;title=\"{}\"", "x".repeat(MAX_BYTES));
        assert_eq!(
            parse_registration(&long),
            Err(CodecError::LinksTooLong {
                len: long.len(),
                limit: MAX_BYTES
            })
        );
    }
}
