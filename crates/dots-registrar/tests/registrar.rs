//! REGISTER processing and the location service, on simulated time.

use dots_registrar::{Binding, Change, Registrar, RegistrarConfig};
use dots_sip::{parse_datagram, HeaderName, Message, Peer, Request, Response, TransportKind};

const AOR: &str = "sip:alice@example.com";
const T0: u64 = 1_700_000_000_000;

fn source() -> Peer {
    Peer::new(TransportKind::Udp, "192.0.2.10:5060".parse().unwrap())
}

fn register(call_id: &str, cseq: u32, contacts: &[&str], extra: &[&str]) -> Request {
    let mut text = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{call_id}{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:alice@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n"
    );
    for c in contacts {
        text.push_str(&format!("Contact: {c}\r\n"));
    }
    for h in extra {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    match parse_datagram(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("test request did not parse: {other:?}"),
    }
}

fn registrar() -> Registrar {
    Registrar::new(RegistrarConfig::default())
}

fn send(r: &mut Registrar, now: u64, req: &Request) -> Response {
    r.handle_register(now, req, AOR, source())
}

fn contacts(resp: &Response) -> Vec<&str> {
    resp.headers.get_all(HeaderName::Contact).collect()
}

fn uris(r: &Registrar, now: u64) -> Vec<String> {
    r.location
        .lookup(AOR, now)
        .into_iter()
        .map(|b| b.contact_uri.clone())
        .collect()
}

#[test]
fn add_then_query() {
    let mut r = registrar();
    let resp = send(
        &mut r,
        T0,
        &register(
            "c1",
            1,
            &["\"Alice\" <sip:alice@192.0.2.10:5060;transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\";reg-id=1"],
            &["Expires: 600", "User-Agent: phone/1.0", "Path: <sip:edge.example.com;lr>", "Supported: path, outbound"],
        ),
    );
    assert_eq!(resp.code, 200);
    assert_eq!(
        contacts(&resp),
        ["\"Alice\" <sip:alice@192.0.2.10:5060;transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\";reg-id=1;expires=600"]
    );
    assert_eq!(
        resp.headers.get(HeaderName::Date),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    assert_eq!(
        resp.headers.get(HeaderName::Path),
        Some("<sip:edge.example.com;lr>")
    );
    assert_eq!(resp.headers.get(HeaderName::Require), Some("outbound"));

    let b = r.location.lookup(AOR, T0)[0].clone();
    assert_eq!(
        b,
        Binding {
            aor: AOR.into(),
            contact: "\"Alice\" <sip:alice@192.0.2.10:5060;transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\";reg-id=1".into(),
            contact_uri: "sip:alice@192.0.2.10:5060;transport=tcp".into(),
            q: 1000,
            expires_at: T0 + 600_000,
            call_id: "c1".into(),
            cseq: 1,
            source: Some(source()),
            path: vec!["<sip:edge.example.com;lr>".into()],
            user_agent: Some("phone/1.0".into()),
            instance: Some("<urn:uuid:00000000-0000-0000-0000-000000000001>".into()),
            reg_id: Some(1),
        }
    );
    assert_eq!(r.location.drain_changes(), vec![Change::Upsert(b)]);

    // A query 100 s later lists the binding with the time left and changes nothing.
    let resp = send(&mut r, T0 + 100_000, &register("c9", 1, &[], &[]));
    assert_eq!(resp.code, 200);
    assert_eq!(contacts(&resp).len(), 1);
    assert!(contacts(&resp)[0].ends_with(";expires=500"));
    assert!(r.location.drain_changes().is_empty());
}

#[test]
fn path_is_stored_always_and_echoed_when_supported() {
    let mut r = registrar();
    let resp = send(
        &mut r,
        T0,
        &register(
            "c1",
            1,
            &["<sip:alice@192.0.2.10>"],
            &["Path: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>"],
        ),
    );
    assert_eq!(resp.code, 200);
    assert_eq!(resp.headers.count(HeaderName::Path), 0);
    assert_eq!(
        r.location.lookup(AOR, T0)[0].path,
        ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    let resp = send(
        &mut r,
        T0,
        &register(
            "c1",
            2,
            &["<sip:alice@192.0.2.10>"],
            &["Path: <sip:p1.example.com;lr>", "Supported: path"],
        ),
    );
    assert_eq!(
        resp.headers.get_all(HeaderName::Path).collect::<Vec<_>>(),
        ["<sip:p1.example.com;lr>"]
    );
    assert_eq!(
        r.location.lookup(AOR, T0)[0].path,
        ["<sip:p1.example.com;lr>"]
    );
    // The parser refuses a bad Path already; one built by hand is refused here.
    let mut req = register("c1", 3, &["<sip:alice@192.0.2.10>"], &[]);
    req.headers.push(HeaderName::Path, "garbage");
    assert_eq!(send(&mut r, T0, &req).code, 400);
}

#[test]
fn query_of_unknown_aor_is_empty_200() {
    let mut r = registrar();
    let resp = send(&mut r, T0, &register("c1", 1, &[], &[]));
    assert_eq!(resp.code, 200);
    assert!(contacts(&resp).is_empty());
    assert_eq!(r.location.aor_count(), 0);
}

#[test]
fn refresh_replaces_the_binding() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 1, &["<sip:alice@192.0.2.10>"], &["Expires: 600"]),
    );
    r.location.drain_changes();
    // Same URI written differently (host case) is the same binding (RFC 3261 §19.1.4).
    let resp = send(
        &mut r,
        T0 + 300_000,
        &register(
            "c1",
            2,
            &["<sip:alice@192.0.2.10>;expires=900"],
            &["Expires: 600"],
        ),
    );
    assert_eq!(resp.code, 200);
    assert_eq!(contacts(&resp), ["<sip:alice@192.0.2.10>;expires=900"]);
    assert_eq!(r.location.contact_count(), 1);
    let changes = r.location.drain_changes();
    assert_eq!(changes.len(), 1);
    match &changes[0] {
        Change::Upsert(b) => {
            assert_eq!(b.cseq, 2);
            assert_eq!(b.expires_at, T0 + 300_000 + 900_000);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn equivalent_uri_with_other_text_moves_the_key() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 1, &["<sip:alice@Host.Example.com>"], &[]),
    );
    r.location.drain_changes();
    send(
        &mut r,
        T0 + 1000,
        &register("c2", 1, &["<sip:alice@host.example.com>"], &[]),
    );
    assert_eq!(uris(&r, T0 + 1000), ["sip:alice@host.example.com"]);
    assert_eq!(r.location.contact_count(), 1);
    let changes = r.location.drain_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    // Hosts are lower-cased by the parser, so both spellings serialise alike.
    assert!(matches!(&changes[0], Change::Upsert(b) if b.call_id == "c2"));
}

