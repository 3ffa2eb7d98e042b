//! Message trace and event counters for the admin inspector.
//!
//! Every hop and decision on the path of a request (received, authorized,
//! device chosen or skipped and why, forked, delivered, deferred, stored,
//! report suppressed, responded...) is recorded as a [`TraceEvent`] keyed by
//! the request's Call-ID, in a bounded ring buffer: the oldest events are
//! dropped once `capacity` is reached, so memory stays fixed under load.
//! A Call-ID can be linked to a CPIM `imdn.Message-ID` so that a trace can
//! be asked for by either.
//!
//! Under load the ring would turn over in well under a second (a relayed
//! message records about seven events), and recording an event is about
//! 850 instructions: 7 % of the worker's instructions for a relayed
//! message (callgrind, docs/performance.md). So the ring keeps at least `keep` of history:
//! when recording every call would push events out sooner, whole calls
//! are sampled by a hash of their Call-ID, 1 in a power of two, re-chosen
//! every `keep` or every `capacity` events. A call sampled at one level is
//! sampled at every lower one, so a call in flight loses events only when
//! the sampling gets sparser. The counters below count every event.
//!
//! The same calls feed the Prometheus counters: one counter per event kind,
//! requests by method and status, and a latency histogram per method.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Default ring size (events, all calls together).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Largest ring a configuration may ask for: an event with its four
/// strings takes a few hundred bytes, so this is a few hundred MB at most.
pub const MAX_CAPACITY: usize = 1_000_000;

/// Default history the ring keeps before calls are sampled.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(10);

/// Sparsest sampling: 1 call in 2^20.
const MAX_LEVEL: u32 = 20;

/// Upper bounds (seconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One hop or decision.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceEvent {
    /// Increasing across the process: the order events were recorded in.
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub call_id: String,
    /// Who recorded it: `ingress`, `pf:sip:bob@example.com`, `device:<key>`...
    pub actor: String,
    /// What happened: `received`, `authorized`, `device-skipped`, `forked`...
    pub event: String,
    /// Why, or with what (free text).
    pub detail: String,
}

/// One event as the ring keeps it: its four strings packed into one buffer
/// that is reused when the slot is recycled, so a full ring records without
/// allocating (a relayed message records about seven events; four Strings
/// each, allocated here and freed cold when pushed out, were a measurable
/// part of its cost).
struct Slot {
    seq: u64,
    at_ms: u64,
    /// call_id ++ actor ++ event ++ detail.
    text: String,
    call_end: usize,
    actor_end: usize,
    event_end: usize,
}

impl Slot {
    fn call_id(&self) -> &str {
        &self.text[..self.call_end]
    }

    fn actor(&self) -> &str {
        &self.text[self.call_end..self.actor_end]
    }

    fn to_event(&self) -> TraceEvent {
        TraceEvent {
            seq: self.seq,
            at_ms: self.at_ms,
            call_id: self.call_id().to_string(),
            actor: self.actor().to_string(),
            event: self.text[self.actor_end..self.event_end].to_string(),
            detail: self.text[self.event_end..].to_string(),
        }
    }
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Slot>,
    /// Call-ID ↔ imdn.Message-ID links, bounded like the events (the
    /// Strings of a link pushed out are reused for the next one).
    links: VecDeque<(String, String)>,
    next: u64,
    /// Events recorded, by kind (counted under the ring's lock: one lock
    /// per event, not two).
    kinds: KindCounts,
    /// Calls are sampled 1 in 2^level (0: every call).
    level: u32,
    /// Events offered since `window_start` (recorded or not).
    offered: u64,
    window_start: Option<Instant>,
}

impl Ring {
    /// Re-choose the sampling level once `keep` has passed or `capacity`
    /// events were offered since the last choice: as sparse as keeps the
    /// ring's turnover at `keep` or longer at the rate just seen.
    fn adapt(&mut self, now: Instant, capacity: usize, keep: Duration) {
        self.offered += 1;
        self.refresh(now, capacity, keep);
    }

