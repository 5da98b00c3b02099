//! Large test objects: files of pseudo-random bytes (incompressible, so neither gzip nor
//! a sparse file makes them cheaper than they look), and the object size the tests use.

use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// The size of the large objects in the tests, in bytes: `OMADMD_TEST_OBJECT_MIB` MiB,
/// else `default_mib`.
pub fn size(default_mib: u64) -> u64 {
    let mib = std::env::var("OMADMD_TEST_OBJECT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_mib);
    mib << 20
}

/// Writes `size` pseudo-random bytes (from `seed`) to `path`; returns their SHA-256.
pub fn make(path: &Path, size: u64, seed: u64) -> [u8; 32] {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    file.flush().unwrap();
    hasher.finalize().into()
}
