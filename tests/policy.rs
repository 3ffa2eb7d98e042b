//! Originating policy checks of 002 §8.3.2.1.1 steps 1-2: a barred
//! originator gets 403 with a Warning, a client below the required CPM
//! release 403 with an Error-Info; everyone else is served.

mod common;

use std::time::Duration;

use common::*;

fn message(server: u16, from_port: u16, from: &str, n: u32, user_agent: Option<&str>) -> String {
    let ua = user_agent.map(|u| format!("User-Agent: {u}\r\n")).unwrap_or_default();
    let body = "hello";
    format!(
        "MESSAGE sip:bob@127.0.0.1:{server} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bKpol{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{from}@127.0.0.1>;tag=p{n}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: pol-{n}\r\n\
         CSeq: 1 MESSAGE\r\n{ua}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn barred_originator_gets_403_with_warning() {
    let (_d, cfg) = config("[messaging]\nbarred_senders = [\"sip:Mallory@127.0.0.1\", \"*@spam.example\"]\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let bob = RawDevice::start(|_, _| 200);
    assert_eq!(bob.register(&cpm, "bob", "bob-1", 600), Some(200));
    let phone = RawDevice::start(|_, _| 200);

    let answer = phone
        .request(cpm.udp, &message(cpm.udp, phone.port, "Mallory", 1, None))
        .expect("answer");
    assert_eq!(status_of(&answer), Some(403), "{answer}");
    let warning = header(&answer, "Warning").expect("Warning header");
    assert!(warning.starts_with("399 127.0.0.1 \""), "{warning}");
    assert!(warning.contains("not allowed"), "{warning}");

    // Someone else is served, and bob got only that one message.
    let answer = phone
        .request(cpm.udp, &message(cpm.udp, phone.port, "alice", 2, None))
        .expect("answer");
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    let got = bob.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("sip:alice@127.0.0.1"));
    assert!(cpm.log().contains("barred originator refused"));
}

#[test]
fn client_below_required_release_gets_403_with_error_info() {
    let (_d, cfg) =
        config("[messaging]\nmin_client_release = \"OMA2.0\"\nupgrade_info_uri = \"https://cpm.example/upgrade\"\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let bob = RawDevice::start(|_, _| 200);
    assert_eq!(bob.register(&cpm, "bob", "bob-1", 600), Some(200));
    let phone = RawDevice::start(|_, _| 200);

    for (n, ua) in [
        (1, Some("CPM-client/OMA1.0 Acme/1.0")),
        (2, None),
        (3, Some("baresip v1.0.0")),
    ] {
        let answer = phone
            .request(cpm.udp, &message(cpm.udp, phone.port, "alice", n, ua))
            .expect("answer");
        assert_eq!(status_of(&answer), Some(403), "{ua:?}: {answer}");
        assert_eq!(
            header(&answer, "Error-Info").as_deref(),
            Some("<https://cpm.example/upgrade>"),
            "{answer}"
        );
    }
    for (n, ua) in [(4, "CPM-client/OMA2.0 Acme/2.0"), (5, "Acme/3 CPM-client/OMA2.1")] {
        let answer = phone
            .request(cpm.udp, &message(cpm.udp, phone.port, "alice", n, Some(ua)))
            .expect("answer");
        assert_eq!(status_of(&answer), Some(200), "{ua}: {answer}");
    }
    assert_eq!(bob.wait_for(2, Duration::from_secs(5)).len(), 2);
}

#[test]
fn invalid_policy_is_refused_at_start() {
    for bad in ["min_client_release = \"two\"", "barred_senders = [\"mallory\"]"] {
        let (_d, cfg) = config(&format!("[messaging]\n{bad}\n"));
        let err = serve_refused(&["--open", "--admin", "off", "--sip", "udp:127.0.0.1:0", "--config", &cfg]);
        assert!(err.contains("messaging."), "{bad}: {err}");
    }
}
