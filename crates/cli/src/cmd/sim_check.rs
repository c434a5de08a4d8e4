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
    /// The budget flags are refused without it (the suite fixes each configuration's budgets).
    #[arg(long)]
    single: bool,
    /// With --single: messages the network may lose in one run [default: 1].
    #[arg(long)]
    budget_loss: Option<u8>,
    /// With --single: messages the network may deliver twice in one run [default: 1].
    #[arg(long)]
    budget_duplicate: Option<u8>,
    /// With --single: node crashes (each with restart and recovery) in one run [default: 1].
    #[arg(long)]
    budget_crash: Option<u8>,
    /// With --single: resubmissions of an unanswered settlement after the coordinator
    /// restarted [default: 1].
    #[arg(long)]
    budget_retry: Option<u8>,
    /// With --single: leave out the revocation of G1's binding.
    #[arg(long)]
    no_revoke: bool,
    /// With --single: leave out the freeze of G1's account.
    #[arg(long)]
    no_freeze: bool,
    /// With --single: concurrent settlements (1 or 2; both draw on G1's account) [default: 2].
    #[arg(long)]
    settlements: Option<usize>,
    /// With --single: submit every settlement before the first step (all in flight at once)
    /// instead of exploring when each is submitted.
    #[arg(long)]
    submit_together: bool,
    /// With --single: explore only runs of at most this many steps; each cut-off run is still
    /// completed fault-free by the liveness property [default: no bound].
    #[arg(long)]
    max_steps: Option<usize>,
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

impl CheckArgs {
    /// The flags that make up a single configuration, when given.
    fn single_only_flags(&self) -> Vec<&'static str> {
        [
            (self.budget_loss.is_some(), "--budget-loss"),
            (self.budget_duplicate.is_some(), "--budget-duplicate"),
            (self.budget_crash.is_some(), "--budget-crash"),
            (self.budget_retry.is_some(), "--budget-retry"),
            (self.no_revoke, "--no-revoke"),
            (self.no_freeze, "--no-freeze"),
            (self.settlements.is_some(), "--settlements"),
            (self.submit_together, "--submit-together"),
            (self.max_steps.is_some(), "--max-steps"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect()
    }
}

fn options(args: &CheckArgs) -> Result<CheckOptions, Failure> {
    let single_only = args.single_only_flags();
    if !args.single && !single_only.is_empty() {
        return Err(Failure::Input(anyhow!(
            "{} only apply with --single: the default suite fixes the budgets of each of its \
             configurations (docs/modelcheck.md); add --single to check one configuration made \
             of these flags",
            single_only.join(", ")
        )));
    }
    let settlements = args.settlements.unwrap_or(2);
    if !(1..=2).contains(&settlements) {
        return Err(Failure::Input(anyhow!("--settlements must be 1 or 2")));
    }
    if args.threads == 0 || args.threads > 256 {
        return Err(Failure::Input(anyhow!("--threads must be between 1 and 256")));
    }
    if args.max_steps == Some(0) {
        return Err(Failure::Input(anyhow!(
            "--max-steps must be at least 1 (leave it out for no bound)"
        )));
    }
    let mut options = CheckOptions {
        losses: args.budget_loss.unwrap_or(1),
        duplicates: args.budget_duplicate.unwrap_or(1),
        crashes: args.budget_crash.unwrap_or(1),
        client_retries: args.budget_retry.unwrap_or(1),
        revoke: !args.no_revoke,
        freeze: !args.no_freeze,
        settlements,
        submit_at_start: args.submit_together,
        depth_max: args.max_steps.unwrap_or(0),
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
    if report.configurations.is_empty() && report.depth_max > 0 {
        println!("run length        at most {} steps", report.depth_max);
    }
    println!("elapsed           {:.1} s", report.elapsed.as_secs_f64());
    println!();
    for property in &report.properties {
        println!(
            "{:<10} {}",
            if property.holds { "ok" } else { "VIOLATED" },
            property.name
        );
    }
    if !report.configurations.is_empty() {
        println!();
    }
    for configuration in &report.configurations {
        println!(
            "{:<62} {:>10} states {:>9} unique {:>6.1} s{}",
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
    // finish; the threads, horizon, liveness, resend, ack, safeguard and limit flags apply to
    // each (the budget flags were refused above).
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }

    fn parse(args: &[&str]) -> CheckArgs {
        Cli::try_parse_from(std::iter::once("check").chain(args.iter().copied()))
            .unwrap()
            .check
    }

    #[test]
    fn budget_flags_without_single_are_refused_as_bad_input() {
        for flags in [
            &["--budget-loss", "2"][..],
            &["--settlements", "1"],
            &["--no-freeze"],
            &["--max-steps", "5"],
            &["--submit-together"],
        ] {
            match options(&parse(flags)) {
                Err(Failure::Input(error)) => {
                    let text = error.to_string();
                    assert!(text.contains(flags[0]) && text.contains("--single"), "{text}");
                }
                other => panic!("{flags:?}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn suite_wide_flags_are_accepted_without_single() {
        let options = options(&parse(&["--threads", "1", "--no-liveness", "--max-states", "10"])).unwrap();
        assert_eq!((options.threads, options.liveness, options.states_max), (1, false, 10));
    }

    #[test]
    fn budget_flags_with_single_make_the_configuration() {
        let options = options(&parse(&[
            "--single",
            "--budget-loss",
            "2",
            "--budget-crash",
            "0",
            "--settlements",
            "1",
            "--no-revoke",
            "--submit-together",
            "--max-steps",
            "6",
        ]))
        .unwrap();
        assert_eq!(
            (
                options.losses,
                options.duplicates,
                options.crashes,
                options.settlements,
                options.revoke,
                options.freeze
            ),
            (2, 1, 0, 1, false, true)
        );
        assert!(options.submit_at_start);
        assert_eq!(options.depth_max, 6);
        assert!(matches!(
            super::options(&parse(&["--single", "--max-steps", "0"])),
            Err(Failure::Input(_))
        ));
    }
}
