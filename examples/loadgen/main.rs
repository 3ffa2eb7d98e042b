//! cpm's own SIP load generator: the traffic of `../shared/bench/pager.sh`
//! (U users with one device each, pager-mode CPIM MESSAGEs u[i] → u[i+1]),
//! open loop at a target rate over loopback UDP, from several sockets and
//! threads so that it is not the limit well above sipp's ~5,000 msg/s.
//! Its threads poll their sockets every `--poll-us` instead of blocking in
//! `recv`, so that neither the generator nor the server under test pays a
//! wake-up per datagram: on two shared cores the generator's own cost is
//! part of what every server is measured with.
//!
//!     cargo run --release --example loadgen -- --server 127.0.0.1:5060 \
//!         --users 1000 --messages 100000 --rate 20000 [--server-pids "PID ..."]
//!     cargo run --release --example loadgen -- --server 127.0.0.1:5060 \
//!         --ramp 2000,4000,6000 --step-secs 5 [--warmup-rate 4000]   # capacity search
//!
//! See docs/performance.md ("Capacity") for the figures and how they were run.

mod device;
mod histogram;
mod lanes;
mod register;
mod run;
mod sip;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Pager-mode SIP MESSAGE load generator (open loop, UDP)")]
struct Args {
    /// Server to load (UDP).
    #[arg(long, default_value = "127.0.0.1:5060")]
    server: SocketAddr,
    /// Users to register, each with one device.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Messages to send (single run).
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Offered rate, messages per second (single run).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Sender sockets, each with its own thread (lane).
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Device sockets (the users' contacts are spread over them).
    #[arg(long, default_value_t = 2)]
    devices: usize,
    /// Requests waiting for an answer beyond which a due send is skipped
    /// and counted as failed.
    #[arg(long, default_value_t = 20_000)]
    max_outstanding: i64,
    /// No final answer within this many milliseconds counts as failed.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Timer E: resend an unanswered MESSAGE after this many ms, doubling
    /// (sipp's retrans="500"); 0 disables retransmission.
    #[arg(long, default_value_t = 500)]
    t1_ms: u64,
    /// Send in ticks of this many ms (all messages due within a tick at
    /// once, like sipp with -timer_resol 1); 0 spaces them evenly.
    #[arg(long, default_value_t = 0.0)]
    tick_ms: f64,
    /// Each lane wakes every this many µs, reads what arrived and sends
    /// what is due; nobody blocks in `recv`, so the server's sends wake no
    /// one (a sleep overshoots by ~60 µs).
    #[arg(long, default_value_t = 200)]
    poll_us: u64,
    /// Server processes (space separated) whose user+system CPU to report
    /// per message, as pager.sh's SERVER_PIDS.
    #[arg(long, default_value = "", value_parser = parse_pids)]
    server_pids: Pids,
    /// Capacity search: comma-separated rates, stepped up until one fails
    /// (failures >= --max-fail-pct or p99 >= --max-p99-ms).
    #[arg(long, value_delimiter = ',')]
    ramp: Vec<f64>,
    /// Seconds of traffic per ramp step (messages = rate × seconds).
    #[arg(long, default_value_t = 5.0)]
    step_secs: f64,
    /// Keep stepping after a failing step (to see the whole curve).
    #[arg(long)]
    ramp_all: bool,
    /// Before the ramp, one step of --step-secs at this rate that is
    /// printed but not judged: a fresh server faults its memory in as it
    /// first uses it, which fails a first step that it passes warm. 0: none.
    #[arg(long, default_value_t = 0.0)]
    warmup_rate: f64,
    /// Repeat a failing ramp step this many times before concluding (a
    /// shared machine's noise fails single steps).
    #[arg(long, default_value_t = 1)]
    retries: u32,
    #[arg(long, default_value_t = 0.1)]
    max_fail_pct: f64,
    #[arg(long, default_value_t = 20.0)]
    max_p99_ms: f64,
    /// Measure the generator alone: target an in-process server that
    /// answers every request with 200 OK at once (ignores --server).
    #[arg(long)]
    self_test: bool,
    /// Print the worst response time of every window of this many ms of
    /// a step (when in the step the latency went up); 0 for none.
    #[arg(long, default_value_t = 0)]
    timeline_ms: u64,
    /// Label printed with every result line (e.g. the server's name).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Clone, Debug, Default)]
struct Pids(Vec<u32>);

fn parse_pids(s: &str) -> Result<Pids, std::num::ParseIntError> {
    s.split_whitespace().map(str::parse).collect::<Result<_, _>>().map(Pids)
}

/// A UDP socket with the largest receive buffer the kernel grants: bursts
/// of answers must not be dropped by the generator's own socket.
pub fn udp_socket(ip: &str) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let addr: SocketAddr = format!("{ip}:0").parse().map_err(std::io::Error::other)?;
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Summed utime+stime of `pids` (and of this process for none), µs; a
/// process that cannot be read counts 0.
fn cpu_us(pids: &[u32]) -> u64 {
    let one = |path: String| (cpm::workers::cpu_seconds_at(&path).unwrap_or(0.0) * 1e6).round() as u64;
    if pids.is_empty() {
        return one("/proc/self/stat".into());
    }
    pids.iter().map(|p| one(format!("/proc/{p}/stat"))).sum()
}

struct Report {
    rate: f64,
    ok: u64,
    failed: u64,
    p99_ms: f64,
}

fn step(args: &Args, lanes: &lanes::Lanes, run: u32, rate: f64, messages: u64) -> std::io::Result<Report> {
    let st = run::Step {
        server: args.server,
        run,
        rate,
        messages,
        users: args.users,
        timeout: Duration::from_millis(args.timeout_ms),
        max_outstanding: args.max_outstanding,
        t1: Duration::from_millis(args.t1_ms),
        tick: Duration::from_secs_f64(args.tick_ms.max(0.0) / 1000.0),
        window: Duration::from_millis(args.timeline_ms),
    };
    let (srv0, gen0) = (cpu_us(&args.server_pids.0), cpu_us(&[]));
    let o = lanes.run(st)?;
    let (srv1, gen1) = (cpu_us(&args.server_pids.0), cpu_us(&[]));
    let failed = o.failed();
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let q = |q: f64| o.hist.quantile(q) as f64 / 1000.0;
    let by_status: Vec<String> = o.failed_status.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    let label = if args.label.is_empty() {
        String::new()
    } else {
        format!("[{}] ", args.label)
    };
    println!(
        "{label}offered {rate:.0}/s x {messages}: achieved {:.0} msg/s, {} ok, {failed} failed \
         (status [{}], timeout {}, cap {}), {} retransmitted, late {}; ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}{}, \
         loadgen {:.1} us cpu/msg, max send lag {:.1} ms",
        o.ok as f64 / secs,
        o.ok,
        by_status.join(" "),
        o.timeouts,
        o.capped,
        o.retransmits,
        o.late,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        o.hist.max() as f64 / 1000.0,
        if args.server_pids.0.is_empty() {
            String::new()
        } else {
            format!(", server {:.1} us cpu/msg", (srv1 - srv0) as f64 / o.ok.max(1) as f64)
        },
        (gen1 - gen0) as f64 / messages.max(1) as f64,
        o.max_send_lag.as_secs_f64() * 1000.0,
    );
    if !o.worst_by_window.is_empty() {
        let worst: Vec<String> = o
            .worst_by_window
            .iter()
            .map(|us| format!("{:.0}", *us as f64 / 1000.0))
            .collect();
        println!(
            "{label}worst ms per {} ms window: {}",
            args.timeline_ms,
            worst.join(" ")
        );
    }
    if o.max_send_lag > Duration::from_millis(50) {
        println!(
            "warning: the generator fell {:.0} ms behind its schedule: the machine is overloaded, \
             and this step measures that too",
            o.max_send_lag.as_secs_f64() * 1000.0
        );
    }
    Ok(Report {
        rate,
        ok: o.ok,
        failed,
        p99_ms: q(0.99),
    })
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match real_main(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main(args: &Args) -> Result<bool, String> {
    let poll = Duration::from_micros(args.poll_us);
    if args.self_test {
        let sock = udp_socket("127.0.0.1").map_err(|e| format!("echo server: {e}"))?;
        let addr = sock.local_addr().map_err(|e| format!("echo server: {e}"))?;
        let echo = lanes::Lanes::start(&[], vec![sock], poll).map_err(|e| format!("echo server: {e}"))?;
        let args = Args {
            server: addr,
            self_test: false,
            server_pids: Pids::default(),
            ramp: args.ramp.clone(),
            label: args.label.clone(),
            ..*args
        };
        let r = real_main(&args);
        echo.stop();
        return r;
    }
    if args.users < 2 || args.senders == 0 || args.devices == 0 || args.rate <= 0.0 {
        return Err("need --users >= 2, --senders >= 1, --devices >= 1, --rate > 0".into());
    }
    let ip = args.server.ip().to_string();
    let devices = (0..args.devices)
        .map(|_| udp_socket(&ip))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("device sockets: {e}"))?;
    let contacts = devices
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("device sockets: {e}"))?;
    let socks = (0..args.senders)
        .map(|_| udp_socket(&ip))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sender sockets: {e}"))?;
    let lanes = lanes::Lanes::start(&socks, devices, poll).map_err(|e| format!("lanes: {e}"))?;
    let took = register::register_all(&socks[0], args.server, args.users, &contacts)?;
    println!("registered {} users in {:.2} s", args.users, took.as_secs_f64());
    let result = if args.ramp.is_empty() {
        let r = step(args, &lanes, 1, args.rate, args.messages).map_err(|e| e.to_string())?;
        Ok(r.failed == 0)
    } else {
        capacity(args, &lanes)
    };
    let received = lanes.received.load(std::sync::atomic::Ordering::Relaxed);
    lanes.stop();
    println!("devices received {received} MESSAGEs (retransmissions included)");
    result
}

/// Steps through `--ramp` and reports the highest rate that passed.
fn capacity(args: &Args, lanes: &lanes::Lanes) -> Result<bool, String> {
    let mut best = None;
    let mut run = 0;
    if args.warmup_rate > 0.0 {
        run += 1;
        println!("warm-up (not judged):");
        let messages = (args.warmup_rate * args.step_secs).round().max(1.0) as u64;
        step(args, lanes, run, args.warmup_rate, messages).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_secs(1));
    }
    'ramp: for &rate in &args.ramp {
        let messages = (rate * args.step_secs).round().max(1.0) as u64;
        for attempt in 0..=args.retries {
            run += 1;
            let r = step(args, lanes, run, rate, messages).map_err(|e| e.to_string())?;
            // Let the server finish retransmissions and sweeps of this step.
            std::thread::sleep(Duration::from_secs(1));
            let fail_pct = 100.0 * r.failed as f64 / (r.ok + r.failed).max(1) as f64;
            if fail_pct < args.max_fail_pct && r.p99_ms < args.max_p99_ms {
                best = Some(r.rate);
                continue 'ramp;
            }
            if attempt < args.retries {
                println!("step failed; repeating it");
            }
        }
        if !args.ramp_all {
            break;
        }
    }
    let label = if args.label.is_empty() {
        String::new()
    } else {
        format!("[{}] ", args.label)
    };
    match best {
        Some(r) => println!(
            "{label}capacity: {r:.0} msg/s (highest step with < {}% failed and p99 < {} ms)",
            args.max_fail_pct, args.max_p99_ms
        ),
        None => println!("{label}capacity: no step passed"),
    }
    Ok(best.is_some())
}
