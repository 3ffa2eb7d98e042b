//! Deferred messages (OMA CPM 001 §5.2.2.2, 003 §5.2.5): a durable FIFO per
//! user of pager-mode messages that could not be delivered, kept until the
//! user becomes reachable or the message expires.
//!
//! # Layout
//!
//! * `deferred`: `aor 0x00 seq (u64 BE)` -> bincode [`DeferredRecord`].
//!   Big-endian sequence numbers make one AOR's records iterate in `seq`
//!   order, which is arrival order (see [`Store::enqueue_deferred`]).
//! * `deferred_expiry`: `expires_at (u64 BE) seq (u64 BE) aor` -> empty, so
//!   the expiry sweep is a range scan from the start of the tree.
//!
//! # Consistency without transactions
//!
//! As in the `bindings` module (read its docs), record and index entry are
//! written without sled transactions, `apply_batch` or `checksum`, with
//! writes ordered so that every prefix of them is harmless:
//!
//! * invariant: every stored record has an index entry at its `expires_at`,
//!   so the sweep never loses a message;
//! * an index entry may be an orphan (its record was never stored, or has
//!   been removed) after a crash between two writes. [`Store::deferred_expired`]
//!   checks each due entry against its record and drops orphans.
//!
//! Hence [`Store::enqueue_deferred`] writes the index entry before the record,
//! and [`Store::remove_deferred`] removes the record before the index entry.
//! Records are never modified after they are stored, so only enqueue and
//! removal write them.
//!
//! Enqueues of one AOR are serialised by a striped leaf mutex held from id
//! assignment until the record is stored; that keeps stored order equal to
//! `seq` order and lets the sweep tell an orphan from an enqueue in progress
//! (it re-checks under the same mutex before dropping an entry). Removal
//! needs no mutex: the record is removed with a compare-and-swap, so exactly
//! one remover gets it, and it is the only writer of the index entry after
//! that.
//!
//! # Durability
//!
//! Every method returns once its writes are in sled's log, not on disk.
//! Callers await [`Store::flush`] before acknowledging a message as deferred
//! (and, if a redelivery must not be repeated after a crash, after removing
//! it).

use serde::{Deserialize, Serialize};

use crate::common::{aor_prefix, check_aor, decode, distinct_aors, encode, insert_new, key_seq, seq_key, seq_range};
use crate::{Store, StoreError, DEFERRED_TREE};

/// One deferred message of a user, as persisted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DeferredRecord {
    /// Assigned by [`Store::enqueue_deferred`]; strictly increasing
    /// store-wide (also across restarts), so arrival order is `seq` order.
    pub seq: u64,
    /// Unix seconds.
    pub received_at: u64,
    /// Unix seconds; the sweep reports the message from then on.
    pub expires_at: u64,
    /// Originator URI as received.
    pub from: String,
    pub subject: Option<String>,
    pub content_type: String,
    /// Body bytes.
    pub size: u64,
    /// The original SIP request, bytes as received.
    pub request: Vec<u8>,
    /// The one device (binding key) that may take it: a disposition
    /// notification waiting for the device that sent the original. `None`:
    /// any of the user's devices. Since store format 2.
    pub target: Option<String>,
}

/// What one user's deferred queue holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeferredUsage {
    pub count: usize,
    /// Sum of `request.len()`: the stored size of the original requests,
    /// which is what a per-user quota should limit.
    pub bytes: u64,
    /// Records with a [`DeferredRecord::target`].
    pub targeted: usize,
    /// Records that cannot be decoded (damaged on disk), not counted above:
    /// listings skip them and the expiry sweep reaps them.
    pub damaged: usize,
}

/// A message to defer: a [`DeferredRecord`] before it is assigned its `seq`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDeferred {
    /// Unix seconds.
    pub received_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    pub from: String,
    pub subject: Option<String>,
    pub content_type: String,
    /// Body bytes.
    pub size: u64,
    pub request: Vec<u8>,
    /// See [`DeferredRecord::target`].
    pub target: Option<String>,
}

