//! Wallet transfers (the national model of 2025, kept for parity): a grantor pushes money from
//! their personal account to a relative's account, possibly in another province, with the same
//! two-phase protocol as a settlement.
//!
//! The grantor's node coordinates ([`Transfers`]). A transfer has two legs of scope
//! `LegScope::Transfer`: the **debit leg** (index [`TRANSFER_DEBIT_INDEX`]) on the grantor's
//! account, prepared on this same node like a settlement's own-account leg, and the **credit
//! leg** (index [`TRANSFER_CREDIT_INDEX`]) on the relative's account at the relative's node.
//!
//! 1. The grantor's account (the participant, the authority over that money) checks the binding
//!    (active, mutual aid, this grantor and this grantee), the card (not frozen, not closed),
//!    the wallet policy (per-transfer cap, quiet hours in China Standard Time, transfers per
//!    day) and the available balance, then holds the whole amount (all or nothing) and votes.
//! 2. On yes, the coordinator asks the relative's node to accept the credit. That node checks
//!    its copy of the binding, the account (exists, not closed, has a personal account) and its
//!    own policy (`accept_wallet_transfers`), and votes. It holds nothing and writes nothing on
//!    a yes: a yes is a promise to apply the commit whatever happens meanwhile.
//! 3. On yes, the coordinator writes COMMIT (the transfer record and its clearing claim)
//!    durably, answers with the receipt, then delivers Commit to both legs until acknowledged:
//!    the hold becomes a debit and the relative is credited, each exactly once (per-leg fences).
//!    On a no or a timeout it writes the refused record, answers why, and delivers Abort: the
//!    hold is released and the money returns.
//!
//! Presumed abort, as for settlements: nothing is written before the decision; a hold whose
//! coordinator forgot the transfer (a crash) asks and is answered Abort. The coordinator never
//! decides COMMIT later than `commit_window_ms` after it sent the debit leg's prepare.

use std::collections::BTreeMap;

use crate::config::ProtocolConfig;
use crate::effects::{Effects, Note, ReplyTo, TimerKind};
use crate::error::{ClientError, ErrorKind, HandlerError};
use crate::ids::{LegId, LegScope, TRANSFER_CREDIT_INDEX, TRANSFER_DEBIT_INDEX, TransferId};
use crate::ledger::{LedgerView, Write};
use crate::message::{ClientReply, LegOutcome, PeerMessage, Prepare, Vote};
use crate::money::Money;
use crate::outbox::{AckKey, Deliveries, Pending};
use crate::participant::Participant;
use crate::person::PersonId;
use crate::reason::Refusal;
use crate::records::{
    DecidedLeg, Fence, Hold, JournalEntry, JournalKind, OutboxKey, TransferReceipt, TransferRecord, TransferRequest,
    TransferStatus, WalletUsage,
};
use crate::region::Province;
use crate::time::{CivilDate, Now};

type Outcome<V> = Result<Effects, HandlerError<<V as LedgerView>::Error>>;

fn storage<E: std::fmt::Debug>(error: E) -> HandlerError<E> {
    HandlerError::Storage(error)
}

/// Which vote the coordinator is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    /// The grantor's account: hold the amount.
    Debit,
    /// The relative's node: accept the credit.
    Credit,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Inflight {
    request: TransferRequest,
    waiters: Vec<ReplyTo>,
    grantee: PersonId,
    grantee_province: Province,
    debit: LegId,
    credit: LegId,
    debit_sent_mono_ms: u64,
    phase: Phase,
    /// When the current phase times out (the timer of an earlier phase is stale).
    deadline_mono_ms: u64,
    /// The grantor's available balance before the hold, from the debit leg's yes vote.
    available_before: Option<Money>,
}

