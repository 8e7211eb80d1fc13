//! Names: the node's and its users' `did:web` documents, and WebFinger.
//!
//! A node with a domain (its first `--domain`) publishes, federated like
//! e-mail:
//!
//! - `GET /.well-known/did.json`: `did:web:<domain>`, the node; its key is the
//!   node key (`alsoKnownAs` its did:key), its service the node's SIP URIs.
//! - `GET /users/<handle>/did.json`: `did:web:<domain>:users:<handle>`, a
//!   user whose handle is bound to their did:key on this node (by their first
//!   device, see the provider API); controlled by that did:key.
//! - `GET /.well-known/webfinger?resource=acct:<handle>@<domain>` (RFC 7033):
//!   the handle's aliases (did:key, did:web, SIP AOR) and links.
//!
//! Per the did:web method, a port in the domain is written `%3A<port>` in the
//! DID, and `did:web:<domain>:users:<handle>` resolves to
//! `https://<domain>/users/<handle>/did.json`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::provider::{check_name, ApiError, Handles};

/// JSON-LD contexts of the documents.
const CONTEXT: [&str; 2] = [
    "https://www.w3.org/ns/did/v1",
    "https://w3id.org/security/multikey/v1",
];

/// Content type of the DID documents.
pub const DID_CONTENT_TYPE: &str = "application/did+json";
/// Content type of WebFinger answers (RFC 7033 §10.2).
pub const JRD_CONTENT_TYPE: &str = "application/jrd+json";

/// `did:web:<domain>`, the domain lowercased and its port's ':' written `%3A`.
pub fn did_web(domain: &str) -> String {
    format!(
        "did:web:{}",
        domain.to_ascii_lowercase().replace(':', "%3A")
    )
}

/// `did:web:<domain>:users:<handle>`.
pub fn did_web_user(domain: &str, handle: &str) -> String {
    format!("{}:users:{handle}", did_web(domain))
}

/// Where `did:web:<domain>:users:<handle>` resolves to.
pub fn user_document_url(domain: &str, handle: &str) -> String {
    format!(
        "https://{}/users/{handle}/did.json",
        domain.to_ascii_lowercase()
    )
}

/// The `publicKeyMultibase` of an Ed25519 did:key: the `z6Mk…` after
/// `did:key:`, which is the Multikey encoding of the same public key.
pub fn multibase_of(did_key: &str) -> Option<&str> {
    dots_records::public_from_did(did_key)?;
    did_key.strip_prefix("did:key:")
}

fn verification_method(id: &str, controller: &str, multibase: &str) -> (String, Value) {
    let vm_id = format!("{id}#{multibase}");
    let vm = json!({
        "id": vm_id,
        "type": "Multikey",
        "controller": controller,
        "publicKeyMultibase": multibase,
    });
    (vm_id, vm)
}

/// The node's DID document.
pub fn node_document(domain: &str, node_did: &str, sip: &[String]) -> Option<Value> {
    let id = did_web(domain);
    let multibase = multibase_of(node_did)?;
    let (vm_id, vm) = verification_method(&id, &id, multibase);
    Some(json!({
        "@context": CONTEXT,
        "id": id,
        "alsoKnownAs": [node_did],
        "verificationMethod": [vm],
        "authentication": [vm_id],
        "assertionMethod": [vm_id],
        "service": [{
            "id": format!("{id}#sip"),
            "type": "SIPRegistrar",
            "serviceEndpoint": sip,
        }],
    }))
}

/// A user's DID document: `did:web:<domain>:users:<handle>`, controlled by
/// their did:key.
pub fn user_document(domain: &str, handle: &str, did: &str) -> Option<Value> {
    let id = did_web_user(domain, handle);
    let multibase = multibase_of(did)?;
    let (vm_id, vm) = verification_method(&id, did, multibase);
    Some(json!({
        "@context": CONTEXT,
        "id": id,
        "controller": did,
        "alsoKnownAs": [did, sip_aor(handle, domain)],
        "verificationMethod": [vm],
        "authentication": [vm_id],
        "assertionMethod": [vm_id],
    }))
}

fn sip_aor(handle: &str, domain: &str) -> String {
    format!("sip:{handle}@{}", domain.to_ascii_lowercase())
}

/// The JRD of a handle (RFC 7033 §4.4), its links filtered by `rels` if any.
pub fn jrd(subject: &str, domain: &str, handle: &str, did: &str, rels: &[String]) -> Value {
    let links = [
        json!({
            "rel": "self",
            "type": DID_CONTENT_TYPE,
            "href": user_document_url(domain, handle),
        }),
        json!({ "rel": "sip", "href": sip_aor(handle, domain) }),
    ];
    let links: Vec<Value> = links
        .into_iter()
        .filter(|l| rels.is_empty() || rels.iter().any(|r| l["rel"] == r.as_str()))
        .collect();
    json!({
        "subject": subject,
        "aliases": [did, did_web_user(domain, handle), sip_aor(handle, domain)],
        "links": links,
    })
}

