//! The presence record: which node serves a subject, signed by that node.

use sha2_011::{Digest, Sha256};

use crate::grant::{is_did_subject, Grant};
use crate::key::{public_from_did, public_from_peer_id, verify_signature, NodeKey};
use crate::{Millis, RecordError, MAX_RECORD_SIZE, RECORD_VERSION};

/// Prefix of the DHT key of a presence record.
pub const PRESENCE_KEY_PREFIX: &str = "dsip-presence:";

/// Domain separation: the signature covers this prefix followed by the body, so a
/// presence signature can never be replayed as another kind of signed object.
pub const PRESENCE_SIGNING_DOMAIN: &[u8] = b"dots-presence-v1:";

/// Length of the Ed25519 signature that ends every encoded record.
pub const SIGNATURE_LEN: usize = 64;

/// DHT key of a subject's presence: sha256("dsip-presence:" + subject).
pub fn presence_key(subject: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(PRESENCE_KEY_PREFIX.as_bytes());
    hasher.update(subject.as_bytes());
    hasher.finalize().into()
}

/// Where a subject can be reached: the serving node and its SIP URIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub version: u8,
    /// The address of record (e.g. "sip:alice@dots.test"); later also DIDs.
    pub subject: String,
    /// libp2p PeerId of the serving node, as bytes (PeerId::to_bytes()).
    pub node: Vec<u8>,
    /// The serving node's SIP URIs, e.g. ["sip:127.0.0.1:5061;transport=tcp", "sip:127.0.0.1:5061"];
    /// empty = withdrawn (offline).
    pub sip: Vec<String>,
    pub seq: u64,
    pub exp: Millis,
    /// The user's permission for `node` to announce a DID subject (required when the
    /// subject is a DID), or to map an address of record to the user's DID (`alias`).
    pub grant: Option<Grant>,
    /// For an address of record (`sip:alice@example.org`): the DID it names. Other
    /// nodes then look the DID up to reach the user. Requires the DID's grant.
    pub alias: Option<String>,
}

impl PresenceRecord {
    /// A version-1 record served by `key`'s node.
    pub fn new(
        subject: impl Into<String>,
        key: &NodeKey,
        sip: Vec<String>,
        seq: u64,
        exp: Millis,
    ) -> PresenceRecord {
        PresenceRecord {
            version: RECORD_VERSION,
            subject: subject.into(),
            node: key.peer_id_bytes(),
            sip,
            seq,
            exp,
            grant: None,
            alias: None,
        }
    }

    /// An alias record: `subject` (an address of record) names the user `did`, with
    /// the user's grant to this node as proof of consent.
    pub fn with_alias(mut self, did: impl Into<String>, grant: Grant) -> PresenceRecord {
        self.alias = Some(did.into());
        self.grant = Some(grant);
        self
    }

    /// The same record carrying the user's grant (for a DID subject).
    pub fn with_grant(mut self, grant: Grant) -> PresenceRecord {
        self.grant = Some(grant);
        self
    }

    /// The DHT key of this record, `presence_key(&self.subject)`.
    pub fn key(&self) -> [u8; 32] {
        presence_key(&self.subject)
    }

    /// True when the record says that the subject is offline (no SIP URIs).
    pub fn is_withdrawn(&self) -> bool {
        self.sip.is_empty()
    }

