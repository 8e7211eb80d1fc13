//! The message parser: datagrams (one message, extra octets ignored, RFC
//! 3261 §18.3) and streams (framed by Content-Length, which is mandatory).
//!
//! Parsing validates the start line and the headers every element relies on
//! (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length, Contact,
//! Route, Record-Route, Expires, Date), so that later code can use the typed
//! getters without re-checking. Anything else is kept as text.

use std::borrow::Cow;

use crate::header::{
    parse_delta_seconds, CSeq, ContactValue, Header, HeaderName, Headers, NameAddr, Via,
};
use crate::message::{Message, Request, Response};
use crate::syntax::{is_token, split_list};
use crate::{Method, Uri};

/// Largest message the parser accepts (headers and body together).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// What kind of failure, which decides the response a server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Not enough bytes yet (streams only).
    Incomplete,
    /// Malformed: answer 400 if a response can be formed.
    BadRequest,
    /// `SIP/x.y` other than 2.0: answer 505.
    VersionNotSupported,
    /// Larger than [`MAX_MESSAGE_SIZE`]: answer 513.
    TooLarge,
}

/// A parse failure. For requests whose start line and headers could be read,
/// `partial` holds them, so that a server can send an error response with
/// the right Via, From, To, Call-ID and CSeq.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub reason: String,
    pub partial: Option<Box<Request>>,
}

impl ParseError {
    fn bad(reason: impl Into<String>) -> ParseError {
        ParseError {
            kind: ParseErrorKind::BadRequest,
            reason: reason.into(),
            partial: None,
        }
    }

    /// The status code a server should answer with, if any.
    pub fn status_code(&self) -> Option<u16> {
        match self.kind {
            ParseErrorKind::Incomplete => None,
            ParseErrorKind::BadRequest => Some(400),
            ParseErrorKind::VersionNotSupported => Some(505),
            ParseErrorKind::TooLarge => Some(513),
        }
    }
}

/// Parses one message from a datagram. Octets after the body that
/// Content-Length announces are ignored; without Content-Length the body
/// runs to the end of the datagram.
pub fn parse_datagram(data: &[u8]) -> Result<Message, ParseError> {
    if data.len() > MAX_MESSAGE_SIZE {
        return Err(ParseError {
            kind: ParseErrorKind::TooLarge,
            reason: "message too large".into(),
            partial: None,
        });
    }
    let data = skip_leading_crlf(data);
    let head_end = find_head_end(data).ok_or_else(|| ParseError::bad("no end of headers"))?;
    let (start, headers) = parse_head(&data[..head_end.0])?;
    let rest = &data[head_end.1..];
    let body = match content_length(&headers) {
        Ok(Some(n)) if n <= rest.len() => rest[..n].to_vec(),
        Ok(Some(_)) => {
            return Err(with_partial(
                &start,
                &headers,
                "Content-Length larger than message",
            ))
        }
        Ok(None) => rest.to_vec(),
        Err(e) => return Err(with_partial(&start, &headers, e)),
    };
    finish(start, headers, body)
}

/// Parses one message from the front of a stream buffer. Returns the message
/// and the number of bytes consumed, or an `Incomplete` error when more
/// bytes are needed. Leading CRLFs (keep-alives) are skipped.
pub fn parse_stream(data: &[u8]) -> Result<(Message, usize), ParseError> {
    let skipped = data.len() - skip_leading_crlf(data).len();
    let buf = &data[skipped..];
    let incomplete = || ParseError {
        kind: ParseErrorKind::Incomplete,
        reason: "incomplete message".into(),
        partial: None,
    };
    let Some(head_end) = find_head_end(buf) else {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError {
                kind: ParseErrorKind::TooLarge,
                reason: "header section too large".into(),
                partial: None,
            });
        }
        return Err(incomplete());
    };
    let (start, headers) = parse_head(&buf[..head_end.0])?;
    let n = match content_length(&headers) {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Err(with_partial(
                &start,
                &headers,
                "Content-Length is required on stream transports",
            ))
        }
        Err(e) => return Err(with_partial(&start, &headers, e)),
    };
    if head_end.1 + n > MAX_MESSAGE_SIZE {
        return Err(ParseError {
            kind: ParseErrorKind::TooLarge,
            reason: "message too large".into(),
            partial: None,
        });
    }
    if buf.len() < head_end.1 + n {
        return Err(incomplete());
    }
    let body = buf[head_end.1..head_end.1 + n].to_vec();
    let msg = finish(start, headers, body)?;
    Ok((msg, skipped + head_end.1 + n))
}

