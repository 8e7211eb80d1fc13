//! The web softphone in a real browser: two authenticating nodes in one
//! overlay, alice's page served by node 1 and bob's by node 2, each logged in
//! with an account of its node, driven in headless Chromium (Debian's
//! `chromium`) by `web/test/call.mjs` (playwright-core, fake media devices).
//! Bob calls alice, she answers, audio flows both ways over a connected
//! RTCPeerConnection, bob hangs up, and a message goes each way; the pages
//! also show a wrong password (403), an offline callee (480) and an
//! unreachable node's WebSocket.
//!
//! The nodes and the browser run in a network namespace of their own with
//! only loopback (the test re-runs itself under `unshare --net`), so the
//! calls' media goes from 127.0.0.1 to 127.0.0.1 and nowhere else.
//!
//! `DOTS_UPDATE_SCREENSHOT=1` copies the screenshot of bob's page in the
//! call to `docs/softphone.png`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Set in the copy of this test that runs inside its own network namespace.
const NETNS_ENV: &str = "DOTS_TEST_IN_NETNS";
/// Bound for the whole browser script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn web_dir() -> PathBuf {
    repo_root().join("web")
}

/// Runs this very test again in a new network namespace (only `lo`, up);
/// None when no namespace can be made here (not root).
fn rerun_in_netns(test: &str) -> Option<std::process::ExitStatus> {
    let can = Command::new("unshare")
        .args(["--net", "--", "ip", "link", "set", "lo", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !can {
        return None;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    // Its output is this test's: shown by the test harness on failure (and
    // with --nocapture), without a second "test result" line for the runner.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines().filter(|l| !l.starts_with("test result:")) {
        println!("{line}");
    }
    Some(out.status)
}

/// Runs `node web/test/call.mjs ARGS`: (JSON answer, stderr).
fn run_browser_script(args: &Value) -> (Value, String) {
    let mut child = Command::new("node")
        .arg(web_dir().join("test/call.mjs"))
        .arg(args.to_string())
        .current_dir(web_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node web/test/call.mjs");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() >= deadline {
            stop_child(&mut child, Duration::from_secs(2));
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.wait();
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let answer = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| {
            panic!("call.mjs gave no JSON answer (timeout {SCRIPT_TIMEOUT:?}?)\nstdout:\n{out}\nstderr:\n{}", tail(&err, 8000))
        });
    (answer, err)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

#[test]
fn softphone_pages_on_two_nodes_call_and_message_each_other() {
    const TEST: &str = "softphone_pages_on_two_nodes_call_and_message_each_other";
    let in_netns = std::env::var_os(NETNS_ENV).is_some();
    if !in_netns {
        match rerun_in_netns(TEST) {
            Some(status) => {
                assert!(status.success(), "the browser test failed in its namespace");
                return;
            }
            None => {
                eprintln!("browser test: no network namespace can be made here (not root); running on this machine's network, so WebRTC may route through its own non-loopback address");
            }
        }
    }
    require("chromium", "chromium");
    require("node", "nodejs");
    assert!(
        web_dir().join("node_modules/playwright-core").is_dir(),
        "web/node_modules lacks playwright-core: run web/install.sh (scripts/test does)"
    );

    // Two authenticating nodes in one overlay, each with its STUN server;
    // carol has an account at bob's node but no phone. Alice's page comes
    // over HTTPS (SIP over secure WebSocket), bob's over plain HTTP.
    let node1 = Node::start(NodeConfig {
        https: true,
        stun: true,
        ..NodeConfig::with_auth()
            .user("alice", "alice wonder 1")
            .p2p(&[])
    });
    let boot: Vec<String> = node1.node_info().expect("node info")["p2p_addrs"]
        .as_array()
        .expect("p2p_addrs")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let node2 = Node::start(NodeConfig {
        stun: true,
        ..NodeConfig::with_auth()
            .user("bob", "bob builder 2")
            .user("carol", "carol singer 3")
            .p2p(&boot)
    });
    assert!(
        wait_until(WAIT, || node1.metric("dots_overlay_peers_connected") >= 1
            && node2.metric("dots_overlay_peers_connected") >= 1),
        "the two nodes did not connect"
    );

    // Each node serves the page and tells it where its SIP WebSocket and
    // STUN server are.
    for node in [&node1, &node2] {
        let (status, page) = http_get(node.http_port, "/").expect("page");
        assert_eq!(status, 200);
        assert!(page.contains("DOTS softphone"), "{}", tail(&page, 500));
        let (status, body) = http_get(node.http_port, "/api/v1/webrtc").expect("webrtc");
        assert_eq!(status, 200, "GET /api/v1/webrtc: {body}");
        let info: Value = serde_json::from_str(&body).expect("webrtc JSON");
        let ws = format!("ws://{LOCALHOST}:{}/sip", node.http_port);
        assert!(
            info["ws"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(ws))),
            "{info}"
        );
        assert!(
            body.contains(&format!("stun:{LOCALHOST}:{}", node.stun_port)),
            "{info}"
        );
    }

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("softphone.png");
    let _ = std::fs::remove_file(&shot);
    let args = json!({
        "alice": {
            "url": format!("https://{LOCALHOST}:{}/", node1.https_port),
            "aor": format!("alice@{LOCALHOST}"),
            "password": "alice wonder 1",
        },
        "bob": {
            "url": format!("http://{LOCALHOST}:{}/", node2.http_port),
            "aor": format!("bob@{LOCALHOST}"),
            "password": "bob builder 2",
        },
        "offline": format!("carol@{LOCALHOST}"),
        "screenshot": shot,
        "timeout_ms": 30_000,
        "ignore_https_errors": true,
        "sip_trace": std::env::var_os("DOTS_SIP_TRACE").is_some(),
    });
    let started = Instant::now();
    let (r, stderr) = run_browser_script(&args);
    let took = started.elapsed();
    println!(
        "browser test: call.mjs took {took:.1?}\n{}",
        stderr.trim_end()
    );
    if r["ok"] != true {
        panic!(
            "the browser test failed: {}\nanswer: {}\nscript log:\n{}\nnode 1 log:\n{}\nnode 2 log:\n{}",
            text(&r, "error"),
            serde_json::to_string_pretty(&r).unwrap_or_default(),
            tail(&stderr, 6000),
            tail(&node1.log(), 6000),
            tail(&node2.log(), 6000),
        );
    }

    // What the pages showed.
    assert!(text(&r, "wrong_password_error").contains("403"), "{r}");
    assert!(text(&r, "offline_error").contains("480"), "{r}");
    assert!(text(&r, "unreachable_error").contains("WebSocket"), "{r}");
    // Alice's page (HTTPS) uses the secure WebSocket, bob's the plain one.
    let wss = format!("wss://{LOCALHOST}:{}/sip", node1.https_port);
    assert!(text(&r, "alice_node").contains(&wss), "{r}");
    let ws = format!("ws://{LOCALHOST}:{}/sip", node2.http_port);
    assert!(text(&r, "bob_node").contains(&ws), "{r}");
    assert!(
        text(&r, "alice_reg").contains("registered as alice@"),
        "{r}"
    );
    assert!(text(&r, "bob_reg").contains("registered as bob@"), "{r}");
    assert!(text(&r, "alice_incoming").contains("bob@"), "{r}");
    assert_eq!(text(&r, "alice_call"), "In call", "{r}");
    assert_eq!(text(&r, "bob_call"), "In call", "{r}");
    assert!(text(&r, "bob_ended").contains("by you"), "{r}");
    assert!(text(&r, "alice_ended").contains("other side"), "{r}");

    // Media: connected, inbound audio bytes grew, on loopback.
    for (who, node) in [("alice_media", &node1), ("bob_media", &node2)] {
        let m = &r[who];
        // The ICE servers are the page's node's STUN server, from /api/v1/webrtc.
        let stun = json!([format!("stun:{LOCALHOST}:{}", node.stun_port)]);
        assert_eq!(m["ice_servers"], stun, "{who}: {m}");
        assert_eq!(m["connectionState"], "connected", "{who}: {m}");
        let first = m["inbound_bytes"][0].as_u64().unwrap_or(0);
        let second = m["inbound_bytes"][1].as_u64().unwrap_or(0);
        assert!(
            first > 0 && second > first,
            "{who}: inbound bytes {first} then {second}"
        );
        if in_netns {
            let route = m["route"].as_str().unwrap_or("");
            assert!(
                route.matches("127.0.0.1").count() == 2,
                "{who}: media not on loopback: {route}"
            );
        }
    }

    // A message each way.
    let msgs = &r["messages"];
    for (who, want) in [
        ("alice", "in: hello alice, from bob"),
        ("bob", "in: hello bob, from alice"),
    ] {
        let list: Vec<&str> = msgs[who]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(list.contains(&want), "{who}'s messages: {list:?}");
    }

    // The call crossed both nodes.
    for node in [&node1, &node2] {
        assert!(
            node.metric("dots_sip_requests_received_total{method=\"INVITE\"}") >= 1,
            "a node saw no INVITE"
        );
    }

    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    if std::env::var_os("DOTS_UPDATE_SCREENSHOT").is_some() {
        let docs = repo_root().join("docs").join("softphone.png");
        std::fs::copy(&shot, &docs).expect("copy the screenshot to docs/");
        eprintln!("browser test: screenshot copied to {}", docs.display());
    }
}

/// The committed `web/dist/` (what the node embeds) is what `web/build.sh`
/// makes of `web/src/` with the pinned tools.
#[test]
fn web_dist_is_built_from_web_src() {
    require("node", "nodejs");
    assert!(
        web_dir().join("node_modules/esbuild").is_dir(),
        "web/node_modules lacks esbuild: run web/install.sh (scripts/test does)"
    );
    let out = scratch_dir("web-dist");
    let status = Command::new("node")
        .arg(web_dir().join("build.mjs"))
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run node web/build.mjs");
    assert!(status.success(), "web/build.mjs failed");
    for file in ["index.html", "softphone.js", "softphone.css"] {
        let built = std::fs::read(out.join(file)).expect("built file");
        let committed = std::fs::read(web_dir().join("dist").join(file)).expect("dist file");
        assert!(
            built == committed,
            "web/dist/{file} is not what web/build.sh makes of web/src: run web/build.sh and commit web/dist"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
