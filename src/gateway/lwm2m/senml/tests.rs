use super::*;
use crate::gateway::lwm2m::codec::fixtures::{chr, device, device_values, every_kind, p};
use crate::gateway::lwm2m::path::PathError;

fn read(json: &str, base: &str) -> Result<Decoded, CodecError> {
    decode(json.as_bytes(), p(base), &every_kind)
}

/// The TS's example of a Read on the Device object's instance (`GET /3/0`), SenML JSON.
const DEVICE_READ: &str = r#"[
    {"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},
    {"n":"1","vs":"Lightweight M2M Client"},
    {"n":"2","vs":"345000123"},
    {"n":"3","vs":"1.0"},
    {"n":"6/0","v":1},
    {"n":"6/1","v":5},
    {"n":"7/0","v":3800},
    {"n":"7/1","v":5000},
    {"n":"8/0","v":125},
    {"n":"8/1","v":900},
    {"n":"9","v":100},
    {"n":"10","v":15},
    {"n":"11/0","v":0},
    {"n":"13","v":1367491215},
    {"n":"14","vs":"+02:00"},
    {"n":"16","vs":"U"}]"#;

#[test]
fn reads_the_device_object_instance_of_the_spec() {
    let decoded = decode(DEVICE_READ.as_bytes(), p("/3/0"), &device).unwrap();
    assert_eq!(decoded.values, device_values());
    assert!(decoded.skipped.is_empty());
    // The same read answers a request on the object, and the records name the same
    // paths however the names are split between bn and n.
    assert_eq!(
        decode(DEVICE_READ.as_bytes(), p("/3"), &device).unwrap(),
        decoded
    );
    let absolute = r#"[{"n":"/3/0/6/0","v":1},{"bn":"/3/0/6","n":"/1","v":5}]"#;
    assert_eq!(
        decode(absolute.as_bytes(), p("/3/0/6"), &device)
            .unwrap()
            .values,
        device_values()[4..6]
    );
}

#[test]
fn writes_the_spec_payload_back() {
    let entries: Vec<_> = device_values()
        .into_iter()
        .map(|(path, value)| (path, value, device(path.rid().unwrap()).unwrap()))
        .collect();
    let written = encode(&entries).unwrap();
    let written: Json = serde_json::from_slice(&written).unwrap();
    let spec: Json = serde_json::from_str(DEVICE_READ).unwrap();
    assert_eq!(written, spec);
}

#[test]
fn reads_single_resources_with_times_and_units() {
    // The name is the base name alone; times and units are ignored.
    let temperature =
        r#"[{"bn":"/3303/0/5700","bt":1767225600,"t":-5,"u":"Cel","bver":10,"v":21.5}]"#;
    let decoded = decode(temperature.as_bytes(), p("/3303/0/5700"), &|_| {
        Some(Kind::Float)
    })
    .unwrap();
    assert_eq!(decoded.values, [(p("/3303/0/5700"), Value::Float(21.5))]);
    // A base-only record reports nothing; its base name holds for the records after it.
    let based =
        r#"[{"bn":"/9/0/"},{"n":"4","vb":true},{"n":"7","vlo":"66:0"},{"n":"5","vd":"AP8H"}]"#;
    assert_eq!(
        read(based, "/9/0").unwrap().values,
        [
            (p("/9/0/4"), Value::Bool(true)),
            (p("/9/0/7"), chr("66:0")),
            (p("/9/0/5"), Value::Bin(vec![0, 255, 7])),
        ]
    );
    // Numbers: whole floats are integers; padding in base64url is accepted.
    let numbers = r#"[{"bn":"/9/0/","n":"1","v":5.0},{"n":"6","v":1.7e9},{"n":"2","v":18446744073709551615},{"n":"3","v":1},{"n":"5","vd":"AP8H-_8="}]"#;
    assert_eq!(
        read(numbers, "/9/0").unwrap(),
        Decoded {
            values: vec![
                (p("/9/0/1"), Value::Int(5)),
                (p("/9/0/6"), Value::Int(1_700_000_000)),
                (p("/9/0/3"), Value::Float(1.0)),
                (p("/9/0/5"), Value::Bin(vec![0, 255, 7, 251, 255])),
            ],
            skipped: vec![(
                p("/9/0/2"),
                "unsigned value 18446744073709551615 is above 2^63-1".to_owned()
            )],
        }
    );
    // An empty payload.
    assert_eq!(read("[]", "/9/0").unwrap(), Decoded::default());
}

