//! One open-loop step: `messages` MESSAGEs at `rate`/s spread over the
//! lanes (see `lanes`). Each lane's share is a [`LaneRun`], advanced once
//! per wake-up: read every answer that came back (matched by the branch
//! it echoes), time out what got none, retransmit on Timer E, and send
//! what fell due on schedule.

use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::histogram::Histogram;
use crate::sip;

// Per-message state: sent and waiting, answered, timed out, not sent (cap).
const IDLE: u8 = 0;
const OUT: u8 = 1;
const DONE: u8 = 2;
const TIMED_OUT: u8 = 3;
const CAPPED: u8 = 4;

#[derive(Clone)]
pub struct Step {
    pub server: SocketAddr,
    pub run: u32,
    pub rate: f64,
    pub messages: u64,
    pub users: usize,
    pub timeout: Duration,
    pub max_outstanding: i64,
    /// Timer E's first interval (RFC 3261 T1): an unanswered request is
    /// sent again after T1, 2·T1, ... as sipp's `retrans="500"` does; zero
    /// disables it.
    pub t1: Duration,
    /// Send clock granularity: messages due within one tick go out
    /// together at its start (sipp's `-timer_resol`); zero sends each one
    /// at the first wake-up after its own time.
    pub tick: Duration,
    /// Width of the windows of `Outcome::worst_by_window`; zero for none.
    pub window: Duration,
}

#[derive(Default)]
pub struct Outcome {
    pub sent: u64,
    pub ok: u64,
    /// Final non-2xx responses by status.
    pub failed_status: BTreeMap<u16, u64>,
    pub timeouts: u64,
    /// Not sent because `max_outstanding` were waiting (counted as failed).
    pub capped: u64,
    /// Answers after their timeout, duplicates, or for another run.
    pub late: u64,
    pub retransmits: u64,
    /// Response times of the 2xx answers, µs.
    pub hist: Histogram,
    /// Worst response time (µs) per `Step::window` of the step, by when
    /// the answer came (empty unless a window is set).
    pub worst_by_window: Vec<u64>,
    /// From the first send to the last 2xx.
    pub elapsed: Duration,
    /// Worst lateness of a send against its schedule (generator overload).
    pub max_send_lag: Duration,
}

impl Outcome {
    pub fn failed(&self) -> u64 {
        self.failed_status.values().sum::<u64>() + self.timeouts + self.capped
    }

    pub fn merge(&mut self, o: Outcome) {
        self.sent += o.sent;
        self.ok += o.ok;
        for (s, n) in o.failed_status {
            *self.failed_status.entry(s).or_default() += n;
        }
        self.timeouts += o.timeouts;
        self.capped += o.capped;
        self.late += o.late;
        self.retransmits += o.retransmits;
        self.hist.merge(&o.hist);
        if self.worst_by_window.len() < o.worst_by_window.len() {
            self.worst_by_window.resize(o.worst_by_window.len(), 0);
        }
        for (w, v) in self.worst_by_window.iter_mut().zip(o.worst_by_window) {
            *w = (*w).max(v);
        }
        self.elapsed = self.elapsed.max(o.elapsed);
        self.max_send_lag = self.max_send_lag.max(o.max_send_lag);
    }
}

/// A step as every lane sees it.
pub struct Job {
    step: Step,
    states: Vec<AtomicU8>,
    outstanding: AtomicI64,
    start: Instant,
}

impl Job {
    pub fn new(step: Step) -> Job {
        Job {
            states: (0..step.messages).map(|_| AtomicU8::new(IDLE)).collect(),
            outstanding: AtomicI64::new(0),
            start: Instant::now(),
            step,
        }
    }
}

/// One lane's share of a step: messages `idx`, `idx + stride`, ...
pub struct LaneRun {
    job: std::sync::Arc<Job>,
    local: SocketAddr,
    stride: u64,
    seq: u64,
    out: Outcome,
    buf: Vec<u8>,
    last_ok: Duration,
    pending: VecDeque<(u64, Duration)>, // (seq, sent at)
    timer_e: TimerE,
}

