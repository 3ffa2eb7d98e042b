//! Header parameter / name-addr list parser: never panics, and whatever it
//! accepts serializes to something it parses back to the same value.
//!
//! Run with `cargo +nightly fuzz run header_params` from the repository root.

#![no_main]

use cpm_sip::caps::Capabilities;
use cpm_sip::params::{parse_list, parse_name_addr, split_params};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = split_params(s);
    let _ = parse_name_addr(s);
    let Ok(entries) = parse_list(s) else {
        return;
    };

    let serialized: Vec<String> = entries.iter().map(|e| e.to_header_value()).collect();
    for (entry, text) in entries.iter().zip(&serialized) {
        assert_eq!(
            parse_name_addr(text).as_ref(),
            Ok(entry),
            "entry roundtrip: {text:?}"
        );
    }
    let joined = serialized.join(", ");
    assert_eq!(
        parse_list(&joined).as_ref(),
        Ok(&entries),
        "list roundtrip: {joined:?}"
    );

    // Capability extraction and matching must not panic either.
    for entry in &entries {
        let caps = Capabilities::from_params(&entry.params);
        let _ = caps.accepts_cpm_message();
        let _ = caps.satisfies(&entries);
        let _ = caps.rejected_by(&entries);
    }
});
