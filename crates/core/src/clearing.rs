//! Clearing (清算) and reconciliation (对账) between provinces, computed from journals.
//!
//! Every cross-province deduction is written twice: the payer's node journals a `Debit` of its
//! grantor's account with the coordinating province as counterparty, and the coordinator's
//! node journals `MutualAidReceived` with the payer as counterparty, under the same leg id.
//! Refunds likewise: `RefundCredit` on the payer, `MutualAidRefunded` on the coordinator.
//! The payer's fund holds money the coordinator's province paid out at the counter, so the
//! payer owes the coordinator the net of its debits minus its refund credits.
//!
//! A wallet transfer enters clearing as a deduction the grantor's province owes the receiving
//! province: the grantor's node journals `TransferSent` when it decides COMMIT (the payer's
//! side, like a `Debit`: its fund keeps the grantor's debited money) and the receiving node
//! journals `TransferReceived` when it credits the relative (the other side, like
//! `MutualAidReceived`: its fund now owes the relative that money), both under the transfer's
//! credit leg. (The grantor's own `Debit` of the transfer's debit leg is local.)
//!
//! Pure functions over journal entries: the node feeds them its own journal and what the
//! peer's node returns for it, the simulator and tests feed them in-memory journals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::LegId;
use crate::records::{JournalEntry, JournalKind};
use crate::region::Province;

/// Mismatches listed in one reconciliation report; past this only the count grows.
pub const MISMATCHES_LISTED_MAX: usize = 1_000;

/// How far before a period a reconciliation also reads, so the other side's record of a leg
/// decided just inside the period is found even when its clock or its commit ran earlier.
pub const RECONCILE_GRACE_MS: i64 = 10 * 60 * 1_000;

/// What one province's journal says it paid for and received from one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// This province's accounts debited for the peer's patients (`Debit`, counterparty peer),
    /// and wallet transfers from this province's grantors to the peer's people (`TransferSent`).
    pub paid_for_peer_fen: u64,
    /// Refund credits back to this province's accounts from the peer (`RefundCredit`).
    pub refunded_by_peer_fen: u64,
    /// The peer's accounts debited for this province's patients (`MutualAidReceived`), and
    /// wallet transfers from the peer's grantors to this province's people (`TransferReceived`).
    pub received_from_peer_fen: u64,
    /// Refunds of that money back to the peer's accounts (`MutualAidRefunded`).
    pub returned_to_peer_fen: u64,
}

impl Position {
    /// What this province owes the peer, net: positive means this province pays the peer.
    /// (The peer's province paid its hospital for this province's money held here.)
    pub fn net_owed_to_peer_fen(&self) -> i128 {
        // Four u64 sums fit in i128 with room to spare: no operation here can overflow.
        let owes = i128::from(self.paid_for_peer_fen).saturating_sub(i128::from(self.refunded_by_peer_fen));
        let owed = i128::from(self.received_from_peer_fen).saturating_sub(i128::from(self.returned_to_peer_fen));
        owes.saturating_sub(owed)
    }

    fn add(&mut self, kind: JournalKind, fen: u64) {
        let slot = match kind {
            JournalKind::Debit | JournalKind::TransferSent => &mut self.paid_for_peer_fen,
            JournalKind::RefundCredit => &mut self.refunded_by_peer_fen,
            JournalKind::MutualAidReceived | JournalKind::TransferReceived => &mut self.received_from_peer_fen,
            JournalKind::MutualAidRefunded => &mut self.returned_to_peer_fen,
            JournalKind::Credit => return,
        };
        *slot = slot.saturating_add(fen);
    }
}

/// Whether `entry` is one side of a cross-province leg between `own` and its counterparty.
pub fn cross_province_peer(own: Province, entry: &JournalEntry) -> Option<Province> {
    match entry.kind {
        JournalKind::Credit => None,
        _ => entry.counterparty.filter(|peer| *peer != own),
    }
}

