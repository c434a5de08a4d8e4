//! Identifiers: caller-chosen request ids, binding ids and the leg ids of the two-phase protocol.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::person::PersonId;
use crate::region::Province;

/// Longest caller-chosen id accepted, in bytes (the national `setl_id` is 30 characters).
pub const EXTERNAL_ID_LEN_MAX: usize = 64;

/// Why a caller-chosen id was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long; at most {max} are allowed")]
    TooLong { kind: &'static str, len: usize, max: usize },
    #[error("{kind} {text:?} may hold only letters, digits and - _ . : (found {found:?})")]
    BadCharacter {
        kind: &'static str,
        text: String,
        found: char,
    },
    #[error("binding id {0:?} is not of the form PROVINCE-SERIAL, e.g. 110000-42")]
    BadBindingId(String),
}

/// Longest refund id: a caller's id, or a cancellation's id derived from a settlement id.
pub const REFUND_ID_LEN_MAX: usize = EXTERNAL_ID_LEN_MAX + 8;

fn validate_external(kind: &'static str, text: &str, max: usize) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if text.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: text.len(),
            max,
        });
    }
    if let Some(found) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(IdError::BadCharacter {
            kind,
            text: text.to_string(),
            found,
        });
    }
    Ok(())
}

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(text: impl Into<String>) -> Result<$name, IdError> {
                let text = text.into();
                validate_external($kind, &text, $max)?;
                Ok($name(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<$name, IdError> {
                $name::new(text)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(text: String) -> Result<$name, IdError> {
                $name::new(text)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

external_id!(
    /// A settlement's id, chosen by the hospital (the national interface's `setl_id`).
    SettlementId,
    "settlement id",
    EXTERNAL_ID_LEN_MAX
);
external_id!(
    /// A refund's id, chosen by the caller; a refund retried with the same id is applied once.
    RefundId,
    "refund id",
    REFUND_ID_LEN_MAX
);
external_id!(
    /// A credit's id (划入), chosen by the bureau; a batch re-sent is applied once.
    CreditId,
    "credit id",
    EXTERNAL_ID_LEN_MAX
);
external_id!(
    /// A wallet transfer's id, chosen by the grantor's bureau; a transfer re-sent with the same
    /// id is applied once and answered with the same receipt.
    TransferId,
    "transfer id",
    EXTERNAL_ID_LEN_MAX
);

impl RefundId {
    /// The refund that cancels (or reverses) `settlement`: one id, so a cancellation and a
    /// reversal of the same settlement are the same operation, applied once.
    pub fn cancellation_of(settlement: &SettlementId) -> RefundId {
        RefundId(format!("X:{settlement}"))
    }
}

/// A binding's id: the grantor's province (which issued it and is its authority) and a serial.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BindingId {
    pub province: Province,
    pub serial: u64,
}

impl BindingId {
    pub fn new(province: Province, serial: u64) -> BindingId {
        BindingId { province, serial }
    }
}

impl fmt::Display for BindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.province, self.serial)
    }
}

impl fmt::Debug for BindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BindingId({self})")
    }
}

impl FromStr for BindingId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<BindingId, IdError> {
        let bad = || IdError::BadBindingId(text.to_string());
        let (province, serial) = text.split_once('-').ok_or_else(bad)?;
        let province: Province = province.parse().map_err(|_| bad())?;
        if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let serial: u64 = serial.parse().map_err(|_| bad())?;
        Ok(BindingId { province, serial })
    }
}

impl TryFrom<String> for BindingId {
    type Error = IdError;
    fn try_from(text: String) -> Result<BindingId, IdError> {
        text.parse()
    }
}

impl From<BindingId> for String {
    fn from(id: BindingId) -> String {
        id.to_string()
    }
}

