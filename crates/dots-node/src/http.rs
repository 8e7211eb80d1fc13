//! The HTTP service: `/healthz`, `/metrics` (Prometheus text format),
//! `/api/v1/node`, SIP over WebSocket at `/sip` and `/api/v1/webrtc` (see
//! [`crate::ws`]), the provider API (`/api/v1/accounts/devices`, see
//! [`crate::provider`]) and names (`/.well-known/did.json`,
//! `/users/<handle>/did.json`, `/.well-known/webfinger`, see [`crate::names`]).
//!
//! The handlers here only carry requests in and answers out; the decisions
//! are plain functions of `provider` and `names`.

use std::fmt::Write;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Router;
use dots_proxy::Stats;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::names::{Names, DID_CONTENT_TYPE, JRD_CONTENT_TYPE};
use crate::provider::{ApiError, Provider, AUTH_SCHEME};

/// Largest request body the API reads.
const MAX_BODY: usize = 16 * 1024;

/// A point-in-time view of the node for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stats: Stats,
    pub aors: usize,
    pub contacts: usize,
    pub server_transactions: usize,
    pub client_transactions: usize,
    pub connections: usize,
    pub accounts: usize,
}

pub type SnapshotRequest = oneshot::Sender<Snapshot>;

/// Who this node is on the overlay (absent when it runs alone).
#[derive(Clone)]
pub struct Identity {
    pub overlay: dots_overlay::Overlay,
    pub did: String,
    pub sip: Vec<String>,
}

#[derive(Clone)]
pub struct AppState {
    pub queries: mpsc::Sender<SnapshotRequest>,
    pub identity: Option<Identity>,
    pub provider: Arc<Provider>,
    pub names: Arc<Names>,
    /// Where `/sip` hands WebSocket connections (absent: `/sip` answers 404).
    pub sip_ws: Option<crate::ws::SipWebSocket>,
    /// What `/api/v1/webrtc` answers.
    pub webrtc: Arc<crate::ws::WebRtcInfo>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/node", get(node_info))
        .route(crate::ws::PATH, get(crate::ws::upgrade))
        .route("/api/v1/webrtc", get(crate::ws::webrtc_info))
        .route(
            "/api/v1/accounts/devices",
            get(list_devices).post(add_device),
        )
        .route("/api/v1/accounts/devices/{name}", delete(revoke_device))
        .route("/.well-known/did.json", get(node_did))
        .route("/users/{handle}/did.json", get(user_did))
        .route("/.well-known/webfinger", get(webfinger))
        .merge(crate::web::router())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// What a signed request signs as its path: the path with the query, if any.
fn signed_path(uri: &Uri) -> &str {
    uri.path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or_else(|| uri.path())
}

fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())
}

fn json_response(status: u16, body: &Value, content_type: &'static str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut text = serde_json::to_string_pretty(body).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    (status, [(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// An API answer: JSON, an error as `{"error": …}`; a 401 names the scheme.
fn api_response(result: Result<(u16, Value), ApiError>) -> Response {
    match result {
        Ok((status, body)) => json_response(status, &body, "application/json"),
        Err(e) => {
            let mut resp = json_response(e.status, &e.body(), "application/json");
            if e.status == 401 {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(AUTH_SCHEME),
                );
            }
            resp
        }
    }
}

