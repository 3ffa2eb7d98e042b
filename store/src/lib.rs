//! Durable CPM server state kept in sled.
//!
//! One database holds, in separate trees, registrar bindings (`bindings`),
//! per-user deferred-message queues (`deferred`), Message Storage Server
//! objects (`mss`), runtime user preferences such as do-not-disturb
//! (`prefs`), digest credentials (`credentials`), the admin API's
//! run-time provisioning (`provisioning`) and the group Controlling
//! Functions' fan-out journal and report aggregation (`group_fanout`,
//! `group_reports`), so that one flush
//! covers all of them.
//!
//! No write here is durable when it returns: it is in sled's log buffer and
//! visible to readers, but survives a crash only once a later
//! [`Store::flush`] has completed. Making state durable is the caller's job:
//! await `flush()` before sending anything (a 200 OK, a 202 Accepted for a
//! deferred message) that promises the state survives.
//!
//! Multi-key updates are never done with sled transactions, `apply_batch` or
//! `checksum`: in sled 0.34 those take a global lock that, under concurrent
//! writes and flushes, deadlocked the server (see the `bindings` module).
//! Consistency comes from write ordering plus checking on read instead.
//! Likewise sled's `flush_async` is never used (see the `flush` module).

mod bindings;
mod common;
mod credentials;
mod deferred;
mod error;
mod flush;
mod group_fanout;
mod group_reports;
mod imdn;
mod migrate;
mod mss;
mod origin;
mod prefs;
mod provisioning;

use std::path::Path;
use std::sync::Arc;

pub use bindings::BindingRecord;
pub use credentials::CredentialRecord;
pub use deferred::{DeferredRecord, DeferredUsage, NewDeferred};
pub use error::StoreError;
pub use flush::{StoreHealth, FLUSH_BUCKETS};
pub use group_fanout::FanOutRecord;
pub use group_reports::{DueGroupReport, GroupReportRecord, GROUP_REPORT_LEASE_S};
pub use mss::{NewStoredObject, StoredObject};
pub use provisioning::ProvisionKind;

/// On-disk layout version written to the `meta` tree. Bump it whenever a tree's
/// key or value layout changes so that older builds refuse the newer store
/// instead of misreading it. Adding a tree is not such a change: older builds
/// never open it, so they cannot misread it. An older format this build can
/// upgrade is upgraded at open (the `migrate` module).
///
/// * 1: the first.
/// * 2: [`DeferredRecord::target`].
pub const FORMAT_VERSION: u32 = 2;

const META_TREE: &str = "meta";
const FORMAT_KEY: &[u8] = b"format";
/// `meta` keys of the server secrets ([`Store::secret`]).
const SECRET_PREFIX: &[u8] = b"secret/";
const BINDINGS_TREE: &str = "bindings";
const BINDING_EXPIRY_TREE: &str = "binding_expiry";
const DEFERRED_TREE: &str = "deferred";
const DEFERRED_EXPIRY_TREE: &str = "deferred_expiry";
const MSS_TREE: &str = "mss";
const PREFS_TREE: &str = "prefs";
const IMDN_SEEN_TREE: &str = "imdn_seen";
const IMDN_ORIGIN_TREE: &str = "imdn_origin";
const IMDN_EXPIRY_TREE: &str = "imdn_expiry";
const CREDENTIALS_TREE: &str = "credentials";
const PROVISIONING_TREE: &str = "provisioning";
const GROUP_FANOUT_TREE: &str = "group_fanout";
const GROUP_REPORTS_TREE: &str = "group_reports";
const GROUP_REPORT_DUE_TREE: &str = "group_report_due";

