//! A core actor's timers: one queue per actor woken by one pending tick, instead of a task
//! and a runtime timer per armed timer; the core's cancel hints drop timers it made pointless.
//!
//! Why: every settlement arms a vote deadline and a resend timer on its coordinator and a hold
//! deadline on every participant. With a task per timer each one cost a spawn, a runtime timer
//! entry and, when it fired seconds later, an actor message and a core call that found nothing
//! to do (a hold deadline reading the store to learn that); together ~6 % of the participant
//! node's CPU at 10,000 settlements/s. The core now says when a timer has become pointless
//! (`Effects::cancels`; the simulator fires those anyway and checks that they do nothing), so
//! most timers leave this queue without ever waking anyone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use exchange_core::effects::TimerKind;

/// Wake-ups are rounded up to a multiple of this, so timers due close together fire in one
/// tick. Late is safe (every timer means "not before"); early never happens.
pub const TIMER_TICK_MS: u64 = 5;

/// Where a timer sits in the queue: when it is due, then the order it was armed in.
type Slot = (u64, u64);

/// The timers of one actor, by due time (monotonic ms of the node's clock).
#[derive(Debug, Default)]
pub struct TimerQueue {
    due: BTreeMap<Slot, TimerKind>,
    /// Where each kind's armed timers sit, to cancel them.
    slots: HashMap<TimerKind, Vec<Slot>>,
    armed: u64,
    /// The times of the ticks requested and not yet arrived: a timer due before all of them
    /// needs an earlier one.
    ticks_requested_mono_ms: BTreeSet<u64>,
}

impl TimerQueue {
    pub fn arm(&mut self, at_mono_ms: u64, kind: TimerKind) {
        self.armed = self.armed.wrapping_add(1);
        let slot = (at_mono_ms, self.armed);
        self.slots.entry(kind.clone()).or_default().push(slot);
        self.due.insert(slot, kind);
    }

    /// Drops every armed timer of `kind` (armed before this call).
    pub fn cancel(&mut self, kind: &TimerKind) {
        for slot in self.slots.remove(kind).unwrap_or_default() {
            self.due.remove(&slot);
        }
    }

    /// Takes the timers due at `now_mono_ms`, earliest first.
    pub fn take_due(&mut self, now_mono_ms: u64) -> Vec<TimerKind> {
        let mut fired = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now_mono_ms {
                break;
            }
            let (slot, kind) = entry.remove_entry();
            if let Some(slots) = self.slots.get_mut(&kind) {
                slots.retain(|armed| *armed != slot);
                if slots.is_empty() {
                    self.slots.remove(&kind);
                }
            }
            fired.push(kind);
        }
        fired
    }

    /// The tick requested for `at_mono_ms` arrived.
    pub fn ticked(&mut self, at_mono_ms: u64) {
        self.ticks_requested_mono_ms.remove(&at_mono_ms);
    }

    /// When a new tick is needed (the earliest timer, rounded up to [`TIMER_TICK_MS`]), if
    /// none is requested at or before that time; notes it as requested. So at most one tick
    /// is outstanding per [`TIMER_TICK_MS`] slot, however often earlier timers are armed.
    pub fn tick_needed(&mut self) -> Option<u64> {
        let (earliest, _) = *self.due.keys().next()?;
        let at = earliest.div_ceil(TIMER_TICK_MS).saturating_mul(TIMER_TICK_MS);
        if self.ticks_requested_mono_ms.range(..=at).next().is_some() {
            return None;
        }
        self.ticks_requested_mono_ms.insert(at);
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_core::Province;
    use exchange_core::ids::BindingId;

    fn kind(n: u64) -> TimerKind {
        let province = Province::from_code(110_000).unwrap();
        TimerKind::BindWait(BindingId::new(province, n))
    }

    #[test]
    fn timers_fire_in_due_order_and_only_when_due() {
        let mut queue = TimerQueue::default();
        queue.arm(30, kind(3));
        queue.arm(10, kind(1));
        queue.arm(20, kind(2));
        assert_eq!(queue.take_due(9), Vec::new());
        assert_eq!(queue.take_due(20), vec![kind(1), kind(2)]);
        assert_eq!(queue.due.len(), 1);
        assert_eq!(queue.take_due(100), vec![kind(3)]);
        assert!(queue.due.is_empty() && queue.slots.is_empty());
    }

    #[test]
    fn a_cancel_drops_every_timer_of_its_kind_armed_before_it() {
        let mut queue = TimerQueue::default();
        queue.arm(10, kind(1));
        queue.arm(15, kind(1));
        queue.arm(12, kind(2));
        queue.cancel(&kind(1));
        queue.cancel(&kind(9));
        queue.arm(20, kind(1));
        assert_eq!(queue.take_due(100), vec![kind(2), kind(1)]);
        assert!(queue.slots.is_empty());
    }

    #[test]
    fn a_tick_is_asked_for_only_when_an_earlier_one_is_needed() {
        let mut queue = TimerQueue::default();
        assert_eq!(queue.tick_needed(), None);
        queue.arm(12, kind(1));
        assert_eq!(queue.tick_needed(), Some(15), "rounded up, never early");
        queue.arm(14, kind(2));
        assert_eq!(queue.tick_needed(), None, "the pending tick covers it");
        queue.arm(3, kind(3));
        assert_eq!(queue.tick_needed(), Some(5));
        queue.ticked(5);
        assert_eq!(queue.take_due(5), vec![kind(3)]);
        assert_eq!(queue.tick_needed(), None, "the tick at 15 is still on its way");
        queue.ticked(15);
        assert_eq!(queue.take_due(15), vec![kind(1), kind(2)]);
        assert_eq!(queue.tick_needed(), None, "nothing left to wait for");
    }

    /// Timers armed ever earlier (a resend backing off behind fresh deadlines) must not pile
    /// up outstanding ticks: one per slot at most.
    #[test]
    fn earlier_and_earlier_timers_request_one_tick_per_slot() {
        let mut queue = TimerQueue::default();
        queue.arm(8_000, kind(0));
        let mut requested = 0;
        for n in 1..=100 {
            queue.arm(8_000 - n * 20, kind(n));
            requested += usize::from(queue.tick_needed().is_some());
        }
        assert_eq!(requested, 100);
        assert_eq!(queue.ticks_requested_mono_ms.len(), 100, "distinct slots");
        for n in 1..=100 {
            queue.arm(6_000 + n, kind(1_000 + n));
            assert_eq!(queue.tick_needed(), None, "an earlier tick covers it");
        }
    }
}
