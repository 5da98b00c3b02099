//! The store on a real SQLite file, filled from an MO serialization: the worked ClientURI
//! examples of PROTOCOL.md §8 and the import rules.

use omadmd::store::{ItemsArray, SHOW_ALL, Store};
use omadmd::tree::builtin;
use omadmd::tree::json::parse_items;
use omadmd::tree::resolve::resolve;
use omadmd::tree::uri::ClientUri;

/// The §8 fixture as the MO serialization a server would send.
const FIXTURE: &str = r#"[
 {"ClientURI": "urn:oma:mo:moid:1.0/left/", "MOData": {"Sensor": {
   "ID": "GPS", "Setting": "0xA1",
   "Data": {"1": {"Date": "12.1", "Value": ""}, "2": {"Date": "12.2", "Value": ""}}}}},
 {"ClientURI": "urn:oma:mo:moid:1.0/right/", "MOData": {"Sensor": {
   "ID": "Temperature", "Setting": "0xB2",
   "Data": {"1": {"Date": "12.1", "Value": ""}, "2": {"Date": "12.3", "Value": ""}}}}}
]"#;

fn fixture_store(dir: &tempfile::TempDir) -> Store {
    let mut store = Store::open(&dir.path().join("store.db")).unwrap();
    let items = parse_items(FIXTURE).unwrap();
    store
        .write(|tx| {
            items
                .iter()
                .map(|i| tx.import_item(i, &[], "local"))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
    store
}

fn run(store: &Store, uri: &str) -> Result<Vec<String>, String> {
    let parsed = ClientUri::parse(uri).map_err(|e| e.to_string())?;
    resolve(&parsed, store, usize::MAX)
        .map(|v| v.iter().map(|a| a.to_string()).collect())
        .map_err(|e| e.to_string())
}

#[test]
fn the_ten_worked_examples_resolve_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture_store(&dir);
    let m = "urn:oma:mo:moid:1.0";
    let ok = |uri: &str, want: &[&str]| {
        let want: Vec<String> = want.iter().map(|w| format!("{m}/{w}")).collect();
        assert_eq!(run(&store, uri).unwrap(), want, "{uri}");
    };
    ok("urn:oma:mo:moid:1.0/left/", &["left/"]);
    assert!(
        run(&store, "urn:oma:mo:moid:1.0//")
            .unwrap_err()
            .contains("2 instances")
    );
    ok(
        "urn:oma:mo:moid:1.0/(x)/?nv=(x)/ID:Temperature",
        &["right/ID"],
    );
    ok(
        "urn:oma:mo:moid:1.0/(x)/Data/1/Value?nv=(x)/ID:GPS",
        &["left/Data/1/Value"],
    );
    ok(
        "urn:oma:mo:moid:1.0/right/Data/(x)/Value?nv=(x)/Date:12.1",
        &["right/Data/1/Value"],
    );
    ok(
        "urn:oma:mo:moid:1.0/(x)/Data/(y)/Value?nv=(x)/ID:GPS&nv=(y)/Date:12.2",
        &["left/Data/2/Value"],
    );
    ok(
        "urn:oma:mo:moid:1.0/*/Setting",
        &["left/Setting", "right/Setting"],
    );
    ok(
        "urn:oma:mo:moid:1.0/(x)/Data/*/Value?nv=(x)/ID:GPS",
        &["left/Data/1/Value", "left/Data/2/Value"],
    );
    let err = run(
        &store,
        "urn:oma:mo:moid:1.0/(x)/Data/*/Value?nv=(x)/ID:GPS&nv=(x)/Setting:0xB2",
    )
    .unwrap_err();
    assert!(err.contains("no node matches"), "{err}");
    ok(
        "urn:oma:mo:moid:1.0/*/Data/*/Value",
        &[
            "left/Data/1/Value",
            "left/Data/2/Value",
            "right/Data/1/Value",
            "right/Data/2/Value",
        ],
    );
}

#[test]
fn serialization_round_trips_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture_store(&dir);
    let items = parse_items(FIXTURE).unwrap();
    for item in items {
        let uri = ClientUri::parse(&item.client_uri).unwrap();
        let addr = resolve(&uri, &store, usize::MAX).unwrap().remove(0);
        let mut sink = ItemsArray::default();
        store.write_item(&addr, &SHOW_ALL, &mut sink).unwrap();
        let mut out = parse_items(std::str::from_utf8(&sink.finish()).unwrap())
            .unwrap()
            .remove(0);
        assert!(
            out.cv.take().is_some(),
            "an instance root carries its validator"
        );
        assert_eq!(
            out.client_uri,
            item.client_uri.trim_end_matches('/').to_owned() + "/"
        );
        assert_eq!(out.mo_data, item.mo_data);
    }
}

#[test]
fn import_uses_ddf_types_and_refuses_bad_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("store.db")).unwrap();
    let types = builtin::types();
    let good = parse_items(
        r#"[{"ClientURI": "urn:oma:mo:oma-dm-dmacc:1.2//", "MOData": {"DMAcc": {
            "SrvID": "dev", "SrvURI": "https://localhost:8443/dm", "Ext": {"Priority": 10}}}}]"#,
    )
    .unwrap();
    let (addr, _) = store
        .write(|tx| tx.import_item(&good[0], &types, "local"))
        .unwrap();
    assert_eq!(
        addr.to_string(),
        "urn:oma:mo:oma-dm-dmacc:1.2/1/",
        "an empty mo-inst gets a fresh MIID"
    );
    let cases = [
        (
            r#"{"ClientURI": "urn:oma:mo:oma-dm-dmacc:1.2/x/", "MOData": {"Account": {}}}"#,
            "rooted at DMAcc",
        ),
        (
            r#"{"ClientURI": "urn:oma:mo:oma-dm-dmacc:1.2/x/", "MOData": {"DMAcc": {"Ext": {"Priority": "high"}}}}"#,
            "integer",
        ),
        (
            r#"{"ClientURI": "urn:oma:mo:oma-dm-dmacc:1.2/x/", "MOData": {"DMAcc": {"Bogus": 1}}}"#,
            "not a node",
        ),
        (
            r#"{"ClientURI": "urn:oma:mo:oma-dm-dmacc:1.2/*/", "MOData": {"DMAcc": {}}}"#,
            "cannot name a place",
        ),
        (
            r#"{"ClientURI": "urn:oma:mo:oma-dm-dmacc:1.2/1/Name", "MOData": {"SrvID": "x"}}"#,
            "names Name",
        ),
        (
            r#"{"ClientURI": "urn:oma:mo:x:1.0//A", "MOData": {"A": 1}}"#,
            "needs the instance's MIID",
        ),
    ];
    for (item, reason) in cases {
        let items = parse_items(&format!("[{item}]")).unwrap();
        let err = store
            .write(|tx| tx.import_item(&items[0], &types, "local"))
            .unwrap_err();
        assert!(err.to_string().contains(reason), "{item}: {err}");
    }
    assert_eq!(
        store.stats().unwrap().instances,
        1,
        "refused items wrote nothing"
    );
}
