//! Stream transports (TCP, and TLS over TCP): a reader and a writer task per
//! connection. Each connection has its own bounded write queue, so a slow or
//! dead peer fills only its own queue (then its messages are refused and it
//! is disconnected), never anyone else's. TLS differs only in the handshake
//! after accept (bounded by the idle timeout) and in never connecting out.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_actors::TransportKind;
use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::{Admit, FrameError, Framer, Inbound, Sink, Source, TransportError};
use crate::limits::{quick_response, Limits, ShedCounters};

/// Messages queued per connection before the peer counts as congested.
const WRITE_QUEUE: usize = 512;
/// A write that makes no progress for this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the peer's EOF or a framing error, the connection stays writable
/// this long, so answers to what it already sent still reach it.
const LINGER: Duration = Duration::from_secs(2);

/// One listener's connections; TCP or TLS (the same framing and limits).
pub struct TcpHub {
    local: SocketAddr,
    /// Set for a TLS listener: every accepted connection is handshaken first.
    tls: Option<TlsAcceptor>,
    conns: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
    sink: Sink,
    /// Open connections (reader tasks alive), both directions.
    live: Arc<AtomicUsize>,
    max_conns: usize,
    /// No complete message for this long (never one, or one half-sent): closed.
    idle: Duration,
    /// No traffic at all for this long: closed.
    quiet: Duration,
    shed: Arc<ShedCounters>,
    to_tag: String,
}

