//! Conversions of the bureau API: accounts, bindings, settlements, refunds, and the calls.

use exchange_core as domain;
use exchange_core::binding::BindRequest;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::plan::NotPaying;
use exchange_core::records::{
    MutualAidPart, Receipt, RefundPart, RefundReceipt, RefundRequest, SettleRequest, TransferReceipt, TransferStatus,
};

use crate::common::{
    binding_kind_from_wire, binding_kind_to_wire, optional_refusal_from_wire, refusal_from_wire, refusal_to_wire,
    relation_from_wire, relation_to_wire, scheme_from_wire, scheme_to_wire,
};
use crate::error::{ConvertError, ConvertResult};
use crate::fields::{
    binding_id, credit_id, money, narrow, nested, optional_binding_id, optional_money, optional_text, person, province,
    refund_id, region, repeated, settlement_id, text, transfer_id,
};
use crate::pb;

impl TryFrom<pb::Account> for domain::Account {
    type Error = ConvertError;
    fn try_from(account: pb::Account) -> ConvertResult<domain::Account> {
        // `available_fen` is derived (balance - held) and deliberately not read back.
        let account = domain::Account {
            person: person("person", &account.person)?,
            name: text("name", account.name)?,
            province: province("province", account.province)?,
            scheme: scheme_from_wire("scheme", account.scheme)?,
            balance: money("balance_fen", account.balance_fen)?,
            held: money("held_fen", account.held_fen)?,
            frozen: account.frozen,
            frozen_reason: optional_text("frozen_reason", account.frozen_reason)?,
            closed: account.closed,
            opened_wall_ms: account.opened_wall_ms,
        };
        account
            .check_invariant()
            .map_err(|reason| ConvertError::new("held_fen", reason))?;
        Ok(account)
    }
}

impl From<domain::Account> for pb::Account {
    fn from(account: domain::Account) -> pb::Account {
        pb::Account {
            available_fen: account.available().fen(),
            person: account.person.to_string(),
            name: account.name,
            province: account.province.code(),
            scheme: scheme_to_wire(account.scheme).into(),
            balance_fen: account.balance.fen(),
            held_fen: account.held.fen(),
            frozen: account.frozen,
            frozen_reason: account.frozen_reason,
            closed: account.closed,
            opened_wall_ms: account.opened_wall_ms,
        }
    }
}

impl TryFrom<pb::BindRequest> for BindRequest {
    type Error = ConvertError;
    fn try_from(request: pb::BindRequest) -> ConvertResult<BindRequest> {
        Ok(BindRequest {
            grantor: person("grantor", &request.grantor)?,
            grantee: person("grantee", &request.grantee)?,
            grantee_province: province("grantee_province", request.grantee_province)?,
            relation: relation_from_wire("relation", request.relation)?,
            kind: binding_kind_from_wire("kind", request.kind)?,
            // Absent limits mean "no limit", as in the core's `Limits::default()`.
            limits: match request.limits {
                Some(limits) => domain::Limits::try_from(limits).map_err(|error| error.within("limits"))?,
                None => domain::Limits::default(),
            },
            evidence: nested("evidence", request.evidence)?,
        })
    }
}

impl From<BindRequest> for pb::BindRequest {
    fn from(request: BindRequest) -> pb::BindRequest {
        pb::BindRequest {
            grantor: request.grantor.to_string(),
            grantee: request.grantee.to_string(),
            grantee_province: request.grantee_province.code(),
            relation: relation_to_wire(request.relation).into(),
            kind: binding_kind_to_wire(request.kind).into(),
            limits: Some(request.limits.into()),
            evidence: Some(request.evidence.into()),
        }
    }
}

impl TryFrom<pb::SettleRequest> for SettleRequest {
    type Error = ConvertError;
    fn try_from(request: pb::SettleRequest) -> ConvertResult<SettleRequest> {
        Ok(SettleRequest {
            settlement: settlement_id("settlement", request.settlement)?,
            patient: person("patient", &request.patient)?,
            total_fee: money("total_fee_fen", request.total_fee_fen)?,
            fund_paid: money("fund_paid_fen", request.fund_paid_fen)?,
            self_pay: money("self_pay_fen", request.self_pay_fen)?,
            institution: text("institution", request.institution)?,
            treatment_region: region("treatment_region", request.treatment_region)?,
            insured_region: region("insured_region", request.insured_region)?,
        })
    }
}

