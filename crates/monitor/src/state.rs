//! The aggregate the monitor keeps: what it has counted from every node's journal (durable,
//! with the per-node cursor in the same value so that a restart neither double counts nor
//! misses), and what it only observes live (feed health, node metrics).
//!
//! Architecture invariant: a journal entry is counted only if its sequence number is above
//! the node's cursor, and the cursor moves in the same step. The snapshot is this whole value
//! written at once, so the counted entries and the cursor can never disagree on disk.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use exchange_core::Province;
use exchange_core::records::{JournalEntry, JournalKind};
use serde::{Deserialize, Serialize};

/// Version of the snapshot format; a different version is refused at load.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Hour buckets kept (a week).
pub const HOUR_BUCKETS_MAX: usize = 7 * 24;
/// Day buckets kept (a bit more than a year).
pub const DAY_BUCKETS_MAX: usize = 400;
/// Month buckets kept (ten years).
pub const MONTH_BUCKETS_MAX: usize = 120;
/// Per-second throughput samples kept (ten minutes).
pub const THROUGHPUT_SECONDS_MAX: usize = 600;
/// Recently seen settlement keys kept to count each settlement once (all of a settlement's
/// coordinator-side entries are written together, so a short memory is enough).
pub const RECENT_SETTLEMENTS_MAX: usize = 8_192;
/// Offset of the periods' clock from UTC: periods are China Standard Time (UTC+8), as the
/// bureaus reconcile by local day and month.
pub const PERIOD_UTC_OFFSET_HOURS: i8 = 8;

/// A pair of provinces as the map key: `"<from>-<to>"` by code.
pub fn pair_key(from: Province, to: Province) -> String {
    format!("{}-{}", from.code(), to.code())
}

/// The provinces of a pair key, if it is one.
pub fn parse_pair_key(key: &str) -> Option<(Province, Province)> {
    let (from, to) = key.split_once('-')?;
    let from = Province::from_code(from.parse().ok()?).ok()?;
    let to = Province::from_code(to.parse().ok()?).ok()?;
    Some((from, to))
}

/// Money one province's accounts paid for another province's patients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCell {
    /// Debited on the paying province's accounts.
    pub debit_fen: u64,
    /// Credited back to them by refunds.
    pub refund_fen: u64,
    /// Debited legs.
    pub count: u64,
    /// Refund legs.
    pub refund_count: u64,
}

impl FlowCell {
    /// Net amount paid: debits less refunds (never below zero).
    pub fn amount_fen(&self) -> u64 {
        self.debit_fen.saturating_sub(self.refund_fen)
    }
}

/// Both sides' record of one (payer, coordinator) pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearingCell {
    /// Payer side: `Debit` with this coordinator as counterparty.
    pub payer_debit_fen: u64,
    /// Payer side: `RefundCredit` with this coordinator as counterparty.
    pub payer_refund_fen: u64,
    /// Coordinator side: `MutualAidReceived` from this payer.
    pub coordinator_received_fen: u64,
    /// Coordinator side: `MutualAidRefunded` to this payer.
    pub coordinator_refunded_fen: u64,
}

impl ClearingCell {
    pub fn payer_net_fen(&self) -> i128 {
        i128::from(self.payer_debit_fen) - i128::from(self.payer_refund_fen)
    }

    pub fn coordinator_net_fen(&self) -> i128 {
        i128::from(self.coordinator_received_fen) - i128::from(self.coordinator_refunded_fen)
    }

    pub fn reconciled(&self) -> bool {
        self.payer_net_fen() == self.coordinator_net_fen()
    }
}

/// Settlements seen on their coordinating node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementCounts {
    /// Settlements that moved money from any personal account.
    pub total: u64,
    /// Of those, settlements with at least one grantor in another province.
    pub cross_province: u64,
    /// By coordinating province code.
    pub by_coordinator: BTreeMap<u32, u64>,
}

/// One second of throughput, by the wall clock of the coordinating node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThroughputSample {
    pub second: i64,
    pub settlements: u64,
    pub cross_province: u64,
    pub cross_province_fen: u64,
}

/// Everything counted from the journals, with the cursors: the durable part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub version: u32,
    /// Last journal sequence number counted, by province code.
    pub cursors: BTreeMap<u32, u64>,
    /// All time, by pair key (payer → patient's province).
    pub flows: BTreeMap<String, FlowCell>,
    /// By granularity ("hour", "day", "month"), then period label, then pair key.
    pub flows_by_period: BTreeMap<String, BTreeMap<String, BTreeMap<String, FlowCell>>>,
    /// All time, by pair key (payer → coordinator).
    pub clearing: BTreeMap<String, ClearingCell>,
    /// By month label, then pair key.
    pub clearing_by_month: BTreeMap<String, BTreeMap<String, ClearingCell>>,
    pub settlements: SettlementCounts,
    /// Entries of each journal by kind (for the table of what was read).
    pub entries_by_kind: BTreeMap<String, u64>,
    pub throughput: VecDeque<ThroughputSample>,
    /// Feed events that did not convert (counted, skipped, alerted).
    pub invalid_entries: u64,
    /// Recently counted settlement keys (`<coordinator>:<id>`), oldest first.
    pub recent_settlements: VecDeque<String>,
    /// Recently counted cross-province settlement keys, oldest first.
    pub recent_cross: VecDeque<String>,
}

