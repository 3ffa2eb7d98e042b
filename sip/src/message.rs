//! Parse and serialize SIP messages. rsip's header tokenizer splits the header
//! section; we add what it lacks: line unfolding, compact names, limits,
//! Content-Length checks, and byte-exact bodies.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::decimal::decimal_bytes;
use crate::headers::{Header, HeaderName, Headers};
use crate::params::{check_name_addr, parse_name_addr, NameAddr};
use crate::text::{find_byte, is_ascii_white, media_type, trim};
use crate::via::{first_of_list, split_list, Via};
use crate::{Method, ParseError, SipUri};

/// Hostile-input limits: more headers or longer lines than any real client sends.
/// `MAX_HEADERS` does not count the (single) Content-Length header, and a
/// header line must fit `MAX_HEADER_LEN` both as received and as
/// [`Message::to_bytes`] writes it (`Canonical-Name: value`), so whatever
/// parses re-parses after serialization.
pub const MAX_HEADERS: usize = 128;
pub const MAX_HEADER_LEN: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: SipUri },
    Response { code: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Headers,
    pub body: Bytes,
}

impl Message {
    /// Parse one complete message (a UDP datagram or a framed TCP message).
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        let buf = buf.slice(skip..);
        if buf.is_empty() {
            return Err(ParseError::Empty);
        }
        let scan = scan_head(&buf).ok_or_else(|| syntax("no end of headers"))?;
        let head_end = scan.end;
        let body = buf.slice(head_end + 4..);
        let head = buf.slice(..head_end + 2); // keeps the last header's CRLF
        let (head, crlfs): (Bytes, &[u32]) = if scan.folded {
            (Bytes::from(unfold(&head)), &[])
        } else {
            (head, scan.crlfs())
        };
        let line_end = match crlfs.first() {
            Some(&crlf) => crlf as usize,
            None => find_crlf(&head).ok_or_else(|| syntax("no start line"))?,
        };
        let start_line = std::str::from_utf8(&head[..line_end]).map_err(|_| ParseError::NotUtf8)?;
        let start = parse_start_line(start_line)?;
        // The header lines' CRLFs, as offsets into the block.
        let header_crlfs = crlfs.get(1..).unwrap_or_default();
        let (headers, content_length) = parse_headers(head.slice(line_end + 2..), header_crlfs, line_end + 2)?;
        let mut msg = Message { start, headers, body };
        msg.check_content_length(content_length)?;
        Ok(msg)
    }

    /// `at`: the index of the (only) Content-Length header, if any.
    fn check_content_length(&mut self, at: Option<usize>) -> Result<(), ParseError> {
        let Some(value) = at.and_then(|i| self.headers.0.get(i)).map(|h| &*h.value) else {
            return Ok(());
        };
        let declared: usize = trim(value).parse().map_err(|_| ParseError::Invalid("Content-Length"))?;
        let actual = self.body.len();
        if declared > actual {
            return Err(ParseError::ContentLength { declared, actual });
        }
        // RFC 3261 §18.3: bytes past Content-Length in a datagram are discarded.
        self.body.truncate(declared);
        Ok(())
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&SipUri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The topmost Via entry.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        Via::parse(self.headers.get("Via").ok_or(ParseError::Missing("Via"))?)
    }

    /// The branch of the topmost Via entry (what a response is matched
    /// by), without building the Via; errors as [`Message::top_via`].
    pub fn top_via_branch(&self) -> Result<Option<Cow<'_, str>>, ParseError> {
        Via::branch_of(self.headers.get("Via").ok_or(ParseError::Missing("Via"))?)
    }

    /// Number of Via entries across all Via lines.
    pub fn via_count(&self) -> usize {
        self.headers.all("Via").map(|v| split_list(v).len()).sum()
    }

    /// Remove the topmost Via entry (a proxy forwarding a response upstream).
    pub fn pop_via(&mut self) -> Option<ByteString> {
        let i = self.headers.0.iter().position(|h| h.name == "Via")?;
        let value = &self.headers.0[i].value;
        let first = first_of_list(value);
        if first.len() == value.len() {
            // The only entry of its line: the line goes.
            return Some(self.headers.0.remove(i).value);
        }
        // The rest of the line stays as written: slices, no copy.
        let rest = value.slice_ref(value[first.len() + 1..].trim());
        let first = value.slice_ref(first.trim());
        self.headers.0[i].value = rest;
        Some(first)
    }

    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = trim(self.headers.get("Call-ID").ok_or(ParseError::Missing("Call-ID"))?);
        if v.is_empty() {
            return Err(ParseError::Invalid("Call-ID"));
        }
        Ok(v)
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Result<(u32, Method), ParseError> {
        let v = self.headers.get("CSeq").ok_or(ParseError::Missing("CSeq"))?;
        let (num, method) = two_words(v).ok_or(ParseError::Invalid("CSeq"))?;
        let num = num.parse::<u32>().map_err(|_| ParseError::Invalid("CSeq"))?;
        Ok((num, Method::parse(method)))
    }

    pub fn from(&self) -> Result<NameAddr, ParseError> {
        name_addr(self.headers.get("From"), "From")
    }

    pub fn to(&self) -> Result<NameAddr, ParseError> {
        name_addr(self.headers.get("To"), "To")
    }

    /// Max-Forwards; absent counts as 70 (RFC 3261 §8.1.1.6 default).
    pub fn max_forwards(&self) -> Result<u32, ParseError> {
        match self.headers.get("Max-Forwards") {
            None => Ok(70),
            Some(v) => trim(v).parse().map_err(|_| ParseError::Invalid("Max-Forwards")),
        }
    }

    /// Lower-case media type without parameters (`message/cpim`).
    pub fn content_type(&self) -> Option<String> {
        self.media_type().map(str::to_ascii_lowercase)
    }

    /// `content_type().as_deref() == Some(expected)` without building the
    /// lower-case copy.
    pub fn content_type_is(&self, expected: &str) -> bool {
        self.media_type().is_some_and(|media| {
            media.len() == expected.len()
                && media
                    .bytes()
                    .zip(expected.bytes())
                    .all(|(m, e)| m.to_ascii_lowercase() == e)
        })
    }

    /// The Content-Type media type as written, parameters and surrounding
    /// whitespace cut off.
    fn media_type(&self) -> Option<&str> {
        self.headers.get("Content-Type").map(media_type)
    }

    /// Checks every request must pass before a transaction exists for it
    /// (RFC 3261 §8.2 / §16.3): the mandatory headers parse.
    /// Each of From, To, Call-ID, CSeq and Max-Forwards may appear once
    /// (RFC 3261 §7.3.1; RFC 4475 §3.3.8, multi01).
    /// Returns the top Via, parsed once here for the transaction layer.
    pub fn validate_request(&self) -> Result<Via, ParseError> {
        let via = self.top_via()?;
        if let Some(name) = self.repeated_singleton() {
            return Err(ParseError::Invalid(name));
        }
        // Only whether they parse: no NameAddr built.
        check_name_addr_header(self.headers.get("From"), "From")?;
        check_name_addr_header(self.headers.get("To"), "To")?;
        self.call_id()?;
        let (_, cseq_method) = self.cseq()?;
        self.max_forwards()?;
        if let Some(method) = self.method() {
            if *method != cseq_method {
                return Err(ParseError::Invalid("CSeq"));
            }
        }
        Ok(via)
    }

    /// The first of From, To, Call-ID, CSeq, Max-Forwards (in that order)
    /// that appears more than once; one pass over the headers for all five.
    fn repeated_singleton(&self) -> Option<&'static str> {
        const ONCE: [&str; 5] = ["From", "To", "Call-ID", "CSeq", "Max-Forwards"];
        let mut count = [0u8; 5];
        for h in &self.headers.0 {
            if let Some(k) = ONCE.iter().position(|n| h.name.eq_ignore_ascii_case(n)) {
                count[k] = count[k].saturating_add(1);
            }
        }
        ONCE.iter().zip(count).find(|(_, n)| *n > 1).map(|(name, _)| *name)
    }

    /// Serialize; Content-Length is always written from the real body.
    pub fn to_bytes(&self) -> Bytes {
        // Exact size: one allocation, no regrowth.
        let start_len = match &self.start {
            StartLine::Request { method, uri } => method.as_str().len() + uri.display_len() + " SIP/2.0\r\n".len() + 1,
            StartLine::Response { reason, .. } => "SIP/2.0 200 \r\n".len() + reason.len(),
        };
        let headers_len: usize = self.headers.0.iter().map(|h| h.name.len() + h.value.len() + 4).sum();
        let mut digits = [0; 20];
        let body_len = decimal_bytes(self.body.len() as u64, &mut digits);
        let tail_len = "Content-Length: \r\n\r\n".len() + body_len.len() + self.body.len();
        let mut out = BytesMut::with_capacity(start_len + headers_len + tail_len);
        match &self.start {
            StartLine::Request { method, uri } => {
                out.put_slice(method.as_str().as_bytes());
                out.put_u8(b' ');
                uri.write_to(&mut out);
                out.put_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.put_slice(b"SIP/2.0 ");
                out.put_slice(decimal_bytes((*code).into(), &mut [0; 20]));
                out.put_u8(b' ');
                out.put_slice(reason.as_bytes());
                out.put_slice(b"\r\n");
            }
        }
        for Header { name, value } in &self.headers.0 {
            if name == "Content-Length" {
                continue;
            }
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"Content-Length: ");
        out.put_slice(body_len);
        out.put_slice(b"\r\n\r\n");
        out.put_slice(&self.body);
        out.freeze()
    }
}