/// How a decided transfer treats its legs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decision {
    /// None: COMMIT. Some: refused for this reason.
    refusal: Option<Refusal>,
    /// Whether the debit leg must be told (false when it refused itself).
    notify_debit: bool,
    /// Whether the credit leg was asked, and whether it must be told.
    credit: CreditLeg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CreditLeg {
    NotAsked,
    Notify,
    /// It refused and wrote its own fence.
    Refused,
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

fn reused(id: &TransferId) -> ClientError {
    ClientError::exists(
        "transfer_id_reused",
        format!("transfer id {id} was already used for a different request; nothing was changed"),
    )
}

/// The transfers coordinated by one node (or one shard of its transfer ids): the grantor's side.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transfers {
    province: Province,
    incarnation: u32,
    config: ProtocolConfig,
    inflight: BTreeMap<TransferId, Inflight>,
    deliveries: Deliveries,
}

impl Transfers {
    /// `incarnation` must grow at every start of the node, as for the settlement coordinator.
    pub fn new(province: Province, incarnation: u32, config: ProtocolConfig) -> Transfers {
        Transfers {
            province,
            incarnation,
            config,
            inflight: BTreeMap::new(),
            deliveries: Deliveries::default(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    pub fn deliveries_pending(&self) -> usize {
        self.deliveries.len()
    }

    /// The grantor's bureau asks for a transfer.
    pub fn on_transfer<V: LedgerView>(
        &mut self,
        view: &V,
        reply_to: ReplyTo,
        request: TransferRequest,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let refuse = |effects: &mut Effects, error: ClientError| effects.reply(reply_to, ClientReply::Error(error));
        if request.amount.is_zero() {
            refuse(
                &mut effects,
                ClientError::invalid("zero_amount", "a transfer amount must be above zero"),
            );
            return Ok(effects);
        }
        let id = request.transfer.clone();
        if let Some(record) = view.transfer(&id).map_err(storage)? {
            if record.request == request {
                effects.reply(reply_to, ClientReply::Transferred(record.receipt));
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
                    "too many transfers in flight; retry shortly",
                ),
            );
            return Ok(effects);
        }
        if view.account(&request.grantor).map_err(storage)?.is_none() {
            refuse(
                &mut effects,
                ClientError::not_found(
                    "unknown_person",
                    format!("grantor {} is not enrolled on this node", request.grantor),
                ),
            );
            return Ok(effects);
        }
        // The binding must be one this node issued (the grantor's node is its authority); its
        // state (active, kind) is the participant's to check, with the account, in one place.
        let Some(binding) = view.binding(&request.binding).map_err(storage)? else {
            refuse(
                &mut effects,
                ClientError::not_found(
                    "unknown_binding",
                    format!("binding {} was not granted on this node", request.binding),
                ),
            );
            return Ok(effects);
        };
        if binding.grantor != request.grantor {
            refuse(
                &mut effects,
                ClientError::invalid(
                    "grantor_mismatch",
                    format!(
                        "binding {} was granted by {}, not {}",
                        binding.id, binding.grantor, request.grantor
                    ),
                ),
            );
            return Ok(effects);
        }
        let scope = LegScope::Transfer {
            transfer: id.clone(),
            attempt: self.incarnation,
        };
        let debit = LegId {
            coordinator: self.province,
            scope: scope.clone(),
            index: TRANSFER_DEBIT_INDEX,
            account: request.grantor,
        };
        let credit = LegId {
            coordinator: self.province,
            scope,
            index: TRANSFER_CREDIT_INDEX,
            account: binding.grantee,
        };
        effects.send(
            self.province,
            PeerMessage::Prepare(Prepare {
                leg: debit.clone(),
                binding: Some(binding.id),
                patient: binding.grantee,
                amount_max: request.amount,
                hold_timeout_ms: self.config.hold_timeout_ms,
            }),
        );
        let deadline_mono_ms = now.mono_after(self.config.vote_timeout_ms);
        effects.timer(deadline_mono_ms, TimerKind::TransferDeadline(id.clone()));
        self.inflight.insert(
            id,
            Inflight {
                request,
                waiters: vec![reply_to],
                grantee: binding.grantee,
                grantee_province: binding.grantee_province,
                debit,
                credit,
                debit_sent_mono_ms: now.mono_ms,
                phase: Phase::Debit,
                deadline_mono_ms,
                available_before: None,
            },
        );
        Ok(effects)
    }

    /// The last moment COMMIT may be decided: the debit hold's window.
    fn commit_deadline(&self, inflight: &Inflight) -> u64 {
        inflight
            .debit_sent_mono_ms
            .saturating_add(self.config.commit_window_ms())
    }

    /// A leg of a transfer coordinated here: its id, or a violation note.
    fn own_leg(&self, leg: &LegId, from: Province, effects: &mut Effects) -> Option<TransferId> {
        match (leg.transfer(), leg.coordinator == self.province) {
            (Some(id), true) => Some(id.clone()),
            _ => {
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("message about foreign leg {leg}"),
                });
                None
            }
        }
    }

