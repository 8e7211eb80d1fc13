//! Key login (DOTS-Sig) from the user agent's side: find the node's DOTS-Sig
//! challenge among the challenges of a 401 or 407, and answer it with the
//! wallet's key (`dots_identity::login`).
//!
//! A 401 carries `WWW-Authenticate` headers and is answered in
//! `Authorization`; a 407 carries `Proxy-Authenticate` and is answered in
//! `Proxy-Authorization`. The node offers Digest challenges next to the
//! DOTS-Sig one; the agent has no password and answers only DOTS-Sig.

use dots_identity::login::{self, Challenge, LoginError};
use dots_identity::Wallet;
use dots_sip::{HeaderName, Request, Response, SipMessage};

/// Validity slack of the grant beyond the expiry asked for (ms), so that a
/// refresh that comes a little late leaves the node with a valid grant.
pub const GRANT_SLACK_MS: u64 = 30_000;

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No DOTS-Sig challenge: the node wants something the agent cannot give.
    #[error("the node does not offer key login ({scheme}); it offers {}", offered_text(.offered))]
    NoKeyLogin {
        scheme: &'static str,
        /// The schemes (with algorithm, for Digest) it does offer.
        offered: Vec<String>,
    },
    /// A DOTS-Sig challenge the agent cannot use.
    #[error("the node's DOTS-Sig challenge is unusable: {0}")]
    Malformed(#[from] LoginError),
}

fn offered_text(offered: &[String]) -> String {
    if offered.is_empty() {
        "no challenge at all".into()
    } else {
        offered.join(", ")
    }
}

/// Which header carries challenges in a 401 or 407, and which one answers them.
pub fn challenge_headers(code: u16) -> Option<(HeaderName, HeaderName)> {
    match code {
        401 => Some((HeaderName::WwwAuthenticate, HeaderName::Authorization)),
        407 => Some((
            HeaderName::ProxyAuthenticate,
            HeaderName::ProxyAuthorization,
        )),
        _ => None,
    }
}

/// The DOTS-Sig challenge of a 401 or 407 response. When there are several,
/// the first well-formed one wins.
pub fn pick_challenge(response: &Response) -> Result<Challenge, AuthError> {
    let Some((header, _)) = challenge_headers(response.code) else {
        return Err(AuthError::NoKeyLogin {
            scheme: login::SCHEME,
            offered: Vec::new(),
        });
    };
    let mut malformed = None;
    let mut offered = Vec::new();
    for value in response.headers().get_all(header) {
        match Challenge::parse(value) {
            Some(Ok(challenge)) => return Ok(challenge),
            Some(Err(e)) => malformed = Some(e),
            None => offered.push(describe(value)),
        }
    }
    match malformed {
        Some(e) => Err(AuthError::Malformed(e)),
        None => Err(AuthError::NoKeyLogin {
            scheme: login::SCHEME,
            offered,
        }),
    }
}

/// "Digest (MD5)" for a Digest challenge, the scheme name for others.
fn describe(challenge: &str) -> String {
    let challenge = challenge.trim_start();
    let scheme: String = challenge
        .chars()
        .take_while(|c| !c.is_whitespace())
        .take(32)
        .filter(|c| c.is_ascii_graphic())
        .collect();
    let algorithm = challenge.split(',').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        let name = name.trim().rsplit(' ').next()?;
        name.eq_ignore_ascii_case("algorithm")
            .then(|| value.trim().trim_matches('"').to_string())
    });
    match algorithm {
        Some(a) if a.len() <= 32 && a.bytes().all(|b| b.is_ascii_graphic()) => {
            format!("{scheme} ({a})")
        }
        _ => scheme,
    }
}

/// What to tell the user when a node challenges and `pick_challenge` fails.
pub fn explain(node: &dots_sip::Peer, error: &AuthError) -> String {
    match error {
        AuthError::NoKeyLogin { scheme, offered } => format!(
            "the node at {node} does not offer key login ({scheme}), only {}; \
             use a node on the overlay (one started with --p2p offers it), \
             or one started with --open",
            offered_text(offered)
        ),
        AuthError::Malformed(_) => format!("the node at {node}: {error}"),
    }
}

/// Answers `challenge` for `request` and puts the credentials in `header`
/// (Authorization or Proxy-Authorization), replacing earlier ones. The
/// signature covers the method, the Request-URI as serialised, the Contact
/// header value exactly as sent (empty without one) and the Expires header
/// (0 without one). `now` is in ms since the UNIX epoch.
pub fn authorize(
    wallet: &Wallet,
    challenge: &Challenge,
    request: &mut Request,
    header: HeaderName,
    now: u64,
) -> Result<(), LoginError> {
    let contact = request
        .headers
        .get(HeaderName::Contact)
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    let expires = request.expires().unwrap_or(0);
    let creds = login::answer(
        wallet,
        challenge,
        request.method.as_str(),
        &request.uri.to_string(),
        &contact,
        expires,
        now,
        GRANT_SLACK_MS,
    )?;
    request.headers.set(header, creds.to_header());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dots_sip::{parse_datagram, Message};

    fn response(code: u16, challenges: &[&str]) -> Response {
        let name = if code == 407 {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let mut text = format!(
            "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1\r\n\
             From: <sip:a@h>;tag=1\r\nTo: <sip:a@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n"
        );
        for c in challenges {
            text.push_str(&format!("{name}: {c}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        match parse_datagram(text.as_bytes()).unwrap() {
            Message::Response(r) => r,
            _ => unreachable!(),
        }
    }

    const DIGEST_MD5: &str = "Digest realm=\"dots\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"";
    const DIGEST_SHA: &str = "Digest realm=\"dots\", nonce=\"n2\", algorithm=SHA-256, qop=\"auth\"";
    const KEY: &str = "DOTS-Sig realm=\"dots\", nonce=\"n3\", node=\"12D3KooWabc\"";

    #[test]
    fn picks_dots_sig_among_digest() {
        let c = pick_challenge(&response(401, &[DIGEST_MD5, DIGEST_SHA, KEY])).unwrap();
        assert_eq!(c.nonce, "n3");
        assert_eq!(c.node, "12D3KooWabc");
        // Scheme names are case-insensitive; 407 works the same way.
        let c = pick_challenge(&response(407, &[&KEY.replace("DOTS-Sig", "dots-sig")])).unwrap();
        assert_eq!(c.realm, "dots");
    }

    #[test]
    fn no_key_login_says_what_is_offered() {
        let err = pick_challenge(&response(401, &[DIGEST_MD5, DIGEST_SHA])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the node does not offer key login (DOTS-Sig); it offers Digest (MD5), Digest (SHA-256)"
        );
        let err = pick_challenge(&response(401, &[])).unwrap_err();
        assert!(
            err.to_string().ends_with("it offers no challenge at all"),
            "{err}"
        );
    }

    #[test]
    fn malformed_key_challenge_is_reported() {
        let err = pick_challenge(&response(401, &["DOTS-Sig realm=\"dots\""])).unwrap_err();
        assert!(
            matches!(err, AuthError::Malformed(LoginError::Missing(_))),
            "{err}"
        );
        // A good one later still wins.
        assert!(pick_challenge(&response(401, &["DOTS-Sig realm=\"x", KEY])).is_ok());
    }
}
