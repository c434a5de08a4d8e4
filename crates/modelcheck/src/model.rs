//! The model: three province nodes running the real core, a faulty network and bounded faults.
//!
//! Each node is a `NodeCore` (volatile) over a `MemLedger` where every applied write is durable
//! at once. The network is a set of envelopes: any envelope may be delivered next (reordering),
//! dropped (loss) or delivered while a copy stays behind (duplication). Time is abstract: a
//! node's clock moves only when its earliest timer fires, and clocks of different nodes are
//! unrelated, so the model covers any clock rate on any node. The per-node clock is bounded by a
//! horizon, which is what makes the state space finite (resends and queries re-arm forever).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use exchange_core::binding::{BindRequest, DocumentKind};
use exchange_core::config::ProtocolConfig;
use exchange_core::effects::{Effects, ReplyTo, Timer, TimerKind};
use exchange_core::ids::{BindingId, SettlementId};
use exchange_core::mem::MemLedger;
use exchange_core::message::{ClientReply, ClientRequest, PeerMessage};
use exchange_core::node::{Input, NodeCore};
use exchange_core::records::{Fence, SettleRequest};
use exchange_core::{BindingKind, Evidence, Limits, Money, Now, PersonId, Policy, Province, Region, Relation, Scheme};

use crate::CheckOptions;

/// Index of the coordinating node (the patient's province) in [`State::nodes`].
pub const COORDINATOR: usize = 0;
/// Index of the node of grantor G1, whose account both settlements contend for.
pub const GRANTOR_ONE: usize = 1;
/// Index of the node of grantor G2.
pub const GRANTOR_TWO: usize = 2;

/// Wall-clock time of the model's epoch: 2026-03-15 12:00 China time (mid-month, so that no
/// run crosses a monthly-limit boundary by accident).
const WALL_EPOCH_MS: i64 = 1_773_547_200_000;

const REPLY_TO_REVOKE: ReplyTo = 1;
const REPLY_TO_FREEZE: ReplyTo = 2;
const REPLY_TO_SETTLE_BASE: ReplyTo = 1_000;

/// One province node: volatile core (absent while crashed), durable ledger, clock and timers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeState {
    pub province: Province,
    /// Shared like the ledger until a handler runs on it.
    pub core: Option<Arc<NodeCore>>,
    pub incarnation: u32,
    /// Shared between a state and its successors until a write changes it (most steps change
    /// one node's ledger at most), which keeps the checker's queue of states small.
    pub ledger: Arc<MemLedger>,
    pub clock_ms: u64,
    /// Armed timers; lost in a crash. Identical timers collapse, which only removes behaviours.
    pub timers: BTreeSet<Timer>,
}

/// A message on the wire.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Envelope {
    pub from: Province,
    pub to: Province,
    pub message: PeerMessage,
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {}", self.from, self.to, describe_message(&self.message))
    }
}

/// The whole system at one point of a run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub nodes: Vec<NodeState>,
    /// In flight. A set: a resend of a message still in flight adds nothing (a legal loss).
    pub network: BTreeSet<Envelope>,
    /// How many times each settlement was submitted (first try plus client retries).
    pub submissions: Vec<u8>,
    /// Every distinct reply a client received.
    pub replies: Vec<(ReplyTo, ClientReply)>,
    pub losses_left: u8,
    pub duplicates_left: u8,
    pub crashes_left: u8,
    /// Set once the grantor's bureau revoked G1's binding (on G1's node).
    pub revoked: Option<BindingId>,
    /// Set once G1's account was frozen.
    pub frozen: Option<PersonId>,
    /// First handler error or failed write set (a fence compare-and-set that lost).
    pub error: Option<String>,
    /// First `Note::ProtocolViolation` a node reported.
    pub protocol_note: Option<String>,
    /// First prepared hold written after its binding's revocation or its account's freeze.
    pub authority_breach: Option<String>,
    /// Steps taken from the initial state, counted only when the run length is bounded
    /// (`CheckOptions::depth_max`); always 0 otherwise, so that it never splits a state.
    pub steps: usize,
}

