//! What every part of a running node shares: store, clock, routing, outbound queue, replies.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use exchange_core::effects::{Effects, ReplyTo};
use exchange_core::ledger::Write;
use exchange_core::message::{ClientReply, PeerMessage};
use exchange_core::node::Input;
use exchange_core::{ClientError, ErrorKind, Province};
use exchange_pki::{ParsedCertificates, RevocationList};
use exchange_proto::pb::exchange_client::ExchangeClient;
use exchange_store::Store;
use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::core_actor::CoreMsg;
use crate::error::NodeError;
use crate::metrics::Metrics;
use crate::peer::PeerMsg;
use crate::route::{Shards, Target};

/// Effects waiting for their writes to be durable before they leave the node.
#[derive(Debug)]
pub struct Outgoing {
    pub ticket: u64,
    pub sends: Vec<(Province, PeerMessage)>,
    pub replies: Vec<(ReplyTo, ClientReply)>,
    /// Nobody waits on these effects (see [`Outgoing::is_lazy`]): they may ride on a flush
    /// someone else asks for.
    pub lazy: bool,
}

impl Outgoing {
    /// Effects are in no hurry when no client waits on them and all they send are
    /// acknowledgements: an `Ack` only lets the coordinator drop a delivered message from its
    /// outbox. Everything else (votes, decisions, replies, bindings) is on someone's path.
    pub fn is_lazy(sends: &[(Province, PeerMessage)], replies: &[(ReplyTo, ClientReply)]) -> bool {
        replies.is_empty()
            && sends
                .iter()
                .all(|(_, message)| matches!(message, PeerMessage::Ack { .. }))
    }
}

/// Clients waiting for their reply, by the `ReplyTo` handed to the core.
#[derive(Debug, Default)]
pub struct PendingReplies {
    next: AtomicU64,
    waiting: Mutex<HashMap<ReplyTo, oneshot::Sender<ClientReply>>>,
}

impl PendingReplies {
    pub fn register(&self) -> (ReplyTo, oneshot::Receiver<ClientReply>) {
        let reply_to = self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(reply_to, sender);
        }
        (reply_to, receiver)
    }

    pub fn complete(&self, reply_to: ReplyTo, reply: ClientReply) {
        let sender = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut waiting| waiting.remove(&reply_to));
        if let Some(sender) = sender {
            // The client may have given up (deadline); the reply is then simply dropped.
            let _gone = sender.send(reply);
        }
    }

    pub fn forget(&self, reply_to: ReplyTo) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&reply_to);
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The live actors, replaced by the supervisor when one restarts.
#[derive(Debug, Default)]
pub struct Actors {
    pub accounts: Vec<ActorRef<CoreMsg>>,
    pub coordinators: Vec<ActorRef<CoreMsg>>,
}

/// State shared by the actors, the dispatcher and the gRPC services of one node.
#[derive(Debug)]
pub struct NodeContext {
    pub province: Province,
    pub config: NodeConfig,
    pub store: Store,
    pub clock: Clock,
    pub shards: Shards,
    pub actors: RwLock<Actors>,
    pub peers: RwLock<BTreeMap<Province, ActorRef<PeerMsg>>>,
    pub outbound: mpsc::Sender<Outgoing>,
    pub pending: PendingReplies,
    pub metrics: Metrics,
    pub revocations: RevocationList,
    /// Client certificates already parsed (checked again on every request all the same).
    pub certificates: ParsedCertificates,
    /// Set when the store failed: the node stops acknowledging and says why.
    pub failure: Mutex<Option<String>>,
    /// What each peer link last reported.
    pub links: Mutex<BTreeMap<Province, LinkStatus>>,
    /// A client of each peer's `Exchange` service (cheap to clone: one shared channel).
    pub peer_clients: BTreeMap<Province, ExchangeClient<Channel>>,
}

/// The state of one peer link, as the monitor sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub queued: usize,
    pub last_error: String,
    /// When the link last went down (Unix ms), while it is down.
    pub down_since_wall_ms: Option<i64>,
}

