//! SIP transports (RFC 3261 §18): UDP datagrams, TCP and TLS byte streams.
//!
//! Transports only move bytes: everything received goes to one [`Sink`]
//! (the ingress dispatcher), everything sent goes through [`Transports`].

mod framing;
mod memory;
mod outbox;
mod stamped;
mod tcp;
mod tls;
mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use cpm_actors::{Target, TransportKind};
use thiserror::Error;

pub use crate::limits::Admit;

pub use framing::{FrameError, Framer, MAX_FRAME};
pub use memory::{MemoryTransport, Peer};
pub use tcp::TcpHub;
pub use tls::{acceptor as tls_acceptor, TlsError};
pub use udp::{UdpTransport, WorkerSink};

/// Where a message came from, so the answer goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub transport: TransportKind,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// One received message (a datagram or one framed TCP message).
#[derive(Debug)]
pub struct Inbound {
    pub data: Bytes,
    pub source: Source,
    /// When the kernel received it (UDP, from SO_TIMESTAMPNS): the ingress
    /// refuses a new request that waited longer than `--max-queue-delay`.
    /// None where there is no such time (TCP, in-process).
    pub arrived: Option<std::time::Instant>,
}

/// Takes each received message; the answer says whether the transport has
/// to send something back itself (a quick 503 when the message was refused
/// by the overload gate, see `crate::limits`).
pub type Sink = Arc<dyn Fn(Inbound) -> Admit + Send + Sync>;

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("no {0} listener configured")]
    NoListener(TransportKind),
    #[error("send to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("connection to {0} is congested (slow peer); message dropped")]
    Congested(SocketAddr),
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    /// We do not open TLS connections: the device must keep the one it registered on.
    #[error("no open {0} connection from {1} (the device must keep the connection it registered on)")]
    NoConnection(TransportKind, SocketAddr),
}

/// All listeners; outbound requests leave from the first one of their kind.
pub struct Transports {
    udp: HashMap<SocketAddr, Arc<UdpTransport>>,
    first_udp: Option<Arc<UdpTransport>>,
    tcp: Option<Arc<TcpHub>>,
    tls: Option<Arc<TcpHub>>,
    memory: Option<Arc<MemoryTransport>>,
}

impl Transports {
    pub fn new(udp: Vec<Arc<UdpTransport>>, tcp: Option<Arc<TcpHub>>, tls: Option<Arc<TcpHub>>) -> Transports {
        Transports {
            first_udp: udp.first().cloned(),
            udp: udp.into_iter().map(|u| (u.local(), u)).collect(),
            tcp,
            tls,
            memory: None,
        }
    }

    fn hub(&self, kind: TransportKind) -> Option<&Arc<TcpHub>> {
        match kind {
            TransportKind::Udp | TransportKind::Memory => None,
            TransportKind::Tcp => self.tcp.as_ref(),
            TransportKind::Tls => self.tls.as_ref(),
        }
    }

    /// Add the in-process transport (`cpm simulate`).
    pub fn with_memory(mut self, memory: Arc<MemoryTransport>) -> Transports {
        self.memory = Some(memory);
        self
    }

    fn memory(&self) -> Result<&Arc<MemoryTransport>, TransportError> {
        (self.memory.as_ref()).ok_or(TransportError::NoListener(TransportKind::Memory))
    }

    /// `host:port` for the Via of requests we originate on `kind`.
    pub fn sent_by(&self, kind: TransportKind) -> Option<SocketAddr> {
        match kind {
            TransportKind::Udp => self.first_udp.as_ref().map(|u| u.local()),
            TransportKind::Memory => self.memory.as_ref().map(|m| m.local()),
            kind => self.hub(kind).map(|t| t.local()),
        }
    }

    /// Answer on the flow a request came in on (RFC 3581 symmetric response).
    pub async fn reply(&self, to: &Source, data: Bytes) -> Result<(), TransportError> {
        match to.transport {
            TransportKind::Udp => {
                // One listener (the usual case) is the answer without a lookup.
                let sock = match self.udp.len() {
                    0 | 1 => self.first_udp.as_ref(),
                    _ => self.udp.get(&to.local).or(self.first_udp.as_ref()),
                };
                let sock = sock.ok_or(TransportError::NoListener(TransportKind::Udp))?;
                sock.send(to.peer, data)
            }
            TransportKind::Memory => self.memory()?.send(to.peer, data),
            TransportKind::Tcp | TransportKind::Tls => {
                self.send(
                    Target {
                        transport: to.transport,
                        addr: to.peer,
                    },
                    data,
                )
                .await
            }
        }
    }

    pub async fn send(&self, target: Target, data: Bytes) -> Result<(), TransportError> {
        match target.transport {
            TransportKind::Udp => {
                let sock = self
                    .first_udp
                    .as_ref()
                    .ok_or(TransportError::NoListener(TransportKind::Udp))?;
                sock.send(target.addr, data)
            }
            TransportKind::Memory => self.memory()?.send(target.addr, data),
            kind => {
                let hub = self.hub(kind).ok_or(TransportError::NoListener(kind))?;
                hub.send(target.addr, data).await
            }
        }
    }
}
