//! # dots-ua: a SIP user agent core for DOTS
//!
//! The protocol side of `dots agent`: registration with key login (DOTS-Sig),
//! calls (INVITE, ACK, BYE, CANCEL, both directions) and pager-mode messages
//! (MESSAGE), on top of the transaction layer of `dots-txn` and the message
//! model of `dots-sip`. It is sans-I/O: no socket, no clock, no thread. The
//! shell feeds it what arrives and the current time, then drains what to send
//! ([`UserAgent::poll_transmit`]), what happened ([`UserAgent::poll_event`])
//! and when to wake it up ([`UserAgent::poll_timeout`]).
//!
//! ```
//! use dots_identity::Wallet;
//! use dots_sip::{Peer, TransportKind};
//! use dots_ua::{Config, Event, UserAgent};
//!
//! let wallet = Wallet::from_secret([7; 32], None);
//! let node = Peer::new(TransportKind::Udp, "192.0.2.1:5060".parse().unwrap());
//! let config = Config::new(&wallet.did(), "192.0.2.1", node, "192.0.2.7:5070".parse().unwrap());
//! let mut ua = UserAgent::new(config, wallet, 42);
//! let now = 1_700_000_000_000; // ms since the UNIX epoch, on a monotonic clock
//!
//! ua.register(now);
//! let out = ua.poll_transmit().unwrap();
//! assert_eq!(out.dest, node);
//! assert!(out.bytes.starts_with(b"REGISTER sip:192.0.2.1:5060 SIP/2.0\r\n"));
//!
//! // The node (in --open mode) answers 200: the shell passes the datagram in.
//! let text = String::from_utf8(out.bytes).unwrap();
//! let head = text.split("\r\n\r\n").next().unwrap();
//! let copied: Vec<&str> = head
//!     .lines()
//!     .filter(|l| ["Via:", "From:", "To:", "Call-ID:", "CSeq:", "Contact:"].iter().any(|h| l.starts_with(h)))
//!     .collect();
//! let ok = format!("SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n", copied.join("\r\n"));
//! ua.handle_datagram(now + 5, ok.as_bytes(), node);
//! assert!(matches!(ua.poll_event(), Some(Event::Registered { expires: 600, .. })));
//!
//! // The shell's loop: sleep until poll_timeout, then handle_timeout. The
//! // refresh goes out at half the lifetime.
//! let mut at = now;
//! while let Some(next) = ua.poll_timeout() {
//!     at = next;
//!     ua.handle_timeout(at);
//!     if let Some(out) = ua.poll_transmit() {
//!         assert!(out.bytes.starts_with(b"REGISTER "));
//!         break;
//!     }
//! }
//! assert_eq!(at, now + 5 + 300_000);
//! ```
//!
//! Time is milliseconds; the login signatures need it to be close to the UNIX
//! epoch, and the timers need it monotonic, so the shell passes its start time
//! plus a monotonic elapsed time.
//!
//! Every input from the network may be malformed or hostile: nothing a peer
//! sends makes the agent panic; what cannot be understood is logged (at debug
//! level) and dropped, or answered with an error status.

pub mod auth;
mod call;
mod message;
mod register;
pub mod sdp;
mod token;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use dots_identity::Wallet;
use dots_sip::{
    parse_datagram, HeaderName, Message, Method, Peer, Request, Response, Scheme, SipMessage,
    TransportKind, Uri,
};
use dots_txn::{Event as TxnEvent, TransactionLayer, TxnId};
pub use dots_txn::{Time, TimerConfig, Transmit};

pub use call::{CallRef, EndReason};
pub use message::MessageRef;
pub use register::RETRY_MS as REGISTRATION_RETRY_MS;

use call::Call;
use message::OutMessage;
use register::Registration;
use token::Tokens;

/// The methods the agent answers, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE";

/// What the agent is and where it talks.
#[derive(Debug, Clone)]
pub struct Config {
    /// The user part of the address of record and of the Contact: the DID's
    /// method-specific id (`z6Mk…`).
    pub user: String,
    /// The domain of the address of record: the node's host as the user named it.
    pub domain: String,
    /// The node: registrar, and outbound proxy for calls and messages.
    pub node: Peer,
    /// The local address written in Via and Contact (the address the shell's
    /// socket uses toward the node).
    pub local: SocketAddr,
    /// Registration lifetime asked for (s).
    pub expires: u32,
    /// The User-Agent and Server header value.
    pub user_agent: String,
    pub timers: TimerConfig,
}

