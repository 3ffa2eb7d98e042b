//! The seam between actors and the SIP transaction layer.

use std::fmt;
use std::net::SocketAddr;

use cpm_sip::Message;
use futures::future::BoxFuture;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TransportKind {
    Udp,
    Tcp,
    /// TLS over TCP (RFC 3261 §26.3.1); the only transport for `sips:`.
    Tls,
    /// In-process byte hand-off (`cpm simulate`): reliable, no socket.
    Memory,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Memory => "memory",
        }
    }

    pub fn parse(s: &str) -> Option<TransportKind> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(TransportKind::Udp),
            "tcp" => Some(TransportKind::Tcp),
            "tls" => Some(TransportKind::Tls),
            "memory" => Some(TransportKind::Memory),
            _ => None,
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub transport: TransportKind,
    pub addr: SocketAddr,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// No final response within Timer F (RFC 3261 §17.1.2.2).
    #[error("no response from {0} (timeout)")]
    Timeout(SocketAddr),
    #[error("transport failure towards {0}: {1}")]
    Transport(SocketAddr, String),
    #[error("server is shutting down")]
    Shutdown,
}

/// Implemented by the transaction layer: send a request in a new client
/// transaction (it adds its own Via) and resolve with the final response.
pub trait Outbound: Send + Sync + 'static {
    fn send_request(&self, request: Message, target: Target) -> BoxFuture<'static, Result<Message, OutboundError>>;
}
