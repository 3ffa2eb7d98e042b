//! Digest computations and header syntax: RFC 2617 (qop=auth), RFC 3261
//! §22.4, RFC 8760 (SHA-256 next to MD5).

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// The digest algorithms that can be offered (`[auth] algorithms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Algorithm {
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "MD5")]
    Md5,
}

impl Algorithm {
    /// Challenged in this order by default (RFC 8760 §2.4: most preferred first).
    pub const OFFERED: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    /// The `algorithm` parameter of a response; absent means MD5 (RFC 2617).
    /// The `-sess` variants are not offered, so not accepted.
    pub fn from_param(p: Option<&str>) -> Option<Algorithm> {
        match p.map(str::trim) {
            None => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }

    /// Lower-case hex of the hash of `data`.
    pub fn hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Sha256 => to_hex(&Sha256::digest(data)),
            Algorithm::Md5 => to_hex(&Md5::digest(data)),
        }
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// HA1 = H(username:realm:password).
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hex(format!("{username}:{realm}:{password}").as_bytes())
}

/// The expected `response` for qop=auth:
/// H(HA1:nonce:nc:cnonce:qop:H(method:uri)).
pub fn response(alg: Algorithm, ha1: &str, nonce: &str, nc: &str, cnonce: &str, method: &str, uri: &str) -> String {
    let ha2 = alg.hex(format!("{method}:{uri}").as_bytes());
    alg.hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}").as_bytes())
}

/// Equality that takes the same time wherever the first difference is.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` value.
pub fn challenge(alg: Algorithm, realm: &str, nonce: &str, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!(
        "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
        quote_escape(realm),
        alg.name()
    )
}

fn quote_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The parameters of a `Digest` credentials header, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

/// Parses `Digest username="..", realm="..", ...`. None when it is not a
/// Digest header or a mandatory parameter is missing or malformed.
pub fn parse_credentials(value: &str) -> Option<Credentials> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut c = Credentials::default();
    let (mut username, mut realm, mut nonce, mut uri, mut response) = (None, None, None, None, None);
    for (k, v) in parse_params(rest)? {
        let slot = match k.to_ascii_lowercase().as_str() {
            "username" => &mut username,
            "realm" => &mut realm,
            "nonce" => &mut nonce,
            "uri" => &mut uri,
            "response" => &mut response,
            "algorithm" => &mut c.algorithm,
            "qop" => &mut c.qop,
            "nc" => &mut c.nc,
            "cnonce" => &mut c.cnonce,
            _ => continue, // opaque, auth-param: not used
        };
        if slot.is_some() {
            return None; // a repeated parameter is ambiguous
        }
        *slot = Some(v);
    }
    c.username = username?;
    c.realm = realm?;
    c.nonce = nonce?;
    c.uri = uri?;
    c.response = response?;
    Some(c)
}

/// `k=v, k="quoted \" v", ...` (RFC 2617 §1.2 auth-params).
fn parse_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_ascii_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => val.push(chars.next()?),
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_ascii_whitespace() {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((key, val));
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example_response() {
        // RFC 2617 §3.5 (GET, MD5, qop=auth).
        let ha1 = ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        let r = response(
            Algorithm::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_sha256_example_response() {
        // RFC 7616 §3.9.1 (the SHA-256 of RFC 8760, same computation).
        let ha1 = ha1(Algorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life");
        let r = response(
            Algorithm::Sha256,
            &ha1,
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    }

    #[test]
    fn parses_credentials() {
        let c = parse_credentials(
            "Digest username=\"alice\",realm=\"example.com\", nonce=\"abc\", uri=\"sip:bob@example.com\", \
             response=\"00ff\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"x\\\"y, z\", opaque=\"\"",
        )
        .unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.uri, "sip:bob@example.com");
        assert_eq!(c.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(c.cnonce.as_deref(), Some("x\"y, z"));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        for bad in [
            "Basic abc",
            "Digest",
            "Digest username=\"a\"",
            "Digest username=\"a, realm=\"r\"",
            "Digest username=\"a\" realm=\"r\"",
            "Digest username=a, username=b, realm=r, nonce=n, uri=u, response=x",
        ] {
            assert!(parse_credentials(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn algorithms_and_compare() {
        assert_eq!(Algorithm::from_param(None), Some(Algorithm::Md5));
        assert_eq!(Algorithm::from_param(Some("sha-256")), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::from_param(Some("MD5-sess")), None);
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        let ch = challenge(Algorithm::Sha256, "ex\"ample", "n", true);
        assert_eq!(
            ch,
            "Digest realm=\"ex\\\"ample\", nonce=\"n\", algorithm=SHA-256, qop=\"auth\", stale=true"
        );
    }
}
