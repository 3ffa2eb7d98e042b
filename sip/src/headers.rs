//! Header storage with names normalized once at parse time, so lookups are
//! plain comparisons and compact forms (`v:`, `i:`, `l:` ...) are invisible.

/// One header line; `name` is canonical (see [`canonical_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Ordered header list (order matters for Via and Route).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// First value of a header, by canonical name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// All values of a header in order (each line; comma lists are not split here).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_name(name),
            value: value.into(),
        });
    }

    /// Insert before every other header (used for Via).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: canonical_name(name),
                value: value.into(),
            },
        );
    }

    /// Replace the first occurrence or append.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter_mut().find(|h| h.name.eq_ignore_ascii_case(name)) {
            Some(h) => h.value = value,
            None => self.push(name, value),
        }
    }

    pub fn remove_all(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// Remove the first occurrence; returns its value.
    pub fn remove_first(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|h| h.name.eq_ignore_ascii_case(name))?;
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
    let canonical = match name.len() {
        1 => match name.as_bytes()[0].to_ascii_lowercase() {
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
            _ => return name.to_string(),
        },
        _ => {
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
            match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) {
                Some(k) => k,
                None => return name.to_string(),
            }
        }
    };
    canonical.to_string()
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
