//! Forking, CANCEL, Timers B and C, registration expiry, and a whole call
//! over a lossy network: all on simulated time.

mod common;

use common::*;
use dots_registrar::Change;
use dots_sip::{HeaderName, Message, Method, NameAddr, Request, SipMessage};

/// An open node, alice, and bob registered twice: bob1 at 5071 (q=1.0) and
/// bob2 at 5072 (q=0.5).
fn two_contacts(bob1_invite: &[u16], bob2_invite: &[u16]) -> (Sim, UaId, UaId, UaId) {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob1 = sim.add_ua("bob", 5071);
    let bob2 = sim.add_ua("bob", 5072);
    let d = sim.ua_mut(bob1).register_draft(3600);
    sim.send(bob1, &d);
    let mut d = sim.ua_mut(bob2).register_draft(3600);
    d.contact = Some("<sip:bob@127.0.0.1:5072>;q=0.5".into());
    sim.send(bob2, &d);
    let ok = sim.ua(bob2).last_response(Method::Register);
    assert_eq!(ok.code, 200);
    let contacts = headers_all(ok, HeaderName::Contact);
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    let q_of = |uri: &str| {
        contacts
            .iter()
            .map(|c| NameAddr::parse(c).unwrap())
            .find(|na| na.uri.to_string() == uri)
            .map(|na| na.param("q").flatten().map(str::to_string))
            .expect("contact listed")
    };
    assert_eq!(q_of("sip:bob@127.0.0.1:5072").as_deref(), Some("0.5"));
    assert_eq!(sim.engine.registrations(), (1, 2));
    sim.ua_mut(bob1).on_invite = bob1_invite.to_vec();
    sim.ua_mut(bob2).on_invite = bob2_invite.to_vec();
    (sim, alice, bob1, bob2)
}

/// The INVITE a UA received (exactly one).
fn the_invite(sim: &Sim, ua: UaId) -> Request {
    let got = sim.ua(ua).requests(Method::Invite);
    assert_eq!(got.len(), 1, "{} INVITEs at {}", got.len(), sim.ua(ua).addr);
    got[0].clone()
}

/// RFC 3261 §9.1: a CANCEL matches its INVITE in Request-URI, top Via
/// branch, Call-ID, From, To and CSeq number.
fn assert_cancels(cancel: &Request, invite: &Request) {
    assert_eq!(cancel.uri, invite.uri);
    assert_eq!(branch_of(cancel), branch_of(invite));
    assert_eq!(cancel.call_id(), invite.call_id());
    assert_eq!(cancel.cseq().unwrap().seq, invite.cseq().unwrap().seq);
    assert_eq!(cancel.cseq().unwrap().method, Method::Cancel);
    assert_eq!(
        cancel.headers.get(HeaderName::From),
        invite.headers.get(HeaderName::From)
    );
    assert_eq!(to_tag(cancel), None);
}

#[test]
fn invite_rings_both_contacts_and_the_first_200_cancels_the_other() {
    let (mut sim, alice, bob1, bob2) = two_contacts(&[180], &[180]);
    sim.invite(alice, "sip:bob@127.0.0.1");

    let inv1 = the_invite(&sim, bob1);
    let inv2 = the_invite(&sim, bob2);
    assert_eq!(inv1.uri.to_string(), "sip:bob@127.0.0.1:5071");
    assert_eq!(inv2.uri.to_string(), "sip:bob@127.0.0.1:5072");
    assert_ne!(branch_of(&inv1), branch_of(&inv2), "one branch per target");
    for inv in [&inv1, &inv2] {
        assert_eq!(inv.max_forwards(), Some(69));
        assert_eq!(headers_all(inv, HeaderName::RecordRoute), vec![NODE_RR]);
    }
    // Both rings reach alice, each with its own To tag.
    assert_eq!(sim.ua(alice).codes(Method::Invite), vec![100, 180, 180]);
    let tags: Vec<_> = sim
        .ua(alice)
        .responses(Method::Invite)
        .iter()
        .filter(|r| r.code == 180)
        .map(|r| to_tag(*r).unwrap())
        .collect();
    assert_eq!(tags, ["bob-5071", "bob-5072"]);

    sim.answer(bob1, 200);

    let cancels = sim.ua(bob2).requests(Method::Cancel);
    assert_eq!(cancels.len(), 1);
    assert_cancels(cancels[0], &inv2);
    assert!(sim.ua(bob1).requests(Method::Cancel).is_empty());
    // bob2's 487 is ACKed by the node, hop by hop, on the INVITE's branch.
    let acks = sim.ua(bob2).requests(Method::Ack);
    assert_eq!(acks.len(), 1);
    assert_eq!(branch_of(acks[0]), branch_of(&inv2));

    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1, "{:?}", sim.ua(alice).codes(Method::Invite));
    assert_eq!(finals[0].code, 200);
    assert_eq!(to_tag(finals[0]).as_deref(), Some("bob-5071"));
    let oks = sim
        .ua(alice)
        .codes(Method::Invite)
        .into_iter()
        .filter(|c| *c >= 200)
        .count();
    assert_eq!(oks, 1, "exactly one final reached alice");
    assert_eq!(sim.ua(bob1).requests(Method::Ack).len(), 1);
    assert_eq!(sim.engine.transactions(), (0, 0));
}

