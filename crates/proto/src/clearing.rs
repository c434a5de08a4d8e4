//! Conversions of records, clearing and reconciliation: the wire forms of
//! `exchange_core::clearing` reports, and validation of their requests.

use exchange_core::clearing::{Mismatch, MismatchKind, Position, Reconciliation};
use exchange_core::records::JournalEntry;
use exchange_core::{PersonId, Province};

use crate::error::{ConvertError, ConvertResult};
use crate::fields::{nested, person, province};
use crate::pb;

/// Longest period one clearing or reconciliation request may cover: a year and a day (the
/// bureaus clear monthly and audit yearly; longer scans belong to an offline job).
pub const PERIOD_LEN_MAX_MS: i64 = 366 * 24 * 60 * 60 * 1_000;

/// A checked period `[from_ms, to_ms)`.
fn period(from_ms: i64, to_ms: i64) -> ConvertResult<(i64, i64)> {
    if from_ms >= to_ms {
        return Err(ConvertError::new(
            "to_ms",
            format!("the period must end after it starts ({from_ms} .. {to_ms})"),
        ));
    }
    if to_ms.checked_sub(from_ms).is_none_or(|len| len > PERIOD_LEN_MAX_MS) {
        return Err(ConvertError::new(
            "to_ms",
            format!("a period may cover at most {} days", PERIOD_LEN_MAX_MS / 86_400_000),
        ));
    }
    Ok((from_ms, to_ms))
}

impl pb::RecordsRequest {
    pub fn person_id(&self) -> ConvertResult<PersonId> {
        person("person", &self.person)
    }
}

impl pb::ClearingRequest {
    /// The checked period.
    pub fn period(&self) -> ConvertResult<(i64, i64)> {
        period(self.from_ms, self.to_ms)
    }
}

impl pb::ReconcileRequest {
    /// The peer and the checked period.
    pub fn checked(&self) -> ConvertResult<(Province, i64, i64)> {
        let peer = province("peer", self.peer)?;
        let (from_ms, to_ms) = period(self.from_ms, self.to_ms)?;
        Ok((peer, from_ms, to_ms))
    }
}

impl pb::JournalRecord {
    pub fn new(seq: u64, entry: JournalEntry, relative: Option<PersonId>) -> pb::JournalRecord {
        pb::JournalRecord {
            seq,
            entry: Some(entry.into()),
            relative: relative.map(|person| person.to_string()),
        }
    }

    /// The sequence number and the checked entry.
    pub fn checked(self) -> ConvertResult<(u64, JournalEntry)> {
        Ok((self.seq, nested("entry", self.entry)?))
    }
}

impl From<Position> for pb::Position {
    fn from(position: Position) -> pb::Position {
        let net = position.net_owed_to_peer_fen();
        pb::Position {
            paid_for_peer_fen: position.paid_for_peer_fen,
            refunded_by_peer_fen: position.refunded_by_peer_fen,
            received_from_peer_fen: position.received_from_peer_fen,
            returned_to_peer_fen: position.returned_to_peer_fen,
            // Sums of real fen stay far below i64::MAX; saturate rather than wrap if not.
            net_owed_to_peer_fen: i64::try_from(net).unwrap_or(if net < 0 { i64::MIN } else { i64::MAX }),
        }
    }
}

impl From<Mismatch> for pb::Mismatch {
    fn from(mismatch: Mismatch) -> pb::Mismatch {
        let (problem, payer_fen, coordinator_fen) = match mismatch.kind {
            MismatchKind::MissingAtPayer { coordinator_fen } => ("missing_at_payer", None, Some(coordinator_fen)),
            MismatchKind::MissingAtCoordinator { payer_fen } => ("missing_at_coordinator", Some(payer_fen), None),
            MismatchKind::AmountDiffers {
                payer_fen,
                coordinator_fen,
            } => ("amount_differs", Some(payer_fen), Some(coordinator_fen)),
        };
        pb::Mismatch {
            leg: Some(mismatch.leg.into()),
            role: match mismatch.role {
                exchange_core::clearing::LegRole::Deduction => "deduction",
                exchange_core::clearing::LegRole::Refund => "refund",
            }
            .to_string(),
            payer: mismatch.payer.code(),
            coordinator: mismatch.coordinator.code(),
            problem: problem.to_string(),
            payer_fen,
            coordinator_fen,
        }
    }
}

impl pb::ReconcileReport {
    pub fn new(own: Province, peer: Province, from_ms: i64, to_ms: i64, report: Reconciliation) -> pb::ReconcileReport {
        pb::ReconcileReport {
            province: own.code(),
            peer: peer.code(),
            from_ms,
            to_ms,
            legs_compared: report.legs_compared,
            legs_matched: report.legs_matched,
            own: Some(report.own_position.into()),
            peer_side: Some(report.peer_position.into()),
            mismatch_count: report.mismatch_count,
            mismatches: report.mismatches.into_iter().map(Into::into).collect(),
        }
    }
}
