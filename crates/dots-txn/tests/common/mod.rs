//! Shared test support: message builders, a driver for a single layer, and
//! a two-layer simulation over a seeded lossy network on simulated time.
#![allow(dead_code)]

use std::net::SocketAddr;

use dots_sip::{parse_datagram, Message, Peer, Request, Response, SipMessage, TransportKind};
use dots_txn::{Event, Time, TimerConfig, TransactionLayer, Transmit, TxnError, TxnId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn udp(s: &str) -> Peer {
    Peer::new(TransportKind::Udp, addr(s))
}

pub fn tcp(s: &str) -> Peer {
    Peer::new(TransportKind::Tcp, addr(s))
}

pub const CLIENT: &str = "10.0.0.1:5060";
pub const SERVER: &str = "10.0.0.2:5060";

/// A request as a UA at `CLIENT` would send it, with top Via branch `branch`.
pub fn request(method: &str, branch: &str, transport: TransportKind) -> Request {
    request_with(method, branch, transport, "")
}

/// Same as [`request`] with extra header lines (each ending in CRLF).
pub fn request_with(method: &str, branch: &str, transport: TransportKind, extra: &str) -> Request {
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/{t} {CLIENT};branch={branch}\r\n\
         Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKupstream\r\n\
         Max-Forwards: 69\r\n\
         {extra}\
         From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: call-{branch}@example.com\r\n\
         CSeq: 7 {method}\r\n\
         Content-Length: 0\r\n\r\n",
        t = transport.via_name()
    );
    parse_request(text.as_bytes())
}

pub fn parse_request(bytes: &[u8]) -> Request {
    match parse_datagram(bytes).expect("test request parses") {
        Message::Request(r) => r,
        Message::Response(_) => panic!("expected a request"),
    }
}

pub fn parse_response(bytes: &[u8]) -> Response {
    match parse_datagram(bytes).expect("test response parses") {
        Message::Response(r) => r,
        Message::Request(_) => panic!("expected a response"),
    }
}

/// A response to `req` with the To tag `b1` on anything but 100.
pub fn response(req: &Request, code: u16) -> Response {
    let mut resp = req.make_response(code, None);
    if code != 100 {
        resp.ensure_to_tag("b1");
    }
    resp
}

/// Drives one layer alone: fires its timers in order up to `until`,
/// recording every transmit and event with the time it appeared.
pub struct Solo {
    pub layer: TransactionLayer,
    pub now: Time,
    pub sent: Vec<(Time, Transmit)>,
    pub events: Vec<(Time, Event)>,
}

