//! The supervisor: starts the peer links and the core actors, and restarts a failed one (a
//! core actor from the store; a link afresh, its queue lost: every protocol message is resent
//! or asked for again, so a lost queue costs time, never money).

use exchange_core::Province;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::context::Context;
use crate::core_actor::{CoreActor, CoreArgs, CoreMsg};
use crate::peer::{PeerArgs, PeerLink};
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

/// Starts the link to `province` under the supervisor and makes it the one messages go to.
async fn spawn_link(
    ctx: &Context,
    province: Province,
    supervisor: &ActorRef<SupervisorMsg>,
) -> Result<(), ActorProcessingErr> {
    let Some(client) = ctx.peer_clients.get(&province).cloned() else {
        return Ok(());
    };
    let args = PeerArgs {
        ctx: ctx.clone(),
        province,
        client,
    };
    let (link, _handle) = Actor::spawn_linked(None, PeerLink, args, supervisor.get_cell()).await?;
    if let Ok(mut peers) = ctx.peers.write() {
        peers.insert(province, link);
    }
    Ok(())
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
        // Links first: recovery below may send at once.
        let provinces: Vec<Province> = ctx.peer_clients.keys().copied().collect();
        for province in provinces {
            spawn_link(&ctx, province, &myself).await?;
        }
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
        let Some(target) = target else {
            let link = state.ctx.peers.read().ok().and_then(|peers| {
                peers
                    .iter()
                    .find(|(_, link)| link.get_id() == cell.get_id())
                    .map(|(province, _)| *province)
            });
            if let Some(province) = link {
                state.restarts = state.restarts.saturating_add(1);
                state.ctx.metrics.actor_restarts.inc();
                tracing::error!(peer = %province, %error, restarts = state.restarts, "peer link failed; restarting it");
                if state.restarts > RESTARTS_MAX {
                    state
                        .ctx
                        .fail(format!("actors failed {} times; last: {error}", state.restarts));
                    return Err("too many actor restarts".into());
                }
                spawn_link(&state.ctx, province, &myself).await?;
            }
            return Ok(());
        };
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
