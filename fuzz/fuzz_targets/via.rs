//! Via parser: never panics; Display output parses back to the same Via.
#![no_main]

use dots_sip::Via;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(via) = Via::parse(s) else {
        return;
    };
    let _ = via.branch();
    let text = via.to_string();
    let again = Via::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(via, again);
});
