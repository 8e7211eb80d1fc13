//! The user agent against crafted messages: what it sends for each thing it
//! receives, on simulated time. No sockets, no sleeping.

use dots_identity::login::{self, Credentials};
use dots_identity::Wallet;
use dots_records::NodeKey;
use dots_sip::{
    parse_datagram, HeaderName, Message, Method, NameAddr, Peer, Request, Response, SipMessage,
    TransportKind, Uri,
};
use dots_ua::{Config, EndReason, Event, UserAgent};

const T0: u64 = 1_700_000_000_000;
const NODE: &str = "192.0.2.1:5060";
const LOCAL: &str = "192.0.2.7:5070";
const NODE_RR: &str = "<sip:192.0.2.1:5060;lr>";

fn node() -> Peer {
    Peer::new(TransportKind::Udp, NODE.parse().unwrap())
}

fn wallet() -> Wallet {
    Wallet::from_secret([7; 32], Some("alice".into()))
}

fn ua() -> UserAgent {
    let w = wallet();
    let cfg = Config::new(&w.did(), "192.0.2.1", node(), LOCAL.parse().unwrap());
    UserAgent::new(cfg, w, 1)
}

fn user() -> String {
    wallet().did().strip_prefix("did:key:").unwrap().to_string()
}

/// Everything the agent wants sent, parsed.
fn sent(ua: &mut UserAgent) -> Vec<(Peer, Message)> {
    let mut out = Vec::new();
    while let Some(t) = ua.poll_transmit() {
        out.push((
            t.dest,
            parse_datagram(&t.bytes).expect("the agent sends valid SIP"),
        ));
    }
    out
}

fn one_request(ua: &mut UserAgent) -> (Peer, Request) {
    let mut out = sent(ua);
    assert_eq!(out.len(), 1, "expected one message, got {out:#?}");
    match out.pop().unwrap() {
        (p, Message::Request(r)) => (p, r),
        (_, m) => panic!("expected a request, got {m:?}"),
    }
}

fn one_response(ua: &mut UserAgent) -> Response {
    let mut out = sent(ua);
    assert_eq!(out.len(), 1, "expected one message, got {out:#?}");
    match out.pop().unwrap() {
        (_, Message::Response(r)) => r,
        (_, m) => panic!("expected a response, got {m:?}"),
    }
}

fn events(ua: &mut UserAgent) -> Vec<Event> {
    std::iter::from_fn(|| ua.poll_event()).collect()
}

/// The node's answer to `req`: its To with a tag, and `extra` headers.
fn answer(req: &Request, code: u16, extra: &[(HeaderName, &str)]) -> Response {
    let mut resp = req.make_response(code, None);
    if code > 100 {
        resp.ensure_to_tag("nodetag");
    }
    for (h, v) in extra {
        resp.headers.push(*h, *v);
    }
    resp
}

fn feed(ua: &mut UserAgent, now: u64, msg: impl Into<MessageBytes>) {
    ua.handle_datagram(now, &msg.into().0, node());
}

struct MessageBytes(Vec<u8>);
impl From<Response> for MessageBytes {
    fn from(r: Response) -> Self {
        MessageBytes(r.to_bytes())
    }
}
impl From<Request> for MessageBytes {
    fn from(r: Request) -> Self {
        MessageBytes(r.to_bytes())
    }
}
impl From<String> for MessageBytes {
    fn from(s: String) -> Self {
        MessageBytes(s.into_bytes())
    }
}
impl From<&str> for MessageBytes {
    fn from(s: &str) -> Self {
        MessageBytes(s.as_bytes().to_vec())
    }
}

fn branch(msg: &impl SipMessage) -> String {
    msg.top_via().unwrap().branch().unwrap().to_string()
}

fn cseq(msg: &impl SipMessage) -> (u32, Method) {
    let c = msg.cseq().unwrap();
    (c.seq, c.method)
}

fn hdr(msg: &impl SipMessage, h: HeaderName) -> Option<&str> {
    msg.headers().get(h)
}

// ----- registration -------------------------------------------------------------

