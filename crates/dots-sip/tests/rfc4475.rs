//! RFC 4475 §3.1: SIP torture test messages. The messages are in
//! `tests/torture/*.dat`, byte for byte as the RFC gives them.

use dots_sip::header::HeaderName;
use dots_sip::{
    parse_datagram, ContactValue, Message, Method, NameAddr, ParseErrorKind, Request, Response,
    Scheme, SipMessage,
};

fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/torture/{name}.dat", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn request(name: &str) -> Request {
    match parse_datagram(&load(name)) {
        Ok(Message::Request(r)) => {
            check_round_trip(&Message::Request(r.clone()));
            r
        }
        Ok(Message::Response(_)) => panic!("{name}: parsed as a response"),
        Err(e) => panic!("{name}: {e}"),
    }
}

fn response(name: &str) -> Response {
    match parse_datagram(&load(name)) {
        Ok(Message::Response(r)) => {
            check_round_trip(&Message::Response(r.clone()));
            r
        }
        Ok(Message::Request(_)) => panic!("{name}: parsed as a request"),
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Serialising and parsing again gives the same message (Content-Length is
/// rewritten, so it is left out of the comparison).
fn check_round_trip(msg: &Message) {
    let again = parse_datagram(&msg.to_bytes()).expect("re-serialised message parses");
    assert!(
        msg.eq_ignoring_content_length(&again),
        "round trip changed the message:\n{msg:?}\n{again:?}"
    );
    let (streamed, used) = dots_sip::parse_stream(&msg.to_bytes()).expect("stream parse");
    assert_eq!(used, msg.to_bytes().len());
    assert!(msg.eq_ignoring_content_length(&streamed));
}

fn contacts(msg: &impl SipMessage) -> Vec<NameAddr> {
    msg.headers()
        .get_all(HeaderName::Contact)
        .map(|v| match ContactValue::parse(v).unwrap() {
            ContactValue::Addr(a) => a,
            ContactValue::Star => panic!("unexpected *"),
        })
        .collect()
}

// ---------------------------------------------------------------- §3.1.1

#[test]
fn wsinv_short_tortuous_invite() {
    let r = request("wsinv");
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.scheme, Scheme::Sip);
    assert_eq!(r.uri.user.as_deref(), Some("vivekg"));
    assert_eq!(r.uri.host, "chair-dnrc.example.com");
    assert_eq!(r.uri.param("unknownparam"), Some(None));
    let to = r.to().unwrap();
    assert_eq!(to.uri.user.as_deref(), Some("vivekg"));
    assert_eq!(to.tag(), Some("1918181833n"));
    let from = r.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(from.uri.to_string(), "sip:jdrosen@example.com");
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(r.max_forwards(), Some(68));
    assert_eq!(r.call_id(), Some("wsinv.ndaksdj@192.0.2.1"));
    let cseq = r.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    let vias = r.vias();
    assert_eq!(vias.len(), 3);
    assert_eq!(r.headers.count(HeaderName::Via), 3);
    assert_eq!(
        (
            vias[0].transport.as_str(),
            vias[0].host.as_str(),
            vias[0].branch()
        ),
        ("UDP", "192.0.2.2", Some("390skdjuw"))
    );
    assert_eq!(vias[0].protocol, "SIP/2.0");
    assert_eq!(
        (
            vias[1].transport.as_str(),
            vias[1].host.as_str(),
            vias[1].branch()
        ),
        ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8"))
    );
    assert_eq!(
        (
            vias[2].transport.as_str(),
            vias[2].host.as_str(),
            vias[2].branch()
        ),
        ("UDP", "192.168.255.111", Some("z9hG4bK30239"))
    );
    assert_eq!(r.headers.get(HeaderName::Subject), Some(""));
    assert_eq!(
        r.headers.get_named("newfangledheader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        r.headers.get_named("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    assert_eq!(
        r.headers.get(HeaderName::ContentType),
        Some("application/sdp")
    );
    let route = NameAddr::parse(r.headers.get(HeaderName::Route).unwrap()).unwrap();
    assert_eq!(route.uri.host, "services.example.com");
    assert_eq!(route.uri.param("lr"), Some(None));
    assert_eq!(route.uri.param("unknownwith"), Some(Some("value")));
    assert_eq!(route.uri.param("unknown-no-value"), Some(None));
    let c = contacts(&r);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].display_name.as_deref(), Some("Quoted string \"\""));
    assert_eq!(c[0].uri.user.as_deref(), Some("jdrosen"));
    assert_eq!(c[0].param("newparam"), Some(Some("newvalue")));
    assert_eq!(c[0].param("secondparam"), Some(None));
    assert_eq!(c[0].param("q"), Some(Some("0.33")));
    assert_eq!(r.body.len(), 150);
    assert!(r.body.starts_with(b"v=0\r\n") && r.body.ends_with(b"a=rtpmap:31 LPC\r\n"));
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let r = request("intmeth");
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(r.method, Method::Other(method.into()));
    assert_eq!(r.method.as_str(), method);
    assert_eq!(
        r.uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        r.uri.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(r.uri.host, "example.com");
    assert!(r.uri.params.is_empty() && r.uri.headers.is_none());
    let via = r.top_via().unwrap();
    assert_eq!(via.transport, "TCP");
    assert_eq!(via.branch(), Some("z9hG4bK-.!%66*_+`'~"));
    let to = r.to().unwrap();
    assert_eq!(to.display_name.as_deref(), Some("BEL:\x07 NUL:\0 DEL:\x7f"));
    assert_eq!(
        to.uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    let from = r.from().unwrap();
    assert_eq!(
        from.display_name.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(from.uri.user.as_deref(), Some("mundane"));
    assert_eq!(
        from.param("fromParam''~+*_!.-%"),
        Some(Some("\"работающий\""))
    );
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        r.call_id(),
        Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    );
    let cseq = r.cseq().unwrap();
    assert_eq!(cseq.seq, 139122385);
    assert_eq!(cseq.method, r.method);
    assert_eq!(r.max_forwards(), Some(255));
    assert_eq!(
        r.headers.get_named("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
    assert!(r.body.is_empty());
}

#[test]
fn esc01_valid_percent_escapes() {
    let r = request("esc01");
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.user.as_deref(), Some("sips%3Auser%40example.com"));
    assert_eq!(
        r.uri.user_decoded().as_deref(),
        Some("sips:user@example.com")
    );
    assert_eq!(r.uri.host, "example.net");
    let to = r.to().unwrap();
    assert_eq!(to.uri.user_decoded().as_deref(), Some("user"));
    assert!(to.uri.equivalent(&"sip:user@example.com".parse().unwrap()));
    let from = r.from().unwrap();
    assert_eq!(from.uri.user_decoded().as_deref(), Some("I have spaces"));
    assert_eq!(from.tag(), Some("938"));
    assert_eq!(r.call_id(), Some("esc01.239409asdfakjkn23onasd0-3234"));
    assert_eq!(
        r.headers.get(HeaderName::ContentType),
        Some("application/sdp")
    );
    let c = contacts(&r);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].uri.user_decoded().as_deref(), Some("caller"));
    assert_eq!(c[0].uri.param("%6C%72"), Some(None));
    assert_eq!(c[0].uri.param("n%61me"), Some(Some("v%61lue%25%34%31")));
    assert_eq!(r.body.len(), 150);
}

#[test]
fn escnull_escaped_nulls_in_uris() {
    let r = request("escnull");
    assert_eq!(r.method, Method::Register);
    assert_eq!(r.uri.host, "example.com");
    assert!(r.uri.user.is_none());
    let to = r.to().unwrap();
    assert_eq!(to.uri.user.as_deref(), Some("null-%00-null"));
    assert_eq!(to.uri.user_decoded().as_deref(), Some("null-\0-null"));
    assert_eq!(r.from().unwrap().tag(), Some("839923423"));
    let c = contacts(&r);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].uri.user_decoded().as_deref(), Some("\0"));
    assert_eq!(c[1].uri.user_decoded().as_deref(), Some("\0\0"));
    assert_eq!(r.headers.get(HeaderName::ContentLength), Some("0"));
    assert!(r.body.is_empty());
}

#[test]
fn esc02_percent_that_is_not_an_escape() {
    let r = request("esc02");
    assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));
    assert_ne!(r.method, Method::Register);
    assert_eq!(r.uri.host, "registrar.example.com");
    assert_eq!(r.to().unwrap().display_name.as_deref(), Some("%Z%45"));
    assert_eq!(r.from().unwrap().display_name.as_deref(), Some("%Z%45"));
    assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK209%fzsnel234"));
    assert_eq!(r.cseq().unwrap().method, r.method);
    // "C%6Fntact" is an extension header, not Contact.
    let c = contacts(&r);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].uri.host, "host1.example.com");
    assert_eq!(c[1].uri.host, "host3.example.com");
    assert_eq!(
        r.headers.get_named("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
}

#[test]
fn lwsdisp_no_lws_between_display_name_and_laquot() {
    let r = request("lwsdisp");
    assert_eq!(r.method, Method::Options);
    let from = r.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("caller"));
    assert_eq!(from.uri.user.as_deref(), Some("caller"));
    assert_eq!(from.tag(), Some("323"));
}

