//! Deliveries in progress: decisions and notices re-sent with backoff until acknowledged.

use std::collections::BTreeMap;

use crate::config::ProtocolConfig;
use crate::effects::{Effects, TimerKind};
use crate::ids::{BindingId, LegId};
use crate::message::PeerMessage;
use crate::records::OutboxKey;
use crate::region::Province;
use crate::time::Now;

/// What acknowledges one pending message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AckKey {
    Leg(LegId),
    Binding(BindingId),
}

/// One message that must reach its node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pending {
    pub ack: AckKey,
    pub to: Province,
    pub message: PeerMessage,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Delivery {
    pending: Vec<Pending>,
    backoff_ms: u64,
}

/// The in-memory side of the outbox. Its durable side is the `Outbox` write: an item is
/// written live before its first send and removed when its last ack arrives, so a restarted
/// node rebuilds this map from the store and sends again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Deliveries {
    items: BTreeMap<OutboxKey, Delivery>,
}

impl Deliveries {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn contains(&self, key: &OutboxKey) -> bool {
        self.items.contains_key(key)
    }

    /// Sends every message now and arms the first resend.
    pub fn start(
        &mut self,
        key: OutboxKey,
        pending: Vec<Pending>,
        config: &ProtocolConfig,
        now: Now,
        effects: &mut Effects,
    ) {
        if pending.is_empty() {
            return;
        }
        for item in &pending {
            effects.send(item.to, item.message.clone());
        }
        effects.timer(now.mono_after(config.resend_initial_ms), TimerKind::Resend(key.clone()));
        self.items.insert(
            key,
            Delivery {
                pending,
                backoff_ms: config.resend_initial_ms,
            },
        );
    }

    /// The pending message for `ack` under `key`, if any.
    pub fn pending(&self, key: &OutboxKey, ack: &AckKey) -> Option<&Pending> {
        self.items.get(key)?.pending.iter().find(|p| &p.ack == ack)
    }

    /// Marks `ack` delivered. Returns `Some(true)` when that completed the item (the caller
    /// then removes it from the durable outbox), `Some(false)` when others remain, and `None`
    /// when nothing was pending for it (a duplicate ack).
    pub fn ack(&mut self, key: &OutboxKey, ack: &AckKey, from: Province) -> Option<bool> {
        let delivery = self.items.get_mut(key)?;
        let position = delivery.pending.iter().position(|p| &p.ack == ack && p.to == from)?;
        delivery.pending.remove(position);
        if delivery.pending.is_empty() {
            self.items.remove(key);
            Some(true)
        } else {
            Some(false)
        }
    }

    /// Drops an item without delivery (e.g. a registration overtaken by a revocation).
    pub fn cancel(&mut self, key: &OutboxKey) -> bool {
        self.items.remove(key).is_some()
    }

    /// The resend timer fired: send what is still pending and back off.
    pub fn resend(&mut self, key: &OutboxKey, config: &ProtocolConfig, now: Now, effects: &mut Effects) {
        let Some(delivery) = self.items.get_mut(key) else {
            return;
        };
        for item in &delivery.pending {
            effects.send(item.to, item.message.clone());
        }
        delivery.backoff_ms = delivery.backoff_ms.saturating_mul(2).min(config.resend_max_ms);
        effects.timer(now.mono_after(delivery.backoff_ms), TimerKind::Resend(key.clone()));
    }
}
