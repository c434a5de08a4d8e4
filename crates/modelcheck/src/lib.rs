//! Exhaustive model checker of the two-phase deduction protocol, over the real sans-IO core.
//!
//! A coordinator province and two grantor provinces run `exchange_core::node::NodeCore`
//! unchanged; stateright explores every interleaving of message deliveries, losses,
//! duplications, timer firings, crashes with recovery, a revocation and a freeze, within small
//! fault budgets (and, optionally, a bound on run length), and checks the protocol's
//! invariants in every reachable state. See `docs/modelcheck.md` for what is modelled and the
//! latest figures.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod model;
pub mod properties;

use std::time::{Duration, Instant};

use exchange_core::config::Safeguards;
use serde::Serialize;
use stateright::{Checker, Model};

pub use model::{Action, ExchangeModel, State};

/// What to explore. Budgets count faults over a whole run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Messages the network may lose.
    pub losses: u8,
    /// Messages the network may deliver twice.
    pub duplicates: u8,
    /// Node crashes (each followed, whenever the checker chooses, by a restart with recovery).
    pub crashes: u8,
    /// Times a hospital may resubmit an unanswered settlement after the coordinator restarted.
    pub client_retries: u8,
    /// Whether G1's binding may be revoked (once, at any point).
    pub revoke: bool,
    /// Whether G1's account may be frozen (once, at any point).
    pub freeze: bool,
    /// Settlements by the patient (1 or 2; two contend for G1's account).
    pub settlements: usize,
    /// Submit every settlement in the initial state, in order, so that all of them are in
    /// flight from the first step. Off: each first submission is an explored action (it may
    /// come at any point). Client retries stay explored actions either way.
    pub submit_at_start: bool,
    /// The self-pay part of each settlement, in fen.
    pub self_pay_fen: u64,
    /// Opening balances of the grantors, in fen.
    pub grantor_one_fen: u64,
    pub grantor_two_fen: u64,
    /// No timer fires past this time on a node's own clock (bounds resends and queries).
    pub horizon_ms: u64,
    /// Fire coordinators' resend timers during exploration too (a much larger state space;
    /// their effect is otherwise covered by the duplication fault).
    pub explore_resends: bool,
    /// Deliver acknowledgements at once. An ack only clears the coordinator's outbox; a late or
    /// lost one only makes the coordinator send its decision again, which the duplication
    /// fault covers. Off: acks travel like every other message (a larger state space).
    pub eager_acks: bool,
    /// Drop timers whose firing would change nothing (see `ExchangeModel::drop_stale_timers`).
    pub drop_stale_timers: bool,
    /// Check "every hold eventually resolves" (a fault-free completion from every state).
    pub liveness: bool,
    /// Steps of that completion before giving up.
    pub completion_steps_max: usize,
    /// Protocol safeguards; switch one off to see the checker catch it.
    pub safeguards: Safeguards,
    pub threads: usize,
    /// Stop after this many states (0: explore everything). A stopped check is incomplete.
    pub states_max: usize,
    /// Explore only runs of at most this many steps from the initial state (0: no bound). A
    /// bounded check that finishes is complete *within its bound*: every run of at most that
    /// many steps was explored and every property checked in each of its states, and the
    /// liveness property still completes each cut-off run fault-free and checks the safety
    /// properties at its end.
    pub depth_max: usize,
    pub timeout: Option<Duration>,
}

impl Default for CheckOptions {
    /// Two contending settlements with one fault of each kind at once: the full picture, but
    /// far too large to finish in minutes; [`default_suite`] splits it into parts that do.
    fn default() -> CheckOptions {
        CheckOptions {
            losses: 1,
            duplicates: 1,
            crashes: 1,
            client_retries: 1,
            revoke: true,
            freeze: true,
            settlements: 2,
            submit_at_start: false,
            self_pay_fen: 150,
            grantor_one_fen: 100,
            grantor_two_fen: 100,
            horizon_ms: 4_000,
            explore_resends: false,
            eager_acks: true,
            drop_stale_timers: true,
            liveness: true,
            completion_steps_max: 400,
            safeguards: Safeguards::default(),
            threads: 2,
            states_max: 0,
            depth_max: 0,
            timeout: None,
        }
    }
}

impl CheckOptions {
    /// A configuration small enough for debug-build tests: no faults at all.
    pub fn small() -> CheckOptions {
        CheckOptions {
            losses: 0,
            duplicates: 0,
            crashes: 0,
            client_retries: 0,
            revoke: false,
            freeze: false,
            ..CheckOptions::default()
        }
    }
}

