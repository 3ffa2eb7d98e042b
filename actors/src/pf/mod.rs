//! ParticipatingFunction: one actor per CPM user (001 §5.2.2.1.1).
//!
//! It owns the user's registrations (registrar role of the SIP/IP core
//! stand-in) and is the terminating PF for pager-mode messages: it picks the
//! eligible devices and forks to their ClientRegistration actors in parallel.
//! Activated on demand by the Directory, passivated when idle.

mod binding;
mod registrar;
mod routing;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cpm_sip::Message;
use cpm_store::BindingRecord;
use futures::stream::{FuturesUnordered, StreamExt};

pub use binding::Binding;
pub use registrar::{public_gruu, ContactSpec, RegisterError, RegisterRequest, RequestedContacts};
pub use routing::Skip;

use crate::device::{Fork, Rebind};
use crate::{unix_now, Aor, ClientRegistration, Directory, Env};

pub struct ParticipatingFunction {
    aor: Aor,
    dir: Directory,
    env: Env,
    bindings: BTreeMap<String, Binding>,
    devices: HashMap<String, Addr<ClientRegistration>>,
    /// Requests being worked on; a PF is only passivated with none.
    in_flight: usize,
    last_activity: Instant,
    expiry_timer: Option<SpawnHandle>,
}

impl ParticipatingFunction {
    pub(crate) fn new(aor: Aor, dir: Directory) -> ParticipatingFunction {
        let env = dir.env().clone();
        ParticipatingFunction {
            aor,
            dir,
            env,
            bindings: BTreeMap::new(),
            devices: HashMap::new(),
            in_flight: 0,
            last_activity: Instant::now(),
            expiry_timer: None,
        }
    }

    /// (Re)load the user's bindings from the store; records that no longer
    /// parse are logged and skipped, expired ones are left to the purge.
    fn load(&mut self) {
        self.bindings.clear();
        self.devices.clear();
        match self.env.store.bindings(self.aor.as_str()) {
            Ok(records) => {
                for rec in records {
                    let key = rec.key.clone();
                    match Binding::from_record(rec) {
                        Some(b) => {
                            self.bindings.insert(key, b);
                        }
                        None => tracing::warn!(aor = %self.aor, %key, "stored binding does not parse; ignored"),
                    }
                }
            }
            Err(e) => tracing::error!(aor = %self.aor, error = %e, "cannot load bindings"),
        }
    }

    fn device(&mut self, key: &str) -> Option<Addr<ClientRegistration>> {
        if let Some(addr) = self.devices.get(key) {
            return Some(addr.clone());
        }
        let b = self.bindings.get(key)?.clone();
        let addr = ClientRegistration::new(self.aor.clone(), b, self.env.outbound.clone()).start();
        self.devices.insert(key.to_string(), addr.clone());
        Some(addr)
    }

    fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.expiry_timer.take() {
            ctx.cancel_future(h);
        }
        let Some(next) = self.bindings.values().map(|b| b.record.expires_at).min() else {
            return;
        };
        let wait = Duration::from_secs(next.saturating_sub(unix_now()));
        self.expiry_timer = Some(ctx.run_later(wait, |act, ctx| act.purge_expired(ctx)));
    }

    fn purge_expired(&mut self, ctx: &mut Context<Self>) {
        let now = unix_now();
        let expired: Vec<String> = self
            .bindings
            .values()
            .filter(|b| !b.is_live(now))
            .map(|b| b.record.key.clone())
            .collect();
        for key in expired {
            tracing::info!(aor = %self.aor, %key, "registration expired");
            self.bindings.remove(&key);
            self.devices.remove(&key);
            if let Err(e) = self.env.store.remove_expired(self.aor.as_str(), &key, now) {
                tracing::error!(aor = %self.aor, %key, error = %e, "cannot remove expired binding");
            }
        }
        self.schedule_expiry(ctx);
    }

    fn apply(&mut self, removals: Vec<String>, upserts: Vec<BindingRecord>) -> Result<(), RegisterError> {
        let store = &self.env.store;
        let aor = self.aor.as_str();
        let persisted = removals
            .iter()
            .try_for_each(|k| store.remove_binding(aor, k).map(|_| ()))
            .and_then(|_| upserts.iter().try_for_each(|r| store.put_binding(aor, r)));
        if let Err(e) = persisted {
            tracing::error!(%aor, error = %e, "cannot persist registration");
            self.load(); // memory follows what the store really holds
            return Err(RegisterError::Store(e.to_string()));
        }
        for key in removals {
            tracing::info!(%aor, %key, "registration removed");
            self.bindings.remove(&key);
            self.devices.remove(&key);
        }
        for rec in upserts {
            let key = rec.key.clone();
            let Some(b) = Binding::from_record(rec) else { continue };
            tracing::info!(%aor, %key, contact = %b.record.contact, expires_at = b.record.expires_at, "registered");
            if let Some(dev) = self.devices.get(&key) {
                dev.do_send(Rebind(b.clone()));
            }
            self.bindings.insert(key, b);
        }
        Ok(())
    }
}

