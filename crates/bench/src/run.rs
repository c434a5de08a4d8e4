//! The whole benchmark: a cluster of real node processes (mutual TLS, sled on disk) loaded
//! with accounts and families, open-loop phases driven by a separate client process, then the
//! transport, storage and PostgreSQL ceilings, in one report.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use exchange_core::{PersonId, Province};
use exchange_node::cluster::{ClusterOptions, LocalCluster};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::ceilings::{StorageCeiling, TransportCeiling, storage_ceiling, transport_ceiling};
use crate::error::BenchError;
use crate::loader::{BulkLoad, FAMILY_SERIAL_BASE, Family, bulk_load_accounts, set_up_families};
use crate::pg::{PgBaseline, postgres_baseline};
use crate::sys::{ProcSample, proc_sample, scrape_metric, tcp_bytes, tcp_bytes_delta};
use crate::workload::{ClientReport, ClientSpec, NodeTarget, Patient};

/// Beijing (the node given `--accounts`), Chongqing, Sichuan.
pub const BENCH_PROVINCES: [u32; 3] = [110_000, 500_000, 510_000];
/// Longest benchmark phase, seconds.
pub const DURATION_S_MAX: u64 = 3_600;
/// Longest warm-up before a phase's measured part.
pub const WARMUP_S_MAX: u64 = 600;
/// Highest target rate, settlements per second.
pub const RATE_MAX: f64 = 1_000_000.0;
/// Most families per phase.
pub const FAMILIES_MAX: usize = 100_000;
/// How long a client process may take to connect.
pub const CLIENT_READY_WAIT_S: u64 = 90;
/// How long after its planned end a client may take to report.
pub const CLIENT_REPORT_GRACE_S: u64 = 180;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The workloads run side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// Patient and grantor in Beijing.
    Local,
    /// Patient in Chongqing or Sichuan, one grantor in Beijing.
    CrossOne,
    /// Patient in Chongqing (or Sichuan), grantors in Beijing and Sichuan (or Chongqing).
    CrossTwo,
    /// `CrossOne` families at the low rate.
    CrossOneLowRate,
}

impl PhaseKind {
    pub fn name(self) -> &'static str {
        match self {
            PhaseKind::Local => "local",
            PhaseKind::CrossOne => "cross_one_grantor",
            PhaseKind::CrossTwo => "cross_two_grantors",
            PhaseKind::CrossOneLowRate => "cross_one_grantor_low_rate",
        }
    }
}

/// What `exchange bench` was asked to do.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The `exchange` binary (nodes and the load client are started from it).
    pub exe: PathBuf,
    pub duration_s: u64,
    pub rate_per_s: f64,
    pub low_rate_per_s: f64,
    pub low_duration_s: u64,
    /// Filler accounts bulk-loaded into the Beijing node before it starts.
    pub accounts: u64,
    pub families: usize,
    pub in_flight_max: usize,
    pub connections_per_node: usize,
    pub self_pay_fen: u64,
    pub poisson: bool,
    /// Settlement ids at random positions of the key space (as UUIDs would be) instead of a
    /// hospital's fixed-width serial numbers.
    pub random_ids: bool,
    /// Seconds of load at each phase's rate before its measured part (not counted).
    pub warmup_s: u64,
    pub seed: u64,
    pub phases: Vec<PhaseKind>,
    pub transport_s: u64,
    pub transport_in_flight: usize,
    pub storage_writes: u64,
    pub storage_batch: u64,
    pub postgres: bool,
    pub postgres_s: u64,
    pub postgres_workers: usize,
    /// Extra TOML for every node's configuration (e.g. `[tuning]`).
    pub extra_config: String,
    /// Runtime threads of every node (0: one per core).
    pub node_threads: usize,
    /// Keep the cluster's directory (printed) instead of removing it.
    pub keep_dir: bool,
    /// Progress lines on stderr.
    pub verbose: bool,
}