#[test]
fn unknown_resources_are_skipped_and_repeated_paths_kept() {
    let json = r#"[{"bn":"/9/0/","n":"99","v":1},{"n":"99/0","vs":"x"},{"n":"1","v":1,"t":0},{"n":"1","v":2,"t":10}]"#;
    let decoded = read(json, "/9/0").unwrap();
    assert_eq!(
        decoded.values,
        [(p("/9/0/1"), Value::Int(1)), (p("/9/0/1"), Value::Int(2))]
    );
    let skipped: Vec<_> = decoded.skipped.iter().map(|(path, _)| *path).collect();
    assert_eq!(skipped, [p("/9/0/99"), p("/9/0/99/0")]);
}

#[test]
fn a_send_names_any_object() {
    let json = r#"[{"bn":"/3/0/","n":"9","v":90},{"bn":"/3303/0/","n":"5700","v":21.5},{"n":"5701","vs":"Cel"}]"#;
    let kind_of = |oid: u16, rid: u16| match (oid, rid) {
        (3, 9) => Some(Kind::Integer),
        (3303, 5700) => Some(Kind::Float),
        _ => None,
    };
    let decoded = decode_send(json.as_bytes(), &kind_of).unwrap();
    assert_eq!(
        decoded.values,
        [
            (p("/3/0/9"), Value::Int(90)),
            (p("/3303/0/5700"), Value::Float(21.5))
        ]
    );
    assert_eq!(decoded.skipped.len(), 1);
    assert_eq!(decoded.skipped[0].0, p("/3303/0/5701"));
}

#[test]
fn every_kind_round_trips() {
    let values = vec![
        (p("/9/0/0"), chr("héllo \"quoted\"")),
        (p("/9/0/1"), Value::Int(i64::MIN)),
        (p("/9/0/2"), Value::Int(i64::MAX)),
        (p("/9/0/3"), Value::Float(0.1)),
        (p("/9/0/3"), Value::Float(-1e300)),
        (p("/9/0/3"), Value::Float(21.0)),
        (p("/9/0/4"), Value::Bool(false)),
        (p("/9/0/5"), Value::Bin((0..=255).collect())),
        (p("/9/0/5"), Value::Bin(Vec::new())),
        (p("/9/0/6"), Value::Int(-1)),
        (p("/9/0/7"), chr("65535:65535")),
        (p("/9/0/8"), chr("</3/0>")),
        (p("/9/0/1/7"), Value::Int(7)),
    ];
    for (path, value) in values {
        let entry = [(
            path,
            value.clone(),
            every_kind(path.rid().unwrap()).unwrap(),
        )];
        let bytes = encode(&entry).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            read(&text, "/9/0").unwrap().values,
            [(path, value)],
            "{text}"
        );
    }
    let opaque = encode(&[(p("/9/0/5"), Value::Bin(vec![251, 255]), Kind::Opaque)]).unwrap();
    assert_eq!(opaque, br#"[{"bn":"/9/0/","n":"5","vd":"-_8"}]"#);
    assert_eq!(encode(&[]).unwrap(), b"[]");
}

#[test]
fn writes_are_checked() {
    let path = p("/9/0/9");
    assert!(matches!(
        encode(&[(path, Value::Null, Kind::None)]),
        Err(CodecError::Unwritable { path: at, .. }) if at == path
    ));
    assert_eq!(
        encode(&[(p("/9/0/4"), Value::Int(1), Kind::Boolean)]),
        Err(CodecError::Mismatch {
            path: p("/9/0/4"),
            kind: Kind::Boolean,
            got: crate::tree::Format::Int
        })
    );
    assert_eq!(
        encode(&vec![(p("/9/0/4"), Value::Bool(true), Kind::Boolean); 2]),
        Err(CodecError::Duplicate { path: p("/9/0/4") })
    );
}

