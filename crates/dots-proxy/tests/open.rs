//! Open node: registration, a call through the proxy, MESSAGE, and the
//! requests the node answers itself.

mod common;

use common::*;
use dots_sip::{HeaderName, Message, Method, NameAddr, SipMessage};

#[test]
fn register_returns_the_contact_with_its_expiry() {
    let mut sim = Sim::open();
    let bob = sim.add_ua("bob", 5071);
    let d = sim.ua_mut(bob).register_draft(3600);
    let sent = sim.send(bob, &d);
    assert_eq!(sim.ua(bob).codes(Method::Register), vec![200]);
    let resp = sim.ua(bob).last_response(Method::Register).clone();

    let contacts = headers_all(&resp, HeaderName::Contact);
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    let c = NameAddr::parse(&contacts[0]).unwrap();
    assert_eq!(c.uri.to_string(), "sip:bob@127.0.0.1:5071");
    assert_eq!(c.param("expires"), Some(Some("3600")));
    assert!(
        to_tag(&resp).is_some(),
        "a 200 the node generates has a To tag"
    );
    assert_eq!(resp.vias().len(), 1);
    assert_eq!(branch_of(&resp), branch_of(&sent));

    let bindings = sim.engine.lookup(&sim.engine.local_aor("bob"), sim.now);
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].contact_uri, "sip:bob@127.0.0.1:5071");
    assert_eq!(sim.engine.registrations(), (1, 1));
    assert_eq!(sim.engine.stats().registrations, 1);
}

#[test]
fn call_goes_through_with_record_route_and_loose_routed_ack_and_bye() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);

    let inv = sim.invite(alice, "sip:bob@127.0.0.1");

    // What bob received: the INVITE retargeted to his contact, one more
    // Via, Max-Forwards decremented, the node in Record-Route.
    let got = sim.ua(bob).requests(Method::Invite);
    assert_eq!(got.len(), 1);
    let fwd = got[0];
    assert_eq!(fwd.uri.to_string(), "sip:bob@127.0.0.1:5071");
    assert_eq!(fwd.max_forwards(), Some(69));
    let vias = fwd.vias();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].host, "127.0.0.1");
    assert_eq!(vias[0].port, Some(5060));
    assert!(vias[0].branch().unwrap().starts_with("z9hG4bK"));
    assert_ne!(vias[0].branch(), vias[1].branch());
    assert_eq!(vias[1].branch().unwrap(), branch_of(&inv));
    assert_eq!(vias[1].param("rport"), Some(Some("5070")));
    assert_eq!(headers_all(fwd, HeaderName::RecordRoute), vec![NODE_RR]);
    assert_eq!(fwd.call_id(), inv.call_id());

    // What alice received: 100 from the node, then 180 and 200 from bob with
    // the node's Via popped, bob's To tag and the Record-Route.
    assert_eq!(sim.ua(alice).codes(Method::Invite), vec![100, 180, 200]);
    let trying = &sim.ua(alice).responses(Method::Invite)[0];
    assert_eq!(to_tag(*trying), None, "100 Trying carries no To tag");
    for r in sim.ua(alice).responses(Method::Invite) {
        assert_eq!(r.vias().len(), 1);
        assert_eq!(branch_of(r), branch_of(&inv));
    }
    let ok = sim.ua(alice).last_response(Method::Invite).clone();
    assert_eq!(to_tag(&ok).as_deref(), Some("bob-5071"));
    assert_eq!(headers_all(&ok, HeaderName::RecordRoute), vec![NODE_RR]);

    // The ACK went to the node with a Route, and reached bob with the
    // Route popped and the Request-URI his contact.
    let dialog = sim.ua(alice).dialogs[0].clone();
    assert_eq!(dialog.route_set, vec![NODE_RR.to_string()]);
    assert_eq!(dialog.remote_target, "sip:bob@127.0.0.1:5071");
    let acks = sim.ua(bob).requests(Method::Ack);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].uri.to_string(), "sip:bob@127.0.0.1:5071");
    assert_eq!(acks[0].headers.get(HeaderName::Route), None);
    assert_eq!(acks[0].vias().len(), 2);
    assert_eq!(acks[0].max_forwards(), Some(69));

    // BYE, loose-routed the same way, and its 200 back.
    let bye = sim.ua_mut(alice).in_dialog(0, "BYE");
    let sent_bye = sim.send(alice, &bye);
    assert_eq!(
        sent_bye.headers.get(HeaderName::Route),
        Some(NODE_RR),
        "the UA routes through the node"
    );
    let byes = sim.ua(bob).requests(Method::Bye);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].uri.to_string(), "sip:bob@127.0.0.1:5071");
    assert_eq!(byes[0].headers.get(HeaderName::Route), None);
    assert_eq!(byes[0].max_forwards(), Some(69));
    assert_eq!(byes[0].vias().len(), 2);
    assert_eq!(
        headers_all(byes[0], HeaderName::RecordRoute),
        Vec::<String>::new(),
        "no Record-Route on a mid-dialog BYE"
    );
    assert_eq!(sim.ua(alice).codes(Method::Bye), vec![200]);
    let bye_ok = sim.ua(alice).last_response(Method::Bye);
    assert_eq!(bye_ok.vias().len(), 1);

    sim.run_until_idle();
    assert_eq!(sim.engine.transactions(), (0, 0));
    // Exactly one 200 for the INVITE ever reached alice: bob stopped
    // retransmitting at the ACK.
    assert_eq!(sim.ua(alice).codes(Method::Invite), vec![100, 180, 200]);
    assert_eq!(sim.engine.stats().requests_in.get("INVITE"), Some(&1));
}

