//! `exchange ctl records | clearing | reconcile`: what a bureau reads back from its node's
//! journal: a person's history, net positions against every peer, and the leg-by-leg
//! reconciliation with one peer (exit code 1 on a mismatch).

use anyhow::anyhow;
use clap::Args;
use exchange_core::{PersonId, Province};
use exchange_node::client::BureauConn;
use exchange_proto::pb;
use serde_json::{Value, json};
use time::macros::{format_description, offset};
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

use crate::Failure;

#[derive(Debug, Args)]
pub struct RecordsArgs {
    /// The person whose history is shown (as grantor: every use of their money, with the
    /// relative it paid for).
    #[arg(long)]
    person: PersonId,
    /// Show entries older than this sequence number (the `next_before_seq` of a page).
    #[arg(long, default_value_t = 0)]
    before: u64,
    /// Entries per page (at most 500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

#[derive(Debug, Args)]
pub struct PeriodArgs {
    /// First day of the period (YYYY-MM-DD, China Standard Time, UTC+8).
    #[arg(long, value_parser = parse_day)]
    from: Date,
    /// Last day of the period, included (YYYY-MM-DD, China Standard Time).
    #[arg(long, value_parser = parse_day)]
    to: Date,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The other province's code (6 digits), e.g. 500000.
    #[arg(long)]
    peer: Province,
    #[command(flatten)]
    period: PeriodArgs,
}

fn parse_day(text: &str) -> Result<Date, String> {
    Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map_err(|error| format!("{text:?} is not a date as YYYY-MM-DD: {error}"))
}

impl PeriodArgs {
    /// `[from 00:00, the day after to 00:00)` in China Standard Time, as Unix milliseconds:
    /// bureaus reconcile and clear by local day.
    fn period_ms(&self) -> Result<(i64, i64), Failure> {
        if self.to < self.from {
            return Err(Failure::Input(anyhow!(
                "--to {} is before --from {}",
                self.to,
                self.from
            )));
        }
        let midnight = |day: Date| -> i64 {
            let at = PrimitiveDateTime::new(day, Time::MIDNIGHT).assume_offset(offset!(+8));
            i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
        };
        let after_last = self
            .to
            .next_day()
            .ok_or_else(|| Failure::Input(anyhow!("--to {} is the last day there is", self.to)))?;
        Ok((midnight(self.from), midnight(after_last)))
    }
}

fn did_not_answer(status: tonic::Status) -> Failure {
    Failure::Input(anyhow!("{} ({:?})", status.message(), status.code()))
}

fn wall_time(wall_ms: i64) -> String {
    let at =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_ms) * 1_000_000).map(|at| at.to_offset(offset!(+8)));
    match at {
        Ok(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        ),
        Err(_) => format!("@{wall_ms}ms"),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::JournalKind::try_from(kind) {
        Ok(pb::JournalKind::Credit) => "credit",
        Ok(pb::JournalKind::Debit) => "debit",
        Ok(pb::JournalKind::RefundCredit) => "refund_credit",
        Ok(pb::JournalKind::MutualAidReceived) => "mutual_aid_received",
        Ok(pb::JournalKind::MutualAidRefunded) => "mutual_aid_refunded",
        Ok(pb::JournalKind::TransferSent) => "transfer_sent",
        Ok(pb::JournalKind::TransferReceived) => "transfer_received",
        _ => "unknown",
    }
}

fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

fn signed_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}", yuan(fen.unsigned_abs()))
}

