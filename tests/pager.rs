//! Issue 2: multi-device registration and pager-mode delivery over real SIP,
//! driven by sipp against the real server on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::*;

/// Forks settle after the sender's 200 (first device wins); give the rest
/// a moment before stopping the devices and counting.
fn settle() {
    std::thread::sleep(Duration::from_millis(800));
}

fn fork_to_every_device(t: Transport) {
    let cpm = Cpm::start(&["--open"]);
    let mut devices: Vec<Device> = (0..3).map(|_| Device::start(t)).collect();
    register_each(&cpm, t, "bob", &devices);
    assert!(message(&cpm, t, "alice", "bob", 200), "first message");
    settle();
    // Device 3 unregisters: only the other two get the next message.
    assert!(register(&cpm, t, "bob", &devices[2].contact(), 3, 0, 200), "unregister");
    assert!(message(&cpm, t, "alice", "bob", 200), "second message");
    settle();
    let got: Vec<Vec<String>> = devices.iter_mut().map(|d| d.finish()).collect();
    assert_eq!(got[0].len(), 2, "device 1: {:?}\n{}", got[0], cpm.log());
    assert_eq!(got[1].len(), 2, "device 2: {:?}", got[1]);
    assert_eq!(got[2].len(), 1, "device 3 (unregistered after the first): {:?}", got[2]);
    assert_ne!(
        got[0][0].split(' ').nth(1),
        got[0][1].split(' ').nth(1),
        "two distinct messages"
    );
    for line in got.iter().flatten() {
        assert!(
            line.contains("P-Called-Party-ID: <sip:bob@127.0.0.1>"),
            "target CPM Address inserted: {line}"
        );
    }
}

#[test]
fn every_registered_device_gets_one_copy_udp() {
    fork_to_every_device(Transport::Udp);
}

#[test]
fn every_registered_device_gets_one_copy_tcp() {
    fork_to_every_device(Transport::Tcp);
}

