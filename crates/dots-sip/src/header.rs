//! Header fields: names (with compact forms), the ordered header list, and
//! typed views of the headers a proxy and registrar act on.
//!
//! Headers are stored as text. Headers that RFC 3261 allows to be combined
//! with commas (Via, Contact, Route, Record-Route, ...) are split into one
//! entry per value when parsed, so that a proxy can pop or push a single
//! value. Every other header, known or not, is kept verbatim.

use std::fmt;

use crate::syntax::{self, find_unquoted, is_token, parse_params, parse_quoted, write_params};
use crate::uri::{is_valid_host, split_host_port, Uri};
use crate::Method;

/// Header names the stack acts on; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    Route,
    RecordRoute,
    ContentLength,
    ContentType,
    Expires,
    MinExpires,
    Authorization,
    WwwAuthenticate,
    ProxyAuthorization,
    ProxyAuthenticate,
    Allow,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    Date,
    RetryAfter,
    Path,
    Event,
    Subject,
    ContentEncoding,
    Accept,
    UserAgent,
    Server,
    Other,
}

impl HeaderName {
    /// Classifies a header name (case-insensitive, compact forms included).
    pub fn classify(name: &str) -> HeaderName {
        use HeaderName::*;
        if name.len() == 1 {
            return match name.as_bytes()[0].to_ascii_lowercase() {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'e' => ContentEncoding,
                b's' => Subject,
                b'k' => Supported,
                b'o' => Event,
                _ => Other,
            };
        }
        const TABLE: &[(&str, HeaderName)] = &[
            ("via", Via),
            ("from", From),
            ("to", To),
            ("call-id", CallId),
            ("cseq", CSeq),
            ("contact", Contact),
            ("max-forwards", MaxForwards),
            ("route", Route),
            ("record-route", RecordRoute),
            ("content-length", ContentLength),
            ("content-type", ContentType),
            ("expires", Expires),
            ("min-expires", MinExpires),
            ("authorization", Authorization),
            ("www-authenticate", WwwAuthenticate),
            ("proxy-authorization", ProxyAuthorization),
            ("proxy-authenticate", ProxyAuthenticate),
            ("allow", Allow),
            ("supported", Supported),
            ("require", Require),
            ("proxy-require", ProxyRequire),
            ("unsupported", Unsupported),
            ("date", Date),
            ("retry-after", RetryAfter),
            ("path", Path),
            ("event", Event),
            ("subject", Subject),
            ("content-encoding", ContentEncoding),
            ("accept", Accept),
            ("user-agent", UserAgent),
            ("server", Server),
        ];
        TABLE
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, h)| *h)
            .unwrap_or(Other)
    }

    /// The canonical long form used when the stack creates a header.
    pub fn canonical(self) -> &'static str {
        use HeaderName::*;
        match self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            Contact => "Contact",
            MaxForwards => "Max-Forwards",
            Route => "Route",
            RecordRoute => "Record-Route",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            Expires => "Expires",
            MinExpires => "Min-Expires",
            Authorization => "Authorization",
            WwwAuthenticate => "WWW-Authenticate",
            ProxyAuthorization => "Proxy-Authorization",
            ProxyAuthenticate => "Proxy-Authenticate",
            Allow => "Allow",
            Supported => "Supported",
            Require => "Require",
            ProxyRequire => "Proxy-Require",
            Unsupported => "Unsupported",
            Date => "Date",
            RetryAfter => "Retry-After",
            Path => "Path",
            Event => "Event",
            Subject => "Subject",
            ContentEncoding => "Content-Encoding",
            Accept => "Accept",
            UserAgent => "User-Agent",
            Server => "Server",
            Other => "",
        }
    }

    /// Headers whose comma-separated values are split into separate entries
    /// at parse time. (Authorization-type headers contain commas but are a
    /// single value.)
    pub fn is_list(self) -> bool {
        use HeaderName::*;
        matches!(self, Via | Contact | Route | RecordRoute | Path)
    }
}

/// One header field: the name as received and its (unfolded) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: HeaderName,
    pub name: String,
    pub value: String,
}

impl Header {
    pub fn new(kind: HeaderName, value: impl Into<String>) -> Header {
        Header {
            kind,
            name: kind.canonical().to_string(),
            value: value.into(),
        }
    }

    /// A header with an arbitrary name (extension headers).
    pub fn other(name: impl Into<String>, value: impl Into<String>) -> Header {
        let name = name.into();
        Header {
            kind: HeaderName::classify(&name),
            name,
            value: value.into(),
        }
    }
}