impl Default for Aggregate {
    fn default() -> Aggregate {
        Aggregate {
            version: SNAPSHOT_VERSION,
            cursors: BTreeMap::new(),
            flows: BTreeMap::new(),
            flows_by_period: BTreeMap::new(),
            clearing: BTreeMap::new(),
            clearing_by_month: BTreeMap::new(),
            settlements: SettlementCounts::default(),
            entries_by_kind: BTreeMap::new(),
            throughput: VecDeque::new(),
            invalid_entries: 0,
            recent_settlements: VecDeque::new(),
            recent_cross: VecDeque::new(),
        }
    }
}

/// The period labels of an instant: hour, day and month in China Standard Time.
pub fn period_labels(wall_ms: i64) -> (String, String, String) {
    let seconds = wall_ms.div_euclid(1_000);
    let offset = time::UtcOffset::from_hms(PERIOD_UTC_OFFSET_HOURS, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let at = time::OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset);
    let month = format!("{:04}-{:02}", at.year(), u8::from(at.month()));
    let day = format!("{month}-{:02}", at.day());
    let hour = format!("{day}T{:02}", at.hour());
    (hour, day, month)
}

fn remember(recent: &mut VecDeque<String>, seen: &mut HashSet<String>, key: String) -> bool {
    if seen.contains(&key) {
        return false;
    }
    seen.insert(key.clone());
    recent.push_back(key);
    while recent.len() > RECENT_SETTLEMENTS_MAX {
        if let Some(old) = recent.pop_front() {
            seen.remove(&old);
        }
    }
    true
}

fn prune<V>(map: &mut BTreeMap<String, V>, keep: usize) {
    while map.len() > keep {
        let Some(oldest) = map.keys().next().cloned() else {
            return;
        };
        map.remove(&oldest);
    }
}

fn kind_name(kind: JournalKind) -> &'static str {
    match kind {
        JournalKind::Credit => "credit",
        JournalKind::Debit => "debit",
        JournalKind::RefundCredit => "refund_credit",
        JournalKind::MutualAidReceived => "mutual_aid_received",
        JournalKind::MutualAidRefunded => "mutual_aid_refunded",
        JournalKind::TransferSent => "transfer_sent",
        JournalKind::TransferReceived => "transfer_received",
    }
}

/// The aggregate with its in-memory indexes (rebuilt from the aggregate at load).
#[derive(Debug, Default)]
pub struct Counted {
    pub aggregate: Aggregate,
    seen_settlements: HashSet<String>,
    seen_cross: HashSet<String>,
}

impl Counted {
    pub fn from_aggregate(aggregate: Aggregate) -> Counted {
        let seen_settlements = aggregate.recent_settlements.iter().cloned().collect();
        let seen_cross = aggregate.recent_cross.iter().cloned().collect();
        Counted {
            aggregate,
            seen_settlements,
            seen_cross,
        }
    }

    pub fn cursor(&self, province: Province) -> u64 {
        self.aggregate.cursors.get(&province.code()).copied().unwrap_or(0)
    }