/// Adds one of `own`'s journal entries to its positions against its peers (entries that
/// are not cross-province change nothing). Lets a caller stream a journal of any length.
pub fn add_to_positions(own: Province, positions: &mut BTreeMap<Province, Position>, entry: &JournalEntry) {
    if let Some(peer) = cross_province_peer(own, entry) {
        positions.entry(peer).or_default().add(entry.kind, entry.amount.fen());
    }
}

/// Net positions of `own` against every peer, from `own`'s journal entries of a period.
pub fn positions<'a>(
    own: Province,
    entries: impl IntoIterator<Item = &'a JournalEntry>,
) -> BTreeMap<Province, Position> {
    let mut positions: BTreeMap<Province, Position> = BTreeMap::new();
    for entry in entries {
        add_to_positions(own, &mut positions, entry);
    }
    positions
}

/// Which money a leg record is about: a deduction or a refund credit-back, and who paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegRole {
    Deduction,
    Refund,
}

/// One leg as the two sides recorded it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sides {
    payer: Option<(i64, u64)>,
    coordinator: Option<(i64, u64)>,
}

/// Why one leg does not reconcile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum MismatchKind {
    /// The payer's node has no record of a leg its coordinator recorded (for this amount).
    MissingAtPayer { coordinator_fen: u64 },
    /// The coordinator's node has no record of a leg the payer recorded (for this amount).
    MissingAtCoordinator { payer_fen: u64 },
    /// Both recorded the leg with different amounts.
    AmountDiffers { payer_fen: u64, coordinator_fen: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub leg: LegId,
    pub role: LegRole,
    /// The province whose account paid (for a wallet transfer: the grantor's).
    pub payer: Province,
    /// The other side: the settlement's coordinator (for a wallet transfer: the receiving
    /// province, whose fund owes the relative the money).
    pub coordinator: Province,
    #[serde(flatten)]
    pub kind: MismatchKind,
}

/// The leg-by-leg comparison of two provinces' journals for a period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub legs_compared: u64,
    pub legs_matched: u64,
    /// `own`'s side of the period, as its own journal says.
    pub own_position: Position,
    /// The peer's side of the period, as the peer's journal says (seen from the peer).
    pub peer_position: Position,
    pub mismatch_count: u64,
    /// The first [`MISMATCHES_LISTED_MAX`] mismatches, in leg order.
    pub mismatches: Vec<Mismatch>,
}

impl Reconciliation {
    pub fn reconciled(&self) -> bool {
        self.mismatch_count == 0
    }

    /// What `own` owes the peer for the period, net (negative: the peer owes `own`).
    pub fn net_owed_to_peer_fen(&self) -> i128 {
        self.own_position.net_owed_to_peer_fen()
    }
}

