//! RFC 3261 §10.3 registrar rules as a pure function: what a REGISTER
//! changes in a user's bindings. The PF applies and persists the plan.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use cpm_sip::caps::Capabilities;
use cpm_sip::params::NameAddr;
use cpm_sip::SipUri;
use cpm_store::BindingRecord;
use thiserror::Error;

use super::Binding;
use crate::gruu::{public_gruu, TempGruus};
use crate::{Aor, Policy, TransportKind};

/// One Contact of a REGISTER, already parsed by the ingress.
#[derive(Debug, Clone)]
pub struct ContactSpec {
    pub entry: NameAddr,
    pub uri: SipUri,
    pub expires: Option<u32>,
    pub instance: Option<String>,
    pub caps: Capabilities,
}

#[derive(Debug, Clone)]
pub enum RequestedContacts {
    /// No Contact header: a query for the current bindings.
    Fetch,
    /// `Contact: *` with `Expires: 0`.
    RemoveAll,
    Update(Vec<ContactSpec>),
}

#[derive(Debug, Clone)]
pub struct RegisterRequest {
    pub aor: Aor,
    pub contacts: RequestedContacts,
    /// The Expires header, if any.
    pub expires: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    pub transport: TransportKind,
    pub source: SocketAddr,
    /// `Supported: gruu` (RFC 5627).
    pub gruu: bool,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// 423 with Min-Expires.
    #[error("registration interval below {0} s")]
    IntervalTooBrief(u32),
    /// RFC 3261 §10.3 step 7: same Call-ID with a CSeq not above the stored one.
    #[error("REGISTER out of order (CSeq not above the stored one for this Call-ID)")]
    OutOfOrder,
    #[error("store failure: {0}")]
    Store(String),
    #[error("participating function unavailable")]
    Unavailable,
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub upserts: Vec<BindingRecord>,
    pub removals: Vec<String>,
}

pub(crate) fn plan(
    current: &BTreeMap<String, Binding>,
    req: &RegisterRequest,
    policy: &Policy,
    now: u64,
) -> Result<Plan, RegisterError> {
    let mut plan = Plan::default();
    match &req.contacts {
        RequestedContacts::Fetch => {}
        RequestedContacts::RemoveAll => {
            for b in current.values() {
                check_order(&b.record, req)?;
                plan.removals.push(b.record.key.clone());
            }
        }
        RequestedContacts::Update(contacts) => {
            for c in contacts {
                let expires = c.expires.or(req.expires).unwrap_or(policy.default_expires);
                if expires != 0 && expires < policy.min_expires {
                    return Err(RegisterError::IntervalTooBrief(policy.min_expires));
                }
                let key = binding_key(c);
                let existing = current.get(&key).map(|b| &b.record);
                if let Some(old) = existing {
                    check_order(old, req)?;
                }
                if expires == 0 {
                    if existing.is_some() {
                        plan.removals.push(key);
                    }
                    continue;
                }
                let mut entry = c.entry.clone();
                entry.params.retain(|p| !p.name.eq_ignore_ascii_case("expires"));
                plan.upserts.push(BindingRecord {
                    key,
                    contact: entry.to_header_value(),
                    uri: c.uri.to_string(),
                    instance: c.instance.clone(),
                    expires_at: now + u64::from(expires.min(policy.max_expires)),
                    call_id: req.call_id.clone(),
                    cseq: req.cseq,
                    transport: req.transport.as_str().to_string(),
                    source: req.source.to_string(),
                    registered_at: existing.map_or(now, |o| o.registered_at),
                    gruu: req.gruu && c.instance.is_some(),
                });
            }
        }
    }
    Ok(plan)
}

/// A binding's key: the `+sip.instance` value when the device sent one
/// (it keeps it when it comes back from elsewhere), else the contact URI.
fn binding_key(c: &ContactSpec) -> String {
    c.instance.clone().unwrap_or_else(|| c.uri.to_string())
}

/// Whether a key made by [`binding_key`] is an instance id: a contact URI
/// always has its scheme first.
pub(crate) fn is_instance_key(key: &str) -> bool {
    !(key.starts_with("sip:") || key.starts_with("sips:") || key.starts_with("tel:"))
}

fn check_order(old: &BindingRecord, req: &RegisterRequest) -> Result<(), RegisterError> {
    if old.call_id == req.call_id && req.cseq <= old.cseq {
        return Err(RegisterError::OutOfOrder);
    }
    Ok(())
}

