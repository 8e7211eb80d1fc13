//! The location service (Kamailio's usrloc): address-of-record -> bindings,
//! with an expiry index and a change log.
//!
//! Memory per binding is what limits how many registrations a node holds
//! (the goal is under 1 KiB per contact), so the layout is deliberate:
//!
//! - each AOR's text is allocated once, as the `Arc<str>` key of the map,
//!   and shared with the expiry index (and with the engine's presence set);
//! - an AOR's bindings are a vector sized exactly to its contacts (a plain
//!   `push` would reserve room for four);
//! - the expiry index holds `(expires_at, aor)` with a count, not the
//!   contact URI text again;
//! - the parsed contact URI is not kept: a REGISTER parses the few URIs of
//!   its own AOR when it matches contacts.
//!
//! An AOR whose last binding goes away keeps its key (with no bindings,
//! which costs no allocation besides the key): the node still knows the
//! user registered here ([`Location::is_known`]), to answer 480 rather than
//! 404.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::{Binding, Change, Millis};

/// A binding with what the location service needs to order it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) binding: Binding,
    /// When it was last written by a REGISTER: the tie-break between equal
    /// q-values ("most recent first"). 0 for restored bindings.
    pub(crate) updated: Millis,
}

/// The location service: live bindings per AOR.
///
/// Every mutation through the registrar is recorded as a [`Change`]; the
/// shell calls [`Location::drain_changes`] after each batch of work and hands
/// the changes to the store. [`Location::restore`] loads persisted state
/// without recording anything.
#[derive(Debug, Default)]
pub struct Location {
    /// Every AOR that ever had a binding here; those without bindings now
    /// have an empty vector.
    aors: HashMap<Arc<str>, Vec<Entry>>,
    /// `(expires_at, aor)` -> number of the AOR's bindings expiring then, so
    /// that expiry and `next_expiry` do not scan all bindings.
    expiry: BTreeMap<(Millis, Arc<str>), u32>,
    changes: Vec<Change>,
    contacts: usize,
    /// AORs with at least one binding.
    bound_aors: usize,
}

impl Location {
    pub fn new() -> Self {
        Self::default()
    }

    /// Live bindings of an AOR (not expired at `now`), highest q first, then
    /// most recently registered.
    pub fn lookup(&self, aor: &str, now: Millis) -> Vec<&Binding> {
        let Some(entries) = self.aors.get(aor) else {
            return Vec::new();
        };
        let mut live: Vec<&Entry> = entries.iter().filter(|e| e.binding.is_live(now)).collect();
        live.sort_by(|a, b| {
            b.binding
                .q
                .cmp(&a.binding.q)
                .then(b.updated.cmp(&a.updated))
                .then(b.binding.expires_at.cmp(&a.binding.expires_at))
        });
        live.into_iter().map(|e| &e.binding).collect()
    }

    /// Inserts or replaces (same `aor` and `contact_uri`) a binding without
    /// recording a change: this is how persisted state is loaded at start-up.
    /// A binding with `expires_at == 0` removes the one it names instead.
    pub fn restore(&mut self, binding: Binding) {
        if binding.expires_at == 0 {
            self.remove_entry(&binding.aor, &binding.contact_uri);
        } else {
            self.insert_entry(binding, 0);
        }
    }

    /// Adds or replaces a binding and records the change. For use outside a
    /// REGISTER (e.g. administrative or replicated bindings).
    pub fn upsert(&mut self, binding: Binding, now: Millis) {
        self.changes.push(Change::Upsert(binding.clone()));
        self.insert_entry(binding, now);
    }

    /// Removes a binding and records the change; `None` if there was none.
    pub fn remove(&mut self, aor: &str, contact_uri: &str) -> Option<Binding> {
        let removed = self.remove_entry(aor, contact_uri)?;
        self.changes.push(Change::Remove {
            aor: aor.to_string(),
            contact_uri: contact_uri.to_string(),
        });
        Some(removed)
    }

    /// Removes expired bindings; returns the Remove changes (also queued for
    /// [`Location::drain_changes`]).
    pub fn expire(&mut self, now: Millis) -> Vec<Change> {
        let mut out = Vec::new();
        while let Some(((at, aor), _)) = self.expiry.first_key_value() {
            if *at > now {
                break;
            }
            let aor = aor.clone();
            // Every binding of this AOR that is dead at `now` goes, which
            // includes all those counted under this key.
            let dead: Vec<String> = self
                .entries(&aor)
                .iter()
                .filter(|e| !e.binding.is_live(now))
                .map(|e| e.binding.contact_uri.clone())
                .collect();
            for contact_uri in dead {
                self.remove_entry(&aor, &contact_uri);
                out.push(Change::Remove {
                    aor: aor.to_string(),
                    contact_uri,
                });
            }
        }
        self.changes.extend(out.iter().cloned());
        out
    }

