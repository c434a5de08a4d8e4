//! Subcommands, one module each.

pub mod certs;
pub mod ctl;
pub mod demo;
pub mod sim;
pub mod sim_run;
pub mod start;
