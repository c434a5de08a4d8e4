//! Real processes on loopback: three province nodes over mutual-TLS gRPC, sled on disk.
//! Settlements across provinces, identity and authority, kill -9 recovery, idempotency,
//! revocation while the grantee's node is down.

mod common;

use std::time::Duration;

use common::*;
use exchange_core::message::{ClientReply, PeerMessage, Prepare};
use exchange_core::{LegId, LegScope, Limits, Money, Refusal, SettlementId};
use exchange_pki::{ExistingCa, PeerIdentity, PkiLayout, Validity, init_dev_pki};
use exchange_proto::pb;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_province_settlement_with_two_grantors_is_right_on_all_three_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let f = family(
        &mut c,
        1,
        Limits {
            per_settlement: Some(yuan(300)),
            monthly: None,
        },
    )
    .await;
    let r = receipt(settle(&mut c.chongqing, "S-1", f.grandmother, yuan(500)).await);
    assert_eq!(r.own_account_paid, yuan(50));
    assert_eq!(r.mutual_aid.len(), 2);
    assert_eq!((r.mutual_aid[0].grantor, r.mutual_aid[0].amount), (f.son, yuan(300)));
    assert_eq!(
        (r.mutual_aid[1].grantor, r.mutual_aid[1].amount),
        (f.daughter, yuan(150))
    );
    assert_eq!(r.cash_paid, Money::ZERO);
    let mut model = Model::default();
    model.open(f.grandmother, p(CHONGQING), yuan(50));
    model.open(f.son, p(BEIJING), yuan(1000));
    model.open(f.daughter, p(SICHUAN), yuan(800));
    model.apply(&r);
    model.check(&mut c, Duration::from_secs(10)).await;
    assert_eq!(account(&mut c.beijing, &f.son).await.balance, yuan(700));
    assert_eq!(account(&mut c.sichuan, &f.daughter).await.balance, yuan(650));
    assert_eq!(account(&mut c.chongqing, &f.grandmother).await.balance, Money::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_settle_returns_the_same_receipt_and_another_amount_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 2, Limits::default()).await;
    let first = settle(&mut c.chongqing, "S-dup", f.grandmother, yuan(200)).await;
    let again = settle(&mut c.chongqing, "S-dup", f.grandmother, yuan(200)).await;
    assert_eq!(first, again);
    let other = settle(&mut c.chongqing, "S-dup", f.grandmother, yuan(201)).await;
    match other {
        ClientReply::Error(error) => assert_eq!(error.reason, "settlement_id_reused"),
        other => panic!("{other:?}"),
    }
    let mut model = Model::default();
    model.open(f.grandmother, p(CHONGQING), yuan(50));
    model.open(f.son, p(BEIJING), yuan(1000));
    model.open(f.daughter, p(SICHUAN), yuan(800));
    model.apply(&receipt(first));
    model.check(&mut c, Duration::from_secs(10)).await;
}

