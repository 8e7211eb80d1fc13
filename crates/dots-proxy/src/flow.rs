//! Flow tokens (RFC 5626 §5.2): the connection a client is reached over,
//! written into the user part of the node's Record-Route entry that faces
//! the client. A WebSocket client (RFC 7118) has no address anyone can
//! connect to (its Contact is `sip:xyz@abc.invalid;transport=ws`): in-dialog
//! requests for it carry this Route and go back over the very connection.
//!
//! The token is authenticated with a key of the node's own (a truncated
//! SHA-256 over key and payload), so that nobody can forge a Route that
//! steers requests into another client's connection.

use std::net::{IpAddr, SocketAddr};

use dots_sip::{Peer, TransportKind};
use sha2::{Digest, Sha256};

const MAC_LEN: usize = 8;

/// Makes and checks flow tokens with one node key.
#[derive(Debug, Clone)]
pub(crate) struct FlowTokens {
    key: [u8; 32],
}

fn transport_code(t: TransportKind) -> u8 {
    match t {
        TransportKind::Udp => 0,
        TransportKind::Tcp => 1,
        TransportKind::Tls => 2,
        TransportKind::Ws => 3,
        TransportKind::Wss => 4,
    }
}

fn transport_of(code: u8) -> Option<TransportKind> {
    Some(match code {
        0 => TransportKind::Udp,
        1 => TransportKind::Tcp,
        2 => TransportKind::Tls,
        3 => TransportKind::Ws,
        4 => TransportKind::Wss,
        _ => return None,
    })
}

impl FlowTokens {
    pub(crate) fn new(key: [u8; 32]) -> FlowTokens {
        FlowTokens { key }
    }

    fn mac(&self, payload: &[u8]) -> [u8; MAC_LEN] {
        let mut h = Sha256::new();
        h.update(b"dots-flow-token\0");
        h.update(self.key);
        h.update(payload);
        let digest = h.finalize();
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&digest[..MAC_LEN]);
        mac
    }

    /// The token of a connection (lower-case hex, a valid URI user part);
    /// `None` for a peer without a connection.
    pub(crate) fn encode(&self, peer: Peer) -> Option<String> {
        let flow = peer.flow?;
        let mut payload = vec![transport_code(peer.transport)];
        payload.extend_from_slice(&flow.to_be_bytes());
        payload.extend_from_slice(&peer.addr.port().to_be_bytes());
        match peer.addr.ip() {
            IpAddr::V4(ip) => payload.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => payload.extend_from_slice(&ip.octets()),
        }
        let mac = self.mac(&payload);
        payload.extend_from_slice(&mac);
        Some(payload.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The connection a token names, if the token is one of ours.
    pub(crate) fn decode(&self, token: &str) -> Option<Peer> {
        if !token.len().is_multiple_of(2) || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let bytes: Vec<u8> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .ok()?;
        let (payload, mac) = bytes.split_at(bytes.len().checked_sub(MAC_LEN)?);
        // Not constant-time: a forger learns nothing useful from timing a
        // truncated hash it cannot compute.
        if self.mac(payload) != mac {
            return None;
        }
        let transport = transport_of(*payload.first()?)?;
        let flow = u64::from_be_bytes(payload.get(1..9)?.try_into().ok()?);
        let port = u16::from_be_bytes(payload.get(9..11)?.try_into().ok()?);
        let ip = match payload.len() - 11 {
            4 => IpAddr::from(<[u8; 4]>::try_from(&payload[11..]).ok()?),
            16 => IpAddr::from(<[u8; 16]>::try_from(&payload[11..]).ok()?),
            _ => return None,
        };
        Some(Peer {
            transport,
            addr: SocketAddr::new(ip, port),
            flow: Some(flow),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_resist_forgery() {
        let tokens = FlowTokens::new([7; 32]);
        for (t, addr) in [
            (TransportKind::Ws, "127.0.0.1:50123"),
            (TransportKind::Wss, "[2001:db8::1]:443"),
            (TransportKind::Tcp, "192.0.2.9:5060"),
        ] {
            let peer = Peer {
                transport: t,
                addr: addr.parse().unwrap(),
                flow: Some(0xDEAD_BEEF_0000_0001),
            };
            let token = tokens.encode(peer).unwrap();
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(tokens.decode(&token), Some(peer));
            // Another node's key, a changed flow, a cut token: refused.
            assert_eq!(FlowTokens::new([8; 32]).decode(&token), None);
            let mut forged = token.clone().into_bytes();
            forged[4] = if forged[4] == b'0' { b'1' } else { b'0' };
            assert_eq!(tokens.decode(std::str::from_utf8(&forged).unwrap()), None);
            assert_eq!(tokens.decode(&token[..token.len() - 2]), None);
        }
        assert_eq!(
            tokens.encode(Peer::new(TransportKind::Ws, "127.0.0.1:1".parse().unwrap())),
            None
        );
        for junk in ["", "zz", "alice", "0", "00112233445566778899"] {
            assert_eq!(tokens.decode(junk), None);
        }
    }
}
