//! A bureau's daily operations through the real binary (`exchange ctl --json`) against real
//! node processes, and above all their bad inputs: each refusal exits with code 2 (1 where the
//! guide says so), names its stable reason on stderr, and changes nothing (balances, holds,
//! freezes and bindings are re-read and compared).
//!
//! - the family's order and a binding's limits decide who pays what; cancel and reverse apply
//!   once; freeze and unfreeze stop and restore payment; settlements and credits with unknown
//!   people, the wrong scheme or province, parts above the total, 3 decimals or a negative
//!   amount are refused; every evidence and policy rule of a binding refuses with its reason;
//! - a province's policy (Sichuan's of `nodes/`: no unbinding within 90 days, at most 2
//!   grantors per grantee) and a restricted list of relations;
//! - a binding made while the grantee's node is down answers `pending`, is never used while
//!   pending, and becomes active on both nodes when that node returns; a deduction whose commit
//!   cannot reach the payer's node shows in `reconcile` as `missing_at_payer` (exit code 1) and
//!   reconciles once the link is back.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use exchange_core::binding::Binding;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::{Account, Limits, Money, PersonId, Region, Scheme};
use exchange_node::cluster::{ClusterOptions, LocalCluster};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The short protocol timings of `common::cluster()`, and a bind that answers `pending` after
/// one second instead of two.
const PROTOCOL: &str = "\n[protocol]\nvote_timeout_ms = 1000\nhold_timeout_ms = 4000\ncommit_margin_ms = 1500\nquery_retry_ms = 500\nresend_initial_ms = 200\nresend_max_ms = 1000\nbind_wait_ms = 1000\n";

/// Runs `exchange ctl --config CONFIG --json ARGS...` off the async workers; returns the exit
/// code, the JSON printed and stderr.
async fn ctl(config: &Path, args: &[impl AsRef<str>]) -> (i32, Value, String) {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::ctl(&config, &args)
    })
    .await
    .unwrap()
}

/// A command that succeeds; returns its JSON.
async fn ok(config: &Path, args: &[impl AsRef<str> + std::fmt::Debug]) -> Value {
    let (code, value, stderr) = ctl(config, args).await;
    assert_eq!(code, 0, "{args:?}: {value} {stderr}");
    value
}

/// A command the node refuses: exit code 2 and `(reason)` on stderr. Returns the JSON printed
/// (a settlement prints `{"status": "rejected", "reason": ...}`).
async fn refused(config: &Path, args: &[impl AsRef<str> + std::fmt::Debug], reason: &str) -> Value {
    let (code, value, stderr) = ctl(config, args).await;
    assert_eq!(code, 2, "{args:?} must be refused ({reason}): {value} {stderr}");
    assert!(
        stderr.contains(&format!("({reason})")),
        "{args:?}: stderr does not name {reason}: {stderr}"
    );
    value
}

/// A command refused before it reaches the node (the argument parser, with the core's own
/// message): exit code 2 and `text` on stderr.
async fn refused_by_parser(config: &Path, args: &[impl AsRef<str> + std::fmt::Debug], text: &str) {
    let (code, value, stderr) = ctl(config, args).await;
    assert_eq!(code, 2, "{args:?} must be refused: {value} {stderr}");
    assert!(
        stderr.contains(text),
        "{args:?}: stderr does not say {text:?}: {stderr}"
    );
}

/// Everything a refusal must leave alone: each person's account (balance, held, frozen) and
/// bindings as grantor and as grantee on their node.
type Snapshot = Vec<(PersonId, Option<Account>, Vec<Binding>, Vec<Binding>)>;

async fn snapshot(c: &mut Conns, people: &[(PersonId, u32)]) -> Snapshot {
    let mut snapshot = Vec::new();
    for (person, code) in people {
        let conn = match *code {
            BEIJING => &mut c.beijing,
            CHONGQING => &mut c.chongqing,
            _ => &mut c.sichuan,
        };
        let account = conn.account(person).await.unwrap();
        let (as_grantor, as_grantee) = conn.bindings(person).await.unwrap();
        snapshot.push((*person, account, as_grantor, as_grantee));
    }
    snapshot
}

async fn unchanged(c: &mut Conns, people: &[(PersonId, u32)], before: &Snapshot, after: &str) {
    assert_eq!(&snapshot(c, people).await, before, "something changed after {after}");
}

fn person(value: &Value) -> PersonId {
    value.as_str().unwrap().parse().unwrap()
}

/// Applies a JSON receipt to the model of balances.
fn apply(model: &mut Model, receipt: &Value) {
    let patient = person(&receipt["patient"]);
    let own = receipt["own_account_paid_fen"].as_u64().unwrap();
    if let Some(entry) = model.balances.get_mut(&patient) {
        entry.1 -= own;
    }
    for part in receipt["mutual_aid"].as_array().unwrap() {
        let entry = model.balances.get_mut(&person(&part["grantor"])).unwrap();
        entry.1 -= part["amount_fen"].as_u64().unwrap();
    }
}

