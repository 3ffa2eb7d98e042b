//! `--config FILE`: TOML, every key documented in docs/configuration.md.
//! Unknown keys are errors: a typo must not silently become a default.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use cpm_actors::cf::{GroupDef, Groups, Membership, SendPolicy};
use cpm_actors::{Aor, DeferredPolicy, ExpiryAction, OriginatorPolicy, Policy, Preferences, Release, Users};
use cpm_sip::SipUri;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Domains this server is authoritative for.
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub registrar: RegistrarConfig,
    #[serde(default)]
    pub messaging: MessagingConfig,
    #[serde(default)]
    pub actors: ActorsConfig,
    #[serde(default)]
    pub deferred: DeferredConfig,
    #[serde(default)]
    pub interworking: InterworkingConfig,
    /// Preferences of every user without preferences of its own.
    #[serde(default)]
    pub preferences: Preferences,
    /// Provisioned users (without --open only these may register and send).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub group_policy: GroupPolicyConfig,
    /// Pre-defined groups (the Group XDMS stand-in).
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Digest authentication (docs/auth.md).
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// Certificate and key of `--sip tls:` listeners.
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub trace: TraceConfig,
}

/// `[trace]`: the admin inspector's message trace (actors/src/trace.rs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Events kept, all calls together (0: none; the counters still count).
    pub events: usize,
    /// Least history the ring keeps, in seconds: under heavier traffic whole
    /// calls are sampled (0: every call, however fast the ring turns over).
    pub keep_s: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            events: cpm_actors::trace::DEFAULT_CAPACITY,
            keep_s: cpm_actors::trace::DEFAULT_KEEP.as_secs(),
        }
    }
}

impl TraceConfig {
    pub fn tracer(&self) -> cpm_actors::Tracer {
        cpm_actors::Tracer::sampled(self.events, Duration::from_secs(self.keep_s))
    }
}

/// `[tls]`: PEM files, read at startup (a relative path is relative to the
/// working directory).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// The embedded sled store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled's page cache in MiB (sled's own default is 1024). Everything
    /// beyond it stays on disk and is read back when a user is activated.
    pub cache_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_mb: StoreConfig::CACHE_MB,
        }
    }
}

impl StoreConfig {
    pub const CACHE_MB: u64 = 64;

