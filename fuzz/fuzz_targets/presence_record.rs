//! Presence records: `verify` never panics on arbitrary bytes; whatever decodes
//! re-encodes to the same body, and whatever verifies also decodes to the same record.
#![no_main]

use dots_records::{presence_key, PresenceRecord, SIGNATURE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes pick `now`, the rest is the record.
    let (now, bytes) = match data.split_first_chunk::<8>() {
        Some((now, rest)) => (u64::from_be_bytes(*now), rest),
        None => (0, data),
    };
    let decoded = PresenceRecord::decode_unverified(bytes);
    if let Ok(record) = &decoded {
        assert_eq!(record.encode_body(), bytes[..bytes.len() - SIGNATURE_LEN]);
    }
    for key in [
        None,
        decoded.as_ref().ok().map(|r| presence_key(&r.subject)),
    ] {
        if let Ok(record) =
            PresenceRecord::verify(bytes, key.as_ref().map(|k| &k[..]), now, u64::MAX)
        {
            assert_eq!(Ok(&record), decoded.as_ref());
            assert!(record.exp > now);
        }
    }
});
