//! Bad input must never bring the node down: a few hundred seeded mutations
//! of valid REGISTER, INVITE and OPTIONS requests over UDP and TCP (some TCP
//! connections cut or left half-written), then the node must still be alive,
//! answer OPTIONS over both transports and /healthz, and have rejected some
//! of the broken datagrams with 400.
//!
//! The seed is fixed so a failure can be replayed; set DOTS_FUZZ_SEED to try
//! another one.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const UDP_MESSAGES: usize = 300;
const TCP_CONNECTIONS: usize = 8;
const TCP_MESSAGES_PER_CONNECTION: usize = 25;

fn seed() -> u64 {
    std::env::var("DOTS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d075)
}

/// Valid requests to mutate, their Via pointing at `via_port` on `proto`.
fn valid_requests(node: &str, proto: &str, via_port: u16, n: usize) -> Vec<String> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let register = format!(
        "REGISTER sip:{node} SIP/2.0\r\n\
         Via: SIP/2.0/{proto} 127.0.0.1:{via_port};branch=z9hG4bKreg{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:fuzz{n}@127.0.0.1>;tag=f{n}\r\n\
         To: <sip:fuzz{n}@127.0.0.1>\r\n\
         Call-ID: reg-{n}@fuzz\r\n\
         CSeq: {n} REGISTER\r\n\
         Contact: <sip:fuzz{n}@127.0.0.1:9;transport=udp>;q=0.5;expires=120\r\n\
         Expires: 120\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let invite = format!(
        "INVITE sip:nobody{n}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{proto} 127.0.0.1:{via_port};branch=z9hG4bKinv{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Fuzz\" <sip:fuzz@127.0.0.1>;tag=i{n}\r\n\
         To: <sip:nobody{n}@127.0.0.1>\r\n\
         Call-ID: inv-{n}@fuzz\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:fuzz@127.0.0.1:{via_port}>\r\n\
         Record-Route: <sip:127.0.0.1:9;lr>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let options = format!(
        "OPTIONS sip:{node} SIP/2.0\r\n\
         Via: SIP/2.0/{proto} 127.0.0.1:{via_port};branch=z9hG4bKopt{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:fuzz@127.0.0.1>;tag=o{n}\r\n\
         To: <sip:{node}>\r\n\
         Call-ID: opt-{n}@fuzz\r\n\
         CSeq: 7 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    );
    vec![register, invite, options]
}

/// Requests with a well-formed Via but a missing or broken mandatory header:
/// a node can and should answer each of them with 400.
fn broken_requests(node: &str, via_port: u16, n: usize) -> Vec<Vec<u8>> {
    let base = valid_requests(node, "UDP", via_port, n).swap_remove(2);
    let without = |name: &str| -> Vec<u8> {
        base.split("\r\n")
            .filter(|l| !l.starts_with(name))
            .collect::<Vec<_>>()
            .join("\r\n")
            .into_bytes()
    };
    let replace = |from: &str, to: &str| base.replacen(from, to, 1).into_bytes();
    vec![
        without("Call-ID:"),
        without("CSeq:"),
        without("From:"),
        without("To:"),
        replace("CSeq: 7 OPTIONS", "CSeq: seven OPTIONS"),
        replace("CSeq: 7 OPTIONS", "CSeq: 7 INVITE"),
        replace("CSeq: 7 OPTIONS", "CSeq: 99999999999999999999999 OPTIONS"),
        replace("Max-Forwards: 70", "Max-Forwards: lots"),
        replace("Content-Length: 0", "Content-Length: -5"),
        replace("To: <sip:", "To: <<<"),
    ]
}

fn lines(msg: &[u8]) -> Vec<Vec<u8>> {
    msg.split(|&b| b == b'\n').map(|l| l.to_vec()).collect()
}

fn join_lines(ls: &[Vec<u8>]) -> Vec<u8> {
    ls.join(&b'\n')
}

/// One to three random mutations of `msg`.
fn mutate(rng: &mut StdRng, msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        if m.is_empty() {
            m.push(b'X');
        }
        match rng.random_range(0..11) {
            // flip bytes
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..m.len());
                    m[i] ^= rng.random_range(1..=255u8);
                }
            }
            // truncate
            1 => {
                let at = rng.random_range(0..m.len());
                m.truncate(at);
            }
            // duplicate a line
            2 => {
                let mut ls = lines(&m);
                let i = rng.random_range(0..ls.len());
                let l = ls[i].clone();
                ls.insert(i, l);
                m = join_lines(&ls);
            }
            // remove a line
            3 => {
                let mut ls = lines(&m);
                if ls.len() > 1 {
                    let i = rng.random_range(0..ls.len());
                    ls.remove(i);
                }
                m = join_lines(&ls);
            }
            // a huge or negative number in place of the first number of a line
            4 => {
                let mut ls = lines(&m);
                let i = rng.random_range(0..ls.len());
                let huge: &[u8] = match rng.random_range(0..5) {
                    0 => b"99999999999999999999999999999999",
                    1 => b"18446744073709551616",
                    2 => b"4294967296",
                    3 => b"-1",
                    _ => b"0x7fffffff",
                };
                let l = &ls[i];
                if let Some(s) = l.iter().position(|b| b.is_ascii_digit()) {
                    let e = s + l[s..].iter().take_while(|b| b.is_ascii_digit()).count();
                    let mut nl = l[..s].to_vec();
                    nl.extend_from_slice(huge);
                    nl.extend_from_slice(&l[e..]);
                    ls[i] = nl;
                }
                m = join_lines(&ls);
            }
            // junk bytes (NUL, high bytes, bare CR/LF, separators)
            5 => {
                let at = rng.random_range(0..=m.len());
                let junk: Vec<u8> = (0..rng.random_range(1..64))
                    .map(|_| match rng.random_range(0..6) {
                        0 => 0u8,
                        1 => b'\r',
                        2 => b'\n',
                        3 => b':',
                        4 => rng.random_range(0x80..=0xffu8),
                        _ => rng.random(),
                    })
                    .collect();
                m.splice(at..at, junk);
            }
            // very many or very long headers
            6 => {
                let pos = find(&m, b"\r\n").map(|p| p + 2).unwrap_or(0);
                let extra = if rng.random_bool(0.5) {
                    (0..rng.random_range(50..400))
                        .map(|i| format!("X-Junk-{i}: {}\r\n", "y".repeat(i % 40)))
                        .collect::<String>()
                } else {
                    format!("Subject: {}\r\n", "z".repeat(rng.random_range(1000..20000)))
                };
                m.splice(pos..pos, extra.into_bytes());
            }
            // a lying Content-Length
            7 => {
                let s = String::from_utf8_lossy(&m).into_owned();
                let v = match rng.random_range(0..4) {
                    0 => "0".to_string(),
                    1 => rng.random_range(1..100_000).to_string(),
                    2 => "99999999999999999999".to_string(),
                    _ => "abc".to_string(),
                };
                m = s
                    .replacen(
                        "Content-Length:",
                        &format!("Content-Length: {v}\r\nX-Was:"),
                        1,
                    )
                    .into_bytes();
            }
            // no end of headers
            8 => {
                if let Some(p) = find(&m, b"\r\n\r\n") {
                    m.drain(p..p + 2);
                }
            }
            // garbled request line
            9 => {
                let end = find(&m, b"\r\n").unwrap_or(m.len());
                let variants: [&[u8]; 6] = [
                    b"INVITE",
                    b"INVITE sip:",
                    b"REGISTER sip:x SIP/3.0",
                    b"OPTIONS  sip:127.0.0.1   SIP/2.0 extra",
                    b"sip:127.0.0.1 OPTIONS SIP/2.0",
                    b"SIP/2.0 200 OK",
                ];
                let v = variants[rng.random_range(0..variants.len())];
                m.splice(0..end, v.iter().copied());
            }
            // header folding and odd whitespace
            _ => {
                let s = String::from_utf8_lossy(&m).into_owned();
                m = match rng.random_range(0..3) {
                    0 => s.replacen("\r\nTo:", "\r\n  \tTo:", 1),
                    1 => s.replacen(": ", ":\r\n ", 2),
                    _ => s.replace("\r\n", "\n"),
                }
                .into_bytes();
            }
        }
    }
    m
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

