//! Unit tests of the access model.

use std::sync::{Arc, Mutex};

use super::*;
use crate::tree::builtin;

struct Fixture {
    auth: Authority,
    seen: Arc<Mutex<Vec<Change>>>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let auth = Authority::new(
        Store::open(&path).unwrap(),
        Store::open(&path).unwrap(),
        Registry::with_builtin(),
        Box::new(move |c| sink.lock().unwrap().extend_from_slice(c)),
    );
    Fixture {
        auth,
        seen,
        _dir: dir,
    }
}

fn app(id: &str) -> Principal {
    Principal::App(id.into())
}

const SETTINGS: &str = "urn:oma:mo:ext-omadmd-test-settings:1.0";

#[test]
fn owners_have_every_right_others_need_grants() {
    let f = fixture();
    let a = app("org.example.A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"Server": "x", "Port": 1}}"#)
        .unwrap();
    let uri = format!("{root}Server");
    assert_eq!(
        f.auth.get(&a, &uri).unwrap()[0].value,
        Some(Value::Chr("x".into()))
    );
    f.auth.set(&a, &uri, None, Input::Text("y".into())).unwrap();

    let b = app("org.example.B");
    assert!(matches!(f.auth.get(&b, &uri), Err(AccessError::Denied(_))));
    assert!(matches!(
        f.auth.set(&b, &uri, None, Input::Text("z".into())),
        Err(AccessError::Denied(_))
    ));
    assert!(matches!(
        f.auth
            .grant(&b, &root.to_string(), "app:org.example.B", Rights::READ),
        Err(AccessError::Denied(_))
    ));
    f.auth
        .grant(&a, &root.to_string(), "app:org.example.B", Rights::READ)
        .unwrap();
    assert_eq!(
        f.auth.get(&b, &uri).unwrap()[0].value,
        Some(Value::Chr("y".into()))
    );
    assert!(matches!(
        f.auth.set(&b, &uri, None, Input::Text("z".into())),
        Err(AccessError::Denied(_))
    ));
    assert!(matches!(
        f.auth.delete(&b, &root.to_string()),
        Err(AccessError::Denied(_))
    ));
    f.auth
        .grant(
            &Principal::Admin,
            &root.to_string(),
            "app:org.example.B",
            Rights::NONE,
        )
        .unwrap();
    assert!(matches!(f.auth.get(&b, &uri), Err(AccessError::Denied(_))));

    let kinds: Vec<_> = f
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["added", "replaced"],
        "the observer saw every committed change"
    );
}

#[test]
fn wildcards_return_only_readable_instances() {
    let f = fixture();
    let a = app("A");
    let b = app("B");
    f.auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"Name": "a"}}"#)
        .unwrap();
    f.auth
        .create_instance(&b, SETTINGS, r#"{"Settings": {"Name": "b"}}"#)
        .unwrap();
    let all = format!("{SETTINGS}/*/Name");
    let got: Vec<_> = f
        .auth
        .get(&a, &all)
        .unwrap()
        .into_iter()
        .map(|n| n.value)
        .collect();
    assert_eq!(got, [Some(Value::Chr("a".into()))]);
    assert_eq!(f.auth.get(&Principal::Admin, &all).unwrap().len(), 2);
    assert!(matches!(
        f.auth.get(&app("C"), &all),
        Err(AccessError::Denied(_))
    ));
}

#[test]
fn no_get_nodes_are_never_returned_not_even_to_the_admin() {
    let f = fixture();
    let acc = f
        .auth
        .create_instance(
            &Principal::Admin,
            builtin::DMACC,
            r#"{"DMAcc": {"SrvID": "s", "SrvURI": "https://x/", "Perm": {}, "Auth": {"Trsp": {"Data": "user", "Secret": "pw"}}}}"#,
        )
        .unwrap();
    let secret = format!("{acc}Auth/Trsp/Secret");
    assert!(matches!(
        f.auth.get(&Principal::Admin, &secret),
        Err(AccessError::Denied(_))
    ));
    let nodes = f
        .auth
        .get(&Principal::Admin, &format!("{acc}Auth/Trsp/*"))
        .unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].addr.path, "Auth/Trsp/Data");
    let items = f
        .auth
        .get_items(&Principal::Admin, &acc.to_string())
        .unwrap();
    let text = serde_json::to_string(&items).unwrap();
    assert!(
        text.contains("\"user\"") && !text.contains("\"pw\"") && !text.contains("Secret"),
        "{text}"
    );
    assert!(!text.contains("Perm"), "Perm is never exposed");
    f.auth
        .set(&Principal::Admin, &secret, None, Input::Text("new".into()))
        .unwrap();
}