#[test]
fn register_at_an_open_node_and_refresh_at_half_the_lifetime() {
    let mut ua = ua();
    ua.register(T0);
    let (dest, reg) = one_request(&mut ua);
    assert_eq!(dest, node());
    assert_eq!(reg.method, Method::Register);
    assert_eq!(reg.uri.to_string(), "sip:192.0.2.1:5060");
    let aor = format!("sip:{}@192.0.2.1", user());
    assert_eq!(reg.to().unwrap().uri.to_string(), aor);
    assert_eq!(reg.from().unwrap().uri.to_string(), aor);
    assert!(reg.from().unwrap().tag().is_some());
    assert_eq!(
        hdr(&reg, HeaderName::Contact),
        Some(format!("<sip:{}@192.0.2.7:5070>", user()).as_str())
    );
    assert_eq!(reg.expires(), Some(600));
    let via = reg.top_via().unwrap();
    assert_eq!((via.host.as_str(), via.port), ("192.0.2.7", Some(5070)));
    assert!(via.branch().unwrap().starts_with("z9hG4bK"));
    assert!(via.param("rport").is_some());

    // The registrar grants less than asked, in the Contact's expires.
    let contact = format!("<sip:{}@192.0.2.7:5070>;expires=120", user());
    feed(
        &mut ua,
        T0 + 10,
        answer(&reg, 200, &[(HeaderName::Contact, &contact)]),
    );
    assert_eq!(
        events(&mut ua),
        vec![Event::Registered {
            aor: aor.clone(),
            contact: format!("<sip:{}@192.0.2.7:5070>", user()),
            expires: 120,
            renewal: false,
        }]
    );
    assert!(ua.is_registered());
    // Timer K of the REGISTER transaction (T4), then the refresh.
    assert_eq!(ua.poll_timeout(), Some(T0 + 10 + 5_000));
    ua.handle_timeout(T0 + 10 + 5_000);
    assert_eq!(ua.poll_timeout(), Some(T0 + 10 + 60_000));

    // Nothing but the non-INVITE transaction's Timer K before the refresh.
    ua.handle_timeout(T0 + 10 + 59_999);
    assert!(sent(&mut ua).is_empty());
    ua.handle_timeout(T0 + 10 + 60_000);
    let (_, again) = one_request(&mut ua);
    assert_eq!(again.call_id(), reg.call_id());
    assert_eq!(cseq(&again), (cseq(&reg).0 + 1, Method::Register));
    assert_ne!(branch(&again), branch(&reg));
    assert_eq!(again.from().unwrap().tag(), reg.from().unwrap().tag());
    feed(
        &mut ua,
        T0 + 60_100,
        answer(&again, 200, &[(HeaderName::Expires, "120")]),
    );
    assert!(matches!(
        events(&mut ua)[..],
        [Event::Registered {
            renewal: true,
            expires: 120,
            ..
        }]
    ));

    // Unregistering: Expires 0 for the same Contact.
    ua.unregister(T0 + 70_000);
    let (_, un) = one_request(&mut ua);
    assert_eq!(un.expires(), Some(0));
    assert_eq!(
        hdr(&un, HeaderName::Contact),
        hdr(&reg, HeaderName::Contact)
    );
    feed(&mut ua, T0 + 70_010, answer(&un, 200, &[]));
    assert_eq!(events(&mut ua), vec![Event::Unregistered]);
    assert!(!ua.is_registered());
}

/// A node that offers key login: 401 with Digest challenges and a DOTS-Sig
/// one. The answer must be what the node can verify with
/// `dots_identity::login::verify`.
#[test]
fn register_answers_the_dots_sig_challenge() {
    let node_key = NodeKey::from_secret([9; 32]);
    let peer_id = bs58::encode(node_key.peer_id_bytes()).into_string();
    let mut ua = ua();
    ua.register(T0);
    let (_, first) = one_request(&mut ua);
    assert!(hdr(&first, HeaderName::Authorization).is_none());
    let key_challenge = format!("DOTS-Sig realm=\"dots\", nonce=\"n-42\", node=\"{peer_id}\"");
    let challenge = answer(
        &first,
        401,
        &[
            (
                HeaderName::WwwAuthenticate,
                "Digest realm=\"dots\", nonce=\"d1\", algorithm=MD5, qop=\"auth\"",
            ),
            (
                HeaderName::WwwAuthenticate,
                "Digest realm=\"dots\", nonce=\"d2\", algorithm=SHA-256, qop=\"auth\"",
            ),
            (HeaderName::WwwAuthenticate, &key_challenge),
        ],
    );
    feed(&mut ua, T0 + 20, challenge);
    assert!(events(&mut ua).is_empty());
    let (dest, second) = one_request(&mut ua);
    assert_eq!(dest, node());
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(cseq(&second), (cseq(&first).0 + 1, Method::Register));
    assert_ne!(branch(&second), branch(&first));
    let creds = Credentials::parse(hdr(&second, HeaderName::Authorization).unwrap())
        .expect("a DOTS-Sig Authorization")
        .unwrap();
    assert_eq!(creds.did, wallet().did());
    assert_eq!(creds.nonce, "n-42");
    assert_eq!(creds.realm, "dots");
    assert_eq!(creds.uri, second.uri.to_string());
    let contact = hdr(&second, HeaderName::Contact).unwrap();
    let grant = login::verify(
        &creds,
        "REGISTER",
        contact,
        600,
        &node_key.peer_id_bytes(),
        T0 + 20,
    )
    .expect("the node accepts the login");
    assert_eq!(grant.did, wallet().did());
    assert_eq!(grant.until, T0 + 20 + 600_000 + 30_000);

    feed(&mut ua, T0 + 40, answer(&second, 200, &[]));
    assert!(matches!(events(&mut ua)[..], [Event::Registered { .. }]));

    // A second challenge after our answer (a stale nonce) is answered once
    // more; a third in a row is a refusal.
    ua.handle_timeout(T0 + 40 + 300_000);
    let (_, refresh) = one_request(&mut ua);
    let mut latest = refresh;
    for nonce in ["n-43", "n-44"] {
        let c = format!("DOTS-Sig realm=\"dots\", nonce=\"{nonce}\", node=\"{peer_id}\"");
        feed(
            &mut ua,
            T0 + 300_100,
            answer(&latest, 401, &[(HeaderName::WwwAuthenticate, &c)]),
        );
        let (_, next) = one_request(&mut ua);
        assert!(hdr(&next, HeaderName::Authorization)
            .unwrap()
            .contains(nonce));
        latest = next;
    }
    let c = format!("DOTS-Sig realm=\"dots\", nonce=\"n-45\", node=\"{peer_id}\"");
    feed(
        &mut ua,
        T0 + 300_200,
        answer(&latest, 401, &[(HeaderName::WwwAuthenticate, &c)]),
    );
    assert!(sent(&mut ua).is_empty());
    let evs = events(&mut ua);
    let [Event::RegistrationFailed { failure }] = &evs[..] else {
        panic!("{evs:?}")
    };
    assert_eq!(failure.code, 401);
    assert!(
        failure.to_string().contains("refused the key login"),
        "{failure}"
    );
    // It tries again later by itself (after Timer K of the last REGISTER).
    ua.handle_timeout(T0 + 300_200 + 5_000);
    assert!(sent(&mut ua).is_empty());
    assert_eq!(ua.poll_timeout(), Some(T0 + 300_200 + 30_000));
    ua.handle_timeout(T0 + 300_200 + 30_000);
    let (_, retry) = one_request(&mut ua);
    assert!(hdr(&retry, HeaderName::Authorization).is_none());
}

