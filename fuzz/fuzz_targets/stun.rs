//! STUN server: never panics; every answer parses, keeps the request's
//! transaction id, and a success names the source in XOR-MAPPED-ADDRESS;
//! whatever parses re-encodes to the same message.
#![no_main]

use std::net::SocketAddr;

use dots_stun::{answer, Class, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The source address comes from the input too, so both families and
    // every port are tried.
    let from: SocketAddr = match data.first() {
        Some(b) if b & 1 == 1 => {
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(*b)], 3478))
        }
        Some(b) => SocketAddr::from(([192, 0, 2, *b], u16::from(*b) << 8 | 0x55)),
        None => SocketAddr::from(([127, 0, 0, 1], 1)),
    };
    if let Ok(m) = Message::parse(data) {
        let again =
            Message::parse(&m.encode(m.has_fingerprint())).expect("re-encoded message parses");
        assert_eq!(again.method, m.method);
        assert_eq!(again.class, m.class);
        assert_eq!(again.transaction_id, m.transaction_id);
        assert_eq!(again.attributes.len(), m.attributes.len());
        let _ = (
            m.xor_mapped_address(),
            m.error_code(),
            m.unknown_attributes(),
        );
    }
    if let Some(reply) = answer(data, from) {
        let request = Message::parse(data).expect("only a valid message is answered");
        let reply = Message::parse(&reply).expect("the answer parses");
        assert_eq!(reply.transaction_id, request.transaction_id);
        assert_eq!(reply.method, request.method);
        assert_eq!(reply.has_fingerprint(), request.has_fingerprint());
        match reply.class {
            Class::Success => assert_eq!(reply.xor_mapped_address(), Some(from)),
            Class::Error => assert!(reply.error_code().is_some()),
            c => panic!("answered with {c:?}"),
        }
    }
});
