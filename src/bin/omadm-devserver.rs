//! `omadm-devserver`: the reference DM 2.0 server for development, tests and demos.

use std::process::ExitCode;

use clap::Parser;

/// Reference OMA DM 2.0 server for development, tests and demos.
///
/// omadm-devserver will serve DM 2.0 sessions over HTTPS with generated certificates,
/// data-repository endpoints and scripted scenarios. It does not serve sessions yet: the
/// DM session engine it exercises is still being built.
#[derive(Parser, Debug)]
#[command(name = "omadm-devserver", version, about, long_about)]
struct Args {}

fn main() -> ExitCode {
    Args::parse();
    eprintln!("omadm-devserver: DM 2.0 sessions are not implemented in this build");
    ExitCode::FAILURE
}
