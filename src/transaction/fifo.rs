//! A FIFO in fixed-size chunks, for the transaction timer queues.
//!
//! The queues hold every transaction of the last 32 s (Timers F and J):
//! half a million entries at 16,000 msg/s. A `VecDeque` grows by doubling,
//! copying everything into freshly faulted memory while the worker waits:
//! its growth from 262,144 to 524,288 entries took 29.7 ms on the worker
//! (a logged measurement during a 6,000-18,000/s ramp), enough on its own
//! to push a 5 s step's p99 past 20 ms. Here growth is one more chunk and
//! nothing is ever copied; an emptied chunk is kept for the next one.

use std::collections::VecDeque;

/// Entries per chunk (96-128 KiB for the queues' 24- and 32-byte entries).
const CHUNK: usize = 4096;

pub(crate) struct ChunkedFifo<T> {
    chunks: VecDeque<VecDeque<T>>,
    /// The last chunk emptied, reused before a new one is allocated.
    spare: Option<VecDeque<T>>,
}

impl<T> Default for ChunkedFifo<T> {
    fn default() -> Self {
        ChunkedFifo {
            chunks: VecDeque::new(),
            spare: None,
        }
    }
}

impl<T> ChunkedFifo<T> {
    pub(crate) fn push_back(&mut self, item: T) {
        if self.chunks.back().is_none_or(|c| c.len() >= CHUNK) {
            let chunk = self.spare.take().unwrap_or_else(|| VecDeque::with_capacity(CHUNK));
            self.chunks.push_back(chunk);
        }
        if let Some(last) = self.chunks.back_mut() {
            last.push_back(item);
        }
    }

    pub(crate) fn front(&self) -> Option<&T> {
        self.chunks.front().and_then(VecDeque::front)
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let first = self.chunks.front_mut()?;
        let item = first.pop_front();
        // Only a chunk that was filled is retired: the last one may still
        // be taking entries.
        if first.is_empty() && self.chunks.len() > 1 {
            self.spare = self.chunks.pop_front();
        }
        item
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(VecDeque::len).sum()
    }

    /// Only the last chunk can be empty and still in line.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.front().is_none()
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> Extend<T> for ChunkedFifo<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for item in items {
            self.push_back(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_first_out_across_chunks() {
        let mut q = ChunkedFifo::default();
        assert!(q.is_empty() && q.front().is_none() && q.pop_front().is_none());
        let n = 3 * CHUNK + 17;
        q.extend(0..n);
        assert_eq!(q.len(), n);
        assert_eq!(q.iter().count(), n);
        for i in 0..CHUNK + 5 {
            assert_eq!(q.front(), Some(&i));
            assert_eq!(q.pop_front(), Some(i));
        }
        // Interleaved pushes and pops keep the order.
        q.extend(n..n + 2 * CHUNK);
        let mut next = CHUNK + 5;
        while let Some(i) = q.pop_front() {
            assert_eq!(i, next);
            next += 1;
        }
        assert_eq!(next, n + 2 * CHUNK);
        assert!(q.is_empty());
        q.push_back(7);
        assert_eq!((q.len(), q.pop_front(), q.len()), (1, Some(7), 0));
    }

    #[test]
    fn memory_is_held_in_chunks_not_in_one_buffer() {
        let mut q = ChunkedFifo::default();
        q.extend(0..10 * CHUNK);
        assert_eq!(q.chunks.len(), 10);
        assert!(
            q.chunks.iter().all(|c| c.capacity() < 2 * CHUNK),
            "no chunk grew past its size"
        );
        while q.len() > CHUNK / 2 {
            q.pop_front();
        }
        // Emptied chunks are dropped (one kept as the spare).
        assert_eq!(q.chunks.len(), 1);
        assert!(q.spare.is_some());
    }
}
