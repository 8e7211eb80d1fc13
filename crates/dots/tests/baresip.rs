//! Interop with baresip, a SIP phone we did not write: it registers with a
//! password (SIP Digest) at a node that requires authentication and answers
//! a call that an authenticated SIPp caller places through the node.
//!
//! baresip is driven through its ctrl_tcp module (`common::baresip`).

mod common;

use common::baresip::Baresip;
use common::*;
use std::time::Duration;

#[test]
fn baresip_registers_with_password_and_answers_a_call() {
    let node = Node::start(
        // libre 1.1 answers MD5 only, and fails outright on a 401 that
        // also offers SHA-256, wherever it is in the list.
        NodeConfig::with_auth()
            .md5_only()
            .user("bob", "bob-device-pw")
            .user("alice", "alice-pw"),
    );
    let mut phone = Baresip::start(&node, "bob", "bob-device-pw");
    phone.wait_registered(Duration::from_secs(30));

    // alice (SIPp, Digest on INVITE) calls bob: baresip answers on its own,
    // the call holds for a second and alice hangs up.
    Sipp::new("alice-to-baresip", "uac_call_auth.xml")
        .remote(&node.sip_addr())
        .key("caller", "alice")
        .key("callee", "bob")
        .auth("alice", "alice-pw")
        .auth_uri("bob@127.0.0.1")
        .arg("-d")
        .arg("1000")
        .run()
        .assert_ok(1);

    phone.wait_event("CALL_ESTABLISHED", &[], Duration::from_secs(15));
    phone.wait_event("CALL_CLOSED", &[], Duration::from_secs(15));
}
