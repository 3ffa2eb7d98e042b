//! Integer formatting without `fmt` machinery: the serializers write a
//! Content-Length, status code or port per message.

/// `n` in decimal, written right-aligned into `buf`; returns the digits.
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &str {
    // Only ASCII digits were written.
    std::str::from_utf8(decimal_bytes(n, buf)).unwrap_or_default()
}

/// [`decimal`] as bytes, for writers of bytes: no UTF-8 check (about 50
/// instructions, more than the digits themselves).
pub fn decimal_bytes(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_to_string() {
        let mut buf = [0; 20];
        for n in [0, 1, 9, 10, 99, 100, 5060, 65535, 123_456_789, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string());
            assert_eq!(decimal_bytes(n, &mut buf), n.to_string().as_bytes());
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x >> (x % 64);
            assert_eq!(decimal(n, &mut buf), n.to_string());
        }
    }
}