/// Steps of the bounded two-settlement configuration in the default suite (release build:
/// about 1.6 million states, 20 s and 3 GB on two cores).
pub const SUITE_DEPTH_MAX: usize = 8;

/// Two settlements contending for G1's account, both in flight from the start, with one loss,
/// one duplication, one crash of any node (restart with recovery) and one client retry, every
/// run cut after `depth_max` steps. The whole space of this configuration does not finish in
/// hours; the bound makes it exhaustive up to that run length (see [`CheckOptions::depth_max`]).
pub fn two_settlements_all_faults(depth_max: usize) -> CheckOptions {
    CheckOptions {
        losses: 1,
        duplicates: 1,
        crashes: 1,
        client_retries: 1,
        revoke: false,
        freeze: false,
        settlements: 2,
        submit_at_start: true,
        depth_max,
        ..CheckOptions::default()
    }
}

/// The default suite: every fault kind, each in the largest configuration that still finishes
/// in well under a minute in a release build on two cores, and then two contending
/// settlements with loss, duplication, a crash and a retry together, bounded in run length.
/// Exploring all fault kinds together with two settlements without a bound is far beyond that
/// (the loss budget alone multiplies the space by ten).
pub fn default_suite() -> Vec<(String, CheckOptions)> {
    let base = CheckOptions::small();
    let one = CheckOptions {
        settlements: 1,
        ..base.clone()
    };
    vec![
        ("two contending settlements, no faults".into(), base.clone()),
        (
            "two contending settlements, one loss".into(),
            CheckOptions { losses: 1, ..base },
        ),
        (
            "one settlement, one duplication".into(),
            CheckOptions {
                duplicates: 1,
                ..one.clone()
            },
        ),
        (
            "one settlement, revocation and freeze".into(),
            CheckOptions {
                revoke: true,
                freeze: true,
                ..one.clone()
            },
        ),
        (
            "one settlement, one crash, one client retry".into(),
            CheckOptions {
                crashes: 1,
                client_retries: 1,
                ..one
            },
        ),
        (
            format!("two settlements, 1 loss, 1 dup, 1 crash, 1 retry, <= {SUITE_DEPTH_MAX} steps"),
            two_settlements_all_faults(SUITE_DEPTH_MAX),
        ),
    ]
}

/// Runs several configurations and sums their figures; each violation names its configuration.
pub fn check_all(configurations: &[(String, CheckOptions)]) -> Result<CheckReport, SetupError> {
    let started = Instant::now();
    let mut total: Option<CheckReport> = None;
    for (name, options) in configurations {
        let mut report = check(options)?;
        for violation in &mut report.violations {
            violation.configuration = name.clone();
        }
        report.configurations = vec![ConfigurationResult {
            name: name.clone(),
            states_explored: report.states_explored,
            unique_states: report.unique_states,
            complete: report.complete,
            depth_max: options.depth_max,
            violations: report.violations.len(),
            elapsed: report.elapsed,
        }];
        total = Some(match total {
            None => report,
            Some(mut sum) => {
                sum.states_explored = sum.states_explored.saturating_add(report.states_explored);
                sum.unique_states = sum.unique_states.saturating_add(report.unique_states);
                sum.max_depth = sum.max_depth.max(report.max_depth);
                sum.complete &= report.complete;
                sum.depth_max = match (sum.depth_max, report.depth_max) {
                    (0, _) | (_, 0) => 0,
                    (a, b) => a.min(b),
                };
                for (held, new) in sum.properties.iter_mut().zip(&report.properties) {
                    held.holds &= new.holds;
                }
                sum.violations.extend(report.violations);
                sum.configurations.extend(report.configurations);
                sum
            }
        });
    }
    let mut report = total.ok_or_else(|| SetupError("no configuration to check".into()))?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// One configuration's figures in a suite.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigurationResult {
    pub name: String,
    pub states_explored: usize,
    pub unique_states: usize,
    pub complete: bool,
    /// The bound on run length it was explored under (0: none).
    pub depth_max: usize,
    pub violations: usize,
    #[serde(serialize_with = "serialize_seconds")]
    pub elapsed: Duration,
}

/// One broken property with the shortest run found that breaks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The configuration of a suite it was found in (empty for a single check).
    pub configuration: String,
    pub property: String,
    /// The steps from the initial state, then `violated: <why>` for the last state.
    pub trace: Vec<String>,
}

