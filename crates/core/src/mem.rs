//! An in-memory ledger for the simulator, the model checker and unit tests of the core.
//!
//! It models a disk: writes are visible at once, but only flushed writes survive a crash.
//! (The real node stores the same records in sled.)

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use crate::account::Account;
use crate::binding::Binding;
use crate::ids::{BindingId, CreditId, LegId, RefundId, SettlementId, TransferId};
use crate::ledger::{ApplyError, LedgerView, Write};
use crate::person::PersonId;
use crate::records::{
    CreditRecord, Fence, JournalEntry, OutboxKey, RefundRecord, SettlementRecord, TransferRecord, WalletUsage,
};

/// Every table of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tables {
    pub accounts: BTreeMap<PersonId, Account>,
    pub bindings: BTreeMap<BindingId, Binding>,
    pub copies: BTreeMap<BindingId, Binding>,
    pub grantor_index: BTreeMap<PersonId, Vec<BindingId>>,
    pub grantee_index: BTreeMap<PersonId, Vec<BindingId>>,
    pub fences: BTreeMap<LegId, Fence>,
    pub live_holds: BTreeSet<LegId>,
    pub settlements: BTreeMap<SettlementId, SettlementRecord>,
    pub refunds: BTreeMap<RefundId, RefundRecord>,
    pub outbox: BTreeSet<OutboxKey>,
    pub credits: BTreeMap<CreditId, CreditRecord>,
    pub binding_serial: u64,
    pub journal: Vec<(u64, JournalEntry)>,
    pub transfers: BTreeMap<TransferId, TransferRecord>,
    pub wallet_usage: BTreeMap<PersonId, WalletUsage>,
}

impl Tables {
    /// Each fence compare-and-set against the value the writes before it leave.
    fn check(&self, writes: &[Write]) -> Result<(), ApplyError> {
        crate::ledger::check_fences(writes, |leg| self.fences.get(leg))
    }

    /// Applies a set without checking its fences (the caller has, or only lays it over a
    /// view: see `overlay.rs`).
    pub(crate) fn apply_unchecked(&mut self, writes: &[Write]) {
        for write in writes {
            match write.clone() {
                Write::Account(account) => {
                    self.accounts.insert(account.person, account);
                }
                Write::Binding(binding) => {
                    self.bindings.insert(binding.id, binding);
                }
                Write::BindingCopy(binding) => {
                    self.copies.insert(binding.id, binding);
                }
                Write::GrantorIndex { person, bindings } => {
                    let ids = crate::ledger::index_union(self.grantor_index.get(&person).map(Vec::as_slice), &bindings);
                    self.grantor_index.insert(person, ids);
                }
                Write::GranteeIndex { person, bindings } => {
                    let ids = crate::ledger::index_union(self.grantee_index.get(&person).map(Vec::as_slice), &bindings);
                    self.grantee_index.insert(person, ids);
                }
                Write::Fence { leg, new, .. } => {
                    self.fences.insert(leg, new);
                }
                Write::LiveHold { leg, live } => {
                    if live {
                        self.live_holds.insert(leg);
                    } else {
                        self.live_holds.remove(&leg);
                    }
                }
                Write::Settlement(record) => {
                    self.settlements.insert(record.request.settlement.clone(), record);
                }
                Write::Refund(record) => {
                    self.refunds.insert(record.request.refund.clone(), record);
                }
                Write::Outbox { key, live } => {
                    if live {
                        self.outbox.insert(key);
                    } else {
                        self.outbox.remove(&key);
                    }
                }
                Write::Credit(record) => {
                    self.credits.insert(record.credit.clone(), record);
                }
                Write::BindingSerial(serial) => self.binding_serial = serial,
                Write::Journal(entry) => {
                    let seq = self.journal.last().map(|(seq, _)| seq.saturating_add(1)).unwrap_or(1);
                    self.journal.push((seq, entry));
                }
                Write::Transfer(record) => {
                    self.transfers.insert(record.request.transfer.clone(), record);
                }
                Write::WalletUsage(usage) => {
                    self.wallet_usage.insert(usage.person, usage);
                }
            }
        }
    }
}

