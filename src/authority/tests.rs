//! Unit tests of the access model.

use std::sync::{Arc, Mutex};

use super::*;
use crate::store::dacl_root;
use crate::tree::builtin;

struct Fixture {
    auth: Authority,
    store: Arc<Pool>,
    seen: Arc<Mutex<Vec<Change>>>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    bounded(crate::store::Bounds::default(), Bounds::default())
}

fn bounded(store: crate::store::Bounds, bounds: Bounds) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let pool = Arc::new(Pool::open(&path, store, 1).unwrap());
    let auth = Authority::new(
        pool.clone(),
        Registry::with_builtin(),
        Box::new(move |c| sink.lock().unwrap().extend_from_slice(c)),
    )
    .with_bounds(bounds);
    Fixture {
        auth,
        store: pool,
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
    assert!(matches!(
        f.auth.get(&b, &uri),
        Err(AccessError::NotFound(_))
    ));
    assert!(matches!(
        f.auth.set(&b, &uri, None, Input::Text("z".into())),
        Err(AccessError::NotFound(_))
    ));
    assert!(matches!(
        f.auth
            .grant(&b, &root.to_string(), "app:org.example.B", Rights::READ),
        Err(AccessError::NotFound(_))
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
    assert!(matches!(
        f.auth.get(&b, &uri),
        Err(AccessError::NotFound(_))
    ));

    let kinds: Vec<_> = f
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["added", "replaced", "added", "added", "deleted"],
        "the observer saw every committed change (the grants' as DACL entries)"
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
        Err(AccessError::NotFound(_))
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
        Err(AccessError::NotFound(_))
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
    // An HGET onto a node is held to the same DDF: its access types, then its shape.
    let hget = |at: &str, modata: serde_json::Value| {
        let items = crate::tree::json::parse_items(
            &serde_json::json!([{"ClientURI": at, "MOData": modata}]).to_string(),
        )
        .unwrap();
        let target = ClientUri::parse(at).unwrap();
        f.auth.import_items(&a, &items, Some(&target), &|_| true)
    };
    let devid_at = format!("{}/0/DevID", builtin::DEVINFO);
    let err = hget(&devid_at, serde_json::json!({"DevID": "x"})).unwrap_err();
    assert!(matches!(err, AccessError::NotAllowed(_)), "{err}");
    let root_at = format!("{}/0/", builtin::DEVINFO);
    let err = hget(&root_at, serde_json::json!({"DevInfo": {"Bogus": "x"}})).unwrap_err();
    assert!(matches!(err, AccessError::InvalidValue(_)), "{err}");
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
fn a_whole_mirror_removes_what_the_report_leaves_out_and_a_partial_one_keeps_it() {
    let f = fixture();
    let leaf = |v: &str| Node::Leaf(Value::Chr(v.into()));
    let node = |entries: Vec<(&str, Node)>| {
        Node::Interior(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    };
    let full = node(vec![
        ("A", leaf("a")),
        ("B", node(vec![("x", leaf("x")), ("y", leaf("y"))])),
        ("C", leaf("c")),
    ]);
    let grants = [(ANY_APP.to_owned(), Rights::READ)];
    assert!(
        f.auth
            .mirror_whole(SETTINGS, "k.0", "S", &full, &grants)
            .unwrap()
    );
    let read = |f: &Fixture| {
        f.auth
            .read_internal(&NodeAddr::root(SETTINGS, "k.0"))
            .unwrap()
    };
    assert_eq!(read(&f), full);
    let part = node(vec![("A", leaf("a2"))]);
    assert!(!f.auth.mirror(SETTINGS, "k.0", "S", &part, &grants).unwrap());
    assert_eq!(
        read(&f).get("B/y"),
        Some(&leaf("y")),
        "a partial report keeps"
    );
    let less = node(vec![("A", leaf("a3")), ("B", node(vec![("x", leaf("x"))]))]);
    assert!(
        !f.auth
            .mirror_whole(SETTINGS, "k.0", "S", &less, &grants)
            .unwrap()
    );
    assert_eq!(read(&f), less);
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
        .create_instance(
            &Principal::Admin,
            builtin::DMACC,
            r#"{"DMAcc": {"SrvID": 5}}"#,
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::InvalidValue(_)), "{err}");
    let err = f
        .auth
        .create_instance(
            &Principal::Admin,
            builtin::DMACC,
            r#"{"DMAcc": {"Name": "x"}}"#,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("SrvID"),
        "missing mandatory nodes are named: {err}"
    );
}

#[test]
fn json_values_set_by_apps_hold_no_null_and_stay_shallow() {
    let f = fixture();
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap();
    let at = |n: &str| format!("{root}{n}");
    let json = |n: &str| match f.auth.get(&a, &at(n)).unwrap().remove(0).value {
        Some(Value::Json(j)) => j,
        other => panic!("{n}: {other:?}"),
    };
    // A structured input infers json; scalars, bytes and JSON text are JSON for a json node.
    let structured = serde_json::json!({"a": [1, "b"], "c": {"d": u64::MAX}});
    f.auth
        .set(&a, &at("S"), None, Input::Json(structured.clone()))
        .unwrap();
    assert_eq!(json("S"), structured);
    for (input, want) in [
        (Input::Int(-4), serde_json::json!(-4)),
        (Input::Bool(true), serde_json::json!(true)),
        (Input::Float(0.5), serde_json::json!(0.5)),
        (Input::Bytes(vec![1, 2]), serde_json::json!([1, 2])),
        (
            Input::Text(r#"{"t": "x"}"#.into()),
            serde_json::json!({"t": "x"}),
        ),
    ] {
        f.auth.set(&a, &at("J"), Some(Format::Json), input).unwrap();
        assert_eq!(json("J"), want);
    }
    // Nulls, non-finite numbers and nesting beyond JSON_DEPTH are refused.
    let deep = (0..=JSON_DEPTH).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]));
    let refused = [
        (Input::Text(r#"{"a": null}"#.into()), "null"),
        (Input::Text("[[null]]".into()), "null"),
        (Input::Json(serde_json::Value::Null), "null"),
        (Input::Text("{".into()), "not JSON"),
        (Input::Float(f64::NAN), "finite"),
        (Input::Json(deep), "deeper than"),
    ];
    for (input, reason) in refused {
        let err = f
            .auth
            .set(&a, &at("J"), Some(Format::Json), input.clone())
            .unwrap_err();
        assert!(
            matches!(err, AccessError::InvalidValue(_)) && err.to_string().contains(reason),
            "{input:?}: {err}"
        );
    }
    assert_eq!(json("J"), serde_json::json!({"t": "x"}));
    let shallow = (1..JSON_DEPTH).fold(
        serde_json::json!({}),
        |inner, _| serde_json::json!({"n": inner}),
    );
    f.auth
        .set(&a, &at("J"), None, Input::Json(shallow.clone()))
        .unwrap();
    assert_eq!(json("J"), shallow);
    // Structured input for another format is read as the MO serialization reads it.
    f.auth
        .set(
            &a,
            &at("C"),
            Some(Format::Chr),
            Input::Json(serde_json::json!("x")),
        )
        .unwrap();
    let err = f
        .auth
        .set(&a, &at("C"), None, Input::Json(serde_json::json!(["x"])))
        .unwrap_err();
    assert!(matches!(err, AccessError::InvalidValue(_)), "{err}");
    let err = f
        .auth
        .set(
            &a,
            &at("N"),
            Some(Format::Int),
            Input::Json(u64::MAX.into()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("64-bit integer"), "{err}");
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

#[test]
fn an_instances_end_is_news_to_those_who_could_read_it() {
    let f = fixture();
    ranked(&f, "s", 1);
    ranked(&f, "far", 1);
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"X": "1"}}"#)
        .unwrap();
    f.auth
        .grant(&a, &root.to_string(), "app:B", Rights::READ)
        .unwrap();
    f.auth
        .grant(&a, &root.to_string(), "app:W", Rights::WRITE)
        .unwrap();
    f.auth
        .grant(&a, &root.to_string(), "srv:*", Rights::READ)
        .unwrap();
    // "far" is a server whose account does not permit SETTINGS.
    f.auth
        .delete(
            &Principal::Admin,
            &format!(
                "{}/{}/Perm",
                builtin::DMACC,
                f.auth.instances_of(builtin::DMACC).unwrap()[1]
            ),
        )
        .unwrap();
    let from = f.auth.last_seq().unwrap();
    f.auth.delete(&Principal::Admin, &root.to_string()).unwrap();
    let ends = |who: &Principal| {
        let (_, changes) = f
            .auth
            .changes_since(who, &format!("{SETTINGS}/*/"), from)
            .unwrap_or_default();
        changes
            .iter()
            .filter(|c| c.kind == crate::store::ChangeKind::Deleted && c.addr == root)
            .count()
    };
    assert_eq!(ends(&a), 1, "the owner");
    assert_eq!(ends(&app("B")), 1, "a reader by grant");
    assert_eq!(
        ends(&Principal::Server("s".into())),
        1,
        "every server, by srv:*"
    );
    assert_eq!(ends(&app("W")), 0, "Write without Read");
    assert_eq!(ends(&app("C")), 0, "no grant");
    assert_eq!(ends(&Principal::Server("far".into())), 0, "not its MOID");
}

/// The error `result` carries, with `uri` and the MIID it names taken out of its message.
fn answer<T: std::fmt::Debug>(result: Result<T, AccessError>, uri: &str) -> String {
    let err = result.unwrap_err();
    let mut text = format!("{err:?}").replace(uri, "<uri>");
    if let Ok(ClientUri {
        instance: InstanceSel::Miid(m),
        ..
    }) = ClientUri::parse(uri)
    {
        text = text.replace(&format!("/{m}/"), "/<miid>/");
    }
    text
}

fn account(f: &Fixture, srv_id: &str, secret: &str) -> NodeAddr {
    f.auth
        .create_instance(
            &Principal::Admin,
            builtin::DMACC,
            &format!(
                r#"{{"DMAcc": {{"SrvID": "{srv_id}", "SrvURI": "https://x/", "Perm": {{}}, "Auth": {{"Trsp": {{"Data": "user", "Secret": "{secret}"}}}}}}}}"#
            ),
        )
        .unwrap()
}

/// A DM account for `srv_id` permitted to manage `moids`.
fn permit(f: &Fixture, srv_id: &str, moids: &[&str]) -> NodeAddr {
    let perm: serde_json::Map<String, J> = moids
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("p{i}"), serde_json::json!({"MOID": m})))
        .collect();
    let modata =
        serde_json::json!({"DMAcc": {"SrvID": srv_id, "SrvURI": "https://x/", "Perm": perm}});
    f.auth
        .create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())
        .unwrap()
}

