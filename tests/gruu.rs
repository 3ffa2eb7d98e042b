//! GRUUs (RFC 5627): a REGISTER with `Supported: gruu` and `+sip.instance`
//! gets a public and a temporary GRUU per device; a MESSAGE to either
//! reaches that device only; a temporary one is valid until the device
//! registers with another Call-ID, across restarts, and cannot be forged.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(5);

/// REGISTER `dev` as `instance` of `user` with Call-ID `call_id` and CSeq
/// `cseq`, asking for GRUUs, for 600 s; the final response.
fn register(cpm: &Cpm, dev: &RawDevice, user: &str, instance: &str, call_id: &str, cseq: u32) -> String {
    register_for(cpm, dev, user, instance, call_id, cseq, 600)
}

/// [`register`] for `expires` seconds (0 removes the binding).
fn register_for(
    cpm: &Cpm,
    dev: &RawDevice,
    user: &str,
    instance: &str,
    call_id: &str,
    cseq: u32,
    expires: u32,
) -> String {
    let req = format!(
        "REGISTER sip:127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKreg{call_id}{cseq}\r\n\
         From: <sip:{user}@127.0.0.1>;tag=r\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
         Supported: gruu\r\n\
         Contact: <sip:{user}@127.0.0.1:{p}>;+g.oma.sip-im;+sip.instance=\"<urn:uuid:{instance}>\"\r\n\
         Expires: {expires}\r\nContent-Length: 0\r\n\r\n",
        s = cpm.udp,
        p = dev.port,
    );
    let resp = dev.request(cpm.udp, &req).expect("an answer to the REGISTER");
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    resp
}

/// The value of the Contact parameter `param` (quoted) of the binding of
/// `instance` in a REGISTER's 200.
fn gruu_of(resp: &str, instance: &str, param: &str) -> String {
    let line = resp
        .lines()
        .filter(|l| l.starts_with("Contact:"))
        .flat_map(|l| l.split(", <"))
        .find(|c| c.contains(&format!("urn:uuid:{instance}")))
        .unwrap_or_else(|| panic!("no Contact of {instance}: {resp}"));
    let start = line
        .find(&format!("{param}=\""))
        .unwrap_or_else(|| panic!("no {param} in {line}"))
        + param.len()
        + 2;
    line[start..].split('"').next().unwrap().to_string()
}

/// A MESSAGE from alice (her own socket) to `uri`; the final status.
fn message_to(cpm: &Cpm, alice: &RawDevice, uri: &str, n: u32) -> Option<u16> {
    let req = format!(
        "MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKgr{n}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a{n}\r\nTo: <{uri}>\r\nCall-ID: gruu-msg-{n}\r\nCSeq: 1 MESSAGE\r\n\
         Max-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        p = alice.port,
    );
    status_of(&alice.request(cpm.udp, &req)?)
}

/// A GRUU with the port our test server listens on (GRUUs are in the
/// primary domain, 127.0.0.1 here, without one).
fn with_port(cpm: &Cpm, gruu: &str) -> String {
    gruu.replacen("@127.0.0.1;", &format!("@127.0.0.1:{};", cpm.udp), 1)
}

#[test]
fn each_device_gets_gruus_that_reach_it_alone() {
    let cpm = Cpm::start(&["--open"]);
    let phone = RawDevice::start(|_, _| 200);
    let tablet = RawDevice::start(|_, _| 200);
    register(&cpm, &phone, "bob", "phone", "call-phone", 1);
    let resp = register(&cpm, &tablet, "bob", "tablet", "call-tablet", 1);
    let alice = RawDevice::start(|_, _| 200);

    let public = gruu_of(&resp, "phone", "pub-gruu");
    assert_eq!(public, "sip:bob@127.0.0.1;gr=urn:uuid:phone");
    let temp = gruu_of(&resp, "phone", "temp-gruu");
    assert!(temp.starts_with("sip:tgruu.") && temp.ends_with(";gr"), "{temp}");
    assert!(
        !temp.contains("bob") && !temp.contains("phone"),
        "reveals nothing: {temp}"
    );

    assert_eq!(message_to(&cpm, &alice, &with_port(&cpm, &temp), 1), Some(200));
    assert_eq!(phone.wait_for(1, WAIT).len(), 1);
    let public = with_port(&cpm, &public);
    assert_eq!(message_to(&cpm, &alice, &public, 2), Some(200));
    assert_eq!(phone.wait_for(2, WAIT).len(), 2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(tablet.received().is_empty(), "the other device got nothing");

    // A refresh mints another temporary GRUU; the first one still works.
    let again = gruu_of(
        &register(&cpm, &phone, "bob", "phone", "call-phone", 2),
        "phone",
        "temp-gruu",
    );
    assert_ne!(again, temp);
    assert_eq!(message_to(&cpm, &alice, &with_port(&cpm, &again), 3), Some(200));
    assert_eq!(message_to(&cpm, &alice, &with_port(&cpm, &temp), 4), Some(200));
    assert_eq!(phone.wait_for(4, WAIT).len(), 4);
    assert!(tablet.received().is_empty());
}

#[test]
fn a_temp_gruu_lasts_until_another_call_id_and_survives_restart() {
    let mut cpm = Cpm::start(&["--open"]);
    let phone = RawDevice::start(|_, _| 200);
    let temp = gruu_of(
        &register(&cpm, &phone, "bob", "phone", "boot-1", 1),
        "phone",
        "temp-gruu",
    );
    let alice = RawDevice::start(|_, _| 200);

    // The store keeps the binding and the sealing secret.
    cpm.restart();
    assert_eq!(message_to(&cpm, &alice, &with_port(&cpm, &temp), 1), Some(200));
    assert_eq!(phone.wait_for(1, WAIT).len(), 1);

    // The device reboots: a new Call-ID invalidates the old temporary GRUU,
    // which now names nothing (404); the new one reaches the device.
    let fresh = gruu_of(
        &register(&cpm, &phone, "bob", "phone", "boot-2", 1),
        "phone",
        "temp-gruu",
    );
    assert_eq!(message_to(&cpm, &alice, &with_port(&cpm, &temp), 2), Some(404));
    assert_eq!(message_to(&cpm, &alice, &with_port(&cpm, &fresh), 3), Some(200));
    std::thread::sleep(Duration::from_millis(300));
    let got = phone.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].contains("gruu-msg-3"), "{}", got[1]);
}

