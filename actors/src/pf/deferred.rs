//! Deferred messages (001 §5.2.2.2, 003 §5.2.5): queued durably and
//! acknowledged only after the flush; pushed in arrival order to a device
//! when it registers (removed only when it answered 2xx), or announced to
//! the devices (notify and wait); expired by the store's ordered index.

use std::net::SocketAddr;

use actix::prelude::*;
use bytes::Bytes;
use cpm_sip::cpim::Cpim;
use cpm_sip::imdn::Status;
use cpm_sip::{Headers, Message, Method, SipUri, StartLine};
use cpm_store::{DeferredRecord, NewDeferred, NewStoredObject};

use super::notify::{self, Action, ActionRequest};
use super::pager::{cpim_header, refuses_the_message, DeliverPager, DeliveryOutcome};
use super::{routing, ParticipatingFunction};
use crate::device::Fork;
use crate::preferences::{DeferredMode, ExpiryAction};
use crate::unix_now;

/// Records read per store page while looking for the next message to push.
const PAGE: usize = 64;

impl ParticipatingFunction {
    pub(super) fn load_deferred_state(&mut self) {
        match self.env.store.deferred_usage(self.aor.as_str()) {
            Ok(usage) => {
                self.deferred_count = usage.count;
                self.deferred_bytes = usage.bytes;
                self.waiting_reports = usage.targeted;
            }
            Err(e) => tracing::error!(aor = %self.aor, error = %e, "cannot read deferred queue usage"),
        }
        match self.env.store.dnd(self.aor.as_str()) {
            Ok(Some(on)) => self.dnd = on,
            Ok(None) => {}
            Err(e) => tracing::error!(aor = %self.aor, error = %e, "cannot read do-not-disturb state"),
        }
    }

    /// Queue the message; 202 only once it is on disk. `target`: the one
    /// device that may take it (a report for the device that sent the
    /// original, `report_target`).
    pub(super) fn defer(
        &mut self,
        msg: DeliverPager,
        target: Option<String>,
    ) -> ResponseActFuture<Self, DeliveryOutcome> {
        let pol = self.env.policy.get();
        let policy = &pol.deferred;
        let raw = msg.request.to_bytes();
        let full = |act: &Self| {
            act.deferred_count + 1 > policy.max_messages || act.deferred_bytes + raw.len() as u64 > policy.max_bytes
        };
        if full(self) && msg.report_for.is_none() && self.waiting_reports > 0 {
            self.make_room(|act| !full(act));
        }
        if full(self) {
            tracing::warn!(aor = %self.aor, count = self.deferred_count, bytes = self.deferred_bytes, "deferred queue full");
            self.trace(
                msg.request.call_id().unwrap_or_default(),
                "queue-full",
                format_args!("{} messages", self.deferred_count),
            );
            return Box::pin(fut::ready(DeliveryOutcome::QueueFull {
                retry_after: policy.retry_after,
            }));
        }
        let now = unix_now();
        let asked = msg.request.header("Expires").and_then(|v| v.trim().parse::<u64>().ok());
        let lifetime = asked.map_or(policy.default_expiry.as_secs(), |s| s.min(policy.max_expiry.as_secs()));
        let from = if msg.anonymous {
            "sip:anonymous@anonymous.invalid".to_string()
        } else {
            msg.sender.to_string()
        };
        let subject = msg
            .request
            .header("Subject")
            .map(str::to_string)
            .or_else(|| cpim_header(&msg.request.body, "Subject"));
        let new = NewDeferred {
            target,
            received_at: now,
            expires_at: now + lifetime,
            from,
            subject,
            content_type: msg.request.content_type().unwrap_or_default(),
            size: msg.request.body.len() as u64,
            request: raw.to_vec(),
        };
        let rec = match self.env.store.enqueue_deferred(self.aor.as_str(), new) {
            Ok(rec) => rec,
            Err(e) => {
                tracing::error!(aor = %self.aor, error = %e, "cannot queue deferred message");
                return Box::pin(fut::ready(DeliveryOutcome::Failed(e.to_string())));
            }
        };
        self.deferred_count += 1;
        self.queue_version += 1;
        self.deferred_bytes += rec.request.len() as u64;
        self.waiting_reports += usize::from(rec.target.is_some());
        let seq = rec.seq;
        tracing::info!(aor = %self.aor, seq, expires_at = rec.expires_at, target = rec.target.as_deref(), "message deferred");
        self.trace(
            msg.request.call_id().unwrap_or_default(),
            "deferred",
            format_args!(
                "seq {seq}, expires at {}, for {}",
                rec.expires_at,
                rec.target.as_deref().unwrap_or("any device")
            ),
        );
        self.after_flush(move |res, act, ctx| {
            if let Err(e) = res {
                tracing::error!(aor = %act.aor, error = %e, "flush failed; deferred message not acknowledged");
                return DeliveryOutcome::Failed(e.to_string());
            }
            if act.prefs.deferred_delivery == DeferredMode::Notify && !act.dnd {
                let keys = act.eligible_keys();
                act.notify_devices(&keys);
                act.schedule_reminder(ctx);
            }
            DeliveryOutcome::Deferred { seq }
        })
    }