#[test]
fn longreq_long_values_in_header_fields() {
    let r = request("longreq");
    assert_eq!(r.method, Method::Invite);
    let to = r.to().unwrap();
    assert_eq!(
        to.display_name.as_deref(),
        Some(format!("I have a user name of {} proportion", "extreme ".repeat(10)).as_str())
    );
    assert_eq!(to.uri.port, Some(6000));
    assert_eq!(
        to.uri.param("unknownparam1"),
        Some(Some(format!("very{}value", "long".repeat(20)).as_str()))
    );
    assert_eq!(
        to.uri.param(&format!(
            "very{}ParameterNameWithNoValue",
            "long".repeat(25)
        )),
        Some(None)
    );
    let from = r.from().unwrap();
    assert_eq!(
        from.uri.user.as_deref(),
        Some("amazinglylongcallername".repeat(5).as_str())
    );
    assert_eq!(
        from.tag(),
        Some(format!("12{}424", "982".repeat(50)).as_str())
    );
    assert_eq!(
        r.call_id(),
        Some(format!("longreq.one{}longcallid", "really".repeat(20)).as_str())
    );
    let vias = r.vias();
    assert_eq!(vias.len(), 34);
    assert_eq!(r.headers.count(HeaderName::Via), 34);
    for (i, via) in vias.iter().take(33).enumerate() {
        assert_eq!(via.host, format!("sip{}.example.com", 33 - i));
        assert_eq!(via.transport, "TCP");
    }
    assert_eq!(vias[33].host, "host.example.com");
    assert_eq!(vias[33].param("received"), Some(Some("192.0.2.5")));
    assert_eq!(
        vias[33].branch(),
        Some(format!("very{}branchvalue", "long".repeat(50)).as_str())
    );
    let name = format!("Unknown-{}-Name", "Long".repeat(20));
    assert!(r
        .headers
        .get_named(&name)
        .unwrap()
        .starts_with("unknown-long"));
    assert_eq!(contacts(&r).len(), 1);
    assert_eq!(r.max_forwards(), Some(70));
    assert_eq!(r.body.len(), 150);
}