impl BenchOptions {
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::Invalid(m.to_string()));
        if self.duration_s == 0 || self.duration_s > DURATION_S_MAX || self.low_duration_s > DURATION_S_MAX {
            return bad("--duration must be 1 to 3600 seconds");
        }
        if self.warmup_s > WARMUP_S_MAX {
            return bad("--warmup must be 0 to 600 seconds");
        }
        let rate_ok = |r: f64| r > 0.0 && r <= RATE_MAX;
        if !rate_ok(self.rate_per_s) || !rate_ok(self.low_rate_per_s) {
            return bad("--rate and --low-rate must be above 0 and at most 1,000,000");
        }
        if self.families == 0 || self.families > FAMILIES_MAX {
            return bad("--families must be 1 to 100,000");
        }
        if self.in_flight_max == 0 || self.in_flight_max > 1_000_000 {
            return bad("--in-flight must be 1 to 1,000,000");
        }
        if self.self_pay_fen == 0 || self.self_pay_fen > 100_000 {
            return bad("--self-pay-fen must be 1 to 100,000");
        }
        if self.node_threads > exchange_node::config::WORKER_THREADS_MAX {
            return bad("--node-threads must be 0 (one per core) to 256");
        }
        if self.accounts > crate::loader::BULK_ACCOUNTS_MAX {
            return bad("--accounts is at most 36,000,000 (one synthetic region code)");
        }
        Ok(())
    }
}

/// One node's share of a phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodePhase {
    pub province: u32,
    pub cpu_s: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cpu_cores: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub flushes: f64,
}

/// One phase's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    pub name: String,
    pub target_rate_per_s: f64,
    pub duration_s: f64,
    /// Seconds of load before `duration_s`, not measured (nothing of it is in any figure).
    #[serde(default)]
    pub warmup_s: f64,
    pub client: ClientReport,
    pub flushes: f64,
    pub flushes_per_settlement: f64,
    /// TCP payload bytes (TLS records, both directions) between the hospital client and nodes.
    pub hospital_bytes_per_settlement: Option<f64>,
    /// TCP payload bytes (TLS records, both directions) between nodes.
    pub node_to_node_bytes_per_settlement: Option<f64>,
    pub nodes: Vec<NodePhase>,
    pub client_cpu_cores: f64,
}

/// The machine the figures come from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

/// Everything `exchange bench` measured. The first keys are the headline figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Settlements per second answered with the grantors paying in full (cash-fallback
    /// answers, e.g. after a vote deadline passed under overload, are not counted).
    pub cross_province_settlements_per_s: f64,
    pub local_settlements_per_s: f64,
    /// p99 of the one-remote-grantor phase at `--rate`, from each request's scheduled time.
    pub p99_ms: f64,
    pub flushes_per_settlement: f64,
    pub peak_rss_mib: f64,
    pub cross_two_grantors_settlements_per_s: f64,
    pub low_rate_p99_ms: Option<f64>,
    pub transport_ceiling_rpc_per_s: f64,
    pub storage_ceiling_writes_per_s: f64,
    pub postgres_2pc_settlements_per_s: Option<f64>,
    pub cross_over_local: Option<f64>,
    pub cross_over_postgres: Option<f64>,
    pub restart_to_serving_s: f64,
    pub accounts_on_beijing: u64,
    pub bulk_load: Option<BulkLoad>,
    pub family_setup_s: f64,
    pub target_rate_per_s: f64,
    pub phases: Vec<PhaseReport>,
    pub transport: Option<TransportCeiling>,
    pub storage: Option<StorageCeiling>,
    pub postgres: Option<PgBaseline>,
    pub machine: Machine,
    pub notes: Vec<String>,
}

/// The machine, from /proc.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model,
        memory_gib: memory_kib / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[derive(Clone, Debug)]
struct NodeInfo {
    province: Province,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    pid: Option<u32>,
}

fn node_infos(cluster: &LocalCluster) -> Vec<NodeInfo> {
    cluster
        .nodes
        .values()
        .map(|node| NodeInfo {
            province: node.province,
            addr: node.addr,
            metrics_addr: node.metrics_addr,
            pid: crate::sys::find_pid_by_cmdline(&node.config_path),
        })
        .collect()
}

