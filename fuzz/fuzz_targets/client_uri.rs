//! ClientURI parsing (PROTOCOL.md §8): any text either parses or is refused with an error
//! that can be shown, and what parses survives writing it back:
//! `parse(display(parse(x))) == parse(x)`, and the written form is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omadmd::tree::uri::ClientUri;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientUri::parse(text) {
        Ok(uri) => {
            let _ = uri.is_concrete();
            let written = uri.to_string();
            let again = ClientUri::parse(&written).unwrap_or_else(|e| {
                panic!("{text:?} parsed, but its written form {written:?} does not: {e}")
            });
            assert_eq!(again, uri, "{text:?} written as {written:?}");
            assert_eq!(again.to_string(), written, "{text:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
