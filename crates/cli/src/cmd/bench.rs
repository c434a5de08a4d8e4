//! `exchange bench`: starts its own cluster (real node processes, mutual TLS, sled on disk),
//! drives settlements from a separate client process, and reports throughput, latency, flushes
//! and bytes per settlement, CPU and peak RSS per node, beside the transport, storage and
//! PostgreSQL two-phase-commit ceilings. `exchange bench-client` is that client (hidden).

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::Args;
use exchange_bench::{BenchOptions, BenchReport, PhaseKind, run_bench};

use crate::Failure;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Seconds of each full-rate phase.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Target rate of each full-rate phase, settlements per second (open loop).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Filler accounts bulk-loaded into the Beijing node before it starts.
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Families per phase (opened and bound through the bureau API).
    #[arg(long, default_value_t = 256)]
    families: usize,
    /// Most settlements in flight from the client.
    #[arg(long, default_value_t = 4_096)]
    in_flight: usize,
    /// gRPC connections from the client to each node.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Rate of the low-rate phase, settlements per second.
    #[arg(long, default_value_t = 1_000.0)]
    low_rate: f64,
    /// Seconds of the low-rate phase (default: --duration, at most 30).
    #[arg(long)]
    low_duration: Option<u64>,
    /// Poisson arrivals instead of fixed intervals.
    #[arg(long)]
    poisson: bool,
    /// Random settlement ids (UUID-like) instead of a hospital's fixed-width serial numbers.
    #[arg(long)]
    random_ids: bool,
    /// Seconds of load at each phase's rate before its measured --duration (connections,
    /// caches and trees warm); nothing of the warm-up is in any figure.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Self-pay part of each settlement, fen.
    #[arg(long, default_value_t = 100)]
    self_pay_fen: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Phases, comma-separated: local, cross1, cross2, low.
    #[arg(long, default_value = "local,cross1,cross2,low", value_delimiter = ',')]
    phases: Vec<String>,
    /// Seconds of the transport ceiling (0 skips it).
    #[arg(long, default_value_t = 5)]
    transport_seconds: u64,
    /// Write sets of the storage ceiling (0 skips it).
    #[arg(long, default_value_t = 50_000)]
    storage_writes: u64,
    /// Write sets per flush in the storage ceiling.
    #[arg(long, default_value_t = 100)]
    storage_batch: u64,
    /// Skip the PostgreSQL baseline.
    #[arg(long)]
    no_postgres: bool,
    /// Seconds of the PostgreSQL baseline (default: --duration, at most 20).
    #[arg(long)]
    postgres_seconds: Option<u64>,
    /// Settlements in flight in the PostgreSQL baseline.
    #[arg(long, default_value_t = 32)]
    postgres_workers: usize,
    /// Extra TOML appended to every node's configuration (e.g. "[tuning]\naccount_shards = 8").
    #[arg(long, default_value = "")]
    node_config: String,
    /// Runtime threads of every node process (0: one per core). One by default: the three
    /// nodes and the client share this machine's cores, and more threads per node only wake
    /// each other to steal work.
    #[arg(long, default_value_t = 1)]
    node_threads: usize,
    /// Keep the cluster's directory (logs, stores) and print where.
    #[arg(long)]
    keep: bool,
}

/// The load client the benchmark starts as a separate process.
#[derive(Debug, Args)]
pub struct BenchClientArgs {
    /// The client's specification, written by `exchange bench`.
    #[arg(long)]
    spec: PathBuf,
}

fn phase(name: &str) -> Result<PhaseKind, Failure> {
    match name.trim() {
        "local" => Ok(PhaseKind::Local),
        "cross1" => Ok(PhaseKind::CrossOne),
        "cross2" => Ok(PhaseKind::CrossTwo),
        "low" => Ok(PhaseKind::CrossOneLowRate),
        other => Err(Failure::Input(anyhow!(
            "unknown phase {other:?} (local, cross1, cross2, low)"
        ))),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?)
}

pub fn run(args: BenchArgs) -> Result<(), Failure> {
    let phases = args
        .phases
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| phase(p))
        .collect::<Result<Vec<_>, _>>()?;
    let options = BenchOptions {
        exe: std::env::current_exe().context("finding the exchange binary")?,
        duration_s: args.duration,
        rate_per_s: args.rate,
        low_rate_per_s: args.low_rate,
        low_duration_s: args.low_duration.unwrap_or(args.duration.min(30)),
        accounts: args.accounts,
        families: args.families,
        in_flight_max: args.in_flight,
        connections_per_node: args.connections,
        self_pay_fen: args.self_pay_fen,
        poisson: args.poisson,
        random_ids: args.random_ids,
        warmup_s: args.warmup,
        seed: args.seed,
        phases,
        transport_s: args.transport_seconds,
        transport_in_flight: 32,
        storage_writes: args.storage_writes,
        storage_batch: args.storage_batch,
        postgres: !args.no_postgres,
        postgres_s: args.postgres_seconds.unwrap_or(args.duration.min(20)),
        postgres_workers: args.postgres_workers,
        extra_config: if args.node_config.is_empty() {
            String::new()
        } else {
            format!("\n{}\n", args.node_config)
        },
        node_threads: args.node_threads,
        keep_dir: args.keep,
        verbose: !args.json,
    };
    options.validate().map_err(|e| Failure::Input(e.into()))?;
    let report = runtime()?
        .block_on(run_bench(&options))
        .map_err(|e| Failure::Check(e.into()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        );
    } else {
        print_report(&report);
    }
    Ok(())
}