fn province(code: u32) -> Result<Province, BenchError> {
    Province::from_code(code).map_err(|e| BenchError::step("province", e))
}

fn families_for(kind: PhaseKind, count: usize, phase_index: u64) -> Result<Vec<Family>, BenchError> {
    let [beijing, chongqing, sichuan] = [province(110_000)?, province(500_000)?, province(510_000)?];
    let mut families = Vec::with_capacity(count);
    for family in 0..count {
        let serial = |member: u64| {
            FAMILY_SERIAL_BASE
                .saturating_add(phase_index.saturating_mul(1_000_000))
                .saturating_add((family as u64).saturating_mul(4))
                .saturating_add(member)
        };
        let person = |p: Province, member: u64| PersonId::synthetic(p.code(), serial(member));
        let (home, other) = if family % 2 == 0 {
            (chongqing, sichuan)
        } else {
            (sichuan, chongqing)
        };
        let built = match kind {
            PhaseKind::Local => Family {
                patient: (beijing, person(beijing, 0)),
                grantors: vec![(beijing, person(beijing, 1))],
            },
            PhaseKind::CrossOne | PhaseKind::CrossOneLowRate => Family {
                patient: (home, person(home, 0)),
                grantors: vec![(beijing, person(beijing, 1))],
            },
            PhaseKind::CrossTwo => Family {
                patient: (home, person(home, 0)),
                grantors: vec![(beijing, person(beijing, 1)), (other, person(other, 2))],
            },
        };
        families.push(built);
    }
    Ok(families)
}

struct Sample {
    flushes: BTreeMap<u32, f64>,
    procs: BTreeMap<u32, ProcSample>,
    sockets: Option<BTreeMap<(String, String), crate::sys::SocketBytes>>,
    at: Instant,
}

fn sample(nodes: &[NodeInfo]) -> Sample {
    let mut flushes = BTreeMap::new();
    let mut procs = BTreeMap::new();
    for node in nodes {
        if let Some(addr) = node.metrics_addr
            && let Ok(value) = scrape_metric(addr, "exchange_store_flushes")
        {
            flushes.insert(node.province.code(), value);
        }
        if let Some(pid) = node.pid
            && let Ok(proc_now) = proc_sample(pid)
        {
            procs.insert(node.province.code(), proc_now);
        }
    }
    let ports: Vec<u16> = nodes.iter().map(|n| n.addr.port()).collect();
    Sample {
        flushes,
        procs,
        sockets: tcp_bytes(&ports),
        at: Instant::now(),
    }
}

struct PhaseRun<'a> {
    options: &'a BenchOptions,
    dir: &'a Path,
    certs_dir: &'a Path,
    nodes: &'a [NodeInfo],
}

