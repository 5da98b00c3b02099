//! The LwM2M payload codecs (docs/gateway.md §2.6): any bytes either decode as TLV and as
//! SenML JSON, at each level of a request, or are refused with an error that can be shown;
//! as text they either read as a registration (each object once, each instance once per
//! object) or are refused, and as an LwM2M path they print back as themselves. What decodes
//! at an object instance is written back in both formats and reads as the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omadmd::gateway::lwm2m::codec::{CodecError, Decoded};
use omadmd::gateway::lwm2m::path::LwPath;
use omadmd::gateway::lwm2m::{link, senml, tlv};
use omadmd::tree::Value;
use omadmd::tree::lwm2m::Kind;

/// Every kind, by resource id; ids ending in 10 are not in the definition.
fn kind_of(rid: u16) -> Option<Kind> {
    [
        Kind::String,
        Kind::Integer,
        Kind::Unsigned,
        Kind::Float,
        Kind::Boolean,
        Kind::Opaque,
        Kind::Time,
        Kind::Objlnk,
        Kind::Corelnk,
        Kind::None,
    ]
    .get(usize::from(rid % 11))
    .copied()
}

fn path(text: &str) -> LwPath {
    text.parse().expect("a valid path")
}

fn entries(values: &[(LwPath, Value)]) -> Vec<(LwPath, Value, Kind)> {
    values
        .iter()
        .map(|(path, value)| {
            let rid = path.rid().expect("decoded values name resources");
            let kind = kind_of(rid).expect("decoded values have a kind");
            (*path, value.clone(), kind)
        })
        .collect()
}

fn sorted(mut values: Vec<(LwPath, Value)>) -> Vec<(LwPath, Value)> {
    values.sort_by_key(|(path, _)| *path);
    values
}

/// Writes `values` of /3/0 as TLV and, leaving out executable resources, as SenML JSON;
/// both read back as the same values.
fn round_trip(values: &[(LwPath, Value)], data: &[u8]) {
    let instance = path("/3/0");
    let entries = entries(values);
    match tlv::encode(&entries) {
        Ok(bytes) => {
            let again = tlv::decode(&bytes, instance, &kind_of)
                .unwrap_or_else(|e| panic!("{data:02x?}: TLV {bytes:02x?}: {e}"));
            assert!(again.skipped.is_empty(), "{data:02x?}: TLV {bytes:02x?}");
            assert_eq!(
                sorted(again.values),
                sorted(values.to_vec()),
                "{data:02x?}: TLV {bytes:02x?}"
            );
        }
        // SenML may name a path twice, or a resource both with a value and by instances.
        Err(CodecError::Duplicate { .. } | CodecError::Layout { .. }) => return,
        Err(e) => panic!("{data:02x?}: {values:?} not written as TLV: {e}"),
    }
    let valued: Vec<_> = entries
        .into_iter()
        .filter(|(_, _, kind)| *kind != Kind::None)
        .collect();
    let json = senml::encode(&valued).unwrap_or_else(|e| panic!("{data:02x?}: {valued:?}: {e}"));
    let again = senml::decode(&json, instance, &kind_of)
        .unwrap_or_else(|e| panic!("{data:02x?}: SenML {}: {e}", String::from_utf8_lossy(&json)));
    let expected: Vec<_> = valued
        .into_iter()
        .map(|(path, value, _)| (path, value))
        .collect();
    assert_eq!(
        again,
        Decoded {
            values: expected,
            skipped: Vec::new()
        }
    );
}

fuzz_target!(|data: &[u8]| {
    for base in ["/3", "/3/0", "/3/0/6", "/3/0/6/1"] {
        match tlv::decode(data, path(base), &kind_of) {
            Ok(decoded) if base == "/3/0" => round_trip(&decoded.values, data),
            Ok(_) => {}
            Err(e) => {
                let _ = e.to_string();
            }
        }
        match senml::decode(data, path(base), &kind_of) {
            Ok(decoded) if base == "/3/0" => round_trip(&decoded.values, data),
            Ok(_) => {}
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    if let Err(e) = senml::decode_send(data, &|_, rid| kind_of(rid)) {
        let _ = e.to_string();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match link::parse_registration(text) {
        Ok(registered) => {
            for (i, object) in registered.objects.iter().enumerate() {
                assert!(
                    registered.objects[..i].iter().all(|o| o.oid != object.oid),
                    "{text:?}"
                );
                for (j, iid) in object.instances.iter().enumerate() {
                    assert!(!object.instances[..j].contains(iid), "{text:?}");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match text.parse::<LwPath>() {
        Ok(parsed) => assert_eq!(parsed.to_string(), text),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