impl From<SettleRequest> for pb::SettleRequest {
    fn from(request: SettleRequest) -> pb::SettleRequest {
        pb::SettleRequest {
            settlement: request.settlement.into(),
            patient: request.patient.to_string(),
            total_fee_fen: request.total_fee.fen(),
            fund_paid_fen: request.fund_paid.fen(),
            self_pay_fen: request.self_pay.fen(),
            institution: request.institution,
            treatment_region: request.treatment_region.code(),
            insured_region: request.insured_region.code(),
        }
    }
}

impl TryFrom<pb::MutualAidPart> for MutualAidPart {
    type Error = ConvertError;
    fn try_from(part: pb::MutualAidPart) -> ConvertResult<MutualAidPart> {
        Ok(MutualAidPart {
            grantor: person("grantor", &part.grantor)?,
            province: province("province", part.province)?,
            binding: binding_id("binding", &part.binding)?,
            amount: money("amount_fen", part.amount_fen)?,
            balance_after: money("balance_after_fen", part.balance_after_fen)?,
        })
    }
}

impl From<MutualAidPart> for pb::MutualAidPart {
    fn from(part: MutualAidPart) -> pb::MutualAidPart {
        pb::MutualAidPart {
            grantor: part.grantor.to_string(),
            province: part.province.code(),
            binding: part.binding.to_string(),
            amount_fen: part.amount.fen(),
            balance_after_fen: part.balance_after.fen(),
        }
    }
}

impl TryFrom<pb::NotPaying> for NotPaying {
    type Error = ConvertError;
    fn try_from(not_paying: pb::NotPaying) -> ConvertResult<NotPaying> {
        Ok(NotPaying {
            binding: binding_id("binding", &not_paying.binding)?,
            grantor: person("grantor", &not_paying.grantor)?,
            province: province("province", not_paying.province)?,
            reason: refusal_from_wire("reason", not_paying.reason)?,
        })
    }
}

impl From<NotPaying> for pb::NotPaying {
    fn from(not_paying: NotPaying) -> pb::NotPaying {
        pb::NotPaying {
            binding: not_paying.binding.to_string(),
            grantor: not_paying.grantor.to_string(),
            province: not_paying.province.code(),
            reason: refusal_to_wire(not_paying.reason).into(),
        }
    }
}

impl TryFrom<pb::Receipt> for Receipt {
    type Error = ConvertError;
    fn try_from(receipt: pb::Receipt) -> ConvertResult<Receipt> {
        Ok(Receipt {
            settlement: settlement_id("settlement", receipt.settlement)?,
            patient: person("patient", &receipt.patient)?,
            self_pay: money("self_pay_fen", receipt.self_pay_fen)?,
            own_account_paid: money("own_account_paid_fen", receipt.own_account_paid_fen)?,
            own_refusal: optional_refusal_from_wire("own_refusal", receipt.own_refusal)?,
            own_balance_after: optional_money("own_balance_after_fen", receipt.own_balance_after_fen)?,
            mutual_aid: repeated("mutual_aid", receipt.mutual_aid)?,
            cash_paid: money("cash_paid_fen", receipt.cash_paid_fen)?,
            not_paying: repeated("not_paying", receipt.not_paying)?,
            rounds: narrow("rounds", receipt.rounds)?,
            decided_wall_ms: receipt.decided_wall_ms,
        })
    }
}

impl From<Receipt> for pb::Receipt {
    fn from(receipt: Receipt) -> pb::Receipt {
        pb::Receipt {
            settlement: receipt.settlement.into(),
            patient: receipt.patient.to_string(),
            self_pay_fen: receipt.self_pay.fen(),
            own_account_paid_fen: receipt.own_account_paid.fen(),
            own_refusal: receipt.own_refusal.map(|refusal| refusal_to_wire(refusal).into()),
            own_balance_after_fen: receipt.own_balance_after.map(domain::Money::fen),
            mutual_aid: receipt.mutual_aid.into_iter().map(Into::into).collect(),
            cash_paid_fen: receipt.cash_paid.fen(),
            not_paying: receipt.not_paying.into_iter().map(Into::into).collect(),
            rounds: u32::from(receipt.rounds),
            decided_wall_ms: receipt.decided_wall_ms,
        }
    }
}