/// An in-memory ledger. With crash modelling on, `flush` marks what survives `crash`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemLedger {
    current: Tables,
    /// The flushed state, when crash modelling is on (`None`: every write is durable at once).
    durable: Option<Box<Tables>>,
    unflushed: Vec<Vec<Write>>,
}

impl MemLedger {
    /// A ledger where every applied write is durable at once.
    pub fn new() -> MemLedger {
        MemLedger::default()
    }

    /// A ledger that loses unflushed writes in a crash.
    pub fn with_crash_model() -> MemLedger {
        MemLedger {
            current: Tables::default(),
            durable: Some(Box::default()),
            unflushed: Vec::new(),
        }
    }

    pub fn tables(&self) -> &Tables {
        &self.current
    }

    /// Applies a write set atomically: all fence compare-and-sets hold, or nothing changes.
    pub fn apply(&mut self, writes: &[Write]) -> Result<(), ApplyError> {
        self.current.check(writes)?;
        self.current.apply_unchecked(writes);
        if self.durable.is_some() && !writes.is_empty() {
            self.unflushed.push(writes.to_vec());
        }
        Ok(())
    }

    /// Number of write sets applied since the last flush.
    pub fn unflushed(&self) -> usize {
        self.unflushed.len()
    }

    /// Makes everything applied so far durable.
    pub fn flush(&mut self) {
        if let Some(durable) = self.durable.as_mut() {
            for writes in self.unflushed.drain(..) {
                durable.apply_unchecked(&writes);
            }
        }
    }

    /// Loses every unflushed write, as a process crash or power loss would.
    pub fn crash(&mut self) {
        if let Some(durable) = &self.durable {
            self.current = (**durable).clone();
            self.unflushed.clear();
        }
    }
}

impl LedgerView for MemLedger {
    type Error = Infallible;

    fn account(&self, person: &PersonId) -> Result<Option<Account>, Infallible> {
        Ok(self.current.accounts.get(person).cloned())
    }
    fn binding(&self, id: &BindingId) -> Result<Option<Binding>, Infallible> {
        Ok(self.current.bindings.get(id).cloned())
    }
    fn binding_copy(&self, id: &BindingId) -> Result<Option<Binding>, Infallible> {
        Ok(self.current.copies.get(id).cloned())
    }
    fn bindings_of_grantor(&self, person: &PersonId) -> Result<Vec<BindingId>, Infallible> {
        Ok(self.current.grantor_index.get(person).cloned().unwrap_or_default())
    }
    fn bindings_of_grantee(&self, person: &PersonId) -> Result<Vec<BindingId>, Infallible> {
        Ok(self.current.grantee_index.get(person).cloned().unwrap_or_default())
    }
    fn fence(&self, leg: &LegId) -> Result<Option<Fence>, Infallible> {
        Ok(self.current.fences.get(leg).cloned())
    }
    fn settlement(&self, id: &SettlementId) -> Result<Option<SettlementRecord>, Infallible> {
        Ok(self.current.settlements.get(id).cloned())
    }
    fn refund(&self, id: &RefundId) -> Result<Option<RefundRecord>, Infallible> {
        Ok(self.current.refunds.get(id).cloned())
    }
    fn credit(&self, id: &CreditId) -> Result<Option<CreditRecord>, Infallible> {
        Ok(self.current.credits.get(id).cloned())
    }
    fn binding_serial(&self) -> Result<u64, Infallible> {
        Ok(self.current.binding_serial)
    }
    fn transfer(&self, id: &TransferId) -> Result<Option<TransferRecord>, Infallible> {
        Ok(self.current.transfers.get(id).cloned())
    }
    fn wallet_usage(&self, person: &PersonId) -> Result<Option<WalletUsage>, Infallible> {
        Ok(self.current.wallet_usage.get(person).cloned())
    }
}
