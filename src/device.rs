//! Facts about the host for the DevInfo MO: a stable DevID derived from the machine id,
//! the OS from os-release, the hardware from DMI where readable. Nothing is hard-coded:
//! facts that cannot be read are reported as `unknown` (every DevInfo leaf PROTOCOL.md §12
//! makes mandatory is always there).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::tree::node::Node;
use crate::tree::value::Value;

/// What the host says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    pub dev_id: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub hw_version: Option<String>,
    pub fw_version: Option<String>,
    pub oem: Option<String>,
    pub os: Option<String>,
    pub lang: String,
}

/// Why the host facts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot derive DevID: {path}: {reason}")]
    MachineId { path: String, reason: String },
}

impl HostFacts {
    /// Reads the facts below `root` (`/` on a real system): `etc/machine-id`,
    /// `etc/os-release` (or `usr/lib/os-release`), `sys/class/dmi/id/*`. `lang` is the
    /// locale to report (from `LANG`).
    pub fn read(root: &Path, lang: Option<&str>) -> Result<HostFacts, DeviceError> {
        let machine_id_path = root.join("etc/machine-id");
        let machine_id =
            std::fs::read_to_string(&machine_id_path).map_err(|e| DeviceError::MachineId {
                path: machine_id_path.display().to_string(),
                reason: e.to_string(),
            })?;
        let machine_id = machine_id.trim();
        if machine_id.len() != 32 || !machine_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DeviceError::MachineId {
                path: machine_id_path.display().to_string(),
                reason: "not a 32-digit hexadecimal machine id".into(),
            });
        }
        let dmi = |name: &str| {
            std::fs::read_to_string(root.join("sys/class/dmi/id").join(name))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty() && s != "Default string" && s != "To be filled by O.E.M.")
        };
        let os = ["etc/os-release", "usr/lib/os-release"]
            .iter()
            .find_map(|p| std::fs::read_to_string(root.join(p)).ok())
            .and_then(|text| os_release_value(&text, "PRETTY_NAME"));
        Ok(HostFacts {
            dev_id: dev_id(machine_id),
            manufacturer: dmi("sys_vendor"),
            model: dmi("product_name"),
            hw_version: dmi("product_version"),
            fw_version: dmi("bios_version"),
            oem: dmi("board_vendor"),
            os,
            lang: language(lang),
        })
    }

    /// The DevInfo MO content (below its root) for these facts.
    pub fn devinfo(&self) -> Node {
        let chr = |s: &str| Node::Leaf(Value::Chr(s.to_owned()));
        let unknown = |v: &Option<String>| chr(v.as_deref().unwrap_or("unknown"));
        Node::Interior(BTreeMap::from([
            ("DevID".to_owned(), chr(&self.dev_id)),
            ("Man".to_owned(), unknown(&self.manufacturer)),
            ("Mod".to_owned(), unknown(&self.model)),
            ("DmV".to_owned(), chr("2.0")),
            ("Lang".to_owned(), chr(&self.lang)),
            ("DevType".to_owned(), chr("computer")),
            // Mandatory (PROTOCOL.md §12), whether or not the host can tell.
            ("OEM".to_owned(), unknown(&self.oem)),
            ("FwV".to_owned(), unknown(&self.fw_version)),
            ("SwV".to_owned(), unknown(&self.os)),
            ("HwV".to_owned(), unknown(&self.hw_version)),
            ("Ext".to_owned(), Node::empty()),
        ]))
    }
}

/// An application-specific id from the machine id (never the machine id itself, which
/// must not leak off the host), shaped as a UUID URN.
fn dev_id(machine_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(machine_id.as_bytes())
        .chain_update(b"omadmd DevID")
        .finalize();
    let h = crate::tree::value::hex(&digest[..16]);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
}

/// `en_US.UTF-8` → `en-US`; `C`, `POSIX` or nothing → `en`.
fn language(lang: Option<&str>) -> String {
    match lang.map(|l| l.split(['.', '@']).next().unwrap_or("")) {
        None | Some("" | "C" | "POSIX") => "en".to_owned(),
        Some(l) => l.replace('_', "-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("etc")).unwrap();
        std::fs::create_dir_all(p.join("sys/class/dmi/id")).unwrap();
        std::fs::write(
            p.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        std::fs::write(
            p.join("etc/os-release"),
            "NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        )
        .unwrap();
        std::fs::write(p.join("sys/class/dmi/id/sys_vendor"), "ACME\n").unwrap();
        std::fs::write(
            p.join("sys/class/dmi/id/product_name"),
            "To be filled by O.E.M.\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn reads_the_host_and_derives_a_stable_dev_id() {
        let root = fake_root();
        let facts = HostFacts::read(root.path(), Some("de_DE.UTF-8")).unwrap();
        assert_eq!(facts.manufacturer.as_deref(), Some("ACME"));
        assert_eq!(facts.model, None, "placeholder DMI strings are not facts");
        assert_eq!(facts.os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(facts.lang, "de-DE");
        assert!(
            facts.dev_id.starts_with("urn:uuid:") && facts.dev_id.len() == 45,
            "{}",
            facts.dev_id
        );
        assert!(
            !facts.dev_id.contains("0123456789abcdef"),
            "the machine id does not leak"
        );
        assert_eq!(
            HostFacts::read(root.path(), None).unwrap().dev_id,
            facts.dev_id
        );
        let info = facts.devinfo();
        assert_eq!(
            info.get("Mod"),
            Some(&Node::Leaf(Value::Chr("unknown".into())))
        );
        assert_eq!(
            info.get("SwV"),
            Some(&Node::Leaf(Value::Chr(
                "Debian GNU/Linux 12 (bookworm)".into()
            )))
        );
        // A host without DMI data: every mandatory leaf is there all the same.
        for leaf in ["OEM", "FwV", "HwV"] {
            assert_eq!(
                info.get(leaf),
                Some(&Node::Leaf(Value::Chr("unknown".into()))),
                "{leaf}"
            );
        }
    }

    #[test]
    fn the_devinfo_content_fits_the_devinfo_ddf() {
        let root = fake_root();
        let facts = HostFacts::read(root.path(), None).unwrap();
        let ty = crate::tree::registry::Registry::with_builtin();
        let def = &ty.get(crate::tree::builtin::DEVINFO).unwrap().root;
        assert_eq!(def.check(&facts.devinfo()), vec![]);
    }

    #[test]
    fn a_bad_machine_id_is_an_error() {
        let root = fake_root();
        std::fs::write(root.path().join("etc/machine-id"), "short\n").unwrap();
        let err = HostFacts::read(root.path(), None).unwrap_err();
        assert!(err.to_string().contains("32-digit"), "{err}");
    }
}
