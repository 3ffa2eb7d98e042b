//! RFC 3261 §17 non-INVITE transactions, ours to write (rsip only parses).
//!
//! Server side: a retransmitted request is answered from the transaction
//! (or absorbed while the TU works) and never reaches the TU twice.
//! Client side: Timer E retransmits over UDP, Timer F gives up.

mod client;
mod due;
mod fifo;
mod server;

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

pub use client::ClientTransactions;
pub use server::{ServerKey, ServerLookup, ServerTransactions};

/// RFC 3261 timer values (§17.1.1.1, table 4).
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timers F and J: 64·T1.
    pub fn f(&self) -> Duration {
        self.t1 * 64
    }
}

/// The hasher of both transaction tables. No peer chooses their keys as
/// they are hashed (the client table's are our own counters, the server
/// table's keyed digests), so a multiply that spreads them over the shards
/// is enough, where SipHash cost more than the rest of a lookup.
#[derive(Clone, Default)]
pub(crate) struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(8) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64); // a digest: its low half is as good as all of it
    }
}
