//! The participant: the node that owns an account decides every hold, debit and credit on it.
//!
//! It is the authority over its accounts and bindings: it checks the binding, the limits, the
//! card and the balance, holds, votes, and turns the hold into a debit or releases it when the
//! coordinator says so. A hold it voted yes on is never released on its own: past its deadline
//! the participant asks the coordinator until it gets an answer.

use crate::binding::Binding;
use crate::config::ProtocolConfig;
use crate::effects::{Effects, Note, TimerKind};
use crate::error::HandlerError;
use crate::ids::{BindingId, LegId, LegScope, TRANSFER_CREDIT_INDEX};
use crate::ledger::{LedgerView, Write};
use crate::message::{LegOutcome, PeerMessage, Prepare, Vote};
use crate::money::Money;
use crate::person::PersonId;
use crate::policy::{GRANTORS_PER_SETTLEMENT_MAX, WalletPolicy};
use crate::reason::Refusal;
use crate::records::{Fence, Hold, JournalEntry, JournalKind};
use crate::region::Province;
use crate::time::{Now, YearMonth};

type Outcome<V> = Result<Effects, HandlerError<<V as LedgerView>::Error>>;

/// A prepare that passed every check: the account, its binding (none for the own account)
/// and the amount to hold.
type Checked = (crate::account::Account, Option<Binding>, Money);

/// Most prepare rounds a coordinator may run (`ProtocolConfig::validate` refuses more).
const ROUNDS_MAX: u16 = 4;

/// The highest leg index a settlement attempt can use: the own account and up to
/// `GRANTORS_PER_SETTLEMENT_MAX` grantors in the first round, the same grantors again in each
/// later round. A participant refuses a leg beyond it, because that bound is what lets it find
/// every other leg of the same settlement on an account (see `settlement_use`) by looking each
/// one up, without an index by settlement.
pub const LEG_INDEX_MAX: u16 = ROUNDS_MAX * GRANTORS_PER_SETTLEMENT_MAX as u16;

/// The calendar month a new hold on `binding` counts in: this node's month, or the binding's
/// counting month if that is later. The wall clock may step back (an NTP correction); the
/// binding keeps one month's count, so moving back to the earlier month and forward again
/// would restart the later month from zero and let it pay its limit twice.
fn counting_month(binding: &Binding, now: Now) -> YearMonth {
    now.month().max(binding.usage_month)
}

/// Participant logic for one node. Stateless: everything it knows is in the ledger.
#[derive(Clone, Copy, Debug)]
pub struct Participant<'a> {
    pub province: Province,
    pub config: &'a ProtocolConfig,
    /// This province's wallet transfer policy (`transfer.rs`).
    pub wallet: &'a WalletPolicy,
}

fn storage<E: std::fmt::Debug>(error: E) -> HandlerError<E> {
    HandlerError::Storage(error)
}

