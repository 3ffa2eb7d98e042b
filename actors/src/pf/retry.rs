//! Push retries for a registered device that did not take its deferred
//! messages (push mode).
//!
//! 003 §5.2.5.2 pushes deferred messages when a client registers. A device
//! that is registered but out of reach for a while (asleep, in a tunnel)
//! would then get what was deferred meanwhile only at its next REGISTER, up
//! to a registration interval later, or with the next live message it takes
//! (`push_before_live`). So the PF also retries the push on its own, after
//! `deferred.push_retry_interval`, doubling per unanswered retry up to
//! [`MAX_DOUBLINGS`] times, until the device takes something, leaves, or
//! nothing is left for it (docs/decisions.md).

use std::time::Duration;

use actix::prelude::*;

use super::ParticipatingFunction;
use crate::preferences::DeferredMode;

/// The longest wait is the interval times 2^MAX_DOUBLINGS (16 min at 60 s).
const MAX_DOUBLINGS: u32 = 4;

/// One device's retry state.
#[derive(Default)]
pub(crate) struct PushRetry {
    /// Unanswered retries so far (the next wait doubles with each).
    attempts: u32,
    /// The pending timer, if one is set.
    timer: Option<SpawnHandle>,
}

/// A device's push retries as the inspector shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushRetryView {
    pub device: String,
    /// Retries scheduled so far since it last took a deferred message.
    pub attempts: u32,
    /// A retry is waiting for its timer.
    pub pending: bool,
}

/// The wait before retry number `attempts + 1`.
fn delay(interval: Duration, attempts: u32) -> Duration {
    interval.saturating_mul(1 << attempts.min(MAX_DOUBLINGS))
}

impl ParticipatingFunction {
    /// Device `key` did not take a message that is now deferred for it (a
    /// live fork or a push): try the push again later.
    pub(super) fn schedule_push_retry(&mut self, key: &str, ctx: &mut Context<Self>) {
        let Some(interval) = self.env.policy.get().deferred.push_retry_interval else {
            return;
        };
        if self.prefs.deferred_delivery != DeferredMode::Push || self.deferred_count == 0 {
            return;
        }
        let retry = self.push_retry.entry(key.to_string()).or_default();
        if retry.timer.is_some() {
            return;
        }
        let wait = delay(interval, retry.attempts);
        retry.attempts += 1;
        tracing::debug!(aor = %self.aor, %key, ?wait, attempt = retry.attempts, "deferred push retry scheduled");
        let key = key.to_string();
        retry.timer = Some(ctx.run_later(wait, move |act, ctx| act.retry_push(key, ctx)));
    }

    fn retry_push(&mut self, key: String, ctx: &mut Context<Self>) {
        let Some(retry) = self.push_retry.get_mut(&key) else {
            return;
        };
        retry.timer = None;
        // Gone, or nothing to push: forget it (a REGISTER starts afresh).
        if self.dnd || self.deferred_count == 0 || !self.eligible_keys().contains(&key) {
            self.push_retry.remove(&key);
            return;
        }
        // A push under way schedules the next retry if it stops.
        if self.pushing.contains(&key) {
            return;
        }
        tracing::info!(aor = %self.aor, %key, queued = self.deferred_count, "retrying deferred push");
        self.start_push(key, ctx);
    }

    /// Device `key` took a deferred message: the next failure waits the
    /// first interval again.
    pub(super) fn push_retry_reset(&mut self, key: &str, ctx: &mut Context<Self>) {
        if let Some(retry) = self.push_retry.remove(key) {
            if let Some(timer) = retry.timer {
                ctx.cancel_future(timer);
            }
        }
    }

    /// The retries, by device (inspector).
    pub(crate) fn push_retry_view(&self) -> Vec<PushRetryView> {
        let mut out: Vec<PushRetryView> = self
            .push_retry
            .iter()
            .map(|(key, r)| PushRetryView {
                device: key.clone(),
                attempts: r.attempts,
                pending: r.timer.is_some(),
            })
            .collect();
        out.sort_by(|a, b| a.device.cmp(&b.device));
        out
    }

    /// A retry pending keeps the PF active (its timer is in the context).
    pub(super) fn push_retry_pending(&self) -> bool {
        self.push_retry.values().any(|r| r.timer.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_then_stays() {
        let s = Duration::from_secs(60);
        let waits: Vec<u64> = (0..7).map(|n| delay(s, n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 960, 960]);
        assert_eq!(delay(Duration::MAX, 3), Duration::MAX, "saturates");
    }
}