    pub fn cache_bytes(&self) -> u64 {
        self.cache_mb.max(1) * 1024 * 1024
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupPolicyConfig {
    /// One aggregated report per kind to the sender, or each member's first report.
    pub aggregate_reports: bool,
    /// Seconds after which the aggregate goes out without every member's report.
    pub report_deadline_s: u64,
    /// Most recipients of an ad-hoc URI list.
    pub max_adhoc_recipients: usize,
    /// A domain reserved for groups: a Request-URI there naming no group is 404.
    pub domain: Option<String>,
}

impl Default for GroupPolicyConfig {
    fn default() -> Self {
        let p = Policy::default();
        GroupPolicyConfig {
            aggregate_reports: p.aggregate_group_reports,
            report_deadline_s: p.group_report_deadline.as_secs(),
            max_adhoc_recipients: p.max_adhoc_recipients,
            domain: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group identity: a SIP URI of a local domain.
    pub uri: String,
    pub owner: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub send_policy: SendPolicy,
    #[serde(default)]
    pub membership: Membership,
    #[serde(default = "default_group_size")]
    pub max_size: usize,
}

fn default_group_size() -> usize {
    100
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeferredConfig {
    pub default_expiry_s: u64,
    pub max_expiry_s: u64,
    pub max_messages: usize,
    pub max_bytes: u64,
    pub retry_after_s: u32,
    pub on_expiry: ExpiryAction,
    /// 0 = no reminders.
    pub reminder_interval_s: u64,
    /// 0 = no push retries (only at the device's next REGISTER).
    pub push_retry_s: u64,
}

impl Default for DeferredConfig {
    fn default() -> Self {
        let p = DeferredPolicy::default();
        DeferredConfig {
            default_expiry_s: p.default_expiry.as_secs(),
            max_expiry_s: p.max_expiry.as_secs(),
            max_messages: p.max_messages,
            max_bytes: p.max_bytes,
            retry_after_s: p.retry_after,
            on_expiry: p.on_expiry,
            reminder_interval_s: 0,
            push_retry_s: p.push_retry_interval.map_or(0, |d| d.as_secs()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterworkingConfig {
    /// Where the spool Interworking Function writes; default `<data>/interworking-spool`.
    pub spool_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    pub max_message_size: usize,
    pub accepted_content_types: Vec<String>,
    pub fork_timeout_ms: u64,
    /// May senders ask for anonymity (Privacy: id)? Otherwise 403.
    pub allow_anonymous: bool,
    /// Seconds the PF remembers forwarded reports and sending devices.
    pub imdn_retention_s: u64,
    /// Originators refused with 403 + Warning: CPM Addresses or `*@domain`.
    pub barred_senders: Vec<String>,
    /// Lowest `CPM-client/OMAx.y` release in User-Agent; else 403 + Error-Info.
    pub min_client_release: Option<String>,
    /// The Error-Info URI of that 403 (default: a data: URI saying what is needed).
    pub upgrade_info_uri: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorsConfig {
    /// Worker arbiters (threads) for ingress and user actors; 0 = one per core.
    pub workers: usize,
    pub idle_timeout_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// A SIP or TEL URI of one of the configured domains.
    pub address: String,
    /// This user's preferences; `[preferences]` when absent.
    pub preferences: Option<Preferences>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        let p = Policy::default();
        RegistrarConfig {
            min_expires: p.min_expires,
            max_expires: p.max_expires,
            default_expires: p.default_expires,
        }
    }
}

impl MessagingConfig {
    fn validate_originator(&self) -> anyhow::Result<()> {
        if let Some(r) = &self.min_client_release {
            anyhow::ensure!(
                Release::parse(r).is_some(),
                "messaging.min_client_release {r:?} is not a release like \"OMA2.0\""
            );
        }
        for b in &self.barred_senders {
            let ok = match b.strip_prefix("*@") {
                Some(d) => !d.is_empty() && !d.contains(['@', ':', ' ']),
                None => SipUri::parse(b).is_ok_and(|u| u.is_sip_routable() && u.user.is_some()),
            };
            anyhow::ensure!(ok, "messaging.barred_senders: {b:?} is not a CPM Address or *@domain");
        }
        Ok(())
    }

    fn originator(&self) -> OriginatorPolicy {
        let min = self.min_client_release.as_deref().and_then(Release::parse);
        let info = self.upgrade_info_uri.clone().unwrap_or_else(|| {
            let min = min.map(|m| m.to_string()).unwrap_or_default();
            format!("data:text/plain,CPM-client%2F{min}%20or%20later%20required")
        });
        OriginatorPolicy {
            // Compared with canonical AORs, which are lower case but for the user part.
            barred_senders: self.barred_senders.iter().map(|b| canonical_barred(b)).collect(),
            min_client_release: min,
            upgrade_info_uri: info,
        }
    }
}

/// A barred sender in the canonical AOR form the PF compares with
/// (`SIPS:Bob@Example.COM` → `sip:Bob@example.com`), as `LocalDomains::local_aor` makes it.
fn canonical_barred(b: &str) -> String {
    if b.starts_with("*@") {
        return b.to_ascii_lowercase();
    }
    match SipUri::parse(b).ok().as_ref().and_then(Aor::of_uri) {
        Some(aor) => aor.as_str().to_string(),
        None => b.to_string(), // refused by validate_originator before this
    }
}

impl Default for MessagingConfig {
    fn default() -> Self {
        let p = Policy::default();
        MessagingConfig {
            max_message_size: p.max_message_size,
            accepted_content_types: p.accepted_content_types,
            fork_timeout_ms: p.fork_timeout.as_millis() as u64,
            allow_anonymous: p.allow_anonymous,
            imdn_retention_s: p.imdn_retention.as_secs(),
            barred_senders: Vec::new(),
            min_client_release: None,
            upgrade_info_uri: None,
        }
    }
}

impl Default for ActorsConfig {
    fn default() -> Self {
        ActorsConfig {
            workers: 0,
            idle_timeout_s: Policy::default().idle_timeout.as_secs(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let r = &self.registrar;
        anyhow::ensure!(r.min_expires > 0, "registrar.min_expires must be above 0");
        anyhow::ensure!(
            r.min_expires <= r.default_expires && r.default_expires <= r.max_expires,
            "registrar: need min_expires <= default_expires <= max_expires"
        );
        anyhow::ensure!(
            self.messaging.fork_timeout_ms > 0,
            "messaging.fork_timeout_ms must be above 0"
        );
        anyhow::ensure!(self.actors.idle_timeout_s > 0, "actors.idle_timeout_s must be above 0");
        let d = &self.deferred;
        anyhow::ensure!(
            0 < d.default_expiry_s && d.default_expiry_s <= d.max_expiry_s,
            "deferred: need 0 < default_expiry_s <= max_expiry_s"
        );
        anyhow::ensure!(
            d.max_messages > 0 && d.max_bytes > 0,
            "deferred: max_messages and max_bytes must be above 0"
        );
        anyhow::ensure!(
            self.trace.events <= cpm_actors::trace::MAX_CAPACITY,
            "trace.events is {}: at most {} (each event takes a few hundred bytes)",
            self.trace.events,
            cpm_actors::trace::MAX_CAPACITY
        );
        self.auth.validate()?;
        self.messaging.validate_originator()?;
        for d in &self.domains {
            anyhow::ensure!(!d.is_empty() && !d.contains([':', '@', ' ']), "invalid domain {d:?}");
        }
        for u in &self.users {
            let uri = SipUri::parse(&u.address).with_context(|| format!("user address {:?}", u.address))?;
            anyhow::ensure!(
                uri.is_sip_routable() && uri.user.is_some(),
                "user address {:?} is not a SIP or TEL URI with a user part",
                u.address
            );
        }
        Ok(())
    }

    pub fn policy(&self) -> Policy {
        Policy {
            min_expires: self.registrar.min_expires,
            max_expires: self.registrar.max_expires,
            default_expires: self.registrar.default_expires,
            max_message_size: self.messaging.max_message_size,
            accepted_content_types: self
                .messaging
                .accepted_content_types
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            fork_timeout: Duration::from_millis(self.messaging.fork_timeout_ms),
            idle_timeout: Duration::from_secs(self.actors.idle_timeout_s),
            allow_anonymous: self.messaging.allow_anonymous,
            imdn_retention: Duration::from_secs(self.messaging.imdn_retention_s),
            aggregate_group_reports: self.group_policy.aggregate_reports,
            group_report_deadline: Duration::from_secs(self.group_policy.report_deadline_s),
            max_adhoc_recipients: self.group_policy.max_adhoc_recipients,
            originator: self.messaging.originator(),
            deferred: DeferredPolicy {
                default_expiry: Duration::from_secs(self.deferred.default_expiry_s),
                max_expiry: Duration::from_secs(self.deferred.max_expiry_s),
                max_messages: self.deferred.max_messages,
                max_bytes: self.deferred.max_bytes,
                retry_after: self.deferred.retry_after_s,
                on_expiry: self.deferred.on_expiry,
                reminder_interval: (self.deferred.reminder_interval_s > 0)
                    .then(|| Duration::from_secs(self.deferred.reminder_interval_s)),
                push_retry_interval: (self.deferred.push_retry_s > 0)
                    .then(|| Duration::from_secs(self.deferred.push_retry_s)),
            },
        }
    }

    /// Provisioned users as canonical AORs (needs the domains to canonicalize).
    pub fn users(&self, domains: &cpm_actors::LocalDomains, open: bool) -> anyhow::Result<Users> {
        let mut provisioned = HashSet::new();
        let mut preferences = std::collections::HashMap::new();
        for u in &self.users {
            let uri = SipUri::parse(&u.address)?;
            let aor = domains
                .local_aor(&uri)
                .with_context(|| format!("user {:?} is not in a configured domain", u.address))?;
            if let Some(p) = &u.preferences {
                preferences.insert(aor.as_str().to_string(), canonical_prefs(p, domains));
            }
            provisioned.insert(aor.as_str().to_string());
        }
        Ok(Users {
            open,
            provisioned,
            preferences,
            default_preferences: canonical_prefs(&self.preferences, domains),
        })
    }
}

impl Config {
    /// Pre-defined groups with canonical identities.
    pub fn groups(&self, domains: &cpm_actors::LocalDomains) -> anyhow::Result<Groups> {
        let canon = |a: &str, what: &str| -> anyhow::Result<String> {
            let uri = SipUri::parse(a).with_context(|| format!("{what} {a:?}"))?;
            let aor = domains
                .local_aor(&uri)
                .with_context(|| format!("{what} {a:?} is not in a configured domain"))?;
            Ok(aor.as_str().to_string())
        };
        let groups = Groups::new(self.group_policy.domain.as_ref().map(|d| d.to_ascii_lowercase()));
        for g in &self.groups {
            let members = g
                .members
                .iter()
                .map(|m| canon(m, "group member"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            groups.set(GroupDef {
                uri: canon(&g.uri, "group")?,
                owner: canon(&g.owner, "group owner")?,
                members,
                send_policy: g.send_policy,
                membership: g.membership,
                max_size: g.max_size,
            })?;
        }
        Ok(groups)
    }
}

/// Originators in `reject_from` are compared as canonical AORs.
fn canonical_prefs(p: &Preferences, domains: &cpm_actors::LocalDomains) -> Preferences {
    let mut p = p.clone();
    p.reject_from = p
        .reject_from
        .iter()
        .map(|a| match SipUri::parse(a).ok().and_then(|u| domains.local_aor(&u)) {
            Some(aor) => aor.as_str().to_string(),
            None => a.to_ascii_lowercase(),
        })
        .collect();
    p.reject_content_types = p.reject_content_types.iter().map(|t| t.to_ascii_lowercase()).collect();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let c = Config::parse(
            r#"
            domains = ["example.com"]
            [registrar]
            min_expires = 30
            [messaging]
            fork_timeout_ms = 500
            [actors]
            workers = 2
            [[users]]
            address = "sip:alice@example.com"
            "#,
        )
        .unwrap();
        assert_eq!(c.policy().min_expires, 30);
        assert_eq!(c.policy().fork_timeout, Duration::from_millis(500));
        let d = cpm_actors::LocalDomains::new(&c.domains, &[]);
        assert!(c
            .users(&d, false)
            .unwrap()
            .provisioned
            .contains("sip:alice@example.com"));
    }

    #[test]
    fn tls_section_needs_cert_and_key() {
        let c = Config::parse("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"").unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, std::path::PathBuf::from("c.pem"));
        assert_eq!(tls.key, std::path::PathBuf::from("k.pem"));
        assert!(Config::parse("[tls]\ncert = \"c.pem\"").is_err(), "key missing");
        assert!(Config::parse("[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"").is_err());
        assert!(Config::parse("").unwrap().tls.is_none());
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(Config::parse("domain = [\"x\"]").is_err(), "unknown key");
        assert!(Config::parse("[registrar]\nmin_expires = 0").is_err());
        assert!(Config::parse("[[users]]\naddress = \"mailto:x@y\"").is_err());
        let e = Config::parse("[trace]\nevents = 1000001").unwrap_err().to_string();
        assert!(e.contains("trace.events is 1000001: at most 1000000"), "{e}");
        assert_eq!(
            Config::parse("[trace]\nevents = 1000000").unwrap().trace.events,
            1_000_000
        );
        let c = Config::parse("domains=[\"a.org\"]\n[[users]]\naddress = \"sip:x@b.org\"").unwrap();
        assert!(c.users(&cpm_actors::LocalDomains::new(&c.domains, &[]), false).is_err());
    }

    #[test]
    fn auth_algorithms_parse_in_order_and_are_checked() {
        use crate::auth::digest::Algorithm;
        let c = Config::parse("[auth]\nalgorithms = [\"MD5\"]").unwrap();
        assert_eq!(c.auth.algorithms, vec![Algorithm::Md5]);
        let c = Config::parse("").unwrap();
        assert_eq!(c.auth.algorithms, vec![Algorithm::Sha256, Algorithm::Md5]);
        for bad in ["[]", "[\"MD5\", \"MD5\"]", "[\"SHA-512-256\"]"] {
            assert!(Config::parse(&format!("[auth]\nalgorithms = {bad}")).is_err(), "{bad}");
        }
    }
}
