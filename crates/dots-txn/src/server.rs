//! Server transactions: INVITE (RFC 3261 §17.2.1 with the RFC 6026
//! Accepted state) and non-INVITE (§17.2.2), and request matching (§17.2.3).

use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};

use dots_sip::{Method, Peer, Request, Response, SipMessage, Via};

use crate::timers::{Deadlines, Timer};
use crate::{BranchSlot, Event, Time, TransactionLayer, Transmit, TxnError, TxnId};

/// RFC 3261 branches start with it; others come from RFC 2543 elements.
const MAGIC_COOKIE: &str = "z9hG4bK";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerState {
    /// Non-INVITE received, not answered yet.
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    /// INVITE answered with 2xx (RFC 6026).
    Accepted,
}

impl ServerState {
    fn name(self) -> &'static str {
        match self {
            ServerState::Trying => "Trying",
            ServerState::Proceeding => "Proceeding",
            ServerState::Completed => "Completed",
            ServerState::Confirmed => "Confirmed",
            ServerState::Accepted => "Accepted",
        }
    }
}

/// RFC 2543 matching (§17.2.3, last paragraphs). The To tag is left out:
/// the ACK for a non-2xx carries the tag of our response while the INVITE
/// had none, and within one Call-ID, CSeq and top Via it adds nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LegacyKey {
    uri: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    via: String,
    /// INVITE for ACK.
    method: Method,
}

#[derive(Debug)]
enum ServerKey {
    Branch {
        /// The branch followed by the sent-by host: one allocation for both,
        /// since hundreds of thousands of answered transactions can wait
        /// for Timer J at once.
        text: Box<str>,
        branch_len: u32,
        port: Option<u16>,
        /// The branch's key in `server_branches`, hashed once on arrival.
        slot: u64,
    },
    /// Rare (RFC 2543 peers) and large, so out of line.
    Legacy(Box<LegacyKey>),
}

impl ServerKey {
    fn matches_branch(&self, branch: &str, host: &str, port: Option<u16>) -> bool {
        match self {
            ServerKey::Branch {
                text,
                branch_len,
                port: p,
                ..
            } => {
                let (b, h) = text.split_at(*branch_len as usize);
                b == branch && h == host && *p == port
            }
            ServerKey::Legacy(_) => false,
        }
    }
}

/// How an incoming request is looked up, borrowing from its top Via.
enum Lookup<'a> {
    Branch {
        branch: &'a str,
        host: &'a str,
        port: Option<u16>,
        slot: u64,
    },
    Legacy(LegacyKey),
}

/// A transaction created by a request of `txn` method is matched by a
/// request of `req` method.
fn method_matches(txn: &Method, req: &Method) -> bool {
    txn == req || (*req == Method::Ack && *txn == Method::Invite)
}

