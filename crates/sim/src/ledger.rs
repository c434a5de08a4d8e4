//! The simulated disk of one node: the core's tables, with an undo log of what is not yet
//! flushed.
//!
//! Same contract as `exchange_core::mem::MemLedger` with its crash model: an applied write set
//! is visible at once (fences by compare-and-set), `flush` makes everything applied so far
//! durable, `crash` loses every unflushed write. The difference is the cost, which dominates a
//! simulation: `MemLedger` keeps a second, durable copy of every table and replays each write
//! set into it at flush (three clones of every record); here a write is applied once, the value
//! it replaced is kept until the next flush, a flush just forgets those, and a crash (rare)
//! puts them back in reverse order. In debug builds a `MemLedger` shadows every operation and
//! the two must agree after every crash.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use exchange_core::account::Account;
use exchange_core::binding::Binding;
use exchange_core::ledger::{ApplyError, LedgerView, Write, index_union};
use exchange_core::mem::Tables;
use exchange_core::records::{
    CreditRecord, Fence, OutboxKey, RefundRecord, SettlementRecord, TransferRecord, WalletUsage,
};
use exchange_core::{BindingId, CreditId, LegId, PersonId, RefundId, SettlementId, TransferId};

/// What one applied write replaced (`None`/`false`: nothing was there).
#[derive(Debug)]
enum Undo {
    Account(PersonId, Option<Account>),
    Binding(BindingId, Option<Binding>),
    BindingCopy(BindingId, Option<Binding>),
    GrantorIndex(PersonId, Option<Vec<BindingId>>),
    GranteeIndex(PersonId, Option<Vec<BindingId>>),
    Fence(LegId, Option<Fence>),
    LiveHold(LegId, bool),
    Settlement(SettlementId, Option<SettlementRecord>),
    Refund(RefundId, Option<RefundRecord>),
    Outbox(OutboxKey, bool),
    Credit(CreditId, Option<CreditRecord>),
    BindingSerial(u64),
    Journal,
    Transfer(TransferId, Option<TransferRecord>),
    WalletUsage(PersonId, Option<WalletUsage>),
}

/// One node's ledger in the simulator.
#[derive(Debug, Default)]
pub struct SimLedger {
    current: Tables,
    /// What the unflushed writes replaced, oldest first.
    undo: Vec<Undo>,
    /// Write sets applied since the last flush.
    unflushed_sets: usize,
    #[cfg(debug_assertions)]
    shadow: Option<Box<exchange_core::mem::MemLedger>>,
}

fn put<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, old: Option<V>) {
    match old {
        Some(value) => {
            map.insert(key, value);
        }
        None => {
            map.remove(&key);
        }
    }
}

fn put_member<K: Ord>(set: &mut BTreeSet<K>, key: K, present: bool) {
    if present {
        set.insert(key);
    } else {
        set.remove(&key);
    }
}

impl SimLedger {
    pub fn new() -> SimLedger {
        SimLedger {
            #[cfg(debug_assertions)]
            shadow: Some(Box::new(exchange_core::mem::MemLedger::with_crash_model())),
            ..SimLedger::default()
        }
    }

    /// Everything applied so far, flushed or not.
    pub fn tables(&self) -> &Tables {
        &self.current
    }

    /// Applies a write set atomically: all fence compare-and-sets hold, or nothing changes.
    pub fn apply(&mut self, writes: &[Write]) -> Result<(), ApplyError> {
        exchange_core::ledger::check_fences(writes, |leg| self.current.fences.get(leg))?;
        #[cfg(debug_assertions)]
        if let Some(shadow) = self.shadow.as_mut() {
            let agrees = shadow.apply(writes).is_ok();
            debug_assert!(agrees, "MemLedger refused a write set SimLedger accepted");
        }
        if writes.is_empty() {
            return Ok(());
        }
        self.unflushed_sets = self.unflushed_sets.saturating_add(1);
        let t = &mut self.current;
        for write in writes {
            let undo = match write.clone() {
                Write::Account(account) => {
                    let person = account.person;
                    Undo::Account(person, t.accounts.insert(person, account))
                }
                Write::Binding(binding) => Undo::Binding(binding.id, t.bindings.insert(binding.id, binding)),
                Write::BindingCopy(binding) => Undo::BindingCopy(binding.id, t.copies.insert(binding.id, binding)),
                Write::GrantorIndex { person, bindings } => {
                    let ids = index_union(t.grantor_index.get(&person).map(Vec::as_slice), &bindings);
                    Undo::GrantorIndex(person, t.grantor_index.insert(person, ids))
                }
                Write::GranteeIndex { person, bindings } => {
                    let ids = index_union(t.grantee_index.get(&person).map(Vec::as_slice), &bindings);
                    Undo::GranteeIndex(person, t.grantee_index.insert(person, ids))
                }
                Write::Fence { leg, new, .. } => {
                    let old = t.fences.insert(leg.clone(), new);
                    Undo::Fence(leg, old)
                }
                Write::LiveHold { leg, live } => {
                    let was = if live {
                        !t.live_holds.insert(leg.clone())
                    } else {
                        t.live_holds.remove(&leg)
                    };
                    Undo::LiveHold(leg, was)
                }
                Write::Settlement(record) => {
                    let id = record.request.settlement.clone();
                    let old = t.settlements.insert(id.clone(), record);
                    Undo::Settlement(id, old)
                }
                Write::Refund(record) => {
                    let id = record.request.refund.clone();
                    let old = t.refunds.insert(id.clone(), record);
                    Undo::Refund(id, old)
                }
                Write::Outbox { key, live } => {
                    let was = if live {
                        !t.outbox.insert(key.clone())
                    } else {
                        t.outbox.remove(&key)
                    };
                    Undo::Outbox(key, was)
                }
                Write::Credit(record) => {
                    let id = record.credit.clone();
                    let old = t.credits.insert(id.clone(), record);
                    Undo::Credit(id, old)
                }
                Write::BindingSerial(serial) => Undo::BindingSerial(std::mem::replace(&mut t.binding_serial, serial)),
                Write::Journal(entry) => {
                    let seq = t.journal.last().map_or(1, |(seq, _)| seq.saturating_add(1));
                    t.journal.push((seq, entry));
                    Undo::Journal
                }
                Write::Transfer(record) => {
                    let id = record.request.transfer.clone();
                    let old = t.transfers.insert(id.clone(), record);
                    Undo::Transfer(id, old)
                }
                Write::WalletUsage(usage) => {
                    let person = usage.person;
                    Undo::WalletUsage(person, t.wallet_usage.insert(person, usage))
                }
            };
            self.undo.push(undo);
        }
        Ok(())
    }