    /// The queue is full and a message (not a report) wants in: drop the
    /// oldest reports waiting for a device that is away until `fits`. A
    /// device that never comes back must not make its user's queue refuse
    /// messages for days; such a report is worth less than a message.
    fn make_room(&mut self, fits: impl Fn(&Self) -> bool) {
        // Page by page, oldest first, and only as far as needed: the queue
        // may hold max_bytes of requests, not to be read at once in the actor.
        let mut after = None;
        while !fits(self) {
            let page = match self.env.store.deferred(self.aor.as_str(), after, PAGE) {
                Ok(page) => page,
                Err(e) => return tracing::error!(aor = %self.aor, error = %e, "cannot read deferred queue"),
            };
            after = page.last().map(|r| r.seq);
            for rec in &page {
                if fits(self) {
                    return;
                }
                if rec.target.is_none() || self.claimed.contains(&rec.seq) {
                    continue;
                }
                if let Some(rec) = self.take(rec.seq) {
                    tracing::warn!(aor = %self.aor, seq = rec.seq, target = rec.target.as_deref(), "queue full: a report waiting for an absent device dropped for a message");
                }
            }
            if page.len() < PAGE {
                return;
            }
        }
    }

    /// Hand the message to the Message Storage Server; 202 once on disk.
    pub(super) fn store_in_mss(&mut self, msg: DeliverPager) -> ResponseActFuture<Self, DeliveryOutcome> {
        let kept = without_delivery_request(&msg.request);
        let obj = stored_object(&kept, msg.sender.as_str(), self.aor.as_str());
        match self.env.store.mss_store(self.aor.as_str(), obj) {
            Ok(stored) => {
                let id = stored.id;
                tracing::info!(aor = %self.aor, id, "message stored in the MSS");
                self.trace(
                    msg.request.call_id().unwrap_or_default(),
                    "stored",
                    format_args!("MSS object {id}"),
                );
                self.report(&msg.request.to_bytes(), Status::Delivered);
                self.after_flush(move |res, _, _| match res {
                    Ok(()) => DeliveryOutcome::Stored { id },
                    Err(e) => DeliveryOutcome::Failed(e.to_string()),
                })
            }
            Err(e) => {
                tracing::error!(aor = %self.aor, error = %e, "cannot store message in the MSS");
                Box::pin(fut::ready(DeliveryOutcome::Failed(e.to_string())))
            }
        }
    }

    /// Live devices that can take CPM messages.
    pub(super) fn eligible_keys(&self) -> Vec<String> {
        let now = unix_now();
        self.bindings
            .values()
            .filter(|b| b.is_live(now) && b.caps.accepts_cpm_message() && b.target.is_some())
            .map(|b| b.record.key.clone())
            .collect()
    }

