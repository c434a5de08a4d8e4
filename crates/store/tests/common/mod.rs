//! Fixtures shared by the store's integration tests: one value of every record kind, built
//! from small integers so tests and property tests can draw from a small universe.

#![allow(dead_code)]

use std::path::Path;

use exchange_core::account::{Account, Scheme};
use exchange_core::binding::{Binding, BindingKind, BindingStatus, DocumentKind, Evidence, Limits, Relation};
use exchange_core::ids::{BindingId, CreditId, LegId, LegScope, RefundId, SettlementId};
use exchange_core::money::Money;
use exchange_core::person::PersonId;
use exchange_core::plan::NotPaying;
use exchange_core::reason::Refusal;
use exchange_core::records::{
    CreditRecord, DecidedLeg, Fence, Hold, JournalEntry, JournalKind, MutualAidPart, OutboxKey, Receipt, RefundPart,
    RefundReceipt, RefundRecord, RefundRequest, SettleRequest, SettlementRecord,
};
use exchange_core::region::{Province, Region};
use exchange_core::time::YearMonth;
use exchange_store::{Store, StoreConfig};

/// A small page cache keeps the tests' memory low.
pub fn test_config() -> StoreConfig {
    StoreConfig {
        cache_capacity_bytes: 4 * 1024 * 1024,
        flush_every_ms: None,
    }
}

pub fn open(path: &Path) -> Store {
    Store::open(path, &test_config()).unwrap()
}

pub fn money(fen: u64) -> Money {
    Money::from_fen(fen).unwrap()
}

pub fn province() -> Province {
    Province::from_code(110_000).unwrap()
}

pub fn other_province() -> Province {
    Province::from_code(500_000).unwrap()
}

pub fn person(index: u64) -> PersonId {
    PersonId::synthetic(110_101, index)
}

pub fn account(index: u64, balance_fen: u64) -> Account {
    let mut account = Account::open(
        person(index),
        format!("person {index}"),
        province(),
        Scheme::Employee,
        1_700_000_000_000,
    );
    account.balance = money(balance_fen);
    if balance_fen % 7 == 0 {
        account.frozen = true;
        account.frozen_reason = Some("card lost".to_string());
    }
    account
}

pub fn binding_id(serial: u64) -> BindingId {
    BindingId::new(province(), serial)
}

pub fn binding(serial: u64, variant: u8) -> Binding {
    let status = match variant % 4 {
        0 => BindingStatus::Pending,
        1 => BindingStatus::Active,
        2 => BindingStatus::Refused,
        _ => BindingStatus::Revoked {
            at_wall_ms: 1_700_000_000_123,
        },
    };
    Binding {
        id: binding_id(serial),
        grantor: person(serial),
        grantor_province: province(),
        grantee: person(serial.wrapping_add(100)),
        grantee_province: other_province(),
        relation: Relation::Parent,
        kind: BindingKind::MutualAid,
        position: u32::from(variant),
        limits: Limits {
            per_settlement: Some(money(50_000)),
            monthly: if variant % 2 == 0 { None } else { Some(money(100_000)) },
        },
        evidence: Evidence {
            document: DocumentKind::HouseholdRegister,
            reference: format!("HR-{serial}"),
            face_verified: true,
            commitment_signed: true,
        },
        created_wall_ms: 1_700_000_000_000,
        status,
        usage_month: YearMonth { year: 2026, month: 3 },
        usage_in_month: money(u64::from(variant) * 10),
    }
}

pub fn settlement_id(index: u64) -> SettlementId {
    SettlementId::new(format!("S-{index}")).unwrap()
}

pub fn refund_id(index: u64) -> RefundId {
    RefundId::new(format!("R-{index}")).unwrap()
}

pub fn credit_id(index: u64) -> CreditId {
    CreditId::new(format!("C-{index}")).unwrap()
}

pub fn leg(index: u64) -> LegId {
    let scope = if index % 2 == 0 {
        LegScope::Pay {
            settlement: settlement_id(index / 2),
            attempt: 1,
        }
    } else {
        LegScope::Refund {
            settlement: settlement_id(index / 2),
            refund: refund_id(index / 2),
        }
    };
    LegId {
        coordinator: province(),
        scope,
        index: (index % 3) as u16,
        account: person(index % 4),
    }
}

