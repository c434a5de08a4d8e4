//! One feed reader per node: connects with the monitor's certificate, asks for the journal
//! after the durable cursor, counts what arrives, and reconnects with backoff when the node
//! goes away. Also the metrics round: each node's `/metrics`, once a second.

use std::net::SocketAddr;
use std::time::Duration;

use exchange_core::Province;
use exchange_proto::{FeedItem, feed_event_from_wire, pb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::config::NodeEntry;
use crate::live::{NodeMetrics, parse_node_metrics};
use crate::shared::{Shared, now_ms};

/// First wait before reconnecting to a node; doubled up to [`RECONNECT_MAX_MS`].
pub const RECONNECT_INITIAL_MS: u64 = 200;
pub const RECONNECT_MAX_MS: u64 = 5_000;
/// Connecting to a node may take this long.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// A feed silent this long is dead (an idle node sends a health sample every second).
pub const FEED_SILENCE_MS: u64 = 5_000;
/// How often the metrics round runs.
pub const METRICS_EVERY_MS: u64 = 1_000;
/// One `/metrics` read may take this long.
pub const METRICS_TIMEOUT_MS: u64 = 800;
/// Largest HTTP response read.
pub const HTTP_RESPONSE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Follows one node forever.
pub async fn follow_node(shared: Shared, node: NodeEntry, tls: ClientTlsConfig) {
    let mut backoff_ms = RECONNECT_INITIAL_MS;
    loop {
        let (connected, error) = follow_once(&shared, &node, &tls).await;
        shared.mark_down(node.province, error);
        if connected {
            backoff_ms = RECONNECT_INITIAL_MS;
        }
        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = backoff_ms.saturating_mul(2).min(RECONNECT_MAX_MS);
    }
}

/// One connection: returns whether it got as far as the feed, and why it ended.
async fn follow_once(shared: &Shared, node: &NodeEntry, tls: &ClientTlsConfig) -> (bool, String) {
    let endpoint = match Endpoint::from_shared(format!("https://{}", node.address)) {
        Ok(endpoint) => endpoint,
        Err(error) => return (false, format!("bad address: {error}")),
    };
    let endpoint = match endpoint.tls_config(tls.clone()) {
        Ok(endpoint) => endpoint
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true),
        Err(error) => return (false, format!("tls: {error}")),
    };
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(error) => return (false, format!("connect: {error}")),
    };
    let mut client = exchange_proto::service::monitor_client(channel);
    let status = match tokio::time::timeout(
        Duration::from_millis(CONNECT_TIMEOUT_MS),
        client.status(pb::StatusRequest {}),
    )
    .await
    {
        Ok(Ok(status)) => status.into_inner(),
        Ok(Err(status)) => return (false, format!("status: {}", status.message())),
        Err(_) => return (false, "status: no answer in time".into()),
    };
    if status.province != node.province.code() {
        return (
            false,
            format!(
                "the node at {} is province {}, not {}",
                node.address,
                status.province,
                node.province.code()
            ),
        );
    }
    let after_seq = shared.cursor(node.province);
    let mut stream = match client.feed(pb::FeedRequest { after_seq }).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (false, format!("feed: {}", status.message())),
    };
    shared.mark_up(node.province, &status);
    tracing::info!(province = node.province.code(), after_seq, "following the node's feed");
    loop {
        let next = tokio::time::timeout(Duration::from_millis(FEED_SILENCE_MS), stream.message()).await;
        let event = match next {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => return (true, "the node ended the feed".into()),
            Ok(Err(status)) => return (true, format!("feed: {}", status.message())),
            Err(_) => return (true, format!("feed silent for {FEED_SILENCE_MS} ms")),
        };
        let seq = event.seq;
        let is_journal = matches!(event.event, Some(pb::feed_event::Event::Journal(_)));
        match feed_event_from_wire(event) {
            Ok((seq, FeedItem::Journal(entry))) => shared.apply_journal(node.province, seq, &entry),
            Ok((seq, FeedItem::Health(sample))) => shared.apply_health(node.province, seq, &sample),
            Err(error) if is_journal => shared.skip_invalid(node.province, seq, &error.to_string()),
            Err(error) => tracing::warn!(province = node.province.code(), %error, "invalid health sample"),
        }
    }
}

/// A plain HTTP/1.0 GET on loopback-grade networks: the status code and the body. Enough for
/// `/metrics` and the tests; bounded in time by the caller and in size here.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        response.extend_from_slice(chunk.get(..read).unwrap_or_default());
        if response.len() > HTTP_RESPONSE_MAX_BYTES {
            return Err(std::io::Error::other("response too large"));
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    Ok((code, body.to_string()))
}

async fn scrape(addr: SocketAddr) -> Option<NodeMetrics> {
    let read = tokio::time::timeout(Duration::from_millis(METRICS_TIMEOUT_MS), http_get(addr, "/metrics")).await;
    match read {
        Ok(Ok((200, body))) => Some(parse_node_metrics(&body, now_ms())),
        _ => None,
    }
}

/// The metrics round, forever.
pub async fn metrics_rounds(shared: Shared) {
    let mut interval = tokio::time::interval(Duration::from_millis(METRICS_EVERY_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let targets: Vec<(Province, Option<SocketAddr>)> = shared
            .config()
            .nodes
            .iter()
            .map(|node| (node.province, node.metrics))
            .collect();
        let mut scrapes = Vec::with_capacity(targets.len());
        let handles: Vec<_> = targets
            .into_iter()
            .map(|(province, addr)| {
                tokio::spawn(async move {
                    match addr {
                        Some(addr) => (province, scrape(addr).await),
                        None => (province, None),
                    }
                })
            })
            .collect();
        for handle in handles {
            if let Ok(result) = handle.await {
                scrapes.push(result);
            }
        }
        shared.tick(scrapes);
    }
}
