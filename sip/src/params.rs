//! Name-addr lists and header parameters (RFC 3261 §20 and §25, RFC 3840
//! feature tags).
//!
//! rsip's typed Contact rejects feature-tag parameters (`+g.oma.sip-im`,
//! `+g.3gpp.icsi-ref="..."`), so Contact, Accept-Contact, Reject-Contact,
//! From/To and P-Asserted-Identity style values are parsed here.
//!
//! The parser is a small lexer: it splits display-name, URI and header
//! parameters but does not validate the URI itself (rsip does that).
//!
//! Accepted forms of one entry:
//! * `"Quoted Display" <uri>;params` and `Token Display <uri>;params`
//! * `<uri>;params` (a `;` inside `<...>` belongs to the URI)
//! * `uri;params` (addr-spec without brackets: the URI ends at the first `;`,
//!   what follows are header parameters, RFC 3261 §20.10)
//! * `*;params` (Contact: * and Accept-Contact: *;...), URI `"*"`
//!
//! SP/HTAB are tolerated around `;`, `=`, `,`, and around the entry. Parameter
//! values may be a token, a quoted-string (`\`-escapes resolved) or `<...>`
//! (kept with its brackets, so `+sip.instance="<urn:uuid:x>"` and
//! `+sip.instance=<urn:uuid:x>` give the same value).
//!
//! Hostile input: at most [`MAX_ENTRIES`] entries and [`MAX_PARAMS`]
//! parameters per entry; control characters (other than HTAB) are rejected,
//! except as a quoted-pair inside a quoted string (`"BEL:\<0x07>"`,
//! RFC 3261 §25.1 allows %x00-09 / %x0B-0C / %x0E-7F there; RFC 4475
//! §3.1.1.2); CR and LF never pass. The parser never panics and always
//! slices at character boundaries.

use crate::text::trim_ws;
use std::borrow::Cow;
use std::fmt;

/// Maximum number of entries in a comma-separated list.
pub const MAX_ENTRIES: usize = 64;
/// Maximum number of parameters of one entry.
pub const MAX_PARAMS: usize = 64;

/// One header parameter: `name`, or `name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The name as written (compare case-insensitively).
    pub name: String,
    /// The value with quotes removed and `\`-escapes resolved; `None` for a
    /// flag such as `lr` or `+g.oma.sip-im`.
    pub value: Option<String>,
}

impl Param {
    /// A parameter without value (`;lr`, `;+g.oma.sip-im`).
    pub fn flag(name: impl Into<String>) -> Param {
        Param {
            name: name.into(),
            value: None,
        }
    }

    /// A parameter with a value (`;expires=60`).
    pub fn with_value(name: impl Into<String>, value: impl Into<String>) -> Param {
        Param {
            name: name.into(),
            value: Some(value.into()),
        }
    }
}

/// Wire form without the leading `;`: `name` or `name=value`, the value
/// quoted when it is not a token.
impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_param(&mut out, self);
        f.write_str(&out)
    }
}

/// One entry of a From/To/Contact/Accept-Contact style header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted. `None` when absent.
    pub display: Option<String>,
    /// The URI as written (without `<>`), or `"*"`.
    pub uri: String,
    /// Header parameters (after the URI), in order.
    pub params: Vec<Param>,
}

impl NameAddr {
    /// An entry with only a URI.
    pub fn new(uri: impl Into<String>) -> NameAddr {
        NameAddr {
            display: None,
            uri: uri.into(),
            params: Vec::new(),
        }
    }

    /// First parameter with this name (ASCII case-insensitive).
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.param(name).is_some()
    }

    /// Value of the first parameter with this name; `None` when absent or a
    /// flag.
    pub fn param_value(&self, name: &str) -> Option<&str> {
        self.param(name).and_then(|p| p.value.as_deref())
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&str> {
        self.param_value("tag")
    }

    /// Serialize: `"Display" <uri>;a;b=c;d="x y"`. The URI is always in angle
    /// brackets, except a bare `*` without display name (Contact: *, which
    /// must not be bracketed). Values that are not tokens are quoted.
    /// CR and LF are never emitted (the parser never produces them; this
    /// guards hand-built values against header injection); other control
    /// characters (HTAB aside) appear only as quoted-pairs inside quoted
    /// strings, and are dropped from URIs and names. For every `x` returned
    /// by the parser,
    /// `parse_name_addr(&x.to_header_value()) == Ok(x)`.
    pub fn to_header_value(&self) -> String {
        let mut out = String::with_capacity(self.uri.len() + 16 * (self.params.len() + 1));
        if let Some(d) = &self.display {
            push_quoted(&mut out, d);
            out.push(' ');
        }
        if self.display.is_none() && self.uri == "*" {
            out.push('*');
        } else {
            out.push('<');
            push_clean(&mut out, &self.uri);
            out.push('>');
        }
        for p in &self.params {
            out.push(';');
            write_param(&mut out, p);
        }
        out
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header_value())
    }
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    #[error("empty header value")]
    Empty,
    #[error("empty URI")]
    EmptyUri,
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("unterminated angle bracket")]
    UnterminatedAngle,
    #[error("bad parameter: {0}")]
    BadParam(String),
    #[error("unexpected character {ch:?} at byte {pos}")]
    UnexpectedChar { ch: char, pos: usize },
    #[error("unexpected end of header value")]
    UnexpectedEnd,
    #[error("control character in header value")]
    ControlChar,
    #[error("more than one entry where exactly one is allowed")]
    MultipleEntries,
    #[error("too many entries (more than 64)")]
    TooManyEntries,
    #[error("too many parameters (more than 64)")]
    TooManyParams,
}

