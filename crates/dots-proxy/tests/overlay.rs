//! Routing through the overlay, on simulated time: the engine asks for a
//! lookup, forwards to the node the presence record names, retries once with
//! a fresh lookup when that node fails, and never looks up a request that
//! another node already routed.

mod common;

use common::*;
use dots_proxy::{RemotePresence, ROUTED_HEADER};
use dots_sip::Method;

const SELF_ID: &[u8] = b"this-node";

fn overlay_sim() -> Sim {
    let mut sim = Sim::open();
    sim.engine.enable_overlay(SELF_ID.to_vec());
    sim
}

fn record(node: &[u8], port: u16, seq: u64) -> RemotePresence {
    RemotePresence {
        node: node.to_vec(),
        sip: vec![format!("sip:127.0.0.1:{port};transport=udp")],
        seq,
        exp: T0 + 300_000,
        alias: None,
    }
}

#[test]
fn a_user_served_elsewhere_is_looked_up_and_reached_at_that_node() {
    let mut sim = overlay_sim();
    let alice = sim.add_ua("alice", 5070);
    // Stands in for the serving node: it answers like the callee would.
    let remote = sim.add_ua("carol", 5090);

    sim.invite(alice, "sip:carol@127.0.0.1");
    assert_eq!(
        sim.ua(alice).codes(Method::Invite),
        vec![100],
        "100 while looking up"
    );
    let lookup = sim.engine.poll_lookup().expect("a lookup for carol");
    assert_eq!(lookup.aor, "sip:carol@127.0.0.1");
    assert!(!lookup.fresh);
    assert!(sim.engine.poll_lookup().is_none());

    sim.engine
        .lookup_result(sim.now, lookup.token, Some(record(b"node-2", 5090, 7)));
    sim.settle();

    let got = sim.ua(remote).requests(Method::Invite);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].uri.to_string(),
        "sip:carol@127.0.0.1",
        "R-URI is the AOR"
    );
    assert_eq!(got[0].headers.get_named(ROUTED_HEADER), Some("1"));
    assert!(sim.ua(alice).codes(Method::Invite).contains(&200));

    // The answer was cached: a second call needs no lookup.
    sim.invite(alice, "sip:carol@127.0.0.1");
    assert!(sim.engine.poll_lookup().is_none());
    assert_eq!(sim.ua(remote).requests(Method::Invite).len(), 2);
}

#[test]
fn nothing_found_gives_404_for_strangers() {
    let mut sim = overlay_sim();
    let alice = sim.add_ua("alice", 5070);
    sim.invite(alice, "sip:nobody@127.0.0.1");
    let lookup = sim.engine.poll_lookup().unwrap();
    sim.engine.lookup_result(sim.now, lookup.token, None);
    sim.settle();
    assert_eq!(sim.ua(alice).finals(Method::Invite)[0].code, 404);
}

#[test]
fn a_request_routed_by_another_node_is_never_looked_up_again() {
    let mut sim = overlay_sim();
    let other_node = sim.add_ua("node", 5099);
    let d = sim
        .ua_mut(other_node)
        .draft("INVITE", "sip:carol@127.0.0.1", "<sip:carol@127.0.0.1>")
        .header(format!("{ROUTED_HEADER}: 1"));
    sim.send(other_node, &d);
    assert!(sim.engine.poll_lookup().is_none(), "no second lookup");
    assert_eq!(sim.ua(other_node).finals(Method::Invite)[0].code, 404);
}

#[test]
fn the_routing_mark_is_not_passed_to_the_phone() {
    let mut sim = overlay_sim();
    let other_node = sim.add_ua("node", 5099);
    let carol = sim.add_ua("carol", 5072);
    sim.register(carol, 3600);
    let d = sim
        .ua_mut(other_node)
        .draft("INVITE", "sip:carol@127.0.0.1", "<sip:carol@127.0.0.1>")
        .header(format!("{ROUTED_HEADER}: 1"));
    sim.send(other_node, &d);
    let got = sim.ua(carol).requests(Method::Invite);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers.get_named(ROUTED_HEADER), None);
}

#[test]
fn records_naming_this_node_are_ignored() {
    let mut sim = overlay_sim();
    let alice = sim.add_ua("alice", 5070);
    sim.invite(alice, "sip:carol@127.0.0.1");
    let lookup = sim.engine.poll_lookup().unwrap();
    // A stale record of our own: we are the authority and carol is not here.
    sim.engine
        .lookup_result(sim.now, lookup.token, Some(record(SELF_ID, 5060, 3)));
    sim.settle();
    assert_eq!(sim.ua(alice).finals(Method::Invite)[0].code, 404);
}

