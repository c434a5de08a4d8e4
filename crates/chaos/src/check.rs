//! The checks after healing, as pure functions of the client's model and what was read from
//! the nodes (accounts, node status, whole journals, reconciliation reports). Every check
//! names what it found; an empty list means all held. Unit tests below feed each check a
//! broken observation to show that it can fail.

use std::collections::{BTreeMap, BTreeSet};

use exchange_core::records::{JournalEntry, JournalKind};
use exchange_core::{Account, Binding, BindingId, BindingStatus, LegId, LegScope, PersonId, Province, SettlementId};
use serde::Serialize;

use crate::model::Model;

/// Violations reported one by one; past this many only the count grows.
pub const VIOLATIONS_LISTED_MAX: usize = 200;

/// A node's counters, from the Monitor `Status` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub holds_in_flight: u32,
    pub settlements_in_flight: u32,
    pub last_journal_seq: u64,
}

/// What one province's reconciliation with a peer said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileSummary {
    pub legs_compared: u64,
    pub legs_matched: u64,
    pub mismatch_count: u64,
    /// The first mismatches, described.
    pub mismatches: Vec<String>,
}

/// Everything read from the nodes after healing and the quiescence wait.
#[derive(Clone, Debug)]
pub struct Observed {
    pub accounts: BTreeMap<PersonId, Result<Account, String>>,
    pub counters: BTreeMap<Province, Result<NodeCounters, String>>,
    pub journals: BTreeMap<Province, Result<Vec<(u64, JournalEntry)>, String>>,
    /// `(own, peer)` → own's reconciliation with peer.
    pub reconciliations: BTreeMap<(Province, Province), Result<ReconcileSummary, String>>,
    /// Bindings as their grantors' nodes (the authority) and their grantees' nodes (the
    /// copies) hold them; `Err` when a listing failed.
    pub bindings: Result<Bindings, String>,
}

/// Bindings read from the nodes.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    /// From each grantor's node.
    pub authority: BTreeMap<BindingId, Binding>,
    /// From each grantee's node.
    pub copies: BTreeMap<BindingId, Binding>,
}

impl Default for Observed {
    fn default() -> Observed {
        Observed {
            accounts: BTreeMap::new(),
            counters: BTreeMap::new(),
            journals: BTreeMap::new(),
            reconciliations: BTreeMap::new(),
            bindings: Ok(Bindings::default()),
        }
    }
}

/// After healing, every binding's copy agrees with its grantor's node: nothing is still
/// pending, an active binding is active on both sides, and a binding revoked or refused by
/// its grantor's node is active nowhere.
pub fn check_bindings(bindings: &Bindings) -> Vec<String> {
    let mut found = Vec::new();
    for (id, binding) in &bindings.authority {
        let copy = bindings.copies.get(id).map(|c| c.status);
        match (binding.status, copy) {
            (BindingStatus::Pending, _) => found.push(format!(
                "binding {id} of {} to {} still pending on the grantor's node",
                binding.grantor, binding.grantee
            )),
            (BindingStatus::Active, Some(BindingStatus::Active)) => {}
            (BindingStatus::Active, other) => found.push(format!(
                "binding {id} active on the grantor's node, the grantee's copy is {other:?}"
            )),
            (
                BindingStatus::Revoked { .. } | BindingStatus::Refused,
                Some(BindingStatus::Active | BindingStatus::Pending),
            ) => {
                found.push(format!(
                    "binding {id} is {:?} on the grantor's node, its copy still {:?}",
                    binding.status, copy
                ));
            }
            (BindingStatus::Revoked { .. } | BindingStatus::Refused, _) => {}
        }
    }
    for id in bindings.copies.keys() {
        if !bindings.authority.contains_key(id) {
            found.push(format!("binding {id} has a copy but no grantor's record"));
        }
    }
    found
}

/// How much the checks looked at (so that a report of zero violations means something).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckCounts {
    pub settlements_acknowledged: u64,
    pub settlements_refused: u64,
    /// Of the acknowledged settlements, decided after a second prepare round.
    pub settlements_two_rounds: u64,
    pub refunds_acknowledged: u64,
    pub credits_acknowledged: u64,
    pub accounts: u64,
    pub journal_entries: u64,
    /// Journal entries matched against a receipt (settlement and refund legs).
    pub journal_entries_matched: u64,
    /// Cross-province legs the reconciliations had to find (per unordered pair, summed).
    pub cross_province_legs: u64,
    pub reconciliations: u64,
    /// Bindings compared between the grantor's node and the grantee's.
    pub bindings: u64,
}