/// Parse exactly one entry (From, To, P-Asserted-Identity element...).
pub fn parse_name_addr(value: &str) -> Result<NameAddr, ParamError> {
    one_entry(value, |c| c.entry())
}

/// `parse_name_addr(value).map(drop)`, without building the entry: nothing
/// is copied or allocated (a request's From and To are checked this way).
pub(crate) fn check_name_addr(value: &str) -> Result<(), ParamError> {
    one_entry(value, |c| c.entry_parts(&mut Discard(0)).map(drop))
}

/// The one entry of `value`, read by `entry`; nothing but SP/HTAB may follow.
fn one_entry<'a, T>(
    value: &'a str,
    entry: impl FnOnce(&mut Cursor<'a>) -> Result<T, ParamError>,
) -> Result<T, ParamError> {
    check_controls(value)?;
    let mut c = Cursor::new(value);
    c.skip_ws();
    if c.at_end() {
        return Err(ParamError::Empty);
    }
    let entry = entry(&mut c)?;
    c.skip_ws();
    match c.peek() {
        None => Ok(entry),
        Some(',') => Err(ParamError::MultipleEntries),
        Some(_) => Err(c.unexpected()),
    }
}

/// Parse a comma-separated list of entries (Contact, Accept-Contact, ...).
/// Commas inside quoted strings or `<...>` do not split. Empty elements
/// (`a, , b`) are skipped; a value with no entry at all is [`ParamError::Empty`].
pub fn parse_list(value: &str) -> Result<Vec<NameAddr>, ParamError> {
    check_controls(value)?;
    let mut c = Cursor::new(value);
    let mut out = Vec::new();
    loop {
        c.skip_ws();
        match c.peek() {
            None => break,
            Some(',') => {
                c.bump();
                continue;
            }
            Some(_) => {}
        }
        if out.len() >= MAX_ENTRIES {
            return Err(ParamError::TooManyEntries);
        }
        out.push(c.entry()?);
        c.skip_ws();
        match c.peek() {
            None => break,
            Some(',') => {
                c.bump();
            }
            Some(_) => return Err(c.unexpected()),
        }
    }
    if out.is_empty() {
        return Err(ParamError::Empty);
    }
    Ok(out)
}

/// Parse a parameter list such as `;a;b=c;d="q"` (the leading `;` is
/// optional). An empty or blank string gives an empty list.
pub fn split_params(s: &str) -> Result<Vec<Param>, ParamError> {
    // The usual lists (a Via's branch and rport, a Contact's tags) fit.
    let mut out = Vec::with_capacity(if s.is_empty() { 0 } else { 4 });
    read_params(s, &mut out)?;
    Ok(out)
}

/// The first parameter named `name` (any case) of such a list, checked as
/// [`split_params`] checks it but without building the list: `Some(None)`
/// for a flag, `None` when absent.
pub fn find_param<'a>(s: &'a str, name: &str) -> Result<Option<Option<Cow<'a, str>>>, ParamError> {
    let mut find = Find {
        name,
        seen: 0,
        found: None,
    };
    read_params(s, &mut find)?;
    Ok(find.found)
}

fn read_params<'a>(s: &'a str, out: &mut impl ParamSink<'a>) -> Result<(), ParamError> {
    check_controls(s)?;
    let mut c = Cursor::new(s);
    c.skip_ws();
    if c.at_end() {
        return Ok(());
    }
    if c.peek() != Some(';') {
        let (name, value) = c.param()?;
        out.put(name, value);
    }
    c.params(out)?;
    c.skip_ws();
    if c.at_end() {
        Ok(())
    } else {
        Err(c.unexpected())
    }
}

// ---------------------------------------------------------------------------
// Lexing

/// Where the lexer puts the header parameters it reads.
trait ParamSink<'a> {
    fn count(&self) -> usize;
    fn put(&mut self, name: &'a str, value: Option<Cow<'a, str>>);
}

impl<'a> ParamSink<'a> for Vec<Param> {
    fn count(&self) -> usize {
        self.len()
    }

    fn put(&mut self, name: &'a str, value: Option<Cow<'a, str>>) {
        self.push(Param {
            name: name.to_string(),
            value: value.map(Cow::into_owned),
        });
    }
}

/// Counts the parameters and keeps nothing (validation only).
struct Discard(usize);

impl<'a> ParamSink<'a> for Discard {
    fn count(&self) -> usize {
        self.0
    }

    fn put(&mut self, _: &'a str, _: Option<Cow<'a, str>>) {
        self.0 += 1;
    }
}

/// Keeps the first parameter of one name and counts them all.
struct Find<'a, 'n> {
    name: &'n str,
    seen: usize,
    found: Option<Option<Cow<'a, str>>>,
}

