//! Large objects' files (DM-HLF-022): a `bin` value too large for the store lives in
//! `objects/<sha-256 hex>` beside the database, read-only, and the node's cell holds its
//! [`ObjectRef`]. A transfer fills `objects/part/<transfer id>` first; only a complete,
//! checked file is renamed to its digest's name (and the directory synced) before a node
//! refers to it, so nothing half-written is ever visible. Files no node refers to any more
//! are swept ([`Objects::sweep`]).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;

use super::{Store, StoreError};
use crate::tree::value::{ObjectRef, unhex};

/// The object files of one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Objects {
    dir: PathBuf,
}

impl Objects {
    /// The objects of the store at `db`: `objects/` in the same directory.
    pub fn beside(db: &Path) -> Objects {
        let parent = db.parent().unwrap_or(Path::new("."));
        Objects {
            dir: parent.join("objects"),
        }
    }

    /// Creates `objects/` and `objects/part/` (mode 0700) if missing.
    pub fn create_dirs(&self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.dir.join("part"))
    }

    /// Where the object `object` lives.
    pub fn path(&self, object: &ObjectRef) -> PathBuf {
        self.dir.join(object.hex())
    }

    /// Opens the object read-only (never following a link).
    pub fn open(&self, object: &ObjectRef) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.path(object))
    }

    /// The part file transfer `id` fills.
    pub fn part(&self, id: u64) -> PathBuf {
        self.dir.join("part").join(id.to_string())
    }

    /// Makes the complete, synced part file `part` the object `object`: renamed to the
    /// digest's name (an identical object already there is kept), read-only, and the
    /// directory synced so the name survives a power loss.
    pub fn publish(&self, part: &Path, object: &ObjectRef) -> io::Result<()> {
        let path = self.path(object);
        fs::set_permissions(part, std::os::unix::fs::PermissionsExt::from_mode(0o400))?;
        fs::rename(part, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// Removes the object files not in `referenced`, and part files of transfers not in
    /// `transfers`. Returns how many files went.
    pub fn sweep(
        &self,
        referenced: &HashSet<[u8; 32]>,
        transfers: &HashSet<u64>,
    ) -> io::Result<usize> {
        let mut removed = 0;
        for entry in read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(digest) = name.to_str().and_then(unhex) else {
                continue;
            };
            if !referenced.contains(&digest) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        for entry in read_dir(&self.dir.join("part"))? {
            let entry = entry?;
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            if id.is_some_and(|id| !transfers.contains(&id)) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The entries of `dir`; none when it does not exist.
fn read_dir(dir: &Path) -> io::Result<Vec<io::Result<fs::DirEntry>>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries.collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

impl Store {
    /// The digests of every large object a node refers to.
    pub fn object_refs(&self) -> Result<HashSet<[u8; 32]>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT value FROM nodes WHERE format = 'bin' AND typeof(value) = 'text'",
            )
            .map_err(StoreError::db("preparing the object references query"))?;
        let mut rows = stmt
            .query([])
            .map_err(StoreError::db("reading object references"))?;
        let mut out = HashSet::new();
        while let Some(row) = rows
            .next()
            .map_err(StoreError::db("reading object references"))?
        {
            if let Ok(ValueRef::Text(t)) = row.get_ref(0)
                && let Some(object) = std::str::from_utf8(t).ok().and_then(ObjectRef::from_cell)
            {
                out.insert(object.sha256);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_names_the_file_by_digest_and_sweep_keeps_only_what_is_referenced() {
        let tmp = tempfile::tempdir().unwrap();
        let objects = Objects::beside(&tmp.path().join("store.db"));
        objects.create_dirs().unwrap();
        let kept = ObjectRef {
            size: 3,
            sha256: [1; 32],
        };
        let gone = ObjectRef {
            size: 3,
            sha256: [2; 32],
        };
        for (id, object) in [(1, &kept), (2, &gone)] {
            fs::write(objects.part(id), b"abc").unwrap();
            objects.publish(&objects.part(id), object).unwrap();
        }
        fs::write(objects.part(7), b"half").unwrap();
        fs::write(objects.part(8), b"half").unwrap();
        let removed = objects
            .sweep(&HashSet::from([kept.sha256]), &HashSet::from([7]))
            .unwrap();
        assert_eq!(removed, 2);
        assert_eq!(fs::read(objects.path(&kept)).unwrap(), b"abc");
        assert!(!objects.path(&gone).exists());
        assert!(objects.part(7).exists() && !objects.part(8).exists());
        let mode = fs::metadata(objects.path(&kept)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o400
        );
    }
}
