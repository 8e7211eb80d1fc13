//! # dots-txn: the SIP transaction layer of DOTS
//!
//! The four transaction state machines of RFC 3261 §17 (client and server,
//! INVITE and non-INVITE) with the RFC 6026 corrections (the Accepted state
//! and Timers L and M), as a sans-I/O core: no sockets, no threads, no clock.
//! The caller feeds it parsed messages and the current time, and drains what
//! it wants sent, what the transaction user (TU) must know, and when it wants
//! to be woken up next.
//!
//! Driving it is a loop of `handle_*` calls followed by `poll_*` calls:
//!
//! ```
//! use dots_sip::{parse_datagram, Message, Peer, TransportKind};
//! use dots_txn::{Event, TimerConfig, TransactionLayer};
//!
//! let mut layer = TransactionLayer::new(TimerConfig::default());
//! let client = Peer::new(TransportKind::Udp, "192.0.2.1:5060".parse().unwrap());
//! let bytes = b"OPTIONS sip:node.example SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
//! Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\n\
//! To: <sip:node.example>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
//! Content-Length: 0\r\n\r\n";
//!
//! // The shell received a datagram at t = 0 ms.
//! let Message::Request(req) = parse_datagram(bytes).unwrap() else { panic!() };
//! layer.handle_request(0, req, client);
//!
//! // The TU answers the new server transaction.
//! while let Some(event) = layer.poll_event() {
//!     if let Event::Request { id, request, .. } = event {
//!         layer.respond(0, id, request.make_response(200, None)).unwrap();
//!     }
//! }
//! // The shell sends what the layer produced...
//! let out = layer.poll_transmit().unwrap();
//! assert_eq!(out.dest, client);
//! assert!(out.bytes.starts_with(b"SIP/2.0 200 OK"));
//! // ...and sleeps until the next timer (Timer J: 64*T1 over UDP).
//! assert_eq!(layer.poll_timeout(), Some(32_000));
//! layer.handle_timeout(32_000);
//! assert!(matches!(layer.poll_event(), Some(Event::Terminated { .. })));
//! assert_eq!(layer.counts(), (0, 0));
//! ```
//!
//! Every input comes from the network or the TU and may be malformed or
//! unexpected: no input makes the layer panic. Messages that cannot be
//! matched or are not valid in a transaction's state are dropped or
//! reported, never trusted.
//!
//! Retransmissions exist only on unreliable transports
//! ([`TransportKind::is_reliable`](dots_sip::TransportKind::is_reliable));
//! a message is serialised once and the same bytes are re-sent.
//!
//! The TU owns what RFC 3261 leaves to it: sending 100 Trying for INVITE,
//! Timer C of proxies, and the end-to-end ACK and 2xx retransmissions.

mod build;
mod client;
mod server;
mod timers;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use dots_sip::{Peer, Request, Response};

pub use timers::Timer;

use client::ClientTxn;
use server::{LegacyKey, ServerTxn};
use timers::TimerHeap;

/// Milliseconds on an arbitrary monotonic scale; all time is input.
pub type Time = u64;

/// The RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate.
    pub t1: Time,
    /// Maximum retransmission interval for non-INVITE requests and INVITE responses.
    pub t2: Time,
    /// Maximum duration a message remains in the network.
    pub t4: Time,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: 500,
            t2: 4000,
            t4: 5000,
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J, L and M.
    fn t1x64(&self) -> Time {
        self.t1.saturating_mul(64)
    }

    /// Timer D is "at least 32 s" so that it outlasts the server's
    /// retransmissions of the final response (64*T1 with the server's T1).
    fn timer_d(&self) -> Time {
        self.t1x64().max(32_000)
    }

    /// A zero interval would make a retransmission timer fire forever at
    /// the same instant.
    fn first_interval(&self) -> Time {
        self.t1.max(1)
    }

    fn max_interval(&self) -> Time {
        self.t2.max(1)
    }
}