impl<'a> ParamSink<'a> for Find<'a, '_> {
    fn count(&self) -> usize {
        self.seen
    }

    fn put(&mut self, name: &'a str, value: Option<Cow<'a, str>>) {
        self.seen += 1;
        if self.found.is_none() && name.eq_ignore_ascii_case(self.name) {
            self.found = Some(value);
        }
    }
}

/// Cheap pre-check: CR and LF never, other control characters (HTAB aside)
/// only right after a `\`. The lexer checks that such a `\` really is a
/// quoted-pair inside a quoted string ([`Cursor::no_controls`] elsewhere).
fn check_controls(s: &str) -> Result<(), ParamError> {
    // Most values hold no control character at all: one branch-free pass
    // (it vectorizes) settles them.
    if !s.bytes().fold(false, |ctl, b| ctl | is_ctl_byte(b)) {
        return Ok(());
    }
    // ASCII: same rule on bytes.
    if s.is_ascii() {
        let mut prev = 0;
        for b in s.bytes() {
            if is_ctl_byte(b) && (prev != b'\\' || b == b'\r' || b == b'\n') {
                return Err(ParamError::ControlChar);
            }
            prev = b;
        }
        return Ok(());
    }
    let mut prev = '\0';
    for c in s.chars() {
        if is_ctl(c) && (prev != '\\' || c == '\r' || c == '\n') {
            return Err(ParamError::ControlChar);
        }
        prev = c;
    }
    Ok(())
}

/// A control character other than HTAB.
fn is_ctl(c: char) -> bool {
    c.is_control() && c != '\t'
}

/// [`is_ctl`] for an ASCII byte.
fn is_ctl_byte(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// May `c` follow `\` in a quoted-pair? (RFC 3261: %x00-09 / %x0B-0C /
/// %x0E-7F; we also take UTF-8, as qdtext does.)
fn is_quotable(c: char) -> bool {
    c != '\r' && c != '\n'
}

/// RFC 3261 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii() && is_token_byte(c as u8)
}

/// A printable ASCII byte that neither ends a bare parameter value
/// (whitespace, `;`, `,`, `"`, `<`, `>`) nor is a control character.
fn is_plain_value_byte(b: u8) -> bool {
    static PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0x21;
        while i < 0x7f {
            t[i] = !matches!(i as u8, b';' | b',' | b'"' | b'<' | b'>');
            i += 1;
        }
        t
    };
    PLAIN[b as usize]
}

/// [`is_token_char`] for a byte: one table load per byte of a name.
fn is_token_byte(b: u8) -> bool {
    static TOKEN: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let c = i as u8;
            t[i] = c.is_ascii_alphanumeric()
                || matches!(c, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
            i += 1;
        }
        t
    };
    TOKEN[b as usize]
}

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

