//! The wallet file: round trips, protection, refusals, export and import.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dots_identity::{
    KdfParams, Protection, Wallet, WalletError, WalletFile, WalletWarning, EXPORT_PREFIX,
};
use serde_json::Value;

/// Cheap enough for tests; the format carries the cost, so `load` reads it.
const FAST: KdfParams = KdfParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("dots-identity-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn same_key(a: &Wallet, b: &Wallet) {
    assert_eq!(a.did(), b.did());
    assert_eq!(a.public(), b.public());
    // Ed25519 is deterministic: the same secret gives the same signature.
    assert_eq!(a.sign(b"dots"), b.sign(b"dots"));
}

fn sealed(wallet: &Wallet, passphrase: &str) -> Vec<u8> {
    WalletFile::seal(wallet, Some(passphrase), FAST)
        .unwrap()
        .to_bytes()
}

type Edit = dyn Fn(&mut Value);

fn edit(bytes: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn unlock(bytes: &[u8], passphrase: Option<&str>) -> Result<Wallet, WalletError> {
    WalletFile::parse(bytes)?.unlock(passphrase)
}

#[test]
fn known_did_key_vector() {
    // W3C CCG did:key test vectors (ed25519-x25519.json): the all-zero seed.
    let w = Wallet::from_secret([0; 32], None);
    assert_eq!(
        w.did(),
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
    );
    assert_eq!(dots_records::public_from_did(&w.did()), Some(w.public()));
    let g = Wallet::generate(Some("alice".into()));
    assert!(g.did().starts_with("did:key:z6Mk"));
    assert_eq!(g.name(), Some("alice"));
}

#[test]
fn plain_round_trip_mode_0600() {
    let dir = TempDir::new("plain");
    let path = dir.path("w.json");
    let w = Wallet::generate(Some("Alice Example".into()));
    w.save(&path, None).unwrap();
    let back = Wallet::load(&path, None).unwrap();
    same_key(&w, &back);
    assert_eq!(back.name(), Some("Alice Example"));
    // A passphrase given for a plain wallet changes nothing.
    same_key(&w, &Wallet::load(&path, Some("unused")).unwrap());

    let file = WalletFile::read(&path).unwrap();
    assert_eq!(file.protection(), Protection::Plain);
    assert!(file.warnings().is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["format"], "dots-wallet");
    assert_eq!(json["version"], 1);
    assert_eq!(json["did"], w.did());
}

#[test]
fn encrypted_round_trip_default_cost() {
    let dir = TempDir::new("enc");
    let path = dir.path("w.json");
    let w = Wallet::generate(None);
    w.save(&path, Some("correct horse battery staple")).unwrap();
    let file = WalletFile::read(&path).unwrap();
    assert_eq!(
        file.protection(),
        Protection::Encrypted(KdfParams::default())
    );
    assert_eq!(file.did(), w.did());
    assert!(file.is_encrypted());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("\"secret\""));
    same_key(
        &w,
        &file.unlock(Some("correct horse battery staple")).unwrap(),
    );
}

#[test]
fn wrong_missing_and_empty_passphrase() {
    let w = Wallet::generate(None);
    let bytes = sealed(&w, "right");
    assert!(matches!(
        unlock(&bytes, Some("wrong")),
        Err(WalletError::WrongPassphrase)
    ));
    assert!(matches!(
        unlock(&bytes, Some("")),
        Err(WalletError::WrongPassphrase)
    ));
    assert!(matches!(
        unlock(&bytes, None),
        Err(WalletError::PassphraseNeeded)
    ));
    same_key(&w, &unlock(&bytes, Some("right")).unwrap());
    assert!(matches!(
        WalletFile::seal(&w, Some(""), FAST),
        Err(WalletError::EmptyPassphrase)
    ));
    let msg = WalletError::WrongPassphrase.to_string();
    assert!(msg.contains("wrong passphrase"), "{msg}");
}

