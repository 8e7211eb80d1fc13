//! The engine: one state machine that owns the transaction layer, the
//! registrar and the proxy logic of a node. The tokio shell feeds it parsed
//! messages and the time, and drains transmissions.

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use dots_registrar::{AuthOutcome, Binding, Change, Credentials, DigestAuth, Millis, Registrar};
use dots_sip::{
    HeaderName, Message, Method, NameAddr, ParseError, Peer, Request, Response, Scheme, SipMessage,
    TransportKind, Uri, Via,
};
use dots_txn::{Event, TransactionLayer, Transmit, TxnId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{EngineConfig, Listener};
use crate::flow::FlowTokens;
use crate::identity::{did_of_user, AccountOwner, KeyLogin};
use crate::overlay::{OverlayState, RemoteAttempt};
use crate::stats::Stats;

/// Methods the node accepts and forwards; sent in Allow.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, INFO, UPDATE, PRACK, REFER, SUBSCRIBE, NOTIFY";
/// Extensions the node supports; sent in Supported.
pub const SUPPORTED: &str = "path";

const BRANCH_MARK: &str = "z9hG4bK-d-";

/// A ringing INVITE (or any forwarded request) and its client branches.
#[derive(Debug)]
struct ProxyCall {
    method: Method,
    branches: Vec<ProxyBranch>,
    /// Best final response so far (code, response if one was received).
    best: Option<(u16, Option<Response>)>,
    final_sent: bool,
    cancelled: bool,
    /// Client transactions not yet terminated.
    active: usize,
    server_gone: bool,
    timer_c: Option<Millis>,
    /// When branches still without a final response after their CANCEL are
    /// given up (RFC 3261 §9.1: 64*T1 after the CANCEL).
    give_up_at: Option<Millis>,
    /// Set when the request went to another node because of a presence record.
    remote: Option<RemoteAttempt>,
}

#[derive(Debug)]
struct ProxyBranch {
    client: TxnId,
    final_code: Option<u16>,
}

/// Where a forwarded request goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) uri: Uri,
    pub(crate) dest: Peer,
    /// Route header values to put in front (a binding's Path).
    pub(crate) routes: Vec<String>,
}

/// The sans-I/O SIP node: registrar, authenticating stateful proxy and
/// transaction layer.
pub struct Engine {
    config: EngineConfig,
    local_hosts: HashSet<String>,
    local_ports: HashSet<u16>,
    canonical_domain: String,
    txn: TransactionLayer,
    pub(crate) registrar: Registrar,
    pub(crate) auth: DigestAuth,
    /// The latest key-login grant of each DID registered here.
    pub(crate) login_grants: HashMap<String, dots_records::Grant>,
    accounts: HashMap<String, Credentials>,
    /// Device accounts' owners, by user name.
    pub(crate) owners: HashMap<String, AccountOwner>,
    /// The longest-lasting delegation of each DID among `owners`: looked up on
    /// every registration change and re-publication, so not a scan of `owners`.
    pub(crate) delegations: HashMap<String, dots_records::Grant>,
    calls: HashMap<TxnId, ProxyCall>,
    branch_of: HashMap<TxnId, TxnId>,
    timer_c: BinaryHeap<Reverse<(Millis, TxnId)>>,
    out: VecDeque<Transmit>,
    stats: Stats,
    branch_prefix: String,
    counter: u64,
    rng: StdRng,
    /// Keys the To tags of stateless answers (see [`Engine::stateless_tag`]).
    tag_key: u64,
    /// The server transaction whose final answer is being sent statelessly
    /// ([`EngineConfig::stateless_register`]), while it is being answered.
    stateless: Option<TxnId>,
    pub(crate) overlay: OverlayState,
    /// Flow tokens in the Record-Route entries that face WebSocket clients.
    flows: FlowTokens,
}

impl Engine {
    /// Creates an engine. `seed` drives tags, branches and the nonce secret;
    /// the shell passes a random one, tests a fixed one.
    pub fn new(config: EngineConfig, seed: u64) -> Engine {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut local_hosts = HashSet::new();
        let mut local_ports = HashSet::new();
        for l in &config.listeners {
            local_hosts.insert(l.host().to_ascii_lowercase());
            local_hosts.insert(host_of_ip(l.addr.ip()));
            local_ports.insert(l.addr.port());
        }
        for d in &config.domains {
            local_hosts.insert(d.to_ascii_lowercase());
        }
        let canonical_domain = config
            .domains
            .first()
            .cloned()
            .or_else(|| config.listeners.first().map(Listener::host))
            .unwrap_or_else(|| "localhost".into())
            .to_ascii_lowercase();
        let secret: [u8; 32] = rng.random();
        let auth = DigestAuth::new(config.realm.clone(), secret, config.nonce_ttl);
        let branch_prefix = format!("{:08x}", rng.random::<u32>());
        let flows = FlowTokens::new(rng.random());
        let tag_key = rng.random();
        Engine {
            txn: TransactionLayer::new(config.timers),
            registrar: Registrar::new(config.registrar.clone()),
            auth,
            local_hosts,
            local_ports,
            canonical_domain,
            accounts: HashMap::new(),
            owners: HashMap::new(),
            delegations: HashMap::new(),
            login_grants: HashMap::new(),
            calls: HashMap::new(),
            branch_of: HashMap::new(),
            timer_c: BinaryHeap::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            branch_prefix,
            counter: 0,
            rng,
            tag_key,
            stateless: None,
            overlay: OverlayState::default(),
            flows,
            config,
        }
    }

    // ----- inputs -----------------------------------------------------------

    /// Replaces the account table (user name → digest credentials).
    pub fn set_accounts(&mut self, accounts: HashMap<String, Credentials>) {
        self.accounts = accounts;
    }

    /// Replaces the owners of device accounts (user name → DID and delegation). A
    /// device account registers under its owner's DID, so that a call to the DID
    /// reaches every device of the user.
    pub fn set_account_owners(&mut self, owners: HashMap<String, AccountOwner>) {
        self.delegations.clear();
        for owner in owners.values() {
            let best = self
                .delegations
                .entry(owner.did.clone())
                .or_insert_with(|| owner.grant.clone());
            if owner.grant.until > best.until {
                *best = owner.grant.clone();
            }
        }
        self.owners = owners;
    }

