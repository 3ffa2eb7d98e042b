//! Issue 8: group messaging through Controlling Function actors, ad-hoc
//! URI lists, and aggregated reports.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

const GROUP: &str = "[[groups]]\nuri = \"sip:friends@127.0.0.1\"\nowner = \"sip:alice@127.0.0.1\"\n\
members = [\"sip:alice@127.0.0.1\", \"sip:bob@127.0.0.1\", \"sip:carol@127.0.0.1\", \"sip:dave@127.0.0.1\"]\n";

#[test]
fn group_message_reaches_every_member_device_once_and_not_the_sender() {
    let (_d, cfg) = config(GROUP);
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let t = Transport::Udp;
    let alice = Device::start(t);
    let bob: Vec<Device> = (0..2).map(|_| Device::start(t)).collect();
    let carol: Vec<Device> = (0..3).map(|_| Device::start(t)).collect();
    assert!(register(&cpm, t, "alice", &alice.contact(), 1, 600, 200));
    for (i, d) in bob.iter().enumerate() {
        assert!(register(&cpm, t, "bob", &d.contact(), 10 + i as u32, 600, 200));
    }
    for (i, d) in carol.iter().enumerate() {
        assert!(register(&cpm, t, "carol", &d.contact(), 20 + i as u32, 600, 200));
    }
    // dave is offline.
    assert!(
        message(&cpm, t, "alice", "friends", 202),
        "the CF answers the sender 202"
    );
    for d in bob.iter().chain(carol.iter()) {
        let got = d.wait_lines(1, WAIT);
        assert_eq!(got.len(), 1, "one copy per online device: {got:?}");
    }
    assert!(alice.lines().is_empty(), "the sender gets no copy of its own message");
    // dave gets it when he registers (deferred at his PF).
    let dave = Device::start(t);
    assert!(register(&cpm, t, "dave", &dave.contact(), 30, 600, 200));
    assert_eq!(dave.wait_lines(1, WAIT).len(), 1);
    // Non-members may not send to a members-only group; an unknown user is no group.
    assert!(message(&cpm, t, "eve", "friends", 403));
}

#[test]
fn members_see_the_group_and_the_asserted_author() {
    let (_d, cfg) = config(GROUP);
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let bob = phone(&cpm, "bob");
    assert!(message(&cpm, Transport::Udp, "alice", "friends", 202));
    let got = bob.wait_for(1, WAIT);
    assert!(
        header(&got[0], "From").unwrap().contains("sip:friends@127.0.0.1"),
        "replies go to the group: {}",
        got[0]
    );
    assert_eq!(
        header(&got[0], "P-Asserted-Identity").as_deref(),
        Some("<sip:alice@127.0.0.1>")
    );
    assert!(
        body(&got[0]).contains("IMDN-Record-Route: <sip:friends@127.0.0.1>"),
        "{}",
        got[0]
    );
}

