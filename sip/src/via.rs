//! The Via header (RFC 3261 §20.42): transactions are keyed on its branch and
//! responses routed by its sent-by, `received` and `rport` (RFC 3581).

use std::borrow::Cow;

use crate::params::{find_param, split_params, Param};
use crate::text::{find_any, find_byte, has_whitespace, rfind_byte, trim};
use crate::ParseError;

/// RFC 3261 branch prefix that marks a globally unique branch.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-case transport: UDP, TCP, TLS, SCTP, WS ... (the usual ones
    /// without an allocation).
    pub transport: Cow<'static, str>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

impl Via {
    /// Parse one Via value (the first of a comma-separated line).
    pub fn parse(value: &str) -> Result<Via, ParseError> {
        let first = first_entry(value);
        let head = Head::parse(&first)?;
        let params = split_params(head.params).map_err(|_| ParseError::Invalid("Via"))?;
        Ok(Via {
            transport: upper_transport(head.transport),
            // An IPv6 reference as written; a name in lower case.
            host: match head.host.starts_with('[') {
                true => head.host.to_string(),
                false => head.host.to_ascii_lowercase(),
            },
            port: head.port,
            params,
        })
    }

    /// The `branch` of the first Via value of a header line, checked as
    /// [`Via::parse`] checks it but without building the Via: all that a
    /// response is matched by. `None` when it has none (or a bare flag).
    pub fn branch_of(value: &str) -> Result<Option<Cow<'_, str>>, ParseError> {
        fn branch(first: &str) -> Result<Option<Cow<'_, str>>, ParseError> {
            let head = Head::parse(first)?;
            let found = find_param(head.params, "branch").map_err(|_| ParseError::Invalid("Via"))?;
            Ok(found.flatten())
        }
        match first_entry(value) {
            Cow::Borrowed(first) => branch(first),
            Cow::Owned(first) => Ok(branch(&first)?.map(|b| Cow::Owned(b.into_owned()))),
        }
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    /// Does the branch carry the RFC 3261 magic cookie (unique per transaction)?
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(BRANCH_COOKIE))
    }

    /// `host:port` as sent (default port 5060).
    pub fn sent_by(&self) -> String {
        format!("{}:{}", self.host, self.port.unwrap_or(5060))
    }
}

/// The first entry of a Via line, trimmed. RFC 4475 allows LWS around the
/// slashes of the sent-protocol: squeezed out, in a copy made only then
/// (rare).
fn first_entry(value: &str) -> Cow<'_, str> {
    let (first, maybe_squeeze) = first_of_list_scan(value);
    let first = trim(first);
    if !(maybe_squeeze && needs_squeeze(first)) {
        return Cow::Borrowed(first);
    }
    let mut text = first.replace(['\t'], " ");
    while text.contains(" /") || text.contains("/ ") {
        text = text.replace(" /", "/").replace("/ ", "/");
    }
    Cow::Owned(text)
}

/// One Via value cut into its parts, before anything is copied.
struct Head<'a> {
    transport: &'a str,
    host: &'a str,
    port: Option<u16>,
    /// `;branch=...;rport`, not yet read.
    params: &'a str,
}

impl Head<'_> {
    /// `first`: trimmed, LWS around the slashes already squeezed.
    fn parse(first: &str) -> Result<Head<'_>, ParseError> {
        let bad = || ParseError::Invalid("Via");
        let space = find_byte(b' ', first.as_bytes()).ok_or_else(bad)?;
        let (proto, rest) = (&first[..space], &first[space + 1..]);
        let transport = sent_protocol_transport(proto).ok_or_else(bad)?;
        let rest = trim(rest);
        let (sent_by, params) = match find_byte(b';', rest.as_bytes()) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(trim(sent_by)).ok_or_else(bad)?;
        Ok(Head {
            transport,
            host,
            port,
            params,
        })
    }
}

/// The transport of a sent-protocol `SIP/2.0/UDP` (name any case, LWS
/// around the slashes already squeezed to nothing but other whitespace
/// trimmed); `None` unless it has exactly three parts, `SIP`, `2.0` and a
/// non-empty transport.
fn sent_protocol_transport(proto: &str) -> Option<&str> {
    let b = proto.as_bytes();
    let first = find_byte(b'/', b)?;
    let second = first + 1 + find_byte(b'/', &b[first + 1..])?;
    let name = trim(&proto[..first]);
    let version = trim(&proto[first + 1..second]);
    let transport = trim(&proto[second + 1..]);
    let valid = name.eq_ignore_ascii_case("SIP")
        && version == "2.0"
        && !transport.is_empty()
        && find_byte(b'/', transport.as_bytes()).is_none();
    valid.then_some(transport)
}

