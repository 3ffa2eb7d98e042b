//! Server nonces: self-validating, expiring, with nonce-count replay
//! protection.
//!
//! A nonce is `hex(issued (u64 BE) ‖ salt (8 random bytes) ‖ mac)` where mac
//! is the first 16 bytes of HMAC-SHA-256(secret, issued ‖ salt) under a
//! secret drawn at process start. Issuing one stores nothing; a restart
//! invalidates every outstanding nonce (the client is simply challenged
//! again). Only a nonce that carried a valid response gets an entry, holding
//! the highest nonce-count seen, and only until the nonce expires.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::digest::{ct_eq, to_hex};

const MAC_LEN: usize = 16;
const RAW_LEN: usize = 8 + 8 + MAC_LEN;
/// Nonces tracked for nonce-counts at most; a valid response on a nonce
/// that finds no room gets a fresh challenge instead.
const MAX_TRACKED: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and within its lifetime; `issued` is its timestamp.
    Fresh { issued: u64 },
    /// Ours but older than the lifetime: challenge again with `stale=true`.
    Stale,
    /// Not ours (forged, corrupted, or from before a restart).
    Invalid,
}

pub struct Nonces {
    secret: [u8; 32],
    ttl_s: u64,
    /// nonce -> (issued, highest nc seen).
    seen: Mutex<HashMap<String, (u64, u32)>>,
}

impl Nonces {
    pub fn new(ttl_s: u64) -> Nonces {
        let mut secret = [0u8; 32];
        fill_random(&mut secret);
        Nonces {
            secret,
            ttl_s,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(data);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    pub fn issue(&self, now: u64) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[..8].copy_from_slice(&now.to_be_bytes());
        fill_random(&mut raw[8..16]);
        let mac = self.mac(&raw[..16]);
        raw[16..].copy_from_slice(&mac);
        to_hex(&raw)
    }

    pub fn check(&self, nonce: &str, now: u64) -> NonceCheck {
        let Some(raw) = from_hex(nonce).filter(|r| r.len() == RAW_LEN) else {
            return NonceCheck::Invalid;
        };
        if !ct_eq(&self.mac(&raw[..16]), &raw[16..]) {
            return NonceCheck::Invalid;
        }
        let issued = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        if issued > now.saturating_add(1) {
            return NonceCheck::Invalid;
        }
        if now - issued.min(now) > self.ttl_s {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh { issued }
        }
    }

    /// Records nonce-count `nc` on a fresh nonce. False when `nc` is not
    /// above every count already used with this nonce (a replay), or when
    /// no more nonces can be tracked.
    pub fn use_count(&self, nonce: &str, issued: u64, nc: u32, now: u64) -> bool {
        let mut seen = crate::lock(&self.seen);
        if let Some((_, highest)) = seen.get_mut(nonce) {
            if nc <= *highest {
                return false;
            }
            *highest = nc;
            return true;
        }
        if seen.len() >= MAX_TRACKED {
            let ttl = self.ttl_s;
            seen.retain(|_, (t, _)| now.saturating_sub(*t) <= ttl);
            if seen.len() >= MAX_TRACKED {
                return false;
            }
        }
        seen.insert(nonce.to_string(), (issued, nc));
        true
    }

    /// Drops the counts of expired nonces (they are refused as stale anyway).
    pub fn sweep(&self, now: u64) {
        let ttl = self.ttl_s;
        let mut seen = crate::lock(&self.seen);
        seen.retain(|_, (t, _)| now.saturating_sub(*t) <= ttl);
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// OS randomness; a process that cannot get any must not hand out
/// guessable nonces, so this panics at start rather than degrade.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("OS random number generator");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_nonce_checks_and_expires() {
        let n = Nonces::new(300);
        let a = n.issue(1000);
        assert_eq!(a.len(), RAW_LEN * 2);
        assert_ne!(a, n.issue(1000), "salted");
        assert_eq!(n.check(&a, 1000), NonceCheck::Fresh { issued: 1000 });
        assert_eq!(n.check(&a, 1300), NonceCheck::Fresh { issued: 1000 });
        assert_eq!(n.check(&a, 1301), NonceCheck::Stale);
        assert_eq!(n.check(&a, 900), NonceCheck::Invalid, "from the future");
    }

    #[test]
    fn forged_or_foreign_nonces_are_invalid() {
        let n = Nonces::new(300);
        let other = Nonces::new(300);
        let a = n.issue(1000);
        assert_eq!(other.check(&a, 1000), NonceCheck::Invalid, "another secret");
        let mut b = a.clone().into_bytes();
        b[3] = if b[3] == b'0' { b'1' } else { b'0' }; // move the timestamp
        assert_eq!(n.check(std::str::from_utf8(&b).unwrap(), 1000), NonceCheck::Invalid);
        for bad in ["", "zz", "abc", &a[..10], "é"] {
            assert_eq!(n.check(bad, 1000), NonceCheck::Invalid, "{bad}");
        }
    }

    #[test]
    fn nonce_count_must_increase() {
        let n = Nonces::new(300);
        let a = n.issue(1000);
        assert!(n.use_count(&a, 1000, 1, 1000));
        assert!(!n.use_count(&a, 1000, 1, 1000), "replay");
        assert!(n.use_count(&a, 1000, 3, 1001));
        assert!(!n.use_count(&a, 1000, 2, 1001), "lower");
        n.sweep(1200);
        assert_eq!(n.tracked(), 1);
        n.sweep(1301);
        assert_eq!(n.tracked(), 0);
    }
}
