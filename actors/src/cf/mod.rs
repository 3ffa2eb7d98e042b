//! ControllingFunction: one actor per pre-defined group (000 §5.2.2.1,
//! 003 §5.2.6), activated on demand. It authorizes the sender by group
//! policy, sends one copy per member through that member's Participating
//! Function (so each member's preferences, devices and deferral apply), and
//! handles the disposition notifications that come back through it.

mod groups;
pub mod urilist;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cpm_sip::cpim::{Cpim, DispositionRequest, IMDN_NS};
use cpm_sip::imdn::{self, Imdn, Kind, Status};
use cpm_sip::{Message, SipUri, StartLine};
use cpm_store::{FanOutRecord, GroupReportRecord};

pub use groups::{GroupDef, GroupError, Groups, Membership, SendPolicy};

use crate::originating::unique_id;
use crate::pf::notify::rfc3339;
use crate::{unix_now, Aor, DeliverPager, DeliveryOutcome, Directory, Env};

pub struct ControllingFunction {
    group: Aor,
    dir: Directory,
    env: Env,
    started: Instant,
    last_activity: Instant,
    /// Fan-outs with copies not done, by journal id (see `CopyDone`).
    fanouts: HashMap<u64, FanOut>,
}

/// A journaled fan-out in progress: `record.members` are the members whose
/// copy is not done; `dirty` when that differs from what is stored.
struct FanOut {
    record: FanOutRecord,
    dirty: bool,
}

/// Further tries of a copy whose member PF did not take it.
const LEG_RETRIES: u32 = 2;

/// How often the CF rewrites the journal records of fan-outs that made
/// progress: a crash re-sends at most the copies done since.
const JOURNAL_EVERY: Duration = Duration::from_secs(1);

impl ControllingFunction {
    pub(crate) fn new(group: Aor, dir: Directory) -> ControllingFunction {
        let env = dir.env().clone();
        ControllingFunction {
            group,
            dir,
            env,
            started: Instant::now(),
            last_activity: Instant::now(),
            fanouts: HashMap::new(),
        }
    }

    /// What every member's copy of `original` shares, made once per
    /// message: no Via, the author asserted in P-Asserted-Identity, and the
    /// CPIM body with `imdn.IMDN-Record-Route` so reports come back through
    /// the CF (RFC 5438 §6).
    fn copy_template(&self, original: &Message, sender: &Aor) -> Message {
        let mut template = original.clone();
        template.headers.remove_all("Via");
        template.headers.set("P-Asserted-Identity", format!("<{sender}>"));
        template.headers.set("Max-Forwards", "70");
        if template.content_type_is("message/cpim") {
            if let Ok(mut cpim) = Cpim::parse_bytes(&template.body) {
                if cpim.imdn_message_id().is_some() {
                    let prefix = cpim_prefix(&cpim).unwrap_or_else(|| "imdn".to_string());
                    cpim.set_header(&format!("{prefix}.IMDN-Record-Route"), &format!("<{}>", self.group));
                    template.body = cpim.to_bytes();
                }
            }
        }
        template
    }

    /// `template` addressed to `member`: the group identity as From (so
    /// replies go to the group) with the author's tag, and a Call-ID of its
    /// own (the CF is a B2BUA: each member leg is a request of its own).
    fn member_copy(&self, template: &Message, tag: Option<&str>, member: &Aor) -> Option<Message> {
        let mut copy = template.clone();
        let StartLine::Request { uri, .. } = &mut copy.start else {
            return None;
        };
        *uri = SipUri::parse(member.as_str()).ok()?;
        let tag = tag.map_or_else(unique_id, str::to_string);
        copy.headers.set("From", format!("<{}>;tag={tag}", self.group));
        copy.headers.set("To", format!("<{member}>"));
        let call_id = template.call_id().unwrap_or("group");
        copy.headers.set("Call-ID", format!("{}-{call_id}", unique_id()));
        Some(copy)
    }

