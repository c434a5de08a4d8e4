//! Starting and stopping a node: certificates, store, actors, peer links, gRPC server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use exchange_pki::{ParsedCertificates, RevocationList, TlsFiles};
use exchange_store::{Store, StoreConfig};
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::context::{Actors, Context, NodeContext, PendingReplies};
use crate::dispatch::{self, OUTBOUND_QUEUE_MAX};
use crate::error::NodeError;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::route::Shards;
use crate::services::{
    BUREAU_SERVICE, BureauService, EXCHANGE_SERVICE, ExchangeService, MONITOR_SERVICE, MonitorService,
};
use crate::supervisor::{Supervisor, SupervisorMsg};

/// Streams served at once on one HTTP/2 connection (per client), a bound on one peer's load.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 1_024;
/// Concurrent requests handled per connection before the server pushes back.
pub const REQUESTS_PER_CONNECTION_MAX: usize = 4_096;
/// How much longer than `rpc_timeout_ms` the server lets a call run before cancelling it, so
/// that handlers answer their own, clearer, DEADLINE_EXCEEDED first.
pub const SERVER_DEADLINE_MARGIN_MS: u64 = 500;

/// A node that is running.
#[derive(Debug)]
pub struct RunningNode {
    pub ctx: Context,
    /// Where the gRPC server listens (useful when the config asked for port 0).
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    supervisor: ActorRef<SupervisorMsg>,
}

impl RunningNode {
    /// Stops serving, stops the actors and flushes the store.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _already_stopped = shutdown.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        self.supervisor.stop(None);
        let peers: Vec<_> = self
            .ctx
            .peers
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        for peer in peers {
            peer.stop(None);
        }
        self.ctx.store.flush_blocking()?;
        Ok(())
    }
}

/// Opens the store, starts every part of the node and serves gRPC over mutual TLS.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    exchange_pki::install_crypto_provider();
    let paths = config.tls_paths();
    let server_files = TlsFiles {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        ca: paths.ca.clone(),
    };
    let server_tls = server_files.server_tls_config()?;
    let revocations = RevocationList::from_hex_serials(config.tls.revoked_serials.iter())?;
    std::fs::create_dir_all(&config.data_dir)?;
    let store_config = StoreConfig {
        cache_capacity_bytes: config.tuning.cache_mib.saturating_mul(1 << 20),
        ..StoreConfig::default()
    };
    let store = Store::open(&config.data_dir, &store_config)?;
    let mut peer_clients = BTreeMap::new();
    for peer in &config.peers {
        let tls = server_files.client_tls_config(peer.province)?;
        let client = crate::peer::peer_client(&peer.address, tls, config.tuning.rpc_timeout_ms)?;
        peer_clients.insert(peer.province, client);
    }
    let (outbound, outbound_receiver) = mpsc::channel(OUTBOUND_QUEUE_MAX);
    let ctx: Context = Arc::new(NodeContext {
        province: config.province,
        shards: Shards {
            accounts: config.tuning.account_shards,
            coordinators: config.tuning.coordinator_shards,
        },
        store,
        clock: Clock::start(),
        actors: RwLock::new(Actors::default()),
        peers: RwLock::new(BTreeMap::new()),
        outbound,
        pending: PendingReplies::default(),
        metrics: Metrics::new(),
        revocations,
        certificates: ParsedCertificates::default(),
        failure: Mutex::new(None),
        links: Mutex::new(BTreeMap::new()),
        peer_clients,
        config,
    });
    tokio::spawn(dispatch::run(ctx.clone(), outbound_receiver));
    // The supervisor starts the peer links and the core actors, and restarts any that fails.
    let (supervisor, _handle) = Actor::spawn(None, Supervisor, ctx.clone())
        .await
        .map_err(|error| NodeError::Actor(error.to_string()))?;

    let listener = TcpListener::bind(ctx.config.listen).await?;
    let addr = listener.local_addr()?;
    let (health_reporter, health) = exchange_proto::service::health_service();
    health_reporter
        .set_serving::<exchange_proto::pb::bureau_server::BureauServer<BureauService>>()
        .await;
    health_reporter
        .set_serving::<exchange_proto::pb::exchange_server::ExchangeServer<ExchangeService>>()
        .await;
    tokio::spawn(crate::context::report_failure_to_health(
        ctx.clone(),
        health_reporter.clone(),
    ));
    let reflection = exchange_proto::service::reflection_service()
        .map_err(|error| NodeError::Actor(format!("reflection: {error}")))?;
    // Deadline of every RPC served, a backstop: a handler waiting on the core answers
    // DEADLINE_EXCEEDED ("retry with the same id") at `rpc_timeout_ms`; the server cancels
    // whatever is still running `SERVER_DEADLINE_MARGIN_MS` later (tonic answers CANCELLED,
    // "Timeout expired"). A client's shorter `grpc-timeout` wins, a longer one does not. The
    // RPCs this node makes set theirs: peer batches and journal pages (`peer.rs`,
    // `records.rs`) send `rpc_timeout_ms` as `grpc-timeout`, which the client channel enforces
    // too; the bureau client (`client.rs`) has a channel-wide timeout.
    let timeout = Duration::from_millis(
        ctx.config
            .tuning
            .rpc_timeout_ms
            .saturating_add(SERVER_DEADLINE_MARGIN_MS),
    );
    // Every request is admitted against its caller's budget before its body is decoded.
    let admission = Admission::new(&ctx.config.tuning);
    let (shutdown, shutdown_receiver) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .tls_config(server_tls)?
        .timeout(timeout)
        .concurrency_limit_per_connection(REQUESTS_PER_CONNECTION_MAX)
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(health)
        .add_service(reflection)
        .add_service(InterceptedService::new(
            exchange_proto::service::exchange_server(ExchangeService {
                ctx: ctx.clone(),
                admission: admission.clone(),
            }),
            admission.interceptor(ctx.clone(), EXCHANGE_SERVICE),
        ))
        .add_service(InterceptedService::new(
            exchange_proto::service::bureau_server(BureauService {
                ctx: ctx.clone(),
                admission: admission.clone(),
            }),
            admission.interceptor(ctx.clone(), BUREAU_SERVICE),
        ))
        .add_service(InterceptedService::new(
            exchange_proto::service::monitor_server(MonitorService {
                ctx: ctx.clone(),
                admission: admission.clone(),
            }),
            admission.interceptor(ctx.clone(), MONITOR_SERVICE),
        ));
    // `Server::tcp_nodelay` applies only to listeners tonic binds itself: set it on ours, or
    // Nagle's algorithm holds back a response's last small write for the peer's delayed ACK
    // (a 40 ms stall of a node-to-node batch now and then, seen as the p999 at low load).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = shutdown_receiver.await;
    }));
    let metrics_addr = match ctx.config.metrics_listen {
        Some(listen) => Some(crate::http::serve_metrics(ctx.clone(), listen).await?),
        None => None,
    };
    tracing::info!(province = %ctx.province, %addr, "node serving");
    Ok(RunningNode {
        ctx,
        addr,
        metrics_addr,
        shutdown: Some(shutdown),
        server,
        supervisor,
    })
}
