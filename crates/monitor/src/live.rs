//! What the monitor observes live and does not persist: each node's feed connection, its
//! latest health sample, its Prometheus counters, the latency series, and when a pair of
//! provinces started to disagree.

use std::collections::{BTreeMap, VecDeque};

use exchange_core::Province;
use exchange_proto::pb;
use serde::Serialize;

/// Latency samples kept (one per metrics round: ten minutes).
pub const LATENCY_SAMPLES_MAX: usize = 600;
/// Window of the abort-rate alert.
pub const ABORT_WINDOW_MS: i64 = 60_000;
/// Fewer resolved holds than this in the window never raise the abort-rate alert.
pub const ABORT_RATE_MIN_RESOLVED: u64 = 10;

/// The feed connection to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedState {
    Connecting,
    Up,
    Down,
}

/// A peer link as a node last reported it.
#[derive(Clone, Debug, Serialize)]
pub struct LinkView {
    pub province: u32,
    pub name: String,
    pub state: String,
    pub queued: u32,
    pub last_error: String,
    /// Since when (monitor wall ms) the link has been other than connected.
    pub down_since_ms: Option<i64>,
}

/// One node as the monitor sees it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeLive {
    pub province: u32,
    pub name: String,
    pub name_zh: String,
    pub address: String,
    pub state: FeedState,
    /// Monitor wall ms when `state` last changed.
    pub since_ms: i64,
    pub last_error: String,
    pub incarnation: u32,
    /// The node's last journal sequence number, as it last told.
    pub node_last_seq: u64,
    /// Wall ms (node clock) of the last health sample, and when it arrived (monitor clock).
    pub last_sample_wall_ms: i64,
    pub last_event_ms: i64,
    pub holds_in_flight: u32,
    pub held_fen: u64,
    pub settlements_in_flight: u32,
    /// Since when (monitor wall ms) the node has had holds in flight without a break: an
    /// upper bound of the oldest hold's age, used only when the node does not report ages.
    pub holds_since_ms: Option<i64>,
    /// The oldest live hold's age as the node last reported it (`None`: no holds, or a node
    /// that does not report ages).
    pub oldest_hold_age_ms: Option<u64>,
    /// When (monitor wall ms) the oldest live hold was prepared, from the reported age.
    pub oldest_hold_since_ms: Option<i64>,
    pub peer_links: Vec<LinkView>,
    pub metrics: Option<NodeMetrics>,
}

/// The counters read from a node's `/metrics` (since the node's start).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeMetrics {
    pub settlements_by_outcome: BTreeMap<String, u64>,
    /// Coordinator: grantors of decided settlements who paid nothing, by reason.
    pub grantor_refusals: BTreeMap<String, u64>,
    /// Coordinator: reasons among the non-paying grantors of re-planned settlements.
    pub replan_reasons: BTreeMap<String, u64>,
    /// Participant: legs on the node's accounts that ended aborted, by reason.
    pub legs_aborted: BTreeMap<String, u64>,
    /// Settlements in which a grantor of another province paid or refused.
    pub cross_latency_buckets: Vec<(f64, u64)>,
    pub cross_latency_count: u64,
    pub holds_resolved_by_outcome: BTreeMap<String, u64>,
    pub latency_buckets: Vec<(f64, u64)>,
    pub latency_count: u64,
    pub store_flushes: u64,
    pub store_flush_micros_total: u64,
    pub scraped_ms: i64,
}

/// One latency sample: percentiles of settlements decided since the previous sample.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySample {
    pub at_ms: i64,
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The same for cross-province settlements only.
    pub cross_count: u64,
    pub cross_p50_ms: Option<f64>,
    pub cross_p99_ms: Option<f64>,
}

/// Everything live.
#[derive(Debug, Default)]
pub struct Live {
    pub nodes: BTreeMap<Province, NodeLive>,
    pub latency: VecDeque<LatencySample>,
    /// Sum over nodes of the latency histogram since the monitor started (bucket bound → count).
    pub latency_total: Vec<(f64, u64)>,
    pub latency_total_count: u64,
    /// The same for cross-province settlements.
    pub cross_latency_total: Vec<(f64, u64)>,
    pub cross_latency_total_count: u64,
    /// Per node, the previous scrape's cumulative latency buckets and resolved holds.
    pub previous: BTreeMap<Province, NodeMetrics>,
    /// (monitor wall ms, released, committed) deltas of holds resolved.
    pub resolved_window: VecDeque<(i64, u64, u64)>,
    /// Since when each pair key has disagreed (monitor wall ms).
    pub mismatch_since: BTreeMap<String, i64>,
}

