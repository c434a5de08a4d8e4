//! One province node's whole logic behind a single entry point: events in, effects out.
//!
//! The simulator and the model checker drive this directly; the real node may split the same
//! parts across actors (participant work by account shard, coordinator work by settlement),
//! since [`route`] says which part owns each input.

use serde::{Deserialize, Serialize};

use crate::accounts::Accounts;
use crate::bindings::Bindings;
use crate::config::ProtocolConfig;
use crate::coordinator::Coordinator;
use crate::effects::{Effects, ReplyTo, TimerKind};
use crate::error::HandlerError;
use crate::ids::LegId;
use crate::ledger::LedgerView;
use crate::message::{ClientRequest, PeerMessage};
use crate::participant::Participant;
use crate::policy::{Policy, WalletPolicy};
use crate::records::OutboxKey;
use crate::region::Province;
use crate::time::Now;
use crate::transfer::Transfers;

/// Something that happens to a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Input {
    Client { reply_to: ReplyTo, request: ClientRequest },
    Peer { from: Province, message: PeerMessage },
    Timer(TimerKind),
}

/// Which part of a node handles an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// Account-owning work: prepares, commits, aborts, credits, account operations.
    Participant,
    /// Settlement and refund decisions.
    Coordinator,
    /// Binding registration and revocation.
    Bindings,
}

/// Which part owns `input`.
pub fn route(input: &Input) -> Part {
    match input {
        Input::Client { request, .. } => match request {
            ClientRequest::Settle(_)
            | ClientRequest::Refund(_)
            | ClientRequest::Cancel { .. }
            | ClientRequest::Reverse { .. }
            | ClientRequest::Transfer { .. } => Part::Coordinator,
            ClientRequest::SetOrder { .. } | ClientRequest::SetLimits { .. } => Part::Bindings,
            ClientRequest::Bind(_) | ClientRequest::Unbind { .. } => Part::Bindings,
            ClientRequest::OpenAccount { .. }
            | ClientRequest::Credit { .. }
            | ClientRequest::Freeze { .. }
            | ClientRequest::Unfreeze { .. }
            | ClientRequest::Close { .. } => Part::Participant,
        },
        Input::Peer { message, .. } => match message {
            PeerMessage::Prepare(_)
            | PeerMessage::Commit { .. }
            | PeerMessage::Abort { .. }
            | PeerMessage::Credit { .. } => Part::Participant,
            PeerMessage::Vote { .. } | PeerMessage::Ack { .. } | PeerMessage::Query { .. } => Part::Coordinator,
            PeerMessage::RegisterBinding(_)
            | PeerMessage::Registered { .. }
            | PeerMessage::Revoked { .. }
            | PeerMessage::RevocationNoted { .. } => Part::Bindings,
        },
        Input::Timer(kind) => match kind {
            TimerKind::HoldDeadline(_) => Part::Participant,
            TimerKind::VoteDeadline { .. } | TimerKind::TransferDeadline(_) => Part::Coordinator,
            TimerKind::Resend(OutboxKey::Settlement(_) | OutboxKey::Refund { .. } | OutboxKey::Transfer(_)) => {
                Part::Coordinator
            }
            TimerKind::Resend(OutboxKey::Registration(_) | OutboxKey::Revocation(_)) | TimerKind::BindWait(_) => {
                Part::Bindings
            }
        },
    }
}

/// The whole logic of one province node. Volatile state (settlements being decided,
/// deliveries, waiting clients) lives here and is lost in a crash; durable state is the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeCore {
    province: Province,
    config: ProtocolConfig,
    coordinator: Coordinator,
    bindings: Bindings,
    /// Wallet transfers this node coordinates (as the grantors' node).
    transfers: Transfers,
    wallet: WalletPolicy,
}

impl NodeCore {
    /// `incarnation` must be larger than at any earlier start of this node.
    pub fn new(province: Province, policy: Policy, config: ProtocolConfig, incarnation: u32) -> NodeCore {
        NodeCore {
            province,
            coordinator: Coordinator::new(province, incarnation, config.clone(), policy.grantor_order),
            transfers: Transfers::new(province, incarnation, config.clone()),
            wallet: policy.wallet,
            bindings: Bindings::new(province, policy, config.clone()),
            config,
        }
    }

    pub fn province(&self) -> Province {
        self.province
    }

    pub fn config(&self) -> &ProtocolConfig {
        &self.config
    }

    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    pub fn transfers(&self) -> &Transfers {
        &self.transfers
    }

