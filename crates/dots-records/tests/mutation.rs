//! Seeded mutation test: `verify` never panics on mutated records, and whatever it
//! accepts re-encodes to exactly the input bytes (one encoding per record).
//!
//! `DOTS_RECORDS_MUTATION_SEED` and `DOTS_RECORDS_MUTATION_ITERATIONS` override the
//! fixed seed and the iteration count.

use dots_records::{Grant, NodeKey, PresenceRecord, MAX_RECORD_SIZE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW: u64 = 1_700_000_000_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seeds(key: &NodeKey) -> Vec<Vec<u8>> {
    let sip = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("sip:192.0.2.{i}:5061;transport=tcp"))
            .collect()
    };
    vec![
        PresenceRecord::new("sip:alice@dots.test", key, sip(2), 1, NOW + 60_000).sign(key),
        PresenceRecord::new("sip:bob@dots.test", key, vec![], 9, NOW + 1).sign(key),
        {
            // A DID subject: the user's grant for this node inside the record.
            let user = NodeKey::from_secret([4; 32]);
            let grant =
                Grant::new_signed(&user.did(), &key.peer_id_bytes(), NOW, NOW + 600_000, |m| {
                    user.sign(m)
                });
            PresenceRecord::new(user.did(), key, sip(8), u64::MAX, NOW + 600_000)
                .with_grant(grant)
                .sign(key)
        },
        {
            // An alias: an address of record naming the user's DID.
            let user = NodeKey::from_secret([4; 32]);
            let grant =
                Grant::new_signed(&user.did(), &key.peer_id_bytes(), NOW, NOW + 600_000, |m| {
                    user.sign(m)
                });
            PresenceRecord::new("sip:alice@dots.test", key, sip(1), 3, NOW + 600_000)
                .with_alias(user.did(), grant)
                .sign(key)
        },
    ]
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let at = rng.random_range(0..len);
                out[at] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.random_range(0..len);
                out[at] = rng.random();
            }
            2 if len > 0 => {
                let at = rng.random_range(0..len);
                out.truncate(at);
            }
            3 => {
                let at = rng.random_range(0..=len);
                let n = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                out.splice(at..at, bytes);
            }
            4 if len > 4 => {
                // Overwrite a would-be length field with an interesting value.
                let at = rng.random_range(0..len - 4);
                let v: u32 = [0, 1, 0xff, 0xffff, u32::MAX, len as u32][rng.random_range(0..6)];
                out[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            5 if len > 1 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..len);
                out.drain(a..b);
            }
            _ => {
                let extra = rng.random_range(0..MAX_RECORD_SIZE);
                out.resize(len + extra, rng.random());
            }
        }
    }
    out
}

#[test]
fn mutated_records_never_panic() {
    let seed = env_or("DOTS_RECORDS_MUTATION_SEED", 0x5eed);
    let iterations = env_or("DOTS_RECORDS_MUTATION_ITERATIONS", 4000);
    let mut rng = StdRng::seed_from_u64(seed);
    let key = NodeKey::from_secret([3; 32]);
    let seeds = seeds(&key);
    for i in 0..iterations {
        let input = &seeds[i as usize % seeds.len()];
        let mutant = mutate(&mut rng, input);
        let key_arg = rng
            .random_bool(0.5)
            .then(|| mutant.get(..32).unwrap_or(&[]).to_vec());
        let now = NOW + rng.random_range(0..1000);
        let _ = PresenceRecord::decode_unverified(&mutant);
        if let Ok(record) = PresenceRecord::verify(&mutant, key_arg.as_deref(), now, u64::MAX) {
            assert_eq!(record.sign(&key), mutant, "seed {seed} iteration {i}");
        }
        if let Ok(record) = PresenceRecord::decode_unverified(&mutant) {
            assert_eq!(
                &record.encode_body()[..],
                &mutant[..mutant.len() - 64],
                "seed {seed} iteration {i}"
            );
        }
    }
    // The unmutated seeds verify.
    for s in &seeds {
        assert!(PresenceRecord::verify(s, None, NOW, u64::MAX).is_ok());
    }
}
