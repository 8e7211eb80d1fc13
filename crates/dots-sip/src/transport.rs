//! Transport addressing shared by every layer: which transport, which
//! remote address, and which connection (flow) a message uses.

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl TransportKind {
    /// Reliable transports need no retransmissions (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, TransportKind::Udp)
    }

    /// Stream transports frame messages by Content-Length.
    pub fn is_stream(self) -> bool {
        matches!(self, TransportKind::Tcp | TransportKind::Tls)
    }

    /// The name used in Via headers (`SIP/2.0/UDP`).
    pub fn via_name(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
            TransportKind::Ws => "WS",
            TransportKind::Wss => "WSS",
        }
    }

    /// The value of a URI `transport=` parameter.
    pub fn uri_param(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }

    /// Parses a Via transport or URI `transport=` value (case-insensitive).
    pub fn parse(s: &str) -> Option<TransportKind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "udp" => TransportKind::Udp,
            "tcp" => TransportKind::Tcp,
            "tls" => TransportKind::Tls,
            "ws" => TransportKind::Ws,
            "wss" => TransportKind::Wss,
            _ => return None,
        })
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_name())
    }
}

/// The far end of a message: transport, address, and for connection-based
/// transports the connection it arrived on (so responses and requests to a
/// TCP/TLS-registered contact reuse it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: TransportKind,
    pub addr: SocketAddr,
    /// Identifier of an existing connection chosen by the transport shell;
    /// `None` means "any connection to `addr`, opening one if needed".
    pub flow: Option<u64>,
}

impl Peer {
    pub fn new(transport: TransportKind, addr: SocketAddr) -> Peer {
        Peer {
            transport,
            addr,
            flow: None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.uri_param(), self.addr)
    }
}
