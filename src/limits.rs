//! Flood and overload protection (docs/overload.md).
//!
//! Everything here runs on the receive path, before a message is handed to
//! an ingress actor, and costs no parse: a per-source token bucket, a bound
//! on what is queued towards each ingress (count) and on all of them (bytes),
//! and the quick `503 Service Unavailable` with `Retry-After` the transports
//! send back themselves when a request is refused. Responses are never rate
//! limited (they end our own transactions); they are only dropped when the
//! ingress queues are far beyond their cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// The limits, all settable on `cpm serve` (defaults are the constants).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Requests per second allowed from one source IP (token bucket refill); 0 disables the limit.
    #[arg(long = "rate-limit", value_name = "REQ_PER_S", default_value_t = Limits::RATE)]
    pub rate: u32,
    /// Burst of requests one source IP may send above its rate (bucket size).
    #[arg(long = "rate-burst", value_name = "REQUESTS", default_value_t = Limits::BURST)]
    pub burst: u32,
    /// Sources tracked by the rate limiter; idle ones are evicted first.
    #[arg(long = "rate-sources", value_name = "N", default_value_t = Limits::SOURCES)]
    pub sources: usize,
    /// Messages queued towards one ingress actor before new requests get 503.
    #[arg(long = "max-in-flight", value_name = "N", default_value_t = Limits::IN_FLIGHT)]
    pub in_flight: usize,
    /// Bytes queued towards all ingress actors before new requests get 503.
    #[arg(long = "max-in-flight-bytes", value_name = "BYTES", default_value_t = Limits::IN_FLIGHT_BYTES)]
    pub in_flight_bytes: usize,
    /// Server transactions alive at once; a new request beyond gets 503.
    #[arg(long = "max-server-transactions", value_name = "N", default_value_t = Limits::SERVER_TX)]
    pub server_tx: usize,
    /// Client transactions (requests we send) alive at once; beyond, the send fails.
    #[arg(long = "max-client-transactions", value_name = "N", default_value_t = Limits::CLIENT_TX)]
    pub client_tx: usize,
    /// Concurrent TCP connections (both directions); beyond, accepted connections are closed.
    #[arg(long = "max-tcp-connections", value_name = "N", default_value_t = Limits::TCP_CONNS)]
    pub tcp_conns: usize,
    /// Seconds a TCP connection may go without a complete message while it has
    /// never sent one, or holds part of one; then it is closed.
    #[arg(long = "tcp-idle-timeout", value_name = "SECS", default_value_t = Limits::TCP_IDLE_S)]
    pub tcp_idle_s: u64,
    /// Seconds a TCP connection may stay without any traffic at all (keep-alives count).
    #[arg(long = "tcp-quiet-timeout", value_name = "SECS", default_value_t = Limits::TCP_QUIET_S)]
    pub tcp_quiet_s: u64,
    /// Milliseconds a new UDP request may have waited since the kernel received
    /// it (socket buffer and worker queues) before it is answered 503 instead
    /// of handled; 0 disables the limit.
    #[arg(long = "max-queue-delay", value_name = "MS", default_value_t = Limits::QUEUE_DELAY_MS)]
    pub queue_delay_ms: u64,
    /// Retry-After (seconds) on the 503s of overload shedding.
    #[arg(long = "retry-after", value_name = "SECS", default_value_t = Limits::RETRY_AFTER_S)]
    pub retry_after_s: u32,
}

impl Limits {
    pub const RATE: u32 = 5_000;
    pub const BURST: u32 = 10_000;
    pub const SOURCES: usize = 100_000;
    pub const IN_FLIGHT: usize = 20_000;
    pub const IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;
    pub const SERVER_TX: usize = 200_000;
    pub const CLIENT_TX: usize = 200_000;
    pub const TCP_CONNS: usize = 10_000;
    pub const TCP_IDLE_S: u64 = 30;
    pub const TCP_QUIET_S: u64 = 3_600;
    pub const RETRY_AFTER_S: u32 = 5;
    /// Below the clients' first retransmission (T1, 500 ms): a request
    /// answered later has been sent again already (docs/overload.md).
    pub const QUEUE_DELAY_MS: u64 = 200;

