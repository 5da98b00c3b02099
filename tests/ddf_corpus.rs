//! The DDF reader against real DDF files written by others (Microsoft CSPs, AOSP).

use omadmd::tree::ddf;
use omadmd::tree::format::Format;
use omadmd::tree::mo_type::DefName;

use crate::support::{corpus_dir, files_in};

#[test]
fn every_windows_csp_ddf_loads() {
    let files = files_in(&corpus_dir().join("ddf/windows"));
    assert_eq!(files.len(), 26);
    for f in files {
        let ddf = ddf::load(&f).unwrap_or_else(|e| panic!("{e}"));
        assert!(ddf.node_count() > 1, "{}", f.display());
    }
}

#[test]
fn windows_dmacc_keeps_its_structure() {
    let ddf = ddf::load(&corpus_dir().join("ddf/windows/dmacc-ddf-file.xml")).unwrap();
    let types = ddf.mo_types();
    let dmacc = types
        .iter()
        .find(|t| t.moid == "urn:oma:mo:oma-dm-dmacc:1.0")
        .expect("DMAcc MOID");
    assert_eq!(dmacc.root_name(), "DMAcc");
    assert_eq!(ddf.nodes[0].path.as_deref(), Some("./SyncML"));
    let account = &dmacc.root.children[0];
    assert!(matches!(&account.name, DefName::Placeholder(p) if p == "*"));
    assert_eq!(
        dmacc.def_at("acct1/AppID").map(|d| d.format),
        Some(Format::Chr)
    );
}

#[test]
fn aosp_syncmldm_loads_all_292_nodes() {
    let ddf = ddf::load(&corpus_dir().join("ddf/aosp/syncmldm.ddf")).unwrap();
    assert_eq!(ddf.node_count(), 292);
    assert_eq!(ddf.nodes.len(), 1);
    assert_eq!(ddf.nodes[0].def.name, DefName::Fixed(".".into()));
    assert_eq!(ddf.man.as_deref(), Some("Motorola"));
}

#[test]
fn empty_node_names_are_placeholders() {
    let ddf = ddf::load(&corpus_dir().join("ddf/windows/vpn-ddf-file.xml")).unwrap();
    let mut placeholders = 0;
    fn count(d: &omadmd::tree::NodeDef, n: &mut usize) {
        if d.name.is_placeholder() {
            *n += 1;
        }
        d.children.iter().for_each(|c| count(c, n));
    }
    ddf.nodes
        .iter()
        .for_each(|t| count(&t.def, &mut placeholders));
    assert!(placeholders >= 1);
}
