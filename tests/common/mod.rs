//! Test harness: the real `cpm` binary on loopback ports it picks itself,
//! sipp as the peers (devices and senders), raw sockets for what sipp
//! cannot do (byte-identical retransmissions, malformed input).
#![allow(dead_code)]

pub mod digest;

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

/// sipp's words when the local port it was given is taken.
const SIPP_BIND_FAILED: &str = "Unable to bind";

/// What one attempt to start sipp on a local port came to.
enum Bound<T> {
    Done(T),
    /// sipp said its port was taken (`SIPP_BIND_FAILED`).
    PortTaken,
}

/// `attempt(port)` with ports from `free_port` until sipp binds one.
/// `free_port` cannot reserve the port it returns, so another process may
/// take it before sipp binds it: that, and only that, is tried again.
fn on_free_port<T>(what: &str, mut attempt: impl FnMut(u16) -> Bound<T>) -> T {
    for _ in 0..5 {
        match attempt(free_port()) {
            Bound::Done(t) => return t,
            Bound::PortTaken => eprintln!("{what}: its local port was taken; again with another"),
        }
    }
    panic!("{what} could not bind a local port in 5 tries");
}

/// Run a sipp UAC built by `cmd(local_port)` in `dir` until it ends; true on
/// success. A taken port is retried (`on_free_port`); any other failure
/// prints sipp's stderr and its error log (run it with `-trace_err`) for
/// the test's output.
fn run_sipp_uac(dir: &Path, mut cmd: impl FnMut(u16) -> Command) -> bool {
    on_free_port("sipp", |port| {
        let out = cmd(port)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run sipp");
        if out.status.success() {
            return Bound::Done(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains(SIPP_BIND_FAILED) {
            return Bound::PortTaken;
        }
        eprintln!("sipp failed ({}): {}", out.status, stderr.trim());
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with("errors.log") {
                eprintln!(
                    "sipp errors: {}",
                    std::fs::read_to_string(entry.path()).unwrap_or_default()
                );
            }
        }
        Bound::Done(false)
    })
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
    /// TLS port when the test added `--sip tls:...` (else 0).
    pub tls: u16,
    /// Admin API port (0 when started with `--admin off`).
    pub admin: u16,
    pub data: PathBuf,
    _tmp: Option<TempDir>,
    extra: Vec<String>,
    /// `ulimit -f` for the next (re)start, in bytes: a disk that fills up.
    pub file_size_limit: Option<u64>,
}

impl Cpm {
    pub fn start(extra: &[&str]) -> Cpm {
        Cpm::start_prepared(extra, |_| {})
    }

    /// Like [`Cpm::start`], but `prepare` runs on the fresh data directory
    /// before the server starts (e.g. `cpm user add` for credentials).
    pub fn start_prepared(extra: &[&str], prepare: impl FnOnce(&Path)) -> Cpm {
        Cpm::launch(extra, prepare, None)
    }

    /// Like [`Cpm::start`], with the process's file-size limit (`ulimit -f`)
    /// at `bytes`: the store's log file runs into it as into a full disk.
    /// Clear `file_size_limit` before a restart to give the disk back.
    pub fn start_with_file_limit(extra: &[&str], bytes: u64) -> Cpm {
        Cpm::launch(extra, |_| {}, Some(bytes))
    }

    fn launch(extra: &[&str], prepare: impl FnOnce(&Path), file_size_limit: Option<u64>) -> Cpm {
        let tmp = TempDir::new().expect("tempdir");
        let data = tmp.path().join("data");
        prepare(&data);
        let mut cpm = Cpm {
            child: None,
            udp: 0,
            tcp: 0,
            tls: 0,
            admin: 0,
            data,
            _tmp: Some(tmp),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            file_size_limit,
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
        let mut command = Command::new(env!("CARGO_BIN_EXE_cpm"));
        if let Some(bytes) = self.file_size_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            // SAFETY: setrlimit is async-signal-safe; it only reads `limit`.
            unsafe {
                command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        let mut child = command
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
            // Admin API on a free port unless the test chose its own.
            .args(if self.extra.iter().any(|a| a == "--admin") {
                &[][..]
            } else {
                &["--admin", "127.0.0.1:0"][..]
            })
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn cpm");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let admin_off = self.extra.windows(2).any(|w| w[0] == "--admin" && w[1] == "off");
        let (mut u, mut t, mut a) = (0, 0, 0);
        while u == 0 || t == 0 || (a == 0 && !admin_off) {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("cpm exited before listening; log: {}", self.log()))
                .expect("read stdout");
            let port = |l: &str| l.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            if line.starts_with("listening udp:") {
                u = port(&line);
            } else if line.starts_with("listening tcp:") {
                t = port(&line);
            } else if line.starts_with("listening tls:") {
                // Printed before the admin line, so it is read by then.
                self.tls = port(&line);
            } else if line.starts_with("listening admin:") {
                a = port(&line);
            }
        }
        self.udp = u;
        self.tcp = t;
        self.admin = a;
        self.child = Some(child);
    }

    pub fn port(&self, t: Transport) -> u16 {
        match t {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
        }
    }

    /// The server's process id (None once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
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
        Device::start_scenario(t, "device_uas.xml", &[])
    }

    /// A device running another scenario of tests/sipp (with -key values).
    pub fn start_scenario(t: Transport, name: &str, keys: &[(&str, &str)]) -> Device {
        require_sipp();
        let tmp = TempDir::new().expect("tempdir");
        let log = tmp.path().join("device.log");
        let sf = scenario(tmp.path(), name, None);
        let stderr_path = tmp.path().join("stderr.txt");
        // A taken port is tried again (`on_free_port`).
        let (child, port) = on_free_port("sipp device", |port| {
            let stderr = std::fs::File::create(&stderr_path).expect("sipp stderr file");
            let mut cmd = Command::new("sipp");
            for (k, v) in keys {
                cmd.args(["-key", k, v]);
            }
            let mut child = cmd
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
                .stderr(stderr)
                .spawn()
                .expect("spawn sipp device");
            std::thread::sleep(Duration::from_millis(300));
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                if err.contains(SIPP_BIND_FAILED) {
                    return Bound::PortTaken;
                }
                panic!("sipp device exited at once ({status}): {}", err.trim());
            }
            Bound::Done((child, port))
        });
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

    /// The MESSAGE lines logged so far (sipp writes each line as it happens).
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("MESSAGE "))
            .map(str::to_string)
            .collect()
    }

    /// Wait until at least `n` MESSAGEs arrived (bounded), then a little
    /// longer so that an extra copy would show.
    pub fn wait_lines(&self, n: usize, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        while self.lines().len() < n && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        self.lines()
    }

    /// Stop sipp (SIGINT makes it flush its log) and return the logged lines.
    pub fn finish(&mut self) -> Vec<String> {
        if let Some(c) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
            wait_or_kill(c, Duration::from_secs(5));
        }
        self.lines()
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
    run_sipp_uac(tmp.path(), |port| {
        let mut cmd = Command::new("sipp");
        cmd.arg(format!("127.0.0.1:{server}"))
            .arg("-sf")
            .arg(&sf)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", t.sipp()])
            .args(["-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error", "-trace_err"]);
        for (k, v) in keys {
            cmd.args(["-key", k, v]);
        }
        cmd
    })
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
/// A device of `user` (instance `{user}-phone`) answering 200 to everything, registered for 600 s.
pub fn phone(cpm: &Cpm, user: &str) -> RawDevice {
    let dev = RawDevice::start(|_, _| 200);
    assert_eq!(
        dev.register(cpm, user, &format!("{user}-phone"), 600),
        Some(200),
        "register {user}"
    );
    dev
}

