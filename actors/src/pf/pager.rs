//! Terminating PF for a pager-mode message (001 §5.2.2.1.1): apply the
//! user's reject rules, fork to every eligible device, and when none takes
//! it do what the preferences say: defer, store, interwork or reject.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cpm_sip::Message;
use futures::stream::{FuturesUnordered, StreamExt};

use super::ordering::ForkResult;
use super::{routing, ParticipatingFunction};
use crate::answer::Answer;
use crate::gruu::GruuTarget;
use crate::preferences::{Declined, Unavailable};
use crate::trace::push_dec;
use crate::{unix_now, Aor};

#[derive(Message, Clone)]
#[rtype(result = "DeliveryOutcome")]
pub struct DeliverPager {
    pub request: Arc<Message>,
    /// The (authorized) originator.
    pub sender: Aor,
    /// Privacy requested or anonymous From (RFC 3323).
    pub anonymous: bool,
    /// The device a GRUU Request-URI names: only that one.
    pub gruu: Option<GruuTarget>,
    /// Set when the sender is this same user: its sending device is skipped.
    pub sender_source: Option<SocketAddr>,
    /// A disposition notification about this message id (sent by this user):
    /// it goes to the device that sent the original if still registered.
    pub report_for: Option<String>,
}

#[derive(Debug)]
pub enum DeliveryOutcome {
    /// A device answered 2xx first; its response goes back to the sender.
    Delivered { response: Box<Message>, forks: usize },
    /// Queued durably (202).
    Deferred { seq: u64 },
    /// Handed to the Message Storage Server (202).
    Stored { id: u64 },
    /// Handed to the Interworking Function (202).
    Interworked { reference: String },
    /// Every device it was forked to refused the message itself (its size
    /// or content: 413, 415, 488, 606); the first refusal goes back.
    Refused { response: Box<Message> },
    /// A preference rule refused it (603).
    Declined(Declined),
    /// The user's preference is to refuse what cannot be delivered now (480).
    Unavailable,
    /// Sent to a temporary GRUU whose device has registered since with
    /// another Call-ID: the GRUU names nothing any more (404, RFC 5627).
    StaleGruu,
    /// Deferred queue over the provider's caps (486 + Retry-After).
    QueueFull { retry_after: u32 },
    /// Could not be stored; the sender must retry (500).
    Failed(String),
}

impl Handler<DeliverPager> for ParticipatingFunction {
    type Result = Answer<Self, DeliveryOutcome>;