    /// Send what the record of `msg_id` now allows (each kind once: when
    /// every member answered it, or at the deadline, or at its first
    /// answer after the deadline), then store the record again, or forget
    /// it once nothing is left to send or its retention is over.
    fn settle(&self, msg_id: &str, mut rec: GroupReportRecord, now: u64) {
        let out = aggregate(&mut rec, now);
        if now >= rec.deadline_at && !rec.compact {
            // From now on a kind goes out at its first answer: who answered
            // no longer matters, and the record may wait days for a display.
            for set in [
                &mut rec.members,
                &mut rec.delivered,
                &mut rec.failed,
                &mut rec.displayed,
            ] {
                set.clear();
            }
            rec.compact = true;
        }
        let expired = now >= rec.expires_at;
        if expired {
            tracing::info!(group = %self.group, id = msg_id, "group report record expired");
        }
        let done = expired || ((!rec.want_delivery || rec.sent_delivery) && (!rec.want_display || rec.sent_display));
        // Written before anything is sent, so the flush that follows (the
        // 200 to a member's report, the sender's deferral) covers it: a
        // report is sent again after a crash only if none came in between.
        let stored = match done {
            true => self.env.store.remove_group_report(self.group.as_str(), msg_id),
            false => self.env.store.put_group_report(self.group.as_str(), msg_id, &rec, now),
        };
        if let Err(e) = stored {
            tracing::error!(group = %self.group, id = msg_id, error = %e, "cannot store group report record");
        }
        let sender = Aor::from_canonical(rec.sender.clone());
        for (kind, status, count) in out {
            let all = rec.member_count;
            tracing::info!(group = %self.group, id = msg_id, ?kind, count, all, "aggregated report to the sender");
            self.send_report(&sender, msg_id, kind, status);
        }
    }

    /// The stored record of `msg_id`; a damaged one is logged and dropped.
    fn record(&self, msg_id: &str) -> Option<GroupReportRecord> {
        match self.env.store.group_report(self.group.as_str(), msg_id) {
            Ok(rec) => rec,
            Err(e) => {
                tracing::error!(group = %self.group, id = msg_id, error = %e, "unreadable group report record dropped");
                let _ = self.env.store.remove_group_report(self.group.as_str(), msg_id);
                None
            }
        }
    }

    /// One report from the group to the original sender.
    fn send_report(&self, sender: &Aor, msg_id: &str, kind: Kind, status: Status) {
        let now = rfc3339(unix_now());
        let report = Imdn {
            message_id: msg_id.to_string(),
            datetime: now.clone(),
            recipient_uri: Some(self.group.to_string()),
            original_recipient_uri: Some(self.group.to_string()),
            subject: None,
            kind,
            status,
        };
        let body = imdn::report(self.group.as_str(), sender.as_str(), &unique_id(), &now, &report).to_bytes();
        let Some(request) = report_request(&self.group, sender, self.env.domains.primary(), body) else {
            return;
        };
        self.deliver(sender.clone(), request, Some(msg_id.to_string()));
    }

    fn deliver(&self, to: Aor, request: Message, report_for: Option<String>) {
        actix_rt::spawn(self.leg(to, request, report_for, None));
    }

