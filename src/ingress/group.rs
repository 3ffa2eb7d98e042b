//! Group messaging at the edge: a MESSAGE to a pre-defined group goes to its
//! ControllingFunction; a MESSAGE to the URI-list service (RFC 5365) is
//! exploded here into one copy per listed recipient, each through that
//! recipient's Participating Function.

use std::sync::Arc;

use cpm_actors::cf::urilist::{self, ListError};
use cpm_actors::originating::fill_conversation_ids;
use cpm_actors::{Aor, DeliverPager, DeliveryOutcome, GroupMessage, GroupOutcome, GroupReport};
use cpm_sip::{SipUri, StartLine};

use super::message::{asked_reports, claim_report, is_anonymous, parse_cpim};
use super::Reply;

/// User part of the URI-list (ad-hoc group) service address.
pub const URI_LIST_SERVICE: &str = "uri-list";

pub async fn to_group(r: Reply, sender: Aor, group: Aor) {
    let core = r.core.clone();
    let mut req = (*r.req).clone();
    let mut cpim = parse_cpim(&req, &core.env.tracer);
    if let Some(report) = cpim.as_mut().and_then(|p| p.report.take()) {
        // A member's report on a group message comes back through the CF.
        match claim_report(&r, &sender, &report).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(resp) => return r.send(*resp).await,
        }
        let msg = GroupReport {
            member: sender,
            report,
            request: Arc::new(req),
        };
        if let Err(e) = core.dir.send_cf(&group, msg).await {
            tracing::error!(%group, error = %e, "group report failed");
            return r.send(r.actor_unavailable()).await;
        }
        // The CF stored the member's answer: durable before the 200.
        if let Err(e) = core.env.store.flush().await {
            tracing::error!(%group, error = %e, "cannot flush the group report record");
            return r.send(store_failed(&r)).await;
        }
        return r.send(r.builder(200).build()).await;
    }
    if is_anonymous(&req) {
        // Group members are known to each other; anonymity makes no sense here.
        return r
            .send(
                r.builder(403)
                    .reason("Forbidden (anonymous messages to groups)")
                    .build(),
            )
            .await;
    }
    // One conversation per group, whoever writes.
    fill_conversation_ids(&mut req, &group, &group);
    let reports = cpim.as_ref().and_then(asked_reports);
    if let Some((id, _)) = &reports {
        super::message::note_origin(&core.dir, &sender, id.clone(), r.source.peer).await;
    }
    let msg = GroupMessage {
        request: Arc::new(req),
        sender,
        reports,
    };
    let resp = match core.dir.send_cf(&group, msg).await {
        // The CF journaled the copies (and who asked for reports): durable
        // before the 202.
        Ok(GroupOutcome::Accepted { .. }) => match core.env.store.flush().await {
            Ok(()) => r.builder(202).build(),
            Err(e) => {
                tracing::error!(%group, error = %e, "cannot flush the group fan-out journal");
                store_failed(&r)
            }
        },
        Ok(GroupOutcome::StoreFailed) => store_failed(&r),
        Ok(GroupOutcome::Forbidden(why)) => r.builder(403).reason(why).build(),
        Ok(GroupOutcome::NotFound) => r.builder(404).reason("Not Found (no such group)").build(),
        Err(e) => {
            tracing::error!(%group, error = %e, "group unavailable");
            r.actor_unavailable()
        }
    };
    r.send(resp).await
}

/// 500: what the group path must write first could not be stored (the
/// sender retries).
fn store_failed(r: &Reply) -> cpm_sip::Message {
    r.builder(500).reason("Server Internal Error (store)").build()
}

/// RFC 5365 MESSAGE URI-list service: the body is multipart/mixed with the
/// recipient list and the message; each recipient gets the message (and the
/// to/cc recipients, RFC 5366 copyControl), from the original sender.
pub async fn ad_hoc(r: Reply, sender: Aor) {
    if is_anonymous(&r.req) {
        // Recipients may be shown each other; a hidden sender does not fit.
        return r
            .send(r.builder(403).reason("Forbidden (anonymous messages to lists)").build())
            .await;
    }
    let core = r.core.clone();
    let env = &core.env;
    let ct = r.req.header("Content-Type").unwrap_or_default().to_string();
    let (list, content) = match urilist::split_request(&ct, &r.req.body, env.policy.get().max_adhoc_recipients) {
        Ok(x) => x,
        Err(e @ ListError::TooMany(_)) => {
            return r.send(r.builder(403).reason(&format!("Forbidden ({e})")).build()).await;
        }
        Err(e) => {
            return r
                .send(r.builder(400).reason(&format!("Bad Request ({e})")).build())
                .await
        }
    };
    let (content_type, body) = urilist::recipient_body(&content, &list);
    let mut targets = Vec::new();
    for rcpt in &list {
        let aor = SipUri::parse(&rcpt.uri).ok().and_then(|u| env.domains.local_aor(&u));
        match aor {
            Some(a) if env.users.is_known(&a) && a != sender => targets.push(a),
            Some(a) if a == sender => {}
            _ => tracing::info!(%sender, uri = %rcpt.uri, "ad-hoc recipient skipped (not a local user)"),
        }
    }
    if targets.is_empty() {
        return r
            .send(
                r.builder(404)
                    .reason("Not Found (no local recipient in the list)")
                    .build(),
            )
            .await;
    }
    let mut legs = Vec::with_capacity(targets.len());
    for target in &targets {
        let mut copy = (*r.req).clone();
        let Ok(uri) = SipUri::parse(target.as_str()) else {
            continue;
        };
        if let StartLine::Request { uri: u, .. } = &mut copy.start {
            *u = uri;
        }
        copy.headers.remove_all("Via");
        copy.headers.remove_all("Require");
        copy.headers.set("To", format!("<{target}>"));
        copy.headers.set("Max-Forwards", "70");
        copy.headers.set("Content-Type", content_type.clone());
        for h in ["Content-Disposition", "Content-ID"] {
            copy.headers.remove_all(h);
        }
        copy.body = body.clone();
        fill_conversation_ids(&mut copy, &sender, target);
        let msg = DeliverPager {
            request: Arc::new(copy),
            sender: sender.clone(),
            anonymous: false,
            gruu: None,
            sender_source: None,
            report_for: None,
        };
        let (dir, target) = (core.dir.clone(), target.clone());
        legs.push(async move {
            match dir.send(&target, msg).await {
                Ok(DeliveryOutcome::Failed(e)) => {
                    tracing::error!(%target, error = %e, "ad-hoc copy could not be stored: lost for this recipient")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(%target, error = %e, "ad-hoc copy not delivered: recipient unreachable"),
            }
        });
    }
    tracing::info!(%sender, recipients = targets.len(), "ad-hoc list exploded");
    // As for a group: the 202 once every copy was delivered or stored.
    futures::future::join_all(legs).await;
    r.send(r.builder(202).build()).await
}
