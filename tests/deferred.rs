//! Issue 3: deferred messages — queued durably, delivered when a device
//! comes back, never lost; notify and wait; expiry; store, interwork, caps.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

const BOB: &str = "sip:bob@127.0.0.1";
const WAIT: Duration = Duration::from_secs(10);

/// The Call-IDs of the requests a device received, in arrival order.
fn call_ids(received: &[String]) -> Vec<String> {
    received
        .iter()
        .map(|m| header(m, "Call-ID").unwrap_or_default())
        .collect()
}

/// Stop the server (SIGKILL) and open its store to look inside.
fn store_of(cpm: &mut Cpm) -> cpm_store::Store {
    cpm.kill();
    // sled's file lock goes with the process, a moment later.
    cpm_store::Store::open_when_free(&cpm.data, Duration::from_secs(5)).expect("open the store")
}

/// The seqs of bob's queued messages, read from the stopped server's
/// store; the server is then started again.
fn queued_seqs(cpm: &mut Cpm) -> Vec<u64> {
    let seqs = store_of(cpm)
        .deferred(BOB, None, 100)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    cpm.restart();
    seqs
}

fn numbers(lines: &[String]) -> Vec<u32> {
    lines.iter().map(|l| call_number(l)).collect()
}

#[test]
fn offline_messages_are_pushed_in_order_once() {
    let mut cpm = Cpm::start(&["--open"]);
    assert!(
        messages(&cpm, Transport::Udp, "alice", "bob", 5, 202, &[]),
        "each deferred message is answered 202"
    );
    let dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    let got = dev.wait_lines(5, WAIT);
    assert_eq!(
        numbers(&got),
        vec![1, 2, 3, 4, 5],
        "exactly those 5, in order, once: {got:?}"
    );
    // The queue is empty: a second device registering later gets nothing.
    let mut later = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &later.contact(), 2, 600, 200));
    std::thread::sleep(Duration::from_millis(800));
    assert!(later.finish().is_empty());
    let store = store_of(&mut cpm);
    assert!(store.deferred(BOB, None, 100).unwrap().is_empty());
}

#[test]
fn two_devices_registering_at_once_get_each_message_once() {
    let mut cpm = Cpm::start(&["--open"]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 20, 202, &[]));
    let devs = [Device::start(Transport::Udp), Device::start(Transport::Udp)];
    std::thread::scope(|s| {
        for (i, d) in devs.iter().enumerate() {
            let cpm = &cpm;
            s.spawn(move || {
                assert!(register(
                    cpm,
                    Transport::Udp,
                    "bob",
                    &d.contact(),
                    i as u32 + 1,
                    600,
                    200
                ))
            });
        }
    });
    wait_until(WAIT, || devs.iter().map(|d| d.lines().len()).sum::<usize>() >= 20);
    std::thread::sleep(Duration::from_millis(500));
    let mut all: Vec<u32> = devs.iter().flat_map(|d| numbers(&d.lines())).collect();
    for d in &devs {
        let n = numbers(&d.lines());
        assert!(
            n.windows(2).all(|w| w[0] < w[1]),
            "each device sees arrival order: {n:?}"
        );
    }
    all.sort();
    assert_eq!(
        all,
        (1..=20).collect::<Vec<_>>(),
        "each message to one device, none twice, none lost"
    );
    assert!(store_of(&mut cpm).deferred(BOB, None, 100).unwrap().is_empty());
}

#[test]
fn a_failing_device_leaves_the_rest_queued() {
    let mut cpm = Cpm::start(&["--open"]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 5, 202, &[]));
    // This device answers 500 to the third pushed message.
    let flaky = RawDevice::start(|n, _| if n == 3 { 500 } else { 200 });
    assert_eq!(flaky.register(&cpm, "bob", "flaky", 600), Some(200));
    let got = flaky.wait_for(3, WAIT);
    std::thread::sleep(Duration::from_millis(800));
    let got_after = flaky.received();
    assert_eq!(got_after.len(), 3, "the push stops at the failure: {got:?}");
    let ids: Vec<u32> = got_after
        .iter()
        .map(|m| call_number(&format!("M {}", header(m, "Call-ID").unwrap())))
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    // The next registration goes on from there: 3 (it failed), 4, 5.
    let dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 7, 600, 200));
    assert_eq!(numbers(&dev.wait_lines(3, WAIT)), vec![3, 4, 5]);
    assert!(store_of(&mut cpm).deferred(BOB, None, 100).unwrap().is_empty());
}

