//! Batched datagram I/O on the SIP UDP socket: `recvmmsg(2)` and
//! `sendmmsg(2)`, so that a burst of requests costs one system call to take
//! in and one to answer, not one per datagram each way.
//!
//! Both work on a non-blocking socket and never wait: [`RecvBatch::recv`]
//! returns `WouldBlock` when nothing is queued (the caller waits for
//! readiness through the runtime), and [`SendBatch::flush`] drops a datagram
//! the kernel will not take, as a single `sendto` on a full buffer would.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::sys::socket::{
    recvmmsg, sendmmsg, sendto, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Datagrams taken per `recvmmsg` call.
pub const RECV_BATCH: usize = 32;
/// Datagrams given per `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// Receive buffer per datagram: the largest UDP payload fits. The kernel
/// writes only a datagram's own bytes, so the untouched rest of each buffer
/// is address space, not memory.
const MAX_DATAGRAM: usize = 65_536;

/// The kernel's headers for one receive pass over a socket (several
/// [`RecvBatch::recv`] calls). Made per pass, and for one socket: the
/// kernel leaves the last sender's address length in them.
pub struct RecvHeaders(MultiHeaders<SockaddrStorage>);

impl Default for RecvHeaders {
    fn default() -> Self {
        RecvHeaders(MultiHeaders::preallocate(RECV_BATCH, None))
    }
}

/// Buffers for one `recvmmsg` call and what it received.
pub struct RecvBatch {
    data: Vec<u8>,
    received: [Option<(usize, SocketAddr)>; RECV_BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            data: vec![0; MAX_DATAGRAM * RECV_BATCH],
            received: [None; RECV_BATCH],
        }
    }
}

impl RecvBatch {
    /// Takes what is queued on `fd`, up to [`RECV_BATCH`] datagrams, without
    /// waiting. Returns how many; `WouldBlock` if there were none.
    pub fn recv(&mut self, fd: RawFd, headers: &mut RecvHeaders) -> io::Result<usize> {
        self.received = [None; RECV_BATCH];
        let mut buffers = self.data.chunks_mut(MAX_DATAGRAM);
        let mut slices: [[IoSliceMut; 1]; RECV_BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                buffers.next().expect("one buffer per datagram"),
            )]
        });
        let results = recvmmsg(
            fd,
            &mut headers.0,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for (slot, msg) in self.received.iter_mut().zip(results) {
            n += 1;
            // A datagram cut short is larger than any SIP message accepted.
            if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                continue;
            }
            *slot = msg.address.and_then(socket_addr).map(|a| (msg.bytes, a));
        }
        Ok(n)
    }

    /// The `i`th datagram of the last [`RecvBatch::recv`] and its sender;
    /// `None` for one that was cut short or came from an address that is
    /// not IP.
    pub fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let (len, from) = (*self.received.get(i)?)?;
        let start = i * MAX_DATAGRAM;
        Some((&self.data[start..start + len], from))
    }
}

/// Datagrams waiting to be sent together.
#[derive(Default)]
pub struct SendBatch {
    queued: Vec<(SocketAddr, Vec<u8>)>,
}

impl SendBatch {
    pub fn push(&mut self, dest: SocketAddr, bytes: Vec<u8>) {
        self.queued.push((dest, bytes));
    }