/// Collects violations, listing the first [`VIOLATIONS_LISTED_MAX`].
#[derive(Debug, Default)]
pub struct Violations {
    pub listed: Vec<String>,
    pub total: u64,
}

impl Violations {
    pub fn push(&mut self, violation: String) {
        self.total = self.total.saturating_add(1);
        if self.listed.len() < VIOLATIONS_LISTED_MAX {
            self.listed.push(violation);
        }
    }

    /// The list for the report; a last line says how many were left out.
    pub fn into_list(self) -> Vec<String> {
        let mut list = self.listed;
        let listed = u64::try_from(list.len()).unwrap_or(u64::MAX);
        if self.total > listed {
            list.push(format!("... and {} more violations", self.total - listed));
        }
        list
    }
}

/// Key of the settlement-leg entries expected on one node: (node, kind, settlement, account).
type PayKey = (Province, JournalKind, SettlementId, PersonId);
/// Key of a refund-leg entry: (node, kind, leg).
type RefundKey = (Province, JournalKind, LegId);

fn pair(a: Province, b: Province) -> (Province, Province) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Runs every check. Returns the violations and how much was checked.
pub fn check(model: &Model, observed: &Observed) -> (Vec<String>, CheckCounts) {
    let mut v = Violations::default();
    let mut counts = CheckCounts::default();

    // Liveness of the model: after healing, every request has its answer.
    let mut skip_settlements: BTreeSet<SettlementId> = BTreeSet::new();
    for (id, settlement) in &model.settlements {
        match &settlement.outcome {
            crate::model::Outcome::Pending => {
                v.push(format!(
                    "settlement {id} (coordinator {}) still unanswered after healing",
                    settlement.coordinator.code()
                ));
                skip_settlements.insert(id.clone());
            }
            crate::model::Outcome::Refused(_) => counts.settlements_refused += 1,
            crate::model::Outcome::Done(_) => counts.settlements_acknowledged += 1,
        }
    }
    let mut skip_refunds = BTreeSet::new();
    for (id, refund) in &model.refunds {
        match &refund.outcome {
            crate::model::Outcome::Pending => {
                v.push(format!(
                    "refund {id} of {} still unanswered after healing",
                    refund.request.settlement
                ));
                skip_refunds.insert(id.clone());
            }
            crate::model::Outcome::Done(_) => counts.refunds_acknowledged += 1,
            crate::model::Outcome::Refused(_) => {}
        }
    }
    let mut skip_accounts = BTreeSet::new();
    for (id, credit) in &model.credits {
        match credit.outcome {
            crate::model::Outcome::Pending => {
                v.push(format!(
                    "credit {id} to {} still unanswered after healing",
                    credit.person
                ));
                skip_accounts.insert(credit.person);
            }
            crate::model::Outcome::Done(()) => counts.credits_acknowledged += 1,
            crate::model::Outcome::Refused(_) => {}
        }
    }

    // Receipts add up, and say what was asked.
    let mut refunded: BTreeMap<SettlementId, u64> = BTreeMap::new();
    for (id, settlement) in &model.settlements {
        let Some(receipt) = settlement.outcome.done() else {
            continue;
        };
        if receipt.rounds > 1 {
            counts.settlements_two_rounds += 1;
        }
        let parts: u64 = receipt.mutual_aid.iter().map(|p| p.amount.fen()).sum();
        let paid = receipt.own_account_paid.fen() + parts + receipt.cash_paid.fen();
        if receipt.settlement != *id
            || receipt.patient != settlement.request.patient
            || receipt.self_pay != settlement.request.self_pay
            || paid != settlement.request.self_pay.fen()
        {
            v.push(format!(
                "receipt of {id} does not add up: own {} + mutual aid {parts} + cash {} != self-pay {} (or names another settlement/patient)",
                receipt.own_account_paid.fen(),
                receipt.cash_paid.fen(),
                settlement.request.self_pay.fen()
            ));
        }
    }
    for (id, refund) in &model.refunds {
        let Some(receipt) = refund.outcome.done() else {
            continue;
        };
        let parts: u64 = receipt.parts.iter().map(|p| p.amount.fen()).sum();
        if receipt.refund != *id
            || receipt.settlement != refund.request.settlement
            || refund.request.amount.is_some_and(|a| a != receipt.amount)
            || parts + receipt.cash.fen() != receipt.amount.fen()
        {
            v.push(format!(
                "refund receipt {id} does not add up: parts {parts} + cash {} != amount {} (asked {:?})",
                receipt.cash.fen(),
                receipt.amount.fen(),
                refund.request.amount.map(|a| a.fen())
            ));
        }
        *refunded.entry(receipt.settlement.clone()).or_default() += receipt.amount.fen();
    }
    for (id, total) in &refunded {
        let paid = model
            .settlements
            .get(id)
            .and_then(|s| s.outcome.done())
            .map(|r| r.self_pay.fen());
        if paid.is_none_or(|paid| *total > paid) {
            v.push(format!(
                "refunds of {id} total {total} fen, more than its self-pay {paid:?}"
            ));
        }
    }

    // What the journals must hold, leg by leg, from the receipts.
    let mut expected_pay: BTreeMap<PayKey, u64> = BTreeMap::new();
    let mut expected_refund: BTreeMap<RefundKey, u64> = BTreeMap::new();
    // Cross-province parts on the receipts, per pair: a lower bound of the legs (a grantor
    // asked again in a second round pays one part through two legs).
    let mut cross_parts: BTreeMap<(Province, Province), u64> = BTreeMap::new();
    for (id, settlement) in &model.settlements {
        let Some(receipt) = settlement.outcome.done() else {
            continue;
        };
        let c = settlement.coordinator;
        if !receipt.own_account_paid.is_zero() {
            *expected_pay
                .entry((c, JournalKind::Debit, id.clone(), receipt.patient))
                .or_default() += receipt.own_account_paid.fen();
        }
        for part in receipt.mutual_aid.iter().filter(|p| !p.amount.is_zero()) {
            let fen = part.amount.fen();
            *expected_pay
                .entry((part.province, JournalKind::Debit, id.clone(), part.grantor))
                .or_default() += fen;
            if part.province != c {
                *expected_pay
                    .entry((c, JournalKind::MutualAidReceived, id.clone(), part.grantor))
                    .or_default() += fen;
                *cross_parts.entry(pair(c, part.province)).or_default() += 1;
            }
        }
    }
    for (id, refund) in &model.refunds {
        let Some(receipt) = refund.outcome.done() else {
            continue;
        };
        let c = refund.coordinator;
        for part in receipt.parts.iter().filter(|p| !p.amount.is_zero()) {
            let scope_ok = matches!(&part.leg.scope, LegScope::Refund { settlement, refund }
                if *settlement == receipt.settlement && refund == id);
            if !scope_ok || part.leg.coordinator != c || part.leg.account != part.account {
                v.push(format!("refund {id}: part {:?} names another leg", part.leg));
            }
            expected_refund.insert(
                (part.province, JournalKind::RefundCredit, part.leg.clone()),
                part.amount.fen(),
            );
            if part.province != c {
                expected_refund.insert((c, JournalKind::MutualAidRefunded, part.leg.clone()), part.amount.fen());
                *cross_parts.entry(pair(c, part.province)).or_default() += 1;
            }
        }
    }

    // What the journals hold.
    let mut seen_pay: BTreeMap<PayKey, u64> = BTreeMap::new();
    let mut seen_refund: BTreeMap<RefundKey, (u64, u64)> = BTreeMap::new();
    let mut seen_legs: BTreeMap<(Province, JournalKind, LegId), u64> = BTreeMap::new();
    // Cross-province legs in the journals (either side), per pair: what each reconciliation
    // must compare. Every one of them is checked against a receipt above or below.
    let mut cross_legs: BTreeSet<((Province, Province), LegId, bool)> = BTreeSet::new();
    // Per account, on its own node: credits, and the signed sum of every balance change.
    let mut credited: BTreeMap<PersonId, u64> = BTreeMap::new();
    let mut journal_sum: BTreeMap<PersonId, i128> = BTreeMap::new();
    for (node, journal) in &observed.journals {
        let journal = match journal {
            Ok(journal) => journal,
            Err(error) => {
                v.push(format!("journal of {} not read: {error}", node.code()));
                continue;
            }
        };
        let mut last_seq = 0;
        for (seq, entry) in journal {
            counts.journal_entries += 1;
            if *seq <= last_seq {
                v.push(format!("journal of {}: sequence {seq} after {last_seq}", node.code()));
            }
            last_seq = *seq;
            let sign = i128::from(entry.kind.balance_sign());
            if let Some(account) = entry.account {
                if sign != 0 && model.accounts.get(&account).is_some_and(|a| a.province == *node) {
                    *journal_sum.entry(account).or_default() += sign * i128::from(entry.amount.fen());
                }
            }
            if entry.kind == JournalKind::Credit {
                if let Some(account) = entry.account {
                    *credited.entry(account).or_default() += entry.amount.fen();
                }
                continue;
            }
            let (Some(leg), Some(account)) = (&entry.leg, entry.account) else {
                v.push(format!(
                    "journal of {} seq {seq}: a {:?} without leg or account",
                    node.code(),
                    entry.kind
                ));
                continue;
            };
            *seen_legs.entry((*node, entry.kind, leg.clone())).or_default() += 1;
            let payer = match entry.kind {
                JournalKind::MutualAidReceived | JournalKind::MutualAidRefunded => entry.counterparty,
                _ => Some(*node),
            };
            if let Some(payer) = payer.filter(|payer| *payer != leg.coordinator) {
                let refund = matches!(entry.kind, JournalKind::RefundCredit | JournalKind::MutualAidRefunded);
                cross_legs.insert((pair(leg.coordinator, payer), leg.clone(), refund));
            }
            if entry.settlement.as_ref() != Some(leg.settlement()) || leg.account != account {
                v.push(format!(
                    "journal of {} seq {seq}: entry names settlement {:?} and account {account}, its leg {leg:?}",
                    node.code(),
                    entry.settlement
                ));
            }
            let settlement = leg.settlement().clone();
            if skip_settlements.contains(&settlement) {
                continue;
            }
            match &leg.scope {
                LegScope::Pay { .. } => {
                    let known = model.settlements.get(&settlement);
                    if known.is_some_and(|s| s.coordinator != leg.coordinator) {
                        v.push(format!(
                            "journal of {} seq {seq}: leg of {settlement} coordinated by {}, the patient's province is another",
                            node.code(),
                            leg.coordinator.code()
                        ));
                    }
                    *seen_pay.entry((*node, entry.kind, settlement, account)).or_default() += entry.amount.fen();
                }
                LegScope::Refund { refund, .. } => {
                    if skip_refunds.contains(refund) {
                        continue;
                    }
                    let seen = seen_refund.entry((*node, entry.kind, leg.clone())).or_default();
                    seen.0 += 1;
                    seen.1 += entry.amount.fen();
                }
                // Wallet transfers are not part of the chaos load (see exchange-core's
                // transfer.rs): an entry of one is money the run never moved.
                LegScope::Transfer { .. } => v.push(format!(
                    "journal of {} seq {seq}: a {:?} of transfer leg {leg:?}, and the run made no transfer",
                    node.code(),
                    entry.kind
                )),
            }
        }
    }
    for ((node, kind, leg), times) in &seen_legs {
        if *times > 1 {
            v.push(format!(
                "journal of {} holds {kind:?} of leg {leg:?} {times} times",
                node.code()
            ));
        }
    }
    for (key, fen) in &expected_pay {
        match seen_pay.get(key) {
            Some(seen) if seen == fen => counts.journal_entries_matched += 1,
            Some(seen) => v.push(format!(
                "{} {:?} of {} for {}: journal {seen} fen, receipt {fen} fen",
                key.0.code(),
                key.1,
                key.2,
                key.3
            )),
            None => v.push(format!(
                "{} {:?} of {} for {}: receipt {fen} fen, nothing in the journal",
                key.0.code(),
                key.1,
                key.2,
                key.3
            )),
        }
    }
    for (key, fen) in &seen_pay {
        if !expected_pay.contains_key(key) {
            let what = match model.settlements.get(&key.2) {
                Some(s) if s.outcome.done().is_some() => "not on the receipt",
                Some(_) => "the settlement was refused",
                None => "a settlement the client never sent",
            };
            v.push(format!(
                "{} {:?} of {} for {}: {fen} fen in the journal, {what} (half-applied)",
                key.0.code(),
                key.1,
                key.2,
                key.3
            ));
        }
    }
    for (key, fen) in &expected_refund {
        match seen_refund.get(key) {
            Some((_, seen)) if seen == fen => counts.journal_entries_matched += 1,
            Some((_, seen)) => v.push(format!(
                "{} {:?} of refund leg {:?}: journal {seen} fen, receipt {fen} fen",
                key.0.code(),
                key.1,
                key.2
            )),
            None => v.push(format!(
                "{} {:?} of refund leg {:?}: receipt {fen} fen, nothing in the journal",
                key.0.code(),
                key.1,
                key.2
            )),
        }
    }
    for (key, (_, fen)) in &seen_refund {
        if !expected_refund.contains_key(key) {
            v.push(format!(
                "{} {:?} of refund leg {:?}: {fen} fen in the journal, on no acknowledged refund receipt",
                key.0.code(),
                key.1,
                key.2
            ));
        }
    }

    // Balances: exactly the model, nothing held, and the journal explains each of them.
    let expected = model.expected_balances();
    let mut expected_credits: BTreeMap<PersonId, u64> = model
        .accounts
        .iter()
        .map(|(person, account)| (*person, account.opening_fen))
        .collect();
    for credit in model.credits.values() {
        if credit.outcome.done().is_some() {
            *expected_credits.entry(credit.person).or_default() += credit.amount.fen();
        }
    }
    for (person, account_model) in &model.accounts {
        counts.accounts += 1;
        let account = match observed.accounts.get(person) {
            Some(Ok(account)) => account,
            Some(Err(error)) => {
                v.push(format!("account {person} not read: {error}"));
                continue;
            }
            None => {
                v.push(format!("account {person} not read"));
                continue;
            }
        };
        if !account.held.is_zero() {
            v.push(format!(
                "account {person} ({}) still holds {} fen after the quiescence wait",
                account_model.province.code(),
                account.held.fen()
            ));
        }
        if skip_accounts.contains(person) {
            continue;
        }
        let want = expected.get(person).copied().unwrap_or(0);
        if i128::from(account.balance.fen()) != want {
            v.push(format!(
                "account {person} ({}): balance {} fen, the model says {want}",
                account_model.province.code(),
                account.balance.fen()
            ));
        }
        if observed
            .journals
            .get(&account_model.province)
            .is_some_and(Result::is_ok)
        {
            let sum = journal_sum.get(person).copied().unwrap_or(0);
            if sum != i128::from(account.balance.fen()) {
                v.push(format!(
                    "account {person} ({}): balance {} fen, its journal adds up to {sum}",
                    account_model.province.code(),
                    account.balance.fen()
                ));
            }
            let credits = credited.get(person).copied().unwrap_or(0);
            let want = expected_credits.get(person).copied().unwrap_or(0);
            if credits != want {
                v.push(format!(
                    "account {person}: credits in the journal {credits} fen, opening balance and acknowledged credits {want}"
                ));
            }
        }
    }

    // Nodes: nothing in flight.
    for (node, counters) in &observed.counters {
        match counters {
            Ok(c) => {
                if c.holds_in_flight > 0 {
                    v.push(format!(
                        "node {} has {} holds in flight after the quiescence wait",
                        node.code(),
                        c.holds_in_flight
                    ));
                }
                if c.settlements_in_flight > 0 {
                    v.push(format!(
                        "node {} has {} client requests still waiting for an answer",
                        node.code(),
                        c.settlements_in_flight
                    ));
                }
            }
            Err(error) => v.push(format!("status of {} not read: {error}", node.code())),
        }
    }

    // Reconciliation of every pair, from both sides: no mismatch, and every cross-province
    // leg the receipts name is among the legs compared.
    let mut legs_of: BTreeMap<(Province, Province), u64> = BTreeMap::new();
    for (pair, _, _) in &cross_legs {
        *legs_of.entry(*pair).or_default() += 1;
    }
    for (pair, parts) in &cross_parts {
        let legs = legs_of.get(pair).copied().unwrap_or(0);
        if legs < *parts {
            v.push(format!(
                "{} and {}: the receipts name {parts} cross-province parts, the journals hold {legs} legs",
                pair.0.code(),
                pair.1.code()
            ));
        }
    }
    for ((own, peer), result) in &observed.reconciliations {
        counts.reconciliations += 1;
        let want = legs_of.get(&pair(*own, *peer)).copied().unwrap_or(0);
        match result {
            Ok(report) => {
                if report.mismatch_count > 0 {
                    v.push(format!(
                        "reconciliation of {} with {}: {} mismatches: {}",
                        own.code(),
                        peer.code(),
                        report.mismatch_count,
                        report.mismatches.join("; ")
                    ));
                }
                if report.legs_compared != want || report.legs_matched != want {
                    v.push(format!(
                        "reconciliation of {} with {}: {} legs compared, {} matched; the journals hold {want}",
                        own.code(),
                        peer.code(),
                        report.legs_compared,
                        report.legs_matched
                    ));
                }
            }
            Err(error) => v.push(format!(
                "reconciliation of {} with {} failed: {error}",
                own.code(),
                peer.code()
            )),
        }
    }
    counts.cross_province_legs = u64::try_from(cross_legs.len()).unwrap_or(u64::MAX);

    // Bindings converged.
    match &observed.bindings {
        Ok(bindings) => {
            counts.bindings = u64::try_from(bindings.authority.len()).unwrap_or(u64::MAX);
            for found in check_bindings(bindings) {
                v.push(found);
            }
        }
        Err(error) => v.push(format!("bindings not read: {error}")),
    }
    (v.into_list(), counts)
}

