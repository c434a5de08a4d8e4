//! Benchmark driver of the exchange (`exchange bench`): a cluster of real node processes under
//! open-loop load from a separate client process, side by side with the transport, storage and
//! PostgreSQL two-phase-commit ceilings on the same machine.

pub mod ceilings;
pub mod error;
pub mod latency;
pub mod loader;
pub mod pg;
pub mod run;
pub mod sys;
pub mod workload;

pub use error::BenchError;
pub use run::{BenchOptions, BenchReport, PhaseKind, run_bench};
