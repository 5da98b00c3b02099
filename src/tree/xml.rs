//! A small, bounded element tree over quick-xml, shared by the DDF, TNDS and LwM2M readers.
//!
//! Safety properties the readers rely on: no external DTD is ever fetched and no entity is
//! expanded beyond the five predefined ones and character references (a DOCTYPE internal
//! subset is skipped, so "billion laughs" and XXE have nothing to work with); input size,
//! element count and nesting depth are bounded; a UTF-8 byte-order mark is accepted.
//! Documents are XML 1.0: a character outside its `Char` production ([`is_xml_char`]),
//! written raw or as a character reference, refuses the document.

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::escape::{EscapeError, ParseCharRefError};
use quick_xml::events::{BytesStart, Event};

/// Largest document accepted.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 96;
/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 1_000_000;

/// An element: local name (namespace prefix removed), the line it starts on, its text
/// (all text and CDATA directly inside it, concatenated) and its child elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub name: String,
    /// The namespace prefix as written (`MSFT` in `MSFT:Applicability`), if any.
    pub prefix: Option<String>,
    pub line: usize,
    pub text: String,
    /// Attributes as written: (qualified name, value with references resolved).
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Element>,
}

/// Why a document could not be read, with the 1-based line where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct XmlError {
    pub line: usize,
    pub reason: String,
}

impl Element {
    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name == name && c.prefix.is_none())
    }

    /// Every child element named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children
            .iter()
            .filter(move |c| c.name == name && c.prefix.is_none())
    }

    /// The trimmed text of the first child named `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// The value of the attribute named `name` (as written, prefix included), if present.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether XML 1.0 allows `c` in a document (its `Char` production): tab, LF, CR and
/// everything from U+0020 on except U+FFFE and U+FFFF (surrogates are not `char`s). The
/// other C0 controls, NUL included, cannot appear, not even as character references.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Parses `input` into its root element.
pub fn parse(input: &str) -> Result<Element, XmlError> {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    if input.len() > MAX_BYTES {
        return Err(XmlError {
            line: 1,
            reason: format!("document is larger than {MAX_BYTES} bytes"),
        });
    }
    let mut lines = LineCounter::new(input);
    if let Some((offset, c)) = input.char_indices().find(|&(_, c)| !is_xml_char(c)) {
        return Err(XmlError {
            line: lines.line_at(offset as u64),
            reason: format!(
                "character U+{:04X} is not allowed in an XML 1.0 document",
                u32::from(c)
            ),
        });
    }
    let mut reader = Reader::from_str(input);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let start = lines.line_at(reader.buffer_position());
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                return Err(XmlError {
                    line: lines.line_at(reader.error_position()),
                    reason: e.to_string(),
                });
            }
        };
        let fail = |reason: String| XmlError {
            line: start,
            reason,
        };
        match event {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                return Err(fail(format!(
                    "element <{}> after the root element ended",
                    e.name().into_inner()
                )));
            }
            ev @ (Event::Start(_) | Event::Empty(_)) => {
                let (Event::Start(ref e) | Event::Empty(ref e)) = ev else {
                    unreachable!("matched above")
                };
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(fail(format!("more than {MAX_ELEMENTS} elements")));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(format!("elements nested deeper than {MAX_DEPTH}")));
                }
                let qname = e.name().into_inner();
                let (prefix, name) = match qname.split_once(':') {
                    Some((p, n)) => (Some(p.to_owned()), n.to_owned()),
                    None => (None, qname.to_owned()),
                };
                let element = Element {
                    name,
                    prefix,
                    line: start,
                    text: String::new(),
                    attributes: attributes(e).map_err(fail)?,
                    children: Vec::new(),
                };
                if matches!(ev, Event::Start(_)) {
                    stack.push(element);
                } else {
                    close(element, &mut stack, &mut root);
                }
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| fail("unexpected closing tag".into()))?;
                close(element, &mut stack, &mut root);
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(fail("text outside the root element".into())),
                }
            }
            Event::CData(c) => {
                let top = stack
                    .last_mut()
                    .ok_or_else(|| fail("CDATA outside the root element".into()))?;
                top.text.push_str(&c.xml10_content());
            }
            Event::GeneralRef(r) => {
                let name = r.xml10_content();
                let not_allowed = |code: u32| {
                    fail(format!(
                        "character reference &{name}; stands for U+{code:04X}, which XML 1.0 does not allow"
                    ))
                };
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) if is_xml_char(c) => c,
                    Ok(Some(c)) => return Err(not_allowed(u32::from(c))),
                    Ok(None) => predefined_entity(&name).ok_or_else(|| {
                        fail(format!(
                            "entity &{name}; is not expanded (only the XML predefined entities are)"
                        ))
                    })?,
                    Err(quick_xml::Error::Escape(EscapeError::InvalidCharRef(
                        ParseCharRefError::IllegalCharacter(code)
                        | ParseCharRefError::InvalidCodepoint(code),
                    ))) => return Err(not_allowed(code)),
                    Err(e) => return Err(fail(e.to_string())),
                };
                let top = stack
                    .last_mut()
                    .ok_or_else(|| fail("reference outside the root element".into()))?;
                top.text.push(ch);
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError {
            line: lines.line_at(input.len() as u64),
            reason: format!(
                "element <{}> opened on line {} is never closed",
                open.name, open.line
            ),
        });
    }
    root.ok_or(XmlError {
        line: 1,
        reason: "no root element".into(),
    })
}

