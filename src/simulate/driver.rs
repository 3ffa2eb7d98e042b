//! The simulation loop: one thread plays every virtual device. Phases:
//! register everyone (bounded window), traffic with churn for the duration,
//! drain (every device comes back, deferred messages and reports arrive),
//! optionally settle (user actors passivate) for the idle memory figure.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_sip::{imdn, Message, ResponseBuilder};

use super::device::{Device, Sip, State};
use super::invariants::{Checker, Dev, ReportKind};
use super::report::Report;
use super::wire::Wire;
use super::{group_members, secs, Engine, SimError, SimOptions, SimTransport};
use crate::memory::{rss, trim_heap};

/// Our own retransmission timer (UDP) and the give-up time of a request.
const RETX_FIRST: Duration = Duration::from_millis(500);
const RETX_MAX: Duration = Duration::from_secs(4);
const GIVE_UP: Duration = Duration::from_secs(32);
/// A request the engine shed with 503 is sent again after this.
const SHED_RETRY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Register(Dev),
    Unregister(Dev),
    Message(u64, Dev),
    Report(Dev),
}

struct Pending {
    purpose: Purpose,
    data: Bytes,
    sent: Instant,
    next: Instant,
    interval: Duration,
    /// The engine shed it (503 or refused at the gate): send it again.
    shed: bool,
}

struct Sim<'a> {
    opts: &'a SimOptions,
    sip: Sip,
    wire: Wire,
    rx: Receiver<Bytes>,
    devs: Vec<Device>,
    /// Members of each group (`group_members`).
    groups: Vec<Vec<u32>>,
    checker: Checker,
    pending: HashMap<String, Pending>,
    /// Branches of forks already answered (UDP retransmissions).
    seen: HashSet<String>,
    back: VecDeque<(Instant, Dev)>,
    /// Display reports not sent yet (`--read-delay`): when, by whom, on what.
    reads: BinaryHeap<Reverse<(Instant, Dev, u64)>>,
    rng: u64,
    registering: usize,
    registered: u64,
    draining: bool,
    rep: Report,
}

pub(super) fn drive(opts: &SimOptions, engine: &Engine) -> Result<Report, SimError> {
    let (tx, rx) = channel();
    let stop = Arc::new(AtomicBool::new(false));
    let wire = match (opts.transport, &engine.memory, engine.udp) {
        (SimTransport::Memory, Some(m), _) => Wire::memory(m.clone(), tx)?,
        (SimTransport::Udp, _, Some(server)) => Wire::udp(server, opts.devices, tx, stop.clone())?,
        _ => return Err(SimError::Setup("engine has no listener for this transport".into())),
    };
    let n = (opts.users * opts.devices) as usize;
    let mut sim = Sim {
        opts,
        sip: Sip {
            devices: opts.devices,
            nonce: cpm_actors::unix_now().to_string(),
        },
        wire,
        rx,
        devs: vec![Device::NEW; n],
        groups: (0..opts.groups).map(|k| group_members(opts, k)).collect(),
        checker: Checker::with_devices(opts.devices),
        pending: HashMap::new(),
        seen: HashSet::new(),
        back: VecDeque::new(),
        reads: BinaryHeap::new(),
        rng: opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        registering: 0,
        registered: 0,
        draining: false,
        rep: Report {
            transport: match opts.transport {
                SimTransport::Udp => "udp",
                SimTransport::Memory => "memory",
            },
            users: opts.users,
            devices: opts.devices,
            rss_start: rss().0,
            sim_bytes: (n * std::mem::size_of::<Device>()) as u64,
            ..Default::default()
        },
    };
    let began = Instant::now();
    let cpu_start = engine.core.workers.cpu_seconds();
    sim.register_all(engine);
    sim.traffic(engine);
    sim.drain(engine);
    sim.settle(engine);
    stop.store(true, Ordering::Relaxed);
    Ok(sim.finish(engine, began, &cpu_start))
}