impl NodeContext {
    pub fn actor(&self, target: Target) -> Option<ActorRef<CoreMsg>> {
        let actors = self.actors.read().ok()?;
        match target {
            Target::Account(index) => actors.accounts.get(index).cloned(),
            Target::Coordinator(index) => actors.coordinators.get(index).cloned(),
        }
    }

    /// Hands an input to the actor that owns it. Once the node stopped acknowledging (see
    /// [`NodeContext::fail`]) nothing more is taken in: the caller is told why and retries.
    pub fn deliver(&self, input: Input) -> Result<(), NodeError> {
        if let Some(failure) = self.failure() {
            return Err(NodeError::Stopped(failure));
        }
        let target = self.shards.route(&self.store, &input);
        let actor = self.actor(target).ok_or(NodeError::Unavailable("actor not running"))?;
        actor
            .cast(CoreMsg::Input(input))
            .map_err(|_| NodeError::Unavailable("actor mailbox closed"))
    }

    /// Hands a batch of inputs (one peer call's messages) to the actors that own them: each
    /// actor gets its share as one message, in the batch's order, and handles it as one
    /// write set (see `CoreMsg::Inputs`).
    pub fn deliver_batch(&self, inputs: Vec<Input>) -> Result<(), NodeError> {
        if let Some(failure) = self.failure() {
            return Err(NodeError::Stopped(failure));
        }
        // Targets in order of first appearance; a batch names a handful of actors at most.
        let mut shares: Vec<(Target, Vec<Input>)> = Vec::new();
        for input in inputs {
            let target = self.shards.route(&self.store, &input);
            match shares.iter_mut().find(|(known, _)| *known == target) {
                Some((_, share)) => share.push(input),
                None => shares.push((target, vec![input])),
            }
        }
        for (target, share) in shares {
            let actor = self.actor(target).ok_or(NodeError::Unavailable("actor not running"))?;
            actor
                .cast(CoreMsg::Inputs(share))
                .map_err(|_| NodeError::Unavailable("actor mailbox closed"))?;
        }
        Ok(())
    }

    pub fn set_link(&self, province: Province, update: impl FnOnce(&mut LinkStatus)) {
        if let Ok(mut links) = self.links.lock() {
            update(links.entry(province).or_default());
        }
    }

    /// Peer links for health samples and status.
    pub fn link_states(&self) -> Vec<exchange_proto::pb::PeerLink> {
        use exchange_proto::pb::{PeerLink, PeerLinkState};
        let Ok(links) = self.links.lock() else {
            return Vec::new();
        };
        links
            .iter()
            .map(|(province, status)| PeerLink {
                province: province.code(),
                state: if status.up {
                    PeerLinkState::Connected
                } else {
                    PeerLinkState::Disconnected
                }
                .into(),
                queued: u32::try_from(status.queued).unwrap_or(u32::MAX),
                last_error: status.last_error.clone(),
            })
            .collect()
    }

