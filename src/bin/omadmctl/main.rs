//! `omadmctl`: the admin and user command line of omadmd.
//!
//! Offline checks of DDF and TNDS files work without a daemon; everything else talks to
//! `org.omadm.Client1` over D-Bus (the system bus, or the session bus with `--session`).
//! `--json` switches every read command to JSON output. Failures print `omadmctl: <message>`
//! on stderr and exit with a status derived from the D-Bus error name (see
//! [`failure::EXIT_STATUS`]).

mod account;
mod agent;
mod alert;
mod bootstrap;
mod children;
mod cli;
mod client;
mod commands;
mod dmacc;
mod docs;
mod failure;
mod offline;
mod output;
mod progress;
mod session;
mod transfers;
mod tree_view;
mod watch;

use std::process::ExitCode;

use clap::FromArgMatches;

use cli::{Cli, Command, DdfCommand, TndsCommand};
use failure::Bus;

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&cli::command().get_matches()).unwrap_or_else(|e| e.exit());
    let bus = if cli.session {
        Bus::Session
    } else {
        Bus::System
    };
    let result = match cli.command {
        Command::Ddf(DdfCommand::Check { files }) => {
            offline_result(offline::ddf_check(&files, cli.json))
        }
        Command::Tnds(TndsCommand::Check { ddfs, files }) => {
            offline_result(offline::tnds_check(&ddfs, &files, cli.json))
        }
        Command::Completions(args) => docs::completions(args.shell),
        Command::Man(args) => docs::man(&args),
        command => {
            let ask = if cli.no_ask_password {
                client::AskPassword::No
            } else {
                client::AskPassword::Yes
            };
            commands::run_blocking(bus, ask, cli.json, command)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            ExitCode::from(failure.status)
        }
    }
}

/// Offline checks print their own reports; an invalid file is status 1.
fn offline_result(ok: bool) -> Result<(), failure::Failure> {
    if ok {
        Ok(())
    } else {
        Err(failure::Failure::new(1, ""))
    }
}
