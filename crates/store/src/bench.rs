//! The storage ceiling: how many flushed write sets per second sled takes when the node
//! groups them `batch` to a flush, as its request path does.

use std::path::Path;
use std::time::Instant;

use exchange_core::account::{Account, Scheme};
use exchange_core::ids::{LegId, LegScope, SettlementId};
use exchange_core::ledger::Write;
use exchange_core::money::Money;
use exchange_core::person::PersonId;
use exchange_core::records::{Fence, Hold, JournalEntry, JournalKind};
use exchange_core::region::Province;
use exchange_core::time::YearMonth;

use crate::error::StoreError;
use crate::store::{Store, StoreConfig};

/// Figures of one `bench_batched_writes` run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchedWrites {
    /// Write sets applied (each: an account, a fence CAS, a live hold and a journal entry).
    pub writes: u64,
    pub batch: u64,
    pub flushes: u64,
    pub elapsed_ms: u64,
    pub writes_per_s: f64,
    /// Time spent inside flushes (the rest of `elapsed_ms` is applying).
    pub flush_micros_total: u64,
    /// Longest single flush.
    pub flush_micros_max: u64,
}

fn fixture_error(detail: impl ToString) -> StoreError {
    StoreError::Encode {
        what: "benchmark fixture",
        detail: detail.to_string(),
    }
}

/// Applies `writes` prepare-like write sets to a fresh store in `dir`, flushing after every
/// `batch` of them (and once at the end), and reports write sets per second and flushes.
/// The store is dropped before returning; `dir` is left for the caller to remove.
pub fn bench_batched_writes(dir: &Path, writes: u64, batch: u64) -> Result<BatchedWrites, StoreError> {
    let batch = batch.max(1);
    let store = Store::open(dir, &StoreConfig::default())?;
    let province = Province::from_code(110_000).map_err(fixture_error)?;
    let amount = Money::from_fen(100).map_err(fixture_error)?;
    let started = Instant::now();
    for index in 0..writes {
        let person = PersonId::synthetic(110_101, index);
        let mut account = Account::open(person, "bench".to_string(), province, Scheme::Employee, 0);
        account.balance = Money::from_fen(10_000).map_err(fixture_error)?;
        account.held = amount;
        let leg = LegId {
            coordinator: province,
            scope: LegScope::Pay {
                settlement: SettlementId::new(format!("bench-{index}")).map_err(fixture_error)?,
                attempt: 1,
            },
            index: 0,
            account: person,
        };
        let hold = Hold {
            account: person,
            binding: None,
            patient: person,
            amount,
            available_before: account.balance,
            month: YearMonth { year: 2026, month: 1 },
            prepared_wall_ms: 0,
            hold_timeout_ms: 30_000,
        };
        let set = [
            Write::Account(account),
            Write::Fence {
                leg: leg.clone(),
                expected: None,
                new: Fence::Prepared(hold),
            },
            Write::LiveHold {
                leg: leg.clone(),
                live: true,
            },
            Write::Journal(JournalEntry {
                kind: JournalKind::Debit,
                wall_ms: 0,
                amount,
                account: Some(person),
                leg: Some(leg),
                binding: None,
                settlement: None,
                counterparty: Some(province),
                reference: None,
            }),
        ];
        store.apply(&set)?;
        if index.saturating_add(1) % batch == 0 {
            store.flush_blocking()?;
        }
    }
    store.flush_blocking()?;
    let elapsed = started.elapsed();
    let stats = store.stats();
    let seconds = elapsed.as_secs_f64();
    Ok(BatchedWrites {
        writes,
        batch,
        flushes: stats.flushes,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        // Precision lost converting a count to f64 does not matter for a rate.
        writes_per_s: if seconds > 0.0 { writes as f64 / seconds } else { 0.0 },
        flush_micros_total: stats.flush_micros_total,
        flush_micros_max: stats.flush_micros_max,
    })
}
