//! RFC 3862 `message/cpim`: the envelope of every CPM pager-mode message.
//!
//! A CPIM body is three parts:
//!
//! ```text
//! From: Alice <sip:alice@example.com>          ┐
//! To: Bob <sip:bob@example.com>                │ message headers
//! NS: imdn <urn:ietf:params:imdn>              │ (`Name: value`, one per line,
//! imdn.Message-ID: 34jk324j                    │  no folding, prefixes declared by NS)
//! DateTime: 2008-04-04T12:16:49-05:00          ┘
//!                                                blank line
//! Content-Type: text/plain;charset=UTF-8       ┐ MIME headers of the content
//!                                              ┘ (folding allowed), blank line
//! Hello World                                    content: opaque bytes
//! ```
//!
//! Parsing accepts CRLF or bare LF line ends; [`Cpim::to_bytes`] always writes
//! CRLF. Both header blocks must be UTF-8 without control characters (tab
//! excepted) and must each end with a blank line. Limits: [`MAX_HEADER_LINES`]
//! lines per block and [`MAX_LINE`] bytes per header. Whatever [`Cpim::parse`]
//! accepts, `to_bytes` writes back to something that parses to the same value
//! (the fuzz target `cpim_imdn` checks it).
//!
//! ## Namespaces (RFC 3862 §3.4, RFC 5438 §7)
//!
//! A header `imdn.Message-ID` is the header `Message-ID` of whatever namespace
//! the prefix `imdn` was declared for by an earlier `NS: imdn <uri>` header.
//! Resolution is positional and strict: a prefixed header is resolved against
//! the latest `NS` declaration of its prefix *before* it; a prefix that was not
//! declared (or only after its use) resolves to nothing, so
//! `ns_header(IMDN_NS, "Message-ID")` does not find an undeclared
//! `imdn.Message-ID` (it stays reachable verbatim through [`Cpim::header`]).
//! Prefixes, header names and namespace URIs are compared ASCII
//! case-insensitively. A default-namespace declaration (`NS: <uri>`, no
//! prefix) is kept but not used for resolution: unprefixed headers are always
//! the CPIM core headers.
//!
//! Parsed header names and values, and the content, are slices of the
//! parsed buffer ([`Cpim::parse_bytes`]): a relayed message costs no
//! allocation per header.

use crate::text::{same_text, trim, trim_ws, trim_ws_bytes};
use bytes::{BufMut, Bytes, BytesMut};
/// The text type of [`CpimHeader`] names and values.
pub use bytestring::ByteString;
use thiserror::Error;

use crate::text::find_byte;

/// The IMDN namespace of CPIM headers (RFC 5438 §7.1).
pub const IMDN_NS: &str = "urn:ietf:params:imdn";
/// Media type of a CPIM body.
pub const CONTENT_TYPE: &str = "message/cpim";
/// Most lines per header block (continuation lines count).
pub const MAX_HEADER_LINES: usize = 64;
/// Longest header line, without its line end; also the longest header once
/// unfolded and written back (`name: value`).
pub const MAX_LINE: usize = 8 * 1024;

/// One header as written: `name` keeps its prefix (`imdn.Message-ID`),
/// `value` is trimmed of surrounding spaces and tabs. Parsed headers share
/// the parsed buffer; unfolded and set ones own their text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpimHeader {
    pub name: ByteString,
    pub value: ByteString,
}

impl CpimHeader {
    /// A header with control characters in `value` replaced by spaces, so it
    /// can never break the framing.
    pub fn new(name: &str, value: &str) -> CpimHeader {
        CpimHeader {
            name: name.into(),
            value: sanitize(value),
        }
    }
}

/// A parsed `message/cpim` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpim {
    /// Message headers, in order.
    pub headers: Vec<CpimHeader>,
    /// MIME headers of the content, in order, unfolded.
    pub content_headers: Vec<CpimHeader>,
    /// The content, byte for byte.
    pub body: Bytes,
}

/// What the sender asked to be told about (`imdn.Disposition-Notification`,
/// RFC 5438 §6.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispositionRequest {
    pub positive_delivery: bool,
    pub negative_delivery: bool,
    pub display: bool,
}

impl DispositionRequest {
    pub fn any(&self) -> bool {
        self.positive_delivery || self.negative_delivery || self.display
    }
}

/// Which header block an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The CPIM message headers.
    Message,
    /// The MIME headers of the content.
    Content,
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Block::Message => "message",
            Block::Content => "content",
        })
    }
}

#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum CpimError {
    #[error("{0} headers not terminated by an empty line")]
    Unterminated(Block),
    #[error("more than {MAX_HEADER_LINES} lines in the {0} headers")]
    TooManyHeaders(Block),
    #[error("{0} header longer than {MAX_LINE} bytes")]
    LineTooLong(Block),
    #[error("{0} headers are not UTF-8")]
    NotUtf8(Block),
    #[error("control character in the {0} headers")]
    ControlCharacter(Block),
    #[error("malformed {0} header: {1}")]
    Malformed(Block, &'static str),
}

const DISPOSITION_NOTIFICATION: &str = "Disposition-Notification";

impl Cpim {
    /// Parse a CPIM body (see the module docs for the accepted syntax) from
    /// a copy of `data`; [`Cpim::parse_bytes`] shares a `Bytes` instead.
    pub fn parse(data: &[u8]) -> Result<Cpim, CpimError> {
        Cpim::parse_bytes(&Bytes::copy_from_slice(data))
    }

    /// [`Cpim::parse`] without copying: header text and content are slices
    /// of `data` (a received SIP body).
    pub fn parse_bytes(data: &Bytes) -> Result<Cpim, CpimError> {
        let mut pos = 0;
        let headers = read_block(data, &mut pos, Block::Message)?;
        let content_headers = read_block(data, &mut pos, Block::Content)?;
        Ok(Cpim {
            headers,
            content_headers,
            body: data.slice(pos..),
        })
    }

    /// The wire form, CRLF line ends. Values are written as they are: build
    /// headers with [`CpimHeader::new`] or the setters to keep line breaks
    /// out of them.
    pub fn to_bytes(&self) -> Bytes {
        let len = |hs: &[CpimHeader]| hs.iter().map(|h| h.name.len() + h.value.len() + 4).sum::<usize>();
        let mut out = BytesMut::with_capacity(len(&self.headers) + len(&self.content_headers) + 4 + self.body.len());
        for block in [&self.headers, &self.content_headers] {
            for h in block {
                out.put_slice(h.name.as_bytes());
                out.put_slice(b": ");
                out.put_slice(h.value.as_bytes());
                out.put_slice(b"\r\n");
            }
            out.put_slice(b"\r\n");
        }
        out.put_slice(&self.body);
        out.freeze()
    }

    /// The first message header called exactly `name` (ASCII case-insensitive;
    /// a prefixed name only matches when written with its prefix).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The first MIME header of the content called `name`.
    pub fn content_header(&self, name: &str) -> Option<&str> {
        find(&self.content_headers, name)
    }

    /// The first message header `name` of namespace `ns_uri`, through the
    /// prefix an `NS` header declared for it (strict: see the module docs).
    pub fn ns_header(&self, ns_uri: &str, name: &str) -> Option<&str> {
        self.ns_header_text(ns_uri, name).map(|v| &**v)
    }

