//! Simulation harness for the engine: the node at 127.0.0.1:5060, scripted
//! user agents at other 127.0.0.1 ports, a network that routes every
//! datagram to the owner of its destination address (optionally losing some,
//! from a seeded generator), and a clock that only moves when the harness
//! jumps it to the next wake-up. Nothing sleeps.
//!
//! The user agents are written here, not on top of `dots-txn`: they build
//! requests as text, parse what the engine sends them with
//! [`parse_datagram`], and do the few retransmissions RFC 3261 asks of a UA
//! over UDP (Timers A, E and G, and the 2xx retransmission of §13.3.1.4).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use dots_proxy::{Engine, EngineConfig};
use dots_registrar::{answer_challenge, hash_password, Credentials};
use dots_sip::syntax::split_list;
use dots_sip::{
    parse_datagram, HeaderName, Message, Method, NameAddr, Peer, Request, Response, SipMessage,
    TransportKind, Uri, Via,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Simulated wall clock at the start of every test (ms since the epoch).
pub const T0: u64 = 1_700_000_000_000;
pub const NODE: &str = "127.0.0.1:5060";
/// The Record-Route value the node inserts for UDP in and out.
pub const NODE_RR: &str = "<sip:127.0.0.1:5060;lr>";
pub const T1: u64 = 500;
pub const T2: u64 = 4000;

pub fn node_addr() -> SocketAddr {
    NODE.parse().unwrap()
}

pub fn udp(addr: SocketAddr) -> Peer {
    Peer::new(TransportKind::Udp, addr)
}

/// An engine configuration for the node, open or not.
pub fn config(open: bool) -> EngineConfig {
    let mut c = EngineConfig::for_addr(node_addr());
    c.open = open;
    c
}

/// Accounts table with `hash_password(user, "dots", pw)`.
pub fn accounts(users: &[(&str, &str)]) -> HashMap<String, Credentials> {
    users
        .iter()
        .map(|(u, p)| (u.to_string(), hash_password(u, "dots", p)))
        .collect()
}

// ----- messages ---------------------------------------------------------------

/// The CSeq method of a message.
pub fn cseq_method(msg: &impl SipMessage) -> Method {
    msg.cseq().expect("message has a CSeq").method
}

pub fn branch_of(msg: &impl SipMessage) -> String {
    msg.top_via()
        .and_then(|v| v.branch().map(str::to_string))
        .expect("message has a top Via with a branch")
}

pub fn header(msg: &impl SipMessage, name: HeaderName) -> Option<&str> {
    msg.headers().get(name)
}

pub fn headers_all(msg: &impl SipMessage, name: HeaderName) -> Vec<String> {
    msg.headers()
        .get_all(name)
        .flat_map(|v| split_list(v).unwrap_or_else(|| vec![v]))
        .map(|v| v.trim().to_string())
        .collect()
}

pub fn to_tag(msg: &impl SipMessage) -> Option<String> {
    msg.to().and_then(|t| t.tag().map(str::to_string))
}

/// Where a response goes: received/rport of the top Via, else its sent-by.
fn via_dest(via: &Via) -> SocketAddr {
    let host = via
        .param("received")
        .flatten()
        .unwrap_or(&via.host)
        .to_string();
    let port = via
        .param("rport")
        .flatten()
        .and_then(|p| p.parse().ok())
        .or(via.port)
        .unwrap_or(5060);
    SocketAddr::new(host.parse().expect("IP literal in Via"), port)
}

/// Where a request for `uri` goes (IP literals only).
fn uri_dest(uri: &Uri) -> SocketAddr {
    SocketAddr::new(
        uri.host.parse().expect("IP literal in URI"),
        uri.port.unwrap_or(5060),
    )
}

// ----- user agents ------------------------------------------------------------

/// A request a UA is about to send, as editable fields; serialised as text.
#[derive(Debug, Clone)]
pub struct Draft {
    pub method: String,
    pub ruri: String,
    pub via: String,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    pub max_forwards: Option<u32>,
    pub contact: Option<String>,
    /// Extra header lines, without CRLF.
    pub headers: Vec<String>,
    pub body: String,
}

impl Draft {
    pub fn header(mut self, line: impl Into<String>) -> Draft {
        self.headers.push(line.into());
        self
    }

    pub fn max_forwards(mut self, n: Option<u32>) -> Draft {
        self.max_forwards = n;
        self
    }

    pub fn text(&self) -> String {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.ruri);
        s += &format!("Via: {}\r\n", self.via);
        if let Some(n) = self.max_forwards {
            s += &format!("Max-Forwards: {n}\r\n");
        }
        s += &format!("From: {}\r\n", self.from);
        s += &format!("To: {}\r\n", self.to);
        s += &format!("Call-ID: {}\r\n", self.call_id);
        s += &format!("CSeq: {} {}\r\n", self.cseq, self.method);
        if let Some(c) = &self.contact {
            s += &format!("Contact: {c}\r\n");
        }
        for h in &self.headers {
            s += h;
            s += "\r\n";
        }
        s += &format!("Content-Length: {}\r\n\r\n{}", self.body.len(), self.body);
        s
    }
}

