//! Proptest strategies for the core types that cross the wire (shared by the proto tests).

#![allow(dead_code)]

use exchange_core::binding::{BindRequest, DocumentKind};
use exchange_core::message::{
    ClientReply, ClientRequest, LegOutcome, PeerMessage, Prepare, RefusalCode, Registration, Vote,
};
use exchange_core::money::MONEY_MAX_FEN;
use exchange_core::plan::NotPaying;
use exchange_core::records::{
    JournalEntry, JournalKind, MutualAidPart, Receipt, RefundPart, RefundReceipt, RefundRequest, SettleRequest,
    TransferReceipt, TransferStatus,
};
use exchange_core::time::YearMonth;
use exchange_core::{
    Account, Binding, BindingId, BindingKind, BindingStatus, CreditId, Evidence, LegId, LegScope, Limits, Money,
    PersonId, Province, RefundId, Refusal, Region, Relation, Scheme, SettlementId, TransferId,
};
use proptest::prelude::*;
use proptest::sample::select;

pub fn province() -> impl Strategy<Value = Province> {
    select(Province::all().collect::<Vec<_>>())
}

pub fn region() -> impl Strategy<Value = Region> {
    (province(), 0u32..10_000).prop_map(|(province, suffix)| Region::from_code(province.code() + suffix).unwrap())
}

pub fn person() -> impl Strategy<Value = PersonId> {
    (110_000u32..660_000, 0u64..36_500_000).prop_map(|(region, serial)| PersonId::synthetic(region, serial))
}

pub fn money() -> impl Strategy<Value = Money> {
    prop_oneof![
        (0u64..=10_000_000).prop_map(|fen| Money::from_fen(fen).unwrap()),
        (0u64..=MONEY_MAX_FEN).prop_map(|fen| Money::from_fen(fen).unwrap()),
    ]
}

fn external_id_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,64}"
}

pub fn settlement_id() -> impl Strategy<Value = SettlementId> {
    external_id_text().prop_map(|text| SettlementId::new(text).unwrap())
}

pub fn refund_id() -> impl Strategy<Value = RefundId> {
    external_id_text().prop_map(|text| RefundId::new(text).unwrap())
}

pub fn credit_id() -> impl Strategy<Value = CreditId> {
    external_id_text().prop_map(|text| CreditId::new(text).unwrap())
}

pub fn transfer_id() -> impl Strategy<Value = TransferId> {
    external_id_text().prop_map(|text| TransferId::new(text).unwrap())
}

pub fn binding_id() -> impl Strategy<Value = BindingId> {
    (province(), any::<u64>()).prop_map(|(province, serial)| BindingId::new(province, serial))
}

pub fn leg_id() -> impl Strategy<Value = LegId> {
    let scope = prop_oneof![
        (settlement_id(), any::<u32>()).prop_map(|(settlement, attempt)| LegScope::Pay { settlement, attempt }),
        (settlement_id(), refund_id()).prop_map(|(settlement, refund)| LegScope::Refund { settlement, refund }),
        (transfer_id(), any::<u32>()).prop_map(|(transfer, attempt)| LegScope::Transfer { transfer, attempt }),
    ];
    (province(), scope, any::<u16>(), person()).prop_map(|(coordinator, scope, index, account)| LegId {
        coordinator,
        scope,
        index,
        account,
    })
}

pub fn refusal() -> impl Strategy<Value = Refusal> {
    select(Refusal::ALL.to_vec())
}

/// Free text within the wire's limit (up to 40 characters of any script).
pub fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

