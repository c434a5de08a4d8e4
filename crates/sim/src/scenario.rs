//! Scenario files (`simulations/*.toml`): the cluster, its population, the workload and the faults.
//!
//! Every table and field is optional except `name`; unknown fields are refused so that a typo
//! never silently turns a fault off. [`Scenario::load`] reads, parses and validates a file and
//! names the file in every error.

use std::path::Path;

use exchange_core::{Policy, ProtocolConfig, Province};
use serde::Deserialize;

use crate::error::ScenarioError;

/// Longest simulated run (work phase), in ms: one simulated day.
pub const DURATION_MS_MAX: u64 = 86_400_000;
/// Most accounts the simulator opens on one node.
pub const ACCOUNTS_PER_PROVINCE_MAX: u32 = 200_000;
/// Most cross-province families.
pub const FAMILIES_MAX: u32 = 200_000;
/// Most grantors per family (the policy caps relatives per grantor at 20, per settlement at 8).
pub const GRANTORS_PER_FAMILY_MAX: u32 = 8;
/// Highest rate of any one operation or fault, per second of simulated time.
pub const RATE_PER_S_MAX: f64 = 100_000.0;
/// Most timed fault events in one scenario.
pub const EVENTS_MAX: usize = 1_000;
/// Largest delay, stall, down time or liveness bound a scenario may set, in ms.
pub const SPAN_MS_MAX: u64 = 3_600_000;
/// Largest clock skew or jump, in ms (a day either way).
pub const CLOCK_MS_MAX: i64 = 86_400_000;
/// Largest monotonic clock rate difference, in parts per million.
pub const DRIFT_PPM_MAX: u32 = 100_000;
/// Largest amount of money a scenario may name, in yuan.
pub const YUAN_MAX: u64 = 10_000_000;
/// Default start of the simulated wall clock: 2026-01-31 23:58:00 China time, so that the
/// calendar month turns during the run and monthly limits reset.
pub const START_WALL_MS_DEFAULT: i64 = 1_769_875_080_000;

/// A whole scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name shown in reports.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Province codes (e.g. "500000") or the string "all" for the 31 provinces.
    #[serde(default = "default_provinces")]
    pub provinces: ProvinceList,
    /// How long the workload runs after setup, in simulated ms.
    #[serde(default = "default_duration_ms")]
    pub duration_ms: u64,
    /// Setup phase (accounts, bindings) before the workload and faults start, in ms.
    #[serde(default = "default_setup_ms")]
    pub setup_ms: u64,
    /// Every live hold must resolve within `hold_timeout_ms + liveness_bound_ms` after the
    /// last fault healed.
    #[serde(default = "default_liveness_bound_ms")]
    pub liveness_bound_ms: u64,
    /// Simulated wall clock at time zero (ms since the Unix epoch).
    #[serde(default = "default_start_wall_ms")]
    pub start_wall_ms: i64,
    #[serde(default)]
    pub population: Population,
    #[serde(default)]
    pub families: Families,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub disk: Disk,
    #[serde(default)]
    pub clocks: Clocks,
    #[serde(default)]
    pub faults: RandomFaults,
    #[serde(default)]
    pub events: Vec<TimedEvent>,
    /// Overrides of the protocol's timing (the core's `ProtocolConfig`).
    #[serde(default)]
    pub protocol: ProtocolConfig,
    /// Overrides of every province's policy (the core's `Policy`).
    #[serde(default)]
    pub policy: Policy,
}

/// `provinces = "all"` or a list of codes.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ProvinceList {
    Named(String),
    Codes(Vec<String>),
}

fn default_provinces() -> ProvinceList {
    ProvinceList::Codes(vec!["500000".into(), "510000".into(), "110000".into()])
}
fn default_duration_ms() -> u64 {
    30_000
}
fn default_setup_ms() -> u64 {
    3_000
}
fn default_liveness_bound_ms() -> u64 {
    30_000
}
fn default_start_wall_ms() -> i64 {
    START_WALL_MS_DEFAULT
}

