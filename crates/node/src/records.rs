//! Read-only queries over the node's journal: a person's history, clearing positions, and
//! reconciliation with a peer (this node's journal against the peer's, fetched over mTLS).
//! Every figure is computed by `exchange_core::clearing`; this file only pages the store.

use std::collections::BTreeMap;
use std::time::Duration;

use exchange_core::Province;
use exchange_core::clearing::{self, Position, RECONCILE_GRACE_MS};
use exchange_core::records::JournalEntry;
use exchange_core::{LedgerView, PersonId};
use exchange_proto::pb;
use exchange_store::StoreError;
use tonic::Status;

use crate::context::Context;

/// A person's history page when the caller names no size, and the largest it may name.
pub const RECORDS_PAGE_LEN_DEFAULT: usize = 50;
pub const RECORDS_PAGE_LEN_MAX: usize = 500;
/// Journal entries read from the store per page of a scan.
pub const JOURNAL_SCAN_PAGE_LEN: usize = 2_000;
/// Journal entries one `Exchange.Journal` call scans before it answers with a cursor, so
/// one call stays short however long the journal is.
pub const JOURNAL_QUERY_SCAN_MAX: usize = 20_000;
/// Most entries one reconciliation holds in memory per side (a month of one pair of
/// provinces at today's national rate is well below this; a larger period must be split).
pub const RECONCILE_ENTRIES_MAX: usize = 2_000_000;

fn unavailable(error: StoreError) -> Status {
    Status::unavailable(format!("store: {error}"))
}

/// Calls `visit` with every journal entry after `after_seq`, page by page, until it returns
/// `false` or `scan_max` entries were read; returns the last sequence number read and
/// whether the journal's end was reached.
fn scan_journal(
    ctx: &Context,
    mut after_seq: u64,
    scan_max: usize,
    mut visit: impl FnMut(u64, JournalEntry) -> Result<bool, Status>,
) -> Result<(u64, bool), Status> {
    let mut scanned = 0usize;
    loop {
        let want = JOURNAL_SCAN_PAGE_LEN.min(scan_max.saturating_sub(scanned));
        if want == 0 {
            return Ok((after_seq, false));
        }
        // Only flushed entries: an entry a crash could still take back (its sequence number
        // then reused) must not reach a report or a peer's reconciliation.
        let page = ctx.store.durable_journal_from(after_seq, want).map_err(unavailable)?;
        let reached_end = page.len() < want;
        for (seq, entry) in page {
            after_seq = seq;
            scanned = scanned.saturating_add(1);
            if !visit(seq, entry)? {
                return Ok((after_seq, false));
            }
        }
        if reached_end {
            return Ok((after_seq, true));
        }
    }
}

/// The relative on the other side of a binding, as this node knows it: for a grantor the
/// grantee, for a grantee the grantor.
fn relative_of(ctx: &Context, person: &PersonId, entry: &JournalEntry) -> Result<Option<PersonId>, Status> {
    let Some(binding) = entry.binding else {
        return Ok(None);
    };
    let known = match ctx.store.binding(&binding).map_err(unavailable)? {
        Some(binding) => Some(binding),
        None => ctx.store.binding_copy(&binding).map_err(unavailable)?,
    };
    Ok(known.map(|binding| {
        if binding.grantor == *person {
            binding.grantee
        } else {
            binding.grantor
        }
    }))
}

/// A page of `person`'s history, newest first.
pub fn records(ctx: &Context, request: pb::RecordsRequest) -> Result<pb::RecordsPage, Status> {
    let person = request
        .person_id()
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
    let limit = match usize::try_from(request.limit).unwrap_or(usize::MAX) {
        0 => RECORDS_PAGE_LEN_DEFAULT,
        n if n > RECORDS_PAGE_LEN_MAX => {
            return Err(Status::invalid_argument(format!(
                "limit: at most {RECORDS_PAGE_LEN_MAX} records a page"
            )));
        }
        n => n,
    };
    if ctx.store.account(&person).map_err(unavailable)?.is_none() {
        return Err(Status::not_found(format!(
            "{person} is not enrolled on this node (unknown_person)"
        )));
    }
    // One more than asked tells whether another page follows.
    let mut page = ctx
        .store
        .journal_of_account(&person, request.before_seq, limit.saturating_add(1))
        .map_err(unavailable)?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next_before_seq = if more {
        page.last().map_or(0, |(seq, _)| *seq)
    } else {
        0
    };
    let mut records = Vec::with_capacity(page.len());
    for (seq, entry) in page {
        let relative = relative_of(ctx, &person, &entry)?;
        records.push(pb::JournalRecord::new(seq, entry, relative));
    }
    Ok(pb::RecordsPage {
        person: person.to_string(),
        records,
        next_before_seq,
    })
}

