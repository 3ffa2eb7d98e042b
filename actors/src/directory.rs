//! Address → actor registry with activation on demand.
//!
//! A user without traffic costs only its stored state; the first message for
//! it starts a ParticipatingFunction on the arbiter its AOR hashes to, so the
//! work spreads over all cores and one user's actors always share a thread.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use thiserror::Error;

use crate::{Aor, ControllingFunction, Env, ParticipatingFunction};

#[derive(Debug, Error)]
pub enum DirectoryError {
    #[error("actor for {0} is unavailable")]
    Unavailable(Aor),
}

/// Live actors of one kind by address, activated on demand.
struct Registry<A: Actor<Context = Context<A>>> {
    map: DashMap<Aor, Addr<A>>,
}

impl<A: Actor<Context = Context<A>>> Registry<A> {
    fn new() -> Self {
        Registry { map: DashMap::new() }
    }

    /// The live actor for `key`, started with `activate` if there is none.
    fn get(&self, key: &Aor, activate: impl Fn() -> Addr<A>) -> Addr<A> {
        self.with(key, activate, Addr::clone)
    }

    /// `f` on the live actor for `key` (started with `activate` if there is
    /// none), under the map's lock: a send needs no clone of the address,
    /// which allocates twice.
    fn with<R>(&self, key: &Aor, activate: impl Fn() -> Addr<A>, f: impl FnOnce(&Addr<A>) -> R) -> R {
        if let Some(addr) = self.map.get(key) {
            if addr.connected() {
                return f(&addr);
            }
        }
        let mut entry = self.map.entry(key.clone()).or_insert_with(&activate);
        if !entry.connected() {
            *entry = activate();
        }
        f(&entry)
    }

    /// Send; if the actor stopped between lookup and delivery, activate a
    /// fresh one and try once more.
    async fn send<M>(&self, key: &Aor, msg: M, activate: impl Fn() -> Addr<A>) -> Result<M::Result, DirectoryError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        A: Handler<M>,
    {
        for _ in 0..2 {
            match self.with(key, &activate, |addr| addr.send(msg.clone())).await {
                Ok(result) => return Ok(result),
                Err(_) => self.map.remove_if(key, |_, a| !a.connected()),
            };
        }
        Err(DirectoryError::Unavailable(key.clone()))
    }

    /// Forget a stopping actor unless a newer one took its place.
    fn deactivated(&self, key: &Aor, addr: &Addr<A>) {
        self.map.remove_if(key, |_, a| a == addr);
    }

    fn active(&self) -> Vec<(Aor, Addr<A>)> {
        self.map
            .iter()
            .filter(|e| e.value().connected())
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }
}

#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    pfs: Registry<ParticipatingFunction>,
    /// Controlling Functions of groups, by group identity.
    cfs: Registry<ControllingFunction>,
    arbiters: Vec<ArbiterHandle>,
    env: Env,
    activations: AtomicU64,
}

impl Directory {
    /// `arbiters` must not be empty: actors are spread over them by address hash.
    pub fn new(env: Env, arbiters: Vec<ArbiterHandle>) -> Directory {
        assert!(!arbiters.is_empty(), "Directory needs at least one arbiter");
        Directory {
            inner: Arc::new(Inner {
                pfs: Registry::new(),
                cfs: Registry::new(),
                arbiters,
                env,
                activations: AtomicU64::new(0),
            }),
        }
    }

    pub fn env(&self) -> &Env {
        &self.inner.env
    }

    fn arbiter_for(&self, aor: &Aor) -> &ArbiterHandle {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        aor.hash(&mut h);
        &self.inner.arbiters[(h.finish() as usize) % self.inner.arbiters.len()]
    }

    fn activate_pf(&self, aor: &Aor) -> Addr<ParticipatingFunction> {
        self.inner.activations.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%aor, "activating participating function");
        let (a, dir) = (aor.clone(), self.clone());
        ParticipatingFunction::start_in_arbiter(self.arbiter_for(aor), move |_| ParticipatingFunction::new(a, dir))
    }

    fn activate_cf(&self, group: &Aor) -> Addr<ControllingFunction> {
        tracing::debug!(%group, "activating controlling function");
        let (g, dir) = (group.clone(), self.clone());
        ControllingFunction::start_in_arbiter(self.arbiter_for(group), move |_| ControllingFunction::new(g, dir))
    }

    /// The live PF of `aor`, activating it if needed.
    pub fn pf(&self, aor: &Aor) -> Addr<ParticipatingFunction> {
        self.inner.pfs.get(aor, || self.activate_pf(aor))
    }

    /// Queue `msg` for the PF of `aor` (activating it if needed) without
    /// waiting; a full or closed mailbox gives the message back.
    pub fn try_send<M>(&self, aor: &Aor, msg: M) -> Result<(), SendError<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        ParticipatingFunction: Handler<M>,
    {
        self.inner
            .pfs
            .with(aor, || self.activate_pf(aor), |pf| pf.try_send(msg))
    }

    /// Send to the PF of `aor` (re-activated once if it just passivated).
    pub async fn send<M>(&self, aor: &Aor, msg: M) -> Result<M::Result, DirectoryError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        ParticipatingFunction: Handler<M>,
    {
        self.inner.pfs.send(aor, msg, || self.activate_pf(aor)).await
    }

    /// The live CF of a group, activating it if needed.
    pub fn cf(&self, group: &Aor) -> Addr<ControllingFunction> {
        self.inner.cfs.get(group, || self.activate_cf(group))
    }

    /// Send to a group's CF (re-activated once if it just passivated).
    pub async fn send_cf<M>(&self, group: &Aor, msg: M) -> Result<M::Result, DirectoryError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        ControllingFunction: Handler<M>,
    {
        self.inner.cfs.send(group, msg, || self.activate_cf(group)).await
    }

    /// Called by a stopping PF.
    pub(crate) fn deactivated(&self, aor: &Aor, addr: &Addr<ParticipatingFunction>) {
        self.inner.pfs.deactivated(aor, addr);
    }

    /// Called by a stopping CF.
    pub(crate) fn cf_deactivated(&self, group: &Aor, addr: &Addr<ControllingFunction>) {
        self.inner.cfs.deactivated(group, addr);
    }

    pub fn is_active(&self, aor: &Aor) -> bool {
        self.inner.pfs.map.get(aor).is_some_and(|a| a.connected())
    }

    /// The live PF actors (inspector).
    pub fn active(&self) -> Vec<(Aor, Addr<ParticipatingFunction>)> {
        self.inner.pfs.active()
    }

    /// The live CF actors (inspector).
    pub fn active_cfs(&self) -> Vec<(Aor, Addr<ControllingFunction>)> {
        self.inner.cfs.active()
    }

    /// Live PF actors.
    pub fn active_count(&self) -> usize {
        self.inner.pfs.map.len()
    }

    /// Activations since start (a cost figure for passivation tuning).
    pub fn activations(&self) -> u64 {
        self.inner.activations.load(Ordering::Relaxed)
    }
}