#[cfg(test)]
mod tests {
    use exchange_core::records::{MutualAidPart, Receipt, RefundPart, RefundReceipt, RefundRequest, SettleRequest};
    use exchange_core::{BindingId, Money, RefundId, Region};

    use super::*;
    use crate::model::{Outcome, RefundModel, SettlementModel};

    fn p(code: u32) -> Province {
        Province::from_code(code).unwrap()
    }

    fn person(code: u32, n: u32) -> PersonId {
        PersonId::from_body(&format!("{code:06}19700101{n:03}")).unwrap()
    }

    fn fen(n: u64) -> Money {
        Money::from_fen(n).unwrap()
    }

    fn account(who: PersonId, province: Province, balance: u64) -> Account {
        Account {
            person: who,
            name: "T".into(),
            province,
            scheme: exchange_core::Scheme::Employee,
            balance: fen(balance),
            held: Money::ZERO,
            frozen: false,
            frozen_reason: None,
            closed: false,
            opened_wall_ms: 0,
        }
    }

    fn entry(
        kind: JournalKind,
        amount: u64,
        who: PersonId,
        leg: Option<LegId>,
        counterparty: Province,
    ) -> JournalEntry {
        JournalEntry {
            kind,
            wall_ms: 1,
            amount: fen(amount),
            account: Some(who),
            settlement: leg.as_ref().map(|l| l.settlement().clone()),
            leg,
            binding: None,
            counterparty: Some(counterparty),
            reference: None,
        }
    }