/// Overwrite deferred record `seq` of bob in a stopped server's store with
/// bytes that do not decode, as a damaged disk would.
fn damage_record(cpm: &mut Cpm, seq: u64) {
    drop(store_of(cpm)); // stopped, and its store closed again
    let db = cpm_store::retry_while_locked(Duration::from_secs(5), || Ok(sled::open(&cpm.data)?))
        .expect("open the store's database");
    let mut key = format!("{BOB}\0").into_bytes();
    key.extend_from_slice(&seq.to_be_bytes());
    let tree = db.open_tree("deferred").unwrap();
    assert!(
        tree.insert(key, &b"\xff\xff"[..]).unwrap().is_some(),
        "the record was there"
    );
    db.flush().unwrap();
}

#[test]
fn a_damaged_record_does_not_hold_back_the_rest() {
    let mut cpm = Cpm::start(&["--open"]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 4, 202, &[]));
    let seqs = queued_seqs(&mut cpm);
    assert_eq!(seqs.len(), 4);
    damage_record(&mut cpm, seqs[1]);
    cpm.restart();
    // The queue still takes messages (its usage is read past the damage)...
    assert!(messages(&cpm, Transport::Udp, "carol", "bob", 1, 202, &[]));
    // ...and pushes the others, in order, on registration.
    let dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    let got = dev.wait_lines(4, WAIT);
    assert_eq!(numbers(&got), vec![1, 3, 4, 1], "all but the damaged one: {got:?}");
    assert!(
        cpm.log().contains("undecodable deferred message"),
        "the skipped record is logged: {}",
        cpm.log()
    );
}

#[test]
fn deferred_messages_survive_kill_9() {
    let mut cpm = Cpm::start(&["--open"]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 30, 202, &[]));
    cpm.restart(); // SIGKILL right after the last 202, then start again
    let dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    assert_eq!(numbers(&dev.wait_lines(30, WAIT)), (1..=30).collect::<Vec<_>>());
}

/// `n` messages deferred to bob, then a device of his that answers each
/// request after `ms` registers: returned once its push is under way.
fn slow_device_being_pushed(cpm: &Cpm, n: u32, ms: u64) -> RawDevice {
    assert!(messages(cpm, Transport::Udp, "alice", "bob", n, 202, &[]));
    let dev = RawDevice::start(move |_, _| {
        std::thread::sleep(Duration::from_millis(ms));
        200
    });
    assert_eq!(dev.register(cpm, "bob", "slow", 600), Some(200));
    assert!(dev.wait_for(2, WAIT).len() >= 2, "the push is under way");
    dev
}

/// A message sent while a returning device is still being pushed its
/// deferred messages reaches that device after them, not in between.
#[test]
fn new_messages_wait_behind_the_deferred_push_to_a_returning_device() {
    let cpm = Cpm::start(&["--open"]);
    // A slow device: the push of 20 takes more than half a second.
    let dev = slow_device_being_pushed(&cpm, 20, 30);
    for i in 1..=3 {
        let text = raw_message(cpm.udp, "", "now", &format!("live{i}"));
        assert_eq!(
            send_raw(cpm.udp, &text),
            Some(200),
            "live{i} is delivered, not deferred"
        );
    }
    let got = dev.wait_for(23, WAIT);
    let ids = call_ids(&got);
    assert_eq!(ids.len(), 23, "{ids:?}");
    let deferred: Vec<u32> = ids[..20].iter().map(|c| call_number(&format!("M {c}"))).collect();
    assert_eq!(
        deferred,
        (1..=20).collect::<Vec<_>>(),
        "the backlog first, in order: {ids:?}"
    );
    assert_eq!(&ids[20..], ["live1", "live2", "live3"], "{ids:?}");
}