#[test]
fn no_registered_device_is_480_when_the_user_rejects() {
    let (_dir, cfg) = config("[preferences]\nwhen_unavailable = \"reject\"\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    assert!(message(&cpm, Transport::Udp, "alice", "carol", 480));
    assert!(message(&cpm, Transport::Tcp, "alice", "carol", 480));
}

fn raw_message(port: u16, local: u16, branch: &str, call_id: &str, extra: &str, body: &str) -> String {
    format!(
        "MESSAGE sip:bob@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch}\r\n\
         From: <sip:alice@127.0.0.1:{port}>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1:{port}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Max-Forwards: 70\r\n\
         {extra}Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn udp_retransmission_is_answered_not_delivered_twice() {
    let cpm = Cpm::start(&["--open"]);
    let mut dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap().port();
    let msg = raw_message(cpm.udp, local, "z9hG4bKretrans1", "retrans-1@test", "", "hello once");
    // Retransmission while the server is still forking: absorbed.
    sock.send_to(msg.as_bytes(), ("127.0.0.1", cpm.udp)).unwrap();
    let first = udp_exchange(&sock, cpm.udp, msg.as_bytes(), Duration::from_secs(5)).expect("a response");
    assert_eq!(status_of(&first), Some(200), "{first}");
    // Retransmission after the answer: the same answer again, from the transaction.
    let again = udp_exchange(&sock, cpm.udp, msg.as_bytes(), Duration::from_secs(5)).expect("resent response");
    assert_eq!(status_of(&again), Some(200), "{again}");
    settle();
    let got = dev.finish();
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
}

#[test]
fn malformed_requests_get_400_and_service_goes_on() {
    let cpm = Cpm::start(&["--open"]);
    let mut dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap().port();
    let good = raw_message(cpm.udp, local, "z9hG4bKbad1", "bad-1@test", "", "x");
    let cases = [
        good.replace("CSeq: 1 MESSAGE", "CSeq: one MESSAGE"),
        good.replace("CSeq: 1 MESSAGE", "CSeq: 1 INVITE"),
        good.replace("Call-ID: bad-1@test\r\n", ""),
        good.replace("From: <sip:alice@127.0.0.1", "From: <sip:alice@127.0.0.1:99999999"),
        good.replace("Content-Length: 1", "Content-Length: 500"),
        good.replace("Max-Forwards: 70", "Max-Forwards: lots"),
    ];
    for (i, case) in cases.iter().enumerate() {
        let case = case.replace("z9hG4bKbad1", &format!("z9hG4bKbad1x{i}"));
        let resp = udp_exchange(&sock, cpm.udp, case.as_bytes(), Duration::from_secs(3));
        let resp = resp.unwrap_or_else(|| panic!("no answer to case {i}: {case}"));
        assert_eq!(status_of(&resp), Some(400), "case {i}: {resp}");
    }
    // Junk that is not SIP at all is dropped without an answer.
    for junk in [
        &b"\x00\x01\x02garbage"[..],
        b"SIP/2.0 200 OK\r\n\r\n",
        b"INVITE\r\n\r\n",
        &[0xffu8; 3000][..],
    ] {
        assert!(udp_exchange(&sock, cpm.udp, junk, Duration::from_millis(300)).is_none());
    }
    // Over TCP: a framed but malformed request gets 400 on the same connection.
    let mut tcp = TcpStream::connect(("127.0.0.1", cpm.tcp)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let bad = good
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .replace("CSeq: 1 MESSAGE", "CSeq: x");
    tcp.write_all(bad.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), Some(400));
    // And the server still delivers.
    assert!(message(&cpm, Transport::Udp, "alice", "bob", 200));
    settle();
    assert_eq!(dev.finish().len(), 1);
}

#[test]
fn status_codes_for_refused_requests() {
    let cfg = TempDir::new().unwrap();
    let path = cfg.path().join("cpm.toml");
    std::fs::write(&path, "[messaging]\nmax_message_size = 100\n").unwrap();
    let cpm = Cpm::start(&["--open", "--config", path.to_str().unwrap()]);
    let mut dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap().port();
    let ask = |i: usize, m: String| {
        let m = m.replace("z9hG4bKs", &format!("z9hG4bKs{i}"));
        let r = udp_exchange(&sock, cpm.udp, m.as_bytes(), Duration::from_secs(3)).expect("answer");
        (status_of(&r), r)
    };
    let base = raw_message(cpm.udp, local, "z9hG4bKs", "codes@test", "", "hi");
    let (code, r) = ask(1, base.replace("Max-Forwards: 70", "Max-Forwards: 0"));
    assert_eq!(code, Some(483), "{r}");
    let (code, r) = ask(
        2,
        raw_message(cpm.udp, local, "z9hG4bKs", "codes@test", "", &"x".repeat(101)),
    );
    assert_eq!(code, Some(413), "{r}");
    let (code, r) = ask(
        3,
        base.replace("Content-Type: text/plain", "Content-Type: application/x-unknown"),
    );
    assert_eq!(code, Some(415), "{r}");
    assert!(r.contains("Accept: "), "415 lists what is accepted: {r}");
    let (code, r) = ask(
        4,
        base.replace("MESSAGE sip:", "SUBSCRIBE sip:")
            .replace("CSeq: 1 MESSAGE", "CSeq: 1 SUBSCRIBE"),
    );
    assert_eq!(code, Some(405), "{r}");
    assert!(r.contains("Allow: "), "405 lists what is allowed: {r}");
    let (code, r) = ask(5, base.replace("MESSAGE sip:bob@", "MESSAGE wv:bob@"));
    assert_eq!(code, Some(416), "{r}");
    let (code, r) = ask(
        6,
        base.replace("From: <sip:alice@127.0.0.1", "From: <sip:alice@elsewhere.example"),
    );
    assert_eq!(code, Some(403), "sender not of a local domain: {r}");
    let (code, r) = ask(
        7,
        base.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRequire: 100rel\r\n"),
    );
    assert_eq!(code, Some(420), "{r}");
    settle();
    assert!(dev.finish().is_empty(), "nothing refused was delivered");
}

#[test]
fn registrations_survive_a_restart() {
    let mut cpm = Cpm::start(&["--open"]);
    let mut dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    cpm.restart(); // SIGKILL: only what was flushed before the 200 survives
    assert!(message(&cpm, Transport::Udp, "alice", "bob", 200));
    settle();
    assert_eq!(dev.finish().len(), 1);
}

#[test]
fn too_brief_registration_is_423() {
    let cpm = Cpm::start(&["--open"]);
    let dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 10, 423));
}

#[test]
fn registration_expires_by_timer() {
    let (_dir, cfg) = config("[registrar]\nmin_expires = 1\n[preferences]\nwhen_unavailable = \"reject\"\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let mut dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 1, 200));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        message(&cpm, Transport::Udp, "alice", "bob", 480),
        "expired binding is not used"
    );
    assert!(cpm.log().contains("registration expired"), "the expiry timer fired");
    assert!(dev.finish().is_empty());
}

#[test]
fn passivated_user_is_reactivated_on_demand() {
    let (_dir, cfg) = config("[actors]\nidle_timeout_s = 1\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let mut dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        cpm.log().contains("passivating idle participating function"),
        "bob's PF was stopped"
    );
    assert!(
        message(&cpm, Transport::Udp, "alice", "bob", 200),
        "and comes back with its bindings"
    );
    settle();
    assert_eq!(dev.finish().len(), 1);
}

