//! SIP Digest authentication (RFC 3261 §22 with RFC 7616 and RFC 8760):
//! SHA-256 and MD5, `qop=auth` or none, stateless nonces.
//!
//! A nonce is `hex(issued_at || random || HMAC-SHA-256(secret, issued_at || random)[..16])`:
//! the server needs no state to know that it issued a nonce and when. State
//! is kept only for nonces that have been used, to refuse replays, and only
//! until they expire; a hard cap bounds it whatever the request rate.

use std::collections::{BTreeSet, HashMap};

use dots_sip::{HeaderName, Request, Uri};
use md5::Md5;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::Millis;

/// The stored secret of a user: `H(user:realm:password)` for both
/// algorithms, lowercase hex, so that the password itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

/// Computes the credentials to store for a user.
pub fn hash_password(user: &str, realm: &str, password: &str) -> Credentials {
    let a1 = format!("{user}:{realm}:{password}");
    Credentials {
        realm: realm.to_string(),
        ha1_md5: Algorithm::Md5.hash(&a1),
        ha1_sha256: Algorithm::Sha256.hash(&a1),
    }
}

/// The verdict on a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Valid credentials for this user.
    Authenticated { user: String },
    /// No credentials for our realm in the request: send a challenge.
    Missing,
    /// The nonce is ours and the password was right but the nonce expired:
    /// challenge again with `stale=true`.
    Stale,
    /// Wrong password, unknown user, replayed nonce-count, bad or forged
    /// nonce, malformed header, unsupported algorithm: answer 403 (or 401
    /// again). The reason is for logs; wrong password and unknown user share
    /// one, so that it never tells which.
    Rejected { reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn parse(name: Option<&str>) -> Option<Algorithm> {
        match name {
            None => Some(Algorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            // -sess variants, SHA-512-256 and anything else.
            Some(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }

    fn ha1(self, creds: &Credentials) -> &str {
        match self {
            Algorithm::Md5 => &creds.ha1_md5,
            Algorithm::Sha256 => &creds.ha1_sha256,
        }
    }
}

/// `qop=auth` parameters of a response.
struct QopAuth<'a> {
    nc: &'a str,
    cnonce: &'a str,
}

/// The request-digest of RFC 7616 §3.4.1 (RFC 2069 form without qop).
fn request_digest(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: Option<&QopAuth>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    match qop {
        Some(q) => alg.hash(&format!("{ha1}:{nonce}:{}:{}:auth:{ha2}", q.nc, q.cnonce)),
        None => alg.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

const NONCE_ID_LEN: usize = 16; // issued_at (8) + random (8)
const NONCE_MAC_LEN: usize = 16;
const NONCE_LEN: usize = NONCE_ID_LEN + NONCE_MAC_LEN;

/// Default cap on tracked nonces: a few tens of MB at most.
pub const DEFAULT_MAX_TRACKED_NONCES: usize = 1 << 18;

/// How a used nonce may be used again.
#[derive(Debug, Clone, Copy)]
enum NonceUse {
    /// Last nonce-count accepted with `qop=auth`.
    Counted(u32),
    /// Used without qop: single-use, spent.
    Spent,
}

/// Digest challenges and verification for one realm.
/// What [`DigestAuth::spend_nonce`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// Ours, in time, never used: now spent.
    Fresh,
    /// Ours but too old: challenge again with a new one.
    Stale,
    /// Not issued by us.
    Invalid,
    /// Already used once.
    Replayed,
}

pub struct DigestAuth {
    realm: String,
    secret: [u8; 32],
    nonce_ttl_ms: Millis,
    rng: StdRng,
    used: HashMap<[u8; NONCE_ID_LEN], NonceUse>,
    /// `(issued_at, nonce id)` of every entry of `used`, oldest first.
    by_issue: BTreeSet<(Millis, [u8; NONCE_ID_LEN])>,
    max_tracked: usize,
    /// When the cap forces out a nonce that is still valid, every nonce
    /// issued up to then is treated as stale: it can no longer be checked
    /// for replay.
    evicted_up_to: Option<Millis>,
}

impl DigestAuth {
    /// `secret`: random key for the stateless nonces; `nonce_ttl_ms`: how long
    /// a nonce is accepted (e.g. 300_000).
    pub fn new(realm: String, secret: [u8; 32], nonce_ttl_ms: Millis) -> Self {
        DigestAuth {
            realm,
            secret,
            nonce_ttl_ms,
            rng: StdRng::from_os_rng(),
            used: HashMap::new(),
            by_issue: BTreeSet::new(),
            max_tracked: DEFAULT_MAX_TRACKED_NONCES,
            evicted_up_to: None,
        }
    }

    /// Caps the number of used nonces tracked for replay protection.
    pub fn set_max_tracked_nonces(&mut self, max: usize) {
        self.max_tracked = max.max(1);
    }

    /// Number of used nonces currently tracked.
    pub fn tracked_nonces(&self) -> usize {
        self.used.len()
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// WWW-Authenticate (or Proxy-Authenticate) values for a 401/407: SHA-256
    /// first, then MD5 (RFC 8760 §2.4), both `qop="auth"`, sharing one fresh
    /// nonce; `stale=true` when asked.
    pub fn challenge(&mut self, now: Millis, stale: bool) -> Vec<String> {
        let nonce = self.make_nonce(now);
        let stale = if stale { ", stale=true" } else { "" };
        [Algorithm::Sha256, Algorithm::Md5]
            .into_iter()
            .map(|alg| {
                format!(
                    "Digest realm={}, nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                    quote(&self.realm),
                    alg.name()
                )
            })
            .collect()
    }

    fn make_nonce(&mut self, now: Millis) -> String {
        let mut id = [0u8; NONCE_ID_LEN];
        id[..8].copy_from_slice(&now.to_be_bytes());
        self.rng.fill_bytes(&mut id[8..]);
        let mac = hmac_sha256(&self.secret, &id);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..NONCE_ID_LEN].copy_from_slice(&id);
        nonce[NONCE_ID_LEN..].copy_from_slice(&mac[..NONCE_MAC_LEN]);
        hex::encode(nonce)
    }

    /// The id and issue time of a nonce we issued, or `None` if it is not ours.
    fn check_nonce(&self, nonce: &str) -> Option<([u8; NONCE_ID_LEN], Millis)> {
        if nonce.len() != NONCE_LEN * 2 {
            return None;
        }
        let bytes = hex::decode(nonce).ok()?;
        let mut id = [0u8; NONCE_ID_LEN];
        id.copy_from_slice(&bytes[..NONCE_ID_LEN]);
        let mac = hmac_sha256(&self.secret, &id);
        if !ct_eq(&mac[..NONCE_MAC_LEN], &bytes[NONCE_ID_LEN..]) {
            return None;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&id[..8]);
        Some((id, u64::from_be_bytes(ts)))
    }

    /// Checks the request's Authorization (or Proxy-Authorization, by
    /// `header`) values for our realm; `lookup(user)` gives that user's
    /// credentials. The digest-uri must be equivalent to the Request-URI.
    /// Credentials for other realms are ignored (they are for another hop).
    ///
    /// Order matters: the password is checked before freshness and replay,
    /// so that `Stale` is only said to whoever knows the password, and a
    /// wrong guess does not consume a nonce-count.
    pub fn verify(
        &mut self,
        now: Millis,
        request: &Request,
        header: HeaderName,
        lookup: impl Fn(&str) -> Option<Credentials>,
    ) -> AuthOutcome {
        let reject = |reason| AuthOutcome::Rejected { reason };
        let mut malformed = false;
        let mut ours = None;
        for value in request.headers.get_all(header) {
            let (scheme, _) = split_scheme(value);
            if !scheme.eq_ignore_ascii_case("Digest") {
                continue;
            }
            match parse_digest_params(value) {
                Some(params) => {
                    if get(&params, "realm") == Some(self.realm.as_str()) {
                        ours = Some(params);
                        break;
                    }
                }
                None => malformed = true,
            }
        }
        let Some(params) = ours else {
            return if malformed {
                reject("malformed credentials")
            } else {
                AuthOutcome::Missing
            };
        };
        let (Some(user), Some(nonce), Some(uri), Some(response)) = (
            get(&params, "username"),
            get(&params, "nonce"),
            get(&params, "uri"),
            get(&params, "response"),
        ) else {
            return reject("malformed credentials");
        };
        let Some(alg) = Algorithm::parse(get(&params, "algorithm")) else {
            return reject("unsupported algorithm");
        };
        if get(&params, "userhash").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return reject("unsupported userhash");
        }
        let qop = match get(&params, "qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (get(&params, "nc"), get(&params, "cnonce")) else {
                    return reject("malformed credentials");
                };
                if nc.len() != 8 || cnonce.is_empty() {
                    return reject("malformed credentials");
                }
                Some(QopAuth { nc, cnonce })
            }
            Some(_) => return reject("unsupported qop"),
        };
        let nc = match &qop {
            Some(q) => match u32::from_str_radix(q.nc, 16) {
                Ok(n) if n > 0 => Some(n),
                _ => return reject("malformed credentials"),
            },
            None => None,
        };
        let Some((nonce_id, issued_at)) = self.check_nonce(nonce) else {
            return reject("invalid nonce");
        };
        if !digest_uri_matches(uri, &request.uri) {
            return reject("digest-uri does not match the request");
        }
        let creds = lookup(user).filter(|c| c.realm == self.realm);
        // An unknown user costs the same work as a known one.
        let ha1 = creds
            .as_ref()
            .map(|c| alg.ha1(c).to_ascii_lowercase())
            .unwrap_or_else(|| "0".repeat(64));
        let expected = request_digest(alg, &ha1, nonce, qop.as_ref(), request.method.as_str(), uri);
        let matches = ct_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        );
        if creds.is_none() || !matches {
            return reject("invalid credentials");
        }

        self.evict(now);
        let expired = issued_at.saturating_add(self.nonce_ttl_ms) <= now
            || self.evicted_up_to.is_some_and(|t| issued_at <= t);
        if expired {
            return AuthOutcome::Stale;
        }
        let next = match (self.used.get(&nonce_id), nc) {
            (None, Some(n)) => NonceUse::Counted(n),
            (None, None) => NonceUse::Spent,
            (Some(NonceUse::Counted(last)), Some(n)) if n > *last => NonceUse::Counted(n),
            _ => return reject("replayed nonce"),
        };
        if self.used.insert(nonce_id, next).is_none() {
            self.by_issue.insert((issued_at, nonce_id));
            if self.used.len() > self.max_tracked {
                if let Some((t, id)) = self.by_issue.pop_first() {
                    self.used.remove(&id);
                    self.evicted_up_to = Some(self.evicted_up_to.map_or(t, |e| e.max(t)));
                }
            }
        }
        AuthOutcome::Authenticated {
            user: user.to_string(),
        }
    }

    /// A fresh nonce of ours, for another authentication scheme sharing this one's
    /// nonce lifetime and replay protection (the key login of `dots_identity::login`).
    pub fn issue_nonce(&mut self, now: Millis) -> String {
        self.make_nonce(now)
    }

    /// Checks a nonce of ours presented by a scheme without nonce counts and spends
    /// it: it is accepted once. Call it only after the rest of the credentials
    /// verified, so that a forged answer neither consumes a nonce nor learns that it
    /// is stale.
    pub fn spend_nonce(&mut self, nonce: &str, now: Millis) -> NonceStatus {
        let Some((nonce_id, issued_at)) = self.check_nonce(nonce) else {
            return NonceStatus::Invalid;
        };
        self.evict(now);
        let expired = issued_at.saturating_add(self.nonce_ttl_ms) <= now
            || self.evicted_up_to.is_some_and(|t| issued_at <= t);
        if expired {
            return NonceStatus::Stale;
        }
        if self.used.contains_key(&nonce_id) {
            return NonceStatus::Replayed;
        }
        self.used.insert(nonce_id, NonceUse::Spent);
        self.by_issue.insert((issued_at, nonce_id));
        if self.used.len() > self.max_tracked {
            if let Some((t, id)) = self.by_issue.pop_first() {
                self.used.remove(&id);
                self.evicted_up_to = Some(self.evicted_up_to.map_or(t, |e| e.max(t)));
            }
        }
        NonceStatus::Fresh
    }

    /// Whether `nonce` was issued by us (whatever its age).
    pub fn is_our_nonce(&self, nonce: &str) -> bool {
        self.check_nonce(nonce).is_some()
    }

    /// Forgets the nonces that have expired: they are refused as stale anyway.
    fn evict(&mut self, now: Millis) {
        while let Some(&(issued_at, id)) = self.by_issue.first() {
            if issued_at.saturating_add(self.nonce_ttl_ms) > now {
                break;
            }
            self.by_issue.pop_first();
            self.used.remove(&id);
        }
    }
}

