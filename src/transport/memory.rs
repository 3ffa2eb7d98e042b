//! In-process transport (`TransportKind::Memory`) for `cpm simulate`: the
//! simulator injects request bytes straight into the server's [`Sink`] and
//! gets the server's bytes through a callback. Parsing, transactions and
//! the actor graph run exactly as for UDP; only the socket is skipped, so a
//! million virtual devices need no file descriptors. Reliable and ordered
//! (no retransmissions, like TCP).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cpm_actors::TransportKind;

use super::{Admit, Inbound, Sink, Source, TransportError};

/// Receives what the server sends: (the peer address it is meant for, bytes).
pub type Peer = Arc<dyn Fn(SocketAddr, Bytes) + Send + Sync>;

pub struct MemoryTransport {
    local: SocketAddr,
    sink: OnceLock<Sink>,
    peer: OnceLock<Peer>,
}

impl MemoryTransport {
    pub fn new(local: SocketAddr) -> Arc<MemoryTransport> {
        Arc::new(MemoryTransport {
            local,
            sink: OnceLock::new(),
            peer: OnceLock::new(),
        })
    }

    /// The address the server claims for this transport (Via, local domains).
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn bind_sink(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    /// Connect the other side (the virtual devices); only the first call wins.
    pub fn attach(&self, peer: Peer) -> bool {
        self.peer.set(peer).is_ok()
    }

    /// Hand one message from `from` to the server, as a received datagram.
    /// A quick overload answer goes straight back to the peer.
    pub fn inject(&self, from: SocketAddr, data: Bytes) -> Admit {
        let Some(sink) = self.sink.get() else {
            return Admit::Drop;
        };
        let inbound = Inbound {
            data,
            source: Source {
                transport: TransportKind::Memory,
                peer: from,
                local: self.local,
            },
            arrived: None,
        };
        let admit = sink(inbound);
        if let (Admit::Reject(resp), Some(peer)) = (&admit, self.peer.get()) {
            peer(from, resp.clone());
        }
        admit
    }

    pub fn send(&self, to: SocketAddr, data: Bytes) -> Result<(), TransportError> {
        let peer = self
            .peer
            .get()
            .ok_or(TransportError::NoListener(TransportKind::Memory))?;
        peer(to, data);
        Ok(())
    }
}
