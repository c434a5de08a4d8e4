//! `exchange ctl`: a bureau's commands against its own node, with the bureau certificate the
//! node's configuration names. Amounts are yuan on the command line and integer fen in JSON.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use exchange_core::binding::{BindRequest, DocumentKind, Evidence};
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::records::{Receipt, RefundReceipt, RefundRequest, SettleRequest, TransferReceipt, TransferStatus};
use exchange_core::{
    Account, Binding, BindingId, BindingKind, CreditId, Limits, Money, PersonId, Province, RefundId, Region, Relation,
    Scheme, SettlementId, TransferId,
};
use exchange_node::NodeConfig;
use exchange_node::client::BureauConn;
use serde_json::{Value, json};

use crate::Failure;

pub use audit::{OfflineVerifyArgs, run_offline as run_audit_verify};

#[path = "audit.rs"]
mod audit;
#[path = "import.rs"]
mod import;
#[path = "ledger.rs"]
mod ledger;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The node's configuration file (its address and the bureau certificate are taken from it).
    #[arg(long)]
    config: PathBuf,
    /// Print JSON (amounts as integer fen in keys ending `_fen`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Accounts: open, show, freeze (card lost), unfreeze, close.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Credit (划入) an amount to an account, applied once per id.
    Credit {
        #[arg(long)]
        id: CreditId,
        #[arg(long)]
        person: PersonId,
        /// Yuan, e.g. 100.00.
        #[arg(long)]
        amount: Money,
    },
    /// Bind a grantor (on this node) to a close relative (here or in another province).
    Bind(BindArgs),
    /// Revoke a binding (effective at once on the grantor's node).
    Unbind {
        #[arg(long)]
        binding: BindingId,
    },
    /// A person's bindings as grantor and as grantee.
    Bindings {
        #[arg(long)]
        person: PersonId,
    },
    /// Settle a bill's self-pay part for a patient insured in this province.
    Settle(SettleArgs),
    /// Set the family's order of a grantee's grantors (first payer first).
    Order {
        #[arg(long)]
        grantee: PersonId,
        /// Binding ids, comma-separated, first payer first.
        #[arg(long, value_delimiter = ',', required = true)]
        bindings: Vec<BindingId>,
    },
    /// Change a binding's limits (omitted limits are removed).
    Limits {
        #[arg(long)]
        binding: BindingId,
        #[arg(long)]
        per_settlement: Option<Money>,
        #[arg(long)]
        monthly: Option<Money>,
    },
    /// Cancel a settlement (like interface 2208): refund all still unrefunded, exactly once.
    Cancel {
        #[arg(long)]
        settlement: SettlementId,
    },
    /// Reverse a message by its original id (冲正, like interface 2601).
    Reverse {
        #[arg(long)]
        message: SettlementId,
    },
    /// Refund all or part of a settlement, exactly once per refund id.
    Refund {
        #[arg(long)]
        settlement: SettlementId,
        #[arg(long)]
        id: RefundId,
        /// Yuan; the whole refundable amount when omitted.
        #[arg(long)]
        amount: Option<Money>,
    },
    /// Bulk import from the bureau's CSV export (see docs/operations.md).
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Credits (划入) from CSV: credit_id,person,amount_yuan; each applied once per credit id.
    CreditBatch(import::FileArgs),
    /// A person's history, newest first and paginated: as grantor, every use of their money
    /// by each relative (when, where, how much, which settlement).
    Records(ledger::RecordsArgs),
    /// Net positions (清算) against every peer province for a period, from this node's journal.
    Clearing(ledger::PeriodArgs),
    /// Compare this node's journal with a peer's leg by leg for a period (对账): totals, the
    /// net amount owed, every mismatch; exit code 1 on a mismatch.
    Reconcile(ledger::ReconcileArgs),
    /// The node's operator audit log: `list` its records, `verify` its hash chain (exit code 1
    /// when broken).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Wallet transfer (the national model of 2025): push money from a grantor of this province
    /// to the relative of a mutual-aid binding, in two phases, applied once per id. Exit code 1
    /// when refused (the receipt says why; nothing moved).
    Transfer {
        /// The transfer id, chosen by the bureau (a retry with the same id is applied once).
        #[arg(long)]
        id: TransferId,
        #[arg(long)]
        grantor: PersonId,
        /// The grantor's mutual-aid binding whose grantee receives.
        #[arg(long)]
        binding: BindingId,
        /// Yuan, e.g. 500.00 (at most 2,000 under the national policy).
        #[arg(long)]
        amount: Money,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    Open {
        #[arg(long)]
        person: PersonId,
        #[arg(long)]
        name: String,
        #[arg(long)]
        scheme: Scheme,
        /// Opening balance in yuan (employees only).
        #[arg(long, default_value = "0")]
        balance: Money,
    },
    Show {
        #[arg(long)]
        person: PersonId,
    },
    Freeze {
        #[arg(long)]
        person: PersonId,
        #[arg(long)]
        reason: String,
    },
    Unfreeze {
        #[arg(long)]
        person: PersonId,
    },
    Close {
        #[arg(long)]
        person: PersonId,
    },
}