    /// Removes the expired bindings of one AOR (recording the changes), so
    /// that a REGISTER only ever sees live bindings.
    pub(crate) fn expire_aor(&mut self, aor: &str, now: Millis) {
        let dead: Vec<String> = self
            .entries(aor)
            .iter()
            .filter(|e| !e.binding.is_live(now))
            .map(|e| e.binding.contact_uri.clone())
            .collect();
        for contact_uri in dead {
            self.remove(aor, &contact_uri);
        }
    }

    /// Earliest expiry among all bindings: when to call [`Location::expire`] next.
    pub fn next_expiry(&self) -> Option<Millis> {
        self.expiry.first_key_value().map(|((at, _), _)| *at)
    }

    /// Changes since the last call, oldest first.
    pub fn drain_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// AORs with at least one binding.
    pub fn aor_count(&self) -> usize {
        self.bound_aors
    }

    pub fn contact_count(&self) -> usize {
        self.contacts
    }

    /// Whether `aor` has, or once had, a binding here (restored bindings
    /// count, expired or not).
    pub fn is_known(&self, aor: &str) -> bool {
        self.aors.contains_key(aor)
    }

    /// Makes `aor` known without a binding (a REGISTER that only queried
    /// or removed bindings still tells that the user registers here).
    pub fn remember(&mut self, aor: &str) {
        if !self.aors.contains_key(aor) {
            self.aors.insert(Arc::from(aor), Vec::new());
        }
    }

    /// Every AOR that [`Location::is_known`], in no particular order.
    pub fn known_aors(&self) -> impl Iterator<Item = &Arc<str>> {
        self.aors.keys()
    }

    /// The shared text of a known AOR, for callers that keep AORs in sets
    /// of their own without another copy.
    pub fn aor_key(&self, aor: &str) -> Option<Arc<str>> {
        self.aors.get_key_value(aor).map(|(k, _)| k.clone())
    }

    /// Every binding, live or not yet expired by [`Location::expire`], in no
    /// particular order.
    pub fn all(&self) -> impl Iterator<Item = &Binding> {
        self.aors.values().flatten().map(|e| &e.binding)
    }

    pub(crate) fn entries(&self, aor: &str) -> &[Entry] {
        self.aors.get(aor).map(Vec::as_slice).unwrap_or(&[])
    }

    fn insert_entry(&mut self, binding: Binding, updated: Millis) {
        let Some(binding) = self.replace_entry(binding, updated) else {
            return;
        };
        let key = match self.aors.get_key_value(binding.aor.as_str()) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(binding.aor.as_str());
                self.aors.insert(k.clone(), Vec::new());
                k
            }
        };
        self.count_expiry(binding.expires_at, key.clone());
        let entries = self.aors.get_mut(&key).expect("inserted above");
        if entries.is_empty() {
            self.bound_aors += 1;
        }
        entries.reserve_exact(1);
        entries.push(Entry { binding, updated });
        self.contacts += 1;
    }

    /// Replaces, in place, the entry with `binding`'s key if there is one
    /// (a refresh: the common case), moving its expiry in the index.
    /// Removing and pushing again would free and allocate the AOR's vector
    /// each time. Hands the binding back when there is no such entry.
    fn replace_entry(&mut self, binding: Binding, updated: Millis) -> Option<Binding> {
        let Some((key, entries)) = self.aors.get_key_value(binding.aor.as_str()) else {
            return Some(binding);
        };
        let Some(pos) = entries
            .iter()
            .position(|e| e.binding.contact_uri == binding.contact_uri)
        else {
            return Some(binding);
        };
        let key = key.clone();
        let entry = &mut self.aors.get_mut(&key).expect("found above")[pos];
        let (was, now_at) = (entry.binding.expires_at, binding.expires_at);
        *entry = Entry { binding, updated };
        if was != now_at {
            self.uncount_expiry(was, key.clone());
            self.count_expiry(now_at, key);
        }
        None
    }

    /// One more binding of `aor` expiring at `at` in the expiry index.
    fn count_expiry(&mut self, at: Millis, aor: Arc<str>) {
        *self.expiry.entry((at, aor)).or_insert(0) += 1;
    }

    /// One binding of `aor` expiring at `at` fewer; the key goes at zero.
    fn uncount_expiry(&mut self, at: Millis, aor: Arc<str>) {
        let slot = (at, aor);
        if let Some(n) = self.expiry.get_mut(&slot) {
            *n -= 1;
            if *n == 0 {
                self.expiry.remove(&slot);
            }
        }
    }

    fn remove_entry(&mut self, aor: &str, contact_uri: &str) -> Option<Binding> {
        let (key, entries) = self.aors.get_key_value(aor)?;
        let pos = entries
            .iter()
            .position(|e| e.binding.contact_uri == contact_uri)?;
        let key = key.clone();
        let entries = self.aors.get_mut(aor).expect("found above");
        let entry = entries.remove(pos);
        entries.shrink_to_fit();
        if entries.is_empty() {
            self.bound_aors -= 1;
        }
        self.uncount_expiry(entry.binding.expires_at, key);
        self.contacts -= 1;
        Some(entry.binding)
    }
}