/// Handle to the durable state. Cloning is cheap (sled handles are `Arc`s), so
/// every actor can own one.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    /// `aor 0x00 binding-key` -> bincode [`BindingRecord`].
    bindings: sled::Tree,
    /// `expires_at (u64 BE) aor 0x00 binding-key` -> empty. Big-endian makes
    /// byte order equal time order, so the expiry sweep is a prefix range scan.
    binding_expiry: sled::Tree,
    /// Serialises the multi-step writes of one binding within this process.
    binding_locks: Arc<common::StripedLocks>,
    /// `aor 0x00 seq (u64 BE)` -> bincode [`DeferredRecord`].
    deferred: sled::Tree,
    /// `expires_at (u64 BE) seq (u64 BE) aor` -> empty; ordered by expiry,
    /// then arrival.
    deferred_expiry: sled::Tree,
    /// `aor 0x00 id (u64 BE)` -> bincode [`StoredObject`].
    mss: sled::Tree,
    /// `aor 0x00 name` -> bincode value of that preference.
    prefs: sled::Tree,
    /// Disposition-notification memory (see the `imdn` module).
    imdn_seen: sled::Tree,
    imdn_origin: sled::Tree,
    imdn_expiry: sled::Tree,
    /// Sending-device notes not yet in `imdn_origin` (write-behind; the
    /// `origin` module). Dropped before the flusher.
    origins: Arc<origin::OriginWriter>,
    /// `aor` -> bincode [`CredentialRecord`] (digest hashes, never passwords).
    credentials: sled::Tree,
    /// `kind name` -> the admin API's record of a run-time change (see the
    /// `provisioning` module).
    provisioning: sled::Tree,
    /// The CFs' fan-out journal (see the `group_fanout` module).
    group_fanout: sled::Tree,
    /// The CFs' report aggregation (see the `group_reports` module).
    group_reports: sled::Tree,
    group_report_due: sled::Tree,
    /// Serialises, per (tree, AOR), id assignment with the writes that store
    /// the new entry, so one AOR's entries are stored in id order.
    seq_locks: Arc<common::StripedLocks>,
    /// Dedicated thread behind [`Store::flush`]; stopped with the last clone.
    flusher: Arc<flush::Flusher>,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::from_db(sled::open(path)?)
    }

    /// Like [`Store::open`], but waits up to `wait` for the file lock. sled
    /// releases it a moment after the last handle is gone (its IO threads
    /// still hold the file), and a process that just stopped lets go of it
    /// only when the kernel has reaped it; both are worth a short wait
    /// rather than a "locked" error. A store still locked after `wait`
    /// gives that error ([`StoreError::is_locked`]).
    pub fn open_when_free(path: &Path, wait: std::time::Duration) -> Result<Store, StoreError> {
        retry_while_locked(wait, || Store::open(path))
    }

    /// Like [`Store::open`] with sled's page cache capped at `cache_bytes`
    /// (sled's default is 1 GiB; at a million users the cache, not the
    /// data on disk, is what the process's memory is made of).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Self::from_db(sled::Config::new().path(path).cache_capacity(cache_bytes).open()?)
    }

    /// An in-memory-backed store that is deleted on drop; for tests and
    /// deployments that explicitly want no persistence.
    pub fn temporary() -> Result<Store, StoreError> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        // Checked before any data tree is opened so that a store from a newer
        // build is not modified at all.
        check_format(&db)?;
        let bindings = db.open_tree(BINDINGS_TREE)?;
        let binding_expiry = db.open_tree(BINDING_EXPIRY_TREE)?;
        let deferred = db.open_tree(DEFERRED_TREE)?;
        let deferred_expiry = db.open_tree(DEFERRED_EXPIRY_TREE)?;
        let mss = db.open_tree(MSS_TREE)?;
        let prefs = db.open_tree(PREFS_TREE)?;
        let imdn_seen = db.open_tree(IMDN_SEEN_TREE)?;
        let imdn_origin = db.open_tree(IMDN_ORIGIN_TREE)?;
        let imdn_expiry = db.open_tree(IMDN_EXPIRY_TREE)?;
        let credentials = db.open_tree(CREDENTIALS_TREE)?;
        let provisioning = db.open_tree(PROVISIONING_TREE)?;
        let group_fanout = db.open_tree(GROUP_FANOUT_TREE)?;
        let group_reports = db.open_tree(GROUP_REPORTS_TREE)?;
        let group_report_due = db.open_tree(GROUP_REPORT_DUE_TREE)?;
        let origins = origin::OriginWriter::start(db.clone(), imdn_origin.clone(), imdn_expiry.clone())
            .map_err(sled::Error::Io)?;
        // Every flush writes the queued notes first, so it covers them too.
        let notes = origins.shared().clone();
        let flusher = flush::Flusher::start(db.clone(), move || notes.write_pending()).map_err(sled::Error::Io)?;
        Ok(Store {
            bindings,
            binding_expiry,
            binding_locks: Arc::new(common::StripedLocks::new()),
            deferred,
            deferred_expiry,
            mss,
            prefs,
            imdn_seen,
            imdn_origin,
            imdn_expiry,
            origins: Arc::new(origins),
            credentials,
            provisioning,
            group_fanout,
            group_reports,
            group_report_due,
            seq_locks: Arc::new(common::StripedLocks::new()),
            flusher: Arc::new(flusher),
            db,
        })
    }

    /// Makes every write so far durable. Callers await this before sending
    /// anything (e.g. a 200 OK) that promises the state survives a crash.
    ///
    /// Runs the blocking flush on the store's own flusher thread, which
    /// batches concurrent requests into one flush. sled's `flush_async` is
    /// not used: with several calls in flight it starves sled's IO threadpool
    /// and hangs (see the `flush` module).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await?;
        Ok(())
    }

    /// How the flushes went: whether the store can acknowledge anything as
    /// durable right now (the admin API's `/health`).
    pub fn health(&self) -> StoreHealth {
        self.flusher.health()
    }

    /// The server secret called `name` (32 bytes): the one stored, or
    /// `fresh` stored now and flushed, so that what it protects (temporary
    /// GRUUs) stays valid across restarts. Compare-and-swap: two callers
    /// racing get the same secret.
    pub fn secret(&self, name: &str, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let meta = self.db.open_tree(META_TREE)?;
        let key = [SECRET_PREFIX, name.as_bytes()].concat();
        let stored = match meta.compare_and_swap(&key, None::<&[u8]>, Some(&fresh[..]))? {
            Ok(()) => {
                self.db.flush()?;
                return Ok(fresh);
            }
            Err(cas) => cas.current,
        };
        let stored = stored.ok_or_else(|| StoreError::Corrupt(format!("secret {name:?} vanished")))?;
        stored
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("secret {name:?} has {} bytes, expected 32", stored.len())))
    }

    /// Blocking variant of [`Store::flush`], for shutdown paths and tools
    /// outside an async runtime. Flushes on the calling thread.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.origins.shared().write_pending()?;
        self.db.flush()?;
        Ok(())
    }
}

