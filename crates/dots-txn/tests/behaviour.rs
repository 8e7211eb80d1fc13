//! CANCEL, transport errors, request and response matching, TU errors, and
//! robustness against malformed or unexpected input.

mod common;

use common::*;
use dots_sip::HeaderName as N;
use dots_sip::TransportKind::{Tcp, Udp};
use dots_sip::{Method, Peer, Request, SipMessage, TransportKind};
use dots_txn::{Event, TxnError, TxnId};

fn sent_methods(s: &Solo) -> Vec<(u64, String)> {
    s.sent
        .iter()
        .map(|(t, x)| {
            let first = x.bytes.split(|&b| b == b' ').next().unwrap();
            (*t, String::from_utf8_lossy(first).into_owned())
        })
        .collect()
}

#[test]
fn cancel_before_provisional_waits_for_one_then_consumes_its_responses() {
    let mut s = Solo::new();
    let req = request_with(
        "INVITE",
        "z9hG4bKc1",
        Udp,
        "Route: <sip:p1.example.com;lr>\r\n",
    );
    let id = s.send(0, req.clone(), udp(SERVER)).unwrap();
    s.cancel(100, id);
    // §9.1: no CANCEL before a provisional response.
    assert_eq!(sent_methods(&s), vec![(0, "INVITE".into())]);
    s.response(700, response(&req, 180), udp(SERVER));
    assert_eq!(
        sent_methods(&s),
        vec![
            (0, "INVITE".into()),
            (500, "INVITE".into()),
            (700, "CANCEL".into())
        ]
    );
    // A second cancel is a no-op.
    s.cancel(800, id);
    assert_eq!(s.sent.len(), 3);

    let cancel = parse_request(&s.sent[2].1.bytes);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, req.uri);
    assert_eq!(cancel.vias(), vec![req.top_via().unwrap()]);
    let h = |m: &Request, n| m.headers.get(n).map(str::to_string);
    for name in [N::CallId, N::From, N::To, N::Route] {
        assert_eq!(h(&cancel, name), h(&req, name), "{name:?}");
    }
    assert_eq!(h(&cancel, N::CSeq).as_deref(), Some("7 CANCEL"));
    assert_eq!(cancel.to().unwrap().tag(), None);

    // The CANCEL is retransmitted on its own Timer E.
    s.run_until(1_200);
    assert_eq!(sent_methods(&s)[3], (1_200, "CANCEL".into()));
    // Its 200 is consumed by the layer; the INVITE's 487 is reported and ACKed.
    s.response(1_300, response(&cancel, 200), udp(SERVER));
    s.response(1_400, response(&req, 487), udp(SERVER));
    assert_eq!(sent_methods(&s)[4], (1_400, "ACK".into()));
    assert_eq!(s.sent.len(), 5, "no CANCEL retransmission after its 200");
    s.run_until(100_000);
    assert_eq!(
        names(&s.events),
        vec![
            (700, format!("Response({},180)", id.0)),
            (1_400, format!("Response({},487)", id.0)),
            (33_400, format!("Terminated({})", id.0)),
        ]
    );
    assert_eq!(s.layer.counts(), (0, 0));
}

#[test]
fn cancel_before_provisional_is_dropped_when_a_final_arrives() {
    let mut s = Solo::new();
    let req = request("INVITE", "z9hG4bKc2", Udp);
    let id = s.send(0, req.clone(), udp(SERVER)).unwrap();
    s.cancel(0, id);
    s.response(200, response(&req, 486), udp(SERVER));
    s.run_until(100_000);
    assert_eq!(
        sent_methods(&s),
        vec![(0, "INVITE".into()), (200, "ACK".into())]
    );
    // After the final, cancel does nothing.
    let req = request("INVITE", "z9hG4bKc3", Udp);
    let id = s.send(100_000, req.clone(), udp(SERVER)).unwrap();
    s.response(100_100, response(&req, 200), udp(SERVER));
    s.cancel(100_200, id);
    assert_eq!(
        sent_methods(&s).last().unwrap(),
        &(100_000, "INVITE".into())
    );
    // cancel on non-INVITE and unknown transactions is a no-op too.
    let opt = s
        .send(100_300, request("OPTIONS", "z9hG4bKc4", Udp), udp(SERVER))
        .unwrap();
    s.layer.cancel(100_300, opt);
    s.cancel(100_300, TxnId(9_999));
    assert_eq!(
        sent_methods(&s).last().unwrap(),
        &(100_300, "OPTIONS".into())
    );
}

