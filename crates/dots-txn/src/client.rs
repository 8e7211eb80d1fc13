//! Client transactions: INVITE (RFC 3261 §17.1.1 with the RFC 6026 Accepted
//! state) and non-INVITE (§17.1.2), plus CANCEL (§9.1).

use dots_sip::{Method, Peer, Request, Response, SipMessage};

use crate::timers::{Deadlines, Timer};
use crate::{build, unindex, Event, Time, TransactionLayer, Transmit, TxnError, TxnId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientState {
    /// INVITE sent, nothing heard yet.
    Calling,
    /// Non-INVITE sent, nothing heard yet.
    Trying,
    Proceeding,
    Completed,
    /// INVITE answered with 2xx (RFC 6026): waits for more 2xx from forks.
    Accepted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelState {
    NotRequested,
    /// Asked for before any provisional: §9.1 forbids sending it yet.
    Pending,
    Sent,
}

pub(crate) struct ClientTxn {
    invite: bool,
    state: ClientState,
    branch: String,
    method: Method,
    dest: Peer,
    /// The INVITE, kept until its final response to build ACK and CANCEL.
    invite_request: Option<Request>,
    /// The serialised request, kept while it may be retransmitted.
    bytes: Vec<u8>,
    /// Current A/E retransmission interval.
    interval: Time,
    pub(crate) deadlines: Deadlines,
    /// The ACK for a non-2xx final, re-sent for each retransmission of it.
    ack: Option<Vec<u8>>,
    cancel: CancelState,
    /// A CANCEL the layer started on the TU's behalf: nothing about it is
    /// reported, the TU only knows the INVITE.
    internal: bool,
}

/// Whether two peers are the same destination: a flow, when both name one,
/// must match too.
fn same_peer(a: Peer, b: Peer) -> bool {
    a.transport == b.transport
        && a.addr == b.addr
        && (a.flow.is_none() || b.flow.is_none() || a.flow == b.flow)
}

impl TransactionLayer {
    /// The TU starts a client transaction. The TU has already pushed its own top Via with a unique
    /// `z9hG4bK` branch; the client transaction is keyed by that branch and the CSeq method.
    pub fn send_request(
        &mut self,
        now: Time,
        request: Request,
        dest: Peer,
    ) -> Result<TxnId, TxnError> {
        self.start_client(now, request, dest, false)
    }

    /// Cancels a client INVITE transaction (RFC 3261 §9.1): builds the CANCEL from the stored INVITE
    /// (same Request-URI, Call-ID, To, From, CSeq number, single top Via with the same branch, Route copied) and
    /// sends it as its own non-INVITE client transaction to the same destination — but only once a provisional
    /// response has arrived; before that it is remembered and sent when one arrives, and dropped if a final arrives.
    /// The CANCEL's own responses are consumed inside the layer (not reported). No-op if already final.
    pub fn cancel(&mut self, now: Time, id: TxnId) {
        let Some(txn) = self.clients.get_mut(&id) else {
            return;
        };
        if !txn.invite || txn.internal || txn.cancel != CancelState::NotRequested {
            return;
        }
        match txn.state {
            ClientState::Calling => txn.cancel = CancelState::Pending,
            ClientState::Proceeding => {
                txn.cancel = CancelState::Sent;
                self.send_cancel(now, id);
            }
            _ => {}
        }
        self.purge_timers();
    }

    /// The shell could not deliver to `dest` (connect refused, ICMP): client transactions to it end with Event::Timeout
    /// (RFC 3261 §8.1.3.1 treats it like a 503/timeout; we report Timeout).
    pub fn transport_error(&mut self, _now: Time, dest: Peer) {
        let mut hit: Vec<TxnId> = self
            .clients
            .iter()
            .filter(|(_, t)| same_peer(t.dest, dest))
            .map(|(&id, _)| id)
            .collect();
        // Map order is arbitrary; events must come out in a reproducible order.
        hit.sort_unstable();
        for id in hit {
            let Some(txn) = self.clients.get(&id) else {
                continue;
            };
            // A transaction that already has its final response has told the
            // TU everything; it only stops absorbing retransmissions (§17.1.4).
            let pending = matches!(
                txn.state,
                ClientState::Calling | ClientState::Trying | ClientState::Proceeding
            );
            if pending && !txn.internal {
                self.events.push_back(Event::Timeout { id });
            }
            self.terminate_client(id);
        }
        self.purge_timers();
    }

    /// A response arrived from the network.
    pub fn handle_response(&mut self, now: Time, response: Response, source: Peer) {
        self.on_response(now, response, source);
        self.purge_timers();
    }

    pub(crate) fn start_client(
        &mut self,
        now: Time,
        request: Request,
        dest: Peer,
        internal: bool,
    ) -> Result<TxnId, TxnError> {
        if request.method == Method::Ack {
            return Err(TxnError::AckIsNotATransaction);
        }
        let branch = request
            .top_via()
            .and_then(|v| v.branch().filter(|b| !b.is_empty()).map(str::to_owned))
            .ok_or(TxnError::MissingBranch)?;
        let method = request.cseq().ok_or(TxnError::MissingCSeq)?.method;
        if method != request.method {
            return Err(TxnError::CSeqMethodMismatch {
                method: request.method.to_string(),
                cseq: method.to_string(),
            });
        }
        if self.find_client(&branch, &method).is_some() {
            return Err(TxnError::DuplicateTransaction {
                branch,
                method: method.to_string(),
            });
        }

        let id = self.alloc_id();
        let invite = method == Method::Invite;
        let unreliable = !dest.transport.is_reliable();
        let bytes = request.to_bytes();
        let kept = if unreliable {
            bytes.clone()
        } else {
            Vec::new()
        };
        self.transmits.push_back(Transmit { dest, bytes });

        let cfg = self.config;
        let mut txn = ClientTxn {
            invite,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            branch: branch.clone(),
            method,
            dest,
            invite_request: invite.then_some(request),
            bytes: kept,
            interval: cfg.first_interval(),
            deadlines: Deadlines::new(),
            ack: None,
            cancel: CancelState::NotRequested,
            internal,
        };
        let (retransmit, timeout) = if invite {
            (Timer::A, Timer::B)
        } else {
            (Timer::E, Timer::F)
        };
        if unreliable {
            self.timers
                .arm(&mut txn.deadlines, id, retransmit, now + txn.interval);
        }
        self.timers.arm(
            &mut txn.deadlines,
            id,
            timeout,
            now.saturating_add(cfg.t1x64()),
        );
        self.clients.insert(id, Box::new(txn));
        self.client_branches.entry(branch).or_default().push(id);
        Ok(id)
    }

    fn find_client(&self, branch: &str, method: &Method) -> Option<TxnId> {
        self.client_branches
            .get(branch)?
            .iter()
            .copied()
            .find(|id| self.clients.get(id).is_some_and(|t| t.method == *method))
    }

    fn on_response(&mut self, now: Time, response: Response, source: Peer) {
        if !(100..=699).contains(&response.code) {
            return;
        }
        let Some(cseq) = response.cseq() else {
            return;
        };
        let Some(via) = response.top_via() else {
            return;
        };
        let found = via.branch().and_then(|b| self.find_client(b, &cseq.method));
        let Some(id) = found else {
            self.events
                .push_back(Event::StrayResponse { response, source });
            return;
        };
        let Some(txn) = self.clients.get_mut(&id) else {
            return;
        };
        let cfg = self.config;
        let code = response.code;
        let reliable = txn.dest.transport.is_reliable();
        let mut report = false;
        let mut stray = false;
        let mut terminate = false;
        let mut send_cancel = false;

        match (txn.invite, txn.state) {
            (true, ClientState::Calling | ClientState::Proceeding) => {
                txn.deadlines.clear(Timer::A);
                txn.deadlines.clear(Timer::B);
                report = true;
                if code < 200 {
                    txn.state = ClientState::Proceeding;
                    if txn.cancel == CancelState::Pending {
                        txn.cancel = CancelState::Sent;
                        send_cancel = true;
                    }
                } else if code < 300 {
                    txn.state = ClientState::Accepted;
                    txn.invite_request = None;
                    txn.bytes = Vec::new();
                    self.timers.arm(
                        &mut txn.deadlines,
                        id,
                        Timer::M,
                        now.saturating_add(cfg.t1x64()),
                    );
                } else {
                    txn.state = ClientState::Completed;
                    if let Some(invite) = txn.invite_request.take() {
                        let ack = build::ack_for(&invite, &response).to_bytes();
                        self.transmits.push_back(Transmit {
                            dest: txn.dest,
                            bytes: ack.clone(),
                        });
                        txn.ack = Some(ack);
                    }
                    txn.bytes = Vec::new();
                    if reliable {
                        terminate = true;
                    } else {
                        self.timers.arm(
                            &mut txn.deadlines,
                            id,
                            Timer::D,
                            now.saturating_add(cfg.timer_d()),
                        );
                    }
                }
            }
            (true, ClientState::Completed) => {
                if code >= 300 {
                    // A retransmission of the final: our ACK was lost.
                    if let Some(ack) = &txn.ack {
                        self.transmits.push_back(Transmit {
                            dest: txn.dest,
                            bytes: ack.clone(),
                        });
                    }
                } else if code >= 200 {
                    // A 2xx after a failure (another fork downstream): the
                    // transaction is over for the TU, but a proxy must still
                    // forward every 2xx.
                    stray = true;
                }
            }
            (true, ClientState::Accepted) => {
                // RFC 6026 §7.2: every 2xx is passed up (forked answers and
                // retransmissions alike: the TU deals with them per dialog).
                report = (200..300).contains(&code);
            }
            (false, ClientState::Trying | ClientState::Proceeding) => {
                report = true;
                if code < 200 {
                    txn.state = ClientState::Proceeding;
                } else {
                    txn.state = ClientState::Completed;
                    txn.deadlines.clear(Timer::E);
                    txn.deadlines.clear(Timer::F);
                    txn.bytes = Vec::new();
                    if reliable {
                        terminate = true;
                    } else {
                        self.timers.arm(
                            &mut txn.deadlines,
                            id,
                            Timer::K,
                            now.saturating_add(cfg.t4),
                        );
                    }
                }
            }
            // Retransmitted finals and late provisionals are absorbed.
            _ => {}
        }

        if stray {
            self.events
                .push_back(Event::StrayResponse { response, source });
        } else if report && !txn.internal {
            // Every provisional is passed up (§17.1.1.2, §17.1.2.2): a UAS
            // repeats non-reliable provisionals to keep proxies' Timer C
            // alive, so they must not be filtered as duplicates.
            self.events.push_back(Event::Response { id, response });
        }
        if send_cancel {
            self.send_cancel(now, id);
        }
        if terminate {
            self.terminate_client(id);
        }
    }

    fn send_cancel(&mut self, now: Time, id: TxnId) {
        let cfg = self.config;
        let Some(txn) = self.clients.get_mut(&id) else {
            return;
        };
        let Some(invite) = &txn.invite_request else {
            return;
        };
        let cancel = build::cancel_for(invite);
        let dest = txn.dest;
        // §9.1: if the INVITE gets no final response within 64*T1 of the
        // CANCEL, the transaction is given up as if Timer B had fired;
        // otherwise a callee that ignores the CANCEL would pin it forever.
        self.timers.arm(
            &mut txn.deadlines,
            id,
            Timer::B,
            now.saturating_add(cfg.t1x64()),
        );
        // This fails only when a CANCEL for this branch is already running
        // (the TU sent one itself), which already does the job.
        let _ = self.start_client(now, cancel, dest, true);
    }

    pub(crate) fn fire_client(&mut self, now: Time, at: Time, id: TxnId, timer: Timer) {
        let Some(txn) = self.clients.get_mut(&id) else {
            return;
        };
        if txn.deadlines.get(timer) != at {
            return;
        }
        txn.deadlines.clear(timer);
        let cfg = self.config;
        match timer {
            Timer::A | Timer::E => {
                self.transmits.push_back(Transmit {
                    dest: txn.dest,
                    bytes: txn.bytes.clone(),
                });
                txn.interval = if timer == Timer::A {
                    txn.interval.saturating_mul(2)
                } else if txn.state == ClientState::Proceeding {
                    cfg.max_interval()
                } else {
                    txn.interval.saturating_mul(2).min(cfg.max_interval())
                };
                let next = Self::next_deadline(at, now, txn.interval);
                self.timers.arm(&mut txn.deadlines, id, timer, next);
            }
            Timer::B | Timer::F => {
                if !txn.internal {
                    self.events.push_back(Event::Timeout { id });
                }
                self.terminate_client(id);
            }
            _ => self.terminate_client(id),
        }
    }

    fn terminate_client(&mut self, id: TxnId) {
        let Some(txn) = self.clients.remove(&id) else {
            return;
        };
        unindex(&mut self.client_branches, &txn.branch, id);
        if !txn.internal {
            self.events.push_back(Event::Terminated { id });
        }
    }
}
