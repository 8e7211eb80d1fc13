//! Digest authentication: RFC vectors and the server's verdicts.

use dots_registrar::{
    answer_challenge, hash_password, parse_digest_params, AuthOutcome, Credentials, DigestAuth,
};
use dots_sip::{parse_datagram, HeaderName, Message, Request};

const T0: u64 = 1_700_000_000_000;
const TTL: u64 = 300_000;
const REALM: &str = "example.com";

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    &params.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn rfc7616_example_sha256_and_md5() {
    // RFC 7616 §3.9.1.
    let challenge = |alg| {
        format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={alg}, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        )
    };
    let answer = |alg| {
        answer_challenge(
            &challenge(alg),
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            1,
        )
        .unwrap()
    };
    let sha = parse_digest_params(&answer("SHA-256")).unwrap();
    assert_eq!(
        param(&sha, "response"),
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    assert_eq!(param(&sha, "nc"), "00000001");
    assert_eq!(param(&sha, "qop"), "auth");
    assert_eq!(
        param(&sha, "opaque"),
        "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    );
    let md5 = parse_digest_params(&answer("MD5")).unwrap();
    assert_eq!(param(&md5, "response"), "8ca523f5e9506fed4657c9700eebdbec");
}

#[test]
fn rfc2617_example() {
    // RFC 2617 §3.5 (algorithm absent means MD5).
    let challenge = "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
                     nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
                     opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
    let a = answer_challenge(
        challenge,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle Of Life",
        "0a4f113b",
        1,
    )
    .unwrap();
    let p = parse_digest_params(&a).unwrap();
    assert_eq!(param(&p, "response"), "6629fae49393a05397450978507c4ef1");
}

#[test]
fn password_hashes() {
    let c = hash_password("Mufasa", "http-auth@example.org", "Circle of Life");
    assert_eq!(c.realm, "http-auth@example.org");
    assert_eq!(c.ha1_md5, "3d78807defe7de2157e2b0b6573a855f");
    assert_eq!(
        c.ha1_sha256,
        "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
    );
}

#[test]
fn parse_params() {
    let p = parse_digest_params(
        "Digest  USERNAME=\"a\\\"b\" ,Realm=example.com,nonce=\"x,y\", uri=sip:bob@example.com, nc=00000001",
    )
    .unwrap();
    assert_eq!(
        p,
        [
            ("username".to_string(), "a\"b".to_string()),
            ("realm".to_string(), "example.com".to_string()),
            ("nonce".to_string(), "x,y".to_string()),
            ("uri".to_string(), "sip:bob@example.com".to_string()),
            ("nc".to_string(), "00000001".to_string()),
        ]
    );
    // Without the scheme, too.
    assert_eq!(parse_digest_params("realm=\"r\"").unwrap().len(), 1);
    for bad in [
        "",
        "Digest",
        "Basic dXNlcjpwYXNz",
        "Digest realm=\"unterminated",
        "Digest realm",
        "Digest realm=",
        "Digest realm=\"a\" junk",
        "Digest realm=\"a\", realm=\"b\"",
        "Digest realm=\"a\",,=x",
    ] {
        assert!(parse_digest_params(bad).is_none(), "{bad:?}");
    }
}

fn users(name: &str) -> Option<Credentials> {
    match name {
        "alice" => Some(hash_password("alice", REALM, "wonderland")),
        "bob" => Some(hash_password("bob", REALM, "builder")),
        _ => None,
    }
}

fn request(authorization: &[(&str, &str)]) -> Request {
    let mut text = "REGISTER sip:example.com SIP/2.0\r\n\
                    Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\n\
                    Max-Forwards: 70\r\n\
                    From: <sip:alice@example.com>;tag=a1\r\n\
                    To: <sip:alice@example.com>\r\n\
                    Call-ID: c1\r\n\
                    CSeq: 2 REGISTER\r\n"
        .to_string();
    for (name, value) in authorization {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    match parse_datagram(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// The request a client sends after answering challenge number `which`
/// (0: SHA-256, 1: MD5).
fn answered(challenge: &str, user: &str, password: &str, nc: u32) -> Request {
    let a = answer_challenge(
        challenge,
        "REGISTER",
        "sip:example.com",
        user,
        password,
        "c0ffee",
        nc,
    )
    .unwrap();
    request(&[("Authorization", &a)])
}

fn auth() -> DigestAuth {
    DigestAuth::new(REALM.to_string(), [7; 32], TTL)
}

fn ok(user: &str) -> AuthOutcome {
    AuthOutcome::Authenticated { user: user.into() }
}

#[test]
fn challenge_offers_sha256_then_md5() {
    let mut a = auth();
    assert_eq!(a.realm(), REALM);
    let c = a.challenge(T0, false);
    assert_eq!(c.len(), 2);
    let sha = parse_digest_params(&c[0]).unwrap();
    let md5 = parse_digest_params(&c[1]).unwrap();
    assert_eq!(param(&sha, "algorithm"), "SHA-256");
    assert_eq!(param(&md5, "algorithm"), "MD5");
    assert_eq!(param(&sha, "realm"), REALM);
    assert_eq!(param(&sha, "qop"), "auth");
    assert!(sha.iter().all(|(n, _)| n != "stale"));
    assert!(a.challenge(T0, true)[0].contains("stale=true"));
    // Fresh nonces every time.
    assert_ne!(
        param(
            &parse_digest_params(&a.challenge(T0, false)[0]).unwrap(),
            "nonce"
        ),
        param(&sha, "nonce")
    );
}

#[test]
fn happy_path_sha256_and_md5() {
    let mut a = auth();
    let c = a.challenge(T0, false);
    let req = answered(&c[0], "alice", "wonderland", 1);
    assert_eq!(
        a.verify(T0 + 10, &req, HeaderName::Authorization, users),
        ok("alice")
    );
    let c = a.challenge(T0, false);
    let req = answered(&c[1], "bob", "builder", 1);
    assert!(req
        .headers
        .get(HeaderName::Authorization)
        .unwrap()
        .contains("algorithm=MD5"));
    assert_eq!(
        a.verify(T0 + 10, &req, HeaderName::Authorization, users),
        ok("bob")
    );
    // Proxy-Authorization is read when asked for, and only then.
    let c = a.challenge(T0, false);
    let pa = answer_challenge(
        &c[0],
        "REGISTER",
        "sip:example.com",
        "alice",
        "wonderland",
        "x",
        1,
    )
    .unwrap();
    let req = request(&[("Proxy-Authorization", &pa)]);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        AuthOutcome::Missing
    );
    assert_eq!(
        a.verify(T0, &req, HeaderName::ProxyAuthorization, users),
        ok("alice")
    );
}

#[test]
fn missing_when_nothing_for_our_realm() {
    let mut a = auth();
    assert_eq!(
        a.verify(T0, &request(&[]), HeaderName::Authorization, users),
        AuthOutcome::Missing
    );
    let other = "Digest realm=\"elsewhere.net\", nonce=\"abc\", algorithm=MD5, qop=\"auth\"";
    let req = answered(other, "alice", "wonderland", 1);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        AuthOutcome::Missing
    );
    let req = request(&[("Authorization", "Bearer abc.def")]);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        AuthOutcome::Missing
    );
    // Ours among several: the one for our realm is used.
    let c = a.challenge(T0, false);
    let ours = answer_challenge(
        &c[0],
        "REGISTER",
        "sip:example.com",
        "alice",
        "wonderland",
        "x",
        1,
    )
    .unwrap();
    let theirs =
        answer_challenge(other, "REGISTER", "sip:example.com", "alice", "pw", "x", 1).unwrap();
    let req = request(&[("Authorization", &theirs), ("Authorization", &ours)]);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        ok("alice")
    );
}

