//! Calls (RFC 3261 §12-15): the INVITE dialog from both sides.
//!
//! As caller: INVITE with an SDP offer through the node, 18x, 2xx → ACK
//! (end to end, along the route set from Record-Route, to the remote target
//! from Contact), BYE; CANCEL before an answer; key login on 401/407.
//! As callee: 180 at once, 200 with an SDP answer when the shell accepts,
//! retransmitted until the ACK (RFC 6026 gives this to the TU), BYE and
//! CANCEL (487) from the peer.

use std::fmt;

use dots_sip::{HeaderName, Method, NameAddr, Peer, Request, Response, SipMessage, Uri};
use dots_txn::{Time, TxnId};

use crate::{printable, sdp, Event, Failure, Purpose, UaError, UserAgent, ALLOW};

/// A call of this agent (not a SIP Call-ID: the shell's handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(pub u64);

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The peer sent BYE.
    ByeFromPeer,
    /// We hung up: our BYE was answered (or went unanswered).
    HungUp,
    /// We declined an incoming call before answering it.
    Declined,
    /// The caller cancelled before we answered (CANCEL, 487).
    CancelledByPeer,
    /// We cancelled our INVITE before it was answered.
    Cancelled,
    /// We answered, no ACK came within 64*T1, so we sent BYE.
    NoAck,
    /// Our INVITE failed: a final 3xx-6xx, or no response at all.
    Failed(Failure),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::ByeFromPeer => f.write_str("BYE from peer"),
            EndReason::HungUp => f.write_str("hung up"),
            EndReason::Declined => f.write_str("declined"),
            EndReason::CancelledByPeer => f.write_str("CANCEL from peer"),
            EndReason::Cancelled => f.write_str("cancelled"),
            EndReason::NoAck => f.write_str("no ACK for our 200"),
            EndReason::Failed(failure) => write!(f, "failed: {failure}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Outgoing,
    Incoming,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outgoing: INVITE sent. Incoming: INVITE received, 180 sent.
    Early,
    /// A 2xx was received (and ACKed) or sent.
    Established,
    /// Our BYE is on its way.
    Terminating,
}

/// What in-dialog requests are built from (RFC 3261 §12.1).
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    call_id: String,
    /// Our From (caller) or To (callee) header value, with our tag.
    local_header: String,
    /// The peer's header value, with its tag.
    remote_header: String,
    remote_tag: String,
    remote_target: Uri,
    /// Route header values, in the order they are sent.
    route_set: Vec<String>,
}

impl Dialog {
    /// The caller's view, from a 2xx to its INVITE: Record-Route reversed.
    fn from_response(resp: &Response, fallback_target: &Uri) -> Option<Dialog> {
        let h = &resp.headers;
        let mut route_set: Vec<String> = h
            .get_all(HeaderName::RecordRoute)
            .map(str::to_string)
            .collect();
        route_set.reverse();
        Some(Dialog {
            call_id: resp.call_id()?.to_string(),
            local_header: h.get(HeaderName::From)?.to_string(),
            remote_header: h.get(HeaderName::To)?.to_string(),
            remote_tag: resp.to()?.tag().unwrap_or("").to_string(),
            remote_target: contact_uri(resp).unwrap_or_else(|| fallback_target.clone()),
            route_set,
        })
    }
}

/// The URI of the first Contact of a message.
fn contact_uri(msg: &impl SipMessage) -> Option<Uri> {
    msg.headers()
        .get(HeaderName::Contact)
        .and_then(|v| NameAddr::parse(v).ok())
        .map(|na| na.uri)
}

/// A 2xx to an INVITE we sent and retransmit until its ACK arrives.
#[derive(Debug)]
struct PendingOk {
    bytes: Vec<u8>,
    dest: Peer,
    cseq: u32,
    interval: Time,
    /// None on reliable transports: no retransmissions, only the give-up.
    next_at: Option<Time>,
    give_up_at: Time,
}

