//! Man pages, rendered from the texts the programs themselves show, so that a page and
//! `--help` (or the example configuration) never disagree: omadmd(8) and
//! omadm-devserver(1) from their clap commands and manual texts ([`render`]), omadmd.toml(5)
//! from the example configuration ([`omadmd_toml`]); omadmctl's pages share [`tidy`].
//!
//! The manual texts follow one layout, readable as `--help` output and rendered to roff: a
//! line at column 0 in capitals is a section heading; a line indented by six or more spaces
//! is preformatted (commands, JSON); a line indented by two spaces followed by lines indented
//! by exactly four is a tagged paragraph (a file, signal or variable and what it is); other
//! lines are prose, joined into paragraphs at blank lines.

pub mod omadmd_toml;

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

/// The manual every page names.
pub const MANUAL: &str = "omadmd manual";

/// The date of every page: none, quoted as roff needs an empty macro argument (the page is
/// the same whenever it is built).
pub const NO_DATE: &str = "\"\"";

/// The man page (roff) of `cmd` in `section`, with `description` (the long about) as its
/// DESCRIPTION and `extra` (the after-help text: EXAMPLES, FILES, EXIT STATUS, SEE ALSO…)
/// after OPTIONS, both rendered as the module documentation describes.
pub fn render(
    cmd: clap::Command,
    section: &str,
    description: &str,
    extra: &str,
) -> std::io::Result<String> {
    let cmd = cmd
        .long_about(None::<&str>)
        .after_long_help(None::<&str>)
        .after_help(None::<&str>);
    let man = Man::new(cmd)
        .section(section)
        .date(NO_DATE)
        .source(source())
        .manual(MANUAL);
    let mut out: Vec<u8> = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    let mut roff = Roff::default();
    roff.control("SH", ["DESCRIPTION"]);
    blocks(&mut roff, description);
    roff.to_writer(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut roff = Roff::default();
    blocks(&mut roff, extra);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(tidy(&String::from_utf8_lossy(&out)))
}

/// The `.TH` source field: the package and its version.
fn source() -> String {
    format!("omadmd {}", env!("CARGO_PKG_VERSION"))
}

/// One block of a manual text.
enum Block<'a> {
    /// Prose lines, and the indentation of the first.
    Prose(Vec<&'a str>, usize),
    Pre(Vec<&'a str>),
    /// A tag and the lines of its paragraph.
    Tagged(&'a str, Vec<&'a str>),
}

/// Headings, paragraphs, tagged paragraphs and preformatted blocks of `text`.
fn blocks(roff: &mut Roff, text: &str) {
    let mut current: Option<Block> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        current = if trimmed.is_empty() {
            flush(roff, current);
            None
        } else if indent == 0
            && line.len() > 2
            && line.chars().all(|c| c.is_ascii_uppercase() || c == ' ')
        {
            flush(roff, current);
            roff.control("SH", [line]);
            None
        } else if indent >= 6 {
            match current {
                Some(Block::Pre(mut lines)) => {
                    lines.push(line);
                    Some(Block::Pre(lines))
                }
                other => {
                    flush(roff, other);
                    Some(Block::Pre(vec![line]))
                }
            }
        } else if indent == 4 {
            match current {
                Some(Block::Tagged(tag, mut lines)) => {
                    lines.push(trimmed);
                    Some(Block::Tagged(tag, lines))
                }
                Some(Block::Prose(lines, 2)) if lines.len() == 1 => {
                    Some(Block::Tagged(lines[0], vec![trimmed]))
                }
                other => prose(roff, other, trimmed, indent),
            }
        } else {
            prose(roff, current, trimmed, indent)
        };
    }
    flush(roff, current);
}

/// `current` with the prose line `line` added, or a new prose block after it.
fn prose<'a>(
    roff: &mut Roff,
    current: Option<Block<'a>>,
    line: &'a str,
    indent: usize,
) -> Option<Block<'a>> {
    match current {
        Some(Block::Prose(mut lines, first)) => {
            lines.push(line);
            Some(Block::Prose(lines, first))
        }
        other => {
            flush(roff, other);
            Some(Block::Prose(vec![line], indent))
        }
    }
}

fn flush(roff: &mut Roff, block: Option<Block>) {
    match block {
        None => {}
        Some(Block::Prose(lines, _)) => {
            roff.control("PP", []);
            roff.text([roman(lines.join(" "))]);
        }
        Some(Block::Pre(lines)) => preformatted(roff, lines.iter().map(|l| strip(l, 6))),
        Some(Block::Tagged(tag, lines)) => {
            roff.control("TP", []);
            roff.text([bold(tag)]);
            roff.text([roman(lines.join(" "))]);
        }
    }
}

/// `line` without up to `n` leading spaces.
fn strip(line: &str, n: usize) -> &str {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    &line[spaces.min(n)..]
}

/// An indented no-fill block of `lines`.
fn preformatted<'a>(roff: &mut Roff, lines: impl IntoIterator<Item = &'a str>) {
    roff.control("RS", []);
    roff.control("nf", []);
    for line in lines {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
}

/// A page rendered in parts, made whole: clap_mangen starts each part with the same quoting
/// preamble (the first is kept), and characters beyond ASCII become groff's `\[uXXXX]`
/// escapes, so that the page reads the same whatever the locale `man` runs in.
pub fn tidy(roff: &str) -> String {
    const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let text = match roff.find(PREAMBLE) {
        Some(first) => {
            let after = first + PREAMBLE.len();
            format!("{}{}", &roff[..after], roff[after..].replace(PREAMBLE, ""))
        }
        None => roff.to_owned(),
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roff_of(text: &str) -> String {
        let mut roff = Roff::default();
        blocks(&mut roff, text);
        roff.to_roff()
    }

    #[test]
    fn headings_prose_preformatted_and_tagged_paragraphs() {
        let text = "\
First line
of a paragraph.

FILES
  /etc/x.toml
    The configuration,
    read at start.
  /var/lib/x
    The state.

EXAMPLES
  Start it:
      x --now
  0  prose with a tag-like start
     and its continuation.";
        let roff = roff_of(text);
        let expected = "\
.PP
First line of a paragraph.
.SH FILES
.TP
\\fB/etc/x.toml\\fR
The configuration, read at start.
.TP
\\fB/var/lib/x\\fR
The state.
.SH EXAMPLES
.PP
Start it:
.RS
.nf
x \\-\\-now
.fi
.RE
.PP
0  prose with a tag\\-like start and its continuation.
";
        assert_eq!(roff, expected);
    }

    #[test]
    fn tidy_keeps_one_preamble_and_escapes_beyond_ascii() {
        let pre = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
        let page = format!("{pre}.TH x 1\n{pre}.SH A\nsession 1 \u{2192} 2 \u{2717}\n");
        assert_eq!(
            tidy(&page),
            format!("{pre}.TH x 1\n.SH A\nsession 1 \\[u2192] 2 \\[u2717]\n")
        );
    }
}