/// The ordered list of header fields of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// First value of a known header.
    pub fn get(&self, kind: HeaderName) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.kind == kind)
            .map(|h| h.value.as_str())
    }

    /// All values of a known header, in order.
    pub fn get_all(&self, kind: HeaderName) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |h| h.kind == kind)
            .map(|h| h.value.as_str())
    }

    /// First value of a header by name (any header, case-insensitive;
    /// compact forms match their long names, extension headers included).
    pub fn get_named(&self, name: &str) -> Option<&str> {
        let matches = name_matcher(name);
        self.0.iter().find(|h| matches(h)).map(|h| h.value.as_str())
    }

    /// All values of a header by name, in order (see [`Headers::get_named`]).
    pub fn get_all_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let matches = name_matcher(name);
        self.0
            .iter()
            .filter(move |h| matches(h))
            .map(|h| h.value.as_str())
    }

    /// The comma-separated tokens of list-valued headers such as Supported,
    /// Require, Proxy-Require, Unsupported or Allow, across all their
    /// header lines (empty items skipped).
    pub fn tokens(&self, kind: HeaderName) -> impl Iterator<Item = &str> {
        self.get_all(kind)
            .flat_map(|v| v.split(','))
            .map(|t| t.trim_matches([' ', '\t']))
            .filter(|t| !t.is_empty())
    }

    pub fn count(&self, kind: HeaderName) -> usize {
        self.0.iter().filter(|h| h.kind == kind).count()
    }

    /// Appends a header at the end.
    pub fn push(&mut self, kind: HeaderName, value: impl Into<String>) {
        self.0.push(Header::new(kind, value));
    }

    /// Inserts a header before the first header of the same kind (or at the
    /// end if there is none); this is how Via and Record-Route are added.
    pub fn push_front(&mut self, kind: HeaderName, value: impl Into<String>) {
        let pos = self
            .0
            .iter()
            .position(|h| h.kind == kind)
            .unwrap_or(self.0.len());
        self.0.insert(pos, Header::new(kind, value));
    }

    /// Inserts a header at the very top of the header list.
    pub fn insert_top(&mut self, kind: HeaderName, value: impl Into<String>) {
        self.0.insert(0, Header::new(kind, value));
    }

    /// Removes and returns the first value of a header.
    pub fn pop_front(&mut self, kind: HeaderName) -> Option<String> {
        let pos = self.0.iter().position(|h| h.kind == kind)?;
        Some(self.0.remove(pos).value)
    }

    /// Removes all headers of a kind.
    pub fn remove_all(&mut self, kind: HeaderName) {
        self.0.retain(|h| h.kind != kind);
    }

    /// Replaces all headers of a kind with one value (keeping the position of
    /// the first, or appending).
    pub fn set(&mut self, kind: HeaderName, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter().position(|h| h.kind == kind) {
            Some(pos) => {
                self.0[pos] = Header::new(kind, value);
                let mut i = 0;
                self.0.retain(|h| {
                    let keep = h.kind != kind || i == pos;
                    i += 1;
                    keep
                });
            }
            None => self.push(kind, value),
        }
    }
}

/// A predicate matching headers called `name` (see [`Headers::get_named`]).
fn name_matcher(name: &str) -> impl Fn(&Header) -> bool + '_ {
    let kind = HeaderName::classify(name);
    let long = extension_long_name(name);
    move |h: &Header| {
        if kind != HeaderName::Other {
            return h.kind == kind;
        }
        h.kind == HeaderName::Other
            && (h.name.eq_ignore_ascii_case(name)
                || long.is_some_and(|l| extension_long_name(&h.name) == Some(l)))
    }
}

/// Compact forms of extension headers that have no [`HeaderName`] of their
/// own (IANA SIP header registry). Returns the lower-case long name for
/// either form.
fn extension_long_name(name: &str) -> Option<&'static str> {
    const TABLE: &[(u8, &str)] = &[
        (b'a', "accept-contact"),
        (b'b', "referred-by"),
        (b'd', "request-disposition"),
        (b'j', "reject-contact"),
        (b'n', "identity-info"),
        (b'r', "refer-to"),
        (b'u', "allow-events"),
        (b'x', "session-expires"),
        (b'y', "identity"),
    ];
    if let [c] = name.as_bytes() {
        let c = c.to_ascii_lowercase();
        return TABLE.iter().find(|(k, _)| *k == c).map(|(_, l)| *l);
    }
    TABLE
        .iter()
        .find(|(_, l)| l.eq_ignore_ascii_case(name))
        .map(|(_, l)| *l)
}

/// Errors from the typed header parsers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} header: {reason}")]
pub struct HeaderError {
    pub header: &'static str,
    pub reason: &'static str,
}

fn herr(header: &'static str, reason: &'static str) -> HeaderError {
    HeaderError { header, reason }
}

