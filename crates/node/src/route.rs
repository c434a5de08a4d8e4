//! Which actor owns an input: account shards by person, coordinator shards by settlement id
//! (and wallet transfers by transfer id).
//!
//! Routing only picks a mailbox; it decides nothing. Every leg id names its account, so all
//! messages about one account reach the one actor that may change it, and all messages about
//! one settlement (refunds included) or one transfer reach the one coordinator that holds its
//! state.

use exchange_core::message::{ClientRequest, PeerMessage};
use exchange_core::node::Input;
use exchange_core::{LedgerView, LegId, PersonId, SettlementId, TransferId};
use exchange_store::Store;

/// A target actor: which kind, and its index among that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Account(usize),
    Coordinator(usize),
}

/// FNV-1a: stable across processes and versions (std's hasher is randomized per process).
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn index(hash: u64, shards: usize) -> usize {
    usize::try_from(hash % u64::try_from(shards.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Shard counts of one node.
#[derive(Clone, Copy, Debug)]
pub struct Shards {
    pub accounts: usize,
    pub coordinators: usize,
}

impl Shards {
    pub fn of_person(&self, person: &PersonId) -> usize {
        index(stable_hash(person.as_bytes()), self.accounts)
    }

    pub fn of_settlement(&self, settlement: &SettlementId) -> usize {
        index(stable_hash(settlement.as_str().as_bytes()), self.coordinators)
    }

    pub fn of_transfer(&self, transfer: &TransferId) -> usize {
        index(stable_hash(transfer.as_str().as_bytes()), self.coordinators)
    }

    /// The coordinator shard that holds the state of `leg`'s settlement or transfer.
    pub fn of_leg(&self, leg: &LegId) -> usize {
        match leg.transfer() {
            Some(transfer) => self.of_transfer(transfer),
            None => self.of_settlement(leg.settlement()),
        }
    }

    /// Picks the owner of `input`. Reads the store only to find a binding's grantor or grantee.
    pub fn route(&self, store: &Store, input: &Input) -> Target {
        let account = |person: &PersonId| Target::Account(self.of_person(person));
        let coordinator = |settlement: &SettlementId| Target::Coordinator(self.of_settlement(settlement));
        let grantor_of = |id| match store.binding(id) {
            Ok(Some(binding)) => account(&binding.grantor),
            _ => Target::Account(0),
        };
        match input {
            Input::Client { request, .. } => match request {
                ClientRequest::Settle(request) => coordinator(&request.settlement),
                ClientRequest::Refund(request) => coordinator(&request.settlement),
                ClientRequest::Cancel { settlement } => coordinator(settlement),
                ClientRequest::Reverse { message } => coordinator(message),
                ClientRequest::Transfer { transfer, .. } => Target::Coordinator(self.of_transfer(transfer)),
                ClientRequest::SetOrder { grantee, .. } => account(grantee),
                ClientRequest::SetLimits { binding, .. } => grantor_of(binding),
                ClientRequest::Bind(request) => account(&request.grantor),
                ClientRequest::Unbind { binding } => grantor_of(binding),
                ClientRequest::OpenAccount { person, .. }
                | ClientRequest::Credit { person, .. }
                | ClientRequest::Freeze { person, .. }
                | ClientRequest::Unfreeze { person }
                | ClientRequest::Close { person } => account(person),
            },
            Input::Peer { message, .. } => match message {
                PeerMessage::Prepare(prepare) => account(&prepare.leg.account),
                PeerMessage::Commit { leg, .. } | PeerMessage::Abort { leg } | PeerMessage::Credit { leg, .. } => {
                    account(&leg.account)
                }
                PeerMessage::Vote { leg, .. } | PeerMessage::Ack { leg, .. } | PeerMessage::Query { leg } => {
                    Target::Coordinator(self.of_leg(leg))
                }
                PeerMessage::RegisterBinding(binding) => account(&binding.grantee),
                PeerMessage::Revoked { binding, .. } => match store.binding_copy(binding) {
                    Ok(Some(copy)) => account(&copy.grantee),
                    _ => Target::Account(0),
                },
                PeerMessage::Registered { binding, .. } | PeerMessage::RevocationNoted { binding } => {
                    grantor_of(binding)
                }
            },
            // Timers go back to the actor that armed them; this is only a fallback.
            Input::Timer(_) => Target::Account(0),
        }
    }
}
