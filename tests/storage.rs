//! A store that cannot write (a full disk, here the process's file-size
//! limit): requests that need durability are refused with 500, nothing is
//! acknowledged that was not flushed, the rest of the server keeps working,
//! `/health` and `/metrics` say what is wrong, and after a restart with room
//! again every acknowledged message is delivered.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use cpm::admin::client;

/// Room for sled's start and a few hundred of the messages below.
const DISK: u64 = 4 * 1024 * 1024;
/// Messages sent at most while waiting for the disk to fill (bounded loop).
const MAX_MESSAGES: usize = 3_000;
const PADDING: usize = 8_000;

/// An 8 kB pager-mode MESSAGE from alice to bob, numbered in its body.
fn big_message(server: u16, me: u16, n: usize) -> String {
    let body = format!("n={n:05} {}", "x".repeat(PADDING));
    format!(
        "MESSAGE sip:bob@127.0.0.1:{server} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKfull{n}\r\n\
         From: <sip:alice@127.0.0.1>;tag=f{n}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: full-{n}\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The final status of one request sent from `sock` (provisional answers skipped).
fn final_status(sock: &UdpSocket, server: u16, text: &str) -> Option<u16> {
    sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    sock.send_to(text.as_bytes(), ("127.0.0.1", server)).expect("send");
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let code = status_of(&String::from_utf8_lossy(&buf[..n]))?;
        if code >= 200 {
            return Some(code);
        }
    }
}

fn number(text: &str) -> Option<usize> {
    body(text).strip_prefix("n=")?.get(..5)?.parse().ok()
}

#[test]
fn a_full_disk_refuses_what_it_cannot_keep_and_loses_nothing_it_acknowledged() {
    let mut cpm = Cpm::start_with_file_limit(&["--open"], DISK);
    let admin = format!("http://127.0.0.1:{}", cpm.admin);
    assert_eq!(client::get(&admin, "/health", None).expect("health").status, 200);
    let carol = phone(&cpm, "carol");

    // bob is offline: each message is deferred, 202 only after its flush.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().expect("addr").port();
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for n in 1..=MAX_MESSAGES {
        match final_status(&sock, cpm.udp, &big_message(cpm.udp, me, n)) {
            Some(202) if refused == 0 => accepted.push(n),
            Some(500) => refused += 1,
            other => panic!("message {n}: {other:?} (202 or 500 expected); log:\n{}", cpm.log()),
        }
        if refused == 5 {
            break;
        }
    }
    assert_eq!(refused, 5, "the disk never filled in {MAX_MESSAGES} messages");
    assert!(!accepted.is_empty(), "nothing fit before the disk filled");
    assert!(cpm.alive(), "the server survives the full disk");

    // What needs no durable write still works: relaying to carol's device.
    let relayed = big_message(cpm.udp, me, 99_999).replace("sip:bob@", "sip:carol@");
    assert_eq!(
        final_status(&sock, cpm.udp, &relayed),
        Some(200),
        "relay to an online device"
    );
    assert_eq!(carol.wait_for(1, Duration::from_secs(5)).len(), 1);
    // A registration the store cannot keep is refused, not half-made.
    let dave = RawDevice::start(|_, _| 200);
    assert_eq!(dave.register(&cpm, "dave", "dave-phone", 600), Some(500));

    let health = client::get(&admin, "/health", None).expect("health");
    assert_eq!(health.status, 503, "{}", health.body);
    let health: serde_json::Value = health.json().expect("json");
    assert_eq!(health["status"], "failing");
    assert!(health["store"].as_str().is_some_and(|e| !e.is_empty()), "{health}");
    let metrics = client::get(&admin, "/metrics", None).expect("metrics").body;
    assert!(metrics.contains("\ncpm_store_healthy 0\n"), "{metrics}");
    assert!(!metrics.contains("\ncpm_store_flush_failures_total 0\n"), "{metrics}");

    // Room again: every acknowledged message reaches bob once, in order, and
    // none of the refused ones does.
    cpm.file_size_limit = None;
    cpm.restart();
    let bob = phone(&cpm, "bob");
    bob.wait_for(accepted.len(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500)); // anything more would show now
    let got: Vec<usize> = bob.received().iter().filter_map(|m| number(m)).collect();
    assert_eq!(got, accepted, "delivered after the restart");
    let admin = format!("http://127.0.0.1:{}", cpm.admin);
    assert_eq!(client::get(&admin, "/health", None).expect("health").status, 200);
    let metrics = client::get(&admin, "/metrics", None).expect("metrics").body;
    let flushes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cpm_store_flush_duration_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        flushes.is_some_and(|n| n > 0),
        "bob's registration was flushed: {metrics}"
    );
}