#[test]
fn remove_with_expires_zero() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register(
            "c1",
            1,
            &["<sip:alice@192.0.2.10>", "<sip:alice@198.51.100.7>"],
            &[],
        ),
    );
    r.location.drain_changes();
    let resp = send(
        &mut r,
        T0 + 1000,
        &register("c1", 2, &["<sip:alice@192.0.2.10>;expires=0"], &[]),
    );
    assert_eq!(resp.code, 200);
    assert_eq!(contacts(&resp), ["<sip:alice@198.51.100.7>;expires=3599"]);
    assert_eq!(
        r.location.drain_changes(),
        vec![Change::Remove {
            aor: AOR.into(),
            contact_uri: "sip:alice@192.0.2.10".into()
        }]
    );
    // Expires header 0 applies to contacts without a parameter.
    let resp = send(
        &mut r,
        T0 + 2000,
        &register("c1", 3, &["<sip:alice@198.51.100.7>"], &["Expires: 0"]),
    );
    assert_eq!(resp.code, 200);
    assert!(contacts(&resp).is_empty());
    assert_eq!(r.location.aor_count(), 0);
    assert_eq!(r.location.contact_count(), 0);
    assert_eq!(r.location.drain_changes().len(), 1);
    // Removing what is not there is fine and changes nothing.
    let resp = send(
        &mut r,
        T0 + 3000,
        &register("c1", 4, &["<sip:alice@203.0.113.1>;expires=0"], &[]),
    );
    assert_eq!(resp.code, 200);
    assert!(r.location.drain_changes().is_empty());
}

#[test]
fn star_removes_everything() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register(
            "c1",
            1,
            &["<sip:alice@192.0.2.10>", "<sip:alice@198.51.100.7>"],
            &[],
        ),
    );
    send(
        &mut r,
        T0,
        &register("c2", 1, &["<sip:alice@203.0.113.5>"], &[]),
    );
    r.location.drain_changes();
    let resp = send(
        &mut r,
        T0 + 1000,
        &register("c3", 1, &["*"], &["Expires: 0"]),
    );
    assert_eq!(resp.code, 200);
    assert!(contacts(&resp).is_empty());
    assert_eq!(r.location.contact_count(), 0);
    let changes = r.location.drain_changes();
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().all(|c| matches!(c, Change::Remove { .. })));
}

