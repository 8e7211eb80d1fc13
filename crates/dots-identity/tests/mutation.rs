//! Seeded mutations of tokens, wallet files and export texts: never a panic,
//! and nothing but the original is ever accepted.
//!
//! A longer run with another seed:
//!
//! ```sh
//! DOTS_IDENTITY_MUTATION_SEED=7 DOTS_IDENTITY_MUTATION_ITERATIONS=200000 \
//!     cargo test --release -p dots-identity --test mutation
//! ```

use dots_identity::{
    sign_request, verify_request, KdfParams, ReplayGuard, Wallet, WalletError, WalletFile,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW: u64 = 1_700_000_000_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn setup() -> (StdRng, u64) {
    let seed = env_u64("DOTS_IDENTITY_MUTATION_SEED", 1);
    let iterations = env_u64("DOTS_IDENTITY_MUTATION_ITERATIONS", 20_000);
    (StdRng::seed_from_u64(seed), iterations)
}

/// Characters that matter to the formats: JSON punctuation, base64url, the dot.
const INTERESTING: &[u8] = b"{}[]\":,.-_=+/\\0123456789AZaz \n\x00\xff";

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        let len = out.len();
        let byte = if rng.random_bool(0.5) {
            INTERESTING[rng.random_range(0..INTERESTING.len())]
        } else {
            rng.random()
        };
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] = byte;
            }
            2 => {
                let i = rng.random_range(0..=len);
                out.insert(i, byte);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                out.remove(i);
            }
            4 if len > 0 => {
                out.truncate(rng.random_range(0..len));
            }
            _ if len > 1 => {
                // Duplicate a slice somewhere else: repeated fields and parts.
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..len.min(a + 16) + 1).min(len);
                let piece = out[a..b].to_vec();
                let at = rng.random_range(0..=out.len());
                out.splice(at..at, piece);
            }
            _ => out.push(byte),
        }
    }
    out
}

#[test]
fn mutated_tokens() {
    let (mut rng, iterations) = setup();
    let wallet = Wallet::from_secret([9; 32], None);
    let body = br#"{"a":1}"#;
    let token = sign_request(&wallet, "PUT", "/api/v1/x", body, NOW, "nonce-1");
    let mut accepted = 0;
    for _ in 0..iterations {
        let bytes = mutate(&mut rng, token.as_bytes());
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let mut guard = ReplayGuard::new(4);
        if let Ok(did) = verify_request(text, "PUT", "/api/v1/x", body, NOW, 30_000, &mut guard) {
            // Canonical base64url and strict signatures leave one valid spelling.
            assert_eq!(text, token, "a mutated token was accepted");
            assert_eq!(did, wallet.did());
            accepted += 1;
        }
    }
    assert!(accepted < iterations, "mutations changed nothing");
}

#[test]
fn mutated_wallet_files_and_exports() {
    let (mut rng, iterations) = setup();
    let wallet = Wallet::from_secret([5; 32], Some("mutant".into()));
    // The cheapest cost Argon2 allows, so each unlock attempt is quick.
    let cheap = KdfParams {
        m_kib: 8,
        t: 1,
        p: 1,
    };
    let encrypted = WalletFile::seal(&wallet, Some("pw"), cheap).unwrap();
    let plain = WalletFile::seal(&wallet, None, cheap).unwrap();
    let seeds = [
        encrypted.to_bytes(),
        plain.to_bytes(),
        encrypted.export().into_bytes(),
        plain.export().into_bytes(),
    ];
    let mut outcomes = std::collections::BTreeMap::<&str, u64>::new();
    for i in 0..iterations {
        let seed = &seeds[(i % 4) as usize];
        let bytes = mutate(&mut rng, seed);
        let parsed = if i % 4 < 2 {
            WalletFile::parse(&bytes)
        } else {
            match std::str::from_utf8(&bytes) {
                Ok(text) => WalletFile::from_export(text),
                Err(_) => continue,
            }
        };
        let result = parsed.and_then(|file| {
            let _ = (file.did(), file.name(), file.protection(), file.export());
            file.unlock(Some("pw"))
        });
        let outcome = match result {
            Ok(back) => {
                // JSON whitespace or escapes may change, the key may not.
                assert_eq!(back.did(), wallet.did());
                assert_eq!(back.public(), wallet.public());
                "unlocked"
            }
            Err(WalletError::Corrupt(_)) => "corrupt",
            Err(WalletError::WrongPassphrase) => "wrong passphrase",
            Err(WalletError::UnknownVersion(_)) => "unknown version",
            Err(WalletError::NotAnExport) => "not an export",
            Err(WalletError::PassphraseNeeded) => "passphrase needed",
            Err(e) => panic!("unexpected error {e:?}"),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    assert!(
        outcomes.get("corrupt").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
}
