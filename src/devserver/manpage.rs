//! The `omadm-devserver(1)` man page, rendered from the same texts as `--help` so that the
//! two never disagree. In those texts a line at column 0 in capitals is a section heading, a
//! line indented by six or more spaces is preformatted (commands, JSON), and other lines are
//! prose, joined into paragraphs at blank lines.

use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

/// The man page (roff) of `cmd`, with `description` and `extra` (the long about and the
/// after-help text) rendered as described above.
pub(crate) fn render(
    cmd: clap::Command,
    description: &str,
    extra: &str,
) -> std::io::Result<String> {
    let cmd = cmd
        .long_about(None::<&str>)
        .after_long_help(None::<&str>)
        .after_help(None::<&str>);
    let man = Man::new(cmd)
        .section("1")
        .source(format!("omadmd {}", env!("CARGO_PKG_VERSION")))
        .manual("omadmd manual");
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
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(without_repeated_preamble(&text))
}

/// Headings, paragraphs and preformatted blocks of `text`.
fn blocks(roff: &mut Roff, text: &str) {
    let mut prose: Vec<&str> = Vec::new();
    let mut pre: Vec<&str> = Vec::new();
    let flush = |roff: &mut Roff, prose: &mut Vec<&str>, pre: &mut Vec<&str>| {
        if !prose.is_empty() {
            roff.control("PP", []);
            roff.text([roman(prose.join(" "))]);
            prose.clear();
        }
        if !pre.is_empty() {
            roff.control("RS", []);
            roff.control("nf", []);
            for line in pre.iter() {
                roff.text([roman(line.strip_prefix("      ").unwrap_or(line))]);
            }
            roff.control("fi", []);
            roff.control("RE", []);
            pre.clear();
        }
    };
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim().is_empty() {
            flush(roff, &mut prose, &mut pre);
        } else if indent == 0
            && line.chars().all(|c| c.is_ascii_uppercase() || c == ' ')
            && line.len() > 2
        {
            flush(roff, &mut prose, &mut pre);
            roff.control("SH", [line]);
        } else if indent >= 6 {
            if !prose.is_empty() {
                let mut none = Vec::new();
                flush(roff, &mut prose, &mut none);
            }
            pre.push(line);
        } else {
            if !pre.is_empty() {
                let mut none = Vec::new();
                flush(roff, &mut none, &mut pre);
            }
            prose.push(line.trim());
        }
    }
    flush(roff, &mut prose, &mut pre);
}

/// clap_mangen starts each part with the same quoting preamble; keep the first only.
fn without_repeated_preamble(text: &str) -> String {
    const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    match text.find(PREAMBLE) {
        Some(first) => {
            let after = first + PREAMBLE.len();
            format!("{}{}", &text[..after], text[after..].replace(PREAMBLE, ""))
        }
        None => text.to_owned(),
    }
}
