//! Reading the nodes after healing: accounts, node counters (Monitor `Status`), whole journals
//! (Monitor `Feed`, with the province's bureau certificate) and reconciliations (Bureau
//! `Reconcile`). Every call is bounded in time; a failure is recorded, not hidden.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use exchange_core::records::JournalEntry;
use exchange_core::{PersonId, Province};
use exchange_node::client::BureauConn;
use exchange_node::cluster::LocalCluster;
use exchange_pki::{PeerIdentity, PkiLayout, client_tls_config, load_ca, load_identity};
use exchange_proto::pb;
use exchange_proto::pb::monitor_client::MonitorClient;
use exchange_proto::{FeedItem, feed_event_from_wire};
use tonic::transport::{Channel, Endpoint};

use crate::check::{Bindings, NodeCounters, Observed, ReconcileSummary, check_bindings};

/// One read call may take this long.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Reading one node's whole journal may take this long.
pub const JOURNAL_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Mismatches described per reconciliation.
pub const MISMATCHES_LISTED_MAX: usize = 10;

/// A Monitor client of one node, with that province's bureau certificate.
pub async fn monitor(cluster: &LocalCluster, province: Province) -> Result<MonitorClient<Channel>, String> {
    let node = cluster.nodes.get(&province).ok_or("no such node")?;
    let files = PkiLayout::paths_of(&cluster.certs_dir, PeerIdentity::Bureau(province));
    let ca = PkiLayout::ca_paths(&cluster.certs_dir);
    let identity = load_identity(&files.cert, &files.key).map_err(|e| e.to_string())?;
    let ca = load_ca(&ca.cert).map_err(|e| e.to_string())?;
    let channel = Endpoint::from_shared(format!("https://{}", node.addr))
        .map_err(|e| e.to_string())?
        .tls_config(client_tls_config(identity, ca, province))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(READ_TIMEOUT)
        .connect_lazy();
    Ok(exchange_proto::service::monitor_client(channel))
}

pub async fn counters(client: &mut MonitorClient<Channel>) -> Result<NodeCounters, String> {
    let status = tokio::time::timeout(READ_TIMEOUT, client.status(pb::StatusRequest {}))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|status| status.to_string())?
        .into_inner();
    Ok(NodeCounters {
        holds_in_flight: status.holds_in_flight,
        settlements_in_flight: status.settlements_in_flight,
        last_journal_seq: status.last_journal_seq,
    })
}

/// The whole journal of a node, up to its last sequence number now.
pub async fn journal(client: &mut MonitorClient<Channel>) -> Result<Vec<(u64, JournalEntry)>, String> {
    let last = counters(client).await?.last_journal_seq;
    let mut entries = Vec::new();
    if last == 0 {
        return Ok(entries);
    }
    let read = async {
        let mut stream = client
            .feed(pb::FeedRequest { after_seq: 0 })
            .await
            .map_err(|status| status.to_string())?
            .into_inner();
        loop {
            let Some(event) = stream.message().await.map_err(|status| status.to_string())? else {
                return Err("the feed ended early".to_string());
            };
            match feed_event_from_wire(event).map_err(|error| error.to_string())? {
                (seq, FeedItem::Journal(entry)) => {
                    entries.push((seq, entry));
                    if seq >= last {
                        return Ok(());
                    }
                }
                (seq, FeedItem::Health(_)) if seq >= last => return Ok(()),
                (_, FeedItem::Health(_)) => {}
            }
        }
    };
    tokio::time::timeout(JOURNAL_READ_TIMEOUT, read)
        .await
        .map_err(|_| "journal not read in time".to_string())??;
    Ok(entries)
}

pub async fn accounts(
    conns: &BTreeMap<Province, BureauConn>,
    people: impl IntoIterator<Item = (PersonId, Province)>,
) -> BTreeMap<PersonId, Result<exchange_core::Account, String>> {
    let mut found = BTreeMap::new();
    for (person, province) in people {
        let result = match conns.get(&province) {
            None => Err("no connection".to_string()),
            Some(conn) => {
                let mut conn = conn.clone();
                match tokio::time::timeout(READ_TIMEOUT, conn.account(&person)).await {
                    Ok(Ok(Some(account))) => Ok(account),
                    Ok(Ok(None)) => Err("not enrolled".to_string()),
                    Ok(Err(status)) => Err(status.to_string()),
                    Err(_) => Err("no answer in time".to_string()),
                }
            }
        };
        found.insert(person, result);
    }
    found
}

/// Every binding of `people`: as grantor from their node (the authority), as grantee (the
/// copies) from theirs.
pub async fn bindings(
    conns: &BTreeMap<Province, BureauConn>,
    people: impl IntoIterator<Item = (PersonId, Province)>,
) -> Result<Bindings, String> {
    let mut found = Bindings::default();
    for (person, province) in people {
        let mut conn = conns.get(&province).cloned().ok_or("no connection")?;
        let (as_grantor, as_grantee) = tokio::time::timeout(READ_TIMEOUT, conn.bindings(&person))
            .await
            .map_err(|_| format!("bindings of {person}: no answer in time"))?
            .map_err(|status| format!("bindings of {person}: {status}"))?;
        for binding in as_grantor {
            found.authority.insert(binding.id, binding);
        }
        for binding in as_grantee {
            found.copies.insert(binding.id, binding);
        }
    }
    Ok(found)
}