fn name_addr(v: Option<&str>, which: &'static str) -> Result<NameAddr, ParseError> {
    let v = v.ok_or(ParseError::Missing(which))?;
    parse_name_addr(v).map_err(|_| ParseError::Invalid(which))
}

/// [`name_addr`] without building the entry.
fn check_name_addr_header(v: Option<&str>, which: &'static str) -> Result<(), ParseError> {
    let v = v.ok_or(ParseError::Missing(which))?;
    check_name_addr(v).map_err(|_| ParseError::Invalid(which))
}

fn syntax(what: &str) -> ParseError {
    ParseError::Syntax(what.to_string())
}

/// Offset of the first CRLF. Lines are short: `memchr` for the LF beats
/// `memmem`, which builds a searcher per call.
fn find_crlf(hay: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', hay)
        .find(|&i| i > 0 && hay[i - 1] == b'\r')
        .map(|i| i - 1)
}

/// Offset of the first CRLFCRLF (end of the header section).
#[cfg(test)]
fn find_blank_line(hay: &[u8]) -> Option<usize> {
    scan_head(hay).map(|s| s.end)
}

/// Most header-section CRLFs [`scan_head`] keeps; a longer head has its
/// remaining lines searched one by one.
const KEPT_CRLFS: usize = 32;

/// What one pass over the header section's LFs finds.
struct HeadScan {
    /// Offset of the first CRLFCRLF.
    end: usize,
    /// Some CRLF is followed by SP/HTAB (obsolete line folding).
    folded: bool,
    /// Offsets of the first CRLFs up to and including the one at `end`.
    crlfs: [u32; KEPT_CRLFS],
    kept: usize,
}

