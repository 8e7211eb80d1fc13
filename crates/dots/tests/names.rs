//! Names, end to end: a node's did:web document, its users' did:web
//! documents and WebFinger, checked field by field against the wallet's DID
//! and the node's DID from `GET /api/v1/node`.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

const DOMAIN: &str = "example.test";

fn get(node: &Node, path: &str) -> HttpAnswer {
    http_send(node.http_port, "GET", path, &[], b"").expect("no HTTP answer")
}

/// The `z6Mk…` of a did:key.
fn multibase(did_key: &str) -> &str {
    did_key.strip_prefix("did:key:").expect("a did:key")
}

/// The one verification method of a document, checked to be the Multikey
/// of `did_key`, controlled by `controller`, and the document's
/// authentication and assertion key.
fn check_key(doc: &Value, did_key: &str, controller: &str) {
    let id = doc["id"].as_str().unwrap();
    let methods = doc["verificationMethod"]
        .as_array()
        .expect("verificationMethod");
    assert_eq!(methods.len(), 1, "{doc}");
    let vm = &methods[0];
    assert_eq!(vm["type"], "Multikey");
    assert_eq!(vm["controller"], controller);
    assert_eq!(vm["publicKeyMultibase"], multibase(did_key));
    assert_eq!(vm["id"], format!("{id}#{}", multibase(did_key)).as_str());
    assert_eq!(doc["authentication"], json!([vm["id"]]));
    assert_eq!(doc["assertionMethod"], json!([vm["id"]]));
    let context = doc["@context"].as_array().expect("@context");
    assert_eq!(context[0], "https://www.w3.org/ns/did/v1");
}

fn error_of(a: &HttpAnswer) -> String {
    a.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {}", a.body))
        .to_string()
}

fn add_device(wallet: &Path, node: &Node, name: &str) {
    let node_url = format!("http://{LOCALHOST}:{}", node.http_port);
    let (ok, out, err) = run_dots_id(&[
        "device",
        "add",
        "--wallet",
        wallet.to_str().unwrap(),
        "--node",
        &node_url,
        "--name",
        name,
    ]);
    assert!(ok, "dots id device add failed:\n{out}\n{err}");
}

