//! The dispatcher: lets effects leave the node once their writes are durable.
//!
//! Actors apply their writes and go on with the next message at once; what a handler sends
//! or replies waits here, in apply order, until the store has flushed past its ticket. Many
//! handlers share one flush, which is what makes durable throughput high. Effects nobody
//! waits on (acknowledgements) wait lazily: they ride on the next flush asked for anyway.

use std::collections::VecDeque;

use exchange_core::node::Input;
use tokio::sync::mpsc;

use crate::context::{Context, NodeContext, Outgoing};
use crate::peer::PeerMsg;

/// Outgoing effects queued before actors must wait (backpressure on the whole node).
pub const OUTBOUND_QUEUE_MAX: usize = 65_536;

/// Most queued effects looked at together: enough to see past lazy ones to an urgent one.
pub const DISPATCH_LOOKAHEAD_MAX: usize = 4_096;

pub async fn run(ctx: Context, mut receiver: mpsc::Receiver<Outgoing>) {
    let mut queue: VecDeque<Outgoing> = VecDeque::new();
    let mut open = true;
    loop {
        if queue.is_empty() {
            match receiver.recv().await {
                Some(outgoing) => queue.push_back(outgoing),
                None => return,
            }
        }
        while open && queue.len() < DISPATCH_LOOKAHEAD_MAX {
            match receiver.try_recv() {
                Ok(outgoing) => queue.push_back(outgoing),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let Some(wait) = wait_for(queue.iter().map(|outgoing| (outgoing.ticket, outgoing.lazy))) else {
            continue;
        };
        let (wanted, result) = match wait {
            Wait::Now(ticket) => (ticket, ctx.store.durable(ticket).await),
            Wait::Lazily(first) => {
                tokio::select! {
                    result = ctx.store.durable_lazily(first) => (first, result),
                    // Something arrived (maybe urgent): look again rather than keep it waiting.
                    next = receiver.recv(), if open => {
                        match next {
                            Some(outgoing) => queue.push_back(outgoing),
                            None => open = false,
                        }
                        continue;
                    }
                }
            }
        };
        while queue.front().is_some_and(|outgoing| outgoing.ticket <= wanted) {
            let Some(outgoing) = queue.pop_front() else {
                break;
            };
            match &result {
                Ok(()) => deliver(&ctx, outgoing),
                Err(error) => refuse(&ctx, outgoing, error),
            }
        }
    }
}

/// What the dispatcher waits for before the effects at the head of its queue may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Flush up to this ticket now.
    Now(u64),
    /// Only lazy effects are queued: this ticket, on whatever flush comes.
    Lazily(u64),
}

/// One flush covers every ticket up to the one it was asked for. Actors queue in the order
/// they finish, not always in ticket order, so: up to the last urgent effect queued, wait for
/// the highest ticket of all before it (they all leave then, in queue order); with nothing
/// urgent queued, wait lazily for the first one. Either way the head of the queue is covered,
/// so every wait lets at least one effect leave. `queued`: (ticket, lazy) in queue order.
fn wait_for(queued: impl Iterator<Item = (u64, bool)> + Clone) -> Option<Wait> {
    let first = queued.clone().next()?.0;
    let last_urgent = queued
        .clone()
        .enumerate()
        .filter(|(_, (_, lazy))| !lazy)
        .map(|(at, _)| at)
        .last();
    Some(match last_urgent {
        Some(last) => Wait::Now(queued.take(last + 1).map(|(ticket, _)| ticket).max().unwrap_or(first)),
        None => Wait::Lazily(first),
    })
}

/// Nothing may be acknowledged that is not on disk: send nothing, and answer waiting clients
/// UNAVAILABLE with the reason (dropping their reply makes the service say "the node stopped
/// acknowledging: ..."): the outcome is unknown until the node is restarted, and a retry with
/// the same id then answers it. Keep refusing: the failure is sticky in the store too.
fn refuse(ctx: &Context, outgoing: Outgoing, error: &exchange_store::StoreError) {
    ctx.fail(format!("store cannot flush: {error}"));
    for (reply_to, _) in outgoing.replies {
        ctx.pending.forget(reply_to);
    }
}

/// Sends and replies of effects whose writes are on disk (or that need none on disk).
pub(crate) fn deliver(ctx: &NodeContext, outgoing: Outgoing) {
    for (to, message) in outgoing.sends {
        if to == ctx.province {
            if let Err(error) = ctx.deliver(Input::Peer {
                from: ctx.province,
                message,
            }) {
                tracing::warn!(%error, "local delivery failed");
            }
            continue;
        }
        let link = ctx.peers.read().ok().and_then(|peers| peers.get(&to).cloned());
        match link {
            Some(link) => {
                if link.cast(PeerMsg::Send(message)).is_err() {
                    ctx.metrics.peer(&ctx.metrics.peer_messages_dropped, &to.to_string(), 1);
                }
            }
            None => {
                tracing::warn!(peer = %to, kind = message.kind(), "no link to this province; message dropped");
                ctx.metrics.peer(&ctx.metrics.peer_messages_dropped, &to.to_string(), 1);
            }
        }
    }
    for (reply_to, reply) in outgoing.replies {
        ctx.pending.complete(reply_to, reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(queued: &[(u64, bool)]) -> Option<Wait> {
        wait_for(queued.iter().copied())
    }

    #[test]
    fn waits_for_the_highest_ticket_up_to_the_last_urgent_effect() {
        assert_eq!(wait(&[]), None);
        assert_eq!(wait(&[(7, false), (9, true)]), Some(Wait::Now(7)));
        assert_eq!(wait(&[(3, true), (8, true), (5, false), (9, true)]), Some(Wait::Now(8)));
        // Out of ticket order: the lazy head must be covered too, or the urgent effect
        // behind it could never leave.
        assert_eq!(wait(&[(15, true), (12, false)]), Some(Wait::Now(15)));
    }

    #[test]
    fn only_lazy_effects_wait_lazily_for_the_head() {
        assert_eq!(wait(&[(5, true), (3, true)]), Some(Wait::Lazily(5)));
    }
}