pub fn run_client(args: BenchClientArgs) -> Result<(), Failure> {
    // One runtime thread, like the nodes: the client shares the machine's cores with them, and
    // a second worker only wakes the first to steal its work.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(exchange_bench::workload::client_main(&args.spec))
        .map_err(|e| Failure::Check(e.into()))
}

fn opt(value: Option<f64>, unit: &str) -> String {
    value.map(|v| format!("{v:.0}{unit}")).unwrap_or_else(|| "-".into())
}

fn print_report(report: &BenchReport) {
    let m = &report.machine;
    println!(
        "\nMachine: {} CPUs ({}), {:.1} GiB, Linux {}",
        m.cpus, m.cpu_model, m.memory_gib, m.kernel
    );
    if let Some(load) = &report.bulk_load {
        println!(
            "Beijing: {} accounts bulk-loaded in {:.1} s ({:.0}/s, store {} MiB); restart to serving {:.2} s",
            load.accounts,
            load.seconds,
            load.accounts_per_s,
            load.store_bytes >> 20,
            report.restart_to_serving_s
        );
    }
    println!(
        "\n{:<28} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>10} {:>10}  CPU cores BJ/CQ/SC/client",
        "phase", "target/s", "aided/s", "p50 ms", "p99 ms", "p999 ms", "flush/set", "hosp B/set", "n2n B/set"
    );
    for phase in &report.phases {
        let cpu: Vec<String> = phase.nodes.iter().map(|n| format!("{:.2}", n.cpu_cores)).collect();
        println!(
            "{:<28} {:>8.0} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>9.3} {:>10} {:>10}  {}/{:.2}",
            phase.name,
            phase.target_rate_per_s,
            phase.client.aided_per_s,
            phase.client.latency.p50_ms,
            phase.client.latency.p99_ms,
            phase.client.latency.p999_ms,
            phase.flushes_per_settlement,
            opt(phase.hospital_bytes_per_settlement, ""),
            opt(phase.node_to_node_bytes_per_settlement, ""),
            cpu.join("/"),
            phase.client_cpu_cores
        );
        if phase.client.settled_short > 0 {
            println!(
                "    {} of {} answered with grantors paying less than the bill (first: {})",
                phase.client.settled_short,
                phase.client.settled,
                phase.client.first_short.clone().unwrap_or_default()
            );
        }
        if phase.client.refused > 0 || phase.client.failed > 0 {
            println!(
                "    refused {}, failed {}: {}",
                phase.client.refused,
                phase.client.failed,
                phase.client.first_error.clone().unwrap_or_default()
            );
        }
    }
    if let Some(phase) = report.phases.iter().find(|phase| phase.warmup_s > 0.0) {
        println!(
            "    each phase measured after {:.0} s of warm-up at its rate (in none of the figures)",
            phase.warmup_s
        );
    }
    println!("\nPeak RSS of a node: {:.0} MiB", report.peak_rss_mib);
    if let Some(t) = &report.transport {
        println!(
            "Transport ceiling (mTLS unary gRPC echo, {} in flight): {:.0} calls/s, p99 {:.2} ms",
            t.in_flight, t.rpc_per_s, t.latency.p99_ms
        );
    }
    if let Some(s) = &report.storage {
        println!(
            "Storage ceiling (sled, {} write sets per flush): {:.0} write sets/s, flush mean {:.1} ms, max {:.1} ms",
            s.batch, s.writes_per_s, s.flush_ms_mean, s.flush_ms_max
        );
    }
    if let Some(pg) = &report.postgres {
        match &pg.skipped {
            Some(reason) => println!("PostgreSQL baseline: {reason}"),
            None => println!(
                "PostgreSQL 2PC baseline ({}, {} in flight): {:.0} settlements/s, p50 {:.1} ms, p99 {:.1} ms",
                pg.version.clone().unwrap_or_default(),
                pg.workers,
                pg.settlements_per_s,
                pg.latency.p50_ms,
                pg.latency.p99_ms
            ),
        }
    }
    if let Some(ratio) = report.cross_over_local {
        println!("Cross-province / local-only: {ratio:.2}x");
    }
    if let Some(ratio) = report.cross_over_postgres {
        println!("Cross-province / PostgreSQL 2PC: {ratio:.2}x");
    }
    for note in &report.notes {
        println!("Note: {note}");
    }
}
