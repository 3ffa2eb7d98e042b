//! Parse cost of what every pager-mode message costs on the way in: the SIP
//! MESSAGE (as `../shared/bench/sipp/message_uac.xml` and the load generator
//! send it) and its CPIM payload.
//!
//!     cargo bench -p cpm-sip --bench parse -- --warm-up-time 1 --measurement-time 3

use bytes::Bytes;
use cpm_sip::cpim::Cpim;
use cpm_sip::params::parse_name_addr;
use cpm_sip::{Message, SipUri, Via};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const CPIM: &str = "From: <sip:u7@127.0.0.1>\r\n\
To: <sip:u8@127.0.0.1>\r\n\
DateTime: 2026-11-21T10:00:00Z\r\n\
NS: imdn <urn:ietf:params:imdn>\r\n\
imdn.Message-ID: m1234x42\r\n\
imdn.Disposition-Notification: positive-delivery\r\n\
\r\n\
Content-Type: text/plain;charset=UTF-8\r\n\
\r\n\
hello number 42\r\n";

fn message() -> Bytes {
    Bytes::from(format!(
        "MESSAGE sip:u8@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-1234-42-0\r\n\
         From: <sip:u7@127.0.0.1:5060>;tag=1234M42\r\n\
         To: <sip:u8@127.0.0.1:5060>\r\n\
         Call-ID: 42-1234@127.0.0.1\r\n\
         CSeq: 1 MESSAGE\r\n\
         Max-Forwards: 70\r\n\
         Accept-Contact: *;+g.oma.sip-im\r\n\
         Content-Type: message/cpim\r\n\
         Content-Length: {}\r\n\r\n{CPIM}",
        CPIM.len()
    ))
}

/// The 200 OK the UAS answers the MESSAGE with.
fn ok_response() -> Bytes {
    Bytes::from_static(
        b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-1234-42-0;received=127.0.0.1;rport=5072\r\n\
From: <sip:u7@127.0.0.1:5060>;tag=1234M42\r\n\
To: <sip:u8@127.0.0.1:5060>;tag=9876\r\n\
Call-ID: 42-1234@127.0.0.1\r\n\
CSeq: 1 MESSAGE\r\n\
Content-Length: 0\r\n\r\n",
    )
}

fn sip(c: &mut Criterion) {
    let raw = message();
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    // Bytes clones are a refcount bump: this measures the parse.
    g.bench_function("parse_cpm_message", |b| {
        b.iter(|| Message::parse(black_box(raw.clone())).expect("bench message parses"))
    });
    g.bench_function("parse_and_validate_cpm_message", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(raw.clone())).expect("bench message parses");
            m.validate_request().expect("bench message is valid");
            (m.from().is_ok(), m.to().is_ok(), m.cseq().is_ok(), m.top_via().is_ok())
        })
    });
    let parsed = Message::parse(raw.clone()).expect("bench message parses");
    g.bench_function("validate_cpm_message", |b| {
        b.iter(|| black_box(&parsed).validate_request().expect("bench message is valid"))
    });
    g.bench_function("clone_cpm_message", |b| b.iter(|| black_box(&parsed).clone()));
    g.bench_function("serialize_cpm_message", |b| b.iter(|| black_box(&parsed).to_bytes()));
    let ok = ok_response();
    g.bench_function("parse_200_ok", |b| {
        b.iter(|| Message::parse(black_box(ok.clone())).expect("bench response parses"))
    });
    let parsed_ok = Message::parse(ok).expect("bench response parses");
    g.bench_function("serialize_200_ok", |b| b.iter(|| black_box(&parsed_ok).to_bytes()));
    g.finish();

    let mut g = c.benchmark_group("sip_parts");
    g.bench_function("via", |b| {
        b.iter(|| Via::parse(black_box("SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-1234-42-0")).expect("via"))
    });
    g.bench_function("name_addr", |b| {
        b.iter(|| parse_name_addr(black_box("<sip:u7@127.0.0.1:5060>;tag=1234M42")).expect("name-addr"))
    });
    g.bench_function("uri", |b| {
        b.iter(|| SipUri::parse(black_box("sip:u8@127.0.0.1:5060")).expect("uri"))
    });
    g.finish();
}

fn cpim(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpim");
    g.throughput(Throughput::Bytes(CPIM.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| Cpim::parse(black_box(CPIM.as_bytes())).expect("bench CPIM parses"))
    });
    g.bench_function("parse_and_read_imdn", |b| {
        b.iter(|| {
            let c = Cpim::parse(black_box(CPIM.as_bytes())).expect("bench CPIM parses");
            (c.imdn_message_id().map(str::len), c.disposition_request().any())
        })
    });
    g.finish();
}

criterion_group!(benches, sip, cpim);
criterion_main!(benches);
