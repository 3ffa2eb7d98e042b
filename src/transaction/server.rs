//! Server transactions keyed per RFC 3261 §17.2.3.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_actors::TransportKind;
use cpm_sip::{Message, Method, Via};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::fifo::ChunkedFifo;
use super::{KeyHash, Timers};
use crate::limits::Limits;
use crate::lock;

/// Branch + sent-by + method (ACK matches its INVITE) for RFC 3261 branches;
/// the RFC 2543 fallback uses Call-ID, CSeq, From tag and the top Via.
/// Kept as a 128-bit keyed digest of those parts rather than their text: no
/// String per request (and none per table entry), and with the keys random
/// per process a peer cannot make two transactions collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerKey(u128);

impl ServerKey {
    pub fn of(req: &Message, via: &Via) -> ServerKey {
        let method = match req.method() {
            Some(Method::Ack) => "INVITE",
            Some(m) => m.as_str(),
            None => "",
        };
        let port = via.port.unwrap_or(5060).to_le_bytes(); // sent-by's default port
        if via.has_rfc3261_branch() {
            let branch = via.branch().unwrap_or_default();
            return ServerKey::digest(&[
                b"3261",
                branch.as_bytes(),
                via.host.as_bytes(),
                &port,
                method.as_bytes(),
            ]);
        }
        let cseq = req.cseq().map(|(n, _)| n).unwrap_or(0).to_le_bytes();
        let from = req.from().ok();
        let from_tag = from.as_ref().and_then(|f| f.tag()).unwrap_or_default();
        ServerKey::digest(&[
            b"2543",
            req.call_id().unwrap_or_default().as_bytes(),
            &cseq,
            method.as_bytes(),
            from_tag.as_bytes(),
            via.host.as_bytes(),
            &port,
            via.branch().unwrap_or_default().as_bytes(),
        ])
    }

    /// A keyed SipHash of the parts, each part length-prefixed so that no
    /// two different lists of parts feed the same bytes. Its 128 bits are
    /// two outputs of the one hasher: after the parts, and after one more
    /// byte (half the work of two hashers, which cost 2 % of the relay).
    fn digest(parts: &[&[u8]]) -> ServerKey {
        static KEY: OnceLock<RandomState> = OnceLock::new();
        let mut h = KEY.get_or_init(RandomState::new).build_hasher();
        for part in parts {
            h.write_usize(part.len());
            h.write(part);
        }
        let low = h.finish();
        h.write_u8(0xff);
        ServerKey(u128::from(h.finish()) << 64 | u128::from(low))
    }
}

enum State {
    /// The TU is working on it; retransmissions are absorbed.
    Trying,
    /// Provisional sent; retransmissions get it again.
    Proceeding(Bytes),
    /// Final sent; kept for Timer J to answer retransmissions.
    Completed(Bytes, Instant),
}

pub enum ServerLookup {
    /// First copy: a transaction now exists; hand it to the TU.
    New,
    /// Retransmission to which nothing is to be sent (TU still working, or
    /// an ACK absorbed by a completed INVITE transaction).
    Absorbed,
    /// Retransmission: resend these bytes.
    Resend(Bytes),
    /// A new transaction, but the table is at its cap: answer 503, keep nothing.
    Full,
}

pub struct ServerTransactions {
    map: DashMap<ServerKey, (State, Instant), KeyHash>,
    /// Keys in the order their transactions began (with that time, or the
    /// completion time once requeued): the sweep pops what may be due
    /// instead of scanning the table, so its work follows what expires.
    order: Mutex<ChunkedFifo<(ServerKey, Instant)>>,
    cap: usize,
    /// When the table was last relieved of old completed transactions.
    relieved: Mutex<Option<Instant>>,
}

/// Under pressure (table at its cap) completed transactions are kept this
/// long instead of Timer J's 32 s, before any new request is refused: they
/// only absorb retransmissions, which stop once the final response arrives
/// (Kamailio keeps them 5 s in every case).
const PRESSURE_RETENTION: Duration = Duration::from_secs(5);

/// A full table is relieved at most this often (it is a scan of the table).
const RELIEF_INTERVAL: Duration = Duration::from_millis(200);

impl Default for ServerTransactions {
    fn default() -> ServerTransactions {
        ServerTransactions::with_cap(Limits::SERVER_TX)
    }
}