impl HeadScan {
    fn crlfs(&self) -> &[u32] {
        &self.crlfs[..self.kept]
    }
}

/// Find the end of the header section, and on the way whether a line is
/// folded and where the lines end, so neither is searched for again.
fn scan_head(buf: &[u8]) -> Option<HeadScan> {
    let mut scan = HeadScan {
        end: 0,
        folded: false,
        crlfs: [0; KEPT_CRLFS],
        kept: 0,
    };
    for i in memchr::memchr_iter(b'\n', buf) {
        if i == 0 || buf[i - 1] != b'\r' {
            continue;
        }
        if i >= 3 && &buf[i - 3..i - 1] == b"\r\n" {
            scan.end = i - 3;
            return Some(scan);
        }
        scan.folded |= matches!(buf.get(i + 1), Some(b' ' | b'\t'));
        if scan.kept < KEPT_CRLFS {
            // Past u32 the offset is useless, but a message that size is
            // refused long before (MAX_HEADERS lines of MAX_HEADER_LEN).
            scan.crlfs[scan.kept] = u32::try_from(i - 1).unwrap_or(u32::MAX);
            scan.kept += 1;
        }
    }
    None
}

/// Replace CRLF followed by whitespace (obsolete line folding) with a space.
fn unfold(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    let mut i = 0;
    while i < head.len() {
        if head[i..].starts_with(b"\r\n") && matches!(head.get(i + 2), Some(b' ' | b'\t')) {
            while out.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
                out.pop();
            }
            out.push(b' ');
            i += 2;
            while matches!(head.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
        } else {
            out.push(head[i]);
            i += 1;
        }
    }
    out
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if line.len() > MAX_HEADER_LEN {
        return Err(ParseError::HeaderTooLong(MAX_HEADER_LEN));
    }
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax("status code"));
        }
        let code: u16 = code.parse().map_err(|_| syntax("status code"))?;
        if !(100..=699).contains(&code) {
            return Err(syntax("status code"));
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    let Some((method, uri, version)) = three_fields(line) else {
        return Err(syntax("request line"));
    };
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(syntax("SIP version"));
    }
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(syntax("method"));
    }
    let uri = SipUri::parse(uri).map_err(|_| ParseError::Invalid("Request-URI"))?;
    // The serialized form may differ (canonical IPv6, decoded escapes); it
    // must fit the limit too.
    if method.len() + uri.display_len() + " SIP/2.0".len() + 1 > MAX_HEADER_LEN {
        return Err(ParseError::HeaderTooLong(MAX_HEADER_LEN));
    }
    Ok(StartLine::Request {
        method: Method::parse(method),
        uri,
    })
}

