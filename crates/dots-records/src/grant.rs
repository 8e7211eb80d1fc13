//! The user's grant: "this node may announce my presence until then", signed by the
//! user's own key.
//!
//! A presence record whose subject is a DID is valid only with a grant for that DID,
//! naming the record's serving node, signed by the DID's key, and not expired when the
//! record expires. A node gets one in two ways: at each deep login (the user agent signs
//! a grant that lasts as long as the registration) or when the user creates a device
//! password there (a delegation that lasts until the user revokes it or it expires).

use crate::key::{public_from_did, verify_signature};
use crate::{Millis, RecordError};

/// Domain separation of grant signatures.
pub const GRANT_SIGNING_DOMAIN: &[u8] = b"dots-grant-v1:";
/// Largest DID a grant may name (an Ed25519 did:key is 56 bytes).
pub const MAX_DID_LEN: usize = 256;

/// A user's signed permission for one node to publish the user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The user, `did:key:z6Mk…`.
    pub did: String,
    /// The node's libp2p PeerId bytes.
    pub node: Vec<u8>,
    /// When the user signed, ms since the UNIX epoch.
    pub issued: Millis,
    /// Last moment a record published under this grant may still be valid.
    pub until: Millis,
    /// Ed25519 by the DID's key over [`Grant::signing_message`].
    pub signature: [u8; 64],
}

impl Grant {
    /// What the user signs: the domain prefix, then did, node, issued, until
    /// (length-prefixed and big-endian as in the records).
    pub fn signing_message(did: &str, node: &[u8], issued: Millis, until: Millis) -> Vec<u8> {
        let mut msg = Vec::with_capacity(GRANT_SIGNING_DOMAIN.len() + did.len() + node.len() + 24);
        msg.extend_from_slice(GRANT_SIGNING_DOMAIN);
        put_bytes(&mut msg, did.as_bytes());
        put_bytes(&mut msg, node);
        msg.extend_from_slice(&issued.to_be_bytes());
        msg.extend_from_slice(&until.to_be_bytes());
        msg
    }

    /// A grant signed by `sign` (the user's key: `Wallet::sign`).
    pub fn new_signed(
        did: &str,
        node: &[u8],
        issued: Millis,
        until: Millis,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Grant {
        let signature = sign(&Grant::signing_message(did, node, issued, until));
        Grant {
            did: did.to_string(),
            node: node.to_vec(),
            issued,
            until,
            signature,
        }
    }

    /// Checks that the grant is by `did`'s key, for `node`, and valid for a record
    /// expiring at `record_exp`.
    pub fn check(&self, did: &str, node: &[u8], record_exp: Millis) -> Result<(), RecordError> {
        if self.did != did {
            return Err(RecordError::GrantMismatch("another DID"));
        }
        if self.node != node {
            return Err(RecordError::GrantMismatch("another node"));
        }
        if self.until < record_exp {
            return Err(RecordError::GrantExpired);
        }
        let public = public_from_did(did).ok_or(RecordError::BadDid)?;
        let msg = Grant::signing_message(&self.did, &self.node, self.issued, self.until);
        if !verify_signature(&public, &msg, &self.signature) {
            return Err(RecordError::BadGrantSignature);
        }
        Ok(())
    }

    /// Binary form: did:bytes node:bytes issued:u64 until:u64 signature:64.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.did.len() + self.node.len() + 88);
        put_bytes(&mut out, self.did.as_bytes());
        put_bytes(&mut out, &self.node);
        out.extend_from_slice(&self.issued.to_be_bytes());
        out.extend_from_slice(&self.until.to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses [`Grant::encode`]'s output (layout only: use [`Grant::check`]).
    pub fn decode(bytes: &[u8]) -> Result<Grant, RecordError> {
        let mut r = crate::presence::Reader { buf: bytes };
        let did = r.string("grant did")?;
        if did.len() > MAX_DID_LEN {
            return Err(RecordError::Malformed("grant did too long".into()));
        }
        let node = r.bytes("grant node")?.to_vec();
        let issued = r.u64("grant issued")?;
        let until = r.u64("grant until")?;
        let signature: [u8; 64] = r
            .take(64, "grant signature")?
            .try_into()
            .map_err(|_| RecordError::Malformed("grant signature".into()))?;
        if !r.buf.is_empty() {
            return Err(RecordError::Malformed(
                "trailing bytes after the grant".into(),
            ));
        }
        Ok(Grant {
            did,
            node,
            issued,
            until,
            signature,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// True when `subject` names a DID (and so needs a grant), false for an address of
/// record such as `sip:alice@example.org`.
pub fn is_did_subject(subject: &str) -> bool {
    subject.starts_with("did:")
}
