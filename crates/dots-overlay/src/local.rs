//! The node's verified records, readable without a trip through the swarm task.
//!
//! The swarm task owns the Kademlia store and is the only writer; every change it makes
//! to the store is mirrored here. A lookup that may be answered locally
//! (`fresh = false`) reads this view in the caller's own task, so a call being routed
//! never waits behind the network work queued in the swarm task.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use dots_records::{Millis, PresenceRecord};

use crate::metrics::OverlayMetrics;

#[derive(Default)]
pub(crate) struct LocalView {
    records: RwLock<HashMap<[u8; 32], PresenceRecord>>,
    /// Lookups answered here (only the lookup counters are used).
    lookups: Mutex<OverlayMetrics>,
}

impl LocalView {
    /// The stored record under `key` if it has not expired at `now`.
    pub fn get(&self, key: &[u8; 32], now: Millis) -> Option<PresenceRecord> {
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        records.get(key).filter(|r| r.exp > now).cloned()
    }

    pub fn insert(&self, record: PresenceRecord) {
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        records.insert(record.key(), record);
    }

    pub fn remove(&self, key: &[u8; 32]) {
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        records.remove(key);
    }

    pub fn observe_lookup(&self, took: Duration, found: bool) {
        let mut m = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        m.observe_lookup(took, found);
    }

    /// Adds the lookups answered here to the task's counters.
    pub fn add_lookups_to(&self, metrics: &mut OverlayMetrics) {
        let m = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        metrics.lookups += m.lookups;
        metrics.lookups_found += m.lookups_found;
        for (sum, local) in metrics
            .lookup_latency_ms
            .iter_mut()
            .zip(m.lookup_latency_ms)
        {
            *sum += local;
        }
    }
}
