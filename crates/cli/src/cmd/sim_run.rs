//! `exchange sim run`: run a simulation scenario for one or many seeds and report.
//!
//! Exit codes: 0 when every seed kept every invariant; 1 on a violation (the seed, the
//! invariant and the last events before it are printed); 2 on a bad scenario or arguments.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use exchange_sim::{JOBS_MAX, Progress, SEEDS_MAX, Safeguards, Scenario, SeedReport, Summary};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::Failure;

/// Seeds run when neither `--seed` nor `--seeds` is given.
const DEFAULT_SEEDS: u64 = 10;
/// A run shorter than this shows no progress display at all.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario file, e.g. simulations/steady-state.toml.
    pub scenario: PathBuf,
    /// Run this many seeds (from `--first-seed` on).
    #[arg(long, conflicts_with = "seed")]
    pub seeds: Option<u64>,
    /// Run exactly this seed (to reproduce a failure).
    #[arg(long)]
    pub seed: Option<u64>,
    /// First seed of a `--seeds` range.
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Switch a protocol safeguard off (mutation testing): fence, ask_before_release,
    /// commit_deadline. The first two make runs find violations; the commit deadline never
    /// binds under a valid configuration (see docs/simulations.md).
    #[arg(long = "without-safeguard", value_name = "SAFEGUARD")]
    pub without_safeguard: Vec<String>,
}

pub fn run(args: RunArgs) -> Result<(), Failure> {
    let scenario = Scenario::load(&args.scenario).map_err(|e| Failure::Input(anyhow!(e)))?;
    let mut safeguards = Safeguards::default();
    for name in &args.without_safeguard {
        match name.as_str() {
            "fence" => safeguards.fence = false,
            "ask_before_release" => safeguards.ask_before_release = false,
            "commit_deadline" => safeguards.commit_deadline = false,
            other => {
                return Err(Failure::Input(anyhow!(
                    "unknown safeguard {other:?}: use fence, ask_before_release or commit_deadline"
                )));
            }
        }
    }
    let seeds: Vec<u64> = match (args.seed, args.seeds) {
        (Some(seed), _) => vec![seed],
        (None, count) => {
            let count = count.unwrap_or(DEFAULT_SEEDS);
            if count == 0 || count > SEEDS_MAX {
                return Err(Failure::Input(anyhow!("--seeds must be between 1 and {SEEDS_MAX}")));
            }
            let last = args
                .first_seed
                .checked_add(count - 1)
                .context("--first-seed plus --seeds overflows")?;
            (args.first_seed..=last).collect()
        }
    };
    let jobs = match args.jobs {
        Some(0) => return Err(Failure::Input(anyhow!("--jobs must be at least 1"))),
        Some(jobs) => jobs.min(JOBS_MAX),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let shared = Arc::new(Progress::default());
    let show = !args.json && std::io::stderr().is_terminal();
    let progress = progress_bar(&seeds, Arc::clone(&shared));
    let on_seed = |report: &SeedReport| {
        progress.inc(1);
        if report.violation.is_some() {
            progress.set_message(format!("violation at seed {}", report.seed));
        }
    };
    let (done, finished) = mpsc::channel::<()>();
    let summary = std::thread::scope(|scope| {
        if show {
            let progress = progress.clone();
            scope.spawn(move || {
                // Only a run that lasts shows anything: draw once it has taken PROGRESS_AFTER.
                if finished.recv_timeout(PROGRESS_AFTER) == Err(mpsc::RecvTimeoutError::Timeout) {
                    progress.set_draw_target(ProgressDrawTarget::stderr());
                    progress.enable_steady_tick(Duration::from_millis(200));
                }
            });
        }
        let summary = exchange_sim::run_seeds_with_progress(&scenario, &seeds, jobs, safeguards, &on_seed, &shared);
        drop(done);
        summary
    });
    progress.finish_and_clear();
    if args.json {
        let text = serde_json::to_string_pretty(&json_report(&summary)).context("encoding the JSON report")?;
        println!("{text}");
    } else {
        print_table(&summary, &args.scenario.display().to_string());
    }
    match summary.violations.first() {
        None => Ok(()),
        Some(first) => Err(Failure::Check(anyhow!(
            "invariant {} violated at seed {} ({} ms); reproduce with: exchange sim run {} --seed {}",
            first.violation.invariant,
            first.seed,
            first.violation.at_ms,
            args.scenario.display(),
            first.seed
        ))),
    }
}

/// A progress display on stderr, hidden until the caller gives it a terminal: seeds done for
/// several seeds, a spinner with simulated time and events for one.
fn progress_bar(seeds: &[u64], shared: Arc<Progress>) -> ProgressBar {
    let events = Arc::clone(&shared);
    let events = move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{} events", events.events());
    };
    let simulated = move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "simulated {:.1} s", shared.simulated_ms() as f64 / 1_000.0);
    };
    let (bar, template) = match seeds {
        [seed] => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
            format!("{{spinner}} {{elapsed_precise}} seed {seed}: {{simulated}}, {{events}} {{msg}}"),
        ),
        _ => (
            ProgressBar::with_draw_target(Some(seeds.len() as u64), ProgressDrawTarget::hidden()),
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {events} {msg}".to_string(),
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(
            style
                .progress_chars("=> ")
                .with_key("events", events)
                .with_key("simulated", simulated),
        );
    }
    bar
}