#[test]
fn nv_never_tests_a_secret_for_anyone() {
    let f = fixture();
    account(&f, "acme", "hunter2");
    for who in [
        Principal::Admin,
        app("A"),
        Principal::User(1000),
        Principal::Server("acme".into()),
    ] {
        let guess = |g: &str| {
            let uri = format!("{}/(x)/?nv=(x)/Auth/Trsp/Secret:{g}", builtin::DMACC);
            answer(f.auth.get(&who, &uri), &uri)
        };
        let right = guess("hunter2");
        assert!(right.starts_with("InvalidUri"), "{who}: {right}");
        assert_eq!(right, guess("wrong"), "{who}: a guess learns nothing");
        let via_parent = format!("{}/*/Auth/(t)?nv=(t)/Secret:hunter2", builtin::DMACC);
        assert!(
            matches!(
                f.auth.get(&who, &via_parent),
                Err(AccessError::InvalidUri(_))
            ),
            "{who}: an x-name deeper in the tree is checked too"
        );
    }
    let perm = format!("{}/(x)/?nv=(x)/Perm/p/MOID:urn:x", builtin::DMACC);
    assert!(matches!(
        f.auth.get(&Principal::Admin, &perm),
        Err(AccessError::InvalidUri(_))
    ));
}

#[test]
fn nodes_a_principal_may_not_read_answer_like_absent_ones() {
    let f = fixture();
    // A server given the MOID: another's instance of it is invisible, not forbidden.
    permit(&f, "other", &[SETTINGS, "urn:oma:mo:ext-none:1.0"]);
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"PIN": "1234"}}"#)
        .unwrap();
    for stranger in [
        app("B"),
        Principal::User(1001),
        Principal::Server("other".into()),
    ] {
        // A guess at another app's value through nv= answers the same either way.
        let guess = |g: &str| {
            let uri = format!("{SETTINGS}/(x)/PIN?nv=(x)/PIN:{g}");
            answer(f.auth.get(&stranger, &uri), &uri)
        };
        assert_eq!(guess("1234"), guess("0000"), "{stranger}");
        // A concrete node in an invisible instance is a node that does not exist.
        let absent = |uri: String| answer(f.auth.get(&stranger, &uri), &uri);
        let there = absent(format!("{root}PIN"));
        assert!(there.starts_with("NotFound"), "{stranger}: {there}");
        assert_eq!(there, absent(format!("{root}Nope")), "{stranger}");
        assert_eq!(there, absent(format!("{SETTINGS}/999/PIN")), "{stranger}");
        // The MOID's only instance is not there for it either.
        let only = absent(format!("{SETTINGS}//PIN"));
        assert_eq!(
            only,
            absent("urn:oma:mo:ext-none:1.0//PIN".to_owned())
                .replace("ext-none", "ext-omadmd-test-settings"),
            "{stranger}"
        );
        // Writes, grants and EXEC find nothing there either.
        let set = |uri: String| {
            answer(
                f.auth.set(&stranger, &uri, None, Input::Text("x".into())),
                &uri,
            )
        };
        assert_eq!(
            set(format!("{root}PIN")),
            set(format!("{SETTINGS}/999/PIN")),
            "{stranger}"
        );
        let del = |uri: String| answer(f.auth.delete(&stranger, &uri), &uri);
        assert_eq!(
            del(root.to_string()),
            del(format!("{SETTINGS}/999/")),
            "{stranger}"
        );
        let exec = |uri: String| {
            answer(
                f.auth
                    .exec_target(&stranger, &ClientUri::parse(&uri).unwrap()),
                &uri,
            )
        };
        assert_eq!(
            exec(format!("{root}PIN")),
            exec(format!("{SETTINGS}/999/PIN")),
            "{stranger}"
        );
        assert!(f.auth.readable_instances(&stranger).unwrap().is_empty());
        let (_, changes) = f
            .auth
            .changes_since(&stranger, &format!("{SETTINGS}/*/"), 0)
            .unwrap();
        assert!(changes.is_empty(), "{stranger}");
    }
}