impl ServerTransactions {
    /// A table of at most (about) `cap` transactions.
    pub fn with_cap(cap: usize) -> ServerTransactions {
        ServerTransactions {
            // Room for the whole cap, twice where the sweep holds the table
            // under load (half the cap): each growth rehashed a shard into
            // fresh memory on the worker (6-7 ms at 14k, 28k and 57k entries
            // in a 6,000-18,000/s ramp), and a table held near its own
            // limit grows anyway, since the removals of a full hash table
            // leave tombstones that use up its room (at 16,000/s it grew
            // from 114,688 to 229,376 in the first 15 s; docs/performance-log.md,
            // seventh session). Untouched buckets cost no memory. Never
            // more than for the default cap: a configured cap of millions
            // must not be reserved at start.
            map: DashMap::with_capacity_and_hasher(cap.min(Limits::SERVER_TX), KeyHash),
            order: Mutex::new(ChunkedFifo::default()),
            cap: cap.max(1),
            relieved: Mutex::new(None),
        }
    }

    pub fn lookup(&self, key: &ServerKey, is_ack: bool) -> ServerLookup {
        if is_ack {
            // ACK for a non-2xx final answer to an INVITE (§17.2.1): absorbed.
            return ServerLookup::Absorbed;
        }
        // Checked before taking the entry (len() locks every shard).
        if self.map.len() >= self.cap && !self.map.contains_key(key) && !self.relieve() {
            return ServerLookup::Full;
        }
        match self.map.entry(*key) {
            Entry::Vacant(v) => {
                let now = Instant::now();
                v.insert((State::Trying, now));
                lock(&self.order).push_back((*key, now));
                ServerLookup::New
            }
            Entry::Occupied(o) => match &o.get().0 {
                State::Trying => ServerLookup::Absorbed,
                State::Proceeding(b) | State::Completed(b, _) => ServerLookup::Resend(b.clone()),
            },
        }
    }

    /// Record the response the TU sent (the caller puts it on the wire).
    pub fn responded(&self, key: &ServerKey, status: u16, data: Bytes, transport: TransportKind) {
        if status >= 200 && transport != TransportKind::Udp {
            // Timer J is zero on reliable transports.
            self.map.remove(key);
            return;
        }
        if let Some(mut e) = self.map.get_mut(key) {
            e.0 = if status >= 200 {
                State::Completed(data, Instant::now())
            } else {
                State::Proceeding(data)
            };
        }
    }

    /// Timer J for completed transactions; also drops transactions whose TU
    /// never answered within 64·T1 (the client has given up by then).
    /// Above half the cap, the oldest completed ones go early (never before
    /// `PRESSURE_RETENTION`) until the table is back at half the cap: at a
    /// steady high rate the table stays there and the retention follows the
    /// rate, with no burst of removals when it crosses the line, and a busy
    /// server seldom reaches the cap (where `relieve` scans the table on the
    /// request path).
    pub fn sweep(&self, timers: &Timers) -> usize {
        self.sweep_at(Instant::now(), timers)
    }

    fn sweep_at(&self, now: Instant, timers: &Timers) -> usize {
        let (f, half) = (timers.f(), self.cap / 2);
        let early = PRESSURE_RETENTION.min(f);
        let mut len = self.map.len();
        let (mut dropped, mut requeue) = (0, Vec::new());
        loop {
            let min_age = if len > half { early } else { f };
            let next = {
                let mut order = lock(&self.order);
                match order.front() {
                    Some(&(_, t)) if now.duration_since(t) >= min_age => order.pop_front(),
                    _ => None,
                }
            };
            let Some((key, _)) = next else { break };
            let expired = |state: &State, created: Instant| match state {
                State::Completed(_, at) => now.duration_since(*at) >= min_age,
                _ => now.duration_since(created) >= f,
            };
            if self
                .map
                .remove_if(&key, |_, (state, created)| expired(state, *created))
                .is_some()
            {
                dropped += 1;
                len = len.saturating_sub(1);
            } else if let Some(e) = self.map.get(&key) {
                // Not due yet (completed late, or still working): back in
                // line by its completion (or start) time.
                let t = match &e.0 {
                    State::Completed(_, at) => *at,
                    _ => e.1,
                };
                requeue.push((key, t));
            }
        }
        // (A burst's memory goes back as the queue drains: it is chunked.)
        lock(&self.order).extend(requeue);
        dropped
    }

