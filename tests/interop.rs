//! Interop with a SIP user agent nobody on the project wrote: baresip
//! (Debian package baresip-core) registers with digest authentication and
//! exchanges pager-mode MESSAGEs through the real server (not `--open`).
//! See docs/interop.md.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::digest::user_add;
use common::*;
use cpm::admin::client;
use serde_json::Value;

/// baresip 1.0 (libre 1.x) computes MD5 only and gives up on the whole
/// challenge ("Function not implemented") when it meets the SHA-256 one the
/// server offers first, instead of skipping it (RFC 8760 §2.4): the server
/// offers MD5 alone here.
const CONFIG: &str = r#"
domains = ["example.com"]
[auth]
algorithms = ["MD5"]
[[users]]
address = "sip:alice@example.com"
[[users]]
address = "sip:bob@example.com"
"#;

const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";
const WAIT: Duration = Duration::from_secs(15);

/// Tests that need baresip fail (never skip) when it is missing, like sipp's.
fn require_baresip() {
    let ok = Command::new("baresip")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(ok, "baresip is required for this test: apt-get install -y baresip-core");
}

/// A server that demands digest, with alice and bob provisioned.
fn server() -> (Cpm, TempDir) {
    let (dir, path) = config(CONFIG);
    let cpm = Cpm::start_prepared(&["--config", &path], |data| {
        user_add(data, ALICE, "alice-pw");
        user_add(data, BOB, "bob-pw");
    });
    (cpm, dir)
}

/// One baresip process with its own config directory: one account that
/// registers through the server (as outbound proxy), one contact (the peer
/// `/message` goes to), driven over its `ctrl_tcp` module. What it shows a
/// user (a received MESSAGE) comes out of its `cons` module, read here from
/// a TCP connection; stdout and stderr, with the SIP trace (`-s`), go to a
/// log file. Killed on drop.
struct Baresip {
    child: Option<Child>,
    /// SIP port (UDP and TCP) on 127.0.0.1.
    port: u16,
    ctrl: u16,
    log: PathBuf,
    /// Everything the console UI printed so far.
    ui: Arc<Mutex<String>>,
    _dir: TempDir,
}

/// Baresip's SIP port, ctrl_tcp and cons ports. Baresip also opens its
/// SIP/TLS listener on the SIP port + 1 whatever `sip_transports` says, so
/// that port must be free too and must not be handed out as ctrl or cons
/// (the kernel's ephemeral ports often come in sequence: a run failed with
/// "SIP/TLS transport failed: Address already in use").
fn baresip_ports() -> (u16, u16, u16) {
    let port = loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let other = |taken: &[u16]| loop {
        let p = free_port();
        if p != port + 1 && !taken.contains(&p) {
            break p;
        }
    };
    let ctrl = other(&[port]);
    let cons = other(&[port, ctrl]);
    (port, ctrl, cons)
}

