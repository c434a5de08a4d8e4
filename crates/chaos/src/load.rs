//! The steady, bounded load: per province a few hospital clients (settlements, partial refunds
//! of their own acknowledged settlements, credits), and one bureau client binding and
//! unbinding the families' extra relatives and freezing and unfreezing grantors. A client
//! that gets no answer asks again with the same id until it is answered or the run ends; what
//! is still unanswered then stays `Pending` in the model and is asked again after healing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::records::{RefundRequest, SettleRequest};
use exchange_core::{BindingId, CreditId, ErrorKind, Money, PersonId, Province, RefundId, Region, SettlementId};
use exchange_node::client::BureauConn;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{CreditModel, Model, Outcome, RefundModel, SettlementModel};
use crate::world::{Family, World, bind_request, live_binding};

/// One attempt of a request may take this long before the client asks again.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between a client's requests (uniform), milliseconds.
pub const PACE_MS: (u64, u64) = (10, 100);
/// Pause between the bureau client's requests, milliseconds.
pub const ADMIN_PACE_MS: (u64, u64) = (150, 700);
/// Largest self-pay part of a bill, fen.
pub const SELF_PAY_MAX_FEN: u64 = 150_000;
/// A credit (划入) to a patient, fen.
pub const CREDIT_FEN: u64 = 10_000;

/// Counters of the load, shared by its tasks.
#[derive(Debug, Default)]
pub struct LoadStats {
    pub settle: AtomicU64,
    pub refund: AtomicU64,
    pub credit: AtomicU64,
    pub bind: AtomicU64,
    pub unbind: AtomicU64,
    pub freeze: AtomicU64,
    pub unfreeze: AtomicU64,
    /// Answered with a refusal (counted in the kinds above too).
    pub refused: AtomicU64,
    /// Attempts after the first of one request.
    pub retries: AtomicU64,
}

impl LoadStats {
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        [
            ("settle", &self.settle),
            ("refund", &self.refund),
            ("credit", &self.credit),
            ("bind", &self.bind),
            ("unbind", &self.unbind),
            ("freeze", &self.freeze),
            ("unfreeze", &self.unfreeze),
        ]
        .into_iter()
        .map(|(name, counter)| (name.to_string(), counter.load(Ordering::Relaxed)))
        .collect()
    }
}

/// What the load's tasks share.
#[derive(Debug)]
pub struct Shared {
    pub model: Mutex<Model>,
    pub stats: LoadStats,
    /// Problems seen by the load itself (an answer of the wrong kind).
    pub problems: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(model: Model) -> Shared {
        Shared {
            model: Mutex::new(model),
            stats: LoadStats::default(),
            problems: Mutex::new(Vec::new()),
        }
    }

