//! Wallet transfers through the real binary against real node processes: a Beijing grantor
//! pushes money to his mother in Chongqing (`exchange ctl transfer`), balances end right on
//! both nodes, the two nodes' journals reconcile and Beijing owes Chongqing the amount; a
//! duplicate is applied once and answered with the same receipt; a transfer over the cap, one
//! the receiving side refuses (a resident relative without a personal account) and bad input
//! change nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use exchange_core::message::ClientReply;
use exchange_core::records::TransferStatus;
use exchange_core::{Account, BindingId, Limits, Money, PersonId, Province, Scheme, TransferId};
use exchange_node::client::BureauConn;
use exchange_node::cluster::{ClusterOptions, LocalCluster};
use serde_json::{Value, json};

/// Short protocol timings, and no quiet hours: the national 22:00-06:00 rule would make this
/// test depend on the hour it runs at (the core's tests check the rule at fixed times).
const CONFIG: &str = "\n[protocol]\nvote_timeout_ms = 1000\nhold_timeout_ms = 4000\ncommit_margin_ms = 1500\nquery_retry_ms = 500\nresend_initial_ms = 200\nresend_max_ms = 1000\n\n[policy.wallet]\nquiet_from_minute = 0\nquiet_until_minute = 0\n";

fn transfer_args<'a>(id: &'a str, grantor: &'a str, binding: &'a str, amount: &'a str) -> Vec<&'a str> {
    vec![
        "transfer",
        "--id",
        id,
        "--grantor",
        grantor,
        "--binding",
        binding,
        "--amount",
        amount,
    ]
}