    pub fn tcp_idle(&self) -> Duration {
        Duration::from_secs(self.tcp_idle_s.max(1))
    }

    pub fn tcp_quiet(&self) -> Duration {
        Duration::from_secs(self.tcp_quiet_s.max(1))
    }

    /// The queue-delay limit, None when disabled.
    pub fn queue_delay(&self) -> Option<Duration> {
        (self.queue_delay_ms > 0).then(|| Duration::from_millis(self.queue_delay_ms))
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            rate: Limits::RATE,
            burst: Limits::BURST,
            sources: Limits::SOURCES,
            in_flight: Limits::IN_FLIGHT,
            in_flight_bytes: Limits::IN_FLIGHT_BYTES,
            server_tx: Limits::SERVER_TX,
            client_tx: Limits::CLIENT_TX,
            tcp_conns: Limits::TCP_CONNS,
            tcp_idle_s: Limits::TCP_IDLE_S,
            tcp_quiet_s: Limits::TCP_QUIET_S,
            retry_after_s: Limits::RETRY_AFTER_S,
            queue_delay_ms: Limits::QUEUE_DELAY_MS,
        }
    }
}

/// Counters of what was shed (logged by the sweeper, readable by the admin side).
#[derive(Debug, Default)]
pub struct ShedCounters {
    /// Requests refused by the per-source rate limit.
    pub rate_limited: AtomicU64,
    /// Requests refused because the ingress queues were full.
    pub overloaded: AtomicU64,
    /// Messages dropped without an answer (responses beyond the hard cap,
    /// requests no 503 could be built for).
    pub dropped: AtomicU64,
    /// New server transactions refused (table full).
    pub server_tx_full: AtomicU64,
    /// New requests refused for having waited beyond `--max-queue-delay`.
    pub late: AtomicU64,
    /// TCP connections closed at accept (too many).
    pub tcp_refused: AtomicU64,
    /// TCP connections closed for sending no complete message in time.
    pub tcp_idle_closed: AtomicU64,
}

impl ShedCounters {
    pub fn snapshot(&self) -> [(&'static str, u64); 7] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("rate_limited", g(&self.rate_limited)),
            ("overloaded", g(&self.overloaded)),
            ("dropped", g(&self.dropped)),
            ("server_tx_full", g(&self.server_tx_full)),
            ("late", g(&self.late)),
            ("tcp_refused", g(&self.tcp_refused)),
            ("tcp_idle_closed", g(&self.tcp_idle_closed)),
        ]
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

const SHARDS: usize = 16;

/// Token bucket per source IP. The map is sharded and bounded: a full shard
/// first evicts the sources whose bucket has refilled (idle ones: forgetting
/// them changes nothing), and if that is not enough, is cleared (a flood of
/// spoofed sources then costs the real ones at most a fresh bucket).
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    per_shard: usize,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32, sources: usize) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            per_shard: (sources / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Take one token for `ip`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        let shard = &self.shards[shard_of(&ip)];
        let mut map = crate::lock(shard);
        if !map.contains_key(&ip) && map.len() >= self.per_shard {
            let full_after = Duration::from_secs_f64(self.burst / self.rate);
            map.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            if map.len() >= self.per_shard * 3 / 4 {
                map.clear();
            }
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| crate::lock(s).len()).sum()
    }
}

fn shard_of(ip: &IpAddr) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ip.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

/// What is queued towards the ingress actors: a count per ingress and the
/// bytes of all of them. A [`InFlight`] guard travels with each message and
/// gives its share back when it is dropped (handled, or its mailbox gone).
pub struct Load {
    per_ingress: Vec<Arc<AtomicUsize>>,
    bytes: Arc<AtomicUsize>,
    cap: usize,
    cap_bytes: usize,
}

/// Decision of the receive path for one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Hand it to the ingress.
    Accept,
    /// Send these bytes back on the flow it came in (a 503), do not process it.
    Reject(Bytes),
    /// Nothing to do with it.
    Drop,
}

