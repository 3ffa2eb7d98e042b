//! Client transactions for requests the server originates (forks to devices).

use std::fmt::Write;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cpm_actors::{OutboundError, Target, TransportKind};
use cpm_sip::Message;
use dashmap::DashMap;
use tokio::sync::oneshot;

use super::Timers;
use crate::transport::Transports;

pub struct ClientTransactions {
    /// Live transactions by the counter in their branch: the sender of the
    /// final response, and whether a provisional one came (Timer E then
    /// backs off to T2). A counter key and a oneshot cost one allocation per
    /// request; a String branch key and an mpsc channel cost four.
    map: DashMap<u64, (oneshot::Sender<Message>, bool), CounterHash>,
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

type Pending = (oneshot::Sender<Message>, bool);

/// Removes the transaction entry however the request future ends (even
/// when it is dropped), so the table cannot leak.
struct Entry<'a>(&'a DashMap<u64, Pending, CounterHash>, u64);

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// Hashes the table's keys, our own counters (never chosen by a peer, so
/// there is nothing to flood): a multiply spreads consecutive ones over
/// the shards, where SipHash cost more than the rest of the lookup.
#[derive(Clone, Default)]
struct CounterHash;

impl BuildHasher for CounterHash {
    type Hasher = CounterHasher;
    fn build_hasher(&self) -> CounterHasher {
        CounterHasher(0)
    }
}

struct CounterHasher(u64);

impl Hasher for CounterHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The counter of one of our branches (`<prefix><lowercase hex>`, as
/// `branch_and_via` writes it), or None for anybody else's.
fn counter_of(branch: &str, prefix: &str) -> Option<u64> {
    let hex = branch.strip_prefix(prefix)?;
    let canonical = !hex.is_empty()
        && hex.len() <= 16
        && (hex == "0" || !hex.starts_with('0'))
        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    canonical.then(|| u64::from_str_radix(hex, 16).ok()).flatten()
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
            map: DashMap::with_hasher(CounterHash),
            transports,
            timers,
            via_heads,
            prefix,
            counter: AtomicU64::new(0),
            cap: cap.max(1),
        }
    }

    /// A new transaction counter and the Via that carries its branch:
    /// `<via head><n in hex>;rport`.
    fn counter_and_via(&self, via_head: &str) -> (u64, String) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut via = String::with_capacity(via_head.len() + 16 + ";rport".len());
        via.push_str(via_head);
        let _ = write!(via, "{n:x}");
        via.push_str(";rport");
        (n, via)
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
        let (n, via) = self.counter_and_via(via_head);
        req.headers.push_front("Via", via);
        let data = req.to_bytes();
        let (tx, mut rx) = oneshot::channel();
        self.map.insert(n, (tx, false));
        let _entry = Entry(&self.map, n);

        let transport_err = |e: crate::transport::TransportError| OutboundError::Transport(target.addr, e.to_string());
        self.transports
            .send(target, data.clone())
            .await
            .map_err(transport_err)?;

        let timer_f = tokio::time::sleep(self.timers.f());
        tokio::pin!(timer_f);
        let reliable = target.transport != TransportKind::Udp;
        let mut interval = self.timers.t1;
        loop {
            let timer_e = tokio::time::sleep(interval);
            tokio::select! {
                resp = &mut rx => return resp.map_err(|_| OutboundError::Shutdown),
                _ = timer_e, if !reliable => {
                    self.transports.send(target, data.clone()).await.map_err(transport_err)?;
                    let proceeding = self.map.get(&n).is_some_and(|e| e.1);
                    interval = if proceeding { self.timers.t2 } else { (interval * 2).min(self.timers.t2) };
                }
                _ = &mut timer_f => return Err(OutboundError::Timeout(target.addr)),
            }
        }
    }

    /// Match a response to its transaction by the branch of its top Via
    /// (ours); stray responses are dropped (a proxy core does not forward
    /// them), and so are retransmitted finals, whose transaction is gone.
    pub fn on_response(&self, mut resp: Message) {
        let via = resp.top_via().ok();
        let Some(branch) = via.as_ref().and_then(|v| v.branch()) else {
            tracing::debug!("response without a usable Via dropped");
            return;
        };
        let Some(n) = counter_of(branch, &self.prefix).filter(|n| self.map.contains_key(n)) else {
            tracing::debug!(%branch, "stray response dropped (no transaction)");
            return;
        };
        if resp.status().unwrap_or(0) < 200 {
            if let Some(mut pending) = self.map.get_mut(&n) {
                pending.1 = true; // proceeding
            }
            return;
        }
        let Some((_, (tx, _))) = self.map.remove(&n) else {
            return;
        };
        resp.pop_via();
        // Err: the request future is gone (dropped): nobody to tell.
        let _ = tx.send(resp);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_canonical_branches_have_a_counter() {
        let prefix = "z9hG4bK00ff.";
        for n in [0u64, 1, 0x1f, u64::MAX] {
            assert_eq!(counter_of(&format!("{prefix}{n:x}"), prefix), Some(n));
        }
        for other in [
            "z9hG4bK00ff.",   // no counter
            "z9hG4bK00ff.01", // a leading zero: not what we write
            "z9hG4bK00ff.+1f",
            "z9hG4bK00ff.1F",
            "z9hG4bK00ff.1g",
            "z9hG4bK00ff.10000000000000000", // 17 digits
            "z9hG4bK00fe.1f",                // another seed
            "z9hG4bKabc",
        ] {
            assert_eq!(counter_of(other, prefix), None, "{other}");
        }
    }

    #[test]
    fn counter_hash_spreads_consecutive_keys() {
        // dashmap 6 picks a shard from these bits (8 shards here).
        let shard = |n: u64| (CounterHash.hash_one(n) << 7) >> 61;
        let shards: std::collections::HashSet<u64> = (0..64).map(shard).collect();
        assert!(shards.len() >= 6, "{shards:?}");
    }
}
