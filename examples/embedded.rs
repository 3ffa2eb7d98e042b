//! Run the engine in-process on loopback ports it picks, register two
//! devices of bob from plain UDP sockets, send him a CPM message, and show
//! that each device got one copy and the sender got 200 OK.
//!
//!     cargo run --example embedded

use std::net::UdpSocket;
use std::time::Duration;

use cpm::config::Config;
use cpm::server::{start, Listen, ServeOptions};

fn request(sock: &UdpSocket, server: u16, text: String) -> String {
    sock.send_to(text.as_bytes(), ("127.0.0.1", server)).expect("send");
    recv(sock)
}

fn recv(sock: &UdpSocket) -> String {
    let mut buf = vec![0u8; 65_535];
    let (n, _) = sock.recv_from(&mut buf).expect("no answer within 5 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let opts = ServeOptions {
        listen: vec![Listen::Udp(([127, 0, 0, 1], 0).into())],
        data: data.path().join("store"),
        config: Config::default(),
        open: true,
        limits: Default::default(),
    };
    let system = actix_rt::System::new();
    let server = system.block_on(start(opts))?;
    let port = server.udp[0].port();
    println!("engine listening on udp:127.0.0.1:{port}");

    // The engine's arbiters run on their own threads; this thread plays the phones.
    let socket = || -> anyhow::Result<(UdpSocket, u16)> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let p = s.local_addr()?.port();
        Ok((s, p))
    };
    let (phones, alice) = ([socket()?, socket()?], socket()?);
    for (i, (sock, p)) in phones.iter().enumerate() {
        let reg = format!(
            "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKreg{i}\r\n\
             From: <sip:bob@127.0.0.1>;tag=r{i}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: reg{i}\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:bob@127.0.0.1:{p}>;+g.oma.sip-im;+sip.instance=\"<urn:uuid:phone-{i}>\"\r\nExpires: 600\r\n\r\n"
        );
        println!("bob's phone {i} registers: {}", first_line(&request(sock, port, reg)));
    }
    let (a_sock, a_port) = &alice;
    let msg = format!(
        "MESSAGE sip:bob@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{a_port};branch=z9hG4bKmsg1\r\n\
         From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: msg1\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    );
    a_sock.send_to(msg.as_bytes(), ("127.0.0.1", port))?;
    for (i, (sock, _)) in phones.iter().enumerate() {
        let got = recv(sock);
        println!("bob's phone {i} receives: {}", first_line(&got));
        // Answer 200 with the Vias, From, To, Call-ID and CSeq of the request.
        let keep: Vec<&str> = got
            .lines()
            .filter(|l| {
                ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                    .iter()
                    .any(|h| l.starts_with(h))
            })
            .collect();
        let ok = format!("SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n", keep.join("\r\n"));
        sock.send_to(ok.as_bytes(), ("127.0.0.1", port))?;
    }
    println!("alice gets: {}", first_line(&recv(a_sock)));
    Ok(())
}