    /// [`Cpim::ns_header`] as the stored text, to keep without a copy.
    pub fn ns_header_text(&self, ns_uri: &str, name: &str) -> Option<&ByteString> {
        let i = self.ns_match_iter(ns_uri, name).next()?;
        Some(&self.headers[i].value)
    }

    /// Replace the value of the first message header called `name`, or
    /// append it. Control characters in `value` become spaces.
    ///
    /// Like the other setters this does not enforce the parser's limits: a
    /// header block pushed past [`MAX_HEADER_LINES`], or a header longer
    /// than [`MAX_LINE`], is written out but [`Cpim::parse`] refuses it.
    pub fn set_header(&mut self, name: &str, value: &str) {
        match self.headers.iter_mut().find(|h| h.name.eq_ignore_ascii_case(name)) {
            Some(h) => h.value = sanitize(value),
            None => self.headers.push(CpimHeader::new(name, value)),
        }
    }

    /// Set the namespaced header `name` of `ns_uri`: the first one present
    /// takes `value` and any others are removed; when there is none, it is
    /// appended under the prefix declared for `ns_uri`, and an `NS`
    /// declaration is appended first if needed (prefix `imdn` for
    /// [`IMDN_NS`], else `ns`, numbered if already taken).
    pub fn set_ns_header(&mut self, ns_uri: &str, name: &str, value: &str) {
        let Some(first) = self.ns_match_iter(ns_uri, name).next() else {
            let prefix = self.declare(ns_uri);
            self.headers.push(CpimHeader::new(&format!("{prefix}.{name}"), value));
            return;
        };
        self.headers[first].value = sanitize(value);
        self.remove_ns_matches(first + 1, ns_uri, name);
    }

    /// Remove every message header `name` of namespace `ns_uri`. The `NS`
    /// declaration stays.
    pub fn remove_ns_header(&mut self, ns_uri: &str, name: &str) {
        self.remove_ns_matches(0, ns_uri, name);
    }

    /// The content's media type as written, parameters included
    /// (`text/plain;charset=UTF-8`).
    pub fn content_type(&self) -> Option<&str> {
        self.content_header("Content-Type")
    }

    /// `imdn.Message-ID` (RFC 5438 §6.2).
    pub fn imdn_message_id(&self) -> Option<&str> {
        self.ns_header(IMDN_NS, "Message-ID")
    }

    /// The notifications the sender asked for: every
    /// `imdn.Disposition-Notification` header, a comma-separated list of
    /// `positive-delivery`, `negative-delivery`, `display` (case-insensitive;
    /// other values such as `processing` are ignored).
    pub fn disposition_request(&self) -> DispositionRequest {
        let mut r = DispositionRequest::default();
        for i in self.ns_match_iter(IMDN_NS, DISPOSITION_NOTIFICATION) {
            // Bytes: the separators and the values compared with are ASCII.
            for token in self.headers[i].value.as_bytes().split(|&b| b == b',') {
                let token = trim_ws_bytes(token);
                if token.eq_ignore_ascii_case(b"positive-delivery") {
                    r.positive_delivery = true;
                } else if token.eq_ignore_ascii_case(b"negative-delivery") {
                    r.negative_delivery = true;
                } else if token.eq_ignore_ascii_case(b"display") {
                    r.display = true;
                }
            }
        }
        r
    }

    /// Rewrite `imdn.Disposition-Notification` from `r` (values this type
    /// does not model, such as `processing`, are dropped); remove it when
    /// nothing is requested.
    pub fn set_disposition_request(&mut self, r: DispositionRequest) {
        if !r.any() {
            self.remove_ns_header(IMDN_NS, DISPOSITION_NOTIFICATION);
            return;
        }
        let tokens: Vec<&str> = [
            (r.positive_delivery, "positive-delivery"),
            (r.negative_delivery, "negative-delivery"),
            (r.display, "display"),
        ]
        .into_iter()
        .filter_map(|(on, t)| on.then_some(t))
        .collect();
        self.set_ns_header(IMDN_NS, DISPOSITION_NOTIFICATION, &tokens.join(", "));
    }

    /// The URI of a `From`/`To`/`cc` value: `"Alice" <sip:a@x>`, `Alice
    /// <sip:a@x>` or `<sip:a@x>` give `sip:a@x` (a `<` inside the quoted
    /// name does not count). A bare `scheme:rest` without spaces is taken as
    /// it is; anything else is `None`.
    pub fn uri_of(value: &str) -> Option<&str> {
        let v = value.trim();
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in v.char_indices() {
            if quoted {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => quoted = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => quoted = true,
                '<' => {
                    let rest = &v[i + 1..];
                    let uri = rest[..rest.find('>')?].trim();
                    return (!uri.is_empty()).then_some(uri);
                }
                _ => {}
            }
        }
        let bare = !quoted && !v.is_empty() && v.contains(':') && !v.contains(|c: char| c.is_whitespace() || c == '>');
        bare.then_some(v)
    }

    /// Indices of the message headers that resolve to `name` in `ns_uri`
    /// (what the tests compare with; the code iterates).
    #[cfg(test)]
    fn ns_matches(&self, ns_uri: &str, name: &str) -> Vec<usize> {
        self.ns_match_iter(ns_uri, name).collect()
    }

    /// The indices of [`Cpim::ns_matches`], lazily: the lookups stop at the
    /// first match and allocate nothing.
    fn ns_match_iter<'s>(&'s self, ns_uri: &'s str, name: &'s str) -> impl Iterator<Item = usize> + 's {
        (0..self.headers.len()).filter(move |&i| self.resolves_to(i, ns_uri, name))
    }

    /// Does message header `i` resolve to `name` in `ns_uri`? Only the
    /// headers before it matter.
    fn resolves_to(&self, i: usize, ns_uri: &str, name: &str) -> bool {
        let h = self.headers[i].name.as_bytes();
        // The local name follows the first dot, so a match puts that dot
        // `name.len() + 1` bytes from the end: most headers fail on length.
        let Some(dot) = h.len().checked_sub(name.len() + 1) else {
            return false;
        };
        h[dot] == b'.'
            && find_byte(b'.', &h[..dot]).is_none()
            && same_text(&h[dot + 1..], name.as_bytes())
            && self
                .declared_before(i, &self.headers[i].name[..dot])
                .is_some_and(|uri| same_text(uri.as_bytes(), ns_uri.as_bytes()))
    }

    /// Remove the headers from index `from` on that resolve to `name` in
    /// `ns_uri`. Backwards, without collecting: a removal changes neither
    /// the indices nor the resolution of the headers before it.
    fn remove_ns_matches(&mut self, from: usize, ns_uri: &str, name: &str) {
        for i in (from..self.headers.len()).rev() {
            if self.resolves_to(i, ns_uri, name) {
                self.headers.remove(i);
            }
        }
    }

    /// The URI of the latest `NS` declaration of `prefix` among the headers
    /// before index `before`. Searched backwards from the header itself: only
    /// headers whose local name matches ask, and blocks are short
    /// ([`MAX_HEADER_LINES`]).
    fn declared_before(&self, before: usize, prefix: &str) -> Option<&str> {
        self.headers[..before]
            .iter()
            .rev()
            .filter(|h| h.name.eq_ignore_ascii_case("NS"))
            .filter_map(|h| match parse_ns(&h.value) {
                Some((Some(p), uri)) => Some((p, uri)),
                _ => None,
            })
            .find(|(p, _)| same_text(p.as_bytes(), prefix.as_bytes()))
            .map(|(_, uri)| uri)
    }

    /// A prefix bound to `ns_uri` at the end of the header block, declaring
    /// one if there is none.
    fn declare(&mut self, ns_uri: &str) -> String {
        let decls: Vec<(&str, &str)> = self
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("NS"))
            .filter_map(|h| match parse_ns(&h.value) {
                Some((Some(p), uri)) => Some((p, uri)),
                _ => None,
            })
            .collect();
        // The latest declaration of each prefix is the one in force.
        for (n, (prefix, uri)) in decls.iter().enumerate() {
            let later = decls[n + 1..].iter().any(|(p, _)| p.eq_ignore_ascii_case(prefix));
            if !later && uri.eq_ignore_ascii_case(ns_uri) {
                return prefix.to_string();
            }
        }
        let base = if ns_uri.eq_ignore_ascii_case(IMDN_NS) {
            "imdn"
        } else {
            "ns"
        };
        let taken = |p: &str| decls.iter().any(|(d, _)| d.eq_ignore_ascii_case(p));
        let prefix = std::iter::once(base.to_string())
            .chain((1..).map(|n| format!("{base}{n}")))
            .find(|p| !taken(p))
            .unwrap_or_default();
        self.headers
            .push(CpimHeader::new("NS", &format!("{prefix} <{ns_uri}>")));
        prefix
    }
}

