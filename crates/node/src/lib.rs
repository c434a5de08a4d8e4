//! A province node: the sans-IO core run by ractor actors over a sled store, talking to other
//! provinces and serving its bureau over gRPC with mutual TLS.
//!
//! Glue only: actors decode, call the core, apply its writes, and let its messages and replies
//! leave once those writes are durable. Every decision is the core's.

// The node faces the network: no input may reach a panic. (Arithmetic here is counters and
// durations, not money, so it is left to review; money arithmetic is the core's, checked.)
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

pub mod audit;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod context;
pub mod core_actor;
pub mod dispatch;
pub mod error;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod records;
pub mod route;
pub mod runtime;
pub mod services;
pub mod supervisor;
pub mod timers;

pub use config::NodeConfig;
pub use error::NodeError;
pub use runtime::{RunningNode, start};