    /// Loads persisted bindings at start-up (expired ones are dropped at the
    /// next timeout).
    ///
    /// A binding made over a WebSocket is not restored but removed (and the
    /// removal recorded): its connection did not survive the restart, and a
    /// WebSocket client cannot be reached any other way.
    pub fn restore_bindings(&mut self, bindings: Vec<Binding>) {
        for b in bindings {
            let websocket = b.source.is_some_and(|s| s.transport.is_websocket());
            let (aor, contact_uri) = (b.aor.clone(), b.contact_uri.clone());
            self.registrar.location.restore(b);
            if websocket {
                self.registrar.location.remove(&aor, &contact_uri);
            }
        }
    }

    /// A message arrived from `source`.
    pub fn handle_message(&mut self, now: Millis, msg: Message, source: Peer) {
        match msg {
            Message::Request(mut req) => {
                let reply_to = stamp_received(&mut req, source);
                self.handle_stamped_request(now, req, reply_to);
            }
            Message::Response(resp) => {
                self.txn.handle_response(now, resp, source);
                self.process(now);
            }
        }
    }

    /// A request that [`stamp_received`] has already been applied to, with
    /// the peer it returned. The shell stamps requests on the task that
    /// received them, which takes that work off the engine's thread.
    pub fn handle_stamped_request(&mut self, now: Millis, req: Request, reply_to: Peer) {
        self.stats.request(req.method.as_str());
        self.txn.handle_request(now, req, reply_to);
        self.process(now);
    }

    /// Bytes from `source` did not parse. Answers 400/505/513 when the
    /// request could be read far enough to form a response.
    pub fn handle_parse_error(&mut self, now: Millis, err: ParseError, source: Peer) {
        let _ = now;
        self.stats.malformed += 1;
        let (Some(code), Some(partial)) = (err.status_code(), err.partial.as_deref()) else {
            return;
        };
        if partial.method == Method::Ack || partial.headers.get(HeaderName::Via).is_none() {
            return;
        }
        let mut resp = partial.make_response(code, None);
        if code == 400 {
            resp.reason = format!("Bad Request ({})", sanitize_reason(&err.reason));
        }
        self.decorate(&mut resp);
        self.stats.response(code);
        self.out.push_back(Transmit {
            dest: source,
            bytes: resp.to_bytes(),
        });
    }

