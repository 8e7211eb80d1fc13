//! Routing across nodes: a request for an address of record with no local
//! binding is sent to the node that serves it, found through the overlay's
//! presence records. The engine stays sans-I/O: it asks the shell for
//! lookups ([`Engine::poll_lookup`]) and is told the answers
//! ([`Engine::lookup_result`]); it announces which local addresses of record
//! came online or went offline ([`Engine::drain_presence_changes`]) and the
//! shell signs and publishes the records.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use dots_registrar::Millis;
use dots_sip::{Method, Peer, Request, Scheme, Uri};
use dots_txn::TxnId;

use crate::engine::{resolve, Engine, Target};

/// Marks a request that one node forwarded to another because of a presence
/// record: the receiving node delivers it locally or fails, and never looks
/// the target up again (so stale records cannot make nodes bounce it).
pub const ROUTED_HEADER: &str = "X-Dots-Routed";

/// Most presence records the engine keeps from gossip and lookups.
const MAX_CACHED_PRESENCE: usize = 200_000;
/// Longest lifetime a presence record may claim (ms), as the overlay enforces.
const MAX_RECORD_LIFETIME: u64 = 3_600_000;

/// Where the overlay says an address of record is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePresence {
    /// The serving node's peer id (bytes).
    pub node: Vec<u8>,
    /// The serving node's SIP URIs; empty means the user went offline.
    pub sip: Vec<String>,
    pub seq: u64,
    pub exp: Millis,
    /// An alias record: the address of record names this DID, to be looked up in
    /// turn (the record's own node and URIs are those of the node that vouched).
    pub alias: Option<String>,
}

/// A lookup the shell must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    pub token: u64,
    pub aor: String,
    /// Skip caches: the cached answer just failed.
    pub fresh: bool,
}

/// A local address of record that came online or went offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub aor: String,
    pub online: bool,
    /// For a DID: the user's grant that makes this node's record for it valid.
    pub grant: Option<dots_records::Grant>,
}

/// A request waiting for a lookup.
#[derive(Debug)]
pub(crate) struct PendingRoute {
    server: TxnId,
    request: Request,
    source: Peer,
    aor: String,
    /// The node that already failed (second attempt only).
    failed: Option<Vec<u8>>,
}

impl PendingRoute {
    pub(crate) fn server(&self) -> TxnId {
        self.server
    }
}

/// Remembered on a proxied request that went to another node, so a failure
/// can trigger one fresh lookup.
#[derive(Debug, Clone)]
pub(crate) struct RemoteAttempt {
    pub(crate) aor: String,
    pub(crate) node: Vec<u8>,
    pub(crate) source: Peer,
    pub(crate) retried: bool,
}

/// Overlay state inside the engine.
#[derive(Debug, Default)]
pub(crate) struct OverlayState {
    pub(crate) enabled: bool,
    pub(crate) node_id: Vec<u8>,
    cache: HashMap<String, RemotePresence>,
    pub(crate) pending: HashMap<u64, PendingRoute>,
    lookups: VecDeque<LookupRequest>,
    changes: Vec<PresenceChange>,
    /// Local AORs with a live binding; the text is the location's own key
    /// (no second copy per AOR).
    online: HashSet<Arc<str>>,
    next_token: u64,
}

impl Engine {
    /// Enables routing through the overlay; `node_id` is this node's peer id
    /// (records naming it are ignored: we are the authority for our users).
    pub fn enable_overlay(&mut self, node_id: Vec<u8>) {
        let o = &mut self.overlay;
        o.enabled = true;
        o.node_id = node_id;
    }

    /// The next lookup to run, if any.
    pub fn poll_lookup(&mut self) -> Option<LookupRequest> {
        self.overlay.lookups.pop_front()
    }

