//! `exchange sim`: deterministic simulations (`run`) and the protocol's model checker (`check`).

use clap::Subcommand;

use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run a simulation scenario under faults, checking invariants throughout.
    Run(super::sim_run::RunArgs),
    /// Model-check the protocol exhaustively on a small configuration.
    Check(super::sim_check::CheckArgs),
}

pub fn run(command: SimCommand) -> Result<(), Failure> {
    match command {
        SimCommand::Run(args) => super::sim_run::run(args),
        SimCommand::Check(args) => super::sim_check::run(args),
    }
}