#[test]
fn stalled_tcp_peer_does_not_block_others() {
    let cpm = Cpm::start(&["--open"]);
    let mut dev = Device::start(Transport::Tcp);
    assert!(register(&cpm, Transport::Tcp, "bob", &dev.contact(), 1, 600, 200));
    // A peer that sends half a message and then nothing, and one that never reads.
    let mut stalled = TcpStream::connect(("127.0.0.1", cpm.tcp)).unwrap();
    stalled
        .write_all(b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nContent-Length: 100000\r\n\r\npartial")
        .unwrap();
    let _silent = TcpStream::connect(("127.0.0.1", cpm.tcp)).unwrap();
    for _ in 0..3 {
        assert!(message(&cpm, Transport::Tcp, "alice", "bob", 200));
    }
    settle();
    assert_eq!(dev.finish().len(), 3);
}

#[test]
fn message_to_oneself_skips_the_sending_device() {
    let cpm = Cpm::start(&["--open"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut other = Device::start(Transport::Udp);
    // alice's phone (this socket) and alice's tablet (the sipp device).
    let reg = format!(
        "REGISTER sip:127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKself\r\n\
         From: <sip:alice@127.0.0.1>;tag=r\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: self-reg\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:alice@127.0.0.1:{port}>;+g.oma.sip-im\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        s = cpm.udp
    );
    let r = udp_exchange(&sock, cpm.udp, reg.as_bytes(), Duration::from_secs(3)).expect("register answer");
    assert_eq!(status_of(&r), Some(200), "{r}");
    assert!(register(&cpm, Transport::Udp, "alice", &other.contact(), 2, 600, 200));
    let note =
        raw_message(cpm.udp, port, "z9hG4bKselfmsg", "self-1", "", "note to self").replace("sip:bob@", "sip:alice@");
    let resp = udp_exchange(&sock, cpm.udp, note.as_bytes(), Duration::from_secs(5)).expect("an answer");
    assert_eq!(status_of(&resp), Some(200), "the tablet took it: {resp}");
    settle();
    assert_eq!(
        other.finish().len(),
        1,
        "the other device got it; the sending phone got only the 200"
    );
}

/// A device that answers 100 Trying at once and 200 OK only 3 s later: the
/// provisional keeps the fork's client transaction alive and slows Timer E
/// to T2 (one retransmission at T1, the next not before 4.5 s), a response
/// carrying a branch that is not ours is dropped, and the late 200 is what
/// the sender gets.
#[test]
fn provisional_then_late_final_reaches_the_sender() {
    let cpm = Cpm::start(&["--open"]);
    let dev = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = dev.local_addr().expect("addr").port();
    let reg = format!(
        "REGISTER sip:127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKprov-reg\r\n\
         From: <sip:bob@127.0.0.1>;tag=r\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: prov-reg\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:bob@127.0.0.1:{port}>;+g.oma.sip-im\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n",
        s = cpm.udp
    );
    let answer = udp_exchange(&dev, cpm.udp, reg.as_bytes(), Duration::from_secs(5)).expect("REGISTER answered");
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    dev.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout"); // udp_exchange set its own

    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sender
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let sport = sender.local_addr().expect("addr").port();
    let msg = format!(
        "MESSAGE sip:bob@127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sport};branch=z9hG4bKprov-msg\r\n\
         From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: prov-msg\r\nCSeq: 1 MESSAGE\r\n\
         Max-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
        s = cpm.udp
    );
    sender.send_to(msg.as_bytes(), ("127.0.0.1", cpm.udp)).expect("send");

    let mut buf = vec![0u8; 65_535];
    let recv = |sock: &UdpSocket, buf: &mut Vec<u8>| -> Option<(String, std::net::SocketAddr)> {
        let (n, from) = sock.recv_from(buf).ok()?;
        Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    };
    let start = std::time::Instant::now();
    let (mut copies, mut first, mut finals_early) = (0, None, 0);
    while start.elapsed() < Duration::from_secs(3) {
        if let Some((text, from)) = recv(&dev, &mut buf).filter(|(t, _)| t.starts_with("MESSAGE ")) {
            copies += 1;
            if first.is_none() {
                dev.send_to(response_to(&text, 100).as_bytes(), from).expect("100");
                // Same response, but the top Via's branch is not one of the server's.
                let forged = response_to(&text, 200).replacen(";branch=z9hG4bK", ";branch=z9hG4bKforged", 1);
                dev.send_to(forged.as_bytes(), from).expect("forged");
                first = Some((text, from));
            }
        }
        if recv(&sender, &mut buf).is_some_and(|(t, _)| status_of(&t).is_some_and(|c| c >= 200)) {
            finals_early += 1;
        }
    }
    let (text, from) = first.expect("the device got the MESSAGE");
    assert_eq!(
        finals_early,
        0,
        "the forged 200 must not reach the sender\n{}",
        cpm.log()
    );
    assert_eq!(
        copies,
        2,
        "the original and one retransmission at T1, then T2 after the 100\n{}",
        cpm.log()
    );
    dev.send_to(response_to(&text, 200).as_bytes(), from).expect("200");
    let got = wait_for_final(&sender, &mut buf);
    assert_eq!(
        got.as_deref().and_then(status_of),
        Some(200),
        "late 200 forwarded\n{}",
        cpm.log()
    );
}

fn wait_for_final(sock: &UdpSocket, buf: &mut [u8]) -> Option<String> {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok((n, _)) = sock.recv_from(buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if status_of(&text).is_some_and(|c| c >= 200) {
                return Some(text);
            }
        }
    }
    None
}

#[test]
fn a_delivery_in_flight_keeps_its_user_active_and_a_refusal_comes_back_to_the_preferences() {
    // The PF's idle timeout (1 s) passes while bob's only device takes
    // 2.5 s to refuse the message. The wait runs outside the PF's context
    // (actors/src/answer.rs) but still counts as work in flight: the PF is
    // not passivated under it, and the refusal comes back to the PF, whose
    // default preference defers the message (202), not a 500.
    let (_dir, cfg) = config("[actors]\nidle_timeout_s = 1\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let device = RawDevice::start(|_, _| {
        std::thread::sleep(Duration::from_millis(2500));
        486
    });
    assert_eq!(device.register(&cpm, "bob", "slow-1", 600), Some(200));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let msg = raw_message(cpm.udp, port, "z9hG4bKslow", "slow-1", "", "take your time");
    let resp = udp_exchange(&sock, cpm.udp, msg.as_bytes(), Duration::from_secs(8)).expect("an answer");
    assert_eq!(status_of(&resp), Some(202), "deferred after the refusal: {resp}");
    assert_eq!(device.received().len(), 1, "one delivery attempt");
    let log = cpm.log();
    assert!(log.contains("no device accepted the message"), "the PF decided: {log}");
    assert!(!log.contains("participating function gone"), "{log}");
}

/// An OPTIONS from alice's device (its own socket) to `to`.
fn options(cpm: &Cpm, asker: &RawDevice, call_id: &str, to: &str, extra: &str) -> String {
    let user = if to.is_empty() { String::new() } else { format!("{to}@") };
    format!(
        "OPTIONS sip:{user}127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK{call_id}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:{user}127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n",
        s = cpm.udp,
        p = asker.port,
    )
}

#[test]
fn options_for_a_user_are_answered_by_the_users_devices() {
    let cpm = Cpm::start(&["--open"]);
    let asker = RawDevice::start(|_, _| 200);
    let ask = |call_id: &str, to: &str, extra: &str| {
        asker
            .request(cpm.udp, &options(&cpm, &asker, call_id, to, extra))
            .expect("an answer")
    };
    // The server itself answers for itself.
    let own = ask("q0", "", "");
    assert_eq!(status_of(&own), Some(200), "{own}");
    assert!(header(&own, "Allow").is_some_and(|a| a.contains("MESSAGE")), "{own}");
    // bob has no device: unavailable, not a 200 in his name.
    let none = ask("q1", "bob", "");
    assert_eq!(status_of(&none), Some(480), "{none}");
    // bob's device answers, and its own 200 comes back.
    let phone = RawDevice::start(|_, _| 200);
    assert_eq!(phone.register(&cpm, "bob", "phone", 600), Some(200));
    let answered = ask("q2", "bob", "");
    assert!(answered.starts_with("SIP/2.0 200 Whatever\r\n"), "{answered}");
    assert!(
        header(&answered, "To").is_some_and(|t| t.contains("tag=dev")),
        "{answered}"
    );
    let got = phone.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!("OPTIONS sip:bob@127.0.0.1:{} SIP/2.0", phone.port)),
        "sent to the device's contact: {}",
        got[0]
    );
    // Privacy asked: the device does not learn who asks.
    let private = ask("q3", "bob", "Privacy: id\r\n");
    assert_eq!(status_of(&private), Some(200), "{private}");
    let from = header(&phone.wait_for(2, Duration::from_secs(5))[1], "From").unwrap_or_default();
    assert!(from.contains("anonymous.invalid") && !from.contains("alice"), "{from}");
    // A device that refuses it (here 405): bob is not available for it.
    let cpm2 = Cpm::start(&["--open"]);
    let refuser = RawDevice::start(|_, _| 405);
    assert_eq!(refuser.register(&cpm2, "bob", "old", 600), Some(200));
    let resp = asker
        .request(cpm2.udp, &options(&cpm2, &asker, "q4", "bob", ""))
        .expect("an answer");
    assert_eq!(status_of(&resp), Some(480), "{resp}");
    assert_eq!(refuser.received().len(), 1);
}
