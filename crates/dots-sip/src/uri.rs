//! `sip:`, `sips:` and `tel:` URIs (RFC 3261 §19.1, RFC 3966); any other
//! absolute URI is kept as an opaque string so that it passes through.

use std::fmt;

use crate::syntax::{percent_decode, write_params};

/// The scheme of a URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other absolute URI scheme (e.g. `mailto`, `http`), lower-cased.
    Other(String),
}

impl Scheme {
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }
}

/// A parsed URI.
///
/// For `sip:`/`sips:` every field is meaningful. For `tel:` the number is in
/// `user` and `host` is empty. For other schemes the text after the colon is
/// kept in `opaque`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    /// User part, still percent-encoded as received.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Host as written (IPv6 references keep their brackets), lower-cased.
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
    /// The `?h=v&...` part, without the `?`, still escaped.
    pub headers: Option<String>,
    /// Whole scheme-specific part for `Scheme::Other`.
    pub opaque: Option<String>,
}

/// Why a URI did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid URI: {0}")]
pub struct UriError(pub &'static str);

fn is_unreserved_user_char(b: u8) -> bool {
    // unreserved / escaped / user-unreserved (RFC 3261 §25.1)
    b.is_ascii_alphanumeric() || b"-_.!~*'()%&=+$,;?/".contains(&b)
}

fn is_password_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()%&=+$,".contains(&b)
}

fn is_param_char(b: u8) -> bool {
    // paramchar = param-unreserved / unreserved / escaped
    b.is_ascii_alphanumeric() || b"[]/:&+$-_.!~*'()%=".contains(&b)
}

/// `uric` (RFC 3261 §25.1) plus `[]` (IPv6 references) and `#`: what the
/// scheme-specific part of an absolute URI may contain. Excludes `<`, `>`,
/// `"` and white space, so that the URI can be enclosed in `<>`.
fn is_opaque_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'();/?:@&=+$,%[]#".contains(&b)
}

fn is_header_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"[]/?:+$-_.!~*'()%=&".contains(&b)
}

/// Validates a host: hostname, IPv4 address or `[IPv6]` reference.
pub fn is_valid_host(host: &str) -> bool {
    if host.is_empty() {
        return false;
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => false,
        };
    }
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with('.')
        && !host.starts_with('-')
}