impl Solo {
    pub fn new() -> Solo {
        Solo {
            layer: TransactionLayer::new(TimerConfig::default()),
            now: 0,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Moves outputs of the layer into the logs.
    pub fn drain(&mut self) {
        while let Some(t) = self.layer.poll_transmit() {
            self.sent.push((self.now, t));
        }
        while let Some(e) = self.layer.poll_event() {
            self.events.push((self.now, e));
        }
    }

    /// Fires timers up to and including `until`, then sets the clock to it.
    pub fn run_until(&mut self, until: Time) {
        while let Some(at) = self.layer.poll_timeout() {
            if at > until {
                break;
            }
            assert!(at >= self.now, "timer in the past: {at} < {}", self.now);
            self.now = at;
            self.layer.handle_timeout(at);
            self.drain();
        }
        self.now = self.now.max(until);
    }

    /// At time `t` (after firing earlier timers), a response arrives.
    pub fn response(&mut self, t: Time, resp: Response, from: Peer) {
        self.run_until(t);
        self.layer.handle_response(t, resp, from);
        self.drain();
    }

    /// At time `t`, a request arrives.
    pub fn request(&mut self, t: Time, req: Request, from: Peer) {
        self.run_until(t);
        self.layer.handle_request(t, req, from);
        self.drain();
    }

    /// At time `t`, the TU answers server transaction `id`.
    pub fn respond(&mut self, t: Time, id: TxnId, resp: Response) -> Result<(), TxnError> {
        self.run_until(t);
        let r = self.layer.respond(t, id, resp);
        self.drain();
        r
    }

    /// At time `t`, the shell reports that `dest` is unreachable.
    pub fn transport_error(&mut self, t: Time, dest: Peer) {
        self.run_until(t);
        self.layer.transport_error(t, dest);
        self.drain();
    }

    /// At time `t`, the TU cancels client transaction `id`.
    pub fn cancel(&mut self, t: Time, id: TxnId) {
        self.run_until(t);
        self.layer.cancel(t, id);
        self.drain();
    }

    /// At time `t`, the TU starts a client transaction.
    pub fn send(&mut self, t: Time, req: Request, dest: Peer) -> Result<TxnId, TxnError> {
        self.run_until(t);
        let r = self.layer.send_request(t, req, dest);
        self.drain();
        r
    }

    pub fn sent_times(&self) -> Vec<Time> {
        self.sent.iter().map(|(t, _)| *t).collect()
    }

    pub fn take_sent(&mut self) -> Vec<(Time, Transmit)> {
        std::mem::take(&mut self.sent)
    }

    pub fn take_events(&mut self) -> Vec<(Time, Event)> {
        std::mem::take(&mut self.events)
    }
}

pub fn event_name(e: &Event) -> String {
    match e {
        Event::Request { id, request, .. } => format!("Request({},{})", id.0, request.method),
        Event::Ack { .. } => "Ack".into(),
        Event::Response { id, response } => format!("Response({},{})", id.0, response.code),
        Event::StrayResponse { response, .. } => format!("Stray({})", response.code),
        Event::Timeout { id } => format!("Timeout({})", id.0),
        Event::Terminated { id } => format!("Terminated({})", id.0),
    }
}

pub fn names(events: &[(Time, Event)]) -> Vec<(Time, String)> {
    events.iter().map(|(t, e)| (*t, event_name(e))).collect()
}

/// Which side of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

struct Packet {
    at: Time,
    seq: u64,
    to: Side,
    bytes: Vec<u8>,
}

/// A pending 2xx the server UA core retransmits until the ACK (RFC 3261
/// §13.3.1.4): the transaction layer leaves that to its user.
struct Pending2xx {
    txn: TxnId,
    call_id: String,
    response: Response,
    next: Time,
    interval: Time,
    give_up: Time,
}

/// What the server's UA core does with each new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerPolicy {
    /// 180 then 200 for INVITE, 200 for anything else.
    Answer,
    /// 486 for INVITE, 200 for anything else.
    Reject,
    /// 180 for INVITE and wait (for a CANCEL, answered 200, plus 487).
    Ring,
}

/// Two layers joined by a seeded lossy, delaying network on simulated time.
/// Each side has a minimal UA core on top (the TU) so that whole
/// transactions run to completion.
pub struct Sim {
    pub now: Time,
    pub client: TransactionLayer,
    pub server: TransactionLayer,
    pub client_peer: Peer,
    pub server_peer: Peer,
    rng: StdRng,
    loss: f64,
    latency: Time,
    jitter: Time,
    seq: u64,
    in_flight: Vec<Packet>,
    pub policy: ServerPolicy,
    pending_2xx: Vec<Pending2xx>,
    /// Every transmit handed to the network (before loss), by sender.
    pub wire: Vec<(Time, Side, Vec<u8>)>,
    pub dropped: usize,
    pub client_events: Vec<(Time, Event)>,
    pub server_events: Vec<(Time, Event)>,
    /// End-to-end ACKs the client UA core sent for 2xx responses.
    pub acks_for_2xx: usize,
}

impl Sim {
    pub fn new(seed: u64, loss: f64, latency: Time, jitter: Time, transport: TransportKind) -> Sim {
        Sim {
            now: 0,
            client: TransactionLayer::new(TimerConfig::default()),
            server: TransactionLayer::new(TimerConfig::default()),
            client_peer: Peer::new(transport, addr(CLIENT)),
            server_peer: Peer::new(transport, addr(SERVER)),
            rng: StdRng::seed_from_u64(seed),
            loss,
            latency,
            jitter,
            seq: 0,
            in_flight: Vec::new(),
            policy: ServerPolicy::Answer,
            pending_2xx: Vec::new(),
            wire: Vec::new(),
            dropped: 0,
            client_events: Vec::new(),
            server_events: Vec::new(),
            acks_for_2xx: 0,
        }
    }

    /// The client TU starts a transaction.
    pub fn send(&mut self, request: Request) -> TxnId {
        let id = self
            .client
            .send_request(self.now, request, self.server_peer)
            .expect("request accepted");
        self.flush();
        id
    }

    pub fn cancel(&mut self, id: TxnId) {
        self.client.cancel(self.now, id);
        self.flush();
    }

    /// The next instant anything happens: a timer of either layer, a packet
    /// arrival, or a 2xx retransmission of the server UA core.
    pub fn next_wake(&self) -> Option<Time> {
        [
            self.client.poll_timeout(),
            self.server.poll_timeout(),
            self.in_flight.iter().map(|p| p.at).min(),
            self.pending_2xx.iter().map(|p| p.next).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Jumps to the next wake-up and processes everything due then.
    /// Returns false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_wake() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;

        let mut due: Vec<Packet> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].at <= now {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|p| (p.at, p.seq));
        for p in due {
            self.deliver(p);
            self.flush();
        }

        self.client.handle_timeout(now);
        self.server.handle_timeout(now);
        self.retransmit_2xx();
        self.flush();
        true
    }

    /// Steps until nothing is left or the clock passes `limit`.
    pub fn run_until(&mut self, limit: Time) {
        while self.next_wake().is_some_and(|t| t <= limit) {
            self.step();
        }
    }

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        let (layer, source) = match p.to {
            Side::Client => (&mut self.client, self.server_peer),
            Side::Server => (&mut self.server, self.client_peer),
        };
        match parse_datagram(&p.bytes).expect("the layers only send valid SIP") {
            Message::Request(r) => layer.handle_request(now, r, source),
            Message::Response(r) => layer.handle_response(now, r, source),
        }
    }