    /// Age in ms (this node's wall clock) of the oldest of `live` holds still prepared, from
    /// the hold's `prepared_wall_ms`; `None` when none is.
    pub fn oldest_hold_age_ms(&self, live: &[exchange_core::LegId]) -> Option<u64> {
        let oldest = live
            .iter()
            .filter_map(|leg| match exchange_core::LedgerView::fence(&self.store, leg) {
                Ok(Some(exchange_core::records::Fence::Prepared(hold))) => Some(hold.prepared_wall_ms),
                _ => None,
            })
            .min()?;
        Some(u64::try_from(self.clock.now().wall_ms.saturating_sub(oldest)).unwrap_or(0))
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Makes the node stop acknowledging, for good (until it is restarted): client calls and
    /// peer messages are refused with UNAVAILABLE and this reason, gRPC health turns
    /// NOT_SERVING (see [`report_failure_to_health`]) and `/healthz` answers 503. The first
    /// reason wins and is logged once at error level.
    pub fn fail(&self, reason: String) {
        let Ok(mut failure) = self.failure.lock() else {
            tracing::error!(%reason, "node stops acknowledging (failure state poisoned)");
            return;
        };
        match failure.as_ref() {
            None => {
                tracing::error!(%reason, "node stops acknowledging; restart it once the cause is fixed");
                *failure = Some(reason);
            }
            Some(first) => tracing::debug!(%reason, %first, "node already stopped acknowledging"),
        }
    }

    /// Applies a handler's writes (or several handlers', see `CoreMsg::Inputs`: handler `i`'s
    /// set ends at `set_ends[i]`) and queues what they send and reply until the writes are
    /// durable. Account invariants are checked before anything is applied. Timers are the
    /// calling actor's (see `timers.rs`).
    pub async fn execute(&self, effects: Effects, set_ends: &[usize]) -> Result<(), NodeError> {
        for write in &effects.writes {
            if let Write::Account(account) = write {
                account.check_invariant().map_err(NodeError::Invariant)?;
            }
        }
        let applied = match self.store.apply_in_sets(&effects.writes, set_ends) {
            Ok(applied) => applied,
            Err(error) => {
                if error.is_storage_failure() {
                    // Nothing of these writes will reach the disk (a set applied in part is
                    // never flushed: the store refuses every flush from now on): stop
                    // acknowledging, and answer the waiting clients now (UNAVAILABLE with the
                    // reason) rather than let them run into their deadline. The actor is not
                    // failed: restarting it from a store that refuses every write would only
                    // loop; the node takes no more input and only a restart recovers it.
                    self.fail(format!("store cannot write: {error}"));
                    for (reply_to, _) in &effects.replies {
                        self.pending.forget(*reply_to);
                    }
                    return Ok(());
                }
                // The actor fails and restarts from the store. A batch applied set by set
                // (`Store::apply_in_sets`) may have applied its first sets: their sends and
                // replies are dropped here, which recovery covers (the outbox is resent, a
                // participant asks about its holds, a hospital retries with the same id).
                return Err(error.into());
            }
        };
        self.metrics.note_effects(&effects);
        // An empty write set's ticket is the last one applied, which would cost a flush of
        // other handlers' writes before every settlement's first message: prepares need none
        // (see `Effects::only_prepares_without_writes`).
        let at_once = effects.only_prepares_without_writes();
        // Notes were counted above; only sends and replies wait for the disk.
        if effects.sends.is_empty() && effects.replies.is_empty() {
            return Ok(());
        }
        let outgoing = Outgoing {
            ticket: applied.ticket,
            lazy: Outgoing::is_lazy(&effects.sends, &effects.replies),
            sends: effects.sends,
            replies: effects.replies,
        };
        if at_once {
            crate::dispatch::deliver(self, outgoing);
            return Ok(());
        }
        self.outbound
            .send(outgoing)
            .await
            .map_err(|_| NodeError::Unavailable("dispatcher stopped"))
    }

    /// Answers a waiting client with an error (the node cannot serve it).
    pub fn refuse(&self, reply_to: ReplyTo, reason: &str, message: String) {
        self.pending.complete(
            reply_to,
            ClientReply::Error(ClientError::new(ErrorKind::ResourceExhausted, reason, message)),
        );
    }
}

/// Shared handle.
pub type Context = Arc<NodeContext>;

/// How often [`report_failure_to_health`] looks at the failure state.
pub const HEALTH_FAILURE_POLL_MS: u64 = 100;

/// Turns the gRPC health of the node (the server as a whole, `""`, and each service) to
/// NOT_SERVING once the node stopped acknowledging; returns then. Polls, so that every path
/// to [`NodeContext::fail`] (dispatcher, actors, supervisor) is covered without each knowing
/// the reporter. The reason itself is in the log, on `/healthz` and in every refusal.
pub async fn report_failure_to_health(ctx: Context, reporter: exchange_proto::service::HealthReporter) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(HEALTH_FAILURE_POLL_MS));
    loop {
        every.tick().await;
        if ctx.failure().is_some() {
            break;
        }
    }
    let not_serving = exchange_proto::service::tonic_health::ServingStatus::NotServing;
    reporter.set_service_status("", not_serving).await;
    for name in exchange_proto::service::SERVICE_NAMES {
        reporter.set_service_status(name, not_serving).await;
    }
}
