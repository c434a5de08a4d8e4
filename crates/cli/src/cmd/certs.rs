//! `exchange certs init`: a development national CA and certificates for nodes, bureaus and
//! the monitor. Production operators bring their own PEM files and name them in the config.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use exchange_core::Province;
use exchange_pki::{ExistingCa, Validity, init_dev_pki};

use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a development CA and the certificates of the listed provinces.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write the PEM files to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Province codes, comma-separated, e.g. 110000,500000,510000.
    #[arg(long, value_delimiter = ',', required = true)]
    provinces: Vec<Province>,
    /// Validity of every certificate, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Replace an existing CA in the directory (all earlier certificates stop being trusted).
    #[arg(long)]
    force: bool,
}

pub fn run(command: CertsCommand) -> Result<(), Failure> {
    match command {
        CertsCommand::Init(args) => {
            let validity =
                Validity::days_from(exchange_pki::time::OffsetDateTime::now_utc(), args.days).context("validity")?;
            let existing = if args.force {
                ExistingCa::Overwrite
            } else {
                ExistingCa::Refuse
            };
            let layout = init_dev_pki(&args.out, &args.provinces, validity, existing)
                .with_context(|| format!("creating certificates in {}", args.out.display()))?;
            println!("development CA and certificates written to {}", args.out.display());
            println!("  CA: {}", layout.ca.cert.display());
            for province in &args.provinces {
                println!(
                    "  {} {}: node and bureau certificates in {}",
                    province,
                    province.name(),
                    args.out.join(province.to_string()).display()
                );
            }
            println!("  monitor: {}", layout.monitor.cert.display());
            Ok(())
        }
    }
}
