//! The invariants checked in every reachable state, each as a function that explains a failure.
//!
//! stateright takes properties as plain `fn` pointers returning `bool`; each one here wraps an
//! `explain_*` function returning `Err(reason)`, so that a report can say *why* the last state
//! of a counterexample breaks the rule, not only that it does.

use std::collections::{BTreeMap, BTreeSet};

use exchange_core::ids::{LegId, LegScope, SettlementId};
use exchange_core::message::ClientReply;
use exchange_core::records::{Fence, JournalKind, SettlementRecord};
use exchange_core::{Money, PersonId};
use stateright::Property;

use crate::model::{ExchangeModel, State};

pub const NO_ERROR: &str = "no handler or storage error";
pub const NO_PROTOCOL_VIOLATION: &str = "no protocol violation reported";
pub const CONSERVATION: &str = "conservation";
pub const NO_NEGATIVE_AVAILABLE: &str = "no negative available balance";
pub const ATOMICITY: &str = "atomicity";
pub const EXACTLY_ONCE: &str = "exactly once";
pub const AUTHORITY: &str = "authority";
pub const RECEIPTS_MATCH: &str = "receipts match records";
pub const EVENTUAL_RESOLUTION: &str = "every hold eventually resolves";

type Explain = fn(&ExchangeModel, &State) -> Result<(), String>;

/// Every property, in report order, with the function that explains its failure.
pub const EXPLAINED: [(&str, Explain); 9] = [
    (NO_ERROR, explain_no_error),
    (NO_PROTOCOL_VIOLATION, explain_no_protocol_violation),
    (CONSERVATION, explain_conservation),
    (NO_NEGATIVE_AVAILABLE, explain_no_negative_available),
    (ATOMICITY, explain_atomicity),
    (EXACTLY_ONCE, explain_exactly_once),
    (AUTHORITY, explain_authority),
    (RECEIPTS_MATCH, explain_receipts_match),
    (EVENTUAL_RESOLUTION, explain_eventual_resolution),
];

pub fn all() -> Vec<Property<ExchangeModel>> {
    let mut properties = vec![
        Property::always(NO_ERROR, |m: &ExchangeModel, s: &State| explain_no_error(m, s).is_ok()),
        Property::always(NO_PROTOCOL_VIOLATION, |m: &ExchangeModel, s: &State| {
            explain_no_protocol_violation(m, s).is_ok()
        }),
        Property::always(CONSERVATION, |m: &ExchangeModel, s: &State| {
            explain_conservation(m, s).is_ok()
        }),
        Property::always(NO_NEGATIVE_AVAILABLE, |m: &ExchangeModel, s: &State| {
            explain_no_negative_available(m, s).is_ok()
        }),
        Property::always(ATOMICITY, |m: &ExchangeModel, s: &State| {
            explain_atomicity(m, s).is_ok()
        }),
        Property::always(EXACTLY_ONCE, |m: &ExchangeModel, s: &State| {
            explain_exactly_once(m, s).is_ok()
        }),
        Property::always(AUTHORITY, |m: &ExchangeModel, s: &State| {
            explain_authority(m, s).is_ok()
        }),
        Property::always(RECEIPTS_MATCH, |m: &ExchangeModel, s: &State| {
            explain_receipts_match(m, s).is_ok()
        }),
    ];
    properties.push(Property::always(EVENTUAL_RESOLUTION, |m: &ExchangeModel, s: &State| {
        !m.options.liveness || explain_eventual_resolution(m, s).is_ok()
    }));
    properties
}

/// The explanation of property `name` on `state` (`Ok` when it holds).
pub fn explain(model: &ExchangeModel, name: &str, state: &State) -> Result<(), String> {
    match EXPLAINED.iter().find(|(n, _)| *n == name) {
        Some((_, explain)) => explain(model, state),
        None => Err(format!("unknown property {name}")),
    }
}

fn explain_no_error(_: &ExchangeModel, state: &State) -> Result<(), String> {
    state.error.clone().map_or(Ok(()), Err)
}