pub fn evidence() -> impl Strategy<Value = Evidence> {
    (
        select(vec![
            DocumentKind::HouseholdRegister,
            DocumentKind::MarriageCertificate,
            DocumentKind::BirthCertificate,
        ]),
        text(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(document, reference, face_verified, commitment_signed)| Evidence {
            document,
            reference,
            face_verified,
            commitment_signed,
        })
}

pub fn limits() -> impl Strategy<Value = Limits> {
    (proptest::option::of(money()), proptest::option::of(money())).prop_map(|(per_settlement, monthly)| Limits {
        per_settlement,
        monthly,
    })
}

pub fn binding_status() -> impl Strategy<Value = BindingStatus> {
    prop_oneof![
        Just(BindingStatus::Pending),
        Just(BindingStatus::Active),
        Just(BindingStatus::Refused),
        any::<i64>().prop_map(|at_wall_ms| BindingStatus::Revoked { at_wall_ms }),
    ]
}

pub fn year_month() -> impl Strategy<Value = YearMonth> {
    prop_oneof![
        Just(YearMonth::default()),
        (any::<i32>(), 1u8..=12).prop_map(|(year, month)| YearMonth { year, month }),
    ]
}

pub fn relation() -> impl Strategy<Value = Relation> {
    select(Relation::ALL.to_vec())
}

pub fn binding_kind() -> impl Strategy<Value = BindingKind> {
    select(vec![BindingKind::MutualAid, BindingKind::Proxy])
}

pub fn binding() -> impl Strategy<Value = Binding> {
    (
        (binding_id(), person(), province(), person(), province()),
        (relation(), binding_kind(), any::<u32>(), limits(), evidence()),
        (any::<i64>(), binding_status(), year_month(), money()),
    )
        .prop_map(
            |(
                (id, grantor, grantor_province, grantee, grantee_province),
                (relation, kind, position, limits, evidence),
                (created_wall_ms, status, usage_month, usage_in_month),
            )| Binding {
                id,
                grantor,
                grantor_province,
                grantee,
                grantee_province,
                relation,
                kind,
                position,
                limits,
                evidence,
                created_wall_ms,
                status,
                usage_month,
                usage_in_month,
            },
        )
}

fn vote() -> impl Strategy<Value = Vote> {
    prop_oneof![
        (money(), money()).prop_map(|(held, available_before)| Vote::Yes { held, available_before }),
        refusal().prop_map(|reason| Vote::No { reason }),
    ]
}

fn leg_outcome() -> impl Strategy<Value = LegOutcome> {
    prop_oneof![
        money().prop_map(|amount| LegOutcome::Committed { amount }),
        Just(LegOutcome::Aborted),
        money().prop_map(|amount| LegOutcome::Credited { amount }),
    ]
}

fn registration() -> impl Strategy<Value = Registration> {
    prop_oneof![
        Just(Registration::Accepted),
        select(vec![
            RefusalCode::GranteeNotEnrolled,
            RefusalCode::GranteeClosed,
            RefusalCode::TooManyGrantors,
            RefusalCode::Malformed,
        ])
        .prop_map(|code| Registration::Refused { code }),
    ]
}

pub fn peer_message() -> impl Strategy<Value = PeerMessage> {
    prop_oneof![
        (
            leg_id(),
            proptest::option::of(binding_id()),
            person(),
            money(),
            any::<u64>()
        )
            .prop_map(
                |(leg, binding, patient, amount_max, hold_timeout_ms)| PeerMessage::Prepare(Prepare {
                    leg,
                    binding,
                    patient,
                    amount_max,
                    hold_timeout_ms,
                })
            ),
        (leg_id(), vote()).prop_map(|(leg, vote)| PeerMessage::Vote { leg, vote }),
        (leg_id(), money()).prop_map(|(leg, amount)| PeerMessage::Commit { leg, amount }),
        leg_id().prop_map(|leg| PeerMessage::Abort { leg }),
        (leg_id(), leg_id(), money()).prop_map(|(leg, original, amount)| PeerMessage::Credit { leg, original, amount }),
        (leg_id(), leg_outcome()).prop_map(|(leg, outcome)| PeerMessage::Ack { leg, outcome }),
        leg_id().prop_map(|leg| PeerMessage::Query { leg }),
        binding().prop_map(PeerMessage::RegisterBinding),
        (binding_id(), registration())
            .prop_map(|(binding, registration)| PeerMessage::Registered { binding, registration }),
        (binding_id(), any::<i64>()).prop_map(|(binding, at_wall_ms)| PeerMessage::Revoked { binding, at_wall_ms }),
        binding_id().prop_map(|binding| PeerMessage::RevocationNoted { binding }),
    ]
}

pub fn settle_request() -> impl Strategy<Value = SettleRequest> {
    (
        settlement_id(),
        person(),
        money(),
        money(),
        money(),
        text(),
        region(),
        region(),
    )
        .prop_map(
            |(settlement, patient, total_fee, fund_paid, self_pay, institution, treatment_region, insured_region)| {
                SettleRequest {
                    settlement,
                    patient,
                    total_fee,
                    fund_paid,
                    self_pay,
                    institution,
                    treatment_region,
                    insured_region,
                }
            },
        )
}

fn mutual_aid_part() -> impl Strategy<Value = MutualAidPart> {
    (person(), province(), binding_id(), money(), money()).prop_map(
        |(grantor, province, binding, amount, balance_after)| MutualAidPart {
            grantor,
            province,
            binding,
            amount,
            balance_after,
        },
    )
}

fn not_paying() -> impl Strategy<Value = NotPaying> {
    (binding_id(), person(), province(), refusal()).prop_map(|(binding, grantor, province, reason)| NotPaying {
        binding,
        grantor,
        province,
        reason,
    })
}

pub fn receipt() -> impl Strategy<Value = Receipt> {
    (
        (settlement_id(), person(), money(), money()),
        (proptest::option::of(refusal()), proptest::option::of(money())),
        (
            proptest::collection::vec(mutual_aid_part(), 0..4),
            money(),
            proptest::collection::vec(not_paying(), 0..4),
            any::<u8>(),
            any::<i64>(),
        ),
    )
        .prop_map(
            |(
                (settlement, patient, self_pay, own_account_paid),
                (own_refusal, own_balance_after),
                (mutual_aid, cash_paid, not_paying, rounds, decided_wall_ms),
            )| Receipt {
                settlement,
                patient,
                self_pay,
                own_account_paid,
                own_refusal,
                own_balance_after,
                mutual_aid,
                cash_paid,
                not_paying,
                rounds,
                decided_wall_ms,
            },
        )
}

pub fn refund_request() -> impl Strategy<Value = RefundRequest> {
    (refund_id(), settlement_id(), proptest::option::of(money())).prop_map(|(refund, settlement, amount)| {
        RefundRequest {
            refund,
            settlement,
            amount,
        }
    })
}

fn refund_part() -> impl Strategy<Value = RefundPart> {
    (
        leg_id(),
        leg_id(),
        province(),
        person(),
        proptest::option::of(binding_id()),
        money(),
    )
        .prop_map(|(leg, original_leg, province, account, binding, amount)| RefundPart {
            leg,
            original_leg,
            province,
            account,
            binding,
            amount,
        })
}

pub fn refund_receipt() -> impl Strategy<Value = RefundReceipt> {
    (
        refund_id(),
        settlement_id(),
        money(),
        proptest::collection::vec(refund_part(), 0..4),
        money(),
        any::<i64>(),
    )
        .prop_map(
            |(refund, settlement, amount, parts, cash, decided_wall_ms)| RefundReceipt {
                refund,
                settlement,
                amount,
                parts,
                cash,
                decided_wall_ms,
            },
        )
}

pub fn account() -> impl Strategy<Value = Account> {
    let money_parts = prop_oneof![
        Just((Scheme::Resident, 0u64, 0u64)),
        (0u64..=MONEY_MAX_FEN).prop_flat_map(|balance| (Just(Scheme::Employee), Just(balance), 0u64..=balance)),
    ];
    (
        (person(), text(), province(), money_parts),
        (any::<bool>(), proptest::option::of(text()), any::<bool>(), any::<i64>()),
    )
        .prop_map(
            |((person, name, province, (scheme, balance, held)), (frozen, frozen_reason, closed, opened_wall_ms))| {
                Account {
                    person,
                    name,
                    province,
                    scheme,
                    balance: Money::from_fen(balance).unwrap(),
                    held: Money::from_fen(held).unwrap(),
                    frozen,
                    frozen_reason,
                    closed,
                    opened_wall_ms,
                }
            },
        )
}

pub fn journal_entry() -> impl Strategy<Value = JournalEntry> {
    (
        select(vec![
            JournalKind::Credit,
            JournalKind::Debit,
            JournalKind::RefundCredit,
            JournalKind::MutualAidReceived,
            JournalKind::MutualAidRefunded,
            JournalKind::TransferSent,
            JournalKind::TransferReceived,
        ]),
        any::<i64>(),
        money(),
        proptest::option::of(person()),
        proptest::option::of(leg_id()),
        proptest::option::of(binding_id()),
        proptest::option::of(settlement_id()),
        proptest::option::of(province()),
        proptest::option::of(text()),
    )
        .prop_map(
            |(kind, wall_ms, amount, account, leg, binding, settlement, counterparty, reference)| JournalEntry {
                kind,
                wall_ms,
                amount,
                account,
                leg,
                binding,
                settlement,
                counterparty,
                reference,
            },
        )
}

pub fn bind_request() -> impl Strategy<Value = BindRequest> {
    (
        person(),
        person(),
        province(),
        relation(),
        binding_kind(),
        limits(),
        evidence(),
    )
        .prop_map(
            |(grantor, grantee, grantee_province, relation, kind, limits, evidence)| BindRequest {
                grantor,
                grantee,
                grantee_province,
                relation,
                kind,
                limits,
                evidence,
            },
        )
}

pub fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        (
            person(),
            text(),
            select(vec![Scheme::Employee, Scheme::Resident]),
            money()
        )
            .prop_map(|(person, name, scheme, balance)| ClientRequest::OpenAccount {
                person,
                name,
                scheme,
                balance
            }),
        (credit_id(), person(), money()).prop_map(|(credit, person, amount)| ClientRequest::Credit {
            credit,
            person,
            amount
        }),
        (person(), text()).prop_map(|(person, reason)| ClientRequest::Freeze { person, reason }),
        person().prop_map(|person| ClientRequest::Unfreeze { person }),
        person().prop_map(|person| ClientRequest::Close { person }),
        bind_request().prop_map(ClientRequest::Bind),
        binding_id().prop_map(|binding| ClientRequest::Unbind { binding }),
        settle_request().prop_map(ClientRequest::Settle),
        refund_request().prop_map(ClientRequest::Refund),
        (person(), proptest::collection::vec(binding_id(), 0..4))
            .prop_map(|(grantee, bindings)| ClientRequest::SetOrder { grantee, bindings }),
        (binding_id(), limits()).prop_map(|(binding, limits)| ClientRequest::SetLimits { binding, limits }),
        settlement_id().prop_map(|settlement| ClientRequest::Cancel { settlement }),
        settlement_id().prop_map(|message| ClientRequest::Reverse { message }),
        (transfer_id(), person(), binding_id(), money()).prop_map(|(transfer, grantor, binding, amount)| {
            ClientRequest::Transfer {
                transfer,
                grantor,
                binding,
                amount,
            }
        }),
    ]
}

