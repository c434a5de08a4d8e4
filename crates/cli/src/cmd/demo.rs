//! `exchange demo`: the README's main command. Three province nodes as real processes on
//! loopback (generated certificates, sled stores in a temporary directory, mutual-TLS gRPC),
//! a scripted family whose bill is paid across provinces, a few hundred random settlements and
//! refunds, and a summary with a conservation check against a model kept by this client.
//! With `--keep-running` the cluster stays up with the national monitor beside it (in this
//! process), until Ctrl-C or SIGTERM stops both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use exchange_core::binding::{BindRequest, DocumentKind, Evidence};
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::records::{Receipt, RefundReceipt, RefundRequest, SettleRequest};
use exchange_core::{BindingKind, Limits, Money, PersonId, Province, RefundId, Region, Relation, Scheme, SettlementId};
use exchange_monitor::{MonitorError, MonitorHandle};
use exchange_node::client::BureauConn;
use exchange_node::cluster::{ClusterOptions, LocalCluster};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::ctl::receipt_json;
use crate::Failure;

/// Provinces of the demo cluster: Beijing, Chongqing, Sichuan.
const DEMO_PROVINCES: [u32; 3] = [110000, 500000, 510000];
/// Hospital requests in flight at once.
const CONCURRENCY: usize = 16;
/// The monitor's usual dashboard port (`nodes/monitor.toml`); any free port when it is taken.
const MONITOR_PORT: u16 = 7900;
/// The monitor's JSON endpoints the demo prints.
const API_ENDPOINTS: [&str; 4] = ["flows", "health", "clearing", "alerts"];

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Leave the cluster running with the national monitor beside it, and print the dashboard
    /// URL and the nodes' addresses (Ctrl-C or SIGTERM stops them).
    #[arg(long)]
    keep_running: bool,
    /// Random settlements after the scripted family.
    #[arg(long, default_value_t = 300)]
    settlements: usize,
    /// Families across provinces in the random workload.
    #[arg(long, default_value_t = 24)]
    families: usize,
    /// Seed of the random workload.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

pub fn run(args: DemoArgs) -> Result<(), Failure> {
    if args.families == 0 || args.families > 10_000 || args.settlements > 100_000 {
        return Err(Failure::Input(anyhow!(
            "--families must be 1 to 10,000 and --settlements at most 100,000"
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(demo(args)).map_err(Failure::Check)
}

fn province(code: u32) -> anyhow::Result<Province> {
    Ok(Province::from_code(code)?)
}

/// The client's own model of every balance it created.
#[derive(Debug, Default)]
struct Model {
    /// person → (province, expected balance in fen, signed)
    balances: BTreeMap<PersonId, (Province, i128)>,
    /// (paying province, patient's province) → (amount fen, count)
    flows: BTreeMap<(Province, Province), (i128, u64)>,
    receipts: Vec<Receipt>,
    refunds: Vec<RefundReceipt>,
}

impl Model {
    fn apply_receipt(&mut self, patient_province: Province, receipt: &Receipt) {
        if let Some(entry) = self.balances.get_mut(&receipt.patient) {
            entry.1 -= i128::from(receipt.own_account_paid.fen());
        }
        for part in &receipt.mutual_aid {
            if let Some(entry) = self.balances.get_mut(&part.grantor) {
                entry.1 -= i128::from(part.amount.fen());
            }
            let flow = self.flows.entry((part.province, patient_province)).or_default();
            flow.0 += i128::from(part.amount.fen());
            flow.1 += 1;
        }
        self.receipts.push(receipt.clone());
    }

    fn apply_refund(&mut self, patient_province: Province, refund: &RefundReceipt) {
        for part in &refund.parts {
            if let Some(entry) = self.balances.get_mut(&part.account) {
                entry.1 += i128::from(part.amount.fen());
            }
            if part.binding.is_some() {
                self.flows.entry((part.province, patient_province)).or_default().0 -= i128::from(part.amount.fen());
            }
        }
        self.refunds.push(refund.clone());
    }
}

async fn call(conn: &mut BureauConn, request: ClientRequest) -> anyhow::Result<ClientReply> {
    conn.call(request)
        .await
        .map_err(|status| anyhow!("node did not answer: {}", status.message()))
}

async fn open(
    conns: &mut BTreeMap<Province, BureauConn>,
    model: &mut Model,
    province: Province,
    person: PersonId,
    name: &str,
    yuan: u64,
) -> anyhow::Result<()> {
    let conn = conns.get_mut(&province).ok_or_else(|| anyhow!("no node {province}"))?;
    let balance = Money::from_yuan(yuan)?;
    let request = ClientRequest::OpenAccount {
        person,
        name: name.into(),
        scheme: Scheme::Employee,
        balance,
    };
    match call(conn, request).await? {
        ClientReply::Account(_) => {
            model.balances.insert(person, (province, i128::from(balance.fen())));
            Ok(())
        }
        other => bail!("opening {person}: {other:?}"),
    }
}

async fn bind(
    conns: &mut BTreeMap<Province, BureauConn>,
    grantor: (Province, PersonId),
    grantee: (Province, PersonId),
    relation: Relation,
    limits: Limits,
) -> anyhow::Result<()> {
    let conn = conns
        .get_mut(&grantor.0)
        .ok_or_else(|| anyhow!("no node {}", grantor.0))?;
    let request = ClientRequest::Bind(BindRequest {
        grantor: grantor.1,
        grantee: grantee.1,
        grantee_province: grantee.0,
        relation,
        kind: BindingKind::MutualAid,
        limits,
        evidence: Evidence {
            document: DocumentKind::HouseholdRegister,
            reference: "DEMO-HR".into(),
            face_verified: true,
            commitment_signed: true,
        },
    });
    match call(conn, request).await? {
        ClientReply::Bound { .. } => Ok(()),
        other => bail!("binding {} to {}: {other:?}", grantor.1, grantee.1),
    }
}

fn settle_request(id: String, patient: PersonId, province: Province, self_pay: Money) -> anyhow::Result<SettleRequest> {
    let fund_paid = Money::from_fen(self_pay.fen().saturating_mul(2))?;
    Ok(SettleRequest {
        settlement: SettlementId::new(id)?,
        patient,
        total_fee: fund_paid.checked_add(self_pay)?,
        fund_paid,
        self_pay,
        institution: format!("H{}0001", province.code() / 10_000),
        treatment_region: Region::from(province),
        insured_region: Region::from(province),
    })
}

/// An adult's synthetic resident ID in `province`.
fn adult(province: Province, serial: u64) -> PersonId {
    PersonId::synthetic(province.code(), 5_000_000 + serial)
}

/// Ctrl-C and SIGTERM, listened to from the start: the demo stops its nodes (and the monitor)
/// and removes its temporary directory whenever it is stopped, not only at the end.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("SIGTERM handler")?,
        })
    }

    /// Waits for either signal and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted (Ctrl-C)",
            _ = self.terminate.recv() => "terminated (SIGTERM)",
        }
    }
}

