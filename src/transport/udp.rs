//! UDP: one socket per worker (SO_REUSEPORT when there are several), each
//! read by its own worker arbiter. A datagram is parsed and routed on the
//! thread that received it: handing each datagram to another thread cost a
//! wake-up per message, more CPU than parsing it (docs/performance.md). The
//! kernel picks the socket by a hash of the 4-tuple, so one peer's datagrams
//! keep landing on the same worker, in order. Sends go out from any thread
//! through a shared handle of the first socket.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use cpm_actors::TransportKind;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::outbox::{send_to, Outbox};
use super::stamped::{self, Clocks};
use super::{Admit, Inbound, Source, TransportError};

/// Takes a datagram received by worker `usize`.
pub type WorkerSink = Arc<dyn Fn(usize, Inbound) -> Admit + Send + Sync>;

/// Requested SO_RCVBUF. The default (~208 KB) overflowed in bursts of a few
/// thousand messages a second, and every drop costs its sender a 500 ms
/// retransmission; the kernel caps this at net.core.rmem_max.
const RECV_BUFFER: usize = 4 << 20;

/// Datagrams read in one go before the worker handles any of them: a flood
/// meets the rate limit and queue bounds (503) at the rate it arrives, not
/// at the rate the worker can handle it.
const READ_BATCH: usize = 256;

pub struct UdpTransport {
    /// Shared by every sending thread; non-blocking (a dup of shard 0).
    sender: UdpSocket,
    /// Sends made by another thread while the workers are busy.
    outbox: Outbox,
    /// Taken by `run`: one socket per worker.
    shards: Mutex<Vec<UdpSocket>>,
    local: SocketAddr,
}

impl UdpTransport {
    /// Bind `shards` sockets (at least one) to `addr`; port 0 picks one port
    /// for all. `stamp`: the kernel records each datagram's receive time
    /// (only what `--max-queue-delay` reads; off, no stamp and no clock read).
    pub fn bind(addr: SocketAddr, shards: usize, stamp: bool) -> std::io::Result<Arc<UdpTransport>> {
        let shards = shards.max(1);
        let mut all = Vec::with_capacity(shards);
        if shards == 1 {
            all.push(socket(addr, false, stamp)?);
        } else {
            // SO_REUSEPORT would let a second server of the same user share
            // the port silently: claim it with a plain bind first, so "address
            // in use" is still reported (and port 0 resolves here).
            let port = UdpSocket::bind(addr)?.local_addr()?;
            for _ in 0..shards {
                all.push(socket(port, true, stamp)?);
            }
        }
        let local = all[0].local_addr()?;
        Ok(Arc::new(UdpTransport {
            sender: all[0].try_clone()?,
            outbox: Outbox::start(all[0].try_clone()?)?,
            shards: Mutex::new(all),
            local,
        }))
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn send(&self, to: SocketAddr, data: Bytes) -> Result<(), TransportError> {
        match self.outbox.offer(to, data) {
            None => Ok(()),
            Some(data) => send_to(&self.sender, to, &data).map_err(|e| TransportError::Io(to, e)),
        }
    }

    /// Start one receive loop per socket, socket `i` on `workers[i]`.
    pub fn run(self: &Arc<Self>, workers: &[ArbiterHandle], sink: WorkerSink) -> std::io::Result<()> {
        let shards = std::mem::take(&mut *crate::lock(&self.shards));
        for (i, sock) in shards.into_iter().enumerate() {
            let worker = i % workers.len().max(1);
            let arbiter = workers
                .get(worker)
                .ok_or_else(|| std::io::Error::other("no worker arbiter for the UDP socket"))?;
            let (me, sink) = (self.clone(), sink.clone());
            arbiter.spawn(async move {
                // Registered with the reactor of the worker that reads it,
                // for reading only: sends go out through `sender`, a dup of
                // the same socket, and on loopback every send frees its
                // buffer at once, which raises EPOLLOUT. With write interest
                // too (tokio's UdpSocket), the worker's next epoll_wait
                // returned at once for it (see also the yield below).
                // SAFETY: a std UdpSocket owns its descriptor and keeps it
                // open and unchanged for as long as it lives, here inside
                // the AsyncFd (the `sender` dup is a descriptor of its own).
                match unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) } {
                    Ok(sock) => me.receive(sock, worker, sink).await,
                    Err(e) => tracing::error!(local = %me.local, error = %e, "UDP socket not usable"),
                }
            });
        }
        Ok(())
    }

    async fn receive(&self, sock: AsyncFd<UdpSocket>, worker: usize, sink: WorkerSink) {
        let mut buf = vec![0u8; 65_535];
        loop {
            let mut ready = match sock.readable().await {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!(local = %self.local, error = %e, "UDP socket failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let mut read = 0;
            // Read once per batch, and only when a datagram carries a stamp.
            let mut clocks: Option<Clocks> = None;
            for _ in 0..READ_BATCH {
                match stamped::recv_from(sock.get_ref(), &mut buf) {
                    Ok((n, peer, stamp)) => {
                        read += 1;
                        // Keep-alive CRLFs (RFC 5626 §3.5.1) carry nothing to parse.
                        if !buf[..n].iter().all(|b| b.is_ascii_whitespace()) {
                            let arrived = stamp.map(|s| clocks.get_or_insert_with(Clocks::now).instant(s));
                            self.received(&buf[..n], peer, arrived, worker, &sink);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Drained: wait for the next datagram.
                        ready.clear_ready();
                        break;
                    }
                    // ICMP port unreachable from an earlier send shows up here on Linux.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => {
                        tracing::error!(local = %self.local, error = %e, "UDP receive failed");
                        break;
                    }
                }
            }
            self.outbox.note_read(read);
            // Let the ingress handle what was read. A read that ended on
            // WouldBlock cleared the readiness, so `readable()` suspends
            // this task anyway; only a full batch needs to yield. (A yield
            // makes the runtime poll epoll once more, with no timeout,
            // before it resumes the task. With that and the EPOLLOUT above
            // gone, evenly paced traffic costs the worker 1.8 epoll_waits
            // per relayed message instead of 3.6; docs/performance.md.)
            if read == READ_BATCH {
                tokio::task::yield_now().await;
            }
        }
    }

    fn received(&self, data: &[u8], peer: SocketAddr, arrived: Option<Instant>, worker: usize, sink: &WorkerSink) {
        let inbound = Inbound {
            data: Bytes::copy_from_slice(data),
            source: Source {
                transport: TransportKind::Udp,
                peer,
                local: self.local,
            },
            arrived,
        };
        // Refused (overload, rate limit): answered from here, never queued.
        if let Admit::Reject(resp) = sink(worker, inbound) {
            let _ = self.send(peer, resp);
        }
    }
}

/// A non-blocking UDP socket with the large receive buffer.
fn socket(addr: SocketAddr, reuse_port: bool, stamp: bool) -> std::io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(%addr, error = %e, "cannot enlarge the UDP receive buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    let sock: UdpSocket = sock.into();
    // Without receive times the queue-delay limit does not apply (logged once per socket).
    if !stamp {
        return Ok(sock);
    }
    if let Err(e) = stamped::enable(&sock) {
        tracing::warn!(%addr, error = %e, "no kernel receive times: --max-queue-delay is not enforced on UDP");
    }
    Ok(sock)
}
