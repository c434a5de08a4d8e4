//! Every scenario in `simulations/` keeps every invariant for a few seeds, and a seed replays
//! bit for bit. `SIM_SEEDS=1000 cargo test --release -p exchange-sim --test scenarios` soaks.

mod common;

use exchange_sim::{Safeguards, Scenario, run_seed, run_seeds};

/// Load factor for debug-build CI runs (the soak runs scenarios at full load).
const CI_LOAD: f64 = 0.1;

#[test]
fn every_scenario_keeps_every_invariant() {
    let files = common::scenario_files();
    assert!(
        files.len() >= 10,
        "expected at least 10 scenarios, found {}",
        files.len()
    );
    let soak = std::env::var("SIM_SEEDS").is_ok();
    let seeds: Vec<u64> = (1..=common::seed_count(2)).collect();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut peer_batches = 0;
    for file in files {
        let mut scenario = Scenario::load(&file).expect("scenario loads");
        if !soak {
            common::shrink(&mut scenario, CI_LOAD);
        }
        let summary = run_seeds(&scenario, &seeds, jobs, Safeguards::default(), &|_| {});
        assert!(
            summary.violations.is_empty(),
            "{}: {:#?}",
            file.display(),
            summary.violations
        );
        assert!(summary.settlements_committed > 0, "{}: nothing settled", file.display());
        peer_batches += summary.peer_batches;
        // A scenario that silently injects none of a fault it configures tests nothing.
        let configured = scenario.configured_fault_kinds();
        for kind in &configured {
            let injected = summary.faults_injected.get(*kind).copied().unwrap_or(0);
            assert!(
                injected > 0,
                "{}: configures {kind} faults but none was injected ({:?})",
                file.display(),
                summary.faults_injected
            );
        }
        for (kind, count) in &summary.faults_injected {
            assert!(
                *count == 0 || configured.contains(&kind.as_str()),
                "{}: injected {count} {kind} faults it does not configure",
                file.display()
            );
        }
    }
    // Nodes handle one peer call's messages as one batch; the simulator must go that way too.
    assert!(peer_batches > 0, "no scenario delivered a batch of peer messages");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let mut scenario = common::load("national-mesh.toml");
    common::shrink(&mut scenario, CI_LOAD);
    let first = run_seed(&scenario, 7, Safeguards::default());
    let again = run_seed(&scenario, 7, Safeguards::default());
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.events, again.events);
    assert_eq!(first.settlements_committed, again.settlements_committed);
    let other = run_seed(&scenario, 8, Safeguards::default());
    assert_ne!(first.trace_hash, other.trace_hash, "different seeds should differ");
}

#[test]
fn bad_scenarios_are_refused_with_the_file_name() {
    let unknown = Scenario::parse("typo.toml", "name = \"x\"\n[network]\nlos = 0.5\n").unwrap_err();
    let text = unknown.to_string();
    assert!(text.contains("typo.toml") && text.contains("los"), "{text}");
    let bad = Scenario::parse("bad.toml", "name = \"x\"\n[network]\nloss = 1.5\n").unwrap_err();
    assert!(bad.to_string().contains("network.loss"), "{bad}");
    let node = Scenario::parse(
        "node.toml",
        "name = \"x\"\n[[events]]\nkind = \"crash\"\nat_ms = 1\nnode = \"440000\"\n",
    )
    .unwrap_err();
    assert!(node.to_string().contains("events[0]"), "{node}");
    let protocol = Scenario::parse("p.toml", "name = \"x\"\n[protocol]\nhold_timeout_ms = 1000\n").unwrap_err();
    assert!(protocol.to_string().contains("[protocol]"), "{protocol}");
}