    pub fn with_model<T>(&self, f: impl FnOnce(&mut Model) -> T) -> T {
        let mut model = self.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut model)
    }

    fn problem(&self, text: String) {
        self.problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(text);
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Sends `request` until the node answers or `deadline` passes (`None`). A refusal is an
/// answer, except "busy" (RESOURCE_EXHAUSTED), which is asked again.
pub async fn send(
    conn: &mut BureauConn,
    request: &ClientRequest,
    deadline: Instant,
    stats: &LoadStats,
) -> Option<ClientReply> {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        if !first {
            count(&stats.retries);
        }
        first = false;
        let wait = ATTEMPT_TIMEOUT.min(deadline - now);
        match tokio::time::timeout(wait, conn.call(request.clone())).await {
            Ok(Ok(ClientReply::Error(error))) if error.kind == ErrorKind::ResourceExhausted => {}
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(_)) | Err(_) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn pause(rng: &mut ChaCha8Rng, range: (u64, u64), deadline: Instant) {
    let wait = Duration::from_millis(rng.random_range(range.0..=range.1));
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(wait.min(left)).await;
}

fn money(fen: u64) -> Money {
    Money::from_fen(fen).unwrap_or(Money::ZERO)
}

/// A hospital's bill for a patient insured in `province`.
pub fn bill(id: SettlementId, patient: PersonId, province: Province, rng: &mut ChaCha8Rng) -> SettleRequest {
    let self_pay = rng.random_range(1..=SELF_PAY_MAX_FEN);
    let fund_paid = rng.random_range(0..=100_000u64);
    let region = Region::from_code(province.code()).ok();
    SettleRequest {
        settlement: id,
        patient,
        total_fee: money(self_pay + fund_paid + rng.random_range(0..=1_000u64)),
        fund_paid: money(fund_paid),
        self_pay: money(self_pay),
        institution: format!("H{:06}01", province.code()),
        treatment_region: region.unwrap_or_else(|| Region::from(province)),
        insured_region: region.unwrap_or_else(|| Region::from(province)),
    }
}

/// Records a settlement's answer in the model (and returns the self-pay still refundable).
pub fn settle_answered(shared: &Shared, id: &SettlementId, reply: ClientReply, after_heal: bool) -> Option<u64> {
    count(&shared.stats.settle);
    let (outcome, refundable) = match reply {
        ClientReply::Settled(receipt) => {
            let refundable = receipt.self_pay.fen();
            (Outcome::Done(receipt), Some(refundable))
        }
        ClientReply::Error(error) => {
            count(&shared.stats.refused);
            (Outcome::Refused(error), None)
        }
        other => {
            shared.problem(format!("settlement {id} answered with {other:?}"));
            return None;
        }
    };
    shared.with_model(|model| {
        if let Some(settlement) = model.settlements.get_mut(id) {
            settlement.outcome = outcome;
            settlement.answered_after_heal = after_heal;
        }
    });
    refundable
}

/// Records a refund's answer; returns the amount refunded.
pub fn refund_answered(shared: &Shared, id: &RefundId, reply: ClientReply, after_heal: bool) -> Option<u64> {
    count(&shared.stats.refund);
    let (outcome, amount) = match reply {
        ClientReply::Refunded(receipt) => {
            let amount = receipt.amount.fen();
            (Outcome::Done(receipt), Some(amount))
        }
        ClientReply::Error(error) => {
            count(&shared.stats.refused);
            (Outcome::Refused(error), None)
        }
        other => {
            shared.problem(format!("refund {id} answered with {other:?}"));
            return None;
        }
    };
    shared.with_model(|model| {
        if let Some(refund) = model.refunds.get_mut(id) {
            refund.outcome = outcome;
            refund.answered_after_heal = after_heal;
        }
    });
    amount
}

pub fn credit_answered(shared: &Shared, id: &CreditId, reply: ClientReply, after_heal: bool) {
    count(&shared.stats.credit);
    let outcome = match reply {
        ClientReply::Credited { .. } => Outcome::Done(()),
        ClientReply::Error(error) => {
            count(&shared.stats.refused);
            Outcome::Refused(error)
        }
        other => {
            shared.problem(format!("credit {id} answered with {other:?}"));
            return;
        }
    };
    shared.with_model(|model| {
        if let Some(credit) = model.credits.get_mut(id) {
            credit.outcome = outcome;
            credit.answered_after_heal = after_heal;
        }
    });
}

/// One hospital client of `province`: settlements, partial refunds of its own acknowledged
/// settlements, credits to its patients.
pub async fn hospital(
    shared: Arc<Shared>,
    mut conn: BureauConn,
    province: Province,
    index: usize,
    families: Vec<Family>,
    seed: u64,
    deadline: Instant,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut refundable: Vec<(SettlementId, u64)> = Vec::new();
    let code = province.code();
    let mut n = 0u64;
    while Instant::now() < deadline && !families.is_empty() {
        pause(&mut rng, PACE_MS, deadline).await;
        n += 1;
        let roll = rng.random_range(0..100u32);
        if roll < 20 && !refundable.is_empty() {
            let which = rng.random_range(0..refundable.len());
            let (settlement, left) = refundable[which].clone();
            let amount = rng.random_range(1..=left);
            let Ok(refund) = RefundId::new(format!("R-{code}-{index}-{n}")) else {
                continue;
            };
            let request = RefundRequest {
                refund: refund.clone(),
                settlement,
                amount: Some(money(amount)),
            };
            shared.with_model(|model| {
                model.refunds.insert(
                    refund.clone(),
                    RefundModel {
                        coordinator: province,
                        request: request.clone(),
                        outcome: Outcome::Pending,
                        answered_after_heal: false,
                    },
                )
            });
            let Some(reply) = send(&mut conn, &ClientRequest::Refund(request), deadline, &shared.stats).await else {
                continue;
            };
            if let Some(done) = refund_answered(&shared, &refund, reply, false) {
                let entry = &mut refundable[which];
                entry.1 = entry.1.saturating_sub(done);
                if entry.1 == 0 {
                    refundable.swap_remove(which);
                }
            }
        } else if roll < 27 {
            let Some(family) = families.choose(&mut rng) else {
                continue;
            };
            let Ok(credit) = CreditId::new(format!("C-{code}-{index}-{n}")) else {
                continue;
            };
            shared.with_model(|model| {
                model.credits.insert(
                    credit.clone(),
                    CreditModel {
                        person: family.patient,
                        amount: money(CREDIT_FEN),
                        outcome: Outcome::Pending,
                        answered_after_heal: false,
                    },
                )
            });
            let request = ClientRequest::Credit {
                credit: credit.clone(),
                person: family.patient,
                amount: money(CREDIT_FEN),
            };
            if let Some(reply) = send(&mut conn, &request, deadline, &shared.stats).await {
                credit_answered(&shared, &credit, reply, false);
            }
        } else {
            let Some(family) = families.choose(&mut rng) else {
                continue;
            };
            let Ok(id) = SettlementId::new(format!("S-{code}-{index}-{n}")) else {
                continue;
            };
            let request = bill(id.clone(), family.patient, province, &mut rng);
            shared.with_model(|model| {
                model.settlements.insert(
                    id.clone(),
                    SettlementModel {
                        coordinator: province,
                        request: request.clone(),
                        outcome: Outcome::Pending,
                        answered_after_heal: false,
                    },
                )
            });
            let Some(reply) = send(&mut conn, &ClientRequest::Settle(request), deadline, &shared.stats).await else {
                continue;
            };
            if let Some(left) = settle_answered(&shared, &id, reply, false) {
                if left > 0 {
                    refundable.push((id, left));
                }
            }
        }
    }
}

/// The bureau client: binds and unbinds the families' extra relatives, freezes and unfreezes
/// grantors. One request at a time (bindings created at once on one node could share an id).
pub async fn bureau(
    shared: Arc<Shared>,
    conns: BTreeMap<Province, BureauConn>,
    world: World,
    seed: u64,
    deadline: Instant,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut extra_bindings: Vec<Option<BindingId>> = vec![None; world.families.len()];
    let grantors = world.grantors();
    let mut frozen: Vec<(PersonId, Province)> = Vec::new();
    let conn = |province: Province| conns.get(&province).cloned();
    while Instant::now() < deadline && !world.families.is_empty() {
        pause(&mut rng, ADMIN_PACE_MS, deadline).await;
        if rng.random_bool(0.5) {
            let which = rng.random_range(0..world.families.len());
            let family = &world.families[which];
            let (extra, at) = family.extra;
            let Some(mut conn) = conn(at) else {
                continue;
            };
            match extra_bindings[which] {
                None => {
                    let request = ClientRequest::Bind(bind_request(extra, family.patient, family.province, None));
                    let Some(reply) = send(&mut conn, &request, deadline, &shared.stats).await else {
                        continue;
                    };
                    count(&shared.stats.bind);
                    match reply {
                        ClientReply::Bound { binding, .. } => extra_bindings[which] = Some(binding),
                        ClientReply::Error(error) if error.reason == "duplicate_binding" => {
                            // The first attempt was applied; its answer was lost.
                            extra_bindings[which] = live_binding(&mut conn, extra, family.patient).await;
                        }
                        ClientReply::Error(_) => count(&shared.stats.refused),
                        other => shared.problem(format!("bind answered with {other:?}")),
                    }
                }
                Some(binding) => {
                    let request = ClientRequest::Unbind { binding };
                    let Some(reply) = send(&mut conn, &request, deadline, &shared.stats).await else {
                        continue;
                    };
                    count(&shared.stats.unbind);
                    match reply {
                        ClientReply::Unbound { .. } => extra_bindings[which] = None,
                        ClientReply::Error(error) if error.reason == "already_revoked" => {
                            extra_bindings[which] = None;
                        }
                        ClientReply::Error(_) => count(&shared.stats.refused),
                        other => shared.problem(format!("unbind answered with {other:?}")),
                    }
                }
            }
        } else if !frozen.is_empty() && (frozen.len() >= 2 || rng.random_bool(0.5)) {
            let which = rng.random_range(0..frozen.len());
            let (who, at) = frozen[which];
            let Some(mut conn) = conn(at) else {
                continue;
            };
            let Some(reply) = send(
                &mut conn,
                &ClientRequest::Unfreeze { person: who },
                deadline,
                &shared.stats,
            )
            .await
            else {
                continue;
            };
            count(&shared.stats.unfreeze);
            match reply {
                ClientReply::Account(account) if !account.frozen => {
                    frozen.swap_remove(which);
                }
                ClientReply::Error(_) => count(&shared.stats.refused),
                other => shared.problem(format!("unfreeze of {who} answered with {other:?}")),
            }
        } else {
            let Some((who, at)) = grantors.choose(&mut rng).copied() else {
                continue;
            };
            if frozen.iter().any(|(f, _)| *f == who) {
                continue;
            }
            let Some(mut conn) = conn(at) else {
                continue;
            };
            let request = ClientRequest::Freeze {
                person: who,
                reason: "card lost (chaos)".into(),
            };
            let Some(reply) = send(&mut conn, &request, deadline, &shared.stats).await else {
                continue;
            };
            count(&shared.stats.freeze);
            match reply {
                ClientReply::Account(account) if account.frozen => frozen.push((who, at)),
                ClientReply::Error(_) => count(&shared.stats.refused),
                other => shared.problem(format!("freeze of {who} answered with {other:?}")),
            }
        }
    }
}
