//! The MO types the client knows: the built-in ones plus those read from DDF files.

use std::path::{Path, PathBuf};

use super::builtin;
use super::ddf::{self, DdfError};
use super::mo_type::MoType;

/// MO types by MOID. A type loaded later replaces an earlier one with the same MOID, so a
/// DDF in `/etc/omadmd/ddf/` overrides one in `/usr/share/omadmd/ddf/`.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: Vec<MoType>,
}

impl Registry {
    /// The built-in types only.
    pub fn with_builtin() -> Registry {
        let mut r = Registry::default();
        for t in builtin::types() {
            r.insert(t);
        }
        r
    }

    /// The built-in types plus every DDF file in `dirs` (dirs in order, files in name order
    /// within each; a missing dir is skipped). A file that cannot be used is left out and
    /// returned with why; the rest still load.
    pub fn with_dirs(dirs: &[PathBuf]) -> (Registry, Vec<DdfError>) {
        let mut registry = Registry::with_builtin();
        let mut refused = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for file in files {
                if let Err(e) = registry.add_file(&file) {
                    refused.push(e);
                }
            }
        }
        (registry, refused)
    }

    /// Adds every MO type defined in the DDF file at `path`; returns how many.
    pub fn add_file(&mut self, path: &Path) -> Result<usize, DdfError> {
        let types = ddf::load(path)?.mo_types();
        let n = types.len();
        for t in types {
            self.insert(t);
        }
        Ok(n)
    }

    /// The type of `moid`, if known.
    pub fn get(&self, moid: &str) -> Option<&MoType> {
        self.types.iter().find(|t| t.moid == moid)
    }

    /// Every known type.
    pub fn types(&self) -> &[MoType] {
        &self.types
    }

    /// Adds `t`, replacing the type with the same MOID, if any (LwM2M object types join the
    /// DDF types this way).
    pub fn insert(&mut self, t: MoType) {
        match self.types.iter_mut().find(|e| e.moid == t.moid) {
            Some(existing) => *existing = t,
            None => self.types.push(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_override_builtin_types() {
        let mut r = Registry::with_builtin();
        assert!(r.get(builtin::DEVINFO).is_some());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devinfo.ddf");
        let text = builtin::DDF_FILES[0]
            .1
            .replace("Device information", "Overridden");
        std::fs::write(&path, text).unwrap();
        assert_eq!(r.add_file(&path).unwrap(), 1);
        assert_eq!(r.types().len(), builtin::DDF_FILES.len());
        assert_eq!(
            r.get(builtin::DEVINFO).unwrap().root.title.as_deref(),
            Some("Overridden")
        );
        std::fs::write(&path, "<MgmtTree>").unwrap();
        assert!(r.add_file(&path).is_err());
    }

    #[test]
    fn dirs_load_in_order_skipping_missing_dirs_and_bad_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
        std::fs::create_dir(&first).unwrap();
        std::fs::create_dir(&second).unwrap();
        let devinfo = builtin::DDF_FILES[0].1;
        std::fs::write(
            first.join("a.ddf"),
            devinfo.replace("Device information", "First"),
        )
        .unwrap();
        std::fs::write(
            second.join("a.ddf"),
            devinfo.replace("Device information", "Second"),
        )
        .unwrap();
        std::fs::write(first.join("b.ddf"), "<MgmtTree>").unwrap();
        let dirs = [first.clone(), tmp.path().join("missing"), second];
        let (r, refused) = Registry::with_dirs(&dirs);
        assert_eq!(r.types().len(), builtin::DDF_FILES.len());
        assert_eq!(
            r.get(builtin::DEVINFO).unwrap().root.title.as_deref(),
            Some("Second")
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(
            refused[0].file.as_deref(),
            Some(first.join("b.ddf").as_path())
        );
    }
}