impl TryFrom<pb::RefundRequest> for RefundRequest {
    type Error = ConvertError;
    fn try_from(request: pb::RefundRequest) -> ConvertResult<RefundRequest> {
        Ok(RefundRequest {
            refund: refund_id("refund", request.refund)?,
            settlement: settlement_id("settlement", request.settlement)?,
            amount: optional_money("amount_fen", request.amount_fen)?,
        })
    }
}

impl From<RefundRequest> for pb::RefundRequest {
    fn from(request: RefundRequest) -> pb::RefundRequest {
        pb::RefundRequest {
            refund: request.refund.into(),
            settlement: request.settlement.into(),
            amount_fen: request.amount.map(domain::Money::fen),
        }
    }
}

impl TryFrom<pb::RefundPart> for RefundPart {
    type Error = ConvertError;
    fn try_from(part: pb::RefundPart) -> ConvertResult<RefundPart> {
        Ok(RefundPart {
            leg: nested("leg", part.leg)?,
            original_leg: nested("original_leg", part.original_leg)?,
            province: province("province", part.province)?,
            account: person("account", &part.account)?,
            binding: optional_binding_id("binding", part.binding.as_deref())?,
            amount: money("amount_fen", part.amount_fen)?,
        })
    }
}

impl From<RefundPart> for pb::RefundPart {
    fn from(part: RefundPart) -> pb::RefundPart {
        pb::RefundPart {
            leg: Some(part.leg.into()),
            original_leg: Some(part.original_leg.into()),
            province: part.province.code(),
            account: part.account.to_string(),
            binding: part.binding.map(|id| id.to_string()),
            amount_fen: part.amount.fen(),
        }
    }
}

impl TryFrom<pb::RefundReceipt> for RefundReceipt {
    type Error = ConvertError;
    fn try_from(receipt: pb::RefundReceipt) -> ConvertResult<RefundReceipt> {
        Ok(RefundReceipt {
            refund: refund_id("refund", receipt.refund)?,
            settlement: settlement_id("settlement", receipt.settlement)?,
            amount: money("amount_fen", receipt.amount_fen)?,
            parts: repeated("parts", receipt.parts)?,
            cash: money("cash_fen", receipt.cash_fen)?,
            decided_wall_ms: receipt.decided_wall_ms,
        })
    }
}

impl From<RefundReceipt> for pb::RefundReceipt {
    fn from(receipt: RefundReceipt) -> pb::RefundReceipt {
        pb::RefundReceipt {
            refund: receipt.refund.into(),
            settlement: receipt.settlement.into(),
            amount_fen: receipt.amount.fen(),
            parts: receipt.parts.into_iter().map(Into::into).collect(),
            cash_fen: receipt.cash.fen(),
            decided_wall_ms: receipt.decided_wall_ms,
        }
    }
}

fn transfer_status_from_wire(field: &str, value: i32) -> ConvertResult<TransferStatus> {
    use pb::TransferStatus as Wire;
    match crate::fields::enumeration(field, value, Wire::Unspecified)? {
        Wire::Committed => Ok(TransferStatus::Committed),
        Wire::Refused => Ok(TransferStatus::Refused),
        Wire::Unspecified => Err(ConvertError::missing(field)),
    }
}

fn transfer_status_to_wire(status: TransferStatus) -> pb::TransferStatus {
    match status {
        TransferStatus::Committed => pb::TransferStatus::Committed,
        TransferStatus::Refused => pb::TransferStatus::Refused,
    }
}

impl TryFrom<pb::TransferReceipt> for TransferReceipt {
    type Error = ConvertError;
    fn try_from(receipt: pb::TransferReceipt) -> ConvertResult<TransferReceipt> {
        let status = transfer_status_from_wire("status", receipt.status)?;
        let reason = optional_refusal_from_wire("reason", receipt.reason)?;
        if (status == TransferStatus::Refused) != reason.is_some() {
            return Err(ConvertError::new(
                "reason",
                "a refused transfer names its reason and a committed one none",
            ));
        }
        Ok(TransferReceipt {
            transfer: transfer_id("transfer", receipt.transfer)?,
            grantor: person("grantor", &receipt.grantor)?,
            binding: binding_id("binding", &receipt.binding)?,
            grantee: person("grantee", &receipt.grantee)?,
            grantee_province: province("grantee_province", receipt.grantee_province)?,
            amount: money("amount_fen", receipt.amount_fen)?,
            status,
            reason,
            grantor_available_after: optional_money(
                "grantor_available_after_fen",
                receipt.grantor_available_after_fen,
            )?,
            decided_wall_ms: receipt.decided_wall_ms,
        })
    }
}

