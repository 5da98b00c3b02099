use super::*;
use crate::gateway::lwm2m::codec::fixtures::{chr, device, device_values, every_kind, p};
use crate::gateway::lwm2m::path::PathError;

/// Object 2 (Access Control): every resource is an Integer.
fn access_control(rid: u16) -> Option<Kind> {
    (rid <= 3).then_some(Kind::Integer)
}

fn hex(text: &str) -> Vec<u8> {
    let digits: String = text.split_whitespace().collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

/// The TS's example of a Read on the Device object's instance (`GET /3/0`), TLV.
const DEVICE_READ: &str = "
    C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65
    C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74
    C8 02 09 33 34 35 30 30 30 31 32 33
    C3 03 31 2E 30
    86 06 41 00 01 41 01 05
    88 07 08 42 00 0E D8 42 01 13 88
    87 08 41 00 7D 42 01 03 84
    C1 09 64
    C1 0A 0F
    83 0B 41 00 00
    C4 0D 51 82 42 8F
    C6 0E 2B 30 32 3A 30 30
    C1 10 55";

fn with_kinds(
    values: &[(LwPath, Value)],
    kind_of: fn(u16) -> Option<Kind>,
) -> Vec<(LwPath, Value, Kind)> {
    values
        .iter()
        .map(|(path, value)| (*path, value.clone(), kind_of(path.rid().unwrap()).unwrap()))
        .collect()
}

#[test]
fn reads_the_device_object_instance_of_the_spec() {
    let decoded = decode(&hex(DEVICE_READ), p("/3/0"), &device).unwrap();
    assert_eq!(decoded.values, device_values());
    assert!(decoded.skipped.is_empty());
    // The same resources inside the instance's own TLV (a client may wrap them).
    let mut wrapped = hex("08 00 79");
    wrapped.extend(hex(DEVICE_READ));
    assert_eq!(hex(DEVICE_READ).len(), 0x79);
    assert_eq!(
        decode(&wrapped, p("/3/0"), &device).unwrap().values,
        device_values()
    );
}

#[test]
fn writes_the_spec_bytes_back() {
    let entries = with_kinds(&device_values(), device);
    assert_eq!(encode(&entries).unwrap(), hex(DEVICE_READ));
}

#[test]
fn reads_single_and_multiple_resources() {
    let manufacturer = hex("C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65");
    assert_eq!(
        decode(&manufacturer, p("/3/0/0"), &device).unwrap().values,
        [(p("/3/0/0"), chr("Open Mobile Alliance"))]
    );
    let sources = [
        (p("/3/0/6/0"), Value::Int(1)),
        (p("/3/0/6/1"), Value::Int(5)),
    ];
    let multiple = hex("86 06 41 00 01 41 01 05");
    assert_eq!(
        decode(&multiple, p("/3/0/6"), &device).unwrap().values,
        sources
    );
    // Bare resource instances answer a read of the resource too.
    let bare = hex("41 00 01 41 01 05");
    assert_eq!(decode(&bare, p("/3/0/6"), &device).unwrap().values, sources);
    // A resource instance read.
    assert_eq!(
        decode(&hex("41 01 05"), p("/3/0/6/1"), &device)
            .unwrap()
            .values,
        [(p("/3/0/6/1"), Value::Int(5))]
    );
    // An empty multiple resource, and an empty payload, report nothing.
    assert_eq!(
        decode(&hex("80 0B"), p("/3/0/11"), &device).unwrap(),
        Decoded::default()
    );
    assert_eq!(decode(&[], p("/3/0"), &device).unwrap(), Decoded::default());
}

#[test]
fn reads_the_object_instances_of_the_spec() {
    // The TS's Read on the Access Control object (`GET /2`): two instances, the second
    // with an ACL instance whose id needs 16 bits.
    let bytes = hex("
        08 00 0E C1 00 01 C1 01 00 83 02 41 7F 07 C1 03 7F
        08 02 12 C1 00 03 C1 01 00 87 02 41 7F 07 61 01 36 01 C1 03 7F");
    let values = vec![
        (p("/2/0/0"), Value::Int(1)),
        (p("/2/0/1"), Value::Int(0)),
        (p("/2/0/2/127"), Value::Int(7)),
        (p("/2/0/3"), Value::Int(127)),
        (p("/2/2/0"), Value::Int(3)),
        (p("/2/2/1"), Value::Int(0)),
        (p("/2/2/2/127"), Value::Int(7)),
        (p("/2/2/2/310"), Value::Int(1)),
        (p("/2/2/3"), Value::Int(127)),
    ];
    assert_eq!(
        decode(&bytes, p("/2"), &access_control).unwrap().values,
        values
    );
    // Each instance's resources encode to the bytes inside its TLV.
    let second = with_kinds(&values[4..], access_control);
    assert_eq!(encode(&second).unwrap(), bytes[20..]);
}

#[test]
fn every_kind_round_trips() {
    let values = vec![
        (p("/9/0/0"), chr("héllo")),
        (p("/9/0/0"), chr("")),
        (p("/9/0/1"), Value::Int(-1)),
        (p("/9/0/1"), Value::Int(i64::MIN)),
        (p("/9/0/1"), Value::Int(i64::MAX)),
        (p("/9/0/1"), Value::Int(-129)),
        (p("/9/0/1"), Value::Int(70000)),
        (p("/9/0/2"), Value::Int(0)),
        (p("/9/0/2"), Value::Int(255)),
        (p("/9/0/2"), Value::Int(65536)),
        (p("/9/0/2"), Value::Int(i64::MAX)),
        (p("/9/0/3"), Value::Float(21.5)),
        (p("/9/0/3"), Value::Float(0.1)),
        (p("/9/0/3"), Value::Float(-1e300)),
        (p("/9/0/4"), Value::Bool(true)),
        (p("/9/0/4"), Value::Bool(false)),
        (p("/9/0/5"), Value::Bin(vec![0, 255, 7])),
        (p("/9/0/5"), Value::Bin(vec![0xA5; 300])),
        (p("/9/0/5"), Value::Bin(vec![0x5A; 70000])),
        (p("/9/0/6"), Value::Int(1767225600)),
        (p("/9/0/7"), chr("65535:65535")),
        (p("/9/0/7"), chr("3:0")),
        (p("/9/0/8"), chr("</3/0>;ver=1.2")),
        (p("/9/0/9"), Value::Null),
    ];
    for (path, value) in values {
        let entry = [(
            path,
            value.clone(),
            every_kind(path.rid().unwrap()).unwrap(),
        )];
        let bytes = encode(&entry).unwrap();
        let decoded = decode(&bytes, path, &every_kind).unwrap();
        assert_eq!(decoded.values, [(path, value.clone())], "{bytes:02x?}");
        let decoded = decode(&bytes, p("/9/0"), &every_kind).unwrap();
        assert_eq!(decoded.values, [(path, value)]);
    }
}

#[test]
fn values_take_their_smallest_width() {
    let bytes = |value: Value, kind: Kind| {
        let rid = match kind {
            Kind::Unsigned => 2,
            Kind::Float => 3,
            _ => 1,
        };
        encode(&[(LwPath::resource(9, 0, rid).unwrap(), value, kind)]).unwrap()
    };
    assert_eq!(bytes(Value::Int(127), Kind::Integer), hex("C1 01 7F"));
    assert_eq!(bytes(Value::Int(128), Kind::Integer), hex("C2 01 00 80"));
    assert_eq!(bytes(Value::Int(-32768), Kind::Integer), hex("C2 01 80 00"));
    assert_eq!(
        bytes(Value::Int(-32769), Kind::Integer),
        hex("C4 01 FF FF 7F FF")
    );
    assert_eq!(
        bytes(Value::Int(1 << 31), Kind::Integer),
        hex("C8 01 08 00 00 00 00 80 00 00 00")
    );
    assert_eq!(bytes(Value::Int(255), Kind::Unsigned), hex("C1 02 FF"));
    assert_eq!(
        bytes(Value::Int(1 << 31), Kind::Unsigned),
        hex("C4 02 80 00 00 00")
    );
    assert_eq!(
        bytes(Value::Float(21.5), Kind::Float),
        hex("C4 03 41 AC 00 00")
    );
    assert_eq!(
        bytes(Value::Float(0.1), Kind::Float),
        hex("C8 03 08 3F B9 99 99 99 99 99 9A")
    );
    // A resource id above 255 takes a 16-bit id.
    let temperature = [(p("/3303/0/5700"), Value::Float(21.5), Kind::Float)];
    assert_eq!(encode(&temperature).unwrap(), hex("E4 16 44 41 AC 00 00"));
}

#[test]
fn reads_widths_as_signed_or_unsigned() {
    let read = |text: &str| decode(&hex(text), p("/9/0"), &every_kind).unwrap().values;
    assert_eq!(read("C1 01 FF"), [(p("/9/0/1"), Value::Int(-1))]);
    assert_eq!(read("C2 01 FF FE"), [(p("/9/0/1"), Value::Int(-2))]);
    assert_eq!(
        read("C4 01 80 00 00 00"),
        [(p("/9/0/1"), Value::Int(i64::from(i32::MIN)))]
    );
    assert_eq!(read("C1 02 FF"), [(p("/9/0/2"), Value::Int(255))]);
    assert_eq!(
        read("C4 02 FF FF FF FF"),
        [(p("/9/0/2"), Value::Int(0xFFFF_FFFF))]
    );
    assert_eq!(
        read("C4 06 80 00 00 00"),
        [(p("/9/0/6"), Value::Int(i64::from(i32::MIN)))]
    );
    // A non-minimal length field is still read.
    assert_eq!(read("D0 01 00 01 05"), [(p("/9/0/1"), Value::Int(5))]);
}

#[test]
fn unknown_resources_and_values_the_mirror_cannot_hold_are_skipped() {
    // Resource 99 is not in the definition, resource 2 is an unsigned above 2^63-1,
    // resource 3 a NaN; resource 1 still reads.
    let bytes = hex("
        C1 63 07
        C8 02 08 FF FF FF FF FF FF FF FF
        C4 03 7F C0 00 00
        C1 01 2A");
    let decoded = decode(&bytes, p("/9/0"), &every_kind).unwrap();
    assert_eq!(decoded.values, [(p("/9/0/1"), Value::Int(42))]);
    let skipped: Vec<_> = decoded.skipped.iter().map(|(path, _)| *path).collect();
    assert_eq!(skipped, [p("/9/0/99"), p("/9/0/2"), p("/9/0/3")]);
    assert!(
        decoded.skipped[1].1.contains("18446744073709551615"),
        "{:?}",
        decoded.skipped
    );
    assert!(
        decoded.skipped[2].1.contains("NaN"),
        "{:?}",
        decoded.skipped
    );
    // A multiple resource the definition does not know is skipped whole.
    let multiple = hex("86 63 41 00 01 41 01 05 C1 01 2A");
    let decoded = decode(&multiple, p("/9/0"), &every_kind).unwrap();
    assert_eq!(decoded.values, [(p("/9/0/1"), Value::Int(42))]);
    assert_eq!(decoded.skipped.len(), 1);
    assert_eq!(decoded.skipped[0].0, p("/9/0/99"));
}

#[test]
fn malformed_payloads_are_refused_saying_where() {
    let read = |text: &str, base: &str| decode(&hex(text), p(base), &every_kind).unwrap_err();
    // Truncated: the header, its id, its length field, the value, a nested value.
    assert_eq!(
        read("C1 01 05 C8", "/9/0"),
        CodecError::Truncated {
            at: 3,
            need: 3,
            left: 1
        }
    );
    assert_eq!(
        read("E1 01", "/9/0"),
        CodecError::Truncated {
            at: 0,
            need: 3,
            left: 2
        }
    );
    assert_eq!(
        read("D8 01 00 00", "/9/0"),
        CodecError::Truncated {
            at: 0,
            need: 5,
            left: 4
        }
    );
    assert_eq!(
        read("C8 00 14 4F 70", "/9/0"),
        CodecError::Truncated {
            at: 0,
            need: 23,
            left: 5
        }
    );
    assert_eq!(
        read("83 01 42 00 01", "/9/0"),
        CodecError::Truncated {
            at: 2,
            need: 4,
            left: 3
        }
    );
    // Trailing bytes that make no TLV.
    assert_eq!(
        read("C1 01 05 00", "/9/0"),
        CodecError::Truncated {
            at: 3,
            need: 2,
            left: 1
        }
    );
    // Wrong widths.
    for (text, kind, len) in [
        ("C3 01 00 00 01", Kind::Integer, 3),
        ("C0 01", Kind::Integer, 0),
        // Found by fuzzing: wider than 8 bytes.
        ("C8 01 09 00 00 00 00 00 00 00 00 01", Kind::Integer, 9),
        (
            "C8 06 10 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01",
            Kind::Time,
            16,
        ),
        ("C8 02 09 00 00 00 00 00 00 00 00 01", Kind::Unsigned, 9),
        ("C5 02 00 00 00 00 01", Kind::Unsigned, 5),
        ("C2 03 00 00", Kind::Float, 2),
        ("C2 04 00 01", Kind::Boolean, 2),
        ("C3 07 00 03 00", Kind::Objlnk, 3),
        ("C1 09 00", Kind::None, 1),
    ] {
        assert!(
            matches!(read(text, "/9/0"), CodecError::Width { kind: k, len: l, .. } if k == kind && l == len),
            "{text}"
        );
    }
    // Booleans are 0 or 1.
    assert_eq!(
        read("C1 04 02", "/9/0"),
        CodecError::Boolean {
            path: p("/9/0/4"),
            byte: 2
        }
    );
    // Strings are UTF-8.
    assert_eq!(
        read("C2 00 FF FE", "/9/0"),
        CodecError::Utf8 { path: p("/9/0/0") }
    );
    assert_eq!(
        read("83 08 41 00 C3", "/9/0"),
        CodecError::Utf8 {
            path: p("/9/0/8/0")
        }
    );
    // Ids: 65535 is reserved; an id other than the one requested.
    assert_eq!(
        read("E1 FF FF 00", "/9/0"),
        CodecError::ReservedId { at: 0 }
    );
    assert!(
        matches!(read("C1 02 05", "/9/0/1"), CodecError::Unrequested { at: 0, id: 2, requested, .. } if requested == p("/9/0/1"))
    );
    assert!(
        matches!(read("08 01 00", "/9/0"), CodecError::Unrequested { id: 1, requested, .. } if requested == p("/9/0"))
    );
    assert!(matches!(
        read("41 02 05", "/9/0/1/1"),
        CodecError::Unrequested { id: 2, .. }
    ));
    // An entry given twice.
    assert_eq!(
        read("C1 01 05 C1 01 06", "/9/0"),
        CodecError::Duplicate { path: p("/9/0/1") }
    );
    assert_eq!(
        read("86 01 41 00 05 41 00 06", "/9/0"),
        CodecError::Duplicate {
            path: p("/9/0/1/0")
        }
    );
    // A length that runs past its container.
    assert_eq!(
        read("83 01 42 00 01", "/9/0").to_string(),
        "TLV at byte 2: needs 4 bytes, 3 left"
    );
}

#[test]
fn tlvs_nest_only_as_the_format_allows() {
    let read = |text: &str, base: &str| decode(&hex(text), p(base), &every_kind).unwrap_err();
    let misplaced = |err: CodecError| match err {
        CodecError::Misplaced { at, found, place } => (at, found, place),
        other => panic!("{other}"),
    };
    assert_eq!(
        misplaced(read("C1 01 05", "/9")),
        (0, "resource", "directly in object /9".to_owned())
    );
    assert_eq!(
        misplaced(read("41 01 05", "/9/0")),
        (
            0,
            "resource instance",
            "directly in object instance /9/0".to_owned()
        )
    );
    assert_eq!(
        misplaced(read("08 00 03 08 00 00", "/9")),
        (
            3,
            "object instance",
            "directly in object instance /9/0".to_owned()
        )
    );
    assert_eq!(
        misplaced(read("82 01 C0 00", "/9/0")),
        (2, "resource", "in multiple resource /9/0/1".to_owned())
    );
    assert_eq!(
        misplaced(read("83 01 81 00 00", "/9/0")),
        (
            2,
            "multiple resource",
            "in multiple resource /9/0/1".to_owned()
        )
    );
    assert_eq!(
        misplaced(read("C1 00 05", "/9/0/1/0")),
        (0, "resource", "in multiple resource /9/0/1".to_owned())
    );
}

#[test]
fn entries_are_bounded() {
    // One multiple resource of 4095 instances: 4096 TLVs in all.
    let instances = |n: u16| -> Vec<u8> {
        (0..n)
            .flat_map(|i| [0x61, (i >> 8) as u8, i as u8, 0x2A])
            .collect()
    };
    let payload = |n: u16| {
        let inner = instances(n);
        let mut bytes = vec![0x90, 0x01];
        bytes.extend((inner.len() as u16).to_be_bytes());
        bytes.extend(inner);
        bytes
    };
    let decoded = decode(&payload(4095), p("/9/0"), &every_kind).unwrap();
    assert_eq!(decoded.values.len(), 4095);
    assert_eq!(
        decode(&payload(4096), p("/9/0"), &every_kind),
        Err(CodecError::TooManyEntries)
    );
    let entries: Vec<_> = (0..=MAX_ENTRIES as u16)
        .map(|i| {
            (
                LwPath::resource_instance(9, 0, 1, i).unwrap(),
                Value::Int(1),
                Kind::Integer,
            )
        })
        .collect();
    assert_eq!(encode(&entries), Err(CodecError::TooManyEntries));
    // 256 instances with 8-bit ids, 3840 with 16-bit ones, under a 16-bit length.
    let written = encode(&entries[..MAX_ENTRIES]).unwrap();
    assert_eq!(written.len(), 4 + 256 * 3 + 3840 * 4);
    assert_eq!(written[..4], [0x90, 0x01, 0x3F, 0x00]);
    let decoded = decode(&encode(&entries[..4095]).unwrap(), p("/9/0"), &every_kind).unwrap();
    assert_eq!(decoded.values.len(), 4095);
}

#[test]
fn writes_are_checked() {
    let path = p("/3/0/13");
    assert_eq!(
        encode(&[(path, chr("now"), Kind::Time)]),
        Err(CodecError::Mismatch {
            path,
            kind: Kind::Time,
            got: crate::tree::Format::Chr
        })
    );
    assert!(matches!(
        encode(&[
            (p("/3/0/1"), chr("a"), Kind::String),
            (p("/3/1/1"), chr("b"), Kind::String)
        ]),
        Err(CodecError::Layout { .. })
    ));
    assert_eq!(encode(&[]), Ok(Vec::new()));
    let big = [(
        p("/9/0/5"),
        Value::Bin(vec![0; MAX_LENGTH + 1]),
        Kind::Opaque,
    )];
    assert!(
        matches!(encode(&big), Err(CodecError::Unwritable { path, .. }) if path == p("/9/0/5"))
    );
    // Instances of one resource are gathered into its multiple resource, wherever given.
    let scattered = [
        (p("/3/0/6/0"), Value::Int(1), Kind::Integer),
        (p("/3/0/9"), Value::Int(100), Kind::Integer),
        (p("/3/0/6/1"), Value::Int(5), Kind::Integer),
    ];
    assert_eq!(
        encode(&scattered).unwrap(),
        hex("86 06 41 00 01 41 01 05 C1 09 64")
    );
    assert_eq!(LwPath::resource(3, 0, 65535), Err(PathError::Reserved));
}
