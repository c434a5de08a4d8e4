//! Durable records of the protocol: fences, holds, settlement and refund decisions, journal.

use serde::{Deserialize, Serialize};

use crate::ids::{BindingId, CreditId, LegId, RefundId, SettlementId, TransferId};
use crate::money::Money;
use crate::person::PersonId;
use crate::plan::NotPaying;
use crate::reason::Refusal;
use crate::region::{Province, Region};
use crate::time::{CivilDate, YearMonth};

/// A live hold on an account, kept inside its leg's fence while the leg is prepared.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hold {
    pub account: PersonId,
    pub binding: Option<BindingId>,
    pub patient: PersonId,
    pub amount: Money,
    /// The account's available balance before the hold (repeated in a duplicate vote).
    pub available_before: Money,
    /// The month whose limit usage counted this hold.
    pub month: YearMonth,
    pub prepared_wall_ms: i64,
    pub hold_timeout_ms: u64,
}

/// The per-leg fence on the participant. Changed only by compare-and-set, in the same atomic
/// write as the balance change it guards. Terminal states are never left.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fence {
    /// Voted yes: `hold` is reserved on the account until the coordinator's answer.
    Prepared(Hold),
    /// The hold became a debit of `amount` (possibly less than held; the rest was released).
    /// `refunded` counts what refunds have credited back along this leg since.
    Committed {
        account: PersonId,
        binding: Option<BindingId>,
        amount: Money,
        refunded: Money,
    },
    /// Refused at prepare, released at abort, or aborted before any prepare arrived (empty
    /// rollback). A prepare that arrives later is refused.
    Aborted { refusal: Option<Refusal> },
    /// A refund leg: `amount` was credited to `account`.
    Credited { account: PersonId, amount: Money },
}

/// A caller-facing settlement request, as a hospital sends it (fields after the national
/// settlement interface).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SettleRequest {
    pub settlement: SettlementId,
    pub patient: PersonId,
    /// Total fee of the bill (医疗费总额).
    pub total_fee: Money,
    /// The pooled fund's part (统筹基金支付); never shared, not an account of a person.
    pub fund_paid: Money,
    /// The self-pay part (个人自付): only this may be paid from personal accounts.
    pub self_pay: Money,
    pub institution: String,
    pub treatment_region: Region,
    pub insured_region: Region,
}

/// One grantor's payment in a receipt.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MutualAidPart {
    pub grantor: PersonId,
    pub province: Province,
    pub binding: BindingId,
    pub amount: Money,
    /// The grantor's available balance after this payment, as their node reported it.
    pub balance_after: Money,
}

/// The answer to a settlement: how the self-pay part was paid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    pub settlement: SettlementId,
    pub patient: PersonId,
    pub self_pay: Money,
    pub own_account_paid: Money,
    pub own_refusal: Option<Refusal>,
    /// The patient's own available balance after this payment (None: no personal account).
    pub own_balance_after: Option<Money>,
    pub mutual_aid: Vec<MutualAidPart>,
    pub cash_paid: Money,
    /// Grantors who did not pay, with the reason.
    pub not_paying: Vec<NotPaying>,
    /// How many prepare rounds it took (1 unless a grantor's no forced a re-plan round).
    pub rounds: u8,
    pub decided_wall_ms: i64,
}

/// One leg of a decided settlement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecidedLeg {
    pub leg: LegId,
    pub province: Province,
    pub account: PersonId,
    pub binding: Option<BindingId>,
    /// What the leg commits; zero means the leg is aborted.
    pub amount: Money,
    /// Whether the participant must be told (false for legs it refused itself).
    pub notify: bool,
    /// Credited back by refunds so far.
    pub refunded: Money,
}

/// The coordinator's durable decision for a settlement. Written once with COMMIT; only the
/// `refunded` counters change afterwards. Presumed abort: no record means aborted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SettlementRecord {
    pub request: SettleRequest,
    pub receipt: Receipt,
    pub legs: Vec<DecidedLeg>,
    /// Refunded so far, including the cash part.
    pub refunded_total: Money,
}

/// A refund request: full when `amount` is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefundRequest {
    pub refund: RefundId,
    pub settlement: SettlementId,
    pub amount: Option<Money>,
}

/// One credit-back of a refund.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefundPart {
    pub leg: LegId,
    pub original_leg: LegId,
    pub province: Province,
    pub account: PersonId,
    pub binding: Option<BindingId>,
    pub amount: Money,
}

/// The answer to a refund.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefundReceipt {
    pub refund: RefundId,
    pub settlement: SettlementId,
    pub amount: Money,
    /// Credits back to accounts: grantors first (last payer first), then the own account.
    pub parts: Vec<RefundPart>,
    /// What the hospital returns in cash.
    pub cash: Money,
    pub decided_wall_ms: i64,
}

