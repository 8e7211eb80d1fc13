//! Requests signed with a wallet key: compact JWS (RFC 7515) with EdDSA (RFC 8037).

use std::collections::{BTreeSet, HashMap};

use dots_records::public_from_did;
use ed25519_dalek::{Signature, VerifyingKey};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::b64;
use crate::wallet::Wallet;

/// Longest token `verify_request` looks at.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest nonce accepted, in bytes.
pub const MAX_NONCE_LEN: usize = 128;

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("wrong algorithm {0:?}: only EdDSA is accepted")]
    WrongAlgorithm(String),
    #[error("malformed DID in kid: {0:?} is not an Ed25519 did:key")]
    MalformedDid(String),
    #[error("signature of wrong length: {0} bytes, expected 64")]
    SignatureLength(usize),
    #[error("bad signature: the token was not signed by the key its kid names")]
    BadSignature,
    #[error("stale timestamp: signed at {ts} ms, {} ms away from now ({now} ms), more than the {max_skew} ms allowed; check the clock", ts.abs_diff(*now))]
    Stale { ts: u64, now: u64, max_skew: u64 },
    #[error("replayed nonce: a request with this nonce was already accepted")]
    Replayed,
    #[error("replay guard: nonces from the time of this request were forgotten (the guard was full, or the clock went back); sign again with the current time")]
    Forgotten,
    #[error("request mismatch: the token signs another {0}")]
    Mismatch(&'static str),
}

/// The JOSE header. `typ` is tolerated for the sake of other JWS libraries;
/// anything else (`crit`, `b64`, `jwk`, …) could change what the signature
/// means, so it is refused.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claims {
    m: String,
    p: String,
    b: String,
    ts: u64,
    n: String,
}

/// base64url(SHA-256(body)), the `b` claim.
fn body_hash(body: &[u8]) -> String {
    b64::encode(&Sha256::digest(body))
}

/// A fresh random nonce: 16 bytes from the OS, base64url.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    StdRng::from_os_rng().fill_bytes(&mut bytes);
    b64::encode(&bytes)
}

/// `header.payload.signature` for a JSON header and payload, signed by `wallet`.
fn compact_jws(wallet: &Wallet, header: &[u8], payload: &[u8]) -> String {
    let mut token = b64::encode(header);
    token.push('.');
    token.push_str(&b64::encode(payload));
    let signature = wallet.sign(token.as_bytes());
    token.push('.');
    token.push_str(&b64::encode(&signature));
    token
}

/// Signs an HTTP-style request: a compact JWS whose header is
/// `{"alg":"EdDSA","kid":"did:key:…"}` and whose payload is
/// `{"m":method,"p":path,"b":base64url(sha256(body)),"ts":now_ms,"n":nonce}`.
///
/// `nonce` must be unique per key within the verifier's skew window;
/// [`new_nonce`] makes one.
pub fn sign_request(
    wallet: &Wallet,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
    nonce: &str,
) -> String {
    let header = Header {
        alg: "EdDSA".into(),
        kid: wallet.did(),
        typ: None,
    };
    let claims = Claims {
        m: method.into(),
        p: path.into(),
        b: body_hash(body),
        ts: now_ms,
        n: nonce.into(),
    };
    compact_jws(
        wallet,
        &serde_json::to_vec(&header).expect("header serialises"),
        &serde_json::to_vec(&claims).expect("claims serialise"),
    )
}

/// Checks a token made by [`sign_request`] for the request `method path body`
/// received at `now_ms`, and returns the signer's DID.
///
/// Checks in order, cheapest first, so that garbage costs no signature check:
/// layout, header, `alg`, `kid`, signature length, signature, claims, request
/// match, timestamp within `max_skew_ms` of now, then the nonce. Only a
/// request that passes everything else is remembered by `replay`, so forged
/// tokens cannot fill it.
pub fn verify_request(
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
    max_skew_ms: u64,
    replay: &mut ReplayGuard,
) -> Result<String, RequestError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(RequestError::Malformed("longer than 8 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed(
            "expected three base64url parts separated by dots",
        ));
    };
    let header =
        b64::decode(header_b64).map_err(|_| RequestError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|_| RequestError::Malformed("header is not the expected JSON object"))?;
    if header.alg != "EdDSA" {
        return Err(RequestError::WrongAlgorithm(header.alg));
    }
    let Some(public) = public_from_did(&header.kid) else {
        return Err(RequestError::MalformedDid(header.kid));
    };
    let signature =
        b64::decode(sig_b64).map_err(|_| RequestError::Malformed("signature is not base64url"))?;
    let signature: [u8; 64] = signature
        .as_slice()
        .try_into()
        .map_err(|_| RequestError::SignatureLength(signature.len()))?;
    let signed_len = header_b64.len() + 1 + payload_b64.len();
    let key =
        VerifyingKey::from_bytes(&public).map_err(|_| RequestError::MalformedDid(header.kid))?;
    // Strict: no malleable signatures, no small-order keys.
    key.verify_strict(
        &token.as_bytes()[..signed_len],
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| RequestError::BadSignature)?;
    let claims = b64::decode(payload_b64)
        .map_err(|_| RequestError::Malformed("payload is not base64url"))?;
    let claims: Claims = serde_json::from_slice(&claims)
        .map_err(|_| RequestError::Malformed("payload is not the expected JSON object"))?;
    if claims.n.is_empty() || claims.n.len() > MAX_NONCE_LEN {
        return Err(RequestError::Malformed(
            "nonce empty or longer than 128 bytes",
        ));
    }
    if claims.m != method {
        return Err(RequestError::Mismatch("method"));
    }
    if claims.p != path {
        return Err(RequestError::Mismatch("path"));
    }
    if claims.b != body_hash(body) {
        return Err(RequestError::Mismatch("body"));
    }
    if claims.ts.abs_diff(now_ms) > max_skew_ms {
        return Err(RequestError::Stale {
            ts: claims.ts,
            now: now_ms,
            max_skew: max_skew_ms,
        });
    }
    let did = dots_records::did_from_public(&public);
    // Past ts + skew the timestamp check refuses the token by itself, so the
    // nonce need not be remembered longer than that.
    replay.check_and_insert(
        replay_key(&did, &claims.n),
        claims.ts.saturating_add(max_skew_ms),
        now_ms,
    )?;
    Ok(did)
}

