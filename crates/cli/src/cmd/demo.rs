//! `exchange demo`: the README's main command.
//!
//! Until the province node lands, this is an in-process demonstration of the deduction
//! planner on a sample family, and it says so.

use clap::Args;
use exchange_core::plan::{Candidate, OwnAccount, PlanInput, plan};
use exchange_core::{BindingId, GrantorOrder, Money, PersonId, Province, Refusal};

use crate::Failure;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the plans as JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn province(code: u32) -> anyhow::Result<Province> {
    Ok(Province::from_code(code)?)
}

fn grantor(code: u32, serial: u64, available_yuan: u64, frozen: bool) -> anyhow::Result<Candidate> {
    Ok(Candidate {
        binding: BindingId::new(province(code)?, serial),
        grantor: PersonId::synthetic(code, serial),
        province: province(code)?,
        available: Money::from_yuan(available_yuan)?,
        balance_for_order: Money::from_yuan(available_yuan)?,
        per_settlement_limit: None,
        monthly_remaining: None,
        position: 0,
        created_wall_ms: i64::try_from(serial)?,
        refusal: frozen.then_some(Refusal::AccountFrozen),
    })
}

pub fn run(args: DemoArgs) -> Result<(), Failure> {
    Ok(demonstrate(args)?)
}

fn demonstrate(args: DemoArgs) -> anyhow::Result<()> {
    // A Chongqing grandmother; her son in Beijing and her daughter in Sichuan pay for her.
    let son = grantor(110000, 1, 300, false)?;
    let daughter = grantor(510000, 2, 800, false)?;
    let cases = [
        (
            "own account covers the bill",
            Money::from_yuan(40)?,
            Some(120),
            vec![son.clone(), daughter.clone()],
        ),
        (
            "son then daughter pay",
            Money::from_yuan(700)?,
            Some(120),
            vec![son.clone(), daughter.clone()],
        ),
        (
            "son's card is lost: daughter pays",
            Money::from_yuan(500)?,
            Some(0),
            vec![grantor(110000, 1, 300, true)?, daughter.clone()],
        ),
        (
            "resident patient, family short: cash",
            Money::from_yuan(1500)?,
            None,
            vec![son, daughter],
        ),
    ];
    let mut plans = Vec::new();
    for (title, self_pay, own_yuan, candidates) in cases {
        let own = match own_yuan {
            Some(yuan) => Some(OwnAccount {
                available: Money::from_yuan(yuan)?,
                refusal: None,
            }),
            None => None,
        };
        let input = PlanInput {
            self_pay,
            own,
            candidates,
            order: GrantorOrder::BindingOrder,
        };
        plans.push((title, plan(&input)?));
    }
    if args.json {
        let value: Vec<_> = plans
            .iter()
            .map(|(title, p)| serde_json::json!({ "case": title, "plan": p }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("In-process demonstration of the deduction planner (the multi-process cluster demo is not built yet).");
    for (title, p) in plans {
        println!("\n{title}:");
        println!("  own account  {:>10}", p.own.to_string());
        for leg in &p.legs {
            println!(
                "  {} ({}) {:>10}",
                leg.grantor,
                leg.province.name(),
                leg.amount.to_string()
            );
        }
        for skipped in &p.not_paying {
            println!(
                "  {} ({}) pays nothing: {}",
                skipped.grantor,
                skipped.province.name(),
                skipped.reason
            );
        }
        println!("  cash         {:>10}", p.cash.to_string());
    }
    Ok(())
}