/// Turns byte offsets into 1-based line numbers in one forward pass (offsets only grow,
/// except for error positions, which are recounted from the start).
struct LineCounter<'a> {
    input: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(input: &'a str) -> Self {
        LineCounter {
            input: input.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    fn line_at(&mut self, offset: u64) -> usize {
        let offset = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.input.len());
        if offset < self.pos {
            self.pos = 0;
            self.line = 1;
        }
        self.line += self.input[self.pos..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = offset;
        self.line
    }
}

/// The attributes of a start tag, duplicates refused, values normalized as XML 1.0 says
/// (predefined entities and character references resolved, whitespace turned to spaces).
fn attributes(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| err.to_string())?;
        let name = attr.key.into_inner().to_owned();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| format!("attribute {name}: {err}"))?;
        if let Some(c) = value.chars().find(|&c| !is_xml_char(c)) {
            return Err(format!(
                "attribute {name}: character U+{:04X} is not allowed in an XML 1.0 document",
                u32::from(c)
            ));
        }
        out.push((name, value.into_owned()));
    }
    Ok(out)
}

fn close(element: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cdata_entities_and_prefixes() {
        let doc = "\u{feff}<?xml version=\"1.0\"?>\n<!DOCTYPE a [<?pi x?>]>\n<a><b>x &amp; &#65;<![CDATA[<c>]]><!-- n --></b>\n<MSFT:c/></a>";
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "a");
        assert_eq!(root.child_text("b"), Some("x & A<c>"));
        assert_eq!(root.children[1].prefix.as_deref(), Some("MSFT"));
        assert_eq!(root.children[1].line, 4);
        assert!(
            root.child("c").is_none(),
            "prefixed elements are not plain children"
        );
    }

    #[test]
    fn custom_entities_are_not_expanded() {
        let doc = "<!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<a>&x;</a>";
        let err = parse(doc).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("&x;"), "{err}");
    }

    #[test]
    fn broken_documents_name_the_line() {
        let err = parse("<a>\n<b>\n</a>").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        let err = parse("<a>\n<b>").unwrap_err();
        assert!(err.reason.contains("never closed"), "{err}");
        assert!(parse("").unwrap_err().reason.contains("no root"));
        assert!(
            parse("<a/><b/>")
                .unwrap_err()
                .reason
                .contains("after the root")
        );
    }

    #[test]
    fn characters_outside_xml_1_0_are_refused_raw_or_referenced() {
        for (doc, line, shown) in [
            ("<a>\nx\0y</a>", 2, "character U+0000 is not allowed"),
            ("<a>\u{1}</a>", 1, "character U+0001 is not allowed"),
            (
                "<a><!-- \u{b} --></a>",
                1,
                "character U+000B is not allowed",
            ),
            ("<a>\n\n\u{fffe}</a>", 3, "character U+FFFE is not allowed"),
            ("<a>\n&#0;</a>", 2, "&#0; stands for U+0000"),
            ("<a>&#x1;</a>", 1, "&#x1; stands for U+0001"),
            ("<a>&#31;</a>", 1, "&#31; stands for U+001F"),
            ("<a>&#xFFFF;</a>", 1, "&#xFFFF; stands for U+FFFF"),
            ("<a>&#xD800;</a>", 1, "&#xD800; stands for U+D800"),
        ] {
            let err = parse(doc).unwrap_err();
            assert_eq!(err.line, line, "{doc:?}: {err}");
            assert!(err.reason.contains(shown), "{doc:?}: {err}");
        }
        let ok = parse("<a>\t&#9;&#10;&#13;&#x85;&#xFFFD;&#x10FFFF;\u{7f}</a>").unwrap();
        assert_eq!(ok.text, "\t\t\n\r\u{85}\u{fffd}\u{10ffff}\u{7f}");
    }

    #[test]
    fn attributes_are_read_resolved_and_checked() {
        let root = parse("<a x:k='1' ID=\"4&amp;&#65;\"><b/></a>").unwrap();
        assert_eq!(root.attribute("ID"), Some("4&A"));
        assert_eq!(root.attribute("x:k"), Some("1"));
        assert_eq!(root.attribute("k"), None);
        assert!(root.children[0].attributes.is_empty());
        for doc in ["<a ID='1' ID='2'/>", "<a ID='&#1;'/>", "<a ID='&x;'/>"] {
            assert!(parse(doc).is_err(), "{doc}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().reason.contains("deeper"));
    }
}