/// `transport` in upper case; a static name for the registered ones.
fn upper_transport(transport: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 6] = ["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"];
    match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(transport)) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(transport.to_ascii_uppercase()),
    }
}

/// Does `s` hold a tab, `" /"` or `"/ "`? (A Via has two or three slashes:
/// look beside those instead of at every pair of bytes.)
fn needs_squeeze(s: &str) -> bool {
    let b = s.as_bytes();
    memchr::memchr(b'\t', b).is_some()
        || memchr::memchr_iter(b'/', b).any(|i| (i > 0 && b[i - 1] == b' ') || b.get(i + 1) == Some(&b' '))
}

/// First element of a comma-separated header line, ignoring commas in quotes.
pub(crate) fn first_of_list(value: &str) -> &str {
    first_of_list_scan(value).0
}

/// [`first_of_list`], and whether the element holds a tab or a space beside
/// a `/`: when not, nothing of it [`needs_squeeze`]. One pass for both,
/// eight bytes a step; byte-wise, as `"` and `,` are ASCII, so the cut is a
/// char boundary. Spaces are looked at rather than slashes: a Via has
/// fewer of them.
fn first_of_list_scan(value: &str) -> (&str, bool) {
    let b = value.as_bytes();
    let (mut quoted, mut squeeze) = (false, false);
    let mut from = 0;
    while let Some(i) = find_any(b, from, [b'"', b',', b' ', b'\t']) {
        match b[i] {
            b'"' => quoted = !quoted,
            b',' if !quoted => return (&value[..i], squeeze),
            b',' => {}
            b'\t' => squeeze = true,
            _ => squeeze |= (i > 0 && b[i - 1] == b'/') || b.get(i + 1) == Some(&b'/'),
        }
        from = i + 1;
    }
    (value, squeeze)
}

/// Count the Via entries in one header line.
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        let first = first_of_list(rest);
        out.push(first.trim());
        if first.len() == rest.len() {
            return out;
        }
        rest = &rest[first.len() + 1..];
    }
}

