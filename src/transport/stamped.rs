//! UDP receive with the kernel's receive time (SO_TIMESTAMPNS).
//!
//! How long a datagram waited in the socket buffer and in the worker's
//! queues is what tells an overloaded server from a busy one: past the
//! client's retransmission timer (T1, 500 ms) every waiting request is
//! sent again, and a server that handles what it has in arrival order
//! answers the requests of a second ago while their retransmissions pile
//! up behind (congestion collapse: docs/overload.md). The ingress refuses
//! new requests that waited too long; this gives it the wait.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::SockAddr;

/// Ask the kernel to stamp each datagram of `sock` with its receive time.
/// When no socket of the host had asked before, the kernel turns stamping
/// on a moment later (a work queue), and stamps the datagrams of that
/// moment as they are read: they look as if they had not waited, which at
/// worst admits a request the queue-delay limit would have refused.
pub(super) fn enable(sock: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Control buffer for one timestamp message, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Receive one datagram into `buf`: its length, sender and kernel receive
/// time (None when the kernel gave none, e.g. stamping is off).
pub(super) fn recv_from(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    let mut control = Control([0; 64]);
    let mut stamp = None;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `try_init` hands us storage for a sockaddr and its length; the
    // kernel writes at most `*len` bytes of address there, `buf.len()` bytes
    // into `buf` (through `iov`) and `msg_controllen` bytes into `control`,
    // all of which outlive the call. The cmsg walk stays within
    // `msg_controllen` (CMSG_FIRSTHDR/NXTHDR check it) and reads the
    // timespec unaligned.
    let (n, addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = control.0.len() as _;
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    stamp = system_time(ts.tv_sec, ts.tv_nsec);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            Ok(n as usize)
        })?
    };
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address"))?;
    Ok((n, peer, stamp))
}

fn system_time(sec: libc::time_t, nsec: libc::c_long) -> Option<SystemTime> {
    let secs = u64::try_from(sec).ok()?;
    let nanos = u32::try_from(nsec).ok().filter(|n| *n < 1_000_000_000)?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// The kernel's clock and ours, read together once per batch of reads, to
/// turn kernel receive times (wall clock) into `Instant`s.
#[derive(Clone, Copy)]
pub(super) struct Clocks {
    wall: SystemTime,
    mono: Instant,
}

impl Clocks {
    pub(super) fn now() -> Clocks {
        Clocks {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// The `Instant` of a kernel receive time. A stamp after `wall` (the
    /// wall clock stepped back) counts as now.
    pub(super) fn instant(&self, stamp: SystemTime) -> Instant {
        let waited = self.wall.duration_since(stamp).unwrap_or_default();
        self.mono.checked_sub(waited).unwrap_or(self.mono)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stamped when it arrived, not when it was read 30 ms later. The
    /// kernel turns stamping on for the first socket that asks through a
    /// work queue, a moment later: until then it stamps datagrams as they
    /// are read (CI failed once on that), so the test tries a few times.
    #[test]
    fn datagrams_carry_their_receive_time() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut waits = Vec::new();
        for _ in 0..50 {
            let before = SystemTime::now();
            tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            let mut buf = [0u8; 64];
            let (n, peer, stamp) = recv_from(&rx, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(peer, tx.local_addr().unwrap());
            let stamp = stamp.expect("a kernel receive time");
            assert!(stamp >= before - Duration::from_millis(5), "{stamp:?} before the send");
            let waited = Clocks::now().instant(stamp).elapsed();
            if waited >= Duration::from_millis(25) {
                return;
            }
            waits.push(waited);
        }
        panic!("every datagram stamped as it was read: waits {waits:?}");
    }

    #[test]
    fn without_stamping_there_is_no_time_and_ipv6_peers_are_read() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this host
        };
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        let (n, peer, stamp) = recv_from(&rx, &mut buf).unwrap();
        assert_eq!((n, peer, stamp), (1, tx.local_addr().unwrap(), None));
    }

    #[test]
    fn a_truncated_datagram_reports_the_buffer_length_and_an_empty_socket_would_block() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"0123456789", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = [0u8; 4];
        let (n, _, _) = recv_from(&rx, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"0123");
        let e = recv_from(&rx, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn clocks_map_stamps_into_the_past_and_never_the_future() {
        let c = Clocks::now();
        let past = c.wall - Duration::from_millis(100);
        assert_eq!(c.mono - c.instant(past), Duration::from_millis(100));
        assert_eq!(c.instant(c.wall + Duration::from_secs(1)), c.mono);
        assert_eq!(system_time(-1, 0), None);
        assert_eq!(system_time(1, 1_000_000_000), None);
    }
}
