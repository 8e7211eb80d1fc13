//! The wallet: a user's Ed25519 key in a file, optionally sealed with a passphrase.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use dots_records::{public_from_did, NodeKey};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::b64;

/// The `format` field of every wallet file.
pub const WALLET_FORMAT: &str = "dots-wallet";
/// The file format version this crate writes and reads.
pub const WALLET_VERSION: u64 = 1;
/// What [`Wallet::export`] text starts with.
pub const EXPORT_PREFIX: &str = "dots-wallet-v1:";
/// Longest wallet name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Largest wallet file (or decoded export) that is parsed at all.
pub const MAX_FILE_LEN: usize = 16 * 1024;

const KDF_ALG: &str = "argon2id";
const AEAD_ALG: &str = "chacha20poly1305";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
/// Ed25519 secret (32) + Poly1305 tag (16).
const CIPHERTEXT_LEN: usize = 48;

/// Upper bounds on the KDF cost a file may ask for, so that a hostile file
/// cannot make `load` allocate gigabytes or spin for minutes.
const MAX_M_KIB: u32 = 1024 * 1024;
const MAX_T: u32 = 16;
const MAX_P: u32 = 16;

/// Why a wallet could not be read, written, unlocked or imported.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("wallet is encrypted: a passphrase is needed to unlock it")]
    PassphraseNeeded,
    #[error("wrong passphrase (or the wallet's encrypted part was altered)")]
    WrongPassphrase,
    #[error("the passphrase is empty: choose a non-empty one, or store the wallet unencrypted")]
    EmptyPassphrase,
    #[error("unknown wallet version {0}: this dots reads version {WALLET_VERSION}; upgrade dots")]
    UnknownVersion(u64),
    #[error("corrupt wallet: {0}")]
    Corrupt(String),
    #[error("not a dots wallet export: expected one line starting with {EXPORT_PREFIX:?}")]
    NotAnExport,
    #[error("invalid wallet name: {0}")]
    BadName(&'static str),
    #[error("{}: a file already exists there; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Something worth telling the user about a wallet file that was nonetheless read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletWarning {
    /// The file can be read or written by other users (`mode` holds the permission bits).
    LoosePermissions { path: PathBuf, mode: u32 },
}

impl std::fmt::Display for WalletWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalletWarning::LoosePermissions { path, mode } => write!(
                f,
                "{} is accessible to other users (mode {:04o}); run: chmod 600 {}",
                path.display(),
                mode,
                path.display()
            ),
        }
    }
}

/// Cost of the Argon2id passphrase stretching. Stored in the file, so a wallet
/// written with one setting can be read by a build whose default is another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes over the memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's second recommended setting with one
    /// lane, since the argon2 crate computes lanes one after the other.
    fn default() -> Self {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    fn check(&self) -> Result<Params, WalletError> {
        if self.m_kib > MAX_M_KIB || self.t == 0 || self.t > MAX_T || self.p == 0 || self.p > MAX_P
        {
            return Err(WalletError::Corrupt(format!(
                "argon2id cost out of bounds (m={} KiB, t={}, p={}; at most m={MAX_M_KIB}, t={MAX_T}, p={MAX_P})",
                self.m_kib, self.t, self.p
            )));
        }
        Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| WalletError::Corrupt(format!("argon2id parameters: {e}")))
    }
}