#[test]
fn cancel_timing_out_stays_inside_the_layer() {
    let mut s = Solo::new();
    let req = request("INVITE", "z9hG4bKc5", Tcp);
    let id = s.send(0, req.clone(), tcp(SERVER)).unwrap();
    s.response(10, response(&req, 100), tcp(SERVER));
    s.cancel(20, id);
    assert_eq!(s.layer.counts(), (0, 2));
    s.run_until(100_000);
    // The CANCEL's Timer F fired unseen; the INVITE, still without a final
    // response 64*T1 after its CANCEL, is given up (§9.1) so that a callee
    // ignoring CANCEL cannot pin it.
    assert_eq!(
        names(&s.events),
        vec![
            (10, format!("Response({},100)", id.0)),
            (32_020, format!("Timeout({})", id.0)),
            (32_020, format!("Terminated({})", id.0)),
        ]
    );
    assert_eq!(s.layer.counts(), (0, 0));
}

#[test]
fn server_matches_cancel_to_its_invite() {
    let mut s = Solo::new();
    let inv = request("INVITE", "z9hG4bKs1", Udp);
    s.request(0, inv.clone(), udp(CLIENT));
    let cancel = request("CANCEL", "z9hG4bKs1", Udp);
    s.request(100, cancel.clone(), udp(CLIENT));
    // A CANCEL with another branch, or from another sent-by, matches nothing.
    s.request(100, request("CANCEL", "z9hG4bKs2", Udp), udp(CLIENT));
    let mut other_host = cancel.clone();
    other_host.headers.pop_front(N::Via);
    other_host
        .headers
        .push_front(N::Via, "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKs1");
    s.request(100, other_host, udp(CLIENT));

    let ev: Vec<_> = s
        .events
        .iter()
        .map(|(_, e)| match e {
            Event::Request { id, cancels, .. } => (*id, *cancels),
            other => panic!("unexpected {}", event_name(other)),
        })
        .collect();
    let invite_id = ev[0].0;
    assert_eq!(ev[0].1, None);
    assert_eq!(ev[1].1, Some(invite_id));
    assert_eq!(ev[2].1, None);
    assert_eq!(ev[3].1, None);
    assert_eq!(s.layer.server_request(invite_id), Some(&inv));
    // A non-INVITE request is kept only when the TU hands it back.
    assert_eq!(s.layer.server_request(ev[1].0), None);
    s.layer.keep_request(ev[1].0, cancel.clone());
    assert_eq!(
        s.layer.server_request(ev[1].0).map(|r| &r.method),
        Some(&Method::Cancel)
    );
    // Handing an INVITE back changes nothing.
    s.layer.keep_request(invite_id, cancel.clone());
    assert_eq!(s.layer.server_request(invite_id), Some(&inv));
    assert_eq!(s.layer.counts(), (4, 0));
    // A retransmitted CANCEL is its own transaction's retransmission.
    s.request(200, cancel, udp(CLIENT));
    assert_eq!(s.events.len(), 4);
}

#[test]
fn transport_error_times_out_client_transactions_to_that_peer() {
    let mut s = Solo::new();
    let a = tcp(SERVER);
    let b = tcp("10.0.0.3:5060");
    let inv = request("INVITE", "z9hG4bKx1", Tcp);
    let i1 = s.send(0, inv.clone(), a).unwrap();
    let i2 = s.send(0, request("OPTIONS", "z9hG4bKx2", Tcp), a).unwrap();
    let i3 = s.send(0, request("OPTIONS", "z9hG4bKx3", Tcp), b).unwrap();
    s.response(10, response(&inv, 180), a);
    // Same address over another transport is another destination.
    s.transport_error(20, udp(SERVER));
    assert_eq!(s.layer.counts(), (0, 3));
    s.transport_error(30, a);
    assert_eq!(
        names(&s.events),
        vec![
            (10, format!("Response({},180)", i1.0)),
            (30, format!("Timeout({})", i1.0)),
            (30, format!("Terminated({})", i1.0)),
            (30, format!("Timeout({})", i2.0)),
            (30, format!("Terminated({})", i2.0)),
        ]
    );
    assert_eq!(s.layer.counts(), (0, 1));
    // The transaction to the other peer runs on to its own Timer F.
    s.run_until(100_000);
    assert_eq!(
        names(&s.events)[5..],
        [
            (32_000, format!("Timeout({})", i3.0)),
            (32_000, format!("Terminated({})", i3.0)),
        ]
    );
}