/// Accounts opened on every node at time zero.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Population {
    pub accounts_per_province: u32,
    /// Share of employee-insured accounts (the others are resident-insured, no balance).
    pub employee_percent: u32,
    pub balance_yuan_min: u64,
    pub balance_yuan_max: u64,
}

impl Default for Population {
    fn default() -> Population {
        Population {
            accounts_per_province: 200,
            employee_percent: 80,
            balance_yuan_min: 0,
            balance_yuan_max: 40_000,
        }
    }
}

/// Families whose grantors live in other provinces than the patient.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Families {
    pub count: u32,
    pub grantors_min: u32,
    pub grantors_max: u32,
    /// Share of bindings with limits (then both limits below apply).
    pub limited_percent: u32,
    pub per_settlement_limit_yuan: u64,
    pub monthly_limit_yuan: u64,
    /// Share of grantors in the patient's own province (local bindings).
    pub local_percent: u32,
}

impl Default for Families {
    fn default() -> Families {
        Families {
            count: 30,
            grantors_min: 1,
            grantors_max: 3,
            limited_percent: 30,
            per_settlement_limit_yuan: 300,
            monthly_limit_yuan: 1_000,
            local_percent: 10,
        }
    }
}

/// Operations per second of simulated time, across the whole cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    pub settlements_per_s: f64,
    /// Share of settlements for family patients (the rest: any person, often own account only).
    pub family_percent: u32,
    pub refunds_per_s: f64,
    pub binds_per_s: f64,
    pub unbinds_per_s: f64,
    pub freezes_per_s: f64,
    pub credits_per_s: f64,
    /// A settlement and, within `race_window_ms`, an unbind of one of the patient's bindings.
    pub revocation_races_per_s: f64,
    /// A settlement and, within `race_window_ms`, a freeze of one of the patient's grantors.
    pub freeze_races_per_s: f64,
    /// A different request re-using an answered settlement id (must be refused).
    pub id_reuses_per_s: f64,
    pub race_window_ms: u64,
    /// How long a frozen card stays frozen before the bureau unfreezes it.
    pub freeze_ms: u64,
    pub self_pay_yuan_min: u64,
    pub self_pay_yuan_max: u64,
    /// A hospital without an answer retries the same settlement after this long.
    pub hospital_retry_ms: u64,
    pub hospital_retries_max: u32,
    /// Share of requests a hospital sends twice at once (a double click, a proxy retry).
    pub duplicate_request_percent: u32,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            settlements_per_s: 100.0,
            family_percent: 70,
            refunds_per_s: 5.0,
            binds_per_s: 0.5,
            unbinds_per_s: 0.5,
            freezes_per_s: 0.5,
            credits_per_s: 20.0,
            revocation_races_per_s: 0.0,
            freeze_races_per_s: 0.0,
            id_reuses_per_s: 0.2,
            race_window_ms: 30,
            freeze_ms: 3_000,
            self_pay_yuan_min: 1,
            self_pay_yuan_max: 400,
            hospital_retry_ms: 3_000,
            hospital_retries_max: 5,
            duplicate_request_percent: 0,
        }
    }
}

/// The network between nodes. Probabilities apply per message, inside the fault window.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    pub loss: f64,
    pub duplicate: f64,
    /// A reordered message is held back by up to `reorder_ms_max` more.
    pub reorder: f64,
    pub reorder_ms_max: u64,
    /// A delayed message takes up to `delay_ms_max` more (long queues, retransmits).
    pub delay: f64,
    pub delay_ms_max: u64,
}

impl Default for Network {
    fn default() -> Network {
        Network {
            latency_ms_min: 2,
            latency_ms_max: 30,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_ms_max: 200,
            delay: 0.0,
            delay_ms_max: 2_000,
        }
    }
}

