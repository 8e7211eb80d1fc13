//! Signed requests: the round trip, every refusal, replay protection.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dots_identity::{sign_request, verify_request, ReplayGuard, RequestError, Wallet};
use serde_json::{json, Value};

const NOW: u64 = 1_700_000_000_000;
const SKEW: u64 = 30_000;
const BODY: &[u8] = br#"{"password":"hunter2"}"#;

fn alice() -> Wallet {
    Wallet::from_secret([1; 32], Some("alice".into()))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(ts: u64, nonce: &str) -> Value {
    json!({
        "m": "POST",
        "p": "/api/v1/devices",
        "b": b64(&sha256(BODY)),
        "ts": ts,
        "n": nonce,
    })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// A compact JWS over arbitrary header and payload bytes, signed by `w`.
fn jws(w: &Wallet, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = w.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn header(w: &Wallet) -> Vec<u8> {
    serde_json::to_vec(&json!({"alg": "EdDSA", "kid": w.did()})).unwrap()
}

fn verify(token: &str, guard: &mut ReplayGuard) -> Result<String, RequestError> {
    verify_request(token, "POST", "/api/v1/devices", BODY, NOW, SKEW, guard)
}

#[test]
fn round_trip_and_token_shape() {
    let w = alice();
    let token = sign_request(&w, "POST", "/api/v1/devices", BODY, NOW, "n-1");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(h, json!({"alg": "EdDSA", "kid": w.did()}));
    let p: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(p, claims(NOW, "n-1"));
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
    // The exact bytes, in the documented field order.
    let h = format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, w.did());
    let p = format!(
        r#"{{"m":"POST","p":"/api/v1/devices","b":"{}","ts":{NOW},"n":"n-1"}}"#,
        b64(&sha256(BODY))
    );
    assert_eq!(token, jws(&w, h.as_bytes(), p.as_bytes()));

    let mut guard = ReplayGuard::new(16);
    assert_eq!(verify(&token, &mut guard), Ok(w.did()));
    assert_eq!(guard.len(), 1);
    // At both edges of the skew window.
    for (i, ts) in [NOW - SKEW, NOW + SKEW].into_iter().enumerate() {
        let t = sign_request(
            &w,
            "POST",
            "/api/v1/devices",
            BODY,
            ts,
            &format!("edge-{i}"),
        );
        assert_eq!(verify(&t, &mut guard), Ok(w.did()));
    }
    // An empty body and a header with typ (as other JWS libraries write it).
    let t = sign_request(&w, "GET", "/api/v1/me", b"", NOW, "get-1");
    assert_eq!(
        verify_request(&t, "GET", "/api/v1/me", b"", NOW, SKEW, &mut guard),
        Ok(w.did())
    );
    let h = serde_json::to_vec(&json!({"alg": "EdDSA", "kid": w.did(), "typ": "JWT"})).unwrap();
    let t = jws(&w, &h, &serde_json::to_vec(&claims(NOW, "typ")).unwrap());
    assert_eq!(verify(&t, &mut guard), Ok(w.did()));
}

#[test]
fn malformed_tokens() {
    let w = alice();
    let good = sign_request(&w, "POST", "/api/v1/devices", BODY, NOW, "n");
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let payload = serde_json::to_vec(&claims(NOW, "n")).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("two parts", format!("{h}.{p}")),
        ("four parts", format!("{good}.{s}")),
        ("header not base64", format!("{h}!.{p}.{s}")),
        ("header padded", format!("{h}=.{p}.{s}")),
        ("signature not base64", format!("{h}.{p}.{s}*")),
        ("too long", format!("{h}.{}.{s}", "A".repeat(9000))),
        ("header not json", jws(&w, b"EdDSA", &payload)),
        (
            "header without kid",
            jws(&w, br#"{"alg":"EdDSA"}"#, &payload),
        ),
        (
            "header with crit",
            jws(
                &w,
                &serde_json::to_vec(
                    &json!({"alg":"EdDSA","kid":w.did(),"crit":["b64"],"b64":false}),
                )
                .unwrap(),
                &payload,
            ),
        ),
        (
            "duplicate alg",
            jws(
                &w,
                format!(r#"{{"alg":"EdDSA","alg":"EdDSA","kid":"{}"}}"#, w.did()).as_bytes(),
                &payload,
            ),
        ),
        ("payload not json", jws(&w, &header(&w), b"hello")),
        (
            "payload without nonce",
            jws(
                &w,
                &header(&w),
                &serde_json::to_vec(&{
                    let mut c = claims(NOW, "x");
                    c.as_object_mut().unwrap().remove("n");
                    c
                })
                .unwrap(),
            ),
        ),
        (
            "payload with extra claim",
            jws(
                &w,
                &header(&w),
                &serde_json::to_vec(&{
                    let mut c = claims(NOW, "x");
                    c["exp"] = 1.into();
                    c
                })
                .unwrap(),
            ),
        ),
        (
            "negative ts",
            jws(
                &w,
                &header(&w),
                &serde_json::to_vec(&{
                    let mut c = claims(NOW, "x");
                    c["ts"] = (-1).into();
                    c
                })
                .unwrap(),
            ),
        ),
        (
            "empty nonce",
            jws(
                &w,
                &header(&w),
                &serde_json::to_vec(&claims(NOW, "")).unwrap(),
            ),
        ),
        (
            "long nonce",
            jws(
                &w,
                &header(&w),
                &serde_json::to_vec(&claims(NOW, &"n".repeat(129))).unwrap(),
            ),
        ),
    ];
    let mut guard = ReplayGuard::new(16);
    for (what, token) in cases {
        match verify(&token, &mut guard) {
            Err(e @ RequestError::Malformed(_)) => {
                assert!(e.to_string().starts_with("malformed token"), "{what}: {e}")
            }
            other => panic!("{what}: expected Malformed, got {other:?}"),
        }
    }
    assert!(guard.is_empty());
}

#[test]
fn wrong_algorithm() {
    let w = alice();
    let payload = serde_json::to_vec(&claims(NOW, "n")).unwrap();
    let mut guard = ReplayGuard::new(16);
    for alg in ["none", "HS256", "ES256", "eddsa", "Ed25519"] {
        let h = serde_json::to_vec(&json!({"alg": alg, "kid": w.did()})).unwrap();
        let e = verify(&jws(&w, &h, &payload), &mut guard).unwrap_err();
        assert_eq!(e, RequestError::WrongAlgorithm(alg.into()));
        assert!(e.to_string().contains("only EdDSA"));
    }
}

#[test]
fn malformed_did() {
    let w = alice();
    let payload = serde_json::to_vec(&claims(NOW, "n")).unwrap();
    let mut guard = ReplayGuard::new(16);
    let did = w.did();
    for kid in [
        "".to_string(),
        "did:web:example.com".into(),
        "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme".into(), // secp256k1
        format!("{did}#key-1"),
        did.replace("did:key:z", "did:key:"),
        did[..did.len() - 1].to_string(),
    ] {
        let h = serde_json::to_vec(&json!({"alg": "EdDSA", "kid": kid})).unwrap();
        assert_eq!(
            verify(&jws(&w, &h, &payload), &mut guard),
            Err(RequestError::MalformedDid(kid.clone())),
            "{kid}"
        );
    }
}

#[test]
fn signature_checks() {
    let w = alice();
    let mallory = Wallet::from_secret([2; 32], None);
    let good = sign_request(&w, "POST", "/api/v1/devices", BODY, NOW, "n");
    let (input, sig) = good.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let mut guard = ReplayGuard::new(16);

    for len in [0usize, 63, 65, 128] {
        let mut s = sig.clone();
        s.resize(len, 0);
        assert_eq!(
            verify(&format!("{input}.{}", b64(&s)), &mut guard),
            Err(RequestError::SignatureLength(len))
        );
    }
    // Signed by another key than kid names.
    let payload = serde_json::to_vec(&claims(NOW, "n")).unwrap();
    let forged = {
        let input = format!("{}.{}", b64(&header(&w)), b64(&payload));
        format!("{input}.{}", b64(&mallory.sign(input.as_bytes())))
    };
    assert_eq!(verify(&forged, &mut guard), Err(RequestError::BadSignature));
    // Any flipped bit of the signature.
    for i in 0..64 {
        let mut s = sig.clone();
        s[i] ^= 0x80;
        assert_eq!(
            verify(&format!("{input}.{}", b64(&s)), &mut guard),
            Err(RequestError::BadSignature),
            "byte {i}"
        );
    }
    // Claims changed after signing (another nonce, to replay under a new name).
    let (h, _) = input.split_once('.').unwrap();
    let other = serde_json::to_vec(&claims(NOW, "m")).unwrap();
    let swapped = format!("{h}.{}.{}", b64(&other), b64(&sig));
    assert_eq!(
        verify(&swapped, &mut guard),
        Err(RequestError::BadSignature)
    );
    // kid swapped to mallory's key with alice's signature.
    let h2 = b64(&header(&mallory));
    let (_, p) = input.split_once('.').unwrap();
    assert_eq!(
        verify(&format!("{h2}.{p}.{}", b64(&sig)), &mut guard),
        Err(RequestError::BadSignature)
    );
    assert!(guard.is_empty());
    assert_eq!(verify(&good, &mut guard), Ok(w.did()));
}

#[test]
fn request_mismatch() {
    let w = alice();
    let token = sign_request(&w, "POST", "/api/v1/devices", BODY, NOW, "n");
    let mut guard = ReplayGuard::new(16);
    let check = |m: &str, p: &str, b: &[u8], g: &mut ReplayGuard| {
        verify_request(&token, m, p, b, NOW, SKEW, g)
    };
    assert_eq!(
        check("PUT", "/api/v1/devices", BODY, &mut guard),
        Err(RequestError::Mismatch("method"))
    );
    assert_eq!(
        check("post", "/api/v1/devices", BODY, &mut guard),
        Err(RequestError::Mismatch("method"))
    );
    assert_eq!(
        check("POST", "/api/v1/devices/1", BODY, &mut guard),
        Err(RequestError::Mismatch("path"))
    );
    assert_eq!(
        check("POST", "/api/v1/devices", b"{}", &mut guard),
        Err(RequestError::Mismatch("body"))
    );
    let e = check("POST", "/api/v1/devices", b"", &mut guard).unwrap_err();
    assert_eq!(e, RequestError::Mismatch("body"));
    assert_eq!(
        e.to_string(),
        "request mismatch: the token signs another body"
    );
    // A refused token is not remembered: the right request still goes through.
    assert!(guard.is_empty());
    assert_eq!(
        check("POST", "/api/v1/devices", BODY, &mut guard),
        Ok(w.did())
    );
}

#[test]
fn stale_timestamps() {
    let w = alice();
    let mut guard = ReplayGuard::new(16);
    for (i, ts) in [NOW - SKEW - 1, NOW + SKEW + 1, 0, u64::MAX]
        .into_iter()
        .enumerate()
    {
        let t = sign_request(&w, "POST", "/api/v1/devices", BODY, ts, &format!("s{i}"));
        let e = verify(&t, &mut guard).unwrap_err();
        assert_eq!(
            e,
            RequestError::Stale {
                ts,
                now: NOW,
                max_skew: SKEW
            }
        );
        assert!(e.to_string().starts_with("stale timestamp"), "{e}");
    }
    assert!(guard.is_empty());
}

#[test]
fn replay_refused_per_signer() {
    let alice = alice();
    let bob = Wallet::from_secret([3; 32], None);
    let mut guard = ReplayGuard::new(16);
    let t = sign_request(&alice, "POST", "/api/v1/devices", BODY, NOW, "same");
    assert_eq!(verify(&t, &mut guard), Ok(alice.did()));
    let e = verify(&t, &mut guard).unwrap_err();
    assert_eq!(e, RequestError::Replayed);
    assert!(e.to_string().starts_with("replayed nonce"));
    // The same nonce with another timestamp is still a replay.
    let t2 = sign_request(&alice, "POST", "/api/v1/devices", BODY, NOW + 1, "same");
    assert_eq!(verify(&t2, &mut guard), Err(RequestError::Replayed));
    // Bob's nonces are his own.
    let b = sign_request(&bob, "POST", "/api/v1/devices", BODY, NOW, "same");
    assert_eq!(verify(&b, &mut guard), Ok(bob.did()));
    assert_eq!(guard.len(), 2);
}

#[test]
fn window_eviction() {
    let w = alice();
    let mut guard = ReplayGuard::new(1_000);
    let at = |ts: u64, nonce: &str| sign_request(&w, "POST", "/api/v1/devices", BODY, ts, nonce);
    let run = |token: &str, now: u64, g: &mut ReplayGuard| {
        verify_request(token, "POST", "/api/v1/devices", BODY, now, SKEW, g)
    };
    // One request per second for five minutes: memory stays at one window.
    let mut peak = 0;
    for i in 0..300u64 {
        let now = NOW + i * 1_000;
        assert_eq!(
            run(&at(now, &format!("n{i}")), now, &mut guard),
            Ok(w.did())
        );
        peak = peak.max(guard.len());
    }
    assert!(peak <= (2 * SKEW / 1_000 + 1) as usize, "peak {peak}");
    // The first nonce is forgotten, and its token is refused for its age instead.
    let first = at(NOW, "n0");
    let later = NOW + 299_000;
    assert!(matches!(
        run(&first, later, &mut guard),
        Err(RequestError::Stale { .. })
    ));
    // A remembered one is still a replay.
    assert_eq!(
        run(&at(later, "n299"), later, &mut guard),
        Err(RequestError::Replayed)
    );
    // The clock steps back to the start: the forgotten nonce stays refused.
    assert_eq!(run(&first, NOW, &mut guard), Err(RequestError::Forgotten));
    guard.evict_expired(later + 2 * SKEW);
    assert!(guard.is_empty());
}

#[test]
fn full_guard_never_lets_a_replay_through() {
    let w = alice();
    let mut guard = ReplayGuard::new(4);
    let tokens: Vec<String> = (0..8u64)
        .map(|i| {
            sign_request(
                &w,
                "POST",
                "/api/v1/devices",
                BODY,
                NOW - 8 + i,
                &format!("f{i}"),
            )
        })
        .collect();
    for t in &tokens {
        assert_eq!(verify(t, &mut guard), Ok(w.did()));
    }
    assert_eq!(guard.len(), 4);
    // The four oldest were pushed out; replaying them is refused, not accepted.
    for t in &tokens[..4] {
        let e = verify(t, &mut guard).unwrap_err();
        assert_eq!(e, RequestError::Forgotten);
        assert!(e.to_string().contains("sign again"), "{e}");
    }
    for t in &tokens[4..] {
        assert_eq!(verify(t, &mut guard), Err(RequestError::Replayed));
    }
    // A fresh request is still served.
    let fresh = sign_request(&w, "POST", "/api/v1/devices", BODY, NOW, "fresh");
    assert_eq!(verify(&fresh, &mut guard), Ok(w.did()));
}
