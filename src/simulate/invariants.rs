//! The invariant checker of `cpm simulate`. It knows nothing of SIP or
//! sockets: the driver tells it what was sent, answered, received and
//! reported, and it records every violation with the details to debug it.
//!
//! Rules (docs/simulate.md):
//! - every message gets a final response: 200 (delivered) or 202 (deferred);
//! - a device receives a message at most once;
//! - a 200-message reaches every device that was registered when it was
//!   sent, still was when the 200 came back, and stayed in that
//!   registration (a device may leave before its copy goes out: the engine
//!   holds a live copy for a device until that device's deferred push ends,
//!   and drops it when the device de-registers first);
//! - a 202-message is not refused while a device was registered, and is
//!   delivered later (after the drain, when every device is back);
//! - per sending device and receiving device, messages arrive in send
//!   order, live and deferred alike;
//! - the sender gets exactly one delivery and one display report per
//!   delivered message, on the device it sent from (a report for a device
//!   that is away waits for it in the deferred queue).
//!
//! A group message (sent to a group's URI) is answered 202 by the group's
//! CF; each member but the sender gets it on at least one device (live or
//! deferred), no device gets it twice, nobody else gets it, and the
//! sender's reports are the CF's aggregates, checked as above. Group
//! copies are not ordered against the sender's other messages: the 202
//! comes before the copies go out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Device number (user × devices + index).
pub type Dev = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Delivery,
    Display,
}

#[derive(Debug)]
struct Msg {
    from_dev: Dev,
    /// The recipient user, or the group's number for a group message.
    to_user: u32,
    /// A group message: the users that must get it (every member but the sender).
    members: Option<Vec<u32>>,
    sent_at: Instant,
    /// Recipient devices registered at send time, with their epochs.
    online_at_send: Vec<(Dev, u32)>,
    status: Option<u16>,
    /// Devices that must get it (set on a 200), with their registration
    /// epoch then: a device that left since is excused.
    eligible: Vec<(Dev, u32)>,
    received: Vec<Dev>,
    reports: [Vec<Dev>; 2],
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub sent: u64,
    pub ok: u64,
    pub deferred: u64,
    pub copies: u64,
    pub delivered_later: u64,
    pub reports: [u64; 2],
    /// Send → first device receipt, live (200) messages.
    pub latencies: Vec<Duration>,
    /// Group messages sent, and member copies delivered.
    pub group_messages: u64,
    pub group_copies: u64,
}

#[derive(Default)]
pub struct Checker {
    /// Devices per user (device numbers are user × devices + index).
    devices: u32,
    msgs: Vec<Msg>,
    /// (receiving device, sending device) → message ids in arrival order.
    arrivals: HashMap<(Dev, Dev), Vec<u64>>,
    /// Send → first receipt, per message id (kept for live ones in finish()).
    first_rx: Vec<(u64, Duration)>,
    violations: Vec<String>,
    /// Violations beyond this are counted, not kept.
    dropped: u64,
}

const KEEP: usize = 1_000;

impl Checker {
    /// One device per user: device number = user number.
    pub fn new() -> Checker {
        Checker::with_devices(1)
    }

    pub fn with_devices(devices: u32) -> Checker {
        Checker {
            devices: devices.max(1),
            ..Checker::default()
        }
    }