    /// One copy through `to`'s PF; done once it was delivered to a device,
    /// stored durably, or refused (each logged). `journal`: the CF and the
    /// fan-out that are then told (`CopyDone`).
    fn leg(
        &self,
        to: Aor,
        request: Message,
        report_for: Option<String>,
        journal: Option<(Addr<Self>, u64)>,
    ) -> impl Future<Output = ()> + 'static {
        let (dir, group) = (self.dir.clone(), self.group.clone());
        let msg = DeliverPager {
            request: Arc::new(request),
            sender: self.group.clone(),
            anonymous: false,
            gruu: None,
            sender_source: None,
            report_for,
        };
        async move {
            // The PF's mailbox full (overload) or its actor gone: a few
            // tries, a second and two apart.
            let mut tries = 0;
            let outcome = loop {
                match dir.send(&to, msg.clone()).await {
                    Err(e) if tries < LEG_RETRIES => {
                        tries += 1;
                        tracing::warn!(%group, %to, error = %e, tries, "group copy not taken by the member's PF; trying again");
                        tokio::time::sleep(Duration::from_secs(1 << (tries - 1))).await;
                    }
                    other => break other,
                }
            };
            match outcome {
                Ok(DeliveryOutcome::Failed(e)) => {
                    tracing::error!(%group, %to, error = %e, "group copy could not be stored: lost for this member")
                }
                Ok(
                    outcome @ (DeliveryOutcome::QueueFull { .. }
                    | DeliveryOutcome::Refused { .. }
                    | DeliveryOutcome::Unavailable
                    | DeliveryOutcome::StaleGruu
                    | DeliveryOutcome::Declined(_)),
                ) => {
                    tracing::info!(%group, %to, ?outcome, "group copy refused by the member's PF")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(%group, %to, error = %e, "group copy not delivered: lost for this member")
                }
            }
            if let Some((cf, id)) = journal {
                cf.do_send(CopyDone { id, member: to });
            }
        }
    }

    /// Start the copies of fan-out `id` to the members its record names
    /// and track them until each is done.
    fn send_copies(&mut self, id: u64, record: FanOutRecord, request: &Message, ctx: &Context<Self>) {
        let template = self.copy_template(request, &Aor::from_canonical(record.sender.clone()));
        let from = request.from().ok();
        let tag = from.as_ref().and_then(|f| f.tag());
        let mut unusable = Vec::new();
        for member in &record.members {
            let member = Aor::from_canonical(member.clone());
            match self.member_copy(&template, tag, &member) {
                Some(copy) => {
                    actix_rt::spawn(self.leg(member, copy, None, Some((ctx.address(), id))));
                }
                None => {
                    tracing::warn!(group = %self.group, %member, "member address is not a SIP URI");
                    unusable.push(member);
                }
            }
        }
        self.fanouts.insert(id, FanOut { record, dirty: false });
        for member in unusable {
            self.copy_done(id, &member);
        }
    }

    fn copy_done(&mut self, id: u64, member: &Aor) {
        let Some(f) = self.fanouts.get_mut(&id) else { return };
        f.dirty |= f.record.members.remove(member.as_str());
        if f.record.members.is_empty() {
            self.fanouts.remove(&id);
            if let Err(e) = self.env.store.end_fanout(self.group.as_str(), id) {
                tracing::error!(group = %self.group, id, error = %e, "cannot close the group fan-out");
            }
            // Durable soon, so a crash does not send the copies again (one
            // flush per message, shared with whatever else is flushing).
            let store = self.env.store.clone();
            actix_rt::spawn(async move {
                if let Err(e) = store.flush().await {
                    tracing::error!(error = %e, "cannot flush a closed group fan-out");
                }
            });
        }
    }

    /// Store the progress of the fan-outs that made some.
    fn write_journal(&mut self) {
        for (id, f) in self.fanouts.iter_mut().filter(|(_, f)| f.dirty) {
            match self.env.store.update_fanout(self.group.as_str(), *id, &f.record) {
                Ok(()) => f.dirty = false,
                Err(e) => tracing::error!(group = %self.group, id, error = %e, "cannot store group fan-out progress"),
            }
        }
    }
}

/// A member's copy of a journaled fan-out is done.
#[derive(Message)]
#[rtype(result = "()")]
struct CopyDone {
    id: u64,
    member: Aor,
}

impl Handler<CopyDone> for ControllingFunction {
    type Result = ();

    fn handle(&mut self, msg: CopyDone, _: &mut Context<Self>) {
        self.copy_done(msg.id, &msg.member);
    }
}

/// The reports of `rec` due at `now`, each marked sent: a kind goes out
/// when every member answered it, or once the deadline has passed and
/// some member has. (kind, status, members counted).
fn aggregate(rec: &mut GroupReportRecord, now: u64) -> Vec<(Kind, Status, usize)> {
    let past = now >= rec.deadline_at;
    let all = rec.member_count;
    let mut out = Vec::new();
    if rec.want_delivery && !rec.sent_delivery {
        let answered = rec.delivered.len() + rec.failed.len();
        if answered == all || (past && answered > 0) {
            rec.sent_delivery = true;
            let status = match rec.delivered.is_empty() {
                true => Status::Failed,
                false => Status::Delivered,
            };
            out.push((Kind::Delivery, status, rec.delivered.len()));
        }
    }
    let shown = rec.displayed.len();
    if rec.want_display && !rec.sent_display && (shown == all || (past && shown > 0)) {
        rec.sent_display = true;
        out.push((Kind::Display, Status::Displayed, shown));
    }
    out
}

