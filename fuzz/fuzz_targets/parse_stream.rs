//! Stream parser: never panics, never consumes more than it was given, and
//! frames messages by Content-Length exactly.
#![no_main]

use dots_sip::{parse_datagram, parse_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((msg, used)) = parse_stream(rest) {
        assert!(used > 0 && used <= rest.len());
        // The same bytes are one complete message, and one byte less is not.
        let (alone, used_alone) = parse_stream(&rest[..used]).expect("prefix parses alone");
        assert_eq!(used_alone, used);
        assert_eq!(alone, msg);
        if let Ok((m, _)) = parse_stream(&rest[..used - 1]) {
            panic!("truncated message parsed: {m:?}");
        }
        let bytes = msg.to_bytes();
        let (again, n) = parse_stream(&bytes).expect("re-serialised message parses");
        assert_eq!(n, bytes.len());
        assert!(msg.eq_ignoring_content_length(&again));
        assert!(parse_datagram(&bytes).is_ok());
        rest = &rest[used..];
    }
});