fn credit_back(model: &mut Model, who: &PersonId, fen: u64) {
    model.balances.get_mut(who).unwrap().1 += fen;
}

fn paid_by(receipt: &Value, grantor: &PersonId) -> u64 {
    receipt["mutual_aid"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|part| person(&part["grantor"]) == *grantor)
        .map(|part| part["amount_fen"].as_u64().unwrap())
        .sum()
}

fn not_paying_reason(receipt: &Value, grantor: &PersonId) -> Option<String> {
    receipt["not_paying"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| person(&n["grantor"]) == *grantor)
        .map(|n| n["reason"].as_str().unwrap().to_string())
}

async fn launch(dir: &Path, provinces: &[u32], extra: &str, options: ClusterOptions) -> LocalCluster {
    let options = ClusterOptions {
        extra_config: format!("{extra}{PROTOCOL}"),
        ..options
    };
    let provinces: Vec<_> = provinces.iter().map(|code| p(*code)).collect();
    LocalCluster::launch(&exe(), dir, &provinces, &options).await.unwrap()
}

fn configs(cluster: &LocalCluster) -> (PathBuf, PathBuf, PathBuf) {
    let config = |code| cluster.nodes[&p(code)].config_path.clone();
    (config(BEIJING), config(CHONGQING), config(SICHUAN))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bureau_operations_refuse_bad_input_with_a_reason_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Chongqing's policy of `nodes/`: the family sets the order of a grantee's grantors.
    let cluster = launch(
        dir.path(),
        &[BEIJING, CHONGQING, SICHUAN],
        "\n[policy]\ngrantor_order = \"family_order\"\n",
        ClusterOptions::default(),
    )
    .await;
    let (bj, cq, sc) = configs(&cluster);
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 1, Limits::default()).await;
    let mut model = Model::default();
    model.open(f.grandmother, p(CHONGQING), yuan(50));
    model.open(f.son, p(BEIJING), yuan(1000));
    model.open(f.daughter, p(SICHUAN), yuan(800));
    let people = [(f.grandmother, CHONGQING), (f.son, BEIJING), (f.daughter, SICHUAN)];
    let (gm, son, daughter) = (f.grandmother.to_string(), f.son.to_string(), f.daughter.to_string());
    let (son_b, daughter_b) = (f.son_binding.to_string(), f.daughter_binding.to_string());

    // --- Order and limits decide who pays what: the daughter first, at most 100 yuan.
    let ordered = ok(
        &cq,
        &[
            "order",
            "--grantee",
            &gm,
            "--bindings",
            &format!("{daughter_b},{son_b}"),
        ],
    )
    .await;
    assert_eq!(ordered["bindings"], json!([daughter_b, son_b]));
    let limits = ok(&sc, &["limits", "--binding", &daughter_b, "--per-settlement", "100"]).await;
    assert_eq!(limits["limit_per_settlement_fen"], 10_000);
    assert_eq!(limits["limit_monthly_fen"], Value::Null);
    let r = ok(
        &cq,
        &[
            "settle",
            "--id",
            "S-A1",
            "--person",
            &gm,
            "--self-pay",
            "300",
            "--fund-paid",
            "700",
        ],
    )
    .await;
    assert_eq!(r["status"], "committed");
    assert_eq!(r["own_account_paid_fen"], 5_000);
    assert_eq!(r["own_balance_after_fen"], 0);
    let parts: Vec<(String, u64, u64)> = r["mutual_aid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| {
            (
                part["grantor"].as_str().unwrap().to_string(),
                part["amount_fen"].as_u64().unwrap(),
                part["balance_after_fen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        vec![(daughter.clone(), 10_000, 70_000), (son.clone(), 15_000, 85_000)],
        "daughter first up to her limit, then the son: {r}"
    );
    assert_eq!(r["cash_paid_fen"], 0);
    apply(&mut model, &r);
    model.check(&mut c, Duration::from_secs(15)).await;

    let before = snapshot(&mut c, &people).await;
    for (config, args, reason) in [
        (
            &sc,
            vec!["limits", "--binding", &daughter_b, "--per-settlement", "0"],
            "zero_limit",
        ),
        (
            &sc,
            vec!["limits", "--binding", &daughter_b, "--monthly", "0"],
            "zero_limit",
        ),
        (
            &sc,
            vec!["limits", "--binding", "510000-999", "--per-settlement", "5"],
            "unknown_binding",
        ),
        (
            &cq,
            vec![
                "order",
                "--grantee",
                &gm,
                "--bindings",
                &format!("{daughter_b},{daughter_b}"),
            ],
            "bad_order",
        ),
        (
            &cq,
            vec![
                "order",
                "--grantee",
                &gm,
                "--bindings",
                &format!("{daughter_b},110000-999"),
            ],
            "unknown_binding",
        ),
        // The order is set on the grantee's node: Beijing has no copy of her bindings.
        (
            &bj,
            vec!["order", "--grantee", &gm, "--bindings", &son_b],
            "unknown_binding",
        ),
    ] {
        refused(config, &args, reason).await;
        unchanged(&mut c, &people, &before, &format!("{args:?}")).await;
    }
    refused_by_parser(
        &sc,
        &["limits", "--binding", &daughter_b, "--monthly", "1.001"],
        "more than 2 decimals",
    )
    .await;
    refused_by_parser(&sc, &["limits", "--binding", &daughter_b, "--monthly=-1"], "negative").await;
    // An empty order cannot be typed (the parser wants a binding); through the API it is refused.
    let reply = c
        .chongqing
        .call(ClientRequest::SetOrder {
            grantee: f.grandmother,
            bindings: Vec::new(),
        })
        .await
        .unwrap();
    assert!(
        matches!(&reply, ClientReply::Error(e) if e.reason == "bad_order"),
        "{reply:?}"
    );
    unchanged(&mut c, &people, &before, "an empty order").await;

    // --- Cancel twice, then reverse: one refund, the same receipt each time.
    let cancelled = ok(&cq, &["cancel", "--settlement", "S-A1"]).await;
    assert_eq!(cancelled["refund_id"], "X:S-A1");
    assert_eq!(cancelled["amount_fen"], 30_000);
    assert_eq!(cancelled["cash_fen"], 0);
    assert_eq!(ok(&cq, &["cancel", "--settlement", "S-A1"]).await, cancelled);
    assert_eq!(ok(&cq, &["reverse", "--message", "S-A1"]).await, cancelled);
    credit_back(&mut model, &f.grandmother, 5_000);
    credit_back(&mut model, &f.son, 15_000);
    credit_back(&mut model, &f.daughter, 10_000);
    model.check(&mut c, Duration::from_secs(15)).await;

    // A refund cannot be reversed; an unknown message neither.
    let r = ok(&cq, &["settle", "--id", "S-A2", "--person", &gm, "--self-pay", "20"]).await;
    assert_eq!(r["own_account_paid_fen"], 2_000);
    assert_eq!(r["own_balance_after_fen"], 3_000);
    apply(&mut model, &r);
    let refund = ok(
        &cq,
        &["refund", "--settlement", "S-A2", "--id", "R-A2", "--amount", "5"],
    )
    .await;
    assert_eq!(refund["amount_fen"], 500);
    credit_back(&mut model, &f.grandmother, 500);
    model.check(&mut c, Duration::from_secs(15)).await;
    let before = snapshot(&mut c, &people).await;
    refused(&cq, &["reverse", "--message", "R-A2"], "refund_not_reversible").await;
    refused(&cq, &["reverse", "--message", "S-NOPE"], "unknown_message").await;
    refused(&cq, &["cancel", "--settlement", "S-NOPE"], "unknown_settlement").await;
    refused(
        &cq,
        &["refund", "--settlement", "S-A2", "--id", "R-A2", "--amount", "6"],
        "refund_id_reused",
    )
    .await;
    refused_by_parser(
        &cq,
        &["refund", "--settlement", "S-A2", "--id", "R-A3", "--amount", "0.001"],
        "more than 2 decimals",
    )
    .await;
    unchanged(&mut c, &people, &before, "reverse/cancel/refund refusals").await;
    // Still applied once, after everything had time to arrive.
    model.check(&mut c, Duration::from_secs(5)).await;

    // --- Freeze: a frozen patient's own account pays nothing; a frozen grantor is not drawn on.
    let frozen = ok(
        &cq,
        &[
            "account",
            "freeze",
            "--person",
            &gm,
            "--reason",
            "card lost at window 3",
        ],
    )
    .await;
    assert_eq!(
        (frozen["frozen"].clone(), frozen["frozen_reason"].clone()),
        (json!(true), json!("card lost at window 3"))
    );
    let r = ok(&cq, &["settle", "--id", "S-B1", "--person", &gm, "--self-pay", "100"]).await;
    assert_eq!(r["own_account_paid_fen"], 0);
    assert_eq!(r["own_refusal"], "account_frozen", "{r}");
    assert_eq!(paid_by(&r, &f.daughter), 10_000);
    apply(&mut model, &r);
    ok(&bj, &["account", "freeze", "--person", &son, "--reason", "card lost"]).await;
    let r = ok(&cq, &["settle", "--id", "S-B2", "--person", &gm, "--self-pay", "150"]).await;
    assert_eq!(r["own_refusal"], "account_frozen", "{r}");
    assert_eq!(paid_by(&r, &f.daughter), 10_000);
    assert_eq!(paid_by(&r, &f.son), 0);
    assert_eq!(not_paying_reason(&r, &f.son).as_deref(), Some("account_frozen"), "{r}");
    assert_eq!(r["cash_paid_fen"], 5_000);
    apply(&mut model, &r);
    model.check(&mut c, Duration::from_secs(15)).await;
    // Unfrozen, both pay again.
    let thawed = ok(&cq, &["account", "unfreeze", "--person", &gm]).await;
    assert_eq!(
        (thawed["frozen"].clone(), thawed["frozen_reason"].clone()),
        (json!(false), Value::Null)
    );
    ok(&bj, &["account", "unfreeze", "--person", &son]).await;
    let own_before = model.balances[&f.grandmother].1;
    let r = ok(&cq, &["settle", "--id", "S-B3", "--person", &gm, "--self-pay", "150"]).await;
    assert_eq!(r["own_refusal"], Value::Null, "{r}");
    assert_eq!(r["own_account_paid_fen"], own_before);
    assert_eq!(paid_by(&r, &f.daughter), 10_000);
    assert_eq!(paid_by(&r, &f.son), 15_000 - own_before - 10_000, "{r}");
    apply(&mut model, &r);
    model.check(&mut c, Duration::from_secs(15)).await;
    let before = snapshot(&mut c, &people).await;
    let stranger = adult(CHONGQING, 99).to_string();
    refused(
        &cq,
        &["account", "freeze", "--person", &stranger, "--reason", "lost"],
        "unknown_person",
    )
    .await;
    refused(&cq, &["account", "unfreeze", "--person", &stranger], "unknown_person").await;
    refused(
        &cq,
        &["account", "freeze", "--person", &gm, "--reason", " "],
        "bad_reason",
    )
    .await;
    // Another province's person is unknown here too.
    refused(
        &cq,
        &["account", "freeze", "--person", &son, "--reason", "lost"],
        "unknown_person",
    )
    .await;
    unchanged(&mut c, &people, &before, "freeze refusals").await;

    // --- Settlement refusals, each followed by a look at every balance.
    let settle = |id: &'static str, who: String, extra: Vec<&'static str>| {
        let mut args = vec!["settle".to_string(), "--id".into(), id.into(), "--person".into(), who];
        args.extend(extra.into_iter().map(String::from));
        args
    };
    for (args, reason) in [
        (
            settle("S-C1", stranger.clone(), vec!["--self-pay", "10"]),
            "unknown_patient",
        ),
        // Insured in Beijing: the Chongqing node does not know him.
        (settle("S-C2", son.clone(), vec!["--self-pay", "10"]), "unknown_patient"),
        (
            settle(
                "S-C3",
                gm.clone(),
                vec!["--total", "100", "--fund-paid", "50", "--self-pay", "80"],
            ),
            "parts_exceed_total",
        ),
        // The same id with other amounts.
        (
            settle("S-B3", gm.clone(), vec!["--self-pay", "151"]),
            "settlement_id_reused",
        ),
        (
            settle("S-C4", gm.clone(), vec!["--self-pay", "10", "--institution", ""]),
            "bad_institution",
        ),
    ] {
        let rejected = refused(&cq, &args, reason).await;
        assert_eq!(rejected["status"], "rejected", "{args:?}");
        assert_eq!(rejected["reason"], reason, "{args:?}");
        unchanged(&mut c, &people, &before, &format!("{args:?}")).await;
    }
    for (args, text) in [
        (
            settle("S-C5", gm.clone(), vec!["--self-pay", "10.001"]),
            "more than 2 decimals",
        ),
        (settle("S-C6", gm.clone(), vec!["--self-pay=-10"]), "is negative"),
        (
            settle("S-C7", gm.clone(), vec!["--self-pay", "10", "--fund-paid=-1"]),
            "is negative",
        ),
        (
            settle("S-C8", gm.clone(), vec!["--self-pay", "10", "--total", "1e3"]),
            "total",
        ),
    ] {
        refused_by_parser(&cq, &args, text).await;
        unchanged(&mut c, &people, &before, &format!("{args:?}")).await;
    }
    // Insured in another province, through the API (the command always names this province):
    // refused as the wrong province.
    let mut request = settle_request("S-C9", f.grandmother, yuan(10));
    request.insured_region = Region::from_code(BEIJING).unwrap();
    let reply = c.chongqing.call(ClientRequest::Settle(request)).await.unwrap();
    assert!(
        matches!(&reply, ClientReply::Error(e) if e.reason == "wrong_province"),
        "{reply:?}"
    );
    unchanged(&mut c, &people, &before, "a settlement for another province").await;
    // The same id with the same amounts: the same receipt, nothing paid twice.
    let again = ok(&cq, &["settle", "--id", "S-B3", "--person", &gm, "--self-pay", "150"]).await;
    assert_eq!(again, r);
    unchanged(&mut c, &people, &before, "a repeated settlement").await;

    // --- Credits (划入), one at a time.
    let resident = adult(CHONGQING, 20);
    ok(
        &cq,
        &[
            "account",
            "open",
            "--person",
            &resident.to_string(),
            "--name",
            "Resident",
            "--scheme",
            "resident",
        ],
    )
    .await;
    let people_and_resident = [people.as_slice(), &[(resident, CHONGQING)]].concat();
    let credited = ok(&cq, &["credit", "--id", "CQ-C-1", "--person", &gm, "--amount", "10.50"]).await;
    credit_back(&mut model, &f.grandmother, 1_050);
    assert_eq!(credited["duplicate"], false);
    assert_eq!(credited["balance_fen"], model.balances[&f.grandmother].1);
    let before = snapshot(&mut c, &people_and_resident).await;
    let again = ok(&cq, &["credit", "--id", "CQ-C-1", "--person", &gm, "--amount", "10.50"]).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["balance_fen"], credited["balance_fen"]);
    unchanged(&mut c, &people_and_resident, &before, "a duplicate credit").await;
    let resident_s = resident.to_string();
    for (args, reason) in [
        (
            vec!["credit", "--id", "CQ-C-1", "--person", &gm, "--amount", "11"],
            "credit_id_reused",
        ),
        (
            vec!["credit", "--id", "CQ-C-2", "--person", &stranger, "--amount", "10"],
            "unknown_person",
        ),
        (
            vec!["credit", "--id", "CQ-C-3", "--person", &resident_s, "--amount", "10"],
            "no_personal_account",
        ),
        (
            vec!["credit", "--id", "CQ-C-4", "--person", &gm, "--amount", "0"],
            "zero_credit",
        ),
    ] {
        refused(&cq, &args, reason).await;
        unchanged(&mut c, &people_and_resident, &before, &format!("{args:?}")).await;
    }
    for (args, text) in [
        (
            vec!["credit", "--id", "CQ-C-5", "--person", &gm, "--amount", "1.001"],
            "more than 2 decimals",
        ),
        (
            vec!["credit", "--id", "CQ-C-6", "--person", &gm, "--amount=-5"],
            "is negative",
        ),
        (
            vec!["credit", "--id", "CQ C 7", "--person", &gm, "--amount", "5"],
            "--id",
        ),
    ] {
        refused_by_parser(&cq, &args, text).await;
        unchanged(&mut c, &people_and_resident, &before, &format!("{args:?}")).await;
    }

    // --- Binding refusals on the son's (the grantor's) node.
    let wife = adult(BEIJING, 2);
    let child = PersonId::from_body(&format!("{BEIJING:06}20150601001")).unwrap();
    let resident_grantor = adult(BEIJING, 3);
    open(&mut c.beijing, wife, Money::ZERO).await;
    open(&mut c.beijing, child, Money::ZERO).await;
    let reply = c
        .beijing
        .call(ClientRequest::OpenAccount {
            person: resident_grantor,
            name: "Resident".into(),
            scheme: Scheme::Resident,
            balance: Money::ZERO,
        })
        .await
        .unwrap();
    assert!(matches!(reply, ClientReply::Account(_)), "{reply:?}");
    let people = [
        (f.son, BEIJING),
        (wife, BEIJING),
        (child, BEIJING),
        (resident_grantor, BEIJING),
        (f.grandmother, CHONGQING),
    ];
    let before = snapshot(&mut c, &people).await;
    let (wife_s, child_s, resident_grantor_s) = (wife.to_string(), child.to_string(), resident_grantor.to_string());
    let unknown_grantor = adult(BEIJING, 98).to_string();
    let bind = |grantor: &str, grantee: &str, relation: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "bind",
            "--grantor",
            grantor,
            "--grantee",
            grantee,
            "--relation",
            relation,
            "--kind",
            "mutual-aid",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    for (args, reason) in [
        // An adult grantee without face verification.
        (
            bind(
                &son,
                &wife_s,
                "spouse",
                &["--under-16", "--document", "marriage-certificate"],
            ),
            "face_verification_required",
        ),
        (bind(&son, &son, "spouse", &[]), "self_binding"),
        (
            bind(&son, &gm, "parent", &["--grantee-province", "500000"]),
            "duplicate_binding",
        ),
        (
            bind(&son, &wife_s, "spouse", &["--document", "birth-certificate"]),
            "spouse_document",
        ),
        (
            bind(
                &son,
                &child_s,
                "child",
                &["--under-16", "--document", "marriage-certificate"],
            ),
            "under16_document",
        ),
        (
            bind(&son, &wife_s, "spouse", &["--evidence-ref", ""]),
            "evidence_reference",
        ),
        (bind(&son, &wife_s, "spouse", &["--limit-monthly", "0"]), "zero_limit"),
        (bind(&unknown_grantor, &wife_s, "spouse", &[]), "grantor_unknown"),
        (
            bind(&resident_grantor_s, &wife_s, "spouse", &[]),
            "grantor_not_employee",
        ),
        (
            bind(&son, &adult(BEIJING, 97).to_string(), "sibling", &[]),
            "grantee_not_enrolled",
        ),
        (
            vec!["unbind".into(), "--binding".into(), "110000-999".into()],
            "unknown_binding",
        ),
    ] {
        refused(&bj, &args, reason).await;
        unchanged(&mut c, &people, &before, &format!("{args:?}")).await;
    }
    for (args, text) in [
        (bind(&son, &wife_s, "cousin", &[]), "relation"),
        (bind(&son, &wife_s, "spouse", &["--document", "passport"]), "document"),
        (
            bind(&son, &wife_s, "spouse", &["--limit-monthly", "0.001"]),
            "more than 2 decimals",
        ),
        (
            bind(&son, &wife_s, "spouse", &["--limit-per-settlement=-1"]),
            "is negative",
        ),
    ] {
        refused_by_parser(&bj, &args, text).await;
        unchanged(&mut c, &people, &before, &format!("{args:?}")).await;
    }
    // An under-16 child binds without face verification, with a birth certificate.
    let bound = ok(
        &bj,
        &bind(
            &son,
            &child_s,
            "child",
            &["--under-16", "--document", "birth-certificate"],
        ),
    )
    .await;
    assert_eq!(bound["status"], "active");
    // Unbind once; the second time it is already revoked, and its limits can no longer change.
    let spouse = ok(
        &bj,
        &bind(&son, &wife_s, "spouse", &["--document", "marriage-certificate"]),
    )
    .await;
    let spouse_b = spouse["binding_id"].as_str().unwrap().to_string();
    let unbound = ok(&bj, &["unbind", "--binding", &spouse_b]).await;
    assert_eq!(unbound["status"], "revoked");
    let before = snapshot(&mut c, &people).await;
    refused(&bj, &["unbind", "--binding", &spouse_b], "already_revoked").await;
    refused(
        &bj,
        &["limits", "--binding", &spouse_b, "--monthly", "5"],
        "already_revoked",
    )
    .await;
    unchanged(&mut c, &people, &before, "unbinding a revoked binding").await;
    let listed = ok(&bj, &["bindings", "--person", &son]).await;
    let statuses: BTreeMap<String, String> = listed["as_grantor"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["binding_id"].as_str().unwrap().to_string(),
                b["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(statuses[&spouse_b], "revoked");
    assert_eq!(statuses[&son_b], "active");
    model.check(&mut c, Duration::from_secs(5)).await;
}

async fn bindings_of(
    conn: &mut exchange_node::client::BureauConn,
    people: &[PersonId],
) -> Vec<(Vec<Binding>, Vec<Binding>)> {
    let mut all = Vec::new();
    for person in people {
        all.push(conn.bindings(person).await.unwrap());
    }
    all
}

/// Sichuan's policy of `nodes/` (no unbinding within 90 days of binding, at most 2 grantors per
/// grantee) and a province that allows fewer relations than the national six.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provinces_policy_refuses_with_its_reason_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = launch(
        dir.path(),
        &[SICHUAN],
        "\n[policy]\nunbind_min_days = 90\ngrantee_grantors_max = 2\nallowed_relations = [\"spouse\", \"parent\", \"child\"]\n",
        ClusterOptions::default(),
    )
    .await;
    let config = cluster.nodes[&p(SICHUAN)].config_path.clone();
    let mut conn = cluster.conn(p(SICHUAN)).await.unwrap();
    let [mother, son, daughter, brother] = [1, 2, 3, 4].map(|serial| adult(SICHUAN, serial));
    for person in [mother, son, daughter, brother] {
        open(&mut conn, person, yuan(100)).await;
    }
    let [mother_s, son_s, daughter_s, brother_s] = [mother, son, daughter, brother].map(|p| p.to_string());
    let everyone = [mother, son, daughter, brother];
    let bind = |grantor: &str, relation: &str| {
        [
            "bind",
            "--grantor",
            grantor,
            "--grantee",
            &mother_s,
            "--relation",
            relation,
            "--kind",
            "mutual-aid",
        ]
        .map(String::from)
    };

    let before = bindings_of(&mut conn, &everyone).await;
    let args = bind(&brother_s, "sibling");
    refused(&config, &args, "relation_not_allowed").await;
    assert_eq!(
        bindings_of(&mut conn, &everyone).await,
        before,
        "nothing kept of a refused binding"
    );

    let first = ok(&config, &bind(&son_s, "parent")).await;
    assert_eq!(first["status"], "active");
    let first_b = first["binding_id"].as_str().unwrap().to_string();
    ok(&config, &bind(&daughter_s, "parent")).await;
    // A third grantor for the same grantee: over the policy's 2.
    let before = bindings_of(&mut conn, &everyone).await;
    let args = [
        "bind",
        "--grantor",
        &brother_s,
        "--grantee",
        &mother_s,
        "--relation",
        "child",
        "--kind",
        "mutual-aid",
    ];
    refused(&config, &args, "too_many_grantors").await;
    assert_eq!(
        bindings_of(&mut conn, &everyone).await,
        before,
        "nothing kept of a refused binding"
    );
    // Unbinding on the day of binding: too soon under the 90-day rule; the binding stays active.
    let refusal = refused(&config, &["unbind", "--binding", &first_b], "unbind_too_soon").await;
    assert_eq!(refusal, Value::Null, "a refusal prints no JSON on stdout");
    assert_eq!(bindings_of(&mut conn, &everyone).await, before);
    let (as_grantor, _) = conn.bindings(&son).await.unwrap();
    assert!(as_grantor[0].is_active(), "{as_grantor:?}");
    // The money was never touched.
    for person in everyone {
        assert_eq!(account(&mut conn, &person).await.balance, yuan(100));
    }
}

