//! The terminating PF's routing decision (`pf/routing.rs`): build the
//! request's criteria once, then check every binding of the user, as
//! `DeliverPager` does for each message.
//!
//!     cargo bench -p cpm-actors --bench routing -- --warm-up-time 1 --measurement-time 3

use bytes::Bytes;
use cpm_actors::pf::{Binding, Criteria};
use cpm_sip::Message;
use cpm_store::BindingRecord;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

const NOW: u64 = 1_800_000_000;

fn request() -> Message {
    let raw = "MESSAGE sip:u8@127.0.0.1:5060 SIP/2.0\r\n\
               Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-1\r\n\
               From: <sip:u7@127.0.0.1:5060>;tag=1\r\n\
               To: <sip:u8@127.0.0.1:5060>\r\n\
               Call-ID: c1@127.0.0.1\r\n\
               CSeq: 1 MESSAGE\r\n\
               Max-Forwards: 70\r\n\
               Accept-Contact: *;+g.oma.sip-im\r\n\
               Content-Type: text/plain\r\n\
               Content-Length: 2\r\n\r\nhi";
    Message::parse(Bytes::from(raw)).expect("bench request parses")
}

/// Device `i` of a user: mostly CPM clients; every fourth is voice only
/// (skipped as not CPM capable), as a phone with a watch might register.
fn binding(i: usize) -> Binding {
    let tags = if i % 4 == 3 {
        "+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\""
    } else {
        "+g.oma.sip-im"
    };
    let instance = format!("<urn:uuid:00000000-0000-0000-0000-{i:012}>");
    let uri = format!("sip:u8@127.0.0.1:{}", 6000 + i);
    let record = BindingRecord {
        key: instance.clone(),
        contact: format!("<{uri}>;{tags};+sip.instance=\"{instance}\""),
        uri,
        instance: Some(instance),
        expires_at: NOW + 3600,
        call_id: format!("reg{i}"),
        cseq: 1,
        transport: "udp".into(),
        source: format!("127.0.0.1:{}", 6000 + i),
        registered_at: NOW,
        gruu: false,
    };
    Binding::from_record(record).expect("bench binding builds")
}

fn routing(c: &mut Criterion) {
    let req = request();
    let mut g = c.benchmark_group("routing");
    for devices in [1usize, 4, 16] {
        let bindings: Vec<Binding> = (0..devices).map(binding).collect();
        g.bench_with_input(BenchmarkId::new("choose_devices", devices), &bindings, |b, bindings| {
            b.iter(|| {
                let criteria = Criteria::new(black_box(&req), None, None);
                bindings.iter().filter(|b| criteria.check(b, NOW).is_ok()).count()
            })
        });
    }
    let one = binding(0);
    let criteria = Criteria::new(&req, None, None);
    g.bench_function("check_one_binding", |b| b.iter(|| criteria.check(black_box(&one), NOW)));
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
