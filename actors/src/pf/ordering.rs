//! Order across the deferred push and live delivery. A device coming back
//! is pushed its deferred messages one at a time; a live message for the
//! user arriving meanwhile must not overtake them on that device. Its fork
//! to that device is held until the push ends (finished or stopped), then
//! sent; forks to the user's other devices go at once.

use std::sync::Arc;

use actix::prelude::*;
use cpm_sip::Message;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;

use super::ParticipatingFunction;
use crate::device::Fork;
use crate::OutboundError;

/// What a fork resolves with (as `Addr::send` of a `Fork`).
pub(crate) type ForkResult = Result<Result<Message, OutboundError>, MailboxError>;

/// A live fork waiting for a device's deferred push to end.
pub(crate) struct HeldFork {
    request: Arc<Message>,
    reply: oneshot::Sender<ForkResult>,
}

impl ParticipatingFunction {
    /// Fork `request` to device `key`: now, or once its deferred push ends.
    pub(super) fn fork_to(&mut self, key: &str, request: Arc<Message>) -> Option<LocalBoxFuture<'static, ForkResult>> {
        let pushing = self.pushing.contains(key);
        let dev = self.device_ref(key)?;
        if !pushing {
            return Some(Box::pin(dev.send(Fork { request })));
        }
        let call_id = request.call_id().unwrap_or_default().to_string();
        tracing::debug!(aor = %self.aor, %key, %call_id, "fork held behind the deferred push");
        self.trace(&call_id, "fork-held", format_args!("{key}: behind its deferred push"));
        let (reply, wait) = oneshot::channel();
        self.held
            .entry(key.to_string())
            .or_default()
            .push(HeldFork { request, reply });
        Some(Box::pin(async move { wait.await.unwrap_or(Err(MailboxError::Closed)) }))
    }

    /// No device took the message `call_id` in time: its held forks are
    /// dropped (their waits end), since a deferred copy comes with the push.
    pub(super) fn drop_held(&mut self, call_id: &str) {
        for forks in self.held.values_mut() {
            forks.retain(|f| f.request.call_id().ok() != Some(call_id));
        }
        self.held.retain(|_, forks| !forks.is_empty());
    }

    /// The deferred push to `key` ended: send its held forks, in arrival order.
    pub(super) fn release_held(&mut self, key: &str) {
        let Some(held) = self.held.remove(key) else { return };
        let dev = self.device(key);
        for HeldFork { request, reply } in held {
            let call_id = request.call_id().unwrap_or_default();
            if reply.is_canceled() {
                // Nobody waits for this fork any more (the delivery it was
                // part of is over and dropped it): too late to send.
                tracing::debug!(aor = %self.aor, %key, %call_id, "held fork dropped: its wait is over");
                continue;
            }
            let Some(dev) = dev.clone() else {
                tracing::debug!(aor = %self.aor, %key, %call_id, "held fork dropped: the device is gone");
                let _ = reply.send(Err(MailboxError::Closed));
                continue;
            };
            tracing::debug!(aor = %self.aor, %key, %call_id, "held fork released");
            // Queued on the device's mailbox now, so in order; answered later.
            let sent = dev.send(Fork { request });
            actix::spawn(async move {
                let _ = reply.send(sent.await);
            });
        }
    }
}