fn find<'a>(headers: &'a [CpimHeader], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| same_text(h.name.as_bytes(), name.as_bytes()))
        .map(|h| &*h.value)
}

/// `prefix <uri>` → (Some(prefix), uri); `<uri>` → (None, uri).
/// Read on every namespace lookup: byte searches rather than char patterns.
fn parse_ns(value: &str) -> Option<(Option<&str>, &str)> {
    let lt = find_byte(b'<', value.as_bytes())?;
    let after = &value[lt + 1..];
    // `trim_end` decodes chars; a value ending in `>` has nothing to trim.
    let uri = trim(match after.strip_suffix('>') {
        Some(inner) => inner,
        None => after.trim_end().strip_suffix('>')?,
    });
    let prefix = trim(&value[..lt]);
    if uri.is_empty() || !prefix.bytes().all(|b| b != b'.' && is_tchar(b)) {
        return None;
    }
    Some(((!prefix.is_empty()).then_some(prefix), uri))
}

/// RFC 7230 `tchar`: what a header name (and a namespace prefix) is made of.
/// One table load per byte: every header name of every message goes through it.
fn is_tchar(b: u8) -> bool {
    static TCHAR: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = matches!(i as u8,
                b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z'
                | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
            i += 1;
        }
        t
    };
    TCHAR[b as usize]
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn sanitize(value: &str) -> ByteString {
    let clean: String = value
        .chars()
        .map(|c| if c.is_ascii() && is_ctl(c as u8) { ' ' } else { c })
        .collect();
    match trim_ws(&clean) {
        // Nothing to trim (the usual case): no second copy.
        t if t.len() == clean.len() => clean.into(),
        t => t.into(),
    }
}

/// Read header lines from `data[*pos..]` up to and including the blank line.
/// Errors are those of the first bad line, checked in this order: framing
/// (line end, length, count), UTF-8, control characters, syntax. One pass:
/// each line is scanned once, and its header kept as offsets until the
/// blank line ends the block, which then becomes the one text all the
/// headers are slices of.
fn read_block(data: &Bytes, pos: &mut usize, block: Block) -> Result<Vec<CpimHeader>, CpimError> {
    let start = *pos;
    let mut spans = [Span::default(); MAX_HEADER_LINES];
    let mut count: usize = 0;
    // Values of folded headers (rare): header index and unfolded text.
    let mut unfolded: Vec<(usize, String)> = Vec::new();
    let mut at = start;
    let mut lines = 0;
    let end = loop {
        let rest = &data[at..];
        // Never look further than one maximal line (plus CRLF) for its end.
        let window = &rest[..rest.len().min(MAX_LINE + 2)];
        let Some((nl, odd)) = scan_line(window) else {
            return Err(if rest.len() > MAX_LINE + 1 {
                CpimError::LineTooLong(block)
            } else {
                CpimError::Unterminated(block)
            });
        };
        let len = if nl > 0 && rest[nl - 1] == b'\r' { nl - 1 } else { nl };
        if len == 0 {
            *pos = at + nl + 1;
            break at;
        }
        if len > MAX_LINE {
            return Err(CpimError::LineTooLong(block));
        }
        lines += 1;
        if lines > MAX_HEADER_LINES {
            return Err(CpimError::TooManyHeaders(block));
        }
        let line = &rest[..len];
        check_text(line, odd, block)?;
        let offset = at - start;
        if matches!(line[0], b' ' | b'\t') {
            // RFC 3862 message headers are never folded; MIME headers may be.
            let Some(last) = count.checked_sub(1).filter(|_| block == Block::Content) else {
                return Err(CpimError::Malformed(block, "line starts with whitespace"));
            };
            unfold(data, start, &spans[last], last, &mut unfolded, line, block)?;
        } else {
            spans[count] = header_span(line, offset, block)?;
            count += 1;
        }
        at += nl + 1;
    };
    // Every line passed `check_text`: the block is UTF-8.
    let text = ByteString::try_from(data.slice(start..end)).map_err(|_| CpimError::NotUtf8(block))?;
    let mut headers: Vec<CpimHeader> = spans[..count]
        .iter()
        .map(|s| CpimHeader {
            name: s.name.slice_of(&text),
            value: s.value.slice_of(&text),
        })
        .collect();
    for (i, value) in unfolded {
        headers[i].value = value.into();
    }
    Ok(headers)
}

/// Where a header's name and value lie in its block (offsets from the
/// block's start; a block is at most [`MAX_HEADER_LINES`] lines of
/// [`MAX_LINE`] bytes, so they fit `u32`).
#[derive(Clone, Copy, Default)]
struct Span {
    name: Range32,
    value: Range32,
}

#[derive(Clone, Copy, Default)]
struct Range32 {
    start: u32,
    end: u32,
}

