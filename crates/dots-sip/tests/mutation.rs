//! Bounded mutation testing over a seed corpus (RFC 4475 messages plus
//! typical traffic). Properties checked on every mutant:
//!
//! * the parsers never panic;
//! * whatever parses survives serialisation: the bytes parse again, as a
//!   datagram and on a stream, to the same method/URI or status, headers
//!   and body (Content-Length aside, which serialisation rewrites);
//! * on a stream, any split of a concatenation of messages yields the same
//!   messages as parsing them one by one.

use std::panic::{catch_unwind, AssertUnwindSafe};

use dots_sip::{parse_datagram, parse_stream, Message, ParseErrorKind, SipMessage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ITERATIONS: usize = 6000;

/// `DOTS_SIP_MUTATION_SEED` and `DOTS_SIP_MUTATION_ITERATIONS` override the
/// fixed seed and iteration count, for longer local runs.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const TYPICAL: &[&str] = &[
    "REGISTER sip:dots.example SIP/2.0\r\n\
     Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK776asdhds\r\n\
     Max-Forwards: 70\r\n\
     From: \"Alice \\\"A\\\" Liddell\" <sip:alice@dots.example>;tag=1928301774\r\n\
     To: <sip:alice@dots.example>\r\n\
     Call-ID: a84b4c76e66710@pc33.example\r\n\
     CSeq: 314159 REGISTER\r\n\
     Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600;q=0.7, \
     \"Desk, phone\" <sips:alice@[2001:db8::10]:5061>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"\r\n\
     Authorization: Digest username=\"alice\", realm=\"dots.example\", nonce=\"dcd98b\", \
     uri=\"sip:dots.example\", response=\"6629fae49393a05397450978507c4ef1\", algorithm=SHA-256\r\n\
     Supported: path, outbound, gruu\r\n\
     Expires: 3600\r\n\
     Content-Length: 0\r\n\r\n",
    "INVITE sip:bob@dots.example;user=phone SIP/2.0\r\n\
     v: SIP/2.0/TLS client.example:5061;branch=z9hG4bK74bf9,\r\n\
     \x20SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKhjhs8ass877\r\n\
     Max-Forwards: 69\r\n\
     Route: <sip:p1.example;lr>, <sip:p2.example;lr;transport=tcp>\r\n\
     Record-Route: <sip:rr.example;lr>\r\n\
     f: Alice <sip:alice@dots.example>;tag=9fxced76sl\r\n\
     t: tel:+1-555-0100;phone-context=example.com\r\n\
     i: 3848276298220188511@client.example\r\n\
     CSeq: 1 INVITE\r\n\
     m: <sip:alice@client.example;transport=tls;ob>\r\n\
     Subject: lunch?\r\n\
     c: application/sdp\r\n\
     P-Extension: \"quoted, with \\\\ escapes\"; odd=1\r\n\
     l: 117\r\n\r\n\
     v=0\r\no=alice 2890844526 2890844526 IN IP4 client.example\r\ns=-\r\nc=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\n",
    "SIP/2.0 200 OK\r\n\
     Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8;received=192.0.2.3, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK77ef4c2312983.1\r\n\
     To: Bob <sip:bob@dots.example>;tag=a6c85cf\r\n\
     From: Alice <sip:alice@dots.example>;tag=1928301774\r\n\
     Call-ID: a84b4c76e66710\r\n\
     CSeq: 314159 INVITE\r\n\
     Contact: <sip:bob@192.0.2.4>\r\n\
     Record-Route: <sip:rr2.example;lr>,<sip:rr1.example;lr>\r\n\
     Content-Type: text/plain\r\n\
     Content-Length: 5\r\n\r\nhello",
    "SIP/2.0 401 Unauthorized\r\n\
     Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
     From: <sip:alice@dots.example>;tag=1\r\n\
     To: <sip:alice@dots.example>;tag=2\r\n\
     Call-ID: x\r\n\
     CSeq: 2 REGISTER\r\n\
     WWW-Authenticate: Digest realm=\"dots.example\", qop=\"auth\", nonce=\"a,b\", algorithm=MD5\r\n\
     Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
     Content-Length: 0\r\n\r\n",
    "OPTIONS sips:node.example:5061 SIP/2.0\r\n\
     Via: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKopt\r\n\
     Max-Forwards: 0\r\n\
     From: sip:ping@node.example;tag=p\r\n\
     To: sip:node.example\r\n\
     Call-ID: ping-1\r\n\
     CSeq: 7 OPTIONS\r\n\
     Accept: application/sdp\r\n\r\n",
];

