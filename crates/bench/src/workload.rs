//! The load client (`exchange bench-client`): open-loop settlements as hospitals send them,
//! one settlement per request, many in flight, latency measured from each request's
//! scheduled send time so a slow node cannot hide its queueing (no coordinated omission).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::records::SettleRequest;
use exchange_core::{Money, PersonId, Province, Region, SettlementId};
use exchange_node::client::BureauConn;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc};

use crate::error::BenchError;
use crate::latency::{LatencySummary, SecondSummary, by_second, summarize};

/// Most requests one client run may schedule (bounds memory for latency samples).
pub const SCHEDULED_MAX: u64 = 20_000_000;
/// Most connections the client opens to one node.
pub const CONNECTIONS_PER_NODE_MAX: usize = 64;
/// How long the client waits for the driver's "go" and for its stdin to close.
pub const DRIVER_WAIT_MS_MAX: u64 = 120_000;

/// One node the client sends to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeTarget {
    pub province: u32,
    pub addr: String,
}

/// A patient, settled at the node of their province.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Patient {
    pub person: String,
    pub province: u32,
}

/// What the driver asks the client process to do (written as JSON to a file).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientSpec {
    pub certs_dir: PathBuf,
    pub nodes: Vec<NodeTarget>,
    pub patients: Vec<Patient>,
    pub rate_per_s: f64,
    pub duration_ms: u64,
    pub in_flight_max: usize,
    pub connections_per_node: usize,
    pub self_pay_fen: u64,
    /// Prefix of settlement ids, unique per run.
    pub id_prefix: String,
    pub seed: u64,
    /// Exponential gaps (Poisson arrivals) instead of fixed intervals.
    pub poisson: bool,
    /// Random settlement ids (see `settlement_id`).
    #[serde(default)]
    pub random_ids: bool,
    /// Load sent at the same rate before the measured `duration_ms`, and not measured: the
    /// client prints `{"warm":true}` when it ends, so the driver samples from there.
    #[serde(default)]
    pub warmup_ms: u64,
}

/// The line the client prints when its warm-up ends (only when it has one).
pub const WARM_LINE: &str = "{\"warm\":true}";

/// The id of the `index`-th settlement of a run. By default a fixed-width serial number, as a
/// hospital's system numbers its bills, so ids arrive in key order and the node's trees keyed
/// by them grow at one edge. With `random` a random 64-bit hex id (a UUID-like id), which lands
/// anywhere in the key space: every tree keyed by it is then written all over, and its working
/// set grows with the store (`--random-ids`, see BENCHMARKS.md).
pub fn settlement_id(prefix: &str, index: u64, random: bool, rng: &mut impl Rng) -> String {
    if random {
        format!("{prefix}-{:016x}", rng.random::<u64>())
    } else {
        format!("{prefix}-{index:010}")
    }
}

/// What the client measured (printed as one JSON line on stdout).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientReport {
    pub scheduled: u64,
    /// Scheduled but never sent: the run's time was up while the in-flight limit was full
    /// (the node is saturated; these count as failures of the offered load).
    pub not_sent: u64,
    pub settled: u64,
    /// Settled, but grantors paid less than the self-pay part (cash paid the rest).
    pub settled_short: u64,
    /// Business refusals (ClientReply::Error).
    pub refused: u64,
    /// Transport failures (unavailable, deadline).
    pub failed: u64,
    pub elapsed_s: f64,
    pub settled_per_s: f64,
    /// Settled with the grantors paying the whole self-pay part (no cash fallback).
    pub aided_per_s: f64,
    pub latency: LatencySummary,
    /// The same, second by second of the schedule (settled answers only).
    #[serde(default)]
    pub latency_by_second: Vec<SecondSummary>,
    /// Longest lag of the scheduler behind its schedule (the client itself saturating).
    pub schedule_lag_max_ms: f64,
    pub client_cpu_s: f64,
    pub first_error: Option<String>,
    /// Why the first short settlement was short (the receipt's `not_paying`).
    pub first_short: Option<String>,
}