#[test]
fn unknown_group_in_the_group_domain_is_404() {
    let (_d, cfg) = config(
        "domains = [\"a.example.com\", \"groups.example.com\"]\n[group_policy]\ndomain = \"groups.example.com\"\n",
    );
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let p = sock.local_addr().unwrap().port();
    let msg = format!(
        "MESSAGE sip:nosuch@groups.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKng\r\n\
         From: <sip:alice@a.example.com>;tag=1\r\nTo: <sip:nosuch@groups.example.com>\r\nCall-ID: ng\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    );
    let resp = udp_exchange(&sock, cpm.udp, msg.as_bytes(), Duration::from_secs(5)).expect("answer");
    assert_eq!(status_of(&resp), Some(404), "{resp}");
}

#[test]
fn ad_hoc_list_reaches_all_three() {
    let cpm = Cpm::start(&["--open"]);
    let devs: Vec<(RawDevice, &str)> = ["bob", "carol", "dave"]
        .into_iter()
        .map(|u| (RawDevice::start(|_, _| 200), u))
        .collect();
    for (d, u) in &devs {
        assert_eq!(d.register(&cpm, u, &format!("{u}-phone"), 600), Some(200));
    }
    let list = "<?xml version=\"1.0\"?><resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\" \
                xmlns:cp=\"urn:ietf:params:xml:ns:copycontrol\"><list>\
                <entry uri=\"sip:bob@127.0.0.1\" cp:copyControl=\"to\"/><entry uri=\"sip:carol@127.0.0.1\" cp:copyControl=\"cc\"/>\
                <entry uri=\"sip:dave@127.0.0.1\" cp:copyControl=\"bcc\"/></list></resource-lists>";
    let body = format!(
        "--b1\r\nContent-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\n\r\n{list}\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nhello list\r\n--b1--\r\n"
    );
    let sender = RawDevice::start(|_, _| 200);
    let msg = format!(
        "MESSAGE sip:uri-list@127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKadhoc\r\n\
         From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:uri-list@127.0.0.1>\r\nCall-ID: adhoc-1\r\nCSeq: 1 MESSAGE\r\n\
         Require: recipient-list-message\r\nContent-Type: multipart/mixed;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        s = cpm.udp,
        p = sender.port
    );
    let resp = sender.request(cpm.udp, &msg).expect("answer");
    assert_eq!(status_of(&resp), Some(202), "{resp}");
    for (d, u) in &devs {
        let got = d.wait_for(1, WAIT);
        assert_eq!(got.len(), 1, "{u}");
        assert!(got[0].contains("hello list"), "{}", got[0]);
        assert!(
            header(&got[0], "From").unwrap().contains("sip:alice@"),
            "from the sender"
        );
        assert!(
            got[0].contains("sip:carol@127.0.0.1") && !got[0].contains("sip:dave@127.0.0.1\""),
            "to/cc shown, bcc not: {}",
            got[0]
        );
    }
    // Over the policy's size: refused.
    let (_d, cfg) = config("[group_policy]\nmax_adhoc_recipients = 2\n");
    let small = Cpm::start(&["--open", "--config", &cfg]);
    let msg2 = msg
        .replace(&format!(":{} SIP/2.0", cpm.udp), &format!(":{} SIP/2.0", small.udp))
        .replace("adhoc-1", "adhoc-2")
        .replace("z9hG4bKadhoc", "z9hG4bKadhoc2");
    let resp = sender.request(small.udp, &msg2).expect("answer");
    assert_eq!(status_of(&resp), Some(403), "{resp}");
}

#[test]
fn aggregated_reports_not_one_per_device() {
    let (_d, cfg) = config(&format!("{GROUP}[group_policy]\nreport_deadline_s = 2\n"));
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let t = Transport::Udp;
    // bob (2 devices) and carol (1) report delivery and display; dave is offline.
    let mut reporters = Vec::new();
    for (user, n) in [("bob", 2), ("carol", 1)] {
        for i in 0..n {
            let d = Device::start_scenario(t, "device_imdn.xml", &[("user", user)]);
            assert!(register(
                &cpm,
                t,
                user,
                &d.contact(),
                40 + reporters.len() as u32 + i,
                600,
                200
            ));
            reporters.push(d);
        }
    }
    let phone = phone(&cpm, "alice");
    let body = "From: <sip:alice@127.0.0.1>\r\nTo: <sip:friends@127.0.0.1>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
                imdn.Message-ID: gm1\r\nimdn.Disposition-Notification: positive-delivery, display\r\n\r\n\
                Content-Type: text/plain\r\n\r\nhello friends";
    let msg = format!(
        "MESSAGE sip:friends@127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKgm1\r\n\
         From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:friends@127.0.0.1>\r\nCall-ID: gm1\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        s = cpm.udp,
        p = phone.port
    );
    assert_eq!(status_of(&phone.request(cpm.udp, &msg).expect("answer")), Some(202));
    // 3 devices × 2 reports were sent; after the deadline alice has one of each kind.
    let kinds = || {
        let got = phone.received();
        let count = |s: &str| {
            got.iter()
                .filter(|m| m.contains("message/imdn+xml") && m.contains(s))
                .count()
        };
        (count("<delivered/>"), count("<displayed/>"))
    };
    assert!(wait_until(WAIT, || kinds() == (1, 1)), "{:?}", kinds());
    std::thread::sleep(Duration::from_millis(300));
    let reports: Vec<String> = phone
        .received()
        .into_iter()
        .filter(|m| m.contains("message/imdn+xml"))
        .collect();
    let delivered = reports.iter().filter(|m| m.contains("<delivered/>")).count();
    let displayed = reports.iter().filter(|m| m.contains("<displayed/>")).count();
    assert_eq!((delivered, displayed), (1, 1), "one aggregate per kind: {reports:#?}");
    assert!(
        reports
            .iter()
            .all(|m| header(m, "From").unwrap().contains("sip:friends@")),
        "from the group"
    );
    for mut d in reporters {
        assert_eq!(d.finish().len(), 1);
    }
}

/// alice's message to the group asking for delivery and display reports.
fn group_message_with_reports(cpm: &Cpm, alice: &RawDevice, id: &str) {
    let body = format!(
        "From: <sip:alice@127.0.0.1>\r\nTo: <sip:friends@127.0.0.1>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
         imdn.Message-ID: {id}\r\nimdn.Disposition-Notification: positive-delivery, display\r\n\r\n\
         Content-Type: text/plain\r\n\r\nhello friends"
    );
    let msg = format!(
        "MESSAGE sip:friends@127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK{id}\r\n\
         From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:friends@127.0.0.1>\r\nCall-ID: {id}\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        s = cpm.udp,
        p = alice.port
    );
    assert_eq!(status_of(&alice.request(cpm.udp, &msg).expect("answer")), Some(202));
}

/// `member`'s report (`delivered` or `displayed`) on `id`, sent to the
/// group as the copy's IMDN-Record-Route says; the server's answer.
fn member_report(cpm: &Cpm, dev: &RawDevice, member: &str, id: &str, status: &str) -> Option<u16> {
    let elem = if status == "displayed" { "display" } else { "delivery" };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>{id}</message-id>\
         <datetime>2026-11-21T10:00:01Z</datetime><{elem}-notification><status><{status}/></status></{elem}-notification></imdn>"
    );
    let body = format!(
        "From: <sip:{member}@127.0.0.1>\r\nTo: <sip:friends@127.0.0.1>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
         imdn.Message-ID: r-{member}-{status}-{id}\r\nDateTime: 2026-11-21T10:00:01Z\r\n\r\n\
         Content-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n{xml}"
    );
    let req = format!(
        "MESSAGE sip:friends@127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKr{member}{status}{id}\r\n\
         From: <sip:{member}@127.0.0.1>;tag={member}\r\nTo: <sip:friends@127.0.0.1>\r\n\
         Call-ID: rep-{member}-{status}-{id}\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        s = cpm.udp,
        p = dev.port
    );
    status_of(&dev.request(cpm.udp, &req)?)
}