#[test]
fn a_failing_node_costs_one_fresh_lookup_then_480() {
    let mut sim = overlay_sim();
    let alice = sim.add_ua("alice", 5070);
    let dead = sim.add_ua("carol", 5091);
    sim.ua_mut(dead).on_invite = vec![503];

    sim.invite(alice, "sip:carol@127.0.0.1");
    let first = sim.engine.poll_lookup().unwrap();
    sim.engine
        .lookup_result(sim.now, first.token, Some(record(b"node-dead", 5091, 1)));
    sim.settle();
    assert_eq!(sim.ua(dead).requests(Method::Invite).len(), 1);

    let retry = sim
        .engine
        .poll_lookup()
        .expect("a fresh lookup after the failure");
    assert!(retry.fresh);
    assert_eq!(retry.aor, "sip:carol@127.0.0.1");
    assert!(
        sim.ua(alice).finals(Method::Invite).is_empty(),
        "no final before the retry"
    );
    // The DHT still names the same node: give up with 480.
    sim.engine
        .lookup_result(sim.now, retry.token, Some(record(b"node-dead", 5091, 1)));
    sim.settle();
    let finals = sim.ua(alice).finals(Method::Invite);
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].code, 480);
    assert!(sim.engine.poll_lookup().is_none());
}

#[test]
fn after_a_failure_the_fresh_record_leads_to_the_new_node() {
    let mut sim = overlay_sim();
    let alice = sim.add_ua("alice", 5070);
    let dead = sim.add_ua("carol", 5091);
    sim.ua_mut(dead).on_invite = vec![503];
    let new_home = sim.add_ua("carol", 5092);

    sim.invite(alice, "sip:carol@127.0.0.1");
    let first = sim.engine.poll_lookup().unwrap();
    sim.engine
        .lookup_result(sim.now, first.token, Some(record(b"node-dead", 5091, 1)));
    sim.settle();
    let retry = sim.engine.poll_lookup().unwrap();
    sim.engine
        .lookup_result(sim.now, retry.token, Some(record(b"node-new", 5092, 2)));
    sim.settle();
    assert_eq!(sim.ua(new_home).requests(Method::Invite).len(), 1);
    let codes: Vec<u16> = sim
        .ua(alice)
        .finals(Method::Invite)
        .iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, vec![200]);
}

#[test]
fn a_call_cancelled_during_the_lookup_is_not_forwarded() {
    let mut sim = overlay_sim();
    let alice = sim.add_ua("alice", 5070);
    let remote = sim.add_ua("carol", 5090);
    let inv = sim.invite(alice, "sip:carol@127.0.0.1");
    let lookup = sim.engine.poll_lookup().unwrap();
    let cancel = sim.ua(alice).cancel_draft(&inv);
    sim.send(alice, &cancel);
    assert_eq!(sim.ua(alice).finals(Method::Invite)[0].code, 487);
    sim.engine
        .lookup_result(sim.now, lookup.token, Some(record(b"node-2", 5090, 1)));
    sim.settle();
    assert!(sim.ua(remote).requests(Method::Invite).is_empty());
}

#[test]
fn gossip_keeps_the_newest_record() {
    let mut sim = overlay_sim();
    let alice = sim.add_ua("alice", 5070);
    let old_home = sim.add_ua("carol", 5091);
    let new_home = sim.add_ua("carol", 5092);
    sim.engine
        .remote_presence("sip:carol@127.0.0.1", record(b"node-new", 5092, 20));
    // An older record arriving later does not win.
    sim.engine
        .remote_presence("sip:carol@127.0.0.1", record(b"node-old", 5091, 10));
    sim.invite(alice, "sip:carol@127.0.0.1");
    assert!(sim.engine.poll_lookup().is_none(), "served from the cache");
    assert_eq!(sim.ua(new_home).requests(Method::Invite).len(), 1);
    assert!(sim.ua(old_home).requests(Method::Invite).is_empty());
}

#[test]
fn registrations_announce_presence_changes() {
    let mut sim = overlay_sim();
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 3600);
    let changes = sim.engine.drain_presence_changes();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].online);
    assert_eq!(changes[0].aor, sim.engine.local_aor("bob"));
    // A refresh changes nothing; removing the last contact goes offline.
    sim.register(bob, 3600);
    assert!(sim.engine.drain_presence_changes().is_empty());
    sim.register(bob, 0);
    let changes = sim.engine.drain_presence_changes();
    assert_eq!(changes.len(), 1);
    assert!(!changes[0].online);
    assert!(sim.engine.online_aors().is_empty());
}

#[test]
fn expiry_announces_offline() {
    let mut sim = overlay_sim();
    let bob = sim.add_ua("bob", 5071);
    sim.register(bob, 60);
    assert_eq!(sim.engine.drain_presence_changes().len(), 1);
    sim.advance(61_000);
    let changes = sim.engine.drain_presence_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(!changes[0].online);
}
