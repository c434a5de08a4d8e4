//! The supervisor: starts the core actors and restarts a failed one from the store.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::context::Context;
use crate::core_actor::{CoreActor, CoreArgs, CoreMsg};
use crate::route::Target;

/// Restarts allowed before the supervisor gives up and stops the node (a crash loop means
/// something is broken that restarting cannot fix).
pub const RESTARTS_MAX: u32 = 100;

#[derive(Debug)]
pub struct Supervisor;

#[derive(Debug)]
pub enum SupervisorMsg {}

#[derive(Debug)]
pub struct SupervisorState {
    ctx: Context,
    restarts: u32,
}

async fn spawn_core(
    ctx: &Context,
    target: Target,
    supervisor: &ActorRef<SupervisorMsg>,
) -> Result<ActorRef<CoreMsg>, ActorProcessingErr> {
    let args = CoreArgs {
        ctx: ctx.clone(),
        target,
    };
    let (actor, _handle) = Actor::spawn_linked(None, CoreActor, args, supervisor.get_cell()).await?;
    Ok(actor)
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Context;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        ctx: Context,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut accounts = Vec::new();
        for index in 0..ctx.shards.accounts {
            accounts.push(spawn_core(&ctx, Target::Account(index), &myself).await?);
        }
        let mut coordinators = Vec::new();
        for index in 0..ctx.shards.coordinators {
            coordinators.push(spawn_core(&ctx, Target::Coordinator(index), &myself).await?);
        }
        if let Ok(mut actors) = ctx.actors.write() {
            actors.accounts = accounts.clone();
            actors.coordinators = coordinators.clone();
        }
        // Recovery starts once every actor can be routed to.
        for actor in accounts.iter().chain(coordinators.iter()) {
            actor.cast(CoreMsg::Recover)?;
        }
        Ok(SupervisorState { ctx, restarts: 0 })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let target = {
            let actors = state.ctx.actors.read().map_err(|_| "actor table poisoned")?;
            let find = |list: &Vec<ActorRef<CoreMsg>>| list.iter().position(|a| a.get_id() == cell.get_id());
            find(&actors.accounts)
                .map(Target::Account)
                .or_else(|| find(&actors.coordinators).map(Target::Coordinator))
        };
        let Some(target) = target else { return Ok(()) };
        state.restarts = state.restarts.saturating_add(1);
        state.ctx.metrics.actor_restarts.inc();
        tracing::error!(?target, %error, restarts = state.restarts, "core actor failed; restarting from the store");
        if state.restarts > RESTARTS_MAX {
            state
                .ctx
                .fail(format!("core actors failed {} times; last: {error}", state.restarts));
            return Err("too many actor restarts".into());
        }
        let actor = spawn_core(&state.ctx, target, &myself).await?;
        if let Ok(mut actors) = state.ctx.actors.write() {
            let slot = match target {
                Target::Account(index) => actors.accounts.get_mut(index),
                Target::Coordinator(index) => actors.coordinators.get_mut(index),
            };
            if let Some(slot) = slot {
                *slot = actor.clone();
            }
        }
        actor.cast(CoreMsg::Recover)?;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        _state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {}
    }
}
