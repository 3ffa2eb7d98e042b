//! Helpers shared by the record modules: AOR validation and key layouts,
//! strict bincode coding, striped per-key locks, and the per-AOR sequence
//! keys used by the deferred queue and message storage.

use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Store, StoreError};

/// For mutexes guarding plain data updated in single steps: a poisoned one
/// is still consistent, so its guard is taken anyway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Key layouts use NUL as the AOR terminator, so an AOR containing one would
/// alias other AORs' keys; an empty AOR is never meaningful.
pub(crate) fn check_aor(aor: &str) -> Result<(), StoreError> {
    if aor.is_empty() || aor.contains('\0') {
        return Err(StoreError::InvalidAor(aor.to_owned()));
    }
    Ok(())
}

/// `aor 0x00`: the prefix of every key of `aor` in a per-AOR tree.
pub(crate) fn aor_prefix(aor: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(aor.len() + 1 + 8);
    k.extend_from_slice(aor.as_bytes());
    k.push(0);
    k
}

/// `aor 0x00 rest` back to the AOR and the rest; None when there is no NUL
/// or the AOR is not UTF-8 (not a key this crate wrote).
pub(crate) fn split_aor_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let nul = key.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&key[..nul]).ok()?, &key[nul + 1..]))
}

/// `aor 0x01`: sorts after every `aor 0x00 ...` key and before the next AOR.
fn aor_end(aor: &str) -> Vec<u8> {
    let mut k = aor_prefix(aor);
    *k.last_mut().expect("prefix ends in NUL") = 1;
    k
}

pub(crate) fn encode<T: Serialize>(rec: &T) -> Result<Vec<u8>, StoreError> {
    Ok(bincode::serde::encode_to_vec(rec, bincode::config::standard())?)
}

/// Strict decode: trailing bytes mean the value is not what we wrote.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, bincode::error::DecodeError> {
    let (rec, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after {what}",
            bytes.len() - used
        )));
    }
    Ok(rec)
}

const LOCK_STRIPES: usize = 64;

/// Striped in-process locks serialising the multi-step writes of one key.
///
/// Always leaf locks: held only around a module's own sled calls (`get`,
/// `insert`, `remove`, `compare_and_swap`, iteration, `generate_id`), with
/// no other lock of ours taken under them, and nothing sled's flush or IO
/// threads wait for needs them. So they cannot recreate the deadlock
/// described in the `bindings` module.
pub(crate) struct StripedLocks([Mutex<()>; LOCK_STRIPES]);

impl StripedLocks {
    pub(crate) fn new() -> StripedLocks {
        StripedLocks(std::array::from_fn(|_| Mutex::new(())))
    }

    pub(crate) fn lock<K: Hash>(&self, key: K) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        // The guarded data is `()`, so a panic elsewhere cannot leave it
        // inconsistent; the store's own invariants are crash-safe anyway.
        self.0[(h.finish() % LOCK_STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for StripedLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripedLocks").field("stripes", &LOCK_STRIPES).finish()
    }
}

/// Distinct AORs that have at least one key in the per-AOR `tree`, at most
/// `limit`, in byte order. Skips from one AOR to the next instead of visiting
/// each of its keys.
pub(crate) fn distinct_aors(tree: &sled::Tree, limit: usize, what: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    while out.len() < limit {
        let Some(item) = tree.range(from.as_slice()..).next() else {
            break;
        };
        let (k, _) = item?;
        let nul = k
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| StoreError::Corrupt(format!("{what} key {k:?} has no AOR terminator")))?;
        let aor = std::str::from_utf8(&k[..nul])
            .map_err(|e| StoreError::Corrupt(format!("{what} key AOR is not UTF-8: {e}")))?;
        out.push(aor.to_owned());
        from.clear();
        from.extend_from_slice(&k[..nul]);
        from.push(1);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Per-AOR sequence keys: `aor 0x00 seq (u64 BE)`. Big-endian makes byte order
// equal numeric order, so one AOR's entries iterate in sequence order.

pub(crate) fn seq_key(aor: &str, seq: u64) -> Vec<u8> {
    let mut k = aor_prefix(aor);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The entries of `aor` with a sequence number above `after` (all of them for
/// `None`), in sequence order.
pub(crate) fn seq_range(tree: &sled::Tree, aor: &str, after: Option<u64>) -> Option<sled::Iter> {
    let start = match after {
        None => aor_prefix(aor),
        Some(after) => seq_key(aor, after.checked_add(1)?),
    };
    Some(tree.range(start..aor_end(aor)))
}

/// Sequence number of a key of `aor`'s range; anything but exactly eight
/// bytes after the prefix is not a key this crate wrote.
pub(crate) fn key_seq(key: &[u8], aor: &str, what: &str) -> Result<u64, StoreError> {
    key.get(aor.len() + 1..)
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("{what} key {key:?} of AOR {aor:?} is not `AOR NUL seq`")))
}

/// Inserts `value` at `key` only if nothing is stored there: ids are unique,
/// so an existing value means the id generator misbehaved, and overwriting
/// would silently lose a message.
pub(crate) fn insert_new(tree: &sled::Tree, key: &[u8], value: Vec<u8>, what: &str) -> Result<(), StoreError> {
    // `compare_and_swap` only takes sled's concurrency-control read lock.
    match tree.compare_and_swap(key, None::<&[u8]>, Some(value))? {
        Ok(()) => Ok(()),
        Err(_) => Err(StoreError::Corrupt(format!(
            "{what} key {key:?} already taken; id generator reused an id"
        ))),
    }
}

impl Store {
    /// A fresh id for a new entry of `aor` in the per-AOR sequence `tree`.
    ///
    /// Ids come from sled's [`sled::Db::generate_id`]: a process-wide atomic
    /// counter that takes only sled's concurrency-control *read* lock (never
    /// the write lock that deadlocked the server). It is persisted every
    /// `idgen_persist_interval` ids and restarts at the persisted value plus
    /// twice that interval on recovery, so ids keep increasing across
    /// restarts and crashes. Ids are shared by all sequences, so they are
    /// unique store-wide.
    ///
    /// The caller must hold `aor`'s lock for `tree` until the entry is
    /// stored: then ids within one AOR are assigned and stored in the same
    /// order, and the check below (the new id must exceed the AOR's last
    /// one) can only fail if the generator went backwards (e.g. a store
    /// rebuilt by export/import). That is reported as corruption rather than
    /// silently breaking arrival order.
    pub(crate) fn next_seq(&self, tree: &sled::Tree, aor: &str, what: &str) -> Result<u64, StoreError> {
        let id = self.db.generate_id()?;
        if let Some(item) = tree.scan_prefix(aor_prefix(aor)).next_back() {
            let (k, _) = item?;
            let last = key_seq(&k, aor, what)?;
            if last >= id {
                return Err(StoreError::Corrupt(format!(
                    "id generator returned {id} but {what} {last} of {aor:?} already exists"
                )));
            }
        }
        Ok(id)
    }
}
