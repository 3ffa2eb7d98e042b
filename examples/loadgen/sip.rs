//! The generator's SIP: the same REGISTER and MESSAGE as
//! `../shared/bench/sipp/{register,message_uac}.xml`, and byte scanning of
//! what comes back. No full parse: the generator must stay cheaper than the
//! servers it measures.
//!
//! Every request we send carries its identity in the Via branch,
//! `z9hG4bKlg{run}r{seq}s{sent_us}`, which responses echo: the receiver needs
//! no table of what was sent, and the latency comes from the branch itself.

use std::io::Write;
use std::net::SocketAddr;

const BRANCH: &[u8] = b"branch=z9hG4bKlg";

/// What a response's branch says about the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub run: u32,
    pub seq: u64,
    pub sent_us: u64,
}

/// REGISTER of user `u{user}` with one device contact at `device`
/// (`+g.oma.sip-im`, `+sip.instance`), as register.xml. `attempt` goes in
/// the branch only (a retransmission is the same transaction: same branch).
pub fn register(buf: &mut Vec<u8>, server: SocketAddr, local: SocketAddr, user: usize, device: SocketAddr) {
    buf.clear();
    // write! to a Vec cannot fail.
    let _ = write!(
        buf,
        "REGISTER sip:{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKlg0r{user}s0\r\n\
         From: <sip:u{user}@{server}>;tag=lgr{user}\r\n\
         To: <sip:u{user}@{server}>\r\n\
         Call-ID: lgreg{user}-{lp}@{ip}\r\n\
         CSeq: 1 REGISTER\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:u{user}@{device}>;+g.oma.sip-im;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-{user:012}>\";expires=3600\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n",
        lp = local.port(),
        ip = local.ip(),
    );
}

/// Pager-mode MESSAGE from `u{from}` to `u{to}` with the CPIM body of
/// message_uac.xml (IMDN positive-delivery request).
pub fn message(buf: &mut Vec<u8>, m: &MessageArgs) {
    let MessageArgs {
        server,
        local,
        run,
        seq,
        sent_us,
        from,
        to,
    } = *m;
    let ip = server.ip();
    let mut body = [0u8; 512];
    let body_len = {
        let mut w = &mut body[..];
        let _ = write!(
            w,
            "From: <sip:u{from}@{ip}>\r\n\
             To: <sip:u{to}@{ip}>\r\n\
             DateTime: 2026-11-21T10:00:00Z\r\n\
             NS: imdn <urn:ietf:params:imdn>\r\n\
             imdn.Message-ID: lg{run}x{seq}\r\n\
             imdn.Disposition-Notification: positive-delivery\r\n\
             \r\n\
             Content-Type: text/plain;charset=UTF-8\r\n\
             \r\n\
             hello number {seq}\r\n"
        );
        512 - w.len()
    };
    buf.clear();
    let _ = write!(
        buf,
        "MESSAGE sip:u{to}@{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKlg{run}r{seq}s{sent_us}\r\n\
         From: <sip:u{from}@{server}>;tag=lgm{seq}\r\n\
         To: <sip:u{to}@{server}>\r\n\
         Call-ID: lg{run}-{seq}-{lp}@{lip}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Max-Forwards: 70\r\n\
         Accept-Contact: *;+g.oma.sip-im\r\n\
         Content-Type: message/cpim\r\n\
         Content-Length: {body_len}\r\n\r\n",
        lp = local.port(),
        lip = local.ip(),
    );
    buf.extend_from_slice(&body[..body_len]);
}

#[derive(Clone, Copy)]
pub struct MessageArgs {
    pub server: SocketAddr,
    pub local: SocketAddr,
    pub run: u32,
    pub seq: u64,
    pub sent_us: u64,
    pub from: usize,
    pub to: usize,
}

/// Status line and our branch of a response; `None` for requests and for
/// responses to someone else's requests.
pub fn parse_response(b: &[u8]) -> Option<Response> {
    let status = b.strip_prefix(b"SIP/2.0 ")?.get(..3)?;
    let status = digits(status)?.0 as u16;
    let head = &b[..find(b, b"\r\n\r\n").unwrap_or(b.len())];
    let at = find(head, BRANCH)? + BRANCH.len();
    let (run, n) = digits(&head[at..])?;
    let rest = head[at + n..].strip_prefix(b"r")?;
    let (seq, n) = digits(rest)?;
    let (sent_us, _) = digits(rest[n..].strip_prefix(b"s")?)?;
    Some(Response {
        status,
        run: u32::try_from(run).ok()?,
        seq,
        sent_us,
    })
}

