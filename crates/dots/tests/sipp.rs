//! The node against SIPp: registrar, proxy, forking, CANCEL, MESSAGE and
//! OPTIONS, each scenario driven by real SIPp processes on 127.0.0.1.

mod common;

use common::*;

/// Starts a SIPp callee running `scenario` and waits until it listens.
fn callee(name: &str, scenario: &str, t: Transport) -> SippProc {
    let mut p = Sipp::new(name, scenario).transport(t).spawn();
    p.wait_listening();
    p
}

/// A caller scenario from `caller` to `callee` through `node`.
fn caller(node: &Node, scenario: &str, from: &str, to: &str) -> Sipp {
    Sipp::new(&format!("{from}-to-{to}"), scenario)
        .remote(&node.sip_addr())
        .key("caller", from)
        .key("callee", to)
}

#[test]
fn register_open_node() {
    let node = Node::start(NodeConfig::open());
    let contact = format!("{LOCALHOST}:{}", free_port());
    register_open(&node, "alice", &contact, Transport::Udp).assert_ok(1);
}

#[test]
fn register_over_tcp() {
    let node = Node::start(NodeConfig::open());
    let contact = format!("{LOCALHOST}:{}", free_port());
    register_open(&node, "alice", &contact, Transport::Tcp).assert_ok(1);
}

#[test]
fn register_with_digest() {
    let node = Node::start(
        NodeConfig::with_auth()
            .md5_first()
            .user("alice", "s3cret-pw"),
    );
    let contact = format!("{LOCALHOST}:{}", free_port());
    register_auth(&node, "alice", "s3cret-pw", &contact, Transport::Udp).assert_ok(1);
}

/// With its default challenges (no --digest-algorithms), the node must be
/// usable by a client that answers only the first challenge, with MD5.
#[test]
fn register_with_digest_default_challenges() {
    let node = Node::start(NodeConfig::with_auth().user("alice", "s3cret-pw"));
    let contact = format!("{LOCALHOST}:{}", free_port());
    register_auth(&node, "alice", "s3cret-pw", &contact, Transport::Udp).assert_ok(1);
}

#[test]
fn register_with_wrong_password_is_refused() {
    let node = Node::start(
        NodeConfig::with_auth()
            .md5_first()
            .user("alice", "s3cret-pw"),
    );
    let contact = format!("{LOCALHOST}:{}", free_port());
    Sipp::new("register-wrong-pw", "register_auth_wrong.xml")
        .remote(&node.sip_addr())
        .key("user", "alice")
        .key("contact_hp", &contact)
        .key("expires", "3600")
        .auth("alice", "not-the-password")
        .run()
        .assert_ok(1);
}

#[test]
fn register_interval_too_brief() {
    let node = Node::start(NodeConfig::open());
    let contact = format!("{LOCALHOST}:{}", free_port());
    Sipp::new("register-423", "register_423.xml")
        .remote(&node.sip_addr())
        .key("user", "alice")
        .key("contact_hp", &contact)
        .run()
        .assert_ok(1);
}

#[test]
fn unregister_all_contacts() {
    let node = Node::start(NodeConfig::open());
    let contact = format!("{LOCALHOST}:{}", free_port());
    Sipp::new("unregister", "unregister.xml")
        .remote(&node.sip_addr())
        .key("user", "alice")
        .key("contact_hp", &contact)
        .run()
        .assert_ok(1);
}

fn call_with_bye(t: Transport) {
    let node = Node::start(NodeConfig::open());
    let uas = callee("bob-uas", "uas_answer.xml", t);
    register_open(&node, "bob", &format!("{LOCALHOST}:{}", uas.port), t).assert_ok(1);
    caller(&node, "uac_call.xml", "alice", "bob")
        .transport(t)
        .run()
        .assert_ok(1);
    uas.wait().assert_ok(1);
}

#[test]
fn call_with_bye_udp() {
    call_with_bye(Transport::Udp);
}

#[test]
fn call_with_bye_tcp() {
    call_with_bye(Transport::Tcp);
}

#[test]
fn call_with_digest_on_both_sides() {
    let node = Node::start(
        NodeConfig::with_auth()
            .md5_first()
            .user("alice", "alice-pw")
            .user("bob", "bob-pw"),
    );
    let uas = callee("bob-uas", "uas_answer.xml", Transport::Udp);
    register_auth(
        &node,
        "bob",
        "bob-pw",
        &format!("{LOCALHOST}:{}", uas.port),
        Transport::Udp,
    )
    .assert_ok(1);
    caller(&node, "uac_call_auth.xml", "alice", "bob")
        .auth("alice", "alice-pw")
        .auth_uri("bob@127.0.0.1")
        .run()
        .assert_ok(1);
    uas.wait().assert_ok(1);
}

