//! Report aggregation of the group Controlling Function (RFC 5438 §7.2:
//! one report per kind to the sender of a group message), kept here so
//! that a restart, or the CF passivating, loses no member's answer:
//!
//! - `group_reports`: `group 0x00 message-id` -> bincode
//!   [`GroupReportRecord`].
//! - `group_report_due`: `at (u64 BE) group 0x00 message-id` -> empty: when
//!   the CF must look at a record again (its report deadline, then the end
//!   of its retention). The sweep reads this index instead of scanning.
//!
//! Only the group's CF (one actor) writes a group's records, so there is no
//! read-modify-write race. The index entries are written before the record:
//! a crash leaves at worst an entry without a record, which the sweep drops.
//! Durability is the caller's (flush before acknowledging).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::common::{aor_prefix, check_aor, decode, encode, split_aor_key};
use crate::{Store, StoreError};

/// What the CF knows about the reports on one group message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReportRecord {
    /// Who sent the message (the reports go there).
    pub sender: String,
    /// The members that got a copy (the sender excluded), and those that
    /// answered each way. Emptied once the deadline has passed (the CF then
    /// sends a kind at its first answer and checks members against the
    /// group), so that a record kept for a late display report is small.
    pub members: BTreeSet<String>,
    pub delivered: BTreeSet<String>,
    pub failed: BTreeSet<String>,
    pub displayed: BTreeSet<String>,
    /// How many members got a copy.
    pub member_count: usize,
    /// The sets above were emptied (the deadline has passed).
    pub compact: bool,
    /// The sender asked for delivery (positive or negative) / display reports.
    pub want_delivery: bool,
    pub want_display: bool,
    /// The sender's report of each kind went out (never twice).
    pub sent_delivery: bool,
    pub sent_display: bool,
    /// Unix seconds: a kind with any answer goes out then, even if some
    /// members have not answered.
    pub deadline_at: u64,
    /// Unix seconds: the record is forgotten then.
    pub expires_at: u64,
}

impl GroupReportRecord {
    /// A message from `sender` to `members` that asked for delivery and/or
    /// display reports, with nothing answered or sent yet.
    pub fn new(
        sender: String,
        members: BTreeSet<String>,
        want_delivery: bool,
        want_display: bool,
        deadline_at: u64,
        expires_at: u64,
    ) -> GroupReportRecord {
        GroupReportRecord {
            sender,
            member_count: members.len(),
            members,
            delivered: BTreeSet::new(),
            failed: BTreeSet::new(),
            displayed: BTreeSet::new(),
            compact: false,
            want_delivery,
            want_display,
            sent_delivery: false,
            sent_display: false,
            deadline_at,
            expires_at,
        }
    }
}

fn record_key(group: &str, msg_id: &str) -> Result<Vec<u8>, StoreError> {
    check_aor(group)?;
    if msg_id.is_empty() || msg_id.contains('\0') || msg_id.len() > 256 {
        return Err(StoreError::Corrupt(format!("invalid message id {msg_id:?}")));
    }
    let mut k = aor_prefix(group);
    k.extend_from_slice(msg_id.as_bytes());
    Ok(k)
}

fn due_key(at: u64, record_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + record_key.len());
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(record_key);
    k
}

/// `group 0x00 message-id` back to its parts.
fn split_record_key(k: &[u8]) -> Option<(String, String)> {
    let (group, id) = split_aor_key(k)?;
    Some((group.to_string(), std::str::from_utf8(id).ok()?.to_string()))
}

impl Store {
    /// Store (or replace) the record of `msg_id` sent to `group`, and index
    /// its deadline and end of retention where they are after `now` (the
    /// caller has dealt with what is due by now; indexing it again would
    /// bring the record up at every sweep).
    pub fn put_group_report(
        &self,
        group: &str,
        msg_id: &str,
        rec: &GroupReportRecord,
        now: u64,
    ) -> Result<(), StoreError> {
        let key = record_key(group, msg_id)?;
        let value = encode(rec)?;
        for at in [rec.deadline_at, rec.expires_at] {
            if at > now {
                self.group_report_due.insert(due_key(at, &key), &[][..])?;
            }
        }
        self.group_reports.insert(key, value)?;
        Ok(())
    }

