//! Registrar behaviour that SIPp cannot check by itself, with a raw UDP
//! client: several contacts in one REGISTER, per-contact expiry, removing
//! one contact, and a query (REGISTER without Contact).

mod common;

use common::*;
use std::time::Duration;

fn register(
    c: &UdpClient,
    node: &Node,
    user: &str,
    call_id: &str,
    cseq: u32,
    contacts: &[&str],
) -> SipResponse {
    let contact_lines: String = contacts
        .iter()
        .map(|c| format!("Contact: {c}\r\n"))
        .collect();
    let msg = format!(
        "REGISTER sip:{LOCALHOST} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {LOCALHOST}:{port};branch=z9hG4bK{b};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{LOCALHOST}>;tag={t}\r\n\
         To: <sip:{user}@{LOCALHOST}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         {contact_lines}\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        port = c.port,
        b = token(),
        t = token(),
    );
    c.request(&node.sip_addr(), &msg, call_id, Duration::from_secs(10))
        .expect("no final response to REGISTER")
}

/// The bindings listed in a 200 to REGISTER: (port of the contact URI, expires).
fn bindings(r: &SipResponse) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for h in r.headers("Contact", Some("m")) {
        for c in h.split(", <").map(|c| c.trim_start_matches('<')) {
            let uri = c.split('>').next().unwrap_or("");
            let port = uri
                .rsplit(':')
                .next()
                .and_then(|p| p.split(';').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let expires = c
                .split('>')
                .nth(1)
                .unwrap_or("")
                .split(';')
                .find_map(|p| p.trim().strip_prefix("expires="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX);
            out.push((port, expires));
        }
    }
    out.sort();
    out
}

#[test]
fn several_contacts_per_aor() {
    let node = Node::start(NodeConfig::open());
    let c = UdpClient::new();
    let call_id = token();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());

    // Two contacts in one request (one header each, with q and expires).
    let r = register(
        &c,
        &node,
        "dana",
        &call_id,
        1,
        &[
            &format!("<sip:dana@{LOCALHOST}:{p1}>;q=0.9"),
            &format!("<sip:dana@{LOCALHOST}:{p2}>;q=0.1;expires=120"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let b = bindings(&r);
    assert_eq!(b.len(), 2, "two bindings expected:\n{}", r.text);
    let e1 = b.iter().find(|(p, _)| *p == p1).map(|(_, e)| *e);
    let e2 = b.iter().find(|(p, _)| *p == p2).map(|(_, e)| *e);
    assert!(
        matches!(e1, Some(e) if e > 120 && e <= 600),
        "expiry of the first contact (Expires: 600):\n{}",
        r.text
    );
    assert!(
        matches!(e2, Some(e) if e > 0 && e <= 120),
        "expiry of the second contact (expires=120):\n{}",
        r.text
    );

    // A third one, from another device (another Call-ID): all three listed.
    let r = register(
        &c,
        &node,
        "dana",
        &token(),
        1,
        &[&format!("<sip:dana@{LOCALHOST}:{p3}>")],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        bindings(&r).len(),
        3,
        "three bindings expected:\n{}",
        r.text
    );

    // Remove the first one.
    let r = register(
        &c,
        &node,
        "dana",
        &call_id,
        2,
        &[&format!("<sip:dana@{LOCALHOST}:{p1}>;expires=0")],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let ports: Vec<u16> = bindings(&r).iter().map(|(p, _)| *p).collect();
    assert!(
        !ports.contains(&p1) && ports.contains(&p2) && ports.contains(&p3),
        "after removing {p1}, {p2} and {p3} should be left:\n{}",
        r.text
    );

    // A query shows the same.
    let q = c.register_query(&node.sip_addr(), "dana").expect("query");
    assert_eq!(q.status, 200, "{}", q.text);
    let qports: Vec<u16> = bindings(&q).iter().map(|(p, _)| *p).collect();
    assert_eq!(qports.len(), 2, "query:\n{}", q.text);
    assert!(
        qports.contains(&p2) && qports.contains(&p3),
        "query:\n{}",
        q.text
    );

    // A REGISTER on the same Call-ID whose CSeq is not higher than the one
    // that created the binding of p2 (1) is stale: whether the node refuses
    // it (RFC 3261 10.3 step 7) or ignores its contact (as Kamailio does),
    // it must not remove the binding.
    let r = register(
        &c,
        &node,
        "dana",
        &call_id,
        1,
        &[&format!("<sip:dana@{LOCALHOST}:{p2}>;expires=0")],
    );
    assert!(
        r.status >= 400 || r.status == 200,
        "stale REGISTER:\n{}",
        r.text
    );
    let q = c.register_query(&node.sip_addr(), "dana").expect("query");
    let qports: Vec<u16> = bindings(&q).iter().map(|(p, _)| *p).collect();
    assert!(
        qports.contains(&p2) && qports.contains(&p3),
        "a stale REGISTER (old CSeq) removed a binding:\n{}",
        q.text
    );
}
