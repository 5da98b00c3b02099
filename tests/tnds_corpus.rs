//! TNDS import against the real corpus files (AOSP's Hotspot 2.0 PerProviderSubscription
//! documents: one valid, six invalid on purpose) and `omadmctl tnds check` on them.
//!
//! All six invalid files also spell `CertSHA256FingerPrint` with a capital P, which the PPS
//! DDF does not define: checked against it, each also reports that node as unknown and
//! `CertSHA256Fingerprint` as missing. The tests below accept those two extra problems and
//! nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use omadmd::tree::ddf;
use omadmd::tree::tnds::{self, TndsProblem, TndsTree};
use omadmd::tree::{MoType, Node, Value};

use crate::support::{corpus_dir, files_in};

const PPS_MOID: &str = "urn:wfa:mo:hotspot2dot0-perprovidersubscription:1.0";
/// `<Node>` elements in the valid file, counted independently (xml.dom.minidom).
const VALID_NODES: usize = 109;

fn tnds_dir() -> PathBuf {
    corpus_dir().join("tnds")
}

fn pps_ddf() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hotspot2-pps.ddf")
}

fn pps_types() -> Vec<MoType> {
    let types = ddf::load(&pps_ddf())
        .unwrap_or_else(|e| panic!("{e}"))
        .mo_types();
    assert_eq!(types.len(), 1);
    assert_eq!(types[0].moid, PPS_MOID);
    types
}

fn read(name: &str) -> String {
    let path = tnds_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn import_ok(name: &str, types: &[MoType]) -> Vec<TndsTree> {
    tnds::import(&read(name), types).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

fn problems(name: &str, types: &[MoType]) -> Vec<TndsProblem> {
    match tnds::import(&read(name), types) {
        Ok(trees) => panic!("{name} was accepted: {} tree(s)", trees.len()),
        Err(e) => e.problems,
    }
}

/// True for the two problems every invalid file has because of `CertSHA256FingerPrint`.
fn is_fingerprint_spelling(p: &TndsProblem) -> bool {
    p.path.ends_with("DigitalCertificate/CertSHA256FingerPrint")
        && p.reason.contains("not a node of this MO type")
        || p.path.ends_with("DigitalCertificate")
            && p.reason.contains("named CertSHA256Fingerprint")
}

/// The problems of `name` checked against the PPS DDF, less the fingerprint spelling ones
/// (which must be there), as "line: path: reason".
fn own_problems(name: &str) -> Vec<String> {
    let all = problems(name, &pps_types());
    let spelling = all.iter().filter(|p| is_fingerprint_spelling(p)).count();
    assert_eq!(spelling, 2, "{name}: {all:?}");
    all.iter()
        .filter(|p| !is_fingerprint_spelling(p))
        .map(ToString::to_string)
        .collect()
}

fn leaf(tree: &TndsTree, path: &str) -> Value {
    match tree.node.get(path) {
        Some(Node::Leaf(v)) => v.clone(),
        other => panic!("{path}: {other:?}"),
    }
}

#[test]
fn the_corpus_holds_the_seven_documents() {
    let xml: Vec<_> = files_in(&tnds_dir())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "xml"))
        .collect();
    assert_eq!(xml.len(), 7, "{xml:?}");
}

#[test]
fn valid_pps_imports_without_a_ddf() {
    let trees = import_ok("PerProviderSubscription.xml", &[]);
    assert_eq!(trees.len(), 1);
    let t = &trees[0];
    assert_eq!(t.name, "PerProviderSubscription");
    assert_eq!(t.moid.as_deref(), Some(PPS_MOID));
    assert_eq!(t.node.count(), VALID_NODES);
    assert_eq!(
        leaf(t, "UpdateIdentifier"),
        Value::Chr("12".into()),
        "no DDF: everything is chr"
    );
    assert_eq!(
        leaf(t, "i001/HomeSP/FriendlyName"),
        Value::Chr("Century House".into())
    );
}

#[test]
fn valid_pps_imports_with_the_pps_ddf_and_its_formats() {
    let trees = import_ok("PerProviderSubscription.xml", &pps_types());
    assert_eq!(trees.len(), 1);
    let t = &trees[0];
    assert_eq!(t.node.count(), VALID_NODES);
    assert_eq!(leaf(t, "UpdateIdentifier"), Value::Int(12));
    assert_eq!(leaf(t, "i001/CredentialPriority"), Value::Int(99));
    assert_eq!(
        leaf(t, "i001/HomeSP/HomeOIList/h002/HomeOIRequired"),
        Value::Bool(false)
    );
    assert_eq!(
        leaf(t, "i001/Credential/UsernamePassword/EAPMethod/EAPType"),
        Value::Int(21)
    );
    assert_eq!(
        leaf(t, "i001/Policy/PreferredRoamingPartnerList/p002/Priority"),
        Value::Int(200)
    );
    assert_eq!(
        leaf(t, "i001/Extension/VendorSpecific"),
        Value::Chr("Test".into())
    );
    assert_eq!(
        leaf(t, "i001/Credential/CreationDate"),
        Value::Chr("2016-01-01T10:00:00Z".into())
    );
}

#[test]
fn valid_pps_survives_export_and_import() {
    let trees = import_ok("PerProviderSubscription.xml", &pps_types());
    let doc = tnds::export(&trees).unwrap_or_else(|e| panic!("{e}"));
    let again = tnds::import(&doc, &pps_types()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, trees);
}

