//! The DM 2.0 packages (PROTOCOL.md §2–§4): a body either parses or is refused with an
//! error that can be shown. Package#2 commands are parsed one by one; each that parses
//! survives its wire form (`parse(to_wire(c)) == c`), and so does the whole package
//! (`Package2::encode`). Package#1 and Package#3 (read by servers) survive re-serialization.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omadmd::protocol::{Command, Package1, Package2, Package3};

fuzz_target!(|data: &[u8]| {
    match Package2::parse(data) {
        Ok(package) => {
            let mut good = Vec::new();
            for command in package.commands {
                match command {
                    Ok(c) => {
                        let wire = serde_json::json!(c.to_wire());
                        let again = Command::parse(&wire).unwrap_or_else(|e| {
                            panic!("{c:?} written as {wire} does not parse: {e}")
                        });
                        assert_eq!(again, c, "written as {wire}");
                        good.push(c);
                    }
                    Err(e) => {
                        assert!(matches!(e.status, 400 | 501), "{e}");
                        let _ = e.to_string();
                    }
                }
            }
            let body = Package2::encode(&good);
            let again = Package2::parse(&body).expect("an encoded Package#2 parses");
            let again: Vec<Command> = again
                .commands
                .into_iter()
                .map(|c| c.expect("encoded commands parse"))
                .collect();
            assert_eq!(again, good);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(p1) = serde_json::from_slice::<Package1>(data) {
        let text = serde_json::to_vec(&p1).expect("Package#1 serializes");
        let again: Package1 = serde_json::from_slice(&text).expect("Package#1 reads back");
        assert_eq!(again, p1);
    }
    if let Ok(p3) = serde_json::from_slice::<Package3>(data) {
        let text = serde_json::to_vec(&p3).expect("Package#3 serializes");
        let again: Package3 = serde_json::from_slice(&text).expect("Package#3 reads back");
        assert_eq!(again, p3);
    }
});