    fn handle(&mut self, msg: DeliverPager, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        // Borrowed, not copied (no String per message); the continuation
        // below reads it from `msg` again.
        let call_id = msg.request.call_id().unwrap_or_default();
        // Only a content-type rule reads the payload's types.
        let types = if self.prefs.reject_content_types.is_empty() {
            Vec::new()
        } else {
            content_types(&msg.request)
        };
        if let Err(why) = self.prefs.check(msg.sender.as_str(), msg.anonymous, &types) {
            tracing::info!(aor = %self.aor, %call_id, ?why, "declined by preference");
            self.trace(call_id, "declined", format_args!("{why:?} (preference rule)"));
            return Answer::ready(DeliveryOutcome::Declined(why));
        }
        let now = unix_now();
        let criteria = routing::Criteria::new(&msg.request, msg.gruu.clone(), msg.sender_source);
        let origin = msg.report_for.as_deref().and_then(|id| self.report_target(id));
        let Chosen {
            keys: chosen,
            stale_gruu,
        } = self.choose_devices(&criteria, origin.as_deref(), call_id, now);
        // Messages deferred while a chosen device did not answer go first.
        for key in &chosen {
            self.push_before_live(key, ctx);
        }
        // A fork to a device being pushed its deferred messages is held
        // (ordering.rs) and must be let run after another device answers.
        let any_held = chosen.iter().any(|k| self.pushing.contains(k));
        let forks: Vec<_> = chosen
            .iter()
            .filter_map(|k| self.fork_to(k, msg.request.clone()))
            .collect();
        let n = forks.len();
        if n == 0 && stale_gruu {
            tracing::info!(aor = %self.aor, %call_id, "temporary GRUU of an earlier registration");
            self.trace(
                call_id,
                "stale-gruu",
                "the device registered again with another Call-ID (404)",
            );
            return Answer::ready(DeliveryOutcome::StaleGruu);
        }
        if n == 0 {
            tracing::debug!(aor = %self.aor, %call_id, "no eligible device");
            self.trace(
                call_id,
                "no-eligible-device",
                format_args!("when_unavailable = {:?}", self.prefs.when_unavailable),
            );
            return Answer::Actor(self.unavailable(msg, origin));
        }
        tracing::debug!(aor = %self.aor, %call_id, forks = n, "forking");
        self.trace_with(call_id, "forked", |out| forked_detail(out, n, &chosen));
        // The wait for the devices' answers does not need the PF: it runs
        // outside its context (answer.rs), and only a delivery no device
        // took comes back to the PF, for its preferences.
        let busy = self.in_flight.enter();
        let work = first_answer(forks, self.env.policy.get().fork_timeout);
        let (timing, tracer, actor) = (self.timing.clone(), self.env.tracer.clone(), self.trace_actor.clone());
        let pf = self.me.clone();
        Answer::Detached(Box::pin(async move {
            let (outcome, mut others) = work.await;
            if outcome.is_some() {
                // The other forks' transactions finish on their device
                // actors; only a held one needs its wait kept alive, or the
                // device would never get the message.
                if let Some(rest) = others.take().filter(|_| any_held) {
                    actix::spawn(rest.for_each(|o| {
                        answer_of(o);
                        futures::future::ready(())
                    }));
                }
            }
            timing.touch();
            let call_id = msg.request.call_id().unwrap_or_default();
            match outcome {
                Some(response) if !is_success(&response) => {
                    tracing::info!(pf = %actor, %call_id, forks = n, status = ?response.status(), "every device refused the message");
                    tracer.record(
                        call_id,
                        &actor,
                        "refused-by-devices",
                        format_args!("{:?}", response.status()),
                    );
                    DeliveryOutcome::Refused { response }
                }
                Some(response) => {
                    tracing::debug!(pf = %actor, %call_id, forks = n, "delivered");
                    tracer.record_with(call_id, &actor, "delivered", |out| {
                        delivered_detail(out, response.status(), n)
                    });
                    DeliveryOutcome::Delivered { response, forks: n }
                }
                None => {
                    let outcome = match pf.as_ref().and_then(|pf| pf.upgrade()) {
                        Some(pf) => pf
                            .send(Undelivered {
                                msg,
                                tried: chosen,
                                origin,
                            })
                            .await
                            .map_err(|e| e.to_string()),
                        None => Err("stopped".to_string()),
                    };
                    drop(busy);
                    if let (Ok(DeliveryOutcome::Deferred { seq }), Some(late), Some(pf)) = (&outcome, others, pf) {
                        actix::spawn(take_back_if_answered_late(late, *seq, pf));
                    }
                    outcome.unwrap_or_else(|e| DeliveryOutcome::Failed(format!("participating function gone: {e}")))
                }
            }
        }))
    }
}

/// The devices a request goes to, as [`ParticipatingFunction::choose_devices`] found them.
pub(super) struct Chosen {
    pub keys: Vec<String>,
    /// A device was skipped because the temporary GRUU named an earlier
    /// registration of it (404 when no device is left).
    pub stale_gruu: bool,
}

impl ParticipatingFunction {
    /// The bindings `criteria` lets have the request (only `origin`, the
    /// device that sent the original, when a report is for it), each choice
    /// and skip logged and traced under `call_id`. Messages and capability
    /// queries (query.rs) go to the same devices.
    pub(super) fn choose_devices(
        &self,
        criteria: &routing::Criteria,
        origin: Option<&str>,
        call_id: &str,
        now: u64,
    ) -> Chosen {
        let mut chosen = Chosen {
            keys: Vec::new(),
            stale_gruu: false,
        };
        for (key, b) in &self.bindings {
            if origin.is_some_and(|o| o != key) {
                self.trace(
                    call_id,
                    "device-skipped",
                    format_args!("{key}: not the device that sent the original"),
                );
                continue; // CPM 2.0: the report goes to the device that sent the original
            }
            match criteria.check(b, now) {
                Ok(()) => {
                    self.trace_with(call_id, "device-chosen", |out| {
                        out.extend([key.as_str(), " (", b.record.contact.as_str(), ")"])
                    });
                    chosen.keys.push(key.clone())
                }
                Err(skip) => {
                    chosen.stale_gruu |= skip == routing::Skip::StaleGruu;
                    tracing::debug!(aor = %self.aor, %key, ?skip, %call_id, "device skipped");
                    self.trace(call_id, "device-skipped", format_args!("{key}: {skip:?}"));
                }
            }
        }
        chosen
    }
}

