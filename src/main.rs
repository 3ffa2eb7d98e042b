use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cpm::config::Config;
use cpm::server::{start, Listen, ServeOptions};

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
        /// Listener, repeatable: udp:HOST:PORT or tcp:HOST:PORT (port 0 picks one).
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
    },
}

fn main() -> anyhow::Result<()> {
    let Command::Serve {
        sip,
        data,
        config,
        open,
        log,
    } = Cli::parse().command;
    let filter = std::env::var("RUST_LOG").unwrap_or(log);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
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
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        tracing::info!("shutting down");
        server.core.env.store.flush().await.context("final flush")?;
        Ok(())
    })
}
