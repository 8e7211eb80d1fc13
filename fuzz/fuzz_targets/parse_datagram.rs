//! Datagram parser: never panics; whatever parses survives a serialisation
//! round trip, and a response built from a parsed request parses too.
#![no_main]

use dots_sip::{parse_datagram, Message, SipMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse_datagram(data) else {
        return;
    };
    // The typed getters must not panic on anything the parser accepted.
    let _ = (msg.vias(), msg.from(), msg.to(), msg.cseq(), msg.expires());
    let bytes = msg.to_bytes();
    let again = parse_datagram(&bytes)
        .unwrap_or_else(|e| panic!("re-serialised message rejected: {e}\n{msg:?}"));
    assert!(msg.eq_ignoring_content_length(&again), "{msg:?}\n{again:?}");
    assert_eq!(again.to_bytes(), bytes, "serialisation is not stable");
    if let Message::Request(req) = &msg {
        let _ = req.max_forwards();
        let resp = req.make_response(200, None);
        parse_datagram(&resp.to_bytes()).expect("response to a parsed request parses");
    }
});