pub(crate) struct Call {
    dir: Direction,
    state: State,
    call_id: String,
    local_tag: String,
    /// Set once the dialog exists (the callee's at once, the caller's on 2xx).
    dialog: Option<Dialog>,
    local_cseq: u32,
    /// Outgoing: the INVITE as last sent. Incoming: the INVITE received.
    invite: Request,
    invite_txn: Option<TxnId>,
    /// Incoming: where the INVITE came from (and its responses go).
    invite_source: Option<Peer>,
    /// Outgoing: the ACK of the 2xx, re-sent on each 2xx retransmission.
    ack: Option<(Vec<u8>, Peer)>,
    pending_ok: Option<PendingOk>,
    ringing: bool,
    auth_tries: u8,
    /// The user hung up while that could not be done at once: CANCEL is
    /// pending (caller), or BYE waits for the ACK (callee).
    hangup_requested: bool,
    rtp_port: u16,
    session_id: u64,
    sdp_version: u32,
}

impl Call {
    pub(crate) fn next_timer(&self) -> Option<Time> {
        self.pending_ok
            .as_ref()
            .map(|p| p.next_at.unwrap_or(p.give_up_at).min(p.give_up_at))
    }

    fn matches(&self, call_id: &str, local_tag: Option<&str>, remote_tag: Option<&str>) -> bool {
        self.call_id == call_id
            && local_tag == Some(self.local_tag.as_str())
            && self
                .dialog
                .as_ref()
                .is_some_and(|d| remote_tag.unwrap_or("") == d.remote_tag)
    }
}

/// Copies the Record-Route of a dialog-creating INVITE into our 18x/2xx
/// (RFC 3261 §12.1.1), and adds our Contact.
fn dialog_response(resp: &mut Response, invite: &Request, contact: &str) {
    for rr in invite.headers.get_all(HeaderName::RecordRoute) {
        resp.headers.push(HeaderName::RecordRoute, rr);
    }
    resp.headers.push(HeaderName::Contact, contact);
}

impl UserAgent {
    /// Calls `target` through the node: INVITE with an SDP offer. Progress
    /// comes as [`Event::Ringing`], [`Event::Answered`] and [`Event::CallEnded`].
    pub fn call(&mut self, now: Time, target: Uri) -> CallRef {
        let call = CallRef(self.alloc_ref());
        let call_id = self.new_call_id();
        let local_tag = self.tokens.hex();
        let from = format!("<{}>;tag={local_tag}", self.cfg.aor());
        let to = format!("<{target}>");
        let rtp_port = self.tokens.rtp_port();
        let session_id = self.tokens.next_u64() % 1_000_000_000_000;
        let mut req = self.new_request(Method::Invite, target, &from, &to, &call_id, 1);
        req.headers.push(HeaderName::Contact, self.contact.clone());
        req.headers.push(HeaderName::Allow, ALLOW);
        req.headers.push(HeaderName::ContentType, "application/sdp");
        req.body = sdp::offer(self.cfg.local.ip(), rtp_port, session_id, 1).into_bytes();
        let dest = self.cfg.node;
        let invite_txn = self.send(now, req.clone(), dest, Purpose::Invite(call));
        self.calls.insert(
            call,
            Call {
                dir: Direction::Outgoing,
                state: State::Early,
                call_id,
                local_tag,
                dialog: None,
                local_cseq: 1,
                invite: req,
                invite_txn,
                invite_source: None,
                ack: None,
                pending_ok: None,
                ringing: false,
                auth_tries: 0,
                hangup_requested: false,
                rtp_port,
                session_id,
                sdp_version: 1,
            },
        );
        if invite_txn.is_none() {
            let failure = Failure::local(500, "the INVITE could not be sent".into());
            self.end_call(call, EndReason::Failed(failure));
        }
        call
    }

    /// Answers an incoming call: 200 with an SDP answer.
    pub fn accept(&mut self, now: Time, call: CallRef) -> Result<(), UaError> {
        let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
        if c.dir != Direction::Incoming || c.state != State::Early {
            return Err(UaError::NotRinging);
        }
        let (Some(txn), Some(dest)) = (c.invite_txn, c.invite_source) else {
            return Err(UaError::NotRinging);
        };
        let offer = String::from_utf8_lossy(&c.invite.body).into_owned();
        let body = sdp::answer(
            &offer,
            self.cfg.local.ip(),
            c.rtp_port,
            c.session_id,
            c.sdp_version,
        );
        let invite = c.invite.clone();
        let mut resp = self.response(&invite, 200, &c.local_tag);
        dialog_response(&mut resp, &invite, &self.contact);
        resp.headers.push(HeaderName::Allow, ALLOW);
        resp.headers
            .push(HeaderName::ContentType, "application/sdp");
        resp.body = body.into_bytes();
        let bytes = resp.to_bytes();
        self.respond(now, txn, resp);
        let cseq = invite.cseq().map_or(0, |c| c.seq);
        let pending = self.pending_ok(now, bytes, dest, cseq);
        let call_id = {
            let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
            c.pending_ok = Some(pending);
            c.state = State::Established;
            c.call_id.clone()
        };
        self.events.push_back(Event::Answered { call, call_id });
        Ok(())
    }

