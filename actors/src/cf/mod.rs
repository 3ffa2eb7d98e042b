//! ControllingFunction: one actor per pre-defined group (000 §5.2.2.1,
//! 003 §5.2.6), activated on demand. It authorizes the sender by group
//! policy, sends one copy per member through that member's Participating
//! Function (so each member's preferences, devices and deferral apply), and
//! handles the disposition notifications that come back through it.

mod groups;
pub mod urilist;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cpm_sip::cpim::{Cpim, IMDN_NS};
use cpm_sip::imdn::{self, Imdn, Kind, Status};
use cpm_sip::{Message, SipUri, StartLine};

pub use groups::{GroupDef, GroupError, Groups, Membership, SendPolicy};

use crate::originating::unique_id;
use crate::pf::notify::rfc3339;
use crate::{unix_now, Aor, DeliverPager, Directory, Env};

pub struct ControllingFunction {
    group: Aor,
    dir: Directory,
    env: Env,
    /// Messages whose reports come back through this CF, by imdn.Message-ID.
    pending: HashMap<String, Pending>,
    started: Instant,
    last_activity: Instant,
}

struct Pending {
    sender: Aor,
    members: HashSet<String>,
    delivered: HashSet<String>,
    failed: HashSet<String>,
    displayed: HashSet<String>,
    sent_delivery: bool,
    sent_display: bool,
    want_display: bool,
    want_delivery: bool,
}

impl ControllingFunction {
    pub(crate) fn new(group: Aor, dir: Directory) -> ControllingFunction {
        let env = dir.env().clone();
        ControllingFunction {
            group,
            dir,
            env,
            pending: HashMap::new(),
            started: Instant::now(),
            last_activity: Instant::now(),
        }
    }

    /// The copy a member gets: the group identity as From (so replies go to
    /// the group), the author asserted in P-Asserted-Identity, and
    /// `imdn.IMDN-Record-Route` so reports come back through the CF (RFC 5438 §6).
    fn member_copy(&self, original: &Message, sender: &Aor, member: &Aor) -> Option<Message> {
        let mut copy = original.clone();
        let StartLine::Request { uri, .. } = &mut copy.start else {
            return None;
        };
        *uri = SipUri::parse(member.as_str()).ok()?;
        let tag = original
            .from()
            .ok()
            .and_then(|f| f.tag().map(str::to_string))
            .unwrap_or_else(unique_id);
        copy.headers.remove_all("Via");
        copy.headers.set("From", format!("<{}>;tag={tag}", self.group));
        copy.headers.set("To", format!("<{member}>"));
        // Each member leg is a request of its own (the CF is a B2BUA): its own Call-ID.
        let call_id = original.call_id().unwrap_or("group");
        copy.headers
            .set("Call-ID", format!("{}-{call_id}", crate::originating::unique_id()));
        copy.headers.set("P-Asserted-Identity", format!("<{sender}>"));
        copy.headers.set("Max-Forwards", "70");
        if copy.content_type_is("message/cpim") {
            if let Ok(mut cpim) = Cpim::parse_bytes(&copy.body) {
                if cpim.imdn_message_id().is_some() {
                    let prefix = cpim_prefix(&cpim).unwrap_or_else(|| "imdn".to_string());
                    cpim.set_header(&format!("{prefix}.IMDN-Record-Route"), &format!("<{}>", self.group));
                    copy.body = cpim.to_bytes();
                }
            }
        }
        Some(copy)
    }

