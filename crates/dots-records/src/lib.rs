//! Signed records of the DOTS overlay, and the node key that signs them.
//!
//! Everything the overlay replicates is a signed record with a `seq` and an `exp`,
//! verified before it is stored and merged by (higher `seq`, then later `exp`). This
//! crate holds the records and their rules; it does no I/O (apart from
//! [`NodeKey::load_or_create`]) and never reads the clock: the caller passes `now`.
//!
//! # Driving it
//!
//! ```
//! use dots_records::{presence_key, NodeKey, PresenceRecord};
//!
//! let key = NodeKey::generate();
//! let now = 1_700_000_000_000; // ms since the UNIX epoch, from the caller's clock
//! let record = PresenceRecord::new(
//!     "sip:alice@dots.test",
//!     &key,
//!     vec!["sip:127.0.0.1:5061;transport=tcp".into()],
//!     1,
//!     now + 300_000,
//! );
//! let bytes = record.sign(&key); // the DHT value and gossip message
//! let dht_key = presence_key("sip:alice@dots.test");
//! let back = PresenceRecord::verify(&bytes, Some(&dht_key), now, 600_000).unwrap();
//! assert_eq!(back, record);
//! ```
//!
//! # Node key
//!
//! [`NodeKey`] is an Ed25519 key. Its libp2p PeerId is the identity multihash of the
//! protobuf-encoded public key (38 bytes, the public key in clear), so a record that
//! names its serving node by PeerId also carries the key that must have signed it.
//! Its `did:key` is `did:key:z` + base58btc(`0xed 0x01` + public key). On disk the
//! key is `<dir>/node.key`: the 32 raw secret bytes, mode 0600.
//!
//! # Encoding of a presence record (version 2)
//!
//! A fixed binary layout; integers are big-endian, `bytes` is a `u32` length followed
//! by that many bytes, strings are UTF-8 `bytes`:
//!
//! ```text
//! record    = body signature
//! body      = version:u8 (=2)
//!             subject:bytes        (non-empty UTF-8)
//!             node:bytes           (Ed25519 libp2p PeerId, 38 bytes)
//!             count:u32  sip:bytes * count
//!             seq:u64
//!             exp:u64              (ms since the UNIX epoch)
//!             grant:bytes          (empty, or a Grant: for a DID subject, or an alias)
//!             alias:bytes          (empty, or the DID an address of record names)
//! grant     = did:bytes node:bytes issued:u64 until:u64
//!             Ed25519(DID's key, "dots-grant-v1:" did:bytes node:bytes issued until)
//! signature = Ed25519(node's key, "dots-presence-v1:" body)   (64 bytes)
//! ```
//!
//! There is exactly one encoding of a record (no optional fields, no trailing bytes),
//! so the signature covers every field, and the domain prefix keeps a presence
//! signature from being valid for any other kind of message. A whole record is at
//! most [`MAX_RECORD_SIZE`] bytes (the Kademlia wire limit is 16 KiB).
//!
//! [`PresenceRecord::verify`] checks, in this order (cheap checks first): size,
//! version, layout, node id, DHT key, `exp > now`, `exp <= now + max_ttl`, the grant
//! (required for a DID subject: same DID, same node, `until >= exp`, signed by the
//! DID's key; for an alias, the same from the alias's DID; refused on any other
//! record; an alias only on an address of record), the node's signature.

mod grant;
mod key;
mod presence;

pub use grant::{is_did_subject, Grant, GRANT_SIGNING_DOMAIN, MAX_DID_LEN};
pub use key::{
    did_from_public, peer_id_from_public, public_from_did, public_from_peer_id, NodeKey,
    ED25519_PEER_ID_LEN, KEY_FILE,
};
pub use presence::{
    presence_key, PresenceRecord, PRESENCE_KEY_PREFIX, PRESENCE_SIGNING_DOMAIN, SIGNATURE_LEN,
};

/// Version of the record encoding that this crate writes and accepts.
pub const RECORD_VERSION: u8 = 2;
/// Largest encoded record (signature included) that `verify` accepts.
pub const MAX_RECORD_SIZE: usize = 4096;
/// Milliseconds since the UNIX epoch.
pub type Millis = u64; // ms since UNIX epoch

/// Why a record was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record larger than {MAX_RECORD_SIZE} bytes")]
    TooLarge,
    #[error("malformed record: {0}")]
    Malformed(String),
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    #[error("record stored under a key that is not its subject's")]
    WrongKey,
    #[error("record expired")]
    Expired,
    #[error("record expires too far in the future")]
    TooFarInFuture,
    #[error("bad signature")]
    BadSignature,
    #[error("node id is not an Ed25519 libp2p PeerId")]
    BadNodeId,
    #[error("presence for a DID without the user's grant")]
    MissingGrant,
    #[error("the grant is for {0}")]
    GrantMismatch(&'static str),
    #[error("the grant ends before the record expires")]
    GrantExpired,
    #[error("the grant's signature is not by the DID's key")]
    BadGrantSignature,
    #[error("not an Ed25519 did:key")]
    BadDid,
}

impl RecordError {
    /// A short stable name, for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::TooLarge => "too_large",
            RecordError::Malformed(_) => "malformed",
            RecordError::UnknownVersion(_) => "unknown_version",
            RecordError::WrongKey => "wrong_key",
            RecordError::Expired => "expired",
            RecordError::TooFarInFuture => "too_far_in_future",
            RecordError::BadSignature => "bad_signature",
            RecordError::BadNodeId => "bad_node_id",
            RecordError::MissingGrant => "missing_grant",
            RecordError::GrantMismatch(_) => "grant_mismatch",
            RecordError::GrantExpired => "grant_expired",
            RecordError::BadGrantSignature => "bad_grant_signature",
            RecordError::BadDid => "bad_did",
        }
    }
}