/// No device took a delivery (DeliverPager): the PF's preferences decide.
#[derive(Message)]
#[rtype(result = "DeliveryOutcome")]
struct Undelivered {
    msg: DeliverPager,
    /// The devices it was forked to (or held for).
    tried: Vec<String>,
    /// The report's target device (`report_target`), as chosen when forking.
    origin: Option<String>,
}

impl Handler<Undelivered> for ParticipatingFunction {
    type Result = ResponseActFuture<Self, DeliveryOutcome>;

    fn handle(&mut self, Undelivered { msg, tried, origin }: Undelivered, _: &mut Context<Self>) -> Self::Result {
        let forks = tried.len();
        let call_id = msg.request.call_id().unwrap_or_default();
        tracing::info!(aor = %self.aor, %call_id, forks, "no device accepted the message");
        // Forks held behind a push are not sent now: if the message is
        // deferred, the push brings it, in order.
        self.drop_held(call_id);
        self.trace(
            call_id,
            "no-device-accepted",
            format_args!("{forks} fork(s), timeout or refusals"),
        );
        Box::pin(self.unavailable(msg, origin).map(move |outcome, act, ctx| {
            // Registered devices that did not take it: retry them (retry.rs).
            if matches!(outcome, DeliveryOutcome::Deferred { .. }) {
                tried.iter().for_each(|key| act.schedule_push_retry(key, ctx));
            }
            outcome
        }))
    }
}

impl ParticipatingFunction {
    /// No device took it: the user's `when_unavailable` preference decides.
    /// `origin`: the one device a report is for (it waits for that device
    /// if deferred).
    fn unavailable(&mut self, msg: DeliverPager, origin: Option<String>) -> ResponseActFuture<Self, DeliveryOutcome> {
        // Never queued, stored or interworked, whatever the preference
        // (docs/decisions.md).
        if let Some(why) = only_now(&msg.request) {
            tracing::info!(aor = %self.aor, why, "no device took it; not kept (480)");
            self.trace(
                msg.request.call_id().unwrap_or_default(),
                "not-kept",
                format_args!("{why}: not deferred or stored (480)"),
            );
            return Box::pin(fut::ready(DeliveryOutcome::Unavailable));
        }
        match self.prefs.when_unavailable {
            Unavailable::Defer => self.defer(msg, origin),
            Unavailable::Store => self.store_in_mss(msg),
            Unavailable::Interwork => {
                let outcome = match self.env.interworking.convert(&self.aor, &msg.sender, &msg.request) {
                    Ok(reference) => {
                        tracing::info!(aor = %self.aor, %reference, "handed to interworking");
                        self.trace(
                            msg.request.call_id().unwrap_or_default(),
                            "interworked",
                            reference.clone(),
                        );
                        DeliveryOutcome::Interworked { reference }
                    }
                    Err(e) => {
                        tracing::error!(aor = %self.aor, error = %e, "interworking failed");
                        DeliveryOutcome::Failed(e.to_string())
                    }
                };
                Box::pin(fut::ready(outcome))
            }
            Unavailable::Reject => {
                self.trace(
                    msg.request.call_id().unwrap_or_default(),
                    "rejected",
                    "user unavailable (480)",
                );
                Box::pin(fut::ready(DeliveryOutcome::Unavailable))
            }
        }
    }
}

/// `<n> device(s): <key>, <key>...`, written without the formatter (and
/// without the Vec of a join).
fn forked_detail(out: &mut String, n: usize, chosen: &[String]) {
    push_dec(out, n as u64);
    out.push_str(" device(s): ");
    for (i, key) in chosen.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(key);
    }
}

