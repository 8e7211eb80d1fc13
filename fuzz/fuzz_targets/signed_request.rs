//! Signed requests (`dots-identity`): `verify_request` never panics; nothing but
//! the token as signed is accepted, even with parts of it replaced by fuzz
//! input; and whatever sequence of clock readings the guard sees, the same
//! (nonce, timestamp) is never accepted twice.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use dots_identity::{sign_request, verify_request, ReplayGuard, Wallet};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000_000;
const SKEW: u64 = 30_000;
const BODY: &[u8] = br#"{"device":"desk"}"#;

fn wallet() -> &'static Wallet {
    static W: OnceLock<Wallet> = OnceLock::new();
    W.get_or_init(|| Wallet::from_secret([7; 32], None))
}

fn token() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| sign_request(wallet(), "POST", "/api/v1/devices", BODY, NOW, "seed-nonce"))
}

fn verify(token: &str, now: u64, guard: &mut ReplayGuard) -> Option<String> {
    verify_request(token, "POST", "/api/v1/devices", BODY, now, SKEW, guard).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        // Arbitrary text as a token.
        0 => {
            let text = String::from_utf8_lossy(rest);
            if let Some(did) = verify(&text, NOW, &mut ReplayGuard::new(4)) {
                assert_eq!(text, token());
                assert_eq!(did, wallet().did());
            }
        }
        // The valid token with a slice replaced by fuzz input.
        1 => {
            let [a, b, tail @ ..] = rest else { return };
            let valid = token().as_bytes();
            let start = usize::from(*a) * valid.len() / 256;
            let end = (start + usize::from(*b) % 32).min(valid.len());
            let mut bytes = valid[..start].to_vec();
            bytes.extend_from_slice(tail);
            bytes.extend_from_slice(&valid[end..]);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                if verify(text, NOW, &mut ReplayGuard::new(4)).is_some() {
                    assert_eq!(text, token());
                }
            }
        }
        // A run of requests: each 3 bytes give a nonce (of 4), a timestamp
        // offset and a clock offset; the guard is small so that it fills.
        _ => {
            let mut guard = ReplayGuard::new(3);
            let mut accepted = HashSet::new();
            for op in rest.chunks_exact(3).take(64) {
                let nonce = format!("n{}", op[0] % 4);
                let ts = NOW + u64::from(op[1]) * 1_000;
                let now = NOW + u64::from(op[2]) * 1_000;
                let t = sign_request(wallet(), "POST", "/api/v1/devices", BODY, ts, &nonce);
                if verify(&t, now, &mut guard).is_some() {
                    assert!(ts.abs_diff(now) <= SKEW);
                    assert!(accepted.insert((nonce, ts)), "replay accepted");
                }
                assert!(guard.len() <= 3);
            }
        }
    }
});
