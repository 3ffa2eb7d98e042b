//! Which devices of the user get a pager-mode message (000 §5.2.2.1,
//! 001 §5.2.2.1.1): registered, live, able to take CPM messaging, matching
//! the request's Accept-Contact/Reject-Contact, the GRUU if one was targeted,
//! reached over TLS when the request is for a `sips:` URI, and never the very
//! device that sent it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::LocalKey;

use cpm_sip::params::{parse_list, NameAddr};
use cpm_sip::Message;

use super::Binding;
use crate::gruu::GruuTarget;
use crate::TransportKind;

/// Why a device did not get a message (logged; the inspector will show it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Expired,
    NotCpmCapable,
    AcceptContact,
    RejectContact,
    OtherGruu,
    /// The device a temporary GRUU names, registered since with another
    /// Call-ID: the GRUU no longer names it (RFC 5627 §3.2).
    StaleGruu,
    Sender,
    Unreachable,
    /// A `sips:` request and a device not reached over TLS (RFC 5630 §5.3).
    NotTls,
}

/// The request's routing criteria, computed once per message and checked
/// against each binding. Public for the routing benchmark
/// (`actors/benches/routing.rs`).
pub struct Criteria {
    accept: Predicates,
    reject: Predicates,
    gruu: Option<GruuTarget>,
    sender_source: Option<SocketAddr>,
    sips: bool,
}

/// The entries of a request's Accept-Contact or Reject-Contact lines
/// (unparsable lines skipped); `None` when it has none.
type Predicates = Option<Arc<[NameAddr]>>;

/// A line's text and its entries.
type Remembered = RefCell<Option<(String, Arc<[NameAddr]>)>>;

thread_local! {
    /// The last single line parsed on this thread, with its entries:
    /// clients send the same Accept-Contact with every message, and
    /// parsing it took about 2 % of the worker's instructions (callgrind).
    static LAST_ACCEPT: Remembered = const { RefCell::new(None) };
    static LAST_REJECT: Remembered = const { RefCell::new(None) };
}

fn predicates(req: &Message, name: &str, last: &'static LocalKey<Remembered>) -> Predicates {
    let mut lines = req.headers.all(name);
    let first = lines.next()?;
    if lines.next().is_some() {
        return Some(parse_lines(req.headers.all(name)));
    }
    last.with_borrow_mut(|last| {
        if let Some((_, entries)) = last.as_ref().filter(|(text, _)| text == first) {
            return Some(entries.clone());
        }
        let entries = parse_lines(std::iter::once(first));
        *last = Some((first.to_string(), entries.clone()));
        Some(entries)
    })
}

/// The entries of `lines`, unparsable lines skipped.
fn parse_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Arc<[NameAddr]> {
    lines.filter_map(|v| parse_list(v).ok()).flatten().collect()
}

impl Criteria {
    /// `sender_source` is set when the sender is this same user (a message to
    /// oneself must not come back to the device that sent it).
    pub fn new(req: &Message, gruu: Option<GruuTarget>, sender_source: Option<SocketAddr>) -> Criteria {
        Criteria {
            accept: predicates(req, "Accept-Contact", &LAST_ACCEPT),
            reject: predicates(req, "Reject-Contact", &LAST_REJECT),
            gruu,
            sender_source,
            sips: req.request_uri().is_some_and(|u| u.scheme == "sips"),
        }
    }