/// `first 2xx: <status:?> of <n> fork(s)`, written without the formatter.
fn delivered_detail(out: &mut String, status: Option<u16>, n: usize) {
    out.push_str("first 2xx: ");
    match status {
        Some(s) => {
            out.push_str("Some(");
            push_dec(out, s.into());
            out.push(')');
        }
        None => out.push_str("None"),
    }
    out.push_str(" of ");
    push_dec(out, n as u64);
    out.push_str(" fork(s)");
}

/// The media type of an isComposing indication (RFC 3994).
const IS_COMPOSING: &str = "application/im-iscomposing+xml";

/// Why a message no device took is news only now, if it is: the sender
/// said `Expires: 0` (now or never), or it is a typing indication (RFC
/// 3994: "alice is typing" an hour later is wrong, not late).
fn only_now(req: &Message) -> Option<&'static str> {
    if req.header("Expires").is_some_and(|v| v.trim().parse::<u64>() == Ok(0)) {
        return Some("the sender's Expires: 0");
    }
    content_types(req)
        .iter()
        .any(|t| t == IS_COMPOSING)
        .then_some("isComposing indication")
}

/// The media types a rule may refuse: the MESSAGE's own, and the CPIM
/// payload's when the message is wrapped in CPIM.
fn content_types(req: &Message) -> Vec<String> {
    let mut out: Vec<String> = req.content_type().into_iter().collect();
    if out.first().is_some_and(|t| t == "message/cpim") {
        if let Some(inner) = cpim_header(&req.body, "Content-Type") {
            out.push(inner.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
        }
    }
    out
}

/// A header of the CPIM payload's MIME part (RFC 3862: the message headers
/// block, a blank line, then the MIME headers of the content).
pub(crate) fn cpim_header(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let mut blocks = text.split("\r\n\r\n");
    let message_headers = blocks.next()?;
    let mime_headers = blocks.next().unwrap_or_default();
    let find = |block: &str| {
        block.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if name.eq_ignore_ascii_case("Content-Type") {
        find(mime_headers)
    } else {
        find(message_headers)
    }
}

/// The forks still running when the first 2xx came, or at the timeout.
type OtherForks<F> = Option<FuturesUnordered<F>>;

/// Wait for the answer to give the sender: the first 2xx among the forks,
/// or, once every fork has ended refusing the message itself (413, 415,
/// 488, 606: its size or content, [`refuses_the_message`]), the first of
/// those refusals (RFC 3261 §16.7: no device can take it, so deferring it
/// would only hold it until it expires). With it, the forks still
/// running, which the caller must let finish if one is held behind its
/// device's deferred push (ordering.rs): that one is only sent when the
/// push ends, and dropping it would keep the message from that device. At the
/// timeout, the forks still running too: a device may still answer 2xx
/// (its transaction runs to Timer F), which takes back the deferred copy.
/// One fork (the usual case: one eligible device) is awaited directly: a
/// `FuturesUnordered` of one costs two shared allocations and a waker per
/// message (callgrind, pager.sh at 300/s: 1.8 % fewer instructions).
pub(super) async fn first_answer<F>(mut forks: Vec<F>, timeout: Duration) -> (Option<Box<Message>>, OtherForks<F>)
where
    F: std::future::Future<Output = ForkResult> + Unpin,
{
    if forks.len() == 1 {
        let Some(mut fork) = forks.pop() else {
            return (None, None);
        };
        return match tokio::time::timeout(timeout, &mut fork).await {
            Ok(outcome) => (answer_of(outcome), None),
            Err(_) => (None, Some(std::iter::once(fork).collect())),
        };
    }
    let mut forks: FuturesUnordered<F> = forks.into_iter().collect();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // The first refusal of the message, while every fork ended so refused it.
    let mut refusal: Option<Box<Message>> = None;
    let mut all_refused = true;
    loop {
        tokio::select! {
            next = forks.next() => match next {
                None => return (refusal.filter(|_| all_refused), None),
                Some(outcome) => match answer_of(outcome) {
                    Some(resp) if is_success(&resp) => {
                        return (Some(resp), (!forks.is_empty()).then_some(forks));
                    }
                    Some(resp) => {
                        refusal.get_or_insert(resp);
                    }
                    None => all_refused = false,
                },
            },
            _ = &mut deadline => return (None, (!forks.is_empty()).then_some(forks)),
        }
    }
}

pub(super) fn is_success(resp: &Message) -> bool {
    resp.status().is_some_and(|s| (200..300).contains(&s))
}

/// A final status that refuses this request's content or size rather than
/// saying the device is away or busy (RFC 3261 §21; RFC 3428 §7): another
/// message may still go to that device.
pub(super) fn refuses_the_message(status: u16) -> bool {
    matches!(status, 413 | 415 | 488 | 606)
}

/// A fork's 2xx, or its refusal of the message itself; anything else is
/// logged and gives None.
fn answer_of(outcome: ForkResult) -> Option<Box<Message>> {
    match outcome {
        Ok(Ok(resp)) if is_success(&resp) || resp.status().is_some_and(refuses_the_message) => Some(Box::new(resp)),
        Ok(Ok(resp)) => {
            tracing::debug!(status = ?resp.status(), "fork refused");
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "fork failed");
            None
        }
        Err(MailboxError::Closed) => {
            // The device de-registered meanwhile (its actor stopped).
            tracing::debug!("fork ended: the device is gone");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "device actor unavailable");
            None
        }
    }
}

