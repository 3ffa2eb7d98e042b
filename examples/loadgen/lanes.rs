//! The generator's threads. Each lane owns one sender socket and a share
//! of the device sockets, and wakes every `poll`: it answers what the
//! server forwarded to its devices, then advances its share of the running
//! step (`run::LaneRun`). Lanes live for the whole process, so devices are
//! answered between steps too.
//!
//! Why polling threads and not a blocking reader per socket: a reader
//! blocked in `recv` is woken by the server's `sendto`, which on loopback
//! runs in the server's own context. That cost the server a wake-up per
//! datagram (10 % of cpm's worker at 10,000 msg/s) and the generator a
//! context switch per datagram (half of its CPU), both taken from the two
//! cores the server is measured on (perf, docs/performance.md). Nobody
//! waits on a polled socket, so a server's send only queues the datagram.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::device;
use crate::run::{Job, LaneRun, Outcome, Step};

pub struct Lanes {
    /// MESSAGEs the devices received (retransmissions included).
    pub received: Arc<AtomicU64>,
    senders: bool,
    jobs: Vec<mpsc::Sender<Arc<Job>>>,
    results: mpsc::Receiver<Outcome>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Lanes {
    /// One lane per sender socket (at least one); device socket `j` goes
    /// to lane `j mod lanes`. Every socket is made non-blocking.
    pub fn start(senders: &[UdpSocket], devices: Vec<UdpSocket>, poll: Duration) -> std::io::Result<Lanes> {
        let n = senders.len().max(1);
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (done, results) = mpsc::channel();
        let mut shares: Vec<Vec<UdpSocket>> = (0..n).map(|_| Vec::new()).collect();
        for (j, d) in devices.into_iter().enumerate() {
            d.set_nonblocking(true)?;
            shares[j % n].push(d);
        }
        let (mut jobs, mut threads) = (Vec::new(), Vec::new());
        for (i, devs) in shares.into_iter().enumerate() {
            let sender = match senders.get(i) {
                Some(s) => {
                    s.set_nonblocking(true)?;
                    let local = s.local_addr()?;
                    Some((s.try_clone()?, local))
                }
                None => None,
            };
            let (tx, rx) = mpsc::channel();
            jobs.push(tx);
            let lane = Lane {
                idx: i,
                lanes: n,
                sender,
                devices: devs,
                poll,
                jobs: rx,
                done: done.clone(),
                received: received.clone(),
                stop: stop.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("lane-{i}"))
                    .spawn(move || lane.run())?,
            );
        }
        Ok(Lanes {
            received,
            senders: !senders.is_empty(),
            jobs,
            results,
            stop,
            threads,
        })
    }

    /// Runs `step` on every lane and waits for all of their shares.
    pub fn run(&self, step: Step) -> std::io::Result<Outcome> {
        if !self.senders {
            return Err(std::io::Error::other("no sender sockets"));
        }
        let job = Arc::new(Job::new(step));
        for tx in &self.jobs {
            tx.send(job.clone())
                .map_err(|_| std::io::Error::other("a lane has stopped"))?;
        }
        let mut total = Outcome::default();
        for _ in 0..self.jobs.len() {
            loop {
                match self.results.recv_timeout(Duration::from_secs(1)) {
                    Ok(o) => {
                        total.merge(o);
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) if !self.threads.iter().any(|t| t.is_finished()) => {}
                    Err(_) => return Err(std::io::Error::other("a lane thread died")),
                }
            }
        }
        Ok(total)
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Lane {
    idx: usize,
    lanes: usize,
    sender: Option<(UdpSocket, SocketAddr)>,
    devices: Vec<UdpSocket>,
    poll: Duration,
    jobs: mpsc::Receiver<Arc<Job>>,
    done: mpsc::Sender<Outcome>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Lane {
    fn run(self) {
        let mut rbuf = vec![0u8; 65_536];
        let mut answer = Vec::with_capacity(1024);
        let mut current: Option<LaneRun> = None;
        while !self.stop.load(Ordering::Relaxed) {
            for d in &self.devices {
                device::answer_all(d, &mut rbuf, &mut answer, &self.received);
            }
            if let Some((sock, local)) = &self.sender {
                if current.is_none() {
                    current = self
                        .jobs
                        .try_recv()
                        .ok()
                        .map(|job| LaneRun::new(job, *local, self.idx, self.lanes));
                }
                if current.as_mut().is_some_and(|run| run.tick(sock, &mut rbuf)) {
                    if let Some(run) = current.take() {
                        let _ = self.done.send(run.finish());
                    }
                }
            }
            // No spinning: the generator shares the cores with the server.
            // A wake-up sends the messages that fell due since the last one.
            std::thread::sleep(self.poll);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn sock() -> UdpSocket {
        crate::udp_socket("127.0.0.1").expect("loopback socket")
    }

    fn step(server: SocketAddr, run: u32, messages: u64) -> Step {
        Step {
            server,
            run,
            rate: 4000.0,
            messages,
            users: 10,
            timeout: Duration::from_millis(1000),
            max_outstanding: 10_000,
            t1: Duration::from_millis(500),
            tick: Duration::ZERO,
            window: Duration::from_millis(100),
        }
    }

    #[test]
    fn lanes_answer_devices_and_collect_every_answer() {
        // An echo lane (device socket only) plays the server.
        let echo_sock = sock();
        let echo_addr = echo_sock.local_addr().unwrap();
        let echo = Lanes::start(&[], vec![echo_sock], Duration::from_micros(200)).unwrap();
        assert!(echo.run(step(echo_addr, 1, 1)).is_err(), "no sender sockets");
        let senders = [sock(), sock()];
        let lanes = Lanes::start(&senders, Vec::new(), Duration::from_micros(200)).unwrap();
        // Two steps in a row: the second one's counts are its own.
        for run in 1..=2 {
            let o = lanes.run(step(echo_addr, run, 400)).unwrap();
            assert_eq!((o.sent, o.ok, o.failed(), o.late), (400, 400, 0, 0), "run {run}");
            assert_eq!(o.hist.count(), 400);
            assert!(!o.worst_by_window.is_empty() && o.worst_by_window.iter().all(|&w| w < 1_000_000));
        }
        assert_eq!(
            echo.received.load(Ordering::Relaxed),
            800,
            "every MESSAGE answered once"
        );
        lanes.stop();
        echo.stop();
    }

    #[test]
    fn unanswered_messages_time_out() {
        // A socket nobody reads: every message times out after its resends.
        let silent = sock();
        let lanes = Lanes::start(&[sock()], Vec::new(), Duration::from_micros(200)).unwrap();
        let mut st = step(silent.local_addr().unwrap(), 1, 20);
        st.timeout = Duration::from_millis(300);
        st.t1 = Duration::from_millis(100);
        let o = lanes.run(st).unwrap();
        assert_eq!((o.sent, o.ok, o.timeouts), (20, 0, 20));
        assert_eq!(
            o.retransmits, 20,
            "one resend each (at 100 ms; the next, 300 ms, is the timeout)"
        );
        lanes.stop();
    }
}
