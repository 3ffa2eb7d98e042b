//! User preferences (the XDMS stand-in): what the terminating PF does with a
//! message no device takes, how deferred messages reach the user, and rules
//! that refuse messages (001 §5.2.2.1.1, §5.2.2.2; 003 §5.2.5).

use serde::{Deserialize, Serialize};

/// When no eligible device takes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unavailable {
    /// Queue it in the DeferredQueue (202).
    #[default]
    Defer,
    /// Hand it to the Message Storage Server (202).
    Store,
    /// Hand it to the Interworking Function (202).
    Interwork,
    /// Refuse it: 480.
    Reject,
}

/// How deferred messages reach the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeferredMode {
    /// Delivered to the first eligible device that registers.
    #[default]
    Push,
    /// Announced to the devices; the user picks an action per message.
    Notify,
}

/// What expiry does to a deferred message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiryAction {
    #[default]
    Discard,
    Store,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Preferences {
    pub when_unavailable: Unavailable,
    pub deferred_delivery: DeferredMode,
    /// Do-not-disturb: holds notifications and pushes (runtime changes are
    /// stored and win over this configured value).
    pub dnd: bool,
    /// Originators (SIP/TEL URIs, compared as canonical AORs) whose messages are declined.
    pub reject_from: Vec<String>,
    pub reject_anonymous: bool,
    /// Media types declined (`text/plain`, `message/cpim` ...).
    pub reject_content_types: Vec<String>,
    /// Overrides the provider's `on_expiry` for this user.
    pub on_expiry: Option<ExpiryAction>,
}

/// Why a preference rule declined a message (603 reason phrase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declined {
    Originator,
    Anonymous,
    ContentType,
}

impl Declined {
    pub fn reason(self) -> &'static str {
        match self {
            Declined::Originator => "Decline (originator refused by the recipient)",
            Declined::Anonymous => "Decline (anonymous messages refused by the recipient)",
            Declined::ContentType => "Decline (content type refused by the recipient)",
        }
    }
}

impl Preferences {
    /// Apply the reject rules. `sender` is a canonical AOR, `content_type`
    /// the lower-case media type (of the CPIM payload when wrapped).
    pub fn check(&self, sender: &str, anonymous: bool, content_types: &[String]) -> Result<(), Declined> {
        if anonymous && self.reject_anonymous {
            return Err(Declined::Anonymous);
        }
        if self.reject_from.iter().any(|r| r.eq_ignore_ascii_case(sender)) {
            return Err(Declined::Originator);
        }
        let refused = |ct: &String| self.reject_content_types.iter().any(|r| r.eq_ignore_ascii_case(ct));
        if content_types.iter().any(refused) {
            return Err(Declined::ContentType);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_decline() {
        let p = Preferences {
            reject_from: vec!["sip:spam@x".into()],
            reject_anonymous: true,
            reject_content_types: vec!["image/gif".into()],
            ..Preferences::default()
        };
        assert_eq!(p.check("sip:spam@x", false, &[]), Err(Declined::Originator));
        assert_eq!(p.check("sip:a@x", true, &[]), Err(Declined::Anonymous));
        assert_eq!(
            p.check("sip:a@x", false, &["image/gif".into()]),
            Err(Declined::ContentType)
        );
        assert_eq!(p.check("sip:a@x", false, &["text/plain".into()]), Ok(()));
        assert_eq!(Preferences::default().check("sip:a@x", true, &[]), Ok(()));
    }

    #[test]
    fn toml_names() {
        #[derive(Deserialize)]
        struct W {
            p: Preferences,
        }
        let w: W =
            serde_json_like("when_unavailable = \"store\"\ndeferred_delivery = \"notify\"\non_expiry = \"store\"");
        assert_eq!(w.p.when_unavailable, Unavailable::Store);
        assert_eq!(w.p.deferred_delivery, DeferredMode::Notify);
        assert_eq!(w.p.on_expiry, Some(ExpiryAction::Store));

        fn serde_json_like(body: &str) -> W {
            let text = format!("[p]\n{body}\n");
            toml::from_str(&text).expect("toml")
        }
    }
}