/// A names answer, readable from any web page (RFC 7033 §5).
fn names_response(result: Result<Value, ApiError>, content_type: &'static str) -> Response {
    let mut resp = match result {
        Ok(body) => json_response(200, &body, content_type),
        Err(e) => json_response(e.status, &e.body(), "application/json"),
    };
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// `POST /api/v1/accounts/devices`: a new device password.
async fn add_device(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    api_response(
        state
            .provider
            .add_device(authorization(&headers), signed_path(&uri), &body)
            .await,
    )
}

/// `GET /api/v1/accounts/devices`: the signer's devices.
async fn list_devices(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    api_response(
        state
            .provider
            .list_devices(authorization(&headers), signed_path(&uri))
            .await,
    )
}

/// `DELETE /api/v1/accounts/devices/{name}`: revokes a device password.
async fn revoke_device(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    // The name as sent (not %-decoded): a valid one never needs escaping.
    let name = uri.path().rsplit('/').next().unwrap_or("");
    api_response(
        state
            .provider
            .revoke_device(authorization(&headers), signed_path(&uri), name)
            .await,
    )
}

/// `GET /.well-known/did.json`: the node's did:web document.
async fn node_did(State(state): State<AppState>) -> Response {
    names_response(state.names.node_document(), DID_CONTENT_TYPE)
}

/// `GET /users/{handle}/did.json`: a user's did:web document.
async fn user_did(State(state): State<AppState>, Path(handle): Path<String>) -> Response {
    names_response(state.names.user_document(&handle), DID_CONTENT_TYPE)
}

/// `GET /.well-known/webfinger?resource=acct:HANDLE@DOMAIN` (RFC 7033).
async fn webfinger(State(state): State<AppState>, uri: Uri) -> Response {
    names_response(state.names.webfinger(uri.query()), JRD_CONTENT_TYPE)
}

/// `GET /api/v1/node`: the node's overlay identity and addresses.
async fn node_info(State(state): State<AppState>) -> axum::response::Response {
    let Some(id) = &state.identity else {
        return (
            StatusCode::NOT_FOUND,
            "this node runs without the overlay (start it with --p2p)\n",
        )
            .into_response();
    };
    let p2p: Vec<String> = id
        .overlay
        .listen_addrs()
        .await
        .iter()
        .map(|a| a.to_string())
        .collect();
    axum::Json(serde_json::json!({
        "peer_id": id.overlay.peer_id().to_string(),
        "did": id.did,
        "p2p_addrs": p2p,
        "sip": id.sip,
    }))
    .into_response()
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    // Healthy means the engine loop answers, not just that HTTP is up.
    match snapshot(&state.queries).await {
        Some(_) => (StatusCode::OK, "ok\n"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "engine not responding\n"),
    }
}

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    match snapshot(&state.queries).await {
        Some(s) => {
            let mut text = render(&s);
            if let Some(id) = &state.identity {
                text.push_str(&id.overlay.metrics().await.prometheus("dots_overlay"));
            }
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "engine not responding\n").into_response(),
    }
}

async fn snapshot(queries: &mpsc::Sender<SnapshotRequest>) -> Option<Snapshot> {
    let (tx, rx) = oneshot::channel();
    queries.send(tx).await.ok()?;
    tokio::time::timeout(std::time::Duration::from_secs(2), rx)
        .await
        .ok()?
        .ok()
}

/// Renders a snapshot in the Prometheus text exposition format.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    metric(
        "dots_sip_requests_received_total",
        "counter",
        "SIP requests received, by method.",
        s.stats
            .requests_in
            .iter()
            .map(|(m, v)| (format!("{{method=\"{m}\"}}"), *v))
            .collect(),
    );
    metric(
        "dots_sip_responses_sent_total",
        "counter",
        "SIP responses sent or forwarded, by status code.",
        s.stats
            .responses_out
            .iter()
            .map(|(c, v)| (format!("{{code=\"{c}\"}}"), *v))
            .collect(),
    );
    metric(
        "dots_sip_forwarded_requests_total",
        "counter",
        "Requests forwarded downstream (per branch).",
        one(s.stats.forwarded),
    );
    metric(
        "dots_sip_malformed_total",
        "counter",
        "Messages that failed to parse.",
        one(s.stats.malformed),
    );
    metric(
        "dots_sip_transactions_active",
        "gauge",
        "Active SIP transactions.",
        vec![
            ("{kind=\"server\"}".into(), s.server_transactions as u64),
            ("{kind=\"client\"}".into(), s.client_transactions as u64),
        ],
    );
    metric(
        "dots_registrar_registrations_total",
        "counter",
        "Successful REGISTER requests.",
        one(s.stats.registrations),
    );
    metric(
        "dots_registrar_aors",
        "gauge",
        "Addresses of record with at least one binding.",
        one(s.aors as u64),
    );
    metric(
        "dots_registrar_contacts",
        "gauge",
        "Registered contacts.",
        one(s.contacts as u64),
    );
    metric(
        "dots_auth_failures_total",
        "counter",
        "Failed authentications.",
        one(s.stats.auth_failures),
    );
    metric(
        "dots_auth_challenges_total",
        "counter",
        "Authentication challenges sent (401/407).",
        one(s.stats.auth_challenges),
    );
    metric(
        "dots_accounts",
        "gauge",
        "Local user accounts.",
        one(s.accounts as u64),
    );
    metric(
        "dots_transport_connections",
        "gauge",
        "Open TCP, TLS and WebSocket connections.",
        one(s.connections as u64),
    );
    out
}
