//! Planner and binding-policy tests: the cases the foundation issue names, plus properties.

use exchange_core::binding::{
    BindRefusal, BindRequest, DocumentKind, Evidence, Limits, Relation, check_bind_at_grantee, check_bind_at_grantor,
    check_unbind,
};
use exchange_core::plan::{Candidate, OwnAccount, PlanInput, plan};
use exchange_core::time::CivilDate;
use exchange_core::{
    Account, Binding, BindingId, BindingKind, BindingStatus, GrantorOrder, Money, PersonId, Policy, Province, Refusal,
    Scheme,
};
use proptest::prelude::*;

fn yuan(value: u64) -> Money {
    Money::from_yuan(value).unwrap()
}

fn province(code: u32) -> Province {
    Province::from_code(code).unwrap()
}

fn candidate(serial: u64, code: u32, available: u64) -> Candidate {
    Candidate {
        binding: BindingId::new(province(code), serial),
        grantor: PersonId::synthetic(code, serial),
        province: province(code),
        available: yuan(available),
        balance_for_order: yuan(available),
        per_settlement_limit: None,
        monthly_remaining: None,
        position: 0,
        created_wall_ms: i64::try_from(serial).unwrap(),
        refusal: None,
    }
}

#[test]
fn resident_patient_with_no_account_pays_from_grantors_then_cash() {
    let input = PlanInput {
        self_pay: yuan(300),
        own: None,
        candidates: vec![candidate(1, 110000, 100)],
        order: GrantorOrder::BindingOrder,
    };
    let planned = plan(&input).unwrap();
    assert_eq!(planned.own, Money::ZERO);
    assert_eq!(planned.own_refusal, Some(Refusal::NoPersonalAccount));
    assert_eq!(planned.legs.len(), 1);
    assert_eq!(planned.legs[0].amount, yuan(100));
    assert_eq!(planned.cash, yuan(200));
}

#[test]
fn own_account_covers_everything() {
    let input = PlanInput {
        self_pay: yuan(80),
        own: Some(OwnAccount {
            available: yuan(500),
            refusal: None,
        }),
        candidates: vec![candidate(1, 110000, 1000)],
        order: GrantorOrder::BindingOrder,
    };
    let planned = plan(&input).unwrap();
    assert_eq!(planned.own, yuan(80));
    assert!(planned.legs.is_empty());
    assert_eq!(planned.cash, Money::ZERO);
    assert_eq!(planned.not_paying[0].reason, Refusal::NotNeeded);
}

#[test]
fn two_grantors_in_two_provinces_follow_order_and_limits() {
    let mut beijing = candidate(2, 110000, 1000);
    beijing.per_settlement_limit = Some(yuan(150));
    beijing.position = 1;
    let mut sichuan = candidate(1, 510000, 400);
    sichuan.monthly_remaining = Some(yuan(120));
    sichuan.position = 2;
    let mut input = PlanInput {
        self_pay: yuan(500),
        own: Some(OwnAccount {
            available: yuan(100),
            refusal: None,
        }),
        candidates: vec![sichuan, beijing],
        order: GrantorOrder::FamilyOrder,
    };
    let planned = plan(&input).unwrap();
    assert_eq!(planned.own, yuan(100));
    assert_eq!(
        planned.legs[0].province,
        province(110000),
        "family order puts Beijing first"
    );
    assert_eq!(planned.legs[0].amount, yuan(150), "per-settlement limit");
    assert_eq!(planned.legs[1].amount, yuan(120), "monthly limit");
    assert_eq!(planned.cash, yuan(130));

    input.order = GrantorOrder::BindingOrder;
    let planned = plan(&input).unwrap();
    assert_eq!(
        planned.legs[0].province,
        province(510000),
        "binding order puts the older binding first"
    );

    input.order = GrantorOrder::LargestBalanceFirst;
    let planned = plan(&input).unwrap();
    assert_eq!(planned.legs[0].province, province(110000), "largest balance first");
}

