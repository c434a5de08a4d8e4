//! `StoreError`: the one error type at the store's boundary.

use exchange_core::ids::LegId;

/// Why a store operation failed. Nothing here is a business "no" except `FenceConflict`,
/// which means the core lost a race and must re-read before deciding again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A counter the store hands out (journal sequence numbers, durability tickets) would
    /// overflow: nothing was written.
    #[error("exhausted: {0}")]
    Exhausted(String),
    /// Bytes on disk do not decode: never a panic, always this.
    #[error("corrupt data in tree {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    /// A value could not be encoded (should not happen with the core's types).
    #[error("could not encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
    /// A `Write::Fence` compare-and-set found another value: the whole write set was rejected.
    #[error("fence of leg {leg} changed under us; the write set was not applied")]
    FenceConflict { leg: LegId },
    /// A flush failed. Sticky: once set, every later flush, durability wait and apply fails
    /// too, so the node stops acknowledging anything.
    #[error("flush failed, the store acknowledges nothing more: {0}")]
    Flush(String),
    /// A key, value, name or write set exceeds its `*_MAX` limit.
    #[error("{what} is {len} long; at most {max} allowed")]
    TooLarge { what: &'static str, len: usize, max: usize },
    /// A caller's request does not make sense (e.g. write-set bounds outside the writes).
    #[error("invalid request to the store: {0}")]
    Invalid(String),
    /// A meta counter name is empty.
    #[error("meta counter name is empty")]
    EmptyName,
    /// `durable` was asked about a ticket no apply has returned yet.
    #[error("ticket {ticket} was never issued (last applied ticket is {applied})")]
    TicketNotApplied { ticket: u64, applied: u64 },
}

impl StoreError {
    /// Whether this says the disk failed (a full or failing device, sled's log on it), as
    /// opposed to something about the request. After one the store acknowledges nothing more:
    /// the node must stop and say why, and only a restart (once the cause is fixed) recovers.
    pub fn is_storage_failure(&self) -> bool {
        match self {
            StoreError::Flush(_) => true,
            StoreError::Sled(error) => is_disk_error(error),
            _ => false,
        }
    }
}

/// sled errors that come from the disk: I/O (ENOSPC, EIO, ...), corruption, and sled's own
/// "bug" reports (which it also raises when its log cannot be written).
pub(crate) fn is_disk_error(error: &sled::Error) -> bool {
    matches!(
        error,
        sled::Error::Io(_) | sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)
    )
}