/// Decodes `%XX` escapes (and '+' as a space, as forms write it); `None`
/// for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `name=value` pairs of a query string, decoded; `None` if one is malformed.
pub fn parse_query(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// Answers a WebFinger query for `domain`'s handles: the JRD, or 400 for a
/// missing or malformed resource, 404 for a resource not known here.
pub fn webfinger(
    domain: &str,
    query: Option<&str>,
    handles: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let usage = format!("e.g. ?resource=acct:alice@{domain}");
    let params = parse_query(query.unwrap_or(""))
        .ok_or_else(|| ApiError::new(400, "malformed query string (bad %-escape)"))?;
    let mut resources = params.iter().filter(|(k, _)| k == "resource");
    let resource = match (resources.next(), resources.next()) {
        (Some((_, r)), None) => r.trim(),
        (None, _) => {
            return Err(ApiError::new(
                400,
                format!("missing resource parameter ({usage})"),
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                400,
                format!("more than one resource parameter ({usage})"),
            ))
        }
    };
    let rels: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "rel")
        .map(|(_, v)| v.clone())
        .collect();
    let Some((scheme, rest)) = resource.split_once(':') else {
        return Err(ApiError::new(
            400,
            format!("malformed resource {resource:?}: not a URI ({usage})"),
        ));
    };
    if !["acct", "sip", "sips"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return Err(ApiError::new(
            404,
            format!("unknown resource {resource:?}: this node answers for acct: and sip: URIs"),
        ));
    }
    let Some((user, host)) = rest.rsplit_once('@') else {
        return Err(ApiError::new(
            400,
            format!("malformed resource {resource:?}: expected {scheme}:HANDLE@DOMAIN ({usage})"),
        ));
    };
    if user.is_empty() || host.is_empty() {
        return Err(ApiError::new(
            400,
            format!("malformed resource {resource:?}: expected {scheme}:HANDLE@DOMAIN ({usage})"),
        ));
    }
    // A SIP URI may carry parameters: sip:alice@example.org;transport=tcp.
    let host = host.split([';', '?']).next().unwrap_or(host);
    if !host.eq_ignore_ascii_case(domain) {
        return Err(ApiError::new(
            404,
            format!("{host:?} is not this node's domain ({domain})"),
        ));
    }
    let handle = user.to_ascii_lowercase();
    let unknown = || ApiError::new(404, format!("no user {handle:?} at {domain}"));
    if check_name("handle", &handle).is_err() {
        return Err(unknown());
    }
    let did = handles.get(&handle).ok_or_else(unknown)?;
    Ok(jrd(resource, domain, &handle, did, &rels))
}

/// What the names endpoints need.
pub struct Names {
    /// The node's domain (first `--domain`); no names without one.
    pub domain: Option<String>,
    /// The node's did:key.
    pub node_did: Option<String>,
    /// The node's SIP URIs.
    pub sip: Vec<String>,
    pub handles: Handles,
}

impl Names {
    fn domain(&self) -> Result<&str, ApiError> {
        self.domain.as_deref().ok_or_else(|| {
            ApiError::new(
                404,
                "this node has no domain: names (did:web, WebFinger) are served by nodes started with --domain",
            )
        })
    }

    /// `GET /.well-known/did.json`.
    pub fn node_document(&self) -> Result<Value, ApiError> {
        let domain = self.domain()?;
        self.node_did
            .as_deref()
            .and_then(|did| node_document(domain, did, &self.sip))
            .ok_or_else(|| ApiError::new(404, "this node has no key to publish"))
    }

    /// `GET /users/<handle>/did.json`.
    pub fn user_document(&self, handle: &str) -> Result<Value, ApiError> {
        let domain = self.domain()?;
        let unknown = || ApiError::new(404, format!("no user {handle:?} at {domain}"));
        if check_name("handle", handle).is_err() {
            return Err(unknown());
        }
        let handles = self.handles.read().unwrap_or_else(|e| e.into_inner());
        let did = handles.get(handle).ok_or_else(unknown)?;
        user_document(domain, handle, did).ok_or_else(unknown)
    }

