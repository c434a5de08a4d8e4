//! Subcommands, one module each.

pub mod demo;