impl NodeLive {
    pub fn new(province: Province, address: &str, now_ms: i64) -> NodeLive {
        NodeLive {
            province: province.code(),
            name: province.name().to_string(),
            name_zh: province.name_zh().to_string(),
            address: address.to_string(),
            state: FeedState::Connecting,
            since_ms: now_ms,
            last_error: String::new(),
            incarnation: 0,
            node_last_seq: 0,
            last_sample_wall_ms: 0,
            last_event_ms: 0,
            holds_in_flight: 0,
            held_fen: 0,
            settlements_in_flight: 0,
            holds_since_ms: None,
            oldest_hold_age_ms: None,
            oldest_hold_since_ms: None,
            peer_links: Vec::new(),
            metrics: None,
        }
    }

    /// The oldest live hold's age now, and whether it is exact (reported by the node) or an
    /// upper bound (time since the node last had no holds); `None` without holds.
    pub fn oldest_hold_age(&self, now_ms: i64) -> Option<(i64, bool)> {
        if self.holds_in_flight == 0 {
            return None;
        }
        match (self.oldest_hold_since_ms, self.holds_since_ms) {
            (Some(since), _) => Some((now_ms.saturating_sub(since).max(0), true)),
            (None, Some(since)) => Some((now_ms.saturating_sub(since).max(0), false)),
            (None, None) => None,
        }
    }

    pub fn set_state(&mut self, state: FeedState, now_ms: i64, error: String) {
        if self.state != state {
            self.state = state;
            self.since_ms = now_ms;
        }
        self.last_error = error;
    }

    /// Takes in a health sample.
    pub fn sample(&mut self, seq: u64, sample: &pb::HealthSample, now_ms: i64) {
        self.node_last_seq = self.node_last_seq.max(seq);
        self.last_sample_wall_ms = sample.wall_ms;
        self.holds_in_flight = sample.holds_in_flight;
        self.held_fen = sample.held_fen;
        self.settlements_in_flight = sample.settlements_in_flight;
        if sample.holds_in_flight == 0 {
            self.holds_since_ms = None;
        } else if self.holds_since_ms.is_none() {
            self.holds_since_ms = Some(now_ms);
        }
        self.oldest_hold_age_ms = sample.oldest_hold_age_ms.filter(|_| sample.holds_in_flight > 0);
        self.oldest_hold_since_ms = self
            .oldest_hold_age_ms
            .map(|age| now_ms.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)));
        let previous: BTreeMap<u32, Option<i64>> = self
            .peer_links
            .iter()
            .map(|link| (link.province, link.down_since_ms))
            .collect();
        self.peer_links = sample
            .peer_links
            .iter()
            .map(|link| {
                let state = pb::PeerLinkState::try_from(link.state).unwrap_or(pb::PeerLinkState::Unspecified);
                let connected = state == pb::PeerLinkState::Connected;
                let name = Province::from_code(link.province)
                    .map(|p| p.name().to_string())
                    .unwrap_or_else(|_| link.province.to_string());
                let down_since_ms = if connected {
                    None
                } else {
                    Some(previous.get(&link.province).copied().flatten().unwrap_or(now_ms))
                };
                LinkView {
                    province: link.province,
                    name,
                    state: match state {
                        pb::PeerLinkState::Connected => "connected",
                        pb::PeerLinkState::Connecting => "connecting",
                        pb::PeerLinkState::Disconnected => "disconnected",
                        pb::PeerLinkState::Unspecified => "unknown",
                    }
                    .to_string(),
                    queued: link.queued,
                    last_error: link.last_error.clone(),
                    down_since_ms,
                }
            })
            .collect();
    }
}