impl From<TransferReceipt> for pb::TransferReceipt {
    fn from(receipt: TransferReceipt) -> pb::TransferReceipt {
        pb::TransferReceipt {
            transfer: receipt.transfer.into(),
            grantor: receipt.grantor.to_string(),
            binding: receipt.binding.to_string(),
            grantee: receipt.grantee.to_string(),
            grantee_province: receipt.grantee_province.code(),
            amount_fen: receipt.amount.fen(),
            status: transfer_status_to_wire(receipt.status).into(),
            reason: receipt.reason.map(|refusal| refusal_to_wire(refusal).into()),
            grantor_available_after_fen: receipt.grantor_available_after.map(domain::Money::fen),
            decided_wall_ms: receipt.decided_wall_ms,
        }
    }
}

impl pb::GetAccountRequest {
    /// The person asked about.
    pub fn person_id(&self) -> ConvertResult<domain::PersonId> {
        person("person", &self.person)
    }
}

impl pb::ListBindingsRequest {
    /// The person whose bindings are listed.
    pub fn person_id(&self) -> ConvertResult<domain::PersonId> {
        person("person", &self.person)
    }
}

impl pb::ListBindingsReply {
    /// The reply for a person's bindings: those where they grant, and those where they receive.
    pub fn from_bindings(as_grantor: Vec<domain::Binding>, as_grantee: Vec<domain::Binding>) -> pb::ListBindingsReply {
        pb::ListBindingsReply {
            as_grantor: as_grantor.into_iter().map(Into::into).collect(),
            as_grantee: as_grantee.into_iter().map(Into::into).collect(),
        }
    }

    /// Both lists as core bindings: (as grantor, as grantee).
    pub fn into_bindings(self) -> ConvertResult<(Vec<domain::Binding>, Vec<domain::Binding>)> {
        Ok((
            repeated("as_grantor", self.as_grantor)?,
            repeated("as_grantee", self.as_grantee)?,
        ))
    }
}

/// A bureau call's request message, one variant per RPC that changes state: the wire side of
/// the core's [`ClientRequest`]. (`GetAccount` and `ListBindings` only read, and are answered
/// from the store without the core's request path.)
#[derive(Clone, Debug, PartialEq)]
pub enum BureauRequest {
    OpenAccount(pb::OpenAccountRequest),
    Credit(pb::CreditRequest),
    Freeze(pb::FreezeRequest),
    Unfreeze(pb::UnfreezeRequest),
    CloseAccount(pb::CloseAccountRequest),
    Bind(pb::BindRequest),
    Unbind(pb::UnbindRequest),
    Settle(pb::SettleRequest),
    Refund(pb::RefundRequest),
    SetOrder(pb::SetOrderRequest),
    SetLimits(pb::SetLimitsRequest),
    Cancel(pb::CancelRequest),
    Reverse(pb::ReverseRequest),
    Transfer(pb::TransferRequest),
}

