//! Authenticating node: digest challenges for REGISTER (401) and for calls
//! from local users (407), and what is never challenged.

mod common;

use common::*;
use dots_registrar::{answer_challenge, parse_digest_params};
use dots_sip::{HeaderName, Method, Response, SipMessage};

fn param(challenge: &str, name: &str) -> Option<String> {
    parse_digest_params(challenge)?
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn challenges(resp: &Response, name: HeaderName) -> Vec<String> {
    resp.headers.get_all(name).map(str::to_string).collect()
}

#[test]
fn register_without_credentials_gets_401_with_sha256_and_md5_challenges() {
    let mut sim = Sim::with_accounts(&[("alice", "secret")]);
    let alice = sim.add_ua("alice", 5070);
    let d = sim.ua_mut(alice).register_draft(3600);
    sim.send(alice, &d);

    let resp = sim.ua(alice).last_response(Method::Register).clone();
    assert_eq!(resp.code, 401);
    assert!(to_tag(&resp).is_some());
    let values = challenges(&resp, HeaderName::WwwAuthenticate);
    assert_eq!(values.len(), 2, "{values:?}");
    let algs: Vec<String> = values
        .iter()
        .map(|v| param(v, "algorithm").unwrap())
        .collect();
    // Both algorithms (RFC 8760), in the configured order.
    assert_eq!(algs, config(false).digest_algorithms);
    assert!(algs.iter().any(|a| a == "SHA-256") && algs.iter().any(|a| a == "MD5"));
    let nonces: Vec<String> = values.iter().map(|v| param(v, "nonce").unwrap()).collect();
    assert_eq!(nonces[0], nonces[1], "one nonce for both challenges");
    for v in &values {
        assert!(v.starts_with("Digest "), "{v}");
        assert_eq!(param(v, "realm").as_deref(), Some("dots"));
        assert_eq!(param(v, "qop").as_deref(), Some("auth"));
        assert!(param(v, "nonce").is_some_and(|n| !n.is_empty()));
    }
    assert_eq!(resp.headers.get(HeaderName::ProxyAuthenticate), None);
    assert_eq!(sim.engine.registrations(), (0, 0));
    assert_eq!(sim.engine.stats().auth_challenges, 1);
}

#[test]
fn challenge_order_follows_the_configuration() {
    for order in [["SHA-256", "MD5"], ["MD5", "SHA-256"]] {
        let mut cfg = config(false);
        cfg.digest_algorithms = order.iter().map(|a| a.to_string()).collect();
        let mut sim = Sim::new(cfg);
        sim.engine.set_accounts(accounts(&[("alice", "secret")]));
        let alice = sim.add_ua("alice", 5070);
        let d = sim.ua_mut(alice).register_draft(3600);
        sim.send(alice, &d);
        let resp = sim.ua(alice).last_response(Method::Register);
        assert_eq!(resp.code, 401);
        let algs: Vec<String> = challenges(resp, HeaderName::WwwAuthenticate)
            .iter()
            .map(|v| param(v, "algorithm").unwrap())
            .collect();
        assert_eq!(algs, order);
    }
}

#[test]
fn answered_challenge_registers_with_either_algorithm() {
    for pick in 0..2 {
        let mut sim = Sim::with_accounts(&[("alice", "secret")]);
        let alice = sim.add_ua("alice", 5070);
        let first = sim.ua_mut(alice).register_draft(3600);
        sim.send(alice, &first);
        let resp = sim.ua(alice).last_response(Method::Register).clone();
        let chosen = challenges(&resp, HeaderName::WwwAuthenticate)[pick].clone();
        let auth = answer_challenge(
            &chosen,
            "REGISTER",
            &first.ruri,
            "alice",
            "secret",
            "abc",
            1,
        )
        .unwrap();
        let second = sim
            .ua_mut(alice)
            .follow_up(&first)
            .header(format!("Authorization: {auth}"));
        sim.send(alice, &second);

        let ok = sim.ua(alice).last_response(Method::Register);
        assert_eq!(ok.code, 200, "answering challenge {pick}");
        let contacts = headers_all(ok, HeaderName::Contact);
        assert_eq!(contacts.len(), 1);
        assert!(contacts[0].contains("sip:alice@127.0.0.1:5070"));
        assert!(contacts[0].contains("expires=3600"), "{}", contacts[0]);
        assert_eq!(sim.engine.registrations(), (1, 1));
        assert_eq!(sim.engine.stats().auth_failures, 0);
    }
}

/// REGISTER with credentials computed from `password` for user `user`.
fn register_as(sim: &mut Sim, id: UaId, user: &str, password: &str) -> Response {
    let first = sim.ua_mut(id).register_draft(3600);
    sim.send(id, &first);
    let resp = sim.ua(id).last_response(Method::Register).clone();
    assert_eq!(resp.code, 401);
    let wa = resp.headers.get(HeaderName::WwwAuthenticate).unwrap();
    let auth = answer_challenge(wa, "REGISTER", &first.ruri, user, password, "abc", 1).unwrap();
    let second = sim
        .ua_mut(id)
        .follow_up(&first)
        .header(format!("Authorization: {auth}"));
    sim.send(id, &second);
    sim.ua(id).last_response(Method::Register).clone()
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_403() {
    let mut sim = Sim::with_accounts(&[("alice", "secret")]);
    let alice = sim.add_ua("alice", 5070);
    let mallory = sim.add_ua("mallory", 5079);

    let wrong = register_as(&mut sim, alice, "alice", "guess");
    assert_eq!(wrong.code, 403);
    let unknown = register_as(&mut sim, mallory, "mallory", "whatever");
    assert_eq!(unknown.code, 403);
    assert_eq!(
        wrong.reason, unknown.reason,
        "the answer must not tell which"
    );
    assert_eq!(sim.engine.registrations(), (0, 0));
    assert_eq!(sim.engine.stats().auth_failures, 2);
}

#[test]
fn replayed_authorization_is_refused() {
    let mut sim = Sim::with_accounts(&[("alice", "secret")]);
    let alice = sim.add_ua("alice", 5070);
    let first = sim.ua_mut(alice).register_draft(3600);
    sim.send(alice, &first);
    let resp = sim.ua(alice).last_response(Method::Register).clone();
    let wa = resp.headers.get(HeaderName::WwwAuthenticate).unwrap();
    let auth = answer_challenge(wa, "REGISTER", &first.ruri, "alice", "secret", "abc", 1).unwrap();
    let second = sim
        .ua_mut(alice)
        .follow_up(&first)
        .header(format!("Authorization: {auth}"));
    sim.send(alice, &second);
    assert_eq!(sim.ua(alice).last_response(Method::Register).code, 200);

    // The same Authorization (same nonce, same nonce-count) in a new request.
    let replay = sim.ua_mut(alice).follow_up(&second);
    sim.send(alice, &replay);
    let codes = sim.ua(alice).codes(Method::Register);
    assert_eq!(codes.len(), 3);
    assert_ne!(codes[2], 200, "replayed credentials accepted: {codes:?}");
    assert!(codes[2] >= 400);
    assert_eq!(sim.engine.stats().registrations, 1);
}

#[test]
fn invite_from_a_local_user_needs_proxy_authorization() {
    let mut sim = Sim::with_accounts(&[("alice", "secret"), ("bob", "pw2")]);
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    assert_eq!(sim.register_auth(bob, "pw2").code, 200);

    let first = sim
        .ua_mut(alice)
        .draft("INVITE", "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>");
    sim.send(alice, &first);
    assert_eq!(sim.ua(alice).codes(Method::Invite), vec![407]);
    let resp = sim.ua(alice).last_response(Method::Invite).clone();
    let values = challenges(&resp, HeaderName::ProxyAuthenticate);
    assert_eq!(values.len(), 2, "{values:?}");
    let algs: Vec<String> = values
        .iter()
        .map(|v| param(v, "algorithm").unwrap())
        .collect();
    assert_eq!(algs, config(false).digest_algorithms);
    assert_eq!(resp.headers.get(HeaderName::WwwAuthenticate), None);
    assert!(sim.ua(bob).requests(Method::Invite).is_empty());

    let auth = answer_challenge(
        &values[0],
        "INVITE",
        "sip:bob@127.0.0.1",
        "alice",
        "secret",
        "abc",
        1,
    )
    .unwrap();
    let second = sim
        .ua_mut(alice)
        .follow_up(&first)
        .header(format!("Proxy-Authorization: {auth}"));
    sim.send(alice, &second);
    let got = sim.ua(bob).requests(Method::Invite);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].cseq().unwrap().seq, second.cseq);
    assert_eq!(
        sim.ua(alice).codes(Method::Invite),
        vec![407, 100, 180, 200]
    );
    sim.run_until_idle();
    assert_eq!(sim.ua(bob).requests(Method::Ack).len(), 1);
}

