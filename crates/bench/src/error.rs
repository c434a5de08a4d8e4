//! The one error type of the benchmark driver.

use std::path::PathBuf;

/// Why a benchmark step could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{what}: {detail}")]
    Step { what: &'static str, detail: String },
    #[error("node: {0}")]
    Node(#[from] exchange_node::NodeError),
    #[error("store: {0}")]
    Store(#[from] exchange_store::StoreError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot read {path}: {detail}")]
    Proc { path: PathBuf, detail: String },
    #[error("invalid option: {0}")]
    Invalid(String),
}

impl BenchError {
    pub fn step(what: &'static str, detail: impl ToString) -> BenchError {
        BenchError::Step {
            what,
            detail: detail.to_string(),
        }
    }
}