/// The quantile `q` of a cumulative histogram (upper bound → cumulative count), in the
/// histogram's unit, interpolated linearly inside the bucket.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last().map(|(_, count)| *count)?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower_bound = 0.0;
    let mut lower_count = 0u64;
    for (bound, count) in buckets {
        if *count as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower_bound);
            }
            let inside = count.saturating_sub(lower_count);
            if inside == 0 {
                return Some(*bound);
            }
            let fraction = (rank - lower_count as f64) / inside as f64;
            return Some(lower_bound + (bound - lower_bound) * fraction.clamp(0.0, 1.0));
        }
        lower_bound = *bound;
        lower_count = *count;
    }
    Some(lower_bound)
}

/// Parses the Prometheus text exposition of a node into the counters the monitor uses.
pub fn parse_node_metrics(text: &str, now_ms: i64) -> NodeMetrics {
    let mut metrics = NodeMetrics {
        scraped_ms: now_ms,
        ..NodeMetrics::default()
    };
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let label = |key: &str| -> Option<String> {
            labels.split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        let count = if value.is_finite() && value >= 0.0 {
            value as u64
        } else {
            0
        };
        let bucket_bound = || {
            label("le").and_then(|le| {
                if le == "+Inf" {
                    Some(f64::INFINITY)
                } else {
                    le.parse::<f64>().ok()
                }
            })
        };
        match name {
            "exchange_settlements_total" => {
                if let Some(outcome) = label("outcome") {
                    metrics.settlements_by_outcome.insert(outcome, count);
                }
            }
            "exchange_grantor_refusals_total" => {
                if let Some(reason) = label("reason") {
                    metrics.grantor_refusals.insert(reason, count);
                }
            }
            "exchange_replan_reasons_total" => {
                if let Some(reason) = label("reason") {
                    metrics.replan_reasons.insert(reason, count);
                }
            }
            "exchange_legs_aborted_total" => {
                if let Some(reason) = label("reason") {
                    metrics.legs_aborted.insert(reason, count);
                }
            }
            "exchange_cross_province_settlement_latency_seconds_bucket" => {
                if let Some(bound) = bucket_bound() {
                    metrics.cross_latency_buckets.push((bound, count));
                }
            }
            "exchange_cross_province_settlement_latency_seconds_count" => metrics.cross_latency_count = count,
            "exchange_holds_resolved_total" => {
                if let Some(outcome) = label("outcome") {
                    metrics.holds_resolved_by_outcome.insert(outcome, count);
                }
            }
            "exchange_settlement_latency_seconds_bucket" => {
                if let Some(bound) = bucket_bound() {
                    metrics.latency_buckets.push((bound, count));
                }
            }
            "exchange_settlement_latency_seconds_count" => metrics.latency_count = count,
            "exchange_store_flushes" => metrics.store_flushes = count,
            "exchange_store_flush_micros_total" => metrics.store_flush_micros_total = count,
            _ => {}
        }
    }
    for buckets in [&mut metrics.latency_buckets, &mut metrics.cross_latency_buckets] {
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    }
    metrics
}

/// Adds the increase of one node's cumulative histogram since its previous scrape into
/// `round` (bucket bound bits → count), remembering the bounds seen in `bounds`.
fn add_histogram_delta(
    round: &mut BTreeMap<u64, u64>,
    bounds: &mut Vec<f64>,
    current: &[(f64, u64)],
    previous: &[(f64, u64)],
) {
    for (index, (bound, count)) in current.iter().enumerate() {
        let before = previous
            .get(index)
            .filter(|(b, _)| b.to_bits() == bound.to_bits())
            .map_or(0, |(_, c)| *c);
        let entry = round.entry(bound.to_bits()).or_default();
        *entry = entry.saturating_add(delta(*count, before));
        if !bounds.iter().any(|b| b.to_bits() == bound.to_bits()) {
            bounds.push(*bound);
        }
    }
}