#[test]
fn nonce_count_must_increase() {
    let mut a = auth();
    let c = a.challenge(T0, false);
    let first = answered(&c[0], "alice", "wonderland", 1);
    assert_eq!(
        a.verify(T0, &first, HeaderName::Authorization, users),
        ok("alice")
    );
    assert!(matches!(
        a.verify(T0 + 1, &first, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
    let third = answered(&c[0], "alice", "wonderland", 3);
    assert_eq!(
        a.verify(T0 + 2, &third, HeaderName::Authorization, users),
        ok("alice")
    );
    let second = answered(&c[0], "alice", "wonderland", 2);
    assert!(matches!(
        a.verify(T0 + 3, &second, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
    // The same nonce answered with the other algorithm shares the count.
    let md5 = answered(&c[1], "alice", "wonderland", 3);
    assert!(matches!(
        a.verify(T0 + 4, &md5, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
    // A wrong password does not consume a count.
    let wrong = answered(&c[0], "alice", "guess", 4);
    assert!(matches!(
        a.verify(T0 + 5, &wrong, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
    let fourth = answered(&c[0], "alice", "wonderland", 4);
    assert_eq!(
        a.verify(T0 + 6, &fourth, HeaderName::Authorization, users),
        ok("alice")
    );
}

#[test]
fn without_qop_a_nonce_is_single_use() {
    let mut a = auth();
    let c = a.challenge(T0, false)[1].replace(", qop=\"auth\"", "");
    let req = answered(&c, "alice", "wonderland", 1);
    assert!(!req
        .headers
        .get(HeaderName::Authorization)
        .unwrap()
        .contains("qop"));
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        ok("alice")
    );
    assert!(matches!(
        a.verify(T0 + 1, &req, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
}

#[test]
fn expired_nonce_is_stale_only_with_the_right_password() {
    let mut a = auth();
    let c = a.challenge(T0, false);
    let req = answered(&c[0], "alice", "wonderland", 1);
    assert_eq!(
        a.verify(T0 + TTL - 1, &req, HeaderName::Authorization, users),
        ok("alice")
    );
    let req = answered(&c[0], "alice", "wonderland", 2);
    assert_eq!(
        a.verify(T0 + TTL, &req, HeaderName::Authorization, users),
        AuthOutcome::Stale
    );
    let wrong = answered(&c[0], "alice", "guess", 3);
    assert!(matches!(
        a.verify(T0 + TTL, &wrong, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
    // A fresh challenge after stale works.
    let c = a.challenge(T0 + TTL, true);
    let req = answered(&c[0], "alice", "wonderland", 1);
    assert_eq!(
        a.verify(T0 + TTL + 5, &req, HeaderName::Authorization, users),
        ok("alice")
    );
}

#[test]
fn forged_nonces_are_rejected() {
    let mut a = auth();
    // A nonce in the right shape that we never issued.
    let forged = format!(
        "Digest realm=\"{REALM}\", nonce=\"{}\", qop=\"auth\"",
        "ab".repeat(32)
    );
    let req = answered(&forged, "alice", "wonderland", 1);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        AuthOutcome::Rejected {
            reason: "invalid nonce"
        }
    );
    // One of ours with its timestamp pushed forward (to dodge expiry).
    let c = a.challenge(T0, false);
    let nonce = param(&parse_digest_params(&c[0]).unwrap(), "nonce").to_string();
    let mut tampered = nonce.clone().into_bytes();
    tampered[14] = if tampered[14] == b'f' { b'e' } else { b'f' };
    let tampered = String::from_utf8(tampered).unwrap();
    let req = answered(&c[0].replace(&nonce, &tampered), "alice", "wonderland", 1);
    assert!(matches!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
    // Issued by a node with another secret.
    let mut other = DigestAuth::new(REALM.to_string(), [8; 32], TTL);
    let req = answered(&other.challenge(T0, false)[0], "alice", "wonderland", 1);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        AuthOutcome::Rejected {
            reason: "invalid nonce"
        }
    );
    let garbage = format!("Digest realm=\"{REALM}\", nonce=\"not-hex\", qop=\"auth\"");
    let req = answered(&garbage, "alice", "wonderland", 1);
    assert!(matches!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
}

#[test]
fn wrong_password_and_unknown_user_look_alike() {
    let mut a = auth();
    let c = a.challenge(T0, false);
    let wrong = a.verify(
        T0,
        &answered(&c[0], "alice", "guess", 1),
        HeaderName::Authorization,
        users,
    );
    let unknown = a.verify(
        T0,
        &answered(&c[0], "mallory", "guess", 1),
        HeaderName::Authorization,
        users,
    );
    assert!(matches!(wrong, AuthOutcome::Rejected { .. }));
    assert_eq!(wrong, unknown);
    // Credentials stored for another realm do not count.
    let other_realm = |_: &str| Some(hash_password("alice", "elsewhere.net", "wonderland"));
    let r = a.verify(
        T0,
        &answered(&c[0], "alice", "wonderland", 2),
        HeaderName::Authorization,
        other_realm,
    );
    assert_eq!(r, wrong);
}

#[test]
fn digest_uri_must_match_the_request() {
    let mut a = auth();
    let c = a.challenge(T0, false);
    let elsewhere = answer_challenge(
        &c[0],
        "REGISTER",
        "sip:other.example.com",
        "alice",
        "wonderland",
        "x",
        1,
    )
    .unwrap();
    let req = request(&[("Authorization", &elsewhere)]);
    assert!(matches!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
    // Equivalent spelling is fine (host case).
    let same = answer_challenge(
        &c[0],
        "REGISTER",
        "sip:EXAMPLE.com",
        "alice",
        "wonderland",
        "x",
        2,
    )
    .unwrap();
    let req = request(&[("Authorization", &same)]);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        ok("alice")
    );
    // The method is part of the digest.
    let invite = answer_challenge(
        &c[0],
        "INVITE",
        "sip:example.com",
        "alice",
        "wonderland",
        "x",
        3,
    )
    .unwrap();
    let req = request(&[("Authorization", &invite)]);
    assert!(matches!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        AuthOutcome::Rejected { .. }
    ));
}

#[test]
fn unsupported_and_malformed_are_rejected_cleanly() {
    let mut a = auth();
    let c = a.challenge(T0, false);
    let good = answer_challenge(
        &c[0],
        "REGISTER",
        "sip:example.com",
        "alice",
        "wonderland",
        "x",
        1,
    )
    .unwrap();
    let variants = [
        good.replace("algorithm=SHA-256", "algorithm=SHA-256-sess"),
        good.replace("algorithm=SHA-256", "algorithm=MD5-sess"),
        good.replace("algorithm=SHA-256", "algorithm=SHA-512-256"),
        good.replace("qop=auth", "qop=auth-int"),
        good.replace("nc=00000001", "nc=1"),
        good.replace("nc=00000001", "nc=zzzzzzzz"),
        good.replace("nc=00000001", "nc=00000000"),
        good.replace(", cnonce=\"x\"", ""),
        good.replace("username=\"alice\", ", ""),
        good.replace("response=\"", "response=\"0"),
        good.clone() + ", userhash=true",
        good.clone() + ", realm=\"again\"",
        format!("Digest realm=\"{REALM}\", username=\"alice"),
    ];
    for v in &variants {
        let req = request(&[("Authorization", v)]);
        let outcome = a.verify(T0, &req, HeaderName::Authorization, users);
        assert!(
            matches!(outcome, AuthOutcome::Rejected { .. }),
            "{v}: {outcome:?}"
        );
    }
    // Untouched, it still works: none of the above consumed the nonce.
    let req = request(&[("Authorization", &good)]);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        ok("alice")
    );
}

#[test]
fn parameter_names_are_case_insensitive() {
    let mut a = auth();
    let c = a.challenge(T0, false);
    let good = answer_challenge(
        &c[1],
        "REGISTER",
        "sip:example.com",
        "alice",
        "wonderland",
        "x",
        1,
    )
    .unwrap();
    let shouted = good
        .replacen("Digest", "DIGEST", 1)
        .replace("username=", "UserName=")
        .replace("nonce=", "NONCE=")
        .replace("algorithm=MD5", "Algorithm=md5")
        .replace("qop=auth", "QOP=auth")
        .replace("response=", "Response=");
    let req = request(&[("Authorization", &shouted)]);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        ok("alice")
    );
    // Without algorithm it is MD5.
    let c2 = a.challenge(T0, false);
    let bare = answer_challenge(
        &c2[1],
        "REGISTER",
        "sip:example.com",
        "alice",
        "wonderland",
        "x",
        1,
    )
    .unwrap()
    .replace(", algorithm=MD5", "");
    let req = request(&[("Authorization", &bare)]);
    assert_eq!(
        a.verify(T0, &req, HeaderName::Authorization, users),
        ok("alice")
    );
}

#[test]
fn replay_state_is_bounded() {
    let mut a = auth();
    a.set_max_tracked_nonces(2);
    let challenges: Vec<Vec<String>> = (0..3).map(|i| a.challenge(T0 + i, false)).collect();
    for (i, c) in challenges.iter().enumerate() {
        let req = answered(&c[0], "alice", "wonderland", 1);
        assert_eq!(
            a.verify(T0 + 10 + i as u64, &req, HeaderName::Authorization, users),
            ok("alice")
        );
    }
    assert_eq!(a.tracked_nonces(), 2);
    // The evicted nonce can no longer be checked for replay: stale, not accepted.
    let req = answered(&challenges[0][0], "alice", "wonderland", 2);
    assert_eq!(
        a.verify(T0 + 20, &req, HeaderName::Authorization, users),
        AuthOutcome::Stale
    );
    let req = answered(&challenges[2][0], "alice", "wonderland", 2);
    assert_eq!(
        a.verify(T0 + 21, &req, HeaderName::Authorization, users),
        ok("alice")
    );
    // Expired nonces are forgotten.
    let c = a.challenge(T0 + 2 * TTL, false);
    let req = answered(&c[0], "alice", "wonderland", 1);
    assert_eq!(
        a.verify(T0 + 2 * TTL, &req, HeaderName::Authorization, users),
        ok("alice")
    );
    assert_eq!(a.tracked_nonces(), 1);
}
