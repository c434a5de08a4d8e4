//! The client-side model: every request the load sent that moves money, and what the nodes
//! answered. Expected balances are computed from it alone: opening balances, acknowledged
//! credits, settlement receipts and refund receipts. Nothing here reads a node.

use std::collections::BTreeMap;

use exchange_core::error::ClientError;
use exchange_core::records::{Receipt, RefundReceipt, RefundRequest, SettleRequest};
use exchange_core::{CreditId, Money, PersonId, Province, RefundId, SettlementId};

/// Where a request stands from the client's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Sent, not answered yet (unacknowledged).
    Pending,
    /// Answered with a result.
    Done(T),
    /// Answered with a refusal: nothing may have changed.
    Refused(ClientError),
}

impl<T> Outcome<T> {
    pub fn is_pending(&self) -> bool {
        matches!(self, Outcome::Pending)
    }

    pub fn done(&self) -> Option<&T> {
        match self {
            Outcome::Done(value) => Some(value),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct AccountModel {
    pub province: Province,
    pub opening_fen: u64,
}

#[derive(Clone, Debug)]
pub struct SettlementModel {
    /// The coordinator: the patient's insured province.
    pub coordinator: Province,
    pub request: SettleRequest,
    pub outcome: Outcome<Receipt>,
    /// Answered only by the re-send after healing (unacknowledged during the run).
    pub answered_after_heal: bool,
}

#[derive(Clone, Debug)]
pub struct RefundModel {
    pub coordinator: Province,
    pub request: RefundRequest,
    pub outcome: Outcome<RefundReceipt>,
    pub answered_after_heal: bool,
}

#[derive(Clone, Debug)]
pub struct CreditModel {
    pub person: PersonId,
    pub amount: Money,
    pub outcome: Outcome<()>,
    pub answered_after_heal: bool,
}

/// Everything the load did that moves money.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub accounts: BTreeMap<PersonId, AccountModel>,
    pub settlements: BTreeMap<SettlementId, SettlementModel>,
    pub refunds: BTreeMap<RefundId, RefundModel>,
    pub credits: BTreeMap<CreditId, CreditModel>,
}

impl Model {
    pub fn open(&mut self, person: PersonId, province: Province, opening: Money) {
        self.accounts.insert(
            person,
            AccountModel {
                province,
                opening_fen: opening.fen(),
            },
        );
    }

    /// Expected balance of every account, in fen (signed, so that a model gone wrong shows
    /// as a negative figure instead of wrapping).
    pub fn expected_balances(&self) -> BTreeMap<PersonId, i128> {
        let mut balances: BTreeMap<PersonId, i128> = self
            .accounts
            .iter()
            .map(|(person, account)| (*person, i128::from(account.opening_fen)))
            .collect();
        let mut add = |person: &PersonId, fen: i128| {
            *balances.entry(*person).or_insert(0) += fen;
        };
        for credit in self.credits.values() {
            if credit.outcome.done().is_some() {
                add(&credit.person, i128::from(credit.amount.fen()));
            }
        }
        for settlement in self.settlements.values() {
            if let Some(receipt) = settlement.outcome.done() {
                add(&receipt.patient, -i128::from(receipt.own_account_paid.fen()));
                for part in &receipt.mutual_aid {
                    add(&part.grantor, -i128::from(part.amount.fen()));
                }
            }
        }
        for refund in self.refunds.values() {
            if let Some(receipt) = refund.outcome.done() {
                for part in &receipt.parts {
                    add(&part.account, i128::from(part.amount.fen()));
                }
            }
        }
        balances
    }

    /// Requests still unanswered.
    pub fn pending_counts(&self) -> (usize, usize, usize) {
        (
            self.settlements.values().filter(|s| s.outcome.is_pending()).count(),
            self.refunds.values().filter(|r| r.outcome.is_pending()).count(),
            self.credits.values().filter(|c| c.outcome.is_pending()).count(),
        )
    }
}