pub async fn reconcile(
    conn: &BureauConn,
    peer: Province,
    from_ms: i64,
    to_ms: i64,
) -> Result<ReconcileSummary, String> {
    let mut conn = conn.clone();
    let report = tokio::time::timeout(READ_TIMEOUT * 3, conn.reconcile(peer, from_ms, to_ms))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|status| status.to_string())?;
    Ok(ReconcileSummary {
        legs_compared: report.legs_compared,
        legs_matched: report.legs_matched,
        mismatch_count: report.mismatch_count,
        mismatches: report
            .mismatches
            .iter()
            .take(MISMATCHES_LISTED_MAX)
            .map(|m| {
                format!(
                    "{} {} leg {:?} payer {} coordinator {} (payer {:?} fen, coordinator {:?} fen)",
                    m.problem, m.role, m.leg, m.payer, m.coordinator, m.payer_fen, m.coordinator_fen
                )
            })
            .collect(),
    })
}

/// Everything the checks need.
pub async fn observe(
    cluster: &LocalCluster,
    conns: &BTreeMap<Province, BureauConn>,
    people: Vec<(PersonId, Province)>,
    from_ms: i64,
    to_ms: i64,
) -> Observed {
    let mut observed = Observed {
        accounts: accounts(conns, people.iter().copied()).await,
        bindings: bindings(conns, people.iter().copied()).await,
        ..Observed::default()
    };
    let provinces: Vec<Province> = cluster.nodes.keys().copied().collect();
    for province in &provinces {
        match monitor(cluster, *province).await {
            Ok(mut client) => {
                observed.counters.insert(*province, counters(&mut client).await);
                observed.journals.insert(*province, journal(&mut client).await);
            }
            Err(error) => {
                observed.counters.insert(*province, Err(error.clone()));
                observed.journals.insert(*province, Err(error));
            }
        }
    }
    for own in &provinces {
        for peer in provinces.iter().filter(|p| *p != own) {
            let result = match conns.get(own) {
                Some(conn) => reconcile(conn, *peer, from_ms, to_ms).await,
                None => Err("no connection".to_string()),
            };
            observed.reconciliations.insert((*own, *peer), result);
        }
    }
    observed
}

/// Waits, at most until `deadline`, for the quiet state the checks expect: every balance as
/// the model says, nothing held, no hold or request in flight on any node. Returns whether
/// it was reached, how long it took, and what was still moving at the previous look (empty
/// when quiet at once).
pub async fn quiescence(
    cluster: &LocalCluster,
    conns: &BTreeMap<Province, BureauConn>,
    expected: &BTreeMap<PersonId, (Province, i128)>,
    deadline: Instant,
) -> (bool, Duration, String) {
    let started = Instant::now();
    let mut monitors = BTreeMap::new();
    for province in cluster.nodes.keys() {
        if let Ok(client) = monitor(cluster, *province).await {
            monitors.insert(*province, client);
        }
    }
    let mut moving = String::new();
    loop {
        let mut now_moving = Vec::new();
        if monitors.len() != cluster.nodes.len() {
            now_moving.push("a node's monitor client could not be made".to_string());
        }
        for (province, client) in &mut monitors {
            match counters(client).await {
                Ok(c) if c.holds_in_flight == 0 && c.settlements_in_flight == 0 => {}
                Ok(c) => now_moving.push(format!(
                    "{}: {} holds, {} requests in flight",
                    province.code(),
                    c.holds_in_flight,
                    c.settlements_in_flight
                )),
                Err(error) => now_moving.push(format!("{}: {error}", province.code())),
            }
        }
        let found = accounts(conns, expected.iter().map(|(p, (at, _))| (*p, *at))).await;
        let off: Vec<String> = expected
            .iter()
            .filter_map(|(person, (_, want))| match found.get(person) {
                Some(Ok(a)) if a.held.is_zero() && i128::from(a.balance.fen()) == *want => None,
                Some(Ok(a)) => Some(format!(
                    "{person} balance {} held {} model {want}",
                    a.balance.fen(),
                    a.held.fen()
                )),
                Some(Err(error)) => Some(format!("{person}: {error}")),
                None => Some(format!("{person}: not read")),
            })
            .collect();
        if let Some(first) = off.first() {
            now_moving.push(format!("{} accounts not yet as the model (first: {first})", off.len()));
        }
        match bindings(conns, expected.iter().map(|(p, (at, _))| (*p, *at))).await {
            Ok(found) => {
                let unsettled = check_bindings(&found);
                if let Some(first) = unsettled.first() {
                    now_moving.push(format!("{} bindings not converged (first: {first})", unsettled.len()));
                }
            }
            Err(error) => now_moving.push(error),
        }
        if now_moving.is_empty() {
            return (true, started.elapsed(), moving);
        }
        moving = now_moving.join("; ");
        if Instant::now() >= deadline {
            return (false, started.elapsed(), moving);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