    /// A Chongqing patient (own 100 fen) whose Beijing son paid 300 fen of a 500 fen bill,
    /// 100 in cash; then 200 fen refunded to the son. Journals, balances and reconciliations
    /// all agree.
    fn world() -> (Model, Observed) {
        let (bj, cq) = (p(110000), p(500000));
        let (patient, son) = (person(500000, 1), person(110000, 1));
        let s = SettlementId::new("S-1").unwrap();
        let mut model = Model::default();
        model.open(patient, cq, fen(100));
        model.open(son, bj, fen(1000));
        let request = SettleRequest {
            settlement: s.clone(),
            patient,
            total_fee: fen(500),
            fund_paid: Money::ZERO,
            self_pay: fen(500),
            institution: "H".into(),
            treatment_region: Region::from_code(500000).unwrap(),
            insured_region: Region::from_code(500000).unwrap(),
        };
        let receipt = Receipt {
            settlement: s.clone(),
            patient,
            self_pay: fen(500),
            own_account_paid: fen(100),
            own_refusal: None,
            own_balance_after: Some(Money::ZERO),
            mutual_aid: vec![MutualAidPart {
                grantor: son,
                province: bj,
                binding: BindingId::new(bj, 1),
                amount: fen(300),
                balance_after: fen(700),
            }],
            cash_paid: fen(100),
            not_paying: vec![],
            rounds: 1,
            decided_wall_ms: 1,
        };
        model.settlements.insert(
            s.clone(),
            SettlementModel {
                coordinator: cq,
                request,
                outcome: Outcome::Done(receipt),
                answered_after_heal: false,
            },
        );
        let pay = |i: u16, who| LegId {
            coordinator: cq,
            scope: LegScope::Pay {
                settlement: s.clone(),
                attempt: 1,
            },
            index: i,
            account: who,
        };
        let r = RefundId::new("R-1").unwrap();
        let back = LegId {
            coordinator: cq,
            scope: LegScope::Refund {
                settlement: s.clone(),
                refund: r.clone(),
            },
            index: 0,
            account: son,
        };
        model.refunds.insert(
            r.clone(),
            RefundModel {
                coordinator: cq,
                request: RefundRequest {
                    refund: r.clone(),
                    settlement: s.clone(),
                    amount: Some(fen(200)),
                },
                outcome: Outcome::Done(RefundReceipt {
                    refund: r,
                    settlement: s.clone(),
                    amount: fen(200),
                    parts: vec![RefundPart {
                        leg: back.clone(),
                        original_leg: pay(1, son),
                        province: bj,
                        account: son,
                        binding: None,
                        amount: fen(200),
                    }],
                    cash: Money::ZERO,
                    decided_wall_ms: 2,
                }),
                answered_after_heal: false,
            },
        );
        let mut observed = Observed::default();
        observed.accounts.insert(patient, Ok(account(patient, cq, 0)));
        observed.accounts.insert(son, Ok(account(son, bj, 900)));
        observed.journals.insert(
            cq,
            Ok(vec![
                (1, entry(JournalKind::Credit, 100, patient, None, cq)),
                (2, entry(JournalKind::Debit, 100, patient, Some(pay(0, patient)), cq)),
                (
                    3,
                    entry(JournalKind::MutualAidReceived, 300, son, Some(pay(1, son)), bj),
                ),
                (
                    4,
                    entry(JournalKind::MutualAidRefunded, 200, son, Some(back.clone()), bj),
                ),
            ]),
        );
        observed.journals.insert(
            bj,
            Ok(vec![
                (1, entry(JournalKind::Credit, 1000, son, None, bj)),
                (2, entry(JournalKind::Debit, 300, son, Some(pay(1, son)), cq)),
                (3, entry(JournalKind::RefundCredit, 200, son, Some(back), cq)),
            ]),
        );
        for node in [bj, cq] {
            observed.counters.insert(node, Ok(NodeCounters::default()));
        }
        let matched = ReconcileSummary {
            legs_compared: 2,
            legs_matched: 2,
            ..ReconcileSummary::default()
        };
        observed.reconciliations.insert((bj, cq), Ok(matched.clone()));
        observed.reconciliations.insert((cq, bj), Ok(matched));
        (model, observed)
    }

