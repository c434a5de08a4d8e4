//! `exchange start`: run one province node until SIGTERM or Ctrl-C, then stop gracefully.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use exchange_node::NodeConfig;
use tokio::signal::unix::{SignalKind, signal};

use crate::Failure;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The node's configuration file, e.g. nodes/500000-chongqing.toml.
    #[arg(long)]
    config: PathBuf,
    /// Overrides `data_dir` of the configuration.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides `certs_dir` of the configuration.
    #[arg(long)]
    certs_dir: Option<PathBuf>,
    /// Log one JSON object per line (overrides `[log] json`).
    #[arg(long)]
    json_logs: bool,
    /// Threads of the async runtime (overrides `[tuning] worker_threads`; 0: one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
}

fn init_logging(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // A second initialisation (tests in one process) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub fn run(args: StartArgs) -> Result<(), Failure> {
    let mut config = NodeConfig::load(&args.config).map_err(anyhow::Error::from)?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(dir) = args.certs_dir {
        config.certs_dir = dir;
    }
    if let Some(threads) = args.worker_threads {
        if threads > exchange_node::config::WORKER_THREADS_MAX {
            return Err(Failure::Input(anyhow::anyhow!(
                "--worker-threads must be 0 (one per core) to {}",
                exchange_node::config::WORKER_THREADS_MAX
            )));
        }
        config.tuning.worker_threads = threads;
    }
    init_logging(args.json_logs || config.log.json, &config.log.level);
    // One thread: a current-thread runtime, run by this thread, rather than a multi-thread
    // scheduler with one worker (which hands every wake-up from another thread, e.g. the
    // store's flusher, through its shared queue and keeps this thread idle).
    let mut builder = if config.tuning.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if config.tuning.worker_threads > 0 {
            builder.worker_threads(config.tuning.worker_threads);
        }
        builder
    };
    let runtime = builder.enable_all().build().context("tokio runtime")?;
    runtime.block_on(async move {
        let province = config.province;
        let node = exchange_node::start(config).await.context("starting the node")?;
        tracing::info!(%province, addr = %node.addr, metrics = ?node.metrics_addr, "started");
        let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: stopping"),
        }
        node.shutdown().await.context("stopping the node")?;
        tracing::info!("stopped; store flushed");
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