/// Number of leading CRLF keep-alive bytes at the front of a stream buffer
/// (RFC 5626 §3.5.1 double-CRLF ping).
pub fn leading_crlf_len(data: &[u8]) -> usize {
    data.len() - skip_leading_crlf(data).len()
}

fn skip_leading_crlf(mut data: &[u8]) -> &[u8] {
    while let Some((&b, rest)) = data.split_first() {
        if b == b'\r' || b == b'\n' {
            data = rest;
        } else {
            break;
        }
    }
    data
}

/// Returns (end of last header line, start of body). Accepts CRLF CRLF and,
/// leniently, LF LF.
fn find_head_end(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\n' {
            if data.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if data.get(i + 1) == Some(&b'\r') && data.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

enum StartLine {
    Request(Method, Uri),
    Response(u16, String),
}

fn parse_head(head: &[u8]) -> Result<(StartLine, Headers), ParseError> {
    let text =
        std::str::from_utf8(head).map_err(|_| ParseError::bad("header section is not UTF-8"))?;
    let (first, rest) = match text.find('\n') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    let first = first.strip_suffix('\r').unwrap_or(first);
    if first.contains('\r') {
        return Err(ParseError::bad("bare CR in start line"));
    }
    let headers = match parse_header_lines(rest, true) {
        Ok(h) => h,
        Err(mut e) => {
            // A malformed header line does not stop a server from answering
            // 400 to a request: keep the lines that do parse.
            if looks_like_request(first) {
                e.partial = lenient_request_line(first).map(|(method, uri)| {
                    Box::new(Request {
                        method,
                        uri,
                        headers: parse_header_lines(rest, false).unwrap_or_default(),
                        body: Vec::new(),
                    })
                });
            }
            return Err(e);
        }
    };
    match parse_start_line(first) {
        Ok(start) => Ok((start, headers)),
        Err(mut e) => {
            // Keep what a server needs to answer 400 or 505 to a request.
            if e.kind == ParseErrorKind::VersionNotSupported || looks_like_request(first) {
                e.partial = lenient_request_line(first).map(|(method, uri)| {
                    Box::new(Request {
                        method,
                        uri,
                        headers,
                        body: Vec::new(),
                    })
                });
            }
            Err(e)
        }
    }
}

fn looks_like_request(line: &str) -> bool {
    !line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
}

/// Best-effort reading of a malformed Request-Line (extra white space, a
/// Request-URI in `<>` or with LWS inside), used only to fill
/// [`ParseError::partial`].
fn lenient_request_line(line: &str) -> Option<(Method, Uri)> {
    let mut tokens: Vec<&str> = line.split_ascii_whitespace().collect();
    if tokens.len() < 3 {
        return None;
    }
    let version = tokens.pop()?;
    if !version
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        return None;
    }
    let method = Method::from_token(tokens[0])?;
    let uri_text: String = tokens[1..].concat();
    let uri_text = uri_text
        .strip_prefix('<')
        .and_then(|u| u.strip_suffix('>'))
        .unwrap_or(&uri_text);
    let uri = Uri::parse(uri_text).ok()?;
    Some((method, uri))
}

