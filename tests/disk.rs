//! Disk faults on real node processes (issue 9): a node whose data directory fills up stops
//! acknowledging and says why (UNAVAILABLE with the store's reason, gRPC health NOT_SERVING,
//! `/healthz` 503, an error in its log), loses nothing it acknowledged, and serves again once
//! space is back and it is restarted.
//!
//! The data directory of the coordinator (Chongqing) is a small tmpfs of its own, mounted by
//! the test: this needs root (or CAP_SYS_ADMIN); without it the test prints a note and passes
//! without checking anything. A filler file takes the remaining space while settlements run.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::records::Receipt;
use exchange_core::{CreditId, Limits, PersonId, Refusal};
use exchange_node::client::BureauConn;
use exchange_node::cluster::{ClusterOptions, LocalCluster};
use exchange_pki::{PeerIdentity, PkiLayout};
use exchange_proto::service::tonic_health::pb::HealthCheckRequest;
use exchange_proto::service::tonic_health::pb::health_check_response::ServingStatus;
use exchange_proto::service::tonic_health::pb::health_client::HealthClient;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Size of the failing node's data directory.
const TMPFS_SIZE: &str = "16m";
/// What each settlement leaves to pay, in yuan: a grandmother's own 50 yuan are spent after a
/// few, and then her children in Beijing and Sichuan pay, so every node takes writes.
const PAY: u64 = 3;