    /// [`Ring::adapt`] without an event: after a quiet spell the level
    /// read (`cpm_trace_sampling`) is the one the next event will meet.
    fn refresh(&mut self, now: Instant, capacity: usize, keep: Duration) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if self.offered < capacity as u64 && elapsed < keep {
            return;
        }
        let elapsed_us = elapsed.as_micros().max(1);
        // Events one `keep` would bring at this rate, per ring's worth.
        let per_keep = u128::from(self.offered).saturating_mul(keep.as_micros()) / elapsed_us;
        let one_in = per_keep.div_ceil(capacity.max(1) as u128).max(1);
        self.level = one_in.next_power_of_two().trailing_zeros().min(MAX_LEVEL);
        self.offered = 0;
        self.window_start = Some(now);
    }

    /// Is `call_id` among the calls recorded at the current level? The
    /// top `level` bits of a mixed hash are zero: true at every lower
    /// level too.
    fn samples(&self, call_id: &str) -> bool {
        if self.level == 0 {
            return true;
        }
        let h = call_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - self.level) == 0
    }
}

/// A count per event kind, keyed by the address of the kind's static name:
/// a pointer comparison per entry instead of string comparisons down a
/// tree. The same name at two addresses (two copies of a literal) gets two
/// entries, which [`KindCounts::by_name`] adds up.
#[derive(Default)]
struct KindCounts(Vec<(&'static str, u64)>);

impl KindCounts {
    fn bump(&mut self, kind: &'static str) {
        match self.0.iter_mut().find(|(k, _)| std::ptr::eq(*k, kind)) {
            Some((_, n)) => *n += 1,
            None => self.0.push((kind, 1)),
        }
    }

    fn by_name(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for (k, n) in &self.0 {
            *out.entry(*k).or_default() += n;
        }
        out
    }
}

/// A new slot's buffer: enough for the usual event.
const SLOT_BYTES: usize = 128;
/// A recycled slot keeps its buffer up to this size.
const MAX_KEPT_SLOT: usize = 1024;

impl Ring {
    /// A slot to fill: the oldest one once the ring holds `capacity`
    /// (its buffer emptied, its capacity kept), else a new one.
    fn take_slot(&mut self, capacity: usize, dropped: &AtomicU64) -> Slot {
        if self.events.len() >= capacity {
            if let Some(mut old) = self.events.pop_front() {
                dropped.fetch_add(1, Ordering::Relaxed);
                old.text.clear();
                // A buffer that one long event (an 8 KiB Call-ID, say) grew
                // is not kept: otherwise every slot would end up as large as
                // the largest event it ever held.
                if old.text.capacity() > MAX_KEPT_SLOT {
                    old.text.shrink_to(SLOT_BYTES);
                }
                return old;
            }
        }
        Slot {
            seq: 0,
            at_ms: 0,
            text: String::with_capacity(SLOT_BYTES),
            call_end: 0,
            actor_end: 0,
            event_end: 0,
        }
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_us: u64,
}

impl Histogram {
    fn observe(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum_us += elapsed.as_micros() as u64;
    }
}

#[derive(Default)]
struct Counters {
    /// method → status → count.
    responses: BTreeMap<String, BTreeMap<u16, u64>>,
    /// method → latency from request received to final response sent.
    latency: BTreeMap<String, Histogram>,
}

/// The process-wide tracer (one per server, in [`crate::Env`]).
pub struct Tracer {
    capacity: usize,
    /// Least history the ring keeps before it samples calls (zero: never samples).
    keep: Duration,
    ring: Mutex<Ring>,
    counters: Mutex<Counters>,
    dropped: AtomicU64,
}

impl Default for Tracer {
    fn default() -> Tracer {
        Tracer::sampled(DEFAULT_CAPACITY, DEFAULT_KEEP)
    }
}

/// A snapshot of the counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct CounterSnapshot {
    pub events: Vec<(String, u64)>,
    pub responses: Vec<(String, u16, u64)>,
    /// method, cumulative bucket counts (same order as [`LATENCY_BUCKETS`]), count, sum in seconds.
    pub latency: Vec<(String, Vec<u64>, u64, f64)>,
    /// Trace events pushed out of the ring by newer ones.
    pub trace_dropped: u64,
    pub trace_len: usize,
    /// The ring records 1 call in this many (1: every call).
    pub trace_sampling: u64,
}

impl Tracer {
    /// `capacity` events are kept (0: none, counters only), of every call.
    pub fn new(capacity: usize) -> Tracer {
        Tracer::sampled(capacity, Duration::ZERO)
    }

    /// `capacity` events are kept, and at least `keep` of history: under
    /// heavier traffic whole calls are sampled (`keep` zero: never).
    pub fn sampled(capacity: usize, keep: Duration) -> Tracer {
        Tracer {
            capacity,
            keep,
            ring: Mutex::new(Ring::default()),
            counters: Mutex::new(Counters::default()),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The ring records 1 call in this many right now (1: every call).
    pub fn sampling(&self) -> u64 {
        self.ring.lock().map_or(1, |mut r| self.level(&mut r, Instant::now()))
    }

    fn level(&self, ring: &mut Ring, now: Instant) -> u64 {
        if !self.keep.is_zero() && self.capacity > 0 {
            ring.refresh(now, self.capacity, self.keep);
        }
        1 << ring.level
    }

    /// Wall-clock time of a recorded event (read only for those: an
    /// unsampled event reads the monotonic clock alone).
    fn unix_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Record one hop or decision of the request `call_id`. The detail is
    /// written only if the call is recorded: pass `format_args!(...)`, not
    /// a `format!`ed String, and an untraced call formats nothing.
    pub fn record(&self, call_id: &str, actor: &str, event: &'static str, detail: impl std::fmt::Display) {
        self.record_with(call_id, actor, event, |out| {
            use std::fmt::Write as _;
            let _ = write!(out, "{detail}");
        });
    }

    /// As [`Tracer::record`], with the detail written by `detail` straight
    /// into the event's buffer (no String of its own on the hot path).
    pub fn record_with(&self, call_id: &str, actor: &str, event: &'static str, detail: impl FnOnce(&mut String)) {
        self.record_at(None, call_id, actor, event, detail);
    }

    /// `now`: the time of the sampling window (tests); `None` reads the
    /// clock, and only when sampling is on and the ring kept.
    fn record_at(
        &self,
        now: Option<Instant>,
        call_id: &str,
        actor: &str,
        event: &'static str,
        detail: impl FnOnce(&mut String),
    ) {
        let Ok(mut ring) = self.ring.lock() else { return };
        ring.kinds.bump(event);
        if self.capacity == 0 {
            return;
        }
        if !self.keep.is_zero() {
            ring.adapt(now.unwrap_or_else(Instant::now), self.capacity, self.keep);
        }
        if !ring.samples(call_id) {
            return;
        }
        let mut slot = ring.take_slot(self.capacity, &self.dropped);
        ring.next += 1;
        slot.seq = ring.next;
        slot.at_ms = Tracer::unix_ms();
        slot.text.push_str(call_id);
        slot.call_end = slot.text.len();
        slot.text.push_str(actor);
        slot.actor_end = slot.text.len();
        slot.text.push_str(event);
        slot.event_end = slot.text.len();
        detail(&mut slot.text);
        ring.events.push_back(slot);
    }

    /// The request `call_id` carries the CPIM message `message_id`.
    pub fn link(&self, call_id: &str, message_id: &str) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut ring) = self.ring.lock() else { return };
        if !ring.samples(call_id) {
            return; // its events are not recorded either
        }
        // Only the newest few are checked: a full scan would cost O(capacity)
        // on every message (it doubled relay CPU); a rare duplicate is harmless.
        if ring
            .links
            .iter()
            .rev()
            .take(8)
            .any(|(c, m)| c == call_id && m == message_id)
        {
            return;
        }
        let (mut c, mut m) = match ring.links.len() >= self.capacity {
            true => ring.links.pop_front().unwrap_or_default(),
            false => Default::default(),
        };
        c.clear();
        c.push_str(call_id);
        m.clear();
        m.push_str(message_id);
        ring.links.push_back((c, m));
    }

    /// A final response went out: counts it and records the event.
    pub fn responded(&self, call_id: &str, method: &str, status: u16, elapsed: Duration) {
        // Keyed by method: a String is made only for the first of each.
        if let Ok(mut c) = self.counters.lock() {
            match c.responses.get_mut(method) {
                Some(by_status) => *by_status.entry(status).or_default() += 1,
                None => {
                    c.responses.insert(method.to_string(), BTreeMap::from([(status, 1)]));
                }
            }
            match c.latency.get_mut(method) {
                Some(h) => h.observe(elapsed),
                None => {
                    let mut h = Histogram::default();
                    h.observe(elapsed);
                    c.latency.insert(method.to_string(), h);
                }
            }
        }
        // `<status> to <method> after <µs> µs`, without the formatter.
        self.record_with(call_id, "ingress", "responded", |what| {
            push_dec(what, status.into());
            what.push_str(" to ");
            what.push_str(method);
            what.push_str(" after ");
            match u64::try_from(elapsed.as_micros()) {
                Ok(us) => push_dec(what, us),
                Err(_) => what.push_str(&elapsed.as_micros().to_string()),
            }
            what.push_str(" µs");
        });
    }

    /// Every recorded event of the request `call_id`, oldest first.
    pub fn by_call_id(&self, call_id: &str) -> Vec<TraceEvent> {
        let Ok(ring) = self.ring.lock() else { return Vec::new() };
        ring.events
            .iter()
            .filter(|e| e.call_id() == call_id)
            .map(Slot::to_event)
            .collect()
    }

    /// Every recorded event of the requests that carried `message_id`
    /// (the original and, when pushed later, its deferred delivery).
    pub fn by_message_id(&self, message_id: &str) -> Vec<TraceEvent> {
        let Ok(ring) = self.ring.lock() else { return Vec::new() };
        let calls: HashSet<&str> = ring
            .links
            .iter()
            .filter(|(_, m)| m == message_id)
            .map(|(c, _)| c.as_str())
            .collect();
        ring.events
            .iter()
            .filter(|e| calls.contains(e.call_id()))
            .map(Slot::to_event)
            .collect()
    }

    /// The message ids linked to `call_id`.
    pub fn message_ids(&self, call_id: &str) -> Vec<String> {
        let Ok(ring) = self.ring.lock() else { return Vec::new() };
        ring.links
            .iter()
            .filter(|(c, _)| c == call_id)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// The `limit` most recent events, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<TraceEvent> {
        let Ok(ring) = self.ring.lock() else { return Vec::new() };
        let skip = ring.events.len().saturating_sub(limit);
        ring.events.iter().skip(skip).map(Slot::to_event).collect()
    }

    /// The most recent events whose actor is `actor`, oldest first.
    pub fn recent_for_actor(&self, actor: &str, limit: usize) -> Vec<TraceEvent> {
        let Ok(ring) = self.ring.lock() else { return Vec::new() };
        let mut out: Vec<TraceEvent> = ring
            .events
            .iter()
            .rev()
            .filter(|e| e.actor() == actor)
            .take(limit)
            .map(Slot::to_event)
            .collect();
        out.reverse();
        out
    }

    pub fn counters(&self) -> CounterSnapshot {
        let mut snap = CounterSnapshot {
            trace_dropped: self.dropped.load(Ordering::Relaxed),
            ..CounterSnapshot::default()
        };
        if let Ok(mut ring) = self.ring.lock() {
            snap.trace_len = ring.events.len();
            snap.trace_sampling = self.level(&mut ring, Instant::now());
            snap.events = ring
                .kinds
                .by_name()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        }
        if let Ok(c) = self.counters.lock() {
            snap.responses = c
                .responses
                .iter()
                .flat_map(|(m, by_status)| by_status.iter().map(move |(s, n)| (m.clone(), *s, *n)))
                .collect();
            snap.latency = c
                .latency
                .iter()
                .map(|(m, h)| (m.clone(), h.buckets.to_vec(), h.count, h.sum_us as f64 / 1e6))
                .collect();
        }
        snap
    }
}

/// Append `n` in decimal, as Display writes it, without the formatter
/// (trace details are written for every event).
pub fn push_dec(out: &mut String, n: u64) {
    push_digits(out, cpm_sip::decimal_bytes(n, &mut [0u8; 20]));
}

/// Append ASCII `digits` one by one: cheaper than the UTF-8 check of a
/// `&str` of them (digits of any base; a non-ASCII byte would be taken as
/// the Latin-1 char of that value, never as invalid text).
pub(crate) fn push_digits(out: &mut String, digits: &[u8]) {
    out.extend(digits.iter().map(|&d| char::from(d)));
}

/// Append `addr` as its Display writes it (`a.b.c.d:port`, `[v6]:port`),
/// an IPv4 one digit by digit: the formatter costs several times more and
/// every received request's trace event names its source.
pub fn push_addr(out: &mut String, addr: std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_dec(out, octet.into());
            }
            out.push(':');
            push_dec(out, a.port().into());
        }
        std::net::SocketAddr::V6(_) => {
            use std::fmt::Write;
            let _ = write!(out, "{addr}");
        }
    }
}

