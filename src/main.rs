use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cpm::admin::{self, cli as inspect};
use cpm::config::Config;
use cpm::server::{start, Listen, ServeOptions};

// glibc malloc spends ~20% of relay CPU in arena locks and consolidation
// (perf, docs/performance.md); mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: cpm::allocator::Allocator = cpm::allocator::Allocator;

#[derive(Parser)]
#[command(name = "cpm", version, about = "OMA CPM messaging server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Listener, repeatable: udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT (port 0 picks one; tls needs [tls] in --config).
        #[arg(long = "sip", value_name = "PROTO:HOST:PORT")]
        sip: Vec<Listen>,
        /// sled data directory.
        #[arg(long, default_value = "./cpm-data")]
        data: PathBuf,
        /// TOML configuration (docs/configuration.md).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Any user of a local domain may register and send without credentials.
        #[arg(long)]
        open: bool,
        /// Log filter (tracing EnvFilter syntax); RUST_LOG wins when set.
        #[arg(long, default_value = "info")]
        log: String,
        /// Admin HTTP API (docs/admin.md): HOST:PORT, or `off`.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT|off")]
        admin: String,
        /// Bearer token of the admin API (else CPM_ADMIN_TOKEN); required for a non-loopback --admin.
        #[arg(long, value_name = "TOKEN")]
        admin_token: Option<String>,
        /// Flood and overload limits (docs/overload.md).
        #[command(flatten)]
        limits: cpm::limits::Limits,
    },
    /// Run the engine with virtual users and check delivery invariants (docs/simulate.md).
    Simulate {
        #[command(flatten)]
        opts: cpm::simulate::SimOptions,
        /// Log filter of the engine (tracing EnvFilter syntax); RUST_LOG wins when set.
        #[arg(long, default_value = "error")]
        log: String,
    },
    /// Digest credentials of users (docs/auth.md); the server must be stopped.
    User {
        #[command(subcommand)]
        what: cpm::auth::cli::UserCommand,
    },
    /// Ask a running server's admin API and print readable tables.
    Inspect {
        #[command(subcommand)]
        what: inspect::What,
        /// Admin API base URL.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
        admin: String,
        /// Bearer token (else CPM_ADMIN_TOKEN).
        #[arg(long, global = true)]
        token: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let purge_ms = cpm::memory::tune_allocator();
    let (sip, data, config, open, log, admin, admin_token, limits) = match Cli::parse().command {
        Command::Serve {
            sip,
            data,
            config,
            open,
            log,
            admin,
            admin_token,
            limits,
        } => (sip, data, config, open, log, admin, admin_token, limits),
        Command::User { what } => return cpm::auth::cli::run(&what),
        Command::Simulate { opts, log } => return simulate(&opts, log),
        Command::Inspect { what, admin, token } => {
            let token = token.or_else(|| std::env::var("CPM_ADMIN_TOKEN").ok());
            return inspect::run(&what, &admin, token.as_deref());
        }
    };
    let admin = admin::parse_listen(&admin)
        .map_err(anyhow::Error::msg)?
        .map(|listen| admin::AdminOptions {
            listen,
            token: admin_token.or_else(|| std::env::var("CPM_ADMIN_TOKEN").ok()),
        });
    if let Some(a) = &admin {
        a.check()?;
    }
    let filter = std::env::var("RUST_LOG").unwrap_or(log);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
    tracing::debug!(purge_ms, "mimalloc arena purge delay");
    ignore_file_size_signal();
    let config = match config {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    };
    let listen = if sip.is_empty() {
        vec![
            Listen::Udp(([127, 0, 0, 1], 5060).into()),
            Listen::Tcp(([127, 0, 0, 1], 5060).into()),
        ]
    } else {
        sip
    };
    let opts = ServeOptions {
        listen,
        data,
        config,
        open,
        limits,
    };
    actix_rt::System::new().block_on(async move {
        let server = start(opts).await?;
        // Tests read these lines to learn the ports chosen for port 0.
        for a in &server.udp {
            println!("listening udp:{a}");
        }
        for a in &server.tcp {
            println!("listening tcp:{a}");
        }
        for a in &server.tls {
            println!("listening tls:{a}");
        }
        if let Some(opts) = admin {
            let bound = admin::start(opts, &server)?;
            println!("listening admin:{bound}");
        }
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        tracing::info!("shutting down");
        server.core.env.store.flush().await.context("final flush")?;
        Ok(())
    })
}

/// `cpm simulate`: prints the report; exits non-zero on any violation.
fn simulate(opts: &cpm::simulate::SimOptions, log: String) -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or(log);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
    let report = cpm::simulate::run(opts)?;
    print!("{report}");
    if !report.ok() {
        // A finding, not a failure of the tool: no error chain to show.
        eprintln!("cpm simulate: {} invariant violation(s)", report.violation_count);
        std::process::exit(1);
    }
    Ok(())
}

/// A write past the file-size limit (`ulimit -f`) kills the process with
/// SIGXFSZ by default, silently and mid-request. Ignored, the write fails
/// with EFBIG instead, which the store reports like a full disk: the request
/// is refused with 500 and `/health` says why (PostgreSQL does the same).
fn ignore_file_size_signal() {
    // SAFETY: installs the SIG_IGN disposition; no handler code runs.
    if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot ignore SIGXFSZ");
    }
}