#[test]
fn register_at_a_digest_only_node_fails_with_advice() {
    let mut ua = ua();
    ua.register(T0);
    let (_, reg) = one_request(&mut ua);
    feed(
        &mut ua,
        T0 + 5,
        answer(
            &reg,
            401,
            &[(
                HeaderName::WwwAuthenticate,
                "Digest realm=\"dots\", nonce=\"d1\", algorithm=MD5, qop=\"auth\"",
            )],
        ),
    );
    assert!(sent(&mut ua).is_empty(), "no answer to a Digest challenge");
    let evs = events(&mut ua);
    let [Event::RegistrationFailed { failure }] = &evs[..] else {
        panic!("{evs:?}")
    };
    let text = failure.to_string();
    assert!(text.starts_with("401 Unauthorized"), "{text}");
    assert!(
        text.contains("the node at udp:192.0.2.1:5060 does not offer key login (DOTS-Sig)"),
        "{text}"
    );
    assert!(text.contains("Digest (MD5)"), "{text}");
}

#[test]
fn register_follows_min_expires() {
    let mut ua = ua();
    ua.register(T0);
    let (_, reg) = one_request(&mut ua);
    feed(
        &mut ua,
        T0 + 5,
        answer(&reg, 423, &[(HeaderName::MinExpires, "3600")]),
    );
    let (_, again) = one_request(&mut ua);
    assert_eq!(again.expires(), Some(3600));
    feed(&mut ua, T0 + 9, answer(&again, 200, &[]));
    assert!(matches!(
        events(&mut ua)[..],
        [Event::Registered { expires: 3600, .. }]
    ));
}

#[test]
fn register_times_out_after_retransmissions() {
    let mut ua = ua();
    ua.register(T0);
    let (_, reg) = one_request(&mut ua);
    let mut copies = 0;
    while let Some(at) = ua.poll_timeout() {
        if !events(&mut ua).is_empty() || at > T0 + 40_000 {
            break;
        }
        ua.handle_timeout(at);
        for (_, m) in sent(&mut ua) {
            let Message::Request(r) = m else { panic!() };
            assert_eq!(branch(&r), branch(&reg), "a retransmission");
            copies += 1;
        }
        let evs = events(&mut ua);
        if let [Event::RegistrationFailed { failure }] = &evs[..] {
            assert_eq!(failure.code, 408);
            assert!(failure
                .to_string()
                .contains("no response from udp:192.0.2.1:5060"));
            assert!(at >= T0 + 32_000);
            assert!(copies >= 9, "Timer E: {copies} retransmissions");
            return;
        }
    }
    panic!("no timeout reported");
}

// ----- calls out -----------------------------------------------------------------

fn target() -> Uri {
    Uri::parse("sip:bob@192.0.2.1:5060").unwrap()
}