#[test]
fn a_600_wins_and_the_ringing_branch_is_cancelled() {
    let (mut sim, alice, bob1, bob2) = two_contacts(&[180], &[180]);
    sim.invite(alice, "sip:bob@127.0.0.1");
    let inv1 = the_invite(&sim, bob1);

    sim.answer(bob2, 600);
    let cancels = sim.ua(bob1).requests(Method::Cancel);
    assert_eq!(cancels.len(), 1, "the ringing branch is cancelled");
    assert_cancels(cancels[0], &inv1);

    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1, "{:?}", sim.ua(alice).codes(Method::Invite));
    assert_eq!(finals[0].code, 600);
    assert_eq!(to_tag(finals[0]).as_deref(), Some("bob-5072"));
    assert!(!sim.ua(alice).codes(Method::Invite).contains(&487));
}

#[test]
fn both_busy_486_and_600_gives_600() {
    let (mut sim, alice, _bob1, bob2) = two_contacts(&[486], &[180]);
    sim.invite(alice, "sip:bob@127.0.0.1");
    // The 486 alone is not forwarded while the other branch rings.
    assert!(sim.ua(alice).finals(Method::Invite).is_empty());
    sim.answer(bob2, 600);
    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1, "{:?}", sim.ua(alice).codes(Method::Invite));
    assert_eq!(finals[0].code, 600);
}

#[test]
fn two_4xx_give_one_of_them() {
    // §16.7 step 6: the lowest class wins, and any response of that class
    // may be chosen.
    let (mut sim, alice, _bob1, _bob2) = two_contacts(&[486], &[404]);
    sim.invite(alice, "sip:bob@127.0.0.1");
    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1, "{:?}", sim.ua(alice).codes(Method::Invite));
    assert!(matches!(finals[0].code, 486 | 404), "{}", finals[0].code);
}

#[test]
fn a_4xx_beats_a_5xx() {
    let (mut sim, alice, _bob1, _bob2) = two_contacts(&[500], &[486]);
    sim.invite(alice, "sip:bob@127.0.0.1");
    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1, "{:?}", sim.ua(alice).codes(Method::Invite));
    assert_eq!(finals[0].code, 486);
}

#[test]
fn a_503_from_the_only_branch_becomes_500() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    sim.ua_mut(bob).on_invite = vec![503];
    sim.invite(alice, "sip:bob@127.0.0.1");
    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].code, 500);
    assert!(!sim.ua(alice).codes(Method::Invite).contains(&503));
    // The node ACKed bob's 503.
    assert_eq!(sim.ua(bob).requests(Method::Ack).len(), 1);
}

#[test]
fn cancel_from_the_caller_cancels_every_branch_and_ends_in_487() {
    let (mut sim, alice, bob1, bob2) = two_contacts(&[180], &[180]);
    let inv = sim.invite(alice, "sip:bob@127.0.0.1");
    let inv1 = the_invite(&sim, bob1);
    let inv2 = the_invite(&sim, bob2);

    let cancel = sim.ua(alice).cancel_draft(&inv);
    sim.send(alice, &cancel);

    // The node answers the CANCEL itself...
    let cancel_resp = sim.ua(alice).responses(Method::Cancel);
    assert_eq!(cancel_resp.len(), 1);
    assert_eq!(cancel_resp[0].code, 200);
    assert_eq!(branch_of(cancel_resp[0]), branch_of(&inv));
    // ...and cancels each branch with a CANCEL matching what it sent there.
    for (ua, fwd) in [(bob1, &inv1), (bob2, &inv2)] {
        let cancels = sim.ua(ua).requests(Method::Cancel);
        assert_eq!(cancels.len(), 1);
        assert_cancels(cancels[0], fwd);
    }

    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1, "{:?}", sim.ua(alice).codes(Method::Invite));
    assert_eq!(finals[0].code, 487);
    assert_eq!(branch_of(finals[0]), branch_of(&inv));
    assert_eq!(sim.engine.transactions(), (0, 0));
}

