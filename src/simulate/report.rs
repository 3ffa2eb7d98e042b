//! The final report of a simulation run, and process memory figures.

use std::fmt;
use std::time::Duration;

use super::invariants::Stats;

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub transport: &'static str,
    pub users: u32,
    pub devices: u32,
    pub run: Duration,
    /// Initial registrations (every device once) and how long they took.
    pub registrations: u64,
    pub registration_time: Duration,
    pub churn_events: u64,
    pub stats: Stats,
    /// Deliveries to a device that had already de-registered (not a violation: the fork raced the de-REGISTER).
    pub stray: u64,
    /// Requests the engine's overload gate answered at once with 503 (retried).
    pub shed: u64,
    /// Retransmissions of our own requests (UDP only).
    pub retransmissions: u64,
    pub live_pfs: usize,
    pub activations: u64,
    pub server_tx: usize,
    pub client_tx: usize,
    /// CPU seconds of each engine worker thread over the run (empty
    /// where /proc is not readable).
    pub worker_cpu: Vec<f64>,
    pub rss_start: u64,
    pub rss_end: u64,
    pub rss_peak: u64,
    /// Idle measurement (`--settle`): RSS once every user actor passivated.
    pub rss_idle: Option<u64>,
    /// The same after `malloc_trim(0)` gave free heap pages back to the OS.
    pub rss_trimmed: Option<u64>,
    pub pfs_after_settle: Option<usize>,
    /// The simulator's own per-device state (in the RSS, not the engine's).
    pub sim_bytes: u64,
    pub violations: Vec<String>,
    pub violation_count: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violation_count == 0
    }

    pub fn registrations_per_s(&self) -> f64 {
        self.registrations as f64 / self.registration_time.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let l = &self.stats.latencies;
        if l.is_empty() {
            return Duration::ZERO;
        }
        let i = ((l.len() - 1) as f64 * p).round() as usize;
        l[i.min(l.len() - 1)]
    }

    /// Engine bytes per registered device at idle: RSS growth over the
    /// start, minus the simulator's own table.
    pub fn idle_bytes_per_device(&self) -> Option<f64> {
        self.bytes_per_device(self.rss_idle?)
    }

    /// [`Report::idle_bytes_per_device`] after `malloc_trim`.
    pub fn trimmed_bytes_per_device(&self) -> Option<f64> {
        self.bytes_per_device(self.rss_trimmed?)
    }

    fn bytes_per_device(&self, idle: u64) -> Option<f64> {
        let n = (self.users as u64 * self.devices as u64).max(1);
        Some((idle.saturating_sub(self.rss_start).saturating_sub(self.sim_bytes)) as f64 / n as f64)
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "simulation: {} users x {} devices over {}, {:.1} s",
            self.users,
            self.devices,
            self.transport,
            self.run.as_secs_f64()
        )?;
        writeln!(
            f,
            "  registrations  {} in {:.2} s ({:.0}/s); churn events {}",
            self.registrations,
            self.registration_time.as_secs_f64(),
            self.registrations_per_s(),
            self.churn_events
        )?;
        writeln!(
            f,
            "  messages       sent {}, delivered (200) {}, deferred (202) {}, delivered later {}, device copies {}",
            s.sent, s.ok, s.deferred, s.delivered_later, s.copies
        )?;
        if s.group_messages > 0 {
            writeln!(
                f,
                "  groups         messages (202, included above) {}, member device copies {}",
                s.group_messages, s.group_copies
            )?;
        }
        writeln!(
            f,
            "  reports        delivery {}, display {}; stray copies {}; shed {}; retransmissions {}",
            s.reports[0], s.reports[1], self.stray, self.shed, self.retransmissions
        )?;
        writeln!(
            f,
            "  latency        p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (send -> first device, live)",
            ms(self.percentile(0.5)),
            ms(self.percentile(0.9)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0))
        )?;
        writeln!(
            f,
            "  actors         live PFs {}, activations {}, server tx {}, client tx {}",
            self.live_pfs, self.activations, self.server_tx, self.client_tx
        )?;
        if !self.worker_cpu.is_empty() {
            // How close the engine came to a saturated worker (the first
            // limit of a busy server: docs/performance.md).
            let run = self.run.as_secs_f64().max(1e-9);
            let total: f64 = self.worker_cpu.iter().sum();
            let busy: Vec<String> = self
                .worker_cpu
                .iter()
                .map(|s| format!("{:.0} %", 100.0 * s / run))
                .collect();
            write!(
                f,
                "  workers        CPU {total:.2} s, busy {} of the run",
                busy.join(", ")
            )?;
            if s.sent > 0 {
                write!(
                    f,
                    "; {:.1} µs per message sent (with its copies and reports, and the registrations)",
                    total * 1e6 / s.sent as f64
                )?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "  memory         RSS start {:.1} MiB, end {:.1} MiB, peak {:.1} MiB",
            mib(self.rss_start),
            mib(self.rss_end),
            mib(self.rss_peak)
        )?;
        if let (Some(idle), Some(per)) = (self.rss_idle, self.idle_bytes_per_device()) {
            writeln!(
                f,
                "  idle           RSS {:.1} MiB with {} live PFs: {:.0} bytes per registered device (engine; simulator table {:.1} MiB excluded)",
                mib(idle),
                self.pfs_after_settle.unwrap_or(0),
                per,
                mib(self.sim_bytes)
            )?;
        }
        if let (Some(t), Some(per)) = (self.rss_trimmed, self.trimmed_bytes_per_device()) {
            writeln!(
                f,
                "  idle, trimmed  RSS {:.1} MiB after malloc_trim: {:.0} bytes per registered device",
                mib(t),
                per
            )?;
        }
        if self.ok() {
            writeln!(f, "  invariants     OK")
        } else {
            writeln!(f, "  invariants     {} VIOLATION(S):", self.violation_count)?;
            for v in self.violations.iter().take(50) {
                writeln!(f, "    - {v}")?;
            }
            if self.violation_count > 50 {
                writeln!(f, "    ... {} more", self.violation_count - 50)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_line_gives_busy_share_and_cost_per_message() {
        let mut rep = Report {
            run: Duration::from_secs(2),
            worker_cpu: vec![1.0, 0.5],
            ..Default::default()
        };
        rep.stats.sent = 1000;
        let text = rep.to_string();
        assert!(
            text.contains("  workers        CPU 1.50 s, busy 50 %, 25 % of the run; 1500.0 µs per message sent"),
            "{text}"
        );
        rep.worker_cpu.clear();
        assert!(!rep.to_string().contains("workers"), "no line without /proc figures");
    }
}