    /// Counts one journal entry of `node` with sequence number `seq`, once: an entry at or
    /// below the cursor was counted before and is ignored. Returns whether it counted.
    pub fn apply(&mut self, node: Province, seq: u64, entry: &JournalEntry) -> bool {
        if seq <= self.cursor(node) {
            return false;
        }
        self.aggregate.cursors.insert(node.code(), seq);
        let kind_count = self
            .aggregate
            .entries_by_kind
            .entry(kind_name(entry.kind).to_string())
            .or_default();
        *kind_count = kind_count.saturating_add(1);
        let amount = entry.amount.fen();
        let counterparty = entry.counterparty;
        match entry.kind {
            JournalKind::Debit | JournalKind::RefundCredit => {
                let Some(coordinator) = counterparty else {
                    return true;
                };
                let debit = entry.kind == JournalKind::Debit;
                if coordinator != node {
                    self.add_flow(node, coordinator, entry.wall_ms, amount, debit);
                    self.add_clearing(node, coordinator, entry.wall_ms, |cell| {
                        if debit {
                            cell.payer_debit_fen = cell.payer_debit_fen.saturating_add(amount);
                        } else {
                            cell.payer_refund_fen = cell.payer_refund_fen.saturating_add(amount);
                        }
                    });
                } else if debit {
                    // A local leg: this node coordinated the settlement.
                    self.count_settlement(node, entry, false);
                }
            }
            JournalKind::MutualAidReceived | JournalKind::MutualAidRefunded => {
                let Some(payer) = counterparty else {
                    return true;
                };
                let received = entry.kind == JournalKind::MutualAidReceived;
                self.add_clearing(payer, node, entry.wall_ms, |cell| {
                    if received {
                        cell.coordinator_received_fen = cell.coordinator_received_fen.saturating_add(amount);
                    } else {
                        cell.coordinator_refunded_fen = cell.coordinator_refunded_fen.saturating_add(amount);
                    }
                });
                if received {
                    self.count_settlement(node, entry, payer != node);
                    if payer != node {
                        self.add_throughput(entry.wall_ms, |sample| {
                            sample.cross_province_fen = sample.cross_province_fen.saturating_add(amount);
                        });
                    }
                }
            }
            // A wallet transfer clears like a deduction: the grantor's province (payer) owes
            // the receiving one. Not a settlement, so not counted as one.
            JournalKind::TransferSent => {
                let Some(receiver) = counterparty.filter(|receiver| *receiver != node) else {
                    return true;
                };
                self.add_flow(node, receiver, entry.wall_ms, amount, true);
                self.add_clearing(node, receiver, entry.wall_ms, |cell| {
                    cell.payer_debit_fen = cell.payer_debit_fen.saturating_add(amount);
                });
            }
            JournalKind::TransferReceived => {
                let Some(payer) = counterparty.filter(|payer| *payer != node) else {
                    return true;
                };
                self.add_clearing(payer, node, entry.wall_ms, |cell| {
                    cell.coordinator_received_fen = cell.coordinator_received_fen.saturating_add(amount);
                });
            }
            JournalKind::Credit => {}
        }
        true
    }

    /// Skips an event that did not convert, moving the cursor past it (counted as invalid).
    pub fn skip_invalid(&mut self, node: Province, seq: u64) {
        if seq > self.cursor(node) {
            self.aggregate.cursors.insert(node.code(), seq);
            self.aggregate.invalid_entries = self.aggregate.invalid_entries.saturating_add(1);
        }
    }

    fn settlement_key(node: Province, entry: &JournalEntry) -> Option<String> {
        let id = entry
            .settlement
            .as_ref()
            .map(|id| id.as_str().to_string())
            .or_else(|| entry.leg.as_ref().map(|leg| leg.settlement().as_str().to_string()))?;
        Some(format!("{}:{id}", node.code()))
    }

    fn count_settlement(&mut self, coordinator: Province, entry: &JournalEntry, cross: bool) {
        let Some(key) = Counted::settlement_key(coordinator, entry) else {
            return;
        };
        let new = remember(
            &mut self.aggregate.recent_settlements,
            &mut self.seen_settlements,
            key.clone(),
        );
        if new {
            let counts = &mut self.aggregate.settlements;
            counts.total = counts.total.saturating_add(1);
            let by = counts.by_coordinator.entry(coordinator.code()).or_default();
            *by = by.saturating_add(1);
            self.add_throughput(entry.wall_ms, |sample| {
                sample.settlements = sample.settlements.saturating_add(1);
            });
        }
        if cross && remember(&mut self.aggregate.recent_cross, &mut self.seen_cross, key) {
            let counts = &mut self.aggregate.settlements;
            counts.cross_province = counts.cross_province.saturating_add(1);
            self.add_throughput(entry.wall_ms, |sample| {
                sample.cross_province = sample.cross_province.saturating_add(1);
            });
        }
    }

    fn add_throughput(&mut self, wall_ms: i64, change: impl FnOnce(&mut ThroughputSample)) {
        let second = wall_ms.div_euclid(1_000);
        let series = &mut self.aggregate.throughput;
        // Entries arrive roughly in time order per node; a late one lands in its own second.
        let position = series.iter().rposition(|sample| sample.second <= second);
        match position {
            Some(index) if series.get(index).is_some_and(|s| s.second == second) => {
                if let Some(sample) = series.get_mut(index) {
                    change(sample);
                }
            }
            _ => {
                let mut sample = ThroughputSample {
                    second,
                    ..ThroughputSample::default()
                };
                change(&mut sample);
                let at = position.map_or(0, |index| index.saturating_add(1));
                series.insert(at, sample);
            }
        }
        while series.len() > THROUGHPUT_SECONDS_MAX {
            series.pop_front();
        }
    }

