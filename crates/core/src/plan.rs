//! Deduction planning: who pays how much of a bill's self-pay part. Pure and deterministic.
//!
//! Order of payment: the patient's own personal account first, then the grantors in the
//! policy's order, each at most its available balance and its binding's limits, and whatever
//! is left in cash. The coordinator runs this same function twice: once on what it knows before
//! asking (to decide whom to ask), and once on the amounts the grantors actually held (to fix
//! the final legs), so the plan and the outcome follow one rule.

use serde::{Deserialize, Serialize};

use crate::ids::BindingId;
use crate::money::{Money, MoneyError};
use crate::person::PersonId;
use crate::policy::{GRANTORS_PER_SETTLEMENT_MAX, GrantorOrder};
use crate::reason::Refusal;
use crate::region::Province;

/// The patient's own account as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OwnAccount {
    pub available: Money,
    /// Set when the account may not pay at all (frozen, closed, resident scheme).
    pub refusal: Option<Refusal>,
}

/// A grantor that could pay part of the bill.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    pub binding: BindingId,
    pub grantor: PersonId,
    pub province: Province,
    /// What the grantor's account can give: its available balance (or, when planning on
    /// votes, the amount actually held).
    pub available: Money,
    /// The balance that ranks this grantor under the largest-balance-first order (the
    /// available balance; when planning on votes, the balance reported before the hold).
    pub balance_for_order: Money,
    pub per_settlement_limit: Option<Money>,
    /// What the monthly limit still allows.
    pub monthly_remaining: Option<Money>,
    /// Family-set position (lower first).
    pub position: u32,
    pub created_wall_ms: i64,
    /// Set when this grantor is known not to pay (revoked, frozen, refused its vote...).
    pub refusal: Option<Refusal>,
}

impl Candidate {
    /// What this grantor could pay at most, before looking at the bill.
    pub fn capacity(&self) -> Money {
        let mut capacity = self.available;
        if let Some(limit) = self.per_settlement_limit {
            capacity = capacity.min(limit);
        }
        if let Some(limit) = self.monthly_remaining {
            capacity = capacity.min(limit);
        }
        capacity
    }
}

/// Everything the planner needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlanInput {
    pub self_pay: Money,
    /// `None`: the patient has no personal account (resident scheme or not enrolled).
    pub own: Option<OwnAccount>,
    pub candidates: Vec<Candidate>,
    pub order: GrantorOrder,
}

/// One grantor's part of the bill.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlannedLeg {
    pub binding: BindingId,
    pub grantor: PersonId,
    pub province: Province,
    pub amount: Money,
}

/// A grantor who pays nothing, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NotPaying {
    pub binding: BindingId,
    pub grantor: PersonId,
    pub province: Province,
    pub reason: Refusal,
}

/// The split of a bill's self-pay part. Always `own + sum(legs) + cash == self_pay`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Plan {
    pub own: Money,
    /// Why the own account paid nothing, when it could not pay.
    pub own_refusal: Option<Refusal>,
    /// Grantors that pay, in payment order.
    pub legs: Vec<PlannedLeg>,
    pub cash: Money,
    /// Grantors that pay nothing, in order, with the reason.
    pub not_paying: Vec<NotPaying>,
}

impl Plan {
    pub fn mutual_aid_total(&self) -> Result<Money, MoneyError> {
        Money::sum(self.legs.iter().map(|leg| leg.amount))
    }
}

/// Sorts candidates into the order in which they pay. Ties break on binding id, so the order
/// is total and the plan deterministic.
pub fn order_candidates(candidates: &mut [Candidate], order: GrantorOrder) {
    match order {
        GrantorOrder::BindingOrder => candidates.sort_by_key(|c| (c.created_wall_ms, c.binding)),
        GrantorOrder::LargestBalanceFirst => candidates.sort_by(|a, b| {
            b.balance_for_order
                .cmp(&a.balance_for_order)
                .then(a.binding.cmp(&b.binding))
        }),
        GrantorOrder::FamilyOrder => candidates.sort_by_key(|c| (c.position, c.created_wall_ms, c.binding)),
    }
}

/// Plans the split. Pure: the same input always gives the same plan.
pub fn plan(input: &PlanInput) -> Result<Plan, MoneyError> {
    let mut remaining = input.self_pay;
    let mut result = Plan::default();
    match input.own {
        None => result.own_refusal = (!remaining.is_zero()).then_some(Refusal::NoPersonalAccount),
        Some(own) => match own.refusal {
            Some(refusal) => result.own_refusal = Some(refusal),
            None => {
                result.own = remaining.min(own.available);
                remaining = remaining.checked_sub(result.own)?;
            }
        },
    }
    let mut candidates = input.candidates.clone();
    order_candidates(&mut candidates, input.order);
    for (rank, candidate) in candidates.into_iter().enumerate() {
        let not_paying = |reason| NotPaying {
            binding: candidate.binding,
            grantor: candidate.grantor,
            province: candidate.province,
            reason,
        };
        if let Some(reason) = candidate.refusal {
            result.not_paying.push(not_paying(reason));
            continue;
        }
        if rank >= GRANTORS_PER_SETTLEMENT_MAX {
            result.not_paying.push(not_paying(Refusal::TooManyGrantors));
            continue;
        }
        if remaining.is_zero() {
            result.not_paying.push(not_paying(Refusal::NotNeeded));
            continue;
        }
        let capacity = candidate.capacity();
        if capacity.is_zero() {
            let reason = if candidate.available.is_zero() {
                Refusal::InsufficientBalance
            } else {
                Refusal::LimitReached
            };
            result.not_paying.push(not_paying(reason));
            continue;
        }
        let amount = remaining.min(capacity);
        remaining = remaining.checked_sub(amount)?;
        result.legs.push(PlannedLeg {
            binding: candidate.binding,
            grantor: candidate.grantor,
            province: candidate.province,
            amount,
        });
    }
    result.cash = remaining;
    Ok(result)
}