impl Baresip {
    fn start(cpm: &Cpm, t: Transport, user: &str, password: &str, peer: &str) -> Baresip {
        require_baresip();
        let dir = TempDir::new().expect("tempdir");
        let (port, ctrl, cons) = baresip_ports();
        let modules = ["account", "contact", "menu", "ctrl_tcp"]
            .iter()
            .map(|m| format!("module_app\t{m}.so\n"))
            .collect::<String>();
        let config = format!(
            "poll_method\tpoll\nsip_listen\t127.0.0.1:{port}\nsip_transports\tudp,tcp\n\
             module_path\t/usr/lib/baresip/modules\nmodule\tcons.so\n{modules}ctrl_tcp_listen\t127.0.0.1:{ctrl}\ncons_listen\t127.0.0.1:{cons}\n"
        );
        let proxy = match t {
            Transport::Udp => format!("sip:127.0.0.1:{};transport=udp", cpm.udp),
            Transport::Tcp => format!("sip:127.0.0.1:{};transport=tcp", cpm.tcp),
        };
        let account = format!("<sip:{user}@example.com>;auth_pass={password};outbound=\"{proxy}\";regint=600\n");
        for (name, text) in [
            ("config", config),
            ("accounts", account),
            ("contacts", format!("<{peer}>\n")),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write baresip config");
        }
        let log = dir.path().join("baresip.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .arg("-s")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn baresip");
        let ua = Baresip {
            child: Some(child),
            port,
            ctrl,
            log,
            ui: Arc::default(),
            _dir: dir,
        };
        let up = wait_until(WAIT, || TcpStream::connect(("127.0.0.1", ctrl)).is_ok());
        assert!(up, "baresip ctrl_tcp did not come up: {}", ua.log());
        let mut console = TcpStream::connect(("127.0.0.1", cons)).expect("connect to baresip's cons");
        let ui = ua.ui.clone();
        // Ends when baresip does (the connection closes).
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = console.read(&mut buf) {
                ui.lock().expect("lock").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        ua
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run a command through ctrl_tcp (netstring-framed JSON); its output.
    fn command(&self, command: &str, params: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.ctrl)).expect("connect ctrl_tcp");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let req = serde_json::json!({"command": command, "params": params, "token": "t"}).to_string();
        s.write_all(format!("{}:{req},", req.len()).as_bytes())
            .expect("send command");
        // Events may come first: read netstrings until the response.
        loop {
            let mut len = Vec::new();
            let mut b = [0u8; 1];
            while b[0] != b':' {
                s.read_exact(&mut b).expect("read ctrl_tcp");
                len.push(b[0]);
            }
            let n: usize = String::from_utf8_lossy(&len[..len.len() - 1])
                .parse()
                .expect("netstring length");
            let mut msg = vec![0u8; n + 1];
            s.read_exact(&mut msg).expect("read ctrl_tcp");
            let v: Value = serde_json::from_slice(&msg[..n]).expect("ctrl_tcp json");
            if v["response"] == true {
                assert_eq!(v["ok"], true, "{command} {params}: {v}");
                return v["data"].as_str().unwrap_or_default().to_string();
            }
        }
    }

    /// The account's registration state as baresip shows it (`reginfo`):
    /// Some(true) registered, Some(false) failed, None not yet known.
    fn registered(&self) -> Option<bool> {
        let info = self.command("reginfo", "");
        if info.contains("OK") {
            Some(true)
        } else if info.contains("ERR") {
            Some(false)
        } else {
            None
        }
    }

    /// Wait (bounded) until baresip knows whether it is registered.
    fn wait_registration(&self) -> bool {
        let mut state = None;
        wait_until(WAIT, || {
            state = self.registered();
            state.is_some()
        });
        state.unwrap_or_else(|| panic!("no registration outcome: {}", self.log()))
    }

    /// Send a MESSAGE with `text` to the peer contact.
    fn message(&self, text: &str) {
        self.command("message", text);
    }

    /// What the console UI showed so far.
    fn ui(&self) -> String {
        self.ui.lock().expect("lock").clone()
    }

