use super::*;

/// Hex with spaces and newlines to bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

const TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// RFC 5769 §2.1: a Binding request as an ICE agent sends it.
fn rfc5769_request() -> Vec<u8> {
    hex("00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
         80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
         00 24 00 04 6e 00 01 ff
         80 29 00 08 93 2f f9 b1 51 26 3b 36
         00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
         00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
         80 28 00 04 e5 7a 3b cf")
}

#[test]
fn rfc5769_sample_request_parses_and_fingerprint_checks() {
    let bytes = rfc5769_request();
    let m = Message::parse(&bytes).expect("RFC 5769 request");
    assert_eq!((m.method, m.class), (BINDING, Class::Request));
    assert_eq!(m.transaction_id, TID);
    assert_eq!(m.attribute(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
    assert_eq!(m.attribute(attr::SOFTWARE), Some(&b"STUN test client"[..]));
    assert!(m.has_fingerprint());
    // One flipped bit anywhere before FINGERPRINT breaks it.
    let mut bad = bytes.clone();
    bad[30] ^= 0x01;
    assert_eq!(Message::parse(&bad), Err(StunError::BadFingerprint));
}

#[test]
fn rfc5769_sample_responses_give_the_mapped_address() {
    let v4 = hex("01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
         80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
         00 20 00 08 00 01 a1 47 e1 12 a6 43
         00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
         80 28 00 04 c0 7d 4c 96");
    let m = Message::parse(&v4).expect("RFC 5769 IPv4 response");
    assert_eq!((m.method, m.class), (BINDING, Class::Success));
    assert_eq!(
        m.xor_mapped_address(),
        Some("192.0.2.1:32853".parse().unwrap())
    );
    assert_eq!(m.attribute(attr::SOFTWARE), Some(&b"test vector"[..]));

    let v6 = hex("01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
         80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
         00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
         00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
         80 28 00 04 c8 fb 0b 4c");
    let m = Message::parse(&v6).expect("RFC 5769 IPv6 response");
    assert_eq!(
        m.xor_mapped_address(),
        Some(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        )
    );
}

#[test]
fn our_xor_mapped_address_matches_the_rfc_encoding() {
    let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(
        encode_xor_address(from, &TID),
        hex("00 01 a1 47 e1 12 a6 43")
    );
    let from6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(
        encode_xor_address(from6, &TID),
        hex("00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9")
    );
}

#[test]
fn binding_request_gets_the_source_address() {
    for from in ["127.0.0.1:40000", "[::1]:5", "203.0.113.9:65535"] {
        let from: SocketAddr = from.parse().unwrap();
        let reply = answer(&binding_request([9; 12]), from).expect("answered");
        let m = Message::parse(&reply).unwrap();
        assert_eq!((m.method, m.class), (BINDING, Class::Success));
        assert_eq!(m.transaction_id, [9; 12]);
        assert_eq!(m.xor_mapped_address(), Some(from));
        assert!(!m.has_fingerprint(), "no FINGERPRINT unless asked");
    }
}

#[test]
fn the_rfc_request_is_answered_with_a_fingerprint() {
    // Authentication and ICE attributes are ignored (the node does not
    // authenticate STUN); FINGERPRINT in the request asks for one back.
    let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    let reply = answer(&rfc5769_request(), from).expect("answered");
    let m = Message::parse(&reply).expect("valid, with a correct FINGERPRINT");
    assert!(m.has_fingerprint());
    assert_eq!(m.class, Class::Success);
    assert_eq!(m.transaction_id, TID);
    assert_eq!(m.xor_mapped_address(), Some(from));
    assert_eq!(m.attribute(attr::SOFTWARE), Some(SOFTWARE.as_bytes()));
}

#[test]
fn other_methods_get_400_and_unknown_attributes_420() {
    let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
    // An Allocate (TURN) request: this node is no TURN server.
    let allocate = Message::new(0x003, Class::Request, [1; 12]).encode(false);
    let m = Message::parse(&answer(&allocate, from).unwrap()).unwrap();
    assert_eq!((m.method, m.class), (0x003, Class::Error));
    assert_eq!(m.error_code(), Some((400, "Bad Request".into())));

    let mut req = Message::new(BINDING, Class::Request, [2; 12]);
    req.attributes.push(Attribute {
        kind: 0x7777,
        value: vec![1, 2, 3],
    });
    // Comprehension-optional unknowns are fine.
    req.attributes.push(Attribute {
        kind: 0xC001,
        value: vec![],
    });
    let m = Message::parse(&answer(&req.encode(true), from).unwrap()).unwrap();
    assert_eq!(m.class, Class::Error);
    assert_eq!(m.error_code().map(|(c, _)| c), Some(420));
    assert_eq!(m.unknown_attributes(), vec![0x7777]);
    assert!(m.has_fingerprint());
}

#[test]
fn indications_responses_and_garbage_are_ignored() {
    let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let indication = Message::new(BINDING, Class::Indication, [3; 12]).encode(false);
    assert_eq!(answer(&indication, from), None);
    let success = Message::new(BINDING, Class::Success, [3; 12]).encode(false);
    assert_eq!(answer(&success, from), None);
    let sip = b"OPTIONS sip:a SIP/2.0\r\n\r\n";
    assert_eq!(answer(sip, from), None);
    assert!(!looks_like_stun(sip));
    assert!(looks_like_stun(&binding_request([0; 12])));

    let good = binding_request([4; 12]);
    // Truncated, over-long, bad length field, no cookie, bits set on top.
    assert_eq!(Message::parse(&good[..19]), Err(StunError::Truncated));
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_eq!(Message::parse(&longer), Err(StunError::BadLength));
    let mut odd = good.clone();
    odd[3] = 2;
    assert_eq!(Message::parse(&odd), Err(StunError::BadLength));
    let mut cookie = good.clone();
    cookie[5] ^= 0xff;
    assert_eq!(Message::parse(&cookie), Err(StunError::NotStun));
    let mut top = good.clone();
    top[0] |= 0x80;
    assert_eq!(Message::parse(&top), Err(StunError::NotStun));
    // An attribute claiming more than there is.
    let mut overrun = good.clone();
    overrun[3] = 4;
    overrun.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
    assert_eq!(Message::parse(&overrun), Err(StunError::BadAttribute));
    // FINGERPRINT that is not last.
    let mut m = Message::new(BINDING, Class::Request, [5; 12]);
    m.attributes.push(Attribute {
        kind: attr::SOFTWARE,
        value: b"x".to_vec(),
    });
    let mut bytes = m.encode(true);
    bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = u16::from_be_bytes([bytes[2], bytes[3]]) + 4;
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(Message::parse(&bytes), Err(StunError::BadFingerprint));
    for b in [
        &good[..19],
        &longer[..],
        &odd[..],
        &cookie[..],
        &overrun[..],
        &bytes[..],
    ] {
        assert_eq!(answer(b, from), None);
    }
}

#[test]
fn encode_then_parse_round_trips() {
    let mut m = Message::new(0x0ABC, Class::Error, [6; 12]);
    for (kind, len) in [(0x8022u16, 0usize), (0x0006, 1), (0x0006, 4), (0x4000, 7)] {
        m.attributes.push(Attribute {
            kind,
            value: vec![0x5a; len],
        });
    }
    for fp in [false, true] {
        let again = Message::parse(&m.encode(fp)).unwrap();
        assert_eq!(again.method, m.method);
        assert_eq!(again.class, m.class);
        let mut attrs = again.attributes.clone();
        if fp {
            assert_eq!(attrs.pop().map(|a| a.kind), Some(attr::FINGERPRINT));
        }
        assert_eq!(attrs, m.attributes);
    }
}

#[test]
fn random_bytes_never_panic() {
    // A small deterministic generator: the fuzz target does the real work.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let seed = rfc5769_request();
    for i in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bytes = if i % 2 == 0 {
            seed.clone()
        } else {
            binding_request([i as u8; 12])
        };
        let n = (x % 4) as usize + 1;
        for k in 0..n {
            let pos = ((x >> (8 * k)) as usize) % (bytes.len() + 1);
            match (x >> (40 + k)) % 3 {
                0 if pos < bytes.len() => bytes[pos] ^= (x >> 24) as u8 | 1,
                1 => bytes.truncate(pos),
                _ => bytes.insert(pos.min(bytes.len()), (x >> 16) as u8),
            }
        }
        if let Some(reply) = answer(&bytes, from) {
            Message::parse(&reply).expect("every answer parses");
        }
    }
}