impl State {
    pub fn node_of(&self, province: Province) -> Option<usize> {
        self.nodes.iter().position(|n| n.province == province)
    }
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A hospital submits settlement `settlement` (again, when retrying).
    Submit {
        settlement: usize,
    },
    Deliver(Envelope),
    /// Deliver a copy and leave the message in flight.
    Duplicate(Envelope),
    Drop(Envelope),
    /// The node's earliest timer fires; its clock jumps to the timer's time.
    Fire {
        node: usize,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    /// G1's bureau revokes G1's binding to the patient.
    Revoke,
    /// G1's bureau freezes G1's account (card lost).
    Freeze,
}

/// Fixed facts of the scenario, computed once.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub provinces: Vec<Province>,
    pub patient: PersonId,
    pub grantor_one: PersonId,
    pub grantor_two: PersonId,
    pub binding_one: BindingId,
    pub binding_two: BindingId,
    pub settlements: Vec<SettleRequest>,
    pub config: ProtocolConfig,
    pub policy: Policy,
}

/// The model checked by stateright.
#[derive(Clone, Debug)]
pub struct ExchangeModel {
    pub options: CheckOptions,
    pub scenario: Scenario,
    pub init: State,
}

/// The protocol settings of the model: the defaults scaled down (fewer timer firings before
/// the horizon), keeping their relations (vote rounds fit inside the commit window, which is
/// shorter than the participant's hold timeout).
pub fn model_config(options: &CheckOptions) -> ProtocolConfig {
    ProtocolConfig {
        vote_timeout_ms: 1_000,
        hold_timeout_ms: 4_000,
        commit_margin_ms: 1_000,
        query_retry_ms: 1_000,
        resend_initial_ms: 1_000,
        resend_max_ms: 2_000,
        rounds_max: 2,
        settlements_in_flight_max: 16,
        bind_wait_ms: 1_000,
        recovery_query_delay_ms: 200,
        safeguards: options.safeguards,
    }
}

fn now_of(clock_ms: u64) -> Now {
    Now::new(
        clock_ms,
        WALL_EPOCH_MS.saturating_add(i64::try_from(clock_ms).unwrap_or(i64::MAX)),
    )
}

fn money(fen: u64) -> Result<Money, String> {
    Money::from_fen(fen).map_err(|e| e.to_string())
}

fn province(code: u32) -> Result<Province, String> {
    Province::from_code(code).map_err(|e| e.to_string())
}

