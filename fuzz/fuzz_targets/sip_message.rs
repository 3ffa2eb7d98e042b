//! Whole-message parser: `Message::parse` never panics on any datagram, and
//! whatever it accepts survives `to_bytes` and a second parse:
//!
//! * the start line is equal;
//! * the header lines are the same names with the same values in the same
//!   order, Content-Length aside: `to_bytes` drops the received one(s) and
//!   writes exactly one, last, with the real body length;
//! * the body is equal, and `validate_request` gives the same answer;
//! * serializing again gives the same bytes (one round reaches the fixpoint);
//! * `top_via_branch` agrees with `top_via().branch()`.
//!
//! Run with `cargo +nightly fuzz run sip_message` from the repository root
//! (see docs/fuzzing.md); seed it with the torture messages.

#![no_main]

use bytes::Bytes;
use cpm_sip::{Message, ResponseBuilder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };

    // Every accessor the server uses must not panic either.
    let validated = msg.validate_request();
    let _ = (msg.top_via(), msg.via_count(), msg.call_id(), msg.cseq());
    // The response path reads only the branch: the same answer as the Via.
    let branch = msg.top_via_branch().map(|b| b.map(|b| b.into_owned()));
    let via_branch = msg.top_via().map(|v| v.branch().map(str::to_string));
    assert_eq!(branch.ok(), via_branch.ok(), "top_via_branch against top_via");
    let _ = (msg.from(), msg.to(), msg.max_forwards(), msg.content_type());
    let _ = ResponseBuilder::new(&msg, 400, "fuzz").build().to_bytes();
    let mut popped = msg.clone();
    while popped.pop_via().is_some() {}

    let wire = msg.to_bytes();
    let again = match Message::parse(wire.clone()) {
        Ok(m) => m,
        Err(e) => panic!("re-parse failed: {e}\n{:?}", String::from_utf8_lossy(&wire)),
    };
    assert_eq!(again.start, msg.start, "start line");

    let without_cl = |m: &Message| -> Vec<(String, String)> {
        m.headers
            .0
            .iter()
            .filter(|h| h.name != "Content-Length")
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect()
    };
    assert_eq!(without_cl(&again), without_cl(&msg), "header names and values");
    let last = again.headers.0.last().expect("Content-Length is written");
    assert_eq!(last.name, "Content-Length");
    assert_eq!(last.value, msg.body.len().to_string());
    assert_eq!(again.headers.all("Content-Length").count(), 1);

    assert_eq!(again.body, msg.body, "body");
    assert_eq!(again.validate_request(), validated, "validation");
    assert_eq!(again.to_bytes(), wire, "serialization fixpoint");
});