/// The same with a second device that is not being pushed: it answers a
/// live message at once, and the slow device still gets that message once
/// its push ends (a held fork used to be dropped when another device had
/// already answered).
#[test]
fn a_device_being_pushed_still_gets_what_another_device_answered_first() {
    let cpm = Cpm::start(&["--open"]);
    let slow = slow_device_being_pushed(&cpm, 20, 50);
    // This one refuses the backlog (its push stops at once) but takes live messages.
    let quick = RawDevice::start(
        |_, text| match header(text, "Call-ID").is_some_and(|c| c.starts_with("live")) {
            true => 200,
            false => 486,
        },
    );
    assert_eq!(quick.register(&cpm, "bob", "quick", 600), Some(200));
    for i in 1..=3 {
        let text = raw_message(cpm.udp, "", "now", &format!("live{i}"));
        assert_eq!(send_raw(cpm.udp, &text), Some(200), "live{i}: the quick device took it");
    }
    let live = |d: &RawDevice| -> Vec<String> {
        d.received()
            .iter()
            .filter_map(|m| header(m, "Call-ID"))
            .filter(|c| c.starts_with("live"))
            .collect()
    };
    assert_eq!(live(&quick), ["live1", "live2", "live3"]);
    let got = slow.wait_for(23, WAIT);
    let ids = call_ids(&got);
    assert_eq!(ids.len(), 23, "the backlog, then the live messages: {ids:?}");
    assert_eq!(&ids[20..], ["live1", "live2", "live3"], "{ids:?}");
}

/// A device that answers 200 after the fork timeout has the message,
/// which had gone to the deferred queue meanwhile (202): the late answer
/// takes the queued copy back, so its next registration brings nothing.
#[test]
fn a_late_answer_takes_the_deferred_copy_back() {
    let (_d, cfg) = config("[messaging]\nfork_timeout_ms = 300\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let dev = RawDevice::start(|_, text| {
        if header(text, "Call-ID").is_some_and(|c| c.starts_with("late")) {
            std::thread::sleep(Duration::from_millis(1200));
        }
        200
    });
    assert_eq!(dev.register(&cpm, "bob", "slowpoke", 600), Some(200));
    let text = raw_message(cpm.udp, "", "answered late", "late1");
    assert_eq!(
        send_raw(cpm.udp, &text),
        Some(202),
        "no 2xx within the fork timeout: deferred"
    );
    assert!(
        wait_until(WAIT, || cpm.log().contains("deferred message taken back")),
        "the late 200 took the queued copy back"
    );
    // A refresh pushes whatever is queued: nothing, so the device has the
    // message once (before the change it got it a second time here).
    assert_eq!(dev.register(&cpm, "bob", "slowpoke", 600), Some(200));
    std::thread::sleep(Duration::from_millis(1500));
    let copies = dev
        .received()
        .iter()
        .filter(|m| header(m, "Call-ID").is_some_and(|c| c.starts_with("late")))
        .count();
    assert_eq!(copies, 1, "{:?}", dev.received());
}

/// A live message held behind a push past the fork timeout is deferred
/// (202) and comes with the push, once: the held fork is dropped, not sent
/// as well when the push ends.
#[test]
fn a_held_message_that_times_out_comes_once_with_the_push() {
    let (_d, cfg) = config("[messaging]\nfork_timeout_ms = 400\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let dev = slow_device_being_pushed(&cpm, 15, 100);
    let text = raw_message(cpm.udp, "", "held", "held1");
    assert_eq!(
        send_raw(cpm.udp, &text),
        Some(202),
        "held past the fork timeout: deferred"
    );
    let got = dev.wait_for(16, WAIT);
    std::thread::sleep(Duration::from_millis(1500)); // a second copy would come now
    let ids = call_ids(&dev.received());
    assert_eq!(got.len(), 16, "{ids:?}");
    assert_eq!(ids.len(), 16, "the held message once, not twice: {ids:?}");
    assert_eq!(ids[15], "held1", "after the backlog: {ids:?}");
}

fn raw_message(server: u16, extra: &str, body: &str, tag: &str) -> String {
    format!(
        "MESSAGE sip:bob@127.0.0.1:{server} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{tag}\r\n\
         From: <sip:alice@127.0.0.1>;tag={tag}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: {tag}\r\nCSeq: 1 MESSAGE\r\n\
         {extra}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn send_raw(server: u16, text: &str) -> Option<u16> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = text.replace(
        "127.0.0.1:9;",
        &format!("127.0.0.1:{};", sock.local_addr().unwrap().port()),
    );
    status_of(&udp_exchange(&sock, server, text.as_bytes(), Duration::from_secs(5))?)
}

#[test]
fn expired_messages_are_never_delivered_and_discarded() {
    let mut cpm = Cpm::start(&["--open"]);
    // The sender asks for 1 s; the provider default (7 days) applies to the others.
    assert_eq!(
        send_raw(cpm.udp, &raw_message(cpm.udp, "Expires: 1\r\n", "short-lived", "exp1")),
        Some(202)
    );
    // Expires: 0 asks for now or never: with no device, 480, nothing queued.
    assert_eq!(
        send_raw(cpm.udp, &raw_message(cpm.udp, "Expires: 0\r\n", "now or never", "exp0")),
        Some(480)
    );
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 2, 202, &[]));
    std::thread::sleep(Duration::from_millis(2600));
    let dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    assert_eq!(
        numbers(&dev.wait_lines(2, WAIT)),
        vec![1, 2],
        "the expired one is not delivered"
    );
    assert!(cpm.log().contains("deferred message expired"));
    let store = store_of(&mut cpm);
    assert!(store.deferred(BOB, None, 10).unwrap().is_empty());
    assert_eq!(store.mss_count(BOB).unwrap(), 0, "discarded, not stored");
}

