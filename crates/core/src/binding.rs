//! Bindings (授权/绑定) between a grantor and a close relative, and their policy checks.

use serde::{Deserialize, Serialize};

use crate::account::{Account, Scheme};
use crate::ids::BindingId;
use crate::money::Money;
use crate::person::PersonId;
use crate::policy::Policy;
use crate::region::Province;
use crate::time::{CivilDate, YearMonth};

/// Longest evidence reference (certificate number) stored, in bytes.
pub const EVIDENCE_REFERENCE_LEN_MAX: usize = 64;
/// Age from which face verification is required.
pub const FACE_VERIFICATION_AGE_MIN_YEARS: i64 = 16;

/// What the grantee is to the grantor. `Parent` means the grantee is the grantor's parent
/// (a son pays for his mother); `Child` means the grantee is the grantor's child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Spouse,
    Parent,
    Child,
    Sibling,
    Grandparent,
    Grandchild,
}

impl Relation {
    pub const ALL: [Relation; 6] = [
        Relation::Spouse,
        Relation::Parent,
        Relation::Child,
        Relation::Sibling,
        Relation::Grandparent,
        Relation::Grandchild,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Relation::Spouse => "spouse",
            Relation::Parent => "parent",
            Relation::Child => "child",
            Relation::Sibling => "sibling",
            Relation::Grandparent => "grandparent",
            Relation::Grandchild => "grandchild",
        }
    }
}

impl std::str::FromStr for Relation {
    type Err = String;
    fn from_str(text: &str) -> Result<Relation, String> {
        Relation::ALL.into_iter().find(|r| r.code() == text).ok_or_else(|| {
            format!("relation {text:?} is not one of spouse, parent, child, sibling, grandparent, grandchild")
        })
    }
}

/// The two kinds of binding, not to be confused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// 共济: the grantee's bills may be paid from the grantor's balance.
    MutualAid,
    /// 亲情账户: the grantor may act for the relative; no money moves.
    Proxy,
}

impl std::str::FromStr for BindingKind {
    type Err = String;
    fn from_str(text: &str) -> Result<BindingKind, String> {
        match text {
            "mutual-aid" | "mutual_aid" => Ok(BindingKind::MutualAid),
            "proxy" => Ok(BindingKind::Proxy),
            other => Err(format!(
                "binding kind {other:?} is neither \"mutual-aid\" nor \"proxy\""
            )),
        }
    }
}

/// The document that proves the relationship.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    HouseholdRegister,
    MarriageCertificate,
    BirthCertificate,
}

impl std::str::FromStr for DocumentKind {
    type Err = String;
    fn from_str(text: &str) -> Result<DocumentKind, String> {
        match text {
            "household-register" | "household_register" => Ok(DocumentKind::HouseholdRegister),
            "marriage-certificate" | "marriage_certificate" => Ok(DocumentKind::MarriageCertificate),
            "birth-certificate" | "birth_certificate" => Ok(DocumentKind::BirthCertificate),
            other => Err(format!(
                "document {other:?} is not household-register, marriage-certificate or birth-certificate"
            )),
        }
    }
}

/// Evidence recorded with a binding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Evidence {
    pub document: DocumentKind,
    /// The certificate's number or the bureau's file reference.
    pub reference: String,
    /// Persons of 16 and over pass face verification.
    pub face_verified: bool,
    /// The grantor signed the commitment (承诺书).
    pub commitment_signed: bool,
}

/// Optional spending limits the grantor sets on a binding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Limits {
    pub per_settlement: Option<Money>,
    pub monthly: Option<Money>,
}

/// Where a binding is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BindingStatus {
    /// Recorded on the grantor's node, not yet registered on the grantee's: never usable.
    Pending,
    Active,
    /// The grantee's node refused to register it.
    Refused,
    Revoked {
        at_wall_ms: i64,
    },
}

/// A binding. The grantor's node is its authority; the grantee's node keeps a copy so that the
/// coordinator knows whom to ask.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Binding {
    pub id: BindingId,
    pub grantor: PersonId,
    pub grantor_province: Province,
    pub grantee: PersonId,
    pub grantee_province: Province,
    pub relation: Relation,
    pub kind: BindingKind,
    /// Position in the grantee's family-set deduction order (lower pays first).
    pub position: u32,
    pub limits: Limits,
    pub evidence: Evidence,
    pub created_wall_ms: i64,
    pub status: BindingStatus,
    /// Spending counted against the monthly limit: committed debits plus live holds, for
    /// `usage_month` only (a new month starts from zero).
    pub usage_month: YearMonth,
    pub usage_in_month: Money,
}

impl Binding {
    pub fn is_active(&self) -> bool {
        self.status == BindingStatus::Active
    }

