//! Sockets: the SIP UDP socket and what a datagram is for the engine (the
//! batched I/O itself is in [`crate::udp`]), TCP/TLS connections, and the connection
//! table that lets the engine answer or call back over the connection a
//! client opened (RFC 3261 §18.2.2, connection reuse). WebSocket
//! connections (see [`crate::ws`]) are in the same table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dots_sip::{
    parse_datagram, parse_stream, Message, ParseError, ParseErrorKind, Peer, TransportKind,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the sockets hand to the engine loop.
// Nearly every value is the large variant, so boxing it would only add an
// allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    /// A response, or bytes that did not parse, from this peer.
    Message(Result<Message, ParseError>, Peer),
    /// A request, already stamped with where it came from
    /// ([`dots_proxy::stamp_received`]), and where its responses go.
    Request(Box<dots_sip::Request>, Peer),
    /// A connection to this peer could not be opened.
    Unreachable(Peer),
    /// The answer to an engine lookup (token, record found).
    Lookup(u64, Option<dots_proxy::RemotePresence>),
    /// A presence record learned from the overlay (subject, record).
    Presence(String, dots_proxy::RemotePresence),
    /// A connection closed (reported for WebSocket connections, whose
    /// bindings end with them).
    FlowClosed(Peer),
}

impl Inbound {
    /// What the engine gets for a message received from `peer`: requests are
    /// stamped here, on the receiving task, not on the engine's.
    pub fn received(msg: Result<Message, ParseError>, peer: Peer) -> Inbound {
        match msg {
            Ok(Message::Request(mut req)) => {
                let reply_to = dots_proxy::stamp_received(&mut req, peer);
                Inbound::Request(Box::new(req), reply_to)
            }
            other => Inbound::Message(other, peer),
        }
    }
}

/// Live stream connections, by flow id and by (transport, remote address).
pub struct Connections {
    by_flow: HashMap<u64, (Peer, mpsc::Sender<Vec<u8>>)>,
    by_addr: HashMap<(TransportKind, SocketAddr), u64>,
    next_flow: AtomicU64,
}

pub type SharedConnections = Arc<Mutex<Connections>>;

impl Default for Connections {
    fn default() -> Self {
        // Flow ids are persisted with registrations: start past any id a
        // previous run could have handed out, so a stale id never names a
        // new, unrelated connection.
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            << 16;
        Connections {
            by_flow: HashMap::new(),
            by_addr: HashMap::new(),
            next_flow: AtomicU64::new(base),
        }
    }
}

impl Connections {
    pub fn len(&self) -> usize {
        self.by_flow.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_flow.is_empty()
    }

    pub(crate) fn register(
        &mut self,
        transport: TransportKind,
        addr: SocketAddr,
        tx: mpsc::Sender<Vec<u8>>,
    ) -> Peer {
        let flow = self.next_flow.fetch_add(1, Ordering::Relaxed) + 1;
        let peer = Peer {
            transport,
            addr,
            flow: Some(flow),
        };
        self.by_flow.insert(flow, (peer, tx));
        self.by_addr.insert((transport, addr), flow);
        peer
    }

    pub(crate) fn unregister(&mut self, peer: Peer) {
        if let Some(flow) = peer.flow {
            self.by_flow.remove(&flow);
            if self.by_addr.get(&(peer.transport, peer.addr)) == Some(&flow) {
                self.by_addr.remove(&(peer.transport, peer.addr));
            }
        }
    }

    /// The sender for `dest`: its own flow if still open, else any
    /// connection to the same address and transport.
    pub fn sender_for(&self, dest: &Peer) -> Option<mpsc::Sender<Vec<u8>>> {
        if let Some((_, tx)) = dest.flow.and_then(|f| self.by_flow.get(&f)) {
            return Some(tx.clone());
        }
        let flow = self.by_addr.get(&(dest.transport, dest.addr))?;
        self.by_flow.get(flow).map(|(_, tx)| tx.clone())
    }
}