/// Writes the format marker on a fresh store, or verifies it on an existing one.
fn check_format(db: &sled::Db) -> Result<(), StoreError> {
    let meta = db.open_tree(META_TREE)?;
    let ours = FORMAT_VERSION.to_be_bytes();
    // Compare-and-swap so two processes racing to initialise cannot disagree.
    match meta.compare_and_swap(FORMAT_KEY, None::<&[u8]>, Some(&ours[..]))? {
        Ok(()) => Ok(()),
        Err(cas) => {
            let current = cas
                .current
                .ok_or_else(|| StoreError::Corrupt("format marker vanished during open".into()))?;
            let bytes: [u8; 4] = current
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("format marker has {} bytes, expected 4", current.len())))?;
            let found = u32::from_be_bytes(bytes);
            if found == FORMAT_VERSION {
                Ok(())
            } else if found == 1 {
                let rewritten = migrate::deferred_v1_to_v2(db)?;
                // The records first, then the marker that says they are new.
                db.flush()?;
                meta.insert(FORMAT_KEY, &ours[..])?;
                db.flush()?;
                tracing::info!(rewritten, "store upgraded from format 1 to 2");
                Ok(())
            } else {
                Err(StoreError::Format {
                    found,
                    supported: FORMAT_VERSION,
                })
            }
        }
    }
}

