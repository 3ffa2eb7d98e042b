//! A registered contact as the PF uses it: the stored record plus what is
//! derived from it once (capabilities, where to send).

use std::net::{IpAddr, SocketAddr};

use cpm_sip::caps::Capabilities;
use cpm_sip::params::parse_name_addr;
use cpm_sip::SipUri;
use cpm_store::BindingRecord;

use crate::{Target, TransportKind};

#[derive(Debug, Clone)]
pub struct Binding {
    pub record: BindingRecord,
    pub uri: SipUri,
    pub caps: Capabilities,
    /// None when the contact names neither an IP nor a usable source.
    pub target: Option<Target>,
    /// `record.source` read once, so that a message's source is compared
    /// without formatting it (see [`Binding::is_from`]).
    source: Option<SocketAddr>,
}

impl Binding {
    /// Rebuild from a stored record; None if the record no longer parses
    /// (it is then dropped and logged by the caller, never used).
    pub fn from_record(record: BindingRecord) -> Option<Binding> {
        let uri = SipUri::parse(&record.uri).ok()?;
        let caps = parse_name_addr(&record.contact)
            .map(|na| Capabilities::from_params(&na.params))
            .unwrap_or_default();
        let target = resolve_target(&uri, &record);
        // Only a source stored as SocketAddr writes it (as the registrar
        // does) is kept: is_from then agrees with comparing the texts.
        let source = record
            .source
            .parse::<SocketAddr>()
            .ok()
            .filter(|s| s.to_string() == record.source);
        Some(Binding {
            record,
            uri,
            caps,
            target,
            source,
        })
    }

    /// Registered from `addr`: the same as `addr.to_string() == record.source`,
    /// without the formatting. The text has no IPv6 flow info, so it is
    /// left out of the comparison.
    pub fn is_from(&self, addr: SocketAddr) -> bool {
        match (self.source, addr) {
            (Some(SocketAddr::V6(s)), SocketAddr::V6(a)) => {
                s.ip() == a.ip() && s.port() == a.port() && s.scope_id() == a.scope_id()
            }
            (Some(s), a) => s == a,
            (None, _) => false,
        }
    }

    pub fn is_live(&self, now: u64) -> bool {
        self.record.expires_at > now
    }

    pub fn remaining(&self, now: u64) -> u64 {
        self.record.expires_at.saturating_sub(now)
    }
}

/// Transport: TLS for a `sips:` contact (RFC 3261 §19.1: every hop is
/// TLS), else the contact's `transport` parameter, else the one the device
/// registered over (a device listens where it registered from; documented
/// in docs/architecture.md). Address: the contact's IP literal, else the
/// REGISTER's source address (no DNS on this core). A TLS device registered
/// over TLS is reached on the connection it opened (its source): we do not
/// open TLS connections ourselves.
fn resolve_target(uri: &SipUri, rec: &BindingRecord) -> Option<Target> {
    let registered = TransportKind::parse(&rec.transport);
    let transport = if uri.scheme == "sips" {
        TransportKind::Tls
    } else {
        uri.transport()
            .and_then(|t| TransportKind::parse(&t))
            .or(registered)
            .unwrap_or(TransportKind::Udp)
    };
    if transport == TransportKind::Tls && registered == Some(TransportKind::Tls) {
        return Some(Target {
            transport,
            addr: rec.source.parse().ok()?,
        });
    }
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, uri.port.unwrap_or(if uri.scheme == "sips" { 5061 } else { 5060 })),
        Err(_) => rec.source.parse().ok()?,
    };
    Some(Target { transport, addr })
}

#[cfg(test)]
pub(crate) fn test_record(key: &str, contact: &str, expires_at: u64) -> BindingRecord {
    let na = parse_name_addr(contact).expect("test contact");
    BindingRecord {
        key: key.into(),
        contact: contact.into(),
        uri: na.uri.clone(),
        instance: None,
        expires_at,
        call_id: "c".into(),
        cseq: 1,
        transport: "udp".into(),
        source: "127.0.0.1:5999".into(),
        registered_at: 0,
        gruu: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_prefers_contact_ip_and_transport_param() {
        let b = Binding::from_record(test_record(
            "k",
            "<sip:b@10.1.2.3:5070;transport=tcp>;+g.oma.sip-im",
            10,
        ))
        .unwrap();
        let t = b.target.unwrap();
        assert_eq!(t.transport, TransportKind::Tcp);
        assert_eq!(t.addr, "10.1.2.3:5070".parse().unwrap());
        assert!(b.caps.sip_im);
    }

    #[test]
    fn sips_and_tls_contacts_go_over_tls_on_the_registering_connection() {
        let mut rec = test_record("k", "<sips:b@10.1.2.3:5071>", 10);
        rec.transport = "tls".into();
        let t = Binding::from_record(rec).unwrap().target.unwrap();
        assert_eq!(t.transport, TransportKind::Tls);
        assert_eq!(t.addr, "127.0.0.1:5999".parse().unwrap(), "the connection it opened");
        // sips: registered over plain TCP: still TLS only (the send then fails).
        let mut rec = test_record("k", "<sips:b@10.1.2.3;transport=tcp>", 10);
        rec.transport = "tcp".into();
        let t = Binding::from_record(rec).unwrap().target.unwrap();
        assert_eq!(t.transport, TransportKind::Tls);
        assert_eq!(t.addr, "10.1.2.3:5061".parse().unwrap());
        let t = Binding::from_record(test_record("k", "<sip:b@10.1.2.3;transport=TLS>", 10))
            .unwrap()
            .target
            .unwrap();
        assert_eq!(t.transport, TransportKind::Tls);
    }

    #[test]
    fn is_from_agrees_with_the_stored_text() {
        let b = Binding::from_record(test_record("k", "<sip:b@1.2.3.4>", 10)).unwrap();
        assert!(b.is_from("127.0.0.1:5999".parse().unwrap()));
        assert!(!b.is_from("127.0.0.1:5998".parse().unwrap()));
        assert!(!b.is_from("[::ffff:127.0.0.1]:5999".parse().unwrap()));
        let mut rec = test_record("k", "<sip:b@1.2.3.4>", 10);
        rec.source = "[fe80::1%2]:5060".into();
        let b = Binding::from_record(rec).unwrap();
        let with_flow = SocketAddr::V6(std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 5060, 7, 2));
        assert_eq!(with_flow.to_string(), b.record.source);
        assert!(b.is_from(with_flow));
        assert!(!b.is_from("[fe80::1%3]:5060".parse().unwrap()));
        // Not as a SocketAddr writes it: never equal to a formatted address.
        let mut rec = test_record("k", "<sip:b@1.2.3.4>", 10);
        rec.source = "[::FFFF:7f00:1]:5999".into();
        assert!(!Binding::from_record(rec)
            .unwrap()
            .is_from("[::ffff:127.0.0.1]:5999".parse().unwrap()));
    }

    #[test]
    fn hostname_contact_falls_back_to_source() {
        let b = Binding::from_record(test_record("k", "<sip:b@phone.invalid>", 10)).unwrap();
        assert_eq!(b.target.unwrap().addr, "127.0.0.1:5999".parse().unwrap());
        assert!(b.is_live(9) && !b.is_live(10));
    }
}