/// Parses the header lines that follow the start line: unfolds continuation
/// lines (RFC 3261 §7.3.1) and splits comma-separated list headers. When
/// not `strict`, malformed lines are skipped instead of failing.
fn parse_header_lines(text: &str, strict: bool) -> Result<Headers, ParseError> {
    let mut headers = Headers(Vec::with_capacity(16));
    let mut current: Option<Cow<'_, str>> = None;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.contains('\r') {
            if strict {
                return Err(ParseError::bad("bare CR in header section"));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some(prev) = current.as_mut() else {
                if strict {
                    return Err(ParseError::bad("continuation line without header"));
                }
                continue;
            };
            let prev = prev.to_mut();
            prev.push(' ');
            prev.push_str(line.trim_start_matches([' ', '\t']));
            continue;
        }
        if let Some(done) = current.take() {
            match push_header(&mut headers, &done) {
                Err(e) if strict => return Err(e),
                _ => {}
            }
        }
        if !line.is_empty() {
            current = Some(Cow::Borrowed(line));
        }
    }
    if let Some(done) = current {
        match push_header(&mut headers, &done) {
            Err(e) if strict => return Err(e),
            _ => {}
        }
    }
    Ok(headers)
}

fn push_header(headers: &mut Headers, line: &str) -> Result<(), ParseError> {
    let colon = line
        .find(':')
        .ok_or_else(|| ParseError::bad("header line without colon"))?;
    let name = line[..colon].trim_end_matches([' ', '\t']);
    if !is_token(name) {
        return Err(ParseError::bad(format!("invalid header name {name:?}")));
    }
    let value = line[colon + 1..].trim_matches([' ', '\t']);
    let kind = HeaderName::classify(name);
    if kind.is_list() {
        let parts = split_list(value)
            .ok_or_else(|| ParseError::bad(format!("unterminated quoted string in {name}")))?;
        for part in parts {
            headers.0.push(Header {
                kind,
                name: name.to_string(),
                value: part.to_string(),
            });
        }
    } else {
        headers.0.push(Header {
            kind,
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Ok(())
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if !looks_like_request(line) {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let (version, rest) = line[4..]
            .split_once(' ')
            .ok_or_else(|| ParseError::bad("bad status line"))?;
        check_version(version)?;
        let (code, reason) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::bad("status code must be three digits"));
        }
        let code: u16 = code
            .parse()
            .map_err(|_| ParseError::bad("bad status code"))?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::bad("status code out of range"));
        }
        if reason
            .bytes()
            .any(|b| (b < b' ' && b != b'\t') || b == 0x7f)
        {
            return Err(ParseError::bad("control character in reason phrase"));
        }
        return Ok(StartLine::Response(code, reason.to_string()));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces.
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::bad(
            "request line must be: METHOD SP URI SP SIP/2.0",
        ));
    };
    let method = Method::from_token(method).ok_or_else(|| ParseError::bad("invalid method"))?;
    let version = version
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .map(|_| &version[4..])
        .ok_or_else(|| ParseError::bad("request line must end with SIP/2.0"))?;
    let uri = Uri::parse(uri).map_err(|e| ParseError::bad(format!("Request-URI: {e}")))?;
    check_version(version)?;
    if uri.headers.is_some() {
        return Err(ParseError::bad("Request-URI must not contain headers"));
    }
    Ok(StartLine::Request(method, uri))
}

fn check_version(version: &str) -> Result<(), ParseError> {
    if version == "2.0" {
        return Ok(());
    }
    let (major, minor) = version
        .split_once('.')
        .ok_or_else(|| ParseError::bad("bad SIP version"))?;
    if major.is_empty()
        || minor.is_empty()
        || !major.bytes().all(|b| b.is_ascii_digit())
        || !minor.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ParseError::bad("bad SIP version"));
    }
    Err(ParseError {
        kind: ParseErrorKind::VersionNotSupported,
        reason: format!("SIP version {version} not supported"),
        partial: None,
    })
}