/// The coordinator's durable refund decision.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefundRecord {
    pub request: RefundRequest,
    pub receipt: RefundReceipt,
}

/// Something the coordinator still has to deliver: kept until every participant acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OutboxKey {
    Settlement(SettlementId),
    Refund {
        settlement: SettlementId,
        refund: RefundId,
    },
    Registration(BindingId),
    Revocation(BindingId),
    /// A wallet transfer's commit or abort, until both legs acknowledged.
    Transfer(TransferId),
}

/// A credit (划入) applied once per id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CreditRecord {
    pub credit: CreditId,
    pub person: PersonId,
    pub amount: Money,
    pub applied_wall_ms: i64,
}

/// What a journal entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    /// An opening balance or a credit (划入) into an account. Balance +.
    Credit,
    /// A settlement leg debited an account of this node. Balance -.
    /// `counterparty` is the coordinating province (itself for local legs).
    Debit,
    /// A refund leg credited an account of this node back. Balance +.
    RefundCredit,
    /// Clearing claim on the coordinator: province `counterparty` paid `amount` for one of
    /// this province's patients. No balance of this node changes.
    MutualAidReceived,
    /// Clearing claim reversed by a refund: `amount` went back to `counterparty`'s account.
    MutualAidRefunded,
    /// Clearing claim on the grantor's node: a wallet transfer of `amount` to `account` in
    /// province `counterparty` was decided (COMMIT); this province owes it. No balance of this
    /// node changes here: the grantor's own account is debited by a local `Debit` of the
    /// transfer's debit leg. `leg` is the transfer's credit leg.
    TransferSent,
    /// A wallet transfer from a grantor in province `counterparty` credited `account` of this
    /// node. Balance +. `leg` is the transfer's credit leg.
    TransferReceived,
}

impl JournalKind {
    /// The signed effect on the sum of this node's balances.
    pub fn balance_sign(self) -> i8 {
        match self {
            JournalKind::Credit | JournalKind::RefundCredit | JournalKind::TransferReceived => 1,
            JournalKind::Debit => -1,
            JournalKind::MutualAidReceived | JournalKind::MutualAidRefunded | JournalKind::TransferSent => 0,
        }
    }
}

/// One line of the node's journal. Every balance change has one, in the same atomic write.
/// The driver gives each entry the node's next sequence number when it stores it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JournalEntry {
    pub kind: JournalKind,
    pub wall_ms: i64,
    pub amount: Money,
    pub account: Option<PersonId>,
    pub leg: Option<LegId>,
    pub binding: Option<BindingId>,
    pub settlement: Option<SettlementId>,
    /// The other province involved (coordinator or payer); this node's own for local legs.
    pub counterparty: Option<Province>,
    /// Free reference: credit id, institution code.
    pub reference: Option<String>,
}

/// A wallet transfer (the national model of 2025): a grantor pushes `amount` from their
/// personal account to the grantee of `binding`, an active mutual-aid binding of theirs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferRequest {
    pub transfer: TransferId,
    pub grantor: PersonId,
    pub binding: BindingId,
    pub amount: Money,
}

/// How a wallet transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    /// The grantor's account is debited and the receiver's credited (exactly once each).
    Committed,
    /// Nothing moved: refused by the grantor's node (policy, card, balance, binding) or by the
    /// receiving node, or timed out; any hold was released ("the money returns").
    Refused,
}

impl TransferStatus {
    pub fn code(self) -> &'static str {
        match self {
            TransferStatus::Committed => "committed",
            TransferStatus::Refused => "refused",
        }
    }
}

/// The answer to a wallet transfer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferReceipt {
    pub transfer: TransferId,
    pub grantor: PersonId,
    pub binding: BindingId,
    pub grantee: PersonId,
    pub grantee_province: Province,
    pub amount: Money,
    pub status: TransferStatus,
    /// Why it was refused (None when committed).
    pub reason: Option<Refusal>,
    /// The grantor's available balance after the transfer, as their account reported it when
    /// the amount was held (None when nothing was held).
    pub grantor_available_after: Option<Money>,
    pub decided_wall_ms: i64,
}

/// The grantor's node's durable decision of a transfer. Written once; presumed abort: no
/// record means nothing moved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferRecord {
    pub request: TransferRequest,
    pub receipt: TransferReceipt,
    /// The debit leg and, if it was asked, the credit leg (amount zero: aborted).
    pub legs: Vec<DecidedLeg>,
}

/// A grantor's wallet transfers counted on one day (China Standard Time): live holds and
/// committed transfers; a released hold no longer counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WalletUsage {
    pub person: PersonId,
    pub day: CivilDate,
    pub transfers: u32,
}
