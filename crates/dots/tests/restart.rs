//! Registrations live in the node's store: they survive a crash (kill -9)
//! with their remaining expiry, and the node exits cleanly on SIGTERM.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The `expires` of the binding whose URI contains `needle`, from a
/// REGISTER response's Contact headers (or the response's Expires header).
fn binding_expiry(r: &SipResponse, needle: &str) -> Option<u64> {
    let contacts: Vec<String> = r
        .headers("Contact", Some("m"))
        .iter()
        .flat_map(|h| split_contacts(h))
        .collect();
    let c = contacts.iter().find(|c| c.contains(needle))?;
    let from_param = c.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("expires")
            .then(|| v.trim().trim_matches('"').parse().ok())
            .flatten()
    });
    from_param.or_else(|| r.headers("Expires", None).first()?.parse().ok())
}

/// Splits a Contact header value at the commas between contacts (not those
/// inside <...> or quotes).
fn split_contacts(h: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut cur) = (0i32, false, String::new());
    for ch in h.chars() {
        match ch {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

#[test]
fn binding_survives_kill_9() {
    let mut node = Node::start(NodeConfig::open());
    let uas = {
        let mut p = Sipp::new("bob-uas", "uas_answer.xml")
            .timeout(Duration::from_secs(90))
            .spawn();
        p.wait_listening();
        p
    };
    let contact = format!("{LOCALHOST}:{}", uas.port);
    let registered_at = Instant::now();
    register_open(&node, "bob", &contact, Transport::Udp).assert_ok(1);

    node.kill9();
    assert!(!node.is_alive());
    node.restart();

    // The binding is still there, with what is left of its 3600 s.
    let q = UdpClient::new()
        .register_query(&node.sip_addr(), "bob")
        .expect("no answer to a REGISTER query after restart");
    assert_eq!(q.status, 200, "REGISTER query after restart:\n{}", q.text);
    let needle = format!(":{}", uas.port);
    let left = binding_expiry(&q, &needle).unwrap_or_else(|| {
        panic!(
            "binding of bob to {contact} lost in the restart:\n{}",
            q.text
        )
    });
    let elapsed = registered_at.elapsed().as_secs();
    assert!(
        left <= 3600 && left + elapsed + 5 >= 3600,
        "remaining expiry {left} s, {elapsed} s after a 3600 s registration:\n{}",
        q.text
    );

    // And a call to bob still reaches the same UAS.
    Sipp::new("alice-to-bob", "uac_call.xml")
        .remote(&node.sip_addr())
        .key("caller", "alice")
        .key("callee", "bob")
        .run()
        .assert_ok(1);
    uas.wait().assert_ok(1);
}

#[test]
fn accounts_survive_restart_and_sigterm_exits_zero() {
    let mut node = Node::start(
        NodeConfig::with_auth()
            .md5_first()
            .user("alice", "pw-of-alice"),
    );
    let status = node.terminate().expect("the node did not exit on SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status on SIGTERM: {status}");
    node.restart();
    let contact = format!("{LOCALHOST}:{}", free_port());
    register_auth(&node, "alice", "pw-of-alice", &contact, Transport::Udp).assert_ok(1);
    let status = node.terminate().expect("the node did not exit on SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status on SIGTERM: {status}");
}