const WHAT: &str = "deferred message";

impl Store {
    /// Appends `msg` to the deferred queue of `aor` and returns it with its
    /// assigned `seq`.
    ///
    /// Two single-key writes, index entry first, then the record, so a crash
    /// in between leaves only an orphan index entry. Not durable until a
    /// later [`Store::flush`] completes; await that before acknowledging.
    pub fn enqueue_deferred(&self, aor: &str, msg: NewDeferred) -> Result<DeferredRecord, StoreError> {
        check_aor(aor)?;
        let _serial = self.seq_locks.lock((DEFERRED_TREE, aor));
        let seq = self.next_seq(&self.deferred, aor, WHAT)?;
        let NewDeferred {
            received_at,
            expires_at,
            from,
            subject,
            content_type,
            size,
            request,
            target,
        } = msg;
        let rec = DeferredRecord {
            seq,
            received_at,
            expires_at,
            from,
            subject,
            content_type,
            size,
            request,
            target,
        };
        let value = encode(&rec)?;
        self.deferred_expiry.insert(expiry_key(expires_at, seq, aor), &[][..])?;
        insert_new(&self.deferred, &seq_key(aor, seq), value, WHAT)?;
        Ok(rec)
    }

    /// Up to `limit` deferred messages of `aor` with `seq > after` (all for
    /// `None`), in arrival order. Page by passing the last `seq` seen.
    ///
    /// Expired messages not yet swept are included; callers compare
    /// `expires_at` with their clock if that matters.
    ///
    /// A record that cannot be decoded is skipped and logged, not returned
    /// as the listing's error: one damaged record must not hold back its
    /// user's whole queue until it expires. It stays (it is reported by
    /// [`Store::deferred_expired`] when due, so the sweep reaps it), and
    /// [`Store::deferred_get`] still reports its error.
    pub fn deferred(&self, aor: &str, after: Option<u64>, limit: usize) -> Result<Vec<DeferredRecord>, StoreError> {
        check_aor(aor)?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let Some(iter) = seq_range(&self.deferred, aor, after) else {
            return Ok(out);
        };
        for item in iter {
            let (k, v) = item?;
            let seq = key_seq(&k, aor, WHAT)?;
            let Ok(rec) = decode_record(aor, seq, &v) else {
                continue; // logged by decode_record
            };
            out.push(rec);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The deferred message `seq` of `aor`, if still queued.
    pub fn deferred_get(&self, aor: &str, seq: u64) -> Result<Option<DeferredRecord>, StoreError> {
        check_aor(aor)?;
        match self.deferred.get(seq_key(aor, seq))? {
            Some(v) => Ok(Some(decode_record(aor, seq, &v)?)),
            None => Ok(None),
        }
    }

    /// Removes the deferred message `seq` of `aor` and returns it; `None` if
    /// it was not (or no longer) queued.
    ///
    /// The record is removed with a compare-and-swap against the bytes just
    /// read, so of several concurrent removers exactly one gets `Some`. Its
    /// index entry is removed afterwards; a crash in between leaves an orphan
    /// that [`Store::deferred_expired`] drops.
    ///
    /// A record that cannot be decoded is removed as well (it can never be
    /// delivered, and the sweep would otherwise report it forever); the
    /// decode error is returned after removing it, and its index entry is
    /// left for the sweep to drop as an orphan.
    pub fn remove_deferred(&self, aor: &str, seq: u64) -> Result<Option<DeferredRecord>, StoreError> {
        check_aor(aor)?;
        let key = seq_key(aor, seq);
        let old = loop {
            let Some(old) = self.deferred.get(&key)? else {
                return Ok(None);
            };
            // `compare_and_swap` only takes sled's concurrency-control read lock.
            if self.deferred.compare_and_swap(&key, Some(&old), None::<&[u8]>)?.is_ok() {
                break old;
            }
            // Changed since we read it: another remover won (the next `get`
            // sees nothing) or, impossibly for immutable records, it was
            // rewritten; look again.
        };
        let rec = decode_record(aor, seq, &old).inspect_err(|_| {
            tracing::warn!(
                aor,
                seq,
                "removed undecodable deferred message; its index entry is dropped lazily"
            );
        })?;
        self.deferred_expiry.remove(expiry_key(rec.expires_at, seq, aor))?;
        Ok(Some(rec))
    }

    /// How much the deferred queue of `aor` holds ([`DeferredUsage`]).
    ///
    /// Decodes every queued message, so the cost is linear in the queue
    /// length (which the caller's quota bounds). Undecodable records are
    /// counted apart, as [`DeferredUsage::damaged`].
    pub fn deferred_usage(&self, aor: &str) -> Result<DeferredUsage, StoreError> {
        check_aor(aor)?;
        let mut usage = DeferredUsage::default();
        for item in self.deferred.scan_prefix(aor_prefix(aor)) {
            let (k, v) = item?;
            let seq = key_seq(&k, aor, WHAT)?;
            let Ok(rec) = decode_record(aor, seq, &v) else {
                usage.damaged += 1;
                continue;
            };
            usage.count += 1;
            usage.bytes = usage.bytes.saturating_add(rec.request.len() as u64);
            usage.targeted += usize::from(rec.target.is_some());
        }
        Ok(usage)
    }

    /// Up to `limit` `(aor, seq)` of deferred messages whose `expires_at` is
    /// at or before `now`, soonest-expiring first (then in arrival order).
    ///
    /// Walks the expiry index from its start, so the cost is proportional to
    /// the number of due messages, not to all queued messages. Each entry is
    /// checked against its record; orphans (left by a crash between two
    /// writes) are dropped rather than reported. An undecodable record is
    /// reported, so the caller's [`Store::remove_deferred`] reaps it. The
    /// caller removes what it gets; entries stay reported until then.
    pub fn deferred_expired(&self, now: u64, limit: usize) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let iter = match now.checked_add(1) {
            Some(end) => self.deferred_expiry.range(..end.to_be_bytes()),
            None => self.deferred_expiry.iter(),
        };
        for item in iter {
            let (ikey, _) = item?;
            let Some((at, seq, aor)) = split_expiry_key(&ikey) else {
                // Never produced by enqueue_deferred; the index is derived
                // data, so dropping the entry loses nothing.
                tracing::warn!(entry = ?ikey, "dropping malformed deferred expiry index entry");
                self.deferred_expiry.remove(&ikey)?;
                continue;
            };
            if self.deferred_index_live(aor, seq, at)? {
                out.push((aor.to_owned(), seq));
                if out.len() >= limit {
                    break;
                }
            } else {
                // Re-check under the AOR's enqueue lock: the entry may belong
                // to an enqueue that has written it but not yet its record.
                // Once the lock is ours that enqueue has finished, and no
                // later one can reuse this `seq`.
                let _serial = self.seq_locks.lock((DEFERRED_TREE, aor));
                if !self.deferred_index_live(aor, seq, at)? {
                    self.deferred_expiry.remove(&ikey)?;
                }
            }
        }
        Ok(out)
    }

    /// The earliest `expires_at` in the expiry index, for a sweep timer to
    /// sleep until; `None` if no message is queued.
    ///
    /// May be the expiry of an orphan entry, which only wakes the sweeper
    /// early ([`Store::deferred_expired`] then drops it); never later than
    /// the earliest real expiry.
    pub fn next_deferred_expiry(&self) -> Result<Option<u64>, StoreError> {
        for item in self.deferred_expiry.iter() {
            let (ikey, _) = item?;
            match split_expiry_key(&ikey) {
                Some((at, _, _)) => return Ok(Some(at)),
                // Left for deferred_expired to drop; keep this read-only.
                None => tracing::warn!(entry = ?ikey, "skipping malformed deferred expiry index entry"),
            }
        }
        Ok(None)
    }

    /// Distinct AORs with at least one deferred message, at most `limit`, in
    /// byte order; e.g. to retry delivery at startup.
    pub fn aors_with_deferred(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        distinct_aors(&self.deferred, limit, WHAT)
    }

    /// Whether the index entry `(at, seq, aor)` belongs to a stored record.
    /// An undecodable record counts as live so that it gets reaped.
    fn deferred_index_live(&self, aor: &str, seq: u64, at: u64) -> Result<bool, StoreError> {
        Ok(match self.deferred.get(seq_key(aor, seq))? {
            None => false,
            Some(v) => match decode_record(aor, seq, &v) {
                Ok(rec) => rec.expires_at == at,
                Err(_) => true,
            },
        })
    }
}

/// Decodes the record stored under `seq` of `aor` and checks it is the one
/// that key names.
fn decode_record(aor: &str, seq: u64, bytes: &[u8]) -> Result<DeferredRecord, StoreError> {
    let rec: DeferredRecord = decode(bytes, "deferred record").inspect_err(|e| {
        tracing::error!(aor, seq, error = %e, "undecodable deferred message (skipped until its expiry reaps it)");
    })?;
    if rec.seq != seq {
        tracing::error!(
            aor,
            seq,
            claimed = rec.seq,
            "deferred message under the wrong seq (skipped until its expiry reaps it)"
        );
        return Err(StoreError::Corrupt(format!(
            "deferred message stored under seq {seq} of AOR {aor:?} claims seq {}",
            rec.seq
        )));
    }
    Ok(rec)
}

fn expiry_key(expires_at: u64, seq: u64, aor: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + aor.len());
    k.extend_from_slice(&expires_at.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(aor.as_bytes());
    k
}

/// Inverse of [`expiry_key`]; `None` if the entry is not in that layout.
fn split_expiry_key(raw: &[u8]) -> Option<(u64, u64, &str)> {
    let (at, rest) = raw.split_first_chunk::<8>()?;
    let (seq, aor) = rest.split_first_chunk::<8>()?;
    let aor = std::str::from_utf8(aor).ok()?;
    check_aor(aor).ok()?;
    Some((u64::from_be_bytes(*at), u64::from_be_bytes(*seq), aor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn msg(n: u64, expires_at: u64) -> NewDeferred {
        NewDeferred {
            received_at: 1_000 + n,
            expires_at,
            from: format!("sip:alice{n}@example.com"),
            subject: n.is_multiple_of(2).then(|| format!("subject {n}")),
            content_type: "text/plain".into(),
            size: 5,
            request: format!("MESSAGE sip:bob@example.com SIP/2.0\r\n\r\nhello{n}").into_bytes(),
            target: None,
        }
    }

    fn seqs(recs: &[DeferredRecord]) -> Vec<u64> {
        recs.iter().map(|r| r.seq).collect()
    }

    const BOB: &str = "sip:bob@example.com";

    #[test]
    fn fifo_order_and_fields() {
        let s = Store::temporary().unwrap();
        let mut recs = Vec::new();
        for n in 0..5 {
            recs.push(s.enqueue_deferred(BOB, msg(n, 500)).unwrap());
            s.enqueue_deferred("sip:carol@example.com", msg(n, 500)).unwrap();
        }
        assert!(recs.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(s.deferred(BOB, None, 100).unwrap(), recs);
        let r = &recs[2];
        assert_eq!(r.from, "sip:alice2@example.com");
        assert_eq!(r.subject.as_deref(), Some("subject 2"));
        assert_eq!(r.received_at, 1_002);
        assert_eq!(r.request, msg(2, 500).request);
        assert_eq!(s.deferred_get(BOB, r.seq).unwrap().as_ref(), Some(r));
        assert_eq!(s.deferred_get(BOB, u64::MAX).unwrap(), None);
        assert_eq!(s.deferred_get("sip:carol@example.com", r.seq).unwrap(), None);
        assert!(s.deferred("sip:nobody@example.com", None, 10).unwrap().is_empty());
    }

    #[test]
    fn after_paging() {
        let s = Store::temporary().unwrap();
        let all: Vec<_> = (0..7).map(|n| s.enqueue_deferred(BOB, msg(n, 500)).unwrap()).collect();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s.deferred(BOB, after, 3).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3);
            after = Some(page.last().unwrap().seq);
            seen.extend(page);
        }
        assert_eq!(seen, all);
        assert_eq!(seqs(&s.deferred(BOB, Some(all[4].seq), 10).unwrap()), seqs(&all[5..]));
        // `after` need not be a stored seq.
        assert_eq!(s.deferred(BOB, Some(all[4].seq - 1), 1).unwrap(), vec![all[4].clone()]);
        assert!(s.deferred(BOB, Some(u64::MAX), 10).unwrap().is_empty());
        assert!(s.deferred(BOB, None, 0).unwrap().is_empty());
    }

    #[test]
    fn fifo_survives_reopen_and_seq_keeps_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let mut before = Vec::new();
        {
            let s = Store::open(dir.path()).unwrap();
            for n in 0..3 {
                // One waits for a device: the target survives the reopen.
                let target = (n == 1).then(|| "<urn:uuid:phone>".to_string());
                before.push(s.enqueue_deferred(BOB, NewDeferred { target, ..msg(n, 500) }).unwrap());
            }
            assert_eq!(before[1].target.as_deref(), Some("<urn:uuid:phone>"));
            crate::block_on(s.flush()).unwrap();
        }
        for round in 0..2 {
            let s = crate::reopen(dir.path()).unwrap();
            let last = before.last().unwrap().seq;
            let rec = s.enqueue_deferred(BOB, msg(10 + round, 500)).unwrap();
            assert!(rec.seq > last, "seq {} not above {last} after reopen", rec.seq);
            before.push(rec);
            assert_eq!(s.deferred(BOB, None, 100).unwrap(), before);
            s.flush_blocking().unwrap();
        }
        let s = crate::reopen(dir.path()).unwrap();
        assert_eq!(s.deferred(BOB, None, 100).unwrap(), before);
        assert_eq!(s.deferred_expired(500, 100).unwrap().len(), before.len());
    }

    #[test]
    fn remove_twice_second_is_none() {
        let s = Store::temporary().unwrap();
        let a = s.enqueue_deferred(BOB, msg(0, 100)).unwrap();
        let b = s.enqueue_deferred(BOB, msg(1, 200)).unwrap();
        assert_eq!(s.remove_deferred(BOB, a.seq).unwrap(), Some(a.clone()));
        assert_eq!(s.remove_deferred(BOB, a.seq).unwrap(), None);
        assert_eq!(s.remove_deferred("sip:carol@example.com", b.seq).unwrap(), None);
        assert_eq!(s.deferred(BOB, None, 10).unwrap(), vec![b.clone()]);
        assert_eq!(s.deferred_expiry.len(), 1);
        assert_eq!(s.remove_deferred(BOB, b.seq).unwrap(), Some(b));
        assert!(s.deferred.is_empty());
        assert!(s.deferred_expiry.is_empty());
        assert_eq!(s.next_deferred_expiry().unwrap(), None);
    }

    #[test]
    fn usage_counts_request_bytes() {
        let s = Store::temporary().unwrap();
        let usage = |count, bytes, targeted| DeferredUsage {
            count,
            bytes,
            targeted,
            damaged: 0,
        };
        assert_eq!(s.deferred_usage(BOB).unwrap(), usage(0, 0, 0));
        let a = s.enqueue_deferred(BOB, msg(1, 100)).unwrap();
        let target = Some("<urn:uuid:phone>".to_string());
        let b = s.enqueue_deferred(BOB, NewDeferred { target, ..msg(22, 100) }).unwrap();
        s.enqueue_deferred("sip:carol@example.com", msg(3, 100)).unwrap();
        let total = (a.request.len() + b.request.len()) as u64;
        assert_eq!(s.deferred_usage(BOB).unwrap(), usage(2, total, 1));
        s.remove_deferred(BOB, a.seq).unwrap();
        assert_eq!(s.deferred_usage(BOB).unwrap(), usage(1, b.request.len() as u64, 1));
        s.remove_deferred(BOB, b.seq).unwrap();
        assert_eq!(s.deferred_usage(BOB).unwrap(), usage(0, 0, 0));
    }

    #[test]
    fn expired_via_index_and_next_expiry() {
        let s = Store::temporary().unwrap();
        assert_eq!(s.next_deferred_expiry().unwrap(), None);
        let c1 = s.enqueue_deferred("sip:c@x", msg(0, 30)).unwrap();
        let a1 = s.enqueue_deferred("sip:a@x", msg(1, 20)).unwrap();
        let b1 = s.enqueue_deferred("sip:b@x", msg(2, 10)).unwrap();
        let b2 = s.enqueue_deferred("sip:b@x", msg(3, 10)).unwrap();
        let a2 = s.enqueue_deferred("sip:a@x", msg(4, 40)).unwrap();
        let p = |a: &str, r: &DeferredRecord| (a.to_owned(), r.seq);
        assert_eq!(s.next_deferred_expiry().unwrap(), Some(10));
        assert_eq!(
            s.deferred_expired(30, 100).unwrap(),
            vec![
                p("sip:b@x", &b1),
                p("sip:b@x", &b2),
                p("sip:a@x", &a1),
                p("sip:c@x", &c1)
            ]
        );
        assert_eq!(s.deferred_expired(30, 1).unwrap(), vec![p("sip:b@x", &b1)]);
        assert!(s.deferred_expired(30, 0).unwrap().is_empty());
        assert!(s.deferred_expired(9, 100).unwrap().is_empty());
        assert_eq!(s.deferred_expired(u64::MAX, 100).unwrap().len(), 5);

        // The sweeper removes what it was given; the timer moves on.
        for (aor, seq) in s.deferred_expired(10, 100).unwrap() {
            assert!(s.remove_deferred(&aor, seq).unwrap().is_some());
        }
        assert_eq!(s.next_deferred_expiry().unwrap(), Some(20));
        assert_eq!(
            s.deferred_expired(40, 100).unwrap(),
            vec![p("sip:a@x", &a1), p("sip:c@x", &c1), p("sip:a@x", &a2)]
        );
        assert_eq!(s.aors_with_deferred(10).unwrap(), vec!["sip:a@x", "sip:c@x"]);
        assert_eq!(s.aors_with_deferred(1).unwrap(), vec!["sip:a@x"]);
        assert!(s.aors_with_deferred(0).unwrap().is_empty());
    }

    /// Crash between enqueue's two writes (index entry without record), or
    /// between removal's two writes (record gone, index entry left).
    #[test]
    fn orphan_index_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let real;
        {
            let s = Store::open(dir.path()).unwrap();
            real = s.enqueue_deferred(BOB, msg(0, 50)).unwrap();
            let gone = s.enqueue_deferred(BOB, msg(1, 10)).unwrap();
            s.deferred.remove(seq_key(BOB, gone.seq)).unwrap();
            s.deferred_expiry
                .insert(expiry_key(5, 999_999, "sip:ghost@x"), &[][..])
                .unwrap();
            // Too short for the layout; sorts before every real entry.
            s.deferred_expiry.insert(&[0u8][..], &[][..]).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = crate::reopen(dir.path()).unwrap();
        assert_eq!(s.deferred_expiry.len(), 4);
        // The orphans may wake the timer early, never late.
        assert_eq!(s.next_deferred_expiry().unwrap(), Some(5));
        assert!(s.deferred_expired(49, 10).unwrap().is_empty());
        assert_eq!(s.deferred_expiry.len(), 1, "all three orphans dropped");
        assert_eq!(s.next_deferred_expiry().unwrap(), Some(50));
        assert_eq!(s.deferred_expired(50, 10).unwrap(), vec![(BOB.to_owned(), real.seq)]);
        assert_eq!(s.deferred(BOB, None, 10).unwrap(), vec![real.clone()]);
        s.flush_blocking().unwrap();
        drop(s);
        let s = crate::reopen(dir.path()).unwrap();
        assert_eq!(s.deferred_expiry.len(), 1, "orphans stay gone after reopen");
        assert_eq!(s.remove_deferred(BOB, real.seq).unwrap(), Some(real));
        assert!(s.deferred_expiry.is_empty());
    }

    #[test]
    fn corrupt_record_is_skipped_in_listings_and_reaped() {
        let s = Store::temporary().unwrap();
        let first = s.enqueue_deferred(BOB, msg(2, 10)).unwrap();
        let bad = s.enqueue_deferred(BOB, msg(1, 10)).unwrap();
        let good = s.enqueue_deferred(BOB, msg(0, 10)).unwrap();
        s.deferred.insert(seq_key(BOB, bad.seq), &b"\xff\xff"[..]).unwrap();
        // The records around it are still listed, in order, and paging
        // past it works.
        assert_eq!(s.deferred(BOB, None, 10).unwrap(), vec![first.clone(), good.clone()]);
        assert_eq!(s.deferred(BOB, Some(first.seq), 1).unwrap(), vec![good.clone()]);
        assert!(matches!(s.deferred_get(BOB, bad.seq), Err(StoreError::Decode(_))));
        let usage = s.deferred_usage(BOB).unwrap();
        assert_eq!((usage.count, usage.damaged), (2, 1));
        assert_eq!(usage.bytes, (first.request.len() + good.request.len()) as u64);
        assert_eq!(s.remove_deferred(BOB, first.seq).unwrap(), Some(first));
        // Still reported so the sweeper can reap it.
        assert_eq!(s.deferred_expired(10, 10).unwrap().len(), 2);
        assert!(matches!(s.remove_deferred(BOB, bad.seq), Err(StoreError::Decode(_))));
        assert_eq!(s.remove_deferred(BOB, bad.seq).unwrap(), None);
        assert_eq!(s.deferred(BOB, None, 10).unwrap(), vec![good.clone()]);
        assert_eq!(s.deferred_usage(BOB).unwrap().damaged, 0);
        assert_eq!(s.deferred_expired(10, 10).unwrap(), vec![(BOB.to_owned(), good.seq)]);
        assert_eq!(s.deferred_expiry.len(), 1, "orphan of the reaped record dropped");

        // A record whose seq disagrees with its key.
        let mut other = good.clone();
        other.seq += 1_000;
        s.deferred
            .insert(seq_key(BOB, good.seq), encode(&other).unwrap())
            .unwrap();
        assert!(matches!(s.deferred_get(BOB, good.seq), Err(StoreError::Corrupt(_))));
        // Trailing bytes are not what we wrote.
        let mut trailing = encode(&good).unwrap();
        trailing.push(0);
        s.deferred.insert(seq_key(BOB, good.seq), trailing).unwrap();
        assert!(matches!(s.deferred_get(BOB, good.seq), Err(StoreError::Decode(_))));
    }

    #[test]
    fn id_generator_going_backwards_is_refused() {
        let s = Store::temporary().unwrap();
        s.enqueue_deferred(BOB, msg(0, 10)).unwrap();
        let future = s.db.generate_id().unwrap() + 1_000;
        let rec = DeferredRecord {
            seq: future,
            ..s.deferred(BOB, None, 1).unwrap().remove(0)
        };
        s.deferred.insert(seq_key(BOB, future), encode(&rec).unwrap()).unwrap();
        assert!(matches!(
            s.enqueue_deferred(BOB, msg(1, 10)),
            Err(StoreError::Corrupt(_))
        ));
        // Other AORs are unaffected.
        s.enqueue_deferred("sip:carol@example.com", msg(1, 10)).unwrap();
    }

    #[test]
    fn nul_or_empty_aor_rejected() {
        let s = Store::temporary().unwrap();
        for bad in ["", "sip:a\0b@x"] {
            assert!(matches!(
                s.enqueue_deferred(bad, msg(0, 1)),
                Err(StoreError::InvalidAor(_))
            ));
            assert!(matches!(s.deferred(bad, None, 1), Err(StoreError::InvalidAor(_))));
            assert!(matches!(s.deferred_get(bad, 0), Err(StoreError::InvalidAor(_))));
            assert!(matches!(s.remove_deferred(bad, 0), Err(StoreError::InvalidAor(_))));
            assert!(matches!(s.deferred_usage(bad), Err(StoreError::InvalidAor(_))));
        }
        assert!(s.deferred.is_empty());
        assert!(s.deferred_expiry.is_empty());
    }

    /// Several threads remove the same messages at once: each message is
    /// handed out exactly once, and no index entry is left behind.
    #[test]
    fn racing_removers_never_both_win() {
        const N: usize = 300;
        const THREADS: usize = 4;
        let s = Store::temporary().unwrap();
        let seqs: Arc<Vec<u64>> = Arc::new(
            (0..N as u64)
                .map(|n| s.enqueue_deferred(BOB, msg(n, 100)).unwrap().seq)
                .collect(),
        );
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (s, seqs, barrier) = (s.clone(), seqs.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut won = Vec::new();
                    for i in 0..N {
                        // Alternate directions so threads meet in the middle too.
                        let seq = if t % 2 == 0 { seqs[i] } else { seqs[N - 1 - i] };
                        if let Some(rec) = s.remove_deferred(BOB, seq).unwrap() {
                            assert_eq!(rec.seq, seq);
                            won.push(seq);
                        }
                    }
                    won
                })
            })
            .collect();
        let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        assert_eq!(all.len(), N, "every message removed exactly once");
        all.sort_unstable();
        assert_eq!(all, *seqs);
        assert!(s.deferred.is_empty());
        assert!(s.deferred_expiry.is_empty());
    }

    /// Enqueues, sweeps and removals from several threads with flushes in
    /// flight: nothing deadlocks, each AOR's queue stays in seq order, and
    /// no message loses its index entry.
    #[test]
    fn concurrent_enqueue_sweep_remove_and_flush() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let flushers: Vec<_> = (0..4)
            .map(|i| {
                let (s, done) = (s.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Acquire) {
                        if i % 2 == 0 {
                            crate::block_on(s.flush()).unwrap();
                        } else {
                            s.flush_blocking().unwrap();
                        }
                    }
                })
            })
            .collect();
        let sweeper = {
            let (s, done) = (s.clone(), done.clone());
            std::thread::spawn(move || {
                let mut swept = 0;
                while !done.load(Ordering::Acquire) {
                    for (aor, seq) in s.deferred_expired(99, 50).unwrap() {
                        if s.remove_deferred(&aor, seq).unwrap().is_some() {
                            swept += 1;
                        }
                    }
                }
                swept
            })
        };
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let aor = format!("sip:user{}@example.com", w % 2);
                    for n in 0..200u64 {
                        // Every third message is born expired.
                        let exp = if n % 3 == 0 { 50 } else { 1_000 };
                        s.enqueue_deferred(&aor, msg(n, exp)).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        let mut swept = sweeper.join().unwrap();
        for f in flushers {
            f.join().unwrap();
        }
        for (aor, seq) in s.deferred_expired(99, usize::MAX).unwrap() {
            s.remove_deferred(&aor, seq).unwrap().unwrap();
            swept += 1;
        }
        assert_eq!(swept, 4 * 67);
        let mut left = 0;
        for aor in s.aors_with_deferred(10).unwrap() {
            let recs = s.deferred(&aor, None, usize::MAX).unwrap();
            assert!(recs.windows(2).all(|w| w[0].seq < w[1].seq));
            assert!(recs.iter().all(|r| r.expires_at == 1_000));
            left += recs.len();
        }
        assert_eq!(left, 4 * 133);
        assert_eq!(s.deferred_expiry.len(), left, "every record indexed, no orphans");
        assert_eq!(s.next_deferred_expiry().unwrap(), Some(1_000));
    }
}
