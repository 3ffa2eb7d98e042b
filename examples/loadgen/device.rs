//! The registered devices: UDP sockets that answer every request the server
//! forwards with 200 OK. A retransmission gets the same answer again, which
//! is what a stateless UAS does and what the server's transaction expects.
//! The lanes (see `lanes`) serve them on every wake-up.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sip;

/// Answers every request waiting on `sock` (non-blocking); counts the
/// MESSAGEs (retransmissions included) in `received`.
pub fn answer_all(sock: &UdpSocket, buf: &mut [u8], out: &mut Vec<u8>, received: &AtomicU64) {
    while let Ok((n, from)) = sock.recv_from(buf) {
        if let Some(is_message) = sip::answer(&buf[..n], out) {
            if is_message {
                received.fetch_add(1, Ordering::Relaxed);
            }
            // A lost answer is retransmitted for on the server's Timer E.
            let _ = sock.send_to(out, from);
        }
    }
}