#[test]
fn ddf_rules_apply_to_apps() {
    let f = fixture();
    let content = crate::tree::node::Node::Interior(
        [
            ("DevID".to_owned(), Node::Leaf(Value::Chr("d".into()))),
            ("Man".to_owned(), Node::Leaf(Value::Chr("m".into()))),
        ]
        .into_iter()
        .collect(),
    );
    f.auth
        .provide(builtin::DEVINFO, "0", "DevInfo", &content, Rights::READ)
        .unwrap();
    let a = app("A");
    let devid = format!("{}//DevID", builtin::DEVINFO);
    assert_eq!(
        f.auth.get(&a, &devid).unwrap()[0].value,
        Some(Value::Chr("d".into())),
        "app:* may read DevInfo"
    );
    f.auth
        .grant(
            &Principal::Admin,
            &format!("{}/0/", builtin::DEVINFO),
            "app:A",
            Rights::ALL,
        )
        .unwrap();
    let err = f
        .auth
        .set(&a, &devid, None, Input::Text("x".into()))
        .unwrap_err();
    assert!(matches!(err, AccessError::NotAllowed(_)), "{err}");
    let err = f
        .auth
        .delete(&Principal::Admin, &format!("{}//", builtin::DEVINFO))
        .unwrap_err();
    assert!(
        matches!(err, AccessError::NotAllowed(_)),
        "permanent: {err}"
    );
    let err = f
        .auth
        .set(
            &Principal::Admin,
            &format!("{}//Bogus", builtin::DEVINFO),
            None,
            Input::Text("x".into()),
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::InvalidUri(_)), "{err}");
}

#[test]
fn provide_keeps_the_cache_validator_when_nothing_changed() {
    let f = fixture();
    let content = Node::Interior(
        [("DevID".to_owned(), Node::Leaf(Value::Chr("d".into())))]
            .into_iter()
            .collect(),
    );
    f.auth
        .provide(builtin::DEVINFO, "0", "DevInfo", &content, Rights::READ)
        .unwrap();
    let cv = |f: &Fixture| {
        f.auth
            .get_items(&Principal::Admin, &format!("{}/0/", builtin::DEVINFO))
            .unwrap()[0]
            .cv
            .clone()
    };
    let before = cv(&f);
    f.auth
        .provide(builtin::DEVINFO, "0", "DevInfo", &content, Rights::READ)
        .unwrap();
    assert_eq!(cv(&f), before);
    let changed = Node::Interior(
        [("DevID".to_owned(), Node::Leaf(Value::Chr("e".into())))]
            .into_iter()
            .collect(),
    );
    f.auth
        .provide(builtin::DEVINFO, "0", "DevInfo", &changed, Rights::READ)
        .unwrap();
    assert_ne!(cv(&f), before);
}

#[test]
fn values_are_converted_and_checked() {
    let f = fixture();
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap();
    let at = |n: &str| format!("{root}{n}");
    f.auth.set(&a, &at("N"), None, Input::Int(5)).unwrap();
    f.auth
        .set(&a, &at("F"), Some(Format::Float), Input::Int(2))
        .unwrap();
    f.auth
        .set(
            &a,
            &at("J"),
            Some(Format::Json),
            Input::Text(r#"{"k":[1,2]}"#.into()),
        )
        .unwrap();
    let got: Vec<_> = f
        .auth
        .get(&a, &at("*"))
        .unwrap()
        .into_iter()
        .map(|n| n.value.unwrap().format())
        .collect();
    assert_eq!(got, [Format::Float, Format::Json, Format::Int]);
    let err = f
        .auth
        .set(
            &a,
            &at("B"),
            Some(Format::Bool),
            Input::Text("maybe".into()),
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::InvalidValue(_)), "{err}");
    let err = f
        .auth
        .set(&a, &at("B"), Some(Format::Bool), Input::Int(1))
        .unwrap_err();
    assert!(matches!(err, AccessError::InvalidValue(_)), "{err}");
    let err = f
        .auth
        .set(&a, &format!("{SETTINGS}/*/N"), None, Input::Int(1))
        .unwrap_err();
    assert!(matches!(err, AccessError::InvalidUri(_)), "{err}");
    let err = f
        .auth
        .create_instance(&a, builtin::DMACC, r#"{"DMAcc": {"SrvID": 5}}"#)
        .unwrap_err();
    assert!(matches!(err, AccessError::InvalidValue(_)), "{err}");
    let err = f
        .auth
        .create_instance(&a, builtin::DMACC, r#"{"DMAcc": {"Name": "x"}}"#)
        .unwrap_err();
    assert!(
        err.to_string().contains("SrvID"),
        "missing mandatory nodes are named: {err}"
    );
}

#[test]
fn changes_since_filters_by_uri_and_rights() {
    let f = fixture();
    let a = app("A");
    let b = app("B");
    let ra = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"X": "1"}}"#)
        .unwrap();
    f.auth
        .create_instance(&b, SETTINGS, r#"{"Settings": {"X": "1"}}"#)
        .unwrap();
    f.auth
        .set(&a, &format!("{ra}X"), None, Input::Text("2".into()))
        .unwrap();
    let (current, changes) = f
        .auth
        .changes_since(&a, &format!("{SETTINGS}/*/"), 0)
        .unwrap();
    assert_eq!(current, 3);
    let seqs: Vec<_> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [1, 3], "B's instance is not A's business");
    let (_, changes) = f.auth.changes_since(&a, &format!("{ra}X"), 1).unwrap();
    assert_eq!(changes.len(), 1);
    assert!(f.auth.may_read(&a, &ra).unwrap());
    assert!(!f.auth.may_read(&b, &ra).unwrap());
}
