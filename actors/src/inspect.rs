//! Inspection of the live actor graph (admin API): snapshots of a
//! ParticipatingFunction and its device actors, of a ControllingFunction,
//! and the stored view of a user that works without activating it.
//!
//! Mailbox depth: actix does not expose the length of an actor's mailbox, so
//! the snapshots report what the actors count themselves: `in_flight` (PF:
//! requests being worked on, i.e. waiting on devices or on a flush) and
//! `pending` (device: forks sent and not yet answered). The admin API adds
//! the round-trip time of the snapshot message itself, which grows with the
//! queue in front of it.

use std::time::Instant;

use actix::prelude::*;
use cpm_sip::caps::Capabilities;
use cpm_store::BindingRecord;
use serde::Serialize;

use crate::device::ClientRegistration;
use crate::pf::{Binding, ParticipatingFunction};
use crate::preferences::Preferences;
use crate::{unix_now, Aor, Env};

/// One registration as the inspector shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationView {
    pub key: String,
    pub contact: String,
    pub uri: String,
    pub instance: Option<String>,
    pub transport: String,
    pub source: String,
    pub registered_at: u64,
    pub expires_at: u64,
    /// Seconds left (0 once expired).
    pub expires_in: u64,
    pub gruu: bool,
    /// Feature tags as registered (RFC 3840).
    pub capabilities: Vec<String>,
    /// Can take pager-mode CPM messages.
    pub cpm_capable: bool,
    /// Has an address to send to.
    pub reachable: bool,
    /// The ClientRegistration actor, when one is running (they start on the first delivery).
    pub actor: Option<DeviceActorView>,
}

/// A live ClientRegistration actor.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceActorView {
    pub age_ms: u64,
    pub idle_ms: u64,
    /// Forks sent to the device since the actor started.
    pub forks: u64,
    /// Forks not answered yet (the device actor's own queue).
    pub pending: usize,
    /// Forks the device answered 2xx.
    pub delivered: u64,
}

/// A live ParticipatingFunction.
#[derive(Debug, Clone, Serialize)]
pub struct PfSnapshot {
    pub aor: String,
    pub age_ms: u64,
    pub idle_ms: u64,
    /// Requests being worked on (waiting on devices or on a flush).
    pub in_flight: usize,
    pub dnd: bool,
    pub deferred_count: usize,
    pub deferred_bytes: u64,
    /// Devices a deferred push is running to.
    pub pushing: Vec<String>,
    /// Devices that did not take their deferred messages: push retries.
    pub push_retries: Vec<crate::pf::PushRetryView>,
    pub preferences: Preferences,
    pub registrations: Vec<RegistrationView>,
}

pub fn capability_tags(caps: &Capabilities) -> Vec<String> {
    let mut out = Vec::new();
    if caps.sip_im {
        out.push(cpm_sip::caps::TAG_SIP_IM.to_string());
    }
    out.extend(caps.icsi.iter().map(|i| format!("icsi:{i}")));
    out.extend(caps.iari.iter().map(|i| format!("iari:{i}")));
    out.extend(caps.other.iter().cloned());
    out
}

impl RegistrationView {
    pub fn from_binding(b: &Binding, now: u64) -> RegistrationView {
        let r = &b.record;
        RegistrationView {
            key: r.key.clone(),
            contact: r.contact.clone(),
            uri: r.uri.clone(),
            instance: r.instance.clone(),
            transport: r.transport.clone(),
            source: r.source.clone(),
            registered_at: r.registered_at,
            expires_at: r.expires_at,
            expires_in: b.remaining(now),
            gruu: r.gruu,
            capabilities: capability_tags(&b.caps),
            cpm_capable: b.caps.accepts_cpm_message(),
            reachable: b.target.is_some(),
            actor: None,
        }
    }

