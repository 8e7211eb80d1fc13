//! The node's Ed25519 signing key and the identifiers derived from it.

use std::io::{self, Read, Write};
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Length of an Ed25519 libp2p PeerId: identity multihash (code 0, length 36) of the
/// protobuf `PublicKey { Type = Ed25519 (1), Data = 32 bytes }`.
pub const ED25519_PEER_ID_LEN: usize = 38;

/// `0x00` identity multihash, `0x24` = 36 bytes of digest, then the protobuf message:
/// field 1 varint `1` (KeyType::Ed25519), field 2 bytes of length 32.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// Multicodec `ed25519-pub` (0xed) as an unsigned varint.
const DID_KEY_ED25519_PREFIX: [u8; 2] = [0xed, 0x01];

/// Name of the key file inside a node's state directory.
pub const KEY_FILE: &str = "node.key";

/// A node's signing identity: an Ed25519 key; its libp2p PeerId and did:key derive from it.
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("did", &self.did())
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> NodeKey {
        let mut secret = [0u8; 32];
        StdRng::from_os_rng().fill_bytes(&mut secret);
        NodeKey::from_secret(secret)
    }

    /// The key for a 32-byte Ed25519 secret (seed).
    pub fn from_secret(secret: [u8; 32]) -> NodeKey {
        NodeKey {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32-byte secret; `from_secret(k.secret())` is the same key. libp2p's
    /// `ed25519::SecretKey::try_from_bytes` accepts it as is.
    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The 32-byte Ed25519 public key.
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The libp2p PeerId bytes of this key (identity multihash of the protobuf-encoded
    /// Ed25519 public key), equal to `PeerId::from_public_key(..).to_bytes()`.
    pub fn peer_id_bytes(&self) -> Vec<u8> {
        peer_id_from_public(&self.public())
    }

    /// `did:key:z6Mk...`: multibase base58btc of multicodec `ed25519-pub` + public key.
    pub fn did(&self) -> String {
        did_from_public(&self.public())
    }

    /// Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// Loads `<dir>/node.key` or creates it (and `dir`) with a fresh key.
    ///
    /// The file holds exactly the 32 raw bytes of the Ed25519 secret and is created
    /// with mode 0600. It is written to a temporary file first and then linked into
    /// place, so a crash never leaves a truncated key and two processes starting at
    /// once end up with the same key. A file of another length is an
    /// [`io::ErrorKind::InvalidData`] error (it is never overwritten).
    pub fn load_or_create(dir: &Path) -> io::Result<NodeKey> {
        let path = dir.join(KEY_FILE);
        match read_key(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        std::fs::create_dir_all(dir)?;
        let key = NodeKey::generate();
        let tmp = dir.join(format!("{KEY_FILE}.tmp.{}", std::process::id()));
        let written = write_private(&tmp, &key.secret()).and_then(|()| {
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        });
        let _ = std::fs::remove_file(&tmp);
        if written? {
            Ok(key)
        } else {
            read_key(&path)
        }
    }
}

fn read_key(path: &Path) -> io::Result<NodeKey> {
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(33);
    file.take(33).read_to_end(&mut buf)?;
    let secret: [u8; 32] = buf.as_slice().try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: expected 32 raw bytes of an Ed25519 secret",
                path.display()
            ),
        )
    })?;
    Ok(NodeKey::from_secret(secret))
}

fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

/// The libp2p PeerId bytes of an Ed25519 public key.
pub fn peer_id_from_public(public: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ED25519_PEER_ID_LEN);
    out.extend_from_slice(&PEER_ID_PREFIX);
    out.extend_from_slice(public);
    out
}

/// The Ed25519 public key embedded in PeerId bytes, if they are an Ed25519 PeerId
/// holding a valid curve point.
pub fn public_from_peer_id(peer_id: &[u8]) -> Option<[u8; 32]> {
    if peer_id.len() != ED25519_PEER_ID_LEN || peer_id[..6] != PEER_ID_PREFIX {
        return None;
    }
    let public: [u8; 32] = peer_id[6..].try_into().ok()?;
    VerifyingKey::from_bytes(&public).ok()?;
    Some(public)
}

/// `did:key` of an Ed25519 public key.
pub fn did_from_public(public: &[u8; 32]) -> String {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&DID_KEY_ED25519_PREFIX);
    bytes.extend_from_slice(public);
    format!("did:key:z{}", bs58::encode(bytes).into_string())
}

/// The Ed25519 public key of a `did:key:z6Mk...`, if it is one.
pub fn public_from_did(did: &str) -> Option<[u8; 32]> {
    let encoded = did.strip_prefix("did:key:z")?;
    let bytes = bs58::decode(encoded).into_vec().ok()?;
    let public: [u8; 32] = bytes
        .strip_prefix(&DID_KEY_ED25519_PREFIX)?
        .try_into()
        .ok()?;
    VerifyingKey::from_bytes(&public).ok()?;
    Some(public)
}

/// Checks an Ed25519 signature strictly (no malleable signatures, no small-order keys).
pub(crate) fn verify_signature(public: &[u8; 32], msg: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(msg, &signature).is_ok()
}
