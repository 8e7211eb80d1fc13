//! SIP over WebSocket (RFC 7118) and STUN against real node processes.
//!
//! The WebSocket client is written here, on `tungstenite`: it speaks SIP as
//! JsSIP does (Via `SIP/2.0/WS xyz.invalid`, Contact
//! `sip:user@xyz.invalid;transport=ws`, one SIP message per WebSocket
//! message), so the node can reach it only over its connection. SIPp plays
//! the UDP side. A STUN client is a UDP socket and `dots-stun`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// A SIP user agent over one WebSocket connection to a node.
struct WsClient {
    ws: WebSocket<Box<dyn Io>>,
    /// The TCP socket under the WebSocket, for read timeouts.
    tcp: TcpStream,
    /// The made-up host of Via and Contact (`….invalid`, RFC 7118 §5.2).
    host: String,
    /// `WS` or `WSS`.
    transport: &'static str,
    seq: u32,
}

/// What reading a frame gave.
#[derive(Debug)]
enum Got {
    Frame(Message),
    Timeout,
    Closed(String),
}

fn tls_config(node: &Node) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(node.data_dir.join("tls").join("cert.pem")).expect("node certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("PEM certificate")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection to the node's HTTPS port, verifying its certificate.
fn tls_connect(
    node: &Node,
) -> (
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    TcpStream,
) {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let conn = rustls::ClientConnection::new(tls_config(node), name).expect("TLS client");
    let tcp = TcpStream::connect((LOCALHOST, node.https_port)).expect("connect to HTTPS");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ctl = tcp.try_clone().unwrap();
    (rustls::StreamOwned::new(conn, tcp), ctl)
}

impl WsClient {
    /// Opens `ws://…/sip` (or `wss://`) with the `sip` subprotocol.
    fn connect(node: &Node, secure: bool) -> WsClient {
        let (stream, tcp, url): (Box<dyn Io>, TcpStream, String) = if secure {
            let (tls, ctl) = tls_connect(node);
            (
                Box::new(tls),
                ctl,
                format!("wss://{LOCALHOST}:{}/sip", node.https_port),
            )
        } else {
            let tcp = TcpStream::connect((LOCALHOST, node.http_port)).expect("connect to HTTP");
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let ctl = tcp.try_clone().unwrap();
            (
                Box::new(tcp),
                ctl,
                format!("ws://{LOCALHOST}:{}/sip", node.http_port),
            )
        };
        let mut request = url.into_client_request().expect("request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
        let (ws, response) = tungstenite::client(request, stream).expect("WebSocket handshake");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("sip"),
            "the node selects the sip subprotocol"
        );
        WsClient {
            ws,
            tcp,
            host: format!("{}.invalid", token()),
            transport: if secure { "WSS" } else { "WS" },
            seq: 0,
        }
    }

    fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .expect("send over WebSocket");
    }

    fn next_frame(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            let _ = self
                .tcp
                .set_read_timeout(Some(left.max(Duration::from_millis(5))));
            match self.ws.read() {
                Ok(Message::Close(c)) => return Got::Closed(format!("close frame {c:?}")),
                Ok(m) => return Got::Frame(m),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Got::Closed(e.to_string()),
            }
        }
    }

    /// The next SIP message (pings and pongs are skipped).
    fn recv(&mut self, timeout: Duration) -> Option<String> {
        loop {
            match self.next_frame(timeout) {
                Got::Frame(Message::Text(t)) => return Some(t.to_string()),
                Got::Frame(Message::Binary(b)) => {
                    return Some(String::from_utf8_lossy(&b).into_owned())
                }
                Got::Frame(_) => continue,
                Got::Timeout => return None,
                Got::Closed(why) => panic!("the node closed the WebSocket: {why}"),
            }
        }
    }

    /// Waits for a request of `method`; fails on anything else.
    fn recv_request(&mut self, method: &str) -> String {
        let msg = self
            .recv(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("no {method} over the WebSocket"));
        assert!(
            msg.starts_with(&format!("{method} ")),
            "expected {method}, got:\n{msg}"
        );
        msg
    }

    /// Waits for the final response of `call_id` (provisional ones skipped).
    fn final_response(&mut self, call_id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Some(msg) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            if !msg.starts_with("SIP/2.0 ") || first(&msg, "call-id") != Some(call_id) {
                continue;
            }
            if status(&msg) >= 200 {
                return msg;
            }
        }
        panic!("no final response for {call_id}");
    }

    fn branch(&mut self) -> String {
        self.seq += 1;
        format!("z9hG4bK-ws-{}-{}", token(), self.seq)
    }

    fn via(&mut self) -> String {
        let branch = self.branch();
        format!("SIP/2.0/{} {};branch={branch}", self.transport, self.host)
    }

    fn contact(&self, user: &str) -> String {
        format!("<sip:{user}-ws@{};transport=ws>", self.host)
    }

    /// REGISTER as JsSIP sends it; returns the final response.
    fn register(&mut self, user: &str, authorization: Option<&str>) -> String {
        let call_id = format!("reg-{user}-{}", self.host);
        let via = self.via();
        let contact = self.contact(user);
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let seq = self.seq;
        self.send(&format!(
            "REGISTER sip:{LOCALHOST} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 69\r\n\
             To: <sip:{user}@{LOCALHOST}>\r\n\
             From: <sip:{user}@{LOCALHOST}>;tag=reg{seq}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {seq} REGISTER\r\n\
             {auth}\
             Contact: {contact};+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:{id}>\";expires=600\r\n\
             Expires: 600\r\n\
             Supported: path, gruu, outbound\r\n\
             User-Agent: dots-e2e-ws\r\n\r\n",
            id = uuid_like(&self.host),
        ));
        self.final_response(&call_id)
    }

    /// Answers `request` (Via, Record-Route, dialog headers copied).
    fn respond(&mut self, request: &str, code: u16, reason: &str, tag: &str, body: Option<&str>) {
        let mut r = format!("SIP/2.0 {code} {reason}\r\n");
        for v in header_values(request, "via", Some("v")) {
            r += &format!("Via: {v}\r\n");
        }
        for rr in header_values(request, "record-route", None) {
            r += &format!("Record-Route: {rr}\r\n");
        }
        r += &format!("From: {}\r\n", first(request, "from").unwrap());
        let to = first(request, "to").unwrap();
        if to.contains(";tag=") || code == 100 {
            r += &format!("To: {to}\r\n");
        } else {
            r += &format!("To: {to};tag={tag}\r\n");
        }
        r += &format!("Call-ID: {}\r\n", first(request, "call-id").unwrap());
        r += &format!("CSeq: {}\r\n", first(request, "cseq").unwrap());
        r += "Server: dots-e2e-uas\r\n";
        if request.starts_with("INVITE ") {
            r += &format!("Contact: {}\r\n", self.contact("callee"));
        }
        match body {
            Some(b) => {
                r += &format!(
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                )
            }
            None => r += "Content-Length: 0\r\n\r\n",
        }
        self.send(&r);
    }
}