/// The digest-uri names the same resource as the Request-URI: URI
/// equivalence for SIP URIs (clients differ in parameter order and case),
/// text otherwise.
fn digest_uri_matches(digest_uri: &str, request_uri: &Uri) -> bool {
    match Uri::parse(digest_uri.trim()) {
        Ok(u) => u.equivalent(request_uri),
        Err(_) => digest_uri.trim() == request_uri.to_string(),
    }
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Splits `Digest a=b, ...` into the scheme and the rest.
fn split_scheme(value: &str) -> (&str, &str) {
    let value = value.trim_start();
    let end = value
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(value.len());
    (&value[..end], &value[end..])
}

/// Parses a Digest Authorization / WWW-Authenticate value (with or without
/// the leading `Digest`) into `(name, value)` pairs: names lower-cased,
/// quoted values unquoted. `None` on a syntax error, another scheme, or a
/// repeated parameter (which RFC 7616 forbids and which could make two
/// parsers disagree).
pub fn parse_digest_params(value: &str) -> Option<Vec<(String, String)>> {
    let mut rest = value.trim();
    let (scheme, after) = split_scheme(rest);
    if !scheme.contains('=') && !after.trim_start().starts_with('=') {
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        rest = after;
    }
    let mut out: Vec<(String, String)> = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
        if rest.is_empty() {
            break;
        }
        let name_end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        if name_end == 0 {
            return None;
        }
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..]
            .trim_start()
            .strip_prefix('=')?
            .trim_start();
        let val = if let Some(q) = rest.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => val.push(chars.next()?.1),
                    (i, '"') => break i,
                    (_, c) => val.push(c),
                }
            };
            rest = &q[end + 1..];
            val
        } else {
            let end = rest
                .find(|c: char| !is_bare_value_char(c))
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            let val = rest[..end].to_string();
            rest = &rest[end..];
            val
        };
        let after = rest.trim_start();
        if !(after.is_empty() || after.starts_with(',')) {
            return None;
        }
        if out.iter().any(|(n, _)| *n == name) {
            return None;
        }
        out.push((name, val));
    }
    if out.is_empty() {
        return None;
    }
    Some(out)
}