fn seeds() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/torture");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut out: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    out.extend(TYPICAL.iter().map(|m| m.as_bytes().to_vec()));
    out
}

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n ",
    b"\r\n\t",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b",",
    b";",
    b":",
    b"<",
    b">",
    b"\"",
    b"\\",
    b"@",
    b"%",
    b"%0",
    b"%00",
    b"?",
    b"=",
    b"/",
    b"[",
    b"]",
    b"[::1]",
    b"*",
    b"SIP/2.0",
    b"SIP/3.0",
    b"sip:",
    b"sips:",
    b"tel:",
    b"Via: ",
    b"Contact: ",
    b"l: ",
    b"Content-Length: ",
    b"4294967296",
    b"99999999999999999999999",
    b"-1",
    b"0",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xe2\x82\xac",
    b";branch=z9hG4bK",
    b";tag=",
    b"\"\\\"\"",
];

fn lines(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push((start, data.len()));
    }
    out
}

fn mutate(rng: &mut StdRng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = data.len();
    let pos = if len == 0 {
        0
    } else {
        rng.random_range(0..len)
    };
    match rng.random_range(0..12) {
        0 if len > 0 => data[pos] = rng.random(),
        1 if len > 0 => data[pos] ^= 1 << rng.random_range(0..8),
        2 => {
            let n = rng.random_range(1..8);
            for _ in 0..n {
                data.insert(pos, rng.random());
            }
        }
        3 => {
            let tok = INTERESTING[rng.random_range(0..INTERESTING.len())];
            data.splice(pos..pos, tok.iter().copied());
        }
        4 if len > 0 => {
            let end = (pos + rng.random_range(1..16)).min(len);
            data.drain(pos..end);
        }
        5 => {
            // Duplicate a line.
            let ls = lines(data);
            if !ls.is_empty() {
                let (s, e) = ls[rng.random_range(0..ls.len())];
                let line = data[s..e].to_vec();
                data.splice(e..e, line);
            }
        }
        6 => {
            // Swap two lines.
            let ls = lines(data);
            if ls.len() > 2 {
                let a = rng.random_range(0..ls.len());
                let b = rng.random_range(0..ls.len());
                let (a, b) = (a.min(b), a.max(b));
                if a != b {
                    let la = data[ls[a].0..ls[a].1].to_vec();
                    let lb = data[ls[b].0..ls[b].1].to_vec();
                    data.splice(ls[b].0..ls[b].1, la);
                    data.splice(ls[a].0..ls[a].1, lb);
                }
            }
        }
        7 => data.truncate(pos),
        8 => {
            // Splice: our prefix and another message's suffix.
            let other = &corpus[rng.random_range(0..corpus.len())];
            let cut = rng.random_range(0..=other.len());
            data.truncate(pos);
            data.extend_from_slice(&other[cut..]);
        }
        9 => {
            // Replace a run of digits with a huge or odd number.
            if let Some(start) = (pos..len).find(|&i| data[i].is_ascii_digit()) {
                let end = (start..len)
                    .find(|&i| !data[i].is_ascii_digit())
                    .unwrap_or(len);
                let big: &[u8] = match rng.random_range(0..5) {
                    0 => b"18446744073709551616",
                    1 => b"4294967295",
                    2 => b"2147483648",
                    3 => b"000000000000000000001",
                    _ => b"65536",
                };
                data.splice(start..end, big.iter().copied());
            }
        }
        10 => {
            let tok: &[u8] = [&b"\r"[..], b"\n", b"\r\n", b"\r\n\r\n"][rng.random_range(0..4)];
            data.splice(pos..pos, tok.iter().copied());
        }
        _ => {
            // Change the case of a byte (header names, methods, schemes).
            if len > 0 {
                data[pos] = if data[pos].is_ascii_lowercase() {
                    data[pos].to_ascii_uppercase()
                } else {
                    data[pos].to_ascii_lowercase()
                };
            }
        }
    }
}