/// `host[:port]` or `[v6]:port`: the host as written (brackets kept).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(after) = s.strip_prefix('[') {
        let end = find_byte(b']', after.as_bytes())?;
        let tail = &after[end + 1..];
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(trim(p).parse().ok()?),
            None if trim(tail).is_empty() => None,
            None => return None,
        };
        return Some((&s[..end + 2], port));
    }
    let (host, port) = match rfind_byte(b':', s.as_bytes()) {
        Some(i) => (trim(&s[..i]), Some(trim(&s[i + 1..]).parse().ok()?)),
        None => (s, None),
    };
    if host.is_empty() || has_whitespace(host) {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `branch_of` reads what `parse` reads: the same branch, and an error
    /// for the same values (mutations of real ones, squeezing included).
    #[test]
    fn branch_of_agrees_with_parse() {
        let seeds = [
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK77;rport, SIP/2.0/TCP x",
            "SIP / 2.0 / TCP [2001:db8::1]:5061 ; BRANCH = z9hG4bKx",
            "SIP/2.0/UDP h;branch;branch=second",
            "SIP/2.0/UDP h;received=1.2.3.4;branch=\"q;u,o\\\"ted\";rport=5",
            "SIP/2.0/UDP h",
            "SIP/2.0/TLS Host.Example.COM:5061;maddr=x;branch=z9hG4bK-a.b_c",
        ];
        let mut rng = crate::cpim::mutate::XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut accepted, mut refused) = (0, 0);
        for seed in seeds {
            for i in 0..2_000 {
                let bytes = if i == 0 {
                    seed.as_bytes().to_vec()
                } else {
                    rng.mutate(seed.as_bytes())
                };
                let Ok(value) = std::str::from_utf8(&bytes) else {
                    continue;
                };
                let full = Via::parse(value).map(|v| v.branch().map(str::to_string));
                let fast = Via::branch_of(value).map(|b| b.map(Cow::into_owned));
                assert_eq!(fast.is_ok(), full.is_ok(), "{value:?}");
                assert_eq!(fast.ok(), full.as_ref().ok().cloned(), "{value:?}");
                if full.is_ok() {
                    accepted += 1
                } else {
                    refused += 1
                }
            }
        }
        assert!(accepted > 1_000 && refused > 1_000, "{accepted} {refused}");
        assert_eq!(Via::branch_of(seeds[2]).unwrap(), None, "the first is a flag");
        assert_eq!(Via::branch_of(seeds[1]).unwrap().as_deref(), Some("z9hG4bKx"));
    }

    #[test]
    fn parses_top_via() {
        let v = Via::parse("SIP/2.0/udp 10.0.0.1:5070;branch=z9hG4bK77;rport, SIP/2.0/TCP x").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch(), Some("z9hG4bK77"));
        assert!(v.param("rport").is_some());
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn ipv6_and_spacing() {
        let v = Via::parse("SIP / 2.0 / TCP [2001:db8::1]:5061 ; branch = z9hG4bKx").unwrap();
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.sent_by(), "[2001:db8::1]:5061");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "HTTP/1.1/TCP host",
            "SIP/2.0/UDP host:notaport",
            "SIP/3.0/UDP h",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn squeezes_only_when_needed() {
        for squeezed in ["SIP /2.0", "SIP/ 2.0", "/ x", "x /", "SIP/2.0/UDP\th", "\t"] {
            assert!(needs_squeeze(squeezed), "{squeezed:?}");
        }
        for plain in ["SIP/2.0/UDP h", "/", "a/b", "", "SIP/2.0/UDP h;x=\"a,/b\""] {
            assert!(!needs_squeeze(plain), "{plain:?}");
        }
        assert_eq!(
            first_of_list(r#"SIP/2.0/UDP h;x="a,b", SIP/2.0/UDP g"#),
            r#"SIP/2.0/UDP h;x="a,b""#
        );
        assert_eq!(first_of_list("a"), "a");
        assert_eq!(first_of_list("a,b"), "a");
        assert_eq!(first_of_list(r#""a,b"#), r#""a,b"#);
        let tabbed = Via::parse("SIP/2.0/UDP\th;branch=z9hG4bKt").unwrap();
        assert_eq!((&*tabbed.transport, tabbed.host.as_str()), ("UDP", "h"));
        assert_eq!(Via::parse("SIP/2.0/tls h").unwrap().transport, "TLS");
        assert_eq!(Via::parse("SIP/2.0/quic h").unwrap().transport, "QUIC");
        assert_eq!(
            Via::parse("SIP / 2.0 /\tUDP h").unwrap(),
            Via::parse("SIP/2.0/UDP h").unwrap()
        );
    }

    /// The byte-wise sent-protocol split against the `str::split` it replaced.
    #[test]
    fn sent_protocol_matches_split() {
        fn old(proto: &str) -> Option<&str> {
            let mut parts = proto.split('/').map(str::trim);
            let (name, version, transport) = (parts.next(), parts.next(), parts.next());
            if !name.is_some_and(|n| n.eq_ignore_ascii_case("SIP")) || version != Some("2.0") || parts.next().is_some()
            {
                return None;
            }
            transport.filter(|t| !t.is_empty())
        }
        for proto in [
            "SIP/2.0/UDP",
            "sip/2.0/tcp",
            "SIP/2.0/",
            "SIP/2.0",
            "SIP",
            "",
            "/",
            "//",
            "SIP/2.0/UDP/X",
            "SIP/2.1/UDP",
            "SIP\x0b/2.0/\u{a0}UDP\u{a0}",
            "HTTP/2.0/UDP",
            "SIP/2.0/é",
        ] {
            assert_eq!(sent_protocol_transport(proto), old(proto), "{proto:?}");
        }
    }

    #[test]
    fn splits_lists() {
        assert_eq!(split_list("a;x=\"1,2\", b"), ["a;x=\"1,2\"", "b"]);
    }

    /// The element split and squeeze test before their fused scan.
    fn old_first(value: &str) -> (&str, bool) {
        let mut first = value;
        let mut quoted = false;
        for i in memchr::memchr2_iter(b'"', b',', value.as_bytes()) {
            match value.as_bytes()[i] {
                b'"' => quoted = !quoted,
                _ if !quoted => {
                    first = &value[..i];
                    break;
                }
                _ => {}
            }
        }
        let first = trim(first);
        (first, needs_squeeze(first))
    }

    /// Random Via lines built from the pieces that steer the scan: the same
    /// element, and a squeeze never missed.
    #[test]
    fn scan_matches_split_and_squeeze() {
        const PIECES: &[&str] = &[
            "SIP/2.0/UDP",
            "sip",
            "/",
            "2.0",
            "UDP",
            " ",
            " ",
            "\t",
            ",",
            "\"",
            "h",
            "127.0.0.1",
            ":5060",
            ";",
            "=",
            "branch",
            "z9hG4bK-1",
            "[2001:db8::1]",
            "\u{e9}",
            "\u{a0}",
            "/ ",
            " /",
        ];
        let mut rng = crate::cpim::mutate::XorShift(0x7a1e_5eed_0bad_cafe);
        let mut squeezed = 0;
        for _ in 0..100_000 {
            let value: String = (0..rng.below(12)).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            let (first, maybe) = first_of_list_scan(&value);
            let (want, squeeze) = old_first(&value);
            assert_eq!(trim(first), want, "{value:?}");
            assert!(maybe || !squeeze, "{value:?}");
            squeezed += usize::from(squeeze);
        }
        assert!(squeezed > 1_000, "{squeezed}");
    }
}