/// The device's side: a 200 OK to a request (Via, From, To with a tag of
/// ours, Call-ID and CSeq copied, as device_uas.xml), or `None` for ACK,
/// responses and anything unreadable. Returns whether it answered a MESSAGE.
pub fn answer(req: &[u8], out: &mut Vec<u8>) -> Option<bool> {
    let head_end = find(req, b"\r\n\r\n")?;
    let head = &req[..head_end];
    let first_end = find(head, b"\r\n").unwrap_or(head.len());
    let first = &head[..first_end];
    if first.starts_with(b"SIP/2.0") || first.starts_with(b"ACK ") {
        return None;
    }
    let is_message = first.starts_with(b"MESSAGE ");
    out.clear();
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    let mut have = 0u8; // bits: from, to, call-id, cseq
    for line in head[first_end..].split(|&c| c == b'\n').map(trim_cr) {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        let bit = if eq(name, b"via") || eq(name, b"v") {
            0
        } else if eq(name, b"from") || eq(name, b"f") {
            1
        } else if eq(name, b"to") || eq(name, b"t") {
            2
        } else if eq(name, b"call-id") || eq(name, b"i") {
            4
        } else if eq(name, b"cseq") {
            8
        } else {
            continue;
        };
        have |= bit;
        out.extend_from_slice(line);
        if bit == 2 && find(&line[colon..], b";tag=").is_none() {
            out.extend_from_slice(b";tag=lgdev");
        }
        out.extend_from_slice(b"\r\n");
    }
    if have != 15 {
        return None;
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(is_message)
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn digits(b: &[u8]) -> Option<(u64, usize)> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let v = b[..n].iter().fold(0u64, |a, &c| a * 10 + u64::from(c - b'0'));
    Some((v, n))
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |e| e + 1);
    &b[s..e]
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn args() -> MessageArgs {
        MessageArgs {
            server: addr("127.0.0.1:5060"),
            local: addr("127.0.0.1:40000"),
            run: 3,
            seq: 42,
            sent_us: 1234,
            from: 7,
            to: 8,
        }
    }

    #[test]
    fn message_parses_with_cpm_sip_and_declares_its_body() {
        let mut buf = Vec::new();
        message(&mut buf, &args());
        let m = cpm_sip::Message::parse(bytes::Bytes::from(buf.clone())).expect("our MESSAGE parses");
        assert!(m.validate_request().is_ok());
        assert_eq!(m.header("Accept-Contact"), Some("*;+g.oma.sip-im"));
        let body_at = find(&buf, b"\r\n\r\n").expect("head") + 4;
        let declared: usize = m.header("Content-Length").expect("length").parse().expect("number");
        assert_eq!(declared, buf.len() - body_at);
        let cpim = cpm_sip::cpim::Cpim::parse(&buf[body_at..]).expect("CPIM body parses");
        assert_eq!(cpim.imdn_message_id(), Some("lg3x42"));
        assert!(cpim.disposition_request().any());
    }

    #[test]
    fn register_has_instance_and_feature_tag() {
        let mut buf = Vec::new();
        register(
            &mut buf,
            addr("127.0.0.1:5080"),
            addr("127.0.0.1:4000"),
            12,
            addr("127.0.0.1:4001"),
        );
        let m = cpm_sip::Message::parse(bytes::Bytes::from(buf)).expect("REGISTER parses");
        let contact = m.header("Contact").expect("contact");
        assert!(contact.starts_with("<sip:u12@127.0.0.1:4001>;+g.oma.sip-im;+sip.instance="));
        assert!(contact.contains("000000000012>"));
    }

    #[test]
    fn response_branch_round_trips() {
        let resp = b"SIP/2.0 202 Accepted\r\nVia: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bKlg3r42s1234;received=1.2.3.4\r\nCall-ID: x\r\n\r\n";
        let want = Response {
            status: 202,
            run: 3,
            seq: 42,
            sent_us: 1234,
        };
        assert_eq!(parse_response(resp), Some(want));
        assert_eq!(
            parse_response(b"SIP/2.0 100 Trying\r\nVia: x;branch=z9hG4bKother\r\n\r\n"),
            None
        );
        assert_eq!(parse_response(b"MESSAGE sip:a@b SIP/2.0\r\n\r\n"), None);
        assert_eq!(parse_response(b"SIP/2.0 20"), None);
    }

    #[test]
    fn device_answers_message_with_every_via() {
        let req = b"MESSAGE sip:u1@127.0.0.1:4001 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKk\r\nv: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bKlg1r1s1\r\nFrom: <sip:u0@x>;tag=a\r\nTo: <sip:u1@x>\r\nCall-ID: c1\r\nCSeq: 7 MESSAGE\r\nContent-Length: 2\r\n\r\nhi";
        let mut out = Vec::new();
        assert_eq!(answer(req, &mut out), Some(true));
        let s = String::from_utf8(out.clone()).expect("ascii");
        assert!(s.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKk\r\nv: "));
        assert!(s.contains("To: <sip:u1@x>;tag=lgdev\r\n"));
        assert!(s.contains("CSeq: 7 MESSAGE\r\n"));
        assert!(s.ends_with("Content-Length: 0\r\n\r\n"));
        assert_eq!(answer(b"ACK sip:x SIP/2.0\r\n\r\n", &mut out), None);
        assert_eq!(answer(b"SIP/2.0 200 OK\r\n\r\n", &mut out), None);
        assert_eq!(
            answer(b"MESSAGE sip:x SIP/2.0\r\nVia: a\r\n\r\n", &mut out),
            None,
            "no From/To"
        );
    }
}
