//! Conversions of the shared types: leg ids, refusal codes, bindings and their parts.

use exchange_core as domain;
use exchange_core::binding::DocumentKind;
use exchange_core::time::YearMonth;

use crate::error::{ConvertError, ConvertResult};
use crate::fields::{
    binding_id, enumeration, money, narrow, nested, optional_money, person, province, refund_id, required,
    settlement_id, text, transfer_id,
};
use crate::pb;

impl TryFrom<pb::LegId> for domain::LegId {
    type Error = ConvertError;
    fn try_from(leg: pb::LegId) -> ConvertResult<domain::LegId> {
        let scope = match required("scope", leg.scope)? {
            pb::leg_id::Scope::Pay(pay) => domain::LegScope::Pay {
                settlement: settlement_id("pay.settlement", pay.settlement)?,
                attempt: pay.attempt,
            },
            pb::leg_id::Scope::Refund(refund) => domain::LegScope::Refund {
                settlement: settlement_id("refund.settlement", refund.settlement)?,
                refund: refund_id("refund.refund", refund.refund)?,
            },
            pb::leg_id::Scope::Transfer(transfer) => domain::LegScope::Transfer {
                transfer: transfer_id("transfer.transfer", transfer.transfer)?,
                attempt: transfer.attempt,
            },
        };
        Ok(domain::LegId {
            coordinator: province("coordinator", leg.coordinator)?,
            scope,
            index: narrow("index", leg.index)?,
            account: person("account", &leg.account)?,
        })
    }
}

impl From<domain::LegId> for pb::LegId {
    fn from(leg: domain::LegId) -> pb::LegId {
        let scope = match leg.scope {
            domain::LegScope::Pay { settlement, attempt } => pb::leg_id::Scope::Pay(pb::PayScope {
                settlement: settlement.into(),
                attempt,
            }),
            domain::LegScope::Refund { settlement, refund } => pb::leg_id::Scope::Refund(pb::RefundScope {
                settlement: settlement.into(),
                refund: refund.into(),
            }),
            domain::LegScope::Transfer { transfer, attempt } => pb::leg_id::Scope::Transfer(pb::TransferScope {
                transfer: transfer.into(),
                attempt,
            }),
        };
        pb::LegId {
            coordinator: leg.coordinator.code(),
            scope: Some(scope),
            index: u32::from(leg.index),
            account: leg.account.to_string(),
        }
    }
}

/// Builds the pair of enum conversions between a core enum and its generated twin, so the two
/// lists cannot drift apart silently: a variant added on either side breaks the build here.
macro_rules! enum_mapping {
    ($to_domain:ident, $to_wire:ident, $domain:ty, $wire:ty, [$($variant:ident),* $(,)?]) => {
        /// The core value of a wire enum field; zero (unspecified) and unknown values are refused.
        pub fn $to_domain(field: &str, value: i32) -> ConvertResult<$domain> {
            match enumeration(field, value, <$wire>::Unspecified)? {
                $(<$wire>::$variant => Ok(<$domain>::$variant),)*
                <$wire>::Unspecified => Err(ConvertError::missing(field)),
            }
        }

        /// The wire value of a core enum.
        pub fn $to_wire(value: $domain) -> $wire {
            match value {
                $(<$domain>::$variant => <$wire>::$variant,)*
            }
        }
    };
}

enum_mapping!(
    refusal_from_wire,
    refusal_to_wire,
    domain::Refusal,
    pb::Refusal,
    [
        AccountFrozen,
        AccountClosed,
        UnknownAccount,
        NoPersonalAccount,
        InsufficientBalance,
        LimitReached,
        UnknownBinding,
        BindingRevoked,
        BindingPending,
        NotMutualAid,
        GranteeMismatch,
        NotAuthorized,
        AlreadyAborted,
        Timeout,
        NotNeeded,
        TooManyGrantors,
        QuietHours,
        TransferAmountLimit,
        DailyTransferLimit,
        TransfersNotAccepted,
    ]
);

enum_mapping!(
    relation_from_wire,
    relation_to_wire,
    domain::Relation,
    pb::Relation,
    [Spouse, Parent, Child, Sibling, Grandparent, Grandchild]
);

enum_mapping!(
    binding_kind_from_wire,
    binding_kind_to_wire,
    domain::BindingKind,
    pb::BindingKind,
    [MutualAid, Proxy]
);

enum_mapping!(
    document_kind_from_wire,
    document_kind_to_wire,
    DocumentKind,
    pb::DocumentKind,
    [HouseholdRegister, MarriageCertificate, BirthCertificate]
);

enum_mapping!(
    scheme_from_wire,
    scheme_to_wire,
    domain::Scheme,
    pb::Scheme,
    [Employee, Resident]
);

/// The wire value of an optional refusal (absent stays absent).
pub(crate) fn optional_refusal_from_wire(field: &str, value: Option<i32>) -> ConvertResult<Option<domain::Refusal>> {
    value.map(|value| refusal_from_wire(field, value)).transpose()
}

impl TryFrom<pb::Evidence> for domain::Evidence {
    type Error = ConvertError;
    fn try_from(evidence: pb::Evidence) -> ConvertResult<domain::Evidence> {
        Ok(domain::Evidence {
            document: document_kind_from_wire("document", evidence.document)?,
            reference: text("reference", evidence.reference)?,
            face_verified: evidence.face_verified,
            commitment_signed: evidence.commitment_signed,
        })
    }
}