#[test]
fn dblreq_extra_octets_in_datagram_are_ignored() {
    let r = request("dblreq");
    assert_eq!(r.method, Method::Register);
    assert_eq!(r.call_id(), Some("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));
    assert_eq!(r.cseq().unwrap().method, Method::Register);
    assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bKkdjuw23492"));
    let c = contacts(&r);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].uri.host, "host.example.com");
    assert!(r.body.is_empty());
    assert!(!String::from_utf8_lossy(&r.to_bytes()).contains("INVITE"));
}

#[test]
fn semiuri_semicolon_in_user_part() {
    let r = request("semiuri");
    assert_eq!(r.method, Method::Options);
    assert_eq!(r.uri.user.as_deref(), Some("user;par=u%40example.net"));
    assert_eq!(
        r.uri.user_decoded().as_deref(),
        Some("user;par=u@example.net")
    );
    assert_eq!(r.uri.host, "example.com");
    assert!(r.uri.params.is_empty());
    assert_eq!(
        r.headers.get(HeaderName::Accept),
        Some(
            "application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, \
             message/sip, message/sipfrag"
        )
    );
    assert_eq!(r.max_forwards(), Some(3));
}

#[test]
fn transports_varied_and_unknown_transport_types() {
    let r = request("transports");
    assert_eq!(r.call_id(), Some("transports.kijh4akdnaqjkwendsasfdj"));
    let vias = r.vias();
    let t: Vec<_> = vias.iter().map(|v| v.transport.as_str()).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    let hosts: Vec<_> = vias.iter().map(|v| v.host.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "t1.example.com",
            "t2.example.com",
            "t3.example.com",
            "t4.example.com",
            "t5.example.com"
        ]
    );
    assert_eq!(vias[3].branch(), Some("z9hG4bKasd0f3en"));
}