    /// From a stored record (passive user); None if it no longer parses.
    pub fn from_record(rec: BindingRecord, now: u64) -> Option<RegistrationView> {
        Binding::from_record(rec).map(|b| RegistrationView::from_binding(&b, now))
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Ask a PF for its state (and its device actors for theirs).
#[derive(Message, Clone)]
#[rtype(result = "PfSnapshot")]
pub struct SnapshotPf;

impl Handler<SnapshotPf> for ParticipatingFunction {
    type Result = ResponseActFuture<Self, PfSnapshot>;

    fn handle(&mut self, _: SnapshotPf, _: &mut Context<Self>) -> Self::Result {
        let now = unix_now();
        let regs: Vec<RegistrationView> = self
            .bindings
            .values()
            .map(|b| RegistrationView::from_binding(b, now))
            .collect();
        let devices: Vec<(String, Addr<ClientRegistration>)> =
            self.devices.iter().map(|(k, a)| (k.clone(), a.clone())).collect();
        let mut pushing: Vec<String> = self.pushing.iter().cloned().collect();
        pushing.sort();
        let snap = PfSnapshot {
            aor: self.aor.to_string(),
            age_ms: ms(self.started),
            idle_ms: ms(self.timing.last_activity()),
            in_flight: self.in_flight.get(),
            dnd: self.dnd,
            deferred_count: self.deferred_count,
            deferred_bytes: self.deferred_bytes,
            pushing,
            push_retries: self.push_retry_view(),
            preferences: self.prefs.clone(),
            registrations: regs,
        };
        Box::pin(
            async move {
                let mut views = Vec::with_capacity(devices.len());
                for (key, addr) in devices {
                    if let Ok(v) = addr.send(SnapshotDevice).await {
                        views.push((key, v));
                    }
                }
                views
            }
            .into_actor(self)
            .map(move |views, _, _| {
                let mut snap = snap;
                for (key, view) in views {
                    if let Some(r) = snap.registrations.iter_mut().find(|r| r.key == key) {
                        r.actor = Some(view);
                    }
                }
                snap
            }),
        )
    }
}

/// Ask a device actor for its counters.
#[derive(Message, Clone)]
#[rtype(result = "DeviceActorView")]
pub struct SnapshotDevice;

impl Handler<SnapshotDevice> for ClientRegistration {
    type Result = MessageResult<SnapshotDevice>;

    fn handle(&mut self, _: SnapshotDevice, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DeviceActorView {
            age_ms: ms(self.started),
            idle_ms: ms(self.last_activity),
            forks: self.forks,
            pending: self.pending.get(),
            delivered: self.delivered.get(),
        })
    }
}

/// A live ControllingFunction (one per group with recent traffic).
#[derive(Debug, Clone, Serialize)]
pub struct CfSnapshot {
    pub group: String,
    pub age_ms: u64,
    /// Milliseconds since its last message or report.
    pub idle_ms: u64,
    /// Group messages whose disposition reports it still keeps a record of
    /// (in the store; counted up to 10,000).
    pub pending_reports: usize,
    /// Group messages whose copies are on their way (the fan-out journal),
    /// and the member copies among them not done yet.
    pub fanouts: usize,
    pub copies_in_flight: usize,
}

/// Records counted for the inspector at most (a count, not a scan of a
/// week of a busy group's messages).
const SNAPSHOT_COUNT_CAP: usize = 10_000;

impl CfSnapshot {
    /// Fill in `pending_reports` from the store. Done by the caller (the
    /// admin API's own thread), not in the CF: up to 10,000 store reads
    /// per group would hold up the worker that runs the CF and the PFs
    /// beside it for every graph request.
    pub fn count_reports(mut self, store: &cpm_store::Store) -> CfSnapshot {
        self.pending_reports = store.group_report_count(&self.group, SNAPSHOT_COUNT_CAP).unwrap_or(0);
        self
    }
}

/// Ask a CF for its state (the handler is in `cf/mod.rs`, next to the
/// fields); [`CfSnapshot::count_reports`] completes it.
#[derive(Message, Clone)]
#[rtype(result = "CfSnapshot")]
pub struct SnapshotCf;

/// New preferences for this user (admin provisioning): in force for the
/// next message. A do-not-disturb state a device set at run time still wins.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct SetPreferences(pub Preferences);

impl Handler<SetPreferences> for ParticipatingFunction {
    type Result = ();

    fn handle(&mut self, SetPreferences(prefs): SetPreferences, _: &mut Context<Self>) {
        let stored_dnd = self.env.store.dnd(self.aor.as_str()).ok().flatten();
        self.dnd = stored_dnd.unwrap_or(prefs.dnd);
        self.prefs = prefs;
        tracing::info!(aor = %self.aor, "preferences changed");
    }
}

/// A deferred message, summarized.
#[derive(Debug, Clone, Serialize)]
pub struct DeferredView {
    pub seq: u64,
    pub from: String,
    pub subject: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub received_at: u64,
    pub expires_at: u64,
    /// The one device that may take it (a report waiting for the device
    /// that sent the original); `None`: any device.
    pub for_device: Option<String>,
}

/// What the store holds about a user: works for passive users without
/// activating them.
#[derive(Debug, Clone, Serialize)]
pub struct StoredUser {
    pub aor: String,
    pub registrations: Vec<RegistrationView>,
    pub deferred_count: usize,
    pub deferred_bytes: u64,
    /// Queued records that cannot be read (damaged on disk): not listed,
    /// reaped at their expiry.
    pub deferred_damaged: usize,
    /// The oldest queued messages (at most `limit`).
    pub deferred: Vec<DeferredView>,
    /// Objects in the Message Storage Server.
    pub stored_messages: usize,
    /// Do-not-disturb set by a device at run time (None: the preference applies).
    pub dnd_runtime: Option<bool>,
}

/// Read a user from the store. Errors are reported as text.
pub fn stored_user(env: &Env, aor: &Aor, limit: usize) -> Result<StoredUser, String> {
    let now = unix_now();
    let store = &env.store;
    let key = aor.as_str();
    let registrations = store
        .bindings(key)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|r| RegistrationView::from_record(r, now))
        .collect();
    let usage = store.deferred_usage(key).map_err(|e| e.to_string())?;
    let (deferred_count, deferred_bytes, deferred_damaged) = (usage.count, usage.bytes, usage.damaged);
    let deferred = store
        .deferred(key, None, limit)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|d| DeferredView {
            seq: d.seq,
            from: d.from,
            subject: d.subject,
            content_type: d.content_type,
            size: d.size,
            received_at: d.received_at,
            expires_at: d.expires_at,
            for_device: d.target,
        })
        .collect();
    Ok(StoredUser {
        aor: aor.to_string(),
        registrations,
        deferred_count,
        deferred_bytes,
        deferred_damaged,
        deferred,
        stored_messages: store.mss_count(key).map_err(|e| e.to_string())?,
        dnd_runtime: store.dnd(key).map_err(|e| e.to_string())?,
    })
}

impl ParticipatingFunction {
    /// Record a hop or decision of the request `call_id` in the message trace.
    /// Lazy like [`crate::Tracer::record`]: pass `format_args!(...)`.
    pub(crate) fn trace(&self, call_id: &str, event: &'static str, detail: impl std::fmt::Display) {
        self.env.tracer.record(call_id, &self.trace_actor, event, detail);
    }

    /// As `trace`, the detail written into the event's own buffer.
    pub(crate) fn trace_with(&self, call_id: &str, event: &'static str, detail: impl FnOnce(&mut String)) {
        self.env.tracer.record_with(call_id, &self.trace_actor, event, detail);
    }
}