/// Calls `open` until it succeeds, fails for another reason than the file
/// lock, or `wait` has passed (also for tools that open the bare sled
/// database, e.g. to damage a record in a test).
pub fn retry_while_locked<T>(
    wait: std::time::Duration,
    mut open: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match open() {
            Err(e) if e.is_locked() && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            res => return res,
        }
    }
}

/// Re-opens a store the test just dropped (see [`Store::open_when_free`]).
#[cfg(test)]
pub(crate) fn reopen(path: &Path) -> Result<Store, StoreError> {
    Store::open_when_free(path, std::time::Duration::from_secs(5))
}

/// The tests' executor for the async flush.
#[cfg(test)]
pub(crate) use futures::executor::block_on;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_and_kept_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let s = Store::open(dir.path()).unwrap();
            let first = s.secret("temp-gruu", [1; 32]).unwrap();
            assert_eq!(first, [1; 32]);
            assert_eq!(s.secret("temp-gruu", [2; 32]).unwrap(), first, "the stored one wins");
            assert_eq!(s.secret("other", [3; 32]).unwrap(), [3; 32], "one per name");
            first
        };
        let s = reopen(dir.path()).unwrap();
        assert_eq!(s.secret("temp-gruu", [4; 32]).unwrap(), first);
        s.db.open_tree(META_TREE)
            .unwrap()
            .insert(b"secret/short", &b"xy"[..])
            .unwrap();
        assert!(matches!(s.secret("short", [5; 32]), Err(StoreError::Corrupt(_))));
    }

    /// Guard against reintroducing the operations that take sled's global
    /// concurrency-control write lock, and sled's deadlock-prone `flush_async`.
    #[test]
    fn crate_never_takes_sled_cc_write_lock() {
        let sources = [
            include_str!("lib.rs"),
            include_str!("bindings.rs"),
            include_str!("common.rs"),
            include_str!("credentials.rs"),
            include_str!("deferred.rs"),
            include_str!("error.rs"),
            include_str!("flush.rs"),
            include_str!("group_fanout.rs"),
            include_str!("group_reports.rs"),
            include_str!("imdn.rs"),
            include_str!("migrate.rs"),
            include_str!("mss.rs"),
            include_str!("origin.rs"),
            include_str!("prefs.rs"),
            include_str!("provisioning.rs"),
        ];
        let banned = ["transaction", "apply_batch", "checksum", "flush_async"].map(|op| format!(".{op}("));
        for src in sources {
            for op in &banned {
                assert!(!src.contains(op.as_str()), "store source calls {op}");
            }
            assert!(!src.contains(concat!("sled::", "transaction")));
            assert!(!src.contains(concat!("sled::", "Transactional")));
        }
        // Every source file of the crate is checked above.
        let listed = sources.len();
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "rs"))
            .count();
        assert_eq!(listed, on_disk, "add new source files to this test");
    }

    #[test]
    fn fresh_store_gets_format_marker_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let meta = store.db.open_tree(META_TREE).unwrap();
            assert_eq!(
                meta.get(FORMAT_KEY).unwrap().as_deref(),
                Some(&FORMAT_VERSION.to_be_bytes()[..])
            );
            store.flush_blocking().unwrap();
        }
        reopen(dir.path()).unwrap();
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let meta = store.db.open_tree(META_TREE).unwrap();
            meta.insert(FORMAT_KEY, &(FORMAT_VERSION + 1).to_be_bytes()[..])
                .unwrap();
            store.flush_blocking().unwrap();
        }
        match reopen(dir.path()) {
            Err(StoreError::Format {
                found,
                supported: FORMAT_VERSION,
            }) if found == FORMAT_VERSION + 1 => {}
            other => panic!("expected Format error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_format_marker_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let meta = store.db.open_tree(META_TREE).unwrap();
            meta.insert(FORMAT_KEY, &b"x"[..]).unwrap();
            store.flush_blocking().unwrap();
        }
        assert!(matches!(reopen(dir.path()), Err(StoreError::Corrupt(_))));
    }
}