#[test]
fn mpart01_multipart_with_binary_body() {
    let r = request("mpart01");
    assert_eq!(r.method, Method::Message);
    assert_eq!(r.body.len(), 553);
    assert!(r.body.starts_with(b"--7a9cbec02ceef655\r\n"));
    assert!(r.body.ends_with(b"--7a9cbec02ceef655--\r\n"));
    assert!(std::str::from_utf8(&r.body).is_err(), "binary part kept");
    assert!(r.body.windows(4).any(|w| w == [0x30, 0x82, 0x01, 0x52]));
    let via = r.top_via().unwrap();
    assert_eq!((via.host.as_str(), via.port), ("127.0.0.1", Some(5070)));
    assert_eq!(via.param("rport"), Some(None));
    assert_eq!(
        r.headers.get(HeaderName::ContentType),
        Some("multipart/mixed;boundary=7a9cbec02ceef655")
    );
    assert_eq!(
        r.headers.get(HeaderName::Date),
        Some("Sat, 15 Oct 2005 04:44:56 GMT")
    );
    let route = NameAddr::parse(r.headers.get(HeaderName::Route).unwrap()).unwrap();
    assert_eq!(
        (route.uri.host.as_str(), route.uri.port),
        ("127.0.0.1", Some(5080))
    );
}

#[test]
fn unreason_unusual_reason_phrase() {
    let r = response("unreason");
    assert_eq!(r.code, 200);
    assert_eq!(r.reason, "= 2**3 * 5**2 но сто девяносто девять - простое");
    assert_eq!(r.cseq().unwrap().method, Method::Invite);
    assert_eq!(r.to().unwrap().tag(), Some("2229"));
    assert_eq!(r.body.len(), 154);
}

#[test]
fn noreason_empty_reason_phrase() {
    let r = response("noreason");
    assert_eq!(r.code, 100);
    assert_eq!(r.reason, "");
    assert!(r.is_provisional());
    assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK2398ndaoe"));
    assert_eq!(r.cseq().unwrap().seq, 35);
    assert_eq!(contacts(&r).len(), 1);
    assert!(r.body.is_empty());
}

// ---------------------------------------------------------------- §3.1.2