impl TryFrom<BureauRequest> for ClientRequest {
    type Error = ConvertError;
    fn try_from(request: BureauRequest) -> ConvertResult<ClientRequest> {
        Ok(match request {
            BureauRequest::OpenAccount(open) => ClientRequest::OpenAccount {
                person: person("person", &open.person)?,
                name: text("name", open.name)?,
                scheme: scheme_from_wire("scheme", open.scheme)?,
                balance: money("balance_fen", open.balance_fen)?,
            },
            BureauRequest::Credit(credit) => ClientRequest::Credit {
                credit: credit_id("credit", credit.credit)?,
                person: person("person", &credit.person)?,
                amount: money("amount_fen", credit.amount_fen)?,
            },
            BureauRequest::Freeze(freeze) => ClientRequest::Freeze {
                person: person("person", &freeze.person)?,
                reason: text("reason", freeze.reason)?,
            },
            BureauRequest::Unfreeze(unfreeze) => ClientRequest::Unfreeze {
                person: person("person", &unfreeze.person)?,
            },
            BureauRequest::CloseAccount(close) => ClientRequest::Close {
                person: person("person", &close.person)?,
            },
            BureauRequest::Bind(bind) => ClientRequest::Bind(bind.try_into()?),
            BureauRequest::Unbind(unbind) => ClientRequest::Unbind {
                binding: binding_id("binding", &unbind.binding)?,
            },
            BureauRequest::Settle(settle) => ClientRequest::Settle(settle.try_into()?),
            BureauRequest::Refund(refund) => ClientRequest::Refund(refund.try_into()?),
            BureauRequest::SetOrder(order) => ClientRequest::SetOrder {
                grantee: person("grantee", &order.grantee)?,
                bindings: binding_ids("bindings", &order.bindings)?,
            },
            BureauRequest::SetLimits(limits) => ClientRequest::SetLimits {
                binding: binding_id("binding", &limits.binding)?,
                limits: match limits.limits {
                    Some(limits) => domain::Limits::try_from(limits).map_err(|error| error.within("limits"))?,
                    None => domain::Limits::default(),
                },
            },
            BureauRequest::Cancel(cancel) => ClientRequest::Cancel {
                settlement: settlement_id("settlement", cancel.settlement)?,
            },
            BureauRequest::Reverse(reverse) => ClientRequest::Reverse {
                message: settlement_id("message", reverse.message)?,
            },
            BureauRequest::Transfer(transfer) => ClientRequest::Transfer {
                transfer: transfer_id("transfer", transfer.transfer)?,
                grantor: person("grantor", &transfer.grantor)?,
                binding: binding_id("binding", &transfer.binding)?,
                amount: money("amount_fen", transfer.amount_fen)?,
            },
        })
    }
}

impl From<ClientRequest> for BureauRequest {
    fn from(request: ClientRequest) -> BureauRequest {
        match request {
            ClientRequest::OpenAccount {
                person,
                name,
                scheme,
                balance,
            } => BureauRequest::OpenAccount(pb::OpenAccountRequest {
                person: person.to_string(),
                name,
                scheme: scheme_to_wire(scheme).into(),
                balance_fen: balance.fen(),
            }),
            ClientRequest::Credit { credit, person, amount } => BureauRequest::Credit(pb::CreditRequest {
                credit: credit.into(),
                person: person.to_string(),
                amount_fen: amount.fen(),
            }),
            ClientRequest::Freeze { person, reason } => BureauRequest::Freeze(pb::FreezeRequest {
                person: person.to_string(),
                reason,
            }),
            ClientRequest::Unfreeze { person } => BureauRequest::Unfreeze(pb::UnfreezeRequest {
                person: person.to_string(),
            }),
            ClientRequest::Close { person } => BureauRequest::CloseAccount(pb::CloseAccountRequest {
                person: person.to_string(),
            }),
            ClientRequest::Bind(bind) => BureauRequest::Bind(bind.into()),
            ClientRequest::Unbind { binding } => BureauRequest::Unbind(pb::UnbindRequest {
                binding: binding.to_string(),
            }),
            ClientRequest::Settle(settle) => BureauRequest::Settle(settle.into()),
            ClientRequest::Refund(refund) => BureauRequest::Refund(refund.into()),
            ClientRequest::SetOrder { grantee, bindings } => BureauRequest::SetOrder(pb::SetOrderRequest {
                grantee: grantee.to_string(),
                bindings: bindings.iter().map(ToString::to_string).collect(),
            }),
            ClientRequest::SetLimits { binding, limits } => BureauRequest::SetLimits(pb::SetLimitsRequest {
                binding: binding.to_string(),
                limits: Some(limits.into()),
            }),
            ClientRequest::Cancel { settlement } => BureauRequest::Cancel(pb::CancelRequest {
                settlement: settlement.into(),
            }),
            ClientRequest::Reverse { message } => BureauRequest::Reverse(pb::ReverseRequest {
                message: message.into(),
            }),
            ClientRequest::Transfer {
                transfer,
                grantor,
                binding,
                amount,
            } => BureauRequest::Transfer(pb::TransferRequest {
                transfer: transfer.into(),
                grantor: grantor.to_string(),
                binding: binding.to_string(),
                amount_fen: amount.fen(),
            }),
        }
    }
}