/// What a UAC knows of a dialog it established (RFC 3261 §12.1.2).
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local: String,
    pub remote: String,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub cseq: u32,
}

/// A received message, with the time it arrived.
#[derive(Debug, Clone)]
pub struct Rx {
    pub at: u64,
    pub msg: Message,
    /// A request already seen (same branch and method).
    pub retransmission: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RetransKey {
    /// A client request, until a response (INVITE) or a final (others).
    Request { branch: String, method: Method },
    /// A final response to an INVITE, until the ACK.
    Final { call_id: String, cseq: u32 },
}

#[derive(Debug, Clone)]
struct Retrans {
    key: RetransKey,
    dest: SocketAddr,
    bytes: Vec<u8>,
    next: u64,
    interval: u64,
    cap: u64,
    deadline: u64,
}

/// A scripted user agent.
pub struct Ua {
    pub user: String,
    pub domain: String,
    pub addr: SocketAddr,
    pub inbox: Vec<Rx>,
    /// Responses sent at once to a new INVITE (e.g. `[180, 200]`, `[]`).
    pub on_invite: Vec<u16>,
    /// Final response to other requests (MESSAGE, BYE, OPTIONS, ...).
    pub on_request: u16,
    /// Answer CANCEL with 200 and the INVITE with 487.
    pub answers_cancel: bool,
    /// Retransmit requests and INVITE finals as RFC 3261 asks over UDP.
    pub retransmits: bool,
    pub dialogs: Vec<Dialog>,
    tag: String,
    counter: u64,
    cseq: u32,
    /// (branch, method) of each request received → last response sent.
    answered: HashMap<(String, Method), Option<Vec<u8>>>,
    /// INVITEs received without a final response yet.
    pending: Vec<Request>,
    /// Requests sent, by (branch, method).
    sent: HashMap<(String, Method), (Request, SocketAddr)>,
    timers: Vec<Retrans>,
    out: Vec<(SocketAddr, Vec<u8>)>,
}

impl Ua {
    pub fn new(user: &str, domain: &str, port: u16) -> Ua {
        Ua {
            user: user.into(),
            domain: domain.into(),
            addr: SocketAddr::new([127, 0, 0, 1].into(), port),
            inbox: Vec::new(),
            on_invite: vec![180, 200],
            on_request: 200,
            answers_cancel: true,
            retransmits: true,
            dialogs: Vec::new(),
            tag: format!("{user}-{port}"),
            counter: 0,
            cseq: 0,
            answered: HashMap::new(),
            pending: Vec::new(),
            sent: HashMap::new(),
            timers: Vec::new(),
            out: Vec::new(),
        }
    }

    /// `sip:user@127.0.0.1:port`: where this UA is reached.
    pub fn contact_uri(&self) -> String {
        format!("sip:{}@{}", self.user, self.addr)
    }

    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn new_via(&mut self) -> String {
        let n = self.next_id();
        format!(
            "SIP/2.0/UDP {};branch=z9hG4bK{}x{n};rport",
            self.addr, self.user
        )
    }

