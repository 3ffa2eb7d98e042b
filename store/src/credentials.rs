//! Digest credentials of provisioned users (RFC 3261 §22.4, RFC 8760).
//!
//! Only the digest hashes are kept, never the password: HA1 =
//! H(`username:realm:password`) for MD5 and for SHA-256, with the username
//! and realm they were computed with (a digest response can only be checked
//! against the same username and realm).
//!
//! Layout: `credentials`: `aor` -> bincode [`CredentialRecord`]. One key per
//! AOR, written with a plain `insert` (no multi-key update).
//!
//! Durability: setters return once the write is in sled's log; callers
//! flush before reporting success.

use serde::{Deserialize, Serialize};

use crate::common::{check_aor, decode, encode};
use crate::{Store, StoreError};

/// What is stored for one AOR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// The digest username the hashes were computed with.
    pub username: String,
    /// The realm the hashes were computed with.
    pub realm: String,
    /// Lower-case hex MD5(`username:realm:password`).
    pub ha1_md5: String,
    /// Lower-case hex SHA-256(`username:realm:password`).
    pub ha1_sha256: String,
}

impl Store {
    /// Sets (or replaces) the credentials of `aor`.
    pub fn set_credentials(&self, aor: &str, rec: &CredentialRecord) -> Result<(), StoreError> {
        check_aor(aor)?;
        self.credentials.insert(aor.as_bytes(), encode(rec)?)?;
        Ok(())
    }

    /// Removes the credentials of `aor`; false if it had none.
    pub fn remove_credentials(&self, aor: &str) -> Result<bool, StoreError> {
        check_aor(aor)?;
        Ok(self.credentials.remove(aor.as_bytes())?.is_some())
    }

    /// The credentials of `aor`, if it has any.
    pub fn credentials(&self, aor: &str) -> Result<Option<CredentialRecord>, StoreError> {
        check_aor(aor)?;
        match self.credentials.get(aor.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(
                decode::<CredentialRecord>(&v, "credentials")
                    .inspect_err(|e| tracing::warn!(aor, error = %e, "undecodable credentials"))?,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "sip:alice@example.com";

    fn rec(tag: &str) -> CredentialRecord {
        CredentialRecord {
            username: "alice".into(),
            realm: "example.com".into(),
            ha1_md5: format!("md5-{tag}"),
            ha1_sha256: format!("sha-{tag}"),
        }
    }

    #[test]
    fn set_get_replace_remove_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.credentials(ALICE).unwrap(), None);
            s.set_credentials(ALICE, &rec("1")).unwrap();
            s.set_credentials(ALICE, &rec("2")).unwrap();
            s.set_credentials("sip:bob@example.com", &rec("b")).unwrap();
            s.flush_blocking().unwrap();
        }
        {
            let s = crate::reopen(dir.path()).unwrap();
            assert_eq!(s.credentials(ALICE).unwrap(), Some(rec("2")));
            assert!(s.remove_credentials(ALICE).unwrap());
            assert!(!s.remove_credentials(ALICE).unwrap());
            assert_eq!(s.credentials(ALICE).unwrap(), None);
            assert_eq!(s.credentials("sip:bob@example.com").unwrap(), Some(rec("b")));
            s.flush_blocking().unwrap();
        }
        let s = crate::reopen(dir.path()).unwrap();
        assert_eq!(s.credentials(ALICE).unwrap(), None);
    }

    #[test]
    fn corrupt_value_and_bad_aor() {
        let s = Store::temporary().unwrap();
        s.credentials.insert(ALICE.as_bytes(), &b"\xff\xff"[..]).unwrap();
        assert!(matches!(s.credentials(ALICE), Err(StoreError::Decode(_))));
        for bad in ["", "sip:a\0b@x"] {
            assert!(matches!(
                s.set_credentials(bad, &rec("x")),
                Err(StoreError::InvalidAor(_))
            ));
            assert!(matches!(s.credentials(bad), Err(StoreError::InvalidAor(_))));
            assert!(matches!(s.remove_credentials(bad), Err(StoreError::InvalidAor(_))));
        }
    }
}
