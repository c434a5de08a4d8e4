//! Loading a benchmark cluster: millions of filler accounts written straight into a stopped
//! node's sled store (the same write set the bureau's open-account produces: the account and
//! its opening-balance credit in the journal), and benchmark families opened and bound through
//! the bureau API, as a bureau would.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use exchange_core::binding::{BindRequest, DocumentKind, Evidence};
use exchange_core::ledger::Write;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::records::{JournalEntry, JournalKind};
use exchange_core::{Account, BindingKind, Limits, Money, PersonId, Province, Relation, Scheme};
use exchange_node::client::BureauConn;
use exchange_store::{Store, StoreConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::BenchError;

/// Accounts per write set of the bulk load (two writes each, ~300 bytes in the set's redo
/// record, so well under the store's `REDO_RECORD_BYTES_MAX`).
pub const BULK_ACCOUNTS_PER_SET: u64 = 100;
/// Write sets between two flushes of the bulk load (100,000 accounts per flush).
pub const BULK_SETS_PER_FLUSH: u64 = 1_000;
/// Most filler accounts one node may be given (synthetic ids of one region code run out
/// past 36.5 M; more would need several region codes).
pub const BULK_ACCOUNTS_MAX: u64 = 36_000_000;
/// Opening balance of a filler account, fen.
pub const FILLER_BALANCE_FEN: u64 = 100_000;
/// Opening balance of a benchmark grantor, fen (10 M yuan: never the limit in a run).
pub const GRANTOR_BALANCE_FEN: u64 = 1_000_000_000;
/// Families set up at once through the bureau API.
pub const SETUP_CONCURRENCY: usize = 32;
/// First serial of benchmark family members (filler accounts use another region code).
pub const FAMILY_SERIAL_BASE: u64 = 5_000_000;

/// Result of a bulk load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkLoad {
    pub accounts: u64,
    pub seconds: f64,
    pub accounts_per_s: f64,
    pub store_bytes: u64,
    /// Seconds of one more open and close of the store after the load: sled 0.34 writes its
    /// snapshot (the page table) only when it opens, replaying all log written since the
    /// previous open, so this is the import's checkpoint and the node's start after it is a
    /// restart of a checkpointed store (a node's own restarts replay what it wrote since it
    /// last started; see BENCHMARKS.md).
    #[serde(default)]
    pub checkpoint_s: f64,
}

/// A filler account's id: district code `<province>+101`, serial `index`.
pub fn filler_person(province: Province, index: u64) -> PersonId {
    PersonId::synthetic(province.code().saturating_add(101), index)
}

fn dir_bytes(dir: &Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0u64;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() && depth < 8 {
            total = total.saturating_add(dir_bytes(&entry.path(), depth.saturating_add(1)));
        } else {
            total = total.saturating_add(meta.len());
        }
    }
    total
}

/// Size of a directory tree on disk (apparent bytes).
pub fn store_bytes(dir: &Path) -> u64 {
    dir_bytes(dir, 0)
}

/// Writes `accounts` employee accounts with an opening balance into the store at `data_dir`
/// (the node must be stopped), in write sets of [`BULK_ACCOUNTS_PER_SET`], flushed in groups.
pub fn bulk_load_accounts(
    data_dir: &Path,
    province: Province,
    accounts: u64,
    opened_wall_ms: i64,
) -> Result<BulkLoad, BenchError> {
    if accounts > BULK_ACCOUNTS_MAX {
        return Err(BenchError::Invalid(format!(
            "--accounts is at most {BULK_ACCOUNTS_MAX}"
        )));
    }
    let balance = Money::from_fen(FILLER_BALANCE_FEN).map_err(|e| BenchError::step("balance", e))?;
    let started = Instant::now();
    let store = Store::open(data_dir, &StoreConfig::default())?;
    let mut next = 0u64;
    let mut sets = 0u64;
    let mut writes = Vec::with_capacity(usize::try_from(BULK_ACCOUNTS_PER_SET.saturating_mul(2)).unwrap_or(0));
    while next < accounts {
        let end = next.saturating_add(BULK_ACCOUNTS_PER_SET).min(accounts);
        writes.clear();
        for index in next..end {
            let person = filler_person(province, index);
            let mut account = Account::open(person, "bench".to_string(), province, Scheme::Employee, opened_wall_ms);
            account.balance = balance;
            writes.push(Write::Journal(JournalEntry {
                kind: JournalKind::Credit,
                wall_ms: opened_wall_ms,
                amount: balance,
                account: Some(person),
                leg: None,
                binding: None,
                settlement: None,
                counterparty: Some(province),
                reference: Some("opening balance".into()),
            }));
            writes.push(Write::Account(account));
        }
        store.apply(&writes)?;
        sets = sets.saturating_add(1);
        if sets % BULK_SETS_PER_FLUSH == 0 {
            store.flush_blocking()?;
        }
        next = end;
    }
    store.flush_blocking()?;
    drop(store);
    let seconds = started.elapsed().as_secs_f64();
    let checkpoint = Instant::now();
    drop(Store::open(data_dir, &StoreConfig::default())?);
    let checkpoint_s = checkpoint.elapsed().as_secs_f64();
    Ok(BulkLoad {
        checkpoint_s,
        accounts,
        seconds,
        accounts_per_s: if seconds > 0.0 { accounts as f64 / seconds } else { 0.0 },
        store_bytes: store_bytes(data_dir),
    })
}

