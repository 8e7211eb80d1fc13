//! SIP over WebSocket (RFC 7118) at `/sip` on the HTTP and HTTPS listeners,
//! and `GET /api/v1/webrtc`: what a browser client needs to know to use it.
//!
//! A WebSocket connection is a flow in the connection table like a TCP one
//! (transport WS or WSS, the client's address, a flow id), so the engine
//! answers and calls the client over it. One SIP message per WebSocket
//! message, text or binary (RFC 7118 §5.1), Content-Length optional. A
//! message of only CR and LF is a keep-alive: a double CRLF is answered with
//! one CRLF (RFC 5626 §4.4.1); WebSocket pings get pongs. When the
//! connection closes, the engine drops the bindings registered over it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, Message as WsMessage};
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use dots_sip::{parse_datagram, TransportKind, MAX_MESSAGE_SIZE};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::http::AppState;
use crate::transport::{Inbound, SharedConnections};

/// The WebSocket subprotocol of SIP (RFC 7118 §4.1).
pub const SUBPROTOCOL: &str = "sip";
/// The path of the SIP WebSocket endpoint.
pub const PATH: &str = "/sip";

/// How long a WebSocket may stay silent (no frame at all) before the node
/// closes it; as for TCP.
const IDLE: Duration = Duration::from_secs(3600);

/// What the `/sip` endpoint hands connections to.
#[derive(Clone)]
pub struct SipWebSocket {
    pub connections: SharedConnections,
    pub inbound: mpsc::Sender<Inbound>,
    /// Shared with TCP and TLS: the size of the connection table.
    pub max_connections: usize,
}

/// Which listener a request came through: set per server as an extension,
/// so that the same router serves `ws:` on HTTP and `wss:` on HTTPS.
#[derive(Debug, Clone, Copy)]
pub struct Secure(pub bool);

/// The answer of `GET /api/v1/webrtc`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WebRtcInfo {
    /// SIP over WebSocket URLs: `ws://…/sip`, and `wss://…/sip` with HTTPS.
    pub ws: Vec<String>,
    /// For `RTCPeerConnection`: the node's STUN server, when it runs one.
    pub ice_servers: Vec<IceServer>,
    /// The SIP domain users register under (`alice@DOMAIN`).
    pub domain: String,
    /// The digest realm.
    pub realm: String,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
}

/// The host part of a URL for a listen address: the advertised name when
/// the address is a wildcard (or when one is given), IPv6 in brackets.
pub fn url_host(addr: SocketAddr, advertise: Option<&str>, fallback: &str) -> String {
    match advertise {
        Some(h) => h.to_string(),
        None if addr.ip().is_unspecified() => fallback.to_string(),
        None => match addr {
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            SocketAddr::V4(v4) => v4.ip().to_string(),
        },
    }
}

