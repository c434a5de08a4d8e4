//! The node crate's error.

use exchange_core::HandlerError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("store: {0}")]
    Store(#[from] exchange_store::StoreError),
    #[error("certificates: {0}")]
    Pki(#[from] exchange_pki::PkiError),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("actor: {0}")]
    Actor(String),
    #[error("invariant broken: {0}")]
    Invariant(String),
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// The node stopped acknowledging (a store that cannot write or flush, or actors that keep
    /// failing); the reason says why. Only a restart clears it.
    #[error("the node stopped acknowledging: {0}")]
    Stopped(String),
}

impl From<HandlerError<exchange_store::StoreError>> for NodeError {
    fn from(error: HandlerError<exchange_store::StoreError>) -> NodeError {
        match error {
            HandlerError::Storage(error) => NodeError::Store(error),
            HandlerError::Invariant(message) => NodeError::Invariant(message),
        }
    }
}
