//! Header storage with names normalized once at parse time, so lookups are
//! plain comparisons and compact forms (`v:`, `i:`, `l:` ...) are invisible.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytestring::ByteString;

use crate::text::same_text;

/// One header line; `name` is canonical (see [`canonical_name`]). A parsed
/// `value` shares the received buffer, so parsing and cloning a message
/// do not allocate per header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: ByteString,
}

/// A canonical header name. Known names are `&'static str`, so parsing a
/// message allocates nothing per header name; otherwise it reads like a
/// `String` (`as_str`, deref to `str`, `== "Via"`, `Display`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeaderName(Cow<'static, str>);

impl HeaderName {
    /// Canonicalize `name` (see [`canonical_name`]).
    pub fn new(name: &str) -> HeaderName {
        HeaderName(match canonical_static(name) {
            Some(known) => Cow::Borrowed(known),
            None => Cow::Owned(name.to_string()),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Is this `name`, ASCII case aside? (Exact bytes first: names are
    /// mostly written in their canonical case.)
    pub fn is(&self, name: &str) -> bool {
        same_text(self.as_bytes(), name.as_bytes())
    }
}

impl Deref for HeaderName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for HeaderName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for HeaderName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Hash for HeaderName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for HeaderName {
    fn from(name: &str) -> HeaderName {
        HeaderName::new(name)
    }
}

impl From<String> for HeaderName {
    fn from(name: String) -> HeaderName {
        match canonical_static(&name) {
            Some(known) => HeaderName(Cow::Borrowed(known)),
            None => HeaderName(Cow::Owned(name)),
        }
    }
}

impl From<HeaderName> for String {
    fn from(name: HeaderName) -> String {
        name.0.into_owned()
    }
}

impl PartialEq<str> for HeaderName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HeaderName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for HeaderName {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<HeaderName> for str {
    fn eq(&self, other: &HeaderName) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<HeaderName> for &str {
    fn eq(&self, other: &HeaderName) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<HeaderName> for String {
    fn eq(&self, other: &HeaderName) -> bool {
        self == other.as_str()
    }
}

/// Ordered header list (order matters for Via and Route).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// First value of a header, by canonical name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|h| h.name.is(name)).map(|h| &*h.value)
    }

    /// All values of a header in order (each line; comma lists are not split here).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |h| h.name.is(name)).map(|h| &*h.value)
    }

    pub fn push(&mut self, name: &str, value: impl Into<ByteString>) {
        self.0.push(Header {
            name: HeaderName::new(name),
            value: value.into(),
        });
    }

    /// Insert before every other header (used for Via).
    pub fn push_front(&mut self, name: &str, value: impl Into<ByteString>) {
        self.0.insert(
            0,
            Header {
                name: HeaderName::new(name),
                value: value.into(),
            },
        );
    }

    /// Replace the first occurrence or append.
    pub fn set(&mut self, name: &str, value: impl Into<ByteString>) {
        let value = value.into();
        match self.0.iter_mut().find(|h| h.name.is(name)) {
            Some(h) => h.value = value,
            None => self.push(name, value),
        }
    }

    pub fn remove_all(&mut self, name: &str) {
        self.0.retain(|h| !h.name.is(name));
    }

    /// Remove the first occurrence; returns its value.
    pub fn remove_first(&mut self, name: &str) -> Option<ByteString> {
        let i = self.0.iter().position(|h| h.name.is(name))?;
        Some(self.0.remove(i).value)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Expand compact forms (RFC 3261 §7.3.3, RFC 3841, RFC 4028 ...) and fix the
/// case of the headers we look up, so `via`, `VIA` and `v` are all `Via`.
pub fn canonical_name(name: &str) -> String {
    match canonical_static(name) {
        Some(known) => known.to_string(),
        None => name.to_string(),
    }
}

/// The canonical spelling of a compact or known name; `None` for the others
/// (kept as written). Known names are found by length first: one compare or
/// two per header instead of a scan of the whole list.
pub(crate) fn canonical_static(name: &str) -> Option<&'static str> {
    if let [c] = name.as_bytes() {
        return Some(match c.to_ascii_lowercase() {
            b'v' => "Via",
            b'f' => "From",
            b't' => "To",
            b'i' => "Call-ID",
            b'm' => "Contact",
            b'l' => "Content-Length",
            b'c' => "Content-Type",
            b'e' => "Content-Encoding",
            b's' => "Subject",
            b'k' => "Supported",
            b'a' => "Accept-Contact",
            b'j' => "Reject-Contact",
            b'r' => "Refer-To",
            b'b' => "Referred-By",
            b'o' => "Event",
            b'u' => "Allow-Events",
            b'x' => "Session-Expires",
            _ => return None,
        });
    }
    let candidates: &[&'static str] = match name.len() {
        2 => &["To"],
        3 => &["Via"],
        4 => &["From", "CSeq", "Path"],
        5 => &["Route"],
        7 => &["Call-ID", "Contact", "Expires", "Require", "Privacy", "Subject"],
        8 => &["Reply-To"],
        9 => &["Supported"],
        12 => &["Content-Type", "Max-Forwards", "Record-Route"],
        13 => &["Proxy-Require", "Authorization"],
        14 => &["Content-Length", "Accept-Contact", "Reject-Contact"],
        19 => &["P-Asserted-Identity", "Proxy-Authorization"],
        20 => &["P-Preferred-Identity"],
        _ => &[],
    };
    // Most senders already write the canonical case: try a plain compare
    // first (the first byte rules out most candidates without a memcmp).
    let first = *name.as_bytes().first()?;
    candidates
        .iter()
        .copied()
        .find(|k| k.as_bytes().first() == Some(&first) && *k == name)
        .or_else(|| candidates.iter().copied().find(|k| k.eq_ignore_ascii_case(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_forms_are_canonical() {
        assert_eq!(canonical_name("v"), "Via");
        assert_eq!(canonical_name("I"), "Call-ID");
        assert_eq!(canonical_name("call-id"), "Call-ID");
        assert_eq!(canonical_name("cseq"), "CSeq");
        assert_eq!(canonical_name("X-Custom"), "X-Custom");
        assert_eq!(canonical_name("x"), "Session-Expires");
        assert_eq!(canonical_name("Q"), "Q");
        assert_eq!(canonical_name("p-asserted-IDENTITY"), "P-Asserted-Identity");
        assert_eq!(canonical_name(""), "");
        assert_eq!(canonical_name("é"), "é");
    }

    /// The length-bucketed table holds exactly the names the old linear
    /// list did, each in its own bucket.
    #[test]
    fn every_known_name_is_found() {
        const KNOWN: &[&str] = &[
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Contact",
            "Content-Length",
            "Content-Type",
            "Max-Forwards",
            "Expires",
            "Route",
            "Record-Route",
            "Accept-Contact",
            "Reject-Contact",
            "Supported",
            "Require",
            "Proxy-Require",
            "Path",
            "Privacy",
            "P-Asserted-Identity",
            "P-Preferred-Identity",
            "Reply-To",
            "Subject",
            "Authorization",
            "Proxy-Authorization",
        ];
        for k in KNOWN {
            assert_eq!(canonical_static(k), Some(*k));
            assert_eq!(canonical_static(&k.to_ascii_lowercase()), Some(*k));
            assert_eq!(canonical_static(&k.to_ascii_uppercase()), Some(*k));
        }
        for other in ["Vias", "Fro", "X-Via", "Allow", "Event", "Content-Encoding"] {
            assert_eq!(canonical_static(other), None, "{other}");
        }
    }

    #[test]
    fn header_name_reads_like_a_string() {
        let known = HeaderName::new("call-id");
        assert_eq!(known, "Call-ID");
        assert!("Call-ID" == known);
        assert_eq!(known.as_str(), "Call-ID");
        assert_eq!(format!("{known}/{known:?}"), "Call-ID/\"Call-ID\"");
        let other = HeaderName::from("X-Thing".to_string());
        assert_eq!(other, "X-Thing".to_string());
        assert_eq!(String::from(other), "X-Thing");
        assert_eq!(HeaderName::from("v"), HeaderName::from("Via"));
    }

    #[test]
    fn set_replaces_first_and_front_inserts() {
        let mut h = Headers::default();
        h.push("Via", "a");
        h.push("Via", "b");
        h.push_front("v", "c");
        assert_eq!(h.all("Via").collect::<Vec<_>>(), ["c", "a", "b"]);
        h.set("Max-Forwards", "70");
        h.set("max-forwards", "69");
        assert_eq!(h.get("Max-Forwards"), Some("69"));
        assert_eq!(h.remove_first("Via").as_deref(), Some("c"));
    }
}