/// Asserts rejection with the given kind; for requests whose headers can be
/// read, `partial` must carry what a 400/505 response needs.
fn rejected(name: &str, kind: ParseErrorKind, partial: bool) -> Option<Request> {
    let e = match parse_datagram(&load(name)) {
        Ok(m) => panic!("{name} accepted: {m:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind, kind, "{name}: {e}");
    assert!(!e.reason.is_empty());
    if partial {
        let p = *e
            .partial
            .unwrap_or_else(|| panic!("{name}: no partial request"));
        assert!(
            p.headers.get(HeaderName::Via).is_some(),
            "{name}: partial without Via"
        );
        assert!(p.call_id().is_some(), "{name}: partial without Call-ID");
        Some(p)
    } else {
        assert!(e.partial.is_none(), "{name}: partial for a response");
        None
    }
}

fn bad(name: &str) -> Request {
    rejected(name, ParseErrorKind::BadRequest, true).unwrap()
}

#[test]
fn badinv01_extraneous_header_field_separators() {
    let p = bad("badinv01");
    assert_eq!(p.method, Method::Invite);
    assert_eq!(p.call_id(), Some("badinv01.0ha0isndaksdjasdf3234nas"));
}

#[test]
fn clerr_content_length_larger_than_message() {
    let p = bad("clerr");
    assert_eq!(p.cseq().unwrap().seq, 8);
    assert!(p.to().is_some() && p.from().unwrap().tag().is_some());
}

#[test]
fn ncl_negative_content_length() {
    let p = bad("ncl");
    assert_eq!(p.call_id(), Some("ncl.0ha0isndaksdj2193423r542w35"));
}

#[test]
fn scalar02_request_scalar_fields_with_overlarge_values() {
    let p = bad("scalar02");
    assert_eq!(p.method, Method::Register);
}

#[test]
fn scalarlg_response_scalar_fields_with_overlarge_values() {
    rejected("scalarlg", ParseErrorKind::BadRequest, false);
}

#[test]
fn quotbal_unterminated_quoted_string_in_display_name() {
    bad("quotbal");
}

#[test]
fn ltgtruri_request_uri_in_angle_brackets() {
    let p = bad("ltgtruri");
    assert_eq!(p.uri.to_string(), "sip:user@example.com");
}

#[test]
fn lwsruri_embedded_lws_in_request_uri() {
    let p = bad("lwsruri");
    assert_eq!(p.method, Method::Invite);
}

#[test]
fn lwsstart_multiple_sp_in_request_line() {
    let p = bad("lwsstart");
    assert_eq!(p.uri.to_string(), "sip:user@example.com");
}

#[test]
fn trws_sp_at_end_of_request_line() {
    let p = bad("trws");
    assert_eq!(p.method, Method::Options);
}

#[test]
fn escruri_escaped_headers_in_request_uri() {
    let p = bad("escruri");
    assert!(p.uri.headers.is_some());
}

#[test]
fn baddate_invalid_time_zone() {
    let p = bad("baddate");
    assert_eq!(p.call_id(), Some("baddate.239423mnsadf3j23lj42--sedfnm234"));
}

#[test]
fn regbadct_name_addr_not_enclosed() {
    let p = bad("regbadct");
    assert_eq!(p.method, Method::Register);
}

#[test]
fn badaspec_spaces_within_addr_spec() {
    bad("badaspec");
}

#[test]
fn baddn_non_token_characters_in_display_name() {
    bad("baddn");
}

#[test]
fn badvers_unknown_protocol_version() {
    let p = rejected("badvers", ParseErrorKind::VersionNotSupported, true).unwrap();
    assert_eq!(p.method, Method::Options);
    let e = parse_datagram(&load("badvers")).unwrap_err();
    assert_eq!(e.status_code(), Some(505));
}

#[test]
fn mismatch01_start_line_and_cseq_method_mismatch() {
    let p = bad("mismatch01");
    assert_eq!(p.method, Method::Options);
    assert_eq!(p.cseq().unwrap().method, Method::Invite);
}

#[test]
fn mismatch02_unknown_method_with_cseq_mismatch() {
    let p = bad("mismatch02");
    assert_eq!(p.method, Method::Other("NEWMETHOD".into()));
}

#[test]
fn bigcode_overlarge_response_code() {
    rejected("bigcode", ParseErrorKind::BadRequest, false);
}

#[test]
fn every_torture_file_is_covered() {
    let mut names: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/torture"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    names.sort();
    assert_eq!(names.len(), 32, "{names:?}");
}
