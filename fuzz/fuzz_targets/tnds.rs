//! TNDS import and export. Any text either imports (checked against the built-in MO types
//! and the Hotspot 2.0 PerProviderSubscription type) or is refused with problems that can
//! be shown; what imports exports, and the export imports back to the same trees, with the
//! types and without them.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use omadmd::tree::{MoType, builtin, ddf, tnds};

static TYPES: LazyLock<Vec<MoType>> = LazyLock::new(|| {
    let pps = ddf::parse(include_str!("../../tests/fixtures/hotspot2-pps.ddf"))
        .expect("the PerProviderSubscription DDF fixture parses");
    let mut types = builtin::types();
    types.extend(pps.mo_types());
    types
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for types in [&TYPES[..], &[]] {
        match tnds::import(text, types) {
            Ok(trees) => {
                let doc = tnds::export(&trees)
                    .unwrap_or_else(|e| panic!("imported trees do not export: {e}"));
                for again_types in [types, &[]] {
                    let again = tnds::import(&doc, again_types)
                        .unwrap_or_else(|e| panic!("the export does not import:\n{e}\n{doc}"));
                    assert_eq!(again, trees, "exported as\n{doc}");
                }
            }
            Err(e) => {
                assert!(!e.problems.is_empty());
                let _ = e.to_string();
            }
        }
    }
});
