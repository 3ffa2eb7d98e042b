//! The registered devices: UDP sockets that answer every request the server
//! forwards with 200 OK. A retransmission gets the same answer again, which
//! is what a stateless UAS does and what the server's transaction expects.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sip;

pub struct Devices {
    pub addrs: Vec<SocketAddr>,
    /// MESSAGEs received (retransmissions included).
    pub received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Devices {
    pub fn start(ip: &str, n: usize) -> std::io::Result<Devices> {
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let sock = crate::udp_socket(ip)?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            addrs.push(sock.local_addr()?);
            let (received, stop) = (received.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("device-{i}"))
                    .spawn(move || serve(&sock, &received, &stop))?,
            );
        }
        Ok(Devices {
            addrs,
            received,
            stop,
            threads,
        })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn serve(sock: &UdpSocket, received: &AtomicU64, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue; // read timeout: look at the stop flag
        };
        if let Some(is_message) = sip::answer(&buf[..n], &mut out) {
            if is_message {
                received.fetch_add(1, Ordering::Relaxed);
            }
            // A lost answer is retransmitted for on the server's Timer E.
            let _ = sock.send_to(&out, from);
        }
    }
}
