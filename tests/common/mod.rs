//! Helpers of the tests that start real node processes: a cluster, families, and a model of
//! the balances the test expects.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use exchange_core::binding::{BindRequest, DocumentKind, Evidence};
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::records::{Receipt, SettleRequest};
use exchange_core::{
    Account, BindingId, BindingKind, Limits, Money, PersonId, Province, Region, Relation, Scheme, SettlementId,
};
use exchange_node::client::BureauConn;
use exchange_node::cluster::{ClusterOptions, LocalCluster};
use serde_json::Value;

pub const BEIJING: u32 = 110000;
pub const CHONGQING: u32 = 500000;
pub const SICHUAN: u32 = 510000;

pub fn p(code: u32) -> Province {
    Province::from_code(code).unwrap()
}

pub fn yuan(value: u64) -> Money {
    Money::from_yuan(value).unwrap()
}

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_exchange"))
}

/// Runs `exchange ctl --config CONFIG --json ARGS...`; returns the exit code, the JSON printed
/// (`Null` when nothing parseable was printed) and stderr.
pub fn ctl(config: &Path, args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(exe())
        .arg("ctl")
        .arg("--config")
        .arg(config)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        stderr,
    )
}

/// Yesterday and tomorrow in China Standard Time, as YYYY-MM-DD: a period that surely holds
/// everything a test does.
pub fn around_today() -> (String, String) {
    let today = exchange_pki::time::OffsetDateTime::now_utc()
        .to_offset(exchange_pki::time::UtcOffset::from_hms(8, 0, 0).unwrap())
        .date();
    let day = |d: exchange_pki::time::Date| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    (day(today.previous_day().unwrap()), day(today.next_day().unwrap()))
}

/// Three provinces as real processes, with short protocol timeouts so recovery is quick.
pub async fn cluster(dir: &std::path::Path) -> LocalCluster {
    let options = ClusterOptions {
        extra_config: "\n[protocol]\nvote_timeout_ms = 1000\nhold_timeout_ms = 4000\ncommit_margin_ms = 1500\nquery_retry_ms = 500\nresend_initial_ms = 200\nresend_max_ms = 1000\n".into(),
        ..ClusterOptions::default()
    };
    LocalCluster::launch(&exe(), dir, &[p(BEIJING), p(CHONGQING), p(SICHUAN)], &options)
        .await
        .unwrap()
}

pub fn adult(code: u32, sequence: u32) -> PersonId {
    PersonId::from_body(&format!("{code:06}19700101{sequence:03}")).unwrap()
}

pub async fn open(conn: &mut BureauConn, person: PersonId, balance: Money) {
    let reply = conn
        .call(ClientRequest::OpenAccount {
            person,
            name: "Test".into(),
            scheme: Scheme::Employee,
            balance,
        })
        .await
        .unwrap();
    assert!(matches!(reply, ClientReply::Account(_)), "{reply:?}");
}

pub async fn bind(
    conn: &mut BureauConn,
    grantor: PersonId,
    grantee: PersonId,
    grantee_province: Province,
    limits: Limits,
) -> BindingId {
    let reply = conn
        .call(ClientRequest::Bind(BindRequest {
            grantor,
            grantee,
            grantee_province,
            relation: Relation::Parent,
            kind: BindingKind::MutualAid,
            limits,
            evidence: Evidence {
                document: DocumentKind::HouseholdRegister,
                reference: "HR-1".into(),
                face_verified: true,
                commitment_signed: true,
            },
        }))
        .await
        .unwrap();
    match reply {
        ClientReply::Bound { binding, .. } => binding,
        other => panic!("bind: {other:?}"),
    }
}

pub fn settle_request(id: &str, patient: PersonId, self_pay: Money) -> SettleRequest {
    SettleRequest {
        settlement: SettlementId::new(id).unwrap(),
        patient,
        total_fee: self_pay.checked_add(yuan(100)).unwrap(),
        fund_paid: yuan(100),
        self_pay,
        institution: "H50010001".into(),
        treatment_region: Region::from_code(500100).unwrap(),
        insured_region: Region::from_code(CHONGQING).unwrap(),
    }
}