#[test]
fn changes_to_secrets_are_not_listed() {
    let f = fixture();
    let acc = account(&f, "acme", "pw");
    let secret = format!("{acc}Auth/Trsp/Secret");
    f.auth
        .set(
            &Principal::Admin,
            &secret,
            None,
            Input::Text("rotated".into()),
        )
        .unwrap();
    f.auth
        .set(
            &Principal::Admin,
            &format!("{acc}Name"),
            None,
            Input::Text("Acme".into()),
        )
        .unwrap();
    let (_, changes) = f
        .auth
        .changes_since(&Principal::Admin, &format!("{}/*/", builtin::DMACC), 1)
        .unwrap();
    let paths: Vec<_> = changes.iter().map(|c| c.addr.path.as_str()).collect();
    assert_eq!(paths, ["Name"]);
    assert!(
        !f.auth
            .may_read(
                &Principal::Admin,
                &NodeAddr {
                    path: "Auth/Trsp/Secret".into(),
                    ..acc.clone()
                }
            )
            .unwrap()
    );
}

#[test]
fn dm_accounts_are_for_administrators_and_srv_ids_are_unique() {
    let f = fixture();
    let body = r#"{"DMAcc": {"SrvID": "evil", "SrvURI": "https://evil/", "Perm": {}}}"#;
    for who in [
        app("A"),
        Principal::User(1000),
        Principal::Server("acme".into()),
    ] {
        let err = f
            .auth
            .create_instance(&who, builtin::DMACC, body)
            .unwrap_err();
        assert!(matches!(err, AccessError::Denied(_)), "{who}: {err}");
    }
    let acme = account(&f, "acme", "pw");
    let err = f
        .auth
        .create_instance(
            &Principal::Admin,
            builtin::DMACC,
            r#"{"DMAcc": {"SrvID": "acme", "SrvURI": "https://evil/", "Perm": {}}}"#,
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::Conflict(_)), "{err}");
    let other = account(&f, "other", "pw");
    let err = f
        .auth
        .set(
            &Principal::Admin,
            &format!("{other}SrvID"),
            None,
            Input::Text("acme".into()),
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::Conflict(_)), "{err}");
    assert_eq!(
        f.auth.instances_of(builtin::DMACC).unwrap().len(),
        2,
        "rolled back whole"
    );

    // A server granted its own account may rotate a credential, never who it is, what it
    // may manage or how it ranks.
    let srv = Principal::Server("acme".into());
    f.auth
        .grant(
            &Principal::Admin,
            &acme.to_string(),
            "srv:acme",
            Rights::ALL,
        )
        .unwrap();
    f.auth
        .set(
            &srv,
            &format!("{acme}SrvURI"),
            None,
            Input::Text("https://acme2/".into()),
        )
        .unwrap();
    for path in ["SrvID", "Ext/Priority", "Perm/p2/MOID"] {
        let err = f
            .auth
            .set(
                &srv,
                &format!("{acme}{path}"),
                None,
                Input::Text("9".into()),
            )
            .unwrap_err();
        assert!(
            matches!(err, AccessError::Denied(_) | AccessError::NotAllowed(_)),
            "{path}: {err}"
        );
    }
    let err = f.auth.delete(&srv, &acme.to_string()).unwrap_err();
    assert!(
        matches!(err, AccessError::Denied(_) | AccessError::NotAllowed(_)),
        "{err}"
    );
    // A granted app still cannot touch an account.
    f.auth
        .grant(&Principal::Admin, &acme.to_string(), "app:A", Rights::ALL)
        .unwrap();
    let err = f
        .auth
        .set(
            &app("A"),
            &format!("{acme}SrvURI"),
            None,
            Input::Text("https://evil/".into()),
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::Denied(_)), "{err}");
}

#[test]
fn owners_are_held_to_their_quotas() {
    let f = bounded(
        crate::store::Bounds::default(),
        Bounds {
            owner_instances: 2,
            owner_bytes: 200,
            ..Bounds::default()
        },
    );
    let a = app("A");
    let first = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"V": "x"}}"#)
        .unwrap();
    f.auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"V": "y"}}"#)
        .unwrap();
    let err = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap_err();
    assert!(
        matches!(err, AccessError::Limit(_)) && err.to_string().contains("owner_instances"),
        "{err}"
    );
    let big = "z".repeat(300);
    let err = f
        .auth
        .set(&a, &format!("{first}V"), None, Input::Text(big))
        .unwrap_err();
    assert!(
        matches!(err, AccessError::Limit(_)) && err.to_string().contains("owner_bytes"),
        "{err}"
    );
    assert_eq!(
        f.auth.get(&a, &format!("{first}V")).unwrap()[0].value,
        Some(Value::Chr("x".into())),
        "the refused write left nothing behind"
    );
    // Another owner, and the admin, are not charged for A.
    f.auth
        .create_instance(&app("B"), SETTINGS, r#"{"Settings": {}}"#)
        .unwrap();
    f.auth
        .create_instance(&Principal::Admin, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap();
    // Freeing space makes room again.
    f.auth.delete(&a, &first.to_string()).unwrap();
    f.auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap();
}

#[test]
fn every_write_path_stops_at_the_tree_depth() {
    let f = bounded(
        crate::store::Bounds {
            tree_depth: 3,
            ..crate::store::Bounds::default()
        },
        Bounds::default(),
    );
    let a = app("A");
    let err = f
        .auth
        .create_instance(
            &a,
            SETTINGS,
            r#"{"Settings": {"a": {"b": {"c": {"d": 1}}}}}"#,
        )
        .unwrap_err();
    assert!(
        matches!(err, AccessError::Limit(_)) && err.to_string().contains("tree_depth"),
        "{err}"
    );
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"a": {"b": {"c": 1}}}}"#)
        .unwrap();
    let err = f
        .auth
        .set(&a, &format!("{root}a/b/d/e"), None, Input::Int(1))
        .unwrap_err();
    assert!(!matches!(err, AccessError::Store(_)), "{err}");
    let items = crate::tree::json::parse_items(&format!(
        r#"[{{"ClientURI": "{root}a", "MOData": {{"a": {{"b": {{"c": {{"d": 1}}}}}}}}}}]"#
    ))
    .unwrap();
    let err = f
        .auth
        .import_items(&Principal::Admin, &items, None, &|_| true)
        .unwrap_err();
    assert!(matches!(err, AccessError::Limit(_)), "{err}");
}