#[test]
fn star_rules() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 1, &["<sip:alice@192.0.2.10>"], &[]),
    );
    r.location.drain_changes();
    // Without Expires: 0, with a non-zero Expires, or with another contact: 400.
    for req in [
        register("c2", 1, &["*"], &[]),
        register("c2", 2, &["*"], &["Expires: 10"]),
        register("c2", 3, &["*", "<sip:alice@192.0.2.10>"], &["Expires: 0"]),
        register("c2", 4, &["*, <sip:alice@192.0.2.10>"], &["Expires: 0"]),
    ] {
        assert_eq!(send(&mut r, T0, &req).code, 400);
    }
    assert_eq!(r.location.contact_count(), 1);
    assert!(r.location.drain_changes().is_empty());
    // Same Call-ID, CSeq not higher: the binding is not removed.
    let resp = send(&mut r, T0, &register("c1", 1, &["*"], &["Expires: 0"]));
    assert_eq!(resp.code, 200);
    assert_eq!(contacts(&resp).len(), 1);
}

#[test]
fn interval_too_brief() {
    let mut r = registrar();
    for req in [
        register("c1", 1, &["<sip:alice@192.0.2.10>"], &["Expires: 30"]),
        register(
            "c1",
            2,
            &["<sip:alice@192.0.2.10>;expires=59"],
            &["Expires: 600"],
        ),
        // One brief contact refuses the whole request.
        register(
            "c1",
            3,
            &["<sip:alice@192.0.2.10>", "<sip:alice@192.0.2.11>;expires=1"],
            &[],
        ),
    ] {
        let resp = send(&mut r, T0, &req);
        assert_eq!(resp.code, 423);
        assert_eq!(resp.reason, "Interval Too Brief");
        assert_eq!(resp.headers.get(HeaderName::MinExpires), Some("60"));
    }
    assert_eq!(r.location.contact_count(), 0);
    assert!(r.location.drain_changes().is_empty());
    // Exactly the minimum is fine, and 0 is a removal, not too brief.
    assert_eq!(
        send(
            &mut r,
            T0,
            &register("c1", 4, &["<sip:alice@192.0.2.10>;expires=60"], &[])
        )
        .code,
        200
    );
    assert_eq!(
        send(
            &mut r,
            T0,
            &register("c1", 5, &["<sip:alice@192.0.2.10>;expires=0"], &[])
        )
        .code,
        200
    );
}

#[test]
fn expiry_defaults_param_wins_and_max_clamp() {
    let mut r = registrar();
    r.config.default_expires = 1800;
    send(&mut r, T0, &register("c1", 1, &["<sip:a@192.0.2.1>"], &[]));
    send(
        &mut r,
        T0,
        &register(
            "c2",
            1,
            &["<sip:b@192.0.2.1>;expires=120"],
            &["Expires: 900"],
        ),
    );
    send(
        &mut r,
        T0,
        &register("c3", 1, &["<sip:c@192.0.2.1>"], &["Expires: 900"]),
    );
    send(
        &mut r,
        T0,
        &register("c4", 1, &["<sip:d@192.0.2.1>;expires=86400"], &[]),
    );
    send(
        &mut r,
        T0,
        &register("c5", 1, &["<sip:e@192.0.2.1>"], &["Expires: 4294967296"]),
    );
    let at = |user: &str| {
        r.location
            .all()
            .find(|b| b.contact_uri == format!("sip:{user}@192.0.2.1"))
            .unwrap()
            .expires_at
    };
    assert_eq!(at("a"), T0 + 1_800_000);
    assert_eq!(at("b"), T0 + 120_000);
    assert_eq!(at("c"), T0 + 900_000);
    assert_eq!(at("d"), T0 + 3_600_000);
    assert_eq!(at("e"), T0 + 3_600_000);
}

