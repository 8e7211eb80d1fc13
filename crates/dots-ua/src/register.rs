//! Registration (RFC 3261 §10.2): REGISTER with key login when challenged,
//! refresh at half the granted lifetime, retry after failures while the user
//! wants to stay registered, and removal of the binding (Expires 0).

use dots_sip::{ContactValue, HeaderName, Method, Response, SipMessage};
use dots_txn::{Time, TxnId};

use crate::auth;
use crate::token::Tokens;
use crate::{Event, Failure, Purpose, UserAgent};

/// How long the agent waits before trying again after a failed registration (ms).
pub const RETRY_MS: Time = 30_000;
/// Challenges answered in a row before giving up: a second one is allowed,
/// for a nonce that went stale between challenge and answer.
const MAX_AUTH: u8 = 2;

pub(crate) struct Registration {
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The user wants a binding: refresh it, and retry after failures.
    wanted: bool,
    /// Registered at least once since `register` (the next success is a renewal).
    bound: bool,
    /// The lifetime asked for (s); 0 while removing the binding.
    expires: u32,
    /// The REGISTER in flight; responses to older ones are ignored.
    pending: Option<TxnId>,
    auth_tries: u8,
    interval_tries: u8,
    /// When to send the next REGISTER (refresh or retry).
    next_at: Option<Time>,
}

impl Registration {
    pub(crate) fn new(tokens: &mut Tokens, expires: u32) -> Registration {
        Registration {
            call_id: format!("{}{}", tokens.hex(), tokens.hex()),
            from_tag: tokens.hex(),
            cseq: 0,
            wanted: false,
            bound: false,
            expires,
            pending: None,
            auth_tries: 0,
            interval_tries: 0,
            next_at: None,
        }
    }

    pub(crate) fn next_timer(&self) -> Option<Time> {
        self.next_at
    }
}

/// The lifetime the registrar granted our contact: its `expires` parameter
/// in the 200's Contact list, else the Expires header, else what we asked.
fn granted(response: &Response, contact: &dots_sip::Uri, asked: u32) -> u32 {
    response
        .headers()
        .get_all(HeaderName::Contact)
        .filter_map(|v| match ContactValue::parse(v) {
            Ok(ContactValue::Addr(na)) => Some(na),
            _ => None,
        })
        .find(|na| na.uri.equivalent(contact))
        .and_then(|na| na.param("expires").flatten().and_then(|e| e.parse().ok()))
        .or_else(|| response.expires())
        .unwrap_or(asked)
}

impl UserAgent {
    /// Registers the Contact for the configured lifetime, and keeps it
    /// registered (refreshing it) until [`UserAgent::unregister`].
    pub fn register(&mut self, now: Time) {
        self.reg.wanted = true;
        self.reg.bound = false;
        self.reg.expires = self.cfg.expires;
        self.reg.interval_tries = 0;
        self.send_register(now, None);
    }

    /// Removes the binding (REGISTER with Expires 0); reports
    /// [`Event::Unregistered`] or [`Event::RegistrationFailed`].
    pub fn unregister(&mut self, now: Time) {
        self.reg.wanted = false;
        self.reg.expires = 0;
        self.reg.next_at = None;
        self.send_register(now, None);
    }

    /// Whether the agent holds a binding at the node right now.
    pub fn is_registered(&self) -> bool {
        self.reg.bound && self.reg.wanted
    }

