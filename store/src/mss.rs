//! Message Storage Server objects (OMA CPM 003 §5.2.1.2): messages stored on
//! a user's behalf, listable in storage order and fetchable by id.
//!
//! Layout: `mss`: `aor 0x00 id (u64 BE)` -> bincode [`StoredObject`], so one
//! user's objects iterate in id order, which is storage order.
//!
//! Each object is a single key, so there is no multi-key consistency to
//! keep. Only [`Store::mss_store`] takes a lock (a striped leaf mutex per
//! AOR, held from id assignment until the object is stored) so that one
//! user's objects are stored in id order and paging with `after` never skips
//! one that is stored late. No transactions, `apply_batch` or `checksum` are
//! used (see the `bindings` module).
//!
//! Durability: every method returns once its write is in sled's log; callers
//! await [`Store::flush`] before acknowledging.

use serde::{Deserialize, Serialize};

use crate::common::{aor_prefix, check_aor, decode, encode, insert_new, key_seq, seq_key, seq_range};
use crate::{Store, StoreError, MSS_TREE};

/// One object in a user's message storage, as persisted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StoredObject {
    /// Assigned by [`Store::mss_store`]; strictly increasing store-wide (also
    /// across restarts), so storage order is `id` order.
    pub id: u64,
    /// Unix seconds.
    pub stored_at: u64,
    /// `"pager"` for now; later `"chat"`, `"file"`, `"session"`, `"report"`.
    pub kind: String,
    pub from: String,
    pub to: String,
    pub content_type: String,
    pub conversation_id: Option<String>,
    pub contribution_id: Option<String>,
    /// The original message bytes.
    pub request: Vec<u8>,
}

/// An object to store: a [`StoredObject`] before it is assigned its `id`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewStoredObject {
    /// Unix seconds.
    pub stored_at: u64,
    pub kind: String,
    pub from: String,
    pub to: String,
    pub content_type: String,
    pub conversation_id: Option<String>,
    pub contribution_id: Option<String>,
    pub request: Vec<u8>,
}

const WHAT: &str = "stored object";

impl Store {
    /// Stores `obj` for `aor` and returns it with its assigned `id`. Not
    /// durable until a later [`Store::flush`] completes.
    pub fn mss_store(&self, aor: &str, obj: NewStoredObject) -> Result<StoredObject, StoreError> {
        check_aor(aor)?;
        let _serial = self.seq_locks.lock((MSS_TREE, aor));
        let id = self.next_seq(&self.mss, aor, WHAT)?;
        let NewStoredObject {
            stored_at,
            kind,
            from,
            to,
            content_type,
            conversation_id,
            contribution_id,
            request,
        } = obj;
        let obj = StoredObject {
            id,
            stored_at,
            kind,
            from,
            to,
            content_type,
            conversation_id,
            contribution_id,
            request,
        };
        insert_new(&self.mss, &seq_key(aor, id), encode(&obj)?, WHAT)?;
        Ok(obj)
    }

