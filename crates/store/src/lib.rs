//! Durable state of one province node on sled: atomic write sets, fences by compare-and-set,
//! a gap-free journal, and grouped flushes that acknowledge nothing before it is on disk.
//!
//! The core decides; this crate only stores. A handler's [`exchange_core::ledger::Write`] list
//! goes through [`Store::apply`], atomic across a crash (a redo record, then plain inserts: see
//! `redo.rs`), and the reply that depends on it waits for [`Store::durable`] (or
//! [`Store::flush_blocking`]) before it leaves the node. A concurrent reader may see part of a
//! set while it is applied, in the set's order: write records before the indexes that point to
//! them.
//!
//! Architecture invariant: every write goes through one writer lock (`apply`, meta counters,
//! incarnation, audit records), so journal and audit sequence numbers and durability tickets
//! follow apply order.
//! Architecture invariant: exactly one thread calls `sled::Db::flush` at a time, and no code
//! here calls `flush_async` (it deadlocks under concurrency in sled 0.34.7).
//! Deliberately absent: range scans over domain keys (only the journal and the audit log are
//! scanned in order), caches above sled's own page cache, and any background compaction of our
//! own.

// Data on disk must never be able to panic the node.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod account_value;
mod audit;
mod bench;
mod codec;
mod durability;
mod error;
mod journal_pages;
mod redo;
mod store;

pub use account_value::ACCOUNT_JOURNAL_TAIL_MAX;
pub use audit::{
    AUDIT_GENESIS_HASH, AUDIT_INTENT, AUDIT_OPEN_INTENTS_LISTED_MAX, AUDIT_PAGE_BYTES_MAX, AUDIT_PAGE_RECORDS_MAX,
    AuditBreak, AuditEntry, AuditRecord, AuditVerification, hash_hex, verify_audit_at,
};
pub use bench::{BatchedWrites, bench_batched_writes};
pub use durability::{LAZY_FLUSH_DELAY_MS, StoreStats};
pub use error::StoreError;
pub use journal_pages::{JOURNAL_PAGE_BYTES_MAX, JOURNAL_PAGE_ENTRIES_MAX};
pub use store::{Applied, AuditAppended, Store, StoreConfig};

/// Default page-cache size: bounded so memory does not grow with the number of accounts
/// (sled's own default is 1 GiB).
pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Largest encoded value accepted; a settlement record with a full family is a few KiB.
pub const VALUE_BYTES_MAX: usize = 256 * 1024;
/// Largest encoded key accepted; keys sit whole in sled's index nodes, so keep them small.
pub const KEY_BYTES_MAX: usize = 512;
/// Largest encoded write set (its redo record). sled 0.34 stores anything over ~128 KiB as a
/// separate blob file (a file created and `fsync`ed per item: our flush syncs them, see
/// `durability.rs`, but one per write set would be slow); keep a redo record in the log.
/// A handler's set is a few KiB.
pub const REDO_RECORD_BYTES_MAX: usize = 100 * 1024;
/// Most writes in one write set; a handler's set is a few dozen at most.
pub const WRITE_SET_LEN_MAX: usize = 4096;
/// Most journal entries returned by one `journal_from` page.
pub const JOURNAL_PAGE_LEN_MAX: usize = 10_000;
/// Most audit records returned by one `audit_from` page.
pub const AUDIT_PAGE_LEN_MAX: usize = 1_000;
/// Longest detail (summary) of an audit record, in bytes; longer texts are cut (with `…`).
pub const AUDIT_TEXT_BYTES_MAX: usize = 4 * 1024;
/// Longest actor, action or outcome text of an audit record, in bytes (cut likewise). With
/// the detail's bound this keeps a whole record under the audit page size (see `audit.rs`).
pub const AUDIT_SHORT_TEXT_BYTES_MAX: usize = 512;
/// Longest name of a meta counter, in bytes.
pub const META_NAME_BYTES_MAX: usize = 64;
/// Longest wait at open for the database's file lock, held briefly by sled's I/O threads
/// after a store in this process was dropped.
pub const OPEN_LOCK_WAIT_MS_MAX: u64 = 2_000;
/// Pause between attempts to take the file lock.
pub const OPEN_LOCK_RETRY_MS: u64 = 10;