#[test]
fn multiple_contacts_ordered_by_q_then_recency() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register(
            "c1",
            1,
            &[
                "<sip:alice@192.0.2.1>;q=0.5",
                "<sip:alice@192.0.2.2>;q=1.0, <sip:alice@192.0.2.3>;q=0.7",
            ],
            &[],
        ),
    );
    send(
        &mut r,
        T0 + 10,
        &register("c2", 1, &["<sip:alice@192.0.2.4>;q=0.5"], &[]),
    );
    assert_eq!(
        uris(&r, T0 + 20),
        [
            "sip:alice@192.0.2.2",
            "sip:alice@192.0.2.3",
            "sip:alice@192.0.2.4",
            "sip:alice@192.0.2.1"
        ]
    );
    let qs: Vec<u16> = r
        .location
        .lookup(AOR, T0 + 20)
        .iter()
        .map(|b| b.q)
        .collect();
    assert_eq!(qs, [1000, 700, 500, 500]);
    assert_eq!(r.location.contact_count(), 4);
    assert_eq!(r.location.aor_count(), 1);
    // The 200 lists them in the same order, q kept where it is not 1.
    let resp = send(&mut r, T0 + 20, &register("c3", 1, &[], &[]));
    assert_eq!(
        contacts(&resp),
        [
            "<sip:alice@192.0.2.2>;expires=3600",
            "<sip:alice@192.0.2.3>;q=0.7;expires=3600",
            "<sip:alice@192.0.2.4>;q=0.5;expires=3600",
            "<sip:alice@192.0.2.1>;q=0.5;expires=3600",
        ]
    );
}

#[test]
fn expiry_removes_and_reports() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 1, &["<sip:alice@192.0.2.1>;expires=60"], &[]),
    );
    send(
        &mut r,
        T0,
        &register("c2", 1, &["<sip:alice@192.0.2.2>;expires=120"], &[]),
    );
    r.location.drain_changes();
    assert_eq!(r.location.next_expiry(), Some(T0 + 60_000));
    // Not yet: lookups still see it.
    assert!(r.location.expire(T0 + 59_999).is_empty());
    assert_eq!(uris(&r, T0 + 59_999).len(), 2);
    // At its expiry time a binding is dead for lookups, even before expire().
    assert_eq!(uris(&r, T0 + 60_000), ["sip:alice@192.0.2.2"]);
    let removed = r.location.expire(T0 + 60_000);
    assert_eq!(
        removed,
        vec![Change::Remove {
            aor: AOR.into(),
            contact_uri: "sip:alice@192.0.2.1".into()
        }]
    );
    assert_eq!(r.location.drain_changes(), removed);
    assert_eq!(r.location.next_expiry(), Some(T0 + 120_000));
    assert_eq!(r.location.expire(T0 + 200_000).len(), 1);
    assert_eq!(r.location.next_expiry(), None);
    assert_eq!(r.location.aor_count(), 0);
}

#[test]
fn refresh_moves_the_expiry() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 1, &["<sip:alice@192.0.2.1>;expires=60"], &[]),
    );
    send(
        &mut r,
        T0 + 50_000,
        &register("c1", 2, &["<sip:alice@192.0.2.1>;expires=60"], &[]),
    );
    assert_eq!(r.location.next_expiry(), Some(T0 + 110_000));
    assert!(r.location.expire(T0 + 60_000).is_empty());
    assert_eq!(r.location.contact_count(), 1);
}

#[test]
fn register_sees_expired_bindings_as_gone() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 5, &["<sip:alice@192.0.2.1>;expires=60"], &[]),
    );
    r.location.drain_changes();
    // Long after expiry, even a lower CSeq on the same Call-ID registers anew.
    let resp = send(
        &mut r,
        T0 + 120_000,
        &register("c1", 1, &["<sip:alice@192.0.2.1>"], &[]),
    );
    assert_eq!(resp.code, 200);
    assert_eq!(contacts(&resp), ["<sip:alice@192.0.2.1>;expires=3600"]);
    let changes = r.location.drain_changes();
    assert!(matches!(&changes[0], Change::Remove { .. }));
    assert!(matches!(&changes[1], Change::Upsert(b) if b.cseq == 1));
}

#[test]
fn call_id_and_cseq_ordering() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 10, &["<sip:alice@192.0.2.1>;expires=600"], &[]),
    );
    r.location.drain_changes();
    // Same Call-ID, same or lower CSeq: ignored (a late or repeated REGISTER),
    // the answer shows the binding as it is.
    for cseq in [10, 9] {
        let resp = send(
            &mut r,
            T0 + 1000,
            &register("c1", cseq, &["<sip:alice@192.0.2.1>;expires=0"], &[]),
        );
        assert_eq!(resp.code, 200);
        assert_eq!(contacts(&resp), ["<sip:alice@192.0.2.1>;expires=599"]);
    }
    assert!(r.location.drain_changes().is_empty());
    // Higher CSeq on the same Call-ID updates.
    send(
        &mut r,
        T0 + 1000,
        &register("c1", 11, &["<sip:alice@192.0.2.1>;expires=900"], &[]),
    );
    assert_eq!(r.location.lookup(AOR, T0)[0].expires_at, T0 + 901_000);
    // Another Call-ID (the UA restarted) updates whatever the CSeq.
    let resp = send(
        &mut r,
        T0 + 2000,
        &register("c2", 1, &["<sip:alice@192.0.2.1>;expires=0"], &[]),
    );
    assert!(contacts(&resp).is_empty());
    assert_eq!(r.location.contact_count(), 0);
}