/// Register each of `devices` for `user` (CSeq 1, 2, ...; 600 s), asserting 200.
pub fn register_each(cpm: &Cpm, t: Transport, user: &str, devices: &[Device]) {
    for (i, d) in devices.iter().enumerate() {
        assert!(
            register(cpm, t, user, &d.contact(), i as u32 + 1, 600, 200),
            "register {user}'s device {i}"
        );
    }
}

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

/// Several pager-mode messages from one sipp run, one at a time in order
/// (Call-IDs `1-<pid>@...`, `2-<pid>@...`): true if every one got `expect`.
pub fn messages(server: &Cpm, t: Transport, from: &str, to: &str, n: u32, expect: u16, extra: &[&str]) -> bool {
    require_sipp();
    let tmp = TempDir::new().expect("tempdir");
    let sf = scenario(tmp.path(), "message_uac.xml", Some(expect));
    run_sipp_uac(tmp.path(), |port| {
        let mut cmd = Command::new("sipp");
        cmd.arg(format!("127.0.0.1:{}", server.port(t)))
            .arg("-sf")
            .arg(&sf)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", t.sipp()])
            .args([
                "-m",
                &n.to_string(),
                "-l",
                "1",
                "-r",
                "100",
                "-nostdin",
                "-timeout",
                "30s",
                "-timeout_error",
                "-trace_err",
            ])
            .args(["-key", "from", from, "-key", "to", to])
            .args(extra);
        cmd
    })
}

