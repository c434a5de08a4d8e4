//! The monitor's shared state (counted + live) behind short locks, its durable snapshot, and
//! the JSON views the API and the dashboard serve.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use exchange_core::Province;
use exchange_core::records::JournalEntry;
use exchange_proto::pb;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::MonitorConfig;
use crate::error::MonitorError;
use crate::live::{FeedState, Live, NodeLive};
use crate::state::{Aggregate, ClearingCell, Counted, FlowCell, SNAPSHOT_VERSION, parse_pair_key};

/// The snapshot's file name inside the data directory.
pub const SNAPSHOT_FILE: &str = "monitor-state.json";
/// A node whose feed has been down this long raises an alert.
pub const NODE_DOWN_GRACE_MS: i64 = 2_000;
/// A peer link down this long raises an alert.
pub const LINK_DOWN_GRACE_MS: i64 = 5_000;

/// Wall-clock milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere never poisons the monitor's view for good: the data stays usable.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct Inner {
    config: MonitorConfig,
    counted: Mutex<Counted>,
    live: Mutex<Live>,
    dirty: AtomicBool,
    snapshot_path: PathBuf,
    /// Serializes snapshot writes so an older one never replaces a newer one.
    writing: tokio::sync::Mutex<()>,
}

/// A cheap handle on the monitor's state.
#[derive(Debug, Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

/// An alert the operator sees on the page and in `/api/alerts`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Alert {
    /// `node_down`, `peer_link_down`, `holds_past_deadline`, `reconciliation_mismatch`,
    /// `abort_rate`, `invalid_feed_entries`.
    pub kind: String,
    pub severity: String,
    pub subject: String,
    pub message: String,
    pub since_ms: i64,
}

fn province_json(province: Province) -> Value {
    json!({"code": province.code(), "name": province.name(), "name_zh": province.name_zh()})
}

fn flow_json(key: &str, cell: &FlowCell) -> Option<Value> {
    let (from, to) = parse_pair_key(key)?;
    Some(json!({
        "from": from.code(), "from_name": from.name(),
        "to": to.code(), "to_name": to.name(),
        "amount_fen": cell.amount_fen(),
        "debit_fen": cell.debit_fen,
        "refund_fen": cell.refund_fen,
        "count": cell.count,
        "refund_count": cell.refund_count,
    }))
}

fn flows_json<'a>(cells: impl IntoIterator<Item = (&'a String, &'a FlowCell)>) -> Vec<Value> {
    cells
        .into_iter()
        .filter_map(|(key, cell)| flow_json(key, cell))
        .collect()
}

fn clearing_json(key: &str, cell: &ClearingCell, mismatch_since: Option<i64>) -> Option<Value> {
    let (payer, coordinator) = parse_pair_key(key)?;
    let difference = cell.payer_net_fen() - cell.coordinator_net_fen();
    Some(json!({
        "payer": payer.code(), "payer_name": payer.name(),
        "coordinator": coordinator.code(), "coordinator_name": coordinator.name(),
        "payer_debit_fen": cell.payer_debit_fen,
        "payer_refund_fen": cell.payer_refund_fen,
        "payer_net_fen": i64::try_from(cell.payer_net_fen()).unwrap_or(i64::MAX),
        "coordinator_received_fen": cell.coordinator_received_fen,
        "coordinator_refunded_fen": cell.coordinator_refunded_fen,
        "coordinator_net_fen": i64::try_from(cell.coordinator_net_fen()).unwrap_or(i64::MAX),
        "difference_fen": i64::try_from(difference).unwrap_or(i64::MAX),
        "reconciled": cell.reconciled(),
        "mismatch_since_ms": mismatch_since,
    }))
}

