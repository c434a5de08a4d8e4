//! Identity and authority against real node processes (issue 9): a peer node may act only on
//! legs it coordinates and read only its own side; another province's bureau reads nothing;
//! expired, not-yet-valid and revoked certificates are refused; a node refuses to start with a
//! key file others may read; no secret key is ever written to a node's log, even at debug.
//!
//! What the pki crate already proves in-process (`crates/pki/tests/mtls.rs`: handshake and
//! identity parsing of expired/revoked certificates, key-file modes) is checked here at the
//! process level: the real `exchange start`, its configuration and its services.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use exchange_core::message::{ClientReply, ClientRequest, PeerMessage};
use exchange_core::records::{JournalEntry, JournalKind};
use exchange_core::{Account, LegId, LegScope, Limits, Money, PersonId, RefundId, SettlementId};
use exchange_node::cluster::{ClusterOptions, LocalCluster, NodeConfigText, free_port};
use exchange_pki::time::{Duration as TimeDuration, OffsetDateTime};
use exchange_pki::{
    DevCa, ExistingCa, IssuedCertificate, PeerIdentity, PkiLayout, Validity, init_dev_pki, load_own_certificate,
};
use exchange_proto::pb;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Protocol timings of these tests: like `common::cluster`, but a coordinator waits long
/// enough for a missing vote that a settlement can be held in flight on purpose.
const SLOW_VOTES: &str = "\n[protocol]\nvote_timeout_ms = 8000\nrounds_max = 1\nhold_timeout_ms = 30000\ncommit_margin_ms = 1500\nquery_retry_ms = 500\nresend_initial_ms = 200\nresend_max_ms = 1000\n";

async fn launch(dir: &Path, extra_config: &str, log_level: &str) -> LocalCluster {
    let options = ClusterOptions {
        extra_config: extra_config.into(),
        log_level: log_level.into(),
        ..ClusterOptions::default()
    };
    LocalCluster::launch(&exe(), dir, &[p(BEIJING), p(CHONGQING), p(SICHUAN)], &options)
        .await
        .unwrap()
}

/// A channel to the node at `addr` (which must prove to be `node.<server>.exchange`),
/// presenting `identity` (certificate and key PEM) and trusting the cluster's CA.
fn channel(addr: &str, server: u32, identity: (Vec<u8>, Vec<u8>), ca: &Path) -> Channel {
    exchange_pki::install_crypto_provider();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name(format!("node.{server}.exchange"))
        .identity(Identity::from_pem(identity.0, identity.1));
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// The certificate and key files the cluster generated for `identity`.
fn files_of(cluster: &LocalCluster, identity: PeerIdentity) -> (Vec<u8>, Vec<u8>) {
    let paths = PkiLayout::paths_of(&cluster.certs_dir, identity);
    (std::fs::read(paths.cert).unwrap(), std::fs::read(paths.key).unwrap())
}

fn pem_of(issued: &IssuedCertificate) -> (Vec<u8>, Vec<u8>) {
    (
        issued.cert_pem.clone().into_bytes(),
        issued.key_pem.clone().into_bytes(),
    )
}

/// A channel to the node of `server` as `identity` (one of the cluster's own certificates).
fn as_identity(cluster: &LocalCluster, server: u32, identity: PeerIdentity) -> Channel {
    let addr = cluster.nodes[&p(server)].addr.to_string();
    let ca = PkiLayout::ca_paths(&cluster.certs_dir).cert;
    channel(&addr, server, files_of(cluster, identity), &ca)
}

/// Sends `messages` to the node of `server` as the node of another province, in one batch each.
async fn deliver_as(cluster: &LocalCluster, server: u32, sender: u32, messages: Vec<PeerMessage>) {
    let mut client =
        pb::exchange_client::ExchangeClient::new(as_identity(cluster, server, PeerIdentity::Node(p(sender))));
    for batch in exchange_proto::peer_batches_to_wire(messages) {
        // Accepted for delivery: what a peer may do is decided by the core, per message.
        client.deliver(batch).await.unwrap();
    }
}

/// Every journal entry of the node of `server` that concerns legs `reader` shares with it,
/// read over `Exchange.Journal` as `reader`'s node.
async fn journal_as(cluster: &LocalCluster, server: u32, reader: u32) -> Vec<JournalEntry> {
    let mut client =
        pb::exchange_client::ExchangeClient::new(as_identity(cluster, server, PeerIdentity::Node(p(reader))));
    let mut entries = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = client
            .journal(pb::JournalQuery { after_seq, from_ms: 0 })
            .await
            .unwrap()
            .into_inner();
        for record in page.records {
            entries.push(record.checked().unwrap().1);
        }
        if page.done {
            return entries;
        }
        after_seq = page.scanned_to_seq;
    }
}

