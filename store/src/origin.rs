//! Write-behind for the sending-device notes (`imdn_origin`, see `imdn`).
//!
//! A note is taken for every MESSAGE a registered device sends with an
//! IMDN request. Its two sled inserts (record and expiry index) cost about
//! a tenth of a worker's time at 8,000 msg/s (perf, docs/performance.md),
//! and nothing waits for them: a note was never flushed on its own. So
//! notes are queued here, readable at once, and written to sled by a thread
//! of their own every [`WRITE_EVERY`], or by the flusher before each flush
//! (so a flush still covers every note taken before it). A queue above
//! [`MAX_QUEUED`] is written by the caller, which bounds memory when sled
//! falls behind.
//!
//! A written batch has one expiry-index entry listing all of its records
//! (`imdn::batch_index_key`, one per [`INDEX_CHUNK`] notes), not one per note: each sled insert clones
//! the leaf it lands in, and the per-note index entry was half of this
//! thread's CPU.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::lock;
use crate::StoreError;

/// How long a note waits for the writer thread at most.
const WRITE_EVERY: Duration = Duration::from_millis(10);

/// Notes queued beyond which the caller writes them itself.
const MAX_QUEUED: usize = 65_536;

/// Notes per expiry-index entry at most: bounds the entry's value (a
/// caller-written queue of 64k notes would be a ~4 MB value) and the work
/// of one sweep step.
const INDEX_CHUNK: usize = 1024;

/// One note: the record's value.
#[derive(Clone)]
struct Note {
    device: String,
    expires_at: u64,
}

type Notes = HashMap<Vec<u8>, Note>;

#[derive(Default)]
struct State {
    /// Taken, not yet handed to sled.
    queued: Notes,
    /// Being written by `write_pending` right now (still readable).
    writing: Arc<Notes>,
    shutdown: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    work: Condvar,
    /// Held for a whole write, so a writer that returns has seen every
    /// note queued before it was called written (the flusher relies on it).
    write: Mutex<()>,
    /// Batch ids come from its id generator (increasing across restarts).
    db: sled::Db,
    origin: sled::Tree,
    expiry: sled::Tree,
}

impl Shared {
    /// Queue a note (record key, device, expiry).
    pub(crate) fn put(&self, key: Vec<u8>, device: &str, expires_at: u64) {
        let (first, full) = {
            let mut st = lock(&self.state);
            let note = Note {
                device: device.to_string(),
                expires_at,
            };
            let first = st.queued.is_empty();
            st.queued.insert(key, note);
            (first, st.queued.len() >= MAX_QUEUED)
        };
        if first {
            // One wake-up per batch, not per note.
            self.work.notify_one();
        }
        if full {
            if let Err(e) = self.write_pending() {
                tracing::error!(error = %e, "cannot write sending-device notes");
            }
        }
    }

    /// A note not yet in sled: `Some((device, expires_at))`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<(String, u64)> {
        let st = lock(&self.state);
        st.queued
            .get(key)
            .or_else(|| st.writing.get(key))
            .map(|n| (n.device.clone(), n.expires_at))
    }

    /// Write every queued note to sled (index entry first, as `imdn` says).
    pub(crate) fn write_pending(&self) -> Result<(), StoreError> {
        let _writing = lock(&self.write);
        let batch = {
            let mut st = lock(&self.state);
            if st.queued.is_empty() {
                return Ok(());
            }
            let batch = Arc::new(std::mem::take(&mut st.queued));
            st.writing = batch.clone();
            batch
        };
        let res = self.apply(&batch);
        lock(&self.state).writing = Arc::default();
        res
    }

    /// Keep every writer out while the guard lives (tests that need one
    /// batch of a known size).
    #[cfg(test)]
    pub(crate) fn hold_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.write)
    }

    /// Per chunk of [`INDEX_CHUNK`] notes, its index entry first (as `imdn`
    /// says: a crash leaves at worst index entries without records), then
    /// one insert per record. Single-key inserts: a sled batch would take
    /// the global write lock that the rest of the crate avoids (see the
    /// test in `lib.rs`).
    fn apply(&self, batch: &Notes) -> Result<(), StoreError> {
        let notes: Vec<(&Vec<u8>, &Note)> = batch.iter().collect();
        for chunk in notes.chunks(INDEX_CHUNK) {
            let expires = chunk.iter().map(|(_, n)| n.expires_at).max().unwrap_or(0);
            let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
            let index = crate::imdn::batch_index_key(expires, self.db.generate_id()?);
            self.expiry.insert(index, crate::common::encode(&keys)?)?;
            for (key, n) in chunk {
                let value = crate::common::encode(&(n.device.as_str(), n.expires_at))?;
                self.origin.insert(key.as_slice(), value)?;
            }
        }
        Ok(())
    }
}

/// Owner of the writer thread; dropping it writes what is queued and joins
/// the thread (before the store's database handle is released).
pub(crate) struct OriginWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl OriginWriter {
    pub(crate) fn start(db: sled::Db, origin: sled::Tree, expiry: sled::Tree) -> std::io::Result<OriginWriter> {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            work: Condvar::new(),
            write: Mutex::new(()),
            db,
            origin,
            expiry,
        });
        let thread = std::thread::Builder::new().name("cpm-store-notes".into()).spawn({
            let shared = shared.clone();
            move || run(&shared)
        })?;
        Ok(OriginWriter {
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for OriginWriter {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for OriginWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginWriter")
            .field("queued", &lock(&self.shared.state).queued.len())
            .finish()
    }
}

/// Lower than the request path's threads: notes wait, requests should not
/// (a thread may raise its own nice value without privileges).
const NICE: libc::c_int = 10;

fn run(shared: &Shared) {
    // SAFETY: plain syscalls on the calling thread, no pointers involved.
    let res = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE) };
    if res != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "note writer keeps its priority");
    }
    loop {
        let stop = {
            let st = lock(&shared.state);
            let st = shared
                .work
                .wait_while(st, |st| st.queued.is_empty() && !st.shutdown)
                .unwrap_or_else(PoisonError::into_inner);
            st.shutdown
        };
        if !stop {
            // Let the batch fill: the wake-up above is paid once per batch.
            std::thread::sleep(WRITE_EVERY);
        }
        if let Err(e) = shared.write_pending() {
            tracing::error!(error = %e, "cannot write sending-device notes");
        }
        if stop {
            return;
        }
    }
}
