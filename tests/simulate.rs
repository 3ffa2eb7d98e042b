//! `cpm simulate` in its CI configuration (about 2,000 users × 2 devices
//! for 30 s over loopback UDP, with churn deferring a few percent of the
//! messages, a fifth of them sent to 8-member groups, and display reports
//! up to 5 s after delivery), a short run over the memory transport, and
//! proof that the checker catches each kind of violation.

use cpm::simulate::{run, Checker, ReportKind, SimOptions, SimTransport};

fn assert_clean(opts: &SimOptions) {
    let report = run(opts).expect("the simulation runs");
    println!("{report}");
    assert!(report.ok(), "invariant violations:\n{report}");
    let s = &report.stats;
    assert_eq!(report.registrations, u64::from(opts.users * opts.devices), "{report}");
    assert!(s.sent > 0 && s.ok > 0, "traffic flowed: {report}");
    assert!(
        s.deferred > 0,
        "churn took whole users offline, so some messages were deferred: {report}"
    );
    assert_eq!(s.delivered_later, s.deferred, "{report}");
    if opts.groups > 0 {
        assert!(
            s.group_messages > 0 && s.group_copies > 0,
            "group traffic flowed: {report}"
        );
    }
}

#[test]
fn ci_configuration_2000_users_30_s_over_udp() {
    assert_clean(&SimOptions {
        users: 2000,
        devices: 2,
        rate: 40.0,
        duration: 30.0,
        transport: SimTransport::Udp,
        // About 50 users wholly away at any time: some 2-3 % of messages are deferred.
        churn: 10.0,
        offline: 10.0,
        drain: 60.0,
        groups: 100,
        group_size: 8,
        group_share: 0.2,
        // Devices read within 5 s: a sender that left meanwhile gets its
        // display report when it is back (the report waits for it).
        read_delay: 5.0,
        quiet: true,
        ..Default::default()
    });
}

#[test]
fn short_run_over_the_memory_transport() {
    assert_clean(&SimOptions {
        users: 500,
        devices: 3,
        rate: 40.0,
        duration: 8.0,
        transport: SimTransport::Memory,
        churn: 10.0,
        offline: 3.0,
        drain: 60.0,
        quiet: true,
        seed: 7,
        groups: 20,
        group_size: 30,
        group_share: 0.1,
        ..Default::default()
    });
}

/// Device numbers: user 0 has devices 0 and 1, user 1 has 2 and 3.
fn one_message(checker: &mut Checker) -> u64 {
    let id = checker.sent(0, 1, vec![(2, 0), (3, 0)]);
    checker.answered(id, 200, |_, _| true);
    id
}

fn reported(checker: &mut Checker, id: u64) {
    checker.report(id, ReportKind::Delivery, 0);
    checker.report(id, ReportKind::Display, 0);
}

#[test]
fn checker_accepts_a_clean_run() {
    let mut c = Checker::new();
    let id = one_message(&mut c);
    c.received(id, 2);
    c.received(id, 3);
    reported(&mut c, id);
    c.finish(|_| 0);
    assert!(c.violations().is_empty(), "{:?}", c.violations());
}

#[test]
fn checker_catches_a_duplicated_delivery() {
    let mut c = Checker::new();
    let id = one_message(&mut c);
    c.received(id, 2);
    c.received(id, 3);
    c.received(id, 3);
    reported(&mut c, id);
    c.finish(|_| 0);
    assert_eq!(c.violation_count(), 1, "{:?}", c.violations());
    assert!(c.violations()[0].contains("got it twice"));
}

#[test]
fn checker_catches_a_device_left_out_and_a_lost_message() {
    let mut c = Checker::new();
    let id = one_message(&mut c);
    c.received(id, 2);
    reported(&mut c, id);
    c.sent(0, 1, vec![]); // never answered
    c.finish(|_| 0);
    let v = c.violations().join("\n");
    assert!(v.contains("device 3 was registered throughout but never got it"), "{v}");
    assert!(v.contains("lost (no final response)"), "{v}");
}

#[test]
fn checker_catches_reordering_and_a_deferred_message_never_delivered() {
    let mut c = Checker::new();
    let (a, b) = (one_message(&mut c), one_message(&mut c));
    for dev in [2, 3] {
        c.received(b, dev);
        c.received(a, dev);
    }
    reported(&mut c, a);
    reported(&mut c, b);
    let d = c.sent(0, 1, vec![]);
    c.answered(d, 202, |_, _| false);
    c.finish(|_| 0);
    let v = c.violations().join("\n");
    assert!(v.contains("out of order"), "{v}");
    assert!(v.contains("deferred and never delivered"), "{v}");
}

#[test]
fn checker_catches_a_live_message_overtaking_a_deferred_one() {
    let mut c = Checker::new();
    let deferred = c.sent(0, 1, vec![]);
    c.answered(deferred, 202, |_, _| false);
    let live = one_message(&mut c);
    c.received(live, 2);
    c.received(live, 3);
    c.received(deferred, 2); // the older, deferred one after the newer one
    reported(&mut c, deferred);
    reported(&mut c, live);
    c.finish(|_| 0);
    let v = c.violations().join("\n");
    assert!(v.contains("out of order"), "{v}");
}

