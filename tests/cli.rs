//! The binary's surface: `--help` lists every subcommand, and bad input to each subcommand ends
//! with a reason on stderr and exit code 2, never a panic.

use std::process::{Command, Output};

fn exchange(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_exchange"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_every_subcommand() {
    let output = exchange(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for subcommand in ["demo", "certs", "start", "ctl", "sim", "monitor", "bench", "chaos"] {
        assert!(
            help.lines().any(|line| line.trim_start().starts_with(subcommand)),
            "{subcommand} missing from --help:\n{help}"
        );
    }
    assert!(!help.contains("bench-client"), "the load client is internal:\n{help}");
}

#[test]
fn bad_input_exits_2_with_a_reason_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let garbage = dir.path().join("garbage.toml");
    std::fs::write(&garbage, "province = \"beijing\"\nlisten = 7\n[[peers]]\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let out = dir.path().join("certs");
    let out = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["no-such-command"], "unrecognized subcommand"),
        (vec!["sim", "run", missing], "missing.toml"),
        (vec!["sim", "run", garbage], "garbage.toml"),
        (
            vec!["sim", "run", "simulations/steady-state.toml", "--seeds", "x"],
            "invalid value",
        ),
        (vec!["start", "--config", missing], "missing.toml"),
        (vec!["start", "--config", garbage], "garbage.toml"),
        (
            vec![
                "start",
                "--config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../nodes/500000-chongqing.toml"),
                "--worker-threads",
                "100000",
            ],
            "--worker-threads must be",
        ),
        (vec!["bench", "--node-threads", "100000"], "--node-threads must be"),
        (
            vec![
                "ctl",
                "--config",
                missing,
                "account",
                "show",
                "--person",
                "11010519491231002X",
            ],
            "missing.toml",
        ),
        (
            vec![
                "ctl",
                "--config",
                garbage,
                "account",
                "show",
                "--person",
                "11010519491231002X",
            ],
            "garbage.toml",
        ),
        (vec!["certs", "init", "--out", out, "--provinces", "999999"], "999999"),
        (vec!["monitor", "--config", missing], "missing.toml"),
        (vec!["demo", "--no-such-flag"], "unexpected argument"),
        (
            vec![
                "ctl",
                "--config",
                missing,
                "account",
                "show",
                "--person",
                "110105194912310021",
            ],
            "check character",
        ),
        (
            vec![
                "ctl",
                "--config",
                missing,
                "credit",
                "--id",
                "C-1",
                "--person",
                "11010519491231002X",
                "--amount",
                "1.005",
            ],
            "decimal",
        ),
    ];
    for (args, reason) in cases {
        let output = exchange(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?} should say {reason:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn chaos_runs_from_the_command_line_and_reports_its_json_keys() {
    // A short run: the thorough one is tests/chaos.rs; this checks the operator's command.
    let output = exchange(&["chaos", "--duration", "4", "--seed", "7", "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for key in ["operations", "kills", "partitions", "violations", "seed"] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    assert_eq!(report["violations"], 0, "{report}");
    assert_eq!(report["seed"], 7);
    assert!(report["operations"].as_u64().unwrap() > 0, "{report}");
    // Bad input is refused before anything starts.
    let output = exchange(&["chaos", "--duration", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--duration"));
}

#[test]
fn bench_runs_a_small_cluster_and_reports_its_json_keys() {
    // A smoke run of the operators' benchmark command, CI-sized (figures are measured by hand,
    // see BENCHMARKS.md): real node processes, the bulk loader, every phase and both local
    // ceilings. What it checks is that the command works end to end and keeps its JSON keys,
    // not how fast anything is.
    let output = exchange(&[
        "bench",
        "--json",
        "--duration",
        "2",
        "--rate",
        "40",
        "--accounts",
        "3000",
        "--families",
        "4",
        "--low-rate",
        "20",
        "--low-duration",
        "1",
        "--transport-seconds",
        "1",
        "--storage-writes",
        "2000",
        "--warmup",
        "1",
        "--no-postgres",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for key in [
        "cross_province_settlements_per_s",
        "local_settlements_per_s",
        "p99_ms",
        "flushes_per_settlement",
        "peak_rss_mib",
        "transport_ceiling_rpc_per_s",
        "storage_ceiling_writes_per_s",
        "restart_to_serving_s",
    ] {
        assert!(
            report.get(key).is_some_and(|value| value.is_number()),
            "{key} missing: {report}"
        );
    }
    assert_eq!(report["accounts_on_beijing"], 3000, "{report}");
    for key in [
        "cross_province_settlements_per_s",
        "local_settlements_per_s",
        "transport_ceiling_rpc_per_s",
        "storage_ceiling_writes_per_s",
    ] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key} is 0: {report}");
    }
    // Every phase's settlements were answered, none failed; the warm-up's are in no figure
    // (a phase counts only what its measured seconds scheduled, give or take one).
    for phase in report["phases"].as_array().unwrap() {
        let client = &phase["client"];
        assert_eq!(client["failed"], 0, "{phase}");
        assert!(client["settled"].as_u64().unwrap() > 0, "{phase}");
        assert_eq!(phase["warmup_s"], 1.0, "{phase}");
        let measured = phase["target_rate_per_s"].as_f64().unwrap() * phase["duration_s"].as_f64().unwrap();
        let scheduled = client["scheduled"].as_f64().unwrap();
        assert!(
            (scheduled - measured).abs() <= 1.0,
            "scheduled {scheduled}, measured part {measured}: {phase}"
        );
    }
}
