//! Memory per registration, measured in-process: N distinct AoRs register one
//! contact each through `Engine::handle_message`, exactly as the REGISTERs of
//! `bench/memory.sh` do (SIPp's `register.xml`, UDP, 4,000 REGISTER/s of
//! simulated time, so that about 128,000 server transactions are alive at
//! the end, as in the benchmark). The resident set size of the process is
//! read from `/proc/self/statm` before, after the load, and again once every
//! transaction has timed out.
//!
//! Ignored by default (it takes a while and wants a release build):
//!
//! ```sh
//! cargo test -p dots-proxy --release --test memory -- --ignored --nocapture
//! MEM_N=1000000 MEM_OVERLAY=1 cargo test -p dots-proxy --release --test memory -- --ignored --nocapture
//! ```
//!
//! Under `heaptrack` the same binary gives the allocation sites.

use std::net::SocketAddr;

use dots_proxy::{Engine, EngineConfig};
use dots_sip::{parse_datagram, Peer, TransportKind};

const T0: u64 = 1_700_000_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn register(n: usize, port: u16) -> Vec<u8> {
    format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{n}-1-0\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:m{n:07}@127.0.0.1>;tag=4242SIPpTag00{n}\r\n\
         To: <sip:m{n:07}@127.0.0.1>\r\n\
         Call-ID: {n}-4242@127.0.0.1\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:m{n:07}@127.0.0.1:{port};transport=UDP>\r\n\
         Expires: 3600\r\n\
         User-Agent: sipp-anchor\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn run_timers(engine: &mut Engine, now: u64) {
    while engine.poll_timeout().is_some_and(|t| t <= now) {
        engine.handle_timeout(now);
    }
    while engine.poll_transmit().is_some() {}
}

#[test]
#[ignore = "measurement: run with --release -- --ignored --nocapture"]
fn memory_per_registration() {
    let n: usize = std::env::var("MEM_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let overlay = std::env::var("MEM_OVERLAY").is_ok_and(|v| v == "1");
    let node: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let mut config = EngineConfig::for_addr(node);
    config.open = true;
    let mut engine = Engine::new(config, 1);
    if overlay {
        engine.enable_overlay(b"memory-test".to_vec());
    }
    let source = Peer::new(TransportKind::Udp, "127.0.0.1:5061".parse().unwrap());
    // REGISTERs per second of simulated time: the rate decides how many
    // answered transactions wait for Timer J at the end (all of them when
    // the load takes less than 32 s).
    let rate: u64 = std::env::var("MEM_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(4_000);
    let rss0 = rss_bytes();
    let mut now = T0;
    let mut changes = 0usize;
    for i in 1..=n {
        now = T0 + (i as u64) * 1000 / rate;
        run_timers(&mut engine, now);
        let msg = parse_datagram(&register(i, 5061)).expect("REGISTER parses");
        engine.handle_message(now, msg, source);
        while engine.poll_transmit().is_some() {}
        changes += engine.drain_binding_changes().len();
        if overlay {
            engine.drain_presence_changes();
        }
    }
    let rss1 = rss_bytes();
    let (servers, clients) = engine.transactions();
    let (aors, contacts) = engine.registrations();
    assert_eq!(contacts, n);
    assert_eq!(aors, n);
    assert_eq!(changes, n);
    // Let every transaction time out (Timer J is 32 s).
    for step in 1..=70 {
        run_timers(&mut engine, now + step * 1000);
    }
    let rss2 = rss_bytes();
    let (servers2, _) = engine.transactions();
    assert_eq!(engine.registrations().1, n);
    println!(
        "size_of: Binding {} B, Peer {} B, Request {} B",
        std::mem::size_of::<dots_registrar::Binding>(),
        std::mem::size_of::<Peer>(),
        std::mem::size_of::<dots_sip::Request>(),
    );
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n as f64;
    println!(
        "{n} registrations (overlay {overlay}): RSS {} MiB -> {} MiB = {:.0} B per contact \
         with {servers} server / {clients} client transactions alive; \
         after they time out ({servers2} left): {} MiB = {:.0} B per contact",
        rss0 >> 20,
        rss1 >> 20,
        per(rss0, rss1),
        rss2 >> 20,
        per(rss0, rss2),
    );
}