    fn participant(&self) -> Participant<'_> {
        Participant {
            province: self.province,
            config: &self.config,
            wallet: &self.wallet,
        }
    }

    /// Handles one input. The caller applies `writes` atomically and durably before it lets any
    /// send or reply leave, and applies them before it handles the next input.
    ///
    /// A handler that writes also carries the removal of outbox items the coordinator saw
    /// fully acknowledged since its last write (`Coordinator::on_ack`).
    pub fn handle<V: LedgerView>(
        &mut self,
        view: &V,
        input: Input,
        now: Now,
    ) -> Result<Effects, HandlerError<V::Error>> {
        let mut effects = self.handle_input(view, input, now)?;
        if !effects.writes.is_empty() {
            self.coordinator.write_delivered(&mut effects);
        }
        Ok(effects)
    }

    fn handle_input<V: LedgerView>(
        &mut self,
        view: &V,
        input: Input,
        now: Now,
    ) -> Result<Effects, HandlerError<V::Error>> {
        let accounts = Accounts {
            province: self.province,
        };
        match input {
            Input::Client { reply_to, request } => match request {
                ClientRequest::Settle(request) => self.coordinator.on_settle(view, reply_to, request, now),
                ClientRequest::Refund(request) => self.coordinator.on_refund(view, reply_to, request, now),
                ClientRequest::Cancel { settlement } => self.coordinator.on_cancel(view, reply_to, settlement, now),
                ClientRequest::Reverse { message } => self.coordinator.on_reverse(view, reply_to, message, now),
                ClientRequest::SetOrder { grantee, bindings } => {
                    self.bindings.on_set_order(view, reply_to, grantee, bindings)
                }
                ClientRequest::SetLimits { binding, limits } => {
                    self.bindings.on_set_limits(view, reply_to, binding, limits)
                }
                ClientRequest::Bind(request) => self.bindings.on_bind(view, reply_to, request, now),
                ClientRequest::Unbind { binding } => self.bindings.on_unbind(view, reply_to, binding, now),
                ClientRequest::OpenAccount {
                    person,
                    name,
                    scheme,
                    balance,
                } => accounts.open(view, reply_to, person, name, scheme, balance, now),
                ClientRequest::Credit { credit, person, amount } => {
                    accounts.credit(view, reply_to, credit, person, amount, now)
                }
                ClientRequest::Freeze { person, reason } => {
                    accounts.set_frozen(view, reply_to, person, true, Some(reason))
                }
                ClientRequest::Unfreeze { person } => accounts.set_frozen(view, reply_to, person, false, None),
                ClientRequest::Close { person } => accounts.close(view, reply_to, person),
                ClientRequest::Transfer {
                    transfer,
                    grantor,
                    binding,
                    amount,
                } => {
                    let request = crate::records::TransferRequest {
                        transfer,
                        grantor,
                        binding,
                        amount,
                    };
                    self.transfers.on_transfer(view, reply_to, request, now)
                }
            },
            Input::Peer { from, message } => self.on_peer(view, from, message, now),
            Input::Timer(kind) => match route(&Input::Timer(kind.clone())) {
                Part::Participant => match &kind {
                    TimerKind::HoldDeadline(leg) => self.participant().on_hold_deadline(view, leg, now),
                    _ => Ok(Effects::default()),
                },
                Part::Coordinator => match &kind {
                    TimerKind::TransferDeadline(_) | TimerKind::Resend(OutboxKey::Transfer(_)) => {
                        self.transfers.on_timer(view, &kind, now)
                    }
                    _ => self.coordinator.on_timer(view, &kind, now),
                },
                Part::Bindings => self.bindings.on_timer(view, &kind, now),
            },
        }
    }

    fn on_peer<V: LedgerView>(
        &mut self,
        view: &V,
        from: Province,
        message: PeerMessage,
        now: Now,
    ) -> Result<Effects, HandlerError<V::Error>> {
        let participant = self.participant();
        match message {
            PeerMessage::Prepare(prepare) => participant.on_prepare(view, from, &prepare, now),
            PeerMessage::Commit { leg, amount } => participant.on_commit(view, from, &leg, amount, now),
            PeerMessage::Abort { leg } => participant.on_abort(view, from, &leg, now),
            PeerMessage::Credit { leg, original, amount } => {
                participant.on_credit(view, from, &leg, &original, amount, now)
            }
            PeerMessage::Vote { leg, vote } if leg.transfer().is_some() => {
                self.transfers.on_vote(view, from, &leg, vote, now)
            }
            PeerMessage::Ack { leg, outcome } if leg.transfer().is_some() => {
                self.transfers.on_ack(view, from, &leg, outcome, now)
            }
            PeerMessage::Query { leg } if leg.transfer().is_some() => self.transfers.on_query(view, from, &leg, now),
            PeerMessage::Vote { leg, vote } => self.coordinator.on_vote(view, from, &leg, vote, now),
            PeerMessage::Ack { leg, outcome } => self.coordinator.on_ack(view, from, &leg, outcome, now),
            PeerMessage::Query { leg } => self.coordinator.on_query(view, from, &leg, now),
            PeerMessage::RegisterBinding(binding) => self.bindings.on_register(view, from, &binding, now),
            PeerMessage::Registered { binding, registration } => {
                self.bindings.on_registered(view, from, binding, registration, now)
            }
            PeerMessage::Revoked { binding, at_wall_ms } => {
                self.bindings.on_revoked(view, from, binding, at_wall_ms, now)
            }
            PeerMessage::RevocationNoted { binding } => self.bindings.on_revocation_noted(view, from, binding, now),
        }
    }

    /// After a restart (with a new incarnation): live holds ask their coordinators, and the
    /// outbox is delivered again.
    pub fn recover<V: LedgerView>(
        &mut self,
        view: &V,
        live_holds: &[LegId],
        outbox: &[OutboxKey],
        now: Now,
    ) -> Result<Effects, HandlerError<V::Error>> {
        let mut effects = Effects::default();
        for leg in live_holds {
            effects.extend(self.participant().recover_hold(leg, now));
        }
        effects.extend(self.coordinator.recover(view, outbox, now)?);
        effects.extend(self.transfers.recover(view, outbox, now)?);
        effects.extend(self.bindings.recover(view, outbox, now)?);
        Ok(effects)
    }
}
