//! Requests, responses and their serialisation.

use crate::header::{parse_delta_seconds, CSeq, HeaderName, Headers, NameAddr, Via};
use crate::{Method, Uri};

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Accessors shared by requests and responses. The typed getters re-parse
/// the header text; the parser has already validated the mandatory headers
/// (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length), so on a
/// parsed message they do not fail for those.
pub trait SipMessage {
    fn headers(&self) -> &Headers;
    fn headers_mut(&mut self) -> &mut Headers;
    fn body(&self) -> &[u8];

    fn call_id(&self) -> Option<&str> {
        self.headers().get(HeaderName::CallId)
    }
    fn cseq(&self) -> Option<CSeq> {
        self.headers()
            .get(HeaderName::CSeq)
            .and_then(|v| CSeq::parse(v).ok())
    }
    fn top_via(&self) -> Option<Via> {
        self.headers()
            .get(HeaderName::Via)
            .and_then(|v| Via::parse(v).ok())
    }
    fn vias(&self) -> Vec<Via> {
        self.headers()
            .get_all(HeaderName::Via)
            .filter_map(|v| Via::parse(v).ok())
            .collect()
    }
    fn from(&self) -> Option<NameAddr> {
        self.headers()
            .get(HeaderName::From)
            .and_then(|v| NameAddr::parse(v).ok())
    }
    fn to(&self) -> Option<NameAddr> {
        self.headers()
            .get(HeaderName::To)
            .and_then(|v| NameAddr::parse(v).ok())
    }
    fn expires(&self) -> Option<u32> {
        self.headers()
            .get(HeaderName::Expires)
            .and_then(parse_delta_seconds)
    }
}

impl SipMessage for Request {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
    fn body(&self) -> &[u8] {
        &self.body
    }
}

impl SipMessage for Response {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
    fn body(&self) -> &[u8] {
        &self.body
    }
}

impl SipMessage for Message {
    fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
    fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }
    fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }
}

impl Request {
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    /// Max-Forwards, if present and valid.
    pub fn max_forwards(&self) -> Option<u8> {
        self.headers
            .get(HeaderName::MaxForwards)
            .and_then(parse_delta_seconds)
            .and_then(|v| u8::try_from(v).ok())
    }

    /// Serialises the request; Content-Length is always written and always
    /// equal to the body length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.uri.to_string().as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
        write_headers_and_body(&mut out, &self.headers, &self.body);
        out
    }

    /// Builds a response to this request as RFC 3261 §8.2.6.2 says: Via,
    /// From, To, Call-ID and CSeq copied (Record-Route too for 18x/2xx, the
    /// caller decides), everything else left to the caller.
    pub fn make_response(&self, code: u16, reason: Option<&str>) -> Response {
        let mut headers = Headers::default();
        for h in self.headers.iter() {
            if matches!(
                h.kind,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
            ) {
                headers.0.push(h.clone());
            }
        }
        Response {
            code,
            reason: reason.unwrap_or_else(|| default_reason(code)).to_string(),
            headers,
            body: Vec::new(),
        }
    }
}

impl Response {
    /// Serialises the response; Content-Length always matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(b"SIP/2.0 ");
        out.extend_from_slice(self.code.to_string().as_bytes());
        out.push(b' ');
        push_single_line(&mut out, &self.reason);
        out.extend_from_slice(b"\r\n");
        write_headers_and_body(&mut out, &self.headers, &self.body);
        out
    }

    pub fn is_provisional(&self) -> bool {
        self.code < 200
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Sets the To tag if the To header has none. The original text is
    /// kept and the tag appended, so formatting we do not model survives.
    pub fn ensure_to_tag(&mut self, tag: &str) {
        let Some(raw) = self.headers.get(HeaderName::To) else {
            return;
        };
        // The header's own parameters follow the URI's closing `>` (or are
        // all there is after an addr-spec); a `tag` among them settles it
        // without parsing the URI, which is what every response to a new
        // request would otherwise pay.
        let params = raw.rfind('>').map_or(raw, |i| &raw[i + 1..]);
        let tagged = params.split(';').skip(1).any(|p| {
            p.split('=')
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case("tag"))
        });
        if !tagged {
            let mut value = String::with_capacity(raw.len() + 5 + tag.len());
            value.push_str(raw);
            value.push_str(";tag=");
            value.push_str(tag);
            self.headers.set(HeaderName::To, value);
        }
    }
}

