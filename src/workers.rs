//! The worker threads' CPU time, from /proc, for `/metrics` (and the
//! reader of a process's or thread's CPU time it uses).
//!
//! A worker near a full core is where a busy server's latency grows first:
//! short stretches of dearer work build a backlog that drains slowly
//! (docs/performance-log.md, eighteenth session), long before throughput stops.
//! The rate of each worker's CPU seconds shows that headroom; the process
//! total does not, since the store's and the sender's threads share it.

use std::sync::OnceLock;

/// Thread ids of the worker arbiters, each set by its own thread.
pub struct WorkerThreads(Vec<OnceLock<libc::pid_t>>);

impl WorkerThreads {
    pub fn new(workers: usize) -> WorkerThreads {
        WorkerThreads((0..workers).map(|_| OnceLock::new()).collect())
    }

    /// Called on worker `i`'s own thread.
    pub fn record_current(&self, i: usize) {
        if let Some(slot) = self.0.get(i) {
            // SAFETY: gettid has no arguments and cannot fail.
            let _ = slot.set(unsafe { libc::gettid() });
        }
    }

    /// (worker, user + system CPU seconds) of each worker whose thread id
    /// is known and whose /proc entry is readable.
    pub fn cpu_seconds(&self) -> Vec<(usize, f64)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, tid)| Some((i, cpu_seconds_at(&format!("/proc/self/task/{}/stat", tid.get()?))?)))
            .collect()
    }
}

/// User + system CPU seconds of the process or thread whose /proc `stat`
/// file is `path` (`/proc/PID/stat`, `/proc/self/task/TID/stat`); None if
/// it cannot be read. Also the load generator's measure of a server's CPU.
pub fn cpu_seconds_at(path: &str) -> Option<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(path).ok()?;
    Some(cpu_ticks(&stat)? as f64 / ticks as f64)
}

/// utime + stime of a /proc/.../stat line, in clock ticks. The name in
/// parentheses may hold spaces and parentheses itself: the fields start
/// after the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11); // state is field 3; utime 14, stime 15
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn stat_fields_are_read_after_the_name() {
        let stat = "4242 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 120 35 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(stat), Some(155));
        assert_eq!(cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn a_busy_thread_shows_its_cpu_time() {
        let threads = WorkerThreads::new(2);
        assert!(threads.cpu_seconds().is_empty(), "no thread id recorded yet");
        threads.record_current(1);
        let before = threads.cpu_seconds();
        assert_eq!(before.iter().map(|w| w.0).collect::<Vec<_>>(), [1]);
        // Spin until this thread's own count has grown by 50 ms (wall time
        // bounded: a shared CI machine may give it only part of a core).
        let start = Instant::now();
        let mut x = 0u64;
        let grown = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let now = threads.cpu_seconds()[0].1;
            if now - before[0].1 >= 0.05 {
                break true;
            }
            if start.elapsed() > Duration::from_secs(20) {
                break false;
            }
        };
        assert!(grown, "spinning did not show as this thread's CPU time");
    }
}
