//! Records, clearing and reconciliation through the real binary against real node processes:
//! a family's settlement and refund across three provinces, then each bureau reads its
//! history, its net positions and the leg-by-leg comparison with each peer; bad periods,
//! unknown peers and unknown people are refused with a reason; a peer node reads only its own
//! side of another node's journal.

mod common;

use std::time::Duration;

use common::*;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::records::RefundRequest;
use exchange_core::{Limits, RefundId, SettlementId};
use exchange_pki::{PeerIdentity, PkiLayout};
use exchange_proto::pb;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_clearing_and_reconciliation_agree_across_three_provinces() {
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
    // Own 50, son (Beijing) 300, daughter (Sichuan) 150.
    let r = receipt(settle(&mut c.chongqing, "S-1", f.grandmother, yuan(500)).await);
    assert_eq!(r.mutual_aid.len(), 2);
    let refund = c
        .chongqing
        .call(ClientRequest::Refund(RefundRequest {
            refund: RefundId::new("R-1").unwrap(),
            settlement: SettlementId::new("S-1").unwrap(),
            amount: Some(yuan(100)),
        }))
        .await
        .unwrap();
    let ClientReply::Refunded(refund) = refund else {
        panic!("refund: {refund:?}");
    };
    // What the refund credited back to each grantor (the rule is the core's; the test reads it).
    let back_to = |person| {
        refund
            .parts
            .iter()
            .filter(|part| part.account == person)
            .map(|part| part.amount.fen())
            .sum::<u64>()
    };
    let (son_back, daughter_back) = (back_to(f.son), back_to(f.daughter));
    // Wait until every participant has applied its commit and credit.
    let mut model = Model::default();
    model.open(f.grandmother, p(CHONGQING), yuan(50));
    model.open(f.son, p(BEIJING), yuan(1000));
    model.open(f.daughter, p(SICHUAN), yuan(800));
    model.apply(&r);
    model.balances.get_mut(&f.son).unwrap().1 += son_back;
    model.balances.get_mut(&f.daughter).unwrap().1 += daughter_back;
    model.balances.get_mut(&f.grandmother).unwrap().1 += back_to(f.grandmother);
    model.check(&mut c, Duration::from_secs(15)).await;

    let config = |code| cluster.nodes[&p(code)].config_path.clone();
    let (from, to) = around_today();

    // Reconciliation from both sides of both pairs: every leg matched, nets opposite.
    for (own, peer, paid, back) in [
        (CHONGQING, BEIJING, 30_000, son_back),
        (CHONGQING, SICHUAN, 15_000, daughter_back),
        (BEIJING, CHONGQING, 30_000, son_back),
        (SICHUAN, CHONGQING, 15_000, daughter_back),
    ] {
        let (code, report, stderr) = ctl(
            &config(own),
            &["reconcile", "--peer", &peer.to_string(), "--from", &from, "--to", &to],
        );
        assert_eq!(code, 0, "{own} with {peer}: {report} {stderr}");
        assert_eq!(report["reconciled"], true);
        assert_eq!(report["mismatch_count"], 0);
        // One deduction leg, and a refund leg when the refund credited that grantor.
        assert_eq!(report["legs_compared"], 1 + u64::from(back > 0), "{report}");
        assert_eq!(report["legs_matched"], report["legs_compared"]);
        // The grantor's province owes the patient's the net of what it paid.
        let net = i64::try_from(paid - back).unwrap();
        let expected = if own == CHONGQING { -net } else { net };
        assert_eq!(report["net_owed_to_peer_fen"], expected, "{own} with {peer}: {report}");
    }

    // Clearing on Beijing: one position, against Chongqing.
    let (code, clearing, stderr) = ctl(&config(BEIJING), &["clearing", "--from", &from, "--to", &to]);
    assert_eq!(code, 0, "{stderr}");
    let positions = clearing["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 1, "{clearing}");
    assert_eq!(positions[0]["peer"], CHONGQING);
    assert_eq!(positions[0]["paid_for_peer_fen"], 30_000);
    assert_eq!(positions[0]["refunded_by_peer_fen"], son_back);
    // Chongqing owes nobody and is owed by both.
    let (_, clearing, _) = ctl(&config(CHONGQING), &["clearing", "--from", &from, "--to", &to]);
    let nets: Vec<i64> = clearing["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["net_owed_to_peer_fen"].as_i64().unwrap())
        .collect();
    assert_eq!(nets.len(), 2);
    assert!(nets.iter().all(|net| *net < 0), "{clearing}");

    // The son's history: his opening credit and the debit for his mother, newest first.
    let (code, history, stderr) = ctl(&config(BEIJING), &["records", "--person", &f.son.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    let records = history["records"].as_array().unwrap();
    let kinds: Vec<&str> = records.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    let debit = records.iter().find(|r| r["kind"] == "debit").expect("a debit");
    assert_eq!(debit["amount_fen"], 30_000);
    assert_eq!(debit["settlement"], "S-1");
    assert_eq!(debit["relative"], f.grandmother.to_string());
    assert_eq!(debit["counterparty"], CHONGQING);
    assert_eq!(
        *kinds.last().unwrap(),
        "credit",
        "oldest is the opening balance: {kinds:?}"
    );
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first: {seqs:?}");
    // Paginated: one at a time, the pages cover the same records.
    let mut paged = Vec::new();
    let mut before = 0u64;
    loop {
        let (_, page, _) = ctl(
            &config(BEIJING),
            &[
                "records",
                "--person",
                &f.son.to_string(),
                "--limit",
                "1",
                "--before",
                &before.to_string(),
            ],
        );
        paged.extend(
            page["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["seq"].as_u64().unwrap()),
        );
        before = page["next_before_seq"].as_u64().unwrap();
        if before == 0 {
            break;
        }
    }
    assert_eq!(paged, seqs);

    // Refusals, each with a reason and exit code 2.
    let cases: [(&[&str], &str); 5] = [
        (
            &["reconcile", "--peer", "110000", "--from", &to, "--to", &from],
            "before",
        ),
        (
            &["reconcile", "--peer", "990000", "--from", &from, "--to", &to],
            "province",
        ),
        (
            &["reconcile", "--peer", "310000", "--from", &from, "--to", &to],
            "not a peer",
        ),
        (&["clearing", "--from", "2026-13-01", "--to", &to], "date"),
        (
            &["records", "--person", &adult(CHONGQING, 77).to_string()],
            "not enrolled",
        ),
    ];
    for (args, reason) in cases {
        let (code, _, stderr) = ctl(&config(CHONGQING), args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reads_only_its_own_side_of_another_nodes_journal() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let mut c = conns(&cluster).await;
    let f = family(&mut c, 2, Limits::default()).await;
    receipt(settle(&mut c.chongqing, "S-2", f.grandmother, yuan(1500)).await);
    let chongqing = cluster.nodes[&p(CHONGQING)].addr.to_string();
    let ca = PkiLayout::ca_paths(&cluster.certs_dir).cert;
    let client_as = |identity: PeerIdentity| {
        let paths = PkiLayout::paths_of(&cluster.certs_dir, identity);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
            .domain_name("node.500000.exchange")
            .identity(Identity::from_pem(
                std::fs::read(paths.cert).unwrap(),
                std::fs::read(paths.key).unwrap(),
            ));
        let channel = Endpoint::from_shared(format!("https://{chongqing}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_lazy();
        pb::exchange_client::ExchangeClient::new(channel)
    };
    let query = || pb::JournalQuery {
        after_seq: 0,
        from_ms: 0,
    };
    // Sichuan's node sees Chongqing's records of legs Sichuan paid, and nothing else.
    let mut sichuan = client_as(PeerIdentity::Node(p(SICHUAN)));
    let mut page = sichuan.journal(query()).await.unwrap().into_inner();
    let mut seen = std::mem::take(&mut page.records);
    while !page.done {
        page = sichuan
            .journal(pb::JournalQuery {
                after_seq: page.scanned_to_seq,
                from_ms: 0,
            })
            .await
            .unwrap()
            .into_inner();
        seen.append(&mut page.records);
    }
    assert!(!seen.is_empty());
    for record in &seen {
        let (_, entry) = record.clone().checked().unwrap();
        assert_eq!(entry.counterparty, Some(p(SICHUAN)), "{entry:?}");
    }
    // A bureau certificate (even Chongqing's own) and the monitor may not use the node API.
    for identity in [PeerIdentity::Bureau(p(CHONGQING)), PeerIdentity::Monitor] {
        let status = client_as(identity).journal(query()).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{identity}: {status:?}");
    }
}
