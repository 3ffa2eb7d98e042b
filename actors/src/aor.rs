//! Addresses of record: the canonical key of a CPM user.

use std::collections::HashSet;
use std::fmt;

use cpm_sip::SipUri;

/// Canonical CPM address: `sip:user@domain` (no port, no params, domain
/// lower-case) or `tel:+number`. One PF actor per distinct value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aor(String);

impl Aor {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Build from a trusted canonical string (from the store or config).
    pub fn from_canonical(s: impl Into<String>) -> Aor {
        Aor(s.into())
    }

    /// The canonical AOR of any SIP or TEL URI, in the URI's own domain
    /// (mapping our listening addresses to the primary domain is
    /// [`LocalDomains::local_aor`]'s job).
    pub fn of_uri(uri: &SipUri) -> Option<Aor> {
        match uri.scheme.as_str() {
            "sip" | "sips" => Some(Aor::sip(uri.user.as_deref().filter(|u| !u.is_empty())?, &uri.host)),
            "tel" => uri.user.as_deref().map(Aor::tel),
            _ => None,
        }
    }

    /// `sip:user@domain`; `sips:` users are the same users. Built without
    /// format!: this runs for sender and target of every request.
    fn sip(user: &str, domain: &str) -> Aor {
        let mut s = String::with_capacity(5 + user.len() + domain.len());
        s.push_str("sip:");
        s.push_str(user);
        s.push('@');
        s.push_str(domain);
        Aor(s)
    }

    /// `tel:` with the visual separators of RFC 3966 removed.
    fn tel(number: &str) -> Aor {
        Aor(format!("tel:{}", number.replace(['-', '.', '(', ')'], "")))
    }

    pub fn user(&self) -> &str {
        let rest = self.0.split_once(':').map_or(self.0.as_str(), |(_, r)| r);
        rest.split_once('@').map_or(rest, |(u, _)| u)
    }
}

impl fmt::Display for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the server is authoritative for: configured domains, plus its own
/// listening addresses (a request to `sip:bob@127.0.0.1:5060` is local).
#[derive(Debug, Clone)]
pub struct LocalDomains {
    /// The domain AORs are filed under when a request names an address of ours.
    primary: String,
    domains: HashSet<String>,
    addresses: HashSet<String>,
    /// The `host:port` ones of `addresses`, split and the port parsed once
    /// (is_local_host runs for sender and target of every request).
    host_ports: Vec<(String, u16)>,
}

impl LocalDomains {
    /// `domains` as configured; `addresses` are `host` or `host:port` of the listeners.
    pub fn new(domains: &[String], addresses: &[String]) -> LocalDomains {
        let domains: HashSet<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
        let mut addrs = HashSet::new();
        for a in addresses {
            addrs.insert(a.to_ascii_lowercase());
            if let Some((host, _)) = a.rsplit_once(':') {
                if !host.ends_with(']') || host.starts_with('[') {
                    addrs.insert(host.to_ascii_lowercase());
                }
            }
        }
        let primary = domains
            .iter()
            .min()
            .cloned()
            .or_else(|| {
                addresses
                    .first()
                    .map(|a| a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h).to_string())
            })
            .unwrap_or_else(|| "localhost".to_string());
        let host_ports = addrs
            .iter()
            .filter_map(|a| {
                let (h, p) = a.rsplit_once(':')?;
                Some((h.to_string(), p.parse().ok()?))
            })
            .collect();
        LocalDomains {
            primary,
            domains,
            addresses: addrs,
            host_ports,
        }
    }

    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// Is this host (with optional port) ours?
    pub fn is_local_host(&self, host: &str, port: Option<u16>) -> bool {
        // Called several times per request: no allocation in the usual
        // (already lower-case) case.
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        if self.domains.contains(host) {
            return true;
        }
        match port {
            Some(p) => self.host_ports.iter().any(|(h, ap)| h == host && *ap == p),
            None => self.addresses.contains(host),
        }
    }

    /// The canonical AOR for a URI if it belongs to a local user, else None.
    /// tel: URIs are always treated as ours (no ENUM yet; see docs).
    pub fn local_aor(&self, uri: &SipUri) -> Option<Aor> {
        match uri.scheme.as_str() {
            "sip" | "sips" => {
                let user = uri.user.as_deref().filter(|u| !u.is_empty())?;
                if !self.is_local_host(&uri.host, uri.port) {
                    return None;
                }
                let domain = if self.domains.contains(&uri.host) {
                    uri.host.as_str()
                } else {
                    self.primary.as_str()
                };
                Some(Aor::sip(user, domain))
            }
            "tel" => Aor::of_uri(uri),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> SipUri {
        SipUri::parse(s).unwrap()
    }

    #[test]
    fn of_uri_is_canonical_in_the_uris_own_domain() {
        let of = |s: &str| Aor::of_uri(&uri(s)).map(|a| a.as_str().to_string());
        assert_eq!(
            of("SIPS:Bob@Example.COM:5061;transport=tls").as_deref(),
            Some("sip:Bob@example.com")
        );
        assert_eq!(of("tel:+1-555-(0100)").as_deref(), Some("tel:+15550100"));
        assert_eq!(of("sip:example.com"), None, "no user part");
        assert_eq!(of("mailto:bob@example.com"), None);
    }

    #[test]
    fn listening_address_maps_to_primary_domain() {
        let d = LocalDomains::new(&[], &["127.0.0.1:5060".into()]);
        assert_eq!(
            d.local_aor(&uri("sip:bob@127.0.0.1:5060")).unwrap().as_str(),
            "sip:bob@127.0.0.1"
        );
        assert_eq!(
            d.local_aor(&uri("sip:bob@127.0.0.1")).unwrap().as_str(),
            "sip:bob@127.0.0.1"
        );
        assert!(d.local_aor(&uri("sip:bob@127.0.0.1:5999")).is_none());
        assert!(d.local_aor(&uri("sip:bob@elsewhere.org")).is_none());
    }

    #[test]
    fn configured_domains_are_kept() {
        let d = LocalDomains::new(&["Example.com".into(), "b.org".into()], &["10.0.0.1:5060".into()]);
        assert_eq!(
            d.local_aor(&uri("sip:bob@EXAMPLE.com:5080")).unwrap().as_str(),
            "sip:bob@example.com"
        );
        assert_eq!(
            d.local_aor(&uri("sip:al@10.0.0.1:5060")).unwrap().as_str(),
            "sip:al@b.org"
        );
        assert_eq!(d.local_aor(&uri("tel:+1-555-0100")).unwrap().as_str(), "tel:+15550100");
        assert_eq!(Aor::from_canonical("sip:al@b.org").user(), "al");
    }
}
