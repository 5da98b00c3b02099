//! Offline file checks: `omadmctl ddf check` and `omadmctl tnds check`. They read files only
//! and need no daemon.

use std::path::{Path, PathBuf};

use serde_json::json;

use omadmd::tree::tnds::{self, TndsError, TndsProblem, TndsTree};
use omadmd::tree::{MoType, ddf, xml};

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
                Err(e) => {
                    json!({ "file": file, "valid": false, "line": e.line, "error": e.reason })
                }
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
            println!(
                "{}: ok, {} nodes, {} MO(s)",
                file.display(),
                d.node_count(),
                types.len()
            );
            for t in types {
                println!(
                    "  {}  root {}  {} nodes",
                    t.moid,
                    t.root_name(),
                    t.root.count()
                );
            }
        }
        Err(e) => println!("{e}"),
    }
}

/// Checks each TNDS file against the MO types the `ddfs` define, prints one summary per file,
/// returns whether all were valid. If a DDF does not load, that is reported and nothing is
/// checked.
pub fn tnds_check(ddfs: &[PathBuf], files: &[PathBuf], as_json: bool) -> bool {
    let mut types = Vec::new();
    for d in ddfs {
        match ddf::load(d) {
            Ok(f) => types.extend(f.mo_types()),
            Err(e) => {
                eprintln!("omadmctl: {e}");
                return false;
            }
        }
    }
    let results: Vec<_> = files.iter().map(|f| (f, read_tnds(f, &types))).collect();
    let checked = |t: &TndsTree| {
        t.moid
            .as_ref()
            .is_some_and(|m| types.iter().any(|ty| &ty.moid == m))
    };
    if as_json {
        let out: Vec<_> = results
            .iter()
            .map(|(file, r)| match r {
                Ok(trees) => json!({
                    "file": file,
                    "valid": true,
                    "nodes": trees.iter().map(|t| t.node.count()).sum::<usize>(),
                    "trees": trees.iter().map(|t| json!({
                        "name": t.name, "moid": t.moid, "nodes": t.node.count(), "checked": checked(t),
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => json!({
                    "file": file,
                    "valid": false,
                    "problems": e.problems.iter().map(|p| json!({
                        "line": p.line, "path": p.path, "reason": p.reason,
                    })).collect::<Vec<_>>(),
                }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for (file, r) in &results {
            print_tnds_summary(file, r, &checked);
        }
    }
    results.iter().all(|(_, r)| r.is_ok())
}

fn print_tnds_summary(
    file: &Path,
    result: &Result<Vec<TndsTree>, TndsError>,
    checked: &dyn Fn(&TndsTree) -> bool,
) {
    let describe = |t: &TndsTree| {
        let moid = t.moid.as_deref().unwrap_or("no MOID");
        let note = if checked(t) {
            " (checked against its DDF)"
        } else {
            ""
        };
        format!("{} nodes, {moid}{note}", t.node.count())
    };
    match result {
        Ok(trees) if trees.len() == 1 => {
            println!("{}: ok, {}", file.display(), describe(&trees[0]))
        }
        Ok(trees) => {
            let nodes: usize = trees.iter().map(|t| t.node.count()).sum();
            println!(
                "{}: ok, {nodes} nodes in {} trees",
                file.display(),
                trees.len()
            );
            for t in trees {
                println!("  {}: {}", t.name, describe(t));
            }
        }
        Err(e) => {
            for p in &e.problems {
                match (p.line, p.path.as_str()) {
                    (0, _) => println!("{}: {}", file.display(), p.reason),
                    (line, "") => println!("{}:{line}: {}", file.display(), p.reason),
                    (line, path) => println!("{}:{line}: {path}: {}", file.display(), p.reason),
                }
            }
        }
    }
}

/// Reads and imports one TNDS file; a file that cannot be read is one problem on line 0.
fn read_tnds(file: &Path, types: &[MoType]) -> Result<Vec<TndsTree>, TndsError> {
    let text = read_text(file).map_err(|reason| TndsError {
        problems: vec![TndsProblem {
            line: 0,
            path: String::new(),
            reason,
        }],
    })?;
    tnds::import(&text, types)
}

fn read_text(file: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(file).map_err(|e| e.to_string())?;
    if meta.len() > xml::MAX_BYTES as u64 {
        return Err(format!("file is larger than {} bytes", xml::MAX_BYTES));
    }
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 ({e})"))
}
