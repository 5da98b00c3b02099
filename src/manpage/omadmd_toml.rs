//! omadmd.toml(5), rendered from the example configuration `packaging/omadmd.toml` (installed
//! as `/etc/omadmd/omadmd.toml`), which is the one place every key is described.
//!
//! The example's layout, which [`Example::parse`] reads and refuses any breach of: comment
//! blocks separated by blank lines, every line of them starting with `#`. The first block is
//! the page's DESCRIPTION. In the others, the last line names what the block is about and
//! the lines before it, `# text` lines, describe it:
//! - `#[table]`: a table whose keys follow, or `#   [table]` (an example line) for one that
//!   has no default;
//! - `#key = value`: a key and its default (TOML), or `#   key = value` for a key unset by
//!   default, with an example value.
//!
//! Lines `#   text` (three spaces) are examples, shown preformatted; `#` alone separates
//! paragraphs. Uncommenting every `#[table]` and `#key = value` line therefore gives the
//! defaults; `tests/packaging_docs.rs` checks that it gives exactly `Config::default()`,
//! that the tables and keys here are those of [`crate::config::Config`], and that the bounds
//! stated are those the parser enforces.

use clap_mangen::roff::{Roff, bold, italic, roman};

/// The example configuration, as installed.
pub const EXAMPLE: &str = include_str!("../../packaging/omadmd.toml");

/// The example configuration, read.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// What the file is and how it is read.
    pub description: Vec<Text>,
    pub tables: Vec<Table>,
}

/// A paragraph of prose or a preformatted example.
#[derive(Clone, Debug, PartialEq)]
pub enum Text {
    Prose(String),
    Example(Vec<String>),
}

/// A table of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Its name as written between the brackets (`notification.udp`, `exec."<pattern>"`).
    pub name: String,
    pub text: Vec<Text>,
    pub keys: Vec<Key>,
}

/// A key of a table.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    /// Its default, as TOML; `None` for a key unset by default (its block ends with an
    /// example of it).
    pub default: Option<String>,
    pub text: Vec<Text>,
}

/// Where the example breaks its layout.
#[derive(Debug, thiserror::Error)]
#[error("packaging/omadmd.toml:{line}: {message}")]
pub struct LayoutError {
    pub line: usize,
    pub message: String,
}

/// What the last line of a block names.
enum Subject {
    Table {
        name: String,
    },
    Key {
        name: String,
        default: Option<String>,
    },
}

impl Example {
    /// Reads `text` laid out as the module documentation describes.
    pub fn parse(text: &str) -> Result<Example, LayoutError> {
        let mut blocks: Vec<Vec<(usize, &str)>> = Vec::new();
        let mut current: Vec<(usize, &str)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            if line.trim().is_empty() {
                if !current.is_empty() {
                    blocks.push(std::mem::take(&mut current));
                }
            } else if line.starts_with('#') {
                current.push((number, line));
            } else {
                return Err(LayoutError {
                    line: number,
                    message: "every line of the example is a comment".into(),
                });
            }
        }
        if !current.is_empty() {
            blocks.push(current);
        }
        let mut blocks = blocks.into_iter();
        let description = match blocks.next() {
            Some(block) => texts(&block)?,
            None => {
                return Err(LayoutError {
                    line: 1,
                    message: "no description".into(),
                });
            }
        };
        let mut tables: Vec<Table> = Vec::new();
        for block in blocks {
            // Invariant: blocks are never empty (one is pushed only with a line in it).
            let (&(number, last), body) = block.split_last().ok_or_else(|| LayoutError {
                line: 0,
                message: "empty block".into(),
            })?;
            let text = texts(body)?;
            match subject(last).ok_or_else(|| LayoutError {
                line: number,
                message: format!(
                    "a block ends with #[table], #key = value or an example of one, not {last:?}"
                ),
            })? {
                Subject::Table { name } => tables.push(Table {
                    name,
                    text,
                    keys: Vec::new(),
                }),
                Subject::Key { name, default } => {
                    let table = tables.last_mut().ok_or_else(|| LayoutError {
                        line: number,
                        message: format!("key {name} before any table"),
                    })?;
                    let mut text = text;
                    if default.is_none() {
                        text.push(Text::Example(vec![example_line(last).to_owned()]));
                    }
                    table.keys.push(Key {
                        name,
                        default,
                        text,
                    });
                }
            }
        }
        Ok(Example {
            description,
            tables,
        })
    }

    /// omadmd.toml(5) in roff.
    pub fn man_page(&self) -> String {
        let mut roff = Roff::default();
        roff.control(
            "TH",
            [
                "omadmd.toml",
                "5",
                super::NO_DATE,
                &super::source(),
                super::MANUAL,
            ],
        );
        roff.control("SH", ["NAME"]);
        roff.text([roman("omadmd.toml - configuration file of omadmd")]);
        roff.control("SH", ["SYNOPSIS"]);
        roff.text([bold("/etc/omadmd/omadmd.toml")]);
        roff.control("SH", ["DESCRIPTION"]);
        render(&mut roff, &self.description, false);
        for table in &self.tables {
            // A macro argument cannot hold a plain double quote.
            let heading = format!("[{}]", table.name).replace('"', "\\(dq");
            roff.control("SH", [heading.as_str()]);
            render(&mut roff, &table.text, false);
            for key in &table.keys {
                roff.control("TP", []);
                match &key.default {
                    Some(default) => roff.text([
                        bold(key.name.as_str()),
                        roman(" = "),
                        italic(default.as_str()),
                    ]),
                    None => roff.text([bold(key.name.as_str())]),
                };
                render(&mut roff, &key.text, true);
            }
        }
        roff.control("SH", ["SEE ALSO"]);
        roff.text([
            bold("omadmd"),
            roman("(8), "),
            bold("omadmctl"),
            roman("(1), "),
            bold("systemctl"),
            roman("(1); the TOML format: https://toml.io/"),
        ]);
        super::tidy(&roff.render())
    }
}