#[test]
fn a_contact_that_never_answers_gets_408_after_timer_b() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    sim.ua_mut(bob).on_invite = vec![];
    let t0 = sim.now;
    sim.invite(alice, "sip:bob@127.0.0.1");
    assert_eq!(sim.ua(alice).codes(Method::Invite), vec![100]);

    sim.advance(31_999);
    assert_eq!(sim.ua(alice).codes(Method::Invite), vec![100]);
    sim.advance(1);
    let resps = sim.ua(alice).responses_at(Method::Invite);
    assert_eq!(resps.len(), 2);
    assert_eq!(resps[1].1.code, 408);
    assert_eq!(resps[1].0, t0 + 64 * T1, "Timer B is 64*T1");

    // Timer A: the node retransmitted at T1, 2*T1, 4*T1, ... until Timer B.
    let times: Vec<u64> = sim
        .ua(bob)
        .request_copies(Method::Invite)
        .iter()
        .map(|(at, _)| at - t0)
        .collect();
    assert_eq!(times, [0, 500, 1500, 3500, 7500, 15500, 31500]);

    sim.run_until_idle();
    assert_eq!(sim.ua(alice).finals(Method::Invite).len(), 1);
}

#[test]
fn timer_c_cancels_a_branch_that_rings_forever() {
    let mut cfg = config(true);
    cfg.timer_c = 5_000;
    let mut sim = Sim::new(cfg);
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    sim.ua_mut(bob).on_invite = vec![180];
    let t0 = sim.now;
    sim.invite(alice, "sip:bob@127.0.0.1");
    let inv = the_invite(&sim, bob);
    assert_eq!(sim.ua(alice).codes(Method::Invite), vec![100, 180]);

    sim.advance(4_999);
    assert!(sim.ua(bob).requests(Method::Cancel).is_empty());
    sim.advance(1);
    let cancels = sim.ua(bob).request_copies(Method::Cancel);
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].0, t0 + 5_000);
    assert_cancels(cancels[0].1, &inv);

    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1, "{:?}", sim.ua(alice).codes(Method::Invite));
    assert_eq!(finals[0].code, 487);
}

#[test]
fn timer_c_is_restarted_by_each_provisional() {
    let mut cfg = config(true);
    cfg.timer_c = 5_000;
    let mut sim = Sim::new(cfg);
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    sim.ua_mut(bob).on_invite = vec![180];
    sim.invite(alice, "sip:bob@127.0.0.1");
    sim.advance(4_000);
    sim.answer(bob, 183);
    sim.advance(4_000);
    assert!(
        sim.ua(bob).requests(Method::Cancel).is_empty(),
        "the 183 restarted Timer C"
    );
    sim.answer(bob, 200);
    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].code, 200);
}