    /// Devices (re)registered: push the queue to them, or announce it.
    pub(super) fn device_available(&mut self, keys: &[String], ctx: &mut Context<Self>) {
        // A device that registers again (its capabilities may have changed)
        // is offered what it refused before.
        keys.iter().for_each(|k| {
            self.refused.remove(k);
        });
        if self.dnd || self.deferred_count == 0 {
            return;
        }
        let eligible = self.eligible_keys();
        let keys: Vec<String> = keys.iter().filter(|k| eligible.contains(k)).cloned().collect();
        match self.prefs.deferred_delivery {
            DeferredMode::Push => keys.into_iter().for_each(|k| self.start_push(k, ctx)),
            DeferredMode::Notify => {
                self.notify_devices(&keys);
                self.schedule_reminder(ctx);
            }
        }
    }

    /// A live message is being forked to device `key`, which is as good a
    /// sign that it is reachable as a REGISTER: if messages were deferred
    /// since its last push (it did not answer then, or it was away without
    /// registering again), push them now, before the live one (whose fork
    /// `fork_to` holds until the push ends, so it does not overtake them).
    /// Otherwise they would wait for its next REGISTER, up to a
    /// registration interval. Push mode only: notify mode announces at
    /// deferral and by reminders.
    pub(super) fn push_before_live(&mut self, key: &str, ctx: &mut Context<Self>) {
        if self.deferred_count == 0
            || self.dnd
            || self.prefs.deferred_delivery != DeferredMode::Push
            || self.pushing.contains(key)
            || self.pushed_at.get(key) == Some(&self.queue_version)
        {
            return;
        }
        tracing::info!(aor = %self.aor, %key, "live message for a device with deferred messages: pushing them first");
        self.start_push(key.to_string(), ctx);
    }

    pub(super) fn start_push(&mut self, key: String, ctx: &mut Context<Self>) {
        if self.pushing.insert(key.clone()) {
            self.pushed_at.insert(key.clone(), self.queue_version);
            tracing::info!(aor = %self.aor, %key, queued = self.deferred_count, "pushing deferred messages");
            ctx.notify(PushNext { key, only: None });
        }
    }

