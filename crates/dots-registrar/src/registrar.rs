//! RFC 3261 §10.3 REGISTER processing on top of the location service.

use dots_sip::header::parse_delta_seconds;
use dots_sip::syntax::split_list;
use dots_sip::{ContactValue, HeaderName, NameAddr, Peer, Request, Response, SipMessage, Uri};

use crate::location::Location;
use crate::{Binding, Millis};

/// Registrar limits, in seconds and contacts.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Shorter non-zero expiries are refused with 423 Interval Too Brief.
    pub min_expires: u32,
    /// Longer expiries are cut down to this.
    pub max_expires: u32,
    /// Used when neither the contact nor the request gives an expiry.
    pub default_expires: u32,
    /// A REGISTER that would leave more live contacts than this on one AOR
    /// is refused (503, as Kamailio's `max_contacts`).
    pub max_contacts_per_aor: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts_per_aor: 16,
        }
    }
}

/// The registrar: REGISTER processing over a [`Location`] service.
pub struct Registrar {
    pub location: Location,
    pub config: RegistrarConfig,
    /// The last Date header value and the second it is for: every 200 in
    /// the same second carries the same text, formatted once.
    date: std::cell::RefCell<(u64, String)>,
}

/// One Contact of a REGISTER, validated.
struct NewContact {
    contact: String,
    uri: Uri,
    contact_uri: String,
    expires: u32,
    q: u16,
    instance: Option<String>,
    reg_id: Option<u32>,
}

/// A step of the plan a REGISTER turns into; applied only if the whole
/// request is accepted, so that a refused REGISTER changes nothing.
enum Op {
    Remove(String),
    /// The request's contact at this index, as a new or refreshed binding.
    Upsert(usize),
}

/// A binding of the AOR as it would be after the REGISTER, for matching the
/// request's contacts against: a view of a current binding or of one of
/// the request's contacts.
struct Slot<'a> {
    contact_uri: &'a str,
    instance: Option<&'a str>,
    reg_id: Option<u32>,
    call_id: &'a str,
    cseq: u32,
    /// The contact's parsed URI when the slot is a new contact.
    parsed: Option<&'a Uri>,
    /// A current binding's URI, parsed only when a contact's URI text
    /// differs from it (equal text is an equivalent URI). The location does
    /// not keep parsed URIs (memory per binding); a restored URI that does
    /// not parse matches nothing.
    lazy: std::cell::OnceCell<Option<Uri>>,
}

impl<'a> Slot<'a> {
    fn current(b: &'a Binding) -> Self {
        Slot {
            contact_uri: &b.contact_uri,
            instance: b.instance.as_deref(),
            reg_id: b.reg_id,
            call_id: &b.call_id,
            cseq: b.cseq,
            parsed: None,
            lazy: std::cell::OnceCell::new(),
        }
    }

    fn new(c: &'a NewContact, call_id: &'a str, cseq: u32) -> Self {
        Slot {
            contact_uri: &c.contact_uri,
            instance: c.instance.as_deref(),
            reg_id: c.reg_id,
            call_id,
            cseq,
            parsed: Some(&c.uri),
            lazy: std::cell::OnceCell::new(),
        }
    }

    fn uri(&self) -> Option<&Uri> {
        self.parsed.or_else(|| {
            self.lazy
                .get_or_init(|| Uri::parse(self.contact_uri).ok())
                .as_ref()
        })
    }

    /// By `+sip.instance` and `reg-id` (RFC 5626) when the contact has an
    /// instance, else by URI equivalence (RFC 3261 §19.1.4).
    fn matches(&self, c: &NewContact) -> bool {
        match &c.instance {
            Some(inst) => {
                self.instance.is_some_and(|i| i.eq_ignore_ascii_case(inst))
                    && self.reg_id == c.reg_id
            }
            None => {
                self.contact_uri == c.contact_uri
                    || self.uri().is_some_and(|u| u.equivalent(&c.uri))
            }
        }
    }
}

impl Registrar {
    pub fn new(config: RegistrarConfig) -> Self {
        Registrar {
            location: Location::new(),
            config,
            date: std::cell::RefCell::new((u64::MAX, String::new())),
        }
    }

