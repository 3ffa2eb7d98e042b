//! The PF's timers, kept out of its actor context.
//!
//! actix polls every timer of a context each time the actor wakes, so two
//! timers in the PF (binding expiry and the idle check) were polled two or
//! three times per relayed message: 1.5 % of the relay's instructions
//! (callgrind, docs/performance.md). Here one task per active PF, on the
//! PF's own thread, reads the PF's last activity and next binding expiry
//! from [`Timing`] and sleeps until the earlier of the two is due. Only
//! then does it ask the PF (`Housekeep`) to purge or passivate: once per
//! activation in the usual life of a PF, so a user who registers and goes
//! quiet costs one message more than before, not one per check.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::Notify;

use super::ParticipatingFunction;
use crate::unix_now;

/// What the task needs to know of its PF, shared on the PF's thread.
pub(crate) struct Timing {
    /// The PF's last activity (set on every request it handles).
    last_activity: Cell<Instant>,
    /// The earliest expiry (Unix seconds) of the PF's bindings.
    next_expiry: Cell<Option<u64>>,
    /// The task re-reads the deadlines (an expiry came closer).
    wake: Notify,
}

impl Timing {
    pub(crate) fn new() -> Timing {
        Timing {
            last_activity: Cell::new(Instant::now()),
            next_expiry: Cell::new(None),
            wake: Notify::new(),
        }
    }

    pub(crate) fn last_activity(&self) -> Instant {
        self.last_activity.get()
    }

    /// Activity now (the PF, or work of its that ended outside its context).
    pub(crate) fn touch(&self) {
        self.last_activity.set(Instant::now());
    }
}

/// Purge what expired, passivate if idle; answers false when the PF is
/// stopping.
#[derive(Message)]
#[rtype(result = "bool")]
pub(super) struct Housekeep;

impl Handler<Housekeep> for ParticipatingFunction {
    type Result = bool;

    fn handle(&mut self, _: Housekeep, ctx: &mut Context<Self>) -> bool {
        // Also brings the task's next expiry up to date, whatever changed.
        self.purge_expired();
        let idle = self.env.policy.get().idle_timeout;
        if self.timing.last_activity().elapsed() < idle {
            return true;
        }
        // A pending reminder or push retry keeps the user active (the timer
        // is in its context), and so does work in flight: asked again an
        // idle period on.
        if self.in_flight.get() > 0 || self.reminder.is_some() || self.push_retry_pending() {
            self.touch();
            return true;
        }
        tracing::debug!(aor = %self.aor, "passivating idle participating function");
        ctx.stop();
        false
    }
}

impl ParticipatingFunction {
    pub(super) fn touch(&mut self) {
        self.timing.touch();
    }

    /// Start the task (the bindings are loaded: `load` told it their next
    /// expiry); it ends when the PF has stopped.
    pub(super) fn start_housekeeping(&mut self, ctx: &mut Context<Self>) {
        self.touch();
        let idle = self.env.policy.get().idle_timeout;
        actix_rt::spawn(run(ctx.address().downgrade(), self.timing.clone(), idle));
    }

    /// The bindings changed (`load`, `apply`, `purge_expired`): the task
    /// learns the next expiry, and wakes if it now comes before what it
    /// sleeps for.
    pub(super) fn note_bindings_changed(&self) {
        let next = self.bindings.values().map(|b| b.record.expires_at).min();
        let old = self.timing.next_expiry.replace(next);
        if next.is_some_and(|n| old.is_none_or(|o| n < o)) {
            self.timing.wake.notify_one();
        }
    }
}

async fn run(pf: actix::WeakAddr<ParticipatingFunction>, timing: Rc<Timing>, idle: Duration) {
    loop {
        let now = Instant::now();
        let idle_at = timing.last_activity() + idle;
        let expiry_in = timing
            .next_expiry
            .get()
            .map(|at| Duration::from_secs(at.saturating_sub(unix_now())));
        let due = expiry_in.map_or(idle_at, |d| idle_at.min(now + d));
        if due > now {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = timing.wake.notified() => {}
            }
            continue; // the deadlines may have moved meanwhile
        }
        let Some(addr) = pf.upgrade() else { return };
        match addr.send(Housekeep).await {
            Ok(true) => {}
            // Stopping, or stopped meanwhile.
            Ok(false) | Err(_) => return,
        }
    }
}