#[test]
fn call_cancelled_before_answer() {
    let node = Node::start(NodeConfig::open());
    let uas = callee("bob-ringing", "uas_ring.xml", Transport::Udp);
    register_open(
        &node,
        "bob",
        &format!("{LOCALHOST}:{}", uas.port),
        Transport::Udp,
    )
    .assert_ok(1);
    caller(&node, "uac_cancel.xml", "alice", "bob")
        .run()
        .assert_ok(1);
    uas.wait().assert_ok(1);
}

#[test]
fn call_to_user_with_account_but_no_binding_is_480() {
    let node = Node::start(
        NodeConfig::with_auth()
            .md5_first()
            .user("alice", "alice-pw")
            .user("bob", "bob-pw"),
    );
    caller(&node, "invite_auth_480.xml", "alice", "bob")
        .auth("alice", "alice-pw")
        .auth_uri("bob@127.0.0.1")
        .run()
        .assert_ok(1);
}

#[test]
fn call_after_unregister_is_480() {
    let node = Node::start(NodeConfig::open());
    let contact = format!("{LOCALHOST}:{}", free_port());
    Sipp::new("unregister", "unregister.xml")
        .remote(&node.sip_addr())
        .key("user", "bob")
        .key("contact_hp", &contact)
        .run()
        .assert_ok(1);
    caller(&node, "invite_480.xml", "alice", "bob")
        .run()
        .assert_ok(1);
}

#[test]
fn call_to_unknown_user_is_404() {
    let node = Node::start(NodeConfig::open());
    caller(&node, "invite_404.xml", "alice", "nobody-here")
        .run()
        .assert_ok(1);
}

#[test]
fn message_reaches_registered_user() {
    let node = Node::start(NodeConfig::open());
    let uas = callee("bob-messages", "uas_message.xml", Transport::Udp);
    register_open(
        &node,
        "bob",
        &format!("{LOCALHOST}:{}", uas.port),
        Transport::Udp,
    )
    .assert_ok(1);
    caller(&node, "message.xml", "alice", "bob")
        .run()
        .assert_ok(1);
    uas.wait().assert_ok(1);
}

#[test]
fn options_to_the_node() {
    let node = Node::start(NodeConfig::open());
    Sipp::new("options", "options.xml")
        .remote(&node.sip_addr())
        .run()
        .assert_ok(1);
}

#[test]
fn options_to_the_node_over_tcp() {
    let node = Node::start(NodeConfig::open());
    Sipp::new("options-tcp", "options.xml")
        .remote(&node.sip_addr())
        .transport(Transport::Tcp)
        .run()
        .assert_ok(1);
}

#[test]
fn call_forks_to_all_contacts_and_cancels_the_loser() {
    let node = Node::start(NodeConfig::open());
    let answering = callee("carol-desk", "uas_answer.xml", Transport::Udp);
    let ringing = callee("carol-mobile", "uas_ring.xml", Transport::Udp);
    for uas in [&answering, &ringing] {
        register_open(
            &node,
            "carol",
            &format!("{LOCALHOST}:{}", uas.port),
            Transport::Udp,
        )
        .assert_ok(1);
    }
    caller(&node, "uac_call.xml", "alice", "carol")
        .run()
        .assert_ok(1);
    answering.wait().assert_ok(1);
    ringing.wait().assert_ok(1);
}

#[test]
fn cancel_of_a_forked_call_reaches_every_contact() {
    let node = Node::start(NodeConfig::open());
    let desk = callee("erin-desk", "uas_ring.xml", Transport::Udp);
    let mobile = callee("erin-mobile", "uas_ring.xml", Transport::Udp);
    for uas in [&desk, &mobile] {
        register_open(
            &node,
            "erin",
            &format!("{LOCALHOST}:{}", uas.port),
            Transport::Udp,
        )
        .assert_ok(1);
    }
    caller(&node, "uac_cancel.xml", "alice", "erin")
        .run()
        .assert_ok(1);
    desk.wait().assert_ok(1);
    mobile.wait().assert_ok(1);
}

#[test]
fn call_from_udp_caller_to_tcp_callee() {
    let node = Node::start(NodeConfig::open());
    let uas = callee("bob-on-tcp", "uas_answer.xml", Transport::Tcp);
    register_open(
        &node,
        "bob",
        &format!("{LOCALHOST}:{}", uas.port),
        Transport::Tcp,
    )
    .assert_ok(1);
    caller(&node, "uac_call.xml", "alice", "bob")
        .transport(Transport::Udp)
        .run()
        .assert_ok(1);
    uas.wait().assert_ok(1);
}