#[derive(Debug, Args)]
struct BindArgs {
    #[arg(long)]
    grantor: PersonId,
    #[arg(long)]
    grantee: PersonId,
    /// The grantee's insured province (default: this node's).
    #[arg(long)]
    grantee_province: Option<Province>,
    /// What the grantee is to the grantor: spouse, parent, child, sibling, grandparent, grandchild.
    #[arg(long)]
    relation: Relation,
    /// mutual-aid (money may move) or proxy (亲情账户: may act for, no money).
    #[arg(long)]
    kind: BindingKind,
    #[arg(long)]
    limit_per_settlement: Option<Money>,
    #[arg(long)]
    limit_monthly: Option<Money>,
    /// household-register, marriage-certificate or birth-certificate.
    #[arg(long, default_value = "household-register")]
    document: DocumentKind,
    /// The document's number or the bureau's file reference.
    #[arg(long, default_value = "recorded-at-counter")]
    evidence_ref: String,
    /// The grantee is under 16 and binds without face verification.
    #[arg(long)]
    under_16: bool,
}

#[derive(Debug, Args)]
struct SettleArgs {
    /// The settlement id (setl_id) chosen by the hospital.
    #[arg(long)]
    id: SettlementId,
    /// The patient.
    #[arg(long)]
    person: PersonId,
    /// The self-pay part (个人自付), yuan.
    #[arg(long)]
    self_pay: Money,
    /// The total fee, yuan (default: fund-paid plus self-pay).
    #[arg(long)]
    total: Option<Money>,
    /// The pooled fund's part, yuan.
    #[arg(long, default_value = "0")]
    fund_paid: Money,
    /// The designated institution's code.
    #[arg(long, default_value = "H00000000")]
    institution: String,
    /// Where the treatment happened (default: this province).
    #[arg(long)]
    treatment_region: Option<Region>,
}

pub fn run(args: CtlArgs) -> Result<(), Failure> {
    let config = NodeConfig::load(&args.config).map_err(anyhow::Error::from)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(execute(config, args.command, args.json))
}

fn account_json(account: &Account) -> Value {
    json!({
        "person": account.person.to_string(),
        "name": account.name,
        "province": account.province.code(),
        "scheme": account.scheme,
        "balance_fen": account.balance.fen(),
        "held_fen": account.held.fen(),
        "available_fen": account.available().fen(),
        "frozen": account.frozen,
        "frozen_reason": account.frozen_reason,
        "closed": account.closed,
    })
}

fn binding_json(binding: &Binding) -> Value {
    json!({
        "binding_id": binding.id.to_string(),
        "grantor": binding.grantor.to_string(),
        "grantor_province": binding.grantor_province.code(),
        "grantee": binding.grantee.to_string(),
        "grantee_province": binding.grantee_province.code(),
        "relation": binding.relation,
        "kind": binding.kind,
        "status": status_name(&binding.status),
        "limit_per_settlement_fen": binding.limits.per_settlement.map(Money::fen),
        "limit_monthly_fen": binding.limits.monthly.map(Money::fen),
        "position": binding.position,
    })
}

/// The receipt as JSON, with the keys operators' scripts read.
pub fn receipt_json(receipt: &Receipt) -> Value {
    json!({
        "settlement_id": receipt.settlement.to_string(),
        "status": "committed",
        "patient": receipt.patient.to_string(),
        "self_pay_fen": receipt.self_pay.fen(),
        "own_account_paid_fen": receipt.own_account_paid.fen(),
        "own_balance_after_fen": receipt.own_balance_after.map(Money::fen),
        "mutual_aid": receipt.mutual_aid.iter().map(|part| json!({
            "grantor": part.grantor.to_string(),
            "province": part.province.code(),
            "amount_fen": part.amount.fen(),
            "binding": part.binding.to_string(),
            "balance_after_fen": part.balance_after.fen(),
        })).collect::<Vec<_>>(),
        "cash_paid_fen": receipt.cash_paid.fen(),
        "not_paying": receipt.not_paying.iter().map(|n| json!({
            "grantor": n.grantor.to_string(),
            "province": n.province.code(),
            "binding": n.binding.to_string(),
            "reason": n.reason.code(),
        })).collect::<Vec<_>>(),
        "own_refusal": receipt.own_refusal.map(|r| r.code()),
        "rounds": receipt.rounds,
    })
}