fn content_length(headers: &Headers) -> Result<Option<usize>, &'static str> {
    let mut value: Option<usize> = None;
    for v in headers.get_all(HeaderName::ContentLength) {
        let v = v.trim();
        if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err("invalid Content-Length");
        }
        let n: usize = v.parse().map_err(|_| "invalid Content-Length")?;
        if value.is_some_and(|prev| prev != n) {
            return Err("conflicting Content-Length headers");
        }
        value = Some(n);
    }
    Ok(value)
}

fn with_partial(start: &StartLine, headers: &Headers, reason: &str) -> ParseError {
    let partial = match start {
        StartLine::Request(m, u) => Some(Box::new(Request {
            method: m.clone(),
            uri: u.clone(),
            headers: headers.clone(),
            body: Vec::new(),
        })),
        StartLine::Response(..) => None,
    };
    ParseError {
        kind: ParseErrorKind::BadRequest,
        reason: reason.to_string(),
        partial,
    }
}

fn finish(start: StartLine, headers: Headers, body: Vec<u8>) -> Result<Message, ParseError> {
    let method = match &start {
        StartLine::Request(m, _) => Some(m),
        StartLine::Response(..) => None,
    };
    if let Err(reason) = validate_headers(&headers, method) {
        return Err(with_partial(&start, &headers, &reason));
    }
    Ok(match start {
        StartLine::Request(method, uri) => Message::Request(Request {
            method,
            uri,
            headers,
            body,
        }),
        StartLine::Response(code, reason) => Message::Response(Response {
            code,
            reason,
            headers,
            body,
        }),
    })
}