/// A user's identity: an Ed25519 key pair, named by its `did:key`, with an
/// optional human name.
#[derive(Clone)]
pub struct Wallet {
    key: NodeKey,
    name: Option<String>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("did", &self.did())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: Option<String>) -> Wallet {
        Wallet {
            key: NodeKey::generate(),
            name,
        }
    }

    /// The wallet of a known 32-byte Ed25519 secret (seed).
    pub fn from_secret(secret: [u8; 32], name: Option<String>) -> Wallet {
        Wallet {
            key: NodeKey::from_secret(secret),
            name,
        }
    }

    /// `did:key:z6Mk…`, the public name of the key.
    pub fn did(&self) -> String {
        self.key.did()
    }

    /// The 32-byte Ed25519 public key.
    pub fn public(&self) -> [u8; 32] {
        self.key.public()
    }

    /// The human name given at creation, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg)
    }

    /// Writes the wallet to a new file at `path` with mode 0600, sealed with
    /// `passphrase` if one is given. Refuses to replace an existing file.
    pub fn save(&self, path: &Path, passphrase: Option<&str>) -> Result<(), WalletError> {
        WalletFile::seal(self, passphrase, KdfParams::default())?.write(path, false)
    }

    /// Like [`Wallet::save`], but replaces a file already at `path` (atomically:
    /// a crash leaves either the old or the new wallet).
    pub fn save_replacing(&self, path: &Path, passphrase: Option<&str>) -> Result<(), WalletError> {
        WalletFile::seal(self, passphrase, KdfParams::default())?.write(path, true)
    }

    /// Reads and unlocks the wallet at `path`. The passphrase is ignored for an
    /// unencrypted wallet. [`WalletFile::read`] also reports loose permissions.
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<Wallet, WalletError> {
        WalletFile::read(path)?.unlock(passphrase)
    }

    /// The wallet as one line of text, `dots-wallet-v1:` + base64url of the
    /// wallet file, sealed with `passphrase` if one is given.
    pub fn export(&self, passphrase: Option<&str>) -> Result<String, WalletError> {
        Ok(WalletFile::seal(self, passphrase, KdfParams::default())?.export())
    }

    /// The wallet of an [`export`](Wallet::export) text.
    pub fn import(text: &str, passphrase: Option<&str>) -> Result<Wallet, WalletError> {
        WalletFile::from_export(text)?.unlock(passphrase)
    }
}

/// A wallet name must be printable, since `dots id show` prints it.
pub fn check_name(name: &str) -> Result<(), WalletError> {
    if name.is_empty() {
        return Err(WalletError::BadName("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(WalletError::BadName("it is longer than 200 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(WalletError::BadName("it contains control characters"));
    }
    Ok(())
}

/// The JSON of a version 1 wallet file. Exactly one of `secret` and
/// (`kdf`, `aead`) is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    format: String,
    version: u64,
    did: String,
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aead: Option<AeadV1>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfV1 {
    alg: String,
    m_kib: u32,
    t: u32,
    p: u32,
    salt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AeadV1 {
    alg: String,
    nonce: String,
    ciphertext: String,
}

/// Only the fields that say which parser applies, read before the strict one
/// so that a newer file is reported as such and not as corrupt.
#[derive(Deserialize)]
struct Envelope {
    format: Option<String>,
    version: Option<u64>,
}

/// How a wallet file protects its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// The secret is stored in clear (the file mode is its only protection).
    Plain,
    /// Sealed with ChaCha20-Poly1305 under an Argon2id key of the passphrase.
    Encrypted(KdfParams),
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protection::Plain => write!(f, "not encrypted"),
            Protection::Encrypted(k) => write!(
                f,
                "encrypted (argon2id m={} KiB t={} p={}, chacha20poly1305)",
                k.m_kib, k.t, k.p
            ),
        }
    }
}

/// A parsed wallet file whose header (DID, name, protection) can be read
/// without the passphrase. Until [`unlock`](WalletFile::unlock) succeeds the
/// header is only a claim: the AEAD binds it to the secret, and `unlock`
/// checks that the secret's DID is the one written.
#[derive(Debug, Clone)]
pub struct WalletFile {
    file: FileV1,
    protection: Protection,
    warnings: Vec<WalletWarning>,
}