#[test]
fn instance_and_reg_id_match_across_addresses() {
    let mut r = registrar();
    let inst = "+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\"";
    send(
        &mut r,
        T0,
        &register(
            "c1",
            1,
            &[&format!(
                "<sip:alice@192.0.2.1;transport=tcp>;{inst};reg-id=1"
            )],
            &[],
        ),
    );
    send(
        &mut r,
        T0,
        &register(
            "c1",
            2,
            &[&format!(
                "<sip:alice@192.0.2.1;transport=tls>;{inst};reg-id=2"
            )],
            &[],
        ),
    );
    r.location.drain_changes();
    assert_eq!(r.location.contact_count(), 2);
    // The device moved: flow 1 comes back from a new address and replaces its old binding.
    send(
        &mut r,
        T0 + 5000,
        &register(
            "c1",
            3,
            &[&format!(
                "<sip:alice@198.51.100.9;transport=tcp>;{inst};reg-id=1"
            )],
            &[],
        ),
    );
    assert_eq!(r.location.contact_count(), 2);
    let mut all: Vec<String> = r.location.all().map(|b| b.contact_uri.clone()).collect();
    all.sort();
    assert_eq!(
        all,
        [
            "sip:alice@192.0.2.1;transport=tls",
            "sip:alice@198.51.100.9;transport=tcp"
        ]
    );
    let changes = r.location.drain_changes();
    assert_eq!(
        changes[0],
        Change::Remove {
            aor: AOR.into(),
            contact_uri: "sip:alice@192.0.2.1;transport=tcp".into()
        }
    );
    assert!(matches!(&changes[1], Change::Upsert(b) if b.reg_id == Some(1)));
}

#[test]
fn malformed_input_gives_400_and_changes_nothing() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 1, &["<sip:alice@192.0.2.1>"], &[]),
    );
    r.location.drain_changes();
    // The parser refuses these Expires values already; a request built by
    // hand can still carry them.
    let with_expires = |cseq, v: &str| {
        let mut req = register("c1", cseq, &["<sip:alice@192.0.2.2>"], &[]);
        req.headers.push(HeaderName::Expires, v);
        req
    };
    let cases: Vec<Request> = vec![
        with_expires(2, "soon"),
        with_expires(3, "-5"),
        register("c1", 4, &["<sip:alice@192.0.2.2>;expires=abc"], &[]),
        register("c1", 5, &["<sip:alice@192.0.2.2>;expires"], &[]),
        register("c1", 6, &["<sip:alice@192.0.2.2>;q=1.5"], &[]),
        register("c1", 7, &["<sip:alice@192.0.2.2>;q=high"], &[]),
        register("c1", 8, &["<sip:alice@192.0.2.2>;reg-id=x"], &[]),
        // A good contact next to a bad one: the whole request is refused.
        register(
            "c1",
            9,
            &["<sip:alice@192.0.2.3>", "<sip:alice@192.0.2.2>;q=2"],
            &[],
        ),
    ];
    for req in &cases {
        let resp = send(&mut r, T0, req);
        assert_eq!(resp.code, 400, "{:?}", req.headers.get(HeaderName::CSeq));
    }
    // Contact values the parser would let through when built by hand.
    let mut req = register("c1", 10, &[], &[]);
    req.headers
        .push(HeaderName::Contact, "<sip:alice@192.0.2.2");
    assert_eq!(send(&mut r, T0, &req).code, 400);
    let mut req = register("c1", 11, &[], &[]);
    req.headers.push(
        HeaderName::Contact,
        "<sip:ok@192.0.2.2>, \"unterminated <sip:x@y>",
    );
    assert_eq!(send(&mut r, T0, &req).code, 400);
    let mut req = register("c1", 12, &[], &[]);
    req.headers.remove_all(HeaderName::CSeq);
    assert_eq!(send(&mut r, T0, &req).code, 400);

    assert_eq!(uris(&r, T0), ["sip:alice@192.0.2.1"]);
    assert!(r.location.drain_changes().is_empty());
}