#[test]
fn get_json_is_get_items_serialized_once_and_several_reads_share_one_bound() {
    let f = fixture();
    let a = app("A");
    for name in ["one", "two"] {
        f.auth
            .create_instance(
                &a,
                SETTINGS,
                &format!(r#"{{"Settings": {{"Name": "{name}"}}}}"#),
            )
            .unwrap();
    }
    let all = format!("{SETTINGS}/*/");
    let items = f.auth.get_items(&a, &all).unwrap();
    assert_eq!(
        f.auth.get_json(&a, &all).unwrap(),
        serde_json::to_vec(&items).unwrap()
    );

    // Room for the first read, not for the second as well: refused, and the array keeps
    // what fitted.
    let one = serde_json::to_vec(&items[..1]).unwrap().len();
    let first = format!(
        "{SETTINGS}/{}/",
        items[0].client_uri.split('/').nth(1).unwrap()
    );
    let mut json = ItemsJson::new(one);
    f.auth.write_items(&a, &first, &mut json).unwrap();
    let err = f.auth.write_items(&a, &first, &mut json).unwrap_err();
    assert!(matches!(err, AccessError::Limit(_)), "{err}");
    assert_eq!(json.finish(), serde_json::to_vec(&items[..1]).unwrap());
}

#[test]
fn a_server_uses_only_the_moids_its_account_permits_and_reads_public_ones() {
    let f = fixture();
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"Name": "n"}}"#)
        .unwrap();
    let devinfo = f.auth.provide(
        builtin::DEVINFO,
        "0",
        "DevInfo",
        &Node::Interior(
            [(
                "DevID".to_owned(),
                Node::Leaf(Value::Chr("urn:uuid:x".into())),
            )]
            .into(),
        ),
        Rights::READ,
    );
    devinfo.unwrap();
    permit(&f, "given", &[SETTINGS]);
    permit(&f, "other", &["urn:oma:mo:ext-omadmd-elsewhere:1.0"]);
    // Both are granted everything on the instance; only one was given the MOID.
    for srv in ["given", "other"] {
        f.auth
            .grant(&a, &root.to_string(), &format!("srv:{srv}"), Rights::ALL)
            .unwrap();
    }
    let given = Principal::Server("given".into());
    let other = Principal::Server("other".into());
    let name = format!("{root}Name");
    assert_eq!(f.auth.get(&given, &name).unwrap().len(), 1);
    for uri in [
        name.clone(),
        format!("{SETTINGS}/*/"),
        format!("{root}Nope"),
    ] {
        // Named directly: 403 whether or not anything is there (its own list, no news).
        let err = f.auth.get(&other, &uri).unwrap_err();
        assert!(matches!(err, AccessError::Denied(_)), "{uri}: {err}");
        let err = f.auth.get_json(&other, &uri).unwrap_err();
        assert!(matches!(err, AccessError::Denied(_)), "{uri}: {err}");
    }
    for err in [
        f.auth
            .set(&other, &name, None, Input::Text("x".into()))
            .map(drop)
            .unwrap_err(),
        f.auth.delete(&other, &name).map(drop).unwrap_err(),
        f.auth
            .changes_since(&other, &format!("{SETTINGS}/*/"), 0)
            .map(drop)
            .unwrap_err(),
    ] {
        assert!(matches!(err, AccessError::Denied(_)), "{err}");
    }
    // An HGET of it is refused the same way, whatever the item names.
    let items = crate::tree::json::parse_items(&format!(
        r#"[{{"ClientURI": "{root}", "MOData": {{"Settings": {{"Name": "x"}}}}}}]"#
    ))
    .unwrap();
    let err = f
        .auth
        .import_items(&other, &items, None, &|_| true)
        .unwrap_err();
    assert!(matches!(err, AccessError::Denied(_)), "{err}");
    // Absent from what it is told exists, and from what it may hear of.
    let listed = f.auth.readable_instances(&other).unwrap();
    assert!(listed.iter().all(|(m, _)| m != SETTINGS), "{listed:?}");
    assert!(!f.auth.may_read(&other, &root).unwrap());
    assert!(
        f.auth
            .readable_instances(&given)
            .unwrap()
            .iter()
            .any(|(m, _)| m == SETTINGS)
    );

    // DevInfo is public: every server reads it, none writes it; its permanent nodes are 405.
    let dev_id = format!("{}/0/DevID", builtin::DEVINFO);
    assert_eq!(f.auth.get(&other, &dev_id).unwrap().len(), 1);
    let err = f.auth.delete(&other, &dev_id).unwrap_err();
    assert!(matches!(err, AccessError::NotAllowed(_)), "{err}");
    let err = f
        .auth
        .set(&other, &dev_id, None, Input::Text("x".into()))
        .unwrap_err();
    assert!(!matches!(err, AccessError::NotFound(_)), "{err}");
}

/// A DM account for `srv_id` at `priority`, permitted to manage [`SETTINGS`].
fn ranked(f: &Fixture, srv_id: &str, priority: i64) {
    let modata = serde_json::json!({"DMAcc": {"SrvID": srv_id, "SrvURI": "https://x/",
        "Perm": {"p": {"MOID": SETTINGS}}, "Ext": {"Priority": priority}}});
    f.auth
        .create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())
        .unwrap();
}

#[test]
fn a_lower_priority_writer_gets_a_conflict_naming_the_holder() {
    let f = fixture();
    ranked(&f, "hi", 10);
    ranked(&f, "peer", 10);
    ranked(&f, "lo", 1);
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"Name": "n", "Port": 1}}"#)
        .unwrap();
    for srv in ["hi", "peer", "lo"] {
        f.auth
            .grant(&a, &root.to_string(), &format!("srv:{srv}"), Rights::ALL)
            .unwrap();
    }
    let (hi, peer, lo) = (
        Principal::Server("hi".into()),
        Principal::Server("peer".into()),
        Principal::Server("lo".into()),
    );
    let name = format!("{root}Name");
    let set = |who: &Principal, v: &str| f.auth.set(who, &name, None, Input::Text(v.into()));
    // Nobody holds it yet: the lower one writes, then the higher one over it.
    set(&lo, "lo").unwrap();
    set(&hi, "hi").unwrap();
    assert_eq!(f.auth.holder(&a, &name).unwrap(), "srv:hi");

    let err = set(&lo, "again").unwrap_err();
    assert!(
        matches!(&err, AccessError::Conflict(m) if m.contains("srv:hi")),
        "{err}"
    );
    // The owning app ranks below every server; the admin is outside the ordering.
    assert!(matches!(set(&a, "app"), Err(AccessError::Conflict(_))));
    // Equal priority is no conflict.
    set(&peer, "peer").unwrap();
    assert_eq!(f.auth.holder(&hi, &name).unwrap(), "srv:peer");
    set(&hi, "hi").unwrap();

    // Deleting (or replacing) a subtree conflicts over any node in it; other nodes are free.
    let port = format!("{root}Port");
    f.auth.set(&lo, &port, None, Input::Int(2)).unwrap();
    assert!(matches!(
        f.auth.delete(&lo, &root.to_string()),
        Err(AccessError::Conflict(_))
    ));
    let items = crate::tree::json::parse_items(&format!(
        r#"[{{"ClientURI": "{root}", "MOData": {{"Settings": {{"Name": "x"}}}}}}]"#
    ))
    .unwrap();
    assert!(matches!(
        f.auth.import_items(&lo, &items, None, &|_| true),
        Err(AccessError::Conflict(_))
    ));
    f.auth
        .set(&Principal::Admin, &name, None, Input::Text("root".into()))
        .unwrap();
    assert_eq!(f.auth.holder(&a, &name).unwrap(), "admin");
    set(&lo, "lo").unwrap();
    // The root's holder is the instance's owner; Holder takes one readable node.
    assert_eq!(f.auth.holder(&a, &root.to_string()).unwrap(), "app:A");
    assert!(matches!(
        f.auth.holder(&a, &format!("{root}*")),
        Err(AccessError::InvalidUri(_))
    ));
    assert!(matches!(
        f.auth.holder(&app("B"), &name),
        Err(AccessError::NotFound(_))
    ));
}

