//! Test harness: the real `cpm` binary on loopback ports it picks itself,
//! sipp as the peers (devices and senders), raw sockets for what sipp
//! cannot do (byte-identical retransmissions, malformed input).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp");

/// Tests that need sipp fail (never skip) when it is missing.
pub fn require_sipp() {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(ok, "sipp is required for this test: apt-get install -y sip-tester");
}

/// A port free on 127.0.0.1 for both UDP and TCP at the time of the call.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn sipp(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// A running `cpm serve`, killed on drop.
pub struct Cpm {
    child: Option<Child>,
    pub udp: u16,
    pub tcp: u16,
    pub data: PathBuf,
    _tmp: Option<TempDir>,
    extra: Vec<String>,
}

impl Cpm {
    pub fn start(extra: &[&str]) -> Cpm {
        let tmp = TempDir::new().expect("tempdir");
        let data = tmp.path().join("data");
        let mut cpm = Cpm {
            child: None,
            udp: 0,
            tcp: 0,
            data,
            _tmp: Some(tmp),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        cpm.spawn(0, 0);
        cpm
    }

    fn spawn(&mut self, udp: u16, tcp: u16) {
        let log = self.data.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cpm"))
            .args(["serve", "--log", "debug"])
            .arg("--data")
            .arg(&self.data)
            .args([
                "--sip",
                &format!("udp:127.0.0.1:{udp}"),
                "--sip",
                &format!("tcp:127.0.0.1:{tcp}"),
            ])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn cpm");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut u, mut t) = (0, 0);
        while u == 0 || t == 0 {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("cpm exited before listening; log: {}", self.log()))
                .expect("read stdout");
            let port = |l: &str| l.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            if line.starts_with("listening udp:") {
                u = port(&line);
            } else if line.starts_with("listening tcp:") {
                t = port(&line);
            }
        }
        self.udp = u;
        self.tcp = t;
        self.child = Some(child);
    }

    pub fn port(&self, t: Transport) -> u16 {
        match t {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        let (u, t) = (self.udp, self.tcp);
        self.spawn(u, t);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Cpm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Write a scenario with its `[expect]` placeholder filled in.
fn scenario(dir: &Path, name: &str, expect: Option<u16>) -> PathBuf {
    let text = std::fs::read_to_string(format!("{SCENARIOS}/{name}")).expect("scenario");
    let text = match expect {
        Some(code) => text.replace("[expect]", &code.to_string()),
        None => text,
    };
    let path = dir.join(format!("{}-{}", expect.unwrap_or(0), name));
    std::fs::write(&path, text).expect("write scenario");
    path
}

/// A sipp device answering MESSAGE with 200, logging one line per MESSAGE.
pub struct Device {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
    _tmp: TempDir,
}

impl Device {
    pub fn start(t: Transport) -> Device {
        require_sipp();
        let tmp = TempDir::new().expect("tempdir");
        let port = free_port();
        let log = tmp.path().join("device.log");
        let sf = scenario(tmp.path(), "device_uas.xml", None);
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&sf)
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                t.sipp(),
                "-nostdin",
                "-trace_logs",
            ])
            .arg("-log_file")
            .arg(&log)
            .current_dir(tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipp device");
        std::thread::sleep(Duration::from_millis(300));
        Device {
            child: Some(child),
            port,
            log,
            _tmp: tmp,
        }
    }

    pub fn contact(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop sipp (SIGINT makes it flush its log) and return the logged lines.
    pub fn finish(&mut self) -> Vec<String> {
        if let Some(c) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
            wait_or_kill(c, Duration::from_secs(5));
        }
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("MESSAGE "))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_or_kill(mut c: Child, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Run one sipp UAC call of `name` with `keys`; true if it got `expect`.
pub fn sipp_call(server: u16, t: Transport, name: &str, keys: &[(&str, &str)], expect: u16) -> bool {
    require_sipp();
    let tmp = TempDir::new().expect("tempdir");
    let sf = scenario(tmp.path(), name, Some(expect));
    let mut cmd = Command::new("sipp");
    cmd.arg(format!("127.0.0.1:{server}"))
        .arg("-sf")
        .arg(&sf)
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string(), "-t", t.sipp()])
        .args(["-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error", "-trace_err"])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in keys {
        cmd.args(["-key", k, v]);
    }
    let ok = cmd.status().expect("run sipp").success();
    if !ok {
        for entry in std::fs::read_dir(tmp.path()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with("errors.log") {
                eprintln!(
                    "sipp errors: {}",
                    std::fs::read_to_string(entry.path()).unwrap_or_default()
                );
            }
        }
    }
    ok
}

/// REGISTER `user` with a device contact; `expires` 0 removes it.
pub fn register(
    server: &Cpm,
    t: Transport,
    user: &str,
    contact: &str,
    instance: u32,
    expires: u32,
    expect: u16,
) -> bool {
    let instance = format!("{instance:012}");
    let expires = expires.to_string();
    let keys = [
        ("user", user),
        ("contact", contact),
        ("instance", instance.as_str()),
        ("expires", expires.as_str()),
    ];
    sipp_call(server.port(t), t, "register.xml", &keys, expect)
}

/// Send one pager-mode CPM Message from `from` to `to`; true if answered `expect`.
pub fn message(server: &Cpm, t: Transport, from: &str, to: &str, expect: u16) -> bool {
    sipp_call(
        server.port(t),
        t,
        "message_uac.xml",
        &[("from", from), ("to", to)],
        expect,
    )
}

/// Raw UDP: send bytes, return the first response (if any) within `wait`.
pub fn udp_exchange(sock: &UdpSocket, server: u16, data: &[u8], wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).expect("timeout");
    sock.send_to(data, ("127.0.0.1", server)).expect("send");
    let mut buf = vec![0u8; 65_535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

pub fn status_of(resp: &str) -> Option<u16> {
    resp.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}