#[test]
fn duplicate_home_sp_is_reported() {
    let file = "PerProviderSubscription_DuplicateHomeSP.xml";
    assert_eq!(
        own_problems(file),
        [
            "line 27: PerProviderSubscription/i001/HomeSP: duplicate node HomeSP: a sibling of the same name is on line 12"
        ]
    );
    let without_ddf: Vec<_> = problems(file, &[])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        without_ddf,
        own_problems(file),
        "structural: found without the DDF too"
    );
}

#[test]
fn duplicate_value_is_reported() {
    let file = "PerProviderSubscription_DuplicateValue.xml";
    assert_eq!(
        own_problems(file),
        ["line 17: PerProviderSubscription/i001/HomeSP/FriendlyName: has more than one <Value>"]
    );
    assert_eq!(problems(file, &[]).len(), 1);
}

#[test]
fn invalid_node_with_value_and_child_is_reported() {
    let file = "PerProviderSubscription_InvalidNode.xml";
    assert_eq!(
        own_problems(file),
        ["line 20: PerProviderSubscription/i001/HomeSP/FQDN: has both a <Value> and child <Node>s"]
    );
    assert_eq!(problems(file, &[]).len(), 1);
}

#[test]
fn missing_name_is_reported() {
    let file = "PerProviderSubscription_MissingName.xml";
    assert_eq!(
        own_problems(file),
        [
            // The nameless node cannot be HomeSP, so the subscription lacks its HomeSP.
            "line 10: PerProviderSubscription/i001: has 0 child(ren) named HomeSP, the DDF allows One",
            "line 12: PerProviderSubscription/i001/<unnamed>: <Node> has no <NodeName>",
        ]
    );
    assert_eq!(problems(file, &[]).len(), 1);
}

#[test]
fn invalid_name_needs_the_ddf() {
    let file = "PerProviderSubscription_InvalidName.xml";
    assert_eq!(
        own_problems(file),
        [
            "line 12: PerProviderSubscription/i001/HomeSP: has 0 child(ren) named FriendlyName, the DDF allows One",
            "line 14: PerProviderSubscription/i001/HomeSP/FriendName: is not a node of this MO type",
        ]
    );
    // Without the MO type, "FriendName" is as good a name as any.
    assert_eq!(import_ok(file, &[])[0].node.count(), 20);
}

#[test]
fn missing_value_needs_the_ddf() {
    let file = "PerProviderSubscription_MissingValue.xml";
    assert_eq!(
        own_problems(file),
        [
            "line 14: PerProviderSubscription/i001/HomeSP/FriendlyName: missing value: no <Value>, but its format is chr"
        ]
    );
    // Without the MO type, a node with neither value nor children is an empty interior node.
    let trees = import_ok(file, &[]);
    assert_eq!(
        trees[0].node.get("i001/HomeSP/FriendlyName"),
        Some(&Node::empty())
    );
}

fn omadmctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_omadmctl"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running omadmctl: {e}"));
    let stdout = String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{e}"));
    (out.status.code().unwrap_or(-1), stdout)
}

fn arg(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

#[test]
fn omadmctl_tnds_check_accepts_the_valid_file() {
    let (ddf, valid) = (pps_ddf(), tnds_dir().join("PerProviderSubscription.xml"));
    let (code, out) = omadmctl(&["tnds", "check", "--ddf", arg(&ddf), arg(&valid)]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!(
            "{}: ok, 109 nodes, {PPS_MOID} (checked against its DDF)\n",
            valid.display()
        )
    );
}

#[test]
fn omadmctl_tnds_check_lists_every_problem_and_fails() {
    let (ddf, valid, invalid) = (
        pps_ddf(),
        tnds_dir().join("PerProviderSubscription.xml"),
        tnds_dir().join("PerProviderSubscription_InvalidName.xml"),
    );
    let (code, out) = omadmctl(&[
        "tnds",
        "check",
        "--ddf",
        arg(&ddf),
        arg(&valid),
        arg(&invalid),
    ]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 5, "one ok line and four problems: {out}");
    assert!(lines[0].ends_with("PerProviderSubscription.xml: ok, 109 nodes, urn:wfa:mo:hotspot2dot0-perprovidersubscription:1.0 (checked against its DDF)"));
    let friend = format!(
        "{}:14: PerProviderSubscription/i001/HomeSP/FriendName: is not a node of this MO type",
        invalid.display()
    );
    assert!(lines.contains(&friend.as_str()), "{out}");

    let (code, out) = omadmctl(&[
        "--json",
        "tnds",
        "check",
        "--ddf",
        arg(&ddf),
        arg(&valid),
        arg(&invalid),
    ]);
    assert_eq!(code, 1, "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(json[0]["valid"], true);
    assert_eq!(json[0]["nodes"], 109);
    assert_eq!(json[0]["trees"][0]["moid"], PPS_MOID);
    assert_eq!(json[0]["trees"][0]["checked"], true);
    assert_eq!(json[1]["valid"], false);
    let problems = json[1]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(problems.len(), 4, "{out}");
    assert!(problems.iter().any(|p| p["line"] == 14
        && p["path"] == "PerProviderSubscription/i001/HomeSP/FriendName"
        && p["reason"] == "is not a node of this MO type"));
}
