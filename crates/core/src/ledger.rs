//! How the core sees storage: a read-only view in, write sets out.
//!
//! The core never writes. Each handler reads what it needs through [`LedgerView`] and returns
//! the changes as one [`Write`] list, which the driver applies atomically across a crash (the
//! store's redo record, or one step of the simulator's disk) before anything the handler sends
//! or replies leaves the node. Another handler may see the list applied in part while it is
//! being applied, write by write in order, so a handler lists records before the indexes that
//! point to them. Fence writes carry the value they expect to replace, so the driver applies them by
//! compare-and-set and a lost race can never apply a balance change twice. A set applies as its
//! writes in order (each compare-and-set against the value the writes before it leave), so the
//! concatenation of several handlers' sets, each computed over the ones before (see
//! `overlay.rs`), applies as they would one by one.

use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::binding::Binding;
use crate::ids::{BindingId, CreditId, LegId, RefundId, SettlementId, TransferId};
use crate::person::PersonId;
use crate::records::{
    CreditRecord, Fence, JournalEntry, OutboxKey, RefundRecord, SettlementRecord, TransferRecord, WalletUsage,
};

/// Read access to one node's durable state (and writes applied but maybe not yet flushed).
pub trait LedgerView {
    type Error: std::fmt::Debug;

    fn account(&self, person: &PersonId) -> Result<Option<Account>, Self::Error>;
    /// An authoritative binding (this node is the grantor's).
    fn binding(&self, id: &BindingId) -> Result<Option<Binding>, Self::Error>;
    /// A grantee-side copy of a binding (this node is the grantee's).
    fn binding_copy(&self, id: &BindingId) -> Result<Option<Binding>, Self::Error>;
    /// Ids of the authoritative bindings where `person` is grantor.
    fn bindings_of_grantor(&self, person: &PersonId) -> Result<Vec<BindingId>, Self::Error>;
    /// Ids of the binding copies where `person` is grantee.
    fn bindings_of_grantee(&self, person: &PersonId) -> Result<Vec<BindingId>, Self::Error>;
    fn fence(&self, leg: &LegId) -> Result<Option<Fence>, Self::Error>;
    fn settlement(&self, id: &SettlementId) -> Result<Option<SettlementRecord>, Self::Error>;
    fn refund(&self, id: &RefundId) -> Result<Option<RefundRecord>, Self::Error>;
    fn credit(&self, id: &CreditId) -> Result<Option<CreditRecord>, Self::Error>;
    /// The last binding serial this node issued (0 if none).
    fn binding_serial(&self) -> Result<u64, Self::Error>;
    /// A wallet transfer decided on this node (the grantor's).
    fn transfer(&self, id: &TransferId) -> Result<Option<TransferRecord>, Self::Error>;
    /// A grantor's count of wallet transfers on their last counted day.
    fn wallet_usage(&self, person: &PersonId) -> Result<Option<WalletUsage>, Self::Error>;
}

/// One change to durable state. A handler's list is applied atomically, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Write {
    Account(Account),
    Binding(Binding),
    BindingCopy(Binding),
    /// Adds ids to a person's index of bindings as grantor: the stored list becomes the
    /// stored ids followed by those of `bindings` not in it yet (see [`index_union`]).
    GrantorIndex {
        person: PersonId,
        bindings: Vec<BindingId>,
    },
    /// Adds ids to a person's index of bindings as grantee, as `GrantorIndex` does. A union,
    /// not an overwrite: on a node, a same-province bind (in the grantor's actor) and a
    /// registration or another bind (in other actors) may add to one grantee's index at once,
    /// each from the list it read; an overwrite would lose the other's id.
    GranteeIndex {
        person: PersonId,
        bindings: Vec<BindingId>,
    },
    /// Compare-and-set: applies only if the leg's fence equals `expected` (the stored one, or
    /// the one an earlier write of the same set left; see `check_fences`).
    Fence {
        leg: LegId,
        expected: Option<Fence>,
        new: Fence,
    },
    /// Adds (`true`) or removes a leg from the index of live holds scanned at recovery.
    LiveHold {
        leg: LegId,
        live: bool,
    },
    Settlement(SettlementRecord),
    Refund(RefundRecord),
    /// Adds or removes an item the coordinator must still deliver (scanned at recovery).
    Outbox {
        key: OutboxKey,
        live: bool,
    },
    Credit(CreditRecord),
    BindingSerial(u64),
    /// Appended with the node's next journal sequence number.
    Journal(JournalEntry),
    Transfer(TransferRecord),
    WalletUsage(WalletUsage),
}

/// Why a write set could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("fence of leg {leg} changed under us (expected {expected}, found {found})")]
    FenceConflict {
        leg: String,
        expected: String,
        found: String,
    },
}

/// Checks a set's fence compare-and-sets in order, each against the value the writes before
/// it in the set leave, else against `stored` (the ledger's value before the set).
pub fn check_fences<'a>(writes: &'a [Write], stored: impl Fn(&LegId) -> Option<&'a Fence>) -> Result<(), ApplyError> {
    let mut written: std::collections::BTreeMap<&LegId, &Fence> = std::collections::BTreeMap::new();
    for write in writes {
        if let Write::Fence { leg, expected, new } = write {
            let found = written.get(leg).copied().or_else(|| stored(leg));
            if found != expected.as_ref() {
                return Err(ApplyError::FenceConflict {
                    leg: leg.to_string(),
                    expected: format!("{expected:?}"),
                    found: format!("{found:?}"),
                });
            }
            written.insert(leg, new);
        }
    }
    Ok(())
}

/// How an index write applies: the stored ids, then the written ones not among them. Indexes
/// only grow (a binding, even revoked, stays listed), so this is every ledger's rule.
pub fn index_union(stored: Option<&[BindingId]>, written: &[BindingId]) -> Vec<BindingId> {
    let mut ids = stored.map(<[BindingId]>::to_vec).unwrap_or_default();
    for id in written {
        if !ids.contains(id) {
            ids.push(*id);
        }
    }
    ids
}
