//! # dots-node: the tokio shell of a DOTS node
//!
//! Owns everything the sans-I/O engine (`dots-proxy`) must not: sockets
//! (SIP over UDP, TCP, TLS and WebSocket, STUN), the clock, the embedded
//! store (`dots-store`) and the HTTP(S) service (`/healthz`, `/metrics`, the
//! API, `/sip`). [`run`] starts a node from
//! a [`NodeConfig`] and returns after the shutdown future fires and
//! in-flight work is drained and persisted.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = dots_node::NodeConfig::default(); // SIP 127.0.0.1:5060, HTTP 127.0.0.1:8080
//! dots_node::run(config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod config;
mod federation;
pub mod http;
mod https;
pub mod names;
mod node;
pub mod provider;
mod stun;
mod tls;
pub mod transport;
pub mod udp;
pub mod web;
pub mod ws;

pub use config::NodeConfig;
pub use node::run;
