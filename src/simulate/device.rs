//! Virtual devices: their registration state and the SIP bytes they send.
//! User `i` is `sip:u{i}@DOMAIN`; its device `j` has number `i*M + j`, the
//! contact `sip:u{i}d{j}@ADDR` and the instance id `urn:uuid:...{number}`.

use std::net::SocketAddr;

use bytes::Bytes;

use super::invariants::{Dev, ReportKind};

pub const DOMAIN: &str = "sim.test";
/// Registration lifetime asked for; the run is much shorter.
const EXPIRES: u32 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Offline,
    /// REGISTER sent, no 200 yet.
    Registering,
    Online,
    /// De-REGISTER sent, no 200 yet.
    Leaving,
}

/// 12 bytes per device: the table stays small at a million users.
#[derive(Debug, Clone, Copy)]
pub struct Device {
    pub state: State,
    /// A MESSAGE of this device awaits its final response.
    pub busy: bool,
    pub cseq: u32,
    /// Bumped each time the device leaves (reports and eligibility).
    pub epoch: u32,
}

impl Device {
    pub const NEW: Device = Device {
        state: State::Offline,
        busy: false,
        cseq: 0,
        epoch: 0,
    };
}

/// Text builders; `nonce` keeps ids unique across runs on one data dir.
pub struct Sip {
    pub devices: u32,
    pub nonce: String,
}

impl Sip {
    pub fn user_of(&self, dev: Dev) -> u32 {
        dev / self.devices
    }

    /// `u{i}d{j}` (a contact's user part) → device number.
    pub fn parse_contact_user(&self, user: &str) -> Option<Dev> {
        let (i, j) = user.strip_prefix('u')?.split_once('d')?;
        let (i, j): (u32, u32) = (i.parse().ok()?, j.parse().ok()?);
        (j < self.devices).then(|| i * self.devices + j)
    }

    pub fn register(&self, dev: Dev, addr: SocketAddr, cseq: u32, expires: u32) -> (String, Bytes) {
        let (u, j) = (self.user_of(dev), dev % self.devices);
        let call_id = format!("r{}.{dev}", self.nonce);
        let text = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {addr};branch=z9hG4bKr{dev}x{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:u{u}@{DOMAIN}>;tag=r{dev}\r\n\
             To: <sip:u{u}@{DOMAIN}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Supported: gruu\r\n\
             Contact: <sip:u{u}d{j}@{addr}>;+g.oma.sip-im;+sip.instance=\"<urn:uuid:00000000-0000-4000-8000-{dev:012x}>\";expires={expires}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        (call_id, Bytes::from(text))
    }

    pub fn online(&self, dev: Dev, addr: SocketAddr, cseq: u32) -> (String, Bytes) {
        self.register(dev, addr, cseq, EXPIRES)
    }

    pub fn message_id(&self, id: u64) -> String {
        format!("m{}x{id}", self.nonce)
    }

    /// `imdn.Message-ID` / Call-ID of a simulated message → its id.
    pub fn parse_message_id(&self, s: &str) -> Option<u64> {
        s.strip_prefix('m')?
            .strip_prefix(self.nonce.as_str())?
            .strip_prefix('x')?
            .parse()
            .ok()
    }

    /// The id of the message whose Call-ID ends `s`: a group's CF gives each
    /// member copy a Call-ID of its own, `<unique>-<original>`.
    pub fn parse_copy_call_id(&self, s: &str) -> Option<u64> {
        let (_, original) = s.split_once('-')?;
        self.parse_message_id(original)
    }

    /// A pager-mode MESSAGE asking for delivery and display reports, to
    /// user `to` (`u{i}`) or group `to` (`g{k}`).
    pub fn message(&self, id: u64, from: Dev, addr: SocketAddr, to: &str) -> (String, Bytes) {
        let u = self.user_of(from);
        let mid = self.message_id(id);
        let cpim = format!(
            "From: <sip:u{u}@{DOMAIN}>\r\nTo: <sip:{to}@{DOMAIN}>\r\nDateTime: 2026-11-22T00:00:00Z\r\n\
             NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: {mid}\r\n\
             imdn.Disposition-Notification: positive-delivery, display\r\n\r\n\
             Content-Type: text/plain;charset=UTF-8\r\n\r\nmessage {id} from device {from}"
        );
        let text = cpim_request(u, to, addr, &mid, &cpim);
        (mid, text)
    }

    /// Device `from` reports on message `id` to its sender (`u{i}`), or to
    /// the group (`g{k}`) that the copy came through.
    pub fn report(&self, id: u64, kind: ReportKind, from: Dev, addr: SocketAddr, to: &str) -> (String, Bytes) {
        let u = self.user_of(from);
        let (k, element, status) = match kind {
            ReportKind::Delivery => ('d', "delivery-notification", "delivered"),
            ReportKind::Display => ('s', "display-notification", "displayed"),
        };
        let call_id = format!("p{}x{id}.{from}{k}", self.nonce);
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\
             <message-id>{}</message-id><datetime>2026-11-22T00:00:00Z</datetime>\
             <{element}><status><{status}/></status></{element}></imdn>",
            self.message_id(id)
        );
        let cpim = format!(
            "From: <sip:u{u}@{DOMAIN}>\r\nTo: <sip:{to}@{DOMAIN}>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
             imdn.Message-ID: {call_id}\r\nDateTime: 2026-11-22T00:00:01Z\r\n\r\n\
             Content-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n{xml}"
        );
        let text = cpim_request(u, to, addr, &call_id, &cpim);
        (call_id, text)
    }
}