#[test]
fn frozen_grantor_is_skipped_with_the_reason() {
    let mut frozen = candidate(1, 110000, 1000);
    frozen.refusal = Some(Refusal::AccountFrozen);
    let input = PlanInput {
        self_pay: yuan(100),
        own: Some(OwnAccount {
            available: Money::ZERO,
            refusal: None,
        }),
        candidates: vec![frozen, candidate(2, 510000, 1000)],
        order: GrantorOrder::BindingOrder,
    };
    let planned = plan(&input).unwrap();
    assert_eq!(planned.legs.len(), 1);
    assert_eq!(planned.legs[0].province, province(510000));
    assert_eq!(planned.not_paying[0].reason, Refusal::AccountFrozen);
}

#[test]
fn zero_self_pay_plans_nothing() {
    let input = PlanInput {
        self_pay: Money::ZERO,
        own: None,
        candidates: vec![candidate(1, 110000, 10)],
        order: GrantorOrder::BindingOrder,
    };
    let planned = plan(&input).unwrap();
    assert_eq!((planned.own, planned.cash), (Money::ZERO, Money::ZERO));
    assert!(planned.legs.is_empty());
    assert_eq!(planned.own_refusal, None);
}

fn arb_candidate() -> impl Strategy<Value = Candidate> {
    (
        1u64..1000,
        prop::sample::select(vec![110000u32, 310000, 500000, 510000]),
        0u64..100_000,
        prop::option::of(1u64..50_000),
        prop::option::of(0u64..50_000),
        0u32..4,
        prop::option::of(Just(Refusal::AccountFrozen)),
    )
        .prop_map(|(serial, code, available, per, monthly, position, refusal)| Candidate {
            binding: BindingId::new(Province::from_code(code).unwrap(), serial),
            grantor: PersonId::synthetic(code, serial),
            province: Province::from_code(code).unwrap(),
            available: Money::from_fen(available).unwrap(),
            balance_for_order: Money::from_fen(available).unwrap(),
            per_settlement_limit: per.map(|v| Money::from_fen(v).unwrap()),
            monthly_remaining: monthly.map(|v| Money::from_fen(v).unwrap()),
            position,
            created_wall_ms: i64::try_from(serial).unwrap(),
            refusal,
        })
}

fn arb_input() -> impl Strategy<Value = PlanInput> {
    (
        0u64..200_000,
        prop::option::of((0u64..100_000, prop::bool::ANY)),
        prop::collection::vec(arb_candidate(), 0..10),
        prop::sample::select(vec![
            GrantorOrder::BindingOrder,
            GrantorOrder::LargestBalanceFirst,
            GrantorOrder::FamilyOrder,
        ]),
    )
        .prop_map(|(self_pay, own, mut candidates, order)| {
            candidates.sort_by_key(|c| c.binding);
            candidates.dedup_by_key(|c| c.binding);
            PlanInput {
                self_pay: Money::from_fen(self_pay).unwrap(),
                own: own.map(|(available, frozen)| OwnAccount {
                    available: Money::from_fen(available).unwrap(),
                    refusal: frozen.then_some(Refusal::AccountFrozen),
                }),
                candidates,
                order,
            }
        })
}

proptest! {
    #[test]
    fn plans_add_up_and_respect_balances_limits_and_order(input in arb_input()) {
        let planned = plan(&input).unwrap();
        let total = Money::sum([planned.own, planned.mutual_aid_total().unwrap(), planned.cash]).unwrap();
        prop_assert_eq!(total, input.self_pay, "own + legs + cash = self-pay");
        match input.own {
            Some(own) if own.refusal.is_none() => prop_assert!(planned.own <= own.available),
            _ => prop_assert_eq!(planned.own, Money::ZERO),
        }
        for leg in &planned.legs {
            let c = input.candidates.iter().find(|c| c.binding == leg.binding).unwrap();
            prop_assert!(c.refusal.is_none());
            prop_assert!(!leg.amount.is_zero());
            prop_assert!(leg.amount <= c.available);
            if let Some(limit) = c.per_settlement_limit { prop_assert!(leg.amount <= limit); }
            if let Some(limit) = c.monthly_remaining { prop_assert!(leg.amount <= limit); }
        }
        // Order: a grantor later in the order pays only if every earlier payable grantor gave
        // all it could.
        let mut ordered = input.candidates.clone();
        exchange_core::plan::order_candidates(&mut ordered, input.order);
        let mut saw_partial = false;
        for c in ordered.iter().filter(|c| c.refusal.is_none()) {
            let paid = planned.legs.iter().find(|l| l.binding == c.binding).map(|l| l.amount).unwrap_or(Money::ZERO);
            if saw_partial { prop_assert_eq!(paid, Money::ZERO); }
            if paid < c.capacity() { saw_partial = true; }
        }
        // Cash only when nobody could give more.
        if !planned.cash.is_zero() {
            for c in input.candidates.iter().filter(|c| c.refusal.is_none()) {
                let paid = planned.legs.iter().find(|l| l.binding == c.binding).map(|l| l.amount).unwrap_or(Money::ZERO);
                prop_assert!(paid == c.capacity() || input.candidates.len() > exchange_core::policy::GRANTORS_PER_SETTLEMENT_MAX);
            }
        }
        prop_assert_eq!(plan(&input).unwrap(), planned, "deterministic");
    }
}

