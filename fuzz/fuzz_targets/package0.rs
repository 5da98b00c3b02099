//! The Package#0 codec (PROTOCOL.md §5): any bytes either parse into a notification or are
//! refused with an error that can be shown, and checking a digest never panics. What parses
//! is written back by the builder and reads as the same notification; the written form is
//! never longer (the wire allows two forms only for an 8-byte TIMESTAMP that fits in 4 and
//! an explicit PREFERRED-CON-TYPE 0, and ignores the reserved header bits). Signed with any
//! credentials, it checks with those and no others.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omadmd::notification::package0::{self, Credentials, Package0};

const KEY: Credentials<'static> = Credentials {
    secret: b"s3cret",
    data: b"auth-data",
};

fuzz_target!(|data: &[u8]| {
    match Package0::parse(data) {
        Ok(parsed) => {
            let _ = parsed.digest_matches(KEY);
            let n = &parsed.notification;
            let written = package0::build(n, None)
                .unwrap_or_else(|e| panic!("{data:02x?} parsed as {n:?}, but is not written: {e}"));
            assert!(
                written.len() <= data.len(),
                "{data:02x?} written as {written:02x?}"
            );
            let again = Package0::parse(&written)
                .unwrap_or_else(|e| panic!("{data:02x?} written as {written:02x?}: {e}"));
            assert_eq!(
                &again.notification, n,
                "{data:02x?} written as {written:02x?}"
            );
            let signed = Package0::parse(&package0::build(n, Some(KEY)).expect("signed"))
                .expect("a signed notification parses");
            assert!(signed.digest_matches(KEY));
            assert!(!signed.digest_matches(Credentials {
                secret: b"other",
                data: KEY.data
            }));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
