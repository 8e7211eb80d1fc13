//! Deep login: a SIP REGISTER authorized by the user's key instead of a password.
//!
//! The node's 401 carries, next to its Digest challenges, one of this scheme:
//!
//! ```text
//! WWW-Authenticate: DOTS-Sig realm="dots.test", nonce="…", node="12D3KooW…"
//! ```
//!
//! The user agent answers with
//!
//! ```text
//! Authorization: DOTS-Sig did="did:key:z6Mk…", realm="dots.test", nonce="…",
//!     uri="sip:dots.test", contact="<sip:alice@192.0.2.7:5070>", expires="600",
//!     issued="1700000000000", until="1700000600000",
//!     sig="<base64url, 64 bytes>", grant="<base64url, 64 bytes>"
//! ```
//!
//! - `sig` is Ed25519 by the DID's key over [`login_message`]: the challenge (realm,
//!   nonce), the request (method, request-URI), the DID and the binding being asked
//!   for (the Contact header value and the expiry), so that a captured answer cannot
//!   register another contact, for longer, or at another node.
//! - `grant` is the user's [`Grant`] for the node named in the challenge, from
//!   `issued` to `until`: what lets that node's presence records for the DID be
//!   accepted by every other node.
//!
//! The node checks the nonce itself (it issued it, with an expiry); [`verify`] checks
//! the rest. Nothing here does I/O or reads a clock.

use dots_records::{public_from_did, Grant, Millis};
use ed25519_dalek::{Signature, VerifyingKey};

use crate::b64;
use crate::wallet::Wallet;

/// The authentication scheme name, in WWW-Authenticate and Authorization.
pub const SCHEME: &str = "DOTS-Sig";
/// Domain separation of login signatures.
pub const LOGIN_SIGNING_DOMAIN: &str = "dots-login-v1";
/// Longest header value [`Credentials::parse`] and [`Challenge::parse`] look at.
pub const MAX_HEADER_LEN: usize = 4096;

/// Why a deep login was refused; the text is what the node logs and what the
/// client shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("malformed {SCHEME} header: {0}")]
    Malformed(String),
    #[error("missing parameter {0:?} in the {SCHEME} header")]
    Missing(&'static str),
    #[error("malformed DID {0:?}: not an Ed25519 did:key")]
    MalformedDid(String),
    #[error("{0} of wrong length: {1} bytes, expected 64")]
    SignatureLength(&'static str, usize),
    #[error("bad signature: the login was not signed by the key of the DID it names")]
    BadSignature,
    #[error("bad grant: {0}")]
    BadGrant(String),
    #[error("the login signs another {0} than the request carries")]
    Mismatch(&'static str),
}

/// The node's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    /// The node's libp2p PeerId, base58 (`12D3KooW…`).
    pub node: String,
}

impl Challenge {
    /// The WWW-Authenticate header value.
    pub fn to_header(&self) -> String {
        format!(
            "{SCHEME} realm={}, nonce={}, node={}",
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.node)
        )
    }

    /// Parses a WWW-Authenticate value; `None` when it is of another scheme.
    pub fn parse(value: &str) -> Option<Result<Challenge, LoginError>> {
        let params = strip_scheme(value)?;
        Some(parse_params(params).and_then(|p| {
            Ok(Challenge {
                realm: p.get("realm")?,
                nonce: p.get("nonce")?,
                node: p.get("node")?,
            })
        }))
    }
}

/// A user agent's answer to a [`Challenge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub did: String,
    pub realm: String,
    pub nonce: String,
    /// The request-URI of the REGISTER.
    pub uri: String,
    /// The Contact header value of the REGISTER, exactly as sent.
    pub contact: String,
    /// The expiry asked for, seconds.
    pub expires: u32,
    /// Grant validity, ms since the UNIX epoch.
    pub issued: Millis,
    pub until: Millis,
    pub sig: [u8; 64],
    pub grant: [u8; 64],
}

/// What the login signature covers: one line per field, in this order.
pub fn login_message(
    realm: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    did: &str,
    contact: &str,
    expires: u32,
) -> Vec<u8> {
    format!(
        "{LOGIN_SIGNING_DOMAIN}\n{realm}\n{nonce}\n{method}\n{uri}\n{did}\n{contact}\n{expires}"
    )
    .into_bytes()
}

