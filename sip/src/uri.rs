//! SIP/SIPS/TEL URIs. sip: and sips: URIs are split here (RFC 3261 §19.1,
//! RFC 5118 IPv6 references); tel: and the other schemes CPM may carry
//! (mailto:, wv: ...) are kept as opaque text so the router can reject or
//! interwork them (004 §5.3.1.2.3).

use std::fmt;

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use crate::decimal::decimal;
use crate::text::{find_byte, rfind_byte, trim};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UriError {
    #[error("URI has no scheme: {0}")]
    NoScheme(String),
    #[error("malformed SIP URI: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// Lower-case scheme: `sip`, `sips`, `tel`, or anything else.
    pub scheme: String,
    pub user: Option<String>,
    /// The password of `sip:user:password@host` (deprecated, RFC 3261 §19.1.1;
    /// kept so the URI serializes as received).
    pub password: Option<String>,
    /// Lower-case host (IPv6 in brackets); empty for non-SIP schemes.
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters as written (`transport`, `gr`, `lr` ...).
    pub params: Vec<(String, Option<String>)>,
    /// Whatever follows the scheme, for schemes we do not type.
    pub opaque: Option<String>,
}

impl SipUri {
    pub fn parse(text: &str) -> Result<SipUri, UriError> {
        let text = trim(text);
        let colon = find_byte(b':', text.as_bytes()).ok_or_else(|| UriError::NoScheme(text.to_string()))?;
        let (scheme, rest) = (&text[..colon], &text[colon + 1..]);
        // Lower-casing keeps every byte's class: check before copying.
        if scheme.is_empty() || !scheme.bytes().all(|b| has_class(b, SCHEME)) {
            return Err(UriError::NoScheme(text.to_string()));
        }
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "sip" | "sips" => Self::parse_sip(scheme, text),
            "tel" => {
                let (number, params) = split_uri_params(rest);
                if number.is_empty() {
                    return Err(UriError::Malformed(text.to_string()));
                }
                Ok(SipUri {
                    scheme,
                    user: Some(number.to_string()),
                    password: None,
                    host: String::new(),
                    port: None,
                    params,
                    opaque: None,
                })
            }
            _ => Ok(SipUri {
                scheme,
                user: None,
                password: None,
                host: String::new(),
                port: None,
                params: Vec::new(),
                opaque: Some(rest.to_string()),
            }),
        }
    }

    /// `sip:` / `sips:` URIs (RFC 3261 §19.1.1, RFC 5118). Our own splitter:
    /// rsip rejects IPv6 references and `;` in the user part, and cuts
    /// values such as `gr=urn:uuid:...` at ':'.
    ///
    /// * userinfo ends at the last `@` (none may appear unescaped after it);
    ///   when the URI has a `?headers` part that itself contains `@`, the
    ///   userinfo `@` is looked for before the first `?` (a `?` is legal in
    ///   the user part, RFC 4475 §3.1.1.2). The user part keeps its escapes,
    ///   except that escaped unreserved characters are decoded and the hex
    ///   digits of the others upper-cased (RFC 3261 §19.1.4 equivalence).
    /// * host: a domain name or IPv4 address (lower-cased), or an IPv6
    ///   reference (canonical form; the `:::` form of RFC 5118 §4.10 is
    ///   tolerated and read as `::`).
    /// * `?headers` are dropped: they are never used in a request we send.
    fn parse_sip(scheme: String, text: &str) -> Result<SipUri, UriError> {
        let malformed = || UriError::Malformed(text.to_string());
        let rest = &text[scheme.len() + 1..];
        // One pass tells which rare cases (bad or non-ASCII bytes, `?`, `%`)
        // need a look at all.
        let seen = rest.bytes().fold(0, |seen, b| seen | CLASS[b as usize]);
        if seen & FORBIDDEN != 0 {
            return Err(malformed());
        }
        // ASCII controls and whitespace are FORBIDDEN; other chars need the
        // Unicode tables.
        if seen & NON_ASCII != 0 && rest.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(malformed());
        }
        let (userinfo, hostpart) = match Self::userinfo_at(rest.as_bytes(), seen & QUESTION != 0) {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let escapes = seen & PERCENT != 0;
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match find_byte(b':', ui.as_bytes()) {
                    Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                    None => (ui, None),
                };
                let ok = |s: &str, class: u8| {
                    (!escapes || valid_escapes(s)) && s.bytes().all(|b| has_class(b, class | NON_ASCII))
                };
                if u.is_empty() || !ok(u, USER) || !p.is_none_or(|p| ok(p, PASSWORD)) {
                    return Err(malformed());
                }
                let user = if escapes { normalize_escapes(u) } else { u.to_string() };
                (Some(user), p.map(str::to_string))
            }
        };
        let hostpart = match seen & QUESTION {
            0 => hostpart,
            _ => find_byte(b'?', hostpart.as_bytes()).map_or(hostpart, |q| &hostpart[..q]),
        };
        let (hostport, params) = match find_byte(b';', hostpart.as_bytes()) {
            Some(i) => (&hostpart[..i], split_uri_params(&hostpart[i..]).1),
            None => (hostpart, Vec::new()),
        };
        let (host, port) = parse_host_port(hostport).ok_or_else(malformed)?;
        Ok(SipUri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            opaque: None,
        })
    }

    /// Offset of the `@` that ends the userinfo of `rest` (see
    /// [`SipUri::parse_sip`]); `question`: does `rest` hold a `?`.
    fn userinfo_at(bytes: &[u8], question: bool) -> Option<usize> {
        let q = if question { find_byte(b'?', bytes) } else { None };
        match q {
            Some(q) if find_byte(b'@', &bytes[q..]).is_some() && find_byte(b'@', &bytes[..q]).is_some() => {
                rfind_byte(b'@', &bytes[..q])
            }
            _ => rfind_byte(b'@', bytes),
        }
    }

    /// A URI the SIP core can route (sip:, sips:, tel:).
    pub fn is_sip_routable(&self) -> bool {
        matches!(self.scheme.as_str(), "sip" | "sips" | "tel")
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// `transport` parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.param("transport").flatten().map(str::to_ascii_lowercase)
    }

    /// `host:port` with the scheme's default port.
    pub fn host_port(&self) -> String {
        let default = if self.scheme == "sips" { 5061 } else { 5060 };
        format!("{}:{}", self.host, self.port.unwrap_or(default))
    }
}