pub struct InFlight {
    count: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    len: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(self.len, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InFlight({} bytes)", self.len)
    }
}

/// How far beyond the request caps responses are still taken in.
const RESPONSE_HEADROOM: usize = 2;

impl Load {
    pub fn new(ingresses: usize, cap: usize, cap_bytes: usize) -> Load {
        Load {
            per_ingress: (0..ingresses).map(|_| Arc::new(AtomicUsize::new(0))).collect(),
            bytes: Arc::new(AtomicUsize::new(0)),
            cap: cap.max(1),
            cap_bytes: cap_bytes.max(1),
        }
    }

    /// Reserve room for a message of `len` bytes towards ingress `i`; None
    /// when it is over the cap (requests), or over the hard cap (responses).
    pub fn enter(&self, i: usize, len: usize, is_response: bool) -> Option<InFlight> {
        let count = &self.per_ingress[i];
        let factor = if is_response { RESPONSE_HEADROOM } else { 1 };
        if count.load(Ordering::Relaxed) >= self.cap * factor
            || self.bytes.load(Ordering::Relaxed) + len > self.cap_bytes * factor
        {
            return None;
        }
        count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        Some(InFlight {
            count: count.clone(),
            bytes: self.bytes.clone(),
            len,
        })
    }

    /// Messages queued per ingress, and bytes queued in all.
    pub fn queued(&self) -> (Vec<usize>, usize) {
        (
            self.per_ingress.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The receive-path gate: rate limit, then queue caps.
pub struct Gate {
    pub limits: Limits,
    pub rate: RateLimiter,
    pub load: Load,
    pub shed: Arc<ShedCounters>,
    to_tag: String,
}

impl Gate {
    pub fn new(limits: Limits, ingresses: usize, shed: Arc<ShedCounters>, to_tag: String) -> Gate {
        Gate {
            rate: RateLimiter::new(limits.rate, limits.burst, limits.sources),
            load: Load::new(ingresses, limits.in_flight, limits.in_flight_bytes),
            limits,
            shed,
            to_tag,
        }
    }

    /// Decide for one received message towards ingress `i`; on Accept the
    /// guard is to travel with the message.
    pub fn admit(&self, i: usize, data: &[u8], from: IpAddr) -> (Admit, Option<InFlight>) {
        let is_response = data.starts_with(b"SIP/");
        if !is_response && !self.rate.allow(from, Instant::now()) {
            self.shed.rate_limited.fetch_add(1, Ordering::Relaxed);
            return (self.refuse(data, "Rate Limit Exceeded", 1), None);
        }
        match self.load.enter(i, data.len(), is_response) {
            Some(guard) => (Admit::Accept, Some(guard)),
            None if is_response => {
                self.shed.dropped.fetch_add(1, Ordering::Relaxed);
                (Admit::Drop, None)
            }
            None => {
                self.shed.overloaded.fetch_add(1, Ordering::Relaxed);
                (self.refuse(data, "Overloaded", self.limits.retry_after_s), None)
            }
        }
    }

    fn refuse(&self, data: &[u8], reason: &str, retry_after: u32) -> Admit {
        match quick_response(data, 503, reason, Some(retry_after), &self.to_tag) {
            Some(b) => Admit::Reject(b),
            None => {
                self.shed.dropped.fetch_add(1, Ordering::Relaxed);
                Admit::Drop
            }
        }
    }
}

/// A response built from the raw lines of a request without parsing it
/// (RFC 3261 §8.2.6: Via, From, To, Call-ID, CSeq copied; our To-tag added).
/// None when the request lacks what a response needs, or is an ACK (never
/// answered). Only the header block is looked at, at most 16 KiB of it.
pub fn quick_response(data: &[u8], code: u16, reason: &str, retry_after: Option<u32>, to_tag: &str) -> Option<Bytes> {
    let head = &data[..data.len().min(16 * 1024)];
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(head.len());
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    let mut parts = start.split(' ');
    let method = parts.next()?;
    if method.eq_ignore_ascii_case("ACK") || start.split(' ').count() != 3 || !start.ends_with("SIP/2.0") {
        return None;
    }
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    let mut seen = [false; 5];
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.chars().any(|c| c.is_control()) {
            return None;
        }
        let (i, canonical) = match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => (0, "Via"),
            "from" | "f" => (1, "From"),
            "to" | "t" => (2, "To"),
            "call-id" | "i" => (3, "Call-ID"),
            "cseq" => (4, "CSeq"),
            _ => continue,
        };
        if i != 0 && seen[i] {
            return None;
        }
        seen[i] = true;
        if i == 2 && !value.contains(";tag=") {
            out.push_str(&format!("To: {value};tag={to_tag}\r\n"));
        } else {
            out.push_str(&format!("{canonical}: {value}\r\n"));
        }
    }
    if seen.iter().any(|s| !s) {
        return None;
    }
    if let Some(s) = retry_after {
        out.push_str(&format!("Retry-After: {s}\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bK1\r\nf: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn bucket_allows_burst_then_refills() {
        let r = RateLimiter::new(10, 5, 100);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t0 = Instant::now();
        assert!((0..5).all(|_| r.allow(ip, t0)));
        assert!(!r.allow(ip, t0));
        assert!(r.allow(ip, t0 + Duration::from_millis(150)));
        let other: IpAddr = [10, 0, 0, 2].into();
        assert!(r.allow(other, t0));
        assert!(RateLimiter::new(0, 0, 1).allow(ip, t0));
    }

    #[test]
    fn source_map_stays_bounded() {
        let r = RateLimiter::new(10, 5, 64);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            r.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(r.tracked() <= 64 + SHARDS, "{}", r.tracked());
    }

    #[test]
    fn load_caps_requests_and_releases() {
        let l = Load::new(2, 2, 1000);
        let a = l.enter(0, 10, false).unwrap();
        let _b = l.enter(0, 10, false).unwrap();
        assert!(l.enter(0, 10, false).is_none());
        assert!(l.enter(0, 10, true).is_some(), "responses get headroom");
        let _c = l.enter(1, 10, false).expect("other ingress unaffected");
        assert!(l.enter(1, 2000, false).is_none(), "byte cap");
        drop(a);
        let _d = l.enter(0, 10, false).unwrap();
        assert_eq!(l.queued(), (vec![2, 1], 30));
    }

    #[test]
    fn quick_503_parses_and_keeps_the_transaction_headers() {
        let b = quick_response(REQ, 503, "Overloaded", Some(5), "t").unwrap();
        let m = cpm_sip::Message::parse(b).unwrap();
        assert_eq!(m.status(), Some(503));
        assert_eq!(m.to().unwrap().tag(), Some("t"));
        assert_eq!(m.call_id().unwrap(), "c");
        assert_eq!(m.header("Retry-After"), Some("5"));
        assert!(quick_response(b"ACK sip:x SIP/2.0\r\n\r\n", 503, "x", None, "t").is_none());
        assert!(quick_response(b"garbage", 503, "x", None, "t").is_none());
        assert!(quick_response(&[0xff; 100], 503, "x", None, "t").is_none());
    }

    #[test]
    fn gate_refuses_over_rate_but_never_responses() {
        let limits = Limits {
            rate: 1,
            burst: 1,
            ..Limits::default()
        };
        let g = Gate::new(limits, 1, Arc::default(), "t".into());
        let ip: IpAddr = [127, 0, 0, 1].into();
        let (a, guard) = g.admit(0, REQ, ip);
        assert_eq!(a, Admit::Accept);
        assert!(guard.is_some());
        assert!(matches!(g.admit(0, REQ, ip).0, Admit::Reject(_)));
        assert_eq!(g.admit(0, b"SIP/2.0 200 OK\r\n\r\n", ip).0, Admit::Accept);
        assert_eq!(g.shed.rate_limited.load(Ordering::Relaxed), 1);
    }
}