/// The message went to the deferred queue as `seq` because no device
/// answered in time; if one of the forks still running answers 2xx, that
/// device has it, and the queued copy would reach the user a second time.
async fn take_back_if_answered_late<F>(
    mut late: FuturesUnordered<F>,
    seq: u64,
    pf: actix::WeakAddr<ParticipatingFunction>,
) where
    F: std::future::Future<Output = ForkResult> + Unpin,
{
    while let Some(outcome) = late.next().await {
        if matches!(&outcome, Ok(Ok(r)) if r.status().is_some_and(|s| (200..300).contains(&s))) {
            if let Some(pf) = pf.upgrade() {
                pf.do_send(TakeBack { seq });
            }
            return;
        }
    }
}

/// A device answered 2xx after the fork timeout, when the message had been
/// deferred as `seq`: remove the queued copy unless a push has it already.
#[derive(Message)]
#[rtype(result = "()")]
struct TakeBack {
    seq: u64,
}

impl Handler<TakeBack> for ParticipatingFunction {
    type Result = ();

    fn handle(&mut self, TakeBack { seq }: TakeBack, _: &mut Context<Self>) {
        if self.claimed.contains(&seq) {
            return; // being pushed right now: that device gets it again (at least once)
        }
        let Some(rec) = self.take(seq) else { return };
        tracing::info!(aor = %self.aor, seq, "deferred message taken back: a device answered after the fork timeout");
        let call_id = crate::trace::call_id_of(&rec.request);
        self.trace(&call_id, "taken-back", format_args!("seq {seq}: answered late"));
        // Durable soon; a crash before that only means the copy goes out again.
        let store = self.env.store.clone();
        actix::spawn(async move {
            if let Err(e) = store.flush().await {
                tracing::error!(error = %e, "flush after taking back a deferred message failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutboundError;
    use bytes::Bytes;

    fn response(status: u16) -> ForkResult {
        let raw = format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        );
        Ok(Ok(Message::parse(Bytes::from(raw)).unwrap()))
    }

    fn answered(after_ms: u64, outcome: ForkResult) -> futures::future::LocalBoxFuture<'static, ForkResult> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            outcome
        })
    }

    fn never() -> futures::future::LocalBoxFuture<'static, ForkResult> {
        Box::pin(futures::future::pending())
    }

    fn status<F>((r, _): (Option<Box<Message>>, OtherForks<F>)) -> Option<u16> {
        r.and_then(|m| m.status())
    }