#[test]
fn transport_error_on_a_finished_transaction_reports_no_timeout() {
    let mut s = Solo::new();
    let req = request("OPTIONS", "z9hG4bKx4", Udp);
    let id = s.send(0, req.clone(), udp(SERVER)).unwrap();
    s.response(10, response(&req, 200), udp(SERVER));
    s.transport_error(20, udp(SERVER));
    assert_eq!(
        names(&s.events),
        vec![
            (10, format!("Response({},200)", id.0)),
            (20, format!("Terminated({})", id.0)),
        ]
    );
}

#[test]
fn responses_match_on_branch_and_cseq_method() {
    let mut s = Solo::new();
    let req = request("OPTIONS", "z9hG4bKr1", Udp);
    let id = s.send(0, req.clone(), udp(SERVER)).unwrap();
    // Same branch, other CSeq method: not ours.
    let mut wrong_method = response(&req, 200);
    wrong_method.headers.set(N::CSeq, "7 INFO");
    s.response(10, wrong_method, udp(SERVER));
    // Other branch: not ours.
    let other = request("OPTIONS", "z9hG4bKr2", Udp);
    s.response(10, response(&other, 200), udp(SERVER));
    s.response(20, response(&req, 200), udp(SERVER));
    assert_eq!(
        names(&s.events),
        vec![
            (10, "Stray(200)".into()),
            (10, "Stray(200)".into()),
            (20, format!("Response({},200)", id.0)),
        ]
    );
    match &s.events[0].1 {
        Event::StrayResponse { source, .. } => assert_eq!(*source, udp(SERVER)),
        _ => unreachable!(),
    }
}

#[test]
fn send_request_refuses_what_cannot_be_a_transaction() {
    let mut s = Solo::new();
    let dest = udp(SERVER);
    let mut no_branch = request("OPTIONS", "z9hG4bKq1", Udp);
    no_branch.headers.remove_all(N::Via);
    no_branch
        .headers
        .push_front(N::Via, "SIP/2.0/UDP 10.0.0.1:5060");
    assert!(matches!(
        s.layer.send_request(0, no_branch, dest),
        Err(TxnError::MissingBranch)
    ));
    assert!(matches!(
        s.layer
            .send_request(0, request("ACK", "z9hG4bKq2", Udp), dest),
        Err(TxnError::AckIsNotATransaction)
    ));
    let mut mismatch = request("OPTIONS", "z9hG4bKq3", Udp);
    mismatch.headers.set(N::CSeq, "7 INFO");
    assert!(matches!(
        s.layer.send_request(0, mismatch, dest),
        Err(TxnError::CSeqMethodMismatch { .. })
    ));
    let mut no_cseq = request("OPTIONS", "z9hG4bKq4", Udp);
    no_cseq.headers.remove_all(N::CSeq);
    assert!(matches!(
        s.layer.send_request(0, no_cseq, dest),
        Err(TxnError::MissingCSeq)
    ));
    let ok = request("OPTIONS", "z9hG4bKq5", Udp);
    s.layer.send_request(0, ok.clone(), dest).unwrap();
    assert!(matches!(
        s.layer.send_request(0, ok, dest),
        Err(TxnError::DuplicateTransaction { .. })
    ));
    // Nothing refused was sent or kept.
    s.drain();
    assert_eq!(s.sent.len(), 1);
    assert_eq!(s.layer.counts(), (0, 1));
}

