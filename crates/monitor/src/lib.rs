//! The national monitor (`exchange monitor`): reads every province node's journal feed with
//! the monitor certificate, keeps the national aggregate durable (flows, clearing, settlement
//! counts, each with the node's cursor in the same snapshot), observes health and node
//! metrics, and serves a dashboard, a JSON API, server-sent events and `/metrics`.
//!
//! Architecture invariant: the monitor decides nothing and writes nothing on the nodes; it
//! only reads their feeds and `/metrics`. Its counts come from the journals alone, so they can
//! be checked against them entry by entry.

// The monitor reads every node's feed and serves HTTP: no input may reach a panic.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

pub mod config;
pub mod error;
pub mod feed;
pub mod http;
pub mod live;
pub mod shared;
pub mod state;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use exchange_pki::{PeerIdentity, PkiLayout, client_tls_config, load_ca, load_identity};
use tokio::task::JoinHandle;

pub use config::{MonitorConfig, NodeEntry};
pub use error::MonitorError;
pub use feed::http_get;
pub use shared::{Alert, Shared};

/// How often the snapshot is written when something was counted.
pub const SNAPSHOT_EVERY_MS: u64 = 500;

/// A running monitor inside the current tokio runtime.
#[derive(Debug)]
pub struct MonitorHandle {
    /// Where the dashboard and the API answer.
    pub addr: SocketAddr,
    pub shared: Shared,
    tasks: Vec<JoinHandle<()>>,
}

impl MonitorHandle {
    /// The dashboard's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops every task and writes the last snapshot.
    pub async fn shutdown(self) -> Result<(), MonitorError> {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.persist().await
    }
}

/// Starts the monitor: loads its state, starts one feed reader per node, the metrics round,
/// the snapshot writer and the HTTP server. Returns once the HTTP server listens.
pub async fn start(config: MonitorConfig) -> Result<MonitorHandle, MonitorError> {
    exchange_pki::install_crypto_provider();
    let monitor_files = PkiLayout::paths_of(&config.certs_dir, PeerIdentity::Monitor);
    let ca_files = PkiLayout::ca_paths(&config.certs_dir);
    let identity = load_identity(&monitor_files.cert, &monitor_files.key)?;
    let ca = load_ca(&ca_files.cert)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Shared::open(config)?;
    let mut tasks = Vec::new();
    for node in shared.config().nodes.clone() {
        let tls = client_tls_config(identity.clone(), ca.clone(), node.province);
        tasks.push(tokio::spawn(feed::follow_node(shared.clone(), node, tls)));
    }
    tasks.push(tokio::spawn(feed::metrics_rounds(shared.clone())));
    let persister = shared.clone();
    tasks.push(tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(SNAPSHOT_EVERY_MS));
        loop {
            interval.tick().await;
            if let Err(error) = persister.persist().await {
                tracing::error!(%error, "monitor snapshot not written; retrying");
            }
        }
    }));
    let app = http::router(shared.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(error) = axum::serve(exchange_node::http::without_nagle(listener), app).await {
            tracing::error!(%error, "monitor HTTP server stopped");
        }
    }));
    Ok(MonitorHandle { addr, shared, tasks })
}

// ---------------------------------------------------------------------------------------
// For the demo and tests: a monitor over a `LocalCluster`.
// ---------------------------------------------------------------------------------------

/// The monitor configuration for the nodes of a local cluster (with their `/metrics` when
/// the cluster serves them), keeping state in `data_dir` and listening on `listen`.
pub fn config_for_cluster(
    cluster: &exchange_node::cluster::LocalCluster,
    data_dir: &Path,
    listen: SocketAddr,
) -> MonitorConfig {
    MonitorConfig {
        listen,
        data_dir: data_dir.to_path_buf(),
        certs_dir: cluster.certs_dir.clone(),
        hold_deadline_ms: config::HOLD_DEADLINE_MS_DEFAULT,
        abort_rate_max: config::ABORT_RATE_MAX_DEFAULT,
        reconcile_grace_ms: config::RECONCILE_GRACE_MS_DEFAULT,
        nodes: cluster
            .nodes
            .values()
            .map(|node| NodeEntry {
                province: node.province,
                address: node.addr.to_string(),
                metrics: node.metrics_addr,
            })
            .collect(),
    }
}

/// Starts a monitor in-process for a local cluster (the demo's way): state under
/// `<cluster dir>/monitor`, dashboard on `listen` (port 0: any free port). Print
/// `handle.url()` for the operator.
pub async fn spawn_for_cluster(
    cluster: &exchange_node::cluster::LocalCluster,
    listen: SocketAddr,
) -> Result<MonitorHandle, MonitorError> {
    start(config_for_cluster(cluster, &cluster.dir.join("monitor"), listen)).await
}
