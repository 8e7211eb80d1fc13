//! # dots-stun: the STUN Binding server of a DOTS node, without I/O
//!
//! STUN (RFC 8489, formerly RFC 5389) lets a client behind a NAT learn the
//! address and port its packets come from. A node answers Binding requests
//! with a success response carrying that address in XOR-MAPPED-ADDRESS, and
//! nothing else: no authentication, no ALTERNATE-SERVER, no TURN.
//!
//! [`answer`] is the whole server: bytes and their source in, the bytes to
//! send back (or nothing) out. It never panics, whatever the input.
//!
//! ```
//! use dots_stun::{answer, binding_request, Class, Message, BINDING};
//!
//! let from = "192.0.2.1:32853".parse().unwrap();
//! let request = binding_request([7; 12]);
//! let reply = Message::parse(&answer(&request, from).unwrap()).unwrap();
//! assert_eq!((reply.method, reply.class), (BINDING, Class::Success));
//! assert_eq!(reply.transaction_id, [7; 12]);
//! assert_eq!(reply.xor_mapped_address(), Some(from));
//! ```
//!
//! What is answered and how:
//!
//! | input | answer |
//! |---|---|
//! | Binding request | success: XOR-MAPPED-ADDRESS, SOFTWARE, and FINGERPRINT when the request had one |
//! | Binding request with an unknown comprehension-required attribute | 420 Unknown Attribute with UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1.1) |
//! | request of another method | 400 Bad Request |
//! | indications, responses | nothing |
//! | not STUN (no magic cookie, bad length, bad attributes, wrong FINGERPRINT) | nothing |

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the fixed message header.
pub const HEADER_LEN: usize = 20;
/// The Binding method.
pub const BINDING: u16 = 0x001;

/// Attribute types this crate reads or writes.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// ICE (RFC 8445), sent in connectivity checks.
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
}

/// Comprehension-required attributes (below 0x8000) that a Binding server
/// accepts: the ones it uses, plus the authentication and ICE attributes it
/// may ignore because it does not authenticate.
const UNDERSTOOD: [u16; 12] = [
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::REALM,
    attr::NONCE,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::PASSWORD_ALGORITHM,
    attr::USERHASH,
    attr::XOR_MAPPED_ADDRESS,
    attr::PRIORITY,
];

/// What the SOFTWARE attribute of answers says.
pub const SOFTWARE: &str = concat!("DOTS/", env!("CARGO_PKG_VERSION"));

const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// The class of a STUN message (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(b: u16) -> Class {
        match b & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    /// Shorter than the header, or than the length it declares.
    Truncated,
    /// The two leading bits are not zero or the magic cookie is missing.
    NotStun,
    /// The declared length is not a multiple of four or does not match.
    BadLength,
    /// An attribute overruns the message.
    BadAttribute,
    /// FINGERPRINT is not the last attribute or its CRC is wrong.
    BadFingerprint,
}

impl fmt::Display for StunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StunError::Truncated => "truncated STUN message",
            StunError::NotStun => "not a STUN message",
            StunError::BadLength => "STUN length field does not match",
            StunError::BadAttribute => "malformed STUN attribute",
            StunError::BadFingerprint => "STUN FINGERPRINT mismatch",
        })
    }
}

impl std::error::Error for StunError {}

/// One attribute: its type and value (without padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub kind: u16,
    pub value: Vec<u8>,
}

/// A decoded STUN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The 12-bit method (1 = Binding).
    pub method: u16,
    pub class: Class,
    pub transaction_id: [u8; 12],
    /// Every attribute in order, FINGERPRINT included when present.
    pub attributes: Vec<Attribute>,
}

/// Whether `packet` may be STUN, by its first byte and the magic cookie:
/// the cheap test that tells STUN from SIP on a shared UDP port (RFC 7983,
/// RFC 5626 §4.4.2). A SIP message starts with a letter, STUN with 0 or 1.
pub fn looks_like_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN && packet[0] < 4 && packet[4..8] == MAGIC_COOKIE.to_be_bytes()
}