    fn journal(observed: &mut Observed, code: u32) -> &mut Vec<(u64, JournalEntry)> {
        observed.journals.get_mut(&p(code)).unwrap().as_mut().unwrap()
    }

    #[test]
    fn an_agreeing_world_has_no_violation() {
        let (model, observed) = world();
        let (violations, counts) = check(&model, &observed);
        assert_eq!(violations, Vec::<String>::new());
        assert_eq!(counts.journal_entries_matched, 5);
        assert_eq!(counts.cross_province_legs, 2);
    }

    /// The son was asked again in a second round: his one part of 300 fen is two legs (200 and
    /// 100), each on both sides, and the reconciliations compare three legs.
    #[test]
    fn a_grantor_paying_through_two_rounds_is_one_part_and_two_legs() {
        let (model, mut observed) = world();
        let (bj, cq) = (p(110000), p(500000));
        let son = person(110000, 1);
        let mut leg = journal(&mut observed, 110000)[1].1.leg.clone().unwrap();
        leg.index = 2;
        journal(&mut observed, 110000)[1].1.amount = fen(200);
        journal(&mut observed, 110000).push((4, entry(JournalKind::Debit, 100, son, Some(leg.clone()), cq)));
        journal(&mut observed, 500000)[2].1.amount = fen(200);
        journal(&mut observed, 500000).push((5, entry(JournalKind::MutualAidReceived, 100, son, Some(leg), bj)));
        let three = ReconcileSummary {
            legs_compared: 3,
            legs_matched: 3,
            ..ReconcileSummary::default()
        };
        observed.reconciliations.insert((bj, cq), Ok(three.clone()));
        observed.reconciliations.insert((cq, bj), Ok(three));
        let (violations, counts) = check(&model, &observed);
        assert_eq!(violations, Vec::<String>::new());
        assert_eq!(counts.cross_province_legs, 3);
        // Reconciliations that skip the second leg are caught.
        let mut short = observed.clone();
        short.reconciliations.insert(
            (bj, cq),
            Ok(ReconcileSummary {
                legs_compared: 2,
                legs_matched: 2,
                ..ReconcileSummary::default()
            }),
        );
        let (violations, _) = check(&model, &short);
        assert!(
            violations.iter().any(|v| v.contains("the journals hold 3")),
            "{violations:#?}"
        );
    }

