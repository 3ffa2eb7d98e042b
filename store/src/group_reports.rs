//! Report aggregation of the group Controlling Function (RFC 5438 §7.2:
//! one report per kind to the sender of a group message), kept here so
//! that a restart, or the CF passivating, loses no member's answer:
//!
//! - `group_reports`: `group 0x00 message-id` -> bincode
//!   [`GroupReportRecord`].
//! - `group_report_due`: `at (u64 BE) group 0x00 message-id` -> empty: when
//!   the CF must look at a record again (its report deadline, then the end
//!   of its retention), and `at group 0x00 message-id 0x00` -> empty: the
//!   lease of a record handed to its CF. The sweep reads this index instead
//!   of scanning.
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
    let mut k = Vec::with_capacity(9 + record_key.len());
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(record_key);
    k
}

/// A lease's entry: the due key with a trailing NUL, which no record key
/// has (a message id is not empty and holds no NUL), so a lease never
/// shares its key with the record's own deadline or end of retention.
fn lease_key(at: u64, record_key: &[u8]) -> Vec<u8> {
    let mut k = due_key(at, record_key);
    k.push(0);
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
    /// (at most `limit`), each once, with a lease: its due entry moves to
    /// `now + GROUP_REPORT_LEASE_S`, so the record comes up again then
    /// unless its CF, having dealt with it, ends the lease
    /// ([`Store::end_group_report_lease`]). A crash, or a CF that never got
    /// the record, therefore delays a deadline instead of losing it (the
    /// CF's handling is idempotent). Entries whose record is gone are
    /// dropped.
    pub fn due_group_reports(&self, now: u64, limit: usize) -> Result<Vec<DueGroupReport>, StoreError> {
        let mut out = Vec::new();
        // A record's deadline and retention may both be due: once each.
        let mut seen = std::collections::HashSet::new();
        let end = now.saturating_add(1).to_be_bytes();
        let lease = now.saturating_add(GROUP_REPORT_LEASE_S);
        for item in self.group_report_due.range(..&end[..]) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item?;
            let Some(rk) = k.get(8..) else {
                self.group_report_due.remove(&k)?;
                continue;
            };
            let rk = rk.strip_suffix(&[0]).unwrap_or(rk); // a lease's entry
            if !self.group_reports.contains_key(rk)? {
                self.group_report_due.remove(&k)?;
                continue;
            }
            let Some((group, id)) = split_record_key(rk) else {
                // Not a key this crate wrote: skipped, not an error, so
                // the records after it still come up.
                tracing::error!(key = ?rk, "unreadable group report key in the due index dropped");
                self.group_report_due.remove(&k)?;
                continue;
            };
            // The lease entry first: every prefix of these writes leaves
            // the record due at some time.
            if seen.insert(rk.to_vec()) {
                self.group_report_due.insert(lease_key(lease, rk), &[][..])?;
                out.push(DueGroupReport { group, id, lease });
            }
            self.group_report_due.remove(&k)?;
        }
        Ok(out)
    }

    /// The CF has dealt with a record [`Store::due_group_reports`] handed
    /// out with `lease`: it need not come up again then. The record's own
    /// deadline and end of retention are other entries (`lease_key`).
    pub fn end_group_report_lease(&self, group: &str, msg_id: &str, lease: u64) -> Result<(), StoreError> {
        self.group_report_due
            .remove(lease_key(lease, &record_key(group, msg_id)?))?;
        Ok(())
    }
}

/// Seconds after which a due group report record handed to its CF comes up
/// again if the CF did not end its lease.
pub const GROUP_REPORT_LEASE_S: u64 = 30;

