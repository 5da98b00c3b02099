//! The MO serialization (PROTOCOL.md §7) and the value codecs under it. Items either parse
//! or are refused with an error that can be shown; every node read (with the built-in MO
//! types where the item's root matches one, and without a type) survives writing it back.
//! The input is also tried as the text of a leaf in every format: a value that parses
//! survives its text and its JSON form.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use omadmd::tree::json::{self, MoItem};
use omadmd::tree::{Format, MoType, Node, Value, builtin};

static TYPES: LazyLock<Vec<MoType>> = LazyLock::new(builtin::types);

fn round_trip(item: &MoItem, name: &str, node: &Node, ty: Option<&MoType>) {
    let written = MoItem::new(item.client_uri.clone(), name, node);
    let text = serde_json::to_string(&vec![written]).expect("items serialize");
    let items = json::parse_items(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let (again_name, again_json) = items[0].single().expect("one node per written item");
    assert_eq!(again_name, name);
    let again = json::node_from_json(again_json, ty.map(|t| &t.root), name)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(&again, node, "written as {text}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match json::parse_items(text) {
        Ok(items) => {
            for item in &items {
                let (name, data) = match item.single() {
                    Ok(single) => single,
                    Err(e) => {
                        let _ = e.to_string();
                        continue;
                    }
                };
                let typed = TYPES.iter().find(|t| t.root_name() == name);
                for ty in typed.map(Some).into_iter().chain([None]) {
                    match json::node_from_json(data, ty.map(|t| &t.root), name) {
                        Ok(node) => round_trip(item, name, &node, ty),
                        Err(e) => {
                            let _ = e.to_string();
                        }
                    }
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    for format in Format::ALL {
        match Value::parse(format, text) {
            Ok(value) => {
                let written = value.to_text();
                let again = Value::parse(format, &written)
                    .unwrap_or_else(|e| panic!("{format} {text:?} written as {written:?}: {e}"));
                assert_eq!(again, value, "{format} {text:?} written as {written:?}");
                let json = value.to_json();
                let again = Value::from_json(format, &json)
                    .unwrap_or_else(|e| panic!("{format} {text:?} as JSON {json}: {e}"));
                assert_eq!(again, value, "{format} {text:?} as JSON {json}");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