impl Actor for ParticipatingFunction {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.load();
        self.schedule_expiry(ctx);
        let idle = self.env.policy.idle_timeout;
        let check = (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_interval(check, move |act, ctx| {
            if act.in_flight == 0 && act.last_activity.elapsed() >= idle {
                tracing::debug!(aor = %act.aor, "passivating idle participating function");
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.dir.deactivated(&self.aor, &ctx.address());
    }
}

/// A REGISTER for this user; answered after the change is flushed to disk.
#[derive(Message, Clone)]
#[rtype(result = "Result<RegisterOutcome, RegisterError>")]
pub struct Register(pub RegisterRequest);

#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    /// Contact header values for the 200 OK.
    pub contacts: Vec<String>,
}

impl Handler<Register> for ParticipatingFunction {
    type Result = ResponseActFuture<Self, Result<RegisterOutcome, RegisterError>>;

    fn handle(&mut self, Register(req): Register, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let now = unix_now();
        let changed = match registrar::plan(&self.bindings, &req, &self.env.policy, now) {
            Ok(plan) => {
                let changed = !plan.removals.is_empty() || !plan.upserts.is_empty();
                if let Err(e) = self.apply(plan.removals, plan.upserts) {
                    return Box::pin(fut::ready(Err(e)));
                }
                changed
            }
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        self.schedule_expiry(ctx);
        let contacts = registrar::contact_list(&self.aor, self.bindings.values(), now);
        if !changed {
            return Box::pin(fut::ready(Ok(RegisterOutcome { contacts })));
        }
        self.in_flight += 1;
        let store = self.env.store.clone();
        Box::pin(
            async move { store.flush().await }
                .into_actor(self)
                .map(move |res, act, _| {
                    act.in_flight -= 1;
                    res.map_err(|e| {
                        tracing::error!(aor = %act.aor, error = %e, "flush failed; registration not acknowledged");
                        RegisterError::Store(e.to_string())
                    })?;
                    Ok(RegisterOutcome { contacts })
                }),
        )
    }
}

/// A pager-mode MESSAGE for this user (terminating side).
#[derive(Message, Clone)]
#[rtype(result = "DeliveryOutcome")]
pub struct DeliverPager {
    pub request: Arc<Message>,
    /// Instance named by a GRUU Request-URI (`;gr=`): only that device.
    pub gruu: Option<String>,
    /// Set when the sender is this same user: its sending device is skipped.
    pub sender_source: Option<SocketAddr>,
}

#[derive(Debug)]
pub enum DeliveryOutcome {
    /// A device answered 2xx first; its response goes back to the sender.
    Delivered { response: Box<Message>, forks: usize },
    /// No registered device may take it (the deferral seam).
    NoEligibleDevice,
    /// Forked, but no device accepted it in time.
    NotAccepted { forks: usize, last_status: Option<u16> },
}

impl Handler<DeliverPager> for ParticipatingFunction {
    type Result = ResponseActFuture<Self, DeliveryOutcome>;

    fn handle(&mut self, msg: DeliverPager, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let now = unix_now();
        let criteria = routing::Criteria::new(&msg.request, msg.gruu.clone(), msg.sender_source);
        let call_id = msg.request.call_id().unwrap_or_default().to_string();
        let mut chosen = Vec::new();
        for (key, b) in &self.bindings {
            match criteria.check(b, now) {
                Ok(()) => chosen.push(key.clone()),
                Err(skip) => tracing::debug!(aor = %self.aor, %key, ?skip, %call_id, "device skipped"),
            }
        }
        let forks: FuturesUnordered<_> = chosen
            .iter()
            .filter_map(|k| self.device(k))
            .map(|dev| {
                dev.send(Fork {
                    request: msg.request.clone(),
                })
            })
            .collect();
        let n = forks.len();
        if n == 0 {
            tracing::info!(aor = %self.aor, %call_id, "no eligible device");
            return Box::pin(fut::ready(DeliveryOutcome::NoEligibleDevice));
        }
        tracing::debug!(aor = %self.aor, %call_id, forks = n, "forking");
        self.in_flight += 1;
        let timeout = self.env.policy.fork_timeout;
        let work = first_success(forks, timeout);
        Box::pin(work.into_actor(self).map(move |outcome, act, _| {
            act.in_flight -= 1;
            act.touch();
            match &outcome {
                DeliveryOutcome::Delivered { .. } => tracing::info!(aor = %act.aor, %call_id, forks = n, "delivered"),
                other => tracing::info!(aor = %act.aor, %call_id, ?other, "not delivered"),
            }
            outcome
        }))
    }
}

/// Wait for the first 2xx among the forks. Forks still running when it
/// comes are not cancelled: their transactions finish on the device actors.
async fn first_success<F>(mut forks: FuturesUnordered<F>, timeout: Duration) -> DeliveryOutcome
where
    F: std::future::Future<Output = Result<Result<Message, crate::OutboundError>, MailboxError>>,
{
    let n = forks.len();
    let mut last_status = None;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = forks.next() => match next {
                None => return DeliveryOutcome::NotAccepted { forks: n, last_status },
                Some(Ok(Ok(resp))) => {
                    let status = resp.status().unwrap_or(500);
                    if (200..300).contains(&status) {
                        return DeliveryOutcome::Delivered { response: Box::new(resp), forks: n };
                    }
                    last_status = Some(status);
                }
                Some(Ok(Err(e))) => tracing::debug!(error = %e, "fork failed"),
                Some(Err(e)) => tracing::warn!(error = %e, "device actor unavailable"),
            },
            _ = &mut deadline => return DeliveryOutcome::NotAccepted { forks: n, last_status },
        }
    }
}

/// Current bindings (tests and inspection).
#[derive(Message, Clone)]
#[rtype(result = "Vec<BindingRecord>")]
pub struct GetBindings;

impl Handler<GetBindings> for ParticipatingFunction {
    type Result = Vec<BindingRecord>;

    fn handle(&mut self, _: GetBindings, _: &mut Context<Self>) -> Vec<BindingRecord> {
        self.bindings.values().map(|b| b.record.clone()).collect()
    }
}

/// From the store sweeper: some binding of this user has expired.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct PurgeExpired;

impl Handler<PurgeExpired> for ParticipatingFunction {
    type Result = ();

    fn handle(&mut self, _: PurgeExpired, ctx: &mut Context<Self>) {
        self.purge_expired(ctx);
    }
}
