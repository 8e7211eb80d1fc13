//! Users who own their key, on simulated time: a REGISTER authorized by a key
//! signature (DOTS-Sig) instead of a password, the grant that comes with it, device
//! accounts registering under their owner's DID, and calls between them.

mod common;

use std::collections::HashMap;

use common::*;
use dots_identity::login::{self, Challenge};
use dots_identity::Wallet;
use dots_proxy::{AccountOwner, RemotePresence};
use dots_records::{Grant, NodeKey};
use dots_sip::{HeaderName, Method, SipMessage};

fn node_key() -> NodeKey {
    NodeKey::from_secret([2; 32])
}

/// A node with overlay identity `node_key()` and the device account `bob-desk`
/// (password "pw") owned by `bob`'s DID.
fn sim_with(bob: &Wallet) -> Sim {
    let mut sim = Sim::with_accounts(&[("bob-desk", "pw")]);
    sim.engine.enable_overlay(node_key().peer_id_bytes());
    let grant = Grant::new_signed(
        &bob.did(),
        &node_key().peer_id_bytes(),
        T0,
        T0 + 86_400_000,
        |m| bob.sign(m),
    );
    let owner = AccountOwner {
        did: bob.did(),
        grant,
    };
    sim.engine
        .set_account_owners(HashMap::from([("bob-desk".to_string(), owner)]));
    sim
}

fn key_id(wallet: &Wallet) -> String {
    wallet.did().strip_prefix("did:key:").unwrap().to_string()
}

/// First REGISTER, its 401, and the DOTS-Sig challenge in it.
fn challenged(sim: &mut Sim, ua: UaId, expires: u32) -> (Draft, Challenge) {
    let first = sim.ua_mut(ua).register_draft(expires);
    sim.send(ua, &first);
    let resp = sim.ua(ua).last_response(Method::Register).clone();
    assert_eq!(resp.code, 401);
    // Challenges hold commas: one header each, not a comma-separated list.
    let offered: Vec<String> = resp
        .headers
        .get_all(HeaderName::WwwAuthenticate)
        .map(str::to_string)
        .collect();
    assert!(
        offered.iter().any(|v| v.starts_with("Digest ")),
        "{offered:?}"
    );
    let challenge = offered
        .iter()
        .find_map(|v| Challenge::parse(v))
        .expect("a DOTS-Sig challenge")
        .expect("it parses");
    (first, challenge)
}

/// The REGISTER after the challenge, signed for `contact` (the Contact sent is the
/// draft's own).
fn signed_follow_up(
    sim: &mut Sim,
    ua: UaId,
    wallet: &Wallet,
    first: &Draft,
    challenge: &Challenge,
    signed_contact: Option<&str>,
    expires: u32,
) -> Draft {
    let next = sim.ua_mut(ua).follow_up(first);
    let contact = next.contact.clone().unwrap();
    let creds = login::answer(
        wallet,
        challenge,
        "REGISTER",
        &next.ruri,
        signed_contact.unwrap_or(&contact),
        expires,
        sim.now,
        30_000,
    )
    .unwrap();
    next.header(format!("Authorization: {}", creds.to_header()))
}

fn key_register(sim: &mut Sim, ua: UaId, wallet: &Wallet) -> u16 {
    let (first, challenge) = challenged(sim, ua, 600);
    let second = signed_follow_up(sim, ua, wallet, &first, &challenge, None, 600);
    sim.send(ua, &second);
    sim.ua(ua).last_response(Method::Register).code
}

#[test]
fn a_key_user_registers_by_signature_and_its_presence_carries_the_grant() {
    let alice = Wallet::from_secret([1; 32], Some("alice".into()));
    let bob = Wallet::from_secret([3; 32], Some("bob".into()));
    let mut sim = sim_with(&bob);
    let ua = sim.add_ua(&key_id(&alice), 5070);

    let (first, challenge) = challenged(&mut sim, ua, 600);
    assert_eq!(challenge.realm, "dots");
    assert_eq!(
        challenge.node,
        bs58::encode(node_key().peer_id_bytes()).into_string()
    );
    let second = signed_follow_up(&mut sim, ua, &alice, &first, &challenge, None, 600);
    sim.send(ua, &second);
    assert_eq!(sim.ua(ua).last_response(Method::Register).code, 200);

    // Stored under the DID, whatever the To host.
    let bindings = sim.engine.lookup(&alice.did(), sim.now);
    assert_eq!(bindings.len(), 1);
    let changes = sim.engine.drain_presence_changes();
    let change = changes
        .iter()
        .find(|c| c.aor == alice.did())
        .expect("presence");
    assert!(change.online);
    let grant = change.grant.clone().expect("the user's grant");
    grant
        .check(&alice.did(), &node_key().peer_id_bytes(), sim.now + 600_000)
        .expect("a valid grant for this node, as long as the registration");
    assert_eq!(sim.engine.presence_grant(&alice.did()), Some(grant));

    // The same signed answer again: the nonce was spent.
    let replay = sim.ua_mut(ua).follow_up(&second);
    sim.send(ua, &replay);
    let resp = sim.ua(ua).last_response(Method::Register);
    assert_eq!(resp.code, 403);
    assert!(resp.reason.contains("replayed nonce"), "{}", resp.reason);
}

