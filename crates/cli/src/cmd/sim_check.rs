//! `exchange sim check`: the exhaustive model checker of the two-phase deduction protocol.
//!
//! Thin: it turns flags into `exchange_modelcheck::CheckOptions`, runs the check and prints a
//! table or JSON. Exit code 1 when any property is violated, 2 on bad flags.

use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use exchange_modelcheck::{CheckOptions, CheckReport};

use crate::Failure;

/// A protocol safeguard to switch off, to watch the checker catch its absence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Safeguard {
    /// Participants write and consult the per-leg fence.
    Fence,
    /// A participant past its deadline asks the coordinator instead of releasing.
    AskBeforeRelease,
    /// The coordinator never commits a leg past its deadline minus the margin.
    CommitDeadline,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the report as JSON (keys `states_explored`, `violations`, ...).
    #[arg(long)]
    json: bool,
    /// Checker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Check one configuration made of the budget flags below instead of the default suite.
    #[arg(long)]
    single: bool,
    /// Messages the network may lose in one run.
    #[arg(long, default_value_t = 1)]
    budget_loss: u8,
    /// Messages the network may deliver twice in one run.
    #[arg(long, default_value_t = 1)]
    budget_duplicate: u8,
    /// Node crashes (each with restart and recovery) in one run.
    #[arg(long, default_value_t = 1)]
    budget_crash: u8,
    /// Resubmissions of an unanswered settlement after the coordinator restarted.
    #[arg(long, default_value_t = 1)]
    budget_retry: u8,
    /// Leave out the revocation of G1's binding.
    #[arg(long)]
    no_revoke: bool,
    /// Leave out the freeze of G1's account.
    #[arg(long)]
    no_freeze: bool,
    /// Concurrent settlements (1 or 2; both draw on G1's account).
    #[arg(long, default_value_t = 2)]
    settlements: usize,
    /// No timer fires past this time on a node's clock.
    #[arg(long, default_value_t = 4_000)]
    horizon_ms: u64,
    /// Skip the liveness property (a fault-free completion from every state).
    #[arg(long)]
    no_liveness: bool,
    /// Fire resend timers during exploration too (much larger state space).
    #[arg(long)]
    explore_resends: bool,
    /// Let acknowledgements travel like other messages (larger state space).
    #[arg(long)]
    lazy_acks: bool,
    /// Switch a safeguard off (mutation testing of the checker).
    #[arg(long, value_enum)]
    disable_safeguard: Vec<Safeguard>,
    /// Stop after this many states (0: no limit); a stopped check is incomplete.
    #[arg(long, default_value_t = 0)]
    max_states: usize,
    /// Stop after this many seconds (0: no limit).
    #[arg(long, default_value_t = 0)]
    timeout_s: u64,
}

fn options(args: &CheckArgs) -> Result<CheckOptions, Failure> {
    if !(1..=2).contains(&args.settlements) {
        return Err(Failure::Input(anyhow!("--settlements must be 1 or 2")));
    }
    if args.threads == 0 || args.threads > 256 {
        return Err(Failure::Input(anyhow!("--threads must be between 1 and 256")));
    }
    let mut options = CheckOptions {
        losses: args.budget_loss,
        duplicates: args.budget_duplicate,
        crashes: args.budget_crash,
        client_retries: args.budget_retry,
        revoke: !args.no_revoke,
        freeze: !args.no_freeze,
        settlements: args.settlements,
        horizon_ms: args.horizon_ms,
        liveness: !args.no_liveness,
        explore_resends: args.explore_resends,
        eager_acks: !args.lazy_acks,
        threads: args.threads,
        states_max: args.max_states,
        timeout: (args.timeout_s > 0).then(|| Duration::from_secs(args.timeout_s)),
        ..CheckOptions::default()
    };
    for safeguard in &args.disable_safeguard {
        match safeguard {
            Safeguard::Fence => options.safeguards.fence = false,
            Safeguard::AskBeforeRelease => options.safeguards.ask_before_release = false,
            Safeguard::CommitDeadline => options.safeguards.commit_deadline = false,
        }
    }
    Ok(options)
}

fn print_table(report: &CheckReport) {
    println!("states explored   {}", report.states_explored);
    println!("unique states     {}", report.unique_states);
    println!("max depth         {}", report.max_depth);
    println!(
        "complete          {}",
        if report.complete {
            "yes"
        } else {
            "no (a limit stopped it)"
        }
    );
    println!("elapsed           {:.1} s", report.elapsed.as_secs_f64());
    println!();
    for property in &report.properties {
        println!(
            "{:<10} {}",
            if property.holds { "ok" } else { "VIOLATED" },
            property.name
        );
    }
    for configuration in &report.configurations {
        println!(
            "{:<58} {:>10} states {:>9} unique {:>6.1} s{}",
            configuration.name,
            configuration.states_explored,
            configuration.unique_states,
            configuration.elapsed.as_secs_f64(),
            if configuration.complete { "" } else { " (incomplete)" }
        );
    }
    for violation in &report.violations {
        println!();
        println!(
            "counterexample for \"{}\" ({}):",
            violation.property, violation.configuration
        );
        for line in &violation.trace {
            println!("  {line}");
        }
    }
}

pub fn run(args: CheckArgs) -> Result<(), Failure> {
    let options = options(&args)?;
    // Without --single, the default suite covers every fault kind in configurations that
    // finish; the threads, liveness, resend, ack, safeguard and limit flags apply to each.
    let configurations = if args.single {
        vec![("single".to_string(), options)]
    } else {
        exchange_modelcheck::default_suite()
            .into_iter()
            .map(|(name, suite)| {
                let merged = CheckOptions {
                    horizon_ms: options.horizon_ms,
                    liveness: options.liveness,
                    explore_resends: options.explore_resends,
                    eager_acks: options.eager_acks,
                    safeguards: options.safeguards,
                    threads: options.threads,
                    states_max: options.states_max,
                    timeout: options.timeout,
                    ..suite
                };
                (name, merged)
            })
            .collect()
    };
    let report = exchange_modelcheck::check_all(&configurations).map_err(|e| Failure::Check(anyhow!(e)))?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Failure::Check(anyhow!(e)))?;
        println!("{text}");
    } else {
        print_table(&report);
    }
    if !report.violations.is_empty() {
        let names: Vec<&str> = report.violations.iter().map(|v| v.property.as_str()).collect();
        return Err(Failure::Check(anyhow!("violated: {}", names.join(", "))));
    }
    if !report.complete {
        return Err(Failure::Check(anyhow!(
            "the check stopped at a limit before exploring every state; no violation found so far"
        )));
    }
    Ok(())
}
