//! The dispatcher: lets effects leave the node once their writes are durable.
//!
//! Actors apply their writes and go on with the next message at once; what a handler sends
//! or replies waits here, in apply order, until the store has flushed past its ticket. Many
//! handlers share one flush, which is what makes durable throughput high.

use exchange_core::node::Input;
use tokio::sync::mpsc;

use crate::context::{Context, Outgoing};
use crate::peer::PeerMsg;

/// Outgoing effects queued before actors must wait (backpressure on the whole node).
pub const OUTBOUND_QUEUE_MAX: usize = 65_536;

pub async fn run(ctx: Context, mut receiver: mpsc::Receiver<Outgoing>) {
    while let Some(outgoing) = receiver.recv().await {
        if let Err(error) = ctx.store.durable(outgoing.ticket).await {
            // Nothing may be acknowledged that is not on disk: send nothing, and answer waiting
            // clients UNAVAILABLE with the reason (dropping their reply makes the service say
            // "the node stopped acknowledging: ..."): the outcome is unknown until the node is
            // restarted, and a retry with the same id then answers it. Keep refusing: the
            // failure is sticky in the store too.
            ctx.fail(format!("store cannot flush: {error}"));
            for (reply_to, _) in outgoing.replies {
                ctx.pending.forget(reply_to);
            }
            continue;
        }
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
}
