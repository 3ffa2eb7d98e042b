//! `cpm simulate`: the real engine in this process, N virtual users × M
//! devices that register, drop off and come back, and send pager-mode
//! messages with delivery and display report requests over loopback UDP or
//! the in-process memory transport. An invariant checker watches the run;
//! see docs/simulate.md.

mod device;
mod driver;
pub mod invariants;
mod report;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::config::Config;
use crate::ingress::Core;
use crate::server::{start, Listen, ServeOptions};
use crate::transport::MemoryTransport;

pub use crate::memory::rss;
pub use invariants::{Checker, ReportKind};
pub use report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimTransport {
    Udp,
    Memory,
}

/// What to simulate (the `cpm simulate` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct SimOptions {
    /// Virtual users.
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Devices per user.
    #[arg(long, default_value_t = 2)]
    pub devices: u32,
    /// Messages per second (0: register only).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of traffic after the registrations.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// udp (loopback sockets) or memory (in-process, for large N).
    #[arg(long, value_enum, default_value_t = SimTransport::Udp)]
    pub transport: SimTransport,
    /// Drop-off events per second: a random user loses one device, or all (then its messages are deferred).
    #[arg(long, default_value_t = 2.0)]
    pub churn: f64,
    /// Seconds a dropped device stays away before it registers again.
    #[arg(long, default_value_t = 3.0)]
    pub offline: f64,
    /// Seconds at most to wait at the end for deferred messages and reports.
    #[arg(long, default_value_t = 30.0)]
    pub drain: f64,
    /// Engine configuration (docs/configuration.md); domains, workers and
    /// the idle timeout are set from the other flags.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// `actors.idle_timeout_s` of the engine (user actors passivate after this).
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// After the run, wait up to this many seconds for every user actor to
    /// passivate, then measure the idle RSS per registered device.
    #[arg(long, default_value_t = 0.0)]
    pub settle: f64,
    /// Registrations in flight at once (beyond a few hundred, UDP devices
    /// start retransmitting while the engine flushes to disk).
    #[arg(long, default_value_t = 200)]
    pub window: usize,
    /// Engine worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Groups `sip:g{k}@sim.test` (0: none); group k's members are users
    /// k×S .. k×S+S-1 (wrapping), S the group size.
    #[arg(long, default_value_t = 0)]
    pub groups: u32,
    /// Members per group.
    #[arg(long, default_value_t = 5)]
    pub group_size: u32,
    /// Share of the messages sent to a group by one of its members (with --groups).
    #[arg(long, default_value_t = 0.2)]
    pub group_share: f64,
    /// Seconds within which a device reads what it got: its display report
    /// goes out after a random delay up to this (0: at once), so the sender
    /// may have left meanwhile (the report then waits for its device). A
    /// device that is away when its delay ends reads once it is back.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub read_delay: f64,
    /// Random seed (users and devices picked for messages and churn).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            users: 1000,
            devices: 2,
            rate: 100.0,
            duration: 10.0,
            transport: SimTransport::Udp,
            churn: 2.0,
            offline: 3.0,
            drain: 30.0,
            config: None,
            data: None,
            idle_timeout: None,
            settle: 0.0,
            window: 200,
            workers: 0,
            groups: 0,
            group_size: 5,
            group_share: 0.2,
            read_delay: 0.0,
            seed: 1,
            quiet: false,
        }
    }
}

#[derive(Debug, Error)]
pub enum SimError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("setup failed: {0}")]
    Setup(String),
    #[error("engine failed to start: {0}")]
    Engine(String),
}

/// The members of group `k` (user numbers, distinct, in order).
fn group_members(opts: &SimOptions, k: u32) -> Vec<u32> {
    let size = opts.group_size.min(opts.users);
    (0..size)
        .map(|i| (k as u64 * size as u64 + i as u64) as u32 % opts.users)
        .collect()
}

