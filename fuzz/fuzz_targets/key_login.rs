//! Key login and DIDs (`dots-identity::login`, `dots-records`): no panic on any
//! DOTS-Sig header, DID or encoded grant; whatever parses re-formats to text that
//! parses to the same value; a parsed DID names a key that formats back to it; a
//! fuzzed login never verifies.
#![no_main]

use dots_identity::login::{self, Challenge, Credentials};
use dots_records::{did_from_public, public_from_did, Grant, NodeKey};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        0 => {
            if let Some(Ok(creds)) = Credentials::parse(&text) {
                let again = Credentials::parse(&creds.to_header()).unwrap().unwrap();
                assert_eq!(again, creds);
                let node = NodeKey::from_secret([9; 32]).peer_id_bytes();
                // Fuzz input cannot hold a valid signature by the DID's key.
                assert!(login::verify(&creds, "REGISTER", &creds.contact, creds.expires, &node, NOW)
                    .is_err());
            }
        }
        1 => {
            if let Some(Ok(challenge)) = Challenge::parse(&text) {
                let again = Challenge::parse(&challenge.to_header()).unwrap().unwrap();
                assert_eq!(again, challenge);
            }
        }
        2 => {
            if let Some(public) = public_from_did(&text) {
                assert_eq!(did_from_public(&public), text);
            }
        }
        _ => {
            if let Ok(grant) = Grant::decode(rest) {
                assert_eq!(grant.encode(), rest);
                let _ = grant.check(&grant.did, &grant.node, NOW);
            }
        }
    }
});