/// `GET /api/v1/webrtc`.
pub async fn webrtc_info(State(state): State<AppState>) -> Response {
    let mut resp = axum::Json(state.webrtc.as_ref().clone()).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /sip`: the WebSocket upgrade. Refused with 400 unless the client
/// asks for the `sip` subprotocol (RFC 7118 §4.1), with 503 when the node
/// has no room for another connection.
pub async fn upgrade(
    State(state): State<AppState>,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    secure: Option<Extension<Secure>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return (
                rejection.status(),
                format!(
                    "{}\nThis is the SIP over WebSocket endpoint (RFC 7118): open a WebSocket here with the subprotocol \"{SUBPROTOCOL}\".\n",
                    rejection.body_text()
                ),
            )
                .into_response()
        }
    };
    let Some(sip) = state.sip_ws.clone() else {
        return (StatusCode::NOT_FOUND, "SIP over WebSocket is off\n").into_response();
    };
    let ws = ws.protocols([SUBPROTOCOL]);
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "SIP over WebSocket needs the WebSocket subprotocol \"{SUBPROTOCOL}\" (Sec-WebSocket-Protocol: {SUBPROTOCOL}, RFC 7118 §4.1)\n"
            ),
        )
            .into_response();
    }
    if sip.connections.lock().expect("connection table lock").len() >= sip.max_connections {
        tracing::warn!(
            max_connections = sip.max_connections,
            "WebSocket refused: too many connections"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    }
    let addr = connect_info
        .map(|Extension(ConnectInfo(a))| a)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let transport = if secure.is_some_and(|Extension(Secure(s))| s) {
        TransportKind::Wss
    } else {
        TransportKind::Ws
    };
    ws.max_message_size(MAX_MESSAGE_SIZE)
        .max_frame_size(MAX_MESSAGE_SIZE)
        .on_upgrade(move |socket| serve(socket, transport, addr, sip))
}

/// Carries SIP messages between one WebSocket and the engine until either
/// side closes.
async fn serve(
    mut socket: WebSocket,
    transport: TransportKind,
    addr: SocketAddr,
    sip: SipWebSocket,
) {
    let (tx, mut outgoing) = mpsc::channel::<Vec<u8>>(crate::transport::STREAM_QUEUE);
    let peer = sip
        .connections
        .lock()
        .expect("connection table lock")
        .register(transport, addr, tx);
    tracing::debug!(%peer, "WebSocket connection opened");
    loop {
        tokio::select! {
            received = tokio::time::timeout(IDLE, socket.recv()) => {
                let frame = match received {
                    Ok(Some(Ok(frame))) => frame,
                    Ok(Some(Err(e))) => {
                        tracing::debug!(%peer, error = %e, "WebSocket error; closing");
                        break;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        tracing::debug!(%peer, "WebSocket idle; closing");
                        break;
                    }
                };
                let data = match frame {
                    WsMessage::Text(t) => t.as_str().as_bytes().to_vec(),
                    WsMessage::Binary(b) => b.to_vec(),
                    // Pongs to pings go out by themselves.
                    WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                    WsMessage::Close(_) => break,
                };
                if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    // RFC 5626 §4.4.1: a double-CRLF ping gets a CRLF pong.
                    if data.len() >= 4 && socket.send(WsMessage::text("\r\n")).await.is_err() {
                        break;
                    }
                    continue;
                }
                let msg = parse_datagram(&data);
                if let Err(e) = &msg {
                    tracing::debug!(%peer, error = %e, "unparsable SIP message over WebSocket");
                }
                if sip.inbound.send(Inbound::received(msg, peer)).await.is_err() {
                    break;
                }
            }
            Some(bytes) = outgoing.recv() => {
                let frame = match String::from_utf8(bytes) {
                    Ok(text) => WsMessage::text(text),
                    Err(e) => WsMessage::binary(e.into_bytes()),
                };
                if socket.send(frame).await.is_err() {
                    break;
                }
            }
        }
    }
    sip.connections
        .lock()
        .expect("connection table lock")
        .unregister(peer);
    let _ = sip.inbound.send(Inbound::FlowClosed(peer)).await;
    tracing::debug!(%peer, "WebSocket connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts() {
        let v4: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:8443".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(url_host(v4, None, "x"), "192.0.2.1");
        assert_eq!(url_host(v6, None, "x"), "[2001:db8::1]");
        assert_eq!(url_host(any, None, "node.example"), "node.example");
        assert_eq!(url_host(v4, Some("sip.example"), "x"), "sip.example");
    }

    #[test]
    fn webrtc_info_serialises_as_the_page_reads_it() {
        let info = WebRtcInfo {
            ws: vec!["ws://127.0.0.1:8080/sip".into()],
            ice_servers: vec![IceServer {
                urls: vec!["stun:127.0.0.1:3478".into()],
            }],
            domain: "127.0.0.1".into(),
            realm: "dots".into(),
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "ws": ["ws://127.0.0.1:8080/sip"],
                "ice_servers": [{"urls": ["stun:127.0.0.1:3478"]}],
                "domain": "127.0.0.1",
                "realm": "dots",
            })
        );
    }
}
