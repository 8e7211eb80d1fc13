//! The `dots user` commands, checked by what a SIP client sees afterwards,
//! and the node's HTTP endpoints.

mod common;

use common::*;

fn register_refused(node: &Node, user: &str, password: &str) -> SippResult {
    Sipp::new(
        &format!("register-refused-{user}"),
        "register_auth_wrong.xml",
    )
    .remote(&node.sip_addr())
    .key("user", user)
    .key("contact_hp", &format!("{LOCALHOST}:{}", free_port()))
    .key("expires", "3600")
    .auth(user, password)
    .run()
}

#[test]
fn user_add_list_passwd_remove() {
    let dir = scratch_dir("admin");
    user_add(&dir, "alice", "first-pw");
    user_add(&dir, "bob", "bob-pw");
    user_add(&dir, "carol", "carol-pw");

    let (ok, list) = dots_user(&dir, &["list"]);
    assert!(ok, "dots user list failed:\n{list}");
    for name in ["alice", "bob", "carol"] {
        assert!(
            list.lines()
                .any(|l| l.split_whitespace().any(|w| w == name)),
            "{name} missing from `dots user list`:\n{list}"
        );
    }
    assert!(
        !list.contains("first-pw") && !list.contains("bob-pw"),
        "`dots user list` shows passwords:\n{list}"
    );

    let (ok, out) = dots_user(&dir, &["passwd", "alice", "--password", "second-pw"]);
    assert!(ok, "dots user passwd failed:\n{out}");
    let (ok, out) = dots_user(&dir, &["remove", "bob"]);
    assert!(ok, "dots user remove failed:\n{out}");
    let (ok, list) = dots_user(&dir, &["list"]);
    assert!(ok, "dots user list failed:\n{list}");
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == "bob")),
        "bob still listed after `dots user remove`:\n{list}"
    );

    let node = Node::start_in(dir, NodeConfig::with_auth().md5_first());
    let contact = format!("{LOCALHOST}:{}", free_port());
    // The new password works, the old one no longer does.
    register_auth(&node, "alice", "second-pw", &contact, Transport::Udp).assert_ok(1);
    register_refused(&node, "alice", "first-pw").assert_ok(1);
    // A removed account cannot register, an untouched one still can.
    register_refused(&node, "bob", "bob-pw").assert_ok(1);
    register_auth(&node, "carol", "carol-pw", &contact, Transport::Udp).assert_ok(1);
}

#[test]
fn healthz_and_metrics() {
    let node = Node::start(NodeConfig::open());
    let (status, body) = node.healthz().expect("no answer from /healthz");
    assert_eq!((status, body.trim()), (200, "ok"));

    // Some SIP traffic, so there is something to count.
    let contact = format!("{LOCALHOST}:{}", free_port());
    register_open(&node, "alice", &contact, Transport::Udp).assert_ok(1);

    let (status, body) = http_get(node.http_port, "/metrics").expect("no answer from /metrics");
    assert_eq!(status, 200, "/metrics:\n{body}");
    assert!(
        body.lines().any(|l| l.starts_with("# TYPE ")),
        "/metrics is not Prometheus text:\n{body}"
    );
    // Every sample line is `name{labels} value`, with a numeric value.
    for l in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = l.rsplit(' ').next().unwrap_or("");
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "bad sample line in /metrics: {l:?}"
        );
    }
}
