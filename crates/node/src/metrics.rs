//! Prometheus metrics of a node (served at `/metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use exchange_core::Province;
use exchange_core::effects::{Effects, Note};
use exchange_core::ledger::Write;
use exchange_core::reason::Refusal;
use exchange_core::records::{Fence, Receipt};

type Labels = Vec<(String, String)>;

/// Every metric the node exports. Cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub settlements: Family<Labels, Counter>,
    pub settlement_latency_seconds: Histogram,
    /// Settlements in which a grantor of another province paid or refused.
    pub cross_province_settlement_latency_seconds: Histogram,
    /// Coordinator: grantors of decided settlements who paid nothing, by reason.
    pub grantor_refusals: Family<Labels, Counter>,
    /// Coordinator: the reasons among a re-planned settlement's grantors who did not pay.
    pub replan_reasons: Family<Labels, Counter>,
    /// Participant: legs on this node's accounts that ended aborted, by reason.
    pub legs_aborted: Family<Labels, Counter>,
    pub holds_resolved: Family<Labels, Counter>,
    pub protocol_violations: Counter,
    pub client_requests: Family<Labels, Counter>,
    pub peer_messages_sent: Family<Labels, Counter>,
    pub peer_messages_dropped: Family<Labels, Counter>,
    pub peer_batches_failed: Family<Labels, Counter>,
    pub peer_link_up: Family<Labels, Gauge>,
    pub actor_restarts: Counter,
    pub holds_in_flight: Gauge,
    pub oldest_hold_age_ms: Gauge,
    pub settlements_in_flight: Gauge,
    pub store_flushes: Gauge,
    pub store_flush_micros_total: Gauge,
    pub store_flush_micros_max: Gauge,
    pub store_blob_files_synced: Gauge,
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
            cross_province_settlement_latency_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            grantor_refusals: Family::default(),
            replan_reasons: Family::default(),
            legs_aborted: Family::default(),
            holds_resolved: Family::default(),
            protocol_violations: Counter::default(),
            client_requests: Family::default(),
            peer_messages_sent: Family::default(),
            peer_messages_dropped: Family::default(),
            peer_batches_failed: Family::default(),
            peer_link_up: Family::default(),
            actor_restarts: Counter::default(),
            holds_in_flight: Gauge::default(),
            oldest_hold_age_ms: Gauge::default(),
            settlements_in_flight: Gauge::default(),
            store_flushes: Gauge::default(),
            store_flush_micros_total: Gauge::default(),
            store_flush_micros_max: Gauge::default(),
            store_blob_files_synced: Gauge::default(),
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
            "cross_province_settlement_latency_seconds",
            "Time from a settlement request's arrival to its receipt, for settlements in which a grantor of another province paid or refused",
            metrics.cross_province_settlement_latency_seconds.clone(),
        );
        registry.register(
            "grantor_refusals",
            "Grantors of decided settlements (coordinated here) who paid nothing, by reason",
            metrics.grantor_refusals.clone(),
        );
        registry.register(
            "replan_reasons",
            "Reasons among the non-paying grantors of re-planned settlements (coordinated here)",
            metrics.replan_reasons.clone(),
        );
        registry.register(
            "legs_aborted",
            "Legs on this node's accounts that ended aborted, by reason (a refusal code, released, or aborted_before_prepare)",
            metrics.legs_aborted.clone(),
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
            "oldest_hold_age_ms",
            "Age of the oldest live hold on this node's accounts (0: none)",
            metrics.oldest_hold_age_ms.clone(),
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
        registry.register(
            "store_blob_files_synced",
            "sled blob files (log items over ~128 KiB) fsynced by flushes since start; expected 0",
            metrics.store_blob_files_synced.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Counts what a handler reported (called once its writes are applied).
    pub fn note_effects(&self, effects: &Effects) {
        for write in &effects.writes {
            match write {
                Write::Fence {
                    expected,
                    new: Fence::Aborted { refusal },
                    ..
                } => {
                    let reason = match (refusal, expected) {
                        (Some(refusal), _) => refusal.code(),
                        (None, Some(Fence::Prepared(_))) => "released",
                        (None, _) => "aborted_before_prepare",
                    };
                    self.legs_aborted.get_or_create(&labels(&[("reason", reason)])).inc();
                }
                Write::Settlement(record) => {
                    // Only at the decision (the record is rewritten by refunds later).
                    let replanned = effects.notes.iter().find_map(|note| match note {
                        Note::SettlementDecided {
                            settlement, replanned, ..
                        } if *settlement == record.receipt.settlement => Some(*replanned),
                        _ => None,
                    });
                    if let Some(replanned) = replanned {
                        self.note_refusals(&record.receipt, replanned);
                    }
                }
                _ => {}
            }
        }
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

    fn note_refusals(&self, receipt: &Receipt, replanned: bool) {
        for not_paying in &receipt.not_paying {
            let reason = labels(&[("reason", not_paying.reason.code())]);
            self.grantor_refusals.get_or_create(&reason).inc();
            if replanned && !matches!(not_paying.reason, Refusal::NotNeeded | Refusal::TooManyGrantors) {
                self.replan_reasons.get_or_create(&reason).inc();
            }
        }
    }

    /// Records a settlement's latency (seconds from request to receipt) on the coordinator
    /// `home`: in the cross-province histogram too when a grantor of another province paid
    /// or refused (not merely "not needed" or beyond the grantor cap).
    pub fn observe_settlement(&self, home: Province, receipt: &Receipt, seconds: f64) {
        self.settlement_latency_seconds.observe(seconds);
        if is_cross_province(home, receipt) {
            self.cross_province_settlement_latency_seconds.observe(seconds);
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

/// Whether a grantor of a province other than `home` took part in the settlement: paid part
/// of it, or refused (or timed out) rather than being not needed.
pub fn is_cross_province(home: Province, receipt: &Receipt) -> bool {
    receipt.mutual_aid.iter().any(|part| part.province != home)
        || receipt
            .not_paying
            .iter()
            .any(|n| n.province != home && !matches!(n.reason, Refusal::NotNeeded | Refusal::TooManyGrantors))
}