impl Uri {
    /// Parses a URI. `s` must not contain surrounding white space.
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(UriError("white space or control character"));
        }
        let colon = s.find(':').ok_or(UriError("missing scheme"))?;
        let scheme_str = &s[..colon];
        if scheme_str.is_empty()
            || !scheme_str.as_bytes()[0].is_ascii_alphabetic()
            || !scheme_str
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(UriError("bad scheme"));
        }
        let rest = &s[colon + 1..];
        match scheme_str.to_ascii_lowercase().as_str() {
            "sip" => Self::parse_sip(Scheme::Sip, rest),
            "sips" => Self::parse_sip(Scheme::Sips, rest),
            "tel" => Self::parse_tel(rest),
            other => {
                if rest.is_empty() {
                    return Err(UriError("empty URI"));
                }
                if !rest.bytes().all(is_opaque_char) {
                    return Err(UriError("bad character in URI"));
                }
                Ok(Uri {
                    scheme: Scheme::Other(other.to_string()),
                    user: None,
                    password: None,
                    host: String::new(),
                    port: None,
                    params: Vec::new(),
                    headers: None,
                    opaque: Some(rest.to_string()),
                })
            }
        }
    }

    fn parse_tel(rest: &str) -> Result<Uri, UriError> {
        let (number, params) = match rest.find(';') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if number.is_empty()
            || !number
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b"+-.()*#pw".contains(&b.to_ascii_lowercase()))
        {
            return Err(UriError("bad telephone number"));
        }
        let params = parse_uri_params(params).ok_or(UriError("bad tel parameters"))?;
        Ok(Uri {
            scheme: Scheme::Tel,
            user: Some(number.to_string()),
            password: None,
            host: String::new(),
            port: None,
            params,
            headers: None,
            opaque: None,
        })
    }

    fn parse_sip(scheme: Scheme, rest: &str) -> Result<Uri, UriError> {
        // The user part may contain ';', '?' and ':' unescaped, while '@' is
        // legal in neither parameters nor headers: the last '@' ends it.
        let (userinfo, after_user) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostpart, headers) = match after_user.find('?') {
            Some(i) => (&after_user[..i], Some(&after_user[i + 1..])),
            None => (after_user, None),
        };
        if let Some(h) = headers {
            if h.is_empty() || !h.bytes().all(is_header_char) {
                return Err(UriError("bad URI headers"));
            }
        }
        let (user, password) = match userinfo {
            Some(ui) => {
                let (u, p) = match ui.find(':') {
                    Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() || !u.bytes().all(is_unreserved_user_char) {
                    return Err(UriError("bad user part"));
                }
                percent_decode(u).ok_or(UriError("bad escape in user part"))?;
                if let Some(p) = p {
                    if !p.bytes().all(is_password_char) {
                        return Err(UriError("bad password"));
                    }
                }
                (Some(u.to_string()), p.map(str::to_string))
            }
            None => (None, None),
        };
        let (hostport, params) = match hostpart.find(';') {
            Some(i) => (&hostpart[..i], &hostpart[i..]),
            None => (hostpart, ""),
        };
        let (host, port) = split_host_port(hostport).ok_or(UriError("bad host or port"))?;
        if !is_valid_host(host) {
            return Err(UriError("bad host"));
        }
        let params = parse_uri_params(params).ok_or(UriError("bad URI parameter"))?;
        Ok(Uri {
            scheme,
            user,
            password,
            host: host.to_ascii_lowercase(),
            port,
            params,
            headers: headers.map(str::to_string),
            opaque: None,
        })
    }

    /// Builds a plain `sip:user@host[:port]` URI.
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: Scheme::Sip,
            user: user.map(str::to_string),
            password: None,
            host: host.to_ascii_lowercase(),
            port,
            params: Vec::new(),
            headers: None,
            opaque: None,
        }
    }

    /// Looks up a URI parameter (case-insensitive name).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        crate::syntax::param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        crate::syntax::set_param(&mut self.params, name, value.map(str::to_string));
    }

    pub fn remove_param(&mut self, name: &str) {
        self.params.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The `transport` parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.param("transport")
            .flatten()
            .map(|t| t.to_ascii_lowercase())
    }

    /// The user part with escapes decoded (invalid UTF-8 is replaced).
    pub fn user_decoded(&self) -> Option<String> {
        self.user
            .as_deref()
            .and_then(percent_decode)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The address-of-record key: `scheme:user@host` with the user decoded and
    /// the host lower-cased; port, parameters and headers dropped. This is the
    /// form under which the registrar stores bindings.
    pub fn aor(&self) -> String {
        match &self.scheme {
            Scheme::Tel => format!("tel:{}", self.user.as_deref().unwrap_or("")),
            Scheme::Other(s) => format!("{}:{}", s, self.opaque.as_deref().unwrap_or("")),
            scheme => match self.user_decoded() {
                Some(u) => format!("{}:{}@{}", scheme.as_str(), u, self.host),
                None => format!("{}:{}", scheme.as_str(), self.host),
            },
        }
    }

    /// URI equality as RFC 3261 §19.1.4 defines it for SIP URIs (scheme,
    /// user and password case-sensitive after unescaping, host
    /// case-insensitive, port, and the parameters that must match when
    /// present in either). Other schemes compare textually.
    pub fn equivalent(&self, other: &Uri) -> bool {
        if self.scheme != other.scheme {
            return false;
        }
        if !matches!(self.scheme, Scheme::Sip | Scheme::Sips) {
            return self.to_string().eq_ignore_ascii_case(&other.to_string());
        }
        let dec = |s: &Option<String>| s.as_deref().and_then(percent_decode);
        if dec(&self.user) != dec(&other.user)
            || dec(&self.password) != dec(&other.password)
            || !self.host.eq_ignore_ascii_case(&other.host)
            || self.port != other.port
        {
            return false;
        }
        for name in ["user", "ttl", "method", "maddr", "transport"] {
            let a = self.param(name).flatten().map(str::to_ascii_lowercase);
            let b = other.param(name).flatten().map(str::to_ascii_lowercase);
            if a != b {
                return false;
            }
        }
        // Parameters present in both must agree (the first occurrence of a
        // name counts, as in `param`).
        for (i, (n, v)) in self.params.iter().enumerate() {
            if self.params[..i]
                .iter()
                .any(|(m, _)| m.eq_ignore_ascii_case(n))
            {
                continue;
            }
            if let Some(ov) = other.param(n) {
                let a = v.as_deref().map(str::to_ascii_lowercase);
                let b = ov.map(str::to_ascii_lowercase);
                if a != b {
                    return false;
                }
            }
        }
        self.headers == other.headers
    }
}