    /// A fingerprint of every table (every id and amount), for the trace hash.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut digest = crate::trace::Digest::default();
        self.current.hash(&mut digest);
        digest.finish()
    }

    /// Number of write sets applied since the last flush.
    pub fn unflushed(&self) -> usize {
        self.unflushed_sets
    }

    /// Makes everything applied so far durable.
    pub fn flush(&mut self) {
        self.undo.clear();
        self.unflushed_sets = 0;
        #[cfg(debug_assertions)]
        if let Some(shadow) = self.shadow.as_mut() {
            shadow.flush();
        }
    }

    /// Loses every unflushed write, as a process crash or power loss would.
    pub fn crash(&mut self) {
        let t = &mut self.current;
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Account(key, old) => put(&mut t.accounts, key, old),
                Undo::Binding(key, old) => put(&mut t.bindings, key, old),
                Undo::BindingCopy(key, old) => put(&mut t.copies, key, old),
                Undo::GrantorIndex(key, old) => put(&mut t.grantor_index, key, old),
                Undo::GranteeIndex(key, old) => put(&mut t.grantee_index, key, old),
                Undo::Fence(key, old) => put(&mut t.fences, key, old),
                Undo::LiveHold(key, was) => put_member(&mut t.live_holds, key, was),
                Undo::Settlement(key, old) => put(&mut t.settlements, key, old),
                Undo::Refund(key, old) => put(&mut t.refunds, key, old),
                Undo::Outbox(key, was) => put_member(&mut t.outbox, key, was),
                Undo::Credit(key, old) => put(&mut t.credits, key, old),
                Undo::BindingSerial(old) => t.binding_serial = old,
                Undo::Journal => {
                    t.journal.pop();
                }
                Undo::Transfer(key, old) => put(&mut t.transfers, key, old),
                Undo::WalletUsage(key, old) => put(&mut t.wallet_usage, key, old),
            }
        }
        self.unflushed_sets = 0;
        #[cfg(debug_assertions)]
        if let Some(shadow) = self.shadow.as_mut() {
            shadow.crash();
            debug_assert!(
                shadow.tables() == &self.current,
                "SimLedger and MemLedger disagree after a crash"
            );
        }
    }
}

impl LedgerView for SimLedger {
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

#[cfg(test)]
mod tests {
    use exchange_core::{Money, Province, Scheme};

    use super::*;

    fn account(balance_fen: u64) -> Account {
        let province = Province::from_code(500_000).expect("Chongqing");
        Account {
            person: PersonId::synthetic(province.code(), 7),
            name: "Person 7".into(),
            province,
            scheme: Scheme::Employee,
            balance: Money::from_fen(balance_fen).expect("amount"),
            held: Money::ZERO,
            frozen: false,
            frozen_reason: None,
            closed: false,
            opened_wall_ms: 0,
        }
    }

    #[test]
    fn a_crash_loses_exactly_the_unflushed_writes() {
        let mut ledger = SimLedger::new();
        ledger
            .apply(&[Write::Account(account(100)), Write::BindingSerial(3)])
            .expect("applies");
        ledger.flush();
        let durable = ledger.tables().clone();
        ledger
            .apply(&[Write::Account(account(250)), Write::BindingSerial(4)])
            .expect("applies");
        assert_eq!(ledger.unflushed(), 1);
        assert_ne!(ledger.tables(), &durable);
        ledger.crash();
        assert_eq!(ledger.tables(), &durable);
        assert_eq!(ledger.unflushed(), 0);
    }

    #[test]
    fn the_digest_covers_amounts() {
        let mut a = SimLedger::new();
        let mut b = SimLedger::new();
        a.apply(&[Write::Account(account(100))]).expect("applies");
        b.apply(&[Write::Account(account(100))]).expect("applies");
        assert_eq!(a.digest(), b.digest());
        b.apply(&[Write::Account(account(101))]).expect("applies");
        assert_ne!(a.digest(), b.digest(), "one fen of difference must change the digest");
    }
}