    fn finalize(&mut self, msg_id: &str, deadline: bool) {
        let Some(p) = self.pending.get_mut(msg_id) else { return };
        let all = p.members.len();
        let mut out = Vec::new();
        if p.want_delivery && !p.sent_delivery {
            let answered = p.delivered.len() + p.failed.len();
            if answered == all || (deadline && answered > 0) {
                p.sent_delivery = true;
                let status = if p.delivered.is_empty() {
                    Status::Failed
                } else {
                    Status::Delivered
                };
                out.push((Kind::Delivery, status, p.delivered.len(), all));
            }
        }
        if p.want_display && !p.sent_display && (p.displayed.len() == all || (deadline && !p.displayed.is_empty())) {
            p.sent_display = true;
            out.push((Kind::Display, Status::Displayed, p.displayed.len(), all));
        }
        let sender = p.sender.clone();
        let done = deadline || ((!p.want_delivery || p.sent_delivery) && (!p.want_display || p.sent_display));
        if done {
            self.pending.remove(msg_id);
        }
        for (kind, status, count, all) in out {
            tracing::info!(group = %self.group, id = msg_id, ?kind, count, all, "aggregated report to the sender");
            self.send_report(&sender, msg_id, kind, status);
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
        let dir = self.dir.clone();
        let msg = DeliverPager {
            request: Arc::new(request),
            sender: self.group.clone(),
            anonymous: false,
            gruu: None,
            sender_source: None,
            report_for,
        };
        actix_rt::spawn(async move {
            if let Err(e) = dir.send(&to, msg).await {
                tracing::warn!(%to, error = %e, "group delivery failed");
            }
        });
    }
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
        let idle = self.env.policy.get().idle_timeout;
        let check = (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_interval(check, move |act, ctx| {
            if act.pending.is_empty() && act.last_activity.elapsed() >= idle {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
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
            pending_reports: self.pending.len(),
        })
    }
}

/// A pager-mode message to the group.
#[derive(Message, Clone)]
#[rtype(result = "GroupOutcome")]
pub struct GroupMessage {
    pub request: Arc<Message>,
    pub sender: Aor,
}

#[derive(Debug, Clone, PartialEq, Eq, MessageResponse)]
pub enum GroupOutcome {
    /// Sent on to this many members (202).
    Accepted { members: usize },
    /// Refused by group policy (403).
    Forbidden(&'static str),
    /// No such group (404).
    NotFound,
}

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
        let cpim = msg
            .request
            .content_type_is("message/cpim")
            .then(|| Cpim::parse_bytes(&msg.request.body).ok())
            .flatten();
        if let Some((id, asked)) = cpim
            .as_ref()
            .and_then(|c| Some((c.imdn_message_id()?.to_string(), c.disposition_request())))
        {
            if asked.positive_delivery || asked.display || asked.negative_delivery {
                self.pending.insert(
                    id.clone(),
                    Pending {
                        sender: msg.sender.clone(),
                        members: members.iter().map(|m| m.to_string()).collect(),
                        delivered: HashSet::new(),
                        failed: HashSet::new(),
                        displayed: HashSet::new(),
                        sent_delivery: false,
                        sent_display: false,
                        want_delivery: asked.positive_delivery || asked.negative_delivery,
                        want_display: asked.display,
                    },
                );
                let deadline = self.env.policy.get().group_report_deadline;
                ctx.run_later(deadline, move |act, _| act.finalize(&id, true));
            }
        }
        for member in &members {
            match self.member_copy(&msg.request, &msg.sender, member) {
                Some(copy) => self.deliver(member.clone(), copy, None),
                None => tracing::warn!(group = %self.group, %member, "member address is not a SIP URI"),
            }
        }
        tracing::info!(group = %self.group, %sender, members = members.len(), "group message fanned out");
        GroupOutcome::Accepted { members: members.len() }
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
        let Some(p) = self.pending.get_mut(&id) else {
            tracing::info!(group = %self.group, %id, %member, "report for an unknown or finished group message dropped");
            return;
        };
        if !p.members.contains(&member) {
            return;
        }
        if !self.env.policy.get().aggregate_group_reports {
            // Forwarded one per member and kind (the member's PF already
            // suppressed its other devices' copies).
            let sender = p.sender.clone();
            let mut fwd = (*msg.request).clone();
            if let (StartLine::Request { uri, .. }, Ok(to)) = (&mut fwd.start, SipUri::parse(sender.as_str())) {
                *uri = to;
            }
            fwd.headers.remove_all("Via");
            self.deliver(sender, fwd, Some(id));
            return;
        }
        match (msg.report.kind, &msg.report.status) {
            (Kind::Delivery, Status::Delivered) => {
                p.delivered.insert(member);
            }
            (Kind::Delivery, _) => {
                p.failed.insert(member);
            }
            (Kind::Display, Status::Displayed) => {
                p.displayed.insert(member);
            }
            _ => {}
        }
        self.finalize(&id, false);
    }
}