    /// The record of `msg_id` sent to `group`, if it is still kept.
    pub fn group_report(&self, group: &str, msg_id: &str) -> Result<Option<GroupReportRecord>, StoreError> {
        let key = record_key(group, msg_id)?;
        match self.group_reports.get(key)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode(&v, "group report record")?)),
        }
    }

    /// Forget the record (its index entries go when they come due).
    pub fn remove_group_report(&self, group: &str, msg_id: &str) -> Result<(), StoreError> {
        self.group_reports.remove(record_key(group, msg_id)?)?;
        Ok(())
    }

    /// How many messages to `group` still have a record, counted up to `cap`.
    pub fn group_report_count(&self, group: &str, cap: usize) -> Result<usize, StoreError> {
        check_aor(group)?;
        let mut n = 0;
        for item in self.group_reports.scan_prefix(aor_prefix(group)).take(cap) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Records whose deadline or end of retention is at or before `now`
    /// (at most `limit`), as (group, message-id), each once. Their index
    /// entries are removed: the caller hands each to the group's CF, which
    /// stores the record again (re-indexed) if it still needs it. Entries
    /// whose record is gone are dropped.
    pub fn due_group_reports(&self, now: u64, limit: usize) -> Result<Vec<(String, String)>, StoreError> {
        let mut out: Vec<(String, String)> = Vec::new();
        // A record's deadline and retention may both be due: once each.
        let mut seen = std::collections::HashSet::new();
        let end = now.saturating_add(1).to_be_bytes();
        for item in self.group_report_due.range(..&end[..]) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item?;
            self.group_report_due.remove(&k)?;
            let Some(rk) = k.get(8..) else { continue };
            if !self.group_reports.contains_key(rk)? {
                continue;
            }
            match split_record_key(rk) {
                Some(pair) => {
                    if seen.insert(rk.to_vec()) {
                        out.push(pair);
                    }
                }
                // Not a key this crate wrote. Skipped, not an error: the
                // entries taken before it are removed already and must
                // still reach their CF.
                None => tracing::error!(key = ?rk, "unreadable group report key in the due index dropped"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(deadline_at: u64, expires_at: u64) -> GroupReportRecord {
        let members = ["sip:bob@example.com", "sip:carol@example.com"]
            .map(String::from)
            .into();
        GroupReportRecord::new(
            "sip:alice@example.com".into(),
            members,
            true,
            true,
            deadline_at,
            expires_at,
        )
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = record(130, 1_000);
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_group_report("sip:g@example.com", "m1", &rec, 100).unwrap();
            rec.delivered.insert("sip:bob@example.com".into());
            s.put_group_report("sip:g@example.com", "m1", &rec, 100).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = crate::reopen(dir.path()).unwrap();
        assert_eq!(s.group_report("sip:g@example.com", "m1").unwrap(), Some(rec));
        assert_eq!(s.group_report("sip:g@example.com", "m2").unwrap(), None);
        assert_eq!(s.group_report("sip:h@example.com", "m1").unwrap(), None);
        assert_eq!(s.group_report_count("sip:g@example.com", 100).unwrap(), 1);
    }

    #[test]
    fn due_records_come_up_once_at_their_deadline_and_their_end() {
        let s = Store::temporary().unwrap();
        s.put_group_report("sip:g@example.com", "m1", &record(130, 1_000), 100)
            .unwrap();
        s.put_group_report("sip:g@example.com", "m2", &record(200, 1_000), 100)
            .unwrap();
        s.put_group_report("sip:h@example.com", "m3", &record(130, 1_000), 100)
            .unwrap();
        assert!(s.due_group_reports(129, 10).unwrap().is_empty());
        let due = s.due_group_reports(130, 10).unwrap();
        assert_eq!(
            due,
            vec![
                ("sip:g@example.com".to_string(), "m1".to_string()),
                ("sip:h@example.com".to_string(), "m3".to_string())
            ]
        );
        assert!(s.due_group_reports(130, 10).unwrap().is_empty(), "taken once");
        // A removed record's entries are dropped, not returned.
        s.remove_group_report("sip:g@example.com", "m2").unwrap();
        assert!(s.due_group_reports(500, 10).unwrap().is_empty());
        // The end of retention comes up as well.
        assert_eq!(s.due_group_reports(1_000, 10).unwrap().len(), 2);
        assert_eq!(s.group_report_count("sip:g@example.com", 100).unwrap(), 1);
    }

    #[test]
    fn due_is_bounded_by_limit() {
        let s = Store::temporary().unwrap();
        for i in 0..5 {
            s.put_group_report("sip:g@example.com", &format!("m{i}"), &record(10, 20), 0)
                .unwrap();
        }
        assert_eq!(s.due_group_reports(10, 3).unwrap().len(), 3);
        assert_eq!(s.due_group_reports(10, 3).unwrap().len(), 2);
        assert_eq!(s.group_report_count("sip:g@example.com", 4).unwrap(), 4, "capped");
    }

    #[test]
    fn only_future_times_are_indexed() {
        let s = Store::temporary().unwrap();
        // Stored again after its deadline was dealt with: only the end of
        // retention comes up.
        s.put_group_report("sip:g@example.com", "m1", &record(130, 1_000), 130)
            .unwrap();
        assert!(s.due_group_reports(999, 10).unwrap().is_empty());
        assert_eq!(s.due_group_reports(1_000, 10).unwrap().len(), 1);
    }

    /// A key that is not ours in the due index is skipped: the records
    /// taken with it still come up (their entries are gone already).
    #[test]
    fn a_key_that_is_not_ours_does_not_hide_the_others() {
        let s = Store::temporary().unwrap();
        s.put_group_report("sip:g@example.com", "m1", &record(10, 1_000), 0)
            .unwrap();
        s.group_reports.insert(b"no-nul-here", &[][..]).unwrap();
        s.group_report_due.insert(due_key(5, b"no-nul-here"), &[][..]).unwrap();
        let due = s.due_group_reports(10, 10).unwrap();
        assert_eq!(due, [("sip:g@example.com".to_string(), "m1".to_string())]);
        assert!(s.due_group_reports(10, 10).unwrap().is_empty(), "both entries taken");
    }

    #[test]
    fn bad_keys_are_refused() {
        let s = Store::temporary().unwrap();
        assert!(s.put_group_report("", "m", &record(1, 2), 0).is_err());
        assert!(s.put_group_report("sip:g@x", "", &record(1, 2), 0).is_err());
        assert!(s.put_group_report("sip:g@x", "a\0b", &record(1, 2), 0).is_err());
        assert!(s.group_report("sip:g\0@x", "m").is_err());
    }
}