/// Each node's disk: writes are applied at once but survive a crash only once flushed.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Disk {
    pub flush_ms_min: u64,
    pub flush_ms_max: u64,
    /// Probability (inside the fault window) that a flush is slow, by up to `slow_ms_max`.
    pub slow: f64,
    pub slow_ms_max: u64,
}

impl Default for Disk {
    fn default() -> Disk {
        Disk {
            flush_ms_min: 1,
            flush_ms_max: 4,
            slow: 0.0,
            slow_ms_max: 300,
        }
    }
}

/// Clocks: a fixed wall-clock skew per node, a monotonic rate difference, random jumps.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Clocks {
    pub skew_ms_max: i64,
    pub drift_ppm_max: u32,
}

/// Faults drawn at random inside the fault window (`start_ms`..`end_ms` after setup).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomFaults {
    /// Start of the window, ms after setup.
    pub start_ms: u64,
    /// End of the window, ms after setup (default: the end of the workload).
    pub end_ms: Option<u64>,
    pub crashes_per_s: f64,
    pub down_ms_min: u64,
    pub down_ms_max: u64,
    pub partitions_per_s: f64,
    pub partition_ms_min: u64,
    pub partition_ms_max: u64,
    pub one_way_percent: u32,
    pub clock_jumps_per_s: f64,
    pub clock_jump_ms_max: i64,
    pub disk_stalls_per_s: f64,
    pub disk_stall_ms_max: u64,
}

impl Default for RandomFaults {
    fn default() -> RandomFaults {
        RandomFaults {
            start_ms: 0,
            end_ms: None,
            crashes_per_s: 0.0,
            down_ms_min: 500,
            down_ms_max: 5_000,
            partitions_per_s: 0.0,
            partition_ms_min: 1_000,
            partition_ms_max: 8_000,
            one_way_percent: 30,
            clock_jumps_per_s: 0.0,
            clock_jump_ms_max: 600_000,
            disk_stalls_per_s: 0.0,
            disk_stall_ms_max: 2_000,
        }
    }
}

/// A fault at a chosen time (ms after setup).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TimedEvent {
    /// Crash `node` at `at_ms` (or, with `after`, at the first such moment from `at_ms` on),
    /// restart it `down_ms` later with its flushed state.
    Crash {
        at_ms: u64,
        node: String,
        #[serde(default = "default_down_ms")]
        down_ms: u64,
        #[serde(default)]
        after: CrashPoint,
    },
    /// Cut the links between the two sides (only from `a` to `b` when `one_way`).
    Partition {
        at_ms: u64,
        until_ms: u64,
        a: Vec<String>,
        b: Vec<String>,
        #[serde(default)]
        one_way: bool,
    },
    /// Move `node`'s wall clock by `jump_ms` (negative: backwards). The monotonic clock is kept.
    ClockJump { at_ms: u64, node: String, jump_ms: i64 },
    /// `node`'s disk completes no flush from `at_ms` to `until_ms`.
    DiskStall { at_ms: u64, until_ms: u64, node: String },
}

fn default_down_ms() -> u64 {
    2_000
}

/// Where in its work a triggered crash hits the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashPoint {
    /// At `at_ms`, whatever the node is doing (unflushed writes are lost).
    #[default]
    Now,
    /// Right after a settlement decision became durable, before its commits leave.
    Decision,
    /// Right after a yes vote (a hold) became durable and left the node.
    Vote,
    /// Right after a decision was written, before the flush: the decision is lost.
    DecisionUnflushed,
}

impl TimedEvent {
    pub fn at_ms(&self) -> u64 {
        match self {
            TimedEvent::Crash { at_ms, .. }
            | TimedEvent::Partition { at_ms, .. }
            | TimedEvent::ClockJump { at_ms, .. }
            | TimedEvent::DiskStall { at_ms, .. } => *at_ms,
        }
    }
}