// --- binding policy -------------------------------------------------------------------------

fn today() -> CivilDate {
    CivilDate::parse("2026-11-22").unwrap()
}

fn employee(code: u32, serial: u64) -> Account {
    let mut account = Account::open(
        PersonId::synthetic(code, serial),
        "X".into(),
        province(code),
        Scheme::Employee,
        0,
    );
    account.credit(yuan(100)).unwrap();
    account
}

/// An adult (born 1950s by `synthetic`'s layout for small serials is not guaranteed), so use
/// a fixed adult ID.
fn adult(code: u32, sequence: u32) -> PersonId {
    PersonId::from_body(&format!("{code:06}19800101{sequence:03}")).unwrap()
}

fn child(code: u32) -> PersonId {
    PersonId::from_body(&format!("{code:06}20200101001")).unwrap()
}

fn request(grantor: PersonId, grantee: PersonId) -> BindRequest {
    BindRequest {
        grantor,
        grantee,
        grantee_province: province(500000),
        relation: Relation::Parent,
        kind: BindingKind::MutualAid,
        limits: Limits::default(),
        evidence: Evidence {
            document: DocumentKind::HouseholdRegister,
            reference: "HR-1".into(),
            face_verified: true,
            commitment_signed: true,
        },
    }
}

fn binding_from(request: &BindRequest, serial: u64) -> Binding {
    Binding {
        id: BindingId::new(province(110000), serial),
        grantor: request.grantor,
        grantor_province: province(110000),
        grantee: request.grantee,
        grantee_province: request.grantee_province,
        relation: request.relation,
        kind: request.kind,
        position: 0,
        limits: request.limits,
        evidence: request.evidence.clone(),
        created_wall_ms: today().start_wall_ms(),
        status: BindingStatus::Active,
        usage_month: Default::default(),
        usage_in_month: Money::ZERO,
    }
}