    /// A new out-of-dialog request from this UA.
    pub fn draft(&mut self, method: &str, ruri: &str, to: &str) -> Draft {
        let via = self.new_via();
        let n = self.next_id();
        self.cseq += 1;
        let contact = matches!(method, "INVITE" | "REGISTER" | "SUBSCRIBE")
            .then(|| format!("<{}>", self.contact_uri()));
        Draft {
            method: method.into(),
            ruri: ruri.into(),
            via,
            from: format!("<{}>;tag={}", self.aor(), self.tag),
            to: to.into(),
            call_id: format!("{}-{n}@test", self.user),
            cseq: self.cseq,
            max_forwards: Some(70),
            contact,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// A REGISTER of this UA's contact for its AOR, at the node.
    pub fn register_draft(&mut self, expires: u32) -> Draft {
        let aor = self.aor();
        let domain = self.domain.clone();
        self.draft("REGISTER", &format!("sip:{domain}"), &format!("<{aor}>"))
            .header(format!("Expires: {expires}"))
    }

    /// The same request again (same Call-ID, From, To), next CSeq, new
    /// branch: what a UA sends after a challenge.
    pub fn follow_up(&mut self, prev: &Draft) -> Draft {
        let mut d = prev.clone();
        d.via = self.new_via();
        self.cseq = self.cseq.max(prev.cseq) + 1;
        d.cseq = self.cseq;
        d
    }

    /// A request inside a dialog this UA established as caller.
    pub fn in_dialog(&mut self, dialog: usize, method: &str) -> Draft {
        let via = self.new_via();
        let d = &mut self.dialogs[dialog];
        d.cseq += 1;
        let mut draft = Draft {
            method: method.into(),
            ruri: d.remote_target.clone(),
            via,
            from: d.local.clone(),
            to: d.remote.clone(),
            call_id: d.call_id.clone(),
            cseq: d.cseq,
            max_forwards: Some(70),
            contact: None,
            headers: Vec::new(),
            body: String::new(),
        };
        for r in &d.route_set {
            draft.headers.push(format!("Route: {r}"));
        }
        draft
    }

    /// CANCEL for an INVITE this UA sent (RFC 3261 §9.1).
    pub fn cancel_draft(&self, invite: &Request) -> Draft {
        let mut d = Draft {
            method: "CANCEL".into(),
            ruri: invite.uri.to_string(),
            via: invite.headers.get(HeaderName::Via).unwrap().to_string(),
            from: invite.headers.get(HeaderName::From).unwrap().to_string(),
            to: invite.headers.get(HeaderName::To).unwrap().to_string(),
            call_id: invite.call_id().unwrap().to_string(),
            cseq: invite.cseq().unwrap().seq,
            max_forwards: Some(70),
            contact: None,
            headers: Vec::new(),
            body: String::new(),
        };
        for r in invite.headers.get_all(HeaderName::Route) {
            d.headers.push(format!("Route: {r}"));
        }
        d
    }

    /// Sends a request: to its first Route if any, else to the node (the
    /// UA's outbound proxy).
    pub fn send(&mut self, now: u64, draft: &Draft) -> Request {
        let text = draft.text();
        let req = match parse_datagram(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("test request does not parse: {other:?}\n{text}"),
        };
        let dest = match req.headers.get(HeaderName::Route) {
            Some(r) => uri_dest(&NameAddr::parse(r).expect("Route parses").uri),
            None => node_addr(),
        };
        self.send_raw(now, req.clone(), dest);
        req
    }

    fn send_raw(&mut self, now: u64, req: Request, dest: SocketAddr) {
        let bytes = req.to_bytes();
        let key = (branch_of(&req), req.method.clone());
        if req.method != Method::Ack {
            if self.retransmits {
                let invite = req.method == Method::Invite;
                self.timers.push(Retrans {
                    key: RetransKey::Request {
                        branch: key.0.clone(),
                        method: key.1.clone(),
                    },
                    dest,
                    bytes: bytes.clone(),
                    next: now + T1,
                    interval: T1,
                    cap: if invite { u64::MAX } else { T2 },
                    deadline: now + 64 * T1,
                });
            }
            self.sent.insert(key, (req, dest));
        }
        self.out.push((dest, bytes));
    }

    /// Puts raw bytes on the wire, as they are.
    pub fn push_raw(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.out.push((to, bytes));
    }

    /// Answers the oldest INVITE still without a final response.
    pub fn answer(&mut self, now: u64, code: u16) {
        let inv = self.pending.first().cloned().expect("an INVITE to answer");
        self.respond(now, &inv, code);
    }

    fn respond(&mut self, now: u64, req: &Request, code: u16) {
        let mut resp = req.make_response(code, None);
        if code > 100 {
            resp.ensure_to_tag(&self.tag);
        }
        let invite = req.method == Method::Invite;
        if invite && code > 100 && code < 300 {
            resp.headers
                .push(HeaderName::Contact, format!("<{}>", self.contact_uri()));
            for rr in req.headers.get_all(HeaderName::RecordRoute) {
                resp.headers.push(HeaderName::RecordRoute, rr.to_string());
            }
        }
        let via = req.top_via().expect("request has a Via");
        let dest = via_dest(&via);
        let bytes = resp.to_bytes();
        self.answered
            .insert((branch_of(req), req.method.clone()), Some(bytes.clone()));
        if invite && code >= 200 {
            self.pending.retain(|p| branch_of(p) != branch_of(req));
            if self.retransmits {
                self.timers.push(Retrans {
                    key: RetransKey::Final {
                        call_id: req.call_id().unwrap().to_string(),
                        cseq: req.cseq().unwrap().seq,
                    },
                    dest,
                    bytes: bytes.clone(),
                    next: now + T1,
                    interval: T1,
                    cap: T2,
                    deadline: now + 64 * T1,
                });
            }
        }
        self.out.push((dest, bytes));
    }

    fn receive(&mut self, now: u64, msg: Message) {
        match msg {
            Message::Request(req) => self.on_request(now, req),
            Message::Response(resp) => self.on_response(now, resp),
        }
    }

    fn on_request(&mut self, now: u64, req: Request) {
        let key = (branch_of(&req), req.method.clone());
        if req.method == Method::Ack {
            let call_id = req.call_id().unwrap_or_default().to_string();
            let seq = req.cseq().map(|c| c.seq).unwrap_or_default();
            self.timers.retain(|t| {
                t.key
                    != RetransKey::Final {
                        call_id: call_id.clone(),
                        cseq: seq,
                    }
            });
            let seen = self.answered.insert(key, None).is_some();
            self.inbox.push(Rx {
                at: now,
                msg: Message::Request(req),
                retransmission: seen,
            });
            return;
        }
        if let Some(last) = self.answered.get(&key) {
            // A retransmission: answer it as before.
            if let Some(bytes) = last.clone() {
                let dest = via_dest(&req.top_via().unwrap());
                self.out.push((dest, bytes));
            }
            self.inbox.push(Rx {
                at: now,
                msg: Message::Request(req),
                retransmission: true,
            });
            return;
        }
        self.answered.insert(key, None);
        self.inbox.push(Rx {
            at: now,
            msg: Message::Request(req.clone()),
            retransmission: false,
        });
        match req.method {
            Method::Invite => {
                self.pending.push(req.clone());
                for code in self.on_invite.clone() {
                    self.respond(now, &req, code);
                }
            }
            Method::Cancel => {
                let branch = branch_of(&req);
                let invite = self
                    .answered
                    .contains_key(&(branch.clone(), Method::Invite));
                if !invite {
                    return self.respond(now, &req, 481);
                }
                if !self.answers_cancel {
                    return;
                }
                self.respond(now, &req, 200);
                if let Some(inv) = self
                    .pending
                    .iter()
                    .find(|p| branch_of(*p) == branch)
                    .cloned()
                {
                    self.respond(now, &inv, 487);
                }
            }
            _ => {
                let code = self.on_request;
                self.respond(now, &req, code);
            }
        }
    }

    fn on_response(&mut self, now: u64, resp: Response) {
        self.inbox.push(Rx {
            at: now,
            msg: Message::Response(resp.clone()),
            retransmission: false,
        });
        let branch = branch_of(&resp);
        let method = cseq_method(&resp);
        if resp.code >= 200 || method == Method::Invite {
            self.timers.retain(|t| {
                t.key
                    != RetransKey::Request {
                        branch: branch.clone(),
                        method: method.clone(),
                    }
            });
        }
        if method != Method::Invite || resp.code < 200 {
            return;
        }
        let Some((invite, dest)) = self.sent.get(&(branch, Method::Invite)).cloned() else {
            return;
        };
        if resp.code >= 300 {
            // §17.1.1.3: the ACK for a non-2xx final, hop by hop.
            let mut text = format!("ACK {} SIP/2.0\r\n", invite.uri);
            text += &format!("Via: {}\r\n", invite.headers.get(HeaderName::Via).unwrap());
            for r in invite.headers.get_all(HeaderName::Route) {
                text += &format!("Route: {r}\r\n");
            }
            text += "Max-Forwards: 70\r\n";
            text += &format!(
                "From: {}\r\n",
                invite.headers.get(HeaderName::From).unwrap()
            );
            text += &format!("To: {}\r\n", resp.headers.get(HeaderName::To).unwrap());
            text += &format!("Call-ID: {}\r\n", invite.call_id().unwrap());
            text += &format!("CSeq: {} ACK\r\n", invite.cseq().unwrap().seq);
            text += "Content-Length: 0\r\n\r\n";
            self.out.push((dest, text.into_bytes()));
            return;
        }
        // §13.2.2.4: a 2xx creates the dialog; ACK it end to end, to the
        // first element of the route set.
        let remote = resp.headers.get(HeaderName::To).unwrap().to_string();
        let remote_target = resp
            .headers
            .get(HeaderName::Contact)
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|na| na.uri.to_string())
            .expect("2xx to INVITE has a Contact");
        let mut route_set = headers_all(&resp, HeaderName::RecordRoute);
        route_set.reverse();
        let idx = match self
            .dialogs
            .iter()
            .position(|d| d.call_id == invite.call_id().unwrap() && d.remote == remote)
        {
            Some(i) => i,
            None => {
                self.dialogs.push(Dialog {
                    call_id: invite.call_id().unwrap().to_string(),
                    local: invite.headers.get(HeaderName::From).unwrap().to_string(),
                    remote,
                    remote_target,
                    route_set,
                    cseq: invite.cseq().unwrap().seq,
                });
                self.dialogs.len() - 1
            }
        };
        let seq = invite.cseq().unwrap().seq;
        let mut ack = self.in_dialog(idx, "ACK");
        self.dialogs[idx].cseq -= 1;
        ack.cseq = seq;
        let req = match parse_datagram(ack.text().as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("ACK does not parse: {other:?}"),
        };
        let dest = match req.headers.get(HeaderName::Route) {
            Some(r) => uri_dest(&NameAddr::parse(r).unwrap().uri),
            None => uri_dest(&req.uri),
        };
        self.send_raw(now, req, dest);
    }

    fn next_timer(&self) -> Option<u64> {
        self.timers.iter().map(|t| t.next).min()
    }

    fn on_timer(&mut self, now: u64) {
        let mut out = Vec::new();
        self.timers.retain_mut(|t| {
            if t.next > now {
                return true;
            }
            if t.next > t.deadline {
                return false;
            }
            out.push((t.dest, t.bytes.clone()));
            t.interval = (t.interval * 2).min(t.cap);
            t.next = now + t.interval;
            true
        });
        self.out.extend(out);
    }

    // ----- what the UA saw ------------------------------------------------------

    /// New requests received with this method (retransmissions left out).
    pub fn requests(&self, method: Method) -> Vec<&Request> {
        self.inbox
            .iter()
            .filter(|rx| !rx.retransmission)
            .filter_map(|rx| match &rx.msg {
                Message::Request(r) if r.method == method => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Every received copy of requests with this method, with arrival times.
    pub fn request_copies(&self, method: Method) -> Vec<(u64, &Request)> {
        self.inbox
            .iter()
            .filter_map(|rx| match &rx.msg {
                Message::Request(r) if r.method == method => Some((rx.at, r)),
                _ => None,
            })
            .collect()
    }

    /// Responses received for requests of this method, in order.
    pub fn responses(&self, method: Method) -> Vec<&Response> {
        self.responses_at(method)
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    pub fn responses_at(&self, method: Method) -> Vec<(u64, &Response)> {
        self.inbox
            .iter()
            .filter_map(|rx| match &rx.msg {
                Message::Response(r) if cseq_method(r) == method => Some((rx.at, r)),
                _ => None,
            })
            .collect()
    }

    /// Codes of the responses received for this method.
    pub fn codes(&self, method: Method) -> Vec<u16> {
        self.responses(method).iter().map(|r| r.code).collect()
    }

    /// Distinct final responses (by code and To tag) for this method.
    pub fn finals(&self, method: Method) -> Vec<&Response> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for r in self.responses(method) {
            if r.code < 200 {
                continue;
            }
            let key = (r.code, to_tag(r), r.cseq().map(|c| c.seq));
            if !seen.contains(&key) {
                seen.push(key);
                out.push(r);
            }
        }
        out
    }

    pub fn last_response(&self, method: Method) -> &Response {
        self.responses(method.clone())
            .last()
            .copied()
            .unwrap_or_else(|| panic!("{} got no response to {method}", self.user))
    }
}

// ----- the simulation ---------------------------------------------------------

/// One datagram as the network saw it.
#[derive(Debug, Clone)]
pub struct Packet {
    pub at: u64,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Index of a UA in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UaId(pub usize);

pub struct Sim {
    pub engine: Engine,
    pub now: u64,
    pub uas: Vec<Ua>,
    queue: VecDeque<Packet>,
    loss: Option<(StdRng, f64)>,
    /// Every datagram delivered.
    pub wire: Vec<Packet>,
    /// Datagrams dropped by the lossy network.
    pub lost: usize,
    /// Datagrams to an address nobody owns.
    pub undeliverable: Vec<Packet>,
}

/// More datagrams than any test needs at one instant: a forwarding loop.
const MAX_DELIVERIES_PER_INSTANT: usize = 20_000;

impl Sim {
    pub fn new(config: EngineConfig) -> Sim {
        Sim {
            engine: Engine::new(config, 7),
            now: T0,
            uas: Vec::new(),
            queue: VecDeque::new(),
            loss: None,
            wire: Vec::new(),
            lost: 0,
            undeliverable: Vec::new(),
        }
    }

    /// A node that needs no authentication.
    pub fn open() -> Sim {
        Sim::new(config(true))
    }

    /// A node that authenticates its users, with these accounts.
    pub fn with_accounts(users: &[(&str, &str)]) -> Sim {
        let mut sim = Sim::new(config(false));
        sim.engine.set_accounts(accounts(users));
        sim
    }

    /// Drops each datagram with probability `p`, from a seeded generator.
    pub fn lossy(mut self, seed: u64, p: f64) -> Sim {
        self.loss = Some((StdRng::seed_from_u64(seed), p));
        self
    }

    /// A UA of the node's domain (127.0.0.1) listening on `port`.
    pub fn add_ua(&mut self, user: &str, port: u16) -> UaId {
        self.add_ua_in(user, "127.0.0.1", port)
    }

    pub fn add_ua_in(&mut self, user: &str, domain: &str, port: u16) -> UaId {
        self.uas.push(Ua::new(user, domain, port));
        UaId(self.uas.len() - 1)
    }

    pub fn ua(&self, id: UaId) -> &Ua {
        &self.uas[id.0]
    }

    pub fn ua_mut(&mut self, id: UaId) -> &mut Ua {
        &mut self.uas[id.0]
    }

    /// The UA sends a request; the network runs until nothing is in flight.
    pub fn send(&mut self, id: UaId, draft: &Draft) -> Request {
        let now = self.now;
        let req = self.uas[id.0].send(now, draft);
        self.settle();
        req
    }

    /// The UA answers its oldest pending INVITE.
    pub fn answer(&mut self, id: UaId, code: u16) {
        let now = self.now;
        self.uas[id.0].answer(now, code);
        self.settle();
    }

    /// Delivers everything in flight at the current instant.
    pub fn settle(&mut self) {
        let mut deliveries = 0;
        loop {
            self.collect();
            let Some(p) = self.queue.pop_front() else {
                break;
            };
            deliveries += 1;
            assert!(
                deliveries < MAX_DELIVERIES_PER_INSTANT,
                "messages bounce forever at t={}",
                self.now - T0
            );
            if let Some((rng, prob)) = &mut self.loss {
                if rng.random_bool(*prob) {
                    self.lost += 1;
                    continue;
                }
            }
            self.deliver(p);
        }
    }

    fn collect(&mut self) {
        let now = self.now;
        while let Some(t) = self.engine.poll_transmit() {
            assert_eq!(t.dest.transport, TransportKind::Udp, "UDP only here");
            self.queue.push_back(Packet {
                at: now,
                from: node_addr(),
                to: t.dest.addr,
                bytes: t.bytes,
            });
        }
        for ua in &mut self.uas {
            for (to, bytes) in ua.out.drain(..) {
                self.queue.push_back(Packet {
                    at: now,
                    from: ua.addr,
                    to,
                    bytes,
                });
            }
        }
    }

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        if p.to == node_addr() {
            self.wire.push(p.clone());
            match parse_datagram(&p.bytes) {
                Ok(msg) => self.engine.handle_message(now, msg, udp(p.from)),
                Err(e) => self.engine.handle_parse_error(now, e, udp(p.from)),
            }
            return;
        }
        let Some(ua) = self.uas.iter_mut().find(|u| u.addr == p.to) else {
            self.undeliverable.push(p);
            return;
        };
        self.wire.push(p.clone());
        let msg = parse_datagram(&p.bytes).unwrap_or_else(|e| {
            panic!(
                "the node sent something unparseable ({e}):\n{}",
                String::from_utf8_lossy(&p.bytes)
            )
        });
        ua.receive(now, msg);
    }

    /// The next instant anything wants to run.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.uas
            .iter()
            .filter_map(Ua::next_timer)
            .chain(self.engine.poll_timeout())
            .min()
    }

    fn step_to(&mut self, t: u64) {
        self.now = t.max(self.now);
        let now = self.now;
        if self.engine.poll_timeout().is_some_and(|e| e <= now) {
            self.engine.handle_timeout(now);
        }
        for ua in &mut self.uas {
            ua.on_timer(now);
        }
        self.settle();
    }

    /// Moves the clock `ms` forward, firing every timer due on the way.
    pub fn advance(&mut self, ms: u64) {
        self.settle();
        let target = self.now + ms;
        let mut steps = 0;
        while let Some(t) = self.next_wakeup().filter(|t| *t <= target) {
            steps += 1;
            assert!(
                steps < 100_000,
                "timers fire forever at t={}",
                self.now - T0
            );
            self.step_to(t);
        }
        self.now = target;
    }

    /// Jumps from wake-up to wake-up until `done` holds; false if it still
    /// does not after `max_ms` simulated milliseconds.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        self.settle();
        let limit = self.now + max_ms;
        while !done(self) {
            match self.next_wakeup() {
                Some(t) if t <= limit => self.step_to(t),
                _ => return false,
            }
        }
        true
    }

    /// Nothing in flight, no transaction left, no UA retransmitting.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self.engine.transactions() == (0, 0)
            && self.uas.iter().all(|u| u.timers.is_empty())
    }

    /// Jumps from wake-up to wake-up until the node and the UAs are idle
    /// (at most ten simulated minutes).
    pub fn run_until_idle(&mut self) {
        self.settle();
        let start = self.now;
        while !self.is_idle() {
            let t = self
                .next_wakeup()
                .expect("transactions left but no timer to end them");
            assert!(
                t - start <= 600_000,
                "not idle after 10 simulated minutes: {:?} transactions",
                self.engine.transactions()
            );
            self.step_to(t);
        }
    }

    /// Datagrams the node sent to `to`, parsed.
    pub fn sent_to(&self, to: SocketAddr) -> Vec<Message> {
        self.wire
            .iter()
            .filter(|p| p.from == node_addr() && p.to == to)
            .map(|p| parse_datagram(&p.bytes).unwrap())
            .collect()
    }

    // ----- common flows -------------------------------------------------------

    /// REGISTERs the UA's contact (open node) and checks the 200.
    pub fn register(&mut self, id: UaId, expires: u32) -> Response {
        let d = self.uas[id.0].register_draft(expires);
        self.send(id, &d);
        let resp = self.ua(id).last_response(Method::Register).clone();
        assert_eq!(resp.code, 200, "REGISTER of {}", self.ua(id).user);
        resp
    }

    /// REGISTER answered with `answer_challenge` after the 401.
    pub fn register_auth(&mut self, id: UaId, password: &str) -> Response {
        let first = self.uas[id.0].register_draft(3600);
        self.send(id, &first);
        let challenge = self.ua(id).last_response(Method::Register).clone();
        assert_eq!(challenge.code, 401);
        let wa = header(&challenge, HeaderName::WwwAuthenticate)
            .unwrap()
            .to_string();
        let user = self.ua(id).user.clone();
        let auth = answer_challenge(&wa, "REGISTER", &first.ruri, &user, password, "c0ffee", 1)
            .expect("challenge answerable");
        let second = self.uas[id.0]
            .follow_up(&first)
            .header(format!("Authorization: {auth}"));
        self.send(id, &second);
        self.ua(id).last_response(Method::Register).clone()
    }

    /// An INVITE from `caller` to `ruri` (To the same URI).
    pub fn invite(&mut self, caller: UaId, ruri: &str) -> Request {
        let d = self.uas[caller.0].draft("INVITE", ruri, &format!("<{ruri}>"));
        self.send(caller, &d)
    }
}
