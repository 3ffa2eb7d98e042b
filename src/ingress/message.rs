//! Pager-mode MESSAGE (RFC 3428, 001 §5.2.2.1.1).
//!
//! Originating side (authorize the sender) runs here, inline: it needs no
//! per-user state yet. The terminating side is the target's
//! ParticipatingFunction, which forks to the eligible devices.

use cpm_actors::{Aor, DeliverPager, DeliveryOutcome};
use cpm_sip::{Message, SipUri};

use super::register::unsupported_requires;
use super::Reply;

pub fn handle(reply: Reply) {
    reply.spawn(|r| async move {
        match check(&r) {
            Ok((sender, target, gruu)) => deliver(r, sender, target, gruu).await,
            Err(resp) => r.send(*resp).await,
        }
    });
}

/// Everything that can refuse the request before any actor sees it.
fn check(r: &Reply) -> Result<(Aor, Aor, Option<String>), Box<Message>> {
    let req = &r.req;
    let env = &r.core.env;
    let err = |code: u16, reason: &str| Box::new(r.builder(code).reason(reason).build());

    if let Some(bad) = unsupported_requires(req) {
        return Err(Box::new(r.builder(420).header("Unsupported", bad).build()));
    }
    match req.max_forwards() {
        Ok(0) => return Err(err(483, "Too Many Hops")),
        Ok(_) => {}
        Err(_) => return Err(err(400, "Bad Request (Max-Forwards)")),
    }
    let ruri = req.request_uri().ok_or_else(|| err(400, "Bad Request"))?;
    if !ruri.is_sip_routable() {
        // 004 §5.3.1.2.3: not SIP-routable; interworking comes with its own issue.
        return Err(err(416, "Unsupported URI Scheme"));
    }
    if req.body.len() > env.policy.max_message_size {
        return Err(err(413, "Request Entity Too Large"));
    }
    if !req.body.is_empty() {
        let ct = req.content_type().unwrap_or_default();
        if !env
            .policy
            .accepted_content_types
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&ct))
        {
            let accept = env.policy.accepted_content_types.join(", ");
            return Err(Box::new(r.builder(415).header("Accept", accept).build()));
        }
    }

    // Originating PF: the sender must be one of our users. The authenticated
    // identity (digest, its own issue) will take the place of From here.
    let from = req.from().map_err(|_| err(400, "Bad Request (From)"))?;
    let from_uri = SipUri::parse(&from.uri).map_err(|_| err(400, "Bad Request (From URI)"))?;
    let sender = env
        .domains
        .local_aor(&from_uri)
        .ok_or_else(|| err(403, "Forbidden (sender is not of a local domain)"))?;
    if !env.users.is_known(&sender) {
        return Err(err(403, "Forbidden (unknown sender)"));
    }

    let target = env
        .domains
        .local_aor(ruri)
        .ok_or_else(|| err(404, "Not Found (recipient domain not served here)"))?;
    if !env.users.is_known(&target) {
        return Err(err(404, "Not Found"));
    }
    let gruu = ruri.param("gr").flatten().map(str::to_string);
    Ok((sender, target, gruu))
}

async fn deliver(r: Reply, sender: Aor, target: Aor, gruu: Option<String>) {
    let msg = DeliverPager {
        request: r.req.clone(),
        gruu,
        sender_source: (sender == target).then_some(r.source.peer),
    };
    let resp = match r.core.dir.send(&target, msg).await {
        Ok(DeliveryOutcome::Delivered { response, .. }) => *response,
        // The deferral seam: the deferred-messages issue queues here instead.
        Ok(DeliveryOutcome::NoEligibleDevice) => r.builder(480).build(),
        Ok(DeliveryOutcome::NotAccepted { .. }) => r.builder(480).build(),
        Err(e) => {
            tracing::error!(%target, error = %e, "delivery failed");
            r.builder(503).header("Retry-After", "5").build()
        }
    };
    r.send(resp).await
}
