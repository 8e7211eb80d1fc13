//! # dots-sip: the SIP message layer of DOTS
//!
//! A sans-I/O SIP (RFC 3261) message model: parse bytes into a [`Message`],
//! inspect and edit it through typed views of the headers that matter to a
//! registrar and proxy ([`Via`], [`NameAddr`], [`CSeq`], [`Uri`]), and
//! serialise it back. Unknown methods, headers and URI schemes pass through
//! unchanged. Nothing here does I/O or reads a clock.
//!
//! ```
//! use dots_sip::{parse_datagram, Message, SipMessage};
//!
//! let bytes = b"OPTIONS sip:node.example SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
//! Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\n\
//! To: <sip:node.example>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
//! Content-Length: 0\r\n\r\n";
//! let Message::Request(req) = parse_datagram(bytes).unwrap() else { panic!() };
//! let resp = req.make_response(200, None);
//! assert!(String::from_utf8(resp.to_bytes()).unwrap().starts_with("SIP/2.0 200 OK\r\n"));
//! assert_eq!(req.top_via().unwrap().branch(), Some("z9hG4bK1"));
//! ```
//!
//! Parsing never panics, whatever the input; malformed messages yield a
//! [`ParseError`] that says which status code (400, 505, 513) to answer with.

pub mod header;
pub mod message;
pub mod method;
pub mod parse;
pub mod syntax;
pub mod transport;
pub mod uri;

pub use header::{CSeq, ContactValue, Header, HeaderName, Headers, NameAddr, Via};
pub use message::{default_reason, Message, Request, Response, SipMessage};
pub use method::Method;
pub use parse::{parse_datagram, parse_stream, ParseError, ParseErrorKind, MAX_MESSAGE_SIZE};
pub use transport::{Peer, TransportKind};
pub use uri::{Scheme, Uri};
