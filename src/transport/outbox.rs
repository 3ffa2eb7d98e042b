//! UDP sends handed to a thread of their own while the workers are busy.
//!
//! On loopback a `sendto` also runs the receiver's softirq and wake-up in
//! the sender's context: a quarter of a worker's time at 10,000 msg/s
//! (perf, docs/performance.md). While a worker's reads come in batches of
//! [`BUSY_BATCH`] or more, several in a row (it is behind), its sends go
//! here and a second core makes them; when it is not, they are made
//! inline, which costs less than waking this thread for each one. A full outbox is bypassed (sent inline), so it never
//! holds more than [`MAX_QUEUED`] datagrams.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use bytes::Bytes;

/// Reads of at least this many datagrams, [`BUSY_STREAK`] of them in a
/// row, mean the worker is behind. A single large read is not enough:
/// sipp's 1 ms bursts at 2,000 msg/s make some, and handing those sends
/// over cost more wake-ups than it saved (pager.sh with a per-thread count:
/// the sender thread carried 13 us of 71-81 per message with one read, none
/// with three); at 12,000 msg/s and above the streaks are there.
const BUSY_BATCH: usize = 8;
const BUSY_STREAK: usize = 3;

/// Datagrams waiting beyond which a sender sends inline again.
const MAX_QUEUED: usize = 8192;

/// How often a send into a full socket buffer is retried before it is
/// dropped (the request's retransmission timer or the peer's covers it).
pub(super) const SEND_RETRIES: usize = 3;

#[derive(Default)]
struct State {
    queue: Vec<(SocketAddr, Bytes)>,
    /// The thread waits for work (a push must wake it).
    idle: bool,
    shutdown: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    /// Datagrams queued or being sent, readable without the lock.
    queued: AtomicUsize,
}

pub struct Outbox {
    shared: Arc<Shared>,
    /// Consecutive reads of at least `BUSY_BATCH` datagrams, counted up to
    /// `BUSY_STREAK` (busy from there).
    streak: AtomicUsize,
}

impl Outbox {
    /// Starts the sending thread on a handle of `sock`; it ends with the Outbox.
    pub fn start(sock: UdpSocket) -> std::io::Result<Outbox> {
        let shared = Arc::new(Shared::default());
        std::thread::Builder::new().name("cpm-udp-send".into()).spawn({
            let shared = shared.clone();
            move || run(&sock, &shared)
        })?;
        Ok(Outbox {
            shared,
            streak: AtomicUsize::new(0),
        })
    }

    /// A receive loop's last read: `batch` datagrams at once.
    pub fn note_read(&self, batch: usize) {
        let old = self.streak.load(Ordering::Relaxed);
        let new = match batch >= BUSY_BATCH {
            true => (old + 1).min(BUSY_STREAK),
            false => 0,
        };
        if new != old {
            self.streak.store(new, Ordering::Relaxed);
        }
    }

    fn busy(&self) -> bool {
        self.streak.load(Ordering::Relaxed) >= BUSY_STREAK
    }

    /// Queue `data` if the workers are busy (or sends are already queued, to
    /// keep their order); gives it back when it should be sent inline.
    pub fn offer(&self, to: SocketAddr, data: Bytes) -> Option<Bytes> {
        let queued = self.shared.queued.load(Ordering::Relaxed);
        if queued >= MAX_QUEUED || (queued == 0 && !self.busy()) {
            return Some(data);
        }
        let wake = {
            let mut st = crate::lock(&self.shared.state);
            if st.shutdown {
                return Some(data);
            }
            st.queue.push((to, data));
            self.shared.queued.fetch_add(1, Ordering::Relaxed);
            std::mem::take(&mut st.idle)
        };
        if wake {
            self.shared.work.notify_one();
        }
        None
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        crate::lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_one();
    }
}

/// `sendto`, retried a few times while the socket buffer is full.
pub(super) fn send_to(sock: &UdpSocket, to: SocketAddr, data: &[u8]) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match sock.send_to(data, to) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && tries < SEND_RETRIES => {
                tries += 1;
                std::thread::yield_now();
            }
            Err(e) => return Err(e),
        }
    }
}

fn run(sock: &UdpSocket, shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        {
            let mut st = crate::lock(&shared.state);
            while st.queue.is_empty() && !st.shutdown {
                st.idle = true;
                st = shared.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.queue.is_empty() {
                return; // shut down, nothing left
            }
            std::mem::swap(&mut batch, &mut st.queue);
        }
        let n = batch.len();
        for (to, data) in batch.drain(..) {
            if let Err(e) = send_to(sock, to, &data) {
                tracing::debug!(%to, error = %e, "UDP send failed");
            }
        }
        // Only now: an inline send must not overtake these.
        shared.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn busy_sends_are_queued_in_order_and_idle_ones_given_back() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = rx.local_addr().unwrap();
        let out = Outbox::start(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        assert!(out.offer(to, Bytes::from_static(b"x")).is_some(), "idle: inline");
        for _ in 0..BUSY_STREAK - 1 {
            out.note_read(10);
            assert!(
                out.offer(to, Bytes::from_static(b"x")).is_some(),
                "one large read is not a backlog"
            );
        }
        out.note_read(10);
        for i in 0..100u32 {
            assert!(out.offer(to, Bytes::from(i.to_string())).is_none(), "busy: queued");
        }
        let mut buf = [0u8; 16];
        for i in 0..100u32 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], i.to_string().as_bytes());
        }
        out.note_read(1);
        // Give the thread time to drain; then sends are inline again.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.shared.queued.load(Ordering::Relaxed) > 0 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(out.offer(to, Bytes::from_static(b"y")).is_some());
    }
}