#[test]
fn expired_messages_are_stored_when_policy_says_store() {
    let (_d, cfg) = config("[deferred]\ndefault_expiry_s = 1\nmax_expiry_s = 60\non_expiry = \"store\"\n");
    let mut cpm = Cpm::start(&["--open", "--config", &cfg]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 3, 202, &[]));
    std::thread::sleep(Duration::from_millis(2600));
    let mut dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    std::thread::sleep(Duration::from_millis(800));
    assert!(dev.finish().is_empty());
    let store = store_of(&mut cpm);
    assert!(store.deferred(BOB, None, 10).unwrap().is_empty());
    let stored = store.mss_list(BOB, None, 10).unwrap();
    assert_eq!(stored.len(), 3);
    assert!(
        String::from_utf8_lossy(&stored[0].request).contains("hello bob"),
        "the original message is kept"
    );
}

fn action(server: u16, dev: &RawDevice, body: &str) -> String {
    deferred_action(server, dev, "bob", body)
}

#[test]
fn notify_and_wait_every_action_works() {
    let (_d, cfg) = config("[preferences]\ndeferred_delivery = \"notify\"\n");
    let mut cpm = Cpm::start(&["--open", "--config", &cfg]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 4, 202, &[]));
    let dev = RawDevice::start(|_, _| 200);
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    let got = dev.wait_for(1, WAIT);
    let note = &got[0];
    assert_eq!(
        header(note, "Content-Type").as_deref(),
        Some("application/vnd.cpm.deferred-list+xml"),
        "{note}"
    );
    assert!(
        header(note, "From").unwrap().contains("sip:deferred-messages@"),
        "{note}"
    );
    assert!(
        body(note).contains("from=\"sip:alice@127.0.0.1\""),
        "originator listed: {note}"
    );
    let ids = listed_ids(note);
    assert_eq!(ids.len(), 4, "{note}");
    let actions = format!(
        "<deferred-actions><action id=\"{}\" do=\"retrieve\"/><action id=\"{}\" do=\"discard\"/>\
         <action id=\"{}\" do=\"store\"/><action id=\"{}\" do=\"keep\"/><action id=\"999999\" do=\"discard\"/></deferred-actions>",
        ids[0], ids[1], ids[2], ids[3]
    );
    let resp = action(cpm.udp, &dev, &actions);
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    for status in ["retrieving", "discarded", "stored", "kept", "unknown"] {
        assert!(
            body(&resp).contains(&format!("status=\"{status}\"")),
            "{status} in {resp}"
        );
    }
    // The retrieved message arrives as originally sent.
    let got = dev.wait_for(2, WAIT);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(body(&got[1]).contains("hello bob"), "{}", got[1]);
    assert!(header(&got[1], "From").unwrap().contains("sip:alice@"), "original From");
    // The retrieved one leaves the queue once the device's 200 is in, and is
    // on disk with the next flush (before it, a crash only means it is sent
    // again): wait for the first, then for an action's answer, which comes
    // after a flush, before looking on disk after a SIGKILL.
    let queued = || {
        let users = cpm::admin::client::get(&format!("http://127.0.0.1:{}", cpm.admin), "/api/users/bob", None);
        users
            .ok()
            .and_then(|r| r.json().ok())
            .map(|u: serde_json::Value| u["deferred_count"].clone())
    };
    assert!(wait_until(WAIT, || queued() == Some(1.into())), "{:?}", queued());
    let keep = format!(
        "<deferred-actions><action id=\"{}\" do=\"keep\"/></deferred-actions>",
        ids[3]
    );
    assert_eq!(status_of(&action(cpm.udp, &dev, &keep)), Some(200));
    let store = store_of(&mut cpm);
    let left: Vec<u64> = store.deferred(BOB, None, 10).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(left, vec![ids[3]], "only the kept one is still queued");
    assert_eq!(store.mss_count(BOB).unwrap(), 1, "the stored one is in the MSS");
}

