//! `exchange chaos`: three province nodes as real processes behind fault proxies, under steady
//! load, with `kill -9`, SIGSTOP/SIGCONT, partitions, delays and resets injected at random from
//! a seed; then healing, a bounded quiescence wait and the checks against the client's model
//! (`docs/reliability.md`). Exit code 1 when a check failed.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Args;
use exchange_chaos::{ChaosOptions, ChaosReport, run_chaos, seed_from_clock};
use serde_json::Value;

use crate::Failure;

/// Longest run accepted, seconds (a day).
const DURATION_MAX_S: u64 = 86_400;

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Seconds of faults under load (setup, healing and checks come on top).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seed of the load and of the faults (default: from the clock; the report prints it).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Hospital clients per province.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Families whose patient is insured in each province.
    #[arg(long, default_value_t = 4)]
    families: u32,
    /// Print the faults on stderr as they happen.
    #[arg(long)]
    progress: bool,
}

pub fn run(args: ChaosArgs) -> Result<(), Failure> {
    if args.duration == 0 || args.duration > DURATION_MAX_S {
        return Err(Failure::Input(anyhow!(
            "--duration must be 1 to {DURATION_MAX_S} seconds"
        )));
    }
    if args.clients == 0 || args.clients > 64 || args.families == 0 || args.families > 200 {
        return Err(Failure::Input(anyhow!(
            "--clients must be 1 to 64 and --families 1 to 200"
        )));
    }
    let mut options = ChaosOptions::new(
        std::env::current_exe().context("finding the exchange binary")?,
        Duration::from_secs(args.duration),
        args.seed.unwrap_or_else(seed_from_clock),
    );
    options.clients_per_province = args.clients;
    options.families_per_province = args.families;
    options.progress = args.progress || (!args.json && std::io::stderr().is_terminal());
    let live = options.progress;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = runtime
        .block_on(run_chaos(options))
        .map_err(|error| Failure::Input(anyhow!("the chaos run could not be set up: {error}")))?;
    if args.json {
        println!("{}", json(&report)?);
    } else {
        print_text(&report, !live);
    }
    if report.violations.is_empty() {
        Ok(())
    } else {
        Err(Failure::Check(anyhow!(
            "{} violations (seed {}){}",
            report.violations.len(),
            report.seed,
            report
                .kept_dir
                .as_deref()
                .map(|dir| format!("; the cluster's files are kept in {dir}"))
                .unwrap_or_default()
        )))
    }
}

/// The report as JSON: `violations` is the count, `violation_details` the list.
fn json(report: &ChaosReport) -> Result<String, Failure> {
    let mut value = serde_json::to_value(report).context("report to JSON")?;
    if let Value::Object(map) = &mut value {
        map.insert("violations".into(), Value::from(report.violations.len()));
        map.insert("violation_details".into(), Value::from(report.violations.clone()));
    }
    Ok(value.to_string())
}

fn print_text(report: &ChaosReport, timeline: bool) {
    if timeline {
        for line in &report.timeline {
            println!("{line}");
        }
        println!();
    }
    println!(
        "chaos run: seed {}, {:.0} s of faults under load ({:.0} s in all)",
        report.seed, report.duration_s, report.elapsed_s
    );
    println!();
    println!("operations answered   {:>8}", report.operations);
    for (kind, n) in &report.operations_by_kind {
        println!("  {kind:<19} {n:>8}");
    }
    println!("  refused             {:>8}", report.refused);
    println!("retries (same id)     {:>8}", report.retries);
    println!(
        "unanswered at the end {:>8}  (sent again after healing)",
        report.unacknowledged_at_end
    );
    println!(
        "grantors not paying   {:>8}  (on acknowledged receipts, by reason)",
        report.grantors_not_paying.values().sum::<u64>()
    );
    for (reason, n) in &report.grantors_not_paying {
        println!("  {reason:<19} {n:>8}");
    }
    println!();
    println!(
        "faults injected       {:>8}",
        report.faults_injected.values().sum::<u64>()
    );
    for (kind, n) in &report.faults_injected {
        println!("  {kind:<19} {n:>8}");
    }
    println!("kills                 {:>8}", report.kills);
    println!("pauses                {:>8}", report.pauses);
    println!("partitions            {:>8}", report.partitions);
    println!(
        "proxies               {:>8} connections, {} refused, {} reset, {} bytes swallowed",
        report.proxies.accepted, report.proxies.refused, report.proxies.reset, report.proxies.bytes_swallowed
    );
    println!();
    let c = &report.checked;
    println!(
        "checked: {} settlements acknowledged ({} in two rounds, {} refused), {} refunds, {} credits, {} accounts,",
        c.settlements_acknowledged,
        c.settlements_two_rounds,
        c.settlements_refused,
        c.refunds_acknowledged,
        c.credits_acknowledged,
        c.accounts
    );
    println!(
        "         {} journal entries ({} matched to receipts), {} cross-province legs in {} reconciliations, {} bindings",
        c.journal_entries, c.journal_entries_matched, c.cross_province_legs, c.reconciliations, c.bindings
    );
    println!(
        "quiescence {} after {:.1} s",
        if report.quiescent { "reached" } else { "NOT reached" },
        report.quiescence_s
    );
    println!();
    println!("violations            {:>8}", report.violations.len());
    for violation in &report.violations {
        println!("  {violation}");
    }
}