/// The reports alice got on `id`: (delivered, failed, displayed).
fn reports_on(alice: &RawDevice, id: &str) -> (usize, usize, usize) {
    let got: Vec<String> = alice
        .received()
        .into_iter()
        .filter(|m| m.contains("message/imdn+xml") && m.contains(&format!("<message-id>{id}</message-id>")))
        .collect();
    let count = |s: &str| got.iter().filter(|m| m.contains(s)).count();
    (count("<delivered/>"), count("<failed/>"), count("<displayed/>"))
}

/// A cpm serving GROUP with a report deadline of `deadline_s`, alice's
/// phone, and a phone each for the other members.
fn group_with_phones(deadline_s: u32) -> (TempDir, Cpm, RawDevice, Vec<(&'static str, RawDevice)>) {
    let (dir, cfg) = config(&format!("{GROUP}[group_policy]\nreport_deadline_s = {deadline_s}\n"));
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let alice = phone(&cpm, "alice");
    let members = ["bob", "carol", "dave"]
        .into_iter()
        .map(|u| (u, phone(&cpm, u)))
        .collect();
    (dir, cpm, alice, members)
}

#[test]
fn report_aggregation_survives_a_crash() {
    // A deadline far away: only the members' answers complete the aggregate.
    let (_d, mut cpm, alice, members) = group_with_phones(600);
    group_message_with_reports(&cpm, &alice, "gcrash");
    for (_, d) in &members {
        assert_eq!(d.wait_for(1, WAIT).len(), 1);
    }
    assert_eq!(
        member_report(&cpm, &members[0].1, "bob", "gcrash", "delivered"),
        Some(200)
    );
    // SIGKILL right after the 200: what the CF knew must have been flushed.
    cpm.restart();
    for (member, d) in &members[1..] {
        assert_eq!(member_report(&cpm, d, member, "gcrash", "delivered"), Some(200));
    }
    assert!(
        wait_until(WAIT, || reports_on(&alice, "gcrash") == (1, 0, 0)),
        "one delivery report once every member answered, across the crash: {:?}\n{}",
        reports_on(&alice, "gcrash"),
        cpm.log()
    );
    // Nobody displayed it yet: the record stays for the display report.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(reports_on(&alice, "gcrash"), (1, 0, 0));
}

#[test]
fn a_deadline_passed_during_a_restart_sends_the_aggregate_and_late_answers_count() {
    let (_d, mut cpm, alice, members) = group_with_phones(2);
    group_message_with_reports(&cpm, &alice, "gdeadline");
    assert_eq!(
        member_report(&cpm, &members[0].1, "bob", "gdeadline", "delivered"),
        Some(200)
    );
    // Down over the deadline: only the store's due index brings it back.
    cpm.kill();
    std::thread::sleep(Duration::from_millis(2500));
    cpm.restart();
    assert!(
        wait_until(WAIT, || reports_on(&alice, "gdeadline") == (1, 0, 0)),
        "the deadline's aggregate after the restart: {:?}\n{}",
        reports_on(&alice, "gdeadline"),
        cpm.log()
    );
    // After the deadline a kind already sent is not sent again, and the
    // first answer of a kind nobody had answered goes out at once.
    assert_eq!(
        member_report(&cpm, &members[1].1, "carol", "gdeadline", "delivered"),
        Some(200)
    );
    // The record no longer lists the members (it was made small at the
    // deadline): a non-member's report is still not counted.
    let eve = phone(&cpm, "eve");
    assert_eq!(member_report(&cpm, &eve, "eve", "gdeadline", "displayed"), Some(200));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(reports_on(&alice, "gdeadline"), (1, 0, 0), "eve is not a member");
    assert_eq!(
        member_report(&cpm, &members[2].1, "dave", "gdeadline", "displayed"),
        Some(200)
    );
    assert!(
        wait_until(WAIT, || reports_on(&alice, "gdeadline") == (1, 0, 1)),
        "{:?}",
        reports_on(&alice, "gdeadline")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(reports_on(&alice, "gdeadline"), (1, 0, 1), "each kind once");
}

#[test]
fn the_202_does_not_wait_for_a_slow_member_and_a_crash_loses_no_copy() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (_d, cfg) = config(GROUP);
    let mut cpm = Cpm::start(&["--open", "--config", &cfg]);
    let alice = phone(&cpm, "alice");
    // bob's device takes 2 s to answer; carol and dave are offline.
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let bob = RawDevice::start(move |_, _| {
        std::thread::sleep(Duration::from_secs(2));
        count.fetch_add(1, Ordering::SeqCst);
        200
    });
    assert_eq!(bob.register(&cpm, "bob", "bob-phone", 600), Some(200));
    group_message_with_reports(&cpm, &alice, "gdurable");
    assert_eq!(answered.load(Ordering::SeqCst), 0, "the 202 waited for bob's device");
    // SIGKILL right after the 202, with bob's copy unanswered and the
    // offline members' copies perhaps not yet stored: none is lost. (One
    // stored and not yet crossed off when the crash came is sent twice.)
    cpm.restart();
    for user in ["carol", "dave"] {
        let dev = phone(&cpm, user);
        let got = dev.wait_for(1, WAIT);
        assert!(
            (1..=2).contains(&got.len()),
            "{user}'s copy survived the crash: {got:?}\n{}",
            cpm.log()
        );
        assert!(got.iter().all(|m| m.contains("gdurable")));
    }
    // bob's copy was in flight: sent again after the restart (at least once).
    let got = bob.wait_for(2, WAIT);
    assert_eq!(got.len(), 2, "bob's interrupted copy is sent again\n{}", cpm.log());
    assert!(got.iter().all(|m| m.contains("gdurable")));
    // Once bob answered it, the copy is crossed off: a restart sends nothing more.
    assert!(wait_until(WAIT, || answered.load(Ordering::SeqCst) == 2));
    std::thread::sleep(Duration::from_millis(1000));
    cpm.restart();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(bob.received().len(), 2, "nothing left in the journal");
}
