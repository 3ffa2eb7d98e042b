//! ParticipatingFunction: one actor per CPM user (001 §5.2.2.1.1).
//!
//! It owns the user's registrations (registrar role of the SIP/IP core
//! stand-in) and is the terminating PF for pager-mode messages: it picks the
//! eligible devices and forks to their ClientRegistration actors in parallel.
//! Activated on demand by the Directory, passivated when idle.

mod binding;
mod deferred;
mod housekeeping;
pub mod notify;
mod ordering;
mod pager;
mod query;
mod registrar;
mod reports;
mod retry;
mod routing;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use cpm_store::BindingRecord;

pub use binding::Binding;
pub use deferred::{DeferredActions, DeferredActionsOutcome, ExpireDeferred};
pub use pager::{DeliverPager, DeliveryOutcome};
pub use query::{QueryDevices, QueryOutcome};
pub use registrar::{ContactSpec, RegisterError, RegisterRequest, RequestedContacts};
pub use reports::{kind_name, ClaimReport, NoteOrigin};
pub use retry::PushRetryView;
pub use routing::{Criteria, Skip};

use crate::answer::Busy;
use crate::device::Rebind;
use crate::preferences::Preferences;
use crate::{unix_now, Aor, ClientRegistration, Directory, Env};

pub struct ParticipatingFunction {
    pub(crate) aor: Aor,
    pub(crate) dir: Directory,
    pub(crate) env: Env,
    pub(crate) bindings: BTreeMap<String, Binding>,
    pub(crate) devices: HashMap<String, Addr<ClientRegistration>>,
    /// Requests being worked on; a PF is only passivated with none.
    /// Shared with the deliveries that wait outside the context (answer.rs).
    pub(crate) in_flight: Busy,
    /// Last activity and next expiry, shared with the task that times
    /// passivation and expiry (housekeeping.rs).
    pub(crate) timing: Rc<housekeeping::Timing>,
    pub(crate) prefs: Preferences,
    /// Do-not-disturb as in force now (stored runtime value, else preference).
    pub(crate) dnd: bool,
    /// Deferred queue usage, for the per-user caps.
    pub(crate) deferred_count: usize,
    pub(crate) deferred_bytes: u64,
    /// Queued reports waiting for one device (`DeferredRecord::target`):
    /// only then can a full queue make room (deferred.rs, `make_room`).
    pub(crate) waiting_reports: usize,
    /// Deferred messages being pushed right now (never to two devices at once).
    pub(crate) claimed: HashSet<u64>,
    /// Devices with a push in progress.
    pub(crate) pushing: HashSet<String>,
    /// Per device, deferred messages it refused as unacceptable (415, 488,
    /// 606...): its pushes pass them by until it registers again.
    pub(crate) refused: HashMap<String, HashSet<u64>>,
    /// Counts the messages deferred during this activation, and for each
    /// device its value when the device's last push started: a live
    /// message starts another push only if something was deferred since
    /// (deferred.rs, `push_before_live`).
    pub(crate) queue_version: u64,
    pub(crate) pushed_at: HashMap<String, u64>,
    /// Live forks held until those pushes end (ordering.rs).
    pub(crate) held: HashMap<String, Vec<ordering::HeldFork>>,
    pub(crate) reminder: Option<SpawnHandle>,
    /// Push retries of registered devices that did not answer (retry.rs).
    pub(crate) push_retry: HashMap<String, retry::PushRetry>,
    /// When this activation started (inspector: age).
    pub(crate) started: Instant,
    /// This PF's own address, taken once when it starts: a delivery that
    /// no device took comes back through it (pager.rs). Weak, so it keeps
    /// nothing alive; `ctx.address()` per message would allocate a sender.
    pub(crate) me: Option<actix::WeakAddr<Self>>,
    /// `pf:<aor>`, the actor name of its trace events (formatted once,
    /// shared with the deliveries that wait outside the context).
    pub(crate) trace_actor: Rc<str>,
}

