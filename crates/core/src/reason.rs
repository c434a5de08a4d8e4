//! Reason codes: why a grantor did not pay, why a leg was refused. Values, never panics.

use serde::{Deserialize, Serialize};

/// Why a leg (a hold on an account) was refused or left out of a settlement.
///
/// The same codes travel on the wire (`code()`), appear in receipts, and are counted by the
/// monitor, so they are stable snake_case strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The account's card is reported lost (frozen): it neither pays nor is drawn on.
    AccountFrozen,
    /// The account is closed (the person left the scheme).
    AccountClosed,
    /// No such account on the node that should hold it.
    UnknownAccount,
    /// A resident-scheme person has no personal account to pay from.
    NoPersonalAccount,
    /// Available balance is zero.
    InsufficientBalance,
    /// The binding's per-settlement or monthly limit leaves nothing to pay.
    LimitReached,
    /// No such binding on the grantor's node.
    UnknownBinding,
    /// The binding was revoked on the grantor's node.
    BindingRevoked,
    /// The binding has not completed registration on both nodes.
    BindingPending,
    /// The binding is of the proxy kind (亲情账户): it never moves money.
    NotMutualAid,
    /// The patient named in the request is not the binding's grantee, or the account is not
    /// the binding's grantor.
    GranteeMismatch,
    /// The asking node may not coordinate this leg (patient not of its province).
    NotAuthorized,
    /// The leg was already aborted (a prepare that arrives after its abort is refused).
    AlreadyAborted,
    /// The coordinator did not get this leg's vote in time, or it could no longer commit it
    /// before its deadline.
    Timeout,
    /// The grantor's money was not needed: earlier accounts in the order paid the bill.
    NotNeeded,
    /// Too many grantors for one settlement; the rest were not asked.
    TooManyGrantors,
    /// A wallet transfer in the policy's quiet hours (22:00-06:00 China Standard Time by
    /// default).
    QuietHours,
    /// A wallet transfer above the policy's per-transfer cap (2,000 yuan by default).
    TransferAmountLimit,
    /// The grantor already made the policy's number of wallet transfers today (3 by default).
    DailyTransferLimit,
    /// The receiving node does not accept wallet transfers (its policy says so).
    TransfersNotAccepted,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::AccountFrozen => "account_frozen",
            Refusal::AccountClosed => "account_closed",
            Refusal::UnknownAccount => "unknown_account",
            Refusal::NoPersonalAccount => "no_personal_account",
            Refusal::InsufficientBalance => "insufficient_balance",
            Refusal::LimitReached => "limit_reached",
            Refusal::UnknownBinding => "unknown_binding",
            Refusal::BindingRevoked => "binding_revoked",
            Refusal::BindingPending => "binding_pending",
            Refusal::NotMutualAid => "not_mutual_aid",
            Refusal::GranteeMismatch => "grantee_mismatch",
            Refusal::NotAuthorized => "not_authorized",
            Refusal::AlreadyAborted => "already_aborted",
            Refusal::Timeout => "timeout",
            Refusal::NotNeeded => "not_needed",
            Refusal::TooManyGrantors => "too_many_grantors",
            Refusal::QuietHours => "quiet_hours",
            Refusal::TransferAmountLimit => "transfer_amount_limit",
            Refusal::DailyTransferLimit => "daily_transfer_limit",
            Refusal::TransfersNotAccepted => "transfers_not_accepted",
        }
    }

    pub const ALL: [Refusal; 20] = [
        Refusal::AccountFrozen,
        Refusal::AccountClosed,
        Refusal::UnknownAccount,
        Refusal::NoPersonalAccount,
        Refusal::InsufficientBalance,
        Refusal::LimitReached,
        Refusal::UnknownBinding,
        Refusal::BindingRevoked,
        Refusal::BindingPending,
        Refusal::NotMutualAid,
        Refusal::GranteeMismatch,
        Refusal::NotAuthorized,
        Refusal::AlreadyAborted,
        Refusal::Timeout,
        Refusal::NotNeeded,
        Refusal::TooManyGrantors,
        Refusal::QuietHours,
        Refusal::TransferAmountLimit,
        Refusal::DailyTransferLimit,
        Refusal::TransfersNotAccepted,
    ];

    pub fn from_code(code: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_serde() {
        for refusal in Refusal::ALL {
            assert_eq!(Refusal::from_code(refusal.code()), Some(refusal));
            let json = serde_json::to_string(&refusal).unwrap();
            assert_eq!(json, format!("\"{}\"", refusal.code()));
        }
    }
}
