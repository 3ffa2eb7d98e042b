//! SIP over TLS and `sips:` URIs against the real binary: a device
//! registers over TLS (digest authenticated), a second TLS client sends it a
//! MESSAGE that arrives on the device's own connection, hostile TLS peers do
//! not stop service, and `sips:` over plain UDP is refused.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::digest::*;
use common::*;
use cpm::transport::Framer;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const DOMAIN: &str = "example.com";

/// A self-signed certificate for 127.0.0.1/localhost, written as PEM files
/// next to a config naming them; returns the config path and the cert (DER).
fn tls_config(dir: &Path) -> (String, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("rcgen");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let config = dir.join("cpm.toml");
    let text = format!(
        "domains = [\"{DOMAIN}\"]\n[[users]]\naddress = \"sip:alice@{DOMAIN}\"\n[[users]]\naddress = \"sip:bob@{DOMAIN}\"\n\
         [tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    std::fs::write(&config, text).expect("write config");
    (config.display().to_string(), ck.cert.der().clone())
}

/// The server with a TLS listener, alice and bob provisioned with passwords.
fn server(dir: &Path) -> (Cpm, CertificateDer<'static>) {
    let (config, cert) = tls_config(dir);
    let cpm = Cpm::start_prepared(
        &[
            "--config",
            &config,
            "--sip",
            "tls:127.0.0.1:0",
            "--tcp-idle-timeout",
            "2",
        ],
        |data| {
            user_add(data, &format!("sip:alice@{DOMAIN}"), "alice-pw");
            user_add(data, &format!("sip:bob@{DOMAIN}"), "bob-pw");
        },
    );
    assert_ne!(cpm.tls, 0, "TLS listener port printed");
    (cpm, cert)
}

/// A SIP client on one TLS connection, trusting only the test certificate.
struct TlsClient {
    stream: TlsStream<TcpStream>,
    framer: Framer,
    local: SocketAddr,
    seq: u32,
}

impl TlsClient {
    async fn connect(port: u16, cert: &CertificateDer<'static>) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).expect("trust test cert");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let local = tcp.local_addr().expect("local addr");
        let name = ServerName::try_from("localhost").expect("name");
        let stream = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the server");
        TlsClient {
            stream,
            framer: Framer::default(),
            local,
            seq: 0,
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// The next complete message on the connection (bounded wait).
    async fn recv(&mut self) -> String {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(frame) = self.framer.next_frame().expect("framing") {
                return String::from_utf8_lossy(&frame).into_owned();
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .expect("a message within 10 s")
                .expect("read");
            assert!(n > 0, "server closed the connection");
            self.framer.extend(&buf[..n]);
        }
    }

    /// The final response to what was just sent (provisionals skipped).
    async fn final_response(&mut self) -> String {
        loop {
            let m = self.recv().await;
            if status_of(&m).is_some_and(|c| c >= 200) {
                return m;
            }
        }
    }

    /// A request from this connection, with `extra` header lines.
    async fn request(&mut self, method: &str, ruri: &str, from: &str, to: &str, extra: &[String]) -> String {
        self.seq += 1;
        let (n, l) = (self.seq, self.local);
        let mut text = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TLS {l};branch=z9hG4bKtls{n}x{p}\r\nMax-Forwards: 70\r\n\
             From: <{from}>;tag=t{n}\r\nTo: <{to}>\r\nCall-ID: tls-{n}-{p}@127.0.0.1\r\nCSeq: {n} {method}\r\n",
            p = l.port()
        );
        for h in extra {
            text.push_str(h);
            text.push_str("\r\n");
        }
        let body = if method == "MESSAGE" { "hello over TLS" } else { "" };
        if !body.is_empty() {
            text.push_str("Content-Type: text/plain\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(&text).await;
        self.final_response().await
    }

    /// `method` answered 401/407 first, then sent again with the
    /// credentials of `login` (user, password).
    async fn authenticated(
        &mut self,
        method: &str,
        ruri: &str,
        from: &str,
        to: &str,
        extra: &[String],
        (user, pw): (&str, &str),
    ) -> String {
        let first = self.request(method, ruri, from, to, extra).await;
        let header = match status_of(&first) {
            Some(401) => "Authorization",
            Some(407) => "Proxy-Authorization",
            _ => panic!("expected a challenge: {first}"),
        };
        let ch = challenge(&first, Alg::Sha256);
        let mut h = extra.to_vec();
        h.push(format!(
            "{header}: {}",
            credentials(Alg::Sha256, &ch, user, pw, 1, method, ruri)
        ));
        self.request(method, ruri, from, to, &h).await
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// bob's device registers over TLS with a `sips:` contact.
async fn register_bob(cpm: &Cpm, cert: &CertificateDer<'static>) -> TlsClient {
    let mut dev = TlsClient::connect(cpm.tls, cert).await;
    let bob = format!("sips:bob@{DOMAIN}");
    let contact = format!(
        "Contact: <sips:bob@{}>;+g.oma.sip-im;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-00000000b0b1>\"",
        dev.local
    );
    let extra = [contact, "Expires: 600".to_string()];
    let resp = dev
        .authenticated(
            "REGISTER",
            &format!("sips:{DOMAIN}"),
            &bob,
            &bob,
            &extra,
            ("bob", "bob-pw"),
        )
        .await;
    assert_eq!(status_of(&resp), Some(200), "REGISTER over TLS: {resp}\n{}", cpm.log());
    assert!(resp.contains(&dev.local.to_string()), "binding listed: {resp}");
    dev
}

#[test]
fn register_and_message_over_tls() {
    let dir = TempDir::new().expect("tempdir");
    let (cpm, cert) = server(dir.path());
    rt().block_on(async {
        let mut dev = register_bob(&cpm, &cert).await;
        let mut alice = TlsClient::connect(cpm.tls, &cert).await;
        let (from, to) = (format!("sips:alice@{DOMAIN}"), format!("sips:bob@{DOMAIN}"));
        let sent = alice.authenticated("MESSAGE", &to, &from, &to, &[], ("alice", "alice-pw"));
        // The device answers on its own connection while alice waits.
        let device = async {
            let req = dev.recv().await;
            dev.send(&response_to(&req, 200)).await;
            req
        };
        let (resp, req) = tokio::join!(sent, device);
        assert!(
            req.starts_with("MESSAGE sips:bob@"),
            "delivered to the sips contact: {req}"
        );
        assert!(req.contains("SIP/2.0/TLS"), "our Via says TLS: {req}");
        assert!(req.ends_with("hello over TLS"), "body: {req}");
        assert_eq!(status_of(&resp), Some(200), "sender's answer: {resp}\n{}", cpm.log());
    });
}

#[test]
fn hostile_tls_peers_do_not_stop_service() {
    let dir = TempDir::new().expect("tempdir");
    let (cpm, cert) = server(dir.path());
    rt().block_on(async {
        // Garbage instead of a ClientHello: the handshake fails, the server closes.
        let mut junk = TcpStream::connect(("127.0.0.1", cpm.tls)).await.expect("connect");
        junk.write_all(b"REGISTER sip:example.com SIP/2.0\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(n) = junk.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        assert!(closed.await.is_ok(), "garbage peer disconnected");
        // A peer that never says anything: held only for the idle timeout (2 s),
        // and meanwhile service goes on.
        let mut silent = TcpStream::connect(("127.0.0.1", cpm.tls)).await.expect("connect");
        let _dev = register_bob(&cpm, &cert).await;
        let dropped = tokio::time::timeout(Duration::from_secs(6), silent.read(&mut buf)).await;
        assert!(
            matches!(dropped, Ok(Ok(0)) | Ok(Err(_))),
            "silent peer dropped after the handshake timeout: {dropped:?}"
        );
        let logged = wait_until(Duration::from_secs(2), || {
            cpm.log().contains("TLS handshake not finished")
        });
        assert!(logged, "handshake timeout logged: {}", cpm.log());
    });
}

#[test]
fn sips_request_uri_over_udp_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    let (cpm, _) = server(dir.path());
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let p = sock.local_addr().expect("addr").port();
    let req = format!(
        "MESSAGE sips:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKsipsudp\r\nMax-Forwards: 70\r\n\
         From: <sips:alice@{DOMAIN}>;tag=a\r\nTo: <sips:bob@{DOMAIN}>\r\nCall-ID: sips-udp@127.0.0.1\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    );
    let resp = udp_exchange(&sock, cpm.udp, req.as_bytes(), Duration::from_secs(5)).expect("an answer");
    assert_eq!(status_of(&resp), Some(416), "{resp}");
    assert!(resp.contains("sips: needs TLS"), "{resp}");
}

/// `cpm serve --sip tls:...` with `config_text`: it must refuse to start;
/// returns what it printed on stderr.
fn start_error(dir: &Path, config_text: &str) -> String {
    let config = dir.join("bad.toml");
    std::fs::write(&config, config_text).expect("write config");
    let data = dir.join("data");
    serve_refused(&[
        "--admin",
        "off",
        "--sip",
        "tls:127.0.0.1:0",
        "--data",
        data.to_str().expect("utf-8 path"),
        "--config",
        config.to_str().expect("utf-8 path"),
    ])
}

#[test]
fn tls_listener_without_usable_certificate_does_not_start() {
    let dir = TempDir::new().expect("tempdir");
    let err = start_error(dir.path(), "");
    assert!(err.contains("needs a [tls] section with `cert` and `key`"), "{err}");
    let missing = dir.path().join("missing.pem");
    let err = start_error(
        dir.path(),
        &format!("[tls]\ncert = {0:?}\nkey = {0:?}\n", missing.display().to_string()),
    );
    assert!(err.contains("cannot read") && err.contains("missing.pem"), "{err}");
}
