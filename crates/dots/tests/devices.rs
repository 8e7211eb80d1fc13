//! Device passwords controlled by the user's key, end to end: `dots id device
//! add|list|revoke` against a real node, the password used by SIPp to
//! register, revocation refused by the very next REGISTER, and the provider
//! API's answers to replayed, forged and malformed signed requests.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use dots_identity::{new_nonce, sign_request, Wallet};
use dots_records::Grant;
use dots_registrar::answer_challenge;

const DOMAIN: &str = "example.test";
const DEVICES: &str = "/api/v1/accounts/devices";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A node with digest authentication (MD5 offered first, for SIPp) and a domain.
fn auth_node(overlay: bool) -> Node {
    let mut config = NodeConfig {
        domains: vec![DOMAIN.to_string()],
        ..NodeConfig::with_auth().md5_first()
    };
    if overlay {
        config = config.p2p(&[]);
    }
    Node::start(config)
}

fn url(node: &Node) -> String {
    format!("http://{LOCALHOST}:{}", node.http_port)
}

/// `dots id new --wallet DIR/FILE --name NAME` (unencrypted); the wallet's path.
fn new_wallet(dir: &Path, file: &str, name: &str) -> PathBuf {
    let path = dir.join(file);
    let (ok, out, err) = run_dots_id(&["new", "--wallet", path.to_str().unwrap(), "--name", name]);
    assert!(ok, "dots id new failed:\n{out}\n{err}");
    path
}

fn load(path: &Path) -> Wallet {
    Wallet::load(path, None).expect("load wallet")
}

/// `dots id device SUBCOMMAND --wallet W --node URL ARGS…`.
fn device(sub: &str, wallet: &Path, node: &Node, args: &[&str]) -> (bool, String, String) {
    let node_url = url(node);
    let mut all = vec![
        "device",
        sub,
        "--wallet",
        wallet.to_str().unwrap(),
        "--node",
        &node_url,
    ];
    all.extend_from_slice(args);
    run_dots_id(&all)
}

/// What `dots id device add` printed.
struct Added {
    username: String,
    password: String,
    out: String,
}

fn add_device(wallet: &Path, node: &Node, args: &[&str]) -> Added {
    let (ok, out, err) = device("add", wallet, node, args);
    assert!(ok, "dots id device add {args:?} failed:\n{out}\n{err}");
    let field = |k: &str| output_field(&out, k).unwrap_or_else(|| panic!("no {k}: in\n{out}"));
    Added {
        username: field("username"),
        password: field("password"),
        out,
    }
}

/// A REGISTER over UDP answering the node's MD5 Digest challenge with
/// `user`/`password`; the final status of the authenticated request (or of
/// the first, if it was not challenged).
fn register_status(node: &Node, user: &str, password: &str) -> u16 {
    let client = UdpClient::new();
    let to = node.sip_addr();
    let ruri = format!("sip:{to}");
    let call_id = token();
    let tag = token();
    let port = client.port;
    let msg = |cseq: u32, auth: &str| {
        format!(
            "REGISTER {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {LOCALHOST}:{port};branch=z9hG4bK{b};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{LOCALHOST}>;tag={tag}\r\n\
             To: <sip:{user}@{LOCALHOST}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{LOCALHOST}:{port}>\r\n\
             Expires: 60\r\n\
             {auth}Content-Length: 0\r\n\r\n",
            b = token(),
        )
    };
    let first = client
        .request(&to, &msg(1, ""), &call_id, Duration::from_secs(10))
        .expect("no answer to REGISTER");
    if first.status != 401 {
        return first.status;
    }
    let challenge = first
        .headers("WWW-Authenticate", None)
        .into_iter()
        .find(|c| c.starts_with("Digest") && c.contains("MD5"))
        .unwrap_or_else(|| panic!("no MD5 Digest challenge:\n{}", first.text));
    let auth = answer_challenge(&challenge, "REGISTER", &ruri, user, password, "c0ffee", 1)
        .expect("answerable challenge");
    client
        .request(
            &to,
            &msg(2, &format!("Authorization: {auth}\r\n")),
            &call_id,
            Duration::from_secs(10),
        )
        .expect("no answer to the authenticated REGISTER")
        .status
}

