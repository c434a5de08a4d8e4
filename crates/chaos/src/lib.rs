//! Chaos on real processes (`exchange chaos`, `tests/chaos.rs`).
//!
//! Three province nodes (Beijing, Chongqing, Sichuan) run as real processes over mutual-TLS
//! gRPC with sled on disk; every node-to-node link goes through a fault proxy of ours
//! ([`proxy::FaultProxy`], one per directed pair). Under a steady, bounded load of
//! settlements, partial refunds, credits, bind/unbind and freeze/unfreeze, faults are injected
//! at random from a seed: `kill -9` and restart, SIGSTOP/SIGCONT, partitions both ways and one
//! way, lost replies, delays, connection resets. Then everything is healed, nodes that are
//! down are restarted, every request still unanswered is sent again with the same id, and
//! after a bounded quiescence wait the nodes are checked against the client's model
//! ([`check`]): every acknowledged settlement and refund is in the journals exactly once with
//! the receipt's amounts and nothing else is, balances equal the model exactly and their
//! journals explain them, nothing is held, and every pair of provinces reconciles with no
//! mismatch over exactly the cross-province legs the receipts name.

pub mod check;
pub mod faults;
pub mod load;
pub mod model;
pub mod observe;
pub mod proxy;
pub mod world;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use exchange_core::message::ClientRequest;
use exchange_core::{PersonId, Province};
use exchange_node::client::BureauConn;
use exchange_node::cluster::{ClusterOptions, LocalCluster};
use serde::Serialize;

use crate::check::CheckCounts;
use crate::faults::{FaultKind, FaultLog, Proxies, SharedLog};
use crate::load::Shared;
use crate::proxy::{FaultProxy, ProxyCounts};

/// The provinces of a chaos run: Beijing, Chongqing, Sichuan.
pub const PROVINCES: [u32; 3] = [110000, 500000, 510000];
/// Protocol timing of the chaos cluster: short, so that recovery fits in a short run.
pub const PROTOCOL_CONFIG: &str = "\n[protocol]\nvote_timeout_ms = 1000\nhold_timeout_ms = 4000\ncommit_margin_ms = 1500\nquery_retry_ms = 500\nresend_initial_ms = 200\nresend_max_ms = 1000\n";
/// After healing, re-sending the requests still unanswered may take this long.
pub const RESEND_BOUND: Duration = Duration::from_secs(60);
/// After healing and re-sending, the nodes must be quiet within this bound: the hold
/// deadline (4 s), the coordinator's longest re-send interval (1 s) and a restarted node's
/// recovery, with room for a loaded 2-vCPU machine.
pub const QUIESCENCE_BOUND: Duration = Duration::from_secs(30);
/// Lines of node log quoted per panic found.
const PANIC_LINES_MAX: usize = 3;

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The `exchange` binary the nodes run.
    pub exe: PathBuf,
    /// How long faults are injected under load.
    pub duration: Duration,
    pub seed: u64,
    /// Hospital clients per province.
    pub clients_per_province: usize,
    /// Families whose patient is insured in each province.
    pub families_per_province: u32,
    /// Keep the cluster's directory (configurations, logs, stores) when a violation is found.
    pub keep_on_violation: bool,
    /// Print the fault timeline to stderr as it happens.
    pub progress: bool,
}

impl ChaosOptions {
    pub fn new(exe: PathBuf, duration: Duration, seed: u64) -> ChaosOptions {
        ChaosOptions {
            exe,
            duration,
            seed,
            clients_per_province: 3,
            families_per_province: 4,
            keep_on_violation: true,
            progress: false,
        }
    }
}

/// A seed from the clock, for runs that name none.
pub fn seed_from_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() ^ u64::from(d.subsec_nanos()))
        .unwrap_or(1)
}