#[test]
fn did_web_and_webfinger() {
    let node = Node::start(NodeConfig {
        domains: vec![DOMAIN.to_string()],
        ..NodeConfig::with_auth().p2p(&[])
    });
    let info = node.node_info().expect("GET /api/v1/node");
    let node_did = info["did"].as_str().unwrap().to_string();
    assert!(node_did.starts_with("did:key:z6Mk"), "{info}");

    // The node's document.
    let a = get(&node, "/.well-known/did.json");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("application/did+json"));
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    let doc = a.json();
    assert_eq!(doc["id"], format!("did:web:{DOMAIN}").as_str());
    assert_eq!(doc["alsoKnownAs"], json!([node_did]));
    check_key(&doc, &node_did, &format!("did:web:{DOMAIN}"));
    let services = doc["service"].as_array().expect("service");
    assert_eq!(services.len(), 1, "{doc}");
    assert_eq!(services[0]["type"], "SIPRegistrar");
    assert_eq!(services[0]["id"], format!("did:web:{DOMAIN}#sip").as_str());
    assert_eq!(services[0]["serviceEndpoint"], info["sip"]);
    let sip = services[0]["serviceEndpoint"].as_array().unwrap();
    assert!(
        sip.iter().any(|u| u
            .as_str()
            .unwrap()
            .starts_with(&format!("sip:{}", node.sip_addr()))),
        "{doc}"
    );

    // Alice binds the handle "alice" with her first device.
    let dir = scratch_dir("names");
    let wallet = dir.join("alice.wallet");
    let (ok, out, err) = run_dots_id(&[
        "new",
        "--wallet",
        wallet.to_str().unwrap(),
        "--name",
        "alice",
    ]);
    assert!(ok, "{err}");
    let alice = out.lines().next().unwrap().to_string();
    let a = get(&node, "/users/alice/did.json");
    assert_eq!(a.status, 404, "before any device: {}", a.body);
    assert!(error_of(&a).contains("no user"), "{}", a.body);
    add_device(&wallet, &node, "phone");

    let a = get(&node, "/users/alice/did.json");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("application/did+json"));
    let doc = a.json();
    let alice_web = format!("did:web:{DOMAIN}:users:alice");
    assert_eq!(doc["id"], alice_web.as_str());
    assert_eq!(doc["controller"], alice.as_str());
    assert_eq!(
        doc["alsoKnownAs"],
        json!([alice, format!("sip:alice@{DOMAIN}")])
    );
    check_key(&doc, &alice, &alice);

    // WebFinger.
    let a = get(
        &node,
        &format!("/.well-known/webfinger?resource=acct:alice@{DOMAIN}"),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("application/jrd+json"));
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    let jrd = a.json();
    assert_eq!(jrd["subject"], format!("acct:alice@{DOMAIN}").as_str());
    assert_eq!(
        jrd["aliases"],
        json!([alice, alice_web, format!("sip:alice@{DOMAIN}")])
    );
    let links = jrd["links"].as_array().expect("links");
    let link = |rel: &str| {
        links
            .iter()
            .find(|l| l["rel"] == rel)
            .unwrap_or_else(|| panic!("no {rel} link in {jrd}"))
    };
    assert_eq!(link("self")["type"], "application/did+json");
    assert_eq!(
        link("self")["href"],
        format!("https://{DOMAIN}/users/alice/did.json").as_str()
    );
    assert_eq!(link("sip")["href"], format!("sip:alice@{DOMAIN}").as_str());
    // Escaped as a browser would, and a rel filter.
    let a = get(
        &node,
        "/.well-known/webfinger?resource=acct%3Aalice%40example.test&rel=self",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let jrd = a.json();
    assert_eq!(jrd["aliases"][0], alice.as_str());
    assert_eq!(jrd["links"].as_array().unwrap().len(), 1);
    assert_eq!(jrd["links"][0]["rel"], "self");

    // Errors.
    for (query, status, reason) in [
        ("", 400, "missing resource"),
        ("?rel=self", 400, "missing resource"),
        ("?resource=alice", 400, "malformed resource"),
        ("?resource=acct:alice", 400, "malformed resource"),
        ("?resource=acct:@example.test", 400, "malformed resource"),
        ("?resource=%zz", 400, "malformed query"),
        ("?resource=acct:bob@example.test", 404, "no user"),
        (
            "?resource=acct:alice@elsewhere.test",
            404,
            "not this node's domain",
        ),
        (
            "?resource=https://example.test/alice",
            404,
            "unknown resource",
        ),
    ] {
        let a = get(&node, &format!("/.well-known/webfinger{query}"));
        assert_eq!(a.status, status, "{query}: {}", a.body);
        assert!(error_of(&a).contains(reason), "{query}: {}", a.body);
    }
    for path in [
        "/users/bob/did.json",
        "/users/..%2F/did.json",
        "/users/Alice/did.json",
    ] {
        let a = get(&node, path);
        assert_eq!(a.status, 404, "{path}: {}", a.body);
        assert!(error_of(&a).contains("no user"), "{path}: {}", a.body);
    }

    // The handle stays Alice's after she revokes her last device.
    let node_url = format!("http://{LOCALHOST}:{}", node.http_port);
    let (ok, _, err) = run_dots_id(&[
        "device",
        "revoke",
        "--wallet",
        wallet.to_str().unwrap(),
        "--node",
        &node_url,
        "--name",
        "phone",
    ]);
    assert!(ok, "{err}");
    let a = get(&node, "/users/alice/did.json");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["controller"], alice.as_str());
}

#[test]
fn names_need_a_domain() {
    // Without a domain there is nothing to name; the API says so in JSON.
    let node = Node::start(NodeConfig::with_auth());
    for path in [
        "/.well-known/did.json",
        "/users/alice/did.json",
        "/.well-known/webfinger?resource=acct:alice@127.0.0.1",
    ] {
        let a = get(&node, path);
        assert_eq!(a.status, 404, "{path}: {}", a.body);
        assert!(error_of(&a).contains("--domain"), "{path}: {}", a.body);
    }
    // Without the overlay, a node with a domain still publishes its key.
    let node = Node::start(NodeConfig {
        domains: vec![DOMAIN.to_string()],
        ..NodeConfig::with_auth()
    });
    assert!(node.node_info().is_none(), "no overlay, no /api/v1/node");
    let doc = get(&node, "/.well-known/did.json").json();
    assert_eq!(doc["id"], format!("did:web:{DOMAIN}").as_str());
    let node_did = doc["alsoKnownAs"][0].as_str().unwrap().to_string();
    check_key(&doc, &node_did, &format!("did:web:{DOMAIN}"));
    // The same key after a restart.
    let mut node = node;
    node.restart();
    let doc = get(&node, "/.well-known/did.json").json();
    assert_eq!(doc["alsoKnownAs"][0], node_did.as_str());
}