// Byte classes of a URI, as bits of [`CLASS`]: one table load answers
// several questions about a byte, and an OR over a whole part tells which
// classes occur in it at all.
/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (the first char
/// is not checked to be a letter).
const SCHEME: u8 = 1;
/// unreserved / user-unreserved / `%` (RFC 3261 §25.1 user, with the `;`,
/// `?`, `/`, `#` that RFC 4475 torture tests put there).
const USER: u8 = 1 << 1;
/// unreserved / `%&=+$,` (password).
const PASSWORD: u8 = 1 << 2;
/// A domain name or IPv4 address character.
const HOST: u8 = 1 << 3;
/// Never in a SIP URI: ASCII controls, SP, DEL, `<`, `>`, `"`.
const FORBIDDEN: u8 = 1 << 4;
/// A byte of a non-ASCII char.
const NON_ASCII: u8 = 1 << 5;
const QUESTION: u8 = 1 << 6;
const PERCENT: u8 = 1 << 7;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let alnum = b.is_ascii_alphanumeric();
        let mut c = 0;
        if alnum || matches!(b, b'+' | b'-' | b'.') {
            c |= SCHEME;
        }
        let password = alnum
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')' | b'%' | b'&' | b'=' | b'+' | b'$' | b','
            );
        if password {
            c |= PASSWORD;
        }
        if password || matches!(b, b';' | b'?' | b'/' | b'#') {
            c |= USER;
        }
        if alnum || matches!(b, b'-' | b'.' | b'_') {
            c |= HOST;
        }
        if b <= b' ' || matches!(b, 0x7f | b'<' | b'>' | b'"') {
            c |= FORBIDDEN;
        }
        if !b.is_ascii() {
            c |= NON_ASCII;
        }
        if b == b'?' {
            c |= QUESTION;
        }
        if b == b'%' {
            c |= PERCENT;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Is `b` in any of the classes `class`?
fn has_class(b: u8, class: u8) -> bool {
    CLASS[b as usize] & class != 0
}

fn split_uri_params(rest: &str) -> (&str, Vec<(String, Option<String>)>) {
    let mut parts = rest.split(';');
    let head = parts.next().unwrap_or_default();
    let params = parts
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (p.to_string(), None),
        })
        .collect();
    (head, params)
}

/// `%` is always followed by two hex digits.
fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    if find_byte(b'%', b).is_none() {
        return true;
    }
    b.iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit())
}