    /// Declines an incoming call with `code` (a 3xx-6xx, e.g. 486 or 603).
    pub fn reject(&mut self, now: Time, call: CallRef, code: u16) -> Result<(), UaError> {
        let c = self.calls.get(&call).ok_or(UaError::UnknownCall)?;
        if c.dir != Direction::Incoming || c.state != State::Early {
            return Err(UaError::NotRinging);
        }
        let code = if (300..=699).contains(&code) {
            code
        } else {
            603
        };
        let resp = self.response(&c.invite, code, &c.local_tag);
        if let Some(txn) = c.invite_txn {
            self.respond(now, txn, resp);
        }
        self.end_call(call, EndReason::Declined);
        Ok(())
    }

    /// Ends a call: BYE when it is established, CANCEL while our INVITE is
    /// unanswered, 603 to an incoming one not answered yet. The end comes as
    /// [`Event::CallEnded`].
    pub fn hangup(&mut self, now: Time, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match (c.dir, c.state) {
            (Direction::Outgoing, State::Early) => {
                c.hangup_requested = true;
                if let Some(txn) = c.invite_txn {
                    self.txn.cancel(now, txn);
                }
            }
            (Direction::Incoming, State::Early) => {
                let _ = self.reject(now, call, 603);
            }
            (Direction::Incoming, State::Established) if c.pending_ok.is_some() => {
                // §15: no BYE before the ACK (or its timeout).
                c.hangup_requested = true;
            }
            (_, State::Established) => self.send_bye(now, call, Purpose::Bye(call)),
            (_, State::Terminating) => {}
        }
    }

    /// Calls still going (in any state).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The calls still going, oldest first.
    pub fn calls(&self) -> Vec<CallRef> {
        self.calls.keys().copied().collect()
    }

    fn pending_ok(&self, now: Time, bytes: Vec<u8>, dest: Peer, cseq: u32) -> PendingOk {
        let t1 = self.cfg.timers.t1.max(1);
        PendingOk {
            bytes,
            dest,
            cseq,
            interval: t1,
            next_at: (!dest.transport.is_reliable()).then_some(now + t1),
            give_up_at: now + 64 * t1,
        }
    }

    pub(crate) fn end_call(&mut self, call: CallRef, reason: EndReason) {
        if let Some(c) = self.calls.remove(&call) {
            self.events.push_back(Event::CallEnded {
                call,
                call_id: c.call_id,
                reason,
            });
        }
    }