struct Cursor<'a> {
    s: &'a str,
    /// Byte offset; always on a char boundary.
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        // ASCII without UTF-8 decoding; `pos` is on a char boundary.
        match self.s.as_bytes().get(self.pos) {
            Some(&b) if b.is_ascii() => Some(b as char),
            Some(_) => self.rest().chars().next(),
            None => None,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Step over the ASCII byte `b` if it comes next: a byte compare, where
    /// `peek` and `bump` would each look at the byte again.
    fn eat(&mut self, b: u8) -> bool {
        let next = self.s.as_bytes().get(self.pos) == Some(&b);
        self.pos += usize::from(next);
        next
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_ws(&mut self) {
        while matches!(self.s.as_bytes().get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Text consumed outside a quoted-pair must not hold control characters.
    fn no_controls(text: &str) -> Result<(), ParamError> {
        let ctl = if text.is_ascii() {
            text.bytes().fold(false, |ctl, b| ctl | is_ctl_byte(b))
        } else {
            text.chars().any(is_ctl)
        };
        if ctl {
            Err(ParamError::ControlChar)
        } else {
            Ok(())
        }
    }

    fn unexpected(&self) -> ParamError {
        match self.peek() {
            Some(ch) => ParamError::UnexpectedChar { ch, pos: self.pos },
            None => ParamError::UnexpectedEnd,
        }
    }

    /// At `"`: read a quoted-string, return its unescaped content: borrowed
    /// unless it has a quoted-pair to resolve.
    fn quoted(&mut self) -> Result<Cow<'a, str>, ParamError> {
        self.bump();
        let (s, start) = (self.s, self.pos);
        // Only once a `\` is seen is the content copied.
        let mut owned: Option<String> = None;
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(ParamError::UnterminatedQuote),
                Some('"') => return Ok(owned.map_or(Cow::Borrowed(&s[start..at]), Cow::Owned)),
                Some('\\') => {
                    let out = owned.get_or_insert_with(|| s[start..at].to_string());
                    match self.bump() {
                        None => return Err(ParamError::UnterminatedQuote),
                        Some(c) if is_quotable(c) => out.push(c),
                        Some(_) => return Err(ParamError::ControlChar),
                    }
                }
                Some(c) if is_ctl(c) => return Err(ParamError::ControlChar),
                Some(c) => {
                    if let Some(out) = &mut owned {
                        out.push(c);
                    }
                }
            }
        }
    }

    /// At `<`: skip to after the matching `>`, return the text between.
    fn angle(&mut self) -> Result<&'a str, ParamError> {
        let start = self.pos + 1; // '<' is one byte
        let inner = &self.s[start..];
        match crate::text::find_byte(b'>', inner.as_bytes()) {
            Some(i) => {
                Self::no_controls(&inner[..i])?;
                self.pos = start + i + 1;
                Ok(&inner[..i])
            }
            None => Err(ParamError::UnterminatedAngle),
        }
    }

    /// One list entry: display-name, URI and header parameters. Stops before
    /// the `,` or end that follows it.
    fn entry(&mut self) -> Result<NameAddr, ParamError> {
        let mut params = Vec::new();
        let (display, uri) = self.entry_parts(&mut params)?;
        Ok(NameAddr {
            display: display.map(Cow::into_owned),
            uri: uri.to_string(),
            params,
        })
    }

    /// [`Cursor::entry`] as borrowed display-name and URI, the parameters
    /// put into `params`.
    fn entry_parts(&mut self, params: &mut impl ParamSink<'a>) -> Result<(Option<Cow<'a, str>>, &'a str), ParamError> {
        self.skip_ws();
        let (display, uri) = if self.peek() == Some('"') {
            let display = self.quoted()?;
            self.skip_ws();
            if self.peek() != Some('<') {
                return Err(self.unexpected());
            }
            (Some(display), trim_ws(self.angle()?))
        } else {
            let start = self.pos;
            let rest = self.rest();
            // ASCII delimiters: a byte search finds the same char boundary.
            let stop = rest
                .bytes()
                .position(|b| matches!(b, b'<' | b',' | b';' | b'"'))
                .unwrap_or(rest.len());
            let text = &rest[..stop];
            Self::no_controls(text)?;
            self.pos = start + stop;
            match self.peek() {
                Some('<') => {
                    let display = trim_ws(text);
                    let display = (!display.is_empty()).then_some(Cow::Borrowed(display));
                    (display, trim_ws(self.angle()?))
                }
                // Tokens followed by a quoted string: not a display-name form.
                Some('"') => return Err(self.unexpected()),
                _ => {
                    // addr-spec without brackets: ends at ';' or ','.
                    let lead = text.len() - text.trim_start_matches(is_ws).len();
                    let uri = trim_ws(text);
                    if let Some((i, ch)) = uri.char_indices().find(|&(_, ch)| is_ws(ch) || ch == '>') {
                        return Err(ParamError::UnexpectedChar {
                            ch,
                            pos: start + lead + i,
                        });
                    }
                    (None, uri)
                }
            }
        };
        if uri.is_empty() {
            return Err(ParamError::EmptyUri);
        }
        self.params(params)?;
        Ok((display, uri))
    }

    /// Zero or more `;param` (whitespace tolerated). Stops before whatever
    /// is not a `;`.
    fn params(&mut self, out: &mut impl ParamSink<'a>) -> Result<(), ParamError> {
        loop {
            self.skip_ws();
            if !self.eat(b';') {
                return Ok(());
            }
            let (name, value) = self.param()?;
            if out.count() >= MAX_PARAMS {
                return Err(ParamError::TooManyParams);
            }
            out.put(name, value);
        }
    }

    /// `name` or `name=value` (leading whitespace skipped).
    fn param(&mut self) -> Result<(&'a str, Option<Cow<'a, str>>), ParamError> {
        self.skip_ws();
        let start = self.pos;
        // Token chars are ASCII: a byte loop stops at the same boundary.
        while self.s.as_bytes().get(self.pos).is_some_and(|&b| is_token_byte(b)) {
            self.pos += 1;
        }
        let name = &self.s[start..self.pos];
        if name.is_empty() {
            return Err(ParamError::BadParam(match self.peek() {
                Some(ch) => format!("expected a parameter name at byte {}, found {ch:?}", self.pos),
                None => "empty parameter name at end of value".to_string(),
            }));
        }
        self.skip_ws();
        let value = if self.eat(b'=') {
            self.skip_ws();
            Some(self.param_value(name)?)
        } else {
            None
        };
        Ok((name, value))
    }

    fn param_value(&mut self, name: &str) -> Result<Cow<'a, str>, ParamError> {
        match self.peek() {
            Some('"') => self.quoted(),
            Some('<') => {
                let start = self.pos;
                self.angle()?;
                Ok(Cow::Borrowed(&self.s[start..self.pos]))
            }
            _ => {
                // token / host (IPv6 references included); be lenient about
                // other printable characters, they get quoted on output.
                let start = self.pos;
                self.value_chars()?;
                if self.pos == start {
                    return Err(ParamError::BadParam(format!("{name}: missing value")));
                }
                Ok(Cow::Borrowed(&self.s[start..self.pos]))
            }
        }
    }
}