    fn send_register(
        &mut self,
        now: Time,
        answer: Option<(&dots_identity::login::Challenge, u16)>,
    ) {
        if answer.is_none() {
            self.reg.auth_tries = 0;
        }
        self.reg.cseq += 1;
        self.reg.next_at = None;
        let aor = format!("<{}>", self.cfg.aor());
        let from = format!("{aor};tag={}", self.reg.from_tag);
        let call_id = self.reg.call_id.clone();
        let mut req = self.new_request(
            Method::Register,
            self.cfg.registrar(),
            &from,
            &aor,
            &call_id,
            self.reg.cseq,
        );
        req.headers.push(HeaderName::Contact, self.contact.clone());
        req.headers
            .push(HeaderName::Expires, self.reg.expires.to_string());
        req.headers.push(HeaderName::Allow, crate::ALLOW);
        if let Some((challenge, code)) = answer {
            let Some((_, header)) = auth::challenge_headers(code) else {
                return;
            };
            if let Err(e) = auth::authorize(&self.wallet, challenge, &mut req, header, now) {
                let failure = Failure::local(401, format!("cannot answer the key login: {e}"));
                return self.registration_done(now, Err(failure));
            }
        }
        let dest = self.cfg.node;
        self.reg.pending = self.send(now, req, dest, Purpose::Register);
    }

    pub(crate) fn on_register_response(&mut self, now: Time, id: TxnId, response: &Response) {
        if self.reg.pending != Some(id) || response.code < 200 {
            return;
        }
        self.reg.pending = None;
        match response.code {
            200..=299 => {
                if self.reg.expires == 0 {
                    self.reg.bound = false;
                    self.events.push_back(Event::Unregistered);
                    return;
                }
                let expires = granted(response, &self.cfg.contact_uri(), self.reg.expires);
                if expires == 0 {
                    let failure = Failure::from_response(response)
                        .with_detail("the node accepted the REGISTER but kept no binding");
                    return self.registration_done(now, Err(failure));
                }
                self.registration_done(now, Ok(expires));
            }
            401 | 407 => match auth::pick_challenge(response) {
                Ok(challenge) if self.reg.auth_tries < MAX_AUTH => {
                    self.reg.auth_tries += 1;
                    self.send_register(now, Some((&challenge, response.code)));
                }
                Ok(_) => {
                    let failure = Failure::from_response(response).with_detail(format!(
                        "the node at {} refused the key login of {}",
                        self.cfg.node,
                        self.aor()
                    ));
                    self.registration_done(now, Err(failure));
                }
                Err(e) => {
                    let failure = Failure::from_response(response)
                        .with_detail(auth::explain(&self.cfg.node, &e));
                    self.registration_done(now, Err(failure));
                }
            },
            423 => {
                let min = response
                    .headers
                    .get(HeaderName::MinExpires)
                    .and_then(dots_sip::header::parse_delta_seconds);
                match min {
                    Some(min) if min > self.reg.expires && self.reg.interval_tries < 2 => {
                        self.reg.interval_tries += 1;
                        self.reg.expires = min;
                        self.send_register(now, None);
                    }
                    _ => {
                        let failure = Failure::from_response(response);
                        self.registration_done(now, Err(failure));
                    }
                }
            }
            _ => {
                let failure = Failure::from_response(response);
                self.registration_done(now, Err(failure));
            }
        }
    }

    pub(crate) fn registration_failed(&mut self, now: Time, id: TxnId, failure: Failure) {
        if self.reg.pending == Some(id) {
            self.reg.pending = None;
            self.registration_done(now, Err(failure));
        }
    }

    fn registration_done(&mut self, now: Time, outcome: Result<u32, Failure>) {
        self.reg.auth_tries = 0;
        match outcome {
            Ok(expires) => {
                let renewal = self.reg.bound;
                self.reg.bound = true;
                // Refresh at half the lifetime (at least one second on).
                self.reg.next_at = Some(now + (u64::from(expires) * 500).max(1000));
                self.events.push_back(Event::Registered {
                    aor: self.aor(),
                    contact: self.contact.clone(),
                    expires,
                    renewal,
                });
            }
            Err(failure) => {
                self.reg.next_at = self.reg.wanted.then_some(now + RETRY_MS);
                self.events.push_back(Event::RegistrationFailed { failure });
            }
        }
    }

    pub(crate) fn registration_timers(&mut self, now: Time) {
        if self.reg.next_at.is_some_and(|at| at <= now) {
            self.reg.next_at = None;
            if self.reg.wanted && self.reg.pending.is_none() {
                self.send_register(now, None);
            }
        }
    }
}
