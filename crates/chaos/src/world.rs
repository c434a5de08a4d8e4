//! The people of a chaos run: in every province, patients whose grantors live in the two other
//! provinces (and, for every other family, one in their own), with per-settlement limits so
//! that most bills need more than one grantor; and one extra relative per family, in another
//! province, whom the load binds and unbinds while settlements run.

use std::collections::BTreeMap;
use std::time::Duration;

use exchange_core::binding::{BindRequest, DocumentKind, Evidence};
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::{BindingId, BindingKind, Limits, Money, PersonId, Province, Relation, Scheme};
use exchange_node::client::BureauConn;

use crate::ChaosError;
use crate::model::Model;

/// Opening balance of a patient's own account, fen (small: bills soon reach the grantors).
pub const PATIENT_OPENING_FEN: u64 = 30_000;
/// Opening balance of a grantor's account, fen (large: a long run does not drain it).
pub const GRANTOR_OPENING_FEN: u64 = 100_000_000;
/// Per-settlement limits of the grantors, fen: first other province, second, own province.
pub const LIMITS_FEN: [u64; 3] = [30_000, 50_000, 20_000];
/// One setup request may take this long.
const SETUP_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// One family: a patient insured in `province` and the relatives who pay for them.
#[derive(Clone, Debug)]
pub struct Family {
    pub patient: PersonId,
    pub province: Province,
    /// Bound at setup: (grantor, their province).
    pub grantors: Vec<(PersonId, Province)>,
    /// Bound and unbound by the load.
    pub extra: (PersonId, Province),
}

/// Everybody of the run.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub families: Vec<Family>,
}

impl World {
    /// Every grantor bound at setup (the freeze/unfreeze targets).
    pub fn grantors(&self) -> Vec<(PersonId, Province)> {
        self.families.iter().flat_map(|f| f.grantors.iter().copied()).collect()
    }
}

/// A person of `province`: an adult born 1970-01-01 with sequence `n`.
pub fn person(province: Province, n: u32) -> Result<PersonId, ChaosError> {
    PersonId::from_body(&format!("{:06}19700101{n:03}", province.code()))
        .map_err(|error| ChaosError::Setup(format!("person {n} of {province}: {error}")))
}

/// One setup request, retried on transport errors (the cluster is healthy during setup, but
/// the first calls may meet connections still coming up).
pub async fn setup_call(conn: &mut BureauConn, request: ClientRequest) -> Result<ClientReply, ChaosError> {
    let mut last = String::new();
    for _ in 0..10 {
        match tokio::time::timeout(SETUP_CALL_TIMEOUT, conn.call(request.clone())).await {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(status)) => last = status.to_string(),
            Err(_) => last = "no answer in time".into(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(ChaosError::Setup(format!("{request:?}: {last}")))
}

pub fn bind_request(
    grantor: PersonId,
    grantee: PersonId,
    grantee_province: Province,
    limit_fen: Option<u64>,
) -> BindRequest {
    BindRequest {
        grantor,
        grantee,
        grantee_province,
        relation: Relation::Parent,
        kind: BindingKind::MutualAid,
        limits: Limits {
            per_settlement: limit_fen.and_then(|fen| Money::from_fen(fen).ok()),
            monthly: None,
        },
        evidence: Evidence {
            document: DocumentKind::HouseholdRegister,
            reference: "CHAOS-HR".into(),
            face_verified: true,
            commitment_signed: true,
        },
    }
}

async fn open(
    conn: &mut BureauConn,
    model: &mut Model,
    who: PersonId,
    province: Province,
    fen: u64,
) -> Result<(), ChaosError> {
    let balance = Money::from_fen(fen).map_err(|error| ChaosError::Setup(error.to_string()))?;
    let reply = setup_call(
        conn,
        ClientRequest::OpenAccount {
            person: who,
            name: "Chaos".into(),
            scheme: Scheme::Employee,
            balance,
        },
    )
    .await?;
    match reply {
        ClientReply::Account(_) => {
            model.open(who, province, balance);
            Ok(())
        }
        other => Err(ChaosError::Setup(format!("open {who}: {other:?}"))),
    }
}

/// Opens every account and binds every family's grantors (one request at a time: bindings
/// created at once on one node could share an id).
pub async fn populate(
    conns: &mut BTreeMap<Province, BureauConn>,
    provinces: &[Province],
    families_per_province: u32,
    model: &mut Model,
) -> Result<World, ChaosError> {
    let mut world = World::default();
    let mut next: BTreeMap<Province, u32> = provinces.iter().map(|p| (*p, 1)).collect();
    let mut fresh = |province: Province| -> Result<PersonId, ChaosError> {
        let n = next.entry(province).or_insert(1);
        let who = person(province, *n)?;
        *n += 1;
        Ok(who)
    };
    let conn_of = |conns: &mut BTreeMap<Province, BureauConn>, p: Province| -> Result<BureauConn, ChaosError> {
        conns
            .get(&p)
            .cloned()
            .ok_or_else(|| ChaosError::Setup(format!("no connection to {p}")))
    };
    for (i, province) in provinces.iter().enumerate() {
        let others: Vec<Province> = (1..provinces.len())
            .map(|k| provinces[(i + k) % provinces.len()])
            .collect();
        for f in 0..families_per_province {
            let patient = fresh(*province)?;
            open(
                &mut conn_of(conns, *province)?,
                model,
                patient,
                *province,
                PATIENT_OPENING_FEN,
            )
            .await?;
            let mut grantors = Vec::new();
            for (k, other) in others.iter().take(2).enumerate() {
                grantors.push((fresh(*other)?, *other, LIMITS_FEN[k]));
            }
            if f % 2 == 0 {
                grantors.push((fresh(*province)?, *province, LIMITS_FEN[2]));
            }
            let extra_province = others[usize::try_from(f).unwrap_or(0) % others.len()];
            let extra = fresh(extra_province)?;
            for (who, at, _) in &grantors {
                open(&mut conn_of(conns, *at)?, model, *who, *at, GRANTOR_OPENING_FEN).await?;
            }
            open(
                &mut conn_of(conns, extra_province)?,
                model,
                extra,
                extra_province,
                GRANTOR_OPENING_FEN,
            )
            .await?;
            for (who, at, limit) in &grantors {
                let reply = setup_call(
                    &mut conn_of(conns, *at)?,
                    ClientRequest::Bind(bind_request(*who, patient, *province, Some(*limit))),
                )
                .await?;
                if !matches!(reply, ClientReply::Bound { .. }) {
                    return Err(ChaosError::Setup(format!("bind {who} → {patient}: {reply:?}")));
                }
            }
            world.families.push(Family {
                patient,
                province: *province,
                grantors: grantors.iter().map(|(who, at, _)| (*who, *at)).collect(),
                extra: (extra, extra_province),
            });
        }
    }
    Ok(world)
}

/// The binding of `grantor` to `grantee` that is active or pending on the grantor's node, if
/// any (after a bind whose answer was lost).
pub async fn live_binding(conn: &mut BureauConn, grantor: PersonId, grantee: PersonId) -> Option<BindingId> {
    let (as_grantor, _) = tokio::time::timeout(Duration::from_secs(5), conn.bindings(&grantor))
        .await
        .ok()?
        .ok()?;
    as_grantor
        .iter()
        .find(|b| {
            b.grantee == grantee
                && matches!(
                    b.status,
                    exchange_core::BindingStatus::Active | exchange_core::BindingStatus::Pending
                )
        })
        .map(|b| b.id)
}