fn json_report(summary: &Summary) -> serde_json::Value {
    let mut value = serde_json::to_value(summary).unwrap_or(serde_json::Value::Null);
    if let Some(object) = value.as_object_mut()
        && summary.trace_hash.is_none()
    {
        object.remove("trace_hash");
    }
    value
}

fn print_table(summary: &Summary, file: &str) {
    let row = |name: &str, value: String| println!("  {name:<34} {value}");
    println!("scenario {} ({file})", summary.scenario);
    row("seeds run", summary.seeds_run.to_string());
    row(
        "simulated time",
        format!("{:.1} s (all seeds)", summary.simulated_ms as f64 / 1_000.0),
    );
    row("events", summary.events.to_string());
    row("settlements committed", summary.settlements_committed.to_string());
    row("  re-planned", summary.settlements_replanned.to_string());
    row("  cash only", summary.settlements_cash_only.to_string());
    row("refunds committed", summary.refunds_committed.to_string());
    row("holds resolved", summary.holds_resolved.to_string());
    row("peer batches", summary.peer_batches.to_string());
    row(
        "longest in-doubt hold",
        format!("{} ms", summary.longest_in_doubt_hold_ms),
    );
    let faults: Vec<String> = summary
        .faults_injected
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    row(
        "faults injected",
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        },
    );
    let errors: Vec<String> = summary
        .client_errors
        .iter()
        .map(|(reason, count)| format!("{reason} {count}"))
        .collect();
    row(
        "client refusals",
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(", ")
        },
    );
    row("violations", summary.violations.len().to_string());
    if let Some(hash) = &summary.trace_hash {
        row("trace hash", hash.clone());
    }
    row(
        "speed",
        format!(
            "{:.0} settlements/s of wall time ({:.0} per thread, {} threads, {:.2} s)",
            summary.settlements_per_wall_s,
            summary.settlements_per_wall_s_per_job,
            summary.jobs,
            summary.wall_ms as f64 / 1_000.0
        ),
    );
    for failure in &summary.violations {
        println!();
        println!(
            "VIOLATION seed {} at {} ms: {}",
            failure.seed, failure.violation.at_ms, failure.violation.invariant
        );
        println!("  {}", failure.violation.detail.replace('\n', "\n  "));
        println!("  last events before it:");
        for event in &failure.violation.last_events {
            println!("    {event}");
        }
    }
}
