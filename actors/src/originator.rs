//! Originating PF policy checks of 002 §8.3.2.1.1 steps 1-2: is the
//! authenticated originator allowed to send, and does its client run a CPM
//! release the provider still serves. Pure functions; the ingress turns a
//! refusal into 403 with Warning (step 1) or Error-Info (step 2).

use std::fmt;

use crate::Aor;

/// Provider rules on who may send (the `[messaging]` keys of the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginatorPolicy {
    /// Barred originators: canonical CPM Addresses (`sip:user@domain`,
    /// `tel:+1...`) or whole domains as `*@domain`.
    pub barred_senders: Vec<String>,
    /// Lowest CPM release a client must announce in its User-Agent
    /// (`CPM-client/OMA2.0`); None: any client, with or without the token.
    pub min_client_release: Option<Release>,
    /// The Error-Info URI sent when the client release is refused.
    pub upgrade_info_uri: String,
}

/// An OMA CPM release as in `CPM-client/OMA2.0` (Appendix C of the CPM
/// conversation functions: the release version in User-Agent and Server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    pub major: u32,
    pub minor: u32,
}

impl Release {
    /// `OMA2.0` (the `OMA` prefix is optional; case does not matter).
    pub fn parse(s: &str) -> Option<Release> {
        let s = s.trim();
        let v = match s.get(..3) {
            Some(p) if p.eq_ignore_ascii_case("oma") => &s[3..],
            _ => s,
        };
        let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
        Some(Release {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// The release a User-Agent header announces with its `CPM-client/OMAx.y` product token.
    pub fn of_user_agent(user_agent: &str) -> Option<Release> {
        user_agent.split_whitespace().find_map(|product| {
            let (name, version) = product.split_once('/')?;
            name.eq_ignore_ascii_case("CPM-client")
                .then(|| Release::parse(version))
                .flatten()
        })
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OMA{}.{}", self.major, self.minor)
    }
}

/// Why an originator may not send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Step 1: the originator is barred by provider policy.
    Barred,
    /// Step 2: the client's release is missing or below the required one.
    ClientRelease { required: Release, found: Option<Release> },
}

impl OriginatorPolicy {
    /// Steps 1 and 2 for the authenticated originator `sender`.
    pub fn check(&self, sender: &Aor, user_agent: Option<&str>) -> Result<(), Refusal> {
        if self.is_barred(sender) {
            return Err(Refusal::Barred);
        }
        if let Some(required) = self.min_client_release {
            let found = user_agent.and_then(Release::of_user_agent);
            if found.is_none_or(|f| f < required) {
                return Err(Refusal::ClientRelease { required, found });
            }
        }
        Ok(())
    }

    fn is_barred(&self, sender: &Aor) -> bool {
        let aor = sender.as_str();
        let domain = aor.rsplit_once('@').map(|(_, d)| d);
        self.barred_senders.iter().any(|b| match b.strip_prefix("*@") {
            Some(d) => domain.is_some_and(|x| x.eq_ignore_ascii_case(d)),
            None => b.eq_ignore_ascii_case(aor),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(barred: &[&str], min: Option<&str>) -> OriginatorPolicy {
        OriginatorPolicy {
            barred_senders: barred.iter().map(|s| s.to_string()).collect(),
            min_client_release: min.and_then(Release::parse),
            upgrade_info_uri: "https://example.com/upgrade".into(),
        }
    }

    #[test]
    fn barred_addresses_and_domains() {
        let p = policy(&["sip:mallory@x", "*@spam.example"], None);
        let aor = Aor::from_canonical;
        assert_eq!(p.check(&aor("sip:mallory@x"), None), Err(Refusal::Barred));
        assert_eq!(p.check(&aor("sip:eve@spam.example"), None), Err(Refusal::Barred));
        assert_eq!(p.check(&aor("sip:alice@x"), None), Ok(()));
        assert_eq!(p.check(&aor("sip:mallory@y"), None), Ok(()), "another domain's mallory");
    }

    #[test]
    fn client_release_from_user_agent() {
        assert_eq!(
            Release::of_user_agent("CPM-client/OMA2.0 Acme/Phone-1.2"),
            Release::parse("OMA2.0")
        );
        assert_eq!(Release::of_user_agent("baresip v1.0.0"), None);
        assert_eq!(Release::of_user_agent("cpm-client/oma1.1"), Release::parse("1.1"));
        assert!(Release::parse("OMA2.1") > Release::parse("OMA2.0"));
        assert!(
            Release::parse("OMA10.0") > Release::parse("OMA2.9"),
            "numeric, not text order"
        );
        assert_eq!(Release::parse("OMAx"), None);

        let p = policy(&[], Some("OMA2.0"));
        let alice = Aor::from_canonical("sip:alice@x");
        assert_eq!(p.check(&alice, Some("CPM-client/OMA2.0")), Ok(()));
        assert_eq!(p.check(&alice, Some("CPM-client/OMA2.1 X/1")), Ok(()));
        let required = Release { major: 2, minor: 0 };
        assert_eq!(
            p.check(&alice, Some("CPM-client/OMA1.0")),
            Err(Refusal::ClientRelease {
                required,
                found: Some(Release { major: 1, minor: 0 })
            })
        );
        assert_eq!(
            p.check(&alice, None),
            Err(Refusal::ClientRelease { required, found: None })
        );
        assert_eq!(policy(&[], None).check(&alice, None), Ok(()), "no requirement");
    }
}