pub async fn settle(conn: &mut BureauConn, id: &str, patient: PersonId, self_pay: Money) -> ClientReply {
    conn.call(ClientRequest::Settle(settle_request(id, patient, self_pay)))
        .await
        .unwrap()
}

pub fn receipt(reply: ClientReply) -> Receipt {
    match reply {
        ClientReply::Settled(receipt) => receipt,
        other => panic!("expected a receipt: {other:?}"),
    }
}

pub async fn account(conn: &mut BureauConn, person: &PersonId) -> Account {
    conn.account(person).await.unwrap().unwrap()
}

/// The scripted family: a Chongqing grandmother, her son in Beijing, her daughter in Sichuan.
pub struct Family {
    pub grandmother: PersonId,
    pub son: PersonId,
    pub daughter: PersonId,
    pub son_binding: BindingId,
    pub daughter_binding: BindingId,
}

pub struct Conns {
    pub beijing: BureauConn,
    pub chongqing: BureauConn,
    pub sichuan: BureauConn,
}

pub async fn conns(cluster: &LocalCluster) -> Conns {
    Conns {
        beijing: cluster.conn(p(BEIJING)).await.unwrap(),
        chongqing: cluster.conn(p(CHONGQING)).await.unwrap(),
        sichuan: cluster.conn(p(SICHUAN)).await.unwrap(),
    }
}

pub async fn family(c: &mut Conns, serial: u32, son_limits: Limits) -> Family {
    let grandmother = adult(CHONGQING, serial);
    let son = adult(BEIJING, serial);
    let daughter = adult(SICHUAN, serial);
    open(&mut c.chongqing, grandmother, yuan(50)).await;
    open(&mut c.beijing, son, yuan(1000)).await;
    open(&mut c.sichuan, daughter, yuan(800)).await;
    let son_binding = bind(&mut c.beijing, son, grandmother, p(CHONGQING), son_limits).await;
    let daughter_binding = bind(&mut c.sichuan, daughter, grandmother, p(CHONGQING), Limits::default()).await;
    Family {
        grandmother,
        son,
        daughter,
        son_binding,
        daughter_binding,
    }
}

/// Expected balances, kept by the test from the receipts it received.
#[derive(Debug, Default)]
pub struct Model {
    pub balances: BTreeMap<PersonId, (Province, u64)>,
}

impl Model {
    pub fn open(&mut self, person: PersonId, province: Province, balance: Money) {
        self.balances.insert(person, (province, balance.fen()));
    }

    pub fn apply(&mut self, receipt: &Receipt) {
        if let Some(entry) = self.balances.get_mut(&receipt.patient) {
            entry.1 -= receipt.own_account_paid.fen();
        }
        for part in &receipt.mutual_aid {
            if let Some(entry) = self.balances.get_mut(&part.grantor) {
                entry.1 -= part.amount.fen();
            }
        }
    }

    /// Waits until every account has nothing held and matches the model (or panics with the
    /// differences after `timeout`).
    pub async fn check(&self, c: &mut Conns, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut problems = Vec::new();
            for (person, (province, expected)) in &self.balances {
                let conn = match province.code() {
                    BEIJING => &mut c.beijing,
                    CHONGQING => &mut c.chongqing,
                    _ => &mut c.sichuan,
                };
                match conn.account(person).await {
                    Ok(Some(account)) => {
                        if account.balance.fen() != *expected || !account.held.is_zero() {
                            problems.push(format!(
                                "{person}: balance {} held {} expected {}",
                                account.balance.fen(),
                                account.held.fen(),
                                expected
                            ));
                        }
                    }
                    other => problems.push(format!("{person}: {other:?}")),
                }
            }
            if problems.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "balances do not match the model: {problems:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