    /// Why this binding may not move money now (a settlement leg or a wallet transfer), if it
    /// may not: only an active mutual-aid binding pays.
    pub fn money_refusal(&self) -> Option<crate::reason::Refusal> {
        use crate::reason::Refusal;
        match self.status {
            BindingStatus::Active => {}
            BindingStatus::Pending => return Some(Refusal::BindingPending),
            BindingStatus::Refused => return Some(Refusal::UnknownBinding),
            BindingStatus::Revoked { .. } => return Some(Refusal::BindingRevoked),
        }
        (self.kind != BindingKind::MutualAid).then_some(Refusal::NotMutualAid)
    }

    /// What the monthly limit still allows in `month` (None = no monthly limit).
    pub fn monthly_remaining(&self, month: YearMonth) -> Option<Money> {
        let used = if self.usage_month == month {
            self.usage_in_month
        } else {
            Money::ZERO
        };
        self.limits.monthly.map(|limit| limit.saturating_sub(used))
    }
}

/// Why a bind or unbind request was refused. Each rule of the policy has its own value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindRefusal {
    #[error("grantor and grantee are the same person")]
    SelfBinding,
    #[error("grantor {0} is not enrolled on this node")]
    GrantorUnknown(PersonId),
    #[error("grantor {0} is resident-insured; only employee-insured persons with a personal account may grant")]
    GrantorNotEmployee(PersonId),
    #[error("grantor {0}'s account is closed")]
    GrantorClosed(PersonId),
    #[error("grantee {0} is not enrolled in basic medical insurance on their province's node")]
    GranteeNotEnrolled(PersonId),
    #[error("grantee {0}'s enrolment is closed")]
    GranteeClosed(PersonId),
    #[error("relation {0:?} is not allowed by this province's policy")]
    RelationNotAllowed(Relation),
    #[error("grantor already binds {count} relatives; the policy allows at most {max}")]
    TooManyRelatives { count: u32, max: u32 },
    #[error("grantee already has {count} grantors; the policy allows at most {max}")]
    TooManyGrantors { count: u32, max: u32 },
    #[error("an active or pending binding {0} of the same kind already joins these two persons")]
    Duplicate(BindingId),
    #[error("evidence reference is empty or longer than {EVIDENCE_REFERENCE_LEN_MAX} bytes")]
    EvidenceReference,
    #[error("the grantor has not signed the commitment")]
    CommitmentNotSigned,
    #[error("{0} is 16 or over and must pass face verification")]
    FaceVerificationRequired(PersonId),
    #[error("an under-16 grantee binds with a household register or birth certificate, not a {0:?}")]
    Under16Document(DocumentKind),
    #[error("a spouse binding needs a marriage certificate or household register, not a {0:?}")]
    SpouseDocument(DocumentKind),
    #[error("a limit of zero would make the binding useless; leave it unset for no limit")]
    ZeroLimit,
    #[error("binding {0} is unknown on this node")]
    UnknownBinding(BindingId),
    #[error("binding {0} is already revoked")]
    AlreadyRevoked(BindingId),
    #[error("binding {id} was created {days} days ago; this province allows unbinding after {min_days} days")]
    UnbindTooSoon { id: BindingId, days: i64, min_days: u32 },
}

impl BindRefusal {
    /// A stable code for the wire and for JSON output.
    pub fn code(&self) -> &'static str {
        match self {
            BindRefusal::SelfBinding => "self_binding",
            BindRefusal::GrantorUnknown(_) => "grantor_unknown",
            BindRefusal::GrantorNotEmployee(_) => "grantor_not_employee",
            BindRefusal::GrantorClosed(_) => "grantor_closed",
            BindRefusal::GranteeNotEnrolled(_) => "grantee_not_enrolled",
            BindRefusal::GranteeClosed(_) => "grantee_closed",
            BindRefusal::RelationNotAllowed(_) => "relation_not_allowed",
            BindRefusal::TooManyRelatives { .. } => "too_many_relatives",
            BindRefusal::TooManyGrantors { .. } => "too_many_grantors",
            BindRefusal::Duplicate(_) => "duplicate_binding",
            BindRefusal::EvidenceReference => "evidence_reference",
            BindRefusal::CommitmentNotSigned => "commitment_not_signed",
            BindRefusal::FaceVerificationRequired(_) => "face_verification_required",
            BindRefusal::Under16Document(_) => "under16_document",
            BindRefusal::SpouseDocument(_) => "spouse_document",
            BindRefusal::ZeroLimit => "zero_limit",
            BindRefusal::UnknownBinding(_) => "unknown_binding",
            BindRefusal::AlreadyRevoked(_) => "already_revoked",
            BindRefusal::UnbindTooSoon { .. } => "unbind_too_soon",
        }
    }
}

/// A request to bind, as the grantor's bureau enters it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BindRequest {
    pub grantor: PersonId,
    pub grantee: PersonId,
    pub grantee_province: Province,
    pub relation: Relation,
    pub kind: BindingKind,
    pub limits: Limits,
    pub evidence: Evidence,
}