#[derive(Debug)]
enum Outcome {
    Settled { short: Option<String> },
    Refused(String),
    Failed(String),
}

fn settle_request(
    id: String,
    patient: PersonId,
    province: Province,
    self_pay_fen: u64,
) -> Result<SettleRequest, BenchError> {
    let invalid = |e: &dyn std::fmt::Display| BenchError::step("settle request", e.to_string());
    let self_pay = Money::from_fen(self_pay_fen).map_err(|e| invalid(&e))?;
    let fund_paid = Money::from_fen(self_pay_fen.saturating_mul(2)).map_err(|e| invalid(&e))?;
    Ok(SettleRequest {
        settlement: SettlementId::new(id).map_err(|e| invalid(&e))?,
        patient,
        total_fee: fund_paid.checked_add(self_pay).map_err(|e| invalid(&e))?,
        fund_paid,
        self_pay,
        institution: format!("H{}0001", province.code() / 10_000),
        treatment_region: Region::from(province),
        insured_region: Region::from(province),
    })
}

struct Prepared {
    patients: Vec<(PersonId, Province, usize)>,
    conns: Vec<Vec<BureauConn>>,
}

async fn prepare(spec: &ClientSpec) -> Result<Prepared, BenchError> {
    if spec.nodes.is_empty() || spec.patients.is_empty() {
        return Err(BenchError::Invalid("a client needs nodes and patients".into()));
    }
    let per_node = spec.connections_per_node.clamp(1, CONNECTIONS_PER_NODE_MAX);
    let ca = exchange_pki::PkiLayout::ca_paths(&spec.certs_dir);
    let mut conns = Vec::new();
    let mut provinces = Vec::new();
    for node in &spec.nodes {
        let province = Province::from_code(node.province).map_err(|e| BenchError::step("province", e))?;
        let files = exchange_pki::PkiLayout::paths_of(&spec.certs_dir, exchange_pki::PeerIdentity::Bureau(province));
        let mut list = Vec::new();
        for _ in 0..per_node {
            let mut conn = BureauConn::connect_to(&node.addr, province, &files.cert, &files.key, &ca.cert).await?;
            conn.wait_ready(Duration::from_secs(20))
                .await
                .map_err(|status| BenchError::step("connecting to a node", status.message()))?;
            list.push(conn);
        }
        conns.push(list);
        provinces.push(province);
    }
    let mut patients = Vec::new();
    for patient in &spec.patients {
        let person = PersonId::parse(&patient.person).map_err(|e| BenchError::step("patient id", e))?;
        let index = provinces
            .iter()
            .position(|p| p.code() == patient.province)
            .ok_or_else(|| BenchError::Invalid(format!("no node for province {}", patient.province)))?;
        let province = provinces
            .get(index)
            .copied()
            .ok_or_else(|| BenchError::Invalid("node".into()))?;
        patients.push((person, province, index));
    }
    Ok(Prepared { patients, conns })
}

