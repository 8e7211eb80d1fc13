//! Users who own their keys, across the overlay, with real clients: alice
//! registers at node 1 by signature with `dots agent`; bob's baresip phone
//! registers at node 2 with a device password that bob's key created; they
//! call and message each other both ways.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::baresip::Baresip;
use common::*;

const WAIT: Duration = Duration::from_secs(60);

fn new_wallet(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.wallet"));
    let (ok, out, err) = run_dots_id(&["new", "--wallet", path.to_str().unwrap(), "--name", name]);
    assert!(ok, "dots id new failed:\n{out}\n{err}");
    let did = out.lines().next().unwrap_or_default().trim().to_string();
    assert!(
        did.starts_with("did:key:z6Mk"),
        "first line is not the DID: {out}"
    );
    (path, did)
}

/// `dots agent … listen`, its stdout lines on a channel; killed on drop.
struct Listener {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Listener {
    fn start(wallet: &Path, node: &Node) -> Listener {
        let mut child = Command::new(dots_bin())
            .args(["agent", "--wallet"])
            .arg(wallet)
            .args(["--node", &node.sip_addr(), "listen"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dots agent listen");
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        Listener {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle`.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if !line.starts_with("stderr: ") && line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "dots agent listen never printed {needle:?}; it printed:\n{}",
            self.seen.join("\n")
        );
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
        if thread::panicking() {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            eprintln!("----- dots agent listen -----\n{}", self.seen.join("\n"));
        }
    }
}

/// `dots agent --wallet W --node N ARGS…` to completion: (success, stdout+stderr).
fn agent(wallet: &Path, node: &Node, args: &[&str]) -> (bool, String) {
    let out = Command::new(dots_bin())
        .args(["agent", "--wallet"])
        .arg(wallet)
        .args(["--node", &node.sip_addr()])
        .args(args)
        .output()
        .expect("run dots agent");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_key_user_and_a_device_password_phone_call_and_message_each_other_across_nodes() {
    require("baresip", "baresip");
    // Two authenticating nodes in one overlay; MD5 only, for baresip 1.x.
    let node1 = Node::start(NodeConfig::with_auth().md5_only().p2p(&[]));
    let boot: Vec<String> = node1.node_info().expect("node info")["p2p_addrs"]
        .as_array()
        .expect("p2p_addrs")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let node2 = Node::start(NodeConfig::with_auth().md5_only().p2p(&boot));
    assert!(
        wait_until(WAIT, || node1.metric("dots_overlay_peers_connected") >= 1
            && node2.metric("dots_overlay_peers_connected") >= 1),
        "the two nodes did not connect"
    );

    let dir = scratch_dir("key-users");
    let (alice_wallet, alice_did) = new_wallet(&dir, "alice");
    let (bob_wallet, bob_did) = new_wallet(&dir, "bob");
    let alice_id = alice_did.strip_prefix("did:key:").unwrap().to_string();

    // bob's key creates a device password at node 2 for his phone.
    let node2_url = format!("http://{LOCALHOST}:{}", node2.http_port);
    let (ok, out, err) = run_dots_id(&[
        "device",
        "add",
        "--wallet",
        bob_wallet.to_str().unwrap(),
        "--node",
        &node2_url,
        "--name",
        "desk",
    ]);
    assert!(ok, "dots id device add failed:\n{out}\n{err}");
    let username = output_field(&out, "username").expect("username");
    let password = output_field(&out, "password").expect("password");

    // alice, by key at node 1.
    let mut alice = Listener::start(&alice_wallet, &node1);
    alice.expect("registered");
    // bob's baresip at node 2; its first contact (the `message` target) is alice.
    let alice_at_node2 = format!("sip:{alice_id}@{}", node2.sip_addr());
    let mut bob = Baresip::start_with_contacts(
        &node2,
        &username,
        &password,
        &[&format!("\"alice\" <{alice_at_node2}>")],
    );
    bob.wait_registered(WAIT);
    // Both users' records (and bob's aliases) are in both nodes' stores.
    assert!(
        wait_until(WAIT, || node1.metric("dots_overlay_records_stored") >= 2
            && node2.metric("dots_overlay_records_stored") >= 2),
        "presence records did not reach both nodes"
    );

    // bob calls alice by her DID through node 2; alice's agent answers at node 1.
    bob.command("dial", &alice_at_node2);
    bob.wait_event("CALL_ESTABLISHED", &["CALL_CLOSED"], WAIT);
    alice.expect("incoming call from");
    alice.expect("answered call-id");
    bob.command("hangup", "");
    bob.wait_event("CALL_CLOSED", &[], WAIT);
    alice.expect("call ended");

    // alice calls bob by his DID through node 1; bob's phone answers by itself.
    let (ok, text) = agent(
        &alice_wallet,
        &node1,
        &["--duration", "1", "call", &bob_did],
    );
    assert!(ok, "dots agent call failed:\n{text}");
    assert!(text.contains("answered"), "{text}");
    bob.wait_event("CALL_ESTABLISHED", &[], WAIT);
    bob.wait_event("CALL_CLOSED", &[], WAIT);

    // A message each way.
    let (ok, text) = agent(&alice_wallet, &node1, &["message", &bob_did, "hello bob"]);
    assert!(ok, "dots agent message failed:\n{text}");
    assert!(
        wait_until(WAIT, || bob.log().contains("hello bob")),
        "bob's phone did not show the message (agent: {text}):\n{}",
        tail(&bob.log(), 4000)
    );
    bob.command("message", "hello alice");
    let line = alice.expect("message from");
    assert!(line.contains("hello alice"), "{line}");

    // bob's handle on node 2 is an alias for his DID: alice reaches him by name
    // through node 1 (which knows nothing of "bob" but the alias record).
    let by_name = format!("sip:bob@{}", node1.sip_addr());
    let (ok, text) = agent(&alice_wallet, &node1, &["message", &by_name, "by name"]);
    assert!(ok, "dots agent message by name failed:\n{text}");
    assert!(
        wait_until(WAIT, || bob.log().contains("by name")),
        "bob's phone did not get the message sent to his name (agent: {text}):\n{}",
        tail(&bob.log(), 4000)
    );

    // Both nodes took part: node 2 forwarded to node 1 and back.
    for node in [&node1, &node2] {
        assert!(node.metric("dots_sip_requests_received_total{method=\"INVITE\"}") >= 2);
    }
}