impl<'a> Lookup<'a> {
    /// `branch_hash` keys the `server_branches` index.
    fn of(request: &Request, via: &'a Via, branch_hash: &RandomState) -> Option<Lookup<'a>> {
        if let Some(branch) = via.branch().filter(|b| b.starts_with(MAGIC_COOKIE)) {
            return Some(Lookup::Branch {
                branch,
                host: &via.host,
                port: via.port,
                slot: branch_hash.hash_one(branch),
            });
        }
        let cseq = request.cseq()?;
        let method = if request.method == Method::Ack {
            Method::Invite
        } else {
            request.method.clone()
        };
        Some(Lookup::Legacy(LegacyKey {
            uri: request.uri.to_string(),
            call_id: request.call_id()?.to_owned(),
            from_tag: request
                .from()
                .and_then(|f| f.tag().map(str::to_owned))
                .unwrap_or_default(),
            cseq: cseq.seq,
            via: via.to_string(),
            method,
        }))
    }

    fn to_key(&self) -> ServerKey {
        match self {
            Lookup::Branch {
                branch,
                host,
                port,
                slot,
            } => {
                let mut text = String::with_capacity(branch.len() + host.len());
                text.push_str(branch);
                text.push_str(host);
                ServerKey::Branch {
                    text: text.into_boxed_str(),
                    // A branch longer than 4 GiB cannot arrive in a message.
                    branch_len: u32::try_from(branch.len()).unwrap_or(u32::MAX),
                    port: *port,
                    slot: *slot,
                }
            }
            Lookup::Legacy(k) => ServerKey::Legacy(Box::new(k.clone())),
        }
    }
}

pub(crate) struct ServerTxn {
    invite: bool,
    state: ServerState,
    /// The method that created the transaction.
    method: Method,
    key: ServerKey,
    source: Peer,
    /// The request, for [`TransactionLayer::server_request`]: an INVITE's
    /// always (a CANCEL may need it), a non-INVITE's only once the TU hands
    /// it over with [`TransactionLayer::keep_request`], until it is
    /// answered. Most non-INVITE requests (REGISTER, OPTIONS to the node)
    /// are answered at once, and copying each one would cost more than
    /// the rest of the transaction layer's work for it. Boxed:
    /// answered non-INVITE transactions wait for Timer J (32 s over UDP), so
    /// at 4,000 REGISTER/s about 128,000 of them are alive, and an inline
    /// `Request` would make every slot of the transaction table several
    /// hundred bytes larger.
    request: Option<Box<Request>>,
    /// The last response sent, re-sent on request retransmissions (and by
    /// Timer G).
    last: Option<Box<[u8]>>,
    /// Current Timer G interval.
    interval: Time,
    pub(crate) deadlines: Deadlines,
}

impl TransactionLayer {
    /// A request arrived from the network (already parsed). New request → Event::Request; retransmission →
    /// absorbed (and the last response re-sent, as §17.2 says); ACK → Completed→Confirmed or Event::Ack.
    pub fn handle_request(&mut self, now: Time, request: Request, source: Peer) {
        self.on_request(now, request, source);
        self.purge_timers();
    }

    /// The TU answers within a server transaction. Responses go to the transaction's source peer
    /// (the shell applies Via received/rport; the layer sends to `source` as given, which the caller built from rport).
    pub fn respond(&mut self, now: Time, id: TxnId, response: Response) -> Result<(), TxnError> {
        let result = self.server_respond(now, id, response, false);
        self.purge_timers();
        result
    }

    /// Like [`respond`](Self::respond), but a final response to a non-INVITE
    /// request ends the transaction at once, as over a reliable transport:
    /// no Completed state, no copy of the response, no Timer J. A
    /// retransmission of the request then arrives as a new request, and the
    /// TU answers it again: the stateless UAS of RFC 3261 §8.2.7. Only for
    /// answers the TU can regenerate identically (same To tag, no
    /// single-use state consumed). INVITE and provisional responses behave
    /// as with `respond`.
    pub fn respond_and_forget(
        &mut self,
        now: Time,
        id: TxnId,
        response: Response,
    ) -> Result<(), TxnError> {
        let result = self.server_respond(now, id, response, true);
        self.purge_timers();
        result
    }

    /// The original request of a server transaction (the proxy needs the INVITE when a CANCEL arrives).
    /// An INVITE stays available for the whole transaction; a non-INVITE request only if the TU kept it
    /// with [`keep_request`](Self::keep_request), and until its final response.
    pub fn server_request(&self, id: TxnId) -> Option<&Request> {
        self.servers.get(&id)?.request.as_deref()
    }

    /// Hands a non-INVITE request back to its server transaction, so that
    /// [`server_request`](Self::server_request) has it until the final
    /// response (a proxy that forwards it builds its 408 or retries from
    /// it). Ignored for an unknown, INVITE or already answered transaction.
    pub fn keep_request(&mut self, id: TxnId, request: Request) {
        if let Some(txn) = self.servers.get_mut(&id) {
            if !txn.invite && matches!(txn.state, ServerState::Trying | ServerState::Proceeding) {
                txn.request = Some(Box::new(request));
            }
        }
    }

