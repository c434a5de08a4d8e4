//! Helpers shared by the simulator's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

use exchange_sim::Scenario;

/// Every scenario file of the repository's `simulations/` directory, sorted.
pub fn scenario_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../simulations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("simulations/ exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

pub fn load(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../simulations")
        .join(name);
    Scenario::load(&path).expect("scenario loads")
}

/// Shrinks a scenario's load for quick CI runs in debug builds; timing and faults are kept.
pub fn shrink(scenario: &mut Scenario, factor: f64) {
    let w = &mut scenario.workload;
    for rate in [
        &mut w.settlements_per_s,
        &mut w.refunds_per_s,
        &mut w.credits_per_s,
        &mut w.revocation_races_per_s,
        &mut w.freeze_races_per_s,
    ] {
        *rate *= factor;
    }
}

/// Seeds to run: `SIM_SEEDS` (a soak) or `default`.
pub fn seed_count(default: u64) -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}
