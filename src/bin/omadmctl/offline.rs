//! Offline file checks: `omadmctl ddf check`. They read files only and need no daemon.

use std::path::{Path, PathBuf};

use serde_json::json;

use omadmd::tree::ddf;

/// Checks each DDF file, prints one summary per file, returns whether all were valid.
pub fn ddf_check(files: &[PathBuf], as_json: bool) -> bool {
    let results: Vec<_> = files.iter().map(|f| (f, ddf::load(f))).collect();
    if as_json {
        let out: Vec<_> = results
            .iter()
            .map(|(file, r)| match r {
                Ok(d) => json!({
                    "file": file,
                    "valid": true,
                    "nodes": d.node_count(),
                    "mos": d.mo_types().iter().map(|t| json!({
                        "moid": t.moid, "root": t.root_name(), "nodes": t.root.count(),
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => json!({ "file": file, "valid": false, "line": e.line, "error": e.reason }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for (file, r) in &results {
            print_ddf_summary(file, r);
        }
    }
    results.iter().all(|(_, r)| r.is_ok())
}

fn print_ddf_summary(file: &Path, result: &Result<ddf::DdfFile, ddf::DdfError>) {
    match result {
        Ok(d) => {
            let types = d.mo_types();
            println!("{}: ok, {} nodes, {} MO(s)", file.display(), d.node_count(), types.len());
            for t in types {
                println!("  {}  root {}  {} nodes", t.moid, t.root_name(), t.root.count());
            }
        }
        Err(e) => println!("{e}"),
    }
}