/// Token characters (RFC 3261 §25.1).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// Unquoted values: tokens, plus what lax clients leave unquoted
/// (`uri=sip:bob@host`, base64 nonces with `/` and `=` padding).
fn is_bare_value_char(c: char) -> bool {
    is_token_char(c) || "/:@=".contains(c)
}

/// Quotes a string for a header parameter.
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

/// Client side: the Authorization value answering a Digest `challenge`
/// (a WWW-Authenticate or Proxy-Authenticate value). Uses `qop=auth` when
/// offered, echoes `opaque`. `None` if the challenge is malformed or asks
/// for an algorithm or qop we do not implement.
pub fn answer_challenge(
    challenge: &str,
    method: &str,
    uri: &str,
    user: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> Option<String> {
    let params = parse_digest_params(challenge)?;
    let realm = get(&params, "realm")?;
    let nonce = get(&params, "nonce")?;
    let alg = Algorithm::parse(get(&params, "algorithm"))?;
    let nc_text = format!("{nc:08x}");
    let qop = match get(&params, "qop") {
        None => None,
        Some(list)
            if list
                .split(',')
                .any(|q| q.trim().eq_ignore_ascii_case("auth")) =>
        {
            Some(QopAuth {
                nc: &nc_text,
                cnonce,
            })
        }
        Some(_) => return None,
    };
    let ha1 = alg.hash(&format!("{user}:{realm}:{password}"));
    let response = request_digest(alg, &ha1, nonce, qop.as_ref(), method, uri);
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={}",
        quote(user),
        quote(realm),
        quote(nonce),
        quote(uri),
        alg.name()
    );
    if let Some(q) = &qop {
        out.push_str(&format!(
            ", qop=auth, nc={}, cnonce={}",
            q.nc,
            quote(q.cnonce)
        ));
    }
    if let Some(opaque) = get(&params, "opaque") {
        out.push_str(&format!(", opaque={}", quote(opaque)));
    }
    Some(out)
}

fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Compares without an early exit, so that timing does not reveal how many
/// leading characters of a guess were right.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