impl ExchangeModel {
    /// Builds the scenario and its initial state by running the real handlers: accounts are
    /// opened and bindings made and registered through the protocol, until nothing is in flight.
    pub fn new(options: CheckOptions) -> Result<ExchangeModel, String> {
        let config = model_config(&options);
        config.validate().map_err(|e| e.to_string())?;
        let policy = Policy::default();
        let provinces = vec![province(500_000)?, province(110_000)?, province(510_000)?];
        let (coordinator, one, two) = match provinces.as_slice() {
            [c, a, b] => (*c, *a, *b),
            _ => return Err("three provinces expected".into()),
        };
        // Adults born in 1980 (serial 14_600_000 selects the birth day), so face verification
        // applies and is given.
        let patient = PersonId::synthetic(500_101, 14_600_001);
        // The second settlement's patient, bound to G1 only: both settlements contend for G1's
        // account while the second adds a single leg (a third leg keeps the space tractable).
        let patient_two = PersonId::synthetic(500_101, 14_600_004);
        let grantor_one = PersonId::synthetic(110_101, 14_600_002);
        let grantor_two = PersonId::synthetic(510_104, 14_600_003);
        let nodes = provinces
            .iter()
            .map(|&p| NodeState {
                province: p,
                core: Some(Arc::new(NodeCore::new(p, policy.clone(), config.clone(), 1))),
                incarnation: 1,
                ledger: Arc::new(MemLedger::new()),
                clock_ms: 0,
                timers: BTreeSet::new(),
            })
            .collect();
        let mut state = State {
            nodes,
            network: BTreeSet::new(),
            submissions: Vec::new(),
            replies: Vec::new(),
            losses_left: options.losses,
            duplicates_left: options.duplicates,
            crashes_left: options.crashes,
            revoked: None,
            frozen: None,
            error: None,
            protocol_note: None,
            authority_breach: None,
            steps: 0,
        };
        let open = |person: PersonId, scheme: Scheme, balance: u64| -> Result<Input, String> {
            Ok(Input::Client {
                reply_to: 0,
                request: ClientRequest::OpenAccount {
                    person,
                    name: "model person".into(),
                    scheme,
                    balance: money(balance)?,
                },
            })
        };
        let bind = |grantor: PersonId, grantee: PersonId| Input::Client {
            reply_to: 0,
            request: ClientRequest::Bind(BindRequest {
                grantor,
                grantee,
                grantee_province: coordinator,
                relation: Relation::Parent,
                kind: BindingKind::MutualAid,
                limits: Limits::default(),
                evidence: Evidence {
                    document: DocumentKind::HouseholdRegister,
                    reference: "HR-0001".into(),
                    face_verified: true,
                    commitment_signed: true,
                },
            }),
        };
        let mut scratch = ExchangeModel {
            options: options.clone(),
            scenario: Scenario {
                provinces: provinces.clone(),
                patient,
                grantor_one,
                grantor_two,
                binding_one: BindingId::new(one, 1),
                binding_two: BindingId::new(two, 1),
                settlements: Vec::new(),
                config: config.clone(),
                policy: policy.clone(),
            },
            init: state.clone(),
        };
        let setup = [
            (COORDINATOR, open(patient, Scheme::Resident, 0)?),
            (COORDINATOR, open(patient_two, Scheme::Resident, 0)?),
            (
                GRANTOR_ONE,
                open(grantor_one, Scheme::Employee, options.grantor_one_fen)?,
            ),
            (
                GRANTOR_TWO,
                open(grantor_two, Scheme::Employee, options.grantor_two_fen)?,
            ),
            (GRANTOR_ONE, bind(grantor_one, patient)),
            (GRANTOR_TWO, bind(grantor_two, patient)),
            (GRANTOR_ONE, bind(grantor_one, patient_two)),
        ];
        for (node, input) in setup {
            scratch.handle(&mut state, node, input);
        }
        while let Some(envelope) = state.network.iter().next().cloned() {
            state.network.remove(&envelope);
            scratch.deliver(&mut state, envelope);
        }
        if let Some(error) = &state.error {
            return Err(format!("setup failed: {error}"));
        }
        // Setup timers (bind waits, registration resends) are all stale once registration is
        // acknowledged; dropping them starts the model with no time-driven work pending.
        for node in &mut state.nodes {
            node.timers.clear();
            if !node.ledger.tables().outbox.is_empty() {
                return Err(format!("setup left outbox items on {}", node.province));
            }
        }
        for (node, binding) in [
            (GRANTOR_ONE, scratch.scenario.binding_one),
            (GRANTOR_TWO, scratch.scenario.binding_two),
        ] {
            let active = state
                .nodes
                .get(node)
                .and_then(|n| n.ledger.tables().bindings.get(&binding))
                .is_some_and(|b| b.is_active());
            if !active {
                return Err(format!("setup did not activate binding {binding}"));
            }
        }
        state.replies.clear();
        let insured = Region::from_code(500_101).map_err(|e| e.to_string())?;
        let settlements = (1..=options.settlements)
            .map(|k| {
                Ok(SettleRequest {
                    settlement: SettlementId::new(format!("S{k}")).map_err(|e| e.to_string())?,
                    patient: if k == 1 { patient } else { patient_two },
                    total_fee: money(options.self_pay_fen.saturating_mul(2))?,
                    fund_paid: money(options.self_pay_fen)?,
                    self_pay: money(options.self_pay_fen)?,
                    institution: "H5001".into(),
                    treatment_region: insured,
                    insured_region: insured,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        state.submissions = vec![0; settlements.len()];
        scratch.scenario.settlements = settlements;
        if options.submit_at_start {
            for settlement in 0..scratch.scenario.settlements.len() {
                scratch.submit(&mut state, settlement);
            }
            if let Some(error) = &state.error {
                return Err(format!("submission failed: {error}"));
            }
            scratch.drop_stale_timers(&mut state);
        }
        scratch.init = state;
        Ok(scratch)
    }

    /// Runs one input on one node and carries out its effects: writes first, then the rest.
    pub(crate) fn handle(&self, state: &mut State, node: usize, input: Input) {
        let Some(slot) = state.nodes.get_mut(node) else {
            return;
        };
        let now = now_of(slot.clock_ms);
        let Some(core) = slot.core.as_mut().map(Arc::make_mut) else {
            return;
        };
        let result = core.handle(&*slot.ledger, input, now);
        match result {
            Ok(effects) => self.carry_out(state, node, effects),
            Err(error) => {
                let province = slot.province;
                state
                    .error
                    .get_or_insert_with(|| format!("handler error on {province}: {error:?}"));
            }
        }
    }

    fn carry_out(&self, state: &mut State, node: usize, effects: Effects) {
        let Some(slot) = state.nodes.get_mut(node) else {
            return;
        };
        let from = slot.province;
        for write in &effects.writes {
            if let exchange_core::Write::Fence {
                leg,
                new: Fence::Prepared(hold),
                ..
            } = write
            {
                if state.revoked.is_some() && hold.binding == state.revoked {
                    state.authority_breach.get_or_insert_with(|| {
                        format!(
                            "{from} prepared leg {leg} on binding {:?} after its revocation",
                            hold.binding
                        )
                    });
                }
                if state.frozen == Some(hold.account) {
                    state.authority_breach.get_or_insert_with(|| {
                        format!("{from} prepared leg {leg} on account {} after its freeze", hold.account)
                    });
                }
            }
        }
        let applied = if effects.writes.is_empty() {
            Ok(())
        } else {
            Arc::make_mut(&mut slot.ledger).apply(&effects.writes)
        };
        if let Err(error) = applied {
            state
                .error
                .get_or_insert_with(|| format!("write set refused on {from}: {error}"));
            return;
        }
        for timer in effects.timers {
            slot.timers.insert(timer);
        }
        let mut eager = Vec::new();
        for (to, message) in effects.sends {
            let envelope = Envelope { from, to, message };
            if self.options.eager_acks && matches!(envelope.message, PeerMessage::Ack { .. }) {
                eager.push(envelope);
            } else {
                state.network.insert(envelope);
            }
        }
        for reply in effects.replies {
            if !state.replies.contains(&reply) {
                state.replies.push(reply);
            }
        }
        for note in effects.notes {
            if let exchange_core::Note::ProtocolViolation { from: peer, detail } = note {
                state
                    .protocol_note
                    .get_or_insert_with(|| format!("{from} reports a protocol violation by {peer}: {detail}"));
            }
        }
        for envelope in eager {
            let up = state.node_of(envelope.to).is_some_and(|n| Self::is_up(state, n));
            if up {
                self.deliver(state, envelope);
            } else {
                state.network.insert(envelope);
            }
        }
    }

    /// Removes timers whose firing would change nothing but the clock (a vote deadline of a
    /// decided settlement, the deadline of a resolved hold), without moving the clock: the
    /// runs where less time passed are real runs too, and stale timers otherwise multiply
    /// states that differ only in clocks nobody reads.
    pub(crate) fn drop_stale_timers(&self, state: &mut State) {
        for node in 0..state.nodes.len() {
            while let Some(slot) = state.nodes.get(node) {
                let (Some(core), Some(timer)) = (slot.core.as_ref(), slot.timers.first()) else {
                    break;
                };
                let mut trial = NodeCore::clone(core);
                let now = now_of(slot.clock_ms.max(timer.at_mono_ms));
                let stale = match trial.handle(&*slot.ledger, Input::Timer(timer.kind.clone()), now) {
                    Ok(effects) => effects.is_empty() && effects.notes.is_empty() && trial == **core,
                    Err(_) => false,
                };
                if !stale {
                    break;
                }
                let timer = timer.clone();
                if let Some(slot) = state.nodes.get_mut(node) {
                    slot.timers.remove(&timer);
                }
            }
        }
    }

    pub(crate) fn deliver(&self, state: &mut State, envelope: Envelope) {
        let Some(node) = state.node_of(envelope.to) else {
            return;
        };
        let input = Input::Peer {
            from: envelope.from,
            message: envelope.message,
        };
        self.handle(state, node, input);
    }

    /// The timer the exploration fires next on a node: its earliest one within the horizon,
    /// skipping resend timers unless the options explore them. A resend only delivers again a
    /// decision already sent, which the duplication fault covers (a copy may stay in flight and
    /// arrive at any later point); leaving them out of the exploration keeps it tractable. The
    /// fault-free completion of the liveness property fires every timer.
    fn next_explored_timer(&self, slot: &NodeState) -> Option<Timer> {
        slot.timers
            .iter()
            .find(|t| self.options.explore_resends || !matches!(t.kind, TimerKind::Resend(_)))
            .filter(|t| t.at_mono_ms <= self.options.horizon_ms)
            .cloned()
    }

    /// Fires the exploration's next timer on a node (see [`Self::next_explored_timer`]).
    fn fire_explored(&self, state: &mut State, node: usize) {
        let Some(timer) = state.nodes.get(node).and_then(|slot| self.next_explored_timer(slot)) else {
            return;
        };
        self.fire_timer(state, node, timer);
    }

    /// Fires the node's earliest timer, whatever its kind (the fault-free completion).
    pub(crate) fn fire(&self, state: &mut State, node: usize) {
        let Some(timer) = state.nodes.get(node).and_then(|slot| slot.timers.first().cloned()) else {
            return;
        };
        self.fire_timer(state, node, timer);
    }

    fn fire_timer(&self, state: &mut State, node: usize, timer: Timer) {
        let Some(slot) = state.nodes.get_mut(node) else {
            return;
        };
        slot.timers.remove(&timer);
        slot.clock_ms = slot.clock_ms.max(timer.at_mono_ms);
        self.handle(state, node, Input::Timer(timer.kind));
    }

    pub(crate) fn restart(&self, state: &mut State, node: usize) {
        let Some(slot) = state.nodes.get_mut(node) else {
            return;
        };
        if slot.core.is_some() {
            return;
        }
        slot.incarnation = slot.incarnation.saturating_add(1);
        let mut core = NodeCore::new(
            slot.province,
            self.scenario.policy.clone(),
            self.scenario.config.clone(),
            slot.incarnation,
        );
        let tables = slot.ledger.tables();
        let live: Vec<_> = tables.live_holds.iter().cloned().collect();
        let outbox: Vec<_> = tables.outbox.iter().cloned().collect();
        let result = core.recover(&*slot.ledger, &live, &outbox, now_of(slot.clock_ms));
        slot.core = Some(Arc::new(core));
        match result {
            Ok(effects) => self.carry_out(state, node, effects),
            Err(error) => {
                let province = slot.province;
                state
                    .error
                    .get_or_insert_with(|| format!("recovery error on {province}: {error:?}"));
            }
        }
    }

    fn submit(&self, state: &mut State, settlement: usize) {
        let Some(request) = self.scenario.settlements.get(settlement) else {
            return;
        };
        let Some(count) = state.submissions.get_mut(settlement) else {
            return;
        };
        *count = count.saturating_add(1);
        let reply_to = settle_reply_to(settlement, *count);
        let input = Input::Client {
            reply_to,
            request: ClientRequest::Settle(request.clone()),
        };
        self.handle(state, COORDINATOR, input);
    }

    fn is_up(state: &State, node: usize) -> bool {
        state.nodes.get(node).is_some_and(|n| n.core.is_some())
    }

    /// Whether the client of `settlement` already holds a receipt.
    pub fn answered(state: &State, settlement: usize) -> bool {
        state
            .replies
            .iter()
            .any(|(to, reply)| settlement_of_reply(*to) == Some(settlement) && matches!(reply, ClientReply::Settled(_)))
    }

    /// Human-readable step for traces.
    pub fn describe(&self, action: &Action) -> String {
        let name = |node: usize| {
            self.scenario
                .provinces
                .get(node)
                .map(|p| format!("{p} ({})", node_role(node)))
                .unwrap_or_else(|| format!("node {node}"))
        };
        match action {
            Action::Submit { settlement } => {
                let id = self
                    .scenario
                    .settlements
                    .get(*settlement)
                    .map(|s| format!("{} (self-pay {})", s.settlement, s.self_pay))
                    .unwrap_or_default();
                format!("hospital submits settlement {id} to {}", name(COORDINATOR))
            }
            Action::Deliver(envelope) => format!("deliver {envelope}"),
            Action::Duplicate(envelope) => format!("deliver a duplicate of {envelope} (a copy stays in flight)"),
            Action::Drop(envelope) => format!("lose {envelope}"),
            Action::Fire { node } => format!("earliest timer of {} fires", name(*node)),
            Action::Crash { node } => format!("{} crashes (volatile state and timers lost)", name(*node)),
            Action::Restart { node } => format!("{} restarts and recovers", name(*node)),
            Action::Revoke => format!("G1's bureau revokes binding {}", self.scenario.binding_one),
            Action::Freeze => format!("G1's bureau freezes G1's account {}", self.scenario.grantor_one),
        }
    }

    /// A step with the timer's detail (needs the state the step starts from).
    pub fn describe_step(&self, state: &State, action: &Action) -> String {
        let mut text = self.describe(action);
        if let Action::Fire { node } = action {
            if let Some(timer) = state.nodes.get(*node).and_then(|n| n.timers.first()) {
                text.push_str(&format!(": {:?} at {} ms", timer.kind, timer.at_mono_ms));
            }
        }
        text
    }
}

fn node_role(node: usize) -> &'static str {
    match node {
        COORDINATOR => "coordinator",
        GRANTOR_ONE => "G1",
        GRANTOR_TWO => "G2",
        _ => "?",
    }
}

fn settle_reply_to(settlement: usize, attempt: u8) -> ReplyTo {
    let settlement = u64::try_from(settlement).unwrap_or(u64::MAX);
    REPLY_TO_SETTLE_BASE
        .saturating_add(settlement.saturating_mul(10))
        .saturating_add(u64::from(attempt))
}

fn settlement_of_reply(reply_to: ReplyTo) -> Option<usize> {
    let offset = reply_to.checked_sub(REPLY_TO_SETTLE_BASE)?;
    usize::try_from(offset / 10).ok()
}

/// Short text of a message for traces.
pub fn describe_message(message: &PeerMessage) -> String {
    match message {
        PeerMessage::Prepare(p) => format!("prepare {} up to {}", p.leg, p.amount_max),
        PeerMessage::Vote { leg, vote } => format!("vote {leg} {vote:?}"),
        PeerMessage::Commit { leg, amount } => format!("commit {leg} {amount}"),
        PeerMessage::Abort { leg } => format!("abort {leg}"),
        PeerMessage::Ack { leg, outcome } => format!("ack {leg} {outcome:?}"),
        PeerMessage::Query { leg } => format!("query {leg}"),
        other => format!("{} {other:?}", other.kind()),
    }
}

impl stateright::Model for ExchangeModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.init.clone()]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        // A run stops at the first broken rule: what follows would only repeat it.
        if state.error.is_some() {
            return;
        }
        // A bounded check: a run of `depth_max` steps is checked but not extended (the
        // liveness property still completes it fault-free).
        if self.options.depth_max > 0 && state.steps >= self.options.depth_max {
            return;
        }
        let coordinator_up = Self::is_up(state, COORDINATOR);
        for (settlement, &count) in state.submissions.iter().enumerate() {
            let allowed = 1u8.saturating_add(self.options.client_retries);
            if coordinator_up && count < allowed && !Self::answered(state, settlement) {
                // A retry only makes sense once the first try can have been lost with the
                // coordinator's volatile state.
                if count == 0
                    || state
                        .nodes
                        .get(COORDINATOR)
                        .is_some_and(|n| n.incarnation > u32::from(count))
                {
                    actions.push(Action::Submit { settlement });
                }
            }
        }
        for envelope in &state.network {
            let up = state.node_of(envelope.to).is_some_and(|n| Self::is_up(state, n));
            if up {
                actions.push(Action::Deliver(envelope.clone()));
                if state.duplicates_left > 0 {
                    actions.push(Action::Duplicate(envelope.clone()));
                }
            }
            if state.losses_left > 0 {
                actions.push(Action::Drop(envelope.clone()));
            }
        }
        for (node, slot) in state.nodes.iter().enumerate() {
            match &slot.core {
                Some(_) => {
                    if self.next_explored_timer(slot).is_some() {
                        actions.push(Action::Fire { node });
                    }
                    if state.crashes_left > 0 {
                        actions.push(Action::Crash { node });
                    }
                }
                None => actions.push(Action::Restart { node }),
            }
        }
        if Self::is_up(state, GRANTOR_ONE) {
            if self.options.revoke && state.revoked.is_none() {
                actions.push(Action::Revoke);
            }
            if self.options.freeze && state.frozen.is_none() {
                actions.push(Action::Freeze);
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        if self.options.depth_max > 0 {
            state.steps = state.steps.saturating_add(1);
        }
        match action {
            Action::Submit { settlement } => self.submit(&mut state, settlement),
            Action::Deliver(envelope) => {
                state.network.remove(&envelope);
                self.deliver(&mut state, envelope);
            }
            Action::Duplicate(envelope) => {
                state.duplicates_left = state.duplicates_left.saturating_sub(1);
                self.deliver(&mut state, envelope);
            }
            Action::Drop(envelope) => {
                state.losses_left = state.losses_left.saturating_sub(1);
                state.network.remove(&envelope);
            }
            Action::Fire { node } => self.fire_explored(&mut state, node),
            Action::Crash { node } => {
                state.crashes_left = state.crashes_left.saturating_sub(1);
                let slot = state.nodes.get_mut(node)?;
                slot.core = None;
                slot.timers.clear();
            }
            Action::Restart { node } => self.restart(&mut state, node),
            Action::Revoke => {
                let input = Input::Client {
                    reply_to: REPLY_TO_REVOKE,
                    request: ClientRequest::Unbind {
                        binding: self.scenario.binding_one,
                    },
                };
                self.handle(&mut state, GRANTOR_ONE, input);
                state.revoked = Some(self.scenario.binding_one);
            }
            Action::Freeze => {
                let input = Input::Client {
                    reply_to: REPLY_TO_FREEZE,
                    request: ClientRequest::Freeze {
                        person: self.scenario.grantor_one,
                        reason: "card reported lost".into(),
                    },
                };
                self.handle(&mut state, GRANTOR_ONE, input);
                state.frozen = Some(self.scenario.grantor_one);
            }
        }
        if self.options.drop_stale_timers {
            self.drop_stale_timers(&mut state);
        }
        Some(state)
    }

    fn properties(&self) -> Vec<stateright::Property<Self>> {
        crate::properties::all()
    }

    fn format_action(&self, action: &Action) -> String {
        self.describe(action)
    }
}