/// A deferred record damaged on disk: an action on it is answered
/// `failed` and logged (it was answered `unknown`, silently), and the other
/// actions of the same document are still done.
#[test]
fn an_action_on_an_unreadable_record_fails_alone() {
    let (_d, cfg) = config("[preferences]\ndeferred_delivery = \"notify\"\n");
    let mut cpm = Cpm::start(&["--open", "--config", &cfg]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 2, 202, &[]));
    let dev = RawDevice::start(|_, _| 200);
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    let ids = listed_ids(&dev.wait_for(1, WAIT)[0]);
    assert_eq!(ids.len(), 2, "{ids:?}");
    damage_record(&mut cpm, ids[0]);
    cpm.restart();
    let doc = format!(
        "<deferred-actions><action id=\"{}\" do=\"retrieve\"/><action id=\"{}\" do=\"keep\"/></deferred-actions>",
        ids[0], ids[1]
    );
    let resp = action(cpm.udp, &dev, &doc);
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    assert!(
        body(&resp).contains(&format!("id=\"{}\" status=\"failed\"", ids[0])),
        "{resp}"
    );
    assert!(
        body(&resp).contains(&format!("id=\"{}\" status=\"kept\"", ids[1])),
        "{resp}"
    );
    assert!(
        cpm.log().contains("deferred-message action on an unreadable record"),
        "{}",
        cpm.log()
    );
}

#[test]
fn retrieve_with_no_device_registered_is_no_device() {
    let mut cpm = Cpm::start(&["--open"]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 1, 202, &[]));
    let seq = queued_seqs(&mut cpm)[0];
    // From a device of bob that is not registered, and none is.
    let dev = RawDevice::start(|_, _| 200);
    let doc = format!("<deferred-actions><action id=\"{seq}\" do=\"retrieve\"/></deferred-actions>");
    let resp = action(cpm.udp, &dev, &doc);
    assert!(
        body(&resp).contains(&format!("id=\"{seq}\" status=\"no-device\"")),
        "{resp}"
    );
}

/// A pager-mode MESSAGE from alice (her own socket) to bob, Call-ID
/// `call_id`; the final status.
fn alice_to_bob(cpm: &Cpm, alice: &RawDevice, call_id: &str) -> Option<u16> {
    alice_to_bob_as(cpm, alice, call_id, "text/plain", "hello")
}

/// `alice_to_bob` with the given Content-Type and body.
fn alice_to_bob_as(cpm: &Cpm, alice: &RawDevice, call_id: &str, content_type: &str, body: &str) -> Option<u16> {
    let req = format!(
        "MESSAGE sip:bob@127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK{call_id}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n\
         Max-Forwards: 70\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n{body}",
        s = cpm.udp,
        p = alice.port,
        len = body.len(),
    );
    status_of(&alice.request(cpm.udp, &req)?)
}