    /// The oldest queued message this device can take that nobody else is
    /// delivering and that has not expired.
    fn next_for(&self, key: &str, only: Option<u64>) -> Option<(DeferredRecord, Message)> {
        let binding = self.bindings.get(key)?;
        let now = unix_now();
        let mut after = None;
        loop {
            let page = match only {
                Some(seq) => self
                    .env
                    .store
                    .deferred_get(self.aor.as_str(), seq)
                    .map(|r| r.into_iter().collect()),
                None => self.env.store.deferred(self.aor.as_str(), after, PAGE),
            };
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(aor = %self.aor, error = %e, "cannot read deferred queue");
                    return None;
                }
            };
            for rec in &page {
                if self.claimed.contains(&rec.seq) || rec.expires_at <= now {
                    continue;
                }
                if only.is_none() && self.refused.get(key).is_some_and(|r| r.contains(&rec.seq)) {
                    continue; // this device said it cannot take this one
                }
                if !self.may_take(rec, key) {
                    continue; // a report or a GRUU's message for another device
                }
                let Some(req) = rebuild(&rec.request) else {
                    tracing::error!(aor = %self.aor, seq = rec.seq, "stored deferred message does not parse; left in queue");
                    continue;
                };
                if routing::Criteria::new(&req, None, None).check(binding, now).is_ok() {
                    return Some((rec.clone(), req));
                }
            }
            if only.is_some() || page.len() < PAGE {
                return None;
            }
            after = page.last().map(|r| r.seq);
        }
    }

    /// Whether device `key` may take deferred `rec`: not when it is a report
    /// waiting for another device, nor a message sent to the GRUU of
    /// another device (or of an earlier registration of this one).
    fn may_take(&self, rec: &DeferredRecord, key: &str) -> bool {
        if rec.target.as_deref().is_some_and(|t| t != key) {
            return false;
        }
        // The stored request's Request-URI: its first line's second word.
        let uri = rec
            .request
            .split(|&b| b == b' ')
            .nth(1)
            .and_then(|u| std::str::from_utf8(u).ok())
            .and_then(|u| SipUri::parse(u).ok());
        match uri.and_then(|u| crate::gruu::target_of(&u, &self.env.temp_gruus)) {
            None => true,
            Some(g) => self
                .bindings
                .get(key)
                .is_some_and(|b| g.names(b.record.instance.as_deref(), &b.record.call_id)),
        }
    }

    fn forget(&mut self, rec: &DeferredRecord) {
        self.refused.retain(|_, seqs| {
            seqs.remove(&rec.seq);
            !seqs.is_empty()
        });
        self.deferred_count = self.deferred_count.saturating_sub(1);
        self.deferred_bytes = self.deferred_bytes.saturating_sub(rec.request.len() as u64);
        if rec.target.is_some() {
            self.waiting_reports = self.waiting_reports.saturating_sub(1);
        }
    }

    /// Send the current deferred list to each of `keys`.
    pub(super) fn notify_devices(&mut self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let records = match self.env.store.deferred(self.aor.as_str(), None, notify::MAX_ACTIONS) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(aor = %self.aor, error = %e, "cannot read deferred queue");
                return;
            }
        };
        if records.is_empty() {
            return;
        }
        let domain = self.env.domains.primary().to_string();
        for key in keys {
            // A report waiting for another device, or a message sent to
            // another device's GRUU, is not this one's to take.
            let mine: Vec<&DeferredRecord> = records.iter().filter(|r| self.may_take(r, key)).collect();
            if mine.is_empty() {
                continue;
            }
            let body = notify::list_body(&self.aor, &mine);
            let Some(dev) = self.device(key) else { continue };
            let Some(request) = notification(&self.aor, &domain, &body) else {
                continue;
            };
            let aor = self.aor.clone();
            let key = key.clone();
            actix_rt::spawn(async move {
                match dev
                    .send(Fork {
                        request: request.into(),
                    })
                    .await
                {
                    Ok(Ok(resp)) => {
                        tracing::info!(%aor, %key, status = ?resp.status(), "deferred-message notification sent")
                    }
                    Ok(Err(e)) => tracing::info!(%aor, %key, error = %e, "deferred-message notification failed"),
                    Err(e) => tracing::warn!(%aor, %key, error = %e, "device actor unavailable"),
                }
            });
        }
    }

    /// CPM-CONV-008: remind the user of still-deferred messages.
    pub(super) fn schedule_reminder(&mut self, ctx: &mut Context<Self>) {
        let Some(every) = self.env.policy.get().deferred.reminder_interval else {
            return;
        };
        let wanted = self.prefs.deferred_delivery == DeferredMode::Notify && !self.dnd && self.deferred_count > 0;
        match (wanted, self.reminder) {
            (true, None) => {
                self.reminder = Some(ctx.run_interval(every, |act, ctx| {
                    if act.dnd || act.deferred_count == 0 {
                        if let Some(h) = act.reminder.take() {
                            ctx.cancel_future(h);
                        }
                        return;
                    }
                    let keys = act.eligible_keys();
                    act.notify_devices(&keys);
                }));
            }
            (false, Some(h)) => {
                ctx.cancel_future(h);
                self.reminder = None;
            }
            _ => {}
        }
    }

    /// Remove a deferred message for an action or on expiry.
    pub(super) fn take(&mut self, seq: u64) -> Option<DeferredRecord> {
        match self.env.store.remove_deferred(self.aor.as_str(), seq) {
            Ok(Some(rec)) => {
                self.forget(&rec);
                Some(rec)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(aor = %self.aor, seq, error = %e, "cannot remove deferred message");
                None
            }
        }
    }

    /// Move a deferred message to the MSS; false if it could not be stored
    /// (it then stays queued: nothing is lost).
    fn move_to_mss(&mut self, seq: u64) -> bool {
        let Ok(Some(rec)) = self.env.store.deferred_get(self.aor.as_str(), seq) else {
            return false;
        };
        let Some(req) = rebuild(&rec.request) else { return false };
        let obj = stored_object(&without_delivery_request(&req), &rec.from, self.aor.as_str());
        if let Err(e) = self.env.store.mss_store(self.aor.as_str(), obj) {
            tracing::error!(aor = %self.aor, seq, error = %e, "cannot store deferred message in the MSS");
            return false;
        }
        if self.take(seq).is_none() {
            return false;
        }
        self.report(&rec.request, Status::Delivered);
        true
    }
}