    /// A vote on one of the legs.
    pub fn on_vote<V: LedgerView>(
        &mut self,
        view: &V,
        from: Province,
        leg: &LegId,
        vote: Vote,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let Some(id) = self.own_leg(leg, from, &mut effects) else {
            return Ok(effects);
        };
        let Some(mut inflight) = self.inflight.remove(&id) else {
            if matches!(vote, Vote::Yes { .. }) {
                // Decided already (a duplicate or late vote), or unknown: answer from the record.
                effects.send(from, self.decided_answer(view, &id, leg)?);
            }
            return Ok(effects);
        };
        let amount = inflight.request.amount;
        let is_debit = *leg == inflight.debit && from == self.province;
        let is_credit = *leg == inflight.credit && from == inflight.grantee_province;
        if !is_debit && !is_credit {
            // A leg of an older attempt of this id (or a stranger's): it can never commit.
            if matches!(vote, Vote::Yes { .. }) {
                effects.send(from, PeerMessage::Abort { leg: leg.clone() });
            }
            self.inflight.insert(id, inflight);
            return Ok(effects);
        }
        match (inflight.phase, is_debit, vote) {
            (Phase::Debit, true, Vote::Yes { held, available_before }) => {
                if held != amount {
                    effects.notes.push(Note::ProtocolViolation {
                        from,
                        detail: format!("vote on {leg} holds {held}, the transfer is of {amount}"),
                    });
                    let decision = Decision {
                        refusal: Some(Refusal::NotAuthorized),
                        notify_debit: true,
                        credit: CreditLeg::NotAsked,
                    };
                    self.decide(inflight, decision, now, &mut effects);
                    return Ok(effects);
                }
                inflight.available_before = Some(available_before);
                let last = self.commit_deadline(&inflight);
                if now.mono_ms >= last {
                    let decision = Decision {
                        refusal: Some(Refusal::Timeout),
                        notify_debit: true,
                        credit: CreditLeg::NotAsked,
                    };
                    self.decide(inflight, decision, now, &mut effects);
                    return Ok(effects);
                }
                effects.send(
                    inflight.grantee_province,
                    PeerMessage::Prepare(Prepare {
                        leg: inflight.credit.clone(),
                        binding: Some(inflight.request.binding),
                        patient: inflight.grantee,
                        amount_max: amount,
                        hold_timeout_ms: self.config.hold_timeout_ms,
                    }),
                );
                inflight.phase = Phase::Credit;
                inflight.deadline_mono_ms = now.mono_after(self.config.vote_timeout_ms).min(last);
                effects.timer(inflight.deadline_mono_ms, TimerKind::TransferDeadline(id.clone()));
                self.inflight.insert(id, inflight);
            }
            (Phase::Debit, true, Vote::No { reason }) => {
                let decision = Decision {
                    refusal: Some(reason),
                    notify_debit: false,
                    credit: CreditLeg::NotAsked,
                };
                self.decide(inflight, decision, now, &mut effects);
            }
            (Phase::Credit, false, Vote::Yes { held, .. }) => {
                let refusal = if held != amount {
                    effects.notes.push(Note::ProtocolViolation {
                        from,
                        detail: format!("vote on {leg} accepts {held}, the transfer is of {amount}"),
                    });
                    Some(Refusal::NotAuthorized)
                } else if now.mono_ms > self.commit_deadline(&inflight) {
                    Some(Refusal::Timeout)
                } else {
                    None
                };
                let decision = Decision {
                    refusal,
                    notify_debit: true,
                    credit: CreditLeg::Notify,
                };
                self.decide(inflight, decision, now, &mut effects);
            }
            (Phase::Credit, false, Vote::No { reason }) => {
                let decision = Decision {
                    refusal: Some(reason),
                    notify_debit: true,
                    credit: CreditLeg::Refused,
                };
                self.decide(inflight, decision, now, &mut effects);
            }
            _ => {
                // A duplicate vote of the debit leg, or a credit vote before it was asked: no-op.
                self.inflight.insert(id, inflight);
            }
        }
        Ok(effects)
    }