/// Parses `;name[=value]...` URI parameters (no white space, no quoting).
fn parse_uri_params(s: &str) -> Option<Vec<(String, Option<String>)>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    let s = s.strip_prefix(';')?;
    s.split(';')
        .map(|p| {
            if p.is_empty() || !p.bytes().all(is_param_char) {
                return None;
            }
            Some(match p.split_once('=') {
                Some((n, v)) if !n.is_empty() => (n.to_string(), Some(v.to_string())),
                Some(_) => return None,
                None => (p.to_string(), None),
            })
        })
        .collect()
}

/// Splits `host[:port]`, with IPv6 references in brackets.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        let after = &s[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (&s[..=end], Some(p)),
            None if after.is_empty() => (&s[..=end], None),
            None => return None,
        }
    } else {
        match s.rfind(':') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(p.parse::<u16>().ok()?)
        }
        None => None,
    };
    Some((host, port))
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(48);
        out.push_str(self.scheme.as_str());
        out.push(':');
        match self.scheme {
            Scheme::Other(_) => out.push_str(self.opaque.as_deref().unwrap_or("")),
            Scheme::Tel => {
                out.push_str(self.user.as_deref().unwrap_or(""));
                write_params(&mut out, &self.params);
            }
            _ => {
                if let Some(u) = &self.user {
                    out.push_str(u);
                    if let Some(p) = &self.password {
                        out.push(':');
                        out.push_str(p);
                    }
                    out.push('@');
                }
                out.push_str(&self.host);
                if let Some(p) = self.port {
                    out.push(':');
                    out.push_str(&p.to_string());
                }
                write_params(&mut out, &self.params);
                if let Some(h) = &self.headers {
                    out.push('?');
                    out.push_str(h);
                }
            }
        }
        f.write_str(&out)
    }
}

impl std::str::FromStr for Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_parameters_keep_equivalence_reflexive() {
        // Found by fuzzing: the second `a` used to be compared with the first.
        let u = Uri::parse("sip:host;a=x;a=y").unwrap();
        assert!(u.equivalent(&u));
        assert_eq!(u.param("a"), Some(Some("x")));
    }

    #[test]
    fn opaque_uris_cannot_contain_angle_brackets_or_quotes() {
        // Found by fuzzing: `<x:a>>` could not be enclosed in `<>` again.
        assert!(Uri::parse("callerasip:caller@example.com>").is_err());
        assert!(Uri::parse("urn:\"x\"").is_err());
        let u = Uri::parse("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6").unwrap();
        assert_eq!(
            u.to_string(),
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
        );
        assert_eq!(u.scheme, Scheme::Other("urn".into()));
    }

    #[test]
    fn tel_parameters_are_plain_paramchars() {
        assert!(Uri::parse("tel:+1;x=\"a>b\"").is_err());
        let u = Uri::parse("tel:+1-555-0100;phone-context=example.com").unwrap();
        assert_eq!(u.user.as_deref(), Some("+1-555-0100"));
        assert_eq!(u.param("phone-context"), Some(Some("example.com")));
        assert_eq!(Uri::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn empty_parameter_names_are_rejected() {
        assert!(Uri::parse("sip:host;=x").is_err());
        assert!(Uri::parse("sip:host;").is_err());
        assert!(Uri::parse("sip:host;;lr").is_err());
    }

    #[test]
    fn sip_uri_round_trips() {
        for s in [
            "sip:user:pw@[2001:db8::1]:5060;transport=tcp;lr?subject=x&h=%41",
            "sips:alice@example.com",
            "sip:user;par=u%40example.net@example.com",
            "sip:%00@host5.example.com",
        ] {
            let u = Uri::parse(s).unwrap();
            assert_eq!(u.to_string(), s);
            assert_eq!(Uri::parse(&u.to_string()).unwrap(), u);
            assert!(u.equivalent(&u));
        }
    }
}