    /// Timers are due.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.txn.handle_timeout(now);
        while let Some(Reverse((at, id))) = self.timer_c.peek().copied() {
            if at > now {
                break;
            }
            self.timer_c.pop();
            let (due, give_up) = self.calls.get(&id).map_or((false, false), |c| {
                (
                    c.timer_c.is_some_and(|t| t <= now),
                    c.give_up_at.is_some_and(|t| t <= now),
                )
            });
            if due {
                self.cancel_call(now, id);
            }
            if give_up {
                self.give_up_branches(now, id);
            }
        }
        if self
            .registrar
            .location
            .next_expiry()
            .is_some_and(|t| t <= now)
        {
            for change in self.registrar.location.expire(now) {
                self.note_presence(change.aor(), now);
            }
        }
        self.process(now);
    }

    /// The shell could not deliver to `dest`.
    pub fn transport_error(&mut self, now: Millis, dest: Peer) {
        self.txn.transport_error(now, dest);
        self.process(now);
    }

    /// A connection closed. For a WebSocket connection (RFC 7118) this is
    /// the end of every binding registered over it, as if the client had
    /// unregistered that flow (RFC 5626): its contacts are removed (the
    /// removal persisted and the presence change published), and requests
    /// still waiting for an answer over it fail at once. Other connections
    /// change nothing: their contacts can be reached over a new one.
    pub fn flow_closed(&mut self, now: Millis, peer: Peer) {
        if !peer.transport.is_websocket() || peer.flow.is_none() {
            return;
        }
        let gone: Vec<(String, String)> = self
            .registrar
            .location
            .all()
            .filter(|b| {
                b.source
                    .is_some_and(|s| s.transport == peer.transport && s.flow == peer.flow)
            })
            .map(|b| (b.aor.clone(), b.contact_uri.clone()))
            .collect();
        for (aor, contact_uri) in gone {
            tracing::debug!(%aor, %contact_uri, %peer, "WebSocket closed: binding removed");
            self.registrar.location.remove(&aor, &contact_uri);
            self.note_presence(&aor, now);
        }
        self.txn.transport_error(now, peer);
        self.process(now);
    }

    // ----- outputs ----------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front().or_else(|| self.txn.poll_transmit())
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        [
            self.txn.poll_timeout(),
            self.timer_c.peek().map(|Reverse((t, _))| *t),
            self.registrar.location.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Binding changes to persist since the last call.
    pub fn drain_binding_changes(&mut self) -> Vec<Change> {
        self.registrar.location.drain_changes()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of local accounts known to the engine.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// (AORs, contacts) currently registered.
    pub fn registrations(&self) -> (usize, usize) {
        (
            self.registrar.location.aor_count(),
            self.registrar.location.contact_count(),
        )
    }

    /// Active (server, client) transactions.
    pub fn transactions(&self) -> (usize, usize) {
        self.txn.counts()
    }

    /// Live bindings of an address of record.
    pub fn lookup(&self, aor: &str, now: Millis) -> Vec<Binding> {
        self.registrar
            .location
            .lookup(aor, now)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The AOR under which a local user's bindings are stored.
    pub fn local_aor(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.canonical_domain)
    }

    // ----- event loop -------------------------------------------------------

    pub(crate) fn process(&mut self, now: Millis) {
        while let Some(ev) = self.txn.poll_event() {
            match ev {
                Event::Request {
                    id,
                    request,
                    source,
                    cancels,
                } => self.on_request(now, id, request, source, cancels),
                Event::Ack { request, source } => self.forward_ack(request, source),
                Event::Response { id, response } => {
                    self.on_branch_response(now, id, Some(response), 0)
                }
                Event::StrayResponse { response, .. } => self.forward_stray_response(response),
                Event::Timeout { id } => self.on_branch_response(now, id, None, 408),
                Event::Terminated { id } => self.on_terminated(now, id),
            }
        }
    }

    fn on_request(
        &mut self,
        now: Millis,
        id: TxnId,
        mut req: Request,
        source: Peer,
        cancels: Option<TxnId>,
    ) {
        if req.method == Method::Cancel {
            match cancels {
                Some(invite) => {
                    self.reply(now, id, &req, 200, None, &[]);
                    if self.calls.contains_key(&invite) {
                        self.cancel_call(now, invite);
                    } else if let Some(inv) = self.txn.server_request(invite).cloned() {
                        // Not proxied (challenged, or waiting for a presence
                        // lookup): end it here.
                        self.overlay.pending.retain(|_, p| p.server() != invite);
                        self.reply(now, invite, &inv, 487, None, &[]);
                    }
                }
                None => self.reply(now, id, &req, 481, None, &[]),
            }
            return;
        }

        // RFC 3261 §16.3: request validation.
        match req.max_forwards() {
            Some(0) if req.method == Method::Options => return self.answer_options(now, id, &req),
            Some(0) => return self.reply(now, id, &req, 483, None, &[]),
            _ => {}
        }
        if self.is_loop(&req) {
            return self.reply(now, id, &req, 482, None, &[]);
        }
        if let Some(pr) = req.headers.get(HeaderName::ProxyRequire) {
            let unsupported = pr.to_string();
            return self.reply(
                now,
                id,
                &req,
                420,
                None,
                &[(HeaderName::Unsupported, unsupported)],
            );
        }

        // §16.4: pop the Route entries that name this node (loose routing).
        let (routed, flow) = self.pop_own_routes(&mut req, source);
        if let Some(dest) = flow {
            // RFC 5626 §5.3: one of them names the connection of the next
            // hop (a WebSocket client): forward over it, whatever the
            // Request-URI says.
            let target = Target {
                uri: req.uri.clone(),
                dest,
                routes: Vec::new(),
            };
            return self.fork(now, id, req, vec![target], source);
        }
        if let Some(next) = req.headers.get(HeaderName::Route) {
            // Pre-loaded or dialog route set: forward to the next hop as is.
            let Some(dest) = NameAddr::parse(next).ok().and_then(|na| resolve(&na.uri)) else {
                return self.reply(now, id, &req, 404, Some("Route Not Reachable"), &[]);
            };
            let target = Target {
                uri: req.uri.clone(),
                dest,
                routes: Vec::new(),
            };
            return self.fork(now, id, req, vec![target], source);
        }

        match req.uri.scheme {
            Scheme::Sip | Scheme::Sips => {}
            Scheme::Tel => return self.reply(now, id, &req, 404, None, &[]),
            Scheme::Other(_) => return self.reply(now, id, &req, 416, None, &[]),
        }

        // A key user (`sip:z6Mk…@host`) is everywhere: whichever node gets the request
        // finds the user's node, whatever host the URI names.
        let local = self.is_local_target(&req.uri)
            || req
                .uri
                .user_decoded()
                .is_some_and(|u| did_of_user(&u).is_some());
        if !local {
            if !routed && !self.config.open && !self.is_in_dialog(&req) {
                // Only authenticated local users may use the node as an
                // outbound proxy; anything else would be an open relay.
                match self.authorize_caller(now, id, &req, source) {
                    Some(true) => {}
                    Some(false) => return,
                    None => return self.reply(now, id, &req, 403, Some("Relaying Denied"), &[]),
                }
            }
            let Some(dest) = resolve(&req.uri) else {
                // A domain we cannot resolve: the overlay may know the user.
                let aor = req.uri.aor();
                let Some(req) = self.route_via_overlay(now, id, req, source, aor) else {
                    return;
                };
                return self.reply(now, id, &req, 404, Some("Domain Not Served"), &[]);
            };
            let target = Target {
                uri: req.uri.clone(),
                dest,
                routes: Vec::new(),
            };
            return self.fork(now, id, req, vec![target], source);
        }

        if req.method == Method::Register {
            return self.handle_register(now, id, &req, source);
        }
        if req.uri.user.is_none() {
            // Addressed to the node itself.
            return match req.method {
                Method::Options => self.answer_options(now, id, &req),
                _ => self.reply(
                    now,
                    id,
                    &req,
                    405,
                    None,
                    &[(HeaderName::Allow, ALLOW.into())],
                ),
            };
        }

        // A request another node routed here was authorised there, by the node
        // that serves the caller (nodes may share a domain, so the caller can look
        // local here too).
        let routed_by_node = req
            .headers
            .get_named(crate::overlay::ROUTED_HEADER)
            .is_some();
        if matches!(req.method, Method::Invite | Method::Message)
            && !self.config.open
            && !routed_by_node
            && !self.is_in_dialog(&req)
            && self.caller_is_local(&req)
            && self.authorize_caller(now, id, &req, source) != Some(true)
        {
            return;
        }

        let user = req.uri.user_decoded().unwrap_or_default();
        let aor = self.aor_of_user(&user);
        let bindings = self.registrar.location.lookup(&aor, now);
        if bindings.is_empty() {
            let Some(req) = self.route_via_overlay(now, id, req, source, aor.clone()) else {
                return;
            };
            let code = if self.is_known_aor(&aor) { 480 } else { 404 };
            return self.reply(now, id, &req, code, None, &[]);
        }
        let targets: Vec<Target> = bindings
            .iter()
            .filter_map(|b| target_for_binding(b))
            .collect();
        if targets.is_empty() {
            return self.reply(now, id, &req, 480, None, &[]);
        }
        // The routing mark is for nodes only; the user's phones never see it.
        req.headers
            .0
            .retain(|h| !h.name.eq_ignore_ascii_case(crate::overlay::ROUTED_HEADER));
        self.fork(now, id, req, targets, source);
    }

    fn handle_register(&mut self, now: Millis, id: TxnId, req: &Request, source: Peer) {
        // The answer to a REGISTER that carries no credentials (or any
        // REGISTER on an open node) can be regenerated for a retransmission:
        // the registrar ignores a binding's repeated Call-ID and CSeq and
        // answers the current bindings, the To tag is derived from the
        // request, and a 401 offers a fresh nonce. Such answers keep no
        // transaction (RFC 3261 §8.2.7), which spares each one ~1 KB held
        // for Timer J over UDP. With credentials, a retransmission would
        // reuse its nonce-count and be refused as a replay: the transaction
        // stays and absorbs it.
        let stateless = self.config.stateless_register
            && (self.config.open || req.headers.get(HeaderName::Authorization).is_none());
        if stateless {
            self.stateless = Some(id);
        }
        self.answer_register(now, id, req, source);
        self.stateless = None;
    }

    fn answer_register(&mut self, now: Millis, id: TxnId, req: &Request, source: Peer) {
        let Some(to) = req.to() else {
            return self.reply(now, id, req, 400, None, &[]);
        };
        if !matches!(to.uri.scheme, Scheme::Sip | Scheme::Sips)
            || !self.local_hosts.contains(&to.uri.host)
        {
            return self.reply(now, id, req, 403, Some("Domain Not Served"), &[]);
        }
        let Some(user) = to.uri.user_decoded() else {
            return self.reply(now, id, req, 400, Some("Missing User in To"), &[]);
        };
        if !self.config.open && !self.authorize_register(now, id, req, &user) {
            return;
        }
        let aor = self.aor_of_user(&user);
        let mut resp = self.registrar.handle_register(now, req, &aor, source);
        if resp.is_success() {
            self.stats.registrations += 1;
            self.note_presence(&aor, now);
            self.registrar.location.remember(&aor);
        }
        self.send_local(now, id, &mut resp);
    }

    /// Authenticates a REGISTER for `user`: a key login (DOTS-Sig) when the request
    /// carries one, and always for a key user (`sip:z6Mk…`), who has no password;
    /// Digest otherwise. Returns false once it has answered the request.
    fn authorize_register(&mut self, now: Millis, id: TxnId, req: &Request, user: &str) -> bool {
        let key_user = did_of_user(user);
        match self.key_login(now, req, key_user.as_deref()) {
            KeyLogin::Accepted(grant) => {
                self.login_grants.insert(grant.did.clone(), grant);
                return true;
            }
            KeyLogin::Stale => self.challenge(now, id, req, 401, true),
            KeyLogin::Refused(reason) => {
                tracing::info!(user = %user, reason, "REGISTER key login refused");
                self.stats.auth_failures += 1;
                let reason = sanitize_reason(&format!("Forbidden ({reason})"));
                self.reply(now, id, req, 403, Some(&reason), &[]);
            }
            KeyLogin::Absent if key_user.is_some() => self.challenge(now, id, req, 401, false),
            KeyLogin::Absent => match self.authenticate(now, req, HeaderName::Authorization) {
                AuthOutcome::Authenticated { user: authed } if authed == user => return true,
                AuthOutcome::Authenticated { .. } => {
                    self.stats.auth_failures += 1;
                    self.reply(now, id, req, 403, None, &[]);
                }
                AuthOutcome::Missing => self.challenge(now, id, req, 401, false),
                AuthOutcome::Stale => self.challenge(now, id, req, 401, true),
                AuthOutcome::Rejected { reason } => {
                    tracing::info!(user = %user, reason, "REGISTER authentication failed");
                    self.stats.auth_failures += 1;
                    self.reply(now, id, req, 403, None, &[]);
                }
            },
        }
        false
    }

    /// Digest check of a caller (INVITE/MESSAGE, outbound). Returns
    /// Some(true) when authorised, Some(false) when a response was sent,
    /// None when the caller is not a local user at all.
    fn authorize_caller(
        &mut self,
        now: Millis,
        id: TxnId,
        req: &Request,
        source: Peer,
    ) -> Option<bool> {
        if !self.caller_is_local(req) {
            return None;
        }
        let from_user = req.from().and_then(|f| f.uri.user_decoded());
        if let Some(did) = from_user.as_deref().and_then(did_of_user) {
            // A key user has no password to answer a challenge with: it is who it
            // says when the request comes from where it registered with its key.
            if self.key_user_source_ok(&did, source, now) {
                return Some(true);
            }
            tracing::info!(%did, ?source, "key user not registered from this address");
            self.stats.auth_failures += 1;
            self.reply(now, id, req, 403, Some("Register With Your Key First"), &[]);
            return Some(false);
        }
        match self.authenticate(now, req, HeaderName::ProxyAuthorization) {
            AuthOutcome::Authenticated { user } if Some(&user) == from_user.as_ref() => Some(true),
            AuthOutcome::Missing => {
                self.challenge(now, id, req, 407, false);
                Some(false)
            }
            AuthOutcome::Stale => {
                self.challenge(now, id, req, 407, true);
                Some(false)
            }
            outcome @ (AuthOutcome::Authenticated { .. } | AuthOutcome::Rejected { .. }) => {
                tracing::info!(from = ?from_user, ?outcome, "caller authentication failed");
                self.stats.auth_failures += 1;
                self.reply(now, id, req, 403, None, &[]);
                Some(false)
            }
        }
    }

    fn authenticate(&mut self, now: Millis, req: &Request, header: HeaderName) -> AuthOutcome {
        let accounts = &self.accounts;
        self.auth
            .verify(now, req, header, |user| accounts.get(user).cloned())
    }

    fn challenge(&mut self, now: Millis, id: TxnId, req: &Request, code: u16, stale: bool) {
        self.stats.auth_challenges += 1;
        let header = if code == 407 {
            HeaderName::ProxyAuthenticate
        } else {
            HeaderName::WwwAuthenticate
        };
        let offered = self.auth.challenge(now, stale);
        let extra: Vec<(HeaderName, String)> = self
            .config
            .digest_algorithms
            .iter()
            .filter_map(|alg| {
                offered
                    .iter()
                    .find(|c| challenge_algorithm(c).eq_ignore_ascii_case(alg))
            })
            .map(|v| (header, v.clone()))
            .collect();
        let mut extra = extra;
        // Key login only for key users (`sip:z6Mk…`): some phones (libre 1.x) give up
        // on a 401 with any scheme they do not know, and a password user has no key.
        let key_user = req
            .to()
            .and_then(|t| t.uri.user_decoded())
            .is_some_and(|u| did_of_user(&u).is_some());
        if code == 401 && key_user {
            if let Some(key_challenge) = self.key_login_challenge(now) {
                extra.push((header, key_challenge));
            }
        }
        self.reply(now, id, req, code, None, &extra);
    }

    fn answer_options(&mut self, now: Millis, id: TxnId, req: &Request) {
        let extra = [
            (HeaderName::Allow, ALLOW.to_string()),
            (HeaderName::Supported, SUPPORTED.to_string()),
            (
                HeaderName::Accept,
                "application/sdp, text/plain".to_string(),
            ),
        ];
        self.reply(now, id, req, 200, None, &extra);
    }

    // ----- forwarding -------------------------------------------------------

    /// Forwards `req` to every target in parallel (RFC 3261 §16.6).
    pub(crate) fn fork(
        &mut self,
        now: Millis,
        server: TxnId,
        req: Request,
        targets: Vec<Target>,
        source: Peer,
    ) {
        if req.method == Method::Invite {
            // §16.2: a stateful proxy answers 100 at once so the caller stops retransmitting.
            self.send_trying(now, server, &req);
        }
        let loop_hash = loop_hash(&req);
        let dialog_creating = matches!(
            req.method,
            Method::Invite | Method::Subscribe | Method::Refer
        ) && !self.is_in_dialog(&req);
        let mut branches = Vec::new();
        for target in targets {
            let Some(out_listener) = self.listener_for(target.dest.transport).cloned() else {
                continue;
            };
            let mut fwd = req.clone();
            fwd.uri = target.uri;
            decrement_max_forwards(&mut fwd);
            for route in target.routes.iter().rev() {
                fwd.headers.push_front(HeaderName::Route, route.clone());
            }
            if dialog_creating {
                // Two entries when the request changes transport (so each side
                // gets a Route it can use, as Kamailio does) or either side is
                // a WebSocket client: that side's entry carries the client's
                // flow token, which in-dialog requests for it come back with.
                let ws_in = source.transport.is_websocket();
                let ws_out = target.dest.transport.is_websocket();
                let in_listener = self.listener_for(source.transport).cloned();
                if let Some(inl) = in_listener.filter(|l| l != &out_listener || ws_in || ws_out) {
                    let rr = self.record_route(&inl, ws_in.then_some(source));
                    fwd.headers.push_front(HeaderName::RecordRoute, rr);
                }
                let rr = self.record_route(&out_listener, ws_out.then_some(target.dest));
                fwd.headers.push_front(HeaderName::RecordRoute, rr);
            }
            self.counter += 1;
            let branch = format!(
                "{BRANCH_MARK}{:x}{}-{loop_hash:016x}",
                self.counter, self.branch_prefix
            );
            let via = format!(
                "SIP/2.0/{} {}:{};branch={branch}",
                target.dest.transport.via_name(),
                out_listener.host(),
                out_listener.addr.port()
            );
            fwd.headers.insert_top(HeaderName::Via, via);
            match self.txn.send_request(now, fwd, target.dest) {
                Ok(client) => {
                    self.stats.forwarded += 1;
                    self.branch_of.insert(client, server);
                    branches.push(ProxyBranch {
                        client,
                        final_code: None,
                    });
                }
                Err(e) => tracing::warn!(error = %e, "could not start client transaction"),
            }
        }
        if branches.is_empty() {
            return self.reply(now, server, &req, 503, Some("No Usable Route"), &[]);
        }
        let timer_c = (req.method == Method::Invite).then(|| now + self.config.timer_c);
        if let Some(t) = timer_c {
            self.timer_c.push(Reverse((t, server)));
        }
        self.calls.insert(
            server,
            ProxyCall {
                method: req.method.clone(),
                active: branches.len(),
                branches,
                best: None,
                final_sent: false,
                cancelled: false,
                server_gone: false,
                timer_c,
                give_up_at: None,
                remote: None,
            },
        );
        if req.method != Method::Invite {
            // The layer keeps INVITEs itself; a forwarded non-INVITE is
            // needed again for the 408 of maybe_send_best or a retry.
            self.txn.keep_request(server, req);
        }
    }

    /// Forwards to another node and remembers that, so that a failure can
    /// be retried with a fresh lookup.
    pub(crate) fn fork_remote(
        &mut self,
        now: Millis,
        server: TxnId,
        req: Request,
        target: Target,
        source: Peer,
        attempt: RemoteAttempt,
    ) {
        self.fork(now, server, req, vec![target], source);
        if let Some(call) = self.calls.get_mut(&server) {
            call.remote = Some(attempt);
        }
    }

    pub(crate) fn send_trying(&mut self, now: Millis, server: TxnId, req: &Request) {
        let mut trying = req.make_response(100, None);
        self.decorate(&mut trying);
        self.respond(now, server, trying);
    }

    pub(crate) fn server_request_clone(&self, server: TxnId) -> Option<Request> {
        self.txn.server_request(server).cloned()
    }

    /// A user this node knows: an account, or an address of record that
    /// registered here.
    pub(crate) fn is_known_aor(&self, aor: &str) -> bool {
        if self.registrar.location.is_known(aor) {
            return true;
        }
        let user = aor
            .strip_prefix("sip:")
            .and_then(|r| r.split('@').next())
            .unwrap_or("");
        self.accounts.contains_key(user) && aor == self.local_aor(user)
    }

    /// Announces every local address of record that has a live binding
    /// (after restoring persisted bindings, or to re-publish).
    pub fn announce_online(&mut self, now: Millis) {
        if !self.overlay.enabled {
            return;
        }
        let aors: Vec<std::sync::Arc<str>> =
            self.registrar.location.known_aors().cloned().collect();
        for aor in aors {
            self.note_presence(&aor, now);
        }
    }

    /// A response (or a timeout, `response == None`) on a client branch.
    fn on_branch_response(
        &mut self,
        now: Millis,
        client: TxnId,
        response: Option<Response>,
        synthetic: u16,
    ) {
        let Some(&server) = self.branch_of.get(&client) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&server) else {
            return;
        };
        let code = response.as_ref().map_or(synthetic, |r| r.code);
        let response = response.map(|mut r| {
            r.headers.pop_front(HeaderName::Via);
            r
        });
        if code < 200 {
            if code == 100 || call.final_sent {
                return;
            }
            if call.method == Method::Invite {
                call.timer_c = Some(now + self.config.timer_c);
                self.timer_c
                    .push(Reverse((now + self.config.timer_c, server)));
            }
            if let Some(r) = response {
                self.respond(now, server, r);
            }
            return;
        }
        if let Some(b) = call.branches.iter_mut().find(|b| b.client == client) {
            if b.final_code.is_some() {
                // A further 2xx on an accepted INVITE branch (RFC 6026): pass it on.
                if (200..300).contains(&code) {
                    if let Some(r) = response {
                        self.respond(now, server, r);
                    }
                }
                return;
            }
            b.final_code = Some(code);
        }
        if (200..300).contains(&code) {
            call.final_sent = true;
            call.timer_c = None;
            let is_invite = call.method == Method::Invite;
            if let Some(r) = response {
                self.respond(now, server, r);
            }
            if is_invite {
                self.cancel_pending_branches(now, server);
            }
            return;
        }
        if code >= 600 && call.method == Method::Invite {
            let better = call.best.as_ref().is_none_or(|(c, _)| *c < 600);
            if better {
                call.best = Some((code, response));
            }
            self.cancel_pending_branches(now, server);
        } else if call
            .best
            .as_ref()
            .is_none_or(|(c, _)| better_final(code, *c))
        {
            call.best = Some((code, response));
        }
        self.maybe_send_best(now, server);
    }

    fn cancel_pending_branches(&mut self, now: Millis, server: TxnId) {
        let Some(call) = self.calls.get(&server) else {
            return;
        };
        let pending: Vec<TxnId> = call
            .branches
            .iter()
            .filter(|b| b.final_code.is_none())
            .map(|b| b.client)
            .collect();
        if pending.is_empty() {
            return;
        }
        for client in pending {
            self.txn.cancel(now, client);
        }
        // §9.1: a branch that sends no final response within 64*T1 of the
        // CANCEL is considered cancelled. Without this a UAS that ignores
        // CANCEL would hold the call (and the caller) forever.
        let at = now + 64 * self.config.timers.t1;
        if let Some(call) = self.calls.get_mut(&server) {
            if call.give_up_at.is_none() {
                call.give_up_at = Some(at);
                self.timer_c.push(Reverse((at, server)));
            }
        }
    }

    /// The CANCEL of these branches went unanswered: count each as a 408
    /// (as §16.8 does for a silent branch), send the best final response
    /// upstream if none was sent, and stop tracking them.
    fn give_up_branches(&mut self, now: Millis, server: TxnId) {
        let Some(call) = self.calls.get_mut(&server) else {
            return;
        };
        call.give_up_at = None;
        let stuck: Vec<TxnId> = call
            .branches
            .iter()
            .filter(|b| b.final_code.is_none())
            .map(|b| b.client)
            .collect();
        for client in stuck {
            self.on_branch_response(now, client, None, 408);
            self.branch_of.remove(&client);
            if let Some(call) = self.calls.get_mut(&server) {
                call.active = call.active.saturating_sub(1);
            }
        }
        self.maybe_forget(server);
    }

    fn cancel_call(&mut self, now: Millis, server: TxnId) {
        if let Some(call) = self.calls.get_mut(&server) {
            if call.final_sent {
                return;
            }
            call.cancelled = true;
            call.timer_c = None;
        }
        self.cancel_pending_branches(now, server);
    }

    /// Sends the best final response once every branch has one (§16.7 step 6).
    fn maybe_send_best(&mut self, now: Millis, server: TxnId) {
        let Some(call) = self.calls.get_mut(&server) else {
            return;
        };
        if call.final_sent || call.branches.iter().any(|b| b.final_code.is_none()) {
            return;
        }
        let failed_code = call.best.as_ref().map_or(408, |(c, _)| *c);
        if !call.cancelled && matches!(failed_code, 408 | 500 | 503) {
            if let Some(attempt) = call.remote.take() {
                // The node the record named did not take the request: the
                // record may be stale. Forget this attempt and look again.
                let old = self.calls.remove(&server);
                if let Some(old) = &old {
                    for b in &old.branches {
                        self.branch_of.remove(&b.client);
                    }
                }
                if self.retry_remote(now, server, attempt) {
                    return;
                }
                if let Some(old) = old {
                    self.calls.insert(server, old);
                }
            }
        }
        let Some(call) = self.calls.get_mut(&server) else {
            return;
        };
        call.final_sent = true;
        call.timer_c = None;
        let (code, response) = call.best.take().unwrap_or((408, None));
        let resp = match response {
            // §16.7 step 6: a 503 from downstream becomes 500 upstream.
            Some(mut r) if r.code == 503 => {
                r.code = 500;
                r.reason = "Server Internal Error".into();
                r
            }
            Some(r) => r,
            None => {
                let Some(req) = self.txn.server_request(server) else {
                    return;
                };
                let mut r = req.make_response(code, None);
                self.decorate_local(&mut r);
                r
            }
        };
        self.respond(now, server, resp);
    }

    fn on_terminated(&mut self, now: Millis, id: TxnId) {
        if let Some(server) = self.branch_of.remove(&id) {
            if let Some(call) = self.calls.get_mut(&server) {
                call.active = call.active.saturating_sub(1);
                // A branch that ended without a final (should not happen) counts as 408.
                if let Some(b) = call
                    .branches
                    .iter_mut()
                    .find(|b| b.client == id && b.final_code.is_none())
                {
                    b.final_code = Some(408);
                    if call
                        .best
                        .as_ref()
                        .is_none_or(|(c, _)| better_final(408, *c))
                    {
                        call.best = Some((408, None));
                    }
                    self.maybe_send_best(now, server);
                }
                self.maybe_forget(server);
            }
        } else if let Some(call) = self.calls.get_mut(&id) {
            call.server_gone = true;
            self.maybe_forget(id);
        }
    }

    fn maybe_forget(&mut self, server: TxnId) {
        if let Some(call) = self.calls.get(&server) {
            if call.active == 0 && (call.final_sent || call.server_gone) {
                self.calls.remove(&server);
            }
        }
    }

    /// Forwards an ACK for a 2xx (end to end, no transaction).
    fn forward_ack(&mut self, mut req: Request, source: Peer) {
        if req.max_forwards() == Some(0) {
            return;
        }
        let (_, flow) = self.pop_own_routes(&mut req, source);
        let next = match req.headers.get(HeaderName::Route) {
            Some(r) => NameAddr::parse(r).ok().map(|na| na.uri),
            None if !self.is_me(&req.uri) => Some(req.uri.clone()),
            None => None,
        };
        let Some(dest) = flow.or_else(|| next.as_ref().and_then(resolve)) else {
            return;
        };
        let Some(listener) = self.listener_for(dest.transport).cloned() else {
            return;
        };
        decrement_max_forwards(&mut req);
        // A stateless branch derived from the incoming one, so a retransmitted
        // ACK gets the same branch downstream.
        let mut h = DefaultHasher::new();
        req.top_via()
            .and_then(|v| v.branch().map(str::to_string))
            .hash(&mut h);
        req.call_id().hash(&mut h);
        let via = format!(
            "SIP/2.0/{} {}:{};branch=z9hG4bK-a-{:016x}",
            dest.transport.via_name(),
            listener.host(),
            listener.addr.port(),
            h.finish()
        );
        req.headers.insert_top(HeaderName::Via, via);
        self.stats.forwarded += 1;
        self.out.push_back(Transmit {
            dest,
            bytes: req.to_bytes(),
        });
    }

    /// A response that matches no transaction (a 2xx retransmission after
    /// the client transaction ended): forward it statelessly by Via.
    fn forward_stray_response(&mut self, mut resp: Response) {
        let Some(top) = resp.top_via() else { return };
        if !self.via_is_mine(&top) {
            return;
        }
        resp.headers.pop_front(HeaderName::Via);
        let Some(next) = resp.top_via() else { return };
        let Some(dest) = via_destination(&next) else {
            return;
        };
        self.stats.response(resp.code);
        self.out.push_back(Transmit {
            dest,
            bytes: resp.to_bytes(),
        });
    }

    // ----- helpers ----------------------------------------------------------

    pub(crate) fn reply(
        &mut self,
        now: Millis,
        id: TxnId,
        req: &Request,
        code: u16,
        reason: Option<&str>,
        extra: &[(HeaderName, String)],
    ) {
        let mut resp = req.make_response(code, reason);
        for (name, value) in extra {
            resp.headers.push(*name, value.clone());
        }
        self.send_local(now, id, &mut resp);
    }

    fn send_local(&mut self, now: Millis, id: TxnId, resp: &mut Response) {
        if self.stateless == Some(id) && resp.code > 100 {
            let tag = self.stateless_tag(resp);
            resp.ensure_to_tag(&tag);
        }
        self.decorate_local(resp);
        self.respond(
            now,
            id,
            std::mem::replace(
                resp,
                Response {
                    code: 0,
                    reason: String::new(),
                    headers: Default::default(),
                    body: Vec::new(),
                },
            ),
        );
    }

    /// Adds a To tag and Server header to a response the node generates.
    fn decorate_local(&mut self, resp: &mut Response) {
        if resp.code > 100 {
            let tag = format!("{:016x}", self.rng.random::<u64>());
            resp.ensure_to_tag(&tag);
        }
        self.decorate(resp);
    }

    fn decorate(&self, resp: &mut Response) {
        if resp.headers.get(HeaderName::Server).is_none() {
            resp.headers
                .push(HeaderName::Server, self.config.server_name.clone());
        }
    }

    /// The To tag of a stateless answer: the same for every retransmission
    /// of a request (RFC 3261 §8.2.7), from the headers a response copies
    /// from it (Call-ID, CSeq, From, top Via with its branch).
    fn stateless_tag(&self, resp: &Response) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.tag_key.hash(&mut h);
        for name in [
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::From,
            HeaderName::Via,
        ] {
            resp.headers.get(name).hash(&mut h);
        }
        format!("{:016x}", h.finish())
    }

    fn respond(&mut self, now: Millis, id: TxnId, resp: Response) {
        let code = resp.code;
        let sent = if self.stateless == Some(id) {
            self.txn.respond_and_forget(now, id, resp)
        } else {
            self.txn.respond(now, id, resp)
        };
        match sent {
            Ok(()) => self.stats.response(code),
            Err(e) => tracing::debug!(error = %e, code, "response not sent"),
        }
    }

    fn listener_for(&self, transport: TransportKind) -> Option<&Listener> {
        self.config
            .listeners
            .iter()
            .find(|l| l.transport == transport)
    }

    /// §16.4: removes the leading Route entries that name this node (loose
    /// routing). Returns whether there was one, and the connection a flow
    /// token among them names, unless it is the one the request came over
    /// (RFC 5626 §5.3: then the request is leaving that client).
    fn pop_own_routes(&self, req: &mut Request, source: Peer) -> (bool, Option<Peer>) {
        let mut popped = false;
        let mut flow = None;
        while let Some(top) = req.headers.get(HeaderName::Route) {
            match NameAddr::parse(top) {
                Ok(na) if self.is_me(&na.uri) => {
                    let named = na.uri.user.as_deref().and_then(|u| self.flows.decode(u));
                    if let Some(peer) = named {
                        let incoming = peer.transport == source.transport
                            && peer.flow.is_some()
                            && peer.flow == source.flow;
                        if !incoming && flow.is_none() {
                            flow = Some(peer);
                        }
                    }
                    req.headers.pop_front(HeaderName::Route);
                    popped = true;
                }
                _ => break,
            }
        }
        (popped, flow)
    }

    /// The node's Record-Route entry for a listener; with the flow token of
    /// `client` when that side is a WebSocket client.
    fn record_route(&self, l: &Listener, client: Option<Peer>) -> String {
        let token = client.and_then(|c| self.flows.encode(c));
        match token {
            Some(t) => format!(
                "<sip:{t}@{}:{};transport={};lr>",
                l.host(),
                l.addr.port(),
                l.transport.uri_param()
            ),
            None => record_route(l),
        }
    }

    /// Is this URI one of the node's own addresses (host and port)?
    fn is_me(&self, uri: &Uri) -> bool {
        if !self.local_hosts.contains(&uri.host) {
            return false;
        }
        let default = if uri.scheme == Scheme::Sips || uri.transport().as_deref() == Some("tls") {
            5061
        } else {
            5060
        };
        self.local_ports.contains(&uri.port.unwrap_or(default))
            || (uri.port.is_none()
                && self
                    .config
                    .domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&uri.host)))
    }

    /// Is the Request-URI in a domain this node serves (and not some other
    /// element that happens to share our IP)?
    fn is_local_target(&self, uri: &Uri) -> bool {
        self.local_hosts.contains(&uri.host)
            && uri.port.is_none_or(|p| self.local_ports.contains(&p))
    }

    fn via_is_mine(&self, via: &Via) -> bool {
        self.local_hosts.contains(&via.host) && self.local_ports.contains(&via.port.unwrap_or(5060))
    }

    fn caller_is_local(&self, req: &Request) -> bool {
        req.from().is_some_and(|f| {
            matches!(f.uri.scheme, Scheme::Sip | Scheme::Sips)
                && self.local_hosts.contains(&f.uri.host)
        })
    }

    fn is_in_dialog(&self, req: &Request) -> bool {
        req.to().is_some_and(|t| t.tag().is_some())
    }

    /// RFC 3261 §16.3 step 4: a request carrying one of our Vias whose
    /// branch hash equals the hash of the request as it is now has looped
    /// (a spiral, with a changed Request-URI, has a different hash).
    fn is_loop(&self, req: &Request) -> bool {
        // Almost no request carries one of our branches: check the raw text
        // before parsing every Via.
        if !req
            .headers
            .get_all(HeaderName::Via)
            .skip(1)
            .any(|v| v.contains(BRANCH_MARK))
        {
            return false;
        }
        let mut hash = None;
        for via in req.vias().iter().skip(1) {
            if !self.via_is_mine(via) {
                continue;
            }
            let Some(branch) = via.branch() else { continue };
            if !branch.starts_with(BRANCH_MARK) {
                continue;
            }
            let h = *hash.get_or_insert_with(|| loop_hash(req));
            if branch.ends_with(&format!("-{h:016x}")) {
                return true;
            }
        }
        false
    }
}