    /// The current phase gave up (vote deadline, or a participant asked past its deadline).
    fn time_out(&mut self, inflight: Inflight, now: Now, effects: &mut Effects) {
        let credit = match inflight.phase {
            Phase::Debit => CreditLeg::NotAsked,
            Phase::Credit => CreditLeg::Notify,
        };
        let decision = Decision {
            refusal: Some(Refusal::Timeout),
            notify_debit: true,
            credit,
        };
        self.decide(inflight, decision, now, effects);
    }

    /// Writes the decision, answers the waiting callers, and starts delivering it.
    fn decide(&mut self, inflight: Inflight, decision: Decision, now: Now, effects: &mut Effects) {
        let request = &inflight.request;
        let committed = decision.refusal.is_none();
        let amount = if committed { request.amount } else { Money::ZERO };
        let mut legs = vec![DecidedLeg {
            leg: inflight.debit.clone(),
            province: self.province,
            account: request.grantor,
            binding: Some(request.binding),
            amount,
            notify: decision.notify_debit,
            refunded: Money::ZERO,
        }];
        if decision.credit != CreditLeg::NotAsked {
            legs.push(DecidedLeg {
                leg: inflight.credit.clone(),
                province: inflight.grantee_province,
                account: inflight.grantee,
                binding: Some(request.binding),
                amount,
                notify: decision.credit == CreditLeg::Notify,
                refunded: Money::ZERO,
            });
        }
        let receipt = TransferReceipt {
            transfer: request.transfer.clone(),
            grantor: request.grantor,
            binding: request.binding,
            grantee: inflight.grantee,
            grantee_province: inflight.grantee_province,
            amount: request.amount,
            status: if committed {
                TransferStatus::Committed
            } else {
                TransferStatus::Refused
            },
            reason: decision.refusal,
            grantor_available_after: if committed {
                inflight
                    .available_before
                    .map(|before| before.saturating_sub(request.amount))
            } else {
                None
            },
            decided_wall_ms: now.wall_ms,
        };
        if committed && inflight.grantee_province != self.province {
            // The clearing claim: this province owes the receiving one (see `clearing.rs`).
            effects.writes.push(Write::Journal(JournalEntry {
                kind: JournalKind::TransferSent,
                wall_ms: now.wall_ms,
                amount: request.amount,
                account: Some(inflight.grantee),
                leg: Some(inflight.credit.clone()),
                binding: Some(request.binding),
                settlement: None,
                counterparty: Some(inflight.grantee_province),
                reference: Some(request.transfer.to_string()),
            }));
        }
        let key = OutboxKey::Transfer(request.transfer.clone());
        let pending: Vec<Pending> = legs
            .iter()
            .filter(|l| l.notify)
            .map(|l| Pending {
                ack: AckKey::Leg(l.leg.clone()),
                to: l.province,
                message: leg_reply(l),
            })
            .collect();
        effects.writes.push(Write::Transfer(TransferRecord {
            request: request.clone(),
            receipt: receipt.clone(),
            legs,
        }));
        if !pending.is_empty() {
            effects.writes.push(Write::Outbox {
                key: key.clone(),
                live: true,
            });
        }
        for waiter in &inflight.waiters {
            effects.reply(*waiter, ClientReply::Transferred(receipt.clone()));
        }
        self.deliveries.start(key, pending, &self.config, now, effects);
    }

