//! Hostile input against real node processes and the node's configuration parser:
//!
//! - deadlines: a bureau call whose settlement waits on a paused province is answered
//!   DEADLINE_EXCEEDED within `rpc_timeout_ms` (and completes later under the same id); the
//!   coordinator's peer link to the paused node gives up on its batch instead of hanging;
//! - per-identity limits: a burst from one bureau certificate beyond its budget (2 in flight,
//!   10 per second) and a flood of batches from one peer province (20 per second) are refused
//!   with RESOURCE_EXHAUSTED `<who> exceeded <limit>: retry after ...`, and a refused
//!   settlement leaves no trace (balance and journal agree with the accepted ones only);
//! - message size: a request above `MESSAGE_SIZE_MAX_BYTES` is refused OUT_OF_RANGE, a peer
//!   batch above 512 messages is refused from its bytes, before decoding;
//! - configuration: arbitrary text and mutated valid configurations never panic the parser,
//!   and a refused configuration says why (`FUZZ_CASES` sets the number of cases).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::{ErrorKind, Limits, Money, PersonId, Province, Scheme};
use exchange_node::client::BureauConn;
use exchange_node::cluster::{ClusterOptions, LocalCluster, NodeConfigText};
use exchange_node::config::{ConfigError, NodeConfig};
use exchange_pki::{PeerIdentity, PkiLayout, client_tls_config, load_ca, load_identity};
use exchange_proto::pb;
use proptest::prelude::*;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Tiny budgets, a short RPC deadline, and a vote timeout longer than that deadline.
const HOSTILE_CONFIG: &str = "
[protocol]
vote_timeout_ms = 2500
hold_timeout_ms = 8000
commit_margin_ms = 1500
rounds_max = 1
query_retry_ms = 500
resend_initial_ms = 200
resend_max_ms = 1000

[tuning]
rpc_timeout_ms = 1000
client_in_flight_per_identity_max = 2
client_requests_per_s_per_identity = 10
client_burst_per_identity = 10
peer_in_flight_max = 4
peer_requests_per_s = 20
peer_burst = 20
";

/// A channel to `province`'s node with the certificate of `identity`, without the client-side
/// message size limit (to send what a correct client never would).
async fn raw_channel(cluster: &LocalCluster, province: Province, identity: PeerIdentity) -> Channel {
    exchange_pki::install_crypto_provider();
    let files = PkiLayout::paths_of(&cluster.certs_dir, identity);
    let ca = PkiLayout::ca_paths(&cluster.certs_dir);
    let tls = client_tls_config(
        load_identity(&files.cert, &files.key).unwrap(),
        load_ca(&ca.cert).unwrap(),
        province,
    );
    let addr = cluster.nodes[&province].addr;
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap()
}

fn is_refused_for_budget(reply: &ClientReply) -> bool {
    matches!(reply, ClientReply::Error(error) if error.kind == ErrorKind::ResourceExhausted
        && (error.reason == "rate_limited" || error.reason == "too_many_in_flight"))
}