/// §16.6 step 3: one hop less, or 70 when the request had no Max-Forwards.
fn decrement_max_forwards(req: &mut Request) {
    match req.max_forwards() {
        Some(n) => req
            .headers
            .set(HeaderName::MaxForwards, n.saturating_sub(1).to_string()),
        None => req.headers.push(HeaderName::MaxForwards, "70"),
    }
}

/// Hash of the request fields that identify it for loop detection.
///
/// From, To, Call-ID and CSeq are hashed as text: no element on the path
/// rewrites them, so a looping request carries them unchanged, and hashing
/// the text spares parsing them for every forwarded request.
fn loop_hash(req: &Request) -> u64 {
    let mut h = DefaultHasher::new();
    req.uri.to_string().hash(&mut h);
    for kind in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        req.headers.get(kind).hash(&mut h);
    }
    for v in req.headers.get_all(HeaderName::ProxyRequire) {
        v.hash(&mut h);
    }
    h.finish()
}

/// §16.7 step 6: 6xx beat everything; otherwise the lowest class wins, and
/// within 4xx an authentication challenge is preferred.
fn better_final(new: u16, old: u16) -> bool {
    let rank = |c: u16| -> (u16, u16) {
        match c {
            600..=699 => (0, 0),
            401 | 407 => (4, 0),
            c => (c / 100, 1),
        }
    };
    rank(new) < rank(old)
}

