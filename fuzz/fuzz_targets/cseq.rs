//! CSeq parser: never panics; Display output parses back to the same CSeq.
#![no_main]

use dots_sip::CSeq;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cseq) = CSeq::parse(s) else {
        return;
    };
    assert!(cseq.seq < 1 << 31);
    let text = cseq.to_string();
    assert_eq!(CSeq::parse(&text).as_ref(), Ok(&cseq), "{text:?}");
});