#[test]
fn a_message_to_an_absent_devices_gruu_waits_for_that_device() {
    let cpm = Cpm::start(&["--open"]);
    let phone = RawDevice::start(|_, _| 200);
    let tablet = RawDevice::start(|_, _| 200);
    let resp = register(&cpm, &phone, "bob", "phone", "call-phone", 1);
    let (public, temp) = (
        gruu_of(&resp, "phone", "pub-gruu"),
        gruu_of(&resp, "phone", "temp-gruu"),
    );
    register(&cpm, &tablet, "bob", "tablet", "call-tablet", 1);
    register_for(&cpm, &phone, "bob", "phone", "call-phone", 2, 0);
    let alice = RawDevice::start(|_, _| 200);

    // The phone is away: both are deferred (the default preference)...
    let public = with_port(&cpm, &public);
    assert_eq!(message_to(&cpm, &alice, &public, 1), Some(202));
    assert_eq!(message_to(&cpm, &alice, &with_port(&cpm, &temp), 2), Some(202));
    // ...and not pushed to the tablet when it registers again...
    register(&cpm, &tablet, "bob", "tablet", "call-tablet", 2);
    std::thread::sleep(Duration::from_millis(500));
    assert!(tablet.received().is_empty(), "{:?}", tablet.received());
    // ...but to the phone when it comes back with the same Call-ID.
    register(&cpm, &phone, "bob", "phone", "call-phone", 3);
    let got = phone.wait_for(2, WAIT);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].contains("gruu-msg-1") && got[1].contains("gruu-msg-2"),
        "{got:?}"
    );
    assert!(tablet.received().is_empty());
}

#[test]
fn notify_and_wait_lists_a_gruu_message_to_its_device_only() {
    let (_d, cfg) = config("[preferences]\ndeferred_delivery = \"notify\"\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let phone = RawDevice::start(|_, _| 200);
    let tablet = RawDevice::start(|_, _| 200);
    let resp = register(&cpm, &phone, "bob", "phone", "call-phone", 1);
    let public = with_port(&cpm, &gruu_of(&resp, "phone", "pub-gruu"));
    register_for(&cpm, &phone, "bob", "phone", "call-phone", 2, 0);
    let alice = RawDevice::start(|_, _| 200);
    assert_eq!(message_to(&cpm, &alice, &public, 1), Some(202));
    let bob = format!("sip:bob@127.0.0.1:{}", cpm.udp);
    assert_eq!(message_to(&cpm, &alice, &bob, 2), Some(202));
    // The tablet is told of the message to bob, not of the phone's.
    register(&cpm, &tablet, "bob", "tablet", "call-tablet", 1);
    let lists = tablet.wait_for(1, WAIT);
    assert_eq!(lists.len(), 1, "{lists:?}");
    let ids = listed_ids(&lists[0]);
    assert_eq!(ids.len(), 1, "only bob's message: {}", lists[0]);
    // The phone's message was queued just before: the tablet may not take it.
    let theirs = ids[0] - 1;
    let doc = format!("<deferred-actions><action id=\"{theirs}\" do=\"retrieve\"/></deferred-actions>");
    let answer = deferred_action(cpm.udp, &tablet, "bob", &doc);
    assert!(
        body(&answer).contains(&format!("id=\"{theirs}\" status=\"other-device\"")),
        "{answer}"
    );
    // The phone, back, is told of both.
    register(&cpm, &phone, "bob", "phone", "call-phone", 3);
    let got = phone.wait_for(1, WAIT);
    assert_eq!(listed_ids(&got[0]).len(), 2, "{}", got[0]);
}

#[test]
fn forged_or_damaged_temp_gruus_are_not_found() {
    let cpm = Cpm::start(&["--open"]);
    let phone = RawDevice::start(|_, _| 200);
    let temp = gruu_of(
        &register(&cpm, &phone, "bob", "phone", "call-1", 1),
        "phone",
        "temp-gruu",
    );
    let alice = RawDevice::start(|_, _| 200);
    let token_end = temp.find('@').unwrap();
    let mut damaged = temp.clone().into_bytes();
    damaged[token_end - 1] = if damaged[token_end - 1] == b'A' { b'B' } else { b'A' };
    let damaged = String::from_utf8(damaged).unwrap();
    let port = cpm.udp;
    for (n, uri) in [
        with_port(&cpm, &damaged),
        format!("sip:tgruu.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@127.0.0.1:{port};gr"),
        format!("sip:tgruu.@127.0.0.1:{port};gr"),
        format!("sip:tgruu.{}@127.0.0.1:{port};gr", "A".repeat(2000)),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(message_to(&cpm, &alice, uri, n as u32), Some(404), "{uri}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(phone.received().is_empty());
}
