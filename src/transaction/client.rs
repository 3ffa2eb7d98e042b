//! Client transactions for requests the server originates (forks to devices).

use std::fmt::Write;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_actors::{OutboundError, Target, TransportKind};
use cpm_sip::Message;
use dashmap::DashMap;
use tokio::sync::oneshot;

use super::due::DueQueues;
use super::{KeyHash, Timers};
use crate::transport::Transports;

pub struct ClientTransactions {
    /// Live transactions by the counter in their branch. A counter key and a
    /// oneshot cost one allocation per request (a String branch key and an
    /// mpsc channel cost four).
    map: DashMap<u64, Pending, KeyHash>,
    /// Their Timers E and F, fired by [`ClientTransactions::run_timers`]
    /// rather than two tokio sleeps per request (each registration of an
    /// earlier deadline also woke the reactor with a write to its eventfd).
    due: Mutex<DueQueues>,
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

/// How often the timers are looked at: Timer E (T1 = 500 ms and up) and
/// Timer F (32 s) fire at most this late.
pub const TIMER_TICK: Duration = Duration::from_millis(20);

/// One live client transaction.
struct Pending {
    /// Where its outcome goes: the final response, or the timeout/transport
    /// error the timers found.
    tx: oneshot::Sender<Result<Message, OutboundError>>,
    target: Target,
    /// Timer E (UDP only): the request as sent and the current interval.
    retransmit: Option<(Bytes, Duration)>,
    /// A provisional response came: Timer E backs off to T2.
    proceeding: bool,
}

/// Removes the transaction entry however the request future ends (even
/// when it is dropped), so the table cannot leak.
struct Entry<'a>(&'a DashMap<u64, Pending, KeyHash>, u64);

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// The counter of one of our branches (`<prefix><lowercase hex>`, as
/// `counter_and_via` writes it), or None for anybody else's.
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
            map: DashMap::with_hasher(KeyHash),
            due: Mutex::new(DueQueues::new(&timers)),
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
    /// (with our Via already removed), or for what the timers decide.
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
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let reliable = target.transport != TransportKind::Udp;
        let first_e = (!reliable).then_some(self.timers.t1);
        let pending = Pending {
            tx,
            target,
            retransmit: first_e.map(|t1| (data.clone(), t1)),
            proceeding: false,
        };
        self.map.insert(n, pending);
        let _entry = Entry(&self.map, n);
        crate::lock(&self.due).start(n, now, first_e);
        self.transports
            .send(target, data)
            .await
            .map_err(|e| OutboundError::Transport(target.addr, e.to_string()))?;
        rx.await.unwrap_or(Err(OutboundError::Shutdown))
    }

    /// Timers E and F of every live transaction, every [`TIMER_TICK`]; runs
    /// for the life of the server.
    pub async fn run_timers(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TIMER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.fire_timers(Instant::now()).await;
        }
    }

    /// Retransmit what is due (Timer E), give up on what is past Timer F.
    /// Entries of transactions already answered are skipped.
    async fn fire_timers(&self, now: Instant) {
        let (e_due, f_due) = crate::lock(&self.due).take_due(now);
        for n in f_due {
            if let Some((_, p)) = self.map.remove(&n) {
                let _ = p.tx.send(Err(OutboundError::Timeout(p.target.addr)));
            }
        }
        let mut resend = Vec::new();
        for n in e_due {
            let Some(mut p) = self.map.get_mut(&n) else { continue };
            let proceeding = p.proceeding;
            let target = p.target;
            let Some((data, interval)) = p.retransmit.as_mut() else {
                continue;
            };
            // RFC 3261 §17.1.2.2: doubling up to T2; T2 once proceeding.
            *interval = if proceeding {
                self.timers.t2
            } else {
                (*interval * 2).min(self.timers.t2)
            };
            resend.push((n, target, data.clone(), *interval));
        }
        {
            let mut due = crate::lock(&self.due);
            for (n, _, _, interval) in &resend {
                due.retransmit_after(*n, now, *interval);
            }
        }
        for (n, target, data, _) in resend {
            if let Err(e) = self.transports.send(target, data).await {
                if let Some((_, p)) = self.map.remove(&n) {
                    let _ = p.tx.send(Err(OutboundError::Transport(target.addr, e.to_string())));
                }
            }
        }
    }

    /// Match a response to its transaction by the branch of its top Via
    /// (ours); stray responses are dropped (a proxy core does not forward
    /// them), and so are retransmitted finals, whose transaction is gone.
    pub fn on_response(&self, mut resp: Message) {
        // Only the branch: the Via itself is not needed (nor built).
        let Some(branch) = resp.top_via_branch().ok().flatten() else {
            tracing::debug!("response without a usable Via dropped");
            return;
        };
        let stray = || tracing::debug!(%branch, "stray response dropped (no transaction)");
        let Some(n) = counter_of(&branch, &self.prefix) else {
            return stray();
        };
        if resp.status().unwrap_or(0) < 200 {
            // Provisional: the transaction goes on, Timer E backs off to T2.
            match self.map.get_mut(&n) {
                Some(mut p) => p.proceeding = true,
                None => stray(),
            }
            return;
        }
        let Some((_, pending)) = self.map.remove(&n) else {
            return stray();
        };
        resp.pop_via();
        // Err: the request future is gone (dropped): nobody to tell.
        let _ = pending.tx.send(Ok(resp));
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

    /// Timer E retransmits over UDP (T1, doubling, T2 once proceeding) and
    /// Timer F ends the transaction with a timeout, both from the sweep.
    #[tokio::test]
    async fn timers_retransmit_then_time_out() {
        use crate::transport::UdpTransport;
        let udp = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), 1, false).unwrap();
        let transports = Arc::new(Transports::new(vec![udp], None, None));
        let txs = Arc::new(ClientTransactions::new(transports, Timers::default()));
        let device = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        device.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let target = Target {
            addr: device.local_addr().unwrap(),
            transport: TransportKind::Udp,
        };
        let raw = "MESSAGE sip:b@x SIP/2.0\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        let req = Message::parse(Bytes::from_static(raw.as_bytes())).unwrap();
        let start = Instant::now();
        let waiting = tokio::spawn({
            let txs = txs.clone();
            async move { txs.request(req, target).await }
        });
        // Let the request run up to its wait for the outcome (one thread here).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let mut buf = [0u8; 2048];
        let got = |buf: &mut [u8]| {
            device
                .recv(buf)
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        let first = got(&mut buf).unwrap();
        assert!(first.starts_with("MESSAGE "));
        let (t1, t2) = (Timers::default().t1, Timers::default().t2);
        txs.fire_timers(start + t1 / 2).await; // not yet due
        let e1 = start + t1 + Duration::from_millis(50);
        txs.fire_timers(e1).await; // Timer E: again, the same bytes
        assert_eq!(got(&mut buf).unwrap(), first);
        // Next due 2·T1 later; a provisional makes the one after that T2.
        txs.fire_timers(e1 + t1).await;
        txs.map.iter_mut().for_each(|mut e| e.value_mut().proceeding = true);
        let e2 = e1 + t1 * 2;
        txs.fire_timers(e2).await;
        assert_eq!(got(&mut buf).unwrap(), first);
        let n = txs.map.iter().next().map(|e| *e.key()).unwrap();
        let at = txs.due.lock().unwrap().next_e(n);
        assert_eq!(at, Some(e2 + t2));
        // Timer F: 64·T1 after the first send.
        txs.fire_timers(start + Timers::default().f() + Duration::from_millis(1))
            .await;
        let outcome = waiting.await.unwrap();
        assert!(
            matches!(outcome, Err(OutboundError::Timeout(a)) if a == target.addr),
            "{outcome:?}"
        );
        assert!(txs.is_empty());
        device.set_nonblocking(true).unwrap();
        assert!(device.recv(&mut buf).is_err(), "nothing sent when nothing was due");
    }

    #[test]
    fn counter_hash_spreads_consecutive_keys() {
        // dashmap 6 picks a shard from these bits (8 shards here).
        let shard = |n: u64| (KeyHash.hash_one(n) << 7) >> 61;
        let shards: std::collections::HashSet<u64> = (0..64).map(shard).collect();
        assert!(shards.len() >= 6, "{shards:?}");
    }
}