    fn fails(change: impl FnOnce(&mut Model, &mut Observed), expect: &str) {
        let (mut model, mut observed) = world();
        change(&mut model, &mut observed);
        let (violations, _) = check(&model, &observed);
        assert!(
            violations.iter().any(|v| v.contains(expect)),
            "expected a violation containing {expect:?}, got {violations:#?}"
        );
    }

    #[test]
    fn each_check_can_fail() {
        // A participant debits the same leg twice (and the balance follows the journal).
        fails(
            |_, o| {
                let again = journal(o, 110000)[1].clone();
                journal(o, 110000).push((9, again.1));
                o.accounts
                    .insert(person(110000, 1), Ok(account(person(110000, 1), p(110000), 600)));
            },
            "2 times",
        );
        // The coordinator's clearing claim is missing.
        fails(|_, o| drop(journal(o, 500000).remove(2)), "nothing in the journal");
        // An amount differs from the receipt.
        fails(
            |_, o| journal(o, 110000)[1].1.amount = fen(299),
            "journal 299 fen, receipt 300",
        );
        // A settlement the node refused has a debit (half-applied).
        fails(
            |m, _| {
                let s = m.settlements.values_mut().next().unwrap();
                s.outcome = Outcome::Refused(exchange_core::ClientError::invalid("x", "y"));
                m.refunds.clear();
            },
            "the settlement was refused",
        );
        // A hold left, a balance off the model, a node with holds in flight.
        fails(
            |_, o| {
                let mut son = account(person(110000, 1), p(110000), 900);
                son.held = fen(5);
                o.accounts.insert(son.person, Ok(son));
            },
            "still holds 5 fen",
        );
        fails(
            |_, o| {
                o.accounts
                    .insert(person(110000, 1), Ok(account(person(110000, 1), p(110000), 901)));
            },
            "the model says 900",
        );
        fails(
            |_, o| {
                o.counters.insert(
                    p(110000),
                    Ok(NodeCounters {
                        holds_in_flight: 1,
                        ..NodeCounters::default()
                    }),
                );
            },
            "holds in flight",
        );
        // A balance the journal does not explain.
        fails(
            |m, o| {
                o.accounts
                    .insert(person(110000, 1), Ok(account(person(110000, 1), p(110000), 950)));
                m.accounts.get_mut(&person(110000, 1)).unwrap().opening_fen = 1050;
            },
            "its journal adds up to 900",
        );
        // Reconciliation: a mismatch, or legs missing from the comparison.
        fails(
            |_, o| {
                o.reconciliations.insert(
                    (p(110000), p(500000)),
                    Ok(ReconcileSummary {
                        legs_compared: 2,
                        legs_matched: 1,
                        mismatch_count: 1,
                        mismatches: vec!["missing_at_payer".into()],
                    }),
                );
            },
            "1 mismatches",
        );
        fails(
            |_, o| {
                o.reconciliations.insert(
                    (p(500000), p(110000)),
                    Ok(ReconcileSummary {
                        legs_compared: 1,
                        legs_matched: 1,
                        ..ReconcileSummary::default()
                    }),
                );
            },
            "the journals hold 2",
        );
        // A settlement never answered, a refund leg on no receipt, a receipt not adding up.
        fails(
            |m, _| m.settlements.values_mut().next().unwrap().outcome = Outcome::Pending,
            "still unanswered",
        );
        fails(|m, _| m.refunds.clear(), "on no acknowledged refund receipt");
        // Bindings that did not converge.
        let binding = |status| Binding {
            id: BindingId::new(p(110000), 7),
            grantor: person(110000, 1),
            grantor_province: p(110000),
            grantee: person(500000, 1),
            grantee_province: p(500000),
            relation: exchange_core::Relation::Parent,
            kind: exchange_core::BindingKind::MutualAid,
            position: 0,
            limits: exchange_core::Limits::default(),
            evidence: exchange_core::Evidence {
                document: exchange_core::binding::DocumentKind::HouseholdRegister,
                reference: "R".into(),
                face_verified: true,
                commitment_signed: true,
            },
            created_wall_ms: 0,
            status,
            usage_month: exchange_core::time::YearMonth::default(),
            usage_in_month: Money::ZERO,
        };
        let with = |authority: Option<BindingStatus>, copy: Option<BindingStatus>| {
            let mut b = Bindings::default();
            if let Some(status) = authority {
                b.authority.insert(BindingId::new(p(110000), 7), binding(status));
            }
            if let Some(status) = copy {
                b.copies.insert(BindingId::new(p(110000), 7), binding(status));
            }
            b
        };
        let revoked = BindingStatus::Revoked { at_wall_ms: 5 };
        assert!(check_bindings(&with(Some(BindingStatus::Active), Some(BindingStatus::Active))).is_empty());
        assert!(check_bindings(&with(Some(revoked), Some(revoked))).is_empty());
        assert!(check_bindings(&with(Some(revoked), None)).is_empty());
        assert!(check_bindings(&with(Some(BindingStatus::Refused), None)).is_empty());
        for (authority, copy) in [
            (Some(BindingStatus::Pending), Some(BindingStatus::Pending)),
            (Some(BindingStatus::Active), None),
            (Some(BindingStatus::Active), Some(revoked)),
            (Some(revoked), Some(BindingStatus::Active)),
            (Some(BindingStatus::Refused), Some(BindingStatus::Active)),
            (None, Some(BindingStatus::Active)),
        ] {
            assert_eq!(
                check_bindings(&with(authority, copy)).len(),
                1,
                "{authority:?} {copy:?}"
            );
        }
        fails(
            |_, o| {
                o.bindings = Ok(with(Some(BindingStatus::Pending), None));
            },
            "still pending",
        );
        fails(
            |m, _| {
                if let Outcome::Done(r) = &mut m.settlements.values_mut().next().unwrap().outcome {
                    r.cash_paid = fen(99);
                }
            },
            "does not add up",
        );
    }
}
