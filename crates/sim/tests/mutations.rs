//! Mutation checks: with one protocol safeguard switched off, some seed of some scenario must
//! find a violation — of the invariant that safeguard protects. Proof that the simulator catches
//! the bugs it exists for.

mod common;

use exchange_sim::{Safeguards, SeedViolation, run_seed, run_seeds};

/// Seeds tried per mutation before giving up.
const MUTATION_SEEDS: u64 = 6;

fn violations(scenario_file: &str, load: f64, safeguards: Safeguards) -> Vec<SeedViolation> {
    let mut scenario = common::load(scenario_file);
    common::shrink(&mut scenario, load);
    let seeds: Vec<u64> = (1..=MUTATION_SEEDS).collect();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_seeds(&scenario, &seeds, jobs, safeguards, &|_| {}).violations
}

/// At least one violation, and every one of them is `invariant` with `detail` in its text.
fn assert_caught_as(found: &[SeedViolation], invariant: &str, detail: &str, what: &str) {
    assert!(!found.is_empty(), "no seed caught {what}");
    for v in found {
        assert!(
            v.violation.invariant == invariant && v.violation.detail.contains(detail),
            "{what}: seed {} broke {} ({}), expected {invariant} ({detail})",
            v.seed,
            v.violation.invariant,
            v.violation.detail
        );
    }
}

/// Without the fence a participant forgets a leg it already committed: the duplicate commit a
/// storm delivers finds no record of it. The participant reports it (a protocol violation
/// among honest nodes), and the run stops there — before the duplicate can be applied.
#[test]
fn without_the_fence_a_duplicate_commit_finds_no_leg() {
    let safeguards = Safeguards {
        fence: false,
        ..Safeguards::default()
    };
    let found = violations("message-storm.toml", 0.2, safeguards);
    assert_caught_as(&found, "protocol_note", "commit of unknown leg", "the missing fence");
}

/// A participant that releases its hold at the deadline instead of asking aborts a leg its
/// coordinator then commits: the leg is committed by one side and aborted by the other
/// (atomicity), which the participant reports when the commit arrives.
#[test]
fn releasing_without_asking_commits_an_aborted_leg() {
    let safeguards = Safeguards {
        ask_before_release: false,
        ..Safeguards::default()
    };
    let found = violations("partition-during-prepare.toml", 0.2, safeguards);
    assert_caught_as(
        &found,
        "protocol_note",
        "commit of aborted leg",
        "the release without asking",
    );
}

/// A coordinator that calls a round's vote deadline pointless at its first vote (the node
/// would drop the timer) is caught when a partition keeps another vote away: the deadline,
/// fired anyway, aborts the missing leg and re-plans.
#[test]
fn a_timer_cancelled_while_still_needed_is_caught() {
    let safeguards = Safeguards {
        exact_cancels: false,
        ..Safeguards::default()
    };
    let found = violations("partition-during-prepare.toml", 0.2, safeguards);
    assert_caught_as(&found, "cancelled_timer_acted", "VoteDeadline", "the early cancel");
}

#[test]
fn with_every_safeguard_the_same_runs_are_clean() {
    for file in ["message-storm.toml", "partition-during-prepare.toml"] {
        let found = violations(file, 0.2, Safeguards::default());
        assert!(found.is_empty(), "{file}: {found:#?}");
    }
}

/// The commit deadline margin cannot be caught: under any configuration the scenario
/// validation accepts (`vote_timeout_ms * rounds_max < hold_timeout_ms - commit_margin_ms`) a
/// coordinator decides before its oldest yes vote leaves the commit window, so the check never
/// binds and the run is the same event for event. (And were it to bind, the participant asks
/// before releasing, so a late commit is still safe.) If this test fails, the margin has
/// started to matter: add a mutation test that catches its absence.
#[test]
fn the_commit_deadline_never_binds_under_a_valid_configuration() {
    let without = Safeguards {
        commit_deadline: false,
        ..Safeguards::default()
    };
    for file in ["partition-during-prepare.toml", "message-storm.toml"] {
        let mut scenario = common::load(file);
        common::shrink(&mut scenario, 0.1);
        let with = run_seed(&scenario, 1, Safeguards::default());
        let mutated = run_seed(&scenario, 1, without);
        assert!(mutated.violation.is_none(), "{file}: {:?}", mutated.violation);
        assert_eq!(
            with.trace_hash, mutated.trace_hash,
            "{file}: the commit deadline changed the run"
        );
    }
}
