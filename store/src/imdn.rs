//! Disposition-notification memory (003 §5.2.6), bounded in time:
//!
//! - `imdn_seen`: `aor 0x00 message-id 0x00 kind` -> expires_at (u64 BE).
//!   The terminating PF forwards the first report of each kind per message
//!   and suppresses the rest; this survives restarts so a restart does not
//!   forward twice.
//! - `imdn_origin`: `aor 0x00 message-id` -> bincode (device key, expires_at).
//!   Which of the sender's devices sent a message, so its reports go there
//!   (CPM 2.0).
//! - `imdn_expiry`: `expires_at (u64 BE) tag (1 byte) key` -> empty, the
//!   ordered index the sweep reads instead of scanning. Origin notes are
//!   written in batches (`origin`), with one entry per up to 1,024 notes
//!   `expires_at 'b' batch-id (u64 BE)` -> bincode list of record keys,
//!   where `expires_at` is the latest of them and the id comes from sled's
//!   id generator; older stores may still hold one `'o'` entry per note.
//!
//! Writes are single-key; the index entry is written first, so a crash
//! leaves at worst an index entry without its record (dropped by the sweep).
//! Durability is the caller's (flush before acknowledging).

use crate::common::{aor_prefix, check_aor, decode};
use crate::{Store, StoreError};

const TAG_SEEN: u8 = b's';
const TAG_ORIGIN: u8 = b'o';
const TAG_ORIGIN_BATCH: u8 = b'b';

fn seen_key(aor: &str, msg_id: &str, kind: &str) -> Vec<u8> {
    let mut k = aor_prefix(aor);
    k.extend_from_slice(msg_id.as_bytes());
    k.push(0);
    k.extend_from_slice(kind.as_bytes());
    k
}

fn origin_key(aor: &str, msg_id: &str) -> Vec<u8> {
    let mut k = aor_prefix(aor);
    k.extend_from_slice(msg_id.as_bytes());
    k
}

fn index_key(expires_at: u64, tag: u8, key: &[u8]) -> Vec<u8> {
    let mut k = expires_at.to_be_bytes().to_vec();
    k.push(tag);
    k.extend_from_slice(key);
    k
}

/// The expiry-index entry of a batch of origin notes (see `origin`).
pub(crate) fn batch_index_key(expires_at: u64, batch_id: u64) -> Vec<u8> {
    index_key(expires_at, TAG_ORIGIN_BATCH, &batch_id.to_be_bytes())
}

fn check_id(msg_id: &str) -> Result<(), StoreError> {
    if msg_id.is_empty() || msg_id.contains('\0') || msg_id.len() > 256 {
        return Err(StoreError::Corrupt(format!("invalid message id {msg_id:?}")));
    }
    Ok(())
}

impl Store {
    /// Claim the right to forward the `kind` report ("delivery", "display")
    /// of `msg_id`: true for the first claim within the retention time,
    /// false for every later one. Atomic (compare-and-swap), so two devices'
    /// reports racing each other cannot both win.
    pub fn claim_report(&self, aor: &str, msg_id: &str, kind: &str, now: u64, ttl: u64) -> Result<bool, StoreError> {
        check_aor(aor)?;
        check_id(msg_id)?;
        let key = seen_key(aor, msg_id, kind);
        let expires = now.saturating_add(ttl);
        self.imdn_expiry.insert(index_key(expires, TAG_SEEN, &key), &[][..])?;
        let mut current = self.imdn_seen.get(&key)?;
        loop {
            if let Some(old) = &current {
                let old_exp = u64::from_be_bytes(old.as_ref().try_into().unwrap_or([0; 8]));
                if old_exp > now {
                    return Ok(false);
                }
            }
            match self
                .imdn_seen
                .compare_and_swap(&key, current.clone(), Some(&expires.to_be_bytes()[..]))?
            {
                Ok(()) => return Ok(true),
                Err(e) => current = e.current,
            }
        }
    }

    /// Remember which device (binding key) of `aor` sent `msg_id`.
    pub fn put_origin(&self, aor: &str, msg_id: &str, device: &str, expires_at: u64) -> Result<(), StoreError> {
        check_aor(aor)?;
        check_id(msg_id)?;
        // Written behind (the `origin` module); readable at once.
        self.origins.shared().put(origin_key(aor, msg_id), device, expires_at);
        Ok(())
    }

    /// The device that sent `msg_id`, unless forgotten or expired.
    pub fn origin(&self, aor: &str, msg_id: &str, now: u64) -> Result<Option<String>, StoreError> {
        check_aor(aor)?;
        if check_id(msg_id).is_err() {
            return Ok(None);
        }
        let key = origin_key(aor, msg_id);
        let (device, expires_at) = match self.origins.shared().get(&key) {
            Some(queued) => queued,
            None => {
                let Some(v) = self.imdn_origin.get(&key)? else {
                    return Ok(None);
                };
                decode::<(String, u64)>(&v, "imdn origin")?
            }
        };
        Ok((expires_at > now).then_some(device))
    }