    /// An in-dialog request along the route set (RFC 3261 §12.2.1.1), and
    /// where to send it: the first route when it is a loose router, else the
    /// remote target (strict routers get the route in the Request-URI).
    fn dialog_request(&mut self, d: &Dialog, method: Method, cseq: u32) -> (Request, Peer) {
        let first = d
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r).ok())
            .map(|na| na.uri);
        let (ruri, routes, dest) = match first {
            None => (
                d.remote_target.clone(),
                Vec::new(),
                self.resolve(&d.remote_target),
            ),
            Some(route) if route.param("lr").is_some() => (
                d.remote_target.clone(),
                d.route_set.clone(),
                self.resolve(&route),
            ),
            Some(route) => {
                let mut routes: Vec<String> = d.route_set[1..].to_vec();
                routes.push(format!("<{}>", d.remote_target));
                let dest = self.resolve(&route);
                (route, routes, dest)
            }
        };
        let mut req = self.new_request(
            method,
            ruri,
            &d.local_header,
            &d.remote_header,
            &d.call_id,
            cseq,
        );
        for r in routes {
            req.headers.push(HeaderName::Route, r);
        }
        (req, dest)
    }

    fn send_bye(&mut self, now: Time, call: CallRef, purpose: Purpose) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(d) = c.dialog.clone() else {
            return;
        };
        c.local_cseq += 1;
        c.state = State::Terminating;
        c.pending_ok = None;
        let cseq = c.local_cseq;
        let (bye, dest) = self.dialog_request(&d, Method::Bye, cseq);
        if self.send(now, bye, dest, purpose).is_none() && purpose == Purpose::Bye(call) {
            self.end_call(call, EndReason::HungUp);
        }
    }

    /// ACKs (and, with `bye`, ends) the dialog a 2xx creates, with nothing
    /// but the 2xx to go on: late retransmissions, other forks.
    fn ack_from_response(&mut self, now: Time, resp: &Response, bye: bool) {
        let Some(cseq) = resp.cseq() else { return };
        let fallback = self.cfg.aor();
        let Some(d) = Dialog::from_response(resp, &fallback) else {
            return;
        };
        let (ack, dest) = self.dialog_request(&d, Method::Ack, cseq.seq);
        self.txn.send_stateless(dest, ack.to_bytes());
        if bye {
            let (bye, dest) = self.dialog_request(&d, Method::Bye, cseq.seq + 1);
            self.send(now, bye, dest, Purpose::Detached);
        }
    }

    pub(crate) fn on_invite_response(
        &mut self,
        now: Time,
        call: CallRef,
        id: TxnId,
        resp: Response,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            if resp.is_success() {
                self.ack_from_response(now, &resp, true);
            }
            return;
        };
        if resp.is_success() {
            return self.on_invite_2xx(now, call, &resp);
        }
        if c.invite_txn != Some(id) || c.state != State::Early {
            return;
        }
        match resp.code {
            100 => {}
            101..=199 => {
                if !c.ringing {
                    c.ringing = true;
                    self.events.push_back(Event::Ringing {
                        call,
                        code: resp.code,
                    });
                }
            }
            401 | 407 if !c.hangup_requested && c.auth_tries < 2 => {
                c.auth_tries += 1;
                let invite = c.invite.clone();
                match self.reauthorized(now, &invite, &resp) {
                    Ok(req) => {
                        let dest = self.cfg.node;
                        let txn = self.send(now, req.clone(), dest, Purpose::Invite(call));
                        if let Some(c) = self.calls.get_mut(&call) {
                            c.local_cseq = req.cseq().map_or(c.local_cseq, |s| s.seq);
                            c.invite = req;
                            c.invite_txn = txn;
                        }
                        if txn.is_none() {
                            let failure =
                                Failure::local(500, "the INVITE could not be sent".into());
                            self.end_call(call, EndReason::Failed(failure));
                        }
                    }
                    Err(failure) => self.end_call(call, EndReason::Failed(failure)),
                }
            }
            _ => {
                let reason = if c.hangup_requested {
                    EndReason::Cancelled
                } else {
                    let mut failure = Failure::from_response(&resp);
                    if matches!(resp.code, 401 | 407) {
                        failure = failure.with_detail("the node refused the key login");
                    }
                    EndReason::Failed(failure)
                };
                self.end_call(call, reason);
            }
        }
    }

    fn on_invite_2xx(&mut self, now: Time, call: CallRef, resp: &Response) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let tag = resp.to().and_then(|t| t.tag().map(str::to_string));
        if c.state != State::Early {
            let same = c
                .dialog
                .as_ref()
                .is_some_and(|d| Some(&d.remote_tag) == tag.as_ref());
            match (&c.ack, same) {
                (Some((bytes, dest)), true) => {
                    let (bytes, dest) = (bytes.clone(), *dest);
                    self.txn.send_stateless(dest, bytes);
                }
                // Another fork answered too: ACK it and hang it up (§13.2.2.4).
                _ => self.ack_from_response(now, resp, true),
            }
            return;
        }
        let Some(cseq) = resp.cseq() else { return };
        let Some(dialog) = Dialog::from_response(resp, &c.invite.uri) else {
            return;
        };
        let (ack, dest) = self.dialog_request(&dialog, Method::Ack, cseq.seq);
        let bytes = ack.to_bytes();
        self.txn.send_stateless(dest, bytes.clone());
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.ack = Some((bytes, dest));
        c.dialog = Some(dialog);
        c.state = State::Established;
        let hang_up = c.hangup_requested;
        let call_id = c.call_id.clone();
        self.events.push_back(Event::Answered { call, call_id });
        if hang_up {
            self.send_bye(now, call, Purpose::Bye(call));
        }
    }

    pub(crate) fn invite_failed(&mut self, call: CallRef, id: TxnId, failure: Failure) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.invite_txn != Some(id) || c.state != State::Early {
            return;
        }
        let reason = if c.hangup_requested {
            EndReason::Cancelled
        } else {
            EndReason::Failed(failure)
        };
        self.end_call(call, reason);
    }

    /// A 2xx that no transaction claims: a retransmission after Timer M.
    pub(crate) fn on_stray_response(&mut self, now: Time, resp: Response) {
        if !resp.is_success() || resp.cseq().is_none_or(|c| c.method != Method::Invite) {
            return;
        }
        let call_id = resp.call_id().unwrap_or("");
        let local = resp.from().and_then(|f| f.tag().map(str::to_string));
        let found = self.calls.iter().find_map(|(r, c)| {
            (c.dir == Direction::Outgoing
                && c.call_id == call_id
                && Some(&c.local_tag) == local.as_ref())
            .then_some(*r)
        });
        match found {
            Some(call) => self.on_invite_2xx(now, call, &resp),
            None => self.ack_from_response(now, &resp, true),
        }
    }

    /// A new INVITE: ring (180) and tell the shell.
    pub(crate) fn on_invite(&mut self, now: Time, id: TxnId, req: Request, source: Peer) {
        let local_tag = self.tokens.hex();
        let (Some(from), Some(call_id), Some(to)) = (
            req.from(),
            req.call_id().map(str::to_string),
            req.headers.get(HeaderName::To).map(str::to_string),
        ) else {
            let resp = self.response(&req, 400, &local_tag);
            return self.respond(now, id, resp);
        };
        let Some(remote_target) = contact_uri(&req) else {
            let mut resp = self.response(&req, 400, &local_tag);
            resp.reason = "Missing Contact".into();
            return self.respond(now, id, resp);
        };
        let dialog = Dialog {
            call_id: call_id.clone(),
            local_header: format!("{to};tag={local_tag}"),
            remote_header: req
                .headers
                .get(HeaderName::From)
                .unwrap_or_default()
                .to_string(),
            remote_tag: from.tag().unwrap_or("").to_string(),
            remote_target,
            route_set: req
                .headers
                .get_all(HeaderName::RecordRoute)
                .map(str::to_string)
                .collect(),
        };
        let mut ringing = self.response(&req, 180, &local_tag);
        dialog_response(&mut ringing, &req, &self.contact);
        self.respond(now, id, ringing);
        let call = CallRef(self.alloc_ref());
        let rtp_port = self.tokens.rtp_port();
        let session_id = self.tokens.next_u64() % 1_000_000_000_000;
        self.calls.insert(
            call,
            Call {
                dir: Direction::Incoming,
                state: State::Early,
                call_id: call_id.clone(),
                local_tag,
                dialog: Some(dialog),
                local_cseq: 0,
                invite: req,
                invite_txn: Some(id),
                invite_source: Some(source),
                ack: None,
                pending_ok: None,
                ringing: true,
                auth_tries: 0,
                hangup_requested: false,
                rtp_port,
                session_id,
                sdp_version: 1,
            },
        );
        self.events.push_back(Event::IncomingCall {
            call,
            call_id: printable(&call_id),
            from: printable(&from.uri.to_string()),
        });
    }

    fn find_dialog(&self, req: &Request) -> Option<CallRef> {
        let call_id = req.call_id()?;
        let to = req.to()?;
        let from = req.from()?;
        self.calls
            .iter()
            .find(|(_, c)| c.matches(call_id, to.tag(), from.tag()))
            .map(|(r, _)| *r)
    }

    /// The ACK of a 2xx we sent.
    pub(crate) fn on_ack(&mut self, now: Time, req: &Request) {
        let Some(call) = self.find_dialog(req) else {
            return;
        };
        let seq = req.cseq().map(|c| c.seq);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.pending_ok.as_ref().is_some_and(|p| Some(p.cseq) == seq) {
            c.pending_ok = None;
            if c.hangup_requested {
                self.send_bye(now, call, Purpose::Bye(call));
            }
        }
    }

    pub(crate) fn on_cancel(
        &mut self,
        now: Time,
        id: TxnId,
        req: &Request,
        cancels: Option<TxnId>,
    ) {
        let found = cancels.and_then(|inv| {
            self.calls
                .iter()
                .find(|(_, c)| c.dir == Direction::Incoming && c.invite_txn == Some(inv))
                .map(|(r, c)| (*r, c.local_tag.clone(), c.state))
        });
        let tag = found
            .as_ref()
            .map_or_else(|| self.tokens.hex(), |(_, t, _)| t.clone());
        let code = if cancels.is_some() { 200 } else { 481 };
        let resp = self.response(req, code, &tag);
        self.respond(now, id, resp);
        if let Some((call, _, State::Early)) = found {
            if let Some(c) = self.calls.get(&call) {
                let resp = self.response(&c.invite, 487, &c.local_tag);
                if let Some(txn) = c.invite_txn {
                    self.respond(now, txn, resp);
                }
            }
            self.end_call(call, EndReason::CancelledByPeer);
        }
    }

    pub(crate) fn on_in_dialog_request(
        &mut self,
        now: Time,
        id: TxnId,
        req: Request,
        source: Peer,
    ) {
        let found = self.find_dialog(&req);
        let tag = req
            .to()
            .and_then(|t| t.tag().map(str::to_string))
            .unwrap_or_default();
        match (&req.method, found) {
            (Method::Bye, Some(call)) => {
                let resp = self.response(&req, 200, &tag);
                self.respond(now, id, resp);
                if let Some(c) = self.calls.get(&call) {
                    if c.dir == Direction::Incoming && c.state == State::Early {
                        let resp = self.response(&c.invite, 487, &c.local_tag);
                        if let Some(txn) = c.invite_txn {
                            self.respond(now, txn, resp);
                        }
                    }
                }
                self.end_call(call, EndReason::ByeFromPeer);
            }
            (Method::Invite, Some(call)) => self.on_reinvite(now, id, call, &req, source),
            (Method::Message, _) => self.on_message(now, id, &req, &tag),
            (Method::Options, _) => {
                let mut resp = self.response(&req, 200, &tag);
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond(now, id, resp);
            }
            (_, None) => {
                let resp = self.response(&req, 481, &tag);
                self.respond(now, id, resp);
            }
            (_, Some(_)) => {
                let mut resp = self.response(&req, 501, &tag);
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond(now, id, resp);
            }
        }
    }

    /// A re-INVITE (a session refresh, a hold): answered 200 with the same
    /// media, the remote target updated.
    fn on_reinvite(&mut self, now: Time, id: TxnId, call: CallRef, req: &Request, source: Peer) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let tag = c.local_tag.clone();
        if c.state != State::Established || c.pending_ok.is_some() {
            let resp = self.response(req, 491, &tag);
            return self.respond(now, id, resp);
        }
        c.sdp_version += 1;
        if let (Some(d), Some(target)) = (c.dialog.as_mut(), contact_uri(req)) {
            d.remote_target = target;
        }
        let offer = String::from_utf8_lossy(&req.body).into_owned();
        let body = sdp::answer(
            &offer,
            self.cfg.local.ip(),
            c.rtp_port,
            c.session_id,
            c.sdp_version,
        );
        let mut resp = self.response(req, 200, &tag);
        resp.headers.push(HeaderName::Contact, self.contact.clone());
        resp.headers
            .push(HeaderName::ContentType, "application/sdp");
        resp.body = body.into_bytes();
        let bytes = resp.to_bytes();
        self.respond(now, id, resp);
        let cseq = req.cseq().map_or(0, |c| c.seq);
        let pending = self.pending_ok(now, bytes, source, cseq);
        if let Some(c) = self.calls.get_mut(&call) {
            c.pending_ok = Some(pending);
        }
    }

    /// 2xx retransmissions (doubling up to T2) and the ACK timeout.
    pub(crate) fn call_timers(&mut self, now: Time) {
        let t2 = self.cfg.timers.t2.max(1);
        let mut resend = Vec::new();
        let mut no_ack = Vec::new();
        for (r, c) in self.calls.iter_mut() {
            let Some(p) = c.pending_ok.as_mut() else {
                continue;
            };
            if p.give_up_at <= now {
                no_ack.push(*r);
            } else if p.next_at.is_some_and(|at| at <= now) {
                resend.push((p.dest, p.bytes.clone()));
                p.interval = (p.interval * 2).min(t2);
                p.next_at = Some(now + p.interval);
            }
        }
        for (dest, bytes) in resend {
            self.txn.send_stateless(dest, bytes);
        }
        for call in no_ack {
            self.send_bye(now, call, Purpose::Detached);
            self.end_call(call, EndReason::NoAck);
        }
    }
}
