//! Mutation checks: with one protocol safeguard switched off, some seed of some scenario must
//! find a violation. Proof that the simulator catches the bugs it exists for.

mod common;

use exchange_sim::{Safeguards, run_seeds};

/// Seeds tried per mutation before giving up.
const MUTATION_SEEDS: u64 = 6;

fn finds_violation(scenario_file: &str, load: f64, safeguards: Safeguards) -> Vec<String> {
    let mut scenario = common::load(scenario_file);
    common::shrink(&mut scenario, load);
    let seeds: Vec<u64> = (1..=MUTATION_SEEDS).collect();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = run_seeds(&scenario, &seeds, jobs, safeguards, &|_| {});
    summary
        .violations
        .iter()
        .map(|v| format!("seed {}: {}: {}", v.seed, v.violation.invariant, v.violation.detail))
        .collect()
}

#[test]
fn without_the_fence_duplicates_break_exactly_once() {
    let safeguards = Safeguards {
        fence: false,
        ..Safeguards::default()
    };
    let found = finds_violation("message-storm.toml", 0.2, safeguards);
    assert!(!found.is_empty(), "no seed caught the missing fence");
}

#[test]
fn releasing_without_asking_breaks_atomicity_under_partitions() {
    let safeguards = Safeguards {
        ask_before_release: false,
        ..Safeguards::default()
    };
    let found = finds_violation("partition-during-prepare.toml", 0.2, safeguards);
    assert!(!found.is_empty(), "no seed caught the release without asking");
}

#[test]
fn with_every_safeguard_the_same_runs_are_clean() {
    for file in ["message-storm.toml", "partition-during-prepare.toml"] {
        let found = finds_violation(file, 0.2, Safeguards::default());
        assert!(found.is_empty(), "{file}: {found:#?}");
    }
}