#[test]
fn a_device_that_answers_again_gets_what_was_deferred_first() {
    let mut cpm = Cpm::start(&["--open"]);
    // Registered, but it refuses the first message (as if asleep or out
    // of reach), then takes everything.
    let dev = RawDevice::start(|n, _| if n == 1 { 480 } else { 200 });
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    let alice = RawDevice::start(|_, _| 200);
    assert_eq!(alice_to_bob(&cpm, &alice, "first"), Some(202), "deferred");
    // No new REGISTER: the next message finds the device answering, and the
    // deferred one goes first.
    assert_eq!(alice_to_bob(&cpm, &alice, "second"), Some(200));
    let got = call_ids(&dev.wait_for(3, WAIT));
    assert_eq!(got, ["first", "first", "second"], "refused, pushed, then the live one");
    assert!(store_of(&mut cpm).deferred(BOB, None, 10).unwrap().is_empty());
}

const TYPING: &str = "<?xml version=\"1.0\"?><isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state></isComposing>";

#[test]
fn is_composing_indications_are_never_queued() {
    let mut cpm = Cpm::start(&["--open"]);
    let alice = RawDevice::start(|_, _| 200);
    let wrapped = format!(
        "From: <sip:alice@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\n\r\nContent-Type: application/im-iscomposing+xml\r\n\r\n{TYPING}"
    );
    // bob has no device: a typing indication is news only now (480), plain
    // or wrapped in CPIM; a message is deferred (202).
    assert_eq!(
        alice_to_bob_as(&cpm, &alice, "typing1", "application/im-iscomposing+xml", TYPING),
        Some(480)
    );
    assert_eq!(
        alice_to_bob_as(&cpm, &alice, "typing2", "message/cpim", &wrapped),
        Some(480)
    );
    assert_eq!(alice_to_bob(&cpm, &alice, "text"), Some(202));
    // Delivered like any message when a device takes it.
    let dev = RawDevice::start(|_, _| 200);
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    assert_eq!(dev.wait_for(1, WAIT).len(), 1, "the deferred text");
    assert_eq!(
        alice_to_bob_as(&cpm, &alice, "typing3", "application/im-iscomposing+xml", TYPING),
        Some(200)
    );
    assert_eq!(dev.wait_for(2, WAIT).len(), 2, "the live indication");
    assert!(cpm.log().contains("no device took it; not kept (480)"));
    assert!(
        store_of(&mut cpm).deferred(BOB, None, 10).unwrap().is_empty(),
        "only the text was queued"
    );
}

#[test]
fn is_composing_indications_are_not_stored_in_the_mss() {
    let (_d, cfg) =
        config("[[users]]\naddress = \"sip:bob@127.0.0.1\"\n[users.preferences]\nwhen_unavailable = \"store\"\n");
    let mut cpm = Cpm::start(&["--open", "--config", &cfg]);
    let alice = RawDevice::start(|_, _| 200);
    assert_eq!(
        alice_to_bob_as(&cpm, &alice, "typing1", "application/im-iscomposing+xml", TYPING),
        Some(480)
    );
    assert_eq!(alice_to_bob(&cpm, &alice, "text"), Some(202));
    assert_eq!(store_of(&mut cpm).mss_count(BOB).unwrap(), 1, "the text only");
}

#[test]
fn a_message_every_device_refuses_as_unacceptable_goes_back_not_into_the_queue() {
    let mut cpm = Cpm::start(&["--open"]);
    let alice = RawDevice::start(|_, _| 200);
    let phone = RawDevice::start(|_, _| 415);
    assert_eq!(phone.register(&cpm, "bob", "phone", 600), Some(200));
    let old = RawDevice::start(|_, _| 488);
    assert_eq!(old.register(&cpm, "bob", "old", 600), Some(200));
    // Both devices say they cannot take it: the sender hears one of them
    // (the device's own response), and nothing waits in the queue for
    // them to say the same again until it expires.
    let status = alice_to_bob(&cpm, &alice, "unwanted");
    assert!(matches!(status, Some(415 | 488)), "{status:?}");
    // One that is merely away among them: deferred as before.
    let away = RawDevice::start(|_, _| 480);
    assert_eq!(away.register(&cpm, "bob", "away", 600), Some(200));
    assert_eq!(alice_to_bob(&cpm, &alice, "later"), Some(202));
    let queued: Vec<String> = store_of(&mut cpm)
        .deferred(BOB, None, 10)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.request).into_owned())
        .collect();
    assert_eq!(queued.len(), 1, "only the second");
    assert!(queued[0].contains("Call-ID: later"));
}

