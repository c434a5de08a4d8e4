//! The dashboard in a real browser: headless Chromium loads the monitor's page over three
//! real nodes (one of them killed), and the rendered DOM must show the flow matrix with the
//! right figures and the health table with the down node standing out. A screenshot is saved
//! as a test artifact under `target/test-artifacts/dashboard.png`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use exchange_core::Limits;
use exchange_node::cluster::{ClusterOptions, LocalCluster};
use serde_json::Value;

/// The browser may take this long per run.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(45);

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
}

/// Runs headless Chromium on `url` with `extra` arguments; returns its stdout.
fn run_chromium(browser: &Path, profile: &Path, url: &str, extra: &[String]) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let started = Instant::now();
    loop {
        if child.try_wait().expect("chromium status").is_some() {
            break;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().expect("reader thread")
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (code, body) = exchange_monitor::http_get(addr, path).await.unwrap();
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The element with `id` in the dumped DOM: its opening tag.
fn tag_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let needle = format!("id=\"{id}\"");
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no element {id} in the page"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_the_flow_matrix_and_the_health_table_in_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is missing: CI must install it (.ci/run does: apt-get install -y chromium)"
        );
        eprintln!("NOTICE: chromium not installed; skipping the browser test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = ClusterOptions {
        metrics: true,
        ..ClusterOptions::default()
    };
    let mut cluster = LocalCluster::launch(&exe(), dir.path(), &[p(BEIJING), p(CHONGQING), p(SICHUAN)], &options)
        .await
        .unwrap();
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 50, Limits::default()).await;
    let monitor = exchange_monitor::spawn_for_cluster(&cluster, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = monitor.addr;
    // 500 yuan: 50 from her own account, 450 from her son in Beijing; then 300 more: 300 from
    // the son (550 in all); then 400: 150 left with the son, 250 from the daughter in Sichuan.
    let mut son_fen = 0;
    let mut daughter_fen = 0;
    for (id, amount) in [("S-D1", 500), ("S-D2", 300), ("S-D3", 400)] {
        let r = receipt(settle(&mut c.chongqing, id, f.grandmother, yuan(amount)).await);
        for part in &r.mutual_aid {
            if part.grantor == f.son {
                son_fen += part.amount.fen();
            } else {
                daughter_fen += part.amount.fen();
            }
        }
    }
    assert!(son_fen > 0 && daughter_fen > 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let flows = get_json(addr, "/api/flows").await;
        let amount = |from: u32, to: u32| {
            flows["total"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["from"] == from && c["to"] == to)
                .map(|c| c["amount_fen"].as_u64().unwrap())
        };
        if amount(BEIJING, CHONGQING) == Some(son_fen) && amount(SICHUAN, CHONGQING) == Some(daughter_fen) {
            break;
        }
        assert!(Instant::now() < deadline, "flows never matched the receipts: {flows}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.kill9(p(SICHUAN)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alerts = get_json(addr, "/api/alerts").await;
        if alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "node_down")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no node_down alert: {alerts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let url = monitor.url();
    let profile = dir.path().join("chromium-profile");
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let (dom, _) = {
        let browser = browser.clone();
        let profile = profile.clone();
        let url = url.clone();
        let screenshot = screenshot.clone();
        tokio::task::spawn_blocking(move || {
            let dom = run_chromium(&browser, &profile, &url, &["--dump-dom".to_string()]);
            let shot = run_chromium(
                &browser,
                &profile,
                &url,
                &[
                    format!("--screenshot={}", screenshot.display()),
                    "--window-size=1400,1900".to_string(),
                ],
            );
            (dom, shot)
        })
        .await
        .unwrap()
    };

    // The flow view: Beijing → Chongqing and Sichuan → Chongqing with the receipts' figures.
    let beijing_cell = tag_of(&dom, &format!("flow-{BEIJING}-{CHONGQING}"));
    assert!(
        beijing_cell.contains(&format!("data-amount-fen=\"{son_fen}\"")),
        "{beijing_cell}"
    );
    let sichuan_cell = tag_of(&dom, &format!("flow-{SICHUAN}-{CHONGQING}"));
    assert!(
        sichuan_cell.contains(&format!("data-amount-fen=\"{daughter_fen}\"")),
        "{sichuan_cell}"
    );
    let yuan_text = |fen: u64| {
        let whole = (fen / 100).to_string();
        let mut grouped = String::new();
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        format!("¥{grouped}.{:02}", fen % 100)
    };
    assert!(
        dom.contains(&yuan_text(son_fen)),
        "{} is drawn as text",
        yuan_text(son_fen)
    );
    assert!(dom.contains(&yuan_text(daughter_fen)));
    // The health table: Sichuan down and marked so, the others up.
    assert!(
        tag_of(&dom, "health-510000").contains("class=\"down\""),
        "{}",
        tag_of(&dom, "health-510000")
    );
    assert!(tag_of(&dom, "health-110000").contains("class=\"up\""));
    assert!(tag_of(&dom, "health-500000").contains("class=\"up\""));
    assert!(dom.contains("DOWN"));
    // The clearing table and the alert list rendered too.
    assert!(dom.contains(&format!("id=\"clearing-{BEIJING}-{CHONGQING}\"")));
    assert!(dom.contains("data-kind=\"node_down\""));
    // The outcome reasons and the cross-province latency are drawn (bars or "none yet").
    let outcomes = get_json(addr, "/api/outcomes").await;
    let refusals = outcomes["grantor_refusals"].as_object().unwrap();
    for (reason, count) in refusals.iter().filter(|(_, count)| count.as_u64() > Some(0)) {
        assert!(
            dom.contains(&format!("data-reason=\"{reason}\" data-count=\"{count}\"")),
            "{reason} bar: {outcomes}"
        );
    }
    if refusals.values().all(|count| count.as_u64() == Some(0)) {
        assert!(dom.contains("no grantor refused yet"));
    }
    assert!(dom.contains("id=\"kpi-cross-p99\""));
    let png = std::fs::metadata(&screenshot).expect("the screenshot was written");
    assert!(png.len() > 10_000, "a real picture ({} bytes)", png.len());
    eprintln!("dashboard screenshot: {}", screenshot.display());
    monitor.shutdown().await.unwrap();
}
