//! Issue 4: disposition notifications with the multi-device rules, CPIM,
//! conversation identities and anonymity.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// A pager-mode message from alice's raw device, CPIM with IMDN requests.
fn cpim_message(server: u16, from_port: u16, to: &str, msg_id: &str, notify: &str, extra: &str) -> String {
    let body = format!(
        "From: <sip:alice@127.0.0.1>\r\nTo: <sip:{to}@127.0.0.1>\r\nDateTime: 2026-11-21T10:00:00Z\r\n\
         NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: {msg_id}\r\nimdn.Disposition-Notification: {notify}\r\n\r\n\
         Content-Type: text/plain;charset=UTF-8\r\n\r\nhello {to}"
    );
    format!(
        "MESSAGE sip:{to}@127.0.0.1:{server} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bK{msg_id}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a-{msg_id}\r\nTo: <sip:{to}@127.0.0.1>\r\nCall-ID: call-{msg_id}\r\nCSeq: 1 MESSAGE\r\n\
         {extra}Content-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn reports(dev: &RawDevice) -> Vec<String> {
    dev.received()
        .into_iter()
        .filter(|m| m.contains("message/imdn+xml"))
        .collect()
}

fn count(list: &[String], status: &str) -> usize {
    list.iter().filter(|m| m.contains(&format!("<{status}/>"))).count()
}

#[test]
fn three_devices_report_alice_gets_one_of_each_on_the_sending_device() {
    let cpm = Cpm::start(&["--open"]);
    let mut bobs: Vec<Device> = (0..3)
        .map(|_| Device::start_scenario(Transport::Udp, "device_imdn.xml", &[("user", "bob")]))
        .collect();
    register_each(&cpm, Transport::Udp, "bob", &bobs);
    // alice has two devices: the phone she sends from, and a tablet.
    let phone = phone(&cpm, "alice");
    let mut tablet = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "alice", &tablet.contact(), 9, 600, 200));

    let msg = cpim_message(cpm.udp, phone.port, "bob", "m3dev", "positive-delivery, display", "");
    let resp = phone.request(cpm.udp, &msg).expect("answer");
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    wait_until(WAIT, || reports(&phone).len() >= 2);
    std::thread::sleep(Duration::from_millis(1500)); // the other devices' reports have come and gone
    let got = reports(&phone);
    assert_eq!(count(&got, "delivered"), 1, "exactly one delivery report: {got:#?}");
    assert_eq!(count(&got, "displayed"), 1, "exactly one display report: {got:#?}");
    assert!(got.iter().all(|r| r.contains("<message-id>m3dev</message-id>")));
    assert!(
        got.iter().all(|r| header(r, "From").unwrap().contains("sip:bob@")),
        "reports come from bob"
    );
    let devices: Vec<Vec<String>> = bobs.iter_mut().map(|d| d.finish()).collect();
    assert!(
        devices.iter().all(|d| d.len() == 1),
        "each of bob's devices got the message once: {devices:?}"
    );
    assert!(tablet.finish().is_empty(), "alice's other device gets no report");
    assert!(cpm.log().contains("duplicate report suppressed"));
}