#[test]
fn every_bind_refusal_is_its_own_value() {
    let policy = Policy::default();
    let mut grantor = employee(110000, 1);
    grantor.person = adult(110000, 1);
    let grantee = adult(500000, 2);
    let ok = request(grantor.person, grantee);
    assert_eq!(
        check_bind_at_grantor(&policy, &ok, Some(&grantor), &[], today()),
        Ok(())
    );

    let refusal = |req: &BindRequest, account: Option<&Account>, existing: &[Binding]| {
        check_bind_at_grantor(&policy, req, account, existing, today()).unwrap_err()
    };
    assert_eq!(
        refusal(&request(grantor.person, grantor.person), Some(&grantor), &[]),
        BindRefusal::SelfBinding
    );
    assert!(matches!(refusal(&ok, None, &[]), BindRefusal::GrantorUnknown(_)));
    let mut resident = grantor.clone();
    resident.scheme = Scheme::Resident;
    assert!(matches!(
        refusal(&ok, Some(&resident), &[]),
        BindRefusal::GrantorNotEmployee(_)
    ));
    let mut closed = grantor.clone();
    closed.closed = true;
    assert!(matches!(
        refusal(&ok, Some(&closed), &[]),
        BindRefusal::GrantorClosed(_)
    ));
    let strict = Policy {
        allowed_relations: vec![Relation::Spouse],
        ..Policy::default()
    };
    assert_eq!(
        check_bind_at_grantor(&strict, &ok, Some(&grantor), &[], today()),
        Err(BindRefusal::RelationNotAllowed(Relation::Parent))
    );
    let mut no_face = ok.clone();
    no_face.evidence.face_verified = false;
    assert!(matches!(
        refusal(&no_face, Some(&grantor), &[]),
        BindRefusal::FaceVerificationRequired(_)
    ));
    let mut young = request(grantor.person, child(500000));
    young.evidence.face_verified = false;
    young.relation = Relation::Grandchild;
    assert_eq!(
        check_bind_at_grantor(&policy, &young, Some(&grantor), &[], today()),
        Ok(()),
        "under-16 binds without face"
    );
    young.evidence.document = DocumentKind::MarriageCertificate;
    assert!(matches!(
        refusal(&young, Some(&grantor), &[]),
        BindRefusal::Under16Document(_)
    ));
    let mut unsigned = ok.clone();
    unsigned.evidence.commitment_signed = false;
    assert_eq!(
        refusal(&unsigned, Some(&grantor), &[]),
        BindRefusal::CommitmentNotSigned
    );
    let mut no_reference = ok.clone();
    no_reference.evidence.reference = " ".into();
    assert_eq!(
        refusal(&no_reference, Some(&grantor), &[]),
        BindRefusal::EvidenceReference
    );
    let mut spouse = ok.clone();
    spouse.relation = Relation::Spouse;
    spouse.evidence.document = DocumentKind::BirthCertificate;
    assert!(matches!(
        refusal(&spouse, Some(&grantor), &[]),
        BindRefusal::SpouseDocument(_)
    ));
    let mut zero = ok.clone();
    zero.limits.monthly = Some(Money::ZERO);
    assert_eq!(refusal(&zero, Some(&grantor), &[]), BindRefusal::ZeroLimit);
    let existing = binding_from(&ok, 1);
    assert!(matches!(
        refusal(&ok, Some(&grantor), std::slice::from_ref(&existing)),
        BindRefusal::Duplicate(_)
    ));
    let seven: Vec<Binding> = (0..7)
        .map(|i| binding_from(&request(grantor.person, adult(500000, 10 + i)), u64::from(i) + 1))
        .collect();
    assert_eq!(
        refusal(&ok, Some(&grantor), &seven),
        BindRefusal::TooManyRelatives { count: 7, max: 7 }
    );
}

#[test]
fn grantee_side_and_unbind_refusals() {
    let policy = Policy {
        grantee_grantors_max: 2,
        unbind_min_days: 90,
        ..Policy::default()
    };
    let req = request(adult(110000, 1), adult(500000, 2));
    let binding = binding_from(&req, 9);
    let mut grantee = employee(500000, 2);
    grantee.person = req.grantee;
    assert_eq!(check_bind_at_grantee(&policy, &binding, Some(&grantee), &[]), Ok(()));
    assert!(matches!(
        check_bind_at_grantee(&policy, &binding, None, &[]),
        Err(BindRefusal::GranteeNotEnrolled(_))
    ));
    let others: Vec<Binding> = (1..=2)
        .map(|i| binding_from(&request(adult(110000, 20 + i), req.grantee), u64::from(i)))
        .collect();
    assert_eq!(
        check_bind_at_grantee(&policy, &binding, Some(&grantee), &others),
        Err(BindRefusal::TooManyGrantors { count: 2, max: 2 })
    );
    let mut closed = grantee.clone();
    closed.closed = true;
    assert!(matches!(
        check_bind_at_grantee(&policy, &binding, Some(&closed), &[]),
        Err(BindRefusal::GranteeClosed(_))
    ));
    assert!(matches!(
        check_unbind(&policy, &binding, today()),
        Err(BindRefusal::UnbindTooSoon {
            days: 0,
            min_days: 90,
            ..
        })
    ));
    let later = CivilDate::parse("2027-03-01").unwrap();
    assert_eq!(check_unbind(&policy, &binding, later), Ok(()));
    let mut revoked = binding.clone();
    revoked.status = BindingStatus::Revoked { at_wall_ms: 0 };
    assert!(matches!(
        check_unbind(&policy, &revoked, later),
        Err(BindRefusal::AlreadyRevoked(_))
    ));
}