/// The user agent's side: signs the login and a grant for the challenging node that
/// lasts from `now` to `now + expires` (plus `slack_ms`, so that a refresh that comes
/// a little late does not leave the node without a valid grant).
#[allow(clippy::too_many_arguments)]
pub fn answer(
    wallet: &Wallet,
    challenge: &Challenge,
    method: &str,
    uri: &str,
    contact: &str,
    expires: u32,
    now: Millis,
    slack_ms: Millis,
) -> Result<Credentials, LoginError> {
    let node = node_bytes(&challenge.node)?;
    let did = wallet.did();
    let until = now
        .saturating_add(u64::from(expires) * 1000)
        .saturating_add(slack_ms);
    let grant = Grant::new_signed(&did, &node, now, until, |m| wallet.sign(m));
    let sig = wallet.sign(&login_message(
        &challenge.realm,
        &challenge.nonce,
        method,
        uri,
        &did,
        contact,
        expires,
    ));
    Ok(Credentials {
        did,
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_string(),
        contact: contact.to_string(),
        expires,
        issued: now,
        until,
        sig,
        grant: grant.signature,
    })
}

impl Credentials {
    /// The Authorization header value.
    pub fn to_header(&self) -> String {
        format!(
            "{SCHEME} did={}, realm={}, nonce={}, uri={}, contact={}, expires=\"{}\", \
             issued=\"{}\", until=\"{}\", sig=\"{}\", grant=\"{}\"",
            quote(&self.did),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.contact),
            self.expires,
            self.issued,
            self.until,
            b64::encode(&self.sig),
            b64::encode(&self.grant),
        )
    }

    /// Parses an Authorization value; `None` when it is of another scheme.
    pub fn parse(value: &str) -> Option<Result<Credentials, LoginError>> {
        let params = strip_scheme(value)?;
        Some(parse_params(params).and_then(|p| {
            let did = p.get("did")?;
            if public_from_did(&did).is_none() {
                return Err(LoginError::MalformedDid(did));
            }
            Ok(Credentials {
                realm: p.get("realm")?,
                nonce: p.get("nonce")?,
                uri: p.get("uri")?,
                contact: p.get("contact")?,
                expires: p.number("expires")?,
                issued: p.number("issued")?,
                until: p.number("until")?,
                sig: p.signature("sig")?,
                grant: p.signature("grant")?,
                did,
            })
        }))
    }

    /// The grant these credentials give to `node` (PeerId bytes).
    pub fn grant_for(&self, node: &[u8]) -> Grant {
        Grant {
            did: self.did.clone(),
            node: node.to_vec(),
            issued: self.issued,
            until: self.until,
            signature: self.grant,
        }
    }
}

/// The node's side, after it has checked that it issued `creds.nonce` for
/// `creds.realm` and that the nonce has not expired: the signature covers this
/// request (`method`, the REGISTER's Contact value and expiry), is by the DID's key,
/// and the grant is for this node (`node`: PeerId bytes), by the same key, and lasts
/// at least as long as the registration. Returns the grant to put in presence records.
pub fn verify(
    creds: &Credentials,
    method: &str,
    contact: &str,
    expires: u32,
    node: &[u8],
    now: Millis,
) -> Result<Grant, LoginError> {
    if creds.contact != contact {
        return Err(LoginError::Mismatch("Contact"));
    }
    if creds.expires != expires {
        return Err(LoginError::Mismatch("expiry"));
    }
    let public =
        public_from_did(&creds.did).ok_or_else(|| LoginError::MalformedDid(creds.did.clone()))?;
    let key = VerifyingKey::from_bytes(&public)
        .map_err(|_| LoginError::MalformedDid(creds.did.clone()))?;
    let msg = login_message(
        &creds.realm,
        &creds.nonce,
        method,
        &creds.uri,
        &creds.did,
        &creds.contact,
        creds.expires,
    );
    key.verify_strict(&msg, &Signature::from_bytes(&creds.sig))
        .map_err(|_| LoginError::BadSignature)?;
    let grant = creds.grant_for(node);
    let registration_ends = now.saturating_add(u64::from(expires) * 1000);
    if grant.until < registration_ends {
        return Err(LoginError::BadGrant(format!(
            "it ends at {} ms, before the registration ({registration_ends} ms)",
            grant.until
        )));
    }
    grant
        .check(&creds.did, node, registration_ends)
        .map_err(|e| LoginError::BadGrant(e.to_string()))?;
    Ok(grant)
}

