//! The HTTP service: `/healthz` and `/metrics` (Prometheus text format).

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use dots_proxy::Stats;
use tokio::sync::{mpsc, oneshot};

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
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/node", get(node_info))
        .with_state(state)
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
        "Open TCP/TLS connections.",
        one(s.connections as u64),
    );
    out
}