#[test]
fn message_from_a_local_user_without_credentials_gets_407() {
    let mut sim = Sim::with_accounts(&[("alice", "secret"), ("bob", "pw2")]);
    let alice = sim.add_ua("alice", 5070);
    let bob = sim.add_ua("bob", 5071);
    assert_eq!(sim.register_auth(bob, "pw2").code, 200);
    let d = sim
        .ua_mut(alice)
        .draft("MESSAGE", "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>");
    sim.send(alice, &d);
    let resp = sim.ua(alice).last_response(Method::Message);
    assert_eq!(resp.code, 407);
    assert_eq!(challenges(resp, HeaderName::ProxyAuthenticate).len(), 2);
    assert!(sim.ua(bob).requests(Method::Message).is_empty());
}

#[test]
fn call_from_another_domain_to_a_local_user_is_not_challenged() {
    let mut sim = Sim::with_accounts(&[("bob", "pw2")]);
    let carol = sim.add_ua_in("carol", "example.com", 5075);
    let bob = sim.add_ua("bob", 5071);
    assert_eq!(sim.register_auth(bob, "pw2").code, 200);
    let challenges_before = sim.engine.stats().auth_challenges;

    sim.invite(carol, "sip:bob@127.0.0.1");
    assert_eq!(sim.ua(bob).requests(Method::Invite).len(), 1);
    assert_eq!(sim.ua(carol).codes(Method::Invite), vec![100, 180, 200]);
    assert_eq!(sim.engine.stats().auth_challenges, challenges_before);
}

