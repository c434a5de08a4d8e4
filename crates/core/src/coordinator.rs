//! The coordinator: the patient's province decides how a settlement is paid.
//!
//! It asks the patient's own account and every usable grantor, in parallel, to hold *up to*
//! what is still to pay; each vote says what was actually held. It then assigns final amounts
//! with the same planner as everywhere (own account first, grantors in the policy's order),
//! writes COMMIT durably, answers the hospital, and only then tells the participants. A leg
//! assigned less than it held commits less (the rest is released); a leg assigned nothing is
//! aborted. If the votes leave a shortfall, it may ask again (a bounded number of rounds).
//!
//! Presumed abort: nothing is written before the decision, so a coordinator that restarts
//! before deciding has no record and answers ABORT to every question about those legs. Leg
//! ids carry the coordinator's incarnation, so a settlement retried after a restart never
//! reuses a leg id. COMMIT is never decided for a leg later than `commit_window_ms` after its
//! prepare was sent; participants measure their (longer) deadline from their own receipt.

use std::collections::BTreeMap;

use crate::binding::{BindingKind, BindingStatus};
use crate::config::ProtocolConfig;
use crate::effects::{Effects, Note, ReplyTo, TimerKind};
use crate::error::{ClientError, ErrorKind, HandlerError};
use crate::ids::{BindingId, LegId, LegScope, RefundId, SettlementId};
use crate::ledger::{LedgerView, Write};
use crate::message::{ClientReply, LegOutcome, PeerMessage, Prepare, Vote};
use crate::money::Money;
use crate::outbox::{AckKey, Deliveries, Pending};
use crate::participant::LEG_INDEX_MAX;
use crate::person::PersonId;
use crate::plan::{Candidate, OwnAccount, PlanInput, plan};
use crate::policy::{GRANTORS_PER_SETTLEMENT_MAX, GrantorOrder};
use crate::reason::Refusal;
use crate::records::{
    DecidedLeg, JournalEntry, JournalKind, MutualAidPart, OutboxKey, Receipt, RefundPart, RefundReceipt, RefundRecord,
    RefundRequest, SettleRequest, SettlementRecord,
};
use crate::region::Province;
use crate::time::Now;

/// Longest institution code accepted, in bytes.
pub const INSTITUTION_LEN_MAX: usize = 64;
/// Most delivered outbox items whose removal waits for the coordinator's next write set.
pub const DELIVERED_HELD_MAX: usize = 256;

type Outcome<V> = Result<Effects, HandlerError<<V as LedgerView>::Error>>;

fn storage<E: std::fmt::Debug>(error: E) -> HandlerError<E> {
    HandlerError::Storage(error)
}

/// Whose account a leg draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Target {
    Own,
    Grantor(usize),
}

