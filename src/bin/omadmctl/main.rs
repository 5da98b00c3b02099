//! `omadmctl`: the admin and user command line of omadmd.
//!
//! Offline checks of DDF and TNDS files work without a daemon; everything else talks to
//! `org.omadm.Client1` over D-Bus. `--json` switches every read command to JSON output.

mod offline;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Inspect and manage the omadmd OMA DM 2.0 client.
#[derive(Parser, Debug)]
#[command(name = "omadmctl", version, about, long_about = None)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check Device Description Framework (DDF) files offline.
    #[command(subcommand)]
    Ddf(DdfCommand),
    /// Check TNDS (MO tree XML) documents offline.
    #[command(subcommand)]
    Tnds(TndsCommand),
}

#[derive(Subcommand, Debug)]
enum DdfCommand {
    /// Validate DDF files and print a summary of each: the MOs it defines (MOID, root node,
    /// node count) or the line and reason it was refused. Exits 1 if any file is invalid.
    Check {
        /// DDF files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum TndsCommand {
    /// Validate TNDS documents and print a summary of each: its node count and MOID, or
    /// every problem with its line. Trees whose MOID one of the DDFs defines are checked
    /// against that MO type. Exits 1 if any file is invalid.
    Check {
        /// DDF file defining MO types to check against (repeatable).
        #[arg(long = "ddf", value_name = "FILE")]
        ddfs: Vec<PathBuf>,
        /// TNDS files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match cli.command {
        Command::Ddf(DdfCommand::Check { files }) => offline::ddf_check(&files, cli.json),
        Command::Tnds(TndsCommand::Check { ddfs, files }) => {
            offline::tnds_check(&ddfs, &files, cli.json)
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
