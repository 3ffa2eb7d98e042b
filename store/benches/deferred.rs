//! Deferring a message: `enqueue_deferred` and then waiting for durability
//! with `Store::flush` (the group-committing flusher thread of `flush.rs`;
//! never sled's transactions, `apply_batch` or `flush_async`), which is what
//! the PF does before it answers 202.
//!
//!     cargo bench -p cpm-store --bench deferred -- --warm-up-time 1 --measurement-time 3
//!
//! The store is a real on-disk sled database in a temporary directory, so the
//! flush figures are the disk's fsync latency as much as ours.

use std::time::{Duration, Instant};

use cpm_store::{NewDeferred, Store};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::executor::block_on;

/// A deferred pager-mode message of the size pager.sh sends (~700 bytes).
fn msg(i: u64) -> NewDeferred {
    let request = format!(
        "MESSAGE sip:u8@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-{i}\r\n\
         From: <sip:u7@127.0.0.1:5060>;tag={i}\r\nTo: <sip:u8@127.0.0.1:5060>\r\nCall-ID: {i}@h\r\n\
         CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: message/cpim\r\nContent-Length: 280\r\n\r\n{}",
        "x".repeat(280)
    );
    NewDeferred {
        received_at: 1_800_000_000,
        expires_at: 1_800_000_000 + 86_400 + i % 1000,
        from: "sip:u7@127.0.0.1".into(),
        subject: None,
        content_type: "message/cpim".into(),
        size: 280,
        request: request.into_bytes(),
        target: None,
    }
}

fn aor(i: u64) -> String {
    format!("sip:u{}@127.0.0.1", i % 1000)
}

fn deferred(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path()).expect("open store");
    let mut g = c.benchmark_group("deferred");
    let mut i = 0u64;
    // Enqueue and remove again: the write path alone, at a steady queue size.
    g.bench_function("enqueue_remove_no_flush", |b| {
        b.iter(|| {
            i += 1;
            let a = aor(i);
            let rec = store.enqueue_deferred(&a, msg(i)).expect("enqueue");
            store.remove_deferred(&a, black_box(rec.seq)).expect("remove")
        })
    });
    // One caller: enqueue `n`, then wait until they are on disk.
    for n in [1u64, 16] {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("enqueue_then_flush", n), &n, |b, &n| {
            b.iter(|| {
                for _ in 0..n {
                    i += 1;
                    store.enqueue_deferred(&aor(i), msg(i)).expect("enqueue");
                }
                block_on(store.flush()).expect("flush")
            })
        });
    }
    // As in the server: several PFs each enqueue one message and await the
    // flush at the same time; the flusher commits them as a group.
    let callers = 8u64;
    g.throughput(Throughput::Elements(callers));
    g.bench_function(BenchmarkId::new("concurrent_enqueue_flush", callers), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..callers {
                    let store = &store;
                    s.spawn(move || {
                        for k in 0..iters {
                            let i = 1_000_000_000 + k * callers + t;
                            store.enqueue_deferred(&aor(i), msg(i)).expect("enqueue");
                            block_on(store.flush()).expect("flush");
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = deferred
}
criterion_main!(benches);