/// Decode escaped unreserved characters (`%75` → `u`), upper-case the hex of
/// the escapes that stay. Input has [`valid_escapes`].
fn normalize_escapes(s: &str) -> String {
    if find_byte(b'%', s.as_bytes()).is_none() {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let hex = &rest[i + 1..i + 3];
        match u8::from_str_radix(hex, 16) {
            Ok(b) if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) => out.push(b as char),
            _ => {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

/// `host[:port]`: domain name or IPv4 (lower-cased), or `[IPv6]` (canonical).
fn parse_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(after) = s.strip_prefix('[') {
        let (inner, tail) = after.split_once(']')?;
        let port = match tail {
            "" => None,
            _ => Some(tail.strip_prefix(':')?),
        };
        (format!("[{}]", parse_ipv6(inner)?), port)
    } else {
        let (host, port) = match find_byte(b':', s.as_bytes()) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        if !is_host_name(host) {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Some((host, port))
}

/// A domain name or IPv4 address: HOST bytes, not starting with `.` or `-`,
/// no `..`; one pass.
fn is_host_name(host: &str) -> bool {
    let b = host.as_bytes();
    if b.is_empty() || matches!(b[0], b'.' | b'-') {
        return false;
    }
    let mut prev = 0;
    b.iter().all(|&c| {
        let ok = has_class(c, HOST) && !(c == b'.' && prev == b'.');
        prev = c;
        ok
    })
}

/// 1 to 5 ASCII digits with a value that fits a `u16` (what the `str::parse`
/// it replaces accepted after the same length and digit checks).
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let mut n: u32 = 0;
    for b in p.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    u16::try_from(n).ok()
}

/// An IPv6 address; RFC 5118 §4.10: `2001:db8:::192.0.2.1` (the RFC 3261
/// ABNF bug) must be tolerated and means `2001:db8::192.0.2.1`.
fn parse_ipv6(s: &str) -> Option<std::net::Ipv6Addr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    match s.match_indices(":::").count() {
        1 if !s.contains("::::") => s.replacen(":::", "::", 1).parse().ok(),
        _ => None,
    }
}

impl SipUri {
    /// The pieces of the wire form, in order; [`fmt::Display`], the
    /// serializer and the length check of a Request-URI all use this, so they
    /// cannot disagree.
    fn for_each_part(&self, mut put: impl FnMut(&str)) {
        put(&self.scheme);
        put(":");
        if let Some(opaque) = &self.opaque {
            put(opaque);
            return;
        }
        if let Some(user) = &self.user {
            put(user);
            if let Some(password) = &self.password {
                put(":");
                put(password);
            }
            if !self.host.is_empty() {
                put("@");
            }
        }
        put(&self.host);
        if let Some(port) = self.port {
            put(":");
            put(decimal(port.into(), &mut [0; 20]));
        }
        for (n, v) in &self.params {
            put(";");
            put(n);
            if let Some(v) = v {
                put("=");
                put(v);
            }
        }
    }

    /// `self.to_string().len()`, without building the string.
    pub(crate) fn display_len(&self) -> usize {
        let mut len = 0;
        self.for_each_part(|s| len += s.len());
        len
    }

    /// Append the wire form (as [`fmt::Display`] writes it).
    pub(crate) fn write_to(&self, out: &mut BytesMut) {
        self.for_each_part(|s| out.put_slice(s.as_bytes()));
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut result = Ok(());
        self.for_each_part(|s| {
            if result.is_ok() {
                result = f.write_str(s);
            }
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_fields() {
        let u = SipUri::parse("sip:Bob@Example.COM:5070;transport=TCP;gr=urn:uuid:1").unwrap();
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user.as_deref(), Some("Bob"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        assert_eq!(u.param("gr"), Some(Some("urn:uuid:1")));
        assert_eq!(SipUri::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn tel_and_opaque_schemes() {
        let t = SipUri::parse("tel:+15551234;phone-context=x").unwrap();
        assert_eq!(t.user.as_deref(), Some("+15551234"));
        assert!(t.is_sip_routable());
        let w = SipUri::parse("wv:bob@wireless.example").unwrap();
        assert!(!w.is_sip_routable());
        assert_eq!(w.to_string(), "wv:bob@wireless.example");
    }

    #[test]
    fn bad_uris_are_errors() {
        for bad in [
            "nocolon",
            "sip:",
            ":x",
            "sip:@h",
            "sip:a@",
            "sip:a@h:",
            "sip:a@h:99999",
            "sip:a@h:5x",
            "sip:2001:db8::10",
            "sip:a@[2001:db8::10",
            "sip:a@[2001:db8::10]x",
            "sip:a@[zz::1]",
            "sip:a@[1::2::3]",
            "sip:a b@h",
            "sip:<a@h>",
            "sip:a@h>",
            "sip:a%zz@h",
            "sip:a%4@h",
            "sip:a\u{7}@h",
            "sip:a@b@h",
            "sip:a@.h",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_references() {
        let u = SipUri::parse("sip:[2001:DB8::10]:5070;transport=tcp").unwrap();
        assert_eq!(u.host, "[2001:db8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.host_port(), "[2001:db8::10]:5070");
        // RFC 5118 §4.3: no port, whatever the sender meant.
        let u = SipUri::parse("sip:[2001:db8::10:5070]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[2001:db8::10:5070]", None));
        // RFC 5118 §4.10: the three-colon form is tolerated as `::`.
        let three = SipUri::parse("sip:user@[2001:db8:::192.0.2.1]").unwrap();
        let two = SipUri::parse("sip:user@[2001:db8::192.0.2.1]").unwrap();
        assert_eq!(three, two);
        assert_eq!(SipUri::parse(&three.to_string()).unwrap(), three);
        let u = SipUri::parse("sip:a@[::ffff:192.0.2.10]").unwrap();
        assert_eq!(u.host, "[::ffff:192.0.2.10]");
    }

    #[test]
    fn user_parts() {
        // RFC 4475 §3.1.1.9: `;` belongs to the user part before `@`.
        let u = SipUri::parse("sip:user;par=u%40example.net@example.com;lr").unwrap();
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.params, vec![("lr".to_string(), None)]);
        // `?` in the user part, then a password (RFC 4475 §3.1.1.2).
        let u = SipUri::parse("sip:a?,/;;*:p&w=1@h.example").unwrap();
        assert_eq!(u.user.as_deref(), Some("a?,/;;*"));
        assert_eq!(u.password.as_deref(), Some("p&w=1"));
        assert_eq!(u.to_string(), "sip:a?,/;;*:p&w=1@h.example");
        // `@` inside escaped headers does not move the userinfo boundary.
        let u = SipUri::parse("sip:bob@example.com?Replaces=call@host").unwrap();
        assert_eq!((u.user.as_deref(), u.host.as_str()), (Some("bob"), "example.com"));
        assert_eq!(u.to_string(), "sip:bob@example.com");
        // Escaped unreserved characters are the characters (RFC 3261 §19.1.4);
        // the others stay escaped, hex upper-cased.
        let u = SipUri::parse("sip:%75se%72%3a%00x@example.com").unwrap();
        assert_eq!(u.user.as_deref(), Some("user%3A%00x"));
        // Host forms.
        assert_eq!(
            SipUri::parse("sip:a@Host_1.Example.COM.").unwrap().host,
            "host_1.example.com."
        );
        assert_eq!(SipUri::parse("sips:10.0.0.1:05061").unwrap().port, Some(5061));
    }

    #[test]
    fn display_reparses_to_the_same_uri() {
        for s in [
            "sip:a@b",
            "sips:u:pw@[2001:db8::1]:5061;transport=tls;lr;gr=urn:uuid:1",
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
            "sip:user;par=u%40example.net@example.com",
            "sip:host.example;a=b=c;;=x;[::1]",
            "tel:+1-555;phone-context=x",
            "soap.beep://192.0.2.103:3002",
        ] {
            let u = SipUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(SipUri::parse(&u.to_string()).unwrap(), u, "{s}");
            let mut out = BytesMut::new();
            u.write_to(&mut out);
            assert_eq!(&out[..], u.to_string().as_bytes(), "{s}");
            assert_eq!(u.display_len(), u.to_string().len(), "{s}");
        }
    }

    /// The parser before its byte-class table, kept as the reference.
    mod old {
        use super::super::{normalize_escapes, parse_ipv6, split_uri_params, valid_escapes};
        use super::super::{SipUri, UriError};
        use crate::text::{find_byte, rfind_byte};

        pub fn parse(text: &str) -> Result<SipUri, UriError> {
            let text = text.trim();
            let colon = find_byte(b':', text.as_bytes()).ok_or_else(|| UriError::NoScheme(text.to_string()))?;
            let scheme = text[..colon].to_ascii_lowercase();
            if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
                return Err(UriError::NoScheme(text.to_string()));
            }
            match scheme.as_str() {
                "sip" | "sips" => parse_sip(scheme, text),
                // tel: and opaque URIs did not change: the parser under test.
                _ => SipUri::parse(text),
            }
        }

        fn parse_sip(scheme: String, text: &str) -> Result<SipUri, UriError> {
            let malformed = || UriError::Malformed(text.to_string());
            let rest = &text[scheme.len() + 1..];
            let bad_char = rest
                .bytes()
                .any(|b| b <= b' ' || b == 0x7f || matches!(b, b'<' | b'>' | b'"'))
                || (!rest.is_ascii() && rest.chars().any(|c| c.is_control() || c.is_whitespace()));
            if bad_char {
                return Err(malformed());
            }
            let bytes = rest.as_bytes();
            let at = match find_byte(b'?', bytes) {
                Some(q) if find_byte(b'@', &bytes[q..]).is_some() && find_byte(b'@', &bytes[..q]).is_some() => {
                    rfind_byte(b'@', &bytes[..q])
                }
                _ => rfind_byte(b'@', bytes),
            };
            let (userinfo, hostpart) = match at {
                Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
                None => (None, rest),
            };
            let (user, password) = match userinfo {
                None => (None, None),
                Some(ui) => {
                    let (u, p) = match find_byte(b':', ui.as_bytes()) {
                        Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                        None => (ui, None),
                    };
                    let ok = |s: &str, user: bool| {
                        valid_escapes(s)
                            && s.bytes().all(|b| {
                                !b.is_ascii()
                                    || b.is_ascii_alphanumeric()
                                    || b"-_.!~*'()%&=+$,".contains(&b)
                                    || (user && b";?/#".contains(&b))
                            })
                    };
                    if u.is_empty() || !ok(u, true) || !p.is_none_or(|p| ok(p, false)) {
                        return Err(malformed());
                    }
                    (Some(normalize_escapes(u)), p.map(str::to_string))
                }
            };
            let hostpart = find_byte(b'?', hostpart.as_bytes()).map_or(hostpart, |q| &hostpart[..q]);
            let (hostport, params) = match find_byte(b';', hostpart.as_bytes()) {
                Some(i) => (&hostpart[..i], split_uri_params(&hostpart[i..]).1),
                None => (hostpart, Vec::new()),
            };
            let (host, port) = parse_host_port(hostport).ok_or_else(malformed)?;
            Ok(SipUri {
                scheme,
                user,
                password,
                host,
                port,
                params,
                opaque: None,
            })
        }

        fn parse_host_port(s: &str) -> Option<(String, Option<u16>)> {
            let (host, port) = if let Some(after) = s.strip_prefix('[') {
                let (inner, tail) = after.split_once(']')?;
                let port = match tail {
                    "" => None,
                    _ => Some(tail.strip_prefix(':')?),
                };
                (format!("[{}]", parse_ipv6(inner)?), port)
            } else {
                let (host, port) = match find_byte(b':', s.as_bytes()) {
                    Some(i) => (&s[..i], Some(&s[i + 1..])),
                    None => (s, None),
                };
                let ok = !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                    && !host.starts_with(['.', '-'])
                    && !host.as_bytes().windows(2).any(|w| w == b"..");
                if !ok {
                    return None;
                }
                (host.to_ascii_lowercase(), port)
            };
            let port = match port {
                None => None,
                Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                    Some(p.parse().ok()?)
                }
                Some(_) => return None,
            };
            Some((host, port))
        }
    }

    /// Random URIs built from the pieces that steer the parser: the same
    /// result (fields or error) as the reference.
    #[test]
    fn parse_matches_reference() {
        const SCHEMES: &[&str] = &[
            "sip:", "SIPS:", "sIp:", "tel:", "x+y.z-1:", "", ":", "s\u{e9}:", "sip :",
        ];
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "u1",
            "0",
            "5",
            "@",
            "@",
            ":",
            ":",
            ";",
            "?",
            "%",
            "%4",
            "%41",
            "%3a",
            "%zz",
            "[",
            "]",
            "::",
            ":::",
            ".",
            "..",
            "-",
            "_",
            " ",
            "\t",
            "\r\n",
            "<",
            ">",
            "\"",
            "\u{e9}",
            "\u{85}",
            "\u{a0}",
            "\u{2028}",
            "5060",
            "65535",
            "65536",
            "99999",
            "012345",
            "=",
            "&",
            "#",
            "/",
            "!",
            "~",
            "*",
            "'",
            "(",
            ")",
            "$",
            ",",
            "+",
            "\u{7}",
            "\u{7f}",
            "127.0.0.1",
            "Example.COM",
            "2001:db8::1",
            "[::1]",
            "lr",
            "transport=TCP",
        ];
        let mut rng = crate::cpim::mutate::XorShift(0x5eed_0f01_2345_6789);
        let mut accepted = 0;
        for _ in 0..200_000 {
            let mut s = String::from(SCHEMES[rng.below(SCHEMES.len())]);
            for _ in 0..rng.below(9) {
                s.push_str(PIECES[rng.below(PIECES.len())]);
            }
            let want = old::parse(&s);
            accepted += usize::from(want.is_ok());
            assert_eq!(SipUri::parse(&s), want, "{s:?}");
        }
        assert!(accepted > 10_000, "{accepted}");
    }
}