/// Receive buffer asked for on the SIP UDP socket. A burst of datagrams that
/// arrives while the engine is busy waits here instead of being dropped by
/// the kernel (Linux's default is 208 KiB; it grants up to `net.core.rmem_max`).
pub const UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// Binds the SIP UDP socket, non-blocking, with a large receive buffer;
/// returns it and the receive buffer size the kernel granted.
///
/// The engine loop both receives and sends on it, in batches (see
/// [`crate::udp`]).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<(std::net::UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::warn!(error = %e, "could not enlarge the UDP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    Ok((socket.into(), granted))
}

/// What a datagram received from `from` is for the engine: nothing for a
/// keep-alive (CRLFs) or a STUN Binding request on the SIP port (the UDP
/// keep-alive of RFC 5626 §4.4.2, answered here through `replies`), else
/// the parsed message, requests already stamped.
pub fn udp_inbound(
    data: &[u8],
    from: SocketAddr,
    replies: &mut crate::udp::SendBatch,
) -> Option<Inbound> {
    if data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return None;
    }
    if dots_stun::looks_like_stun(data) {
        if let Some(reply) = dots_stun::answer(data, from) {
            replies.push(from, reply);
        }
        return None;
    }
    Some(Inbound::received(
        parse_datagram(data),
        Peer::new(TransportKind::Udp, from),
    ))
}

