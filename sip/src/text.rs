//! Small string helpers for the parsers' hot paths: same results as the
//! `str` methods they stand in for, without decoding chars or calling into
//! `memchr` for the few bytes a header field holds.

/// ASCII bytes that `char::is_whitespace` accepts (U+0009..U+000D, U+0020).
pub(crate) const fn is_ascii_white(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// Exactly `str::trim`. Inline: most header fields have nothing to trim,
/// which two table loads settle without a call.
#[inline]
pub(crate) fn trim(s: &str) -> &str {
    match s.as_bytes() {
        [first, .., last] | [first @ last] if is_ascii_kept(*first) && is_ascii_kept(*last) => s,
        [] => s,
        _ => trim_slow(s),
    }
}

/// [`trim`] when an end needs a look. ASCII whitespace is cut byte-wise (the
/// cuts are char boundaries); only when an end is left on a non-ASCII char,
/// which may be Unicode whitespace, does `str::trim` decode it.
#[inline(never)]
fn trim_slow(s: &str) -> &str {
    let b = s.as_bytes();
    let mut start = 0;
    let mut end = b.len();
    while start < end && is_ascii_white(b[start]) {
        start += 1;
    }
    while end > start && is_ascii_white(b[end - 1]) {
        end -= 1;
    }
    let t = &s[start..end];
    match t.as_bytes() {
        [] => t,
        [first, .., last] | [first @ last] if first.is_ascii() && last.is_ascii() => t,
        _ => t.trim(),
    }
}

/// Trim SP/HTAB; byte-wise (both are ASCII, so the cuts are char boundaries).
pub(crate) fn trim_ws(s: &str) -> &str {
    &s[ws_trimmed(s.as_bytes())]
}

/// [`trim_ws`] for bytes.
pub(crate) fn trim_ws_bytes(b: &[u8]) -> &[u8] {
    &b[ws_trimmed(b)]
}

/// The range of `b` left once leading and trailing SP/HTAB are cut.
fn ws_trimmed(b: &[u8]) -> std::ops::Range<usize> {
    let start = b.iter().position(|&c| c != b' ' && c != b'\t').unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |e| e + 1);
    start..end
}

/// ASCII case-insensitive equality, trying the usual exact match first
/// (names and tokens are mostly written in their canonical case): a memcmp
/// is cheaper than folding the case of every byte.
pub(crate) fn same_text(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a == b || a.eq_ignore_ascii_case(b))
}

/// The media type of a Content-Type value as written: parameters and the
/// whitespace around it cut off (`;` is ASCII: a byte search finds what
/// `split(';')` would).
pub(crate) fn media_type(value: &str) -> &str {
    trim(&value[..find_byte(b';', value.as_bytes()).unwrap_or(value.len())])
}

/// An ASCII byte `trim` keeps: one table load.
fn is_ascii_kept(b: u8) -> bool {
    static KEPT: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 0x80 {
            t[i] = !is_ascii_white(i as u8);
            i += 1;
        }
        t
    };
    KEPT[b as usize]
}

/// Does `s` hold a char that `char::is_whitespace` accepts?
pub(crate) fn has_whitespace(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(is_ascii_white)
    } else {
        s.contains(char::is_whitespace)
    }
}

/// Offset of the first `needle` in `hay`: a plain loop, cheaper than
/// `memchr`'s dispatch for the handful of bytes of a URI part or parameter.
pub(crate) fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Offset of the last `needle` in `hay` (see [`find_byte`]).
pub(crate) fn rfind_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().rposition(|&b| b == needle)
}

/// Offset of the first byte of `hay` at or after `from` that is one of
/// `set`. Eight bytes per step (SWAR): for a header value's few dozen bytes
/// this beats `memchr2` and repeated `memchr` calls, whose dispatch alone
/// costs dozens of instructions each.
pub(crate) fn find_any<const N: usize>(hay: &[u8], from: usize, set: [u8; N]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // 0x80 in exactly the zero bytes of `x` (no borrow between bytes).
    let zero_bytes = |x: u64| !(((x & LOW7) + LOW7) | x | LOW7);
    let mut i = from;
    while let Some(chunk) = hay.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        let hits = set.iter().fold(0, |m, &b| m | zero_bytes(w ^ (ONES * u64::from(b))));
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let tail = hay.get(i..)?;
    tail.iter().position(|b| set.contains(b)).map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_ws_is_sp_and_htab_only() {
        for (raw, want) in [
            ("", ""),
            (" \t ", ""),
            ("\ta b\t ", "a b"),
            ("é ", "é"),
            ("\u{a0}x\n", "\u{a0}x\n"),
        ] {
            assert_eq!(trim_ws(raw), want, "{raw:?}");
            assert_eq!(trim_ws(raw), raw.trim_matches(|c| c == ' ' || c == '\t'), "{raw:?}");
        }
    }

    #[test]
    fn trim_matches_str_trim() {
        let samples = [
            "",
            " ",
            "\t\r\n\x0b\x0c",
            "a",
            " a ",
            "\u{a0}a\u{a0}",
            " \u{2003}x\u{3000} ",
            "é",
            " é ",
            "\u{85}",
            "a\u{1c}",
            "\x0bvalue\x0c",
            " 日本 ",
        ];
        for s in samples {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
        // Every short string over a mixed alphabet.
        let alphabet = [" ", "\t", "a", "\u{a0}", "é", "\u{2028}", "\x0b", "\x1f"];
        for n in 0..alphabet.len().pow(4) {
            let mut s = String::new();
            let mut k = n;
            for _ in 0..4 {
                s.push_str(alphabet[k % alphabet.len()]);
                k /= alphabet.len();
            }
            assert_eq!(trim(&s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn has_whitespace_matches_chars() {
        for s in ["", "a", "a b", "a\x0bb", "\u{a0}", "é", "é\u{2028}", "ab\x1f"] {
            assert_eq!(has_whitespace(s), s.contains(char::is_whitespace), "{s:?}");
        }
    }

    #[test]
    fn find_any_matches_position() {
        let set = [b'"', b',', b'/', b'\t'];
        let alphabet = [b'a', b'"', b',', b'/', b'\t', 0x00, 0x80, 0xff, b'.', b'-'];
        let mut rng = crate::cpim::mutate::XorShift(0x0f1e_2d3c_4b5a_6978);
        for _ in 0..20_000 {
            let hay: Vec<u8> = (0..rng.below(40))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            for from in 0..=hay.len() + 1 {
                let want = hay
                    .get(from..)
                    .and_then(|t| t.iter().position(|b| set.contains(b)))
                    .map(|p| from + p);
                assert_eq!(find_any(&hay, from, set), want, "{hay:?} {from}");
            }
        }
    }

    #[test]
    fn byte_search_matches_memchr() {
        for hay in [&b""[..], b"a", b";", b"a;b;c", b";;", b"xyz"] {
            assert_eq!(find_byte(b';', hay), memchr::memchr(b';', hay));
            assert_eq!(rfind_byte(b';', hay), memchr::memrchr(b';', hay));
        }
    }
}
