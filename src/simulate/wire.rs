//! How virtual devices reach the engine: loopback UDP sockets (one per
//! device index, shared by all users, so a user's devices have distinct
//! source addresses as the origin-device rule needs) or the in-process
//! memory transport (a distinct made-up address per device).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::invariants::Dev;
use super::SimError;
use crate::transport::{Admit, MemoryTransport};

pub enum Wire {
    Memory(Arc<MemoryTransport>),
    Udp {
        sockets: Vec<Arc<UdpSocket>>,
        server: SocketAddr,
    },
}

impl Wire {
    /// Connect the memory transport: everything the engine sends lands in `tx`.
    pub fn memory(m: Arc<MemoryTransport>, tx: Sender<Bytes>) -> Result<Wire, SimError> {
        let attached = m.attach(Arc::new(move |_to, data| {
            let _ = tx.send(data);
        }));
        if !attached {
            return Err(SimError::Setup("memory transport already attached".into()));
        }
        Ok(Wire::Memory(m))
    }

    /// One socket per device index with a receive thread feeding `tx`;
    /// the threads end when `stop` is set.
    pub fn udp(server: SocketAddr, devices: u32, tx: Sender<Bytes>, stop: Arc<AtomicBool>) -> Result<Wire, SimError> {
        let mut sockets = Vec::new();
        for j in 0..devices {
            let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| SimError::Setup(format!("udp socket: {e}")))?;
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .map_err(|e| SimError::Setup(format!("udp socket: {e}")))?;
            let s = Arc::new(s);
            let (rs, tx, stop) = (s.clone(), tx.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("sim-udp-{j}"))
                .spawn(move || {
                    let mut buf = vec![0u8; 65_535];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, _)) = rs.recv_from(&mut buf) {
                            let _ = tx.send(Bytes::copy_from_slice(&buf[..n]));
                        }
                    }
                })
                .map_err(|e| SimError::Setup(format!("thread: {e}")))?;
            sockets.push(s);
        }
        Ok(Wire::Udp { sockets, server })
    }

    /// The device's own address (its contact and source).
    pub fn addr(&self, dev: Dev, devices: u32) -> SocketAddr {
        match self {
            // 10.x.y.z, unique for up to 2^24 devices per port.
            Wire::Memory(_) => {
                let ip = std::net::Ipv4Addr::new(10, (dev >> 16) as u8, (dev >> 8) as u8, dev as u8);
                SocketAddr::new(ip.into(), 5060 + (dev >> 24) as u16)
            }
            Wire::Udp { sockets, .. } => {
                let s = &sockets[(dev % devices) as usize % sockets.len()];
                s.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
            }
        }
    }

    /// Send from device `dev`. False when the engine refused it at once
    /// (memory transport overload gate; the 503 also comes back as bytes).
    pub fn send(&self, dev: Dev, devices: u32, data: Bytes) -> bool {
        match self {
            Wire::Memory(m) => {
                let from = self.addr(dev, devices);
                matches!(m.inject(from, data), Admit::Accept)
            }
            Wire::Udp { sockets, server } => {
                let s = &sockets[(dev % devices) as usize % sockets.len()];
                s.send_to(&data, server).is_ok()
            }
        }
    }

    pub fn reliable(&self) -> bool {
        matches!(self, Wire::Memory(_))
    }
}