/// A Via header value (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `SIP/2.0` protocol name and version, kept as written.
    pub protocol: String,
    /// Transport, upper-cased (`UDP`, `TCP`, `TLS`, `WS`, `WSS`, ...).
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, HeaderError> {
        let e = |r| herr("Via", r);
        let value = value.trim();
        // sent-protocol = name SLASH version SLASH transport, with optional LWS around slashes.
        let mut rest = value;
        let mut parts = [""; 3];
        for (i, part) in parts.iter_mut().enumerate() {
            rest = rest.trim_start();
            let end = if i < 2 {
                rest.find('/').ok_or(e("bad sent-protocol"))?
            } else {
                rest.find([' ', '\t']).ok_or(e("missing sent-by"))?
            };
            let tok = rest[..end].trim();
            if !is_token(tok) {
                return Err(e("bad sent-protocol token"));
            }
            *part = tok;
            rest = if i < 2 {
                &rest[end + 1..]
            } else {
                &rest[end..]
            };
        }
        if !parts[0].eq_ignore_ascii_case("SIP") {
            return Err(e("protocol is not SIP"));
        }
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i..]),
            None => (rest.trim(), ""),
        };
        // LWS is allowed around the colon of sent-by (rare: only then copy).
        let sent_by: std::borrow::Cow<str> = if sent_by.contains(char::is_whitespace) {
            sent_by
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .into()
        } else {
            sent_by.into()
        };
        let (host, port) = split_host_port(&sent_by).ok_or(e("bad sent-by"))?;
        if !is_valid_host(host) {
            return Err(e("bad host"));
        }
        let params = parse_params(params).ok_or(e("bad parameters"))?;
        Ok(Via {
            protocol: if parts[0] == "SIP" && parts[1] == "2.0" {
                "SIP/2.0".to_string()
            } else {
                format!("{}/{}", parts[0], parts[1])
            },
            transport: parts[2].to_ascii_uppercase(),
            host: host.to_ascii_lowercase(),
            port,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        syntax::param(&self.params, name)
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        syntax::set_param(&mut self.params, name, value);
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = format!("{}/{} {}", self.protocol, self.transport, self.host);
        if let Some(p) = self.port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        write_params(&mut out, &self.params);
        f.write_str(&out)
    }
}

/// A name-addr or addr-spec with header parameters: From, To, Contact,
/// Route, Record-Route (RFC 3261 §20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name without quotes (unescaped), if any.
    pub display_name: Option<String>,
    pub uri: Uri,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Vec::new(),
        }
    }

    pub fn parse(value: &str) -> Result<NameAddr, HeaderError> {
        let e = |r| herr("address", r);
        let value = value.trim();
        let (display_name, after_dn) = if value.starts_with('"') {
            let (dn, rest) = parse_quoted(value).ok_or(e("unterminated quoted display name"))?;
            let rest = rest.trim_start();
            if !rest.starts_with('<') {
                return Err(e("display name without <uri>"));
            }
            (Some(dn), rest)
        } else if let Some(lt) = find_unquoted(value, b'<') {
            let dn = value[..lt].trim();
            if !dn.is_empty() {
                // An unquoted display name is a sequence of tokens.
                if !dn
                    .split([' ', '\t'])
                    .filter(|t| !t.is_empty())
                    .all(is_token)
                {
                    return Err(e("display name is not a token list"));
                }
            }
            (
                if dn.is_empty() {
                    None
                } else {
                    Some(dn.to_string())
                },
                &value[lt..],
            )
        } else {
            (None, value)
        };
        if let Some(inner) = after_dn.strip_prefix('<') {
            let gt = inner.find('>').ok_or(e("missing '>'"))?;
            let uri = Uri::parse(&inner[..gt]).map_err(|_| e("bad URI"))?;
            let params = parse_params(&inner[gt + 1..]).ok_or(e("bad parameters"))?;
            Ok(NameAddr {
                display_name,
                uri,
                params,
            })
        } else {
            // addr-spec: parameters after the URI belong to the header, and the
            // URI itself can have neither parameters nor headers visible here.
            let (uri_str, params) = match after_dn.find(';') {
                Some(i) => (&after_dn[..i], &after_dn[i..]),
                None => (after_dn, ""),
            };
            let uri_str = uri_str.trim();
            if uri_str.contains('?') || uri_str.contains(',') {
                return Err(e("URI with headers must be enclosed in <>"));
            }
            if uri_str.contains(char::is_whitespace) {
                return Err(e("white space in addr-spec"));
            }
            let uri = Uri::parse(uri_str).map_err(|_| e("bad URI"))?;
            let params = parse_params(params).ok_or(e("bad parameters"))?;
            Ok(NameAddr {
                display_name: None,
                uri,
                params,
            })
        }
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        syntax::param(&self.params, name)
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        syntax::set_param(&mut self.params, name, value);
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(64);
        if let Some(dn) = &self.display_name {
            out.push('"');
            for c in dn.chars() {
                match c {
                    // A line break cannot be quoted: never let it end the header.
                    '\r' | '\n' => out.push(' '),
                    // qdtext excludes other controls; quoted-pair carries them.
                    '"' | '\\' | '\0'..='\x08' | '\x0b'..='\x1f' | '\x7f' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push_str("\" ");
        }
        out.push('<');
        out.push_str(&self.uri.to_string());
        out.push('>');
        write_params(&mut out, &self.params);
        f.write_str(&out)
    }
}

/// A CSeq value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, HeaderError> {
        let e = |r| herr("CSeq", r);
        let mut it = value.split_whitespace();
        let seq = it.next().ok_or(e("missing number"))?;
        let method = it.next().ok_or(e("missing method"))?;
        if it.next().is_some() {
            return Err(e("trailing text"));
        }
        if seq.len() > 10 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(e("bad sequence number"));
        }
        // RFC 3261 §8.1.1.5: the sequence number must be below 2**31.
        let seq: u32 = seq.parse().map_err(|_| e("sequence number too large"))?;
        if seq >= 1 << 31 {
            return Err(e("sequence number too large"));
        }
        let method = Method::from_token(method).ok_or(e("bad method"))?;
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A Contact header value: `*` or an address with parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // `*` is rare; boxing would cost every contact
pub enum ContactValue {
    Star,
    Addr(NameAddr),
}