/// Net positions between every unordered pair: what each paid for the other's patients.
fn positions_json(clearing: &std::collections::BTreeMap<String, ClearingCell>) -> Vec<Value> {
    let mut pairs: std::collections::BTreeMap<(Province, Province), (i128, i128)> = std::collections::BTreeMap::new();
    for (key, cell) in clearing {
        let Some((payer, coordinator)) = parse_pair_key(key) else {
            continue;
        };
        let (a, b) = if payer <= coordinator {
            (payer, coordinator)
        } else {
            (coordinator, payer)
        };
        let entry = pairs.entry((a, b)).or_default();
        if payer == a {
            entry.0 += cell.payer_net_fen();
        } else {
            entry.1 += cell.payer_net_fen();
        }
    }
    pairs
        .into_iter()
        .map(|((a, b), (a_paid, b_paid))| {
            let net = a_paid - b_paid;
            json!({
                "a": a.code(), "a_name": a.name(), "b": b.code(), "b_name": b.name(),
                "a_paid_for_b_fen": i64::try_from(a_paid).unwrap_or(i64::MAX),
                "b_paid_for_a_fen": i64::try_from(b_paid).unwrap_or(i64::MAX),
                // Positive: b's fund owes a's; negative: a's owes b's.
                "net_fen": i64::try_from(net).unwrap_or(i64::MAX),
            })
        })
        .collect()
}