/// One round's summed histogram (sorted by bound), merged into the running `total`.
fn finish_round(round: &BTreeMap<u64, u64>, mut bounds: Vec<f64>, total: &mut Vec<(f64, u64)>) -> Vec<(f64, u64)> {
    bounds.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .map(|bound| (*bound, round.get(&bound.to_bits()).copied().unwrap_or(0)))
        .collect();
    // Merge into the running total (same bucket layout on every node of one build).
    for (bound, count) in &buckets {
        match total.iter_mut().find(|(b, _)| b.to_bits() == bound.to_bits()) {
            Some((_, sum)) => *sum = sum.saturating_add(*count),
            None => total.push((*bound, *count)),
        }
    }
    total.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    buckets
}

fn delta(current: u64, previous: u64) -> u64 {
    // A counter that went down belongs to a restarted node: everything since is new.
    if current >= previous {
        current - previous
    } else {
        current
    }
}

impl Live {
    /// Takes in one round of scrapes (`None`: the node's metrics did not answer).
    pub fn take_scrapes(&mut self, scrapes: Vec<(Province, Option<NodeMetrics>)>, now_ms: i64) {
        let mut round: BTreeMap<u64, u64> = BTreeMap::new();
        let mut bounds: Vec<f64> = Vec::new();
        let mut cross_round: BTreeMap<u64, u64> = BTreeMap::new();
        let mut cross_bounds: Vec<f64> = Vec::new();
        let (mut released, mut committed) = (0u64, 0u64);
        for (province, scrape) in scrapes {
            let Some(scrape) = scrape else {
                continue;
            };
            let previous = self.previous.get(&province).cloned().unwrap_or_default();
            add_histogram_delta(
                &mut round,
                &mut bounds,
                &scrape.latency_buckets,
                &previous.latency_buckets,
            );
            add_histogram_delta(
                &mut cross_round,
                &mut cross_bounds,
                &scrape.cross_latency_buckets,
                &previous.cross_latency_buckets,
            );
            let outcome =
                |metrics: &NodeMetrics, key: &str| metrics.holds_resolved_by_outcome.get(key).copied().unwrap_or(0);
            released = released.saturating_add(delta(outcome(&scrape, "released"), outcome(&previous, "released")));
            committed = committed.saturating_add(delta(outcome(&scrape, "committed"), outcome(&previous, "committed")));
            if let Some(node) = self.nodes.get_mut(&province) {
                node.metrics = Some(scrape.clone());
            }
            self.previous.insert(province, scrape);
        }
        let buckets = finish_round(&round, bounds, &mut self.latency_total);
        let cross = finish_round(&cross_round, cross_bounds, &mut self.cross_latency_total);
        self.latency_total_count = self.latency_total.last().map_or(0, |(_, c)| *c);
        self.cross_latency_total_count = self.cross_latency_total.last().map_or(0, |(_, c)| *c);
        let ms = |buckets: &[(f64, u64)], q: f64| quantile(buckets, q).map(|s| s * 1_000.0);
        self.latency.push_back(LatencySample {
            at_ms: now_ms,
            count: buckets.last().map_or(0, |(_, c)| *c),
            p50_ms: ms(&buckets, 0.5),
            p90_ms: ms(&buckets, 0.9),
            p99_ms: ms(&buckets, 0.99),
            cross_count: cross.last().map_or(0, |(_, c)| *c),
            cross_p50_ms: ms(&cross, 0.5),
            cross_p99_ms: ms(&cross, 0.99),
        });
        while self.latency.len() > LATENCY_SAMPLES_MAX {
            self.latency.pop_front();
        }
        self.resolved_window.push_back((now_ms, released, committed));
        while self
            .resolved_window
            .front()
            .is_some_and(|(at, _, _)| now_ms.saturating_sub(*at) > ABORT_WINDOW_MS)
        {
            self.resolved_window.pop_front();
        }
    }

