//! RFC 3261 §17 non-INVITE transactions, ours to write (rsip only parses).
//!
//! Server side: a retransmitted request is answered from the transaction
//! (or absorbed while the TU works) and never reaches the TU twice.
//! Client side: Timer E retransmits over UDP, Timer F gives up.

mod client;
mod server;

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