impl Shared {
    /// Loads the durable state from the data directory (empty when there is none yet).
    pub fn open(config: MonitorConfig) -> Result<Shared, MonitorError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let snapshot_path = config.data_dir.join(SNAPSHOT_FILE);
        let aggregate = load_snapshot(&snapshot_path)?;
        let now = now_ms();
        let mut live = Live::default();
        for node in &config.nodes {
            live.nodes
                .insert(node.province, NodeLive::new(node.province, &node.address, now));
        }
        Ok(Shared {
            inner: Arc::new(Inner {
                config,
                counted: Mutex::new(Counted::from_aggregate(aggregate)),
                live: Mutex::new(live),
                dirty: AtomicBool::new(false),
                snapshot_path,
                writing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.inner.config
    }

    pub fn cursor(&self, province: Province) -> u64 {
        lock(&self.inner.counted).cursor(province)
    }

    /// Counts a journal entry (once).
    pub fn apply_journal(&self, province: Province, seq: u64, entry: &JournalEntry) {
        if lock(&self.inner.counted).apply(province, seq, entry) {
            self.inner.dirty.store(true, Ordering::Release);
        }
        let now = now_ms();
        if let Some(node) = lock(&self.inner.live).nodes.get_mut(&province) {
            node.node_last_seq = node.node_last_seq.max(seq);
            node.last_event_ms = now;
        }
    }

    pub fn skip_invalid(&self, province: Province, seq: u64, detail: &str) {
        tracing::warn!(province = province.code(), seq, %detail, "invalid feed event skipped");
        lock(&self.inner.counted).skip_invalid(province, seq);
        self.inner.dirty.store(true, Ordering::Release);
    }

    pub fn apply_health(&self, province: Province, seq: u64, sample: &pb::HealthSample) {
        let now = now_ms();
        if let Some(node) = lock(&self.inner.live).nodes.get_mut(&province) {
            node.sample(seq, sample, now);
            node.last_event_ms = now;
        }
    }

    pub fn mark_up(&self, province: Province, status: &pb::NodeStatus) {
        let now = now_ms();
        if let Some(node) = lock(&self.inner.live).nodes.get_mut(&province) {
            node.set_state(FeedState::Up, now, String::new());
            node.incarnation = status.incarnation;
            node.node_last_seq = status.last_journal_seq;
            node.last_event_ms = now;
        }
    }

    pub fn mark_down(&self, province: Province, error: String) {
        let now = now_ms();
        if let Some(node) = lock(&self.inner.live).nodes.get_mut(&province) {
            node.set_state(FeedState::Down, now, error);
        }
    }

    /// Takes in a round of node metrics and updates which pairs disagree since when.
    pub fn tick(&self, scrapes: Vec<(Province, Option<crate::live::NodeMetrics>)>) {
        let now = now_ms();
        let mismatched: Vec<String> = lock(&self.inner.counted)
            .aggregate
            .clearing
            .iter()
            .filter(|(_, cell)| !cell.reconciled())
            .map(|(key, _)| key.clone())
            .collect();
        let mut live = lock(&self.inner.live);
        live.take_scrapes(scrapes, now);
        live.mismatch_since.retain(|key, _| mismatched.contains(key));
        for key in mismatched {
            live.mismatch_since.entry(key).or_insert(now);
        }
    }

    /// Writes the snapshot if anything was counted since the last one: the aggregate and the
    /// cursors in one file, written to a temporary name, fsynced, renamed over the old one,
    /// and the directory fsynced.
    pub async fn persist(&self) -> Result<(), MonitorError> {
        let _writing = self.inner.writing.lock().await;
        if !self.inner.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let bytes = {
            let counted = lock(&self.inner.counted);
            serde_json::to_vec(&counted.aggregate)
        }
        .map_err(|error| MonitorError::State {
            path: self.inner.snapshot_path.clone(),
            detail: error.to_string(),
        })?;
        let path = self.inner.snapshot_path.clone();
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|error| MonitorError::State {
                path: self.inner.snapshot_path.clone(),
                detail: error.to_string(),
            })?;
        if result.is_err() {
            // Try again next round.
            self.inner.dirty.store(true, Ordering::Release);
        }
        result
    }

    fn provinces(&self) -> Vec<Province> {
        let mut provinces: std::collections::BTreeSet<Province> =
            self.inner.config.nodes.iter().map(|node| node.province).collect();
        provinces.extend(lock(&self.inner.counted).provinces_seen());
        provinces.into_iter().collect()
    }

    /// `/api/flows`: the flow matrix all time and by period (`hour`, `day`, `month`, or all).
    pub fn flows_view(&self, granularity: Option<&str>) -> Value {
        let provinces: Vec<Value> = self.provinces().into_iter().map(province_json).collect();
        let counted = lock(&self.inner.counted);
        let aggregate = &counted.aggregate;
        let mut periods = serde_json::Map::new();
        for (name, buckets) in &aggregate.flows_by_period {
            if granularity.is_some_and(|wanted| wanted != name) {
                continue;
            }
            let list: Vec<Value> = buckets
                .iter()
                .rev()
                .map(|(label, cells)| json!({"period": label, "flows": flows_json(cells)}))
                .collect();
            periods.insert(name.clone(), Value::Array(list));
        }
        let total_fen: u64 = aggregate
            .flows
            .values()
            .map(FlowCell::amount_fen)
            .fold(0, u64::saturating_add);
        let total_count: u64 = aggregate
            .flows
            .values()
            .map(|cell| cell.count)
            .fold(0, u64::saturating_add);
        json!({
            "generated_ms": now_ms(),
            "unit": "fen",
            "direction": "from = paying (grantor's) province, to = patient's (coordinating) province",
            "period_clock": "UTC+8",
            "provinces": provinces,
            "total": flows_json(&aggregate.flows),
            "total_amount_fen": total_fen,
            "total_count": total_count,
            "periods": periods,
            "settlements": aggregate.settlements,
            "entries_by_kind": aggregate.entries_by_kind,
            "cursors": aggregate.cursors,
        })
    }

    /// `/api/clearing`: both sides of every pair, all time and by month, and net positions.
    pub fn clearing_view(&self) -> Value {
        let mismatch_since = lock(&self.inner.live).mismatch_since.clone();
        let counted = lock(&self.inner.counted);
        let aggregate = &counted.aggregate;
        let total: Vec<Value> = aggregate
            .clearing
            .iter()
            .filter_map(|(key, cell)| clearing_json(key, cell, mismatch_since.get(key).copied()))
            .collect();
        let months: Vec<Value> = aggregate
            .clearing_by_month
            .iter()
            .rev()
            .map(|(month, cells)| {
                let pairs: Vec<Value> = cells
                    .iter()
                    .filter_map(|(key, cell)| clearing_json(key, cell, None))
                    .collect();
                json!({"period": month, "pairs": pairs, "positions": positions_json(cells)})
            })
            .collect();
        json!({
            "generated_ms": now_ms(),
            "all_reconciled": aggregate.clearing.values().all(ClearingCell::reconciled),
            "total": total,
            "positions": positions_json(&aggregate.clearing),
            "months": months,
        })
    }

    /// `/api/health`: every node's feed, health sample, links and metrics.
    pub fn health_view(&self) -> Value {
        let now = now_ms();
        let cursors = lock(&self.inner.counted).aggregate.cursors.clone();
        let live = lock(&self.inner.live);
        let nodes: Vec<Value> = live
            .nodes
            .values()
            .map(|node| {
                let cursor = cursors.get(&node.province).copied().unwrap_or(0);
                let mut value = serde_json::to_value(node).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut value {
                    map.insert("up".into(), json!(node.state == FeedState::Up));
                    map.insert("cursor".into(), json!(cursor));
                    map.insert("lag_entries".into(), json!(node.node_last_seq.saturating_sub(cursor)));
                    map.insert(
                        "last_event_age_ms".into(),
                        json!(if node.last_event_ms > 0 {
                            Some(now.saturating_sub(node.last_event_ms))
                        } else {
                            None
                        }),
                    );
                    let oldest = node.oldest_hold_age(now);
                    map.insert("oldest_hold_age_ms".into(), json!(oldest.map(|(age, _)| age)));
                    map.insert("oldest_hold_age_exact".into(), json!(oldest.map(|(_, exact)| exact)));
                }
                value
            })
            .collect();
        let (released, committed) = live.resolved_in_window();
        let ms = |total: &[(f64, u64)], q: f64| crate::live::quantile(total, q).map(|s| s * 1_000.0);
        let oldest = live
            .nodes
            .values()
            .filter_map(|node| node.oldest_hold_age(now))
            .max_by_key(|(age, _)| *age);
        let mut outcomes: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for node in live.nodes.values() {
            if let Some(metrics) = &node.metrics {
                for (outcome, count) in &metrics.settlements_by_outcome {
                    let entry = outcomes.entry(outcome.clone()).or_default();
                    *entry = entry.saturating_add(*count);
                }
            }
        }
        json!({
            "generated_ms": now,
            "nodes": nodes,
            "all_up": live.nodes.values().all(|node| node.state == FeedState::Up),
            "holds_in_flight": live.nodes.values().map(|n| u64::from(n.holds_in_flight)).sum::<u64>(),
            "held_fen": live.nodes.values().map(|n| n.held_fen).fold(0, u64::saturating_add),
            "oldest_hold_age_ms": oldest.map(|(age, _)| age),
            "oldest_hold_age_exact": oldest.map(|(_, exact)| exact),
            "settlement_outcomes_since_node_start": outcomes,
            "holds_resolved_last_minute": {"released": released, "committed": committed},
            "latency_ms": {
                "count": live.latency_total_count,
                "p50": ms(&live.latency_total, 0.5),
                "p90": ms(&live.latency_total, 0.9),
                "p99": ms(&live.latency_total, 0.99),
                "cross_province": {
                    "count": live.cross_latency_total_count,
                    "p50": ms(&live.cross_latency_total, 0.5),
                    "p90": ms(&live.cross_latency_total, 0.9),
                    "p99": ms(&live.cross_latency_total, 0.99),
                },
            },
        })
    }

    /// `/api/outcomes`: settlement outcomes and why grantors did not pay, why settlements were
    /// re-planned and why legs aborted, from the nodes' counters (since each node's start),
    /// summed and per node.
    pub fn outcomes_view(&self) -> Value {
        type Counts = std::collections::BTreeMap<String, u64>;
        fn add(sum: &mut Counts, counts: &Counts) {
            for (key, count) in counts {
                let entry = sum.entry(key.clone()).or_default();
                *entry = entry.saturating_add(*count);
            }
        }
        let live = lock(&self.inner.live);
        let (mut outcomes, mut refusals, mut replans, mut aborts) =
            (Counts::new(), Counts::new(), Counts::new(), Counts::new());
        let mut nodes = Vec::new();
        for node in live.nodes.values() {
            let Some(metrics) = &node.metrics else {
                continue;
            };
            add(&mut outcomes, &metrics.settlements_by_outcome);
            add(&mut refusals, &metrics.grantor_refusals);
            add(&mut replans, &metrics.replan_reasons);
            add(&mut aborts, &metrics.legs_aborted);
            nodes.push(json!({
                "province": node.province, "name": node.name,
                "settlements_by_outcome": metrics.settlements_by_outcome,
                "grantor_refusals": metrics.grantor_refusals,
                "replan_reasons": metrics.replan_reasons,
                "legs_aborted": metrics.legs_aborted,
                "holds_resolved_by_outcome": metrics.holds_resolved_by_outcome,
            }));
        }
        json!({
            "generated_ms": now_ms(),
            "since": "each node's start",
            "settlements_by_outcome": outcomes,
            "grantor_refusals": refusals,
            "replan_reasons": replans,
            "legs_aborted": aborts,
            "nodes": nodes,
        })
    }

    /// `/api/alerts`: what needs an operator now.
    pub fn alerts(&self) -> Vec<Alert> {
        let now = now_ms();
        let config = &self.inner.config;
        let invalid = lock(&self.inner.counted).aggregate.invalid_entries;
        let live = lock(&self.inner.live);
        let mut alerts = Vec::new();
        for node in live.nodes.values() {
            let subject = format!("{} ({})", node.name, node.province);
            if node.state != FeedState::Up && now.saturating_sub(node.since_ms) >= NODE_DOWN_GRACE_MS {
                alerts.push(Alert {
                    kind: "node_down".into(),
                    severity: "critical".into(),
                    subject: subject.clone(),
                    message: format!(
                        "node unreachable since {} ms ago: {}",
                        now.saturating_sub(node.since_ms),
                        if node.last_error.is_empty() {
                            "no answer yet"
                        } else {
                            &node.last_error
                        }
                    ),
                    since_ms: node.since_ms,
                });
                continue;
            }
            for link in &node.peer_links {
                if let Some(since) = link.down_since_ms
                    && now.saturating_sub(since) >= LINK_DOWN_GRACE_MS
                {
                    alerts.push(Alert {
                        kind: "peer_link_down".into(),
                        severity: "warning".into(),
                        subject: format!("{} → {}", node.name, link.name),
                        message: format!("link {} with {} queued: {}", link.state, link.queued, link.last_error),
                        since_ms: since,
                    });
                }
            }
            if let Some((age, exact)) = node.oldest_hold_age(now) {
                let deadline = i64::try_from(config.hold_deadline_ms).unwrap_or(i64::MAX);
                if age > deadline {
                    let message = if exact {
                        format!(
                            "oldest of {} holds ({} fen) is {age} ms old, past the {} ms deadline",
                            node.holds_in_flight, node.held_fen, config.hold_deadline_ms
                        )
                    } else {
                        format!(
                            "{} holds ({} fen) in flight without a break for longer than the {} ms deadline",
                            node.holds_in_flight, node.held_fen, config.hold_deadline_ms
                        )
                    };
                    alerts.push(Alert {
                        kind: "holds_past_deadline".into(),
                        severity: "critical".into(),
                        subject,
                        message,
                        since_ms: now.saturating_sub(age).saturating_add(deadline),
                    });
                }
            }
        }
        let grace = i64::try_from(config.reconcile_grace_ms).unwrap_or(i64::MAX);
        for (key, since) in &live.mismatch_since {
            if now.saturating_sub(*since) > grace {
                let subject = parse_pair_key(key)
                    .map(|(payer, coordinator)| format!("{} → {}", payer.name(), coordinator.name()))
                    .unwrap_or_else(|| key.clone());
                alerts.push(Alert {
                    kind: "reconciliation_mismatch".into(),
                    severity: "critical".into(),
                    subject,
                    message: format!("payer and coordinator journals disagree for more than {grace} ms"),
                    since_ms: *since,
                });
            }
        }
        let (released, committed) = live.resolved_in_window();
        let resolved = released.saturating_add(committed);
        if resolved >= crate::live::ABORT_RATE_MIN_RESOLVED {
            let rate = released as f64 / resolved as f64;
            if rate > config.abort_rate_max {
                alerts.push(Alert {
                    kind: "abort_rate".into(),
                    severity: "warning".into(),
                    subject: "all nodes".into(),
                    message: format!(
                        "{:.0}% of holds released in the last minute ({released} of {resolved}); threshold {:.0}%",
                        rate * 100.0,
                        config.abort_rate_max * 100.0
                    ),
                    since_ms: now,
                });
            }
        }
        if invalid > 0 {
            alerts.push(Alert {
                kind: "invalid_feed_entries".into(),
                severity: "warning".into(),
                subject: "feeds".into(),
                message: format!("{invalid} feed entries did not convert and were skipped"),
                since_ms: now,
            });
        }
        alerts
    }

    /// Everything the dashboard draws, in one value (also sent on `/events`).
    pub fn overview(&self) -> Value {
        let throughput: Vec<Value> = lock(&self.inner.counted)
            .aggregate
            .throughput
            .iter()
            .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
            .collect();
        let latency: Vec<Value> = lock(&self.inner.live)
            .latency
            .iter()
            .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
            .collect();
        json!({
            "generated_ms": now_ms(),
            "flows": self.flows_view(Some("hour")),
            "health": self.health_view(),
            "clearing": self.clearing_view(),
            "outcomes": self.outcomes_view(),
            "alerts": self.alerts(),
            "series": {"throughput": throughput, "latency": latency},
        })
    }

    /// The monitor's own Prometheus text.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::new();
        let counted = lock(&self.inner.counted);
        let aggregate = &counted.aggregate;
        let _ = writeln!(
            text,
            "# HELP exchange_monitor_flow_fen Net fen paid by province `from` for patients of `to`."
        );
        let _ = writeln!(text, "# TYPE exchange_monitor_flow_fen gauge");
        for (key, cell) in &aggregate.flows {
            if let Some((from, to)) = parse_pair_key(key) {
                let _ = writeln!(
                    text,
                    "exchange_monitor_flow_fen{{from=\"{}\",to=\"{}\"}} {}",
                    from.code(),
                    to.code(),
                    cell.amount_fen()
                );
            }
        }
        let _ = writeln!(
            text,
            "# HELP exchange_monitor_flow_legs_total Debited legs from `from` for `to`."
        );
        let _ = writeln!(text, "# TYPE exchange_monitor_flow_legs_total counter");
        for (key, cell) in &aggregate.flows {
            if let Some((from, to)) = parse_pair_key(key) {
                let _ = writeln!(
                    text,
                    "exchange_monitor_flow_legs_total{{from=\"{}\",to=\"{}\"}} {}",
                    from.code(),
                    to.code(),
                    cell.count
                );
            }
        }
        let _ = writeln!(
            text,
            "# HELP exchange_monitor_settlements_total Settlements seen on their coordinator."
        );
        let _ = writeln!(text, "# TYPE exchange_monitor_settlements_total counter");
        let _ = writeln!(
            text,
            "exchange_monitor_settlements_total{{scope=\"all\"}} {}",
            aggregate.settlements.total
        );
        let _ = writeln!(
            text,
            "exchange_monitor_settlements_total{{scope=\"cross_province\"}} {}",
            aggregate.settlements.cross_province
        );
        let _ = writeln!(
            text,
            "# HELP exchange_monitor_clearing_difference_fen Payer net minus coordinator net, per pair."
        );
        let _ = writeln!(text, "# TYPE exchange_monitor_clearing_difference_fen gauge");
        for (key, cell) in &aggregate.clearing {
            if let Some((payer, coordinator)) = parse_pair_key(key) {
                let _ = writeln!(
                    text,
                    "exchange_monitor_clearing_difference_fen{{payer=\"{}\",coordinator=\"{}\"}} {}",
                    payer.code(),
                    coordinator.code(),
                    cell.payer_net_fen() - cell.coordinator_net_fen()
                );
            }
        }
        let _ = writeln!(
            text,
            "# HELP exchange_monitor_cursor Last journal sequence number counted, per node."
        );
        let _ = writeln!(text, "# TYPE exchange_monitor_cursor gauge");
        for (province, cursor) in &aggregate.cursors {
            let _ = writeln!(text, "exchange_monitor_cursor{{province=\"{province}\"}} {cursor}");
        }
        drop(counted);
        let live = lock(&self.inner.live);
        let _ = writeln!(
            text,
            "# HELP exchange_monitor_node_up 1 while the node's feed is connected."
        );
        let _ = writeln!(text, "# TYPE exchange_monitor_node_up gauge");
        for node in live.nodes.values() {
            let _ = writeln!(
                text,
                "exchange_monitor_node_up{{province=\"{}\"}} {}",
                node.province,
                u8::from(node.state == FeedState::Up)
            );
        }
        let _ = writeln!(
            text,
            "# HELP exchange_monitor_holds_in_flight Live holds per node, from its last sample."
        );
        let _ = writeln!(text, "# TYPE exchange_monitor_holds_in_flight gauge");
        for node in live.nodes.values() {
            let _ = writeln!(
                text,
                "exchange_monitor_holds_in_flight{{province=\"{}\"}} {}",
                node.province, node.holds_in_flight
            );
        }
        let _ = writeln!(
            text,
            "# HELP exchange_monitor_oldest_hold_age_ms Age of the oldest live hold per node (0: none)."
        );
        let _ = writeln!(text, "# TYPE exchange_monitor_oldest_hold_age_ms gauge");
        let now = now_ms();
        for node in live.nodes.values() {
            let _ = writeln!(
                text,
                "exchange_monitor_oldest_hold_age_ms{{province=\"{}\"}} {}",
                node.province,
                node.oldest_hold_age(now).map_or(0, |(age, _)| age)
            );
        }
        let mut refusals: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for metrics in live.nodes.values().filter_map(|node| node.metrics.as_ref()) {
            for (reason, count) in &metrics.grantor_refusals {
                let entry = refusals.entry(reason.as_str()).or_default();
                *entry = entry.saturating_add(*count);
            }
        }
        let _ = writeln!(
            text,
            "# HELP exchange_monitor_grantor_refusals Grantors who did not pay, by reason, summed over nodes (since each node's start)."
        );
        let _ = writeln!(text, "# TYPE exchange_monitor_grantor_refusals gauge");
        for (reason, count) in refusals {
            let _ = writeln!(text, "exchange_monitor_grantor_refusals{{reason=\"{reason}\"}} {count}");
        }
        drop(live);
        let _ = writeln!(text, "# HELP exchange_monitor_alerts Alerts active now.");
        let _ = writeln!(text, "# TYPE exchange_monitor_alerts gauge");
        let _ = writeln!(text, "exchange_monitor_alerts {}", self.alerts().len());
        text
    }
}

fn load_snapshot(path: &Path) -> Result<Aggregate, MonitorError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Aggregate::default()),
        Err(error) => return Err(error.into()),
    };
    let aggregate: Aggregate = serde_json::from_slice(&bytes).map_err(|error| MonitorError::State {
        path: path.to_path_buf(),
        detail: format!("unreadable ({error}); move it away to count from the start again"),
    })?;
    if aggregate.version != SNAPSHOT_VERSION {
        return Err(MonitorError::State {
            path: path.to_path_buf(),
            detail: format!("version {} (this build reads {SNAPSHOT_VERSION})", aggregate.version),
        });
    }
    Ok(aggregate)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MonitorError> {
    use std::io::Write as _;
    let temporary = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