/// A TCP relay standing in for one node's address in one peer's configuration: the test cuts
/// the link (open connections are dropped, new ones refused) and restores it.
struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    cut: watch::Sender<bool>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(None::<SocketAddr>));
        let (cut, cut_watch) = watch::channel(false);
        let to = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut_watch = cut_watch.clone();
                let target = *to.lock().unwrap();
                let (Some(target), false) = (target, *cut_watch.borrow()) else {
                    continue; // dropped: the peer sees the connection close
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { addr, target, cut }
    }

    fn forward_to(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = Some(target);
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Waits until `binding` has `status` in `person`'s list (`role`: as_grantor / as_grantee) on
/// the node of `config`.
async fn wait_binding(config: &Path, person: &PersonId, role: &str, binding: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = ok(config, &["bindings", "--person", &person.to_string()]).await;
        let found = listed[role]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["binding_id"] == binding)
            .map(|b| b["status"].as_str().unwrap().to_string());
        if found.as_deref() == Some(status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{binding} is {found:?} {role} on {}, expected {status}: {listed}",
            config.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_bindings_are_never_used_and_a_commit_cut_off_shows_in_reconciliation() {
    let dir = tempfile::tempdir().unwrap();
    // Chongqing reaches Beijing only through the relay; Beijing reaches Chongqing directly.
    let relay = Relay::start().await;
    let mut options = ClusterOptions::default();
    options
        .peer_address_override
        .insert((p(CHONGQING), p(BEIJING)), relay.addr);
    let mut cluster = launch(dir.path(), &[BEIJING, CHONGQING, SICHUAN], "", options).await;
    relay.forward_to(cluster.nodes[&p(BEIJING)].addr);
    let (bj, cq, sc) = configs(&cluster);
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 1, Limits::default()).await;
    // A Beijing grantor for a Sichuan relative; a Chongqing grantor for a Beijing relative.
    let (bj_grantor, sc_grantee) = (adult(BEIJING, 2), adult(SICHUAN, 2));
    let (cq_grantor, bj_grantee) = (adult(CHONGQING, 3), adult(BEIJING, 3));
    open(&mut c.beijing, bj_grantor, yuan(1000)).await;
    open(&mut c.sichuan, sc_grantee, yuan(10)).await;
    open(&mut c.chongqing, cq_grantor, yuan(1000)).await;
    open(&mut c.beijing, bj_grantee, yuan(20)).await;
    let mut model = Model::default();
    model.open(f.grandmother, p(CHONGQING), yuan(50));
    model.open(f.son, p(BEIJING), yuan(1000));
    model.open(f.daughter, p(SICHUAN), yuan(800));
    model.open(bj_grantor, p(BEIJING), yuan(1000));
    model.open(cq_grantor, p(CHONGQING), yuan(1000));
    model.open(bj_grantee, p(BEIJING), yuan(20));
    model.open(sc_grantee, p(SICHUAN), yuan(10));
    let (from, to) = around_today();

    // --- The grantee's node is down (kill -9): the bind answers pending.
    cluster.kill9(p(SICHUAN)).unwrap();
    let pending = ok(
        &bj,
        &[
            "bind",
            "--grantor",
            &bj_grantor.to_string(),
            "--grantee",
            &sc_grantee.to_string(),
            "--grantee-province",
            "510000",
            "--relation",
            "sibling",
            "--kind",
            "mutual-aid",
        ],
    )
    .await;
    assert_eq!(pending["status"], "pending", "{pending}");
    let sc_binding = pending["binding_id"].as_str().unwrap().to_string();
    wait_binding(&bj, &bj_grantor, "as_grantor", &sc_binding, "pending").await;

    // --- A commit that cannot reach the payer. Sichuan (the daughter's node) is still down, so
    // the coordinator waits for her vote until its deadline; meanwhile the son's node holds his
    // part, and the link from Chongqing to Beijing is cut before the decision.
    let gm = f.grandmother.to_string();
    let settling = {
        let cq = cq.clone();
        let gm = gm.clone();
        tokio::spawn(async move { ctl(&cq, &["settle", "--id", "S-G1", "--person", &gm, "--self-pay", "300"]).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while account(&mut c.beijing, &f.son).await.held.is_zero() {
        assert!(Instant::now() < deadline, "the son's node never held his part");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.set_cut(true);
    let (code, r, stderr) = settling.await.unwrap();
    assert_eq!(code, 0, "{r} {stderr}");
    assert_eq!(r["own_account_paid_fen"], 5_000);
    assert_eq!(paid_by(&r, &f.son), 25_000, "{r}");
    assert_eq!(not_paying_reason(&r, &f.daughter).as_deref(), Some("timeout"), "{r}");
    apply(&mut model, &r);
    // Chongqing recorded the deduction; Beijing still only holds it: missing at the payer.
    let son_now = account(&mut c.beijing, &f.son).await;
    assert_eq!(
        (son_now.balance, son_now.held),
        (yuan(1000), yuan(250)),
        "the commit must not have arrived"
    );
    let reconcile = ["reconcile", "--peer", "500000", "--from", &from, "--to", &to];
    let (code, report, stderr) = ctl(&bj, &reconcile).await;
    assert_eq!(code, 1, "a mismatch exits 1: {report} {stderr}");
    assert_eq!(report["reconciled"], false);
    assert_eq!(report["mismatch_count"], 1, "{report}");
    let mismatch = &report["mismatches"][0];
    assert_eq!(mismatch["problem"], "missing_at_payer", "{report}");
    assert!(mismatch["leg"].as_str().unwrap().contains("/S-G1/"), "{report}");
    // The mismatch carries the amount the side that has the leg recorded; the totals agree:
    // Chongqing's journal says it received 250 yuan from Beijing's accounts, Beijing's own says
    // nothing was paid.
    assert_eq!(mismatch["coordinator_fen"], 25_000, "{report}");
    assert_eq!(mismatch["payer_fen"], Value::Null, "{report}");
    assert_eq!(report["peer_side"]["received_from_peer_fen"], 25_000, "{report}");
    assert_eq!(report["own"]["paid_for_peer_fen"], 0, "{report}");
    assert_eq!(
        (mismatch["payer"].clone(), mismatch["coordinator"].clone()),
        (json!(BEIJING), json!(CHONGQING))
    );
    assert!(stderr.contains("do not reconcile"), "{stderr}");

    // --- A binding whose registration cannot reach the grantee's node (Chongqing -> Beijing is
    // cut, Beijing -> Chongqing works): pending on the grantor's node, unknown on the grantee's,
    // and a settlement there does not use it.
    let pending = ok(
        &cq,
        &[
            "bind",
            "--grantor",
            &cq_grantor.to_string(),
            "--grantee",
            &bj_grantee.to_string(),
            "--grantee-province",
            "110000",
            "--relation",
            "child",
            "--kind",
            "mutual-aid",
        ],
    )
    .await;
    assert_eq!(pending["status"], "pending", "{pending}");
    let bj_binding = pending["binding_id"].as_str().unwrap().to_string();
    let listed = ok(&bj, &["bindings", "--person", &bj_grantee.to_string()]).await;
    assert_eq!(
        listed["as_grantee"],
        json!([]),
        "not registered on the grantee's node: {listed}"
    );
    let r = ok(
        &bj,
        &[
            "settle",
            "--id",
            "S-F1",
            "--person",
            &bj_grantee.to_string(),
            "--self-pay",
            "100",
        ],
    )
    .await;
    assert_eq!(r["own_account_paid_fen"], 2_000);
    assert_eq!(r["mutual_aid"], json!([]), "the pending binding is not used: {r}");
    assert_eq!(r["cash_paid_fen"], 8_000);
    apply(&mut model, &r);
    assert_eq!(account(&mut c.chongqing, &cq_grantor).await.balance, yuan(1000));

    // --- Heal: the link is restored and Sichuan's node restarts.
    relay.set_cut(false);
    cluster.start(p(SICHUAN)).unwrap();
    cluster.wait_ready(p(SICHUAN)).await.unwrap();
    c.sichuan = cluster.conn(p(SICHUAN)).await.unwrap();
    // Both bindings become active on both nodes.
    wait_binding(&bj, &bj_grantor, "as_grantor", &sc_binding, "active").await;
    wait_binding(&sc, &sc_grantee, "as_grantee", &sc_binding, "active").await;
    wait_binding(&cq, &cq_grantor, "as_grantor", &bj_binding, "active").await;
    wait_binding(&bj, &bj_grantee, "as_grantee", &bj_binding, "active").await;
    // The commit reached the son's node: the journals reconcile (exit 0).
    model.check(&mut c, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, report, stderr) = ctl(&bj, &reconcile).await;
        if code == 0 {
            assert_eq!(report["reconciled"], true);
            assert_eq!(report["legs_matched"], 1, "{report}");
            break;
        }
        assert!(Instant::now() < deadline, "never reconciled: {report} {stderr}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Now active, the bindings pay.
    let r = ok(
        &bj,
        &[
            "settle",
            "--id",
            "S-F2",
            "--person",
            &bj_grantee.to_string(),
            "--self-pay",
            "100",
        ],
    )
    .await;
    assert_eq!(r["own_refusal"], "insufficient_balance", "{r}");
    assert_eq!(paid_by(&r, &cq_grantor), 10_000, "{r}");
    apply(&mut model, &r);
    let r = ok(
        &sc,
        &[
            "settle",
            "--id",
            "S-F3",
            "--person",
            &sc_grantee.to_string(),
            "--self-pay",
            "100",
        ],
    )
    .await;
    assert_eq!(r["own_account_paid_fen"], 1_000);
    assert_eq!(paid_by(&r, &bj_grantor), 9_000, "{r}");
    apply(&mut model, &r);
    model.check(&mut c, Duration::from_secs(20)).await;
    cluster.stop_all();
}