#[test]
fn message_reaches_the_registered_ua_and_its_200_comes_back() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);

    let mut d = sim
        .ua_mut(alice)
        .draft("MESSAGE", "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>")
        .header("Content-Type: text/plain");
    d.body = "hello bob".into();
    let sent = sim.send(alice, &d);

    let got = sim.ua(bob).requests(Method::Message);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"hello bob");
    assert_eq!(got[0].uri.to_string(), "sip:bob@127.0.0.1:5071");
    assert_eq!(got[0].max_forwards(), Some(69));
    assert_eq!(got[0].vias().len(), 2);
    assert_eq!(got[0].headers.get(HeaderName::RecordRoute), None);
    assert_eq!(
        got[0].headers.get(HeaderName::ContentType),
        Some("text/plain")
    );

    // A non-INVITE gets no 100 from the node; the 200 is bob's.
    assert_eq!(sim.ua(alice).codes(Method::Message), vec![200]);
    let ok = sim.ua(alice).last_response(Method::Message);
    assert_eq!(to_tag(ok).as_deref(), Some("bob-5071"));
    assert_eq!(ok.vias().len(), 1);
    assert_eq!(branch_of(ok), branch_of(&sent));
}

#[test]
fn unknown_user_gets_404() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    sim.invite(alice, "sip:nobody@127.0.0.1");
    assert_eq!(sim.ua(alice).finals(Method::Invite).len(), 1);
    let resp = sim.ua(alice).last_response(Method::Invite);
    assert_eq!(resp.code, 404);
    assert!(to_tag(resp).is_some());
    sim.run_until_idle();
    // alice ACKed the 404, so the node stopped retransmitting it.
    assert_eq!(sim.ua(alice).codes(Method::Invite), vec![404]);
}

#[test]
fn user_with_an_account_but_no_binding_gets_480() {
    let mut sim = Sim::open();
    sim.engine.set_accounts(accounts(&[("carol", "pw")]));
    let alice = sim.add_ua_in("alice", "example.com", 5070);
    let d = sim
        .ua_mut(alice)
        .draft("MESSAGE", "sip:carol@127.0.0.1", "<sip:carol@127.0.0.1>");
    sim.send(alice, &d);
    assert_eq!(sim.ua(alice).codes(Method::Message), vec![480]);
    sim.invite(alice, "sip:carol@127.0.0.1");
    assert_eq!(sim.ua(alice).last_response(Method::Invite).code, 480);
}