#[test]
fn checker_catches_report_duplicates_and_gaps() {
    let mut c = Checker::new();
    let id = one_message(&mut c);
    c.received(id, 2);
    c.received(id, 3);
    c.report(id, ReportKind::Delivery, 0);
    c.report(id, ReportKind::Delivery, 0);
    c.report(id, ReportKind::Delivery, 1); // not the device that sent it
    c.finish(|_| 0);
    let v = c.violations().join("\n");
    assert!(v.contains("Delivery report twice"), "{v}");
    assert!(v.contains("expected exactly one on the sending device"), "{v}");
    assert!(v.contains("no Display report"), "{v}");
}

/// The sending device left and came back (a new registration epoch): its
/// reports still belong to it, not to the user's other device.
#[test]
fn checker_wants_the_report_on_the_sending_device_even_after_it_left() {
    let mut c = Checker::new();
    let id = one_message(&mut c);
    c.received(id, 2);
    c.received(id, 3);
    c.report(id, ReportKind::Delivery, 1);
    c.report(id, ReportKind::Display, 0);
    c.finish(|dev| u32::from(dev == 0));
    let v = c.violations().join("\n");
    assert!(v.contains("Delivery reports on devices [1]"), "{v}");
    assert!(!v.contains("Display"), "{v}");
}

#[test]
fn checker_catches_a_deferral_while_a_device_was_online() {
    let mut c = Checker::new();
    let id = c.sent(0, 1, vec![(2, 0)]);
    c.answered(id, 202, |_, _| true);
    assert!(c.violations().iter().any(|v| v.contains("deferred (202) although")));
}

/// End to end: an engine that refuses what it cannot deliver now (480
/// instead of deferring) breaks the "deferred or delivered" rule, and
/// `cpm simulate` says so and exits non-zero.
#[test]
fn the_binary_exits_non_zero_when_the_engine_breaks_an_invariant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("reject.toml");
    std::fs::write(&config, "[preferences]\nwhen_unavailable = \"reject\"\n").expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpm"))
        .args([
            "simulate",
            "--users",
            "100",
            "--devices",
            "1",
            "--rate",
            "50",
            "--duration",
            "4",
        ])
        .args([
            "--churn",
            "20",
            "--offline",
            "2",
            "--transport",
            "memory",
            "--quiet",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("run cpm simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "must fail:\n{stdout}");
    assert!(stdout.contains("refused with 480"), "{stdout}");
    assert!(stdout.contains("VIOLATION"), "{stdout}");
}

/// Two devices per user: user 0 has devices 0 and 1, user 2 has 4 and 5.
#[test]
fn checker_holds_group_messages_to_their_rules() {
    let mut c = Checker::with_devices(2);
    // Group 0 is users 0, 1 and 2; user 0 sends.
    let ok = c.sent_group(0, 0, vec![1, 2]);
    c.answered(ok, 202, |_, _| true);
    c.received(ok, 3); // user 1, one device is enough
    c.received(ok, 4);
    c.received(ok, 5);
    reported(&mut c, ok);
    let missed = c.sent_group(0, 0, vec![1, 2]);
    c.answered(missed, 202, |_, _| true);
    c.received(missed, 2);
    c.received(missed, 7); // user 3 is not in the group
    c.received(missed, 2);
    reported(&mut c, missed);
    let refused = c.sent_group(0, 0, vec![1, 2]);
    c.answered(refused, 200, |_, _| true);
    assert_eq!(c.group_of(ok), Some(0));
    c.finish(|_| 0);
    let v = c.violations().join("\n");
    assert!(
        v.contains(&format!(
            "group message {missed} to g0: u3 (device 7) is not a recipient"
        )),
        "{v}"
    );
    assert!(
        v.contains(&format!("group message {missed} to g0: member u2 never got it")),
        "{v}"
    );
    assert!(v.contains(&format!("message {missed}: device 2 got it twice")), "{v}");
    assert!(
        v.contains(&format!("group message {refused} to g0: 200, expected 202")),
        "{v}"
    );
    assert!(
        !v.contains(&format!("message {ok}:")) && !v.contains(&format!("message {ok} ")),
        "{v}"
    );
}

/// A device that was registered when the 200 came back but left before its
/// copy went out (the engine held it behind that device's deferred push) is
/// excused; one still in the same registration is not.
#[test]
fn checker_excuses_a_device_that_left_before_its_copy_went_out() {
    let mut c = Checker::new();
    let id = one_message(&mut c);
    c.received(id, 2);
    reported(&mut c, id);
    assert_eq!(c.pending(|d| u32::from(d == 3)), 0, "device 3 left (epoch 1)");
    assert_eq!(c.pending(|_| 0), 1, "device 3 still in its registration");
    c.finish(|d| u32::from(d == 3));
    assert!(c.violations().is_empty(), "{:?}", c.violations());
}