/// Contact header values for the 200 OK: every live binding with its
/// remaining time, and its public and a new temporary GRUU (RFC 5627 §5.1)
/// when the client asked for GRUUs; the temporary one is in `domain`.
pub(crate) fn contact_list<'a>(
    aor: &Aor,
    bindings: impl Iterator<Item = &'a Binding>,
    now: u64,
    temp: &TempGruus,
    domain: &str,
) -> Vec<String> {
    bindings
        .filter(|b| b.is_live(now))
        .map(|b| {
            let mut v = format!("{};expires={}", b.record.contact, b.remaining(now));
            if let (true, Some(instance)) = (b.record.gruu, &b.record.instance) {
                v.push_str(&format!(";pub-gruu=\"{}\"", public_gruu(aor, instance)));
                if let Some(t) = temp.mint(aor, instance, &b.record.call_id, domain) {
                    v.push_str(&format!(";temp-gruu=\"{t}\""));
                }
            }
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_sip::params::parse_name_addr;

    fn contact(s: &str, expires: Option<u32>, instance: Option<&str>) -> ContactSpec {
        let entry = parse_name_addr(s).unwrap();
        ContactSpec {
            uri: SipUri::parse(&entry.uri).unwrap(),
            caps: Capabilities::from_params(&entry.params),
            entry,
            expires,
            instance: instance.map(str::to_string),
        }
    }

    fn req(contacts: RequestedContacts, call_id: &str, cseq: u32) -> RegisterRequest {
        RegisterRequest {
            aor: Aor::from_canonical("sip:bob@x"),
            contacts,
            expires: None,
            call_id: call_id.into(),
            cseq,
            transport: TransportKind::Udp,
            source: "127.0.0.1:5070".parse().unwrap(),
            gruu: true,
        }
    }

    fn apply(current: &mut BTreeMap<String, Binding>, p: Plan) {
        for k in p.removals {
            current.remove(&k);
        }
        for r in p.upserts {
            current.insert(r.key.clone(), Binding::from_record(r).unwrap());
        }
    }

    #[test]
    fn instance_keys_replace_and_expires_zero_removes() {
        let policy = Policy::default();
        let mut cur = BTreeMap::new();
        let c1 = contact("<sip:bob@10.0.0.1:1>;+g.oma.sip-im", Some(600), Some("<urn:uuid:1>"));
        let p = plan(&cur, &req(RequestedContacts::Update(vec![c1]), "a", 1), &policy, 100).unwrap();
        apply(&mut cur, p);
        let c1b = contact("<sip:bob@10.0.0.9:2>", None, Some("<urn:uuid:1>"));
        let p = plan(&cur, &req(RequestedContacts::Update(vec![c1b]), "b", 1), &policy, 100).unwrap();
        apply(&mut cur, p);
        assert_eq!(cur.len(), 1);
        let b = cur.values().next().unwrap();
        assert_eq!(b.record.uri, "sip:bob@10.0.0.9:2");
        assert_eq!(b.record.expires_at, 100 + 3600);
        let temp = TempGruus::new(&[1; 32]);
        let list = contact_list(&Aor::from_canonical("sip:bob@x"), cur.values(), 100, &temp, "x");
        assert!(list[0].contains("pub-gruu=\"sip:bob@x;gr=urn:uuid:1\""), "{list:?}");
        let t = list[0].split("temp-gruu=\"sip:").nth(1).expect("a temp-gruu");
        let user = t.split('@').next().unwrap();
        let named = temp.open(user).expect("it opens");
        assert_eq!(
            (named.instance.as_str(), named.epoch),
            ("urn:uuid:1", crate::gruu::epoch_of("b"))
        );
        let gone = contact("<sip:bob@10.0.0.9:2>", Some(0), Some("<urn:uuid:1>"));
        let p = plan(&cur, &req(RequestedContacts::Update(vec![gone]), "b", 2), &policy, 100).unwrap();
        apply(&mut cur, p);
        assert!(cur.is_empty());
    }

    #[test]
    fn too_brief_out_of_order_and_star() {
        let policy = Policy::default();
        let mut cur = BTreeMap::new();
        let short = contact("<sip:bob@10.0.0.1:1>", Some(5), None);
        assert_eq!(
            plan(&cur, &req(RequestedContacts::Update(vec![short]), "a", 1), &policy, 0).unwrap_err(),
            RegisterError::IntervalTooBrief(60)
        );
        let c = contact("<sip:bob@10.0.0.1:1>", Some(100_000), None);
        let p = plan(
            &cur,
            &req(RequestedContacts::Update(vec![c.clone()]), "a", 5),
            &policy,
            0,
        )
        .unwrap();
        apply(&mut cur, p);
        assert_eq!(
            cur.values().next().unwrap().record.expires_at,
            86_400,
            "capped at max_expires"
        );
        assert_eq!(
            plan(&cur, &req(RequestedContacts::Update(vec![c]), "a", 5), &policy, 0).unwrap_err(),
            RegisterError::OutOfOrder
        );
        let p = plan(&cur, &req(RequestedContacts::RemoveAll, "z", 1), &policy, 0).unwrap();
        assert_eq!(p.removals.len(), 1);
    }

    #[test]
    fn instance_keys_are_told_from_contact_keys() {
        assert!(is_instance_key("\"<urn:uuid:00000000-0000-1000-8000-000000000001>\""));
        assert!(is_instance_key("<urn:gsma:imei:35-209900-176148-1>"));
        for contact in ["sip:bob@10.0.0.1:5070", "sips:bob@example.com", "tel:+15551234"] {
            assert!(!is_instance_key(contact), "{contact}");
        }
        // And as the registrar makes them.
        let by_uri = binding_key(&contact("<sips:bob@10.0.0.1:5061>", None, None));
        assert!(!is_instance_key(&by_uri), "{by_uri}");
        let by_instance = binding_key(&contact("<sip:bob@10.0.0.1>", None, Some("<urn:uuid:1>")));
        assert!(is_instance_key(&by_instance), "{by_instance}");
    }
}