/// Compares `own`'s and `peer`'s journal entries leg by leg for the period
/// `[from_ms, to_ms)` of wall time.
///
/// A leg belongs to the period by its coordinator's record (when the settlement or refund was
/// decided at the counter), or by the payer's record when the coordinator has none. The other
/// side's record may fall outside the period (a commit delivered after a partition, clocks
/// apart), so callers pass every entry from `from_ms - RECONCILE_GRACE_MS` on, without an upper
/// bound; entries of other counterparties are ignored.
pub fn reconcile<'a>(
    own: Province,
    peer: Province,
    own_entries: impl IntoIterator<Item = &'a JournalEntry>,
    peer_entries: impl IntoIterator<Item = &'a JournalEntry>,
    from_ms: i64,
    to_ms: i64,
) -> Reconciliation {
    let mut legs: BTreeMap<(LegId, LegRole, Province), Sides> = BTreeMap::new();
    let mut record = |side_province: Province, other: Province, entry: &JournalEntry| {
        if cross_province_peer(side_province, entry) != Some(other) {
            return;
        }
        let Some(leg) = entry.leg.clone() else {
            return;
        };
        let (role, payer, at_payer) = match entry.kind {
            JournalKind::Debit | JournalKind::TransferSent => (LegRole::Deduction, side_province, true),
            JournalKind::RefundCredit => (LegRole::Refund, side_province, true),
            JournalKind::MutualAidReceived | JournalKind::TransferReceived => (LegRole::Deduction, other, false),
            JournalKind::MutualAidRefunded => (LegRole::Refund, other, false),
            JournalKind::Credit => return,
        };
        let sides = legs.entry((leg, role, payer)).or_default();
        let slot = if at_payer {
            &mut sides.payer
        } else {
            &mut sides.coordinator
        };
        let fen = entry.amount.fen();
        // A leg is journaled once per side; should a journal ever hold it twice, the sum
        // makes the comparison fail rather than hide the duplicate.
        *slot = Some(match *slot {
            Some((at, before)) => (at, before.saturating_add(fen)),
            None => (entry.wall_ms, fen),
        });
    };
    for entry in own_entries {
        record(own, peer, entry);
    }
    for entry in peer_entries {
        record(peer, own, entry);
    }
    let in_period = |at: i64| at >= from_ms && at < to_ms;
    let mut report = Reconciliation::default();
    for ((leg, role, payer), sides) in legs {
        let decided_at = match (sides.coordinator, sides.payer) {
            (Some((at, _)), _) | (None, Some((at, _))) => at,
            (None, None) => continue,
        };
        if !in_period(decided_at) {
            continue;
        }
        let coordinator = if payer == own { peer } else { own };
        let kind_of = |payer_side: bool| match (role, payer_side) {
            (LegRole::Deduction, true) => JournalKind::Debit,
            (LegRole::Refund, true) => JournalKind::RefundCredit,
            (LegRole::Deduction, false) => JournalKind::MutualAidReceived,
            (LegRole::Refund, false) => JournalKind::MutualAidRefunded,
        };
        for (province, side, payer_side) in [(payer, sides.payer, true), (coordinator, sides.coordinator, false)] {
            if let Some((_, fen)) = side {
                let position = if province == own {
                    &mut report.own_position
                } else {
                    &mut report.peer_position
                };
                position.add(kind_of(payer_side), fen);
            }
        }
        report.legs_compared = report.legs_compared.saturating_add(1);
        let problem = match (sides.payer, sides.coordinator) {
            (Some((_, paid)), Some((_, claimed))) if paid == claimed => None,
            (Some((_, payer_fen)), Some((_, coordinator_fen))) => Some(MismatchKind::AmountDiffers {
                payer_fen,
                coordinator_fen,
            }),
            (None, Some((_, coordinator_fen))) => Some(MismatchKind::MissingAtPayer { coordinator_fen }),
            (Some((_, payer_fen)), None) => Some(MismatchKind::MissingAtCoordinator { payer_fen }),
            (None, None) => None,
        };
        match problem {
            None => report.legs_matched = report.legs_matched.saturating_add(1),
            Some(kind) => {
                report.mismatch_count = report.mismatch_count.saturating_add(1);
                if report.mismatches.len() < MISMATCHES_LISTED_MAX {
                    report.mismatches.push(Mismatch {
                        leg,
                        role,
                        payer,
                        coordinator,
                        kind,
                    });
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LegScope, SettlementId};
    use crate::money::Money;
    use crate::person::PersonId;

    fn province(code: u32) -> Province {
        Province::from_code(code).unwrap()
    }

    fn leg(coordinator: Province, settlement: &str, index: u16) -> LegId {
        LegId {
            coordinator,
            scope: LegScope::Pay {
                settlement: SettlementId::new(settlement).unwrap(),
                attempt: 0,
            },
            index,
            account: PersonId::synthetic(110105, 7),
        }
    }

    fn entry(kind: JournalKind, wall_ms: i64, fen: u64, leg: &LegId, counterparty: Province) -> JournalEntry {
        JournalEntry {
            kind,
            wall_ms,
            amount: Money::from_fen(fen).unwrap(),
            account: Some(leg.account),
            leg: Some(leg.clone()),
            binding: None,
            settlement: Some(leg.settlement().clone()),
            counterparty: Some(counterparty),
            reference: None,
        }
    }

    #[test]
    fn both_sides_of_every_leg_reconcile_and_the_net_is_what_the_payer_owes() {
        let (beijing, chongqing) = (province(110000), province(500000));
        let first = leg(chongqing, "S-1", 1);
        let second = leg(beijing, "S-2", 1);
        // Beijing's account paid 300 for a Chongqing patient, 50 came back by refund;
        // Chongqing's account paid 100 for a Beijing patient.
        let refund = leg(chongqing, "S-1", 2);
        let beijing_journal = vec![
            entry(JournalKind::Debit, 1_000, 300, &first, chongqing),
            entry(JournalKind::RefundCredit, 3_000, 50, &refund, chongqing),
            entry(JournalKind::MutualAidReceived, 2_000, 100, &second, chongqing),
            // Local and credits are not cross-province.
            entry(JournalKind::Debit, 1_500, 999, &second, beijing),
        ];
        let chongqing_journal = vec![
            entry(JournalKind::MutualAidReceived, 999, 300, &first, beijing),
            entry(JournalKind::MutualAidRefunded, 2_999, 50, &refund, beijing),
            entry(JournalKind::Debit, 2_001, 100, &second, beijing),
        ];
        let report = reconcile(beijing, chongqing, &beijing_journal, &chongqing_journal, 0, 10_000);
        assert!(report.reconciled(), "{report:?}");
        assert_eq!((report.legs_compared, report.legs_matched), (3, 3));
        assert_eq!(report.net_owed_to_peer_fen(), 300 - 50 - 100);
        assert_eq!(report.peer_position.net_owed_to_peer_fen(), -(300 - 50 - 100));
        let mine = positions(beijing, &beijing_journal);
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[&chongqing], report.own_position);
    }

    #[test]
    fn a_missing_side_and_a_different_amount_are_each_reported() {
        let (beijing, sichuan) = (province(110000), province(510000));
        let missing = leg(sichuan, "S-1", 1);
        let differs = leg(sichuan, "S-2", 1);
        let extra = leg(sichuan, "S-3", 1);
        let beijing_journal = vec![
            entry(JournalKind::Debit, 100, 70, &differs, sichuan),
            entry(JournalKind::Debit, 100, 5, &extra, sichuan),
        ];
        let sichuan_journal = vec![
            entry(JournalKind::MutualAidReceived, 100, 40, &missing, beijing),
            entry(JournalKind::MutualAidReceived, 100, 80, &differs, beijing),
        ];
        let report = reconcile(sichuan, beijing, &sichuan_journal, &beijing_journal, 0, 1_000);
        assert_eq!(report.mismatch_count, 3);
        let kinds: Vec<_> = report.mismatches.iter().map(|m| m.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                MismatchKind::MissingAtPayer { coordinator_fen: 40 },
                MismatchKind::AmountDiffers {
                    payer_fen: 70,
                    coordinator_fen: 80
                },
                MismatchKind::MissingAtCoordinator { payer_fen: 5 },
            ]
        );
        assert!(
            report
                .mismatches
                .iter()
                .all(|m| m.payer == beijing && m.coordinator == sichuan)
        );
    }

    #[test]
    fn a_leg_belongs_to_the_period_of_its_coordinators_record() {
        let (beijing, sichuan) = (province(110000), province(510000));
        // Decided inside the period; the payer committed after it ended (a partition).
        let late = leg(sichuan, "S-1", 1);
        // Decided before the period; the payer's record falls inside it.
        let early = leg(sichuan, "S-2", 1);
        let beijing_journal = vec![
            entry(JournalKind::Debit, 5_000, 10, &late, sichuan),
            entry(JournalKind::Debit, 500, 20, &early, sichuan),
        ];
        let sichuan_journal = vec![
            entry(JournalKind::MutualAidReceived, 900, 10, &late, beijing),
            entry(JournalKind::MutualAidReceived, 90, 20, &early, beijing),
        ];
        let report = reconcile(beijing, sichuan, &beijing_journal, &sichuan_journal, 100, 1_000);
        assert!(report.reconciled());
        assert_eq!(report.legs_compared, 1);
        assert_eq!(report.own_position.paid_for_peer_fen, 10);
    }
}