/// What the scripted family and the random workload left behind.
struct Outcome {
    family_receipt: Receipt,
    model: Model,
    mismatches: Vec<String>,
    held_total: u64,
    settled: usize,
    workload_secs: f64,
}

impl Outcome {
    fn conserved(&self) -> bool {
        self.mismatches.is_empty() && self.held_total == 0
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stop = StopSignals::install()?;
    let dir = tempfile::Builder::new()
        .prefix("exchange-demo-")
        .tempdir()
        .context("temporary directory")?;
    let exe = std::env::current_exe().context("finding the exchange binary")?;
    let provinces: Vec<Province> = DEMO_PROVINCES
        .iter()
        .map(|c| province(*c))
        .collect::<anyhow::Result<_>>()?;
    if !args.json {
        println!("Starting 3 province nodes (Beijing, Chongqing, Sichuan) as separate processes on loopback,");
        println!(
            "with a generated CA, mutual TLS and sled stores in {}",
            dir.path().display()
        );
    }
    // The cluster lives inside this future until it completes: a signal drops it, and dropping
    // a `LocalCluster` stops its node processes (SIGTERM, then SIGKILL after a grace period).
    let run = async {
        let cluster = LocalCluster::launch(
            &exe,
            dir.path(),
            &provinces,
            &ClusterOptions {
                metrics: true,
                ..ClusterOptions::default()
            },
        )
        .await
        .context("launching the cluster")?;
        let outcome = workload(&args, &cluster, &provinces).await?;
        Ok::<_, anyhow::Error>((cluster, outcome))
    };
    let (cluster, outcome) = tokio::select! {
        result = run => result?,
        signal = stop.recv() => bail!("{signal} before the demo finished; its nodes were stopped"),
    };
    let monitor = if args.keep_running {
        Some(start_monitor(&cluster).await?)
    } else {
        None
    };
    report(&args, &provinces, &outcome, &cluster, monitor.as_ref(), started)?;
    if let Some(monitor) = monitor {
        print_running(&args, &cluster, &monitor);
        let signal = stop.recv().await;
        if args.json {
            eprintln!("{signal}: stopping the monitor and the nodes");
        } else {
            println!("\n{signal}: stopping the monitor and the nodes");
        }
        if let Err(error) = monitor.shutdown().await {
            eprintln!("warning: the monitor's last snapshot was not written: {error}");
        }
    }
    drop(cluster);
    if !outcome.conserved() {
        bail!(
            "balances do not match the model: {} mismatches, {} fen still held",
            outcome.mismatches.len(),
            outcome.held_total
        );
    }
    Ok(())
}

/// Starts the national monitor over the cluster, in this process: on the monitor's usual
/// `127.0.0.1:7900` when it is free, otherwise on any free port.
async fn start_monitor(cluster: &LocalCluster) -> anyhow::Result<MonitorHandle> {
    let preferred = SocketAddr::from(([127, 0, 0, 1], MONITOR_PORT));
    let handle = match exchange_monitor::spawn_for_cluster(cluster, preferred).await {
        Err(MonitorError::Io(_)) => {
            exchange_monitor::spawn_for_cluster(cluster, SocketAddr::from(([127, 0, 0, 1], 0))).await
        }
        other => other,
    };
    handle.context("starting the national monitor")
}

/// The URL of one of the monitor's JSON endpoints.
fn api_url(monitor: &MonitorHandle, endpoint: &str) -> String {
    format!("http://{}/api/{endpoint}", monitor.addr)
}

/// The addresses of the running cluster and monitor, once the summary is out.
fn print_running(args: &DemoArgs, cluster: &LocalCluster, monitor: &MonitorHandle) {
    if args.json {
        eprintln!(
            "The cluster and the national monitor ({}) keep running. Ctrl-C or SIGTERM stops them.",
            monitor.url()
        );
        return;
    }
    println!("\nThe cluster and the national monitor keep running. Ctrl-C (or SIGTERM) stops them.");
    println!("  dashboard          {}", monitor.url());
    for endpoint in API_ENDPOINTS {
        println!("  API                {}", api_url(monitor, endpoint));
    }
    for node in cluster.nodes.values() {
        println!(
            "  {} {:<10} gRPC https://{}  metrics http://{}/metrics  config {}",
            node.province,
            node.province.name(),
            node.addr,
            node.metrics_addr.map(|a| a.to_string()).unwrap_or_default(),
            node.config_path.display()
        );
    }
}

/// The scripted family, then the random families, settlements and refunds, then the check of
/// every balance against the model.
async fn workload(args: &DemoArgs, cluster: &LocalCluster, provinces: &[Province]) -> anyhow::Result<Outcome> {
    let mut conns = BTreeMap::new();
    for p in provinces {
        conns.insert(*p, cluster.conn(*p).await?);
    }
    let [beijing, chongqing, sichuan] = [provinces[0], provinces[1], provinces[2]];
    let mut model = Model::default();

    // The scripted family: a Chongqing grandmother, her son in Beijing, her daughter in Sichuan.
    let grandmother = PersonId::from_body("50010219480312004")?;
    let son = PersonId::from_body("11010519720805003")?;
    let daughter = PersonId::from_body("51010719750101002")?;
    open(
        &mut conns,
        &mut model,
        chongqing,
        grandmother,
        "王秀英 (grandmother)",
        50,
    )
    .await?;
    open(&mut conns, &mut model, beijing, son, "李建国 (son)", 1_000).await?;
    open(&mut conns, &mut model, sichuan, daughter, "李建华 (daughter)", 800).await?;
    let son_limits = Limits {
        per_settlement: Some(Money::from_yuan(300)?),
        monthly: Some(Money::from_yuan(2_000)?),
    };
    bind(
        &mut conns,
        (beijing, son),
        (chongqing, grandmother),
        Relation::Parent,
        son_limits,
    )
    .await?;
    bind(
        &mut conns,
        (sichuan, daughter),
        (chongqing, grandmother),
        Relation::Parent,
        Limits::default(),
    )
    .await?;
    let request = settle_request("DEMO-FAMILY-1".into(), grandmother, chongqing, Money::from_yuan(500)?)?;
    let family_receipt = match call(
        conns.get_mut(&chongqing).ok_or_else(|| anyhow!("no node"))?,
        ClientRequest::Settle(request),
    )
    .await?
    {
        ClientReply::Settled(receipt) => receipt,
        other => bail!("the family's settlement failed: {other:?}"),
    };
    model.apply_receipt(chongqing, &family_receipt);
    if !args.json {
        println!(
            "\nThe grandmother's bill in Chongqing: self-pay {}",
            family_receipt.self_pay
        );
        println!(
            "  her own account      {:>10}",
            family_receipt.own_account_paid.to_string()
        );
        for part in &family_receipt.mutual_aid {
            let who = if part.grantor == son {
                "son (Beijing)"
            } else {
                "daughter (Sichuan)"
            };
            println!("  {who:<20} {:>10}   binding {}", part.amount.to_string(), part.binding);
        }
        println!("  cash                 {:>10}", family_receipt.cash_paid.to_string());
    }

    // Random families: a patient in one province, one or two grantors in the others.
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut patients = Vec::new();
    let mut serial = 0u64;
    for _ in 0..args.families {
        let home = provinces[rng.random_range(0..provinces.len())];
        serial += 1;
        let patient = adult(home, serial);
        open(
            &mut conns,
            &mut model,
            home,
            patient,
            "patient",
            rng.random_range(0..200),
        )
        .await?;
        let mut others: Vec<Province> = provinces.iter().copied().filter(|p| *p != home).collect();
        if rng.random_bool(0.5) {
            others.reverse();
        }
        let grantors = rng.random_range(1..=2usize);
        for other in others.iter().take(grantors) {
            serial += 1;
            let grantor = adult(*other, serial);
            open(
                &mut conns,
                &mut model,
                *other,
                grantor,
                "grantor",
                rng.random_range(100..3_000),
            )
            .await?;
            let limits = if rng.random_bool(0.3) {
                Limits {
                    per_settlement: Some(Money::from_yuan(200)?),
                    monthly: None,
                }
            } else {
                Limits::default()
            };
            bind(&mut conns, (*other, grantor), (home, patient), Relation::Child, limits).await?;
        }
        patients.push((home, patient));
    }

    // A few hundred settlements, with refunds of some, many in flight at once.
    let mut plan = Vec::new();
    for i in 0..args.settlements {
        let (home, patient) = patients[rng.random_range(0..patients.len())];
        let self_pay = Money::from_fen(rng.random_range(1_000..40_000))?;
        let refund = rng.random_bool(0.2).then(|| rng.random_bool(0.5));
        plan.push((i, home, patient, self_pay, refund));
    }
    let workload_started = Instant::now();
    let mut done = 0usize;
    for chunk in plan.chunks(CONCURRENCY) {
        let mut tasks = Vec::new();
        for &(i, home, patient, self_pay, refund) in chunk {
            let mut conn = conns.get(&home).cloned().ok_or_else(|| anyhow!("no node"))?;
            tasks.push(tokio::spawn(async move {
                let id = format!("DEMO-{i:05}");
                let request = settle_request(id.clone(), patient, home, self_pay)?;
                let receipt = match call(&mut conn, ClientRequest::Settle(request)).await? {
                    ClientReply::Settled(receipt) => receipt,
                    other => bail!("settlement {id}: {other:?}"),
                };
                let refunded = match refund {
                    None => None,
                    Some(full) => {
                        let amount = if full {
                            None
                        } else {
                            Some(Money::from_fen(self_pay.fen() / 2)?)
                        };
                        let request = RefundRequest {
                            refund: RefundId::new(format!("R-{id}"))?,
                            settlement: receipt.settlement.clone(),
                            amount,
                        };
                        match call(&mut conn, ClientRequest::Refund(request)).await? {
                            ClientReply::Refunded(refund) => Some(refund),
                            other => bail!("refund of {id}: {other:?}"),
                        }
                    }
                };
                Ok::<_, anyhow::Error>((home, receipt, refunded))
            }));
        }
        for task in tasks {
            let (home, receipt, refunded) = task.await.context("workload task")??;
            model.apply_receipt(home, &receipt);
            if let Some(refund) = refunded {
                model.apply_refund(home, &refund);
            }
            done += 1;
        }
    }
    let workload_secs = workload_started.elapsed().as_secs_f64();

    // Holds resolve after the receipts (commits travel after the hospital's answer): wait for
    // every account to have nothing held, then compare every balance with the model.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mismatches, held_total) = loop {
        let mut mismatches = Vec::new();
        let mut held_total = 0u64;
        for (person, (home, expected)) in &model.balances {
            let conn = conns.get_mut(home).ok_or_else(|| anyhow!("no node"))?;
            let account = conn
                .account(person)
                .await
                .map_err(|s| anyhow!("{}", s.message()))?
                .ok_or_else(|| anyhow!("{person} vanished"))?;
            held_total += account.held.fen();
            if i128::from(account.balance.fen()) != *expected {
                mismatches.push(format!(
                    "{person}: balance {} fen, model {expected} fen",
                    account.balance.fen()
                ));
            }
        }
        if (mismatches.is_empty() && held_total == 0) || Instant::now() > deadline {
            break (mismatches, held_total);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Ok(Outcome {
        family_receipt,
        model,
        mismatches,
        held_total,
        settled: done,
        workload_secs,
    })
}

/// The summary, as text or as one JSON object (with the monitor's and the nodes' addresses
/// when they keep running).
fn report(
    args: &DemoArgs,
    provinces: &[Province],
    outcome: &Outcome,
    cluster: &LocalCluster,
    monitor: Option<&MonitorHandle>,
    started: Instant,
) -> anyhow::Result<()> {
    let Outcome {
        family_receipt,
        model,
        mismatches,
        held_total,
        settled,
        workload_secs,
    } = outcome;
    let conserved = outcome.conserved();
    let mut balances_by_province: BTreeMap<Province, i128> = BTreeMap::new();
    for (home, balance) in model.balances.values() {
        *balances_by_province.entry(*home).or_default() += balance;
    }
    let cross = model.receipts.iter().filter(|r| !r.mutual_aid.is_empty()).count();
    let mutual_aid_fen: u64 = model
        .receipts
        .iter()
        .flat_map(|r| r.mutual_aid.iter())
        .map(|p| p.amount.fen())
        .sum();
    let cash_fen: u64 = model.receipts.iter().map(|r| r.cash_paid.fen()).sum();
    if args.json {
        let mut value = json!({
            "provinces": provinces.iter().map(|p| json!({"code": p.code(), "name": p.name()})).collect::<Vec<_>>(),
            "family_receipt": receipt_json(family_receipt),
            "settlements": model.receipts.len(),
            "settlements_with_mutual_aid": cross,
            "refunds": model.refunds.len(),
            "mutual_aid_paid_fen": mutual_aid_fen,
            "cash_paid_fen": cash_fen,
            "balances_by_province_fen": balances_by_province.iter().map(|(p, b)| (p.to_string(), json!(b))).collect::<serde_json::Map<_, _>>(),
            "flows": model.flows.iter().map(|((from, to), (amount, count))| json!({"from": from.code(), "to": to.code(), "amount_fen": amount, "count": count})).collect::<Vec<_>>(),
            "held_fen": held_total,
            "mismatches": mismatches,
            "conserved": conserved,
            "settlements_per_s": (*settled as f64) / workload_secs.max(1e-9),
            "elapsed_s": started.elapsed().as_secs_f64(),
            "keep_running": args.keep_running,
        });
        if let (Some(monitor), Some(object)) = (monitor, value.as_object_mut()) {
            object.insert("dashboard_url".into(), json!(monitor.url()));
            object.insert(
                "api_urls".into(),
                API_ENDPOINTS
                    .iter()
                    .map(|e| ((*e).to_string(), json!(api_url(monitor, e))))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            );
            object.insert(
                "nodes".into(),
                cluster
                    .nodes
                    .values()
                    .map(|node| {
                        json!({
                            "province": node.province.code(),
                            "name": node.province.name(),
                            "grpc": node.addr.to_string(),
                            "metrics_url": node.metrics_addr.map(|a| format!("http://{a}/metrics")),
                            "config": node.config_path.display().to_string(),
                        })
                    })
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
        println!("{value}");
    } else {
        println!(
            "\n{} settlements ({cross} with mutual aid across provinces) and {} refunds in {:.1} s",
            model.receipts.len(),
            model.refunds.len(),
            workload_secs
        );
        println!(
            "mutual aid paid {}, cash paid {}",
            Money::from_fen(mutual_aid_fen)?,
            Money::from_fen(cash_fen)?
        );
        println!("\nBalances by province (accounts of this demo):");
        for (p, balance) in &balances_by_province {
            println!(
                "  {} {:<10} {:>14}",
                p,
                p.name(),
                Money::from_fen(u64::try_from(*balance).unwrap_or(0))?.to_string()
            );
        }
        println!("\nCross-province flows (paying province → patient's province, net of refunds):");
        for ((from, to), (amount, count)) in &model.flows {
            println!(
                "  {:<10} → {:<10} {:>12} in {count} payments",
                from.name(),
                to.name(),
                Money::from_fen(u64::try_from(*amount).unwrap_or(0))?.to_string()
            );
        }
        println!("\nconserved: {}", if conserved { "yes" } else { "NO" });
        for mismatch in mismatches {
            println!("  {mismatch}");
        }
        println!("({:.1} s in all)", started.elapsed().as_secs_f64());
        if !args.keep_running {
            println!("(`exchange demo --keep-running` leaves the cluster up with the national monitor's dashboard)");
        }
    }
    Ok(())
}
