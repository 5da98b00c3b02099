//! The MOs omadmd defines itself: DevInfo, DM Account and SessionInfo (PROTOCOL.md §12), the
//! Delegation Access Control MO (its grants, DM-HLF-013), the network MO (what
//! NetworkManager reports, DM-HLF-007) and the Features MO (the optional features built in,
//! DM-HLF-019).
//! Their DDFs live next to this file, are compiled in, and are installed to
//! `/usr/share/omadmd/ddf/` for servers and tools to read.

use super::ddf;
use super::mo_type::MoType;

/// MOID of the DevInfo MO.
pub const DEVINFO: &str = "urn:oma:mo:oma-dm-devinfo:1.0";
/// MOID of the DM Account MO.
pub const DMACC: &str = "urn:oma:mo:oma-dm-dmacc:1.2";
/// MOID of the SessionInfo MO.
pub const SESSIONINFO: &str = "urn:oma:mo:oma-sessioninfomo:1.0";
/// MOID of the Delegation Access Control MO.
pub const DACL: &str = "urn:oma:mo:ext-omadmd-dacl:1.0";
/// MIID of the one DACL instance.
pub const DACL_MIID: &str = "dacl";
/// MOID of the network MO.
pub const NETWORK: &str = "urn:oma:mo:ext-omadmd-network:1.0";
/// MOID of the Features MO.
pub const FEATURES_MO: &str = "urn:oma:mo:ext-omadmd-features:1.0";
/// MOID of the gateway's device inventory MO (docs/gateway.md §1.1).
pub const GATEWAY: &str = "urn:oma:mo:ext-omadmd-gateway:1.0";

/// The built-in DDF files: (file name, contents).
pub const DDF_FILES: [(&str, &str); 7] = [
    ("devinfo.ddf", include_str!("builtin/devinfo.ddf")),
    ("dmacc.ddf", include_str!("builtin/dmacc.ddf")),
    ("sessioninfo.ddf", include_str!("builtin/sessioninfo.ddf")),
    ("dacl.ddf", include_str!("builtin/dacl.ddf")),
    ("network.ddf", include_str!("builtin/network.ddf")),
    ("features.ddf", include_str!("builtin/features.ddf")),
    ("gateway.ddf", include_str!("builtin/gateway.ddf")),
];

/// The MO types of the built-in DDFs.
pub fn types() -> Vec<MoType> {
    DDF_FILES
        .iter()
        .flat_map(|(name, text)| {
            // Invariant: the built-in DDFs are constants that the tests below parse.
            ddf::parse(text)
                .unwrap_or_else(|e| panic!("built-in {name}: {e}"))
                .mo_types()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::format::Format;

    #[test]
    fn builtin_ddfs_parse_and_define_their_moids() {
        let types = types();
        let moids: Vec<_> = types.iter().map(|t| t.moid.as_str()).collect();
        assert_eq!(
            moids,
            [
                DEVINFO,
                DMACC,
                SESSIONINFO,
                DACL,
                NETWORK,
                FEATURES_MO,
                GATEWAY
            ]
        );
        let roots: Vec<_> = types.iter().map(MoType::root_name).collect();
        assert_eq!(
            roots,
            [
                "DevInfo",
                "DMAcc",
                "SessionInfo",
                "DACL",
                "Network",
                "Features",
                "Gateway"
            ]
        );
    }

    #[test]
    fn secrets_are_no_get_and_devinfo_and_features_are_read_only() {
        let types = types();
        let dmacc = &types[1];
        for secret in [
            "Auth/Noti/Secret",
            "Auth/Trsp/Secret",
            "Auth/Bootstrap/ClientSecretKey",
            "Ext/ClientKey",
            "Perm/x/MOID",
            "Push/x/Secret",
        ] {
            assert!(dmacc.def_at(secret).unwrap().access.is_no_get(), "{secret}");
        }
        assert!(!dmacc.def_at("SrvURI").unwrap().access.is_no_get());
        assert!(!dmacc.def_at("Push/x/User").unwrap().access.is_no_get());
        assert_eq!(dmacc.def_at("Ext/Priority").unwrap().format, Format::Int);
        for read_only in [&types[0], &types[5]] {
            for child in &read_only.root.children {
                assert_eq!(child.access.to_string(), "Get", "{}", child.name);
            }
        }
    }
}
