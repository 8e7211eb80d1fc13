//! `dots agent`, the real binary, against real `dots node` processes and
//! SIPp: registration (open and key login), calls both ways, CANCEL,
//! messages, TCP, two agents calling each other by did:key, malformed input.

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Generous bounds: the suite may run on a loaded two-core machine.
const LINE_WAIT: Duration = Duration::from_secs(30);
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// A wallet made by `dots id new` (unencrypted); returns its path and DID.
fn new_wallet(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.wallet"));
    let out = Command::new(dots_bin())
        .args(["id", "new", "--wallet"])
        .arg(&path)
        .env_remove("DOTS_WALLET_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .expect("run dots id new");
    assert!(
        out.status.success(),
        "dots id new: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let did = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    assert!(did.starts_with("did:key:z6Mk"), "{did}");
    (path, did)
}

/// The SIP user part of a DID.
fn user_of(did: &str) -> &str {
    did.strip_prefix("did:key:").unwrap()
}

/// A running `dots agent`: stdout collected line by line, stderr in a file;
/// stopped (SIGTERM, then SIGKILL) on drop, and reported if the test fails.
struct Agent {
    name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
    stderr: PathBuf,
    dir: PathBuf,
}

impl Agent {
    fn spawn(name: &str, wallet: &Path, node: &Node, args: &[&str]) -> Agent {
        Agent::spawn_at(name, wallet, &node.sip_addr(), args)
    }

    fn spawn_at(name: &str, wallet: &Path, node: &str, args: &[&str]) -> Agent {
        let dir = scratch_dir(&format!("agent-{name}"));
        let stderr = dir.join("stderr.log");
        let mut child = Command::new(dots_bin())
            .arg("agent")
            .arg("--wallet")
            .arg(wallet)
            .args(["--node", node])
            .args(args)
            .env_remove("DOTS_WALLET_PASSPHRASE")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("agent stderr"))
            .spawn()
            .expect("spawn dots agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Agent {
            name: name.to_string(),
            child: Some(child),
            status: None,
            lines,
            reader: Some(reader),
            stderr,
            dir,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    fn report(&self) -> String {
        format!(
            "===== dots agent `{}` (exit {:?}) =====\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.name,
            self.status,
            self.lines().join("\n"),
            tail(&self.stderr(), 20_000)
        )
    }

    /// Waits for a stdout line that starts with `prefix`; returns it.
    fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LINE_WAIT;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.starts_with(prefix)) {
                return l;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            // Lines printed just before exiting may still be in the pipe.
            if Instant::now() >= deadline || (exited && self.reader_done()) {
                panic!("no line `{prefix}…` from the agent\n{}", self.report());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn reader_done(&self) -> bool {
        self.reader.as_ref().is_none_or(|r| r.is_finished())
    }

    /// Waits for the process to exit (killing it at EXIT_WAIT).
    fn wait(&mut self) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        let mut child = self.child.take().expect("agent process");
        let deadline = Instant::now() + EXIT_WAIT;
        let st = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let st = child.wait().expect("wait after kill");
                self.status = Some(st);
                panic!("the agent did not exit in time\n{}", self.report());
            }
            thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.status = Some(st);
        st
    }

    /// Waits for a successful exit; returns stdout.
    fn success(&mut self) -> Vec<String> {
        let st = self.wait();
        assert!(st.success(), "the agent failed\n{}", self.report());
        self.lines()
    }

    /// Waits for a failed exit; returns stderr.
    fn failure(&mut self) -> String {
        let st = self.wait();
        assert!(
            !st.success() && st.code().is_some(),
            "the agent should have failed cleanly\n{}",
            self.report()
        );
        self.stderr()
    }

    /// SIGTERM, and the exit status.
    fn terminate(&mut self) -> ExitStatus {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        self.wait()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
        if thread::panicking() {
            eprintln!("{}", self.report());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The port in `… as <sip:…@127.0.0.1:PORT…>` of a `registered` line.
fn contact_port(line: &str) -> u16 {
    let contact = line.split(" as <").nth(1).expect("a contact");
    let hostport = contact.split(['>', ';']).next().unwrap();
    hostport
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"))
}

/// Starts a SIPp callee running `scenario` and waits until it listens.
fn sipp_callee(name: &str, scenario: &str) -> SippProc {
    let mut p = Sipp::new(name, scenario).spawn();
    p.wait_listening();
    p
}

// ---------------------------------------------------------------------------

#[test]
fn register_binds_the_contact_at_an_open_node() {
    let node = Node::start(NodeConfig::open());
    let dir = scratch_dir("agent-register");
    let (wallet, did) = new_wallet(&dir, "alice");
    let user = user_of(&did);
    let port = free_port();
    let bind = format!("{LOCALHOST}:{port}");
    let mut agent = Agent::spawn("register", &wallet, &node, &["--bind", &bind, "register"]);
    let out = agent.success();
    assert_eq!(
        out,
        [format!(
            "registered sip:{user}@{LOCALHOST} as <sip:{user}@{LOCALHOST}:{port}> for 600 s"
        )]
    );

    // The node lists the binding...
    let query = UdpClient::new()
        .register_query(&node.sip_addr(), user)
        .expect("the node answers the query");
    assert_eq!(query.status, 200);
    let contacts = query.headers("Contact", Some("m"));
    assert!(
        contacts.iter().any(|c| c.contains(&format!("@{bind}>"))),
        "{contacts:?}"
    );

    // ...and a call to the user reaches whatever now listens on that port.
    let uas = Sipp::new("bound-port-uas", "uas_answer.xml")
        .port(port)
        .spawn();
    let mut uas = uas;
    uas.wait_listening();
    Sipp::new("call-the-binding", "uac_call.xml")
        .remote(&node.sip_addr())
        .key("caller", "carol")
        .key("callee", user)
        .run()
        .assert_ok(1);
    uas.wait().assert_ok(1);

    // Below the node's minimum (423 Min-Expires 60): the agent asks again.
    let mut agent = Agent::spawn(
        "register-423",
        &wallet,
        &node,
        &["--expires", "1", "register"],
    );
    let out = agent.success();
    assert!(out[0].ends_with(" for 60 s"), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SIPp caller calls the AOR of a listening agent through the node:
/// INVITE, 180, 200, ACK, BYE; then SIGTERM unregisters it.
#[test]
fn sipp_calls_a_listening_agent() {
    let node = Node::start(NodeConfig::open());
    let dir = scratch_dir("agent-listen");
    let (wallet, did) = new_wallet(&dir, "bob");
    let user = user_of(&did);
    let mut agent = Agent::spawn("listen", &wallet, &node, &["listen"]);
    agent.wait_line("registered ");

    Sipp::new("alice-calls-agent", "uac_call.xml")
        .remote(&node.sip_addr())
        .key("caller", "alice")
        .key("callee", user)
        .run()
        .assert_ok(1);
    let incoming = agent.wait_line("incoming call from ");
    assert!(
        incoming.starts_with(&format!(
            "incoming call from sip:alice@{LOCALHOST} call-id "
        )),
        "{incoming}"
    );
    let call_id = incoming.rsplit(' ').next().unwrap().to_string();
    assert_eq!(
        agent.wait_line("answered "),
        format!("answered call-id {call_id}")
    );
    assert_eq!(
        agent.wait_line("call ended "),
        format!("call ended call-id {call_id} (BYE from peer)")
    );

    // A message to the agent is answered 200 by it and printed.
    Sipp::new("alice-messages-agent", "agent-message.xml")
        .remote(&node.sip_addr())
        .key("caller", "alice")
        .key("callee", user)
        .run()
        .assert_ok(1);
    let line = agent.wait_line("message from ");
    assert!(
        line.starts_with(&format!("message from sip:alice@{LOCALHOST}: hello agent ")),
        "{line}"
    );

    // SIGTERM: the binding is removed, the exit is clean.
    let st = agent.terminate();
    assert!(st.success(), "{}", agent.report());
    assert_eq!(
        agent.lines().last().map(String::as_str),
        Some("unregistered")
    );
    let query = UdpClient::new()
        .register_query(&node.sip_addr(), user)
        .expect("query");
    assert_eq!(query.status, 200);
    assert!(
        query.headers("Contact", Some("m")).is_empty(),
        "{}",
        query.text
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The caller gives up while the agent rings: CANCEL → 487.
#[test]
fn listening_agent_handles_cancel() {
    let node = Node::start(NodeConfig::open());
    let dir = scratch_dir("agent-cancel");
    let (wallet, did) = new_wallet(&dir, "bob");
    let mut agent = Agent::spawn(
        "listen",
        &wallet,
        &node,
        &["listen", "--answer-after", "30"],
    );
    agent.wait_line("registered ");
    Sipp::new("alice-cancels", "uac_cancel.xml")
        .remote(&node.sip_addr())
        .key("caller", "alice")
        .key("callee", user_of(&did))
        .run()
        .assert_ok(1);
    let incoming = agent.wait_line("incoming call from ");
    let call_id = incoming.rsplit(' ').next().unwrap().to_string();
    assert_eq!(
        agent.wait_line("call ended "),
        format!("call ended call-id {call_id} (CANCEL from peer)")
    );
    assert!(!agent.lines().iter().any(|l| l.starts_with("answered")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dots agent call` to a SIPp callee registered at the node.
#[test]
fn agent_calls_a_sipp_callee() {
    let node = Node::start(NodeConfig::open());
    let dir = scratch_dir("agent-call");
    let (wallet, _) = new_wallet(&dir, "alice");
    let uas = sipp_callee("bob-uas", "uas_answer.xml");
    register_open(
        &node,
        "bob",
        &format!("{LOCALHOST}:{}", uas.port),
        Transport::Udp,
    )
    .assert_ok(1);
    let target = format!("sip:bob@{LOCALHOST}");
    let mut agent = Agent::spawn(
        "call",
        &wallet,
        &node,
        &["call", &target, "--duration", "1"],
    );
    let out = agent.success();
    assert_eq!(
        out,
        [
            format!("calling {target}"),
            "ringing".into(),
            "answered".into(),
            "hung up".into()
        ]
    );
    uas.wait().assert_ok(1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn agent_call_failures_exit_non_zero_with_the_status() {
    let node = Node::start(NodeConfig::open());
    let dir = scratch_dir("agent-call-404");
    let (wallet, _) = new_wallet(&dir, "alice");
    let mut agent = Agent::spawn(
        "call-404",
        &wallet,
        &node,
        &["call", &format!("sip:nobody@{LOCALHOST}")],
    );
    let err = agent.failure();
    assert!(err.contains("404 Not Found"), "{err}");
    assert!(!agent.lines().iter().any(|l| l == "answered"));

    let mut agent = Agent::spawn("call-garbage", &wallet, &node, &["call", "bob@nowhere"]);
    let err = agent.failure();
    assert!(err.contains("neither a sip: URI nor a did:key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dots agent message` to a SIPp callee: delivered, text intact.
#[test]
fn agent_messages_a_sipp_callee() {
    let node = Node::start(NodeConfig::open());
    let dir = scratch_dir("agent-message");
    let (wallet, _) = new_wallet(&dir, "alice");
    let uas = sipp_callee("bob-messages", "uas_message.xml");
    register_open(
        &node,
        "bob",
        &format!("{LOCALHOST}:{}", uas.port),
        Transport::Udp,
    )
    .assert_ok(1);
    let target = format!("sip:bob@{LOCALHOST}");
    let mut agent = Agent::spawn(
        "message",
        &wallet,
        &node,
        &["message", &target, "hello from dots-e2e agent"],
    );
    let out = agent.success();
    assert_eq!(out, [format!("message delivered to {target} (200)")]);
    uas.wait().assert_ok(1);

    // Nobody there: the status, and a failure exit.
    let mut agent = Agent::spawn(
        "message-404",
        &wallet,
        &node,
        &["message", &format!("sip:nobody@{LOCALHOST}"), "anyone?"],
    );
    let err = agent.failure();
    assert!(err.contains("404 Not Found"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two agents: one listens, the other calls and messages it by did:key.
fn two_agents(node: &Node, transport: &str) {
    let dir = scratch_dir("agent-two");
    let (alice, alice_did) = new_wallet(&dir, "alice");
    let (bob, bob_did) = new_wallet(&dir, "bob");
    let mut listener = Agent::spawn("bob", &bob, node, &["listen", "--transport", transport]);
    listener.wait_line("registered ");

    let mut caller = Agent::spawn(
        "alice-call",
        &alice,
        node,
        &[
            "call",
            &bob_did,
            "--duration",
            "1",
            "--transport",
            transport,
        ],
    );
    let out = caller.success();
    let target = format!("sip:{}@{}", user_of(&bob_did), node.sip_addr());
    assert_eq!(
        out,
        [
            format!("calling {target}"),
            "ringing".into(),
            "answered".into(),
            "hung up".into()
        ]
    );
    let alice_aor = format!("sip:{}@{LOCALHOST}", user_of(&alice_did));
    let incoming = listener.wait_line("incoming call from ");
    assert!(
        incoming.starts_with(&format!("incoming call from {alice_aor} call-id ")),
        "{incoming}"
    );
    let call_id = incoming.rsplit(' ').next().unwrap().to_string();
    assert_eq!(
        listener.wait_line("answered "),
        format!("answered call-id {call_id}")
    );
    assert_eq!(
        listener.wait_line("call ended "),
        format!("call ended call-id {call_id} (BYE from peer)")
    );

    let mut sender = Agent::spawn(
        "alice-message",
        &alice,
        node,
        &[
            "message",
            &bob_did,
            "hi bob,\nit's alice",
            "--transport",
            transport,
        ],
    );
    assert_eq!(
        sender.success(),
        [format!("message delivered to {target} (200)")]
    );
    assert_eq!(
        listener.wait_line("message from "),
        format!("message from {alice_aor}: hi bob,\\nit's alice")
    );
    assert!(listener.terminate().success(), "{}", listener.report());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_agents_by_did_at_an_open_node() {
    let node = Node::start(NodeConfig::open());
    two_agents(&node, "udp");
}

#[test]
fn two_agents_by_did_over_tcp() {
    let node = Node::start(NodeConfig::open());
    two_agents(&node, "tcp");
}

/// A node that authenticates, with an overlay identity: the agents log in
/// with their keys (DOTS-Sig) and are let through as callers.
#[test]
fn two_agents_by_did_with_key_login() {
    let node = Node::start(NodeConfig::with_auth().p2p(&[]));
    two_agents(&node, "udp");
    let metrics = node.metrics().unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dots_auth_challenges_total") && !l.ends_with(" 0")),
        "the node challenged the agents: {metrics}"
    );
}

#[test]
fn register_failures_say_what_to_do() {
    let dir = scratch_dir("agent-register-fail");
    let (wallet, _) = new_wallet(&dir, "alice");

    // Digest only (no overlay identity, so no DOTS-Sig challenge).
    let node = Node::start(NodeConfig::with_auth());
    let mut agent = Agent::spawn("digest-only", &wallet, &node, &["register"]);
    let err = agent.failure();
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(
        err.contains(&format!(
            "the node at udp:{} does not offer key login (DOTS-Sig)",
            node.sip_addr()
        )),
        "{err}"
    );
    assert!(agent.lines().is_empty());

    // Nothing listening (TCP: refused at once).
    let nowhere = format!("{LOCALHOST}:{}", free_port());
    let mut agent = Agent::spawn_at(
        "nowhere",
        &wallet,
        &nowhere,
        &["--transport", "tcp", "register"],
    );
    let err = agent.failure();
    assert!(err.contains("is a DOTS node listening there?"), "{err}");

    // A wallet that is not there.
    let mut agent = Agent::spawn("no-wallet", &dir.join("none.wallet"), &node, &["register"]);
    let err = agent.failure();
    assert!(err.contains("no wallet there"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Garbage sent straight to the agent's port changes nothing: it keeps
/// answering calls.
#[test]
fn malformed_datagrams_do_not_disturb_the_agent() {
    let node = Node::start(NodeConfig::open());
    let dir = scratch_dir("agent-garbage");
    let (wallet, did) = new_wallet(&dir, "bob");
    let mut agent = Agent::spawn("listen", &wallet, &node, &["listen"]);
    let port = contact_port(&agent.wait_line("registered "));
    let sock = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let junk: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage".to_vec(),
        b"INVITE sip:x SIP/2.0\r\n\r\n".to_vec(),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\nCSeq: 1 INVITE\r\n\r\n".to_vec(),
        b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\nCall-ID: x\r\nCSeq: 99999999999 BYE\r\nMax-Forwards: 70\r\n\r\n".to_vec(),
        b"ACK sip:a@b SIP/2.0\r\nContent-Length: 999999\r\n\r\n".to_vec(),
        vec![b'A'; 65_000],
        b"\r\n\r\n".to_vec(),
        "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: q\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 4\r\n\r\n\u{1b}[2J".as_bytes().to_vec(),
    ];
    for j in &junk {
        let _ = sock.send_to(j, (LOCALHOST, port));
    }
    // The MESSAGE was valid: printed without its terminal escape.
    let line = agent.wait_line("message from sip:a@b");
    assert!(!line.contains('\u{1b}'), "{line:?}");
    Sipp::new("call-after-junk", "uac_call.xml")
        .remote(&node.sip_addr())
        .key("caller", "alice")
        .key("callee", user_of(&did))
        .run()
        .assert_ok(1);
    agent.wait_line("call ended ");
    assert!(agent.terminate().success(), "{}", agent.report());
    let _ = std::fs::remove_dir_all(&dir);
}