/// `line` split at single spaces into exactly three fields (some may be
/// empty), as `line.split(' ')` would; `None` for any other count. Byte
/// searches: a space is ASCII.
fn three_fields(line: &str) -> Option<(&str, &str, &str)> {
    let first = find_byte(b' ', line.as_bytes())?;
    let (a, rest) = (&line[..first], &line[first + 1..]);
    let second = find_byte(b' ', rest.as_bytes())?;
    let (b, c) = (&rest[..second], &rest[second + 1..]);
    find_byte(b' ', c.as_bytes()).is_none().then_some((a, b, c))
}

/// Exactly two words of `v`, as `split_whitespace` would find them; `None`
/// for any other count. Byte-wise for an ASCII value (whose whitespace is
/// exactly [`is_ascii_white`]).
fn two_words(v: &str) -> Option<(&str, &str)> {
    if !v.is_ascii() {
        let mut it = v.split_whitespace();
        let pair = (it.next()?, it.next()?);
        return it.next().is_none().then_some(pair);
    }
    let b = v.as_bytes();
    let word = |from: usize| {
        let start = from + b[from..].iter().position(|&c| !is_ascii_white(c))?;
        let end = b[start..]
            .iter()
            .position(|&c| is_ascii_white(c))
            .map_or(b.len(), |n| start + n);
        Some((start, end))
    };
    let (s1, e1) = word(0)?;
    let (s2, e2) = word(e1)?;
    word(e2).is_none().then(|| (&v[s1..e1], &v[s2..e2]))
}

/// `piece` as `&str`: sliced out of `whole_str` (the already validated
/// `whole`) when it lies inside it, else checked on its own. Same result as
/// `from_utf8(piece)`: a valid whole gives a valid piece exactly when the
/// piece is cut at char boundaries, which `get` checks.
fn utf8_within<'a>(whole: &[u8], whole_str: Option<&'a str>, piece: &'a [u8]) -> Result<&'a str, ParseError> {
    match (whole_str, offset_in(whole, piece)) {
        (Some(text), Some(off)) => text.get(off..off + piece.len()).ok_or(ParseError::NotUtf8),
        _ => std::str::from_utf8(piece).map_err(|_| ParseError::NotUtf8),
    }
}

