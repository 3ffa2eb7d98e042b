//! Upgrades of an older store's layout, run at open before any other tree
//! is touched.
//!
//! Format 1 → 2: [`DeferredRecord`] gained `target` at its end. Each record
//! is rewritten with `target: None`. The marker is moved to 2 only after
//! the rewritten records are flushed, so a crash midway leaves format 1 and
//! the next open resumes. Resuming is safe because the two encodings never
//! decode as each other under the strict [`decode`]: a format-2 record read
//! as format 1 has trailing bytes, a format-1 record read as format 2 ends
//! early.

use serde::{Deserialize, Serialize};

use crate::common::{decode, encode};
use crate::{DeferredRecord, StoreError, DEFERRED_TREE};

/// [`DeferredRecord`] as format 1 wrote it.
#[derive(Serialize, Deserialize)]
struct DeferredRecordV1 {
    seq: u64,
    received_at: u64,
    expires_at: u64,
    from: String,
    subject: Option<String>,
    content_type: String,
    size: u64,
    request: Vec<u8>,
}

/// Rewrites every format-1 deferred record as format 2; returns how many
/// it rewrote. The caller flushes and then moves the marker.
///
/// A record that neither format reads is left as it is, and logged: the
/// store's readers report it as undecodable and the expiry sweep reaps it,
/// as they did in format 1. One damaged record must not keep the whole
/// server from starting.
pub(crate) fn deferred_v1_to_v2(db: &sled::Db) -> Result<usize, StoreError> {
    let tree = db.open_tree(DEFERRED_TREE)?;
    let mut rewritten = 0;
    for entry in tree.iter() {
        let (key, value) = entry?;
        if decode::<DeferredRecord>(&value, "deferred message").is_ok() {
            continue; // rewritten by an earlier, interrupted open
        }
        let old: DeferredRecordV1 = match decode(&value, "format-1 deferred message") {
            Ok(old) => old,
            Err(e) => {
                tracing::warn!(key = ?key, error = %e, "unreadable deferred record left as it is by the upgrade");
                continue;
            }
        };
        let new = DeferredRecord {
            seq: old.seq,
            received_at: old.received_at,
            expires_at: old.expires_at,
            from: old.from,
            subject: old.subject,
            content_type: old.content_type,
            size: old.size,
            request: old.request,
            target: None,
        };
        tree.insert(key, encode(&new)?)?;
        rewritten += 1;
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::seq_key;
    use crate::{reopen, FORMAT_KEY, META_TREE};

    fn v1(seq: u64) -> DeferredRecordV1 {
        DeferredRecordV1 {
            seq,
            received_at: 10,
            expires_at: 4_000_000_000,
            from: "sip:alice@example.com".into(),
            subject: Some("hi".into()),
            content_type: "text/plain".into(),
            size: 2,
            request: b"MESSAGE sip:bob@example.com SIP/2.0\r\n\r\nhi".to_vec(),
        }
    }

    /// A store as format 1 left it: marker 1, `n` format-1 records of Bob,
    /// and (if `half_done`) the first already rewritten by an interrupted open.
    fn format_1_store(path: &std::path::Path, n: u64, half_done: bool) {
        let db = open_raw(path);
        db.open_tree(META_TREE)
            .unwrap()
            .insert(FORMAT_KEY, &1u32.to_be_bytes()[..])
            .unwrap();
        let tree = db.open_tree(DEFERRED_TREE).unwrap();
        for seq in 1..=n {
            tree.insert(seq_key("sip:bob@example.com", seq), encode(&v1(seq)).unwrap())
                .unwrap();
        }
        if half_done {
            deferred_v1_to_v2(&db).unwrap();
            tree.insert(seq_key("sip:bob@example.com", n + 1), encode(&v1(n + 1)).unwrap())
                .unwrap();
        }
        db.flush().unwrap();
    }

    /// The bare database, waited for as [`reopen`] waits.
    fn open_raw(path: &std::path::Path) -> sled::Db {
        crate::retry_while_locked(std::time::Duration::from_secs(5), || Ok(sled::open(path)?)).unwrap()
    }

    #[test]
    fn format_1_store_is_upgraded_and_keeps_its_messages() {
        for half_done in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            format_1_store(dir.path(), 3, half_done);
            let store = reopen(dir.path()).unwrap();
            let recs = store.deferred("sip:bob@example.com", None, 10).unwrap();
            let want = if half_done { 4 } else { 3 };
            assert_eq!(recs.len(), want, "half_done {half_done}");
            for (i, rec) in recs.iter().enumerate() {
                assert_eq!(rec.seq, i as u64 + 1);
                assert_eq!(rec.subject.as_deref(), Some("hi"));
                assert_eq!(rec.target, None);
            }
            let marker = store.db.open_tree(META_TREE).unwrap().get(FORMAT_KEY).unwrap();
            assert_eq!(marker.as_deref(), Some(&crate::FORMAT_VERSION.to_be_bytes()[..]));
            drop(store);
            // Reopening an upgraded store changes nothing.
            assert_eq!(
                reopen(dir.path())
                    .unwrap()
                    .deferred_usage("sip:bob@example.com")
                    .unwrap()
                    .count,
                want
            );
        }
    }

    /// A damaged record does not keep the store from opening: the upgrade
    /// goes on past it, and the store reports it as it always did.
    #[test]
    fn a_record_neither_format_reads_is_left_for_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        format_1_store(dir.path(), 1, false);
        {
            let db = open_raw(dir.path());
            db.open_tree(DEFERRED_TREE)
                .unwrap()
                .insert(seq_key("sip:bob@example.com", 9), &b"\xff\xff"[..])
                .unwrap();
            db.flush().unwrap();
        }
        let store = reopen(dir.path()).expect("the store opens");
        let marker = store.db.open_tree(META_TREE).unwrap().get(FORMAT_KEY).unwrap();
        assert_eq!(marker.as_deref(), Some(&crate::FORMAT_VERSION.to_be_bytes()[..]));
        assert_eq!(
            store.deferred_get("sip:bob@example.com", 1).unwrap().unwrap().target,
            None
        );
        assert!(matches!(
            store.deferred_get("sip:bob@example.com", 9),
            Err(StoreError::Decode(_))
        ));
    }
}
