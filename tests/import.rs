//! Bulk imports through the real binary against real node processes: a few thousand accounts
//! with malformed rows, a re-run that imports nothing twice, bindings across two provinces and
//! a credit batch sent twice (applied once), checked through the bureau API.

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use common::*;
use exchange_core::PersonId;
use serde_json::Value;

const ACCOUNTS: u64 = 3000;

fn synthetic(code: u32, serial: u64) -> PersonId {
    PersonId::synthetic(code, serial)
}

fn counts(summary: &Value) -> [u64; 5] {
    ["rows", "imported", "already_present", "refused", "malformed"].map(|key| summary[key].as_u64().unwrap())
}

/// The report's rows as (line, key, reason).
fn report(path: &Path) -> Vec<(u64, String, String)> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    assert_eq!(
        reader.headers().unwrap(),
        &csv::StringRecord::from(vec!["line", "key", "reason", "message"])
    );
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            assert!(!r[3].is_empty(), "every reported row has a message: {r:?}");
            (r[0].parse().unwrap(), r[1].to_string(), r[2].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_imports_are_streamed_reported_and_never_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let chongqing_config = cluster.nodes[&p(CHONGQING)].config_path.clone();
    let beijing_config = cluster.nodes[&p(BEIJING)].config_path.clone();
    let work = dir.path().join("files");
    std::fs::create_dir_all(&work).unwrap();

    // --- Accounts: 3000 good rows (line n+2 for serial n) and malformed / refused rows.
    let accounts = work.join("accounts.csv");
    let mut text = String::from("person,name,scheme,balance_yuan\n");
    for serial in 1..=ACCOUNTS {
        let scheme = if serial % 10 == 0 { "resident" } else { "employee" };
        let balance = if scheme == "resident" { "0" } else { "100.50" };
        writeln!(
            text,
            "{},\"Zhang, No. {serial}\",{scheme},{balance}",
            synthetic(CHONGQING, serial)
        )
        .unwrap();
    }
    let good_id = synthetic(CHONGQING, ACCOUNTS + 1).to_string();
    let mut bad_check = good_id.clone();
    let last = if bad_check.ends_with('1') { "2" } else { "1" };
    bad_check.replace_range(17..18, last);
    let bad_rows = [
        (format!("{bad_check},Li,employee,1"), "bad_resident_id"),
        (format!("{good_id},Li,employee,1.005"), "too_many_decimals"),
        (format!("{good_id},Li,employee,-3"), "negative_amount"),
        (format!("{good_id},Li,staff,1"), "unknown_scheme"),
        (format!("{good_id},Li"), "missing_columns"),
        (format!("{good_id},Li,Hua,employee,1"), "too_many_columns"),
        // Refused by the node: a resident has no balance; the person is already in the file.
        (
            format!("{},Wu,resident,5", synthetic(CHONGQING, ACCOUNTS + 2)),
            "resident_balance",
        ),
    ];
    let first_bad_line = ACCOUNTS + 2;
    for (row, _) in &bad_rows {
        writeln!(text, "{row}").unwrap();
    }
    // The same person twice in one file: the second is already present.
    writeln!(text, "{},Zhang,employee,100.50", synthetic(CHONGQING, 1)).unwrap();
    std::fs::write(&accounts, text).unwrap();
    let report_path = work.join("accounts-report.csv");
    let rows = ACCOUNTS + bad_rows.len() as u64 + 1;

    let started = Instant::now();
    let (code, summary, stderr) = ctl(
        &chongqing_config,
        &[
            "import",
            "accounts",
            accounts.to_str().unwrap(),
            "--report",
            report_path.to_str().unwrap(),
        ],
    );
    let elapsed = started.elapsed();
    eprintln!(
        "imported {ACCOUNTS} accounts in {:.2} s ({:.0} rows/s): {summary}",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(code, 1, "some rows are refused: {stderr}");
    assert_eq!(counts(&summary), [rows, ACCOUNTS, 1, 7, 6], "{summary}");
    let reported = report(&report_path);
    let expected: Vec<(u64, String)> = bad_rows
        .iter()
        .enumerate()
        .map(|(i, (_, reason))| (first_bad_line + i as u64, reason.to_string()))
        .collect();
    let got: Vec<(u64, String)> = reported
        .iter()
        .map(|(line, _, reason)| (*line, reason.clone()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(reported[0].1, bad_check, "the key is the person as written");

    let opened = account(&mut c.chongqing, &synthetic(CHONGQING, 7)).await;
    assert_eq!(
        (opened.name.as_str(), opened.balance),
        ("Zhang, No. 7", money_fen(10_050))
    );
    assert!(
        c.chongqing
            .account(&synthetic(CHONGQING, ACCOUNTS + 2))
            .await
            .unwrap()
            .is_none()
    );

    // Re-run: nothing imported twice, the same rows refused.
    let (code, summary, _) = ctl(
        &chongqing_config,
        &[
            "import",
            "accounts",
            accounts.to_str().unwrap(),
            "--report",
            report_path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(counts(&summary), [rows, 0, ACCOUNTS + 1, 7, 6], "{summary}");
    assert_eq!(report(&report_path), reported);
    assert_eq!(
        account(&mut c.chongqing, &synthetic(CHONGQING, 7)).await.balance,
        money_fen(10_050)
    );

    // --- A file that is not CSV, or has the wrong header: exit 2, nothing sent.
    let png = work.join("photo.csv");
    std::fs::write(
        &png,
        [0x89u8, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0xfe, 0x00],
    )
    .unwrap();
    let (code, _, stderr) = ctl(&chongqing_config, &["import", "accounts", png.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
    let (code, _, stderr) = ctl(&chongqing_config, &["credit-batch", accounts.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("credit_id,person,amount_yuan"), "{stderr}");

    // --- Bindings across two provinces: Beijing grantors, Chongqing grantees.
    let grantors = work.join("beijing-accounts.csv");
    let mut text = String::from("person,name,scheme,balance_yuan\n");
    for serial in 1..=20 {
        writeln!(text, "{},Son {serial},employee,1000", synthetic(BEIJING, serial)).unwrap();
    }
    std::fs::write(&grantors, text).unwrap();
    let (code, summary, stderr) = ctl(&beijing_config, &["import", "accounts", grantors.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(counts(&summary), [20, 20, 0, 0, 0]);
    assert!(
        work.join("beijing-accounts.report.csv").exists(),
        "the default report path"
    );

    let bindings = work.join("bindings.csv");
    let mut text = String::from(
        "grantor,grantee,grantee_province,relation,kind,limit_per_settlement_yuan,limit_monthly_yuan,document,evidence_ref,under_16\n",
    );
    for serial in 1..=20 {
        writeln!(
            text,
            "{},{},500000,parent,mutual-aid,300,,household-register,HR-{serial},false",
            synthetic(BEIJING, serial),
            synthetic(CHONGQING, serial)
        )
        .unwrap();
    }
    // Line 22: the grantee is not enrolled in Chongqing (refused by Chongqing's node);
    // line 23: a relation the policy does not know; line 24: an unknown grantor.
    writeln!(
        text,
        "{},{},500000,parent,mutual-aid,,,,,",
        synthetic(BEIJING, 1),
        synthetic(CHONGQING, ACCOUNTS + 50)
    )
    .unwrap();
    writeln!(
        text,
        "{},{},500000,cousin,mutual-aid,,,,,",
        synthetic(BEIJING, 2),
        synthetic(CHONGQING, 2)
    )
    .unwrap();
    writeln!(
        text,
        "{},{},500000,child,proxy,,,,,",
        synthetic(BEIJING, 99),
        synthetic(CHONGQING, 3)
    )
    .unwrap();
    std::fs::write(&bindings, text).unwrap();
    let bindings_report = work.join("bindings-report.csv");
    let args = [
        "import",
        "bindings",
        bindings.to_str().unwrap(),
        "--report",
        bindings_report.to_str().unwrap(),
        "--concurrency",
        "8",
    ];
    let (code, summary, stderr) = ctl(&beijing_config, &args);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(counts(&summary), [23, 20, 0, 3, 1], "{summary}");
    let reasons: Vec<(u64, String)> = report(&bindings_report).into_iter().map(|(l, _, r)| (l, r)).collect();
    assert_eq!(
        reasons,
        vec![
            (22, "grantee_not_enrolled".to_string()),
            (23, "unknown_relation".to_string()),
            (24, "grantor_unknown".to_string()),
        ]
    );
    let (code, summary, _) = ctl(&beijing_config, &args);
    assert_eq!(code, 1);
    if counts(&summary) != [23, 0, 20, 3, 1] {
        for serial in 1..=20 {
            let (as_grantor, _) = c.beijing.bindings(&synthetic(BEIJING, serial)).await.unwrap();
            eprintln!("grantor {serial}: {as_grantor:?}");
        }
    }
    assert_eq!(counts(&summary), [23, 0, 20, 3, 1], "{summary}");
    let (as_grantor, _) = c.beijing.bindings(&synthetic(BEIJING, 5)).await.unwrap();
    assert_eq!(as_grantor.len(), 1, "bound once: {as_grantor:?}");
    let (_, as_grantee) = c.chongqing.bindings(&synthetic(CHONGQING, 5)).await.unwrap();
    assert_eq!(as_grantee.len(), 1, "registered on the grantee's node: {as_grantee:?}");

    // --- A credit batch on Chongqing, sent twice: applied once.
    let credits = work.join("credits.csv");
    let mut text = String::from("credit_id,person,amount_yuan\n");
    for serial in 1..=200u64 {
        if serial % 10 == 0 {
            continue; // residents have no personal account
        }
        writeln!(text, "2025-07-{serial:04},{},125.05", synthetic(CHONGQING, serial)).unwrap();
    }
    let credited_rows = 180u64;
    // Refused: a resident, an unknown person, an id reused for another amount, 3 decimals, a
    // negative amount (the last two malformed: never sent).
    writeln!(text, "2025-07-R,{},1", synthetic(CHONGQING, 10)).unwrap();
    writeln!(text, "2025-07-U,{},1", synthetic(CHONGQING, ACCOUNTS + 60)).unwrap();
    writeln!(text, "2025-07-0001,{},1", synthetic(CHONGQING, 1)).unwrap();
    writeln!(text, "2025-07-X,{},1.001", synthetic(CHONGQING, 1)).unwrap();
    writeln!(text, "2025-07-N,{},-5", synthetic(CHONGQING, 2)).unwrap();
    std::fs::write(&credits, text).unwrap();
    let credits_report = work.join("credits-report.csv");
    let args = [
        "credit-batch",
        credits.to_str().unwrap(),
        "--report",
        credits_report.to_str().unwrap(),
    ];
    let (code, summary, stderr) = ctl(&chongqing_config, &args);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        counts(&summary),
        [credited_rows + 5, credited_rows, 0, 5, 2],
        "{summary}"
    );
    assert_eq!(summary["credited_fen"].as_u64(), Some(credited_rows * 12_505));
    let reported = report(&credits_report);
    let reasons: Vec<&str> = reported.iter().map(|(_, _, r)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "no_personal_account",
            "unknown_person",
            "credit_id_reused",
            "too_many_decimals",
            "negative_amount"
        ]
    );
    let negative = reported.last().unwrap();
    assert_eq!(
        (negative.0, negative.1.as_str()),
        (credited_rows + 6, "2025-07-N"),
        "line and key of the negative row"
    );
    let (code, summary, _) = ctl(&chongqing_config, &args);
    assert_eq!(code, 1);
    assert_eq!(
        counts(&summary),
        [credited_rows + 5, 0, credited_rows, 5, 2],
        "{summary}"
    );
    assert_eq!(summary["credited_fen"].as_u64(), Some(0));
    // Serial 2's negative row was not applied: one credit of 125.05, nothing taken away.
    for serial in [1u64, 2, 7, 199] {
        let balance = account(&mut c.chongqing, &synthetic(CHONGQING, serial)).await.balance;
        assert_eq!(balance, money_fen(10_050 + 12_505), "serial {serial}");
    }
    assert_eq!(
        account(&mut c.chongqing, &synthetic(CHONGQING, 201)).await.balance,
        money_fen(10_050),
        "not in the credit file"
    );

    // The single credit command with an id of the batch: already applied.
    let (code, reply, stderr) = ctl(
        &chongqing_config,
        &[
            "credit",
            "--id",
            "2025-07-0007",
            "--person",
            &synthetic(CHONGQING, 7).to_string(),
            "--amount",
            "125.05",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reply["duplicate"], Value::Bool(true));
    assert_eq!(reply["balance_fen"].as_u64(), Some(10_050 + 12_505));
}

fn money_fen(fen: u64) -> exchange_core::Money {
    exchange_core::Money::from_fen(fen).unwrap()
}