    fn find_server(&self, lookup: &Lookup<'_>, method: &Method) -> Option<TxnId> {
        match lookup {
            Lookup::Branch {
                branch,
                host,
                port,
                slot,
            } => self.server_branches.get(slot)?.iter().find(|id| {
                self.servers.get(id).is_some_and(|t| {
                    method_matches(&t.method, method) && t.key.matches_branch(branch, host, *port)
                })
            }),
            Lookup::Legacy(key) => {
                let wanted = if *method == Method::Ack {
                    &Method::Invite
                } else {
                    method
                };
                if key.method == *wanted {
                    self.server_legacy.get(key).copied()
                } else {
                    let mut key = key.clone();
                    key.method = wanted.clone();
                    self.server_legacy.get(&key).copied()
                }
            }
        }
    }

    fn on_request(&mut self, now: Time, request: Request, source: Peer) {
        // Without a parsable top Via no response could ever be routed back.
        let Some(via) = request.top_via() else {
            return;
        };
        let Some(lookup) = Lookup::of(&request, &via, &self.branch_hash) else {
            return;
        };
        let found = self.find_server(&lookup, &request.method);

        if request.method == Method::Ack {
            match found {
                Some(id) => self.server_ack(now, id, request, source),
                None => self.events.push_back(Event::Ack { request, source }),
            }
            return;
        }
        if let Some(id) = found {
            self.server_retransmission(id);
            return;
        }

        let cancels = if request.method == Method::Cancel {
            self.find_server(&lookup, &Method::Invite)
        } else {
            None
        };
        let id = self.alloc_id();
        let invite = request.method == Method::Invite;
        let key = lookup.to_key();
        match &key {
            ServerKey::Branch { slot, .. } => match self.server_branches.entry(*slot) {
                Entry::Occupied(mut taken) => taken.get_mut().push(id),
                Entry::Vacant(free) => {
                    free.insert(BranchSlot::One(id));
                }
            },
            ServerKey::Legacy(k) => {
                self.server_legacy.insert((**k).clone(), id);
            }
        }
        self.servers.insert(
            id,
            Box::new(ServerTxn {
                invite,
                state: if invite {
                    ServerState::Proceeding
                } else {
                    ServerState::Trying
                },
                method: request.method.clone(),
                key,
                source,
                request: invite.then(|| Box::new(request.clone())),
                last: None,
                interval: self.config.first_interval(),
                deadlines: Deadlines::new(),
            }),
        );
        self.events.push_back(Event::Request {
            id,
            request,
            source,
            cancels,
        });
    }

    fn server_ack(&mut self, now: Time, id: TxnId, request: Request, source: Peer) {
        let Some(txn) = self.servers.get_mut(&id) else {
            return;
        };
        match txn.state {
            ServerState::Completed => {
                txn.state = ServerState::Confirmed;
                txn.deadlines.clear(Timer::G);
                txn.deadlines.clear(Timer::H);
                if txn.source.transport.is_reliable() {
                    self.terminate_server(id);
                } else {
                    let at = now.saturating_add(self.config.t4);
                    self.timers.arm(&mut txn.deadlines, id, Timer::I, at);
                }
            }
            // RFC 6026 §7.1: the ACK for a 2xx belongs to the TU.
            ServerState::Accepted => self.events.push_back(Event::Ack { request, source }),
            // Confirmed: a retransmitted ACK. Proceeding: an ACK with nothing
            // to acknowledge yet; it can only be bogus.
            _ => {}
        }
    }

    fn server_retransmission(&mut self, id: TxnId) {
        let Some(txn) = self.servers.get(&id) else {
            return;
        };
        let resend = match txn.state {
            ServerState::Proceeding | ServerState::Completed => txn.last.as_ref(),
            // Trying: nothing to repeat yet. Accepted: 2xx retransmission is
            // the TU's (RFC 6026 §8.1). Confirmed: the ACK has arrived.
            _ => None,
        };
        if let Some(bytes) = resend {
            self.transmits.push_back(Transmit {
                dest: txn.source,
                bytes: bytes.to_vec(),
            });
        }
    }

