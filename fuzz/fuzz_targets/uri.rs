//! URI parser: never panics, and Display output parses back to the same URI.
#![no_main]

use dots_sip::Uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = Uri::parse(s) else {
        return;
    };
    let _ = (uri.aor(), uri.user_decoded(), uri.transport());
    assert!(uri.equivalent(&uri));
    let text = uri.to_string();
    let again = Uri::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(uri, again);
});
