//! Runtime user state that must survive restarts, set by the user at run
//! time rather than configured: for now do-not-disturb.
//!
//! Layout: `prefs`: `aor 0x00 name` -> bincode value of that preference.
//! Each preference is a single key, written with a plain `insert`.
//!
//! Durability: setters return once the write is in sled's log; callers await
//! [`Store::flush`] before acknowledging the change.

use crate::common::{aor_prefix, check_aor, decode, encode};
use crate::{Store, StoreError};

const DND: &str = "dnd";

fn pref_key(aor: &str, name: &str) -> Vec<u8> {
    let mut k = aor_prefix(aor);
    k.extend_from_slice(name.as_bytes());
    k
}

impl Store {
    /// Sets do-not-disturb for `aor`, overriding the configured preference.
    pub fn set_dnd(&self, aor: &str, on: bool) -> Result<(), StoreError> {
        check_aor(aor)?;
        self.prefs.insert(pref_key(aor, DND), encode(&on)?)?;
        Ok(())
    }

    /// Do-not-disturb of `aor` as last set; `None` if never set, in which
    /// case the caller falls back to the configured preference.
    pub fn dnd(&self, aor: &str) -> Result<Option<bool>, StoreError> {
        check_aor(aor)?;
        match self.prefs.get(pref_key(aor, DND))? {
            None => Ok(None),
            Some(v) => Ok(Some(decode::<bool>(&v, "dnd preference").inspect_err(|e| {
                tracing::warn!(aor, error = %e, "undecodable dnd preference");
            })?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "sip:bob@example.com";

    #[test]
    fn dnd_roundtrip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.dnd(BOB).unwrap(), None);
            s.set_dnd(BOB, true).unwrap();
            assert_eq!(s.dnd(BOB).unwrap(), Some(true));
            s.set_dnd("sip:carol@example.com", false).unwrap();
            crate::block_on(s.flush()).unwrap();
        }
        {
            let s = crate::reopen(dir.path()).unwrap();
            assert_eq!(s.dnd(BOB).unwrap(), Some(true));
            assert_eq!(s.dnd("sip:carol@example.com").unwrap(), Some(false));
            assert_eq!(s.dnd("sip:nobody@example.com").unwrap(), None);
            s.set_dnd(BOB, false).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = crate::reopen(dir.path()).unwrap();
        assert_eq!(s.dnd(BOB).unwrap(), Some(false));
    }

    #[test]
    fn corrupt_value_gives_decode_error() {
        let s = Store::temporary().unwrap();
        for bad in [&b"\x02"[..], b"", b"\x01\x00"] {
            s.prefs.insert(pref_key(BOB, DND), bad).unwrap();
            assert!(matches!(s.dnd(BOB), Err(StoreError::Decode(_))), "{bad:?}");
        }
        s.set_dnd(BOB, true).unwrap();
        assert_eq!(s.dnd(BOB).unwrap(), Some(true));
    }

    #[test]
    fn nul_or_empty_aor_rejected() {
        let s = Store::temporary().unwrap();
        for bad in ["", "sip:a\0b@x"] {
            assert!(matches!(s.set_dnd(bad, true), Err(StoreError::InvalidAor(_))));
            assert!(matches!(s.dnd(bad), Err(StoreError::InvalidAor(_))));
        }
        assert!(s.prefs.is_empty());
    }
}