#[test]
fn contact_limit_per_aor() {
    let mut r = registrar();
    r.config.max_contacts_per_aor = 2;
    send(
        &mut r,
        T0,
        &register(
            "c1",
            1,
            &["<sip:alice@192.0.2.1>", "<sip:alice@192.0.2.2>"],
            &[],
        ),
    );
    r.location.drain_changes();
    let resp = send(
        &mut r,
        T0,
        &register("c2", 1, &["<sip:alice@192.0.2.3>"], &[]),
    );
    assert_eq!(resp.code, 503);
    assert_eq!(r.location.contact_count(), 2);
    assert!(r.location.drain_changes().is_empty());
    // Refreshing and replacing within the limit still work.
    let resp = send(
        &mut r,
        T0,
        &register(
            "c2",
            2,
            &["<sip:alice@192.0.2.1>;expires=0", "<sip:alice@192.0.2.3>"],
            &[],
        ),
    );
    assert_eq!(resp.code, 200);
    assert_eq!(r.location.contact_count(), 2);
}

#[test]
fn restore_emits_nothing_and_routes() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 1, &["<sip:alice@192.0.2.1>;q=0.2"], &[]),
    );
    let saved: Vec<Binding> = r.location.all().cloned().collect();

    let mut fresh = registrar();
    for b in saved.clone() {
        fresh.location.restore(b);
    }
    assert!(fresh.location.drain_changes().is_empty());
    assert_eq!(
        fresh.location.lookup(AOR, T0 + 1),
        saved.iter().collect::<Vec<_>>()
    );
    assert_eq!(fresh.location.next_expiry(), Some(T0 + 3_600_000));
    // Restored bindings still match: a refresh replaces rather than duplicates.
    send(
        &mut fresh,
        T0 + 1000,
        &register("c1", 2, &["<sip:alice@192.0.2.1>"], &[]),
    );
    assert_eq!(fresh.location.contact_count(), 1);
    // expires_at == 0 removes.
    let mut gone = saved[0].clone();
    gone.expires_at = 0;
    fresh.location.restore(gone);
    assert_eq!(fresh.location.contact_count(), 0);
}

#[test]
fn aors_are_separate() {
    let mut r = registrar();
    send(
        &mut r,
        T0,
        &register("c1", 1, &["<sip:alice@192.0.2.1>"], &[]),
    );
    let req = register("c2", 1, &["<sip:bob@192.0.2.1>"], &[]);
    r.handle_register(T0, &req, "sip:bob@example.com", source());
    assert_eq!(r.location.aor_count(), 2);
    assert_eq!(r.location.contact_count(), 2);
    assert_eq!(r.location.lookup("sip:bob@example.com", T0).len(), 1);
    assert!(r.location.lookup("sip:carol@example.com", T0).is_empty());
}

#[test]
fn odd_contacts_never_panic() {
    let odd = [
        "<sip:alice@192.0.2.1>;expires=99999999999999999999",
        "<sip:alice@192.0.2.1>;q=0.",
        "<sip:alice@192.0.2.1>;q=",
        "<sip:alice@192.0.2.1>;q=\"0.5\"",
        "<sip:alice@192.0.2.1>;+sip.instance",
        "<sip:alice@192.0.2.1>;+sip.instance=\"\";reg-id=4294967295",
        "<sip:alice@192.0.2.1>;reg-id=0",
        "<sip:%41lice@[2001:db8::1]:5060;maddr=x>",
        "<tel:+1-555-0100>",
        "<urn:service:sos>",
        "\"Ünïcødé \\\"q\\\"\" <sip:alice@192.0.2.1>",
        "sip:alice@192.0.2.1;expires=120",
        "<>",
        "",
        ",",
        "*;expires=0",
        "<sip:alice@192.0.2.1>>",
    ];
    let mut r = registrar();
    for (i, c) in odd.iter().enumerate() {
        let mut req = register("odd", 1, &[], &[]);
        req.headers.push(HeaderName::Contact, *c);
        req.headers
            .set(HeaderName::CSeq, format!("{} REGISTER", i + 1));
        let resp = send(&mut r, T0, &req);
        assert!(matches!(resp.code, 200 | 400 | 423), "{c:?}: {}", resp.code);
    }
    // Whatever was accepted is consistent: counts match and every binding routes.
    assert_eq!(r.location.all().count(), r.location.contact_count());
    assert_eq!(r.location.lookup(AOR, T0).len(), r.location.contact_count());
}
