//! The PF's timers, kept out of its actor context.
//!
//! actix polls every timer of a context each time the actor wakes, so two
//! timers in the PF (binding expiry and the idle check) were polled two or
//! three times per relayed message: 1.5 % of the relay's instructions
//! (callgrind, docs/performance.md). Here one task per active PF sleeps
//! until the earlier of the two deadlines and then asks the PF, through its
//! mailbox, to do what is due and name the next deadline. A registration
//! that brings an expiry closer wakes the task early.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::Notify;

use super::ParticipatingFunction;
use crate::unix_now;

/// Purge what expired, passivate if idle; answers the next wait, or `None`
/// when the PF is stopping.
#[derive(Message)]
#[rtype(result = "Option<Duration>")]
pub(super) struct Housekeep;

impl Handler<Housekeep> for ParticipatingFunction {
    type Result = Option<Duration>;

    fn handle(&mut self, _: Housekeep, ctx: &mut Context<Self>) -> Option<Duration> {
        let now = unix_now();
        if self.bindings.values().any(|b| !b.is_live(now)) {
            self.purge_expired();
        }
        // A pending reminder keeps the user active (it is the reminder's timer).
        let idle = self.env.policy.get().idle_timeout;
        if self.in_flight == 0 && self.reminder.is_none() && self.last_activity.elapsed() >= idle {
            tracing::debug!(aor = %self.aor, "passivating idle participating function");
            ctx.stop();
            return None;
        }
        let next = self.next_housekeeping();
        self.housekeeping_due = Instant::now() + next;
        Some(next)
    }
}

impl ParticipatingFunction {
    /// How often an active PF checks whether it has been idle long enough.
    pub(super) fn idle_check(&self) -> Duration {
        (self.env.policy.get().idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// The wait until the next binding expires or the next idle check,
    /// whichever comes first.
    pub(super) fn next_housekeeping(&self) -> Duration {
        let check = self.idle_check();
        let now = unix_now();
        match self.bindings.values().map(|b| b.record.expires_at).min() {
            Some(at) => check.min(Duration::from_secs(at.saturating_sub(now))),
            None => check,
        }
    }

    /// Start the task; it ends when the PF has stopped.
    pub(super) fn start_housekeeping(&mut self, ctx: &mut Context<Self>) {
        let pf = ctx.address().downgrade();
        let wake = self.housekeeping.clone();
        let first = self.next_housekeeping();
        self.housekeeping_due = Instant::now() + first;
        actix_rt::spawn(run(pf, wake, first));
    }

    /// The bindings changed: if a binding now expires before the task's
    /// next wake-up, the task asks again now (most registrations only
    /// extend, and cost no wake-up).
    pub(super) fn reschedule_housekeeping(&self) {
        if Instant::now() + self.next_housekeeping() < self.housekeeping_due {
            self.housekeeping.notify_one();
        }
    }
}

async fn run(pf: actix::WeakAddr<ParticipatingFunction>, wake: Arc<Notify>, mut wait: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
        let Some(addr) = pf.upgrade() else { return };
        match addr.send(Housekeep).await {
            Ok(Some(next)) => wait = next,
            // Stopping, or stopped meanwhile.
            Ok(None) | Err(_) => return,
        }
    }
}
