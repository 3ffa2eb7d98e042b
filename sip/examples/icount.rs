//! Deterministic per-call cost of the hot parse/serialize paths, for
//! callgrind (`Ir` of N+1 calls minus `Ir` of 1 call, divided by N):
//!
//!     cargo build --release -p cpm-sip --example icount
//!     valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/icount parse 10001
//!
//! Paths: parse, parse_ok, validate, to_bytes, via, name_addr, uri, cpim,
//! cpim_read (imdn.Message-ID and Disposition-Notification of a parsed CPIM),
//! cpim_ingress (what the ingress does per relayed MESSAGE: parse the SIP
//! body as CPIM, imdn.Message-ID, `imdn::report_of`, the disposition
//! request), clone (Message::clone, once per relayed request).
//!
//! Heap allocations per call, the same way from memcheck's "total heap
//! usage" (the example uses the system allocator, which valgrind sees):
//!
//!     valgrind target/release/examples/icount cpim_ingress 10001 2>&1 | grep 'heap usage'

use std::hint::black_box;

use bytes::Bytes;
use cpm_sip::cpim::Cpim;
use cpm_sip::imdn;
use cpm_sip::params::parse_name_addr;
use cpm_sip::{Message, SipUri, Via};

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

const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-1234-42-0;received=127.0.0.1;rport=5072\r\n\
From: <sip:u7@127.0.0.1:5060>;tag=1234M42\r\n\
To: <sip:u8@127.0.0.1:5060>;tag=9876\r\n\
Call-ID: 42-1234@127.0.0.1\r\n\
CSeq: 1 MESSAGE\r\n\
Content-Length: 0\r\n\r\n";

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

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "parse".into());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let raw = message();
    let ok = Bytes::from_static(OK);
    let parsed = Message::parse(raw.clone()).expect("parses");
    let cpim = Cpim::parse(CPIM.as_bytes()).expect("parses");
    for _ in 0..n {
        match what.as_str() {
            "parse" => drop(black_box(Message::parse(black_box(raw.clone())))),
            "parse_ok" => drop(black_box(Message::parse(black_box(ok.clone())))),
            "validate" => drop(black_box(black_box(&parsed).validate_request())),
            "to_bytes" => drop(black_box(black_box(&parsed).to_bytes())),
            "via" => drop(black_box(Via::parse(black_box(
                "SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-1234-42-0",
            )))),
            "name_addr" => drop(black_box(parse_name_addr(black_box(
                "<sip:u7@127.0.0.1:5060>;tag=1234M42",
            )))),
            "uri" => drop(black_box(SipUri::parse(black_box("sip:u8@127.0.0.1:5060")))),
            "cpim" => drop(black_box(Cpim::parse(black_box(CPIM.as_bytes())))),
            "cpim_read" => drop(black_box((
                black_box(&cpim).imdn_message_id().map(str::len),
                black_box(&cpim).disposition_request(),
            ))),
            "cpim_ingress" => drop(black_box(cpim_ingress(black_box(&parsed)))),
            "clone" => drop(black_box(black_box(&parsed).clone())),
            other => panic!("unknown path {other}"),
        }
    }
}

/// `parse_cpim` of src/ingress/message.rs, without the tracer.
fn cpim_ingress(req: &Message) -> Option<(Option<usize>, bool, bool)> {
    let cpim = Cpim::parse_bytes(&req.body).ok()?;
    let id = cpim.imdn_message_id().map(str::len);
    let report = imdn::report_of(&cpim).is_some();
    Some((id, report, cpim.disposition_request().any()))
}
