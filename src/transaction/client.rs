//! Client transactions for requests the server originates (forks to devices).

use std::fmt::Write;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cpm_actors::{OutboundError, Target, TransportKind};
use cpm_sip::Message;
use dashmap::DashMap;
use tokio::sync::mpsc;

use super::Timers;
use crate::transport::Transports;

pub struct ClientTransactions {
    map: DashMap<String, mpsc::Sender<Message>>,
    transports: Arc<Transports>,
    timers: Timers,
    /// `z9hG4bK<seed>.`: what every branch of ours starts with.
    prefix: String,
    /// `SIP/2.0/<proto> <sent-by>;branch=<prefix>` for each transport we
    /// listen on, written once: the listeners' addresses do not change.
    via_heads: [Option<String>; 4],
    counter: AtomicU64,
    /// Transactions alive at once; beyond, new requests fail at once.
    cap: usize,
}

/// Removes the transaction entry however the request future ends (even
/// when it is dropped), so the table cannot leak.
struct Entry<'a>(&'a DashMap<String, mpsc::Sender<Message>>, String);

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

const KINDS: [TransportKind; 4] = [
    TransportKind::Udp,
    TransportKind::Tcp,
    TransportKind::Tls,
    TransportKind::Memory,
];

/// Where `kind` is in [`KINDS`].
fn slot(kind: TransportKind) -> usize {
    match kind {
        TransportKind::Udp => 0,
        TransportKind::Tcp => 1,
        TransportKind::Tls => 2,
        TransportKind::Memory => 3,
    }
}

impl ClientTransactions {
    pub fn new(transports: Arc<Transports>, timers: Timers) -> ClientTransactions {
        ClientTransactions::with_cap(transports, timers, crate::limits::Limits::CLIENT_TX)
    }

    pub fn with_cap(transports: Arc<Transports>, timers: Timers, cap: usize) -> ClientTransactions {
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let prefix = format!("{}{seed:016x}.", cpm_sip::BRANCH_COOKIE);
        let via_heads = KINDS.map(|kind| {
            let proto = match kind {
                TransportKind::Udp => "UDP",
                TransportKind::Tcp => "TCP",
                TransportKind::Tls => "TLS",
                TransportKind::Memory => "MEMORY",
            };
            let sent_by = transports.sent_by(kind)?;
            Some(format!("SIP/2.0/{proto} {sent_by};branch={prefix}"))
        });
        ClientTransactions {
            map: DashMap::new(),
            transports,
            timers,
            via_heads,
            prefix,
            counter: AtomicU64::new(0),
            cap: cap.max(1),
        }
    }

    /// A new branch and the Via that carries it: `<via head><n>;rport`.
    fn branch_and_via(&self, via_head: &str) -> (String, String) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut via = String::with_capacity(via_head.len() + 16 + ";rport".len());
        via.push_str(via_head);
        let _ = write!(via, "{n:x}");
        let branch = via[via_head.len() - self.prefix.len()..].to_string();
        via.push_str(";rport");
        (branch, via)
    }

    /// Send `req` in a new transaction and wait for its final response
    /// (with our Via already removed).
    pub async fn request(&self, mut req: Message, target: Target) -> Result<Message, OutboundError> {
        let via_head = self.via_heads[slot(target.transport)]
            .as_deref()
            .ok_or_else(|| OutboundError::Transport(target.addr, format!("no {} listener", target.transport)))?;
        if self.map.len() >= self.cap {
            tracing::warn!(cap = self.cap, "client transaction table full; request not sent");
            return Err(OutboundError::Transport(
                target.addr,
                "overloaded: too many client transactions".into(),
            ));
        }
        let (branch, via) = self.branch_and_via(via_head);
        req.headers.push_front("Via", via);
        let data = req.to_bytes();
        let (tx, mut rx) = mpsc::channel(4);
        self.map.insert(branch.clone(), tx);
        let _entry = Entry(&self.map, branch);

        let transport_err = |e: crate::transport::TransportError| OutboundError::Transport(target.addr, e.to_string());
        self.transports
            .send(target, data.clone())
            .await
            .map_err(transport_err)?;

        let timer_f = tokio::time::sleep(self.timers.f());
        tokio::pin!(timer_f);
        let reliable = target.transport != TransportKind::Udp;
        let mut interval = self.timers.t1;
        let mut proceeding = false;
        loop {
            let timer_e = tokio::time::sleep(interval);
            tokio::select! {
                resp = rx.recv() => match resp {
                    Some(resp) if resp.status().unwrap_or(0) >= 200 => return Ok(resp),
                    Some(_) => proceeding = true,
                    None => return Err(OutboundError::Shutdown),
                },
                _ = timer_e, if !reliable => {
                    self.transports.send(target, data.clone()).await.map_err(transport_err)?;
                    interval = if proceeding { self.timers.t2 } else { (interval * 2).min(self.timers.t2) };
                }
                _ = &mut timer_f => return Err(OutboundError::Timeout(target.addr)),
            }
        }
    }

    /// Match a response to its transaction by the branch of its top Via
    /// (ours); stray responses are dropped (a proxy core does not forward them).
    pub fn on_response(&self, mut resp: Message) {
        let via = resp.top_via().ok();
        let Some(branch) = via.as_ref().and_then(|v| v.branch()) else {
            tracing::debug!("response without a usable Via dropped");
            return;
        };
        let Some(tx) = self.map.get(branch).map(|t| t.clone()) else {
            tracing::debug!(%branch, "stray response dropped (no transaction)");
            return;
        };
        resp.pop_via();
        // A full queue means the transaction already has its final response.
        let _ = tx.try_send(resp);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
