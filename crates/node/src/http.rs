//! Plain-HTTP endpoints of a node: Prometheus `/metrics` and a liveness `/healthz`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt;

use crate::context::Context;
use crate::error::NodeError;

async fn metrics(State(ctx): State<Context>) -> String {
    let stats = ctx.store.stats();
    let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    ctx.metrics.store_flushes.set(gauge(stats.flushes));
    ctx.metrics
        .store_flush_micros_total
        .set(gauge(stats.flush_micros_total));
    ctx.metrics.store_flush_micros_max.set(gauge(stats.flush_micros_max));
    ctx.metrics.store_blob_files_synced.set(gauge(stats.blob_files_synced));
    let live = ctx.store.live_holds().unwrap_or_default();
    ctx.metrics.holds_in_flight.set(gauge(live.len() as u64));
    ctx.metrics
        .oldest_hold_age_ms
        .set(gauge(ctx.oldest_hold_age_ms(&live).unwrap_or(0)));
    ctx.metrics.settlements_in_flight.set(gauge(ctx.pending.len() as u64));
    ctx.metrics.render()
}

async fn healthz(State(ctx): State<Context>) -> (StatusCode, String) {
    match ctx.failure() {
        None => (StatusCode::OK, "serving\n".into()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not acknowledging: {reason}\n"),
        ),
    }
}

/// Serves `/metrics` and `/healthz` on `listen`; returns the bound address.
pub async fn serve_metrics(ctx: Context, listen: SocketAddr) -> Result<SocketAddr, NodeError> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(ctx);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(without_nagle(listener), app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    Ok(addr)
}

/// `listener` with `TCP_NODELAY` on every accepted connection, so small HTTP responses and SSE
/// events go out at once instead of waiting for the peer's delayed ACK.
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
    })
}