#[test]
fn tampered_encrypted_file_does_not_unlock() {
    let w = Wallet::generate(Some("bob".into()));
    let bytes = sealed(&w, "pw");
    // Every bit of the ciphertext (and so the tag) is covered.
    let ct = {
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        URL_SAFE_NO_PAD
            .decode(v["aead"]["ciphertext"].as_str().unwrap())
            .unwrap()
    };
    for i in 0..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 0x01;
        let tampered = edit(&bytes, |v| {
            v["aead"]["ciphertext"] = URL_SAFE_NO_PAD.encode(&bad).into();
        });
        assert!(
            matches!(
                unlock(&tampered, Some("pw")),
                Err(WalletError::WrongPassphrase)
            ),
            "byte {i}"
        );
    }
    // The header is bound to the ciphertext as associated data.
    let other = Wallet::generate(None).did();
    let edits: Vec<Box<Edit>> = vec![
        Box::new(move |v| v["did"] = other.clone().into()),
        Box::new(|v| v["name"] = "mallory".into()),
        Box::new(|v| v["name"] = Value::Null),
        Box::new(|v| v["kdf"]["t"] = 2.into()),
        Box::new(|v| v["kdf"]["m_kib"] = 128.into()),
        Box::new(|v| v["kdf"]["salt"] = URL_SAFE_NO_PAD.encode([7u8; 16]).into()),
        Box::new(|v| v["aead"]["nonce"] = URL_SAFE_NO_PAD.encode([7u8; 12]).into()),
    ];
    for (i, f) in edits.iter().enumerate() {
        let tampered = edit(&bytes, f);
        assert!(
            matches!(
                unlock(&tampered, Some("pw")),
                Err(WalletError::WrongPassphrase)
            ),
            "edit {i}"
        );
    }
}