impl Sim<'_> {
    fn rand(&mut self) -> u64 {
        // xorshift64*: enough for picking users; reproducible per seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u32) -> u32 {
        (self.rand() % n.max(1) as u64) as u32
    }

    fn send(&mut self, dev: Dev, call_id: String, data: Bytes, purpose: Purpose) {
        let now = Instant::now();
        let accepted = self.wire.send(dev, self.opts.devices, data.clone());
        let next = if accepted { now + RETX_FIRST } else { now + SHED_RETRY };
        let p = Pending {
            purpose,
            data,
            sent: now,
            next,
            interval: RETX_FIRST,
            shed: !accepted,
        };
        if self.pending.insert(call_id.clone(), p).is_some() {
            self.checker.violation(format!("simulator reused Call-ID {call_id}"));
        }
    }

    fn register(&mut self, dev: Dev) {
        let d = &mut self.devs[dev as usize];
        d.state = State::Registering;
        d.cseq += 1;
        let addr = self.wire.addr(dev, self.opts.devices);
        let (call_id, data) = self.sip.online(dev, addr, d.cseq);
        self.registering += 1;
        self.send(dev, call_id, data, Purpose::Register(dev));
    }

    fn leave(&mut self, dev: Dev) {
        let d = &mut self.devs[dev as usize];
        if d.state != State::Online {
            return;
        }
        d.state = State::Leaving;
        d.cseq += 1;
        d.epoch += 1;
        let addr = self.wire.addr(dev, self.opts.devices);
        let (call_id, data) = self.sip.register(dev, addr, d.cseq, 0);
        self.send(dev, call_id, data, Purpose::Unregister(dev));
    }

    /// One message: to a group (`--group-share` of them, when there are
    /// groups) or to a random other user.
    fn send_message(&mut self) -> bool {
        let to_group = !self.groups.is_empty() && ((self.rand() % 1_000_000) as f64) < self.opts.group_share * 1e6;
        match to_group {
            true => self.send_group_message(),
            false => self.send_pager_message(),
        }
    }

    /// An online device that has no MESSAGE in flight, of a user `pick`
    /// chooses (a few tries).
    fn idle_device(&mut self, mut pick: impl FnMut(&mut Self) -> u32) -> Option<Dev> {
        let m = self.opts.devices;
        (0..16).find_map(|_| {
            let dev = pick(self) * m + self.below(m);
            let d = self.devs[dev as usize];
            (d.state == State::Online && !d.busy).then_some(dev)
        })
    }

    /// A random online, idle device sends one message to a random other user.
    fn send_pager_message(&mut self) -> bool {
        let m = self.opts.devices;
        let users = self.opts.users;
        let Some(dev) = self.idle_device(|s| s.below(users)) else {
            return false;
        };
        let from_user = dev / m;
        let mut to = self.below(users - 1);
        if to >= from_user {
            to += 1;
        }
        let online: Vec<(Dev, u32)> = (to * m..(to + 1) * m)
            .filter(|r| self.devs[*r as usize].state == State::Online)
            .map(|r| (r, self.devs[r as usize].epoch))
            .collect();
        let id = self.checker.sent(dev, to, online);
        self.send_new(id, dev, &format!("u{to}"));
        true
    }

    /// A random online, idle device of a member sends one message to its group.
    fn send_group_message(&mut self) -> bool {
        let group = self.below(self.groups.len() as u32);
        let size = self.groups[group as usize].len() as u32;
        let Some(dev) = self.idle_device(|s| {
            let i = s.below(size);
            s.groups[group as usize][i as usize]
        }) else {
            return false;
        };
        let sender = dev / self.opts.devices;
        let others = self.groups[group as usize]
            .iter()
            .copied()
            .filter(|u| *u != sender)
            .collect();
        let id = self.checker.sent_group(dev, group, others);
        self.send_new(id, dev, &format!("g{group}"));
        true
    }

    fn send_new(&mut self, id: u64, dev: Dev, to: &str) {
        let addr = self.wire.addr(dev, self.opts.devices);
        let (call_id, data) = self.sip.message(id, dev, addr, to);
        self.devs[dev as usize].busy = true;
        self.send(dev, call_id, data, Purpose::Message(id, dev));
    }

    fn churn(&mut self) {
        self.rep.churn_events += 1;
        let m = self.opts.devices;
        let user = self.below(self.opts.users);
        if self.rand().is_multiple_of(2) {
            let dev = user * m + self.below(m);
            self.leave(dev);
        } else {
            for dev in user * m..(user + 1) * m {
                self.leave(dev);
            }
        }
    }

    /// Handle what arrived until `until`, then run the timers once.
    fn pump(&mut self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            match self.rx.recv_timeout(until - now) {
                Ok(data) => self.inbound(data),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    break;
                }
            }
        }
        self.timers();
    }

    fn timers(&mut self) {
        let now = Instant::now();
        while let Some(&(t, dev)) = self.back.front() {
            if t > now {
                break;
            }
            self.back.pop_front();
            if self.devs[dev as usize].state == State::Offline {
                self.register(dev);
            }
        }
        while let Some(&Reverse((t, dev, id))) = self.reads.peek() {
            if t > now {
                break;
            }
            self.reads.pop();
            if self.devs[dev as usize].state == State::Online {
                self.report(dev, id, ReportKind::Display);
            } else {
                self.reads.push(Reverse((now + Duration::from_millis(200), dev, id)));
            }
        }
        let reliable = self.wire.reliable();
        let mut resend = Vec::new();
        let mut lost = Vec::new();
        for (call_id, p) in self.pending.iter_mut() {
            if now.duration_since(p.sent) > GIVE_UP {
                lost.push(call_id.clone());
            } else if now >= p.next {
                // Memory is reliable: only requests the gate shed are sent again.
                if !reliable || p.shed {
                    resend.push((p.purpose, p.data.clone()));
                }
                p.shed = false;
                p.interval = (p.interval * 2).min(RETX_MAX);
                p.next = now + p.interval;
            }
        }
        for (purpose, data) in resend {
            self.rep.retransmissions += 1;
            let dev = match purpose {
                Purpose::Register(d) | Purpose::Unregister(d) | Purpose::Message(_, d) | Purpose::Report(d) => d,
            };
            self.wire.send(dev, self.opts.devices, data);
        }
        for call_id in lost {
            if let Some(p) = self.pending.remove(&call_id) {
                self.checker
                    .violation(format!("{:?} ({call_id}): no final response within 32 s", p.purpose));
                self.answered(p.purpose, 408);
            }
        }
    }

    fn inbound(&mut self, data: Bytes) {
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => return self.checker.violation(format!("engine sent unparsable bytes: {e}")),
        };
        if msg.is_request() {
            return self.request(msg);
        }
        let status = msg.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        let call_id = msg.call_id().unwrap_or_default().to_string();
        let Some(p) = self.pending.get_mut(&call_id) else {
            return; // answer to a retransmission
        };
        if status == 503 {
            // Shed by overload protection: try again a little later.
            self.rep.shed += 1;
            p.next = Instant::now() + SHED_RETRY;
            p.shed = true;
            return;
        }
        let purpose = p.purpose;
        self.pending.remove(&call_id);
        if let (Purpose::Register(dev), 200) = (purpose, status) {
            // Devices ask for GRUUs (RFC 5627): each binding in the 200
            // carries its public and a temporary one.
            let contacts = msg.headers.all("Contact").count();
            let temp = msg
                .headers
                .all("Contact")
                .filter(|c| c.contains("temp-gruu=\"sip:tgruu."))
                .count();
            if contacts == 0 || temp < contacts {
                self.checker.violation(format!(
                    "REGISTER of device {dev}: {temp} temporary GRUUs for {contacts} Contact lines"
                ));
            }
        }
        self.answered(purpose, status);
    }

    fn answered(&mut self, purpose: Purpose, status: u16) {
        match purpose {
            Purpose::Register(dev) => {
                self.registering -= 1;
                let d = &mut self.devs[dev as usize];
                if status == 200 {
                    d.state = State::Online;
                    self.registered += 1;
                } else {
                    d.state = State::Offline;
                    self.checker.violation(format!("REGISTER of device {dev}: {status}"));
                }
            }
            Purpose::Unregister(dev) => {
                self.devs[dev as usize].state = State::Offline;
                if status != 200 {
                    self.checker.violation(format!("de-REGISTER of device {dev}: {status}"));
                }
                if self.draining {
                    self.register(dev);
                } else {
                    self.back.push_back((Instant::now() + secs(self.opts.offline), dev));
                }
            }
            Purpose::Message(id, dev) => {
                self.devs[dev as usize].busy = false;
                let devs = &self.devs;
                self.checker.answered(id, status, |d, e| {
                    let d = devs[d as usize];
                    d.state == State::Online && d.epoch == e
                });
            }
            Purpose::Report(dev) => {
                if status != 200 && status != 202 {
                    self.checker
                        .violation(format!("report from device {dev} refused: {status}"));
                }
            }
        }
    }

    /// A MESSAGE forked to one of our devices: answer 200, then check it.
    fn request(&mut self, msg: Message) {
        let user = msg.request_uri().and_then(|u| u.user.clone()).unwrap_or_default();
        let Some(dev) = self.sip.parse_contact_user(&user) else {
            return self.checker.violation(format!("request for unknown device {user:?}"));
        };
        let ok = ResponseBuilder::new(&msg, 200, "sim").build().to_bytes();
        self.wire.send(dev, self.opts.devices, ok);
        if !self.wire.reliable() {
            let branch = msg.top_via_branch().ok().flatten().map(Cow::into_owned);
            if let Some(b) = branch {
                if !self.seen.insert(b) {
                    return; // the engine retransmitted; already counted
                }
            }
        }
        if self.devs[dev as usize].state == State::Offline {
            self.rep.stray += 1;
        }
        let call_id = msg.call_id().unwrap_or_default().to_string();
        // Reports come from devices (Call-ID `p...`), or from a group's CF
        // and the engine itself (Call-IDs of their own): known by the body.
        if let Some((_, rep)) = imdn::parse_report(msg.content_type().as_deref(), &msg.body) {
            let kind = match rep.kind {
                imdn::Kind::Delivery => ReportKind::Delivery,
                imdn::Kind::Display => ReportKind::Display,
                imdn::Kind::Processing => return,
            };
            return match self.sip.parse_message_id(&rep.message_id) {
                Some(id) => self.checker.report(id, kind, dev),
                None => self
                    .checker
                    .violation(format!("report about unknown message {}", rep.message_id)),
            };
        }
        if call_id.starts_with('p') {
            return self
                .checker
                .violation(format!("device {dev}: unreadable report {call_id}"));
        }
        let Some(id) = (self.sip.parse_message_id(&call_id)).or_else(|| self.sip.parse_copy_call_id(&call_id)) else {
            return self
                .checker
                .violation(format!("device {dev}: unexpected request {call_id}"));
        };
        self.checker.received(id, dev);
        self.report(dev, id, ReportKind::Delivery);
        if self.opts.read_delay > 0.0 {
            let delay = self.rand() as f64 / u64::MAX as f64 * self.opts.read_delay;
            self.reads.push(Reverse((Instant::now() + secs(delay), dev, id)));
        } else {
            self.report(dev, id, ReportKind::Display);
        }
    }

    /// Device `dev` reports on message `id`. Reports on a group copy go to
    /// the group (its IMDN-Record-Route), which aggregates them for the sender.
    fn report(&mut self, dev: Dev, id: u64, kind: ReportKind) {
        let to = match (self.checker.group_of(id), self.checker.sender(id)) {
            (Some(group), _) => format!("g{group}"),
            (None, Some(sender)) => format!("u{}", sender / self.opts.devices),
            (None, None) => return,
        };
        let addr = self.wire.addr(dev, self.opts.devices);
        let (call_id, data) = self.sip.report(id, kind, dev, addr, &to);
        self.send(dev, call_id, data, Purpose::Report(dev));
    }

    fn progress(&mut self, phase: &str, engine: &Engine, last: &mut Instant) {
        if self.opts.quiet || last.elapsed() < Duration::from_millis(250) {
            return;
        }
        *last = Instant::now();
        let online = self.devs.iter().filter(|d| d.state == State::Online).count();
        eprint!(
            "\r{phase:<9} online {online}/{}  REGISTERs {}  sent {}  in flight {}  PFs {}  RSS {} MiB  violations {}   ",
            self.devs.len(),
            self.registered,
            self.checker.sent_count(),
            self.pending.len(),
            engine.core.dir.active_count(),
            rss().0 / (1024 * 1024),
            self.checker.violation_count()
        );
        let _ = std::io::stderr().flush();
    }

    fn register_all(&mut self, engine: &Engine) {
        let t0 = Instant::now();
        let mut last = Instant::now();
        let n = self.devs.len() as Dev;
        let mut next: Dev = 0;
        while self.registered < n as u64 {
            while self.registering < self.opts.window.max(1) && next < n {
                self.register(next);
                next += 1;
            }
            self.pump(Instant::now() + Duration::from_millis(2));
            self.progress("register", engine, &mut last);
            if self.registering == 0 && next >= n {
                break; // some were refused (violations recorded)
            }
        }
        self.rep.registrations = self.registered;
        self.rep.registration_time = t0.elapsed();
    }

    fn traffic(&mut self, engine: &Engine) {
        let (t0, end) = (Instant::now(), Instant::now() + secs(self.opts.duration));
        let mut last = Instant::now();
        let (mut sent, mut churned) = (0u64, 0u64);
        while Instant::now() < end {
            let t = t0.elapsed().as_secs_f64();
            while (sent as f64) < t * self.opts.rate {
                sent += 1;
                self.send_message();
            }
            while (churned as f64) < t * self.opts.churn {
                churned += 1;
                self.churn();
            }
            self.pump(Instant::now() + Duration::from_millis(2));
            self.progress("traffic", engine, &mut last);
        }
    }

    fn drain(&mut self, engine: &Engine) {
        self.draining = true;
        self.back.clear();
        for dev in 0..self.devs.len() as Dev {
            if self.devs[dev as usize].state == State::Offline {
                self.register(dev);
            }
        }
        let end = Instant::now() + secs(self.opts.drain);
        let mut last = Instant::now();
        let mut check = Instant::now();
        while Instant::now() < end {
            self.pump(Instant::now() + Duration::from_millis(5));
            self.progress("drain", engine, &mut last);
            if check.elapsed() > Duration::from_millis(200) {
                check = Instant::now();
                let devs = &self.devs;
                let idle = self.pending.is_empty() && self.reads.is_empty();
                if idle && self.checker.pending(|d| devs[d as usize].epoch) == 0 {
                    break;
                }
            }
        }
        // Late duplicates would show up now.
        self.pump(Instant::now() + Duration::from_millis(500));
    }

    fn settle(&mut self, engine: &Engine) {
        if self.opts.settle <= 0.0 {
            return;
        }
        self.seen = HashSet::new();
        self.pending.shrink_to_fit();
        let end = Instant::now() + secs(self.opts.settle);
        let mut last = Instant::now();
        while Instant::now() < end && engine.core.dir.active_count() > 0 {
            self.pump(Instant::now() + Duration::from_millis(100));
            self.progress("settle", engine, &mut last);
        }
        // Give the sweepers a beat after the last passivation.
        self.pump(Instant::now() + Duration::from_secs(2));
        self.rep.pfs_after_settle = Some(engine.core.dir.active_count());
        self.rep.rss_idle = Some(rss().0);
        trim_heap();
        self.rep.rss_trimmed = Some(rss().0);
    }

    /// `cpu_start`: the engine workers' CPU seconds when the run began.
    fn finish(mut self, engine: &Engine, began: Instant, cpu_start: &[(usize, f64)]) -> Report {
        if !self.opts.quiet {
            eprintln!();
        }
        let devs = &self.devs;
        let mut stats = self.checker.finish(|d| devs[d as usize].epoch);
        stats.latencies.sort_unstable();
        let (now, peak) = rss();
        let core = &engine.core;
        Report {
            run: began.elapsed(),
            stats,
            live_pfs: core.dir.active_count(),
            activations: core.dir.activations(),
            server_tx: core.server_tx.len(),
            client_tx: core.client_tx.len(),
            rss_end: now,
            rss_peak: peak,
            worker_cpu: core
                .workers
                .cpu_seconds()
                .into_iter()
                .map(|(i, end)| {
                    let start = cpu_start.iter().find(|(j, _)| *j == i).map_or(0.0, |w| w.1);
                    end - start
                })
                .collect(),
            violations: self.checker.violations().to_vec(),
            violation_count: self.checker.violation_count(),
            ..std::mem::take(&mut self.rep)
        }
    }
}