#[test]
fn outgoing_call_follows_record_route_for_ack_and_bye() {
    let mut ua = ua();
    let call = ua.call(T0, target());
    let (dest, invite) = one_request(&mut ua);
    assert_eq!(dest, node());
    assert_eq!(invite.uri, target());
    assert_eq!(
        hdr(&invite, HeaderName::ContentType),
        Some("application/sdp")
    );
    let sdp = String::from_utf8(invite.body.clone()).unwrap();
    assert!(
        sdp.contains("m=audio ") && sdp.contains("c=IN IP4 192.0.2.7"),
        "{sdp}"
    );
    assert!(hdr(&invite, HeaderName::Contact).is_some());

    feed(&mut ua, T0 + 10, answer(&invite, 100, &[]));
    feed(&mut ua, T0 + 20, answer(&invite, 180, &[]));
    feed(&mut ua, T0 + 30, answer(&invite, 180, &[]));
    assert_eq!(events(&mut ua), vec![Event::Ringing { call, code: 180 }]);

    // Two Record-Routes (the node in and out) and the callee's Contact.
    let ok = answer(
        &invite,
        200,
        &[
            (
                HeaderName::RecordRoute,
                "<sip:192.0.2.1:5060;transport=tcp;lr>",
            ),
            (HeaderName::RecordRoute, NODE_RR),
            (HeaderName::Contact, "<sip:bob@198.51.100.9:7000>"),
            (HeaderName::ContentType, "application/sdp"),
        ],
    );
    feed(&mut ua, T0 + 40, ok.clone());
    let evs = events(&mut ua);
    assert!(
        matches!(&evs[..], [Event::Answered { call: c, .. }] if *c == call),
        "{evs:?}"
    );
    let (dest, ack) = one_request(&mut ua);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(dest, node(), "ACK goes to the first route");
    assert_eq!(ack.uri.to_string(), "sip:bob@198.51.100.9:7000");
    let routes: Vec<&str> = ack.headers.get_all(HeaderName::Route).collect();
    assert_eq!(routes, [NODE_RR, "<sip:192.0.2.1:5060;transport=tcp;lr>"]);
    assert_eq!(cseq(&ack), (1, Method::Ack));
    assert_eq!(ack.to().unwrap().tag(), Some("nodetag"));
    assert_ne!(branch(&ack), branch(&invite));

    // A 2xx retransmission (our ACK was lost) gets the same ACK again.
    feed(&mut ua, T0 + 540, ok.clone());
    let (_, ack2) = one_request(&mut ua);
    assert_eq!(ack2.to_bytes(), ack.to_bytes());
    assert!(events(&mut ua).is_empty());

    ua.hangup(T0 + 2000, call);
    let (dest, bye) = one_request(&mut ua);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(dest, node());
    assert_eq!(bye.uri, ack.uri);
    assert_eq!(
        bye.headers.get_all(HeaderName::Route).collect::<Vec<_>>(),
        routes
    );
    assert_eq!(cseq(&bye), (2, Method::Bye));
    assert_eq!(bye.call_id(), invite.call_id());
    assert_eq!(bye.from().unwrap().tag(), invite.from().unwrap().tag());
    feed(&mut ua, T0 + 2010, answer(&bye, 200, &[]));
    let evs = events(&mut ua);
    assert!(
        matches!(
            &evs[..],
            [Event::CallEnded {
                reason: EndReason::HungUp,
                ..
            }]
        ),
        "{evs:?}"
    );
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn outgoing_call_answers_407_with_dots_sig() {
    let node_key = NodeKey::from_secret([9; 32]);
    let peer_id = bs58::encode(node_key.peer_id_bytes()).into_string();
    let mut ua = ua();
    let call = ua.call(T0, target());
    let (_, invite) = one_request(&mut ua);
    let c = format!("DOTS-Sig realm=\"dots\", nonce=\"p1\", node=\"{peer_id}\"");
    feed(
        &mut ua,
        T0 + 10,
        answer(
            &invite,
            407,
            &[
                (
                    HeaderName::ProxyAuthenticate,
                    "Digest realm=\"dots\", nonce=\"x\"",
                ),
                (HeaderName::ProxyAuthenticate, &c),
            ],
        ),
    );
    // The transaction layer ACKs the 407; then the new INVITE.
    let out = sent(&mut ua);
    assert_eq!(out.len(), 2, "{out:#?}");
    let Message::Request(ack) = &out[0].1 else {
        panic!()
    };
    assert_eq!(ack.method, Method::Ack);
    let Message::Request(again) = &out[1].1 else {
        panic!()
    };
    assert_eq!(again.method, Method::Invite);
    assert_eq!(cseq(again), (2, Method::Invite));
    assert_eq!(again.call_id(), invite.call_id());
    assert_eq!(again.from().unwrap().tag(), invite.from().unwrap().tag());
    assert!(hdr(again, HeaderName::Authorization).is_none());
    let creds = Credentials::parse(hdr(again, HeaderName::ProxyAuthorization).unwrap())
        .unwrap()
        .unwrap();
    let contact = hdr(again, HeaderName::Contact).unwrap();
    login::verify(
        &creds,
        "INVITE",
        contact,
        0,
        &node_key.peer_id_bytes(),
        T0 + 10,
    )
    .expect("a valid INVITE login");
    assert!(login::verify(
        &creds,
        "REGISTER",
        contact,
        0,
        &node_key.peer_id_bytes(),
        T0
    )
    .is_err());

    // The BYE then counts on from the INVITE's CSeq.
    let ok = answer(again, 200, &[(HeaderName::Contact, "<sip:bob@192.0.2.9>")]);
    feed(&mut ua, T0 + 50, ok);
    let (_, ack) = one_request(&mut ua);
    assert_eq!(cseq(&ack), (2, Method::Ack));
    assert_eq!(ack.uri.to_string(), "sip:bob@192.0.2.9");
    assert_eq!(ack.headers.count(HeaderName::Route), 0);
    events(&mut ua);
    ua.hangup(T0 + 100, call);
    let (dest, bye) = one_request(&mut ua);
    assert_eq!(cseq(&bye), (3, Method::Bye));
    assert_eq!(
        dest.addr,
        "192.0.2.9:5060".parse().unwrap(),
        "no route set: the Contact"
    );
}

#[test]
fn outgoing_call_failures() {
    // A final error.
    let mut ua = ua();
    let call = ua.call(T0, target());
    let (_, invite) = one_request(&mut ua);
    feed(&mut ua, T0 + 10, answer(&invite, 486, &[]));
    let evs = events(&mut ua);
    let [Event::CallEnded {
        call: c,
        reason: EndReason::Failed(f),
        ..
    }] = &evs[..]
    else {
        panic!("{evs:?}")
    };
    assert_eq!((*c, f.code, f.reason.as_str()), (call, 486, "Busy Here"));

    // 407 without a DOTS-Sig challenge.
    let mut ua = self::ua();
    ua.call(T0, target());
    let (_, invite) = one_request(&mut ua);
    feed(
        &mut ua,
        T0 + 10,
        answer(
            &invite,
            407,
            &[(
                HeaderName::ProxyAuthenticate,
                "Digest realm=\"dots\", nonce=\"x\"",
            )],
        ),
    );
    let evs = events(&mut ua);
    let [Event::CallEnded {
        reason: EndReason::Failed(f),
        ..
    }] = &evs[..]
    else {
        panic!("{evs:?}")
    };
    assert!(
        f.to_string()
            .contains("does not offer key login (DOTS-Sig)"),
        "{f}"
    );

    // No answer at all: Timer B.
    let mut ua = self::ua();
    ua.call(T0, target());
    one_request(&mut ua);
    while events(&mut ua).is_empty() {
        let Some(now) = ua.poll_timeout() else { break };
        ua.handle_timeout(now);
        let evs = events(&mut ua);
        if let [Event::CallEnded {
            reason: EndReason::Failed(f),
            ..
        }] = &evs[..]
        {
            assert_eq!(f.code, 408);
            assert_eq!(now, T0 + 32_000);
            return;
        }
        sent(&mut ua);
    }
    panic!("no timeout");
}

#[test]
fn outgoing_call_cancelled_before_answer() {
    let mut ua = ua();
    let call = ua.call(T0, target());
    let (_, invite) = one_request(&mut ua);
    // Hanging up before any provisional: CANCEL waits for one (§9.1).
    ua.hangup(T0 + 5, call);
    assert!(sent(&mut ua).is_empty());
    feed(&mut ua, T0 + 10, answer(&invite, 180, &[]));
    events(&mut ua);
    let (dest, cancel) = one_request(&mut ua);
    assert_eq!(dest, node());
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(branch(&cancel), branch(&invite));
    feed(&mut ua, T0 + 20, answer(&cancel, 200, &[]));
    feed(&mut ua, T0 + 30, answer(&invite, 487, &[]));
    let evs = events(&mut ua);
    assert!(
        matches!(
            &evs[..],
            [Event::CallEnded {
                reason: EndReason::Cancelled,
                ..
            }]
        ),
        "{evs:?}"
    );
}

// ----- calls in ----------------------------------------------------------------------

/// An INVITE from bob through the node, which Record-Routes.
fn incoming_invite(branch: &str) -> Request {
    let text = format!(
        "INVITE sip:{user}@192.0.2.7:5070 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
         Via: SIP/2.0/UDP 198.51.100.9:7000;branch=z9hG4bKcaller;received=198.51.100.9\r\n\
         Record-Route: {NODE_RR}\r\n\
         Max-Forwards: 69\r\n\
         From: \"Bob\" <sip:bob@192.0.2.1>;tag=bobtag\r\n\
         To: <sip:{user}@192.0.2.1>\r\n\
         Call-ID: call-1@198.51.100.9\r\n\
         CSeq: 7 INVITE\r\n\
         Contact: <sip:bob@198.51.100.9:7000>\r\n\
         Content-Type: application/sdp\r\n\
         \r\n\
         v=0\r\no=- 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n\
         m=audio 6000 RTP/AVP 8 0\r\n",
        user = user()
    );
    let Message::Request(r) = parse_datagram(text.as_bytes()).unwrap() else {
        panic!()
    };
    r
}

/// An in-dialog request from bob, through the node, after our 2xx.
fn from_bob(method: &str, seq: u32, our_tag: &str, branch: &str) -> String {
    format!(
        "{method} sip:{user}@192.0.2.7:5070 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
         Max-Forwards: 69\r\n\
         From: \"Bob\" <sip:bob@192.0.2.1>;tag=bobtag\r\n\
         To: <sip:{user}@192.0.2.1>;tag={our_tag}\r\n\
         Call-ID: call-1@198.51.100.9\r\n\
         CSeq: {seq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        user = user()
    )
}

#[test]
fn incoming_call_rings_answers_and_ends_with_bye() {
    let mut ua = ua();
    let invite = incoming_invite("z9hG4bKn1");
    feed(&mut ua, T0, invite.clone());
    let ringing = one_response(&mut ua);
    assert_eq!(ringing.code, 180);
    let tag = ringing.to().unwrap().tag().unwrap().to_string();
    assert_eq!(hdr(&ringing, HeaderName::RecordRoute), Some(NODE_RR));
    assert!(hdr(&ringing, HeaderName::Contact).is_some());
    let evs = events(&mut ua);
    let [Event::IncomingCall {
        call,
        call_id,
        from,
    }] = &evs[..]
    else {
        panic!("{evs:?}")
    };
    assert_eq!(call_id, "call-1@198.51.100.9");
    assert_eq!(from, "sip:bob@192.0.2.1");
    let call = *call;

    // An INVITE retransmission is absorbed (the 180 is repeated).
    feed(&mut ua, T0 + 100, invite.clone());
    assert_eq!(one_response(&mut ua).code, 180);
    assert!(events(&mut ua).is_empty());

    ua.accept(T0 + 200, call).unwrap();
    assert!(matches!(events(&mut ua)[..], [Event::Answered { .. }]));
    let ok = one_response(&mut ua);
    assert_eq!(ok.code, 200);
    assert_eq!(
        ok.to().unwrap().tag(),
        Some(tag.as_str()),
        "same tag as the 180"
    );
    assert_eq!(hdr(&ok, HeaderName::RecordRoute), Some(NODE_RR));
    let sdp = String::from_utf8(ok.body.clone()).unwrap();
    assert!(
        sdp.contains("RTP/AVP 8\r\n"),
        "PCMA, the first offered we know: {sdp}"
    );
    assert_eq!(ok.vias().len(), 2);
    assert!(ua.accept(T0 + 200, call).is_err(), "answered once");

    // Retransmitted at T1, 2*T1, 4*T1 until the ACK.
    for at in [700, 1700, 3700] {
        assert_eq!(ua.poll_timeout(), Some(T0 + at));
        ua.handle_timeout(T0 + at);
        assert_eq!(one_response(&mut ua).to_bytes(), ok.to_bytes());
    }
    feed(&mut ua, T0 + 4000, from_bob("ACK", 7, &tag, "z9hG4bKack"));
    ua.handle_timeout(T0 + 7700);
    assert!(sent(&mut ua).is_empty(), "no retransmission after the ACK");
    assert!(events(&mut ua).is_empty());

    feed(&mut ua, T0 + 9000, from_bob("BYE", 8, &tag, "z9hG4bKbye"));
    let r = one_response(&mut ua);
    assert_eq!((r.code, cseq(&r)), (200, (8, Method::Bye)));
    let evs = events(&mut ua);
    assert!(
        matches!(&evs[..], [Event::CallEnded { reason: EndReason::ByeFromPeer, call: c, .. }] if *c == call),
        "{evs:?}"
    );
    // A BYE for a dialog that is gone: 481.
    feed(&mut ua, T0 + 9500, from_bob("BYE", 9, &tag, "z9hG4bKbye2"));
    assert_eq!(one_response(&mut ua).code, 481);
}

#[test]
fn our_bye_on_an_incoming_call_follows_the_route_set() {
    let mut ua = ua();
    feed(&mut ua, T0, incoming_invite("z9hG4bKn1"));
    let tag = one_response(&mut ua)
        .to()
        .unwrap()
        .tag()
        .unwrap()
        .to_string();
    let call = match &events(&mut ua)[..] {
        [Event::IncomingCall { call, .. }] => *call,
        e => panic!("{e:?}"),
    };
    ua.accept(T0 + 10, call).unwrap();
    one_response(&mut ua);
    // Hanging up before the ACK: the BYE waits for it.
    ua.hangup(T0 + 20, call);
    assert!(sent(&mut ua).is_empty());
    feed(&mut ua, T0 + 30, from_bob("ACK", 7, &tag, "z9hG4bKack"));
    let (dest, bye) = one_request(&mut ua);
    assert_eq!(dest, node());
    assert_eq!(bye.uri.to_string(), "sip:bob@198.51.100.9:7000");
    assert_eq!(hdr(&bye, HeaderName::Route), Some(NODE_RR));
    assert_eq!(bye.to().unwrap().tag(), Some("bobtag"));
    assert_eq!(bye.from().unwrap().tag(), Some(tag.as_str()));
    assert_eq!(bye.to().unwrap().display_name.as_deref(), Some("Bob"));
    feed(&mut ua, T0 + 40, answer(&bye, 200, &[]));
    let evs = events(&mut ua);
    assert!(
        matches!(
            &evs[..],
            [
                Event::Answered { .. },
                Event::CallEnded {
                    reason: EndReason::HungUp,
                    ..
                }
            ]
        ),
        "{evs:?}"
    );
}

#[test]
fn incoming_call_cancelled() {
    let mut ua = ua();
    let invite = incoming_invite("z9hG4bKn1");
    feed(&mut ua, T0, invite.clone());
    one_response(&mut ua);
    events(&mut ua);
    let cancel = format!(
        "CANCEL {} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKn1\r\n\
         Max-Forwards: 70\r\nFrom: \"Bob\" <sip:bob@192.0.2.1>;tag=bobtag\r\nTo: <sip:{}@192.0.2.1>\r\n\
         Call-ID: call-1@198.51.100.9\r\nCSeq: 7 CANCEL\r\nContent-Length: 0\r\n\r\n",
        invite.uri,
        user()
    );
    feed(&mut ua, T0 + 50, cancel.as_str());
    let out = sent(&mut ua);
    let codes: Vec<(u16, Method)> = out
        .iter()
        .map(|(_, m)| match m {
            Message::Response(r) => (r.code, cseq(r).1),
            _ => panic!(),
        })
        .collect();
    assert_eq!(codes, [(200, Method::Cancel), (487, Method::Invite)]);
    let evs = events(&mut ua);
    assert!(
        matches!(
            &evs[..],
            [Event::CallEnded {
                reason: EndReason::CancelledByPeer,
                ..
            }]
        ),
        "{evs:?}"
    );
    // A CANCEL that matches nothing: 481.
    feed(
        &mut ua,
        T0 + 60,
        cancel.replace("z9hG4bKn1", "z9hG4bKother").as_str(),
    );
    assert_eq!(one_response(&mut ua).code, 481);
}

#[test]
fn answered_call_without_ack_is_hung_up() {
    let mut ua = ua();
    feed(&mut ua, T0, incoming_invite("z9hG4bKn1"));
    one_response(&mut ua);
    let call = match &events(&mut ua)[..] {
        [Event::IncomingCall { call, .. }] => *call,
        e => panic!("{e:?}"),
    };
    ua.accept(T0, call).unwrap();
    events(&mut ua);
    let mut last = T0;
    let mut retransmissions = 0;
    while let Some(at) = ua.poll_timeout() {
        last = at;
        ua.handle_timeout(at);
        for (_, m) in sent(&mut ua) {
            match m {
                Message::Response(r) => {
                    assert_eq!(r.code, 200);
                    retransmissions += 1;
                }
                Message::Request(r) => {
                    assert_eq!(r.method, Method::Bye);
                    assert_eq!(at, T0 + 32_000);
                    let evs = events(&mut ua);
                    assert!(
                        matches!(
                            &evs[..],
                            [Event::CallEnded {
                                reason: EndReason::NoAck,
                                ..
                            }]
                        ),
                        "{evs:?}"
                    );
                    assert!(retransmissions >= 9, "{retransmissions}");
                    return;
                }
            }
        }
    }
    panic!("no BYE, last wake-up {last}");
}

// ----- messages and the rest --------------------------------------------------------------

#[test]
fn messages_in_and_out() {
    let mut ua = ua();
    let m = ua.message(T0, target(), "text/plain;charset=utf-8", "héllo");
    let (dest, msg) = one_request(&mut ua);
    assert_eq!(dest, node());
    assert_eq!(msg.method, Method::Message);
    assert_eq!(msg.body, "héllo".as_bytes());
    assert_eq!(
        hdr(&msg, HeaderName::ContentType),
        Some("text/plain;charset=utf-8")
    );
    feed(&mut ua, T0 + 5, answer(&msg, 202, &[]));
    assert_eq!(
        events(&mut ua),
        vec![Event::MessageDelivered {
            message: m,
            code: 202
        }]
    );

    let m = ua.message(T0, target(), "text/plain", "x");
    let (_, msg) = one_request(&mut ua);
    feed(&mut ua, T0 + 5, answer(&msg, 404, &[]));
    let evs = events(&mut ua);
    assert!(
        matches!(&evs[..], [Event::MessageFailed { message, failure }] if *message == m && failure.code == 404),
        "{evs:?}"
    );

    let incoming = format!(
        "MESSAGE sip:{user}@192.0.2.7:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKm1\r\n\
         Max-Forwards: 69\r\nFrom: <sip:bob@192.0.2.1>;tag=b1\r\nTo: <sip:{user}@192.0.2.1>\r\n\
         Call-ID: m1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nhi\r\nthere",
        user = user()
    );
    feed(&mut ua, T0 + 10, incoming.as_str());
    let r = one_response(&mut ua);
    assert_eq!(r.code, 200);
    assert!(r.to().unwrap().tag().is_some());
    assert_eq!(
        events(&mut ua),
        vec![Event::MessageReceived {
            from: "sip:bob@192.0.2.1".into(),
            content_type: Some("text/plain".into()),
            text: "hi\r\nthere".into(),
        }]
    );
    // A retransmission gets the same 200 and no second event.
    feed(&mut ua, T0 + 510, incoming.as_str());
    assert_eq!(one_response(&mut ua).to_bytes(), r.to_bytes());
    assert!(events(&mut ua).is_empty());
}

#[test]
fn other_requests() {
    let mut ua = ua();
    let req = |method: &str, branch: &str| {
        format!(
            "{method} sip:{user}@192.0.2.7:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
             Max-Forwards: 69\r\nFrom: <sip:bob@192.0.2.1>;tag=b1\r\nTo: <sip:{user}@192.0.2.1>\r\n\
             Call-ID: {branch}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n",
            user = user()
        )
    };
    for (method, code) in [
        ("OPTIONS", 200),
        ("SUBSCRIBE", 405),
        ("FOO", 501),
        ("BYE", 481),
    ] {
        feed(
            &mut ua,
            T0,
            req(method, &format!("z9hG4bK{method}")).as_str(),
        );
        let r = one_response(&mut ua);
        assert_eq!(r.code, code, "{method}");
    }
    // An extension the agent would have to support: 420, no call.
    let text = String::from_utf8(incoming_invite("z9hG4bKreq").to_bytes())
        .unwrap()
        .replace(
            "Max-Forwards: 69\r\n",
            "Max-Forwards: 69\r\nRequire: 100rel, timer\r\n",
        );
    feed(&mut ua, T0, text.as_str());
    let r = one_response(&mut ua);
    assert_eq!(r.code, 420);
    assert_eq!(hdr(&r, HeaderName::Unsupported), Some("100rel, timer"));
    assert!(events(&mut ua).is_empty());
    // An INVITE without Contact cannot make a dialog.
    let text = incoming_invite("z9hG4bKnc").to_bytes();
    let text = String::from_utf8(text)
        .unwrap()
        .replace("Contact: <sip:bob@198.51.100.9:7000>\r\n", "");
    feed(&mut ua, T0, text.as_str());
    assert_eq!(one_response(&mut ua).code, 400);
    assert!(events(&mut ua).is_empty());
}

/// Garbage, truncated and mangled messages: never a panic, never an event.
#[test]
fn malformed_input_is_dropped() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut ua = ua();
    ua.call(T0, target());
    let (_, invite) = one_request(&mut ua);
    let ok = answer(
        &invite,
        200,
        &[
            (HeaderName::RecordRoute, NODE_RR),
            (HeaderName::Contact, "<sip:b@192.0.2.9>"),
        ],
    )
    .to_bytes();
    let samples: Vec<Vec<u8>> = vec![
        ok.clone(),
        incoming_invite("z9hG4bKx").to_bytes(),
        from_bob("BYE", 2, "t", "z9hG4bKy").into_bytes(),
        b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
        b"\r\n\r\n".to_vec(),
    ];
    for i in 0..3000 {
        let mut bytes = samples[i % samples.len()].clone();
        match rng.random_range(0..4) {
            0 => bytes.truncate(rng.random_range(0..bytes.len().max(1))),
            1 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..bytes.len().max(1));
                    if at < bytes.len() {
                        bytes[at] = rng.random();
                    }
                }
            }
            2 => {
                let at = rng.random_range(0..bytes.len().max(1));
                bytes.splice(
                    at..at,
                    b"\r\nRecord-Route: <x>\r\nContact: *\r\n".iter().copied(),
                );
            }
            _ => {
                bytes = (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect()
            }
        }
        ua.handle_datagram(T0 + i as u64, &bytes, node());
        sent(&mut ua);
        events(&mut ua);
    }
    // Still working afterwards.
    let m = ua.message(T0 + 5000, target(), "text/plain", "still here");
    let (_, msg) = one_request(&mut ua);
    feed(&mut ua, T0 + 5001, answer(&msg, 200, &[]));
    assert!(events(&mut ua).contains(&Event::MessageDelivered {
        message: m,
        code: 200
    }));
}

#[test]
fn contact_names_the_transport_over_tcp() {
    let w = wallet();
    let node = Peer::new(TransportKind::Tcp, NODE.parse().unwrap());
    let cfg = Config::new(
        &w.did(),
        "192.0.2.1",
        node,
        "[2001:db8::7]:40000".parse().unwrap(),
    );
    let mut ua = UserAgent::new(cfg, w, 5);
    assert_eq!(
        ua.contact(),
        format!("<sip:{}@[2001:db8::7]:40000;transport=tcp>", user())
    );
    ua.register(T0);
    let (dest, reg) = one_request(&mut ua);
    assert_eq!(dest, node);
    let via = reg.top_via().unwrap();
    assert_eq!(via.transport, "TCP");
    assert_eq!(via.host, "[2001:db8::7]");
    let contact = NameAddr::parse(hdr(&reg, HeaderName::Contact).unwrap()).unwrap();
    assert_eq!(contact.uri.transport().as_deref(), Some("tcp"));
    // Reliable transport: no retransmission, only the timeout.
    assert_eq!(ua.poll_timeout(), Some(T0 + 32_000));
}
