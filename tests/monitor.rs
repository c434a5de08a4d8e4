//! The national monitor against real processes: three province nodes and `exchange monitor`.
//! Settlements and refunds are driven through the nodes; the monitor's `/api/flows` and
//! `/api/clearing` must equal what the nodes' journals say (read here through the Monitor
//! feed with the monitor certificate), also after the monitor is killed -9 mid-run and
//! restarted, and after a node is killed -9 and restarted: nothing counted twice or missed.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::records::{JournalKind, RefundRequest};
use exchange_core::{Limits, Money, RefundId, SettlementId};
use exchange_node::cluster::{ClusterOptions, LocalCluster, free_port};
use exchange_pki::{PeerIdentity, PkiLayout, client_tls_config, load_ca, load_identity};
use exchange_proto::{FeedItem, feed_event_from_wire, pb};
use serde_json::Value;
use tonic::transport::Endpoint;

/// (debit_fen, refund_fen, debited legs) per (payer, patient's province).
type Flows = BTreeMap<(u32, u32), (u64, u64, u64)>;
/// (payer net, coordinator net) per (payer, coordinator).
type Clearing = BTreeMap<(u32, u32), (i64, i64)>;

async fn cluster_with_metrics(dir: &Path) -> LocalCluster {
    let options = ClusterOptions {
        extra_config: "\n[protocol]\nvote_timeout_ms = 1000\nhold_timeout_ms = 4000\ncommit_margin_ms = 1500\nquery_retry_ms = 500\nresend_initial_ms = 200\nresend_max_ms = 1000\n".into(),
        metrics: true,
        ..ClusterOptions::default()
    };
    LocalCluster::launch(&exe(), dir, &[p(BEIJING), p(CHONGQING), p(SICHUAN)], &options)
        .await
        .unwrap()
}