impl From<domain::Evidence> for pb::Evidence {
    fn from(evidence: domain::Evidence) -> pb::Evidence {
        pb::Evidence {
            document: document_kind_to_wire(evidence.document).into(),
            reference: evidence.reference,
            face_verified: evidence.face_verified,
            commitment_signed: evidence.commitment_signed,
        }
    }
}

impl TryFrom<pb::Limits> for domain::Limits {
    type Error = ConvertError;
    fn try_from(limits: pb::Limits) -> ConvertResult<domain::Limits> {
        Ok(domain::Limits {
            per_settlement: optional_money("per_settlement_fen", limits.per_settlement_fen)?,
            monthly: optional_money("monthly_fen", limits.monthly_fen)?,
        })
    }
}

impl From<domain::Limits> for pb::Limits {
    fn from(limits: domain::Limits) -> pb::Limits {
        pb::Limits {
            per_settlement_fen: limits.per_settlement.map(domain::Money::fen),
            monthly_fen: limits.monthly.map(domain::Money::fen),
        }
    }
}

impl TryFrom<pb::BindingStatus> for domain::BindingStatus {
    type Error = ConvertError;
    fn try_from(status: pb::BindingStatus) -> ConvertResult<domain::BindingStatus> {
        Ok(match required("state", status.state)? {
            pb::binding_status::State::Pending(_) => domain::BindingStatus::Pending,
            pb::binding_status::State::Active(_) => domain::BindingStatus::Active,
            pb::binding_status::State::Refused(_) => domain::BindingStatus::Refused,
            pb::binding_status::State::Revoked(revoked) => domain::BindingStatus::Revoked {
                at_wall_ms: revoked.at_wall_ms,
            },
        })
    }
}

impl From<domain::BindingStatus> for pb::BindingStatus {
    fn from(status: domain::BindingStatus) -> pb::BindingStatus {
        let state = match status {
            domain::BindingStatus::Pending => pb::binding_status::State::Pending(pb::binding_status::Pending {}),
            domain::BindingStatus::Active => pb::binding_status::State::Active(pb::binding_status::Active {}),
            domain::BindingStatus::Refused => pb::binding_status::State::Refused(pb::binding_status::Refused {}),
            domain::BindingStatus::Revoked { at_wall_ms } => {
                pb::binding_status::State::Revoked(pb::binding_status::Revoked { at_wall_ms })
            }
        };
        pb::BindingStatus { state: Some(state) }
    }
}

impl TryFrom<pb::YearMonth> for YearMonth {
    type Error = ConvertError;
    fn try_from(month: pb::YearMonth) -> ConvertResult<YearMonth> {
        // (0, 0) is the core's `YearMonth::default()`, "no month yet"; anything else must be a
        // real calendar month.
        let is_default = month.year == 0 && month.month == 0;
        if !is_default && !(1..=12).contains(&month.month) {
            return Err(ConvertError::new(
                "month",
                format!("{} is not a month (1-12)", month.month),
            ));
        }
        Ok(YearMonth {
            year: month.year,
            month: narrow("month", month.month)?,
        })
    }
}

impl From<YearMonth> for pb::YearMonth {
    fn from(month: YearMonth) -> pb::YearMonth {
        pb::YearMonth {
            year: month.year,
            month: u32::from(month.month),
        }
    }
}

impl TryFrom<pb::Binding> for domain::Binding {
    type Error = ConvertError;
    fn try_from(binding: pb::Binding) -> ConvertResult<domain::Binding> {
        Ok(domain::Binding {
            id: binding_id("id", &binding.id)?,
            grantor: person("grantor", &binding.grantor)?,
            grantor_province: province("grantor_province", binding.grantor_province)?,
            grantee: person("grantee", &binding.grantee)?,
            grantee_province: province("grantee_province", binding.grantee_province)?,
            relation: relation_from_wire("relation", binding.relation)?,
            kind: binding_kind_from_wire("kind", binding.kind)?,
            position: binding.position,
            limits: nested("limits", binding.limits)?,
            evidence: nested("evidence", binding.evidence)?,
            created_wall_ms: binding.created_wall_ms,
            status: nested("status", binding.status)?,
            usage_month: nested("usage_month", binding.usage_month)?,
            usage_in_month: money("usage_in_month_fen", binding.usage_in_month_fen)?,
        })
    }
}

impl From<domain::Binding> for pb::Binding {
    fn from(binding: domain::Binding) -> pb::Binding {
        pb::Binding {
            id: binding.id.to_string(),
            grantor: binding.grantor.to_string(),
            grantor_province: binding.grantor_province.code(),
            grantee: binding.grantee.to_string(),
            grantee_province: binding.grantee_province.code(),
            relation: relation_to_wire(binding.relation).into(),
            kind: binding_kind_to_wire(binding.kind).into(),
            position: binding.position,
            limits: Some(binding.limits.into()),
            evidence: Some(binding.evidence.into()),
            created_wall_ms: binding.created_wall_ms,
            status: Some(binding.status.into()),
            usage_month: Some(binding.usage_month.into()),
            usage_in_month_fen: binding.usage_in_month.fen(),
        }
    }
}