impl Participant<'_> {
    pub(crate) fn fence<V: LedgerView>(&self, view: &V, leg: &LegId) -> Result<Option<Fence>, HandlerError<V::Error>> {
        if !self.config.safeguards.fence {
            // Mutation: behave as if no fence had ever been written, except for a live hold,
            // which the hold itself still needs to be released.
            return match view.fence(leg).map_err(storage)? {
                Some(fence @ Fence::Prepared(_)) => Ok(Some(fence)),
                _ => Ok(None),
            };
        }
        view.fence(leg).map_err(storage)
    }

    /// What the other legs of `leg`'s settlement attempt hold or committed on `binding`.
    ///
    /// They are the legs with the same coordinator, scope and account and another index (the
    /// binding's grantor is the leg's account, so all of them route to this actor: the sum
    /// cannot change under us). A hold counts until it is released or turned into a debit, a
    /// debit counts what it took; so whatever order prepares, duplicates, commits and aborts
    /// arrive in, holds plus debits of one settlement on one binding never exceed the limit.
    /// Other attempts of the same settlement id are not counted: a coordinator that restarted
    /// before deciding presumes abort for its old attempt, so only one attempt ever commits.
    fn settlement_use<V: LedgerView>(
        &self,
        view: &V,
        leg: &LegId,
        binding: BindingId,
    ) -> Result<Money, HandlerError<V::Error>> {
        let mut used = Money::ZERO;
        for index in (0..=LEG_INDEX_MAX).filter(|&i| i != leg.index) {
            let sibling = LegId { index, ..leg.clone() };
            let amount = match view.fence(&sibling).map_err(storage)? {
                Some(Fence::Prepared(hold)) if hold.binding == Some(binding) => hold.amount,
                Some(Fence::Committed {
                    binding: Some(b),
                    amount,
                    ..
                }) if b == binding => amount,
                _ => Money::ZERO,
            };
            used = used.checked_add(amount)?;
        }
        Ok(used)
    }

    /// Checks a prepare against the authority rules; `Err` is the refusal to vote.
    fn check_prepare<V: LedgerView>(
        &self,
        view: &V,
        from: Province,
        prepare: &Prepare,
        now: Now,
    ) -> Result<Result<Checked, Refusal>, HandlerError<V::Error>> {
        if prepare.leg.index > LEG_INDEX_MAX {
            // No coordinator within the protocol's bounds makes such a leg, and holding on it
            // would escape the per-settlement count.
            return Ok(Err(Refusal::NotAuthorized));
        }
        let Some(account) = view.account(&prepare.leg.account).map_err(storage)? else {
            return Ok(Err(Refusal::UnknownAccount));
        };
        let binding = match prepare.binding {
            None => {
                // The own account may be drawn only by this province's coordinator, for its owner.
                if from != self.province || prepare.leg.account != prepare.patient {
                    return Ok(Err(Refusal::NotAuthorized));
                }
                None
            }
            Some(id) => {
                let Some(binding) = view.binding(&id).map_err(storage)? else {
                    return Ok(Err(Refusal::UnknownBinding));
                };
                if binding.grantor != prepare.leg.account || binding.grantee != prepare.patient {
                    return Ok(Err(Refusal::GranteeMismatch));
                }
                // A peer coordinates only for bindings whose grantee is in its own province.
                if binding.grantee_province != from {
                    return Ok(Err(Refusal::NotAuthorized));
                }
                if let Some(refusal) = binding.money_refusal() {
                    return Ok(Err(refusal));
                }
                Some(binding)
            }
        };
        if let Some(refusal) = account.payment_refusal() {
            return Ok(Err(refusal));
        }
        let available = account.available();
        let mut amount = prepare.amount_max.min(available);
        let mut limited = false;
        if let Some(binding) = &binding {
            if let Some(limit) = binding.limits.per_settlement {
                // The limit is per settlement, not per leg: a later round may ask the same
                // binding again, so what this settlement already holds or took counts.
                let left = limit.saturating_sub(self.settlement_use(view, &prepare.leg, binding.id)?);
                limited |= left < amount;
                amount = amount.min(left);
            }
            if let Some(remaining) = binding.monthly_remaining(counting_month(binding, now)) {
                limited |= remaining < amount;
                amount = amount.min(remaining);
            }
        }
        if amount.is_zero() {
            let reason = if limited {
                Refusal::LimitReached
            } else {
                Refusal::InsufficientBalance
            };
            return Ok(Err(reason));
        }
        Ok(Ok((account, binding, amount)))
    }

    /// A coordinator asks to hold up to `amount_max` for a leg.
    pub fn on_prepare<V: LedgerView>(&self, view: &V, from: Province, prepare: &Prepare, now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        let leg = &prepare.leg;
        if leg.coordinator != from {
            // Only the coordinator named in the leg may prepare it; nothing is written.
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("prepare of foreign leg {leg}"),
            });
            effects.send(
                from,
                PeerMessage::Vote {
                    leg: leg.clone(),
                    vote: Vote::No {
                        reason: Refusal::NotAuthorized,
                    },
                },
            );
            return Ok(effects);
        }
        if leg.transfer().is_some() {
            return self.on_transfer_prepare(view, from, prepare, now);
        }
        match self.fence(view, leg)? {
            Some(Fence::Prepared(hold)) => {
                // A duplicate: the same vote again.
                let vote = Vote::Yes {
                    held: hold.amount,
                    available_before: hold.available_before,
                };
                effects.send(from, PeerMessage::Vote { leg: leg.clone(), vote });
                return Ok(effects);
            }
            Some(Fence::Committed { amount, .. }) => {
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
                effects.send(
                    from,
                    PeerMessage::Vote {
                        leg: leg.clone(),
                        vote: Vote::No { reason },
                    },
                );
                return Ok(effects);
            }
            Some(Fence::Credited { .. }) => {
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("prepare of credit leg {leg}"),
                });
                return Ok(effects);
            }
            None => {}
        }
        let (mut account, binding, amount) = match self.check_prepare(view, from, prepare, now)? {
            Ok(checked) => checked,
            Err(reason) => {
                if reason != Refusal::NotAuthorized {
                    // Remember the refusal so that a retried prepare gets the same answer.
                    effects.writes.push(Write::Fence {
                        leg: leg.clone(),
                        expected: None,
                        new: Fence::Aborted { refusal: Some(reason) },
                    });
                }
                effects.send(
                    from,
                    PeerMessage::Vote {
                        leg: leg.clone(),
                        vote: Vote::No { reason },
                    },
                );
                return Ok(effects);
            }
        };
        let available_before = account.available();
        account.hold(amount)?;
        let mut month = now.month();
        if let Some(mut binding) = binding {
            month = counting_month(&binding, now);
            if binding.usage_month != month {
                binding.usage_month = month;
                binding.usage_in_month = Money::ZERO;
            }
            binding.usage_in_month = binding.usage_in_month.checked_add(amount)?;
            effects.writes.push(Write::Binding(binding));
        }
        let hold = Hold {
            account: account.person,
            binding: prepare.binding,
            patient: prepare.patient,
            amount,
            available_before,
            month,
            prepared_wall_ms: now.wall_ms,
            hold_timeout_ms: prepare.hold_timeout_ms,
        };
        effects.writes.push(Write::Account(account));
        effects.writes.push(Write::Fence {
            leg: leg.clone(),
            expected: None,
            new: Fence::Prepared(hold),
        });
        effects.writes.push(Write::LiveHold {
            leg: leg.clone(),
            live: true,
        });
        // The deadline is a duration from this node's own receipt of the prepare.
        effects.timer(
            now.mono_after(prepare.hold_timeout_ms),
            TimerKind::HoldDeadline(leg.clone()),
        );
        effects.send(
            from,
            PeerMessage::Vote {
                leg: leg.clone(),
                vote: Vote::Yes {
                    held: amount,
                    available_before,
                },
            },
        );
        Ok(effects)
    }

    /// Undoes a hold's share of the binding's monthly usage (the part not debited); for a
    /// transfer's hold, which never counted on the binding, its share of the day's transfers.
    fn release_usage<V: LedgerView>(
        &self,
        view: &V,
        leg: &LegId,
        hold: &Hold,
        released: Money,
        effects: &mut Effects,
    ) -> Result<(), HandlerError<V::Error>> {
        if leg.transfer().is_some() {
            return self.release_wallet(view, hold, released, effects);
        }
        let Some(id) = hold.binding else {
            return Ok(());
        };
        if released.is_zero() {
            return Ok(());
        }
        if let Some(mut binding) = view.binding(&id).map_err(storage)? {
            if binding.usage_month == hold.month {
                binding.usage_in_month = binding.usage_in_month.saturating_sub(released);
                effects.writes.push(Write::Binding(binding));
            }
        }
        Ok(())
    }

    fn account_of<V: LedgerView>(
        &self,
        view: &V,
        person: &PersonId,
    ) -> Result<crate::account::Account, HandlerError<V::Error>> {
        view.account(person)
            .map_err(storage)?
            .ok_or_else(|| HandlerError::Invariant(format!("account {person} of a live fence is missing")))
    }

    /// The coordinator decided COMMIT with `amount` (at most the held amount) for this leg.
    pub fn on_commit<V: LedgerView>(
        &self,
        view: &V,
        from: Province,
        leg: &LegId,
        amount: Money,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        if leg.coordinator != from {
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("commit of foreign leg {leg}"),
            });
            return Ok(effects);
        }
        if leg.transfer().is_some() && leg.index == TRANSFER_CREDIT_INDEX {
            return self.on_transfer_credit_commit(view, from, leg, amount, now);
        }
        match self.fence(view, leg)? {
            Some(Fence::Prepared(hold)) => {
                if amount > hold.amount {
                    effects.notes.push(Note::ProtocolViolation {
                        from,
                        detail: format!("commit of {amount} on leg {leg} exceeds the {} held", hold.amount),
                    });
                    return Ok(effects);
                }
                let mut account = self.account_of(view, &hold.account)?;
                account.settle_hold(hold.amount, amount)?;
                self.release_usage(view, leg, &hold, hold.amount.checked_sub(amount)?, &mut effects)?;
                effects.writes.push(Write::Account(account));
                effects.writes.push(Write::Fence {
                    leg: leg.clone(),
                    expected: Some(Fence::Prepared(hold.clone())),
                    new: if amount.is_zero() {
                        Fence::Aborted { refusal: None }
                    } else {
                        Fence::Committed {
                            account: hold.account,
                            binding: hold.binding,
                            amount,
                            refunded: Money::ZERO,
                        }
                    },
                });
                effects.writes.push(Write::LiveHold {
                    leg: leg.clone(),
                    live: false,
                });
                effects.cancel_timer(TimerKind::HoldDeadline(leg.clone()));
                if !amount.is_zero() {
                    effects.writes.push(Write::Journal(JournalEntry {
                        kind: JournalKind::Debit,
                        wall_ms: now.wall_ms,
                        amount,
                        account: Some(hold.account),
                        leg: Some(leg.clone()),
                        binding: hold.binding,
                        settlement: leg.settlement_id().cloned(),
                        counterparty: Some(from),
                        // A transfer's debit names the transfer.
                        reference: leg.transfer().map(ToString::to_string),
                    }));
                }
                effects.notes.push(Note::HoldResolved {
                    leg: leg.clone(),
                    committed: !amount.is_zero(),
                });
                let outcome = if amount.is_zero() {
                    LegOutcome::Aborted
                } else {
                    LegOutcome::Committed { amount }
                };
                effects.send(
                    from,
                    PeerMessage::Ack {
                        leg: leg.clone(),
                        outcome,
                    },
                );
            }
            Some(Fence::Committed { amount: committed, .. }) => {
                if committed != amount {
                    effects.notes.push(Note::ProtocolViolation {
                        from,
                        detail: format!("commit of {amount} on leg {leg} already committed with {committed}"),
                    });
                }
                effects.send(
                    from,
                    PeerMessage::Ack {
                        leg: leg.clone(),
                        outcome: LegOutcome::Committed { amount: committed },
                    },
                );
            }
            Some(Fence::Aborted { .. }) => {
                if !amount.is_zero() {
                    effects.notes.push(Note::ProtocolViolation {
                        from,
                        detail: format!("commit of aborted leg {leg}"),
                    });
                }
                effects.send(
                    from,
                    PeerMessage::Ack {
                        leg: leg.clone(),
                        outcome: LegOutcome::Aborted,
                    },
                );
            }
            Some(Fence::Credited { .. }) | None => {
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("commit of unknown leg {leg}"),
                });
            }
        }
        Ok(effects)
    }

    /// The coordinator decided ABORT for this leg (or never got its vote in time).
    pub fn on_abort<V: LedgerView>(&self, view: &V, from: Province, leg: &LegId, _now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        if leg.coordinator != from {
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("abort of foreign leg {leg}"),
            });
            return Ok(effects);
        }
        match self.fence(view, leg)? {
            None => {
                // Empty rollback: the abort overtook the prepare. The fence refuses it later.
                if self.config.safeguards.fence {
                    effects.writes.push(Write::Fence {
                        leg: leg.clone(),
                        expected: None,
                        new: Fence::Aborted { refusal: None },
                    });
                }
                effects.send(
                    from,
                    PeerMessage::Ack {
                        leg: leg.clone(),
                        outcome: LegOutcome::Aborted,
                    },
                );
            }
            Some(Fence::Prepared(hold)) => {
                self.release(view, leg, &hold, &mut effects)?;
                effects.send(
                    from,
                    PeerMessage::Ack {
                        leg: leg.clone(),
                        outcome: LegOutcome::Aborted,
                    },
                );
            }
            Some(Fence::Aborted { .. }) => {
                effects.send(
                    from,
                    PeerMessage::Ack {
                        leg: leg.clone(),
                        outcome: LegOutcome::Aborted,
                    },
                );
            }
            Some(Fence::Committed { amount, .. }) => {
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("abort of committed leg {leg}"),
                });
                effects.send(
                    from,
                    PeerMessage::Ack {
                        leg: leg.clone(),
                        outcome: LegOutcome::Committed { amount },
                    },
                );
            }
            Some(Fence::Credited { .. }) => {
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("abort of credit leg {leg}"),
                });
            }
        }
        Ok(effects)
    }

    fn release<V: LedgerView>(
        &self,
        view: &V,
        leg: &LegId,
        hold: &Hold,
        effects: &mut Effects,
    ) -> Result<(), HandlerError<V::Error>> {
        let mut account = self.account_of(view, &hold.account)?;
        account.release(hold.amount)?;
        self.release_usage(view, leg, hold, hold.amount, effects)?;
        effects.writes.push(Write::Account(account));
        effects.writes.push(Write::Fence {
            leg: leg.clone(),
            expected: Some(Fence::Prepared(hold.clone())),
            new: Fence::Aborted { refusal: None },
        });
        effects.writes.push(Write::LiveHold {
            leg: leg.clone(),
            live: false,
        });
        effects.cancel_timer(TimerKind::HoldDeadline(leg.clone()));
        effects.notes.push(Note::HoldResolved {
            leg: leg.clone(),
            committed: false,
        });
        Ok(())
    }

    /// A refund credits `amount` back along `original`, a leg this node committed.
    pub fn on_credit<V: LedgerView>(
        &self,
        view: &V,
        from: Province,
        leg: &LegId,
        original: &LegId,
        amount: Money,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        if leg.coordinator != from || original.coordinator != from {
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("credit of foreign leg {leg}"),
            });
            return Ok(effects);
        }
        if !matches!(leg.scope, LegScope::Refund { .. }) || !matches!(original.scope, LegScope::Pay { .. }) {
            // Refunds credit back along a settlement's payment legs only (not transfers).
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("credit of {leg} along {original}: not a refund of a payment"),
            });
            return Ok(effects);
        }
        match self.fence(view, leg)? {
            Some(Fence::Credited { amount: credited, .. }) => {
                effects.send(
                    from,
                    PeerMessage::Ack {
                        leg: leg.clone(),
                        outcome: LegOutcome::Credited { amount: credited },
                    },
                );
                return Ok(effects);
            }
            Some(_) => {
                effects.notes.push(Note::ProtocolViolation {
                    from,
                    detail: format!("credit on non-credit leg {leg}"),
                });
                return Ok(effects);
            }
            None => {}
        }
        // A refund never returns more along a leg than the leg debited: checked here, at the
        // authority over the account, not only at the coordinator.
        let original_fence = view.fence(original).map_err(storage)?;
        if matches!(original_fence, Some(Fence::Prepared(_))) {
            // The refund overtook the original leg's commit (the coordinator answers the
            // hospital before its commits arrive). Not yet: no ack, so the coordinator sends
            // the credit again and it applies once the commit has landed.
            return Ok(effects);
        }
        let Some(Fence::Committed {
            account,
            binding,
            amount: paid,
            refunded,
        }) = original_fence.clone()
        else {
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("credit along uncommitted leg {original}"),
            });
            return Ok(effects);
        };
        let refunded_after = refunded.checked_add(amount)?;
        if account != leg.account || original.account != leg.account || refunded_after > paid || amount.is_zero() {
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("credit of {amount} along {original} exceeds the {paid} paid (refunded {refunded})"),
            });
            return Ok(effects);
        }
        let mut target = self.account_of(view, &account)?;
        target.credit(amount)?;
        effects.writes.push(Write::Account(target));
        effects.writes.push(Write::Fence {
            leg: original.clone(),
            expected: original_fence,
            new: Fence::Committed {
                account,
                binding,
                amount: paid,
                refunded: refunded_after,
            },
        });
        effects.writes.push(Write::Fence {
            leg: leg.clone(),
            expected: None,
            new: Fence::Credited { account, amount },
        });
        effects.writes.push(Write::Journal(JournalEntry {
            kind: JournalKind::RefundCredit,
            wall_ms: now.wall_ms,
            amount,
            account: Some(account),
            leg: Some(leg.clone()),
            binding,
            settlement: Some(original.settlement().clone()),
            counterparty: Some(from),
            reference: None,
        }));
        effects.send(
            from,
            PeerMessage::Ack {
                leg: leg.clone(),
                outcome: LegOutcome::Credited { amount },
            },
        );
        Ok(effects)
    }

    /// A hold's deadline passed: ask the coordinator (never release on our own).
    pub fn on_hold_deadline<V: LedgerView>(&self, view: &V, leg: &LegId, now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        let Some(Fence::Prepared(hold)) = view.fence(leg).map_err(storage)? else {
            return Ok(effects);
        };
        if !self.config.safeguards.ask_before_release {
            // Mutation: give up on the coordinator and release. Breaks atomicity.
            self.release(view, leg, &hold, &mut effects)?;
            return Ok(effects);
        }
        effects.send(leg.coordinator, PeerMessage::Query { leg: leg.clone() });
        effects.timer(
            now.mono_after(self.config.query_retry_ms),
            TimerKind::HoldDeadline(leg.clone()),
        );
        Ok(effects)
    }

    /// After a restart: every live hold asks its coordinator soon (its old timer is gone).
    pub fn recover_hold(&self, leg: &LegId, now: Now) -> Effects {
        let mut effects = Effects::default();
        effects.timer(
            now.mono_after(self.config.recovery_query_delay_ms),
            TimerKind::HoldDeadline(leg.clone()),
        );
        effects
    }
}