    /// Wait (bounded) until baresip showed a received MESSAGE `text` from `from`.
    fn wait_received(&self, from: &str, text: &str) -> bool {
        let line = format!("{from}: \"{text}\"");
        wait_until(WAIT, || self.ui().contains(&line))
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The user's registrations in the admin API.
fn registrations(cpm: &Cpm, aor: &str) -> Vec<Value> {
    let base = format!("http://127.0.0.1:{}", cpm.admin);
    let r = client::get(&base, &format!("/api/users/{aor}"), None).expect("admin request");
    let v: Value = r.json().expect("json body");
    v["registrations"].as_array().cloned().unwrap_or_default()
}

/// The SIP messages of baresip's trace, in order (each starts with its first line).
fn trace(log: &str) -> Vec<String> {
    log.split("\x1b[36;1m#\n")
        .skip(1)
        .filter_map(|m| {
            m.split_once('\n')
                .map(|(_, sip)| sip.split("\x1b[;m").next().unwrap_or("").to_string())
        })
        .collect()
}

fn both_directions(t: Transport) {
    let (cpm, _cfg) = server();
    let alice = Baresip::start(&cpm, t, "alice", "alice-pw", BOB);
    let bob = Baresip::start(&cpm, t, "bob", "bob-pw", ALICE);
    assert!(alice.wait_registration(), "alice: {}\n{}", alice.log(), cpm.log());
    assert!(bob.wait_registration(), "bob: {}\n{}", bob.log(), cpm.log());

    // The UA's own trace: REGISTER challenged with 401, answered, 200.
    let msgs = trace(&alice.log());
    let first_401 = msgs
        .iter()
        .position(|m| m.starts_with("SIP/2.0 401") && m.contains("WWW-Authenticate: Digest"))
        .unwrap_or_else(|| panic!("no 401 challenge in {msgs:#?}"));
    let authorized = msgs
        .iter()
        .position(|m| m.starts_with("REGISTER ") && m.contains("Authorization: Digest"))
        .unwrap_or_else(|| panic!("no REGISTER with credentials in {msgs:#?}"));
    let ok = msgs
        .iter()
        .position(|m| m.starts_with("SIP/2.0 200") && m.contains("REGISTER"))
        .unwrap_or_else(|| panic!("no 200 to REGISTER in {msgs:#?}"));
    assert!(first_401 < authorized && authorized < ok, "{msgs:#?}");

    // Over the transport asked for, to the server's port.
    let (name, port) = match t {
        Transport::Udp => ("UDP ", cpm.udp),
        Transport::Tcp => ("TCP ", cpm.tcp),
    };
    let to_server = format!(" -> 127.0.0.1:{port}");
    assert!(
        alice
            .log()
            .lines()
            .any(|l| l.starts_with(name) && l.ends_with(&to_server)),
        "{}",
        alice.log()
    );

    // The server's side: one registration each, at the UA's own port.
    for (aor, ua) in [(ALICE, &alice), (BOB, &bob)] {
        let regs = registrations(&cpm, aor);
        assert_eq!(regs.len(), 1, "{aor}: {regs:?}");
        assert!(
            regs[0].to_string().contains(&format!("127.0.0.1:{}", ua.port)),
            "{aor}: {regs:?}"
        );
    }

    // alice -> bob and bob -> alice, each through the server (407 + digest).
    alice.message("hello bob from baresip");
    assert!(
        bob.wait_received(ALICE, "hello bob from baresip"),
        "bob: {}\n{}\nalice: {}\n{}",
        bob.ui(),
        bob.log(),
        alice.log(),
        cpm.log()
    );
    bob.message("hello alice");
    assert!(
        alice.wait_received(BOB, "hello alice"),
        "alice: {}\n{}\nbob: {}\n{}",
        alice.ui(),
        alice.log(),
        bob.log(),
        cpm.log()
    );
    let sent = trace(&alice.log());
    assert!(
        sent.iter()
            .any(|m| m.starts_with("MESSAGE ") && m.contains("Proxy-Authorization: Digest")),
        "alice's MESSAGE carried credentials: {sent:#?}"
    );
    // What bob's UA got: the asserted sender, no credentials, and not the
    // Route alice's UA put in for its outbound proxy (this server).
    let got = trace(&bob.log());
    let m = got
        .iter()
        .find(|m| m.starts_with("MESSAGE ") && m.ends_with("hello bob from baresip"))
        .unwrap_or_else(|| panic!("no MESSAGE in bob's trace: {got:#?}"));
    assert!(m.contains("P-Asserted-Identity: <sip:alice@example.com>"), "{m}");
    assert!(!m.contains("Proxy-Authorization:") && !m.contains("\nRoute:"), "{m}");
}

#[test]
fn baresip_registers_with_digest_and_exchanges_messages_udp() {
    both_directions(Transport::Udp);
}

#[test]
fn baresip_registers_with_digest_and_exchanges_messages_tcp() {
    both_directions(Transport::Tcp);
}

#[test]
fn baresip_with_a_wrong_password_is_not_registered() {
    let (cpm, _cfg) = server();
    let alice = Baresip::start(&cpm, Transport::Udp, "alice", "not-alices-pw", BOB);
    assert!(!alice.wait_registration(), "{}", alice.log());
    assert!(registrations(&cpm, ALICE).is_empty(), "{}", cpm.log());
    let msgs = trace(&alice.log());
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("REGISTER ") && m.contains("Authorization: Digest")),
        "baresip answered the challenge: {msgs:#?}"
    );
    assert!(!msgs.iter().any(|m| m.starts_with("SIP/2.0 200")), "{msgs:#?}");
}