fn record_route(l: &Listener) -> String {
    match l.transport {
        TransportKind::Udp => format!("<sip:{}:{};lr>", l.host(), l.addr.port()),
        t => format!(
            "<sip:{}:{};transport={};lr>",
            l.host(),
            l.addr.port(),
            t.uri_param()
        ),
    }
}

fn host_of_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    }
}

/// Where to send a request for `uri` (IP literals and localhost; names need
/// a resolver, which this node does not have yet).
pub(crate) fn resolve(uri: &Uri) -> Option<Peer> {
    let transport = match uri.transport() {
        Some(t) => TransportKind::parse(&t)?,
        None if uri.scheme == Scheme::Sips => TransportKind::Tls,
        None => TransportKind::Udp,
    };
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().ok()?
    };
    let port = uri.port.unwrap_or(if transport == TransportKind::Tls {
        5061
    } else {
        5060
    });
    Some(Peer::new(transport, SocketAddr::new(ip, port)))
}

/// How to reach a registered contact: at its Contact address, preferring
/// the connection it registered over when the transports match (connection
/// reuse; the shell falls back to a new connection if that one is gone).
/// A contact registered over a WebSocket is reached over that connection
/// only (RFC 7118 §5: its host is usually a made-up `.invalid` name; RFC
/// 5626: the binding's flow).
pub(crate) fn target_for_binding(b: &Binding) -> Option<Target> {
    let uri = Uri::parse(&b.contact_uri).ok()?;
    let dest = match b.path.first() {
        Some(p) => NameAddr::parse(p).ok().and_then(|na| resolve(&na.uri))?,
        None if b.source.is_some_and(|s| s.transport.is_websocket()) => b.source?,
        None => {
            let mut dest = resolve(&uri)?;
            if let Some(src) = b
                .source
                .filter(|s| s.transport == dest.transport && s.transport.is_reliable())
            {
                dest.flow = src.flow;
            }
            dest
        }
    };
    Some(Target {
        uri,
        dest,
        routes: b.path.clone(),
    })
}