impl Message {
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// Equality up to Content-Length headers: the start line, every other
    /// header (name, value, order) and the body must match. Serialisation
    /// rewrites Content-Length, so this is the equality that survives a
    /// round trip through [`Message::to_bytes`] and the parser.
    pub fn eq_ignoring_content_length(&self, other: &Message) -> bool {
        let same_start = match (self, other) {
            (Message::Request(a), Message::Request(b)) => a.method == b.method && a.uri == b.uri,
            (Message::Response(a), Message::Response(b)) => {
                a.code == b.code && a.reason == b.reason
            }
            _ => false,
        };
        let significant = |m: &'_ Message| {
            m.headers()
                .0
                .iter()
                .filter(|h| h.kind != HeaderName::ContentLength)
                .cloned()
                .collect::<Vec<_>>()
        };
        same_start && self.body() == other.body() && significant(self) == significant(other)
    }
}

/// Writes text that must stay on one line: CR and LF (which parsed messages
/// never contain, but values set by code might) become spaces, so that no
/// value can end its header line and inject another.
fn push_single_line(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if !bytes.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend_from_slice(bytes);
        return;
    }
    out.extend(bytes.iter().map(|&b| match b {
        b'\r' | b'\n' => b' ',
        b => b,
    }));
}

fn write_headers_and_body(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    for h in headers.iter() {
        if h.kind == HeaderName::ContentLength {
            continue;
        }
        push_single_line(out, &h.name);
        out.extend_from_slice(b": ");
        push_single_line(out, &h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// The RFC 3261 §21 reason phrase for a status code.
pub fn default_reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_datagram;

    #[test]
    fn values_set_by_code_cannot_inject_header_lines() {
        let mut req = Request::new(Method::Options, Uri::sip(None, "example.com", None));
        req.headers
            .push(HeaderName::Via, "SIP/2.0/UDP h;branch=z9hG4bK1");
        req.headers
            .push(HeaderName::From, "<sip:a@example.com>;tag=1");
        req.headers.push(HeaderName::To, "<sip:b@example.com>");
        req.headers.push(HeaderName::CallId, "c1");
        req.headers.push(HeaderName::CSeq, "1 OPTIONS");
        req.headers
            .push(HeaderName::Subject, "hi\r\nVia: SIP/2.0/UDP evil");
        let Message::Request(back) = parse_datagram(&req.to_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(back.vias().len(), 1);
        assert_eq!(
            back.headers.get(HeaderName::Subject),
            Some("hi  Via: SIP/2.0/UDP evil")
        );
        let mut resp = req.make_response(200, Some("OK\r\nX: y"));
        resp.body = b"x".to_vec();
        let text = resp.to_bytes();
        assert!(text.starts_with(b"SIP/2.0 200 OK  X: y\r\n"));
        assert!(text.ends_with(b"Content-Length: 1\r\n\r\nx"));
    }

    #[test]
    fn eq_ignoring_content_length_ignores_only_content_length() {
        let raw = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nl: 2\r\nFrom: <sip:a@b>;tag=1\r\n\
            To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\nhi";
        let m = parse_datagram(raw).unwrap();
        let again = parse_datagram(&m.to_bytes()).unwrap();
        assert_ne!(m, again, "Content-Length moved and renamed");
        assert!(m.eq_ignoring_content_length(&again));
        let mut other = again.clone();
        other.headers_mut().push(HeaderName::Subject, "x");
        assert!(!m.eq_ignoring_content_length(&other));
    }

    #[test]
    fn ensure_to_tag_adds_a_tag_only_where_the_header_has_none() {
        let ok = || Response {
            code: 200,
            reason: "OK".into(),
            headers: Headers::default(),
            body: Vec::new(),
        };
        let cases = [
            ("<sip:b@example.com>", "<sip:b@example.com>;tag=t1"),
            (
                "<sip:b@example.com;tag=uri>",
                "<sip:b@example.com;tag=uri>;tag=t1",
            ),
            (
                "\"B>\" <sip:b@example.com>;x=1",
                "\"B>\" <sip:b@example.com>;x=1;tag=t1",
            ),
            ("sip:b@example.com", "sip:b@example.com;tag=t1"),
            ("<sip:b@example.com>;tag=old", "<sip:b@example.com>;tag=old"),
            (
                "<sip:b@example.com> ; TAG = old",
                "<sip:b@example.com> ; TAG = old",
            ),
            ("sip:b@example.com;tag=old", "sip:b@example.com;tag=old"),
            (
                "<sip:b@example.com>;tagx=1",
                "<sip:b@example.com>;tagx=1;tag=t1",
            ),
        ];
        for (to, want) in cases {
            let mut resp = ok();
            resp.headers.push(HeaderName::To, to);
            resp.ensure_to_tag("t1");
            assert_eq!(resp.headers.get(HeaderName::To), Some(want), "{to}");
            let tag = resp.to().and_then(|t| t.tag().map(str::to_owned));
            assert!(tag.is_some(), "{to}: the result parses with a tag");
        }
        let mut none = ok();
        none.ensure_to_tag("t1");
        assert_eq!(none.headers.get(HeaderName::To), None);
    }
}
