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
    #[error("participating function for {0} is unavailable")]
    Unavailable(Aor),
}

#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    pfs: DashMap<Aor, Addr<ParticipatingFunction>>,
    /// Controlling Functions of groups, by group identity.
    cfs: DashMap<Aor, Addr<ControllingFunction>>,
    arbiters: Vec<ArbiterHandle>,
    env: Env,
    activations: AtomicU64,
}

impl Directory {
    /// `arbiters` must not be empty: PFs are spread over them by AOR hash.
    pub fn new(env: Env, arbiters: Vec<ArbiterHandle>) -> Directory {
        assert!(!arbiters.is_empty(), "Directory needs at least one arbiter");
        Directory {
            inner: Arc::new(Inner {
                pfs: DashMap::new(),
                cfs: DashMap::new(),
                arbiters,
                env,
                activations: AtomicU64::new(0),
            }),
        }
    }

    pub fn env(&self) -> &Env {
        &self.inner.env
    }

    /// The live PF of `aor`, activating it if needed.
    pub fn pf(&self, aor: &Aor) -> Addr<ParticipatingFunction> {
        if let Some(addr) = self.inner.pfs.get(aor) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let mut entry = self.inner.pfs.entry(aor.clone()).or_insert_with(|| self.activate(aor));
        if !entry.connected() {
            *entry = self.activate(aor);
        }
        entry.clone()
    }

    fn arbiter_for(&self, aor: &Aor) -> &ArbiterHandle {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        aor.hash(&mut h);
        &self.inner.arbiters[(h.finish() as usize) % self.inner.arbiters.len()]
    }

    /// The live CF of a group, activating it if needed.
    pub fn cf(&self, group: &Aor) -> Addr<ControllingFunction> {
        if let Some(addr) = self.inner.cfs.get(group) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let mut entry = self
            .inner
            .cfs
            .entry(group.clone())
            .or_insert_with(|| self.activate_cf(group));
        if !entry.connected() {
            *entry = self.activate_cf(group);
        }
        entry.clone()
    }

    fn activate_cf(&self, group: &Aor) -> Addr<ControllingFunction> {
        tracing::debug!(%group, "activating controlling function");
        let (g, dir) = (group.clone(), self.clone());
        ControllingFunction::start_in_arbiter(self.arbiter_for(group), move |_| ControllingFunction::new(g, dir))
    }

    /// Send to a group's CF, re-activating it once if it just passivated.
    pub async fn send_cf<M>(&self, group: &Aor, msg: M) -> Result<M::Result, DirectoryError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        ControllingFunction: Handler<M>,
    {
        for _ in 0..2 {
            match self.cf(group).send(msg.clone()).await {
                Ok(result) => return Ok(result),
                Err(_) => self.inner.cfs.remove_if(group, |_, a| !a.connected()),
            };
        }
        Err(DirectoryError::Unavailable(group.clone()))
    }

    pub(crate) fn cf_deactivated(&self, group: &Aor, addr: &Addr<ControllingFunction>) {
        self.inner.cfs.remove_if(group, |_, a| a == addr);
    }

    fn activate(&self, aor: &Aor) -> Addr<ParticipatingFunction> {
        let arbiter = self.arbiter_for(aor);
        self.inner.activations.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%aor, "activating participating function");
        let (aor, dir) = (aor.clone(), self.clone());
        ParticipatingFunction::start_in_arbiter(arbiter, move |_| ParticipatingFunction::new(aor, dir))
    }

    /// Send to the PF of `aor`; if it passivated between lookup and delivery,
    /// activate a fresh one and try once more.
    pub async fn send<M>(&self, aor: &Aor, msg: M) -> Result<M::Result, DirectoryError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        ParticipatingFunction: Handler<M>,
    {
        for _ in 0..2 {
            match self.pf(aor).send(msg.clone()).await {
                Ok(result) => return Ok(result),
                Err(_) => self.inner.pfs.remove_if(aor, |_, a| !a.connected()),
            };
        }
        Err(DirectoryError::Unavailable(aor.clone()))
    }

    /// Called by a stopping PF: forget it unless a newer one took its place.
    pub(crate) fn deactivated(&self, aor: &Aor, addr: &Addr<ParticipatingFunction>) {
        self.inner.pfs.remove_if(aor, |_, a| a == addr);
    }

    pub fn is_active(&self, aor: &Aor) -> bool {
        self.inner.pfs.get(aor).is_some_and(|a| a.connected())
    }

    /// The live PF actors (inspector).
    pub fn active(&self) -> Vec<(Aor, Addr<ParticipatingFunction>)> {
        self.inner
            .pfs
            .iter()
            .filter(|e| e.value().connected())
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// The live CF actors (inspector).
    pub fn active_cfs(&self) -> Vec<(Aor, Addr<ControllingFunction>)> {
        self.inner
            .cfs
            .iter()
            .filter(|e| e.value().connected())
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// Live PF actors.
    pub fn active_count(&self) -> usize {
        self.inner.pfs.len()
    }

    /// Activations since start (a cost figure for passivation tuning).
    pub fn activations(&self) -> u64 {
        self.inner.activations.load(Ordering::Relaxed)
    }
}