/// The Call-ID of a raw stored request (for events about stored messages).
pub fn call_id_of(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case("Call-ID") || n == "i").then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_counted_by_name_whatever_the_address_of_their_text() {
        let elsewhere: &'static str = Box::leak(String::from("forked").into_boxed_str());
        assert!(!std::ptr::eq(elsewhere, "forked"));
        let t = Tracer::new(0); // counters only
        t.record("c1", "pf", "forked", "");
        t.record("c2", "pf", elsewhere, "");
        t.record("c3", "pf", "delivered", "");
        let events = t.counters().events;
        assert_eq!(events, vec![("delivered".to_string(), 1), ("forked".to_string(), 2)]);
    }

    #[test]
    fn push_dec_writes_what_display_writes() {
        for n in [0, 7, 10, 99, 100, 65535, 1_000_001, u64::MAX] {
            let mut out = String::from("n=");
            push_dec(&mut out, n);
            assert_eq!(out, format!("n={n}"));
        }
    }

    #[test]
    fn push_addr_writes_what_display_writes() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:5060",
            "255.255.255.255:65535",
            "10.20.3.4:9",
            "[::1]:5060",
            "[fe80::1%2]:7",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            let mut out = String::from("x ");
            push_addr(&mut out, addr);
            assert_eq!(out, format!("x {addr}"));
        }
    }

    #[test]
    fn ring_is_bounded_and_searchable() {
        let t = Tracer::new(3);
        t.record("a", "ingress", "received", "x");
        t.link("a", "m1");
        t.record("b", "ingress", "received", "y");
        t.record("a", "pf:bob", "forked", "2 devices");
        assert_eq!(t.by_call_id("a").len(), 2);
        assert_eq!(t.by_message_id("m1").len(), 2);
        t.record("c", "ingress", "received", "z");
        // The oldest event ("a" received) fell out.
        assert_eq!(t.by_call_id("a").len(), 1);
        assert_eq!(t.recent(10).len(), 3);
        let c = t.counters();
        assert_eq!(c.trace_dropped, 1);
        assert!(c.events.contains(&("received".to_string(), 3)));
    }

    #[test]
    fn recycled_slots_carry_only_their_own_event() {
        // Slots (and link Strings) are reused once the ring is full: a long
        // old event must leave nothing behind in a short new one.
        let t = Tracer::new(2);
        t.record(
            "a-long-call-id",
            "pf:sip:someone@example.com",
            "device-skipped",
            "x".repeat(300),
        );
        t.record("b", "ingress", "received", "y");
        t.link("a-long-call-id", "m-long-message-id");
        t.link("b", "m2");
        t.record_with("c", "pf:c", "forked", |out| out.push_str("1 device(s): k"));
        t.link("c", "m3");
        let recent = t.recent(10);
        assert_eq!(recent.len(), 2);
        let c = &recent[1];
        assert_eq!(
            (
                c.call_id.as_str(),
                c.actor.as_str(),
                c.event.as_str(),
                c.detail.as_str()
            ),
            ("c", "pf:c", "forked", "1 device(s): k")
        );
        assert!(c.seq > recent[0].seq);
        assert_eq!(t.by_call_id("a-long-call-id"), vec![]);
        assert_eq!(t.message_ids("c"), vec!["m3".to_string()]);
        assert!(t.message_ids("a-long-call-id").is_empty());
        assert_eq!(t.recent_for_actor("pf:c", 5).len(), 1);
        assert_eq!(t.counters().trace_dropped, 1);
        // The slot the 300-byte event left is reused; one grown past the
        // kept size is shrunk first.
        let t = Tracer::new(1);
        t.record("c", "a", "e", "x".repeat(8 * 1024));
        t.record("c", "a", "e", "y");
        let ring = t.ring.lock().unwrap();
        assert!(ring.events[0].text.capacity() <= MAX_KEPT_SLOT);
    }

    #[test]
    fn under_load_whole_calls_are_sampled_and_every_call_again_once_quiet() {
        // 10,000 events a second into a ring of 1,000 that should keep 1 s:
        // ten times too many, so 1 call in 16 (the next power of two).
        let t = Tracer::sampled(1000, Duration::from_secs(1));
        // Synthetic time only: the test must not depend on how fast it runs.
        let at = std::cell::Cell::new(Instant::now());
        let tick = || {
            at.set(at.get() + Duration::from_micros(100));
            at.get()
        };
        let level = || t.level(&mut t.ring.lock().unwrap(), at.get());
        for i in 0..1000 {
            t.record_at(Some(tick()), &format!("warm-{i}"), "ingress", "received", |_| {});
        }
        assert_eq!(level(), 16);
        let formatted = std::cell::Cell::new(0);
        let mut kept = 0;
        for i in 0..3000 {
            let call = format!("call-{i}");
            for event in ["received", "forked", "responded"] {
                t.record_at(Some(tick()), &call, "ingress", event, |out| {
                    formatted.set(formatted.get() + 1);
                    out.push('x');
                });
            }
            t.link(&call, &format!("m-{i}"));
            let events = t.by_call_id(&call);
            assert!(
                events.len() == 3 || events.is_empty(),
                "{call}: {} events",
                events.len()
            );
            assert_eq!(
                t.message_ids(&call).len(),
                events.len() / 3,
                "{call}: linked iff sampled"
            );
            kept += usize::from(!events.is_empty());
        }
        assert_eq!(level(), 16, "the rate did not change");
        assert!((3000 / 32..3000 / 8).contains(&kept), "{kept} of 3000 calls kept");
        assert_eq!(formatted.get(), 3 * kept, "details are written only for sampled calls");
        assert_eq!(
            t.counters().events,
            vec![
                ("forked".into(), 3000),
                ("received".into(), 4000),
                ("responded".into(), 3000)
            ]
        );
        // Quiet for longer than `keep`: the level read says so before any
        // new event, and the next call is recorded whatever its hash.
        let quiet = at.get() + Duration::from_secs(2);
        assert_eq!(t.level(&mut t.ring.lock().unwrap(), quiet), 1);
        t.record_at(Some(quiet), "after-the-load", "ingress", "received", |_| {});
        assert_eq!(t.sampling(), 1);
        assert_eq!(t.by_call_id("after-the-load").len(), 1);
        assert_eq!(t.counters().trace_sampling, 1);
    }

    #[test]
    fn a_call_sampled_at_one_level_is_sampled_at_every_lower_one() {
        let mut ring = Ring::default();
        for i in 0..2000 {
            let call = format!("c{i}");
            let levels: Vec<bool> = (0..=12)
                .map(|l| {
                    ring.level = l;
                    ring.samples(&call)
                })
                .collect();
            // true up to some level, false from there on.
            assert!(levels.windows(2).all(|w| w[0] || !w[1]), "{call}: {levels:?}");
        }
    }

    #[test]
    fn call_id_of_raw_request() {
        let raw = b"MESSAGE sip:b@x SIP/2.0\r\nCall-ID: abc@h\r\nCSeq: 1 MESSAGE\r\n\r\nCall-ID: no";
        assert_eq!(call_id_of(raw), "abc@h");
        assert_eq!(call_id_of(b"garbage"), "");
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let t = Tracer::new(0);
        t.responded("a", "MESSAGE", 200, Duration::from_millis(3));
        t.responded("b", "MESSAGE", 202, Duration::from_secs(10));
        let c = t.counters();
        let (_, buckets, count, _) = &c.latency[0];
        assert_eq!(*count, 2);
        assert_eq!(buckets[LATENCY_BUCKETS.len() - 1], 1, "10 s is above every bucket");
        assert_eq!(buckets[3], 1, "3 ms is within 5 ms");
        assert_eq!(c.responses.len(), 2);
        assert!(t.recent(10).is_empty(), "capacity 0 keeps no events");
    }
}