/// Identifies a transaction of this layer (client or server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

/// What the TU must know about.
#[derive(Debug)]
pub enum Event {
    /// A new request from the network created a server transaction; the TU must answer it with `respond`.
    /// For a CANCEL, `cancels` is the INVITE server transaction it matches (same branch, sent-by), if any.
    Request {
        id: TxnId,
        request: Request,
        source: Peer,
        cancels: Option<TxnId>,
    },
    /// An ACK that matched no INVITE server transaction in Completed state (an ACK for a 2xx, end to end):
    /// the TU forwards it statelessly. ACKs for non-2xx finals are absorbed by the layer.
    Ack { request: Request, source: Peer },
    /// A response for a client transaction: provisional and final, retransmissions of finals filtered;
    /// for INVITE, further 2xx in the Accepted state (RFC 6026) are passed up again.
    Response { id: TxnId, response: Response },
    /// A response that matched no client transaction (e.g. a late 2xx retransmission): a proxy forwards 2xx upstream.
    StrayResponse { response: Response, source: Peer },
    /// Timer B or F fired: the TU acts as if a 408 had been received.
    Timeout { id: TxnId },
    /// The transaction is gone (for cleanup and metrics).
    Terminated { id: TxnId },
}

/// Bytes to send; the layer serialises once and re-sends the same bytes on retransmission.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub dest: Peer,
    pub bytes: Vec<u8>,
}

/// Why the layer refused a call from the TU.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("no active transaction {0:?}")]
    UnknownTransaction(TxnId),
    #[error("request has no top Via with a branch parameter")]
    MissingBranch,
    #[error("request has no valid CSeq")]
    MissingCSeq,
    #[error("CSeq method {cseq} differs from request method {method}")]
    CSeqMethodMismatch { method: String, cseq: String },
    #[error("ACK is not sent in a transaction of its own")]
    AckIsNotATransaction,
    #[error("a client transaction with branch {branch} and method {method} already exists")]
    DuplicateTransaction { branch: String, method: String },
    #[error("status code {0} is outside 100-699")]
    InvalidStatus(u16),
    #[error("status code {code} cannot be sent in state {state}")]
    InvalidForState { code: u16, state: &'static str },
}

/// Transaction ids are sequential; a multiplicative mix spreads them over
/// the whole hash (the table uses the high bits), and since the layer
/// chooses them, no one can aim collisions at them the way they can at
/// branch strings (which keep the default, keyed hasher).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<TxnId, V, BuildHasherDefault<IdHasher>>;

/// The transaction layer: every client and server transaction of one
/// element, their timers, and the queues of output for the shell and TU.
pub struct TransactionLayer {
    config: TimerConfig,
    next_id: u64,
    // Boxed: tens of thousands of transactions a second wait for Timer J
    // (32 s over UDP), so these tables hold millions of entries under load;
    // growing a table moves every slot at once on the engine's thread, and
    // inline transactions (hundreds of bytes each) made that a stall of
    // hundreds of milliseconds, long enough to overflow the UDP socket.
    servers: IdMap<Box<ServerTxn>>,
    clients: IdMap<Box<ClientTxn>>,
    /// Server transactions by top Via branch (RFC 3261 matching); the few
    /// transactions sharing a branch (INVITE, its CANCEL) are told apart by
    /// sent-by and method.
    ///
    /// Keyed by a keyed hash of the branch, computed once per request, so that
    /// growing this table (millions of entries under load, see `servers`) moves
    /// fixed-size slots without hashing every branch string again. Entries
    /// whose branches collide share a slot; matching compares the branch itself.
    server_branches: HashMap<u64, BranchSlot, BuildHasherDefault<IdHasher>>,
    /// The key of `server_branches`' hash: random per layer, so that peers
    /// cannot choose branches that collide.
    branch_hash: RandomState,
    /// Server transactions created by requests without the magic cookie.
    server_legacy: HashMap<LegacyKey, TxnId>,
    /// Client transactions by branch, then CSeq method.
    client_branches: HashMap<String, Vec<TxnId>>,
    timers: TimerHeap,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
}

