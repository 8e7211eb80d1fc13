//! Pager-mode instant messages (RFC 3428): MESSAGE out through the node
//! (with key login on 401/407), MESSAGE in answered 200.

use dots_sip::{HeaderName, Method, Request, Response, SipMessage, Uri};
use dots_txn::{Time, TxnId};

use crate::{printable, Event, Failure, Purpose, UserAgent};

/// A message sent by this agent (the shell's handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageRef(pub u64);

pub(crate) struct OutMessage {
    req: Request,
    txn: Option<TxnId>,
    auth_tries: u8,
}

impl UserAgent {
    /// Sends `text` to `target` through the node; the outcome comes as
    /// [`Event::MessageDelivered`] or [`Event::MessageFailed`].
    pub fn message(
        &mut self,
        now: Time,
        target: Uri,
        content_type: &str,
        text: &str,
    ) -> MessageRef {
        let message = MessageRef(self.alloc_ref());
        let call_id = self.new_call_id();
        let from = format!("<{}>;tag={}", self.cfg.aor(), self.tokens.hex());
        let to = format!("<{target}>");
        let mut req = self.new_request(Method::Message, target, &from, &to, &call_id, 1);
        req.headers.push(HeaderName::ContentType, content_type);
        req.body = text.as_bytes().to_vec();
        let dest = self.cfg.node;
        let txn = self.send(now, req.clone(), dest, Purpose::Message(message));
        self.messages.insert(
            message,
            OutMessage {
                req,
                txn,
                auth_tries: 0,
            },
        );
        if txn.is_none() {
            let failure = Failure::local(500, "the MESSAGE could not be sent".into());
            self.message_done(message, Err(failure));
        }
        message
    }

    fn message_done(&mut self, message: MessageRef, outcome: Result<u16, Failure>) {
        if self.messages.remove(&message).is_none() {
            return;
        }
        self.events.push_back(match outcome {
            Ok(code) => Event::MessageDelivered { message, code },
            Err(failure) => Event::MessageFailed { message, failure },
        });
    }

    pub(crate) fn on_message_response(
        &mut self,
        now: Time,
        message: MessageRef,
        id: TxnId,
        resp: &Response,
    ) {
        let Some(m) = self.messages.get_mut(&message) else {
            return;
        };
        if m.txn != Some(id) || resp.code < 200 {
            return;
        }
        match resp.code {
            200..=299 => self.message_done(message, Ok(resp.code)),
            401 | 407 if m.auth_tries < 2 => {
                m.auth_tries += 1;
                let req = m.req.clone();
                match self.reauthorized(now, &req, resp) {
                    Ok(req) => {
                        let dest = self.cfg.node;
                        let txn = self.send(now, req.clone(), dest, Purpose::Message(message));
                        if let Some(m) = self.messages.get_mut(&message) {
                            m.req = req;
                            m.txn = txn;
                        }
                        if txn.is_none() {
                            let failure =
                                Failure::local(500, "the MESSAGE could not be sent".into());
                            self.message_done(message, Err(failure));
                        }
                    }
                    Err(failure) => self.message_done(message, Err(failure)),
                }
            }
            401 | 407 => {
                let failure =
                    Failure::from_response(resp).with_detail("the node refused the key login");
                self.message_done(message, Err(failure));
            }
            _ => self.message_done(message, Err(Failure::from_response(resp))),
        }
    }

    pub(crate) fn message_failed(&mut self, message: MessageRef, id: TxnId, failure: Failure) {
        if self
            .messages
            .get(&message)
            .is_some_and(|m| m.txn == Some(id))
        {
            self.message_done(message, Err(failure));
        }
    }

    /// An incoming MESSAGE: 200, and the text to the shell.
    pub(crate) fn on_message(&mut self, now: Time, id: TxnId, req: &Request, tag: &str) {
        let resp = self.response(req, 200, tag);
        self.respond(now, id, resp);
        self.events.push_back(Event::MessageReceived {
            from: req
                .from()
                .map(|f| printable(&f.uri.to_string()))
                .unwrap_or_default(),
            content_type: req
                .headers
                .get(HeaderName::ContentType)
                .map(|c| printable(c.trim())),
            text: String::from_utf8_lossy(&req.body).into_owned(),
        });
    }
}