    /// RFC 3261 §10.3 steps 5-8 for an already authenticated and authorised
    /// REGISTER whose address-of-record is `aor` (the caller has checked the
    /// domain and the credentials). Returns the complete response; the
    /// changes are recorded for [`Location::drain_changes`].
    ///
    /// - No Contact: a query, answered with the current bindings.
    /// - `Contact: *` removes every binding, and is only valid alone and with
    ///   `Expires: 0` (else 400).
    /// - The expiry of a contact is its `expires` parameter, else the Expires
    ///   header, else `default_expires`; it is cut to `max_expires`, and a
    ///   non-zero value below `min_expires` refuses the whole request with
    ///   423 and Min-Expires. 0 removes the binding.
    /// - A contact matches an existing binding by `+sip.instance` and
    ///   `reg-id` (RFC 5626) when it has an instance, else by URI
    ///   equivalence (RFC 3261 §19.1.4).
    /// - Call-ID/CSeq ordering: a contact that matches a binding with the
    ///   same Call-ID and a CSeq not lower than the request's is ignored and
    ///   the binding left as it is, as Kamailio does, rather than failing the
    ///   request with 500 as §10.3 step 7 reads. A delayed or duplicated
    ///   REGISTER then cannot undo a newer one, and the client still gets the
    ///   current bindings.
    /// - Malformed Expires, Contact, q, expires or reg-id: 400, nothing changed.
    ///
    /// The 200 carries one Contact per live binding with `;expires=` set to
    /// the seconds left (and `;q=` when not 1), a Date header, the request's
    /// Path headers when the UA supports `path` (RFC 3327 §5.3), and
    /// `Require: outbound` when it registered an RFC 5626 flow.
    pub fn handle_register(
        &mut self,
        now: Millis,
        request: &Request,
        aor: &str,
        source: Peer,
    ) -> Response {
        match self.register(now, request, aor, source) {
            Ok(resp) | Err(resp) => resp,
        }
    }

    fn register(
        &mut self,
        now: Millis,
        request: &Request,
        aor: &str,
        source: Peer,
    ) -> Result<Response, Response> {
        let bad = |reason: &str| request.make_response(400, Some(reason));
        let call_id = request
            .call_id()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad("Missing Call-ID"))?
            .to_string();
        let cseq = request.cseq().ok_or_else(|| bad("Invalid CSeq"))?.seq;
        let header_expires = match request.headers.get(HeaderName::Expires) {
            Some(v) => Some(parse_delta_seconds(v).ok_or_else(|| bad("Invalid Expires"))?),
            None => None,
        };
        let mut values = Vec::new();
        for raw in request.headers.get_all(HeaderName::Contact) {
            let parts = split_list(raw).ok_or_else(|| bad("Invalid Contact"))?;
            for part in parts {
                values.push(ContactValue::parse(part).map_err(|_| bad("Invalid Contact"))?);
            }
        }
        let mut path = Vec::new();
        for raw in request.headers.get_all(HeaderName::Path) {
            for part in split_list(raw).ok_or_else(|| bad("Invalid Path"))? {
                NameAddr::parse(part).map_err(|_| bad("Invalid Path"))?;
                path.push(part.to_string());
            }
        }

        // Only live bindings take part in matching and in the answer.
        self.location.expire_aor(aor, now);

        if values.iter().any(|v| matches!(v, ContactValue::Star)) {
            if values.len() != 1 || header_expires != Some(0) {
                return Err(bad(
                    "Invalid Contact: * needs Expires: 0 and no other contact",
                ));
            }
            let gone: Vec<String> = self
                .location
                .entries(aor)
                .iter()
                .filter(|e| !(e.binding.call_id == call_id && e.binding.cseq >= cseq))
                .map(|e| e.binding.contact_uri.clone())
                .collect();
            for contact_uri in gone {
                self.location.remove(aor, &contact_uri);
            }
            return Ok(self.ok_response(now, request, aor, &path));
        }