    /// What a decided (or unknown: presumed abort) transfer says about one of its legs.
    fn decided_answer<V: LedgerView>(
        &self,
        view: &V,
        id: &TransferId,
        leg: &LegId,
    ) -> Result<PeerMessage, HandlerError<V::Error>> {
        let record = view.transfer(id).map_err(storage)?;
        let decided = record.and_then(|r| r.legs.into_iter().find(|l| &l.leg == leg));
        Ok(match decided {
            Some(decided) => leg_reply(&decided),
            None => PeerMessage::Abort { leg: leg.clone() },
        })
    }

    /// A participant holding past its deadline asks what became of its leg.
    pub fn on_query<V: LedgerView>(&mut self, view: &V, from: Province, leg: &LegId, now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        let Some(id) = self.own_leg(leg, from, &mut effects) else {
            return Ok(effects);
        };
        if let Some(inflight) = self.inflight.remove(&id) {
            let ours = (*leg == inflight.debit && from == self.province)
                || (*leg == inflight.credit && from == inflight.grantee_province);
            if ours {
                // Undecided: the leg's deadline binds us, so it can no longer commit. The
                // decision's delivery answers the asking leg.
                self.time_out(inflight, now, &mut effects);
                return Ok(effects);
            }
            self.inflight.insert(id.clone(), inflight);
        }
        effects.send(from, self.decided_answer(view, &id, leg)?);
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
        let Some(id) = self.own_leg(leg, from, &mut effects) else {
            return Ok(effects);
        };
        let key = OutboxKey::Transfer(id);
        let ack = AckKey::Leg(leg.clone());
        if let Some(pending) = self.deliveries.pending(&key, &ack) {
            let expected = match &pending.message {
                PeerMessage::Commit { amount, .. } => LegOutcome::Committed { amount: *amount },
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
            effects.writes.push(Write::Outbox { key, live: false });
        }
        Ok(effects)
    }

    /// A timer of the transfers fired.
    pub fn on_timer<V: LedgerView>(&mut self, _view: &V, kind: &TimerKind, now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        match kind {
            TimerKind::TransferDeadline(id) => {
                let due = self
                    .inflight
                    .get(id)
                    .is_some_and(|inflight| now.mono_ms >= inflight.deadline_mono_ms);
                if let Some(inflight) = due.then(|| self.inflight.remove(id)).flatten() {
                    self.time_out(inflight, now, &mut effects);
                }
            }
            TimerKind::Resend(key @ OutboxKey::Transfer(_)) => {
                self.deliveries.resend(key, &self.config, now, &mut effects);
            }
            _ => {}
        }
        Ok(effects)
    }

    /// After a restart: re-send every transfer decision still in the durable outbox.
    pub fn recover<V: LedgerView>(&mut self, view: &V, outbox: &[OutboxKey], now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        for key in outbox {
            let OutboxKey::Transfer(id) = key else {
                continue;
            };
            let Some(record) = view.transfer(id).map_err(storage)? else {
                return Err(HandlerError::Invariant(format!("outbox names unknown transfer {id}")));
            };
            let pending: Vec<Pending> = record
                .legs
                .iter()
                .filter(|l| l.notify)
                .map(|l| Pending {
                    ack: AckKey::Leg(l.leg.clone()),
                    to: l.province,
                    message: leg_reply(l),
                })
                .collect();
            self.deliveries
                .start(key.clone(), pending, &self.config, now, &mut effects);
        }
        Ok(effects)
    }
}

/// A checked debit: the grantor's account and the day's count with this transfer in it.
type CheckedDebit = (crate::account::Account, WalletUsage);

/// The participant's side of transfers: the grantor's account (debit leg) and the relative's
/// account (credit leg), each on the node that owns it.
impl Participant<'_> {
    /// The authority checks of a transfer's debit leg, on the grantor's node.
    fn check_transfer_debit<V: LedgerView>(
        &self,
        view: &V,
        from: Province,
        prepare: &Prepare,
        now: Now,
    ) -> Result<Result<CheckedDebit, Refusal>, HandlerError<V::Error>> {
        let leg = &prepare.leg;
        // Only the grantor's own node draws on its accounts for a transfer.
        let (true, Some(binding_id), false) = (from == self.province, prepare.binding, prepare.amount_max.is_zero())
        else {
            return Ok(Err(Refusal::NotAuthorized));
        };
        let Some(account) = view.account(&leg.account).map_err(storage)? else {
            return Ok(Err(Refusal::UnknownAccount));
        };
        let Some(binding) = view.binding(&binding_id).map_err(storage)? else {
            return Ok(Err(Refusal::UnknownBinding));
        };
        if binding.grantor != leg.account || binding.grantee != prepare.patient {
            return Ok(Err(Refusal::GranteeMismatch));
        }
        if let Some(refusal) = binding.money_refusal() {
            return Ok(Err(refusal));
        }
        if let Some(refusal) = account.payment_refusal() {
            return Ok(Err(refusal));
        }
        let amount = prepare.amount_max;
        if self.wallet.in_quiet_hours(now.wall_ms) {
            return Ok(Err(Refusal::QuietHours));
        }
        if amount > self.wallet.transfer_amount_max {
            return Ok(Err(Refusal::TransferAmountLimit));
        }
        // The day a transfer counts in never moves backwards (a wall clock stepping back
        // cannot restart a day's count), as for a binding's month.
        let usage = view.wallet_usage(&account.person).map_err(storage)?;
        let day = usage.as_ref().map_or(now.date(), |u| u.day.max(now.date()));
        let today = usage.filter(|u| u.day == day).map_or(0, |u| u.transfers);
        if today >= self.wallet.transfers_per_day_max {
            return Ok(Err(Refusal::DailyTransferLimit));
        }
        if account.available() < amount {
            return Ok(Err(Refusal::InsufficientBalance));
        }
        let usage = WalletUsage {
            person: account.person,
            day,
            transfers: today.saturating_add(1),
        };
        Ok(Ok((account, usage)))
    }