/// The table or key `line` names, if it is one of the forms a block may end with.
fn subject(line: &str) -> Option<Subject> {
    let (content, has_default) = match line.strip_prefix("#   ") {
        Some(example) => (example.trim(), false),
        None => (line.strip_prefix('#')?, true),
    };
    if content.starts_with(' ') || content.is_empty() {
        return None;
    }
    if let Some(name) = content
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return Some(Subject::Table {
            name: name.to_owned(),
        });
    }
    let (name, value) = content.split_once(" = ")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    Some(Subject::Key {
        name: name.to_owned(),
        default: has_default.then(|| value.to_owned()),
    })
}

/// An example line without its comment mark and indentation.
fn example_line(line: &str) -> &str {
    line.trim_start_matches('#').trim()
}

/// The paragraphs and examples of the `# text` and `#   example` lines of a block.
fn texts(lines: &[(usize, &str)]) -> Result<Vec<Text>, LayoutError> {
    let mut out = Vec::new();
    let mut prose: Vec<&str> = Vec::new();
    let mut example: Vec<String> = Vec::new();
    let flush_prose = |out: &mut Vec<Text>, prose: &mut Vec<&str>| {
        if !prose.is_empty() {
            out.push(Text::Prose(prose.join(" ")));
            prose.clear();
        }
    };
    for &(number, line) in lines {
        if line == "#" {
            flush_prose(&mut out, &mut prose);
            if !example.is_empty() {
                out.push(Text::Example(std::mem::take(&mut example)));
            }
        } else if line.starts_with("#   ") {
            flush_prose(&mut out, &mut prose);
            example.push(example_line(line).to_owned());
        } else if let Some(text) = line.strip_prefix("# ") {
            if !example.is_empty() {
                out.push(Text::Example(std::mem::take(&mut example)));
            }
            prose.push(text.trim());
        } else {
            return Err(LayoutError {
                line: number,
                message: format!(
                    "a table or key line ends its block; text is \"# text\" or \"#   example\", not {line:?}"
                ),
            });
        }
    }
    flush_prose(&mut out, &mut prose);
    if !example.is_empty() {
        out.push(Text::Example(example));
    }
    Ok(out)
}

/// Paragraphs and examples in roff. In a tagged paragraph's body (`tagged`), the first
/// paragraph goes on in the body and the others are indented like it.
fn render(roff: &mut Roff, texts: &[Text], tagged: bool) {
    for (i, text) in texts.iter().enumerate() {
        match text {
            Text::Prose(p) => {
                match (tagged, i) {
                    (true, 0) => {}
                    (true, _) => {
                        roff.control("IP", []);
                    }
                    (false, _) => {
                        roff.control("PP", []);
                    }
                }
                roff.text([roman(p.as_str())]);
            }
            Text::Example(lines) => {
                super::preformatted(roff, lines.iter().map(String::as_str));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "\
# The file.
#
# Second paragraph.

# A table.
#[t]

# A key.
#k = 1

# Unset, e.g.:
#   u = \"x\"

# Another table.
#   [m.\"<p>\"]
";

    #[test]
    fn blocks_name_tables_and_keys() {
        let e = Example::parse(SMALL).unwrap();
        assert_eq!(
            e.description,
            [
                Text::Prose("The file.".into()),
                Text::Prose("Second paragraph.".into())
            ]
        );
        assert_eq!(e.tables.len(), 2);
        assert_eq!(e.tables[0].name, "t");
        assert_eq!(
            e.tables[0].keys,
            [
                Key {
                    name: "k".into(),
                    default: Some("1".into()),
                    text: vec![Text::Prose("A key.".into())]
                },
                Key {
                    name: "u".into(),
                    default: None,
                    text: vec![
                        Text::Prose("Unset, e.g.:".into()),
                        Text::Example(vec!["u = \"x\"".into()])
                    ]
                }
            ]
        );
        assert_eq!(e.tables[1].name, "m.\"<p>\"");
    }

    #[test]
    fn breaches_of_the_layout_are_refused_with_their_line() {
        for (text, line) in [
            ("# d\n\nk = 1\n", 3),
            ("# d\n\n# text\n", 3),
            ("# d\n\n#k = 1\n", 3),
            ("# d\n\n#[t]\n\n# a\n#x\n#k = 1\n", 6),
            ("# d\n\n#[t]\n\n#K = 1\n", 5),
        ] {
            let e = Example::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }

    #[test]
    fn the_page_shows_tables_keys_defaults_and_examples() {
        let page = Example::parse(SMALL).unwrap().man_page();
        for part in [
            ".TH omadmd.toml 5",
            ".SH [t]\n.PP\nA table.\n",
            ".TP\n\\fBk\\fR = \\fI1\\fR\nA key.\n",
            ".TP\n\\fBu\\fR\nUnset, e.g.:\n.RS\n.nf\nu = \"x\"\n.fi\n.RE\n",
            ".SH [m.\\(dq<p>\\(dq]\n.PP\nAnother table.\n",
        ] {
            assert!(page.contains(part), "{part:?} not in\n{page}");
        }
    }
}