/// What a run did and found.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    /// Seconds of chaos under load (as asked).
    pub duration_s: f64,
    /// Seconds of the whole run: setup, chaos, healing, checks.
    pub elapsed_s: f64,
    /// Client requests answered (settlements, refunds, credits, binds, unbinds, freezes,
    /// unfreezes), including the re-sends after healing.
    pub operations: u64,
    pub operations_by_kind: BTreeMap<String, u64>,
    /// Of `operations`, answered with a refusal.
    pub refused: u64,
    /// Attempts after the first (same id) after a transport error or no answer in time.
    pub retries: u64,
    /// Settlements, refunds and credits unanswered when the chaos ended, sent again after healing.
    pub unacknowledged_at_end: u64,
    /// Grantors who did not pay on an acknowledged receipt, by reason (`timeout` when their
    /// node did not vote in time, `account_frozen`, `binding_revoked`, ...): the faults and the
    /// bureau's actions as the hospitals saw them.
    pub grantors_not_paying: BTreeMap<String, u64>,
    pub faults_injected: BTreeMap<String, u64>,
    pub kills: u64,
    pub pauses: u64,
    /// Partitions both ways and one way (refused or blackholed).
    pub partitions: u64,
    /// Empty when every check held.
    pub violations: Vec<String>,
    pub checked: CheckCounts,
    /// Whether the nodes were quiet within the bound, and after how long.
    pub quiescent: bool,
    pub quiescence_s: f64,
    /// What the fault proxies did, summed.
    pub proxies: ProxyCounts,
    pub timeline: Vec<String>,
    /// The cluster's directory, kept because of a violation.
    pub kept_dir: Option<String>,
}

/// Why a run could not be made (not a violation: the run did not happen).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("setup: {0}")]
    Setup(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] exchange_node::error::NodeError),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn sum_counts(proxies: &Proxies) -> ProxyCounts {
    proxies.values().fold(ProxyCounts::default(), |sum, proxy| {
        let c = proxy.counts();
        ProxyCounts {
            accepted: sum.accepted + c.accepted,
            refused: sum.refused + c.refused,
            reset: sum.reset + c.reset,
            bytes_forwarded: sum.bytes_forwarded + c.bytes_forwarded,
            bytes_swallowed: sum.bytes_swallowed + c.bytes_swallowed,
        }
    })
}

/// Lines of the nodes' logs that tell of a panic.
fn panics_in_logs(cluster: &LocalCluster) -> Vec<String> {
    let mut found = Vec::new();
    for node in cluster.nodes.values() {
        let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("panicked")).take(PANIC_LINES_MAX) {
            found.push(format!("node {} log: {line}", node.province.code()));
        }
    }
    found
}