#[test]
fn max_forwards_zero_gets_483_and_is_not_forwarded() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    for method in ["INVITE", "MESSAGE"] {
        let d = sim
            .ua_mut(alice)
            .draft(method, "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>")
            .max_forwards(Some(0));
        let sent = sim.send(alice, &d);
        let resp = sim.ua(alice).last_response(sent.method.clone());
        assert_eq!(resp.code, 483, "{method}");
    }
    assert!(sim.ua(bob).requests(Method::Invite).is_empty());
    assert!(sim.ua(bob).requests(Method::Message).is_empty());
}

#[test]
fn options_to_the_node_is_answered_with_allow() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    for mf in [Some(70), Some(0)] {
        let d = sim
            .ua_mut(alice)
            .draft("OPTIONS", "sip:127.0.0.1", "<sip:127.0.0.1>")
            .max_forwards(mf);
        sim.send(alice, &d);
        let resp = sim.ua(alice).last_response(Method::Options);
        assert_eq!(resp.code, 200, "Max-Forwards {mf:?}");
        let allow: Vec<String> = resp
            .headers
            .tokens(HeaderName::Allow)
            .map(str::to_string)
            .collect();
        for m in [
            "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE",
        ] {
            assert!(allow.iter().any(|a| a == m), "Allow lacks {m}: {allow:?}");
        }
        assert!(to_tag(resp).is_some());
    }
    assert_eq!(sim.ua(alice).codes(Method::Options), vec![200, 200]);
}

#[test]
fn options_to_a_user_with_max_forwards_zero_is_answered_by_the_node() {
    // RFC 3261 §16.3 step 3: a proxy MAY answer OPTIONS with Max-Forwards 0
    // itself; it must not forward it either way.
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    let d = sim
        .ua_mut(alice)
        .draft("OPTIONS", "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>")
        .max_forwards(Some(0));
    sim.send(alice, &d);
    assert!(sim.ua(bob).requests(Method::Options).is_empty());
    let resp = sim.ua(alice).last_response(Method::Options);
    assert_eq!(resp.code, 200);
    assert!(resp
        .headers
        .tokens(HeaderName::Allow)
        .any(|t| t == "INVITE"));
}

#[test]
fn proxy_require_with_an_unknown_extension_gets_420() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    let d = sim
        .ua_mut(alice)
        .draft("INVITE", "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>")
        .header("Proxy-Require: frobnication");
    sim.send(alice, &d);
    let resp = sim.ua(alice).last_response(Method::Invite);
    assert_eq!(resp.code, 420);
    assert_eq!(
        resp.headers.get(HeaderName::Unsupported),
        Some("frobnication")
    );
    assert!(sim.ua(bob).requests(Method::Invite).is_empty());
}

#[test]
fn non_sip_request_uri_gets_416() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let d = sim
        .ua_mut(alice)
        .draft("MESSAGE", "im:bob@127.0.0.1", "<sip:bob@127.0.0.1>");
    sim.send(alice, &d);
    assert_eq!(sim.ua(alice).codes(Method::Message), vec![416]);
}

#[test]
fn a_contact_pointing_back_at_the_node_ends_in_482_or_483() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    // bob registers a contact that is the node itself.
    let mut d = sim.ua_mut(bob).register_draft(3600);
    d.contact = Some("<sip:bob@127.0.0.1:5060>".into());
    sim.send(bob, &d);
    assert_eq!(sim.ua(bob).last_response(Method::Register).code, 200);

    sim.invite(alice, "sip:bob@127.0.0.1");
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1, "{:?}", sim.ua(alice).codes(Method::Invite));
    assert!(
        matches!(finals[0].code, 482 | 483),
        "got {}",
        finals[0].code
    );
    // The node forwarded to itself a bounded number of times.
    let to_self = sim
        .wire
        .iter()
        .filter(|p| p.from == node_addr() && p.to == node_addr())
        .filter(|p| p.bytes.starts_with(b"INVITE "))
        .count();
    assert!((1..=70).contains(&to_self), "{to_self} INVITEs to itself");

    sim.run_until_idle();
    assert_eq!(sim.engine.transactions(), (0, 0));
    assert_eq!(sim.ua(alice).finals(Method::Invite).len(), 1);
}

