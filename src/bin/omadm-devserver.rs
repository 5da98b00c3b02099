//! `omadm-devserver`: the reference DM 2.0 server for development, tests and demos. Wiring
//! only: everything is in `omadmd::devserver` (see `omadm-devserver --help`).

use std::process::ExitCode;

use clap::Parser;
use omadmd::devserver::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    run(Cli::parse()).await
}