impl WalletFile {
    /// Parses the bytes of a wallet file.
    pub fn parse(bytes: &[u8]) -> Result<WalletFile, WalletError> {
        if bytes.len() > MAX_FILE_LEN {
            return Err(WalletError::Corrupt(format!(
                "{} bytes, more than a wallet can be ({MAX_FILE_LEN})",
                bytes.len()
            )));
        }
        let envelope: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| WalletError::Corrupt(format!("not a JSON wallet file ({e})")))?;
        if envelope.format.as_deref() != Some(WALLET_FORMAT) {
            return Err(WalletError::Corrupt(format!(
                "the \"format\" field is not {WALLET_FORMAT:?}"
            )));
        }
        match envelope.version {
            Some(WALLET_VERSION) => {}
            Some(v) => return Err(WalletError::UnknownVersion(v)),
            None => return Err(WalletError::Corrupt("no \"version\" field".into())),
        }
        let file: FileV1 = serde_json::from_slice(bytes)
            .map_err(|e| WalletError::Corrupt(format!("version 1 layout: {e}")))?;
        if public_from_did(&file.did).is_none() {
            return Err(WalletError::Corrupt(format!(
                "{:?} is not an Ed25519 did:key",
                file.did
            )));
        }
        if let Some(name) = &file.name {
            check_name(name).map_err(|e| WalletError::Corrupt(e.to_string()))?;
        }
        let protection = match (&file.secret, &file.kdf, &file.aead) {
            (Some(secret), None, None) => {
                decode_exact::<32>(secret, "secret")?;
                Protection::Plain
            }
            (None, Some(kdf), Some(aead)) => {
                if kdf.alg != KDF_ALG {
                    return Err(WalletError::Corrupt(format!(
                        "unsupported KDF {:?} (expected {KDF_ALG})",
                        kdf.alg
                    )));
                }
                if aead.alg != AEAD_ALG {
                    return Err(WalletError::Corrupt(format!(
                        "unsupported cipher {:?} (expected {AEAD_ALG})",
                        aead.alg
                    )));
                }
                let params = KdfParams {
                    m_kib: kdf.m_kib,
                    t: kdf.t,
                    p: kdf.p,
                };
                params.check()?;
                decode_exact::<SALT_LEN>(&kdf.salt, "salt")?;
                decode_exact::<NONCE_LEN>(&aead.nonce, "nonce")?;
                decode_exact::<CIPHERTEXT_LEN>(&aead.ciphertext, "ciphertext")?;
                Protection::Encrypted(params)
            }
            _ => {
                return Err(WalletError::Corrupt(
                    "expected either \"secret\", or both \"kdf\" and \"aead\"".into(),
                ))
            }
        };
        Ok(WalletFile {
            file,
            protection,
            warnings: Vec::new(),
        })
    }

    /// Reads the wallet file at `path`; loose permissions are reported in
    /// [`warnings`](WalletFile::warnings), not refused.
    pub fn read(path: &Path) -> Result<WalletFile, WalletError> {
        let io_err = |source| WalletError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.len() > MAX_FILE_LEN as u64 {
            return Err(WalletError::Corrupt(format!(
                "{}: {} bytes, more than a wallet can be ({MAX_FILE_LEN})",
                path.display(),
                meta.len()
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        io::Read::read_to_end(
            &mut io::Read::take(file, MAX_FILE_LEN as u64 + 1),
            &mut bytes,
        )
        .map_err(io_err)?;
        let mut wallet = WalletFile::parse(&bytes)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                wallet.warnings.push(WalletWarning::LoosePermissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        Ok(wallet)
    }

    /// Parses an [`export`](WalletFile::export) text (surrounding whitespace is ignored).
    pub fn from_export(text: &str) -> Result<WalletFile, WalletError> {
        let text = text.trim();
        let Some(encoded) = text.strip_prefix(EXPORT_PREFIX) else {
            if let Some(v) = text
                .strip_prefix("dots-wallet-v")
                .and_then(|rest| rest.split_once(':'))
                .and_then(|(v, _)| v.parse::<u64>().ok())
            {
                return Err(WalletError::UnknownVersion(v));
            }
            return Err(WalletError::NotAnExport);
        };
        if encoded.len() > MAX_FILE_LEN * 4 / 3 + 4 {
            return Err(WalletError::Corrupt("export text too long".into()));
        }
        let bytes = b64::decode(encoded).map_err(|_| {
            WalletError::Corrupt("the export text after the prefix is not base64url".into())
        })?;
        WalletFile::parse(&bytes)
    }

    /// Seals `wallet` into a file: encrypted under `passphrase` with `params`,
    /// or in clear without a passphrase.
    pub fn seal(
        wallet: &Wallet,
        passphrase: Option<&str>,
        params: KdfParams,
    ) -> Result<WalletFile, WalletError> {
        if let Some(name) = &wallet.name {
            check_name(name)?;
        }
        let did = wallet.did();
        let mut secret = wallet.key.secret();
        let mut file = FileV1 {
            format: WALLET_FORMAT.into(),
            version: WALLET_VERSION,
            did,
            name: wallet.name.clone(),
            secret: None,
            kdf: None,
            aead: None,
        };
        let protection = match passphrase {
            None => {
                file.secret = Some(b64::encode(&secret));
                Protection::Plain
            }
            Some("") => return Err(WalletError::EmptyPassphrase),
            Some(passphrase) => {
                let argon = params.check()?;
                let mut rng = StdRng::from_os_rng();
                let mut salt = [0u8; SALT_LEN];
                let mut nonce = [0u8; NONCE_LEN];
                rng.fill_bytes(&mut salt);
                rng.fill_bytes(&mut nonce);
                let aad = associated_data(&file.did, file.name.as_deref(), &params);
                let mut key = derive_key(passphrase, &salt, argon)?;
                let ciphertext = ChaCha20Poly1305::new(&key.into())
                    .encrypt(
                        &nonce.into(),
                        Payload {
                            msg: &secret,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| WalletError::Corrupt("encryption failed".into()));
                key.zeroize();
                file.kdf = Some(KdfV1 {
                    alg: KDF_ALG.into(),
                    m_kib: params.m_kib,
                    t: params.t,
                    p: params.p,
                    salt: b64::encode(&salt),
                });
                file.aead = Some(AeadV1 {
                    alg: AEAD_ALG.into(),
                    nonce: b64::encode(&nonce),
                    ciphertext: b64::encode(&ciphertext?),
                });
                Protection::Encrypted(params)
            }
        };
        secret.zeroize();
        Ok(WalletFile {
            file,
            protection,
            warnings: Vec::new(),
        })
    }

    /// The DID written in the file (checked against the secret by `unlock`).
    pub fn did(&self) -> &str {
        &self.file.did
    }

    /// The name written in the file.
    pub fn name(&self) -> Option<&str> {
        self.file.name.as_deref()
    }

    /// How the secret is protected.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// Whether [`unlock`](WalletFile::unlock) needs a passphrase.
    pub fn is_encrypted(&self) -> bool {
        matches!(self.protection, Protection::Encrypted(_))
    }

    /// What [`read`](WalletFile::read) noticed about the file on disk.
    pub fn warnings(&self) -> &[WalletWarning] {
        &self.warnings
    }

    /// The secret key, decrypted with `passphrase` when the file is encrypted.
    pub fn unlock(&self, passphrase: Option<&str>) -> Result<Wallet, WalletError> {
        let mut secret = match (&self.file.secret, &self.file.kdf, &self.file.aead) {
            (Some(secret), _, _) => decode_exact::<32>(secret, "secret")?,
            (None, Some(kdf), Some(aead)) => {
                let passphrase = passphrase.ok_or(WalletError::PassphraseNeeded)?;
                let params = KdfParams {
                    m_kib: kdf.m_kib,
                    t: kdf.t,
                    p: kdf.p,
                };
                let argon = params.check()?;
                let salt = decode_exact::<SALT_LEN>(&kdf.salt, "salt")?;
                let nonce = decode_exact::<NONCE_LEN>(&aead.nonce, "nonce")?;
                let ciphertext = decode_exact::<CIPHERTEXT_LEN>(&aead.ciphertext, "ciphertext")?;
                let aad = associated_data(&self.file.did, self.file.name.as_deref(), &params);
                let mut key = derive_key(passphrase, &salt, argon)?;
                let plain = ChaCha20Poly1305::new(&key.into()).decrypt(
                    &nonce.into(),
                    Payload {
                        msg: &ciphertext,
                        aad: &aad,
                    },
                );
                key.zeroize();
                let mut plain = plain.map_err(|_| WalletError::WrongPassphrase)?;
                let secret: Result<[u8; 32], _> = plain.as_slice().try_into();
                plain.zeroize();
                secret
                    .map_err(|_| WalletError::Corrupt("decrypted secret is not 32 bytes".into()))?
            }
            _ => return Err(WalletError::Corrupt("no secret in the file".into())),
        };
        let wallet = Wallet::from_secret(secret, self.file.name.clone());
        secret.zeroize();
        if wallet.did() != self.file.did {
            return Err(WalletError::Corrupt(format!(
                "the secret's DID is {}, not the {} written in the file",
                wallet.did(),
                self.file.did
            )));
        }
        Ok(wallet)
    }

    /// The file's bytes: pretty-printed JSON, newline-terminated.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&self.file).expect("a wallet file serialises");
        out.push(b'\n');
        out
    }

    /// The single-line portable form: `dots-wallet-v1:` + base64url of the file.
    pub fn export(&self) -> String {
        let compact = serde_json::to_vec(&self.file).expect("a wallet file serialises");
        format!("{EXPORT_PREFIX}{}", b64::encode(&compact))
    }

    /// Writes the file at `path` with mode 0600. Without `replace`, an existing
    /// file is never touched ([`WalletError::Exists`]); with it, the old file is
    /// replaced by a rename, so a crash leaves one whole wallet or the other.
    pub fn write(&self, path: &Path, replace: bool) -> Result<(), WalletError> {
        let io_err = |source| WalletError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = self.to_bytes();
        if !replace {
            // create_new makes "does it exist?" and "create it" one step.
            return match write_private(path, &bytes, true) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(WalletError::Exists(path.to_path_buf()))
                }
                other => other.map_err(io_err),
            };
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let result = write_private(&tmp, &bytes, false).and_then(|()| std::fs::rename(&tmp, path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io_err)
    }
}

fn write_private(path: &Path, data: &[u8], create_new: bool) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let written = file.write_all(data).and_then(|()| file.sync_all());
    if written.is_err() && create_new {
        // Leave no half-written wallet behind for the next `save` to trip on.
        drop(file);
        let _ = std::fs::remove_file(path);
    }
    written
}

/// The header fields bound to the ciphertext: changing the DID, the name or the
/// KDF cost of an encrypted file makes it fail to unlock. JSON keeps the fields
/// apart unambiguously whatever the name holds.
fn associated_data(did: &str, name: Option<&str>, params: &KdfParams) -> Vec<u8> {
    serde_json::to_vec(&(
        "dots-wallet-v1",
        did,
        name,
        KDF_ALG,
        params.m_kib,
        params.t,
        params.p,
        AEAD_ALG,
    ))
    .expect("a tuple of strings and numbers serialises")
}

/// Argon2id with memory allocated here rather than by the crate: its `alloc`
/// feature would pull in the PHC password-hash crates, which a wallet never uses.
fn derive_key(passphrase: &str, salt: &[u8], params: Params) -> Result<[u8; 32], WalletError> {
    let mut key = [0u8; 32];
    let mut blocks = vec![Block::new(); params.block_count()];
    let result = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(passphrase.as_bytes(), salt, &mut key, &mut blocks)
        .map_err(|e| WalletError::Corrupt(format!("argon2id: {e}")));
    blocks.iter_mut().for_each(Zeroize::zeroize);
    result.map(|()| key)
}

fn decode_exact<const N: usize>(field: &str, what: &str) -> Result<[u8; N], WalletError> {
    let bytes =
        b64::decode(field).map_err(|_| WalletError::Corrupt(format!("{what} is not base64url")))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| WalletError::Corrupt(format!("{what} is {len} bytes, expected {N}")))
}