impl LaneRun {
    pub fn new(job: std::sync::Arc<Job>, local: SocketAddr, idx: usize, lanes: usize) -> LaneRun {
        let timer_e = TimerE::new(job.step.t1, job.step.timeout);
        LaneRun {
            job,
            local,
            stride: lanes as u64,
            seq: idx as u64,
            out: Outcome::default(),
            buf: Vec::with_capacity(1024),
            last_ok: Duration::ZERO,
            pending: VecDeque::new(),
            timer_e,
        }
    }

    /// One wake-up on `sock` (non-blocking); true once every message of
    /// this lane was answered, timed out or skipped.
    pub fn tick(&mut self, sock: &UdpSocket, rbuf: &mut [u8]) -> bool {
        let job = &*self.job;
        let step = &job.step;
        read_answers(job, sock, rbuf, &mut self.out, &mut self.last_ok);
        let now = job.start.elapsed();
        expire(job, &mut self.pending, now, &mut self.out);
        let (buf, out, local) = (&mut self.buf, &mut self.out, self.local);
        self.timer_e.fire(now, |seq, sent| {
            if job.states[seq as usize].load(Ordering::Acquire) != OUT {
                return false;
            }
            sip::message(buf, &message_args(step, local, seq, sent));
            out.retransmits += 1;
            let _ = sock.send_to(buf, step.server); // a failed one is a lost one
            true
        });
        if self.seq >= step.messages {
            return self.pending.is_empty();
        }
        while self.seq < step.messages {
            let seq = self.seq;
            let mut due = Duration::from_secs_f64(seq as f64 / step.rate);
            if !step.tick.is_zero() {
                due = step.tick * (due.as_nanos() / step.tick.as_nanos()) as u32;
            }
            if now < due {
                break;
            }
            out.max_send_lag = out.max_send_lag.max(now - due);
            if job.outstanding.load(Ordering::Relaxed) >= step.max_outstanding {
                job.states[seq as usize].store(CAPPED, Ordering::Relaxed);
                out.capped += 1;
            } else {
                sip::message(buf, &message_args(step, local, seq, now));
                job.states[seq as usize].store(OUT, Ordering::Release);
                job.outstanding.fetch_add(1, Ordering::Relaxed);
                out.sent += 1;
                if let Err(e) = sock.send_to(buf, step.server) {
                    // ENOBUFS and the like: the request is lost, it will time out.
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        eprintln!("loadgen: send: {e}");
                    }
                }
                self.pending.push_back((seq, now));
                self.timer_e.start(seq, now);
            }
            self.seq += self.stride;
        }
        false
    }

    pub fn finish(mut self) -> Outcome {
        self.out.elapsed = self.last_ok;
        self.out
    }
}

/// Message `seq` of the step: from u[seq mod users] to the next user. A
/// retransmission is built from the same arguments, so it is the same
/// request (same branch, Call-ID and original send time).
fn message_args(step: &Step, local: SocketAddr, seq: u64, sent: Duration) -> sip::MessageArgs {
    let from = (seq % step.users as u64) as usize;
    sip::MessageArgs {
        server: step.server,
        local,
        run: step.run,
        seq,
        sent_us: sent.as_micros() as u64,
        from,
        to: (from + 1) % step.users,
    }
}

/// Timer E without a timer per request: one FIFO per retransmission round
/// (round k fires 2^k·T1 after the previous send). Requests enter each FIFO
/// in send order, so every FIFO is ordered by its due time.
struct TimerE {
    t1: Duration,
    rounds: Vec<VecDeque<(u64, Duration, Duration)>>, // (seq, first sent, due)
}

impl TimerE {
    fn new(t1: Duration, timeout: Duration) -> TimerE {
        let mut n = 0;
        let mut at = t1;
        while !t1.is_zero() && at < timeout {
            n += 1;
            at += t1 * (1 << n);
        }
        TimerE {
            t1,
            rounds: (0..n).map(|_| VecDeque::new()).collect(),
        }
    }

