//! The monitor's one error type at its crate boundary.

use std::path::PathBuf;

/// Everything that can stop the monitor from starting or persisting.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot read {path}: {source}")]
    ReadConfig { path: PathBuf, source: std::io::Error },
    #[error("invalid monitor configuration {path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("certificates: {0}")]
    Pki(#[from] exchange_pki::PkiError),
    #[error("state file {path}: {detail}")]
    State { path: PathBuf, detail: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad node address {address}: {detail}")]
    Address { address: String, detail: String },
}