fn refund_json(receipt: &RefundReceipt) -> Value {
    json!({
        "refund_id": receipt.refund.to_string(),
        "settlement_id": receipt.settlement.to_string(),
        "amount_fen": receipt.amount.fen(),
        "parts": receipt.parts.iter().map(|part| json!({
            "account": part.account.to_string(),
            "province": part.province.code(),
            "amount_fen": part.amount.fen(),
            "binding": part.binding.map(|b| b.to_string()),
        })).collect::<Vec<_>>(),
        "cash_fen": receipt.cash.fen(),
    })
}

/// A wallet transfer's receipt as JSON.
pub fn transfer_json(receipt: &TransferReceipt) -> Value {
    json!({
        "transfer_id": receipt.transfer.to_string(),
        "status": receipt.status.code(),
        "amount_fen": receipt.amount.fen(),
        "reason": receipt.reason.map(|r| r.code()),
        "grantor": receipt.grantor.to_string(),
        "binding": receipt.binding.to_string(),
        "grantee": receipt.grantee.to_string(),
        "grantee_province": receipt.grantee_province.code(),
        "grantor_available_after_fen": receipt.grantor_available_after.map(Money::fen),
    })
}

fn print_transfer(receipt: &TransferReceipt) {
    let to = format!(
        "{} ({}) along binding {}",
        receipt.grantee,
        receipt.grantee_province.name(),
        receipt.binding
    );
    match receipt.reason {
        None => println!(
            "transfer {} committed: {} from {} to {to}",
            receipt.transfer, receipt.amount, receipt.grantor
        ),
        Some(reason) => println!(
            "transfer {} refused ({reason}): {} from {} to {to}; nothing moved",
            receipt.transfer, receipt.amount, receipt.grantor
        ),
    }
}

fn print_receipt(receipt: &Receipt) {
    println!(
        "settlement {} committed (self-pay {})",
        receipt.settlement, receipt.self_pay
    );
    // The own account's balance after the payment is known when it was asked and answered;
    // otherwise the reason it paid nothing is printed instead.
    let own_note = match (receipt.own_refusal, receipt.own_balance_after) {
        (Some(refusal), _) => format!("  pays nothing: {refusal}"),
        (None, Some(balance)) => format!("  balance after {balance}"),
        (None, None) => "  no personal account".to_string(),
    };
    println!(
        "  {:<29} {:>12}{own_note}",
        "own account",
        receipt.own_account_paid.to_string()
    );
    for part in &receipt.mutual_aid {
        println!(
            "  {:<29} {:>12}  balance after {}  binding {}",
            format!("{} {}", part.grantor, part.province.name()),
            part.amount.to_string(),
            part.balance_after,
            part.binding
        );
    }
    for n in &receipt.not_paying {
        println!(
            "  {:<29} {:>12}  pays nothing: {}  binding {}",
            format!("{} {}", n.grantor, n.province.name()),
            "0.00",
            n.reason,
            n.binding
        );
    }
    println!("  {:<29} {:>12}", "cash", receipt.cash_paid.to_string());
}

