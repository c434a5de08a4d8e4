//! The actors that run the core: account shards (participant and binding work) and
//! coordinator shards (settlements and refunds). Each owns one `NodeCore`; they are glue.

use exchange_core::effects::Effects;
use exchange_core::node::{Input, NodeCore};
use exchange_core::overlay::Overlay;
use exchange_core::records::OutboxKey;
use exchange_core::{LedgerView, LegId};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::context::Context;
use crate::error::NodeError;
use crate::route::Target;
use crate::timers::TimerQueue;

/// Messages of a core actor.
#[derive(Debug)]
pub enum CoreMsg {
    Input(Input),
    /// Inputs that arrived together (one peer call's messages for this actor), handled in
    /// order and applied as few write sets as `BATCH_SET_WRITES_MAX` allows.
    Inputs(Vec<Input>),
    /// Resume this shard's in-doubt work from the store (sent once after every start).
    Recover,
    /// The earliest of this shard's timers may be due: the tick requested for this time
    /// (monotonic ms; see `timers.rs`).
    Tick(u64),
}

/// Most writes a batch's handlers gather into one set before it is applied; the rest of the
/// batch goes on in a next set. A handler's set is a few hundred bytes to a few KiB, so this
/// keeps a set's redo record well under the store's `REDO_RECORD_BYTES_MAX` (and a set too
/// large all the same is applied handler by handler, see `Store::apply_in_sets`), while a
/// batch of prepares or commits still shares one redo record and one journal page per ~10.
pub const BATCH_SET_WRITES_MAX: usize = 96;

/// A shard of the node's core logic.
#[derive(Debug)]
pub struct CoreActor;

#[derive(Debug)]
pub struct CoreArgs {
    pub ctx: Context,
    pub target: Target,
}

#[derive(Debug)]
pub struct CoreState {
    ctx: Context,
    target: Target,
    core: NodeCore,
    timers: TimerQueue,
}

impl CoreState {
    /// This shard's live holds and outbox items.
    fn recovery_work(&self) -> Result<(Vec<LegId>, Vec<OutboxKey>), NodeError> {
        let ctx = &self.ctx;
        let shards = ctx.shards;
        let mine = |target: Target| target == self.target;
        let live_holds = ctx
            .store
            .live_holds()?
            .into_iter()
            .filter(|leg| mine(Target::Account(shards.of_person(&leg.account))))
            .collect();
        let mut outbox = Vec::new();
        for key in ctx.store.outbox()? {
            let owner = match &key {
                OutboxKey::Settlement(settlement) | OutboxKey::Refund { settlement, .. } => {
                    Target::Coordinator(shards.of_settlement(settlement))
                }
                OutboxKey::Transfer(transfer) => Target::Coordinator(shards.of_transfer(transfer)),
                OutboxKey::Registration(binding) | OutboxKey::Revocation(binding) => {
                    match ctx.store.binding(binding)? {
                        Some(binding) => Target::Account(shards.of_person(&binding.grantor)),
                        None => continue,
                    }
                }
            };
            if mine(owner) {
                outbox.push(key);
            }
        }
        Ok((live_holds, outbox))
    }
}

impl Actor for CoreActor {
    type Msg = CoreMsg;
    type State = CoreState;
    type Arguments = CoreArgs;

    async fn pre_start(&self, _myself: ActorRef<CoreMsg>, args: CoreArgs) -> Result<CoreState, ActorProcessingErr> {
        let ctx = args.ctx;
        // A coordinator that starts (or restarts) takes a new incarnation, so the legs of
        // settlements it forgot can never be confused with new ones.
        let incarnation = match args.target {
            Target::Coordinator(_) => ctx.store.bump_incarnation()?,
            Target::Account(_) => ctx.store.incarnation()?,
        };
        let config = &ctx.config;
        let core = NodeCore::new(
            ctx.province,
            config.policy.clone(),
            config.protocol.clone(),
            incarnation,
        );
        Ok(CoreState {
            ctx,
            target: args.target,
            core,
            timers: TimerQueue::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CoreMsg>,
        message: CoreMsg,
        state: &mut CoreState,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.ctx.clock.now();
        match message {
            CoreMsg::Input(input) => {
                let effects = state
                    .core
                    .handle(&state.ctx.store, input, now)
                    .map_err(NodeError::from)?;
                state.execute(effects, &[]).await?;
            }
            CoreMsg::Inputs(inputs) => state.handle_batch(inputs).await?,
            CoreMsg::Recover => {
                let (live_holds, outbox) = state.recovery_work()?;
                if !live_holds.is_empty() || !outbox.is_empty() {
                    tracing::info!(target = ?state.target, live_holds = live_holds.len(), outbox = outbox.len(), "recovering");
                }
                let effects = state
                    .core
                    .recover(&state.ctx.store, &live_holds, &outbox, now)
                    .map_err(NodeError::from)?;
                state.execute(effects, &[]).await?;
            }
            CoreMsg::Tick(at_mono_ms) => {
                state.timers.ticked(at_mono_ms);
                for kind in state.timers.take_due(now.mono_ms) {
                    let effects = state
                        .core
                        .handle(&state.ctx.store, Input::Timer(kind), state.ctx.clock.now())
                        .map_err(NodeError::from)?;
                    state.execute(effects, &[]).await?;
                }
            }
        }
        if let Some(at) = state.timers.tick_needed() {
            myself.send_after(state.ctx.clock.until(at), move || CoreMsg::Tick(at));
        }
        Ok(())
    }
}

impl CoreState {
    /// Handles inputs that arrived together, each over the writes of the ones before it (an
    /// overlay on the store), and runs their effects as one: one write set per
    /// `BATCH_SET_WRITES_MAX` writes instead of one per input. If a handler fails, the
    /// effects of those before it are still run, then the error is the actor's.
    async fn handle_batch(&mut self, inputs: Vec<Input>) -> Result<(), NodeError> {
        let mut inputs = inputs.into_iter().peekable();
        while inputs.peek().is_some() {
            // Read per set: the previous one may have waited for the dispatcher's queue.
            let now = self.ctx.clock.now();
            let mut combined = Effects::default();
            let mut set_ends = Vec::new();
            let mut failed = None;
            {
                let mut overlay = Overlay::new(&self.ctx.store);
                for input in inputs.by_ref() {
                    match self.core.handle(&overlay, input, now) {
                        Ok(effects) => {
                            overlay.record(&effects.writes);
                            combined.then(effects);
                            set_ends.push(combined.writes.len());
                        }
                        Err(error) => {
                            failed = Some(NodeError::from(error));
                            break;
                        }
                    }
                    if combined.writes.len() >= BATCH_SET_WRITES_MAX {
                        break;
                    }
                }
            }
            self.execute(combined, &set_ends).await?;
            if let Some(error) = failed {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Runs a handler's effects (or a batch's, see `handle_batch`): writes, sends and replies
    /// through the context, then cancel hints and timers into this shard's queue (hints
    /// first: they cover timers armed before the handler ran, not the ones it arms). Only
    /// once the writes are applied: a hint is true of the state those writes leave.
    async fn execute(&mut self, mut effects: Effects, set_ends: &[usize]) -> Result<(), NodeError> {
        let cancels = std::mem::take(&mut effects.cancels);
        let timers = std::mem::take(&mut effects.timers);
        self.ctx.execute(effects, set_ends).await?;
        for kind in cancels {
            self.timers.cancel(&kind);
        }
        for timer in timers {
            self.timers.arm(timer.at_mono_ms, timer.kind);
        }
        Ok(())
    }
}
