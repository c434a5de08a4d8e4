//! The invariants, as named checks: cheap ones on every applied write set, the rest at the end.
//!
//! Names used in reports: `conservation`, `no_negative_available`, `atomicity`, `clearing`,
//! `exactly_once`, `authority_revocation`, `authority_freeze`, `limits`, `liveness`, and
//! `apply` (a fence compare-and-set failed: the core wrote from a stale read).

use std::collections::{BTreeMap, BTreeSet};

use exchange_core::ledger::LedgerView;
use exchange_core::overlay::Overlay;
use exchange_core::records::{Fence, JournalKind};
use exchange_core::time::YearMonth;
use exchange_core::{BindingId, BindingStatus, LegId, LegScope, Money, PersonId, Province, SettlementId, Write};

use crate::world::SimNode;

/// A failed check: the invariant's name and what was seen.
pub type Failed = (&'static str, String);

/// Per-node running totals, kept in step with the ledger's current (not only flushed) state.
#[derive(Debug, Default)]
struct Books {
    /// Sum of the node's account balances, in fen.
    balance_sum: i128,
    /// Sum of the node's journal, each entry signed by its kind, in fen.
    journal_sum: i128,
    debited: BTreeSet<LegId>,
    credited: BTreeSet<LegId>,
}

/// What one leg counts against its binding's limits: held while prepared, debited once
/// committed, in the month its hold was counted in (the participant's own calendar).
#[derive(Clone, Copy, Debug)]
struct LegUse {
    binding: BindingId,
    month: YearMonth,
    amount: Money,
}

/// Per node: the legs on bindings that hold or took money, and their sums per binding and month.
#[derive(Debug, Default)]
struct Usage {
    legs: BTreeMap<LegId, LegUse>,
    monthly: BTreeMap<(BindingId, YearMonth), i128>,
}

impl Usage {
    /// Records the leg's new fence; `None` when it counts nothing (aborted, or no binding).
    fn set(&mut self, leg: &LegId, new: Option<LegUse>) {
        if let Some(old) = self.legs.remove(leg) {
            *self.monthly.entry((old.binding, old.month)).or_default() -= fen(old.amount);
        }
        if let Some(new) = new {
            *self.monthly.entry((new.binding, new.month)).or_default() += fen(new.amount);
            self.legs.insert(leg.clone(), new);
        }
    }

    /// The leg's use under `fence`. A commit keeps the month its hold was counted in.
    fn of_fence(&self, leg: &LegId, fence: &Fence) -> Option<LegUse> {
        match fence {
            Fence::Prepared(hold) => hold.binding.map(|binding| LegUse {
                binding,
                month: hold.month,
                amount: hold.amount,
            }),
            Fence::Committed {
                binding: Some(binding),
                amount,
                ..
            } => self.legs.get(leg).map(|prepared| LegUse {
                binding: *binding,
                month: prepared.month,
                amount: *amount,
            }),
            Fence::Committed { binding: None, .. } | Fence::Aborted { .. } | Fence::Credited { .. } => None,
        }
    }

    /// What the legs of `leg`'s settlement attempt on `leg`'s account hold or took on `binding`.
    fn settlement_total(&self, leg: &LegId, binding: BindingId) -> i128 {
        let first = LegId {
            index: 0,
            ..leg.clone()
        };
        self.legs
            .range(first..)
            .take_while(|(other, _)| other.coordinator == leg.coordinator && other.scope == leg.scope)
            .filter(|(other, used)| other.account == leg.account && used.binding == binding)
            .map(|(_, used)| fen(used.amount))
            .sum()
    }
}

#[derive(Clone, Copy, Debug)]
struct TrackedHold {
    since_ms: u64,
    timeout_ms: u64,
}

/// The invariant checker of one run.
#[derive(Debug)]
pub(crate) struct Checker {
    books: Vec<Books>,
    usage: Vec<Usage>,
    holds: BTreeMap<(usize, LegId), TrackedHold>,
    pub longest_in_doubt_ms: u64,
    pub holds_resolved: u64,
}

fn fen(money: Money) -> i128 {
    i128::from(money.fen())
}

impl Checker {
    pub fn new(nodes: usize) -> Checker {
        Checker {
            books: (0..nodes).map(|_| Books::default()).collect(),
            usage: (0..nodes).map(|_| Usage::default()).collect(),
            holds: BTreeMap::new(),
            longest_in_doubt_ms: 0,
            holds_resolved: 0,
        }
    }

    /// Checks a write set before and after applying it to `node`'s ledger.
    pub fn apply(&mut self, node: &mut SimNode, index: usize, writes: &[Write], time: u64) -> Result<(), Failed> {
        let province = node.province;
        let (Some(books), Some(usage)) = (self.books.get_mut(index), self.usage.get_mut(index)) else {
            return Ok(());
        };
        let mut touched: Vec<(PersonId, Money)> = Vec::new();
        {
            let tables = node.ledger.tables();
            // A set may be several handlers' (a batch of peer messages, see `handle_batch`):
            // each write is checked against the state the writes before it leave.
            let mut before = Overlay::new(&node.ledger);
            let mut debited_here: BTreeSet<&LegId> = BTreeSet::new();
            let mut credited_here: BTreeSet<&LegId> = BTreeSet::new();
            for write in writes {
                match write {
                    Write::Account(account) => {
                        if !touched.iter().any(|(p, _)| *p == account.person) {
                            let old = tables.accounts.get(&account.person).map_or(Money::ZERO, |a| a.balance);
                            touched.push((account.person, old));
                        }
                        if account.held > account.balance {
                            return Err((
                                "no_negative_available",
                                format!(
                                    "node {province}: account {} written holding {} with a balance of {}",
                                    account.person, account.held, account.balance
                                ),
                            ));
                        }
                    }
                    Write::Fence {
                        leg,
                        new: Fence::Prepared(hold),
                        ..
                    } => {
                        let binding = hold.binding.and_then(|b| before.binding(&b).ok().flatten());
                        if let Some(binding) = binding
                            && let BindingStatus::Revoked { at_wall_ms } = binding.status
                        {
                            return Err((
                                "authority_revocation",
                                format!(
                                    "node {province} held {} on leg {leg} under binding {} revoked at wall {at_wall_ms}",
                                    hold.amount, binding.id
                                ),
                            ));
                        }
                        if before.account(&hold.account).ok().flatten().is_some_and(|a| a.frozen) {
                            return Err((
                                "authority_freeze",
                                format!(
                                    "node {province} held {} on leg {leg} on frozen account {}",
                                    hold.amount, hold.account
                                ),
                            ));
                        }
                    }
                    Write::Journal(entry) => {
                        let seen = match (&entry.kind, &entry.leg) {
                            (JournalKind::Debit, Some(leg)) => books.debited.contains(leg) || !debited_here.insert(leg),
                            (JournalKind::RefundCredit, Some(leg)) => {
                                books.credited.contains(leg) || !credited_here.insert(leg)
                            }
                            _ => false,
                        };
                        if seen {
                            return Err((
                                "exactly_once",
                                format!(
                                    "node {province} journals a second {:?} for leg {}",
                                    entry.kind,
                                    entry.leg.as_ref().map(ToString::to_string).unwrap_or_default()
                                ),
                            ));
                        }
                    }
                    _ => {}
                }
                before.record(std::slice::from_ref(write));
            }
        }
        node.ledger
            .apply(writes)
            .map_err(|error| ("apply", format!("node {province}: write set refused: {error}")))?;
        let tables = node.ledger.tables();
        for (person, old) in touched {
            let Some(account) = tables.accounts.get(&person) else {
                continue;
            };
            books.balance_sum += fen(account.balance) - fen(old);
            if account.held > account.balance {
                return Err((
                    "no_negative_available",
                    format!(
                        "node {province}: account {person} holds {} with a balance of {}",
                        account.held, account.balance
                    ),
                ));
            }
        }
        for write in writes {
            match write {
                Write::Journal(entry) => {
                    books.journal_sum += i128::from(entry.kind.balance_sign()) * fen(entry.amount);
                    if let Some(leg) = &entry.leg {
                        match entry.kind {
                            JournalKind::Debit => {
                                books.debited.insert(leg.clone());
                            }
                            JournalKind::RefundCredit => {
                                books.credited.insert(leg.clone());
                            }
                            _ => {}
                        }
                    }
                }
                Write::Binding(binding) => {
                    if let Some(limit) = binding.limits.monthly
                        && binding.usage_in_month > limit
                    {
                        return Err((
                            "limits",
                            format!(
                                "node {province}: binding {} used {} in {}, above its monthly limit {limit}",
                                binding.id, binding.usage_in_month, binding.usage_month
                            ),
                        ));
                    }
                }
                Write::Fence { leg, new, .. } => {
                    let used = usage.of_fence(leg, new);
                    usage.set(leg, used);
                    if let Some(used) = used {
                        limits_hold(province, tables, usage, leg, used)?;
                    }
                }
                Write::LiveHold { leg, live: true } => {
                    let timeout_ms = match tables.fences.get(leg) {
                        Some(Fence::Prepared(hold)) => hold.hold_timeout_ms,
                        _ => 0,
                    };
                    self.holds.entry((index, leg.clone())).or_insert(TrackedHold {
                        since_ms: time,
                        timeout_ms,
                    });
                }
                Write::LiveHold { leg, live: false } => {
                    if let Some(hold) = self.holds.remove(&(index, leg.clone())) {
                        self.holds_resolved = self.holds_resolved.saturating_add(1);
                        self.longest_in_doubt_ms = self.longest_in_doubt_ms.max(time.saturating_sub(hold.since_ms));
                    }
                }
                _ => {}
            }
        }
        if books.balance_sum != books.journal_sum {
            return Err((
                "conservation",
                format!(
                    "node {province}: balances sum to {} fen but the journal to {} fen",
                    books.balance_sum, books.journal_sum
                ),
            ));
        }
        Ok(())
    }

    /// Rebuilds `node`'s totals from what survived its crash.
    pub fn after_crash(&mut self, node: &SimNode, index: usize, time: u64) {
        let tables = node.ledger.tables();
        let mut books = Books {
            balance_sum: tables.accounts.values().map(|a| fen(a.balance)).sum(),
            ..Books::default()
        };
        for (_, entry) in &tables.journal {
            books.journal_sum += i128::from(entry.kind.balance_sign()) * fen(entry.amount);
            if let Some(leg) = &entry.leg {
                match entry.kind {
                    JournalKind::Debit => {
                        books.debited.insert(leg.clone());
                    }
                    JournalKind::RefundCredit => {
                        books.credited.insert(leg.clone());
                    }
                    _ => {}
                }
            }
        }
        if let Some(slot) = self.books.get_mut(index) {
            *slot = books;
        }
        if let Some(slot) = self.usage.get_mut(index) {
            // What survived the crash: the months of surviving commits come from the holds we
            // saw (a commit's hold was written, and so flushed, before it).
            let mut usage = Usage::default();
            for (leg, fence) in &tables.fences {
                let used = match fence {
                    Fence::Committed { .. } => slot.of_fence(leg, fence),
                    _ => usage.of_fence(leg, fence),
                };
                usage.set(leg, used);
            }
            *slot = usage;
        }
        self.holds
            .retain(|(node_index, leg), _| *node_index != index || tables.live_holds.contains(leg));
        for leg in &tables.live_holds {
            let timeout_ms = match tables.fences.get(leg) {
                Some(Fence::Prepared(hold)) => hold.hold_timeout_ms,
                _ => 0,
            };
            // A resolution lost in the crash makes the hold live again; count it from now.
            self.holds.entry((index, leg.clone())).or_insert(TrackedHold {
                since_ms: time,
                timeout_ms,
            });
        }
    }

    /// A live hold past its deadline plus `bound_ms`, counted from when the faults healed.
    pub fn overdue_hold(&self, time: u64, healed_ms: u64, bound_ms: u64) -> Option<String> {
        self.holds.iter().find_map(|((node, leg), hold)| {
            let start = hold.since_ms.max(healed_ms);
            let deadline = start.saturating_add(hold.timeout_ms).saturating_add(bound_ms);
            (time > deadline).then(|| {
                format!(
                    "hold on leg {leg} (node #{node}) live since {} ms; faults healed at {healed_ms} ms; \
                     deadline {} ms + bound {bound_ms} ms passed at {deadline} ms",
                    hold.since_ms, hold.timeout_ms
                )
            })
        })
    }

    /// The invariants checked once the run has drained to quiescence.
    pub fn final_checks(&self, nodes: &[SimNode]) -> Option<Failed> {
        quiescence(nodes)
            .or_else(|| limits(nodes, &self.usage))
            .or_else(|| atomicity(nodes))
            .or_else(|| clearing(nodes))
            .or_else(|| national_conservation(nodes))
    }
}

/// After a leg's fence changed: what its settlement and its month hold or took on its binding
/// stays within the binding's limits (holds count, as the participant counts them).
fn limits_hold(
    province: Province,
    tables: &exchange_core::mem::Tables,
    usage: &Usage,
    leg: &LegId,
    used: LegUse,
) -> Result<(), Failed> {
    let Some(binding) = tables.bindings.get(&used.binding) else {
        return Ok(());
    };
    if let Some(limit) = binding.limits.per_settlement {
        let total = usage.settlement_total(leg, used.binding);
        if total > fen(limit) {
            return Err((
                "limits",
                format!(
                    "node {province}: settlement {} holds or took {total} fen on binding {} (now leg {leg}), above its per-settlement limit {limit}",
                    leg.settlement(),
                    used.binding
                ),
            ));
        }
    }
    if let Some(limit) = binding.limits.monthly {
        let total = usage.monthly.get(&(used.binding, used.month)).copied().unwrap_or(0);
        if total > fen(limit) {
            return Err((
                "limits",
                format!(
                    "node {province}: binding {} holds or took {total} fen in {} (now leg {leg}), above its monthly limit {limit}",
                    used.binding, used.month
                ),
            ));
        }
    }
    Ok(())
}

/// At the end: what each binding paid for one settlement (all attempts of its id) and in one
/// calendar month, from the committed fences, is within its limits.
fn limits(nodes: &[SimNode], usage: &[Usage]) -> Option<Failed> {
    for (node, used) in nodes.iter().zip(usage) {
        let province = node.province;
        let tables = node.ledger.tables();
        let mut per_settlement: BTreeMap<(Province, &SettlementId, BindingId), i128> = BTreeMap::new();
        let mut per_month: BTreeMap<(BindingId, YearMonth), i128> = BTreeMap::new();
        for (leg, fence) in &tables.fences {
            let Fence::Committed {
                binding: Some(binding),
                amount,
                ..
            } = fence
            else {
                continue;
            };
            if !matches!(leg.scope, LegScope::Pay { .. }) {
                continue;
            }
            *per_settlement
                .entry((leg.coordinator, leg.settlement(), *binding))
                .or_default() += fen(*amount);
            let Some(month) = used.legs.get(leg).map(|u| u.month) else {
                return Some((
                    "limits",
                    format!("node {province} committed leg {leg} on binding {binding} without a hold the checker saw"),
                ));
            };
            *per_month.entry((*binding, month)).or_default() += fen(*amount);
        }
        for ((coordinator, settlement, binding), total) in per_settlement {
            let limit = tables.bindings.get(&binding).and_then(|b| b.limits.per_settlement);
            if let Some(limit) = limit
                && total > fen(limit)
            {
                return Some((
                    "limits",
                    format!(
                        "node {province}: binding {binding} paid {total} fen for settlement {settlement} of {coordinator}, above its per-settlement limit {limit}"
                    ),
                ));
            }
        }
        for ((binding, month), total) in per_month {
            let limit = tables.bindings.get(&binding).and_then(|b| b.limits.monthly);
            if let Some(limit) = limit
                && total > fen(limit)
            {
                return Some((
                    "limits",
                    format!(
                        "node {province}: binding {binding} paid {total} fen in {month}, above its monthly limit {limit}"
                    ),
                ));
            }
        }
    }
    None
}

fn node_index(nodes: &[SimNode], province: Province) -> Option<usize> {
    nodes.iter().position(|n| n.province == province)
}

fn quiescence(nodes: &[SimNode]) -> Option<Failed> {
    for node in nodes {
        let province = node.province;
        let tables = node.ledger.tables();
        if let Some(leg) = tables.live_holds.iter().next() {
            return Some((
                "liveness",
                format!(
                    "node {province} still holds leg {leg} after the run drained ({} live holds)",
                    tables.live_holds.len()
                ),
            ));
        }
        if let Some(key) = tables.outbox.iter().next() {
            return Some((
                "liveness",
                format!("node {province} still has {key:?} in its outbox after the run drained"),
            ));
        }
        if let Some(core) = &node.core {
            let coordinator = core.coordinator();
            if coordinator.in_flight() > 0 || coordinator.deliveries_pending() > 0 {
                return Some((
                    "liveness",
                    format!(
                        "node {province} still has {} settlements undecided and {} deliveries pending after the run drained",
                        coordinator.in_flight(),
                        coordinator.deliveries_pending()
                    ),
                ));
            }
        }
        if let Some(account) = tables.accounts.values().find(|a| !a.held.is_zero()) {
            return Some((
                "atomicity",
                format!(
                    "node {province}: account {} still holds {} with no live hold",
                    account.person, account.held
                ),
            ));
        }
    }
    None
}

fn atomicity(nodes: &[SimNode]) -> Option<Failed> {
    let mut decided: BTreeMap<&LegId, Money> = BTreeMap::new();
    let mut refund_parts: BTreeMap<&LegId, Money> = BTreeMap::new();
    for coordinator in nodes {
        let c = coordinator.province;
        let tables = coordinator.ledger.tables();
        for record in tables.settlements.values() {
            for leg in &record.legs {
                let Some(participant) = node_index(nodes, leg.province).and_then(|i| nodes.get(i)) else {
                    continue;
                };
                let fence = participant.ledger.tables().fences.get(&leg.leg);
                let ok = match fence {
                    Some(Fence::Committed { amount, .. }) => *amount == leg.amount && !leg.amount.is_zero(),
                    Some(Fence::Aborted { .. }) | None => leg.amount.is_zero(),
                    Some(Fence::Prepared(_)) | Some(Fence::Credited { .. }) => false,
                };
                if !ok {
                    return Some((
                        "atomicity",
                        format!(
                            "settlement {} (coordinator {c}) decided {} on leg {} but participant {} has {fence:?}",
                            record.request.settlement, leg.amount, leg.leg, leg.province
                        ),
                    ));
                }
                if !leg.amount.is_zero() {
                    decided.insert(&leg.leg, leg.amount);
                }
            }
        }
        for record in tables.refunds.values() {
            for part in &record.receipt.parts {
                let Some(participant) = node_index(nodes, part.province).and_then(|i| nodes.get(i)) else {
                    continue;
                };
                let fence = participant.ledger.tables().fences.get(&part.leg);
                if !matches!(fence, Some(Fence::Credited { amount, .. }) if *amount == part.amount) {
                    return Some((
                        "atomicity",
                        format!(
                            "refund {} (coordinator {c}) credits {} on leg {} but participant {} has {fence:?}",
                            record.request.refund, part.amount, part.leg, part.province
                        ),
                    ));
                }
                refund_parts.insert(&part.leg, part.amount);
            }
        }
    }
    for participant in nodes {
        let p = participant.province;
        for (leg, fence) in &participant.ledger.tables().fences {
            match fence {
                Fence::Committed { amount, .. }
                    if matches!(leg.scope, LegScope::Pay { .. }) && decided.get(leg) != Some(amount) =>
                {
                    return Some((
                        "atomicity",
                        format!(
                            "node {p} committed {amount} on leg {leg}, but its coordinator decided {:?}",
                            decided.get(leg)
                        ),
                    ));
                }
                Fence::Credited { amount, .. } if refund_parts.get(leg) != Some(amount) => {
                    return Some((
                        "atomicity",
                        format!("node {p} credited {amount} on leg {leg}, which no refund decided"),
                    ));
                }
                _ => {}
            }
        }
    }
    None
}

fn clearing(nodes: &[SimNode]) -> Option<Failed> {
    // (coordinator, payer) -> net amount, as each side's journal tells it.
    let mut claimed: BTreeMap<(Province, Province), i128> = BTreeMap::new();
    let mut paid: BTreeMap<(Province, Province), i128> = BTreeMap::new();
    for node in nodes {
        let me = node.province;
        for (_, entry) in &node.ledger.tables().journal {
            let Some(other) = entry.counterparty else {
                continue;
            };
            if other == me {
                continue;
            }
            let amount = fen(entry.amount);
            match entry.kind {
                JournalKind::MutualAidReceived => *claimed.entry((me, other)).or_default() += amount,
                JournalKind::MutualAidRefunded => *claimed.entry((me, other)).or_default() -= amount,
                JournalKind::Debit => *paid.entry((other, me)).or_default() += amount,
                JournalKind::RefundCredit => *paid.entry((other, me)).or_default() -= amount,
                // A wallet transfer: the receiver (`me`) records what the grantor's province
                // (`other`) owes it; the grantor's province records what it owes.
                JournalKind::TransferReceived => *claimed.entry((me, other)).or_default() += amount,
                JournalKind::TransferSent => *paid.entry((other, me)).or_default() += amount,
                JournalKind::Credit => {}
            }
        }
    }
    let pairs: BTreeSet<&(Province, Province)> = claimed.keys().chain(paid.keys()).collect();
    for pair in pairs {
        let a = claimed.get(pair).copied().unwrap_or(0);
        let b = paid.get(pair).copied().unwrap_or(0);
        if a != b {
            return Some((
                "clearing",
                format!(
                    "coordinator {} records {a} fen of mutual aid from {}, which records {b} fen paid",
                    pair.0, pair.1
                ),
            ));
        }
    }
    None
}

fn national_conservation(nodes: &[SimNode]) -> Option<Failed> {
    let mut balances: i128 = 0;
    let mut journal: i128 = 0;
    let mut decided: i128 = 0;
    let mut debited: i128 = 0;
    for node in nodes {
        let tables = node.ledger.tables();
        balances += tables.accounts.values().map(|a| fen(a.balance)).sum::<i128>();
        for (_, entry) in &tables.journal {
            journal += i128::from(entry.kind.balance_sign()) * fen(entry.amount);
            match entry.kind {
                JournalKind::Debit => debited += fen(entry.amount),
                JournalKind::RefundCredit => debited -= fen(entry.amount),
                _ => {}
            }
        }
        for record in tables.settlements.values() {
            decided += record.legs.iter().map(|l| fen(l.amount)).sum::<i128>();
        }
        for record in tables.refunds.values() {
            decided -= record.receipt.parts.iter().map(|p| fen(p.amount)).sum::<i128>();
        }
        // A committed wallet transfer debits its grantor (its debit leg) and credits the
        // relative (its credit leg, journaled `TransferReceived`, not counted here).
        for record in tables.transfers.values() {
            decided += record
                .legs
                .iter()
                .filter(|l| l.leg.index == 0)
                .map(|l| fen(l.amount))
                .sum::<i128>();
        }
    }
    if balances != journal {
        return Some((
            "conservation",
            format!("nationally, balances sum to {balances} fen but the journals to {journal} fen"),
        ));
    }
    if decided != debited {
        return Some((
            "conservation",
            format!(
                "nationally, coordinators decided {decided} fen of account payments (net of refunds) but accounts were debited {debited} fen"
            ),
        ));
    }
    None
}