        let mut contacts = Vec::with_capacity(values.len());
        for v in values {
            if let ContactValue::Addr(addr) = v {
                contacts.push(Some(self.validate_contact(
                    addr,
                    header_expires,
                    request,
                )?));
            }
        }
        // The AOR's bindings as they would be after the request, so that
        // the limit check sees the outcome before anything is applied:
        // borrowed views, not copies, of the current bindings and of the
        // request's contacts.
        let mut work: Vec<Slot> = self
            .location
            .entries(aor)
            .iter()
            .map(|e| Slot::current(&e.binding))
            .collect();
        let before = work.len();
        let mut ops = Vec::new();
        for (k, c) in contacts.iter().enumerate() {
            let c = c
                .as_ref()
                .expect("each contact is taken only after planning");
            let found = work.iter().position(|s| s.matches(c));
            if let Some(i) = found {
                let old = &work[i];
                if old.call_id == call_id && old.cseq >= cseq {
                    continue;
                }
            }
            if c.expires == 0 {
                if let Some(i) = found {
                    ops.push(Op::Remove(work.remove(i).contact_uri.to_string()));
                }
                continue;
            }
            let slot = Slot::new(c, &call_id, cseq);
            match found {
                Some(i) => {
                    if work[i].contact_uri != c.contact_uri {
                        ops.push(Op::Remove(work[i].contact_uri.to_string()));
                    }
                    work[i] = slot;
                }
                None => {
                    // The same URI text under another instance would share
                    // the storage key: the newer registration replaces it.
                    if let Some(j) = work.iter().position(|s| s.contact_uri == c.contact_uri) {
                        work.remove(j);
                    }
                    work.push(slot);
                }
            }
            ops.push(Op::Upsert(k));
        }
        if work.len() > self.config.max_contacts_per_aor && work.len() > before {
            return Err(request.make_response(503, Some("Too Many Registered Contacts")));
        }
        drop(work);
        let user_agent = request.headers.get(HeaderName::UserAgent);
        for op in ops {
            match op {
                Op::Remove(contact_uri) => {
                    self.location.remove(aor, &contact_uri);
                }
                Op::Upsert(k) => {
                    let c = contacts[k].take().expect("a contact is upserted once");
                    let binding = Binding {
                        aor: aor.to_string(),
                        contact: c.contact,
                        contact_uri: c.contact_uri,
                        q: c.q,
                        expires_at: now.saturating_add(u64::from(c.expires) * 1000),
                        call_id: call_id.clone(),
                        cseq,
                        source: Some(source),
                        path: path.clone(),
                        user_agent: user_agent.map(str::to_string),
                        instance: c.instance,
                        reg_id: c.reg_id,
                    };
                    self.location.upsert(binding, now);
                }
            }
        }
        Ok(self.ok_response(now, request, aor, &path))
    }

    fn validate_contact(
        &self,
        mut addr: NameAddr,
        header_expires: Option<u32>,
        request: &Request,
    ) -> Result<NewContact, Response> {
        let bad = |reason: &str| request.make_response(400, Some(reason));
        let expires = match addr.param("expires") {
            Some(v) => v
                .and_then(parse_delta_seconds)
                .ok_or_else(|| bad("Invalid expires parameter"))?,
            None => header_expires.unwrap_or(self.config.default_expires),
        };
        if expires > 0 && expires < self.config.min_expires {
            let mut resp = request.make_response(423, None);
            resp.headers
                .push(HeaderName::MinExpires, self.config.min_expires.to_string());
            return Err(resp);
        }
        let expires = expires.min(self.config.max_expires);
        let q = match addr.param("q") {
            Some(v) => v.and_then(parse_q).ok_or_else(|| bad("Invalid q"))?,
            None => 1000,
        };
        let instance = match addr.param("+sip.instance") {
            Some(Some(v)) => Some(unquote(v).to_string()),
            Some(None) => return Err(bad("Invalid +sip.instance")),
            None => None,
        };
        let reg_id = match addr.param("reg-id") {
            Some(v) => Some(
                v.and_then(parse_delta_seconds)
                    .filter(|&r| r > 0 && r < u32::MAX)
                    .ok_or_else(|| bad("Invalid reg-id"))?,
            ),
            None => None,
        };
        addr.params
            .retain(|(n, _)| !n.eq_ignore_ascii_case("expires") && !n.eq_ignore_ascii_case("q"));
        Ok(NewContact {
            contact: addr.to_string(),
            contact_uri: addr.uri.to_string(),
            uri: addr.uri,
            expires,
            q,
            instance,
            reg_id,
        })
    }

    fn ok_response(&self, now: Millis, request: &Request, aor: &str, path: &[String]) -> Response {
        let mut resp = request.make_response(200, None);
        let mut outbound = false;
        for b in self.location.lookup(aor, now) {
            let mut value = b.contact.clone();
            if b.q != 1000 {
                value.push_str(";q=");
                value.push_str(&format_q(b.q));
            }
            value.push_str(";expires=");
            value.push_str(&b.remaining_secs(now).to_string());
            resp.headers.push(HeaderName::Contact, value);
            outbound |= b.reg_id.is_some();
        }
        // Path is stored whatever the UA supports (the proxies that added it
        // need it to reach the UA) but echoed only to a UA that understands
        // it, as Kamailio's path_mode 2 does.
        if supports(request, "path") {
            for p in path {
                resp.headers.push(HeaderName::Path, p.clone());
            }
        }
        if outbound && supports(request, "outbound") {
            // RFC 5626 §6: tell the UA its flows are being used.
            resp.headers.push(HeaderName::Require, "outbound");
        }
        let mut date = self.date.borrow_mut();
        if date.0 != now / 1000 {
            *date = (now / 1000, http_date(now));
        }
        resp.headers.push(HeaderName::Date, date.1.clone());
        resp
    }
}

/// Whether the request lists `option` in a Supported header.
fn supports(request: &Request, option: &str) -> bool {
    request
        .headers
        .get_all(HeaderName::Supported)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(option))
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Parses an RFC 3261 qvalue (`0`, `0.5`, `1.000`...) into thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn format_q(q: u16) -> String {
    if q >= 1000 {
        return "1".to_string();
    }
    let s = format!("0.{q:03}");
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}

/// An RFC 1123 date (`Sun, 06 Nov 1994 08:49:37 GMT`) for the Date header.
pub fn http_date(now: Millis) -> String {
    let secs = now / 1000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    // Civil-from-days (H. Hinnant), valid for any date after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn q_values() {
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.25"), Some(250));
        assert_eq!(parse_q("0.001"), Some(1));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0."), Some(0));
        assert_eq!(parse_q("1."), Some(1000));
        for bad in [
            "", "1.5", "1.001", "2", "0.1234", "-0.5", "0.x", ".5", "01", "0,5",
        ] {
            assert!(parse_q(bad).is_none(), "{bad}");
        }
        assert_eq!(format_q(500), "0.5");
        assert_eq!(format_q(250), "0.25");
        assert_eq!(format_q(0), "0");
        assert_eq!(format_q(1000), "1");
    }

    #[test]
    fn date_header() {
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