#[test]
fn key_logins_are_refused_with_clear_reasons() {
    let alice = Wallet::from_secret([1; 32], None);
    let mallory = Wallet::from_secret([4; 32], None);
    let bob = Wallet::from_secret([3; 32], None);
    let mut sim = sim_with(&bob);
    let ua = sim.add_ua(&key_id(&alice), 5070);

    // Signed for another contact than the one sent.
    let (first, ch) = challenged(&mut sim, ua, 600);
    let d = signed_follow_up(
        &mut sim,
        ua,
        &alice,
        &first,
        &ch,
        Some("<sip:x@192.0.2.66>"),
        600,
    );
    sim.send(ua, &d);
    let resp = sim.ua(ua).last_response(Method::Register);
    assert_eq!(resp.code, 403);
    assert!(resp.reason.contains("Contact"), "{}", resp.reason);

    // Signed for another expiry.
    let (first, ch) = challenged(&mut sim, ua, 600);
    let d = signed_follow_up(&mut sim, ua, &alice, &first, &ch, None, 3600);
    sim.send(ua, &d);
    assert!(sim
        .ua(ua)
        .last_response(Method::Register)
        .reason
        .contains("expiry"));

    // Signed by another key for alice's DID: mallory's credentials, alice's To.
    let (first, ch) = challenged(&mut sim, ua, 600);
    let d = signed_follow_up(&mut sim, ua, &mallory, &first, &ch, None, 600);
    sim.send(ua, &d);
    let resp = sim.ua(ua).last_response(Method::Register);
    assert_eq!(resp.code, 403);
    assert!(resp.reason.contains("another DID"), "{}", resp.reason);

    // A signature of the wrong length, a malformed DID: clear errors, no panic.
    let (first, ch) = challenged(&mut sim, ua, 600);
    let good = signed_follow_up(&mut sim, ua, &alice, &first, &ch, None, 600);
    let header = good
        .headers
        .iter()
        .find(|h| h.starts_with("Authorization: "))
        .unwrap()
        .clone();
    for (broken, expected) in [
        (header.replace("sig=\"", "sig=\"AAAA"), "wrong length"),
        (
            header.replace("did=\"did:key:z6Mk", "did=\"did:key:z6Mx"),
            "malformed DID",
        ),
        (
            header.replace("nonce=\"", "nonce=\"0"),
            "not a nonce of this node",
        ),
    ] {
        let mut d = sim.ua_mut(ua).follow_up(&first);
        d.headers.push(broken.clone());
        sim.send(ua, &d);
        let resp = sim.ua(ua).last_response(Method::Register);
        assert_eq!(resp.code, 403, "{broken}");
        assert!(resp.reason.contains(expected), "{broken}: {}", resp.reason);
    }
    assert!(sim.engine.lookup(&alice.did(), sim.now).is_empty());

    // An expired challenge: a new one, marked stale.
    let (first, ch) = challenged(&mut sim, ua, 600);
    sim.advance(301_000);
    let d = signed_follow_up(&mut sim, ua, &alice, &first, &ch, None, 600);
    sim.send(ua, &d);
    let resp = sim.ua(ua).last_response(Method::Register).clone();
    assert_eq!(resp.code, 401);
    assert!(resp
        .headers
        .get_all(HeaderName::WwwAuthenticate)
        .any(|v| v.contains("stale=true")));

    // A key user cannot fall back to a password.
    let d = sim.ua_mut(ua).register_draft(600);
    sim.send(ua, &d);
    assert_eq!(sim.ua(ua).last_response(Method::Register).code, 401);
}