impl TransactionLayer {
    pub fn new(config: TimerConfig) -> Self {
        TransactionLayer {
            config,
            next_id: 1,
            servers: IdMap::default(),
            clients: IdMap::default(),
            server_branches: HashMap::default(),
            branch_hash: RandomState::new(),
            server_legacy: HashMap::new(),
            client_branches: HashMap::new(),
            timers: TimerHeap::default(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        }
    }

    /// The timer values this layer runs with.
    pub fn config(&self) -> TimerConfig {
        self.config
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some((at, id, timer)) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if timer.is_client() {
                self.fire_client(now, at, id, timer);
            } else {
                self.fire_server(now, at, id, timer);
            }
        }
        self.purge_timers();
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Earliest pending timer.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.peek().map(|(at, _, _)| at)
    }

    /// Active transactions (server, client) for metrics.
    pub fn counts(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// Queues bytes that belong to no transaction (an ACK for a 2xx, a
    /// stateless response), so the shell has a single output queue.
    pub fn send_stateless(&mut self, dest: Peer, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { dest, bytes });
    }

    fn alloc_id(&mut self) -> TxnId {
        let id = TxnId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Next deadline of a retransmission timer that fired at `at`: counted
    /// from the deadline so that retransmissions keep their exact schedule,
    /// but never in the past, so a late wake-up does not cause a burst.
    fn next_deadline(at: Time, now: Time, interval: Time) -> Time {
        let next = at.saturating_add(interval);
        if next > now {
            next
        } else {
            now.saturating_add(interval)
        }
    }

    /// Drops cancelled entries from the top of the heap so that
    /// [`poll_timeout`](Self::poll_timeout) reports a real deadline.
    fn purge_timers(&mut self) {
        while let Some((at, id, timer)) = self.timers.peek() {
            let live = if timer.is_client() {
                self.clients
                    .get(&id)
                    .is_some_and(|t| t.deadlines.get(timer) == at)
            } else {
                self.servers
                    .get(&id)
                    .is_some_and(|t| t.deadlines.get(timer) == at)
            };
            if live {
                break;
            }
            self.timers.pop();
        }
    }
}

/// The server transactions whose branches hash to one slot of
/// `server_branches`: nearly always one, held inline (a `Vec` per slot was
/// an allocation per transaction); an INVITE and its CANCEL, or a hash
/// collision, make more.
#[derive(Debug)]
enum BranchSlot {
    One(TxnId),
    Many(Vec<TxnId>),
}

impl BranchSlot {
    fn push(&mut self, id: TxnId) {
        match self {
            BranchSlot::Many(ids) => ids.push(id),
            BranchSlot::One(first) => *self = BranchSlot::Many(vec![*first, id]),
        }
    }

    fn iter(&self) -> impl Iterator<Item = TxnId> + '_ {
        let (one, many) = match self {
            BranchSlot::One(id) => (Some(*id), &[][..]),
            BranchSlot::Many(ids) => (None, &ids[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }

    /// Removes `id`; true if the slot is empty now.
    fn remove(&mut self, id: TxnId) -> bool {
        match self {
            BranchSlot::One(first) => *first == id,
            BranchSlot::Many(ids) => {
                ids.retain(|&i| i != id);
                if let [only] = ids[..] {
                    *self = BranchSlot::One(only);
                    false
                } else {
                    ids.is_empty()
                }
            }
        }
    }
}

/// Removes `id` from a branch index.
fn unindex<K, Q, S>(index: &mut HashMap<K, Vec<TxnId>, S>, branch: &Q, id: TxnId)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
    S: BuildHasher,
{
    if let Some(ids) = index.get_mut(branch) {
        ids.retain(|&i| i != id);
        if ids.is_empty() {
            index.remove(branch);
        }
    }
}