pub fn fence(variant: u8) -> Fence {
    match variant % 5 {
        0 => Fence::Prepared(Hold {
            account: person(1),
            binding: Some(binding_id(1)),
            patient: person(101),
            amount: money(1_000),
            available_before: money(9_000),
            month: YearMonth { year: 2026, month: 3 },
            prepared_wall_ms: 1_700_000_000_000,
            hold_timeout_ms: 30_000,
        }),
        1 => Fence::Committed {
            account: person(1),
            binding: Some(binding_id(1)),
            amount: money(800),
            refunded: money(0),
        },
        2 => Fence::Aborted {
            refusal: Some(Refusal::InsufficientBalance),
        },
        3 => Fence::Aborted { refusal: None },
        _ => Fence::Credited {
            account: person(2),
            amount: money(300),
        },
    }
}

pub fn outbox_key(index: u64) -> OutboxKey {
    match index % 4 {
        0 => OutboxKey::Settlement(settlement_id(index)),
        1 => OutboxKey::Refund {
            settlement: settlement_id(index),
            refund: refund_id(index),
        },
        2 => OutboxKey::Registration(binding_id(index)),
        _ => OutboxKey::Revocation(binding_id(index)),
    }
}

pub fn settle_request(index: u64) -> SettleRequest {
    SettleRequest {
        settlement: settlement_id(index),
        patient: person(101),
        total_fee: money(10_000),
        fund_paid: money(6_000),
        self_pay: money(4_000),
        institution: "H110101001".to_string(),
        treatment_region: Region::from_code(110_101).unwrap(),
        insured_region: Region::from_code(500_101).unwrap(),
    }
}

pub fn settlement_record(index: u64, refunded_fen: u64) -> SettlementRecord {
    SettlementRecord {
        request: settle_request(index),
        receipt: Receipt {
            settlement: settlement_id(index),
            patient: person(101),
            self_pay: money(4_000),
            own_account_paid: money(1_000),
            own_refusal: None,
            own_balance_after: Some(money(0)),
            mutual_aid: vec![MutualAidPart {
                grantor: person(1),
                province: province(),
                binding: binding_id(1),
                amount: money(2_500),
                balance_after: money(500),
            }],
            cash_paid: money(500),
            not_paying: vec![NotPaying {
                binding: binding_id(2),
                grantor: person(2),
                province: other_province(),
                reason: Refusal::AccountFrozen,
            }],
            rounds: 1,
            decided_wall_ms: 1_700_000_000_500,
        },
        legs: vec![DecidedLeg {
            leg: leg(index.wrapping_mul(2)),
            province: province(),
            account: person(1),
            binding: Some(binding_id(1)),
            amount: money(2_500),
            notify: true,
            refunded: money(refunded_fen),
        }],
        refunded_total: money(refunded_fen),
    }
}

pub fn refund_record(index: u64) -> RefundRecord {
    RefundRecord {
        request: RefundRequest {
            refund: refund_id(index),
            settlement: settlement_id(index),
            amount: if index % 2 == 0 { None } else { Some(money(100)) },
        },
        receipt: RefundReceipt {
            refund: refund_id(index),
            settlement: settlement_id(index),
            amount: money(100),
            parts: vec![RefundPart {
                leg: leg(index.wrapping_mul(2).wrapping_add(1)),
                original_leg: leg(index.wrapping_mul(2)),
                province: province(),
                account: person(1),
                binding: Some(binding_id(1)),
                amount: money(100),
            }],
            cash: money(0),
            decided_wall_ms: 1_700_000_000_900,
        },
    }
}

pub fn credit_record(index: u64, amount_fen: u64) -> CreditRecord {
    CreditRecord {
        credit: credit_id(index),
        person: person(index),
        amount: money(amount_fen),
        applied_wall_ms: 1_700_000_000_000,
    }
}

pub fn journal_entry(index: u64) -> JournalEntry {
    let kinds = [
        JournalKind::Credit,
        JournalKind::Debit,
        JournalKind::RefundCredit,
        JournalKind::MutualAidReceived,
        JournalKind::MutualAidRefunded,
    ];
    JournalEntry {
        kind: kinds[(index % 5) as usize],
        wall_ms: 1_700_000_000_000 + index as i64,
        amount: money(index + 1),
        account: Some(person(index % 4)),
        leg: if index % 2 == 0 { Some(leg(index)) } else { None },
        binding: Some(binding_id(index % 3)),
        settlement: Some(settlement_id(index % 2)),
        counterparty: Some(other_province()),
        reference: if index % 3 == 0 {
            Some(format!("ref-{index}"))
        } else {
            None
        },
    }
}