/// Where the non-empty `piece` starts in `whole`, if it lies inside it.
fn offset_in(whole: &[u8], piece: &[u8]) -> Option<usize> {
    let off = (piece.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    (!piece.is_empty() && off < whole.len() && piece.len() <= whole.len() - off).then_some(off)
}

/// `value` as a slice of the validated header block `text`: no copy. A
/// value from a line rewritten for the tokenizer, or from a block that is
/// not UTF-8 as a whole, is copied.
fn shared_value(text: Option<&ByteString>, value: &str) -> ByteString {
    match text {
        // In bounds, so `slice_ref` cannot panic.
        Some(t) if offset_in(t.as_bytes(), value.as_bytes()).is_some() => t.slice_ref(value),
        _ => ByteString::from(value),
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Split the header block with rsip's tokenizer, then normalize names.
/// `crlfs` are the offsets of the block's first line ends (if known) counted
/// from `base` bytes before the block; the lines past them are searched.
/// Also returns the index of the Content-Length header.
fn parse_headers(block: Bytes, crlfs: &[u32], base: usize) -> Result<(Headers, Option<usize>), ParseError> {
    use rsip::headers::header::Tokenizer;
    // Typical requests have 8 to 16 header lines: allocate once.
    let mut headers: Vec<Header> = Vec::with_capacity(16);
    let mut content_length = None;
    // One UTF-8 check for the whole block instead of one per name and
    // value; the values are then slices of it.
    let text = ByteString::try_from(block.clone()).ok();
    let block_str = text.as_deref();
    let block = &block[..];
    let mut rest = block;
    let mut known = crlfs.iter();
    while !rest.is_empty() {
        let offset = block.len() - rest.len() + base;
        // Each line ends at the next CRLF, which the scan found in order.
        let line_len = match known.next().and_then(|&crlf| (crlf as usize).checked_sub(offset)) {
            Some(len) if len < rest.len() => len,
            _ => find_crlf(rest).unwrap_or(rest.len()),
        };
        if line_len > MAX_HEADER_LEN {
            return Err(ParseError::HeaderTooLong(MAX_HEADER_LEN));
        }
        // RFC 3261 §7.3.1 allows whitespace before the colon; rsip does not.
        let line = &rest[..line_len];
        let squeezed;
        let line = match line.iter().position(|b| *b == b':') {
            Some(colon) if line[..colon].ends_with(b" ") || line[..colon].ends_with(b"\t") => {
                let name_end = line[..colon]
                    .iter()
                    .rposition(|b| !b" \t".contains(b))
                    .map_or(0, |p| p + 1);
                squeezed = [&line[..name_end], &line[colon..], b"\r\n"].concat();
                &squeezed[..]
            }
            _ => &rest[..(line_len + 2).min(rest.len())],
        };
        let (_, tok) = Tokenizer::tokenize(line).map_err(|_| syntax("header line"))?;
        let name = utf8_within(block, block_str, tok.name)?;
        let value = utf8_within(block, block_str, tok.value)?;
        let (name, value) = (HeaderName::new(name), trim(value));
        if name.len() + 2 + value.len() > MAX_HEADER_LEN {
            return Err(ParseError::HeaderTooLong(MAX_HEADER_LEN));
        }
        if name == "Content-Length" {
            // RFC 4475 §3.3.9 (mcl01): two Content-Length values, no way to
            // know which one frames the body.
            if content_length.is_some() {
                return Err(ParseError::Invalid("Content-Length"));
            }
            content_length = Some(headers.len());
        } else if headers.len() - usize::from(content_length.is_some()) >= MAX_HEADERS {
            return Err(ParseError::TooManyHeaders(MAX_HEADERS));
        }
        headers.push(Header {
            name,
            value: shared_value(text.as_ref(), value),
        });
        rest = &rest[(line_len + 2).min(rest.len())..];
    }
    Ok((Headers(headers), content_length))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &str = "MESSAGE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1\r\n\
From: <sip:alice@example.com>;tag=a\r\n\
To: <sip:bob@example.com>\r\n\
i: c1\r\n\
CSeq: 1 MESSAGE\r\n\
Max-Forwards: 70\r\n\
Content-Type: text/plain\r\n\
l: 5\r\n\r\nhello";

    /// The byte-wise splits against the `str` iterators they replace, on
    /// strings over an alphabet of separators, whitespace and non-ASCII.
    #[test]
    fn splits_match_str_iterators() {
        const PARTS: &[&str] = &[
            " ", "a", "1", "\t", "\x0b", "\r\n", "\u{a0}", "\u{2003}", "é", "MESSAGE",
        ];
        let mut rng = crate::cpim::mutate::XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..100_000 {
            let s: String = (0..rng.below(7)).map(|_| PARTS[rng.below(PARTS.len())]).collect();
            let mut it = s.split_whitespace();
            let old_words = match (it.next(), it.next(), it.next()) {
                (Some(a), Some(b), None) => Some((a, b)),
                _ => None,
            };
            assert_eq!(two_words(&s), old_words, "{s:?}");
            let mut it = s.split(' ');
            let old_fields = match (it.next(), it.next(), it.next(), it.next()) {
                (Some(a), Some(b), Some(c), None) => Some((a, b, c)),
                _ => None,
            };
            assert_eq!(three_fields(&s), old_fields, "{s:?}");
        }
    }

    #[test]
    fn content_type_is_compares_the_lower_case_form() {
        let m = Message::parse(Bytes::from(MSG.replace("text/plain", " Text/PLAIN ;charset=x"))).unwrap();
        assert_eq!(m.content_type().as_deref(), Some("text/plain"));
        for expected in ["text/plain", "Text/PLAIN", "text/plai", "text/plain ", ""] {
            assert_eq!(
                m.content_type_is(expected),
                m.content_type().as_deref() == Some(expected),
                "{expected}"
            );
        }
        let bare = Message::parse(Bytes::from(MSG.replace("Content-Type: text/plain\r\n", ""))).unwrap();
        assert!(!bare.content_type_is(""));
    }

    #[test]
    fn parses_compact_message() {
        let m = Message::parse(Bytes::from(MSG)).unwrap();
        assert_eq!(m.method(), Some(&Method::Message));
        assert_eq!(m.call_id().unwrap(), "c1");
        assert_eq!(m.cseq().unwrap(), (1, Method::Message));
        assert_eq!(m.from().unwrap().tag(), Some("a"));
        assert_eq!(&m.body[..], b"hello");
        m.validate_request().unwrap();
    }

    /// Parsed values are slices of the received buffer, not copies.
    #[test]
    fn values_share_the_received_buffer() {
        let raw = Bytes::from(MSG);
        let m = Message::parse(raw.clone()).unwrap();
        for h in &m.headers.0 {
            assert!(raw.as_ptr_range().contains(&h.value.as_ptr()), "{}", h.name);
        }
    }

    #[test]
    fn roundtrip_keeps_binary_body() {
        let mut m = Message::parse(Bytes::from(MSG)).unwrap();
        m.body = Bytes::from_static(&[0xff, 0x00, 0xfe]);
        let again = Message::parse(m.to_bytes()).unwrap();
        assert_eq!(&again.body[..], &[0xff, 0x00, 0xfe]);
        assert_eq!(again.headers.get("Content-Length"), Some("3"));
    }

    #[test]
    fn folded_and_spaced_headers() {
        let raw = "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nSubject : one\r\n two\r\nFrom: <sip:a@y>;tag=1\r\nTo: sip:x@y\r\nCall-ID: c\r\nCSeq: 2 OPTIONS\r\n\r\n";
        let m = Message::parse(Bytes::from(raw)).unwrap();
        assert_eq!(m.header("Subject"), Some("one two"));
        m.validate_request().unwrap();
    }

    #[test]
    fn content_length_rules() {
        let short = MSG.replace("l: 5", "l: 50");
        assert!(matches!(
            Message::parse(Bytes::from(short)),
            Err(ParseError::ContentLength { .. })
        ));
        let long = MSG.replace("l: 5", "l: 2");
        assert_eq!(&Message::parse(Bytes::from(long)).unwrap().body[..], b"he");
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for raw in [
            "",
            "\r\n",
            "GARBAGE",
            "MESSAGE sip:a@b SIP/2.0\r\n\r\n\r\n",
            "MESSAGE  SIP/2.0\r\n\r\n",
            "SIP/2.0 99 x\r\n\r\n",
        ] {
            let r = Message::parse(Bytes::from(raw));
            if let Ok(m) = r {
                assert!(m.validate_request().is_err(), "{raw:?}");
            }
        }
    }

    #[test]
    fn singleton_headers_once() {
        // RFC 4475 §3.3.9: two Content-Length values cannot frame a body.
        let two = MSG.replace("l: 5\r\n", "l: 5\r\nContent-Length: 5\r\n");
        assert_eq!(
            Message::parse(Bytes::from(two)),
            Err(ParseError::Invalid("Content-Length"))
        );
        // RFC 4475 §3.3.8: repeated From/To/Call-ID/CSeq/Max-Forwards.
        for (line, name) in [
            ("From: <sip:x@example.com>;tag=b\r\n", "From"),
            ("t: <sip:x@example.com>\r\n", "To"),
            ("Call-ID: c2\r\n", "Call-ID"),
            ("CSeq: 2 MESSAGE\r\n", "CSeq"),
            ("Max-Forwards: 5\r\n", "Max-Forwards"),
        ] {
            let raw = MSG.replace("l: 5\r\n", &format!("{line}l: 5\r\n"));
            let m = Message::parse(Bytes::from(raw)).unwrap();
            assert_eq!(m.validate_request(), Err(ParseError::Invalid(name)));
        }
    }

    /// Two repeated singletons: the one first in From, To, Call-ID, CSeq,
    /// Max-Forwards order is reported, wherever it sits.
    #[test]
    fn repeated_singleton_order() {
        let raw = MSG.replace("l: 5\r\n", "Max-Forwards: 5\r\nt: <sip:x@example.com>\r\nl: 5\r\n");
        let m = Message::parse(Bytes::from(raw)).unwrap();
        assert_eq!(m.validate_request(), Err(ParseError::Invalid("To")));
        assert_eq!(Message::parse(Bytes::from(MSG)).unwrap().repeated_singleton(), None);
    }

    #[test]
    fn limits_hold_for_serialized_form() {
        // MAX_HEADERS does not count Content-Length, which to_bytes adds.
        let head = "OPTIONS sip:x@y SIP/2.0\r\n";
        let many = format!("{head}{}\r\n", "X: 1\r\n".repeat(MAX_HEADERS));
        let m = Message::parse(Bytes::from(many)).unwrap();
        assert_eq!(Message::parse(m.to_bytes()).unwrap().headers.len(), MAX_HEADERS + 1);
        let too_many = format!("{head}{}\r\n", "X: 1\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(
            Message::parse(Bytes::from(too_many)),
            Err(ParseError::TooManyHeaders(MAX_HEADERS))
        );
        // A compact name is written long: the long form must fit as well.
        let value = "a".repeat(MAX_HEADER_LEN - 2);
        let compact = format!("{head}s:{value}\r\n\r\n");
        assert_eq!(
            Message::parse(Bytes::from(compact)),
            Err(ParseError::HeaderTooLong(MAX_HEADER_LEN))
        );
        let value = "a".repeat(MAX_HEADER_LEN - "Subject: ".len());
        let fits = Message::parse(Bytes::from(format!("{head}s:{value}\r\n\r\n"))).unwrap();
        assert!(Message::parse(fits.to_bytes()).is_ok());
        // Status codes are three digits.
        for bad in ["SIP/2.0 +200 x\r\n\r\n", "SIP/2.0 0200 x\r\n\r\n"] {
            assert!(Message::parse(Bytes::from(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pop_via_handles_comma_lists() {
        let raw = MSG.replace(
            "v: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1",
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        );
        let mut m = Message::parse(Bytes::from(raw)).unwrap();
        assert_eq!(m.via_count(), 2);
        assert_eq!(m.top_via_branch().unwrap().as_deref(), Some("z9hG4bK1"));
        m.pop_via();
        assert_eq!(m.top_via().unwrap().host, "b");
        assert_eq!(m.top_via_branch().unwrap().as_deref(), Some("z9hG4bK2"));
        // The last entry takes its header line with it.
        assert_eq!(m.pop_via().as_deref(), Some("SIP/2.0/UDP b;branch=z9hG4bK2"));
        assert_eq!(m.via_count(), 0);
        assert!(m.pop_via().is_none());
        assert!(matches!(m.top_via_branch(), Err(ParseError::Missing("Via"))));

        // Spacing kept as written; a quoted comma is not a separator.
        let raw = MSG.replace(
            "v: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1",
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1 ,  SIP/2.0/UDP b;x=\"p,q\" ,SIP/2.0/UDP c",
        );
        let mut m = Message::parse(Bytes::from(raw)).unwrap();
        assert_eq!(m.pop_via().as_deref(), Some("SIP/2.0/UDP a;branch=z9hG4bK1"));
        assert_eq!(m.header("Via"), Some("SIP/2.0/UDP b;x=\"p,q\" ,SIP/2.0/UDP c"));
        assert_eq!(m.via_count(), 2);
        assert_eq!(m.pop_via().as_deref(), Some("SIP/2.0/UDP b;x=\"p,q\""));
        assert_eq!(m.pop_via().as_deref(), Some("SIP/2.0/UDP c"));
        assert_eq!(m.via_count(), 0);
    }

    /// `len` bytes drawn from `alphabet` with a xorshift generator (state `x`).
    fn random_bytes(x: &mut u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                alphabet[(*x % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn line_searches_match_memmem() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for n in 0..3000 {
            let buf = random_bytes(&mut x, n % 24, b"\r\na");
            assert_eq!(find_crlf(&buf), memchr::memmem::find(&buf, b"\r\n"), "{buf:?}");
            assert_eq!(
                find_blank_line(&buf),
                memchr::memmem::find(&buf, b"\r\n\r\n"),
                "{buf:?}"
            );
        }
    }

    /// The CRLFs the head scan keeps are the ones a search line by line finds.
    #[test]
    fn head_scan_matches_line_search() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for n in 0..3000 {
            let buf = random_bytes(&mut x, n % 64, b"\r\na ");
            let Some(scan) = scan_head(&buf) else {
                continue;
            };
            let head = &buf[..scan.end + 2];
            let mut expect = Vec::new();
            let mut at = 0;
            while let Some(i) = find_crlf(&head[at..]) {
                expect.push((at + i) as u32);
                at += i + 2;
            }
            expect.truncate(KEPT_CRLFS);
            assert_eq!(scan.crlfs(), &expect[..], "{buf:?}");
            let folded = memchr::memchr_iter(b'\n', head)
                .any(|i| i > 0 && head[i - 1] == b'\r' && matches!(head.get(i + 1), Some(b' ' | b'\t')));
            assert_eq!(scan.folded, folded, "{buf:?}");
        }
    }

    #[test]
    fn more_lines_than_the_scan_keeps() {
        let extra: String = (0..2 * KEPT_CRLFS).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let raw = MSG.replace("l: 5\r\n", &format!("{extra}l: 5\r\n"));
        let m = Message::parse(Bytes::from(raw)).unwrap();
        assert_eq!(m.headers.len(), 8 + 2 * KEPT_CRLFS);
        assert_eq!(m.header("X-63"), Some("63"));
        assert_eq!(&m.body[..], b"hello");
    }

    #[test]
    fn utf8_within_matches_from_utf8() {
        let whole = "ab€d".as_bytes();
        let text = std::str::from_utf8(whole).ok();
        for i in 0..=whole.len() {
            for j in i..=whole.len() {
                let piece = &whole[i..j];
                assert_eq!(
                    utf8_within(whole, text, piece).ok(),
                    std::str::from_utf8(piece).ok(),
                    "{i}..{j}"
                );
            }
        }
        let outside = b"x\xff".to_vec();
        assert_eq!(utf8_within(whole, text, &outside), Err(ParseError::NotUtf8));
        assert_eq!(utf8_within(whole, text, &outside[..1]), Ok("x"));
        assert_eq!(utf8_within(b"\xff", None, b"ok"), Ok("ok"));
    }

    #[test]
    fn serializes_like_format() {
        let m = Message::parse(Bytes::from(MSG)).unwrap();
        let mut expect = String::from("MESSAGE sip:bob@example.com SIP/2.0\r\n");
        for h in &m.headers.0 {
            if h.name != "Content-Length" {
                expect.push_str(&format!("{}: {}\r\n", h.name, h.value));
            }
        }
        expect.push_str("Content-Length: 5\r\n\r\nhello");
        assert_eq!(&m.to_bytes()[..], expect.as_bytes());
        for code in [100, 200, 486, 699] {
            let r = Message {
                start: StartLine::Response {
                    code,
                    reason: "Why Not".into(),
                },
                headers: Headers::default(),
                body: Bytes::from(vec![b'x'; 1234]),
            };
            let expect = format!(
                "SIP/2.0 {code} Why Not\r\nContent-Length: 1234\r\n\r\n{}",
                "x".repeat(1234)
            );
            assert_eq!(&r.to_bytes()[..], expect.as_bytes());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for n in 0..5000 {
            let mut buf = MSG.as_bytes().to_vec();
            for _ in 0..(n % 8 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % buf.len();
                buf[i] = (x >> 32) as u8;
            }
            buf.truncate((x as usize >> 8) % (buf.len() + 1));
            if let Ok(m) = Message::parse(Bytes::from(buf)) {
                let _ = m.validate_request();
                let _ = m.to_bytes();
            }
        }
    }
}
