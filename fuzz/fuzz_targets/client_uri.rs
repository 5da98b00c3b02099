//! ClientURI parsing (PROTOCOL.md §8): any text either parses or is refused with an error
//! that can be shown, and what parses survives writing it back:
//! `parse(display(parse(x))) == parse(x)`, and the written form is a fixed point. The written
//! form escapes what the text may have left raw, so it can be longer than `uri_bytes`: it is
//! read back with room for its length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omadmd::tree::uri::{self, ClientUri, UriLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientUri::parse(text) {
        Ok(uri) => {
            let _ = uri.names_path();
            let written = uri.to_string();
            let room = UriLimits {
                bytes: written.len(),
                ..uri::limits()
            };
            let again = ClientUri::parse_within(&written, &room).unwrap_or_else(|e| {
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
