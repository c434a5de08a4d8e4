//! The operator audit log through the real binary against real node processes: every bureau
//! call is recorded in order with the caller's certificate identity, the action and its
//! outcome (an intent before an action, its outcome after); a call with another province's
//! bureau certificate is recorded as refused; `ctl audit verify` accepts the chain; after the
//! node stops, `exchange audit-verify` checks the store offline, and a record changed on disk
//! is found at its seq by both verifiers (exit code 1).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use exchange_core::Scheme;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_node::client::BureauConn;
use exchange_node::cluster::{ClusterOptions, LocalCluster};
use exchange_pki::{PeerIdentity, PkiLayout};
use serde_json::Value;

/// Runs `exchange ARGS...`; returns the exit code, the JSON printed and stderr.
fn run(args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(exe()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        stderr,
    )
}

/// Runs `exchange ctl --config CONFIG --json ARGS...`.
fn ctl(config: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["ctl", "--config", config.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    run(&all)
}

/// Every record of the node's audit log, page by page.
fn audit_list(config: &Path) -> Vec<Value> {
    let mut records = Vec::new();
    let mut after = 0u64;
    loop {
        let (code, page, stderr) = ctl(
            config,
            &["audit", "list", "--after", &after.to_string(), "--limit", "5"],
        );
        assert_eq!(code, 0, "{stderr}");
        records.extend(page["records"].as_array().unwrap().iter().cloned());
        after = page["next_after_seq"].as_u64().unwrap();
        if after == 0 {
            return records;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bureau_call_is_audited_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::launch(
        &exe(),
        dir.path(),
        &[p(BEIJING), p(CHONGQING)],
        &ClusterOptions::default(),
    )
    .await
    .unwrap();
    let config = cluster.nodes[&p(CHONGQING)].config_path.clone();
    let data_dir = dir.path().join("data").join(p(CHONGQING).to_string());
    let mut conn = cluster.conn(p(CHONGQING)).await.unwrap();
    let grandmother = adult(CHONGQING, 1);

    // An account opened, the same again through the CLI (refused), a settlement, a read.
    open(&mut conn, grandmother, yuan(500)).await;
    let person = grandmother.to_string();
    let (code, _, stderr) = ctl(
        &config,
        &[
            "account", "open", "--person", &person, "--name", "Again", "--scheme", "employee",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("account_exists"), "{stderr}");
    let r = receipt(settle(&mut conn, "S-AUDIT-1", grandmother, yuan(120)).await);
    assert_eq!(r.own_account_paid, yuan(120));
    assert_eq!(account(&mut conn, &grandmother).await.balance, yuan(380));
    // Refused by the core's checks: an intent and its refusal.
    let reply = conn
        .call(ClientRequest::OpenAccount {
            person: adult(CHONGQING, 2),
            name: String::new(),
            scheme: Scheme::Resident,
            balance: yuan(5),
        })
        .await
        .unwrap();
    assert!(matches!(reply, ClientReply::Error(_)), "{reply:?}");

    // Beijing's bureau certificate may not operate Chongqing's node: refused, and recorded.
    let beijing_bureau = PkiLayout::paths_of(&cluster.certs_dir, PeerIdentity::Bureau(p(BEIJING)));
    let ca = PkiLayout::ca_paths(&cluster.certs_dir);
    let mut intruder = BureauConn::connect_to(
        &cluster.nodes[&p(CHONGQING)].addr.to_string(),
        p(CHONGQING),
        &beijing_bureau.cert,
        &beijing_bureau.key,
        &ca.cert,
    )
    .await
    .unwrap();
    let denied = intruder.account(&grandmother).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // The log, in order. Skip the start-up probes (reads of an unknown person).
    let records = audit_list(&config);
    assert_eq!(records[0]["prev_hash"], "0".repeat(64));
    for (seq, record) in records.iter().enumerate() {
        assert_eq!(record["seq"], seq as u64 + 1, "{record}");
        if seq > 0 {
            assert_eq!(record["prev_hash"], records[seq - 1]["hash"], "{record}");
        }
    }
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| !(r["action"] == "get_account" && r["outcome"].as_str().unwrap().starts_with("not_found")))
        .collect();
    let seen: Vec<(&str, &str)> = calls
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    let expected_prefix = [
        ("open_account", "intent"),
        ("open_account", "ok"),
        ("open_account", "intent"),
        ("open_account", "refused: account_exists"),
        ("settle", "intent"),
        ("settle", "ok"),
        ("get_account", "ok"),
        ("open_account", "intent"),
    ];
    assert_eq!(&seen[..expected_prefix.len()], &expected_prefix, "{seen:#?}");
    assert_eq!(seen[8], ("open_account", "refused: bad_name"));
    assert_eq!(seen[9].0, "get_account");
    assert!(seen[9].1.starts_with("permission_denied: "), "{seen:#?}");
    for record in &calls[..9] {
        let actor = record["actor"].as_str().unwrap();
        assert!(actor.starts_with("bureau.500000.exchange serial="), "{record}");
    }
    assert!(
        calls[9]["actor"]
            .as_str()
            .unwrap()
            .starts_with("bureau.110000.exchange serial=")
    );
    // Outcomes name their intents; the request is summarised, the settlement's reply too.
    for pair in [(0, 1), (2, 3), (4, 5), (7, 8)] {
        assert_eq!(calls[pair.1]["intent_seq"], calls[pair.0]["seq"]);
    }
    assert!(calls[0]["detail"].as_str().unwrap().contains(&person));
    assert!(calls[4]["detail"].as_str().unwrap().contains("S-AUDIT-1"));
    assert!(
        calls[5]["detail"]
            .as_str()
            .unwrap()
            .contains("own_account_paid_fen: 12000")
    );
    assert!(calls[0]["wall_ms"].as_i64().unwrap() > 1_600_000_000_000);

    // The chain verifies; the listing reads were recorded too.
    let (code, verification, stderr) = ctl(&config, &["audit", "verify"]);
    assert_eq!(code, 0, "{verification} {stderr}");
    assert_eq!(verification["ok"], true);
    assert!(verification["broken_at_seq"].is_null());
    assert_eq!(verification["intents_without_outcome"], 0);
    let listed = records.len() as u64;
    assert!(verification["records"].as_u64().unwrap() > listed, "{verification}");
    assert_eq!(verification["head_hash"].as_str().unwrap().len(), 64);
    let (_, text, _) = ctl(
        &config,
        &["audit", "list", "--after", &listed.to_string(), "--limit", "1"],
    );
    assert_eq!(text["records"][0]["action"], "audit_log");

    // Offline, after a graceful stop: the same chain, plus what came after.
    cluster.stop_all();
    let data = data_dir.to_str().unwrap();
    let (code, offline, stderr) = run(&["audit-verify", "--data-dir", data, "--json"]);
    assert_eq!(code, 0, "{offline} {stderr}");
    assert_eq!(offline["ok"], true);
    assert!(offline["records"].as_u64().unwrap() > verification["records"].as_u64().unwrap());

    // Change the settlement's intent on disk (same length, so the record still decodes).
    let settle_intent = calls[4]["seq"].as_u64().unwrap();
    {
        let db = sled::open(&data_dir).unwrap();
        let tree = db.open_tree("audit").unwrap();
        // Records are stored in pages under the seq of their first record: the intent's page
        // starts at or before it, and the intent is the first record to name the settlement.
        let (key, value) = tree.range(..=settle_intent.to_be_bytes()).next_back().unwrap().unwrap();
        let value = value.to_vec();
        let (from, to) = (b"S-AUDIT-1".as_slice(), b"S-AUDIT-2".as_slice());
        let at = value.windows(from.len()).position(|w| w == from).unwrap();
        let mut changed = value.clone();
        changed[at..at + to.len()].copy_from_slice(to);
        tree.insert(key, changed).unwrap();
        db.flush().unwrap();
    }
    let (code, offline, stderr) = run(&["audit-verify", "--data-dir", data, "--json"]);
    assert_eq!(code, 1, "{offline} {stderr}");
    assert_eq!(offline["ok"], false);
    assert_eq!(offline["broken_at_seq"], settle_intent);
    assert!(offline["reason"].as_str().unwrap().contains("hash"), "{offline}");
    assert_eq!(offline["records"], settle_intent - 1);

    // The node still starts (its newest record is intact) and its own verifier agrees.
    cluster.start(p(CHONGQING)).unwrap();
    cluster.wait_ready(p(CHONGQING)).await.unwrap();
    let (code, online, stderr) = ctl(&config, &["audit", "verify"]);
    assert_eq!(code, 1, "{online} {stderr}");
    assert_eq!(online["broken_at_seq"], settle_intent);
    assert!(stderr.contains(&format!("broken at {settle_intent}")), "{stderr}");
}
