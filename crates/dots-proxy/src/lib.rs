//! # dots-proxy: the SIP engine of a DOTS node
//!
//! A sans-I/O state machine that is, at once, a registrar (RFC 3261 §10)
//! with digest authentication (RFC 8760) and a stateful, forking proxy
//! (RFC 3261 §16) on top of the transaction layer of `dots-txn`. It owns no
//! socket and reads no clock: the shell feeds it parsed messages with their
//! source and the current time, then drains what to send and when to wake
//! it up again.
//!
//! ```
//! use dots_proxy::{Engine, EngineConfig};
//! use dots_sip::{parse_datagram, Peer, TransportKind};
//!
//! let mut engine = Engine::new(EngineConfig::for_addr("127.0.0.1:5060".parse().unwrap()), 7);
//! let now = 1_700_000_000_000; // ms since the UNIX epoch
//! let datagram = b"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
//! From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: c1\r\n\
//! CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
//! let source = Peer::new(TransportKind::Udp, "127.0.0.1:5070".parse().unwrap());
//! engine.handle_message(now, parse_datagram(datagram).unwrap(), source);
//! let answer = engine.poll_transmit().expect("the node answers OPTIONS");
//! assert!(answer.bytes.starts_with(b"SIP/2.0 200 OK"));
//! assert_eq!(answer.dest.addr, source.addr);
//! // Then: persist engine.drain_binding_changes(), sleep until
//! // engine.poll_timeout() and call engine.handle_timeout(now).
//! ```

mod config;
mod engine;
mod flow;
mod identity;
mod overlay;
mod stats;

pub use config::{EngineConfig, Listener};
pub use engine::{stamp_received, Engine, ALLOW, SUPPORTED};
pub use identity::AccountOwner;
pub use overlay::{LookupRequest, PresenceChange, RemotePresence, ROUTED_HEADER};
pub use stats::Stats;
