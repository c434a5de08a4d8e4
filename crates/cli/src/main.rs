//! The `exchange` binary: one binary for every role, with subcommands (as `cockroach` ships).
//!
//! Exit codes: 0 success; 1 a check failed (an invariant violation, a reconciliation
//! mismatch); 2 bad input (arguments, configuration, refused request).

mod cmd;

/// The allocator of every process of the binary (nodes, monitor, clients). The node's profile
/// spent 17-20 % of its CPU in glibc malloc and free (sled's copy-on-write pages, protobuf and
/// record encoding); mimalloc is faster at that churn (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "exchange",
    version,
    about = "Cross-province family mutual-aid exchange (家庭共济跨省结算)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a demonstration: a multi-province cluster paying a family's bills across provinces.
    Demo(cmd::demo::DemoArgs),
    /// Create development certificates for nodes, bureaus and the monitor.
    #[command(subcommand)]
    Certs(cmd::certs::CertsCommand),
    /// Run one province node.
    Start(cmd::start::StartArgs),
    /// Operate a node as its province's bureau (accounts, bindings, settlements, refunds).
    Ctl(cmd::ctl::CtlArgs),
    /// Verify the operator audit log's hash chain in a stopped node's data directory (exit code
    /// 1 when broken; `exchange ctl audit verify` asks a running node).
    AuditVerify(cmd::ctl::OfflineVerifyArgs),
    /// Deterministic failure simulations and the protocol's model checker.
    #[command(subcommand)]
    Sim(cmd::sim::SimCommand),
    /// Run the national monitor: every node's feed, the dashboard, the JSON API.
    Monitor(cmd::monitor::MonitorArgs),
    /// Benchmark a real cluster beside the transport, storage and PostgreSQL ceilings.
    Bench(cmd::bench::BenchArgs),
    /// Chaos on real processes: kill -9, pauses, partitions under load, then the checks.
    Chaos(cmd::chaos::ChaosArgs),
    /// The benchmark's load client (started by `exchange bench`).
    #[command(hide = true)]
    BenchClient(cmd::bench::BenchClientArgs),
}

/// How a subcommand ended, for the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad input: a clear message, exit code 2.
    Input(anyhow::Error),
    /// A check failed (violation, mismatch): exit code 1.
    Check(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::Input(error)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Sim(command) => cmd::sim::run(command),
        Command::Certs(command) => cmd::certs::run(command),
        Command::Start(args) => cmd::start::run(args),
        Command::Ctl(args) => cmd::ctl::run(args),
        Command::AuditVerify(args) => cmd::ctl::run_audit_verify(args),
        Command::Monitor(args) => cmd::monitor::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Chaos(args) => cmd::chaos::run(args),
        Command::BenchClient(args) => cmd::bench::run_client(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
        Err(Failure::Check(error)) => {
            eprintln!("check failed: {error:#}");
            ExitCode::from(1)
        }
    }
}
