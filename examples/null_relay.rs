//! The floor of the relay benchmark: the least a MESSAGE relay must do on
//! loopback UDP, and nothing more. It is not a server: no transactions, no
//! retransmission handling, no validation, no registrar, no actors.
//!
//! - REGISTER is answered 200 OK at once (Via, From, To with a tag,
//!   Call-ID, CSeq and Contact copied from the request);
//! - any other request is forwarded unchanged to `--device`;
//! - a response is forwarded unchanged to the address the request with the
//!   same Call-ID came from.
//!
//! So each relayed message costs it two `recvfrom` and two `sendto` on one
//! thread, as it costs every relay. What `../shared/bench/pager.sh` reads for
//! it is the host's price of that traffic (the sends that wake sipp, the
//! sleeps between messages); a server's figure minus this one is what its
//! own work costs (docs/performance-log.md, eighth session).
//!
//!     cargo run --release --example null_relay -- --listen 127.0.0.1:5066
//!     SERVER_PIDS=$(pgrep -f examples/null_relay) ../shared/bench/pager.sh 5066

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Null relay: the floor of the pager-mode relay benchmark")]
struct Args {
    /// Where to listen (UDP).
    #[arg(long, default_value = "127.0.0.1:5066")]
    listen: SocketAddr,
    /// Where every request goes: pager.sh's sipp device.
    #[arg(long, default_value = "127.0.0.1:5070")]
    device: SocketAddr,
}

/// Requests waiting for their response at most. A full table holds
/// requests whose responses never came (lost, or a device that does not
/// answer): it is emptied, so that the relay goes on relaying.
const MAX_PENDING: usize = 100_000;

/// The trimmed value of the first header line called `name` (case
/// insensitive; compact forms are not looked for: sipp does not send them).
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").skip(1).take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The 200 OK for a REGISTER, or None when it lacks a header a response needs.
fn register_ok(req: &str) -> Option<String> {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        out.push_str(&format!("{name}: {}\r\n", header(req, name)?));
    }
    out.push_str(&format!("To: {};tag=null-relay\r\n", header(req, "To")?));
    if let Some(contact) = header(req, "Contact") {
        out.push_str(&format!("Contact: {contact}\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sock = UdpSocket::bind(args.listen)?;
    println!("listening udp:{}", sock.local_addr()?);
    let mut pending: HashMap<String, SocketAddr> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) => {
                eprintln!("receive failed: {e}");
                continue;
            }
        };
        let Ok(text) = std::str::from_utf8(&buf[..n]) else {
            continue;
        };
        let Some(call_id) = header(text, "Call-ID") else {
            continue;
        };
        let sent = if text.starts_with("SIP/2.0 ") {
            match pending.remove(call_id) {
                Some(to) => sock.send_to(&buf[..n], to),
                None => continue,
            }
        } else if text.starts_with("REGISTER ") {
            match register_ok(text) {
                Some(ok) => sock.send_to(ok.as_bytes(), peer),
                None => continue,
            }
        } else {
            if pending.len() >= MAX_PENDING {
                eprintln!("{MAX_PENDING} requests without a response: forgotten");
                pending.clear();
            }
            pending.insert(call_id.to_string(), peer);
            sock.send_to(&buf[..n], args.device)
        };
        if let Err(e) = sent {
            eprintln!("send failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK1\r\n\
        From: <sip:u1@127.0.0.1>;tag=1\r\n\
        To: <sip:u1@127.0.0.1>\r\n\
        call-id: reg-1\r\n\
        CSeq: 1 REGISTER\r\n\
        Contact: <sip:u1@127.0.0.1:5070>;expires=600\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn finds_headers_case_insensitively_and_only_in_the_head() {
        assert_eq!(header(REGISTER, "Call-ID"), Some("reg-1"));
        assert_eq!(header(REGISTER, "cseq"), Some("1 REGISTER"));
        assert_eq!(header("MESSAGE x SIP/2.0\r\nA: 1\r\n\r\nB: 2", "B"), None);
    }

    #[test]
    fn answers_register_with_its_headers() {
        let ok = register_ok(REGISTER).unwrap();
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"));
        assert_eq!(header(&ok, "To"), Some("<sip:u1@127.0.0.1>;tag=null-relay"));
        assert_eq!(header(&ok, "Contact"), Some("<sip:u1@127.0.0.1:5070>;expires=600"));
        assert!(ok.ends_with("\r\n\r\n"));
        assert_eq!(register_ok("REGISTER x SIP/2.0\r\nVia: v\r\n\r\n"), None);
    }
}
