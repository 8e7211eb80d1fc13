//! Requests the layer builds itself: the hop-by-hop ACK for a non-2xx final
//! response (RFC 3261 §17.1.1.3) and CANCEL (§9.1).

use dots_sip::{HeaderName, Method, Request, Response, SipMessage};

/// Max-Forwards for requests the layer creates when the INVITE has none.
const DEFAULT_MAX_FORWARDS: &str = "70";

/// Copies what ACK and CANCEL share with the INVITE: Request-URI, the top
/// Via only (so they belong to the INVITE's branch), Max-Forwards, Route,
/// From and Call-ID. To and CSeq differ between the two and are the
/// caller's.
fn skeleton(invite: &Request, method: Method) -> Request {
    let mut req = Request::new(method, invite.uri.clone());
    let h = &invite.headers;
    if let Some(via) = h.get(HeaderName::Via) {
        req.headers.push(HeaderName::Via, via);
    }
    req.headers.push(
        HeaderName::MaxForwards,
        h.get(HeaderName::MaxForwards)
            .unwrap_or(DEFAULT_MAX_FORWARDS),
    );
    for route in h.get_all(HeaderName::Route) {
        req.headers.push(HeaderName::Route, route);
    }
    if let Some(from) = h.get(HeaderName::From) {
        req.headers.push(HeaderName::From, from);
    }
    req
}

fn finish(req: &mut Request, invite: &Request, to: Option<&str>, method: &str) {
    if let Some(to) = to {
        req.headers.push(HeaderName::To, to);
    }
    if let Some(call_id) = invite.call_id() {
        req.headers.push(HeaderName::CallId, call_id);
    }
    // The CSeq number is the INVITE's; only the method changes.
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    req.headers
        .push(HeaderName::CSeq, format!("{seq} {method}"));
}

/// The ACK for a 300-699 response to `invite`: To comes from the response,
/// because it carries the tag the answering element chose.
pub(crate) fn ack_for(invite: &Request, response: &Response) -> Request {
    let mut ack = skeleton(invite, Method::Ack);
    let to = response
        .headers
        .get(HeaderName::To)
        .or_else(|| invite.headers.get(HeaderName::To));
    finish(&mut ack, invite, to, "ACK");
    ack
}

/// The CANCEL for `invite`: To is the INVITE's, without any tag a response
/// may have added, so that every branch of a fork matches it.
pub(crate) fn cancel_for(invite: &Request) -> Request {
    let mut cancel = skeleton(invite, Method::Cancel);
    finish(
        &mut cancel,
        invite,
        invite.headers.get(HeaderName::To),
        "CANCEL",
    );
    cancel
}