/// Age in whole years on `today`, from the birth date inside the resident ID.
pub fn age_years(person: &PersonId, today: CivilDate) -> i64 {
    let digits = person.as_bytes();
    let number = |range: std::ops::Range<usize>| -> i64 {
        digits
            .get(range)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .and_then(|text| text.parse().ok())
            .unwrap_or(0)
    };
    let (year, month, day) = (number(6..10), number(10..12), number(12..14));
    let mut age = i64::from(today.year).saturating_sub(year);
    if (i64::from(today.month), i64::from(today.day)) < (month, day) {
        age = age.saturating_sub(1);
    }
    age
}

/// The grantor-side checks of a new binding, on the grantor's node, under its policy.
///
/// `grantor_bindings` are the grantor's existing bindings (any status).
pub fn check_bind_at_grantor(
    policy: &Policy,
    request: &BindRequest,
    grantor: Option<&Account>,
    grantor_bindings: &[Binding],
    today: CivilDate,
) -> Result<(), BindRefusal> {
    if request.grantor == request.grantee {
        return Err(BindRefusal::SelfBinding);
    }
    let grantor = grantor.ok_or(BindRefusal::GrantorUnknown(request.grantor))?;
    if grantor.closed {
        return Err(BindRefusal::GrantorClosed(request.grantor));
    }
    if grantor.scheme != Scheme::Employee {
        return Err(BindRefusal::GrantorNotEmployee(request.grantor));
    }
    if !policy.allowed_relations.contains(&request.relation) {
        return Err(BindRefusal::RelationNotAllowed(request.relation));
    }
    if matches!(request.limits.per_settlement, Some(limit) if limit.is_zero())
        || matches!(request.limits.monthly, Some(limit) if limit.is_zero())
    {
        return Err(BindRefusal::ZeroLimit);
    }
    check_evidence(request, today)?;
    let live = |b: &&Binding| matches!(b.status, BindingStatus::Active | BindingStatus::Pending);
    if let Some(existing) = grantor_bindings
        .iter()
        .filter(live)
        .find(|b| b.grantee == request.grantee && b.kind == request.kind)
    {
        return Err(BindRefusal::Duplicate(existing.id));
    }
    let count = grantor_bindings
        .iter()
        .filter(live)
        .filter(|b| b.kind == BindingKind::MutualAid)
        .count();
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    if request.kind == BindingKind::MutualAid && count >= policy.grantor_relatives_max {
        return Err(BindRefusal::TooManyRelatives {
            count,
            max: policy.grantor_relatives_max,
        });
    }
    Ok(())
}

fn check_evidence(request: &BindRequest, today: CivilDate) -> Result<(), BindRefusal> {
    let evidence = &request.evidence;
    if evidence.reference.trim().is_empty() || evidence.reference.len() > EVIDENCE_REFERENCE_LEN_MAX {
        return Err(BindRefusal::EvidenceReference);
    }
    if !evidence.commitment_signed {
        return Err(BindRefusal::CommitmentNotSigned);
    }
    if request.relation == Relation::Spouse && evidence.document == DocumentKind::BirthCertificate {
        return Err(BindRefusal::SpouseDocument(evidence.document));
    }
    if age_years(&request.grantee, today) >= FACE_VERIFICATION_AGE_MIN_YEARS {
        if !evidence.face_verified {
            return Err(BindRefusal::FaceVerificationRequired(request.grantee));
        }
    } else if evidence.document == DocumentKind::MarriageCertificate {
        return Err(BindRefusal::Under16Document(evidence.document));
    }
    Ok(())
}

/// The grantee-side checks, on the grantee's node, under the grantee's province's policy.
/// `grantee_bindings` are the copies that node already holds for the grantee.
pub fn check_bind_at_grantee(
    policy: &Policy,
    binding: &Binding,
    grantee: Option<&Account>,
    grantee_bindings: &[Binding],
) -> Result<(), BindRefusal> {
    let grantee = grantee.ok_or(BindRefusal::GranteeNotEnrolled(binding.grantee))?;
    if grantee.closed {
        return Err(BindRefusal::GranteeClosed(binding.grantee));
    }
    if binding.kind != BindingKind::MutualAid {
        return Ok(());
    }
    let count = grantee_bindings
        .iter()
        .filter(|b| b.id != binding.id && b.kind == BindingKind::MutualAid)
        .filter(|b| matches!(b.status, BindingStatus::Active | BindingStatus::Pending))
        .count();
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    if count >= policy.grantee_grantors_max {
        return Err(BindRefusal::TooManyGrantors {
            count,
            max: policy.grantee_grantors_max,
        });
    }
    Ok(())
}

/// Whether the grantor may unbind now under the policy's minimum days.
pub fn check_unbind(policy: &Policy, binding: &Binding, today: CivilDate) -> Result<(), BindRefusal> {
    if matches!(binding.status, BindingStatus::Revoked { .. }) {
        return Err(BindRefusal::AlreadyRevoked(binding.id));
    }
    let created = CivilDate::of_wall_ms(binding.created_wall_ms);
    let days = today.days_since(created);
    if days < i64::from(policy.unbind_min_days) {
        return Err(BindRefusal::UnbindTooSoon {
            id: binding.id,
            days,
            min_days: policy.unbind_min_days,
        });
    }
    Ok(())
}