    /// The table is full: drop completed transactions older than
    /// `PRESSURE_RETENTION`. True when that made room.
    fn relieve(&self) -> bool {
        let now = Instant::now();
        {
            let mut last = lock(&self.relieved);
            if last.is_some_and(|t| now.duration_since(t) < RELIEF_INTERVAL) {
                return false;
            }
            *last = Some(now);
        }
        let before = self.map.len();
        self.map.retain(
            |_, (state, _)| !matches!(state, State::Completed(_, at) if now.duration_since(*at) >= PRESSURE_RETENTION),
        );
        // Their keys stay in `order` until the sweep pops them (and finds nothing).
        let freed = before.saturating_sub(self.map.len());
        if freed > 0 {
            tracing::warn!(
                freed,
                cap = self.cap,
                "server transaction table full: completed ones kept 5 s instead of Timer J"
            );
        }
        self.map.len() < self.cap
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

    fn req(branch: &str) -> Message {
        let raw = format!("MESSAGE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h:5070;branch={branch}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n\r\n");
        Message::parse(Bytes::from(raw)).unwrap()
    }

    fn key_of(raw: &str) -> ServerKey {
        let m = Message::parse(Bytes::from(raw.to_string())).unwrap();
        ServerKey::of(&m, &m.top_via().unwrap())
    }

    #[test]
    fn keys_match_what_rfc3261_matches_and_nothing_else() {
        let raw = |method: &str, via: &str, call_id: &str, tag: &str| {
            format!("{method} sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP {via}\r\nFrom: <sip:a@x>;tag={tag}\r\nTo: <sip:b@x>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n\r\n")
        };
        let base = key_of(&raw("MESSAGE", "h:5070;branch=z9hG4bKa", "c", "1"));
        // The same transaction: same branch, sent-by and method; Call-ID and
        // tags do not take part for an RFC 3261 branch; 5060 is the default port.
        assert_eq!(base, key_of(&raw("MESSAGE", "h:5070;branch=z9hG4bKa", "other", "2")));
        assert_eq!(
            key_of(&raw("MESSAGE", "h;branch=z9hG4bKa", "c", "1")),
            key_of(&raw("MESSAGE", "h:5060;branch=z9hG4bKa", "c", "1"))
        );
        assert_eq!(
            key_of(&raw("ACK", "h:5070;branch=z9hG4bKa", "c", "1")),
            key_of(&raw("INVITE", "h:5070;branch=z9hG4bKa", "c", "1"))
        );
        for other in [
            raw("MESSAGE", "h:5070;branch=z9hG4bKb", "c", "1"),
            raw("MESSAGE", "g:5070;branch=z9hG4bKa", "c", "1"),
            raw("MESSAGE", "h:5071;branch=z9hG4bKa", "c", "1"),
            raw("OPTIONS", "h:5070;branch=z9hG4bKa", "c", "1"),
        ] {
            assert_ne!(base, key_of(&other), "{other}");
        }
        // RFC 2543 (no magic cookie): Call-ID, From tag and the Via decide.
        let old = key_of(&raw("MESSAGE", "h:5070;branch=1", "c", "1"));
        assert_eq!(old, key_of(&raw("MESSAGE", "h:5070;branch=1", "c", "1")));
        assert_ne!(old, key_of(&raw("MESSAGE", "h:5070;branch=1", "d", "1")));
        assert_ne!(old, key_of(&raw("MESSAGE", "h:5070;branch=1", "c", "2")));
        assert_ne!(old, key_of(&raw("MESSAGE", "h:5070", "c", "1")));
        // Parts are length-prefixed: moving bytes between them changes the key.
        assert_ne!(ServerKey::digest(&[b"ab", b"c"]), ServerKey::digest(&[b"a", b"bc"]));
    }

    #[test]
    fn retransmission_absorbed_then_answered() {
        let t = ServerTransactions::default();
        let r = req("z9hG4bKa");
        let k = ServerKey::of(&r, &r.top_via().unwrap());
        assert!(matches!(t.lookup(&k, false), ServerLookup::New));
        assert!(matches!(t.lookup(&k, false), ServerLookup::Absorbed));
        t.responded(&k, 200, Bytes::from_static(b"resp"), TransportKind::Udp);
        match t.lookup(&k, false) {
            ServerLookup::Resend(b) => assert_eq!(&b[..], b"resp"),
            _ => panic!("expected resend"),
        }
        let other = req("z9hG4bKb");
        assert!(matches!(
            t.lookup(&ServerKey::of(&other, &other.top_via().unwrap()), false),
            ServerLookup::New
        ));
    }

    #[test]
    fn sweep_applies_timer_j() {
        let t = ServerTransactions::default();
        let r = req("z9hG4bKa");
        let k = ServerKey::of(&r, &r.top_via().unwrap());
        t.lookup(&k, false);
        t.responded(&k, 200, Bytes::new(), TransportKind::Udp);
        let fast = Timers {
            t1: std::time::Duration::ZERO,
            ..Timers::default()
        };
        assert_eq!(t.sweep(&Timers::default()), 0);
        assert_eq!(t.sweep(&fast), 1);
    }

    #[test]
    fn full_table_refuses_new_but_answers_retransmissions() {
        let t = ServerTransactions::with_cap(1);
        let r = req("z9hG4bKa");
        let k = ServerKey::of(&r, &r.top_via().unwrap());
        assert!(matches!(t.lookup(&k, false), ServerLookup::New));
        let other = req("z9hG4bKb");
        let k2 = ServerKey::of(&other, &other.top_via().unwrap());
        assert!(matches!(t.lookup(&k2, false), ServerLookup::Full));
        assert!(matches!(t.lookup(&k, false), ServerLookup::Absorbed));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn full_table_first_drops_completed_transactions_past_five_seconds() {
        let t = ServerTransactions::with_cap(2);
        let keys: Vec<ServerKey> = ["z9hG4bKold", "z9hG4bKrecent", "z9hG4bKnew", "z9hG4bKmore"]
            .iter()
            .map(|b| {
                let r = req(b);
                ServerKey::of(&r, &r.top_via().unwrap())
            })
            .collect();
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(6))
            .expect("uptime above 6 s");
        t.map
            .insert(keys[0], (State::Completed(Bytes::new(), long_ago), long_ago));
        assert!(matches!(t.lookup(&keys[1], false), ServerLookup::New));
        t.responded(&keys[1], 200, Bytes::from_static(b"200"), TransportKind::Udp);
        // Full: the 6 s old completed one goes, the recent one stays.
        assert!(matches!(t.lookup(&keys[2], false), ServerLookup::New));
        assert!(matches!(t.lookup(&keys[1], false), ServerLookup::Resend(_)));
        assert_eq!(t.len(), 2);
        // Nothing old enough left: refused.
        assert!(matches!(t.lookup(&keys[3], false), ServerLookup::Full));
    }

    #[test]
    fn tcp_final_response_ends_transaction() {
        let t = ServerTransactions::default();
        let r = req("z9hG4bKa");
        let k = ServerKey::of(&r, &r.top_via().unwrap());
        t.lookup(&k, false);
        t.responded(&k, 200, Bytes::new(), TransportKind::Tcp);
        assert!(t.is_empty());
    }

    /// Room for the whole default cap from the start (the table is held at
    /// half of it: far from its own limit, no growth and few tombstones),
    /// but not for a configured cap of millions.
    #[test]
    fn table_reserves_its_cap_up_to_the_default() {
        let default = ServerTransactions::default().map.capacity();
        assert!(default >= Limits::SERVER_TX, "{default}");
        let huge = ServerTransactions::with_cap(20_000_000).map.capacity();
        assert!(
            huge < 2 * Limits::SERVER_TX,
            "a configured cap of millions reserved {huge}"
        );
    }

    /// Between two sweeps a table held at half the default cap has room
    /// for 100,000 new requests a second without growing (it grew on the
    /// worker at 16,000/s with a 1 s sweep and room for half the cap).
    #[test]
    fn room_between_sweeps_for_a_high_rate() {
        let room = ServerTransactions::default()
            .map
            .capacity()
            .saturating_sub(Limits::SERVER_TX / 2);
        let per_sweep = 100_000.0 * crate::server::SERVER_TX_SWEEP.as_secs_f64();
        assert!(room as f64 >= per_sweep, "room {room} for {per_sweep} per sweep");
    }

    /// Above half the cap the oldest completed transactions go, only down
    /// to half the cap and never before 5 s; working ones wait for 64·T1.
    #[test]
    fn sweep_under_pressure_drops_oldest_down_to_half_the_cap() {
        let t = ServerTransactions::with_cap(10);
        let t0 = Instant::now();
        let keys: Vec<ServerKey> = (0..9)
            .map(|i| {
                let r = req(&format!("z9hG4bK{i}"));
                let k = ServerKey::of(&r, &r.top_via().unwrap());
                assert!(matches!(t.lookup(&k, false), ServerLookup::New));
                k
            })
            .collect();
        for k in &keys[..8] {
            t.responded(k, 200, Bytes::new(), TransportKind::Udp);
        }
        let timers = Timers::default();
        let s = Duration::from_secs;
        assert_eq!(t.sweep_at(t0 + s(1), &timers), 0, "younger than 5 s");
        assert_eq!(t.sweep_at(t0 + s(6), &timers), 4, "9 -> 5, oldest first");
        for k in &keys[..4] {
            assert!(matches!(t.lookup(k, false), ServerLookup::New), "dropped: new again");
        }
        // 9 again: the other four completed ones go, the working ones stay.
        assert_eq!(t.sweep_at(t0 + s(6), &timers), 4);
        assert_eq!(t.len(), 5);
        assert_eq!(t.sweep_at(t0 + s(7), &timers), 0, "at half the cap");
        assert!(
            matches!(t.lookup(&keys[8], false), ServerLookup::Absorbed),
            "still working"
        );
        assert_eq!(t.sweep_at(t0 + s(40), &timers), 5, "64·T1 for the working ones");
        assert!(t.is_empty());
        assert!(t.order.lock().unwrap().is_empty(), "nothing left in line");
    }
}