impl ContactValue {
    pub fn parse(value: &str) -> Result<ContactValue, HeaderError> {
        if value.trim() == "*" {
            Ok(ContactValue::Star)
        } else {
            NameAddr::parse(value).map(ContactValue::Addr)
        }
    }
}

/// Parses a delta-seconds value (Expires, Min-Expires, Max-Forwards...):
/// digits only, saturating at `u32::MAX` as RFC 3261 §25.1 suggests for
/// oversized values.
pub fn parse_delta_seconds(value: &str) -> Option<u32> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map(|n| n.min(u32::MAX as u64) as u32)
            .unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> Headers {
        Headers(list.iter().map(|(n, v)| Header::other(*n, *v)).collect())
    }

    #[test]
    fn get_named_matches_compact_forms_of_extension_headers() {
        let h = headers(&[
            ("r", "<sip:carol@example.com>"),
            ("Refer-To", "<sip:dave@x>"),
        ]);
        assert_eq!(h.get_named("Refer-To"), Some("<sip:carol@example.com>"));
        assert_eq!(h.get_named("refer-to"), Some("<sip:carol@example.com>"));
        assert_eq!(h.get_named("R"), Some("<sip:carol@example.com>"));
        assert_eq!(h.get_all_named("r").count(), 2);
        assert_eq!(h.get_named("q"), None);
        let h = headers(&[("x", "1800;refresher=uas")]);
        assert_eq!(h.get_named("Session-Expires"), Some("1800;refresher=uas"));
        // Known headers still match through their kind.
        let h = headers(&[("v", "SIP/2.0/UDP h")]);
        assert_eq!(h.get_named("Via"), Some("SIP/2.0/UDP h"));
    }

    #[test]
    fn tokens_split_list_valued_headers() {
        let h = headers(&[("Supported", "path, outbound,,gruu"), ("k", " 100rel ")]);
        let t: Vec<_> = h.tokens(HeaderName::Supported).collect();
        assert_eq!(t, ["path", "outbound", "gruu", "100rel"]);
        assert_eq!(h.tokens(HeaderName::Require).count(), 0);
    }

    #[test]
    fn name_addr_display_re_parses() {
        for s in [
            "\"J Rosenberg \\\\\\\"\" <sip:jdrosen@example.com>;tag=98asjd8",
            "caller<sip:caller@example.com>;tag=323",
            "sip:a@b;tag=1;q=\"0.5\"",
            "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>",
        ] {
            let na = NameAddr::parse(s).unwrap();
            assert_eq!(NameAddr::parse(&na.to_string()).unwrap(), na, "{s}");
        }
        // Controls are escaped, line breaks cannot be injected.
        let mut na = NameAddr::parse("\"BEL:\\\x07 NUL:\\\0\" <sip:a@b>").unwrap();
        assert_eq!(na.display_name.as_deref(), Some("BEL:\x07 NUL:\0"));
        assert_eq!(na.to_string(), "\"BEL:\\\x07 NUL:\\\0\" <sip:a@b>");
        na.display_name = Some("x\r\nVia: evil".into());
        assert_eq!(na.to_string(), "\"x  Via: evil\" <sip:a@b>");
        // Found by fuzzing: an opaque URI ending in '>' in addr-spec form.
        assert!(NameAddr::parse("callerAsip:caller@exa}ple.com>;tag=323").is_err());
    }

    #[test]
    fn via_display_re_parses() {
        let v = Via::parse("SIP  / 2.0  / tcp  [2001:DB8::1] : 5061 ; branch = z9hG4bK1;rport")
            .unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
    }
}