    /// The receiving node's checks of a transfer's credit leg.
    fn check_transfer_credit<V: LedgerView>(
        &self,
        view: &V,
        from: Province,
        prepare: &Prepare,
    ) -> Result<Result<(), Refusal>, HandlerError<V::Error>> {
        let leg = &prepare.leg;
        let (Some(binding_id), false) = (prepare.binding, prepare.amount_max.is_zero()) else {
            return Ok(Err(Refusal::NotAuthorized));
        };
        if !self.wallet.accept_wallet_transfers {
            return Ok(Err(Refusal::TransfersNotAccepted));
        }
        let Some(copy) = view.binding_copy(&binding_id).map_err(storage)? else {
            return Ok(Err(Refusal::UnknownBinding));
        };
        // A node sends money only along bindings its own grantors granted.
        if copy.grantor_province != from {
            return Ok(Err(Refusal::NotAuthorized));
        }
        if copy.grantee != leg.account || prepare.patient != leg.account {
            return Ok(Err(Refusal::GranteeMismatch));
        }
        if let Some(refusal) = copy.money_refusal() {
            return Ok(Err(refusal));
        }
        let Some(account) = view.account(&leg.account).map_err(storage)? else {
            return Ok(Err(Refusal::UnknownAccount));
        };
        if account.closed {
            return Ok(Err(Refusal::AccountClosed));
        }
        if !account.has_personal_account() {
            // A resident-scheme relative has no personal account to receive into.
            return Ok(Err(Refusal::NoPersonalAccount));
        }
        if account.balance.checked_add(prepare.amount_max).is_err() {
            return Ok(Err(Refusal::TransfersNotAccepted));
        }
        Ok(Ok(()))
    }