impl Cursor<'_> {
    /// Skip a bare parameter value: up to whitespace, `;`, `,`, `"`, `<` or
    /// `>`; control characters are errors. ASCII byte by byte, other chars
    /// decoded (C1 controls are control characters too).
    fn value_chars(&mut self) -> Result<(), ParamError> {
        let bytes = self.s.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            // Plain value bytes (most of them) in one table load.
            if is_plain_value_byte(b) {
                self.pos += 1;
                continue;
            }
            if !b.is_ascii() {
                let c = self.peek().ok_or(ParamError::UnexpectedEnd)?;
                if is_ctl(c) {
                    return Err(ParamError::ControlChar);
                }
                self.pos += c.len_utf8();
                continue;
            }
            if matches!(b, b' ' | b'\t' | b';' | b',' | b'"' | b'<' | b'>') {
                break;
            }
            if is_ctl_byte(b) {
                return Err(ParamError::ControlChar);
            }
            self.pos += 1;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Serialization

/// Can this value be written without quotes (token, or host with `[`, `]`,
/// `:` for IPv6)?
fn is_bare_value(v: &str) -> bool {
    !v.is_empty() && v.chars().all(|c| is_token_char(c) || matches!(c, '[' | ']' | ':'))
}

fn write_param(out: &mut String, p: &Param) {
    push_clean(out, &p.name);
    if let Some(v) = &p.value {
        out.push('=');
        if is_bare_value(v) {
            out.push_str(v);
        } else {
            push_quoted(out, v);
        }
    }
}

/// Append `s` without control characters (HTAB kept).
fn push_clean(out: &mut String, s: &str) {
    out.extend(s.chars().filter(|&c| !c.is_control() || c == '\t'));
}

/// Append `s` as a quoted-string, escaping `"`, `\` and control characters
/// other than HTAB (as quoted-pairs); CR and LF are dropped.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if !is_quotable(c) {
            continue;
        }
        if c == '"' || c == '\\' || is_ctl(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: Option<&str>) -> Param {
        Param {
            name: name.to_string(),
            value: value.map(str::to_string),
        }
    }

    fn one(s: &str) -> NameAddr {
        parse_name_addr(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn plain_token_display_name() {
        let a = one("Bob <sip:bob@example.com>");
        assert_eq!(a.display.as_deref(), Some("Bob"));
        assert_eq!(a.uri, "sip:bob@example.com");
        assert!(a.params.is_empty());

        let a = one("Bob  Smith\t<sip:bob@example.com>;tag=abc");
        assert_eq!(a.display.as_deref(), Some("Bob  Smith"));
        assert_eq!(a.tag(), Some("abc"));
    }

    #[test]
    fn quoted_display_name_with_escapes() {
        let a = one(r#""Bob \"The Builder\" \\ Smith" <sip:bob@example.com>;tag=1"#);
        assert_eq!(a.display.as_deref(), Some(r#"Bob "The Builder" \ Smith"#));
        assert_eq!(a.uri, "sip:bob@example.com");
        assert_eq!(a.tag(), Some("1"));

        // No space between quoted string and '<', comma and ';' inside quotes.
        let a = one(r#""Doe, John; Jr."<sips:j@x>"#);
        assert_eq!(a.display.as_deref(), Some("Doe, John; Jr."));
        assert_eq!(a.uri, "sips:j@x");

        let a = one(r#""" <sip:a@b>"#);
        assert_eq!(a.display.as_deref(), Some(""));
    }

    #[test]
    fn no_display_name() {
        let a = one("<sip:a@b>");
        assert_eq!(a.display, None);
        assert_eq!(a.uri, "sip:a@b");
    }

    #[test]
    fn uri_params_stay_inside_brackets() {
        let a = one("<sip:a@b;lr>;expires=60");
        assert_eq!(a.uri, "sip:a@b;lr");
        assert_eq!(a.params, vec![p("expires", Some("60"))]);
        assert_eq!(a.param_value("EXPIRES"), Some("60"));
        assert!(!a.has_param("lr"));
    }

    #[test]
    fn bare_uri_params_are_header_params() {
        let a = one("sip:a@b;tag=1");
        assert_eq!(a.display, None);
        assert_eq!(a.uri, "sip:a@b");
        assert_eq!(a.tag(), Some("1"));

        let a = one("sip:+15551234@example.com:5061;transport=tcp;lr");
        assert_eq!(a.uri, "sip:+15551234@example.com:5061");
        assert_eq!(a.params, vec![p("transport", Some("tcp")), p("lr", None)]);

        // Bare addr-spec must not contain spaces (that would be a display
        // name without brackets).
        assert!(matches!(
            parse_name_addr("Bob sip:a@b"),
            Err(ParamError::UnexpectedChar { ch: ' ', pos: 3 })
        ));
    }

    #[test]
    fn star() {
        let a = one("*");
        assert_eq!(a.uri, "*");
        assert!(a.params.is_empty());
        assert_eq!(a.to_header_value(), "*");

        let l = parse_list(" * ;+g.oma.sip-im;require;explicit").unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].uri, "*");
        assert_eq!(
            l[0].params,
            vec![p("+g.oma.sip-im", None), p("require", None), p("explicit", None)]
        );
        assert_eq!(l[0].to_header_value(), "*;+g.oma.sip-im;require;explicit");
    }

    #[test]
    fn list_with_commas_in_quotes_and_brackets() {
        let l =
            parse_list(r#"<sip:a@b>;+g.3gpp.icsi-ref="urn%3Aa,urn%3Ab", "Doe, John" <sip:c@d;x=1,2>;q=0.5,sip:e@f"#)
                .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].uri, "sip:a@b");
        assert_eq!(l[0].param_value("+g.3gpp.icsi-ref"), Some("urn%3Aa,urn%3Ab"));
        assert_eq!(l[1].display.as_deref(), Some("Doe, John"));
        assert_eq!(l[1].uri, "sip:c@d;x=1,2");
        assert_eq!(l[1].param_value("q"), Some("0.5"));
        assert_eq!(l[2].uri, "sip:e@f");

        // Empty elements are skipped, an all-empty list is an error.
        assert_eq!(parse_list("sip:a@b, ,sip:c@d,").unwrap().len(), 2);
        assert_eq!(parse_list(" , ,"), Err(ParamError::Empty));
        assert_eq!(parse_list(""), Err(ParamError::Empty));
        assert_eq!(parse_name_addr("  "), Err(ParamError::Empty));
    }

    #[test]
    fn sip_instance_quoted_or_bracketed() {
        let a = one(r#"<sip:a@10.0.0.1>;+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1"#);
        assert_eq!(
            a.param_value("+sip.instance"),
            Some("<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>")
        );
        assert_eq!(a.param_value("reg-id"), Some("1"));
        let b = one("<sip:a@10.0.0.1>;+sip.instance=<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>;reg-id=1");
        assert_eq!(a, b);
        // Serialized in the RFC 5626 (quoted) form.
        assert_eq!(
            b.to_header_value(),
            r#"<sip:a@10.0.0.1>;+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1"#
        );
    }

    #[test]
    fn escaped_quotes_in_values() {
        let a = one(r#"<sip:a@b>;x="a\"b\\c";y="""#);
        assert_eq!(a.param_value("x"), Some(r#"a"b\c"#));
        assert_eq!(a.param_value("y"), Some(""));
        assert_eq!(a.to_header_value(), r#"<sip:a@b>;x="a\"b\\c";y="""#);
    }

    #[test]
    fn errors() {
        use ParamError::*;
        assert_eq!(parse_name_addr(r#""Bob <sip:a@b>"#), Err(UnterminatedQuote));
        assert_eq!(parse_name_addr(r#""Bob\"#), Err(UnterminatedQuote));
        assert_eq!(parse_name_addr("<sip:a@b"), Err(UnterminatedAngle));
        assert_eq!(parse_name_addr("Bob <sip:a@b;lr"), Err(UnterminatedAngle));
        assert_eq!(parse_name_addr(r#"<sip:a@b>;p="x"#), Err(UnterminatedQuote));
        assert_eq!(parse_name_addr("<sip:a@b>;p=<x"), Err(UnterminatedAngle));
        assert_eq!(parse_list(r#"<sip:a@b>, "x"#), Err(UnterminatedQuote));
        assert_eq!(parse_name_addr("<>"), Err(EmptyUri));
        assert_eq!(parse_name_addr("< \t>"), Err(EmptyUri));
        assert_eq!(parse_name_addr(";tag=1"), Err(EmptyUri));
        assert_eq!(parse_name_addr(r#""Bob""#), Err(UnexpectedEnd));
        assert_eq!(
            parse_name_addr(r#""Bob" sip:a@b"#),
            Err(UnexpectedChar { ch: 's', pos: 6 })
        );
        assert_eq!(
            parse_name_addr(r#"Bob "x" <sip:a@b>"#),
            Err(UnexpectedChar { ch: '"', pos: 4 })
        );
        assert_eq!(
            parse_name_addr("<sip:a@b> junk"),
            Err(UnexpectedChar { ch: 'j', pos: 10 })
        );
        assert_eq!(parse_name_addr("sip:a@b>"), Err(UnexpectedChar { ch: '>', pos: 7 }));
        assert!(matches!(parse_name_addr("<sip:a@b>;"), Err(BadParam(_))));
        assert!(matches!(parse_name_addr("<sip:a@b>;;x"), Err(BadParam(_))));
        assert!(matches!(parse_name_addr("<sip:a@b>;=x"), Err(BadParam(_))));
        assert!(matches!(parse_name_addr("<sip:a@b>;a="), Err(BadParam(_))));
        assert!(matches!(parse_name_addr("<sip:a@b>;a=;b"), Err(BadParam(_))));
        assert!(parse_name_addr("<sip:a@b>;a@b=1").is_err());
        assert_eq!(
            parse_name_addr("<sip:a@b>;a=x<y>"),
            Err(UnexpectedChar { ch: '<', pos: 13 })
        );
        assert_eq!(parse_name_addr("<sip:a@b>, <sip:c@d>"), Err(MultipleEntries));
        assert_eq!(parse_name_addr("<sip:a@b>\r\n"), Err(ControlChar));
        assert_eq!(parse_list("<sip:a@b>;x=\"\0\""), Err(ControlChar));
        // Display impl of the error does not panic and says something.
        assert!(!UnterminatedQuote.to_string().is_empty());
    }

    #[test]
    fn quoted_pairs_may_escape_controls() {
        // RFC 4475 §3.1.1.2 (intmeth): quoted BEL, NUL and DEL.
        let a = one("\"BEL:\\\u{7} NUL:\\\0 DEL:\\\u{7f}\" <sip:a@b>");
        assert_eq!(a.display.as_deref(), Some("BEL:\u{7} NUL:\0 DEL:\u{7f}"));
        assert_eq!(a.to_header_value(), "\"BEL:\\\u{7} NUL:\\\0 DEL:\\\u{7f}\" <sip:a@b>");
        roundtrip("\"BEL:\\\u{7}\" <sip:a@b>;x=\"\\\0\"");
        // Only as a quoted-pair, only inside quotes, never CR or LF.
        for bad in [
            "\"a\u{7}\" <sip:a@b>",
            "\"\\\\\u{7}\" <sip:a@b>",
            "<sip:a\\\u{7}b>",
            "x\\\u{7} <sip:a@b>",
            "<sip:a@b>;p=x\\\u{7}",
            "\"\\\r\" <sip:a@b>",
            "\"\\\n\" <sip:a@b>",
        ] {
            assert_eq!(parse_name_addr(bad), Err(ParamError::ControlChar), "{bad:?}");
        }
    }

    #[test]
    fn whitespace_tolerance() {
        let l = parse_list(" \t\"A\"  <sip:a@b> ; tag = 12 ;lr\t, sip:c@d ; q = 0.5 ;  +g.oma.sip-im , *  ").unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].display.as_deref(), Some("A"));
        assert_eq!(l[0].params, vec![p("tag", Some("12")), p("lr", None)]);
        assert_eq!(l[1].uri, "sip:c@d");
        assert_eq!(l[1].params, vec![p("q", Some("0.5")), p("+g.oma.sip-im", None)]);
        assert_eq!(l[2].uri, "*");
        // Whitespace inside brackets around the URI is trimmed.
        assert_eq!(one("< sip:a@b >").uri, "sip:a@b");
    }

    #[test]
    fn case_insensitive_lookup_keeps_name_as_written() {
        let a = one("<sip:a@b>;Tag=XyZ;+G.OMA.SIP-IM");
        assert_eq!(a.tag(), Some("XyZ"));
        assert!(a.has_param("+g.oma.sip-im"));
        assert_eq!(a.params[1].name, "+G.OMA.SIP-IM");
        assert_eq!(a.param_value("+g.oma.sip-im"), None);
        assert_eq!(a.param("missing"), None);
    }

    #[test]
    fn multibyte_utf8() {
        let a = one("Jörg Müller <sip:jörg@例え.jp>;note=ü;x=\"日本\"");
        assert_eq!(a.display.as_deref(), Some("Jörg Müller"));
        assert_eq!(a.uri, "sip:jörg@例え.jp");
        assert_eq!(a.param_value("note"), Some("ü"));
        assert_eq!(a.param_value("x"), Some("日本"));
        assert_eq!(parse_name_addr("\"日本"), Err(ParamError::UnterminatedQuote));
        assert_eq!(
            parse_name_addr("\"日\\本\" <sip:a>").unwrap().display.as_deref(),
            Some("日本")
        );
        assert!(parse_name_addr("<sip:a>;é").is_err());
        assert!(parse_name_addr("日本 sip:a").is_err());
        roundtrip("Jörg Müller <sip:jörg@例え.jp>;note=ü;x=\"日本\"");
    }

    #[test]
    fn split_params_forms() {
        assert_eq!(
            split_params(r#";a;b=c;d="q""#).unwrap(),
            vec![p("a", None), p("b", Some("c")), p("d", Some("q"))]
        );
        assert_eq!(
            split_params(r#"a ; b = c"#).unwrap(),
            vec![p("a", None), p("b", Some("c"))]
        );
        assert_eq!(split_params("").unwrap(), vec![]);
        assert_eq!(split_params("  ").unwrap(), vec![]);
        assert_eq!(
            split_params(";branch=z9hG4bK776;received=[2001:db8::9];rport").unwrap(),
            vec![
                p("branch", Some("z9hG4bK776")),
                p("received", Some("[2001:db8::9]")),
                p("rport", None)
            ]
        );
        assert!(split_params(";a,b").is_err());
        assert!(split_params(";a;").is_err());
        assert_eq!(split_params(";a=\"x"), Err(ParamError::UnterminatedQuote));
    }

    #[test]
    fn limits() {
        let ok = vec!["<sip:a@b>"; MAX_ENTRIES].join(",");
        assert_eq!(parse_list(&ok).unwrap().len(), MAX_ENTRIES);
        let too_many = vec!["<sip:a@b>"; MAX_ENTRIES + 1].join(",");
        assert_eq!(parse_list(&too_many), Err(ParamError::TooManyEntries));

        let ok = format!("<sip:a@b>{}", ";x".repeat(MAX_PARAMS));
        assert_eq!(parse_name_addr(&ok).unwrap().params.len(), MAX_PARAMS);
        let too_many = format!("<sip:a@b>{}", ";x".repeat(MAX_PARAMS + 1));
        assert_eq!(parse_name_addr(&too_many), Err(ParamError::TooManyParams));
        assert_eq!(
            split_params(&";x".repeat(MAX_PARAMS + 1)),
            Err(ParamError::TooManyParams)
        );
    }

    #[test]
    fn serialization() {
        let a = NameAddr {
            display: Some("Display".into()),
            uri: "sip:a@b".into(),
            params: vec![
                Param::flag("a"),
                Param::with_value("b", "x y"),
                Param::with_value("c", "tok.en-1"),
                Param::with_value("d", ""),
            ],
        };
        assert_eq!(a.to_header_value(), r#""Display" <sip:a@b>;a;b="x y";c=tok.en-1;d="""#);
        assert_eq!(a.to_string(), a.to_header_value());
        assert_eq!(Param::with_value("q", "0.5").to_string(), "q=0.5");
        assert_eq!(one("sip:a@b;tag=1").to_header_value(), "<sip:a@b>;tag=1");
        assert_eq!(NameAddr::new("*").to_header_value(), "*");
        // A display name forces brackets, even for '*'.
        let mut s = NameAddr::new("*");
        s.display = Some("x".into());
        assert_eq!(s.to_header_value(), r#""x" <*>"#);
        // Hand-built values never inject CR/LF.
        let evil = NameAddr {
            display: Some("a\r\nVia: x".into()),
            uri: "sip:a@b\r\n".into(),
            params: vec![Param::with_value("p", "v\r\nX: y")],
        };
        let out = evil.to_header_value();
        assert!(!out.contains('\r') && !out.contains('\n'), "{out}");
        assert!(parse_name_addr(&out).is_ok());
    }

    fn roundtrip(s: &str) {
        let list = parse_list(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        check_roundtrip(&list);
    }

    fn check_roundtrip(list: &[NameAddr]) {
        for e in list {
            let text = e.to_header_value();
            assert_eq!(parse_name_addr(&text).as_ref(), Ok(e), "entry {text:?}");
        }
        let joined: Vec<String> = list.iter().map(NameAddr::to_header_value).collect();
        let joined = joined.join(", ");
        assert_eq!(parse_list(&joined).as_deref(), Ok(list), "list {joined:?}");
    }

    #[test]
    fn roundtrip_samples() {
        for s in [
            "Bob <sip:bob@example.com>;tag=1",
            r#""Bob \"B\" \\ S" <sip:bob@example.com;lr>;expires=60"#,
            "sip:a@b;tag=1;lr",
            "*",
            "*;+g.oma.sip-im;require;explicit",
            "<*>",
            r#"<sip:bob@10.0.0.1:5070;transport=tcp>;+g.oma.sip-im;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg,urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session";+sip.instance="<urn:uuid:0001>";expires=3600"#,
            "<sip:a@b>;+sip.instance=<urn:uuid:1>;x=\"\";y=a/b;z=[::1]:5060;w=a=b",
            r#""Doe, John" <sip:c@d;x=1,2>, sip:e@f, *"#,
            "<sip:\"odd<uri>",
            "a\tb <sip:x\ty>",
        ] {
            roundtrip(s);
        }
    }

    /// xorshift64* — deterministic, no extra dependencies.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics_and_roundtrips() {
        const PIECES: &[&str] = &[
            "\"",
            "<",
            ">",
            ";",
            ",",
            "=",
            "\\",
            " ",
            "\t",
            "*",
            "sip:",
            "a@b",
            "+g.oma.sip-im",
            "tag",
            "x",
            "é",
            "日",
            "[::1]",
            "\r",
            "%3A",
            "\u{FEFF}",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut ok = 0;
        for i in 0..6000 {
            let len = rng.below(48);
            let mut bytes = Vec::with_capacity(len * 2);
            for _ in 0..len {
                if i % 2 == 0 {
                    // Raw bytes, including invalid UTF-8 (becomes U+FFFD).
                    bytes.push(rng.next() as u8);
                } else {
                    bytes.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
                }
            }
            let s = String::from_utf8_lossy(&bytes);
            assert_eq!(check_name_addr(&s), parse_name_addr(&s).map(drop), "{s:?}");
            let _ = split_params(&s);
            if let Ok(list) = parse_list(&s) {
                ok += 1;
                check_roundtrip(&list);
            }
        }
        // The structured half must produce some successful parses, or the
        // roundtrip check above tested nothing.
        assert!(ok > 50, "only {ok} inputs parsed");
    }

    /// The byte-wise value scan against the char loop it replaced.
    #[test]
    fn value_chars_matches_char_loop() {
        fn old(s: &str) -> Result<usize, ParamError> {
            let mut c = Cursor::new(s);
            while let Some(ch) = c.peek() {
                if is_ws(ch) || matches!(ch, ';' | ',' | '"' | '<' | '>') {
                    break;
                }
                if is_ctl(ch) {
                    return Err(ParamError::ControlChar);
                }
                c.pos += ch.len_utf8();
            }
            Ok(c.pos)
        }
        const PIECES: &[&str] = &[
            "a", "1", ";", " ", "\t", "\u{7}", "\u{85}", "é", "日", ">", "\"", "[::1]", "\u{7f}",
        ];
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..5000 {
            let s: String = (0..rng.below(10)).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            let mut c = Cursor::new(&s);
            assert_eq!(c.value_chars().map(|()| c.pos), old(&s), "{s:?}");
        }
    }
}
