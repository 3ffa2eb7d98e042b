//! When the client transactions' timers are due, without a scan of the
//! table: one FIFO per timer length. Every entry of a queue is pushed at
//! `now + its length`, in the order of `now`, so each queue is sorted by
//! itself and a sweep pops only what is due; a scan of every live
//! transaction per tick would cost in proportion to the table (up to its
//! cap, 200,000, when devices do not answer) and hold its locks meanwhile.

use std::time::{Duration, Instant};

use super::fifo::ChunkedFifo;
use super::Timers;

/// Chunked: Timer F's queue holds 64·T1 of transactions (see `fifo`).
type Queue = ChunkedFifo<(Instant, u64)>;

pub(super) struct DueQueues {
    /// Timer E, one queue per interval: T1, 2·T1, ... up to T2.
    e: Vec<(Duration, Queue)>,
    /// Timer F (64·T1) of every transaction, answered ones too: they are
    /// skipped when they come up (an entry is 24 bytes for 64·T1).
    f: Queue,
    f_after: Duration,
}

impl DueQueues {
    pub(super) fn new(timers: &Timers) -> DueQueues {
        let mut e = Vec::new();
        let mut interval = timers.t1;
        loop {
            e.push((interval, Queue::default()));
            if interval >= timers.t2 {
                break;
            }
            interval = (interval * 2).min(timers.t2);
        }
        DueQueues {
            e,
            f: Queue::default(),
            f_after: timers.f(),
        }
    }

    /// A transaction sent at `now`: Timer F, and Timer E at `first_e` if it
    /// retransmits (UDP).
    pub(super) fn start(&mut self, n: u64, now: Instant, first_e: Option<Duration>) {
        self.f.push_back((now + self.f_after, n));
        if let Some(interval) = first_e {
            self.retransmit_after(n, now, interval);
        }
    }

    /// Timer E of `n` again, `interval` after `now`.
    pub(super) fn retransmit_after(&mut self, n: u64, now: Instant, interval: Duration) {
        // The intervals are those of `new` (doubling from T1, capped at T2);
        // another one goes to the next queue up, so it never fires early.
        let last = self.e.len() - 1; // `new` makes at least one
        let i = self.e.iter().position(|(d, _)| *d >= interval).unwrap_or(last);
        let (d, q) = &mut self.e[i];
        q.push_back((now + *d, n));
    }

    /// Take what is due at `now`: (Timer E, Timer F) transaction counters.
    pub(super) fn take_due(&mut self, now: Instant) -> (Vec<u64>, Vec<u64>) {
        let mut e = Vec::new();
        for (_, q) in &mut self.e {
            pop_due(q, now, &mut e);
        }
        let mut f = Vec::new();
        pop_due(&mut self.f, now, &mut f);
        (e, f)
    }

    /// When Timer E of `n` is next due, if it is queued (tests).
    #[cfg(test)]
    pub(super) fn next_e(&self, n: u64) -> Option<Instant> {
        self.e
            .iter()
            .flat_map(|(_, q)| q.iter())
            .find(|(_, m)| *m == n)
            .map(|(at, _)| *at)
    }
}

fn pop_due(q: &mut Queue, now: Instant, out: &mut Vec<u64>) {
    while let Some(&(at, n)) = q.front() {
        if at > now {
            break;
        }
        q.pop_front();
        out.push(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_order_per_length_and_never_early() {
        let t = Timers::default();
        let mut q = DueQueues::new(&t);
        let intervals: Vec<Duration> = q.e.iter().map(|(d, _)| *d).collect();
        assert_eq!(intervals, [t.t1, t.t1 * 2, t.t1 * 4, t.t2], "T1 doubling up to T2");
        let t0 = Instant::now();
        q.start(1, t0, Some(t.t1));
        q.start(2, t0 + Duration::from_millis(10), None); // reliable: Timer F only
        q.retransmit_after(3, t0, t.t2);
        q.retransmit_after(4, t0, Duration::from_millis(700)); // not a queue's: the next one up
        assert_eq!(q.take_due(t0 + t.t1 - Duration::from_millis(1)), (vec![], vec![]));
        assert_eq!(q.take_due(t0 + t.t1), (vec![1], vec![]));
        assert_eq!(q.next_e(4), Some(t0 + t.t1 * 2));
        assert_eq!(q.take_due(t0 + t.t2), (vec![4, 3], vec![]));
        assert_eq!(q.take_due(t0 + t.f()), (vec![], vec![1]));
        assert_eq!(q.take_due(t0 + t.f() + Duration::from_millis(10)), (vec![], vec![2]));
        assert_eq!(q.take_due(t0 + t.f() * 2), (vec![], vec![]));
    }
}