    /// The body that is signed (without the domain prefix), see the crate doc.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.subject.len()
                + self.node.len()
                + self.sip.iter().map(|s| s.len() + 4).sum::<usize>(),
        );
        out.push(self.version);
        put_bytes(&mut out, self.subject.as_bytes());
        put_bytes(&mut out, &self.node);
        out.extend_from_slice(&len_u32(self.sip.len()).to_be_bytes());
        for uri in &self.sip {
            put_bytes(&mut out, uri.as_bytes());
        }
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.exp.to_be_bytes());
        put_bytes(
            &mut out,
            &self.grant.as_ref().map(Grant::encode).unwrap_or_default(),
        );
        put_bytes(&mut out, self.alias.as_deref().unwrap_or("").as_bytes());
        out
    }

    /// Signs and encodes (the wire/DHT value): body followed by the signature of
    /// `PRESENCE_SIGNING_DOMAIN + body` by `key`.
    ///
    /// Signing does not check the record: whether it is valid (size, node id matching
    /// `key`, expiry) is decided by [`PresenceRecord::verify`] at the receiver.
    pub fn sign(&self, key: &NodeKey) -> Vec<u8> {
        let mut out = self.encode_body();
        let signature = key.sign(&signed_message(&out));
        out.extend_from_slice(&signature);
        out
    }

    /// Decodes the layout only: size, version, field syntax and an Ed25519 node id.
    /// Neither the signature nor the times are checked; use [`PresenceRecord::verify`]
    /// for anything received from the network.
    pub fn decode_unverified(bytes: &[u8]) -> Result<PresenceRecord, RecordError> {
        decode(bytes).map(|(record, _, _)| record)
    }

    /// Decodes and checks everything: size, version, signature by the key embedded in
    /// `node` (ed25519 PeerIds embed the public key), expiry (`exp > now`), not more than
    /// `max_ttl` in the future, and that `key` == presence_key(subject) when `key` is given.
    pub fn verify(
        bytes: &[u8],
        key: Option<&[u8]>,
        now: Millis,
        max_ttl: Millis,
    ) -> Result<PresenceRecord, RecordError> {
        let (record, public, body_len) = decode(bytes)?;
        if let Some(key) = key {
            if key != record.key() {
                return Err(RecordError::WrongKey);
            }
        }
        if record.exp <= now {
            return Err(RecordError::Expired);
        }
        if record.exp > now.saturating_add(max_ttl) {
            return Err(RecordError::TooFarInFuture);
        }
        // Whose consent the record needs: the subject's when it is a DID, the alias
        // target's when it maps an address of record to a DID, nobody's otherwise.
        let consenting = match (&record.alias, is_did_subject(&record.subject)) {
            (Some(_), true) => return Err(RecordError::Malformed("alias on a DID subject".into())),
            (Some(alias), false) => {
                public_from_did(alias).ok_or(RecordError::BadDid)?;
                Some(alias.as_str())
            }
            (None, true) => Some(record.subject.as_str()),
            (None, false) => None,
        };
        match (&record.grant, consenting) {
            (Some(grant), Some(did)) => grant.check(did, &record.node, record.exp)?,
            (None, Some(_)) => return Err(RecordError::MissingGrant),
            (Some(_), None) => {
                return Err(RecordError::Malformed(
                    "grant on a record that is neither a DID's nor an alias".into(),
                ))
            }
            (None, None) => {}
        }
        let (body, signature) = bytes.split_at(body_len);
        let signature: &[u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| RecordError::Malformed("signature length".into()))?;
        if !verify_signature(&public, &signed_message(body), signature) {
            return Err(RecordError::BadSignature);
        }
        Ok(record)
    }

    /// Merge rule: higher seq wins; ties by later exp.
    pub fn supersedes(&self, other: &PresenceRecord) -> bool {
        (self.seq, self.exp) > (other.seq, other.exp)
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(PRESENCE_SIGNING_DOMAIN.len() + body.len());
    msg.extend_from_slice(PRESENCE_SIGNING_DOMAIN);
    msg.extend_from_slice(body);
    msg
}

/// Lengths beyond u32 cannot occur in a record that fits MAX_RECORD_SIZE; saturating
/// keeps `sign` total (such a record fails `verify` with TooLarge anyway).
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&len_u32(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Returns the record, the node's public key and the length of the body.
fn decode(bytes: &[u8]) -> Result<(PresenceRecord, [u8; 32], usize), RecordError> {
    if bytes.len() > MAX_RECORD_SIZE {
        return Err(RecordError::TooLarge);
    }
    let Some(&version) = bytes.first() else {
        return Err(RecordError::Malformed("empty".into()));
    };
    if version != RECORD_VERSION {
        return Err(RecordError::UnknownVersion(version));
    }
    let body_len = bytes.len().saturating_sub(SIGNATURE_LEN);
    if body_len < 1 {
        return Err(RecordError::Malformed("shorter than a signature".into()));
    }
    let mut r = Reader {
        buf: &bytes[1..body_len],
    };
    let subject = r.string("subject")?;
    if subject.is_empty() {
        return Err(RecordError::Malformed("empty subject".into()));
    }
    let node = r.bytes("node")?.to_vec();
    let count = r.u32("sip count")? as usize;
    // Each URI takes at least its 4-byte length: bound the count before allocating.
    if count > r.buf.len() / 4 {
        return Err(RecordError::Malformed("sip count".into()));
    }
    let mut sip = Vec::with_capacity(count);
    for _ in 0..count {
        sip.push(r.string("sip uri")?);
    }
    let seq = r.u64("seq")?;
    let exp = r.u64("exp")?;
    let grant = match r.bytes("grant")? {
        [] => None,
        bytes => Some(Grant::decode(bytes)?),
    };
    let alias = match r.string("alias")? {
        a if a.is_empty() => None,
        a => Some(a),
    };
    if !r.buf.is_empty() {
        return Err(RecordError::Malformed("trailing bytes".into()));
    }
    let public = public_from_peer_id(&node).ok_or(RecordError::BadNodeId)?;
    let record = PresenceRecord {
        version,
        subject,
        node,
        sip,
        seq,
        exp,
        grant,
        alias,
    };
    Ok((record, public, body_len))
}

pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Malformed(format!("truncated {what}")));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, RecordError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, RecordError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn bytes(&mut self, what: &str) -> Result<&'a [u8], RecordError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String, RecordError> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| RecordError::Malformed(format!("{what}: not UTF-8")))
    }
}