async fn execute(config: NodeConfig, command: CtlCommand, json_out: bool) -> Result<(), Failure> {
    let province = config.province;
    let mut conn = BureauConn::connect(&config).await.context("connecting to the node")?;
    let reply = match command {
        CtlCommand::Import(command) => return import::run_import(conn, province, command, json_out).await,
        CtlCommand::CreditBatch(file) => return import::run_credits(conn, province, file, json_out).await,
        CtlCommand::Records(args) => return ledger::records(&mut conn, args, json_out).await,
        CtlCommand::Clearing(args) => return ledger::clearing(&mut conn, args, json_out).await,
        CtlCommand::Reconcile(args) => return ledger::reconcile(&mut conn, args, json_out).await,
        CtlCommand::Audit(command) => return audit::run(&mut conn, command, json_out).await,
        CtlCommand::Account(AccountCommand::Show { person }) => {
            let account = conn
                .account(&person)
                .await
                .map_err(|s| anyhow!("the node did not answer: {}", s.message()))?;
            let account = account
                .ok_or_else(|| anyhow!("{person} is not enrolled on the node of {province} (unknown_person)"))?;
            if json_out {
                println!("{}", account_json(&account));
            } else {
                println!(
                    "{} {} ({:?}) balance {} held {} available {}{}",
                    account.person,
                    account.name,
                    account.scheme,
                    account.balance,
                    account.held,
                    account.available(),
                    if account.frozen { " FROZEN" } else { "" }
                );
            }
            return Ok(());
        }
        CtlCommand::Bindings { person } => {
            let (as_grantor, as_grantee) = conn
                .bindings(&person)
                .await
                .map_err(|s| anyhow!("the node did not answer: {}", s.message()))?;
            if json_out {
                let list = |b: &[Binding]| b.iter().map(binding_json).collect::<Vec<_>>();
                println!(
                    "{}",
                    json!({ "person": person.to_string(), "as_grantor": list(&as_grantor), "as_grantee": list(&as_grantee) })
                );
            } else {
                for (role, list) in [("grantor", &as_grantor), ("grantee", &as_grantee)] {
                    for b in list.iter() {
                        println!(
                            "as {role}: {} {} -> {} {:?} {:?} {:?}",
                            b.id, b.grantor, b.grantee, b.relation, b.kind, b.status
                        );
                    }
                }
            }
            return Ok(());
        }
        CtlCommand::Account(AccountCommand::Open {
            person,
            name,
            scheme,
            balance,
        }) => {
            call(
                &mut conn,
                ClientRequest::OpenAccount {
                    person,
                    name,
                    scheme,
                    balance,
                },
            )
            .await?
        }
        CtlCommand::Account(AccountCommand::Freeze { person, reason }) => {
            call(&mut conn, ClientRequest::Freeze { person, reason }).await?
        }
        CtlCommand::Account(AccountCommand::Unfreeze { person }) => {
            call(&mut conn, ClientRequest::Unfreeze { person }).await?
        }
        CtlCommand::Account(AccountCommand::Close { person }) => {
            call(&mut conn, ClientRequest::Close { person }).await?
        }
        CtlCommand::Credit { id, person, amount } => {
            call(
                &mut conn,
                ClientRequest::Credit {
                    credit: id,
                    person,
                    amount,
                },
            )
            .await?
        }
        CtlCommand::Bind(bind) => {
            let request = BindRequest {
                grantor: bind.grantor,
                grantee: bind.grantee,
                grantee_province: bind.grantee_province.unwrap_or(province),
                relation: bind.relation,
                kind: bind.kind,
                limits: Limits {
                    per_settlement: bind.limit_per_settlement,
                    monthly: bind.limit_monthly,
                },
                evidence: Evidence {
                    document: bind.document,
                    reference: bind.evidence_ref,
                    face_verified: !bind.under_16,
                    commitment_signed: true,
                },
            };
            call(&mut conn, ClientRequest::Bind(request)).await?
        }
        CtlCommand::Unbind { binding } => call(&mut conn, ClientRequest::Unbind { binding }).await?,
        CtlCommand::Settle(settle) => {
            let total_fee = match settle.total {
                Some(total) => total,
                None => settle
                    .fund_paid
                    .checked_add(settle.self_pay)
                    .map_err(|e| anyhow!("amounts: {e}"))?,
            };
            let settlement = settle.id.clone();
            let request = SettleRequest {
                settlement: settle.id,
                patient: settle.person,
                total_fee,
                fund_paid: settle.fund_paid,
                self_pay: settle.self_pay,
                institution: settle.institution,
                treatment_region: settle.treatment_region.unwrap_or_else(|| Region::from(province)),
                insured_region: Region::from(province),
            };
            match call(&mut conn, ClientRequest::Settle(request)).await? {
                ClientReply::Error(error) if json_out => {
                    println!(
                        "{}",
                        json!({ "settlement_id": settlement.to_string(), "status": "rejected", "reason": error.reason, "message": error.message })
                    );
                    return Err(Failure::Input(anyhow!("{} ({})", error.message, error.reason)));
                }
                other => other,
            }
        }
        CtlCommand::Order { grantee, bindings } => {
            call(&mut conn, ClientRequest::SetOrder { grantee, bindings }).await?
        }
        CtlCommand::Limits {
            binding,
            per_settlement,
            monthly,
        } => {
            call(
                &mut conn,
                ClientRequest::SetLimits {
                    binding,
                    limits: Limits {
                        per_settlement,
                        monthly,
                    },
                },
            )
            .await?
        }
        CtlCommand::Cancel { settlement } => call(&mut conn, ClientRequest::Cancel { settlement }).await?,
        CtlCommand::Reverse { message } => call(&mut conn, ClientRequest::Reverse { message }).await?,
        CtlCommand::Transfer {
            id,
            grantor,
            binding,
            amount,
        } => {
            let request = ClientRequest::Transfer {
                transfer: id.clone(),
                grantor,
                binding,
                amount,
            };
            match call(&mut conn, request).await? {
                ClientReply::Error(error) if json_out => {
                    println!(
                        "{}",
                        json!({ "transfer_id": id.to_string(), "status": "rejected", "amount_fen": amount.fen(), "reason": error.reason, "message": error.message })
                    );
                    return Err(Failure::Input(anyhow!("{} ({})", error.message, error.reason)));
                }
                ClientReply::Transferred(receipt) if receipt.status == TransferStatus::Refused => {
                    print_reply(&ClientReply::Transferred(receipt.clone()), json_out)?;
                    let reason = receipt.reason.map_or("unknown", |r| r.code());
                    return Err(Failure::Check(anyhow!(
                        "transfer {} refused ({reason}); nothing moved",
                        receipt.transfer
                    )));
                }
                other => other,
            }
        }
        CtlCommand::Refund { settlement, id, amount } => {
            call(
                &mut conn,
                ClientRequest::Refund(RefundRequest {
                    refund: id,
                    settlement,
                    amount,
                }),
            )
            .await?
        }
    };
    print_reply(&reply, json_out)
}