    /// Sends everything queued on `fd`, up to [`SEND_BATCH`] datagrams per
    /// call. A datagram the kernel refuses (a full send buffer, an
    /// unreachable destination) is dropped and logged, and the rest still
    /// go out.
    pub fn flush(&mut self, fd: RawFd) {
        match self.queued.len() {
            0 => return,
            // The usual case at low load: a plain sendto, without building
            // the kernel's headers for a batch of one.
            1 => {
                let (dest, bytes) = &self.queued[0];
                if let Err(e) = sendto(
                    fd,
                    bytes,
                    &SockaddrStorage::from(*dest),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    tracing::debug!(%dest, error = %e, "UDP send failed");
                }
            }
            len => {
                let mut headers =
                    MultiHeaders::<SockaddrStorage>::preallocate(len.min(SEND_BATCH), None);
                let no_control: [ControlMessage; 0] = [];
                let mut start = 0;
                while start < len {
                    let chunk = &self.queued[start..len.min(start + SEND_BATCH)];
                    let slices: Vec<[IoSlice; 1]> =
                        chunk.iter().map(|(_, b)| [IoSlice::new(b)]).collect();
                    let addrs: Vec<Option<SockaddrStorage>> = chunk
                        .iter()
                        .map(|(d, _)| Some(SockaddrStorage::from(*d)))
                        .collect();
                    match sendmmsg(
                        fd,
                        &mut headers,
                        slices.iter(),
                        &addrs,
                        no_control,
                        MsgFlags::MSG_DONTWAIT,
                    ) {
                        Ok(sent) => start += sent.count().max(1),
                        Err(e) => {
                            // The datagram at `start` was refused: drop it, go on.
                            tracing::debug!(dest = %self.queued[start].0, error = %e, "UDP send failed");
                            start += 1;
                        }
                    }
                }
            }
        }
        self.queued.clear();
    }
}

fn socket_addr(a: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn pair(v6: bool) -> (std::net::UdpSocket, std::net::UdpSocket) {
        let any = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
        let a = std::net::UdpSocket::bind(any).unwrap();
        let b = std::net::UdpSocket::bind(any).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[test]
    fn a_batch_sent_is_received_whole_with_its_senders() {
        for v6 in [false, true] {
            let (a, b) = pair(v6);
            let to = b.local_addr().unwrap();
            let mut out = SendBatch::default();
            // More than one call's worth each way.
            let n = SEND_BATCH + 7;
            for i in 0..n {
                out.push(to, format!("datagram {i}").into_bytes());
            }
            out.flush(a.as_raw_fd());
            assert!(out.queued.is_empty());

            let mut batch = RecvBatch::default();
            let mut headers = RecvHeaders::default();
            let mut got = Vec::new();
            while let Ok(k) = batch.recv(b.as_raw_fd(), &mut headers) {
                assert!(k <= RECV_BATCH);
                for i in 0..k {
                    let (data, from) = batch.datagram(i).expect("datagram");
                    assert_eq!(from, a.local_addr().unwrap());
                    got.push(String::from_utf8(data.to_vec()).unwrap());
                }
            }
            let want: Vec<String> = (0..n).map(|i| format!("datagram {i}")).collect();
            assert_eq!(got, want);
            assert!(batch.datagram(RECV_BATCH).is_none());
        }
    }

    #[test]
    fn nothing_queued_is_would_block_and_a_refused_datagram_does_not_stop_the_rest() {
        let (a, b) = pair(false);
        let mut batch = RecvBatch::default();
        let mut headers = RecvHeaders::default();
        let e = batch.recv(b.as_raw_fd(), &mut headers).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // An IPv6 destination on an IPv4 socket is refused by the kernel.
        let mut out = SendBatch::default();
        out.push("[::1]:9".parse().unwrap(), b"lost".to_vec());
        out.push(b.local_addr().unwrap(), b"kept".to_vec());
        out.flush(a.as_raw_fd());
        assert_eq!(batch.recv(b.as_raw_fd(), &mut headers).unwrap(), 1);
        assert_eq!(batch.datagram(0).unwrap().0, b"kept");
    }

    #[test]
    fn the_largest_datagram_arrives_whole() {
        let (a, b) = pair(false);
        let big = vec![b'x'; 65_507];
        a.send_to(&big, b.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::default();
        let mut headers = RecvHeaders::default();
        assert_eq!(batch.recv(b.as_raw_fd(), &mut headers).unwrap(), 1);
        assert_eq!(batch.datagram(0).unwrap().0.len(), 65_507);
    }
}
