//! Binding registration across provinces: the grantor's node is the authority; the grantee's
//! node keeps a copy so that its coordinator knows whom to ask.
//!
//! A binding is created `Pending` on the grantor's node and becomes `Active` only when the
//! grantee's node has registered its copy, so no half-binding is ever usable (participants
//! refuse prepares on a pending binding). A revocation takes effect on the grantor's node at
//! once, whatever the state of the grantee's node; the copy learns of it later.

use std::collections::BTreeMap;

use crate::binding::{
    BindRefusal, BindRequest, Binding, BindingStatus, check_bind_at_grantee, check_bind_at_grantor, check_unbind,
};
use crate::config::ProtocolConfig;
use crate::effects::{Effects, Note, ReplyTo, TimerKind};
use crate::error::{ClientError, ErrorKind, HandlerError};
use crate::ids::BindingId;
use crate::ledger::{LedgerView, Write};
use crate::message::{ClientReply, PeerMessage, RefusalCode, Registration};
use crate::money::Money;
use crate::outbox::{AckKey, Deliveries, Pending};
use crate::person::PersonId;
use crate::policy::Policy;
use crate::records::OutboxKey;
use crate::region::Province;
use crate::time::Now;

type Outcome<V> = Result<Effects, HandlerError<<V as LedgerView>::Error>>;

fn storage<E: std::fmt::Debug>(error: E) -> HandlerError<E> {
    HandlerError::Storage(error)
}

/// Turns a policy refusal into the client's error.
pub fn bind_error(refusal: &BindRefusal) -> ClientError {
    let kind = match refusal {
        BindRefusal::GrantorUnknown(_) | BindRefusal::GranteeNotEnrolled(_) | BindRefusal::UnknownBinding(_) => {
            ErrorKind::NotFound
        }
        BindRefusal::Duplicate(_) => ErrorKind::AlreadyExists,
        _ => ErrorKind::FailedPrecondition,
    };
    ClientError::new(kind, refusal.code(), refusal.to_string())
}

fn registration_refusal(refusal: &BindRefusal) -> RefusalCode {
    match refusal {
        BindRefusal::GranteeClosed(_) => RefusalCode::GranteeClosed,
        BindRefusal::TooManyGrantors { .. } => RefusalCode::TooManyGrantors,
        _ => RefusalCode::GranteeNotEnrolled,
    }
}

fn load_bindings<V: LedgerView>(
    view: &V,
    ids: Vec<BindingId>,
    copies: bool,
) -> Result<Vec<Binding>, HandlerError<V::Error>> {
    let mut bindings = Vec::with_capacity(ids.len());
    for id in ids {
        let binding = if copies {
            view.binding_copy(&id)
        } else {
            view.binding(&id)
        }
        .map_err(storage)?;
        bindings.extend(binding);
    }
    Ok(bindings)
}

fn with_id(mut ids: Vec<BindingId>, id: BindingId) -> Vec<BindingId> {
    if !ids.contains(&id) {
        ids.push(id);
    }
    ids
}

/// Binding logic of one node, both as the grantor's and as the grantee's node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bindings {
    province: Province,
    policy: Policy,
    config: ProtocolConfig,
    /// Clients waiting for a registration's outcome.
    waiting: BTreeMap<BindingId, Vec<ReplyTo>>,
    deliveries: Deliveries,
}

impl Bindings {
    pub fn new(province: Province, policy: Policy, config: ProtocolConfig) -> Bindings {
        Bindings {
            province,
            policy,
            config,
            waiting: BTreeMap::new(),
            deliveries: Deliveries::default(),
        }
    }

