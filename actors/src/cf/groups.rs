//! Pre-defined groups (the Group XDMS stand-in): definitions read by the
//! Controlling Function for every message, so membership changes take
//! effect for the next message.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// Who may send to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendPolicy {
    #[default]
    Members,
    Anyone,
}

/// Whether membership is fixed by the owner (closed) or users may join (open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    #[default]
    Closed,
    Open,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDef {
    /// Canonical group identity (a SIP URI of a local domain).
    pub uri: String,
    pub owner: String,
    /// Canonical AORs of the members.
    pub members: Vec<String>,
    pub send_policy: SendPolicy,
    pub membership: Membership,
    pub max_size: usize,
}

impl GroupDef {
    /// What [`Groups::set`] refuses: more members than `max_size`.
    pub fn check(&self) -> Result<(), GroupError> {
        if self.members.len() > self.max_size {
            return Err(GroupError::TooLarge(
                self.uri.clone(),
                self.members.len(),
                self.max_size,
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    #[error("group {0} has {1} members, above its maximum of {2}")]
    TooLarge(String, usize, usize),
    #[error("group {0} not found")]
    NotFound(String),
}

/// All pre-defined groups by canonical URI.
#[derive(Debug, Default)]
pub struct Groups {
    defs: RwLock<HashMap<String, Arc<GroupDef>>>,
    /// Domain reserved for groups: a Request-URI there that names no group is 404.
    pub group_domain: Option<String>,
}

impl Groups {
    pub fn new(group_domain: Option<String>) -> Groups {
        Groups {
            defs: RwLock::new(HashMap::new()),
            group_domain,
        }
    }

    pub fn get(&self, uri: &str) -> Option<Arc<GroupDef>> {
        self.defs.read().ok()?.get(uri).cloned()
    }

    /// Create or replace a group.
    pub fn set(&self, def: GroupDef) -> Result<(), GroupError> {
        def.check()?;
        if let Ok(mut defs) = self.defs.write() {
            defs.insert(def.uri.clone(), Arc::new(def));
        }
        Ok(())
    }

    pub fn remove(&self, uri: &str) -> Result<(), GroupError> {
        let removed = self.defs.write().ok().and_then(|mut d| d.remove(uri));
        removed.map(|_| ()).ok_or_else(|| GroupError::NotFound(uri.to_string()))
    }

    /// Replace the member list (owner-side provisioning).
    pub fn set_members(&self, uri: &str, members: Vec<String>) -> Result<(), GroupError> {
        let mut def = (*self.get(uri).ok_or_else(|| GroupError::NotFound(uri.to_string()))?).clone();
        def.members = members;
        self.set(def)
    }

    pub fn list(&self) -> Vec<Arc<GroupDef>> {
        self.defs
            .read()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(members: &[&str]) -> GroupDef {
        GroupDef {
            uri: "sip:g@x".into(),
            owner: "sip:a@x".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            send_policy: SendPolicy::Members,
            membership: Membership::Closed,
            max_size: 3,
        }
    }

    #[test]
    fn membership_changes_and_limits() {
        let g = Groups::new(None);
        g.set(def(&["sip:a@x", "sip:b@x"])).unwrap();
        g.set_members("sip:g@x", vec!["sip:a@x".into()]).unwrap();
        assert_eq!(g.get("sip:g@x").unwrap().members, vec!["sip:a@x".to_string()]);
        assert!(matches!(
            g.set(def(&["1", "2", "3", "4"])),
            Err(GroupError::TooLarge(..))
        ));
        assert!(g.remove("sip:none@x").is_err());
        g.remove("sip:g@x").unwrap();
        assert!(g.get("sip:g@x").is_none());
    }
}