/// Where a response goes next, from a Via (received, rport, sent-by).
fn via_destination(via: &Via) -> Option<Peer> {
    let transport = TransportKind::parse(&via.transport)?;
    let host = via.param("received").flatten().unwrap_or(&via.host);
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let port = via
        .param("rport")
        .flatten()
        .and_then(|p| p.parse().ok())
        .or(via.port)
        .unwrap_or(if transport == TransportKind::Tls {
            5061
        } else {
            5060
        });
    Some(Peer::new(transport, SocketAddr::new(ip, port)))
}

/// RFC 3261 §18.2.1 and RFC 3581: records where the request really came
/// from in its top Via (`received`, and `rport` when asked for) and returns
/// where responses must go. Depends on nothing but its arguments, so the
/// shell can run it wherever the request was received; see
/// [`Engine::handle_stamped_request`].
pub fn stamp_received(req: &mut Request, source: Peer) -> Peer {
    let Some(mut via) = req.top_via() else {
        return source;
    };
    let src_ip = host_of_ip(source.addr.ip());
    let wants_rport = via.param("rport").is_some();
    let mut changed = false;
    if via.host != src_ip || wants_rport {
        via.set_param("received", Some(src_ip));
        changed = true;
    }
    if wants_rport {
        via.set_param("rport", Some(source.addr.port().to_string()));
        changed = true;
    }
    if changed {
        if let Some(h) = req.headers.0.iter_mut().find(|h| h.kind == HeaderName::Via) {
            h.value = via.to_string();
        }
    }
    if source.transport.is_reliable() || wants_rport {
        return source;
    }
    let default = if source.transport == TransportKind::Tls {
        5061
    } else {
        5060
    };
    Peer {
        addr: SocketAddr::new(source.addr.ip(), via.port.unwrap_or(default)),
        ..source
    }
}

/// The algorithm a Digest challenge names (MD5 when absent).
fn challenge_algorithm(challenge: &str) -> String {
    dots_registrar::parse_digest_params(challenge)
        .and_then(|params| {
            params
                .into_iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("algorithm"))
                .map(|(_, v)| v)
        })
        .unwrap_or_else(|| "MD5".into())
}

/// Keeps a parse error short and printable for a reason phrase.
fn sanitize_reason(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(80).collect()
}