    /// The grantor's bureau asks to bind (on the grantor's node).
    pub fn on_bind<V: LedgerView>(
        &mut self,
        view: &V,
        reply_to: ReplyTo,
        request: BindRequest,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let grantor = view.account(&request.grantor).map_err(storage)?;
        let grantor_ids = view.bindings_of_grantor(&request.grantor).map_err(storage)?;
        let existing = load_bindings(view, grantor_ids.clone(), false)?;
        if let Err(refusal) = check_bind_at_grantor(&self.policy, &request, grantor.as_ref(), &existing, now.date()) {
            effects.reply(reply_to, ClientReply::Error(bind_error(&refusal)));
            return Ok(effects);
        }
        let serial = view.binding_serial().map_err(storage)?.saturating_add(1);
        let id = BindingId::new(self.province, serial);
        let mut binding = Binding {
            id,
            grantor: request.grantor,
            grantor_province: self.province,
            grantee: request.grantee,
            grantee_province: request.grantee_province,
            relation: request.relation,
            kind: request.kind,
            position: 0,
            limits: request.limits,
            evidence: request.evidence,
            created_wall_ms: now.wall_ms,
            status: BindingStatus::Pending,
            usage_month: now.month(),
            usage_in_month: Money::ZERO,
        };
        effects.writes.push(Write::BindingSerial(serial));
        effects.writes.push(Write::GrantorIndex {
            person: request.grantor,
            bindings: with_id(grantor_ids, id),
        });
        if binding.grantee_province == self.province {
            // Both persons are ours: register the copy in the same atomic write.
            let grantee = view.account(&binding.grantee).map_err(storage)?;
            let grantee_ids = view.bindings_of_grantee(&binding.grantee).map_err(storage)?;
            let copies = load_bindings(view, grantee_ids.clone(), true)?;
            match check_bind_at_grantee(&self.policy, &binding, grantee.as_ref(), &copies) {
                Ok(()) => {
                    binding.status = BindingStatus::Active;
                    effects.writes.push(Write::BindingCopy(binding.clone()));
                    effects.writes.push(Write::GranteeIndex {
                        person: binding.grantee,
                        bindings: with_id(grantee_ids, id),
                    });
                    effects.writes.push(Write::Binding(binding));
                    effects.reply(
                        reply_to,
                        ClientReply::Bound {
                            binding: id,
                            status: BindingStatus::Active,
                        },
                    );
                }
                Err(refusal) => {
                    // Nothing is kept of a binding refused on the spot.
                    effects.writes.clear();
                    effects.reply(reply_to, ClientReply::Error(bind_error(&refusal)));
                }
            }
            return Ok(effects);
        }
        let key = OutboxKey::Registration(id);
        effects.writes.push(Write::Binding(binding.clone()));
        effects.writes.push(Write::Outbox {
            key: key.clone(),
            live: true,
        });
        let pending = vec![Pending {
            ack: AckKey::Binding(id),
            to: binding.grantee_province,
            message: PeerMessage::RegisterBinding(binding),
        }];
        self.deliveries.start(key, pending, &self.config, now, &mut effects);
        self.waiting.entry(id).or_default().push(reply_to);
        effects.timer(now.mono_after(self.config.bind_wait_ms), TimerKind::BindWait(id));
        Ok(effects)
    }

