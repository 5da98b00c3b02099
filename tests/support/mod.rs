//! Helpers shared by the integration tests.

use std::path::PathBuf;

pub mod client;
pub mod daemon;
pub mod lwm2m;
pub mod mosquitto;
pub mod nat;
pub mod network;
pub mod object;
pub mod session_bus;
pub mod sysbus;
pub mod unit;

/// The shared real-world corpus (`../shared/corpus` next to the checkout).
pub fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(dir.is_dir(), "corpus not found at {}", dir.display());
    dir
}

/// Every file in `dir` (not recursive), sorted.
pub fn files_in(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}