    /// `GET /.well-known/webfinger?…`.
    pub fn webfinger(&self, query: Option<&str>) -> Result<Value, ApiError> {
        let domain = self.domain()?;
        let handles = self.handles.read().unwrap_or_else(|e| e.into_inner());
        webfinger(domain, query, &handles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DID: &str = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";

    #[test]
    fn did_web_names() {
        assert_eq!(did_web("example.org"), "did:web:example.org");
        assert_eq!(did_web("Example.ORG:8443"), "did:web:example.org%3A8443");
        assert_eq!(
            did_web_user("example.org:8443", "alice"),
            "did:web:example.org%3A8443:users:alice"
        );
        assert_eq!(
            user_document_url("example.org:8443", "alice"),
            "https://example.org:8443/users/alice/did.json"
        );
        assert_eq!(
            multibase_of(DID),
            Some("z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
        );
        assert_eq!(multibase_of("did:key:zQ3sh"), None);
        assert_eq!(multibase_of("did:web:example.org"), None);
    }

    #[test]
    fn documents() {
        let sip = vec!["sip:192.0.2.1:5060;transport=tcp".to_string()];
        let d = node_document("example.org", DID, &sip).unwrap();
        assert_eq!(d["id"], "did:web:example.org");
        assert_eq!(d["alsoKnownAs"], json!([DID]));
        let vm = &d["verificationMethod"][0];
        assert_eq!(vm["type"], "Multikey");
        assert_eq!(vm["controller"], "did:web:example.org");
        assert_eq!(vm["publicKeyMultibase"], &DID["did:key:".len()..]);
        assert_eq!(d["authentication"][0], vm["id"]);
        assert_eq!(d["service"][0]["serviceEndpoint"], json!(sip));
        assert_eq!(d["service"][0]["type"], "SIPRegistrar");

        let u = user_document("example.org", "alice", DID).unwrap();
        assert_eq!(u["id"], "did:web:example.org:users:alice");
        assert_eq!(u["controller"], DID);
        assert_eq!(u["alsoKnownAs"], json!([DID, "sip:alice@example.org"]));
        let vm = &u["verificationMethod"][0];
        assert_eq!(vm["controller"], DID);
        assert_eq!(vm["publicKeyMultibase"], &DID["did:key:".len()..]);
        assert!(vm["id"]
            .as_str()
            .unwrap()
            .starts_with("did:web:example.org:users:alice#z6Mk"));
        assert!(user_document("example.org", "alice", "did:key:bad").is_none());
    }

    #[test]
    fn query_strings() {
        assert_eq!(
            parse_query("resource=acct%3Aalice%40example.org&rel=self").unwrap(),
            vec![
                ("resource".to_string(), "acct:alice@example.org".to_string()),
                ("rel".to_string(), "self".to_string())
            ]
        );
        assert_eq!(parse_query("").unwrap(), vec![]);
        assert!(parse_query("resource=%4").is_none());
        assert!(parse_query("resource=%zz").is_none());
        assert!(parse_query("resource=%ff").is_none());
    }

    #[test]
    fn webfinger_answers() {
        let mut handles = BTreeMap::new();
        handles.insert("alice".to_string(), DID.to_string());
        let ok = |q: &str| webfinger("example.org", Some(q), &handles).unwrap();
        let status = |q: Option<&str>| {
            webfinger("example.org", q, &handles)
                .map(|_| 200)
                .unwrap_or_else(|e| e.status)
        };
        let j = ok("resource=acct:alice@example.org");
        assert_eq!(j["subject"], "acct:alice@example.org");
        assert_eq!(
            j["aliases"],
            json!([
                DID,
                "did:web:example.org:users:alice",
                "sip:alice@example.org"
            ])
        );
        assert_eq!(j["links"][0]["rel"], "self");
        assert_eq!(j["links"][0]["type"], "application/did+json");
        assert_eq!(
            j["links"][0]["href"],
            "https://example.org/users/alice/did.json"
        );
        assert_eq!(j["links"][1]["href"], "sip:alice@example.org");
        // Escaped, other case, a sip: URI, rel filter.
        assert_eq!(ok("resource=acct%3AAlice%40EXAMPLE.org")["aliases"][0], DID);
        assert_eq!(
            ok("resource=sip:alice@example.org;transport=tcp")["aliases"][0],
            DID
        );
        let only_sip = ok("resource=acct:alice@example.org&rel=sip");
        assert_eq!(only_sip["links"].as_array().unwrap().len(), 1);
        assert_eq!(only_sip["links"][0]["rel"], "sip");

        for (q, want) in [
            (None, 400),
            (Some(""), 400),
            (Some("rel=self"), 400),
            (Some("resource="), 400),
            (Some("resource=alice"), 400),
            (Some("resource=acct:alice"), 400),
            (Some("resource=acct:@example.org"), 400),
            (Some("resource=acct:alice@"), 400),
            (Some("resource=%zz"), 400),
            (
                Some("resource=acct:a@example.org&resource=acct:b@example.org"),
                400,
            ),
            (Some("resource=acct:bob@example.org"), 404),
            (Some("resource=acct:alice@elsewhere.org"), 404),
            (Some("resource=https://example.org/alice"), 404),
            (Some("resource=acct:..@example.org"), 404),
        ] {
            assert_eq!(status(q), want, "{q:?}");
        }
    }
}