/// The engine's definition of group `k`.
fn group_config(opts: &SimOptions, k: u32) -> crate::config::GroupConfig {
    let members: Vec<String> = group_members(opts, k)
        .iter()
        .map(|u| format!("sip:u{u}@{}", device::DOMAIN))
        .collect();
    crate::config::GroupConfig {
        uri: format!("sip:g{k}@{}", device::DOMAIN),
        owner: members[0].clone(),
        max_size: members.len(),
        members,
        send_policy: Default::default(),
        membership: Default::default(),
    }
}

/// What the engine thread hands back once it serves.
struct Engine {
    core: Arc<Core>,
    memory: Option<Arc<MemoryTransport>>,
    udp: Option<std::net::SocketAddr>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Start the engine on its own thread (an actix System that keeps running
/// the sweepers) and wait until it serves.
fn start_engine(opts: &SimOptions, data: PathBuf) -> Result<Engine, SimError> {
    let mut config = match &opts.config {
        Some(path) => Config::load(path).map_err(|e| SimError::Options(format!("{e:#}")))?,
        None => Config::default(),
    };
    config.domains = vec![device::DOMAIN.to_string()];
    config.groups.extend((0..opts.groups).map(|k| group_config(opts, k)));
    config.actors.workers = opts.workers;
    if let Some(t) = opts.idle_timeout {
        config.actors.idle_timeout_s = t.max(1);
    }
    // Every virtual device shares one or a few source addresses: no per-source rate limit.
    let limits = crate::limits::Limits {
        rate: 0,
        ..Default::default()
    };
    let listen = match opts.transport {
        SimTransport::Udp => Listen::Udp(([127, 0, 0, 1], 0).into()),
        SimTransport::Memory => Listen::Memory(([127, 0, 0, 1], 5060).into()),
    };
    let serve = ServeOptions {
        listen: vec![listen],
        data,
        config,
        open: true,
        limits,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("sim-engine".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                match start(serve).await {
                    Ok(server) => {
                        let handles = (server.core.clone(), server.memory.clone(), server.udp.first().copied());
                        let _ = ready_tx.send(Ok(handles));
                        let _ = stop_rx.await;
                        if let Err(e) = server.core.env.store.flush().await {
                            tracing::error!(error = %e, "final flush failed");
                        }
                        server.stop();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                    }
                }
            });
        })
        .map_err(|e| SimError::Setup(format!("engine thread: {e}")))?;
    let (core, memory, udp) = ready_rx
        .recv()
        .map_err(|_| SimError::Engine("engine thread ended".into()))?
        .map_err(SimError::Engine)?;
    Ok(Engine {
        core,
        memory,
        udp,
        stop,
        thread,
    })
}

/// Run one simulation. `Ok` carries the report even when invariants were
/// violated (see [`Report::ok`]); `Err` means it could not run at all.
pub fn run(opts: &SimOptions) -> Result<Report, SimError> {
    if opts.users < 2 || opts.devices == 0 {
        return Err(SimError::Options("at least 2 users and 1 device each".into()));
    }
    if (opts.users as u64) * (opts.devices as u64) > u32::MAX as u64 / 2 {
        return Err(SimError::Options("too many devices".into()));
    }
    if opts.groups > 0 && opts.group_size < 2 {
        return Err(SimError::Options(
            "a group needs at least 2 members (--group-size)".into(),
        ));
    }
    if !(0.0..=1.0).contains(&opts.group_share) {
        return Err(SimError::Options("--group-share is a fraction from 0 to 1".into()));
    }
    if !(opts.read_delay >= 0.0 && opts.read_delay.is_finite()) {
        return Err(SimError::Options(
            "--read-delay is a number of seconds, 0 or more".into(),
        ));
    }
    let (data, temporary) = match &opts.data {
        Some(d) => (d.clone(), false),
        None => {
            // Unique per run, also for several runs in one process (tests).
            static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("cpm-sim-{}-{}-{n}", std::process::id(), cpm_actors::unix_now());
            let d = std::env::temp_dir().join(name);
            (d, true)
        }
    };
    let engine = start_engine(opts, data.clone())?;
    let result = driver::drive(opts, &engine);
    let _ = engine.stop.send(());
    let _ = engine.thread.join();
    if temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    result
}

/// Seconds (from a flag) as a Duration; negative and NaN count as zero.
fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 })
}
