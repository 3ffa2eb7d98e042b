//! SipIngress: one actor per worker arbiter. It parses, validates, runs the
//! server side of transactions and dispatches requests to the actor graph.

pub(crate) mod group;
mod message;
mod options;
mod register;
mod reply;

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use cpm_actors::{Directory, Env, TransportKind};
use cpm_sip::{Message, Method, ParseError};

use crate::limits::{InFlight, ShedCounters};
use crate::transaction::{ClientTransactions, ServerKey, ServerLookup, ServerTransactions};
use crate::transport::{Inbound, Source, Transports};
pub use reply::Reply;

/// Methods this server handles (405 Allow).
pub const ALLOW: &str = "REGISTER, MESSAGE, OPTIONS, ACK, CANCEL";

/// Everything an ingress needs, shared by all of them.
pub struct Core {
    pub env: Env,
    pub dir: Directory,
    pub transports: Arc<Transports>,
    pub server_tx: ServerTransactions,
    pub client_tx: Arc<ClientTransactions>,
    /// Our To-tag for locally generated responses.
    pub to_tag: String,
    /// What overload protection shed (docs/overload.md).
    pub shed: Arc<ShedCounters>,
    /// Retry-After (seconds) on overload 503s.
    pub retry_after_s: u32,
    /// A new request that waited longer since it arrived gets 503 (None: no limit).
    pub max_queue_delay: Option<std::time::Duration>,
    /// Digest authentication (docs/auth.md); unused with --open.
    pub auth: Arc<crate::auth::Authenticator>,
    /// The worker arbiters' threads (their CPU time in /metrics).
    pub workers: Arc<crate::workers::WorkerThreads>,
}

pub struct SipIngress {
    core: Arc<Core>,
}

impl SipIngress {
    pub fn new(core: Arc<Core>) -> SipIngress {
        SipIngress { core }
    }
}

impl Actor for SipIngress {
    type Context = Context<Self>;
}

/// A received datagram or framed stream message, with its share of the
/// ingress queue bound (given back when the message is dropped).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Received(pub Inbound, pub Option<InFlight>);

impl Handler<Received> for SipIngress {
    type Result = ();

    fn handle(&mut self, Received(inbound, _in_flight): Received, _: &mut Context<Self>) {
        let Inbound { data, source, arrived } = inbound;
        let msg = match Message::parse(data.clone()) {
            Ok(m) => m,
            Err(e) => return reject_unparsable(&self.core, &data, &source, &e),
        };
        if !msg.is_request() {
            self.core.client_tx.on_response(msg);
            return;
        }
        let via = match msg.validate_request() {
            Ok(via) => via,
            Err(e) => {
                tracing::info!(peer = %source.peer, error = %e, "bad request");
                let reply = Reply::new(self.core.clone(), Arc::new(msg), source, None, arrived);
                let reason = format!("Bad Request ({e})");
                return reply.spawn_status_reason(400, &reason);
            }
        };
        let key = ServerKey::of(&msg, &via);
        let is_ack = msg.method() == Some(&Method::Ack);
        match self.core.server_tx.lookup(&key, is_ack) {
            ServerLookup::New => {}
            ServerLookup::Absorbed => return,
            ServerLookup::Full => {
                // Transaction table at its cap: shed without creating one.
                let shed = &self.core.shed.server_tx_full;
                shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Reply::new(self.core.clone(), Arc::new(msg), source, None, arrived).spawn_overloaded();
            }
            ServerLookup::Resend(bytes) => {
                tracing::debug!(peer = %source.peer, "retransmission answered from transaction");
                let core = self.core.clone();
                actix_rt::spawn(async move {
                    if let Err(e) = core.transports.reply(&source, bytes).await {
                        tracing::debug!(error = %e, "resend failed");
                    }
                });
                return;
            }
        }
        let msg = Arc::new(msg);
        let reply = Reply::new(self.core.clone(), msg.clone(), source, Some(key), arrived);
        if let Some(waited) = self.too_late(arrived).filter(|_| !is_ack) {
            return self.refuse_late(reply, waited);
        }
        // Checks every method shares (RFC 3261 §8.2.1-8.2.2), ACK excepted.
        if let Some(bad) = register::unsupported_requires(&msg).filter(|_| !is_ack) {
            return reply.spawn_with(420, move |b| b.header("Unsupported", bad));
        }
        if msg.request_uri().is_some_and(|u| !u.is_sip_routable()) && !is_ack {
            return reply.spawn_status(416);
        }
        // sips: means TLS on every hop, this one included (RFC 5630;
        // the status is explained in docs/decisions.md).
        if msg.request_uri().is_some_and(|u| u.scheme == "sips") && source.transport != TransportKind::Tls && !is_ack {
            tracing::info!(peer = %source.peer, transport = %source.transport, "sips: Request-URI over a non-TLS transport");
            return reply.spawn_status_reason(416, "Unsupported URI Scheme (sips: needs TLS)");
        }
        match msg.method() {
            Some(Method::Register) => register::handle(reply),
            Some(Method::Message) => message::handle(reply),
            Some(Method::Options) => options::handle(reply),
            Some(Method::Cancel) => reply.spawn_status(481),
            // A method nobody defined: 501; a known one we do not offer: 405.
            Some(Method::Other(_)) => reply.spawn_with(501, |b| b.header("Allow", ALLOW)),
            Some(_) => reply.spawn_with(405, |b| b.header("Allow", ALLOW)),
            None => {}
        }
    }
}

impl SipIngress {
    /// How long a message that arrived at `arrived` has waited, when that is
    /// beyond the queue-delay limit.
    fn too_late(&self, arrived: Option<std::time::Instant>) -> Option<std::time::Duration> {
        let limit = self.core.max_queue_delay?; // off: no clock read
        let waited = arrived?.elapsed();
        (waited > limit).then_some(waited)
    }

    /// The server is behind by more than the queue-delay limit: answer this
    /// new request 503 at once instead of handling it (docs/overload.md).
    /// Only new transactions are refused, after the transaction lookup: a
    /// retransmission of a request being handled is still absorbed, and
    /// responses (which end our own transactions) are always handled, so
    /// the backlog drains instead of growing with retransmissions. The 503
    /// ends the transaction: the request's retransmissions get it again.
    fn refuse_late(&self, reply: Reply, waited: std::time::Duration) {
        self.core.shed.late.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(peer = %reply.source.peer, waited_ms = waited.as_millis() as u64, "request waited too long; 503");
        reply.spawn_overloaded();
    }
}

/// rsip could not read it. A request whose Via/From/To/Call-ID/CSeq lines
/// can still be found gets a 400 (RFC 3261 §8.2: 400 for malformed requests);
/// anything else is dropped and logged. Never a panic, never a stall.
fn reject_unparsable(core: &Arc<Core>, data: &Bytes, source: &Source, e: &ParseError) {
    tracing::info!(peer = %source.peer, error = %e, len = data.len(), "unparsable message");
    if data.starts_with(b"SIP/") {
        return; // a broken response: nothing to answer
    }
    let Some(resp) = reply::salvage_400(data, e, &core.to_tag) else {
        return;
    };
    let (core, source) = (core.clone(), *source);
    actix_rt::spawn(async move {
        let _ = core.transports.reply(&source, resp).await;
    });
}
