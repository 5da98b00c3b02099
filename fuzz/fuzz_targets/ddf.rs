//! The DDF reader: any text either loads or is refused with an error that can be shown. A
//! loaded file's MO types are walked the way the daemon uses them: each definition found
//! again by its path, its default value parsed in its format, and a tree checked against it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omadmd::tree::mo_type::DefName;
use omadmd::tree::{Node, NodeDef, Value, ddf};

/// Visits `def` and everything under it, `path` being its path below the MO root.
fn walk(root: &NodeDef, def: &NodeDef, path: &str) {
    assert!(
        root.descendant(path).is_some(),
        "no definition found at {path:?}"
    );
    if let Some(default) = &def.default
        && !def.format.is_interior()
    {
        match Value::parse(def.format, default) {
            Ok(v) => assert_eq!(v.format(), def.format),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    for child in &def.children {
        let name = match &child.name {
            DefName::Fixed(n) => n.clone(),
            DefName::Placeholder(_) => "x1".to_owned(),
        };
        if name.contains('/') || name.is_empty() {
            continue;
        }
        walk(root, child, &format!("{path}/{name}"));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ddf::parse(text) {
        Ok(file) => {
            let _ = file.node_count();
            for ty in file.mo_types() {
                let _ = ty.root_name();
                walk(&ty.root, &ty.root, "");
                for m in ty.root.check(&Node::empty()) {
                    let _ = (m.path, m.reason);
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