/// A bureau call that waits out the caller's budget (the setup of a test with tiny budgets).
async fn paced(conn: &mut BureauConn, request: ClientRequest) -> ClientReply {
    for _ in 0..200 {
        let reply = conn.call(request.clone()).await.unwrap();
        if !is_refused_for_budget(&reply) {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    panic!("still refused for budget: {request:?}");
}

async fn paced_account(conn: &mut BureauConn, person: &PersonId) -> exchange_core::Account {
    for _ in 0..200 {
        match conn.account(person).await {
            Ok(Some(account)) => return account,
            Ok(None) => panic!("{person} is not enrolled"),
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
            Err(status) => panic!("{status}"),
        }
    }
    panic!("still refused for budget");
}

async fn open_paced(conn: &mut BureauConn, person: PersonId, balance: Money) {
    let reply = paced(
        conn,
        ClientRequest::OpenAccount {
            person,
            name: "Test".into(),
            scheme: Scheme::Employee,
            balance,
        },
    )
    .await;
    assert!(matches!(reply, ClientReply::Account(_)), "{reply:?}");
}

/// Lets the caller's bucket fill up again (10 per second, burst 10).
async fn refill() {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callers_against_real_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let options = ClusterOptions {
        extra_config: HOSTILE_CONFIG.into(),
        ..ClusterOptions::default()
    };
    let (chongqing, sichuan) = (p(CHONGQING), p(SICHUAN));
    let mut cluster = LocalCluster::launch(&exe(), dir.path(), &[chongqing, sichuan], &options)
        .await
        .unwrap();
    let mut cq = cluster.conn(chongqing).await.unwrap();
    let mut sc = cluster.conn(sichuan).await.unwrap();

    deadlines(&mut cluster, &mut cq, &mut sc).await;
    client_budget(&mut cq).await;
    size_limits_and_peer_budget(&cluster, &mut cq).await;
    cluster.stop_all();
}

/// A settlement that needs a paused province's vote: the bureau call is answered at the
/// deadline, the coordinator's link to the paused node fails its batch instead of hanging, and
/// the settlement completes under the same id once the province is back.
async fn deadlines(cluster: &mut LocalCluster, cq: &mut BureauConn, sc: &mut BureauConn) {
    let (chongqing, sichuan) = (p(CHONGQING), p(SICHUAN));
    let patient = adult(CHONGQING, 1);
    let grantor = adult(SICHUAN, 1);
    open_paced(cq, patient, Money::ZERO).await;
    open_paced(sc, grantor, yuan(1000)).await;
    let request = ClientRequest::Bind(exchange_core::binding::BindRequest {
        grantor,
        grantee: patient,
        grantee_province: chongqing,
        relation: exchange_core::Relation::Parent,
        kind: exchange_core::BindingKind::MutualAid,
        limits: Limits::default(),
        evidence: exchange_core::Evidence {
            document: exchange_core::binding::DocumentKind::HouseholdRegister,
            reference: "HR-1".into(),
            face_verified: true,
            commitment_signed: true,
        },
    });
    let binding = match paced(sc, request).await {
        ClientReply::Bound { binding, .. } => binding,
        other => panic!("bind: {other:?}"),
    };
    // Wait until the patient's node holds the active binding.
    let started = Instant::now();
    loop {
        match cq.bindings(&patient).await {
            Ok((_, as_grantee))
                if as_grantee
                    .iter()
                    .any(|b| b.id == binding && b.status == exchange_core::BindingStatus::Active) =>
            {
                break;
            }
            _ if started.elapsed() < Duration::from_secs(15) => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("the binding never became active at the patient's node: {other:?}"),
        }
    }
    refill().await;

    cluster.pause(sichuan, true).unwrap();
    let settle = ClientRequest::Settle(settle_request("H-DEADLINE", patient, yuan(10)));
    let started = Instant::now();
    let status = cq.call(settle.clone()).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("retry with the same id"), "{status:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2_400),
        "answered after {waited:?}, the deadline is 1000 ms"
    );

    // The coordinator's link to the paused province gave up on its batch (deadline, or the
    // keep-alive closing the connection), it did not hang.
    let mut monitor =
        exchange_proto::service::monitor_client(raw_channel(cluster, chongqing, PeerIdentity::Bureau(chongqing)).await);
    let started = Instant::now();
    let last_error = loop {
        let status = monitor.status(pb::StatusRequest {}).await;
        let link_error = status.ok().and_then(|status| {
            status
                .into_inner()
                .peer_links
                .into_iter()
                .find(|link| link.province == SICHUAN && !link.last_error.is_empty())
                .map(|link| link.last_error)
        });
        match link_error {
            Some(error) => break error,
            None if started.elapsed() < Duration::from_secs(8) => tokio::time::sleep(Duration::from_millis(250)).await,
            None => panic!("the link to the paused province never reported an error"),
        }
    };
    eprintln!("link to the paused province: {last_error}");

    cluster.pause(sichuan, false).unwrap();
    // The same id, retried: the decided settlement's receipt.
    let started = Instant::now();
    let receipt = loop {
        match cq.call(settle.clone()).await {
            Ok(ClientReply::Settled(receipt)) => break receipt,
            Ok(reply) if is_refused_for_budget(&reply) => {}
            Err(status) if status.code() == Code::DeadlineExceeded => {}
            other => panic!("retry: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the settlement never completed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(receipt.settlement.as_str(), "H-DEADLINE");
}

/// One bureau certificate beyond its budget: refused RESOURCE_EXHAUSTED with the reason, and
/// what was refused is not applied.
async fn client_budget(cq: &mut BureauConn) {
    let patient = adult(CHONGQING, 2);
    let initial = yuan(1000);
    open_paced(cq, patient, initial).await;
    refill().await;

    // A burst of 30 at once: at most 2 in flight.
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..30 {
        let mut conn = cq.clone();
        let id = format!("H-BURST-{n}");
        tasks.spawn(async move {
            let reply = conn
                .call(ClientRequest::Settle(settle_request(&id, patient, yuan(1))))
                .await
                .unwrap();
            (id, reply)
        });
    }
    let mut outcomes = tasks.join_all().await;
    refill().await;
    // Then 25 one after the other: at most 10 a second.
    for n in 0..25 {
        let id = format!("H-SEQ-{n}");
        let reply = cq
            .call(ClientRequest::Settle(settle_request(&id, patient, yuan(1))))
            .await
            .unwrap();
        outcomes.push((id, reply));
    }

    let mut accepted = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    let mut paid_fen = 0;
    for (id, reply) in &outcomes {
        match reply {
            ClientReply::Settled(receipt) => {
                paid_fen += receipt.own_account_paid.fen();
                accepted.insert(id.clone());
            }
            ClientReply::Error(error) if is_refused_for_budget(reply) => {
                let message = &error.message;
                assert!(
                    message.starts_with("bureau.500000.exchange serial=") && message.contains(" exceeded "),
                    "{message}"
                );
                assert!(message.contains(": retry after "), "{message}");
                reasons.insert(error.reason.clone());
                refused.insert(id.clone());
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    eprintln!(
        "client budget: {} accepted, {} refused ({reasons:?})",
        accepted.len(),
        refused.len()
    );
    assert!(
        reasons.contains("too_many_in_flight"),
        "the burst never exceeded 2 in flight: {reasons:?}"
    );
    assert!(
        reasons.contains("rate_limited"),
        "the sequence never exceeded 10/s: {reasons:?}"
    );
    assert!(accepted.len() >= 2, "{accepted:?}");

    // Nothing of a refused settlement was applied: the balance is the accepted ones' sum, and
    // the journal holds exactly the accepted settlements.
    refill().await;
    let account = paced_account(cq, &patient).await;
    assert_eq!(account.balance.fen(), initial.fen() - paid_fen);
    assert!(account.held.is_zero());
    let page = loop {
        match cq.records(&patient, 0, 500).await {
            Ok(page) => break page,
            Err(status) if status.code() == Code::ResourceExhausted => refill().await,
            Err(status) => panic!("{status}"),
        }
    };
    let journaled: BTreeSet<String> = page
        .records
        .iter()
        .filter_map(|record| record.entry.as_ref().and_then(|entry| entry.settlement.clone()))
        .collect();
    assert_eq!(journaled, accepted, "refused: {refused:?}");
}

/// Message size limits, the batch count before decoding, and one peer province beyond its
/// budget.
async fn size_limits_and_peer_budget(cluster: &LocalCluster, cq: &mut BureauConn) {
    let (chongqing, sichuan) = (p(CHONGQING), p(SICHUAN));
    refill().await;

    // A bureau request above the message size limit.
    let mut bureau =
        pb::bureau_client::BureauClient::new(raw_channel(cluster, chongqing, PeerIdentity::Bureau(chongqing)).await)
            .max_encoding_message_size(64 << 20);
    let oversized = pb::OpenAccountRequest {
        person: adult(CHONGQING, 3).to_string(),
        name: "x".repeat(exchange_proto::MESSAGE_SIZE_MAX_BYTES + 1),
        scheme: pb::Scheme::Employee.into(),
        balance_fen: 0,
    };
    let status = bureau.open_account(oversized).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");

    // Peer batches, from a client holding Sichuan's node certificate.
    let mut peer =
        pb::exchange_client::ExchangeClient::new(raw_channel(cluster, chongqing, PeerIdentity::Node(sichuan)).await)
            .max_encoding_message_size(64 << 20);
    let empty = pb::PeerMessage { message: None };
    let batch = |len: usize| pb::PeerBatch {
        messages: vec![empty.clone(); len],
    };
    let status = peer
        .deliver(batch(exchange_proto::PEER_BATCH_MESSAGES_MAX + 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most 512"), "{status:?}");
    // 200,000 empty messages (400 KB on the wire, some 40 MB once decoded): refused from their
    // bytes, before decoding (the full 4 MiB case is `crates/proto/tests/fuzz.rs`; building it
    // here would take this test 400 MiB).
    let started = Instant::now();
    let status = peer.deliver(batch(200_000)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("messages"), "{status:?}");
    eprintln!("a batch of 200,000 empty messages refused in {:?}", started.elapsed());

    // A flood of (empty, valid) batches: 20 a second for province 510000.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut refusals = Vec::new();
    for _ in 0..40 {
        match peer.deliver(batch(0)).await {
            Ok(reply) => assert_eq!(reply.into_inner().accepted, 0),
            Err(status) => refusals.push(status),
        }
    }
    assert!(!refusals.is_empty(), "40 batches at once were all accepted");
    for status in &refusals {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("node.510000.exchange exceeded 20 requests/s (burst 20): retry after "),
            "{status:?}"
        );
        assert!(status.metadata().get("x-exchange-retry-after-ms").is_some());
    }

    // The node still serves (and so does the province whose certificate was used).
    refill().await;
    paced_account(cq, &adult(CHONGQING, 2)).await;
    let mut sc = cluster.conn(sichuan).await.unwrap();
    paced_account(&mut sc, &adult(SICHUAN, 1)).await;
}

// ---------------------------------------------------------------------------------------------
// Configuration parsing
// ---------------------------------------------------------------------------------------------

fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// A valid configuration with every section.
fn valid_config() -> String {
    let peers = [(p(SICHUAN), "127.0.0.1:7002".parse().unwrap())];
    let text = NodeConfigText {
        province: p(CHONGQING),
        addr: "127.0.0.1:7001".parse().unwrap(),
        metrics: Some("127.0.0.1:9001".parse().unwrap()),
        data_dir: Path::new("/var/lib/exchange"),
        certs_dir: Path::new("/etc/exchange/certs"),
        peers: &peers,
        log_level: "info",
        extra: "\n[tls]\nrevoked_serials = [\"0a1b\"]\n\n[protocol]\nvote_timeout_ms = 1000\nhold_timeout_ms = 8000\n\n[tuning]\naccount_shards = 4\nrpc_timeout_ms = 5000\nclient_in_flight_per_identity_max = 100\npeer_burst = 50\n",
    }
    .render();
    NodeConfig::parse(&text, Path::new("valid.toml")).unwrap();
    text
}

const KEYS: [&str; 22] = [
    "province",
    "listen",
    "metrics_listen",
    "data_dir",
    "certs_dir",
    "address",
    "level",
    "json",
    "revoked_serials",
    "vote_timeout_ms",
    "hold_timeout_ms",
    "rounds_max",
    "account_shards",
    "peer_batch_max",
    "peer_queue_max",
    "cache_mib",
    "rpc_timeout_ms",
    "client_requests_in_flight_max",
    "client_in_flight_per_identity_max",
    "client_requests_per_s_per_identity",
    "peer_requests_per_s",
    "peer_burst",
];

fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "-1",
            "1",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "-9223372036854775808",
            "1e308",
            "nan",
            "-inf",
            "0x7fffffff",
            "1_000_000_000",
            "true",
            "\"\"",
            "\"127.0.0.1:0\"",
            "\"[::1]:99999\"",
            "\"/\"",
            "[]",
            "[1, \"a\", []]",
            "{}",
            "{ a = { b = 1 } }",
            "1979-05-27T07:32:00Z",
            "'''\nmulti\nline'''",
            "\"\\u0000\"",
        ])
        .prop_map(str::to_string),
        "\\PC{0,20}".prop_map(|text| format!("{text:?}")),
        (0usize..100_000).prop_map(|len| format!("\"{}\"", "a".repeat(len))),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    SetValue(prop::sample::Index, String),
    Delete(prop::sample::Index),
    Duplicate(prop::sample::Index),
    Insert(prop::sample::Index, String),
    Swap(prop::sample::Index, prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let line = prop_oneof![
        (prop::sample::select(KEYS.to_vec()), hostile_value()).prop_map(|(key, value)| format!("{key} = {value}")),
        prop::sample::select(vec![
            "[tuning]",
            "[protocol]",
            "[policy]",
            "[[peers]]",
            "[tls]",
            "[log]",
            "[unknown]",
            "[[tuning]]",
            "province = 500000",
            "unknown_key = 1",
            "=",
            "[",
            "\"",
        ])
        .prop_map(str::to_string),
        "\\PC{0,40}",
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), hostile_value()).prop_map(|(at, value)| Mutation::SetValue(at, value)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
        (any::<prop::sample::Index>(), line).prop_map(|(at, line)| Mutation::Insert(at, line)),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for mutation in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let len = lines.len();
        match mutation {
            Mutation::SetValue(at, value) => {
                let line = &mut lines[at.index(len)];
                if let Some((key, _)) = line.split_once('=') {
                    *line = format!("{key}= {value}");
                }
            }
            Mutation::Delete(at) => {
                lines.remove(at.index(len));
            }
            Mutation::Duplicate(at) => {
                let line = lines[at.index(len)].clone();
                lines.insert(at.index(len), line);
            }
            Mutation::Insert(at, line) => lines.insert(at.index(len + 1), line.clone()),
            Mutation::Swap(a, b) => lines.swap(a.index(len), b.index(len)),
            Mutation::Truncate(at) => {
                let line = &mut lines[at.index(len)];
                let cut = line
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(line.chars().count() / 2)
                    .unwrap_or(0);
                line.truncate(cut);
            }
        }
    }
    lines.join("\n")
}

/// A refused configuration names the file and gives a reason.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    match NodeConfig::parse(text, Path::new("hostile.toml")) {
        Ok(config) => {
            // Whatever is accepted is within the checked ranges.
            let t = &config.tuning;
            prop_assert!(t.client_in_flight_per_identity_max >= 1 && t.peer_burst >= 1 && t.peer_requests_per_s >= 1);
            prop_assert!((100..=600_000).contains(&t.rpc_timeout_ms));
            prop_assert!(config.peers.iter().all(|peer| peer.province != config.province));
        }
        Err(error) => {
            let message = error.to_string();
            let expected_kind = matches!(error, ConfigError::Parse { .. } | ConfigError::Invalid { .. });
            prop_assert!(expected_kind, "{}", message);
            prop_assert!(
                message.starts_with("hostile.toml: ") && message.len() > "hostile.toml: ".len(),
                "{message}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Arbitrary text, and text made of TOML's own pieces.
    #[test]
    fn arbitrary_config_text_never_panics(
        text in prop_oneof![
            "\\PC{0,400}",
            proptest::collection::vec(
                prop_oneof![
                    "[a-z_]{1,12} = [0-9a-z\"\\[\\]{},.=-]{0,20}",
                    "\\[{1,2}[a-z_.]{0,12}\\]{1,2}",
                    "[\\[\\]{}=\"',#.\\\\ ]{0,12}",
                ],
                0..20,
            ).prop_map(|lines| lines.join("\n")),
        ],
    ) {
        check_parse(&text)?;
    }

    /// A valid configuration with values replaced by hostile ones, lines deleted, repeated,
    /// inserted, swapped or cut.
    #[test]
    fn mutated_configs_never_panic(mutations in proptest::collection::vec(mutation(), 1..6)) {
        check_parse(&mutate(&valid_config(), &mutations))?;
    }
}

/// Every per-identity budget must be positive and bounded; the error names the key.
#[test]
fn budgets_out_of_range_are_refused_by_name() {
    let valid = valid_config();
    for key in [
        "client_in_flight_per_identity_max",
        "client_requests_per_s_per_identity",
        "client_burst_per_identity",
        "peer_in_flight_max",
        "peer_requests_per_s",
        "peer_burst",
    ] {
        for value in ["0", "10000001"] {
            let text = valid.replace("[tuning]\n", &format!("[tuning]\n{key} = {value}\n"));
            let text = if valid.contains(&format!("{key} =")) {
                // Already in the sample: set it in place instead.
                valid
                    .lines()
                    .map(|line| {
                        if line.starts_with(&format!("{key} =")) {
                            format!("{key} = {value}")
                        } else {
                            line.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                text
            };
            let error = NodeConfig::parse(&text, Path::new("n.toml")).unwrap_err().to_string();
            assert!(error.contains(key), "{key} = {value}: {error}");
        }
    }
    // The runtime's thread count: 0 (one per core) is fine, too many is refused by name.
    let threads = |value: &str| valid.replace("[tuning]\n", &format!("[tuning]\nworker_threads = {value}\n"));
    assert!(valid.contains("[tuning]\n"), "the sample has a [tuning] table");
    assert_eq!(
        NodeConfig::parse(&threads("0"), Path::new("n.toml"))
            .unwrap()
            .tuning
            .worker_threads,
        0
    );
    let error = NodeConfig::parse(&threads("100000"), Path::new("n.toml"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("worker_threads"), "{error}");
    // A file above the size limit is refused before it is parsed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    std::fs::write(&path, "#".repeat(2 << 20)).unwrap();
    assert!(matches!(NodeConfig::load(&path), Err(ConfigError::TooLarge { .. })));
    assert!(matches!(NodeConfig::load(dir.path()), Err(ConfigError::Read { .. })));
}
