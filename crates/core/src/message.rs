//! Messages between province nodes (the node-to-node protocol), and the node's client API.

use serde::{Deserialize, Serialize};

use crate::binding::{BindRequest, Binding, BindingStatus};
use crate::ids::{BindingId, CreditId, LegId, TransferId};
use crate::money::Money;
use crate::person::PersonId;
use crate::reason::Refusal;
use crate::records::{Receipt, RefundReceipt, RefundRequest, SettleRequest, TransferReceipt};

/// Ask the account's node to hold up to `amount_max` for a leg.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Prepare {
    /// The leg; its `account` is the account to hold on: the patient's own (no binding) or a
    /// grantor's.
    pub leg: LegId,
    pub binding: Option<BindingId>,
    pub patient: PersonId,
    pub amount_max: Money,
    /// How long the participant keeps the hold before it starts asking for the outcome,
    /// measured on its own clock from when it received this message.
    pub hold_timeout_ms: u64,
}

/// A participant's answer to a prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Vote {
    /// Held `held` (at most what was asked); `available_before` is the account's available
    /// balance before the hold (used by the largest-balance-first order and receipts).
    Yes {
        held: Money,
        available_before: Money,
    },
    No {
        reason: Refusal,
    },
}

/// What a participant reports once a leg is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LegOutcome {
    Committed { amount: Money },
    Aborted,
    Credited { amount: Money },
}

/// Result of registering a binding on the grantee's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Registration {
    Accepted,
    /// Refused with a [`crate::binding::BindRefusal`] code.
    Refused {
        code: RefusalCode,
    },
}

/// A bind refusal code carried on the wire (a static string from `BindRefusal::code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RefusalCode {
    GranteeNotEnrolled,
    GranteeClosed,
    TooManyGrantors,
    Malformed,
}

impl RefusalCode {
    pub fn code(self) -> &'static str {
        match self {
            RefusalCode::GranteeNotEnrolled => "grantee_not_enrolled",
            RefusalCode::GranteeClosed => "grantee_closed",
            RefusalCode::TooManyGrantors => "too_many_grantors",
            RefusalCode::Malformed => "malformed",
        }
    }
}

/// Node-to-node messages. Every message is safe to deliver twice, late or out of order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PeerMessage {
    Prepare(Prepare),
    Vote {
        leg: LegId,
        vote: Vote,
    },
    /// Turn the hold into a debit of `amount` (at most the held amount; the rest is released).
    Commit {
        leg: LegId,
        amount: Money,
    },
    Abort {
        leg: LegId,
    },
    /// A refund credit-back along `original`, a committed leg on the same account.
    Credit {
        leg: LegId,
        original: LegId,
        amount: Money,
    },
    Ack {
        leg: LegId,
        outcome: LegOutcome,
    },
    /// A participant holding past its deadline asks what became of the leg.
    Query {
        leg: LegId,
    },
    RegisterBinding(Binding),
    Registered {
        binding: BindingId,
        registration: Registration,
    },
    Revoked {
        binding: BindingId,
        at_wall_ms: i64,
    },
    RevocationNoted {
        binding: BindingId,
    },
}

impl PeerMessage {
    /// Short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Prepare(_) => "prepare",
            PeerMessage::Vote { .. } => "vote",
            PeerMessage::Commit { .. } => "commit",
            PeerMessage::Abort { .. } => "abort",
            PeerMessage::Credit { .. } => "credit",
            PeerMessage::Ack { .. } => "ack",
            PeerMessage::Query { .. } => "query",
            PeerMessage::RegisterBinding(_) => "register_binding",
            PeerMessage::Registered { .. } => "registered",
            PeerMessage::Revoked { .. } => "revoked",
            PeerMessage::RevocationNoted { .. } => "revocation_noted",
        }
    }
}

/// Requests from the province's own bureau and hospitals (the bureau API).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientRequest {
    OpenAccount {
        person: PersonId,
        name: String,
        scheme: crate::account::Scheme,
        balance: Money,
    },
    Credit {
        credit: CreditId,
        person: PersonId,
        amount: Money,
    },
    Freeze {
        person: PersonId,
        reason: String,
    },
    Unfreeze {
        person: PersonId,
    },
    Close {
        person: PersonId,
    },
    Bind(BindRequest),
    Unbind {
        binding: BindingId,
    },
    Settle(SettleRequest),
    Refund(RefundRequest),
    /// Set the family's order of a grantee's grantors (on the grantee's node): the listed
    /// bindings pay in this order under the family-order policy.
    SetOrder {
        grantee: PersonId,
        bindings: Vec<BindingId>,
    },
    /// Change a binding's spending limits (on the grantor's node, which enforces them).
    SetLimits {
        binding: BindingId,
        limits: crate::binding::Limits,
    },
    /// Cancel a settlement (like interface 2208): refund everything still unrefunded.
    Cancel {
        settlement: crate::ids::SettlementId,
    },
    /// Reverse a message by its original id (冲正, like interface 2601): a settlement's id
    /// undoes that settlement. Applied once, and the same as a cancellation.
    Reverse {
        message: crate::ids::SettlementId,
    },
    /// A wallet transfer (on the grantor's node): push `amount` from `grantor`'s account to
    /// the grantee of `binding`, in two phases. The caller chooses `transfer`: the same id with
    /// the same request gets the same receipt, with another request an error.
    Transfer {
        transfer: TransferId,
        grantor: PersonId,
        binding: BindingId,
        amount: Money,
    },
}

/// The node's answers to client requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientReply {
    Account(crate::account::Account),
    Credited {
        person: PersonId,
        balance: Money,
        duplicate: bool,
    },
    Bound {
        binding: BindingId,
        status: BindingStatus,
    },
    Unbound {
        binding: BindingId,
    },
    Settled(Receipt),
    Refunded(RefundReceipt),
    Error(crate::error::ClientError),
    Ordered {
        grantee: PersonId,
        bindings: Vec<BindingId>,
    },
    LimitsSet {
        binding: BindingId,
        limits: crate::binding::Limits,
    },
    /// A wallet transfer's receipt: committed, or refused with the reason.
    Transferred(TransferReceipt),
}
