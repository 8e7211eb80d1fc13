//! Presence records: round trip, every refusal, the merge rule, PeerId and did:key.

use dots_records::{
    did_from_public, presence_key, public_from_did, public_from_peer_id, Grant, NodeKey,
    PresenceRecord, RecordError, MAX_RECORD_SIZE, RECORD_VERSION, SIGNATURE_LEN,
};

const NOW: u64 = 1_700_000_000_000;
const MAX_TTL: u64 = 600_000;
const SUBJECT: &str = "sip:alice@dots.test";

fn key(n: u8) -> NodeKey {
    NodeKey::from_secret([n; 32])
}

fn record(key: &NodeKey, seq: u64, exp: u64) -> PresenceRecord {
    PresenceRecord::new(
        SUBJECT,
        key,
        vec![
            "sip:127.0.0.1:5061;transport=tcp".into(),
            "sip:127.0.0.1:5061".into(),
        ],
        seq,
        exp,
    )
}

fn verify(bytes: &[u8]) -> Result<PresenceRecord, RecordError> {
    PresenceRecord::verify(bytes, Some(&presence_key(SUBJECT)), NOW, MAX_TTL)
}

#[test]
fn sign_verify_round_trip() {
    let k = key(1);
    let r = record(&k, 7, NOW + 300_000);
    let bytes = r.sign(&k);
    assert_eq!(verify(&bytes), Ok(r.clone()));
    assert_eq!(
        PresenceRecord::verify(&bytes, None, NOW, MAX_TTL),
        Ok(r.clone())
    );
    assert_eq!(PresenceRecord::decode_unverified(&bytes), Ok(r.clone()));
    // Signing is deterministic: one record, one encoding.
    assert_eq!(bytes, r.sign(&k));

    let withdrawn = PresenceRecord::new(SUBJECT, &k, vec![], 8, NOW + 1);
    let back = verify(&withdrawn.sign(&k)).unwrap();
    assert!(back.is_withdrawn());
    assert_eq!(back, withdrawn);
}

#[test]
fn presence_key_is_sha256_of_prefixed_subject() {
    // sha256("dsip-presence:sip:alice@dots.test"), computed independently.
    let expected = sha256_hex("dsip-presence:sip:alice@dots.test");
    assert_eq!(hex::encode(presence_key(SUBJECT)), expected);
    assert_ne!(presence_key(SUBJECT), presence_key("sip:bob@dots.test"));
}

