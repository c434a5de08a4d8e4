//! Errors at the core's boundary: refusals returned to clients, and handler failures.

use serde::{Deserialize, Serialize};

/// The class of a refused client request; maps one to one onto gRPC status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is malformed or out of range (INVALID_ARGUMENT).
    InvalidArgument,
    /// Something it names does not exist here (NOT_FOUND).
    NotFound,
    /// It would create what already exists, or reuses an id for another request (ALREADY_EXISTS).
    AlreadyExists,
    /// The state does not allow it now (FAILED_PRECONDITION).
    FailedPrecondition,
    /// The caller may not ask this (PERMISSION_DENIED).
    PermissionDenied,
    /// Too much in flight; retry later (RESOURCE_EXHAUSTED).
    ResourceExhausted,
}

/// A refused client request: nothing was changed. `reason` is a stable snake_case code.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({reason})")]
pub struct ClientError {
    pub kind: ErrorKind,
    pub reason: String,
    pub message: String,
}

impl ClientError {
    pub fn new(kind: ErrorKind, reason: &str, message: impl Into<String>) -> ClientError {
        ClientError {
            kind,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn invalid(reason: &str, message: impl Into<String>) -> ClientError {
        ClientError::new(ErrorKind::InvalidArgument, reason, message)
    }

    pub fn not_found(reason: &str, message: impl Into<String>) -> ClientError {
        ClientError::new(ErrorKind::NotFound, reason, message)
    }

    pub fn precondition(reason: &str, message: impl Into<String>) -> ClientError {
        ClientError::new(ErrorKind::FailedPrecondition, reason, message)
    }

    pub fn exists(reason: &str, message: impl Into<String>) -> ClientError {
        ClientError::new(ErrorKind::AlreadyExists, reason, message)
    }
}

/// A handler that could not run: storage failed, or a stored invariant is broken. Either way
/// nothing of its output may be applied; the driver reports it and stops the node part.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError<E: std::fmt::Debug> {
    #[error("storage failed: {0:?}")]
    Storage(E),
    #[error("invariant broken: {0}")]
    Invariant(String),
}

impl<E: std::fmt::Debug> From<crate::money::MoneyError> for HandlerError<E> {
    fn from(error: crate::money::MoneyError) -> HandlerError<E> {
        HandlerError::Invariant(format!("money arithmetic: {error}"))
    }
}

impl<E: std::fmt::Debug> From<crate::account::AccountError> for HandlerError<E> {
    fn from(error: crate::account::AccountError) -> HandlerError<E> {
        HandlerError::Invariant(format!("account: {error}"))
    }
}
