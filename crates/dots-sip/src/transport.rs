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

    /// SIP over WebSocket (RFC 7118): the client is reachable only over the
    /// connection it opened.
    pub fn is_websocket(self) -> bool {
        matches!(self, TransportKind::Ws | TransportKind::Wss)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_datagram, Message, SipMessage, Uri, Via};

    #[test]
    fn websocket_transports_parse_and_print() {
        for (text, kind) in [
            ("WS", TransportKind::Ws),
            ("ws", TransportKind::Ws),
            ("Wss", TransportKind::Wss),
            ("WSS", TransportKind::Wss),
        ] {
            assert_eq!(TransportKind::parse(text), Some(kind), "{text}");
        }
        assert_eq!(TransportKind::Ws.via_name(), "WS");
        assert_eq!(TransportKind::Wss.via_name(), "WSS");
        assert_eq!(TransportKind::Ws.uri_param(), "ws");
        assert_eq!(TransportKind::Wss.uri_param(), "wss");
        // RFC 7118 §5: reliable (no retransmissions) and message-framed (one
        // SIP message per WebSocket message, Content-Length optional).
        for kind in [TransportKind::Ws, TransportKind::Wss] {
            assert!(kind.is_reliable());
            assert!(!kind.is_stream());
            assert!(kind.is_websocket());
        }
        assert!(!TransportKind::Tcp.is_websocket());
        assert_eq!(TransportKind::parse("wsx"), None);
        assert_eq!(TransportKind::parse("w"), None);
        let peer = Peer::new(TransportKind::Wss, "192.0.2.7:443".parse().unwrap());
        assert_eq!(peer.to_string(), "wss:192.0.2.7:443");
    }

    #[test]
    fn via_with_websocket_transport() {
        // The Via JsSIP writes (RFC 7118 §7 examples).
        let via = Via::parse("SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks;rport")
            .expect("WS Via parses");
        assert_eq!(via.transport, "WS");
        assert_eq!(
            TransportKind::parse(&via.transport),
            Some(TransportKind::Ws)
        );
        assert_eq!(via.host, "df7jal23ls0d.invalid");
        assert_eq!(via.port, None);
        assert_eq!(via.param("rport"), Some(None));
        assert_eq!(Via::parse(&via.to_string()).unwrap(), via);

        let via = Via::parse("SIP/2.0/wss proxy.example.com:443;branch=z9hG4bKx").unwrap();
        assert_eq!(via.transport, "WSS");
        assert_eq!(via.port, Some(443));
        assert_eq!(
            via.to_string(),
            "SIP/2.0/WSS proxy.example.com:443;branch=z9hG4bKx"
        );
    }

    #[test]
    fn uri_with_websocket_transport_parameter() {
        let uri = Uri::parse("sip:xyz@abc.invalid;transport=ws").unwrap();
        assert_eq!(uri.transport().as_deref(), Some("ws"));
        assert_eq!(
            uri.transport().as_deref().and_then(TransportKind::parse),
            Some(TransportKind::Ws)
        );
        assert_eq!(uri.host, "abc.invalid");
        assert_eq!(uri.to_string(), "sip:xyz@abc.invalid;transport=ws");

        let mut uri = Uri::parse("sip:proxy.example.com:443;lr").unwrap();
        uri.set_param("transport", Some(TransportKind::Wss.uri_param()));
        let again = Uri::parse(&uri.to_string()).unwrap();
        assert_eq!(again.transport().as_deref(), Some("wss"));
        assert!(again.equivalent(&uri));
        let upper = Uri::parse("sip:bob@example.com;transport=WSS").unwrap();
        assert_eq!(upper.transport().as_deref(), Some("wss"));
    }

    #[test]
    fn register_over_websocket_parses_as_a_message() {
        // One SIP message per WebSocket message (RFC 7118 §5.1), as JsSIP
        // sends it; Content-Length may be absent.
        let text = "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/WSS 3o2i0d1k8m8n.invalid;branch=z9hG4bK2394782\r\n\
             Max-Forwards: 69\r\n\
             To: <sip:alice@127.0.0.1>\r\n\
             From: \"alice\" <sip:alice@127.0.0.1>;tag=hjkh2ilaep\r\n\
             Call-ID: 9v3k4u7a3vt0d8b2hg6i5b\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:l1ujrfl4@3o2i0d1k8m8n.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:e6c7f5b9-1f1d-4c0d-b4a8-1b3b7c1c1c1c>\";expires=600\r\n\
             Expires: 600\r\n\
             Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
             Supported: path,gruu,outbound\r\n\
             User-Agent: JsSIP 3.10.0\r\n\r\n";
        let Message::Request(req) = parse_datagram(text.as_bytes()).expect("parses") else {
            panic!("a request");
        };
        let via = req.top_via().unwrap();
        assert_eq!(
            TransportKind::parse(&via.transport),
            Some(TransportKind::Wss)
        );
        let contact = req.headers.get(crate::HeaderName::Contact).unwrap();
        let na = crate::NameAddr::parse(contact).unwrap();
        assert_eq!(na.uri.transport().as_deref(), Some("ws"));
        assert_eq!(na.param("reg-id"), Some(Some("1")));
    }
}
