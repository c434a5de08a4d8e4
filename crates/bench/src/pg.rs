//! The status-quo baseline: the same cross-province deduction done as two-phase commit across
//! two PostgreSQL servers (the patient's province records the settlement and its clearing
//! claim; the grantor's province debits the account and journals it), with `PREPARE
//! TRANSACTION` / `COMMIT PREPARED` and a durable decision log in the driver (group-committed,
//! one fdatasync for all decisions waiting, which favours the baseline). The servers are
//! started from the system's PostgreSQL binaries in temporary directories; nothing is
//! installed. Skipped, with the reason, when PostgreSQL is not there.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls};

use crate::error::BenchError;
use crate::latency::{LatencySummary, summarize};

/// Most settlements one baseline worker runs (the run also stops at its deadline).
pub const PG_SETTLEMENTS_PER_WORKER_MAX: u64 = 10_000_000;
/// Grantor accounts on the grantor-side server.
pub const PG_ACCOUNTS: u64 = 1_000;
/// How long a started server may take to accept connections.
pub const PG_READY_WAIT_MS_MAX: u64 = 30_000;
/// Decisions written by one fdatasync at most.
pub const DECISIONS_PER_SYNC_MAX: usize = 4_096;

/// The baseline's figures, or why it was skipped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PgBaseline {
    pub skipped: Option<String>,
    pub version: Option<String>,
    pub workers: usize,
    pub settled: u64,
    pub failed: u64,
    pub seconds: f64,
    pub settlements_per_s: f64,
    pub latency: LatencySummary,
    pub decision_log_syncs: u64,
    pub first_error: Option<String>,
}