async fn call(conn: &mut BureauConn, request: ClientRequest) -> Result<ClientReply, Failure> {
    conn.call(request)
        .await
        .map_err(|status| Failure::Input(anyhow!("the node did not answer: {}", status.message())))
}

fn status_name(status: &exchange_core::BindingStatus) -> &'static str {
    match status {
        exchange_core::BindingStatus::Pending => "pending",
        exchange_core::BindingStatus::Active => "active",
        exchange_core::BindingStatus::Refused => "refused",
        exchange_core::BindingStatus::Revoked { .. } => "revoked",
    }
}

fn print_reply(reply: &ClientReply, json_out: bool) -> Result<(), Failure> {
    let value = match reply {
        ClientReply::Error(error) => {
            return Err(Failure::Input(anyhow!("refused: {} ({})", error.message, error.reason)));
        }
        ClientReply::Account(account) => {
            if !json_out {
                println!(
                    "{} {} balance {} frozen {}",
                    account.person, account.name, account.balance, account.frozen
                );
            }
            account_json(account)
        }
        ClientReply::Credited {
            person,
            balance,
            duplicate,
        } => {
            if !json_out {
                println!(
                    "credited {person}: balance {balance}{}",
                    if *duplicate { " (already applied)" } else { "" }
                );
            }
            json!({ "person": person.to_string(), "balance_fen": balance.fen(), "duplicate": duplicate })
        }
        ClientReply::Bound { binding, status } => {
            if !json_out {
                println!("binding {binding}: {status:?}");
            }
            json!({ "binding_id": binding.to_string(), "status": status_name(status) })
        }
        ClientReply::Unbound { binding } => {
            if !json_out {
                println!("binding {binding} revoked");
            }
            json!({ "binding_id": binding.to_string(), "status": "revoked" })
        }
        ClientReply::Settled(receipt) => {
            if !json_out {
                print_receipt(receipt);
            }
            receipt_json(receipt)
        }
        ClientReply::Ordered { grantee, bindings } => {
            let ids: Vec<String> = bindings.iter().map(ToString::to_string).collect();
            if !json_out {
                println!("{grantee}'s grantors now pay in this order: {}", ids.join(", "));
            }
            json!({ "grantee": grantee.to_string(), "bindings": ids })
        }
        ClientReply::LimitsSet { binding, limits } => {
            if !json_out {
                println!(
                    "binding {binding}: limits per settlement {:?}, monthly {:?}",
                    limits.per_settlement.map(|m| m.to_string()),
                    limits.monthly.map(|m| m.to_string())
                );
            }
            json!({ "binding_id": binding.to_string(), "limit_per_settlement_fen": limits.per_settlement.map(Money::fen), "limit_monthly_fen": limits.monthly.map(Money::fen) })
        }
        ClientReply::Transferred(receipt) => {
            if !json_out {
                print_transfer(receipt);
            }
            transfer_json(receipt)
        }
        ClientReply::Refunded(receipt) => {
            if !json_out {
                println!(
                    "refund {} of {}: {} back to accounts in {} parts, {} in cash",
                    receipt.refund,
                    receipt.settlement,
                    receipt.amount.saturating_sub(receipt.cash),
                    receipt.parts.len(),
                    receipt.cash
                );
            }
            refund_json(receipt)
        }
    };
    if json_out {
        println!("{value}");
    }
    Ok(())
}
