//! A capability query (OPTIONS, RFC 3261 §11) for the user: answered by the
//! user's devices, not by the server on their behalf, so that an RCS-style
//! client learns what the other user's devices support (their Contact's
//! feature tags in the 200) and whether any is reachable at all.
//!
//! It goes to the devices a pager-mode message would go to (routing.rs:
//! live, reachable, CPM-capable, Accept-/Reject-Contact, a GRUU's device
//! only, never the asking device); the first 2xx answers (or, when every
//! device refused the request itself, the first refusal: `first_answer`,
//! pager.rs). Unlike a message
//! it is never deferred or stored: with no device to answer it the user is
//! unavailable (480), and its fork is not held behind a deferred push.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use cpm_sip::Message;
use futures::future::LocalBoxFuture;

use super::ordering::ForkResult;
use super::pager::{first_answer, Chosen};
use super::{routing, ParticipatingFunction};
use crate::device::Fork;
use crate::gruu::GruuTarget;
use crate::unix_now;

#[derive(Message, Clone)]
#[rtype(result = "QueryOutcome")]
pub struct QueryDevices {
    pub request: Arc<Message>,
    /// The device a GRUU Request-URI names: only that one.
    pub gruu: Option<GruuTarget>,
    /// Set when the asker is this same user: its asking device is skipped.
    pub sender_source: Option<SocketAddr>,
}

#[derive(Debug)]
pub enum QueryOutcome {
    /// A device answered 2xx first; its response goes back to the asker.
    Answered(Box<Message>),
    /// No device took it (none eligible, or none answered 2xx in time).
    Unavailable,
    /// Sent to a temporary GRUU of an earlier registration (404).
    StaleGruu,
}

impl Handler<QueryDevices> for ParticipatingFunction {
    type Result = ResponseFuture<QueryOutcome>;

    fn handle(&mut self, q: QueryDevices, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let now = unix_now();
        let criteria = routing::Criteria::new(&q.request, q.gruu, q.sender_source);
        let call_id = q.request.call_id().unwrap_or_default();
        let Chosen {
            keys: chosen,
            stale_gruu,
        } = self.choose_devices(&criteria, None, call_id, now);
        let mut forks: Vec<LocalBoxFuture<'static, ForkResult>> = Vec::with_capacity(chosen.len());
        for key in &chosen {
            if let Some(dev) = self.device_ref(key) {
                forks.push(Box::pin(dev.send(Fork {
                    request: q.request.clone(),
                })));
            }
        }
        tracing::debug!(aor = %self.aor, %call_id, devices = forks.len(), "capability query");
        self.trace(call_id, "query-forked", format_args!("{} device(s)", forks.len()));
        if forks.is_empty() {
            return Box::pin(async move {
                match stale_gruu {
                    true => QueryOutcome::StaleGruu,
                    false => QueryOutcome::Unavailable,
                }
            });
        }
        let busy = self.in_flight.enter();
        let timeout = self.env.policy.get().fork_timeout;
        Box::pin(async move {
            let (answer, _others) = first_answer(forks, timeout).await;
            drop(busy);
            match answer {
                Some(response) => QueryOutcome::Answered(response),
                None => QueryOutcome::Unavailable,
            }
        })
    }
}