    fn retransmit_2xx(&mut self) {
        let now = self.now;
        let mut keep = Vec::new();
        for mut p in std::mem::take(&mut self.pending_2xx) {
            if p.next > now {
                keep.push(p);
                continue;
            }
            if now >= p.give_up {
                continue;
            }
            if self.server.respond(now, p.txn, p.response.clone()).is_err() {
                // The transaction has ended (Timer L); the core goes on alone.
                self.server
                    .send_stateless(self.client_peer, p.response.to_bytes());
            }
            p.interval = (p.interval * 2).min(4000);
            p.next = now + p.interval;
            keep.push(p);
        }
        self.pending_2xx = keep;
    }

    /// Lets both TUs react to their events, then puts every transmit on the
    /// network, until both layers are quiet.
    pub fn flush(&mut self) {
        loop {
            let mut busy = false;
            while let Some(e) = self.server.poll_event() {
                busy = true;
                self.server_tu(&e);
                self.server_events.push((self.now, e));
            }
            while let Some(e) = self.client.poll_event() {
                busy = true;
                self.client_tu(&e);
                self.client_events.push((self.now, e));
            }
            while let Some(t) = self.client.poll_transmit() {
                busy = true;
                self.put_on_wire(Side::Client, t);
            }
            while let Some(t) = self.server.poll_transmit() {
                busy = true;
                self.put_on_wire(Side::Server, t);
            }
            if !busy {
                break;
            }
        }
    }

    fn put_on_wire(&mut self, from: Side, t: Transmit) {
        let (expected, to) = match from {
            Side::Client => (self.server_peer, Side::Server),
            Side::Server => (self.client_peer, Side::Client),
        };
        assert_eq!(t.dest, expected, "transmit to the wrong peer");
        self.wire.push((self.now, from, t.bytes.clone()));
        if self.rng.random::<f64>() < self.loss {
            self.dropped += 1;
            return;
        }
        let jitter = if self.jitter > 0 {
            self.rng.random_range(0..=self.jitter)
        } else {
            0
        };
        self.seq += 1;
        self.in_flight.push(Packet {
            at: self.now + self.latency + jitter,
            seq: self.seq,
            to,
            bytes: t.bytes,
        });
    }

    fn server_tu(&mut self, e: &Event) {
        let now = self.now;
        match e {
            Event::Request {
                id,
                request,
                cancels,
                ..
            } => {
                let invite = request.method == dots_sip::Method::Invite;
                if let Some(inv) = cancels {
                    self.server
                        .respond(now, *id, response(request, 200))
                        .unwrap();
                    if let Some(original) = self.server.server_request(*inv).cloned() {
                        // It may already be final; then the 487 is refused.
                        let _ = self.server.respond(now, *inv, response(&original, 487));
                    }
                    return;
                }
                if !invite {
                    self.server
                        .respond(now, *id, response(request, 200))
                        .unwrap();
                    return;
                }
                match self.policy {
                    ServerPolicy::Answer => {
                        self.server
                            .respond(now, *id, response(request, 180))
                            .unwrap();
                        let ok = response(request, 200);
                        self.server.respond(now, *id, ok.clone()).unwrap();
                        self.pending_2xx.push(Pending2xx {
                            txn: *id,
                            call_id: request.call_id().unwrap().to_string(),
                            response: ok,
                            next: now + 500,
                            interval: 500,
                            give_up: now + 32_000,
                        });
                    }
                    ServerPolicy::Reject => {
                        self.server
                            .respond(now, *id, response(request, 486))
                            .unwrap();
                    }
                    ServerPolicy::Ring => {
                        self.server
                            .respond(now, *id, response(request, 180))
                            .unwrap();
                    }
                }
            }
            Event::Ack { request, .. } => {
                let call_id = request.call_id().unwrap_or_default();
                self.pending_2xx.retain(|p| p.call_id != call_id);
            }
            _ => {}
        }
    }

    fn client_tu(&mut self, e: &Event) {
        let resp = match e {
            Event::Response { response, .. } | Event::StrayResponse { response, .. } => response,
            _ => return,
        };
        if !resp.is_success() || resp.cseq().map(|c| c.method) != Some(dots_sip::Method::Invite) {
            return;
        }
        // The UAC core ACKs every 2xx end to end, in a transaction of its own.
        let call_id = resp.call_id().unwrap_or_default();
        let to = resp
            .headers
            .get(dots_sip::HeaderName::To)
            .unwrap_or_default();
        let seq = resp.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = format!(
            "ACK sip:bob@10.0.0.2 SIP/2.0\r\n\
             Via: SIP/2.0/{t} {CLIENT};branch=z9hG4bKack{seq}\r\n\
             Max-Forwards: 70\r\n\
             From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
             To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} ACK\r\n\
             Content-Length: 0\r\n\r\n",
            t = self.client_peer.transport.via_name()
        );
        self.acks_for_2xx += 1;
        self.client
            .send_stateless(self.server_peer, ack.into_bytes());
    }

    pub fn client_names(&self) -> Vec<String> {
        self.client_events
            .iter()
            .map(|(_, e)| event_name(e))
            .collect()
    }

    pub fn server_names(&self) -> Vec<String> {
        self.server_events
            .iter()
            .map(|(_, e)| event_name(e))
            .collect()
    }
}