fn cpim_prefix(cpim: &Cpim) -> Option<String> {
    cpim.headers.iter().find_map(|h| {
        if !h.name.eq_ignore_ascii_case("NS") {
            return None;
        }
        let (prefix, uri) = h.value.trim().split_once(char::is_whitespace)?;
        (uri.trim().trim_matches(['<', '>']) == IMDN_NS).then(|| prefix.trim().to_string())
    })
}

/// A MESSAGE from `from` to `to` carrying `body` (message/cpim).
pub(crate) fn report_request(from: &Aor, to: &Aor, domain: &str, body: bytes::Bytes) -> Option<Message> {
    let mut headers = cpm_sip::Headers::default();
    let id = unique_id();
    headers.push("From", format!("<{from}>;tag={id}"));
    headers.push("To", format!("<{to}>"));
    headers.push("Call-ID", format!("{id}@{domain}"));
    headers.push("CSeq", "1 MESSAGE");
    headers.push("Max-Forwards", "70");
    headers.push("Content-Type", "message/cpim");
    Some(Message {
        start: StartLine::Request {
            method: cpm_sip::Method::Message,
            uri: SipUri::parse(to.as_str()).ok()?,
        },
        headers,
        body,
    })
}

impl Actor for ControllingFunction {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        ctx.run_interval(JOURNAL_EVERY, |act, _| act.write_journal());
        let idle = self.env.policy.get().idle_timeout;
        let check = (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_interval(check, move |act, ctx| {
            // Pending reports are in the store; copies in flight keep it.
            if act.fanouts.is_empty() && act.last_activity.elapsed() >= idle {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.write_journal();
        self.dir.cf_deactivated(&self.group, &ctx.address());
    }
}

impl Handler<crate::inspect::SnapshotCf> for ControllingFunction {
    type Result = MessageResult<crate::inspect::SnapshotCf>;

    fn handle(&mut self, _: crate::inspect::SnapshotCf, _: &mut Context<Self>) -> Self::Result {
        MessageResult(crate::inspect::CfSnapshot {
            group: self.group.to_string(),
            age_ms: self.started.elapsed().as_millis() as u64,
            idle_ms: self.last_activity.elapsed().as_millis() as u64,
            // Counted by the caller, off this actor's thread (`CfSnapshot::count_reports`).
            pending_reports: 0,
            fanouts: self.fanouts.len(),
            copies_in_flight: self.fanouts.values().map(|f| f.record.members.len()).sum(),
        })
    }
}

/// A pager-mode message to the group.
#[derive(Message, Clone)]
#[rtype(result = "GroupOutcome")]
pub struct GroupMessage {
    pub request: Arc<Message>,
    pub sender: Aor,
    /// Its imdn.Message-ID and the reports it asks for, when it asks for
    /// any (read by the ingress, which parsed the CPIM already).
    pub reports: Option<(String, DispositionRequest)>,
}

#[derive(Debug, Clone, PartialEq, Eq, MessageResponse)]
pub enum GroupOutcome {
    /// Journaled for this many members, whose copies are on their way
    /// (202 once the store is flushed).
    Accepted { members: usize },
    /// The fan-out journal or the report record could not be stored
    /// (500): the sender retries.
    StoreFailed,
    /// Refused by group policy (403).
    Forbidden(&'static str),
    /// No such group (404).
    NotFound,
}

/// A group message is answered 202 once it is in the store's fan-out
/// journal (flushed by the ingress): the copies go out after that, and
/// whatever a crash interrupts is sent again after the restart
/// (`ResumeFanOut`). The sender does not wait for the slowest member.
impl Handler<GroupMessage> for ControllingFunction {
    type Result = GroupOutcome;

    fn handle(&mut self, msg: GroupMessage, ctx: &mut Context<Self>) -> GroupOutcome {
        self.last_activity = Instant::now();
        let Some(def) = self.env.groups.get(self.group.as_str()) else {
            return GroupOutcome::NotFound;
        };
        let sender = msg.sender.as_str();
        if def.send_policy == SendPolicy::Members && !def.members.iter().any(|m| m == sender) {
            tracing::info!(group = %self.group, %sender, "sender is not a member");
            return GroupOutcome::Forbidden("Forbidden (not a member of the group)");
        }
        let members: Vec<Aor> = def
            .members
            .iter()
            .filter(|m| m.as_str() != sender)
            .map(|m| Aor::from_canonical(m.clone()))
            .collect();
        // Reports on this message come back here; remember who asked.
        if let Some((id, asked)) = msg.reports.as_ref().filter(|(_, asked)| asked.any()) {
            let (now, policy) = (unix_now(), self.env.policy.get());
            let rec = GroupReportRecord::new(
                msg.sender.to_string(),
                members.iter().map(|m| m.to_string()).collect(),
                asked.positive_delivery || asked.negative_delivery,
                asked.display,
                now + policy.group_report_deadline.as_secs(),
                now + policy.imdn_retention.as_secs().max(1),
            );
            if let Err(e) = self.env.store.put_group_report(self.group.as_str(), id, &rec, now) {
                tracing::error!(group = %self.group, %id, error = %e, "cannot store group report record");
                return GroupOutcome::StoreFailed;
            }
            // The deadline comes from the store's due index, through the
            // server's sweep (`ReportsDue`), whether this CF still lives or
            // not. Not a timer per message here: actix polls every timer of
            // an actor's context each time the actor wakes, and a busy
            // group would hold thousands.
        }
        let record = FanOutRecord {
            sender: msg.sender.to_string(),
            request: msg.request.to_bytes().into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        if !record.members.is_empty() {
            let id = match self.env.store.begin_fanout(self.group.as_str(), &record) {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!(group = %self.group, error = %e, "cannot store the group fan-out");
                    return GroupOutcome::StoreFailed;
                }
            };
            self.send_copies(id, record, &msg.request, ctx);
        }
        tracing::info!(group = %self.group, %sender, members = members.len(), "group message fanned out");
        GroupOutcome::Accepted { members: members.len() }
    }
}

/// Send again the copies of fan-out `id` that a restart interrupted.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ResumeFanOut {
    pub id: u64,
}

impl Handler<ResumeFanOut> for ControllingFunction {
    type Result = ();

    fn handle(&mut self, msg: ResumeFanOut, ctx: &mut Context<Self>) {
        self.last_activity = Instant::now();
        if self.fanouts.contains_key(&msg.id) {
            return; // in progress here
        }
        let record = match self.env.store.fanout(self.group.as_str(), msg.id) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(group = %self.group, id = msg.id, error = %e, "unreadable group fan-out skipped");
                return;
            }
        };
        let request = match Message::parse(bytes::Bytes::from(record.request.clone())) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(group = %self.group, id = msg.id, error = %e, "stored group message unreadable: fan-out dropped");
                let _ = self.env.store.end_fanout(self.group.as_str(), msg.id);
                return;
            }
        };
        let members = record.members.len();
        tracing::info!(group = %self.group, id = msg.id, members, "group copies interrupted by a stop sent again");
        self.send_copies(msg.id, record, &request, ctx);
    }
}