    /// A prepare of a transfer leg (the caller checked that `from` coordinates it).
    pub(crate) fn on_transfer_prepare<V: LedgerView>(
        &self,
        view: &V,
        from: Province,
        prepare: &Prepare,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let leg = &prepare.leg;
        let vote = |effects: &mut Effects, vote: Vote| effects.send(from, PeerMessage::Vote { leg: leg.clone(), vote });
        match self.fence(view, leg)? {
            Some(Fence::Prepared(hold)) => {
                vote(
                    &mut effects,
                    Vote::Yes {
                        held: hold.amount,
                        available_before: hold.available_before,
                    },
                );
                return Ok(effects);
            }
            Some(Fence::Committed { amount, .. } | Fence::Credited { amount, .. }) => {
                effects.send(
                    from,
                    PeerMessage::Ack {
                        leg: leg.clone(),
                        outcome: LegOutcome::Committed { amount },
                    },
                );
                return Ok(effects);
            }
            Some(Fence::Aborted { refusal }) => {
                let reason = refusal.unwrap_or(Refusal::AlreadyAborted);
                vote(&mut effects, Vote::No { reason });
                return Ok(effects);
            }
            None => {}
        }
        let refuse = |effects: &mut Effects, reason: Refusal| {
            if reason != Refusal::NotAuthorized {
                // Remember the refusal so that a retried prepare gets the same answer.
                effects.writes.push(Write::Fence {
                    leg: leg.clone(),
                    expected: None,
                    new: Fence::Aborted { refusal: Some(reason) },
                });
            }
            vote(effects, Vote::No { reason });
        };
        match leg.index {
            TRANSFER_DEBIT_INDEX => {
                let (mut account, usage) = match self.check_transfer_debit(view, from, prepare, now)? {
                    Ok(checked) => checked,
                    Err(reason) => {
                        refuse(&mut effects, reason);
                        return Ok(effects);
                    }
                };
                let available_before = account.available();
                let amount = prepare.amount_max;
                account.hold(amount)?;
                let hold = Hold {
                    account: account.person,
                    binding: prepare.binding,
                    patient: prepare.patient,
                    amount,
                    available_before,
                    month: now.month(),
                    prepared_wall_ms: now.wall_ms,
                    hold_timeout_ms: prepare.hold_timeout_ms,
                };
                effects.writes.push(Write::Account(account));
                effects.writes.push(Write::WalletUsage(usage));
                effects.writes.push(Write::Fence {
                    leg: leg.clone(),
                    expected: None,
                    new: Fence::Prepared(hold),
                });
                effects.writes.push(Write::LiveHold {
                    leg: leg.clone(),
                    live: true,
                });
                effects.timer(
                    now.mono_after(prepare.hold_timeout_ms),
                    TimerKind::HoldDeadline(leg.clone()),
                );
                vote(
                    &mut effects,
                    Vote::Yes {
                        held: amount,
                        available_before,
                    },
                );
            }
            TRANSFER_CREDIT_INDEX => match self.check_transfer_credit(view, from, prepare)? {
                // Nothing is held or written: the receiving side only promises to apply the
                // commit. Its balance is not disclosed to the other province.
                Ok(()) => vote(
                    &mut effects,
                    Vote::Yes {
                        held: prepare.amount_max,
                        available_before: Money::ZERO,
                    },
                ),
                Err(reason) => refuse(&mut effects, reason),
            },
            _ => refuse(&mut effects, Refusal::NotAuthorized),
        }
        Ok(effects)
    }