impl Config {
    /// The configuration of the user `did` (`did:key:z6Mk…`) at the node
    /// `node_host` (the AOR's domain), reached at `node`, from `local`.
    pub fn new(did: &str, node_host: &str, node: Peer, local: SocketAddr) -> Config {
        Config {
            user: did.strip_prefix("did:key:").unwrap_or(did).to_string(),
            domain: node_host.to_ascii_lowercase(),
            node,
            local,
            expires: 600,
            user_agent: format!("dots-agent/{}", env!("CARGO_PKG_VERSION")),
            timers: TimerConfig::default(),
        }
    }

    /// `sip:<user>@<domain>`: the address of record.
    pub fn aor(&self) -> Uri {
        Uri::sip(Some(&self.user), &self.domain, None)
    }

    /// The Request-URI of REGISTER: the node's domain and port.
    pub fn registrar(&self) -> Uri {
        Uri::sip(None, &self.domain, Some(self.node.addr.port()))
    }

    /// The Contact URI: the user at the local address (with the transport
    /// when it is not UDP).
    pub fn contact_uri(&self) -> Uri {
        let mut uri = Uri::sip(
            Some(&self.user),
            &host_of(self.local.ip()),
            Some(self.local.port()),
        );
        if self.node.transport != TransportKind::Udp {
            uri.set_param("transport", Some(self.node.transport.uri_param()));
        }
        uri
    }
}

/// `a.b.c.d` or `[v6]`, as hosts are written in SIP.
pub fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    }
}

/// A final failure of a request: the status and reason phrase of the
/// response, or of the agent's own verdict (408 for no response at all), and
/// what the agent makes of it when it knows more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u16,
    pub reason: String,
    pub detail: Option<String>,
}

impl Failure {
    fn from_response(response: &Response) -> Failure {
        Failure {
            code: response.code,
            reason: printable(&response.reason),
            detail: None,
        }
    }

    fn local(code: u16, detail: String) -> Failure {
        Failure {
            code,
            reason: dots_sip::default_reason(code).to_string(),
            detail: Some(detail),
        }
    }

    fn with_detail(mut self, detail: impl Into<String>) -> Failure {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// Text from the network made fit for one line of output: control
/// characters become spaces, and it is cut at 200 characters.
pub fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

/// What happened, for the shell to act on or to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The node accepted the registration (`renewal`: a refresh of it).
    Registered {
        aor: String,
        contact: String,
        expires: u32,
        renewal: bool,
    },
    /// The binding was removed (REGISTER with Expires 0 accepted).
    Unregistered,
    /// A REGISTER (or unregistration) failed. While the agent wants to stay
    /// registered it tries again later by itself.
    RegistrationFailed {
        failure: Failure,
    },
    /// An INVITE arrived; the agent has answered 180 and waits for
    /// [`UserAgent::accept`] or [`UserAgent::reject`].
    IncomingCall {
        call: CallRef,
        call_id: String,
        from: String,
    },
    /// Our INVITE is ringing (the first 18x).
    Ringing {
        call: CallRef,
        code: u16,
    },
    /// The call is answered: our INVITE got a 2xx (and was ACKed), or we
    /// sent the 2xx to an incoming one.
    Answered {
        call: CallRef,
        call_id: String,
    },
    /// The call is over (or never started).
    CallEnded {
        call: CallRef,
        call_id: String,
        reason: EndReason,
    },
    /// A MESSAGE arrived (and was answered 200).
    MessageReceived {
        from: String,
        content_type: Option<String>,
        text: String,
    },
    MessageDelivered {
        message: MessageRef,
        code: u16,
    },
    MessageFailed {
        message: MessageRef,
        failure: Failure,
    },
}

/// Why the agent refused a call from the shell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UaError {
    #[error("no such call")]
    UnknownCall,
    #[error("the call is not waiting for an answer")]
    NotRinging,
}

/// A call target the user typed that is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?} is not an Ed25519 did:key (expected did:key:z6Mk…)")]
    BadDid(String),
    #[error("{0:?} is not a valid SIP URI: {1}")]
    BadUri(String, String),
    #[error("{0:?} is neither a sip: URI nor a did:key (expected sip:user@host or did:key:z6Mk…)")]
    Unknown(String),
}