/// A member's (first) disposition notification on a group message.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct GroupReport {
    pub member: Aor,
    pub report: Imdn,
    /// The member's report request, for forwarding unchanged when not aggregating.
    pub request: Arc<Message>,
}

impl Handler<GroupReport> for ControllingFunction {
    type Result = ();

    fn handle(&mut self, msg: GroupReport, _: &mut Context<Self>) {
        self.last_activity = Instant::now();
        let id = msg.report.message_id.clone();
        let member = msg.member.to_string();
        let now = unix_now();
        let Some(mut rec) = self.record(&id).filter(|r| now < r.expires_at) else {
            tracing::info!(group = %self.group, %id, %member, "report for an unknown or expired group message dropped");
            return;
        };
        let recipient = match rec.compact {
            // Past the deadline the record no longer lists them: the group does.
            true => {
                self.env
                    .groups
                    .get(self.group.as_str())
                    .is_some_and(|g| g.members.contains(&member))
                    && rec.sender != member
            }
            false => rec.members.contains(&member),
        };
        if !recipient {
            tracing::info!(group = %self.group, %id, %member, "report from a non-recipient dropped");
            return;
        }
        if !self.env.policy.get().aggregate_group_reports {
            // Forwarded one per member and kind (the member's PF already
            // suppressed its other devices' copies).
            let sender = Aor::from_canonical(rec.sender);
            let mut fwd = (*msg.request).clone();
            if let (StartLine::Request { uri, .. }, Ok(to)) = (&mut fwd.start, SipUri::parse(sender.as_str())) {
                *uri = to;
            }
            fwd.headers.remove_all("Via");
            self.deliver(sender, fwd, Some(id));
            return;
        }
        let set = match (msg.report.kind, &msg.report.status) {
            (Kind::Delivery, Status::Delivered) => &mut rec.delivered,
            (Kind::Delivery, _) => &mut rec.failed,
            (Kind::Display, Status::Displayed) => &mut rec.displayed,
            _ => return,
        };
        if set.insert(member) {
            self.settle(&id, rec, now);
        }
    }
}

