//! Accounts: a person's enrolment in their province and, for employees, the personal account.

use serde::{Deserialize, Serialize};

use crate::money::{Money, MoneyError};
use crate::person::PersonId;
use crate::reason::Refusal;
use crate::region::Province;

/// Longest person name stored, in bytes.
pub const PERSON_NAME_LEN_MAX: usize = 120;

/// The insurance scheme a person is enrolled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// 职工医保: has a personal account with a balance.
    Employee,
    /// 城乡居民医保: no personal account.
    Resident,
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(text: &str) -> Result<Scheme, String> {
        match text {
            "employee" => Ok(Scheme::Employee),
            "resident" => Ok(Scheme::Resident),
            other => Err(format!("scheme {other:?} is neither \"employee\" nor \"resident\"")),
        }
    }
}

/// A person's enrolment and (for employees) personal account, owned by their province's node.
///
/// Architecture invariant: `held <= balance`; `available = balance - held` is never negative,
/// and a resident-scheme account's balance stays zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Account {
    pub person: PersonId,
    pub name: String,
    pub province: Province,
    pub scheme: Scheme,
    pub balance: Money,
    pub held: Money,
    /// Card reported lost: the account neither pays nor is drawn on.
    pub frozen: bool,
    pub frozen_reason: Option<String>,
    /// The person left the scheme; bindings where they are grantor end by themselves.
    pub closed: bool,
    pub opened_wall_ms: i64,
}

/// Why an account operation could not be applied (a broken precondition, not a business "no").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("hold of {amount} exceeds the available {available}")]
    HoldExceedsAvailable { amount: Money, available: Money },
    #[error("release of {amount} exceeds the held {held}")]
    ReleaseExceedsHeld { amount: Money, held: Money },
    #[error("resident-scheme accounts have no personal account balance")]
    NoPersonalAccount,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl Account {
    pub fn open(person: PersonId, name: String, province: Province, scheme: Scheme, opened_wall_ms: i64) -> Account {
        Account {
            person,
            name,
            province,
            scheme,
            balance: Money::ZERO,
            held: Money::ZERO,
            frozen: false,
            frozen_reason: None,
            closed: false,
            opened_wall_ms,
        }
    }

    /// Balance minus holds. Saturating only as a guard: `held <= balance` always holds.
    pub fn available(&self) -> Money {
        self.balance.saturating_sub(self.held)
    }

    pub fn has_personal_account(&self) -> bool {
        self.scheme == Scheme::Employee
    }

    /// Whether this account may pay at all now, and if not, why.
    pub fn payment_refusal(&self) -> Option<Refusal> {
        if self.closed {
            Some(Refusal::AccountClosed)
        } else if self.frozen {
            Some(Refusal::AccountFrozen)
        } else if !self.has_personal_account() {
            Some(Refusal::NoPersonalAccount)
        } else {
            None
        }
    }

    /// Reserves `amount` of the available balance.
    pub fn hold(&mut self, amount: Money) -> Result<(), AccountError> {
        let available = self.available();
        if amount > available {
            return Err(AccountError::HoldExceedsAvailable { amount, available });
        }
        self.held = self.held.checked_add(amount)?;
        Ok(())
    }

    /// Releases `amount` of the held balance.
    pub fn release(&mut self, amount: Money) -> Result<(), AccountError> {
        if amount > self.held {
            return Err(AccountError::ReleaseExceedsHeld {
                amount,
                held: self.held,
            });
        }
        self.held = self.held.checked_sub(amount)?;
        Ok(())
    }

    /// Turns a hold of `held` into a debit of `debit <= held`, releasing the rest.
    pub fn settle_hold(&mut self, held: Money, debit: Money) -> Result<(), AccountError> {
        if debit > held {
            return Err(AccountError::HoldExceedsAvailable {
                amount: debit,
                available: held,
            });
        }
        self.release(held)?;
        self.balance = self.balance.checked_sub(debit)?;
        Ok(())
    }

    /// Adds money (credit run, refund, incoming transfer).
    pub fn credit(&mut self, amount: Money) -> Result<(), AccountError> {
        if !self.has_personal_account() && !amount.is_zero() {
            return Err(AccountError::NoPersonalAccount);
        }
        self.balance = self.balance.checked_add(amount)?;
        Ok(())
    }

    /// Checks the account's own invariant; the drivers assert it after every change.
    pub fn check_invariant(&self) -> Result<(), String> {
        if self.held > self.balance {
            return Err(format!(
                "account {}: held {} exceeds balance {}",
                self.person, self.held, self.balance
            ));
        }
        if !(self.has_personal_account() || self.balance.is_zero() && self.held.is_zero()) {
            return Err(format!("resident account {} has a balance", self.person));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn employee(balance_yuan: u64) -> Account {
        let mut account = Account::open(
            PersonId::synthetic(500000, 1),
            "Li".into(),
            Province::from_prefix(50).unwrap(),
            Scheme::Employee,
            0,
        );
        account.credit(Money::from_yuan(balance_yuan).unwrap()).unwrap();
        account
    }

    #[test]
    fn hold_commit_release_keep_balance_right() {
        let mut account = employee(100);
        account.hold(Money::from_yuan(60).unwrap()).unwrap();
        assert_eq!(account.available(), Money::from_yuan(40).unwrap());
        assert!(account.hold(Money::from_yuan(41).unwrap()).is_err());
        account
            .settle_hold(Money::from_yuan(60).unwrap(), Money::from_yuan(25).unwrap())
            .unwrap();
        assert_eq!(account.balance, Money::from_yuan(75).unwrap());
        assert_eq!(account.held, Money::ZERO);
        assert!(account.release(Money::from_fen(1).unwrap()).is_err());
        account.check_invariant().unwrap();
    }

    #[test]
    fn residents_have_no_personal_account() {
        let mut account = employee(0);
        account.scheme = Scheme::Resident;
        assert_eq!(account.payment_refusal(), Some(Refusal::NoPersonalAccount));
        assert_eq!(
            account.credit(Money::from_yuan(1).unwrap()),
            Err(AccountError::NoPersonalAccount)
        );
    }
}
