//! A DOTS user's identity: the wallet holding their Ed25519 key, and requests
//! signed with it.
//!
//! A user owns their identity: an Ed25519 key pair whose public name is a
//! `did:key` (`did:key:z6Mk…`, derived as in [`dots_records::did_from_public`]).
//! The key lives in a [`Wallet`] file on the user's machine; nodes only ever see
//! the DID and signatures. This crate does no I/O besides reading and writing
//! wallet files, and never reads the clock: callers pass `now` in milliseconds
//! since the UNIX epoch.
//!
//! # Driving it
//!
//! ```
//! use dots_identity::{sign_request, verify_request, new_nonce, ReplayGuard, Wallet};
//!
//! let dir = std::env::temp_dir().join(format!("dots-identity-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("alice.wallet");
//! # let _ = std::fs::remove_file(&path);
//!
//! // A user creates a wallet and keeps it (mode 0600; pass Some(passphrase) to encrypt).
//! let wallet = Wallet::generate(Some("alice".into()));
//! wallet.save(&path, None).unwrap();
//! let wallet = Wallet::load(&path, None).unwrap();
//! assert!(wallet.did().starts_with("did:key:z6Mk"));
//!
//! // Their client signs a request to a node's API…
//! let now = 1_700_000_000_000;
//! let body = br#"{"device":"desk phone"}"#;
//! let token = sign_request(&wallet, "POST", "/api/v1/devices", body, now, &new_nonce());
//!
//! // …which the node checks against the request it received, once.
//! let mut replay = ReplayGuard::new(100_000);
//! let did = verify_request(&token, "POST", "/api/v1/devices", body, now + 150, 30_000, &mut replay);
//! assert_eq!(did.unwrap(), wallet.did());
//! let again = verify_request(&token, "POST", "/api/v1/devices", body, now + 300, 30_000, &mut replay);
//! assert!(again.is_err()); // replayed nonce
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! # Wallet file, version 1
//!
//! UTF-8 JSON, at most 16 KiB, mode 0600; binary fields are base64url without
//! padding. Unencrypted:
//!
//! ```text
//! { "format": "dots-wallet", "version": 1,
//!   "did": "did:key:z6Mk…", "name": "alice" | null,
//!   "secret": "<32-byte Ed25519 seed>" }
//! ```
//!
//! Encrypted with a passphrase, `secret` gives way to:
//!
//! ```text
//!   "kdf":  { "alg": "argon2id", "m_kib": 65536, "t": 3, "p": 1, "salt": "<16 bytes>" },
//!   "aead": { "alg": "chacha20poly1305", "nonce": "<12 bytes>", "ciphertext": "<48 bytes>" }
//! ```
//!
//! The key is Argon2id (version 0x13, 32-byte output) of the passphrase with
//! that salt and cost; the ciphertext is ChaCha20-Poly1305 of the seed with
//! associated data the JSON array
//! `["dots-wallet-v1", did, name, "argon2id", m_kib, t, p, "chacha20poly1305"]`,
//! so the header cannot be edited without the file failing to unlock. After
//! decryption the seed's DID must equal `did`. A reader first looks at
//! `format` and `version` alone, so a newer file is reported as such rather
//! than as corrupt; unknown fields are refused. KDF costs above 1 GiB, 16
//! passes or 16 lanes are refused as corrupt.
//!
//! The portable form ([`Wallet::export`], `dots id export`) is one line:
//! `dots-wallet-v1:` followed by base64url of the compact JSON file.
//!
//! # Signed requests
//!
//! [`sign_request`] makes a compact JWS (RFC 7515) signed with EdDSA (RFC 8037):
//! `base64url(header).base64url(payload).base64url(signature)`, header
//! `{"alg":"EdDSA","kid":"did:key:…"}`, payload
//! `{"m":method,"p":path,"b":base64url(sha256(body)),"ts":now_ms,"n":nonce}`.
//! [`verify_request`] checks the signature strictly against the key named by
//! `kid`, that the token is for this method, path and body, that `ts` is
//! within the allowed skew of now, and that the signer's nonce was not seen
//! while that timestamp is acceptable ([`ReplayGuard`]).
//!
//! The JWS signing input always begins with `eyJ` (base64url of `{"`), so
//! other messages signed with the same key must start with a domain prefix of
//! their own (as presence records do) to never be mistaken for a request.

mod b64;
pub mod login;
mod request;
mod wallet;

pub use request::{
    new_nonce, sign_request, verify_request, ReplayGuard, RequestError, MAX_NONCE_LEN,
    MAX_TOKEN_LEN,
};
pub use wallet::{
    check_name, KdfParams, Protection, Wallet, WalletError, WalletFile, WalletWarning,
    EXPORT_PREFIX, MAX_FILE_LEN, MAX_NAME_LEN, WALLET_FORMAT, WALLET_VERSION,
};
