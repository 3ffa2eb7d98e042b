//! The client side of SIP digest authentication (RFC 3261 §22, RFC 8760)
//! for tests against a server that is not `--open`.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest as _, Sha256};

use std::path::Path;
use std::process::Command;

use super::{header, status_of, Cpm};

#[derive(Clone, Copy, Debug)]
pub enum Alg {
    Sha256,
    Md5,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Sha256 => "SHA-256",
            Alg::Md5 => "MD5",
        }
    }
    fn h(self, s: &str) -> String {
        let bytes: Vec<u8> = match self {
            Alg::Sha256 => Sha256::digest(s.as_bytes()).to_vec(),
            Alg::Md5 => Md5::digest(s.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A challenge's parameters.
#[derive(Debug)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub stale: bool,
}

pub fn param(h: &str, name: &str) -> Option<String> {
    let i = h.find(&format!("{name}="))? + name.len() + 1;
    let rest = &h[i..];
    Some(match rest.strip_prefix('"') {
        Some(q) => q[..q.find('"')?].to_string(),
        None => rest.split([',', ' ']).next()?.to_string(),
    })
}

/// Every value of header `name` in a raw response.
pub fn headers<'a>(resp: &'a str, name: &str) -> Vec<&'a str> {
    resp.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

/// The challenge of `alg` in a 401/407.
pub fn challenge(resp: &str, alg: Alg) -> Challenge {
    let name = if status_of(resp) == Some(401) {
        "WWW-Authenticate"
    } else {
        "Proxy-Authenticate"
    };
    let all = headers(resp, name);
    assert_eq!(all.len(), 2, "two challenges: {resp}");
    assert!(all[0].contains("algorithm=SHA-256"), "SHA-256 first: {resp}");
    let h = all
        .iter()
        .find(|h| param(h, "algorithm").as_deref() == Some(alg.name()))
        .unwrap_or_else(|| panic!("no {alg:?} challenge: {resp}"));
    assert!(h.contains("qop=\"auth\""), "{h}");
    Challenge {
        realm: param(h, "realm").unwrap(),
        nonce: param(h, "nonce").unwrap(),
        stale: param(h, "stale").as_deref() == Some("true"),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn credentials(alg: Alg, ch: &Challenge, user: &str, pw: &str, nc: u32, method: &str, uri: &str) -> String {
    let ha1 = alg.h(&format!("{user}:{}:{pw}", ch.realm));
    let ha2 = alg.h(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let cnonce = "0a4f113b";
    let resp = alg.h(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce));
    format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{resp}\", \
         algorithm={}, qop=auth, nc={nc}, cnonce=\"{cnonce}\"",
        ch.realm,
        ch.nonce,
        alg.name()
    )
}

static SEQ: AtomicU32 = AtomicU32::new(1);

/// A SIP client on its own UDP socket.
pub struct Client {
    sock: UdpSocket,
    server: u16,
    /// Domain of the users' AORs and of the REGISTER Request-URI.
    pub domain: String,
}

impl Client {
    pub fn new(server: &Cpm) -> Client {
        Client::for_domain(server, "example.com")
    }

    pub fn for_domain(server: &Cpm, domain: &str) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        Client {
            sock,
            server: server.udp,
            domain: domain.to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// Send a request; the final response with its Call-ID (bounded wait).
    pub fn send(&self, text: &str) -> String {
        let call_id = header(text, "Call-ID").unwrap();
        self.sock.send_to(text.as_bytes(), ("127.0.0.1", self.server)).unwrap();
        self.sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let start = Instant::now();
        let mut buf = vec![0u8; 65_535];
        while start.elapsed() < Duration::from_secs(5) {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let r = String::from_utf8_lossy(&buf[..n]).into_owned();
            if header(&r, "Call-ID").as_deref() == Some(call_id.as_str()) && status_of(&r).is_some_and(|c| c >= 200) {
                return r;
            }
        }
        panic!("no response to {text}");
    }

    /// A new request (fresh branch and Call-ID) with `extra` header lines.
    pub fn request(&self, method: &str, ruri: &str, from: &str, to: &str, extra: &[String]) -> String {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = self.port();
        let mut text = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKauth{n}\r\n\
             Max-Forwards: 70\r\nFrom: <{from}>;tag=t{n}\r\nTo: <{to}>\r\nCall-ID: auth-{n}-{p}@127.0.0.1\r\n\
             CSeq: {n} {method}\r\n"
        );
        for h in extra {
            text.push_str(h);
            text.push_str("\r\n");
        }
        if method == "MESSAGE" {
            let body = format!("hello {n}");
            text.push_str(&format!(
                "Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            text.push_str("Content-Length: 0\r\n\r\n");
        }
        self.send(&text)
    }

    pub fn register(&self, user: &str, contact: &str, extra: &[String]) -> String {
        let aor = format!("sip:{user}@{}", self.domain);
        let mut h = vec![format!("Contact: <sip:{user}@{contact}>"), "Expires: 600".to_string()];
        h.extend_from_slice(extra);
        let ruri = format!("sip:{}", self.domain);
        self.request("REGISTER", &ruri, &aor, &aor, &h)
    }

    /// REGISTER `to_user` authenticating as `user`/`pw`: the final answer.
    pub fn register_as(&self, user: &str, pw: &str, to_user: &str, contact: &str, alg: Alg) -> String {
        let first = self.register(to_user, contact, &[]);
        assert_eq!(status_of(&first), Some(401), "{first}");
        let ch = challenge(&first, alg);
        let auth = credentials(alg, &ch, user, pw, 1, "REGISTER", &format!("sip:{}", self.domain));
        self.register(to_user, contact, &[format!("Authorization: {auth}")])
    }

    /// MESSAGE to bob from `from`, authenticating as `user`/`pw`.
    pub fn message_as(&self, user: &str, pw: &str, from: &str, extra: &[String], alg: Alg) -> String {
        let to = format!("sip:bob@{}", self.domain);
        self.message_to(user, pw, from, &to, extra, alg)
    }

    /// MESSAGE to `to` from `from`, authenticating as `user`/`pw`.
    pub fn message_to(&self, user: &str, pw: &str, from: &str, to: &str, extra: &[String], alg: Alg) -> String {
        let first = self.request("MESSAGE", to, from, to, extra);
        assert_eq!(status_of(&first), Some(407), "{first}");
        let ch = challenge(&first, alg);
        let mut h = extra.to_vec();
        h.push(format!(
            "Proxy-Authorization: {}",
            credentials(alg, &ch, user, pw, 1, "MESSAGE", to)
        ));
        self.request("MESSAGE", to, from, to, &h)
    }
}

/// `cpm user ARGS` (credentials are provisioned on the data directory before the server starts).
pub fn user_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cpm"))
        .arg("user")
        .args(args)
        .output()
        .expect("run cpm user")
}

pub fn user_add(data: &Path, address: &str, password: &str) {
    let out = user_cmd(&["add", address, "--password", password, "--data", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "cpm user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
