//! `omadmd`: the OMA DM 2.0 client daemon. Wiring only: the parts live in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use omadmd::store::Store;

/// OMA Device Management 2.0 client daemon.
///
/// omadmd keeps the device's Management Objects in an SQLite store under its state
/// directory. This build opens (creating or migrating) the store, reports what it holds and
/// exits; the D-Bus service and DM sessions are being added on top of it.
#[derive(Parser, Debug)]
#[command(name = "omadmd", version, about, long_about)]
struct Args {
    /// Directory holding the store (store.db).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/omadmd")]
    state_dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = std::fs::create_dir_all(&args.state_dir) {
        eprintln!("omadmd: cannot create {}: {e}", args.state_dir.display());
        return ExitCode::FAILURE;
    }
    let path = args.state_dir.join("store.db");
    match Store::open(&path).and_then(|s| s.stats()) {
        Ok(stats) => {
            println!(
                "omadmd: store {}: schema v{}, {} MO instance(s), {} node(s), change sequence {}",
                path.display(),
                stats.schema_version,
                stats.instances,
                stats.nodes,
                stats.last_seq
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("omadmd: {e}");
            ExitCode::FAILURE
        }
    }
}
