//! How refused requests travel: a `tonic::Status` whose code follows the core's `ErrorKind`,
//! with the stable snake_case reason in metadata and at the end of the message.

use exchange_core::{ClientError, ErrorKind};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::ConvertError;

/// Metadata key of the stable reason code (`insufficient_balance`, `invalid_field`...).
pub const REASON_METADATA_KEY: &str = "x-exchange-reason";
/// Metadata key naming the bad field of an `invalid_field` refusal.
pub const FIELD_METADATA_KEY: &str = "x-exchange-field";
/// The reason code of a request whose fields do not convert to core values.
pub const INVALID_FIELD_REASON: &str = "invalid_field";

/// The gRPC code of each class of refusal, one to one.
pub fn error_kind_to_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
    }
}

/// The class of refusal of a gRPC code, if it is one the core uses.
pub fn code_to_error_kind(code: Code) -> Option<ErrorKind> {
    Some(match code {
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        _ => return None,
    })
}

/// Metadata values must be visible ASCII; reason codes are snake_case, but a code that is not
/// is sent as `unknown` rather than failing the reply.
fn ascii_metadata(text: &str) -> MetadataValue<tonic::metadata::Ascii> {
    text.parse().unwrap_or_else(|_| MetadataValue::from_static("unknown"))
}

/// The status a refused client request travels as.
pub fn client_error_to_status(error: &ClientError) -> Status {
    let mut status = Status::new(
        error_kind_to_code(error.kind),
        format!("{} ({})", error.message, error.reason),
    );
    status
        .metadata_mut()
        .insert(REASON_METADATA_KEY, ascii_metadata(&error.reason));
    status
}

/// The client error a status carries, when it is one of the core's refusals (it has the reason
/// metadata and a code the core uses); transport failures and internal errors give `None`.
pub fn status_to_client_error(status: &Status) -> Option<ClientError> {
    let kind = code_to_error_kind(status.code())?;
    let reason = status.metadata().get(REASON_METADATA_KEY)?.to_str().ok()?.to_string();
    let suffix = format!(" ({reason})");
    let message = status
        .message()
        .strip_suffix(suffix.as_str())
        .unwrap_or(status.message())
        .to_string();
    Some(ClientError { kind, reason, message })
}

impl From<ConvertError> for Status {
    fn from(error: ConvertError) -> Status {
        let mut status = Status::invalid_argument(format!("{error} ({INVALID_FIELD_REASON})"));
        status
            .metadata_mut()
            .insert(REASON_METADATA_KEY, MetadataValue::from_static(INVALID_FIELD_REASON));
        status
            .metadata_mut()
            .insert(FIELD_METADATA_KEY, ascii_metadata(&error.field));
        status
    }
}
