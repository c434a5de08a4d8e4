//! `exchange monitor`: run the national monitor until SIGTERM or Ctrl-C (the dashboard, the
//! JSON API and `/metrics` on `listen`), writing its last snapshot before it exits.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use exchange_monitor::MonitorConfig;
use tokio::signal::unix::{SignalKind, signal};

use crate::Failure;

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The monitor's configuration file, e.g. nodes/monitor.toml.
    #[arg(long)]
    config: PathBuf,
    /// Overrides `listen` of the configuration.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

pub fn run(args: MonitorArgs) -> Result<(), Failure> {
    let mut config = MonitorConfig::load(&args.config).map_err(anyhow::Error::from)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let monitor = exchange_monitor::start(config).await.context("starting the monitor")?;
        println!("monitor dashboard: {}", monitor.url());
        let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        monitor.shutdown().await.context("writing the last snapshot")?;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