/// A leg's state while the settlement is being decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum LegState {
    Waiting,
    Yes {
        held: Money,
        available_before: Money,
    },
    No(Refusal),
    /// Given up on (vote timeout, or the participant asked past its deadline): an abort was
    /// sent and the leg can never commit.
    Excluded(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct InflightLeg {
    leg: LegId,
    target: Target,
    province: Province,
    account: PersonId,
    binding: Option<BindingId>,
    requested: Money,
    sent_mono_ms: u64,
    round: u8,
    state: LegState,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GrantorTarget {
    binding: BindingId,
    grantor: PersonId,
    province: Province,
    position: u32,
    created_wall_ms: i64,
    /// Known before asking, from the grantee-side copy (revoked, pending).
    refusal: Option<Refusal>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Inflight {
    request: SettleRequest,
    waiters: Vec<ReplyTo>,
    round: u8,
    next_index: u16,
    /// The own account's refusal, when it may not pay at all.
    own_refusal: Option<Refusal>,
    has_own_account: bool,
    grantors: Vec<GrantorTarget>,
    legs: Vec<InflightLeg>,
}

/// The coordinator of one node (or of one shard of its settlement ids).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Coordinator {
    province: Province,
    incarnation: u32,
    config: ProtocolConfig,
    order: GrantorOrder,
    inflight: BTreeMap<SettlementId, Inflight>,
    deliveries: Deliveries,
    /// Fully acknowledged outbox items not yet removed from the store (see `on_ack`).
    delivered: Vec<OutboxKey>,
}

fn leg_reply(leg: &DecidedLeg) -> PeerMessage {
    if leg.amount.is_zero() {
        PeerMessage::Abort { leg: leg.leg.clone() }
    } else {
        PeerMessage::Commit {
            leg: leg.leg.clone(),
            amount: leg.amount,
        }
    }
}

impl Coordinator {
    /// `incarnation` must grow at every start of the node (the driver persists it first).
    pub fn new(province: Province, incarnation: u32, config: ProtocolConfig, order: GrantorOrder) -> Coordinator {
        Coordinator {
            province,
            incarnation,
            config,
            order,
            inflight: BTreeMap::new(),
            deliveries: Deliveries::default(),
            delivered: Vec::new(),
        }
    }

    /// Adds the removal of every delivered outbox item held back to `effects`, whose writes
    /// the caller applies as one set. `NodeCore::handle` calls it for every handler that
    /// writes anything.
    pub fn write_delivered(&mut self, effects: &mut Effects) {
        for key in self.delivered.drain(..) {
            effects.writes.push(Write::Outbox { key, live: false });
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    pub fn deliveries_pending(&self) -> usize {
        self.deliveries.len()
    }

    fn validate(&self, request: &SettleRequest) -> Result<(), ClientError> {
        if request.insured_region.province() != self.province {
            return Err(ClientError::new(
                ErrorKind::PermissionDenied,
                "wrong_province",
                format!(
                    "insured region {} is not in this node's province {}; send the settlement to the patient's insured province",
                    request.insured_region, self.province
                ),
            ));
        }
        let parts = request
            .fund_paid
            .checked_add(request.self_pay)
            .map_err(|_| ClientError::invalid("amount_overflow", "fund-paid plus self-pay overflows"))?;
        if parts > request.total_fee {
            return Err(ClientError::invalid(
                "parts_exceed_total",
                format!(
                    "fund-paid {} plus self-pay {} exceeds the total fee {}",
                    request.fund_paid, request.self_pay, request.total_fee
                ),
            ));
        }
        if request.institution.is_empty()
            || request.institution.len() > INSTITUTION_LEN_MAX
            || request.institution.chars().any(char::is_control)
        {
            return Err(ClientError::invalid(
                "bad_institution",
                format!("institution code must be 1 to {INSTITUTION_LEN_MAX} printable bytes"),
            ));
        }
        Ok(())
    }

    /// A hospital's settlement request arrives.
    pub fn on_settle<V: LedgerView>(
        &mut self,
        view: &V,
        reply_to: ReplyTo,
        request: SettleRequest,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let refuse = |effects: &mut Effects, error: ClientError| effects.reply(reply_to, ClientReply::Error(error));
        if let Err(error) = self.validate(&request) {
            refuse(&mut effects, error);
            return Ok(effects);
        }
        let id = request.settlement.clone();
        if let Some(record) = view.settlement(&id).map_err(storage)? {
            if record.request == request {
                effects.reply(reply_to, ClientReply::Settled(record.receipt));
            } else {
                refuse(&mut effects, reused(&id));
            }
            return Ok(effects);
        }
        if let Some(inflight) = self.inflight.get_mut(&id) {
            if inflight.request == request {
                inflight.waiters.push(reply_to);
            } else {
                refuse(&mut effects, reused(&id));
            }
            return Ok(effects);
        }
        if self.inflight.len() >= self.config.settlements_in_flight_max {
            refuse(
                &mut effects,
                ClientError::new(
                    ErrorKind::ResourceExhausted,
                    "busy",
                    "too many settlements in flight; retry shortly",
                ),
            );
            return Ok(effects);
        }
        let Some(patient) = view.account(&request.patient).map_err(storage)? else {
            refuse(
                &mut effects,
                ClientError::not_found(
                    "unknown_patient",
                    format!("patient {} is not enrolled on this node", request.patient),
                ),
            );
            return Ok(effects);
        };
        let mut grantors = Vec::new();
        for binding_id in view.bindings_of_grantee(&request.patient).map_err(storage)? {
            let Some(copy) = view.binding_copy(&binding_id).map_err(storage)? else {
                continue;
            };
            if copy.kind != BindingKind::MutualAid || copy.grantee != request.patient {
                continue;
            }
            let refusal = match copy.status {
                BindingStatus::Active => None,
                BindingStatus::Pending => Some(Refusal::BindingPending),
                BindingStatus::Revoked { .. } => Some(Refusal::BindingRevoked),
                BindingStatus::Refused => continue,
            };
            grantors.push(GrantorTarget {
                binding: copy.id,
                grantor: copy.grantor,
                province: copy.grantor_province,
                position: copy.position,
                created_wall_ms: copy.created_wall_ms,
                refusal,
            });
        }
        // An own account with nothing available is not asked: it would only refuse.
        let own_refusal = patient
            .payment_refusal()
            .or_else(|| patient.available().is_zero().then_some(Refusal::InsufficientBalance));
        let own_snapshot = if own_refusal.is_none() {
            patient.available()
        } else {
            Money::ZERO
        };
        let mut inflight = Inflight {
            request,
            waiters: vec![reply_to],
            round: 0,
            next_index: 0,
            own_refusal,
            has_own_account: patient.has_personal_account(),
            grantors,
            legs: Vec::new(),
        };
        if inflight.request.self_pay.is_zero() {
            self.decide(inflight, now, &mut effects)
                .map_err(HandlerError::Invariant)?;
            return Ok(effects);
        }
        // Round 1: the own account for the whole self-pay part; every usable grantor for what
        // the own account's last known balance leaves (possibly nothing).
        let self_pay = inflight.request.self_pay;
        let grantor_ask = self_pay.saturating_sub(own_snapshot);
        let mut asks = Vec::new();
        if own_refusal.is_none() {
            asks.push((Target::Own, self_pay));
        }
        if !grantor_ask.is_zero() {
            let usable = inflight
                .grantors
                .iter()
                .enumerate()
                .filter(|(_, g)| g.refusal.is_none());
            for (index, _) in usable.take(GRANTORS_PER_SETTLEMENT_MAX) {
                asks.push((Target::Grantor(index), grantor_ask));
            }
        }
        if asks.is_empty() {
            self.decide(inflight, now, &mut effects)
                .map_err(HandlerError::Invariant)?;
            return Ok(effects);
        }
        self.start_round(&mut inflight, asks, now, &mut effects);
        self.inflight.insert(id, inflight);
        Ok(effects)
    }

    fn start_round(&self, inflight: &mut Inflight, asks: Vec<(Target, Money)>, now: Now, effects: &mut Effects) {
        inflight.round = inflight.round.saturating_add(1);
        for (target, requested) in asks {
            let (province, account, binding) = match target {
                Target::Own => (self.province, inflight.request.patient, None),
                Target::Grantor(index) => match inflight.grantors.get(index) {
                    Some(g) => (g.province, g.grantor, Some(g.binding)),
                    None => continue,
                },
            };
            let leg = LegId {
                coordinator: self.province,
                scope: LegScope::Pay {
                    settlement: inflight.request.settlement.clone(),
                    attempt: self.incarnation,
                },
                index: inflight.next_index,
                account,
            };
            inflight.next_index = inflight.next_index.saturating_add(1);
            effects.send(
                province,
                PeerMessage::Prepare(Prepare {
                    leg: leg.clone(),
                    binding,
                    patient: inflight.request.patient,
                    amount_max: requested,
                    hold_timeout_ms: self.config.hold_timeout_ms,
                }),
            );
            inflight.legs.push(InflightLeg {
                leg,
                target,
                province,
                account,
                binding,
                requested,
                sent_mono_ms: now.mono_ms,
                round: inflight.round,
                state: LegState::Waiting,
            });
        }
        effects.timer(
            now.mono_after(self.config.vote_timeout_ms),
            TimerKind::VoteDeadline {
                settlement: inflight.request.settlement.clone(),
                round: inflight.round,
            },
        );
    }

    /// Whether a yes-voted leg may still be committed at `now`.
    fn within_commit_window(&self, leg: &InflightLeg, now: Now) -> bool {
        !self.config.safeguards.commit_deadline
            || now.mono_ms <= leg.sent_mono_ms.saturating_add(self.config.commit_window_ms())
    }

    /// The planner's input from the votes so far.
    fn plan_input(&self, inflight: &Inflight, now: Now) -> PlanInput {
        let self_pay = inflight.request.self_pay;
        let own = if !inflight.has_own_account && inflight.own_refusal.is_none() {
            None
        } else {
            let mut held = Money::ZERO;
            let mut refusal = inflight.own_refusal;
            for leg in inflight.legs.iter().filter(|l| l.target == Target::Own) {
                match leg.state {
                    LegState::Yes { held: h, .. } if self.within_commit_window(leg, now) => {
                        held = held.checked_add(h).unwrap_or(held);
                    }
                    LegState::Yes { .. } => refusal = refusal.or(Some(Refusal::Timeout)),
                    LegState::No(reason) | LegState::Excluded(reason) => refusal = refusal.or(Some(reason)),
                    LegState::Waiting => refusal = refusal.or(Some(Refusal::Timeout)),
                }
            }
            let refusal = if held.is_zero() { refusal } else { None };
            Some(OwnAccount {
                available: held,
                refusal,
            })
        };
        let candidates = inflight
            .grantors
            .iter()
            .enumerate()
            .map(|(index, g)| {
                let mut held = Money::ZERO;
                let mut balance = Money::ZERO;
                let mut refusal = g.refusal;
                let mut asked = false;
                for leg in inflight.legs.iter().filter(|l| l.target == Target::Grantor(index)) {
                    asked = true;
                    match leg.state {
                        LegState::Yes {
                            held: h,
                            available_before,
                        } if self.within_commit_window(leg, now) => {
                            held = held.checked_add(h).unwrap_or(held);
                            balance = balance.max(available_before);
                        }
                        LegState::Yes { .. } | LegState::Waiting => refusal = refusal.or(Some(Refusal::Timeout)),
                        LegState::No(reason) | LegState::Excluded(reason) => refusal = refusal.or(Some(reason)),
                    }
                }
                if !asked && refusal.is_none() {
                    // Not asked: past the most grantors one settlement may use, or because the
                    // patient's own account was expected to cover the bill.
                    refusal = Some(if index >= crate::policy::GRANTORS_PER_SETTLEMENT_MAX {
                        Refusal::TooManyGrantors
                    } else {
                        Refusal::NotNeeded
                    });
                }
                Candidate {
                    binding: g.binding,
                    grantor: g.grantor,
                    province: g.province,
                    available: held,
                    balance_for_order: balance,
                    // The participant applied the limits to what it held, counting the
                    // settlement's earlier rounds too, so the votes already respect them.
                    per_settlement_limit: None,
                    monthly_remaining: None,
                    position: g.position,
                    created_wall_ms: g.created_wall_ms,
                    refusal: if held.is_zero() { refusal } else { None },
                }
            })
            .collect();
        PlanInput {
            self_pay,
            own,
            candidates,
            order: self.order,
        }
    }

    fn round_complete(inflight: &Inflight) -> bool {
        inflight
            .legs
            .iter()
            .filter(|l| l.round == inflight.round)
            .all(|l| l.state != LegState::Waiting)
    }

    /// All votes of the round are in (or its deadline passed): re-plan or decide.
    fn conclude_round(&mut self, id: &SettlementId, now: Now, effects: &mut Effects) -> Result<(), String> {
        let Some(mut inflight) = self.inflight.remove(id) else {
            return Ok(());
        };
        // This round's deadline finds the settlement decided or in a later round.
        effects.cancel_timer(TimerKind::VoteDeadline {
            settlement: id.clone(),
            round: inflight.round,
        });
        let planned = plan(&self.plan_input(&inflight, now)).map_err(|e| e.to_string())?;
        if !planned.cash.is_zero() && inflight.round < self.config.rounds_max {
            let earliest_window = inflight
                .legs
                .iter()
                .filter(|l| matches!(l.state, LegState::Yes { .. }))
                .map(|l| l.sent_mono_ms.saturating_add(self.config.commit_window_ms()))
                .min()
                .unwrap_or(u64::MAX);
            // Grantors that gave all they were asked may have more.
            let asks: Vec<(Target, Money)> = (0..inflight.grantors.len())
                .filter(|&index| {
                    let legs: Vec<&InflightLeg> = inflight
                        .legs
                        .iter()
                        .filter(|l| l.target == Target::Grantor(index))
                        .collect();
                    !legs.is_empty()
                        && legs
                            .iter()
                            .all(|l| matches!(l.state, LegState::Yes { held, .. } if held == l.requested))
                })
                .map(|index| (Target::Grantor(index), planned.cash))
                .collect();
            // Participants refuse legs past `LEG_INDEX_MAX` (it bounds their per-settlement
            // count); a configuration with more rounds than the protocol allows stops here.
            let within_index = u32::from(inflight.next_index)
                .checked_add(u32::try_from(asks.len()).unwrap_or(u32::MAX))
                .is_some_and(|end| end <= u32::from(LEG_INDEX_MAX).saturating_add(1));
            if !asks.is_empty() && within_index && now.mono_after(self.config.vote_timeout_ms) <= earliest_window {
                self.start_round(&mut inflight, asks, now, effects);
                self.inflight.insert(id.clone(), inflight);
                return Ok(());
            }
        }
        self.decide(inflight, now, effects)
    }

    /// Writes COMMIT with the final amounts, answers the waiting callers, tells participants.
    fn decide(&mut self, inflight: Inflight, now: Now, effects: &mut Effects) -> Result<(), String> {
        let input = self.plan_input(&inflight, now);
        let planned = plan(&input).map_err(|e| e.to_string())?;
        let mut legs = Vec::with_capacity(inflight.legs.len());
        let mut own_left = planned.own;
        let mut grantor_left: BTreeMap<BindingId, Money> = planned.legs.iter().map(|p| (p.binding, p.amount)).collect();
        for leg in &inflight.legs {
            let amount = match (leg.state, self.within_commit_window(leg, now)) {
                (LegState::Yes { held, .. }, true) => {
                    let left = match leg.target {
                        Target::Own => Some(&mut own_left),
                        Target::Grantor(_) => leg.binding.and_then(|b| grantor_left.get_mut(&b)),
                    };
                    match left {
                        Some(left) => {
                            let amount = held.min(*left);
                            *left = left.checked_sub(amount).map_err(|e| e.to_string())?;
                            amount
                        }
                        None => Money::ZERO,
                    }
                }
                _ => Money::ZERO,
            };
            // Participants that refused wrote their own fence; everyone else must hear from us.
            let notify = !matches!(leg.state, LegState::No(_));
            if !amount.is_zero() && !self.within_commit_window(leg, now) {
                return Err(format!("COMMIT of leg {} past its deadline", leg.leg));
            }
            legs.push(DecidedLeg {
                leg: leg.leg.clone(),
                province: leg.province,
                account: leg.account,
                binding: leg.binding,
                amount,
                notify,
                refunded: Money::ZERO,
            });
        }
        if !own_left.is_zero() || grantor_left.values().any(|m| !m.is_zero()) {
            return Err("planned amounts not covered by held legs".into());
        }
        // Known only from the own account's yes vote: when it refused (frozen, closed) or was
        // not asked, the coordinator has not seen its balance, and the receipt says nothing
        // rather than a wrong figure.
        let own_balance_after = if inflight.has_own_account {
            inflight
                .legs
                .iter()
                .filter(|l| l.target == Target::Own)
                .find_map(|l| match l.state {
                    LegState::Yes { available_before, .. } => Some(available_before),
                    _ => None,
                })
                .map(|before| before.saturating_sub(planned.own))
        } else {
            None
        };
        let balance_of = |binding: BindingId| {
            input
                .candidates
                .iter()
                .find(|c| c.binding == binding)
                .map(|c| c.balance_for_order)
                .unwrap_or(Money::ZERO)
        };
        let mutual_aid: Vec<MutualAidPart> = planned
            .legs
            .iter()
            .map(|p| MutualAidPart {
                grantor: p.grantor,
                province: p.province,
                binding: p.binding,
                amount: p.amount,
                balance_after: balance_of(p.binding).saturating_sub(p.amount),
            })
            .collect();
        let replanned = inflight.round > 1
            || inflight
                .legs
                .iter()
                .any(|l| matches!(l.state, LegState::No(_) | LegState::Excluded(_)))
            || planned.not_paying.iter().any(|n| n.reason == Refusal::Timeout);
        let cash_only = planned.own.is_zero() && mutual_aid.is_empty() && !planned.cash.is_zero();
        let receipt = Receipt {
            settlement: inflight.request.settlement.clone(),
            patient: inflight.request.patient,
            self_pay: inflight.request.self_pay,
            own_account_paid: planned.own,
            own_refusal: planned.own_refusal,
            own_balance_after,
            mutual_aid,
            cash_paid: planned.cash,
            not_paying: planned.not_paying,
            rounds: inflight.round.max(1),
            decided_wall_ms: now.wall_ms,
        };
        let id = inflight.request.settlement.clone();
        let key = OutboxKey::Settlement(id.clone());
        let pending: Vec<Pending> = legs
            .iter()
            .filter(|l| l.notify)
            .map(|l| Pending {
                ack: AckKey::Leg(l.leg.clone()),
                to: l.province,
                message: leg_reply(l),
            })
            .collect();
        for leg in legs
            .iter()
            .filter(|l| l.province != self.province && !l.amount.is_zero())
        {
            effects.writes.push(Write::Journal(JournalEntry {
                kind: JournalKind::MutualAidReceived,
                wall_ms: now.wall_ms,
                amount: leg.amount,
                account: Some(leg.account),
                leg: Some(leg.leg.clone()),
                binding: leg.binding,
                settlement: Some(id.clone()),
                counterparty: Some(leg.province),
                reference: Some(inflight.request.institution.clone()),
            }));
        }
        effects.writes.push(Write::Settlement(SettlementRecord {
            request: inflight.request.clone(),
            receipt: receipt.clone(),
            legs,
            refunded_total: Money::ZERO,
        }));
        if !pending.is_empty() {
            effects.writes.push(Write::Outbox {
                key: key.clone(),
                live: true,
            });
        }
        for waiter in &inflight.waiters {
            effects.reply(*waiter, ClientReply::Settled(receipt.clone()));
        }
        effects.notes.push(Note::SettlementDecided {
            settlement: id,
            rounds: receipt.rounds,
            replanned,
            cash_only,
        });
        self.deliveries.start(key, pending, &self.config, now, effects);
        Ok(())
    }

    /// A participant voted.
    pub fn on_vote<V: LedgerView>(
        &mut self,
        view: &V,
        from: Province,
        leg: &LegId,
        vote: Vote,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let Some(id) = self.own_pay_leg(leg, from, &mut effects) else {
            return Ok(effects);
        };
        if let Some(inflight) = self.inflight.get_mut(&id) {
            if !self.config.safeguards.exact_cancels {
                // Mutation: the deadline is still needed while any other vote is missing.
                effects.cancel_timer(TimerKind::VoteDeadline {
                    settlement: id.clone(),
                    round: inflight.round,
                });
            }
            let Some(entry) = inflight.legs.iter_mut().find(|l| &l.leg == leg && l.province == from) else {
                // A leg of an older attempt of this settlement: it can never commit.
                if matches!(vote, Vote::Yes { .. }) {
                    effects.send(from, PeerMessage::Abort { leg: leg.clone() });
                }
                return Ok(effects);
            };
            match (entry.state, vote) {
                (LegState::Waiting, Vote::Yes { held, available_before }) => {
                    if held > entry.requested {
                        effects.notes.push(Note::ProtocolViolation {
                            from,
                            detail: format!("vote on {leg} holds {held}, more than the {} asked", entry.requested),
                        });
                        entry.state = LegState::Excluded(Refusal::NotAuthorized);
                        effects.send(from, PeerMessage::Abort { leg: leg.clone() });
                    } else {
                        entry.state = LegState::Yes { held, available_before };
                    }
                }
                (LegState::Waiting, Vote::No { reason }) => entry.state = LegState::No(reason),
                (LegState::Excluded(_), Vote::Yes { .. }) => {
                    effects.send(from, PeerMessage::Abort { leg: leg.clone() });
                }
                _ => {}
            }
            if Self::round_complete(inflight) {
                self.conclude_round(&id, now, &mut effects)
                    .map_err(HandlerError::Invariant)?;
            }
            return Ok(effects);
        }
        if matches!(vote, Vote::Yes { .. }) {
            // Decided already (a duplicate or late vote), or unknown: answer from the record.
            let reply = self.decided_answer(view, &id, leg)?;
            effects.send(from, reply);
        }
        Ok(effects)
    }

    /// Checks that `leg` is a payment leg coordinated here and returns its settlement id.
    fn own_pay_leg(&self, leg: &LegId, from: Province, effects: &mut Effects) -> Option<SettlementId> {
        match (&leg.scope, leg.coordinator == self.province) {
            (LegScope::Pay { settlement, .. }, true) => Some(settlement.clone()),
            _ => {
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("message about foreign leg {leg}"),
                });
                None
            }
        }
    }

    /// What a decided (or unknown: presumed abort) settlement says about one of its legs.
    fn decided_answer<V: LedgerView>(
        &self,
        view: &V,
        id: &SettlementId,
        leg: &LegId,
    ) -> Result<PeerMessage, HandlerError<V::Error>> {
        let record = view.settlement(id).map_err(storage)?;
        let decided = record.and_then(|r| r.legs.into_iter().find(|l| &l.leg == leg));
        Ok(match decided {
            Some(decided) => leg_reply(&decided),
            None => PeerMessage::Abort { leg: leg.clone() },
        })
    }

    /// A participant holding past its deadline asks what became of its leg.
    pub fn on_query<V: LedgerView>(&mut self, view: &V, from: Province, leg: &LegId, now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        let Some(id) = self.own_pay_leg(leg, from, &mut effects) else {
            return Ok(effects);
        };
        if let Some(inflight) = self.inflight.get_mut(&id) {
            if let Some(entry) = inflight.legs.iter_mut().find(|l| &l.leg == leg && l.province == from) {
                // Undecided: the leg's deadline binds us, so it can no longer commit.
                if matches!(entry.state, LegState::Waiting | LegState::Yes { .. }) {
                    entry.state = LegState::Excluded(Refusal::Timeout);
                }
                effects.send(from, PeerMessage::Abort { leg: leg.clone() });
                if Self::round_complete(inflight) {
                    self.conclude_round(&id, now, &mut effects)
                        .map_err(HandlerError::Invariant)?;
                }
                return Ok(effects);
            }
        }
        let reply = self.decided_answer(view, &id, leg)?;
        effects.send(from, reply);
        Ok(effects)
    }

    /// A participant reports a leg resolved.
    pub fn on_ack<V: LedgerView>(
        &mut self,
        _view: &V,
        from: Province,
        leg: &LegId,
        outcome: LegOutcome,
        _now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        if leg.coordinator != self.province {
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("ack of foreign leg {leg}"),
            });
            return Ok(effects);
        }
        let key = match &leg.scope {
            LegScope::Pay { settlement, .. } => OutboxKey::Settlement(settlement.clone()),
            LegScope::Refund { settlement, refund } => OutboxKey::Refund {
                settlement: settlement.clone(),
                refund: refund.clone(),
            },
            LegScope::Transfer { .. } => {
                // Transfers have their own part (`transfer.rs`); the node routes their acks there.
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("ack of transfer leg {leg} at the settlement coordinator"),
                });
                return Ok(effects);
            }
        };
        let ack = AckKey::Leg(leg.clone());
        if let Some(pending) = self.deliveries.pending(&key, &ack) {
            let expected = match &pending.message {
                PeerMessage::Commit { amount, .. } => LegOutcome::Committed { amount: *amount },
                PeerMessage::Credit { amount, .. } => LegOutcome::Credited { amount: *amount },
                _ => LegOutcome::Aborted,
            };
            if expected != outcome {
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("leg {leg} acknowledged as {outcome:?}, decided {expected:?}"),
                });
                return Ok(effects);
            }
        }
        if self.deliveries.ack(&key, &ack, from) == Some(true) {
            // Nothing is left to resend.
            effects.cancel_timer(TimerKind::Resend(key.clone()));
            // Removing a delivered item needs no write set of its own: while a settlement is
            // in flight, its decision is certain to write, and the removal rides on that set
            // (under load, one set less per settlement). A crash meanwhile leaves the item in
            // the outbox; recovery delivers it again and the participant answers the same.
            self.delivered.push(key);
            if self.inflight.is_empty() || self.delivered.len() >= DELIVERED_HELD_MAX {
                self.write_delivered(&mut effects);
            }
        }
        Ok(effects)
    }

    /// A timer of the coordinator fired.
    pub fn on_timer<V: LedgerView>(&mut self, _view: &V, kind: &TimerKind, now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        match kind {
            TimerKind::VoteDeadline { settlement, round } => {
                let Some(inflight) = self.inflight.get_mut(settlement) else {
                    return Ok(effects);
                };
                if inflight.round != *round {
                    return Ok(effects);
                }
                for leg in inflight.legs.iter_mut().filter(|l| l.state == LegState::Waiting) {
                    leg.state = LegState::Excluded(Refusal::Timeout);
                    effects.send(leg.province, PeerMessage::Abort { leg: leg.leg.clone() });
                }
                self.conclude_round(settlement, now, &mut effects)
                    .map_err(HandlerError::Invariant)?;
            }
            TimerKind::Resend(key) => self.deliveries.resend(key, &self.config, now, &mut effects),
            TimerKind::HoldDeadline(_) | TimerKind::BindWait(_) | TimerKind::TransferDeadline(_) => {}
        }
        Ok(effects)
    }

    /// A refund request: credit back along the settlement's legs, grantors first.
    ///
    /// Rule: the refund goes first to the grantors, the last payer first (their money was
    /// lent to the family and returns first), then to the patient's own account, and what is
    /// left is returned in cash by the hospital. A refund never exceeds what is still unrefunded.
    pub fn on_refund<V: LedgerView>(
        &mut self,
        view: &V,
        reply_to: ReplyTo,
        request: RefundRequest,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        match self.refund_decision(view, &request, now)? {
            Err(error) => effects.reply(reply_to, ClientReply::Error(error)),
            Ok(None) => {
                if let Some(record) = view.refund(&request.refund).map_err(storage)? {
                    effects.reply(reply_to, ClientReply::Refunded(record.receipt));
                }
            }
            Ok(Some((record, settlement))) => {
                let key = OutboxKey::Refund {
                    settlement: request.settlement.clone(),
                    refund: request.refund.clone(),
                };
                let pending: Vec<Pending> = record
                    .receipt
                    .parts
                    .iter()
                    .map(|part| Pending {
                        ack: AckKey::Leg(part.leg.clone()),
                        to: part.province,
                        message: PeerMessage::Credit {
                            leg: part.leg.clone(),
                            original: part.original_leg.clone(),
                            amount: part.amount,
                        },
                    })
                    .collect();
                for part in record.receipt.parts.iter().filter(|p| p.province != self.province) {
                    effects.writes.push(Write::Journal(JournalEntry {
                        kind: JournalKind::MutualAidRefunded,
                        wall_ms: now.wall_ms,
                        amount: part.amount,
                        account: Some(part.account),
                        leg: Some(part.leg.clone()),
                        binding: part.binding,
                        settlement: Some(request.settlement.clone()),
                        counterparty: Some(part.province),
                        reference: Some(request.refund.to_string()),
                    }));
                }
                effects.writes.push(Write::Settlement(settlement));
                effects.writes.push(Write::Refund(record.clone()));
                if !pending.is_empty() {
                    effects.writes.push(Write::Outbox {
                        key: key.clone(),
                        live: true,
                    });
                }
                effects.reply(reply_to, ClientReply::Refunded(record.receipt));
                self.deliveries.start(key, pending, &self.config, now, &mut effects);
            }
        }
        Ok(effects)
    }

    /// Cancels a settlement (interface 2208): refunds all that is still unrefunded, exactly
    /// once (the refund id is derived from the settlement id).
    pub fn on_cancel<V: LedgerView>(
        &mut self,
        view: &V,
        reply_to: ReplyTo,
        settlement: SettlementId,
        now: Now,
    ) -> Outcome<V> {
        let refund = RefundId::cancellation_of(&settlement);
        self.on_refund(
            view,
            reply_to,
            RefundRequest {
                refund,
                settlement,
                amount: None,
            },
            now,
        )
    }

    /// Reverses a message by its original id (冲正, interface 2601). A settlement's id undoes
    /// the settlement as a cancellation does; a refund cannot be reversed.
    pub fn on_reverse<V: LedgerView>(
        &mut self,
        view: &V,
        reply_to: ReplyTo,
        message: SettlementId,
        now: Now,
    ) -> Outcome<V> {
        let known = self.inflight.contains_key(&message) || view.settlement(&message).map_err(storage)?.is_some();
        if known {
            return self.on_cancel(view, reply_to, message, now);
        }
        let mut effects = Effects::default();
        let as_refund = RefundId::new(message.as_str()).ok();
        let is_refund = match as_refund {
            Some(id) => view.refund(&id).map_err(storage)?.is_some(),
            None => false,
        };
        let error = if is_refund {
            ClientError::precondition(
                "refund_not_reversible",
                format!("{message} is a refund; a refund cannot be reversed"),
            )
        } else {
            ClientError::not_found(
                "unknown_message",
                format!("no settlement {message} was decided on this node; nothing to reverse"),
            )
        };
        effects.reply(reply_to, ClientReply::Error(error));
        Ok(effects)
    }

    /// `Ok(None)`: a repeat of an applied refund. `Ok(Some)`: the new refund and the updated
    /// settlement record.
    #[allow(clippy::type_complexity)]
    fn refund_decision<V: LedgerView>(
        &self,
        view: &V,
        request: &RefundRequest,
        now: Now,
    ) -> Result<Result<Option<(RefundRecord, SettlementRecord)>, ClientError>, HandlerError<V::Error>> {
        if let Some(existing) = view.refund(&request.refund).map_err(storage)? {
            if &existing.request == request {
                return Ok(Ok(None));
            }
            return Ok(Err(ClientError::exists(
                "refund_id_reused",
                format!("refund id {} was used for another refund", request.refund),
            )));
        }
        if request.amount.is_some_and(Money::is_zero) {
            return Ok(Err(ClientError::invalid(
                "zero_refund",
                "a refund amount must be above zero",
            )));
        }
        let Some(mut settlement) = view.settlement(&request.settlement).map_err(storage)? else {
            if self.inflight.contains_key(&request.settlement) {
                return Ok(Err(ClientError::precondition(
                    "settlement_in_progress",
                    format!("settlement {} is still being decided", request.settlement),
                )));
            }
            return Ok(Err(ClientError::not_found(
                "unknown_settlement",
                format!("no settlement {} on this node", request.settlement),
            )));
        };
        let refundable = settlement.receipt.self_pay.saturating_sub(settlement.refunded_total);
        if refundable.is_zero() {
            return Ok(Err(ClientError::precondition(
                "already_refunded",
                format!("settlement {} is already fully refunded", request.settlement),
            )));
        }
        let amount = request.amount.unwrap_or(refundable);
        if amount > refundable {
            return Ok(Err(ClientError::precondition(
                "refund_exceeds_paid",
                format!("refund of {amount} exceeds the {refundable} still refundable"),
            )));
        }
        // Grantor legs in reverse payment order, then the own account.
        let payment_rank = |leg: &DecidedLeg| match leg.binding {
            None => usize::MAX,
            Some(binding) => settlement
                .receipt
                .mutual_aid
                .iter()
                .position(|p| p.binding == binding)
                .unwrap_or(0),
        };
        let mut order: Vec<usize> = (0..settlement.legs.len()).collect();
        order.sort_by_key(|&i| {
            let leg = settlement.legs.get(i);
            let is_own = leg.is_some_and(|l| l.binding.is_none());
            let rank = leg.map(payment_rank).unwrap_or(0);
            (is_own, std::cmp::Reverse(rank), std::cmp::Reverse(i))
        });
        let mut remaining = amount;
        let mut parts = Vec::new();
        for i in order {
            let Some(leg) = settlement.legs.get_mut(i) else {
                continue;
            };
            let open = leg.amount.saturating_sub(leg.refunded);
            let take = remaining.min(open);
            if take.is_zero() {
                continue;
            }
            remaining = remaining.checked_sub(take)?;
            leg.refunded = leg.refunded.checked_add(take)?;
            let index = u16::try_from(parts.len()).unwrap_or(u16::MAX);
            parts.push(RefundPart {
                leg: LegId {
                    coordinator: self.province,
                    scope: LegScope::Refund {
                        settlement: request.settlement.clone(),
                        refund: request.refund.clone(),
                    },
                    index,
                    account: leg.account,
                },
                original_leg: leg.leg.clone(),
                province: leg.province,
                account: leg.account,
                binding: leg.binding,
                amount: take,
            });
        }
        // What the accounts do not take back is the cash part, returned by the hospital.
        let cash = remaining;
        let legs_refunded = Money::sum(settlement.legs.iter().map(|l| l.refunded))?;
        settlement.refunded_total = settlement.refunded_total.checked_add(amount)?;
        let cash_refunded = settlement.refunded_total.saturating_sub(legs_refunded);
        if cash_refunded > settlement.receipt.cash_paid {
            return Err(HandlerError::Invariant(format!(
                "refunds of settlement {} exceed its cash part",
                request.settlement
            )));
        }
        let receipt = RefundReceipt {
            refund: request.refund.clone(),
            settlement: request.settlement.clone(),
            amount,
            parts,
            cash,
            decided_wall_ms: now.wall_ms,
        };
        Ok(Ok(Some((
            RefundRecord {
                request: request.clone(),
                receipt,
            },
            settlement,
        ))))
    }

    /// After a restart: re-send every decision still in the durable outbox.
    pub fn recover<V: LedgerView>(&mut self, view: &V, outbox: &[OutboxKey], now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        for key in outbox {
            let pending: Vec<Pending> = match key {
                OutboxKey::Settlement(id) => match view.settlement(id).map_err(storage)? {
                    Some(record) => record
                        .legs
                        .iter()
                        .filter(|l| l.notify)
                        .map(|l| Pending {
                            ack: AckKey::Leg(l.leg.clone()),
                            to: l.province,
                            message: leg_reply(l),
                        })
                        .collect(),
                    None => {
                        return Err(HandlerError::Invariant(format!("outbox names unknown settlement {id}")));
                    }
                },
                OutboxKey::Refund { refund: id, .. } => match view.refund(id).map_err(storage)? {
                    Some(record) => record
                        .receipt
                        .parts
                        .iter()
                        .map(|part| Pending {
                            ack: AckKey::Leg(part.leg.clone()),
                            to: part.province,
                            message: PeerMessage::Credit {
                                leg: part.leg.clone(),
                                original: part.original_leg.clone(),
                                amount: part.amount,
                            },
                        })
                        .collect(),
                    None => {
                        return Err(HandlerError::Invariant(format!("outbox names unknown refund {id}")));
                    }
                },
                OutboxKey::Registration(_) | OutboxKey::Revocation(_) | OutboxKey::Transfer(_) => continue,
            };
            self.deliveries
                .start(key.clone(), pending, &self.config, now, &mut effects);
        }
        Ok(effects)
    }
}

fn reused(id: &SettlementId) -> ClientError {
    ClientError::exists(
        "settlement_id_reused",
        format!("settlement id {id} was already used for a different request; nothing was changed"),
    )
}