#[test]
fn the_challenge_keeps_no_transaction_an_authenticated_register_does() {
    let mut sim = Sim::with_accounts(&[("alice", "secret")]);
    let alice = sim.add_ua("alice", 5070);
    let first = sim.ua_mut(alice).register_draft(3600);
    sim.send(alice, &first);
    sim.send(alice, &first);
    let challenges = sim.ua(alice).responses(Method::Register);
    assert_eq!(
        challenges.len(),
        2,
        "the retransmission is challenged again"
    );
    assert!(challenges.iter().all(|r| r.code == 401));
    assert_eq!(to_tag(challenges[0]), to_tag(challenges[1]));
    assert_eq!(
        sim.engine.transactions(),
        (0, 0),
        "a 401 is regenerated for a retransmission, not kept"
    );

    let resp = sim.ua(alice).last_response(Method::Register).clone();
    let wa = resp.headers.get(HeaderName::WwwAuthenticate).unwrap();
    let auth = answer_challenge(wa, "REGISTER", &first.ruri, "alice", "secret", "abc", 1).unwrap();
    let second = sim
        .ua_mut(alice)
        .follow_up(&first)
        .header(format!("Authorization: {auth}"));
    sim.send(alice, &second);
    assert_eq!(sim.ua(alice).last_response(Method::Register).code, 200);
    assert_eq!(sim.engine.transactions(), (1, 0), "kept for Timer J");

    // Its retransmission carries the same nonce-count, which the node
    // would refuse as a replay: the transaction answers it instead.
    sim.send(alice, &second);
    assert_eq!(
        sim.ua(alice).codes(Method::Register),
        vec![401, 401, 200, 200]
    );
    let finals = sim.ua(alice).responses(Method::Register);
    assert_eq!(finals[2].to_bytes(), finals[3].to_bytes());
    assert_eq!(sim.engine.stats().auth_failures, 0);
    assert_eq!(sim.engine.stats().registrations, 1);
}