    fn start(&mut self, seq: u64, now: Duration) {
        if let Some(r) = self.rounds.first_mut() {
            r.push_back((seq, now, now + self.t1));
        }
    }

    /// Calls `resend` for every due request; it returns false for one that
    /// was answered meanwhile, which then leaves the timer.
    fn fire(&mut self, now: Duration, mut resend: impl FnMut(u64, Duration) -> bool) {
        for k in 0..self.rounds.len() {
            while let Some(&(seq, sent, due)) = self.rounds[k].front() {
                if due > now {
                    break;
                }
                self.rounds[k].pop_front();
                if resend(seq, sent) {
                    if let Some(next) = self.rounds.get_mut(k + 1) {
                        next.push_back((seq, sent, due + self.t1 * (1 << (k + 1))));
                    }
                }
            }
        }
    }
}

/// Times out the oldest unanswered requests; drops answered ones from the front.
fn expire(sh: &Job, pending: &mut VecDeque<(u64, Duration)>, now: Duration, out: &mut Outcome) {
    while let Some(&(seq, at)) = pending.front() {
        let state = &sh.states[seq as usize];
        if state.load(Ordering::Acquire) != OUT {
            pending.pop_front();
        } else if now >= at + sh.step.timeout {
            if state
                .compare_exchange(OUT, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                out.timeouts += 1;
                sh.outstanding.fetch_sub(1, Ordering::Relaxed);
            }
            pending.pop_front();
        } else {
            break;
        }
    }
}

/// Reads every answer waiting on `sock` (non-blocking).
fn read_answers(sh: &Job, sock: &UdpSocket, buf: &mut [u8], out: &mut Outcome, last_ok: &mut Duration) {
    while let Ok((n, _)) = sock.recv_from(buf) {
        let now = sh.start.elapsed();
        let Some(r) = sip::parse_response(&buf[..n]) else {
            continue;
        };
        if r.status < 200 {
            continue;
        }
        let state = sh.states.get(r.seq as usize);
        let fresh = r.run == sh.step.run
            && state.is_some_and(|s| {
                s.compare_exchange(OUT, DONE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            });
        if !fresh {
            out.late += 1;
            continue;
        }
        sh.outstanding.fetch_sub(1, Ordering::Relaxed);
        if (200..300).contains(&r.status) {
            out.ok += 1;
            let took = (now.as_micros() as u64).saturating_sub(r.sent_us);
            out.hist.record(took);
            if !sh.step.window.is_zero() {
                let w = (now.as_nanos() / sh.step.window.as_nanos()) as usize;
                if out.worst_by_window.len() <= w {
                    out.worst_by_window.resize(w + 1, 0);
                }
                out.worst_by_window[w] = out.worst_by_window[w].max(took);
            }
            *last_ok = now;
        } else {
            *out.failed_status.entry(r.status).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_e_doubles_and_stops_before_the_timeout() {
        let ms = Duration::from_millis;
        let mut t = TimerE::new(ms(500), ms(2000));
        assert_eq!(
            t.rounds.len(),
            2,
            "resends at 0.5 s and 1.5 s, the next (3.5 s) is past 2 s"
        );
        t.start(7, ms(10));
        let mut fired = Vec::new();
        for now in [100, 509, 510, 1000, 1509, 1510, 4000] {
            t.fire(ms(now), |seq, sent| {
                fired.push((now, seq, sent));
                true
            });
        }
        assert_eq!(fired, vec![(510, 7, ms(10)), (1510, 7, ms(10))]);
        let mut t = TimerE::new(ms(500), ms(2000));
        t.start(1, ms(0));
        t.fire(ms(500), |_, _| false); // answered: leaves the timer
        t.fire(ms(5000), |_, _| panic!("answered request resent"));
        assert!(TimerE::new(Duration::ZERO, ms(2000)).rounds.is_empty());
    }
}