/// Checks the headers the stack depends on. `method` is the request method
/// (None for responses).
fn validate_headers(headers: &Headers, method: Option<&Method>) -> Result<(), String> {
    let mut seen_via = false;
    let (mut from, mut to, mut call_id, mut cseq) = (0, 0, 0, 0);
    for h in headers.iter() {
        let v = h.value.as_str();
        match h.kind {
            HeaderName::Via => {
                Via::parse(v).map_err(|e| e.to_string())?;
                seen_via = true;
            }
            HeaderName::From | HeaderName::To => {
                NameAddr::parse(v).map_err(|e| format!("{}: {e}", h.name))?;
                if h.kind == HeaderName::From {
                    from += 1
                } else {
                    to += 1
                }
            }
            HeaderName::CallId => {
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return Err("invalid Call-ID".into());
                }
                call_id += 1;
            }
            HeaderName::CSeq => {
                let c = CSeq::parse(v).map_err(|e| e.to_string())?;
                if let Some(m) = method {
                    if &c.method != m {
                        return Err("CSeq method does not match the request method".into());
                    }
                }
                cseq += 1;
            }
            HeaderName::MaxForwards => {
                let n = parse_delta_seconds(v).ok_or("invalid Max-Forwards")?;
                if n > 255 {
                    return Err("Max-Forwards above 255".into());
                }
            }
            HeaderName::Contact => {
                ContactValue::parse(v).map_err(|e| format!("Contact: {e}"))?;
            }
            HeaderName::Route | HeaderName::RecordRoute | HeaderName::Path => {
                let na = NameAddr::parse(v).map_err(|e| format!("{}: {e}", h.name))?;
                if v.trim_start().starts_with(|c: char| c != '<' && c != '"')
                    && na.display_name.is_none()
                {
                    // Route-type headers must use the name-addr form.
                    if !v.contains('<') {
                        return Err(format!("{} value must be enclosed in <>", h.name));
                    }
                }
            }
            HeaderName::Expires | HeaderName::MinExpires => {
                parse_delta_seconds(v).ok_or_else(|| format!("invalid {}", h.name))?;
            }
            HeaderName::Date if !v.ends_with(" GMT") => {
                return Err("Date must be in GMT".into());
            }
            _ => {}
        }
    }
    if !seen_via {
        return Err("missing Via".into());
    }
    if from != 1 || to != 1 || call_id != 1 || cseq != 1 {
        return Err("From, To, Call-ID and CSeq must each appear exactly once".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SipMessage;

    const HEADERS: &str = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
        From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n\
        Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n";

    fn msg(start: &str, extra: &str) -> Vec<u8> {
        format!("{start}\r\n{HEADERS}{extra}Content-Length: 0\r\n\r\n").into_bytes()
    }

    #[test]
    fn bad_request_line_still_yields_a_partial_request() {
        for start in [
            "OPTIONS  sip:b@example.com  SIP/2.0",
            "OPTIONS sip:b@example.com SIP/2.0 ",
            "OPTIONS <sip:b@example.com> SIP/2.0",
            "OPTIONS sip:b@example.com; lr SIP/2.0",
        ] {
            let e = parse_datagram(&msg(start, "")).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::BadRequest, "{start}");
            let p = e
                .partial
                .unwrap_or_else(|| panic!("no partial for {start:?}"));
            assert_eq!(p.method, Method::Options);
            assert_eq!(p.uri.host, "example.com");
            assert_eq!(p.call_id(), Some("c1"));
            assert_eq!(p.top_via().unwrap().branch(), Some("z9hG4bK1"));
        }
        // No partial when the start line cannot be read at all.
        let e = parse_datagram(&msg("garbage", "")).unwrap_err();
        assert!(e.partial.is_none());
    }

    #[test]
    fn malformed_header_line_keeps_the_others_in_partial() {
        let e = parse_datagram(&msg(
            "OPTIONS sip:b@example.com SIP/2.0",
            "no colon here\r\n",
        ))
        .unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadRequest);
        let p = e.partial.unwrap();
        assert_eq!(p.cseq().unwrap().seq, 1);
        assert!(p.headers.get_named("no colon here").is_none());
    }

    #[test]
    fn version_505_keeps_partial_and_responses_never_have_one() {
        let e = parse_datagram(&msg("OPTIONS sip:b@example.com SIP/3.0", "")).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::VersionNotSupported);
        assert_eq!(e.partial.unwrap().method, Method::Options);
        let e = parse_datagram(&msg("SIP/3.0 200 OK", "")).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::VersionNotSupported);
        assert!(e.partial.is_none());
    }

    #[test]
    fn version_token_is_case_insensitive() {
        let m = parse_datagram(&msg("OPTIONS sip:b@example.com sip/2.0", "")).unwrap();
        assert!(matches!(m, Message::Request(_)));
        let m = parse_datagram(&msg("sip/2.0 200 OK", "")).unwrap();
        assert!(matches!(m, Message::Response(ref r) if r.code == 200 && r.reason == "OK"));
    }

    #[test]
    fn folding_and_lf_only_line_ends() {
        let text = "OPTIONS sip:b@example.com SIP/2.0\n\
            Via: SIP/2.0/UDP h;\n\tbranch=z9hG4bK1,\n SIP/2.0/TCP g\n\
            From: <sip:a@example.com>;tag=1\nTo: <sip:b@example.com>\n\
            Call-ID: c1\nCSeq: 1\n  OPTIONS\nX-Long: a\n b\n\nbody";
        let Message::Request(r) = parse_datagram(text.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.vias().len(), 2);
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(r.headers.get_named("x-long"), Some("a b"));
        assert_eq!(r.body, b"body");
    }

    #[test]
    fn stream_requires_content_length_and_frames_by_it() {
        let mut wire = b"\r\n\r\n".to_vec();
        wire.extend(msg("OPTIONS sip:b@example.com SIP/2.0", ""));
        let (m, used) = parse_stream(&wire).unwrap();
        assert_eq!(used, wire.len());
        assert!(m.body().is_empty());
        assert_eq!(
            parse_stream(&wire[..wire.len() - 1]).unwrap_err().kind,
            ParseErrorKind::Incomplete
        );
        let no_cl = format!("OPTIONS sip:b@example.com SIP/2.0\r\n{HEADERS}\r\n");
        let e = parse_stream(no_cl.as_bytes()).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadRequest);
        assert!(e.partial.is_some());
    }
}
