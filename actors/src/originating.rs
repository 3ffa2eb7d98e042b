//! Originating-side rewriting of a pager-mode message before it reaches the
//! recipient's PF: conversation identities filled in when the client left
//! them out, and anonymity (RFC 3323) applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use cpm_sip::cpim::{Cpim, DispositionRequest};
use cpm_sip::Message;

use crate::Aor;

/// What recipients see instead of an anonymous sender's identity.
pub const ANONYMOUS_URI: &str = "sip:anonymous@anonymous.invalid";

/// Conversation-ID and Contribution-ID (CPM conversation threading).
///
/// Rule (docs/decisions.md): a missing Conversation-ID is derived from the
/// two CPM Addresses, order-independent, so both directions of a one-to-one
/// exchange land in the same conversation; a missing Contribution-ID is new
/// for every message. InReplyTo-Contribution-ID is never invented. Values a
/// client set pass through unchanged.
pub fn fill_conversation_ids(req: &mut Message, sender: &Aor, target: &Aor) {
    if req.header("Conversation-ID").is_none() {
        let (a, b) = if sender <= target {
            (sender, target)
        } else {
            (target, sender)
        };
        let key = [a.as_str().as_bytes(), b"|", b.as_str().as_bytes()];
        let (h1, h2) = key
            .iter()
            .fold((0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142), |h, part| {
                fnv1a2(part, h)
            });
        let mut id = String::with_capacity(32);
        push_hex(&mut id, h1.into(), 16);
        push_hex(&mut id, h2.into(), 16);
        req.headers.push("Conversation-ID", id);
    }
    if req.header("Contribution-ID").is_none() {
        req.headers.push("Contribution-ID", unique_id());
    }
}

/// FNV-1a of `data` from two seeds at once: one pass over the bytes.
fn fnv1a2(data: &[u8], seeds: (u64, u64)) -> (u64, u64) {
    const PRIME: u64 = 0x0100_0000_01b3;
    data.iter().fold(seeds, |(a, b), byte| {
        let x = u64::from(*byte);
        ((a ^ x).wrapping_mul(PRIME), (b ^ x).wrapping_mul(PRIME))
    })
}

/// A process-unique, time-prefixed identifier: nanos, pid and a counter in hex.
pub fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // The pid once: std::process::id() is a getpid system call each time.
    static PID: OnceLock<u32> = OnceLock::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut id = String::with_capacity(48);
    push_hex(&mut id, nanos, 1);
    push_hex(&mut id, (*PID.get_or_init(std::process::id)).into(), 1);
    push_hex(&mut id, COUNTER.fetch_add(1, Ordering::Relaxed).into(), 1);
    id
}

/// `v` in lower-case hex, zero-padded to `min_digits` (at most 32): what
/// `{:0N$x}` writes, without format!'s machinery. Two digits a byte, then
/// one `push_str`: a digit-by-digit loop over the u128 with a `push` per
/// digit cost about 430 instructions for 16 digits (callgrind), five
/// times a message.
fn push_hex(out: &mut String, v: u128, min_digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (128 - v.leading_zeros()).div_ceil(4).max(min_digits).min(32) as usize;
    let mut buf = [0u8; 32];
    // Only the bytes that hold the digits written.
    let first = 16 - digits.div_ceil(2);
    for (pair, &byte) in buf[2 * first..].chunks_exact_mut(2).zip(&v.to_be_bytes()[first..]) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(&buf[32 - digits..]).unwrap_or_default());
}