/// A group report record whose time has come ([`Store::due_group_reports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueGroupReport {
    pub group: String,
    pub id: String,
    /// When it comes up again unless [`Store::end_group_report_lease`].
    pub lease: u64,
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

    /// (group, id) of each due record, its lease ended as its CF would.
    fn take_due(s: &Store, now: u64, limit: usize) -> Vec<(String, String)> {
        let due = s.due_group_reports(now, limit).unwrap();
        for d in &due {
            assert_eq!(d.lease, now + GROUP_REPORT_LEASE_S);
            s.end_group_report_lease(&d.group, &d.id, d.lease).unwrap();
        }
        due.into_iter().map(|d| (d.group, d.id)).collect()
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
        assert!(take_due(&s, 129, 10).is_empty());
        let due = take_due(&s, 130, 10);
        assert_eq!(
            due,
            vec![
                ("sip:g@example.com".to_string(), "m1".to_string()),
                ("sip:h@example.com".to_string(), "m3".to_string())
            ]
        );
        assert!(take_due(&s, 130, 10).is_empty(), "taken once");
        // A removed record's entries are dropped, not returned.
        s.remove_group_report("sip:g@example.com", "m2").unwrap();
        assert!(take_due(&s, 500, 10).is_empty());
        // The end of retention comes up as well.
        assert_eq!(take_due(&s, 1_000, 10).len(), 2);
        assert_eq!(s.group_report_count("sip:g@example.com", 100).unwrap(), 1);
    }

    /// Handed out and never dealt with (a crash, a CF that did not get it):
    /// the record comes up again when its lease ends, and once dealt with,
    /// not again.
    #[test]
    fn a_due_record_whose_lease_was_not_ended_comes_up_again() {
        let s = Store::temporary().unwrap();
        s.put_group_report("sip:g@example.com", "m1", &record(130, 1_000), 100)
            .unwrap();
        let first = s.due_group_reports(130, 10).unwrap();
        assert_eq!(first.len(), 1);
        let lease = first[0].lease;
        assert!(
            s.due_group_reports(lease - 1, 10).unwrap().is_empty(),
            "not before the lease ends"
        );
        let again = s.due_group_reports(lease, 10).unwrap();
        assert_eq!(
            (again[0].group.as_str(), again[0].id.as_str()),
            ("sip:g@example.com", "m1")
        );
        s.end_group_report_lease("sip:g@example.com", "m1", again[0].lease)
            .unwrap();
        assert!(s.due_group_reports(999, 10).unwrap().is_empty());
        assert_eq!(
            take_due(&s, 1_000, 10).len(),
            1,
            "its end of retention is still indexed"
        );
    }

    /// A lease that falls on the record's own end of retention does not
    /// take that entry with it.
    #[test]
    fn ending_a_lease_keeps_an_entry_that_is_also_the_records_own() {
        let s = Store::temporary().unwrap();
        let expires = 130 + GROUP_REPORT_LEASE_S;
        s.put_group_report("sip:g@example.com", "m1", &record(130, expires), 100)
            .unwrap();
        assert_eq!(take_due(&s, 130, 10).len(), 1);
        assert_eq!(
            take_due(&s, expires, 10).len(),
            1,
            "the end of retention still comes up"
        );
    }

    #[test]
    fn due_is_bounded_by_limit() {
        let s = Store::temporary().unwrap();
        for i in 0..5 {
            s.put_group_report("sip:g@example.com", &format!("m{i}"), &record(10, 20), 0)
                .unwrap();
        }
        assert_eq!(take_due(&s, 10, 3).len(), 3);
        assert_eq!(take_due(&s, 10, 3).len(), 2);
        assert_eq!(s.group_report_count("sip:g@example.com", 4).unwrap(), 4, "capped");
    }

    #[test]
    fn only_future_times_are_indexed() {
        let s = Store::temporary().unwrap();
        // Stored again after its deadline was dealt with: only the end of
        // retention comes up.
        s.put_group_report("sip:g@example.com", "m1", &record(130, 1_000), 130)
            .unwrap();
        assert!(take_due(&s, 999, 10).is_empty());
        assert_eq!(take_due(&s, 1_000, 10).len(), 1);
    }

    /// A key that is not ours in the due index is dropped and skipped: the
    /// records after it still come up.
    #[test]
    fn a_key_that_is_not_ours_does_not_hide_the_others() {
        let s = Store::temporary().unwrap();
        s.put_group_report("sip:g@example.com", "m1", &record(10, 1_000), 0)
            .unwrap();
        s.group_reports.insert(b"no-nul-here", &[][..]).unwrap();
        s.group_report_due.insert(due_key(5, b"no-nul-here"), &[][..]).unwrap();
        let due = take_due(&s, 10, 10);
        assert_eq!(due, [("sip:g@example.com".to_string(), "m1".to_string())]);
        assert!(take_due(&s, 10, 10).is_empty(), "both entries taken");
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