    /// Up to `limit` objects of `aor` with `id > after` (all for `None`), in
    /// storage order. Page by passing the last `id` seen.
    pub fn mss_list(&self, aor: &str, after: Option<u64>, limit: usize) -> Result<Vec<StoredObject>, StoreError> {
        check_aor(aor)?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let Some(iter) = seq_range(&self.mss, aor, after) else {
            return Ok(out);
        };
        for item in iter {
            let (k, v) = item?;
            let id = key_seq(&k, aor, WHAT)?;
            out.push(decode_object(aor, id, &v)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The object `id` of `aor`, if stored.
    pub fn mss_get(&self, aor: &str, id: u64) -> Result<Option<StoredObject>, StoreError> {
        check_aor(aor)?;
        match self.mss.get(seq_key(aor, id))? {
            Some(v) => Ok(Some(decode_object(aor, id, &v)?)),
            None => Ok(None),
        }
    }

    /// Deletes the object `id` of `aor`; returns whether it existed. Of
    /// several concurrent deleters exactly one gets `true` (sled's `remove`
    /// is atomic). Works on undecodable objects too.
    pub fn mss_delete(&self, aor: &str, id: u64) -> Result<bool, StoreError> {
        check_aor(aor)?;
        Ok(self.mss.remove(seq_key(aor, id))?.is_some())
    }

    /// Number of objects stored for `aor`; linear in that number.
    pub fn mss_count(&self, aor: &str) -> Result<usize, StoreError> {
        check_aor(aor)?;
        let mut n = 0;
        for item in self.mss.scan_prefix(aor_prefix(aor)) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

/// Decodes the object stored under `id` of `aor` and checks it is the one
/// that key names.
fn decode_object(aor: &str, id: u64, bytes: &[u8]) -> Result<StoredObject, StoreError> {
    let obj: StoredObject = decode(bytes, "stored object").inspect_err(|e| {
        tracing::warn!(aor, id, error = %e, "undecodable stored object");
    })?;
    if obj.id != id {
        return Err(StoreError::Corrupt(format!(
            "object stored under id {id} of AOR {aor:?} claims id {}",
            obj.id
        )));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "sip:bob@example.com";

    fn obj(n: u64) -> NewStoredObject {
        NewStoredObject {
            stored_at: 2_000 + n,
            kind: "pager".into(),
            from: "sip:alice@example.com".into(),
            to: BOB.into(),
            content_type: "text/plain".into(),
            conversation_id: n.is_multiple_of(2).then(|| format!("conv-{n}")),
            contribution_id: Some(format!("contrib-{n}")),
            request: format!("MESSAGE {BOB} SIP/2.0\r\n\r\nbody{n}").into_bytes(),
        }
    }

    #[test]
    fn roundtrip_list_get_delete() {
        let s = Store::temporary().unwrap();
        let stored: Vec<_> = (0..5).map(|n| s.mss_store(BOB, obj(n)).unwrap()).collect();
        s.mss_store("sip:carol@example.com", obj(9)).unwrap();
        assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
        let o = &stored[2];
        assert_eq!(o.stored_at, 2_002);
        assert_eq!(o.conversation_id.as_deref(), Some("conv-2"));
        assert_eq!(o.request, obj(2).request);

        assert_eq!(s.mss_list(BOB, None, 100).unwrap(), stored);
        assert_eq!(s.mss_list(BOB, None, 2).unwrap(), stored[..2]);
        assert_eq!(s.mss_list(BOB, Some(stored[1].id), 2).unwrap(), stored[2..4]);
        assert!(s.mss_list(BOB, Some(u64::MAX), 10).unwrap().is_empty());
        assert!(s.mss_list(BOB, None, 0).unwrap().is_empty());
        assert_eq!(s.mss_get(BOB, o.id).unwrap().as_ref(), Some(o));
        assert_eq!(s.mss_get("sip:carol@example.com", o.id).unwrap(), None);
        assert_eq!(s.mss_count(BOB).unwrap(), 5);
        assert_eq!(s.mss_count("sip:nobody@example.com").unwrap(), 0);

        assert!(s.mss_delete(BOB, o.id).unwrap());
        assert!(!s.mss_delete(BOB, o.id).unwrap());
        assert_eq!(s.mss_get(BOB, o.id).unwrap(), None);
        assert_eq!(s.mss_count(BOB).unwrap(), 4);
        assert_eq!(s.mss_count("sip:carol@example.com").unwrap(), 1);
        let ids: Vec<u64> = s.mss_list(BOB, None, 10).unwrap().iter().map(|o| o.id).collect();
        assert_eq!(ids, [0, 1, 3, 4].map(|i| stored[i].id));
    }

    #[test]
    fn survives_reopen_and_ids_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let first;
        {
            let s = Store::open(dir.path()).unwrap();
            first = s.mss_store(BOB, obj(0)).unwrap();
            crate::block_on(s.flush()).unwrap();
        }
        let s = crate::reopen(dir.path()).unwrap();
        assert_eq!(s.mss_list(BOB, None, 10).unwrap(), vec![first.clone()]);
        let second = s.mss_store(BOB, obj(1)).unwrap();
        assert!(second.id > first.id);
        assert_eq!(s.mss_list(BOB, None, 10).unwrap(), vec![first, second]);
    }

    #[test]
    fn corrupt_object_gives_decode_error_and_can_be_deleted() {
        let s = Store::temporary().unwrap();
        let o = s.mss_store(BOB, obj(0)).unwrap();
        s.mss.insert(seq_key(BOB, o.id), &b"\xff\x01"[..]).unwrap();
        assert!(matches!(s.mss_get(BOB, o.id), Err(StoreError::Decode(_))));
        assert!(matches!(s.mss_list(BOB, None, 10), Err(StoreError::Decode(_))));
        assert_eq!(s.mss_count(BOB).unwrap(), 1);
        assert!(s.mss_delete(BOB, o.id).unwrap());
        assert!(s.mss_list(BOB, None, 10).unwrap().is_empty());
    }

    #[test]
    fn nul_or_empty_aor_rejected() {
        let s = Store::temporary().unwrap();
        for bad in ["", "sip:a\0b@x"] {
            assert!(matches!(s.mss_store(bad, obj(0)), Err(StoreError::InvalidAor(_))));
            assert!(matches!(s.mss_list(bad, None, 1), Err(StoreError::InvalidAor(_))));
            assert!(matches!(s.mss_get(bad, 0), Err(StoreError::InvalidAor(_))));
            assert!(matches!(s.mss_delete(bad, 0), Err(StoreError::InvalidAor(_))));
            assert!(matches!(s.mss_count(bad), Err(StoreError::InvalidAor(_))));
        }
        assert!(s.mss.is_empty());
    }
}
