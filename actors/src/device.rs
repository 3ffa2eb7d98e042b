//! ClientRegistration: one registered device of a user, alive while its
//! Participating Function is. It owns the delivery leg to that device.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use cpm_sip::{ByteString, Header, Headers, Message, StartLine};

use crate::answer::{Answer, Busy};
use crate::pf::Binding;
use crate::{Aor, Outbound, OutboundError};

pub struct ClientRegistration {
    pub(crate) binding: Binding,
    outbound: Arc<dyn Outbound>,
    /// Inspector: forks answered 2xx, forks sent, forks not yet answered
    /// (shared with the forks, which wait outside the context: answer.rs),
    /// age, last fork.
    pub(crate) delivered: Rc<Cell<u64>>,
    pub(crate) forks: u64,
    pub(crate) pending: Busy,
    pub(crate) started: std::time::Instant,
    pub(crate) last_activity: std::time::Instant,
    /// `<aor>`: the P-Called-Party-ID of every fork (formatted once, each
    /// fork shares it).
    called_party: ByteString,
}

impl ClientRegistration {
    pub fn new(aor: Aor, binding: Binding, outbound: Arc<dyn Outbound>) -> ClientRegistration {
        ClientRegistration {
            called_party: format!("<{aor}>").into(),
            binding,
            outbound,
            delivered: Rc::default(),
            forks: 0,
            pending: Busy::default(),
            started: std::time::Instant::now(),
            last_activity: std::time::Instant::now(),
        }
    }

    fn retarget(&self, original: &Message) -> Message {
        retarget(original, &self.binding.uri, &self.called_party)
    }
}

/// The request as the device `contact` receives it: Request-URI is the
/// contact, the target CPM Address (`called_party`, `<aor>`) travels in
/// P-Called-Party-ID (RFC 3455) and Max-Forwards is decremented (RFC 3261
/// §16.6). The sender's Route set ends here (it named this server as outbound
/// proxy, §16.4), so it is removed: the device is sent to directly.
fn retarget(original: &Message, contact: &cpm_sip::SipUri, called_party: &ByteString) -> Message {
    // Built header by header, not cloned and then edited: the Route set and
    // the Request-URI are not copied only to be dropped. As Headers::set
    // would: the first Max-Forwards and P-Called-Party-ID get the new value
    // (in place), or the header is appended. The other values share the
    // original's buffer: a copied header costs a refcount, no allocation.
    let hops = original.max_forwards().unwrap_or(70).saturating_sub(1);
    let (mut hops_set, mut called_set) = (false, false);
    let mut headers = Vec::with_capacity(original.headers.len() + 2);
    for h in &original.headers.0 {
        let value = if h.name.eq_ignore_ascii_case("Route") {
            continue;
        } else if !hops_set && h.name.eq_ignore_ascii_case("Max-Forwards") {
            hops_set = true;
            hops.to_string().into()
        } else if !called_set && h.name.eq_ignore_ascii_case("P-Called-Party-ID") {
            called_set = true;
            called_party.clone()
        } else {
            h.value.clone()
        };
        headers.push(Header {
            name: h.name.clone(),
            value,
        });
    }
    let mut headers = Headers(headers);
    if !hops_set {
        headers.push("Max-Forwards", hops.to_string());
    }
    if !called_set {
        headers.push("P-Called-Party-ID", called_party.clone());
    }
    let start = match &original.start {
        StartLine::Request { method, .. } => StartLine::Request {
            method: method.clone(),
            uri: contact.clone(),
        },
        other => other.clone(),
    };
    Message {
        start,
        headers,
        body: original.body.clone(),
    }
}

impl Actor for ClientRegistration {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

/// Deliver one request to this device; resolves with its final response.
#[derive(Message, Clone)]
#[rtype(result = "Result<Message, OutboundError>")]
pub struct Fork {
    pub request: Arc<Message>,
}

impl Handler<Fork> for ClientRegistration {
    type Result = Answer<Self, Result<Message, OutboundError>>;