    /// Drop what has outlived its retention time, through the ordered index;
    /// returns how many records were looked at (an index entry of a batch
    /// of notes counts each of its records), at most about `limit`.
    pub fn sweep_imdn(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        // Notes still queued are swept with the rest.
        self.origins.shared().write_pending()?;
        let mut n = 0;
        for item in self.imdn_expiry.range(..index_key(now.saturating_add(1), 0, &[])) {
            if n >= limit {
                break;
            }
            let (ikey, ivalue) = item?;
            if ikey.len() < 9 {
                self.imdn_expiry.remove(&ikey)?;
                n += 1;
                continue;
            }
            let expires = u64::from_be_bytes(ikey[..8].try_into().unwrap_or([0; 8]));
            let (tag, key) = (ikey[8], &ikey[9..]);
            if tag == TAG_ORIGIN_BATCH {
                match decode::<Vec<Vec<u8>>>(&ivalue, "imdn origin batch") {
                    Ok(keys) => {
                        for key in &keys {
                            self.expire_record(TAG_ORIGIN, key, expires)?;
                        }
                        n += keys.len().max(1);
                    }
                    Err(e) => {
                        // Its records then stay until noted again; say so.
                        tracing::warn!(error = %e, "unreadable origin batch in the IMDN index, dropped");
                        n += 1;
                    }
                }
            } else {
                self.expire_record(tag, key, expires)?;
                n += 1;
            }
            self.imdn_expiry.remove(&ikey)?;
        }
        Ok(n)
    }