#[test]
fn a_message_the_device_cannot_take_does_not_hold_back_the_rest() {
    let mut cpm = Cpm::start(&["--open"]);
    let alice = RawDevice::start(|_, _| 200);
    for call_id in ["unwanted", "second", "third"] {
        assert_eq!(alice_to_bob(&cpm, &alice, call_id), Some(202), "{call_id} deferred");
    }
    // It refuses the first as unacceptable (415): not a sign it is away.
    let dev = RawDevice::start(|_, text| if text.contains("Call-ID: unwanted") { 415 } else { 200 });
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    let got = call_ids(&dev.wait_for(3, WAIT));
    assert_eq!(got, ["unwanted", "second", "third"], "refused one, then the rest");
    // Not retried within this registration; it waits (003 §5.2.5.2).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dev.received().len(), 3);
    // A new registration offers it again (its capabilities may have changed).
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    assert_eq!(dev.wait_for(4, WAIT).len(), 4, "offered again at the REGISTER");
    let left = store_of(&mut cpm).deferred(BOB, None, 10).unwrap();
    assert_eq!(left.len(), 1, "the refused one stays queued");
}

#[test]
fn a_registered_device_that_refused_is_retried_without_registering_again() {
    let (_d, cfg) = config("[deferred]\npush_retry_s = 1\n");
    let mut cpm = Cpm::start(&["--open", "--config", &cfg]);
    // Registered, refuses the first message (out of reach a moment), then
    // takes everything; nothing else happens: no REGISTER, no new message.
    let dev = RawDevice::start(|n, _| if n == 1 { 480 } else { 200 });
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    let alice = RawDevice::start(|_, _| 200);
    assert_eq!(alice_to_bob(&cpm, &alice, "first"), Some(202), "deferred");
    let got = call_ids(&dev.wait_for(2, WAIT));
    assert_eq!(got, ["first", "first"], "refused, then pushed by the retry");
    assert!(cpm.log().contains("retrying deferred push"));
    assert!(store_of(&mut cpm).deferred(BOB, None, 10).unwrap().is_empty());
}

#[test]
fn push_retries_back_off_and_can_be_turned_off() {
    // A device that refuses everything: retried after 1 s, then 2 s more
    // (then 4 s more, past the look): three copies in 5.5 s, where a
    // fixed interval would have sent six.
    let (_d, cfg) = config("[deferred]\npush_retry_s = 1\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let dev = RawDevice::start(|_, _| 480);
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    let alice = RawDevice::start(|_, _| 200);
    assert_eq!(alice_to_bob(&cpm, &alice, "first"), Some(202));
    std::thread::sleep(Duration::from_millis(5500));
    let n = dev.received().len();
    assert!((2..=3).contains(&n), "the message and its backed-off retries: {n}");
    // The user view shows the retries waiting.
    let view = cpm::admin::client::get(&format!("http://127.0.0.1:{}", cpm.admin), "/api/users/bob", None)
        .expect("admin request")
        .json()
        .expect("json");
    let retries = &view["live"]["push_retries"];
    assert_eq!(retries[0]["device"], "<urn:uuid:phone>", "{view}");
    assert_eq!(retries[0]["attempts"].as_u64(), Some(n as u64), "{view}");
    assert_eq!(retries[0]["pending"], true, "{view}");
    // The device leaves: its retries go with its binding.
    assert_eq!(dev.register(&cpm, "bob", "phone", 0), Some(200));
    let view = cpm::admin::client::get(&format!("http://127.0.0.1:{}", cpm.admin), "/api/users/bob", None)
        .expect("admin request")
        .json()
        .expect("json");
    assert_eq!(view["live"]["push_retries"], serde_json::json!([]), "{view}");
    // push_retry_s = 0: it waits for the device's next REGISTER, as before.
    let (_d, cfg) = config("[deferred]\npush_retry_s = 0\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let dev = RawDevice::start(|n, _| if n == 1 { 480 } else { 200 });
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    assert_eq!(alice_to_bob(&cpm, &alice, "first"), Some(202));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(dev.received().len(), 1, "no retry when turned off");
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    assert_eq!(dev.wait_for(2, WAIT).len(), 2, "pushed at the REGISTER");
}

#[test]
fn bad_action_documents_are_refused() {
    let cpm = Cpm::start(&["--open"]);
    let dev = RawDevice::start(|_, _| 200);
    let resp = action(
        cpm.udp,
        &dev,
        "<deferred-actions><action id=\"x\" do=\"eat\"/></deferred-actions>",
    );
    assert_eq!(status_of(&resp), Some(400), "{resp}");
}

#[test]
fn do_not_disturb_holds_pushes_until_lifted() {
    let cpm = Cpm::start(&["--open"]);
    let dev = RawDevice::start(|_, _| 200);
    let on = action(
        cpm.udp,
        &dev,
        "<deferred-actions><dnd state=\"on\"/></deferred-actions>",
    );
    assert!(body(&on).contains("<dnd state=\"on\"/>"), "{on}");
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 2, 202, &[]));
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    // Registered and reachable, yet do-not-disturb: no push. New messages are
    // still delivered directly (DND holds deferred handling, not live traffic).
    std::thread::sleep(Duration::from_millis(1000));
    assert!(dev.received().is_empty(), "held while do-not-disturb is on");
    let off = action(
        cpm.udp,
        &dev,
        "<deferred-actions><dnd state=\"off\"/></deferred-actions>",
    );
    assert!(body(&off).contains("<dnd state=\"off\"/>"), "{off}");
    let got = dev.wait_for(2, WAIT);
    assert_eq!(got.len(), 2, "pushed once lifted: {got:?}");
}