/// A signed request with the token given as is.
fn send_token(node: &Node, method: &str, path: &str, token: &str, body: &[u8]) -> HttpAnswer {
    let auth = format!("DOTS-JWS {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    http_send(node.http_port, method, path, &headers, body).expect("no HTTP answer")
}

/// A request signed by `wallet` now, with a fresh nonce.
fn signed(node: &Node, wallet: &Wallet, method: &str, path: &str, body: &[u8]) -> HttpAnswer {
    let token = sign_request(wallet, method, path, body, now_ms(), &new_nonce());
    send_token(node, method, path, &token, body)
}

fn error_of(a: &HttpAnswer) -> String {
    a.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {}", a.body))
        .to_string()
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The whole life of a device password on a node without the overlay: add,
/// register, list, revoke (refused at once), and the handle rules.
#[test]
fn device_password_add_register_list_revoke() {
    let node = auth_node(false);
    let dir = scratch_dir("devices");
    let alice_path = new_wallet(&dir, "alice.wallet", "alice");
    let alice = load(&alice_path);

    let phone = add_device(&alice_path, &node, &["--name", "phone"]);
    assert_eq!(phone.username, "alice-phone");
    assert!(phone.password.len() >= 20, "{}", phone.out);
    assert!(phone.password.bytes().all(|b| b.is_ascii_alphanumeric()));
    let field = |k: &str| output_field(&phone.out, k);
    assert_eq!(field("domain").as_deref(), Some(DOMAIN));
    assert_eq!(field("registrar"), Some(format!("sip:{}", node.sip_addr())));
    assert_eq!(field("realm").as_deref(), Some("dots"));
    assert_eq!(field("aor"), Some(format!("sip:alice-phone@{DOMAIN}")));
    assert_eq!(field("did"), Some(alice.did()));
    assert_eq!(field("grant_until"), None, "no overlay, no grant");

    // The phone registers with it (SIPp answers the MD5 challenge).
    let contact = format!("{LOCALHOST}:{}", free_port());
    register_auth(
        &node,
        &phone.username,
        &phone.password,
        &contact,
        Transport::Udp,
    )
    .assert_ok(1);
    assert_eq!(register_status(&node, &phone.username, "wrong"), 403);

    // Only the digest verifier is stored, never the password.
    let stored = std::fs::read(node.data_dir.join("accounts.redb")).unwrap();
    assert!(
        !stored
            .windows(phone.password.len())
            .any(|w| w == phone.password.as_bytes()),
        "the password is in accounts.redb"
    );
    assert!(
        !node.log().contains(&phone.password),
        "the password is logged"
    );

    // A second device; the list shows both, without secrets.
    let desk = add_device(&alice_path, &node, &["--name", "desk"]);
    assert_eq!(desk.username, "alice-desk");
    assert_ne!(desk.password, phone.password);
    let (ok, list, err) = device("list", &alice_path, &node, &[]);
    assert!(ok, "device list failed:\n{list}\n{err}");
    for (name, user) in [("phone", "alice-phone"), ("desk", "alice-desk")] {
        assert!(
            list.lines()
                .any(|l| l.starts_with(&format!("{name}\t{user}\t"))),
            "{name} missing from the list:\n{list}"
        );
    }
    assert!(!list.contains(&phone.password) && !list.contains(&desk.password));

    // The same device name again: 409.
    let (ok, out, err) = device("add", &alice_path, &node, &["--name", "phone"]);
    assert!(!ok, "a second 'phone' was accepted:\n{out}");
    assert!(
        err.contains("409") && err.contains("already have a device"),
        "{err}"
    );

    // Revoked: the very next REGISTER is refused, with no wait.
    let (ok, out, err) = device("revoke", &alice_path, &node, &["--name", "phone"]);
    assert!(ok, "device revoke failed:\n{out}\n{err}");
    assert_eq!(
        output_field(&out, "revoked").as_deref(),
        Some("alice-phone")
    );
    assert_eq!(
        register_status(&node, &phone.username, &phone.password),
        403
    );
    // The other device still works.
    assert_eq!(register_status(&node, &desk.username, &desk.password), 200);
    let (_, list, _) = device("list", &alice_path, &node, &[]);
    assert!(
        !list.contains("alice-phone"),
        "revoked device listed:\n{list}"
    );
    let (ok, _, err) = device("revoke", &alice_path, &node, &["--name", "phone"]);
    assert!(!ok && err.contains("404"), "{err}");

    // Another key for the same handle: 409; with a handle of its own, fine.
    let mallory_path = new_wallet(&dir, "mallory.wallet", "alice");
    let (ok, out, err) = device("add", &mallory_path, &node, &["--name", "phone"]);
    assert!(!ok, "another DID took the handle alice:\n{out}");
    assert!(err.contains("409") && err.contains("taken"), "{err}");
    let m = add_device(
        &mallory_path,
        &node,
        &["--name", "phone", "--user", "mallory"],
    );
    assert_eq!(m.username, "mallory-phone");
    assert_eq!(register_status(&node, &m.username, &m.password), 200);
    // Mallory cannot see or revoke Alice's devices.
    let (_, list, _) = device("list", &mallory_path, &node, &[]);
    assert!(!list.contains("alice-"), "{list}");
    let (ok, _, err) = device("revoke", &mallory_path, &node, &["--name", "desk"]);
    assert!(!ok && err.contains("404"), "{err}");
    assert_eq!(register_status(&node, &desk.username, &desk.password), 200);

    // Without a wallet name nor --user, the handle is the one the DID has.
    let nameless = dir.join("nameless.wallet");
    let (ok, _, err) = run_dots_id(&["new", "--wallet", nameless.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = device("add", &nameless, &node, &["--name", "phone"]);
    assert!(
        !ok && err.contains("400") && err.contains("no handle"),
        "{err}"
    );
    add_device(&nameless, &node, &["--name", "phone", "--user", "zed"]);
    let second = add_device(&nameless, &node, &["--name", "tablet"]);
    assert_eq!(second.username, "zed-tablet");

    // Bad names are refused by the CLI before anything is sent, and by the node.
    let (ok, _, err) = device("add", &alice_path, &node, &["--name", "My Phone"]);
    assert!(!ok && err.contains("invalid device name"), "{err}");
    let body = br#"{"name":"My Phone","user":"alice"}"#;
    let a = signed(&node, &alice, "POST", DEVICES, body);
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(error_of(&a).contains("invalid device name"), "{}", a.body);
    let a = signed(
        &node,
        &alice,
        "POST",
        DEVICES,
        br#"{"name":"x","user":"a/b"}"#,
    );
    assert_eq!(a.status, 400, "{}", a.body);
    let a = signed(&node, &alice, "POST", DEVICES, b"not json");
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(error_of(&a).starts_with("invalid JSON body"), "{}", a.body);
    let a = signed(&node, &alice, "DELETE", &format!("{DEVICES}/..%2Fx"), b"");
    assert_eq!(a.status, 400, "{}", a.body);

    // A grant to a node without the overlay is refused.
    let grant = Grant::new_signed(&alice.did(), b"node", 1, now_ms() + 1000, |m| alice.sign(m));
    let body = serde_json::json!({
        "name": "tv",
        "grant": {"issued": grant.issued, "until": grant.until, "sig": b64url(&grant.signature)},
    });
    let a = signed(&node, &alice, "POST", DEVICES, body.to_string().as_bytes());
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(error_of(&a).contains("without the overlay"), "{}", a.body);
    assert!(node.healthz().is_some());
}

/// Accounts of `dots user add` live on next to device accounts.
#[test]
fn user_accounts_unchanged_next_to_device_accounts() {
    let node = Node::start(NodeConfig {
        domains: vec![DOMAIN.to_string()],
        ..NodeConfig::with_auth()
            .md5_first()
            .user("carol", "carol-pw")
    });
    let dir = scratch_dir("devices-users");
    let alice_path = new_wallet(&dir, "alice.wallet", "alice");
    let phone = add_device(&alice_path, &node, &["--name", "phone"]);
    assert_eq!(register_status(&node, "carol", "carol-pw"), 200);
    assert_eq!(
        register_status(&node, &phone.username, &phone.password),
        200
    );
    // A handle that is an account's name cannot be bound.
    let carol_path = new_wallet(&dir, "carol.wallet", "carol");
    let (ok, _, err) = device("add", &carol_path, &node, &["--name", "phone"]);
    assert!(!ok && err.contains("409"), "{err}");
    // `dots user` sees device accounts, and a new password from it works.
    let (ok, list) = dots_user(&node.data_dir, &["list"]);
    assert!(
        ok && list.contains("alice-phone") && list.contains("carol"),
        "{list}"
    );
    let (ok, out) = dots_user(
        &node.data_dir,
        &["passwd", "alice-phone", "--password", "reset-pw"],
    );
    assert!(ok, "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || register_status(
            &node,
            "alice-phone",
            "reset-pw"
        ) == 200),
        "the password set by `dots user passwd` does not work"
    );
    let (ok, list, _) = device("list", &alice_path, &node, &[]);
    assert!(ok && list.contains("alice-phone"), "{list}");
    // `dots user add` cannot take a bound handle.
    let (ok, out) = dots_user(&node.data_dir, &["add", "alice", "--password", "x"]);
    assert!(!ok, "{out}");
}

/// Replayed, forged, stale and malformed signed requests get clear 4xx
/// answers, and the node stays up.
#[test]
fn signed_request_refusals() {
    let node = auth_node(false);
    let dir = scratch_dir("devices-jws");
    let alice = load(&new_wallet(&dir, "alice.wallet", "alice"));

    // The same token twice: the second is a replay.
    let token = sign_request(&alice, "GET", DEVICES, b"", now_ms(), &new_nonce());
    let first = send_token(&node, "GET", DEVICES, &token, b"");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["did"], alice.did().as_str());
    let again = send_token(&node, "GET", DEVICES, &token, b"");
    assert_eq!(again.status, 401, "{}", again.body);
    assert!(
        error_of(&again).starts_with("replayed nonce"),
        "{}",
        again.body
    );
    assert_eq!(again.header("www-authenticate"), Some("DOTS-JWS"));

    // A replayed POST creates nothing more.
    let body = br#"{"name":"phone","user":"alice"}"#;
    let token = sign_request(&alice, "POST", DEVICES, body, now_ms(), &new_nonce());
    let created = send_token(&node, "POST", DEVICES, &token, body);
    assert_eq!(created.status, 201, "{}", created.body);
    let v = created.json();
    assert_eq!(v["username"], "alice-phone");
    assert_eq!(v["did"], alice.did().as_str());
    assert_eq!(v["domain"], DOMAIN);
    assert_eq!(v["aor"], format!("sip:alice-phone@{DOMAIN}").as_str());
    assert_eq!(v["registrar"], format!("sip:{}", node.sip_addr()).as_str());
    assert_eq!(v["realm"], "dots");
    assert!(v["password"].as_str().unwrap().len() >= 20);
    let replay = send_token(&node, "POST", DEVICES, &token, body);
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert!(
        error_of(&replay).starts_with("replayed nonce"),
        "{}",
        replay.body
    );

    let good = sign_request(&alice, "GET", DEVICES, b"", now_ms(), &new_nonce());
    let parts: Vec<&str> = good.split('.').collect();
    let with_sig = |sig: &str| format!("{}.{}.{sig}", parts[0], parts[1]);
    let header_kid = |kid: &str| b64url(format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#).as_bytes());
    let cases: Vec<(String, u16, &str)> = vec![
        // Truncated signature: no longer base64url of anything.
        (good[..good.len() - 1].to_string(), 400, "malformed token"),
        // A signature of the wrong length.
        (
            with_sig(&b64url(&[7u8; 63])),
            400,
            "signature of wrong length",
        ),
        (with_sig(""), 400, "signature of wrong length"),
        // Right length, wrong bytes.
        (with_sig(&b64url(&[7u8; 64])), 401, "bad signature"),
        // A kid that is no did:key.
        (
            format!(
                "{}.{}.{}",
                header_kid("did:key:z6MkNOPE"),
                parts[1],
                parts[2]
            ),
            400,
            "malformed DID",
        ),
        (
            format!(
                "{}.{}.{}",
                header_kid("did:web:example.test"),
                parts[1],
                parts[2]
            ),
            400,
            "malformed DID",
        ),
        // Signed by another key than the kid names.
        (
            format!(
                "{}.{}.{}",
                header_kid(&Wallet::generate(None).did()),
                parts[1],
                parts[2]
            ),
            401,
            "bad signature",
        ),
        // Signed ten minutes ago.
        (
            sign_request(
                &alice,
                "GET",
                DEVICES,
                b"",
                now_ms() - 600_000,
                &new_nonce(),
            ),
            401,
            "stale timestamp",
        ),
        // Signed for another request.
        (
            sign_request(&alice, "DELETE", DEVICES, b"", now_ms(), &new_nonce()),
            401,
            "request mismatch",
        ),
        ("garbage".to_string(), 400, "malformed token"),
        ("a.b.c.d".to_string(), 400, "malformed token"),
        ("x".repeat(20_000), 400, "malformed token"),
    ];
    for (token, status, reason) in &cases {
        let a = send_token(&node, "GET", DEVICES, token, b"");
        assert_eq!(a.status, *status, "{reason}: {}", a.body);
        assert!(error_of(&a).starts_with(reason), "{reason}: {}", a.body);
    }
    // No or another Authorization scheme.
    let a = http_send(node.http_port, "GET", DEVICES, &[], b"").unwrap();
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(error_of(&a).contains("missing Authorization"), "{}", a.body);
    let a = http_send(
        node.http_port,
        "GET",
        DEVICES,
        &[("Authorization", "Bearer abc")],
        b"",
    )
    .unwrap();
    assert_eq!(a.status, 401, "{}", a.body);
    // Still up, and the good token still works once.
    let mut node = node;
    assert!(node.is_alive());
    assert_eq!(node.healthz().map(|(s, _)| s), Some(200));
    let a = send_token(&node, "GET", DEVICES, &good, b"");
    assert_eq!(a.status, 200, "{}", a.body);
}

/// On a node with the overlay the CLI signs a grant for the node's peer id;
/// forged grants are refused; revocation is immediate there too.
#[test]
fn device_password_with_overlay_grant() {
    let node = auth_node(true);
    let info = node.node_info().expect("GET /api/v1/node");
    let peer_id: libp2p::PeerId = info["peer_id"].as_str().unwrap().parse().unwrap();
    let dir = scratch_dir("devices-overlay");
    let alice_path = new_wallet(&dir, "alice.wallet", "alice");
    let alice = load(&alice_path);

    let phone = add_device(&alice_path, &node, &["--name", "phone"]);
    assert_eq!(phone.username, "alice-phone");
    let until = output_field(&phone.out, "grant_until").expect("a grant on an overlay node");
    assert!(until.ends_with('Z') && until.len() == 20, "{until}");
    let (ok, list, _) = device("list", &alice_path, &node, &[]);
    assert!(ok, "{list}");
    let line = list
        .lines()
        .find(|l| l.starts_with("phone\t"))
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(line.split('\t').nth(3), Some(until.as_str()));

    let contact = format!("{LOCALHOST}:{}", free_port());
    register_auth(
        &node,
        &phone.username,
        &phone.password,
        &contact,
        Transport::Udp,
    )
    .assert_ok(1);

    // Grants that are not the user's delegation to this node.
    let mallory = Wallet::generate(None);
    let other_node = dots_records::NodeKey::generate().peer_id_bytes();
    let now = now_ms();
    let node_bytes = peer_id.to_bytes();
    let forged = [
        Grant::new_signed(&alice.did(), &node_bytes, now, now + 86_400_000, |m| {
            mallory.sign(m)
        }),
        Grant::new_signed(&alice.did(), &other_node, now, now + 86_400_000, |m| {
            alice.sign(m)
        }),
        Grant::new_signed(&alice.did(), &node_bytes, now - 10_000, now - 5_000, |m| {
            alice.sign(m)
        }),
    ];
    for g in &forged {
        let body = serde_json::json!({
            "name": "tv",
            "grant": {"issued": g.issued, "until": g.until, "sig": b64url(&g.signature)},
        });
        let a = signed(&node, &alice, "POST", DEVICES, body.to_string().as_bytes());
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(error_of(&a).starts_with("bad grant"), "{}", a.body);
    }
    let body = r#"{"name":"tv","grant":{"issued":1,"until":2,"sig":"AAAA"}}"#;
    let a = signed(&node, &alice, "POST", DEVICES, body.as_bytes());
    assert_eq!(a.status, 400, "{}", a.body);

    let (ok, out, err) = device("revoke", &alice_path, &node, &["--name", "phone"]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        register_status(&node, &phone.username, &phone.password),
        403
    );
    let mut node = node;
    assert!(node.is_alive());
}