async fn raw_channel(
    addr: &str,
    server: &str,
    identity: Option<(&std::path::Path, &std::path::Path)>,
    ca: &std::path::Path,
) -> tonic::transport::Channel {
    exchange_pki::install_crypto_provider();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name(server.to_string());
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_right_certificate_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 3, Limits::default()).await;
    let chongqing = cluster.nodes[&p(CHONGQING)].addr.to_string();
    let sichuan = cluster.nodes[&p(SICHUAN)].addr.to_string();
    let certs = &cluster.certs_dir;
    let ca = PkiLayout::ca_paths(certs).cert;
    let request = || pb::GetAccountRequest {
        person: f.grandmother.to_string(),
    };

    // No client certificate at all.
    let channel = raw_channel(&chongqing, "node.500000.exchange", None, &ca).await;
    let status = pb::bureau_client::BureauClient::new(channel)
        .get_account(request())
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);

    // A certificate from another CA.
    let rogue = tempfile::tempdir().unwrap();
    let validity = Validity::days_from(exchange_pki::time::OffsetDateTime::now_utc(), 5).unwrap();
    init_dev_pki(rogue.path(), &[p(CHONGQING)], validity, ExistingCa::Refuse).unwrap();
    let rogue_bureau = PkiLayout::paths_of(rogue.path(), PeerIdentity::Bureau(p(CHONGQING)));
    let channel = raw_channel(
        &chongqing,
        "node.500000.exchange",
        Some((&rogue_bureau.cert, &rogue_bureau.key)),
        &ca,
    )
    .await;
    let status = pb::bureau_client::BureauClient::new(channel.clone())
        .get_account(request())
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    let open = pb::OpenAccountRequest {
        person: adult(CHONGQING, 99).to_string(),
        name: "X".into(),
        scheme: 1,
        balance_fen: 100,
    };
    assert!(
        pb::bureau_client::BureauClient::new(channel)
            .open_account(open.clone())
            .await
            .is_err()
    );

    // Beijing's real bureau certificate may not operate Chongqing's node.
    let beijing_bureau = PkiLayout::paths_of(certs, PeerIdentity::Bureau(p(BEIJING)));
    let channel = raw_channel(
        &chongqing,
        "node.500000.exchange",
        Some((&beijing_bureau.cert, &beijing_bureau.key)),
        &ca,
    )
    .await;
    let status = pb::bureau_client::BureauClient::new(channel.clone())
        .open_account(open)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // ... nor speak the node-to-node protocol.
    let status = pb::exchange_client::ExchangeClient::new(channel)
        .deliver(pb::PeerBatch { messages: vec![] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Beijing's real node certificate tries to hold the daughter's money in Sichuan: once as
    // if it were Chongqing's coordinator, once for a binding whose grantee is not Beijing's.
    let beijing_node = PkiLayout::paths_of(certs, PeerIdentity::Node(p(BEIJING)));
    let channel = raw_channel(
        &sichuan,
        "node.510000.exchange",
        Some((&beijing_node.cert, &beijing_node.key)),
        &ca,
    )
    .await;
    let mut exchange = pb::exchange_client::ExchangeClient::new(channel);
    for coordinator in [CHONGQING, BEIJING] {
        let prepare = Prepare {
            leg: LegId {
                coordinator: p(coordinator),
                scope: LegScope::Pay {
                    settlement: SettlementId::new(format!("FORGED-{coordinator}")).unwrap(),
                    attempt: 1,
                },
                index: 0,
                account: f.daughter,
            },
            binding: Some(f.daughter_binding),
            patient: f.grandmother,
            amount_max: yuan(800),
            hold_timeout_ms: 60_000,
        };
        let batch = exchange_proto::peer_batches_to_wire(vec![PeerMessage::Prepare(prepare)]);
        exchange.deliver(batch.into_iter().next().unwrap()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let daughter = account(&mut c.sichuan, &f.daughter).await;
    assert_eq!(
        (daughter.balance, daughter.held),
        (yuan(800), Money::ZERO),
        "nothing held or debited"
    );
    assert!(
        c.chongqing.account(&adult(CHONGQING, 99)).await.unwrap().is_none(),
        "the refused open changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_participant_mid_settlement_then_restart_resolves_every_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let mut model = Model::default();
    let mut families = Vec::new();
    for serial in 10..16 {
        let f = family(&mut c, serial, Limits::default()).await;
        model.open(f.grandmother, p(CHONGQING), yuan(50));
        model.open(f.son, p(BEIJING), yuan(1000));
        model.open(f.daughter, p(SICHUAN), yuan(800));
        families.push(f);
    }
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let mut conn = c.chongqing.clone();
        let patient = families[(i % 6) as usize].grandmother;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 15)).await;
            let id = format!("S-P{i}");
            loop {
                // The hospital retries with the same id until it has an answer.
                match conn
                    .call(exchange_core::message::ClientRequest::Settle(settle_request(
                        &id,
                        patient,
                        yuan(20),
                    )))
                    .await
                {
                    Ok(reply) => return reply,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.kill9(p(BEIJING)).unwrap();
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.push(receipt(task.await.unwrap()));
    }
    assert!(
        receipts
            .iter()
            .any(|r| r.not_paying.iter().any(|n| n.reason == Refusal::Timeout)),
        "some legs to Beijing timed out"
    );
    cluster.start(p(BEIJING)).unwrap();
    cluster.wait_ready(p(BEIJING)).await.unwrap();
    c.beijing = cluster.conn(p(BEIJING)).await.unwrap();
    for r in &receipts {
        model.apply(r);
    }
    model.check(&mut c, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_coordinator_after_decisions_then_restart_settles_everything_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let mut model = Model::default();
    let mut families = Vec::new();
    for serial in 20..26 {
        let f = family(&mut c, serial, Limits::default()).await;
        model.open(f.grandmother, p(CHONGQING), yuan(50));
        model.open(f.son, p(BEIJING), yuan(1000));
        model.open(f.daughter, p(SICHUAN), yuan(800));
        families.push(f);
    }
    let ids: Vec<(String, exchange_core::PersonId)> = (0..60u64)
        .map(|i| (format!("S-C{i}"), families[(i % 6) as usize].grandmother))
        .collect();
    let mut tasks = Vec::new();
    for (i, (id, patient)) in ids.iter().cloned().enumerate() {
        let mut conn = c.chongqing.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i as u64 * 15)).await;
            conn.call(exchange_core::message::ClientRequest::Settle(settle_request(
                &id,
                patient,
                yuan(20),
            )))
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    cluster.kill9(p(CHONGQING)).unwrap();
    let mut answered = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Ok(ClientReply::Settled(_))) {
            answered += 1;
        }
    }
    assert!(
        answered > 0 && answered < ids.len(),
        "the kill landed mid-stream ({answered} answered)"
    );
    cluster.start(p(CHONGQING)).unwrap();
    cluster.wait_ready(p(CHONGQING)).await.unwrap();
    c.chongqing = cluster.conn(p(CHONGQING)).await.unwrap();
    // Every hospital asks again with the same id: a decided settlement answers its receipt, an
    // undecided one (presumed aborted) is settled afresh. Each id counts exactly once.
    for (id, patient) in &ids {
        let r = receipt(settle(&mut c.chongqing, id, *patient, yuan(20)).await);
        let again = receipt(settle(&mut c.chongqing, id, *patient, yuan(20)).await);
        assert_eq!(r, again);
        model.apply(&r);
    }
    model.check(&mut c, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_at_the_grantors_node_takes_effect_while_the_grantees_node_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 30, Limits::default()).await;
    cluster.kill9(p(CHONGQING)).unwrap();
    let reply = c
        .beijing
        .call(exchange_core::message::ClientRequest::Unbind { binding: f.son_binding })
        .await
        .unwrap();
    assert!(matches!(reply, ClientReply::Unbound { .. }), "{reply:?}");
    // At once on the grantor's node, with the grantee's node still down.
    let (as_grantor, _) = c.beijing.bindings(&f.son).await.unwrap();
    let son_binding = as_grantor.iter().find(|b| b.id == f.son_binding).unwrap();
    assert!(
        matches!(son_binding.status, exchange_core::BindingStatus::Revoked { .. }),
        "{son_binding:?}"
    );
    cluster.start(p(CHONGQING)).unwrap();
    cluster.wait_ready(p(CHONGQING)).await.unwrap();
    c.chongqing = cluster.conn(p(CHONGQING)).await.unwrap();
    let r = receipt(settle(&mut c.chongqing, "S-after-revoke", f.grandmother, yuan(500)).await);
    assert!(
        r.mutual_aid.iter().all(|part| part.grantor != f.son),
        "the son no longer pays"
    );
    let son = r.not_paying.iter().find(|n| n.grantor == f.son).unwrap();
    assert_eq!(son.reason, Refusal::BindingRevoked);
    assert_eq!(r.mutual_aid[0].grantor, f.daughter);
    let mut model = Model::default();
    model.open(f.grandmother, p(CHONGQING), yuan(50));
    model.open(f.son, p(BEIJING), yuan(1000));
    model.open(f.daughter, p(SICHUAN), yuan(800));
    model.apply(&r);
    model.check(&mut c, Duration::from_secs(15)).await;
    let _ = f.daughter_binding;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_node_cleanly_and_it_restarts_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 40, Limits::default()).await;
    let mut model = Model::default();
    model.open(f.grandmother, p(CHONGQING), yuan(50));
    model.open(f.son, p(BEIJING), yuan(1000));
    model.open(f.daughter, p(SICHUAN), yuan(800));
    for i in 0..5 {
        let r = receipt(settle(&mut c.chongqing, &format!("S-T{i}"), f.grandmother, yuan(30)).await);
        model.apply(&r);
    }
    model.check(&mut c, Duration::from_secs(15)).await;
    // The grantor's node stops on SIGTERM with exit code 0, well before the grace runs out.
    let status = cluster.terminate(p(BEIJING), Duration::from_secs(10)).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = std::fs::read_to_string(&cluster.nodes[&p(BEIJING)].log_path).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
    cluster.start(p(BEIJING)).unwrap();
    cluster.wait_ready(p(BEIJING)).await.unwrap();
    c.beijing = cluster.conn(p(BEIJING)).await.unwrap();
    // After the restart it pays again, and nothing was lost or doubled.
    let r = receipt(settle(&mut c.chongqing, "S-T-after", f.grandmother, yuan(30)).await);
    assert!(
        r.mutual_aid
            .iter()
            .any(|part| part.grantor == f.son || part.grantor == f.daughter)
    );
    model.apply(&r);
    model.check(&mut c, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_binds_on_one_node_get_distinct_ids_and_each_keeps_its_own_binding() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    // Many grantors of one node bind at once: they live in different account shards, which
    // must not hand out the same binding serial.
    let grantors: Vec<_> = (0..24u32).map(|i| adult(BEIJING, 100 + i)).collect();
    // Each grantor binds a relative of their own (a grantee may have only a few grantors).
    let pairs: Vec<_> = grantors
        .iter()
        .copied()
        .zip(200u32..)
        .map(|(grantor, serial)| (grantor, adult(CHONGQING, serial)))
        .collect();
    for (grantor, grantee) in &pairs {
        open(&mut c.beijing, *grantor, yuan(100)).await;
        open(&mut c.chongqing, *grantee, yuan(10)).await;
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(pairs.len()));
    let mut tasks = Vec::new();
    for (grantor, grantee) in pairs {
        let mut conn = c.beijing.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            (
                grantor,
                bind(&mut conn, grantor, grantee, p(CHONGQING), Limits::default()).await,
            )
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (grantor, id) = task.await.unwrap();
        assert!(ids.insert(id), "binding id {id} handed out twice");
        let (as_grantor, _) = c.beijing.bindings(&grantor).await.unwrap();
        assert_eq!(as_grantor.len(), 1, "{grantor}: {as_grantor:?}");
        assert_eq!((as_grantor[0].id, as_grantor[0].grantor), (id, grantor));
    }
}
