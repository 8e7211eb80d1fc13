//! Every timer of RFC 3261 §17 and RFC 6026, checked to the millisecond on
//! one layer driven alone.

mod common;

use common::*;
use dots_sip::HeaderName as N;
use dots_sip::TransportKind::{self, Tcp, Udp};
use dots_sip::{Method, Peer, Request, SipMessage};
use dots_txn::{Event, TxnId};

fn t(v: &[(u64, &str)]) -> Vec<(u64, String)> {
    v.iter().map(|(t, s)| (*t, s.to_string())).collect()
}

fn codes(s: &Solo) -> Vec<(u64, u16)> {
    s.sent
        .iter()
        .map(|(t, x)| (*t, parse_response(&x.bytes).code))
        .collect()
}

#[test]
fn timer_a_doubles_and_timer_b_times_out_invite() {
    let mut s = Solo::new();
    let id = s
        .send(0, request("INVITE", "z9hG4bKa", Udp), udp(SERVER))
        .unwrap();
    assert_eq!(s.layer.counts(), (0, 1));
    s.run_until(100_000);
    assert_eq!(s.sent_times(), vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    // Every retransmission is the same bytes, to the same place.
    assert!(s.sent.iter().all(|(_, x)| x.bytes == s.sent[0].1.bytes));
    assert!(s.sent.iter().all(|(_, x)| x.dest == udp(SERVER)));
    assert_eq!(
        names(&s.events),
        t(&[
            (32_000, &format!("Timeout({})", id.0)),
            (32_000, &format!("Terminated({})", id.0))
        ])
    );
    assert_eq!(s.layer.counts(), (0, 0));
    assert_eq!(s.layer.poll_timeout(), None);
}

#[test]
fn timer_e_is_capped_at_t2_and_timer_f_times_out() {
    let mut s = Solo::new();
    s.send(0, request("OPTIONS", "z9hG4bKe", Udp), udp(SERVER))
        .unwrap();
    s.run_until(100_000);
    assert_eq!(
        s.sent_times(),
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(
        names(&s.events),
        t(&[(32_000, "Timeout(1)"), (32_000, "Terminated(1)")])
    );
}

#[test]
fn timer_e_uses_t2_in_proceeding_and_timer_k_absorbs_retransmissions() {
    let mut s = Solo::new();
    let req = request("REGISTER", "z9hG4bKk", Udp);
    s.send(0, req.clone(), udp(SERVER)).unwrap();
    s.response(600, response(&req, 100), udp(SERVER));
    let ok = response(&req, 200);
    s.response(10_000, ok.clone(), udp(SERVER));
    // A retransmitted final is absorbed in Completed.
    s.response(12_000, ok, udp(SERVER));
    s.run_until(100_000);
    // 1500 was armed in Trying; from there on Proceeding retransmits every T2.
    assert_eq!(s.sent_times(), vec![0, 500, 1500, 5500, 9500]);
    assert_eq!(
        names(&s.events),
        t(&[
            (600, "Response(1,100)"),
            (10_000, "Response(1,200)"),
            (15_000, "Terminated(1)")
        ])
    );
}

#[test]
fn reliable_client_never_retransmits_and_k_d_are_zero() {
    // INVITE over TCP: no Timer A, but Timer B still applies.
    let mut s = Solo::new();
    s.send(0, request("INVITE", "z9hG4bKt1", Tcp), tcp(SERVER))
        .unwrap();
    s.run_until(100_000);
    assert_eq!(s.sent_times(), vec![0]);
    assert_eq!(
        names(&s.events),
        t(&[(32_000, "Timeout(1)"), (32_000, "Terminated(1)")])
    );

    // Non-INVITE over TCP: the final ends the transaction at once (K = 0).
    let mut s = Solo::new();
    let req = request("OPTIONS", "z9hG4bKt2", Tcp);
    s.send(0, req.clone(), tcp(SERVER)).unwrap();
    s.response(2_000, response(&req, 200), tcp(SERVER));
    s.run_until(100_000);
    assert_eq!(s.sent_times(), vec![0]);
    assert_eq!(
        names(&s.events),
        t(&[(2_000, "Response(1,200)"), (2_000, "Terminated(1)")])
    );

    // INVITE over TCP rejected: ACK sent, D = 0.
    let mut s = Solo::new();
    let req = request("INVITE", "z9hG4bKt3", Tcp);
    s.send(0, req.clone(), tcp(SERVER)).unwrap();
    s.response(1_000, response(&req, 404), tcp(SERVER));
    assert_eq!(s.sent_times(), vec![0, 1_000]);
    assert!(s.sent[1].1.bytes.starts_with(b"ACK "));
    assert_eq!(
        names(&s.events),
        t(&[(1_000, "Response(1,404)"), (1_000, "Terminated(1)")])
    );
    assert_eq!(s.layer.counts(), (0, 0));
    assert_eq!(s.layer.poll_timeout(), None);
}

#[test]
fn timer_d_keeps_a_rejected_invite_32s_and_reacks_retransmissions() {
    let mut s = Solo::new();
    let req = request_with(
        "INVITE",
        "z9hG4bKd",
        Udp,
        "Route: <sip:p1.example.com;lr>\r\nRoute: <sip:p2.example.com;lr>\r\n",
    );
    s.send(0, req.clone(), udp(SERVER)).unwrap();
    s.response(700, response(&req, 100), udp(SERVER));
    // Proceeding: no more retransmissions and no Timer B.
    assert_eq!(s.layer.poll_timeout(), None);
    let busy = response(&req, 486);
    s.response(1_000, busy.clone(), udp(SERVER));
    s.response(5_000, busy, udp(SERVER));
    s.run_until(100_000);
    // INVITE at 0 and 500, ACK at 1000, ACK again for the retransmitted 486.
    assert_eq!(s.sent_times(), vec![0, 500, 1_000, 5_000]);
    assert_eq!(s.sent[2].1.bytes, s.sent[3].1.bytes);
    assert_eq!(
        names(&s.events),
        t(&[
            (700, "Response(1,100)"),
            (1_000, "Response(1,486)"),
            (33_000, "Terminated(1)")
        ])
    );

    // The ACK is the §17.1.1.3 one.
    let ack = parse_request(&s.sent[2].1.bytes);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, req.uri);
    let vias = ack.vias();
    assert_eq!(vias.len(), 1);
    assert_eq!(vias[0], req.top_via().unwrap());
    let h = |m: &Request, n| m.headers.get(n).map(str::to_string);
    assert_eq!(h(&ack, N::CallId), h(&req, N::CallId));
    assert_eq!(h(&ack, N::From), h(&req, N::From));
    assert_eq!(h(&ack, N::MaxForwards), h(&req, N::MaxForwards));
    assert_eq!(h(&ack, N::CSeq).as_deref(), Some("7 ACK"));
    assert_eq!(
        ack.to().unwrap().tag(),
        Some("b1"),
        "To comes from the response, with its tag"
    );
    let routes: Vec<_> = ack.headers.get_all(N::Route).collect();
    assert_eq!(
        routes,
        vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
}

#[test]
fn timer_m_accepted_client_passes_every_2xx_up() {
    let mut s = Solo::new();
    let req = request("INVITE", "z9hG4bKm", Udp);
    s.send(0, req.clone(), udp(SERVER)).unwrap();
    let ok = response(&req, 200);
    s.response(1_000, ok.clone(), udp(SERVER));
    s.response(2_000, ok.clone(), udp(SERVER));
    // A 2xx from another fork (other To tag) too.
    let mut other = req.make_response(200, None);
    other.ensure_to_tag("b2");
    s.response(2_500, other, udp(SERVER));
    // A non-2xx in Accepted is dropped.
    s.response(3_000, response(&req, 500), udp(SERVER));
    s.run_until(100_000);
    // The layer sends no ACK for 2xx: that is end to end.
    assert_eq!(s.sent_times(), vec![0, 500]);
    assert_eq!(
        names(&s.events),
        t(&[
            (1_000, "Response(1,200)"),
            (2_000, "Response(1,200)"),
            (2_500, "Response(1,200)"),
            (33_000, "Terminated(1)")
        ])
    );
    // After Timer M the 2xx is stray, for a proxy to forward.
    s.response(40_000, ok, udp(SERVER));
    assert_eq!(names(&s.events).last().unwrap().1, "Stray(200)");
}

/// An INVITE from the client arrives at the server layer at the current time.
fn server_invite(s: &mut Solo, branch: &str, transport: TransportKind) -> (TxnId, Request) {
    let req = request("INVITE", branch, transport);
    let src = Peer::new(transport, addr(CLIENT));
    s.layer.handle_request(s.now, req.clone(), src);
    let Some(Event::Request {
        id,
        request,
        source,
        cancels,
    }) = s.layer.poll_event()
    else {
        panic!("expected a Request event");
    };
    assert_eq!(request, req);
    assert_eq!(source, src);
    assert_eq!(cancels, None);
    (id, req)
}

#[test]
fn timer_g_retransmits_final_up_to_t2_and_timer_h_gives_up() {
    let mut s = Solo::new();
    let (id, req) = server_invite(&mut s, "z9hG4bKg", Udp);
    s.respond(0, id, response(&req, 486)).unwrap();
    s.run_until(100_000);
    assert_eq!(
        s.sent_times(),
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert!(s.sent.iter().all(|(_, x)| x.bytes == s.sent[0].1.bytes));
    assert!(s.sent.iter().all(|(_, x)| x.dest == udp(CLIENT)));
    assert_eq!(
        names(&s.events),
        t(&[(32_000, &format!("Terminated({})", id.0))])
    );
}

#[test]
fn timer_i_after_ack_absorbs_retransmissions() {
    let mut s = Solo::new();
    let (id, req) = server_invite(&mut s, "z9hG4bKi", Udp);
    s.respond(0, id, response(&req, 603)).unwrap();
    // Completed: a retransmitted INVITE gets the final again.
    s.request(300, req.clone(), udp(CLIENT));
    // The ACK for a non-2xx carries the INVITE's branch and is absorbed.
    let ack = request("ACK", "z9hG4bKi", Udp);
    s.request(1_000, ack.clone(), udp(CLIENT));
    s.request(3_000, ack, udp(CLIENT));
    s.request(3_000, req, udp(CLIENT));
    s.run_until(100_000);
    // 603 at 0, on the retransmitted INVITE, and by Timer G at 500;
    // nothing once Confirmed.
    assert_eq!(s.sent_times(), vec![0, 300, 500]);
    assert_eq!(
        names(&s.events),
        t(&[(6_000, &format!("Terminated({})", id.0))])
    );

    // Over TCP: no Timer G, and I = 0.
    let mut s = Solo::new();
    let (id, req) = server_invite(&mut s, "z9hG4bKi2", Tcp);
    s.respond(0, id, response(&req, 603)).unwrap();
    s.request(2_000, request("ACK", "z9hG4bKi2", Tcp), tcp(CLIENT));
    assert_eq!(s.sent_times(), vec![0]);
    assert_eq!(
        names(&s.events),
        t(&[(2_000, &format!("Terminated({})", id.0))])
    );
}

#[test]
fn timer_j_and_absorbed_non_invite_retransmissions() {
    let mut s = Solo::new();
    let req = request("OPTIONS", "z9hG4bKj", Udp);
    s.request(0, req.clone(), udp(CLIENT));
    // Trying: the retransmission is absorbed, nothing to re-send yet.
    s.request(500, req.clone(), udp(CLIENT));
    let id = match &s.events[..] {
        [(0, Event::Request { id, .. })] => *id,
        other => panic!("unexpected events {:?}", names(other)),
    };
    assert!(s.sent.is_empty());
    assert_eq!(s.layer.server_request(id), None);
    s.layer.keep_request(id, req.clone());
    assert_eq!(s.layer.server_request(id), Some(&req));

    s.respond(800, id, response(&req, 100)).unwrap();
    assert_eq!(s.layer.server_request(id), Some(&req));
    s.request(1_500, req.clone(), udp(CLIENT));
    s.respond(2_000, id, response(&req, 200)).unwrap();
    // Answered: the request is dropped, and handing it back is ignored.
    assert_eq!(s.layer.server_request(id), None);
    s.layer.keep_request(id, req.clone());
    assert_eq!(s.layer.server_request(id), None);
    s.request(3_500, req.clone(), udp(CLIENT));
    // Once answered, a second final is refused.
    assert!(s.respond(3_600, id, response(&req, 500)).is_err());
    s.run_until(100_000);
    assert_eq!(
        codes(&s),
        vec![(800, 100), (1_500, 100), (2_000, 200), (3_500, 200)]
    );
    assert_eq!(
        names(&s.events),
        t(&[
            (0, &format!("Request({},OPTIONS)", id.0)),
            (34_000, &format!("Terminated({})", id.0))
        ])
    );

    // Over TCP: J = 0.
    let mut s = Solo::new();
    let req = request("OPTIONS", "z9hG4bKj2", Tcp);
    s.request(0, req.clone(), tcp(CLIENT));
    let id = match &s.events[..] {
        [(0, Event::Request { id, .. })] => *id,
        other => panic!("unexpected events {:?}", names(other)),
    };
    s.respond(10, id, response(&req, 200)).unwrap();
    assert_eq!(names(&s.events)[1], (10, format!("Terminated({})", id.0)));
    assert_eq!(s.layer.counts(), (0, 0));
}

#[test]
fn timer_l_accepted_server_absorbs_invites_and_passes_acks_up() {
    let mut s = Solo::new();
    let (id, req) = server_invite(&mut s, "z9hG4bKl", Udp);
    s.respond(0, id, response(&req, 180)).unwrap();
    // Proceeding: a retransmitted INVITE gets the last provisional again.
    s.request(100, req.clone(), udp(CLIENT));
    s.respond(200, id, response(&req, 200)).unwrap();
    // Accepted: retransmitted INVITEs are absorbed (RFC 6026 §8.1).
    s.request(700, req.clone(), udp(CLIENT));
    // The TU retransmits its 2xx through the transaction.
    s.respond(1_200, id, response(&req, 200)).unwrap();
    // An ACK matching the transaction in Accepted is for the TU.
    s.request(1_300, request("ACK", "z9hG4bKl", Udp), udp(CLIENT));
    // A provisional or non-2xx final is refused in Accepted.
    assert!(s.respond(1_400, id, response(&req, 486)).is_err());
    assert!(s.respond(1_400, id, response(&req, 180)).is_err());
    s.run_until(100_000);
    assert_eq!(
        codes(&s),
        vec![(0, 180), (100, 180), (200, 200), (1_200, 200)]
    );
    assert_eq!(
        names(&s.events),
        t(&[(1_300, "Ack"), (32_200, &format!("Terminated({})", id.0))])
    );
}
