//! Counters of one overlay node, read with [`crate::Overlay::metrics`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Upper bounds (ms) of the lookup latency histogram; a last bucket counts the rest (+Inf).
pub const LOOKUP_LATENCY_BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

/// A snapshot of an overlay node's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayMetrics {
    /// Peers with at least one open connection.
    pub peers_connected: u64,
    /// Peers known to subscribe to the presence gossip topic.
    pub gossip_peers: u64,
    /// Records in the local store (DHT share and records learned by gossip).
    pub records_stored: u64,
    /// Records refused, by reason: the [`dots_records::RecordError::reason`] names,
    /// and `stale` for a valid record that does not supersede the stored one.
    pub records_refused: BTreeMap<String, u64>,
    /// Valid records accepted from the network (gossip or DHT) that superseded ours.
    pub records_accepted: u64,
    /// Lookups answered (found or not).
    pub lookups: u64,
    /// Lookups that found a valid record.
    pub lookups_found: u64,
    /// Lookup latency: `lookup_latency_ms[i]` counts lookups that took at most
    /// `LOOKUP_LATENCY_BUCKETS_MS[i]` ms and more than the bound before it; the last
    /// entry counts those above 1000 ms. Not cumulative.
    pub lookup_latency_ms: [u64; LOOKUP_LATENCY_BUCKETS_MS.len() + 1],
    /// Records published by this node.
    pub published: u64,
}

impl OverlayMetrics {
    pub(crate) fn refuse(&mut self, reason: &str) {
        *self.records_refused.entry(reason.to_string()).or_default() += 1;
    }

    /// Total of `records_refused` over all reasons.
    pub fn refused_total(&self) -> u64 {
        self.records_refused.values().sum()
    }

    /// Refusals for one reason.
    pub fn refused(&self, reason: &str) -> u64 {
        self.records_refused.get(reason).copied().unwrap_or(0)
    }

    pub(crate) fn observe_lookup(&mut self, took: Duration, found: bool) {
        self.lookups += 1;
        if found {
            self.lookups_found += 1;
        }
        let ms = took.as_secs_f64() * 1000.0;
        let i = LOOKUP_LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b as f64)
            .unwrap_or(LOOKUP_LATENCY_BUCKETS_MS.len());
        self.lookup_latency_ms[i] += 1;
    }

    /// The counters in the Prometheus text format, names prefixed with `prefix`
    /// (e.g. `dots_overlay`).
    pub fn prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {prefix}_{name} {help}");
            let _ = writeln!(out, "# TYPE {prefix}_{name} {kind}");
            let _ = writeln!(out, "{prefix}_{name} {value}");
        };
        gauge(
            "peers_connected",
            "gauge",
            "Connected overlay peers.",
            self.peers_connected,
        );
        gauge(
            "gossip_peers",
            "gauge",
            "Peers on the presence topic.",
            self.gossip_peers,
        );
        gauge(
            "records_stored",
            "gauge",
            "Records in the local store.",
            self.records_stored,
        );
        gauge(
            "records_accepted_total",
            "counter",
            "Records from the network that superseded the stored one.",
            self.records_accepted,
        );
        gauge(
            "published_total",
            "counter",
            "Records published.",
            self.published,
        );
        gauge(
            "lookups_found_total",
            "counter",
            "Lookups that found a record.",
            self.lookups_found,
        );
        let _ = writeln!(
            out,
            "# HELP {prefix}_records_refused_total Records refused, by reason."
        );
        let _ = writeln!(out, "# TYPE {prefix}_records_refused_total counter");
        for (reason, n) in &self.records_refused {
            let _ = writeln!(
                out,
                "{prefix}_records_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP {prefix}_lookup_duration_ms Lookup latency.");
        let _ = writeln!(out, "# TYPE {prefix}_lookup_duration_ms histogram");
        let mut cumulative = 0;
        for (i, n) in self.lookup_latency_ms.iter().enumerate() {
            cumulative += n;
            let le = LOOKUP_LATENCY_BUCKETS_MS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{prefix}_lookup_duration_ms_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{prefix}_lookup_duration_ms_count {}", self.lookups);
        out
    }
}