impl Message {
    /// A message with no attributes.
    pub fn new(method: u16, class: Class, transaction_id: [u8; 12]) -> Message {
        Message {
            method,
            class,
            transaction_id,
            attributes: Vec::new(),
        }
    }

    /// Decodes and checks a message: header, lengths, attribute framing and,
    /// when present, FINGERPRINT. Attribute values are not interpreted.
    pub fn parse(bytes: &[u8]) -> Result<Message, StunError> {
        if bytes.len() < HEADER_LEN {
            return Err(StunError::Truncated);
        }
        let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
        if kind & 0xC000 != 0 || bytes[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return Err(StunError::NotStun);
        }
        let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if length % 4 != 0 {
            return Err(StunError::BadLength);
        }
        if bytes.len() < HEADER_LEN + length {
            return Err(StunError::Truncated);
        }
        if bytes.len() > HEADER_LEN + length {
            return Err(StunError::BadLength);
        }
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&bytes[8..20]);
        let mut attributes = Vec::new();
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            if bytes.len() - at < 4 {
                return Err(StunError::BadAttribute);
            }
            let kind = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
            let start = at + 4;
            let padded = len.div_ceil(4) * 4;
            if bytes.len() - start < padded {
                return Err(StunError::BadAttribute);
            }
            if kind == attr::FINGERPRINT {
                if len != 4 || start + 4 != bytes.len() {
                    return Err(StunError::BadFingerprint);
                }
                let want = crc32(&bytes[..at]) ^ FINGERPRINT_XOR;
                let got = u32::from_be_bytes([
                    bytes[start],
                    bytes[start + 1],
                    bytes[start + 2],
                    bytes[start + 3],
                ]);
                if want != got {
                    return Err(StunError::BadFingerprint);
                }
            }
            attributes.push(Attribute {
                kind,
                value: bytes[start..start + len].to_vec(),
            });
            at = start + padded;
        }
        Ok(Message {
            method: (kind & 0x000F) | ((kind >> 1) & 0x0070) | ((kind >> 2) & 0x0F80),
            class: Class::from_bits(((kind >> 4) & 0b01) | ((kind >> 7) & 0b10)),
            transaction_id,
            attributes,
        })
    }

    /// Encodes the message. A FINGERPRINT attribute in `attributes` is
    /// skipped; pass `fingerprint` to append a correct one.
    pub fn encode(&self, fingerprint: bool) -> Vec<u8> {
        let m = self.method & 0x0FFF;
        let c = self.class.bits();
        let kind = (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7);
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id);
        for a in self
            .attributes
            .iter()
            .filter(|a| a.kind != attr::FINGERPRINT)
        {
            // A value longer than a length field can say is cut, so that
            // the output is always a well-formed message.
            let value = &a.value[..a.value.len().min(0xFFFC)];
            out.extend_from_slice(&a.kind.to_be_bytes());
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(value);
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
        if fingerprint {
            let len = (out.len() - HEADER_LEN + 8) as u16;
            out[2..4].copy_from_slice(&len.to_be_bytes());
            let crc = crc32(&out) ^ FINGERPRINT_XOR;
            out.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&crc.to_be_bytes());
        } else {
            let len = (out.len() - HEADER_LEN) as u16;
            out[2..4].copy_from_slice(&len.to_be_bytes());
        }
        out
    }

    /// The value of the first attribute of this type.
    pub fn attribute(&self, kind: u16) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| a.value.as_slice())
    }

    pub fn has_fingerprint(&self) -> bool {
        self.attribute(attr::FINGERPRINT).is_some()
    }

    /// The address in XOR-MAPPED-ADDRESS, if present and well formed.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        decode_xor_address(
            self.attribute(attr::XOR_MAPPED_ADDRESS)?,
            &self.transaction_id,
        )
    }

    /// The code and reason phrase of ERROR-CODE, if present and well formed.
    pub fn error_code(&self) -> Option<(u16, String)> {
        let v = self.attribute(attr::ERROR_CODE)?;
        if v.len() < 4 || !(3..=6).contains(&(v[2] & 0x07)) || v[3] > 99 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        Some((code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }

    /// The attribute types listed in UNKNOWN-ATTRIBUTES.
    pub fn unknown_attributes(&self) -> Vec<u16> {
        self.attribute(attr::UNKNOWN_ATTRIBUTES)
            .map(|v| {
                v.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A Binding request with no attributes, as a client sends it.
pub fn binding_request(transaction_id: [u8; 12]) -> Vec<u8> {
    Message::new(BINDING, Class::Request, transaction_id).encode(false)
}

/// The server: what to send back to `from` for `packet`, if anything.
pub fn answer(packet: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let request = Message::parse(packet).ok()?;
    if request.class != Class::Request {
        return None;
    }
    let fingerprint = request.has_fingerprint();
    if request.method != BINDING {
        return Some(error_response(&request, 400, "Bad Request", &[]).encode(fingerprint));
    }
    let mut unknown: Vec<u16> = request
        .attributes
        .iter()
        .map(|a| a.kind)
        .filter(|&k| k < 0x8000 && !UNDERSTOOD.contains(&k) && k != attr::USE_CANDIDATE)
        .collect();
    unknown.dedup();
    if !unknown.is_empty() {
        return Some(
            error_response(&request, 420, "Unknown Attribute", &unknown).encode(fingerprint),
        );
    }
    let mut reply = Message::new(BINDING, Class::Success, request.transaction_id);
    reply.attributes.push(Attribute {
        kind: attr::XOR_MAPPED_ADDRESS,
        value: encode_xor_address(from, &request.transaction_id),
    });
    reply.attributes.push(Attribute {
        kind: attr::SOFTWARE,
        value: SOFTWARE.as_bytes().to_vec(),
    });
    Some(reply.encode(fingerprint))
}

fn error_response(request: &Message, code: u16, reason: &str, unknown: &[u16]) -> Message {
    let mut reply = Message::new(request.method, Class::Error, request.transaction_id);
    let mut value = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
    value.extend_from_slice(reason.as_bytes());
    reply.attributes.push(Attribute {
        kind: attr::ERROR_CODE,
        value,
    });
    if !unknown.is_empty() {
        reply.attributes.push(Attribute {
            kind: attr::UNKNOWN_ATTRIBUTES,
            value: unknown
                .iter()
                .take(64)
                .flat_map(|k| k.to_be_bytes())
                .collect(),
        });
    }
    reply.attributes.push(Attribute {
        kind: attr::SOFTWARE,
        value: SOFTWARE.as_bytes().to_vec(),
    });
    reply
}

/// XOR-MAPPED-ADDRESS (RFC 8489 §14.2): the port XORed with the top half of
/// the cookie, an IPv4 address with the cookie, an IPv6 address with the
/// cookie and the transaction id.
pub fn encode_xor_address(addr: SocketAddr, transaction_id: &[u8; 12]) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut v = Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.extend_from_slice(&[0, 0x01]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(cookie).map(|(a, b)| a ^ b));
        }
        IpAddr::V6(ip) => {
            v.extend_from_slice(&[0, 0x02]);
            v.extend_from_slice(&port.to_be_bytes());
            let key = cookie.iter().chain(transaction_id.iter());
            v.extend(ip.octets().iter().zip(key).map(|(a, b)| a ^ b));
        }
    }
    v
}

/// Reads an XOR-MAPPED-ADDRESS value.
pub fn decode_xor_address(v: &[u8], transaction_id: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let ip = match (v[1], v.len()) {
        (0x01, 8) => {
            let mut o = [0u8; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = v[4 + i] ^ cookie[i];
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (0x02, 20) => {
            let key: Vec<u8> = cookie
                .iter()
                .chain(transaction_id.iter())
                .copied()
                .collect();
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = v[4 + i] ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// CRC-32 (ISO HDLC, as FINGERPRINT uses), bit by bit: messages are small.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests;