/// Counts a connection for as long as its reader runs.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TcpHub {
    /// A hub whose connections are TLS when `tls` is set.
    pub fn with_tls(
        local: SocketAddr,
        tls: Option<TlsAcceptor>,
        sink: Sink,
        limits: &Limits,
        shed: Arc<ShedCounters>,
        to_tag: String,
    ) -> Arc<TcpHub> {
        Arc::new(TcpHub {
            local,
            tls,
            conns: DashMap::new(),
            sink,
            live: Arc::new(AtomicUsize::new(0)),
            max_conns: limits.tcp_conns.max(1),
            idle: limits.tcp_idle(),
            quiet: limits.tcp_quiet(),
            shed,
            to_tag,
        })
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn kind(&self) -> TransportKind {
        match self.tls {
            Some(_) => TransportKind::Tls,
            None => TransportKind::Tcp,
        }
    }

    /// Count a connection from accept (a TLS handshake in progress counts
    /// against `max_conns` too) until its reader ends.
    fn count(&self) -> Live {
        self.live.fetch_add(1, Ordering::Relaxed);
        Live(self.live.clone())
    }

    /// Accept loop; run it on a tokio runtime (the System arbiter).
    pub async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) if self.connections() >= self.max_conns => {
                    self.shed.tcp_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, max = self.max_conns, kind = %self.kind(), "too many connections; closed at accept");
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, kind = %self.kind(), "connection accepted");
                    let _ = stream.set_nodelay(true);
                    let live = self.count();
                    match &self.tls {
                        None => {
                            self.start(stream, peer, live, true);
                        }
                        Some(acceptor) => self.handshake(acceptor.clone(), stream, peer, live),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, kind = %self.kind(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The TLS handshake of an accepted connection, on its own task so a
    /// slow one holds up nobody; it must finish within the idle timeout.
    fn handshake(self: &Arc<Self>, acceptor: TlsAcceptor, stream: TcpStream, peer: SocketAddr, live: Live) {
        let hub = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(hub.idle, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    tracing::debug!(%peer, "TLS handshake done");
                    hub.start(tls, peer, live, true);
                }
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed; closed"),
                Err(_) => {
                    hub.shed.tcp_idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, "TLS handshake not finished within the idle timeout; closed");
                }
            }
        });
    }

    /// Send on the existing connection to `peer`, or connect first (TCP
    /// only: a TLS device is reached on the connection it opened).
    pub async fn send(self: &Arc<Self>, peer: SocketAddr, data: Bytes) -> Result<(), TransportError> {
        let existing = self.conns.get(&peer).map(|c| c.clone());
        let tx = match existing {
            Some(tx) if !tx.is_closed() => tx,
            _ if self.tls.is_some() => return Err(TransportError::NoConnection(TransportKind::Tls, peer)),
            _ => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
                    .await
                    .map_err(|_| TransportError::Connect(peer, "timeout".into()))?
                    .map_err(|e| TransportError::Connect(peer, e.to_string()))?;
                let _ = stream.set_nodelay(true);
                let live = self.count();
                self.start(stream, peer, live, false)
            }
        };
        tx.try_send(data).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                tracing::warn!(%peer, kind = %self.kind(), "peer congested; dropping connection");
                self.conns.remove(&peer);
                TransportError::Congested(peer)
            }
            mpsc::error::TrySendError::Closed(_) => TransportError::Connect(peer, "connection closed".into()),
        })
    }

    /// Start the reader and writer of a connection; `accepted` ones must
    /// send a complete message within the idle timeout (ours need not).
    fn start<S>(self: &Arc<Self>, stream: S, peer: SocketAddr, live: Live, accepted: bool) -> mpsc::Sender<Bytes>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        self.conns.insert(peer, tx.clone());
        let kind = self.kind();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                // flush: TLS buffers records until told (a no-op on TCP).
                let write = async {
                    wr.write_all(&data).await?;
                    wr.flush().await
                };
                match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, %kind, error = %e, "write failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, %kind, "write stalled; closing connection");
                        break;
                    }
                }
            }
            // TLS: send close_notify; TCP: FIN.
            let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown()).await;
        });
        let hub = self.clone();
        let own = tx.clone();
        tokio::spawn(async move {
            let _live = live;
            let source = Source {
                transport: kind,
                peer,
                local: hub.local,
            };
            let mut framer = Framer::default();
            let mut buf = vec![0u8; 16 * 1024];
            let opened = Instant::now();
            let (mut got_frame, mut last_byte, mut partial_since) = (!accepted, opened, None::<Instant>);
            let mut linger = false;
            'conn: loop {
                // Slow peers: a message must be complete within `idle` of its
                // first byte (and an accepted connection's first one within
                // `idle` of the accept); a silent connection lasts `quiet`.
                let deadline = match partial_since {
                    Some(t) => t + hub.idle,
                    None if !got_frame => opened + hub.idle,
                    None => last_byte + hub.quiet,
                };
                let read = tokio::time::timeout_at(deadline.into(), rd.read(&mut buf)).await;
                let n = match read {
                    Err(_) => {
                        hub.shed.tcp_idle_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%peer, %kind, pending = framer.pending(), "connection idle without a complete message; closing");
                        break;
                    }
                    Ok(Ok(0)) => {
                        linger = true;
                        break;
                    }
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, %kind, error = %e, "read failed");
                        break;
                    }
                };
                last_byte = Instant::now();
                framer.extend(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(data)) => {
                            got_frame = true;
                            if let Admit::Reject(resp) = (hub.sink)(Inbound {
                                data,
                                source,
                                arrived: None,
                            }) {
                                let _ = own.try_send(resp);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // Framing is lost: nothing after this point can be
                            // trusted. Answer if the header block allows it.
                            tracing::warn!(%peer, %kind, error = %e, "framing lost; closing connection");
                            let (code, reason) = match e {
                                FrameError::TooLarge => (413, "Message Too Large"),
                                FrameError::BadContentLength => (400, "Bad Request (Content-Length)"),
                            };
                            let resp = framer
                                .head()
                                .and_then(|h| quick_response(h, code, reason, None, &hub.to_tag));
                            if let Some(resp) = resp {
                                let _ = own.try_send(resp);
                            }
                            linger = true;
                            break 'conn;
                        }
                    }
                }
                partial_since = match (framer.pending(), partial_since) {
                    (0, _) => None,
                    (_, Some(t)) => Some(t),
                    (_, None) => Some(last_byte),
                };
            }
            drop(rd);
            if linger {
                tokio::time::sleep(LINGER).await;
            }
            hub.conns.remove_if(&peer, |_, c| c.same_channel(&own));
            tracing::debug!(%peer, %kind, "connection closed");
        });
        tx
    }
}
