//! What a handler asks its driver to do: apply writes, then send, reply and arm timers.

use serde::{Deserialize, Serialize};

use crate::ids::{BindingId, LegId, SettlementId, TransferId};
use crate::ledger::Write;
use crate::message::{ClientReply, PeerMessage};
use crate::records::OutboxKey;
use crate::region::Province;

/// The driver's handle for a waiting client (a gRPC call, a simulated hospital).
pub type ReplyTo = u64;

/// A timer the driver fires back as an event at `at_mono_ms` on the node's monotonic clock.
/// A driver may drop the timers a later handler names in `Effects::cancels`, or fire them
/// anyway: either way, a handler that finds its timer stale does nothing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timer {
    pub at_mono_ms: u64,
    pub kind: TimerKind,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimerKind {
    /// The participant's hold reached its deadline: ask the coordinator.
    HoldDeadline(LegId),
    /// The coordinator stops waiting for votes of `round`.
    VoteDeadline { settlement: SettlementId, round: u8 },
    /// The coordinator re-sends what is not yet acknowledged.
    Resend(OutboxKey),
    /// A client waiting for a binding's registration gets "pending" instead.
    BindWait(BindingId),
    /// The grantor's node stops waiting for a transfer's current vote (stale if the transfer
    /// has moved on: each phase keeps its own deadline).
    TransferDeadline(TransferId),
}

/// Something worth counting or tracing that is not a state change (for metrics, the monitor
/// and the simulator's report).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Note {
    /// A settlement was decided; `replanned` when a grantor's no or timeout changed the plan.
    SettlementDecided {
        settlement: SettlementId,
        rounds: u8,
        replanned: bool,
        cash_only: bool,
    },
    /// A hold was resolved on this node after `held_ms` on its clock.
    HoldResolved { leg: LegId, committed: bool },
    /// A message that breaks the protocol's rules arrived (a bug or a hostile peer). It changed
    /// nothing; it is reported so tests and operators see it.
    ProtocolViolation { from: Province, detail: String },
}

