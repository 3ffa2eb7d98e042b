//! Asynchronous flushing without sled's `flush_async`.
//!
//! sled 0.34's `Tree::flush_async` runs a *blocking* flush on sled's own IO
//! threadpool. That flush waits for the current log buffer to be written, and
//! the write is itself queued on the same pool; the pool only grows when more
//! than seven tasks are queued. With about seven or more `flush_async` calls
//! in flight every pool thread waits for a write that no thread is left to
//! perform, and the process hangs (sled issues #1241 and #1308, fixed on
//! sled's main branch but never released). The regression test in
//! `bindings.rs` hits this on every run when `Store::flush` used it.
//!
//! Instead each [`crate::Store`] has one dedicated flusher thread of its own.
//! Callers enqueue a request and await it; the thread takes every request
//! queued so far, runs one blocking `sled::Db::flush` for all of them
//! (group commit), and completes them. A request queued while a flush is
//! running waits for the next one, which starts after it was queued and thus
//! covers every write its caller made before asking.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::lock;

/// Owner of the flusher thread; dropping it (with the last `Store` clone)
/// stops and joins the thread, so its database handle is released before the
/// store counts as closed and the same path can be reopened at once.
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    health: Mutex<StoreHealth>,
}

/// Upper bounds (seconds) of the flush-duration histogram's buckets.
pub const FLUSH_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// A flush slower than this is logged: every acknowledgement waiting for it
/// (202s, 200s to REGISTER, deferred pushes) waits as long.
const SLOW_FLUSH: Duration = Duration::from_millis(500);

/// The outcome of the flushes so far, for the admin API's health check and
/// metrics.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct StoreHealth {
    /// Flushes run (one per batch of requests: group commit).
    pub flushes: u64,
    /// Flushes per duration bucket ([`FLUSH_BUCKETS`]; the rest are slower).
    pub flush_buckets: [u64; FLUSH_BUCKETS.len()],
    /// Seconds spent flushing, in all.
    pub flush_seconds: f64,
    /// Flushes that failed since the store was opened.
    pub failed_flushes: u64,
    /// The error of the last flush, if it failed (cleared by the next one
    /// that succeeds). sled 0.34 keeps failing once its log could not be
    /// written, so in practice this stays set until a restart.
    pub failing: Option<String>,
}

#[derive(Default)]
struct State {
    queue: Vec<Arc<Slot>>,
    shutdown: bool,
}

/// Completion slot of one request.
#[derive(Default)]
struct Slot(Mutex<SlotState>);

#[derive(Default)]
struct SlotState {
    result: Option<Result<(), sled::Error>>,
    waker: Option<Waker>,
}

impl Flusher {
    /// `before` runs ahead of each flush: writes held back elsewhere (the
    /// sending-device notes) are handed to sled first, so the flush covers them.
    pub(crate) fn start(
        db: sled::Db,
        before: impl Fn() -> Result<(), crate::StoreError> + Send + 'static,
    ) -> std::io::Result<Flusher> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new().name("cpm-store-flush".into()).spawn({
            let shared = shared.clone();
            move || run(&db, &shared, &before)
        })?;
        Ok(Flusher {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a flush; the returned future resolves once a flush that
    /// started after this call has finished.
    pub(crate) fn flush(&self) -> FlushRequest {
        let slot = Arc::new(Slot::default());
        lock(&self.shared.state).queue.push(slot.clone());
        self.shared.work.notify_one();
        FlushRequest(slot)
    }

    pub(crate) fn health(&self) -> StoreHealth {
        lock(&self.shared.health).clone()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.take() {
            // `run` catches panics of the flush itself; nothing else in it can
            // fail, so there is nothing to report here.
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("queued", &lock(&self.shared.state).queue.len())
            .finish()
    }
}

fn run(db: &sled::Db, shared: &Shared, before: &dyn Fn() -> Result<(), crate::StoreError>) {
    loop {
        let batch = {
            let mut st = lock(&shared.state);
            while st.queue.is_empty() && !st.shutdown {
                st = shared.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.queue.is_empty() {
                return; // shut down with nothing left to do
            }
            std::mem::take(&mut st.queue)
        };
        if let Err(e) = before() {
            tracing::error!(error = %e, "held-back writes failed before a flush");
        }
        // A panic must not strand the waiters: they would never complete.
        let started = Instant::now();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.flush()))
            .unwrap_or_else(|_| Err(sled::Error::ReportableBug("sled flush panicked".into())))
            .map(|_| ());
        record(shared, &res, started.elapsed(), batch.len());
        for slot in batch {
            let waker = {
                let mut s = lock(&slot.0);
                s.result = Some(res.clone());
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

fn record(shared: &Shared, res: &Result<(), sled::Error>, took: Duration, requests: usize) {
    if took >= SLOW_FLUSH {
        tracing::warn!(ms = took.as_millis() as u64, requests, "slow store flush");
    }
    let secs = took.as_secs_f64();
    let mut h = lock(&shared.health);
    h.flushes += 1;
    h.flush_seconds += secs;
    for (bound, n) in FLUSH_BUCKETS.iter().zip(h.flush_buckets.iter_mut()) {
        if secs <= *bound {
            *n += 1;
        }
    }
    match res {
        Ok(()) => {
            if let Some(was) = h.failing.take() {
                tracing::warn!(error = %was, "store flushes succeed again");
            }
        }
        Err(e) => {
            h.failed_flushes += 1;
            if h.failing.is_none() {
                // Once per outage: every waiter logs its own request's failure.
                tracing::error!(error = %e, "store flush failed: nothing is acknowledged as durable until one succeeds");
            }
            h.failing = Some(e.to_string());
        }
    }
}

/// Future of one queued flush.
pub(crate) struct FlushRequest(Arc<Slot>);

impl Future for FlushRequest {
    type Output = Result<(), sled::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = lock(&self.0 .0);
        match s.result.take() {
            Some(res) => Poll::Ready(res),
            None => {
                match &mut s.waker {
                    Some(w) => w.clone_from(cx.waker()),
                    None => s.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}
