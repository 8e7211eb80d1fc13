//! The location service (Kamailio's usrloc): address-of-record -> bindings,
//! with an expiry index and a change log.

use std::collections::{BTreeSet, HashMap};

use dots_sip::Uri;

use crate::{Binding, Change, Millis};

/// A binding with what the location service needs to match and order it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) binding: Binding,
    /// Parsed `contact_uri`, for RFC 3261 §10.3 URI matching without
    /// re-parsing on every REGISTER. `None` if a restored binding has a URI we
    /// cannot parse; such a binding matches nothing but still routes.
    pub(crate) uri: Option<Uri>,
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
    aors: HashMap<String, Vec<Entry>>,
    /// `(expires_at, aor, contact_uri)` of every binding, so that expiry and
    /// `next_expiry` do not scan all bindings.
    expiry: BTreeSet<(Millis, String, String)>,
    changes: Vec<Change>,
    contacts: usize,
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
        while let Some((at, aor, contact_uri)) = self.expiry.first().cloned() {
            if at > now {
                break;
            }
            self.remove_entry(&aor, &contact_uri);
            out.push(Change::Remove { aor, contact_uri });
        }
        self.changes.extend(out.iter().cloned());
        out
    }

    /// Removes the expired bindings of one AOR (recording the changes), so
    /// that a REGISTER only ever sees live bindings.
    pub(crate) fn expire_aor(&mut self, aor: &str, now: Millis) {
        let dead: Vec<String> = match self.aors.get(aor) {
            Some(entries) => entries
                .iter()
                .filter(|e| !e.binding.is_live(now))
                .map(|e| e.binding.contact_uri.clone())
                .collect(),
            None => return,
        };
        for contact_uri in dead {
            self.remove(aor, &contact_uri);
        }
    }

    /// Earliest expiry among all bindings: when to call [`Location::expire`] next.
    pub fn next_expiry(&self) -> Option<Millis> {
        self.expiry.first().map(|(at, _, _)| *at)
    }

    /// Changes since the last call, oldest first.
    pub fn drain_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    pub fn aor_count(&self) -> usize {
        self.aors.len()
    }

    pub fn contact_count(&self) -> usize {
        self.contacts
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
        self.remove_entry(&binding.aor, &binding.contact_uri);
        self.expiry.insert((
            binding.expires_at,
            binding.aor.clone(),
            binding.contact_uri.clone(),
        ));
        let uri = Uri::parse(&binding.contact_uri).ok();
        self.aors
            .entry(binding.aor.clone())
            .or_default()
            .push(Entry {
                binding,
                uri,
                updated,
            });
        self.contacts += 1;
    }

    fn remove_entry(&mut self, aor: &str, contact_uri: &str) -> Option<Binding> {
        let entries = self.aors.get_mut(aor)?;
        let pos = entries
            .iter()
            .position(|e| e.binding.contact_uri == contact_uri)?;
        let entry = entries.remove(pos);
        if entries.is_empty() {
            self.aors.remove(aor);
        }
        self.expiry.remove(&(
            entry.binding.expires_at,
            entry.binding.aor.clone(),
            entry.binding.contact_uri.clone(),
        ));
        self.contacts -= 1;
        Some(entry.binding)
    }
}
