//! UDP: one blocking receive thread per socket (a datagram is read, copied
//! and handed off in a few µs; no reactor needed), sends from any thread.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use bytes::Bytes;
use cpm_actors::TransportKind;

use super::{Admit, Inbound, Sink, Source, TransportError};

/// Requested SO_RCVBUF (the kernel doubles it for bookkeeping and caps it).
const RECV_BUFFER: usize = 4 << 20;

pub struct UdpTransport {
    socket: UdpSocket,
    local: SocketAddr,
}

impl UdpTransport {
    pub fn bind(addr: SocketAddr) -> std::io::Result<Arc<UdpTransport>> {
        let socket = UdpSocket::bind(addr)?;
        let local = socket.local_addr()?;
        // The default receive buffer (~208 KB) overflows in bursts of a few
        // thousand messages a second, and every drop costs its sender a 500 ms
        // retransmission. Ask for more; the kernel caps it at net.core.rmem_max.
        let sock = socket2::SockRef::from(&socket);
        if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
            tracing::warn!(%local, error = %e, "cannot enlarge the UDP receive buffer");
        }
        tracing::debug!(%local, bytes = sock.recv_buffer_size().unwrap_or(0), "UDP receive buffer");
        Ok(Arc::new(UdpTransport { socket, local }))
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn send(&self, to: SocketAddr, data: &[u8]) -> Result<(), TransportError> {
        self.socket
            .send_to(data, to)
            .map(|_| ())
            .map_err(|e| TransportError::Io(to, e))
    }

    /// Start the receive loop on its own thread.
    pub fn run(self: &Arc<Self>, sink: Sink) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name(format!("udp-{}", self.local))
            .spawn(move || {
                let mut buf = vec![0u8; 65_535];
                loop {
                    match me.socket.recv_from(&mut buf) {
                        // Keep-alive CRLFs (RFC 5626 §3.5.1) carry nothing to parse.
                        Ok((n, _)) if buf[..n].iter().all(|b| b.is_ascii_whitespace()) => {}
                        Ok((n, peer)) => {
                            let inbound = Inbound {
                                data: Bytes::copy_from_slice(&buf[..n]),
                                source: Source {
                                    transport: TransportKind::Udp,
                                    peer,
                                    local: me.local,
                                },
                            };
                            // Refused (overload, rate limit): answered from here, never queued.
                            if let Admit::Reject(resp) = sink(inbound) {
                                let _ = me.socket.send_to(&resp, peer);
                            }
                        }
                        // ICMP port unreachable from an earlier send shows up here on Linux.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                        Err(e) => {
                            tracing::error!(local = %me.local, error = %e, "UDP receive failed");
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                    }
                }
            })?;
        Ok(())
    }
}