    pub fn violation(&mut self, what: String) {
        if self.violations.len() < KEEP {
            self.violations.push(what);
        } else {
            self.dropped += 1;
        }
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    pub fn violation_count(&self) -> u64 {
        self.violations.len() as u64 + self.dropped
    }

    /// A message leaves `from_dev`; returns its id.
    pub fn sent(&mut self, from_dev: Dev, to_user: u32, online_at_send: Vec<(Dev, u32)>) -> u64 {
        self.msgs.push(Msg {
            from_dev,
            to_user,
            members: None,
            sent_at: Instant::now(),
            online_at_send,
            status: None,
            eligible: Vec::new(),
            received: Vec::new(),
            reports: [Vec::new(), Vec::new()],
        });
        self.msgs.len() as u64 - 1
    }

    /// A message leaves `from_dev` for group `group`, whose members but the
    /// sender are `members`; returns its id.
    pub fn sent_group(&mut self, from_dev: Dev, group: u32, members: Vec<u32>) -> u64 {
        let id = self.sent(from_dev, group, Vec::new());
        if let Some(m) = self.msgs.last_mut() {
            m.members = Some(members);
        }
        id
    }

    /// Is `id` a group message (its reports go to the group, not the sender)?
    pub fn group_of(&self, id: u64) -> Option<u32> {
        let m = self.msgs.get(id as usize)?;
        m.members.as_ref().map(|_| m.to_user)
    }

    /// The final response; `still` says whether a device is still registered
    /// in the same epoch as at send time.
    pub fn answered(&mut self, id: u64, status: u16, still: impl Fn(Dev, u32) -> bool) {
        let Some(m) = self.msgs.get_mut(id as usize) else {
            return self.violation(format!("final response {status} for unknown message {id}"));
        };
        if let Some(old) = m.status {
            return self.violation(format!("message {id}: second final response {status} (had {old})"));
        }
        m.status = Some(status);
        if m.members.is_some() {
            if status != 202 {
                let group = m.to_user;
                self.violation(format!("group message {id} to g{group}: {status}, expected 202"));
            }
            return;
        }
        let still_online: Vec<(Dev, u32)> = m
            .online_at_send
            .iter()
            .copied()
            .filter(|(d, e)| still(*d, *e))
            .collect();
        match status {
            200 => m.eligible = still_online,
            202 if !still_online.is_empty() => {
                let to = m.to_user;
                self.violation(format!(
                    "message {id} to u{to}: deferred (202) although devices {still_online:?} were registered throughout"
                ));
            }
            202 => {}
            other => {
                let to = m.to_user;
                self.violation(format!("message {id} to u{to}: refused with {other}"));
            }
        }
    }

    /// Device `dev` got message `id` (retransmissions already filtered out).
    pub fn received(&mut self, id: u64, dev: Dev) {
        let Some(m) = self.msgs.get_mut(id as usize) else {
            return self.violation(format!("device {dev} got unknown message {id}"));
        };
        if m.received.contains(&dev) {
            return self.violation(format!("message {id}: device {dev} got it twice"));
        }
        let user = dev / self.devices;
        if m.members.as_ref().is_some_and(|members| !members.contains(&user)) {
            let group = m.to_user;
            return self.violation(format!(
                "group message {id} to g{group}: u{user} (device {dev}) is not a recipient"
            ));
        }
        if m.received.is_empty() {
            self.first_rx.push((id, m.sent_at.elapsed()));
        }
        m.received.push(dev);
        self.arrivals.entry((dev, m.from_dev)).or_default().push(id);
    }

    /// A report of `kind` about message `id` reached the sender's device `dev`.
    pub fn report(&mut self, id: u64, kind: ReportKind, dev: Dev) {
        let Some(m) = self.msgs.get_mut(id as usize) else {
            return self.violation(format!("report {kind:?} about unknown message {id}"));
        };
        let list = &mut m.reports[kind as usize];
        if list.contains(&dev) {
            return self.violation(format!("message {id}: device {dev} got the {kind:?} report twice"));
        }
        list.push(dev);
    }

    /// The device that sent message `id`.
    pub fn sender(&self, id: u64) -> Option<Dev> {
        self.msgs.get(id as usize).map(|m| m.from_dev)
    }

    pub fn sent_count(&self) -> usize {
        self.msgs.len()
    }

    /// Devices of a 200-message that must still get it: those in the
    /// registration they had when it was answered (`epoch`: each device's
    /// registration now).
    fn missing_devices<'a>(&'a self, m: &'a Msg, epoch: &'a impl Fn(Dev) -> u32) -> impl Iterator<Item = Dev> + 'a {
        m.eligible
            .iter()
            .filter(move |(d, e)| epoch(*d) == *e && !m.received.contains(d))
            .map(|(d, _)| *d)
    }

    /// Is anything still expected (drain loop)? `epoch` as in [`Checker::finish`].
    pub fn pending(&self, epoch: impl Fn(Dev) -> u32) -> usize {
        self.msgs
            .iter()
            .filter(|m| {
                m.status.is_none()
                    || (m.status == Some(202) && m.received.is_empty())
                    || self.missing_members(m).next().is_some()
                    || (!m.received.is_empty() && m.reports.iter().any(|r| r.is_empty()))
                    || self.missing_devices(m, &epoch).next().is_some()
            })
            .count()
    }

    /// Recipients of a group message that no device of got it yet.
    fn missing_members<'a>(&'a self, m: &'a Msg) -> impl Iterator<Item = u32> + 'a {
        let members = m.members.as_deref().unwrap_or_default();
        members
            .iter()
            .copied()
            .filter(move |u| !m.received.iter().any(|d| d / self.devices == *u))
    }

    /// The end-of-run checks; `epoch` gives each device's registration epoch now.
    pub fn finish(&mut self, epoch: impl Fn(Dev) -> u32) -> Stats {
        let mut st = Stats::default();
        let mut found = Vec::new();
        let rx: HashMap<u64, Duration> = self.first_rx.drain(..).collect();
        for (id, m) in self.msgs.iter().enumerate() {
            let id = id as u64;
            st.sent += 1;
            st.copies += m.received.len() as u64;
            if m.members.is_some() {
                st.group_messages += 1;
                st.group_copies += m.received.len() as u64;
                for u in self.missing_members(m) {
                    found.push(format!(
                        "group message {id} to g{}: member u{u} never got it",
                        m.to_user
                    ));
                }
            }
            match m.status {
                None => found.push(format!("message {id} to u{}: lost (no final response)", m.to_user)),
                Some(200) => {
                    st.ok += 1;
                    if let Some(l) = rx.get(&id) {
                        st.latencies.push(*l);
                    }
                    if m.received.is_empty() {
                        found.push(format!("message {id} to u{}: 200 but no device got it", m.to_user));
                    }
                    for d in self.missing_devices(m, &epoch) {
                        found.push(format!(
                            "message {id} to u{}: device {d} was registered throughout but never got it",
                            m.to_user
                        ));
                    }
                }
                Some(202) if m.members.is_some() => {}
                Some(202) => {
                    st.deferred += 1;
                    if m.received.is_empty() {
                        found.push(format!("message {id} to u{}: deferred and never delivered", m.to_user));
                    } else {
                        st.delivered_later += 1;
                    }
                }
                Some(_) => {} // reported when answered
            }
            if m.received.is_empty() {
                continue;
            }
            for kind in [ReportKind::Delivery, ReportKind::Display] {
                let got = &m.reports[kind as usize];
                st.reports[kind as usize] += got.len() as u64;
                if got.is_empty() {
                    found.push(format!("message {id}: no {kind:?} report reached the sender"));
                } else if got != &[m.from_dev] {
                    found.push(format!(
                        "message {id}: {kind:?} reports on devices {got:?}, expected exactly one on the sending device {}",
                        m.from_dev
                    ));
                }
            }
        }
        // Live and deferred together: a live message waits behind the
        // deferred push to a returning device (actors/src/pf/ordering.rs).
        for ((dev, from), ids) in &self.arrivals {
            let seq: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|i| {
                    let m = &self.msgs[*i as usize];
                    m.members.is_none() && matches!(m.status, Some(200 | 202))
                })
                .collect();
            if let Some(w) = seq.windows(2).find(|w| w[0] >= w[1]) {
                found.push(format!(
                    "device {dev}: messages from device {from} out of order: {} after {}",
                    w[1], w[0]
                ));
            }
        }
        for f in found {
            self.violation(f);
        }
        st
    }
}
