//! Issue 5: digest authentication and sender authorization against the real
//! binary (not `--open`). Credentials are provisioned with `cpm user add` on
//! the data directory before the server starts; the digest client side is
//! computed here.

mod common;

use std::time::Duration;

use common::digest::*;
use common::*;

const CONFIG: &str = r#"
domains = ["example.com"]
[[users]]
address = "sip:alice@example.com"
[[users]]
address = "sip:bob@example.com"
[[users]]
address = "sip:carol@example.com"
"#;

/// A server with alice and bob provisioned (carol is listed but has no
/// credentials); `extra_config` is appended to the config.
fn server(extra_config: &str) -> (Cpm, TempDir) {
    let (dir, path) = config(&format!("{CONFIG}\n{extra_config}"));
    let cpm = Cpm::start_prepared(&["--config", &path], |data| {
        user_add(data, "sip:alice@example.com", "alice-pw");
        user_add(data, "sip:bob@example.com", "bob-pw");
    });
    (cpm, dir)
}

const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";

#[test]
fn register_wrong_password_is_challenged_again_right_one_registers() {
    let (cpm, _cfg) = server("");
    let c = Client::new(&cpm);
    let first = c.register("alice", "127.0.0.1:5999", &[]);
    assert_eq!(status_of(&first), Some(401), "{first}");
    let ch = challenge(&first, Alg::Sha256);
    assert_eq!(ch.realm, "example.com");
    assert!(!ch.stale);
    let wrong = credentials(Alg::Sha256, &ch, "alice", "guess", 1, "REGISTER", "sip:example.com");
    let again = c.register("alice", "127.0.0.1:5999", &[format!("Authorization: {wrong}")]);
    assert_eq!(
        status_of(&again),
        Some(401),
        "wrong password: challenged again: {again}"
    );
    for alg in [Alg::Sha256, Alg::Md5] {
        let ok = c.register_as("alice", "alice-pw", "alice", "127.0.0.1:5999", alg);
        assert_eq!(status_of(&ok), Some(200), "{alg:?}: {ok}\n{}", cpm.log());
    }
}

#[test]
fn message_is_authenticated_and_carries_the_asserted_identity() {
    let (cpm, _cfg) = server("");
    let device = RawDevice::start(|_, _| 200);
    let bob = Client::new(&cpm);
    let reg = bob.register_as("bob", "bob-pw", "bob", &device.contact(), Alg::Sha256);
    assert_eq!(status_of(&reg), Some(200), "{reg}");

    let alice = Client::new(&cpm);
    for alg in [Alg::Md5, Alg::Sha256] {
        let spoof = vec!["P-Asserted-Identity: <sip:carol@example.com>".to_string()];
        let resp = alice.message_as("alice", "alice-pw", ALICE, &spoof, alg);
        assert_eq!(status_of(&resp), Some(200), "{alg:?}: {resp}\n{}", cpm.log());
    }
    let got = device.wait_for(2, Duration::from_secs(5));
    assert_eq!(got.len(), 2, "{got:?}");
    for m in &got {
        assert_eq!(
            headers(m, "P-Asserted-Identity"),
            vec!["<sip:alice@example.com>"],
            "only the asserted sender: {m}"
        );
        assert!(
            headers(m, "Proxy-Authorization").is_empty(),
            "credentials not forwarded: {m}"
        );
    }
}

#[test]
fn replayed_nonce_count_is_refused() {
    let (cpm, _cfg) = server("");
    let device = RawDevice::start(|_, _| 200);
    let bob = Client::new(&cpm);
    assert_eq!(
        status_of(&bob.register_as("bob", "bob-pw", "bob", &device.contact(), Alg::Md5)),
        Some(200)
    );
    let c = Client::new(&cpm);
    let first = c.request("MESSAGE", BOB, ALICE, BOB, &[]);
    let ch = challenge(&first, Alg::Sha256);
    let auth = vec![format!(
        "Proxy-Authorization: {}",
        credentials(Alg::Sha256, &ch, "alice", "alice-pw", 1, "MESSAGE", BOB)
    )];
    let ok = c.request("MESSAGE", BOB, ALICE, BOB, &auth);
    assert_eq!(status_of(&ok), Some(200), "{ok}");
    // The same credentials on a new request: a replay.
    let replay = c.request("MESSAGE", BOB, ALICE, BOB, &auth);
    assert_eq!(status_of(&replay), Some(407), "replayed nc refused: {replay}");
    // The next nonce-count on the same nonce is fine.
    let next = vec![format!(
        "Proxy-Authorization: {}",
        credentials(Alg::Sha256, &ch, "alice", "alice-pw", 2, "MESSAGE", BOB)
    )];
    assert_eq!(status_of(&c.request("MESSAGE", BOB, ALICE, BOB, &next)), Some(200));
    assert_eq!(device.wait_for(2, Duration::from_secs(5)).len(), 2);
}

#[test]
fn alice_cannot_send_as_bob_nor_register_bobs_address() {
    let (cpm, _cfg) = server("");
    let c = Client::new(&cpm);
    let resp = c.message_as("alice", "alice-pw", BOB, &[], Alg::Sha256);
    assert_eq!(status_of(&resp), Some(403), "send as bob: {resp}");
    let resp = c.register_as("alice", "alice-pw", "bob", "127.0.0.1:5999", Alg::Sha256);
    assert_eq!(status_of(&resp), Some(403), "register bob: {resp}");
    // Nor hide behind an anonymous From claiming bob in P-Preferred-Identity.
    let anon = "sip:anonymous@anonymous.invalid";
    let h = vec![
        "Privacy: id".to_string(),
        "P-Preferred-Identity: <sip:bob@example.com>".to_string(),
    ];
    let resp = c.message_as("alice", "alice-pw", anon, &h, Alg::Md5);
    assert_eq!(status_of(&resp), Some(403), "anonymous as bob: {resp}");
}

