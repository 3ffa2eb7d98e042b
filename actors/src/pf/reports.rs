//! Disposition notifications at the terminating PF (003 §5.2.6, 004 D.1.6):
//! the first report of each kind per message goes to the originator, later
//! ones are suppressed; the PF makes positive-delivery reports when it hands
//! a message to the MSS and negative-delivery ones when a deferred message
//! expires; reports go to the device that sent the original (CPM 2.0).

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use cpm_sip::cpim::Cpim;
use cpm_sip::imdn::{self, Imdn, Kind, Status};
use cpm_sip::{Headers, Message, Method, SipUri, StartLine};

use super::notify::rfc3339;
use super::pager::DeliverPager;
use super::registrar::is_instance_key;
use super::ParticipatingFunction;
use crate::originating::unique_id;
use crate::{unix_now, Aor};

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Delivery => "delivery",
        Kind::Display => "display",
        Kind::Processing => "processing",
    }
}

/// A device of this user sends a report on a message it received: may it go
/// on to the originator? True only for the first of its kind.
#[derive(Message, Clone)]
#[rtype(result = "Result<bool, String>")]
pub struct ClaimReport {
    pub message_id: String,
    pub kind: Kind,
}

impl Handler<ClaimReport> for ParticipatingFunction {
    type Result = ResponseActFuture<Self, Result<bool, String>>;

    fn handle(&mut self, msg: ClaimReport, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let ttl = self.env.policy.get().imdn_retention.as_secs();
        let kind = kind_name(msg.kind);
        let first = match self
            .env
            .store
            .claim_report(self.aor.as_str(), &msg.message_id, kind, unix_now(), ttl)
        {
            Ok(first) => first,
            Err(e) => return Box::pin(fut::ready(Err(e.to_string()))),
        };
        tracing::debug!(aor = %self.aor, id = %msg.message_id, kind, first, "report from a device");
        if !first {
            return Box::pin(fut::ready(Ok(false)));
        }
        self.after_flush(move |res, _, _| res.map(|_| true).map_err(|e| e.to_string()))
    }
}

/// This user sent `message_id` from the device at `source`: remember the
/// device, so reports come back to it.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct NoteOrigin {
    pub message_id: String,
    pub source: SocketAddr,
}

impl Handler<NoteOrigin> for ParticipatingFunction {
    type Result = ();

    fn handle(&mut self, msg: NoteOrigin, _: &mut Context<Self>) {
        self.touch();
        let Some(key) = self
            .bindings
            .values()
            .find(|b| b.is_from(msg.source))
            .map(|b| b.record.key.clone())
        else {
            return; // not sent from a registered device: reports go to all devices
        };
        let expires = unix_now() + self.env.policy.get().imdn_retention.as_secs();
        if let Err(e) = self
            .env
            .store
            .put_origin(self.aor.as_str(), &msg.message_id, &key, expires)
        {
            tracing::warn!(aor = %self.aor, error = %e, "cannot note the sending device");
        }
    }
}

impl ParticipatingFunction {
    /// For a report arriving for this user: the one device it is for (the
    /// device that sent the original), or `None` for any device.
    ///
    /// A registered sending device is always the target. One that is not
    /// registered now is the target only if it is known by its instance id
    /// (`+sip.instance`), which it keeps when it comes back: the report then
    /// waits for it in the deferred queue (003 §5.2.5.2 sends a deferred
    /// report to the client that sent the original). A device known only by
    /// its contact URI may return under another one, where the report would
    /// wait for nothing, so its report goes to any device.
    pub(super) fn report_target(&self, original_id: &str) -> Option<String> {
        let key = match self.env.store.origin(self.aor.as_str(), original_id, unix_now()) {
            Ok(key) => key?,
            Err(e) => {
                tracing::warn!(aor = %self.aor, id = original_id, error = %e, "cannot read the sending device");
                return None;
            }
        };
        let live = self.bindings.get(&key).is_some_and(|b| b.is_live(unix_now()));
        (live || is_instance_key(&key)).then_some(key)
    }

    /// The PF itself reports on `original` (positive delivery when stored in
    /// the MSS, negative when expired), if the sender asked for it and is not
    /// anonymous. The report counts as the first of its kind.
    pub(super) fn report(&self, original: &[u8], status: Status) {
        let Ok(req) = Message::parse(Bytes::copy_from_slice(original)) else {
            return;
        };
        let Some(made) = make_report(&self.aor, &req, status, &self.env.domains) else {
            return;
        };
        let (target, request, message_id) = made;
        let ttl = self.env.policy.get().imdn_retention.as_secs();
        match self
            .env
            .store
            .claim_report(self.aor.as_str(), &message_id, "delivery", unix_now(), ttl)
        {
            Ok(true) => {}
            Ok(false) => return, // a device already reported delivery
            Err(e) => return tracing::warn!(aor = %self.aor, error = %e, "cannot record server report"),
        }
        let dir = self.dir.clone();
        let sender = self.aor.clone();
        tracing::info!(aor = %self.aor, to = %target, id = %message_id, "server disposition notification");
        actix_rt::spawn(async move {
            let msg = DeliverPager {
                request: Arc::new(request),
                sender,
                anonymous: false,
                gruu: None,
                sender_source: None,
                report_for: Some(message_id),
            };
            if let Err(e) = dir.send(&target, msg).await {
                tracing::warn!(%target, error = %e, "server report not delivered");
            }
        });
    }
}

/// Build the report MESSAGE this user (`recipient`) sends about `req`, if
/// one was asked for: (where it goes, the request, the original's id).
fn make_report(
    recipient: &Aor,
    req: &Message,
    status: Status,
    domains: &crate::LocalDomains,
) -> Option<(Aor, Message, String)> {
    if !req.content_type_is("message/cpim") {
        return None;
    }
    let cpim = Cpim::parse_bytes(&req.body).ok()?;
    let asked = cpim.disposition_request();
    let wanted = match status {
        Status::Delivered | Status::Stored => asked.positive_delivery,
        _ => asked.negative_delivery,
    };
    let message_id = cpim.imdn_message_id()?.to_string();
    if !wanted {
        return None;
    }
    // To the CPM Address the original came from.
    let from = req.from().ok()?;
    let from_uri = SipUri::parse(&from.uri).ok()?;
    let originator = domains.local_aor(&from_uri)?;
    let now = rfc3339(unix_now());
    let report = Imdn {
        message_id: message_id.clone(),
        datetime: now.clone(),
        recipient_uri: Some(recipient.to_string()),
        original_recipient_uri: Some(recipient.to_string()),
        subject: None,
        kind: Kind::Delivery,
        status,
    };
    let body = imdn::report(recipient.as_str(), originator.as_str(), &unique_id(), &now, &report).to_bytes();
    let mut headers = Headers::default();
    let id = unique_id();
    headers.push("From", format!("<{recipient}>;tag={id}"));
    headers.push("To", format!("<{originator}>"));
    headers.push("Call-ID", format!("{id}@{}", domains.primary()));
    headers.push("CSeq", "1 MESSAGE");
    headers.push("Max-Forwards", "70");
    headers.push("Content-Type", "message/cpim");
    let request = Message {
        start: StartLine::Request {
            method: Method::Message,
            uri: SipUri::parse(originator.as_str()).ok()?,
        },
        headers,
        body,
    };
    Some((originator, request, message_id))
}