    /// Remove the `tag` record at `key` if it expires by `expires` (a later
    /// claim or note may have extended it: then a later entry indexes it).
    fn expire_record(&self, tag: u8, key: &[u8], expires: u64) -> Result<(), StoreError> {
        let tree = if tag == TAG_SEEN {
            &self.imdn_seen
        } else {
            &self.imdn_origin
        };
        if let Some(v) = tree.get(key)? {
            let rec_exp = if tag == TAG_SEEN {
                v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0)
            } else {
                decode::<(String, u64)>(&v, "imdn origin").map(|(_, e)| e).unwrap_or(0)
            };
            if rec_exp <= expires {
                let _ = tree.compare_and_swap(key, Some(v), None::<&[u8]>)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "sip:alice@example.com";

    #[test]
    fn first_claim_wins_until_it_expires() {
        let s = Store::temporary().unwrap();
        assert!(s.claim_report(ALICE, "m1", "delivery", 100, 50).unwrap());
        assert!(!s.claim_report(ALICE, "m1", "delivery", 120, 50).unwrap());
        assert!(s.claim_report(ALICE, "m1", "display", 120, 50).unwrap(), "another kind");
        assert!(
            s.claim_report(ALICE, "m2", "delivery", 120, 50).unwrap(),
            "another message"
        );
        assert!(
            s.claim_report(ALICE, "m1", "delivery", 151, 50).unwrap(),
            "retention over"
        );
    }

    #[test]
    fn racing_claims_have_one_winner() {
        let s = Store::temporary().unwrap();
        let wins: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    sc.spawn(|| {
                        (0..200)
                            .filter(|i| s.claim_report(ALICE, &format!("m{i}"), "delivery", 10, 100).unwrap())
                            .count()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(wins, 200);
    }

    #[test]
    fn origin_and_sweep() {
        let s = Store::temporary().unwrap();
        s.put_origin(ALICE, "m1", "<urn:uuid:phone>", 200).unwrap();
        assert_eq!(s.origin(ALICE, "m1", 100).unwrap().as_deref(), Some("<urn:uuid:phone>"));
        assert_eq!(s.origin(ALICE, "m1", 200).unwrap(), None, "expired");
        s.claim_report(ALICE, "m1", "delivery", 0, 150).unwrap();
        assert_eq!(s.sweep_imdn(160, 100).unwrap(), 1);
        assert!(s.claim_report(ALICE, "m1", "delivery", 160, 150).unwrap(), "swept");
        assert_eq!(s.sweep_imdn(1_000, 100).unwrap(), 2);
        assert_eq!(s.origin(ALICE, "m1", 0).unwrap(), None);
        assert!(s.claim_report(ALICE, "", "delivery", 0, 1).is_err());
    }

    /// Alice's phone sent `m0..m{n}`, noted until `expires_at`; the notes
    /// are then written as one batch. The writer thread is held off while
    /// they are noted: it wakes 10 ms after the first note and, on a slow
    /// machine, would otherwise write part of them as a batch of its own.
    fn note_and_write(s: &Store, n: usize, expires_at: u64) {
        {
            let _held = s.origins.shared().hold_writes();
            for i in 0..n {
                s.put_origin(ALICE, &format!("m{i}"), "<urn:uuid:phone>", expires_at)
                    .unwrap();
            }
        }
        s.origins.shared().write_pending().unwrap();
    }

    /// One index entry per written batch of notes; a note taken again
    /// with a later expiry outlives the older batch's entry; entries of
    /// the older one-per-note format are still swept.
    #[test]
    fn origin_batches_share_one_index_entry() {
        let s = Store::temporary().unwrap();
        note_and_write(&s, 50, 200);
        assert_eq!(s.imdn_expiry.len(), 1, "one entry for the batch");
        s.put_origin(ALICE, "m7", "<urn:uuid:tablet>", 400).unwrap();
        s.origins.shared().write_pending().unwrap();
        assert_eq!(s.imdn_expiry.len(), 2);
        // An entry as older stores wrote them.
        let old = origin_key(ALICE, "legacy");
        s.imdn_origin
            .insert(&old, crate::common::encode(&("<urn:uuid:watch>", 150u64)).unwrap())
            .unwrap();
        s.imdn_expiry.insert(index_key(150, TAG_ORIGIN, &old), &[][..]).unwrap();
        assert_eq!(
            s.origin(ALICE, "legacy", 100).unwrap().as_deref(),
            Some("<urn:uuid:watch>")
        );

        assert_eq!(s.sweep_imdn(300, 10_000).unwrap(), 51, "legacy entry + 50 records");
        assert_eq!(s.imdn_origin.len(), 1, "only the re-noted m7 is left");
        assert_eq!(
            s.origin(ALICE, "m7", 300).unwrap().as_deref(),
            Some("<urn:uuid:tablet>")
        );
        assert_eq!(s.sweep_imdn(500, 10_000).unwrap(), 1);
        assert!(s.imdn_origin.is_empty() && s.imdn_expiry.is_empty());
    }

    /// A large batch gets one index entry per chunk of notes, so no entry
    /// grows with the queue; the sweep still expires every record.
    #[test]
    fn large_origin_batches_are_indexed_in_chunks() {
        let s = Store::temporary().unwrap();
        note_and_write(&s, 2500, 200);
        assert_eq!(s.imdn_origin.len(), 2500);
        assert_eq!(s.imdn_expiry.len(), 3, "1024 + 1024 + 452");
        assert_eq!(s.sweep_imdn(300, 100_000).unwrap(), 2500);
        assert!(s.imdn_origin.is_empty() && s.imdn_expiry.is_empty());
    }

    #[test]
    fn claims_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert!(s.claim_report(ALICE, "m1", "display", 10, 100).unwrap());
            s.flush_blocking().unwrap();
        }
        let s = crate::reopen(dir.path()).unwrap();
        assert!(!s.claim_report(ALICE, "m1", "display", 20, 100).unwrap());
    }

    /// Notes are written behind: readable at once, in sled soon after, in
    /// sled before any flush returns, and on disk after the last handle
    /// closes even when nobody flushed.
    #[test]
    fn origin_notes_written_behind() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_origin(ALICE, "m1", "<urn:uuid:phone>", 200).unwrap();
            assert_eq!(s.origin(ALICE, "m1", 100).unwrap().as_deref(), Some("<urn:uuid:phone>"));
            // A flush returns only after the queued note is in the tree.
            s.put_origin(ALICE, "m2", "<urn:uuid:tablet>", 200).unwrap();
            futures::executor::block_on(s.flush()).unwrap();
            assert!(s.imdn_origin.get(origin_key(ALICE, "m2")).unwrap().is_some());
            // The writer thread gets there without a flush.
            s.put_origin(ALICE, "m3", "<urn:uuid:phone>", 200).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while s.imdn_origin.get(origin_key(ALICE, "m3")).unwrap().is_none() {
                assert!(std::time::Instant::now() < deadline, "note never written");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            s.put_origin(ALICE, "m4", "<urn:uuid:watch>", 200).unwrap();
        }
        let s = crate::reopen(dir.path()).unwrap();
        for (id, dev) in [("m1", "phone"), ("m2", "tablet"), ("m3", "phone"), ("m4", "watch")] {
            let want = format!("<urn:uuid:{dev}>");
            assert_eq!(
                s.origin(ALICE, id, 100).unwrap().as_deref(),
                Some(want.as_str()),
                "{id}"
            );
        }
        // Swept with their index entries, queued or not.
        s.put_origin(ALICE, "m5", "<urn:uuid:phone>", 300).unwrap();
        assert_eq!(s.sweep_imdn(1_000, 100).unwrap(), 5);
        assert_eq!(s.origin(ALICE, "m5", 0).unwrap(), None);
    }
}