    /// The answer to a lookup.
    pub fn lookup_result(&mut self, now: Millis, token: u64, found: Option<RemotePresence>) {
        // No pending entry: the request was cancelled while we looked.
        let Some(pending) = self.overlay.pending.remove(&token) else {
            return;
        };
        if let Some(p) = &found {
            self.remote_presence(&pending.aor, p.clone());
        }
        if let Some(did) = found
            .as_ref()
            .filter(|p| p.exp > now && !dots_records::is_did_subject(&pending.aor))
            .and_then(|p| p.alias.clone())
        {
            self.reach_alias(now, pending, did);
            return self.process(now);
        }
        let usable = found.filter(|p| {
            p.exp > now
                && !p.sip.is_empty()
                && p.node != self.overlay.node_id
                && pending.failed.as_ref() != Some(&p.node)
        });
        match usable {
            Some(p) => self.forward_to_node(now, pending, &p),
            None => {
                let code = if pending.failed.is_some() || self.is_known_aor(&pending.aor) {
                    480
                } else {
                    404
                };
                self.reply(now, pending.server, &pending.request, code, None, &[]);
            }
        }
        self.process(now);
    }

    /// A presence record learned from the overlay (gossip or lookup).
    pub fn remote_presence(&mut self, aor: &str, presence: RemotePresence) {
        let cache = &mut self.overlay.cache;
        if cache.len() >= MAX_CACHED_PRESENCE && !cache.contains_key(aor) {
            // Gossip brings every record of the network; keep the cache
            // bounded by dropping what has expired (the newest record's exp
            // is a good enough clock here).
            let now = presence.exp.saturating_sub(MAX_RECORD_LIFETIME);
            cache.retain(|_, p| p.exp > now);
            if cache.len() >= MAX_CACHED_PRESENCE {
                return;
            }
        }
        let newer = cache.get(aor).is_none_or(|old| {
            presence.seq > old.seq || (presence.seq == old.seq && presence.exp > old.exp)
        });
        if newer {
            cache.insert(aor.to_string(), presence);
        }
    }

    /// Local addresses of record that came online or went offline since the
    /// last call.
    pub fn drain_presence_changes(&mut self) -> Vec<PresenceChange> {
        std::mem::take(&mut self.overlay.changes)
    }

    /// Local addresses of record with at least one binding (to re-publish
    /// before their records expire).
    pub fn online_aors(&self) -> Vec<String> {
        self.overlay.online.iter().map(|a| a.to_string()).collect()
    }

    /// Records whether `aor` is online now and queues a change if that flipped.
    pub(crate) fn note_presence(&mut self, aor: &str, now: Millis) {
        if !self.overlay.enabled {
            return;
        }
        let online = !self.lookup(aor, now).is_empty();
        let grant = self.presence_grant(aor);
        let key = online.then(|| {
            self.registrar
                .location
                .aor_key(aor)
                .unwrap_or_else(|| Arc::from(aor))
        });
        let o = &mut self.overlay;
        let changed = if let Some(key) = key {
            o.online.insert(key)
        } else {
            o.online.remove(aor)
        };
        if changed {
            o.changes.push(PresenceChange {
                aor: aor.to_string(),
                online,
                grant,
            });
        }
    }

    /// Tries the overlay for `aor`. Hands the request back when the overlay
    /// cannot help (disabled, or the request already came from another
    /// node), leaving the answer to the caller.
    pub(crate) fn route_via_overlay(
        &mut self,
        now: Millis,
        server: TxnId,
        request: Request,
        source: Peer,
        aor: String,
    ) -> Option<Request> {
        if !self.overlay.enabled || request.headers.get_named(ROUTED_HEADER).is_some() {
            return Some(request);
        }
        let cached = self
            .overlay
            .cache
            .get(&aor)
            .cloned()
            .filter(|p| p.exp > now && !p.sip.is_empty() && p.node != self.overlay.node_id);
        let pending = PendingRoute {
            server,
            request,
            source,
            aor,
            failed: None,
        };
        let alias = self
            .overlay
            .cache
            .get(&pending.aor)
            .filter(|p| p.exp > now && !dots_records::is_did_subject(&pending.aor))
            .and_then(|p| p.alias.clone());
        if let Some(did) = alias {
            self.reach_alias(now, pending, did);
            return None;
        }
        match cached {
            Some(p) => self.forward_to_node(now, pending, &p),
            None => self.start_lookup(now, pending, false),
        }
        None
    }