/// A MESSAGE from user `u` to `to` (`u{i}` or `g{k}`) carrying `cpim`;
/// `id` is its Call-ID and makes the branch and From tag unique.
fn cpim_request(u: u32, to: &str, addr: SocketAddr, id: &str, cpim: &str) -> Bytes {
    Bytes::from(format!(
        "MESSAGE sip:{to}@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {addr};branch=z9hG4bK{id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:u{u}@{DOMAIN}>;tag=t{id}\r\n\
         To: <sip:{to}@{DOMAIN}>\r\n\
         Call-ID: {id}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: message/cpim\r\n\
         Content-Length: {}\r\n\r\n{cpim}",
        cpim.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let sip = Sip {
            devices: 2,
            nonce: "abc".into(),
        };
        assert_eq!(sip.parse_contact_user("u7d1"), Some(15));
        assert_eq!(sip.parse_contact_user("u7d2"), None);
        assert_eq!(sip.parse_message_id(&sip.message_id(42)), Some(42));
        assert_eq!(sip.parse_message_id("mzzzx42"), None);
        assert_eq!(
            sip.parse_copy_call_id(&format!("1a2b3c-{}", sip.message_id(42))),
            Some(42)
        );
        assert_eq!(sip.parse_copy_call_id(&sip.message_id(42)), None, "not a copy");
        let (_, reg) = sip.online(15, "127.0.0.1:5000".parse().unwrap(), 1);
        let reg = cpm_sip::Message::parse(reg).expect("REGISTER parses");
        assert!(reg.header("Contact").unwrap().contains("sip:u7d1@127.0.0.1:5000"));
        let (_, msg) = sip.message(3, 15, "127.0.0.1:5000".parse().unwrap(), "u9");
        let msg = cpm_sip::Message::parse(msg).expect("MESSAGE parses");
        assert_eq!(
            msg.body.len(),
            msg.header("Content-Length").unwrap().parse::<usize>().unwrap()
        );
        let (_, rep) = sip.report(3, ReportKind::Display, 18, "127.0.0.1:5000".parse().unwrap(), "g7");
        let rep = cpm_sip::Message::parse(rep).expect("report parses");
        let (_, imdn) = cpm_sip::imdn::parse_report(rep.content_type().as_deref(), &rep.body).expect("an IMDN");
        assert_eq!(imdn.kind, cpm_sip::imdn::Kind::Display);
    }
}