#[test]
fn a_whole_call_survives_20_percent_loss() {
    let mut total_lost = 0;
    for seed in 1..=8 {
        let mut sim = Sim::open().lossy(seed, 0.2);
        let alice = sim.add_ua("alice", 5070);
        let bob = sim.add_ua("bob", 5071);

        let d = sim.ua_mut(bob).register_draft(3600);
        sim.send(bob, &d);
        assert!(
            sim.run_until(60_000, |s| s.ua(bob).codes(Method::Register).contains(&200)),
            "seed {seed}: REGISTER"
        );

        sim.invite(alice, "sip:bob@127.0.0.1");
        assert!(
            sim.run_until(60_000, |s| {
                s.ua(alice).codes(Method::Invite).contains(&200)
                    && !s.ua(bob).requests(Method::Ack).is_empty()
            }),
            "seed {seed}: INVITE/200/ACK; alice got {:?}",
            sim.ua(alice).codes(Method::Invite)
        );
        assert_eq!(sim.ua(alice).dialogs.len(), 1, "seed {seed}");

        let bye = sim.ua_mut(alice).in_dialog(0, "BYE");
        sim.send(alice, &bye);
        assert!(
            sim.run_until(60_000, |s| s.ua(alice).codes(Method::Bye).contains(&200)),
            "seed {seed}: BYE"
        );
        sim.run_until_idle();

        assert_eq!(sim.ua(bob).requests(Method::Invite).len(), 1, "seed {seed}");
        assert_eq!(sim.ua(bob).requests(Method::Bye).len(), 1, "seed {seed}");
        let finals = sim.ua(alice).finals(Method::Invite);
        assert_eq!(finals.len(), 1, "seed {seed}");
        assert_eq!(finals[0].code, 200);
        assert_eq!(sim.engine.transactions(), (0, 0), "seed {seed}");
        total_lost += sim.lost;
    }
    assert!(
        total_lost > 10,
        "the network lost only {total_lost} datagrams"
    );
}

#[test]
fn a_registration_expires_on_simulated_time() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    let ok = sim.register(bob, 60);
    let contact = NameAddr::parse(&headers_all(&ok, HeaderName::Contact)[0]).unwrap();
    assert_eq!(contact.param("expires"), Some(Some("60")));
    let aor = sim.engine.local_aor("bob");
    let changes = sim.engine.drain_binding_changes();
    assert!(matches!(&changes[..], [Change::Upsert(b)] if b.aor == aor));

    sim.advance(59_000);
    assert_eq!(sim.engine.lookup(&aor, sim.now).len(), 1);
    sim.advance(2_000);
    assert!(sim.engine.lookup(&aor, sim.now).is_empty());
    assert_eq!(sim.engine.registrations(), (0, 0));
    let changes = sim.engine.drain_binding_changes();
    assert_eq!(
        changes,
        vec![Change::Remove {
            aor: aor.clone(),
            contact_uri: "sip:bob@127.0.0.1:5071".into(),
        }]
    );

    // A user who was registered is now only temporarily unavailable.
    sim.invite(alice, "sip:bob@127.0.0.1");
    assert_eq!(sim.ua(alice).last_response(Method::Invite).code, 480);
    assert!(sim.ua(bob).requests(Method::Invite).is_empty());
}

#[test]
fn responses_travel_back_along_the_vias() {
    // The node forwards to the UA that registered and answers to the address
    // the request came from (received/rport), never to anyone else.
    let (mut sim, alice, bob1, bob2) = two_contacts(&[180, 200], &[180]);
    sim.invite(alice, "sip:bob@127.0.0.1");
    sim.run_until_idle();
    assert!(
        sim.undeliverable.is_empty(),
        "{:?}",
        sim.undeliverable.len()
    );
    for msg in sim.sent_to(sim.ua(alice).addr) {
        match msg {
            Message::Response(r) => assert_eq!(r.vias().len(), 1),
            Message::Request(r) => panic!("alice got a request: {}", r.method),
        }
    }
    assert_eq!(sim.ua(bob1).requests(Method::Ack).len(), 1);
    assert_eq!(sim.ua(bob2).requests(Method::Cancel).len(), 1);
}

#[test]
fn every_2xx_of_a_forked_invite_is_forwarded() {
    // §16.7 step 5: a 2xx is forwarded at once, even after another 2xx.
    let (mut sim, alice, bob1, bob2) = two_contacts(&[200], &[200]);
    sim.invite(alice, "sip:bob@127.0.0.1");
    sim.run_until_idle();
    let tags: Vec<String> = sim
        .ua(alice)
        .finals(Method::Invite)
        .iter()
        .filter(|r| r.code == 200)
        .map(|r| to_tag(*r).unwrap())
        .collect();
    assert_eq!(tags, ["bob-5071", "bob-5072"]);
    assert_eq!(sim.ua(alice).dialogs.len(), 2);
    assert_eq!(sim.ua(bob1).requests(Method::Ack).len(), 1);
    assert_eq!(sim.ua(bob2).requests(Method::Ack).len(), 1);
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    // §9.1: a CANCEL must not be sent before a provisional response.
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    sim.ua_mut(bob).on_invite = vec![];
    let inv = sim.invite(alice, "sip:bob@127.0.0.1");
    let cancel = sim.ua(alice).cancel_draft(&inv);
    sim.send(alice, &cancel);
    assert_eq!(sim.ua(alice).codes(Method::Cancel), vec![200]);
    sim.advance(2_000);
    assert!(sim.ua(bob).requests(Method::Cancel).is_empty());

    sim.answer(bob, 180);
    let fwd = the_invite(&sim, bob);
    let cancels = sim.ua(bob).requests(Method::Cancel);
    assert_eq!(cancels.len(), 1, "the CANCEL follows the provisional");
    assert_cancels(cancels[0], &fwd);
    sim.run_until_idle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].code, 487);
}