/// A passivated sender's reports still reach the device that sent the
/// message (its PF is activated to note it), and a message from a source
/// that is none of alice's devices has its reports go to every device of
/// hers.
#[test]
fn reports_find_the_sending_device_after_passivation_and_all_devices_otherwise() {
    let (_dir, cfg) = config("[actors]\nidle_timeout_s = 1\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let mut bob = Device::start_scenario(Transport::Udp, "device_imdn.xml", &[("user", "bob")]);
    register_each(&cpm, Transport::Udp, "bob", std::slice::from_ref(&bob));
    let phone = phone(&cpm, "alice");
    let tablet = RawDevice::start(|_, _| 200);
    assert_eq!(tablet.register(&cpm, "alice", "alice-tablet", 600), Some(200));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(cpm.log().contains("passivating idle participating function"));
    let about = |dev: &RawDevice, id: &str| {
        let tag = format!("<message-id>{id}</message-id>");
        reports(dev).iter().filter(|r| r.contains(&tag)).count()
    };

    // From the phone while alice's PF is passive: noted on reactivation.
    let msg = cpim_message(cpm.udp, phone.port, "bob", "mpassive", "positive-delivery, display", "");
    assert_eq!(status_of(&phone.request(cpm.udp, &msg).expect("answer")), Some(200));
    assert!(
        wait_until(WAIT, || about(&phone, "mpassive") == 2),
        "both reports on the phone"
    );

    // From a socket that is none of alice's devices while her PF is
    // active: nothing to note, so the reports go to each of her devices.
    let other = RawDevice::start(|_, _| 200);
    let msg = cpim_message(cpm.udp, other.port, "bob", "mother", "positive-delivery, display", "");
    assert_eq!(status_of(&other.request(cpm.udp, &msg).expect("answer")), Some(200));
    assert!(wait_until(WAIT, || about(&phone, "mother") == 2 && about(&tablet, "mother") == 2));
    std::thread::sleep(Duration::from_millis(1000)); // an extra copy would show by now
    assert_eq!(
        about(&tablet, "mpassive"),
        0,
        "the tablet sent nothing: {:#?}",
        reports(&tablet)
    );
    assert_eq!(about(&other, "mother"), 0, "no report to a source that is no device");
    assert_eq!(bob.finish().len(), 2, "bob got both messages");
}

#[test]
fn expired_deferred_message_gives_one_negative_delivery_report() {
    let (_d, cfg) = config("[deferred]\ndefault_expiry_s = 1\nmax_expiry_s = 60\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let phone = phone(&cpm, "alice");
    let msg = cpim_message(
        cpm.udp,
        phone.port,
        "bob",
        "mexp",
        "positive-delivery, negative-delivery",
        "",
    );
    assert_eq!(status_of(&phone.request(cpm.udp, &msg).expect("answer")), Some(202));
    wait_until(WAIT, || !reports(&phone).is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    let got = reports(&phone);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(count(&got, "failed"), 1, "negative delivery: {got:#?}");
    assert!(got[0].contains("<message-id>mexp</message-id>"));
}

#[test]
fn storing_in_the_mss_gives_the_servers_positive_delivery_report() {
    let (_d, cfg) = config("[preferences]\nwhen_unavailable = \"store\"\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let phone = phone(&cpm, "alice");
    let msg = cpim_message(cpm.udp, phone.port, "bob", "mstore", "positive-delivery", "");
    assert_eq!(status_of(&phone.request(cpm.udp, &msg).expect("answer")), Some(202));
    wait_until(WAIT, || !reports(&phone).is_empty());
    std::thread::sleep(Duration::from_millis(800));
    let got = reports(&phone);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(count(&got, "delivered"), 1);
}

#[test]
fn anonymous_sender_is_hidden_and_gets_no_report() {
    let cpm = Cpm::start(&["--open"]);
    let bob = phone(&cpm, "bob");
    let phone = phone(&cpm, "alice");
    let msg = cpim_message(
        cpm.udp,
        phone.port,
        "bob",
        "manon",
        "positive-delivery, display",
        "Privacy: id\r\nP-Preferred-Identity: <sip:alice@127.0.0.1>\r\n",
    );
    assert_eq!(status_of(&phone.request(cpm.udp, &msg).expect("answer")), Some(200));
    let got = bob.wait_for(1, WAIT);
    let text = &got[0];
    assert!(!text.to_lowercase().contains("alice"), "bob sees no identity: {text}");
    assert!(
        !text.contains("Disposition-Notification"),
        "no report requested any more: {text}"
    );
    assert!(text.contains("anonymous.invalid"), "{text}");
    // Even when the server itself would report (MSS hand-over), nothing goes to an anonymous sender.
    let (_d, cfg) = config("[preferences]\nwhen_unavailable = \"store\"\n");
    let cpm2 = Cpm::start(&["--open", "--config", &cfg]);
    let phone2 = RawDevice::start(|_, _| 200);
    assert_eq!(phone2.register(&cpm2, "alice", "alice-phone", 600), Some(200));
    let msg = cpim_message(
        cpm2.udp,
        phone2.port,
        "carol",
        "manon2",
        "positive-delivery",
        "Privacy: id\r\n",
    );
    assert_eq!(status_of(&phone2.request(cpm2.udp, &msg).expect("answer")), Some(202));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(reports(&phone2).is_empty());
}

#[test]
fn anonymity_refused_by_policy_is_403() {
    let (_d, cfg) = config("[messaging]\nallow_anonymous = false\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let phone = RawDevice::start(|_, _| 200);
    let msg = cpim_message(cpm.udp, phone.port, "bob", "mnoanon", "display", "Privacy: id\r\n");
    let answer = phone.request(cpm.udp, &msg).expect("answer");
    assert_eq!(status_of(&answer), Some(403), "{answer}");
    // 002 §8.3.2.1.1 step 3: a Warning says why.
    let warning = header(&answer, "Warning").expect("Warning header");
    assert!(
        warning.starts_with("399 ") && warning.contains("Anonymity"),
        "{warning}"
    );
}

fn device_report(server: u16, bob: &RawDevice, original: &str, status: &str, n: u32) -> String {
    let (kind, elem) = if status == "displayed" {
        ("display", "display")
    } else {
        ("delivery", "delivery")
    };
    let _ = kind;
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>{original}</message-id>\
         <datetime>2026-11-21T10:00:01Z</datetime><{elem}-notification><status><{status}/></status></{elem}-notification></imdn>"
    );
    let body = format!(
        "From: <sip:bob@127.0.0.1>\r\nTo: <sip:alice@127.0.0.1>\r\nNS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: r{n}\r\n\
         DateTime: 2026-11-21T10:00:01Z\r\n\r\nContent-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n{xml}"
    );
    let req = format!(
        "MESSAGE sip:alice@127.0.0.1:{server} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKrep{n}{original}\r\n\
         From: <sip:bob@127.0.0.1>;tag=b{n}\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: rep-{n}-{original}\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        p = bob.port
    );
    bob.request(server, &req).expect("answer to the report")
}

#[test]
fn a_restart_does_not_forward_a_report_twice() {
    let mut cpm = Cpm::start(&["--open"]);
    let bob = phone(&cpm, "bob");
    let phone = phone(&cpm, "alice");
    let msg = cpim_message(cpm.udp, phone.port, "bob", "mrestart", "positive-delivery", "");
    assert_eq!(status_of(&phone.request(cpm.udp, &msg).expect("answer")), Some(200));
    assert_eq!(
        status_of(&device_report(cpm.udp, &bob, "mrestart", "delivered", 1)),
        Some(200)
    );
    wait_until(WAIT, || !reports(&phone).is_empty());
    cpm.restart();
    assert_eq!(
        status_of(&device_report(cpm.udp, &bob, "mrestart", "delivered", 2)),
        Some(200)
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(reports(&phone).len(), 1, "forwarded once, before and after the restart");
}

/// alice's phone sends `id` to bob, her tablet stays registered, the phone
/// leaves, and bob's delivery report is then deferred (202) for the phone.
/// Returns the tablet.
fn report_left_for_the_phone(cpm: &Cpm, id: &str) -> RawDevice {
    let bob = phone(cpm, "bob");
    let alice_phone = phone(cpm, "alice");
    let tablet = RawDevice::start(|_, _| 200);
    assert_eq!(tablet.register(cpm, "alice", "alice-tablet", 600), Some(200));
    let msg = cpim_message(cpm.udp, alice_phone.port, "bob", id, "positive-delivery", "");
    let sent = alice_phone.request(cpm.udp, &msg).expect("answer");
    assert_eq!(status_of(&sent), Some(200), "{sent}");
    assert_eq!(alice_phone.register(cpm, "alice", "alice-phone", 0), Some(200));
    let answer = device_report(cpm.udp, &bob, id, "delivered", 1);
    assert_eq!(status_of(&answer), Some(202), "deferred for the phone: {answer}");
    tablet
}

/// 003 §5.2.5.2: a report for a sending device that has gone offline waits
/// in the deferred queue for that device (known by its instance id), across
/// a restart, instead of going to whichever of the user's devices is there.
#[test]
fn a_report_for_an_offline_sending_device_waits_for_that_device() {
    let mut cpm = Cpm::start(&["--open"]);
    let tablet = report_left_for_the_phone(&cpm, "mwait");
    assert!(cpm.log().contains("message deferred"), "{}", cpm.log());
    // The admin API shows whom it waits for.
    let admin = format!("http://127.0.0.1:{}", cpm.admin);
    let user = cpm::admin::client::get(&admin, "/api/users/alice", None).expect("admin API");
    let user: serde_json::Value = user.json().expect("json");
    assert_eq!(
        user["deferred"][0]["for_device"].as_str(),
        Some("<urn:uuid:alice-phone>"),
        "{user}"
    );

    // The tablet registers again, which starts a push to it: not its report.
    assert_eq!(tablet.register(&cpm, "alice", "alice-tablet", 600), Some(200));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(reports(&tablet).is_empty(), "{:#?}", reports(&tablet));

    // The phone comes back after a restart, from another address.
    cpm.restart();
    let back = RawDevice::start(|_, _| 200);
    assert_eq!(back.register(&cpm, "alice", "alice-phone", 600), Some(200));
    assert!(
        wait_until(WAIT, || !reports(&back).is_empty()),
        "the phone gets its report"
    );
    std::thread::sleep(Duration::from_millis(1000)); // a second copy would show by now
    let got = reports(&back);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains("<message-id>mwait</message-id>") && got[0].contains("<delivered/>"));
    assert!(reports(&tablet).is_empty(), "{:#?}", reports(&tablet));
}

/// Notify and wait: the deferred list a device gets leaves out a report
/// that waits for another device, and the device it waits for sees it.
#[test]
fn a_report_waiting_for_another_device_is_not_in_this_devices_list() {
    let (_d, cfg) = config("[preferences]\ndeferred_delivery = \"notify\"\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let tablet = report_left_for_the_phone(&cpm, "mlist");
    let lists = |dev: &RawDevice| -> Vec<String> {
        dev.received()
            .into_iter()
            .filter(|m| m.contains("deferred-list+xml"))
            .collect()
    };
    let back = RawDevice::start(|_, _| 200);
    assert_eq!(back.register(&cpm, "alice", "alice-phone", 600), Some(200));
    assert!(wait_until(WAIT, || !lists(&back).is_empty()), "the phone is told");
    let ids = listed_ids(&lists(&back)[0]);
    assert_eq!(ids.len(), 1, "{}", lists(&back)[0]);
    assert!(lists(&tablet).is_empty(), "{:#?}", lists(&tablet));
    // Asking for it from the tablet anyway: refused, by name.
    let seq = ids[0];
    let doc = format!("<deferred-actions><action id=\"{seq}\" do=\"retrieve\"/></deferred-actions>");
    let answer = deferred_action(cpm.udp, &tablet, "alice", &doc);
    assert!(body(&answer).contains("status=\"other-device\""), "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(reports(&tablet).is_empty(), "{:#?}", reports(&tablet));
}

/// A full queue: reports waiting for an absent device do not make room
/// for each other, but a message takes the place of the oldest of them.
#[test]
fn a_message_takes_the_place_of_a_report_waiting_in_a_full_queue() {
    let (_d, cfg) = config("[deferred]\nmax_messages = 2\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let bob = phone(&cpm, "bob");
    let alice_phone = phone(&cpm, "alice");
    for id in ["mfull1", "mfull2", "mfull3"] {
        let msg = cpim_message(cpm.udp, alice_phone.port, "bob", id, "positive-delivery", "");
        assert_eq!(
            status_of(&alice_phone.request(cpm.udp, &msg).expect("answer")),
            Some(200)
        );
    }
    assert_eq!(alice_phone.register(&cpm, "alice", "alice-phone", 0), Some(200));
    for (n, id) in [(1, "mfull1"), (2, "mfull2")] {
        assert_eq!(status_of(&device_report(cpm.udp, &bob, id, "delivered", n)), Some(202));
    }
    let third = device_report(cpm.udp, &bob, "mfull3", "delivered", 3);
    assert_eq!(
        status_of(&third),
        Some(486),
        "a report does not push out a report: {third}"
    );

    let carol = RawDevice::start(|_, _| 200);
    let msg = format!(
        "MESSAGE sip:alice@127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKcarol1\r\n\
         From: <sip:carol@127.0.0.1>;tag=c1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: carol-1\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\nContent-Length: 9\r\n\r\nhi alice!",
        s = cpm.udp,
        p = carol.port
    );
    let answer = carol.request(cpm.udp, &msg).expect("answer");
    assert_eq!(status_of(&answer), Some(202), "{answer}");
    assert!(
        cpm.log().contains("a report waiting for an absent device dropped"),
        "{}",
        cpm.log()
    );

    let back = RawDevice::start(|_, _| 200);
    assert_eq!(back.register(&cpm, "alice", "alice-phone", 600), Some(200));
    assert!(wait_until(WAIT, || back.received().len() >= 2));
    std::thread::sleep(Duration::from_millis(1000));
    let got = back.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].contains("<message-id>mfull2</message-id>"),
        "the newer report kept: {}",
        got[0]
    );
    assert!(got[1].contains("hi alice!"), "{}", got[1]);
}

#[test]
fn conversation_identities_and_reply_to_reach_the_recipient() {
    let cpm = Cpm::start(&["--open"]);
    let bob = phone(&cpm, "bob");
    let alice = phone(&cpm, "alice");
    let msg = cpim_message(
        cpm.udp,
        alice.port,
        "bob",
        "mconv",
        "display",
        "Reply-To: <sip:alice-desk@127.0.0.1>\r\n",
    );
    assert_eq!(status_of(&alice.request(cpm.udp, &msg).expect("answer")), Some(200));
    let got = bob.wait_for(1, WAIT);
    let conv = header(&got[0], "Conversation-ID").expect("Conversation-ID filled in");
    assert!(
        header(&got[0], "Contribution-ID").is_some(),
        "Contribution-ID filled in"
    );
    assert_eq!(
        header(&got[0], "Reply-To").as_deref(),
        Some("<sip:alice-desk@127.0.0.1>")
    );
    // bob answers without identities: the same conversation.
    let reply = cpim_message(cpm.udp, bob.port, "alice", "mconv2", "display", "")
        .replace("From: <sip:alice@127.0.0.1>;tag", "From: <sip:bob@127.0.0.1>;tag");
    assert_eq!(status_of(&bob.request(cpm.udp, &reply).expect("answer")), Some(200));
    let at_alice = alice.wait_for(1, WAIT);
    assert_eq!(header(&at_alice[0], "Conversation-ID").as_deref(), Some(conv.as_str()));
    // Identities a client set pass through unchanged.
    let own = cpim_message(
        cpm.udp,
        alice.port,
        "bob",
        "mconv3",
        "display",
        "Conversation-ID: c-own\r\nContribution-ID: k-own\r\nInReplyTo-Contribution-ID: k-prev\r\n",
    );
    assert_eq!(status_of(&alice.request(cpm.udp, &own).expect("answer")), Some(200));
    let got = bob.wait_for(2, WAIT);
    assert_eq!(header(&got[1], "Conversation-ID").as_deref(), Some("c-own"));
    assert_eq!(header(&got[1], "Contribution-ID").as_deref(), Some("k-own"));
    assert_eq!(header(&got[1], "InReplyTo-Contribution-ID").as_deref(), Some("k-prev"));
}