fn explain_no_protocol_violation(_: &ExchangeModel, state: &State) -> Result<(), String> {
    state.protocol_note.clone().map_or(Ok(()), Err)
}

fn explain_authority(_: &ExchangeModel, state: &State) -> Result<(), String> {
    state.authority_breach.clone().map_or(Ok(()), Err)
}

/// The settlement of a payment leg (refund legs are not part of this model's runs).
fn pay_settlement(leg: &LegId) -> Option<&SettlementId> {
    match &leg.scope {
        LegScope::Pay { settlement, .. } => Some(settlement),
        _ => None,
    }
}

/// The coordinator's record of the settlement a leg belongs to.
fn record_of<'s>(state: &'s State, leg: &LegId) -> Option<&'s SettlementRecord> {
    let settlement = pay_settlement(leg)?;
    let node = state.node_of(leg.coordinator)?;
    state.nodes.get(node)?.ledger.tables().settlements.get(settlement)
}

fn signed(kind: JournalKind, amount: Money) -> i128 {
    i128::from(kind.balance_sign()) * i128::from(amount.fen())
}

/// Per node, the balances equal the journal's signed sum; globally, every debit is backed by
/// a coordinator's record of that leg with that amount on that account (money leaves an
/// account only for a decided settlement).
fn explain_conservation(_: &ExchangeModel, state: &State) -> Result<(), String> {
    for node in &state.nodes {
        let tables = node.ledger.tables();
        let balances: i128 = tables.accounts.values().map(|a| i128::from(a.balance.fen())).sum();
        let journal: i128 = tables.journal.iter().map(|(_, e)| signed(e.kind, e.amount)).sum();
        if balances != journal {
            return Err(format!(
                "{}: balances sum to {balances} fen but the journal to {journal} fen",
                node.province
            ));
        }
        for (seq, entry) in tables.journal.iter().filter(|(_, e)| e.kind == JournalKind::Debit) {
            let Some(leg) = &entry.leg else {
                return Err(format!("{}: debit #{seq} names no leg", node.province));
            };
            let decided = record_of(state, leg).and_then(|r| r.legs.iter().find(|l| &l.leg == leg));
            match decided {
                Some(d) if d.amount == entry.amount && Some(d.account) == entry.account => {}
                Some(d) => {
                    return Err(format!(
                        "{}: debit #{seq} of {} on leg {leg}, but the coordinator decided {} on {}",
                        node.province, entry.amount, d.amount, d.account
                    ));
                }
                None => {
                    return Err(format!(
                        "{}: debit #{seq} of {} on leg {leg}, which no coordinator record contains",
                        node.province, entry.amount
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Held never exceeds the balance, and what is held is exactly the live holds' amounts.
fn explain_no_negative_available(_: &ExchangeModel, state: &State) -> Result<(), String> {
    for node in &state.nodes {
        let tables = node.ledger.tables();
        let mut held: BTreeMap<PersonId, u64> = BTreeMap::new();
        let mut prepared = BTreeSet::new();
        for (leg, fence) in &tables.fences {
            if let Fence::Prepared(hold) = fence {
                let entry = held.entry(hold.account).or_default();
                *entry = entry.saturating_add(hold.amount.fen());
                prepared.insert(leg.clone());
            }
        }
        for account in tables.accounts.values() {
            if account.held > account.balance {
                return Err(format!(
                    "{}: account {} holds {} of a balance of {}",
                    node.province, account.person, account.held, account.balance
                ));
            }
            let expected = held.get(&account.person).copied().unwrap_or(0);
            if account.held.fen() != expected {
                return Err(format!(
                    "{}: account {} holds {} but its live holds sum to {expected} fen",
                    node.province, account.person, account.held
                ));
            }
        }
        if prepared != tables.live_holds {
            return Err(format!(
                "{}: live-hold index {:?} differs from prepared fences {:?}",
                node.province, tables.live_holds, prepared
            ));
        }
    }
    Ok(())
}

/// A participant commits a leg only with the amount the coordinator decided, and never aborts
/// a leg the coordinator decided to commit.
fn explain_atomicity(_: &ExchangeModel, state: &State) -> Result<(), String> {
    for node in &state.nodes {
        for (leg, fence) in &node.ledger.tables().fences {
            if pay_settlement(leg).is_none() {
                continue;
            }
            if let Fence::Committed { amount, .. } = fence {
                let decided = record_of(state, leg).and_then(|r| r.legs.iter().find(|l| &l.leg == leg));
                match decided {
                    Some(d) if d.amount == *amount => {}
                    Some(d) => {
                        return Err(format!(
                            "{}: leg {leg} committed {amount}, the coordinator decided {}",
                            node.province, d.amount
                        ));
                    }
                    None => {
                        return Err(format!(
                            "{}: leg {leg} committed {amount} but the coordinator has no COMMIT for it",
                            node.province
                        ));
                    }
                }
            }
        }
    }
    for coordinator in &state.nodes {
        for record in coordinator.ledger.tables().settlements.values() {
            for leg in record.legs.iter().filter(|l| !l.amount.is_zero()) {
                let fence = state
                    .node_of(leg.province)
                    .and_then(|n| state.nodes.get(n))
                    .and_then(|n| n.ledger.tables().fences.get(&leg.leg));
                if let Some(fence @ (Fence::Aborted { .. } | Fence::Credited { .. })) = fence {
                    return Err(format!(
                        "settlement {} decided {} on leg {}, but {} has {fence:?}",
                        record.request.settlement, leg.amount, leg.leg, leg.province
                    ));
                }
            }
        }
    }
    Ok(())
}

/// At most one debit per leg; per settlement, never more debited than decided, and exactly the
/// receipt's account-paid parts once every committed leg is applied.
fn explain_exactly_once(_: &ExchangeModel, state: &State) -> Result<(), String> {
    let mut debited: BTreeMap<SettlementId, u64> = BTreeMap::new();
    for node in &state.nodes {
        let mut seen = BTreeSet::new();
        for (_, entry) in node
            .ledger
            .tables()
            .journal
            .iter()
            .filter(|(_, e)| e.kind == JournalKind::Debit)
        {
            if let Some(leg) = &entry.leg {
                if !seen.insert(leg.clone()) {
                    return Err(format!("{}: leg {leg} debited twice", node.province));
                }
                if let Some(settlement) = pay_settlement(leg) {
                    let total = debited.entry(settlement.clone()).or_default();
                    *total = total.saturating_add(entry.amount.fen());
                }
            }
        }
    }
    for coordinator in &state.nodes {
        for (id, record) in &coordinator.ledger.tables().settlements {
            let decided: u64 = record.legs.iter().map(|l| l.amount.fen()).sum();
            let receipt = &record.receipt;
            let paid = receipt
                .mutual_aid
                .iter()
                .map(|p| p.amount.fen())
                .sum::<u64>()
                .saturating_add(receipt.own_account_paid.fen());
            if paid != decided {
                return Err(format!(
                    "settlement {id}: the receipt's account parts sum to {paid} fen, its legs to {decided} fen"
                ));
            }
            let done = debited.get(id).copied().unwrap_or(0);
            if done > decided {
                return Err(format!(
                    "settlement {id}: {done} fen debited, only {decided} fen decided"
                ));
            }
            let all_applied = record.legs.iter().filter(|l| !l.amount.is_zero()).all(|l| {
                state
                    .node_of(l.province)
                    .and_then(|n| state.nodes.get(n))
                    .and_then(|n| n.ledger.tables().fences.get(&l.leg))
                    .is_some_and(|f| matches!(f, Fence::Committed { .. }))
            });
            if all_applied && done != paid {
                return Err(format!(
                    "settlement {id}: every leg committed but {done} fen debited for a receipt of {paid} fen"
                ));
            }
        }
    }
    for id in debited.keys() {
        let recorded = state
            .nodes
            .iter()
            .any(|n| n.ledger.tables().settlements.contains_key(id));
        if !recorded {
            return Err(format!("settlement {id} debited without any coordinator record"));
        }
    }
    Ok(())
}

/// Every receipt a hospital got is the one the coordinator recorded (so all receipts of one
/// settlement agree, whatever retries and restarts happened).
fn explain_receipts_match(_: &ExchangeModel, state: &State) -> Result<(), String> {
    let coordinator = state.nodes.first().map(|n| n.ledger.tables());
    for (to, reply) in &state.replies {
        let ClientReply::Settled(receipt) = reply else {
            continue;
        };
        let recorded = coordinator.and_then(|t| t.settlements.get(&receipt.settlement));
        match recorded {
            Some(record) if &record.receipt == receipt => {}
            Some(_) => {
                return Err(format!(
                    "client {to} got a receipt for {} that differs from the record",
                    receipt.settlement
                ));
            }
            None => {
                return Err(format!(
                    "client {to} got a receipt for {} that was never recorded",
                    receipt.settlement
                ));
            }
        }
    }
    Ok(())
}

/// The safety properties on the last state of a fault-free completion. That state is
/// reachable (a completion takes only real steps: restarts, deliveries, timers in time order,
/// resends included), and it is where the decisions' commits have all landed, so a bounded
/// check (`CheckOptions::depth_max`) still checks the end of every run it cuts short.
fn explain_completed(model: &ExchangeModel, completed: &State) -> Result<(), String> {
    for (name, explain) in EXPLAINED.iter().filter(|(name, _)| *name != EVENTUAL_RESOLUTION) {
        explain(model, completed).map_err(|why| format!("its fault-free completion breaks \"{name}\": {why}"))?;
    }
    Ok(())
}

/// From this state, with faults stopped: restart crashed nodes, deliver every message, fire
/// timers in time order. Every hold must resolve and every decision be acknowledged.
pub fn explain_eventual_resolution(model: &ExchangeModel, state: &State) -> Result<(), String> {
    if state.error.is_some() {
        // Reported by its own property; a broken run proves nothing about liveness.
        return Ok(());
    }
    let resolved = |s: &State| {
        s.network.is_empty()
            && s.nodes.iter().all(|n| {
                n.core.is_some() && n.ledger.tables().live_holds.is_empty() && n.ledger.tables().outbox.is_empty()
            })
    };
    if resolved(state) {
        // The state itself is checked by the other properties.
        return Ok(());
    }
    let mut s = state.clone();
    for _ in 0..model.options.completion_steps_max {
        if resolved(&s) {
            return Ok(());
        }
        if let Some(node) = s.nodes.iter().position(|n| n.core.is_none()) {
            model.restart(&mut s, node);
        } else if let Some(envelope) = s.network.pop_first() {
            model.deliver(&mut s, envelope);
        } else if let Some(node) = s
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.timers.first().map(|t| (t.at_mono_ms, i)))
            .min()
            .map(|(_, i)| i)
        {
            model.fire(&mut s, node);
        } else {
            break;
        }
        if let Some(error) = &s.error {
            return Err(format!("fault-free completion hit an error: {error}"));
        }
    }
    if resolved(&s) {
        return explain_completed(model, &s);
    }
    let stuck: Vec<String> = s
        .nodes
        .iter()
        .flat_map(|n| {
            let tables = n.ledger.tables();
            let holds = tables
                .live_holds
                .iter()
                .map(move |l| format!("hold {l} on {}", n.province));
            let outbox = tables
                .outbox
                .iter()
                .map(move |k| format!("outbox {k:?} on {}", n.province));
            holds.chain(outbox)
        })
        .collect();
    Err(format!(
        "after {} fault-free steps still unresolved: {} (messages in flight: {}, timers armed: {})",
        model.options.completion_steps_max,
        stuck.join(", "),
        s.network.len(),
        s.nodes.iter().map(|n| n.timers.len()).sum::<usize>()
    ))
}