#[test]
fn timer_c_without_a_provisional_acts_as_408() {
    // §16.8: Timer C on a branch that sent nothing: behave as if a 408 was
    // received.
    let mut cfg = config(true);
    cfg.timer_c = 5_000;
    let mut sim = Sim::new(cfg);
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    sim.ua_mut(bob).on_invite = vec![];
    let t0 = sim.now;
    sim.invite(alice, "sip:bob@127.0.0.1");
    sim.run_until_idle();
    let finals = sim.ua(alice).responses_at(Method::Invite);
    let finals: Vec<_> = finals.iter().filter(|(_, r)| r.code >= 200).collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].1.code, 408);
    assert!(finals[0].0 <= t0 + 64 * T1);
}

#[test]
fn a_branch_that_never_answers_its_cancel_still_ends() {
    // §16.8: when Timer C fires the proxy must reset it or end the client
    // transaction; §9.1: with no final response 64*T1 after the CANCEL, the
    // original transaction is considered cancelled. The caller is not left
    // ringing forever.
    let mut cfg = config(true);
    cfg.timer_c = 5_000;
    let mut sim = Sim::new(cfg);
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    sim.ua_mut(bob).on_invite = vec![180];
    sim.ua_mut(bob).answers_cancel = false;
    let t0 = sim.now;
    sim.invite(alice, "sip:bob@127.0.0.1");
    let limit = 5_000 + 64 * T1 + 1_000;
    assert!(
        sim.run_until(limit, |s| !s.ua(alice).finals(Method::Invite).is_empty()),
        "alice still ringing after {limit} ms: {:?}",
        sim.ua(alice).codes(Method::Invite)
    );
    assert_eq!(sim.ua(bob).requests(Method::Cancel).len(), 1);
    let finals = sim.ua(alice).responses_at(Method::Invite);
    let (at, resp) = finals.last().unwrap();
    assert!(matches!(resp.code, 408 | 487), "{}", resp.code);
    assert!(
        *at >= t0 + 5_000 + 64 * T1,
        "not before 64*T1 after the CANCEL"
    );
    // The server transaction ends once alice ACKs the final.
    sim.advance(64 * T1);
    assert_eq!(sim.engine.transactions().0, 0);
    assert_eq!(sim.ua(alice).finals(Method::Invite).len(), 1);
}

#[test]
fn a_preloaded_route_to_the_node_is_popped_and_the_user_looked_up() {
    let mut sim = Sim::open();
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    let d = sim
        .ua_mut(alice)
        .draft("INVITE", "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>")
        .header(format!("Route: {NODE_RR}"));
    sim.send(alice, &d);
    let fwd = the_invite(&sim, bob);
    assert_eq!(fwd.uri.to_string(), "sip:bob@127.0.0.1:5071");
    assert_eq!(fwd.headers.get(HeaderName::Route), None);
    sim.run_until_idle();
    assert_eq!(sim.ua(alice).finals(Method::Invite)[0].code, 200);
}

#[test]
fn unregister_with_expires_zero_removes_the_binding() {
    let mut sim = Sim::open();
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    sim.engine.drain_binding_changes();
    let d = sim.ua_mut(bob).register_draft(0);
    sim.send(bob, &d);
    let ok = sim.ua(bob).last_response(Method::Register);
    assert_eq!(ok.code, 200);
    assert!(headers_all(ok, HeaderName::Contact).is_empty());
    assert_eq!(sim.engine.registrations(), (0, 0));
    let changes = sim.engine.drain_binding_changes();
    assert!(
        matches!(&changes[..], [Change::Remove { contact_uri, .. }] if contact_uri == "sip:bob@127.0.0.1:5071")
    );
}