/// PeerId bytes from its base58 text.
fn node_bytes(node: &str) -> Result<Vec<u8>, LoginError> {
    let bytes = bs58::decode(node)
        .into_vec()
        .map_err(|_| LoginError::Malformed(format!("node {node:?} is not base58")))?;
    if dots_records::public_from_peer_id(&bytes).is_none() {
        return Err(LoginError::Malformed(format!(
            "node {node:?} is not an Ed25519 libp2p PeerId"
        )));
    }
    Ok(bytes)
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The parameters after `DOTS-Sig ` (scheme names are case-insensitive), or None.
fn strip_scheme(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &'static str) -> Result<String, LoginError> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .ok_or(LoginError::Missing(name))
    }

    fn number<T: std::str::FromStr>(&self, name: &'static str) -> Result<T, LoginError> {
        let v = self.get(name)?;
        v.parse()
            .map_err(|_| LoginError::Malformed(format!("{name}={v:?} is not a number")))
    }

    fn signature(&self, name: &'static str) -> Result<[u8; 64], LoginError> {
        let v = self.get(name)?;
        let bytes = b64::decode(&v)
            .map_err(|_| LoginError::Malformed(format!("{name} is not base64url")))?;
        let len = bytes.len();
        bytes
            .try_into()
            .map_err(|_| LoginError::SignatureLength(name, len))
    }
}

