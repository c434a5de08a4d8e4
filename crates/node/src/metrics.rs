//! Prometheus metrics of a node (served at `/metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use exchange_core::effects::{Effects, Note};

type Labels = Vec<(String, String)>;

/// Every metric the node exports. Cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub settlements: Family<Labels, Counter>,
    pub settlement_latency_seconds: Histogram,
    pub holds_resolved: Family<Labels, Counter>,
    pub protocol_violations: Counter,
    pub client_requests: Family<Labels, Counter>,
    pub peer_messages_sent: Family<Labels, Counter>,
    pub peer_messages_dropped: Family<Labels, Counter>,
    pub peer_batches_failed: Family<Labels, Counter>,
    pub peer_link_up: Family<Labels, Gauge>,
    pub actor_restarts: Counter,
    pub holds_in_flight: Gauge,
    pub settlements_in_flight: Gauge,
    pub store_flushes: Gauge,
    pub store_flush_micros_total: Gauge,
    pub store_flush_micros_max: Gauge,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("exchange");
        let metrics = Metrics {
            settlements: Family::default(),
            settlement_latency_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            holds_resolved: Family::default(),
            protocol_violations: Counter::default(),
            client_requests: Family::default(),
            peer_messages_sent: Family::default(),
            peer_messages_dropped: Family::default(),
            peer_batches_failed: Family::default(),
            peer_link_up: Family::default(),
            actor_restarts: Counter::default(),
            holds_in_flight: Gauge::default(),
            settlements_in_flight: Gauge::default(),
            store_flushes: Gauge::default(),
            store_flush_micros_total: Gauge::default(),
            store_flush_micros_max: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "settlements",
            "Settlements decided, by outcome",
            metrics.settlements.clone(),
        );
        registry.register(
            "settlement_latency_seconds",
            "Time from a settlement request's arrival to its receipt",
            metrics.settlement_latency_seconds.clone(),
        );
        registry.register(
            "holds_resolved",
            "Holds resolved on this node",
            metrics.holds_resolved.clone(),
        );
        registry.register(
            "protocol_violations",
            "Messages that broke the protocol's rules",
            metrics.protocol_violations.clone(),
        );
        registry.register(
            "client_requests",
            "Bureau API requests, by method and result",
            metrics.client_requests.clone(),
        );
        registry.register(
            "peer_messages_sent",
            "Messages sent to peer nodes",
            metrics.peer_messages_sent.clone(),
        );
        registry.register(
            "peer_messages_dropped",
            "Messages dropped because a peer queue was full",
            metrics.peer_messages_dropped.clone(),
        );
        registry.register(
            "peer_batches_failed",
            "Node-to-node RPCs that failed",
            metrics.peer_batches_failed.clone(),
        );
        registry.register(
            "peer_link_up",
            "1 while the link to a peer works",
            metrics.peer_link_up.clone(),
        );
        registry.register(
            "actor_restarts",
            "Core actors restarted by the supervisor",
            metrics.actor_restarts.clone(),
        );
        registry.register(
            "holds_in_flight",
            "Live holds on this node's accounts",
            metrics.holds_in_flight.clone(),
        );
        registry.register(
            "settlements_in_flight",
            "Settlements waiting for their receipt",
            metrics.settlements_in_flight.clone(),
        );
        registry.register(
            "store_flushes",
            "Store flushes (fsync) since start",
            metrics.store_flushes.clone(),
        );
        registry.register(
            "store_flush_micros_total",
            "Time spent in store flushes",
            metrics.store_flush_micros_total.clone(),
        );
        registry.register(
            "store_flush_micros_max",
            "Longest store flush",
            metrics.store_flush_micros_max.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Counts what a handler reported.
    pub fn note_effects(&self, effects: &Effects) {
        for note in &effects.notes {
            match note {
                Note::SettlementDecided {
                    replanned, cash_only, ..
                } => {
                    let outcome = if *cash_only {
                        "cash_only"
                    } else if *replanned {
                        "replanned"
                    } else {
                        "committed"
                    };
                    self.settlements.get_or_create(&labels(&[("outcome", outcome)])).inc();
                }
                Note::HoldResolved { committed, .. } => {
                    let outcome = if *committed { "committed" } else { "released" };
                    self.holds_resolved
                        .get_or_create(&labels(&[("outcome", outcome)]))
                        .inc();
                }
                Note::ProtocolViolation { from, detail } => {
                    tracing::warn!(%from, %detail, "protocol violation");
                    self.protocol_violations.inc();
                }
            }
        }
    }

    pub fn client_request(&self, method: &str, result: &str) {
        self.client_requests
            .get_or_create(&labels(&[("method", method), ("result", result)]))
            .inc();
    }

    pub fn peer(&self, family: &Family<Labels, Counter>, peer: &str, count: u64) {
        family.get_or_create(&labels(&[("peer", peer)])).inc_by(count);
    }

    pub fn link_up(&self, peer: &str, up: bool) {
        self.peer_link_up
            .get_or_create(&labels(&[("peer", peer)]))
            .set(i64::from(up));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.push_str("# encoding failed\n");
        }
        text
    }
}
