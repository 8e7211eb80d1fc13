//! Just enough SDP (RFC 4566, offer/answer of RFC 3264) for signalling: an
//! audio offer, and an answer that picks the first codec of an offer. Media
//! itself is the endpoints' business; the agent never sends RTP, the port it
//! announces is made up (but valid).

use std::net::IpAddr;

/// Codecs the agent offers and prefers in answers: PCMU and PCMA.
const CODECS: &[(u8, &str)] = &[(0, "PCMU/8000"), (8, "PCMA/8000")];

fn addr_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn session(ip: IpAddr, session_id: u64, version: u32) -> String {
    let t = addr_type(ip);
    format!("v=0\r\no=dots {session_id} {version} IN {t} {ip}\r\ns=dots agent\r\nc=IN {t} {ip}\r\nt=0 0\r\n")
}

/// An audio offer on `port`.
pub fn offer(ip: IpAddr, port: u16, session_id: u64, version: u32) -> String {
    let mut sdp = session(ip, session_id, version);
    let formats: Vec<String> = CODECS.iter().map(|(pt, _)| pt.to_string()).collect();
    sdp.push_str(&format!(
        "m=audio {port} RTP/AVP {} 101\r\n",
        formats.join(" ")
    ));
    for (pt, name) in CODECS {
        sdp.push_str(&format!("a=rtpmap:{pt} {name}\r\n"));
    }
    sdp.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n");
    sdp
}

/// The answer to `offer`: audio with one codec, the first of the offer's
/// first audio line that the agent knows (else the offer's first format, which
/// it echoes without knowing it; media is not its business). An audio line
/// without formats is refused (port 0, RFC 3264 §6). A body without an audio
/// line, or no body at all, gets our audio offer (the peer answers in its ACK).
pub fn answer(offer_text: &str, ip: IpAddr, port: u16, session_id: u64, version: u32) -> String {
    let Some(m) = offer_text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("m=audio "))
    else {
        return offer(ip, port, session_id, version);
    };
    let fields: Vec<&str> = m.split_whitespace().collect();
    let proto = fields.get(2).copied().unwrap_or("RTP/AVP");
    let formats = fields.get(3..).unwrap_or(&[]);
    let mut sdp = session(ip, session_id, version);
    let known = formats.iter().find_map(|f| {
        let pt: u8 = f.parse().ok()?;
        CODECS.iter().find(|(k, _)| *k == pt)
    });
    match (known, formats.first()) {
        (Some((pt, name)), _) => {
            sdp.push_str(&format!(
                "m=audio {port} {proto} {pt}\r\na=rtpmap:{pt} {name}\r\na=sendrecv\r\n"
            ));
        }
        (None, Some(first)) if is_token(first) && is_token(proto) => {
            sdp.push_str(&format!("m=audio {port} {proto} {first}\r\na=sendrecv\r\n"));
        }
        _ => sdp.push_str("m=audio 0 RTP/AVP 0\r\n"),
    }
    sdp
}

/// Text copied from an offer into our answer must not carry line breaks or
/// anything odd.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn offer_is_audio_with_our_codecs() {
        let o = offer(IP, 20000, 42, 1);
        assert!(o.starts_with("v=0\r\no=dots 42 1 IN IP4 192.0.2.7\r\n"));
        assert!(o.contains("c=IN IP4 192.0.2.7\r\n"));
        assert!(o.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"));
        assert!(o.ends_with("\r\n"));
    }

    #[test]
    fn answer_picks_the_first_known_codec() {
        let a = answer("v=0\r\nm=audio 6000 RTP/AVP 18 8 0\r\n", IP, 20002, 42, 1);
        assert!(
            a.contains("m=audio 20002 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"),
            "{a}"
        );
        let a = answer("m=audio 6000 RTP/AVP 96\n", IP, 20002, 42, 1);
        assert!(a.contains("m=audio 20002 RTP/AVP 96\r\n"), "{a}");
        let a = answer("m=video 6000 RTP/AVP 96\r\n", IP, 20002, 42, 1);
        assert!(
            a.contains("m=audio 20002 RTP/AVP 0 8 101"),
            "no audio offered: {a}"
        );
        let a = answer("m=audio 6000 RTP/AVP\r\n", IP, 20002, 42, 1);
        assert!(a.contains("m=audio 0 RTP/AVP 0\r\n"), "{a}");
        let a = answer("m=audio 6000 RTP/AVP x\u{7}y\r\n", IP, 20002, 42, 1);
        assert!(a.contains("m=audio 0 "), "odd text is not echoed: {a}");
    }
}
