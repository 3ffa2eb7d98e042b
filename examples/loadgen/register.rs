//! Registration phase: every user gets its one device, with a window of
//! outstanding REGISTERs and Timer E style retransmission, since a lost
//! registration would turn into message failures later.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::sip;

const WINDOW: usize = 200;
const RETRANSMIT: Duration = Duration::from_millis(500);
const ATTEMPTS: u32 = 7;

/// Registers `u0..u{users}`; user `i`'s contact is `devices[i % len]`.
/// `sock` is non-blocking (a lane's sender socket, idle until a step).
pub fn register_all(
    sock: &UdpSocket,
    server: SocketAddr,
    users: usize,
    devices: &[SocketAddr],
) -> Result<Duration, String> {
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut rbuf = vec![0u8; 65_536];
    let mut pending: HashMap<usize, (Instant, u32)> = HashMap::new();
    let (mut next, mut done) = (0, 0);
    let send = |buf: &mut Vec<u8>, u: usize| -> Result<(), String> {
        sip::register(buf, server, local, u, devices[u % devices.len()]);
        sock.send_to(buf, server)
            .map(|_| ())
            .map_err(|e| format!("send REGISTER: {e}"))
    };
    while done < users {
        while pending.len() < WINDOW && next < users {
            send(&mut buf, next)?;
            pending.insert(next, (Instant::now(), 1));
            next += 1;
        }
        match sock.recv_from(&mut rbuf) {
            Ok((n, _)) => {
                if let Some(r) = sip::parse_response(&rbuf[..n]) {
                    let user = r.seq as usize;
                    if r.run == 0 && r.status >= 200 && pending.remove(&user).is_some() {
                        if r.status != 200 {
                            return Err(format!("REGISTER of u{user} answered {}", r.status));
                        }
                        done += 1;
                    }
                }
            }
            Err(_) => std::thread::sleep(Duration::from_micros(200)), // nothing yet
        }
        let now = Instant::now();
        let mut resend = Vec::new();
        for (&u, (at, tries)) in pending.iter_mut() {
            if now.duration_since(*at) >= RETRANSMIT {
                if *tries >= ATTEMPTS {
                    return Err(format!("REGISTER of u{u}: no answer after {ATTEMPTS} attempts"));
                }
                *at = now;
                *tries += 1;
                resend.push(u);
            }
        }
        for u in resend {
            send(&mut buf, u)?;
        }
    }
    Ok(start.elapsed())
}