impl Scenario {
    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: file.clone(),
            source,
        })?;
        Scenario::parse(&file, &text)
    }

    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| ScenarioError::Parse {
            file: file.to_string(),
            message: error.to_string(),
        })?;
        scenario.validate().map_err(|message| ScenarioError::Invalid {
            file: file.to_string(),
            message,
        })?;
        Ok(scenario)
    }

    /// The provinces of the cluster, in code order, without duplicates.
    pub fn province_list(&self) -> Result<Vec<Province>, String> {
        let mut provinces = match &self.provinces {
            ProvinceList::Named(name) if name == "all" => Province::all().collect(),
            ProvinceList::Named(other) => {
                return Err(format!("provinces = {other:?}: use \"all\" or a list of codes"));
            }
            ProvinceList::Codes(codes) => codes
                .iter()
                .map(|code| parse_province(code))
                .collect::<Result<Vec<_>, _>>()?,
        };
        provinces.sort();
        provinces.dedup();
        Ok(provinces)
    }

    /// The fault kinds (as counted in `faults_injected`) this scenario asks for: a probability
    /// or rate above zero, or a timed event. Clock skew and drift are fixed per node, not
    /// injected, and are not listed.
    pub fn configured_fault_kinds(&self) -> Vec<&'static str> {
        let n = &self.network;
        let f = &self.faults;
        let has_event = |wanted: fn(&TimedEvent) -> bool| self.events.iter().any(wanted);
        let kinds = [
            ("loss", n.loss > 0.0),
            ("duplicate", n.duplicate > 0.0),
            ("reorder", n.reorder > 0.0),
            ("delay", n.delay > 0.0),
            (
                "partition",
                f.partitions_per_s > 0.0 || has_event(|e| matches!(e, TimedEvent::Partition { .. })),
            ),
            (
                "crash",
                f.crashes_per_s > 0.0 || has_event(|e| matches!(e, TimedEvent::Crash { .. })),
            ),
            (
                "clock_jump",
                f.clock_jumps_per_s > 0.0 || has_event(|e| matches!(e, TimedEvent::ClockJump { .. })),
            ),
            (
                "disk_stall",
                f.disk_stalls_per_s > 0.0 || has_event(|e| matches!(e, TimedEvent::DiskStall { .. })),
            ),
            ("slow_flush", self.disk.slow > 0.0),
            ("client_duplicate", self.workload.duplicate_request_percent > 0),
        ];
        kinds.into_iter().filter(|(_, on)| *on).map(|(kind, _)| kind).collect()
    }

    /// End of the random-fault window, in ms after setup.
    pub fn fault_window_end_ms(&self) -> u64 {
        self.faults.end_ms.unwrap_or(self.duration_ms).min(self.duration_ms)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        let provinces = self.province_list()?;
        if provinces.len() < 2 {
            return Err("a scenario needs at least 2 distinct provinces".into());
        }
        check_range("duration_ms", self.duration_ms, 1, DURATION_MS_MAX)?;
        check_range("setup_ms", self.setup_ms, 1_000, SPAN_MS_MAX)?;
        check_range("liveness_bound_ms", self.liveness_bound_ms, 1, SPAN_MS_MAX)?;
        let p = &self.population;
        check_range(
            "population.accounts_per_province",
            u64::from(p.accounts_per_province),
            2,
            u64::from(ACCOUNTS_PER_PROVINCE_MAX),
        )?;
        check_range("population.employee_percent", u64::from(p.employee_percent), 1, 100)?;
        check_range("population.balance_yuan_max", p.balance_yuan_max, 0, YUAN_MAX)?;
        if p.balance_yuan_min > p.balance_yuan_max {
            return Err("population.balance_yuan_min exceeds balance_yuan_max".into());
        }
        let f = &self.families;
        check_range("families.count", u64::from(f.count), 0, u64::from(FAMILIES_MAX))?;
        check_range(
            "families.grantors_max",
            u64::from(f.grantors_max),
            1,
            u64::from(GRANTORS_PER_FAMILY_MAX),
        )?;
        check_range(
            "families.grantors_min",
            u64::from(f.grantors_min),
            1,
            u64::from(f.grantors_max),
        )?;
        check_range("families.limited_percent", u64::from(f.limited_percent), 0, 100)?;
        check_range("families.local_percent", u64::from(f.local_percent), 0, 100)?;
        check_range(
            "families.per_settlement_limit_yuan",
            f.per_settlement_limit_yuan,
            1,
            YUAN_MAX,
        )?;
        check_range("families.monthly_limit_yuan", f.monthly_limit_yuan, 1, YUAN_MAX)?;
        let w = &self.workload;
        for (name, rate) in [
            ("workload.settlements_per_s", w.settlements_per_s),
            ("workload.refunds_per_s", w.refunds_per_s),
            ("workload.binds_per_s", w.binds_per_s),
            ("workload.unbinds_per_s", w.unbinds_per_s),
            ("workload.freezes_per_s", w.freezes_per_s),
            ("workload.credits_per_s", w.credits_per_s),
            ("workload.revocation_races_per_s", w.revocation_races_per_s),
            ("workload.freeze_races_per_s", w.freeze_races_per_s),
            ("workload.id_reuses_per_s", w.id_reuses_per_s),
            ("faults.crashes_per_s", self.faults.crashes_per_s),
            ("faults.partitions_per_s", self.faults.partitions_per_s),
            ("faults.clock_jumps_per_s", self.faults.clock_jumps_per_s),
            ("faults.disk_stalls_per_s", self.faults.disk_stalls_per_s),
        ] {
            if !(rate.is_finite() && (0.0..=RATE_PER_S_MAX).contains(&rate)) {
                return Err(format!("{name} = {rate} must be between 0 and {RATE_PER_S_MAX}"));
            }
        }
        check_range("workload.family_percent", u64::from(w.family_percent), 0, 100)?;
        check_range(
            "workload.duplicate_request_percent",
            u64::from(w.duplicate_request_percent),
            0,
            100,
        )?;
        check_range("workload.self_pay_yuan_min", w.self_pay_yuan_min, 1, YUAN_MAX)?;
        check_range(
            "workload.self_pay_yuan_max",
            w.self_pay_yuan_max,
            w.self_pay_yuan_min,
            YUAN_MAX,
        )?;
        check_range("workload.hospital_retry_ms", w.hospital_retry_ms, 100, SPAN_MS_MAX)?;
        check_range(
            "workload.hospital_retries_max",
            u64::from(w.hospital_retries_max),
            0,
            100,
        )?;
        check_range("workload.race_window_ms", w.race_window_ms, 0, SPAN_MS_MAX)?;
        check_range("workload.freeze_ms", w.freeze_ms, 1, SPAN_MS_MAX)?;
        let n = &self.network;
        check_range(
            "network.latency_ms_max",
            n.latency_ms_max,
            n.latency_ms_min,
            SPAN_MS_MAX,
        )?;
        check_range("network.reorder_ms_max", n.reorder_ms_max, 0, SPAN_MS_MAX)?;
        check_range("network.delay_ms_max", n.delay_ms_max, 0, SPAN_MS_MAX)?;
        for (name, probability) in [
            ("network.loss", n.loss),
            ("network.duplicate", n.duplicate),
            ("network.reorder", n.reorder),
            ("network.delay", n.delay),
            ("disk.slow", self.disk.slow),
        ] {
            if !(probability.is_finite() && (0.0..=1.0).contains(&probability)) {
                return Err(format!("{name} = {probability} must be a probability between 0 and 1"));
            }
        }
        if n.loss >= 1.0 {
            return Err("network.loss must be below 1: no message would ever arrive".into());
        }
        let d = &self.disk;
        check_range("disk.flush_ms_max", d.flush_ms_max, d.flush_ms_min, SPAN_MS_MAX)?;
        check_range("disk.slow_ms_max", d.slow_ms_max, 0, SPAN_MS_MAX)?;
        if !(0..=CLOCK_MS_MAX).contains(&self.clocks.skew_ms_max) {
            return Err(format!("clocks.skew_ms_max must be between 0 and {CLOCK_MS_MAX}"));
        }
        check_range(
            "clocks.drift_ppm_max",
            u64::from(self.clocks.drift_ppm_max),
            0,
            u64::from(DRIFT_PPM_MAX),
        )?;
        let r = &self.faults;
        check_range("faults.down_ms_max", r.down_ms_max, r.down_ms_min, SPAN_MS_MAX)?;
        check_range("faults.down_ms_min", r.down_ms_min, 1, SPAN_MS_MAX)?;
        check_range(
            "faults.partition_ms_max",
            r.partition_ms_max,
            r.partition_ms_min,
            SPAN_MS_MAX,
        )?;
        check_range("faults.one_way_percent", u64::from(r.one_way_percent), 0, 100)?;
        check_range("faults.disk_stall_ms_max", r.disk_stall_ms_max, 1, SPAN_MS_MAX)?;
        if !(0..=CLOCK_MS_MAX).contains(&r.clock_jump_ms_max) {
            return Err(format!("faults.clock_jump_ms_max must be between 0 and {CLOCK_MS_MAX}"));
        }
        if let Some(end) = r.end_ms
            && end < r.start_ms
        {
            return Err("faults.end_ms is before faults.start_ms".into());
        }
        if self.events.len() > EVENTS_MAX {
            return Err(format!("at most {EVENTS_MAX} timed events are allowed"));
        }
        for (index, event) in self.events.iter().enumerate() {
            self.validate_event(&provinces, event)
                .map_err(|message| format!("events[{index}]: {message}"))?;
        }
        self.protocol.validate().map_err(|e| format!("[protocol]: {e}"))?;
        self.policy.validate().map_err(|e| format!("[policy]: {e}"))?;
        Ok(())
    }

    fn validate_event(&self, provinces: &[Province], event: &TimedEvent) -> Result<(), String> {
        let known = |code: &String| -> Result<(), String> {
            let province = parse_province(code)?;
            if provinces.contains(&province) {
                Ok(())
            } else {
                Err(format!("node {code} is not one of the scenario's provinces"))
            }
        };
        check_range("at_ms", event.at_ms(), 0, DURATION_MS_MAX)?;
        match event {
            TimedEvent::Crash { node, down_ms, .. } => {
                known(node)?;
                check_range("down_ms", *down_ms, 1, SPAN_MS_MAX)?;
            }
            TimedEvent::Partition {
                at_ms, until_ms, a, b, ..
            } => {
                if a.is_empty() || b.is_empty() {
                    return Err("a partition needs nodes on both sides (a and b)".into());
                }
                for code in a.iter().chain(b) {
                    known(code)?;
                }
                if a.iter().any(|code| b.contains(code)) {
                    return Err("a node cannot be on both sides of a partition".into());
                }
                check_range("until_ms", *until_ms, at_ms.saturating_add(1), DURATION_MS_MAX)?;
            }
            TimedEvent::ClockJump { node, jump_ms, .. } => {
                known(node)?;
                if jump_ms.unsigned_abs() > CLOCK_MS_MAX.unsigned_abs() {
                    return Err(format!("jump_ms must be within ±{CLOCK_MS_MAX}"));
                }
            }
            TimedEvent::DiskStall {
                at_ms, until_ms, node, ..
            } => {
                known(node)?;
                check_range("until_ms", *until_ms, at_ms.saturating_add(1), DURATION_MS_MAX)?;
            }
        }
        Ok(())
    }
}

/// Parses a province code such as "500000".
pub fn parse_province(code: &str) -> Result<Province, String> {
    code.parse::<Province>().map_err(|e| format!("province {code:?}: {e}"))
}

fn check_range(name: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("{name} = {value} must be between {min} and {max}"))
    }
}
