//! Deterministic simulation of many province nodes running the real core under faults.
//!
//! A scenario file (`simulations/*.toml`, see [`scenario`]) names the cluster, its population
//! and workload, and the faults; [`run_seed`] runs it for one seed and checks the invariants
//! ([`checks`]) during and after the run. The same seed and the same code give the same run,
//! bit for bit: one seeded generator drives everything, every collection that affects the run
//! is ordered, and the trace hash fingerprints every delivered event and the ledgers the run
//! leaves behind ([`trace`]).

pub mod checks;
pub mod clock;
pub mod error;
pub mod ledger;
pub mod scenario;
pub mod trace;
pub mod world;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

pub use error::ScenarioError;
pub use exchange_core::config::Safeguards;
pub use scenario::Scenario;
pub use world::{RunOptions, SeedReport, Violation};

/// Most seeds one call runs.
pub const SEEDS_MAX: u64 = 10_000_000;
/// Most worker threads.
pub const JOBS_MAX: usize = 256;

/// How far running seeds have got, for a progress display; updated every few thousand events.
#[derive(Debug, Default)]
pub struct Progress {
    events: AtomicU64,
    simulated_ms: AtomicU64,
}

impl Progress {
    /// Events processed so far, over every seed.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Simulated time of the seed that reported last, in ms.
    pub fn simulated_ms(&self) -> u64 {
        self.simulated_ms.load(Ordering::Relaxed)
    }

    fn add(&self, events: u64, simulated_ms: u64) {
        self.events.fetch_add(events, Ordering::Relaxed);
        self.simulated_ms.store(simulated_ms, Ordering::Relaxed);
    }
}

/// Runs one seed. On a violation the seed is run again, deterministically, with event
/// descriptions on, to report the last events before it.
pub fn run_seed(scenario: &Scenario, seed: u64, safeguards: Safeguards) -> SeedReport {
    run_seed_with_progress(scenario, seed, safeguards, &Progress::default())
}

/// [`run_seed`], publishing simulated time and events to `progress` as the run goes.
pub fn run_seed_with_progress(
    scenario: &Scenario,
    seed: u64,
    safeguards: Safeguards,
    progress: &Progress,
) -> SeedReport {
    let fast = world::World::new(scenario, seed, RunOptions { detail: false }, safeguards)
        .with_progress(progress)
        .run(None);
    let Some(violation) = &fast.violation else {
        return fast;
    };
    let detailed =
        world::World::new(scenario, seed, RunOptions { detail: true }, safeguards).run(Some(violation.event_index));
    let mut report = fast;
    if let (Some(first), Some(again)) = (report.violation.as_mut(), detailed.violation) {
        if again.invariant == first.invariant && again.at_ms == first.at_ms {
            first.last_events = again.last_events;
        } else {
            first.last_events = vec![format!(
                "(the detailed re-run found {} at {} ms instead: the run is not deterministic)",
                again.invariant, again.at_ms
            )];
        }
    }
    report
}

/// One failing seed in a summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SeedViolation {
    pub seed: u64,
    #[serde(flatten)]
    pub violation: Violation,
}

/// Totals over every seed run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub scenario: String,
    pub seeds_run: u64,
    pub simulated_ms: u64,
    pub events: u64,
    pub settlements_committed: u64,
    pub settlements_replanned: u64,
    pub settlements_cash_only: u64,
    pub refunds_committed: u64,
    pub holds_resolved: u64,
    /// Peer deliveries handled as one batch of several messages (see `SeedReport`).
    pub peer_batches: u64,
    pub faults_injected: BTreeMap<String, u64>,
    pub longest_in_doubt_hold_ms: u64,
    pub client_errors: BTreeMap<String, u64>,
    pub violations: Vec<SeedViolation>,
    /// The trace hash, when exactly one seed ran.
    pub trace_hash: Option<String>,
    pub wall_ms: u64,
    pub jobs: usize,
    /// Simulated settlements decided per second of wall time, over all threads.
    pub settlements_per_wall_s: f64,
    /// The same per worker thread.
    pub settlements_per_wall_s_per_job: f64,
}

impl Summary {
    fn add(&mut self, report: &SeedReport) {
        self.seeds_run = self.seeds_run.saturating_add(1);
        self.simulated_ms = self.simulated_ms.saturating_add(report.simulated_ms);
        self.events = self.events.saturating_add(report.events);
        self.settlements_committed = self.settlements_committed.saturating_add(report.settlements_committed);
        self.settlements_replanned = self.settlements_replanned.saturating_add(report.settlements_replanned);
        self.settlements_cash_only = self.settlements_cash_only.saturating_add(report.settlements_cash_only);
        self.refunds_committed = self.refunds_committed.saturating_add(report.refunds_committed);
        self.holds_resolved = self.holds_resolved.saturating_add(report.holds_resolved);
        self.peer_batches = self.peer_batches.saturating_add(report.peer_batches);
        for (kind, count) in &report.faults_injected {
            let total = self.faults_injected.entry(kind.clone()).or_default();
            *total = total.saturating_add(*count);
        }
        for (reason, count) in &report.client_errors {
            let total = self.client_errors.entry(reason.clone()).or_default();
            *total = total.saturating_add(*count);
        }
        self.longest_in_doubt_hold_ms = self.longest_in_doubt_hold_ms.max(report.longest_in_doubt_hold_ms);
        if let Some(violation) = &report.violation {
            self.violations.push(SeedViolation {
                seed: report.seed,
                violation: violation.clone(),
            });
        }
    }
}

/// Runs `seeds` on `jobs` threads and sums up. Stops starting new seeds after the first
/// violation (seeds already running finish). `on_seed` is called as each seed finishes.
pub fn run_seeds(
    scenario: &Scenario,
    seeds: &[u64],
    jobs: usize,
    safeguards: Safeguards,
    on_seed: &(dyn Fn(&SeedReport) + Sync),
) -> Summary {
    run_seeds_with_progress(scenario, seeds, jobs, safeguards, on_seed, &Progress::default())
}

/// [`run_seeds`], publishing events and simulated time to `progress` as the seeds run.
pub fn run_seeds_with_progress(
    scenario: &Scenario,
    seeds: &[u64],
    jobs: usize,
    safeguards: Safeguards,
    on_seed: &(dyn Fn(&SeedReport) + Sync),
    progress: &Progress,
) -> Summary {
    let started = Instant::now();
    let jobs = jobs.clamp(1, JOBS_MAX).min(seeds.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let reports: Mutex<Vec<SeedReport>> = Mutex::new(Vec::with_capacity(seeds.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(index) else {
                        break;
                    };
                    let report = run_seed_with_progress(scenario, seed, safeguards, progress);
                    if report.violation.is_some() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    on_seed(&report);
                    if let Ok(mut reports) = reports.lock() {
                        reports.push(report);
                    }
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_default();
    reports.sort_by_key(|r| r.seed);
    let mut summary = Summary {
        scenario: scenario.name.clone(),
        jobs,
        ..Summary::default()
    };
    for report in &reports {
        summary.add(report);
    }
    if let [only] = reports.as_slice() {
        summary.trace_hash = Some(only.trace_hash.clone());
    }
    summary.wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let wall_s = started.elapsed().as_secs_f64().max(1e-9);
    summary.settlements_per_wall_s = summary.settlements_committed as f64 / wall_s;
    summary.settlements_per_wall_s_per_job = summary.settlements_per_wall_s / jobs as f64;
    summary
}
