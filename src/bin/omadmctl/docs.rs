//! Documentation generated from the command-line definition: man pages (clap_mangen, plus
//! EXAMPLES, EXIT STATUS, ENVIRONMENT and SEE ALSO sections) and shell completion scripts
//! (clap_complete).

use std::io::Write;

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::{ENVIRONMENT, ManArgs, command, examples};
use crate::failure::{EXIT_STATUS, Failure};
use crate::output::emit;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut cmd = command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "omadmctl", &mut script);
    emit(&String::from_utf8_lossy(&script))
}

/// Prints omadmctl(1), the page of the command at `args.command` (e.g. `["ddf", "check"]`),
/// or with `--list` the command of every other page.
pub fn man(args: &ManArgs) -> Result<(), Failure> {
    if args.list {
        let mut root = command().disable_help_subcommand(true);
        root.build();
        let mut paths = Vec::new();
        commands_below(&root, "", &mut paths);
        return emit(&paths.iter().map(|p| format!("{p}\n")).collect::<String>());
    }
    emit(&man_page(&args.command)?)
}

/// The paths (space-separated names) of the visible commands below `cmd`, whose own path is
/// `path`, depth first.
fn commands_below(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_path = if path.is_empty() {
            sub.get_name().to_owned()
        } else {
            format!("{path} {}", sub.get_name())
        };
        out.push(sub_path.clone());
        commands_below(sub, &sub_path, out);
    }
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
        .date(omadmd::manpage::NO_DATE)
        .source(format!("omadmctl {}", env!("CARGO_PKG_VERSION")))
        .manual(omadmd::manpage::MANUAL);

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
    Ok(omadmd::manpage::tidy(&text))
}