    /// The grantee's node registers its copy of a binding made on `from`'s node.
    pub fn on_register<V: LedgerView>(&mut self, view: &V, from: Province, binding: &Binding, _now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        let reply = |registration| PeerMessage::Registered {
            binding: binding.id,
            registration,
        };
        if binding.id.province != from || binding.grantor_province != from || binding.grantee_province != self.province
        {
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("registration of foreign binding {}", binding.id),
            });
            effects.send(
                from,
                reply(Registration::Refused {
                    code: RefusalCode::Malformed,
                }),
            );
            return Ok(effects);
        }
        if view.binding_copy(&binding.id).map_err(storage)?.is_some() {
            effects.send(from, reply(Registration::Accepted));
            return Ok(effects);
        }
        let grantee = view.account(&binding.grantee).map_err(storage)?;
        let grantee_ids = view.bindings_of_grantee(&binding.grantee).map_err(storage)?;
        let copies = load_bindings(view, grantee_ids.clone(), true)?;
        match check_bind_at_grantee(&self.policy, binding, grantee.as_ref(), &copies) {
            Ok(()) => {
                let mut copy = binding.clone();
                copy.status = BindingStatus::Active;
                effects.writes.push(Write::BindingCopy(copy));
                effects.writes.push(Write::GranteeIndex {
                    person: binding.grantee,
                    bindings: with_id(grantee_ids, binding.id),
                });
                effects.send(from, reply(Registration::Accepted));
            }
            Err(refusal) => {
                effects.send(
                    from,
                    reply(Registration::Refused {
                        code: registration_refusal(&refusal),
                    }),
                );
            }
        }
        Ok(effects)
    }

    /// The grantor's node learns the outcome of a registration.
    pub fn on_registered<V: LedgerView>(
        &mut self,
        view: &V,
        from: Province,
        id: BindingId,
        registration: Registration,
        _now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let key = OutboxKey::Registration(id);
        if self.deliveries.ack(&key, &AckKey::Binding(id), from) == Some(true) {
            effects.writes.push(Write::Outbox { key, live: false });
        }
        let Some(mut binding) = view.binding(&id).map_err(storage)? else {
            return Ok(effects);
        };
        if binding.status != BindingStatus::Pending || binding.grantee_province != from {
            return Ok(effects);
        }
        let reply = match registration {
            Registration::Accepted => {
                binding.status = BindingStatus::Active;
                ClientReply::Bound {
                    binding: id,
                    status: BindingStatus::Active,
                }
            }
            Registration::Refused { code } => {
                binding.status = BindingStatus::Refused;
                ClientReply::Error(ClientError::precondition(
                    code.code(),
                    format!("the grantee's node refused binding {id}: {}", code.code()),
                ))
            }
        };
        effects.writes.push(Write::Binding(binding));
        for waiter in self.waiting.remove(&id).unwrap_or_default() {
            effects.reply(waiter, reply.clone());
        }
        Ok(effects)
    }

    /// The grantor's bureau unbinds. Effective at once on this (the authoritative) node.
    pub fn on_unbind<V: LedgerView>(&mut self, view: &V, reply_to: ReplyTo, id: BindingId, now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        let Some(mut binding) = view.binding(&id).map_err(storage)? else {
            effects.reply(
                reply_to,
                ClientReply::Error(bind_error(&BindRefusal::UnknownBinding(id))),
            );
            return Ok(effects);
        };
        if let Err(refusal) = check_unbind(&self.policy, &binding, now.date()) {
            effects.reply(reply_to, ClientReply::Error(bind_error(&refusal)));
            return Ok(effects);
        }
        let at_wall_ms = now.wall_ms;
        binding.status = BindingStatus::Revoked { at_wall_ms };
        effects.writes.push(Write::Binding(binding.clone()));
        let registration = OutboxKey::Registration(id);
        if self.deliveries.cancel(&registration) {
            effects.writes.push(Write::Outbox {
                key: registration,
                live: false,
            });
        }
        if binding.grantee_province == self.province {
            if let Some(mut copy) = view.binding_copy(&id).map_err(storage)? {
                copy.status = binding.status;
                effects.writes.push(Write::BindingCopy(copy));
            }
        } else {
            let key = OutboxKey::Revocation(id);
            effects.writes.push(Write::Outbox {
                key: key.clone(),
                live: true,
            });
            let pending = vec![Pending {
                ack: AckKey::Binding(id),
                to: binding.grantee_province,
                message: PeerMessage::Revoked {
                    binding: id,
                    at_wall_ms,
                },
            }];
            self.deliveries.start(key, pending, &self.config, now, &mut effects);
        }
        for waiter in self.waiting.remove(&id).unwrap_or_default() {
            effects.reply(waiter, ClientReply::Error(bind_error(&BindRefusal::AlreadyRevoked(id))));
        }
        effects.reply(reply_to, ClientReply::Unbound { binding: id });
        Ok(effects)
    }

    /// The family sets the order in which a grantee's grantors pay (on the grantee's node).
    pub fn on_set_order<V: LedgerView>(
        &mut self,
        view: &V,
        reply_to: ReplyTo,
        grantee: PersonId,
        order: Vec<BindingId>,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let refuse = |effects: &mut Effects, error| effects.reply(reply_to, ClientReply::Error(error));
        if order.is_empty() || order.len() > crate::policy::GRANTORS_PER_SETTLEMENT_MAX {
            let max = crate::policy::GRANTORS_PER_SETTLEMENT_MAX;
            refuse(
                &mut effects,
                ClientError::invalid("bad_order", format!("list 1 to {max} bindings")),
            );
            return Ok(effects);
        }
        let mut seen = Vec::with_capacity(order.len());
        for id in &order {
            if seen.contains(id) {
                refuse(
                    &mut effects,
                    ClientError::invalid("bad_order", format!("binding {id} is listed twice")),
                );
                return Ok(effects);
            }
            seen.push(*id);
        }
        let known = view.bindings_of_grantee(&grantee).map_err(storage)?;
        // Every listed binding is checked before anything is written: a refusal changes nothing.
        let mut listed = Vec::with_capacity(order.len());
        for id in &order {
            let copy = if known.contains(id) {
                view.binding_copy(id).map_err(storage)?
            } else {
                None
            };
            let Some(copy) = copy else {
                refuse(
                    &mut effects,
                    ClientError::not_found("unknown_binding", format!("{grantee} has no binding {id} on this node")),
                );
                return Ok(effects);
            };
            listed.push(copy);
        }
        // Bindings the family did not list keep their relative order after the listed ones, so
        // no position is shared and an unlisted grantor never jumps ahead of a listed one.
        let mut unlisted = Vec::new();
        for id in known.iter().filter(|id| !order.contains(id)) {
            if let Some(copy) = view.binding_copy(id).map_err(storage)? {
                unlisted.push(copy);
            }
        }
        unlisted.sort_by_key(|copy| (copy.position, copy.id));
        for (position, mut copy) in listed.into_iter().chain(unlisted).enumerate() {
            copy.position = u32::try_from(position).unwrap_or(u32::MAX).saturating_add(1);
            effects.writes.push(Write::BindingCopy(copy));
        }
        effects.reply(
            reply_to,
            ClientReply::Ordered {
                grantee,
                bindings: order,
            },
        );
        Ok(effects)
    }

    /// The grantor changes a binding's limits (on the grantor's node, which enforces them).
    pub fn on_set_limits<V: LedgerView>(
        &mut self,
        view: &V,
        reply_to: ReplyTo,
        id: BindingId,
        limits: crate::binding::Limits,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let Some(mut binding) = view.binding(&id).map_err(storage)? else {
            effects.reply(
                reply_to,
                ClientReply::Error(bind_error(&BindRefusal::UnknownBinding(id))),
            );
            return Ok(effects);
        };
        if matches!(binding.status, BindingStatus::Revoked { .. }) {
            effects.reply(
                reply_to,
                ClientReply::Error(bind_error(&BindRefusal::AlreadyRevoked(id))),
            );
            return Ok(effects);
        }
        if matches!(limits.per_settlement, Some(l) if l.is_zero()) || matches!(limits.monthly, Some(l) if l.is_zero()) {
            effects.reply(reply_to, ClientReply::Error(bind_error(&BindRefusal::ZeroLimit)));
            return Ok(effects);
        }
        binding.limits = limits;
        effects.writes.push(Write::Binding(binding));
        effects.reply(reply_to, ClientReply::LimitsSet { binding: id, limits });
        Ok(effects)
    }

    /// The grantee's node learns of a revocation.
    pub fn on_revoked<V: LedgerView>(
        &mut self,
        view: &V,
        from: Province,
        id: BindingId,
        at_wall_ms: i64,
        _now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        if id.province != from {
            effects.notes.push(Note::ProtocolViolation {
                from,
                detail: format!("revocation of foreign binding {id}"),
            });
            return Ok(effects);
        }
        if let Some(mut copy) = view.binding_copy(&id).map_err(storage)? {
            if !matches!(copy.status, BindingStatus::Revoked { .. }) {
                copy.status = BindingStatus::Revoked { at_wall_ms };
                effects.writes.push(Write::BindingCopy(copy));
            }
        }
        effects.send(from, PeerMessage::RevocationNoted { binding: id });
        Ok(effects)
    }

    /// The grantee's node noted a revocation.
    pub fn on_revocation_noted<V: LedgerView>(
        &mut self,
        _view: &V,
        from: Province,
        id: BindingId,
        _now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let key = OutboxKey::Revocation(id);
        if self.deliveries.ack(&key, &AckKey::Binding(id), from) == Some(true) {
            effects.writes.push(Write::Outbox { key, live: false });
        }
        Ok(effects)
    }

    pub fn on_timer<V: LedgerView>(&mut self, _view: &V, kind: &TimerKind, now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        match kind {
            TimerKind::BindWait(id) => {
                for waiter in self.waiting.remove(id).unwrap_or_default() {
                    effects.reply(
                        waiter,
                        ClientReply::Bound {
                            binding: *id,
                            status: BindingStatus::Pending,
                        },
                    );
                }
            }
            TimerKind::Resend(key) => self.deliveries.resend(key, &self.config, now, &mut effects),
            TimerKind::HoldDeadline(_) | TimerKind::VoteDeadline { .. } | TimerKind::TransferDeadline(_) => {}
        }
        Ok(effects)
    }

    /// After a restart: re-send registrations and revocations still in the durable outbox.
    pub fn recover<V: LedgerView>(&mut self, view: &V, outbox: &[OutboxKey], now: Now) -> Outcome<V> {
        let mut effects = Effects::default();
        for key in outbox {
            let (id, message) = match key {
                OutboxKey::Registration(id) => match view.binding(id).map_err(storage)? {
                    Some(binding) if binding.status == BindingStatus::Pending => {
                        (*id, PeerMessage::RegisterBinding(binding))
                    }
                    _ => continue,
                },
                OutboxKey::Revocation(id) => match view.binding(id).map_err(storage)? {
                    Some(binding) => match binding.status {
                        BindingStatus::Revoked { at_wall_ms } => (
                            *id,
                            PeerMessage::Revoked {
                                binding: *id,
                                at_wall_ms,
                            },
                        ),
                        _ => continue,
                    },
                    None => continue,
                },
                OutboxKey::Settlement(_) | OutboxKey::Refund { .. } | OutboxKey::Transfer(_) => continue,
            };
            let Some(binding) = view.binding(&id).map_err(storage)? else {
                continue;
            };
            let pending = vec![Pending {
                ack: AckKey::Binding(id),
                to: binding.grantee_province,
                message,
            }];
            self.deliveries
                .start(key.clone(), pending, &self.config, now, &mut effects);
        }
        Ok(effects)
    }

    /// Ids of a person's bindings as grantor (authoritative) and as grantee (copies).
    pub fn of_person<V: LedgerView>(view: &V, person: &PersonId) -> Result<Vec<Binding>, V::Error> {
        let mut all = Vec::new();
        for id in view.bindings_of_grantor(person)? {
            all.extend(view.binding(&id)?);
        }
        for id in view.bindings_of_grantee(person)? {
            if !all.iter().any(|b: &Binding| b.id == id) {
                all.extend(view.binding_copy(&id)?);
            }
        }
        Ok(all)
    }
}