#[test]
fn set_creates_the_missing_interior_nodes_the_ddf_defines() {
    let f = fixture();
    let acc = permit(&f, "s", &[]);
    let leaf = format!("{acc}Ext/PollSeconds");
    f.auth
        .set(&Principal::Admin, &leaf, None, Input::Int(60))
        .unwrap();
    assert_eq!(
        f.auth.get(&Principal::Admin, &leaf).unwrap()[0].value,
        Some(Value::Int(60))
    );
    let added: Vec<String> = f
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.addr.path.clone())
        .collect();
    assert!(
        added.ends_with(&["Ext".to_owned(), "Ext/PollSeconds".to_owned()]),
        "{added:?}"
    );
    // Only what the DDF defines, and never through a leaf.
    for bad in [format!("{acc}Nope/X"), format!("{acc}SrvID/X")] {
        let err = f
            .auth
            .set(&Principal::Admin, &bad, None, Input::Int(1))
            .unwrap_err();
        assert!(matches!(err, AccessError::InvalidUri(_)), "{bad}: {err}");
    }
}

#[test]
fn delegating_never_raises_anyones_rights_above_the_delegates_own() {
    let f = fixture();
    let (a, b, c) = (app("A"), app("B"), app("C"));
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"Name": "n"}}"#)
        .unwrap()
        .to_string();
    let read_delegate = Rights::parse(["Read", "Delegate"]).unwrap();
    f.auth.grant(&a, &root, "app:B", read_delegate).unwrap();
    // B passes on what it holds, to others; nothing more, and not to everyone.
    f.auth.grant(&b, &root, "app:C", Rights::READ).unwrap();
    for (to, rights) in [
        ("app:B", Rights::ALL),
        ("app:C", Rights::WRITE),
        ("app:*", Rights::READ),
        ("srv:*", Rights::READ),
    ] {
        let err = f.auth.grant(&b, &root, to, rights).unwrap_err();
        assert!(matches!(err, AccessError::Denied(_)), "{to}: {err}");
    }
    // Nor takes away another delegate's rights.
    f.auth.grant(&a, &root, "app:D", read_delegate).unwrap();
    assert!(matches!(
        f.auth.grant(&b, &root, "app:D", Rights::NONE),
        Err(AccessError::Denied(_))
    ));
    // C cannot write; the owner can give anything to anyone.
    assert!(matches!(
        f.auth
            .set(&c, &format!("{root}Name"), None, Input::Text("x".into())),
        Err(AccessError::Denied(_))
    ));
    f.auth.grant(&a, &root, "app:*", Rights::READ).unwrap();
}

#[test]
fn an_account_removed_takes_its_session_history_along() {
    let f = fixture();
    let acc = permit(&f, "s", &[]);
    f.store.writer().write(|tx| tx.record_session("s")).unwrap();
    assert!(f.store.reader().last_session("s").unwrap().is_some());
    f.auth.delete(&Principal::Admin, &acc.to_string()).unwrap();
    assert_eq!(f.store.reader().last_session("s").unwrap(), None);
}

#[test]
fn a_set_is_checked_for_form_and_ddf_before_rights() {
    let f = fixture();
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"Name": "n"}}"#)
        .unwrap();
    f.auth
        .grant(&a, &root.to_string(), "app:B", Rights::READ)
        .unwrap();
    let name = format!("{root}Name");
    // B may read, not write: a malformed Set is refused for its form (400) first, a
    // well-formed one for the missing right (403).
    let err = f
        .auth
        .set(
            &app("B"),
            &name,
            Some(Format::Node),
            Input::Text("x".into()),
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::InvalidValue(_)), "{err}");
    let err = f
        .auth
        .set(&app("B"), &name, None, Input::Text("x".into()))
        .unwrap_err();
    assert!(matches!(err, AccessError::Denied(_)), "{err}");
}

