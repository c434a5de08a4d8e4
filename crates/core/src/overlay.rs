//! A ledger view with write sets not yet applied laid over it: lets a driver run several
//! handlers one after the other and apply their writes as one set.
//!
//! Why: a batch of peer messages for one actor (tens of prepares and commits from one
//! coordinator) costs one write set per message, and a store pays per set (a redo record, a
//! journal page, the same hot account written again). Handled over an overlay, each handler
//! reads what the ones before it wrote, exactly as if their sets had been applied, and the
//! driver applies the concatenation once. That is the same state as applying the sets one by
//! one in order; applied as one set it is atomic as a whole (the node cuts a long batch into
//! sets of `BATCH_SET_WRITES_MAX` writes, each still all or nothing).

use std::collections::BTreeMap;

use crate::account::Account;
use crate::binding::Binding;
use crate::ids::{BindingId, CreditId, LegId, RefundId, SettlementId, TransferId};
use crate::ledger::{LedgerView, Write, index_union};
use crate::mem::Tables;
use crate::person::PersonId;
use crate::records::{CreditRecord, Fence, RefundRecord, SettlementRecord, TransferRecord, WalletUsage};

/// `base` as it will be once the recorded writes are applied. Reads of records the writes
/// changed come from them; everything else from `base`.
#[derive(Debug)]
pub struct Overlay<'a, V> {
    base: &'a V,
    /// The recorded writes applied to empty tables: each record as last written, each index
    /// as the ids added (read as a union over the base's list), the last serial written.
    written: Tables,
}

impl<'a, V: LedgerView> Overlay<'a, V> {
    pub fn new(base: &'a V) -> Overlay<'a, V> {
        Overlay {
            base,
            written: Tables::default(),
        }
    }

    /// Lays a handler's write set over the view. The sets must be recorded in the order their
    /// handlers ran, each handler having read this overlay (so its fence writes expect what
    /// the overlay showed it); the driver keeps the sets themselves (`Effects::then`) and
    /// applies their concatenation.
    pub fn record(&mut self, writes: &[Write]) {
        self.written.apply_unchecked(writes);
    }

    fn union(
        stored: Result<Vec<BindingId>, V::Error>,
        added: Option<&Vec<BindingId>>,
    ) -> Result<Vec<BindingId>, V::Error> {
        let stored = stored?;
        Ok(match added {
            Some(added) => index_union(Some(&stored), added),
            None => stored,
        })
    }
}

/// A record the writes changed, or the base's.
fn layered<K: Ord, T: Clone, E>(
    written: &BTreeMap<K, T>,
    key: &K,
    base: impl FnOnce() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    match written.get(key) {
        Some(value) => Ok(Some(value.clone())),
        None => base(),
    }
}

impl<V: LedgerView> LedgerView for Overlay<'_, V> {
    type Error = V::Error;

    fn account(&self, person: &PersonId) -> Result<Option<Account>, V::Error> {
        layered(&self.written.accounts, person, || self.base.account(person))
    }
    fn binding(&self, id: &BindingId) -> Result<Option<Binding>, V::Error> {
        layered(&self.written.bindings, id, || self.base.binding(id))
    }
    fn binding_copy(&self, id: &BindingId) -> Result<Option<Binding>, V::Error> {
        layered(&self.written.copies, id, || self.base.binding_copy(id))
    }
    fn bindings_of_grantor(&self, person: &PersonId) -> Result<Vec<BindingId>, V::Error> {
        Self::union(
            self.base.bindings_of_grantor(person),
            self.written.grantor_index.get(person),
        )
    }
    fn bindings_of_grantee(&self, person: &PersonId) -> Result<Vec<BindingId>, V::Error> {
        Self::union(
            self.base.bindings_of_grantee(person),
            self.written.grantee_index.get(person),
        )
    }
    fn fence(&self, leg: &LegId) -> Result<Option<Fence>, V::Error> {
        layered(&self.written.fences, leg, || self.base.fence(leg))
    }
    fn settlement(&self, id: &SettlementId) -> Result<Option<SettlementRecord>, V::Error> {
        layered(&self.written.settlements, id, || self.base.settlement(id))
    }
    fn refund(&self, id: &RefundId) -> Result<Option<RefundRecord>, V::Error> {
        layered(&self.written.refunds, id, || self.base.refund(id))
    }
    fn credit(&self, id: &CreditId) -> Result<Option<CreditRecord>, V::Error> {
        layered(&self.written.credits, id, || self.base.credit(id))
    }
    /// The base's, or the last recorded if above it. (The node's store answers from a
    /// reservation counter that runs ahead of every serial written; an in-memory ledger
    /// answers the stored serial, which the recorded writes have not reached yet.)
    fn binding_serial(&self) -> Result<u64, V::Error> {
        Ok(self.base.binding_serial()?.max(self.written.binding_serial))
    }
    fn transfer(&self, id: &TransferId) -> Result<Option<TransferRecord>, V::Error> {
        layered(&self.written.transfers, id, || self.base.transfer(id))
    }
    fn wallet_usage(&self, person: &PersonId) -> Result<Option<WalletUsage>, V::Error> {
        layered(&self.written.wallet_usage, person, || self.base.wallet_usage(person))
    }
}