/// Accepts TCP (or, with an acceptor, TLS) connections.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connections: SharedConnections,
    inbound: mpsc::Sender<Inbound>,
    max_connections: usize,
) {
    let transport = if tls.is_some() {
        TransportKind::Tls
    } else {
        TransportKind::Tcp
    };
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, %transport, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if connections.lock().expect("connection table lock").len() >= max_connections {
            tracing::warn!(%addr, max_connections, "connection refused: too many connections");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let connections = connections.clone();
        let inbound = inbound.clone();
        match &tls {
            None => {
                tokio::spawn(serve_stream(stream, transport, addr, connections, inbound));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls_stream)) => {
                            serve_stream(tls_stream, transport, addr, connections, inbound).await
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Messages waiting to be written to one stream connection. The engine never
/// waits for a connection, so a full queue drops the message, and over a stream
/// nothing retransmits it: the queue must absorb the bursts of a busy connection
/// while its writer is not scheduled (256 lost about one REGISTER answer in
/// 50,000 at 10,000/s on one TCP connection). A connection is not read from
/// while its queue is more than half full; by then at most [`INBOUND_QUEUE`]
/// of its requests wait for the engine, plus the batch the engine is on, so
/// four times that never fills with the answers to a peer's own requests,
/// however slowly it reads them. ~0.5 KiB per message: 16 MiB for a
/// connection at most, reached only by a peer that does not keep up.
pub const STREAM_QUEUE: usize = 4 * INBOUND_QUEUE;

/// How long a connection may stay with its write queue more than half full
/// (its peer reading nothing) before it is closed.
const STALLED_PEER: Duration = Duration::from_secs(30);

/// Messages (and other events) received and waiting for the engine.
pub const INBOUND_QUEUE: usize = 8192;

/// Opens a TCP connection to `dest` and sends `bytes` on it; reports the
/// peer unreachable if that fails.
pub async fn connect_and_send(
    dest: Peer,
    bytes: Vec<u8>,
    connections: SharedConnections,
    inbound: mpsc::Sender<Inbound>,
) {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(dest.addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            let _ = tx.try_send(bytes);
            let peer = connections.lock().expect("connection table lock").register(
                dest.transport,
                dest.addr,
                tx,
            );
            run_stream(stream, peer, rx, connections, inbound).await;
        }
        _ => {
            tracing::debug!(%dest, "could not connect");
            let _ = inbound.send(Inbound::Unreachable(dest)).await;
        }
    }
}

async fn serve_stream<S>(
    stream: S,
    transport: TransportKind,
    addr: SocketAddr,
    connections: SharedConnections,
    inbound: mpsc::Sender<Inbound>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let peer = connections
        .lock()
        .expect("connection table lock")
        .register(transport, addr, tx);
    tracing::debug!(%peer, "connection opened");
    run_stream(stream, peer, rx, connections, inbound).await;
}

/// Reads framed messages until the peer closes, idles out or sends
/// something unparsable (a stream cannot resynchronise after that).
async fn run_stream<S>(
    stream: S,
    peer: Peer,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    connections: SharedConnections,
    inbound: mpsc::Sender<Inbound>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write_task = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let idle = Duration::from_secs(3600);
    let own_queue = connections
        .lock()
        .expect("connection table lock")
        .sender_for(&peer);
    'read: loop {
        match tokio::time::timeout(idle, reader.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
        loop {
            match parse_stream(&buf) {
                Ok((msg, used)) => {
                    buf.drain(..used);
                    // Back-pressure: a peer that does not read its answers fast
                    // enough is not served until its write queue has drained
                    // to half, rather than having answers dropped when the
                    // queue is full (over a stream nothing retransmits them).
                    // (Polled: a pending `reserve_many` would take every
                    // freed slot for itself and leave the engine's sends
                    // finding the queue full.)
                    // A peer that reads nothing for STALLED_PEER is closed, so
                    // that it cannot hold its queue's memory for ever.
                    if let Some(queue) = own_queue
                        .as_ref()
                        .filter(|q| q.capacity() < STREAM_QUEUE / 2)
                    {
                        let since = tokio::time::Instant::now();
                        while queue.capacity() < STREAM_QUEUE / 2 {
                            if queue.is_closed() {
                                break 'read;
                            }
                            if since.elapsed() > STALLED_PEER {
                                tracing::warn!(%peer, "peer has not read its answers for {} s; closing the connection", STALLED_PEER.as_secs());
                                break 'read;
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    if inbound
                        .send(Inbound::received(Ok(msg), peer))
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Err(e) if e.kind == ParseErrorKind::Incomplete => {
                    // RFC 5626 §3.5.1: a double-CRLF ping gets a CRLF pong.
                    let crlf = dots_sip::parse::leading_crlf_len(&buf);
                    if crlf == buf.len() && crlf >= 4 {
                        buf.clear();
                        if let Some(tx) = connections
                            .lock()
                            .expect("connection table lock")
                            .sender_for(&peer)
                        {
                            let _ = tx.try_send(b"\r\n".to_vec());
                        }
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "unparsable data on stream; closing");
                    let _ = inbound.send(Inbound::Message(Err(e), peer)).await;
                    // Give the engine a moment to answer 400 before closing.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break 'read;
                }
            }
        }
    }
    connections
        .lock()
        .expect("connection table lock")
        .unregister(peer);
    write_task.abort();
    tracing::debug!(%peer, "connection closed");
}

/// Queues one datagram on `udp` (sent at its next flush) or bytes on a
/// stream connection.
pub fn dispatch(
    udp: &mut crate::udp::SendBatch,
    connections: &SharedConnections,
    inbound: &mpsc::Sender<Inbound>,
    dest: Peer,
    bytes: Vec<u8>,
) {
    match dest.transport {
        TransportKind::Udp => {
            udp.push(dest.addr, bytes);
        }
        TransportKind::Tcp | TransportKind::Tls | TransportKind::Ws | TransportKind::Wss => {
            let sender = connections
                .lock()
                .expect("connection table lock")
                .sender_for(&dest);
            match sender {
                Some(tx) => match tx.try_send(bytes) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(%dest, "connection write queue full; message dropped");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        tracing::debug!(%dest, "connection closed; message dropped");
                    }
                },
                None if dest.transport == TransportKind::Tcp => {
                    tokio::spawn(connect_and_send(
                        dest,
                        bytes,
                        connections.clone(),
                        inbound.clone(),
                    ));
                }
                None => {
                    tracing::debug!(%dest, "no connection to peer and cannot open one for this transport");
                    let inbound = inbound.clone();
                    tokio::spawn(async move {
                        let _ = inbound.send(Inbound::Unreachable(dest)).await;
                    });
                }
            }
        }
    }
}