pub async fn records(conn: &mut BureauConn, args: RecordsArgs, json_out: bool) -> Result<(), Failure> {
    let page = conn
        .records(&args.person, args.before, args.limit)
        .await
        .map_err(did_not_answer)?;
    let rows: Vec<Value> = page
        .records
        .iter()
        .map(|record| {
            let entry = record.entry.clone().unwrap_or_default();
            json!({
                "seq": record.seq,
                "wall_ms": entry.wall_ms,
                "kind": kind_name(entry.kind),
                "amount_fen": entry.amount_fen,
                "settlement": entry.settlement,
                "binding": entry.binding,
                "relative": record.relative,
                "counterparty": entry.counterparty,
                "reference": entry.reference,
            })
        })
        .collect();
    if json_out {
        println!(
            "{}",
            json!({ "person": page.person, "records": rows, "next_before_seq": page.next_before_seq })
        );
        return Ok(());
    }
    println!("history of {} (newest first)", page.person);
    println!(
        "{:>8}  {:<19}  {:<20} {:>12}  {:<24} {:<18} where",
        "seq", "when (UTC+8)", "what", "yuan", "settlement", "relative"
    );
    for record in &page.records {
        let entry = record.entry.clone().unwrap_or_default();
        let place = match (entry.counterparty, entry.reference.as_deref()) {
            (Some(province), Some(reference)) => format!("{} {reference}", province_name(province)),
            (Some(province), None) => province_name(province),
            (None, Some(reference)) => reference.to_string(),
            (None, None) => String::new(),
        };
        println!(
            "{:>8}  {:<19}  {:<20} {:>12}  {:<24} {:<18} {place}",
            record.seq,
            wall_time(entry.wall_ms),
            kind_name(entry.kind),
            yuan(entry.amount_fen),
            entry.settlement.as_deref().unwrap_or("-"),
            record.relative.as_deref().unwrap_or("-"),
        );
    }
    if page.next_before_seq != 0 {
        println!("more: --before {}", page.next_before_seq);
    }
    Ok(())
}

fn province_name(code: u32) -> String {
    match Province::from_code(code) {
        Ok(province) => format!("{code} {}", province.name()),
        Err(_) => code.to_string(),
    }
}

fn position_json(position: Option<&pb::Position>) -> Value {
    let position = position.copied().unwrap_or_default();
    json!({
        "paid_for_peer_fen": position.paid_for_peer_fen,
        "refunded_by_peer_fen": position.refunded_by_peer_fen,
        "received_from_peer_fen": position.received_from_peer_fen,
        "returned_to_peer_fen": position.returned_to_peer_fen,
        "net_owed_to_peer_fen": position.net_owed_to_peer_fen,
    })
}

pub async fn clearing(conn: &mut BureauConn, args: PeriodArgs, json_out: bool) -> Result<(), Failure> {
    let (from_ms, to_ms) = args.period_ms()?;
    let report = conn.clearing(from_ms, to_ms).await.map_err(did_not_answer)?;
    if json_out {
        let positions: Vec<Value> = report
            .positions
            .iter()
            .map(|p| {
                let mut value = position_json(p.position.as_ref());
                value["peer"] = json!(p.peer);
                value
            })
            .collect();
        println!(
            "{}",
            json!({ "province": report.province, "from": args.from.to_string(), "to": args.to.to_string(),
                    "from_ms": from_ms, "to_ms": to_ms, "positions": positions })
        );
        return Ok(());
    }
    println!(
        "clearing of {} from {} to {} (UTC+8), yuan",
        province_name(report.province),
        args.from,
        args.to
    );
    println!(
        "{:<16} {:>14} {:>14} {:>14} {:>14} {:>16}",
        "peer", "paid for peer", "refunded back", "peer paid us", "returned", "we owe (net)"
    );
    for peer in &report.positions {
        let position = peer.position.unwrap_or_default();
        println!(
            "{:<16} {:>14} {:>14} {:>14} {:>14} {:>16}",
            province_name(peer.peer),
            yuan(position.paid_for_peer_fen),
            yuan(position.refunded_by_peer_fen),
            yuan(position.received_from_peer_fen),
            yuan(position.returned_to_peer_fen),
            signed_yuan(position.net_owed_to_peer_fen),
        );
    }
    if report.positions.is_empty() {
        println!("(no cross-province legs in the period)");
    }
    Ok(())
}

