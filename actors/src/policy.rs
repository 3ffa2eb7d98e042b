//! Provider policy and the provisioned-user list (the XDMS stand-in for now).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::preferences::{ExpiryAction, Preferences};

#[derive(Debug, Clone)]
pub struct Policy {
    /// REGISTER expiry bounds (RFC 3261 §10.3: 423 below the minimum).
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    /// Largest pager-mode body accepted (413 above).
    pub max_message_size: usize,
    /// Media types a pager-mode MESSAGE may carry (415 otherwise).
    pub accepted_content_types: Vec<String>,
    /// How long the PF waits for any device to accept a fork.
    pub fork_timeout: Duration,
    /// A PF with no traffic for this long is passivated.
    pub idle_timeout: Duration,
    pub deferred: DeferredPolicy,
    /// May senders ask for anonymity (Privacy: id)? Otherwise 403.
    pub allow_anonymous: bool,
    /// How long the PF remembers which reports it forwarded and which device
    /// sent a message (bounded memory, persisted).
    pub imdn_retention: Duration,
    /// Group messages: one aggregated report per kind to the sender (true),
    /// or each member's first report forwarded (false).
    pub aggregate_group_reports: bool,
    /// When the aggregated report goes out if not every member has answered.
    pub group_report_deadline: Duration,
    /// Most recipients in an ad-hoc URI list (RFC 5365).
    pub max_adhoc_recipients: usize,
    /// Who may send, and with which client release (002 §8.3.2.1.1 steps 1-2).
    pub originator: crate::OriginatorPolicy,
}

/// Provider policy for deferred messages (003 §5.2.5, CPM-DEF-001..003).
#[derive(Debug, Clone)]
pub struct DeferredPolicy {
    /// Expiry when the sender set none (SIP Expires on the MESSAGE).
    pub default_expiry: Duration,
    /// Cap on any expiry the sender asks for.
    pub max_expiry: Duration,
    /// Per-user caps; above them the MESSAGE gets 486 with Retry-After.
    pub max_messages: usize,
    pub max_bytes: u64,
    /// Retry-After (seconds) on a full queue.
    pub retry_after: u32,
    /// What expiry does when the user's preferences say nothing.
    pub on_expiry: ExpiryAction,
    /// Reminder of still-deferred messages in notify mode (CPM-CONV-008); None = off.
    pub reminder_interval: Option<Duration>,
    /// Push mode: how long after a registered device did not take its
    /// deferred messages the push is tried again (doubling per retry, see
    /// `pf/retry.rs`); None = only at its next REGISTER or live message.
    pub push_retry_interval: Option<Duration>,
}

impl Default for DeferredPolicy {
    fn default() -> DeferredPolicy {
        DeferredPolicy {
            default_expiry: Duration::from_secs(7 * 86_400),
            max_expiry: Duration::from_secs(30 * 86_400),
            max_messages: 1_000,
            max_bytes: 16 * 1024 * 1024,
            retry_after: 3_600,
            on_expiry: ExpiryAction::Discard,
            reminder_interval: None,
            push_retry_interval: Some(Duration::from_secs(60)),
        }
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            min_expires: 60,
            max_expires: 86_400,
            default_expires: 3_600,
            max_message_size: 64 * 1024,
            accepted_content_types: [
                "message/cpim",
                "text/plain",
                "message/imdn+xml",
                "application/im-iscomposing+xml",
                "multipart/mixed",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            fork_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            deferred: DeferredPolicy::default(),
            allow_anonymous: true,
            imdn_retention: Duration::from_secs(7 * 86_400),
            aggregate_group_reports: true,
            group_report_deadline: Duration::from_secs(30),
            max_adhoc_recipients: 20,
            originator: crate::OriginatorPolicy::default(),
        }
    }
}

/// Who may use the server. In open mode any user of a local domain may;
/// otherwise only provisioned AORs (canonical strings).
#[derive(Debug, Clone, Default)]
pub struct Users {
    pub open: bool,
    pub provisioned: HashSet<String>,
    /// Per-user preferences by canonical AOR; others get `default_preferences`.
    pub preferences: HashMap<String, Preferences>,
    pub default_preferences: Preferences,
}

impl Users {
    pub fn is_known(&self, aor: &crate::Aor) -> bool {
        self.open || self.provisioned.contains(aor.as_str())
    }

    pub fn preferences(&self, aor: &crate::Aor) -> &Preferences {
        self.preferences.get(aor.as_str()).unwrap_or(&self.default_preferences)
    }
}

/// [`Users`] shared by every actor and changed at run time by the admin API
/// (provisioning): readers see either the old or the new list, never a mix.
#[derive(Debug, Default)]
pub struct SharedUsers {
    inner: std::sync::RwLock<std::sync::Arc<Users>>,
}

impl SharedUsers {
    pub fn new(users: Users) -> SharedUsers {
        SharedUsers {
            inner: std::sync::RwLock::new(std::sync::Arc::new(users)),
        }
    }

    /// The list as it is now.
    pub fn snapshot(&self) -> std::sync::Arc<Users> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn is_known(&self, aor: &crate::Aor) -> bool {
        self.snapshot().is_known(aor)
    }

    pub fn preferences(&self, aor: &crate::Aor) -> Preferences {
        self.snapshot().preferences(aor).clone()
    }

    /// Change the list (copy on write); returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut Users) -> R) -> R {
        let mut guard = match self.inner.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = (**guard).clone();
        let out = f(&mut next);
        *guard = std::sync::Arc::new(next);
        out
    }
}

impl From<Users> for SharedUsers {
    fn from(users: Users) -> SharedUsers {
        SharedUsers::new(users)
    }
}

/// The provider policy, replaceable at run time (admin API): readers take a
/// snapshot (`get`) and see either the old or the new policy, never a mix.
#[derive(Debug, Default)]
pub struct SharedPolicy {
    inner: std::sync::RwLock<std::sync::Arc<Policy>>,
}

impl SharedPolicy {
    pub fn new(policy: Policy) -> SharedPolicy {
        SharedPolicy {
            inner: std::sync::RwLock::new(std::sync::Arc::new(policy)),
        }
    }

    /// The policy in force now.
    pub fn get(&self) -> std::sync::Arc<Policy> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replace it; applies to what happens next (timers already set keep theirs).
    pub fn set(&self, policy: Policy) {
        let mut guard = match self.inner.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = std::sync::Arc::new(policy);
    }
}
