//! `exchange sim`: deterministic simulations (`run`).

use clap::Subcommand;

use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run a simulation scenario under faults, checking invariants throughout.
    Run(super::sim_run::RunArgs),
}

pub fn run(command: SimCommand) -> Result<(), Failure> {
    match command {
        SimCommand::Run(args) => super::sim_run::run(args),
    }
}
