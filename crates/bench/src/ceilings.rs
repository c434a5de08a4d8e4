//! The two ceilings the node is measured against on the same machine: bare mutual-TLS unary
//! gRPC on loopback (tonic-health's `Check` as the echo, client and server in this process,
//! `in_flight` calls at once on one HTTP/2 connection), and sled flushed write sets grouped
//! as the node groups them (`exchange_store::bench_batched_writes`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use exchange_core::Province;
use exchange_pki::{
    ExistingCa, PeerIdentity, PkiLayout, Validity, client_tls_config, init_dev_pki, load_ca, load_identity,
    server_tls_config,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::error::BenchError;
use crate::latency::{LatencySummary, summarize};

/// Most calls one echo worker makes (the run also stops at its deadline).
pub const ECHO_CALLS_PER_WORKER_MAX: u64 = 50_000_000;

/// The transport ceiling.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransportCeiling {
    pub in_flight: usize,
    pub calls: u64,
    pub failed: u64,
    pub seconds: f64,
    pub rpc_per_s: f64,
    pub latency: LatencySummary,
}

/// The storage ceiling.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageCeiling {
    pub batch: u64,
    pub writes: u64,
    pub flushes: u64,
    pub writes_per_s: f64,
    pub flush_ms_mean: f64,
    pub flush_ms_max: f64,
    /// Share of the run spent inside fsync.
    pub flush_share: f64,
}

/// Bare mTLS unary gRPC echo on loopback for `duration`, `in_flight` calls at once.
pub async fn transport_ceiling(
    dir: &Path,
    duration: Duration,
    in_flight: usize,
) -> Result<TransportCeiling, BenchError> {
    exchange_pki::install_crypto_provider();
    let province = Province::from_code(110_000).map_err(|e| BenchError::step("province", e))?;
    let validity = Validity::days_from(exchange_pki::time::OffsetDateTime::now_utc(), 2)
        .map_err(|e| BenchError::step("certificates", e))?;
    let certs = dir.join("echo-certs");
    init_dev_pki(&certs, &[province], validity, ExistingCa::Overwrite)
        .map_err(|e| BenchError::step("certificates", e))?;
    let ca_path = PkiLayout::ca_paths(&certs).cert;
    let pki = |e: exchange_pki::PkiError| BenchError::step("certificates", e);
    let node = PkiLayout::paths_of(&certs, PeerIdentity::Node(province));
    let bureau = PkiLayout::paths_of(&certs, PeerIdentity::Bureau(province));
    let server_tls = server_tls_config(
        load_identity(&node.cert, &node.key).map_err(pki)?,
        load_ca(&ca_path).map_err(pki)?,
    );
    let client_tls = client_tls_config(
        load_identity(&bureau.cert, &bureau.key).map_err(pki)?,
        load_ca(&ca_path).map_err(pki)?,
        province,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .tls_config(server_tls)
        .map_err(|e| BenchError::step("echo server", e))?
        .add_service(health)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stopped.await;
            },
        );
    let server = tokio::spawn(server);
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| BenchError::step("echo client", e))?
        .tls_config(client_tls)
        .map_err(|e| BenchError::step("echo client", e))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| BenchError::step("echo client", e))?;
    let client = HealthClient::new(channel);
    // Warm-up: one call, so the handshake is not in the figures.
    client
        .clone()
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(|e| BenchError::step("echo call", e))?;
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for _ in 0..in_flight.clamp(1, 4_096) {
        let mut client = client.clone();
        let failed = Arc::clone(&failed);
        workers.spawn(async move {
            let mut micros = Vec::new();
            for _ in 0..ECHO_CALLS_PER_WORKER_MAX {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                match client.check(HealthCheckRequest { service: String::new() }).await {
                    Ok(_) => micros.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX)),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            micros
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = workers.join_next().await {
        all.extend(joined.map_err(|e| BenchError::step("echo worker", e))?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let calls = u64::try_from(all.len()).unwrap_or(u64::MAX);
    Ok(TransportCeiling {
        in_flight,
        calls,
        failed: failed.load(Ordering::Relaxed),
        seconds,
        rpc_per_s: if seconds > 0.0 { calls as f64 / seconds } else { 0.0 },
        latency: summarize(all),
    })
}

/// sled flushed write sets (account, fence CAS, live hold, journal entry), `batch` to a flush.
pub fn storage_ceiling(dir: &Path, writes: u64, batch: u64) -> Result<StorageCeiling, BenchError> {
    let figures = exchange_store::bench_batched_writes(dir, writes, batch)?;
    let flushes = figures.flushes.max(1);
    let elapsed_micros = figures.elapsed_ms.saturating_mul(1_000).max(1);
    Ok(StorageCeiling {
        batch,
        writes: figures.writes,
        flushes: figures.flushes,
        writes_per_s: figures.writes_per_s,
        flush_ms_mean: figures.flush_micros_total as f64 / flushes as f64 / 1_000.0,
        flush_ms_max: figures.flush_micros_max as f64 / 1_000.0,
        flush_share: figures.flush_micros_total as f64 / elapsed_micros as f64,
    })
}
