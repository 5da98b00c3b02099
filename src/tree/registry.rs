//! The MO types the client knows: the built-in ones plus those read from DDF files.

use std::path::Path;

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

    fn insert(&mut self, t: MoType) {
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
}