/// Remove every trace of the sender's identity the recipient could see, and
/// its disposition requests (no reports go to anonymous senders).
pub fn anonymize(req: &mut Message) {
    let tag = req
        .from()
        .ok()
        .and_then(|f| f.tag().map(str::to_string))
        .unwrap_or_else(unique_id);
    req.headers
        .set("From", format!("\"Anonymous\" <{ANONYMOUS_URI}>;tag={tag}"));
    for h in [
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Reply-To",
        "Contact",
        "Referred-By",
    ] {
        req.headers.remove_all(h);
    }
    if req.content_type_is("message/cpim") {
        if let Ok(mut cpim) = Cpim::parse_bytes(&req.body) {
            cpim.set_header("From", &format!("<{ANONYMOUS_URI}>"));
            cpim.set_disposition_request(DispositionRequest::default());
            req.body = cpim.to_bytes();
        } else {
            // A CPIM body we cannot read may carry the identity: drop it.
            req.body = Bytes::new();
            req.headers.remove_all("Content-Type");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(extra: &str, body: &str) -> Message {
        let raw = format!(
            "MESSAGE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: \"Alice\" <sip:alice@x>;tag=a1\r\n\
             To: <sip:bob@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Message::parse(Bytes::from(raw)).unwrap()
    }

    #[test]
    fn conversation_ids_are_filled_and_kept() {
        let (a, b) = (Aor::from_canonical("sip:alice@x"), Aor::from_canonical("sip:bob@x"));
        let mut m1 = msg("", "");
        fill_conversation_ids(&mut m1, &a, &b);
        let mut m2 = msg("", "");
        fill_conversation_ids(&mut m2, &b, &a);
        assert_eq!(
            m1.header("Conversation-ID"),
            m2.header("Conversation-ID"),
            "both directions, one conversation"
        );
        assert_ne!(m1.header("Contribution-ID"), m2.header("Contribution-ID"));
        let mut m3 = msg("Conversation-ID: mine\r\nContribution-ID: c1\r\n", "");
        fill_conversation_ids(&mut m3, &a, &b);
        assert_eq!(m3.header("Conversation-ID"), Some("mine"));
        assert_eq!(m3.header("Contribution-ID"), Some("c1"));
    }

    #[test]
    fn conversation_id_is_the_two_fnv1a_hashes_of_the_sorted_pair() {
        // The value clients and stored messages already hold: it must not change.
        let fnv = |seed: u64, text: &str| {
            text.bytes()
                .fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
        };
        let (a, b) = (Aor::from_canonical("sip:alice@x"), Aor::from_canonical("sip:bob@x"));
        let pair = format!("{}|{}", a.as_str(), b.as_str());
        let want = format!(
            "{:016x}{:016x}",
            fnv(0xcbf2_9ce4_8422_2325, &pair),
            fnv(0x6c62_272e_07bb_0142, &pair)
        );
        let mut m = msg("", "");
        fill_conversation_ids(&mut m, &b, &a);
        assert_eq!(m.header("Conversation-ID"), Some(want.as_str()));
    }

    #[test]
    fn hex_as_format_writes_it() {
        for v in [
            0u128,
            1,
            0xf,
            0x10,
            0xabc,
            0xdead_beef,
            u128::from(u64::MAX),
            u128::MAX,
            1 << 100,
        ] {
            let mut s = String::new();
            push_hex(&mut s, v, 1);
            assert_eq!(s, format!("{v:x}"));
            let mut s = String::new();
            push_hex(&mut s, v, 16);
            assert_eq!(s, format!("{v:016x}"));
            let mut s = String::from("x");
            push_hex(&mut s, v, 7);
            assert_eq!(s, format!("x{v:07x}"));
        }
    }

    #[test]
    fn anonymous_sender_leaves_no_identity() {
        let cpim = "From: Alice <sip:alice@x>\r\nTo: <sip:bob@x>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
                    imdn.Message-ID: m1\r\nimdn.Disposition-Notification: positive-delivery, display\r\n\r\n\
                    Content-Type: text/plain\r\n\r\nhi";
        let mut m = msg(
            "Content-Type: message/cpim\r\nP-Preferred-Identity: <sip:alice@x>\r\nPrivacy: id\r\n",
            cpim,
        );
        anonymize(&mut m);
        let text = String::from_utf8_lossy(&m.to_bytes()).into_owned();
        assert!(!text.to_lowercase().contains("alice"), "{text}");
        assert!(!text.contains("Disposition-Notification"), "{text}");
        assert!(text.contains("tag=a1"), "the dialog tag is kept");
    }
}