/// The SIP URI of a target: a `sip:`/`sips:` URI as is, and a `did:key`
/// as `sip:<id>@<node>` where `<id>` is what follows `did:key:` and
/// `node` is the node's `host:port`, so that the node looks the user up.
pub fn target_uri(input: &str, node: &str) -> Result<Uri, TargetError> {
    let input = input.trim();
    if let Some(id) = input.strip_prefix("did:key:") {
        let valid = id.starts_with("z6Mk")
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric())
            && dots_records::public_from_did(input).is_some();
        if !valid {
            return Err(TargetError::BadDid(input.to_string()));
        }
        return Uri::parse(&format!("sip:{id}@{node}"))
            .map_err(|e| TargetError::BadUri(input.to_string(), e.to_string()));
    }
    let lower = input.get(..5).unwrap_or("").to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        let uri =
            Uri::parse(input).map_err(|e| TargetError::BadUri(input.to_string(), e.to_string()))?;
        if uri.host.is_empty() {
            return Err(TargetError::BadUri(input.to_string(), "no host".into()));
        }
        return Ok(uri);
    }
    Err(TargetError::Unknown(input.to_string()))
}

/// Why a client transaction was started, to route its responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Register,
    Invite(CallRef),
    Bye(CallRef),
    Message(MessageRef),
    /// A request whose outcome nobody waits for (BYE of a stray fork).
    Detached,
}

/// The user agent: one user, one node, any number of calls and messages.
pub struct UserAgent {
    cfg: Config,
    wallet: Wallet,
    txn: TransactionLayer,
    tokens: Tokens,
    contact: String,
    reg: Registration,
    calls: BTreeMap<CallRef, Call>,
    messages: BTreeMap<MessageRef, OutMessage>,
    clients: HashMap<TxnId, (Purpose, Peer)>,
    next_ref: u64,
    events: VecDeque<Event>,
}

