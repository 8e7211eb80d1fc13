//! SIP over TLS: a client registers over TLS (verifying the node's
//! generated certificate), and a call from a UDP caller reaches it over the
//! very connection it registered on (connection reuse).

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect_tls(node: &Node) -> TlsStream {
    let pem = std::fs::read(node.data_dir.join("tls").join("cert.pem")).expect("node certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("PEM certificate")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let tcp = TcpStream::connect((LOCALHOST, node.tls_port)).expect("connect to the TLS port");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads one SIP message (headers + Content-Length body) from a stream.
fn read_message(stream: &mut TlsStream, buf: &mut Vec<u8>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l"))
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let msg = String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
                buf.drain(..end + 4 + len);
                return msg;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete SIP message over TLS"
        );
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read from TLS");
        assert!(n > 0, "node closed the TLS connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

#[test]
fn register_over_tls_and_receive_a_call_on_that_connection() {
    let node = Node::start(NodeConfig {
        open: true,
        tls: true,
        ..NodeConfig::default()
    });
    let mut tls = connect_tls(&node);
    let local = tls.sock.local_addr().unwrap();
    let mut buf = Vec::new();

    let register = format!(
        "REGISTER sip:{LOCALHOST}:{tls_port};transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch=z9hG4bK-tls-reg\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tina@{LOCALHOST}>;tag=t1\r\n\
         To: <sip:tina@{LOCALHOST}>\r\n\
         Call-ID: tls-reg-1\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:tina@{local};transport=tls>\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        tls_port = node.tls_port
    );
    tls.write_all(register.as_bytes()).unwrap();
    let reply = read_message(&mut tls, &mut buf);
    assert!(
        reply.starts_with("SIP/2.0 200 "),
        "REGISTER over TLS:\n{reply}"
    );
    assert!(
        header(&reply, "contact")
            .iter()
            .any(|c| c.contains("transport=tls")),
        "200 lists the TLS contact:\n{reply}"
    );

    // A caller over UDP.
    let caller = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    caller
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let caller_addr = caller.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:tina@{LOCALHOST}:{sip} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {caller_addr};branch=z9hG4bK-tls-inv;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carl@example.org>;tag=c1\r\n\
         To: <sip:tina@{LOCALHOST}>\r\n\
         Call-ID: tls-call-1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:carl@{caller_addr}>\r\n\
         Content-Length: 0\r\n\r\n",
        sip = node.sip_port
    );
    caller.send_to(invite.as_bytes(), node.sip_addr()).unwrap();

    // The INVITE arrives over the connection tina registered on.
    let forwarded = read_message(&mut tls, &mut buf);
    assert!(
        forwarded.starts_with("INVITE sip:tina@"),
        "forwarded over TLS:\n{forwarded}"
    );
    let vias = header(&forwarded, "via");
    assert!(
        vias[0].starts_with("SIP/2.0/TLS "),
        "node's Via names TLS:\n{forwarded}"
    );
    assert!(
        !header(&forwarded, "record-route").is_empty(),
        "Record-Route:\n{forwarded}"
    );

    // Tina is busy.
    let mut busy = String::from("SIP/2.0 486 Busy Here\r\n");
    for v in &vias {
        busy.push_str(&format!("Via: {v}\r\n"));
    }
    for name in ["from", "call-id", "cseq"] {
        busy.push_str(&format!("{name}: {}\r\n", header(&forwarded, name)[0]));
    }
    busy.push_str(&format!(
        "To: {};tag=busy1\r\nContent-Length: 0\r\n\r\n",
        header(&forwarded, "to")[0]
    ));
    tls.write_all(busy.as_bytes()).unwrap();

    // The node ACKs the 486 hop by hop over the same connection...
    let ack = read_message(&mut tls, &mut buf);
    assert!(ack.starts_with("ACK "), "hop-by-hop ACK over TLS:\n{ack}");
    // ...and the caller gets 100 Trying, then the 486.
    let mut codes = Vec::new();
    let mut datagram = [0u8; 65536];
    while !codes.contains(&486) {
        let (n, _) = caller
            .recv_from(&mut datagram)
            .expect("response at the caller");
        let text = String::from_utf8_lossy(&datagram[..n]).into_owned();
        let code: u16 = text[8..11].parse().unwrap();
        codes.push(code);
    }
    assert_eq!(codes, vec![100, 486], "caller saw {codes:?}");
}
