//! ClientRegistration: one registered device of a user, alive while its
//! Participating Function is. It owns the delivery leg to that device.

use std::sync::Arc;

use actix::prelude::*;
use cpm_sip::{Message, StartLine};

use crate::pf::Binding;
use crate::{Aor, Outbound, OutboundError};

pub struct ClientRegistration {
    aor: Aor,
    pub(crate) binding: Binding,
    outbound: Arc<dyn Outbound>,
    pub(crate) delivered: u64,
    /// Inspector: forks sent, forks not yet answered, age, last fork.
    pub(crate) forks: u64,
    pub(crate) pending: usize,
    pub(crate) started: std::time::Instant,
    pub(crate) last_activity: std::time::Instant,
}

impl ClientRegistration {
    pub fn new(aor: Aor, binding: Binding, outbound: Arc<dyn Outbound>) -> ClientRegistration {
        ClientRegistration {
            aor,
            binding,
            outbound,
            delivered: 0,
            forks: 0,
            pending: 0,
            started: std::time::Instant::now(),
            last_activity: std::time::Instant::now(),
        }
    }

    /// The request as the device receives it: Request-URI is the device's
    /// contact, the target CPM Address travels in P-Called-Party-ID (RFC 3455)
    /// and Max-Forwards is decremented (RFC 3261 §16.6).
    fn retarget(&self, original: &Message) -> Message {
        let mut req = original.clone();
        if let StartLine::Request { uri, .. } = &mut req.start {
            *uri = self.binding.uri.clone();
        }
        let hops = original.max_forwards().unwrap_or(70).saturating_sub(1);
        req.headers.set("Max-Forwards", hops.to_string());
        req.headers.set("P-Called-Party-ID", format!("<{}>", self.aor));
        req
    }
}

impl Actor for ClientRegistration {
    type Context = Context<Self>;
}

/// Deliver one request to this device; resolves with its final response.
#[derive(Message, Clone)]
#[rtype(result = "Result<Message, OutboundError>")]
pub struct Fork {
    pub request: Arc<Message>,
}

impl Handler<Fork> for ClientRegistration {
    type Result = ResponseActFuture<Self, Result<Message, OutboundError>>;

    fn handle(&mut self, msg: Fork, _: &mut Context<Self>) -> Self::Result {
        let request = self.retarget(&msg.request);
        let Some(target) = self.binding.target else {
            let err = OutboundError::Transport(([0, 0, 0, 0], 0).into(), "contact has no reachable address".into());
            return Box::pin(fut::ready(Err(err)));
        };
        let sent = self.outbound.send_request(request, target);
        self.forks += 1;
        self.pending += 1;
        self.last_activity = std::time::Instant::now();
        Box::pin(sent.into_actor(self).map(|res, act, _| {
            act.pending -= 1;
            if res
                .as_ref()
                .is_ok_and(|r| r.status().is_some_and(|s| (200..300).contains(&s)))
            {
                act.delivered += 1;
            }
            res
        }))
    }
}

/// The PF refreshed this device's binding (re-registration).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rebind(pub Binding);

impl Handler<Rebind> for ClientRegistration {
    type Result = ();

    fn handle(&mut self, msg: Rebind, _: &mut Context<Self>) {
        self.binding = msg.0;
    }
}
