//! # dots-proxy: the SIP engine of a DOTS node
//!
//! A sans-I/O state machine that is, at once, a registrar (RFC 3261 §10)
//! with digest authentication (RFC 8760) and a stateful, forking proxy
//! (RFC 3261 §16) on top of the transaction layer of `dots-txn`. It owns no
//! socket and reads no clock: the shell feeds it parsed messages with their
//! source and the current time, then drains what to send and when to wake
//! it up again.
//!
//! ```no_run
//! use dots_proxy::{Engine, EngineConfig};
//! # fn recv() -> (dots_sip::Message, dots_sip::Peer) { unimplemented!() }
//! # fn send(_: dots_txn::Transmit) {}
//! let mut engine = Engine::new(EngineConfig::for_addr("127.0.0.1:5060".parse().unwrap()), 7);
//! let now = 1_700_000_000_000; // ms since the UNIX epoch
//! let (msg, source) = recv();
//! engine.handle_message(now, msg, source);
//! while let Some(t) = engine.poll_transmit() {
//!     send(t);
//! }
//! // Persist registration changes, then sleep until engine.poll_timeout()
//! // and call engine.handle_timeout(now).
//! let _changes = engine.drain_binding_changes();
//! ```

mod config;
mod engine;
mod overlay;
mod stats;

pub use config::{EngineConfig, Listener};
pub use engine::{Engine, ALLOW, SUPPORTED};
pub use overlay::{LookupRequest, PresenceChange, RemotePresence, ROUTED_HEADER};
pub use stats::Stats;