/// A bureau call's successful answer: the wire side of the core's [`ClientReply`] (whose
/// `Error` variant travels as a `tonic::Status` instead, see [`crate::status`]).
#[derive(Clone, Debug, PartialEq)]
pub enum BureauReply {
    Account(pb::Account),
    Credited(pb::CreditReply),
    Bound(pb::BindReply),
    Unbound(pb::UnbindReply),
    Settled(pb::Receipt),
    Refunded(pb::RefundReceipt),
    Ordered(pb::SetOrderReply),
    LimitsSet(pb::SetLimitsReply),
    Transferred(pb::TransferReceipt),
}

/// The wire answer to a core reply: a message, or the status a refused request travels as.
pub fn bureau_reply_to_wire(reply: ClientReply) -> Result<BureauReply, tonic::Status> {
    Ok(match reply {
        ClientReply::Account(account) => BureauReply::Account(account.into()),
        ClientReply::Credited {
            person,
            balance,
            duplicate,
        } => BureauReply::Credited(pb::CreditReply {
            person: person.to_string(),
            balance_fen: balance.fen(),
            duplicate,
        }),
        ClientReply::Bound { binding, status } => BureauReply::Bound(pb::BindReply {
            binding: binding.to_string(),
            status: Some(status.into()),
        }),
        ClientReply::Unbound { binding } => BureauReply::Unbound(pb::UnbindReply {
            binding: binding.to_string(),
        }),
        ClientReply::Settled(receipt) => BureauReply::Settled(receipt.into()),
        ClientReply::Refunded(receipt) => BureauReply::Refunded(receipt.into()),
        ClientReply::Ordered { grantee, bindings } => BureauReply::Ordered(pb::SetOrderReply {
            grantee: grantee.to_string(),
            bindings: bindings.iter().map(ToString::to_string).collect(),
        }),
        ClientReply::LimitsSet { binding, limits } => BureauReply::LimitsSet(pb::SetLimitsReply {
            binding: binding.to_string(),
            limits: Some(limits.into()),
        }),
        ClientReply::Transferred(receipt) => BureauReply::Transferred(receipt.into()),
        ClientReply::Error(error) => return Err(crate::status::client_error_to_status(&error)),
    })
}

impl TryFrom<BureauReply> for ClientReply {
    type Error = ConvertError;
    fn try_from(reply: BureauReply) -> ConvertResult<ClientReply> {
        Ok(match reply {
            BureauReply::Account(account) => ClientReply::Account(account.try_into()?),
            BureauReply::Credited(credited) => ClientReply::Credited {
                person: person("person", &credited.person)?,
                balance: money("balance_fen", credited.balance_fen)?,
                duplicate: credited.duplicate,
            },
            BureauReply::Bound(bound) => ClientReply::Bound {
                binding: binding_id("binding", &bound.binding)?,
                status: nested("status", bound.status)?,
            },
            BureauReply::Unbound(unbound) => ClientReply::Unbound {
                binding: binding_id("binding", &unbound.binding)?,
            },
            BureauReply::Settled(receipt) => ClientReply::Settled(receipt.try_into()?),
            BureauReply::Refunded(receipt) => ClientReply::Refunded(receipt.try_into()?),
            BureauReply::Ordered(order) => ClientReply::Ordered {
                grantee: person("grantee", &order.grantee)?,
                bindings: binding_ids("bindings", &order.bindings)?,
            },
            BureauReply::LimitsSet(set) => ClientReply::LimitsSet {
                binding: binding_id("binding", &set.binding)?,
                limits: match set.limits {
                    Some(limits) => domain::Limits::try_from(limits).map_err(|error| error.within("limits"))?,
                    None => domain::Limits::default(),
                },
            },
            BureauReply::Transferred(receipt) => ClientReply::Transferred(receipt.try_into()?),
        })
    }
}

/// Binding ids of a repeated field, each checked; the error names its index.
fn binding_ids(field: &str, texts: &[String]) -> ConvertResult<Vec<domain::BindingId>> {
    if texts.len() > domain::policy::GRANTORS_PER_SETTLEMENT_MAX {
        return Err(ConvertError::new(
            field,
            format!("at most {} bindings", domain::policy::GRANTORS_PER_SETTLEMENT_MAX),
        ));
    }
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| binding_id(&format!("{field}[{index}]"), text))
        .collect()
}