#[test]
fn malformed_request_gets_400_back_to_its_source() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let text = "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbad1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@127.0.0.1>;tag=a\r\n\
        To: <sip:bob@127.0.0.1>\r\n\
        Call-ID: bad-1@test\r\n\
        CSeq: 1 MESSAGE\r\n\
        Content-Length: 500\r\n\r\nshort";
    let err = dots_sip::parse_datagram(text.as_bytes()).unwrap_err();
    assert!(
        err.partial.is_some(),
        "the parser keeps the partial request"
    );
    let source = udp(sim.ua(alice).addr);
    sim.engine.handle_parse_error(sim.now, err, source);

    let t = sim
        .engine
        .poll_transmit()
        .expect("a response to the source");
    assert_eq!(t.dest, source);
    let Message::Response(resp) = dots_sip::parse_datagram(&t.bytes).unwrap() else {
        panic!("expected a response");
    };
    assert_eq!(resp.code, 400);
    assert!(resp.reason.starts_with("Bad Request"), "{}", resp.reason);
    assert_eq!(branch_of(&resp), "z9hG4bKbad1");
    assert_eq!(resp.call_id(), Some("bad-1@test"));
    assert_eq!(cseq_method(&resp), Method::Message);
    assert!(sim.engine.poll_transmit().is_none());
    assert_eq!(sim.engine.stats().malformed, 1);
}

#[test]
fn malformed_datagram_on_the_wire_is_answered_400() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let mut d = sim
        .ua_mut(alice)
        .draft("MESSAGE", "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>");
    d.body = "x".into();
    // Announce more body than there is.
    let text = d
        .text()
        .replace("Content-Length: 1\r\n", "Content-Length: 99\r\n");
    sim.ua_mut(alice).push_raw(node_addr(), text.into_bytes());
    sim.settle();
    assert_eq!(sim.ua(alice).codes(Method::Message), vec![400]);
}

#[test]
fn a_retransmitted_register_is_answered_again_alike_without_transaction_state() {
    let mut sim = Sim::open();
    let bob = sim.add_ua("bob", 5071);
    let d = sim.ua_mut(bob).register_draft(3600);
    sim.send(bob, &d);
    assert_eq!(
        sim.engine.transactions(),
        (0, 0),
        "no transaction is kept for the answer"
    );
    let first = sim.ua(bob).last_response(Method::Register).clone();

    // The same datagram again, as after a lost 200: answered again, with
    // the same To tag and bindings, and nothing changed.
    sim.send(bob, &d);
    assert_eq!(sim.ua(bob).codes(Method::Register), vec![200, 200]);
    let again = sim.ua(bob).last_response(Method::Register).clone();
    assert!(to_tag(&first).is_some());
    assert_eq!(to_tag(&again), to_tag(&first));
    assert_eq!(
        headers_all(&again, HeaderName::Contact),
        headers_all(&first, HeaderName::Contact)
    );
    assert_eq!(sim.engine.registrations(), (1, 1));
    assert_eq!(sim.engine.transactions(), (0, 0));

    // A new REGISTER (next CSeq, new branch) gets a tag of its own.
    let next = sim.ua_mut(bob).follow_up(&d);
    sim.send(bob, &next);
    let third = sim.ua(bob).last_response(Method::Register).clone();
    assert_eq!(third.code, 200);
    assert_ne!(to_tag(&third), to_tag(&first));
}

#[test]
fn with_stateless_register_off_the_transaction_absorbs_the_retransmission() {
    let mut cfg = config(true);
    cfg.stateless_register = false;
    let mut sim = Sim::new(cfg);
    let bob = sim.add_ua("bob", 5071);
    let d = sim.ua_mut(bob).register_draft(3600);
    sim.send(bob, &d);
    assert_eq!(sim.engine.transactions(), (1, 0), "kept for Timer J");
    sim.send(bob, &d);
    assert_eq!(sim.ua(bob).codes(Method::Register), vec![200, 200]);
    let responses = sim.ua(bob).responses(Method::Register);
    assert_eq!(
        responses[0].to_bytes(),
        responses[1].to_bytes(),
        "the kept answer, re-sent"
    );
    assert_eq!(sim.engine.transactions(), (1, 0));
    assert_eq!(
        sim.engine.stats().registrations,
        1,
        "the registrar saw it once"
    );
}