    /// The grantor's node decided COMMIT with `amount` for a transfer's credit leg: credit the
    /// relative's account, exactly once (the fence records it).
    pub(crate) fn on_transfer_credit_commit<V: LedgerView>(
        &self,
        view: &V,
        from: Province,
        leg: &LegId,
        amount: Money,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let ack = |effects: &mut Effects, outcome: LegOutcome| {
            effects.send(
                from,
                PeerMessage::Ack {
                    leg: leg.clone(),
                    outcome,
                },
            );
        };
        match self.fence(view, leg)? {
            None if amount.is_zero() => {
                effects.writes.push(Write::Fence {
                    leg: leg.clone(),
                    expected: None,
                    new: Fence::Aborted { refusal: None },
                });
                ack(&mut effects, LegOutcome::Aborted);
            }
            None => {
                let Some(mut account) = view.account(&leg.account).map_err(storage)? else {
                    effects.notes.push(Note::ProtocolViolation {
                        from,
                        detail: format!("transfer credit to unknown account on leg {leg}"),
                    });
                    return Ok(effects);
                };
                if account.credit(amount).is_err() {
                    effects.notes.push(Note::ProtocolViolation {
                        from,
                        detail: format!("transfer credit of {amount} on leg {leg} cannot be applied"),
                    });
                    return Ok(effects);
                }
                effects.writes.push(Write::Account(account));
                effects.writes.push(Write::Fence {
                    leg: leg.clone(),
                    expected: None,
                    new: Fence::Credited {
                        account: leg.account,
                        amount,
                    },
                });
                effects.writes.push(Write::Journal(JournalEntry {
                    kind: JournalKind::TransferReceived,
                    wall_ms: now.wall_ms,
                    amount,
                    account: Some(leg.account),
                    leg: Some(leg.clone()),
                    binding: None,
                    settlement: None,
                    counterparty: Some(from),
                    reference: leg.transfer().map(ToString::to_string),
                }));
                ack(&mut effects, LegOutcome::Committed { amount });
            }
            Some(Fence::Credited { amount: credited, .. }) => {
                if credited != amount {
                    effects.notes.push(Note::ProtocolViolation {
                        from,
                        detail: format!("commit of {amount} on leg {leg} already credited with {credited}"),
                    });
                }
                ack(&mut effects, LegOutcome::Committed { amount: credited });
            }
            Some(Fence::Aborted { .. }) => {
                if !amount.is_zero() {
                    effects.notes.push(Note::ProtocolViolation {
                        from,
                        detail: format!("commit of aborted leg {leg}"),
                    });
                }
                ack(&mut effects, LegOutcome::Aborted);
            }
            Some(Fence::Prepared(_) | Fence::Committed { .. }) => {
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("commit of credit leg {leg} in a debit leg's state"),
                });
            }
        }
        Ok(effects)
    }

    /// A transfer's debit hold is released or settled: `released` of it no longer counts. Only
    /// a whole release (an abort) gives the day's transfer back. The day is the hold's own
    /// (a hold counted on a later day after the clock stepped back stays counted: too many,
    /// never too few).
    pub(crate) fn release_wallet<V: LedgerView>(
        &self,
        view: &V,
        hold: &Hold,
        released: Money,
        effects: &mut Effects,
    ) -> Result<(), HandlerError<V::Error>> {
        if released != hold.amount || released.is_zero() {
            return Ok(());
        }
        if let Some(mut usage) = view.wallet_usage(&hold.account).map_err(storage)? {
            if usage.day == CivilDate::of_wall_ms(hold.prepared_wall_ms) && usage.transfers > 0 {
                usage.transfers = usage.transfers.saturating_sub(1);
                effects.writes.push(Write::WalletUsage(usage));
            }
        }
        Ok(())
    }
}
