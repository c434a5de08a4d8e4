//! Subcommands, one module each.

pub mod bench;
pub mod certs;
pub mod chaos;
pub mod ctl;
pub mod demo;
pub mod monitor;
pub mod sim;
pub mod sim_check;
pub mod sim_run;
pub mod start;