/// A tiny, separate SHA-256 (FIPS 180-4) so that the test does not use the code it checks.
fn sha256_hex(input: &str) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = input.as_bytes().to_vec();
    let bit_len = (msg.len() as u64) * 8;
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(chunk[i * 4..i * 4 + 4].try_into().unwrap());
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for i in 0..8 {
            h[i] = h[i].wrapping_add(v[i]);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[test]
fn sha256_helper_matches_known_vector() {
    assert_eq!(
        sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn too_large() {
    let k = key(1);
    let mut r = record(&k, 1, NOW + 1000);
    r.sip = (0..200)
        .map(|i| format!("sip:10.0.0.{i}:5060;transport=tcp"))
        .collect();
    let bytes = r.sign(&k);
    assert!(bytes.len() > MAX_RECORD_SIZE);
    assert_eq!(verify(&bytes), Err(RecordError::TooLarge));
}

#[test]
fn malformed() {
    let k = key(1);
    let bytes = record(&k, 1, NOW + 1000).sign(&k);
    assert!(matches!(verify(&[]), Err(RecordError::Malformed(_))));
    assert!(matches!(
        verify(&[RECORD_VERSION]),
        Err(RecordError::Malformed(_))
    ));
    // Truncated anywhere.
    for n in 1..bytes.len() {
        assert!(verify(&bytes[..n]).is_err(), "prefix of {n} bytes accepted");
    }
    // Trailing bytes inside the body are malformed; after the signature they move it.
    let mut body = record(&k, 1, NOW + 1000).encode_body();
    body.push(0);
    body.extend_from_slice(&[0u8; SIGNATURE_LEN]);
    assert_eq!(
        verify(&body),
        Err(RecordError::Malformed("trailing bytes".into()))
    );
    // Empty subject.
    let mut r = record(&k, 1, NOW + 1000);
    r.subject.clear();
    assert!(matches!(
        verify(&r.sign(&k)),
        Err(RecordError::Malformed(_))
    ));
    // A subject that is not UTF-8: patch the first subject byte.
    let mut bad = bytes.clone();
    bad[5] = 0xff;
    assert!(matches!(verify(&bad), Err(RecordError::Malformed(_))));
    // A huge sip count.
    let mut body = record(&k, 1, NOW + 1000).encode_body();
    let at = 1 + 4 + SUBJECT.len() + 4 + 38;
    body[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    body.extend_from_slice(&[0u8; SIGNATURE_LEN]);
    assert!(matches!(verify(&body), Err(RecordError::Malformed(_))));
}

#[test]
fn unknown_version() {
    let k = key(1);
    let mut r = record(&k, 1, NOW + 1000);
    r.version = 1;
    assert_eq!(verify(&r.sign(&k)), Err(RecordError::UnknownVersion(1)));
    r.version = 3;
    assert_eq!(verify(&r.sign(&k)), Err(RecordError::UnknownVersion(3)));
}

#[test]
fn wrong_key() {
    let k = key(1);
    let bytes = record(&k, 1, NOW + 1000).sign(&k);
    assert_eq!(
        PresenceRecord::verify(
            &bytes,
            Some(&presence_key("sip:bob@dots.test")),
            NOW,
            MAX_TTL
        ),
        Err(RecordError::WrongKey)
    );
    assert_eq!(
        PresenceRecord::verify(&bytes, Some(b"short"), NOW, MAX_TTL),
        Err(RecordError::WrongKey)
    );
}

#[test]
fn expired_and_too_far_in_future() {
    let k = key(1);
    assert_eq!(
        verify(&record(&k, 1, NOW).sign(&k)),
        Err(RecordError::Expired)
    );
    assert_eq!(
        verify(&record(&k, 1, NOW - 1).sign(&k)),
        Err(RecordError::Expired)
    );
    assert!(verify(&record(&k, 1, NOW + 1).sign(&k)).is_ok());
    assert!(verify(&record(&k, 1, NOW + MAX_TTL).sign(&k)).is_ok());
    assert_eq!(
        verify(&record(&k, 1, NOW + MAX_TTL + 1).sign(&k)),
        Err(RecordError::TooFarInFuture)
    );
    // No overflow near u64::MAX.
    assert_eq!(
        PresenceRecord::verify(
            &record(&k, 1, u64::MAX).sign(&k),
            None,
            u64::MAX - 1,
            u64::MAX
        ),
        Ok(record(&k, 1, u64::MAX))
    );
}

#[test]
fn bad_signature() {
    let honest = key(1);
    let rogue = key(2);
    // Names the honest node, signed by another key.
    let forged = record(&honest, 1, NOW + 1000).sign(&rogue);
    assert_eq!(verify(&forged), Err(RecordError::BadSignature));
    // Every field is covered: flip a bit in seq, exp, a sip URI, the signature
    // (the body ends with seq, exp and the 4-byte lengths of the empty grant and alias).
    let bytes = record(&honest, 1, NOW + 1000).sign(&honest);
    let body_len = bytes.len() - SIGNATURE_LEN;
    for at in [
        body_len - 24,
        body_len - 9,
        body_len - 38,
        body_len,
        bytes.len() - 1,
    ] {
        let mut t = bytes.clone();
        t[at] ^= 0x01;
        assert_eq!(verify(&t), Err(RecordError::BadSignature), "byte {at}");
    }
    // The domain prefix is part of what is signed.
    let body = record(&honest, 1, NOW + 1000).encode_body();
    let mut plain = body.clone();
    plain.extend_from_slice(&honest.sign(&body));
    assert_eq!(verify(&plain), Err(RecordError::BadSignature));
}

#[test]
fn bad_node_id() {
    let k = key(1);
    for node in [
        vec![],
        vec![0u8; 38],
        k.peer_id_bytes()[..37].to_vec(),
        // A SHA-256 multihash PeerId (as for RSA keys) embeds no key.
        [&[0x12, 0x20][..], &[7u8; 32]].concat(),
    ] {
        let mut r = record(&k, 1, NOW + 1000);
        r.node = node;
        assert_eq!(verify(&r.sign(&k)), Err(RecordError::BadNodeId));
    }
    assert_eq!(public_from_peer_id(&k.peer_id_bytes()), Some(k.public()));
}

#[test]
fn merge_rule() {
    let k = key(1);
    let a = record(&k, 5, NOW + 1000);
    assert!(record(&k, 6, NOW + 10).supersedes(&a));
    assert!(!record(&k, 4, NOW + 9000).supersedes(&a));
    assert!(record(&k, 5, NOW + 1001).supersedes(&a));
    assert!(!record(&k, 5, NOW + 999).supersedes(&a));
    assert!(!a.supersedes(&a.clone()));
}

#[test]
fn peer_id_equals_libp2p() {
    for n in [0u8, 1, 42, 255] {
        let k = key(n);
        let mut secret = k.secret();
        let sk = libp2p_identity::ed25519::SecretKey::try_from_bytes(&mut secret).unwrap();
        let kp = libp2p_identity::Keypair::from(libp2p_identity::ed25519::Keypair::from(sk));
        let expected = libp2p_identity::PeerId::from_public_key(&kp.public());
        assert_eq!(k.peer_id_bytes(), expected.to_bytes());
        let parsed = libp2p_identity::PeerId::from_bytes(&k.peer_id_bytes()).unwrap();
        assert_eq!(parsed, expected);
        assert!(expected.to_base58().starts_with("12D3KooW"));
    }
    let k = NodeKey::generate();
    assert_eq!(NodeKey::from_secret(k.secret()).public(), k.public());
}

#[test]
fn did_key_vectors() {
    // W3C CCG did:key test vectors (ed25519-x25519.json): the all-zero seed.
    assert_eq!(
        key(0).did(),
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
    );
    // did:key spec example, publicKeyBase58 8HH5gYEeNc3z7PYXmd54d4x6qAfCNrqQqEB3nS7Zfu7K.
    let public: [u8; 32] = bs58_decode("8HH5gYEeNc3z7PYXmd54d4x6qAfCNrqQqEB3nS7Zfu7K");
    assert_eq!(
        did_from_public(&public),
        "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th"
    );
    assert_eq!(
        public_from_did("did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th"),
        Some(public)
    );
    assert_eq!(public_from_did("did:key:zQ3s"), None);
    let k = NodeKey::generate();
    assert!(k.did().starts_with("did:key:z6Mk"));
    assert_eq!(public_from_did(&k.did()), Some(k.public()));
}

/// Base58 (bitcoin alphabet) decoding written out for the test.
fn bs58_decode(s: &str) -> [u8; 32] {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut out = [0u8; 32];
    for c in s.bytes() {
        let mut carry = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        for b in out.iter_mut().rev() {
            carry += (*b as u32) * 58;
            *b = carry as u8;
            carry >>= 8;
        }
        assert_eq!(carry, 0);
    }
    out
}

#[test]
fn load_or_create_key_file() {
    let dir = std::env::temp_dir().join(format!("dots-records-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let nested = dir.join("state");
    let k1 = NodeKey::load_or_create(&nested).unwrap();
    let k2 = NodeKey::load_or_create(&nested).unwrap();
    assert_eq!(k1.secret(), k2.secret());
    let path = nested.join("node.key");
    assert_eq!(std::fs::read(&path).unwrap(), k1.secret().to_vec());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(&nested).unwrap().count(), 1);
    std::fs::write(&path, b"not a key").unwrap();
    let err = NodeKey::load_or_create(&nested).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let _ = std::fs::remove_dir_all(&dir);
}

fn did_record(node: &NodeKey, user: &NodeKey, grant_node: &NodeKey, until: u64) -> PresenceRecord {
    let grant = Grant::new_signed(&user.did(), &grant_node.peer_id_bytes(), NOW, until, |m| {
        user.sign(m)
    });
    PresenceRecord::new(
        user.did(),
        node,
        vec!["sip:192.0.2.1:5061".into()],
        1,
        NOW + 1000,
    )
    .with_grant(grant)
}

#[test]
fn did_subjects_need_the_users_grant() {
    let verify = |bytes: &[u8]| PresenceRecord::verify(bytes, None, NOW, MAX_TTL);
    let node = key(1);
    let user = key(5);
    let rogue = key(6);
    // A valid grant: round trip, grant included.
    let good = did_record(&node, &user, &node, NOW + 1000);
    assert_eq!(verify(&good.sign(&node)), Ok(good.clone()));

    // No grant at all: the rogue node's own record for the user's DID.
    let bare = PresenceRecord::new(
        user.did(),
        &rogue,
        vec!["sip:192.0.2.66".into()],
        9,
        NOW + 1000,
    );
    assert_eq!(verify(&bare.sign(&rogue)), Err(RecordError::MissingGrant));
    // A grant the user gave to another node, copied into the rogue's record.
    let copied = PresenceRecord {
        node: rogue.peer_id_bytes(),
        ..good.clone()
    };
    assert_eq!(
        verify(&copied.sign(&rogue)),
        Err(RecordError::GrantMismatch("another node"))
    );
    // A grant "signed" by the rogue for the user's DID.
    let mut forged = did_record(&rogue, &user, &rogue, NOW + 1000);
    let grant = forged.grant.as_mut().unwrap();
    grant.signature = rogue.sign(&Grant::signing_message(
        &grant.did,
        &grant.node,
        grant.issued,
        grant.until,
    ));
    assert_eq!(
        verify(&forged.sign(&rogue)),
        Err(RecordError::BadGrantSignature)
    );
    // A grant for another DID.
    let mut other = did_record(&node, &rogue, &node, NOW + 1000);
    other.subject = user.did();
    assert_eq!(
        verify(&other.sign(&node)),
        Err(RecordError::GrantMismatch("another DID"))
    );
    // A grant that ends before the record does.
    let short = did_record(&node, &user, &node, NOW + 999);
    assert_eq!(verify(&short.sign(&node)), Err(RecordError::GrantExpired));
    // An alias: the address of record names the user's DID, with her grant to node.
    let alias = PresenceRecord::new(
        "sip:alice@dots.test",
        &node,
        vec!["sip:192.0.2.1".into()],
        1,
        NOW + 1000,
    )
    .with_alias(user.did(), good.grant.clone().unwrap());
    assert_eq!(verify(&alias.sign(&node)), Ok(alias.clone()));
    // An alias to a DID without that DID's grant, or with the rogue's.
    let mut no_consent = alias.clone();
    no_consent.grant = None;
    assert_eq!(
        verify(&no_consent.sign(&node)),
        Err(RecordError::MissingGrant)
    );
    let mut stolen = alias.clone();
    stolen.node = rogue.peer_id_bytes();
    assert_eq!(
        verify(&stolen.sign(&rogue)),
        Err(RecordError::GrantMismatch("another node"))
    );
    let mut bad_alias = alias.clone();
    bad_alias.alias = Some("did:key:z6MkNotAKey".into());
    assert_eq!(verify(&bad_alias.sign(&node)), Err(RecordError::BadDid));
    let mut alias_on_did = good.clone();
    alias_on_did.alias = Some(user.did());
    assert!(matches!(
        verify(&alias_on_did.sign(&node)),
        Err(RecordError::Malformed(_))
    ));

    // A grant on an address of record without an alias is refused, not ignored.
    let aor = PresenceRecord {
        subject: "sip:alice@dots.test".into(),
        ..good.clone()
    };
    assert!(matches!(
        verify(&aor.sign(&node)),
        Err(RecordError::Malformed(_))
    ));
    // A malformed DID subject cannot carry a valid grant.
    let mut bad_did = good.clone();
    bad_did.subject = "did:key:zNotBase58!".into();
    bad_did.grant.as_mut().unwrap().did = bad_did.subject.clone();
    assert_eq!(verify(&bad_did.sign(&node)), Err(RecordError::BadDid));
}