/// Nonces are per signer: one user's nonce must not block another's. Hashing
/// keeps every entry the same small size whatever the nonce and DID.
fn replay_key(did: &str, nonce: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(did.as_bytes());
    h.update([0u8]);
    h.update(nonce.as_bytes());
    h.finalize().into()
}

/// The nonces of requests accepted recently, each kept until its timestamp
/// falls out of the skew window. Memory is bounded by `capacity` entries.
///
/// When full of live entries, the guard forgets the one expiring first and
/// from then on refuses any request that would expire no later than it
/// ([`RequestError::Forgotten`]): a flood of valid requests can push older
/// ones out, but never lets a forgotten one be replayed. The same floor
/// covers entries dropped because they expired, so a clock that steps back
/// does not reopen their window either.
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    expiry: HashMap<[u8; 32], u64>,
    by_expiry: BTreeSet<(u64, [u8; 32])>,
    /// Entries expiring at or before this may have been forgotten.
    floor: u64,
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` nonces (at least one).
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            capacity: capacity.max(1),
            expiry: HashMap::new(),
            by_expiry: BTreeSet::new(),
            floor: 0,
        }
    }

    /// How many nonces are remembered now.
    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }

    /// Forgets every entry that expired before `now_ms`.
    pub fn evict_expired(&mut self, now_ms: u64) {
        while let Some(&(exp, key)) = self.by_expiry.first() {
            if exp >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.expiry.remove(&key);
            self.floor = self.floor.max(exp);
        }
    }

    fn check_and_insert(
        &mut self,
        key: [u8; 32],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), RequestError> {
        self.evict_expired(now_ms);
        if self.expiry.contains_key(&key) {
            return Err(RequestError::Replayed);
        }
        if expires_ms <= self.floor {
            return Err(RequestError::Forgotten);
        }
        if self.expiry.len() >= self.capacity {
            if let Some((exp, old)) = self.by_expiry.pop_first() {
                self.expiry.remove(&old);
                self.floor = self.floor.max(exp);
            }
            if expires_ms <= self.floor {
                return Err(RequestError::Forgotten);
            }
        }
        self.expiry.insert(key, expires_ms);
        self.by_expiry.insert((expires_ms, key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 appendix A.4: the compact JWS of "Example of Ed25519 signing"
    /// under `{"alg":"EdDSA"}` with the appendix A.1 key.
    #[test]
    fn rfc8037_vector() {
        let secret: [u8; 32] = b64::decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap()
            .try_into()
            .unwrap();
        let wallet = Wallet::from_secret(secret, None);
        assert_eq!(
            b64::encode(&wallet.public()),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(
            compact_jws(&wallet, br#"{"alg":"EdDSA"}"#, b"Example of Ed25519 signing"),
            "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }

    #[test]
    fn guard_floor_refuses_forgotten_entries() {
        let mut g = ReplayGuard::new(2);
        g.check_and_insert([1; 32], 100, 0).unwrap();
        g.check_and_insert([2; 32], 200, 0).unwrap();
        // Full: [1] (exp 100) is forgotten, so nothing expiring by 100 is vouched for.
        g.check_and_insert([3; 32], 300, 0).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            g.check_and_insert([1; 32], 100, 0),
            Err(RequestError::Forgotten)
        );
        assert_eq!(
            g.check_and_insert([3; 32], 300, 0),
            Err(RequestError::Replayed)
        );
        // Time moves on: everything expired, the floor no longer matters.
        g.check_and_insert([4; 32], 400, 350).unwrap();
        assert_eq!(g.len(), 1);
        // The clock steps back: [3] (exp 300) was dropped as expired, and is
        // not accepted again although 300 is in the future of 250.
        assert_eq!(
            g.check_and_insert([3; 32], 300, 250),
            Err(RequestError::Forgotten)
        );
        g.check_and_insert([5; 32], 301, 250).unwrap();
    }
}
