//! The STUN server socket: Binding requests in, answers out (the protocol
//! is in `dots-stun`).

use std::sync::Arc;

use tokio::net::UdpSocket;

/// Answers every STUN Binding request that arrives on `socket`.
pub async fn serve(socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "STUN receive error");
                continue;
            }
        };
        match dots_stun::answer(&buf[..n], from) {
            Some(reply) => {
                if let Err(e) = socket.send_to(&reply, from).await {
                    tracing::debug!(%from, error = %e, "STUN send failed");
                }
            }
            None => tracing::trace!(%from, len = n, "not a STUN request; dropped"),
        }
    }
}