impl ParticipatingFunction {
    pub(crate) fn new(aor: Aor, dir: Directory) -> ParticipatingFunction {
        let env = dir.env().clone();
        let prefs = env.users.preferences(&aor);
        ParticipatingFunction {
            trace_actor: format!("pf:{aor}").into(),
            aor,
            dir,
            env,
            bindings: BTreeMap::new(),
            devices: HashMap::new(),
            in_flight: Busy::default(),
            timing: Rc::new(housekeeping::Timing::new()),
            dnd: prefs.dnd,
            prefs,
            deferred_count: 0,
            deferred_bytes: 0,
            waiting_reports: 0,
            claimed: HashSet::new(),
            pushing: HashSet::new(),
            refused: HashMap::new(),
            queue_version: 0,
            pushed_at: HashMap::new(),
            held: HashMap::new(),
            reminder: None,
            push_retry: HashMap::new(),
            started: Instant::now(),
            me: None,
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
        self.note_bindings_changed();
    }

    fn device(&mut self, key: &str) -> Option<Addr<ClientRegistration>> {
        self.device_ref(key).cloned()
    }

    /// [`Self::device`] borrowed: a send needs no address of its own (an
    /// actix address clone allocates twice).
    fn device_ref(&mut self, key: &str) -> Option<&Addr<ClientRegistration>> {
        if !self.devices.contains_key(key) {
            let b = self.bindings.get(key)?.clone();
            let addr = ClientRegistration::new(self.aor.clone(), b, self.env.outbound.clone()).start();
            self.devices.insert(key.to_string(), addr);
        }
        self.devices.get(key)
    }

    /// Await the store flush (durable before acknowledging), counted as work
    /// in flight so the PF is not passivated meanwhile; then run `then`.
    fn after_flush<R: 'static>(
        &mut self,
        then: impl FnOnce(Result<(), cpm_store::StoreError>, &mut Self, &mut Context<Self>) -> R + 'static,
    ) -> ResponseActFuture<Self, R> {
        let busy = self.in_flight.enter();
        let store = self.env.store.clone();
        Box::pin(
            async move { store.flush().await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    drop(busy);
                    then(res, act, ctx)
                }),
        )
    }

    /// A binding is gone (removed or expired): its device actor, and what
    /// the PF kept for that device's deferred pushes (refusals, the last
    /// push's queue version, push retries: a retry timer left behind finds
    /// no entry and does nothing, and no longer keeps the PF active).
    fn drop_binding(&mut self, key: &str) {
        self.bindings.remove(key);
        self.devices.remove(key);
        self.refused.remove(key);
        self.pushed_at.remove(key);
        self.push_retry.remove(key);
    }

    fn purge_expired(&mut self) {
        let now = unix_now();
        let expired: Vec<String> = self
            .bindings
            .values()
            .filter(|b| !b.is_live(now))
            .map(|b| b.record.key.clone())
            .collect();
        for key in expired {
            tracing::info!(aor = %self.aor, %key, "registration expired");
            self.drop_binding(&key);
            if let Err(e) = self.env.store.remove_expired(self.aor.as_str(), &key, now) {
                tracing::error!(aor = %self.aor, %key, error = %e, "cannot remove expired binding");
            }
        }
        self.note_bindings_changed();
    }

    /// Returns the keys of the bindings that were added or refreshed.
    fn apply(&mut self, removals: Vec<String>, upserts: Vec<BindingRecord>) -> Result<Vec<String>, RegisterError> {
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
            tracing::info!(aor = %self.aor, %key, "registration removed");
            self.drop_binding(&key);
        }
        let mut refreshed = Vec::with_capacity(upserts.len());
        for rec in upserts {
            let key = rec.key.clone();
            let Some(b) = Binding::from_record(rec) else { continue };
            refreshed.push(key.clone());
            tracing::info!(aor = %self.aor, %key, contact = %b.record.contact, expires_at = b.record.expires_at, "registered");
            if let Some(dev) = self.devices.get(&key) {
                dev.do_send(Rebind(b.clone()));
            }
            self.bindings.insert(key, b);
        }
        self.note_bindings_changed();
        Ok(refreshed)
    }
}

impl Actor for ParticipatingFunction {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        self.me = Some(ctx.address().downgrade());
        self.load();
        self.load_deferred_state();
        self.schedule_reminder(ctx);
        self.start_housekeeping(ctx);
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

    fn handle(&mut self, Register(req): Register, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let now = unix_now();
        let (changed, refreshed) = match registrar::plan(&self.bindings, &req, &self.env.policy.get(), now) {
            Ok(plan) => {
                let changed = !plan.removals.is_empty() || !plan.upserts.is_empty();
                match self.apply(plan.removals, plan.upserts) {
                    Ok(refreshed) => (changed, refreshed),
                    Err(e) => return Box::pin(fut::ready(Err(e))),
                }
            }
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let contacts = registrar::contact_list(
            &self.aor,
            self.bindings.values(),
            now,
            &self.env.temp_gruus,
            self.env.domains.primary(),
        );
        if !changed {
            return Box::pin(fut::ready(Ok(RegisterOutcome { contacts })));
        }
        self.after_flush(move |res, act, ctx| {
            res.map_err(|e| {
                tracing::error!(aor = %act.aor, error = %e, "flush failed; registration not acknowledged");
                RegisterError::Store(e.to_string())
            })?;
            // A device came (back): deferred messages go to it (push) or are announced (notify).
            act.device_available(&refreshed, ctx);
            Ok(RegisterOutcome { contacts })
        })
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

    fn handle(&mut self, _: PurgeExpired, _: &mut Context<Self>) {
        self.purge_expired();
    }
}