impl PgBaseline {
    fn skipped(reason: impl Into<String>) -> PgBaseline {
        PgBaseline {
            skipped: Some(reason.into()),
            ..PgBaseline::default()
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has initdb and postgres.
pub fn find_postgres() -> Option<(String, PathBuf)> {
    let mut found: Vec<(u32, String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir("/usr/lib/postgresql").ok()?.take(64).flatten() {
        let version = entry.file_name().to_string_lossy().into_owned();
        let bin = entry.path().join("bin");
        if bin.join("initdb").is_file() && bin.join("postgres").is_file() {
            let major = version.split('.').next().and_then(|v| v.parse().ok()).unwrap_or(0);
            found.push((major, version, bin));
        }
    }
    found.sort();
    found.pop().map(|(_, version, bin)| (version, bin))
}

fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// uid and gid of the `postgres` system user (PostgreSQL refuses to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"postgres") {
            Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
        } else {
            None
        }
    })
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(bin: &Path, program: &str, run_as: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(bin.join(program));
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    command
}

fn start_server(bin: &Path, dir: &Path, name: &str, run_as: Option<(u32, u32)>) -> Result<Server, BenchError> {
    let data = dir.join(name);
    let init = command(bin, "initdb", run_as)
        .args(["-A", "trust", "-U", "bench", "-E", "UTF8", "--no-sync", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if !init.status.success() {
        return Err(BenchError::step("initdb", String::from_utf8_lossy(&init.stderr)));
    }
    let port = crate::run::free_port()?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = command(bin, "postgres", run_as)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_prepared_transactions=256",
            "-c",
            "max_connections=200",
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "shared_buffers=128MB",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Server { child, port })
}

async fn connect(port: u16) -> Result<Client, BenchError> {
    let config = format!("host=127.0.0.1 port={port} user=bench dbname=postgres");
    let (client, connection) = tokio_postgres::connect(&config, NoTls)
        .await
        .map_err(|e| BenchError::step("postgres connect", e))?;
    tokio::spawn(async move {
        let _ended = connection.await;
    });
    Ok(client)
}

async fn wait_ready(port: u16) -> Result<Client, BenchError> {
    let deadline = Instant::now() + Duration::from_millis(PG_READY_WAIT_MS_MAX);
    loop {
        match connect(port).await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn pg(error: tokio_postgres::Error) -> BenchError {
    BenchError::step("postgres", error)
}

/// The driver's durable decision log: decisions queue here; one task writes all waiting ones
/// and makes them durable with one fdatasync before acknowledging any.
fn decision_log(
    path: &Path,
    syncs: Arc<AtomicU64>,
) -> Result<mpsc::Sender<(String, oneshot::Sender<bool>)>, BenchError> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let (sender, mut receiver) = mpsc::channel::<(String, oneshot::Sender<bool>)>(DECISIONS_PER_SYNC_MAX);
    std::thread::Builder::new()
        .name("pg-decision-log".into())
        .spawn(move || {
            while let Some(first) = receiver.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < DECISIONS_PER_SYNC_MAX {
                    match receiver.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let mut text = String::new();
                for (gid, _) in &batch {
                    text.push_str("COMMIT ");
                    text.push_str(gid);
                    text.push('\n');
                }
                let ok = file.write_all(text.as_bytes()).is_ok() && file.sync_data().is_ok();
                syncs.fetch_add(1, Ordering::Relaxed);
                for (_, done) in batch {
                    let _ = done.send(ok);
                }
            }
        })?;
    Ok(sender)
}

async fn one_settlement(
    coordinator: &Client,
    grantor_side: &Client,
    log: &mpsc::Sender<(String, oneshot::Sender<bool>)>,
    gid: &str,
    account: &str,
) -> Result<(), BenchError> {
    let amount: i64 = 100;
    let phase_one = async {
        coordinator.batch_execute("BEGIN").await.map_err(pg)?;
        coordinator
            .execute(
                "INSERT INTO settlements (id, patient, amount) VALUES ($1, $2, $3)",
                &[&gid, &"patient", &amount],
            )
            .await
            .map_err(pg)?;
        coordinator
            .execute(
                "INSERT INTO clearing (settlement, payer_province, amount) VALUES ($1, 500000, $2)",
                &[&gid, &amount],
            )
            .await
            .map_err(pg)?;
        coordinator
            .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
            .await
            .map_err(pg)?;
        Ok::<(), BenchError>(())
    };
    let phase_one_grantor = async {
        grantor_side.batch_execute("BEGIN").await.map_err(pg)?;
        let updated = grantor_side
            .execute(
                "UPDATE accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2",
                &[&account, &amount],
            )
            .await
            .map_err(pg)?;
        if updated != 1 {
            grantor_side.batch_execute("ROLLBACK").await.map_err(pg)?;
            return Err(BenchError::step("postgres", "grantor refused (no balance)"));
        }
        grantor_side
            .execute(
                "INSERT INTO journal (account, settlement, amount) VALUES ($1, $2, $3)",
                &[&account, &gid, &amount],
            )
            .await
            .map_err(pg)?;
        grantor_side
            .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
            .await
            .map_err(pg)?;
        Ok::<(), BenchError>(())
    };
    let (a, b) = tokio::join!(phase_one, phase_one_grantor);
    if a.is_err() || b.is_err() {
        // Presumed abort: roll back whatever prepared.
        let _ = coordinator.batch_execute(&format!("ROLLBACK PREPARED '{gid}'")).await;
        let _ = grantor_side.batch_execute(&format!("ROLLBACK PREPARED '{gid}'")).await;
        let _ = coordinator.batch_execute("ROLLBACK").await;
        let _ = grantor_side.batch_execute("ROLLBACK").await;
        a?;
        b?;
    }
    let (done, logged) = oneshot::channel();
    log.send((gid.to_string(), done))
        .await
        .map_err(|e| BenchError::step("decision log", e))?;
    if !logged.await.unwrap_or(false) {
        return Err(BenchError::step("decision log", "fdatasync failed"));
    }
    let commit = format!("COMMIT PREPARED '{gid}'");
    let (a, b) = tokio::join!(coordinator.batch_execute(&commit), grantor_side.batch_execute(&commit));
    a.map_err(pg)?;
    b.map_err(pg)?;
    Ok(())
}

/// Runs the baseline for `duration` with `workers` settlements in flight (closed loop, each
/// worker with its own connection to each server).
pub async fn postgres_baseline(dir: &Path, duration: Duration, workers: usize) -> PgBaseline {
    let Some((version, bin)) = find_postgres() else {
        return PgBaseline::skipped(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): baseline skipped",
        );
    };
    let run_as = if current_uid() == Some(0) {
        match postgres_user() {
            Some(user) => Some(user),
            None => {
                return PgBaseline::skipped("running as root and there is no `postgres` user to run the servers as");
            }
        }
    } else {
        None
    };
    match run_baseline(dir, &bin, run_as, duration, workers).await {
        Ok(mut figures) => {
            figures.version = Some(version);
            figures
        }
        Err(error) => PgBaseline::skipped(format!("PostgreSQL baseline failed: {error}")),
    }
}

async fn run_baseline(
    dir: &Path,
    bin: &Path,
    run_as: Option<(u32, u32)>,
    duration: Duration,
    workers: usize,
) -> Result<PgBaseline, BenchError> {
    // Its own directory under the system temporary directory: the servers may run as the
    // `postgres` user, who cannot enter the benchmark's private directory.
    let holder = tempfile::Builder::new().prefix("exchange-bench-pg-").tempdir_in(dir)?;
    let pg_dir = holder.path().to_path_buf();
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&pg_dir, Some(uid), Some(gid))?;
    }
    let coordinator_server = start_server(bin, &pg_dir, "coordinator", run_as)?;
    let grantor_server = start_server(bin, &pg_dir, "grantor", run_as)?;
    let setup_a = wait_ready(coordinator_server.port).await?;
    let setup_b = wait_ready(grantor_server.port).await?;
    setup_a
        .batch_execute(
            "CREATE TABLE settlements (id text PRIMARY KEY, patient text NOT NULL, amount bigint NOT NULL, \
             decided_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE clearing (seq bigserial PRIMARY KEY, settlement text NOT NULL, payer_province int NOT NULL, \
             amount bigint NOT NULL);",
        )
        .await
        .map_err(pg)?;
    setup_b
        .batch_execute(&format!(
            "CREATE TABLE accounts (id text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
             CREATE TABLE journal (seq bigserial PRIMARY KEY, account text NOT NULL, settlement text NOT NULL, \
             amount bigint NOT NULL);
             INSERT INTO accounts SELECT 'g' || i, 1000000000000 FROM generate_series(1, {PG_ACCOUNTS}) AS i;"
        ))
        .await
        .map_err(pg)?;
    let syncs = Arc::new(AtomicU64::new(0));
    let log = decision_log(&pg_dir.join("decisions.log"), Arc::clone(&syncs))?;
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for worker in 0..workers.clamp(1, 128) {
        let coordinator = connect(coordinator_server.port).await?;
        let grantor_side = connect(grantor_server.port).await?;
        let log = log.clone();
        let failed = Arc::clone(&failed);
        let first_error = Arc::clone(&first_error);
        tasks.spawn(async move {
            let mut micros = Vec::new();
            for index in 0..PG_SETTLEMENTS_PER_WORKER_MAX {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let gid = format!("s-{worker}-{index}");
                let account = format!(
                    "g{}",
                    (index.wrapping_mul(31).wrapping_add(worker as u64)) % PG_ACCOUNTS + 1
                );
                match one_settlement(&coordinator, &grantor_side, &log, &gid, &account).await {
                    Ok(()) => micros.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX)),
                    Err(error) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(error.to_string());
                        }
                    }
                }
            }
            micros
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.map_err(|e| BenchError::step("baseline worker", e))?);
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(log);
    let settled = u64::try_from(all.len()).unwrap_or(u64::MAX);
    let first_error = first_error.lock().ok().and_then(|f| f.clone());
    drop(coordinator_server);
    drop(grantor_server);
    Ok(PgBaseline {
        skipped: None,
        version: None,
        workers,
        settled,
        failed: failed.load(Ordering::Relaxed),
        seconds,
        settlements_per_s: if seconds > 0.0 { settled as f64 / seconds } else { 0.0 },
        latency: summarize(all),
        decision_log_syncs: syncs.load(Ordering::Relaxed),
        first_error,
    })
}