/// The stored request as the device receives it: the original From, To,
/// Call-ID, CPIM body and IMDN headers; our own Via is added on sending.
pub(super) fn rebuild(raw: &[u8]) -> Option<Message> {
    let mut req = Message::parse(Bytes::copy_from_slice(raw)).ok()?;
    req.headers.remove_all("Via");
    req.headers.remove_all("Expires");
    req.headers.set("Max-Forwards", "71"); // the device leg takes it to 70
    Some(req)
}

/// The copy kept in the MSS no longer asks for a positive-delivery report:
/// the PF gave that report when it stored the message (003 §5.2.6).
fn without_delivery_request(req: &Message) -> Message {
    let mut kept = req.clone();
    if kept.content_type_is("message/cpim") {
        if let Ok(mut cpim) = Cpim::parse_bytes(&kept.body) {
            let mut asked = cpim.disposition_request();
            asked.positive_delivery = false;
            cpim.set_disposition_request(asked);
            kept.body = cpim.to_bytes();
        }
    }
    kept
}

fn stored_object(req: &Message, from: &str, to: &str) -> NewStoredObject {
    NewStoredObject {
        stored_at: unix_now(),
        kind: "pager".into(),
        from: from.to_string(),
        to: to.to_string(),
        content_type: req.content_type().unwrap_or_default(),
        conversation_id: req.header("Conversation-ID").map(str::to_string),
        contribution_id: req.header("Contribution-ID").map(str::to_string),
        request: req.to_bytes().to_vec(),
    }
}

