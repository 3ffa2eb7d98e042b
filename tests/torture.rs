//! RFC 4475 / RFC 5118 torture messages against the real server over UDP.
//!
//! Every file of `shared/torture/valid` and `shared/torture/invalid` (see its
//! README) goes out unchanged as one datagram, from its own socket; whatever
//! the server answers is recorded and printed. The server must never answer
//! with a 5xx except where the README names one, and must still serve
//! OPTIONS, REGISTER and a pager-mode MESSAGE afterwards.
//!
//! `shared/` sits beside the repository; the test fails when it is missing.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const TORTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/torture");

/// 5xx answers the README calls right: `badvers` 505, and 501 for the
/// unknown methods (`mismatch02`; `intmeth` and `esc02` at an endpoint).
const FIVE_XX_ALLOWED: &[(&str, u16)] = &[
    ("invalid/badvers.dat", 505),
    ("invalid/mismatch02.dat", 501),
    ("valid/intmeth.dat", 501),
    ("valid/esc02.dat", 501),
];

/// How long to wait for the first answer to one file, and for more after it.
const FIRST: Duration = Duration::from_millis(700);
const MORE: Duration = Duration::from_millis(150);

fn torture_files() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["valid", "invalid"] {
        let path = Path::new(TORTURE).join(dir);
        assert!(
            path.is_dir(),
            "torture messages missing: {} (shared/ must be checked out beside the repository)",
            path.display()
        );
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .expect("read torture dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no files in {}", path.display());
        for f in files {
            let name = format!("{dir}/{}", f.file_name().unwrap().to_string_lossy());
            out.push((name, std::fs::read(&f).expect("read torture file")));
        }
    }
    out
}

/// Every datagram that arrives within `first` (then `more` after each one).
fn collect(sock: &UdpSocket, first: Duration, more: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_535];
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut wait = first;
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(wait)).expect("timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
        wait = more;
    }
    got
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

/// Send `text`, return the first response within 5 s.
fn request(sock: &UdpSocket, server: u16, text: &str) -> String {
    sock.send_to(text.as_bytes(), ("127.0.0.1", server)).expect("send");
    sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("no answer within 5 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if status_of(&text).is_some_and(|s| s >= 200) {
            return text;
        }
    }
}

#[test]
fn torture_messages_never_get_5xx_and_service_goes_on() {
    let files = torture_files();
    let cpm = Cpm::start(&["--open"]);

    let mut answers: Vec<(String, Vec<String>, UdpSocket)> = Vec::new();
    for (name, data) in &files {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.send_to(data, ("127.0.0.1", cpm.udp))
            .expect("send torture datagram");
        let got = collect(&sock, FIRST, MORE);
        answers.push((name.clone(), got, sock));
    }
    // Late answers (retransmitted finals, slow paths) still count.
    std::thread::sleep(Duration::from_millis(500));
    for (_, got, sock) in &mut answers {
        got.extend(collect(sock, Duration::from_millis(20), Duration::from_millis(20)));
    }

    let mut bad = Vec::new();
    for (name, got, _) in &answers {
        let lines: Vec<&str> = got.iter().map(|r| first_line(r)).collect();
        println!(
            "{name:45} {}",
            if lines.is_empty() {
                "(no answer)".into()
            } else {
                lines.join(" | ")
            }
        );
        for resp in got {
            let Some(code) = status_of(resp) else {
                bad.push(format!("{name}: not a response: {:?}", first_line(resp)));
                continue;
            };
            let allowed = FIVE_XX_ALLOWED.iter().any(|(f, c)| f == name && *c == code);
            if (500..=599).contains(&code) && !allowed {
                bad.push(format!("{name}: {}", first_line(resp)));
            }
        }
    }
    assert!(bad.is_empty(), "5xx or garbage answers: {bad:#?}\nlog: {}", cpm.log());

    // Still alive: OPTIONS.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().expect("addr").port();
    let port = cpm.udp;
    let options = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKtortopt\r\n\
         From: <sip:alice@127.0.0.1>;tag=o\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: torture-options\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let resp = request(&sock, port, &options);
    assert_eq!(status_of(&resp), Some(200), "OPTIONS after the torture run: {resp}");

    // Still alive: a device registers, a MESSAGE reaches it, the sender gets its 200.
    let device = UdpSocket::bind("127.0.0.1:0").expect("bind device");
    let dev = device.local_addr().expect("addr").port();
    let reg = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{dev};branch=z9hG4bKtortreg\r\n\
         From: <sip:bob@127.0.0.1>;tag=r\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: torture-reg\r\nCSeq: 1 REGISTER\r\n\
         Max-Forwards: 70\r\nContact: <sip:bob@127.0.0.1:{dev}>;+g.oma.sip-im;+sip.instance=\"<urn:uuid:torture-1>\"\r\n\
         Expires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    let resp = request(&device, port, &reg);
    assert_eq!(status_of(&resp), Some(200), "REGISTER after the torture run: {resp}");

    let msg = format!(
        "MESSAGE sip:bob@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKtortmsg\r\n\
         From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: torture-msg\r\nCSeq: 1 MESSAGE\r\n\
         Max-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).expect("send MESSAGE");

    // The device answers every MESSAGE it gets (retransmissions too) with 200.
    device
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delivered = 0;
    let mut buf = vec![0u8; 65_535];
    let sender_status = loop {
        assert!(
            Instant::now() < deadline,
            "no final answer to the MESSAGE within 10 s (delivered {delivered}); log: {}",
            cpm.log()
        );
        if let Ok((n, from)) = device.recv_from(&mut buf) {
            let got = String::from_utf8_lossy(&buf[..n]).into_owned();
            if got.starts_with("MESSAGE ") {
                assert!(got.ends_with("hello"), "body delivered unchanged: {got}");
                delivered += 1;
                let mut keep: Vec<String> = ["Via", "From", "Call-ID", "CSeq"]
                    .iter()
                    .flat_map(|h| header(&got, h))
                    .map(str::to_string)
                    .collect();
                keep.extend(header(&got, "To").iter().map(|t| format!("{t};tag=dev")));
                let ok = format!("SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n", keep.join("\r\n"));
                device.send_to(ok.as_bytes(), from).expect("device answers");
            }
        }
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let got = String::from_utf8_lossy(&buf[..n]).into_owned();
            match status_of(&got) {
                Some(code) if code >= 200 => break code,
                _ => {}
            }
        }
    };
    assert!(delivered >= 1, "the device got the MESSAGE");
    assert_eq!(sender_status, 200, "sender's answer; log: {}", cpm.log());
}