#[test]
fn devices_register_under_their_owners_did_and_key_users_call_them() {
    let alice = Wallet::from_secret([1; 32], None);
    let bob = Wallet::from_secret([3; 32], None);
    let mut sim = sim_with(&bob);
    let a = sim.add_ua(&key_id(&alice), 5070);
    let desk = sim.add_ua("bob-desk", 5080);
    assert_eq!(key_register(&mut sim, a, &alice), 200);
    assert_eq!(sim.register_auth(desk, "pw").code, 200);

    // The device's binding lives under bob's DID, with bob's delegation.
    assert_eq!(sim.engine.lookup(&bob.did(), sim.now).len(), 1);
    assert!(sim
        .engine
        .lookup("sip:bob-desk@127.0.0.1", sim.now)
        .is_empty());
    assert!(sim.engine.presence_grant(&bob.did()).is_some());

    // alice calls bob by DID: authorised by where she registered, no challenge.
    let bob_uri = format!("sip:{}@127.0.0.1", key_id(&bob));
    sim.invite(a, &bob_uri);
    assert_eq!(sim.ua(desk).requests(Method::Invite).len(), 1);
    assert!(sim.ua(a).codes(Method::Invite).contains(&200));

    // bob's phone calls alice by DID (after its digest challenge).
    let alice_uri = format!("sip:{}@127.0.0.1", key_id(&alice));
    let d = sim
        .ua_mut(desk)
        .draft("MESSAGE", &alice_uri, &format!("<{alice_uri}>"));
    sim.send(desk, &d);
    assert_eq!(sim.ua(desk).last_response(Method::Message).code, 407);
    assert!(sim.ua(a).requests(Method::Message).is_empty());

    // Someone else claiming to be alice from another address is refused.
    let impostor = sim.add_ua(&key_id(&alice), 5099);
    let d = sim
        .ua_mut(impostor)
        .draft("MESSAGE", &bob_uri, &format!("<{bob_uri}>"));
    sim.send(impostor, &d);
    let resp = sim.ua(impostor).last_response(Method::Message);
    assert_eq!(resp.code, 403);
    assert_eq!(sim.ua(desk).requests(Method::Message).len(), 0);
    let _ = resp.call_id();
}

#[test]
fn a_request_another_node_routed_is_not_challenged_again() {
    let bob = Wallet::from_secret([3; 32], None);
    let mut sim = sim_with(&bob);
    let desk = sim.add_ua("bob-desk", 5080);
    assert_eq!(sim.register_auth(desk, "pw").code, 200);
    // carol's node (same domain, so carol looks local) forwards her INVITE.
    let node2 = sim.add_ua("carol", 5090);
    let bob_uri = format!("sip:{}@127.0.0.1", key_id(&bob));
    let d = sim
        .ua_mut(node2)
        .draft("INVITE", &bob_uri, &format!("<{bob_uri}>"));
    sim.send(node2, &d);
    assert_eq!(sim.ua(node2).last_response(Method::Invite).code, 407);
    let d = sim
        .ua_mut(node2)
        .draft("INVITE", &bob_uri, &format!("<{bob_uri}>"))
        .header(format!("{}: 1", dots_proxy::ROUTED_HEADER));
    sim.send(node2, &d);
    assert_eq!(sim.ua(desk).requests(Method::Invite).len(), 1);
    assert!(sim.ua(node2).codes(Method::Invite).contains(&200));
}

#[test]
fn an_alias_record_leads_to_the_did() {
    let alice = Wallet::from_secret([1; 32], None);
    let bob = Wallet::from_secret([3; 32], None);
    let mut sim = sim_with(&bob);
    // A caller from elsewhere (not a user of this node: no challenge).
    let carol = sim.add_ua_in("carol", "example.org", 5100);
    let alias = |did: &str| RemotePresence {
        node: b"node-2".to_vec(),
        sip: vec!["sip:127.0.0.1:5090;transport=udp".into()],
        seq: 1,
        exp: T0 + 300_000,
        alias: Some(did.to_string()),
    };

    // The alias names a DID registered here: delivered locally.
    let a = sim.add_ua(&key_id(&alice), 5070);
    assert_eq!(key_register(&mut sim, a, &alice), 200);
    let d = sim
        .ua_mut(carol)
        .draft("MESSAGE", "sip:alice@127.0.0.1", "<sip:alice@127.0.0.1>");
    sim.send(carol, &d);
    let lookup = sim.engine.poll_lookup().expect("a lookup for the name");
    assert_eq!(lookup.aor, "sip:alice@127.0.0.1");
    sim.engine
        .lookup_result(sim.now, lookup.token, Some(alias(&alice.did())));
    sim.settle();
    let got = sim.ua(a).requests(Method::Message);
    assert_eq!(got.len(), 1, "delivered to alice's key binding");

    // The alias names a DID served elsewhere: a second lookup, for the DID, then
    // the request goes to that node with the DID's id as user part.
    let node2 = sim.add_ua("node2", 5090);
    let dave = Wallet::from_secret([5; 32], None);
    let d = sim
        .ua_mut(carol)
        .draft("MESSAGE", "sip:dave@127.0.0.1", "<sip:dave@127.0.0.1>");
    sim.send(carol, &d);
    let first = sim.engine.poll_lookup().expect("a lookup for the name");
    sim.engine
        .lookup_result(sim.now, first.token, Some(alias(&dave.did())));
    let second = sim.engine.poll_lookup().expect("a lookup for the DID");
    assert_eq!(second.aor, dave.did());
    let served = RemotePresence {
        alias: None,
        ..alias(&dave.did())
    };
    sim.engine
        .lookup_result(sim.now, second.token, Some(served));
    sim.settle();
    let got = sim.ua(node2).requests(Method::Message);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uri.user.as_deref(), Some(key_id(&dave).as_str()));

    // The node vouches for its own device accounts and handles.
    let aliases = sim.engine.aliases();
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0].0, "sip:bob-desk@127.0.0.1");
    assert_eq!(aliases[0].1, bob.did());
}
