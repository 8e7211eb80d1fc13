//! # dots-registrar: registrar, location service and digest authentication
//!
//! The registrar half of a DOTS node as a sans-I/O core: it never touches a
//! socket, a file or a clock. Every call takes the current wall-clock time as
//! [`Millis`] and returns what to answer; the shell (dots-proxy / dots-node)
//! owns I/O, timers and persistence.
//!
//! Three pieces, used in this order for a REGISTER:
//!
//! 1. [`DigestAuth`] challenges and verifies SIP Digest credentials
//!    (RFC 3261 §22, RFC 7616, RFC 8760: SHA-256 and MD5, `qop=auth`) with
//!    stateless HMAC nonces and bounded replay tracking.
//! 2. [`Registrar::handle_register`] applies RFC 3261 §10.3 steps 5-8 to an
//!    authenticated REGISTER and builds the complete response.
//! 3. [`Location`] (Kamailio's `usrloc`) holds the bindings, answers lookups
//!    for routing, expires bindings and records every change; the shell drains
//!    the changes into the store (dots-store) and, later, the overlay.
//!
//! ```
//! use dots_registrar::{Registrar, RegistrarConfig};
//! use dots_sip::{parse_datagram, Message, Peer, SipMessage, TransportKind};
//!
//! let bytes = b"REGISTER sip:example.com SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
//! Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
//! To: <sip:alice@example.com>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n\
//! Contact: <sip:alice@192.0.2.1:5060>\r\nExpires: 600\r\n\
//! Content-Length: 0\r\n\r\n";
//! let Message::Request(req) = parse_datagram(bytes).unwrap() else { panic!() };
//! let source = Peer::new(TransportKind::Udp, "192.0.2.1:5060".parse().unwrap());
//!
//! let mut registrar = Registrar::new(RegistrarConfig::default());
//! let now = 1_700_000_000_000; // the shell reads the clock, not the registrar
//! let aor = req.to().unwrap().uri.aor();
//! let resp = registrar.handle_register(now, &req, &aor, source);
//! assert_eq!(resp.code, 200);
//!
//! // Route: live bindings, best first.
//! let targets = registrar.location.lookup("sip:alice@example.com", now);
//! assert_eq!(targets[0].contact_uri, "sip:alice@192.0.2.1:5060");
//!
//! // Persist what changed; expire on the timer the location asks for.
//! assert_eq!(registrar.location.drain_changes().len(), 1);
//! let due = registrar.location.next_expiry().unwrap();
//! assert_eq!(registrar.location.expire(due).len(), 1);
//! ```
//!
//! Input from the network never causes a panic: malformed headers give a
//! 400 response or an [`AuthOutcome::Rejected`].

mod binding;
mod digest;
mod location;
mod registrar;

pub use binding::{Binding, Change};
pub use digest::{
    answer_challenge, hash_password, parse_digest_params, AuthOutcome, Credentials, DigestAuth,
    NonceStatus,
};
pub use location::Location;
pub use registrar::{http_date, Registrar, RegistrarConfig};

/// Milliseconds since the UNIX epoch (wall clock, because bindings persist
/// across restarts). All time is input.
pub type Millis = u64;
