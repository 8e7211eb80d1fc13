//! Counters the engine keeps for `/metrics`.

use std::collections::BTreeMap;

/// Monotonic counters; gauges (bindings, transactions) are read from the
/// engine directly.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Requests received, by method.
    pub requests_in: BTreeMap<String, u64>,
    /// Responses sent or forwarded upstream, by status code.
    pub responses_out: BTreeMap<u16, u64>,
    /// Requests forwarded downstream (each branch counts).
    pub forwarded: u64,
    /// Failed authentications (bad password, unknown user, replay, forged nonce).
    pub auth_failures: u64,
    /// Challenges sent (401/407).
    pub auth_challenges: u64,
    /// Messages that did not parse.
    pub malformed: u64,
    /// Successful REGISTER transactions.
    pub registrations: u64,
}

impl Stats {
    pub(crate) fn request(&mut self, method: &str) {
        *self.requests_in.entry(method.to_string()).or_default() += 1;
    }

    pub(crate) fn response(&mut self, code: u16) {
        *self.responses_out.entry(code).or_default() += 1;
    }
}
