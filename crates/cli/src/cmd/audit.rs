//! `exchange ctl audit list | verify`: the node's operator audit log (who by certificate, what,
//! when, with which result), and the check of its hash chain (exit code 1 when broken). Also
//! `exchange audit-verify --data-dir DIR`, the same check on a stopped node's store.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use exchange_node::client::BureauConn;
use exchange_proto::pb;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::offset;

use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Records in order, paginated: seq, time, actor (certificate), action, outcome, detail.
    List(ListArgs),
    /// Walk the whole hash chain on the node: exit 0 when intact, 1 with the first broken seq.
    Verify,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show records after this sequence number (the `next_after_seq` of a page).
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Records per page (at most 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

/// `exchange audit-verify`: verify a store's audit log without a running node.
#[derive(Debug, Args)]
pub struct OfflineVerifyArgs {
    /// The node's data directory (`data_dir` of its configuration). The node must be stopped:
    /// the store cannot be opened while a node holds it.
    #[arg(long)]
    data_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn did_not_answer(status: tonic::Status) -> Failure {
    Failure::Input(anyhow!("{} ({:?})", status.message(), status.code()))
}

fn wall_time(wall_ms: i64) -> String {
    let at =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_ms) * 1_000_000).map(|at| at.to_offset(offset!(+8)));
    match at {
        Ok(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        ),
        Err(_) => format!("@{wall_ms}ms"),
    }
}

/// The actor with its certificate serial cut to 12 hex digits, for the table (JSON has it all).
fn short_actor(actor: &str) -> String {
    match actor.split_once(" serial=") {
        Some((who, serial)) if serial.len() > 12 => format!("{who} serial={}…", serial.get(..12).unwrap_or(serial)),
        _ => actor.to_string(),
    }
}

pub async fn run(conn: &mut BureauConn, command: AuditCommand, json_out: bool) -> Result<(), Failure> {
    match command {
        AuditCommand::List(args) => list(conn, args, json_out).await,
        AuditCommand::Verify => {
            let verification = conn.verify_audit().await.map_err(did_not_answer)?;
            report(&verification, json_out)
        }
    }
}

async fn list(conn: &mut BureauConn, args: ListArgs, json_out: bool) -> Result<(), Failure> {
    let page = conn.audit_log(args.after, args.limit).await.map_err(did_not_answer)?;
    if json_out {
        let records: Vec<Value> = page
            .records
            .iter()
            .map(|r| {
                json!({
                    "seq": r.seq, "wall_ms": r.wall_ms, "actor": r.actor, "action": r.action,
                    "detail": r.detail, "outcome": r.outcome, "intent_seq": r.intent_seq,
                    "prev_hash": r.prev_hash_hex, "hash": r.hash_hex,
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "records": records, "next_after_seq": page.next_after_seq })
        );
        return Ok(());
    }
    println!(
        "{:>8}  {:<23}  {:<47} {:<14} {:<24} detail",
        "seq", "when (UTC+8)", "actor", "action", "outcome"
    );
    for r in &page.records {
        let outcome = match r.intent_seq {
            Some(intent) => format!("{} (of {intent})", r.outcome),
            None => r.outcome.clone(),
        };
        println!(
            "{:>8}  {:<23}  {:<47} {:<14} {:<24} {}",
            r.seq,
            wall_time(r.wall_ms),
            short_actor(&r.actor),
            r.action,
            outcome,
            r.detail
        );
    }
    if page.next_after_seq != 0 {
        println!("more: --after {}", page.next_after_seq);
    }
    Ok(())
}

/// Prints a verification; a broken chain is a failed check (exit code 1).
fn report(v: &pb::AuditVerification, json_out: bool) -> Result<(), Failure> {
    if json_out {
        println!(
            "{}",
            json!({
                "ok": v.ok, "records": v.records, "head_seq": v.head_seq, "head_hash": v.head_hash_hex,
                "broken_at_seq": v.broken_at_seq, "reason": v.reason,
                "intents_without_outcome": v.intents_without_outcome, "open_intents": v.open_intents,
            })
        );
    } else if v.ok {
        println!(
            "audit log intact: {} records, head {} hash {}",
            v.records, v.head_seq, v.head_hash_hex
        );
        if v.intents_without_outcome > 0 {
            let listed: Vec<String> = v.open_intents.iter().map(u64::to_string).collect();
            println!(
                "{} intents without an outcome (in flight, or lost in a crash): {}",
                v.intents_without_outcome,
                listed.join(", ")
            );
        }
    } else {
        println!(
            "audit log BROKEN at {}: {} ({} records verify before it, up to hash {})",
            v.broken_at_seq.unwrap_or_default(),
            v.reason,
            v.records,
            v.head_hash_hex
        );
    }
    if v.ok {
        Ok(())
    } else {
        Err(Failure::Check(anyhow!(
            "the audit log is broken at {}: {}",
            v.broken_at_seq.unwrap_or_default(),
            v.reason
        )))
    }
}

/// `exchange audit-verify --data-dir DIR`.
pub fn run_offline(args: OfflineVerifyArgs) -> Result<(), Failure> {
    let verification = exchange_store::verify_audit_at(&args.data_dir)
        .map_err(|error| Failure::Input(anyhow!("{}: {error}", args.data_dir.display())))?;
    report(&exchange_node::audit::verification_to_wire(verification), args.json)
}