#[test]
fn reminders_repeat_the_list() {
    let (_d, cfg) = config("[preferences]\ndeferred_delivery = \"notify\"\n[deferred]\nreminder_interval_s = 1\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 1, 202, &[]));
    let dev = RawDevice::start(|_, _| 200);
    assert_eq!(dev.register(&cpm, "bob", "phone", 600), Some(200));
    let got = dev.wait_for(3, WAIT);
    assert!(got.len() >= 3, "the first notification and reminders: {}", got.len());
    assert!(got
        .iter()
        .all(|m| header(m, "Content-Type").unwrap_or_default().contains("deferred-list")));
}

#[test]
fn over_the_cap_is_486_with_retry_after() {
    let (_d, cfg) = config("[deferred]\nmax_messages = 2\nretry_after_s = 120\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 2, 202, &[]));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let msg = raw_message(cpm.udp, "", "one too many", "cap1").replace(
        "127.0.0.1:9;",
        &format!("127.0.0.1:{};", sock.local_addr().unwrap().port()),
    );
    let resp = udp_exchange(&sock, cpm.udp, msg.as_bytes(), Duration::from_secs(5)).expect("answer");
    assert_eq!(status_of(&resp), Some(486), "{resp}");
    assert_eq!(header(&resp, "Retry-After").as_deref(), Some("120"));
}

#[test]
fn store_preference_hands_to_the_mss() {
    let (_d, cfg) =
        config("[[users]]\naddress = \"sip:bob@127.0.0.1\"\n[users.preferences]\nwhen_unavailable = \"store\"\n");
    let mut cpm = Cpm::start(&["--open", "--config", &cfg]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 2, 202, &[]));
    let store = store_of(&mut cpm);
    assert_eq!(store.mss_count(BOB).unwrap(), 2);
    assert!(store.deferred(BOB, None, 10).unwrap().is_empty());
}

#[test]
fn interwork_preference_writes_the_spool() {
    let (d, _) = config("");
    let spool = d.path().join("spool");
    let cfg_text = format!(
        "[preferences]\nwhen_unavailable = \"interwork\"\n[interworking]\nspool_dir = \"{}\"\n",
        spool.display()
    );
    let (_d2, cfg) = config(&cfg_text);
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 1, 202, &[]));
    let files: Vec<_> = std::fs::read_dir(&spool).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(text.starts_with("To: sip:bob@127.0.0.1\n"), "{text}");
    assert!(text.contains("hello bob"), "{text}");
}

#[test]
fn originator_rule_declines_with_603() {
    let (_d, cfg) = config("[preferences]\nreject_from = [\"sip:alice@127.0.0.1\"]\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    assert!(message(&cpm, Transport::Udp, "alice", "bob", 603));
    assert!(message(&cpm, Transport::Udp, "carol", "bob", 202));
}