#[test]
fn respond_refuses_unknown_transactions_and_bad_codes() {
    let mut s = Solo::new();
    let req = request("OPTIONS", "z9hG4bKq6", Udp);
    s.request(0, req.clone(), udp(CLIENT));
    let Some((_, Event::Request { id, .. })) = s.events.first() else {
        panic!()
    };
    let id = *id;
    assert!(matches!(
        s.layer.respond(0, TxnId(777), response(&req, 200)),
        Err(TxnError::UnknownTransaction(TxnId(777)))
    ));
    for code in [0, 99, 700, 999] {
        let mut r = response(&req, 200);
        r.code = code;
        assert!(matches!(
            s.layer.respond(0, id, r),
            Err(TxnError::InvalidStatus(c)) if c == code
        ));
    }
    s.drain();
    assert!(s.sent.is_empty());
    s.layer.respond(0, id, response(&req, 404)).unwrap();
    let err = s.layer.respond(0, id, response(&req, 200)).unwrap_err();
    assert!(matches!(
        err,
        TxnError::InvalidForState {
            code: 200,
            state: "Completed"
        }
    ));
    assert!(err.to_string().contains("Completed"));
}

/// A request from an RFC 2543 element: its branch lacks the magic cookie.
fn legacy(method: &str, cseq_method: &str, to_tag: &str) -> Request {
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=old1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>{to_tag}\r\n\
         Call-ID: legacy@example.com\r\n\
         CSeq: 3 {cseq_method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    parse_request(text.as_bytes())
}

#[test]
fn rfc_2543_requests_are_matched_without_branch() {
    let mut s = Solo::new();
    let inv = legacy("INVITE", "INVITE", "");
    s.request(0, inv.clone(), udp(CLIENT));
    s.request(400, inv.clone(), udp(CLIENT));
    let id = match &s.events[..] {
        [(0, Event::Request { id, .. })] => *id,
        other => panic!("unexpected {:?}", names(other)),
    };
    s.respond(500, id, response(&inv, 486)).unwrap();
    s.request(600, inv, udp(CLIENT));
    // The ACK carries our To tag and still matches.
    s.request(700, legacy("ACK", "ACK", ";tag=b1"), udp(CLIENT));
    // CANCEL matches the INVITE it cancels.
    s.request(800, legacy("CANCEL", "CANCEL", ""), udp(CLIENT));
    // A request with another CSeq is another transaction.
    let mut bye = legacy("BYE", "BYE", ";tag=b1");
    bye.headers.set(N::CSeq, "4 BYE");
    s.request(900, bye, udp(CLIENT));
    s.run_until(100_000);
    let got: Vec<_> = s
        .events
        .iter()
        .map(|(t, e)| match e {
            Event::Request {
                request, cancels, ..
            } => (*t, request.method.to_string(), *cancels),
            other => (*t, event_name(other), None),
        })
        .collect();
    assert_eq!(got[0], (0, "INVITE".into(), None));
    assert_eq!(got[1], (800, "CANCEL".into(), Some(id)));
    assert_eq!(got[2].0, 900);
    assert_eq!(got[2].1, "BYE");
    // 486 at 500, again for the retransmitted INVITE at 600; the ACK at 700
    // stopped Timer G (which would have fired at 1000).
    assert_eq!(s.sent_times(), vec![500, 600]);
    assert!(got.contains(&(5_700, format!("Terminated({})", id.0), None)));
    assert_eq!(s.layer.counts(), (2, 0));
}

#[test]
fn ack_without_transaction_goes_to_the_tu() {
    let mut s = Solo::new();
    let ack = request("ACK", "z9hG4bKe2e", Udp);
    s.request(0, ack.clone(), udp(CLIENT));
    match &s.events[..] {
        [(0, Event::Ack { request, source })] => {
            assert_eq!(request, &ack);
            assert_eq!(*source, udp(CLIENT));
        }
        other => panic!("unexpected {:?}", names(other)),
    }
    assert_eq!(s.layer.counts(), (0, 0));
}

#[test]
fn malformed_and_unexpected_input_never_panics() {
    let mut s = Solo::new();
    let src = udp(CLIENT);
    let base = request("INVITE", "z9hG4bKz", Udp);

    // Requests without a usable Via are dropped: no answer could be routed.
    let mut no_via = base.clone();
    no_via.headers.remove_all(N::Via);
    s.request(0, no_via, src);
    let mut bad_via = base.clone();
    bad_via.headers.remove_all(N::Via);
    bad_via.headers.push(N::Via, "garbage");
    s.request(0, bad_via, src);
    // Legacy requests without Call-ID or CSeq cannot be matched either.
    let mut legacy_no_cseq = legacy("OPTIONS", "OPTIONS", "");
    legacy_no_cseq.headers.remove_all(N::CSeq);
    s.request(0, legacy_no_cseq, src);
    // An empty request.
    s.request(0, Request::new(Method::Options, base.uri.clone()), src);
    assert!(s.events.is_empty());
    assert_eq!(s.layer.counts(), (0, 0));

    // Responses without Via or CSeq, with out-of-range codes, or without a
    // branch.
    let mut r = response(&base, 200);
    r.headers.remove_all(N::Via);
    s.response(0, r, src);
    let mut r = response(&base, 200);
    r.headers.remove_all(N::CSeq);
    s.response(0, r, src);
    let mut r = response(&base, 200);
    r.code = 42;
    s.response(0, r, src);
    let mut r = response(&base, 200);
    r.headers.set(N::Via, "SIP/2.0/UDP 10.0.0.1:5060");
    s.response(0, r, src);
    assert_eq!(names(&s.events), vec![(0, "Stray(200)".into())]);

    // A client INVITE whose responses come in every odd order.
    let id = s.send(0, base.clone(), udp(SERVER)).unwrap();
    for code in [486, 180, 200, 100, 603, 200] {
        s.response(10, response(&base, code), udp(SERVER));
    }
    s.cancel(10, id);
    s.run_until(100_000);
    assert_eq!(s.layer.counts(), (0, 0));

    // Server: an ACK before any final is ignored, responses to a
    // transaction that is gone are refused.
    let mut s = Solo::new();
    s.request(0, base.clone(), src);
    s.request(0, request("ACK", "z9hG4bKz", Udp), src);
    let id = match &s.events[..] {
        [(0, Event::Request { id, .. })] => *id,
        other => panic!("unexpected {:?}", names(other)),
    };
    s.respond(0, id, response(&base, 500)).unwrap();
    s.run_until(100_000);
    assert!(s.respond(100_000, id, response(&base, 500)).is_err());
    assert_eq!(s.layer.server_request(id), None);
}

#[test]
fn poll_timeout_is_exact_after_timers_are_cancelled() {
    let mut s = Solo::new();
    let req = request("INVITE", "z9hG4bKp", Udp);
    s.send(0, req.clone(), udp(SERVER)).unwrap();
    assert_eq!(s.layer.poll_timeout(), Some(500));
    s.response(100, response(&req, 180), udp(SERVER));
    // Timers A and B were cancelled: nothing is pending any more.
    assert_eq!(s.layer.poll_timeout(), None);
    s.response(200, response(&req, 200), udp(SERVER));
    assert_eq!(s.layer.poll_timeout(), Some(32_200));
}

#[test]
fn responses_go_to_the_source_given_with_its_flow() {
    let mut s = Solo::new();
    let src = Peer {
        transport: TransportKind::Tls,
        addr: addr(CLIENT),
        flow: Some(42),
    };
    let req = request("INVITE", "z9hG4bKf", TransportKind::Tls);
    s.request(0, req.clone(), src);
    let Some((_, Event::Request { id, .. })) = s.events.first() else {
        panic!()
    };
    let id = *id;
    s.respond(0, id, response(&req, 100)).unwrap();
    s.respond(0, id, response(&req, 404)).unwrap();
    // Reliable: no Timer G, only H until the ACK.
    assert_eq!(s.layer.poll_timeout(), Some(32_000));
    assert!(s.sent.iter().all(|(_, x)| x.dest == src));
    assert_eq!(s.sent.len(), 2);
}

#[test]
fn random_input_sequences_keep_the_layer_consistent() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let methods = ["INVITE", "ACK", "CANCEL", "OPTIONS", "BYE"];
    let branches = ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3", "legacy"];
    let codes = [0, 100, 180, 200, 202, 302, 404, 487, 503, 699, 700];
    let peers = [udp(CLIENT), tcp(CLIENT), udp(SERVER)];
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut s = Solo::new();
        let mut ids: Vec<TxnId> = Vec::new();
        for _ in 0..400 {
            let m = methods[rng.random_range(0..methods.len())];
            let b = branches[rng.random_range(0..branches.len())];
            let code = codes[rng.random_range(0..codes.len())];
            let peer = peers[rng.random_range(0..peers.len())];
            let transport = peer.transport;
            let req = request(m, b, transport);
            let t = s.now + rng.random_range(0..3_000);
            match rng.random_range(0..7) {
                0 => s.request(t, req, peer),
                1 => {
                    let mut r = response(&req, 200);
                    r.code = code;
                    s.response(t, r, peer);
                }
                2 => {
                    if let Ok(id) = s.send(t, req, peer) {
                        ids.push(id);
                    }
                }
                3 => {
                    if let Some(&id) = ids.get(rng.random_range(0..ids.len().max(1))) {
                        s.cancel(t, id);
                    }
                }
                4 => s.transport_error(t, peer),
                5 => {
                    let events = s.take_events();
                    for (_, e) in events {
                        if let Event::Request { id, request, .. } = e {
                            let mut r = response(&request, 200);
                            r.code = code;
                            let _ = s.respond(t, id, r);
                        }
                    }
                }
                _ => s.run_until(t),
            }
            // Due timers have fired and new ones are armed in the future.
            if let Some(next) = s.layer.poll_timeout() {
                assert!(next > s.now, "seed {seed}: {next} <= {}", s.now);
            }
        }
        // Whatever happened, client transactions all end on their own.
        s.run_until(s.now + 200_000);
        assert_eq!(s.layer.counts().1, 0, "seed {seed}");
        if let Some(next) = s.layer.poll_timeout() {
            assert!(next > s.now);
        }
    }
}