/// Output of one handler. The driver must apply `writes` atomically and make them durable
/// before any of `sends` or `replies` leaves the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Effects {
    pub writes: Vec<Write>,
    pub sends: Vec<(Province, PeerMessage)>,
    pub replies: Vec<(ReplyTo, ClientReply)>,
    pub timers: Vec<Timer>,
    /// Timers armed earlier that this handler made pointless: fired now, each would do
    /// nothing. A hint, not a command: a driver may drop them (the node does: at 10,000
    /// settlements/s every leg's hold deadline, vote deadline and resend timer would otherwise
    /// wake an actor, and a hold deadline reads the store), or fire them anyway (the simulator
    /// does, and checks that they do nothing). A timer armed after the hint is not covered.
    #[serde(default)]
    pub cancels: Vec<TimerKind>,
    pub notes: Vec<Note>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.sends.is_empty() && self.replies.is_empty() && self.timers.is_empty()
    }

    /// The handler wrote nothing and only sends prepares: a driver may send them at once,
    /// without waiting for other handlers' writes to reach the disk. Presumed abort makes that
    /// safe: a coordinator writes nothing before its decision, so a prepare commits it to
    /// nothing, and if its node crashes and forgets what the prepare was computed from, a
    /// participant asking about the hold is told to abort.
    pub fn only_prepares_without_writes(&self) -> bool {
        self.writes.is_empty()
            && self.replies.is_empty()
            && !self.sends.is_empty()
            && self
                .sends
                .iter()
                .all(|(_, message)| matches!(message, PeerMessage::Prepare(_)))
    }

    pub fn send(&mut self, to: Province, message: PeerMessage) {
        self.sends.push((to, message));
    }

    pub fn reply(&mut self, to: ReplyTo, reply: ClientReply) {
        self.replies.push((to, reply));
    }

    pub fn timer(&mut self, at_mono_ms: u64, kind: TimerKind) {
        self.timers.push(Timer { at_mono_ms, kind });
    }

    /// Says that every timer of `kind` armed so far would now do nothing (see `cancels`).
    pub fn cancel_timer(&mut self, kind: TimerKind) {
        self.cancels.push(kind);
    }

    /// Adds the effects of a handler that ran after this one (over a view with this one's
    /// writes laid over it, see `overlay.rs`), so a driver can carry both out as one: the
    /// writes as one set, in order. A later handler's cancel hint covers the timers this one
    /// armed too, so those are dropped here; timers the later one arms are kept.
    pub fn then(&mut self, later: Effects) {
        if !later.cancels.is_empty() {
            self.timers.retain(|timer| !later.cancels.contains(&timer.kind));
        }
        self.extend(later);
    }

    pub fn extend(&mut self, other: Effects) {
        self.writes.extend(other.writes);
        self.sends.extend(other.sends);
        self.replies.extend(other.replies);
        self.timers.extend(other.timers);
        self.cancels.extend(other.cancels);
        self.notes.extend(other.notes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LegId, LegScope, SettlementId};
    use crate::ledger::Write;
    use crate::message::Prepare;
    use crate::money::Money;
    use crate::person::PersonId;

    fn province() -> Province {
        Province::from_code(500_000).unwrap()
    }

    fn leg() -> LegId {
        LegId {
            coordinator: province(),
            scope: LegScope::Pay {
                settlement: SettlementId::new("S-1").unwrap(),
                attempt: 1,
            },
            index: 0,
            account: PersonId::synthetic(110_105, 7),
        }
    }

    fn prepare() -> PeerMessage {
        PeerMessage::Prepare(Prepare {
            leg: leg(),
            binding: None,
            patient: PersonId::synthetic(500_101, 3),
            amount_max: Money::from_fen(100).unwrap(),
            hold_timeout_ms: 1_000,
        })
    }

    #[test]
    fn a_later_handlers_cancel_covers_timers_armed_earlier_in_the_batch() {
        let hold = TimerKind::HoldDeadline(leg());
        let other = TimerKind::BindWait(crate::ids::BindingId::new(province(), 1));
        let mut first = Effects::default();
        first.timer(10, hold.clone());
        first.timer(20, other.clone());
        first.writes.push(Write::BindingSerial(1));
        let mut second = Effects::default();
        second.cancel_timer(hold.clone());
        second.writes.push(Write::BindingSerial(2));
        let mut third = Effects::default();
        third.timer(30, hold.clone());
        first.then(second);
        first.then(third);
        // The first hold deadline is gone, the one armed after the cancel stays; the hint is
        // kept for timers armed before the batch.
        assert_eq!(
            first.timers,
            vec![
                Timer {
                    at_mono_ms: 20,
                    kind: other
                },
                Timer {
                    at_mono_ms: 30,
                    kind: hold.clone()
                }
            ]
        );
        assert_eq!(first.cancels, vec![hold]);
        assert_eq!(first.writes, vec![Write::BindingSerial(1), Write::BindingSerial(2)]);
    }

    #[test]
    fn only_prepares_of_a_handler_without_writes_may_leave_at_once() {
        let mut effects = Effects::default();
        assert!(!effects.only_prepares_without_writes(), "nothing to send");
        effects.send(province(), prepare());
        effects.send(province(), prepare());
        assert!(effects.only_prepares_without_writes());
        // Anything else sent, any write, or any reply waits for the disk.
        let mut with_abort = effects.clone();
        with_abort.send(province(), PeerMessage::Abort { leg: leg() });
        assert!(!with_abort.only_prepares_without_writes());
        let mut with_write = effects.clone();
        with_write.writes.push(Write::BindingSerial(1));
        assert!(!with_write.only_prepares_without_writes());
        let mut with_reply = effects;
        with_reply.reply(
            1,
            ClientReply::Error(crate::ClientError::not_found("x", "y".to_string())),
        );
        assert!(!with_reply.only_prepares_without_writes());
    }
}