pub async fn reconcile(conn: &mut BureauConn, args: ReconcileArgs, json_out: bool) -> Result<(), Failure> {
    let (from_ms, to_ms) = args.period.period_ms()?;
    let report = conn
        .reconcile(args.peer, from_ms, to_ms)
        .await
        .map_err(did_not_answer)?;
    let net = report.own.as_ref().map_or(0, |own| own.net_owed_to_peer_fen);
    if json_out {
        let mismatches: Vec<Value> = report
            .mismatches
            .iter()
            .map(|m| {
                json!({
                    "leg": m.leg.clone().map(|leg| exchange_core::LegId::try_from(leg).map(|l| l.to_string()).unwrap_or_default()),
                    "role": m.role, "payer": m.payer, "coordinator": m.coordinator, "problem": m.problem,
                    "payer_fen": m.payer_fen, "coordinator_fen": m.coordinator_fen,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "province": report.province, "peer": report.peer,
                "from": args.period.from.to_string(), "to": args.period.to.to_string(),
                "from_ms": report.from_ms, "to_ms": report.to_ms,
                "legs_compared": report.legs_compared, "legs_matched": report.legs_matched,
                "own": position_json(report.own.as_ref()), "peer_side": position_json(report.peer_side.as_ref()),
                "net_owed_to_peer_fen": net,
                "mismatch_count": report.mismatch_count, "mismatches": mismatches,
                "reconciled": report.mismatch_count == 0,
            })
        );
    } else {
        println!(
            "reconciliation of {} with {} from {} to {} (UTC+8)",
            province_name(report.province),
            province_name(report.peer),
            args.period.from,
            args.period.to
        );
        println!(
            "legs compared {}, matched {}, mismatched {}",
            report.legs_compared, report.legs_matched, report.mismatch_count
        );
        let own = report.own.unwrap_or_default();
        let peer = report.peer_side.unwrap_or_default();
        println!(
            "our accounts paid for their patients {} (refunded {}); theirs paid for ours {} (refunded {})",
            yuan(own.paid_for_peer_fen),
            yuan(own.refunded_by_peer_fen),
            yuan(own.received_from_peer_fen),
            yuan(own.returned_to_peer_fen)
        );
        println!(
            "their journal says: they paid for ours {} (refunded {}); ours paid for theirs {} (refunded {})",
            yuan(peer.paid_for_peer_fen),
            yuan(peer.refunded_by_peer_fen),
            yuan(peer.received_from_peer_fen),
            yuan(peer.returned_to_peer_fen)
        );
        match net {
            0 => println!("net: nothing owed either way"),
            n if n > 0 => println!("net: {} owes {} {}", report.province, report.peer, signed_yuan(n)),
            n => println!("net: {} owes {} {}", report.peer, report.province, signed_yuan(-n)),
        }
        for m in &report.mismatches {
            let leg = m
                .leg
                .clone()
                .and_then(|leg| exchange_core::LegId::try_from(leg).ok())
                .map(|leg| leg.to_string())
                .unwrap_or_default();
            let amounts = match (m.payer_fen, m.coordinator_fen) {
                (Some(paid), Some(claimed)) => format!(": payer {} vs coordinator {}", yuan(paid), yuan(claimed)),
                (Some(paid), None) => format!(": payer recorded {}", yuan(paid)),
                (None, Some(claimed)) => format!(": coordinator recorded {}", yuan(claimed)),
                (None, None) => String::new(),
            };
            println!("MISMATCH {} {leg} (payer {}): {}{amounts}", m.role, m.payer, m.problem);
        }
        let listed = u64::try_from(report.mismatches.len()).unwrap_or(u64::MAX);
        if report.mismatch_count > listed {
            println!("... and {} more", report.mismatch_count - listed);
        }
    }
    if report.mismatch_count > 0 {
        return Err(Failure::Check(anyhow!(
            "{} legs do not reconcile with {}",
            report.mismatch_count,
            report.peer
        )));
    }
    Ok(())
}