fn uuid_like(seed: &str) -> String {
    let hex: String = seed
        .bytes()
        .map(|b| format!("{:x}", b % 16))
        .chain(std::iter::repeat("0".to_string()))
        .take(32)
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn status(msg: &str) -> u16 {
    msg.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn first<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    header_values(msg, name, None).into_iter().next()
}

/// Record-Route entries one by one, however they were folded into lines.
fn route_entries(msg: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in header_values(msg, "record-route", None) {
        for part in line.split(">,") {
            let part = part.trim();
            out.push(if part.ends_with('>') || part.contains(">;") {
                part.to_string()
            } else {
                format!("{part}>")
            });
        }
    }
    out
}

/// The URI inside `<…>` of a Contact value.
fn uri_of(name_addr: &str) -> String {
    let start = name_addr.find('<').map_or(0, |i| i + 1);
    let end = name_addr[start..]
        .find('>')
        .map_or(name_addr.len(), |i| start + i);
    name_addr[start..end].to_string()
}

/// A SIPp callee that waits until it listens.
fn sipp_callee(name: &str, scenario: &str) -> SippProc {
    let mut p = Sipp::new(name, scenario).spawn();
    p.wait_listening();
    p
}

fn contacts_metric(node: &Node) -> Option<u64> {
    node.metrics()?.lines().find_map(|l| {
        l.strip_prefix("dots_registrar_contacts ")?
            .trim()
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------
// Calls and messages between a WebSocket client and SIPp over UDP
// ---------------------------------------------------------------------------

#[test]
fn sipp_caller_over_udp_reaches_the_websocket_client_over_its_connection() {
    sipp_caller_reaches_the_websocket_client(Transport::Udp);
}

#[test]
fn sipp_caller_over_tcp_reaches_the_websocket_client_over_its_connection() {
    sipp_caller_reaches_the_websocket_client(Transport::Tcp);
}

fn sipp_caller_reaches_the_websocket_client(t: Transport) {
    let node = Node::start(NodeConfig::open());
    let mut wanda = WsClient::connect(&node, false);
    let ok = wanda.register("wanda", None);
    assert_eq!(status(&ok), 200, "REGISTER over WebSocket:\n{ok}");
    assert!(
        header_values(&ok, "contact", Some("m"))
            .iter()
            .any(|c| c.contains(".invalid;transport=ws")),
        "the 200 lists the WebSocket contact:\n{ok}"
    );

    let uac = Sipp::new("carl-to-wanda", "uac_call.xml")
        .remote(&node.sip_addr())
        .transport(t)
        .key("caller", "carl")
        .key("callee", "wanda")
        .spawn();

    // The INVITE arrives over the WebSocket wanda registered on.
    let invite = wanda.recv_request("INVITE");
    assert!(
        invite.starts_with(&format!("INVITE sip:wanda-ws@{};transport=ws ", wanda.host)),
        "retargeted to the WebSocket contact:\n{invite}"
    );
    let vias = header_values(&invite, "via", Some("v"));
    assert!(
        vias[0].starts_with(&format!("SIP/2.0/WS {LOCALHOST}:{}", node.http_port)),
        "the node's Via names WS and its HTTP port:\n{invite}"
    );
    let rr = route_entries(&invite);
    assert_eq!(rr.len(), 2, "double Record-Route:\n{invite}");
    assert!(
        rr[0].contains(&format!(":{};transport=ws;lr", node.http_port)),
        "{rr:?}"
    );
    let caller_side = match t {
        Transport::Udp => format!("{LOCALHOST}:{};lr>", node.sip_port),
        Transport::Tcp => format!("{LOCALHOST}:{};transport=tcp;lr>", node.sip_port),
    };
    assert!(rr[1].ends_with(&caller_side), "{rr:?}");

    wanda.respond(&invite, 180, "Ringing", "w1", None);
    wanda.respond(&invite, 200, "OK", "w1", Some(SDP));
    // SIPp's ACK and BYE go to the node with the Route set and wanda's
    // .invalid Contact as Request-URI: the node sends them over the socket.
    let ack = wanda.recv_request("ACK");
    assert_eq!(first(&ack, "call-id"), first(&invite, "call-id"));
    let bye = wanda.recv_request("BYE");
    wanda.respond(&bye, 200, "OK", "w1", None);
    uac.wait().assert_ok(1);
}

#[test]
fn websocket_client_calls_a_sipp_callee_over_udp() {
    let node = Node::start(NodeConfig::open());
    let uas = sipp_callee("bob-uas", "uas_answer.xml");
    register_open(
        &node,
        "bob",
        &format!("{LOCALHOST}:{}", uas.port),
        Transport::Udp,
    )
    .assert_ok(1);

    let mut wanda = WsClient::connect(&node, false);
    let call_id = format!("ws-call-{}", token());
    let via = wanda.via();
    let contact = wanda.contact("wanda");
    wanda.send(&format!(
        "INVITE sip:bob@{LOCALHOST} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:wanda@{LOCALHOST}>;tag=wt\r\n\
         To: <sip:bob@{LOCALHOST}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: {contact}\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    ));
    let ok = wanda.final_response(&call_id);
    assert_eq!(status(&ok), 200, "{ok}");
    let rr = route_entries(&ok);
    assert_eq!(rr.len(), 2, "double Record-Route:\n{ok}");
    // The UAC's route set is the Record-Route reversed (RFC 3261 §12.1.2).
    let routes: String = rr.iter().rev().map(|r| format!("Route: {r}\r\n")).collect();
    let target = uri_of(first(&ok, "contact").expect("Contact in the 200"));
    let to = first(&ok, "to").unwrap().to_string();

    let via = wanda.via();
    wanda.send(&format!(
        "ACK {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n{routes}\
         From: <sip:wanda@{LOCALHOST}>;tag=wt\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ));
    std::thread::sleep(Duration::from_millis(300));
    let via = wanda.via();
    wanda.send(&format!(
        "BYE {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n{routes}\
         From: <sip:wanda@{LOCALHOST}>;tag=wt\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ));
    let bye_ok = wanda.final_response(&call_id);
    assert!(
        bye_ok.starts_with("SIP/2.0 200") && bye_ok.contains("CSeq: 2 BYE"),
        "{bye_ok}"
    );
    uas.wait().assert_ok(1);
}

#[test]
fn message_both_ways_between_websocket_and_udp() {
    let node = Node::start(NodeConfig::open());
    let mut wanda = WsClient::connect(&node, false);
    assert_eq!(status(&wanda.register("wanda", None)), 200);

    // UDP (SIPp) to WebSocket.
    let sender = Sipp::new("carl-messages-wanda", "message.xml")
        .remote(&node.sip_addr())
        .key("caller", "carl")
        .key("callee", "wanda")
        .spawn();
    let message = wanda.recv_request("MESSAGE");
    assert!(message.contains("hello from dots-e2e"), "{message}");
    wanda.respond(&message, 200, "OK", "m1", None);
    sender.wait().assert_ok(1);

    // WebSocket to UDP (SIPp).
    let uas = sipp_callee("bob-messages", "uas_message.xml");
    register_open(
        &node,
        "bob",
        &format!("{LOCALHOST}:{}", uas.port),
        Transport::Udp,
    )
    .assert_ok(1);
    let call_id = format!("ws-msg-{}", token());
    let via = wanda.via();
    let body = "hello from dots-e2e over a WebSocket";
    wanda.send(&format!(
        "MESSAGE sip:bob@{LOCALHOST} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
         From: <sip:wanda@{LOCALHOST}>;tag=mt\r\nTo: <sip:bob@{LOCALHOST}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let ok = wanda.final_response(&call_id);
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(
        first(&ok, "server"),
        Some("dots-e2e-uas"),
        "from bob:\n{ok}"
    );
    uas.wait().assert_ok(1);
}

// ---------------------------------------------------------------------------
// Connection life: close, keep-alives, refused upgrades, bad input
// ---------------------------------------------------------------------------

#[test]
fn closing_the_websocket_removes_the_binding_and_the_next_call_gets_480() {
    let node = Node::start(NodeConfig::open());
    let mut polite = WsClient::connect(&node, false);
    assert_eq!(status(&polite.register("wanda", None)), 200);
    let mut abrupt = WsClient::connect(&node, false);
    assert_eq!(status(&abrupt.register("wanda", None)), 200);
    assert!(wait_until(Duration::from_secs(5), || contacts_metric(
        &node
    ) == Some(2)));

    // A close handshake...
    polite.ws.close(None).expect("close");
    let _ = polite.next_frame(Duration::from_secs(2));
    assert!(
        wait_until(Duration::from_secs(5), || contacts_metric(&node) == Some(1)),
        "one binding left after the close: {:?}",
        contacts_metric(&node)
    );
    // ...and a dropped TCP connection both end the bindings made over them.
    let _ = abrupt.tcp.shutdown(std::net::Shutdown::Both);
    drop(abrupt);
    assert!(
        wait_until(Duration::from_secs(5), || contacts_metric(&node) == Some(0)),
        "no binding left: {:?}",
        contacts_metric(&node)
    );
    Sipp::new("carl-to-gone-wanda", "invite_480.xml")
        .remote(&node.sip_addr())
        .key("caller", "carl")
        .key("callee", "wanda")
        .run()
        .assert_ok(1);
}

#[test]
fn crlf_keepalive_and_websocket_ping_are_answered() {
    let node = Node::start(NodeConfig::open());
    let mut c = WsClient::connect(&node, false);
    // RFC 5626 §4.4.1: a double CRLF gets a single CRLF.
    c.send("\r\n\r\n");
    match c.next_frame(Duration::from_secs(5)) {
        Got::Frame(Message::Text(t)) => assert_eq!(t.as_str(), "\r\n"),
        other => panic!("expected a CRLF pong, got {other:?}"),
    }
    // A lone CRLF is a keep-alive that needs no answer.
    c.send("\r\n");
    c.ws.send(Message::Ping(b"dots".to_vec().into()))
        .expect("ping");
    match c.next_frame(Duration::from_secs(5)) {
        Got::Frame(Message::Pong(p)) => assert_eq!(&p[..], b"dots"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // Still usable.
    assert_eq!(status(&c.register("kim", None)), 200);
}

/// A raw HTTP/1.1 exchange with the node's HTTP port: (status, body).
fn raw_http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect((LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Up to the end of what the node sends (it closes: Connection: close).
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn upgrade_without_the_sip_subprotocol_is_refused() {
    let node = Node::start(NodeConfig::open());
    let upgrade = |protocol: &str| {
        format!(
            "GET /sip HTTP/1.1\r\nHost: {LOCALHOST}:{port}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{protocol}Connection: close\r\n\r\n",
            port = node.http_port
        )
    };
    for protocol in ["", "Sec-WebSocket-Protocol: chat\r\n"] {
        let (code, body) = raw_http(node.http_port, &upgrade(protocol));
        assert_eq!(code, 400, "{protocol:?}: {body}");
        assert!(body.contains("subprotocol \"sip\""), "{body}");
    }
    let (code, body) = raw_http(
        node.http_port,
        &format!("GET /sip HTTP/1.1\r\nHost: {LOCALHOST}\r\nConnection: close\r\n\r\n"),
    );
    assert!((400..500).contains(&code), "{code} {body}");
    assert!(body.contains("SIP over WebSocket endpoint"), "{body}");
    // With the subprotocol among others, the node picks sip.
    let (code, _) = raw_http(
        node.http_port,
        &upgrade("Sec-WebSocket-Protocol: chat, sip\r\n"),
    );
    assert_eq!(code, 101);
}

#[test]
fn malformed_websocket_input_does_not_hurt_the_node() {
    let node = Node::start(NodeConfig::open());

    // Not SIP at all, and a request too broken to answer: dropped, the
    // connection stays.
    let mut c = WsClient::connect(&node, false);
    c.send("hello, node");
    c.ws.send(Message::Binary(vec![0, 159, 146, 150, 255].into()))
        .unwrap();
    // A request the node can answer 400.
    let via = c.via();
    c.send(&format!(
        "OPTIONS sip:{LOCALHOST} SIP/2.0\r\nVia: {via}\r\nFrom: <sip:x@{LOCALHOST}>;tag=1\r\n\
         To: <sip:{LOCALHOST}>\r\nCall-ID: bad-1\r\nCSeq: one OPTIONS\r\n\r\n"
    ));
    let reply = c
        .recv(Duration::from_secs(5))
        .expect("an answer to the broken OPTIONS");
    assert!(reply.starts_with("SIP/2.0 400"), "{reply}");
    assert_eq!(
        status(&c.register("kim", None)),
        200,
        "the connection still works"
    );

    // Protocol violations close that connection only: text that is not
    // UTF-8, an unmasked client frame, a message over 64 KiB, noise.
    let violations: [&[u8]; 3] = [
        &[0x81, 0x83, 1, 2, 3, 4, 0xfe, 0xfd, 0xfc],
        &[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'],
        &[0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for raw in violations {
        let mut c = WsClient::connect(&node, false);
        c.ws.get_mut().write_all(raw).unwrap();
        c.ws.get_mut().flush().unwrap();
        loop {
            match c.next_frame(Duration::from_secs(5)) {
                Got::Closed(_) => break,
                Got::Timeout => panic!("connection not closed after {raw:?}"),
                Got::Frame(_) => continue,
            }
        }
    }
    let mut c = WsClient::connect(&node, false);
    let big = format!(
        "MESSAGE sip:x@{LOCALHOST} SIP/2.0\r\n{}",
        "X".repeat(70_000)
    );
    let _ = c.ws.send(Message::text(big));
    loop {
        match c.next_frame(Duration::from_secs(5)) {
            Got::Closed(_) => break,
            Got::Timeout => panic!("connection not closed after a 70 kB message"),
            Got::Frame(_) => continue,
        }
    }

    assert_eq!(node.healthz().map(|(c, _)| c), Some(200));
    let mut fresh = WsClient::connect(&node, false);
    assert_eq!(status(&fresh.register("lee", None)), 200);
}

// ---------------------------------------------------------------------------
// HTTPS, secure WebSocket, /api/v1/webrtc, STUN
// ---------------------------------------------------------------------------

#[test]
fn webrtc_info_lists_the_websocket_urls_the_stun_server_and_the_domain() {
    let node = Node::start(NodeConfig {
        open: true,
        https: true,
        stun: true,
        ..NodeConfig::default()
    });
    let (code, body) = http_get(node.http_port, "/api/v1/webrtc").expect("HTTP answer");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        v["ws"],
        serde_json::json!([
            format!("ws://{LOCALHOST}:{}/sip", node.http_port),
            format!("wss://{LOCALHOST}:{}/sip", node.https_port),
        ]),
        "{v}"
    );
    assert_eq!(
        v["ice_servers"],
        serde_json::json!([{ "urls": [format!("stun:{LOCALHOST}:{}", node.stun_port)] }]),
        "{v}"
    );
    assert_eq!(v["domain"], LOCALHOST);
    let log = node.log();
    for line in [
        format!(
            "SIP over WebSocket on ws://{LOCALHOST}:{}/sip",
            node.http_port
        ),
        format!(
            "SIP over WebSocket on wss://{LOCALHOST}:{}/sip",
            node.https_port
        ),
        format!("HTTPS listening on https://{LOCALHOST}:{}", node.https_port),
        format!("STUN listening on udp:{LOCALHOST}:{}", node.stun_port),
    ] {
        assert!(log.contains(&line), "start-up log lacks {line:?}:\n{log}");
    }

    // The same router over HTTPS, with the generated certificate.
    let (mut tls, _) = tls_connect(&node);
    write!(
        tls,
        "GET /api/v1/webrtc HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = tls.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("wss://"), "{text}");
}

#[test]
fn secure_websocket_client_registers_with_digest_and_gets_a_call() {
    let node = Node::start(NodeConfig {
        https: true,
        ..NodeConfig::with_auth().md5_first().user("wanda", "w-pass")
    });
    let mut wanda = WsClient::connect(&node, true);
    let challenge = wanda.register("wanda", None);
    assert_eq!(status(&challenge), 401, "{challenge}");
    let www = header_values(&challenge, "www-authenticate", None)
        .into_iter()
        .find(|c| c.contains("MD5") || !c.contains("algorithm"))
        .expect("an MD5 challenge")
        .to_string();
    let authorization = dots_registrar::answer_challenge(
        &www,
        "REGISTER",
        &format!("sip:{LOCALHOST}"),
        "wanda",
        "w-pass",
        "c0ffee",
        1,
    )
    .expect("answer the challenge");
    let ok = wanda.register("wanda", Some(&authorization));
    assert_eq!(status(&ok), 200, "REGISTER over WSS:\n{ok}");

    // A caller over UDP; the INVITE reaches wanda over her WSS connection.
    let caller = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    caller
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let caller_addr = caller.local_addr().unwrap();
    caller
        .send_to(
            format!(
                "INVITE sip:wanda@{LOCALHOST}:{sip} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {caller_addr};branch=z9hG4bK-wss-inv;rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:carl@example.org>;tag=c1\r\n\
                 To: <sip:wanda@{LOCALHOST}>\r\n\
                 Call-ID: wss-call-1\r\n\
                 CSeq: 1 INVITE\r\n\
                 Contact: <sip:carl@{caller_addr}>\r\n\
                 Content-Length: 0\r\n\r\n",
                sip = node.sip_port
            )
            .as_bytes(),
            node.sip_addr(),
        )
        .unwrap();
    let invite = wanda.recv_request("INVITE");
    assert!(
        header_values(&invite, "via", Some("v"))[0]
            .starts_with(&format!("SIP/2.0/WSS {LOCALHOST}:{}", node.https_port)),
        "{invite}"
    );
    assert!(
        route_entries(&invite)[0].contains(";transport=wss;lr"),
        "{invite}"
    );
    wanda.respond(&invite, 486, "Busy Here", "busy", None);
    let ack = wanda.recv_request("ACK");
    assert_eq!(first(&ack, "call-id"), Some("wss-call-1"));
    let mut codes = Vec::new();
    let mut datagram = [0u8; 65536];
    while !codes.contains(&486) {
        let (n, _) = caller
            .recv_from(&mut datagram)
            .expect("answer at the caller");
        codes.push(status(&String::from_utf8_lossy(&datagram[..n])));
    }
    assert_eq!(codes, vec![100, 486]);
}

/// Sends `packet` from `sock` to `to` and returns the answer, if any comes
/// within `wait`.
fn stun_exchange(
    sock: &UdpSocket,
    to: SocketAddr,
    packet: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(packet, to).unwrap();
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) if from == to => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[test]
fn stun_binding_requests_get_the_mapped_address_and_bad_packets_are_survived() {
    use dots_stun::{binding_request, Attribute, Class, Message as Stun, BINDING};

    let node = Node::start(NodeConfig {
        open: true,
        stun: true,
        ..NodeConfig::default()
    });
    let stun: SocketAddr = format!("{LOCALHOST}:{}", node.stun_port).parse().unwrap();
    let sip: SocketAddr = node.sip_addr().parse().unwrap();
    let sock = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let me = sock.local_addr().unwrap();

    // The STUN port, and the SIP port (RFC 5626 §4.4.2 keep-alives).
    for (server, tid) in [(stun, [1u8; 12]), (sip, [2u8; 12])] {
        let reply = stun_exchange(&sock, server, &binding_request(tid), Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no STUN answer from {server}"));
        let m = Stun::parse(&reply).expect("a valid STUN message");
        assert_eq!((m.method, m.class), (BINDING, Class::Success));
        assert_eq!(m.transaction_id, tid);
        assert_eq!(m.xor_mapped_address(), Some(me), "XOR-MAPPED-ADDRESS");
    }

    // Another method: 400. An unknown comprehension-required attribute: 420.
    let allocate = Stun::new(0x003, Class::Request, [3; 12]).encode(false);
    let reply = stun_exchange(&sock, stun, &allocate, Duration::from_secs(5)).expect("answer");
    assert_eq!(
        Stun::parse(&reply).unwrap().error_code().map(|e| e.0),
        Some(400)
    );
    let mut odd = Stun::new(BINDING, Class::Request, [4; 12]);
    odd.attributes.push(Attribute {
        kind: 0x0777,
        value: vec![1],
    });
    let reply =
        stun_exchange(&sock, stun, &odd.encode(true), Duration::from_secs(5)).expect("answer");
    assert_eq!(
        Stun::parse(&reply).unwrap().error_code().map(|e| e.0),
        Some(420)
    );

    // Garbage gets nothing back, on either port.
    let good = binding_request([5; 12]);
    let mut bad_cookie = good.clone();
    bad_cookie[4] ^= 0xff;
    let mut bad_length = good.clone();
    bad_length[3] = 8;
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        good[..19].to_vec(),
        bad_cookie,
        bad_length,
        Stun::new(BINDING, Class::Success, [6; 12]).encode(false),
        vec![0xff; 1500],
        (0..=255u8).collect(),
    ];
    for packet in &garbage {
        for server in [stun, sip] {
            assert_eq!(
                stun_exchange(&sock, server, packet, Duration::from_millis(200)),
                None,
                "{server} answered {packet:?}"
            );
        }
    }
    // Still serving, SIP included.
    let reply = stun_exchange(&sock, stun, &good, Duration::from_secs(5)).expect("STUN still up");
    assert_eq!(Stun::parse(&reply).unwrap().xor_mapped_address(), Some(me));
    assert_eq!(
        UdpClient::new().options(&node.sip_addr()).map(|r| r.status),
        Some(200)
    );
}
