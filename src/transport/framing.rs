//! RFC 3261 §18.3 stream framing: a message ends Content-Length bytes after
//! the blank line. Bounded, so a hostile peer cannot make us buffer forever.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// Largest message accepted on a stream (headers + body).
pub const MAX_FRAME: usize = 256 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("message larger than {MAX_FRAME} bytes")]
    TooLarge,
    #[error("missing or invalid Content-Length on a stream")]
    BadContentLength,
}

#[derive(Default)]
pub struct Framer {
    buf: BytesMut,
    /// Where the search for the blank line resumes: bytes before it were
    /// already searched, so a peer trickling a byte at a time costs linear,
    /// not quadratic, time.
    scanned: usize,
}

impl Framer {
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Buffered bytes (for flow control).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The buffered header block, once complete (to answer a message that
    /// cannot be framed).
    pub fn head(&self) -> Option<&[u8]> {
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        Some(&self.buf[..end + 4])
    }

    /// The next complete message, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        // Keep-alive CRLFs between messages.
        let ws = self.buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        if ws > 0 {
            self.buf.advance(ws);
            self.scanned = 0;
        }
        let from = self.scanned.min(self.buf.len());
        let Some(head_end) = self.buf[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + from)
        else {
            self.scanned = self.buf.len().saturating_sub(3);
            return if self.buf.len() > MAX_FRAME {
                Err(FrameError::TooLarge)
            } else {
                Ok(None)
            };
        };
        self.scanned = head_end;
        let len = content_length(&self.buf[..head_end])?;
        let total = (head_end + 4).saturating_add(len);
        if total > MAX_FRAME {
            return Err(FrameError::TooLarge);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        self.scanned = 0;
        Ok(Some(self.buf.split_to(total).freeze()))
    }
}

/// Content-Length (or compact `l`) from a header block; mandatory on streams.
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            return value.trim().parse().map_err(|_| FrameError::BadContentLength);
        }
    }
    Err(FrameError::BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pipelined_and_partial_messages() {
        let mut f = Framer::default();
        let m1 = b"MESSAGE a SIP/2.0\r\nContent-Length: 5\r\n\r\nhello";
        let m2 = b"OPTIONS b SIP/2.0\r\nl: 0\r\n\r\n";
        f.extend(b"\r\n\r\n");
        f.extend(m1);
        f.extend(&m2[..10]);
        assert_eq!(&f.next_frame().unwrap().unwrap()[..], &m1[..]);
        assert_eq!(f.next_frame().unwrap(), None);
        f.extend(&m2[10..]);
        assert_eq!(&f.next_frame().unwrap().unwrap()[..], &m2[..]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn rejects_missing_length_and_oversize() {
        let mut f = Framer::default();
        f.extend(b"MESSAGE a SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FrameError::BadContentLength));
        let mut g = Framer::default();
        g.extend(format!("M a SIP/2.0\r\nContent-Length: {}\r\n\r\n", MAX_FRAME).as_bytes());
        assert_eq!(g.next_frame(), Err(FrameError::TooLarge));
        let mut h = Framer::default();
        h.extend(&vec![b'a'; MAX_FRAME + 1]);
        assert_eq!(h.next_frame(), Err(FrameError::TooLarge));
        let mut i = Framer::default();
        i.extend(b"M a SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(i.next_frame(), Err(FrameError::BadContentLength));
    }

    #[test]
    fn byte_by_byte_trickle_frames() {
        let mut f = Framer::default();
        let m = b"\r\nOPTIONS b SIP/2.0\r\nl: 3\r\n\r\nabcOPTIONS c SIP/2.0\r\nl: 0\r\n\r\n";
        let mut got = Vec::new();
        for b in m.iter() {
            f.extend(&[*b]);
            while let Some(frame) = f.next_frame().unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0][..], &m[2..32]);
        assert_eq!(f.pending(), 0);
        assert!(f.head().is_none());
    }
}
