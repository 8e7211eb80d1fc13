//! Branches, tags, Call-IDs and made-up ports from a seeded generator, so
//! that a run is reproducible from its seed (the shell seeds it from the
//! operating system).

/// SplitMix64: tiny, fast, and good enough for identifiers that must be
/// unique, not secret.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    state: u64,
}

impl Tokens {
    pub(crate) fn new(seed: u64) -> Tokens {
        Tokens { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 16 lower-case hex digits.
    pub(crate) fn hex(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }

    /// A Via branch with the RFC 3261 magic cookie.
    pub(crate) fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.hex())
    }

    /// An even RTP port in 16384..=32766 (RTP takes the even one, RTCP the next).
    pub(crate) fn rtp_port(&mut self) -> u16 {
        16384 + 2 * (self.next_u64() % 8192) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_distinct() {
        let mut a = Tokens::new(7);
        let mut b = Tokens::new(7);
        let xs: Vec<String> = (0..100).map(|_| a.hex()).collect();
        let ys: Vec<String> = (0..100).map(|_| b.hex()).collect();
        assert_eq!(xs, ys);
        let mut sorted = xs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        assert!(a.branch().starts_with("z9hG4bK"));
        for _ in 0..1000 {
            let p = a.rtp_port();
            assert!(p.is_multiple_of(2) && (16384..=32766).contains(&p));
        }
    }
}