/// `name=token` or `name="quoted"` pairs separated by commas (RFC 7235 auth-params).
fn parse_params(s: &str) -> Result<Params, LoginError> {
    if s.len() > MAX_HEADER_LEN {
        return Err(LoginError::Malformed("header too long".into()));
    }
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| LoginError::Malformed("parameter without '='".into()))?;
        let name = rest[..eq].trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(LoginError::Malformed(format!(
                "bad parameter name {name:?}"
            )));
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, escaped)) => v.push(escaped),
                        None => break,
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let end = end.ok_or_else(|| LoginError::Malformed("unterminated quote".into()))?;
            value = v;
            rest = &quoted[end..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        if out
            .iter()
            .any(|(n, _): &(String, String)| n.eq_ignore_ascii_case(name))
        {
            return Err(LoginError::Malformed(format!("parameter {name:?} twice")));
        }
        out.push((name.to_string(), value));
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(LoginError::Malformed(
                "expected ',' between parameters".into(),
            ));
        }
    }
    Ok(Params(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dots_records::NodeKey;

    const NOW: Millis = 1_700_000_000_000;

    fn setup() -> (Wallet, NodeKey, Challenge) {
        let wallet = Wallet::from_secret([7; 32], Some("alice".into()));
        let node = NodeKey::from_secret([9; 32]);
        let challenge = Challenge {
            realm: "dots.test".into(),
            nonce: "abc\"def".into(),
            node: bs58::encode(node.peer_id_bytes()).into_string(),
        };
        (wallet, node, challenge)
    }

    const CONTACT: &str = "<sip:alice@192.0.2.7:5070;transport=tcp>;expires=600";

    fn login(wallet: &Wallet, challenge: &Challenge) -> Credentials {
        answer(
            wallet,
            challenge,
            "REGISTER",
            "sip:dots.test",
            CONTACT,
            600,
            NOW,
            30_000,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_through_the_headers() {
        let (wallet, node, challenge) = setup();
        let parsed = Challenge::parse(&challenge.to_header()).unwrap().unwrap();
        assert_eq!(parsed, challenge);
        let creds = login(&wallet, &challenge);
        let back = Credentials::parse(&creds.to_header()).unwrap().unwrap();
        assert_eq!(back, creds);
        let grant = verify(&back, "REGISTER", CONTACT, 600, &node.peer_id_bytes(), NOW).unwrap();
        assert_eq!(grant.did, wallet.did());
        assert_eq!(grant.until, NOW + 630_000);
        // Other schemes are not ours.
        assert!(Credentials::parse("Digest username=\"a\"").is_none());
        assert!(Challenge::parse("DOTS-Signature realm=\"x\"").is_none());
        assert!(Credentials::parse("dots-sig did=\"x\"").is_some());
    }

    #[test]
    fn refusals() {
        let (wallet, node, challenge) = setup();
        let node_id = node.peer_id_bytes();
        let creds = login(&wallet, &challenge);
        let check = |c: &Credentials| verify(c, "REGISTER", CONTACT, 600, &node_id, NOW);
        assert!(check(&creds).is_ok());

        // Another contact, another expiry, another method.
        assert_eq!(
            verify(
                &creds,
                "REGISTER",
                "<sip:evil@192.0.2.66>",
                600,
                &node_id,
                NOW
            ),
            Err(LoginError::Mismatch("Contact"))
        );
        assert_eq!(
            verify(&creds, "REGISTER", CONTACT, 3600, &node_id, NOW),
            Err(LoginError::Mismatch("expiry"))
        );
        assert_eq!(
            verify(&creds, "INVITE", CONTACT, 600, &node_id, NOW),
            Err(LoginError::BadSignature)
        );
        // Signed by another key than the DID's.
        let mut forged = creds.clone();
        forged.did = Wallet::from_secret([8; 32], None).did();
        assert_eq!(check(&forged), Err(LoginError::BadSignature));
        // Any field changed breaks the signature.
        let mut other_nonce = creds.clone();
        other_nonce.nonce = "other".into();
        assert_eq!(check(&other_nonce), Err(LoginError::BadSignature));
        // The grant is for the challenging node only.
        let elsewhere = NodeKey::from_secret([10; 32]).peer_id_bytes();
        assert!(matches!(
            verify(&creds, "REGISTER", CONTACT, 600, &elsewhere, NOW),
            Err(LoginError::BadGrant(_))
        ));
        // A grant shorter than the registration.
        let mut short = creds.clone();
        short.until = NOW + 1000;
        assert!(matches!(check(&short), Err(LoginError::BadGrant(_))));
    }

    #[test]
    fn bad_headers_give_clear_errors() {
        let (wallet, _, challenge) = setup();
        let good = login(&wallet, &challenge).to_header();
        let cases: Vec<(String, &str)> = vec![
            (
                good.replace("did=\"did:key:z6Mk", "did=\"did:key:zQ3s"),
                "malformed DID",
            ),
            (
                good.replace("did=\"did:key:", "did=\"did:web:"),
                "malformed DID",
            ),
            (
                good.replace(", nonce=", ", nonce2="),
                "missing parameter \"nonce\"",
            ),
            (
                good.replace("expires=\"600\"", "expires=\"ten\""),
                "not a number",
            ),
            (
                good.replace("sig=\"", "sig=\"AAAA"),
                "sig of wrong length: 67 bytes",
            ),
            (good.replace("sig=\"", "sig=\"*"), "not base64url"),
            (format!("{good}, did=\"x\""), "twice"),
            (
                good.replace("realm=\"dots.test\"", "realm=\"dots.test"),
                "malformed",
            ),
            (format!("{good} junk"), "expected ','"),
            ("DOTS-Sig".to_string(), "missing parameter"),
            (format!("DOTS-Sig {}", "a=b, ".repeat(1000)), "too long"),
        ];
        for (header, expected) in cases {
            let err = Credentials::parse(&header).unwrap().unwrap_err();
            assert!(err.to_string().contains(expected), "{header}: {err}");
        }
        let bad_node = Challenge {
            node: "not-a-peer-id".into(),
            ..challenge
        };
        let err = answer(
            &wallet, &bad_node, "REGISTER", "sip:x", CONTACT, 600, NOW, 0,
        );
        assert!(matches!(err, Err(LoginError::Malformed(_))), "{err:?}");
    }
}