/// One property's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PropertyResult {
    pub name: String,
    pub holds: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// States generated, counting revisits (stateright's `state_count`).
    pub states_explored: usize,
    pub unique_states: usize,
    pub max_depth: usize,
    /// Whether the whole bounded state space was explored (false: a state or time limit
    /// stopped it). With a bound on run length, complete within that bound.
    pub complete: bool,
    /// The bound on run length (`CheckOptions::depth_max`; 0: none). For a suite, 0 as soon
    /// as one configuration is unbounded, else the smallest bound.
    pub depth_max: usize,
    pub properties: Vec<PropertyResult>,
    pub violations: Vec<Violation>,
    /// Per configuration, when several were checked.
    pub configurations: Vec<ConfigurationResult>,
    #[serde(serialize_with = "serialize_seconds")]
    pub elapsed: Duration,
}

fn serialize_seconds<S: serde::Serializer>(elapsed: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(elapsed.as_secs_f64())
}

/// Why a check could not run at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "model setup failed: {}", self.0)
    }
}

impl std::error::Error for SetupError {}

/// Explores the model breadth-first (shortest counterexamples) and reports every property.
pub fn check(options: &CheckOptions) -> Result<CheckReport, SetupError> {
    let started = Instant::now();
    let model = ExchangeModel::new(options.clone()).map_err(SetupError)?;
    let names: Vec<&'static str> = model.properties().iter().map(|p| p.name).collect();
    let mut builder = model.clone().checker().threads(options.threads.max(1));
    if options.states_max > 0 {
        builder = builder.target_state_count(options.states_max);
    }
    if let Some(timeout) = options.timeout {
        builder = builder.timeout(timeout);
    }
    let checker = builder.spawn_bfs().join();
    let mut properties = Vec::new();
    let mut violations = Vec::new();
    for name in names {
        let path = checker.discovery(name);
        properties.push(PropertyResult {
            name: name.to_string(),
            holds: path.is_none(),
        });
        if let Some(path) = path {
            violations.push(Violation {
                configuration: String::new(),
                property: name.to_string(),
                trace: trace(&model, name, path.into_vec()),
            });
        }
    }
    let complete = checker.is_done()
        && (options.states_max == 0 || checker.state_count() < options.states_max)
        && options.timeout.is_none_or(|t| started.elapsed() < t);
    Ok(CheckReport {
        states_explored: checker.state_count(),
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        complete,
        depth_max: options.depth_max,
        properties,
        violations,
        configurations: Vec::new(),
        elapsed: started.elapsed(),
    })
}

fn trace(model: &ExchangeModel, name: &str, steps: Vec<(State, Option<Action>)>) -> Vec<String> {
    let mut lines = Vec::with_capacity(steps.len().saturating_add(2));
    let mut last = None;
    for (index, (state, action)) in steps.into_iter().enumerate() {
        if let Some(action) = &action {
            lines.push(format!(
                "{:>3}. {}",
                index.saturating_add(1),
                model.describe_step(&state, action)
            ));
        }
        last = Some(state);
    }
    if let Some(state) = last {
        lines.push(format!("state: {}", summary(&state)));
        match properties::explain(model, name, &state) {
            Err(why) => lines.push(format!("violated: {why}")),
            Ok(()) => lines.push("violated: (the last state passes on re-check)".into()),
        }
    }
    lines
}

/// Balances, holds and fences of every node, for the end of a trace.
pub fn summary(state: &State) -> String {
    let mut parts = Vec::new();
    for node in &state.nodes {
        let tables = node.ledger.tables();
        let accounts: Vec<String> = tables
            .accounts
            .values()
            .map(|a| format!("{} balance {} held {}", a.person, a.balance, a.held))
            .collect();
        let fences: Vec<String> = tables
            .fences
            .iter()
            .map(|(leg, fence)| format!("{leg}={}", fence_name(fence)))
            .collect();
        let decided: Vec<String> = tables
            .settlements
            .values()
            .map(|r| {
                let legs: Vec<String> = r.legs.iter().map(|l| format!("{}:{}", l.leg, l.amount)).collect();
                format!("{} COMMIT [{}]", r.request.settlement, legs.join(" "))
            })
            .collect();
        parts.push(format!(
            "{}{} clock {} ms: accounts [{}] fences [{}] records [{}]",
            node.province,
            if node.core.is_some() { "" } else { " (down)" },
            node.clock_ms,
            accounts.join("; "),
            fences.join(" "),
            decided.join("; ")
        ));
    }
    parts.push(format!("{} message(s) in flight", state.network.len()));
    parts.join(" | ")
}

fn fence_name(fence: &exchange_core::records::Fence) -> String {
    use exchange_core::records::Fence;
    match fence {
        Fence::Prepared(hold) => format!("prepared({})", hold.amount),
        Fence::Committed { amount, .. } => format!("committed({amount})"),
        Fence::Aborted { refusal } => format!("aborted({refusal:?})"),
        Fence::Credited { amount, .. } => format!("credited({amount})"),
    }
}