/// Waits until `person`'s account on `conn`'s node has `balance_fen` and nothing held.
async fn settles_at(conn: &mut BureauConn, person: &PersonId, balance_fen: u64) -> Account {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let account = account(conn, person).await;
        if account.balance.fen() == balance_fen && account.held.is_zero() {
            return account;
        }
        assert!(
            Instant::now() < deadline,
            "{person}: balance {} held {}, expected balance {balance_fen} and nothing held",
            account.balance.fen(),
            account.held.fen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beijing_grantor_transfers_to_a_chongqing_relative_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = ClusterOptions {
        extra_config: CONFIG.into(),
        ..ClusterOptions::default()
    };
    let (beijing, chongqing) = (p(BEIJING), p(CHONGQING));
    let mut cluster = LocalCluster::launch(&exe(), dir.path(), &[beijing, chongqing], &options)
        .await
        .unwrap();
    let mut bj = cluster.conn(beijing).await.unwrap();
    let mut cq = cluster.conn(chongqing).await.unwrap();
    let config = |province: Province| cluster.nodes[&province].config_path.clone();
    let (bj_config, _cq_config) = (config(beijing), config(chongqing));

    let son = adult(BEIJING, 1);
    let mother = adult(CHONGQING, 1);
    let aunt = adult(CHONGQING, 2);
    open(&mut bj, son, yuan(1000)).await;
    open(&mut cq, mother, yuan(50)).await;
    let reply = cq
        .call(exchange_core::message::ClientRequest::OpenAccount {
            person: aunt,
            name: "Resident".into(),
            scheme: Scheme::Resident,
            balance: Money::ZERO,
        })
        .await
        .unwrap();
    assert!(matches!(reply, ClientReply::Account(_)), "{reply:?}");
    let binding = bind(&mut bj, son, mother, chongqing, Limits::default()).await;
    let aunt_binding = bind(&mut bj, son, aunt, chongqing, Limits::default()).await;
    let (son_s, binding_s, aunt_binding_s) = (son.to_string(), binding.to_string(), aunt_binding.to_string());

    // The transfer: committed, and the receipt names the amount in fen.
    let (code, first, stderr) = ctl(&bj_config, &transfer_args("T-1", &son_s, &binding_s, "500.00"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(first["transfer_id"], "T-1");
    assert_eq!(first["status"], "committed");
    assert_eq!(first["amount_fen"], 50_000);
    assert_eq!(first["reason"], Value::Null);
    assert_eq!(first["grantee"], mother.to_string());
    assert_eq!(first["grantee_province"], CHONGQING);
    assert_eq!(first["grantor_available_after_fen"], 50_000);
    settles_at(&mut bj, &son, 50_000).await;
    settles_at(&mut cq, &mother, 55_000).await;

    // A duplicate is answered with the same receipt and applied once.
    let (code, again, stderr) = ctl(&bj_config, &transfer_args("T-1", &son_s, &binding_s, "500.00"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(again, first);
    let reply = bj
        .transfer(TransferId::new("T-1").unwrap(), son, binding, yuan(500))
        .await
        .unwrap();
    let ClientReply::Transferred(receipt) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(receipt.status, TransferStatus::Committed);
    // The same id for another amount is an error, and changes nothing.
    let (code, other, stderr) = ctl(&bj_config, &transfer_args("T-1", &son_s, &binding_s, "600.00"));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        other,
        json!({ "transfer_id": "T-1", "status": "rejected", "amount_fen": 60_000, "reason": "transfer_id_reused", "message": other["message"] })
    );

    // Over the 2,000 yuan cap: refused by the grantor's node, exit code 1, nothing moves.
    let (code, refused, stderr) = ctl(&bj_config, &transfer_args("T-2", &son_s, &binding_s, "2000.01"));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(refused["status"], "refused");
    assert_eq!(refused["reason"], "transfer_amount_limit");
    assert_eq!(refused["amount_fen"], 200_001);
    assert!(stderr.contains("transfer_amount_limit"), "{stderr}");

    // The receiving side refuses (a resident relative has no personal account): the hold is
    // released and the money returns.
    let (code, returned, stderr) = ctl(&bj_config, &transfer_args("T-3", &son_s, &aunt_binding_s, "100.00"));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(returned["status"], "refused");
    assert_eq!(returned["reason"], "no_personal_account");

    // Bad input: refused before reaching the core, or by it with a reason; nothing changes.
    let unknown = BindingId::new(beijing, 999).to_string();
    for (args, reason) in [
        (transfer_args("T-4", &son_s, &binding_s, "1.001"), None),
        (transfer_args("T-4", &son_s, &binding_s, "-5"), None),
        (transfer_args("T-4", &son_s, &binding_s, "0"), Some("zero_amount")),
        (transfer_args("T-4", &son_s, &unknown, "1.00"), Some("unknown_binding")),
        (transfer_args("T 4", &son_s, &binding_s, "1.00"), None),
    ] {
        let (code, value, stderr) = ctl(&bj_config, &args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        if let Some(reason) = reason {
            assert_eq!(value["reason"], reason, "{args:?}");
        }
    }

    let son_after = settles_at(&mut bj, &son, 50_000).await;
    assert!(!son_after.frozen);
    settles_at(&mut cq, &mother, 55_000).await;
    assert!(account(&mut cq, &aunt).await.balance.is_zero());

    // Clearing: Beijing owes Chongqing the transfer, and the journals reconcile leg by leg.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (from_ms, to_ms) = (now - 3_600_000, now + 3_600_000);
    let report = bj.clearing(from_ms, to_ms).await.unwrap();
    let owed: Vec<(u32, i64)> = report
        .positions
        .iter()
        .map(|p| (p.peer, p.position.as_ref().unwrap().net_owed_to_peer_fen))
        .collect();
    assert_eq!(owed, vec![(CHONGQING, 50_000)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = bj.reconcile(chongqing, from_ms, to_ms).await.unwrap();
        if report.mismatch_count == 0 && report.legs_matched == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{report:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The relative's history shows the transfer received, once.
    let page = cq.records(&mother, 0, 50).await.unwrap();
    let received: Vec<_> = page
        .records
        .iter()
        .filter_map(|r| r.entry.as_ref())
        .filter(|e| e.kind == exchange_proto::pb::JournalKind::TransferReceived as i32)
        .map(|e| (e.amount_fen, e.reference.clone()))
        .collect();
    assert_eq!(received, vec![(50_000, Some("T-1".to_string()))]);
    cluster.stop_all();
}