    /// The one-fork path and the many-fork path agree: the first 2xx wins,
    /// refusals and failures are skipped, and the timeout ends the wait;
    /// refusals of the message itself by every device are the answer.
    #[test]
    fn first_answer_with_one_fork_and_with_several() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let t = Duration::from_millis(200);
        rt.block_on(async {
            assert_eq!(
                status(first_answer(vec![answered(1, response(200))], t).await),
                Some(200)
            );
            assert_eq!(status(first_answer(vec![answered(1, response(486))], t).await), None);
            assert_eq!(
                status(first_answer(vec![answered(1, Ok(Err(OutboundError::Shutdown)))], t).await),
                None
            );
            assert_eq!(
                status(first_answer(vec![answered(1, Err(MailboxError::Closed))], t).await),
                None
            );
            let started = std::time::Instant::now();
            assert_eq!(status(first_answer(vec![never()], t).await), None, "timed out");
            assert!(started.elapsed() >= t);
            assert_eq!(
                status(first_answer(Vec::<futures::future::LocalBoxFuture<'static, ForkResult>>::new(), t).await),
                None
            );

            let forks = vec![answered(1, response(486)), answered(20, response(202)), never()];
            let (first, others) = first_answer(forks, t).await;
            assert_eq!(first.and_then(|m| m.status()), Some(202), "first 2xx after a refusal");
            assert_eq!(
                others.map(|o| o.len()),
                Some(1),
                "the silent fork is handed back to run on, not dropped"
            );
            let forks = vec![answered(1, response(200)), answered(5, response(200))];
            let (_, others) = first_answer(forks, t).await;
            let rest: Vec<ForkResult> = others.expect("the second fork").collect().await;
            assert_eq!(rest.len(), 1, "it finishes when awaited");
            let forks = vec![answered(1, response(603)), never()];
            let started = std::time::Instant::now();
            let (first, late) = first_answer(forks, t).await;
            assert!(first.is_none());
            assert!(started.elapsed() >= t, "waits for the silent fork until the timeout");
            assert_eq!(
                late.map(|l| l.len()),
                Some(1),
                "the silent fork is handed back: it may answer late"
            );
            let (_, late) = first_answer(vec![never()], t).await;
            assert_eq!(late.map(|l| l.len()), Some(1), "the one-fork path too");
            let forks = vec![answered(1, response(480)), answered(2, response(503))];
            let started = std::time::Instant::now();
            assert_eq!(status(first_answer(forks, t).await), None);
            assert!(started.elapsed() < t, "all refused: no wait for the timeout");

            // Every device refuses the message itself: the first refusal is the answer.
            assert_eq!(
                status(first_answer(vec![answered(1, response(415))], t).await),
                Some(415)
            );
            let forks = vec![answered(1, response(488)), answered(2, response(415))];
            assert_eq!(status(first_answer(forks, t).await), Some(488));
            // Not when another device is away or busy, or may still answer.
            let forks = vec![answered(1, response(415)), answered(2, response(480))];
            assert_eq!(status(first_answer(forks, t).await), None, "one is away: defer");
            let forks = vec![answered(1, response(415)), never()];
            assert_eq!(status(first_answer(forks, t).await), None, "one is silent: defer");
            let forks = vec![answered(1, response(415)), answered(2, response(200))];
            assert_eq!(status(first_answer(forks, t).await), Some(200), "one takes it");
        });
    }

    #[test]
    fn details_are_what_format_wrote() {
        let keys = vec!["a".to_string(), "b c".to_string()];
        let written = |f: &dyn Fn(&mut String)| {
            let mut out = String::new();
            f(&mut out);
            out
        };
        assert_eq!(
            written(&|o| forked_detail(o, 2, &keys)),
            format!("{} device(s): {}", 2, keys.join(", "))
        );
        assert_eq!(written(&|o| forked_detail(o, 0, &[])), "0 device(s): ");
        for status in [Some(200), Some(202), None] {
            assert_eq!(
                written(&|o| delivered_detail(o, status, 3)),
                format!("first 2xx: {status:?} of 3 fork(s)")
            );
        }
    }

    #[test]
    fn cpim_payload_headers() {
        let body = "From: <sip:a@x>\r\nSubject: lunch?\r\nNS: imdn <urn:ietf:params:imdn>\r\n\r\nContent-Type: text/plain;charset=UTF-8\r\n\r\nhi";
        assert_eq!(cpim_header(body.as_bytes(), "Subject").as_deref(), Some("lunch?"));
        assert_eq!(
            cpim_header(body.as_bytes(), "Content-Type").as_deref(),
            Some("text/plain;charset=UTF-8")
        );
        let raw = format!("MESSAGE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\n\r\n{body}");
        let m = Message::parse(Bytes::from(raw)).unwrap();
        assert_eq!(
            content_types(&m),
            vec!["message/cpim".to_string(), "text/plain".to_string()]
        );
    }
}