    /// Released and committed holds in the alert window.
    pub fn resolved_in_window(&self) -> (u64, u64) {
        self.resolved_window
            .iter()
            .fold((0, 0), |(r, c), (_, released, committed)| {
                (r.saturating_add(*released), c.saturating_add(*committed))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_metrics_parse_and_quantiles_interpolate() {
        let text = "# HELP x\nexchange_settlements_total{outcome=\"committed\"} 7\n\
            exchange_holds_resolved_total{outcome=\"released\"} 2\n\
            exchange_settlement_latency_seconds_bucket{le=\"0.01\"} 5\n\
            exchange_settlement_latency_seconds_bucket{le=\"0.02\"} 10\n\
            exchange_settlement_latency_seconds_bucket{le=\"+Inf\"} 10\n";
        let metrics = parse_node_metrics(text, 0);
        assert_eq!(metrics.settlements_by_outcome["committed"], 7);
        assert_eq!(metrics.holds_resolved_by_outcome["released"], 2);
        let p50 = quantile(&metrics.latency_buckets, 0.5).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p90 = quantile(&metrics.latency_buckets, 0.9).unwrap();
        assert!((p90 - 0.018).abs() < 1e-9, "{p90}");
    }

    #[test]
    fn reasons_and_cross_province_latency_parse_and_sum_over_rounds() {
        let scrape = |refused: u64, cross_fast: u64, cross_all: u64| {
            parse_node_metrics(
                &format!(
                    "exchange_grantor_refusals_total{{reason=\"account_frozen\"}} {refused}\n\
                     exchange_replan_reasons_total{{reason=\"account_frozen\"}} {refused}\n\
                     exchange_legs_aborted_total{{reason=\"released\"}} 3\n\
                     exchange_settlement_latency_seconds_bucket{{le=\"0.01\"}} 9\n\
                     exchange_settlement_latency_seconds_bucket{{le=\"+Inf\"}} 9\n\
                     exchange_cross_province_settlement_latency_seconds_bucket{{le=\"0.01\"}} {cross_fast}\n\
                     exchange_cross_province_settlement_latency_seconds_bucket{{le=\"0.1\"}} {cross_all}\n\
                     exchange_cross_province_settlement_latency_seconds_bucket{{le=\"+Inf\"}} {cross_all}\n\
                     exchange_cross_province_settlement_latency_seconds_count {cross_all}\n"
                ),
                0,
            )
        };
        let first = scrape(2, 1, 4);
        assert_eq!(first.grantor_refusals["account_frozen"], 2);
        assert_eq!(first.replan_reasons["account_frozen"], 2);
        assert_eq!(first.legs_aborted["released"], 3);
        assert_eq!(first.cross_latency_count, 4);
        assert_eq!(first.cross_latency_buckets.len(), 3);
        let beijing = Province::from_code(110_000).unwrap();
        let mut live = Live::default();
        live.take_scrapes(vec![(beijing, Some(first))], 1_000);
        // The second round adds two slow cross-province settlements (deltas, not totals).
        live.take_scrapes(vec![(beijing, Some(scrape(2, 1, 6)))], 2_000);
        assert_eq!(live.cross_latency_total_count, 6);
        assert_eq!(
            live.latency_total_count, 9,
            "the all-settlements histogram did not move"
        );
        let last = live.latency.back().unwrap();
        assert_eq!((last.count, last.cross_count), (0, 2));
        let p50 = last.cross_p50_ms.unwrap();
        assert!(p50 > 10.0 && p50 <= 100.0, "{p50}");
    }

    #[test]
    fn oldest_hold_age_is_reported_not_guessed() {
        let beijing = Province::from_code(110_000).unwrap();
        let mut node = NodeLive::new(beijing, "x", 0);
        let sample = |holds: u32, oldest: Option<u64>| pb::HealthSample {
            holds_in_flight: holds,
            oldest_hold_age_ms: oldest,
            ..pb::HealthSample::default()
        };
        node.sample(1, &sample(0, None), 1_000);
        assert_eq!(node.oldest_hold_age(1_000), None, "no holds: no age");
        // Holds without a break for a long time, but the oldest live one is young: the age is
        // the node's, not the time since holds were last at zero.
        node.sample(2, &sample(3, Some(400)), 2_000);
        node.sample(3, &sample(3, Some(300)), 90_000);
        assert_eq!(node.oldest_hold_age(90_500), Some((800, true)));
        node.sample(4, &sample(0, Some(5)), 91_000);
        assert_eq!(node.oldest_hold_age(91_000), None);
        // A node that does not report ages: the upper bound, marked inexact.
        node.sample(5, &sample(2, None), 92_000);
        assert_eq!(node.oldest_hold_age(95_000), Some((3_000, false)));
    }
}