pub fn transfer_receipt() -> impl Strategy<Value = TransferReceipt> {
    (
        (transfer_id(), person(), binding_id(), person(), province(), money()),
        proptest::option::of(refusal()),
        proptest::option::of(money()),
        any::<i64>(),
    )
        .prop_map(
            |((transfer, grantor, binding, grantee, grantee_province, amount), reason, available, decided_wall_ms)| {
                TransferReceipt {
                    transfer,
                    grantor,
                    binding,
                    grantee,
                    grantee_province,
                    amount,
                    status: if reason.is_some() {
                        TransferStatus::Refused
                    } else {
                        TransferStatus::Committed
                    },
                    reason,
                    grantor_available_after: available,
                    decided_wall_ms,
                }
            },
        )
}

/// Every successful reply (errors travel as a status, tested separately).
pub fn client_reply() -> impl Strategy<Value = ClientReply> {
    prop_oneof![
        account().prop_map(ClientReply::Account),
        (person(), money(), any::<bool>()).prop_map(|(person, balance, duplicate)| ClientReply::Credited {
            person,
            balance,
            duplicate
        }),
        (binding_id(), binding_status()).prop_map(|(binding, status)| ClientReply::Bound { binding, status }),
        binding_id().prop_map(|binding| ClientReply::Unbound { binding }),
        receipt().prop_map(ClientReply::Settled),
        refund_receipt().prop_map(ClientReply::Refunded),
        (person(), proptest::collection::vec(binding_id(), 0..4))
            .prop_map(|(grantee, bindings)| ClientReply::Ordered { grantee, bindings }),
        (binding_id(), limits()).prop_map(|(binding, limits)| ClientReply::LimitsSet { binding, limits }),
        transfer_receipt().prop_map(ClientReply::Transferred),
    ]
}