impl PhaseRun<'_> {
    async fn run(
        &self,
        kind: PhaseKind,
        patients: Vec<Patient>,
        rate: f64,
        duration_s: u64,
    ) -> Result<PhaseReport, BenchError> {
        let name = kind.name();
        let spec = ClientSpec {
            certs_dir: self.certs_dir.to_path_buf(),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeTarget {
                    province: n.province.code(),
                    addr: n.addr.to_string(),
                })
                .collect(),
            patients,
            rate_per_s: rate,
            duration_ms: duration_s.saturating_mul(1_000),
            in_flight_max: self.options.in_flight_max,
            connections_per_node: self.options.connections_per_node,
            self_pay_fen: self.options.self_pay_fen,
            id_prefix: format!("BENCH-{}-{name}", self.options.seed),
            seed: self.options.seed,
            poisson: self.options.poisson,
            random_ids: self.options.random_ids,
            warmup_ms: self.options.warmup_s.saturating_mul(1_000),
        };
        let spec_path = self.dir.join(format!("client-{name}.json"));
        std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
        let stderr = std::fs::File::create(self.dir.join(format!("client-{name}.log")))?;
        let mut child = tokio::process::Command::new(&self.options.exe)
            .arg("bench-client")
            .arg("--spec")
            .arg(&spec_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?;
        let client_pid = child.id().unwrap_or(0);
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| BenchError::step("client", "no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::step("client", "no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let client_log = self.dir.join(format!("client-{name}.log"));
        let client_failed = |what: &str| {
            let log = std::fs::read_to_string(&client_log).unwrap_or_default();
            BenchError::step("load client", format!("{what}\n{log}"))
        };
        match tokio::time::timeout(Duration::from_secs(CLIENT_READY_WAIT_S), lines.next_line()).await {
            Ok(Ok(Some(_ready))) => {}
            _ => return Err(client_failed("did not get ready")),
        }
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        if self.options.warmup_s > 0 {
            let wait = Duration::from_secs(self.options.warmup_s.saturating_add(CLIENT_REPORT_GRACE_S));
            match tokio::time::timeout(wait, lines.next_line()).await {
                Ok(Ok(Some(line))) if line.trim() == crate::workload::WARM_LINE => {}
                _ => return Err(client_failed("did not report the end of its warm-up")),
            }
        }
        // Counters from here: the warm-up is in none of the figures.
        let before = sample(self.nodes);
        let wait = Duration::from_secs(duration_s.saturating_add(CLIENT_REPORT_GRACE_S));
        let line = match tokio::time::timeout(wait, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => return Err(client_failed("did not report")),
        };
        let after = sample(self.nodes);
        drop(stdin);
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        let client: ClientReport = serde_json::from_str(&line)?;
        let wall_s = after.at.saturating_duration_since(before.at).as_secs_f64().max(1e-9);
        let mut nodes = Vec::new();
        let mut flushes_total = 0.0;
        for node in self.nodes {
            let code = node.province.code();
            let flushes = match (before.flushes.get(&code), after.flushes.get(&code)) {
                (Some(b), Some(a)) => a - b,
                _ => 0.0,
            };
            flushes_total += flushes;
            let (b, a) = (
                before.procs.get(&code).copied().unwrap_or_default(),
                after.procs.get(&code).copied().unwrap_or_default(),
            );
            nodes.push(NodePhase {
                province: code,
                cpu_s: a.cpu_s - b.cpu_s,
                cpu_cores: (a.cpu_s - b.cpu_s) / wall_s,
                rss_mib: a.rss_mib,
                peak_rss_mib: a.peak_rss_mib,
                flushes,
            });
        }
        let settled = client.settled.max(1) as f64;
        let (hospital, node_to_node) = match (&before.sockets, &after.sockets) {
            (Some(b), Some(a)) => {
                let by_pid = tcp_bytes_delta(b, a);
                let hospital = by_pid.get(&client_pid).copied().unwrap_or(0);
                let node_pids: Vec<u32> = self.nodes.iter().filter_map(|n| n.pid).collect();
                let n2n: u64 = by_pid
                    .iter()
                    .filter(|(pid, _)| node_pids.contains(pid))
                    .map(|(_, bytes)| *bytes)
                    .sum();
                (Some(hospital as f64 / settled), Some(n2n as f64 / settled))
            }
            _ => (None, None),
        };
        Ok(PhaseReport {
            name: name.to_string(),
            target_rate_per_s: rate,
            duration_s: duration_s as f64,
            warmup_s: self.options.warmup_s as f64,
            client_cpu_cores: client.client_cpu_s / wall_s,
            flushes: flushes_total,
            flushes_per_settlement: flushes_total / settled,
            client,
            hospital_bytes_per_settlement: hospital,
            node_to_node_bytes_per_settlement: node_to_node,
            nodes,
        })
    }
}

fn progress(options: &BenchOptions, line: &str) {
    if options.verbose {
        eprintln!("[bench] {line}");
    }
}

