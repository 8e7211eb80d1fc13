//! SIP over WebSocket (RFC 7118) in the engine: a client registered over a
//! WebSocket connection is reached over that connection only (its Contact
//! host is `.invalid`), in-dialog requests find it through the flow token
//! in the node's Record-Route, and a closed connection ends its bindings.

use std::net::SocketAddr;

use dots_proxy::{Engine, EngineConfig, Listener};
use dots_registrar::Change;
use dots_sip::syntax::split_list;
use dots_sip::{
    parse_datagram, HeaderName, Message, Method, NameAddr, Peer, Request, Response, SipMessage,
    TransportKind,
};

const T0: u64 = 1_700_000_000_000;
const WS_PORT: u16 = 8080;

struct Net {
    engine: Engine,
    now: u64,
}

fn udp(port: u16) -> Peer {
    Peer::new(TransportKind::Udp, addr(port))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ws(port: u16, flow: u64) -> Peer {
    Peer {
        transport: TransportKind::Ws,
        addr: addr(port),
        flow: Some(flow),
    }
}

impl Net {
    fn new() -> Net {
        let mut config = EngineConfig::for_addr(addr(5060));
        config.open = true;
        config.listeners.push(Listener {
            transport: TransportKind::Ws,
            addr: addr(WS_PORT),
            advertise: None,
        });
        Net {
            engine: Engine::new(config, 11),
            now: T0,
        }
    }

    /// Delivers `text` from `from`; returns everything the engine sends.
    fn send(&mut self, from: Peer, text: &str) -> Vec<(Peer, Message)> {
        let msg = parse_datagram(text.as_bytes()).expect("test message parses");
        self.engine.handle_message(self.now, msg, from);
        self.drain()
    }

    fn drain(&mut self) -> Vec<(Peer, Message)> {
        let mut out = Vec::new();
        while let Some(t) = self.engine.poll_transmit() {
            out.push((
                t.dest,
                parse_datagram(&t.bytes).expect("engine output parses"),
            ));
        }
        out
    }
}

fn request(out: &[(Peer, Message)], method: Method) -> (Peer, Request) {
    out.iter()
        .find_map(|(p, m)| match m {
            Message::Request(r) if r.method == method => Some((*p, r.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {method} in {out:#?}"))
}

fn response(out: &[(Peer, Message)], code: u16) -> (Peer, Response) {
    out.iter()
        .find_map(|(p, m)| match m {
            Message::Response(r) if r.code == code => Some((*p, r.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {code} in {out:#?}"))
}

fn all(msg: &impl SipMessage, name: HeaderName) -> Vec<String> {
    msg.headers()
        .get_all(name)
        .flat_map(|v| split_list(v).unwrap_or_else(|| vec![v]))
        .map(|v| v.trim().to_string())
        .collect()
}

/// The response a UAS makes to `req`: its headers copied, a To tag, a Contact.
fn answer(req: &Request, code: u16, tag: &str, contact: &str) -> String {
    let mut s = format!("SIP/2.0 {code} X\r\n");
    for v in req.headers.get_all(HeaderName::Via) {
        s += &format!("Via: {v}\r\n");
    }
    for rr in req.headers.get_all(HeaderName::RecordRoute) {
        s += &format!("Record-Route: {rr}\r\n");
    }
    s += &format!("From: {}\r\n", req.headers.get(HeaderName::From).unwrap());
    s += &format!(
        "To: {};tag={tag}\r\n",
        req.headers.get(HeaderName::To).unwrap()
    );
    s += &format!("Call-ID: {}\r\n", req.call_id().unwrap());
    s += &format!("CSeq: {}\r\n", req.headers.get(HeaderName::CSeq).unwrap());
    s += &format!("Contact: <{contact}>\r\nContent-Length: 0\r\n\r\n");
    s
}

/// A REGISTER as JsSIP sends it over a WebSocket.
fn ws_register(user: &str, host: &str, expires: u32, cseq: u32) -> String {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/WS {host};branch=z9hG4bK-reg-{user}-{cseq}\r\n\
         Max-Forwards: 69\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         From: <sip:{user}@127.0.0.1>;tag=r-{user}\r\n\
         Call-ID: reg-{user}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}x@{host};transport=ws>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-00000000000{cseq}>\";expires={expires}\r\n\
         Supported: path, gruu, outbound\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn udp_invite(from_user: &str, port: u16, to: &str, call: &str) -> String {
    format!(
        "INVITE sip:{to}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@127.0.0.1>;tag=caller\r\n\
         To: <sip:{to}@127.0.0.1>\r\n\
         Call-ID: {call}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{from_user}@127.0.0.1:{port}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// An in-dialog request: Route set, Request-URI, tags as a UA would send it.
#[allow(clippy::too_many_arguments)]
fn in_dialog(
    method: &str,
    ruri: &str,
    via: &str,
    routes: &[String],
    from: &str,
    to: &str,
    call: &str,
    cseq: u32,
) -> String {
    let mut s = format!("{method} {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n");
    for r in routes {
        s += &format!("Route: {r}\r\n");
    }
    s += &format!(
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    );
    s
}

#[test]
fn ws_client_registers_and_gets_a_call_from_udp_over_its_connection() {
    let mut net = Net::new();
    let wanda = ws(50_001, 77);
    let out = net.send(wanda, &ws_register("wanda", "abc.invalid", 600, 1));
    let (dest, ok) = response(&out, 200);
    assert_eq!(dest, wanda, "the 200 goes back over the connection");
    assert!(all(&ok, HeaderName::Contact)[0].contains("abc.invalid;transport=ws"));
    let bindings = net.engine.lookup("sip:wanda@127.0.0.1", net.now);
    assert_eq!(bindings[0].source, Some(wanda));

    // A UDP caller.
    let out = net.send(udp(5070), &udp_invite("carl", 5070, "wanda", "c1"));
    assert_eq!(response(&out, 100).0, udp(5070));
    let (dest, inv) = request(&out, Method::Invite);
    assert_eq!(dest, wanda, "INVITE over the registered connection");
    assert_eq!(inv.uri.to_string(), "sip:wandax@abc.invalid;transport=ws");
    let via = inv.top_via().unwrap();
    assert_eq!(via.transport, "WS");
    assert_eq!(via.port, Some(WS_PORT));
    // Two Record-Routes: the WebSocket side (with the flow token) on top,
    // then the UDP side.
    let rr = all(&inv, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "{rr:?}");
    let ws_rr = NameAddr::parse(&rr[0]).unwrap().uri;
    assert_eq!(ws_rr.port, Some(WS_PORT));
    assert_eq!(ws_rr.transport().as_deref(), Some("ws"));
    assert!(ws_rr.user.as_deref().is_some_and(|u| u.len() > 16));
    assert_eq!(rr[1], "<sip:127.0.0.1:5060;lr>");

    // Wanda answers; the 200 reaches the caller with both Record-Routes.
    let out = net.send(
        wanda,
        &answer(&inv, 200, "w1", "sip:wandax@abc.invalid;transport=ws"),
    );
    let (dest, ok) = response(&out, 200);
    assert_eq!(dest, udp(5070));
    assert_eq!(all(&ok, HeaderName::RecordRoute), rr);

    // The caller's route set is the Record-Route reversed; its ACK and BYE
    // go to the .invalid Contact: the node sends them over the connection.
    let routes: Vec<String> = rr.iter().rev().cloned().collect();
    let (from, to) = (
        "<sip:carl@127.0.0.1>;tag=caller",
        "<sip:wanda@127.0.0.1>;tag=w1",
    );
    let ack = in_dialog(
        "ACK",
        "sip:wandax@abc.invalid;transport=ws",
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-ack1;rport",
        &routes,
        from,
        to,
        "c1",
        1,
    );
    let out = net.send(udp(5070), &ack);
    let (dest, ack) = request(&out, Method::Ack);
    assert_eq!(dest, wanda, "ACK over the connection");
    assert!(ack.headers.get(HeaderName::Route).is_none());
    let bye = in_dialog(
        "BYE",
        "sip:wandax@abc.invalid;transport=ws",
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye1;rport",
        &routes,
        from,
        to,
        "c1",
        2,
    );
    let out = net.send(udp(5070), &bye);
    let (dest, bye) = request(&out, Method::Bye);
    assert_eq!(dest, wanda, "BYE over the connection");
    let out = net.send(wanda, &answer(&bye, 200, "w1", "sip:x@abc.invalid"));
    assert_eq!(response(&out, 200).0, udp(5070));
}

#[test]
fn ws_client_calls_udp_and_hangs_up_through_its_own_route() {
    let mut net = Net::new();
    let wanda = ws(50_002, 5);
    net.send(wanda, &ws_register("wanda", "w.invalid", 600, 1));
    let bob = udp(5071);
    let reg = "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-regbob\r\n\
         Max-Forwards: 70\r\nTo: <sip:bob@127.0.0.1>\r\nFrom: <sip:bob@127.0.0.1>;tag=b\r\n\
         Call-ID: regbob\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@127.0.0.1:5071>\r\n\
         Content-Length: 0\r\n\r\n";
    response(&net.send(bob, reg), 200);

    let invite = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/WS w.invalid;branch=z9hG4bK-winv\r\n\
         Max-Forwards: 70\r\nFrom: <sip:wanda@127.0.0.1>;tag=wt\r\nTo: <sip:bob@127.0.0.1>\r\n\
         Call-ID: c2\r\nCSeq: 1 INVITE\r\nContact: <sip:wandax@w.invalid;transport=ws;ob>\r\n\
         Content-Length: 0\r\n\r\n";
    let out = net.send(wanda, invite);
    assert_eq!(response(&out, 100).0, wanda);
    let (dest, inv) = request(&out, Method::Invite);
    assert_eq!(dest, bob);
    let rr = all(&inv, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert_eq!(rr[0], "<sip:127.0.0.1:5060;lr>");
    assert!(rr[1].contains(";transport=ws;lr>"), "{rr:?}");
    let out = net.send(bob, &answer(&inv, 200, "b1", "sip:bob@127.0.0.1:5071"));
    assert_eq!(response(&out, 200).0, wanda);

    // Wanda hangs up: her Route names her own flow (ignored, it is where the
    // request comes from), then the UDP side; the BYE goes to bob.
    let routes: Vec<String> = rr.iter().rev().cloned().collect();
    let (from, to) = ("<sip:wanda@127.0.0.1>;tag=wt", "<sip:bob@127.0.0.1>;tag=b1");
    let via = "SIP/2.0/WS w.invalid;branch=z9hG4bK-wbye";
    let out = net.send(
        wanda,
        &in_dialog(
            "BYE",
            "sip:bob@127.0.0.1:5071",
            via,
            &routes,
            from,
            to,
            "c2",
            2,
        ),
    );
    let (dest, bye) = request(&out, Method::Bye);
    assert_eq!(dest, bob);
    let out = net.send(bob, &answer(&bye, 200, "b1", "sip:bob@127.0.0.1:5071"));
    assert_eq!(response(&out, 200).0, wanda);

    // Bob's BYE in the other direction comes back over wanda's connection.
    let bye_from_bob = in_dialog(
        "BYE",
        "sip:wandax@w.invalid;transport=ws;ob",
        "SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-bbye;rport",
        &rr,
        to,
        from,
        "c2",
        7,
    );
    let (dest, _) = request(&net.send(bob, &bye_from_bob), Method::Bye);
    assert_eq!(dest, wanda);
}

#[test]
fn ws_to_ws_call_uses_both_flows() {
    let mut net = Net::new();
    let (a, b) = (ws(50_010, 1), ws(50_011, 2));
    net.send(b, &ws_register("bea", "b.invalid", 600, 1));
    let invite = "INVITE sip:bea@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/WS a.invalid;branch=z9hG4bK-ainv\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ann@127.0.0.1>;tag=at\r\nTo: <sip:bea@127.0.0.1>\r\n\
         Call-ID: c3\r\nCSeq: 1 INVITE\r\nContact: <sip:annx@a.invalid;transport=ws>\r\n\
         Content-Length: 0\r\n\r\n";
    let (dest, inv) = request(&net.send(a, invite), Method::Invite);
    assert_eq!(dest, b);
    let rr = all(&inv, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "one entry per flow: {rr:?}");
    assert_ne!(rr[0], rr[1]);
    net.send(
        b,
        &answer(&inv, 200, "bt", "sip:beax@b.invalid;transport=ws"),
    );
    // Bea (the callee) hangs up: her route set is the Record-Route as is.
    let bye = in_dialog(
        "BYE",
        "sip:annx@a.invalid;transport=ws",
        "SIP/2.0/WS b.invalid;branch=z9hG4bK-bbye3",
        &rr,
        "<sip:bea@127.0.0.1>;tag=bt",
        "<sip:ann@127.0.0.1>;tag=at",
        "c3",
        1,
    );
    let (dest, _) = request(&net.send(b, &bye), Method::Bye);
    assert_eq!(dest, a, "the BYE reaches ann over her connection");
}

#[test]
fn closed_connection_removes_its_bindings_and_the_next_call_gets_480() {
    let mut net = Net::new();
    let wanda = ws(50_003, 9);
    let other = ws(50_004, 10);
    net.send(wanda, &ws_register("wanda", "one.invalid", 600, 1));
    net.send(other, &ws_register("wanda", "two.invalid", 600, 2));
    assert_eq!(net.engine.lookup("sip:wanda@127.0.0.1", net.now).len(), 2);
    net.engine.drain_binding_changes();

    // A TCP close or a close of an unrelated flow changes nothing.
    net.engine.flow_closed(
        net.now,
        Peer {
            transport: TransportKind::Tcp,
            ..wanda
        },
    );
    net.engine.flow_closed(net.now, ws(50_003, 999));
    assert_eq!(net.engine.lookup("sip:wanda@127.0.0.1", net.now).len(), 2);

    net.engine.flow_closed(net.now, wanda);
    let left = net.engine.lookup("sip:wanda@127.0.0.1", net.now);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].source, Some(other));
    let changes = net.engine.drain_binding_changes();
    assert!(
        matches!(&changes[..], [Change::Remove { contact_uri, .. }] if contact_uri.contains("one.invalid")),
        "{changes:?}"
    );

    net.engine.flow_closed(net.now, other);
    assert!(net.engine.lookup("sip:wanda@127.0.0.1", net.now).is_empty());
    let out = net.send(udp(5070), &udp_invite("carl", 5070, "wanda", "c4"));
    response(&out, 480);
}

#[test]
fn closing_a_connection_fails_the_call_ringing_on_it() {
    let mut net = Net::new();
    let wanda = ws(50_005, 12);
    net.send(wanda, &ws_register("wanda", "r.invalid", 600, 1));
    let out = net.send(udp(5070), &udp_invite("carl", 5070, "wanda", "c5"));
    let (_, inv) = request(&out, Method::Invite);
    let mut ringing = answer(&inv, 180, "w5", "sip:x@r.invalid");
    ringing = ringing.replacen("180 X", "180 Ringing", 1);
    response(&net.send(wanda, &ringing), 180);
    net.engine.flow_closed(net.now, wanda);
    let out = net.drain();
    let (dest, resp) = out
        .iter()
        .find_map(|(p, m)| match m {
            Message::Response(r) if r.code >= 400 => Some((*p, r.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a final error for the caller: {out:#?}"));
    assert_eq!(dest, udp(5070));
    assert_eq!(resp.code, 408);
}

#[test]
fn websocket_bindings_are_not_restored_after_a_restart() {
    let mut net = Net::new();
    net.send(ws(50_006, 3), &ws_register("wanda", "x.invalid", 600, 1));
    let mut saved: Vec<_> = net.engine.lookup("sip:wanda@127.0.0.1", net.now);
    // What the store gives back: the source without its flow.
    saved[0].source = Some(Peer::new(TransportKind::Ws, addr(50_006)));

    let mut fresh = Net::new();
    fresh.engine.restore_bindings(saved);
    assert!(fresh
        .engine
        .lookup("sip:wanda@127.0.0.1", fresh.now)
        .is_empty());
    let changes = fresh.engine.drain_binding_changes();
    assert!(
        matches!(&changes[..], [Change::Remove { .. }]),
        "the removal is persisted: {changes:?}"
    );
    // Wanda is still a known user: a call gets 480, not 404.
    response(
        &fresh.send(udp(5070), &udp_invite("carl", 5070, "wanda", "c6")),
        480,
    );
}

#[test]
fn a_forged_flow_token_does_not_route() {
    let mut net = Net::new();
    let wanda = ws(50_007, 4);
    net.send(wanda, &ws_register("wanda", "f.invalid", 600, 1));
    let out = net.send(udp(5070), &udp_invite("carl", 5070, "wanda", "c7"));
    let (_, inv) = request(&out, Method::Invite);
    let rr = all(&inv, HeaderName::RecordRoute);
    let mut forged = rr[0].clone();
    // Change one hex digit of the token.
    let at = forged.find("sip:").unwrap() + 6;
    let c = forged.as_bytes()[at];
    forged.replace_range(at..at + 1, if c == b'0' { "1" } else { "0" });
    let bye = in_dialog(
        "BYE",
        "sip:wandax@f.invalid;transport=ws",
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-forged;rport",
        &["<sip:127.0.0.1:5060;lr>".to_string(), forged],
        "<sip:carl@127.0.0.1>;tag=caller",
        "<sip:wanda@127.0.0.1>;tag=w",
        "c7",
        2,
    );
    let out = net.send(udp(5070), &bye);
    assert!(
        out.iter().all(|(p, _)| *p != wanda),
        "nothing reaches wanda's connection: {out:#?}"
    );
    assert!(out
        .iter()
        .any(|(p, m)| *p == udp(5070) && matches!(m, Message::Response(r) if r.code >= 400)));
}

#[test]
fn closing_the_last_connection_of_a_user_publishes_offline() {
    let mut net = Net::new();
    net.engine.enable_overlay(b"ws-test-node".to_vec());
    let (one, two) = (ws(50_020, 21), ws(50_021, 22));
    net.send(one, &ws_register("wanda", "p1.invalid", 600, 1));
    net.send(two, &ws_register("wanda", "p2.invalid", 600, 2));
    let online = net.engine.drain_presence_changes();
    assert!(
        online
            .iter()
            .any(|c| c.aor == "sip:wanda@127.0.0.1" && c.online),
        "{online:?}"
    );
    // One connection of two: still online, nothing to publish.
    net.engine.flow_closed(net.now, one);
    assert!(net.engine.drain_presence_changes().is_empty());
    net.engine.flow_closed(net.now, two);
    let offline = net.engine.drain_presence_changes();
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert_eq!(offline[0].aor, "sip:wanda@127.0.0.1");
    assert!(!offline[0].online);
}