/// What a leg belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LegScope {
    /// A deduction leg of a settlement. `attempt` is the coordinator's incarnation when the leg
    /// was created, so a settlement retried after a coordinator restart never reuses a leg id.
    Pay { settlement: SettlementId, attempt: u32 },
    /// A credit-back leg of a refund of `settlement` (named so that every message about a
    /// settlement, refunds included, can be routed by its settlement id).
    Refund { settlement: SettlementId, refund: RefundId },
    /// A leg of a wallet transfer, coordinated by the grantor's node: index
    /// [`TRANSFER_DEBIT_INDEX`] holds and debits the grantor's account, index
    /// [`TRANSFER_CREDIT_INDEX`] credits the receiving relative's account. `attempt` is the
    /// coordinator's incarnation, as for a settlement.
    Transfer { transfer: TransferId, attempt: u32 },
}

/// The leg index of a transfer's hold and debit on the grantor's account.
pub const TRANSFER_DEBIT_INDEX: u16 = 0;
/// The leg index of a transfer's credit to the receiving relative's account.
pub const TRANSFER_CREDIT_INDEX: u16 = 1;

/// What [`LegId::settlement`] answers for a transfer leg: the empty id, which no settlement
/// can have (caller-chosen ids are never empty), so it never names a real settlement.
static NO_SETTLEMENT: SettlementId = SettlementId(String::new());

/// One leg of a cross-account operation: globally unique because the coordinating province is
/// part of it (two provinces' hospitals may choose the same settlement id). The account the leg
/// draws on or credits is part of the id: a participant routes every message of a leg to the
/// owner of that account, and a fence can only ever concern that one account.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LegId {
    pub coordinator: Province,
    pub scope: LegScope,
    pub index: u16,
    pub account: PersonId,
}

impl LegId {
    /// The settlement this leg pays or refunds; for a transfer leg, which belongs to no
    /// settlement, the empty id (see [`LegId::settlement_id`]).
    pub fn settlement(&self) -> &SettlementId {
        match &self.scope {
            LegScope::Pay { settlement, .. } | LegScope::Refund { settlement, .. } => settlement,
            LegScope::Transfer { .. } => &NO_SETTLEMENT,
        }
    }

    /// The settlement this leg pays or refunds, if it belongs to one.
    pub fn settlement_id(&self) -> Option<&SettlementId> {
        match &self.scope {
            LegScope::Pay { settlement, .. } | LegScope::Refund { settlement, .. } => Some(settlement),
            LegScope::Transfer { .. } => None,
        }
    }

    /// The wallet transfer this leg belongs to, if any.
    pub fn transfer(&self) -> Option<&TransferId> {
        match &self.scope {
            LegScope::Transfer { transfer, .. } => Some(transfer),
            _ => None,
        }
    }
}

impl fmt::Display for LegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            LegScope::Pay { settlement, attempt } => {
                write!(
                    f,
                    "{}/pay/{}/{}/{}/{}",
                    self.coordinator, settlement, attempt, self.index, self.account
                )
            }
            LegScope::Refund { settlement, refund } => {
                write!(
                    f,
                    "{}/refund/{}/{}/{}",
                    self.coordinator, settlement, refund, self.index
                )
            }
            LegScope::Transfer { transfer, attempt } => {
                write!(
                    f,
                    "{}/transfer/{}/{}/{}/{}",
                    self.coordinator, transfer, attempt, self.index, self.account
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_validated() {
        assert!(SettlementId::new("S-2026.11:22_001").is_ok());
        assert_eq!(SettlementId::new(""), Err(IdError::Empty { kind: "settlement id" }));
        assert!(matches!(
            SettlementId::new("a/b"),
            Err(IdError::BadCharacter { found: '/', .. })
        ));
        assert!(matches!(
            RefundId::new("x".repeat(73)),
            Err(IdError::TooLong { len: 73, .. })
        ));
    }

    #[test]
    fn binding_ids_round_trip() {
        let id: BindingId = "110000-42".parse().unwrap();
        assert_eq!(id.to_string(), "110000-42");
        for bad in ["110000", "110000-", "110000-x", "999999-1", "-1", "110000--1"] {
            assert!(bad.parse::<BindingId>().is_err(), "{bad}");
        }
    }
}
