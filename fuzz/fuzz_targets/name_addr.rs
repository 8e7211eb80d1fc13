//! NameAddr / Contact parsers: never panic; Display output parses back to
//! the same value.
#![no_main]

use dots_sip::{ContactValue, NameAddr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ContactValue::parse(s);
    let Ok(na) = NameAddr::parse(s) else {
        return;
    };
    let _ = (na.tag(), na.uri.aor());
    let text = na.to_string();
    let again = NameAddr::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(na, again);
});