fn balance_and_held(account: &Account) -> (Money, Money) {
    (account.balance, account.held)
}

async fn wait_for_hold(conn: &mut exchange_node::client::BureauConn, person: &PersonId) -> Account {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = account(conn, person).await;
        if !now.held.is_zero() {
            return now;
        }
        assert!(Instant::now() < deadline, "no hold appeared on {person}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sichuan's node certificate is a real, valid peer certificate, but Chongqing coordinates the
/// grandmother's settlements: every prepare/commit/abort/credit Sichuan's certificate sends
/// Beijing about Chongqing's legs on the son's account is ignored, while the settlement is in
/// flight (a real hold) and after it is decided (a real debit). Balances follow the receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_prepare_commit_abort_or_credit_legs_it_does_not_coordinate() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = launch(dir.path(), SLOW_VOTES, "warn").await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 41, Limits::default()).await;
    let mut model = Model::default();
    model.open(f.grandmother, p(CHONGQING), yuan(50));
    model.open(f.son, p(BEIJING), yuan(1000));
    model.open(f.daughter, p(SICHUAN), yuan(800));

    // In flight: Sichuan's node is paused, so Chongqing waits for the daughter's vote while the
    // son's hold in Beijing is real and undecided.
    cluster.pause(p(SICHUAN), true).unwrap();
    let mut hospital = c.chongqing.clone();
    let grandmother = f.grandmother;
    let live = tokio::spawn(async move {
        loop {
            match hospital
                .call(ClientRequest::Settle(settle_request("S-LIVE", grandmother, yuan(500))))
                .await
            {
                Ok(reply) => return reply,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    let held = wait_for_hold(&mut c.beijing, &f.son).await;
    // The leg's attempt is the incarnation of the coordinator shard that owns the settlement
    // (one per shard at a first start) and its index its place in the plan: cover them all.
    let mut forged = Vec::new();
    let mut forged_legs = Vec::new();
    for attempt in 1..=4 {
        for index in 0..4 {
            let leg = LegId {
                coordinator: p(CHONGQING),
                scope: LegScope::Pay {
                    settlement: SettlementId::new("S-LIVE").unwrap(),
                    attempt,
                },
                index,
                account: f.son,
            };
            forged.push(PeerMessage::Commit {
                leg: leg.clone(),
                amount: held.held,
            });
            forged_legs.push(leg.clone());
            forged.push(PeerMessage::Abort { leg });
        }
    }
    deliver_as(&cluster, BEIJING, SICHUAN, forged).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        balance_and_held(&account(&mut c.beijing, &f.son).await),
        balance_and_held(&held),
        "a forged commit or abort changed an in-flight hold"
    );
    cluster.pause(p(SICHUAN), false).unwrap();
    let r = receipt(live.await.unwrap());
    model.apply(&r);
    model.check(&mut c, Duration::from_secs(20)).await;

    // Decided: the son's leg is debited. Chongqing (its coordinator) may read which leg it was.
    let debits: Vec<LegId> = journal_as(&cluster, BEIJING, CHONGQING)
        .await
        .into_iter()
        .filter(|entry| entry.kind == JournalKind::Debit && entry.account == Some(f.son))
        .filter_map(|entry| entry.leg)
        .collect();
    assert_eq!(debits.len(), 1, "{debits:?}");
    let son_leg = debits[0].clone();
    assert!(
        forged_legs.contains(&son_leg),
        "the forged messages named the real leg {son_leg}"
    );
    let before = account(&mut c.beijing, &f.son).await;
    let refund_leg = LegId {
        coordinator: p(CHONGQING),
        scope: LegScope::Refund {
            settlement: SettlementId::new("S-LIVE").unwrap(),
            refund: RefundId::new("R-FORGED").unwrap(),
        },
        index: 0,
        account: f.son,
    };
    let forged = vec![
        PeerMessage::Abort { leg: son_leg.clone() },
        PeerMessage::Commit {
            leg: son_leg.clone(),
            amount: yuan(1000),
        },
        // A credit-back along the real debit would mint money for the son.
        PeerMessage::Credit {
            leg: refund_leg,
            original: son_leg.clone(),
            amount: yuan(100),
        },
    ];
    deliver_as(&cluster, BEIJING, SICHUAN, forged).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        balance_and_held(&account(&mut c.beijing, &f.son).await),
        balance_and_held(&before),
        "a forged message changed a decided leg"
    );
    model.check(&mut c, Duration::from_secs(5)).await;
    let after: Vec<JournalEntry> = journal_as(&cluster, BEIJING, CHONGQING).await;
    assert!(
        after.iter().all(|entry| entry.kind != JournalKind::RefundCredit),
        "no credit-back was journaled: {after:?}"
    );
}

/// The Bureau API answers only the node's own province's bureau: another province's bureau and
/// every node certificate (a peer, or the node's own) get PERMISSION_DENIED on every read;
/// the monitor feed refuses other provinces too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_or_another_provinces_bureau_cannot_read_a_nodes_records() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 42, Limits::default()).await;
    receipt(settle(&mut c.chongqing, "S-READ", f.grandmother, yuan(500)).await);
    let person = f.grandmother.to_string();
    for identity in [
        PeerIdentity::Node(p(SICHUAN)),
        PeerIdentity::Node(p(BEIJING)),
        PeerIdentity::Bureau(p(SICHUAN)),
        PeerIdentity::Node(p(CHONGQING)),
    ] {
        let mut bureau = pb::bureau_client::BureauClient::new(as_identity(&cluster, CHONGQING, identity));
        let mut refused = Vec::new();
        refused.push((
            "get_account",
            bureau
                .get_account(pb::GetAccountRequest { person: person.clone() })
                .await
                .map(drop),
        ));
        refused.push((
            "list_bindings",
            bureau
                .list_bindings(pb::ListBindingsRequest { person: person.clone() })
                .await
                .map(drop),
        ));
        refused.push((
            "records",
            bureau
                .records(pb::RecordsRequest {
                    person: person.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ));
        refused.push((
            "clearing",
            bureau.clearing(pb::ClearingRequest::default()).await.map(drop),
        ));
        refused.push((
            "reconcile",
            bureau
                .reconcile(pb::ReconcileRequest {
                    peer: SICHUAN,
                    ..Default::default()
                })
                .await
                .map(drop),
        ));
        refused.push((
            "audit_log",
            bureau.audit_log(pb::AuditRequest::default()).await.map(drop),
        ));
        refused.push((
            "verify_audit",
            bureau.verify_audit(pb::VerifyAuditRequest::default()).await.map(drop),
        ));
        for (call, result) in refused {
            let status = result.expect_err(call);
            assert_eq!(status.code(), Code::PermissionDenied, "{identity} {call}: {status:?}");
        }
        if identity.province() != Some(p(CHONGQING)) {
            let mut monitor = pb::monitor_client::MonitorClient::new(as_identity(&cluster, CHONGQING, identity));
            let status = monitor.status(pb::StatusRequest {}).await.unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{identity} status: {status:?}");
            let status = monitor.feed(pb::FeedRequest { after_seq: 0 }).await.unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{identity} feed: {status:?}");
        }
    }
    // The node's own bureau reads the same things.
    let mut own =
        pb::bureau_client::BureauClient::new(as_identity(&cluster, CHONGQING, PeerIdentity::Bureau(p(CHONGQING))));
    own.get_account(pb::GetAccountRequest { person }).await.unwrap();
}

/// A certificate signed by the cluster's own CA but outside its validity, in the past or in
/// the future, does not get a call through: not a read, not a write, not a peer message. A
/// fresh certificate from the same CA does (the CA is not what is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 43, Limits::default()).await;
    let ca = DevCa::load(&PkiLayout::ca_paths(&cluster.certs_dir)).unwrap();
    let ca_path = PkiLayout::ca_paths(&cluster.certs_dir).cert;
    let addr = cluster.nodes[&p(CHONGQING)].addr.to_string();
    let now = OffsetDateTime::now_utc();
    let expired = Validity::new(now - TimeDuration::days(30), now - TimeDuration::days(1)).unwrap();
    let early = Validity::new(now + TimeDuration::days(1), now + TimeDuration::days(30)).unwrap();
    let newcomer = adult(CHONGQING, 97);
    let open = || pb::OpenAccountRequest {
        person: newcomer.to_string(),
        name: "X".into(),
        scheme: 1,
        balance_fen: 100,
    };
    for (what, validity) in [("expired", expired), ("not yet valid", early)] {
        let bureau = ca.issue(PeerIdentity::Bureau(p(CHONGQING)), validity).unwrap();
        let mut client = pb::bureau_client::BureauClient::new(channel(&addr, CHONGQING, pem_of(&bureau), &ca_path));
        let status = client
            .get_account(pb::GetAccountRequest {
                person: f.grandmother.to_string(),
            })
            .await
            .unwrap_err();
        assert_ne!(status.code(), Code::Ok, "{what} bureau read");
        client.open_account(open()).await.expect_err(what);
        let node = ca.issue(PeerIdentity::Node(p(SICHUAN)), validity).unwrap();
        let mut peer = pb::exchange_client::ExchangeClient::new(channel(&addr, CHONGQING, pem_of(&node), &ca_path));
        peer.deliver(pb::PeerBatch { messages: vec![] }).await.expect_err(what);
        peer.journal(pb::JournalQuery::default()).await.expect_err(what);
    }
    assert!(
        c.chongqing.account(&newcomer).await.unwrap().is_none(),
        "a refused open changed nothing"
    );
    // Control: the same CA's fresh certificate gets through.
    let fresh = ca
        .issue(PeerIdentity::Bureau(p(CHONGQING)), Validity::days_from(now, 1).unwrap())
        .unwrap();
    let mut client = pb::bureau_client::BureauClient::new(channel(&addr, CHONGQING, pem_of(&fresh), &ca_path));
    client
        .get_account(pb::GetAccountRequest {
            person: f.grandmother.to_string(),
        })
        .await
        .unwrap();
}

/// A bureau certificate and a peer node's certificate, both valid and working, are put in the
/// node's revocation list (`[tls] revoked_serials`, any spelling of the serial) and the node
/// restarted: both are refused (UNAUTHENTICATED, "revoked"), nothing changes, and certificates
/// not in the list keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 44, Limits::default()).await;
    let ca = DevCa::load(&PkiLayout::ca_paths(&cluster.certs_dir)).unwrap();
    let ca_path = PkiLayout::ca_paths(&cluster.certs_dir).cert;
    let addr = cluster.nodes[&p(CHONGQING)].addr.to_string();
    let spare = ca
        .issue(
            PeerIdentity::Bureau(p(CHONGQING)),
            Validity::days_from(OffsetDateTime::now_utc(), 5).unwrap(),
        )
        .unwrap();
    let read = pb::GetAccountRequest {
        person: f.grandmother.to_string(),
    };
    let spare_client = || pb::bureau_client::BureauClient::new(channel(&addr, CHONGQING, pem_of(&spare), &ca_path));
    spare_client().get_account(read.clone()).await.unwrap();
    let sichuan_node =
        load_own_certificate(&PkiLayout::paths_of(&cluster.certs_dir, PeerIdentity::Node(p(SICHUAN))).cert).unwrap();
    let mut sichuan_peer =
        pb::exchange_client::ExchangeClient::new(as_identity(&cluster, CHONGQING, PeerIdentity::Node(p(SICHUAN))));
    sichuan_peer.deliver(pb::PeerBatch { messages: vec![] }).await.unwrap();

    // Upper case with colons for one, as an operator might paste it from `openssl x509`.
    let spelled: String = spare
        .serial_hex
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8(pair.to_vec()).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let config_path = cluster.nodes[&p(CHONGQING)].config_path.clone();
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    assert!(!config.contains("[tls]"), "{config}");
    config.push_str(&format!(
        "\n[tls]\nrevoked_serials = [\"{spelled}\", \"{}\"]\n",
        sichuan_node.serial_hex
    ));
    std::fs::write(&config_path, config).unwrap();
    cluster.kill9(p(CHONGQING)).unwrap();
    cluster.start(p(CHONGQING)).unwrap();
    cluster.wait_ready(p(CHONGQING)).await.unwrap();
    c.chongqing = cluster.conn(p(CHONGQING)).await.unwrap();

    let status = spare_client().get_account(read.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    let newcomer = adult(CHONGQING, 98);
    let status = spare_client()
        .open_account(pb::OpenAccountRequest {
            person: newcomer.to_string(),
            name: "X".into(),
            scheme: 1,
            balance_fen: 100,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut sichuan_peer =
        pb::exchange_client::ExchangeClient::new(as_identity(&cluster, CHONGQING, PeerIdentity::Node(p(SICHUAN))));
    let status = sichuan_peer
        .deliver(pb::PeerBatch { messages: vec![] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    let status = sichuan_peer.journal(pb::JournalQuery::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Not revoked: the bureau's own certificate and Beijing's node.
    assert!(c.chongqing.account(&newcomer).await.unwrap().is_none());
    assert_eq!(account(&mut c.chongqing, &f.grandmother).await.balance, yuan(50));
    let mut beijing_peer =
        pb::exchange_client::ExchangeClient::new(as_identity(&cluster, CHONGQING, PeerIdentity::Node(p(BEIJING))));
    beijing_peer.deliver(pb::PeerBatch { messages: vec![] }).await.unwrap();
}

/// Runs `exchange start --config CONFIG` until it exits (at most 30 s); returns its exit code
/// and stderr.
fn start_and_wait(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(exe())
        .arg("start")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "still running after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `exchange start` refuses a node key that group or others may read or write: exit code 2,
/// a reason naming the file and the fix, the key never printed; with mode 0600 it starts.
#[test]
fn node_start_refuses_a_key_file_open_to_group_or_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let validity = Validity::days_from(OffsetDateTime::now_utc(), 5).unwrap();
    init_dev_pki(&certs, &[p(BEIJING)], validity, ExistingCa::Refuse).unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("beijing.toml");
    let text = NodeConfigText {
        province: p(BEIJING),
        addr: free_port().unwrap(),
        metrics: None,
        data_dir: &data,
        certs_dir: &certs,
        peers: &[],
        log_level: "debug",
        extra: "",
    }
    .render();
    std::fs::write(&config, text).unwrap();
    let key = PkiLayout::paths_of(&certs, PeerIdentity::Node(p(BEIJING))).key;
    let key_text = std::fs::read_to_string(&key).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, stderr) = start_and_wait(&config);
        assert_eq!(code, Some(2), "mode {mode:o}: {stderr}");
        assert!(stderr.contains(&key.display().to_string()), "{stderr}");
        assert!(stderr.contains(&format!("{mode:04o}")), "{stderr}");
        assert!(stderr.contains("chmod 600"), "{stderr}");
        assert_no_key_material(&stderr, &key_text, "stderr of a refused start");
        assert!(!data.exists(), "the store was not opened");
    }
}

/// Fails if `text` holds a PEM private key or any line of `key_pem`'s body, as text or as the
/// `Debug` rendering of its bytes (`[45, 45, ...]`: how `tonic`'s `Identity` and
/// `ClientTlsConfig` would print the key if someone logged them with `?`).
fn assert_no_key_material(text: &str, key_pem: &str, what: &str) {
    assert!(!text.contains("PRIVATE KEY"), "{what} holds a PEM private key");
    let as_debug_bytes = |bytes: &[u8]| {
        let rendered = format!("{bytes:?}");
        rendered.trim_start_matches('[').trim_end_matches(']').to_string()
    };
    assert!(
        !text.contains(&as_debug_bytes(b"-----BEGIN")),
        "{what} holds the bytes of a PEM block"
    );
    for line in key_pem
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
    {
        assert!(!text.contains(line), "{what} holds a line of a private key");
        let head = line.as_bytes().get(..16).unwrap_or_default();
        assert!(
            !text.contains(&as_debug_bytes(head)),
            "{what} holds the bytes of a private key"
        );
    }
}

/// Three nodes at debug level do real work (accounts, bindings, a settlement across three
/// provinces, refused connections, a restart): no node's log holds a private key, its PEM
/// header, or any line of any key file the cluster has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_key_is_logged_even_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = launch(
        dir.path(),
        "\n[protocol]\nvote_timeout_ms = 1000\nhold_timeout_ms = 4000\ncommit_margin_ms = 1500\n",
        "debug",
    )
    .await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 45, Limits::default()).await;
    receipt(settle(&mut c.chongqing, "S-LOG", f.grandmother, yuan(500)).await);
    // Refused callers: another province's bureau, and a certificate from another CA.
    let mut wrong =
        pb::bureau_client::BureauClient::new(as_identity(&cluster, CHONGQING, PeerIdentity::Bureau(p(BEIJING))));
    wrong
        .get_account(pb::GetAccountRequest {
            person: f.grandmother.to_string(),
        })
        .await
        .unwrap_err();
    let rogue = DevCa::generate(Validity::days_from(OffsetDateTime::now_utc(), 1).unwrap())
        .unwrap()
        .issue(
            PeerIdentity::Bureau(p(CHONGQING)),
            Validity::days_from(OffsetDateTime::now_utc(), 1).unwrap(),
        )
        .unwrap();
    let addr = cluster.nodes[&p(CHONGQING)].addr.to_string();
    let ca_path = PkiLayout::ca_paths(&cluster.certs_dir).cert;
    pb::bureau_client::BureauClient::new(channel(&addr, CHONGQING, pem_of(&rogue), &ca_path))
        .get_account(pb::GetAccountRequest {
            person: f.grandmother.to_string(),
        })
        .await
        .unwrap_err();
    // A restart logs start-up (configuration, certificates, store) once more.
    cluster.kill9(p(BEIJING)).unwrap();
    cluster.start(p(BEIJING)).unwrap();
    cluster.wait_ready(p(BEIJING)).await.unwrap();
    let reply = cluster
        .conn(p(BEIJING))
        .await
        .unwrap()
        .call(ClientRequest::Credit {
            person: f.son,
            amount: yuan(1),
            credit: exchange_core::CreditId::new("C-LOG").unwrap(),
        })
        .await
        .unwrap();
    assert!(!matches!(reply, ClientReply::Error(_)), "{reply:?}");
    cluster.stop_all();

    let mut keys = vec![std::fs::read_to_string(PkiLayout::ca_paths(&cluster.certs_dir).key).unwrap()];
    for province in [BEIJING, CHONGQING, SICHUAN] {
        for identity in [PeerIdentity::Node(p(province)), PeerIdentity::Bureau(p(province))] {
            keys.push(std::fs::read_to_string(PkiLayout::paths_of(&cluster.certs_dir, identity).key).unwrap());
        }
    }
    let debug_checked = std::env::var_os("RUST_LOG").is_none();
    for node in cluster.nodes.values() {
        let log = std::fs::read_to_string(&node.log_path).unwrap();
        if debug_checked {
            assert!(log.contains("DEBUG"), "{} logged at debug level", node.province);
        }
        for key in &keys {
            assert_no_key_material(&log, key, &node.log_path.display().to_string());
        }
    }
    if !debug_checked {
        eprintln!("note: RUST_LOG is set and overrides the nodes' configured debug level");
    }
}