/// The round-trip property for one input; returns the message if it parsed.
fn check(input: &[u8]) -> Option<Message> {
    let msg = parse_datagram(input).ok()?;
    let bytes = msg.to_bytes();
    let again = parse_datagram(&bytes).unwrap_or_else(|e| {
        panic!(
            "re-serialised message rejected ({e}):\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert!(
        msg.eq_ignoring_content_length(&again),
        "round trip changed the message:\n{msg:?}\n{again:?}"
    );
    assert_eq!(again.to_bytes(), bytes, "serialisation is not stable");
    let (streamed, used) = parse_stream(&bytes).expect("stream parse of serialised message");
    assert_eq!(used, bytes.len());
    assert!(msg.eq_ignoring_content_length(&streamed));
    // Typed getters never panic on a parsed message.
    let _ = (msg.vias(), msg.from(), msg.to(), msg.cseq(), msg.expires());
    Some(msg)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn mutants_never_panic_and_round_trip() {
    let corpus = seeds();
    let mut rng = StdRng::seed_from_u64(env_or("DOTS_SIP_MUTATION_SEED", 0x5eed_d075));
    let iterations = env_or("DOTS_SIP_MUTATION_ITERATIONS", ITERATIONS as u64) as usize;
    let mut parsed = 0;
    let mut rejected = 0;
    for i in 0..iterations {
        let mut data = corpus[i % corpus.len()].clone();
        for _ in 0..rng.random_range(1..3) {
            mutate(&mut rng, &mut data, &corpus);
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let ok = check(&data).is_some();
            // The stream parser must not panic either, complete or not.
            let _ = parse_stream(&data);
            let cut = data.len() / 2;
            let _ = parse_stream(&data[..cut]);
            ok
        }));
        match outcome {
            Ok(true) => parsed += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("iteration {i}: failure on input {}", hex(&data)),
        }
    }
    // The mutations must leave a fair share of messages valid, or the
    // round-trip property is not exercised.
    assert!(parsed > iterations / 10, "only {parsed} mutants parsed");
    assert!(
        rejected > iterations / 10,
        "only {rejected} mutants rejected"
    );
}

#[test]
fn seeds_that_should_parse_do() {
    let n = seeds().iter().filter(|s| check(s).is_some()).count();
    // 13 valid RFC 4475 messages plus the typical ones.
    assert_eq!(n, 13 + TYPICAL.len());
}

/// Feeds `wire` to a stream parser in the chunks given by `cuts`.
fn stream_in_chunks(wire: &[u8], cuts: &[usize]) -> Vec<Message> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut prev = 0;
    for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
        buf.extend_from_slice(&wire[prev..cut]);
        prev = cut;
        loop {
            match parse_stream(&buf) {
                Ok((msg, used)) => {
                    out.push(msg);
                    buf.drain(..used);
                }
                Err(e) if e.kind == ParseErrorKind::Incomplete => break,
                Err(e) => panic!("stream error {e} with {:?}", String::from_utf8_lossy(&buf)),
            }
        }
    }
    assert!(
        buf.iter().all(|&b| b == b'\r' || b == b'\n'),
        "left over: {:?}",
        String::from_utf8_lossy(&buf)
    );
    out
}

#[test]
fn stream_splits_yield_the_same_messages() {
    let corpus = seeds();
    let mut rng = StdRng::seed_from_u64(42);
    // Messages to send: valid seeds and valid mutants, serialised.
    let mut pool: Vec<Message> = corpus
        .iter()
        .filter_map(|s| parse_datagram(s).ok())
        .collect();
    while pool.len() < 60 {
        let mut data = corpus[rng.random_range(0..corpus.len())].clone();
        mutate(&mut rng, &mut data, &corpus);
        if let Ok(m) = parse_datagram(&data) {
            pool.push(m);
        }
    }
    for _ in 0..300 {
        let n = rng.random_range(1..6);
        let msgs: Vec<&Message> = (0..n)
            .map(|_| &pool[rng.random_range(0..pool.len())])
            .collect();
        let mut wire = Vec::new();
        for m in &msgs {
            if rng.random_bool(0.3) {
                wire.extend_from_slice(b"\r\n\r\n"); // keep-alive
            }
            wire.extend_from_slice(&m.to_bytes());
        }
        let mut cuts: Vec<usize> = (0..rng.random_range(0..12))
            .map(|_| rng.random_range(0..=wire.len()))
            .collect();
        cuts.sort_unstable();
        let got = stream_in_chunks(&wire, &cuts);
        assert_eq!(got.len(), msgs.len());
        for (g, m) in got.iter().zip(&msgs) {
            // Each message parsed alone gives the same result.
            let alone = parse_datagram(&m.to_bytes()).unwrap();
            assert_eq!(g, &alone);
            assert!(g.eq_ignoring_content_length(m));
        }
        // Byte by byte, too, now and then.
        if rng.random_bool(0.05) {
            let every: Vec<usize> = (1..wire.len()).collect();
            assert_eq!(stream_in_chunks(&wire, &every).len(), msgs.len());
        }
    }
}
