//! Documentation generated from the command-line definition: man pages (clap_mangen, plus
//! EXAMPLES, EXIT STATUS, ENVIRONMENT and SEE ALSO sections) and shell completion scripts
//! (clap_complete).

use std::io::Write;

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::{ENVIRONMENT, command, examples};
use crate::failure::{EXIT_STATUS, Failure};
use crate::output::emit;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut cmd = command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "omadmctl", &mut script);
    emit(&String::from_utf8_lossy(&script))
}

/// Prints omadmctl(1), or the page of the command at `path` (e.g. `["ddf", "check"]`).
pub fn man(path: &[String]) -> Result<(), Failure> {
    emit(&man_page(path)?)
}

/// The roff text of the page of the command at `path`.
pub fn man_page(path: &[String]) -> Result<String, Failure> {
    let mut root = command().disable_help_subcommand(true);
    root.build();
    let mut cmd = &root;
    for name in path {
        cmd = cmd.find_subcommand(name).ok_or_else(|| {
            Failure::usage(format!(
                "no command {:?} (try omadmctl man with no argument for the list)",
                path.join(" ")
            ))
        })?;
    }
    // The long help's examples appear as their own section below, not as clap's "EXTRA".
    let cmd = cmd
        .clone()
        .after_long_help(clap::builder::Resettable::<clap::builder::StyledStr>::Reset)
        .version(env!("CARGO_PKG_VERSION"));
    let title = if path.is_empty() {
        "omadmctl".to_owned()
    } else {
        format!("omadmctl-{}", path.join("-"))
    };
    let man = Man::new(cmd.clone())
        .title(title.to_uppercase())
        .section("1")
        .source(format!("omadmctl {}", env!("CARGO_PKG_VERSION")))
        .manual("omadmd manual");

    let mut out: Vec<u8> = Vec::new();
    let failed = |e: std::io::Error| Failure::new(1, format!("cannot render the man page: {e}"));
    man.render_title(&mut out).map_err(failed)?;
    man.render_name_section(&mut out).map_err(failed)?;
    man.render_synopsis_section(&mut out).map_err(failed)?;
    man.render_description_section(&mut out).map_err(failed)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out).map_err(failed)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out).map_err(failed)?;
    }

    let mut extra = Roff::default();
    let list = examples(&path.join(" "));
    if !list.is_empty() {
        extra.control("SH", ["EXAMPLES"]);
        for (what, command) in list {
            extra.control("TP", []);
            extra.text([roman(format!("{what}:"))]);
            extra.text([bold(*command)]);
        }
    }
    if path.is_empty() {
        extra.control("SH", ["EXIT STATUS"]);
        for (code, meaning) in EXIT_STATUS {
            extra.control("TP", []);
            extra.text([bold(code.to_string())]);
            extra.text([roman(meaning)]);
        }
        extra.control("SH", ["ENVIRONMENT"]);
        for (name, meaning) in ENVIRONMENT {
            extra.control("TP", []);
            extra.text([bold(name)]);
            extra.text([roman(meaning)]);
        }
    } else {
        extra.control("SH", ["EXIT STATUS"]);
        extra.text([
            roman("0 on success; see "),
            bold("omadmctl"),
            roman("(1) for the statuses of failures."),
        ]);
    }
    extra.control("SH", ["SEE ALSO"]);
    let mut see_also = vec![];
    if !path.is_empty() {
        see_also.extend([bold("omadmctl"), roman("(1), ")]);
    }
    see_also.extend([
        bold("omadmd"),
        roman("(8), "),
        bold("busctl"),
        roman("(1), "),
        bold("polkit"),
        roman("(8)"),
    ]);
    extra.text(see_also);
    extra.to_writer(&mut out).map_err(failed)?;
    man.render_version_section(&mut out).map_err(failed)?;
    out.flush().map_err(failed)?;
    let text = String::from_utf8(out)
        .map_err(|e| Failure::new(1, format!("man page is not UTF-8: {e}")))?;
    Ok(without_repeated_preamble(&text))
}

/// Each section rendered on its own starts with roff's apostrophe preamble; keep only the
/// first.
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