    fn add_flow(&mut self, payer: Province, paid_for: Province, wall_ms: i64, amount: u64, debit: bool) {
        let key = pair_key(payer, paid_for);
        let change = |cell: &mut FlowCell| {
            if debit {
                cell.debit_fen = cell.debit_fen.saturating_add(amount);
                cell.count = cell.count.saturating_add(1);
            } else {
                cell.refund_fen = cell.refund_fen.saturating_add(amount);
                cell.refund_count = cell.refund_count.saturating_add(1);
            }
        };
        change(self.aggregate.flows.entry(key.clone()).or_default());
        let (hour, day, month) = period_labels(wall_ms);
        for (granularity, label, keep) in [
            ("hour", hour, HOUR_BUCKETS_MAX),
            ("day", day, DAY_BUCKETS_MAX),
            ("month", month, MONTH_BUCKETS_MAX),
        ] {
            let periods = self
                .aggregate
                .flows_by_period
                .entry(granularity.to_string())
                .or_default();
            change(periods.entry(label).or_default().entry(key.clone()).or_default());
            prune(periods, keep);
        }
    }

    fn add_clearing(
        &mut self,
        payer: Province,
        coordinator: Province,
        wall_ms: i64,
        change: impl Fn(&mut ClearingCell),
    ) {
        let key = pair_key(payer, coordinator);
        change(self.aggregate.clearing.entry(key.clone()).or_default());
        let (_, _, month) = period_labels(wall_ms);
        let months = &mut self.aggregate.clearing_by_month;
        change(months.entry(month).or_default().entry(key).or_default());
        prune(months, MONTH_BUCKETS_MAX);
    }

    /// Every province named anywhere in the counted state.
    pub fn provinces_seen(&self) -> BTreeSet<Province> {
        let mut provinces = BTreeSet::new();
        for key in self.aggregate.flows.keys().chain(self.aggregate.clearing.keys()) {
            if let Some((a, b)) = parse_pair_key(key) {
                provinces.insert(a);
                provinces.insert(b);
            }
        }
        provinces
    }
}

#[cfg(test)]
mod tests {
    use exchange_core::{Money, PersonId, SettlementId};

    use super::*;

    fn province(code: u32) -> Province {
        Province::from_code(code).unwrap()
    }

    fn entry(kind: JournalKind, amount: u64, counterparty: u32, settlement: &str) -> JournalEntry {
        JournalEntry {
            kind,
            wall_ms: 1_750_000_000_000,
            amount: Money::from_fen(amount).unwrap(),
            account: Some(PersonId::from_body("11000019700101001").unwrap()),
            leg: None,
            binding: None,
            settlement: Some(SettlementId::new(settlement).unwrap()),
            counterparty: Some(province(counterparty)),
            reference: None,
        }
    }

    #[test]
    fn an_entry_at_or_below_the_cursor_is_never_counted_twice() {
        let mut counted = Counted::default();
        let beijing = province(110000);
        let debit = entry(JournalKind::Debit, 500, 500000, "S-1");
        assert!(counted.apply(beijing, 1, &debit));
        assert!(!counted.apply(beijing, 1, &debit));
        assert!(counted.apply(beijing, 2, &entry(JournalKind::RefundCredit, 200, 500000, "S-1")));
        let cell = &counted.aggregate.flows["110000-500000"];
        assert_eq!(
            (cell.debit_fen, cell.refund_fen, cell.count, cell.amount_fen()),
            (500, 200, 1, 300)
        );
        let (hour, day, month) = period_labels(debit.wall_ms);
        assert_eq!(
            (hour.as_str(), day.as_str(), month.as_str()),
            ("2025-06-15T23", "2025-06-15", "2025-06")
        );
        assert_eq!(counted.aggregate.flows_by_period["day"][&day]["110000-500000"], *cell);
    }

    #[test]
    fn clearing_reconciles_when_both_sides_have_written() {
        let mut counted = Counted::default();
        counted.apply(province(110000), 1, &entry(JournalKind::Debit, 500, 500000, "S-1"));
        assert!(!counted.aggregate.clearing["110000-500000"].reconciled());
        counted.apply(
            province(500000),
            1,
            &entry(JournalKind::MutualAidReceived, 500, 110000, "S-1"),
        );
        counted.apply(
            province(500000),
            2,
            &entry(JournalKind::MutualAidReceived, 300, 510000, "S-1"),
        );
        assert!(counted.aggregate.clearing["110000-500000"].reconciled());
        assert_eq!(counted.aggregate.settlements.total, 1);
        assert_eq!(counted.aggregate.settlements.cross_province, 1);
        let restored = Counted::from_aggregate(counted.aggregate.clone());
        let mut restored = restored;
        restored.apply(province(500000), 3, &entry(JournalKind::Debit, 100, 500000, "S-1"));
        assert_eq!(
            restored.aggregate.settlements.total, 1,
            "the same settlement counts once"
        );
    }
}
