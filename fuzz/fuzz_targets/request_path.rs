//! The request-handling path, as far as it is pure: what the receive path
//! and the ingress decide from the bytes of one datagram or TCP stream
//! before any actor is involved. Nothing may panic, and:
//!
//! * the overload gate's quick 503 (`limits::quick_response`), when it can
//!   be built, is a 503 with Retry-After that our own parser reads back with
//!   the request's Call-ID;
//! * the stream framer, fed the bytes in two pieces, never yields a frame
//!   over `MAX_FRAME` nor more bytes than it was given;
//! * a parsed and validated request has a server-transaction key
//!   (`ServerKey::of`) that is the same for a re-parse of its serialization;
//! * the REGISTER contact parsing the ingress does (name-addr list, URIs,
//!   `expires`, `+sip.instance`, feature tags → Capabilities), the IMDN
//!   report recognition (`parse_report`) and the RFC 5366 URI-list split
//!   (`urilist::split_request`) never panic;
//! * a MESSAGE's Request-URI user part never opens as a temporary GRUU
//!   (`TempGruus::open`): the fuzzer cannot forge the seal.
//!
//! Run with `CARGO_TARGET_DIR=/tmp/fuzz-target cargo +nightly fuzz run request_path`.

#![no_main]

use bytes::Bytes;
use cpm::limits::quick_response;
use cpm::transaction::ServerKey;
use cpm::transport::{Framer, MAX_FRAME};
use cpm_actors::cf::urilist;
use cpm_actors::gruu::TempGruus;
use cpm_sip::caps::Capabilities;
use cpm_sip::imdn::parse_report;
use cpm_sip::params::parse_list;
use cpm_sip::{Message, Method, SipUri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Receive path: the quick 503 of the overload gate.
    if let Some(resp) = quick_response(data, 503, "Overloaded", Some(5), "fuzz") {
        let m = Message::parse(resp.clone()).unwrap_or_else(|e| panic!("quick 503 unparsable ({e}): {resp:?}"));
        assert_eq!(m.status(), Some(503));
        assert_eq!(m.header("Retry-After"), Some("5"));
    }

    // TCP framing, in two pieces.
    let mut framer = Framer::default();
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut framed = 0;
    for piece in [&data[..cut], &data[cut..]] {
        framer.extend(piece);
        while let Ok(Some(frame)) = framer.next_frame() {
            assert!(frame.len() <= MAX_FRAME);
            framed += frame.len();
        }
    }
    assert!(framed <= data.len());

    // Parse, validate, transaction key.
    let Ok(msg) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    if !msg.is_request() || msg.validate_request().is_err() {
        return;
    }
    let Ok(via) = msg.top_via() else { return };
    let key = ServerKey::of(&msg, &via);
    if let Ok(again) = Message::parse(msg.to_bytes()) {
        if let Ok(via2) = again.top_via() {
            assert_eq!(ServerKey::of(&again, &via2), key, "transaction key changed on re-parse");
        }
    }

    match msg.method() {
        Some(Method::Register) => {
            let _ = msg.header("Expires").map(|v| v.trim().parse::<u32>());
            for line in msg.headers.all("Contact") {
                let Ok(entries) = parse_list(line) else { continue };
                for entry in entries {
                    if let Ok(uri) = SipUri::parse(&entry.uri) {
                        let _ = uri.is_sip_routable();
                    }
                    let _ = entry.param_value("expires").map(|v| v.trim().parse::<u32>());
                    let _ = entry.param_value("+sip.instance");
                    let _ = Capabilities::from_params(&entry.params);
                }
            }
        }
        Some(Method::Message) => {
            // A temporary GRUU is opened from the Request-URI's user part:
            // anything not sealed with the key must not open.
            if let Some(user) = msg.request_uri().and_then(|u| u.user.clone()) {
                let gruus = TempGruus::new(&[7; 32]);
                if let Some(t) = gruus.open(&user) {
                    panic!("an unsealed token opened: {t:?}");
                }
            }
            let ct = msg.content_type();
            let _ = parse_report(ct.as_deref(), &msg.body);
            if let Some(ct) = ct {
                let _ = urilist::split_request(&ct, &msg.body, 100);
            }
        }
        _ => {}
    }
});
