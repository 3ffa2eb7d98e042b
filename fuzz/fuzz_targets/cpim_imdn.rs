//! CPIM (RFC 3862) and IMDN (RFC 5438) parsers: never panic, and whatever
//! they accept serializes to something that parses back to the same value.
//!
//! Run with `cargo +nightly fuzz run cpim_imdn` from the repository root.

#![no_main]

use cpm_sip::cpim::{Cpim, CpimHeader, DispositionRequest, MAX_HEADER_LINES, MAX_LINE};
use cpm_sip::imdn::{parse_report, report, Imdn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cpim) = Cpim::parse(data) {
        let bytes = cpim.to_bytes();
        assert_eq!(Cpim::parse(&bytes).as_ref(), Ok(&cpim), "CPIM roundtrip: {bytes:?}");

        // Accessors and the namespace-aware setters must not panic, and what
        // they produce must still roundtrip.
        let _ = cpim.imdn_message_id();
        let _ = cpim.content_type();
        for name in ["From", "To", "cc"] {
            if let Some(v) = cpim.header(name) {
                let _ = Cpim::uri_of(v);
            }
        }
        let mut edited = cpim.clone();
        let wanted = DispositionRequest {
            positive_delivery: true,
            negative_delivery: false,
            display: true,
        };
        edited.set_disposition_request(wanted);
        assert_eq!(edited.disposition_request(), wanted);
        // The setters may push a message past the parser's limits (it gains
        // up to two header lines); only a message within them must roundtrip.
        if within_limits(&edited) {
            assert_eq!(Cpim::parse(&edited.to_bytes()).as_ref(), Ok(&edited));
        }
        edited.set_disposition_request(DispositionRequest::default());
        assert_eq!(edited.disposition_request(), DispositionRequest::default());
    }

    if let Ok(imdn) = Imdn::parse(data) {
        let xml = imdn.to_xml();
        assert_eq!(Imdn::parse(xml.as_bytes()).as_ref(), Ok(&imdn), "IMDN roundtrip: {xml}");
    }

    let _ = parse_report(None, data);
    if let Some((cpim, imdn)) = parse_report(Some("message/cpim"), data) {
        assert_eq!(Cpim::parse(&cpim.to_bytes()).as_ref(), Ok(&cpim));
        let again = report(
            "sip:a@example.com",
            "sip:b@example.com",
            "r1",
            "2024-01-01T00:00:00Z",
            &imdn,
        );
        let parsed = parse_report(Some("message/cpim"), &again.to_bytes()).map(|(_, i)| i);
        assert_eq!(parsed.as_ref(), Some(&imdn));
    }
});

fn within_limits(c: &Cpim) -> bool {
    let fits = |hs: &[CpimHeader]| {
        hs.len() <= MAX_HEADER_LINES && hs.iter().all(|h| h.name.len() + 2 + h.value.len() <= MAX_LINE)
    };
    fits(&c.headers) && fits(&c.content_headers)
}