/// Runs the load described by `spec` against already-prepared connections.
async fn drive(spec: &ClientSpec, prepared: Prepared) -> Result<ClientReport, BenchError> {
    if !(spec.rate_per_s > 0.0 && spec.rate_per_s.is_finite()) {
        return Err(BenchError::Invalid("rate must be positive".into()));
    }
    let warmup_s = spec.warmup_ms as f64 / 1_000.0;
    let planned = (spec.rate_per_s * spec.duration_ms.saturating_add(spec.warmup_ms) as f64 / 1_000.0).ceil();
    let scheduled_total = if planned >= SCHEDULED_MAX as f64 {
        SCHEDULED_MAX
    } else {
        planned as u64
    };
    let in_flight = Arc::new(Semaphore::new(spec.in_flight_max.clamp(1, 1_000_000)));
    let (sender, mut receiver) = mpsc::unbounded_channel::<(u32, u64, Outcome)>();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    // Ids draw from their own stream, so `--random-ids` does not change the schedule.
    let mut id_rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x1d5_1d5);
    let interval_s = 1.0 / spec.rate_per_s;
    let cpu_now = || {
        crate::sys::proc_sample(std::process::id())
            .map(|s| s.cpu_s)
            .unwrap_or(0.0)
    };
    let mut cpu_before = cpu_now();
    let started = Instant::now();
    // Where the measured part begins: requests scheduled before it are sent all the same
    // (the load is continuous) but their outcomes are not counted.
    let measured_from = started + Duration::from_millis(spec.warmup_ms);
    let mut warm = spec.warmup_ms == 0;
    let mut offset_s = 0.0f64;
    let mut lag_max = Duration::ZERO;
    let send_until = measured_from + Duration::from_millis(spec.duration_ms);
    let mut sent = 0u64;
    let mut scheduled_warm = 0u64;
    let patients = Arc::new(prepared.patients);
    let conns = Arc::new(prepared.conns);
    for index in 0..scheduled_total {
        let gap = if spec.poisson {
            // Inverse transform of an exponential gap; 1-u is in (0, 1].
            let u: f64 = rng.random();
            -(1.0 - u).ln() * interval_s
        } else {
            interval_s
        };
        offset_s += gap;
        let scheduled = started + Duration::from_secs_f64(offset_s);
        tokio::time::sleep_until(scheduled.into()).await;
        let measured = offset_s >= warmup_s;
        if measured && !warm {
            warm = true;
            cpu_before = cpu_now();
            let mut stdout = tokio::io::stdout();
            stdout.write_all(format!("{WARM_LINE}\n").as_bytes()).await?;
            stdout.flush().await?;
        }
        if !measured {
            scheduled_warm = scheduled_warm.saturating_add(1);
        }
        // Open loop with a bounded run: past the planned end, nothing more is sent.
        let waited = tokio::time::timeout_at(send_until.into(), Arc::clone(&in_flight).acquire_owned()).await;
        let permit = match waited {
            Ok(permit) => permit.map_err(|e| BenchError::step("in-flight limit", e))?,
            Err(_) => break,
        };
        if measured {
            sent = sent.saturating_add(1);
            lag_max = lag_max.max(Instant::now().saturating_duration_since(scheduled));
        }
        let patient_count = patients.len().max(1);
        let pick = usize::try_from(index).unwrap_or(0) % patient_count;
        let Some(&(person, province, node_index)) = patients.get(pick) else {
            continue;
        };
        let conn_list = conns.get(node_index).cloned().unwrap_or_default();
        let Some(mut conn) = conn_list
            .get(usize::try_from(index).unwrap_or(0) % conn_list.len().max(1))
            .cloned()
        else {
            continue;
        };
        let request = settle_request(
            settlement_id(&spec.id_prefix, index, spec.random_ids, &mut id_rng),
            person,
            province,
            spec.self_pay_fen,
        )?;
        let sender = sender.clone();
        let self_pay_fen = spec.self_pay_fen;
        let second = (offset_s - warmup_s).max(0.0) as u32;
        tokio::spawn(async move {
            let outcome = match conn.call(ClientRequest::Settle(request)).await {
                Ok(ClientReply::Settled(receipt)) => {
                    let aid: u64 = receipt.mutual_aid.iter().map(|p| p.amount.fen()).sum();
                    let paid = aid.saturating_add(receipt.own_account_paid.fen());
                    let why = || {
                        let reasons: Vec<String> =
                            receipt.not_paying.iter().map(|n| format!("{:?}", n.reason)).collect();
                        format!(
                            "paid {paid} of {self_pay_fen} fen; not paying: [{}]",
                            reasons.join(", ")
                        )
                    };
                    Outcome::Settled {
                        short: (paid < self_pay_fen).then(why),
                    }
                }
                Ok(ClientReply::Error(error)) => Outcome::Refused(format!("{}: {}", error.reason, error.message)),
                Ok(other) => Outcome::Refused(format!("unexpected reply {other:?}")),
                Err(status) => Outcome::Failed(format!("{:?}: {}", status.code(), status.message())),
            };
            let micros =
                u64::try_from(Instant::now().saturating_duration_since(scheduled).as_micros()).unwrap_or(u64::MAX);
            drop(permit);
            if measured {
                let _receiver_gone = sender.send((second, micros, outcome));
            }
        });
    }
    drop(sender);
    // The loop stops early only once the measured part is over (the in-flight limit stayed
    // full past its end): what it did not reach counts as scheduled and not sent.
    let scheduled_measured = scheduled_total.saturating_sub(scheduled_warm);
    let mut report = ClientReport {
        scheduled: scheduled_measured,
        not_sent: scheduled_measured.saturating_sub(sent),
        ..ClientReport::default()
    };
    let mut latencies = Vec::with_capacity(usize::try_from(scheduled_total).unwrap_or(0));
    let mut timed = Vec::with_capacity(usize::try_from(scheduled_total).unwrap_or(0));
    while let Some((second, micros, outcome)) = receiver.recv().await {
        match outcome {
            Outcome::Settled { short } => {
                report.settled = report.settled.saturating_add(1);
                if let Some(why) = short {
                    report.settled_short = report.settled_short.saturating_add(1);
                    report.first_short.get_or_insert(why);
                }
                latencies.push(micros);
                timed.push((second, micros));
            }
            Outcome::Refused(error) => {
                report.refused = report.refused.saturating_add(1);
                report.first_error.get_or_insert(error);
            }
            Outcome::Failed(error) => {
                report.failed = report.failed.saturating_add(1);
                report.first_error.get_or_insert(error);
            }
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measured_from).as_secs_f64();
    report.elapsed_s = elapsed;
    report.settled_per_s = if elapsed > 0.0 {
        report.settled as f64 / elapsed
    } else {
        0.0
    };
    let aided = report.settled.saturating_sub(report.settled_short);
    report.aided_per_s = if elapsed > 0.0 { aided as f64 / elapsed } else { 0.0 };
    report.latency = summarize(latencies);
    report.latency_by_second = by_second(&timed);
    report.schedule_lag_max_ms = lag_max.as_secs_f64() * 1_000.0;
    report.client_cpu_s = cpu_now() - cpu_before;
    Ok(report)
}