    pub fn check(&self, b: &Binding, now: u64) -> Result<(), Skip> {
        if !b.is_live(now) {
            return Err(Skip::Expired);
        }
        if let Some(g) = &self.gruu {
            if !g.is_instance(b.record.instance.as_deref()) {
                return Err(Skip::OtherGruu);
            }
            if !g.is_registration(&b.record.call_id) {
                return Err(Skip::StaleGruu);
            }
        }
        if !b.caps.accepts_cpm_message() {
            return Err(Skip::NotCpmCapable);
        }
        if !b.caps.satisfies(self.accept.as_deref().unwrap_or_default()) {
            return Err(Skip::AcceptContact);
        }
        if b.caps.rejected_by(self.reject.as_deref().unwrap_or_default()) {
            return Err(Skip::RejectContact);
        }
        if self.sender_source.is_some_and(|s| b.is_from(s)) {
            return Err(Skip::Sender);
        }
        match b.target {
            None => Err(Skip::Unreachable),
            Some(t) if self.sips && t.transport != TransportKind::Tls => Err(Skip::NotTls),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::binding::test_record;
    use super::*;
    use bytes::Bytes;

    fn msg(extra: &str) -> Message {
        msg_to("sip:bob@x", extra)
    }

    fn msg_to(ruri: &str, extra: &str) -> Message {
        let raw = format!(
            "MESSAGE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n{extra}\r\n"
        );
        Message::parse(Bytes::from(raw)).unwrap()
    }

    fn binding(contact: &str, instance: Option<&str>) -> Binding {
        let mut r = test_record("k", contact, 100);
        r.instance = instance.map(str::to_string);
        Binding::from_record(r).unwrap()
    }

    #[test]
    fn capabilities_and_expiry_decide() {
        let c = Criteria::new(&msg(""), None, None);
        assert_eq!(c.check(&binding("<sip:b@1.2.3.4>;+g.oma.sip-im", None), 10), Ok(()));
        assert_eq!(c.check(&binding("<sip:b@1.2.3.4>", None), 10), Ok(()), "plain SIP UA");
        assert_eq!(
            c.check(&binding("<sip:b@1.2.3.4>;+g.oma.sip-im", None), 100),
            Err(Skip::Expired)
        );
        let voice_only = "<sip:b@1.2.3.4>;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\"";
        assert_eq!(c.check(&binding(voice_only, None), 10), Err(Skip::NotCpmCapable));
    }

    #[test]
    fn gruu_and_accept_contact_and_sender() {
        let c = Criteria::new(&msg("Accept-Contact: *;+g.oma.sip-im;require;explicit\r\n"), None, None);
        assert_eq!(c.check(&binding("<sip:b@1.2.3.4>", None), 10), Err(Skip::AcceptContact));
        let g = Criteria::new(&msg(""), Some(GruuTarget::public("urn:uuid:2")), None);
        assert_eq!(
            g.check(&binding("<sip:b@1.2.3.4>", Some("<urn:uuid:1>")), 10),
            Err(Skip::OtherGruu)
        );
        assert_eq!(g.check(&binding("<sip:b@1.2.3.4>", Some("<urn:uuid:2>")), 10), Ok(()));
        // A temporary GRUU names one registration (Call-ID) of the device.
        let temp = |call_id: &str| GruuTarget {
            instance: "urn:uuid:2".into(),
            epoch: Some(crate::gruu::epoch_of(call_id)),
        };
        let t = Criteria::new(&msg(""), Some(temp("c")), None);
        assert_eq!(t.check(&binding("<sip:b@1.2.3.4>", Some("<urn:uuid:2>")), 10), Ok(()));
        let t = Criteria::new(&msg(""), Some(temp("before")), None);
        assert_eq!(
            t.check(&binding("<sip:b@1.2.3.4>", Some("<urn:uuid:2>")), 10),
            Err(Skip::StaleGruu)
        );
        let s = Criteria::new(&msg(""), None, Some("127.0.0.1:5999".parse().unwrap()));
        assert_eq!(s.check(&binding("<sip:b@1.2.3.4>", None), 10), Err(Skip::Sender));
    }

    /// The remembered line gives what parsing would, whatever came before.
    #[test]
    fn predicates_are_those_of_the_request_whatever_was_parsed_before() {
        let direct = |m: &Message, name| -> Vec<String> {
            m.headers
                .all(name)
                .filter_map(|v| parse_list(v).ok())
                .flatten()
                .map(|n| n.to_header_value())
                .collect()
        };
        let texts = |p: &Predicates| -> Vec<String> {
            p.as_deref()
                .unwrap_or_default()
                .iter()
                .map(|n| n.to_header_value())
                .collect()
        };
        let a = "Accept-Contact: *;+g.oma.sip-im\r\n";
        let b = "Accept-Contact: *;+g.3gpp.icsi-ref=\"x\";require\r\n";
        let two = "Accept-Contact: *;+g.oma.sip-im\r\nAccept-Contact: *;video\r\n";
        let reject = "Reject-Contact: *;+g.oma.sip-im\r\n";
        for extra in [a, a, b, a, two, a, "", reject, b, "Accept-Contact: <bad\r\n", a] {
            let m = msg(extra);
            let c = Criteria::new(&m, None, None);
            assert_eq!(texts(&c.accept), direct(&m, "Accept-Contact"), "{extra:?}");
            assert_eq!(texts(&c.reject), direct(&m, "Reject-Contact"), "{extra:?}");
            assert_eq!(c.accept.is_none(), m.header("Accept-Contact").is_none());
        }
    }

    #[test]
    fn sips_request_goes_only_to_tls_devices() {
        let c = Criteria::new(&msg_to("sips:bob@x", ""), None, None);
        assert_eq!(c.check(&binding("<sip:b@1.2.3.4>", None), 10), Err(Skip::NotTls));
        assert_eq!(c.check(&binding("<sip:b@1.2.3.4;transport=tls>", None), 10), Ok(()));
        assert_eq!(c.check(&binding("<sips:b@1.2.3.4>", None), 10), Ok(()));
    }
}
