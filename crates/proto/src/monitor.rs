//! Conversions of the monitor feed: journal entries and feed events.

use exchange_core::records::{JournalEntry, JournalKind};

use crate::error::{ConvertError, ConvertResult};
use crate::fields::{
    enumeration, money, optional_binding_id, optional_nested, optional_text, person, province, settlement_id,
};
use crate::pb;

/// Most events the monitor feed keeps queued for one slow subscriber before it drops the
/// subscriber (which then resumes with `after_seq`); the node must never block on a reader.
pub const FEED_SUBSCRIBER_QUEUE_MAX: usize = 1024;

fn journal_kind_from_wire(field: &str, value: i32) -> ConvertResult<JournalKind> {
    use pb::JournalKind as Wire;
    match enumeration(field, value, Wire::Unspecified)? {
        Wire::Credit => Ok(JournalKind::Credit),
        Wire::Debit => Ok(JournalKind::Debit),
        Wire::RefundCredit => Ok(JournalKind::RefundCredit),
        Wire::MutualAidReceived => Ok(JournalKind::MutualAidReceived),
        Wire::MutualAidRefunded => Ok(JournalKind::MutualAidRefunded),
        Wire::TransferSent => Ok(JournalKind::TransferSent),
        Wire::TransferReceived => Ok(JournalKind::TransferReceived),
        Wire::Unspecified => Err(ConvertError::missing(field)),
    }
}

fn journal_kind_to_wire(kind: JournalKind) -> pb::JournalKind {
    match kind {
        JournalKind::Credit => pb::JournalKind::Credit,
        JournalKind::Debit => pb::JournalKind::Debit,
        JournalKind::RefundCredit => pb::JournalKind::RefundCredit,
        JournalKind::MutualAidReceived => pb::JournalKind::MutualAidReceived,
        JournalKind::MutualAidRefunded => pb::JournalKind::MutualAidRefunded,
        JournalKind::TransferSent => pb::JournalKind::TransferSent,
        JournalKind::TransferReceived => pb::JournalKind::TransferReceived,
    }
}

impl TryFrom<pb::JournalEntry> for JournalEntry {
    type Error = ConvertError;
    fn try_from(entry: pb::JournalEntry) -> ConvertResult<JournalEntry> {
        Ok(JournalEntry {
            kind: journal_kind_from_wire("kind", entry.kind)?,
            wall_ms: entry.wall_ms,
            amount: money("amount_fen", entry.amount_fen)?,
            account: entry.account.map(|text| person("account", &text)).transpose()?,
            leg: optional_nested("leg", entry.leg)?,
            binding: optional_binding_id("binding", entry.binding.as_deref())?,
            settlement: entry
                .settlement
                .map(|text| settlement_id("settlement", text))
                .transpose()?,
            counterparty: entry
                .counterparty
                .map(|code| province("counterparty", code))
                .transpose()?,
            reference: optional_text("reference", entry.reference)?,
        })
    }
}

impl From<JournalEntry> for pb::JournalEntry {
    fn from(entry: JournalEntry) -> pb::JournalEntry {
        pb::JournalEntry {
            kind: journal_kind_to_wire(entry.kind).into(),
            wall_ms: entry.wall_ms,
            amount_fen: entry.amount.fen(),
            account: entry.account.map(|person| person.to_string()),
            leg: entry.leg.map(Into::into),
            binding: entry.binding.map(|id| id.to_string()),
            settlement: entry.settlement.map(Into::into),
            counterparty: entry.counterparty.map(|province| province.code()),
            reference: entry.reference,
        }
    }
}

impl pb::FeedEvent {
    /// A journal entry with its sequence number in the node's journal.
    pub fn journal(seq: u64, entry: JournalEntry) -> pb::FeedEvent {
        pb::FeedEvent {
            seq,
            event: Some(pb::feed_event::Event::Journal(entry.into())),
        }
    }

    /// A health sample, numbered with the last journal sequence number before it.
    pub fn health(seq: u64, sample: pb::HealthSample) -> pb::FeedEvent {
        pb::FeedEvent {
            seq,
            event: Some(pb::feed_event::Event::Health(sample)),
        }
    }
}

/// What a feed event carries, with the journal entry as a core value.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedItem {
    Journal(JournalEntry),
    Health(pb::HealthSample),
}

/// A received feed event as (sequence number, item).
pub fn feed_event_from_wire(event: pb::FeedEvent) -> ConvertResult<(u64, FeedItem)> {
    let item = match event.event.ok_or_else(|| ConvertError::missing("event"))? {
        pb::feed_event::Event::Journal(entry) => {
            FeedItem::Journal(JournalEntry::try_from(entry).map_err(|error| error.within("journal"))?)
        }
        pb::feed_event::Event::Health(sample) => FeedItem::Health(sample),
    };
    Ok((event.seq, item))
}