/// The call number sipp put in front of a Call-ID (`3-1234@127.0.0.1` → 3).
pub fn call_number(log_line: &str) -> u32 {
    log_line
        .split(' ')
        .nth(1)
        .and_then(|id| id.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A device written here on a plain UDP socket, for behaviour sipp cannot
/// script across calls: it answers the n-th MESSAGE with `answer(n)` and
/// keeps every request it got.
pub struct RawDevice {
    pub port: u16,
    sock: UdpSocket,
    got: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    responses: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawDevice {
    pub fn start(answer: impl Fn(usize, &str) -> u16 + Send + 'static) -> RawDevice {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let port = sock.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let responses = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, r, s) = (got.clone(), responses.clone(), stop.clone());
        let own = sock.try_clone().expect("clone socket");
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_535];
            let mut seen = std::collections::HashMap::<String, u16>::new();
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with("SIP/2.0 ") {
                    r.lock().expect("lock").push(text);
                    continue;
                }
                if !text.starts_with("MESSAGE ") && !text.starts_with("OPTIONS ") {
                    continue;
                }
                // A retransmission gets the same answer and is not counted twice.
                let branch = header(&text, "Via").unwrap_or_default();
                let code = match seen.get(&branch) {
                    Some(code) => *code,
                    None => {
                        let mut list = g.lock().expect("lock");
                        let code = answer(list.len() + 1, &text);
                        list.push(text.clone());
                        seen.insert(branch, code);
                        code
                    }
                };
                let _ = sock.send_to(response_to(&text, code).as_bytes(), from);
            }
        });
        RawDevice {
            port,
            sock: own,
            got,
            responses,
            stop,
            thread: Some(thread),
        }
    }

    /// Send a request from the device's own socket; wait for its final response.
    pub fn request(&self, server: u16, text: &str) -> Option<String> {
        let call_id = header(text, "Call-ID")?;
        self.sock.send_to(text.as_bytes(), ("127.0.0.1", server)).ok()?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let found = self
                .responses
                .lock()
                .expect("lock")
                .iter()
                .find(|r| {
                    header(r, "Call-ID").as_deref() == Some(call_id.as_str()) && status_of(r).is_some_and(|c| c >= 200)
                })
                .cloned();
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// REGISTER this device (from its own socket, so the server knows where it is).
    pub fn register(&self, server: &Cpm, user: &str, instance: &str, expires: u32) -> Option<u16> {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let reg = format!(
            "REGISTER sip:127.0.0.1:{s} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK{n}\r\n\
             From: <sip:{user}@127.0.0.1>;tag=r\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: reg-{instance}-{n}\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:{user}@127.0.0.1:{p}>;+g.oma.sip-im;+sip.instance=\"<urn:uuid:{instance}>\"\r\n\
             Expires: {expires}\r\nContent-Length: 0\r\n\r\n",
            s = server.udp,
            p = self.port,
        );
        status_of(&self.request(server.udp, &reg)?)
    }

    pub fn contact(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<String> {
        self.got.lock().expect("lock").clone()
    }

    /// Wait until at least `n` requests arrived (bounded).
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        while self.received().len() < n && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.received()
    }
}

impl Drop for RawDevice {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A notify-and-wait action document (docs/decisions.md) from `user`'s
/// device `dev` to `sip:deferred-messages@`: the final answer.
pub fn deferred_action(server: u16, dev: &RawDevice, user: &str, body: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let req = format!(
        "MESSAGE sip:deferred-messages@127.0.0.1:{server} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKact{n}\r\n\
         From: <sip:{user}@127.0.0.1>;tag=b\r\nTo: <sip:deferred-messages@127.0.0.1>\r\nCall-ID: act-{n}\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: application/vnd.cpm.deferred-action+xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        p = dev.port
    );
    dev.request(server, &req).expect("an answer to the action request")
}

/// The ids in a notify-and-wait list (`application/vnd.cpm.deferred-list+xml`).
pub fn listed_ids(notification: &str) -> Vec<u64> {
    body(notification)
        .split("<message id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next()?.parse().ok())
        .collect()
}

/// First value of a header in a raw message.
pub fn header(text: &str, name: &str) -> Option<String> {
    text.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

pub fn body(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A response to a raw request (all Vias, From, To with a tag, Call-ID, CSeq).
pub fn response_to(req: &str, code: u16) -> String {
    let mut out = format!("SIP/2.0 {code} Whatever\r\n");
    for line in req.split("\r\n\r\n").next().unwrap_or_default().lines().skip(1) {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
            "to" => out.push_str(&format!("{line};tag=dev\r\n")),
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// Run `cpm serve ARGS`, which must refuse to start; what it said on stderr.
pub fn serve_refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cpm"))
        .arg("serve")
        .args(args)
        .env_remove("CPM_ADMIN_TOKEN")
        .output()
        .expect("run cpm");
    assert!(!out.status.success(), "cpm serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config file with `text` in a temporary directory (kept alive by the TempDir).
pub fn config(text: &str) -> (TempDir, String) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("cpm.toml");
    std::fs::write(&path, text).expect("write config");
    let p = path.to_str().expect("utf-8 path").to_string();
    (dir, p)
}

/// Wait (bounded) until `done()` holds; returns whether it did.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