#[test]
fn respond_and_forget_ends_a_non_invite_transaction_at_its_final_response() {
    let mut s = Solo::new();
    let req = request("REGISTER", "z9hG4bKsl1", Udp);
    s.request(0, req.clone(), udp(CLIENT));
    let Some((_, Event::Request { id, .. })) = s.events.first() else {
        panic!("no request event")
    };
    let first = *id;
    s.layer
        .respond_and_forget(5, first, response(&req, 200))
        .unwrap();
    s.drain();
    assert_eq!(s.sent.len(), 1, "the final response goes out");
    assert!(parse_response(&s.sent[0].1.bytes).code == 200);
    assert_eq!(s.layer.counts(), (0, 0), "no transaction is left");
    assert!(
        s.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Terminated { id } if *id == first)),
        "the TU hears that it ended"
    );
    assert_eq!(s.layer.poll_timeout(), None, "no Timer J");

    // The retransmission is a new request for the TU, not re-sent by the layer.
    s.events.clear();
    s.request(500, req.clone(), udp(CLIENT));
    assert_eq!(s.sent.len(), 1);
    let Some((_, Event::Request { id: again, .. })) = s.events.first() else {
        panic!(
            "the retransmission did not reach the TU: {:?}",
            names(&s.events)
        )
    };
    assert_ne!(*again, first);

    // Provisional responses and INVITEs keep their transaction as with `respond`.
    let again = *again;
    s.layer
        .respond_and_forget(501, again, response(&req, 100))
        .unwrap();
    assert_eq!(s.layer.counts().0, 1);
    let invite = request("INVITE", "z9hG4bKsl2", Udp);
    s.request(600, invite.clone(), udp(CLIENT));
    let Some((_, Event::Request { id: inv, .. })) = s.events.last() else {
        panic!()
    };
    let inv = *inv;
    s.layer
        .respond_and_forget(601, inv, response(&invite, 486))
        .unwrap();
    assert_eq!(s.layer.counts().0, 2, "a rejected INVITE waits for its ACK");
}
