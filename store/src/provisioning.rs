//! Changes made through the admin API at run time (users, their
//! preferences, groups, the provider policy), kept so that they survive a restart. At start the
//! server reads its config file first and applies these over it.
//!
//! Layout: `provisioning`: `kind (1 byte) name` -> the caller's record of
//! the entry. The store does not read the records: the caller encodes them
//! (as JSON, so that a field added by a later build does not make older
//! records unreadable).
//!
//! Durability: writers await [`Store::flush`] before they acknowledge.

use crate::common::check_aor;
use crate::{Store, StoreError};

/// What an entry provisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionKind {
    /// A user (by canonical AOR): provisioned or not, own preferences.
    User,
    /// A pre-defined group (by canonical URI).
    Group,
    /// The provider policy (one record).
    Policy,
}

impl ProvisionKind {
    fn tag(self) -> u8 {
        match self {
            ProvisionKind::User => b'u',
            ProvisionKind::Group => b'g',
            ProvisionKind::Policy => b'p',
        }
    }
}

fn key(kind: ProvisionKind, name: &str) -> Result<Vec<u8>, StoreError> {
    check_aor(name)?;
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(kind.tag());
    k.extend_from_slice(name.as_bytes());
    Ok(k)
}

impl Store {
    /// Replace the record of `name`.
    pub fn put_provisioning(&self, kind: ProvisionKind, name: &str, record: &[u8]) -> Result<(), StoreError> {
        self.provisioning.insert(key(kind, name)?, record)?;
        Ok(())
    }

    /// Drop the record of `name`; true if there was one.
    pub fn remove_provisioning(&self, kind: ProvisionKind, name: &str) -> Result<bool, StoreError> {
        Ok(self.provisioning.remove(key(kind, name)?)?.is_some())
    }

    /// The record of `name`, if one was written.
    pub fn provisioning_entry(&self, kind: ProvisionKind, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.provisioning.get(key(kind, name)?)?.map(|v| v.to_vec()))
    }

    /// Every record of `kind`, by name.
    pub fn provisioning_entries(&self, kind: ProvisionKind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.provisioning.scan_prefix([kind.tag()]) {
            let (k, v) = item?;
            let name = std::str::from_utf8(&k[1..])
                .map_err(|_| StoreError::Corrupt(format!("provisioning key {k:?} is not UTF-8")))?;
            out.push((name.to_string(), v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_kinds_are_apart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_provisioning(ProvisionKind::User, "sip:carol@x", b"{\"a\":1}")
                .unwrap();
            s.put_provisioning(ProvisionKind::User, "sip:carol@x", b"{\"a\":2}")
                .unwrap();
            s.put_provisioning(ProvisionKind::User, "sip:dave@x", b"{}").unwrap();
            s.put_provisioning(ProvisionKind::Group, "sip:carol@x", b"null")
                .unwrap();
            crate::block_on(s.flush()).unwrap();
        }
        let s = crate::reopen(dir.path()).unwrap();
        assert_eq!(
            s.provisioning_entries(ProvisionKind::User).unwrap(),
            vec![
                ("sip:carol@x".to_string(), b"{\"a\":2}".to_vec()),
                ("sip:dave@x".to_string(), b"{}".to_vec())
            ]
        );
        assert_eq!(
            s.provisioning_entry(ProvisionKind::Group, "sip:carol@x")
                .unwrap()
                .as_deref(),
            Some(&b"null"[..])
        );
        assert_eq!(s.provisioning_entry(ProvisionKind::Group, "sip:dave@x").unwrap(), None);
        assert!(s.remove_provisioning(ProvisionKind::User, "sip:dave@x").unwrap());
        assert!(!s.remove_provisioning(ProvisionKind::User, "sip:dave@x").unwrap());
        assert_eq!(s.provisioning_entries(ProvisionKind::User).unwrap().len(), 1);
        assert!(s.provisioning_entries(ProvisionKind::Policy).unwrap().is_empty());
    }

    #[test]
    fn nul_or_empty_names_rejected() {
        let s = Store::temporary().unwrap();
        assert!(s.put_provisioning(ProvisionKind::User, "", b"{}").is_err());
        assert!(s.put_provisioning(ProvisionKind::Group, "sip:a\0b@x", b"{}").is_err());
        assert!(s.provisioning_entry(ProvisionKind::User, "").is_err());
    }
}