    /// An address of record turned out to name a DID: reach the DID, here if it is
    /// registered here, else at its node (cached record or lookup). One level only:
    /// a DID's own record never carries an alias.
    fn reach_alias(&mut self, now: Millis, mut pending: PendingRoute, did: String) {
        if let Some(id) = did.strip_prefix("did:key:") {
            pending.request.uri.user = Some(id.to_string());
        }
        pending.aor = did;
        let local: Vec<Target> = self
            .lookup(&pending.aor, now)
            .iter()
            .filter_map(crate::engine::target_for_binding)
            .collect();
        if !local.is_empty() {
            return self.fork(now, pending.server, pending.request, local, pending.source);
        }
        let cached = self
            .overlay
            .cache
            .get(&pending.aor)
            .cloned()
            .filter(|p| p.exp > now && !p.sip.is_empty() && p.node != self.overlay.node_id);
        match cached {
            Some(p) => self.forward_to_node(now, pending, &p),
            None => self.start_lookup(now, pending, false),
        }
    }

    fn start_lookup(&mut self, now: Millis, pending: PendingRoute, fresh: bool) {
        if pending.request.method == Method::Invite && pending.failed.is_none() {
            // The lookup may take a while: stop the caller's retransmissions.
            // (Forwarding sends its own 100, so a cache hit needs none here.)
            self.send_trying(now, pending.server, &pending.request);
        }
        let o = &mut self.overlay;
        o.next_token += 1;
        let token = o.next_token;
        o.lookups.push_back(LookupRequest {
            token,
            aor: pending.aor.clone(),
            fresh,
        });
        o.pending.insert(token, pending);
    }

    fn forward_to_node(&mut self, now: Millis, pending: PendingRoute, presence: &RemotePresence) {
        // Prefer a stream transport between nodes: a dead node then fails at
        // once (connection refused) instead of after Timer B.
        let uris: Vec<Uri> = presence
            .sip
            .iter()
            .filter_map(|s| Uri::parse(s).ok())
            .collect();
        let pick = uris
            .iter()
            .find(|u| u.transport().as_deref() == Some("tcp"))
            .or_else(|| uris.first())
            .and_then(resolve);
        let Some(dest) = pick else {
            return self.reply(now, pending.server, &pending.request, 480, None, &[]);
        };
        let mut request = pending.request;
        // The serving node knows the user by the address of record.
        if let Ok(aor) = Uri::parse(&pending.aor) {
            if matches!(aor.scheme, Scheme::Sip | Scheme::Sips) {
                request.uri = aor;
            }
        }
        request
            .headers
            .0
            .push(dots_sip::Header::other(ROUTED_HEADER, "1"));
        let target = Target {
            uri: request.uri.clone(),
            dest,
            routes: Vec::new(),
        };
        let retried = pending.failed.is_some();
        self.fork_remote(
            now,
            pending.server,
            request,
            target,
            pending.source,
            RemoteAttempt {
                aor: pending.aor,
                node: presence.node.clone(),
                source: pending.source,
                retried,
            },
        );
    }

    /// A request forwarded to another node failed (timeout, unreachable, 5xx):
    /// the record may be stale. Look again, bypassing caches, once.
    pub(crate) fn retry_remote(
        &mut self,
        now: Millis,
        server: TxnId,
        attempt: RemoteAttempt,
    ) -> bool {
        if attempt.retried {
            return false;
        }
        let Some(mut request) = self.server_request_clone(server) else {
            return false;
        };
        request
            .headers
            .0
            .retain(|h| !h.name.eq_ignore_ascii_case(ROUTED_HEADER));
        self.overlay.cache.remove(&attempt.aor);
        let pending = PendingRoute {
            server,
            request,
            source: attempt.source,
            aor: attempt.aor,
            failed: Some(attempt.node),
        };
        self.start_lookup(now, pending, true);
        true
    }
}