#[test]
fn malformed_payloads_are_refused_saying_where() {
    for json in [
        "",
        "{}",
        "[1]",
        "[{\"n\":\"/9/0/1\",\"v\":1}",
        "[{\"v\":1e400}]",
        "\u{FEFF}[]",
    ] {
        assert!(
            matches!(read(json, "/9/0"), Err(CodecError::Json(_))),
            "{json:?}"
        );
    }
    assert!(matches!(
        decode(b"[{\"vs\":\"\xFF\"}]", p("/9/0"), &every_kind),
        Err(CodecError::Json(_))
    ));
    assert_eq!(
        read(r#"[{"bn":3,"v":1}]"#, "/9/0"),
        Err(CodecError::Record {
            record: 0,
            problem: "\"bn\" is not a string"
        })
    );
    assert_eq!(
        read(r#"[{"bn":"/9/0/1","v":1},{"n":["1"]}]"#, "/9/0"),
        Err(CodecError::Record {
            record: 1,
            problem: "\"n\" is not a string"
        })
    );
    // Names.
    assert_eq!(
        read(r#"[{"bn":"/9/0/","n":"x","v":1}]"#, "/9/0"),
        Err(CodecError::Name {
            record: 0,
            name: "/9/0/x".to_owned(),
            source: PathError::Syntax {
                text: "/9/0/x".to_owned(),
                reason: "an id is not a decimal number"
            },
        })
    );
    assert!(matches!(
        read(r#"[{"n":"/9/0/65535","v":1}]"#, "/9/0"),
        Err(CodecError::Name {
            source: PathError::Reserved,
            ..
        })
    ));
    assert!(matches!(
        read(r#"[{"v":1}]"#, "/9/0"),
        Err(CodecError::Name { record: 0, .. })
    ));
    assert_eq!(
        read(r#"[{"bn":"/9/0","v":1}]"#, "/9/0"),
        Err(CodecError::Placement {
            record: 0,
            path: p("/9/0"),
            problem: "not a resource or resource instance"
        })
    );
    assert_eq!(
        read(
            r#"[{"bn":"/9/0/","n":"1","v":1},{"bn":"/9/1/","n":"1","v":1}]"#,
            "/9/0"
        ),
        Err(CodecError::Placement {
            record: 1,
            path: p("/9/1/1"),
            problem: "not under the requested path"
        })
    );
    // Labels.
    for label in ["bv", "bs", "s", "bn_", "x_"] {
        let json = format!(r#"[{{"n":"/9/0/1","v":1,"{label}":1}}]"#);
        assert_eq!(
            read(&json, "/9/0"),
            Err(CodecError::Label {
                record: 0,
                label: label.to_owned()
            })
        );
    }
    // Values.
    let value = |json: &str| match read(json, "/9/0") {
        Err(CodecError::SenmlValue { problem, .. }) => problem,
        other => panic!("{json}: {other:?}"),
    };
    assert_eq!(
        value(r#"[{"n":"/9/0/1","vs":"1"}]"#),
        Problem::Label {
            kind: Kind::Integer,
            expected: "v",
            found: "vs"
        }
    );
    assert_eq!(
        value(r#"[{"n":"/9/0/0","v":1}]"#),
        Problem::Label {
            kind: Kind::String,
            expected: "vs",
            found: "v"
        }
    );
    assert_eq!(
        value(r#"[{"n":"/9/0/4","v":1}]"#),
        Problem::Label {
            kind: Kind::Boolean,
            expected: "vb",
            found: "v"
        }
    );
    assert_eq!(
        value(r#"[{"n":"/9/0/1"}]"#),
        Problem::NoValue {
            kind: Kind::Integer,
            expected: "v"
        }
    );
    assert_eq!(
        value(r#"[{"n":"/9/0/9","vs":""}]"#),
        Problem::Executable { found: "vs" }
    );
    assert_eq!(
        value(r#"[{"n":"/9/0/1","v":1,"vs":"1"}]"#),
        Problem::TwoValues
    );
    for (json, why) in [
        (r#"[{"n":"/9/0/1","v":1.5}]"#, "\"v\" is not a whole number"),
        (r#"[{"n":"/9/0/6","v":"1"}]"#, "\"v\" is not a number"),
        (
            r#"[{"n":"/9/0/1","v":1e19}]"#,
            "\"v\" is out of the 64-bit range",
        ),
        (
            r#"[{"n":"/9/0/1","v":-1e19}]"#,
            "\"v\" is out of the 64-bit range",
        ),
        (r#"[{"n":"/9/0/2","v":-1}]"#, "\"v\" is negative"),
        (r#"[{"n":"/9/0/2","v":1e20}]"#, "\"v\" is above 2^64-1"),
        (r#"[{"n":"/9/0/0","vs":1}]"#, "\"vs\" is not a string"),
        (r#"[{"n":"/9/0/4","vb":1}]"#, "\"vb\" is not a boolean"),
        (r#"[{"n":"/9/0/5","vd":"AP+/"}]"#, "\"vd\" is not base64url"),
        (r#"[{"n":"/9/0/5","vd":4}]"#, "\"vd\" is not a string"),
        (
            r#"[{"n":"/9/0/7","vlo":"66"}]"#,
            "\"vlo\" is not \"oid:iid\"",
        ),
    ] {
        assert_eq!(value(json), Problem::Invalid(why), "{json}");
    }
    assert_eq!(
        read(r#"[{"n":"/9/0/1","vs":"1"}]"#, "/9/0")
            .unwrap_err()
            .to_string(),
        "SenML record 0: /9/0/1: a value in \"vs\" (type Integer takes \"v\")"
    );
}

#[test]
fn records_are_bounded() {
    let records = |n: usize| {
        let record = r#"{"n":"/9/0/1","v":1}"#;
        format!("[{}]", vec![record; n].join(","))
    };
    assert_eq!(
        read(&records(MAX_ENTRIES), "/9/0").unwrap().values.len(),
        MAX_ENTRIES
    );
    assert_eq!(
        read(&records(MAX_ENTRIES + 1), "/9/0"),
        Err(CodecError::TooManyEntries)
    );
}