/// What the journals say, read from every node's feed with the monitor certificate.
async fn journal_truth(cluster: &LocalCluster) -> (Flows, Clearing) {
    exchange_pki::install_crypto_provider();
    let monitor = PkiLayout::paths_of(&cluster.certs_dir, PeerIdentity::Monitor);
    let ca = load_ca(&PkiLayout::ca_paths(&cluster.certs_dir).cert).unwrap();
    let identity = load_identity(&monitor.cert, &monitor.key).unwrap();
    let mut flows = Flows::new();
    let mut clearing = Clearing::new();
    for (province, node) in &cluster.nodes {
        let tls = client_tls_config(identity.clone(), ca.clone(), *province);
        let channel = Endpoint::from_shared(format!("https://{}", node.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = exchange_proto::service::monitor_client(channel);
        let last = client
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .last_journal_seq;
        let mut stream = client
            .feed(pb::FeedRequest { after_seq: 0 })
            .await
            .unwrap()
            .into_inner();
        let mut seen = 0;
        while seen < last {
            let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let (seq, item) = feed_event_from_wire(event).unwrap();
            let FeedItem::Journal(entry) = item else { continue };
            seen = seq;
            let me = province.code();
            let Some(other) = entry.counterparty.map(|p| p.code()) else {
                continue;
            };
            if other == me {
                continue;
            }
            let fen = entry.amount.fen();
            match entry.kind {
                JournalKind::Debit => {
                    let cell = flows.entry((me, other)).or_default();
                    cell.0 += fen;
                    cell.2 += 1;
                    clearing.entry((me, other)).or_default().0 += fen as i64;
                }
                JournalKind::RefundCredit => {
                    flows.entry((me, other)).or_default().1 += fen;
                    clearing.entry((me, other)).or_default().0 -= fen as i64;
                }
                JournalKind::MutualAidReceived => clearing.entry((other, me)).or_default().1 += fen as i64,
                JournalKind::MutualAidRefunded => clearing.entry((other, me)).or_default().1 -= fen as i64,
                // Wallet transfers clear like deductions: the grantor's province pays.
                JournalKind::TransferSent => {
                    let cell = flows.entry((me, other)).or_default();
                    cell.0 += fen;
                    cell.2 += 1;
                    clearing.entry((me, other)).or_default().0 += fen as i64;
                }
                JournalKind::TransferReceived => clearing.entry((other, me)).or_default().1 += fen as i64,
                JournalKind::Credit => {}
            }
        }
    }
    (flows, clearing)
}

async fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let (code, body) = tokio::time::timeout(Duration::from_secs(3), exchange_monitor::http_get(addr, path))
        .await
        .ok()?
        .ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

fn api_flows(flows: &Value) -> Flows {
    flows["total"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cell| {
            let n = |key: &str| cell[key].as_u64().unwrap();
            assert_eq!(n("amount_fen"), n("debit_fen") - n("refund_fen"));
            (
                (n("from") as u32, n("to") as u32),
                (n("debit_fen"), n("refund_fen"), n("count")),
            )
        })
        .collect()
}

fn api_clearing(clearing: &Value) -> Clearing {
    clearing["total"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                (
                    pair["payer"].as_u64().unwrap() as u32,
                    pair["coordinator"].as_u64().unwrap() as u32,
                ),
                (
                    pair["payer_net_fen"].as_i64().unwrap(),
                    pair["coordinator_net_fen"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

/// The period buckets add up to the all-time matrix.
fn check_periods(flows: &Value, total: &Flows) {
    for granularity in ["hour", "day", "month"] {
        let mut sum = Flows::new();
        for bucket in flows["periods"][granularity].as_array().unwrap() {
            for cell in bucket["flows"].as_array().unwrap() {
                let n = |key: &str| cell[key].as_u64().unwrap();
                let entry = sum.entry((n("from") as u32, n("to") as u32)).or_default();
                entry.0 += n("debit_fen");
                entry.1 += n("refund_fen");
                entry.2 += n("count");
            }
        }
        assert_eq!(&sum, total, "{granularity} buckets add up to the total");
    }
}

/// Waits until the monitor's flows and clearing equal the journals' and both sides reconcile.
async fn wait_until_monitor_matches_journals(cluster: &LocalCluster, addr: SocketAddr) -> Flows {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (flows, clearing) = journal_truth(cluster).await;
        let api = get_json(addr, "/api/flows").await;
        let api_clear = get_json(addr, "/api/clearing").await;
        if let (Some(api), Some(api_clear)) = (&api, &api_clear) {
            let reconciled = clearing.values().all(|(a, b)| a == b);
            if api_flows(api) == flows && api_clearing(api_clear) == clearing && reconciled {
                assert_eq!(api_clear["all_reconciled"], Value::Bool(true));
                check_periods(api, &flows);
                return flows;
            }
        }
        assert!(
            Instant::now() < deadline,
            "monitor and journals differ:\njournals {flows:?} {clearing:?}\nmonitor {:?} {:?}",
            api.as_ref().map(api_flows),
            api_clear.as_ref().map(api_clearing)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn start_monitor(config_path: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(exe())
        .arg("monitor")
        .arg("--config")
        .arg(config_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn wait_http(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_json(addr, "/api/health").await.is_none() {
        assert!(Instant::now() < deadline, "the monitor did not answer on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn node_state(addr: SocketAddr, province: u32) -> Option<String> {
    let health = get_json(addr, "/api/health").await?;
    health["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["province"].as_u64() == Some(u64::from(province)))
        .and_then(|n| n["state"].as_str().map(str::to_string))
}

async fn refund(conn: &mut exchange_node::client::BureauConn, refund: &str, settlement: &str, amount: Option<Money>) {
    let reply = conn
        .call(ClientRequest::Refund(RefundRequest {
            refund: RefundId::new(refund).unwrap(),
            settlement: SettlementId::new(settlement).unwrap(),
            amount,
        }))
        .await
        .unwrap();
    assert!(matches!(reply, ClientReply::Refunded(_)), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_flows_equal_the_journals_across_monitor_and_node_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster_with_metrics(dir.path()).await;
    let mut c = conns(&cluster).await;
    let mut families = Vec::new();
    for serial in 40..43 {
        // The son pays at most 100 yuan a bill, so the daughter in Sichuan pays too.
        let son_limits = Limits {
            per_settlement: Some(yuan(100)),
            monthly: None,
        };
        families.push(family(&mut c, serial, son_limits).await);
    }
    let addr = free_port().unwrap();
    let config = exchange_monitor::config_for_cluster(&cluster, &dir.path().join("monitor-data"), addr);
    let config_path = dir.path().join("monitor.toml");
    std::fs::write(&config_path, config.to_toml()).unwrap();
    let log = dir.path().join("monitor.log");
    let mut monitor = start_monitor(&config_path, &log);
    wait_http(addr).await;

    // Phase 1: settlements and a full refund while the monitor watches.
    for i in 0..6 {
        receipt(
            settle(
                &mut c.chongqing,
                &format!("S-M{i}"),
                families[i % 3].grandmother,
                yuan(120),
            )
            .await,
        );
    }
    refund(&mut c.chongqing, "R-M0", "S-M0", None).await;
    let flows = wait_until_monitor_matches_journals(&cluster, addr).await;
    assert!(flows.contains_key(&(BEIJING, CHONGQING)) && flows.contains_key(&(SICHUAN, CHONGQING)));
    assert!(flows[&(BEIJING, CHONGQING)].1 > 0, "the refund shows");

    // Phase 2: kill -9 the monitor while settlements flow; more settle while it is away.
    let mut conn = c.chongqing.clone();
    let patients: Vec<_> = families.iter().map(|f| f.grandmother).collect();
    let traffic = tokio::spawn(async move {
        for i in 6..16 {
            receipt(settle(&mut conn, &format!("S-M{i}"), patients[i % 3], yuan(90)).await);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    monitor.kill().unwrap();
    monitor.wait().unwrap();
    traffic.await.unwrap();

    // Phase 3: kill -9 Sichuan; restart the monitor while Sichuan is down; it shows down.
    cluster.kill9(p(SICHUAN)).unwrap();
    let mut monitor = start_monitor(&config_path, &log);
    wait_http(addr).await;
    receipt(settle(&mut c.chongqing, "S-M16", families[0].grandmother, yuan(300)).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alerts = get_json(addr, "/api/alerts").await.unwrap_or_default();
        let down_alert = alerts["alerts"].as_array().is_some_and(|list| {
            list.iter()
                .any(|a| a["kind"] == "node_down" && a["subject"].as_str().is_some_and(|s| s.contains("510000")))
        });
        if node_state(addr, SICHUAN).await.as_deref() != Some("up") && down_alert {
            break;
        }
        assert!(Instant::now() < deadline, "Sichuan never showed down: {alerts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(node_state(addr, BEIJING).await.as_deref(), Some("up"));

    // Phase 4: Sichuan back; more settlements and a partial refund; everything matches again.
    cluster.start(p(SICHUAN)).unwrap();
    cluster.wait_ready(p(SICHUAN)).await.unwrap();
    c.sichuan = cluster.conn(p(SICHUAN)).await.unwrap();
    for i in 17..20 {
        receipt(
            settle(
                &mut c.chongqing,
                &format!("S-M{i}"),
                families[i % 3].grandmother,
                yuan(150),
            )
            .await,
        );
    }
    refund(&mut c.chongqing, "R-M7", "S-M7", Some(yuan(30))).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while node_state(addr, SICHUAN).await.as_deref() != Some("up") {
        assert!(Instant::now() < deadline, "Sichuan never came back up on the monitor");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let flows = wait_until_monitor_matches_journals(&cluster, addr).await;
    let legs: u64 = flows.values().map(|cell| cell.2).sum();
    assert!(legs >= 20, "the legs of every phase are counted: {flows:?}");

    // One more restart of the monitor with nothing new: the same figures, not doubled.
    let before = get_json(addr, "/api/flows").await.unwrap()["total"].clone();
    monitor.kill().unwrap();
    monitor.wait().unwrap();
    let mut monitor = start_monitor(&config_path, &log);
    wait_http(addr).await;
    wait_until_monitor_matches_journals(&cluster, addr).await;
    assert_eq!(get_json(addr, "/api/flows").await.unwrap()["total"], before);
    let health = get_json(addr, "/api/health").await.unwrap();
    assert!(health["nodes"].as_array().unwrap().len() == 3);
    let metrics = exchange_monitor::http_get(addr, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains("exchange_monitor_flow_fen{from=\"110000\",to=\"500000\"}"),
        "{metrics}"
    );

    // Phase 5: reasons. A son's card is reported lost in Beijing; his mother's next bill is
    // refused by his node (account_frozen) and re-planned onto the daughter. The monitor shows
    // the reason on the coordinator's side (grantor refusals, re-plans) and on Beijing's
    // (aborted legs), and cross-province latency; with no holds left, no oldest-hold age.
    let frozen = c
        .beijing
        .call(ClientRequest::Freeze {
            person: families[1].son,
            reason: "card reported lost".into(),
        })
        .await
        .unwrap();
    assert!(matches!(frozen, ClientReply::Account(_)), "{frozen:?}");
    let paid = receipt(settle(&mut c.chongqing, "S-M20", families[1].grandmother, yuan(120)).await);
    assert!(
        paid.not_paying
            .iter()
            .any(|n| n.grantor == families[1].son && n.reason == exchange_core::Refusal::AccountFrozen),
        "{paid:?}"
    );
    let count = |value: &Value, key: &str, reason: &str| value[key][reason].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let outcomes = loop {
        let outcomes = get_json(addr, "/api/outcomes").await.unwrap_or_default();
        if count(&outcomes, "grantor_refusals", "account_frozen") >= 1
            && count(&outcomes, "replan_reasons", "account_frozen") >= 1
            && count(&outcomes, "legs_aborted", "account_frozen") >= 1
        {
            break outcomes;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal's reason never showed: {outcomes}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let chongqing = outcomes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["province"] == CHONGQING)
        .unwrap();
    assert_eq!(count(chongqing, "grantor_refusals", "account_frozen"), 1, "{outcomes}");
    let overview = get_json(addr, "/api/overview").await.unwrap();
    assert_eq!(overview["outcomes"]["grantor_refusals"], outcomes["grantor_refusals"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = get_json(addr, "/api/health").await.unwrap();
        let cross = &health["latency_ms"]["cross_province"];
        let quiet = health["holds_in_flight"] == 0
            && health["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|node| node["oldest_hold_age_ms"].is_null());
        if quiet && cross["count"].as_u64().unwrap_or(0) >= 1 && cross["p99"].as_f64().is_some() {
            assert!(health["oldest_hold_age_ms"].is_null(), "{health}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cross-province latency or hold ages wrong: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alerts = get_json(addr, "/api/alerts").await.unwrap();
    assert!(
        !alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "holds_past_deadline"),
        "{alerts}"
    );
    monitor.kill().unwrap();
    monitor.wait().unwrap();
}