    fn server_respond(
        &mut self,
        now: Time,
        id: TxnId,
        response: Response,
        forget: bool,
    ) -> Result<(), TxnError> {
        let code = response.code;
        if !(100..=699).contains(&code) {
            return Err(TxnError::InvalidStatus(code));
        }
        let txn = self
            .servers
            .get_mut(&id)
            .ok_or(TxnError::UnknownTransaction(id))?;
        let cfg = self.config;
        let reliable = txn.source.transport.is_reliable();
        let mut terminate = false;
        let mut keep = true;
        match (txn.invite, txn.state) {
            (true, ServerState::Proceeding) => {
                if (200..300).contains(&code) {
                    txn.state = ServerState::Accepted;
                    keep = false;
                    let at = now.saturating_add(cfg.t1x64());
                    self.timers.arm(&mut txn.deadlines, id, Timer::L, at);
                } else if code >= 300 {
                    txn.state = ServerState::Completed;
                    if !reliable {
                        txn.interval = cfg.first_interval();
                        let at = now.saturating_add(txn.interval);
                        self.timers.arm(&mut txn.deadlines, id, Timer::G, at);
                    }
                    let at = now.saturating_add(cfg.t1x64());
                    self.timers.arm(&mut txn.deadlines, id, Timer::H, at);
                }
            }
            // Further 2xx from the TU (forked answers, retransmissions).
            (true, ServerState::Accepted) if (200..300).contains(&code) => keep = false,
            (false, ServerState::Trying | ServerState::Proceeding) => {
                if code < 200 {
                    txn.state = ServerState::Proceeding;
                } else {
                    txn.state = ServerState::Completed;
                    txn.request = None;
                    if reliable || forget {
                        terminate = true;
                        keep = false;
                    } else {
                        let at = now.saturating_add(cfg.t1x64());
                        self.timers.arm(&mut txn.deadlines, id, Timer::J, at);
                    }
                }
            }
            (_, state) => {
                return Err(TxnError::InvalidForState {
                    code,
                    state: state.name(),
                })
            }
        }
        let bytes = response.to_bytes();
        if keep {
            txn.last = Some(bytes.as_slice().into());
        } else {
            txn.last = None;
        }
        self.transmits.push_back(Transmit {
            dest: txn.source,
            bytes,
        });
        if terminate {
            self.terminate_server(id);
        }
        Ok(())
    }

    pub(crate) fn fire_server(&mut self, now: Time, at: Time, id: TxnId, timer: Timer) {
        let Some(txn) = self.servers.get_mut(&id) else {
            return;
        };
        if txn.deadlines.get(timer) != at {
            return;
        }
        txn.deadlines.clear(timer);
        if timer == Timer::G {
            if let Some(bytes) = &txn.last {
                self.transmits.push_back(Transmit {
                    dest: txn.source,
                    bytes: bytes.to_vec(),
                });
            }
            txn.interval = txn
                .interval
                .saturating_mul(2)
                .min(self.config.max_interval());
            let next = Self::next_deadline(at, now, txn.interval);
            self.timers.arm(&mut txn.deadlines, id, Timer::G, next);
        } else {
            // H (no ACK came), I, J, L: the transaction ends.
            self.terminate_server(id);
        }
    }

    fn terminate_server(&mut self, id: TxnId) {
        let Some(txn) = self.servers.remove(&id) else {
            return;
        };
        match &txn.key {
            ServerKey::Branch { slot, .. } => {
                if let Some(ids) = self.server_branches.get_mut(slot) {
                    if ids.remove(id) {
                        self.server_branches.remove(slot);
                    }
                }
            }
            ServerKey::Legacy(k) => {
                if self.server_legacy.get(&**k) == Some(&id) {
                    self.server_legacy.remove(&**k);
                }
            }
        }
        self.events.push_back(Event::Terminated { id });
    }
}