/// The in-band notification to one device.
fn notification(aor: &crate::Aor, domain: &str, body: &str) -> Option<Message> {
    let mut headers = Headers::default();
    let service = format!("sip:{}@{domain}", notify::SERVICE_USER);
    let id = format!("{:x}{:x}", unix_now(), rand_u64());
    headers.push("From", format!("<{service}>;tag={id}"));
    headers.push("To", format!("<{aor}>"));
    headers.push("Call-ID", format!("{id}@{domain}"));
    headers.push("CSeq", "1 MESSAGE");
    headers.push("Max-Forwards", "71");
    headers.push("Content-Type", notify::LIST_TYPE);
    Some(Message {
        start: StartLine::Request {
            method: Method::Message,
            // Replaced by the device contact when the device actor sends it.
            uri: SipUri::parse(aor.as_str()).ok()?,
        },
        headers,
        body: Bytes::from(body.to_string()),
    })
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// Deliver the next deferred message to one device (push loop step).
/// `only` restricts it to one message (a notify-mode `retrieve`).
#[derive(Message)]
#[rtype(result = "()")]
struct PushNext {
    key: String,
    only: Option<u64>,
}

impl Handler<PushNext> for ParticipatingFunction {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, PushNext { key, only }: PushNext, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let next = if self.dnd && only.is_none() {
            None
        } else {
            self.next_for(&key, only)
        };
        let (Some((rec, request)), Some(dev)) = (next, self.device(&key)) else {
            if only.is_none() {
                self.pushing.remove(&key);
                self.release_held(&key);
                tracing::debug!(aor = %self.aor, %key, "push finished");
            }
            return Box::pin(fut::ready(()));
        };
        let seq = rec.seq;
        let call_id = request.call_id().unwrap_or_default().to_string();
        self.trace(&call_id, "deferred-push", format_args!("seq {seq} to {key}"));
        self.claimed.insert(seq);
        let busy = self.in_flight.enter();
        Box::pin(
            dev.send(Fork {
                request: request.into(),
            })
            .into_actor(self)
            .then(move |res, act, ctx| {
                drop(busy);
                act.claimed.remove(&seq);
                let status = match &res {
                    Ok(Ok(r)) => r.status(),
                    _ => None,
                };
                let accepted = status.is_some_and(|s| (200..300).contains(&s));
                if let (Some(s), None) = (status.filter(|s| refuses_the_message(*s)), only) {
                    // This message, not the device: the push goes on with
                    // the next one (003 §5.2.5.2: deliver what it can take;
                    // what it did not take waits).
                    tracing::info!(aor = %act.aor, %key, seq, status = s, "deferred message refused by the device; push goes on");
                    act.trace(&call_id, "deferred-push-refused", format_args!("seq {seq} to {key}: status {s}"));
                    act.refused.entry(key.clone()).or_default().insert(seq);
                    ctx.notify(PushNext { key, only: None });
                    return Box::pin(fut::ready(())) as ResponseActFuture<Self, ()>;
                }
                if !accepted {
                    // The rest waits for the next registration (003 §5.2.5.2),
                    // or the next retry (retry.rs).
                    let why = match &res {
                        Ok(Ok(r)) => format!("status {:?}", r.status()),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::info!(aor = %act.aor, %key, seq, %why, "deferred message not accepted; push stopped");
                    act.trace(
                        &call_id,
                        "deferred-push-stopped",
                        format_args!("seq {seq} to {key}: {why}"),
                    );
                    if only.is_none() {
                        act.pushing.remove(&key);
                        act.release_held(&key);
                        act.schedule_push_retry(&key, ctx);
                    }
                    return Box::pin(fut::ready(())) as ResponseActFuture<Self, ()>;
                }
                tracing::info!(aor = %act.aor, %key, seq, "deferred message delivered");
                act.trace(&call_id, "deferred-delivered", format_args!("seq {seq} to {key}"));
                act.take(seq);
                act.push_retry_reset(&key, ctx);
                let store = act.env.store.clone();
                Box::pin(
                    async move { store.flush().await }
                        .into_actor(act)
                        .map(move |res, act, ctx| {
                            if let Err(e) = res {
                                tracing::error!(aor = %act.aor, error = %e, "flush after delivery failed");
                            }
                            if only.is_none() {
                                ctx.notify(PushNext { key, only: None });
                            }
                        }),
                )
            }),
        )
    }
}

/// From the expiry sweeper: these deferred messages of the user expired.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ExpireDeferred(pub Vec<u64>);

impl Handler<ExpireDeferred> for ParticipatingFunction {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, ExpireDeferred(seqs): ExpireDeferred, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let now = unix_now();
        let action = self.prefs.on_expiry.unwrap_or(self.env.policy.get().deferred.on_expiry);
        for seq in seqs {
            if self.claimed.contains(&seq) {
                continue; // being delivered right now; the sweeper comes back
            }
            match self.env.store.deferred_get(self.aor.as_str(), seq) {
                Ok(Some(rec)) if rec.expires_at <= now => {
                    let done = match action {
                        ExpiryAction::Store => self.move_to_mss(seq),
                        ExpiryAction::Discard => self.take(seq).is_some(),
                    };
                    if done {
                        tracing::info!(aor = %self.aor, seq, ?action, from = %rec.from, "deferred message expired");
                        self.trace(
                            &crate::trace::call_id_of(&rec.request),
                            "deferred-expired",
                            format_args!("seq {seq}: {action:?}"),
                        );
                        if action == ExpiryAction::Discard {
                            // Finally undeliverable: negative delivery, if asked for.
                            self.report(&rec.request, Status::Failed);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(aor = %self.aor, seq, error = %e, "cannot read deferred message"),
            }
        }
        self.after_flush(move |res, act, _| {
            if let Err(e) = res {
                tracing::error!(aor = %act.aor, error = %e, "flush after expiry failed");
            }
        })
    }
}

/// A client's answer to a notification (notify and wait), or a
/// do-not-disturb change, sent by one of the user's devices.
#[derive(Message, Clone)]
#[rtype(result = "DeferredActionsOutcome")]
pub struct DeferredActions {
    pub request: ActionRequest,
    /// Where the device's request came from: `retrieve` delivers there.
    pub source: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct DeferredActionsOutcome {
    pub results: Vec<(u64, &'static str)>,
    pub dnd: bool,
    pub failed: bool,
}

impl Handler<DeferredActions> for ParticipatingFunction {
    type Result = ResponseActFuture<Self, DeferredActionsOutcome>;

    fn handle(&mut self, msg: DeferredActions, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let mut results = Vec::with_capacity(msg.request.actions.len());
        let mut failed = false;
        let requester = self
            .bindings
            .values()
            .find(|b| b.is_from(msg.source))
            .map(|b| b.record.key.clone())
            .or_else(|| self.eligible_keys().into_iter().next());
        for (seq, action) in msg.request.actions {
            let rec = match self.env.store.deferred_get(self.aor.as_str(), seq) {
                Ok(rec) => rec,
                Err(e) => {
                    // Damaged on disk (the expiry sweep reaps it) or a failing
                    // disk: this action cannot be done; the others still are.
                    tracing::error!(aor = %self.aor, seq, ?action, error = %e, "deferred-message action on an unreadable record");
                    results.push((seq, "failed"));
                    continue;
                }
            };
            // A report waiting for another device, or a message sent to
            // another device's GRUU, is not this one's to take.
            let elsewhere = rec.as_ref().is_some_and(|r| match requester.as_deref() {
                Some(key) => !self.may_take(r, key),
                // No device to retrieve to: "no-device", unless it waits for one.
                None => r.target.is_some(),
            });
            let status = match (rec.is_some(), action) {
                (false, _) => "unknown",
                (true, _) if self.claimed.contains(&seq) => "busy",
                (true, Action::Retrieve) if elsewhere => "other-device",
                (true, Action::Keep) => "kept",
                (true, Action::Discard) => match self.take(seq) {
                    Some(_) => "discarded",
                    None => "unknown",
                },
                (true, Action::Store) => {
                    if self.move_to_mss(seq) {
                        "stored"
                    } else {
                        failed = true;
                        "failed"
                    }
                }
                (true, Action::Retrieve) => match &requester {
                    Some(key) => {
                        ctx.notify(PushNext {
                            key: key.clone(),
                            only: Some(seq),
                        });
                        "retrieving"
                    }
                    None => "no-device",
                },
            };
            tracing::info!(aor = %self.aor, seq, ?action, status, "deferred-message action");
            results.push((seq, status));
        }
        if let Some(on) = msg.request.dnd {
            if let Err(e) = self.env.store.set_dnd(self.aor.as_str(), on) {
                tracing::error!(aor = %self.aor, error = %e, "cannot store do-not-disturb");
                failed = true;
            } else if self.dnd != on {
                tracing::info!(aor = %self.aor, dnd = on, "do-not-disturb changed");
                self.dnd = on;
                if !on {
                    // Lifted: what was held back goes out now.
                    let keys = self.eligible_keys();
                    self.device_available(&keys, ctx);
                }
            }
        }
        self.schedule_reminder(ctx);
        self.after_flush(move |res, act, _| DeferredActionsOutcome {
            results,
            dnd: act.dnd,
            failed: failed || res.is_err(),
        })
    }
}