#[test]
fn corrupt_files_are_named_as_such() {
    let w = Wallet::generate(None);
    let plain = WalletFile::seal(&w, None, FAST).unwrap().to_bytes();
    let enc = sealed(&w, "pw");
    let other = Wallet::generate(None);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not json", b"did:key:z6Mk".to_vec()),
        ("json array", b"[1,2]".to_vec()),
        ("other format", edit(&plain, |v| v["format"] = "ssh".into())),
        (
            "no version",
            edit(&plain, |v| {
                v.as_object_mut().unwrap().remove("version");
            }),
        ),
        ("unknown field", edit(&plain, |v| v["extra"] = 1.into())),
        (
            "bad did",
            edit(&plain, |v| v["did"] = "did:web:example.com".into()),
        ),
        (
            "did of another key",
            edit(&plain, |v| v["did"] = other.did().into()),
        ),
        (
            "secret not base64",
            edit(&plain, |v| v["secret"] = "!!!".into()),
        ),
        (
            "secret padded",
            edit(&plain, |v| {
                let s = format!("{}=", v["secret"].as_str().unwrap());
                v["secret"] = s.into();
            }),
        ),
        (
            "secret short",
            edit(&plain, |v| {
                v["secret"] = URL_SAFE_NO_PAD.encode([1u8; 31]).into()
            }),
        ),
        (
            "both secret and aead",
            edit(&enc, |v| {
                v["secret"] = URL_SAFE_NO_PAD.encode([1u8; 32]).into()
            }),
        ),
        (
            "no secret",
            edit(&plain, |v| {
                v.as_object_mut().unwrap().remove("secret");
            }),
        ),
        (
            "kdf without aead",
            edit(&enc, |v| {
                v.as_object_mut().unwrap().remove("aead");
            }),
        ),
        (
            "other kdf",
            edit(&enc, |v| v["kdf"]["alg"] = "scrypt".into()),
        ),
        (
            "other cipher",
            edit(&enc, |v| v["aead"]["alg"] = "aes-256-gcm".into()),
        ),
        (
            "huge memory cost",
            edit(&enc, |v| v["kdf"]["m_kib"] = 4_000_000_000u32.into()),
        ),
        ("zero passes", edit(&enc, |v| v["kdf"]["t"] = 0.into())),
        (
            "memory below lanes",
            edit(&enc, |v| {
                v["kdf"]["p"] = 16.into();
                v["kdf"]["m_kib"] = 8.into();
            }),
        ),
        (
            "short nonce",
            edit(&enc, |v| {
                v["aead"]["nonce"] = URL_SAFE_NO_PAD.encode([1u8; 11]).into()
            }),
        ),
        (
            "short ciphertext",
            edit(&enc, |v| {
                v["aead"]["ciphertext"] = URL_SAFE_NO_PAD.encode([1u8; 32]).into()
            }),
        ),
        (
            "name with newline",
            edit(&plain, |v| v["name"] = "a\nb".into()),
        ),
        ("too big", vec![b' '; 20_000]),
    ];
    for (what, bytes) in cases {
        match unlock(&bytes, Some("pw")) {
            Err(WalletError::Corrupt(msg)) => assert!(!msg.is_empty(), "{what}"),
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn unknown_version_is_reported() {
    let w = Wallet::generate(None);
    let plain = WalletFile::seal(&w, None, FAST).unwrap().to_bytes();
    // A newer file may have any layout; only format and version are read.
    let v2 = br#"{"format":"dots-wallet","version":2,"keys":[]}"#;
    assert!(matches!(
        unlock(v2, None),
        Err(WalletError::UnknownVersion(2))
    ));
    let v9 = edit(&plain, |v| v["version"] = 9.into());
    let err = unlock(&v9, None).unwrap_err();
    assert!(matches!(err, WalletError::UnknownVersion(9)));
    assert!(err.to_string().contains("upgrade dots"), "{err}");
    assert!(matches!(
        Wallet::import("dots-wallet-v2:eyJ9", None),
        Err(WalletError::UnknownVersion(2))
    ));
}

#[test]
fn save_refuses_to_overwrite_unless_asked() {
    let dir = TempDir::new("overwrite");
    let path = dir.path("w.json");
    let first = Wallet::generate(None);
    let second = Wallet::generate(None);
    first.save(&path, None).unwrap();
    let before = std::fs::read(&path).unwrap();
    match second.save(&path, None) {
        Err(e @ WalletError::Exists(_)) => assert!(e.to_string().contains("refusing to overwrite")),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    second.save_replacing(&path, None).unwrap();
    same_key(&second, &Wallet::load(&path, None).unwrap());
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn missing_file_and_bad_permissions() {
    let dir = TempDir::new("perm");
    let missing = dir.path("none.json");
    match Wallet::load(&missing, None) {
        Err(WalletError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("expected Io, got {other:?}"),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path("w.json");
        let w = Wallet::generate(None);
        w.save(&path, None).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let file = WalletFile::read(&path).unwrap();
        assert_eq!(
            file.warnings(),
            [WalletWarning::LoosePermissions {
                path: path.clone(),
                mode: 0o644
            }]
        );
        assert!(file.warnings()[0].to_string().contains("chmod 600"));
        // A warning, not a refusal.
        same_key(&w, &file.unlock(None).unwrap());
    }
}

#[test]
fn export_import_round_trips() {
    let w = Wallet::generate(Some("carol".into()));
    let plain = w.export(None).unwrap();
    assert!(plain.starts_with(EXPORT_PREFIX));
    assert!(!plain.contains(char::is_whitespace));
    let back = Wallet::import(&format!("  {plain}\n"), None).unwrap();
    same_key(&w, &back);
    assert_eq!(back.name(), Some("carol"));

    let sealed = WalletFile::seal(&w, Some("pw"), FAST).unwrap();
    let text = sealed.export();
    let parsed = WalletFile::from_export(&text).unwrap();
    assert_eq!(parsed.did(), w.did());
    assert_eq!(parsed.name(), Some("carol"));
    assert!(parsed.is_encrypted());
    same_key(&w, &parsed.unlock(Some("pw")).unwrap());
    assert!(matches!(
        Wallet::import(&text, Some("nope")),
        Err(WalletError::WrongPassphrase)
    ));
    assert!(matches!(
        Wallet::import(&text, None),
        Err(WalletError::PassphraseNeeded)
    ));
    assert!(matches!(
        Wallet::import("hello", None),
        Err(WalletError::NotAnExport)
    ));
    assert!(matches!(
        Wallet::import("dots-wallet-v1:***", None),
        Err(WalletError::Corrupt(_))
    ));
    // The export text is the file itself: writing it gives a loadable wallet.
    let dir = TempDir::new("import");
    let path = dir.path("w.json");
    parsed.write(&path, false).unwrap();
    same_key(&w, &Wallet::load(&path, Some("pw")).unwrap());
}

#[test]
fn names_are_checked() {
    for bad in ["", "a\u{1b}[31m", "tab\there", &"x".repeat(201)] {
        let w = Wallet::generate(Some(bad.to_string()));
        assert!(
            matches!(w.export(None), Err(WalletError::BadName(_))),
            "{bad:?}"
        );
    }
    let w = Wallet::generate(Some("Zoë Ünicode 電話".into()));
    same_key(&w, &Wallet::import(&w.export(None).unwrap(), None).unwrap());
}