/// This province's positions against every peer for `[from_ms, to_ms)`.
pub fn clearing(ctx: &Context, request: pb::ClearingRequest) -> Result<pb::ClearingReport, Status> {
    let (from_ms, to_ms) = request
        .period()
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
    let own = ctx.province;
    let mut positions: BTreeMap<Province, Position> = BTreeMap::new();
    scan_journal(ctx, 0, usize::MAX, |_, entry| {
        if entry.wall_ms >= from_ms && entry.wall_ms < to_ms {
            clearing::add_to_positions(own, &mut positions, &entry);
        }
        Ok(true)
    })?;
    Ok(pb::ClearingReport {
        province: own.code(),
        from_ms,
        to_ms,
        positions: positions
            .into_iter()
            .map(|(peer, position)| pb::PeerPosition {
                peer: peer.code(),
                position: Some(position.into()),
            })
            .collect(),
    })
}

/// Whether `entry` is one of this node's records of a leg with `peer` from `from_ms` on.
fn concerns(own: Province, peer: Province, from_ms: i64, entry: &JournalEntry) -> bool {
    clearing::cross_province_peer(own, entry) == Some(peer) && entry.wall_ms >= from_ms
}

/// Answers a peer's `Exchange.Journal`: this node's records of legs with `peer`.
pub fn journal_for_peer(ctx: &Context, peer: Province, query: &pb::JournalQuery) -> Result<pb::JournalPage, Status> {
    let own = ctx.province;
    let mut records = Vec::new();
    let (scanned_to_seq, done) = scan_journal(ctx, query.after_seq, JOURNAL_QUERY_SCAN_MAX, |seq, entry| {
        if concerns(own, peer, query.from_ms, &entry) {
            records.push(pb::JournalRecord::new(seq, entry, None));
        }
        Ok(true)
    })?;
    Ok(pb::JournalPage {
        records,
        scanned_to_seq,
        done,
    })
}

/// Compares this node's journal with `peer`'s for `[from_ms, to_ms)`, leg by leg.
pub async fn reconcile(ctx: &Context, request: pb::ReconcileRequest) -> Result<pb::ReconcileReport, Status> {
    let (peer, from_ms, to_ms) = request
        .checked()
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
    let own = ctx.province;
    if peer == own {
        return Err(Status::invalid_argument(
            "peer: a province does not reconcile with itself",
        ));
    }
    let Some(client) = ctx.peer_clients.get(&peer) else {
        return Err(Status::failed_precondition(format!(
            "province {peer} is not a peer of this node (see [[peers]] in its configuration)"
        )));
    };
    let scan_from_ms = from_ms.saturating_sub(RECONCILE_GRACE_MS);
    let too_many = || {
        Status::resource_exhausted(format!(
            "more than {RECONCILE_ENTRIES_MAX} legs with {peer} in the period; reconcile a shorter period"
        ))
    };
    let mut own_entries = Vec::new();
    scan_journal(ctx, 0, usize::MAX, |_, entry| {
        if concerns(own, peer, scan_from_ms, &entry) {
            if own_entries.len() >= RECONCILE_ENTRIES_MAX {
                return Err(too_many());
            }
            own_entries.push(entry);
        }
        Ok(true)
    })?;
    let mut peer_entries = Vec::new();
    let mut after_seq = 0;
    let timeout = Duration::from_millis(ctx.config.tuning.rpc_timeout_ms);
    loop {
        let mut call = tonic::Request::new(pb::JournalQuery {
            after_seq,
            from_ms: scan_from_ms,
        });
        call.set_timeout(timeout);
        let page = client.clone().journal(call).await.map_err(|status| {
            Status::unavailable(format!(
                "province {peer}'s node did not answer ({:?}: {}); nothing was compared",
                status.code(),
                status.message()
            ))
        })?;
        let page = page.into_inner();
        if page.scanned_to_seq < after_seq || (!page.done && page.scanned_to_seq == after_seq) {
            return Err(Status::data_loss(format!(
                "province {peer}'s node answered a journal page that does not advance"
            )));
        }
        for record in page.records {
            let (_, entry) = record
                .checked()
                .map_err(|error| Status::data_loss(format!("province {peer}'s journal: {error}")))?;
            if peer_entries.len() >= RECONCILE_ENTRIES_MAX {
                return Err(too_many());
            }
            peer_entries.push(entry);
        }
        after_seq = page.scanned_to_seq;
        if page.done {
            break;
        }
    }
    let report = clearing::reconcile(own, peer, &own_entries, &peer_entries, from_ms, to_ms);
    Ok(pb::ReconcileReport::new(own, peer, from_ms, to_ms, report))
}