#[test]
fn anonymous_sender_is_authenticated_but_hidden() {
    let (cpm, _cfg) = server("");
    let device = RawDevice::start(|_, _| 200);
    let bob = Client::new(&cpm);
    assert_eq!(
        status_of(&bob.register_as("bob", "bob-pw", "bob", &device.contact(), Alg::Sha256)),
        Some(200)
    );
    let c = Client::new(&cpm);
    let h = vec!["Privacy: id".to_string()];
    let resp = c.message_as("alice", "alice-pw", "sip:anonymous@anonymous.invalid", &h, Alg::Sha256);
    assert_eq!(status_of(&resp), Some(200), "{resp}\n{}", cpm.log());
    let got = device.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert!(headers(&got[0], "P-Asserted-Identity").is_empty(), "{}", got[0]);
    assert!(!got[0].contains("alice"), "identity hidden: {}", got[0]);
}

#[test]
fn provisioned_user_without_credentials_cannot_authenticate() {
    let (cpm, _cfg) = server("");
    let c = Client::new(&cpm);
    let resp = c.message_as("carol", "anything", "sip:carol@example.com", &[], Alg::Sha256);
    assert_eq!(status_of(&resp), Some(403), "{resp}");
}

#[test]
fn expired_nonce_gets_stale_true() {
    let (cpm, _cfg) = server("[auth]\nnonce_ttl_s = 1");
    let c = Client::new(&cpm);
    let first = c.register("alice", "127.0.0.1:5999", &[]);
    let ch = challenge(&first, Alg::Md5);
    std::thread::sleep(Duration::from_millis(2500));
    let auth = credentials(Alg::Md5, &ch, "alice", "alice-pw", 1, "REGISTER", "sip:example.com");
    let resp = c.register("alice", "127.0.0.1:5999", &[format!("Authorization: {auth}")]);
    assert_eq!(status_of(&resp), Some(401), "{resp}");
    let fresh = challenge(&resp, Alg::Md5);
    assert!(fresh.stale, "stale=true: {resp}");
    assert_ne!(fresh.nonce, ch.nonce);
    let auth = credentials(Alg::Md5, &fresh, "alice", "alice-pw", 1, "REGISTER", "sip:example.com");
    let ok = c.register("alice", "127.0.0.1:5999", &[format!("Authorization: {auth}")]);
    assert_eq!(status_of(&ok), Some(200), "{ok}");
}

#[test]
fn failed_authentication_is_throttled() {
    let (cpm, _cfg) = server("[auth]\nmax_failures = 3\nthrottle_s = 30");
    let c = Client::new(&cpm);
    for _ in 0..3 {
        let resp = c.register_as("alice", "guess", "alice", "127.0.0.1:5999", Alg::Sha256);
        assert_eq!(status_of(&resp), Some(401), "{resp}");
    }
    let resp = c.register("alice", "127.0.0.1:5999", &[]);
    assert_eq!(status_of(&resp), Some(503), "{resp}");
    assert!(header(&resp, "Retry-After").is_some(), "{resp}");
}

#[test]
fn user_remove_revokes_and_a_running_server_locks_the_store() {
    let (dir, path) = config(CONFIG);
    let cpm = Cpm::start_prepared(&["--config", &path], |data| {
        user_add(data, ALICE, "alice-pw");
        let out = user_cmd(&["remove", ALICE, "--data", data.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    let c = Client::new(&cpm);
    let resp = c.register_as("alice", "alice-pw", "alice", "127.0.0.1:5999", Alg::Sha256);
    assert_eq!(status_of(&resp), Some(403), "{resp}");
    let out = user_cmd(&["add", ALICE, "--password", "x", "--data", cpm.data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a cpm server running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(dir);
}

#[test]
fn only_provisioned_users_take_part() {
    let (cpm, _cfg) = server("");
    let device = RawDevice::start(|_, _| 200);
    let bob = Client::new(&cpm);
    assert_eq!(
        status_of(&bob.register_as("bob", "bob-pw", "bob", &device.contact(), Alg::Sha256)),
        Some(200)
    );
    let alice = Client::new(&cpm);
    // An authenticated sender to a user nobody provisioned: 404.
    let resp = alice.message_to("alice", "alice-pw", ALICE, "sip:dave@example.com", &[], Alg::Sha256);
    assert_eq!(status_of(&resp), Some(404), "{resp}");
    // Someone who is not provisioned cannot authenticate at all.
    let dave = Client::new(&cpm);
    let first = dave.register("dave", &device.contact(), &[]);
    assert_eq!(status_of(&first), Some(401), "{first}");
    let ch = challenge(&first, Alg::Sha256);
    let auth = credentials(Alg::Sha256, &ch, "dave", "guess", 1, "REGISTER", "sip:example.com");
    let resp = dave.register("dave", &device.contact(), &[format!("Authorization: {auth}")]);
    assert_eq!(status_of(&resp), Some(403), "{resp}");
    // Provisioned users reach each other.
    assert_eq!(
        status_of(&alice.message_as("alice", "alice-pw", ALICE, &[], Alg::Md5)),
        Some(200)
    );
    assert_eq!(device.wait_for(1, Duration::from_secs(5)).len(), 1);
}
