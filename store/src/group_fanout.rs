//! The group Controlling Function's fan-out journal: a group message whose
//! 202 went out is remembered until every member's copy was delivered or
//! stored by that member's PF, so a crash in between loses no copy (after
//! a restart the CF sends the copies not yet done again: at least once).
//!
//! Layout: `group_fanout`: `group 0x00 id (u64 BE)` -> bincode
//! [`FanOutRecord`]. One record per group message, written when it is
//! accepted (the caller flushes before the 202), rewritten now and then
//! with the members still waiting (the CF batches these), removed with the
//! last copy. Only the group's CF writes its records.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::common::{check_aor, decode, encode, seq_key, split_aor_key};
use crate::{Store, StoreError};

/// What a fan-out needs to send the copies again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutRecord {
    /// The (authorized) author.
    pub sender: String,
    /// The request as the CF received it (the copies are made from it).
    pub request: Vec<u8>,
    /// The members whose copy is not done yet (as last written).
    pub members: BTreeSet<String>,
}

fn record_key(group: &str, id: u64) -> Result<Vec<u8>, StoreError> {
    check_aor(group)?;
    Ok(seq_key(group, id))
}

/// `group 0x00 id` back to its parts.
fn split_record_key(k: &[u8]) -> Option<(String, u64)> {
    let (group, id) = split_aor_key(k)?;
    Some((group.to_string(), u64::from_be_bytes(id.try_into().ok()?)))
}

impl Store {
    /// Remember a fan-out of `group`; its id.
    pub fn begin_fanout(&self, group: &str, rec: &FanOutRecord) -> Result<u64, StoreError> {
        for m in &rec.members {
            check_aor(m)?;
        }
        let id = self.db.generate_id()?;
        self.group_fanout.insert(record_key(group, id)?, encode(rec)?)?;
        Ok(id)
    }

    /// Replace fan-out `id`'s record (fewer members waiting).
    pub fn update_fanout(&self, group: &str, id: u64, rec: &FanOutRecord) -> Result<(), StoreError> {
        self.group_fanout.insert(record_key(group, id)?, encode(rec)?)?;
        Ok(())
    }

    /// Every copy of fan-out `id` is done.
    pub fn end_fanout(&self, group: &str, id: u64) -> Result<(), StoreError> {
        self.group_fanout.remove(record_key(group, id)?)?;
        Ok(())
    }

    /// Fan-out `id` of `group`, if it is not done.
    pub fn fanout(&self, group: &str, id: u64) -> Result<Option<FanOutRecord>, StoreError> {
        match self.group_fanout.get(record_key(group, id)?)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode(&v, "group fan-out record")?)),
        }
    }

    /// The (group, id) of every fan-out not done, at start. A key that is
    /// not ours is removed and logged, so it cannot keep the others from
    /// being resumed.
    pub fn pending_fanouts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for item in self.group_fanout.iter() {
            let (k, _) = item?;
            match split_record_key(&k) {
                Some(pending) => out.push(pending),
                None => {
                    tracing::error!(key = ?k, "unreadable group fan-out key dropped");
                    self.group_fanout.remove(&k)?;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(members: &[&str]) -> FanOutRecord {
        FanOutRecord {
            sender: "sip:alice@example.com".into(),
            request: b"MESSAGE sip:g@example.com SIP/2.0\r\n\r\n".to_vec(),
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn fanouts_not_done_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let both = ["sip:bob@example.com", "sip:carol@example.com"];
        let (a, b, c) = {
            let s = Store::open(dir.path()).unwrap();
            let a = s.begin_fanout("sip:g@example.com", &rec(&both)).unwrap();
            let b = s.begin_fanout("sip:g@example.com", &rec(&both)).unwrap();
            let c = s.begin_fanout("sip:h@example.com", &rec(&both)).unwrap();
            s.update_fanout("sip:g@example.com", a, &rec(&both[1..])).unwrap();
            s.end_fanout("sip:h@example.com", c).unwrap();
            s.flush_blocking().unwrap();
            (a, b, c)
        };
        let s = crate::reopen(dir.path()).unwrap();
        let mut pending = s.pending_fanouts().unwrap();
        pending.sort();
        assert_eq!(
            pending,
            vec![
                ("sip:g@example.com".to_string(), a),
                ("sip:g@example.com".to_string(), b)
            ]
        );
        assert_eq!(s.fanout("sip:g@example.com", a).unwrap(), Some(rec(&both[1..])));
        assert_eq!(s.fanout("sip:g@example.com", b).unwrap(), Some(rec(&both)));
        assert_eq!(s.fanout("sip:h@example.com", c).unwrap(), None);
        // Ending twice, or an unknown fan-out: nothing happens.
        s.end_fanout("sip:h@example.com", c).unwrap();
        s.end_fanout("sip:h@example.com", 99).unwrap();
    }

    #[test]
    fn a_key_that_is_not_ours_does_not_keep_the_others_from_resuming() {
        let s = Store::temporary().unwrap();
        let a = s
            .begin_fanout("sip:g@example.com", &rec(&["sip:bob@example.com"]))
            .unwrap();
        s.group_fanout.insert(b"no separator", &b"x"[..]).unwrap();
        assert_eq!(s.pending_fanouts().unwrap(), vec![("sip:g@example.com".to_string(), a)]);
        assert_eq!(s.group_fanout.len(), 1, "the stray key is gone");
    }

    #[test]
    fn bad_addresses_are_refused() {
        let s = Store::temporary().unwrap();
        assert!(s.begin_fanout("", &rec(&["sip:bob@x"])).is_err());
        assert!(s.begin_fanout("sip:g@x", &rec(&["a\0b"])).is_err());
        assert!(s.fanout("sip:g\0@x", 1).is_err());
    }
}