impl UserAgent {
    /// A user agent for `wallet`'s identity; `seed` makes its branches, tags
    /// and Call-IDs (the shell passes a random one).
    pub fn new(cfg: Config, wallet: Wallet, seed: u64) -> UserAgent {
        let mut tokens = Tokens::new(seed);
        let contact = format!("<{}>", cfg.contact_uri());
        let reg = Registration::new(&mut tokens, cfg.expires);
        UserAgent {
            txn: TransactionLayer::new(cfg.timers),
            cfg,
            wallet,
            tokens,
            contact,
            reg,
            calls: BTreeMap::new(),
            messages: BTreeMap::new(),
            clients: HashMap::new(),
            next_ref: 1,
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The address of record, `sip:<id>@<node host>`.
    pub fn aor(&self) -> String {
        self.cfg.aor().to_string()
    }

    /// The Contact header value the agent registers and sends.
    pub fn contact(&self) -> &str {
        &self.contact
    }

    // ----- input ----------------------------------------------------------------

    /// A datagram arrived from `source` (any bytes: malformed ones are dropped).
    pub fn handle_datagram(&mut self, now: Time, bytes: &[u8], source: Peer) {
        match parse_datagram(bytes) {
            Ok(msg) => self.handle_message(now, msg, source),
            Err(e) => tracing::debug!(%source, error = %e, "dropping a malformed message"),
        }
    }

    /// A parsed message arrived from `source` (stream transports frame and
    /// parse themselves).
    pub fn handle_message(&mut self, now: Time, msg: Message, source: Peer) {
        match msg {
            Message::Request(req) => self.txn.handle_request(now, req, source),
            Message::Response(resp) => self.txn.handle_response(now, resp, source),
        }
        self.process(now);
    }

    /// Fires whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.txn.handle_timeout(now);
        self.process(now);
        self.registration_timers(now);
        self.call_timers(now);
        self.process(now);
    }

    /// The shell could not send to `dest`: what was waiting for it fails.
    pub fn transport_error(&mut self, now: Time, dest: Peer) {
        self.txn.transport_error(now, dest);
        self.process(now);
    }

    // ----- output ---------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.txn.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`UserAgent::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let calls = self.calls.values().filter_map(Call::next_timer).min();
        [self.txn.poll_timeout(), self.reg.next_timer(), calls]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- internals --------------------------------------------------------------

    fn alloc_ref(&mut self) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    /// A new out-of-dialog or in-dialog request with a fresh Via branch.
    fn new_request(
        &mut self,
        method: Method,
        uri: Uri,
        from: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
    ) -> Request {
        let mut req = Request::new(method, uri);
        let via = self.via();
        let h = &mut req.headers;
        h.push(HeaderName::Via, via);
        h.push(HeaderName::MaxForwards, "70");
        h.push(HeaderName::From, from);
        h.push(HeaderName::To, to);
        h.push(HeaderName::CallId, call_id);
        h.push(HeaderName::CSeq, format!("{cseq} {}", req.method));
        h.push(HeaderName::UserAgent, self.cfg.user_agent.clone());
        req
    }

    /// Our Via with a fresh branch (and rport: the node answers where the
    /// request came from, whatever NAT is in between).
    fn via(&mut self) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch={};rport",
            self.cfg.node.transport.via_name(),
            host_of(self.cfg.local.ip()),
            self.cfg.local.port(),
            self.tokens.branch()
        )
    }

    /// `req` again, answering the DOTS-Sig challenge of `resp` (401 or 407):
    /// a new branch and the next CSeq (RFC 3261 §22.2), the same Call-ID and
    /// tags.
    fn reauthorized(
        &mut self,
        now: Time,
        req: &Request,
        resp: &Response,
    ) -> Result<Request, Failure> {
        let Some((_, header)) = auth::challenge_headers(resp.code) else {
            return Err(Failure::from_response(resp));
        };
        let challenge = auth::pick_challenge(resp).map_err(|e| {
            Failure::from_response(resp).with_detail(auth::explain(&self.cfg.node, &e))
        })?;
        let mut req = req.clone();
        let seq = req.cseq().map_or(1, |c| c.seq.saturating_add(1));
        req.headers
            .set(HeaderName::CSeq, format!("{seq} {}", req.method));
        let via = self.via();
        req.headers.set(HeaderName::Via, via);
        auth::authorize(&self.wallet, &challenge, &mut req, header, now).map_err(|e| {
            Failure::from_response(resp).with_detail(format!("cannot answer the key login: {e}"))
        })?;
        Ok(req)
    }

    fn new_call_id(&mut self) -> String {
        format!("{}{}", self.tokens.hex(), self.tokens.hex())
    }

    /// Starts a client transaction; a request the layer refuses (which only
    /// a bug can build) is reported as a transport failure.
    fn send(&mut self, now: Time, req: Request, dest: Peer, purpose: Purpose) -> Option<TxnId> {
        match self.txn.send_request(now, req, dest) {
            Ok(id) => {
                self.clients.insert(id, (purpose, dest));
                Some(id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "request refused by the transaction layer");
                None
            }
        }
    }

    /// Where a request for `uri` goes: its host when that is an IP literal
    /// (or localhost), the node otherwise (it resolves names for us).
    fn resolve(&self, uri: &Uri) -> Peer {
        let transport = match uri.transport() {
            Some(t) => TransportKind::parse(&t).unwrap_or(self.cfg.node.transport),
            None if uri.scheme == Scheme::Sips => TransportKind::Tls,
            None => TransportKind::Udp,
        };
        let host = uri.host.trim_start_matches('[').trim_end_matches(']');
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else {
            host.parse().ok()
        };
        match ip {
            Some(ip) => {
                let default = if transport == TransportKind::Tls {
                    5061
                } else {
                    5060
                };
                Peer::new(transport, SocketAddr::new(ip, uri.port.unwrap_or(default)))
            }
            None => self.cfg.node,
        }
    }

    /// A response to `req` with our To tag (when it has none), and Server.
    fn response(&self, req: &Request, code: u16, tag: &str) -> Response {
        let mut resp = req.make_response(code, None);
        if code > 100 {
            resp.ensure_to_tag(tag);
        }
        resp.headers
            .push(HeaderName::Server, self.cfg.user_agent.clone());
        resp
    }

    fn respond(&mut self, now: Time, id: TxnId, resp: Response) {
        if let Err(e) = self.txn.respond(now, id, resp) {
            tracing::debug!(error = %e, "response not sent");
        }
    }

    fn process(&mut self, now: Time) {
        while let Some(ev) = self.txn.poll_event() {
            match ev {
                TxnEvent::Request {
                    id,
                    request,
                    source,
                    cancels,
                } => self.on_request(now, id, request, source, cancels),
                TxnEvent::Ack { request, .. } => self.on_ack(now, &request),
                TxnEvent::Response { id, response } => self.on_response(now, id, response),
                TxnEvent::StrayResponse { response, .. } => self.on_stray_response(now, response),
                TxnEvent::Timeout { id } => self.on_timeout(now, id),
                TxnEvent::Terminated { id } => {
                    self.clients.remove(&id);
                }
            }
        }
    }

    fn on_response(&mut self, now: Time, id: TxnId, response: Response) {
        let Some(&(purpose, _)) = self.clients.get(&id) else {
            return;
        };
        match purpose {
            Purpose::Register => self.on_register_response(now, id, &response),
            Purpose::Invite(call) => self.on_invite_response(now, call, id, response),
            Purpose::Bye(call) => {
                if response.code >= 200 {
                    self.end_call(call, EndReason::HungUp);
                }
            }
            Purpose::Message(m) => self.on_message_response(now, m, id, &response),
            Purpose::Detached => {}
        }
    }

    fn on_timeout(&mut self, now: Time, id: TxnId) {
        let Some((purpose, dest)) = self.clients.remove(&id) else {
            return;
        };
        let failure = Failure::local(
            408,
            format!(
                "no response from {dest} within {} s",
                self.cfg.timers.t1 * 64 / 1000
            ),
        );
        match purpose {
            Purpose::Register => self.registration_failed(now, id, failure),
            Purpose::Invite(call) => self.invite_failed(call, id, failure),
            Purpose::Bye(call) => self.end_call(call, EndReason::HungUp),
            Purpose::Message(m) => self.message_failed(m, id, failure),
            Purpose::Detached => {}
        }
    }

    fn on_request(
        &mut self,
        now: Time,
        id: TxnId,
        req: Request,
        source: Peer,
        cancels: Option<TxnId>,
    ) {
        let in_dialog = req.to().is_some_and(|t| t.tag().is_some());
        let tag = self.tokens.hex();
        // §8.2.2.3: the agent supports no extension; one it is required to
        // support is refused with 420 (never for CANCEL, §9.2).
        if req.method != Method::Cancel && req.headers.tokens(HeaderName::Require).next().is_some()
        {
            let unsupported: Vec<String> = req
                .headers
                .tokens(HeaderName::Require)
                .map(printable)
                .collect();
            let mut resp = self.response(&req, 420, &tag);
            resp.headers
                .push(HeaderName::Unsupported, unsupported.join(", "));
            return self.respond(now, id, resp);
        }
        match req.method {
            Method::Cancel => self.on_cancel(now, id, &req, cancels),
            _ if in_dialog => self.on_in_dialog_request(now, id, req, source),
            Method::Invite => self.on_invite(now, id, req, source),
            Method::Message => self.on_message(now, id, &req, &tag),
            Method::Options => {
                let mut resp = self.response(&req, 200, &tag);
                resp.headers.push(HeaderName::Allow, ALLOW);
                resp.headers
                    .push(HeaderName::Accept, "application/sdp, text/plain");
                self.respond(now, id, resp);
            }
            Method::Bye => {
                let resp = self.response(&req, 481, &tag);
                self.respond(now, id, resp);
            }
            Method::Other(_) => {
                let resp = self.response(&req, 501, &tag);
                self.respond(now, id, resp);
            }
            _ => {
                let mut resp = self.response(&req, 405, &tag);
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond(now, id, resp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
        let uri = target_uri(did, "127.0.0.1:5060").unwrap();
        assert_eq!(
            uri.to_string(),
            "sip:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK@127.0.0.1:5060"
        );
        assert_eq!(
            target_uri(" sip:bob@192.0.2.1:5070 ", "x:1")
                .unwrap()
                .to_string(),
            "sip:bob@192.0.2.1:5070"
        );
        assert!(target_uri("SIP:bob@h", "x:1").is_ok());
        assert!(matches!(
            target_uri("did:key:z6MkhaXg", "h:1"),
            Err(TargetError::BadDid(_))
        ));
        assert!(matches!(
            target_uri(
                "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
                "h:1"
            ),
            Err(TargetError::BadDid(_))
        ));
        assert!(matches!(
            target_uri("bob@h", "h:1"),
            Err(TargetError::Unknown(_))
        ));
        assert!(matches!(
            target_uri("sip:bob@", "h:1"),
            Err(TargetError::BadUri(..))
        ));
    }

    #[test]
    fn printable_is_one_line() {
        assert_eq!(printable("a\r\nb\tc"), "a  b c");
        let long = "x".repeat(300);
        assert_eq!(printable(&long).chars().count(), 201);
    }
}