/// A group message's report deadline or end of retention has come (from
/// the server's sweep of the store's index), leased until `lease`.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ReportsDue {
    pub id: String,
    /// When the store hands the record out again unless the lease is ended.
    pub lease: u64,
}

impl Handler<ReportsDue> for ControllingFunction {
    type Result = ();

    fn handle(&mut self, msg: ReportsDue, _: &mut Context<Self>) {
        self.last_activity = Instant::now();
        if let Some(rec) = self.record(&msg.id) {
            self.settle(&msg.id, rec, unix_now());
        }
        // Dealt with; a crash before this write is durable brings the
        // record up once more, which settles nothing twice.
        if let Err(e) = self
            .env
            .store
            .end_group_report_lease(self.group.as_str(), &msg.id, msg.lease)
        {
            tracing::warn!(group = %self.group, id = %msg.id, error = %e, "cannot end a group report lease; it comes up again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(want_delivery: bool, want_display: bool) -> GroupReportRecord {
        let members = ["sip:bob@example.com", "sip:carol@example.com"]
            .map(String::from)
            .into();
        GroupReportRecord::new(
            "sip:alice@example.com".into(),
            members,
            want_delivery,
            want_display,
            100,
            1_000,
        )
    }

    #[test]
    fn a_kind_goes_out_once_every_member_answered_it() {
        let mut rec = record(true, true);
        rec.delivered.insert("sip:bob@example.com".into());
        assert!(aggregate(&mut rec, 50).is_empty(), "carol has not answered");
        rec.failed.insert("sip:carol@example.com".into());
        assert_eq!(aggregate(&mut rec, 50), [(Kind::Delivery, Status::Delivered, 1)]);
        assert!(aggregate(&mut rec, 50).is_empty(), "never twice");
        assert!(rec.sent_delivery && !rec.sent_display);
    }

    #[test]
    fn all_failed_is_a_failed_report() {
        let mut rec = record(true, false);
        rec.failed.extend(rec.members.clone());
        assert_eq!(aggregate(&mut rec, 50), [(Kind::Delivery, Status::Failed, 0)]);
    }

    #[test]
    fn at_the_deadline_what_has_answers_goes_out_and_the_rest_at_its_first_answer() {
        let mut rec = record(true, true);
        rec.delivered.insert("sip:bob@example.com".into());
        assert!(aggregate(&mut rec, 99).is_empty());
        assert_eq!(aggregate(&mut rec, 100), [(Kind::Delivery, Status::Delivered, 1)]);
        // Nobody displayed it by the deadline: nothing to say yet.
        assert!(!rec.sent_display);
        rec.displayed.insert("sip:carol@example.com".into());
        assert_eq!(aggregate(&mut rec, 500), [(Kind::Display, Status::Displayed, 1)]);
        rec.delivered.insert("sip:carol@example.com".into());
        rec.displayed.insert("sip:bob@example.com".into());
        assert!(aggregate(&mut rec, 600).is_empty(), "each kind once");
    }

    #[test]
    fn unasked_kinds_never_go_out() {
        let mut rec = record(false, true);
        rec.delivered.extend(rec.members.clone());
        assert!(aggregate(&mut rec, 500).is_empty());
        rec.displayed.extend(rec.members.clone());
        assert_eq!(aggregate(&mut rec, 500), [(Kind::Display, Status::Displayed, 2)]);
    }
}