impl Range32 {
    fn new(start: usize, end: usize) -> Range32 {
        Range32 {
            start: start as u32,
            end: end as u32,
        }
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// This range of `text`, sharing its buffer. The offsets are those of
    /// ASCII bytes, so always char boundaries; empty if they were not.
    fn slice_of(self, text: &ByteString) -> ByteString {
        text.get(self.range())
            .map_or_else(ByteString::new, |s| text.slice_ref(s))
    }
}

/// What [`scan_line`] saw in a line besides printable ASCII, HT and the CR
/// of its CRLF.
const CONTROL: u8 = 1;
const NON_ASCII: u8 = 2;

/// The offset of the first LF in `window`, and which of [`CONTROL`] and
/// [`NON_ASCII`] the bytes before it hold. Eight bytes at a time: a word
/// of printable ASCII (nearly all of a header) costs a few instructions.
fn scan_line(window: &[u8]) -> Option<(usize, u8)> {
    let mut odd = 0;
    let (words, tail) = window.as_chunks::<8>();
    for (k, word) in words.iter().enumerate() {
        let mut special = special_bytes(u64::from_le_bytes(*word));
        while special != 0 {
            let at = k * 8 + (special.trailing_zeros() / 8) as usize;
            match classify(window, at) {
                None => return Some((at, odd)),
                Some(class) => odd |= class,
            }
            // Next special byte of the word.
            special &= special - 1;
        }
    }
    let base = words.len() * 8;
    for at in base..base + tail.len() {
        match classify(window, at) {
            None => return Some((at, odd)),
            Some(class) => odd |= class,
        }
    }
    None
}

/// The high bit of each byte of `w` that is below 0x20, 0x7f, or not
/// ASCII. Exact per byte: no sum carries into the next byte (each is at
/// most 0x7f + 0x60).
fn special_bytes(w: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low = w & LOW7;
    let at_least_space = low + 0x6060_6060_6060_6060;
    let del = low + 0x0101_0101_0101_0101;
    (!at_least_space | del | w) & HIGH
}

/// `None` for the LF at `window[at]`; else what the byte there adds to a
/// line's [`scan_line`] classes (nothing for printable ASCII, HT, and the
/// CR of a CRLF).
fn classify(window: &[u8], at: usize) -> Option<u8> {
    Some(match window[at] {
        b'\n' => return None,
        b'\r' if window.get(at + 1) == Some(&b'\n') => 0,
        b if b >= 0x80 => NON_ASCII,
        b if is_ctl(b) => CONTROL,
        _ => 0,
    })
}

/// The UTF-8 and control-character checks of a line [`scan_line`] found
/// `odd` in, UTF-8 first.
fn check_text(line: &[u8], odd: u8, block: Block) -> Result<(), CpimError> {
    if odd & NON_ASCII != 0 && std::str::from_utf8(line).is_err() {
        return Err(CpimError::NotUtf8(block));
    }
    if odd & CONTROL != 0 {
        return Err(CpimError::ControlCharacter(block));
    }
    Ok(())
}

/// One `name: value` line at `offset` in its block (not starting with
/// whitespace).
fn header_span(line: &[u8], offset: usize, block: Block) -> Result<Span, CpimError> {
    // The usual line: tchars, maybe spaces, then the colon.
    let name_len = line.iter().take_while(|&&b| is_tchar(b)).count();
    let after_ws = name_len
        + line[name_len..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
    let colon = match line.get(after_ws) {
        Some(b':') if name_len > 0 => after_ws,
        _ => return Err(header_error(line, block)),
    };
    let value = trim_ws_bytes(&line[colon + 1..]);
    if name_len + 2 + value.len() > MAX_LINE {
        return Err(CpimError::LineTooLong(block));
    }
    let value_start = offset + (value.as_ptr() as usize - line.as_ptr() as usize);
    Ok(Span {
        name: Range32::new(offset, offset + name_len),
        value: Range32::new(value_start, value_start + value.len()),
    })
}

/// Why a line that [`header_span`] refused is not a header.
fn header_error(line: &[u8], block: Block) -> CpimError {
    let Some(colon) = memchr::memchr(b':', line) else {
        return CpimError::Malformed(block, "no colon");
    };
    if trim_ws_bytes(&line[..colon]).is_empty() {
        return CpimError::Malformed(block, "empty name");
    }
    CpimError::Malformed(block, "invalid character in name")
}

/// Append a continuation line (`line`, trimmed) to the value of header
/// `last` (at `span` in the block at `data[start..]`), which then owns its
/// text in `unfolded`.
fn unfold(
    data: &[u8],
    start: usize,
    span: &Span,
    last: usize,
    unfolded: &mut Vec<(usize, String)>,
    line: &[u8],
    block: Block,
) -> Result<(), CpimError> {
    // Lines that passed `check_text`: never an error.
    let utf8 = |b| std::str::from_utf8(b).map_err(|_| CpimError::NotUtf8(block));
    let more = utf8(trim_ws_bytes(line))?;
    if more.is_empty() {
        return Ok(()); // the value is as long as when it was last checked
    }
    if unfolded.last().is_none_or(|(i, _)| *i != last) {
        unfolded.push((last, utf8(&data[start..][span.value.range()])?.to_string()));
    }
    let Some((_, value)) = unfolded.last_mut() else {
        return Ok(());
    };
    if !value.is_empty() {
        value.push(' ');
    }
    value.push_str(more);
    if span.name.range().len() + 2 + value.len() > MAX_LINE {
        return Err(CpimError::LineTooLong(block));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mutate::XorShift;
    use super::*;

    /// RFC 5438 §9 (A.1): a message asking for delivery and display
    /// notifications.
    const RFC5438_MESSAGE: &str = "From: Alice <im:alice@example.com>\r\n\
        To: Bob <im:bob@example.com>\r\n\
        NS: imdn <urn:ietf:params:imdn>\r\n\
        imdn.Message-ID: 34jk324j\r\n\
        DateTime: 2006-04-04T12:16:49-05:00\r\n\
        imdn.Disposition-Notification: positive-delivery, display\r\n\
        \r\n\
        Content-type: text/plain\r\n\
        Content-length: 12\r\n\
        \r\n\
        Hello World\n";

    /// What an RCS client sends (bare `<uri>` addresses, namespace declared
    /// first, charset parameter, UTF-8 text).
    const RCS_MESSAGE: &str = "From: <sip:anonymous@anonymous.invalid>\r\n\
        To: <sip:anonymous@anonymous.invalid>\r\n\
        NS: imdn <urn:ietf:params:imdn>\r\n\
        imdn.Message-ID: Mq8FWrGbmRz7H1vJ\r\n\
        DateTime: 2024-03-01T10:20:30.000Z\r\n\
        imdn.Disposition-Notification: positive-delivery,display\r\n\
        \r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        \r\n\
        Ça va ? 👋";

    /// The allocation-free namespace lookup against the collecting one it
    /// replaced, over random header lists.
    #[test]
    fn ns_lookup_matches_old_resolution() {
        fn old(c: &Cpim, ns_uri: &str, name: &str) -> Vec<usize> {
            let mut decls: Vec<(&str, &str)> = Vec::new();
            let mut out = Vec::new();
            for (i, h) in c.headers.iter().enumerate() {
                if h.name.eq_ignore_ascii_case("NS") {
                    if let Some((Some(prefix), uri)) = parse_ns(&h.value) {
                        decls.push((prefix, uri));
                    }
                    continue;
                }
                let Some((prefix, local)) = h.name.split_once('.') else {
                    continue;
                };
                if !local.eq_ignore_ascii_case(name) {
                    continue;
                }
                let declared = decls.iter().rev().find(|(p, _)| p.eq_ignore_ascii_case(prefix));
                if declared.is_some_and(|(_, uri)| uri.eq_ignore_ascii_case(ns_uri)) {
                    out.push(i);
                }
            }
            out
        }
        const NAMES: &[&str] = &[
            "NS",
            "ns",
            "imdn.Message-ID",
            "IMDN.message-id",
            "x.Message-ID",
            "a.b.Message-ID",
            "b.Message-ID",
            "imdn.ID",
            ".Message-ID",
            "imdn.Disposition-Notification",
            "From",
        ];
        const VALUES: &[&str] = &[
            "imdn <urn:ietf:params:imdn>",
            "x <URN:IETF:PARAMS:IMDN>",
            "imdn <urn:other>",
            "<urn:ietf:params:imdn>",
            "a <urn:ietf:params:imdn>",
            "m1",
            "positive-delivery",
            " Display ,negative-DELIVERY,, x",
            "display\u{a0}, é",
        ];
        // The str-based parse of the disposition tokens it replaced.
        fn old_disposition(c: &Cpim) -> DispositionRequest {
            let mut r = DispositionRequest::default();
            for i in old(c, IMDN_NS, DISPOSITION_NOTIFICATION) {
                for token in c.headers[i].value.split(',') {
                    let token = token.trim_matches(|c| c == ' ' || c == '\t');
                    r.positive_delivery |= token.eq_ignore_ascii_case("positive-delivery");
                    r.negative_delivery |= token.eq_ignore_ascii_case("negative-delivery");
                    r.display |= token.eq_ignore_ascii_case("display");
                }
            }
            r
        }
        let mut rng = XorShift(0x0123_4567_89ab_cdef);
        for _ in 0..3000 {
            let headers = (0..rng.below(8))
                .map(|_| CpimHeader::new(NAMES[rng.below(NAMES.len())], VALUES[rng.below(VALUES.len())]))
                .collect();
            let c = Cpim {
                headers,
                content_headers: Vec::new(),
                body: Bytes::new(),
            };
            let want = old(&c, IMDN_NS, "Message-ID");
            assert_eq!(c.ns_matches(IMDN_NS, "Message-ID"), want, "{:?}", c.headers);
            assert_eq!(c.imdn_message_id(), want.first().map(|&i| &*c.headers[i].value));
            for name in ["message-id", "b.Message-ID", "ID", "", DISPOSITION_NOTIFICATION] {
                assert_eq!(
                    c.ns_matches(IMDN_NS, name),
                    old(&c, IMDN_NS, name),
                    "{name} {:?}",
                    c.headers
                );
            }
            assert_eq!(c.disposition_request(), old_disposition(&c), "{:?}", c.headers);
        }
    }

    #[test]
    fn parses_rfc5438_message() {
        let c = Cpim::parse(RFC5438_MESSAGE.as_bytes()).unwrap();
        assert_eq!(c.headers.len(), 6);
        assert_eq!(c.header("from"), Some("Alice <im:alice@example.com>"));
        assert_eq!(Cpim::uri_of(c.header("To").unwrap()), Some("im:bob@example.com"));
        assert_eq!(c.header("DateTime"), Some("2006-04-04T12:16:49-05:00"));
        assert_eq!(c.imdn_message_id(), Some("34jk324j"));
        assert_eq!(c.header("imdn.Message-ID"), Some("34jk324j"));
        assert_eq!(c.header("Message-ID"), None);
        assert_eq!(c.content_type(), Some("text/plain"));
        assert_eq!(c.content_header("content-length"), Some("12"));
        assert_eq!(&c.body[..], b"Hello World\n");
        assert_eq!(
            c.disposition_request(),
            DispositionRequest {
                positive_delivery: true,
                negative_delivery: false,
                display: true
            }
        );
    }

    #[test]
    fn parses_rcs_message() {
        let c = Cpim::parse(RCS_MESSAGE.as_bytes()).unwrap();
        assert_eq!(
            Cpim::uri_of(c.header("From").unwrap()),
            Some("sip:anonymous@anonymous.invalid")
        );
        assert_eq!(c.imdn_message_id(), Some("Mq8FWrGbmRz7H1vJ"));
        assert_eq!(c.content_type(), Some("text/plain; charset=utf-8"));
        assert_eq!(std::str::from_utf8(&c.body).unwrap(), "Ça va ? 👋");
        let r = c.disposition_request();
        assert!(r.positive_delivery && r.display && !r.negative_delivery);
    }

    #[test]
    fn bare_lf_is_accepted_and_written_as_crlf() {
        let lf = RFC5438_MESSAGE.replace("\r\n", "\n");
        let c = Cpim::parse(lf.as_bytes()).unwrap();
        assert_eq!(c, Cpim::parse(RFC5438_MESSAGE.as_bytes()).unwrap());
        assert_eq!(&c.to_bytes()[..], RFC5438_MESSAGE.as_bytes());
    }

    #[test]
    fn roundtrip() {
        for text in [
            RFC5438_MESSAGE,
            RCS_MESSAGE,
            "\r\n\r\n",
            "\n\n\nbody",
            "A:\r\n\r\nB: \r\n\r\n",
        ] {
            let c = Cpim::parse(text.as_bytes()).unwrap();
            assert_eq!(Cpim::parse(&c.to_bytes()).unwrap(), c, "{text:?}");
        }
        assert_eq!(
            &Cpim::parse(RCS_MESSAGE.as_bytes()).unwrap().to_bytes()[..],
            RCS_MESSAGE.as_bytes()
        );
    }

    #[test]
    fn binary_content_is_kept() {
        let mut data = b"From: <sip:a@x>\r\n\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        data.extend_from_slice(&[0, 0xff, b'\r', b'\n', b'\r', b'\n', 0x80]);
        let c = Cpim::parse(&data).unwrap();
        assert_eq!(&c.body[..], &[0, 0xff, b'\r', b'\n', b'\r', b'\n', 0x80]);
        assert_eq!(&c.to_bytes()[..], &data[..]);
    }

    #[test]
    fn empty_content_headers() {
        let c = Cpim::parse(b"From: <sip:a@x>\r\n\r\n\r\nhi").unwrap();
        assert!(c.content_headers.is_empty());
        assert_eq!(c.content_type(), None);
        assert_eq!(&c.body[..], b"hi");
    }

    #[test]
    fn content_headers_may_fold_message_headers_may_not() {
        let c = Cpim::parse(b"From: <sip:a@x>\r\n\r\nContent-Type: text/plain;\r\n\tcharset=utf-8\r\n\r\nx").unwrap();
        assert_eq!(c.content_type(), Some("text/plain; charset=utf-8"));
        assert_eq!(Cpim::parse(&c.to_bytes()).unwrap(), c);
        assert_eq!(
            Cpim::parse(b"Subject: a\r\n b\r\n\r\n\r\n"),
            Err(CpimError::Malformed(Block::Message, "line starts with whitespace"))
        );
        assert_eq!(
            Cpim::parse(b"\r\n continued\r\n\r\n"),
            Err(CpimError::Malformed(Block::Content, "line starts with whitespace"))
        );
    }

    #[test]
    fn malformed_inputs() {
        use CpimError::*;
        let cases: &[(&[u8], CpimError)] = &[
            (b"", Unterminated(Block::Message)),
            (b"From: <sip:a@x>\r\n", Unterminated(Block::Message)),
            (
                b"From: <sip:a@x>\r\n\r\nContent-Type: text/plain\r\n",
                Unterminated(Block::Content),
            ),
            (
                b"From: <sip:a@x>\r\n\r\nContent-Type: text/plain",
                Unterminated(Block::Content),
            ),
            (b"hello world\r\n\r\n\r\n", Malformed(Block::Message, "no colon")),
            (b": x\r\n\r\n\r\n", Malformed(Block::Message, "empty name")),
            (
                b"Fr om: x\r\n\r\n\r\n",
                Malformed(Block::Message, "invalid character in name"),
            ),
            (b"From: \xff\r\n\r\n\r\n", NotUtf8(Block::Message)),
            (b"From: a\rb\r\n\r\n\r\n", ControlCharacter(Block::Message)),
            (b"From: a\0\r\n\r\n\r\n", ControlCharacter(Block::Message)),
            (
                b"From: a\r\n\r\nContent-Type\r\n\r\n",
                Malformed(Block::Content, "no colon"),
            ),
        ];
        for (input, err) in cases {
            assert_eq!(
                Cpim::parse(input).as_ref(),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits() {
        let mut many = String::new();
        for i in 0..MAX_HEADER_LINES {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        let ok = format!("{many}\r\n\r\n");
        assert_eq!(Cpim::parse(ok.as_bytes()).unwrap().headers.len(), MAX_HEADER_LINES);
        let too_many = format!("{many}X: v\r\n\r\n\r\n");
        assert_eq!(
            Cpim::parse(too_many.as_bytes()),
            Err(CpimError::TooManyHeaders(Block::Message))
        );

        let long = format!("Subject: {}\r\n\r\n\r\n", "a".repeat(MAX_LINE - 9));
        assert!(Cpim::parse(long.as_bytes()).is_ok());
        let longer = format!("Subject: {}\r\n\r\n\r\n", "a".repeat(MAX_LINE - 8));
        assert_eq!(
            Cpim::parse(longer.as_bytes()),
            Err(CpimError::LineTooLong(Block::Message))
        );
        let endless = vec![b'a'; 1 << 20];
        assert_eq!(Cpim::parse(&endless), Err(CpimError::LineTooLong(Block::Message)));
        // Unfolding cannot make a header longer than what can be written back.
        let folded = format!(
            "\r\nContent-Type: {}\r\n {}\r\n\r\n",
            "a".repeat(MAX_LINE / 2),
            "b".repeat(MAX_LINE / 2)
        );
        assert_eq!(
            Cpim::parse(folded.as_bytes()),
            Err(CpimError::LineTooLong(Block::Content))
        );
    }

    #[test]
    fn namespace_resolution_is_strict_and_positional() {
        // Undeclared prefix: not in the IMDN namespace.
        let c = Cpim::parse(b"imdn.Message-ID: x\r\n\r\n\r\n").unwrap();
        assert_eq!(c.imdn_message_id(), None);
        assert_eq!(c.header("imdn.Message-ID"), Some("x"));
        // Declared only after its use.
        let c = Cpim::parse(b"imdn.Message-ID: x\r\nNS: imdn <urn:ietf:params:imdn>\r\n\r\n\r\n").unwrap();
        assert_eq!(c.imdn_message_id(), None);
        // Any prefix works once declared; case does not matter.
        let c = Cpim::parse(b"NS: MyImdn <URN:ietf:params:imdn>\r\nmyimdn.message-id: y\r\n\r\n\r\n").unwrap();
        assert_eq!(c.imdn_message_id(), Some("y"));
        // `imdn` bound to something else.
        let c = Cpim::parse(b"NS: imdn <urn:example:other>\r\nimdn.Message-ID: z\r\n\r\n\r\n").unwrap();
        assert_eq!(c.imdn_message_id(), None);
        assert_eq!(c.ns_header("urn:example:other", "Message-ID"), Some("z"));
        // Redeclaration: each header sees the declaration before it.
        let c = Cpim::parse(b"NS: a <urn:one>\r\na.H: 1\r\nNS: a <urn:two>\r\na.H: 2\r\n\r\n\r\n").unwrap();
        assert_eq!(c.ns_header("urn:one", "H"), Some("1"));
        assert_eq!(c.ns_header("urn:two", "H"), Some("2"));
        // Malformed NS values declare nothing.
        for ns in [
            "imdn urn:ietf:params:imdn",
            "imdn <>",
            "im.dn <urn:ietf:params:imdn>",
            "<urn:ietf:params:imdn>",
        ] {
            let c = Cpim::parse(format!("NS: {ns}\r\nimdn.Message-ID: x\r\n\r\n\r\n").as_bytes()).unwrap();
            assert_eq!(c.imdn_message_id(), None, "{ns}");
        }
    }

    #[test]
    fn set_and_remove_headers() {
        let mut c = Cpim::parse(RFC5438_MESSAGE.as_bytes()).unwrap();
        c.set_header("subject", "lunch?\r\nEvil: 1");
        assert_eq!(c.header("Subject"), Some("lunch?  Evil: 1"));
        c.set_header("From", "<sip:carol@x>");
        assert_eq!(c.header("From"), Some("<sip:carol@x>"));
        assert_eq!(c.headers[0].name, "From");
        let again = Cpim::parse(&c.to_bytes()).unwrap();
        assert_eq!(again, c);

        c.remove_ns_header(IMDN_NS, "Message-ID");
        assert_eq!(c.imdn_message_id(), None);
        assert!(c.header("NS").is_some());
        c.set_ns_header(IMDN_NS, "Message-ID", "new-id");
        assert_eq!(c.imdn_message_id(), Some("new-id"));
        // The existing declaration was reused.
        assert_eq!(c.headers.iter().filter(|h| h.name == "NS").count(), 1);
    }

    #[test]
    fn set_ns_header_declares_the_namespace() {
        let mut c = Cpim::parse(b"From: <sip:a@x>\r\nimdn.Message-ID: stale\r\n\r\n\r\n").unwrap();
        c.set_ns_header(IMDN_NS, "Message-ID", "m1");
        assert_eq!(c.imdn_message_id(), Some("m1"));
        let names: Vec<&str> = c.headers.iter().map(|h| &*h.name).collect();
        assert_eq!(names, ["From", "imdn.Message-ID", "NS", "imdn.Message-ID"]);

        // `imdn` taken by another namespace: a fresh prefix.
        let mut c = Cpim::parse(b"NS: imdn <urn:example:other>\r\n\r\n\r\n").unwrap();
        c.set_ns_header(IMDN_NS, "Message-ID", "m2");
        assert_eq!(c.header("NS"), Some("imdn <urn:example:other>"));
        assert_eq!(c.header("imdn1.Message-ID"), Some("m2"));
        assert_eq!(c.imdn_message_id(), Some("m2"));
        assert_eq!(c.ns_header("urn:example:other", "Message-ID"), None);
    }

    #[test]
    fn disposition_request_rewrite() {
        let mut c = Cpim::parse(RFC5438_MESSAGE.as_bytes()).unwrap();
        let mut r = c.disposition_request();
        r.display = false;
        r.negative_delivery = true;
        c.set_disposition_request(r);
        assert_eq!(
            c.header("imdn.Disposition-Notification"),
            Some("positive-delivery, negative-delivery")
        );
        assert_eq!(c.disposition_request(), r);
        // Position kept (after the DateTime it followed).
        assert_eq!(c.headers[5].name, "imdn.Disposition-Notification");
        c.set_disposition_request(DispositionRequest::default());
        assert_eq!(c.header("imdn.Disposition-Notification"), None);
        assert_eq!(c.disposition_request(), DispositionRequest::default());

        let mut plain = Cpim::parse(b"From: <sip:a@x>\r\n\r\n\r\n").unwrap();
        plain.set_disposition_request(DispositionRequest {
            display: true,
            ..Default::default()
        });
        assert_eq!(plain.header("NS"), Some("imdn <urn:ietf:params:imdn>"));
        assert!(plain.disposition_request().display);
        assert_eq!(Cpim::parse(&plain.to_bytes()).unwrap(), plain);
    }

    /// Found by the `cpim_imdn` fuzz target: a message with a full header
    /// block gets two more lines (NS and the request) from
    /// `set_disposition_request`, and then no longer parses. The setters
    /// work regardless; the limits are the parser's.
    #[test]
    fn setters_do_not_enforce_the_parse_limits() {
        let mut full = String::new();
        for i in 0..MAX_HEADER_LINES {
            full.push_str(&format!("NS: x{i}\r\n"));
        }
        full.push_str("\r\n\r\n");
        let mut c = Cpim::parse(full.as_bytes()).unwrap();
        c.set_disposition_request(DispositionRequest {
            positive_delivery: true,
            display: true,
            ..Default::default()
        });
        assert_eq!(c.headers.len(), MAX_HEADER_LINES + 2);
        assert!(c.disposition_request().display);
        assert_eq!(
            Cpim::parse(&c.to_bytes()),
            Err(CpimError::TooManyHeaders(Block::Message))
        );
    }

    #[test]
    fn disposition_request_tolerates_case_spaces_and_unknown_values() {
        let c = Cpim::parse(
            b"NS: imdn <urn:ietf:params:imdn>\r\n\
              imdn.Disposition-Notification:  Negative-Delivery ,\tPROCESSING,  , display \r\n\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            c.disposition_request(),
            DispositionRequest {
                positive_delivery: false,
                negative_delivery: true,
                display: true
            }
        );
        // Undeclared prefix: nothing requested.
        let c = Cpim::parse(b"imdn.Disposition-Notification: display\r\n\r\n\r\n").unwrap();
        assert_eq!(c.disposition_request(), DispositionRequest::default());
    }

    #[test]
    fn uri_of_forms() {
        assert_eq!(Cpim::uri_of("\"Alice\" <sip:a@x>"), Some("sip:a@x"));
        assert_eq!(Cpim::uri_of("<sip:a@x>"), Some("sip:a@x"));
        assert_eq!(
            Cpim::uri_of("Alice Smith <im:alice@example.com>"),
            Some("im:alice@example.com")
        );
        assert_eq!(Cpim::uri_of("\"a <b> \\\" c\" < tel:+1234 >"), Some("tel:+1234"));
        assert_eq!(Cpim::uri_of("  sip:a@x "), Some("sip:a@x"));
        assert_eq!(Cpim::uri_of("Alice"), None);
        assert_eq!(Cpim::uri_of("<sip:a@x"), None);
        assert_eq!(Cpim::uri_of("<>"), None);
        assert_eq!(Cpim::uri_of("\"unterminated <sip:a@x>"), None);
        assert_eq!(Cpim::uri_of(""), None);
    }

    /// The line-by-line parser this one replaced (owned `String`s, one
    /// UTF-8 check per line): same headers, same error, on mutated inputs
    /// and on inputs with several faults, where the first one must win.
    #[test]
    fn parse_matches_old_parser() {
        type Old = Result<(Vec<(String, String)>, Vec<(String, String)>, Vec<u8>), CpimError>;
        fn old_block(data: &[u8], pos: &mut usize, block: Block) -> Result<Vec<(String, String)>, CpimError> {
            let mut out: Vec<(String, String)> = Vec::new();
            let mut lines = 0;
            loop {
                let rest = &data[*pos..];
                let window = &rest[..rest.len().min(MAX_LINE + 2)];
                let Some(nl) = memchr::memchr(b'\n', window) else {
                    return Err(if rest.len() > MAX_LINE + 1 {
                        CpimError::LineTooLong(block)
                    } else {
                        CpimError::Unterminated(block)
                    });
                };
                let raw = &rest[..nl];
                let line = raw.strip_suffix(b"\r").unwrap_or(raw);
                *pos += nl + 1;
                if line.is_empty() {
                    return Ok(out);
                }
                if line.len() > MAX_LINE {
                    return Err(CpimError::LineTooLong(block));
                }
                lines += 1;
                if lines > MAX_HEADER_LINES {
                    return Err(CpimError::TooManyHeaders(block));
                }
                let text = std::str::from_utf8(line).map_err(|_| CpimError::NotUtf8(block))?;
                if text.bytes().any(is_ctl) {
                    return Err(CpimError::ControlCharacter(block));
                }
                if text.starts_with([' ', '\t']) {
                    let last = match (block, out.last_mut()) {
                        (Block::Content, Some(last)) => last,
                        _ => return Err(CpimError::Malformed(block, "line starts with whitespace")),
                    };
                    let more = trim_ws(text);
                    if !more.is_empty() {
                        if !last.1.is_empty() {
                            last.1.push(' ');
                        }
                        last.1.push_str(more);
                    }
                    if last.0.len() + 2 + last.1.len() > MAX_LINE {
                        return Err(CpimError::LineTooLong(block));
                    }
                    continue;
                }
                let Some(colon) = memchr::memchr(b':', text.as_bytes()) else {
                    return Err(CpimError::Malformed(block, "no colon"));
                };
                let name = trim_ws(&text[..colon]);
                if name.is_empty() {
                    return Err(CpimError::Malformed(block, "empty name"));
                }
                if !name.bytes().all(is_tchar) {
                    return Err(CpimError::Malformed(block, "invalid character in name"));
                }
                let value = trim_ws(&text[colon + 1..]);
                if name.len() + 2 + value.len() > MAX_LINE {
                    return Err(CpimError::LineTooLong(block));
                }
                out.push((name.to_string(), value.to_string()));
            }
        }
        fn old(data: &[u8]) -> Old {
            let mut pos = 0;
            let headers = old_block(data, &mut pos, Block::Message)?;
            let content = old_block(data, &mut pos, Block::Content)?;
            Ok((headers, content, data[pos..].to_vec()))
        }
        fn new(data: &[u8]) -> Old {
            let pairs = |hs: &[CpimHeader]| hs.iter().map(|h| (h.name.to_string(), h.value.to_string())).collect();
            let c = Cpim::parse(data)?;
            Ok((pairs(&c.headers), pairs(&c.content_headers), c.body.to_vec()))
        }
        let long = "a".repeat(MAX_LINE);
        let (long, many) = (long.as_bytes(), "X: v\r\n".repeat(MAX_HEADER_LINES).into_bytes());
        let faults: [Vec<u8>; 11] = [
            [&b"A: 1\r\nB \xff\r\n"[..], long, b"\r\n\r\n\r\n"].concat(),
            b"A: \xff\r\nno colon\r\n\r\n\r\n".to_vec(),
            b"no colon\r\nA: \xff\r\n\r\n\r\n".to_vec(),
            b"A: \x01\xff\r\n\r\n\r\n".to_vec(),
            b"A: 1\r\n\r\nB: \xc3\r\n\tmore\r\n\r\n".to_vec(),
            [&b"A: 1\r\n\r\nB: x\r\n "[..], long, b"\r\n\xff\r\n\r\n"].concat(),
            [&many[..], b"\xff\r\n\r\n\r\n"].concat(),
            [&b"\xff: x\r\n"[..], &many, b"X: v\r\n\r\n\r\n"].concat(),
            b"A: 1\r\nB: \xe2\x82\r\n\r\n\r\n".to_vec(),
            b"A: 1\r\nB: \xe2\x82\n".to_vec(),
            "\u{e9}t\u{e9}: x\r\n\r\n\r\n".into(),
        ];
        for input in &faults {
            assert_eq!(new(input), old(input), "{:?}", String::from_utf8_lossy(input));
        }
        let seeds = [
            RFC5438_MESSAGE.as_bytes(),
            RCS_MESSAGE.as_bytes(),
            b"A: 1\r\n\r\nB: 2\r\n c\r\n\r\n",
        ];
        let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
        for i in 0..20_000 {
            let input = rng.mutate(seeds[i % seeds.len()]);
            assert_eq!(new(&input), old(&input), "{:?}", String::from_utf8_lossy(&input));
        }
    }

    /// The word-at-a-time line scan against a byte loop, on windows of
    /// every length up to a few words over the bytes it treats apart.
    #[test]
    fn scan_line_matches_byte_loop() {
        fn old(window: &[u8]) -> Option<(usize, u8)> {
            let nl = memchr::memchr(b'\n', window)?;
            let raw = &window[..nl];
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            let mut odd = 0;
            if line.iter().any(|&b| b >= 0x80) {
                odd |= NON_ASCII;
            }
            if line.iter().any(|&b| is_ctl(b)) {
                odd |= CONTROL;
            }
            Some((nl, odd))
        }
        const BYTES: &[u8] = b"\n\r\t \x00\x1f\x7f\x80\xc3\xffa:~";
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..200_000 {
            let len = rng.below(40);
            let window: Vec<u8> = (0..len)
                .map(|_| match rng.below(3) {
                    0 => BYTES[rng.below(BYTES.len())],
                    _ => b'a' + rng.below(26) as u8,
                })
                .collect();
            assert_eq!(scan_line(&window), old(&window), "{window:?}");
        }
        for b in 0..=255u8 {
            let window = [b'x', b, b'\r', b'\n'];
            assert_eq!(scan_line(&window), old(&window), "{b:#x}");
        }
    }

    /// `parse_ns` without `trim_end` when the value ends in `>`, against
    /// the form that always trimmed, over values built from its syntax.
    #[test]
    fn parse_ns_matches_trim_end_form() {
        fn old(value: &str) -> Option<(Option<&str>, &str)> {
            let lt = value.find('<')?;
            let uri = value[lt + 1..].trim_end().strip_suffix('>')?.trim();
            let prefix = value[..lt].trim();
            if uri.is_empty() || !prefix.bytes().all(|b| b != b'.' && is_tchar(b)) {
                return None;
            }
            Some(((!prefix.is_empty()).then_some(prefix), uri))
        }
        const PARTS: &[&str] = &[
            "imdn", " ", "\t", "<", ">", "urn:x", ".", "\u{a0}", "\u{2003}", "é", "\x0b",
        ];
        let mut rng = XorShift(0x3c6e_f372_fe94_f82b);
        for _ in 0..50_000 {
            let value: String = (0..rng.below(7)).map(|_| PARTS[rng.below(PARTS.len())]).collect();
            assert_eq!(parse_ns(&value), old(&value), "{value:?}");
        }
    }

    #[test]
    fn tchar_is_rfc7230() {
        for b in 0..=255u8 {
            let old = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), old, "{b:#x}");
        }
    }

    #[test]
    fn parse_bytes_shares_the_buffer() {
        let data = Bytes::from_static(RFC5438_MESSAGE.as_bytes());
        let c = Cpim::parse_bytes(&data).unwrap();
        assert_eq!(c, Cpim::parse(RFC5438_MESSAGE.as_bytes()).unwrap());
        let inside = |p: *const u8| data.as_ptr_range().contains(&p);
        assert!(c
            .headers
            .iter()
            .all(|h| inside(h.name.as_ptr()) && inside(h.value.as_ptr())));
        assert!(inside(c.content_headers[0].value.as_ptr()) && inside(c.body.as_ptr()));
    }

    #[test]
    fn mutated_inputs_never_panic_and_roundtrip() {
        let seeds = [RFC5438_MESSAGE.as_bytes(), RCS_MESSAGE.as_bytes(), b"\r\n\r\n"];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for i in 0..5_000 {
            let input = rng.mutate(seeds[i % seeds.len()]);
            if let Ok(c) = Cpim::parse(&input) {
                accepted += 1;
                assert_eq!(
                    Cpim::parse(&c.to_bytes()).as_ref(),
                    Ok(&c),
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
                let _ = c.imdn_message_id();
                let _ = c.disposition_request();
                let mut d = c.clone();
                d.set_disposition_request(DispositionRequest {
                    display: true,
                    ..Default::default()
                });
                assert!(d.disposition_request().display);
                assert_eq!(Cpim::parse(&d.to_bytes()).as_ref(), Ok(&d));
                if let Some(from) = c.header("From") {
                    let _ = Cpim::uri_of(from);
                }
            }
        }
        // The mutations are small: most inputs still parse.
        assert!(accepted > 1_000, "{accepted}");
    }
}

/// Test helper shared with `imdn`: a deterministic input mutator.
#[cfg(test)]
pub(crate) mod mutate {
    /// xorshift64: deterministic, no dependency.
    pub(crate) struct XorShift(pub u64);

    impl XorShift {
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        /// Flip, insert, delete or duplicate a few bytes, sometimes inserting
        /// one of the syntax characters that matter.
        pub fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
            const SPECIAL: &[u8] = b"\r\n:.<>\" \t,;&/=\0\xff";
            let mut v = seed.to_vec();
            for _ in 0..1 + self.below(8) {
                let at = self.below(v.len() + 1);
                match self.below(5) {
                    0 if at < v.len() => v[at] ^= 1 << self.below(8),
                    1 => v.insert(at, SPECIAL[self.below(SPECIAL.len())]),
                    2 if at < v.len() => {
                        v.remove(at);
                    }
                    3 => v.insert(at, self.next() as u8),
                    _ => {
                        let end = (at + self.below(16)).min(v.len());
                        let chunk = v[at..end].to_vec();
                        v.splice(at..at, chunk);
                    }
                }
            }
            v
        }
    }
}