async fn read_line_with_timeout<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Option<String> {
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_millis(DRIVER_WAIT_MS_MAX), reader.read_line(&mut line)).await {
        Ok(Ok(read)) if read > 0 => Some(line),
        _ => None,
    }
}

/// The client process: reads the spec, connects, prints `{"ready":true}`, waits for a line on
/// stdin, runs, prints its report as one JSON line, then keeps its connections open until
/// stdin closes (so the driver can read the connections' byte counters).
pub async fn client_main(spec_path: &std::path::Path) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(spec_path)?;
    let spec: ClientSpec = serde_json::from_str(&text)?;
    let prepared = prepare(&spec).await?;
    let keep_alive: Vec<Vec<BureauConn>> = prepared.conns.clone();
    let mut stdout = tokio::io::stdout();
    stdout.write_all(b"{\"ready\":true}\n").await?;
    stdout.flush().await?;
    let mut stdin = BufReader::new(tokio::io::stdin());
    if read_line_with_timeout(&mut stdin).await.is_none() {
        return Err(BenchError::step("waiting for the driver", "no go signal"));
    }
    let report = drive(&spec, prepared).await?;
    let mut line = serde_json::to_string(&report)?;
    line.push('\n');
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await?;
    let _closed = read_line_with_timeout(&mut stdin).await;
    drop(keep_alive);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_ids_sort_in_schedule_order_and_random_ones_do_not_repeat() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let serial: Vec<String> = [9u64, 10, 11, 100, 1_000_000]
            .iter()
            .map(|i| settlement_id("B", *i, false, &mut rng))
            .collect();
        let mut sorted = serial.clone();
        sorted.sort();
        assert_eq!(serial, sorted, "fixed width: key order is schedule order");
        let random: std::collections::BTreeSet<String> =
            (0..1_000).map(|i| settlement_id("B", i, true, &mut rng)).collect();
        assert_eq!(random.len(), 1_000);
        assert!(random.iter().all(|id| id.len() == "B-".len() + 16));
    }
}