/// Runs the whole thing. `Err` only when the run could not be set up; what the checks find
/// is in the report's `violations`.
pub async fn run_chaos(options: ChaosOptions) -> Result<ChaosReport, ChaosError> {
    let started = Instant::now();
    let provinces: Vec<Province> = PROVINCES
        .iter()
        .map(|code| Province::from_code(*code).map_err(|e| ChaosError::Setup(e.to_string())))
        .collect::<Result<_, _>>()?;
    let dir = tempfile::Builder::new().prefix("exchange-chaos-").tempdir()?;

    // A proxy per directed pair, aimed at its node once the cluster has its addresses.
    let mut proxies: Proxies = BTreeMap::new();
    for from in &provinces {
        for to in provinces.iter().filter(|p| *p != from) {
            proxies.insert((*from, *to), FaultProxy::bind(None).await?);
        }
    }
    let cluster_options = ClusterOptions {
        extra_config: PROTOCOL_CONFIG.into(),
        peer_address_override: proxies.iter().map(|(pair, proxy)| (*pair, proxy.addr())).collect(),
        ..ClusterOptions::default()
    };
    let cluster = LocalCluster::launch(&options.exe, dir.path(), &provinces, &cluster_options).await?;
    for ((_, to), proxy) in &proxies {
        let node = cluster
            .nodes
            .get(to)
            .ok_or_else(|| ChaosError::Setup(format!("no node {to}")))?;
        proxy.set_target(node.addr);
    }
    let mut conns: BTreeMap<Province, BureauConn> = BTreeMap::new();
    for province in &provinces {
        conns.insert(*province, cluster.conn(*province).await?);
    }

    let mut model = model::Model::default();
    let world = world::populate(&mut conns, &provinces, options.families_per_province, &mut model).await?;
    let people: Vec<(PersonId, Province)> = model.accounts.iter().map(|(p, a)| (*p, a.province)).collect();

    // Chaos under load.
    let chaos_started_ms = now_ms();
    let shared = Arc::new(Shared::new(model));
    let log: SharedLog = Arc::new(Mutex::new(FaultLog::new(started)));
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .note(format!(
            "chaos starts: {} s, seed {}, {} families",
            options.duration.as_secs_f64(),
            options.seed,
            world.families.len()
        ));
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let proxies = Arc::new(proxies);
    let deadline = Instant::now() + options.duration;
    let mut tasks = Vec::new();
    let mut task_seed = options.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next_seed = || {
        task_seed = task_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        task_seed
    };
    for province in &provinces {
        let families: Vec<world::Family> = world
            .families
            .iter()
            .filter(|f| f.province == *province)
            .cloned()
            .collect();
        for index in 0..options.clients_per_province {
            let conn = conns
                .get(province)
                .cloned()
                .ok_or_else(|| ChaosError::Setup("conn".into()))?;
            tasks.push(tokio::spawn(load::hospital(
                shared.clone(),
                conn,
                *province,
                index,
                families.clone(),
                next_seed(),
                deadline,
            )));
        }
    }
    tasks.push(tokio::spawn(load::bureau(
        shared.clone(),
        conns.clone(),
        world.clone(),
        next_seed(),
        deadline,
    )));
    tasks.push(tokio::spawn(faults::process_lane(
        cluster.clone(),
        provinces.clone(),
        next_seed(),
        deadline,
        log.clone(),
    )));
    tasks.push(tokio::spawn(faults::network_lane(
        proxies.clone(),
        provinces.clone(),
        next_seed(),
        deadline,
        log.clone(),
    )));
    let progress = options.progress.then(|| {
        let log = log.clone();
        tokio::spawn(async move {
            let mut printed = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for line in log.timeline.iter().skip(printed) {
                    eprintln!("{line}");
                }
                printed = log.timeline.len();
            }
        })
    });
    for task in tasks {
        if let Err(error) = task.await {
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .problems
                .push(format!("a task of the run failed: {error}"));
        }
    }

    // Heal: every link passes, every node runs and answers.
    let note = |text: String| {
        log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).note(text);
    };
    note("chaos over: healing every link, resuming and restarting nodes".into());
    for proxy in proxies.values() {
        proxy.pass();
    }
    let cluster_guard = cluster.lock().await;
    for province in &provinces {
        if cluster_guard.is_running(*province) {
            let _ = cluster_guard.pause(*province, false);
        }
    }
    drop(cluster_guard);
    for province in &provinces {
        let running = cluster.lock().await.is_running(*province);
        if !running {
            faults::restart(&cluster, *province, &log).await;
        }
    }

    // Every request still unanswered is sent again with the same id.
    let resend_deadline = Instant::now() + RESEND_BOUND;
    let (settlements, refunds, credits) = shared.with_model(|m| {
        (
            m.settlements
                .iter()
                .filter(|(_, s)| s.outcome.is_pending())
                .map(|(id, s)| (id.clone(), s.coordinator, s.request.clone()))
                .collect::<Vec<_>>(),
            m.refunds
                .iter()
                .filter(|(_, r)| r.outcome.is_pending())
                .map(|(id, r)| (id.clone(), r.coordinator, r.request.clone()))
                .collect::<Vec<_>>(),
            m.credits
                .iter()
                .filter(|(_, c)| c.outcome.is_pending())
                .map(|(id, c)| (id.clone(), c.person, c.amount))
                .collect::<Vec<_>>(),
        )
    });
    let unacknowledged = settlements.len() + refunds.len() + credits.len();
    note(format!(
        "re-sending {} settlements, {} refunds, {} credits still unanswered",
        settlements.len(),
        refunds.len(),
        credits.len()
    ));
    for (id, coordinator, request) in settlements {
        let Some(mut conn) = conns.get(&coordinator).cloned() else {
            continue;
        };
        if let Some(reply) = load::send(
            &mut conn,
            &ClientRequest::Settle(request),
            resend_deadline,
            &shared.stats,
        )
        .await
        {
            load::settle_answered(&shared, &id, reply, true);
        }
    }
    for (id, coordinator, request) in refunds {
        let Some(mut conn) = conns.get(&coordinator).cloned() else {
            continue;
        };
        if let Some(reply) = load::send(
            &mut conn,
            &ClientRequest::Refund(request),
            resend_deadline,
            &shared.stats,
        )
        .await
        {
            load::refund_answered(&shared, &id, reply, true);
        }
    }
    for (id, person, amount) in credits {
        let province = people.iter().find(|(p, _)| *p == person).map(|(_, at)| *at);
        let Some(mut conn) = province.and_then(|p| conns.get(&p).cloned()) else {
            continue;
        };
        let request = ClientRequest::Credit {
            credit: id.clone(),
            person,
            amount,
        };
        if let Some(reply) = load::send(&mut conn, &request, resend_deadline, &shared.stats).await {
            load::credit_answered(&shared, &id, reply, true);
        }
    }

    // Quiescence, then the checks.
    let model = shared.with_model(|m| m.clone());
    let expected: BTreeMap<PersonId, (Province, i128)> = model
        .expected_balances()
        .into_iter()
        .filter_map(|(person, fen)| model.accounts.get(&person).map(|a| (person, (a.province, fen))))
        .collect();
    let guard = cluster.lock().await;
    let (quiescent, quiescence, moving) =
        observe::quiescence(&guard, &conns, &expected, Instant::now() + QUIESCENCE_BOUND).await;
    note(format!(
        "quiescence {} after {:.1}s{}",
        if quiescent { "reached" } else { "NOT reached" },
        quiescence.as_secs_f64(),
        if moving.is_empty() {
            String::new()
        } else {
            format!(" (last still moving: {moving})")
        }
    ));
    let observed = observe::observe(&guard, &conns, people, chaos_started_ms - 60_000, now_ms() + 60_000).await;
    let (mut violations, checked) = check::check(&model, &observed);
    if !quiescent {
        violations.push(format!(
            "the nodes were not quiet within {} s of healing",
            QUIESCENCE_BOUND.as_secs()
        ));
    }
    violations.extend(
        shared
            .problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned(),
    );
    violations.extend(panics_in_logs(&guard));
    note(format!("checks done: {} violations", violations.len()));
    if let Some(progress) = progress {
        tokio::time::sleep(Duration::from_millis(300)).await;
        progress.abort();
    }

    let log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    violations.extend(log.problems.iter().cloned());
    let count = |kind: FaultKind| log.injected.get(&kind).copied().unwrap_or(0);
    let mut grantors_not_paying: BTreeMap<String, u64> = BTreeMap::new();
    for receipt in model.settlements.values().filter_map(|s| s.outcome.done()) {
        for not_paying in &receipt.not_paying {
            *grantors_not_paying
                .entry(not_paying.reason.code().to_string())
                .or_default() += 1;
        }
    }
    let operations_by_kind = shared.stats.by_kind();
    let report = ChaosReport {
        seed: options.seed,
        duration_s: options.duration.as_secs_f64(),
        elapsed_s: 0.0,
        operations: operations_by_kind.values().sum(),
        operations_by_kind,
        refused: shared.stats.refused.load(std::sync::atomic::Ordering::Relaxed),
        retries: shared.stats.retries.load(std::sync::atomic::Ordering::Relaxed),
        unacknowledged_at_end: u64::try_from(unacknowledged).unwrap_or(u64::MAX),
        grantors_not_paying,
        faults_injected: log.injected.iter().map(|(k, n)| (k.name().to_string(), *n)).collect(),
        kills: count(FaultKind::Kill),
        pauses: count(FaultKind::Pause),
        partitions: log
            .injected
            .iter()
            .filter(|(k, _)| k.is_partition())
            .map(|(_, n)| n)
            .sum(),
        violations,
        checked,
        quiescent,
        quiescence_s: quiescence.as_secs_f64(),
        proxies: sum_counts(&proxies),
        timeline: log.timeline.clone(),
        kept_dir: None,
    };
    drop(log);
    drop(guard);
    // Every task has ended: this is the last handle, and dropping it stops the nodes.
    drop(cluster);
    drop(proxies);
    let mut report = report;
    if !report.violations.is_empty() && options.keep_on_violation {
        let kept = dir.keep();
        report.kept_dir = Some(kept.display().to_string());
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}