/// A tmpfs mounted at a directory, unmounted when dropped (lazily, in case a process that is
/// being killed still holds a file in it).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` (with a note) when this process may not mount.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Tmpfs { dir: dir.to_path_buf() }),
            Ok(output) => {
                eprintln!(
                    "note: skipping the disk-full test: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("note: skipping the disk-full test: cannot run mount: {error}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes zeros into `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let block = vec![0u8; chunk];
        while file.write_all(&block).is_ok() {
            written += chunk as u64;
        }
    }
    // Whatever is buffered may fail too; the point is that the device is full.
    let _ = file.sync_all();
    written
}

/// What the hospitals saw: a receipt for some ids, an error (unknown outcome) for others.
#[derive(Debug, Default)]
struct Outcomes {
    acknowledged: BTreeMap<String, Receipt>,
    unknown: BTreeMap<String, (Code, String)>,
}

/// The gRPC health of the node at `addr` (the server as a whole, service "").
async fn grpc_health(cluster: &LocalCluster, province: u32) -> Result<i32, tonic::Status> {
    exchange_pki::install_crypto_provider();
    let paths = PkiLayout::paths_of(&cluster.certs_dir, PeerIdentity::Bureau(p(province)));
    let ca = PkiLayout::ca_paths(&cluster.certs_dir).cert;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name(format!("node.{province}.exchange"))
        .identity(Identity::from_pem(
            std::fs::read(paths.cert).unwrap(),
            std::fs::read(paths.key).unwrap(),
        ));
    let channel = Endpoint::from_shared(format!("https://{}", cluster.nodes[&p(province)].addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await?;
    Ok(reply.into_inner().status)
}

/// `GET /healthz` on the node's metrics listener: status line and body.
fn healthz(cluster: &LocalCluster, province: u32) -> String {
    use std::io::Read as _;
    let addr = cluster.nodes[&p(province)].metrics_addr.unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn says_why(message: &str) -> bool {
    let message = message.to_lowercase();
    ["no space left", "flush", "store", "sled"]
        .iter()
        .any(|word| message.contains(word))
}

fn conn_of(c: &mut Conns, province: u32) -> &mut BureauConn {
    match province {
        BEIJING => &mut c.beijing,
        CHONGQING => &mut c.chongqing,
        _ => &mut c.sichuan,
    }
}

/// The coordinator's disk fills up under a steady stream of settlements: it stops
/// acknowledging with UNAVAILABLE and the reason, its health turns NOT_SERVING, its log says
/// why, and nothing it acknowledged is lost: after the filler is removed and the node is
/// restarted, every id asked again answers the receipt first given (or, for an id whose answer
/// was lost, one receipt), and every balance equals the model built from those receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_disk_fills_up_stops_acknowledging_loses_nothing_and_recovers() {
    disk_fills_up(CHONGQING).await;
}

/// The same with a participant (the sons' node): it stops voting and acknowledging, the
/// coordinator settles without it (its legs time out), and after its restart every hold it
/// had resolves and every balance equals the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_disk_fills_up_stops_acknowledging_loses_nothing_and_recovers() {
    disk_fills_up(BEIJING).await;
}

async fn disk_fills_up(faulty: u32) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data").join(p(faulty).to_string());
    let Some(_tmpfs) = Tmpfs::mount(&data_dir, TMPFS_SIZE) else {
        return;
    };
    let options = ClusterOptions {
        extra_config: "\n[protocol]\nvote_timeout_ms = 1000\nhold_timeout_ms = 4000\ncommit_margin_ms = 1500\nquery_retry_ms = 500\nresend_initial_ms = 200\nresend_max_ms = 1000\n".into(),
        metrics: true,
        log_level: "info".into(),
        ..ClusterOptions::default()
    };
    let mut cluster = LocalCluster::launch(&exe(), dir.path(), &[p(BEIJING), p(CHONGQING), p(SICHUAN)], &options)
        .await
        .unwrap();
    let log_path = cluster.nodes[&p(faulty)].log_path.clone();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut c = conns(&cluster).await;
    let mut model = Model::default();
    let mut patients: Vec<PersonId> = Vec::new();
    let mut people: BTreeMap<u32, PersonId> = BTreeMap::new();
    for serial in 50..54 {
        let f = family(&mut c, serial, Limits::default()).await;
        model.open(f.grandmother, p(CHONGQING), yuan(50));
        model.open(f.son, p(BEIJING), yuan(1000));
        model.open(f.daughter, p(SICHUAN), yuan(800));
        patients.push(f.grandmother);
        people.insert(BEIJING, f.son);
        people.insert(CHONGQING, f.grandmother);
        people.insert(SICHUAN, f.daughter);
    }
    let someone_there = people[&faulty];

    // Hospitals: each sends settlements one after another, ids never reused, until told to
    // stop; every answer is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let mut hospitals = Vec::new();
    for (h, patient) in patients.iter().copied().enumerate() {
        let mut conn = c.chongqing.clone();
        let stop = stop.clone();
        hospitals.push(tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("S-DISK-{h}-{n}");
                match conn
                    .call(ClientRequest::Settle(settle_request(&id, patient, yuan(PAY))))
                    .await
                {
                    Ok(ClientReply::Settled(receipt)) => {
                        outcomes.acknowledged.insert(id, receipt);
                    }
                    Ok(other) => panic!("{id}: {other:?}"),
                    Err(status) => {
                        outcomes
                            .unknown
                            .insert(id, (status.code(), status.message().to_string()));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        grpc_health(&cluster, faulty).await.unwrap(),
        ServingStatus::Serving as i32
    );

    // The disk fills up.
    let filler = data_dir.join("filler");
    let filled = fill(&filler);
    eprintln!("{faulty}: filler of {filled} bytes");

    // The node must stop acknowledging and say why, within a bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    let failure = loop {
        match conn_of(&mut c, faulty).account(&someone_there).await {
            Err(status) if status.code() == Code::Unavailable && says_why(status.message()) => break status,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop acknowledging with a reason; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{faulty}: refusal: {}", failure.message());
    // Writes are refused the same way, at once, not by a deadline.
    let started = Instant::now();
    let status = conn_of(&mut c, faulty)
        .call(ClientRequest::Credit {
            credit: CreditId::new("C-DISK-PROBE").unwrap(),
            person: someone_there,
            amount: yuan(1),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(says_why(status.message()), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once");
    // Health says so too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while grpc_health(&cluster, faulty).await.unwrap() != ServingStatus::NotServing as i32 {
        assert!(Instant::now() < deadline, "gRPC health still SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = healthz(&cluster, faulty);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(says_why(&answer), "{answer}");
    let stopped_log = log();
    assert!(stopped_log.contains("node stops acknowledging"), "{stopped_log}");
    assert!(says_why(&stopped_log), "{stopped_log}");
    assert!(!stopped_log.contains("panicked"), "{stopped_log}");
    assert_eq!(
        stopped_log.matches("node stops acknowledging").count(),
        1,
        "said once: {stopped_log}"
    );

    // The load goes on a little against the stopped node, then stops.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Outcomes::default();
    for hospital in hospitals {
        let mut done = hospital.await.unwrap();
        outcomes.acknowledged.append(&mut done.acknowledged);
        outcomes.unknown.append(&mut done.unknown);
    }
    eprintln!(
        "{faulty}: {} settlements acknowledged, {} with unknown outcome; refusals: {:?}",
        outcomes.acknowledged.len(),
        outcomes.unknown.len(),
        outcomes
            .unknown
            .values()
            .map(|(code, _)| format!("{code:?}"))
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(outcomes.acknowledged.len() >= 10, "load ran before the fault");
    if faulty == CHONGQING {
        assert!(!outcomes.unknown.is_empty(), "the fault hit the load");
    } else {
        let faulty_account = |id: &PersonId| model.balances[id].0 == p(faulty);
        assert!(
            outcomes.acknowledged.values().any(|r| r
                .not_paying
                .iter()
                .any(|n| faulty_account(&n.grantor) && n.reason == Refusal::Timeout)),
            "the coordinator settled without the stopped participant"
        );
    }
    for (id, (code, message)) in &outcomes.unknown {
        // Once the node stopped, it says so; a request cut off by the fault itself may also
        // run into its deadline. Never a business answer for what it could not make durable.
        assert!(
            matches!(code, Code::Unavailable | Code::DeadlineExceeded),
            "{id}: {code:?} {message}"
        );
    }

    // Space returns; the node is restarted (sled keeps an I/O error until it is reopened).
    std::fs::remove_file(&filler).unwrap();
    cluster.kill9(p(faulty)).unwrap();
    cluster.start(p(faulty)).unwrap();
    cluster.wait_ready(p(faulty)).await.unwrap();
    *conn_of(&mut c, faulty) = cluster.conn(p(faulty)).await.unwrap();
    assert_eq!(
        grpc_health(&cluster, faulty).await.unwrap(),
        ServingStatus::Serving as i32
    );
    assert!(healthz(&cluster, faulty).starts_with("HTTP/1.1 200"));

    // Every acknowledged settlement is still decided the same way; every other id gets one
    // answer now (presumed abort, then settled afresh, or its decision if it made it).
    let mut ids: Vec<(String, PersonId)> = Vec::new();
    for id in outcomes.acknowledged.keys().chain(outcomes.unknown.keys()) {
        let h: usize = id.split('-').nth(2).unwrap().parse().unwrap();
        ids.push((id.clone(), patients[h]));
    }
    for (id, patient) in &ids {
        let r = receipt(settle(&mut c.chongqing, id, *patient, yuan(PAY)).await);
        if let Some(first) = outcomes.acknowledged.get(id) {
            assert_eq!(&r, first, "{id}: an acknowledged settlement changed after the fault");
        }
        model.apply(&r);
    }
    model.check(&mut c, Duration::from_secs(30)).await;
    // And it takes new work.
    let reply = conn_of(&mut c, faulty)
        .call(ClientRequest::Credit {
            credit: CreditId::new("C-DISK-AFTER").unwrap(),
            person: someone_there,
            amount: yuan(1),
        })
        .await
        .unwrap();
    assert!(!matches!(reply, ClientReply::Error(_)), "{reply:?}");
    if let Some(entry) = model.balances.get_mut(&someone_there) {
        entry.1 += yuan(1).fen();
    }
    let r = receipt(settle(&mut c.chongqing, "S-DISK-AFTER", patients[0], yuan(PAY)).await);
    model.apply(&r);
    model.check(&mut c, Duration::from_secs(30)).await;
    cluster.stop_all();
}