#[test]
fn results_and_replies_are_bounded() {
    let f = bounded(
        crate::store::Bounds::default(),
        Bounds {
            result_rows: 3,
            reply_bytes: 4096,
            ..Bounds::default()
        },
    );
    let a = app("A");
    for _ in 0..4 {
        f.auth
            .create_instance(&a, SETTINGS, r#"{"Settings": {"Name": "n"}}"#)
            .unwrap();
    }
    let err = f.auth.get(&a, &format!("{SETTINGS}/*/Name")).unwrap_err();
    assert!(
        matches!(err, AccessError::Limit(_)) && err.to_string().contains("narrow"),
        "{err}"
    );
    let err = f.auth.get_items(&a, &format!("{SETTINGS}/*/")).unwrap_err();
    assert!(matches!(err, AccessError::Limit(_)), "{err}");
    let root = f.auth.instances_of(SETTINGS).unwrap()[0].clone();
    f.auth
        .set(
            &a,
            &format!("{SETTINGS}/{root}/Name"),
            None,
            Input::Text("v".repeat(5000)),
        )
        .unwrap();
    let err = f
        .auth
        .get_items(&a, &format!("{SETTINGS}/{root}/"))
        .unwrap_err();
    assert!(err.to_string().contains("reply_bytes"), "{err}");
    let err = f
        .auth
        .get_json(&a, &format!("{SETTINGS}/{root}/"))
        .unwrap_err();
    assert!(err.to_string().contains("reply_bytes"), "{err}");
    assert_eq!(
        f.auth
            .get(
                &a,
                &format!("{SETTINGS}/*/Name?nv=(x)/Name:n")
                    .replace("*/Name?nv=(x)", "(x)/Name?nv=(x)")
            )
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn changes_since_before_the_kept_journal_asks_to_re_read() {
    let f = bounded(
        crate::store::Bounds {
            journal_entries: 3,
            ..crate::store::Bounds::default()
        },
        Bounds::default(),
    );
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap();
    for i in 0..6 {
        f.auth
            .set(&a, &format!("{root}V"), None, Input::Int(i))
            .unwrap();
    }
    let all = format!("{SETTINGS}/*/");
    let err = f.auth.changes_since(&a, &all, 0).unwrap_err();
    assert!(err.to_string().contains("re-read"), "{err}");
    let (current, changes) = f.auth.changes_since(&a, &all, 4).unwrap();
    assert_eq!(current, 7);
    assert_eq!(changes.len(), 3);
}

#[test]
fn a_reader_cannot_tell_which_secrets_exist_by_writing_them() {
    let f = fixture();
    let acc = account(&f, "acme", "pw");
    let reader = Principal::User(1000);
    f.auth
        .grant(
            &Principal::Admin,
            &acc.to_string(),
            "uid:1000",
            Rights::READ,
        )
        .unwrap();
    let srv = Principal::Server("other".into());
    f.auth
        .grant(
            &Principal::Admin,
            &acc.to_string(),
            "srv:other",
            Rights::READ,
        )
        .unwrap();
    for who in [&reader, &srv] {
        let present = format!("{acc}Auth/Trsp/Secret");
        let absent = format!("{acc}Auth/Noti/Secret");
        let delete = |uri: &str| answer(f.auth.delete(who, uri), uri);
        assert!(delete(&present).starts_with("NotFound"), "{who}");
        assert_eq!(delete(&present), delete(&absent), "{who}");
        let exec = |uri: &str| {
            answer(
                f.auth.exec_target(who, &ClientUri::parse(uri).unwrap()),
                uri,
            )
        };
        assert_eq!(exec(&present), exec(&absent), "{who}");
        let set = |uri: &str| answer(f.auth.set(who, uri, None, Input::Text("x".into())), uri);
        assert_eq!(set(&present), set(&absent), "{who}");
    }
    // The node next to the secret is visible to the reader: writing it is denied, not absent.
    let err = f
        .auth
        .set(
            &reader,
            &format!("{acc}Auth/Trsp/Data"),
            None,
            Input::Text("x".into()),
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::Denied(_)), "{err}");
}

#[test]
fn a_server_may_not_touch_another_servers_account() {
    let f = fixture();
    let acme = account(&f, "acme", "pw");
    account(&f, "other", "pw");
    f.auth
        .grant(
            &Principal::Admin,
            &acme.to_string(),
            ANY_SERVER,
            Rights::ALL,
        )
        .unwrap();
    let err = f
        .auth
        .set(
            &Principal::Server("other".into()),
            &format!("{acme}SrvURI"),
            None,
            Input::Text("https://evil/".into()),
        )
        .unwrap_err();
    assert!(matches!(err, AccessError::Denied(_)), "{err}");
    f.auth
        .set(
            &Principal::Server("acme".into()),
            &format!("{acme}SrvURI"),
            None,
            Input::Text("https://acme2/".into()),
        )
        .unwrap();
}

#[test]
fn changes_since_pages_by_the_reply_bounds_and_skips_what_is_invisible() {
    let f = bounded(
        crate::store::Bounds::default(),
        Bounds {
            result_rows: 3,
            ..Bounds::default()
        },
    );
    let a = app("A");
    let b = app("B");
    let mine = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap();
    let theirs = f
        .auth
        .create_instance(&b, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap();
    // Far more invisible changes than one batch, then one of A's own.
    for i in 0..2_500 {
        f.auth
            .set(&b, &format!("{theirs}V"), None, Input::Int(i))
            .unwrap();
    }
    for i in 0..5 {
        f.auth
            .set(&a, &format!("{mine}V"), None, Input::Int(i))
            .unwrap();
    }
    let all = format!("{SETTINGS}/*/");
    let (upto, first) = f.auth.changes_since(&a, &all, 0).unwrap();
    assert_eq!(first.len(), 3, "held to result_rows");
    assert_eq!(upto, first[2].seq);
    let (end, rest) = f.auth.changes_since(&a, &all, upto).unwrap();
    assert_eq!(rest.len(), 3, "the other three of A's six changes");
    assert_eq!(
        end,
        f.auth
            .changes_since(&Principal::Admin, &all, end)
            .unwrap()
            .0
    );
    let (again, none) = f.auth.changes_since(&a, &all, end).unwrap();
    assert!(none.is_empty());
    assert_eq!(again, end);
}

#[test]
fn a_write_too_large_for_the_quota_is_refused_before_it_is_written() {
    let f = bounded(
        crate::store::Bounds::default(),
        Bounds {
            owner_bytes: 100_000,
            ..Bounds::default()
        },
    );
    // Few value bytes, but long names repeated in every row's parent path.
    let name = "n".repeat(200);
    let mut json = String::from(r#"{"leaf": 1}"#);
    for _ in 0..20 {
        let leaves: Vec<String> = (0..20).map(|i| format!(r#""l{i}": 1"#)).collect();
        json = format!(r#"{{"{name}": {json}, {}}}"#, leaves.join(", "));
    }
    let err = f
        .auth
        .create_instance(&app("A"), SETTINGS, &format!(r#"{{"Settings": {json}}}"#))
        .unwrap_err();
    assert!(err.to_string().contains("owner_bytes"), "{err}");
    assert!(f.auth.instances_of(SETTINGS).unwrap().is_empty());
}

#[test]
fn accounts_from_before_are_audited() {
    let f = fixture();
    account(&f, "acme", "pw");
    assert!(f.auth.audit_accounts().unwrap().is_empty());
    // As an older omadmd let an app write them: straight into the store.
    let mut store = f.auth.writer();
    let node = node_from_json(
        &serde_json::json!({"SrvID": "acme", "SrvURI": "https://evil/"}),
        None,
        "DMAcc",
    )
    .unwrap();
    store
        .write(|tx| tx.create_instance(builtin::DMACC, Some("9"), "DMAcc", &node, "app:evil"))
        .unwrap();
    drop(store);
    let problems = f.auth.audit_accounts().unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("app:evil"), "{problems:?}");
    assert!(problems[1].contains("share SrvID"), "{problems:?}");
}

#[test]
fn the_end_of_an_instance_is_news_to_whoever_ended_it_only() {
    let f = fixture();
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap();
    f.auth.delete(&a, &root.to_string()).unwrap();
    let all = format!("{SETTINGS}/*/");
    let kinds = |who: &Principal| -> Vec<&'static str> {
        f.auth
            .changes_since(who, &all, 0)
            .unwrap()
            .1
            .iter()
            .map(|c| c.kind.as_str())
            .collect()
    };
    assert_eq!(kinds(&a), ["deleted"]);
    assert_eq!(kinds(&Principal::Admin), ["added", "deleted"]);
    assert!(kinds(&app("B")).is_empty());
}

#[test]
fn an_instance_holds_a_bounded_number_of_grants() {
    let f = fixture();
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {}}"#)
        .unwrap()
        .to_string();
    for uid in 0..MAX_GRANTS as u32 {
        f.auth
            .grant(&a, &root, &format!("uid:{}", 1000 + uid), Rights::READ)
            .unwrap();
    }
    let err = f
        .auth
        .grant(&a, &root, "uid:99999", Rights::READ)
        .unwrap_err();
    assert!(matches!(err, AccessError::Limit(_)), "{err}");
    // Changing or revoking an existing grant is still allowed, and frees a place.
    f.auth
        .grant(&a, &root, "uid:1000", Rights::READ.union(Rights::WRITE))
        .unwrap();
    f.auth.grant(&a, &root, "uid:01001", Rights::NONE).unwrap();
    f.auth.grant(&a, &root, "uid:99999", Rights::READ).unwrap();
}

/// The DACL entries `who` sees, as (name, principal, rights), by name.
fn entries(f: &Fixture, who: &Principal) -> Vec<(String, String, String)> {
    let uri = format!("{}/{}/*/Principal", builtin::DACL, builtin::DACL_MIID);
    let mut out = Vec::new();
    for found in f.auth.get(who, uri.as_str()).unwrap_or_default() {
        let name = found.addr.path.split('/').next().unwrap().to_owned();
        let rights = f
            .auth
            .get(
                who,
                dacl_root()
                    .child(&format!("{name}/Rights"))
                    .to_string()
                    .as_str(),
            )
            .unwrap()[0]
            .value
            .as_ref()
            .map(Value::to_text)
            .unwrap();
        out.push((name, found.value.unwrap().to_text(), rights));
    }
    out
}

/// A server's write of a whole DACL entry (an HGET into `DACL/<name>`).
fn hget_entry(
    f: &Fixture,
    who: &Principal,
    name: &str,
    target: &NodeAddr,
    principal: &str,
    rights: &str,
) -> Result<Vec<NodeAddr>, AccessError> {
    let at = dacl_root().child(name);
    let items = crate::tree::json::parse_items(
        &serde_json::json!([{"ClientURI": at.to_string(), "MOData": {name: {
            "Target": target.to_string(), "Principal": principal, "Rights": rights}}}])
        .to_string(),
    )
    .unwrap();
    let target_uri = ClientUri::parse(&at.to_string()).unwrap();
    f.auth
        .import_items(who, &items, Some(&target_uri), &|_| true)
}

#[test]
fn a_server_grants_through_the_dacl_mo_and_sees_only_its_entries() {
    let f = fixture();
    ranked(&f, "hi", 10);
    ranked(&f, "lo", 1);
    ranked(&f, "peer", 10);
    let (hi, lo, peer) = (
        Principal::Server("hi".into()),
        Principal::Server("lo".into()),
        Principal::Server("peer".into()),
    );
    let mine = f
        .auth
        .create_instance(&hi, SETTINGS, r#"{"Settings": {"Name": "n", "Port": 1}}"#)
        .unwrap();
    let a = app("A");
    let apps = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"Name": "a", "Port": 2}}"#)
        .unwrap();
    f.auth
        .grant(&a, &apps.to_string(), "app:B", Rights::READ)
        .unwrap();
    let name = format!("{mine}Name");
    assert!(matches!(
        f.auth.get(&lo, name.as_str()),
        Err(AccessError::NotFound(_))
    ));

    hget_entry(&f, &hi, "forlo", &mine, "srv:lo", "Read").unwrap();
    assert_eq!(f.auth.get(&lo, name.as_str()).unwrap().len(), 1);
    assert!(matches!(
        f.auth.set(&lo, &name, None, Input::Text("x".into())),
        Err(AccessError::Denied(_))
    ));
    let forlo = ("forlo".to_owned(), "srv:lo".to_owned(), "Read".to_owned());
    assert_eq!(
        entries(&f, &hi),
        std::slice::from_ref(&forlo),
        "the owner's entry"
    );
    assert_eq!(
        entries(&f, &lo),
        std::slice::from_ref(&forlo),
        "the entry naming it"
    );
    assert!(entries(&f, &peer).is_empty(), "neither named nor owner");
    let b = entries(&f, &app("B"));
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].1, "app:B");
    assert_eq!(entries(&f, &Principal::Admin).len(), 2);
    // GetJson of the whole MO holds the same entries, no others.
    let json = String::from_utf8(
        f.auth
            .get_json(&lo, dacl_root().to_string().as_str())
            .unwrap(),
    )
    .unwrap();
    assert!(json.contains("forlo") && !json.contains("app:B"), "{json}");

    // Replacing the Rights changes the grant; Target and Principal are fixed.
    let rights = dacl_root().child("forlo/Rights").to_string();
    f.auth
        .set(&hi, &rights, None, Input::Text("Read,Write".into()))
        .unwrap();
    // lo may write now; hi wrote the node and outranks it, so priority still says no.
    assert!(matches!(
        f.auth.set(&lo, &name, None, Input::Text("x".into())),
        Err(AccessError::Conflict(_))
    ));
    let principal = dacl_root().child("forlo/Principal").to_string();
    assert!(matches!(
        f.auth
            .set(&hi, &principal, None, Input::Text("srv:peer".into())),
        Err(AccessError::NotAllowed(_))
    ));
    // Another server cannot touch the entry: for it, it is not there.
    assert!(matches!(
        f.auth.set(&peer, &rights, None, Input::Text("Read".into())),
        Err(AccessError::NotFound(_))
    ));
    assert!(matches!(
        f.auth
            .delete(&peer, dacl_root().child("forlo").to_string().as_str()),
        Err(AccessError::NotFound(_))
    ));
    // The grantee cannot raise its own rights: it does not hold Delegate.
    assert!(matches!(
        f.auth.set(
            &lo,
            &rights,
            None,
            Input::Text("Read,Write,Delegate".into())
        ),
        Err(AccessError::Denied(_))
    ));
    // An entry for an instance the writer cannot see names nothing.
    assert!(matches!(
        hget_entry(&f, &peer, "steal", &mine, "srv:peer", "Read"),
        Err(AccessError::NotFound(_))
    ));
    // Unknown rights and principals are refused whole.
    assert!(matches!(
        hget_entry(&f, &hi, "bad", &mine, "srv:peer", "Read,Own"),
        Err(AccessError::InvalidValue(_))
    ));
    assert!(matches!(
        hget_entry(&f, &hi, "bad", &mine, "root", "Read"),
        Err(AccessError::InvalidValue(_))
    ));

    // Deleting the entry revokes; the revocation is news to those who saw the entry.
    let from = f.auth.last_seq().unwrap();
    f.auth
        .delete(&hi, dacl_root().child("forlo").to_string().as_str())
        .unwrap();
    let revoked = |who: &Principal| {
        f.auth
            .changes_since(who, format!("{}/*/", builtin::DACL).as_str(), from)
            .unwrap()
            .1
            .iter()
            .filter(|c| c.addr == dacl_root().child("forlo"))
            .count()
    };
    assert_eq!((revoked(&lo), revoked(&hi), revoked(&peer)), (1, 1, 0));
    assert!(matches!(
        f.auth.get(&lo, name.as_str()),
        Err(AccessError::NotFound(_))
    ));
    assert!(entries(&f, &lo).is_empty());
    // The root is permanent; the MO is omadmd's, not an instance anyone creates.
    assert!(matches!(
        f.auth.delete(&hi, dacl_root().to_string().as_str()),
        Err(AccessError::NotAllowed(_))
    ));
    assert!(matches!(
        f.auth
            .create_instance(&Principal::Admin, builtin::DACL, r#"{"DACL": {}}"#),
        Err(AccessError::NotAllowed(_))
    ));
}

#[test]
fn delegation_through_the_dacl_mo_passes_on_only_what_is_held_and_respects_priority() {
    let f = fixture();
    ranked(&f, "hi", 10);
    ranked(&f, "lo", 1);
    let (hi, lo) = (
        Principal::Server("hi".into()),
        Principal::Server("lo".into()),
    );
    let a = app("A");
    let root = f
        .auth
        .create_instance(&a, SETTINGS, r#"{"Settings": {"Name": "n", "Port": 1}}"#)
        .unwrap();
    let read_delegate = Rights::READ.union(Rights::DELEGATE);
    for srv in ["srv:hi", "srv:lo"] {
        f.auth
            .grant(&a, &root.to_string(), srv, read_delegate)
            .unwrap();
    }
    // A delegate passes on what it holds, not more.
    hget_entry(&f, &hi, "c", &root, "app:C", "Read").unwrap();
    assert!(matches!(
        hget_entry(&f, &lo, "d", &root, "app:D", "Read,Write"),
        Err(AccessError::Denied(_))
    ));
    // The entry hi wrote outranks lo and every app, the owner included...
    let c = dacl_root().child("c");
    assert!(matches!(
        f.auth.delete(&lo, c.to_string().as_str()),
        Err(AccessError::Conflict(_))
    ));
    assert!(matches!(
        f.auth.grant(&a, &root.to_string(), "app:C", Rights::NONE),
        Err(AccessError::Conflict(_))
    ));
    assert_eq!(
        f.auth
            .holder(&a, c.child("Rights").to_string().as_str())
            .unwrap(),
        "srv:hi"
    );
    // ...but not the admin, who stands outside the ordering.
    f.auth
        .grant(&Principal::Admin, &root.to_string(), "app:C", Rights::NONE)
        .unwrap();
    assert!(f.store.reader().dacl_entry_named("c").unwrap().is_none());

    // A new entry under a name another principal's invisible entry has gets a fresh name.
    hget_entry(&f, &hi, "x", &root, "app:E", "Read").unwrap();
    ranked(&f, "peer", 10);
    let peer = Principal::Server("peer".into());
    let other = f
        .auth
        .create_instance(&peer, SETTINGS, r#"{"Settings": {"Name": "o", "Port": 3}}"#)
        .unwrap();
    hget_entry(&f, &peer, "x", &other, "app:F", "Read").unwrap();
    let seen = entries(&f, &peer);
    assert_eq!(seen.len(), 1);
    assert_ne!(
        seen[0].0, "x",
        "hi's entry x is not peer's to see or replace"
    );
    assert_eq!(seen[0].1, "app:F");
    assert_eq!(
        f.store.reader().grant(&root, "app:E").unwrap(),
        Rights::READ
    );
}

/// A fixture with a server `srv` permitted to manage [`SETTINGS`] and an instance it owns.
fn server_with_settings() -> (Fixture, Principal, NodeAddr) {
    let f = fixture();
    permit(&f, "srv", &[SETTINGS]);
    let server = Principal::Server("srv".into());
    let root = f
        .auth
        .create_instance(
            &server,
            SETTINGS,
            r#"{"Settings": {"Name": "n", "Mode": 3}}"#,
        )
        .unwrap();
    (f, server, root)
}

/// A server's GET of one leaf reads the instance once, its account's permissions with two
/// queries, the node once (resolving it keeps its row for the serialization), and nothing
/// twice (DM-HLF-004: the cost of a GET is what a busy device pays most for).
#[test]
fn a_leaf_get_runs_each_query_once() {
    let (f, server, root) = server_with_settings();
    let leaf = format!("{}Name", root);
    f.auth.get_json(&server, &leaf).unwrap();
    f.store.reader().take_statement_runs();

    let json = f.auth.get_json(&server, &leaf).unwrap();
    assert!(String::from_utf8(json).unwrap().contains(r#""Name":"n""#));
    let ran = f.store.reader().take_statement_runs();
    let total: i32 = ran.iter().map(|(_, n)| n).sum();
    assert!(
        ran.iter().all(|(_, n)| *n == 1) && total <= 6,
        "{total} statements ran: {ran:#?}"
    );
    for read in ["FROM instances WHERE moid", "FROM nodes"] {
        let runs: i32 = ran
            .iter()
            .filter(|(sql, _)| sql.contains(read))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(runs, 1, "{read}: {ran:#?}");
    }
}

/// A run of GETs shares one snapshot: the server's permissions and the instance are read
/// once for the whole run, and each GET keeps its own answer (a missing node is that GET's
/// `404`, a current `cv=` its `None`).
#[test]
fn a_run_of_gets_reads_shared_things_once_and_answers_each() {
    let (f, server, root) = server_with_settings();
    let cv = f.auth.get_items(&server, &root.to_string()).unwrap()[0]
        .cv
        .clone()
        .unwrap();
    let uris: Vec<ClientUri> = [
        format!("{root}Name"),
        format!("{root}Gone"),
        format!("{root}Mode"),
        format!("{root}?cv={cv}"),
    ]
    .iter()
    .map(|u| ClientUri::parse(u).unwrap())
    .collect();
    f.store.reader().take_statement_runs();

    let answers = f.auth.get_json_each(&server, &uris, || true).unwrap();
    let ran = f.store.reader().take_statement_runs();
    assert_eq!(answers.len(), 4);
    assert!(
        String::from_utf8(answers[0].as_ref().unwrap().clone().unwrap())
            .unwrap()
            .contains(r#""Name":"n""#)
    );
    assert!(
        matches!(answers[1], Err(AccessError::NotFound(_))),
        "{:?}",
        answers[1]
    );
    assert!(answers[2].as_ref().unwrap().is_some());
    assert_eq!(answers[3].as_ref().unwrap(), &None, "the cv= is current");
    for (what, needle) in [
        ("the instance", "FROM instances WHERE moid"),
        ("the account", "n.name = ?3 AND n.value = ?4"),
        ("its permissions", "n.name = ?5"),
        ("the snapshot", "BEGIN"),
    ] {
        let runs: i32 = ran
            .iter()
            .filter(|(sql, _)| sql.contains(needle))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(runs, 1, "{what} read {runs} times: {ran:#?}");
    }

    let none = f.auth.get_json_each(&server, &uris, || false).unwrap();
    assert!(none.is_empty(), "nothing runs once go_on says no");
}