type Counts = Arc<Mutex<BTreeMap<u16, usize>>>;

/// Counts the status codes of responses arriving on `sock` until `stop`.
fn collect_responses(sock: UdpSocket, stop: Arc<AtomicBool>) -> (Counts, thread::JoinHandle<()>) {
    let counts: Counts = Arc::default();
    let c = counts.clone();
    let h = thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if let Some(r) = SipResponse::parse(&buf[..n]) {
                    *c.lock().unwrap().entry(r.status).or_insert(0) += 1;
                }
            }
        }
    });
    (counts, h)
}

#[test]
fn node_survives_malformed_input() {
    let mut node = Node::start(NodeConfig::open());
    let addr = node.sip_addr();
    let seed = seed();
    eprintln!("malformed input seed: {seed} (DOTS_FUZZ_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);

    // ---- UDP ----
    let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind");
    let port = sock.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let (counts, collector) = collect_responses(sock.try_clone().expect("clone"), stop.clone());
    let mut sent = 0usize;
    for n in 0..4 {
        for m in broken_requests(&addr, port, 1000 + n) {
            let _ = sock.send_to(&m, &addr);
            sent += 1;
        }
    }
    for n in 0..UDP_MESSAGES {
        let seeds = valid_requests(&addr, "UDP", port, n);
        let base = &seeds[rng.random_range(0..seeds.len())];
        let m = mutate(&mut rng, base.as_bytes());
        let m = &m[..m.len().min(65_000)];
        let _ = sock.send_to(m, &addr);
        sent += 1;
        if n % 20 == 0 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    // Two oversized datagrams of junk.
    let big: Vec<u8> = (0..65_000).map(|_| rng.random()).collect();
    let _ = sock.send_to(&big, &addr);
    let _ = sock.send_to(&[0u8; 1], &addr);

    // ---- TCP ----
    let half_open = Mutex::new(Vec::new());
    thread::scope(|s| {
        for c in 0..TCP_CONNECTIONS {
            let mut crng = StdRng::seed_from_u64(seed ^ ((c as u64 + 1) * 0x9e37_79b9));
            let addr = addr.clone();
            let half_open = &half_open;
            s.spawn(move || {
                let Ok(mut conn) = TcpStream::connect(&addr) else {
                    return;
                };
                let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
                let _ = conn.set_read_timeout(Some(Duration::from_millis(10)));
                let local = conn.local_addr().map(|a| a.port()).unwrap_or(9);
                let mut sink = [0u8; 16_384];
                for n in 0..TCP_MESSAGES_PER_CONNECTION {
                    let seeds = valid_requests(&addr, "TCP", local, c * 100 + n);
                    let base = &seeds[crng.random_range(0..seeds.len())];
                    let m = if crng.random_bool(0.3) {
                        base.clone().into_bytes()
                    } else {
                        mutate(&mut crng, base.as_bytes())
                    };
                    if conn.write_all(&m).is_err() {
                        // The node closed the connection on bad framing:
                        // that is allowed; carry on with a new one.
                        match TcpStream::connect(&addr) {
                            Ok(nc) => {
                                conn = nc;
                                let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
                                let _ = conn.set_read_timeout(Some(Duration::from_millis(10)));
                            }
                            Err(_) => return,
                        }
                    }
                    // Drain whatever came back so the node never blocks on us.
                    let _ = conn.read(&mut sink);
                }
                let seeds = valid_requests(&addr, "TCP", local, c * 100 + 99);
                let invite = seeds[1].as_bytes();
                match c % 3 {
                    // Half a request, then keep the connection open.
                    0 => {
                        let _ = conn.write_all(&invite[..invite.len() / 2]);
                        half_open.lock().unwrap().push(conn);
                    }
                    // Headers promising a body that never comes.
                    1 => {
                        let _ = conn.write_all(
                            seeds[2]
                                .replace("Content-Length: 0", "Content-Length: 99999999")
                                .as_bytes(),
                        );
                        half_open.lock().unwrap().push(conn);
                    }
                    // Half a request, then close.
                    _ => {
                        let _ = conn.write_all(&invite[..invite.len() / 3]);
                        let _ = conn.shutdown(std::net::Shutdown::Both);
                    }
                }
            });
        }
    });
    // Idle connections that never send anything at all.
    let mut idle = Vec::new();
    for _ in 0..4 {
        if let Ok(c) = TcpStream::connect(&addr) {
            idle.push(c);
        }
    }

    // ---- the node is still there and still serves ----
    assert!(
        node.is_alive(),
        "the node died on malformed input (seed {seed})"
    );
    let udp = UdpClient::new();
    let r = udp.options(&addr);
    assert_eq!(
        r.as_ref().map(|r| r.status),
        Some(200),
        "OPTIONS over UDP after malformed input (seed {seed}): {r:?}"
    );
    let r = options_tcp(&addr);
    assert_eq!(
        r.as_ref().map(|r| r.status),
        Some(200),
        "OPTIONS over TCP after malformed input (seed {seed}): {r:?}"
    );
    assert_eq!(
        node.healthz().map(|(s, b)| (s, b.trim().to_string())),
        Some((200, "ok".to_string())),
        "/healthz after malformed input"
    );

    // Responses may still be on their way.
    let got_400 = || counts.lock().unwrap().get(&400).copied().unwrap_or(0) > 0;
    wait_until(Duration::from_secs(10), got_400);
    stop.store(true, Ordering::Relaxed);
    collector.join().expect("collector");
    let counts = counts.lock().unwrap().clone();
    eprintln!("UDP: {sent} datagrams sent, responses by status: {counts:?}");
    assert!(
        counts.get(&400).copied().unwrap_or(0) > 0,
        "no 400 for any of {sent} malformed datagrams (responses: {counts:?}, seed {seed})"
    );
    assert!(node.is_alive(), "the node died after the run (seed {seed})");
    drop(half_open);
    drop(idle);
    // A fresh request after the half-open connections went away.
    let r = udp.options(&addr);
    assert_eq!(r.map(|r| r.status), Some(200), "OPTIONS at the end");
}