/// A benchmark family: a resident-scheme patient (no personal account, so every settlement
/// is paid by grantors) and one or two employee grantors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    pub patient: (Province, PersonId),
    pub grantors: Vec<(Province, PersonId)>,
}

fn conn_of(conns: &[(Province, BureauConn)], province: Province) -> Result<BureauConn, BenchError> {
    conns
        .iter()
        .find(|(p, _)| *p == province)
        .map(|(_, c)| c.clone())
        .ok_or_else(|| BenchError::Invalid(format!("no node for {province}")))
}

async fn call(conn: &mut BureauConn, request: ClientRequest) -> Result<ClientReply, BenchError> {
    conn.call(request)
        .await
        .map_err(|status| BenchError::step("bureau call", status.message()))
}

async fn set_up_family(conns: Arc<Vec<(Province, BureauConn)>>, family: Family) -> Result<(), BenchError> {
    let (home, patient) = family.patient;
    let mut conn = conn_of(&conns, home)?;
    let opened = call(
        &mut conn,
        ClientRequest::OpenAccount {
            person: patient,
            name: "bench patient".into(),
            scheme: Scheme::Resident,
            balance: Money::ZERO,
        },
    )
    .await?;
    if !matches!(opened, ClientReply::Account(_)) {
        return Err(BenchError::step("opening a patient", format!("{opened:?}")));
    }
    let grantor_balance = Money::from_fen(GRANTOR_BALANCE_FEN).map_err(|e| BenchError::step("balance", e))?;
    for (province, grantor) in family.grantors {
        let mut conn = conn_of(&conns, province)?;
        let opened = call(
            &mut conn,
            ClientRequest::OpenAccount {
                person: grantor,
                name: "bench grantor".into(),
                scheme: Scheme::Employee,
                balance: grantor_balance,
            },
        )
        .await?;
        if !matches!(opened, ClientReply::Account(_)) {
            return Err(BenchError::step("opening a grantor", format!("{opened:?}")));
        }
        let bound = call(
            &mut conn,
            ClientRequest::Bind(BindRequest {
                grantor,
                grantee: patient,
                grantee_province: home,
                relation: Relation::Child,
                kind: BindingKind::MutualAid,
                limits: Limits::default(),
                evidence: Evidence {
                    document: DocumentKind::HouseholdRegister,
                    reference: "BENCH-HR".into(),
                    face_verified: true,
                    commitment_signed: true,
                },
            }),
        )
        .await?;
        if !matches!(bound, ClientReply::Bound { .. }) {
            return Err(BenchError::step("binding a family", format!("{bound:?}")));
        }
    }
    Ok(())
}

/// Opens and binds `families` through the bureau API, [`SETUP_CONCURRENCY`] at a time.
pub async fn set_up_families(conns: Vec<(Province, BureauConn)>, families: Vec<Family>) -> Result<f64, BenchError> {
    let started = Instant::now();
    let conns = Arc::new(conns);
    let limit = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for family in families {
        let permit = Arc::clone(&limit)
            .acquire_owned()
            .await
            .map_err(|e| BenchError::step("setup limit", e))?;
        let conns = Arc::clone(&conns);
        tasks.spawn(async move {
            let result = set_up_family(conns, family).await;
            drop(permit);
            result
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| BenchError::step("setup task", e))??;
    }
    Ok(started.elapsed().as_secs_f64())
}