/// Runs everything `options` asks for and returns the report.
pub async fn run_bench(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    options.validate()?;
    let holder = tempfile::Builder::new().prefix("exchange-bench-").tempdir()?;
    let dir = holder.path().to_path_buf();
    let mut report = BenchReport {
        machine: machine(),
        target_rate_per_s: options.rate_per_s,
        accounts_on_beijing: options.accounts,
        ..BenchReport::default()
    };
    let provinces: Vec<Province> = BENCH_PROVINCES.iter().map(|c| province(*c)).collect::<Result<_, _>>()?;
    let beijing = province(110_000)?;
    if !options.phases.is_empty() {
        progress(options, &format!("starting 3 nodes in {}", dir.display()));
        let cluster_options = ClusterOptions {
            metrics: true,
            extra_config: options.extra_config.clone(),
            worker_threads: Some(options.node_threads),
            ..ClusterOptions::default()
        };
        let mut cluster = LocalCluster::launch(&options.exe, &dir, &provinces, &cluster_options).await?;
        // Stop, bulk-load Beijing's store, and time Beijing's restart to serving.
        cluster.stop_all();
        if options.accounts > 0 {
            progress(
                options,
                &format!("bulk-loading {} accounts into Beijing", options.accounts),
            );
            let data_dir = dir.join("data").join(beijing.to_string());
            let wall_ms = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0),
            )
            .unwrap_or(0);
            let loaded =
                tokio::task::block_in_place(|| bulk_load_accounts(&data_dir, beijing, options.accounts, wall_ms))?;
            progress(
                options,
                &format!(
                    "loaded in {:.1} s ({:.0}/s), store {} MiB, checkpoint (one open) {:.1} s",
                    loaded.seconds,
                    loaded.accounts_per_s,
                    loaded.store_bytes >> 20,
                    loaded.checkpoint_s
                ),
            );
            report.bulk_load = Some(loaded);
        }
        for p in &provinces {
            if *p != beijing {
                cluster.start(*p)?;
            }
        }
        let restart = Instant::now();
        cluster.start(beijing)?;
        cluster.wait_ready(beijing).await?;
        report.restart_to_serving_s = restart.elapsed().as_secs_f64();
        for p in &provinces {
            cluster.wait_ready(*p).await?;
        }
        progress(
            options,
            &format!("Beijing serving {:.2} s after start", report.restart_to_serving_s),
        );
        let nodes = node_infos(&cluster);
        let mut conns = Vec::new();
        for p in &provinces {
            conns.push((*p, cluster.conn(*p).await?));
        }
        // Families of every phase, through the bureau API.
        let mut phase_families = BTreeMap::new();
        let mut all_families = Vec::new();
        for (index, kind) in [PhaseKind::Local, PhaseKind::CrossOne, PhaseKind::CrossTwo]
            .into_iter()
            .enumerate()
        {
            let wanted = options.phases.contains(&kind)
                || (kind == PhaseKind::CrossOne && options.phases.contains(&PhaseKind::CrossOneLowRate));
            if wanted {
                let families = families_for(kind, options.families, index as u64)?;
                all_families.extend(families.iter().cloned());
                phase_families.insert(kind.name(), families);
            }
        }
        progress(options, &format!("opening and binding {} families", all_families.len()));
        report.family_setup_s = set_up_families(conns, all_families).await?;
        let runner = PhaseRun {
            options,
            dir: &dir,
            certs_dir: &cluster.certs_dir,
            nodes: &nodes,
        };
        for kind in &options.phases {
            let source = match kind {
                PhaseKind::CrossOneLowRate => PhaseKind::CrossOne,
                other => *other,
            };
            let patients: Vec<Patient> = phase_families
                .get(source.name())
                .map(|families| {
                    families
                        .iter()
                        .map(|f| Patient {
                            person: f.patient.1.to_string(),
                            province: f.patient.0.code(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (rate, duration) = match kind {
                PhaseKind::CrossOneLowRate => (options.low_rate_per_s, options.low_duration_s.max(1)),
                _ => (options.rate_per_s, options.duration_s),
            };
            let warmup = match options.warmup_s {
                0 => String::new(),
                s => format!(" after {s} s of warm-up"),
            };
            progress(
                options,
                &format!("phase {}: {rate}/s for {duration} s{warmup}", kind.name()),
            );
            let phase = runner.run(*kind, patients, rate, duration).await?;
            progress(
                options,
                &format!(
                    "  settled {:.0}/s ({:.0}/s paid in full by grantors), p50 {:.1} ms, p99 {:.1} ms, flushes/settlement {:.3}, refused {}, failed {}",
                    phase.client.settled_per_s,
                    phase.client.aided_per_s,
                    phase.client.latency.p50_ms,
                    phase.client.latency.p99_ms,
                    phase.flushes_per_settlement,
                    phase.client.refused,
                    phase.client.failed
                ),
            );
            let seconds: Vec<String> = phase
                .client
                .latency_by_second
                .iter()
                .map(|second| format!("{:.0}", second.p99_ms))
                .collect();
            progress(options, &format!("  p99 ms by second: {}", seconds.join(" ")));
            report.phases.push(phase);
        }
        let peaks = sample(&nodes);
        report.peak_rss_mib = peaks.procs.values().map(|p| p.peak_rss_mib).fold(0.0, f64::max);
        cluster.stop_all();
    }
    let phase = |name: &str| report.phases.iter().find(|p| p.name == name).cloned();
    if let Some(local) = phase(PhaseKind::Local.name()) {
        report.local_settlements_per_s = local.client.aided_per_s;
    }
    if let Some(cross) = phase(PhaseKind::CrossOne.name()) {
        report.cross_province_settlements_per_s = cross.client.aided_per_s;
        report.p99_ms = cross.client.latency.p99_ms;
        report.flushes_per_settlement = cross.flushes_per_settlement;
    }
    if let Some(two) = phase(PhaseKind::CrossTwo.name()) {
        report.cross_two_grantors_settlements_per_s = two.client.aided_per_s;
    }
    if let Some(low) = phase(PhaseKind::CrossOneLowRate.name()) {
        report.low_rate_p99_ms = Some(low.client.latency.p99_ms);
    }
    if report.local_settlements_per_s > 0.0 {
        report.cross_over_local = Some(report.cross_province_settlements_per_s / report.local_settlements_per_s);
    }
    if options.transport_s > 0 {
        progress(options, "transport ceiling: mTLS unary gRPC echo");
        let transport = transport_ceiling(
            &dir,
            Duration::from_secs(options.transport_s),
            options.transport_in_flight,
        )
        .await?;
        report.transport_ceiling_rpc_per_s = transport.rpc_per_s;
        report.transport = Some(transport);
    }
    if options.storage_writes > 0 {
        progress(options, "storage ceiling: sled flushed write sets");
        let storage_dir = dir.join("storage-ceiling");
        let storage = tokio::task::block_in_place(|| {
            storage_ceiling(&storage_dir, options.storage_writes, options.storage_batch)
        })?;
        report.storage_ceiling_writes_per_s = storage.writes_per_s;
        report.storage = Some(storage);
    }
    if options.postgres {
        progress(
            options,
            "status-quo baseline: two-phase commit across two PostgreSQL servers",
        );
        let baseline = postgres_baseline(
            &std::env::temp_dir(),
            Duration::from_secs(options.postgres_s),
            options.postgres_workers,
        )
        .await;
        if let Some(reason) = &baseline.skipped {
            report.notes.push(reason.clone());
            progress(options, reason);
        } else {
            report.postgres_2pc_settlements_per_s = Some(baseline.settlements_per_s);
            if baseline.settlements_per_s > 0.0 {
                report.cross_over_postgres = Some(report.cross_province_settlements_per_s / baseline.settlements_per_s);
            }
        }
        report.postgres = Some(baseline);
    }
    if options.keep_dir {
        let kept = holder.keep();
        report
            .notes
            .push(format!("cluster directory kept at {}", kept.display()));
    }
    Ok(report)
}
