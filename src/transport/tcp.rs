//! TCP: a reader and a writer task per connection. Each connection has its
//! own bounded write queue, so a slow or dead peer fills only its own queue
//! (then its messages are refused and it is disconnected), never anyone else's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cpm_actors::TransportKind;
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Framer, Inbound, Sink, Source, TransportError};

/// Messages queued per connection before the peer counts as congested.
const WRITE_QUEUE: usize = 512;
/// A write that makes no progress for this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TcpHub {
    local: SocketAddr,
    conns: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
    sink: Sink,
}

impl TcpHub {
    pub fn new(local: SocketAddr, sink: Sink) -> Arc<TcpHub> {
        Arc::new(TcpHub {
            local,
            conns: DashMap::new(),
            sink,
        })
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Accept loop; run it on a tokio runtime (the System arbiter).
    pub async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "TCP connection accepted");
                    self.start(stream, peer);
                }
                Err(e) => {
                    tracing::error!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Send on the existing connection to `peer`, or connect first.
    pub async fn send(self: &Arc<Self>, peer: SocketAddr, data: Bytes) -> Result<(), TransportError> {
        let existing = self.conns.get(&peer).map(|c| c.clone());
        let tx = match existing {
            Some(tx) if !tx.is_closed() => tx,
            _ => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
                    .await
                    .map_err(|_| TransportError::Connect(peer, "timeout".into()))?
                    .map_err(|e| TransportError::Connect(peer, e.to_string()))?;
                self.start(stream, peer)
            }
        };
        tx.try_send(data).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                tracing::warn!(%peer, "TCP peer congested; dropping connection");
                self.conns.remove(&peer);
                TransportError::Congested(peer)
            }
            mpsc::error::TrySendError::Closed(_) => TransportError::Connect(peer, "connection closed".into()),
        })
    }

    fn start(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) -> mpsc::Sender<Bytes> {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        self.conns.insert(peer, tx.clone());
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&data)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TCP write failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "TCP write stalled; closing connection");
                        break;
                    }
                }
            }
        });
        let hub = self.clone();
        let own = tx.clone();
        tokio::spawn(async move {
            let source = Source {
                transport: TransportKind::Tcp,
                peer,
                local: hub.local,
            };
            let mut framer = Framer::default();
            let mut buf = vec![0u8; 16 * 1024];
            'conn: loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TCP read failed");
                        break;
                    }
                };
                framer.extend(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(data)) => (hub.sink)(Inbound { data, source }),
                        Ok(None) => break,
                        Err(e) => {
                            // Framing is lost: nothing after this point can be trusted.
                            tracing::warn!(%peer, error = %e, "closing TCP connection");
                            break 'conn;
                        }
                    }
                }
            }
            hub.conns.remove_if(&peer, |_, c| c.same_channel(&own));
            tracing::debug!(%peer, "TCP connection closed");
        });
        tx
    }
}
