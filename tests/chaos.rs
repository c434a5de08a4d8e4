//! Chaos on real processes: three province nodes behind fault proxies under steady load, with
//! `kill -9`, SIGSTOP/SIGCONT, partitions, lost replies, delays and resets injected at random;
//! then healing and the checks against the client's model (`docs/reliability.md`).
//!
//! The short run is part of `cargo test`. The long one runs with `CHAOS_LONG=1`
//! (`CHAOS_DURATION_S` seconds, 300 by default); `CHAOS_SEED` picks the seed of either.

use std::path::PathBuf;
use std::time::Duration;

use exchange_chaos::{ChaosOptions, ChaosReport, run_chaos};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_exchange"))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

async fn chaos(duration_s: u64, default_seed: u64) -> ChaosReport {
    let seed = env_u64("CHAOS_SEED").unwrap_or(default_seed);
    let mut options = ChaosOptions::new(exe(), Duration::from_secs(duration_s), seed);
    options.progress = true;
    let report = run_chaos(options).await.expect("the chaos run is set up");
    eprintln!(
        "seed {}: {} operations, faults {:?}, {} violations, checked {:?}",
        report.seed,
        report.operations,
        report.faults_injected,
        report.violations.len(),
        report.checked
    );
    report
}

fn assert_sound(report: &ChaosReport) {
    assert!(
        report.violations.is_empty(),
        "seed {}: violations (files kept in {:?}):\n{}",
        report.seed,
        report.kept_dir,
        report.violations.join("\n")
    );
    // The faults happened and bit.
    assert!(report.kills >= 1, "no kill: {:?}", report.faults_injected);
    assert!(report.pauses >= 1, "no pause: {:?}", report.faults_injected);
    assert!(report.partitions >= 1, "no partition: {:?}", report.faults_injected);
    assert!(
        report.proxies.refused + report.proxies.reset + report.proxies.bytes_swallowed > 0,
        "the proxies never cut anything: {:?}",
        report.proxies
    );
    // The checks looked at real work: settlements across provinces, refunds, reconciliations.
    let c = &report.checked;
    assert!(c.settlements_acknowledged >= 20, "{c:?}");
    assert!(c.refunds_acknowledged >= 1, "{c:?}");
    assert!(c.cross_province_legs >= 20, "{c:?}");
    assert_eq!(c.reconciliations, 6, "{c:?}");
    assert!(c.journal_entries_matched >= c.settlements_acknowledged, "{c:?}");
    assert!(report.quiescent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_chaos_run_keeps_every_promise() {
    let report = chaos(env_u64("CHAOS_SHORT_S").unwrap_or(20), 20_251_130).await;
    assert_sound(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_chaos_run_keeps_every_promise() {
    if std::env::var("CHAOS_LONG").as_deref() != Ok("1") {
        eprintln!("long chaos run skipped: set CHAOS_LONG=1 (and CHAOS_DURATION_S, default 300) to run it");
        return;
    }
    let report = chaos(env_u64("CHAOS_DURATION_S").unwrap_or(300), 7).await;
    assert_sound(&report);
}