    fn handle(&mut self, msg: Fork, _: &mut Context<Self>) -> Self::Result {
        let request = self.retarget(&msg.request);
        let Some(target) = self.binding.target else {
            let err = OutboundError::Transport(([0, 0, 0, 0], 0).into(), "contact has no reachable address".into());
            return Answer::ready(Err(err));
        };
        let sent = self.outbound.send_request(request, target);
        self.forks += 1;
        self.last_activity = std::time::Instant::now();
        // The transaction's wait needs nothing of the actor (answer.rs).
        let (pending, delivered) = (self.pending.enter(), self.delivered.clone());
        Answer::Detached(Box::pin(async move {
            let res = sent.await;
            drop(pending);
            if res
                .as_ref()
                .is_ok_and(|r| r.status().is_some_and(|s| (200..300).contains(&s)))
            {
                delivered.set(delivered.get() + 1);
            }
            res
        }))
    }
}

/// The PF refreshed this device's binding (re-registration).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rebind(pub Binding);

impl Handler<Rebind> for ClientRegistration {
    type Result = ();

    fn handle(&mut self, msg: Rebind, _: &mut Context<Self>) {
        self.binding = msg.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retarget_drops_the_senders_route_set() {
        // baresip sends through its outbound proxy with a Route naming us.
        let raw = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
                   Max-Forwards: 70\r\nRoute: <sip:127.0.0.1:5060;transport=udp;lr>\r\n\
                   From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\n\
                   CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        let req = Message::parse(bytes::Bytes::from(raw)).unwrap();
        let contact = cpm_sip::SipUri::parse("sip:bob-1@127.0.0.1:5080").unwrap();
        let out = retarget(&req, &contact, &ByteString::from_static("<sip:bob@example.com>"));
        assert_eq!(out.header("Route"), None);
        assert_eq!(out.request_uri(), Some(&contact));
        assert_eq!(out.header("Max-Forwards"), Some("69"));
        assert_eq!(out.header("P-Called-Party-ID"), Some("<sip:bob@example.com>"));
        assert_eq!(out, edited(&req, &contact, "<sip:bob@example.com>"));
        // The copied values are the original's bytes, not copies of them.
        for h in out
            .headers
            .0
            .iter()
            .filter(|h| h.name != "Max-Forwards" && h.name != "P-Called-Party-ID")
        {
            let shared = req.headers.0.iter().any(|o| o.value.as_ptr() == h.value.as_ptr());
            assert!(shared, "{}: {}", h.name, h.value);
        }
    }

    /// What retarget did before it built the copy header by header.
    fn edited(original: &Message, contact: &cpm_sip::SipUri, called_party: &str) -> Message {
        let mut req = original.clone();
        if let StartLine::Request { uri, .. } = &mut req.start {
            *uri = contact.clone();
        }
        let hops = original.max_forwards().unwrap_or(70).saturating_sub(1);
        req.headers.set("Max-Forwards", hops.to_string());
        req.headers.set("P-Called-Party-ID", called_party);
        req.headers.remove_all("Route");
        req
    }

    #[test]
    fn retarget_is_the_edited_copy() {
        let contact = cpm_sip::SipUri::parse("sip:bob-1@127.0.0.1:5080").unwrap();
        for extra in [
            "",
            "Max-Forwards: 3\r\nRoute: <sip:a;lr>\r\nRoute: <sip:b;lr>\r\n",
            "P-Called-Party-ID: <sip:x@y>\r\nMax-Forwards: 0\r\nP-Called-Party-ID: <sip:z@y>\r\nMax-Forwards: 9\r\n",
            "route: <sip:c;lr>\r\nmax-forwards: 12\r\n",
        ] {
            let raw = format!(
                "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n{extra}\
                 From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\n\
                 CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
            );
            let req = Message::parse(bytes::Bytes::from(raw)).unwrap();
            let out = retarget(&req, &contact, &ByteString::from_static("<sip:bob@example.com>"));
            assert_eq!(out, edited(&req, &contact, "<sip:bob@example.com>"), "{extra}");
            assert_eq!(
                out.to_bytes(),
                edited(&req, &contact, "<sip:bob@example.com>").to_bytes()
            );
        }
    }
}
