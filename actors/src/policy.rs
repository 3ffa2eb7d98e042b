//! Provider policy and the provisioned-user list (the XDMS stand-in for now).

use std::collections::HashSet;
use std::time::Duration;

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
        }
    }
}

/// Who may use the server. In open mode any user of a local domain may;
/// otherwise only provisioned AORs (canonical strings).
#[derive(Debug, Clone, Default)]
pub struct Users {
    pub open: bool,
    pub provisioned: HashSet<String>,
}

impl Users {
    pub fn is_known(&self, aor: &crate::Aor) -> bool {
        self.open || self.provisioned.contains(aor.as_str())
    }
}
