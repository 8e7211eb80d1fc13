//! What the location service stores, and the change events it emits.

use dots_sip::Peer;

use crate::Millis;

/// One contact registered for an address-of-record.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// [`dots_sip::Uri::aor`] of the To URI, e.g. `sip:alice@example.com`.
    pub aor: String,
    /// The Contact value as registered, re-serialisable name-addr text
    /// (`<sip:alice@192.0.2.1:5060;transport=tcp>;+sip.instance="<urn:...>"`),
    /// with every header parameter kept except `expires` and `q`.
    pub contact: String,
    /// Just the URI text, used to route and as the key of the binding.
    pub contact_uri: String,
    /// q-value in thousandths (`q=0.5` is 500); 1000 when absent.
    pub q: u16,
    pub expires_at: Millis,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from: connection reuse for TCP/TLS contacts
    /// and the way back through a NAT.
    pub source: Option<Peer>,
    /// Path header values (RFC 3327), in order, kept for routing.
    pub path: Vec<String>,
    pub user_agent: Option<String>,
    /// `+sip.instance` (RFC 5626), without the surrounding quotes.
    pub instance: Option<String>,
    /// `reg-id` (RFC 5626).
    pub reg_id: Option<u32>,
}

impl Binding {
    /// Whole seconds left before expiry at `now`, rounded up so that a live
    /// binding never reports 0.
    pub fn remaining_secs(&self, now: Millis) -> u64 {
        self.expires_at.saturating_sub(now).div_ceil(1000)
    }

    pub fn is_live(&self, now: Millis) -> bool {
        self.expires_at > now
    }
}

/// A change to the location service, in the order it happened. Persistence
/// and replication replay these (as Kamailio's usrloc callbacks do).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A binding was added or refreshed; it replaces any binding with the
    /// same `(aor, contact_uri)`.
    Upsert(Binding),
    /// The binding `(aor, contact_uri)` was removed (unregistered or expired).
    Remove { aor: String, contact_uri: String },
}

impl Change {
    pub fn aor(&self) -> &str {
        match self {
            Change::Upsert(b) => &b.aor,
            Change::Remove { aor, .. } => aor,
        }
    }

    pub fn contact_uri(&self) -> &str {
        match self {
            Change::Upsert(b) => &b.contact_uri,
            Change::Remove { contact_uri, .. } => contact_uri,
        }
    }
}
